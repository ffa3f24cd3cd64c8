//! The shared log of cluster mode: one Redis stream that every `herald` instance appends to
//! and reads.
//!
//! Redis assigns the ids (`XADD *`, the same `{ms}-{seq}` shape as the engine's), so the
//! stream's order is the one order every instance delivers in. Each entry has one field, `e`:
//! the event's record from [`super::codec`], the same bytes the sled log stores. Appends and
//! the live tail are in [`crate::cluster`]; this module is the read side the hub and the
//! trimmer use through [`EventLog`], plus what they share with it (keys, entry decoding).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herald_core::{Event, EventId, HistoryPage, HistoryRequest, LogBounds};

use super::retention::{Retention, TrimReport};
use super::{EventLog, LogError, codec};
use crate::lock;
use crate::redis::{Connection, Pool, RedisConfig, RedisError, Value};

/// The oldest Redis that has what resets need (`XINFO STREAM`'s `max-deleted-entry-id`).
const MIN_REDIS_MAJOR: u64 = 7;
/// Entries fetched per `XRANGE` while filling a page of history.
const SCAN_CHUNK: usize = 256;
/// How long one command may take before the connection counts as broken.
pub const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// The stream entry field holding the event record.
pub const RECORD_FIELD: &[u8] = b"e";

/// Where the shared log is and what it keeps; `--redis`, `--redis-prefix` and the retention
/// flags.
#[derive(Clone, Debug)]
pub struct RedisLogConfig {
    /// The Redis server.
    pub redis: RedisConfig,
    /// Prefix of every key Herald writes: `{prefix}:events` (the stream) and
    /// `{prefix}:idem:{key}` (idempotency keys, kept 24 h or `--retain-age` if shorter).
    /// Instances of one deployment share it.
    pub prefix: String,
    /// Count and age limits, applied every trim interval (the byte limit does not apply).
    pub retention: Retention,
}

/// Why the shared log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenRedisError {
    /// Redis could not be reached or refused a command.
    #[error("Redis at {url}: {source}")]
    Redis {
        /// The server, without its password.
        url: String,
        /// What went wrong.
        source: RedisError,
    },
    /// The server is older than cluster mode needs.
    #[error(
        "Redis at {url} is version {version}; cluster mode needs Redis {MIN_REDIS_MAJOR}.0 or later"
    )]
    TooOld {
        /// The server, without its password.
        url: String,
        /// The version it reported.
        version: String,
    },
}

/// What `XINFO STREAM` says, cached so that [`EventLog::bounds`] never waits on the network.
#[derive(Clone, Copy, Debug, Default)]
struct Cached {
    bounds: LogBounds,
    last: Option<EventId>,
}

/// The Redis stream as an [`EventLog`]: history reads, bounds, retention.
pub struct RedisLog {
    pool: Pool,
    stream: String,
    prefix: String,
    retention: Retention,
    cached: Mutex<Cached>,
    corrupt: AtomicU64,
    /// The highest id this instance has read or been acknowledged.
    seen: Mutex<Option<EventId>>,
}

