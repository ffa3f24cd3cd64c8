//! The engine: one value that owns every connection, index, id and counter.
//!
//! Inputs are `handle_*` methods taking `now`; each queues [`Output`]s that the driver drains
//! with [`Engine::poll_output`] until `None`. The engine never does IO and never reads a clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::admin::{
    AdminEvent, ConnectionInfo, ConnectionQuery, Counters, Disconnected, Published, Snapshot,
    Stats, TopicInfo,
};
use crate::conn::{CloseReason, ConnId, ConnectRequest};
use crate::event::{Event, Subscription, Target};
use crate::frame::{self, Comment, FrameBuilder};
use crate::history::{HistoryPage, HistoryRequest, LogBounds};
use crate::id::{EventId, IdSequencer};
use crate::topic::{EventType, MAX_NAME_LEN, Topic, TopicPattern, UserId};

/// The event type of the notice sent when a resume point cannot be honoured.
pub const RESET_EVENT: &str = "herald.reset";

/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

/// Tunables of the engine; [`EngineConfig::default`] gives production defaults.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The `retry:` (ms) sent as each connection's first frame.
    pub retry_ms: u64,
    /// A connection with nothing written for this long gets a keep-alive comment.
    pub keepalive: Duration,
    /// The coarse timer: keep-alives, token expiry and admin stats run once per tick.
    pub tick: Duration,
    /// Most subscriber connections open at once (admin streams are not counted or refused).
    pub max_connections: usize,
    /// Most subscriber connections one user may hold at once (admin streams and anonymous
    /// subscribers are not counted); `None` for no limit.
    pub max_connections_per_user: Option<usize>,
    /// Most topics and patterns in one subscription.
    pub max_topics_per_connection: usize,
    /// Most committed events kept in memory to serve reconnects without the log.
    pub recent_events: usize,
    /// Most payload bytes kept in that window.
    pub recent_bytes: usize,
    /// Most events in one page of history.
    pub history_page_events: usize,
    /// Rough bound on the bytes of one page of history (and of one window replay step).
    pub history_page_bytes: usize,
    /// Most bytes of live events held for one connection while it replays; beyond it the
    /// engine reads them from the log instead.
    pub held_bytes: usize,
    /// Most idempotency keys remembered (oldest forgotten first).
    pub idempotency_keys: usize,
    /// Bytes of an event's data shown in admin `published` events.
    pub admin_preview_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            retry_ms: 3_000,
            keepalive: Duration::from_secs(15),
            tick: Duration::from_secs(1),
            max_connections: 50_000,
            max_connections_per_user: None,
            max_topics_per_connection: 64,
            recent_events: 4_096,
            recent_bytes: 16 << 20,
            history_page_events: 1_000,
            history_page_bytes: 256 << 10,
            held_bytes: 1 << 20,
            idempotency_keys: 100_000,
            admin_preview_bytes: 120,
        }
    }
}

/// What the driver must do; drain with [`Engine::poll_output`] after every input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Queue `frame` on the connection's stream. If its queue overflows, call
    /// [`Engine::handle_queue_overflow`].
    Send {
        /// The connection.
        conn: ConnId,
        /// One or more whole event-stream blocks, shared between recipients.
        frame: Bytes,
    },
    /// End the connection's stream once what is queued has been written. The engine has
    /// already forgotten it; no `handle_disconnect` is needed.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Write the event to the log; call [`Engine::handle_committed`] once it is durable (or
    /// [`Engine::handle_append_failed`]). The second field is the publish's idempotency key:
    /// the log keeps it with the event, and hands it back to
    /// [`Engine::restore_idempotency_keys`] after a restart, so a retried publish is still
    /// recognised.
    Append(Arc<Event>, Option<Arc<str>>),
    /// Read a page of history and answer with [`Engine::handle_history`].
    LoadHistory(Box<HistoryRequest>),
}

/// A publish, before it has an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishRequest {
    /// Who it is for.
    pub target: Target,
    /// The `event:` type; `None` for `message`.
    pub event_type: Option<EventType>,
    /// The payload.
    pub data: String,
    /// A key that makes retries safe: a repeated key from the same publisher returns the
    /// first publish's id.
    pub idempotency_key: Option<String>,
    /// Who publishes (a token's subject). Keys are the publisher's own, so that one publisher
    /// cannot answer another's publish with its event by guessing its key; `None` for no one
    /// in particular (dev mode, a token without a subject), whose keys are shared.
    pub publisher: Option<UserId>,
}

impl PublishRequest {
    /// A publish of `data` to `target`, with no type and no idempotency key.
    pub fn new(target: Target, data: impl Into<String>) -> Self {
        Self {
            target,
            event_type: None,
            data: data.into(),
            idempotency_key: None,
            publisher: None,
        }
    }

    /// The idempotency key as the engine remembers it and the log keeps it: the publisher's
    /// user id and the key, apart by a NUL (which neither may hold); a key of no publisher as
    /// it is.
    pub fn scoped_key(&self) -> Option<String> {
        let key = self.idempotency_key.as_deref()?;
        Some(match &self.publisher {
            Some(publisher) => format!("{}\0{key}", publisher.as_str()),
            None => key.to_owned(),
        })
    }
}

impl PublishRequest {
    /// A target, and a key of valid length.
    fn validate(&self) -> Result<(), PublishError> {
        if self.target.is_empty() {
            return Err(PublishError::NoTarget);
        }
        match &self.idempotency_key {
            Some(k)
                if k.is_empty()
                    || k.len() > MAX_IDEMPOTENCY_KEY_LEN
                    || k.chars().any(char::is_control) =>
            {
                Err(PublishError::BadIdempotencyKey)
            }
            _ => Ok(()),
        }
    }
}

/// The answer to a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishOutcome {
    /// The event's id (the original one for a repeated idempotency key).
    pub id: EventId,
    /// True when the idempotency key was seen before and nothing new was published.
    pub duplicate: bool,
    /// True when `id` is already durable, so the publisher can be answered at once.
    pub committed: bool,
}

