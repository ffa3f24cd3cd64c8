//! The one test that drives a real browser: the system chromium, through npm's
//! `playwright-core` (no browser download), runs `tests/browser/resume.mjs` against the real
//! `herald` binary. The page at `/` subscribes with the browser's own `EventSource`; the server
//! is SIGKILLed and restarted on the same port and data dir, and the page must reconnect by
//! itself and show every published event exactly once, in order. It runs twice: over plain
//! HTTP/1.1, and over HTTPS, where chromium negotiates HTTP/2 as it does with a production
//! deployment.
//!
//! Needs `node`, `/usr/bin/chromium`, `tests/browser/node_modules/playwright-core` and, for
//! the HTTPS run's certificates, `openssl` (`bash .ci/run` installs them). Without them the
//! test fails when `CI` is set and is skipped otherwise.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole browser run; resume.mjs bounds itself well below this (see `NODE_DEADLINE_MS`).
const TIMEOUT: Duration = Duration::from_secs(150);
const NODE_DEADLINE_MS: u64 = 100_000;
const INSTALL_HINT: &str =
    "Node.js 20+ with npm, `apt-get install -y chromium`, then `npm ci` in tests/browser";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// What is missing to run the browser test, if anything.
fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    let node = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match node {
        Ok(o) if o.status.success() => {
            // playwright-core (see tests/browser/package.json) needs Node.js 20 or newer.
            let version = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            let major = version
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok());
            if major.is_none_or(|m| m < 20) {
                missing.push(format!(
                    "node is {version}, playwright-core needs Node.js 20 or newer"
                ));
            }
        }
        _ => missing.push("node is not on PATH (apt-get install -y nodejs)".to_owned()),
    }
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!(
            "{CHROMIUM} is missing (apt-get install -y chromium)"
        ));
    }
    if !browser_dir()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push(
            "tests/browser/node_modules/playwright-core is missing (cd tests/browser && npm ci)"
                .to_owned(),
        );
    }
    missing
}

/// The `herald` binary of this build: next to the test executable's `deps/` folder. It is
/// (re)built first, since this package does not depend on `herald-server` and cargo would
/// otherwise happily run a stale or missing binary; a fresh build is a no-op.
fn herald_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("the test executable has a folder");
    let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    let bin = profile_dir.join("herald");

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "herald-server", "--bin", "herald"]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    let status = cmd.status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) if bin.exists() => eprintln!(
            "warning: `cargo build -p herald-server --bin herald` failed ({s}); using the existing {}",
            bin.display()
        ),
        Ok(s) => panic!(
            "`cargo build -p herald-server --bin herald` failed ({s}) and {} does not exist",
            bin.display()
        ),
        Err(e) if bin.exists() => eprintln!(
            "warning: cannot run cargo ({e}); using the existing {}",
            bin.display()
        ),
        Err(e) => panic!(
            "cannot run cargo to build herald ({e}) and {} does not exist",
            bin.display()
        ),
    }
    assert!(
        bin.exists(),
        "{} does not exist after building herald",
        bin.display()
    );
    bin
}

/// Drains a pipe into a shared buffer on its own thread.
fn drain(mut pipe: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    })
}

/// Signals the child's whole process group (it was started as a group leader).
fn signal_group(child: &Child, signal: libc::c_int) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a negative pid signals only the group this test created.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().expect("try_wait on node") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_real_browser_reconnects_by_itself_and_receives_what_it_missed_once() {
    if can_run() {
        run_resume(None);
    }
}

#[test]
fn over_https_a_real_browser_streams_over_http2_and_resumes_the_same_way() {
    if can_run() {
        let certs = tempfile::tempdir().expect("a temp dir");
        run_resume(Some(&herald_tests::test_certs(certs.path())));
    }
}

/// True when the browser test's prerequisites are here. Otherwise it says it skipped, or
/// fails when `CI` is set.
fn can_run() -> bool {
    let missing = missing_prerequisites();
    if missing.is_empty() {
        return true;
    }
    let reason = missing.join("; ");
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("the browser test cannot run in CI: {reason}. Install them: {INSTALL_HINT}");
    }
    println!("SKIPPED: {reason} (run bash .ci/run to install)");
    false
}

/// Runs resume.mjs against a herald serving HTTPS with `tls`, or plain HTTP without.
fn run_resume(tls: Option<&herald_tests::TestCerts>) {
    let herald = herald_bin();
    let dir = browser_dir();
    let mut node = Command::new("node");
    node.arg(dir.join("resume.mjs"))
        .current_dir(&dir)
        .env("HERALD_BIN", &herald)
        .env("CHROMIUM", CHROMIUM)
        .env("HERALD_BROWSER_DEADLINE_MS", NODE_DEADLINE_MS.to_string())
        .env_remove("HERALD_BROWSER_TLS_CERT")
        .env_remove("HERALD_BROWSER_TLS_KEY");
    if let Some(certs) = tls {
        node.env("HERALD_BROWSER_TLS_CERT", &certs.cert)
            .env("HERALD_BROWSER_TLS_KEY", &certs.key)
            .env("NODE_EXTRA_CA_CERTS", &certs.ca);
    }
    let mut child = node
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can stop node and the herald it started.
        .process_group(0)
        .spawn()
        .expect("spawn node");
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        drain(child.stdout.take().expect("stdout"), out.clone()),
        drain(child.stderr.take().expect("stderr"), err.clone()),
    ];

    let started = Instant::now();
    let mut status = wait_until(&mut child, started + TIMEOUT);
    let timed_out = status.is_none();
    if timed_out {
        // SIGTERM first: resume.mjs then closes chromium (its own process group) and herald.
        signal_group(&child, libc::SIGTERM);
        status = wait_until(&mut child, Instant::now() + Duration::from_secs(10));
        signal_group(&child, libc::SIGKILL);
        if status.is_none() {
            status = child.wait().ok();
        }
    }
    let reader_deadline = Instant::now() + Duration::from_secs(5);
    for r in readers {
        while !r.is_finished() && Instant::now() < reader_deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if r.is_finished() {
            r.join().expect("pipe reader");
        }
    }

    let stdout = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.lock().unwrap()).into_owned();
    println!(
        "--- node tests/browser/resume.mjs (HERALD_BIN={}) ---",
        herald.display()
    );
    print!("{stdout}");
    if !stderr.is_empty() {
        println!("--- its stderr ---");
        print!("{stderr}");
    }
    println!("--- {:.1} s ---", started.elapsed().as_secs_f64());

    assert!(
        !timed_out,
        "resume.mjs did not finish within {TIMEOUT:?} and was killed"
    );
    let status = status.expect("node's exit status");
    assert!(status.success(), "resume.mjs failed ({status}):\n{stderr}");
    assert!(
        stdout.contains("PASS:"),
        "resume.mjs exited 0 but printed no PASS line"
    );
}
