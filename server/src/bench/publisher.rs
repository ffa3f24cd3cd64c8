//! Publishing the events: unpaced (one connection, each publish as soon as the previous one is
//! answered) or paced (sent on schedule, over as many connections as are busy, up to a cap).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::tls::{Tls, secure};

use super::Shared;
use super::template::{Template, Values, write_event_data};

/// How long one publish may take before it counts as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a publishing connection is left idle and then used again. A server closes an
/// idle keep-alive connection when it likes (Herald after its 10 s `--header-timeout`), and a
/// request sent as it does fails with "connection closed" though the server never saw it.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// Idle publishing connections, the most recently used on top.
struct Pool<T> {
    idle: Vec<(T, tokio::time::Instant)>,
}

impl<T> Pool<T> {
    fn new() -> Self {
        Self { idle: Vec::new() }
    }

    fn put(&mut self, conn: T, now: tokio::time::Instant) {
        self.idle.push((conn, now));
    }

    /// A connection fit to use at `now`, and how many were dropped on the way: those closed
    /// (`closed`), and those idle for longer than [`POOL_IDLE`], which sit below the fresher
    /// ones and go too.
    fn take(
        &mut self,
        now: tokio::time::Instant,
        closed: impl Fn(&T) -> bool,
    ) -> (Option<T>, usize) {
        let stale = self
            .idle
            .iter()
            .rposition(|(_, since)| now.duration_since(*since) > POOL_IDLE)
            .map_or(0, |i| i + 1);
        let mut dropped = stale;
        self.idle.drain(..stale);
        while let Some((conn, _)) = self.idle.pop() {
            if !closed(&conn) {
                return (Some(conn), dropped);
            }
            dropped += 1;
        }
        (None, dropped)
    }
}

/// What every publish sends and where.
#[derive(Debug)]
pub struct PublishPlan {
    /// The server.
    pub addr: SocketAddr,
    /// TLS for an `https://` publish URL.
    pub tls: Option<Tls>,
    /// The `Host` header.
    pub authority: String,
    /// The request target.
    pub path: String,
    /// The body, with `{data}` for the event's data.
    pub body: Template,
    /// `{url}` in the body.
    pub url: String,
    /// `{topic}` in the body.
    pub topic: String,
    /// Content-Type, Authorization and `--header`s.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Bytes of data per event.
    pub payload: usize,
    /// How many events.
    pub events: u32,
    /// Events per second; 0 = unpaced.
    pub rate: f64,
    /// The most publishes in flight when paced.
    pub max_connections: usize,
}

/// One answered (or failed) publish.
#[derive(Debug, Clone)]
pub struct Published {
    /// The event's sequence number.
    pub seq: u32,
    /// When it was sent (the `t` inside its data), microseconds into the run.
    pub sent_us: u64,
    /// When the answer (or the failure) came, microseconds into the run.
    pub answered_us: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The publishes answered so far, in the order they were answered; shared so that a run that
/// gives up waiting still reports what was published.
#[derive(Debug, Default)]
pub struct Ledger {
    records: Mutex<Vec<Published>>,
    /// `done[k]`: event k's publish has been answered.
    done: Mutex<Vec<bool>>,
    /// Events `0..contiguous` have all been answered.
    contiguous: AtomicU32,
}

impl Ledger {
    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything answered so far.
    pub fn records(&self) -> Vec<Published> {
        Self::lock(&self.records).clone()
    }

    /// Records that publish `seq` never went out: no connection to send it on.
    fn not_sent(&self, seq: u32, error: String, shared: &Shared) {
        let now = shared.now_us();
        let record = Published {
            seq,
            sent_us: now,
            answered_us: now,
            error: Some(error),
        };
        self.answered(record, shared);
    }