/// Why a publish was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// No topic, no user and no broadcast.
    #[error("an event needs at least one target: topics, users or broadcast")]
    NoTarget,
    /// The idempotency key is empty, too long, or holds a control character.
    #[error(
        "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes, with no control characters"
    )]
    BadIdempotencyKey,
}

/// Why a connection was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The server holds as many connections as it may.
    #[error("the server is at its limit of {limit} connections")]
    TooManyConnections {
        /// The limit.
        limit: usize,
    },
    /// The user already holds as many streams as one user may.
    #[error("user {user:?} already has as many open streams as one user may ({limit})")]
    TooManyForUser {
        /// The user.
        user: String,
        /// The limit.
        limit: usize,
    },
    /// The resume point is past what this server has read of a log it shares with others,
    /// and it cannot read further now (the log's store is out of reach, or this server is
    /// behind): the client should come back, keeping its resume point. The engine never
    /// answers this itself; a driver that waits for a shared log does.
    #[error("the log cannot be read up to the resume point {last} now")]
    ResumePointUnread {
        /// The client's `Last-Event-ID`.
        last: EventId,
    },
    /// The subscription names too many topics.
    #[error("a subscription may name at most {limit} topics (got {count})")]
    TooManyTopics {
        /// How many were named.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

/// A committed (or pending) event with its frame, encoded once and shared.
#[derive(Debug)]
struct Entry {
    event: Arc<Event>,
    frame: Bytes,
}

#[derive(Debug)]
struct Pending {
    entry: Arc<Entry>,
    key: Option<Arc<str>>,
}

#[derive(Debug)]
struct Replay {
    /// Everything up to here (exclusive lower bound of the next read) has been read.
    read_from: Option<EventId>,
    /// The end of the range being replayed.
    through: EventId,
    /// Live events above `through`, held until the replay ends.
    held: Vec<Arc<Entry>>,
    held_bytes: usize,
    /// Held events were dropped for memory: read them from the log instead.
    overflowed: bool,
    /// A `LoadHistory` is out.
    awaiting: bool,
}

/// A connection. What fan-out touches stays inline and small (one cache line); the rest
/// lives behind boxes, so delivering to 100,000 connections streams through little memory.
#[derive(Debug)]
struct Conn {
    id: ConnId,
    /// The highest event id sent (or known to the client): nothing at or below it is sent.
    cursor: Option<EventId>,
    events_sent: u64,
    bytes_sent: u64,
    last_write: Instant,
    replay: Option<Box<Replay>>,
    meta: Box<ConnMeta>,
}

#[derive(Debug)]
struct ConnMeta {
    sub: Subscription,
    remote: Option<String>,
    protocol: crate::Protocol,
    tls: bool,
    admin: bool,
    connected_at: Instant,
    expires_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct IndexEntry {
    slots: BTreeSet<u32>,
    events: u64,
}

/// The Herald engine. See the crate docs for the driver loop.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    started_at: Instant,
    next_tick: Instant,
    ids: IdSequencer,
    committed: Option<EventId>,
    log: LogBounds,
    next_conn: u64,
    slots: Vec<Option<Conn>>,
    free_slots: Vec<u32>,
    by_id: BTreeMap<ConnId, u32>,
    topics: BTreeMap<Topic, IndexEntry>,
    prefixes: BTreeMap<Arc<str>, IndexEntry>,
    users: BTreeMap<UserId, BTreeSet<u32>>,
    everyone: BTreeSet<u32>,
    admins: BTreeSet<u32>,
    pending: VecDeque<Pending>,
    recent: VecDeque<Arc<Entry>>,
    recent_bytes: usize,
    /// Every committed event above this id is in `recent` (`None`: every event ever).
    recent_floor: Option<EventId>,
    idempotency: HashMap<Arc<str>, EventId>,
    idempotency_order: VecDeque<Arc<str>>,
    counters: Counters,
    transports: crate::admin::Transports,
    /// The driver's latest latency figures, passed through to the stats.
    latency: crate::admin::Latency,
    outputs: VecDeque<Output>,
    keepalive: Comment,
}

impl Engine {
    /// Creates an engine. `last_id` is the last id in the log (ids continue above it) and
    /// `log` what the log holds, so resets are decided correctly from the first connection.
    pub fn new(
        config: EngineConfig,
        last_id: Option<EventId>,
        log: LogBounds,
        now: Instant,
    ) -> Self {
        let keepalive = Comment::new("keep-alive").expect("no line break in the literal");
        Self {
            next_tick: now + config.tick,
            config,
            started_at: now,
            ids: IdSequencer::new(last_id),
            committed: last_id,
            log,
            next_conn: 1,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_id: BTreeMap::new(),
            topics: BTreeMap::new(),
            prefixes: BTreeMap::new(),
            users: BTreeMap::new(),
            everyone: BTreeSet::new(),
            admins: BTreeSet::new(),
            pending: VecDeque::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
            recent_floor: last_id,
            idempotency: HashMap::new(),
            idempotency_order: VecDeque::new(),
            counters: Counters::default(),
            transports: crate::admin::Transports::default(),
            latency: crate::admin::Latency::default(),
            outputs: VecDeque::new(),
            keepalive,
        }
    }

    /// The next thing the driver must do, until `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`Engine::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_tick)
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The last id the log has committed.
    pub fn committed_id(&self) -> Option<EventId> {
        self.committed
    }

    /// The last id minted.
    pub fn last_id(&self) -> Option<EventId> {
        self.ids.last()
    }

    /// The running totals.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// True when a connection with this id is open.
    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.by_id.contains_key(&conn)
    }

    /// Opens a connection: sends its first frame (`retry:`), then a reset notice and/or
    /// history if it resumes, then live events.
    pub fn handle_connect(
        &mut self,
        req: ConnectRequest,
        now: Instant,
    ) -> Result<ConnId, ConnectError> {
        let admitted = self.admit(req, now);
        if admitted.is_err() {
            self.counters.refused += 1;
        }
        admitted
    }

    /// [`Engine::handle_connect`] but for the count of refusals.
    fn admit(&mut self, req: ConnectRequest, now: Instant) -> Result<ConnId, ConnectError> {
        // Admin streams neither count nor wait: an operator can look at a full server.
        if !req.admin && self.counters.connections as usize >= self.config.max_connections {
            return Err(ConnectError::TooManyConnections {
                limit: self.config.max_connections,
            });
        }
        if let (Some(limit), Some(user), false) =
            (self.config.max_connections_per_user, &req.user, req.admin)
            && self
                .users
                .get(user)
                .is_some_and(|slots| slots.len() >= limit)
        {
            return Err(ConnectError::TooManyForUser {
                user: user.to_string(),
                limit,
            });
        }
        let patterns: BTreeSet<TopicPattern> = req.patterns.into_iter().collect();
        if patterns.len() > self.config.max_topics_per_connection {
            return Err(ConnectError::TooManyTopics {
                count: patterns.len(),
                limit: self.config.max_topics_per_connection,
            });
        }
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        // Admin streams get admin events only: they never join the user-event indices.
        if req.admin {
            self.admins.insert(slot);
        } else {
            self.everyone.insert(slot);
            for pattern in &patterns {
                match pattern {
                    TopicPattern::Exact(t) => {
                        self.topics.entry(t.clone()).or_default().slots.insert(slot);
                    }
                    TopicPattern::Prefix(p) => {
                        self.prefixes
                            .entry(p.clone())
                            .or_default()
                            .slots
                            .insert(slot);
                    }
                }
            }
            if let Some(user) = &req.user {
                self.users.entry(user.clone()).or_default().insert(slot);
            }
        }
        let conn = Conn {
            id,
            meta: Box::new(ConnMeta {
                sub: Subscription {
                    patterns: patterns.into_iter().collect(),
                    user: req.user,
                },
                remote: req.remote,
                protocol: req.protocol,
                tls: req.tls,
                admin: req.admin,
                connected_at: now,
                expires_at: req.expires_at,
            }),
            cursor: self.committed,
            events_sent: 0,
            bytes_sent: 0,
            last_write: now,
            replay: None,
        };
        self.slots[slot as usize] = Some(conn);
        self.by_id.insert(id, slot);
        if !req.admin {
            self.counters.connections_total += 1;
            *self.transports.count_mut(req.protocol, req.tls) += 1;
        }
        self.count_connections();

        // A first connection also gets a checkpoint: an id-only block (no message) naming
        // where its stream starts. A browser that then drops before any event arrives
        // reconnects with it as `Last-Event-ID` and is replayed what it missed meanwhile;
        // without it, that reconnect would carry no id and start from "now".
        let mut first = FrameBuilder::with_capacity(64).retry(self.config.retry_ms);
        if req.last_id.is_none() && !req.admin {
            first = first.id(self.committed.unwrap_or(EventId::MIN));
        }
        self.send(slot, first.finish(), now);
        if let (Some(last), false) = (req.last_id, req.admin) {
            self.resume(slot, last, now);
        }
        let info = self.connection_info(slot, now);
        if let Some(info) = info {
            self.emit_admin(AdminEvent::Connected(info), now);
        }
        Ok(id)
    }

    /// The client went away (its stream ended or errored).
    pub fn handle_disconnect(&mut self, conn: ConnId, now: Instant) {
        if let Some(c) = self.remove(conn) {
            self.emit_admin(
                AdminEvent::Disconnected(Disconnected {
                    id: conn,
                    reason: "client_gone".into(),
                    events_sent: c.events_sent,
                }),
                now,
            );
        }
    }

    /// The driver's queue for `conn` overflowed: it is closed, and will replay from the log
    /// when it reconnects.
    pub fn handle_queue_overflow(&mut self, conn: ConnId, now: Instant) {
        if self.close(conn, CloseReason::SlowConsumer, now) {
            self.counters.slow_consumer_closes += 1;
        }
    }

    /// An operator disconnects `conn`; returns false if there is no such connection.
    pub fn handle_kick(&mut self, conn: ConnId, now: Instant) -> bool {
        self.close(conn, CloseReason::Kicked, now)
    }

    /// The server is stopping: every connection is closed with [`CloseReason::Shutdown`].
    pub fn handle_shutdown(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.by_id.keys().copied().collect();
        for id in ids {
            self.close(id, CloseReason::Shutdown, now);
        }
    }

    /// Publishes an event: mints its id from `wall_ms` (unix ms) and asks the log to append
    /// it. It is delivered once [`Engine::handle_committed`] covers its id.
    pub fn handle_publish(
        &mut self,
        req: PublishRequest,
        wall_ms: u64,
        now: Instant,
    ) -> Result<PublishOutcome, PublishError> {
        let _ = now;
        req.validate()?;
        let key: Option<Arc<str>> = req.scoped_key().map(Arc::from);
        if let Some(k) = &key
            && let Some(&id) = self.idempotency.get(k)
        {
            self.counters.idempotent_hits += 1;
            let committed = self.committed.is_some_and(|c| id <= c);
            return Ok(PublishOutcome {
                id,
                duplicate: true,
                committed,
            });
        }
        let id = self.ids.next(wall_ms);
        let event = Arc::new(Event {
            id,
            target: req.target,
            event_type: req.event_type,
            data: req.data,
        });
        let frame = frame::encode_event(&event);
        if let Some(k) = &key {
            self.remember_key(k.clone(), id);
        }
        self.pending.push_back(Pending {
            entry: Arc::new(Entry {
                event: event.clone(),
                frame,
            }),
            key: key.clone(),
        });
        self.counters.published += 1;
        self.outputs.push_back(Output::Append(event, key));
        Ok(PublishOutcome {
            id,
            duplicate: false,
            committed: false,
        })
    }

    /// The log made every event up to `up_to` durable: deliver them, in id order.
    pub fn handle_committed(&mut self, up_to: EventId, now: Instant) {
        while self
            .pending
            .front()
            .is_some_and(|p| p.entry.event.id <= up_to)
        {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.commit_entry(p.entry, now);
        }
    }

    /// Makes `entry` the last committed event and delivers it.
    fn commit_entry(&mut self, entry: Arc<Entry>, now: Instant) {
        self.committed = Some(entry.event.id);
        // The first event of an empty log is its oldest until retention's next pass says
        // otherwise, so a `herald.reset` before that pass names it.
        self.log.oldest.get_or_insert(entry.event.id);
        self.counters.committed += 1;
        self.remember_recent(entry.clone());
        let recipients = self.deliver(&entry, now);
        if !self.admins.is_empty() {
            let published = self.published_info(&entry.event, recipients);
            self.emit_admin(AdminEvent::Published(published), now);
        }
    }

    /// A publish that the driver appends to a shared log itself (cluster mode, see
    /// [`Engine::handle_replicated`]): checked like [`Engine::handle_publish`] and counted,
    /// but given no id here; the log assigns it.
    pub fn handle_shared_publish(&mut self, req: &PublishRequest) -> Result<(), PublishError> {
        req.validate()?;
        self.counters.published += 1;
        Ok(())
    }

    /// Events committed by a shared log that assigns ids itself (cluster mode: a Redis
    /// stream that several servers append to), in the log's order: deliver them like
    /// committed publishes. Events at or below the last committed id are skipped, so a
    /// reader that re-reads after reconnecting to the log causes no duplicates.
    ///
    /// A driver uses either this or [`Engine::handle_publish`], never both: publishes then
    /// go straight to the shared log (after [`Engine::handle_shared_publish`]), and come
    /// back here with their ids on every server, the publishing one included.
    pub fn handle_replicated(&mut self, events: impl IntoIterator<Item = Event>, now: Instant) {
        for event in events {
            if self.committed.is_some_and(|c| event.id <= c) {
                continue;
            }
            self.ids.observe(event.id);
            let frame = frame::encode_event(&event);
            let entry = Arc::new(Entry {
                event: Arc::new(event),
                frame,
            });
            self.commit_entry(entry, now);
        }
    }

    /// The shared log removed events above the last committed id before this server read
    /// them (its reader was cut off from the log for longer than retention keeps events):
    /// none of its subscribers got them. Every subscriber is closed, so that it resumes with
    /// its last id and hears, from the log's floor, that it missed events (`herald.reset`).
    /// Admin streams stay open.
    pub fn handle_log_gap(&mut self, now: Instant) {
        let subscribers: Vec<ConnId> = self
            .by_id
            .iter()
            .filter(|&(_, &slot)| !self.admins.contains(&slot))
            .map(|(&id, _)| id)
            .collect();
        for id in subscribers {
            self.close(id, CloseReason::LogGap, now);
        }
    }

    /// Remembers idempotency keys the log kept (ascending ids, as read back at start-up), so
    /// that a publish retried across a restart is answered with its original id. Keys of
    /// events above the last committed id, or of invalid length, are ignored.
    pub fn restore_idempotency_keys(&mut self, keys: impl IntoIterator<Item = (EventId, String)>) {
        for (id, key) in keys {
            // A scoped key: the publisher, a NUL, the key.
            let valid = !key.is_empty() && key.len() <= MAX_NAME_LEN + 1 + MAX_IDEMPOTENCY_KEY_LEN;
            if valid && self.committed.is_some_and(|c| id <= c) {
                self.remember_key(Arc::from(key), id);
            }
        }
    }

    /// The log could not append these events: they are dropped (never delivered) and their
    /// idempotency keys forgotten, so a retry publishes afresh.
    pub fn handle_append_failed(&mut self, ids: &[EventId]) {
        let failed: BTreeSet<EventId> = ids.iter().copied().collect();
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for p in self.pending.drain(..) {
            if failed.contains(&p.entry.event.id) {
                if let Some(k) = &p.key {
                    self.idempotency.remove(k);
                }
            } else {
                kept.push_back(p);
            }
        }
        self.pending = kept;
    }

    /// The log's answer to an [`Output::LoadHistory`] for `conn`.
    pub fn handle_history(&mut self, conn: ConnId, page: HistoryPage, now: Instant) {
        let Some(&slot) = self.by_id.get(&conn) else {
            return;
        };
        let Some(c) = self.slots[slot as usize].as_mut() else {
            return;
        };
        let Some(replay) = c.replay.as_mut() else {
            return;
        };
        if !replay.awaiting {
            return;
        }
        replay.awaiting = false;
        // Retention may have removed events the replay had not read yet, when it started or
        // at any page since (the driver hands over the log's bounds as read after the page):
        // the page cannot hold them, so the client must hear that it missed some. What the
        // replay still holds above `through` (live events) was not missed.
        let through = replay.through;
        let cut = replay
            .read_from
            .zip(self.log.floor)
            .filter(|&(read_from, floor)| read_from < floor)
            .map(|(read_from, floor)| (read_from, floor.min(through)));
        let read_from_before = replay.read_from;
        // Events at or below the reset's position are not sent after it (the client's ids
        // only rise): a page read as retention passed may still hold some.
        let mut read_to = match cut {
            Some((_, to)) => {
                c.cursor = c.cursor.max(Some(to));
                Some(to)
            }
            None => replay.read_from,
        };
        let mut frames = Vec::with_capacity(page.events.len());
        for event in &page.events {
            let in_range = read_to.is_none_or(|r| event.id > r) && event.id <= through;
            if !in_range {
                continue;
            }
            read_to = Some(event.id);
            if c.cursor.is_none_or(|cur| event.id > cur) && c.meta.sub.matches(event) {
                frames.push((event.id, frame::encode_event(event)));
            }
        }
        // A read that stopped at its budget continues past what it looked at, matched or not.
        if let Some(looked) = page.read_through
            && read_to.is_none_or(|r| looked > r)
        {
            read_to = Some(looked.min(through));
        }
        // A page cut short by a limit continues where it stopped; one that made no progress
        // ends the range rather than asking forever.
        let done =
            !page.more || read_to.is_none_or(|r| r >= through) || read_to == read_from_before;
        if let Some(replay) = c.replay.as_mut() {
            replay.read_from = if done { Some(through) } else { read_to };
        }
        if let Some((last, to)) = cut {
            self.send_reset(slot, "history_truncated", last, to, now);
        }
        self.send_page(slot, frames, now);
        // The next page comes from the log, after the driver has paced it against the
        // connection's queue (a page from the window now would go out unpaced).
        self.replay_step(slot, now, false);
    }

    /// The log could not answer a history read for `conn`: it is closed, and retries by
    /// reconnecting (skipping the history would lose events).
    pub fn handle_history_failed(&mut self, conn: ConnId, now: Instant) {
        self.close(conn, CloseReason::LogUnavailable, now);
    }

    /// The log cannot read the rest of `conn`'s replay, for good (its records are damaged):
    /// rather than have it reconnect and fail again for ever, it is told with a
    /// `herald.reset` (`history_unreadable`) that moves it past the range, and goes on live.
    pub fn handle_history_unreadable(&mut self, conn: ConnId, now: Instant) {
        let Some(&slot) = self.by_id.get(&conn) else {
            return;
        };
        let Some(replay) = self.slots[slot as usize]
            .as_mut()
            .and_then(|c| c.replay.as_mut())
            .filter(|r| r.awaiting)
        else {
            return;
        };
        replay.awaiting = false;
        let through = replay.through;
        let last = replay.read_from.unwrap_or(EventId::MIN);
        replay.read_from = Some(through);
        self.send_reset(slot, "history_unreadable", last, through, now);
        self.replay_step(slot, now, false);
    }

    /// The log's retention moved (or at start-up): used to decide resets and for stats.
    pub fn handle_log_bounds(&mut self, bounds: LogBounds) {
        self.log = bounds;
    }

    /// The driver refused a subscriber before it got here (in a cluster, its user's streams
    /// on the other instances reach the limit): counted with the engine's own refusals.
    pub fn handle_refused(&mut self) {
        self.counters.refused += 1;
    }

    /// The driver measured its publish and delivery latency: shown in the stats from now on.
    pub fn handle_latency(&mut self, latency: crate::admin::Latency) {
        self.latency = latency;
    }

    /// Runs the coarse timer: keep-alives, expired credentials, the admin stats sample.
    /// Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + self.config.tick;
        // A keep-alive also carries the commit point as the stream's id. A connection that is
        // not replaying has been sent every matching event up to it, so resuming from there
        // misses nothing; and a quiet subscription's resume point keeps up with the log
        // instead of falling behind its retention (which would earn it a needless reset).
        let keepalive = frame::encode_comment(&self.keepalive);
        let checkpoint = self.committed.map(|id| {
            FrameBuilder::with_capacity(64)
                .comment(&self.keepalive)
                .id(id)
                .finish()
        });
        let mut expired = Vec::new();
        for slot in 0..self.slots.len() {
            let Some(c) = self.slots[slot].as_ref() else {
                continue;
            };
            if c.meta.expires_at.is_some_and(|at| at <= now) {
                expired.push(c.id);
            } else if now.saturating_duration_since(c.last_write) >= self.config.keepalive {
                self.counters.keepalives += 1;
                let frame = match (&checkpoint, &c.replay, c.meta.admin) {
                    (Some(checkpoint), None, false) => checkpoint.clone(),
                    _ => keepalive.clone(),
                };
                self.send(slot as u32, frame, now);
            }
        }
        for id in expired {
            self.close(id, CloseReason::TokenExpired, now);
        }
        if !self.admins.is_empty() {
            let stats = self.stats(now);
            self.emit_admin(AdminEvent::Stats(stats), now);
        }
    }

    /// Counters, ids and log bounds, as sent on the admin stream.
    pub fn stats(&self, now: Instant) -> Stats {
        Stats {
            uptime_ms: millis(now.saturating_duration_since(self.started_at)),
            counters: self.counters,
            last_id: self.ids.last().map(|i| i.to_string()),
            committed_id: self.committed.map(|i| i.to_string()),
            pending: self.pending.len() as u64,
            topics: (self.topics.len() + self.prefixes.len()) as u64,
            log: self.log,
            transports: self.transports,
            latency: self.latency,
        }
    }

    /// Everything an operator sees: stats, connections (in id order) and topics.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            stats: self.stats(now),
            connections: self.connections(&ConnectionQuery::default(), now),
            topics: self.topic_infos(),
        }
    }

    /// The rows `query` asks for, in id order.
    pub fn connections(&self, query: &ConnectionQuery, now: Instant) -> Vec<ConnectionInfo> {
        let limit = query.limit.unwrap_or(usize::MAX);
        // The slots the filters leave (`None`: no filter, every connection).
        let mut slots: Option<BTreeSet<u32>> = query.topic.as_ref().map(|topic| {
            // Those an event to the topic reaches, as `deliver` finds them.
            let exact = self.topics.get(topic).map(|ix| &ix.slots);
            let patterns = pattern_prefixes(topic)
                .filter(|_| !topic.is_system())
                .filter_map(|p| self.prefixes.get(p).map(|ix| &ix.slots));
            exact
                .into_iter()
                .chain(patterns)
                .flatten()
                .copied()
                .collect()
        });
        if let Some(user) = &query.user {
            let own = self.users.get(user);
            slots = Some(match (slots, own) {
                (_, None) => BTreeSet::new(),
                (Some(reached), Some(own)) => reached.intersection(own).copied().collect(),
                (None, Some(own)) => own.clone(),
            });
        }
        let Some(slots) = slots else {
            let after = query.after.map_or(Bound::Unbounded, Bound::Excluded);
            return self
                .by_id
                .range((after, Bound::Unbounded))
                .filter_map(|(_, &slot)| self.connection_info(slot, now))
                .take(limit)
                .collect();
        };
        let mut rows: Vec<(ConnId, u32)> = slots
            .into_iter()
            .filter_map(|slot| Some((self.slots.get(slot as usize)?.as_ref()?.id, slot)))
            .filter(|(id, _)| query.after.is_none_or(|after| *id > after))
            .collect();
        rows.sort_unstable_by_key(|&(id, _)| id);
        rows.into_iter()
            .filter_map(|(_, slot)| self.connection_info(slot, now))
            .take(limit)
            .collect()
    }

    /// Every topic and pattern with subscribers, by name.
    pub fn topic_infos(&self) -> Vec<TopicInfo> {
        let mut topics: Vec<TopicInfo> = self
            .topics
            .iter()
            .map(|(t, e)| TopicInfo {
                topic: t.to_string(),
                subscribers: e.slots.len() as u64,
                events: e.events,
            })
            .chain(self.prefixes.iter().map(|(p, e)| TopicInfo {
                topic: format!("{p}*"),
                subscribers: e.slots.len() as u64,
                events: e.events,
            }))
            .collect();
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        topics
    }

    /// One connection's row, if it is open.
    pub fn connection(&self, conn: ConnId, now: Instant) -> Option<ConnectionInfo> {
        self.by_id
            .get(&conn)
            .and_then(|&slot| self.connection_info(slot, now))
    }

    fn connection_info(&self, slot: u32, now: Instant) -> Option<ConnectionInfo> {
        let c = self.slots.get(slot as usize)?.as_ref()?;
        Some(ConnectionInfo {
            id: c.id,
            user: c.meta.sub.user.as_ref().map(|u| u.to_string()),
            topics: if c.meta.admin {
                vec![crate::topic::ADMIN_TOPIC.to_owned()]
            } else {
                c.meta.sub.patterns.iter().map(|p| p.to_string()).collect()
            },
            remote: c.meta.remote.clone(),
            protocol: Some(c.meta.protocol),
            tls: c.meta.tls,
            connected_ms: millis(now.saturating_duration_since(c.meta.connected_at)),
            events_sent: c.events_sent,
            bytes_sent: c.bytes_sent,
            last_id: c.cursor.map(|i| i.to_string()),
            replaying: c.replay.is_some(),
            admin: c.meta.admin,
            queued_bytes: 0,
            queued_ms: 0,
        })
    }

    fn resume(&mut self, slot: u32, last: EventId, now: Instant) {
        // `EventId::MIN` is the position before every event (the checkpoint of an empty log),
        // never one from the future.
        if last > self.ids.last().unwrap_or(EventId::MIN) {
            // An id from the future: a wiped data directory or another deployment. Tell the
            // client, and move its cursor to where this log stands.
            let to = self.committed.unwrap_or(EventId::MIN);
            self.send_reset(slot, "unknown_last_event_id", last, to, now);
            return;
        }
        let mut after = Some(last);
        if let Some(floor) = self.log.floor.filter(|&floor| last < floor) {
            self.send_reset(slot, "history_truncated", last, floor, now);
            // Replay what the log still holds: everything above the floor. Not "from the
            // start": the recent window can still hold trimmed events, even `last` itself.
            after = Some(floor);
        }
        let Some(through) = self.committed else {
            return;
        };
        if after.is_some_and(|a| a >= through) {
            return;
        }
        if let Some(c) = self.slots[slot as usize].as_mut() {
            c.cursor = after;
            c.replay = Some(Box::new(Replay {
                read_from: after,
                through,
                held: Vec::new(),
                held_bytes: 0,
                overflowed: false,
                awaiting: false,
            }));
        }
        self.replay_step(slot, now, true);
    }

    /// Advances a replay as far as it can without the log: serves the range's first page from
    /// the recent window (`window`: at the start of the replay, when the connection's queue
    /// is empty), asks the log for the rest, and when the range is done releases the held
    /// live events (or, if they overflowed, replays them from the log too).
    fn replay_step(&mut self, slot: u32, now: Instant, window: bool) {
        loop {
            let Some(c) = self.slots[slot as usize].as_mut() else {
                return;
            };
            let Some(replay) = c.replay.as_mut() else {
                return;
            };
            if replay.awaiting {
                return;
            }
            let through = replay.through;
            let read_from = replay.read_from;
            if read_from.is_some_and(|r| r >= through) {
                if replay.overflowed {
                    // Held events were dropped: replay up to the current commit point instead.
                    let Some(committed) = self.committed else {
                        return;
                    };
                    replay.overflowed = false;
                    replay.held.clear();
                    replay.held_bytes = 0;
                    replay.through = committed;
                    continue;
                }
                let held = std::mem::take(&mut replay.held);
                c.replay = None;
                for entry in held {
                    self.send_event(slot, entry.event.id, entry.frame.clone(), false, now);
                }
                return;
            }
            let window_covers = match (self.recent_floor, read_from) {
                (None, None) => true,
                (Some(_), None) => false,
                (floor, Some(r)) => {
                    floor.is_none_or(|floor| r >= floor) && window_knows(&self.recent, floor, r)
                }
            };
            if !window || !window_covers {
                replay.awaiting = true;
                self.load_history(slot, read_from, through);
                return;
            }
            // Serve one page from the window; what does not fit continues from the log so
            // the driver can pace it against the connection's queue.
            let start = self
                .recent
                .partition_point(|e| read_from.is_some_and(|r| e.event.id <= r));
            let mut budget = self.config.history_page_bytes;
            let mut read_to = read_from;
            let mut frames = Vec::new();
            let mut exhausted = true;
            for entry in self.recent.range(start..) {
                if entry.event.id > through {
                    break;
                }
                if budget == 0 {
                    exhausted = false;
                    break;
                }
                read_to = Some(entry.event.id);
                if c.meta.sub.matches(&entry.event) {
                    budget = budget.saturating_sub(entry.frame.len());
                    frames.push(entry.clone());
                }
            }
            replay.read_from = if exhausted { Some(through) } else { read_to };
            // What does not fit continues from the log (the window may have moved by then).
            replay.awaiting = !exhausted;
            for entry in frames {
                self.send_event(slot, entry.event.id, entry.frame.clone(), true, now);
            }
            if !exhausted {
                self.load_history(slot, read_to, through);
                return;
            }
        }
    }

    /// Asks the driver for the page of history after `after` for the connection in `slot`.
    fn load_history(&mut self, slot: u32, after: Option<EventId>, through: EventId) {
        let Some(c) = self.slots[slot as usize].as_ref() else {
            return;
        };
        let req = HistoryRequest {
            conn: c.id,
            after,
            through,
            subscription: c.meta.sub.clone(),
            max_events: self.config.history_page_events,
            max_bytes: self.config.history_page_bytes,
        };
        self.outputs.push_back(Output::LoadHistory(Box::new(req)));
    }

    /// Hands a committed event to every connection it is for; returns how many got it live.
    fn deliver(&mut self, entry: &Arc<Entry>, now: Instant) -> u64 {
        let event = &entry.event;
        // Each connection's cursor only rises, so a connection reached twice (two matching
        // topics, a topic and its user) takes the event once.
        let mut fanout = Fanout {
            slots: &mut self.slots,
            counters: &mut self.counters,
            outputs: &mut self.outputs,
            held_limit: self.config.held_bytes,
            entry,
            now,
            recipients: 0,
        };
        if event.target.broadcast {
            fanout.offer_all(&self.everyone);
            return fanout.recipients;
        }
        for topic in &event.target.topics {
            if let Some(ix) = self.topics.get_mut(topic) {
                ix.events += 1;
                fanout.offer_all(&ix.slots);
            }
            if self.prefixes.is_empty() || topic.is_system() {
                continue;
            }
            for prefix in pattern_prefixes(topic) {
                if let Some(ix) = self.prefixes.get_mut(prefix) {
                    ix.events += 1;
                    fanout.offer_all(&ix.slots);
                }
            }
        }
        for user in &event.target.users {
            if let Some(slots) = self.users.get(user) {
                fanout.offer_all(slots);
            }
        }
        fanout.recipients
    }

    fn send_event(&mut self, slot: u32, id: EventId, frame: Bytes, replayed: bool, now: Instant) {
        let Some(c) = self.slots[slot as usize].as_mut() else {
            return;
        };
        if take_event(c, &mut self.counters, id, replayed) {
            self.send(slot, frame, now);
        }
    }

    /// [`Engine::send_event`] for a page of replayed events read from the log, sent as one
    /// frame: the frames are the page's own (no other connection shares them), and queued one
    /// by one each would cost the connection's queue an allocation and a slot more than its
    /// bytes (a stalled resuming client held about 5 times its queue's count in memory).
    fn send_page(&mut self, slot: u32, frames: Vec<(EventId, Bytes)>, now: Instant) {
        let Some(c) = self.slots[slot as usize].as_mut() else {
            return;
        };
        let mut page = bytes::BytesMut::with_capacity(frames.iter().map(|(_, f)| f.len()).sum());
        for (id, frame) in frames {
            if take_event(c, &mut self.counters, id, true) {
                page.extend_from_slice(&frame);
            }
        }
        if !page.is_empty() {
            self.send(slot, page.freeze(), now);
        }
    }

    /// Tells the client in `slot`, which resumed from `last`, that it missed events
    /// (`herald.reset` with `reason`), moves its resume point to `to`, and counts it.
    fn send_reset(&mut self, slot: u32, reason: &str, last: EventId, to: EventId, now: Instant) {
        let frame = reset_frame(reason, last, self.log.oldest, to);
        self.counters.resets += 1;
        self.send(slot, frame, now);
    }

    fn send(&mut self, slot: u32, frame: Bytes, now: Instant) {
        let Some(c) = self.slots[slot as usize].as_mut() else {
            return;
        };
        c.bytes_sent += frame.len() as u64;
        c.last_write = now;
        self.outputs.push_back(Output::Send { conn: c.id, frame });
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason, now: Instant) -> bool {
        let Some(c) = self.remove(conn) else {
            return false;
        };
        self.outputs.push_back(Output::Close { conn, reason });
        self.emit_admin(
            AdminEvent::Disconnected(Disconnected {
                id: conn,
                reason: reason.as_str().into(),
                events_sent: c.events_sent,
            }),
            now,
        );
        true
    }

    fn remove(&mut self, conn: ConnId) -> Option<Conn> {
        let slot = self.by_id.remove(&conn)?;
        let c = self.slots[slot as usize].take()?;
        self.free_slots.push(slot);
        self.everyone.remove(&slot);
        self.admins.remove(&slot);
        for pattern in &c.meta.sub.patterns {
            match pattern {
                TopicPattern::Exact(t) => remove_from_index(&mut self.topics, t, slot),
                TopicPattern::Prefix(p) => remove_from_index(&mut self.prefixes, p, slot),
            }
        }
        if let Some(user) = &c.meta.sub.user
            && let Some(slots) = self.users.get_mut(user)
        {
            slots.remove(&slot);
            if slots.is_empty() {
                self.users.remove(user);
            }
        }
        self.count_connections();
        if !c.meta.admin {
            let open = self.transports.count_mut(c.meta.protocol, c.meta.tls);
            *open = open.saturating_sub(1);
        }
        Some(c)
    }

    /// Subscribers and admin streams open now, apart: the operator's own consoles are not
    /// browsers, and the connection cap does not count them either.
    fn count_connections(&mut self) {
        let admins = self.admins.len();
        self.counters.connections = (self.by_id.len() - admins) as u64;
        self.counters.admin_streams = admins as u64;
    }

    fn remember_recent(&mut self, entry: Arc<Entry>) {
        self.recent_bytes += entry.frame.len();
        self.recent.push_back(entry);
        while self.recent.len() > self.config.recent_events
            || (self.recent_bytes > self.config.recent_bytes && self.recent.len() > 1)
        {
            let Some(old) = self.recent.pop_front() else {
                break;
            };
            self.recent_bytes -= old.frame.len();
            self.recent_floor = Some(old.event.id);
        }
    }

    fn remember_key(&mut self, key: Arc<str>, id: EventId) {
        self.idempotency.insert(key.clone(), id);
        self.idempotency_order.push_back(key);
        while self.idempotency_order.len() > self.config.idempotency_keys {
            if let Some(old) = self.idempotency_order.pop_front() {
                self.idempotency.remove(&old);
            }
        }
    }

    fn published_info(&self, event: &Event, recipients: u64) -> Published {
        let mut end = self.config.admin_preview_bytes.min(event.data.len());
        while !event.data.is_char_boundary(end) {
            end -= 1;
        }
        Published {
            id: event.id.to_string(),
            topics: event.target.topics.iter().map(|t| t.to_string()).collect(),
            users: event.target.users.iter().map(|u| u.to_string()).collect(),
            broadcast: event.target.broadcast,
            event_type: event.event_type.as_ref().map(|t| t.to_string()),
            preview: event.data[..end].to_owned(),
            recipients,
        }
    }

    fn emit_admin(&mut self, event: AdminEvent, now: Instant) {
        if self.admins.is_empty() {
            return;
        }
        let event_type = EventType::from_static(event.name());
        let frame = frame::encode_ephemeral(&event_type, &event.data_json());
        let admins: Vec<u32> = self.admins.iter().copied().collect();
        for slot in admins {
            self.send(slot, frame.clone(), now);
        }
    }
}