impl std::fmt::Debug for RedisLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLog")
            .field("redis", &self.pool.config().to_string())
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl RedisLog {
    /// Connects, checks the server's version and reads the stream's bounds.
    pub fn open(config: &RedisLogConfig) -> Result<Self, OpenRedisError> {
        let url = config.redis.to_string();
        let wrap = |source| OpenRedisError::Redis {
            url: url.clone(),
            source,
        };
        let pool = Pool::new(config.redis.clone(), REDIS_COMMAND_TIMEOUT, 8);
        let version = pool.with(server_version).map_err(wrap)?;
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u64>().ok());
        if major.is_none_or(|m| m < MIN_REDIS_MAJOR) {
            return Err(OpenRedisError::TooOld { url, version });
        }
        // A Redis Cluster runs a script only on keys of one slot: a hash tag puts every key of
        // the deployment in the prefix's slot (`{herald}:events`, `{herald}:idem:...`).
        let prefix = match pool.with(cluster_enabled).map_err(wrap)? {
            true => format!("{{{}}}", config.prefix),
            false => config.prefix.clone(),
        };
        match pool.with(evicting_policy) {
            Ok(Some(policy)) => tracing::warn!(
                redis = %config.redis,
                "Redis evicts keys when it is full (maxmemory-policy {policy}): it may then \
                 remove Herald's idempotency keys (a retried publish is delivered twice) or \
                 its stream (events are lost; resuming clients are told they missed some). \
                 Give Herald a Redis with maxmemory-policy noeviction: a full one then turns \
                 publishes away with 503"
            ),
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "cannot read Redis's eviction policy"),
        }
        let log = Self {
            pool,
            stream: format!("{prefix}:events"),
            prefix,
            retention: config.retention,
            cached: Mutex::new(Cached::default()),
            corrupt: AtomicU64::new(0),
            seen: Mutex::new(None),
        };
        log.refresh().map_err(|e| match e {
            LogError::Redis(source) => wrap(source),
            other => wrap(RedisError::Protocol(other.to_string())),
        })?;
        Ok(log)
    }

    /// The Redis server this log is on.
    pub fn redis(&self) -> &RedisConfig {
        self.pool.config()
    }

    /// Use from the cluster reader after each read, and from its publisher for each id Redis
    /// acknowledged: the highest id this instance knows the stream held. Both pass it to
    /// Redis, so that a new id never falls below it and, if Redis lost the stream's end, the
    /// stream is healed past it: then a resume from before it is told that events were lost,
    /// also those acknowledged to this instance's publishers that no instance had read yet.
    pub fn record_seen(&self, id: EventId) {
        let mut seen = lock(&self.seen);
        *seen = (*seen).max(Some(id));
    }

    /// The highest id [`RedisLog::record_seen`] was given.
    pub fn highest_seen(&self) -> Option<EventId> {
        *lock(&self.seen)
    }

    /// Use to run short commands on one of the log's pooled connections (the node registry's
    /// heartbeat).
    pub fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        self.pool.with(f)
    }

    /// With Sentinel, asks where the master is now, so that connections to a master that
    /// Sentinel replaced are dropped (see [`crate::redis::Sentinels`]); the node heartbeat
    /// calls it every second.
    pub fn recheck_master(&self) -> Result<(), RedisError> {
        self.pool.recheck_master()
    }

    /// The prefix of every key of this deployment's.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream's key.
    pub fn stream_key(&self) -> &str {
        &self.stream
    }

    /// The key that remembers which event an idempotency key published.
    pub fn idempotency_key(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.prefix)
    }

    /// The retention limits appends trim to.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Turns an `XRANGE`/`XREAD` entry list into events, ascending; entries that do not
    /// decode are counted and skipped. Also returns the id of the last entry seen (decoded or
    /// not), where the next read continues.
    pub fn decode_entries(&self, entries: Vec<Value>) -> (Vec<Event>, Option<EventId>) {
        let mut events = Vec::with_capacity(entries.len());
        let mut last = None;
        for entry in entries {
            let Some(mut parts) = entry.into_array() else {
                self.count_corrupt(None, "an entry that is not an array");
                continue;
            };
            let fields = if parts.len() == 2 { parts.pop() } else { None };
            let id = parts
                .first()
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<EventId>().ok());
            let Some(id) = id else {
                self.count_corrupt(None, "an entry without a valid id");
                continue;
            };
            last = Some(id);
            let record = fields
                .and_then(Value::into_array)
                .and_then(|fields| record_field(&fields).map(<[u8]>::to_vec));
            match record.map(|bytes| codec::decode_event(id, &bytes)) {
                Some(Ok(event)) => events.push(event),
                Some(Err(error)) => self.count_corrupt(Some(id), &error.to_string()),
                None => self.count_corrupt(Some(id), "no record field"),
            }
        }
        (events, last)
    }

    fn count_corrupt(&self, id: Option<EventId>, why: &str) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(id = ?id.map(|i| i.to_string()), why, stream = %self.stream, "skipping a stream entry that does not decode");
    }

    /// Reads the stream's bounds from Redis into the cache [`EventLog::bounds`] answers from
    /// (history reads and trims refresh it too). The cluster reader calls it as events
    /// arrive, at most about once a second.
    pub fn refresh_bounds(&self) -> Result<LogBounds, LogError> {
        self.refresh().map(|cached| cached.bounds)
    }

    /// Reads the stream's bounds and last id from Redis into the cache.
    fn refresh(&self) -> Result<Cached, LogError> {
        let stream = self.stream.as_bytes();
        let replies = self.pool.with(|conn| {
            conn.pipeline(&[
                vec![b"XINFO".to_vec(), b"STREAM".to_vec(), stream.to_vec()],
                vec![b"MEMORY".to_vec(), b"USAGE".to_vec(), stream.to_vec()],
            ])
        })?;
        let mut replies = replies.into_iter();
        let info = match replies.next() {
            Some(Ok(info)) => Some(info),
            // A stream nobody has published to yet.
            Some(Err(message)) if message.contains("no such key") => None,
            Some(Err(message)) => return Err(RedisError::Server(message).into()),
            None => return Err(RedisError::Protocol("no reply to XINFO".into()).into()),
        };
        let bytes = match replies.next() {
            Some(Ok(value)) => value.as_int().map_or(0, |b| u64::try_from(b).unwrap_or(0)),
            _ => 0,
        };
        let cached = match info {
            None => Cached::default(),
            Some(info) => parse_xinfo(info, bytes)?,
        };
        *lock(&self.cached) = cached;
        Ok(cached)
    }

    fn cached(&self) -> Cached {
        *lock(&self.cached)
    }
}

