//! What the server measures of its own latency, for `/metrics` and the operator console:
//! - [`PUBLISH`]: a publish, from its request having been read until the event is durable and
//!   its id answered (or until it is answered from the idempotency memory);
//! - [`DELIVERY`]: what is queued for a subscriber (events, and the keep-alives of a quiet
//!   stream), from the first of it entering the empty queue (at fan-out, right after the log
//!   made the event durable, or when a replay page was read) until the queue was written out
//!   to the socket, or taken by the HTTP/2 or TLS connection that writes it. A subscriber that
//!   reads slowly shows here once its queue is written.
//!
//! Both are histograms with fixed buckets, recorded lock-free from any thread. Each thread
//! counts into one of a few cache-line-sized shards, so writer threads on different cores do
//! not contend on one counter per delivery.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herald_core::{Latency, Quantiles};

/// The buckets' upper bounds in microseconds, from 100 µs to 10 s, ten to a decade (no
/// bucket's upper bound is more than 1.34 times its lower one, so a quantile estimated within
/// one is off by a third at most); a last, unbounded bucket counts the rest.
pub const BOUNDS_US: [u64; 51] = bounds();
/// The bounds `/metrics` exports (1, 2.5 and 5 per decade, as Prometheus's own defaults): each
/// is one of [`BOUNDS_US`], so its cumulative count is exact.
pub const EXPORTED_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

const fn bounds() -> [u64; 51] {
    // Per mille of each decade's first bound.
    const STEPS: [u64; 10] = [1000, 1250, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000];
    let mut out = [0; 51];
    let mut decade = 100;
    let mut i = 0;
    while i < 50 {
        out[i] = decade * STEPS[i % 10] / 1000;
        i += 1;
        if i % 10 == 0 {
            decade *= 10;
        }
    }
    out[50] = decade;
    out
}
const BUCKETS: usize = BOUNDS_US.len() + 1;
const SHARDS: usize = 8;

/// Publish to durable and answered.
pub static PUBLISH: Histogram = Histogram::new();
/// Queued for a subscriber to written to its connection.
pub static DELIVERY: Histogram = Histogram::new();

/// A latency histogram.
#[derive(Debug)]
pub struct Histogram {
    shards: [Shard; SHARDS],
}

#[derive(Debug)]
#[repr(align(64))]
struct Shard {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

/// The counts of a histogram at one moment (cumulative since the start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// Per bucket, not cumulative; the last is the unbounded one.
    pub buckets: [u64; BUCKETS],
    /// The sum of every observation, microseconds.
    pub sum_us: u64,
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Self {
            shards: [const {
                Shard {
                    buckets: [const { AtomicU64::new(0) }; BUCKETS],
                    sum_us: AtomicU64::new(0),
                }
            }; SHARDS],
        }
    }

    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_US.partition_point(|&bound| bound < us);
        let shard = &self.shards[shard_index()];
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counts so far, summed over the shards.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for shard in &self.shards {
            for (total, bucket) in counts.buckets.iter_mut().zip(&shard.buckets) {
                *total += bucket.load(Ordering::Relaxed);
            }
            counts.sum_us = counts
                .sum_us
                .saturating_add(shard.sum_us.load(Ordering::Relaxed));
        }
        counts
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// This thread's shard, given out round robin on first use.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            buckets: [0; BUCKETS],
            sum_us: 0,
        }
    }
}

impl Counts {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// What was observed between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut delta = Counts {
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
            ..Counts::default()
        };
        for (d, (now, then)) in delta
            .buckets
            .iter_mut()
            .zip(self.buckets.iter().zip(&earlier.buckets))
        {
            *d = now.saturating_sub(*then);
        }
        delta
    }

    /// The `q` quantile (0 to 1) in microseconds, estimated as Prometheus's
    /// `histogram_quantile` does: linearly within the bucket it falls in. A quantile in the
    /// unbounded bucket is reported as the last bound. `None` without observations.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = BOUNDS_US.get(i) else {
                    return BOUNDS_US.last().copied();
                };
                let lower = if i == 0 { 0 } else { BOUNDS_US[i - 1] };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lower + ((upper - lower) as f64 * within).round() as u64);
            }
            below += n;
        }
        BOUNDS_US.last().copied()
    }

    /// The median and the 99th percentile, for the stats samples.
    pub fn quantiles(&self) -> Option<Quantiles> {
        Some(Quantiles {
            count: self.count(),
            p50_us: self.quantile_us(0.5)?,
            p99_us: self.quantile_us(0.99)?,
        })
    }
}

/// Both histograms at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyCounts {
    /// [`PUBLISH`].
    pub publish: Counts,
    /// [`DELIVERY`].
    pub delivery: Counts,
}

impl LatencyCounts {
    /// The process's histograms now.
    pub fn now() -> Self {
        Self {
            publish: PUBLISH.counts(),
            delivery: DELIVERY.counts(),
        }
    }
}

/// How far back the stats samples' latency figures look.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How often the window takes a new sample of the histograms.
const STEP: Duration = Duration::from_secs(1);

/// The recent samples of the histograms, from which the figures over the last [`WINDOW`]
/// are worked out (the hub hands them to the engine for its stats samples).
#[derive(Debug)]
pub struct Window {
    samples: VecDeque<(Instant, LatencyCounts)>,
}

impl Window {
    /// A window that starts at `start` with nothing counted: the histograms' counts belong to
    /// the process, which starts the hub (and its window) before it takes any request.
    pub fn new(start: Instant) -> Self {
        Self {
            samples: VecDeque::from([(start, LatencyCounts::default())]),
        }
    }

