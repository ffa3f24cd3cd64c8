//! All server IO: the admin event stream, the periodic polls, and the operator's requests.
//!
//! Three tasks report to the app through one channel of [`ServerMsg`]s:
//! - the stream task reads `GET /admin/events` with the core's [`Parser`], and on any
//!   failure reports [`LinkState::Down`] and reconnects with exponential backoff;
//! - the poll task fetches `/admin/connections` and `/admin/stats` every two seconds while
//!   the stream is up (counters in the table change continuously, events only say who came
//!   and went);
//! - the command task runs each [`Command`] (publish, disconnect) in its own task.
//!
//! Every network wait is bounded: connecting, the response head, reading a body, and the
//! silence allowed on the stream (the server sends stats every second).

use std::error::Error as _;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use herald_core::{CLOSED_EVENT, ConnId, ConnectionInfo, Parser, Stats, TopicInfo};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, timeout};

use crate::app::{Command, PublishBody};
use crate::event::{ApiError, LinkState, NodesAnswer, ServerMsg, admin_message};
use crate::tls;

/// Every network wait the client makes, bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long to wait for a TCP connection.
    pub connect: Duration,
    /// How long to wait for a response's status and headers.
    pub response: Duration,
    /// How long to wait for a whole JSON body.
    pub body: Duration,
    /// How long the admin stream may stay silent before it is taken for dead (the server
    /// sends stats every second, so silence means a dead peer or network).
    pub stream_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            response: Duration::from_secs(5),
            body: Duration::from_secs(10),
            stream_idle: Duration::from_secs(15),
        }
    }
}
/// How often the connections and topics are refreshed.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// The first reconnect delay; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The largest JSON answer read (thousands of connections fit easily).
const MAX_BODY: usize = 64 << 20;
/// The largest error body read.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Where the server is and how to authenticate; checked before the terminal is touched.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The base URL without a trailing slash, e.g. `http://127.0.0.1:7070`.
    base: String,
    /// The `Authorization` header value, if a token was given.
    auth: Option<HeaderValue>,
    /// The TLS settings for an `https://` base URL.
    tls: rustls::ClientConfig,
    /// The bounds on every wait.
    timeouts: Timeouts,
}

/// Why a [`ClientConfig`] could not be built.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ClientConfig {
    /// Checks the URL (`http://host:port` or `https://host:port`, optionally with a path
    /// prefix), the token, and for https the certificates to trust (the system's, plus those in
    /// `ca_file`).
    pub fn new(
        url: &str,
        token: Option<&str>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let base = url.trim().trim_end_matches('/');
        let uri: Uri = base
            .parse()
            .map_err(|e| ConfigError(format!("--url {url:?} is not a URL: {e}")))?;
        let trust = match (uri.scheme_str(), ca_file) {
            (Some("https"), ca_file) => Some(tls::roots(ca_file)?),
            (Some("http"), None) => None,
            (Some("http"), Some(_)) => {
                return Err(ConfigError(format!(
                    "--ca-file applies to https:// URLs only, and --url {url:?} is plain http"
                )));
            }
            _ => {
                return Err(ConfigError(format!(
                    "--url {url:?} must start with http:// or https://"
                )));
            }
        };
        if uri.authority().is_none() {
            return Err(ConfigError(format!("--url {url:?} has no host")));
        }
        if uri.query().is_some() {
            return Err(ConfigError(format!("--url {url:?} must not have a query")));
        }
        let auth = match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => Some(HeaderValue::try_from(format!("Bearer {token}")).map_err(
                |_| ConfigError("the token holds characters a header cannot carry".to_owned()),
            )?),
        };
        Ok(Self {
            base: base.to_owned(),
            auth,
            tls: tls::client_config(trust)?,
            timeouts: Timeouts::default(),
        })
    }

    /// The same configuration with other timeouts (tests use short ones).
    #[cfg(test)]
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The base URL, as shown in the header.
    pub fn base(&self) -> &str {
        &self.base
    }
}

/// The HTTP side: one pooled hyper client (plain or TLS by the URL's scheme) plus the base
/// URL and credentials.
#[derive(Clone, Debug)]
struct Http {
    client: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    config: ClientConfig,
}

