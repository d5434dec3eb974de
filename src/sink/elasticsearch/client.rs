//! The HTTP side: one bulk request to Elasticsearch, and its response read item by item.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::config::EsConfig;

/// Only what the sink reads of a bulk response (smaller responses, less parsing).
const FILTER_PATH: &str =
    "filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason";

/// Sends bulk requests, failing over between the configured URLs.
pub struct BulkClient {
    http: reqwest::Client,
    urls: Vec<String>,
    current: AtomicUsize,
    connect_timeout: Duration,
    auth: Option<HeaderValue>,
    compression: bool,
}

/// A bulk request that got no HTTP response.
#[derive(Debug, Clone)]
pub struct TransportError {
    pub message: String,
    /// No response within the time allowed (the request may still be executing).
    pub timed_out: bool,
}

/// One item's result, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemResult {
    pub status: u16,
    pub error_type: Option<String>,
    pub reason: Option<String>,
}

impl BulkClient {
    pub fn new(cfg: &EsConfig) -> Result<BulkClient, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .pool_max_idle_per_host(cfg.max_in_flight);
        if let Some(path) = &cfg.ca_location {
            let pem = std::fs::read(path)
                .map_err(|e| format!("elastic.https.ssl.ca.location: cannot read `{path}`: {e}"))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                format!("elastic.https.ssl.ca.location: `{path}` is not a PEM certificate: {e}")
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let auth = match (&cfg.api_key, &cfg.username) {
            (Some(key), _) => Some(format!("ApiKey {key}")),
            (None, Some(user)) => {
                use base64::Engine as _;
                let pair = format!("{user}:{}", cfg.password.as_deref().unwrap_or(""));
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            _ => None,
        };
        let auth = auth
            .map(|a| {
                let mut v = HeaderValue::from_str(&a)
                    .map_err(|_| "credentials contain invalid characters".to_string())?;
                v.set_sensitive(true);
                Ok::<_, String>(v)
            })
            .transpose()?;
        Ok(BulkClient {
            http,
            urls: cfg.urls.clone(),
            current: AtomicUsize::new(0),
            connect_timeout: cfg.connect_timeout,
            auth,
            compression: cfg.compression,
        })
    }

    /// POSTs `body` to `_bulk`; returns the HTTP status and the response body, or an error when
    /// no whole response came within `wait` after the connection was made. A connection failure
    /// or timeout moves later requests to the next URL.
    pub async fn bulk(&self, body: Bytes, wait: Duration) -> Result<(u16, Bytes), TransportError> {
        self.send(
            reqwest::Method::POST,
            &format!("_bulk?{FILTER_PATH}"),
            "application/x-ndjson",
            body,
            wait,
        )
        .await
    }

    /// Sends a JSON request (`path` relative to the cluster URL, with its query; no body when
    /// `body` is `None`), as [`Self::bulk`] does.
    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        wait: Duration,
    ) -> Result<(u16, Bytes), TransportError> {
        let bytes = body.map_or_else(Bytes::new, |b| {
            Bytes::from(serde_json::to_vec(b).unwrap_or_default())
        });
        self.send(method, path, "application/json", bytes, wait)
            .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &'static str,
        body: Bytes,
        wait: Duration,
    ) -> Result<(u16, Bytes), TransportError> {
        let i = self.current.load(Ordering::Relaxed) % self.urls.len().max(1);
        let url = format!("{}/{path}", self.urls[i]);
        let mut req = self
            .http
            .request(method, &url)
            .header(CONTENT_TYPE, content_type);
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        req = if self.compression {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            let _ = gz.write_all(&body);
            req.header(CONTENT_ENCODING, "gzip")
                .body(gz.finish().unwrap_or_default())
        } else {
            req.body(body)
        };
        let fail = |e: reqwest::Error| {
            self.current.store(i + 1, Ordering::Relaxed);
            TransportError {
                message: format!("{}: {}", self.urls[i], error_chain(&e)),
                timed_out: e.is_timeout(),
            }
        };
        // The time allowed for the response (reqwest's own timeouts are either per read, which
        // a bulk response's single late burst defeats, or include connecting).
        let response = async {
            let resp = req.send().await.map_err(fail)?;
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.map_err(fail)?;
            Ok((status, bytes))
        };
        match tokio::time::timeout(wait + self.connect_timeout, response).await {
            Ok(r) => r,
            Err(_) => {
                self.current.store(i + 1, Ordering::Relaxed);
                Err(TransportError {
                    message: format!(
                        "{}: no response within {} ms (read.timeout.ms)",
                        self.urls[i],
                        wait.as_millis()
                    ),
                    timed_out: true,
                })
            }
        }
    }
}

