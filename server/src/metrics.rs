//! `GET /metrics`: Prometheus text exposition of the engine's counters and the log's figures.

use std::fmt::Write;

use herald_core::Stats;

use crate::latency::{BOUNDS_US, Counts, EXPORTED_US, LatencyCounts};
use crate::log::LogMetricsSnapshot;

/// Renders the metrics page.
pub fn render(
    stats: &Stats,
    log: &LogMetricsSnapshot,
    corrupt_records: u64,
    latency: &LatencyCounts,
    refused: &crate::api::Refusals,
) -> String {
    let c = &stats.counters;
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP herald_{name} {help}\n# TYPE herald_{name} {kind}\nherald_{name} {value}"
        );
    };
    metric(
        "connections",
        "gauge",
        "Subscriber connections open now.",
        c.connections as f64,
    );
    metric(
        "admin_streams",
        "gauge",
        "Admin streams (consoles) open now; not in herald_connections or the connection cap.",
        c.admin_streams as f64,
    );
    let load =
        |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed) as f64;
    metric(
        "unauthorized_total",
        "counter",
        "Requests answered 401: no token, or an expired or forged one (a secret that differs from the publishers' shows here).",
        load(&refused.unauthorized),
    );
    metric(
        "forbidden_total",
        "counter",
        "Requests answered 403: a token without the right (a topic outside its grant, no admin, a cookie from another origin).",
        load(&refused.forbidden),
    );
    metric(
        "connections_total",
        "counter",
        "Subscriber connections accepted.",
        c.connections_total as f64,
    );
    metric(
        "connections_refused_total",
        "counter",
        "Subscriber connections refused by a limit (connection caps, topics per subscription).",
        c.refused as f64,
    );
    metric(
        "published_total",
        "counter",
        "Publishes this instance took (ids minted; in cluster mode, attempts, failed ones included).",
        c.published as f64,
    );
    metric(
        "committed_total",
        "counter",
        "Events made durable by the log (in cluster mode: every instance's, as this instance read them from the shared log; do not sum over instances).",
        c.committed as f64,
    );
    metric(
        "delivered_total",
        "counter",
        "Event frames handed to connections, live or replayed.",
        c.delivered as f64,
    );
    metric(
        "replayed_total",
        "counter",
        "Event frames sent while replaying history.",
        c.replayed as f64,
    );
    metric(
        "slow_consumer_closes_total",
        "counter",
        "Connections closed because their queue overflowed.",
        c.slow_consumer_closes as f64,
    );
    metric(
        "resets_total",
        "counter",
        "herald.reset notices sent for resume points that could not be honoured.",
        c.resets as f64,
    );
    metric(
        "keepalives_total",
        "counter",
        "Keep-alive comments sent.",
        c.keepalives as f64,
    );
    metric(
        "idempotent_hits_total",
        "counter",
        "Publishes answered from the idempotency memory.",
        c.idempotent_hits as f64,
    );
    metric(
        "pending_events",
        "gauge",
        "Events minted but not yet committed.",
        stats.pending as f64,
    );
    metric(
        "log_events",
        "gauge",
        "Events held in the log.",
        stats.log.events as f64,
    );
    metric(
        "log_bytes",
        "gauge",
        "Bytes of events held in the log (in cluster mode: the Redis stream's MEMORY USAGE).",
        stats.log.bytes as f64,
    );
    metric(
        "log_appends_total",
        "counter",
        "Events this instance wrote durably to the log.",
        log.committed_events as f64,
    );
    metric(
        "log_batches_total",
        "counter",
        "Group-commit batches written (one flush each).",
        log.committed_batches as f64,
    );
    metric(
        "log_failed_total",
        "counter",
        "Events the log failed to store.",
        log.failed_events as f64,
    );
    metric(
        "log_pending_events",
        "gauge",
        "Events queued for the log but not yet written.",
        log.pending() as f64,
    );
    metric(
        "log_flush_seconds",
        "gauge",
        "Write and flush latency of the last group-commit batch.",
        log.last_flush_latency.as_secs_f64(),
    );
    metric(
        "log_stopped",
        "gauge",
        "1 once a storage failure has stopped the log: publishes fail until a restart.",
        f64::from(u8::from(log.stopped)),
    );
    metric(
        "log_corrupt_records_total",
        "counter",
        "Stored records skipped because they failed to decode.",
        corrupt_records as f64,
    );
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        stats.uptime_ms as f64 / 1e3,
    );
    let _ = writeln!(
        out,
        "# HELP herald_connections_by_transport Subscriber streams open now, by HTTP version and TLS (HTTP/2 streams share connections).\n\
         # TYPE herald_connections_by_transport gauge"
    );
    for (protocol, tls, open) in stats.transports.each() {
        let _ = writeln!(
            out,
            "herald_connections_by_transport{{protocol=\"{protocol}\",tls=\"{tls}\"}} {open}"
        );
    }
    histogram(
        &mut out,
        "publish_seconds",
        "Publishes, from the request read until the event was durable and its id answered.",
        &latency.publish,
    );
    histogram(
        &mut out,
        "delivery_seconds",
        "What is queued for subscribers (events, keep-alives), from entering an empty queue (at \
         fan-out, once durable, or a replay page) until written to the connection.",
        &latency.delivery,
    );
    out
}

