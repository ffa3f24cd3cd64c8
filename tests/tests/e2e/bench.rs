//! `herald bench` against a real server: every subscriber gets every event once and in order,
//! over plain HTTP and over HTTPS (trusting the server through `--ca-file`), with HTTP/1.1 and
//! HTTP/2. No timing assertions: timings belong in the benchmark's report.

use std::process::{Command, Output};
use std::time::Duration;

use herald_tests::{Herald, HttpsHerald, herald_bin, run_bounded};
use serde_json::Value;

/// `herald bench --url URL --subscribers 20 --events 10 --json` plus `extra`.
fn bench(url: &str, extra: &[&str]) -> Output {
    let mut cmd = Command::new(herald_bin());
    cmd.args([
        "bench",
        "--url",
        url,
        "--subscribers",
        "20",
        "--events",
        "10",
    ])
    .args(["--idle-timeout", "5s", "--json"])
    .args(extra);
    run_bounded(&mut cmd, Duration::from_secs(60))
}

/// The JSON report of a run that must have succeeded, checked for completeness: 20
/// subscribers each got the 10 events once, in order.
fn complete_report(out: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "herald bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(report["connected"], 20, "{report}");
    assert_eq!(report["published"], 10, "{report}");
    assert_eq!(report["complete_clients"], 20, "{report}");
    assert_eq!(report["deliveries"], 200, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["out_of_order"], 0, "{report}");
    assert_eq!(report["disconnected"], 0, "{report}");
    assert_eq!(report["stalled"], false, "{report}");
    report
}

#[test]
fn every_subscriber_gets_every_event_once_and_in_order() {
    let herald = Herald::start(&["--dev"]);
    let pid = herald.pid().expect("the server's pid").to_string();
    let report = complete_report(&bench(&herald.url(""), &["--server-pid", &pid]));
    for figure in [
        "latency_ms",
        "fanout_ms",
        "publish_rtt_ms",
        "arrival_latency_ms",
        "arrival_fanout_ms",
    ] {
        assert!(
            report[figure]["p50"].is_number(),
            "{figure} missing: {report}"
        );
    }
    // Every event arrived in the kernel no later than the load generator read it.
    for (arrival, read) in [
        ("arrival_latency_ms", "latency_ms"),
        ("arrival_fanout_ms", "fanout_ms"),
    ] {
        for p in ["p50", "p99", "max"] {
            let (a, r) = (report[arrival][p].as_f64(), report[read][p].as_f64());
            assert!(
                a <= r,
                "{arrival}.{p} {a:?} after {read}.{p} {r:?}: {report}"
            );
        }
    }
    assert!(
        report["server"]["rss_after_kib"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
}

#[test]
fn over_http2_every_subscriber_gets_every_event_too() {
    let herald = Herald::start(&["--dev"]);
    // hyper's HTTP/2 client speaks nothing else: a complete run is an HTTP/2 run.
    let report = complete_report(&bench(&herald.url(""), &["--http2"]));
    assert!(report["latency_ms"]["p50"].is_number(), "{report}");
    // The HTTP/2 client reads the socket: no kernel arrival stamps to report.
    assert!(report["arrival_latency_ms"].is_null(), "{report}");
}

#[test]
fn the_load_generator_measures_an_https_server_it_is_told_to_trust() {
    let https = HttpsHerald::start(&[]);
    let url = https.herald.url("");
    // The test CA is not the system's: without it, nobody connects, and the error says why.
    let untrusted = bench(&url, &[]);
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
    let report = complete_report(&bench(&url, &["--ca-file", &https.ca]));
    // TLS reads are not stamped by the kernel: no arrival figures rather than made-up ones.
    assert!(report["arrival_latency_ms"].is_null(), "{report}");
    assert!(report["latency_ms"]["p50"].is_number(), "{report}");
    // HTTP/2 negotiated by ALPN.
    complete_report(&bench(&url, &["--ca-file", &https.ca, "--http2"]));
}

#[test]
fn a_run_where_no_publish_succeeded_fails_and_still_prints_its_report() {
    let herald = Herald::start(&["--dev"]);
    // A body without `data`: the server answers every publish with 400.
    let out = bench(
        &herald.url(""),
        &["--body-template", r#"{"topics":["{topic}"]}"#],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exited 0 having published nothing: {stderr}"
    );
    assert!(stderr.contains("no publish succeeded"), "{stderr}");
    assert!(stderr.contains("status 400"), "{stderr}");
    // Scripts still get the report, with the failures in it.
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(report["published"], 0, "{report}");
    assert_eq!(report["publish_failed"], 10, "{report}");
    assert_eq!(report["deliveries"], 0, "{report}");
}
