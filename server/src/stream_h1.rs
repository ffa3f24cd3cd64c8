//! The direct HTTP/1.1 path for `GET /events`: a subscriber's connection served without
//! hyper.
//!
//! An idle SSE subscriber is the common case, and what it costs is part of the product.
//! Through hyper each one keeps two 8 KiB buffers (request reading, response heads) for the
//! life of the stream and pays chunked encoding and the dispatcher on every write. Here the
//! request head is read into a buffer that is freed before streaming, the stream is
//! delimited by closing the connection (`Connection: close`; no chunk framing), and what the
//! hub queues is written by a writer thread ([`crate::writer`]), everything queued at once in
//! one `sendmsg`, without waking this connection's task. Anything that is not a plain
//! `GET /events` goes to hyper as before.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api::{self, ApiError, AppState, Opened};

/// The longest request head accepted on this path, as on every other.
const MAX_HEAD: usize = crate::server::MAX_REQUEST_HEAD;
/// Most header lines in the request head: hyper's limit, which every other request meets.
const MAX_HEADERS: usize = 100;

/// A write that cannot make progress for this long means the client is gone.
const WRITE_STALL: Duration = Duration::from_secs(30);

/// Most bytes a subscriber may send after its request before it is cut off (a browser
/// sends none: an `EventSource`'s connection carries one request).
const MAX_SENT_WHILE_STREAMING: usize = 16 * 1024;

/// How long the last of a stream the server ended (kicked, token expired, shutdown) may take
/// to write: a client that reads takes it at once; one that stopped reading is reset, and
/// its socket (and in a cluster its user's place) is given up, not held for `WRITE_STALL`.
const CLOSING_STALL: Duration = Duration::from_secs(2);

/// The bytes a request must start with to take this path.
const PREFIX: &[u8] = b"GET /events";

/// True when `peeked` (the connection's first bytes) is a request this path serves.
pub fn is_subscribe(peeked: &[u8]) -> bool {
    peeked.len() > PREFIX.len()
        && peeked.starts_with(PREFIX)
        && matches!(peeked[PREFIX.len()], b' ' | b'?')
}

/// Serves one subscriber connection to its end. `deadline` bounds reading the head.
pub async fn serve(
    mut stream: TcpStream,
    remote: SocketAddr,
    state: Arc<AppState>,
    header_timeout: Duration,
) {
    let head = match tokio::time::timeout(header_timeout, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(HeadError::Io)) => return,
        Ok(Err(HeadError::TooLarge)) => {
            let e = ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the request head is too large",
            );
            return write_error(&mut stream, &e, &Cors::default()).await;
        }
        Ok(Err(HeadError::Malformed)) => {
            let e = ApiError::new(StatusCode::BAD_REQUEST, "malformed request");
            return write_error(&mut stream, &e, &Cors::default()).await;
        }
        Err(_) => {
            return tracing::debug!(%remote, "request head not complete within {header_timeout:?}; closing");
        }
    };
    let cors = Cors {
        allowed: head
            .headers
            .get(http::header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .filter(|o| api::cors_allows(&state, o))
            .map(str::to_owned),
        vary: !state.cors_origins.is_empty(),
    };
    let peer = api::Peer {
        addr: remote,
        protocol: herald_core::Protocol::Http1,
        tls: false,
    };
    let opened = api::open_stream(&head.uri, &head.headers, &state, peer, false).await;
    drop(head);
    match opened {
        Ok(Opened::Stream(body)) => {
            let writer = state.writers.assign();
            drop(state);
            stream_events(stream, body, writer, &cors).await
        }
        Ok(Opened::RetryLater(frame)) => {
            let mut out = stream_head(&cors);
            out.extend_from_slice(&frame);
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
        }
        Err(e) => {
            state.refused.count(&e);
            write_error(&mut stream, &e, &cors).await;
        }
    }
}

struct Head {
    uri: http::Uri,
    headers: HeaderMap,
}

enum HeadError {
    Io,
    TooLarge,
    Malformed,
}