/// The value of `field` in the reply of `INFO section` (`field:value` lines).
fn info_field(
    conn: &mut Connection,
    section: &str,
    field: &str,
) -> Result<Option<String>, RedisError> {
    let info = conn.query(&[b"INFO", section.as_bytes()])?;
    let text = info.as_str().unwrap_or_default();
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|value| value.trim().to_owned()))
}

/// The `redis_version` line of `INFO server`.
fn server_version(conn: &mut Connection) -> Result<String, RedisError> {
    info_field(conn, "server", "redis_version")?
        .ok_or_else(|| RedisError::Protocol("INFO server has no redis_version".into()))
}

/// The policy by which Redis evicts keys when it reaches `maxmemory`, unless it never does
/// (no limit, or `noeviction`).
fn evicting_policy(conn: &mut Connection) -> Result<Option<String>, RedisError> {
    let limit = info_field(conn, "memory", "maxmemory")?;
    let policy = info_field(conn, "memory", "maxmemory_policy")?;
    Ok(policy.filter(|p| p != "noeviction" && limit.as_deref().is_some_and(|l| l != "0")))
}

/// Whether the server is a Redis Cluster node.
fn cluster_enabled(conn: &mut Connection) -> Result<bool, RedisError> {
    Ok(info_field(conn, "cluster", "cluster_enabled")?.as_deref() == Some("1"))
}

/// The value of the record field in an entry's flat field list.
fn record_field(fields: &[Value]) -> Option<&[u8]> {
    fields
        .chunks_exact(2)
        .find(|pair| pair[0].as_bytes() == Some(RECORD_FIELD))
        .and_then(|pair| pair[1].as_bytes())
}

/// An id field of `XINFO STREAM`; `0-0` (nothing yet) is `None`.
fn id_field(value: &Value) -> Option<EventId> {
    value
        .as_str()
        .and_then(|s| s.parse::<EventId>().ok())
        .filter(|&id| id != EventId::MIN)
}

