//! What operators see: snapshots, counters, and the admin events streamed to them.
//!
//! These types are the JSON of `GET /admin/*` and of the admin event stream, so the TUI
//! deserialises exactly what the engine serialises.

use serde::{Deserialize, Serialize};

use crate::conn::{ConnId, Protocol};
use crate::history::LogBounds;

/// Running totals since the engine started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Subscriber connections open now (admin streams are counted apart).
    pub connections: u64,
    /// Subscriber connections ever accepted.
    pub connections_total: u64,
    /// Events published (minted).
    pub published: u64,
    /// Events committed by the log.
    pub committed: u64,
    /// Frames of events handed to connections, live or replayed.
    pub delivered: u64,
    /// Of those, frames sent while replaying history.
    pub replayed: u64,
    /// Connections closed because their queue overflowed.
    pub slow_consumer_closes: u64,
    /// `herald.reset` events sent (a resume point that could not be honoured).
    pub resets: u64,
    /// Keep-alive comments sent.
    pub keepalives: u64,
    /// Publishes answered from the idempotency memory instead of minting a new event.
    pub idempotent_hits: u64,
    /// Subscriber connections refused by a limit: the server's or a user's connection cap,
    /// or too many topics.
    #[serde(default)]
    pub refused: u64,
    /// Admin streams (consoles) open now: outside the connection cap and the counts above.
    #[serde(default)]
    pub admin_streams: u64,
}

/// One server of a deployment as it last reported itself (`GET /admin/nodes`): in cluster
/// mode every instance sharing the Redis log, otherwise the answering server alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The instance's name: `--node-name`, or `host:port`; one per live instance.
    pub name: String,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Its totals: connections, publishes it accepted, frames it delivered.
    pub counters: Counters,
    /// The last event id it has committed (in cluster mode: read from the shared log).
    pub committed_id: Option<String>,
    /// How long ago it reported, by the shared registry's clock (0 for the answering server
    /// outside cluster mode).
    pub seen_ms_ago: u64,
    /// Its publish and delivery latency when it reported (absent from older servers' reports).
    #[serde(default)]
    pub latency: Latency,
}

impl NodeInfo {
    /// The report of a server named `name` whose engine gave `stats`.
    pub fn from_stats(name: &str, stats: &Stats) -> Self {
        Self {
            name: name.to_owned(),
            uptime_ms: stats.uptime_ms,
            counters: stats.counters,
            committed_id: stats.committed_id.clone(),
            seen_ms_ago: 0,
            latency: stats.latency,
        }
    }
}

/// The median and 99th percentile of a latency over a recent window, as the driver measured
/// it (estimated from histogram buckets, so a figure is within its bucket's width).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantiles {
    /// Observations in the window.
    pub count: u64,
    /// The median, microseconds.
    pub p50_us: u64,
    /// The 99th percentile, microseconds.
    pub p99_us: u64,
}

/// The server's own view of how fast it works, over the last `window_ms`: each figure is
/// `None` when nothing was observed in that window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// How long the figures look back, milliseconds.
    pub window_ms: u64,
    /// A publish, from its request having been read until the event was durable and its id
    /// answered.
    pub publish: Option<Quantiles>,
    /// What is queued for a subscriber (events, keep-alives), from entering its empty queue
    /// until written to its connection.
    pub delivery: Option<Quantiles>,
}

/// Connections open now, by how they came: HTTP version, and TLS or not. An HTTP/1.1
/// browser holds one of its six connections per origin for each stream; over HTTP/2 its
/// streams share one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transports {
    /// HTTP/1.1 without TLS.
    pub http1: u64,
    /// HTTP/1.1 over TLS.
    pub http1_tls: u64,
    /// HTTP/2 without TLS (prior knowledge).
    pub http2: u64,
    /// HTTP/2 over TLS: browsers of an HTTPS deployment.
    pub http2_tls: u64,
}

impl Transports {
    /// The count for connections speaking `protocol`, over TLS or not.
    pub fn count_mut(&mut self, protocol: Protocol, tls: bool) -> &mut u64 {
        match (protocol, tls) {
            (Protocol::Http1, false) => &mut self.http1,
            (Protocol::Http1, true) => &mut self.http1_tls,
            (Protocol::Http2, false) => &mut self.http2,
            (Protocol::Http2, true) => &mut self.http2_tls,
        }
    }

    /// Each of the four counts with its protocol and TLS flag.
    pub fn each(&self) -> [(Protocol, bool, u64); 4] {
        [
            (Protocol::Http1, false, self.http1),
            (Protocol::Http1, true, self.http1_tls),
            (Protocol::Http2, false, self.http2),
            (Protocol::Http2, true, self.http2_tls),
        ]
    }
}

/// A sample of the engine's state, sent on the admin stream every tick.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Milliseconds since the engine started.
    pub uptime_ms: u64,
    /// Totals.
    pub counters: Counters,
    /// The last id minted, as `ms-seq`.
    pub last_id: Option<String>,
    /// The last id the log committed.
    pub committed_id: Option<String>,
    /// Events minted but not yet committed.
    pub pending: u64,
    /// Distinct topics and patterns with at least one subscriber.
    pub topics: u64,
    /// What the log holds, as last reported by the driver.
    pub log: LogBounds,
    /// Connections open now, by HTTP version and TLS (absent from older servers' samples).
    #[serde(default)]
    pub transports: Transports,
    /// Publish and delivery latency as the server measured them (absent from older servers'
    /// samples).
    #[serde(default)]
    pub latency: Latency,
}

