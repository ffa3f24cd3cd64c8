//! Cluster mode: several `herald` instances share one Redis stream as their log.
//!
//! Every instance appends its publishes to the stream ([`Publisher`]), and every instance
//! tails the stream ([`Reader`]) and hands what it reads to its engine
//! (`Engine::handle_replicated`), the publishing instance included. Redis assigns the ids,
//! so all instances deliver the same events in the same order under the same ids, and a
//! browser can resume on any instance with the `Last-Event-ID` another one gave it. History
//! reads and retention go through [`crate::log::RedisLog`].
//!
//! Both run on their own threads with their own blocking connections, like the sled log's
//! committer: a slow Redis holds up publishes, never the hub.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::{Event, EventId, LogBounds, PublishRequest};
use tokio::sync::oneshot;

use crate::hub::PublishFailure;
use crate::lock;
use crate::log::{EventLog, LogMetrics, REDIS_COMMAND_TIMEOUT, RedisLog, codec};
use crate::redis::{Connection, RedisError, Value};
use crate::worker::{Batches, Looping, Stop, Worker};

/// Lua shared by the scripts below: `older(a, b)` compares two stream ids, and
/// `heal(stream, seen)` makes the stream remember what an instance has already read.
///
/// A Redis that restarted without persistence, or a replica promoted before it had the last
/// writes, holds a stream that ends before ids instances already delivered. Left alone,
/// Redis would go on from there: new ids could fall below delivered ones (if its clock is
/// behind) and be skipped, and a client resuming from before the lost events would get
/// what is left as if nothing were missing. `heal` moves the stream's last id up to `seen`
/// and records `seen` as its highest deleted id, so new ids come after it and such resumes
/// are told that events were lost (`herald.reset`), as after retention.
///
/// Instances read at their own pace, so the first to heal may have read less than another
/// (by the few events that were in flight), and new entries may follow before that other
/// one looks. It then finds the stream past `seen` but `seen` itself gone, although
/// retention did not remove it (the floor is below it): it raises the floor to `seen`, so
/// resumes from the events that only it had read are told too.
///
/// Returns 1 if it healed (else 0), and the stream's floor (its highest deleted id), last id
/// and count of entries ever added afterwards, read in the same `XINFO` that told whether to
/// heal.
macro_rules! heal_lua {
    () => {
        r"
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local function heal(stream, seen)
  local exists = redis.call('EXISTS', stream) == 1
  local top, floor, added = '0-0', '0-0', 0
  if exists then
    local info = redis.call('XINFO', 'STREAM', stream)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then top = info[i + 1] end
      if info[i] == 'max-deleted-entry-id' then floor = info[i + 1] end
      if info[i] == 'entries-added' then added = info[i + 1] end
    end
  end
  if seen == '0-0' then return 0, floor, top, added end
  if not older(top, seen) then
    if not older(floor, seen) or #redis.call('XRANGE', stream, seen, seen) > 0 then
      return 0, floor, top, added
    end
    redis.call('XSETID', stream, top, 'MAXDELETEDID', seen)
    return 1, seen, top, added
  end
  if exists then
    redis.call('XSETID', stream, seen, 'MAXDELETEDID', seen)
  else
    redis.call('XADD', stream, seen, 'e', '')
    redis.call('XDEL', stream, seen)
    added = 1
  end
  return 1, seen, seen, added
end
"
    };
}

/// Appends an event unless its idempotency key already published one; answers
/// `[id, duplicate]`. Redis runs it atomically, so two instances given the same key at once
/// publish once.
///
/// KEYS[1]: the stream. KEYS[2], when the publish has a key: where that key's event id is
/// kept. ARGV[1]: the event record. ARGV[2]: how long a key is remembered, in seconds.
/// ARGV[3]: the highest id this instance has read or been acknowledged (`0-0` for none): the
/// new id comes after it even if Redis lost the stream's end (see [`heal_lua`]). ARGV[4]:
/// this instance's clock, in unix milliseconds: the new id's milliseconds are at least that
/// (and at least the stream's last id's), not Redis's clock alone. After a loss, another instance may have read ids
/// above the healed `seen` without this one knowing; ids minted by a clock that has moved
/// on since still come after them when Redis's own clock is behind (a promoted replica on
/// another machine).
///
/// No `MAXLEN` here: trimming that way does not record what it removed, and resets need the
/// highest removed id, so retention deletes with `XDEL` ([`crate::log::RedisLog`]'s trim).
const APPEND_SCRIPT: &str = concat!(
    heal_lua!(),
    r"
if KEYS[2] then
  local seen = redis.call('GET', KEYS[2])
  if seen then return {seen, 1} end
end
local _, _, top = heal(KEYS[1], ARGV[3])
local ms = ARGV[4]
local top_ms = string.match(top, '^(%d+)-')
if tonumber(top_ms) > tonumber(ms) then ms = top_ms end
local id = redis.call('XADD', KEYS[1], ms .. '-*', 'e', ARGV[1])
if KEYS[2] then
  redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
end
return {id, 0}
"
);

