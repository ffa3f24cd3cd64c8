//! The HTTP API: each request becomes a hub command; answers are JSON (errors as
//! `{"error": "..."}`) or an event stream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herald_core::{
    CloseReason, ConnId, ConnectError, ConnectRequest, ConnectionQuery, EventId, EventType,
    Protocol, PublishError, PublishRequest, Target, Topic, TopicPattern, UserId,
};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body as _, Incoming};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{AuthError, Carrier, Identity, JwtKeys, token_from};
use crate::hub::{Hub, PublishFailure, Rows, jittered_retry};
use crate::log::{EventLog, LogMetrics};
use crate::metrics;
use crate::sse::SseBody;

/// The response body: a whole JSON/HTML body or an event stream.
pub type Body = Either<Full<Bytes>, SseBody>;

/// The small page at `/`.
const INDEX_HTML: &str = include_str!("index.html");

/// Everything request handlers share.
pub struct AppState {
    /// The engine's driver.
    pub hub: Hub,
    /// Token verification; `None` only in dev mode.
    pub jwt: Option<JwtKeys>,
    /// Reads the JWKS again for a token naming a key id none of the keys has.
    pub jwks_read_again: Option<Arc<crate::auth::jwks::ReadAgain>>,
    /// Development mode: no auth.
    pub dev: bool,
    /// Publish body limit.
    pub max_body: usize,
    /// Time a publisher has to send its body (the header timeout).
    pub body_timeout: Duration,
    /// `retry:` base for refusals.
    pub retry_ms: u64,
    /// CORS allow-list.
    pub cors_origins: Vec<String>,
    /// The log, for metrics.
    pub log: Arc<dyn EventLog>,
    /// Group-commit figures, for metrics.
    pub log_metrics: Arc<LogMetrics>,
    /// The threads that write to subscriber sockets on the direct path.
    pub writers: crate::writer::Writers,
    /// Who serves this deployment.
    pub nodes: Arc<crate::nodes::Nodes>,
    /// In cluster mode with `--max-connections-per-user`: each user's streams over every
    /// instance.
    pub user_cap: Option<crate::user_cap::UserCap>,
    /// Requests refused: for their credentials (401, 403), or by a connection cap.
    pub refused: Refusals,
}

/// Refused requests: those refused for their credentials, counted for the metrics (a secret
/// rotated on the server but not the backends turns every request into a 401, which nothing
/// else would show), and when a subscriber refused by a connection cap was last logged.
#[derive(Debug, Default)]
pub struct Refusals {
    /// Answered 401.
    pub unauthorized: AtomicU64,
    /// Answered 403.
    pub forbidden: AtomicU64,
    /// When a subscriber refused by a connection cap was last logged at `warn`.
    logged: std::sync::Mutex<crate::Throttle>,
}

impl Refusals {
    /// Counts `error` if it is a 401 or a 403.
    pub fn count(&self, error: &ApiError) {
        let counter = match error.status {
            StatusCode::UNAUTHORIZED => &self.unauthorized,
            StatusCode::FORBIDDEN => &self.forbidden,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Routes one request. Never fails: errors are JSON responses.
pub async fn handle(
    req: Request<Incoming>,
    state: Arc<AppState>,
    remote: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let head = req.method() == Method::HEAD;
    let mut response = route(req, &state, remote).await.unwrap_or_else(|e| {
        state.refused.count(&e);
        e.into_response()
    });
    apply_cors(&state, origin, &mut response);
    if head {
        leave_out_the_body(&mut response);
    }
    Ok(response)
}

/// A HEAD is answered as its GET, less the body, with the length the body would have had.
/// hyper leaves the body out over HTTP/1.1 but not over HTTP/2, where DATA on a HEAD's answer
/// is a protocol error.
fn leave_out_the_body(response: &mut Response<Body>) {
    if let Some(len) = response.body().size_hint().exact() {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    *response.body_mut() = Either::Left(Full::new(Bytes::new()));
}

/// An error answer: status and message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// For a 405: the methods the resource answers, sent as `Allow`.
    allow: Option<&'static str>,
}

impl ApiError {
    /// An error answer with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            allow: None,
        }
    }

    fn method_not_allowed(method: &Method, path: &str, allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path} (allowed: {allow})"),
            )
        }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body: `{"error": "..."}`.
    pub fn body(&self) -> String {
        json!({ "error": self.message }).to_string()
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn into_response(self) -> Response<Body> {
        let mut r = json_response(self.status, &json!({ "error": self.message }));
        if let Some(allow) = self.allow {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        r
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, e.to_string())
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_bytes_response(status, value.to_string().into_bytes())
}

/// A response whose body is `json`, already serialised.
fn json_bytes_response(status: StatusCode, json: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(json))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// How long `/healthz` waits for the hub: a liveness probe that gets no answer in this time
/// restarts a server whose engine is stuck.
const HEALTH_BOUND: Duration = Duration::from_secs(2);

/// The answer to a request the hub can no longer take: the server is stopping.
pub(crate) fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is shutting down",
    )
}