    fn answered(&self, record: Published, shared: &Shared) {
        let mut done = Self::lock(&self.done);
        let seq = record.seq as usize;
        if done.len() <= seq {
            done.resize(seq + 1, false);
        }
        done[seq] = true;
        let mut contiguous = self.contiguous.load(Ordering::Relaxed) as usize;
        while done.get(contiguous) == Some(&true) {
            contiguous += 1;
        }
        self.contiguous.store(contiguous as u32, Ordering::Release);
        Self::lock(&self.records).push(record);
        shared.published.fetch_add(1, Ordering::Relaxed);
    }
}

/// Publishes every event of `plan`, recording each answer in `ledger`.
pub async fn run(plan: Arc<PublishPlan>, shared: Arc<Shared>, ledger: Arc<Ledger>) {
    if plan.rate > 0.0 {
        paced(plan, shared, ledger).await;
    } else {
        unpaced(&plan, &shared, &ledger).await;
    }
}

async fn unpaced(plan: &PublishPlan, shared: &Shared, ledger: &Ledger) {
    let mut conn = None;
    for seq in 0..plan.events {
        let mut sender = match conn.take() {
            Some(s) => s,
            None => match connect(plan.addr, plan.tls.as_ref()).await {
                Ok(s) => s,
                Err(e) => {
                    ledger.not_sent(seq, e, shared);
                    continue;
                }
            },
        };
        if publish_one(plan, &mut sender, seq, shared, ledger).await {
            conn = Some(sender);
        }
    }
}

async fn paced(plan: Arc<PublishPlan>, shared: Arc<Shared>, ledger: Arc<Ledger>) {
    let idle: Arc<Mutex<Pool<SendRequest<Full<Bytes>>>>> = Arc::new(Mutex::new(Pool::new()));
    let open = Arc::new(AtomicUsize::new(0));
    // One connection ready before the clock starts, so the first event does not pay for it.
    if let Ok(sender) = connect(plan.addr, plan.tls.as_ref()).await {
        Ledger::lock(&idle).put(sender, tokio::time::Instant::now());
        open.store(1, Ordering::Relaxed);
    }
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 0..plan.events {
        tokio::time::sleep_until(start + Duration::from_secs_f64(f64::from(seq) / plan.rate)).await;
        let sender = loop {
            let (taken, dropped) =
                Ledger::lock(&idle).take(tokio::time::Instant::now(), SendRequest::is_closed);
            open.fetch_sub(dropped, Ordering::Relaxed);
            if let Some(s) = taken {
                break Some(s);
            }
            if open.load(Ordering::Relaxed) < plan.max_connections.max(1) {
                open.fetch_add(1, Ordering::Relaxed);
                break None;
            }
            // Every connection is busy: the schedule slips (the report shows the rate achieved).
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let (plan, shared, ledger, idle, open) = (
            plan.clone(),
            shared.clone(),
            ledger.clone(),
            idle.clone(),
            open.clone(),
        );
        tasks.spawn(async move {
            let mut sender = match sender {
                Some(s) => s,
                None => match connect(plan.addr, plan.tls.as_ref()).await {
                    Ok(s) => s,
                    Err(e) => {
                        open.fetch_sub(1, Ordering::Relaxed);
                        ledger.not_sent(seq, e, &shared);
                        return;
                    }
                },
            };
            if publish_one(&plan, &mut sender, seq, &shared, &ledger).await {
                Ledger::lock(&idle).put(sender, tokio::time::Instant::now());
            } else {
                open.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Opens a publishing connection.
async fn connect(addr: SocketAddr, tls: Option<&Tls>) -> Result<SendRequest<Full<Bytes>>, String> {
    let open = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot reach the server at {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        secure(tcp, tls).await
    };
    let stream = tokio::time::timeout(PUBLISH_TIMEOUT, open)
        .await
        .map_err(|_| format!("cannot reach the server at {addr} within {PUBLISH_TIMEOUT:?}"))??;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {addr} failed: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Publishes event `seq` over `sender`; returns whether the connection can be used again.
async fn publish_one(
    plan: &PublishPlan,
    sender: &mut SendRequest<Full<Bytes>>,
    seq: u32,
    shared: &Shared,
    ledger: &Ledger,
) -> bool {
    let mut data = String::with_capacity(plan.payload + 40);
    let sent_us = shared.now_us();
    write_event_data(seq, sent_us, plan.payload, &mut data);
    let body = plan.body.expand(Values {
        url: &plan.url,
        topic: &plan.topic,
        data: &data,
    });
    let mut request =
        http::Request::post(plan.path.as_str()).header(header::HOST, plan.authority.as_str());
    for (name, value) in &plan.headers {
        request = request.header(name, value);
    }
    let request = match request.body(Full::new(Bytes::from(body))) {
        Ok(r) => r,
        Err(e) => {
            let record = Published {
                seq,
                sent_us,
                answered_us: shared.now_us(),
                error: Some(format!("invalid request: {e}")),
            };
            ledger.answered(record, shared);
            return true;
        }
    };
    if let Some(slot) = shared.answered_before.get(seq as usize) {
        slot.store(ledger.contiguous.load(Ordering::Acquire), Ordering::Relaxed);
    }
    let exchange = async {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    };
    let (error, reusable) = match tokio::time::timeout(PUBLISH_TIMEOUT, exchange).await {
        Ok(Ok((status, _))) if status.is_success() => (None, true),
        Ok(Ok((status, body))) => {
            let text = String::from_utf8_lossy(&body);
            (Some(format!("status {status}: {}", text.trim())), true)
        }
        Ok(Err(e)) => (Some(exchange_error(&e)), false),
        Err(_) => (Some(format!("no answer within {PUBLISH_TIMEOUT:?}")), false),
    };
    ledger.answered(
        Published {
            seq,
            sent_us,
            answered_us: shared.now_us(),
            error,
        },
        shared,
    );
    reusable
}

/// Says why a publish exchange failed. hyper words a connection the server closed (or a
/// server that went away mid-run) in its own terms ("channel closed", "connection closed
/// before message completed"); the report says what happened instead.
fn exchange_error(e: &hyper::Error) -> String {
    if e.is_closed() || e.is_incomplete_message() || e.is_canceled() {
        "the server closed the connection (is it still running?)".to_owned()
    } else {
        format!("publish failed: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_gives_the_freshest_open_connection_and_drops_stale_and_closed_ones() {
        let t0 = tokio::time::Instant::now();
        let mut pool = Pool::new();
        // (name, closed): put at 0 s, 1 s, 6 s, 7 s.
        pool.put(("oldest", false), t0);
        pool.put(("old", false), t0 + Duration::from_secs(1));
        pool.put(("fresh", false), t0 + Duration::from_secs(6));
        pool.put(("closed", true), t0 + Duration::from_secs(7));
        let at = t0 + Duration::from_secs(8);
        let closed = |c: &(&str, bool)| c.1;
        // The closed one on top is dropped, and so are the two idle past POOL_IDLE.
        assert_eq!(pool.take(at, closed), (Some(("fresh", false)), 3));
        assert_eq!(pool.take(at, closed), (None, 0));
    }

    /// A publishing connection whose server end is already gone, as when the server dies.
    async fn closed_connection() -> SendRequest<Full<Bytes>> {
        let (client, server) = tokio::io::duplex(1024);
        drop(server);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
            .await
            .expect("an HTTP/1.1 handshake needs no bytes from the server");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender
    }

    fn plan() -> PublishPlan {
        PublishPlan {
            addr: "127.0.0.1:9".parse().unwrap(),
            tls: None,
            authority: "127.0.0.1:9".into(),
            path: "/publish".into(),
            body: Template::parse(super::super::DEFAULT_BODY_TEMPLATE),
            url: "http://127.0.0.1:9".into(),
            topic: "bench".into(),
            headers: Vec::new(),
            payload: 16,
            events: 1,
            rate: 0.0,
            max_connections: 1,
        }
    }

    #[tokio::test]
    async fn a_publish_to_a_server_that_closed_the_connection_says_so() {
        let (plan, shared, ledger) = (plan(), Shared::new(1, 1), Ledger::default());
        let mut sender = closed_connection().await;
        let reusable = publish_one(&plan, &mut sender, 0, &shared, &ledger).await;
        assert!(!reusable);
        let records = ledger.records();
        let error = records[0].error.as_deref().expect("a failed publish");
        assert_eq!(
            error,
            "the server closed the connection (is it still running?)"
        );
    }
}
