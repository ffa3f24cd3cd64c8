//! `herald bench`: a load generator for SSE hubs, Herald or any other.
//!
//! It opens N subscriptions, publishes M events with their send time inside, and reports how
//! long connecting took, how fast and how completely the events reached every subscriber, and
//! (given the server's pid) what the server spent in memory and CPU:
//!
//! ```text
//! herald bench --url http://127.0.0.1:7070 --subscribers 10000 --events 100 --rate 0
//! ```
//!
//! `https://` URLs work too (TLS; `--ca-file` for a private CA).
//!
//! Each subscriber is one task speaking HTTP/1.1 by hand (or, with `--http2`, HTTP/2 through
//! hyper's client, one connection each) and parsing the stream with [`herald_core::Parser`];
//! publishes go through hyper's client (HTTP/1.1). The URLs, body template and
//! headers are options, so the same run can drive nginx + nchan (see `tests/bench/compare.sh`).

mod publisher;
mod report;
mod subscriber;
mod sys;
mod template;
mod tls;
mod wire;

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http::header::{self, HeaderName, HeaderValue};
use tokio::sync::{Notify, Semaphore, watch};

pub use report::{Missing, Report, ServerUsage, Spread};
pub use template::DEFAULT_BODY_TEMPLATE;

use crate::config::parse_duration;
use publisher::{Ledger, PublishPlan};
use subscriber::{MISSING, Outcome, SubscribePlan};
use template::{Template, Values};
use wire::Endpoint;

/// The default subscribe URL: Herald's `GET /events`.
pub const DEFAULT_SUBSCRIBE_URL: &str = "{url}/events?topic={topic}";
/// The default publish URL: Herald's `POST /publish`.
pub const DEFAULT_PUBLISH_URL: &str = "{url}/publish";

/// How long the server gets, after the last subscriber connected, before its idle memory is
/// read and publishing starts.
const SETTLE: Duration = Duration::from_millis(500);
/// How often the progress line (and the end of the wait) is checked.
const TICK: Duration = Duration::from_millis(100);
/// The most memory the per-subscriber latency tables may take.
const MAX_TABLE_BYTES: usize = 2 << 30;

/// `herald bench`'s options.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// The server's base URL, http:// or https:// (`{url}` in the URL options).
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:7070")]
    pub url: String,
    /// How many SSE subscribers to connect.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// How many events to publish.
    #[arg(long, default_value_t = 100)]
    pub events: u32,
    /// Events per second; 0 publishes each as soon as the previous one is answered.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// The topic (channel) every subscriber follows and every event goes to (`{topic}`).
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Bytes of data per event (a JSON object with the sequence number and send time, padded).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 200)]
    pub connect_parallel: usize,
    /// The server's process id: report its memory per idle connection and CPU per delivery.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print one JSON object instead of the human-readable report.
    #[arg(long)]
    pub json: bool,
    /// A bearer token for subscribing and publishing (not needed against `herald serve --dev`).
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where subscribers connect; `{url}` and `{topic}` are replaced.
    #[arg(long, default_value = DEFAULT_SUBSCRIBE_URL)]
    pub subscribe_url: String,
    /// Where events are POSTed; `{url}` and `{topic}` are replaced.
    #[arg(long, default_value = DEFAULT_PUBLISH_URL)]
    pub publish_url: String,
    /// The publish body; `{data}` is the event's data (JSON), `{topic}` and `{url}` as above.
    /// For nchan: `{data}`.
    #[arg(long, default_value = DEFAULT_BODY_TEMPLATE)]
    pub body_template: String,
    /// An extra publish header, `Name: value` (repeatable).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// The publish body's Content-Type.
    #[arg(long, default_value = "application/json")]
    pub content_type: String,
    /// Stop waiting for deliveries after this long without any.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// The most publishes in flight at once when paced (each on its own connection).
    #[arg(long, default_value_t = 32)]
    pub max_publishers: usize,
    /// PEM certificates to trust besides the system's, for https:// URLs (your private CA's).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Subscribers speak HTTP/2 (with prior knowledge on http://, by ALPN on https://), one
    /// connection each, like browsers on different machines. Their events carry no arrival
    /// times (the HTTP/2 client reads the socket).
    #[arg(long)]
    pub http2: bool,
}

