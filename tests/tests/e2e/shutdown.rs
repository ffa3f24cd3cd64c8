//! Graceful shutdown: SIGTERM ends every stream with a `retry:` so clients come back, flushes
//! the log, and exits within the configured bound.

use std::time::{Duration, Instant};

use herald_core::EventId;
use herald_tests::{End, Herald, Subscriber, WAIT};
use serde_json::json;

/// The `retry:` value of the stream's last frame, if that frame is the `herald.closed`
/// notice of a shutdown.
fn final_retry(sub: &Subscriber) -> Option<u64> {
    let raw = sub.raw_text();
    let body = raw.strip_suffix("\n\n")?;
    let last_frame = body.rsplit("\n\n").next()?;
    let (retry, notice) = last_frame.strip_prefix("retry: ")?.split_once('\n')?;
    (notice == "event: herald.closed\ndata: {\"reason\":\"shutdown\"}").then_some(())?;
    retry.parse().ok()
}

#[tokio::test]
async fn on_sigterm_every_open_stream_gets_a_retry_and_ends_and_the_process_exits_in_time() {
    let mut herald = Herald::start(&["--dev", "--shutdown-timeout", "5s"]);
    let mut subs = vec![
        ("topic", herald.events().topic("t").open().await),
        ("user", herald.events().query("user", "alice").open().await),
        ("http2", herald.events().http2().topic("t").open().await),
        ("admin", herald.admin_events().open().await),
    ];
    let first = herald
        .publish_ok(json!({"topics": ["t"], "users": ["alice"], "data": "first"}))
        .await;
    let second = herald
        .publish_ok(json!({"topics": ["t"], "users": ["alice"], "data": "second"}))
        .await;
    for (name, sub) in subs.iter_mut().filter(|(name, _)| *name != "admin") {
        let events = sub.events_until(2, WAIT).await;
        assert_eq!(events.len(), 2, "{name}: {}", sub.raw_text());
        assert_eq!(events[1].last_event_id, second, "{name}");
    }

    herald.terminate();
    let bound = Duration::from_secs(5);
    let started = Instant::now();
    for (name, sub) in &mut subs {
        let end = sub.wait_end(bound + Duration::from_secs(2)).await;
        assert_eq!(end, Some(End::Clean), "{name} stream: {}", sub.raw_text());
        let retry = final_retry(sub).unwrap_or_else(|| {
            panic!(
                "{name} stream does not end with a shutdown notice and retry: {:?}",
                sub.raw_text()
            )
        });
        assert!(
            (3000..6000).contains(&retry),
            "{name}: retry {retry} is the base plus jitter"
        );
    }
    let status = herald
        .wait_exit(bound + Duration::from_secs(2))
        .unwrap_or_else(|| panic!("still running {:?} after SIGTERM", started.elapsed()));
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        herald.stderr()
    );
    assert!(
        started.elapsed() < bound + Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        !herald.stderr().contains("panicked"),
        "a clean shutdown, not one that unwinds:\n{}",
        herald.stderr()
    );

    // The log was flushed: after a restart on the same data the events are there to replay,
    // and new ids continue after them.
    herald.restart();
    let mut resumed = herald
        .events()
        .topic("t")
        .last_event_id(&first)
        .open()
        .await;
    let event = resumed.next_event(WAIT).await.expect("the replayed event");
    assert_eq!(
        (event.last_event_id.as_str(), event.data.as_str()),
        (second.as_str(), "second")
    );
    let third = herald
        .publish_ok(json!({"topics": ["t"], "data": "third"}))
        .await;
    let parse = |s: &str| s.parse::<EventId>().expect("an event id");
    assert!(parse(&third) > parse(&second));
}

/// Waits until the server takes no more connections (its open files are all held): those that
/// come next wait in the kernel's backlog.
async fn until_not_accepting(herald: &Herald) {
    herald
        .assert_logs("not accepting: the connections hold the open files")
        .await;
}

#[tokio::test]
async fn publishes_waiting_in_the_backlog_at_sigterm_are_answered_not_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Under `ulimit -n 300` the server takes 150 connections and leaves the rest in the
    // kernel's backlog: the publishes below wait there, as a burst does at the moment a
    // deploy stops the server.
    let mut herald =
        Herald::start_with_open_files(Some(300), &["--dev", "--shutdown-timeout", "5s"]);
    let crowd = herald.crowd(160, "t").await;
    until_not_accepting(&herald).await;
    let request = herald_tests::raw_publish(&json!({"topics": ["t"], "data": "x"}).to_string());
    let mut waiting = Vec::new();
    for _ in 0..20 {
        let mut socket = tokio::net::TcpStream::connect(herald.addr())
            .await
            .expect("the kernel takes the connection");
        socket.write_all(request.as_bytes()).await.expect("send");
        waiting.push(socket);
    }
    herald.terminate();
    for (i, mut socket) in waiting.into_iter().enumerate() {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(WAIT, socket.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        // Refused, and told so: never a reset or a silent close.
        assert!(
            matches!(read, Ok(Ok(_))) && answer.starts_with("HTTP/1.1 503"),
            "publish {i}: {read:?}: {answer:?}"
        );
    }
    drop(crowd);
    assert!(herald.wait_exit(Duration::from_secs(7)).is_some());
}

