//! `https://` endpoints: the load generator's connections, plain TCP or TLS over it.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::tls::ClientFiles;

/// A subscriber's or publisher's connection.
pub enum BenchStream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for BenchStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BenchStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            BenchStream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BenchStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BenchStream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            BenchStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BenchStream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            BenchStream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BenchStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            BenchStream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How to speak TLS to one `https://` endpoint: trust and server name.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({:?})", self.name)
    }
}

impl Tls {
    /// For the server `host` (a name or an IP address), trusting the system's roots and
    /// `ca_file`; offers HTTP/1.1, or HTTP/2 only with `http2`.
    pub fn new(host: &str, ca_file: Option<&Path>, http2: bool) -> Result<Self, String> {
        let files = ClientFiles {
            ca_file: ca_file.map(Path::to_path_buf),
            identity: None,
        };
        let mut config = crate::tls::client_config(&files).map_err(|e| e.to_string())?;
        config.alpn_protocols = match http2 {
            true => vec![b"h2".to_vec()],
            false => vec![b"http/1.1".to_vec()],
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("`{host}` is not a name a TLS certificate can hold"))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }
}

/// `tcp` as it is, or with the TLS handshake done when `tls` is given.
pub async fn secure(tcp: TcpStream, tls: Option<&Tls>) -> Result<BenchStream, String> {
    let Some(tls) = tls else {
        return Ok(BenchStream::Plain(tcp));
    };
    let stream = tls
        .connector
        .connect(tls.name.clone(), tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    Ok(BenchStream::Tls(Box::new(stream)))
}
