//! A schema registry for tests: the Confluent REST endpoints the Avro converter and its users
//! need (`GET /schemas/ids/{id}`, `GET /subjects`, `GET /subjects/{s}/versions/{v}`,
//! `POST /subjects/{s}/versions`), on a free port, able to fail on demand.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::http::{self, Handler, Reply, Request};

#[derive(Default)]
struct Store {
    /// Schema text by id (id = index + 1).
    schemas: Vec<String>,
    /// Subject → ids of its versions.
    subjects: BTreeMap<String, Vec<usize>>,
    /// `GET /schemas/ids/{id}` calls per id.
    fetches: BTreeMap<usize, usize>,
}

struct State {
    store: Mutex<Store>,
    /// Answer every request with this status instead.
    failing: AtomicU16,
    /// Answer 503 to fetches of schema ids from this one on (0: none).
    failing_from: AtomicU64,
    /// Close every connection without an answer.
    dropping: AtomicBool,
    /// Answer every request this many milliseconds late.
    slow_ms: AtomicU64,
    /// The `Authorization` header every request must carry, when set.
    auth: Mutex<Option<String>>,
    /// Requests refused for their credentials.
    unauthorized: std::sync::atomic::AtomicU64,
}

pub struct Registry {
    pub url: String,
    state: Arc<State>,
    _rt: tokio::runtime::Runtime,
}

fn reply(status: u16, v: Value) -> Reply {
    Reply::Respond {
        status,
        body: serde_json::to_vec(&v).unwrap(),
    }
}

fn not_found(code: u32, msg: &str) -> Reply {
    reply(404, json!({"error_code": code, "message": msg}))
}

fn handle(s: &State, req: Request) -> Reply {
    if s.dropping.load(Ordering::SeqCst) {
        return Reply::Drop;
    }
    let wanted = s.auth.lock().unwrap().clone();
    if wanted.is_some() && req.header("authorization") != wanted.as_deref() {
        s.unauthorized.fetch_add(1, Ordering::SeqCst);
        return reply(401, json!({"error_code": 401, "message": "Unauthorized"}));
    }
    let failing = s.failing.load(Ordering::SeqCst);
    if failing != 0 {
        return reply(
            failing,
            json!({"error_code": failing as u32 * 100, "message": "failing on purpose"}),
        );
    }
    let path = req.target.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut st = s.store.lock().unwrap();
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", ["schemas", "ids", id]) => {
            let Ok(id) = id.parse::<usize>() else {
                return not_found(40403, "Schema not found");
            };
            let from = s.failing_from.load(Ordering::SeqCst);
            if from != 0 && id as u64 >= from {
                return reply(
                    503,
                    json!({"error_code": 50301, "message": "failing on purpose"}),
                );
            }
            *st.fetches.entry(id).or_default() += 1;
            match st.schemas.get(id.wrapping_sub(1)) {
                Some(schema) => reply(200, json!({"schema": schema})),
                None => not_found(40403, &format!("Schema {id} not found")),
            }
        }
        ("GET", ["subjects"]) => reply(200, json!(st.subjects.keys().collect::<Vec<_>>())),
        ("GET", ["subjects", subject, "versions", version]) => {
            let Some(ids) = st.subjects.get(*subject) else {
                return not_found(40401, "Subject not found");
            };
            let idx = if *version == "latest" {
                ids.len()
            } else {
                version.parse().unwrap_or(0)
            };
            match idx.checked_sub(1).and_then(|i| ids.get(i)) {
                Some(&id) => reply(
                    200,
                    json!({"subject": subject, "version": idx, "id": id, "schema": st.schemas[id - 1]}),
                ),
                None => not_found(40402, "Version not found"),
            }
        }
        ("POST", ["subjects", subject, "versions"]) => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let Some(schema) = body["schema"].as_str() else {
                return reply(
                    422,
                    json!({"error_code": 42201, "message": "Invalid schema"}),
                );
            };
            if apache_avro::Schema::parse_str(schema).is_err() {
                return reply(
                    422,
                    json!({"error_code": 42201, "message": "Invalid schema"}),
                );
            }
            // The same schema text keeps its id, as in Confluent's registry.
            let id = match st.schemas.iter().position(|s| s == schema) {
                Some(i) => i + 1,
                None => {
                    st.schemas.push(schema.to_string());
                    st.schemas.len()
                }
            };
            let versions = st.subjects.entry(subject.to_string()).or_default();
            if !versions.contains(&id) {
                versions.push(id);
            }
            reply(200, json!({"id": id}))
        }
        _ => reply(
            404,
            json!({"error_code": 404, "message": "HTTP 404 Not Found"}),
        ),
    }
}