#[derive(Deserialize)]
struct ConnectionsAnswer {
    connections: Vec<ConnectionInfo>,
}

#[derive(Deserialize)]
struct StatsAnswer {
    stats: Stats,
    topics: Vec<TopicInfo>,
}

#[derive(Deserialize)]
struct PublishAnswer {
    id: String,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

impl Http {
    fn new(config: ClientConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeouts.connect));
        connector.set_nodelay(true);
        // The TLS layer takes https:// URLs; without this the TCP layer would refuse them.
        connector.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(config.tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { client, config }
    }

    fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.config.base));
        if let Some(auth) = &self.config.auth {
            builder = builder.header(header::AUTHORIZATION, auth.clone());
        }
        let body = match body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(body))
            }
            None => Full::new(Bytes::new()),
        };
        // The base URL was checked and paths are constants or numbers: this cannot fail, but
        // an empty request would only cost one failed call, never a panic.
        builder
            .body(body)
            .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
    }

    /// Sends a request and waits, bounded, for the response head.
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, ApiError> {
        let limit = self.config.timeouts.response;
        match timeout(limit, self.client.request(request)).await {
            Err(_) => Err(no_response(format!("no answer within {}", secs(limit)))),
            Ok(Err(e)) => Err(no_response(describe_request_error(&e))),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// Sends a request and reads its JSON answer, or the server's `{"error": ...}`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ApiError> {
        let response = self.send(self.request(method, path, body)).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.error_from(response, path).await);
        }
        let bytes = self.read_body(response.into_body(), MAX_BODY).await?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError {
            status: Some(status.as_u16()),
            message: format!("unexpected answer from {path}: {e}"),
        })
    }

    async fn publish(&self, body: &PublishBody) -> Result<String, ApiError> {
        let json = serde_json::to_vec(body).map_err(|e| no_response(e.to_string()))?;
        let answer: PublishAnswer = self.call(Method::POST, "/publish", Some(json)).await?;
        Ok(answer.id)
    }

    async fn kick(&self, id: ConnId) -> Result<(), ApiError> {
        let path = format!("/admin/connections/{id}");
        self.call::<serde_json::Value>(Method::DELETE, &path, None)
            .await
            .map(drop)
    }

    /// Reads a body whole, bounded in time and size.
    async fn read_body(&self, body: Incoming, max: usize) -> Result<Bytes, ApiError> {
        let limit = self.config.timeouts.body;
        match timeout(limit, Limited::new(body, max).collect()).await {
            Err(_) => Err(no_response(format!(
                "the answer did not arrive within {}",
                secs(limit)
            ))),
            Ok(Err(e)) => Err(no_response(format!("reading the answer failed: {e}"))),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
        }
    }

    /// The server's message for a failed request: its `{"error": ...}` when it sent one.
    async fn error_from(&self, response: Response<Incoming>, path: &str) -> ApiError {
        let status = response.status();
        let body = self
            .read_body(response.into_body(), MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        let url = format!("{}{path}", self.config.base);
        ApiError {
            status: Some(status.as_u16()),
            message: error_message(status, &body, self.config.auth.is_some(), &url),
        }
    }
}

fn no_response(message: String) -> ApiError {
    ApiError {
        status: None,
        message,
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64()).replace(".0s", "s")
}

/// The text to show for an error response with this status and body, from `url`, for a
/// console that sent a token (`with_token`) or not.
///
/// Herald answers `{"error": ...}`, written for any client; a 401 is said in the console's
/// terms instead (what to restart it with). Anything else is not Herald's answer: a wrong URL
/// or a proxy's page, whose HTML would fill the header with markup.
fn error_message(status: StatusCode, body: &[u8], with_token: bool, url: &str) -> String {
    let answer = serde_json::from_slice::<ErrorAnswer>(body).ok();
    match answer {
        Some(_) if status == StatusCode::UNAUTHORIZED && !with_token => {
            "no admin token: start herald-tui with --token (or HERALD_TOKEN)".to_owned()
        }
        Some(answer) if status == StatusCode::UNAUTHORIZED && answer.error.contains("expired") => {
            "token expired: mint a new one (herald token … --admin) and restart".to_owned()
        }
        // The remedy first: a narrow header cuts the end of a long reason.
        Some(answer) if status == StatusCode::UNAUTHORIZED => {
            format!(
                "token refused, give --token an admin token: {}",
                answer.error
            )
        }
        Some(answer) => answer.error,
        // The status is shown before the message (`404: not a Herald server (...)`).
        None if status.is_server_error() => format!("no answer from Herald ({url})"),
        None => format!("not a Herald server ({url})"),
    }
}

