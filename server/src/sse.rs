//! One subscriber's outbound queue and the streaming response body that drains it.
//!
//! The hub pushes frames (shared `Bytes`); the body takes everything queued at once and
//! writes it as one chunk, so a burst of events costs one write, not one per event.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use herald_core::ConnId;
use http_body::{Body, Frame, SizeHint};

use crate::hub::HubSender;

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
    waker: Option<Waker>,
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

    /// Queues `frame` unless that would pass the limit.
    pub fn push(&self, frame: Bytes) -> Push {
        let waker = {
            let mut inner = self.lock();
            if inner.closed {
                return Push::Closed;
            }
            if inner.bytes + frame.len() > self.limit && !inner.frames.is_empty() {
                return Push::Overflow;
            }
            inner.bytes += frame.len();
            inner.frames.push_back(frame);
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
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
            }
            inner.closed = true;
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
            inner.closed = true;
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

    /// True once the stream was ended by the server.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut inner = self.lock();
        match inner.frames.len() {
            0 if inner.closed => Poll::Ready(None),
            0 => {
                if !inner
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    inner.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            1 => {
                inner.bytes = 0;
                Poll::Ready(inner.frames.pop_front())
            }
            _ => {
                let mut chunk = BytesMut::with_capacity(inner.bytes);
                for frame in inner.frames.drain(..) {
                    chunk.extend_from_slice(&frame);
                }
                inner.bytes = 0;
                Poll::Ready(Some(chunk.freeze()))
            }
        }
    }
}

/// The body of an SSE response: never ends by itself, only when the hub closes its queue.
/// Dropping it (the client went away) tells the hub.
#[derive(Debug)]
pub struct SseBody {
    conn: ConnId,
    queue: Arc<Queue>,
    hub: HubSender,
}

impl SseBody {
    /// The body for connection `conn`, fed by `queue`.
    pub fn new(conn: ConnId, queue: Arc<Queue>, hub: HubSender) -> Self {
        Self { conn, queue, hub }
    }
}

impl SseBody {
    /// Waits for what is queued and takes it as one chunk; `None` once the server ended the
    /// stream (for drivers that write the socket themselves).
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.queue.poll_take(cx)).await
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_frames_and_a_closed_one_ends() {
        let q = Queue::new(10);
        assert_eq!(q.push(Bytes::from_static(b"12345678")), Push::Queued);
        assert_eq!(q.push(Bytes::from_static(b"12345")), Push::Overflow);
        assert_eq!(q.queued_bytes(), 8);
        q.close(Some(Bytes::from_static(b"bye")));
        assert_eq!(q.push(Bytes::from_static(b"x")), Push::Closed);
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        // Everything queued comes out as one chunk, then the end.
        assert_eq!(
            q.poll_take(&mut cx),
            Poll::Ready(Some(Bytes::from_static(b"12345678bye")))
        );
        assert_eq!(q.poll_take(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn one_oversized_frame_still_gets_through_an_empty_queue() {
        let q = Queue::new(4);
        assert_eq!(q.push(Bytes::from_static(b"123456")), Push::Queued);
    }
}