/// One histogram in Prometheus's text form: cumulative buckets, sum and count.
fn histogram(out: &mut String, name: &str, help: &str, counts: &Counts) {
    let _ = writeln!(
        out,
        "# HELP herald_{name} {help}\n# TYPE herald_{name} histogram"
    );
    let mut cumulative = 0;
    for (bound, n) in BOUNDS_US.iter().zip(&counts.buckets) {
        cumulative += n;
        if EXPORTED_US.contains(bound) {
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "herald_{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
    }
    let _ = writeln!(
        out,
        "herald_{name}_bucket{{le=\"+Inf\"}} {}\nherald_{name}_sum {}\nherald_{name}_count {}",
        counts.count(),
        counts.sum_us as f64 / 1e6,
        counts.count()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::{Protocol, Transports};

    #[test]
    fn connections_are_also_counted_by_transport_with_labels() {
        let mut stats = Stats {
            transports: Transports {
                http1: 7,
                http2_tls: 3,
                ..Transports::default()
            },
            ..Stats::default()
        };
        *stats.transports.count_mut(Protocol::Http1, true) += 1;
        let text = render(
            &stats,
            &LogMetricsSnapshot::default(),
            0,
            &LatencyCounts::default(),
            &crate::api::Refusals::default(),
        );
        for line in [
            "# TYPE herald_connections_by_transport gauge",
            "herald_connections_by_transport{protocol=\"HTTP/1.1\",tls=\"false\"} 7",
            "herald_connections_by_transport{protocol=\"HTTP/1.1\",tls=\"true\"} 1",
            "herald_connections_by_transport{protocol=\"HTTP/2\",tls=\"false\"} 0",
            "herald_connections_by_transport{protocol=\"HTTP/2\",tls=\"true\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn latency_histograms_have_cumulative_buckets_a_sum_and_a_count() {
        let h = crate::latency::Histogram::new();
        for us in [80, 90, 2_000, 40_000_000] {
            h.observe(std::time::Duration::from_micros(us));
        }
        let latency = LatencyCounts {
            delivery: h.counts(),
            ..LatencyCounts::default()
        };
        let text = render(
            &Stats::default(),
            &LogMetricsSnapshot::default(),
            0,
            &latency,
            &crate::api::Refusals::default(),
        );
        for line in [
            "# TYPE herald_delivery_seconds histogram",
            "herald_delivery_seconds_bucket{le=\"0.0001\"} 2",
            "herald_delivery_seconds_bucket{le=\"0.001\"} 2",
            "herald_delivery_seconds_bucket{le=\"0.0025\"} 3",
            "herald_delivery_seconds_bucket{le=\"10\"} 3",
            "herald_delivery_seconds_bucket{le=\"+Inf\"} 4",
            "herald_delivery_seconds_bucket{le=\"0.00025\"} 2",
            "herald_delivery_seconds_sum 40.00217",
            "herald_delivery_seconds_count 4",
            "# TYPE herald_publish_seconds histogram",
            "herald_publish_seconds_bucket{le=\"+Inf\"} 0",
            "herald_publish_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        // Only the exported bounds, in order: 16 and +Inf.
        let buckets = text
            .lines()
            .filter(|l| l.starts_with("herald_delivery_seconds_bucket"))
            .count();
        assert_eq!(buckets, 17, "{text}");
        assert!(!text.contains("le=\"0.00015\""), "{text}");
    }
}