/// One committed event on its way to connections: the parts of the engine fan-out writes,
/// borrowed apart from the index being iterated.
struct Fanout<'a> {
    slots: &'a mut [Option<Conn>],
    counters: &'a mut Counters,
    outputs: &'a mut VecDeque<Output>,
    held_limit: usize,
    entry: &'a Arc<Entry>,
    now: Instant,
    /// Connections that got it live.
    recipients: u64,
}

impl Fanout<'_> {
    fn offer_all<'s>(&mut self, slots: impl IntoIterator<Item = &'s u32>) {
        for &slot in slots {
            self.offer(slot);
        }
    }

    /// Offers the event to the connection in `slot`: sent, held (it is replaying), or
    /// skipped (it already has it).
    #[inline]
    fn offer(&mut self, slot: u32) {
        let Some(c) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let entry = self.entry;
        let id = entry.event.id;
        if c.cursor.is_some_and(|cur| id <= cur) {
            return;
        }
        if let Some(replay) = c.replay.as_mut() {
            if id <= replay.through || replay.overflowed {
                // The history read covers it, or the log will.
                return;
            }
            if replay.held.last().is_some_and(|h| h.event.id >= id) {
                return;
            }
            if replay.held_bytes + entry.frame.len() > self.held_limit {
                replay.overflowed = true;
                replay.held.clear();
                replay.held_bytes = 0;
                return;
            }
            replay.held_bytes += entry.frame.len();
            replay.held.push(entry.clone());
            return;
        }
        c.cursor = Some(id);
        c.events_sent += 1;
        c.bytes_sent += entry.frame.len() as u64;
        c.last_write = self.now;
        self.counters.delivered += 1;
        self.recipients += 1;
        self.outputs.push_back(Output::Send {
            conn: c.id,
            frame: entry.frame.clone(),
        });
    }
}

