//! How much history the log keeps, and the background thread that trims the rest.

use std::sync::Arc;
use std::time::Duration;

use herald_core::EventId;

use super::EventLog;
use crate::worker::Looping;

/// How many events one [`Trimmer`] step removes at most: small enough that the committer,
/// which waits for the step to finish, is held up for milliseconds only.
pub const TRIM_STEP: usize = 1_000;

/// The retention limits; an event is trimmed once any of them is exceeded (oldest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Most events kept.
    pub max_events: u64,
    /// Oldest event kept, measured from the publish time in its id.
    pub max_age: Duration,
    /// Most bytes of stored records kept (keys and encoded records, not sled's overhead).
    pub max_bytes: u64,
    /// Most publishers' idempotency keys kept, the newest: as many as the engine remembers,
    /// so a retry is answered the same before and after a restart, whether or not its event
    /// is still retained.
    pub max_keys: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_events: 1_000_000,
            max_age: Duration::from_secs(7 * 24 * 60 * 60),
            max_bytes: 1 << 30,
            max_keys: herald_core::EngineConfig::default().idempotency_keys as u64,
        }
    }
}

/// What one trim step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrimReport {
    /// Events removed in this step.
    pub removed: usize,
    /// Stored bytes freed in this step.
    pub bytes: u64,
    /// The retention floor after this step: the highest id ever removed.
    pub floor: Option<EventId>,
    /// True when the step stopped at its bound and more events (or idempotency keys) are
    /// over the limits.
    pub more: bool,
}

/// Runs retention in the background: every `interval`, trim steps of [`TRIM_STEP`] until the
/// log is within its limits. Start one per log; stop it before dropping the log.
pub struct Trimmer {
    thread: Looping,
}

impl Trimmer {
    /// Starts the trimming thread. `on_trim` is told about every step that removed events (use
    /// it to pass the new floor to the engine); it runs on the trimming thread.
    ///
    /// # Panics
    /// If the OS cannot start a thread, like `std::thread::spawn`.
    pub fn start(
        log: Arc<dyn EventLog>,
        interval: Duration,
        mut on_trim: impl FnMut(TrimReport) + Send + 'static,
    ) -> Self {
        let thread = Looping::start("herald-log-trim", move |stop| {
            let mut pause = interval;
            while !stop.sleep(pause) {
                pause = interval;
                match log.trim(crate::hub::wall_ms(), TRIM_STEP) {
                    Ok(report) => {
                        if report.removed > 0 {
                            on_trim(report);
                        }
                        if report.more {
                            // Let queued appends take the writer lock between steps.
                            pause = Duration::from_millis(1);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "log retention step failed"),
                }
            }
        });
        Self { thread }
    }

    /// Stops the thread after its current step and waits for it.
    pub fn shutdown(mut self) {
        self.thread.stop();
    }
}
