//! `GET /metrics`: Prometheus text exposition of the engine's counters and the log's figures.

use std::fmt::Write;

use herald_core::Stats;

use crate::log::LogMetricsSnapshot;

/// Renders the metrics page.
pub fn render(stats: &Stats, log: &LogMetricsSnapshot, corrupt_records: u64) -> String {
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
        "Events published (ids minted).",
        c.published as f64,
    );
    metric(
        "committed_total",
        "counter",
        "Events made durable by the log.",
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
        "Bytes of events held in the log.",
        stats.log.bytes as f64,
    );
    metric(
        "log_appends_total",
        "counter",
        "Events written durably to the log.",
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
        "# HELP herald_connections_by_transport Connections open now, by HTTP version and TLS.\n\
         # TYPE herald_connections_by_transport gauge"
    );
    for (protocol, tls, open) in stats.transports.each() {
        let _ = writeln!(
            out,
            "herald_connections_by_transport{{protocol=\"{protocol}\",tls=\"{tls}\"}} {open}"
        );
    }
    out
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
        let text = render(&stats, &LogMetricsSnapshot::default(), 0);
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
}