/// The entries after an id (ARGV[1]: `(id`, or `-` for all; at most ARGV[2]) and, read in the
/// same atomic step, the highest id ever removed from the stream and how many entries it
/// was ever given: `[floor, entries, healed, added]`.
/// Retention removes the oldest entries first, so a floor above the last id read means
/// entries were removed before this reader saw them. ARGV[3]: the last id read (`0-0` for
/// none), or an id this instance's publisher was acknowledged since, if higher; if the stream
/// ends before it, it is healed first ([`heal_lua`]) and `healed` is 1.
const READ_SCRIPT: &str = concat!(
    heal_lua!(),
    r"
local healed, floor, _, added = heal(KEYS[1], ARGV[3])
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
return {floor, entries, healed, added}
"
);

/// Most publishes sent to Redis in one pipeline.
const MAX_BATCH: usize = 1_024;
/// How long one `XREAD` waits for new entries; also how quickly the reader notices a stop.
const READ_BLOCK: Duration = Duration::from_millis(250);
/// Entries taken per read: enough to amortise the round trip, few enough that a run of
/// large events stays a bounded reply.
const READ_COUNT: u64 = 256;
/// The longest an idempotency key is remembered (or `--retain-age`, if shorter): retries
/// come within minutes, and a key per publish for a week would be most of Redis's memory.
const MAX_KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How often the reader refreshes the shared log's cached bounds while events arrive.
const BOUNDS_REFRESH: Duration = Duration::from_secs(1);
/// The longest pause between attempts to reach Redis again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// After Redis lost events and the stream was healed where this instance stands, how long it
/// waits before delivering what follows. Another instance may have read further (the events
/// in flight when Redis lost them); within this time it has reconnected and looked (it tries
/// again at least every [`MAX_BACKOFF`]) and raised the floor to what it read. This instance
/// then sees the floor above its own position: a gap, so its subscribers are closed and told
/// on their resume, rather than going on past those events without a word.
const HEAL_GRACE: Duration = Duration::from_millis(2_500);

/// Where a publish's answer goes.
pub type PublishReply = oneshot::Sender<Result<EventId, PublishFailure>>;

struct Job {
    req: PublishRequest,
    reply: PublishReply,
}

/// Appends publishes to the shared stream from a dedicated thread, many per round trip.
pub struct Publisher {
    worker: Worker<Job>,
    metrics: Arc<LogMetrics>,
}

impl Publisher {
    /// Starts the appending thread; it connects to `log`'s Redis when the first publish
    /// comes, and again after a connection fails.
    ///
    /// # Panics
    /// If the OS cannot start a thread, like `std::thread::spawn`.
    pub fn start(log: Arc<RedisLog>) -> Self {
        let metrics = Arc::new(LogMetrics::default());
        let thread_metrics = Arc::clone(&metrics);
        let worker = Worker::start("herald-cluster-publish", move |incoming| {
            publish_loop(&log, &incoming, &thread_metrics);
        });
        Self { worker, metrics }
    }

    /// Queues a publish (already checked by `Engine::handle_shared_publish`); `reply` gets
    /// its id once Redis has it. Never blocks.
    pub fn publish(&self, req: PublishRequest, reply: PublishReply) {
        self.metrics.record_enqueued(1);
        if let Err(job) = self.worker.send(Job { req, reply }) {
            let _ = job.reply.send(Err(PublishFailure::ShuttingDown));
        }
    }