async fn route(
    req: Request<Incoming>,
    state: &AppState,
    remote: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // Every endpoint is in `allowed_methods`: what it does not know (a trailing slash
    // included) is not there, whatever the method.
    let Some(allow) = allowed_methods(&segments) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {path}"),
        ));
    };
    if method == Method::OPTIONS {
        return Ok(preflight());
    }
    // A HEAD is answered as a GET whose body is left out. Streams have no head to give short
    // of subscribing, so they answer GET only.
    let method = if method == Method::HEAD && allow.contains("HEAD") {
        Method::GET
    } else {
        method
    };
    match (&method, segments.as_slice()) {
        (&Method::GET, [""]) => Ok(index()),
        (&Method::GET, ["healthz"]) => match state.hub.health(HEALTH_BOUND).await {
            // A log stopped by a storage failure takes no publish until a restart, which is
            // what a probe that sees this does.
            Ok(_) if let Some(reason) = state.log_metrics.stopped_by() => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the event log stopped after a storage failure ({reason}): restart the server"
                ),
            )),
            Ok(stats) => Ok(json_response(
                StatusCode::OK,
                &json!({
                    "status": "ok",
                    "uptime_ms": stats.uptime_ms,
                    "committed_id": stats.committed_id,
                }),
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
            )),
        },
        (&Method::GET, ["metrics"]) => metrics_response(state).await,
        (&Method::GET, ["events"]) => subscribe(req, state, remote, false).await,
        (&Method::POST, ["publish"]) => publish(req, state).await,
        (&Method::GET, ["admin", "events"]) => subscribe(req, state, remote, true).await,
        (&Method::GET, ["admin", "connections"]) => {
            require_admin(&req, state).await?;
            let mut query = connection_query(&query_pairs(req.uri())?)?;
            // One row more than the page shows tells whether another page follows.
            let limit = query.limit;
            query.limit = limit.map(|n| n.saturating_add(1));
            let mut connections = state
                .hub
                .snapshot(Rows::Matching(query))
                .await
                .map_err(|_| unavailable())?
                .connections;
            let next_after = match limit {
                Some(n) if connections.len() > n => {
                    connections.truncate(n);
                    connections.last().map(|c| c.id)
                }
                _ => None,
            };
            // Megabytes at 10,000 connections: written straight from the rows (no JSON tree
            // in between), and away from this thread, which the hub and publishes share.
            #[derive(serde::Serialize)]
            struct Answer {
                connections: Vec<herald_core::ConnectionInfo>,
                next_after: Option<ConnId>,
            }
            let answer = Answer {
                connections,
                next_after,
            };
            let body = tokio::task::spawn_blocking(move || serde_json::to_vec(&answer))
                .await
                .map_err(|_| unavailable())?
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            Ok(json_bytes_response(StatusCode::OK, body))
        }
        (&Method::GET, ["admin", "connections", id]) => {
            require_admin(&req, state).await?;
            let id = parse_conn_id(id)?;
            let snap = state
                .hub
                .snapshot(Rows::One(id))
                .await
                .map_err(|_| unavailable())?;
            match snap.connections.into_iter().next() {
                Some(c) => Ok(json_response(StatusCode::OK, &json!(c))),
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no connection {id}"),
                )),
            }
        }
        (&Method::DELETE, ["admin", "connections", id]) => {
            let operator = require_admin(&req, state).await?;
            let id = parse_conn_id(id)?;
            if state.hub.kick(id).await.map_err(|_| unavailable())? {
                // Who cut whom: an operator's action belongs in the log.
                tracing::info!(
                    conn = %id,
                    operator = operator.user.as_ref().map_or("(dev mode)", |u| u.as_str()),
                    %remote,
                    "connection disconnected by an operator"
                );
                Ok(json_response(
                    StatusCode::OK,
                    &json!({ "disconnected": id }),
                ))
            } else {
                Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no connection {id}"),
                ))
            }
        }
        (&Method::GET, ["admin", "nodes"]) => {
            require_admin(&req, state).await?;
            let stats = state.hub.stats().await.map_err(|_| unavailable())?;
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "cluster": state.nodes.is_cluster(),
                    "node": state.nodes.name(),
                    "registry_ms_ago": state.nodes.registry_age().map(|age| {
                        u64::try_from(age.as_millis()).unwrap_or(u64::MAX)
                    }),
                    "nodes": state.nodes.list(&stats),
                }),
            ))
        }
        (&Method::GET, ["admin", "stats"]) => {
            require_admin(&req, state).await?;
            let snap = state
                .hub
                .snapshot(Rows::None)
                .await
                .map_err(|_| unavailable())?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "stats": snap.stats, "topics": snap.topics }),
            ))
        }
        _ => Err(ApiError::method_not_allowed(&method, &path, allow)),
    }
}

