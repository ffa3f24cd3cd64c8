//! Durable log figures for BENCHMARKS.md: `cargo bench -p herald-server --bench log`.
//!
//! 1. Group commit: durable appends per second (flush + fsync per batch) under 1, 16 and 256
//!    concurrent publishers, each waiting for its acknowledgement before publishing again.
//! 2. Replay: reading the 1,000 events that match a subscription out of a 1,000,000-event log.
//!
//! A plain bench binary rather than criterion: a group-commit run is seconds of wall time with
//! hundreds of threads, and the replay setup (a million events) is built once. Set
//! `HERALD_BENCH_SECS` to change the length of each throughput run (default 3).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_core::{
    ConnId, Event, EventId, HistoryRequest, IdSequencer, Subscription, Target, Topic, TopicPattern,
    UserId,
};
use herald_server::log::{
    AppendLog, CommitReport, EventLog, FsyncPolicy, GroupCommitter, LogConfig, Retention, SledLog,
};
use tokio::sync::oneshot;

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn payload(n: u64) -> String {
    // About the size of a small JSON notification.
    format!(
        "{{\"n\":{n},\"kind\":\"order.updated\",\"status\":\"shipped\",\"note\":\"{}\"}}",
        "x".repeat(40)
    )
}

fn config(dir: &std::path::Path, fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        data_dir: dir.to_path_buf(),
        fsync,
        retention: Retention {
            max_events: u64::MAX,
            max_age: Duration::MAX,
            max_bytes: u64::MAX,
            max_keys: u64::MAX,
        },
    }
}

struct Throughput {
    events_per_sec: f64,
    mean_batch: f64,
    flush_p50: Duration,
    flush_p99: Duration,
}

/// Publishers waiting for their acknowledgement, in id order (ids are minted in order).
type Waiters = VecDeque<(EventId, oneshot::Sender<()>)>;

/// `publishers` tokio tasks on a 2-thread runtime (as in the server), each publishing one event
/// and awaiting its acknowledgement before the next, through one minting point and the
/// `GroupCommitter`, whose callback wakes the acknowledged publishers.
fn group_commit(publishers: usize, run_for: Duration) -> Throughput {
    let dir = tempfile::tempdir().expect("temp dir");
    let log: Arc<dyn AppendLog> =
        Arc::new(SledLog::open(&config(dir.path(), FsyncPolicy::EveryBatch)).expect("open log"));
    let waiters: Arc<Mutex<Waiters>> = Arc::default();
    let flushes: Arc<Mutex<Vec<(Duration, usize)>>> = Arc::default();
    let (report_waiters, report_flushes) = (waiters.clone(), flushes.clone());
    let committer = Arc::new(GroupCommitter::start(log, move |report| match report {
        CommitReport::Committed {
            up_to,
            count,
            flush_latency,
        } => {
            report_flushes.lock().unwrap().push((flush_latency, count));
            let mut waiters = report_waiters.lock().unwrap();
            while waiters.front().is_some_and(|(id, _)| *id <= up_to) {
                if let Some((_, ack)) = waiters.pop_front() {
                    let _ = ack.send(());
                }
            }
        }
        CommitReport::Failed { error, .. } => panic!("append failed: {error}"),
    }));
    // One minting point, as in the engine: ids reach the committer in order.
    let minter = Arc::new(Mutex::new((IdSequencer::new(None), 0u64)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let warmup = Duration::from_millis(500);
    let stop_at = Instant::now() + warmup + run_for;
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let (minter, committer, waiters) = (minter.clone(), committer.clone(), waiters.clone());
            runtime.spawn(async move {
                let topic = Topic::new(&format!("bench/{}", p % 10)).unwrap();
                while Instant::now() < stop_at {
                    let (ack, acked) = oneshot::channel();
                    {
                        let mut m = minter.lock().unwrap();
                        let id = m.0.next(wall_ms());
                        m.1 += 1;
                        let event = Event {
                            id,
                            target: Target {
                                topics: vec![topic.clone()],
                                ..Target::default()
                            },
                            event_type: None,
                            data: payload(m.1),
                        };
                        waiters.lock().unwrap().push_back((id, ack));
                        committer.append(Arc::new(event), None);
                    }
                    acked.await.expect("acknowledged");
                }
            })
        })
        .collect();
    std::thread::sleep(warmup);
    let measured_from = flushes.lock().unwrap().len();
    let t0 = Instant::now();
    runtime.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    let elapsed = t0.elapsed();
    let flushes = flushes.lock().unwrap();
    let measured = &flushes[measured_from..];
    let events: usize = measured.iter().map(|(_, count)| count).sum();
    let mut latencies: Vec<Duration> = measured.iter().map(|(latency, _)| *latency).collect();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Throughput {
        events_per_sec: events as f64 / elapsed.as_secs_f64(),
        mean_batch: events as f64 / measured.len() as f64,
        flush_p50: pick(0.5),
        flush_p99: pick(0.99),
    }
}

const LOG_EVENTS: u64 = 1_000_000;
const NEEDLES: u64 = 1_000;

