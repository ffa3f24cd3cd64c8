//! herald-server: the `herald` binary's library: the durable log, the hub that drives the
//! herald-core engine, and the HTTP API.

pub mod api;
pub mod auth;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod config;
pub mod hub;
pub mod latency;
pub mod log;
pub mod metrics;
pub mod nodes;
pub mod redis;
pub mod server;
pub mod sse;
pub mod stream_h1;
pub mod tls;
pub mod user_cap;
mod worker;
pub mod writer;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// When a log line that could repeat many times a second was last written.
#[derive(Debug, Default)]
pub(crate) struct Throttle(pub(crate) Option<Instant>);

impl Throttle {
    /// Whether the line is due now (the first time, or `every` after the last); if it is, it
    /// counts as written.
    pub(crate) fn due(&mut self, every: Duration) -> bool {
        let due = self.0.is_none_or(|at| at.elapsed() >= every);
        if due {
            self.0 = Some(Instant::now());
        }
        due
    }
}

/// Locks `mutex` even if a thread panicked while holding it: every mutex here guards plain
/// values (counters, caches, idle connections, never a half-written transaction), which stay
/// usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f`, turning a panic into an error carrying its message, without the panic report on
/// stderr: for a library that panics on bad input (sled, on damaged files) where Herald has
/// a clearer error to give. Meant for start-up, when no other thread is likely to panic at
/// the same moment (the report hook is process-wide while `f` runs).
pub(crate) fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}
