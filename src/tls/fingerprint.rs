//! A CA trusted by its SHA-256 fingerprint (`elastic.https.ssl.ca.trusted.fingerprint`), as
//! Elastic's Beats and Logstash trust `ca_trusted_fingerprint`: when the server presents, after
//! its own certificate, one with that fingerprint, the chain is verified as any other
//! (signatures, the dates of the server's and any intermediate certificate, the server's name)
//! with that certificate as its only trust anchor. Beats adds it to the trusted CAs; here it is
//! the only one, which is stricter. When the server presents none, it is verified as if no
//! fingerprint had been given (the parent module's `Deferred`).
//!
//! The server's own certificate is never taken as the anchor, as Beats takes only CAs: pinning
//! it (as Elastic's Python client's `ssl_assert_fingerprint` does) would skip the name check
//! and break at each renewal of the node's certificate.

use std::fmt;
use std::sync::{Arc, Mutex};

use ::ring::digest::{SHA256, digest};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::{Error as TlsError, OtherError, RootCertStore};

/// The option, as errors name it.
const OPTION: &str = "elastic.https.ssl.ca.trusted.fingerprint";

/// A server refused for good under a fingerprint's trust: rustls carries it as `Error::Other`
/// (shown as `other error: …`), and [`super::certificate_refused`] knows it by its type.
#[derive(Debug)]
pub(super) struct Refusal(String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// `message` about `cause`: a [`Refusal`] when `cause` refuses for good, else a plain error,
/// retried as `cause` would have been (an expired certificate, a store not readable yet).
fn refusal(message: String, cause: &TlsError) -> TlsError {
    match super::refuses(cause) {
        true => TlsError::Other(OtherError(Arc::new(Refusal(message)))),
        false => TlsError::General(message),
    }
}

/// A certificate's SHA-256 fingerprint: the digest of its DER encoding, as
/// `openssl x509 -fingerprint -sha256` prints it and as Elasticsearch prints its HTTP CA's when
/// it first starts with security set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    fn of(der: &[u8]) -> Fingerprint {
        let mut out = [0; 32];
        out.copy_from_slice(digest(&SHA256, der).as_ref());
        Fingerprint(out)
    }

    /// A fingerprint as a user copies it: 64 hexadecimal digits in either case, pairs separated
    /// by colons or not (`openssl` prints `AB:CD:…`, Elasticsearch `abcd…`).
    pub fn parse(text: &str) -> Result<Fingerprint, String> {
        let digits: Option<Vec<u8>> = text
            .trim()
            .chars()
            .filter(|c| *c != ':')
            .map(|c| c.to_digit(16).map(|d| d as u8))
            .collect();
        match digits {
            Some(d) if d.len() == 64 => {
                let mut out = [0; 32];
                for (o, pair) in out.iter_mut().zip(d.chunks(2)) {
                    *o = pair[0] << 4 | pair[1];
                }
                Ok(Fingerprint(out))
            }
            _ => Err(format!(
                "`{text}` is not a SHA-256 fingerprint: 64 hexadecimal digits, pairs separated by \
                 colons or not (what `openssl x509 -noout -fingerprint -sha256 -in ca.pem` prints \
                 after `=`)"
            )),
        }
    }
}

/// Lower-case hexadecimal without colons, as Elasticsearch prints it.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The trust a fingerprint gives (see the module's doc).
#[derive(Debug)]
pub(super) struct Pinned {
    fingerprint: Fingerprint,
    /// The verifier anchored at the last certificate found with the fingerprint (the same at
    /// each handshake: built once).
    anchored: Mutex<Option<(Vec<u8>, Arc<WebPkiServerVerifier>)>>,
}

impl Pinned {
    pub(super) fn new(fingerprint: Fingerprint) -> Pinned {
        Pinned {
            fingerprint,
            anchored: Mutex::default(),
        }
    }