/// The methods an endpoint answers (a 405's `Allow`), or `None` when there is no such
/// endpoint.
fn allowed_methods(segments: &[&str]) -> Option<&'static str> {
    match segments {
        [""] | ["healthz"] | ["metrics"] | ["admin", "connections" | "nodes" | "stats"] => {
            Some("GET, HEAD, OPTIONS")
        }
        ["admin", "connections", id] if !id.is_empty() => Some("GET, HEAD, DELETE, OPTIONS"),
        ["events"] | ["admin", "events"] => Some("GET, OPTIONS"),
        ["publish"] => Some("POST, OPTIONS"),
        _ => None,
    }
}

/// The filters and page of `GET /admin/connections`; a 400 for anything else in the query
/// (a misspelt filter must not list every connection as if it matched).
fn connection_query(pairs: &[(String, String)]) -> Result<ConnectionQuery, ApiError> {
    let mut query = ConnectionQuery::default();
    let mut seen: Vec<&str> = Vec::new();
    for (k, v) in pairs {
        if seen.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "{k:?} is given more than once"
            )));
        }
        seen.push(k);
        let invalid = |e: &dyn std::fmt::Display| ApiError::bad_request(format!("{k}: {e}"));
        match k.as_str() {
            "user" => query.user = Some(UserId::new(v).map_err(|e| invalid(&e))?),
            "topic" if v.contains('*') => {
                return Err(ApiError::bad_request(format!(
                    "topic: {v:?} is a pattern; give a topic name, and the connections an \
                     event to it reaches are listed, those of matching patterns among them"
                )));
            }
            "topic" => query.topic = Some(Topic::new(v).map_err(|e| invalid(&e))?),
            "after" => query.after = Some(parse_conn_id(v)?),
            "limit" => match v.parse::<usize>() {
                Ok(n) if n > 0 => query.limit = Some(n),
                _ => return Err(invalid(&format!("{v:?} is not a number of rows above 0"))),
            },
            // A token may come in the query (for a browser's admin stream): not a filter.
            "token" => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {k:?} (this list takes user, topic, after and \
                     limit)"
                )));
            }
        }
    }
    Ok(query)
}

fn parse_conn_id(s: &str) -> Result<ConnId, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("{s:?} is not a connection id")))
}

fn index() -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(
        INDEX_HTML.as_bytes(),
    ))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn preflight() -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, Last-Event-ID"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

/// True when `origin` is on the CORS allow-list.
pub fn cors_allows(state: &AppState, origin: &str) -> bool {
    state.cors_origins.iter().any(|a| a == origin)
}