    /// Takes `counts()` as the sample for `now` (at most one a [`STEP`]) and answers the
    /// figures over the window that ends with it; `None` until there is something new to say.
    pub fn update(
        &mut self,
        now: Instant,
        counts: impl FnOnce() -> LatencyCounts,
    ) -> Option<Latency> {
        if let Some((last, _)) = self.samples.back()
            && now.saturating_duration_since(*last) < STEP
        {
            return None;
        }
        let counts = counts();
        self.samples.push_back((now, counts));
        // Keep the newest sample at least WINDOW old: the window's start.
        while self.samples.len() > 2 && now.saturating_duration_since(self.samples[1].0) >= WINDOW {
            self.samples.pop_front();
        }
        let (start, first) = self.samples.front()?;
        Some(Latency {
            window_ms: u64::try_from(now.saturating_duration_since(*start).as_millis())
                .unwrap_or(u64::MAX),
            publish: counts.publish.since(&first.publish).quantiles(),
            delivery: counts.delivery.since(&first.delivery).quantiles(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn observations_land_in_the_bucket_whose_bound_they_do_not_pass() {
        let h = Histogram::new();
        h.observe(us(0));
        h.observe(us(100));
        h.observe(us(101));
        h.observe(us(10_000_000));
        h.observe(Duration::from_secs(60));
        let c = h.counts();
        assert_eq!(c.buckets[0], 2, "0 and 100 µs are within the first bound");
        assert_eq!(c.buckets[1], 1, "101 µs is in the next, up to 125 µs");
        assert_eq!(c.buckets[BUCKETS - 2], 1, "10 s is the last bound");
        assert_eq!(c.buckets[BUCKETS - 1], 1, "60 s is past every bound");
        assert_eq!(c.count(), 5);
        assert_eq!(c.sum_us, 100 + 101 + 10_000_000 + 60_000_000);
    }

    #[test]
    fn counts_from_every_thread_are_summed() {
        let h = std::sync::Arc::new(Histogram::new());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        h.observe(us(300));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let c = h.counts();
        assert_eq!(c.count(), 12_000);
        assert_eq!(
            c.buckets[BOUNDS_US.iter().position(|&b| b == 300).unwrap()],
            12_000
        );
        assert_eq!(c.sum_us, 12_000 * 300);
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket_over_a_window() {
        let h = Histogram::new();
        assert_eq!(h.counts().quantile_us(0.5), None);
        for _ in 0..10 {
            h.observe(us(50_000));
        }
        let before = h.counts();
        // 100 observations in (1.5 ms, 2 ms], one in (250 ms, 300 ms].
        for _ in 0..100 {
            h.observe(us(1_900));
        }
        h.observe(us(300_000));
        let window = h.counts().since(&before);
        assert_eq!(window.count(), 101);
        // Rank 50.5 of the 100 in (1500, 2000]: 1500 + 500 x 0.505.
        assert_eq!(window.quantile_us(0.5), Some(1_753));
        // Rank 99.99: still in that bucket, at its top.
        assert_eq!(window.quantile_us(0.99), Some(2_000));
        assert_eq!(window.quantile_us(1.0), Some(300_000));
        let q = window.quantiles().unwrap();
        assert_eq!((q.count, q.p50_us, q.p99_us), (101, 1_753, 2_000));
        // Over everything, the ten older observations at 50 ms, in (40, 50] ms, hold the 99th
        // percentile: rank 109.89 of 111.
        assert_eq!(h.counts().quantile_us(0.99), Some(49_890));
    }

    #[test]
    fn the_window_reports_what_was_observed_in_its_last_ten_seconds() {
        let h = Histogram::new();
        let counts = |h: &Histogram| LatencyCounts {
            delivery: h.counts(),
            ..LatencyCounts::default()
        };
        let t0 = Instant::now();
        let mut window = Window::new(t0);
        // Two seconds of slow deliveries, then fast ones.
        for _ in 0..10 {
            h.observe(Duration::from_millis(400));
        }
        assert_eq!(
            window.update(t0 + Duration::from_millis(500), || counts(&h)),
            None,
            "at most one sample a second"
        );
        let at = |s: u64| t0 + Duration::from_secs(s);
        let slow = window.update(at(2), || counts(&h)).unwrap();
        assert_eq!(slow.window_ms, 2_000, "from the start");
        assert_eq!(slow.delivery.unwrap().count, 10);
        assert_eq!(slow.publish, None);
        for s in 3..=11 {
            h.observe(Duration::from_micros(200));
            window.update(at(s), || counts(&h)).unwrap();
        }
        let later = window.update(at(12), || counts(&h)).unwrap();
        assert_eq!(later.window_ms, 10_000, "from the sample at 2 s");
        let delivery = later.delivery.unwrap();
        assert_eq!(delivery.count, 9, "the slow ones fell out of the window");
        assert!(delivery.p99_us <= 250, "{delivery:?}");
        // Nothing new for ten seconds: no figure, rather than a stale one.
        for s in 13..=22 {
            window.update(at(s), || counts(&h)).unwrap();
        }
        assert_eq!(window.update(at(23), || counts(&h)).unwrap().delivery, None);
    }

    #[test]
    fn the_bounds_grow_evenly_and_include_every_exported_one() {
        assert_eq!((BOUNDS_US[0], BOUNDS_US[50]), (100, 10_000_000));
        for pair in BOUNDS_US.windows(2) {
            assert!(
                pair[1] > pair[0] && pair[1] * 100 <= pair[0] * 134,
                "{pair:?}"
            );
        }
        for bound in EXPORTED_US {
            assert!(BOUNDS_US.contains(&bound), "{bound}");
        }
    }

    #[test]
    fn a_quantile_past_every_bound_is_reported_as_the_last_bound() {
        let h = Histogram::new();
        h.observe(Duration::from_secs(30));
        assert_eq!(h.counts().quantile_us(0.5), Some(10_000_000));
    }
}
