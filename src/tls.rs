//! The TLS set-up the worker's HTTP clients share: one rustls configuration per CA file, built
//! once per process, reading the system's trust store only when a first `https` server is met;
//! and how they show a server's URL ([`without_credentials`]).
//!
//! Servers are checked against the system's trust store (`rustls-platform-verifier`, which on
//! Linux reads `SSL_CERT_FILE` and/or `SSL_CERT_DIR` when either is set, else the
//! distribution's bundle and directory) and every certificate of a CA file besides
//! (`elastic.https.ssl.ca.location`). Given a CA's SHA-256 fingerprint
//! (`elastic.https.ssl.ca.trusted.fingerprint`), a server presenting that CA's certificate in its
//! chain is checked against it alone, as Elastic's Beats and Logstash do with
//! `ca_trusted_fingerprint` (see [`Fingerprint`]).
//!
//! That verifier reads the store when it is built, and reqwest builds a client's TLS set-up
//! with the client, `https` URL or not. [`Deferred`] builds it at the first handshake instead:
//! a worker whose URLs are all `http` never reads the store, and one without a store at all
//! (a minimal container) still writes to an `http` Elasticsearch. Before this, native-tls on
//! OpenSSL 3 decoded the store's 140-odd certificates twice per connector, whatever the URLs:
//! 500 million instructions per process under callgrind, 14% of a short end-to-end Avro run
//! (docs/performance-log.md, "The trust store read only for https").

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use ::ring::digest::{SHA256, digest};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore};
use rustls::{SignatureScheme, crypto::ring};
use rustls_platform_verifier::Verifier;

/// A CA certificate's SHA-256 fingerprint: the digest of its DER encoding, as
/// `openssl x509 -fingerprint -sha256` prints it and as Elasticsearch prints its HTTP CA's when
/// it first starts with security set up.
pub type Fingerprint = [u8; 32];

/// What a client trusts besides the system's store: every certificate of a CA file (a PEM
/// file's content: one or more), and a CA presented in the server's chain whose fingerprint is
/// given.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trust<'a> {
    pub ca_pem: Option<&'a [u8]>,
    pub fingerprint: Option<Fingerprint>,
}

/// The configuration trusting the system's store and what `trust` adds; built at its first
/// use, shared after.
pub fn config(trust: Trust<'_>) -> Result<ClientConfig, String> {
    type Key = (Option<Vec<u8>>, Option<Fingerprint>);
    static BUILT: OnceLock<Mutex<HashMap<Key, ClientConfig>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let key = (trust.ca_pem.map(<[u8]>::to_vec), trust.fingerprint);
    if let Some(c) = built.get(&key) {
        return Ok(c.clone());
    }
    let extra = match trust.ca_pem {
        Some(pem) => ca_certificates(pem)?,
        None => Vec::new(),
    };
    let provider = provider();
    let verifier = Deferred {
        extra,
        pinned: trust.fingerprint.map(|fingerprint| Pinned {
            fingerprint,
            anchored: Mutex::default(),
        }),
        provider: provider.clone(),
        built: Mutex::default(),
    };
    let c = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        // `dangerous` only names the door to a verifier of one's own; this one verifies as
        // rustls-platform-verifier does, with the same roots.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    built.insert(key, c.clone());
    Ok(c)
}

/// The cryptography rustls uses: ring, not aws-lc-rs (reqwest's default), which is a CMake build
/// of AWS-LC taking minutes on two cores. ring has no post-quantum key exchange, hence rustls's
/// deprecation note; servers offer the classical groups as well.
pub fn provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(ring::default_provider())
}

/// `u` without any `user:password@` it carries: a server's URL as messages show it. (reqwest
/// sends a URL's credentials as basic auth and takes them out of the request's URL, so its own
/// errors never quote them.)
pub fn without_credentials(u: &reqwest::Url) -> reqwest::Url {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u
}

/// A reqwest client builder with the shared configuration of `trust` (see [`config`]): every
/// client of the worker is built from one.
pub fn client_builder(trust: Trust<'_>) -> Result<reqwest::ClientBuilder, String> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(config(trust)?))
}

/// A fingerprint as a user copies it: 64 hexadecimal digits, in either case, pairs separated by
/// colons or not (`openssl` prints `AB:CD:…`, Elasticsearch `abcd…`).
pub fn parse_fingerprint(text: &str) -> Result<Fingerprint, String> {
    let digits: Vec<u8> = text.trim().bytes().filter(|b| *b != b':').collect();
    let hex = |b: u8| (b as char).to_digit(16);
    if digits.len() != 64 || !digits.iter().all(|b| hex(*b).is_some()) {
        return Err(format!(
            "`{text}` is not a SHA-256 fingerprint: 64 hexadecimal digits, pairs separated by \
             colons or not (what `openssl x509 -noout -fingerprint -sha256 -in ca.pem` prints after `=`)"
        ));
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(digits.chunks(2)) {
        // Both digits checked above.
        *o = (hex(pair[0]).unwrap_or(0) * 16 + hex(pair[1]).unwrap_or(0)) as u8;
    }
    Ok(out)
}

/// Makes [`provider`] the process's default. reqwest panics when it builds a client, `http` or
/// not, with neither a configuration given ([`client_builder`]) nor a default provider; with
/// one, such a client works, and reads the trust store as it is built. The worker's own clients
/// all come from [`client_builder`]; this is a safety net, and what the tests' clients use.
pub fn install_default() {
    // Once per process: the tests' helpers call it before each client they build.
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: another default was installed already, which serves as well.
        let _ = Arc::unwrap_or_clone(provider()).install_default();
    });
}

