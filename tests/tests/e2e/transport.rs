//! Transports: HTTP/2 with prior knowledge next to HTTP/1.1 on one port, and HTTPS with ALPN
//! (h2 and http/1.1) checked with curl.

use std::process::Stdio;
use std::time::Duration;

use herald_tests::{H2Connection, Herald, HttpsHerald, WAIT, herald_bin, run_bounded};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

#[tokio::test]
async fn http2_with_prior_knowledge_and_http1_share_a_port_and_both_receive() {
    let herald = Herald::start(&["--dev"]);
    let mut h1 = herald.events().topic("t").open().await;
    assert_eq!(h1.version(), http::Version::HTTP_11);

    // Two streams (two tabs) multiplexed on one HTTP/2 connection.
    let conn = H2Connection::open(herald.client()).await;
    let mut tab1 = herald.events().over(&conn).topic("t").open().await;
    let mut tab2 = herald
        .events()
        .over(&conn)
        .query("user", "alice")
        .open()
        .await;
    assert_eq!(tab1.version(), http::Version::HTTP_2);

    let for_topic = herald
        .publish_ok(json!({"topics": ["t"], "data": "topic"}))
        .await;
    let for_alice = herald
        .publish_ok(json!({"users": ["alice"], "data": "user"}))
        .await;
    for (name, sub, want) in [
        ("h1", &mut h1, &for_topic),
        ("h2 tab 1", &mut tab1, &for_topic),
        ("h2 tab 2", &mut tab2, &for_alice),
    ] {
        let event = sub
            .next_event(WAIT)
            .await
            .unwrap_or_else(|| panic!("{name}: {}", sub.raw_text()));
        assert_eq!(&event.last_event_id, want, "{name}");
    }

    // Operators see how each one came.
    let rows = herald.connections().await;
    assert_eq!(
        transports(&rows),
        [("HTTP/1.1", false), ("HTTP/2", false), ("HTTP/2", false)],
        "{rows:?}"
    );
    // And counted so, in the stats the console reads and in the metrics.
    let stats = herald.call(http::Method::GET, "/admin/stats").send().await;
    assert_eq!(
        stats.json()["stats"]["transports"],
        json!({"http1": 1, "http1_tls": 0, "http2": 2, "http2_tls": 0}),
        "{}",
        stats.text()
    );
    let metrics = herald
        .call(http::Method::GET, "/metrics")
        .send()
        .await
        .text();
    assert!(
        metrics.contains("herald_connections_by_transport{protocol=\"HTTP/2\",tls=\"false\"} 2"),
        "{metrics}"
    );

    // Closing one stream leaves the other on the same connection working.
    drop(tab1);
    let again = herald
        .publish_ok(json!({"users": ["alice"], "data": "again"}))
        .await;
    let event = tab2.next_event(WAIT).await.expect("the second event");
    assert_eq!(event.last_event_id, again);
}

/// Each subscriber's protocol and whether it came over TLS, as `/admin/connections` rows show
/// them, sorted.
fn transports(rows: &[Value]) -> Vec<(&str, bool)> {
    let mut seen: Vec<(&str, bool)> = rows
        .iter()
        .map(|c| {
            let protocol = c["protocol"].as_str().unwrap_or("(none)");
            (protocol, c["tls"].as_bool().unwrap_or(false))
        })
        .collect();
    seen.sort();
    seen
}

