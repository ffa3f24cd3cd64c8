//! The figures a run produces: percentiles, the report, and its two renderings.

use std::fmt::Write as _;

use serde::Serialize;

/// The value at percentile `p` (0 to 100) of `sorted` (ascending), by nearest rank; `None` when
/// empty.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Percentiles in milliseconds of microsecond samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// Sorts `samples_us` and summarizes them; `None` when there are none.
    pub fn of_micros(samples_us: &mut [u32]) -> Option<Self> {
        samples_us.sort_unstable();
        let ms = |p| percentile(samples_us, p).map(|us| f64::from(us) / 1000.0);
        Some(Self {
            p50: ms(50.0)?,
            p90: ms(90.0)?,
            p99: ms(99.0)?,
            max: ms(100.0)?,
        })
    }
}

/// An event that some connected subscribers never got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    /// The event's sequence number.
    pub seq: u32,
    /// How many connected subscribers lack it.
    pub clients: usize,
}

/// What the server process used, read from /proc.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerUsage {
    /// The process measured.
    pub pid: u32,
    /// VmRSS before the subscribers connected, KiB.
    pub rss_before_kib: u64,
    /// VmRSS with every subscriber connected and idle, KiB.
    pub rss_after_kib: u64,
    /// (after - before) / connected subscribers, bytes.
    pub rss_per_connection_bytes: Option<f64>,
    /// User + system CPU seconds while the subscribers connected (from the first attempt
    /// until every attempt had its answer).
    pub connect_cpu_s: Option<f64>,
    /// `connect_cpu_s` per connected subscriber, microseconds: what accepting a subscriber
    /// costs the server (TCP accept, request, registration, response head).
    pub cpu_per_connection_us: Option<f64>,
    /// User + system CPU seconds over the publish phase.
    pub cpu_s: f64,
    /// `cpu_s` per delivery, microseconds.
    pub cpu_per_delivery_us: Option<f64>,
    /// `cpu_s` over the phase's wall time: near 1 when one core's worth of work is the limit.
    /// At most the machine's CPU count, and `None` when the phase was shorter than 10 clock
    /// ticks (see [`super::sys::busy_cores`]).
    pub busy_cores: Option<f64>,
}

/// Everything one run measured; `--json` prints it as one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Where the subscribers connected.
    pub subscribe_url: String,
    /// Where events were published.
    pub publish_url: String,
    /// Subscribers asked for.
    pub subscribers: usize,
    /// Events asked for.
    pub events: u32,
    /// Events per second asked for; 0 = unpaced.
    pub rate: f64,
    /// Bytes of data per event.
    pub payload: usize,
    /// Subscribers that got a 200 and their response head.
    pub connected: usize,
    /// Subscribers that could not connect.
    pub connect_failed: usize,
    /// The first connection error, if any.
    pub connect_error: Option<String>,
    /// From the first connection attempt until the last subscriber connected, seconds.
    pub connect_s: f64,
    /// CPU seconds this load generator used while connecting (a connect phase near `connect_s`
    /// is bound by the load generator, not the server).
    pub connect_client_cpu_s: Option<f64>,
    /// Cores the whole machine kept busy while connecting; at most its CPU count, and `None`
    /// when connecting took less than 10 clock ticks (see [`super::sys::busy_cores`]).
    pub connect_machine_busy_cores: Option<f64>,
    /// Publishes answered with a 2xx.
    pub published: u32,
    /// Publishes that failed.
    pub publish_failed: u32,
    /// The first publish error, if any.
    pub publish_error: Option<String>,
    /// Publishes per second achieved (first send to last answer).
    pub publish_rate: Option<f64>,
    /// Publish round trip, ms.
    pub publish_rtt_ms: Option<Spread>,
    /// Connected subscribers x events published.
    pub expected_deliveries: u64,
    /// Distinct events received, summed over subscribers.
    pub deliveries: u64,
    /// Deliveries / (last delivery - first publish).
    pub deliveries_per_s: Option<f64>,
    /// Publish (the send time inside the event) to receipt, ms.
    pub latency_ms: Option<Spread>,
    /// Per event, publish until the last subscriber had it, ms (over the events every
    /// connected subscriber got).
    pub fanout_ms: Option<Spread>,
    /// Publish until the subscriber's kernel received the event (its socket's receive
    /// timestamp), ms: `latency_ms` without the time the event waited for this load generator
    /// to read it. `None` when no read was stamped (TLS, or not Linux).
    pub arrival_latency_ms: Option<Spread>,
    /// `fanout_ms` by arrival time.
    pub arrival_fanout_ms: Option<Spread>,
    /// Connected subscribers that got every published event.
    pub complete_clients: usize,
    /// Events received again by the same subscriber.
    pub duplicates: u64,
    /// Events received after a later event whose publish started after theirs was answered.
    pub out_of_order: u64,
    /// Events whose data the load generator did not write (ignored).
    pub foreign_events: u64,
    /// Subscribers whose stream ended or failed before the run was over.
    pub disconnected: usize,
    /// The first such ending, if any.
    pub disconnect_reason: Option<String>,
    /// The wait for deliveries gave up after a stretch without progress.
    pub stalled: bool,
    /// From the first publish until the wait for deliveries ended, seconds.
    pub phase_s: f64,
    /// CPU seconds this load generator used over the phase.
    pub client_cpu_s: Option<f64>,
    /// Cores the whole machine kept busy over the phase (server, load generator and anything
    /// else running): tells a saturated server from a crowded machine. At most its CPU count,
    /// and `None` when the phase was shorter than 10 clock ticks (see
    /// [`super::sys::busy_cores`]).
    pub machine_busy_cores: Option<f64>,
    /// The first few events some subscribers lack.
    pub missing: Vec<Missing>,
    /// With `--server-pid`.
    pub server: Option<ServerUsage>,
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"))
}