/// The certificates of a CA file, each parsed now as a trust anchor would be: a file that
/// cannot serve is named when the connector starts, not at its first request. Each becomes a
/// trust anchor, CA or not, expired or not, as webpki takes anchors.
fn ca_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    let mut check = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        check
            .add(cert.clone())
            .map_err(|e| format!("certificate {} cannot be trusted: {e}", i + 1))?;
    }
    Ok(certs)
}

/// rustls-platform-verifier's verifier, built at the first handshake (see the module's doc).
/// Built once it could be; a store that could not be read (none yet, at a first handshake) is
/// read again at the next handshake, not remembered as missing until a restart.
#[derive(Debug)]
struct Deferred {
    extra: Vec<CertificateDer<'static>>,
    pinned: Option<Pinned>,
    provider: Arc<CryptoProvider>,
    built: Mutex<Option<Arc<Verifier>>>,
}

/// A CA trusted by its fingerprint. When the server presents a certificate with that
/// fingerprint, the chain is verified as any other (signatures, validity, the server's name),
/// with that certificate as its only trust anchor; when it presents none, as if no fingerprint
/// had been given. Elastic's Beats and Logstash trust `ca_trusted_fingerprint` so; pinning the
/// server's own certificate instead (Elastic's Python client, `ssl_assert_fingerprint`) would
/// skip the name check and break at each renewal of the node's certificate.
#[derive(Debug)]
struct Pinned {
    fingerprint: Fingerprint,
    /// The verifier of the last certificate found with the fingerprint (the same at each
    /// handshake; kept to build its anchor once).
    anchored: Mutex<Option<(Vec<u8>, Arc<WebPkiServerVerifier>)>>,
}

impl Pinned {
    /// The verifier anchored at the certificate of `chain` with the fingerprint, if any.
    fn verifier(
        &self,
        chain: &[&CertificateDer<'_>],
        provider: &Arc<CryptoProvider>,
    ) -> Result<Option<Arc<WebPkiServerVerifier>>, TlsError> {
        let Some(ca) = chain
            .iter()
            .find(|c| digest(&SHA256, c.as_ref()).as_ref() == self.fingerprint)
        else {
            return Ok(None);
        };
        let mut anchored = self.anchored.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((der, v)) = &*anchored
            && der.as_slice() == ca.as_ref()
        {
            return Ok(Some(v.clone()));
        }
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca.to_vec())).map_err(|e| {
            TlsError::General(format!(
                "the certificate with the fingerprint of elastic.https.ssl.ca.trusted.fingerprint \
                 cannot be a trust anchor: {e}"
            ))
        })?;
        let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsError::General(e.to_string()))?;
        *anchored = Some((ca.to_vec(), v.clone()));
        Ok(Some(v))
    }
}

impl Deferred {
    fn get(&self) -> Result<Arc<Verifier>, TlsError> {
        // Held while building: handshakes starting together read the store once.
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = &*built {
            return Ok(v.clone());
        }
        let v = Arc::new(Verifier::new_with_extra_roots(
            self.extra.clone(),
            self.provider.clone(),
        )?);
        *built = Some(v.clone());
        Ok(v)
    }
}

impl ServerCertVerifier for Deferred {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let Some(pinned) = &self.pinned else {
            return self.get()?.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        };
        let chain: Vec<&CertificateDer<'_>> =
            std::iter::once(end_entity).chain(intermediates).collect();
        if let Some(v) = pinned.verifier(&chain, &self.provider)? {
            return v.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        }
        self.get()
            .and_then(|v| {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            })
            .map_err(|e| {
                TlsError::General(format!(
                    "no certificate the server presented has the fingerprint of \
                     elastic.https.ssl.ca.trusted.fingerprint (the server must send its CA's \
                     certificate in its chain, as Elasticsearch's own set-up does), and no other \
                     trusted CA signed its certificate: {e}"
                ))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        // As rustls-platform-verifier and rustls's own verifier check it; no trust store needed.
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    /// Asked before any certificate is seen; the provider's schemes, which are the verifier's.
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(p: &[u8]) -> Trust<'_> {
        Trust {
            ca_pem: Some(p),
            fingerprint: None,
        }
    }

    #[test]
    fn a_fingerprint_is_read_as_openssl_and_elasticsearch_print_it() {
        let elasticsearch = "5e8b3cb6b1d1a0bb7a6d2b4e6c1f0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b";
        let openssl = "SHA256 Fingerprint=5E:8B:3C:B6:B1:D1:A0:BB:7A:6D:2B:4E:6C:1F:0A:9D:8E:7F:6A:5B:4C:3D:2E:1F:0A:9B:8C:7D:6E:5F:4A:3B";
        let bytes = parse_fingerprint(elasticsearch).unwrap();
        assert_eq!(bytes[0], 0x5e);
        assert_eq!(bytes[31], 0x3b);
        assert_eq!(
            parse_fingerprint(openssl.trim_start_matches("SHA256 Fingerprint=")),
            Ok(bytes)
        );
        assert_eq!(parse_fingerprint(&format!(" {elasticsearch}\n")), Ok(bytes));
        for bad in [
            &elasticsearch[2..],
            &format!("{elasticsearch}00"),
            &elasticsearch.replace('e', "g"),
            openssl,
        ] {
            let e = parse_fingerprint(bad).unwrap_err();
            assert!(e.contains("is not a SHA-256 fingerprint"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        assert_eq!(
            config(pem(b"not a certificate\n")).err().as_deref(),
            Some("holds no PEM certificate")
        );
        let garbled = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = config(pem(garbled)).unwrap_err();
        assert!(e.starts_with("certificate 1 cannot be trusted"), "{e}");
    }
}