/// reqwest's error with its causes (`error sending request: connection refused`).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[derive(Deserialize)]
struct Response<'a> {
    #[serde(default)]
    errors: Option<bool>,
    #[serde(borrow, default)]
    items: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Deserialize)]
struct ItemError {
    #[serde(rename = "type", default)]
    ty: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// Reads a 200 bulk response for `sent` actions: `None` when every item succeeded, else each
/// item's result in request order. A response without `errors`, or whose items do not answer
/// the actions one to one, is an error: nothing in it may be acknowledged.
pub fn parse_items(body: &[u8], sent: usize) -> Result<Option<Vec<ItemResult>>, String> {
    let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    let resp: Response<'_> = serde_json::from_slice(body)
        .map_err(|e| format!("unreadable bulk response ({e}): {}", snippet()))?;
    let errors = resp
        .errors
        .ok_or_else(|| format!("bulk response without `errors`: {}", snippet()))?;
    let items = resp
        .items
        .ok_or_else(|| format!("bulk response without `items`: {}", snippet()))?;
    if !errors {
        // Count the items without building them.
        let n = serde_json::from_str::<Vec<serde::de::IgnoredAny>>(items.get())
            .map_err(|e| format!("unreadable bulk response items: {e}"))?
            .len();
        if n != sent {
            return Err(format!("bulk response has {n} items for {sent} actions"));
        }
        return Ok(None);
    }
    let items: Vec<std::collections::HashMap<String, Item>> = serde_json::from_str(items.get())
        .map_err(|e| format!("unreadable bulk response items: {e}"))?;
    if items.len() != sent {
        return Err(format!(
            "bulk response has {} items for {sent} actions",
            items.len()
        ));
    }
    Ok(Some(
        items
            .into_iter()
            .map(|m| {
                let item = m.into_values().next().unwrap_or(Item {
                    status: 0,
                    error: None,
                });
                let (error_type, reason) = item.error.map(|e| (e.ty, e.reason)).unwrap_or_default();
                ItemResult {
                    status: item.status,
                    error_type,
                    reason,
                }
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_without_errors_are_not_read_item_by_item() {
        assert_eq!(
            parse_items(br#"{"errors":false,"items":[{"index":{"status":201}}]}"#, 1),
            Ok(None)
        );
    }

    #[test]
    fn a_response_that_does_not_answer_every_action_acknowledges_nothing() {
        for body in [
            &br#"{}"#[..],
            br#"{"took":3}"#,
            br#"{"errors":false}"#,
            br#"{"errors":false,"items":[]}"#,
            br#"{"errors":false,"items":[{"index":{"status":201}}]}"#,
            br#"<html>proxy</html>"#,
        ] {
            assert!(
                parse_items(body, 2).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            parse_items(
                br#"{"errors":false,"items":[{"index":{"status":201}},{"delete":{"status":200}}]}"#,
                2
            ),
            Ok(None)
        );
    }

    #[test]
    fn item_errors_come_back_in_order() {
        let body = br#"{"errors":true,"items":[{"index":{"status":201}},{"delete":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"v"}}}]}"#;
        let items = parse_items(body, 2).unwrap().unwrap();
        assert_eq!(
            items[0],
            ItemResult {
                status: 201,
                error_type: None,
                reason: None
            }
        );
        assert_eq!(items[1].status, 409);
        assert_eq!(
            items[1].error_type.as_deref(),
            Some("version_conflict_engine_exception")
        );
        assert!(parse_items(body, 3).is_err());
    }
}
