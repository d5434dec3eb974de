//! A fault-injecting HTTP proxy in front of Elasticsearch: whole-request 429/503, per-item 429
//! inside a 200 (those items are not forwarded, so they really are unwritten), slow responses,
//! dropped connections, and refusing connections altogether.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;

use super::http::{self, Handler, Reply, Request};

/// Probabilities in percent, per request (or per item for `item_429`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub request_429: u32,
    pub request_503: u32,
    pub item_429: u32,
    pub slow: u32,
    pub slow_ms: u64,
    /// Delay every request whose body holds these bytes by `slow_ms` too, before forwarding it.
    pub slow_when: Option<&'static str>,
    /// Forward the request, then close the connection without answering.
    pub drop_after_forward: u32,
    /// Answer a bulk request 200 `{"took":1,"errors":false}` without items, not forwarding it.
    pub empty_200: u32,
    /// Answer every search (and scroll) request 503, not forwarding it.
    pub search_503: bool,
    /// Answer every scroll request 404, the scroll context lost (as after a node's restart or
    /// `DELETE _search/scroll/_all`), not forwarding it.
    pub scroll_lost: bool,
    /// Forward searches and scrolls, then answer them 200 with no hits and one shard failed
    /// (what a search some shards failed answers: the other shards' hits only).
    pub shards_failed: bool,
    /// Answer every `PUT …/_mapping` 503, not forwarding it.
    pub mapping_503: bool,
    /// Fail the first item of this many bulk requests with 429 (not forwarding it), one by one.
    pub first_item_429: u32,
}

#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    /// Requests answered (or dropped), counted once the answer is made.
    pub answered: AtomicU64,
    pub failed_requests: AtomicU64,
    pub failed_items: AtomicU64,
    pub forwarded_items: AtomicU64,
    /// Search and scroll requests seen.
    pub searches: AtomicU64,
    /// When the latest bulk request answered 503 (`Faults::request_503`) was answered: just
    /// before its answer is written.
    pub answered_503: Mutex<Option<std::time::Instant>>,
}

struct State {
    upstream: String,
    faults: Mutex<Faults>,
    refusing: AtomicBool,
    stats: Stats,
    http: reqwest::Client,
}