/// `curl` following an event stream; its output read line by line with bounded waits.
pub(crate) struct Curl {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl Curl {
    /// Subscribes with `curl -N`; `protocol` is `--http1.1` or `--http2`. Certificates are
    /// not checked (`-k`).
    pub(crate) fn subscribe(protocol: &str, url: &str) -> Self {
        let mut child = Command::new("curl")
            // A bound on a hung test only (the child is killed when dropped): long enough for a
            // test that waits on other programs on a loaded machine.
            .args([protocol, "-sk", "-N", "-i", "--max-time", "120", url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("curl is installed");
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            _child: child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        }
    }

    /// Reads the stream's opening frame (`retry:` and the checkpoint `id:`), which says the
    /// subscription is live; returns the checkpoint id.
    pub(crate) async fn live(&mut self) -> String {
        self.line_starting("retry: ").await;
        let checkpoint = self.line_starting("id: ").await;
        checkpoint.trim_start_matches("id: ").to_owned()
    }

    /// Reads lines until one starts with `prefix`; returns it.
    pub(crate) async fn line_starting(&mut self, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no line {prefix:?} in time; got {:?}", self.seen))
                .expect("read curl's output")
                .unwrap_or_else(|| panic!("curl ended before {prefix:?}; got {:?}", self.seen));
            let line = line.trim_end().to_owned();
            self.seen.push(line.clone());
            if line.starts_with(prefix) {
                return line;
            }
        }
    }
}

/// `GET url` with curl (trusting the test certificate), answered with JSON.
fn curl_json(url: &str) -> Value {
    let out = run_bounded(
        std::process::Command::new("curl")
            .args(["-sk", "--max-time", "10"])
            .arg(url),
        Duration::from_secs(15),
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{url}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn curl_publish(url: &str, body: &Value) -> String {
    let out = run_bounded(
        std::process::Command::new("curl")
            .args([
                "-sk",
                "--max-time",
                "10",
                "-H",
                "content-type: application/json",
            ])
            .arg("--data")
            .arg(body.to_string())
            .arg(url),
        Duration::from_secs(15),
    );
    let answer: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("curl publish: {}", String::from_utf8_lossy(&out.stdout)));
    answer["id"]
        .as_str()
        .unwrap_or_else(|| panic!("publish answered {answer}"))
        .to_owned()
}

#[tokio::test]
async fn https_negotiates_h2_by_alpn_and_streams_events_and_still_speaks_http1() {
    let https = HttpsHerald::start(&[]);
    let herald = &https.herald;

    let events = herald.url("/events?topic=t");
    let mut h2 = Curl::subscribe("--http2", &events);
    let mut h1 = Curl::subscribe("--http1.1", &events);
    // The status line shows what ALPN chose; the opening frame that the subscription is live,
    // with the empty log's checkpoint.
    assert_eq!(h2.line_starting("HTTP/").await, "HTTP/2 200");
    assert_eq!(h1.line_starting("HTTP/").await, "HTTP/1.1 200 OK");
    for curl in [&mut h2, &mut h1] {
        assert_eq!(curl.live().await, "0-0");
    }
    let table = curl_json(&herald.url("/admin/connections"));
    let rows = table["connections"].as_array().expect("connections");
    assert_eq!(
        transports(rows),
        [("HTTP/1.1", true), ("HTTP/2", true)],
        "{table}"
    );
    let stats = curl_json(&herald.url("/admin/stats"));
    assert_eq!(
        stats["stats"]["transports"],
        json!({"http1": 0, "http1_tls": 1, "http2": 0, "http2_tls": 1}),
        "{stats}"
    );

    let id = curl_publish(
        &herald.url("/publish"),
        &json!({"topics": ["t"], "data": "over tls"}),
    );
    for curl in [&mut h2, &mut h1] {
        assert_eq!(curl.line_starting("id: ").await, format!("id: {id}"));
        assert_eq!(curl.line_starting("data: ").await, "data: over tls");
    }

    // `herald publish` speaks HTTPS too, trusting the test CA through --ca-file.
    let mut cli = std::process::Command::new(herald_bin());
    cli.args(["publish", "--url", &herald.url(""), "--ca-file", &https.ca])
        .args(["--topic", "t", "--data", "from the cli"]);
    let out = run_bounded(&mut cli, WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    for curl in [&mut h2, &mut h1] {
        assert_eq!(curl.line_starting("id: ").await, format!("id: {id}"));
        assert_eq!(curl.line_starting("data: ").await, "data: from the cli");
    }
    // Without it the test CA is not trusted, and the error says where it goes.
    let mut untrusting = std::process::Command::new(herald_bin());
    untrusting
        .args(["publish", "--url", &herald.url(""), "--topic", "t"])
        .args(["--data", "x"])
        .env_remove("HERALD_CA_FILE");
    let out = run_bounded(&mut untrusting, WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--ca-file"),
        "{stderr}"
    );
}

#[test]
fn herald_publish_trusts_a_self_signed_server_certificate_given_as_its_ca_file() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (cert, key) = herald_tests::self_signed_cert(dir.path(), "server", "IP:127.0.0.1");
    let (other, _) = herald_tests::self_signed_cert(dir.path(), "other", "IP:127.0.0.1");
    let (misnamed, misnamed_key) =
        herald_tests::self_signed_cert(dir.path(), "misnamed", "DNS:elsewhere.test");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();
    let start = |cert: &std::path::Path, key: &std::path::Path| {
        Herald::start(&["--dev", "--tls-cert", &path(cert), "--tls-key", &path(key)])
    };
    let herald = start(&cert, &key);
    let publish = |herald: &Herald, ca_file: &std::path::Path| {
        let mut cli = std::process::Command::new(herald_bin());
        cli.args([
            "publish",
            "--url",
            &herald.url(""),
            "--ca-file",
            &path(ca_file),
        ])
        .args(["--topic", "t", "--data", "x"])
        .env("RUST_BACKTRACE", "0");
        run_bounded(&mut cli, WAIT)
    };
    // The server's own certificate, as `curl --cacert` takes it.
    let out = publish(&herald, &cert);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another certificate for the same name is no proof of this server.
    let out = publish(&herald, &other);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--ca-file"),
        "{stderr}"
    );
    // The server's own certificate must still name the server the URL names.
    let elsewhere = start(&misnamed, &misnamed_key);
    let out = publish(&elsewhere, &misnamed);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("not valid for name"),
        "{stderr}"
    );

    // An https:// URL for a plain HTTP server says so.
    let plain = Herald::start(&["--dev"]);
    let mut cli = std::process::Command::new(herald_bin());
    let url = plain.url("").replace("http://", "https://");
    cli.args(["publish", "--url", &url, "--topic", "t", "--data", "x"])
        .env("RUST_BACKTRACE", "0");
    let out = run_bounded(&mut cli, WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("http://"),
        "{stderr}"
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_told_to_use_https() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let https = HttpsHerald::start(&[]);
    let mut tcp = tokio::net::TcpStream::connect(https.herald.addr())
        .await
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: h\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("an answer, then the close")
        .expect("no reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains("application/json") && answer.contains("use an https:// URL"),
        "{answer}"
    );
    // TLS clients are served as before.
    let out = run_bounded(
        std::process::Command::new("curl")
            .args(["-sS", "--cacert", &https.ca])
            .arg(https.herald.url("/healthz")),
        WAIT,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"ok\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