#[tokio::test]
async fn https_publishes_waiting_in_the_backlog_at_sigterm_are_answered_not_reset() {
    // As above, over HTTPS: the request follows a handshake the server had not begun.
    let mut https = herald_tests::HttpsHerald::start_with_open_files(
        Some(300),
        &["--shutdown-timeout", "5s", "--header-timeout", "60s"],
    );
    let herald = &mut https.herald;
    // Connections that have not begun their handshake hold the server's sockets.
    let mut crowd = Vec::new();
    for _ in 0..160 {
        crowd.push(tokio::net::TcpStream::connect(herald.addr()).await.unwrap());
    }
    until_not_accepting(herald).await;
    let body = json!({"topics": ["t"], "data": "x"}).to_string();
    let url = herald.url("/publish");
    let publishers: Vec<std::process::Child> = (0..10)
        .map(|_| {
            std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
                .args([
                    &https.ca,
                    "-H",
                    "content-type: application/json",
                    "-d",
                    &body,
                    &url,
                ])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("curl")
        })
        .collect();
    // Connected, their handshakes waiting in the backlog.
    tokio::time::sleep(Duration::from_millis(500)).await;
    herald.terminate();
    for (i, curl) in publishers.into_iter().enumerate() {
        let out = tokio::time::timeout(
            WAIT,
            tokio::task::spawn_blocking(move || curl.wait_with_output()),
        )
        .await
        .expect("curl ends")
        .expect("the wait")
        .expect("curl's output");
        let status = String::from_utf8_lossy(&out.stdout);
        // Refused (503) or taken (200), and told: never a failed handshake or a reset.
        assert!(
            out.status.success() && (status == "503" || status == "200"),
            "publish {i}: curl {:?}, status {status:?}",
            out.status
        );
    }
    drop(crowd);
    assert!(herald.wait_exit(Duration::from_secs(7)).is_some());
}

#[tokio::test]
async fn a_second_sigterm_exits_without_waiting_for_the_connections() {
    use tokio::io::AsyncWriteExt;
    let mut herald = Herald::start(&[
        "--dev",
        "--header-timeout",
        "60s",
        "--shutdown-timeout",
        "60s",
    ]);
    // A publish whose body never finishes holds its connection, and the drain waits for it.
    let mut stalled = tokio::net::TcpStream::connect(herald.addr()).await.unwrap();
    stalled
        .write_all(b"POST /publish HTTP/1.1\r\nhost: h\r\ncontent-length: 100\r\n\r\n{\"to")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    herald.terminate();
    assert!(
        herald.wait_exit(Duration::from_secs(1)).is_none(),
        "the first SIGTERM waits for the connection"
    );
    let started = Instant::now();
    herald.terminate();
    let status = herald.wait_exit(WAIT).expect("the second SIGTERM ends it");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(
        herald.stderr().contains("second signal"),
        "{}",
        herald.stderr()
    );
}

#[tokio::test]
async fn connections_that_send_nothing_do_not_hold_the_shutdown_until_their_timeout() {
    // As a browser's preconnected sockets do: open, then nothing (no request, no handshake).
    let plain = Herald::start(&[
        "--dev",
        "--header-timeout",
        "60s",
        "--shutdown-timeout",
        "60s",
    ]);
    let https =
        herald_tests::HttpsHerald::start(&["--header-timeout", "60s", "--shutdown-timeout", "60s"]);
    for mut herald in [plain, https.herald] {
        let silent = tokio::net::TcpStream::connect(herald.addr()).await.unwrap();
        // Accepted and waiting for its first bytes before the signal.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        herald.terminate();
        let status = herald
            .wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{}: still running after 20 s", herald.url("")));
        assert!(status.success(), "{status:?}: {}", herald.stderr());
        // Seconds at most, where the connection's 60 s timeout held it before.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}: {:?}",
            herald.url(""),
            started.elapsed()
        );
        drop(silent);
    }
}

#[tokio::test]
async fn a_publish_sent_as_the_server_starts_shutting_down_is_answered_not_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = herald_tests::raw_publish(&json!({"topics": ["t"], "data": "x"}).to_string());
    // Connections accepted before the signal whose requests arrive around it, in both orders.
    for delay_ms in [0, 20, 100] {
        let mut herald = Herald::start(&["--dev", "--shutdown-timeout", "5s"]);
        let mut sockets = Vec::new();
        for _ in 0..5 {
            sockets.push(tokio::net::TcpStream::connect(herald.addr()).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        herald.terminate();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        for socket in &mut sockets {
            socket.write_all(request.as_bytes()).await.expect("send");
        }
        for (i, mut socket) in sockets.into_iter().enumerate() {
            let mut answer = Vec::new();
            let read = tokio::time::timeout(WAIT, socket.read_to_end(&mut answer)).await;
            let answer = String::from_utf8_lossy(&answer);
            // Taken before the shutdown (200) or refused (503), and told: never a reset.
            assert!(
                matches!(read, Ok(Ok(_)))
                    && (answer.starts_with("HTTP/1.1 503") || answer.starts_with("HTTP/1.1 200")),
                "{delay_ms} ms, publish {i}: {read:?}: {answer:?}"
            );
        }
        assert!(herald.wait_exit(Duration::from_secs(7)).is_some());
    }
}