fn apply_cors(state: &AppState, origin: Option<HeaderValue>, response: &mut Response<Body>) {
    let h = response.headers_mut();
    // With an allow-list every answer depends on the Origin, also one without CORS headers
    // (a cache must not give it to an allowed origin).
    if !state.cors_origins.is_empty() {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    let Some(origin) = origin else { return };
    if !origin.to_str().is_ok_and(|o| cors_allows(state, o)) {
        return;
    }
    // With credentials the exact origin must be echoed, never `*`.
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
}

/// The query's names and values, decoded; a 400 if one is not UTF-8 once decoded (rather than
/// a name with U+FFFD in it, which other bytes would map to as well).
fn query_pairs(uri: &http::Uri) -> Result<Vec<(String, String)>, ApiError> {
    let Some(q) = uri.query() else {
        return Ok(Vec::new());
    };
    let decode = |part: &str| {
        percent_decode(part).ok_or_else(|| {
            ApiError::bad_request(format!(
                "the query part {part:?} is not UTF-8 once percent-decoded"
            ))
        })
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// Decodes `%XX` and `+` in a query component (invalid escapes stay as they are); `None` when
/// the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The caller's identity: dev mode trusts everyone; otherwise a valid token is required. A
/// token naming a key id none of the keys has, while keys come from JWKS, has the sets read
/// again first (at most once each 10 s): the provider may have added that key since.
async fn identify(
    request: (&Method, &http::Uri, &http::HeaderMap),
    state: &AppState,
    query: &[(String, String)],
) -> Result<Identity, ApiError> {
    let again = match identify_now(request, state, query) {
        Ok(identity) => return Ok(identity),
        Err(Checked::Refused(refused)) => return Err(refused),
        Err(Checked::ReadKeysFirst(again, _)) => again,
    };
    // Boxed, and nothing but references held across it: a rare wait, kept out of the task
    // every stream keeps for its life.
    Box::pin(again.read_now(crate::auth::jwks::ASKED_READ_WAIT)).await;
    identify_now(request, state, query).map_err(Checked::refusal)
}

/// Why [`identify_now`] has no identity.
enum Checked<'s> {
    /// Refused, with this answer.
    Refused(ApiError),
    /// The token names a key id none of the keys has: the key sets may be read again, and
    /// the token looked at again; otherwise, this answer.
    ReadKeysFirst(&'s crate::auth::jwks::ReadAgain, ApiError),
}

impl Checked<'_> {
    fn refusal(self) -> ApiError {
        match self {
            Checked::Refused(refused) | Checked::ReadKeysFirst(_, refused) => refused,
        }
    }
}

impl From<ApiError> for Checked<'_> {
    fn from(refused: ApiError) -> Self {
        Checked::Refused(refused)
    }
}

/// [`identify`], with the keys as they are now.
fn identify_now<'s>(
    request: (&Method, &http::Uri, &http::HeaderMap),
    state: &'s AppState,
    query: &[(String, String)],
) -> Result<Identity, Checked<'s>> {
    let (method, uri, headers) = request;
    let query_token = query
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str());
    let token = token_from(headers, query_token);
    match (&state.jwt, token) {
        (Some(key), Some((token, carrier))) => {
            let identity = match (key.identify(&token, unix_now()), &state.jwks_read_again) {
                (Err(e @ AuthError::UnknownKey(_)), Some(again)) => {
                    return Err(Checked::ReadKeysFirst(again, e.into()));
                }
                (checked, _) => checked.map_err(ApiError::from)?,
            };
            if carrier == Carrier::Cookie && !method.is_safe() {
                check_cookie_origin(uri, headers, state)?;
            }
            Ok(identity)
        }
        // Dev mode without a secret verifies no token, so one sent anyway (a stale cookie)
        // changes nothing: `?user=` still names the subscriber.
        (None, _) | (_, None) if state.dev => {
            let user = query
                .iter()
                .find(|(k, _)| k == "user")
                .map(|(_, v)| v.as_str());
            let user = user
                .map(UserId::new)
                .transpose()
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            Ok(Identity::dev(user))
        }
        (Some(_), None) | (None, _) => Err(ApiError::from(AuthError::Missing).into()),
    }
}

/// A publish or an admin change carried by the cookie, which the browser also adds to a form
/// or a `fetch` another page sends (same-site pages included, as another port on the host is):
/// it must come from this server's own origin or one on the CORS list. A request without
/// `Origin` (not from a browser page) is let through.
fn check_cookie_origin(
    uri: &http::Uri,
    headers: &http::HeaderMap,
    state: &AppState,
) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    // An HTTP/2 request names its host in the URI, an HTTP/1.1 one in `Host`.
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST)?.to_str().ok());
    let own = origin
        .split_once("://")
        .zip(host)
        .is_some_and(|((_, authority), host)| authority.eq_ignore_ascii_case(host));
    if own || cors_allows(state, origin) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "refused a {} cookie sent from {origin:?}, a page that is neither this server's \
             nor in --cors-origin (send the token as Authorization: Bearer, or allow the origin)",
            crate::auth::TOKEN_COOKIE
        ),
    ))
}

