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

/// Locks `mutex` even if a thread panicked while holding it: every mutex here guards plain
/// values (counters, caches, idle connections, never a half-written transaction), which stay
/// usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