/// Event `n` of the big log: every 1,000th goes to topic `needle` (and its sub-topic
/// `deep/{n % 10}`) and to user `needle-user`; the rest to 100 busy topics and 1,000 users.
fn haystack_event(sequencer: &mut IdSequencer, base_ms: u64, n: u64) -> Arc<Event> {
    let id = sequencer.next(base_ms + n / 50);
    let target = if n.is_multiple_of(LOG_EVENTS / NEEDLES) {
        Target {
            topics: vec![
                Topic::new("needle").unwrap(),
                Topic::new(&format!("deep/{}", n % 10)).unwrap(),
            ],
            users: vec![UserId::new("needle-user").unwrap()],
            broadcast: false,
        }
    } else {
        Target {
            topics: vec![Topic::new(&format!("busy/{}", n % 100)).unwrap()],
            users: vec![UserId::new(&format!("user-{}", n % 1_000)).unwrap()],
            broadcast: false,
        }
    };
    Arc::new(Event {
        id,
        target,
        event_type: None,
        data: payload(n),
    })
}

fn replay_request(patterns: &[&str], user: Option<&str>) -> HistoryRequest {
    HistoryRequest {
        conn: ConnId(1),
        after: None,
        through: EventId::MAX,
        subscription: Subscription {
            patterns: patterns
                .iter()
                .map(|p| TopicPattern::parse(p).unwrap())
                .collect(),
            user: user.map(|u| UserId::new(u).unwrap()),
        },
        max_events: 10_000,
        max_bytes: usize::MAX,
    }
}

fn time_replay(log: &SledLog, req: &HistoryRequest, runs: usize) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut found = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let page = log.read(req).expect("read");
        times.push(t.elapsed());
        found = page.events.len();
    }
    times.sort();
    (times[times.len() / 2], times[times.len() * 95 / 100], found)
}

fn main() {
    let secs = std::env::var("HERALD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let run_for = Duration::from_secs(secs);

    println!("## group commit, fsync every batch ({secs} s per run, median of 3 runs)");
    let only: Option<usize> = std::env::var("HERALD_BENCH_PUBLISHERS")
        .ok()
        .and_then(|s| s.parse().ok());
    for publishers in [1, 16, 256]
        .into_iter()
        .filter(|p| only.is_none_or(|o| o == *p))
    {
        let mut runs: Vec<Throughput> = (0..3).map(|_| group_commit(publishers, run_for)).collect();
        runs.sort_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec));
        let median = &runs[1];
        println!(
            "publishers={publishers:>3}  events/s={:>9.0} (runs: {:.0} / {:.0} / {:.0})  \
             mean batch={:>6.1}  flush p50={:.2?} p99={:.2?}",
            median.events_per_sec,
            runs[0].events_per_sec,
            runs[1].events_per_sec,
            runs[2].events_per_sec,
            median.mean_batch,
            median.flush_p50,
            median.flush_p99,
        );
    }

    println!("## replay of {NEEDLES} matching events from a {LOG_EVENTS}-event log");
    let dir = tempfile::tempdir().expect("temp dir");
    let build = Instant::now();
    {
        let log = SledLog::open(&config(dir.path(), FsyncPolicy::Never)).expect("open log");
        let mut sequencer = IdSequencer::new(None);
        let base_ms = wall_ms() - LOG_EVENTS;
        let mut batch = Vec::with_capacity(1_000);
        for n in 0..LOG_EVENTS {
            batch.push(haystack_event(&mut sequencer, base_ms, n));
            if batch.len() == 1_000 {
                log.append(&batch, &[]).expect("append");
                batch.clear();
            }
        }
        log.append(&batch, &[]).expect("append");
        println!(
            "built in {:.1?}: {} events, {} MB of records",
            build.elapsed(),
            log.bounds().events,
            log.bounds().bytes >> 20
        );
    }
    // Reopen: the first read comes from a cold sled cache (the OS page cache stays warm).
    let log = SledLog::open(&config(dir.path(), FsyncPolicy::Never)).expect("reopen log");
    let cases = [
        (
            "exact topic `needle` (first read after open)",
            replay_request(&["needle"], None),
            1,
        ),
        (
            "exact topic `needle`",
            replay_request(&["needle"], None),
            30,
        ),
        (
            "prefix `deep/*` (10 topics)",
            replay_request(&["deep/*"], None),
            30,
        ),
        (
            "user `needle-user`",
            replay_request(&[], Some("needle-user")),
            30,
        ),
        (
            "`needle` + `deep/*` + user (same 1,000 via 12 ranges)",
            replay_request(&["needle", "deep/*"], Some("needle-user")),
            30,
        ),
    ];
    for (name, req, runs) in cases {
        let (median, p95, found) = time_replay(&log, &req, runs);
        if runs == 1 {
            println!("{name}: {found} events in {median:.2?}");
        } else {
            println!("{name}: {found} events, median {median:.2?}, p95 {p95:.2?} ({runs} runs)");
        }
    }
}
