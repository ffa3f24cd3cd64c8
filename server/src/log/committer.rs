//! Group commit: one thread turns many publishers' events into few batch writes and flushes.
//!
//! While one batch is being written and flushed, new events queue up; the next batch takes all
//! of them (up to a bound). So the flush cost is shared by every publisher waiting at that
//! moment, and the batch size follows the load by itself: one event per flush when idle,
//! hundreds under 256 concurrent publishers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald_core::{Event, EventId};

use super::AppendLog;
use crate::worker::{Batches, Worker};

/// Most events written as one batch.
const MAX_BATCH_EVENTS: usize = 4_096;
/// Most payload bytes in one batch (a batch is one sled transaction held in memory).
const MAX_BATCH_BYTES: usize = 8 << 20;

/// What happened to a batch, told to the `on_commit` callback in id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitReport {
    /// Every event with an id up to `up_to` that was handed to the committer is durable:
    /// tell the engine (`handle_committed(up_to)`) and answer those publishers.
    Committed {
        /// The highest id in the batch.
        up_to: EventId,
        /// Events in the batch.
        count: usize,
        /// How long the batch write and flush took.
        flush_latency: Duration,
    },
    /// These events were not stored: answer their publishers with an error.
    Failed {
        /// The ids of the batch, ascending.
        ids: Vec<EventId>,
        /// Why, for the publishers and the operator.
        error: String,
    },
}

/// Counters for `/metrics`, updated by the committer thread.
#[derive(Debug, Default)]
pub struct LogMetrics {
    enqueued: AtomicU64,
    committed_events: AtomicU64,
    committed_batches: AtomicU64,
    failed_events: AtomicU64,
    failed_batches: AtomicU64,
    last_flush_micros: AtomicU64,
    /// The storage failure that stopped the log, once one has.
    stopped_by: std::sync::Mutex<Option<String>>,
}

/// A copy of [`LogMetrics`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogMetricsSnapshot {
    /// Events handed to [`GroupCommitter::append`].
    pub enqueued: u64,
    /// Events written durably.
    pub committed_events: u64,
    /// Batches written durably (one flush each).
    pub committed_batches: u64,
    /// Events reported failed.
    pub failed_events: u64,
    /// Batches reported failed.
    pub failed_batches: u64,
    /// Write and flush time of the last committed batch.
    pub last_flush_latency: Duration,
    /// True once a storage failure made the committer refuse everything after it.
    pub stopped: bool,
}

impl LogMetricsSnapshot {
    /// Events queued but not yet committed or failed.
    pub fn pending(&self) -> u64 {
        self.enqueued
            .saturating_sub(self.committed_events + self.failed_events)
    }
}

impl LogMetrics {
    /// Counts events handed to the appender.
    pub(crate) fn record_enqueued(&self, count: u64) {
        self.enqueued.fetch_add(count, Ordering::Relaxed);
    }

    /// Counts a batch written durably.
    pub(crate) fn record_committed(&self, count: u64, latency: Duration) {
        self.committed_events.fetch_add(count, Ordering::Relaxed);
        self.committed_batches.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.last_flush_micros.store(micros, Ordering::Relaxed);
    }

    /// Counts a batch that was not stored.
    pub(crate) fn record_failed(&self, count: u64) {
        self.failed_events.fetch_add(count, Ordering::Relaxed);
        self.failed_batches.fetch_add(1, Ordering::Relaxed);
    }

    /// The storage failure after which the log refuses every append, if there was one: the
    /// server can then publish nothing until it is restarted.
    pub fn stopped_by(&self) -> Option<String> {
        crate::lock(&self.stopped_by).clone()
    }

    fn stop(&self, reason: String) {
        *crate::lock(&self.stopped_by) = Some(reason);
    }

    /// Reads every counter (each one atomically; together they are only roughly consistent).
    pub fn snapshot(&self) -> LogMetricsSnapshot {
        LogMetricsSnapshot {
            enqueued: self.enqueued.load(Ordering::Relaxed),
            committed_events: self.committed_events.load(Ordering::Relaxed),
            committed_batches: self.committed_batches.load(Ordering::Relaxed),
            failed_events: self.failed_events.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            last_flush_latency: Duration::from_micros(
                self.last_flush_micros.load(Ordering::Relaxed),
            ),
            stopped: crate::lock(&self.stopped_by).is_some(),
        }
    }
}

