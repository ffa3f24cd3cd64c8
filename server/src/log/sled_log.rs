//! The embedded log: sled trees for events, per-topic, per-user and broadcast indices, and meta.
//!
//! Layout (format version [`LAYOUT_VERSION`], stored in the meta tree):
//! - `events`: `EventId::to_bytes()` → [`codec`] record. Key order is id order.
//! - `by_topic`: topic, `0x00`, id → ids. One entry per topic per appended batch: the value
//!   packs the batch's ids for that topic (16 bytes each, ascending), the key ends with the
//!   last of them. Topic names never hold NUL, so one topic's entries are contiguous and in id
//!   order, and a prefix pattern is a contiguous key range.
//! - `by_user`: user, `0x00`, id → ids (same shape).
//! - `broadcast`: id → ids (the batch's broadcasts).
//! - `meta`: layout version, retention floor, event and byte totals.
//!
//! Packing a batch's index entries into one value per name halves the sled inserts of an
//! append (sled's per-key cost dominates a group commit), while a replay still reads only the
//! entries of the names it asks for.
//!
//! Every append and trim is one sled transaction over all five trees, so a crash leaves either
//! all of a batch (event, its index entries, the totals) or none of it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use herald_core::{Event, EventId, HistoryPage, HistoryRequest, LogBounds};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::codec;
use super::replay;
use super::retention::{Retention, TrimReport};
use super::{AppendLog, EventLog, FsyncPolicy, LogConfig, LogError};
use crate::lock;

/// The key and tree layout this build writes and reads.
pub const LAYOUT_VERSION: u32 = 1;

/// sled's page cache bound: enough to keep indices and recent events hot without sled's
/// 1 GiB default claiming memory a hub needs for its connections.
const CACHE_BYTES: u64 = 256 << 20;

const META_LAYOUT: &[u8] = b"layout_version";
const META_FLOOR: &[u8] = b"floor";
const META_TOTALS: &[u8] = b"totals";

/// Why the data directory could not be opened as a log.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory does not exist and could not be created.
    #[error("cannot create data directory {}: {source}", dir.display())]
    CreateDir {
        /// The data directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process (or another open log in this one) holds sled's lock on the directory.
    #[error(
        "data directory {} is in use by another herald process (sled holds a lock on it); \
         stop that process or choose another data directory",
        dir.display()
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// The directory was written by a build with another storage layout.
    #[error(
        "data directory {} holds log format version {found}, but this herald reads version \
         {LAYOUT_VERSION}; use a herald that matches it or a fresh data directory",
        dir.display()
    )]
    FormatVersion {
        /// The data directory.
        dir: PathBuf,
        /// The version stored in it.
        found: u32,
    },
    /// A meta entry exists but is not what this build writes.
    #[error("data directory {} has an unreadable '{what}' meta entry", dir.display())]
    CorruptMeta {
        /// The data directory.
        dir: PathBuf,
        /// Which entry.
        what: &'static str,
    },
    /// The files are damaged past what sled recovers, or are not a log at all.
    #[error(
        "the event log in {} cannot be read: {detail}; restore the data directory from a \
         backup, or move it away to start an empty log",
        dir.display()
    )]
    Damaged {
        /// The data directory.
        dir: PathBuf,
        /// What was found.
        detail: String,
    },
    /// sled could not open or recover the database.
    #[error("cannot open the sled database in {}: {source}", dir.display())]
    Storage {
        /// The data directory.
        dir: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
}

/// What the log holds; kept in memory and persisted (as `meta`) with every write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    /// The highest id ever held (trimmed or not).
    last: Option<EventId>,
    /// The highest id removed by retention.
    floor: Option<EventId>,
    events: u64,
    bytes: u64,
    /// Idempotency keys held (counted at open, not stored).
    keys: u64,
}

impl Totals {
    fn encode_counts(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.events.to_be_bytes());
        out[8..].copy_from_slice(&self.bytes.to_be_bytes());
        out
    }

    fn decode_counts(bytes: &[u8]) -> Option<(u64, u64)> {
        let events: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let total: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
        (bytes.len() == 16).then(|| (u64::from_be_bytes(events), u64::from_be_bytes(total)))
    }
}

