//! The Confluent Schema Registry, as the Avro converter uses it: writer schemas by id, through
//! `schema_registry_converter`'s client, each fetched and compiled once for the life of the
//! worker. Tasks share one registry per URL list; the first task to need an id fetches it, the
//! others wait for that fetch instead of making their own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use schema_registry_converter::blocking::schema_registry::{SrSettings, get_schema_by_id};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::RawError;

use super::plan::{Plan, compile};
use crate::decode::DecodeError;

/// What is known of one schema id: its plan, or why its schema cannot be decoded.
enum Known {
    Plan(Arc<Plan>),
    Refused(DecodeError),
}

impl Known {
    fn result(&self) -> Result<Arc<Plan>, DecodeError> {
        match self {
            Known::Plan(p) => Ok(p.clone()),
            Known::Refused(e) => Err(e.clone()),
        }
    }
}

type Slot = Arc<Mutex<Option<Known>>>;

pub struct Registry {
    /// One client per URL, asked in turn: `schema_registry_converter` given several URLs
    /// reports only the last one's error, so a registry restarting (503) behind the first
    /// URL and a follower not yet knowing a new id (404) behind the second read as an
    /// unknown id, and the record was taken as bad.
    settings: Vec<(String, SrSettings)>,
    /// The URLs as errors and logs show them: without a `user:password@` (which reqwest sends
    /// as basic auth, so a URL carrying one works, as Confluent's `basic.auth.credentials.source
    /// =URL` did).
    urls: String,
    plans: Mutex<HashMap<u32, Slot>>,
    /// Schemas fetched so far (each id once, when all goes well).
    pub fetches: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("urls", &self.urls)
            .finish()
    }
}

/// The registry of `urls` (with `user_info` = `user:password` for basic auth), shared by every
/// task of this worker that runs now. Once no task holds it, it is forgotten with its schemas:
/// a task started later (a connector restarted or created again, after a development registry
/// was wiped and its ids given out again) fetches them afresh, as Kafka Connect's converters,
/// one per task, do.
pub fn shared(urls: &[String], user_info: Option<&str>) -> Result<Arc<Registry>, String> {
    static ALL: OnceLock<Mutex<HashMap<String, Arc<Registry>>>> = OnceLock::new();
    let key = format!("{}|{}", urls.join(","), user_info.unwrap_or(""));
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    all.retain(|_, r| Arc::strong_count(r) > 1);
    if let Some(r) = all.get(&key) {
        return Ok(r.clone());
    }
    if urls.is_empty() {
        return Err("no schema registry URL".into());
    }
    // The worker's one TLS set-up (src/tls/mod.rs): reqwest has no TLS of its own here.
    let tls = crate::tls::config(Default::default())?;
    let mut settings = Vec::with_capacity(urls.len());
    let mut shown = Vec::new();
    for url in urls {
        let url = url.trim_end_matches('/').to_string();
        let plain = reqwest::Url::parse(&url).map_or(url.clone(), |u| {
            let u = crate::tls::without_credentials(&u);
            u.as_str().trim_end_matches('/').to_string()
        });
        shown.push(plain.clone());
        let mut b = SrSettings::new_builder(url.clone());
        if let Some(info) = user_info {
            let (user, pass) = info.split_once(':').unwrap_or((info, ""));
            b.set_basic_authorization(user, Some(pass));
        }
        b.set_timeout(Duration::from_secs(10));
        let client = b
            .build_with(reqwest::blocking::Client::builder().tls_backend_preconfigured(tls.clone()))
            .map_err(|e| format!("cannot set up the schema registry client: {e}"))?;
        settings.push((plain, client));
    }
    let r = Arc::new(Registry {
        settings,
        urls: shown.join(","),
        plans: Mutex::default(),
        fetches: AtomicU64::new(0),
    });
    all.insert(key, r.clone());
    Ok(r)
}