/// A request error in words: "cannot reach the server: Connection refused (os error 111)".
fn describe_request_error(error: &hyper_util::client::legacy::Error) -> String {
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    if error.is_connect() && innermost.to_string().contains("certificate") {
        // The remedy first: a narrow header cuts the end of a long reason.
        format!("the server's certificate is not trusted (give its CA with --ca-file): {innermost}")
    } else if error.is_connect() && innermost.to_string().contains("InvalidContentType") {
        // What came back was not a TLS record (rustls's words: "received corrupt message of
        // type InvalidContentType"), e.g. a plain HTTP server's 400.
        format!("the server did not answer in TLS (is it an http:// one?): {innermost}")
    } else if error.is_connect() {
        format!("cannot reach the server: {innermost}")
    } else {
        format!("request failed: {innermost}")
    }
}

/// The delay before reconnect attempt `failures + 1` (`failures` counts from 1).
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_MIN.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

/// Starts the client's tasks on the current tokio runtime.
///
/// Server messages go to `to_app`; the returned sender takes the app's [`Command`]s. The
/// tasks end when `to_app` is closed (the app is gone).
pub fn start(
    config: ClientConfig,
    to_app: mpsc::Sender<ServerMsg>,
) -> mpsc::UnboundedSender<Command> {
    let http = Http::new(config);
    let (live, live_rx) = watch::channel(false);
    tokio::spawn(run_stream(http.clone(), to_app.clone(), live));
    tokio::spawn(run_polls(http.clone(), to_app.clone(), live_rx));
    let (commands, mut command_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(command) = command_rx.recv().await {
            tokio::spawn(run_command(http.clone(), to_app.clone(), command));
        }
    });
    commands
}

async fn run_command(http: Http, to_app: mpsc::Sender<ServerMsg>, command: Command) {
    let msg = match command {
        Command::Publish(body) => ServerMsg::Published(http.publish(&body).await),
        Command::Disconnect(id) => ServerMsg::Kicked(id, http.kick(id).await),
    };
    // The app may be gone already; then nobody needs the answer.
    let _ = to_app.send(msg).await;
}