/// One event to append, with its publish's idempotency key.
type Append = (Arc<Event>, Option<Arc<str>>);

/// Batches appends onto a dedicated thread: many appends, one batch write and one flush.
///
/// Hand it events in id order (as the engine emits `Output::Append`); reports come back to the
/// `on_commit` callback in the same order.
pub struct GroupCommitter {
    worker: Worker<Append>,
    metrics: Arc<LogMetrics>,
}

impl GroupCommitter {
    /// Starts the commit thread over `log`. `on_commit` runs on that thread after every batch:
    /// keep it short and non-blocking (send to a channel), since the next batch waits for it.
    ///
    /// # Panics
    /// If the OS cannot start a thread, like `std::thread::spawn`.
    pub fn start(
        log: Arc<dyn AppendLog>,
        on_commit: impl FnMut(CommitReport) + Send + 'static,
    ) -> Self {
        let metrics = Arc::new(LogMetrics::default());
        let thread_metrics = Arc::clone(&metrics);
        let worker = Worker::start("herald-log-commit", move |incoming| {
            run(&*log, &incoming, on_commit, &thread_metrics);
        });
        Self { worker, metrics }
    }

    /// Queues `event` (and the idempotency key it was published with) for the next batch;
    /// never blocks. Call in id order.
    pub fn append(&self, event: Arc<Event>, key: Option<Arc<str>>) {
        self.metrics.record_enqueued(1);
        if let Err((event, _)) = self.worker.send((event, key)) {
            tracing::error!(id = %event.id, "the log commit thread is gone; event not stored");
        }
    }

    /// The committer's counters, to export as metrics.
    pub fn metrics(&self) -> Arc<LogMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Commits everything queued, reports it, flushes the log, and stops the thread (also
    /// what dropping it does).
    pub fn shutdown(mut self) {
        self.worker.stop();
    }
}

fn run(
    log: &dyn AppendLog,
    incoming: &Batches<Append>,
    mut on_commit: impl FnMut(CommitReport),
    metrics: &LogMetrics,
) {
    let mut batch: Vec<Arc<Event>> = Vec::new();
    let mut keys: Vec<(EventId, Arc<str>)> = Vec::new();
    // Set by the first storage failure. From then on nothing is acknowledged: after a failed
    // write or fsync, what is on disk is unknown, and a later success would leave a hole
    // behind acknowledged ids.
    let mut stopped: Option<String> = None;
    // Adds one append to the batch; returns its data's size.
    let mut bytes = 0;
    while incoming.next(|(event, key)| {
        if let Some(key) = key {
            keys.push((event.id, key));
        }
        bytes += event.data.len();
        batch.push(event);
        batch.len() < MAX_BATCH_EVENTS && bytes < MAX_BATCH_BYTES
    }) {
        bytes = 0;
        let count = batch.len();
        let report = match &stopped {
            Some(reason) => Err(format!(
                "the event log stopped accepting events after a storage failure: {reason}"
            )),
            None => {
                let started = Instant::now();
                match log.append(&batch, &keys) {
                    Ok(()) => Ok(started.elapsed()),
                    Err(error) => {
                        tracing::error!(%error, events = count, "event log append failed");
                        if error.is_fatal() {
                            stopped = Some(error.to_string());
                            metrics.stop(error.to_string());
                        }
                        Err(error.to_string())
                    }
                }
            }
        };
        let count_u64 = count as u64;
        let report = match report {
            Ok(flush_latency) => {
                metrics.record_committed(count_u64, flush_latency);
                let up_to = batch.last().map_or(EventId::MIN, |event| event.id);
                CommitReport::Committed {
                    up_to,
                    count,
                    flush_latency,
                }
            }
            Err(error) => {
                metrics.record_failed(count_u64);
                CommitReport::Failed {
                    ids: batch.iter().map(|event| event.id).collect(),
                    error,
                }
            }
        };
        batch.clear();
        keys.clear();
        on_commit(report);
    }
    // The queue is closed and drained. Under `FsyncPolicy::Never` the last batches may still
    // sit in sled's buffers: make them durable before the process goes.
    if stopped.is_none()
        && let Err(error) = log.flush()
    {
        tracing::error!(%error, "flushing the event log at shutdown failed");
    }
}