fn parse_xinfo(info: Value, bytes: u64) -> Result<Cached, LogError> {
    let fields = info
        .into_array()
        .ok_or_else(|| RedisError::Protocol("XINFO STREAM is not a list".into()))?;
    let mut cached = Cached::default();
    cached.bounds.bytes = bytes;
    let mut has_floor_field = false;
    for pair in fields.chunks_exact(2) {
        match pair[0].as_str() {
            Some("length") => {
                cached.bounds.events = pair[1]
                    .as_int()
                    .map_or(0, |n| u64::try_from(n).unwrap_or(0));
            }
            Some("last-generated-id") => cached.last = id_field(&pair[1]),
            Some("max-deleted-entry-id") => {
                has_floor_field = true;
                cached.bounds.floor = id_field(&pair[1]);
            }
            Some("first-entry") => {
                cached.bounds.oldest = pair[1]
                    .clone()
                    .into_array()
                    .and_then(|entry| entry.first().and_then(id_field));
            }
            _ => {}
        }
    }
    if !has_floor_field {
        return Err(RedisError::Protocol(
            "XINFO STREAM has no max-deleted-entry-id (Redis 7.0 or later is needed)".into(),
        )
        .into());
    }
    Ok(cached)
}

impl EventLog for RedisLog {
    fn read(&self, req: &HistoryRequest) -> Result<HistoryPage, LogError> {
        let mut page = HistoryPage::default();
        let mut bytes = 0;
        let mut start = match req.after {
            Some(after) => format!("({after}"),
            None => "-".to_owned(),
        };
        let end = req.through.to_string();
        let chunk = SCAN_CHUNK.to_string();
        let mut read = 0;
        'scan: loop {
            let reply = self.pool.with(|conn| {
                conn.query(&[
                    b"XRANGE",
                    self.stream.as_bytes(),
                    start.as_bytes(),
                    end.as_bytes(),
                    b"COUNT",
                    chunk.as_bytes(),
                ])
            })?;
            let entries = reply.into_array().unwrap_or_default();
            let fetched = entries.len();
            let (events, last) = self.decode_entries(entries);
            for event in events {
                if !req.subscription.matches(&event) {
                    continue;
                }
                if page.events.len() >= req.max_events
                    || (bytes >= req.max_bytes && !page.events.is_empty())
                {
                    page.more = true;
                    break 'scan;
                }
                bytes += event.data.len();
                page.events.push(event);
            }
            match last {
                Some(last) if fetched == SCAN_CHUNK && last < req.through => {
                    read += fetched;
                    if read >= super::replay::SCAN_BUDGET {
                        // Few of the records matched: the next page goes on from here.
                        page.more = true;
                        page.read_through = Some(last);
                        break;
                    }
                    start = format!("({last}");
                }
                _ => break,
            }
        }
        // The hub reads the bounds right after a page to see whether retention overtook the
        // replay: they must be fresh, not the cached ones.
        self.refresh()?;
        Ok(page)
    }

    fn last_id(&self) -> Option<EventId> {
        self.cached().last
    }

    fn bounds(&self) -> LogBounds {
        self.cached().bounds
    }

    /// Deletes the oldest entries over the count or age limit, at most `max_step` a step,
    /// with `XDEL`: unlike `XTRIM`, it records the highest id removed (the stream's
    /// `max-deleted-entry-id`), which is the floor resets are decided against. Several
    /// instances trimming at once delete the same entries; that is harmless.
    fn trim(&self, now_wall_ms: u64, max_step: usize) -> Result<TrimReport, LogError> {
        let before = self.cached().bounds.bytes;
        let max_age_ms = u64::try_from(self.retention.max_age.as_millis()).unwrap_or(u64::MAX);
        let expired_below = format!("({}-0", now_wall_ms.saturating_sub(max_age_ms));
        let step = max_step.max(1).to_string();
        let stream = self.stream.as_bytes();
        let (length, expired) = self.pool.with(|conn| {
            let length = conn.query(&[b"XLEN", stream])?;
            let expired = conn.query(&[
                b"XRANGE",
                stream,
                b"-",
                expired_below.as_bytes(),
                b"COUNT",
                step.as_bytes(),
            ])?;
            Ok((length, expired))
        })?;
        let length = length.as_int().map_or(0, |n| u64::try_from(n).unwrap_or(0));
        let over_count = length.saturating_sub(self.retention.max_events);
        let expired = expired.into_array().map_or(0, |e| e.len());
        let remove = usize::try_from(over_count)
            .unwrap_or(usize::MAX)
            .max(expired)
            .min(max_step.max(1));
        let mut removed = 0;
        if remove > 0 {
            let count = remove.to_string();
            removed = self.pool.with(|conn| {
                let oldest =
                    conn.query(&[b"XRANGE", stream, b"-", b"+", b"COUNT", count.as_bytes()])?;
                let ids: Vec<Vec<u8>> = oldest
                    .into_array()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|entry| {
                        let entry = entry.into_array()?;
                        Some(entry.first()?.as_bytes()?.to_vec())
                    })
                    .collect();
                if ids.is_empty() {
                    return Ok(0);
                }
                let mut args: Vec<&[u8]> = vec![b"XDEL", stream];
                args.extend(ids.iter().map(Vec::as_slice));
                let deleted = conn.query(&args)?;
                Ok(deleted
                    .as_int()
                    .map_or(0, |n| usize::try_from(n).unwrap_or(0)))
            })?;
        }
        let after = self.refresh()?;
        Ok(TrimReport {
            removed,
            bytes: before.saturating_sub(after.bounds.bytes),
            floor: after.bounds.floor,
            more: remove >= max_step.max(1),
        })
    }

    fn corrupt_records(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::tests::{Cleanup, TIMEOUT, redis_or_skip, unique_key};
    use herald_core::{ConnId, Subscription, Target, Topic, TopicPattern};

    #[test]
    fn a_read_stops_at_its_budget_and_says_where() {
        let Some(config) = redis_or_skip("a_read_stops_at_its_budget_and_says_where") else {
            return;
        };
        let log = RedisLog::open(&RedisLogConfig {
            redis: config.clone(),
            prefix: unique_key("budget"),
            retention: Retention::default(),
        })
        .unwrap();
        let key = log.stream_key().to_owned();
        let _cleanup = Cleanup(&config, &key);
        // One event for `t`, a long run for `other`, then one more for `t`.
        let total = super::super::replay::SCAN_BUDGET as u64 + 2 * SCAN_CHUNK as u64;
        let commands: Vec<Vec<Vec<u8>>> = (1..=total)
            .map(|n| {
                let topic = if n == 1 || n == total { "t" } else { "other" };
                let event = Event {
                    id: EventId::new(n, 0),
                    target: Target {
                        topics: vec![Topic::new(topic).unwrap()],
                        ..Target::default()
                    },
                    event_type: None,
                    data: "x".to_owned(),
                };
                let record = codec::encode_event(&event).unwrap();
                let id = event.id.to_string().into_bytes();
                vec![
                    b"XADD".to_vec(),
                    key.clone().into_bytes(),
                    id,
                    RECORD_FIELD.to_vec(),
                    record,
                ]
            })
            .collect();
        let mut conn = Connection::open(&config, TIMEOUT).unwrap();
        for batch in commands.chunks(1000) {
            for reply in conn.pipeline(batch).unwrap() {
                reply.unwrap();
            }
        }
        let mut req = HistoryRequest {
            conn: ConnId(1),
            after: None,
            through: EventId::new(total, 0),
            subscription: Subscription {
                patterns: vec![TopicPattern::parse("t").unwrap()],
                user: None,
            },
            max_events: 1000,
            max_bytes: usize::MAX,
        };
        let first = log.read(&req).unwrap();
        // Read a chunk at a time: it stops at the first chunk that reaches the budget.
        let chunk = SCAN_CHUNK as u64;
        let stop = (super::super::replay::SCAN_BUDGET as u64).div_ceil(chunk) * chunk;
        let seqs = |page: &HistoryPage| page.events.iter().map(|e| e.id.ms).collect::<Vec<_>>();
        assert_eq!(
            (seqs(&first), first.more, first.read_through),
            (vec![1], true, Some(EventId::new(stop, 0)))
        );
        req.after = first.read_through;
        let rest = log.read(&req).unwrap();
        assert_eq!(
            (seqs(&rest), rest.more, rest.read_through),
            (vec![total], false, None)
        );
    }
}
