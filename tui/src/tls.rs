//! Whom an `https://` server must prove it is: a certificate chain to the system's trusted
//! roots or to the certificates in `--ca-file` (a private CA's), for the name in the URL; or
//! one of the `--ca-file` certificates itself (a self-signed server certificate the operator
//! pinned), for the name in the URL.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::client::ConfigError;

/// What an `https://` server's certificate is checked against.
#[derive(Clone, Debug)]
pub struct Trust {
    /// The system's roots plus the `--ca-file` certificates: a chain must end at one.
    roots: RootCertStore,
    /// The `--ca-file` certificates, also accepted as the server's own certificate.
    pinned: Vec<CertificateDer<'static>>,
}

/// The certificates an `https://` server's certificate must chain to (or be): the system's,
/// plus `ca_file`.
pub fn roots(ca_file: Option<&Path>) -> Result<Trust, ConfigError> {
    let mut roots = RootCertStore::empty();
    // Like a browser, skip the system certificates that do not parse instead of failing.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let mut pinned = Vec::new();
    if let Some(path) = ca_file {
        let bad = |why: String| ConfigError(format!("--ca-file {}: {why}", path.display()));
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
        return Err(ConfigError(
            "no trusted certificates: the system store is empty; give the server's CA with --ca-file"
                .to_owned(),
        ));
    }
    Ok(Trust { roots, pinned })
}

/// TLS client settings that trust `trust` (`None` for a plain `http://` URL, which never
/// uses them).
pub fn client_config(trust: Option<Trust>) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("TLS setup: {e}")))?;
    let config = match trust {
        None => builder.with_root_certificates(RootCertStore::empty()),
        Some(trust) => builder
            .dangerous()
            .with_custom_certificate_verifier(verifier(trust, provider)?),
    };
    Ok(config.with_no_client_auth())
}

/// The WebPki verifier for `trust`, which also accepts a pinned certificate.
fn verifier(
    trust: Trust,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<PinnedOrWebPki>, ConfigError> {
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(trust.roots), provider)
        .build()
        .map_err(|e| ConfigError(format!("TLS setup: {e}")))?;
    Ok(Arc::new(PinnedOrWebPki {
        webpki,
        pinned: trust.pinned,
    }))
}

/// WebPki's verification, plus: a server certificate that is byte for byte one given with
/// `--ca-file` is trusted for the names it holds.
///
/// `openssl req -x509` makes a self-signed certificate with `CA:TRUE`, which WebPki refuses
/// as a server's own (`CaUsedAsEndEntity`) although it is the root the operator gave;
/// curl accepts it, and so does this console. The handshake signatures are still checked by
/// WebPki, with the certificate's key.
#[derive(Debug)]
struct PinnedOrWebPki {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(refused) => refused,
        };
        if !self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Err(refused);
        }
        // Pinned, but only for the names it was made for.
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_name(&parsed, server_name)?;
        Ok(ServerCertVerified::assertion())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl req -x509 -newkey ec … -subj /CN=localhost -addext
    /// subjectAltName=DNS:localhost,IP:127.0.0.1 -days 36500`: `CA:TRUE`, as openssl makes it.
    const SELF_SIGNED: &str = "src/testdata/self-signed-ca.pem";

    fn self_signed() -> (Arc<PinnedOrWebPki>, CertificateDer<'static>) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SELF_SIGNED);
        let trust = roots(Some(&path)).unwrap();
        let cert = trust.pinned[0].clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        (verifier(trust, provider).unwrap(), cert)
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
    fn a_self_signed_ca_certificate_given_with_ca_file_is_trusted_for_its_names() {
        let (verifier, cert) = self_signed();
        // WebPki alone refuses it, which is why the console pins it.
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
}
