//! A small HTTP client for the CLI (`herald publish`): one request over one HTTP/1.1
//! connection, plain or TLS, JSON in and out.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::tls::{ClientFiles, client_config};

/// The longest wait for each step: connecting, the answer, its body.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Whom an `https://` request trusts: the system's roots, and the PEM certificates of
/// `ca_file`, which errors name as the option `flag`.
#[derive(Clone, Copy, Debug)]
pub struct Trust<'a> {
    /// Certificates to trust besides the system's.
    pub ca_file: Option<&'a Path>,
    /// The option that gives them (`--ca-file`).
    pub flag: &'static str,
}

/// Sends `body` (JSON text) with `method` to `url` (`http://` or `https://`, trusting
/// `trust`) and returns the status and the JSON answer.
pub async fn request_json(
    method: http::Method,
    url: &str,
    token: Option<&str>,
    body: Option<String>,
    trust: Trust<'_>,
) -> anyhow::Result<(http::StatusCode, serde_json::Value)> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("invalid URL {url:?}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!("invalid URL {url:?}: it must start with http:// or https://"),
    };
    let host = uri
        .host()
        .with_context(|| format!("invalid URL {url:?}: no host"))?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect((bare_host, port)))
        .await
        .with_context(|| format!("cannot reach {url} within 30 s"))?
        .with_context(|| format!("cannot reach {url}"))?;
    let io: Box<dyn Io> = if tls {
        let files = ClientFiles {
            ca_file: trust.ca_file.map(Path::to_path_buf),
            identity: None,
        };
        let mut config = client_config(&files)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(bare_host.to_owned())
            .with_context(|| format!("`{bare_host}` is not a name a certificate can hold"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| {
                let hint = match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                    Some(rustls::Error::InvalidCertificate(_)) => format!(
                        " (give a private CA's certificate, or the server's own, with {})",
                        trust.flag
                    ),
                    Some(rustls::Error::InvalidMessage(_)) => {
                        " (the server did not answer in TLS: is it an http:// one?)".to_owned()
                    }
                    _ => String::new(),
                };
                anyhow::Error::new(e).context(format!("TLS with {url} failed{hint}"))
            })?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .with_context(|| format!("cannot speak HTTP to {url}"))?;
    let driver = tokio::spawn(conn);

    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority);
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let payload = match body {
        Some(v) => {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
            Bytes::from(v)
        }
        None => Bytes::new(),
    };
    let req = req
        .body(Full::new(payload))
        .with_context(|| format!("invalid URL {url:?}"))?;
    let res = tokio::time::timeout(TIMEOUT, sender.send_request(req))
        .await
        .with_context(|| format!("no answer from {url} within 30 s"))?
        .with_context(|| format!("{url} closed the connection without an answer"))?;
    let status = res.status();
    let bytes = tokio::time::timeout(TIMEOUT, res.into_body().collect())
        .await
        .context("timed out reading the answer")??
        .to_bytes();
    driver.abort();
    let value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) if bytes.is_empty() => serde_json::Value::Null,
        Err(_) => bail!("{status}: {}", String::from_utf8_lossy(&bytes)),
    };
    Ok((status, value))
}
