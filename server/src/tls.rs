//! TLS with rustls: the HTTPS acceptor (HTTP/2 and HTTP/1.1 by ALPN), and the client
//! settings for `rediss://`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("cannot read TLS certificate {path}: {message}")]
    Cert {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The key file could not be read or holds no key.
    #[error("cannot read TLS private key {path}: {message}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A file of certificates to trust could not be read or holds none.
    #[error("cannot read CA certificates {path}: {message}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// Nothing to trust: the system's store is empty and no CA file was given.
    #[error("no trusted certificates: the system's store is empty; give a CA file")]
    NoRoots,
    /// rustls refused the pair.
    #[error("TLS certificate and key do not work together: {0}")]
    Config(#[from] rustls::Error),
}

/// Reads every certificate in a PEM file; `what` builds the error.
fn read_certs(
    path: &Path,
    what: impl Fn(String, String) -> TlsError,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| what(path.display().to_string(), e.to_string()))?;
    if certs.is_empty() {
        return Err(what(
            path.display().to_string(),
            "no certificate found".into(),
        ));
    }
    Ok(certs)
}

/// Reads the first private key in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn cert_error(path: String, message: String) -> TlsError {
    TlsError::Cert { path, message }
}

/// The files a TLS client uses besides the system's trusted roots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientFiles {
    /// More certificates to trust (a private CA's), PEM.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain and its key (PEM), for servers that ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// Client settings that trust the system's roots plus `files.ca_file`, and present
/// `files.identity` when the server asks for a client certificate.
pub fn client_config(files: &ClientFiles) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    // Certificates in the system store that do not parse are skipped, as browsers do.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let mut pinned = Vec::new();
    if let Some(path) = &files.ca_file {
        let ca_error = |path, message| TlsError::Ca { path, message };
        for cert in read_certs(path, ca_error)? {
            roots
                .add(cert.clone())
                .map_err(|e| ca_error(path.display().to_string(), e.to_string()))?;
            pinned.push(cert);
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| TlsError::Ca {
                path: files
                    .ca_file
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
                    .to_string(),
                message: e.to_string(),
            })?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedOrChained { webpki, pinned }));
    Ok(match &files.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            builder.with_client_auth_cert(read_certs(cert, cert_error)?, read_key(key)?)?
        }
    })
}

/// Trusts a server's certificate as webpki does (a chain to a trusted root, for the name),
/// and also one that is itself in the CA file, for its name and while it is valid. A
/// self-signed certificate made the usual way (`openssl req -x509`) is marked as a CA, which
/// webpki refuses as a server's own certificate, although the operator named that very
/// certificate to be trusted (as `curl --cacert` takes it).
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

/// An expired certificate, or one not valid yet, is refused even when pinned.
fn is_about_time(why: &CertificateError) -> bool {
    matches!(
        why,
        CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. }
    )
}

/// Builds an acceptor from PEM files.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs = read_certs(cert, cert_error)?;
    let key = read_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
