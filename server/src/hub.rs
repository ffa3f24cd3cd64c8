//! The hub: the one task that owns the engine and performs its outputs.
//!
//! Everything else talks to it through [`Hub`] (commands over a channel). After every input
//! it drains the engine's outputs: frames go to per-connection [`Queue`]s, appends to the
//! group committer, history reads to a blocking task whose answer comes back as a command.
//! In cluster mode ([`Store::Shared`]) publishes go to the shared stream instead, and the
//! events come back, with every other instance's, from the stream's reader.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_core::{
    CloseReason, ConnId, ConnectError, ConnectRequest, Engine, EventId, HistoryPage, LogBounds,
    Output, PublishError, PublishRequest, Snapshot, Stats, frame,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::cluster::{Publisher, Reader, Tail};
use crate::log::{AppendLog, CommitReport, EventLog, GroupCommitter, LogMetrics, RedisLog};
use crate::sse::{Push, Queue, SseBody};

/// Tunables of the driver (the engine has its own).
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Most bytes queued for one connection before it counts as a slow consumer.
    pub queue_bytes: usize,
    /// Base of the `retry:` sent when the server refuses or ends a stream; jitter is added.
    pub retry_ms: u64,
    /// How long a history read waits for its connection's queue to drain.
    pub history_drain_wait: Duration,
    /// Cluster mode: how long a client resuming from an id this instance has not read yet
    /// waits for the stream's reader to catch up, before it is told the id is unknown.
    pub catch_up_wait: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            queue_bytes: 4 << 20,
            retry_ms: 3_000,
            history_drain_wait: Duration::from_secs(30),
            catch_up_wait: Duration::from_secs(2),
        }
    }
}

