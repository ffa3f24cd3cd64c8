//! Whom Herald's TLS clients trust: a server certificate that chains to the system's roots or
//! to the certificates in a CA file (a private CA's), for the name in the URL; or one that is
//! itself in the CA file (a self-signed server certificate the operator pinned), for its names
//! and while it is valid.
//!
//! `herald publish`, `herald bench`, `rediss://` and `herald-tui` all build their rustls
//! client settings from a [`Trust`]:
//!
//! ```no_run
//! # use std::sync::Arc;
//! let provider = Arc::new(rustls::crypto::ring::default_provider());
//! let trust = herald_tls::Trust::load(Some(std::path::Path::new("ca.pem")))?;
//! let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
//!     .with_safe_default_protocol_versions()
//!     .expect("ring's protocol versions")
//!     .dangerous()
//!     .with_custom_certificate_verifier(trust.verifier(provider)?)
//!     .with_no_client_auth();
//! # Ok::<(), herald_tls::TrustError>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why the certificates to trust could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The CA file could not be read, holds no certificate, or one rustls refuses.
    #[error("{}: {message}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Nothing to trust: the system's store is empty and no CA file was given.
    #[error("no trusted certificates: the system's store is empty; give a CA file")]
    NoRoots,
    /// rustls could not build a verifier from the roots.
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The certificates a server's must chain to, or be.
#[derive(Clone, Debug)]
pub struct Trust {
    /// The system's roots plus the CA file's certificates: a chain must end at one.
    roots: RootCertStore,
    /// The CA file's certificates, also accepted as the server's own.
    pinned: Vec<CertificateDer<'static>>,
}

impl Trust {
    /// The system's roots (those that parse, as browsers skip the others) plus every PEM
    /// certificate in `ca_file`.
    pub fn load(ca_file: Option<&Path>) -> Result<Self, TrustError> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let mut pinned = Vec::new();
        if let Some(path) = ca_file {
            let bad = |message: String| TrustError::CaFile {
                path: path.to_owned(),
                message,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect())
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("holds no PEM certificate".to_owned()));
            }
            for cert in certs {
                roots.add(cert.clone()).map_err(|e| bad(e.to_string()))?;
                pinned.push(cert);
            }
        }
        if roots.is_empty() {
            return Err(TrustError::NoRoots);
        }
        Ok(Self { roots, pinned })
    }

    /// The verifier for rustls's client settings
    /// (`.dangerous().with_custom_certificate_verifier(..)`).
    pub fn verifier(
        self,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ServerCertVerifier>, TrustError> {
        Ok(self.pinned_or_chained(provider)?)
    }

    fn pinned_or_chained(
        self,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<PinnedOrChained>, TrustError> {
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots), provider)
            .build()
            .map_err(|e| TrustError::Setup(e.to_string()))?;
        Ok(Arc::new(PinnedOrChained {
            webpki,
            pinned: self.pinned,
        }))
    }
}

/// WebPki's verification, plus: a server certificate that is byte for byte one of the CA
/// file's is trusted for its names while it is valid.
///
/// `openssl req -x509` makes a self-signed certificate marked `CA:TRUE`, which WebPki refuses
/// as a server's own (`CaUsedAsEndEntity`), although it is the very certificate the operator
/// named to be trusted; `curl --cacert` takes it. The handshake's signatures are still checked
/// by WebPki, with the certificate's key.
#[derive(Debug)]
struct PinnedOrChained {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinnedOrChained {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let pinned = self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref());
        match verified {
            Err(rustls::Error::InvalidCertificate(why)) if pinned && !is_about_time(&why) => {
                let cert = ParsedCertificate::try_from(end_entity)?;
                verify_server_name(&cert, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// An expired certificate, or one not valid yet, is refused even when pinned (where WebPki
/// says so before anything else it finds).
fn is_about_time(why: &CertificateError) -> bool {
    matches!(
        why,
        CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl req -x509 -newkey ec … -subj /CN=localhost -addext
    /// subjectAltName=DNS:localhost,IP:127.0.0.1 -days 36500`: `CA:TRUE`, as openssl makes it.
    const SELF_SIGNED: &str = "testdata/self-signed-ca.pem";

    fn self_signed() -> (Arc<PinnedOrChained>, CertificateDer<'static>) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SELF_SIGNED);
        let trust = Trust::load(Some(&path)).unwrap();
        let cert = trust.pinned[0].clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        (trust.pinned_or_chained(provider).unwrap(), cert)
    }

    fn check(
        verifier: &dyn ServerCertVerifier,
        cert: &CertificateDer<'_>,
        name: &'static str,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(name).unwrap();
        verifier.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
    }

    #[test]
    fn a_self_signed_ca_certificate_given_as_the_ca_file_is_trusted_for_its_names() {
        let (verifier, cert) = self_signed();
        // WebPki alone refuses it, which is why it is pinned.
        let refused = check(verifier.webpki.as_ref(), &cert, "localhost").unwrap_err();
        assert!(
            format!("{refused:?}").contains("CaUsedAsEndEntity"),
            "{refused:?}"
        );
        assert!(check(verifier.as_ref(), &cert, "localhost").is_ok());
        assert!(check(verifier.as_ref(), &cert, "127.0.0.1").is_ok());
    }

    #[test]
    fn a_pinned_certificate_is_not_trusted_for_another_name() {
        let (verifier, cert) = self_signed();
        let refused = check(verifier.as_ref(), &cert, "herald.example.com").unwrap_err();
        assert!(
            format!("{refused:?}").contains("NotValidForName"),
            "{refused:?}"
        );
    }

    #[test]
    fn a_certificate_not_in_the_ca_file_is_refused_as_webpki_refuses_it() {
        let (verifier, _) = self_signed();
        let other = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let refused = check(verifier.as_ref(), &other, "localhost").unwrap_err();
        let webpki = check(verifier.webpki.as_ref(), &other, "localhost").unwrap_err();
        assert_eq!(refused, webpki);
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_naming_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let error = Trust::load(Some(&path)).unwrap_err().to_string();
        assert!(
            error.contains("Cargo.toml") && error.contains("no PEM"),
            "{error}"
        );
    }
}
