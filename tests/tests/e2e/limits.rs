//! Limits: body size, bad requests, the connection cap (answered in-band so EventSource comes
//! back), topics per subscription, and slow senders cut off by the header timeout.

use std::time::{Duration, Instant};

use herald_tests::{End, H2Connection, Herald, Subscriber, WAIT, eventually};
use http::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_publish_body_over_the_limit_is_refused_with_413_json() {
    let herald = Herald::start(&["--dev", "--max-body", "1024"]);
    let mut sub = herald.events().topic("t").open().await;

    let big = json!({"topics": ["t"], "data": "x".repeat(2000)});
    let reply = herald
        .call(Method::POST, "/publish")
        .json(&big)
        .send()
        .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.error().contains("1024"), "{}", reply.text());

    // Just under the limit is fine, and the refused one was never delivered.
    let small = json!({"topics": ["t"], "data": "x".repeat(900)});
    let id = herald.publish_ok(small).await;
    let event = sub.next_event(WAIT).await.expect("the small event");
    assert_eq!(event.last_event_id, id);
}

#[tokio::test]
async fn a_publish_with_bad_json_or_no_target_is_400_json() {
    let herald = Herald::start(&["--dev"]);
    let cases = [
        b"{not json".to_vec(),
        br#"{"data": "no target"}"#.to_vec(),
        br#"{"topics": [], "users": [], "data": 1}"#.to_vec(),
        br#"{"topics": ["t"]}"#.to_vec(),
        br#"{"topics": ["$herald/admin"], "data": 1}"#.to_vec(),
        br#"{"topics": ["t"], "data": 1, "surprise": true}"#.to_vec(),
        br#"["t", [], false, null, 1, null]"#.to_vec(),
        br#""just a string""#.to_vec(),
        br#"{"topics": ["news/*"], "data": 1}"#.to_vec(),
    ];
    for body in cases {
        let reply = herald
            .call(Method::POST, "/publish")
            .raw_body("application/json", body.clone())
            .send()
            .await;
        let shown = String::from_utf8_lossy(&body);
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{shown}: {}",
            reply.text()
        );
        reply.error();
    }
    // The messages speak of the request, not of the server's types.
    let herald_ref = &herald;
    let error = |body: &'static str| async move {
        let reply = herald_ref
            .call(Method::POST, "/publish")
            .raw_body("application/json", body.as_bytes().to_vec())
            .send()
            .await;
        reply.error()
    };
    let not_object = error("[]").await;
    assert!(
        not_object.starts_with("the body must be a JSON object"),
        "{not_object}"
    );
    // A string JSON can write but text cannot hold: the message says where, within data.
    let surrogate = error(r#"{"topics": ["t"], "data": "\ud800"}"#).await;
    assert!(
        surrogate.starts_with("data is not text") && surrogate.contains("within data"),
        "{surrogate}"
    );
    let wildcard = error(r#"{"topics": ["news/*"], "data": 1}"#).await;
    assert!(
        wildcard.contains("patterns such as 'news/*' are for subscribing"),
        "{wildcard}"
    );

    let reply = herald.call(Method::GET, "/publish").send().await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let reply = herald.call(Method::GET, "/nowhere").send().await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    reply.error();
}

#[tokio::test]
async fn head_works_like_get_a_wrong_method_is_405_with_allow_and_an_unknown_path_404() {
    let herald = Herald::start(&["--dev"]);
    // What uptime checks send: the GET's headers and no body, over HTTP/2 too (where a body
    // on a HEAD's answer is a protocol error).
    for http2 in [false, true] {
        for path in ["/", "/healthz", "/admin/stats", "/nowhere"] {
            let call = |method| {
                let call = herald.call(method, path);
                if http2 { call.http2() } else { call }
            };
            let get = call(Method::GET).send().await;
            let head = call(Method::HEAD).send().await;
            let what = format!("HEAD {path} (HTTP/2: {http2})");
            assert_eq!(head.status, get.status, "{what}");
            assert!(head.body.is_empty(), "{what}: {}", head.text());
            assert_eq!(
                head.header("content-type"),
                get.header("content-type"),
                "{what}"
            );
            // The page's length is fixed; the others' figures change between the two calls.
            if path == "/" {
                let length = get.body.len().to_string();
                assert_eq!(
                    head.header("content-length"),
                    Some(length.as_str()),
                    "{what}"
                );
            }
        }
    }
    let reply = herald.call(Method::HEAD, "/metrics").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.is_empty(), "{}", reply.text());
    let cases = [
        (Method::PUT, "/publish", "POST, OPTIONS"),
        (Method::POST, "/healthz", "GET, HEAD, OPTIONS"),
        (
            Method::POST,
            "/admin/connections/1",
            "GET, HEAD, DELETE, OPTIONS",
        ),
        // A stream has no head to give short of subscribing.
        (Method::HEAD, "/events", "GET, OPTIONS"),
    ];
    for (method, path, allow) in cases {
        let reply = herald.call(method.clone(), path).send().await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
        if method != Method::HEAD {
            reply.error();
        }
    }
    for path in [
        "/admin",
        "/admin/nothing",
        "/admin/connections/1/more",
        "/admin/connections/",
        "/healthz/",
    ] {
        let reply = herald.call(Method::GET, path).send().await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        reply.error();
    }
    // Bytes that are not UTF-8 once decoded name no topic (rather than U+FFFD, which %fe
    // would name too), on the direct stream path and through hyper alike.
    for path in ["/events?topic=%ff", "//events?topic=%fe"] {
        let reply = herald.call(Method::GET, path).send().await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        let error = reply.error();
        assert!(error.contains("UTF-8"), "{path}: {}", reply.text());
    }
}

