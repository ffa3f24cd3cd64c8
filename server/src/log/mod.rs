//! The durable event log: what makes replay after a reconnect (and after a crash) real.
//!
//! [`EventLog`] is the small interface the server reads through on behalf of the engine
//! (history, bounds, retention); [`SledLog`] is the embedded implementation and [`RedisLog`]
//! the shared one of cluster mode. [`AppendLog`] adds the appends of a log that stores the
//! engine's own ids (sled). All of it is blocking: call it from dedicated threads ([`GroupCommitter`], [`Trimmer`]) or
//! `spawn_blocking`, never on the async runtime's worker threads.
//!
//! ```no_run
//! use std::sync::Arc;
//! use herald_server::log::{AppendLog, CommitReport, EventLog, GroupCommitter, LogConfig, SledLog};
//!
//! let log: Arc<dyn AppendLog> = Arc::new(SledLog::open(&LogConfig::default())?);
//! let seed = log.last_id(); // give to the engine so ids continue above it
//! let committer = GroupCommitter::start(log.clone(), |report| match report {
//!     CommitReport::Committed { up_to, .. } => { /* engine.handle_committed(up_to), ack */ }
//!     CommitReport::Failed { ids, error } => { /* answer those publishers with `error` */ }
//! });
//! // for each Output::Append(event, key): committer.append(event, key);
//! committer.shutdown();
//! # let _ = seed;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod codec;
mod committer;
mod redis_log;
mod replay;
mod retention;
mod sled_log;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use herald_core::{Event, EventId, HistoryPage, HistoryRequest, LogBounds};

pub use codec::CodecError;
pub use committer::{CommitReport, GroupCommitter, LogMetrics, LogMetricsSnapshot};
pub use redis_log::{
    OpenRedisError, RECORD_FIELD, REDIS_COMMAND_TIMEOUT, RedisLog, RedisLogConfig,
};
pub use retention::{Retention, TrimReport, Trimmer};
pub use sled_log::{OpenError, SledLog};

/// The default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./herald-data";

/// Where the log lives and how it keeps events; `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// The directory holding the sled database (created if missing).
    pub data_dir: PathBuf,
    /// When an append counts as durable.
    pub fsync: FsyncPolicy,
    /// How much history to keep.
    pub retention: Retention,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            fsync: FsyncPolicy::default(),
            retention: Retention::default(),
        }
    }
}

/// When an append is reported committed; `--fsync every-batch|never`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Flush and fsync every batch before reporting it: no acknowledged event is lost, even
    /// if the machine loses power. The default.
    #[default]
    EveryBatch,
    /// Report a batch as soon as it is written to sled and let sled flush in the background
    /// (about every 500 ms): much faster, but a crash of the process or the machine can lose
    /// the last moments of acknowledged events.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EveryBatch => "every-batch",
            Self::Never => "never",
        })
    }
}

/// A `--fsync` value that is neither `every-batch` nor `never`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fsync policy {0:?} is not one of: every-batch, never")]
pub struct FsyncPolicyParseError(String);

impl FromStr for FsyncPolicy {
    type Err = FsyncPolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "every-batch" | "always" => Ok(Self::EveryBatch),
            "never" => Ok(Self::Never),
            other => Err(FsyncPolicyParseError(other.to_owned())),
        }
    }
}

/// What the server reads from every log (sled, or Redis in cluster mode): history for
/// resuming clients, bounds, retention.
///
/// Blocking: never call it on async worker threads.
pub trait EventLog: Send + Sync + 'static {
    /// Reads the events with `after < id <= through` that match `req.subscription`, ascending,
    /// at most `max_events` and about `max_bytes` of data (always one when any is in range);
    /// `more` is true when a limit cut the page short.
    fn read(&self, req: &HistoryRequest) -> Result<HistoryPage, LogError>;

    /// The highest id the log has ever held (also counting trimmed ones): seed the engine's
    /// sequencer with it at start-up so ids are never reused.
    fn last_id(&self) -> Option<EventId>;

    /// The oldest id held, the retention floor (highest id removed), and the totals. Cheap:
    /// the hub calls it on its timer.
    fn bounds(&self) -> LogBounds;

    /// Removes at most `max_step` of the oldest events that break the retention limits
    /// (count, age against `now_wall_ms`, bytes), with their index entries, and raises the floor.
    fn trim(&self, now_wall_ms: u64, max_step: usize) -> Result<TrimReport, LogError>;

    /// How many stored records were skipped (in replay or trimming) because they failed to
    /// decode.
    fn corrupt_records(&self) -> u64;
}

/// A log that stores events under the ids the engine minted (the embedded sled log), fed by
/// the [`GroupCommitter`]. A shared log that assigns ids itself (Redis in cluster mode) is
/// appended to by [`crate::cluster`] instead.
pub trait AppendLog: EventLog {
    /// Writes `batch` (ids strictly ascending, above every id already held) atomically, with
    /// the idempotency `keys` of those of its events that had one; on `Ok` the events are
    /// durable as far as the [`FsyncPolicy`] promises. The newest keys are kept, up to
    /// [`Retention::max_keys`], whether their events still are or not.
    fn append(&self, batch: &[Arc<Event>], keys: &[(EventId, Arc<str>)]) -> Result<(), LogError>;

    /// The idempotency keys of the newest `limit` events that had one, ascending by id: hand
    /// them to `Engine::restore_idempotency_keys` at start-up.
    fn idempotency_keys(&self, limit: usize) -> Result<Vec<(EventId, String)>, LogError>;

    /// Makes everything appended so far durable, whatever the [`FsyncPolicy`]; the
    /// [`GroupCommitter`] calls it when it shuts down.
    fn flush(&self) -> Result<(), LogError> {
        Ok(())
    }
}

/// Why an append, read or trim failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An event could not be encoded (too large); nothing of the batch was written.
    #[error("event {id} cannot be stored: {source}")]
    Encode {
        /// The event refused.
        id: EventId,
        /// Why.
        source: CodecError,
    },
    /// The batch's ids do not ascend above the log's last id; nothing was written.
    #[error("event {id} is not above the log's last id {last}: ids must ascend")]
    OutOfOrder {
        /// The offending id.
        id: EventId,
        /// The id it should have been above.
        last: EventId,
    },
    /// Redis could not be reached or refused a command (cluster mode). Not fatal: the next
    /// command may succeed.
    #[error("Redis: {0}")]
    Redis(#[from] crate::redis::RedisError),
    /// sled failed (IO error or detected corruption).
    #[error("sled storage error: {0}")]
    Storage(#[from] sled::Error),
    /// The fsync after a flush failed; what was written may not be durable.
    #[error("fsync of {path} failed: {source}")]
    Sync {
        /// The file being synced.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl LogError {
    /// True when the log itself may be broken (IO, corruption, failed fsync), as opposed to a
    /// refused batch that left the log untouched. After a fatal error nothing more should be
    /// acknowledged: the [`GroupCommitter`] fails every later event.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Storage(_) | Self::Sync { .. })
    }

    /// True when a read failed on damaged records, which no retry will read.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Self::Storage(sled::Error::Corruption { .. }))
    }
}

#[cfg(test)]
mod tests;