impl Report {
    /// Why the run measured nothing, when it did not: no publish succeeded, so there were no
    /// deliveries to time (the figures are still worth printing, for the errors in them).
    /// `None` when at least one event was published, even if others failed.
    pub fn nothing_measured(&self) -> Option<String> {
        if self.published > 0 {
            return None;
        }
        Some(format!(
            "no publish succeeded ({} of {} failed), so nothing was measured; first error: {}",
            self.publish_failed,
            self.events,
            self.publish_error.as_deref().unwrap_or("none recorded")
        ))
    }

    /// The human-readable rendering (several lines).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let pace = if self.rate > 0.0 {
            format!("{}/s", self.rate)
        } else {
            "unpaced".to_owned()
        };
        let _ = writeln!(
            s,
            "{} subscribers, {} events ({pace}, {} bytes): {}",
            self.subscribers, self.events, self.payload, self.subscribe_url
        );
        let _ = writeln!(
            s,
            "connect       {}/{} in {:.3} s (load generator CPU {}, machine {} cores busy){}",
            self.connected,
            self.subscribers,
            self.connect_s,
            self.connect_client_cpu_s
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.3} s")),
            self.connect_machine_busy_cores
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
            self.connect_error
                .as_deref()
                .map_or(String::new(), |e| format!(
                    " ({} failed, first: {e})",
                    self.connect_failed
                ))
        );
        let _ = writeln!(
            s,
            "publish       {} ok, {} failed, {} events/s; RTT p50 {} p99 {}{}",
            self.published,
            self.publish_failed,
            self.publish_rate
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.0}")),
            ms(self.publish_rtt_ms.map(|r| r.p50)),
            ms(self.publish_rtt_ms.map(|r| r.p99)),
            self.publish_error
                .as_deref()
                .map_or(String::new(), |e| format!(" (first error: {e})"))
        );
        let _ = writeln!(
            s,
            "deliveries    {}/{}, {}/s",
            self.deliveries,
            self.expected_deliveries,
            self.deliveries_per_s
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"))
        );
        let l = self.latency_ms;
        let _ = writeln!(
            s,
            "latency       p50 {} p90 {} p99 {} max {}",
            ms(l.map(|l| l.p50)),
            ms(l.map(|l| l.p90)),
            ms(l.map(|l| l.p99)),
            ms(l.map(|l| l.max))
        );
        let _ = writeln!(
            s,
            "fan-out       p50 {} p99 {} (until the last subscriber has the event)",
            ms(self.fanout_ms.map(|f| f.p50)),
            ms(self.fanout_ms.map(|f| f.p99))
        );
        if let (Some(l), f) = (self.arrival_latency_ms, self.arrival_fanout_ms) {
            let _ = writeln!(
                s,
                "arrival       p50 {} p90 {} p99 {} max {}; fan-out p50 {} p99 {} (when the kernel received it, before this load generator read it)",
                ms(Some(l.p50)),
                ms(Some(l.p90)),
                ms(Some(l.p99)),
                ms(Some(l.max)),
                ms(f.map(|f| f.p50)),
                ms(f.map(|f| f.p99))
            );
        }
        let _ = writeln!(
            s,
            "clients       {}/{} complete, {} duplicates, {} out of order, {} disconnected{}",
            self.complete_clients,
            self.connected,
            self.duplicates,
            self.out_of_order,
            self.disconnected,
            self.disconnect_reason
                .as_deref()
                .map_or(String::new(), |r| format!(" (first: {r})"))
        );
        if self.foreign_events > 0 {
            let _ = writeln!(
                s,
                "foreign       {} events not sent by this run (ignored)",
                self.foreign_events
            );
        }
        if self.stalled || !self.missing.is_empty() {
            let list: Vec<String> = self
                .missing
                .iter()
                .map(|m| format!("#{} ({} clients)", m.seq, m.clients))
                .collect();
            let _ = writeln!(
                s,
                "missing       {}{}",
                if self.stalled {
                    "gave up waiting; "
                } else {
                    ""
                },
                if list.is_empty() {
                    "nothing".to_owned()
                } else {
                    list.join(", ")
                }
            );
        }
        if let Some(u) = &self.server {
            let _ = writeln!(
                s,
                "server        pid {}: RSS {} KiB -> {} KiB, {} per idle connection; CPU {} per connection; CPU {:.3} s, {} per delivery",
                u.pid,
                u.rss_before_kib,
                u.rss_after_kib,
                u.rss_per_connection_bytes
                    .map_or_else(|| "-".to_owned(), |b| format!("{:.1} KB", b / 1000.0)),
                u.cpu_per_connection_us
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.1} µs")),
                u.cpu_s,
                u.cpu_per_delivery_us
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.3} µs"))
            );
        }
        let cores = |c: Option<f64>| c.map_or_else(|| "-".to_owned(), |c| format!("{c:.2}"));
        let _ = writeln!(
            s,
            "cpu           over {:.2} s of publishing: server {} cores, load generator {} cores, whole machine {} cores",
            self.phase_s,
            cores(self.server.as_ref().and_then(|u| u.busy_cores)),
            cores(
                self.client_cpu_s
                    .filter(|_| self.phase_s > 0.0)
                    .map(|c| c / self.phase_s)
            ),
            cores(self.machine_busy_cores)
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(50));
        assert_eq!(percentile(&sorted, 99.0), Some(99));
        assert_eq!(percentile(&sorted, 100.0), Some(100));
        assert_eq!(percentile(&sorted, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2], 50.0), Some(1));
        assert_eq!(percentile(&[1, 2, 3], 90.0), Some(3));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn a_spread_sorts_and_converts_to_milliseconds() {
        let mut samples = vec![3000, 1000, 2000, 4000];
        let s = Spread::of_micros(&mut samples).unwrap();
        assert_eq!((s.p50, s.p90, s.p99, s.max), (2.0, 4.0, 4.0, 4.0));
        assert_eq!(Spread::of_micros(&mut []), None);
    }

    fn sample() -> Report {
        Report {
            subscribe_url: "http://127.0.0.1:1/events?topic=bench".into(),
            publish_url: "http://127.0.0.1:1/publish".into(),
            subscribers: 2,
            events: 3,
            rate: 0.0,
            payload: 64,
            connected: 2,
            connect_failed: 0,
            connect_error: None,
            connect_s: 0.01,
            connect_client_cpu_s: Some(0.005),
            connect_machine_busy_cores: Some(1.0),
            published: 3,
            publish_failed: 0,
            publish_error: None,
            publish_rate: Some(1000.0),
            publish_rtt_ms: Some(Spread {
                p50: 1.0,
                p90: 1.0,
                p99: 1.5,
                max: 2.0,
            }),
            expected_deliveries: 6,
            deliveries: 5,
            deliveries_per_s: Some(2500.0),
            latency_ms: Some(Spread {
                p50: 0.5,
                p90: 0.7,
                p99: 0.9,
                max: 1.0,
            }),
            fanout_ms: None,
            arrival_latency_ms: Some(Spread {
                p50: 0.25,
                p90: 0.5,
                p99: 0.75,
                max: 1.0,
            }),
            arrival_fanout_ms: None,
            complete_clients: 1,
            duplicates: 0,
            out_of_order: 0,
            foreign_events: 0,
            disconnected: 0,
            disconnect_reason: None,
            stalled: true,
            phase_s: 0.5,
            client_cpu_s: Some(0.25),
            machine_busy_cores: Some(1.5),
            missing: vec![Missing { seq: 2, clients: 1 }],
            server: Some(ServerUsage {
                pid: 9,
                rss_before_kib: 1000,
                rss_after_kib: 1016,
                rss_per_connection_bytes: Some(8192.0),
                connect_cpu_s: Some(0.002),
                cpu_per_connection_us: Some(2000.0),
                cpu_s: 0.01,
                cpu_per_delivery_us: Some(2.0),
                busy_cores: Some(0.02),
            }),
        }
    }

    #[test]
    fn a_run_where_no_publish_succeeded_measured_nothing_and_says_why() {
        let mut report = sample();
        report.published = 0;
        report.publish_failed = 3;
        report.publish_error = Some("status 400 Bad Request: missing data".into());
        let error = report.nothing_measured().expect("an error");
        assert!(
            error.contains("no publish succeeded (3 of 3 failed)"),
            "{error}"
        );
        assert!(
            error.contains("status 400 Bad Request: missing data"),
            "{error}"
        );
    }

    #[test]
    fn a_run_where_some_publishes_failed_still_measured_something() {
        assert_eq!(sample().nothing_measured(), None);
        let mut report = sample();
        report.published = 1;
        report.publish_failed = 2;
        report.publish_error = Some("status 413 Payload Too Large".into());
        assert_eq!(report.nothing_measured(), None);
    }

    #[test]
    fn the_json_report_is_one_object_with_stable_field_names() {
        let value = serde_json::to_value(sample()).unwrap();
        assert_eq!(value["deliveries_per_s"], 2500.0);
        assert_eq!(value["latency_ms"]["p99"], 0.9);
        assert_eq!(value["publish_rtt_ms"]["p50"], 1.0);
        assert_eq!(value["fanout_ms"], serde_json::Value::Null);
        assert_eq!(value["arrival_latency_ms"]["p50"], 0.25);
        assert_eq!(value["complete_clients"], 1);
        assert_eq!(value["missing"][0]["seq"], 2);
        assert_eq!(value["server"]["rss_per_connection_bytes"], 8192.0);
        assert_eq!(value["server"]["cpu_per_delivery_us"], 2.0);
        assert!(!serde_json::to_string(&sample()).unwrap().contains('\n'));
    }

    #[test]
    fn the_human_report_says_what_is_missing_and_what_the_server_used() {
        let text = sample().render();
        assert!(text.contains("deliveries    5/6, 2500/s"), "{text}");
        assert!(text.contains("gave up waiting; #2 (1 clients)"), "{text}");
        assert!(text.contains("8.2 KB per idle connection"), "{text}");
        assert!(text.contains("fan-out       p50 - p99 -"), "{text}");
        assert!(
            text.contains(
                "arrival       p50 0.25 ms p90 0.50 ms p99 0.75 ms max 1.00 ms; fan-out p50 - p99 -"
            ),
            "{text}"
        );
        assert!(
            text.contains("server 0.02 cores, load generator 0.50 cores, whole machine 1.50 cores"),
            "{text}"
        );
    }
}
