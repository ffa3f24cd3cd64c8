//! `herald bench` against a real `herald serve --dev`: every subscriber gets every event, once
//! and in order. (No timing assertions: timings belong in the benchmark's report.)

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// A child process killed when dropped, so a failing test leaves nothing running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `herald serve --dev` on a free port in `dir`; returns it and its base URL.
fn start_herald(dir: &std::path::Path) -> (Killed, String) {
    let mut child = Command::new(HERALD)
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start herald");
    let stdout = child.stdout.take().expect("herald's stdout");
    let server = Killed(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("herald listening on ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("herald did not report its address within 30 s");
    (server, url)
}

/// Runs `herald bench` with `args`, killing it if it takes longer than `limit`.
fn run_bench(args: &[&str], limit: Duration) -> Output {
    let child = Command::new(HERALD)
        .arg("bench")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start herald bench");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let started = Instant::now();
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("herald bench output"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of a child we started and have not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("herald bench did not finish within {:?}", started.elapsed());
        }
    }
}

#[test]
fn every_subscriber_gets_every_event_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = start_herald(dir.path());
    let pid = server.0.id().to_string();
    let output = run_bench(
        &[
            "--url",
            &url,
            "--subscribers",
            "20",
            "--events",
            "10",
            "--server-pid",
            &pid,
            "--json",
        ],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "herald bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });

    assert_eq!(report["connected"], 20, "{report}");
    assert_eq!(report["published"], 10, "{report}");
    assert_eq!(report["complete_clients"], 20, "{report}");
    assert_eq!(report["deliveries"], 200, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["out_of_order"], 0, "{report}");
    assert_eq!(report["disconnected"], 0, "{report}");
    assert_eq!(report["stalled"], false, "{report}");
    for figure in ["latency_ms", "fanout_ms", "publish_rtt_ms"] {
        assert!(
            report[figure]["p50"].is_number(),
            "{figure} missing: {report}"
        );
    }
    assert!(
        report["server"]["rss_after_kib"].as_u64().unwrap() > 0,
        "{report}"
    );
}