/// Why a publish was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishFailure {
    /// The request itself was refused by the engine.
    #[error(transparent)]
    Rejected(#[from] PublishError),
    /// The log could not store it.
    #[error("the event log could not store the event: {0}")]
    Log(String),
    /// The shared log (cluster mode) could not be reached; retrying later may work.
    #[error("the shared event log is unavailable: {0}")]
    Unavailable(String),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Where published events are stored.
pub enum Store {
    /// The embedded log: the engine mints ids and a group committer appends.
    Local(Arc<dyn AppendLog>),
    /// Cluster mode: a Redis stream shared with other instances, which assigns the ids.
    Shared(Arc<RedisLog>),
}

impl Store {
    /// The read side, for history, bounds and retention.
    pub fn log(&self) -> Arc<dyn EventLog> {
        match self {
            Self::Local(log) => log.clone(),
            Self::Shared(log) => log.clone(),
        }
    }
}

/// How the hub's publishes reach the store.
enum Appender {
    Committer(GroupCommitter),
    Cluster {
        publisher: Publisher,
        reader: Reader,
    },
}

type ConnectReply = oneshot::Sender<Result<Subscriber, ConnectError>>;

/// A cluster-mode connect that resumes from an id the stream's reader has not reached yet.
struct Deferred {
    /// When the hub took it.
    asked: std::time::Instant,
    until: Instant,
    req: ConnectRequest,
    snapshot: bool,
    reply: ConnectReply,
}

/// A subscriber's side of a new connection.
#[derive(Debug)]
pub struct Subscriber {
    /// Its id.
    pub conn: ConnId,
    /// The response body streaming its queue.
    pub body: SseBody,
}

/// A subscriber waiting to be registered.
#[derive(Debug)]
struct PendingConnect {
    req: ConnectRequest,
    snapshot: bool,
    reply: ConnectReply,
}

/// Why a history read failed: `corrupt` when the records are damaged, so that no retry would
/// read them (anything else, the subscriber reconnects and the read is tried again).
#[derive(Debug)]
struct ReadFailure {
    error: String,
    corrupt: bool,
}

/// The connection rows a snapshot holds.
#[derive(Clone, Debug)]
pub enum Rows {
    /// Every connection (and the topics).
    All,
    /// Those the query asks for (no topics).
    Matching(herald_core::ConnectionQuery),
    /// This one, if it is open.
    One(ConnId),
    /// None (the topics only).
    None,
}

enum Command {
    /// Subscribers to register, in the order they asked.
    Connect(Vec<PendingConnect>),
    Disconnect(ConnId),
    Publish {
        req: PublishRequest,
        reply: oneshot::Sender<Result<EventId, PublishFailure>>,
    },
    Commit(CommitReport),
    Replicated(Tail),
    History {
        conn: ConnId,
        page: Result<HistoryPage, ReadFailure>,
    },
    Snapshot {
        rows: Rows,
        reply: oneshot::Sender<Snapshot>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
    Kick {
        conn: ConnId,
        reply: oneshot::Sender<bool>,
    },
    Bounds(LogBounds),
    Refused,
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// The cheap, cloneable way to reach the hub from anywhere (bodies use it on drop).
#[derive(Clone, Debug)]
pub struct HubSender(mpsc::UnboundedSender<Command>);

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl HubSender {
    /// Reports that a subscriber's body was dropped (the client went away).
    pub fn disconnected(&self, conn: ConnId) {
        let _ = self.0.send(Command::Disconnect(conn));
    }

    /// A subscriber was refused before it reached the engine (its user's streams across a
    /// cluster): counted with the engine's own refusals.
    pub fn refused(&self) {
        let _ = self.0.send(Command::Refused);
    }

    /// Reports the log's bounds after a retention step.
    pub fn log_bounds(&self, bounds: LogBounds) {
        let _ = self.0.send(Command::Bounds(bounds));
    }

    /// A sender with no hub behind it: what it reports goes nowhere (for unit tests).
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Self(mpsc::unbounded_channel().0)
    }
}

/// A handle to the running hub.
#[derive(Clone, Debug)]
pub struct Hub {
    tx: HubSender,
    log_metrics: Arc<LogMetrics>,
    /// Connects on their way to the hub together (see [`Hub::connect`]).
    connects: Arc<std::sync::Mutex<Vec<PendingConnect>>>,
}

/// The hub is gone (the server is stopping).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the server is shutting down")]
pub struct HubGone;

/// Why the hub is not healthy ([`Hub::health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    /// Its task has ended: the server is stopping, or the task failed.
    #[error("the event hub has stopped")]
    Stopped,
    /// It did not answer within the bound: it is stuck, or far behind.
    #[error("the event hub did not answer within {0:?}")]
    Stuck(Duration),
}

impl Hub {
    /// Starts the hub task: `engine` seeded from the store's last id. With [`Store::Local`]
    /// appends go through a group committer; with [`Store::Shared`] through the cluster
    /// publisher, and a reader tails the stream from the engine's last committed id.
    pub fn start(
        engine: Engine,
        store: Store,
        config: HubConfig,
    ) -> (Hub, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sender = HubSender(tx);
        let log = store.log();
        let appender = match store {
            Store::Local(log) => {
                let commit_tx = sender.clone();
                Appender::Committer(GroupCommitter::start(log, move |report| {
                    let _ = commit_tx.0.send(Command::Commit(report));
                }))
            }
            Store::Shared(log) => {
                let read_tx = sender.clone();
                let reader = Reader::start(log.clone(), engine.committed_id(), move |tail| {
                    let _ = read_tx.0.send(Command::Replicated(tail));
                });
                Appender::Cluster {
                    publisher: Publisher::start(log),
                    reader,
                }
            }
        };
        let log_metrics = match &appender {
            Appender::Committer(committer) => committer.metrics(),
            Appender::Cluster { publisher, .. } => publisher.metrics(),
        };
        let driver = Driver {
            engine,
            log,
            appender: Some(appender),
            config,
            queues: HashMap::new(),
            waiters: BTreeMap::new(),
            deferred: Vec::new(),
            sender: sender.clone(),
            shutting_down: false,
            shutdown_reply: None,
            latency: crate::latency::Window::new(std::time::Instant::now()),
            slow: (0, crate::Throttle::default()),
            unread_logged: crate::Throttle::default(),
        };
        let task = tokio::spawn(driver.run(rx));
        (
            Hub {
                tx: sender,
                log_metrics,
                connects: Arc::default(),
            },
            task,
        )
    }

    /// The appender's figures (group committer or cluster publisher), for `/metrics`.
    pub fn log_metrics(&self) -> Arc<LogMetrics> {
        self.log_metrics.clone()
    }

    /// The sender bodies and background tasks use.
    pub fn sender(&self) -> HubSender {
        self.tx.clone()
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, HubGone> {
        let (reply, rx) = oneshot::channel();
        self.tx.0.send(make(reply)).map_err(|_| HubGone)?;
        rx.await.map_err(|_| HubGone)
    }

    /// Opens a subscription; with `snapshot`, the stream starts with a `snapshot` admin event.
    pub async fn connect(
        &self,
        req: ConnectRequest,
        snapshot: bool,
    ) -> Result<Result<Subscriber, ConnectError>, HubGone> {
        let (reply, rx) = oneshot::channel();
        let first = {
            let mut pending = crate::lock(&self.connects);
            pending.push(PendingConnect {
                req,
                snapshot,
                reply,
            });
            pending.len() == 1
        };
        if first {
            // The connects that are ready on this thread go together: the hub's thread wakes
            // (and takes the core from this one) once for all of them rather than once each.
            // In a burst of 10,000 connects that is a third as many wake-ups, and about 1 µs
            // less server CPU per connection (BENCHMARKS.md).
            let pending = self.connects.clone();
            let tx = self.tx.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                let batch = std::mem::take(&mut *crate::lock(&pending));
                let _ = tx.0.send(Command::Connect(batch));
            });
        }
        rx.await.map_err(|_| HubGone)
    }

    /// Publishes and waits until the event is durable.
    pub async fn publish(&self, req: PublishRequest) -> Result<EventId, PublishFailure> {
        self.ask(|reply| Command::Publish { req, reply })
            .await
            .map_err(|_| PublishFailure::ShuttingDown)?
    }

    /// What an operator sees: the stats, and the connection `rows` asked for with their
    /// queues, or the topics when no rows are (one row has no use for them).
    pub async fn snapshot(&self, rows: Rows) -> Result<Snapshot, HubGone> {
        self.ask(|reply| Command::Snapshot { rows, reply }).await
    }

    /// Counters and ids.
    pub async fn stats(&self) -> Result<Stats, HubGone> {
        self.ask(|reply| Command::Stats { reply }).await
    }

    /// Whether the hub answers, within `bound`: its stats if it does.
    pub async fn health(&self, bound: Duration) -> Result<Stats, Unhealthy> {
        match tokio::time::timeout(bound, self.stats()).await {
            Ok(Ok(stats)) => Ok(stats),
            Ok(Err(HubGone)) => Err(Unhealthy::Stopped),
            Err(_) => Err(Unhealthy::Stuck(bound)),
        }
    }

    /// Disconnects a connection; false if there is none with that id.
    pub async fn kick(&self, conn: ConnId) -> Result<bool, HubGone> {
        self.ask(|reply| Command::Kick { conn, reply }).await
    }

    /// Ends every stream (with a jittered `retry:`), flushes the log and stops the hub.
    pub async fn shutdown(&self) -> Result<(), HubGone> {
        self.ask(|reply| Command::Shutdown { reply }).await
    }
}