async fn read_head(stream: &mut TcpStream) -> Result<Head, HeadError> {
    // Read into the heap buffer itself: a buffer on the stack would be part of this future,
    // which the connection's task is sized for as long as its stream lasts.
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len());
        }
        let seen = buf.len();
        let n = stream.read_buf(&mut buf).await.map_err(|_| HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Io);
        }
        // A head ends with a blank line: parse only once one may have arrived, not the whole
        // head again for every packet of a large one.
        let fresh = &buf[seen.saturating_sub(3)..];
        let ended =
            fresh.windows(2).any(|w| w == b"\n\n") || fresh.windows(3).any(|w| w == b"\n\r\n");
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        if !ended {
            continue;
        }
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let uri: http::Uri = req
                    .path
                    .unwrap_or("/")
                    .parse()
                    .map_err(|_| HeadError::Malformed)?;
                let mut headers = HeaderMap::with_capacity(req.headers.len());
                for h in req.headers.iter() {
                    let name = HeaderName::from_bytes(h.name.as_bytes())
                        .map_err(|_| HeadError::Malformed)?;
                    let value =
                        HeaderValue::from_bytes(h.value).map_err(|_| HeadError::Malformed)?;
                    headers.append(name, value);
                }
                return Ok(Head { uri, headers });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return Err(HeadError::TooLarge);
            }
            Err(_) => return Err(HeadError::Malformed),
        }
    }
}

/// The CORS headers of an answer.
#[derive(Default)]
pub(crate) struct Cors {
    /// The request's origin, when the allow-list has it.
    allowed: Option<String>,
    /// With an allow-list every answer depends on the origin, as through hyper.
    vary: bool,
}

fn stream_head(cors: &Cors) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
          x-accel-buffering: no\r\nconnection: close\r\n",
    );
    push_cors(&mut out, cors);
    out.extend_from_slice(b"\r\n");
    out
}

fn push_cors(out: &mut Vec<u8>, cors: &Cors) {
    if let Some(origin) = &cors.allowed {
        out.extend_from_slice(b"access-control-allow-origin: ");
        out.extend_from_slice(origin.as_bytes());
        out.extend_from_slice(b"\r\naccess-control-allow-credentials: true\r\n");
    }
    if cors.vary {
        out.extend_from_slice(b"vary: Origin\r\n");
    }
}

