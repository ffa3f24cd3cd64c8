//! TLS with rustls: the HTTPS acceptor (HTTP/2 and HTTP/1.1 by ALPN), and the client
//! settings for `rediss://`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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
    let trust = herald_tls::Trust::load(files.ca_file.as_deref()).map_err(trust_error)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = trust.verifier(Arc::clone(&provider)).map_err(trust_error)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok(match &files.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            builder.with_client_auth_cert(read_certs(cert, cert_error)?, read_key(key)?)?
        }
    })
}

fn trust_error(e: herald_tls::TrustError) -> TlsError {
    match e {
        herald_tls::TrustError::CaFile { path, message } => TlsError::Ca {
            path: path.display().to_string(),
            message,
        },
        herald_tls::TrustError::NoRoots => TlsError::NoRoots,
        herald_tls::TrustError::Setup(message) => TlsError::Config(rustls::Error::General(message)),
    }
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