/// Keeps the admin stream open: reconnects after every failure, with backoff.
async fn run_stream(http: Http, to_app: mpsc::Sender<ServerMsg>, live: watch::Sender<bool>) {
    let mut parser = Parser::new();
    let mut failures = 0u32;
    loop {
        let attempt = failures + 1;
        if to_app
            .send(ServerMsg::Link(LinkState::Connecting { attempt }))
            .await
            .is_err()
        {
            return;
        }
        let ended = read_stream(&http, &to_app, &mut parser, &live).await;
        live.send_replace(false);
        parser.finish();
        let Some(ended) = ended else { return };
        if ended.got_events {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        // A `retry:` from the server (it sends one when it is full) is a floor for the delay.
        let server_retry = parser
            .retry()
            .map_or(Duration::ZERO, Duration::from_millis)
            .min(Duration::from_secs(60));
        let delay = backoff(failures).max(server_retry);
        if !count_down(&to_app, &ended.error, delay).await {
            return;
        }
    }
}

/// Shows the link as down with the time left before the next attempt, once a second, and
/// returns after `delay`; false when the app is gone.
async fn count_down(to_app: &mpsc::Sender<ServerMsg>, error: &str, delay: Duration) -> bool {
    const TICK: Duration = Duration::from_secs(1);
    let mut left = delay;
    while !left.is_zero() {
        let down = LinkState::Down {
            error: error.to_owned(),
            retry_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
        };
        if to_app.send(ServerMsg::Link(down)).await.is_err() {
            return false;
        }
        let step = left.min(TICK);
        sleep(step).await;
        left -= step;
    }
    true
}

/// How one admin stream ended.
struct StreamEnd {
    /// At least one event arrived (the connection was really up).
    got_events: bool,
    /// Why it ended, for the header.
    error: String,
}

/// Reads one admin stream until it fails; `None` when the app is gone.
async fn read_stream(
    http: &Http,
    to_app: &mpsc::Sender<ServerMsg>,
    parser: &mut Parser,
    live: &watch::Sender<bool>,
) -> Option<StreamEnd> {
    let fail = |error: String| {
        Some(StreamEnd {
            got_events: false,
            error,
        })
    };
    let mut request = http.request(Method::GET, "/admin/events", None);
    let headers = request.headers_mut();
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let response = match http.send(request).await {
        Ok(response) => response,
        Err(e) => return fail(e.to_string()),
    };
    if !response.status().is_success() {
        return fail(http.error_from(response, "/admin/events").await.to_string());
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("text/event-stream") {
        return fail(format!(
            "not a Herald server ({content_type:?} from {}/admin/events)",
            http.config.base
        ));
    }

    let mut body = response.into_body();
    let mut got_events = false;
    // The reason the server gave in its `herald.closed` notice, if it sent one.
    let mut closed = None;
    let end = |error: String, got_events: bool| Some(StreamEnd { got_events, error });
    loop {
        let idle = http.config.timeouts.stream_idle;
        let frame = match timeout(idle, body.frame()).await {
            Err(_) => {
                let why = format!("the server went silent for {}", secs(idle));
                return end(why, got_events);
            }
            Ok(None) => return end(closed_because(closed.as_deref()), got_events),
            Ok(Some(Err(e))) => {
                let why = describe_body_error(&e);
                return end(format!("the admin stream broke: {why}"), got_events);
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for event in parser.feed(&data) {
            if event.event_type == CLOSED_EVENT {
                closed = serde_json::from_str::<serde_json::Value>(&event.data)
                    .ok()
                    .and_then(|v| v["reason"].as_str().map(str::to_owned));
                continue;
            }
            let Some(msg) = admin_message(&event) else {
                continue;
            };
            if !got_events {
                got_events = true;
                live.send_replace(true);
                to_app.send(ServerMsg::Link(LinkState::Live)).await.ok()?;
            }
            to_app.send(msg).await.ok()?;
        }
    }
}

/// What the console says when the server ended the admin stream, for the reason it gave.
fn closed_because(reason: Option<&str>) -> String {
    match reason {
        Some("token_expired") => {
            "the admin token expired: start herald-tui with a fresh --token".to_owned()
        }
        Some("kicked") => "an operator disconnected this console".to_owned(),
        Some("shutdown") => "the server is shutting down".to_owned(),
        Some(other) => format!("the server closed the admin stream ({other})"),
        None => "the server closed the admin stream".to_owned(),
    }
}

fn describe_body_error(error: &hyper::Error) -> String {
    match error.source() {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

/// Refreshes connections, topics and nodes every [`POLL_INTERVAL`] while the stream is up.
///
/// The stream's snapshot fills the tables when it comes up, so the first poll waits one
/// interval. Ends when the stream task does.
async fn run_polls(http: Http, to_app: mpsc::Sender<ServerMsg>, mut live: watch::Receiver<bool>) {
    loop {
        if live.wait_for(|up| *up).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                () = sleep(POLL_INTERVAL) => {}
                down = live.wait_for(|up| !*up) => {
                    if down.is_err() {
                        return;
                    }
                    break;
                }
            }
            if !poll_once(&http, &to_app).await {
                return;
            }
        }
    }
}

/// Fetches connections, topics and nodes once; false when the app is gone.
async fn poll_once(http: &Http, to_app: &mpsc::Sender<ServerMsg>) -> bool {
    {
        let (connections, stats, nodes) = tokio::join!(
            http.call::<ConnectionsAnswer>(Method::GET, "/admin/connections", None),
            http.call::<StatsAnswer>(Method::GET, "/admin/stats", None),
            http.call::<NodesAnswer>(Method::GET, "/admin/nodes", None),
        );
        let mut msgs = Vec::with_capacity(3);
        match connections {
            Ok(answer) => msgs.push(ServerMsg::Connections(answer.connections)),
            Err(e) => msgs.push(ServerMsg::PollFailed(e)),
        }
        match stats {
            Ok(answer) => msgs.push(ServerMsg::StatsPoll {
                stats: Box::new(answer.stats),
                topics: answer.topics,
            }),
            Err(e) => msgs.push(ServerMsg::PollFailed(e)),
        }
        match nodes {
            Ok(answer) => msgs.push(ServerMsg::Nodes(answer)),
            Err(e) => msgs.push(ServerMsg::PollFailed(e)),
        }
        for msg in msgs {
            if to_app.send(msg).await.is_err() {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use herald_core::{AdminEvent, Snapshot};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn urls_are_checked_before_anything_starts() {
        let config = |url: &str, token: Option<&str>| ClientConfig::new(url, token, None);
        let ok = config("http://127.0.0.1:7070/", None).unwrap();
        assert_eq!(ok.base(), "http://127.0.0.1:7070");
        assert!(ok.auth.is_none());
        assert!(config("127.0.0.1:7070", None).is_err());
        assert!(config("ftp://h:1", None).is_err());
        assert!(config("http://h:1?x=1", None).is_err());
        assert!(config("http://h:1", Some("a\nb")).is_err());
        let with_token = config("http://h:1/prefix", Some(" t0k ")).unwrap();
        assert_eq!(with_token.auth.unwrap(), "Bearer t0k");
        assert!(config("http://h:1", Some("")).unwrap().auth.is_none());
    }

    #[test]
    fn a_ca_file_must_hold_certificates_and_only_https_uses_one() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = ClientConfig::new("https://h:1", None, Some(&missing)).unwrap_err();
        assert!(error.0.starts_with("--ca-file "), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = ClientConfig::new("https://h:1", None, Some(&empty)).unwrap_err();
        assert!(error.0.ends_with("holds no PEM certificate"), "{error}");
        let error = ClientConfig::new("http://h:1", None, Some(&empty)).unwrap_err();
        assert!(error.0.contains("https:// URLs only"), "{error}");
    }

    #[test]
    fn backoff_doubles_up_to_a_ceiling() {
        assert_eq!(backoff(1), BACKOFF_MIN);
        assert_eq!(backoff(2), BACKOFF_MIN * 2);
        assert_eq!(backoff(5), BACKOFF_MIN * 16);
        assert_eq!(backoff(6), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn error_bodies_show_the_servers_message_or_say_it_is_not_herald() {
        let url = "http://h:1/admin/events";
        assert_eq!(
            error_message(
                StatusCode::FORBIDDEN,
                br#"{"error": "not an admin token"}"#,
                true,
                url
            ),
            "not an admin token"
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, b"", false, url),
            "no answer from Herald (http://h:1/admin/events)"
        );
        assert_eq!(
            error_message(StatusCode::NOT_FOUND, b"<html>404</html>\n", false, url),
            "not a Herald server (http://h:1/admin/events)"
        );
    }

    #[test]
    fn a_401_says_what_to_restart_the_console_with_in_few_words() {
        let url = "http://h:1/admin/events";
        let missing = br#"{"error": "missing credentials: send a token as 'Authorization: Bearer <token>', the 'herald_token' cookie or '?token='"}"#;
        let expired = br#"{"error": "token expired"}"#;
        let bad = br#"{"error": "invalid token signature"}"#;
        let said = [
            error_message(StatusCode::UNAUTHORIZED, missing, false, url),
            error_message(StatusCode::UNAUTHORIZED, expired, true, url),
            error_message(StatusCode::UNAUTHORIZED, bad, true, url),
        ];
        assert_eq!(
            said,
            [
                "no admin token: start herald-tui with --token (or HERALD_TOKEN)",
                "token expired: mint a new one (herald token … --admin) and restart",
                "token refused, give --token an admin token: invalid token signature",
            ]
        );
        // With the status and "  (retrying in 10s)", a header 100 columns wide (96 inside)
        // reads them whole.
        for text in said {
            assert!(text.chars().count() + 5 + 19 <= 96, "{text}");
        }
    }

    /// Accepts one connection, reads its request head, writes `response`, and hands back the
    /// request head; the connection then stays open until `hold` ends.
    async fn serve_once(listener: &TcpListener, response: Vec<u8>, hold: Duration) -> String {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "client hung up");
            head.extend_from_slice(&buf[..n]);
        }
        socket.write_all(&response).await.unwrap();
        sleep(hold).await;
        String::from_utf8_lossy(&head).into_owned()
    }

    async fn next(rx: &mut mpsc::Receiver<ServerMsg>) -> ServerMsg {
        timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a message within 10s")
            .expect("the client is running")
    }

    /// The client's first attempt connects, and the stream's first event is an empty snapshot.
    async fn comes_up_with_an_empty_snapshot(rx: &mut mpsc::Receiver<ServerMsg>) {
        assert_eq!(
            next(rx).await,
            ServerMsg::Link(LinkState::Connecting { attempt: 1 })
        );
        assert_eq!(next(rx).await, ServerMsg::Link(LinkState::Live));
        assert_eq!(next(rx).await, ServerMsg::Snapshot(Box::default()));
    }

    #[tokio::test]
    async fn the_stream_delivers_the_snapshot_then_events_and_reports_a_lost_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let config = ClientConfig::new(&url, Some("secret"), None).unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let _commands = start(config, tx);

        let snapshot = serde_json::to_string(&Snapshot::default()).unwrap();
        let stats = AdminEvent::Stats(Stats::default());
        let body = format!(
            ": keep-alive\n\nevent: snapshot\ndata: {snapshot}\n\nevent: stats\ndata: {}\n\n",
            stats.data_json()
        );
        let response = format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n{body}");
        let server = tokio::spawn(async move {
            serve_once(&listener, response.into_bytes(), Duration::from_millis(200)).await
        });

        comes_up_with_an_empty_snapshot(&mut rx).await;
        assert_eq!(next(&mut rx).await, ServerMsg::Admin(Box::new(stats)));
        let head = server.await.unwrap();
        assert!(head.starts_with("GET /admin/events HTTP/1.1"), "{head}");
        assert!(
            head.to_lowercase().contains("authorization: bearer secret"),
            "{head}"
        );

        // The listener is gone with the task: the stream ends, the next try is refused.
        let ServerMsg::Link(LinkState::Down { retry_ms, .. }) = next(&mut rx).await else {
            panic!("expected the link to go down")
        };
        assert_eq!(retry_ms, 500, "a stream that worked retries soon");
        assert_eq!(
            next(&mut rx).await,
            ServerMsg::Link(LinkState::Connecting { attempt: 2 })
        );
        let ServerMsg::Link(LinkState::Down { error, retry_ms }) = next(&mut rx).await else {
            panic!("expected a refused connection")
        };
        assert!(error.starts_with("cannot reach the server"), "{error}");
        assert_eq!(retry_ms, 1000, "failures back off");
    }

    #[tokio::test]
    async fn an_https_url_for_a_plain_http_server_says_so() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (tx, mut rx) = mpsc::channel(64);
        let _commands = start(ClientConfig::new(&url, None, None).unwrap(), tx);
        // A plain HTTP server answers the handshake with an HTTP error.
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        loop {
            if let ServerMsg::Link(LinkState::Down { error, .. }) = next(&mut rx).await {
                assert!(
                    error.starts_with("the server did not answer in TLS (is it an http:// one?)"),
                    "{error}"
                );
                break;
            }
        }
    }

    #[tokio::test]
    async fn a_stream_the_server_ends_says_why() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, mut rx) = mpsc::channel(64);
        let _commands = start(ClientConfig::new(&url, None, None).unwrap(), tx);
        let snapshot = serde_json::to_string(&Snapshot::default()).unwrap();
        let notice = herald_core::CloseReason::TokenExpired.notice(3000);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n\
             event: snapshot\ndata: {snapshot}\n\n{}",
            String::from_utf8_lossy(&notice)
        );
        let server = tokio::spawn(async move {
            serve_once(&listener, response.into_bytes(), Duration::ZERO).await
        });
        comes_up_with_an_empty_snapshot(&mut rx).await;
        assert_eq!(
            next(&mut rx).await,
            ServerMsg::Link(LinkState::Down {
                error: "the admin token expired: start herald-tui with a fresh --token".to_owned(),
                retry_ms: 3000,
            })
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_stream_is_taken_for_dead_and_the_servers_retry_is_honoured() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let timeouts = Timeouts {
            stream_idle: Duration::from_millis(200),
            ..Timeouts::default()
        };
        let config = ClientConfig::new(&url, None, None)
            .unwrap()
            .with_timeouts(timeouts);
        let (tx, mut rx) = mpsc::channel(64);
        let _commands = start(config, tx);
        let snapshot = serde_json::to_string(&Snapshot::default()).unwrap();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n\
             retry: 4000\n\nevent: snapshot\ndata: {snapshot}\n\n"
        );
        let server = tokio::spawn(async move {
            serve_once(&listener, response.into_bytes(), Duration::from_secs(5)).await
        });
        comes_up_with_an_empty_snapshot(&mut rx).await;
        assert_eq!(
            next(&mut rx).await,
            ServerMsg::Link(LinkState::Down {
                error: "the server went silent for 0.2s".to_owned(),
                retry_ms: 4000,
            })
        );
        // The time left counts down while the client waits.
        assert_eq!(
            next(&mut rx).await,
            ServerMsg::Link(LinkState::Down {
                error: "the server went silent for 0.2s".to_owned(),
                retry_ms: 3000,
            })
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_401_on_the_stream_says_what_to_give_the_console() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, mut rx) = mpsc::channel(64);
        let _commands = start(ClientConfig::new(&url, Some("bad"), None).unwrap(), tx);
        let body = r#"{"error":"invalid token signature"}"#;
        let response = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let server = tokio::spawn(async move {
            serve_once(&listener, response.into_bytes(), Duration::ZERO).await
        });
        assert_eq!(
            next(&mut rx).await,
            ServerMsg::Link(LinkState::Connecting { attempt: 1 })
        );
        assert_eq!(
            next(&mut rx).await,
            ServerMsg::Link(LinkState::Down {
                error: "401: token refused, give --token an admin token: invalid token signature"
                    .to_owned(),
                retry_ms: 500,
            })
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn publish_returns_the_id_or_the_servers_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let http = Http::new(ClientConfig::new(&url, None, None).unwrap());
        let body = PublishBody {
            topics: vec!["orders".to_owned()],
            users: Vec::new(),
            broadcast: false,
            event: None,
            data: crate::app::JsonText::parse(r#"{"n": 1}"#).unwrap(),
            idempotency_key: Some("herald-tui-1-1".to_owned()),
        };
        let ok = r#"{"id":"1700000000000-3"}"#;
        let bad = r#"{"error":"invalid topic \"a b\""}"#;
        let responses = [
            format!(
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{ok}",
                ok.len()
            ),
            format!(
                "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{bad}",
                bad.len()
            ),
        ];
        let server = tokio::spawn(async move {
            let mut heads = Vec::new();
            for response in responses {
                heads.push(serve_once(&listener, response.into_bytes(), Duration::ZERO).await);
            }
            heads
        });
        assert_eq!(http.publish(&body).await, Ok("1700000000000-3".to_owned()));
        assert_eq!(
            http.publish(&body).await,
            Err(ApiError {
                status: Some(400),
                message: "invalid topic \"a b\"".to_owned()
            })
        );
        let heads = server.await.unwrap();
        assert!(
            heads[0].starts_with("POST /publish HTTP/1.1"),
            "{}",
            heads[0]
        );
        assert!(
            !heads[0].to_lowercase().contains("authorization"),
            "no token, no header"
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let timeouts = Timeouts {
            response: Duration::from_millis(100),
            ..Timeouts::default()
        };
        let http = Http::new(
            ClientConfig::new(&url, None, None)
                .unwrap()
                .with_timeouts(timeouts),
        );
        let server = tokio::spawn(async move {
            // Accept and read, never answer.
            serve_once(&listener, Vec::new(), Duration::from_secs(10)).await
        });
        let result = http.kick(ConnId(7)).await;
        let err = result.unwrap_err();
        assert_eq!(err.status, None);
        assert!(
            err.message.starts_with("no answer within"),
            "{}",
            err.message
        );
        server.abort();
    }
}