    /// The verifier anchored at the certificate with the fingerprint among `intermediates`;
    /// `None` when none has it.
    pub(super) fn anchored_at(
        &self,
        intermediates: &[CertificateDer<'_>],
        provider: &Arc<CryptoProvider>,
    ) -> Option<Result<Arc<WebPkiServerVerifier>, TlsError>> {
        let ca = intermediates
            .iter()
            .find(|c| Fingerprint::of(c.as_ref()) == self.fingerprint)?;
        Some(self.verifier(ca, provider))
    }

    /// The error of a chain that does not verify against the certificate with the
    /// fingerprint: it names the option.
    pub(super) fn unverified(e: TlsError) -> TlsError {
        refusal(
            format!("the server's certificate does not verify against the CA of {OPTION}: {e}"),
            &e,
        )
    }

    fn verifier(
        &self,
        ca: &CertificateDer<'_>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
        let mut anchored = self.anchored.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((der, v)) = &*anchored
            && der.as_slice() == ca.as_ref()
        {
            return Ok(v.clone());
        }
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.to_vec()))
            .map_err(|e| TlsError::General(format!("it cannot be a trust anchor: {e}")))?;
        let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsError::General(e.to_string()))?;
        *anchored = Some((ca.to_vec(), v.clone()));
        Ok(v)
    }

    /// The error when the server presented no certificate with the fingerprint and the other
    /// trust (the system's store, a CA file) did not verify it either (`e`, a store not
    /// readable too): it names the option and every fingerprint presented, to compare with the
    /// one given.
    pub(super) fn refused(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        e: TlsError,
    ) -> TlsError {
        let after: Vec<String> = intermediates
            .iter()
            .map(|c| Fingerprint::of(c.as_ref()).to_string())
            .collect();
        let after = match after.is_empty() {
            true => "none after it".to_string(),
            false => format!("after it {}", after.join(", ")),
        };
        let message = format!(
            "no certificate the server presented after its own has the SHA-256 fingerprint of \
             {OPTION}, {} (it presented its own, {}, and {after}; Elasticsearch's own HTTPS \
             set-up sends its CA's after its own), and the other trust did not verify it: {e}",
            self.fingerprint,
            Fingerprint::of(end_entity.as_ref()),
        );
        refusal(message, &e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_read_as_openssl_and_elasticsearch_print_it() {
        let elasticsearch = "5e8b3cb6b1d1a0bb7a6d2b4e6c1f0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b";
        let openssl = "SHA256 Fingerprint=5E:8B:3C:B6:B1:D1:A0:BB:7A:6D:2B:4E:6C:1F:0A:9D:8E:7F:6A:5B:4C:3D:2E:1F:0A:9B:8C:7D:6E:5F:4A:3B";
        let f = Fingerprint::parse(elasticsearch).unwrap();
        assert_eq!((f.0[0], f.0[31]), (0x5e, 0x3b));
        assert_eq!(f.to_string(), elasticsearch);
        assert_eq!(Fingerprint::parse(&openssl[19..]), Ok(f));
        assert_eq!(Fingerprint::parse(&format!(" {elasticsearch}\n")), Ok(f));
        for bad in [
            &elasticsearch[2..],
            &format!("{elasticsearch}00"),
            &elasticsearch.replace('e', "g"),
            openssl,
            "",
        ] {
            let e = Fingerprint::parse(bad).unwrap_err();
            assert!(e.contains("is not a SHA-256 fingerprint"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_refusal_under_a_fingerprint_is_for_good_only_when_its_cause_is() {
        let pinned = Pinned::new(Fingerprint([7; 32]));
        let own = CertificateDer::from(vec![1, 2, 3]);
        let refused = |cause: TlsError| {
            let e = pinned.refused(&own, &[], cause);
            let shown = e.to_string();
            assert!(shown.contains(OPTION), "{shown}");
            super::super::certificate_refused(&e)
        };
        let unknown = TlsError::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(refused(unknown.clone()));
        assert!(Pinned::unverified(unknown).to_string().contains(OPTION));
        // No store to check it against, yet: retried, as without a fingerprint.
        assert!(!refused(TlsError::General(
            "No CA certificates were loaded".into()
        )));
        assert!(!refused(TlsError::InvalidCertificate(
            rustls::CertificateError::Expired
        )));
    }

    #[test]
    fn a_fingerprint_is_the_sha_256_of_the_certificate() {
        // SHA-256 of "abc" (FIPS 180-2's example).
        assert_eq!(
            Fingerprint::of(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
