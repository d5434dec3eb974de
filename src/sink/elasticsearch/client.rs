//! The HTTP side: one bulk request to Elasticsearch, and its response read item by item.
//!
//! Requests go through reqwest: the nodes of `connection.url` in turn (round robin), a node
//! whose request got no response left out for a while (as the Elasticsearch Java client does,
//! [`Dead`]), basic auth or an API key, TLS with the system's trust store and an optional CA
//! file, and request compression. The bulk body stays the sink's own NDJSON, handed over as
//! bytes.
//!
//! This was the official client's transport (`elasticsearch` crate), which is no more than
//! that over its own reqwest client. It cannot be handed a TLS connector, so each client it
//! built loaded the system's trust store again: 500 million instructions per task start under
//! callgrind, 11% of a short end-to-end Avro run (src/tls/mod.rs, docs/performance-log.md). Written
//! here: the round robin over the URLs with its dead nodes, the Elastic Cloud ID's decoding and
//! the gzip of a body.
//!
//! A connection is given `connection.timeout.ms` to open (reqwest's connect timeout: name
//! resolution, TCP and the TLS handshake together; 0 for no limit of its own); the whole
//! request, that and `read.timeout.ms` more for its response.
//!
//! What it trusts over `https` (the system's store, `elastic.https.ssl.ca.location`,
//! `elastic.https.ssl.ca.trusted.fingerprint`) is src/tls/'s to say.

use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT,
};
use reqwest::{Method, Url};
use serde::Deserialize;

use super::config::EsConfig;

/// Only what the sink reads of a bulk response (smaller responses, less parsing).
const FILTER_PATH: &str =
    "filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason";

/// Sends requests to Elasticsearch's nodes, each in its turn.
pub struct BulkClient {
    http: reqwest::Client,
    /// The nodes' URLs, each ending in `/` so that request paths are joined below it.
    nodes: Vec<Url>,
    turn: AtomicUsize,
    /// Each node's failures in a row, and until when it is left out (`None`: it answers).
    dead: Mutex<Vec<Option<Dead>>>,
    /// Whether each node refused its certificate at its last request.
    refused: Mutex<Vec<bool>>,
    /// Gzip request bodies (`connection.compression`).
    compression: bool,
    /// The configured URLs, for messages when no single node can be named.
    urls: String,
    connect_timeout: Duration,
}

/// A node whose last request got no response: left out of the round robin until `until`, a
/// minute after its first failure, then longer after each failure in a row, up to 30 minutes, as
/// the Elasticsearch Java client (`RestClient`'s `DeadHostState`) leaves a host out. Any
/// response puts a node back (the Java client also leaves out a node answering 502, 503 or 504;
/// the sink retries those itself). When every node is left out, the one that comes back first
/// is tried. Before, a node that was down kept its turn: every request sent to it failed (after
/// up to `connection.timeout.ms` when its packets were dropped) and was retried after a backoff.
#[derive(Debug, Clone, Copy)]
struct Dead {
    failures: u32,
    until: Instant,
}

impl Dead {
    const FIRST: Duration = Duration::from_secs(60);
    const LONGEST: Duration = Duration::from_secs(30 * 60);

    /// How long a node is left out after `earlier` failures in a row and one more:
    /// 1 min × 2^(earlier/2) (1 min, 1.41 min, 2 min, 2.83 min…), at most 30 min.
    fn wait(earlier: u32) -> Duration {
        Dead::FIRST
            .mul_f64(2f64.powf(f64::from(earlier.min(20)) / 2.0))
            .min(Dead::LONGEST)
    }

    /// The state after one more failure than `before`, at `now`.
    fn after(before: Option<Dead>, now: Instant) -> Dead {
        let failures = before.map_or(0, |d| d.failures);
        Dead {
            failures: failures + 1,
            until: now + Dead::wait(failures),
        }
    }
}

/// A request that got no HTTP response.
#[derive(Debug, Clone, Default)]
pub struct TransportError {
    pub message: String,
    /// No response within the time allowed (the request may still be executing).
    pub timed_out: bool,
    /// Not sent at all: the caller's `may_send` said no once the body was ready.
    pub not_sent: bool,
    /// The node's certificate was refused (`tls::certificate_refused`): retrying will not help.
    pub certificate_refused: bool,
}