async fn require_admin(req: &Request<Incoming>, state: &AppState) -> Result<Identity, ApiError> {
    let request = (req.method(), req.uri(), req.headers());
    let id = identify(request, state, &query_pairs(req.uri())?).await?;
    if !id.admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this token has no admin rights",
        ));
    }
    Ok(id)
}

/// Marks a request that came over TLS (set by the server on each request of a TLS connection).
#[derive(Clone, Copy, Debug)]
pub struct OverTls;

async fn subscribe(
    req: Request<Incoming>,
    state: &AppState,
    remote: SocketAddr,
    admin: bool,
) -> Result<Response<Body>, ApiError> {
    let peer = Peer {
        addr: remote,
        protocol: match req.version() {
            http::Version::HTTP_2 => Protocol::Http2,
            _ => Protocol::Http1,
        },
        tls: req.extensions().get::<OverTls>().is_some(),
    };
    let watch = req.extensions().get::<ResetOnEnd>().cloned();
    Ok(
        match open_stream(req.uri(), req.headers(), state, peer, admin).await? {
            Opened::Stream(mut body) => {
                if let Some(ResetOnEnd(watch)) = watch {
                    body.watch_end(watch, peer.protocol == Protocol::Http2);
                }
                stream_response(Either::Right(body))
            }
            Opened::RetryLater(frame) => stream_response(Either::Left(Full::new(frame))),
        },
    )
}

/// Set by the server on each request of a connection served by hyper: the connection's
/// watch over the streams the server ends ([`crate::sse::SseBody::watch_end`]).
#[derive(Clone, Debug)]
pub struct ResetOnEnd(pub Arc<crate::sse::EndWatch>);

/// What a subscribe request gets: a live stream, or a `retry:` hint and an ended stream.
#[derive(Debug)]
pub enum Opened {
    /// The stream; its body never ends by itself.
    Stream(SseBody),
    /// The server cannot take the connection now: send this frame and end (a non-200 would
    /// make a browser give up for good).
    RetryLater(Bytes),
}

/// Where a subscriber connects from and how, as operators see it.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// The HTTP version of its connection.
    pub protocol: Protocol,
    /// True when its connection is TLS.
    pub tls: bool,
}