    /// The appender's counters, exported like the sled committer's.
    pub fn metrics(&self) -> Arc<LogMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Sends what is queued, answers those publishers, and stops the thread (also what
    /// dropping it does).
    pub fn shutdown(mut self) {
        self.worker.stop();
    }
}

fn publish_loop(log: &RedisLog, incoming: &Batches<Job>, metrics: &LogMetrics) {
    let mut script = Script::new(APPEND_SCRIPT);
    let ttl = log
        .retention()
        .max_age
        .min(MAX_KEY_TTL)
        .as_secs()
        .max(1)
        .to_string();
    let mut conn: Option<Connection> = None;
    let mut jobs = Vec::new();
    // While Redis is away every batch fails: one line each 10 s says so, with the count.
    let mut failures = (0u64, crate::Throttle::default());
    let mut tell = |what: &str, error: &dyn std::fmt::Display| {
        failures.0 += 1;
        if failures.1.due(FAILURES_LOGGED_EVERY) {
            tracing::warn!(
                %error,
                redis = %log.redis(),
                failures = failures.0,
                "{what} (failures are logged at most once each 10 s)"
            );
            failures.0 = 0;
        } else {
            tracing::debug!(%error, "{what}");
        }
    };
    while incoming.next(|job| {
        jobs.push(job);
        jobs.len() < MAX_BATCH
    }) {
        let mut commands = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        let seen = log.highest_seen().unwrap_or(EventId::MIN).to_string();
        let now = crate::hub::wall_ms().to_string();
        for Job { req, reply } in jobs.drain(..) {
            let key = req.scoped_key().map(|k| log.idempotency_key(&k));
            let event = Event {
                // The record leaves the id out: Redis assigns it.
                id: EventId::MIN,
                target: req.target,
                event_type: req.event_type,
                data: req.data,
            };
            match codec::encode_event(&event) {
                Ok(record) => {
                    // numkeys, KEYS, ARGV: what follows the SHA1 in EVALSHA.
                    let stream = log.stream_key().as_bytes().to_vec();
                    let mut args = match key {
                        Some(key) => vec![b"2".to_vec(), stream, key.into_bytes()],
                        None => vec![b"1".to_vec(), stream],
                    };
                    args.extend([
                        record,
                        ttl.as_bytes().to_vec(),
                        seen.as_bytes().to_vec(),
                        now.as_bytes().to_vec(),
                    ]);
                    commands.push(args);
                    replies.push(reply);
                }
                Err(error) => {
                    metrics.record_failed(1);
                    let _ = reply.send(Err(PublishFailure::Log(error.to_string())));
                }
            }
        }
        if commands.is_empty() {
            continue;
        }
        let started = Instant::now();
        let results = append_all(&mut conn, log, &mut script, &commands);
        let latency = started.elapsed();
        let (mut stored, mut failed) = (0u64, 0u64);
        match results {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let answer = result.and_then(|value| {
                        appended_id(&value).ok_or_else(|| {
                            format!("unexpected answer from the append script: {value:?}")
                        })
                    });
                    match answer {
                        Ok(id) => {
                            stored += 1;
                            log.record_seen(id);
                            let _ = reply.send(Ok(id));
                        }
                        Err(message) => {
                            failed += 1;
                            tell("Redis refused a publish", &message);
                            // A slot migration that outlasted the wait: the append did not
                            // run, and will once the migration is done.
                            let failure = if crate::redis::is_redirect(&message) {
                                PublishFailure::Unavailable(format!(
                                    "Redis Cluster is moving Herald's keys ({message}); \
                                     the event was not stored: retry"
                                ))
                            } else if crate::redis::is_transient(&message) {
                                PublishFailure::Unavailable(not_now(log, &message))
                            } else {
                                PublishFailure::Log(message)
                            };
                            let _ = reply.send(Err(failure));
                        }
                    }
                }
            }
            Err(error) => {
                tell("publishing to Redis failed", &error);
                if error.is_connection_error() {
                    conn = None;
                }
                let message = format!(
                    "Redis at {}: {error}; the event may or may not have been stored: \
                     retry with the same idempotency_key to publish it exactly once",
                    log.redis()
                );
                let failure = match &error {
                    _ if error.is_connection_error() => PublishFailure::Unavailable(message),
                    // Loading the script: nothing ran.
                    RedisError::Server(reply) if crate::redis::is_transient(reply) => {
                        PublishFailure::Unavailable(not_now(log, reply))
                    }
                    _ => PublishFailure::Log(message),
                };
                for reply in replies {
                    failed += 1;
                    let _ = reply.send(Err(failure.clone()));
                }
            }
        }
        if stored > 0 {
            metrics.record_committed(stored, latency);
        }
        if failed > 0 {
            metrics.record_failed(failed);
        }
    }
}

/// How often failed publishes are logged at most.
const FAILURES_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// The error for a publish Redis turned away for now ([`crate::redis::is_transient`]).
fn not_now(log: &RedisLog, reply: &str) -> String {
    format!(
        "the shared event log is unavailable: Redis at {} cannot take writes now ({reply}); \
         the event was not stored: retry with the same idempotency_key",
        log.redis()
    )
}

/// A Lua script run by its SHA1, loaded again when Redis has forgotten it.
struct Script {
    source: &'static str,
    sha: Option<Vec<u8>>,
}

impl Script {
    fn new(source: &'static str) -> Self {
        Self { source, sha: None }
    }

    fn load(&mut self, conn: &mut Connection) -> Result<Vec<u8>, RedisError> {
        let sha = conn.query(&[b"SCRIPT", b"LOAD", self.source.as_bytes()])?;
        let sha = sha
            .as_bytes()
            .ok_or_else(|| RedisError::Protocol("SCRIPT LOAD gave no SHA1".into()))?
            .to_vec();
        self.sha = Some(sha.clone());
        Ok(sha)
    }

    /// Runs it with `args` (numkeys, KEYS, ARGV), loading it first if Redis does not have it.
    fn run(&mut self, conn: &mut Connection, args: &[&[u8]]) -> Result<Value, RedisError> {
        let command: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        let mut results = self.run_all(conn, std::slice::from_ref(&command))?;
        match results.pop() {
            Some(result) => result.map_err(RedisError::Server),
            None => Err(RedisError::Protocol("no reply to EVALSHA".into())),
        }
    }