/// An HTTP response: status, body, and the node that answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    pub url: String,
}

/// One item's result, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemResult {
    pub status: u16,
    pub error_type: Option<String>,
    pub reason: Option<String>,
}

/// The URL of an Elastic Cloud deployment's Elasticsearch from its ID:
/// `<name>:<base64 of "<host>[:<port>]$<elasticsearch id>$<kibana id>">` gives
/// `https://<elasticsearch id>.<host>[:<port>]`.
fn cloud_url(id: &str) -> Result<Url, String> {
    let bad = |why: &str| format!("connection.cloud.id: not an Elastic Cloud ID ({why})");
    let (name, data) = id
        .split_once(':')
        .ok_or_else(|| bad("expected <name>:<base64 data>"))?;
    if name.is_empty() {
        return Err(bad("the deployment name is empty"));
    }
    let decoded = BASE64
        .decode(data)
        .map_err(|e| bad(&format!("its data is not base64: {e}")))?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad("its data is not text"))?;
    let mut parts = decoded.split('$').map(str::trim);
    let (Some(host), Some(es)) = (parts.next(), parts.next()) else {
        return Err(bad("its data does not hold <host>$<elasticsearch id>"));
    };
    if host.is_empty() || es.is_empty() {
        return Err(bad("its host or Elasticsearch id is empty"));
    }
    Url::parse(&format!("https://{es}.{host}/")).map_err(|e| bad(&e.to_string()))
}