/// The event log on sled. Open one per data directory; share it as `Arc<dyn EventLog>`.
pub struct SledLog {
    db: sled::Db,
    // The trees are visible to the module's tests, which damage and inspect them.
    pub(super) events: sled::Tree,
    pub(super) by_topic: sled::Tree,
    pub(super) by_user: sled::Tree,
    pub(super) broadcast: sled::Tree,
    pub(super) meta: sled::Tree,
    /// Publishers' idempotency keys, under the id of the event they published; the newest
    /// `Retention::max_keys` are kept, whether their events are or not.
    pub(super) keys: sled::Tree,
    /// sled's data file, fsynced after sled's own flush: sled syncs with `sync_file_range`,
    /// which neither flushes the device cache nor the file's metadata (its length).
    db_file: File,
    db_path: PathBuf,
    fsync: FsyncPolicy,
    retention: Retention,
    /// Serializes writers (the committer's appends and the trimmer's steps), so totals can be
    /// computed outside sled's transaction without conflicts.
    writer: Mutex<()>,
    totals: Mutex<Totals>,
    corrupt: AtomicU64,
    /// The marker says this log has held events (written after its first commit).
    marked_events: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for SledLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledLog")
            .field("db_path", &self.db_path)
            .finish_non_exhaustive()
    }
}

/// The index key `name, 0x00, id`.
pub(super) fn index_key(name: &[u8], id: EventId) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 17);
    key.extend_from_slice(name);
    key.push(0);
    key.extend_from_slice(&id.to_bytes());
    key
}

/// The id at the end of an index key, an events key, or a packed list of ids.
pub(super) fn id_of_key(key: &[u8]) -> Option<EventId> {
    let start = key.len().checked_sub(16)?;
    EventId::from_bytes(&key[start..])
}

