//! One subscriber: connect, read the event stream until told to stop, and tally what arrived.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use herald_core::Parser;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::Shared;
use super::sys::{self, bind_address_no_port};
use super::template::read_event_data;
use super::tls::{BenchStream, Tls, secure};
use super::wire::{BodyDecoder, Framing, head_len, parse_head};

/// How long one connection may take to get its response head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The read buffer: a burst of queued events arrives in one read.
const READ_BUFFER: usize = 16 * 1024;
/// A latency slot never written: the event has not arrived.
pub const MISSING: u32 = u32::MAX;

/// What every subscriber sends and where.
#[derive(Debug)]
pub struct SubscribePlan {
    /// The server.
    pub addr: SocketAddr,
    /// TLS for an `https://` subscribe URL.
    pub tls: Option<Tls>,
    /// The whole request, head and blank line.
    pub request: Vec<u8>,
    /// With `--http2`: the request to send over HTTP/2 instead.
    pub http2: Option<http::Request<()>>,
    /// Events that will be published.
    pub events: u32,
}

/// When a read got its bytes, microseconds into the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// When this process read them.
    pub read_us: u64,
    /// When the kernel received the last segment read (at most `read_us`), or `None` when
    /// the kernel did not stamp it (TLS, or not Linux).
    pub arrived_us: Option<u64>,
}

impl Receipt {
    /// Bytes read at `read_us` that arrived `age_us` before.
    pub fn new(read_us: u64, age_us: Option<u64>) -> Self {
        Self {
            read_us,
            arrived_us: age_us.map(|age| read_us.saturating_sub(age)),
        }
    }
}

/// What one subscriber received.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Per sequence number: microseconds from publish to receipt (read), or [`MISSING`].
    pub latency_us: Vec<u32>,
    /// Per sequence number: microseconds from publish until the kernel received it (the read
    /// time where it was not stamped), or [`MISSING`].
    pub arrival_us: Vec<u32>,
    /// Some event's arrival came from a kernel timestamp.
    pub stamped: bool,
    /// Distinct events received.
    pub unique: u64,
    /// Events received again.
    pub duplicates: u64,
    /// See [`Tally::record`].
    pub out_of_order: u64,
    /// Events whose data this run did not write.
    pub foreign: u64,
    /// When the last event arrived, microseconds into the run.
    pub last_receive_us: u64,
    highest_seq: Option<u32>,
}

impl Tally {
    /// Nothing received yet of `events` events.
    pub fn new(events: u32) -> Self {
        Self {
            latency_us: vec![MISSING; events as usize],
            arrival_us: vec![MISSING; events as usize],
            stamped: false,
            unique: 0,
            duplicates: 0,
            out_of_order: 0,
            foreign: 0,
            last_receive_us: 0,
            highest_seq: None,
        }
    }

    /// Counts an event's `data`, received at `at`.
    ///
    /// An event is out of order when it arrives after a higher-numbered one whose publish
    /// started only after this one's publish was answered: `answered_before[k]` is how many
    /// of the events `0..k` had all been answered when event `k` was sent. (Publishes that
    /// overlap in time have no order to keep.)
    pub fn record(&mut self, data: &str, at: Receipt, answered_before: &[AtomicU32]) {
        let Some((seq, t_us)) =
            read_event_data(data).filter(|&(seq, _)| seq < self.latency_us.len() as u32)
        else {
            self.foreign += 1;
            return;
        };
        let slot = &mut self.latency_us[seq as usize];
        if *slot != MISSING {
            self.duplicates += 1;
            return;
        }
        let since_publish = |us: u64| u32::try_from(us.saturating_sub(t_us)).unwrap_or(MISSING - 1);
        *slot = since_publish(at.read_us);
        self.arrival_us[seq as usize] = since_publish(at.arrived_us.unwrap_or(at.read_us));
        self.stamped |= at.arrived_us.is_some();
        self.unique += 1;
        self.last_receive_us = self.last_receive_us.max(at.read_us);
        match self.highest_seq {
            Some(high) if seq < high => {
                let settled = answered_before
                    .get(high as usize)
                    .map_or(0, |a| a.load(Ordering::Relaxed));
                if seq < settled {
                    self.out_of_order += 1;
                }
            }
            _ => self.highest_seq = Some(seq),
        }
    }
}

