//! Reconciling an index after a table's snapshot (docs/reconcile.md): once every record of the
//! snapshot is written, a document whose version is below the snapshot's was written by no
//! snapshot read and no later change, so its row is gone from the table; it is deleted (with
//! soft deletes: marked `__deleted: true`).
//!
//! Each removal is conditional, evaluated by Elasticsearch per document: a delete (or index)
//! at version `below − 1` with `version_type=external_gte` succeeds only while the document's
//! version is still below the snapshot's. A change written meanwhile has a higher version and
//! wins (409). Running it again, after a crash or on two tasks, removes nothing else.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tracing::{debug, info, warn};

use super::Shared;
use super::mapping::SnapshotEnd;
use crate::metrics::Metrics;
use crate::sink::SinkError;

/// Documents per scroll page (and so per bulk request of removals).
const PAGE: usize = 1000;
/// How long a scroll context lives between two pages.
const SCROLL: &str = "2m";

#[derive(Deserialize)]
struct Page {
    #[serde(rename = "_scroll_id")]
    scroll_id: Option<String>,
    hits: Hits,
}

#[derive(Deserialize)]
struct Hits {
    hits: Vec<Hit>,
}

#[derive(Deserialize)]
struct Hit {
    #[serde(rename = "_index")]
    index: String,
    #[serde(rename = "_id")]
    id: String,
    #[serde(rename = "_version", default)]
    version: Option<u64>,
    #[serde(rename = "_source", default)]
    source: Option<serde_json::Map<String, Json>>,
}

/// What one pass found.
#[derive(Debug, Default)]
struct Report {
    scanned: u64,
    removed: u64,
}

/// A failure of one pass: retried (`retry`) or final.
struct Failed {
    message: String,
    retry: bool,
}

impl Failed {
    fn retry(message: String) -> Failed {
        Failed {
            message,
            retry: true,
        }
    }
}

