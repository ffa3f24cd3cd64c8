//! Dedicated threads for blocking work: [`Worker`], fed through a channel, takes its input in
//! batches (the log's group committer and the cluster publisher); [`Looping`] runs until it
//! is told to stop (log retention and the cluster reader).

use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::lock;

/// The thread and the sending end of its queue. Dropping it closes the queue and waits for the
/// thread to finish what was queued.
pub(crate) struct Worker<T> {
    queue: Option<mpsc::Sender<T>>,
    thread: Option<JoinHandle<()>>,
    name: &'static str,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts thread `name` running `run`, which should return once [`Batches::next`] says the
    /// queue is closed and drained.
    ///
    /// # Panics
    /// If the OS cannot start a thread, like `std::thread::spawn`.
    pub(crate) fn start(name: &'static str, run: impl FnOnce(Batches<T>) + Send + 'static) -> Self {
        let (queue, incoming) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(Batches(incoming)))
            .unwrap_or_else(|e| panic!("the OS refused to start thread {name}: {e}"));
        Self {
            queue: Some(queue),
            thread: Some(thread),
            name,
        }
    }

    /// Queues `item`; never blocks. Gives it back if the thread is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        match &self.queue {
            Some(queue) => queue.send(item).map_err(|mpsc::SendError(item)| item),
            None => Err(item),
        }
    }
}

impl<T> Worker<T> {
    /// Closes the queue, lets the thread finish what is queued, and waits for it.
    pub(crate) fn stop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(thread = self.name, "a worker thread panicked");
        }
    }
}

impl<T> Drop for Worker<T> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The worker thread's end of the queue.
pub(crate) struct Batches<T>(mpsc::Receiver<T>);

impl<T> Batches<T> {
    /// Waits for an item, then hands it and whatever else is already queued to `take`, one by
    /// one, for as long as `take` answers true (the batch is not full). False once the queue
    /// is closed and empty: the thread's work is done.
    pub(crate) fn next(&self, mut take: impl FnMut(T) -> bool) -> bool {
        let Ok(first) = self.0.recv() else {
            return false;
        };
        let mut more = take(first);
        while more {
            let Ok(item) = self.0.try_recv() else { break };
            more = take(item);
        }
        true
    }
}

/// A thread that runs until it is told to stop. Dropping it stops it and waits for it.
pub(crate) struct Looping {
    stop: Stop,
    thread: Option<JoinHandle<()>>,
    name: &'static str,
}

impl Looping {
    /// Starts thread `name` running `run`, which should return soon after [`Stop::is_set`]
    /// (or a [`Stop::sleep`] returning true) says so.
    ///
    /// # Panics
    /// If the OS cannot start a thread, like `std::thread::spawn`.
    pub(crate) fn start(name: &'static str, run: impl FnOnce(Stop) + Send + 'static) -> Self {
        let stop = Stop::default();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(thread_stop))
            .unwrap_or_else(|e| panic!("the OS refused to start thread {name}: {e}"));
        Self {
            stop,
            thread: Some(thread),
            name,
        }
    }

    /// Tells the thread to stop and waits for it.
    pub(crate) fn stop(&mut self) {
        self.stop.set();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(thread = self.name, "a background thread panicked");
        }
    }
}

impl Drop for Looping {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A [`Looping`] thread's stop signal, which it can sleep on.
#[derive(Clone, Default)]
pub(crate) struct Stop(Arc<(Mutex<bool>, Condvar)>);

impl Stop {
    fn set(&self) {
        let (flag, wake) = &*self.0;
        *lock(flag) = true;
        wake.notify_all();
    }

    /// True once the thread was told to stop.
    pub(crate) fn is_set(&self) -> bool {
        *lock(&self.0.0)
    }

    /// Sleeps up to `timeout`, less if told to stop meanwhile; true when told to stop.
    pub(crate) fn sleep(&self, timeout: Duration) -> bool {
        let (flag, wake) = &*self.0;
        let (stopped, _) = wake
            .wait_timeout_while(lock(flag), timeout, |stopped| !*stopped)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn items_arrive_in_bounded_batches_and_everything_queued_is_finished_on_stop() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&batches);
        let (go, wait) = mpsc::channel::<()>();
        let mut worker = Worker::start("test-worker", move |incoming: Batches<u32>| {
            // Hold the first batch back until everything is queued, so batching shows.
            let _ = wait.recv();
            let mut batch = Vec::new();
            while incoming.next(|item| {
                batch.push(item);
                batch.len() < 4
            }) {
                seen.lock().unwrap().push(std::mem::take(&mut batch));
            }
        });
        for item in 0..10 {
            worker.send(item).unwrap();
        }
        go.send(()).unwrap();
        worker.stop();
        let batches = batches.lock().unwrap().clone();
        assert_eq!(
            batches,
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
        );
        assert_eq!(
            worker.send(10),
            Err(10),
            "a stopped worker gives items back"
        );
    }

    #[test]
    fn a_looping_thread_is_woken_from_its_sleep_when_stopped() {
        let (tx, rx) = mpsc::channel();
        let mut looping = Looping::start("test-looping", move |stop: Stop| {
            // A sleep far longer than the test: only the stop can end it.
            let stopped = stop.sleep(Duration::from_secs(3_600));
            let _ = tx.send((stopped, stop.is_set()));
        });
        looping.stop();
        assert_eq!(rx.recv().unwrap(), (true, true));
    }
}