/// Answers with `error` (a JSON body, the connection closed after it), outside hyper.
pub(crate) async fn write_error(stream: &mut TcpStream, error: &ApiError, cors: &Cors) {
    let (status, body) = (error.status(), error.body());
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    push_cors(&mut out, cors);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Writes the response head, then lets `writer` write what the hub queues, until the hub ends
/// the stream or the client goes away (seen as end-of-file on the read side, or a failed
/// write). This task writes only what the writer hands back: when the socket is full, and the
/// stream's end.
async fn stream_events(
    stream: TcpStream,
    mut body: crate::sse::SseBody,
    writer: Arc<crate::writer::Shard>,
    cors: &Cors,
) {
    let mut stream = stream;
    // The head and the frames queued at connect (`retry:`, a replay's start) in one write:
    // one packet fewer per connection for both ends.
    let mut head = stream_head(cors);
    if let Some(first) = body.take_queued() {
        head.extend_from_slice(&first);
    }
    if stream.write_all(&head).await.is_err() {
        return;
    }
    drop(head);
    // Declared after `stream`, so dropped before it: the writer stops using the socket first.
    let _direct = body.attach_direct(std::os::fd::AsRawFd::as_raw_fd(&stream), writer);
    // A client that stopped reading leaves what the socket holds unsent: reset rather than
    // close, or the kernel keeps the socket and its buffers (megabytes) until the client
    // reads or gives up, beyond --max-connections.
    let reset = |stream: &TcpStream| {
        let _ = stream.set_zero_linger();
    };
    let mut probe = [0u8; 64];
    // What the client sent after its request: nothing, from a browser.
    let mut sent = 0usize;
    loop {
        let (mut rd, mut wr) = stream.split();
        tokio::select! {
            chunk = body.next_chunk() => {
                let Some(chunk) = chunk else { break };
                if !Box::pin(write_or_reset(&mut wr, &chunk, &body)).await {
                    return reset(&stream);
                }
            }
            read = rd.read(&mut probe) => match read {
                // A client sends nothing after its request; end-of-file means it left.
                Ok(0) | Err(_) => return,
                // A client that keeps sending (a pipelined request, or junk) would have this
                // task read it 64 bytes at a time for as long as it likes: cut it off.
                Ok(n) => {
                    sent += n;
                    if sent > MAX_SENT_WHILE_STREAMING {
                        return reset(&stream);
                    }
                }
            },
        }
    }
    // Ended by the server: a client that stopped reading would leave the socket holding what
    // is unsent (a close keeps it, and the kernel with it, until the client reads or TCP
    // gives up): it has `CLOSING_STALL` to take it, or is reset.
    // Boxed, as the write below: inline, their timers would enlarge the state every idle
    // subscriber's task holds (about 130 bytes each).
    if body.is_aborted() || !Box::pin(sent_within(&stream, CLOSING_STALL)).await {
        reset(&stream);
    } else {
        let _ = stream.shutdown().await;
    }
}

/// Writes `chunk`; false when the stream must be reset instead. A write that makes no
/// progress for `WRITE_STALL` means the client is gone; a slow consumer is aborted while its
/// write waits (it need not wait longer); a stream the server ended while its write waits,
/// or before it, has `CLOSING_STALL` to finish it. One timer for all: this task's state is
/// held by every idle subscriber.
async fn write_or_reset(
    wr: &mut tokio::net::tcp::WriteHalf<'_>,
    chunk: &[u8],
    body: &crate::sse::SseBody,
) -> bool {
    let mut closing = body.is_closed();
    let stall = tokio::time::sleep(if closing { CLOSING_STALL } else { WRITE_STALL });
    let write = wr.write_all(chunk);
    tokio::pin!(stall, write);
    loop {
        tokio::select! {
            // An abort closes the stream too: it must win over `closed`.
            biased;
            written = &mut write => return written.is_ok(),
            () = body.aborted() => return false,
            () = body.closed(), if !closing => {
                closing = true;
                let sooner = tokio::time::Instant::now() + CLOSING_STALL;
                if sooner < stall.deadline() {
                    stall.as_mut().reset(sooner);
                }
            }
            () = &mut stall => return false,
        }
    }
}

/// Whether the socket has sent everything written to it, and had it acknowledged, within
/// `limit` (checked every 20 ms). Linux only; elsewhere, true.
async fn sent_within(stream: &TcpStream, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match unsent_bytes(stream) {
            Some(0) | None => return true,
            Some(_) if tokio::time::Instant::now() >= deadline => return false,
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Bytes written to the socket and not yet acknowledged by the peer (`SIOCOUTQ`).
#[cfg(target_os = "linux")]
fn unsent_bytes(stream: &TcpStream) -> Option<usize> {
    let mut unsent: libc::c_int = 0;
    // SAFETY: the fd is the stream's own, open for the call; the ioctl writes one c_int.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::TIOCOUTQ,
            &mut unsent,
        )
    };
    (rc == 0).then(|| usize::try_from(unsent).unwrap_or(0))
}

#[cfg(not(target_os = "linux"))]
fn unsent_bytes(_: &TcpStream) -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::is_subscribe;

    #[test]
    fn only_plain_subscribe_requests_take_the_direct_path() {
        assert!(is_subscribe(b"GET /events?topic=a HTTP/1.1\r\n"));
        assert!(is_subscribe(b"GET /events HTTP/1.1\r\n"));
        assert!(!is_subscribe(b"GET /eventsource HTTP/1.1"));
        assert!(!is_subscribe(b"GET /events"));
        assert!(!is_subscribe(b"POST /events HTTP/1.1"));
        assert!(!is_subscribe(b"PRI * HTTP/2.0\r\n"));
        assert!(!is_subscribe(b"GET /admin/events HTTP/1.1"));
    }
}
