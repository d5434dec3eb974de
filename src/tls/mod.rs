//! The TLS set-up the worker's HTTP clients share: one rustls configuration per trust (a CA
//! file, a CA's fingerprint), built once per process, reading the system's trust store only
//! when a first `https` server is met; and how they show a server's URL ([`without_credentials`]).
//!
//! Servers are checked against the system's trust store (`rustls-platform-verifier`, which on
//! Linux reads `SSL_CERT_FILE` and/or `SSL_CERT_DIR` when either is set, else the
//! distribution's bundle and directory) and every certificate of a CA file besides
//! (`elastic.https.ssl.ca.location`); a server presenting a CA whose fingerprint is given
//! (`elastic.https.ssl.ca.trusted.fingerprint`), against that CA alone ([`fingerprint`]).
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

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore};
use rustls::{SignatureScheme, crypto::ring};
use rustls_platform_verifier::Verifier;

mod fingerprint;

pub use fingerprint::Fingerprint;
use fingerprint::Pinned;

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
        pinned: trust.fingerprint.map(Pinned::new),
        provider: provider.clone(),
        built: Mutex::default(),
    };
    let c = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        // `dangerous` only names the door to a verifier of one's own; this one verifies as
        // rustls-platform-verifier does, with the same roots, or with rustls's own verifier and
        // the CA of a fingerprint as its root.
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

/// Whether `e` (a request's error, with its causes) is a server's certificate refused: not
/// trusted, not naming the host, or refused under a fingerprint's trust. Waiting does not mend
/// that; it may mend a certificate expired or not valid yet (a renewal Elasticsearch reloads, a
/// clock set right) and a trust store not readable yet (at a first handshake, see
/// [`Deferred`]), which are not refusals.
pub fn certificate_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    // rustls's errors reach the client wrapped in `io::Error`s (one in another), whose `source`
    // skips what they wrap: unwrapped by hand.
    fn unwrapped<'a>(mut c: &'a (dyn std::error::Error + 'static)) -> Option<&'a TlsError> {
        loop {
            match c
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(inner) => c = inner,
                None => return c.downcast_ref::<TlsError>(),
            }
        }
    }
    let mut cur = Some(e);
    while let Some(c) = cur {
        if unwrapped(c).is_some_and(refuses) {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Whether rustls's `e` refuses a certificate for good (see [`certificate_refused`]).
fn refuses(e: &TlsError) -> bool {
    use rustls::CertificateError as C;
    match e {
        TlsError::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => false,
        TlsError::InvalidCertificate(_) => true,
        TlsError::Other(o) => o.0.is::<fingerprint::Refusal>(),
        _ => false,
    }
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

/// The verifier of a trust: a server presenting the CA whose fingerprint is given is verified
/// against it ([`Pinned`]); any other by rustls-platform-verifier's verifier, built at the first
/// handshake (see the module's doc). Built once it could be; a store that could not be read
/// (none yet, at a first handshake) is read again at the next handshake, not remembered as
/// missing until a restart.
#[derive(Debug)]
struct Deferred {
    extra: Vec<CertificateDer<'static>>,
    pinned: Option<Pinned>,
    provider: Arc<CryptoProvider>,
    built: Mutex<Option<Arc<Verifier>>>,
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
        let check = |v: &dyn ServerCertVerifier| {
            v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        };
        let Some(pinned) = &self.pinned else {
            return check(self.get()?.as_ref());
        };
        match pinned.anchored_at(intermediates, &self.provider) {
            Some(anchored) => anchored
                .and_then(|v| check(v.as_ref()))
                .map_err(Pinned::unverified),
            None => self
                .get()
                .and_then(|v| check(v.as_ref()))
                .map_err(|e| pinned.refused(end_entity, intermediates, e)),
        }
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
    fn a_refused_certificate_is_known_inside_the_errors_that_wrap_it() {
        use std::io::{Error, ErrorKind};
        let wrapped = |t: TlsError| Error::other(Error::new(ErrorKind::InvalidData, t));
        let unknown = TlsError::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(certificate_refused(&wrapped(unknown.clone())));
        assert!(certificate_refused(&unknown));
        // A trust store not readable yet, or a certificate expired, is retried: not a refusal.
        let no_store = TlsError::General("No CA certificates were loaded from the system".into());
        assert!(!certificate_refused(&wrapped(no_store)));
        let expired = TlsError::InvalidCertificate(rustls::CertificateError::Expired);
        assert!(!certificate_refused(&wrapped(expired)));
        let other = TlsError::Other(rustls::OtherError(Arc::new(std::fmt::Error)));
        assert!(!certificate_refused(&wrapped(other)));
        assert!(!certificate_refused(&Error::new(
            ErrorKind::ConnectionRefused,
            "refused"
        )));
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
