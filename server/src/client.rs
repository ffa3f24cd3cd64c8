//! A small HTTP client for the CLI (`herald publish`): one request, JSON in and out.

use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Sends `body` (JSON text) with `method` to `url` and returns the status and the JSON answer.
pub async fn request_json(
    method: http::Method,
    url: &str,
    token: Option<&str>,
    body: Option<String>,
) -> anyhow::Result<(http::StatusCode, serde_json::Value)> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
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
    let res = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .with_context(|| format!("no answer from {url} within 30 s"))?
        .with_context(|| format!("cannot reach {url}"))?;
    let status = res.status();
    let bytes = tokio::time::timeout(Duration::from_secs(30), res.into_body().collect())
        .await
        .context("timed out reading the answer")??
        .to_bytes();
    let value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) if bytes.is_empty() => serde_json::Value::Null,
        Err(_) => bail!("{status}: {}", String::from_utf8_lossy(&bytes)),
    };
    Ok((status, value))
}
