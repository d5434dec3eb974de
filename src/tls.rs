//! The TLS set-up the worker's HTTP clients share: built once per process, not once per client.
//!
//! Building a TLS connector (native-tls on OpenSSL 3) loads the system's trust store, about 140
//! certificates decoded twice (OpenSSL's default paths, then the file `openssl-probe` finds):
//! about 250 million instructions per load under callgrind, whether or not any URL is `https`.
//! reqwest builds one for every client; every task built one for its Elasticsearch client, and
//! an Avro task's schema registry one more: 23% of the instructions of a short end-to-end Avro
//! run (docs/performance-log.md). Handed this connector instead (`tls_backend_preconfigured`), a
//! client builds none; the trust store is loaded once per process and CA file, as a JVM loads
//! its `cacerts` once.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use native_tls::{Certificate, TlsConnector};

/// The connector trusting the system's store, and every certificate of `ca_pem` (a PEM file's
/// content: one or more) besides when given; built at its first use, shared after.
pub fn connector(ca_pem: Option<&[u8]>) -> Result<TlsConnector, String> {
    static BUILT: OnceLock<Mutex<HashMap<Option<Vec<u8>>, TlsConnector>>> = OnceLock::new();
    // Held while building: tasks starting together wait for one load instead of each making it.
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let key = ca_pem.map(<[u8]>::to_vec);
    if let Some(c) = built.get(&key) {
        return Ok(c.clone());
    }
    let mut builder = TlsConnector::builder();
    if let Some(pem) = ca_pem {
        let certs =
            Certificate::stack_from_pem(pem).map_err(|e| format!("not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err("holds no PEM certificate".into());
        }
        for cert in certs {
            builder.add_root_certificate(cert);
        }
    }
    let c = builder
        .build()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    built.insert(key, c.clone());
    Ok(c)
}