/// Reconciles `end.index`, retrying whole passes (each is harmless to repeat) with backoff.
pub(super) async fn run(shared: &Shared, end: &SnapshotEnd) -> Result<(), SinkError> {
    let cfg = &shared.cfg;
    let mut attempt = 0u32;
    loop {
        match pass(shared, end).await {
            Ok(r) => {
                Metrics::add(&shared.metrics.reconciled, r.removed);
                info!(index = %end.index, topic = %end.topic, scanned = r.scanned, removed = r.removed,
                    "snapshot of the table written; documents of rows it did not contain removed");
                return Ok(());
            }
            Err(f) if !f.retry => {
                return Err(SinkError::Fatal(format!(
                    "reconciling index `{}` after the snapshot of topic `{}`: {}",
                    end.index, end.topic, f.message
                )));
            }
            Err(f) => {
                attempt += 1;
                if let Some(max) = cfg.max_retries
                    && attempt > max
                {
                    return Err(SinkError::Fatal(format!(
                        "reconciling index `{}`: gave up after {max} retries: {}",
                        end.index, f.message
                    )));
                }
                let delay =
                    crate::backoff::delay(attempt, cfg.retry_backoff, cfg.max_retry_backoff);
                if attempt >= 3 {
                    warn!(index = %end.index, attempt, "reconciling after a snapshot: {}", f.message);
                } else {
                    debug!(index = %end.index, attempt, "reconciling after a snapshot: {}", f.message);
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One scan of the index, removing the documents below the snapshot's version page by page.
async fn pass(shared: &Shared, end: &SnapshotEnd) -> Result<Report, Failed> {
    let soft = shared.cfg.mark_live;
    let index = urlencoding(&end.index);
    // Documents written just before are searchable only after a refresh.
    call(shared, Method::POST, &format!("{index}/_refresh"), None).await?;
    let query = if soft {
        json!({"bool": {"must_not": {"term": {"__deleted": true}}}})
    } else {
        json!({"match_all": {}})
    };
    let mut page: Page = parse(
        call(
            shared,
            Method::POST,
            &format!("{index}/_search?scroll={SCROLL}"),
            Some(&json!({"size": PAGE, "version": true, "_source": soft, "sort": ["_doc"], "query": query})),
        )
        .await?,
    )?;
    let mut report = Report::default();
    let result = async {
        loop {
            if page.hits.hits.is_empty() {
                return Ok(());
            }
            report.scanned += page.hits.hits.len() as u64;
            report.removed += remove(shared, end.below, &page.hits.hits).await?;
            let Some(id) = page.scroll_id.clone() else {
                return Ok(());
            };
            page = parse(
                call(
                    shared,
                    Method::POST,
                    "_search/scroll",
                    Some(&json!({"scroll": SCROLL, "scroll_id": id})),
                )
                .await?,
            )?;
        }
    }
    .await;
    if let Some(id) = page.scroll_id.take() {
        let _ = shared
            .client
            .json(
                Method::DELETE,
                "_search/scroll",
                Some(&json!({"scroll_id": id})),
                shared.cfg.read_timeout,
            )
            .await;
    }
    result.map(|()| report)
}

/// Removes the hits below version `below`, each on condition that it still is; returns how
/// many were removed.
async fn remove(shared: &Shared, below: u64, hits: &[Hit]) -> Result<u64, Failed> {
    let soft = shared.cfg.mark_live;
    let at = below - 1;
    let mut body = Vec::new();
    let mut sent = 0;
    for h in hits.iter().filter(|h| h.version.is_some_and(|v| v < below)) {
        let action = if soft { "index" } else { "delete" };
        let meta = json!({action: {"_index": h.index, "_id": h.id, "version": at, "version_type": "external_gte"}});
        body.extend_from_slice(meta.to_string().as_bytes());
        body.push(b'\n');
        if soft {
            let mut doc = h.source.clone().unwrap_or_default();
            doc.insert("__deleted".into(), Json::Bool(true));
            body.extend_from_slice(Json::Object(doc).to_string().as_bytes());
            body.push(b'\n');
        }
        sent += 1;
    }
    if sent == 0 {
        return Ok(0);
    }
    let wait = shared.cfg.read_timeout;
    let (status, resp) = shared
        .client
        .bulk(body.into(), wait)
        .await
        .map_err(|e| Failed::retry(e.message))?;
    if status == 429 || status >= 500 {
        return Err(Failed::retry(format!("bulk answered {status}")));
    }
    if status != 200 {
        return Err(Failed {
            message: format!("bulk answered {status}: {}", snippet(&resp)),
            retry: false,
        });
    }
    let items = super::client::parse_items(&resp, sent).map_err(Failed::retry)?;
    let Some(items) = items else {
        return Ok(sent as u64);
    };
    let mut removed = 0;
    for item in items {
        match item.status {
            200 | 201 => removed += 1,
            // Gone already, or changed since the scan: a newer write stands.
            404 | 409 => {}
            429 | 500.. => {
                return Err(Failed::retry(format!(
                    "a removal answered {}: {}",
                    item.status,
                    item.reason.unwrap_or_default()
                )));
            }
            s => {
                return Err(Failed {
                    message: format!(
                        "a removal answered {s} {}: {}",
                        item.error_type.unwrap_or_default(),
                        item.reason.unwrap_or_default()
                    ),
                    retry: false,
                });
            }
        }
    }
    Ok(removed)
}

async fn call(
    shared: &Shared,
    method: Method,
    path: &str,
    body: Option<&Json>,
) -> Result<bytes::Bytes, Failed> {
    let (status, resp) = shared
        .client
        .json(method, path, body, shared.cfg.read_timeout * 4)
        .await
        .map_err(|e| Failed::retry(e.message))?;
    match status {
        200..=299 => Ok(resp),
        429 | 500.. => Err(Failed::retry(format!(
            "{path} answered {status}: {}",
            snippet(&resp)
        ))),
        _ => Err(Failed {
            message: format!("{path} answered {status}: {}", snippet(&resp)),
            retry: false,
        }),
    }
}

fn parse(body: bytes::Bytes) -> Result<Page, Failed> {
    serde_json::from_slice(&body).map_err(|e| {
        Failed::retry(format!(
            "unreadable search response ({e}): {}",
            snippet(&body)
        ))
    })
}

fn snippet(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned()
}

/// An index name as a URL path segment (names are lower-case and exclude `/`, `\`, `*`, `?`,
/// `"`, `<`, `>`, `|`, space, `,` and `#`; `%`-escape anything else that is not plain).
fn urlencoding(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