#[tokio::test]
async fn over_the_connection_cap_a_subscriber_gets_200_with_retry_and_the_stream_ends() {
    let herald = Herald::start(&["--dev", "--max-connections", "2"]);
    let first = herald.events().topic("t").open().await;
    let mut second = herald.events().topic("t").open().await;
    let before = herald
        .publish_ok(json!({"topics": ["t"], "data": "before"}))
        .await;

    // Not 503: EventSource would give up for good. 200, a notice with a retry hint, and
    // the end; the notice moves a client that had no id to where the log stands.
    let third = herald.events().topic("t").connect().await;
    let notice = third.assert_refused_for_now("server_full").await;
    assert_eq!(notice.last_event_id, before);
    // Refused with an id of its own, a client keeps it.
    let resuming = herald
        .events()
        .topic("t")
        .last_event_id("1-0")
        .connect()
        .await;
    let notice = resuming.assert_refused_for_now("server_full").await;
    assert_eq!(notice.last_event_id, "");
    let missed = herald
        .publish_ok(json!({"topics": ["t"], "data": "while it waited"}))
        .await;

    // The operator's console still gets in: admin streams are not counted.
    let mut console = herald.admin_events().open().await;
    let snapshot = console
        .next_event(WAIT)
        .await
        .expect("the console's snapshot");
    assert_eq!(snapshot.event_type, "snapshot");
    drop(console);

    // A slot frees up when a subscriber leaves.
    drop(first);
    let freed = eventually(WAIT, || async {
        let connections = herald.connections().await;
        connections.len() == 1 && connections[0]["topics"] == json!(["t"])
    })
    .await;
    assert!(freed, "the server never noticed the first subscriber leave");
    // The refused client comes back as a browser does, with the id it was given, and is
    // replayed what was published while it waited.
    let mut third = herald
        .events()
        .topic("t")
        .last_event_id(&before)
        .open()
        .await;
    third.expect_event_id(&missed).await;
    second.expect_event_id(&before).await;
    second.expect_event_id(&missed).await;
    let id = herald
        .publish_ok(json!({"topics": ["t"], "data": "room again"}))
        .await;
    for sub in [&mut second, &mut third] {
        let event = sub.next_event(WAIT).await.expect("the event");
        assert_eq!(event.last_event_id, id);
    }
}

/// Bytes the kernel holds unsent in TCP sockets whose local port is `port` (Linux:
/// `/proc/net/tcp`), whether a process still has them open or not.
fn unsent_bytes_from(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let tx_queue = fields.get(4)?.split(':').next()?;
            (u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| u64::from_str_radix(tx_queue, 16).ok())
                .flatten()
        })
        .sum()
}