fn is_locked(error: &sled::Error) -> bool {
    // sled 0.34 reports a failed `flock` as an `Other` IO error with this message and no
    // dedicated variant.
    matches!(error, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// What [`MARKER`] says once the log has committed an event.
const HELD_EVENTS: &str = "held events";

/// Writes [`MARKER`] durably (the file, then the directory entry).
fn write_marker(dir: &std::path::Path, held_events: bool) -> std::io::Result<()> {
    let path = dir.join(MARKER);
    let mut text = format!("herald event log, layout {LAYOUT_VERSION}: kept with sled's files\n");
    if held_events {
        text.push_str(HELD_EVENTS);
        text.push('\n');
    }
    std::fs::write(&path, text)?;
    File::open(&path)?.sync_all()?;
    File::open(dir)?.sync_all()
}

/// A file Herald writes beside sled's once a data directory holds a log, so that a log whose
/// records sled can no longer find (a truncated `db`) is told from a new one.
const MARKER: &str = "HERALD_LOG";

impl SledLog {
    /// Opens (or creates) the log in `config.data_dir`, recovering after a crash.
    ///
    /// Damaged files are an error, never a fresh log written over them; sled panics on some
    /// kinds of damage, and that is an error too.
    pub fn open(config: &LogConfig) -> Result<Self, OpenError> {
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| OpenError::CreateDir {
            dir: dir.clone(),
            source,
        })?;
        let had_db = std::fs::metadata(dir.join("db")).is_ok_and(|m| m.len() > 0);
        let marker = std::fs::read_to_string(dir.join(MARKER)).ok();
        let marked = marker.is_some();
        let held_events = marker.is_some_and(|m| m.lines().any(|l| l == HELD_EVENTS));
        if had_db && !marked && !dir.join("conf").exists() {
            return Err(OpenError::Damaged {
                dir,
                detail: "its 'db' file is not sled's (there is no 'conf' beside it)".to_owned(),
            });
        }
        // A log sled finds no layout in, where a `db` with contents was, lost its records
        // (also in a directory from before the marker).
        let had_log = marked || had_db;
        let opened = crate::quietly(|| Self::open_files(config, had_log, held_events));
        let log = opened.map_err(|panic| OpenError::Damaged {
            dir: dir.clone(),
            detail: format!("sled failed on its files ({panic})"),
        })??;
        if !marked {
            // A log from before the marker: what it holds was made durable by an earlier run.
            let held_events = log.last_id().is_some();
            log.marked_events.store(held_events, Ordering::Relaxed);
            write_marker(&dir, held_events).map_err(|source| OpenError::Storage {
                dir,
                source: sled::Error::Io(source),
            })?;
        }
        Ok(log)
    }

    fn open_files(config: &LogConfig, had_log: bool, held_events: bool) -> Result<Self, OpenError> {
        let dir = config.data_dir.clone();
        let storage = |source: sled::Error| {
            if is_locked(&source) {
                OpenError::Locked { dir: dir.clone() }
            } else {
                OpenError::Storage {
                    dir: dir.clone(),
                    source,
                }
            }
        };
        let db = sled::Config::new()
            .path(&dir)
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(storage)?;
        let events = db.open_tree("events").map_err(storage)?;
        let by_topic = db.open_tree("by_topic").map_err(storage)?;
        let by_user = db.open_tree("by_user").map_err(storage)?;
        let broadcast = db.open_tree("broadcast").map_err(storage)?;
        let meta = db.open_tree("meta").map_err(storage)?;
        let keys = db.open_tree("idempotency").map_err(storage)?;

        let corrupt_meta = |what| OpenError::CorruptMeta {
            dir: dir.clone(),
            what,
        };
        match meta.get(META_LAYOUT).map_err(storage)? {
            Some(v) => {
                let bytes: [u8; 4] = v.as_ref().try_into().map_err(|_| corrupt_meta("layout"))?;
                let found = u32::from_be_bytes(bytes);
                if found != LAYOUT_VERSION {
                    return Err(OpenError::FormatVersion { dir, found });
                }
            }
            // A log that was there has lost its records: sled found nothing it could read.
            None if had_log => {
                return Err(OpenError::Damaged {
                    dir,
                    detail: "sled finds none of its records".to_owned(),
                });
            }
            None => {
                meta.insert(META_LAYOUT, &LAYOUT_VERSION.to_be_bytes())
                    .map_err(storage)?;
                db.flush().map_err(storage)?;
            }
        }
        let floor = match meta.get(META_FLOOR).map_err(storage)? {
            Some(v) => Some(EventId::from_bytes(&v).ok_or_else(|| corrupt_meta("floor"))?),
            None => None,
        };
        let (events_total, bytes_total) = match meta.get(META_TOTALS).map_err(storage)? {
            Some(v) => Totals::decode_counts(&v).ok_or_else(|| corrupt_meta("totals"))?,
            None => (0, 0),
        };
        let newest = match events.last().map_err(storage)? {
            Some((key, _)) => {
                Some(EventId::from_bytes(&key).ok_or_else(|| corrupt_meta("events key"))?)
            }
            None => None,
        };
        // A log that had committed events and now has none, not even a floor, lost them.
        if held_events && newest.max(floor).is_none() {
            return Err(OpenError::Damaged {
                dir,
                detail: "it held events and sled finds none".to_owned(),
            });
        }
        let totals = Totals {
            last: newest.max(floor),
            floor,
            events: events_total,
            bytes: bytes_total,
            keys: keys.len() as u64,
        };

        let db_path = dir.join("db");
        let db_file = File::open(&db_path).map_err(|e| storage(sled::Error::Io(e)))?;
        tracing::info!(
            dir = %dir.display(),
            events = totals.events,
            last = %totals.last.map_or_else(|| "none".to_owned(), |id| id.to_string()),
            floor = %totals.floor.map_or_else(|| "none".to_owned(), |id| id.to_string()),
            existing = db.was_recovered(),
            "opened event log"
        );
        Ok(Self {
            db,
            events,
            by_topic,
            by_user,
            broadcast,
            meta,
            keys,
            db_file,
            db_path,
            fsync: config.fsync,
            retention: config.retention,
            writer: Mutex::new(()),
            totals: Mutex::new(totals),
            corrupt: AtomicU64::new(0),
            marked_events: std::sync::atomic::AtomicBool::new(held_events),
        })
    }

    /// Once the log holds durable events, says so in [`MARKER`], once for the life of the
    /// data dir: from then on a log that sled finds empty has lost its records.
    /// The events are committed whatever becomes of the marker: a failure to write it is
    /// logged, and tried again at the next commit.
    fn mark_held_events(&self) {
        if self.marked_events.load(Ordering::Relaxed) {
            return;
        }
        let dir = self.db_path.parent().unwrap_or(std::path::Path::new("."));
        match write_marker(dir, true) {
            Ok(()) => self.marked_events.store(true, Ordering::Relaxed),
            Err(error) => tracing::warn!(%error, dir = %dir.display(), "cannot write {MARKER}"),
        }
    }

    fn sync(&self) -> Result<(), LogError> {
        self.db.flush()?;
        self.db_file.sync_data().map_err(|source| LogError::Sync {
            path: self.db_path.clone(),
            source,
        })
    }

    /// Applies one write as a single sled transaction over every tree.
    fn commit(&self, writes: &Writes, totals: &Totals) -> Result<(), LogError> {
        let counts = totals.encode_counts();
        let floor = totals.floor.map(EventId::to_bytes);
        let trees = (
            &self.events,
            &self.by_topic,
            &self.by_user,
            &self.broadcast,
            &self.meta,
            &self.keys,
        );
        trees
            .transaction(|(events, by_topic, by_user, broadcast, meta, keys)| {
                events.apply_batch(&writes.events)?;
                keys.apply_batch(&writes.keys)?;
                by_topic.apply_batch(&writes.by_topic)?;
                by_user.apply_batch(&writes.by_user)?;
                broadcast.apply_batch(&writes.broadcast)?;
                meta.insert(META_TOTALS, &counts)?;
                if let Some(floor) = floor {
                    meta.insert(META_FLOOR, &floor)?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => LogError::Storage(e),
                // The closure never aborts.
                TransactionError::Abort(()) => {
                    LogError::Storage(sled::Error::ReportableBug("transaction aborted".into()))
                }
            })
    }

    fn record_corrupt(&self, id: EventId, error: &codec::CodecError, during: &str) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(key = %id, %error, "skipping a log record that fails to decode during {during}");
    }

    /// Removes the index entries that hold only ids at or below `floor`. Trimming goes oldest
    /// first, so those are exactly the entries all of whose events are gone; an entry that
    /// straddles the floor stays until a later step passes its last id (reads never look at or
    /// below the floor).
    fn remove_index_entries(
        &self,
        names: &TrimmedNames,
        floor: EventId,
        writes: &mut Writes,
    ) -> Result<(), LogError> {
        for (tree, batch, names) in [
            (&self.by_topic, &mut writes.by_topic, &names.topics),
            (&self.by_user, &mut writes.by_user, &names.users),
        ] {
            for name in names {
                for item in tree.range(index_key(name, EventId::MIN)..=index_key(name, floor)) {
                    let (key, _) = item?;
                    batch.remove(key);
                }
            }
        }
        if names.broadcast {
            for item in self
                .broadcast
                .range(EventId::MIN.to_bytes()..=floor.to_bytes())
            {
                let (key, _) = item?;
                writes.broadcast.remove(key);
            }
        }
        Ok(())
    }

    /// How long ago (in ms of id time) events expire, saturating for absurd durations.
    fn max_age_ms(&self) -> u64 {
        u64::try_from(self.retention.max_age.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The batches of one write, one per tree.
#[derive(Default)]
struct Writes {
    events: sled::Batch,
    by_topic: sled::Batch,
    by_user: sled::Batch,
    broadcast: sled::Batch,
    keys: sled::Batch,
}

impl Writes {
    fn apply_index(&mut self, index: &BatchIndex) {
        for (batch, entries) in [
            (&mut self.by_topic, &index.by_topic),
            (&mut self.by_user, &index.by_user),
        ] {
            for (name, ids) in entries {
                if let Some(last) = id_of_key(ids) {
                    batch.insert(index_key(name, last), &ids[..]);
                }
            }
        }
        if let Some(last) = id_of_key(&index.broadcast) {
            self.broadcast
                .insert(&last.to_bytes()[..], &index.broadcast[..]);
        }
    }
}

/// The index entries of one appended batch: per name, its ids packed in ascending order.
#[derive(Default)]
struct BatchIndex {
    by_topic: BTreeMap<Vec<u8>, Vec<u8>>,
    by_user: BTreeMap<Vec<u8>, Vec<u8>>,
    broadcast: Vec<u8>,
}

fn push_id(ids: &mut Vec<u8>, id: EventId) {
    // A target naming the same topic twice is indexed once.
    if id_of_key(ids) != Some(id) {
        ids.extend_from_slice(&id.to_bytes());
    }
}

impl BatchIndex {
    fn add(&mut self, event: &Event) {
        for topic in &event.target.topics {
            push_id(
                self.by_topic
                    .entry(topic.as_str().as_bytes().to_vec())
                    .or_default(),
                event.id,
            );
        }
        for user in &event.target.users {
            push_id(
                self.by_user
                    .entry(user.as_str().as_bytes().to_vec())
                    .or_default(),
                event.id,
            );
        }
        if event.target.broadcast {
            push_id(&mut self.broadcast, event.id);
        }
    }
}

/// The names whose index entries a trim step must visit.
#[derive(Default)]
struct TrimmedNames {
    topics: BTreeSet<Vec<u8>>,
    users: BTreeSet<Vec<u8>>,
    broadcast: bool,
}

impl TrimmedNames {
    fn add(&mut self, event: &Event) {
        self.topics.extend(
            event
                .target
                .topics
                .iter()
                .map(|t| t.as_str().as_bytes().to_vec()),
        );
        self.users.extend(
            event
                .target
                .users
                .iter()
                .map(|u| u.as_str().as_bytes().to_vec()),
        );
        self.broadcast |= event.target.broadcast;
    }
}

fn stored_size(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

impl EventLog for SledLog {
    fn read(&self, req: &HistoryRequest) -> Result<HistoryPage, LogError> {
        let floor = lock(&self.totals).floor;
        let trees = replay::Trees {
            events: &self.events,
            by_topic: &self.by_topic,
            by_user: &self.by_user,
            broadcast: &self.broadcast,
        };
        replay::read_page(&trees, floor, req, &mut |id, error| {
            self.record_corrupt(id, error, "replay")
        })
    }

    fn last_id(&self) -> Option<EventId> {
        lock(&self.totals).last
    }

    fn bounds(&self) -> LogBounds {
        let totals = *lock(&self.totals);
        // The oldest key is one B-tree descent; an error reading it only loses this detail.
        let oldest = match self.events.first() {
            Ok(first) => first.and_then(|(key, _)| EventId::from_bytes(&key)),
            Err(error) => {
                tracing::warn!(%error, "cannot read the oldest event id");
                None
            }
        };
        LogBounds {
            oldest,
            floor: totals.floor,
            events: totals.events,
            bytes: totals.bytes,
        }
    }

    fn trim(&self, now_wall_ms: u64, max_step: usize) -> Result<TrimReport, LogError> {
        let _writer = lock(&self.writer);
        let mut totals = *lock(&self.totals);
        let expired_below = now_wall_ms.saturating_sub(self.max_age_ms());
        let limits = self.retention;
        let mut writes = Writes::default();
        let mut names = TrimmedNames::default();
        let mut report = TrimReport::default();
        for item in self.events.iter() {
            let (key, value) = item?;
            let Some(id) = EventId::from_bytes(&key) else {
                // Not a key this log writes; leave it rather than guess.
                continue;
            };
            let over = totals.events > limits.max_events
                || id.ms < expired_below
                || totals.bytes > limits.max_bytes;
            if !over {
                break;
            }
            if report.removed >= max_step {
                report.more = true;
                break;
            }
            writes.events.remove(&key[..]);
            match codec::decode_event(id, &value) {
                Ok(event) => names.add(&event),
                // Without its targets its index entries cannot be found; those it alone holds
                // stay behind, below the floor where replay never looks.
                Err(error) => self.record_corrupt(id, &error, "trimming"),
            }
            let size = stored_size(&key, &value);
            totals.events = totals.events.saturating_sub(1);
            totals.bytes = totals.bytes.saturating_sub(size);
            totals.floor = Some(id);
            report.removed += 1;
            report.bytes += size;
        }
        if let (true, Some(floor)) = (report.removed > 0, totals.floor) {
            self.remove_index_entries(&names, floor, &mut writes)?;
        }
        // The oldest idempotency keys beyond their limit, at most `max_step` of them too.
        let excess = totals.keys.saturating_sub(limits.max_keys);
        let mut keys_removed = 0;
        for item in self.keys.iter().keys() {
            if keys_removed == excess {
                break;
            }
            if keys_removed == max_step as u64 {
                report.more = true;
                break;
            }
            writes.keys.remove(item?);
            keys_removed += 1;
        }
        totals.keys -= keys_removed;
        if report.removed > 0 || keys_removed > 0 {
            // Readers see the new floor before its events are gone: a history read that finds
            // them gone then finds the floor that tells its client so in the bounds read
            // after it. (If the commit fails, a floor too high only tells of a loss early.)
            lock(&self.totals).floor = totals.floor;
            self.commit(&writes, &totals)?;
            *lock(&self.totals) = totals;
        }
        report.floor = totals.floor;
        Ok(report)
    }

    fn corrupt_records(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }
}

impl AppendLog for SledLog {
    fn append(&self, batch: &[Arc<Event>], keys: &[(EventId, Arc<str>)]) -> Result<(), LogError> {
        if batch.is_empty() {
            return Ok(());
        }
        let _writer = lock(&self.writer);
        let mut totals = *lock(&self.totals);
        let mut writes = Writes::default();
        let mut index = BatchIndex::default();
        for event in batch {
            if let Some(last) = totals.last.filter(|last| event.id <= *last) {
                return Err(LogError::OutOfOrder { id: event.id, last });
            }
            let value = codec::encode_event(event).map_err(|source| LogError::Encode {
                id: event.id,
                source,
            })?;
            let key = event.id.to_bytes();
            totals.bytes += stored_size(&key, &value);
            totals.events += 1;
            totals.last = Some(event.id);
            writes.events.insert(&key[..], value);
            index.add(event);
        }
        writes.apply_index(&index);
        for (id, key) in keys {
            writes.keys.insert(&id.to_bytes()[..], key.as_bytes());
        }
        totals.keys += keys.len() as u64;
        self.commit(&writes, &totals)?;
        if self.fsync == FsyncPolicy::EveryBatch {
            self.sync()?;
            self.mark_held_events();
        }
        *lock(&self.totals) = totals;
        Ok(())
    }

    fn idempotency_keys(&self, limit: usize) -> Result<Vec<(EventId, String)>, LogError> {
        let mut newest = Vec::new();
        for item in self.keys.iter().rev().take(limit) {
            let (id, key) = item?;
            // Anything else is not an entry this log wrote; skip it rather than fail start-up.
            if let (Some(id), Ok(key)) = (EventId::from_bytes(&id), std::str::from_utf8(&key)) {
                newest.push((id, key.to_owned()));
            }
        }
        newest.reverse();
        Ok(newest)
    }

    fn flush(&self) -> Result<(), LogError> {
        self.sync()?;
        if self.last_id().is_some() {
            self.mark_held_events();
        }
        Ok(())
    }
}