impl Registry {
    pub fn start() -> Registry {
        let (rt, listener, addr) = http::local_server();
        let url = format!("http://{addr}");
        let state = Arc::new(State {
            store: Mutex::default(),
            failing: AtomicU16::new(0),
            failing_from: AtomicU64::new(0),
            dropping: AtomicBool::new(false),
            slow_ms: AtomicU64::new(0),
            auth: Mutex::new(None),
            unauthorized: Default::default(),
        });
        let s = state.clone();
        let handler: Handler = Arc::new(move |req| {
            let r = handle(&s, req);
            let late = Duration::from_millis(s.slow_ms.load(Ordering::SeqCst));
            Box::pin(async move {
                tokio::time::sleep(late).await;
                r
            })
        });
        rt.spawn(http::serve(listener, handler));
        Registry {
            url,
            state,
            _rt: rt,
        }
    }

    /// Registers `schema` under `subject` (directly, without HTTP); returns its id.
    pub fn register(&self, subject: &str, schema: &str) -> u32 {
        let req = Request {
            method: "POST".into(),
            target: format!("/subjects/{subject}/versions"),
            headers: Vec::new(),
            body: serde_json::to_vec(&json!({"schema": schema})).unwrap(),
        };
        let failing = self.state.failing.swap(0, Ordering::SeqCst);
        let dropping = self.state.dropping.swap(false, Ordering::SeqCst);
        let r = handle(&self.state, req);
        self.state.failing.store(failing, Ordering::SeqCst);
        self.state.dropping.store(dropping, Ordering::SeqCst);
        match r {
            Reply::Respond { status: 200, body } => serde_json::from_slice::<Value>(&body).unwrap()
                ["id"]
                .as_u64()
                .unwrap() as u32,
            Reply::Respond { status, body } => panic!(
                "registering {subject}: {status} {}",
                String::from_utf8_lossy(&body)
            ),
            Reply::Drop => unreachable!(),
        }
    }

    /// Refuses (401) every request without HTTP basic auth as `user`:`password`.
    pub fn require_basic_auth(&self, user: &str, password: &str) {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        *self.state.auth.lock().unwrap() = Some(format!("Basic {token}"));
    }

    /// Requests refused for their credentials so far.
    pub fn unauthorized(&self) -> u64 {
        self.state.unauthorized.load(Ordering::SeqCst)
    }

    /// Answers every request with `status` (e.g. 503) until `fail(None)`.
    pub fn fail(&self, status: Option<u16>) {
        self.state
            .failing
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Answers fetches of schema ids from `id` on 503 (`None`: none), the others as usual.
    pub fn fail_ids_from(&self, id: Option<u32>) {
        self.state
            .failing_from
            .store(id.map_or(0, u64::from), Ordering::SeqCst);
    }

    /// Answers every request `late` (zero: at once).
    pub fn slow(&self, late: Duration) {
        self.state
            .slow_ms
            .store(late.as_millis() as u64, Ordering::SeqCst);
    }

    /// Drops every connection without answering (unreachable) until `drop_connections(false)`.
    pub fn drop_connections(&self, on: bool) {
        self.state.dropping.store(on, Ordering::SeqCst);
    }

    /// How often schema `id` was fetched.
    pub fn fetches(&self, id: u32) -> usize {
        self.state
            .store
            .lock()
            .unwrap()
            .fetches
            .get(&(id as usize))
            .copied()
            .unwrap_or(0)
    }
}