/// Runs the benchmark on its own multi-threaded runtime and prints the report; fails (after
/// printing it) when no publish succeeded, since such a run measured nothing.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(measure(&args))?;
    // Subscriber connections and hyper's connection tasks end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.render());
    }
    match report.nothing_measured() {
        Some(reason) => bail!(reason),
        None => Ok(()),
    }
}

/// What the subscribers, the publisher and the coordinator share.
#[derive(Debug)]
struct Shared {
    start: Instant,
    subscribers: usize,
    /// Per event: how many of the events before it had all been answered when it was sent.
    answered_before: Box<[AtomicU32]>,
    /// Distinct events received, over all subscribers.
    deliveries: AtomicU64,
    /// Publishes answered.
    published: AtomicU32,
    connected: AtomicUsize,
    failed: AtomicUsize,
    last_connect_us: AtomicU64,
    first_connect_error: Mutex<Option<String>>,
    /// Signalled when every subscriber has connected or failed.
    all_attempted: Notify,
}

impl Shared {
    fn new(subscribers: usize, events: u32) -> Self {
        Self {
            start: Instant::now(),
            subscribers,
            answered_before: (0..events).map(|_| AtomicU32::new(0)).collect(),
            deliveries: AtomicU64::new(0),
            published: AtomicU32::new(0),
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            last_connect_us: AtomicU64::new(0),
            first_connect_error: Mutex::new(None),
            all_attempted: Notify::new(),
        }
    }

    /// Microseconds since the run started: the clock of every timestamp in the run.
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn attempts(&self) -> usize {
        self.connected.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    fn connect_succeeded(&self) {
        self.last_connect_us
            .fetch_max(self.now_us(), Ordering::Relaxed);
        self.connected.fetch_add(1, Ordering::Relaxed);
        self.attempted();
    }

    fn connect_failed(&self, error: String) -> Outcome {
        self.first_connect_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| error.clone());
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.attempted();
        Outcome {
            tally: None,
            error: Some(error),
        }
    }

    fn attempted(&self) {
        if self.attempts() == self.subscribers {
            self.all_attempted.notify_one();
        }
    }
}

/// A `\r`-updated line on stderr when it is a terminal.
struct Progress {
    enabled: bool,
}

impl Progress {
    fn show(&self, line: std::fmt::Arguments<'_>) {
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{line}\x1b[K");
            let _ = err.flush();
        }
    }

    fn clear(&self) {
        if self.enabled {
            eprint!("\r\x1b[K");
        }
    }
}

/// CPU (and the server's memory) at one moment, to difference over the publish phase.
struct Sample {
    at: Instant,
    server: Option<sys::ProcessSample>,
    client_ticks: Option<u64>,
    machine_ticks: Option<u64>,
}

impl Sample {
    fn take(server_pid: Option<u32>) -> anyhow::Result<Self> {
        let server = match server_pid {
            Some(pid) => Some(
                sys::sample_process(pid)
                    .with_context(|| format!("cannot read /proc/{pid}: has the server exited?"))?,
            ),
            None => None,
        };
        Ok(Self {
            at: Instant::now(),
            server,
            client_ticks: sys::sample_process(std::process::id())
                .ok()
                .map(|s| s.cpu_ticks),
            machine_ticks: sys::machine_busy_ticks(),
        })
    }
}

async fn resolve(endpoint: &Endpoint) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(&endpoint.connect)
        .await
        .with_context(|| format!("cannot resolve {}", endpoint.connect))?
        .next()
        .with_context(|| format!("{} resolves to no address", endpoint.connect))
}

fn parse_header(line: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = line
        .split_once(':')
        .with_context(|| format!("--header {line:?} is not `Name: value`"))?;
    Ok((
        HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("invalid header name in {line:?}"))?,
        HeaderValue::from_str(value.trim())
            .with_context(|| format!("invalid header value in {line:?}"))?,
    ))
}