/// Checks a subscribe request (`GET /events`, or the admin stream) and opens the stream.
/// Shared by the hyper path and the direct HTTP/1.1 path ([`crate::stream_h1`]).
pub async fn open_stream(
    uri: &http::Uri,
    headers: &http::HeaderMap,
    state: &AppState,
    peer: Peer,
    admin: bool,
) -> Result<Opened, ApiError> {
    let remote = peer.addr;
    let query = query_pairs(uri)?;
    let identity = identify((&Method::GET, uri, headers), state, &query).await?;
    if admin && !identity.admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this token has no admin rights",
        ));
    }
    let mut patterns = Vec::new();
    if !admin {
        for (k, v) in &query {
            if k == "topic" {
                patterns.push(
                    TopicPattern::parse(v).map_err(|e| ApiError::bad_request(e.to_string()))?,
                );
            }
        }
        if let Some(p) = identity.forbidden_topic(&patterns) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this token may not subscribe to topic {:?}", p.to_string()),
            ));
        }
    }
    let header_id = headers
        .get("last-event-id")
        // Not ASCII, it cannot be an id, but the error shows what was sent.
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let query_id = query
        .iter()
        .find(|(k, _)| k == "lastEventId")
        .map(|(_, v)| v.clone());
    let last_id = match header_id.or(query_id) {
        None => None,
        // An empty header is what a client sends after an `id:` reset: start live.
        Some(s) if s.is_empty() => None,
        Some(s) => Some(
            s.parse::<EventId>()
                .map_err(|e| ApiError::bad_request(format!("invalid Last-Event-ID: {e}")))?,
        ),
    };
    // A token whose expiry lies beyond what the clock can represent never expires.
    let expires_at = identity.expires_unix.and_then(|exp| {
        let left = exp.saturating_sub(unix_now());
        std::time::Instant::now().checked_add(Duration::from_secs(left))
    });
    // In cluster mode a user's place is taken across the cluster first (the engine then
    // checks this instance's own count, which is never more).
    let lease = match (&state.user_cap, &identity.user) {
        (Some(cap), Some(user)) if !admin => match cap.admit(user.as_str()).await {
            Some(lease) => Ok(Some(lease)),
            None => {
                state.hub.sender().refused();
                Err(ConnectError::TooManyForUser {
                    user: user.to_string(),
                    limit: cap.limit(),
                })
            }
        },
        _ => Ok(None),
    };
    let connected = match lease {
        Err(refused) => Err(refused),
        Ok(lease) => {
            let connect = ConnectRequest {
                patterns,
                user: identity.user.clone(),
                last_id,
                remote: Some(remote.to_string()),
                protocol: peer.protocol,
                tls: peer.tls,
                expires_at,
                admin,
            };
            let connected = state
                .hub
                .connect(connect, admin)
                .await
                .map_err(|_| unavailable())?;
            connected.map(|mut sub| {
                if let Some(lease) = lease {
                    sub.body.hold(Box::new(lease));
                }
                sub
            })
        }
    };
    match connected {
        Ok(sub) => Ok(Opened::Stream(sub.body)),
        Err(e @ ConnectError::TooManyTopics { .. }) => Err(ApiError::bad_request(e.to_string())),
        // The client keeps its `Last-Event-ID` (the notice has no `id:`) and comes back, here
        // or to another instance that can read the log.
        Err(ConnectError::ResumePointUnread { .. }) => {
            let retry = jittered_retry(state.retry_ms, remote.port().into());
            Ok(Opened::RetryLater(
                CloseReason::LogUnavailable.refusal(retry, None),
            ))
        }
        Err(
            e @ (ConnectError::TooManyForUser { .. } | ConnectError::TooManyConnections { .. }),
        ) => {
            // EventSource gives up for good on any non-200: say "come back later" in-band.
            // Browsers come back every few seconds while the limit holds: one line now and
            // then says so, the count is in the metrics (`herald_connections_refused_total`).
            if crate::lock(&state.refused.logged).due(REFUSALS_LOGGED_EVERY) {
                tracing::warn!(%remote, "{e} (refusals are logged at most once each 10 s)");
            } else {
                tracing::debug!(%remote, "{e}");
            }
            let reason = match e {
                ConnectError::TooManyForUser { .. } => CloseReason::TooManyStreams,
                _ => CloseReason::ServerFull,
            };
            // A client that named no resume point gets the log's position, so that when it
            // gets in it is replayed what was published since it first asked.
            let position = match last_id {
                Some(_) => None,
                // Boxed: inline, this rare wait would enlarge every direct-path
                // subscriber's task (which holds this future's state) for its whole life.
                None => Some(
                    Box::pin(state.hub.stats())
                        .await
                        .map_err(|_| unavailable())?
                        .committed_id
                        .and_then(|id| id.parse().ok())
                        .unwrap_or(EventId::MIN),
                ),
            };
            let retry = jittered_retry(state.retry_ms, remote.port().into());
            Ok(Opened::RetryLater(reason.refusal(retry, position)))
        }
    }
}

/// How often a subscriber refused by a cap is logged at `warn` at most.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

fn stream_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    broadcast: bool,
    #[serde(default)]
    event: Option<String>,
    /// Kept as written: a value parsed and printed again would lose the digits of large
    /// numbers and the order of keys.
    data: Box<serde_json::value::RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// What subscribers receive for a publish's `data` (valid JSON, as written): a string's text,
/// anything else as written without the whitespace between its tokens.
fn event_data(json: &str) -> Result<String, serde_json::Error> {
    if json.starts_with('"') {
        return serde_json::from_str(json);
    }
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    Ok(out)
}

