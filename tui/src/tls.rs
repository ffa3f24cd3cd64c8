//! Whom an `https://` server must prove it is: a certificate chain to the system's trusted
//! roots or to the certificates in `--ca-file` (a private CA's), for the name in the URL.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::client::ConfigError;

/// The roots an `https://` server's certificate must chain to: the system's, plus `ca_file`.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    // Like a browser, skip the system certificates that do not parse instead of failing.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let bad = |why: String| ConfigError(format!("--ca-file {}: {why}", path.display()));
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect())
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("holds no PEM certificate".to_owned()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    if roots.is_empty() {
        return Err(ConfigError(
            "no trusted certificates: the system store is empty; give the server's CA with --ca-file"
                .to_owned(),
        ));
    }
    Ok(roots)
}

/// TLS client settings that trust `roots` (empty for a plain `http://` URL, which never
/// uses them).
pub fn client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
