//! Socket writers: a few threads that write queued frames straight to subscriber sockets.
//!
//! A fan-out queues one frame for each of thousands of connections. Waking each connection's
//! task to write its frame costs a task wake-up, a poll and a timer per delivery, on top of
//! the write itself. Instead, a queue that gets a frame while idle is handed to one of these
//! threads, which drains every queue it was handed with one non-blocking `sendmsg` each. A
//! queue that gets more frames while it waits for its writer is drained in the same write,
//! so a burst of events still costs one write per connection.
//!
//! A socket that would block (the client reads slowly) is handed back to its connection's
//! task, which waits for the socket to become writable, writes, and returns the queue to
//! direct writing once it is empty. See [`crate::sse::Queue`] for the states.

use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;

use crate::sse::Queue;

/// The writer threads; each subscriber socket is assigned to one of them.
#[derive(Debug)]
pub struct Writers {
    shards: Vec<Arc<Shard>>,
    next: std::sync::atomic::AtomicUsize,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// One writer thread's work list.
#[derive(Debug, Default)]
pub struct Shard {
    state: Mutex<ShardState>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct ShardState {
    ready: Vec<Arc<Queue>>,
    sleeping: bool,
    stop: bool,
}

impl Writers {
    /// Starts `threads` writer threads (at least one). `on_start` runs first on each (the
    /// server lowers their priority below the control thread's).
    pub fn start(threads: usize, on_start: fn()) -> std::io::Result<Self> {
        let shards: Vec<Arc<Shard>> = (0..threads.max(1))
            .map(|_| Arc::new(Shard::default()))
            .collect();
        let mut handles = Vec::with_capacity(shards.len());
        for (i, shard) in shards.iter().enumerate() {
            let shard = shard.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("herald-writer-{i}"))
                    .spawn(move || {
                        on_start();
                        shard.run();
                    })?,
            );
        }
        Ok(Self {
            shards,
            next: Default::default(),
            threads: handles,
        })
    }

    /// The writer for a new connection (round robin).
    pub fn assign(&self) -> Arc<Shard> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.shards[i % self.shards.len()].clone()
    }
}

impl Drop for Writers {
    /// Stops the threads once they have written what they were handed.
    fn drop(&mut self) {
        for shard in &self.shards {
            shard.lock().stop = true;
            shard.wake.notify_one();
        }
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, ShardState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `queue` to this writer: it has frames and no write pending.
    pub fn schedule(&self, queue: Arc<Queue>) {
        let wake = {
            let mut state = self.lock();
            state.ready.push(queue);
            std::mem::take(&mut state.sleeping)
        };
        if wake {
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        let mut batch = Vec::new();
        loop {
            {
                let mut state = self.lock();
                while state.ready.is_empty() && !state.stop {
                    state.sleeping = true;
                    state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                if state.ready.is_empty() {
                    return;
                }
                std::mem::swap(&mut batch, &mut state.ready);
            }
            for queue in batch.drain(..) {
                queue.write_direct();
            }
        }
    }
}

/// The most frames gathered into one `sendmsg`.
const MAX_IOV: usize = 64;

/// Writes `frames` (in order) to `fd` with one non-blocking `sendmsg`: how many bytes went
/// out (possibly fewer than offered), or `None` when none could, because the socket's buffer
/// is full or the connection is broken (its task finds out which on its own write).
///
/// A lone frame (every delivery of a paced fan-out) goes with `send` instead, which skips
/// copying in a message header and an iovec: 2 to 3% less server CPU per delivery at 10,000
/// subscribers and 10 events/s (BENCHMARKS.md).
pub fn send(fd: RawFd, frames: &std::collections::VecDeque<Bytes>) -> Option<usize> {
    const FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY (both calls): `fd` is open for the duration of the call: the caller holds the
    // queue's lock, and the connection's task clears the fd under that lock before closing it.
    if frames.len() == 1 {
        let frame = &frames[0];
        // SAFETY: the buffer is a live `Bytes` borrowed for this call.
        return retrying(|| unsafe { libc::send(fd, frame.as_ptr().cast(), frame.len(), FLAGS) });
    }
    let mut iov: [libc::iovec; MAX_IOV] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOV];
    let mut count = 0;
    for (slot, frame) in iov.iter_mut().zip(frames.iter()) {
        slot.iov_base = frame.as_ptr() as *mut libc::c_void;
        slot.iov_len = frame.len();
        count += 1;
    }
    // SAFETY: a zeroed msghdr is valid (no name, no control data); iov points at `count`
    // initialised entries, each describing a live `Bytes` borrowed for this call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = count as _;
    // SAFETY: `msg` describes the iovecs above.
    retrying(|| unsafe { libc::sendmsg(fd, &msg, FLAGS) })
}

/// Runs a non-blocking send until a signal does not interrupt it: the bytes sent, or `None`.
fn retrying(mut call: impl FnMut() -> isize) -> Option<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Some(n as usize);
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return None;
        }
    }
}