pub struct Proxy {
    pub url: String,
    port: u16,
    state: Arc<State>,
    rt: tokio::runtime::Runtime,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            faults: Mutex::new(Faults::default()),
            refusing: AtomicBool::new(false),
            stats: Stats::default(),
            http: reqwest::Client::new(),
        });
        let p = Proxy {
            url: format!("http://127.0.0.1:{port}"),
            port,
            state,
            rt,
            listener: Mutex::new(None),
        };
        p.listen(listener);
        p
    }

    fn handler(&self) -> Handler {
        let state = self.state.clone();
        Arc::new(move |req| {
            let s = state.clone();
            Box::pin(async move {
                let reply = handle(s.clone(), req).await;
                s.stats.answered.fetch_add(1, Ordering::SeqCst);
                reply
            })
        })
    }

    fn listen(&self, listener: TcpListener) {
        let h = self.handler();
        let state = self.state.clone();
        let task = self.rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if state.refusing.load(Ordering::SeqCst) {
                    continue;
                }
                let h = h.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let _ = http::connection(stream, h).await;
                });
            }
        });
        *self.listener.lock().unwrap() = Some(task);
    }

    pub fn set_faults(&self, f: Faults) {
        *self.state.faults.lock().unwrap() = f;
    }

    /// Refuses connections (the port is closed, open connections are cut) until `resume`.
    pub fn refuse(&self) {
        self.state.refusing.store(true, Ordering::SeqCst);
        if let Some(t) = self.listener.lock().unwrap().take() {
            t.abort();
        }
    }

    pub fn resume(&self) {
        self.state.refusing.store(false, Ordering::SeqCst);
        let addr = format!("127.0.0.1:{}", self.port);
        // The port may be taken meanwhile (by a test running beside this one): say so rather
        // than wait for ever.
        let start = std::time::Instant::now();
        let listener = self.rt.block_on(async {
            loop {
                match TcpListener::bind(&addr).await {
                    Ok(l) => break l,
                    Err(e) if start.elapsed() > Duration::from_secs(60) => {
                        panic!("the proxy cannot listen on {addr} again: {e}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        self.listen(listener);
    }

    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }
}

fn roll(pct: u32) -> bool {
    pct > 0 && fastrand::u32(..100) < pct
}

async fn handle(s: Arc<State>, req: Request) -> Reply {
    if s.refusing.load(Ordering::SeqCst) {
        return Reply::Drop;
    }
    s.stats.requests.fetch_add(1, Ordering::Relaxed);
    let is_bulk = req.target.contains("_bulk");
    let (f, fail_first) = {
        let mut f = s.faults.lock().unwrap();
        let fail_first = is_bulk && f.first_item_429 > 0;
        if fail_first {
            f.first_item_429 -= 1;
        }
        (*f, fail_first)
    };
    let is_search = req.target.contains("_search");
    if is_search {
        s.stats.searches.fetch_add(1, Ordering::Relaxed);
        if f.search_503 {
            return Reply::Respond {
                status: 503,
                body: br#"{"error":"injected","status":503}"#.to_vec(),
            };
        }
        if f.scroll_lost && req.target.contains("_search/scroll") {
            return Reply::Respond {
                status: 404,
                body: br#"{"error":{"root_cause":[{"type":"search_context_missing_exception","reason":"No search context found (injected)"}],"type":"search_phase_execution_exception","reason":"all shards failed"},"status":404}"#.to_vec(),
            };
        }
    }
    if f.mapping_503 && req.method == "PUT" && req.target.contains("/_mapping") {
        return Reply::Respond {
            status: 503,
            body: br#"{"error":"injected","status":503}"#.to_vec(),
        };
    }
    if is_bulk && roll(f.request_429) {
        s.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
        return Reply::Respond { status: 429, body: br#"{"error":{"type":"es_rejected_execution_exception","reason":"injected"},"status":429}"#.to_vec() };
    }
    if is_bulk && roll(f.request_503) {
        *s.stats.answered_503.lock().unwrap() = Some(std::time::Instant::now());
        s.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
        return Reply::Respond {
            status: 503,
            body: br#"{"error":"injected","status":503}"#.to_vec(),
        };
    }
    if is_bulk && roll(f.empty_200) {
        s.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
        return Reply::Respond {
            status: 200,
            body: br#"{"took":1,"errors":false}"#.to_vec(),
        };
    }
    if roll(f.slow)
        || f.slow_when
            .is_some_and(|w| memchr::memmem::find(&req.body, w.as_bytes()).is_some())
    {
        tokio::time::sleep(Duration::from_millis(f.slow_ms)).await;
    }
    let (body, injected) = if is_bulk && (f.item_429 > 0 || fail_first) {
        // Cut some items out: they get a 429 and are never seen by Elasticsearch.
        let actions = http::bulk_actions(&req.body);
        let fail: Vec<bool> = (0..actions.len())
            .map(|i| (fail_first && i == 0) || roll(f.item_429))
            .collect();
        let mut fwd = Vec::with_capacity(req.body.len());
        for (a, failed) in actions.iter().zip(&fail) {
            if !failed {
                fwd.extend_from_slice(a.action);
                fwd.push(b'\n');
                if let Some(d) = a.doc {
                    fwd.extend_from_slice(d);
                    fwd.push(b'\n');
                }
            }
        }
        let ops: Vec<&'static str> = actions.iter().map(|a| a.op()).collect();
        (fwd, Some((fail, ops)))
    } else {
        (req.body, None)
    };
    let forwarded_items = injected
        .as_ref()
        .map_or(0, |(f, _)| f.iter().filter(|x| !**x).count());
    let upstream_items: Vec<Value> = if injected.is_some() && forwarded_items == 0 {
        Vec::new()
    } else {
        let resp = s
            .http
            .request(
                req.method.parse().unwrap_or(reqwest::Method::POST),
                format!("{}{}", s.upstream, req.target),
            )
            .header(
                "content-type",
                if is_bulk {
                    "application/x-ndjson"
                } else {
                    "application/json"
                },
            )
            .body(body)
            .send()
            .await;
        let Ok(resp) = resp else { return Reply::Drop };
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        if roll(f.drop_after_forward) {
            return Reply::Drop;
        }
        if is_search && f.shards_failed && status == 200 {
            let mut v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            v["hits"]["hits"] = Value::Array(Vec::new());
            v["_shards"]["failed"] = 1.into();
            v["_shards"]["failures"] = serde_json::json!([{"shard": 0, "reason": {"type": "node_not_connected_exception", "reason": "injected"}}]);
            return Reply::Respond {
                status,
                body: serde_json::to_vec(&v).unwrap(),
            };
        }
        let Some((fail, _)) = &injected else {
            return Reply::Respond {
                status,
                body: bytes,
            };
        };
        if status != 200 {
            return Reply::Respond {
                status,
                body: bytes,
            };
        }
        let _ = fail;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        v["items"].as_array().cloned().unwrap_or_default()
    };
    let Some((fail, ops)) = injected else {
        unreachable!("handled above")
    };
    s.stats
        .forwarded_items
        .fetch_add(forwarded_items as u64, Ordering::Relaxed);
    let mut up = upstream_items.into_iter();
    let mut items = Vec::with_capacity(fail.len());
    for (failed, op) in fail.iter().zip(ops) {
        if *failed {
            s.stats.failed_items.fetch_add(1, Ordering::Relaxed);
            items.push(serde_json::json!({op: {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "injected"}}}));
        } else {
            items.push(up.next().unwrap_or(Value::Null));
        }
    }
    let errors = items.iter().any(|i| {
        i.as_object()
            .and_then(|o| o.values().next())
            .is_some_and(|x| x.get("error").is_some())
    });
    Reply::Respond {
        status: 200,
        body: serde_json::to_vec(&serde_json::json!({"errors": errors, "items": items})).unwrap(),
    }
}