async fn measure(args: &BenchArgs) -> anyhow::Result<Report> {
    if args.subscribers == 0 || args.events == 0 {
        bail!("--subscribers and --events must be at least 1");
    }
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        bail!("--rate must be a number of events per second, or 0 for unpaced");
    }
    if args
        .subscribers
        .saturating_mul(args.events as usize)
        .saturating_mul(8)
        > MAX_TABLE_BYTES
    {
        bail!("--subscribers x --events is too large: the latency tables would pass 2 GiB");
    }
    let base = args.url.trim_end_matches('/');
    let url_values = Values {
        url: base,
        topic: &args.topic,
        data: "",
    };
    let subscribe_url = Template::parse(&args.subscribe_url).expand(url_values);
    let publish_url = Template::parse(&args.publish_url).expand(url_values);
    let sub_endpoint = Endpoint::parse(&subscribe_url)?;
    let pub_endpoint = Endpoint::parse(&publish_url)?;
    let sub_addr = resolve(&sub_endpoint).await?;
    let pub_addr = resolve(&pub_endpoint).await?;
    if args.ca_file.is_some() && !sub_endpoint.tls && !pub_endpoint.tls {
        bail!("--ca-file applies to https:// URLs, and neither URL is one");
    }
    let tls_for = |endpoint: &Endpoint, http2: bool| -> anyhow::Result<Option<tls::Tls>> {
        match endpoint.tls {
            false => Ok(None),
            true => tls::Tls::new(&endpoint.host, args.ca_file.as_deref(), http2)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("TLS for {}: {e}", endpoint.authority)),
        }
    };

    let bearer = args
        .token
        .as_deref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{bearer}\r\n",
        sub_endpoint.path, sub_endpoint.authority
    );
    let http2 = match args.http2 {
        false => None,
        true => {
            let scheme = if sub_endpoint.tls { "https" } else { "http" };
            let uri = format!("{scheme}://{}{}", sub_endpoint.authority, sub_endpoint.path);
            let mut request = http::Request::get(uri)
                .header(header::ACCEPT, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache");
            if let Some(t) = &args.token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let request = request
                .body(())
                .context("the subscribe URL or --token does not make a valid request")?;
            Some(request)
        }
    };
    let sub_plan = Arc::new(SubscribePlan {
        addr: sub_addr,
        tls: tls_for(&sub_endpoint, args.http2)?,
        request: request.into_bytes(),
        http2,
        events: args.events,
    });

    let mut headers = vec![(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&args.content_type).context("invalid --content-type")?,
    )];
    if let Some(t) = &args.token {
        headers.push((
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).context("invalid --token")?,
        ));
    }
    for line in &args.headers {
        headers.push(parse_header(line)?);
    }
    let pub_plan = Arc::new(PublishPlan {
        addr: pub_addr,
        tls: tls_for(&pub_endpoint, false)?,
        authority: pub_endpoint.authority.clone(),
        path: pub_endpoint.path.clone(),
        body: Template::parse(&args.body_template),
        url: base.to_owned(),
        topic: args.topic.clone(),
        headers,
        payload: args.payload,
        events: args.events,
        rate: args.rate,
        max_connections: args.max_publishers,
    });

    let files = sys::raise_open_file_limit();
    if let Some(limit) = files.filter(|&l| l < args.subscribers as u64 + 64) {
        eprintln!(
            "warning: the open-file limit is {limit}, too low for {} subscribers; raise the hard limit (ulimit -Hn)",
            args.subscribers
        );
    }
    let sources = sys::source_addresses(sub_addr.ip(), args.subscribers, sys::ephemeral_ports());

    let progress = Progress {
        enabled: std::io::stderr().is_terminal(),
    };
    let shared = Arc::new(Shared::new(args.subscribers, args.events));
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.connect_parallel.max(1)));

    // Connect.
    let before_connect = Sample::take(args.server_pid)?;
    let connect_start_us = shared.now_us();
    let mut subscribers = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        subscribers.push(tokio::spawn(subscriber::run(
            sub_plan.clone(),
            source,
            gate.clone(),
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    loop {
        tokio::select! {
            _ = shared.all_attempted.notified() => break,
            _ = tokio::time::sleep(TICK) => {
                let failed = shared.failed.load(Ordering::Relaxed);
                progress.show(format_args!(
                    "connecting {}/{} ({failed} failed)",
                    shared.connected.load(Ordering::Relaxed),
                    args.subscribers
                ));
            }
        }
    }
    progress.clear();
    let after_connect = Sample::take(args.server_pid)?;
    let connected = shared.connected.load(Ordering::Relaxed);
    let connect_failed = shared.failed.load(Ordering::Relaxed);
    let connect_error = shared
        .first_connect_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if connected == 0 {
        bail!(
            "no subscriber could connect to {subscribe_url}: {}",
            connect_error.unwrap_or_default()
        );
    }
    let connect_s = shared
        .last_connect_us
        .load(Ordering::Relaxed)
        .saturating_sub(connect_start_us) as f64
        / 1e6;

    tokio::time::sleep(SETTLE).await;
    let idle = Sample::take(args.server_pid)?;

    // Publish, and wait for the deliveries.
    let ledger = Arc::new(Ledger::default());
    let publishing = tokio::spawn(publisher::run(
        pub_plan.clone(),
        shared.clone(),
        ledger.clone(),
    ));
    let mut last_seen = (0, 0);
    let mut last_progress = Instant::now();
    let stalled = loop {
        tokio::time::sleep(TICK).await;
        let delivered = shared.deliveries.load(Ordering::Relaxed);
        let published = shared.published.load(Ordering::Relaxed);
        progress.show(format_args!(
            "published {published}/{}, deliveries {delivered}/{}",
            args.events,
            connected as u64 * u64::from(args.events)
        ));
        if (delivered, published) != last_seen {
            last_seen = (delivered, published);
            last_progress = Instant::now();
        }
        if publishing.is_finished() {
            let ok = ledger
                .records()
                .iter()
                .filter(|r| r.error.is_none())
                .count() as u64;
            if delivered >= connected as u64 * ok {
                break false;
            }
        }
        if last_progress.elapsed() >= args.idle_timeout {
            break true;
        }
    };
    publishing.abort();
    progress.clear();
    let end = Sample::take(args.server_pid)?;

    let _ = stop_tx.send(true);
    let mut outcomes = Vec::with_capacity(subscribers.len());
    for handle in subscribers {
        outcomes.push(handle.await.context("a subscriber task panicked")?);
    }

    let mut report = summarize(args, &outcomes, &ledger.records());
    report.subscribe_url = subscribe_url;
    report.publish_url = publish_url;
    report.connected = connected;
    report.connect_failed = connect_failed;
    report.connect_error = connect_error;
    report.connect_s = connect_s;
    report.stalled = stalled;
    let ticks = sys::ticks_per_second();
    let seconds =
        |from: Option<u64>, to: Option<u64>| Some(to?.saturating_sub(from?) as f64 / ticks);
    let cpus = sys::cpu_count();
    let cores = |from: Option<u64>, to: Option<u64>, wall_s: f64| {
        sys::busy_cores(to?.saturating_sub(from?), ticks, wall_s, cpus)
    };
    let connect_wall = after_connect
        .at
        .duration_since(before_connect.at)
        .as_secs_f64();
    report.connect_client_cpu_s = seconds(before_connect.client_ticks, after_connect.client_ticks);
    report.connect_machine_busy_cores = cores(
        before_connect.machine_ticks,
        after_connect.machine_ticks,
        connect_wall,
    );
    report.phase_s = end.at.duration_since(idle.at).as_secs_f64();
    report.client_cpu_s = seconds(idle.client_ticks, end.client_ticks);
    report.machine_busy_cores = cores(idle.machine_ticks, end.machine_ticks, report.phase_s);
    if let (Some(pid), Some(before), Some(connected_at), Some(idle), Some(end)) = (
        args.server_pid,
        before_connect.server,
        after_connect.server,
        idle.server,
        end.server,
    ) {
        let cpu_s = end.cpu_ticks.saturating_sub(idle.cpu_ticks) as f64 / ticks;
        let connect_cpu_s = connected_at.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / ticks;
        report.server = Some(ServerUsage {
            pid,
            rss_before_kib: before.rss_kib,
            rss_after_kib: idle.rss_kib,
            rss_per_connection_bytes: Some(
                (idle.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / connected as f64,
            ),
            connect_cpu_s: Some(connect_cpu_s),
            cpu_per_connection_us: Some(connect_cpu_s * 1e6 / connected as f64),
            cpu_s,
            cpu_per_delivery_us: (report.deliveries > 0)
                .then(|| cpu_s * 1e6 / report.deliveries as f64),
            busy_cores: cores(Some(idle.cpu_ticks), Some(end.cpu_ticks), report.phase_s),
        });
    }
    Ok(report)
}

/// Builds the report's delivery and publish figures from what the subscribers and the
/// publisher recorded (the connection figures are filled in by the caller).
fn summarize(args: &BenchArgs, outcomes: &[Outcome], published: &[publisher::Published]) -> Report {
    let events = args.events as usize;
    let mut ok = vec![false; events];
    let mut rtts = Vec::with_capacity(published.len());
    let mut publish_error = None;
    for p in published {
        match &p.error {
            None => {
                ok[p.seq as usize] = true;
                rtts.push(u32::try_from(p.answered_us - p.sent_us).unwrap_or(u32::MAX));
            }
            Some(e) => {
                publish_error.get_or_insert_with(|| e.clone());
            }
        }
    }
    let ok_count = ok.iter().filter(|&&o| o).count();
    let first_send_us = published.iter().map(|p| p.sent_us).min();
    let last_answer_us = published
        .iter()
        .filter(|p| p.error.is_none())
        .map(|p| p.answered_us)
        .max();
    let per_s = |count: u64, from: Option<u64>, to: Option<u64>| {
        let span = to?.checked_sub(from?).filter(|&s| s > 0)?;
        Some(count as f64 * 1e6 / span as f64)
    };

    let mut latencies = Vec::new();
    let mut arrivals = Vec::new();
    let mut stamped = false;
    let mut fanout_us = vec![0u32; events];
    let mut arrival_fanout_us = vec![0u32; events];
    let mut have = vec![0usize; events];
    let (mut deliveries, mut duplicates, mut out_of_order, mut foreign) = (0, 0, 0, 0);
    let (mut complete_clients, mut connected, mut disconnected) = (0, 0, 0);
    let mut disconnect_reason = None;
    let mut last_receive_us = None;
    for outcome in outcomes {
        let Some(tally) = &outcome.tally else {
            continue;
        };
        connected += 1;
        if let Some(e) = &outcome.error {
            disconnected += 1;
            disconnect_reason.get_or_insert_with(|| e.clone());
        }
        deliveries += tally.unique;
        duplicates += tally.duplicates;
        out_of_order += tally.out_of_order;
        foreign += tally.foreign;
        if tally.unique > 0 {
            last_receive_us = last_receive_us.max(Some(tally.last_receive_us));
        }
        stamped |= tally.stamped;
        let mut complete = true;
        let received = tally.latency_us.iter().zip(&tally.arrival_us).enumerate();
        for (seq, (&latency, &arrival)) in received {
            if latency == MISSING {
                complete &= !ok[seq];
                continue;
            }
            latencies.push(latency);
            arrivals.push(arrival);
            fanout_us[seq] = fanout_us[seq].max(latency);
            arrival_fanout_us[seq] = arrival_fanout_us[seq].max(arrival);
            have[seq] += 1;
        }
        complete_clients += usize::from(complete);
    }
    let everyone_has = |s: &usize| ok[*s] && have[*s] == connected;
    let mut fanouts: Vec<u32> = (0..events)
        .filter(everyone_has)
        .map(|s| fanout_us[s])
        .collect();
    let mut arrival_fanouts: Vec<u32> = (0..events)
        .filter(everyone_has)
        .map(|s| arrival_fanout_us[s])
        .collect();
    let missing = (0..events)
        .filter(|&s| ok[s] && have[s] < connected)
        .take(10)
        .map(|s| Missing {
            seq: s as u32,
            clients: connected - have[s],
        })
        .collect();

    Report {
        subscribe_url: String::new(),
        publish_url: String::new(),
        subscribers: args.subscribers,
        events: args.events,
        rate: args.rate,
        payload: args.payload,
        connected,
        connect_failed: 0,
        connect_error: None,
        connect_s: 0.0,
        connect_client_cpu_s: None,
        connect_machine_busy_cores: None,
        published: ok_count as u32,
        publish_failed: (events - ok_count) as u32,
        publish_error,
        publish_rate: per_s(ok_count as u64, first_send_us, last_answer_us),
        publish_rtt_ms: Spread::of_micros(&mut rtts),
        expected_deliveries: connected as u64 * ok_count as u64,
        deliveries,
        deliveries_per_s: per_s(deliveries, first_send_us, last_receive_us),
        latency_ms: Spread::of_micros(&mut latencies),
        fanout_ms: Spread::of_micros(&mut fanouts),
        arrival_latency_ms: Spread::of_micros(&mut arrivals).filter(|_| stamped),
        arrival_fanout_ms: Spread::of_micros(&mut arrival_fanouts).filter(|_| stamped),
        complete_clients,
        duplicates,
        out_of_order,
        foreign_events: foreign,
        disconnected,
        disconnect_reason,
        stalled: false,
        phase_s: 0.0,
        client_cpu_s: None,
        machine_busy_cores: None,
        missing,
        server: None,
    }
}