/// The keys in `prefixes` whose patterns match `topic`: `""` (`*`), then the name up to and
/// including each `/` (`a/`, `a/b/` for `a/b/c`).
fn pattern_prefixes(topic: &Topic) -> impl Iterator<Item = &str> {
    let name = topic.as_str();
    std::iter::once(0)
        .chain(name.match_indices('/').map(|(i, _)| i + 1))
        .map(move |cut| &name[..cut])
}

fn remove_from_index<K, Q>(index: &mut BTreeMap<K, IndexEntry>, key: &Q, slot: u32)
where
    K: std::borrow::Borrow<Q> + Ord,
    Q: Ord + ?Sized,
{
    if let Some(entry) = index.get_mut(key) {
        entry.slots.remove(&slot);
        if entry.slots.is_empty() {
            index.remove(key);
        }
    }
}

/// Counts event `id` as sent to connection `c` and moves its cursor, unless the connection
/// already has it (its cursor is at or past `id`); true if it is to be sent.
fn take_event(c: &mut Conn, counters: &mut Counters, id: EventId, replayed: bool) -> bool {
    if c.cursor.is_some_and(|cur| id <= cur) {
        return false;
    }
    c.cursor = Some(id);
    c.events_sent += 1;
    counters.delivered += 1;
    if replayed {
        counters.replayed += 1;
    }
    true
}

