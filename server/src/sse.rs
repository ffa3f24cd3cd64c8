//! One subscriber's outbound queue and the streaming response body that drains it.
//!
//! The hub pushes frames (shared `Bytes`); the body takes everything queued at once and
//! writes it as one chunk, so a burst of events costs one write, not one per event.
//!
//! A queue attached to a socket ([`SseBody::attach_direct`]) is written by a writer thread
//! instead (see [`crate::writer`]) while the socket keeps up. Its states:
//! - *idle*: empty, or written by nobody yet; the next push hands it to its writer;
//! - *scheduled*: waiting for its writer, which will send everything queued then;
//! - *handed*: the writer found the socket full (or broken), or the stream is ending; the
//!   connection's task writes, and returns the queue to idle once it has emptied it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use herald_core::ConnId;
use http_body::{Body, Frame, SizeHint};

use crate::hub::HubSender;
use crate::writer::{self, Shard};

/// A bounded queue of frames for one connection.
#[derive(Debug)]
pub struct Queue {
    limit: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    frames: VecDeque<Bytes>,
    bytes: usize,
    closed: bool,
    /// Ended by [`Queue::abort`]: what was queued, and what the socket still holds, is dropped.
    aborted: bool,
    waker: Option<Waker>,
    direct: Option<Direct>,
    handed: bool,
    scheduled: bool,
    /// When the oldest frame queued now was pushed (into an empty queue): how long the
    /// subscriber's events wait here is measured from it ([`crate::latency::DELIVERY`]).
    since: Option<Instant>,
    /// Told when the server ends the stream ([`Queue::close`], [`Queue::abort`]), with whether
    /// the stream is HTTP/2 (see [`SseBody::watch_end`]).
    on_end: Option<(Arc<EndWatch>, bool)>,
    /// The watch counts this stream among those ended and still held (its token there).
    lingering: Option<u64>,
    /// An operator's admin stream: not a subscriber, so outside the delivery latency.
    unmeasured: bool,
}

/// The socket a writer thread may write to, and that writer.
#[derive(Debug)]
struct Direct {
    fd: std::os::fd::RawFd,
    writer: Arc<Shard>,
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Queued,
    /// Refused: the queue holds its limit already (the consumer is too slow).
    Overflow,
    /// Refused: the stream has ended.
    Closed,
}

impl Queue {
    /// An empty queue that refuses frames beyond `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty queue for an admin stream, whose waits are not subscribers' delivery latency.
    pub fn unmeasured(limit: usize) -> Self {
        let queue = Self::new(limit);
        queue.lock().unmeasured = true;
        queue
    }

    /// Queues `frame` unless that would pass the limit. `now` is the caller's clock (read once
    /// for a whole fan-out): how long the frame waits here is measured from it.
    pub fn push(self: &Arc<Self>, frame: Bytes, now: Instant) -> Push {
        let (waker, writer) = {
            let mut inner = self.lock();
            if inner.closed {
                return Push::Closed;
            }
            if inner.bytes >= self.limit {
                // Full: the client is too slow. (A queue under its limit takes a frame
                // whatever its size, so an event larger than the limit still reaches a client
                // that keeps up, after the `retry:` or another event.) Nothing more goes in,
                // not even a frame that would fit later: the client would get it after a gap
                // and resume past what it missed. The hub aborts the stream next; the client
                // replays from the log.
                inner.closed = true;
                return Push::Overflow;
            }
            inner.bytes += frame.len();
            inner.frames.push_back(frame);
            inner.since.get_or_insert(now);
            inner.wake_consumer()
        };
        if let Some(w) = waker {
            w.wake();
        }
        if let Some(writer) = writer {
            writer.schedule(self.clone());
        }
        Push::Queued
    }

