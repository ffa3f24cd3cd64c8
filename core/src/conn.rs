//! Connections: their ids, what they ask for when they connect, and why they are closed.

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::frame::FrameBuilder;
use crate::id::EventId;
use crate::topic::{EventType, TopicPattern, UserId};

/// A connection's id, unique for the life of the engine (never reused).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for ConnId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(ConnId)
    }
}

/// What a subscriber asks for; build with [`ConnectRequest::new`] and set the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Topics and patterns (already checked against the caller's grant by the driver).
    pub patterns: Vec<TopicPattern>,
    /// The verified user, whose own events the connection also receives.
    pub user: Option<UserId>,
    /// The resume point from `Last-Event-ID` (or the `lastEventId` query parameter).
    pub last_id: Option<EventId>,
    /// The peer address, shown to operators.
    pub remote: Option<String>,
    /// The HTTP version it speaks, shown to operators.
    pub protocol: Protocol,
    /// True when it came over TLS, shown to operators.
    pub tls: bool,
    /// When the caller's credentials expire; the connection is closed then.
    pub expires_at: Option<Instant>,
    /// True for the admin stream: it receives admin events and stats samples.
    pub admin: bool,
}

impl ConnectRequest {
    /// A request for `patterns` with no user, no resume point and no expiry.
    pub fn new(patterns: Vec<TopicPattern>) -> Self {
        Self {
            patterns,
            user: None,
            last_id: None,
            remote: None,
            protocol: Protocol::Http1,
            tls: false,
            expires_at: None,
            admin: false,
        }
    }
}

/// The HTTP version a connection speaks. An HTTP/1.1 browser holds one of its six
/// connections per origin for each open stream; over HTTP/2 its streams share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// HTTP/1.1.
    #[serde(rename = "HTTP/1.1")]
    Http1,
    /// HTTP/2.
    #[serde(rename = "HTTP/2")]
    Http2,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
        })
    }
}

/// The event type of the last block of a stream the server ends ([`CloseReason::notice`]).
pub const CLOSED_EVENT: &str = "herald.closed";

/// Why the engine closed a connection (carried by [`crate::Output::Close`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// Its outbound queue overflowed: it reconnects and replays from the log.
    SlowConsumer,
    /// Its credentials expired.
    TokenExpired,
    /// An operator disconnected it.
    Kicked,
    /// The server is shutting down.
    Shutdown,
    /// The log could not serve its replay: it reconnects and tries again.
    LogUnavailable,
    /// The shared log dropped events before this server read them: the client reconnects,
    /// and its resume tells it what it missed.
    LogGap,
    /// Refused as it opened: the server held as many connections as it may.
    ServerFull,
    /// Refused as it opened: its user held as many streams as one user may.
    TooManyStreams,
}

impl CloseReason {
    /// The last block of a stream the server closes, which a page can listen for
    /// (`herald.closed`, data `{"reason":"token_expired"}`) to tell why it ended: a page
    /// whose token expired fetches a new one before it reconnects, since a reconnect with
    /// the old one is refused with a 401, and a native `EventSource` never retries after
    /// that. The block also carries `retry:`, the delay before the client comes back. It has
    /// no `id:`, so the client's resume point is unchanged.
    pub fn notice(self, retry_ms: u64) -> bytes::Bytes {
        self.block(retry_ms, None)
    }

    /// The whole stream of a subscriber refused for now ([`CloseReason::ServerFull`],
    /// [`CloseReason::TooManyStreams`], or [`CloseReason::LogUnavailable`] for a resume point
    /// a shared log cannot be read up to yet), answered 200 because a native `EventSource` never
    /// retries after any other status: the notice, with `id:` the log's `position` for a
    /// client that sent no `Last-Event-ID`, so that when it gets in it is replayed what was
    /// published since it first asked.
    pub fn refusal(self, retry_ms: u64, position: Option<EventId>) -> bytes::Bytes {
        self.block(retry_ms, position)
    }

    fn block(self, retry_ms: u64, id: Option<EventId>) -> bytes::Bytes {
        let data = format!(r#"{{"reason":"{}"}}"#, self.as_str());
        let mut block = FrameBuilder::with_capacity(data.len() + 96).retry(retry_ms);
        if let Some(id) = id {
            block = block.id(id);
        }
        block
            .event_type(&EventType::from_static(CLOSED_EVENT))
            .data(&data)
            .finish()
    }

    /// A short, stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SlowConsumer => "slow_consumer",
            Self::TokenExpired => "token_expired",
            Self::Kicked => "kicked",
            Self::Shutdown => "shutdown",
            Self::LogUnavailable => "log_unavailable",
            Self::LogGap => "log_gap",
            Self::ServerFull => "server_full",
            Self::TooManyStreams => "too_many_streams",
        }
    }
}