struct Driver {
    engine: Engine,
    log: Arc<dyn EventLog>,
    appender: Option<Appender>,
    config: HubConfig,
    queues: HashMap<ConnId, Arc<Queue>>,
    waiters: BTreeMap<EventId, Vec<oneshot::Sender<Result<EventId, PublishFailure>>>>,
    deferred: Vec<Deferred>,
    sender: HubSender,
    shutting_down: bool,
    shutdown_reply: Option<oneshot::Sender<()>>,
    /// The recent publish and delivery latency, for the stats samples.
    latency: crate::latency::Window,
    /// Subscribers closed as too slow since the last line that said so, and when that was.
    slow: (u64, crate::Throttle),
    /// When a resume from an id not read yet was last turned away in the log.
    unread_logged: crate::Throttle,
}

/// How often subscribers closed as too slow are logged at most (see `Driver::tell_slow`).
const SLOW_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// How often resumes turned away for an id not read yet are logged at most.
const UNREAD_LOGGED_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Unix milliseconds now: ids are minted from it, retention's age and a cluster publish's
/// lowest id are measured against it. 0 if the clock reads before 1970 (which disables
/// trimming by age rather than trimming everything).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A `retry:` delay with jitter, so that clients told to come back do not all return at once.
pub fn jittered_retry(base_ms: u64, salt: u64) -> u64 {
    // No RNG needed: mix the salt (connection id, time) into a spread of +0..100% of base.
    let mut x = salt ^ wall_ms().rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    base_ms + x % base_ms.max(1)
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        self.serve(&mut rx).await;
        self.finish(&mut rx);
    }

    /// Flushes the log, delivers what the final flush made durable, then ends every stream
    /// and answers every publisher still waiting: those whose events were made durable get
    /// their ids (and their subscribers had the events before their streams ended), the rest
    /// an error.
    fn finish(&mut self, rx: &mut mpsc::UnboundedReceiver<Command>) {
        self.shutting_down = true;
        // Blocking here is deliberate: the hub runs on the control runtime's one thread
        // (where `block_in_place` is not allowed), nothing is left for it to serve, and the
        // appender's last reports arrive through the channel drained below.
        match self.appender.take() {
            Some(Appender::Committer(committer)) => committer.shutdown(),
            Some(Appender::Cluster { publisher, reader }) => {
                publisher.shutdown();
                reader.shutdown();
            }
            None => {}
        }
        // Their replies are dropped: those clients hear that the server is stopping.
        self.deferred.clear();
        while let Ok(cmd) = rx.try_recv() {
            if let Command::Commit(_) | Command::Replicated(_) = cmd {
                self.handle(cmd);
            }
        }
        // Only now: a stream ended before the last commits would not have had them.
        self.engine.handle_shutdown(std::time::Instant::now());
        self.drain();
        for (_, replies) in std::mem::take(&mut self.waiters) {
            for reply in replies {
                let _ = reply.send(Err(PublishFailure::ShuttingDown));
            }
        }
        if let Some(reply) = self.shutdown_reply.take() {
            let _ = reply.send(());
        }
    }

    async fn serve(&mut self, rx: &mut mpsc::UnboundedReceiver<Command>) {
        loop {
            // The engine's next tick, or sooner a deferred resume's wait ending, so that wait
            // is what `catch_up_wait` says and not rounded up to the next tick.
            let deadline = self
                .engine
                .poll_timeout()
                .map(Instant::from_std)
                .into_iter()
                .chain(self.deferred.iter().map(|d| d.until))
                .min();
            tokio::select! {
                biased;
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    if self.handle(cmd) {
                        break;
                    }
                    // Take what else is waiting before yielding: bursts cost one wake-up.
                    let mut stop = false;
                    for _ in 0..1024 {
                        match rx.try_recv() {
                            Ok(cmd) => {
                                if self.handle(cmd) {
                                    stop = true;
                                    break;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    if stop {
                        break;
                    }
                }
                _ = sleep_until(deadline) => {
                    // Cheap (counters and one B-tree descent, or a cached copy): keeps stats
                    // and reset decisions current between retention steps.
                    self.engine.handle_log_bounds(self.log.bounds());
                    let now = std::time::Instant::now();
                    if let Some(latency) =
                        self.latency.update(now, crate::latency::LatencyCounts::now)
                    {
                        self.engine.handle_latency(latency);
                    }
                    self.engine.handle_timeout(now);
                    self.drain();
                    self.connect_deferred(false);
                }
            }
        }
    }

    /// Handles one command; true when the hub must stop.
    fn handle(&mut self, cmd: Command) -> bool {
        let now = std::time::Instant::now();
        match cmd {
            Command::Connect(batch) => {
                for PendingConnect {
                    req,
                    snapshot,
                    reply,
                } in batch
                {
                    let seen = self.engine.last_id().unwrap_or(EventId::MIN);
                    let unread = req.last_id.is_some_and(|last| last > seen);
                    let room = self.deferred.len() < self.engine.config().max_connections;
                    if unread && room && matches!(self.appender, Some(Appender::Cluster { .. })) {
                        // Another instance gave the client an id this one's reader has not
                        // reached yet (they are milliseconds apart): wait for it rather than
                        // call the id unknown.
                        self.deferred.push(Deferred {
                            asked: now,
                            until: Instant::now() + self.config.catch_up_wait,
                            req,
                            snapshot,
                            reply,
                        });
                        continue;
                    }
                    self.connect(req, snapshot, reply, now);
                }
            }
            Command::Disconnect(conn) => {
                if self.queues.remove(&conn).is_some() {
                    tracing::debug!(%conn, "disconnected");
                }
                self.engine.handle_disconnect(conn, now);
            }
            Command::Publish { req, reply } => {
                if self.shutting_down {
                    let _ = reply.send(Err(PublishFailure::ShuttingDown));
                    return false;
                }
                if let Some(Appender::Cluster { publisher, .. }) = &self.appender {
                    match self.engine.handle_shared_publish(&req) {
                        Ok(()) => publisher.publish(req, reply),
                        Err(e) => {
                            let _ = reply.send(Err(e.into()));
                        }
                    }
                    return false;
                }
                match self.engine.handle_publish(req, wall_ms(), now) {
                    Ok(out) if out.committed => {
                        let _ = reply.send(Ok(out.id));
                    }
                    Ok(out) => self.waiters.entry(out.id).or_default().push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Commit(CommitReport::Committed { up_to, .. }) => {
                self.engine.handle_committed(up_to, now);
                let later = self.waiters.split_off(&up_to.successor());
                for (id, replies) in std::mem::replace(&mut self.waiters, later) {
                    for reply in replies {
                        let _ = reply.send(Ok(id));
                    }
                }
            }
            Command::Replicated(Tail::Events(events)) => {
                self.engine.handle_replicated(events, now);
                self.drain();
                self.connect_deferred(true);
            }
            Command::Replicated(Tail::Bounds(bounds)) => self.engine.handle_log_bounds(bounds),
            Command::Replicated(Tail::Gap(bounds)) => {
                // The floor that revealed the gap must be the engine's too, so the clients'
                // resumes are told what they missed.
                self.engine.handle_log_bounds(bounds);
                self.engine.handle_log_gap(now);
            }
            Command::Commit(CommitReport::Failed { ids, error }) => {
                tracing::warn!(count = ids.len(), %error, "log append failed");
                self.engine.handle_append_failed(&ids);
                for id in ids {
                    for reply in self.waiters.remove(&id).unwrap_or_default() {
                        let _ = reply.send(Err(PublishFailure::Log(error.clone())));
                    }
                }
            }
            Command::History {
                conn,
                page: Ok(page),
            } => self.engine.handle_history(conn, page, now),
            Command::History {
                conn,
                page: Err(ReadFailure { error, corrupt }),
            } => {
                if corrupt {
                    tracing::error!(%conn, %error, "history cannot be read (damaged records); telling the subscriber it missed them");
                    self.engine.handle_history_unreadable(conn, now);
                } else {
                    tracing::warn!(%conn, %error, "history read failed; closing the connection so it retries");
                    self.engine.handle_history_failed(conn, now);
                }
            }
            Command::Snapshot { rows, reply } => {
                let _ = reply.send(self.snapshot(now, rows));
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.engine.stats(now));
            }
            Command::Kick { conn, reply } => {
                let _ = reply.send(self.engine.handle_kick(conn, now));
            }
            Command::Bounds(bounds) => self.engine.handle_log_bounds(bounds),
            Command::Refused => self.engine.handle_refused(),
            Command::Shutdown { reply } => {
                // Publishes are refused from here; `finish` ends the streams once the log
                // has committed (and they have been sent) what it was given before.
                self.shutting_down = true;
                self.shutdown_reply = Some(reply);
                return true;
            }
        }
        self.drain();
        false
    }

    fn connect(
        &mut self,
        req: ConnectRequest,
        snapshot: bool,
        reply: ConnectReply,
        now: std::time::Instant,
    ) {
        let result = self.engine.handle_connect(req, now);
        // An admin stream opens with a snapshot of every connection (about 250 bytes each),
        // which may be larger than a subscriber's whole queue: its queue holds the snapshot
        // on top of the usual limit, so what follows it is not refused as too slow.
        let opening = match &result {
            Ok(_) if snapshot => serde_json::to_string(&self.snapshot(now, Rows::All))
                .ok()
                .zip(herald_core::EventType::new("snapshot").ok())
                .map(|(json, kind)| frame::encode_ephemeral(&kind, &json)),
            _ => None,
        };
        let result = result.map(|conn| {
            let allowance = opening.as_ref().map_or(0, |s| s.len());
            let limit = self.config.queue_bytes + allowance;
            let queue = Arc::new(if snapshot {
                Queue::unmeasured(limit)
            } else {
                Queue::new(limit)
            });
            // The snapshot goes in before the connect's own outputs are drained, so it is the
            // stream's first event (ahead of the `connected` event for this very stream).
            if let Some(opening) = opening {
                queue.push(opening, now);
            }
            self.queues.insert(conn, queue.clone());
            tracing::debug!(%conn, "connected");
            Subscriber {
                conn,
                body: SseBody::new(conn, queue, self.sender.clone()),
            }
        });
        self.drain();
        let _ = reply.send(result);
    }

    /// Connects the deferred clients whose ids the reader has now reached, and (unless
    /// `caught_up_only`) those that waited long enough: the engine then tells them their id
    /// is unknown.
    fn connect_deferred(&mut self, caught_up_only: bool) {
        if self.deferred.is_empty() {
            return;
        }
        let seen = self.engine.last_id().unwrap_or(EventId::MIN);
        let now = Instant::now();
        let (ready, waiting): (Vec<Deferred>, Vec<Deferred>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|d| {
                let caught_up = d.req.last_id.is_some_and(|last| last <= seen);
                caught_up || (!caught_up_only && d.until <= now)
            });
        self.deferred = waiting;
        for d in ready {
            let now = std::time::Instant::now();
            if let (Some(last), Some(Appender::Cluster { reader, .. })) =
                (d.req.last_id.filter(|&last| last > seen), &self.appender)
                && !reader.read_to_the_end_since(d.asked)
            {
                // Not read yet, and the stream has not been read to its end since the
                // client asked: Redis is out of reach or this instance is behind, and the id
                // may well be in the stream. Calling it unknown would move the client back
                // to this instance's position, to be sent again what it already has.
                if self.unread_logged.due(UNREAD_LOGGED_EVERY) {
                    tracing::warn!(
                        last = %last,
                        read = %seen,
                        "a client resumed from an id this instance has not read, and it could \
                         not read the shared stream to its end meanwhile: told to come back \
                         (logged at most once each 10 s)"
                    );
                }
                let _ = d.reply.send(Err(ConnectError::ResumePointUnread { last }));
                continue;
            }
            self.connect(d.req, d.snapshot, d.reply, now);
        }
    }

    fn snapshot(&self, now: std::time::Instant, rows: Rows) -> Snapshot {
        // Rows are what costs (10,000 connections take milliseconds of this thread): build
        // only those asked for.
        let mut snap = match rows {
            Rows::All => self.engine.snapshot(now),
            Rows::Matching(query) => Snapshot {
                stats: self.engine.stats(now),
                connections: self.engine.connections(&query, now),
                topics: Vec::new(),
            },
            Rows::One(conn) => Snapshot {
                stats: self.engine.stats(now),
                connections: self.engine.connection(conn, now).into_iter().collect(),
                topics: Vec::new(),
            },
            Rows::None => Snapshot {
                stats: self.engine.stats(now),
                connections: Vec::new(),
                topics: self.engine.topic_infos(),
            },
        };
        for row in &mut snap.connections {
            if let Some(q) = self.queues.get(&row.id) {
                let (bytes, since) = q.waiting();
                row.queued_bytes = bytes as u64;
                row.queued_ms = since.map_or(0, |t| {
                    u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)
                });
            }
        }
        snap
    }

    /// Logs subscribers closed as too slow: the first at once, then at most one line each
    /// [`SLOW_LOG_EVERY`] counting them (thousands can fall behind at once, e.g. when a
    /// network link slows). The count is also `herald_slow_consumer_closes_total`.
    fn tell_slow(&mut self, conn: ConnId, now: std::time::Instant) {
        self.slow.0 += 1;
        if !self.slow.1.due(SLOW_LOG_EVERY) {
            return tracing::debug!(%conn, "slow consumer");
        }
        let closed = std::mem::take(&mut self.slow.0);
        let who = self.engine.connection(conn, now);
        tracing::info!(
            closed,
            %conn,
            user = who.as_ref().and_then(|c| c.user.as_deref()).unwrap_or("-"),
            remote = who.as_ref().and_then(|c| c.remote.as_deref()).unwrap_or("-"),
            "closing subscribers that do not read fast enough (more than --queue-bytes queued); they reconnect and replay from the log"
        );
    }

    fn drain(&mut self) {
        let now = std::time::Instant::now();
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Send { conn, frame } => {
                    let Some(queue) = self.queues.get(&conn) else {
                        continue;
                    };
                    if queue.push(frame, now) == Push::Overflow {
                        self.tell_slow(conn, now);
                        self.engine.handle_queue_overflow(conn, now);
                    }
                }
                Output::Close { conn, reason } => {
                    let Some(queue) = self.queues.remove(&conn) else {
                        continue;
                    };
                    tracing::debug!(%conn, reason = reason.as_str(), "closing");
                    match reason {
                        CloseReason::SlowConsumer => queue.abort(),
                        _ => {
                            let retry = jittered_retry(self.config.retry_ms, conn.0);
                            queue.close(Some(reason.notice(retry)));
                        }
                    }
                }
                Output::Append(event, key) => match &self.appender {
                    Some(Appender::Committer(c)) => c.append(event, key),
                    // The shared store's appends go through the publisher, never the engine.
                    Some(Appender::Cluster { .. }) | None => {
                        self.engine.handle_append_failed(&[event.id]);
                    }
                },
                Output::LoadHistory(req) => {
                    let Some(queue) = self.queues.get(&req.conn).cloned() else {
                        continue;
                    };
                    let log = self.log.clone();
                    let sender = self.sender.clone();
                    let limit = self.config.queue_bytes / 2;
                    let wait = self.config.history_drain_wait;
                    tokio::spawn(async move {
                        // Pace the replay against the client: read the next page only once
                        // the previous one has mostly been written.
                        let started = Instant::now();
                        while queue.queued_bytes() > limit
                            && !queue.is_closed()
                            && started.elapsed() < wait
                        {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        if queue.is_closed() {
                            return;
                        }
                        let conn = req.conn;
                        let read = tokio::task::spawn_blocking(move || {
                            let page = log.read(&req);
                            // Read after the page: a floor that rose before the read shows
                            // here, so the engine can tell the client what it missed.
                            (page, log.bounds())
                        })
                        .await;
                        let page = match read {
                            Ok((page, bounds)) => {
                                let _ = sender.0.send(Command::Bounds(bounds));
                                page.map_err(|e| ReadFailure {
                                    corrupt: e.is_corruption(),
                                    error: e.to_string(),
                                })
                            }
                            Err(e) => Err(ReadFailure {
                                error: e.to_string(),
                                corrupt: false,
                            }),
                        };
                        let _ = sender.0.send(Command::History { conn, page });
                    });
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogError;
    use herald_core::{EngineConfig, Event, Target};

    /// A hub handle whose task is the returned receiver (or nothing, once it is dropped).
    fn detached() -> (Hub, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let hub = Hub {
            tx: HubSender(tx),
            log_metrics: Arc::default(),
            connects: Arc::default(),
        };
        (hub, rx)
    }

    #[tokio::test]
    async fn health_tells_a_stopped_hub_from_a_stuck_one_from_a_working_one() {
        let (hub, rx) = detached();
        drop(rx);
        let bound = Duration::from_millis(50);
        assert_eq!(hub.health(bound).await.unwrap_err(), Unhealthy::Stopped);

        let (hub, mut rx) = detached();
        assert_eq!(
            hub.health(bound).await.unwrap_err(),
            Unhealthy::Stuck(bound)
        );
        // The unanswered question is still queued: a stuck hub is not a stopped one.
        assert!(matches!(rx.try_recv(), Ok(Command::Stats { .. })));

        let answering = tokio::spawn(async move {
            if let Some(Command::Stats { reply }) = rx.recv().await {
                let _ = reply.send(Stats {
                    uptime_ms: 7,
                    ..Stats::default()
                });
            }
        });
        assert_eq!(hub.health(bound).await.unwrap().uptime_ms, 7);
        answering.await.unwrap();
    }

    /// A log that holds every append until it is opened, and keeps nothing.
    #[derive(Default)]
    struct GatedLog {
        open: std::sync::Mutex<bool>,
        opened: std::sync::Condvar,
    }

    impl GatedLog {
        fn open(&self) {
            *crate::lock(&self.open) = true;
            self.opened.notify_all();
        }
    }

    impl EventLog for GatedLog {
        fn read(&self, _: &herald_core::HistoryRequest) -> Result<HistoryPage, LogError> {
            Ok(HistoryPage::default())
        }
        fn last_id(&self) -> Option<EventId> {
            None
        }
        fn bounds(&self) -> LogBounds {
            LogBounds::default()
        }
        fn trim(&self, _: u64, _: usize) -> Result<crate::log::TrimReport, LogError> {
            Ok(crate::log::TrimReport::default())
        }
        fn corrupt_records(&self) -> u64 {
            0
        }
    }

    impl AppendLog for GatedLog {
        fn append(&self, _: &[Arc<Event>], _: &[(EventId, Arc<str>)]) -> Result<(), LogError> {
            let mut open = crate::lock(&self.open);
            while !*open {
                open = self.opened.wait(open).unwrap_or_else(|e| e.into_inner());
            }
            Ok(())
        }
        fn idempotency_keys(&self, _: usize) -> Result<Vec<(EventId, String)>, LogError> {
            Ok(Vec::new())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_shutdown_what_the_last_flush_commits_reaches_the_open_streams_before_they_end() {
        let log = Arc::new(GatedLog::default());
        let now = std::time::Instant::now();
        let engine = Engine::new(EngineConfig::default(), None, LogBounds::default(), now);
        let (hub, task) = Hub::start(engine, Store::Local(log.clone()), HubConfig::default());
        let topics = vec![herald_core::TopicPattern::parse("t").unwrap()];
        let mut sub = hub
            .connect(ConnectRequest::new(topics), false)
            .await
            .unwrap()
            .unwrap();

        // Published before the shutdown, durable only once the shutdown has begun.
        let target = Target {
            topics: vec![herald_core::Topic::new("t").unwrap()],
            users: Vec::new(),
            broadcast: false,
        };
        let publisher = hub.clone();
        let published = tokio::spawn(async move {
            publisher
                .publish(PublishRequest::new(target, "last words"))
                .await
        });
        let metrics = hub.log_metrics();
        while metrics.snapshot().enqueued == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stopper = hub.clone();
        let stopped = tokio::spawn(async move { stopper.shutdown().await });
        // Time for the hub to take the shutdown (an early opening would only hide the case).
        tokio::time::sleep(Duration::from_millis(200)).await;
        log.open();

        let id = published.await.unwrap().expect("acknowledged");
        stopped
            .await
            .unwrap()
            .expect("the hub answered the shutdown");
        let mut stream = Vec::new();
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), sub.body.next_chunk())
            .await
            .expect("the stream ends")
        {
            stream.extend_from_slice(&chunk);
        }
        let stream = String::from_utf8(stream).unwrap();
        let event = format!("id: {id}\ndata: last words\n\n");
        let at = stream.find(&event).unwrap_or_else(|| panic!("{stream:?}"));
        let end = &stream[at + event.len()..];
        assert!(
            end.starts_with("retry: ")
                && end.ends_with("event: herald.closed\ndata: {\"reason\":\"shutdown\"}\n\n"),
            "the event, then the end: {stream:?}"
        );
        task.await.unwrap();
    }
}
