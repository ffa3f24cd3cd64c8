//! Storage failures: a log that a full disk stopped says so to the health probe and the
//! metrics, and the server still exits on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use herald_tests::{Herald, WAIT, skip};
use http::{Method, StatusCode};
use serde_json::json;

/// A small tmpfs mounted for the life of the value (needs root, as CI runs).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let size = format!("size={megabytes}m");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        mounted.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .output();
    }
}

/// Writes zeros to `path` until the disk is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("a filler file");
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
}

#[tokio::test]
async fn a_log_stopped_by_a_full_disk_fails_the_health_probe_and_sigterm_still_exits() {
    let Some(disk) = SmallDisk::mount(8) else {
        return skip(
            "a_log_stopped_by_a_full_disk_fails_the_health_probe_and_sigterm_still_exits",
            "cannot mount a tmpfs (needs root)",
        );
    };
    let data: PathBuf = disk.path().join("data");
    let data_dir = data.to_str().expect("utf-8 path");
    let mut herald = Herald::start(&[
        "--dev",
        "--data-dir",
        data_dir,
        "--shutdown-timeout",
        "3s",
        "--max-body",
        "1MiB",
    ]);
    herald
        .publish_ok(json!({"topics": ["t"], "data": "before"}))
        .await;

    let filler = disk.path().join("filler");
    fill(&filler);
    let big = "x".repeat(512 * 1024);
    let (status, body) = herald.publish(json!({"topics": ["t"], "data": big})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    std::fs::remove_file(&filler).expect("space again");

    // The log takes nothing more until a restart, and says so where a probe looks.
    let (status, body) = herald
        .publish(json!({"topics": ["t"], "data": "after"}))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let health = herald.call(Method::GET, "/healthz").send().await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        health.text()
    );
    assert!(health.error().contains("restart"), "{}", health.text());
    let metrics = herald.call(Method::GET, "/metrics").send().await.text();
    assert!(
        metrics.lines().any(|l| l == "herald_log_stopped 1"),
        "{metrics}"
    );

    herald.terminate();
    let status = herald
        .wait_exit(Duration::from_secs(3) + WAIT)
        .expect("the server exits after SIGTERM although its log had stopped");
    assert!(!status.success(), "a stopped log is a failure: {status:?}");
}