    /// Runs it once per entry of `commands` (numkeys, KEYS, ARGV), all in one pipeline; each
    /// result is the script's answer or Redis's error text.
    fn run_all(
        &mut self,
        conn: &mut Connection,
        commands: &[Vec<Vec<u8>>],
    ) -> Result<Vec<Result<Value, String>>, RedisError> {
        let sha = match &self.sha {
            Some(sha) => sha.clone(),
            None => self.load(conn)?,
        };
        let evalsha = |sha: &[u8], args: &Vec<Vec<u8>>| {
            let mut cmd = vec![b"EVALSHA".to_vec(), sha.to_vec()];
            cmd.extend(args.iter().cloned());
            cmd
        };
        let pipeline: Vec<Vec<Vec<u8>>> = commands.iter().map(|a| evalsha(&sha, a)).collect();
        let mut results = conn.pipeline(&pipeline)?;
        // A script cache flushed, a failover to a replica that never saw it, or a Redis
        // Cluster node that the slot is migrating to (`ASK`): NOSCRIPT means the command did
        // not run, so running it again cannot publish twice. EVAL with the source runs
        // wherever the keys are, and leaves the script cached there.
        let forgotten: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_ref().is_err_and(|e| e.starts_with("NOSCRIPT")))
            .map(|(i, _)| i)
            .collect();
        if !forgotten.is_empty() {
            let again: Vec<Vec<Vec<u8>>> = forgotten
                .iter()
                .map(|&i| {
                    let mut cmd = vec![b"EVAL".to_vec(), self.source.as_bytes().to_vec()];
                    cmd.extend(commands[i].iter().cloned());
                    cmd
                })
                .collect();
            for (i, result) in forgotten.into_iter().zip(conn.pipeline(&again)?) {
                results[i] = result;
            }
        }
        Ok(results)
    }
}

/// Runs the append script with every command's arguments on the publisher's connection,
/// opening it first if needed.
fn append_all(
    conn: &mut Option<Connection>,
    log: &RedisLog,
    script: &mut Script,
    commands: &[Vec<Vec<u8>>],
) -> Result<Vec<Result<Value, String>>, RedisError> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(Connection::open(log.redis(), REDIS_COMMAND_TIMEOUT)?),
    };
    script.run_all(c, commands)
}

/// The id in the append script's `[id, duplicate]` answer.
fn appended_id(value: &Value) -> Option<EventId> {
    match value {
        Value::Array(parts) => parts.first()?.as_str()?.parse().ok(),
        _ => None,
    }
}

/// What the [`Reader`] hands to the hub.
#[derive(Debug)]
pub enum Tail {
    /// New events, in stream order: `Engine::handle_replicated`.
    Events(Vec<Event>),
    /// Events above the last one read were removed before they were read (retention ran
    /// while this instance was cut off from Redis): `Engine::handle_log_bounds` with these
    /// fresh bounds, then `Engine::handle_log_gap`.
    Gap(LogBounds),
    /// The stream's floor rose to an id this instance had already passed (another instance
    /// found events it had read lost, see [`heal_lua`]): `Engine::handle_log_bounds`, so
    /// that resumes from below it are told at once, also from the recent window.
    Bounds(LogBounds),
}

/// Tails the shared stream on a dedicated thread and hands each batch of new events, in
/// stream order, to a callback.
pub struct Reader {
    thread: Looping,
    reached: Arc<Mutex<Option<Instant>>>,
}

impl Reader {
    /// Starts reading after `from` (the last id the engine was seeded with; `None` reads the
    /// stream from its start). `deliver` runs on the reader's thread: keep it short (send to
    /// the hub).
    ///
    /// # Panics
    /// If the OS cannot start a thread, like `std::thread::spawn`.
    pub fn start(
        log: Arc<RedisLog>,
        from: Option<EventId>,
        deliver: impl FnMut(Tail) + Send + 'static,
    ) -> Self {
        let reached = Arc::new(Mutex::new(None));
        let tail = reached.clone();
        let thread = Looping::start("herald-cluster-read", move |stop| {
            read_loop(&log, from, &stop, &tail, deliver);
        });
        Self { thread, reached }
    }

    /// Whether a read that began after `asked` went to the stream's end: then every event
    /// Redis had before `asked` has been read (and handed over). False while Redis cannot be
    /// read or the reader is behind, when an id this instance has not read may still be one
    /// the stream holds.
    pub fn read_to_the_end_since(&self, asked: Instant) -> bool {
        lock(&self.reached).is_some_and(|reached| reached > asked)
    }

    /// Stops the thread (within about a quarter of a second) and waits for it.
    pub fn shutdown(mut self) {
        self.thread.stop();
    }
}

