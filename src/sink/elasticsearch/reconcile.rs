//! Reconciling an index after a table's snapshot (docs/reconcile.md): once every record of the
//! snapshot is written, a document whose version is below the snapshot's was written by no
//! snapshot read and no later change, so its row is gone from the table; it is deleted (with
//! soft deletes: marked `__deleted: true`).
//!
//! Each removal is conditional, evaluated by Elasticsearch per document: a delete (or index)
//! with `if_seq_no`/`if_primary_term` of the scan succeeds only if the document has not been
//! written since it was judged removable; a change written meanwhile stands (409). Running it
//! again, after a crash or on two tasks, removes nothing else.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tracing::{debug, error, info, warn};

use std::sync::atomic::{AtomicBool, Ordering};

use super::Shared;
use super::mapping::{SnapshotEnd, removable};

/// Documents per scroll page (and so per bulk request of removals).
const PAGE: usize = 1000;
/// How long a scroll context lives between two pages.
const SCROLL: &str = "2m";

#[derive(Deserialize)]
struct Page {
    #[serde(rename = "_scroll_id")]
    scroll_id: Option<String>,
    hits: Hits,
    #[serde(rename = "_shards", default)]
    shards: Shards,
}

/// How many of the index's shards answered: a search some shards failed answers 200 with only
/// the others' hits, and a pass over it would leave documents unjudged.
#[derive(Deserialize, Default)]
struct Shards {
    #[serde(default)]
    total: u64,
    #[serde(default)]
    failed: u64,
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
    #[serde(rename = "_seq_no", default)]
    seq_no: Option<u64>,
    #[serde(rename = "_primary_term", default)]
    primary_term: Option<u64>,
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
#[derive(Debug)]
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

/// Reconciles `end.index`, retrying whole passes (each is harmless to repeat) with backoff,
/// until done or `cancel` is set (the record's partition left the task, or the task stopped).
/// A refusal that retrying cannot cure (no permission to search the index…) skips the
/// reconciliation with an error in the log: the index keeps what it has.
pub(super) async fn run(shared: &Shared, end: &SnapshotEnd, cancel: &AtomicBool) {
    let cfg = &shared.cfg;
    let mut attempt = 0u32;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        match pass(shared, end, cancel).await {
            Ok(r) => {
                shared.metrics.reconciled(r.removed);
                info!(index = %end.index, topic = %end.topic, scanned = r.scanned, removed = r.removed,
                    "snapshot of the table written; documents of rows it did not contain removed");
                return;
            }
            Err(f) if !f.retry => {
                error!(index = %end.index, topic = %end.topic,
                    "reconciliation after the snapshot skipped, the index may keep documents of rows deleted meanwhile: {}                      (give the connector's user read access to the index, or set snapshot.reconcile=false)", f.message);
                return;
            }
            Err(f) => {
                attempt += 1;
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
async fn pass(shared: &Shared, end: &SnapshotEnd, cancel: &AtomicBool) -> Result<Report, Failed> {
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
            Some(&json!({"size": PAGE, "version": true, "seq_no_primary_term": true, "_source": soft, "sort": ["_doc"], "query": query})),
        )
        .await?,
    )?;
    let mut report = Report::default();
    let result = async {
        loop {
            if page.hits.hits.is_empty() || cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            report.scanned += page.hits.hits.len() as u64;
            report.removed += remove(shared, end, &page.hits.hits).await?;
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

/// Removes the hits `end` makes removable, each on condition that it has not been written
/// since the scan; returns how many were removed.
async fn remove(shared: &Shared, end: &SnapshotEnd, hits: &[Hit]) -> Result<u64, Failed> {
    let soft = shared.cfg.mark_live;
    let mut body = Vec::new();
    let mut sent = 0;
    for h in hits {
        let (Some(version), Some(seq_no), Some(term)) = (h.version, h.seq_no, h.primary_term)
        else {
            continue;
        };
        if !removable(version, end) {
            continue;
        }
        let action = if soft { "index" } else { "delete" };
        let meta = json!({action: {"_index": h.index, "_id": h.id, "if_seq_no": seq_no, "if_primary_term": term}});
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
    let super::client::Answer {
        status, body: resp, ..
    } = shared
        .client
        .bulk(body.into(), shared.cfg.read_timeout, &|| {
            !shared.abandoned.load(std::sync::atomic::Ordering::SeqCst)
        })
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
    let items: Json = serde_json::from_slice(&resp)
        .map_err(|e| Failed::retry(format!("unreadable bulk response ({e})")))?;
    let items = items["items"].as_array().cloned().unwrap_or_default();
    if items.len() != sent {
        return Err(Failed::retry(format!(
            "bulk response has {} items for {sent} removals",
            items.len()
        )));
    }
    let mut removed = 0;
    for item in &items {
        removed += u64::from(removal(item)?);
    }
    Ok(removed)
}

/// One removal's answer: whether it removed the document; an error to retry or give up on.
fn removal(item: &Json) -> Result<bool, Failed> {
    let r = item
        .as_object()
        .and_then(|o| o.values().next())
        .unwrap_or(&Json::Null);
    let failed = |s| format!("a removal answered {s}: {}", r["error"]);
    match r["status"].as_u64().unwrap_or(0) {
        200 | 201 => Ok(true),
        // Gone already, or written since the scan: what is there stands.
        404 | 409 => Ok(false),
        s @ (0 | 429 | 500..) => Err(Failed::retry(failed(s))),
        // A write-blocked index (disk flood stage, a rebuild's block) clears, as for the sink's
        // own writes (`retry::item`).
        s if super::retry::write_block(r["error"]["type"].as_str()) => {
            Err(Failed::retry(failed(s)))
        }
        s => Err(Failed {
            message: failed(s),
            retry: false,
        }),
    }
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
        // The scroll context expired or was cleared (a node restarted, `DELETE
        // _search/scroll/_all`): a new pass starts from the beginning.
        404 if path.starts_with("_search/scroll") => Err(Failed::retry(format!(
            "the scroll was lost ({path} answered 404: {}); scanning again",
            snippet(&resp)
        ))),
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
    let page: Page = serde_json::from_slice(&body).map_err(|e| {
        Failed::retry(format!(
            "unreadable search response ({e}): {}",
            snippet(&body)
        ))
    })?;
    if page.shards.failed > 0 {
        return Err(Failed::retry(format!(
            "{} of {} shards failed the search, scanning again: {}",
            page.shards.failed,
            page.shards.total,
            snippet(&body)
        )));
    }
    Ok(page)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removal_refused_by_a_write_block_is_retried() {
        let item = |status: u64, error: &str| serde_json::json!({"delete": {"status": status, "error": {"type": error}}});
        assert!(
            removal(&item(403, "cluster_block_exception"))
                .unwrap_err()
                .retry
        );
        assert!(
            removal(&item(429, "es_rejected_execution_exception"))
                .unwrap_err()
                .retry
        );
        assert!(!removal(&item(403, "security_exception")).unwrap_err().retry);
        assert!(removal(&serde_json::json!({"delete": {"status": 200}})).unwrap());
        assert!(!removal(&serde_json::json!({"delete": {"status": 409}})).unwrap());
    }
}
