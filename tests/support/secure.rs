//! A TLS-terminating, credential-checking proxy in front of the real Elasticsearch, standing in
//! for Elasticsearch's own security (the integ-test distribution has none): it serves HTTPS
//! with the certificate `scripts/servers` made (signed by the test CA), answers 401 as
//! Elasticsearch does to a request without the expected `Authorization`, and forwards the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use serde_json::json;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::http::{self, Handler, Reply, Request};
use super::servers::{read_env, servers};

/// The credentials the proxy accepts.
pub enum Auth {
    Basic(String, String),
    /// The encoded API key (`base64(id:api_key)`), sent as `ApiKey <key>`.
    ApiKey(String),
}

pub struct SecureProxy {
    /// `https://127.0.0.1:port`
    pub url: String,
    /// Requests refused for their credentials.
    pub refused: Arc<AtomicU64>,
    /// Requests forwarded.
    pub forwarded: Arc<AtomicU64>,
    /// Requests forwarded whose body came gzipped (`Content-Encoding: gzip`).
    pub gzipped: Arc<AtomicU64>,
    _rt: tokio::runtime::Runtime,
}

/// The test CA's certificate (PEM file path), which signed the proxy's and the broker's.
pub fn ca_file() -> String {
    read_env(&servers().dir, "kafka.env", "TLS_CA")
}

/// A CA file of two certificates, the test CA's second: the server's own certificate first,
/// which alone does not verify it (it is no root). A client trusting only a file's first
/// certificate fails on it.
pub fn ca_bundle_file() -> String {
    let dir = &servers().dir;
    let server = std::fs::read_to_string(read_env(dir, "kafka.env", "TLS_SERVER_PEM")).unwrap();
    let cert = &server[server.find("-----BEGIN CERTIFICATE-----").unwrap()..];
    let ca = std::fs::read_to_string(ca_file()).unwrap();
    let path = dir.join(format!("tls/ca-bundle-{:08x}.pem", fastrand::u32(..)));
    std::fs::write(&path, format!("{}\n{ca}", cert.trim_end())).unwrap();
    path.to_string_lossy().into_owned()
}

/// The test CA's SHA-256 fingerprint as `openssl x509 -fingerprint -sha256` prints it
/// (`AB:CD:…`), which is what a user would copy.
pub fn ca_fingerprint() -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            &ca_file(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().split_once('=').unwrap().1.to_string()
}

/// A key and a certificate for 127.0.0.1 that the test CA did not sign (self-signed, not a
/// CA's: a CA's webpki would refuse as a server's before looking for its issuer), as
/// `TLS_SERVER_PEM` holds its own: the key, then the certificate.
pub fn self_signed_pem() -> String {
    let dir = servers()
        .dir
        .join(format!("tls/self-{:08x}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pem = std::fs::read_to_string(&key).unwrap() + &std::fs::read_to_string(&cert).unwrap();
    let path = dir.join("server.pem");
    std::fs::write(&path, pem).unwrap();
    path.to_string_lossy().into_owned()
}

impl SecureProxy {
    /// Presenting its own certificate alone.
    pub fn start(auth: Auth) -> SecureProxy {
        let own = read_env(&servers().dir, "kafka.env", "TLS_SERVER_PEM");
        SecureProxy::start_presenting(auth, &own, false)
    }

    /// Presenting the certificate of `server_pem` (its key, then its certificate), and the
    /// test CA's after it when `with_ca` (as Elasticsearch's own HTTPS set-up presents its CA).
    pub fn start_presenting(auth: Auth, server_pem: &str, with_ca: bool) -> SecureProxy {
        let pem = std::fs::read_to_string(server_pem).unwrap();
        let mut certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        if with_ca {
            let ca = std::fs::read(ca_file()).unwrap();
            certs.extend(CertificateDer::pem_slice_iter(&ca).map(Result::unwrap));
        }
        let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        let config = ServerConfig::builder_with_provider(cdc_sink::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let expected = match auth {
            Auth::Basic(u, p) => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            ),
            Auth::ApiKey(k) => format!("ApiKey {k}"),
        };
        let (rt, listener, addr) = http::local_server();
        let url = format!("https://{addr}");
        let (refused, forwarded, gzipped): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>) =
            Default::default();
        let upstream = servers().es.clone();
        let client = reqwest::Client::new();
        let (r, f, g) = (refused.clone(), forwarded.clone(), gzipped.clone());
        let handler: Handler = Arc::new(move |req: Request| {
            let ok = req.header("authorization") == Some(expected.as_str());
            if ok && req.header("content-encoding") == Some("gzip") {
                g.fetch_add(1, Ordering::SeqCst);
            }
            let (client, upstream, r, f) = (client.clone(), upstream.clone(), r.clone(), f.clone());
            Box::pin(async move {
                if !ok {
                    r.fetch_add(1, Ordering::SeqCst);
                    let body = json!({"error": {"type": "security_exception",
                        "reason": "unable to authenticate user for REST request"}, "status": 401});
                    return Reply::Respond {
                        status: 401,
                        body: body.to_string().into_bytes(),
                    };
                }
                f.fetch_add(1, Ordering::SeqCst);
                let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
                let mut out = client.request(method, format!("{upstream}{}", req.target));
                for name in ["content-type", "content-encoding"] {
                    if let Some(v) = req.header(name) {
                        out = out.header(name, v);
                    }
                }
                match out.body(req.body).send().await {
                    Ok(resp) => Reply::Respond {
                        status: resp.status().as_u16(),
                        body: resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                    },
                    Err(_) => Reply::Drop,
                }
            })
        });
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, h) = (acceptor.clone(), handler.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let _ = http::connection(tls, h).await;
                    }
                });
            }
        });
        SecureProxy {
            url,
            refused,
            forwarded,
            gzipped,
            _rt: rt,
        }
    }
}