fn read_loop(
    log: &RedisLog,
    mut last: Option<EventId>,
    stop: &Stop,
    reached: &Mutex<Option<Instant>>,
    mut deliver: impl FnMut(Tail),
) {
    if let Some(last) = last {
        log.record_seen(last);
    }
    let mut script = Script::new(READ_SCRIPT);
    let mut conn: Option<Connection> = None;
    let mut backoff = Duration::from_millis(100);
    let mut failing = false;
    let mut refreshed = Instant::now();
    let mut dirty = false;
    let mut floors = FloorWatch::default();
    while !stop.is_set() {
        if conn.is_none() {
            match open_reader(log) {
                Ok(c) => conn = Some(c),
                Err(error) => {
                    if !failing {
                        tracing::error!(%error, redis = %log.redis(), "cannot read the shared stream; retrying");
                    }
                    failing = true;
                    stop.sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let began = Instant::now();
        let step = read_step(c, log, &mut script, last);
        // A step that found fewer entries than it asked for read to the stream's end as it
        // stood after `began` (the script runs at once, before any wait for new entries).
        if let Ok(Step::Idle { .. })
        | Ok(Step::Read {
            read: 0..READ_COUNT,
            ..
        }) = &step
        {
            *lock(reached) = Some(began);
        }
        // Back once Redis answers a read, not when a connection opens: a Redis (or a proxy
        // in front of one) that takes connections and answers nothing is still failing.
        if step.is_ok() && failing {
            tracing::info!(redis = %log.redis(), "reading the shared stream again");
            failing = false;
            backoff = Duration::from_millis(100);
        }
        // Stats read the cached bounds: refresh them at most once a second after events
        // arrived (also on the idle step after a burst, so the last figures show).
        if dirty && refreshed.elapsed() >= BOUNDS_REFRESH {
            refreshed = Instant::now();
            dirty = false;
            if let Err(error) = log.refresh_bounds() {
                tracing::debug!(%error, "cannot refresh the shared log's bounds");
            }
        }
        if matches!(
            step,
            Ok(Step::Idle { healed: true, .. } | Step::Read { healed: true, .. })
        ) {
            tracing::warn!(last = ?last.map(|l| l.to_string()), "the shared stream lost events this instance already read (Redis restarted without persistence, a replica that lacked them took over, or Redis evicted the stream under maxmemory): its ids now continue after them, and clients resuming from before them are told they missed events");
            dirty = true;
        }
        if let Ok(step) = &step
            && floors.watch(step, last, log, &mut deliver)
        {
            tracing::info!(grace = ?HEAL_GRACE, "holding new events of the shared stream so that instances that read further can mark what was lost");
            stop.sleep(HEAL_GRACE);
            continue;
        }
        match step {
            Ok(Step::Idle { .. }) => {}
            Ok(Step::Read {
                events,
                read_to,
                gap,
                ..
            }) => {
                if gap {
                    tracing::warn!(last = ?last.map(|l| l.to_string()), "the shared log removed events before this instance read them; closing subscribers so they resume and are told");
                    match log.refresh_bounds() {
                        Ok(bounds) => deliver(Tail::Gap(bounds)),
                        // Without the new floor their resumes could not tell them: keep
                        // the batch for the next try.
                        Err(error) => {
                            tracing::warn!(%error, "cannot read the shared log's bounds");
                            stop.sleep(backoff);
                            continue;
                        }
                    }
                }
                last = read_to.or(last);
                if let Some(last) = last {
                    log.record_seen(last);
                }
                dirty = true;
                if !events.is_empty() {
                    deliver(Tail::Events(events));
                }
            }
            Err(error) => {
                if !failing {
                    tracing::error!(%error, redis = %log.redis(), "reading the shared stream failed; retrying");
                }
                failing = true;
                if error.is_connection_error() {
                    conn = None;
                }
                stop.sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// What the reader makes of the stream's floor at each step, besides gaps.
#[derive(Default)]
struct FloorWatch {
    /// The floor the previous step saw (`None` before the first step).
    before: Option<Option<EventId>>,
    /// How many entries the stream had ever been given at the previous step.
    added_before: Option<u64>,
}

impl FloorWatch {
    /// Use after each successful step, before handling its entries; `last` is the last id
    /// this instance has read. A floor that rose without passing `last` (passing it is a
    /// gap) becomes the engine's at once, not at the next once-a-second refresh: a resume
    /// from below it is then told, even when the recent window seems to cover it. Returns
    /// true when the floor just rose to exactly `last`: Redis lost events and the stream
    /// was healed here (by this instance's read or publish, or by one that stood at the
    /// same id), so what follows is held for [`HEAL_GRACE`]. Retention that removed every
    /// entry up to `last` raises the floor to it too; it is told apart by the stream's count
    /// of entries ever added, which only a loss sets back (a healed stream counts again from
    /// one).
    fn watch(
        &mut self,
        step: &Step,
        last: Option<EventId>,
        log: &RedisLog,
        deliver: &mut impl FnMut(Tail),
    ) -> bool {
        let (floor, gap, added, read) = match step {
            Step::Idle { floor, added, .. } => (*floor, false, *added, 0),
            Step::Read {
                floor,
                gap,
                added,
                read,
                ..
            } => (*floor, *gap, *added, *read),
        };
        if !gap && floor.is_some_and(|f| log.bounds().floor.is_none_or(|known| f > known)) {
            match log.refresh_bounds() {
                Ok(bounds) => deliver(Tail::Bounds(bounds)),
                Err(error) => tracing::debug!(%error, "cannot read the shared log's bounds"),
            }
        }
        // Every entry added since the previous step is read in this one (it comes after
        // `last`); a stream that has been given fewer than that lost some.
        let lost = match (self.added_before, added) {
            (Some(before), Some(now)) => now < before.saturating_add(read),
            _ => true,
        };
        let healed_here = last.is_some()
            && floor == last
            && self.before.is_some_and(|before| before < floor)
            && lost;
        self.before = Some(floor);
        self.added_before = added;
        healed_here
    }
}

/// What one [`read_step`] found.
enum Step {
    /// Nothing new within [`READ_BLOCK`] (after healing the stream when `healed`).
    Idle {
        /// The stream had forgotten events already read, and was healed.
        healed: bool,
        /// The highest id ever removed from the stream, if any.
        floor: Option<EventId>,
        /// How many entries the stream was ever given (Redis's `entries-added`).
        added: Option<u64>,
    },
    /// Entries after the last id read.
    Read {
        events: Vec<Event>,
        /// The last entry's id (decoded or not): where the next read starts.
        read_to: Option<EventId>,
        /// Entries after the last id read were removed before they could be read.
        gap: bool,
        /// The stream had forgotten events already read, and was healed.
        healed: bool,
        /// The highest id ever removed from the stream, if any.
        floor: Option<EventId>,
        /// How many entries the stream was ever given (Redis's `entries-added`).
        added: Option<u64>,
        /// How many entries this step read (decoded or not).
        read: u64,
    },
}

/// Reads the entries after `last` together with the stream's floor, in one atomic script,
/// so the floor says exactly whether anything between `last` and them was removed; when
/// there are none, waits up to [`READ_BLOCK`] for some with `XREAD BLOCK`.
fn read_step(
    conn: &mut Connection,
    log: &RedisLog,
    script: &mut Script,
    last: Option<EventId>,
) -> Result<Step, RedisError> {
    let from = match last {
        Some(last) => format!("({last}"),
        None => "-".to_owned(),
    };
    let stream = log.stream_key().as_bytes();
    // What this instance read, or its publisher was acknowledged and the reader has not
    // reached yet: if Redis lost that, it is healed past it (see `heal_lua`).
    let seen = log
        .highest_seen()
        .max(last)
        .unwrap_or(EventId::MIN)
        .to_string();
    let count = READ_COUNT.to_string();
    let reply = script.run(
        conn,
        &[
            b"1",
            stream,
            from.as_bytes(),
            count.as_bytes(),
            seen.as_bytes(),
        ],
    )?;
    let mut parts = reply.into_array().unwrap_or_default().into_iter();
    let floor = parts
        .next()
        .and_then(|f| f.as_str().and_then(|f| f.parse::<EventId>().ok()))
        .filter(|&floor| floor != EventId::MIN);
    let entries = parts.next().and_then(Value::into_array).unwrap_or_default();
    let healed = parts.next().and_then(|h| h.as_int()) == Some(1);
    let added = parts
        .next()
        .and_then(|a| a.as_int())
        .and_then(|a| u64::try_from(a).ok());
    if entries.is_empty() {
        let block = READ_BLOCK.as_millis().to_string();
        let after = last.unwrap_or(EventId::MIN).to_string();
        // Only a wake-up: the next step reads what arrived, with the floor.
        conn.query(&[
            b"XREAD",
            b"COUNT",
            b"1",
            b"BLOCK",
            block.as_bytes(),
            b"STREAMS",
            stream,
            after.as_bytes(),
        ])?;
        return Ok(Step::Idle {
            healed,
            floor,
            added,
        });
    }
    let gap = floor.is_some_and(|floor| last.is_none_or(|last| floor > last));
    let read = entries.len() as u64;
    let (events, read_to) = log.decode_entries(entries);
    Ok(Step::Read {
        events,
        read_to,
        gap,
        healed,
        floor,
        added,
        read,
    })
}

fn open_reader(log: &RedisLog) -> Result<Connection, RedisError> {
    let mut conn = Connection::open(log.redis(), REDIS_COMMAND_TIMEOUT)?;
    conn.set_read_timeout(Some(READ_BLOCK + REDIS_COMMAND_TIMEOUT))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::tests::{Cleanup, TIMEOUT, redis_or_skip, unique_key};

    fn xinfo_field(conn: &mut Connection, key: &str, field: &str) -> String {
        let info = conn.query(&[b"XINFO", b"STREAM", key.as_bytes()]).unwrap();
        let info = info.into_array().unwrap();
        let at = info.iter().position(|v| v.as_str() == Some(field)).unwrap();
        info[at + 1].as_str().unwrap().to_owned()
    }

    /// Runs the read script as a reader that has read to `seen`: `[floor, entries, healed]`.
    fn read_as(script: &mut Script, conn: &mut Connection, key: &str, seen: &str) -> Vec<Value> {
        let from = format!("({seen}");
        let args: [&[u8]; 5] = [
            b"1",
            key.as_bytes(),
            from.as_bytes(),
            b"10",
            seen.as_bytes(),
        ];
        script.run(conn, &args).unwrap().into_array().unwrap()
    }

    #[test]
    fn a_script_the_node_does_not_have_runs_from_its_source() {
        let Some(config) = redis_or_skip("a_script_the_node_does_not_have") else {
            return;
        };
        let key = unique_key("noscript");
        let _cleanup = Cleanup(&config, &key);
        let mut conn = Connection::open(&config, TIMEOUT).unwrap();
        // What a node sees that never loaded it (a flushed cache, a failover, the node a
        // migrating slot is asked at): EVALSHA answers NOSCRIPT, and nothing ran.
        let mut script = Script::new(READ_SCRIPT);
        script.sha = Some(b"0123456789abcdef0123456789abcdef01234567".to_vec());
        let args: [&[u8]; 5] = [b"1", key.as_bytes(), b"-", b"10", b"0-0"];
        let answer = script.run(&mut conn, &args).unwrap().into_array().unwrap();
        assert_eq!(answer.len(), 4, "{answer:?}");
    }

    #[test]
    fn a_stream_that_lost_its_end_is_healed_by_the_next_read_and_ids_go_on_after_it() {
        let Some(config) = redis_or_skip("a_stream_that_lost_its_end_is_healed") else {
            return;
        };
        let key = unique_key("heal");
        let _cleanup = Cleanup(&config, &key);
        let mut conn = Connection::open(&config, TIMEOUT).unwrap();
        // What a promoted replica holds: the stream up to 5-0, while instances read to 9-3.
        conn.query(&[b"XADD", key.as_bytes(), b"5-0", b"e", b"x"])
            .unwrap();
        let mut script = Script::new(READ_SCRIPT);
        let mut read = |seen: &str| read_as(&mut script, &mut conn, &key, seen);
        let answer = read("9-3");
        assert_eq!(answer[0].as_str(), Some("9-3"), "the floor: {answer:?}");
        assert_eq!(answer[2].as_int(), Some(1), "healed: {answer:?}");
        // Healing is done once; a reader that has read less changes nothing.
        assert_eq!(read("9-3")[2].as_int(), Some(0));
        assert_eq!(read("7-0")[2].as_int(), Some(0));
        assert_eq!(xinfo_field(&mut conn, &key, "last-generated-id"), "9-3");
        assert_eq!(xinfo_field(&mut conn, &key, "max-deleted-entry-id"), "9-3");
        let next = conn
            .query(&[b"XADD", key.as_bytes(), b"*", b"e", b"y"])
            .unwrap();
        let next: EventId = next.as_str().unwrap().parse().unwrap();
        assert!(next > EventId::new(9, 3), "{next}");
    }

    #[test]
    fn a_reader_that_read_past_a_lower_heal_raises_the_floor_to_what_it_read() {
        let Some(config) = redis_or_skip("a_reader_that_read_past_a_lower_heal") else {
            return;
        };
        let key = unique_key("heal-past");
        let _cleanup = Cleanup(&config, &key);
        let mut conn = Connection::open(&config, TIMEOUT).unwrap();
        // Redis came back empty; an instance that had read to 3-0 healed first, and a publish
        // followed (10-0). This reader had read to 7-0: 4-0 to 7-0 are lost too.
        let k = key.as_bytes();
        conn.query(&[b"XADD", k, b"3-0", b"e", b""]).unwrap();
        conn.query(&[b"XDEL", k, b"3-0"]).unwrap();
        conn.query(&[b"XADD", k, b"10-0", b"e", b"x"]).unwrap();
        let mut script = Script::new(READ_SCRIPT);
        let answer = read_as(&mut script, &mut conn, &key, "7-0");
        assert_eq!(answer[0].as_str(), Some("7-0"), "the floor: {answer:?}");
        assert_eq!(answer[2].as_int(), Some(1), "healed: {answer:?}");
        let entries = answer[1].clone().into_array().unwrap();
        assert_eq!(entries.len(), 1, "the new entry is still read: {answer:?}");
        assert_eq!(xinfo_field(&mut conn, &key, "last-generated-id"), "10-0");
        assert_eq!(xinfo_field(&mut conn, &key, "max-deleted-entry-id"), "7-0");
        // Once is enough, and readers at or below the floor, or at an entry that is still
        // there, change nothing.
        for seen in ["7-0", "3-0", "10-0"] {
            let answer = read_as(&mut script, &mut conn, &key, seen);
            assert_eq!(answer[2].as_int(), Some(0), "{seen}: {answer:?}");
        }
        assert_eq!(xinfo_field(&mut conn, &key, "max-deleted-entry-id"), "7-0");
    }

    #[test]
    fn a_reader_holds_after_a_loss_healed_where_it_stands_but_not_after_retention_took_all() {
        let Some(config) = redis_or_skip("a_reader_holds_after_a_loss") else {
            return;
        };
        let log = RedisLog::open(&crate::log::RedisLogConfig {
            redis: config.clone(),
            prefix: unique_key("floors"),
            retention: crate::log::Retention::default(),
        })
        .unwrap();
        let key = log.stream_key().to_owned();
        let _cleanup = Cleanup(&config, &key);
        let mut conn = Connection::open(&config, TIMEOUT).unwrap();
        let mut script = Script::new(READ_SCRIPT);
        let k = key.as_bytes();
        let last = Some(EventId::new(7, 0));
        let mut deliver = |_: Tail| {};
        let mut steps = |floors: &mut FloorWatch, conn: &mut Connection| {
            let step = read_step(conn, &log, &mut script, last).unwrap();
            floors.watch(&step, last, &log, &mut deliver)
        };
        let fill = |conn: &mut Connection| {
            conn.query(&[b"DEL", k]).unwrap();
            for id in ["5-0", "7-0"] {
                conn.query(&[b"XADD", k, id.as_bytes(), b"e", b"x"])
                    .unwrap();
            }
        };

        // Retention removes everything, the last entry read among it: the floor rises to it.
        fill(&mut conn);
        let mut floors = FloorWatch::default();
        assert!(!steps(&mut floors, &mut conn));
        conn.query(&[b"XDEL", k, b"5-0", b"7-0"]).unwrap();
        assert!(!steps(&mut floors, &mut conn), "retention is no loss");

        // Redis loses the stream, and another instance that had read to 7-0 too heals it.
        fill(&mut conn);
        let mut floors = FloorWatch::default();
        assert!(!steps(&mut floors, &mut conn));
        conn.query(&[b"DEL", k]).unwrap();
        let mut other = Script::new(READ_SCRIPT);
        assert_eq!(
            read_as(&mut other, &mut conn, &key, "7-0")[2].as_int(),
            Some(1)
        );
        assert!(
            steps(&mut floors, &mut conn),
            "a loss healed where it stands"
        );
    }

    #[test]
    fn an_event_acknowledged_but_not_yet_read_is_healed_past_when_redis_loses_it() {
        let Some(config) = redis_or_skip("an_event_acknowledged_but_not_yet_read") else {
            return;
        };
        let log = Arc::new(
            RedisLog::open(&crate::log::RedisLogConfig {
                redis: config.clone(),
                prefix: unique_key("acked"),
                retention: crate::log::Retention::default(),
            })
            .unwrap(),
        );
        let key = log.stream_key().to_owned();
        let _cleanup = Cleanup(&config, &key);
        let mut conn = Connection::open(&config, TIMEOUT).unwrap();
        // The reader stands at 7-0; the publisher is then acknowledged an event that no
        // reader reads before Redis loses it (a restart without persistence while readers
        // held new events after an earlier loss).
        conn.query(&[b"XADD", key.as_bytes(), b"7-0", b"e", b"x"])
            .unwrap();
        let last = Some(EventId::new(7, 0));
        log.record_seen(EventId::new(7, 0));
        let publisher = Publisher::start(Arc::clone(&log));
        let (reply, answer) = oneshot::channel();
        let everyone = herald_core::Target {
            broadcast: true,
            ..herald_core::Target::default()
        };
        let req = PublishRequest::new(everyone, "acknowledged");
        publisher.publish(req, reply);
        let acknowledged = answer.blocking_recv().unwrap().unwrap();
        publisher.shutdown();
        conn.query(&[b"DEL", key.as_bytes()]).unwrap();

        let mut script = Script::new(READ_SCRIPT);
        let step = read_step(&mut conn, &log, &mut script, last).unwrap();
        let Step::Idle { healed, floor, .. } = step else {
            panic!("nothing is left to read");
        };
        assert!(healed);
        assert_eq!(floor, Some(acknowledged), "resumes from before it are told");
        let mut told = Vec::new();
        let mut deliver = |tail: Tail| told.push(tail);
        let held = FloorWatch::default().watch(&step, last, &log, &mut deliver);
        assert!(
            !held,
            "the floor passed this reader: a gap, not a heal where it stands"
        );
        assert!(
            matches!(told.as_slice(), [Tail::Bounds(b)] if b.floor == Some(acknowledged)),
            "{told:?}"
        );
        assert_eq!(
            xinfo_field(&mut conn, &key, "last-generated-id"),
            acknowledged.to_string()
        );
    }

    #[test]
    fn what_retention_removed_is_not_taken_for_a_loss() {
        let Some(config) = redis_or_skip("what_retention_removed_is_not_a_loss") else {
            return;
        };
        let key = unique_key("heal-trim");
        let _cleanup = Cleanup(&config, &key);
        let mut conn = Connection::open(&config, TIMEOUT).unwrap();
        let k = key.as_bytes();
        for id in ["5-0", "7-0", "10-0"] {
            conn.query(&[b"XADD", k, id.as_bytes(), b"e", b"x"])
                .unwrap();
        }
        // Retention deletes the oldest entries, the last one this reader read among them.
        conn.query(&[b"XDEL", k, b"5-0", b"7-0"]).unwrap();
        let mut script = Script::new(READ_SCRIPT);
        for seen in ["7-0", "5-0", "10-0"] {
            let answer = read_as(&mut script, &mut conn, &key, seen);
            assert_eq!(answer[0].as_str(), Some("7-0"), "{seen}: {answer:?}");
            assert_eq!(answer[2].as_int(), Some(0), "{seen}: {answer:?}");
        }
        assert_eq!(xinfo_field(&mut conn, &key, "last-generated-id"), "10-0");
    }

    #[test]
    fn a_publish_takes_an_id_no_lower_than_its_instance_clock_nor_the_streams_last_id() {
        let Some(config) = redis_or_skip("a_publish_takes_an_id_no_lower_than") else {
            return;
        };
        let key = unique_key("append-clock");
        let _cleanup = Cleanup(&config, &key);
        let mut conn = Connection::open(&config, TIMEOUT).unwrap();
        let mut script = Script::new(APPEND_SCRIPT);
        let mut append = |seen: &str, now: &str| {
            let args: [&[u8]; 6] = [
                b"1",
                key.as_bytes(),
                b"record",
                b"60",
                seen.as_bytes(),
                now.as_bytes(),
            ];
            let answer = script.run(&mut conn, &args).unwrap();
            appended_id(&answer).unwrap().to_string()
        };
        // An empty Redis under an instance that had read to 9-3, with a clock at 8 ms: the
        // heal puts the stream at 9-3 and the id follows it.
        assert_eq!(append("9-3", "8"), "9-4");
        // Redis's clock (now) is far ahead of these ids, yet the instance's clock decides.
        assert_eq!(append("9-4", "1000"), "1000-0");
        // A clock behind the stream's last id: the stream's decides.
        assert_eq!(append("1000-0", "900"), "1000-1");
    }
}
