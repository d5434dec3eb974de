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

use super::plan::{Plan, compile};
use crate::decode::DecodeError;

type Slot = Arc<Mutex<Option<Arc<Plan>>>>;

pub struct Registry {
    settings: SrSettings,
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
/// task of this worker.
pub fn shared(urls: &[String], user_info: Option<&str>) -> Result<Arc<Registry>, String> {
    static ALL: OnceLock<Mutex<HashMap<String, Arc<Registry>>>> = OnceLock::new();
    let key = format!("{}|{}", urls.join(","), user_info.unwrap_or(""));
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(r) = all.get(&key) {
        return Ok(r.clone());
    }
    let first = urls.first().ok_or("no schema registry URL")?;
    let mut b = SrSettings::new_builder(first.trim_end_matches('/').to_string());
    for u in &urls[1..] {
        b.add_url(u.trim_end_matches('/').to_string());
    }
    if let Some(info) = user_info {
        let (user, pass) = info.split_once(':').unwrap_or((info, ""));
        b.set_basic_authorization(user, Some(pass));
    }
    b.set_timeout(Duration::from_secs(10));
    // The worker's one TLS set-up (src/tls.rs): reqwest has no TLS of its own here.
    let tls = crate::tls::config(None)?;
    let settings = b
        .build_with(reqwest::blocking::Client::builder().tls_backend_preconfigured(tls))
        .map_err(|e| format!("cannot set up the schema registry client: {e}"))?;
    let r = Arc::new(Registry {
        settings,
        urls: urls.join(","),
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

impl Registry {
    /// The decode plan of writer schema `id`. Unreachable or failing (5xx, 429) registries give a
    /// retriable error; an unknown id or a schema that is not Avro, a permanent one.
    pub fn plan(&self, id: u32) -> Result<Arc<Plan>, DecodeError> {
        let slot = {
            let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
            plans.entry(id).or_default().clone()
        };
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let registered = get_schema_by_id(id, &self.settings).map_err(|e| {
            let why = match &e.cause {
                Some(c) => format!("{}: {c}", e.error),
                None => e.error.clone(),
            };
            match status(&e) {
                Some(404) => DecodeError::new(format!(
                    "unknown schema id {id}: the schema registry ({}) has no such schema",
                    self.urls
                )),
                Some(code @ (401 | 403)) => DecodeError::refused(format!(
                    "the schema registry ({}) answered {code}: check key.converter.basic.auth.user.info / value.converter.basic.auth.user.info ({why})",
                    self.urls
                )),
                Some(429 | 500..=599) => DecodeError::unavailable(format!(
                    "schema registry {} failing: {why}",
                    self.urls
                )),
                None if e.retriable => DecodeError::unavailable(format!(
                    "schema registry {} unreachable: {why}",
                    self.urls
                )),
                _ => DecodeError::new(format!(
                    "schema id {id}: the schema registry ({}) refused: {why}",
                    self.urls
                )),
            }
        })?;
        let plan = Arc::new(
            compile(&registered.schema)
                .map_err(|e| DecodeError::new(format!("schema id {id}: {e}")))?,
        );
        *slot = Some(plan.clone());
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_registry_client_is_built_with_the_shared_tls_configuration() {
        // reqwest takes a preconfigured configuration only from its own rustls version; any
        // other fails the client's build ("Unknown TLS backend").
        let r = super::shared(&["http://127.0.0.1:9".into()], Some("u:p"));
        assert!(r.is_ok(), "{:?}", r.err());
    }
}