/// How a subscriber ended.
#[derive(Debug)]
pub struct Outcome {
    /// What it received; `None` when it never connected.
    pub tally: Option<Tally>,
    /// Why it stopped before being told to (or why it could not connect).
    pub error: Option<String>,
}

/// Runs one subscriber from connecting until `stop` changes.
pub async fn run(
    plan: Arc<SubscribePlan>,
    source: Option<IpAddr>,
    gate: Arc<Semaphore>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let opened = match &plan.http2 {
        Some(request) => admit(&gate, &shared, open_http2(&plan, request, source)).await,
        None => admit(&gate, &shared, open(&plan, source)).await,
    };
    let (mut body, decoder) = match opened {
        Ok(opened) => opened,
        Err(outcome) => return outcome,
    };
    let mut reader = Reader {
        decoder,
        parser: Parser::new(),
        tally: Tally::new(plan.events),
    };
    // Registered once: re-creating the wait on every read costs more than the read's parsing.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    let error = loop {
        let next = tokio::select! {
            biased;
            _ = &mut stopped => break None,
            next = body.next() => next,
        };
        let (bytes, age_us) = match next {
            Ok(next) => next,
            Err(e) => break Some(e),
        };
        let at = Receipt::new(shared.now_us(), age_us);
        match reader.receive_counted(bytes, at, &shared) {
            Ok(false) => {}
            Ok(true) => break Some("the stream ended".to_owned()),
            Err(e) => break Some(e),
        }
    };
    // Hold the connection until the run is over, like a browser would, so that an early end
    // does not change the server's load.
    if error.is_some() {
        let _ = stopped.await;
    }
    drop(body);
    Outcome {
        tally: Some(reader.tally),
        error,
    }
}

/// A subscriber's response body, as it arrives.
enum Body {
    /// HTTP/1.1, read by hand: the socket, its read buffer, and the part of the buffer read
    /// with the response head but not handed out yet.
    Http1 {
        stream: BenchStream,
        buf: Vec<u8>,
        pending: std::ops::Range<usize>,
    },
    /// HTTP/2 through hyper: the response body, its last data frame, and the request sender
    /// (the connection lives as long as it does).
    Http2 {
        body: Incoming,
        frame: Bytes,
        _sender: SendRequest<Empty<Bytes>>,
    },
}

impl Body {
    /// Waits for the next bytes of the body; returns them with how long ago (µs) the kernel
    /// received them, when it says (plain TCP on Linux). An error says why the body ended.
    async fn next(&mut self) -> Result<(&[u8], Option<u64>), String> {
        let ended = || "the server closed the stream".to_owned();
        match self {
            Body::Http1 {
                stream,
                buf,
                pending,
            } => {
                if pending.start < pending.end {
                    return Ok((&buf[std::mem::take(pending)], None));
                }
                buf.clear();
                match read_stamped(stream, buf).await {
                    Ok((0, _)) => Err(ended()),
                    Ok((n, age_us)) => Ok((&buf[..n], age_us)),
                    Err(e) => Err(format!("read failed: {e}")),
                }
            }
            Body::Http2 { body, frame, .. } => loop {
                match body.frame().await {
                    None => return Err(ended()),
                    Some(Err(e)) => return Err(format!("read failed: {e}")),
                    Some(Ok(next)) => {
                        if let Ok(data) = next.into_data() {
                            *frame = data;
                            return Ok((&frame[..], None));
                        }
                    }
                }
            },
        }
    }
}

