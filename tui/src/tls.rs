//! Whom an `https://` server must prove it is: a certificate chain to the system's trusted
//! roots or to the certificates in `--ca-file` (a private CA's), for the name in the URL; or
//! one of the `--ca-file` certificates itself (a self-signed server certificate the operator
//! pinned), for its names (see `herald_tls`, which the CLI's clients share).

use std::path::Path;
use std::sync::Arc;

pub use herald_tls::Trust;
use herald_tls::TrustError;
use rustls::RootCertStore;

use crate::client::ConfigError;

/// The certificates an `https://` server's certificate must chain to (or be): the system's,
/// plus `ca_file`.
pub fn roots(ca_file: Option<&Path>) -> Result<Trust, ConfigError> {
    Trust::load(ca_file).map_err(|e| {
        ConfigError(match e {
            TrustError::CaFile { path, message } => {
                format!("--ca-file {}: {message}", path.display())
            }
            TrustError::NoRoots => "no trusted certificates: the system store is empty; give \
                                    the server's CA with --ca-file"
                .to_owned(),
            other => other.to_string(),
        })
    })
}

/// TLS client settings that trust `trust` (`None` for a plain `http://` URL, which never
/// uses them).
pub fn client_config(trust: Option<Trust>) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("TLS setup: {e}")))?;
    let config = match trust {
        None => builder.with_root_certificates(RootCertStore::empty()),
        Some(trust) => {
            let verifier = trust
                .verifier(provider)
                .map_err(|e| ConfigError(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
        }
    };
    Ok(config.with_no_client_auth())
}