async fn publish(req: Request<Incoming>, state: &AppState) -> Result<Response<Body>, ApiError> {
    let query = query_pairs(req.uri())?;
    let identity = identify((req.method(), req.uri(), req.headers()), state, &query).await?;
    let limit = state.max_body;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let timeout = state.body_timeout;
    let body = tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {} s", timeout.as_secs_f64()),
            )
        })?
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                ApiError::bad_request(format!("could not read the body: {e}"))
            }
        })?;
    // Publish latency is the server's part: from here, the request read, to the answer.
    let read_at = std::time::Instant::now();
    let bytes = body.to_bytes();
    // serde would read an array positionally into the fields and answer in terms of them.
    if let Some(&first) = bytes.iter().find(|b| !b.is_ascii_whitespace())
        && first != b'{'
    {
        return Err(ApiError::bad_request(
            r#"the body must be a JSON object, as in {"topics": ["orders"], "data": ...}"#,
        ));
    }
    let body: PublishBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let bad = |e: herald_core::NameError| ApiError::bad_request(e.to_string());
    let target = Target {
        topics: body
            .topics
            .iter()
            .map(|t| Topic::new(t))
            .collect::<Result<_, _>>()
            .map_err(bad)?,
        users: body
            .users
            .iter()
            .map(|u| UserId::new(u))
            .collect::<Result<_, _>>()
            .map_err(bad)?,
        broadcast: body.broadcast,
    };
    if target.is_empty() {
        return Err(ApiError::bad_request(PublishError::NoTarget.to_string()));
    }
    identity
        .check_publish(&target)
        .map_err(|m| ApiError::new(StatusCode::FORBIDDEN, m))?;
    let event_type = match body.event.as_deref() {
        None | Some("") => None,
        Some(t) => Some(EventType::new(t).map_err(bad)?),
    };
    // The body parsed, so this is a string JSON can write but not hold as text (a lone
    // surrogate such as "\ud800"); serde counts its line and column within `data`.
    let data = event_data(body.data.get()).map_err(|e| {
        ApiError::bad_request(format!(
            "data is not text: {e} (line and column within data)"
        ))
    })?;
    let request = PublishRequest {
        target,
        event_type,
        data,
        idempotency_key: body.idempotency_key,
        publisher: identity.user.clone(),
    };
    match state.hub.publish(request).await {
        Ok(id) => Ok({
            crate::latency::PUBLISH.observe(read_at.elapsed());
            json_response(StatusCode::OK, &json!({ "id": id.to_string() }))
        }),
        Err(PublishFailure::Rejected(e)) => Err(ApiError::bad_request(e.to_string())),
        Err(e @ PublishFailure::Log(_)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
        Err(e @ PublishFailure::Unavailable(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
        Err(PublishFailure::ShuttingDown) => Err(unavailable()),
    }
}

async fn metrics_response(state: &AppState) -> Result<Response<Body>, ApiError> {
    let stats = state.hub.stats().await.map_err(|_| unavailable())?;
    let text = metrics::render(
        &stats,
        &state.log_metrics.snapshot(),
        state.log.corrupt_records(),
        &crate::latency::LatencyCounts::now(),
        &state.refused,
    );
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(text))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::{event_data, percent_decode};

    #[test]
    fn event_data_is_a_strings_text_or_the_json_as_written_without_whitespace() {
        let data = |json: &str| event_data(json).unwrap();
        assert_eq!(data(r#""two\nlines \u00e9""#), "two\nlines é");
        // Digits, exponents, key order and repeated keys as sent: nothing goes through f64.
        assert_eq!(
            data("{ \"id\" : 98765432109876543210,\n \"b\": 1e2, \"a\": -0, \"a\": 1.5e-400 }"),
            r#"{"id":98765432109876543210,"b":1e2,"a":-0,"a":1.5e-400}"#
        );
        // Whitespace inside strings stays, escaped quotes do not end them.
        assert_eq!(
            data("[ \"a b\", \"say \\\" hi \", \"\\\\\" , null ]"),
            r#"["a b","say \" hi ","\\",null]"#
        );
    }

    #[test]
    fn query_components_are_percent_decoded() {
        let decoded = |s| percent_decode(s).unwrap();
        assert_eq!(decoded("news%2F*"), "news/*");
        assert_eq!(decoded("a+b"), "a b");
        assert_eq!(decoded("100%"), "100%");
        assert_eq!(decoded("%zz%4"), "%zz%4");
        assert_eq!(decoded("caf%C3%A9"), "café");
        // Not UTF-8: refused, not turned into U+FFFD (which %fe would then name as well).
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("caf%C3"), None);
    }
}