/// Runs `open` with a permit from `gate` (connection attempts in flight) and within
/// [`CONNECT_TIMEOUT`], and counts the attempt; a failure is the subscriber's outcome.
async fn admit<T>(
    gate: &Semaphore,
    shared: &Shared,
    open: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, Outcome> {
    let opened = {
        // The semaphore is never closed; without a permit we would just connect unthrottled.
        let _permit = gate.acquire().await;
        tokio::time::timeout(CONNECT_TIMEOUT, open).await
    };
    match opened {
        Ok(Ok(opened)) => {
            shared.connect_succeeded();
            Ok(opened)
        }
        Ok(Err(e)) => Err(shared.connect_failed(e)),
        Err(_) => {
            Err(shared.connect_failed(format!("no response head within {CONNECT_TIMEOUT:?}")))
        }
    }
}

/// Connects, speaks HTTP/2 and sends `request`; returns the body of a 200 response, read
/// as it is (no HTTP/1.1 framing).
async fn open_http2(
    plan: &SubscribePlan,
    request: &http::Request<()>,
    source: Option<IpAddr>,
) -> Result<(Body, BodyDecoder), String> {
    let tcp = connect(plan, source).await?;
    let stream = secure(tcp, plan.tls.as_ref()).await?;
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    tokio::spawn(conn);
    let mut builder = http::Request::get(request.uri().clone());
    for (name, value) in request.headers() {
        builder = builder.header(name, value);
    }
    let request = builder
        .body(Empty::new())
        .map_err(|e| format!("invalid request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    let status = response.status();
    if status != http::StatusCode::OK {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(format!("status {}: {}", status.as_u16(), text.trim()));
    }
    let body = Body::Http2 {
        body: response.into_body(),
        frame: Bytes::new(),
        _sender: sender,
    };
    Ok((body, BodyDecoder::new(Framing::UntilClose)))
}

struct Reader {
    decoder: BodyDecoder,
    parser: Parser,
    tally: Tally,
}

impl Reader {
    /// [`Reader::receive`], adding the new distinct events to the run's delivery count.
    fn receive_counted(
        &mut self,
        bytes: &[u8],
        at: Receipt,
        shared: &Shared,
    ) -> Result<bool, String> {
        let before = self.tally.unique;
        let ended = self.receive(bytes, at, &shared.answered_before);
        let new = self.tally.unique - before;
        if new > 0 {
            shared.deliveries.fetch_add(new, Ordering::Relaxed);
        }
        ended
    }

    /// Feeds bytes from the socket; returns whether the body has ended.
    fn receive(
        &mut self,
        bytes: &[u8],
        at: Receipt,
        answered_before: &[AtomicU32],
    ) -> Result<bool, String> {
        let Self {
            decoder,
            parser,
            tally,
        } = self;
        let ended = decoder
            .feed(bytes, |body| {
                parser.feed_each(body, |event| tally.record(&event.data, at, answered_before))
            })
            .map_err(|e| format!("invalid chunked body: {e}"))?;
        Ok(ended)
    }
}

/// Reads what the socket has into `buf`; returns how many bytes and how long ago (µs) the last
/// of them arrived, when the kernel says (plain TCP on Linux).
async fn read_stamped(
    stream: &mut BenchStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<(usize, Option<u64>)> {
    #[cfg(target_os = "linux")]
    if let BenchStream::Plain(tcp) = stream {
        use std::os::fd::AsRawFd as _;
        let fd = tcp.as_raw_fd();
        return tcp
            .async_io(tokio::io::Interest::READABLE, || sys::recv_stamped(fd, buf))
            .await;
    }
    stream.read_buf(buf).await.map(|n| (n, None))
}

/// Connects, sends the request and reads the response head; returns the body (holding the
/// bytes read after the head) and its decoder.
async fn open(plan: &SubscribePlan, source: Option<IpAddr>) -> Result<(Body, BodyDecoder), String> {
    let mut stream = secure(connect(plan, source).await?, plan.tls.as_ref()).await?;
    stream
        .write_all(&plan.request)
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    // Not zeroed: `read_buf` fills spare capacity, so only the pages a read reaches are touched
    // (zeroing 10,000 buffers up front was a fifth of the connect phase's CPU).
    let mut buf = Vec::with_capacity(READ_BUFFER);
    loop {
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection before answering".to_owned());
        }
        let filled = buf.len();
        if let Some(len) = head_len(&buf[..filled]) {
            let head = parse_head(&buf[..len]).map_err(|e| e.to_string())?;
            if head.status != 200 {
                let body = String::from_utf8_lossy(&buf[len..filled]);
                return Err(format!("status {}: {}", head.status, body.trim()));
            }
            let body = Body::Http1 {
                stream,
                buf,
                pending: len..filled,
            };
            return Ok((body, BodyDecoder::new(head.framing)));
        }
        if filled >= READ_BUFFER {
            return Err(format!(
                "no end of the response head in {READ_BUFFER} bytes"
            ));
        }
    }
}

/// Opens the TCP connection, from `source` if given, asking for arrival stamps; closing it
/// will send a reset ([`sys::reset_on_close`]).
async fn connect(plan: &SubscribePlan, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let socket = if plan.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("cannot create a socket: {e}"))?;
    sys::stamp_arrivals(&socket);
    if let Some(ip) = source {
        bind_address_no_port(&socket);
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("cannot bind source address {ip}: {e}"))?;
    }
    let stream = socket
        .connect(plan.addr)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", plan.addr))?;
    sys::reset_on_close(&stream);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::template::write_event_data;

    fn data(seq: u32, t_us: u64) -> String {
        let mut s = String::new();
        write_event_data(seq, t_us, 64, &mut s);
        s
    }

    fn read_at(us: u64) -> Receipt {
        Receipt::new(us, None)
    }

    fn answered(counts: &[u32]) -> Vec<AtomicU32> {
        counts.iter().map(|&c| AtomicU32::new(c)).collect()
    }

    #[test]
    fn a_tally_records_latency_duplicates_and_foreign_events() {
        let mut tally = Tally::new(3);
        let order = answered(&[0, 1, 2]);
        tally.record(&data(0, 100), read_at(350), &order);
        tally.record(&data(0, 100), read_at(400), &order);
        tally.record("hello", read_at(400), &order);
        tally.record(&data(9, 100), read_at(400), &order);
        tally.record(&data(1, 200), read_at(900), &order);
        assert_eq!(tally.latency_us, [250, 700, MISSING]);
        assert_eq!(
            (
                tally.unique,
                tally.duplicates,
                tally.foreign,
                tally.out_of_order
            ),
            (2, 1, 2, 0)
        );
        assert_eq!(tally.last_receive_us, 900);
        // Unstamped reads: arrival is the read time.
        assert_eq!(tally.arrival_us, tally.latency_us);
        assert!(!tally.stamped);
    }

    #[test]
    fn a_stamped_read_puts_the_arrival_before_the_read() {
        let order = answered(&[0, 1]);
        let mut tally = Tally::new(2);
        tally.record(&data(0, 100), Receipt::new(5_000, Some(4_000)), &order);
        // A stamp older than the run still leaves the arrival at the publish, not before.
        tally.record(&data(1, 200), Receipt::new(900, Some(10_000)), &order);
        assert_eq!(tally.latency_us, [4_900, 700]);
        assert_eq!(tally.arrival_us, [900, 0]);
        assert!(tally.stamped);
        assert_eq!(tally.last_receive_us, 5_000);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_kernel_stamps_when_bytes_arrived_not_when_they_were_read() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        sys::stamp_arrivals(&socket);
        let client = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        // The first socket to ask turns stamping on from a kernel work item, a moment later.
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.write_all(b"data: x\n\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut stream = BenchStream::Plain(client);
        let mut buf = Vec::with_capacity(64);
        let (n, age_us) = read_stamped(&mut stream, &mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"data: x\n\n");
        let age_us = age_us.expect("a stamp on a plain TCP read");
        assert!((40_000..10_000_000).contains(&age_us), "{age_us} µs");
    }

    #[test]
    fn an_event_after_a_later_one_is_out_of_order_only_if_its_publish_was_answered_first() {
        // Event 2 was sent after 0 and 1 were answered; event 1 overlapped event 0.
        let order = answered(&[0, 0, 2]);
        let mut tally = Tally::new(3);
        tally.record(&data(1, 0), read_at(10), &order);
        tally.record(&data(0, 0), read_at(10), &order);
        assert_eq!(tally.out_of_order, 0);
        tally.record(&data(2, 0), read_at(10), &order);
        let mut late = Tally::new(3);
        late.record(&data(2, 0), read_at(10), &order);
        late.record(&data(1, 0), read_at(10), &order);
        late.record(&data(0, 0), read_at(10), &order);
        assert_eq!(late.out_of_order, 2);
    }
}
