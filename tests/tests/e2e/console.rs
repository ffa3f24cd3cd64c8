//! The operator console, for real: `herald-tui` runs in tmux against a running server, sees a
//! subscriber in its table, composes a broadcast, and the subscriber receives it; over https
//! it trusts the server only through `--ca-file`.

use std::process::Command;
use std::time::{Duration, Instant};

use herald_tests::{Herald, HttpsHerald, WAIT, run_bounded, tui_bin};

use crate::transport::Curl;

/// A tmux session killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(command: &str) -> Self {
        let name = format!("herald-e2e-{}-{}", std::process::id(), unique());
        let out = run_bounded(
            Command::new("tmux").args([
                "new-session",
                "-d",
                "-x",
                "120",
                "-y",
                "40",
                "-s",
                &name,
                command,
            ]),
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { name }
    }

    fn screen(&self) -> String {
        let out = run_bounded(
            Command::new("tmux").args(["capture-pane", "-p", "-t", &self.name]),
            Duration::from_secs(5),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            let out = run_bounded(
                Command::new("tmux").args(["send-keys", "-t", &self.name, key]),
                Duration::from_secs(5),
            );
            assert!(out.status.success(), "send-keys {key} failed");
            // One key at a time, as a person types: the console redraws between keys.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn type_text(&self, text: &str) {
        let out = run_bounded(
            Command::new("tmux").args(["send-keys", "-t", &self.name, "-l", text]),
            Duration::from_secs(5),
        );
        assert!(out.status.success(), "send-keys -l failed");
    }

    /// Polls the screen until `pred` holds or the bound passes; returns the last screen.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < WAIT,
                "the console never showed {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = run_bounded(
            Command::new("tmux").args(["kill-session", "-t", &self.name]),
            Duration::from_secs(5),
        );
    }
}

fn unique() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos().into())
}

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// False (after saying SKIPPED) when tmux is missing outside CI; in CI a missing tmux fails.
fn tmux_or_skip() -> bool {
    if tmux_available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "tmux is missing: `apt-get install tmux` (bash .ci/run does)"
    );
    eprintln!("SKIPPED: tmux is not installed (run bash .ci/run to install)");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_subscriber_and_its_broadcast_reaches_it() {
    if !tmux_or_skip() {
        return;
    }
    let herald = Herald::start(&["--dev"]);
    let mut subscriber = herald
        .events()
        .topic("console-demo")
        .query("user", "alice")
        .open()
        .await;
    let tui = tui_bin().display().to_string();
    let console = Tmux::start(&format!("{tui} --url {}", herald.url("")));

    // The live table lists the subscriber: its user and its topic.
    console.wait_for("the subscriber in the connections table", |s| {
        s.contains("● live")
            && s.lines()
                .any(|l| l.contains("alice") && l.contains("console-demo"))
    });

    // Compose: p, choose "broadcast" (two to the right), then down to Data (the broadcast
    // form has no target field: Send to, Event, Data as, Data).
    console.keys(&["p"]);
    console.wait_for("the compose form", |s| s.contains("Compose an event"));
    console.keys(&["Right", "Right", "Tab", "Tab", "Tab"]);
    console.type_text(r#"{"from":"the console"}"#);
    console.keys(&["Enter"]);
    let screen = console.wait_for("the id the server returned", |s| s.contains("published"));

    let event = subscriber
        .next_event(WAIT)
        .await
        .expect("the broadcast reaches the subscriber");
    assert_eq!(event.data, r#"{"from":"the console"}"#);
    assert!(
        screen.contains(&event.last_event_id),
        "the console shows the id {} it got back; screen:\n{screen}",
        event.last_event_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_console_trusts_the_server_only_through_its_ca_file() {
    if !tmux_or_skip() {
        return;
    }
    // Kept whole: the CA file lives as long as it does.
    let https = HttpsHerald::start(&[]);
    let (herald, ca) = (&https.herald, &https.ca);
    let url = herald.url("");
    let tui = tui_bin().display().to_string();

    // The test CA is not in the system's store: the console refuses the server and says why.
    let untrusting = Tmux::start(&format!("{tui} --url {url}"));
    untrusting.wait_for("the certificate error in the header", |s| {
        s.contains("✗ disconnected") && s.contains("not trusted") && s.contains("--ca-file")
    });

    // Given the CA, it connects, lists the subscriber and publishes to its topic.
    let mut subscriber = Curl::subscribe("--http1.1", &herald.url("/events?topic=tls-demo"));
    subscriber.live().await;
    let console = Tmux::start(&format!("{tui} --url {url} --ca-file {ca}"));
    console.wait_for("the https subscriber in the connections table", |s| {
        s.contains("● live") && s.lines().any(|l| l.contains("tls-demo"))
    });
    console.keys(&["p"]);
    console.wait_for("the compose form", |s| s.contains("Compose an event"));
    // "topic" is the form's default: Tab to the target, then Event, Data as, Data.
    console.keys(&["Tab"]);
    console.type_text("tls-demo");
    console.keys(&["Tab", "Tab", "Tab"]);
    console.type_text(r#"{"over":"https"}"#);
    console.keys(&["Enter"]);
    let screen = console.wait_for("the id the server returned", |s| s.contains("published"));
    let id = subscriber.line_starting("id: ").await;
    assert_eq!(
        subscriber.line_starting("data: ").await,
        r#"data: {"over":"https"}"#
    );
    let id = id.trim_start_matches("id: ");
    assert!(
        screen.contains(id),
        "the console shows the id {id}; screen:\n{screen}"
    );
}