/// Publishes `count` events of 60 KB to `topic` (far more than a 64 KiB queue and the
/// sockets' buffers take), and waits until the server has closed one subscriber as too
/// slow; the events' ids.
async fn overflow_a_slow_subscriber(herald: &Herald, topic: &str, count: usize) -> Vec<String> {
    let big = "x".repeat(60_000);
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(
            herald
                .publish_ok(json!({"topics": [topic], "data": big}))
                .await,
        );
    }
    let stats = || async {
        herald.call(Method::GET, "/admin/stats").send().await.json()["stats"]["counters"].clone()
    };
    let closed = eventually(WAIT, || async {
        stats().await["slow_consumer_closes"] == 1
    })
    .await;
    assert!(closed, "not closed as too slow: {}", stats().await);
    ids
}

/// Asserts that the kernel soon holds nothing unsent on the server's side: the slow client's
/// socket was reset, not closed with its megabytes kept until the client reads, so such
/// clients cannot pile up past --max-connections.
async fn assert_released(herald: &Herald) {
    let port = herald.addr().port();
    let released = eventually(Duration::from_secs(3), || async {
        unsent_bytes_from(port) == 0
    })
    .await;
    assert!(
        released,
        "{} bytes still wait for the slow client",
        unsent_bytes_from(port)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_subscriber_that_stopped_reading_is_let_go_within_seconds() {
    // A queue large enough that the server never closes it as too slow by itself.
    let herald = Herald::start(&["--dev", "--queue-bytes", "16MiB"]);
    let _tcp = herald.stalled_subscriber("slow", Some(4096), false).await;
    let port = herald.addr().port();
    // More than the socket takes (its send buffer grows to 4 MB): a write is left waiting.
    let big = "x".repeat(60_000);
    for _ in 0..120 {
        herald
            .publish_ok(json!({"topics": ["slow"], "data": big}))
            .await;
    }
    let full = eventually(WAIT, || async { unsent_bytes_from(port) > 100_000 }).await;
    assert!(full, "the socket never filled: {}", unsent_bytes_from(port));
    let id = herald.connections().await[0]["id"].clone();
    let kicked = herald
        .call(Method::DELETE, &format!("/admin/connections/{id}"))
        .send()
        .await;
    assert_eq!(kicked.status, StatusCode::OK, "{}", kicked.text());
    // Its notice cannot be written: the socket (and, in a cluster, the user's place) is
    // given up soon after, not after the 30 s a stalled write is otherwise allowed.
    assert_released(&herald).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_cut_off_at_once_and_resumes_without_a_gap() {
    let herald = Herald::start(&["--dev", "--queue-bytes", "65536"]);
    // A client whose small receive window fills at once, and that then reads nothing.
    let mut tcp = herald.stalled_subscriber("slow", Some(4096), false).await;
    let ids = overflow_a_slow_subscriber(&herald, "slow", 140).await;
    assert_released(&herald).await;
    // The operator reads it in the log too.
    herald
        .assert_logs("closing subscribers that do not read fast enough")
        .await;

    // The client gets what had reached it, then the reset, and resumes from there.
    let got = read_until_closed(&mut tcp, WAIT)
        .await
        .expect("the connection ends");
    let body = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&got[..0], |head| &got[head + 4..]);
    let mut parser = herald_core::Parser::new();
    let before = parser.feed(body).len();
    assert!(before < ids.len(), "it got every event before the reset");
    let mut resumed = herald
        .events()
        .topic("slow")
        .last_event_id(parser.last_event_id())
        .open()
        .await;
    let rest = resumed.events_until(ids.len() - before, WAIT).await;
    let rest: Vec<&str> = rest.iter().map(|e| e.last_event_id.as_str()).collect();
    assert_eq!(rest, ids[before..], "{}", resumed.raw_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_served_by_hyper_that_stops_reading_is_reset_too() {
    // As an HTTPS (HTTP/1.1) stream is: hyper serves a connection's later requests.
    let herald = Herald::start(&["--dev", "--queue-bytes", "65536"]);
    let _tcp = herald.stalled_subscriber("slow", Some(4096), true).await;
    overflow_a_slow_subscriber(&herald, "slow", 140).await;
    assert_released(&herald).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_that_stops_reading_is_closed_and_its_connection_reset_if_it_lingers() {
    let herald = Herald::start(&["--dev", "--queue-bytes", "65536"]);
    let conn = H2Connection::open(herald.client()).await;
    let _stalled = herald.events().over(&conn).topic("slow").open().await;
    let mut other = herald.events().over(&conn).topic("fine").open().await;
    // More than the stream's window (2 MB) and its queue.
    overflow_a_slow_subscriber(&herald, "slow", 70).await;
    // hyper never polls the stalled stream's body again (it has no window), so the stream
    // would stay open with what hyper holds for it, outside every count: after a grace
    // period the connection is reset, and its streams reconnect and resume.
    the_other_stream_goes_on_until_the_connection_is_reset(&herald, &mut other).await;
}

/// The stream beside one the server ended that its client does not read: it goes on, until
/// the connection is reset for the other one after the grace period, which is logged.
async fn the_other_stream_goes_on_until_the_connection_is_reset(
    herald: &Herald,
    other: &mut Subscriber,
) {
    herald
        .publish_ok(json!({"topics": ["fine"], "data": "still here"}))
        .await;
    let event = other
        .next_event(WAIT)
        .await
        .expect("the other stream's event");
    assert_eq!(event.data, "still here");
    let end = other.wait_end(Duration::from_secs(15)).await;
    assert!(
        matches!(end, Some(End::Error(_))),
        "the connection was not reset: {end:?}"
    );
    herald
        .assert_logs("is not taken by its client: resetting the connection")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_kicked_while_its_client_is_not_reading_does_not_linger() {
    // A queue large enough that the stream is not closed as too slow.
    let herald = Herald::start(&["--dev", "--queue-bytes", "64MiB"]);
    let conn = H2Connection::open(herald.client()).await;
    let _stalled = herald.events().over(&conn).topic("slow").open().await;
    let mut other = herald.events().over(&conn).topic("fine").open().await;
    // More than the stream's window: the rest waits in the server's queue.
    let big = "x".repeat(60_000);
    for _ in 0..50 {
        herald
            .publish_ok(json!({"topics": ["slow"], "data": big}))
            .await;
    }
    let rows = herald
        .call(Method::GET, "/admin/connections?topic=slow")
        .send()
        .await
        .json();
    let id = rows["connections"][0]["id"]
        .as_u64()
        .expect("the stalled stream");
    let kicked = herald
        .call(Method::DELETE, &format!("/admin/connections/{id}"))
        .send()
        .await;
    assert_eq!(kicked.status, StatusCode::OK, "{}", kicked.text());
    // The kicked stream's client never takes the rest and its notice: hyper would hold the
    // stream, and its megabytes, for ever, outside every count.
    the_other_stream_goes_on_until_the_connection_is_reset(&herald, &mut other).await;
}

#[tokio::test]
async fn a_user_over_the_per_user_cap_is_told_to_come_back_and_gets_room_when_a_stream_ends() {
    let herald = Herald::start(&["--dev", "--max-connections-per-user", "2"]);
    let alice = || herald.events().topic("t").query("user", "alice");
    let first = alice().open().await;
    let mut second = alice().open().await;
    // Not a 429: a browser's EventSource would never come back, and the streams it holds
    // may be ones its network dropped, which the server counts until it notices.
    alice()
        .connect()
        .await
        .assert_refused_for_now("too_many_streams")
        .await;
    // Another user, an anonymous subscriber and the operator's stream are not held back.
    let mut bob = herald.events().topic("t").query("user", "bob").open().await;
    herald.events().topic("t").open().await;
    herald.admin_events().query("user", "alice").open().await;

    drop(first);
    let freed = eventually(WAIT, || async { alice().connect().await.admitted().await }).await;
    assert!(freed, "alice never got room back after closing a stream");
    // Operators see the refusal.
    let metrics = herald.call(Method::GET, "/metrics").send().await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("herald_connections_refused_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    let id = herald
        .publish_ok(json!({"users": ["alice", "bob"], "data": "hi"}))
        .await;
    second.expect_event_id(&id).await;
    bob.expect_event_id(&id).await;
}

#[tokio::test]
async fn a_subscriber_that_keeps_sending_after_its_request_is_cut_off() {
    let herald = Herald::start(&["--dev"]);
    let mut tcp = TcpStream::connect(herald.addr()).await.unwrap();
    tcp.write_all(b"GET /events?topic=t HTTP/1.1\r\nhost: h\r\n\r\n")
        .await
        .unwrap();
    assert!(
        eventually(WAIT, || async { herald.connections().await.len() == 1 }).await,
        "the stream opened"
    );
    // A browser sends nothing more; this client sends a megabyte. Writes fail once the
    // server has reset the connection.
    let junk = vec![b'x'; 4096];
    for _ in 0..256 {
        if tcp.write_all(&junk).await.is_err() {
            break;
        }
    }
    assert!(
        read_until_closed(&mut tcp, WAIT).await.is_some(),
        "still open after a megabyte of junk"
    );
    assert!(
        eventually(WAIT, || async { herald.connections().await.is_empty() }).await,
        "the server still counts it"
    );
}

#[tokio::test]
async fn a_subscription_with_too_many_topics_is_400() {
    let herald = Herald::start(&["--dev", "--max-topics", "2"]);
    let sub = herald
        .events()
        .topic("a")
        .topic("b")
        .topic("c")
        .connect()
        .await;
    assert_eq!(sub.status(), StatusCode::BAD_REQUEST, "{}", sub.raw_text());
    sub.error();
    herald.events().topic("a").topic("b").open().await;
}

/// Reads until the server closes the connection; what it sent, or `None` if it is still open
/// after `timeout`.
async fn read_until_closed(tcp: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Opens a TCP connection and sends `bytes` (maybe none), never finishing the request.
async fn half_open(herald: &Herald, bytes: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(herald.addr()).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    tcp
}

/// Checks that each connection is closed by the server within [`WAIT`], having sent nothing
/// that starts an event stream, and that a subscriber with a complete request is unaffected.
async fn assert_cut_off(herald: &Herald, cases: Vec<(&str, TcpStream)>) {
    let mut patient = herald.events().topic("t").open().await;
    let started = Instant::now();
    for (name, mut tcp) in cases {
        let sent = read_until_closed(&mut tcp, WAIT)
            .await
            .unwrap_or_else(|| panic!("{name}: still open after {:?}", started.elapsed()));
        let text = String::from_utf8_lossy(&sent);
        assert!(!text.contains("text/event-stream"), "{name}: {text}");
    }
    // The timeout applies to the request head only: the stream opened before outlived it.
    assert_eq!(
        herald.connections().await.len(),
        1,
        "only the patient subscriber is connected"
    );
    let id = herald
        .publish_ok(json!({"topics": ["t"], "data": "still here"}))
        .await;
    let event = patient.next_event(WAIT).await.expect("the event");
    assert_eq!(event.last_event_id, id);
}

#[tokio::test]
async fn a_body_declared_over_the_limit_is_refused_unread_and_a_stalled_one_times_out_with_408() {
    let herald = Herald::start(&["--dev", "--max-body", "1024", "--header-timeout", "1s"]);
    let cases = [
        // Refused from its Content-Length alone: the 100 GB never have to be sent.
        (
            &b"POST /publish HTTP/1.1\r\nhost: h\r\ncontent-length: 100000000000\r\n\r\n"[..],
            "413 Payload Too Large",
            "larger than 1024 bytes",
        ),
        (
            b"POST /publish HTTP/1.1\r\nhost: h\r\ncontent-length: 100\r\n\r\n{\"topics\"",
            "408 Request Timeout",
            "did not arrive within 1 s",
        ),
    ];
    for (request, status, error) in cases {
        let mut tcp = half_open(&herald, request).await;
        let answer = read_until_closed(&mut tcp, WAIT)
            .await
            .unwrap_or_else(|| panic!("{status}: no answer, still open"));
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(answer.contains(error), "{answer}");
        assert!(answer.contains("application/json"), "{answer}");
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_cut_off_by_the_header_timeout() {
    let herald = Herald::start(&["--dev", "--header-timeout", "1s"]);
    let started = Instant::now();
    let cases =
        vec![
        ("partial request line", half_open(&herald, b"GET /events?topic=t HT").await),
        (
            "partial headers",
            half_open(
                &herald,
                b"GET /events?topic=t HTTP/1.1\r\nHost: herald\r\nAccept: text/event-stream\r\n",
            )
            .await,
        ),
    ];
    assert_cut_off(&herald, cases).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
}

#[tokio::test]
async fn a_client_that_sends_nothing_or_part_of_the_http2_preface_is_cut_off_too() {
    let herald = Herald::start(&["--dev", "--header-timeout", "1s"]);
    let cases = vec![
        ("nothing at all", half_open(&herald, b"").await),
        (
            "part of the HTTP/2 preface",
            half_open(&herald, b"PRI * HTTP/2.0\r\n").await,
        ),
    ];
    assert_cut_off(&herald, cases).await;
}

#[tokio::test]
async fn an_http2_connection_with_no_request_in_progress_is_closed_after_the_header_timeout() {
    let herald = Herald::start(&["--dev", "--header-timeout", "1s"]);
    // One request, then nothing: as many such connections as the open files allow would
    // otherwise keep everyone else out.
    let idle = H2Connection::open(herald.client()).await;
    let started = Instant::now();
    let health = herald
        .call(Method::GET, "/healthz")
        .over(&idle)
        .send()
        .await;
    assert_eq!(health.status, StatusCode::OK);
    // A connection with a stream open is busy however long nothing is said on it.
    let busy = H2Connection::open(herald.client()).await;
    let mut sub = herald.events().over(&busy).topic("t").open().await;
    assert!(
        idle.closed_within(WAIT).await,
        "the idle connection is still open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let id = herald
        .publish_ok(json!({"topics": ["t"], "data": "still open"}))
        .await;
    let event = sub.next_event(WAIT).await.expect("the stream's event");
    assert_eq!(event.last_event_id, id);
    assert!(!busy.closed_within(Duration::ZERO).await);
}

#[tokio::test]
async fn a_subscriber_with_many_cookies_is_served_on_every_path_and_a_huge_head_gets_431() {
    let herald = Herald::start(&["--dev"]);
    // 20 cookies of 900 bytes: what a browser sends to a host that set many.
    let cookies = (0..20)
        .map(|i| format!("c{i}={}", "v".repeat(900)))
        .collect::<Vec<_>>()
        .join("; ");
    let mut direct = herald
        .events()
        .topic("t")
        .header("cookie", &cookies)
        .open()
        .await;
    let mut http2 = herald
        .events()
        .http2()
        .topic("t")
        .header("cookie", &cookies)
        .open()
        .await;
    herald
        .publish_ok(json!({"topics": ["t"], "data": "with cookies"}))
        .await;
    for sub in [&mut direct, &mut http2] {
        let event = sub.next_event(WAIT).await.expect("an event");
        assert_eq!(event.data, "with cookies");
    }

    // Past hyper's limit, on the direct path: a JSON 431, not a hang.
    let mut stream = TcpStream::connect(herald.addr()).await.unwrap();
    let head = format!(
        "GET /events?topic=t HTTP/1.1\r\nhost: x\r\ncookie: {}\r\n\r\n",
        "v".repeat(500 * 1024)
    );
    // The server may answer and close before it has read all of it.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431") && answer.contains(r#"{"error":"#),
        "{answer}"
    );
}

#[tokio::test]
async fn connections_past_the_open_file_limit_wait_and_leave_the_log_room_to_write() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // 300 open files: the server keeps 150 out of the connections' reach, and takes large
    // events, for each of which sled opens a file.
    let herald = Herald::start_with_open_files(Some(300), &["--dev", "--max-body", "1MiB"]);
    assert!(
        herald
            .stderr()
            .contains("the open-file limit (ulimit -n) allows about 150"),
        "{}",
        herald.stderr()
    );
    // A backend's kept-alive connection, opened before the crowd.
    let mut publisher = tokio::net::TcpStream::connect(herald.addr())
        .await
        .expect("connect");
    let big = json!({"topics": ["t"], "data": "x".repeat(600_000)}).to_string();
    let mut publish = async |body: &str| {
        let request = herald_tests::raw_publish(body);
        publisher.write_all(request.as_bytes()).await.expect("send");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // The answers are small JSON: the head and body arrive together.
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") || !answer.ends_with(b"}") {
            let n = tokio::time::timeout(WAIT, publisher.read(&mut buf))
                .await
                .expect("an answer in time")
                .expect("read");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    };
    assert!(publish(&big).await.starts_with("HTTP/1.1 200"));
    // More than the limit: without the reserve, the log would have no file left.
    let crowd = herald.crowd(320, "t").await;
    // The server has taken all it will (or, without the reserve, all it could).
    let full = eventually(WAIT, || async {
        let stderr = herald.stderr();
        stderr.contains("not accepting: the connections hold the open files")
            || stderr.contains("accept failed")
    })
    .await;
    assert!(full, "{}", herald.stderr());
    for _ in 0..3 {
        let answer = publish(&big).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert!(
        herald
            .stderr()
            .contains("not accepting: the connections hold the open files"),
        "{}",
        herald.stderr()
    );
    drop(crowd);
    let (status, answer) = herald
        .publish(json!({"topics": ["t"], "data": "after"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let health = herald.call(Method::GET, "/healthz").send().await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text());
}