    /// Ends the stream after what is queued (and `last`, if given) has been written.
    pub fn close(&self, last: Option<Bytes>) {
        let waker = {
            let mut inner = self.lock();
            if let Some(frame) = last {
                inner.bytes += frame.len();
                inner.frames.push_back(frame);
                inner.since.get_or_insert_with(Instant::now);
            }
            inner.closed = true;
            // The task writes what is left and ends the stream.
            inner.handed = true;
            inner.tell_end(false);
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ends the stream now, dropping what is queued (a slow consumer: it replays on reconnect).
    pub fn abort(&self) {
        let waker = {
            let mut inner = self.lock();
            inner.frames.clear();
            inner.bytes = 0;
            inner.since = None;
            inner.closed = true;
            inner.aborted = true;
            inner.handed = true;
            inner.tell_end(true);
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Bytes queued and not yet taken by the body.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Bytes queued, and since when the oldest of them has waited (`None` when empty).
    pub fn waiting(&self) -> (usize, Option<Instant>) {
        let inner = self.lock();
        (
            inner.bytes,
            inner.since.filter(|_| !inner.frames.is_empty()),
        )
    }

    /// Ready once `done` holds of the queue: aborted ([`Queue::abort`]), or ended by the
    /// server ([`Queue::close`] or an abort).
    fn poll_until(&self, cx: &mut Context<'_>, done: fn(&Inner) -> bool) -> Poll<()> {
        let mut inner = self.lock();
        if done(&inner) {
            Poll::Ready(())
        } else {
            inner.register(cx);
            Poll::Pending
        }
    }

    /// True once the stream was ended by the server.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// See [`SseBody::attach_direct`].
    fn attach(self: &Arc<Self>, fd: std::os::fd::RawFd, writer: Arc<Shard>) -> DirectGuard {
        let schedule = {
            let mut inner = self.lock();
            inner.direct = Some(Direct { fd, writer });
            inner.handed = inner.closed;
            // Frames queued before the stream started (a replay, the first events).
            if inner.closed || inner.frames.is_empty() {
                None
            } else {
                inner.wake_consumer().1
            }
        };
        if let Some(writer) = schedule {
            writer.schedule(self.clone());
        }
        DirectGuard {
            queue: self.clone(),
        }
    }

    /// Called by the queue's writer thread: sends what is queued, or hands the queue to the
    /// connection's task when the socket cannot take it all now.
    pub fn write_direct(&self) {
        let waker = {
            let mut inner = self.lock();
            let was_scheduled = std::mem::take(&mut inner.scheduled);
            let fd = match &inner.direct {
                Some(d) if was_scheduled && !inner.handed => d.fd,
                _ => return,
            };
            // More than one `sendmsg` only when the queue holds more frames than one takes.
            while let Some(sent) = writer::send(fd, &inner.frames) {
                inner.bytes -= sent;
                let mut n = sent;
                while let Some(front) = inner.frames.front_mut() {
                    if n < front.len() {
                        // A partial write: the socket is full.
                        let _ = front.split_to(n);
                        break;
                    }
                    n -= front.len();
                    inner.frames.pop_front();
                }
                if inner.frames.is_empty() {
                    inner.written();
                    return;
                }
                if n > 0 || sent == 0 {
                    // Stopped inside a frame, or took nothing: the socket is full.
                    break;
                }
            }
            inner.handed = true;
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut inner = self.lock();
        if inner.direct.is_some() && !inner.handed {
            // The writer thread has it.
            inner.register(cx);
            return Poll::Pending;
        }
        match inner.frames.len() {
            0 if inner.closed => Poll::Ready(None),
            0 => {
                // Emptied by the task after a hand-over: back to direct writes.
                inner.handed = false;
                inner.register(cx);
                Poll::Pending
            }
            1 => {
                inner.bytes = 0;
                inner.written();
                Poll::Ready(inner.frames.pop_front())
            }
            _ => {
                let mut chunk = BytesMut::with_capacity(inner.bytes);
                for frame in inner.frames.drain(..) {
                    chunk.extend_from_slice(&frame);
                }
                inner.bytes = 0;
                inner.written();
                Poll::Ready(Some(chunk.freeze()))
            }
        }
    }
}

impl Inner {
    /// Tells the connection's watch, once, that the server ended the stream (`aborted`: as too
    /// slow). Under the queue's lock, so that the body's drop, which releases the stream from
    /// the watch, cannot come between.
    fn tell_end(&mut self, aborted: bool) {
        if let Some((watch, http2)) = self.on_end.take() {
            self.lingering = watch.ended(aborted && !http2);
        }
    }

    /// Everything queued went to the connection (written, or taken by its writer).
    fn written(&mut self) {
        if let Some(since) = self.since.take()
            && !self.unmeasured
        {
            crate::latency::DELIVERY.observe(since.elapsed());
        }
    }

    /// After a push: who must write it, the connection's task (its waker) or a writer thread
    /// (the queue was idle and is now scheduled on it).
    fn wake_consumer(&mut self) -> (Option<Waker>, Option<Arc<Shard>>) {
        match &self.direct {
            Some(d) if !self.handed => {
                if self.scheduled {
                    (None, None)
                } else {
                    self.scheduled = true;
                    (None, Some(d.writer.clone()))
                }
            }
            _ => (self.waker.take(), None),
        }
    }

    fn register(&mut self, cx: &Context<'_>) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
    }
}

/// Detaches a queue from its socket when dropped; see [`SseBody::attach_direct`].
#[derive(Debug)]
pub struct DirectGuard {
    queue: Arc<Queue>,
}

impl Drop for DirectGuard {
    fn drop(&mut self) {
        let mut inner = self.queue.lock();
        inner.direct = None;
        inner.handed = true;
    }
}

/// The body of an SSE response: never ends by itself, only when the hub closes its queue.
/// Dropping it (the client went away) tells the hub.
#[derive(Debug)]
pub struct SseBody {
    conn: ConnId,
    queue: Arc<Queue>,
    hub: HubSender,
    /// What must last as long as the stream (its user's place in a cluster-wide count).
    held: Option<Box<dyn std::fmt::Debug + Send + Sync>>,
    /// Its hyper connection's watch, told when a body the server ended is gone.
    watch: Option<Arc<EndWatch>>,
}

impl SseBody {
    /// The body for connection `conn`, fed by `queue`.
    pub fn new(conn: ConnId, queue: Arc<Queue>, hub: HubSender) -> Self {
        Self {
            conn,
            queue,
            hub,
            held: None,
            watch: None,
        }
    }

    /// Tells `watch`, its connection's, when the server ends the stream, for a stream served
    /// by hyper. An HTTP/1.1 stream aborted as too slow has its connection reset at once, as on
    /// the direct path: a write to a client that stopped reading waits for ever, and the
    /// response's end would leave the connection waiting for another request with what its
    /// socket holds. Any other stream the server ends (kicked, its token expired, too slow over
    /// HTTP/2, the server shutting down) whose body hyper still holds after a grace period has
    /// its connection reset: a client that stopped reading would otherwise keep it, and what
    /// was queued for it, for ever and outside every count (over HTTP/2 hyper polls a body only
    /// when its stream has window, so it would not even see an abort).
    pub fn watch_end(&mut self, watch: Arc<EndWatch>, http2: bool) {
        self.watch = Some(watch.clone());
        let mut inner = self.queue.lock();
        inner.on_end = Some((watch, http2));
        if inner.closed {
            let aborted = inner.aborted;
            inner.tell_end(aborted);
        }
    }

    /// Keeps `value` until the stream ends: dropped with the body.
    pub fn hold(&mut self, value: Box<dyn std::fmt::Debug + Send + Sync>) {
        self.held = Some(value);
    }
}

impl SseBody {
    /// Waits for what is queued and takes it as one chunk; `None` once the server ended the
    /// stream (for drivers that write the socket themselves).
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.queue.poll_take(cx)).await
    }

    /// Waits until the server aborts the stream (a slow consumer): a write in progress is not
    /// worth finishing, the client replays what it missed when it reconnects.
    pub async fn aborted(&self) {
        std::future::poll_fn(|cx| self.queue.poll_until(cx, |q| q.aborted)).await;
    }

    /// Waits until the server ends the stream (what is queued is then the last of it).
    pub async fn closed(&self) {
        std::future::poll_fn(|cx| self.queue.poll_until(cx, |q| q.closed)).await;
    }

    /// True once the server ended the stream.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// True once the server aborted the stream.
    pub fn is_aborted(&self) -> bool {
        self.queue.lock().aborted
    }

    /// Takes what is queued now, if anything, without waiting.
    pub fn take_queued(&mut self) -> Option<Bytes> {
        match self
            .queue
            .poll_take(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(chunk) => chunk,
            Poll::Pending => None,
        }
    }

    /// Lets `writer` write queued frames straight to the socket `fd` while it keeps up;
    /// [`Self::next_chunk`] then yields only what the writer hands back. The socket must stay
    /// open until the returned guard is dropped (which stops the writer using it).
    pub fn attach_direct(&self, fd: std::os::fd::RawFd, writer: Arc<Shard>) -> DirectGuard {
        self.queue.attach(fd, writer)
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.queue
            .poll_take(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        if !self.queue.is_closed() {
            self.hub.disconnected(self.conn);
        }
        if let Some(watch) = &self.watch
            && let Some(token) = self.queue.lock().lingering.take()
        {
            watch.released(token);
        }
    }
}

/// What a connection served by hyper learns of the streams the server ended (see
/// [`SseBody::watch_end`]), and how it knows when to reset itself.
#[derive(Debug, Default)]
pub struct EndWatch {
    notify: tokio::sync::Notify,
    /// An HTTP/1.1 stream was aborted.
    reset_now: std::sync::atomic::AtomicBool,
    /// Streams ended whose bodies hyper still holds, by token, with when each was ended.
    lingering: Mutex<(u64, std::collections::BTreeMap<u64, tokio::time::Instant>)>,
}

impl EndWatch {
    /// A stream was ended: reset the connection now, or count it (the token to release it
    /// with when its body is dropped).
    fn ended(&self, reset_now: bool) -> Option<u64> {
        let token = if reset_now {
            self.reset_now
                .store(true, std::sync::atomic::Ordering::SeqCst);
            None
        } else {
            let mut lingering = crate::lock(&self.lingering);
            let (next, ended) = &mut *lingering;
            *next += 1;
            ended.insert(*next, tokio::time::Instant::now());
            Some(*next)
        };
        self.notify.notify_one();
        token
    }

    fn released(&self, token: u64) {
        crate::lock(&self.lingering).1.remove(&token);
    }

    /// When the oldest stream still held was ended.
    fn oldest(&self) -> Option<tokio::time::Instant> {
        crate::lock(&self.lingering).1.values().min().copied()
    }

    /// Returns when the connection should be reset: at once after an HTTP/1.1 abort, or once
    /// a stream the server ended has been held for `grace` (each stream its own grace).
    pub async fn reset_due(&self, grace: std::time::Duration) {
        loop {
            if self.reset_now.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            match self.oldest() {
                Some(ended) if ended.elapsed() >= grace => return,
                Some(ended) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(ended + grace) => {}
                        () = self.notify.notified() => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Polls `reset_due` until `at` (paused time): whether it returned by then (at `at` too).
    async fn reset_by(watch: &EndWatch, at: tokio::time::Instant) -> bool {
        tokio::select! {
            // Both may be ready at once: the answer must not be a coin toss.
            biased;
            () = watch.reset_due(Duration::from_secs(5)) => true,
            () = tokio::time::sleep_until(at) => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_ended_stream_has_its_own_grace_before_the_connection_is_reset() {
        let start = tokio::time::Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let watch = EndWatch::default();
        let first = watch.ended(false).expect("counted");
        assert!(!reset_by(&watch, at(1000)).await);
        // Its client took the rest (or reset the stream): released before its grace ran out.
        watch.released(first);
        assert!(!reset_by(&watch, at(2500)).await);
        watch.ended(false).expect("counted");
        // The first one's grace would have ended at 5 s: the second's ends at 7.5 s.
        assert!(!reset_by(&watch, at(7400)).await);
        assert!(reset_by(&watch, at(7600)).await);
        // An HTTP/1.1 abort resets at once.
        let watch = EndWatch::default();
        assert_eq!(watch.ended(true), None);
        assert!(reset_by(&watch, tokio::time::Instant::now()).await);
    }

    #[test]
    fn a_stream_the_server_ends_is_watched_until_its_body_is_dropped() {
        let hub = crate::hub::HubSender::detached();
        for kick in [true, false] {
            let queue = Arc::new(Queue::new(1 << 20));
            let watch = Arc::new(EndWatch::default());
            let mut body = SseBody::new(ConnId(1), queue.clone(), hub.clone());
            body.watch_end(watch.clone(), true);
            assert_eq!(watch.oldest(), None);
            if kick {
                queue.close(Some(Bytes::from_static(b"event: herald.closed\n\n")));
            } else {
                queue.abort();
            }
            assert!(watch.oldest().is_some(), "kicked: {kick}");
            drop(body);
            assert_eq!(watch.oldest(), None, "kicked: {kick}");
        }
    }

    #[test]
    fn a_full_queue_refuses_frames_and_a_closed_one_ends() {
        let q = Arc::new(Queue::new(10));
        assert_eq!(
            q.push(Bytes::from_static(b"1"), Instant::now()),
            Push::Queued
        );
        // Under the limit a frame goes in whatever its size: one larger than the whole
        // limit still reaches a client that keeps up.
        assert_eq!(
            q.push(Bytes::from_static(b"2345678901234"), Instant::now()),
            Push::Queued
        );
        assert_eq!(
            q.push(Bytes::from_static(b"5"), Instant::now()),
            Push::Overflow
        );
        // A frame that would fit is refused too: after the refused one it would be a gap.
        assert_eq!(
            q.push(Bytes::from_static(b"x"), Instant::now()),
            Push::Closed
        );
        assert_eq!(q.queued_bytes(), 14);
        assert!(q.is_closed());
        q.close(Some(Bytes::from_static(b"bye")));
        assert_eq!(
            q.push(Bytes::from_static(b"x"), Instant::now()),
            Push::Closed
        );
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        // Everything queued comes out as one chunk, then the end.
        assert_eq!(
            q.poll_take(&mut cx),
            Poll::Ready(Some(Bytes::from_static(b"12345678901234bye")))
        );
        assert_eq!(q.poll_take(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn one_oversized_frame_still_gets_through_an_empty_queue() {
        let q = Arc::new(Queue::new(4));
        assert_eq!(
            q.push(Bytes::from_static(b"123456"), Instant::now()),
            Push::Queued
        );
    }

    mod direct {
        use super::*;
        use crate::writer::Writers;
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        use std::os::unix::net::UnixStream;
        use std::time::Duration;

        fn pair() -> (UnixStream, UnixStream) {
            let (a, b) = UnixStream::pair().unwrap();
            b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            (a, b)
        }

        fn read_exactly(from: &mut UnixStream, len: usize) -> Vec<u8> {
            let mut out = vec![0; len];
            from.read_exact(&mut out).unwrap();
            out
        }

        fn poll(q: &Queue) -> Poll<Option<Bytes>> {
            q.poll_take(&mut Context::from_waker(Waker::noop()))
        }

        #[test]
        fn the_writer_sends_queued_frames_without_the_task() {
            let writers = Writers::start(1, || {}).unwrap();
            let (a, mut b) = pair();
            let q = Arc::new(Queue::new(1 << 20));
            // Queued before the stream started: sent once attached.
            q.push(Bytes::from_static(b"data: 1\n\n"), Instant::now());
            let _guard = q.attach(a.as_raw_fd(), writers.assign());
            q.push(Bytes::from_static(b"data: 2\n\n"), Instant::now());
            assert_eq!(read_exactly(&mut b, 18), b"data: 1\n\ndata: 2\n\n");
            // Nothing for the task to write.
            assert_eq!(poll(&q), Poll::Pending);
            assert_eq!(q.queued_bytes(), 0);
        }

        #[test]
        fn a_full_socket_goes_back_to_the_task_and_order_is_kept() {
            let writers = Writers::start(1, || {}).unwrap();
            let (a, mut b) = pair();
            let q = Arc::new(Queue::new(64 << 20));
            let _guard = q.attach(a.as_raw_fd(), writers.assign());
            let big = Bytes::from(vec![b'x'; 8 << 20]);
            q.push(big.clone(), Instant::now());
            q.push(Bytes::from_static(b"end"), Instant::now());
            // The writer fills the socket and hands over the rest.
            let rest = loop {
                match poll(&q) {
                    Poll::Ready(Some(rest)) => break rest,
                    Poll::Ready(None) => panic!("the stream ended"),
                    Poll::Pending => std::thread::sleep(Duration::from_millis(5)),
                }
            };
            assert!(rest.len() < big.len() + 3 && rest.ends_with(b"end"));
            let reader = std::thread::spawn(move || {
                let got = read_exactly(&mut b, (8 << 20) + 3);
                (b, got)
            });
            // What the connection's task does with it.
            (&a).write_all(&rest).unwrap();
            let (mut b, got) = reader.join().unwrap();
            assert!(got[..8 << 20].iter().all(|&c| c == b'x') && got.ends_with(b"end"));
            // Emptied by the task: direct writes resume.
            assert_eq!(poll(&q), Poll::Pending);
            q.push(Bytes::from_static(b"again"), Instant::now());
            assert_eq!(read_exactly(&mut b, 5), b"again");
        }

        #[test]
        fn a_closed_or_detached_queue_is_left_to_the_task() {
            let writers = Writers::start(1, || {}).unwrap();
            let (a, mut b) = pair();
            let q = Arc::new(Queue::new(1 << 20));
            let guard = q.attach(a.as_raw_fd(), writers.assign());
            q.close(Some(Bytes::from_static(b"retry: 10\n\n")));
            assert_eq!(
                poll(&q),
                Poll::Ready(Some(Bytes::from_static(b"retry: 10\n\n")))
            );
            assert_eq!(poll(&q), Poll::Ready(None));

            let q = Arc::new(Queue::new(1 << 20));
            drop(q.attach(a.as_raw_fd(), writers.assign()));
            drop(guard);
            q.push(Bytes::from_static(b"data: late\n\n"), Instant::now());
            assert_eq!(
                poll(&q),
                Poll::Ready(Some(Bytes::from_static(b"data: late\n\n")))
            );
            b.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 16];
            assert!(b.read(&mut buf).is_err(), "nothing reached the socket");
        }
    }
}