/// The nodes' URLs: the Elastic Cloud deployment's, or `connection.url`'s.
fn nodes(cfg: &EsConfig) -> Result<Vec<Url>, String> {
    let nodes: Vec<Url> = match &cfg.cloud_id {
        Some(id) => vec![cloud_url(id)?],
        None => cfg
            .urls
            .iter()
            .enumerate()
            .map(|(i, u)| {
                // A trailing slash keeps the URL's path when request paths are joined to it.
                // Its text is never shown: it may hold a password (validation names the problem
                // first, where resolved placeholders are hidden).
                Url::parse(&format!("{}/", u.trim_end_matches('/'))).map_err(|e| {
                    format!(
                        "connection.url: URL {} of the list is not a URL: {e}",
                        i + 1
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    // The round robin divides by their count.
    if nodes.is_empty() {
        return Err("connection.url: no URL".into());
    }
    Ok(nodes)
}

/// The `Authorization` header of `connection.api.key` or `connection.username`, if either.
fn authorization(cfg: &EsConfig) -> Result<Option<HeaderValue>, String> {
    let value = match (&cfg.api_key, &cfg.username) {
        (Some(key), _) => format!("ApiKey {key}"),
        (None, Some(user)) => {
            let pass = cfg.password.as_deref().unwrap_or_default();
            let basic = BASE64.encode(format!("{user}:{pass}"));
            format!("Basic {basic}")
        }
        _ => return Ok(None),
    };
    let mut value = HeaderValue::from_str(&value).map_err(|_| match cfg.api_key {
        Some(_) => "connection.api.key: contains characters an HTTP header cannot carry",
        None => "connection.username: contains characters an HTTP header cannot carry",
    })?;
    value.set_sensitive(true);
    Ok(Some(value))
}

impl BulkClient {
    pub fn new(cfg: &EsConfig) -> Result<BulkClient, String> {
        let mut nodes = nodes(cfg)?;
        let ca = match &cfg.ca_location {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                format!("elastic.https.ssl.ca.location: cannot read `{path}`: {e}")
            })?),
            None => None,
        };
        let trust = crate::tls::Trust {
            ca_pem: ca.as_deref(),
            fingerprint: cfg.ca_fingerprint,
        };
        let builder = crate::tls::client_builder(trust).map_err(|e| match &cfg.ca_location {
            Some(path) => format!("elastic.https.ssl.ca.location: `{path}`: {e}"),
            None => e,
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("cdc-sink/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(auth) = authorization(cfg)? {
            headers.insert(AUTHORIZATION, auth);
            // reqwest would send a URL's own `user:password@` instead of the default header: the
            // credentials given as options win.
            nodes = nodes.iter().map(crate::tls::without_credentials).collect();
        }
        let builder = match cfg.connect_timeout.is_zero() {
            // As the Confluent sink's 0: no limit of its own.
            true => builder,
            false => builder.connect_timeout(cfg.connect_timeout),
        };
        let http = builder
            .default_headers(headers)
            .build()
            .map_err(|e| format!("cannot build the Elasticsearch client: {e}"))?;
        // For messages: the URLs without any user and password they may carry.
        let urls = match &cfg.cloud_id {
            Some(_) => "the Elastic Cloud deployment of connection.cloud.id".to_string(),
            None => nodes
                .iter()
                .map(|u| {
                    crate::tls::without_credentials(u)
                        .as_str()
                        .trim_end_matches('/')
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join(","),
        };
        let dead = Mutex::new(vec![None; nodes.len()]);
        let refused = Mutex::new(vec![false; nodes.len()]);
        Ok(BulkClient {
            http,
            nodes,
            turn: AtomicUsize::new(0),
            refused,
            dead,
            compression: cfg.compression,
            urls,
            connect_timeout: cfg.connect_timeout,
        })
    }

    /// POSTs `body` to `_bulk`; returns the response, or an error when no connection opened
    /// within `connection.timeout.ms` or no whole response came within `wait` more. Not sent when `may_send` says no once the
    /// body is ready to go (compressing a large one takes a while, and the process may have
    /// been stopped meanwhile).
    pub async fn bulk(
        &self,
        body: Bytes,
        wait: Duration,
        may_send: &(dyn Fn() -> bool + Sync),
    ) -> Result<Answer, TransportError> {
        self.send(
            Method::POST,
            &format!("_bulk?{FILTER_PATH}"),
            "application/x-ndjson",
            body,
            wait,
            Some(may_send),
        )
        .await
    }

    /// Sends a JSON request (`path` relative to the cluster URL, with its query; no body when
    /// `body` is `None`), as [`Self::bulk`] does; returns the status and the body.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        wait: Duration,
    ) -> Result<(u16, Bytes), TransportError> {
        let bytes = body.map_or_else(Bytes::new, |b| {
            Bytes::from(serde_json::to_vec(b).unwrap_or_default())
        });

        let a = self
            .send(method, path, "application/json", bytes, wait, None)
            .await?;
        Ok((a.status, a.body))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &'static str,
        body: Bytes,
        wait: Duration,
        may_send: Option<&(dyn Fn() -> bool + Sync)>,
    ) -> Result<Answer, TransportError> {
        let at = self.pick(Instant::now());
        // A request that could not be made (its URL, its gzip) tells nothing of the node.
        let request = self.request(at, method, path, content_type, body).await?;
        if may_send.is_some_and(|may| !may()) {
            return Err(TransportError {
                message: "not sent".into(),
                not_sent: true,
                ..Default::default()
            });
        }
        let result = self.exchange(at, request, wait).await;
        self.mark(at, result.is_ok(), Instant::now());
        let refused = matches!(&result, Err(e) if e.certificate_refused);
        let by_every_node = self.refused_by_every_node(at, refused);
        result.map_err(|e| TransportError {
            certificate_refused: by_every_node,
            ..e
        })
    }

    /// Records whether node `at` refused its certificate at its last request; whether every
    /// node did at its own last. A node whose certificate is refused while another answers is
    /// only left out ([`Self::mark`]), as the Java client leaves out a host whose handshake
    /// failed: one node's renewal gone wrong does not stop the sink.
    fn refused_by_every_node(&self, at: usize, refused: bool) -> bool {
        let mut r = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        r[at] = refused;
        r.iter().all(|x| *x)
    }

    /// The node whose turn it is among those not left out ([`Dead`]), the turns going round
    /// them evenly, as the Java client rotates its living nodes; when every node is left out,
    /// the one that comes back first.
    fn pick(&self, now: Instant) -> usize {
        let n = self.nodes.len();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        if n == 1 {
            return 0;
        }
        let dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        let living = |i: &usize| dead[*i].is_none_or(|d| d.until <= now);
        match (0..n).filter(living).count() {
            0 => (0..n)
                .min_by_key(|&i| dead[i].map(|d| d.until))
                .unwrap_or(0),
            k => (0..n).filter(living).nth(turn % k).unwrap_or(0),
        }
    }

    /// Puts node `at` back when it `answered`, leaves it out for longer when it did not. While
    /// every other node is left out, a node that had failed before and fails again is left out
    /// as long again, not longer, and unlogged: else, through an outage of the whole cluster,
    /// the sink's retries (every few seconds) would have lengthened each node's time out in
    /// turn, and a few minutes down would have left nodes out for half an hour after the
    /// cluster came back.
    fn mark(&self, at: usize, answered: bool, now: Instant) {
        if self.nodes.len() == 1 {
            return;
        }
        let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        let before = dead[at];
        if answered {
            if before.is_some() {
                tracing::info!(
                    node = %crate::tls::without_credentials(&self.nodes[at]).as_str().trim_end_matches('/'),
                    "an Elasticsearch node answers again: back in the round robin"
                );
            }
            dead[at] = None;
            return;
        }
        let others_out = (0..dead.len())
            .filter(|&i| i != at)
            .all(|i| dead[i].is_some_and(|d| d.until > now));
        if let (true, Some(d)) = (others_out, before) {
            dead[at] = Some(Dead {
                until: now + Dead::wait(d.failures.saturating_sub(1)),
                ..d
            });
            return;
        }
        let after = Dead::after(before, now);
        dead[at] = Some(after);
        tracing::warn!(
            node = %crate::tls::without_credentials(&self.nodes[at]).as_str().trim_end_matches('/'),
            failures = after.failures,
            "an Elasticsearch node gave no response: left out of the round robin for {:?} (the other nodes of connection.url take its requests)",
            after.until - now
        );
    }

    /// An error of no response, naming the nodes.
    fn fail(&self, e: &(dyn std::error::Error + 'static), timed_out: bool) -> TransportError {
        TransportError {
            message: format!("{}: {}", self.urls, error_chain(e)),
            timed_out,
            certificate_refused: crate::tls::certificate_refused(e),
            ..Default::default()
        }
    }

    /// The request to node `at`, its body gzipped with `connection.compression`.
    async fn request(
        &self,
        at: usize,
        method: Method,
        path: &str,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<reqwest::RequestBuilder, TransportError> {
        let url = self.nodes[at]
            .join(path.trim_start_matches('/'))
            .map_err(|e| self.fail(&e, false))?;
        let mut request = self
            .http
            .request(method, url)
            .header(CONTENT_TYPE, content_type);
        if !body.is_empty() {
            request = match self.compression {
                true => {
                    // About 70 ms for a 5 MiB body here: on the blocking pool, not on the
                    // runtime's threads, which also serve the other lanes, the REST API and the
                    // stall clock.
                    let zipped = tokio::task::spawn_blocking(move || gzip(&body))
                        .await
                        .map_err(|e| self.fail(&e, false))?
                        .map_err(|e| self.fail(&e, false))?;
                    request.header(CONTENT_ENCODING, "gzip").body(zipped)
                }
                false => request.body(body),
            };
        }
        Ok(request)
    }

    /// Sends `request` to node `at`; its whole response within `wait` and the connect timeout.
    async fn exchange(
        &self,
        at: usize,
        request: reqwest::RequestBuilder,
        wait: Duration,
    ) -> Result<Answer, TransportError> {
        let node = &self.nodes[at];
        // The time allowed for the whole response: the client's own timeout would apply per
        // request too, but a late answer must also be told apart from a refused connection.
        let response = async {
            let resp = request.send().await.map_err(|e| {
                if e.is_connect() && e.is_timeout() {
                    // Nothing was sent: not a request Elasticsearch may still be executing.
                    TransportError {
                        message: format!(
                            "{}: no connection within {} ms (connection.timeout.ms): {}",
                            crate::tls::without_credentials(node)
                                .as_str()
                                .trim_end_matches('/'),
                            self.connect_timeout.as_millis(),
                            error_chain(&e)
                        ),
                        ..Default::default()
                    }
                } else {
                    self.fail(&e, e.is_timeout())
                }
            })?;
            let status = resp.status().as_u16();
            let url = resp.url().as_str().to_string();
            let body = resp.bytes().await.map_err(|e| self.fail(&e, false))?;
            Ok(Answer { status, body, url })
        };
        match tokio::time::timeout(wait + self.connect_timeout, response).await {
            Ok(r) => r,
            Err(_) => Err(TransportError {
                message: format!(
                    "{}: no response within {} ms (read.timeout.ms)",
                    self.urls,
                    wait.as_millis()
                ),
                timed_out: true,
                ..Default::default()
            }),
        }
    }
}

/// `body` gzipped (`connection.compression`), at zlib's default level.
fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::default(),
    );
    gz.write_all(body)?;
    gz.finish()
}

/// An error with its causes (`error sending request: connection refused`).
fn error_chain(e: &dyn std::error::Error) -> String {
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
struct Response {
    #[serde(default)]
    errors: Option<bool>,
    #[serde(default)]
    items: Option<Vec<Entry>>,
}

/// One item of a bulk response, `{"<action>": {"status": …, "error": {…}}}`, its action's name
/// left out. The items are read in the response's own walk, one way whether or not any failed
/// (they were taken as raw text, then walked again to count or to read them). Either way costs
/// about 820 instructions an item (callgrind, docs/performance-log.md); a response of successes in
/// the usual shape is counted by hand instead ([`all_written`]).
struct Entry(ItemResult);

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Entry, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a bulk response item (an object)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Entry, A::Error> {
                let mut first: Option<Item> = None;
                while m.next_key::<serde::de::IgnoredAny>()?.is_some() {
                    let item: Item = m.next_value()?;
                    first.get_or_insert(item);
                }
                let item = first.unwrap_or_default();
                let (error_type, reason) = item.error.map(|e| (e.ty, e.reason)).unwrap_or_default();
                Ok(Entry(ItemResult {
                    status: item.status,
                    error_type,
                    reason,
                }))
            }
        }
        d.deserialize_map(Visit)
    }
}

#[derive(Deserialize, Default)]
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
    match all_written(body) {
        Some(n) if n == sent => Ok(None),
        // Anything else, a count that does not match included, is named by the walk.
        _ => walk_items(body, sent),
    }
}

/// The number of items of a response in the one shape Elasticsearch gives a request none of
/// whose actions failed (`errors` false, as it is for a delete of a missing document, 404
/// without an error), through [`FILTER_PATH`]: `{"errors":false,"items":[` (perhaps with a
/// `"took":<ms>,` first) then items such as
/// `{"index":{"status":201}}` (a name of lowercase letters, a three-digit status), comma
/// separated, then `]}`, without whitespace. `None` for any other text, which [`walk_items`]
/// then reads. Read by hand: serde's walk took about 770 instructions an item, 4% of the
/// end-to-end worker's on JSON without schema (callgrind, docs/performance-log.md); this takes
/// about 60. Whatever it counts, [`walk_items`] reads as the same count with no errors (a
/// test compares them over mutated responses).
fn all_written(body: &[u8]) -> Option<usize> {
    let mut rest = body.strip_prefix(b"{")?;
    // `took`, which the filter leaves out, as a proxy or a stand-in may still give it.
    if let Some(took) = rest.strip_prefix(br#""took":"#) {
        let digits = took.iter().position(|b| !b.is_ascii_digit())?;
        if digits == 0 || (digits > 1 && took[0] == b'0') {
            return None;
        }
        rest = took[digits..].strip_prefix(b",")?;
    }
    rest = rest.strip_prefix(br#""errors":false,"items":["#)?;
    let mut n = 0;
    loop {
        rest = rest.strip_prefix(b"{\"")?;
        let name = rest.iter().position(|b| !b.is_ascii_lowercase())?;
        if name == 0 {
            return None;
        }
        rest = rest[name..].strip_prefix(br#"":{"status":"#)?;
        match rest {
            [
                b'1'..=b'9',
                b'0'..=b'9',
                b'0'..=b'9',
                b'}',
                b'}',
                after @ ..,
            ] => rest = after,
            _ => return None,
        }
        n += 1;
        match rest {
            [b',', after @ ..] => rest = after,
            b"]}" => return Some(n),
            _ => return None,
        }
    }
}

/// [`parse_items`] for any response: serde_json walks it.
fn walk_items(body: &[u8], sent: usize) -> Result<Option<Vec<ItemResult>>, String> {
    let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    let resp: Response = serde_json::from_slice(body)
        .map_err(|e| format!("unreadable bulk response ({e}): {}", snippet()))?;
    let errors = resp
        .errors
        .ok_or_else(|| format!("bulk response without `errors`: {}", snippet()))?;
    let items = resp
        .items
        .ok_or_else(|| format!("bulk response without `items`: {}", snippet()))?;
    if items.len() != sent {
        return Err(format!(
            "bulk response has {} items for {sent} actions",
            items.len()
        ));
    }
    Ok(errors.then(|| items.into_iter().map(|Entry(r)| r).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn es_config(extra: &str) -> Result<EsConfig, String> {
        let json = format!(
            r#"{{"name":"c","config":{{"connector.class":"elasticsearch","topics":"t"{extra}}}}}"#
        );
        let config =
            crate::connector::ConnectorConfig::from_json(&json).map_err(|e| e.to_string())?;
        let spec = crate::connector::ConnectorSpec::validate(&config).map_err(|e| e.to_string())?;
        Ok(spec.sink.elasticsearch().unwrap().clone())
    }

    /// A node whose request got no response is left out of the round robin for a minute, then
    /// longer after each failure in a row (as the Java client's `DeadHostState`); any response
    /// puts it back; with every node left out, the one that comes back first is tried.
    #[test]
    fn a_node_that_gave_no_response_is_left_out_for_a_while() {
        let cfg = es_config(
            r#","connection.url":"http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:3""#,
        )
        .unwrap();
        let client = BulkClient::new(&cfg).unwrap();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let picks = |at: Instant| (0..6).map(|_| client.pick(at)).collect::<Vec<_>>();
        let (all_in, one_out) = ([0, 1, 2, 0, 1, 2], [0, 2, 0, 2, 0, 2]);
        assert_eq!(picks(t0), all_in);
        // Left out, its turns go evenly to the others.
        client.mark(1, false, t0);
        assert_eq!(picks(t0), one_out);
        assert_eq!(picks(t0 + s(59)), one_out);
        assert_eq!(picks(t0 + s(60)), all_in);
        // Failing again when tried: left out for 1 min × 2^(1/2), then 2 min.
        client.mark(1, false, t0 + s(60));
        assert_eq!(picks(t0 + s(144)), one_out);
        assert_eq!(picks(t0 + s(145)), all_in);
        client.mark(1, false, t0 + s(145));
        assert_eq!(picks(t0 + s(264)), one_out);
        assert_eq!(picks(t0 + s(265)), all_in);
        // Every node left out: the one back first, node 0 (node 1 is out for 2.83 min now).
        client.mark(0, false, t0 + s(265));
        client.mark(1, false, t0 + s(265));
        client.mark(2, false, t0 + s(266));
        assert_eq!(picks(t0 + s(270)), [0; 6]);
        // Failing while the others are out, it is left out as long again (1 min), not longer:
        // node 2 comes back first now.
        client.mark(0, false, t0 + s(270));
        assert_eq!(client.dead.lock().unwrap()[0].unwrap().failures, 1);
        assert_eq!(picks(t0 + s(270)), [2; 6]);
        // Its time out over (at 326 s) while the others are still out, node 2 is tried as a
        // living node and fails again: as long again too.
        assert_eq!(picks(t0 + s(327)), [2; 6]);
        client.mark(2, false, t0 + s(327));
        assert_eq!(client.dead.lock().unwrap()[2].unwrap().failures, 1);
        assert_eq!(picks(t0 + s(328)), [0; 6]);
        // A response puts a node back.
        client.mark(2, true, t0 + s(328));
        assert_eq!(picks(t0 + s(328)), [2; 6]);
        // A failure while another node is in lengthens a node's time out.
        client.mark(0, false, t0 + s(331));
        assert_eq!(client.dead.lock().unwrap()[0].unwrap().failures, 2);
        // Never longer than 30 minutes.
        let mut d = None;
        for _ in 0..40 {
            d = Some(Dead::after(d, t0));
        }
        assert_eq!(d.unwrap().until - t0, s(30 * 60));
    }

    /// `connection.timeout.ms=0` is no limit of its own, as in the Confluent sink, not a
    /// connect timeout of 0 that no connection could meet.
    #[test]
    fn a_connection_timeout_of_0_sets_no_limit_of_its_own() {
        use std::os::fd::AsRawFd;
        // A listener whose connections never open: its accept queue (a second listen() sets
        // its backlog, 0 holding one connection) is full, so its SYNs go unanswered.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: a listening socket's descriptor, owned by `listener` for the whole test.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let addr = listener.local_addr().unwrap();
        let _held = std::net::TcpStream::connect(addr).unwrap();
        let url = format!("http://{addr}");
        let cfg = es_config(&format!(
            r#","connection.url":"{url}","connection.timeout.ms":"0""#
        ))
        .unwrap();
        let client = BulkClient::new(&cfg).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Waited for until the request's time is up, not failed at once as a connection that
        // took longer than 0 ms.
        let e = runtime
            .block_on(client.json(Method::GET, "/", None, Duration::from_millis(300)))
            .unwrap_err();
        assert!(e.timed_out, "{}", e.message);
        assert!(e.message.contains("read.timeout.ms"), "{}", e.message);
        drop(listener);
    }

    #[test]
    fn an_elastic_cloud_id_replaces_the_urls() {
        // The example ID of Elastic's documentation: us-east-1.aws.found.io$<es>$<kibana>.
        let id = "my-deployment:dXMtZWFzdC0xLmF3cy5mb3VuZC5pbyRjZWM2ZjI2MWE3NGJmMjRjZTMzYmI4ODExYjg0Mjk0ZiRjNmMyY2E2ZDA0MjI0OWFmMGNjN2Q3YTllOTYyNTc0Mw==";
        let cfg = es_config(&format!(
            r#","connection.cloud.id":"{id}","connection.api.key":"k""#
        ))
        .unwrap();
        let client = BulkClient::new(&cfg).unwrap();
        assert_eq!(
            client.nodes[0].as_str(),
            "https://cec6f261a74bf24ce33bb8811b84294f.us-east-1.aws.found.io/"
        );
        // A host may carry a port; spaces around the parts are dropped.
        let with_port = BASE64.encode("eu-west-1.aws.found.io:9243$ abc $def");
        assert_eq!(
            cloud_url(&format!("d:{with_port}")).unwrap().as_str(),
            "https://abc.eu-west-1.aws.found.io:9243/"
        );
        let no_es = BASE64.encode("host.io");
        for bad in [":abc", "d:%%%", &format!("d:{no_es}")] {
            let err = cloud_url(bad).unwrap_err();
            assert!(
                err.starts_with("connection.cloud.id: not an Elastic Cloud ID ("),
                "{err}"
            );
        }
        let bad = es_config(r#","connection.cloud.id":"nope""#).unwrap();
        let err = BulkClient::new(&bad).err().unwrap();
        assert!(
            err.starts_with("connection.cloud.id: not an Elastic Cloud ID"),
            "{err}"
        );
        let both = es_config(&format!(
            r#","connection.cloud.id":"{id}","connection.url":"http://es:9200""#
        ))
        .unwrap_err();
        assert!(both.contains("not both"), "{both}");
        let none = es_config("").unwrap_err();
        assert!(none.contains("connection.url: missing"), "{none}");
    }

    #[test]
    fn responses_without_errors_give_no_item_results() {
        assert_eq!(
            parse_items(br#"{"errors":false,"items":[{"index":{"status":201}}]}"#, 1),
            Ok(None)
        );
        // Whatever the order of its fields.
        assert_eq!(
            parse_items(
                br#"{"items":[{"index":{"status":201}}],"took":1,"errors":false}"#,
                1
            ),
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
            br#"{"errors":false,"items":[1,2]}"#,
            br#"{"errors":false,"items":[{"index":{"status":201}},{"index":{"status":"x"}}]}"#,
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
    fn responses_counted_by_hand_are_read_alike_by_serde_json() {
        let ok = br#"{"errors":false,"items":[{"index":{"status":201}},{"delete":{"status":200}},{"index":{"status":409}}]}"#;
        assert_eq!(all_written(ok), Some(3));
        assert_eq!(parse_items(ok, 3), Ok(None));
        assert_eq!(
            parse_items(ok, 2),
            Err("bulk response has 3 items for 2 actions".into())
        );
        assert_eq!(parse_items(ok, 2), walk_items(ok, 2));
        let took = br#"{"took":30,"errors":false,"items":[{"index":{"status":201}}]}"#;
        assert_eq!(all_written(took), Some(1));
        for other in [
            &br#"{"took":,"errors":false,"items":[{"index":{"status":201}}]}"#[..],
            br#"{"took":07,"errors":false,"items":[{"index":{"status":201}}]}"#,
            br#"{"took":-1,"errors":false,"items":[{"index":{"status":201}}]}"#,
            br#"{"took":1"errors":false,"items":[{"index":{"status":201}}]}"#,
            &br#"{"errors":false,"items":[]}"#[..],
            br#"{"errors":true,"items":[{"index":{"status":201}}]}"#,
            br#"{"errors":false,"items":[{"index":{"status":201,"error":{"type":"x"}}}]}"#,
            br#"{"errors":false,"items":[{"index":{"status":2010}}]}"#,
            br#"{"errors":false,"items":[{"index":{"status":020}}]}"#,
            br#"{"errors":false,"items":[{"":{"status":201}}]}"#,
            br#"{"errors":false,"items":[{"Index":{"status":201}}]}"#,
            br#"{"errors":false,"items":[{"index":{"status":201}}]} "#,
            br#"{"errors":false,"items":[{"index":{"status":201}},]}"#,
            br#"{"errors": false,"items":[{"index":{"status":201}}]}"#,
            br#"{"errors":false,"items":[{"index":{"status":201}}"#,
        ] {
            assert_eq!(
                all_written(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        // Responses built from items, then a byte or two changed, inserted or removed: whatever
        // is counted, serde_json reads as that many items, all written.
        let items: [&[u8]; 5] = [
            br#"{"index":{"status":201}}"#,
            br#"{"delete":{"status":404}}"#,
            br#"{"create":{"status":409,"error":{"type":"t","reason":"r"}}}"#,
            br#"{"update":{"status":200}}"#,
            br#"{"index":{"status":503}}"#,
        ];
        let noise = b"{}[]\":,0129aZ\\ \t";
        let mut rng = fastrand::Rng::with_seed(23);
        let (mut counted, mut left) = (0, 0);
        for _ in 0..200_000 {
            let mut text = match rng.u8(..3) {
                0 => br#"{"errors":false,"items":["#.to_vec(),
                1 => br#"{"took":0,"errors":false,"items":["#.to_vec(),
                _ => br#"{"took":215,"errors":false,"items":["#.to_vec(),
            };
            for i in 0..rng.usize(1..4) {
                if i > 0 {
                    text.push(b',');
                }
                text.extend_from_slice(items[rng.usize(..items.len())]);
            }
            text.extend_from_slice(b"]}");
            for _ in 0..rng.usize(0..3) {
                let at = rng.usize(..=text.len());
                match rng.u8(..3) {
                    0 if at < text.len() => text[at] = noise[rng.usize(..noise.len())],
                    1 => text.insert(at, noise[rng.usize(..noise.len())]),
                    _ if at < text.len() => {
                        text.remove(at);
                    }
                    _ => {}
                }
            }
            match all_written(&text) {
                Some(n) => {
                    counted += 1;
                    let shown = String::from_utf8_lossy(&text);
                    assert_eq!(walk_items(&text, n), Ok(None), "{shown}");
                    assert_eq!(
                        walk_items(&text, n + 1),
                        parse_items(&text, n + 1),
                        "{shown}"
                    );
                }
                None => left += 1,
            }
        }
        assert!(counted > 20_000 && left > 20_000, "{counted} {left}");
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