fn reset_type() -> EventType {
    EventType::from_static(RESET_EVENT)
}

/// Whether `r` is a position the recent window (`recent`, above `floor`) knows: one of its
/// events, its floor, or (with no floor: it holds the whole history) a position before all
/// of them. Any other id within its range is one this server never had, such as events a
/// shared log lost before this server read them: whether the client missed something is
/// then for the log to say, with its floor, not for the window.
fn window_knows(recent: &VecDeque<Arc<Entry>>, floor: Option<EventId>, r: EventId) -> bool {
    if floor == Some(r) {
        return true;
    }
    let at = recent.partition_point(|e| e.event.id < r);
    recent.get(at).is_some_and(|e| e.event.id == r) || (floor.is_none() && at == 0)
}

/// A `herald.reset` notice for a client that resumed from `last`. Its id moves the client's
/// resume point to `to`, past what it cannot get back, so that a reconnect before its next
/// event is not told the same thing again.
fn reset_frame(reason: &str, last: EventId, oldest: Option<EventId>, to: EventId) -> Bytes {
    let data = serde_json::json!({
        "reason": reason,
        "last_event_id": last.to_string(),
        "oldest_id": oldest.map(|o| o.to_string()),
    })
    .to_string();
    FrameBuilder::with_capacity(data.len() + 64)
        .id(to)
        .event_type(&reset_type())
        .data(&data)
        .finish()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