/// One connection, as shown in the admin table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Its id (use it with `DELETE /admin/connections/{id}`).
    pub id: ConnId,
    /// The verified user, if any.
    pub user: Option<String>,
    /// Its topics and patterns.
    pub topics: Vec<String>,
    /// The peer address.
    pub remote: Option<String>,
    /// The HTTP version it speaks (absent from servers older than this field).
    #[serde(default)]
    pub protocol: Option<crate::Protocol>,
    /// True when it came over TLS.
    #[serde(default)]
    pub tls: bool,
    /// How long it has been connected, in milliseconds.
    pub connected_ms: u64,
    /// Event frames sent to it.
    pub events_sent: u64,
    /// Bytes of frames sent to it (events, keep-alives, notices).
    pub bytes_sent: u64,
    /// The last event id sent to it.
    pub last_id: Option<String>,
    /// True while it is replaying history.
    pub replaying: bool,
    /// True for an admin stream.
    pub admin: bool,
    /// Bytes queued for it but not yet written (filled in by the driver, which owns queues).
    pub queued_bytes: u64,
    /// How long the oldest of them has waited, in milliseconds (filled in by the driver; 0
    /// with nothing queued, and from servers older than this field).
    #[serde(default)]
    pub queued_ms: u64,
}

/// Which connections `GET /admin/connections` lists: every filter given must hold. Rows come
/// in id order, so a page's last id is the next page's `after`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionQuery {
    /// Only this user's connections.
    pub user: Option<crate::UserId>,
    /// Only the connections an event published to this topic reaches: its own subscribers and
    /// those of every pattern that matches it (not the broadcast audience, which is everyone).
    pub topic: Option<crate::Topic>,
    /// Only connections with a higher id.
    pub after: Option<ConnId>,
    /// At most this many rows (`None`: every one).
    pub limit: Option<usize>,
}

/// One topic or pattern with its subscribers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// The topic, or the pattern (`news/*`).
    pub topic: String,
    /// Connections subscribed to it.
    pub subscribers: u64,
    /// Events delivered through it since it got its first subscriber.
    pub events: u64,
}

/// Everything at once: `GET /admin/connections` and `GET /admin/stats` are cuts of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Counters and ids.
    pub stats: Stats,
    /// Every connection, in id order.
    pub connections: Vec<ConnectionInfo>,
    /// Every topic and pattern with subscribers, by name.
    pub topics: Vec<TopicInfo>,
}

/// An event on the admin stream; its SSE `event:` field is [`AdminEvent::name`], its data
/// the JSON of the inner value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum AdminEvent {
    /// A connection opened.
    Connected(ConnectionInfo),
    /// A connection ended (client gone or closed by the engine).
    Disconnected(Disconnected),
    /// An event was committed and delivered.
    Published(Published),
    /// A periodic sample.
    Stats(Stats),
}

/// Data of [`AdminEvent::Disconnected`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnected {
    /// The connection.
    pub id: ConnId,
    /// Why the engine closed it (`slow_consumer`, `kicked`, ...), or `client_gone`.
    pub reason: String,
    /// Event frames it was sent.
    pub events_sent: u64,
}

/// Data of [`AdminEvent::Published`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The event's id.
    pub id: String,
    /// Its topics.
    pub topics: Vec<String>,
    /// Its users.
    pub users: Vec<String>,
    /// Whether it was a broadcast.
    pub broadcast: bool,
    /// Its `event:` type, if any.
    pub event_type: Option<String>,
    /// The first bytes of its data.
    pub preview: String,
    /// Connections it was delivered to live.
    pub recipients: u64,
}

impl AdminEvent {
    /// The SSE event type this is sent as.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connected(_) => "connected",
            Self::Disconnected(_) => "disconnected",
            Self::Published(_) => "published",
            Self::Stats(_) => "stats",
        }
    }

    /// The JSON data line(s) of this event.
    pub fn data_json(&self) -> String {
        let value = match self {
            Self::Connected(c) => serde_json::to_string(c),
            Self::Disconnected(d) => serde_json::to_string(d),
            Self::Published(p) => serde_json::to_string(p),
            Self::Stats(s) => serde_json::to_string(s),
        };
        // These types hold only strings and numbers: serialising them cannot fail.
        value.unwrap_or_else(|_| "{}".to_owned())
    }

    /// Reads an admin event back from its SSE type and data (what the TUI does).
    pub fn from_sse(event_type: &str, data: &str) -> Option<Self> {
        Some(match event_type {
            "connected" => Self::Connected(serde_json::from_str(data).ok()?),
            "disconnected" => Self::Disconnected(serde_json::from_str(data).ok()?),
            "published" => Self::Published(serde_json::from_str(data).ok()?),
            "stats" => Self::Stats(serde_json::from_str(data).ok()?),
            _ => return None,
        })
    }
}