/// The HTTP status in a client error, if the registry answered.
fn status(e: &SRCError) -> Option<u16> {
    let text = e.error.as_str();
    let at = text.find("status ")? + "status ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// The registry's own error code in an error answer (`40403`: no schema of that id), when the
/// answer was one of its JSON errors.
fn error_code(e: &SRCError) -> Option<u32> {
    let raw = std::error::Error::source(e)?.downcast_ref::<RawError>()?;
    Some(raw.error_code)
}

impl Registry {
    /// The decode plan of writer schema `id`. An unknown id (the registry's error 40403) or a
    /// schema that is not Avro is the record's fault (a permanent error, per
    /// `errors.tolerance`; only the latter remembered). An unreachable or failing registry (5xx, 429, 408, an answer that
    /// is not a schema) is waited for. Any other refusal (401/403, and a 404 or other 4xx
    /// without the registry's "no such schema": a wrong URL or path) fails the task: every
    /// record would be refused alike, and none may be skipped for it.
    pub fn plan(&self, id: u32) -> Result<Arc<Plan>, DecodeError> {
        let slot = {
            let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
            plans.entry(id).or_default().clone()
        };
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = slot.as_ref() {
            return known.result();
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let registered = match self.fetch(id) {
            Ok(r) => r,
            Err(e) => {
                // Nothing kept, an unknown id included (asked again for each record, as
                // Confluent's client does: a registry follower may know it a moment later);
                // ids from forged data would fill the map for good. (A slot another task is
                // fetching into is left to it.)
                drop(slot);
                let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
                if plans
                    .get(&id)
                    .is_some_and(|s| s.try_lock().map(|s| s.is_none()).unwrap_or(false))
                {
                    plans.remove(&id);
                }
                return Err(e);
            }
        };
        // A registered schema this decoder cannot take is so for good, and for every record of
        // this id: remembered (as many such ids as the registry holds schemas).
        let known = match compile(&registered.schema) {
            Ok(plan) => Known::Plan(Arc::new(plan)),
            Err(e) => Known::Refused(DecodeError::new(format!("schema id {id}: {e}"))),
        };
        let result = known.result();
        *slot = Some(known);
        result
    }

    /// Schema `id` from the first URL that has it. When none does, what the answers mean
    /// together: a registry failing behind any URL is waited for (another may not know the id
    /// yet); else an unknown id behind any is the record's fault; else a refusal.
    fn fetch(
        &self,
        id: u32,
    ) -> Result<schema_registry_converter::schema_registry_common::RegisteredSchema, DecodeError>
    {
        let mut worst: Option<DecodeError> = None;
        for (url, settings) in &self.settings {
            let e = match get_schema_by_id(id, settings) {
                Ok(r) => return Ok(r),
                Err(e) => self.classify(id, url, &e),
            };
            let rank = |e: &DecodeError| match (e.retry, e.refused) {
                (true, _) => 2,
                (false, false) => 1,
                (false, true) => 0,
            };
            if worst.as_ref().is_none_or(|w| rank(&e) > rank(w)) {
                worst = Some(e);
            }
        }
        Err(worst.unwrap_or_else(|| DecodeError::refused("no schema registry URL")))
    }

    /// What a failed fetch of schema `id` from `urls` means for the record (see
    /// [`Registry::plan`]).
    fn classify(&self, id: u32, urls: &str, e: &SRCError) -> DecodeError {
        let why = match &e.cause {
            Some(c) => format!("{}: {c}", e.error),
            None => e.error.clone(),
        };
        match status(e) {
            Some(404) if error_code(e) == Some(40403) => DecodeError::new(format!(
                "unknown schema id {id}: the schema registry ({urls}) has no such schema"
            )),
            Some(code @ (401 | 403)) => DecodeError::refused(format!(
                "the schema registry ({urls}) answered {code}: check key.converter.basic.auth.user.info / value.converter.basic.auth.user.info ({why})"
            )),
            Some(408 | 429 | 500..=599) => {
                DecodeError::unavailable(format!("schema registry {urls} failing: {why}"))
            }
            Some(code) => DecodeError::refused(format!(
                "the schema registry ({urls}) answered {code} to GET /schemas/ids/{id} without saying the schema is unknown: check the registry's URL ({why})"
            )),
            None if e.retriable => {
                DecodeError::unavailable(format!("schema registry {urls} unreachable: {why}"))
            }
            // An answer that is not a schema (a proxy's page, a body cut short): waited for,
            // as a registry in trouble.
            None => DecodeError::unavailable(format!(
                "schema registry {urls} did not answer with a schema for id {id}: {why}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_registry_is_shared_while_tasks_hold_it_and_forgotten_after() {
        let url = answering("503 Service Unavailable", "{}");
        let a = super::shared(std::slice::from_ref(&url), None).unwrap();
        let b = super::shared(std::slice::from_ref(&url), None).unwrap();
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        assert!(a.plan(1).is_err());
        let fetched = a.fetches.load(Ordering::Relaxed);
        assert_eq!(fetched, 1);
        drop((a, b));
        let c = super::shared(&[url], None).unwrap();
        assert_eq!(c.fetches.load(Ordering::Relaxed), 0, "not a fresh registry");
    }

    #[test]
    fn the_registry_client_is_built_with_the_shared_tls_configuration() {
        // reqwest takes a preconfigured configuration only from its own rustls version; any
        // other fails the client's build ("Unknown TLS backend").
        let r = super::shared(&["http://127.0.0.1:9".into()], Some("u:p"));
        assert!(r.is_ok(), "{:?}", r.err());
    }

    /// A registry on a free loopback port answering every request with `status` and `body`.
    fn answering(status: &str, body: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let status = status.to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    #[test]
    fn a_password_in_a_registry_url_is_sent_and_never_shown() {
        for (status, body) in [
            ("503 Service Unavailable", "{}"),
            ("401 Unauthorized", "{}"),
            (
                "404 Not Found",
                r#"{"error_code":40403,"message":"Schema not found"}"#,
            ),
        ] {
            let url = answering(status, body).replace("http://", "http://sr-user:s3cret@");
            let r = super::shared(std::slice::from_ref(&url), None).unwrap();
            let Err(e) = r.plan(5) else {
                panic!("{status}: a plan");
            };
            assert!(!e.message.contains("s3cret"), "{}", e.message);
            assert!(!format!("{r:?}").contains("s3cret"));
        }
        // Unreachable: the HTTP client's own error, about a request whose URL reqwest took the
        // credentials out of.
        let r = super::shared(&["http://sr-user:s3cret@127.0.0.1:9".into()], None).unwrap();
        let Err(e) = r.plan(5) else {
            panic!("a plan from a closed port");
        };
        assert!(e.retry && !e.message.contains("s3cret"), "{}", e.message);
    }

    #[test]
    fn with_several_urls_a_failing_registry_is_waited_for_whichever_answers_last() {
        let failing = || answering("503 Service Unavailable", "{}");
        let unknown = || {
            answering(
                "404 Not Found",
                r#"{"error_code":40403,"message":"Schema not found"}"#,
            )
        };
        let schema = || answering("200 OK", r#"{"schema":"\"long\""}"#);
        // (urls) → (retry, refused), or a plan.
        for (urls, want) in [
            (vec![failing(), unknown()], Some((true, false))),
            (vec![unknown(), failing()], Some((true, false))),
            (vec![unknown(), unknown()], Some((false, false))),
            (vec![failing(), schema()], None),
        ] {
            let r = super::shared(&urls, None).unwrap();
            match (r.plan(7), want) {
                (Err(e), Some(want)) => assert_eq!((e.retry, e.refused), want, "{}", e.message),
                (Ok(_), None) => {}
                (got, _) => panic!("{urls:?}: {:?}", got.map(|_| "a plan")),
            }
        }
    }

    #[test]
    fn only_the_registrys_own_no_such_schema_refuses_the_record() {
        // (status, body) → (retry, refused): a record error is neither.
        let cases = [
            (
                "404 Not Found",
                r#"{"error_code":40403,"message":"Schema not found"}"#,
                (false, false),
            ),
            // A wrong path, or a proxy's page: every record would be refused alike.
            ("404 Not Found", "<html>no such page</html>", (false, true)),
            (
                "404 Not Found",
                r#"{"error_code":40401,"message":"Subject not found"}"#,
                (false, true),
            ),
            ("400 Bad Request", "{}", (false, true)),
            ("408 Request Timeout", "{}", (true, false)),
            ("503 Service Unavailable", "{}", (true, false)),
            // An answer that is not a schema: a registry in trouble, waited for.
            ("200 OK", "<html>maintenance</html>", (true, false)),
        ];
        for (status, body, want) in cases {
            let r = super::shared(&[answering(status, body)], None).unwrap();
            let e = r.plan(7).unwrap_err();
            assert_eq!((e.retry, e.refused), want, "{status} {body}: {}", e.message);
        }
    }

    #[test]
    fn ids_that_failed_leave_nothing_behind_and_a_schema_that_does_not_compile_is_remembered() {
        let unknown = super::shared(
            &[answering(
                "404 Not Found",
                r#"{"error_code":40403,"message":"Schema not found"}"#,
            )],
            None,
        )
        .unwrap();
        for id in 1..=3 {
            let e = unknown.plan(id).unwrap_err();
            assert!(e.message.starts_with("unknown schema id"), "{}", e.message);
        }
        assert!(unknown.plans.lock().unwrap().is_empty());
        let bad = super::shared(
            &[answering("200 OK", r#"{"schema":"{\"type\":\"record\"}"}"#)],
            None,
        )
        .unwrap();
        for _ in 0..3 {
            let e = bad.plan(7).unwrap_err();
            assert!(e.message.starts_with("schema id 7: "), "{}", e.message);
        }
        assert_eq!(bad.fetches.load(Ordering::Relaxed), 1);

        let failing = super::shared(&[answering("503 Service Unavailable", "{}")], None).unwrap();
        for id in 1..=3 {
            assert!(failing.plan(id).unwrap_err().retry);
            assert!(failing.plan(id).unwrap_err().retry);
        }
        assert_eq!(failing.fetches.load(Ordering::Relaxed), 6);
        // Nothing kept for ids that failed: forged ids cannot fill the map.
        assert!(failing.plans.lock().unwrap().is_empty());
    }
}
