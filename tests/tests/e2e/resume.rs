//! Resuming with `Last-Event-ID`: across a crash, from the query string, and the reset event
//! when the resume point cannot be honoured.

use std::time::Duration;

use herald_core::{EventId, ParsedEvent};
use herald_tests::{Herald, WAIT, eventually};
use http::{Method, StatusCode};
use serde_json::{Value, json};

fn id(s: &str) -> EventId {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is not an event id: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_and_restart_a_resuming_client_gets_every_acknowledged_event_once_in_order()
{
    let mut herald = Herald::start(&["--dev"]);
    let client = herald.client();
    let mut sub = herald.events().topic("t").open().await;

    // A publisher keeps going until the server dies under it; it records what was acknowledged.
    let publisher = tokio::spawn(async move {
        let mut acked: Vec<(u64, String)> = Vec::new();
        for n in 0u64.. {
            let body = json!({"topics": ["t"], "data": {"n": n}});
            let Ok(reply) = client
                .call(Method::POST, "/publish")
                .json(&body)
                .try_send()
                .await
            else {
                break;
            };
            if reply.status != StatusCode::OK {
                break;
            }
            let id = reply.json()["id"].as_str().expect("an id").to_owned();
            acked.push((n, id));
        }
        acked
    });

    // Read part of the stream while the publisher runs, then crash the server mid-publish.
    let before = sub.events_until(20, WAIT).await;
    assert_eq!(before.len(), 20, "{}", sub.raw_text());
    herald.kill();
    let acked = tokio::time::timeout(WAIT, publisher)
        .await
        .expect("the publisher stops when the server is gone")
        .expect("the publisher task");
    // The publisher is sequential: at most the one event in flight was read unacknowledged.
    assert!(
        acked.len() + 1 >= before.len(),
        "{} acknowledged",
        acked.len()
    );
    let end = sub.wait_end(WAIT).await;
    assert!(end.is_some(), "the old stream ends when the server dies");
    let resume_from = before.last().expect("events").last_event_id.clone();
    assert_eq!(sub.last_event_id(), resume_from);

    herald.restart();
    let mut resumed = herald
        .events()
        .topic("t")
        .last_event_id(&resume_from)
        .open()
        .await;
    let last_before_crash = id(&acked.last().expect("acked").1);
    let after_restart = herald
        .publish_ok(json!({"topics": ["t"], "data": {"n": "after"}}))
        .await;
    assert!(
        id(&after_restart) > last_before_crash,
        "ids after the restart ({after_restart}) are greater than before it ({last_before_crash})"
    );

    // Read until the event published after the restart.
    let mut after: Vec<ParsedEvent> = Vec::new();
    while after
        .last()
        .is_none_or(|e| e.last_event_id != after_restart)
    {
        let event = resumed.next_event(WAIT).await.unwrap_or_else(|| {
            panic!(
                "stalled after {} events: {}",
                after.len(),
                resumed.raw_text()
            )
        });
        after.push(event);
    }

    let received: Vec<&ParsedEvent> = before.iter().chain(&after).collect();
    // Exactly once, in order: ids strictly increase.
    for pair in received.windows(2) {
        assert!(
            id(&pair[0].last_event_id) < id(&pair[1].last_event_id),
            "out of order or duplicated: {} then {}",
            pair[0].last_event_id,
            pair[1].last_event_id
        );
    }
    // Every acknowledged event is there with its own data. (An event that was committed
    // but whose acknowledgement the crash swallowed may also be there; that is allowed.)
    for (n, acked_id) in &acked {
        let event = received
            .iter()
            .find(|e| &e.last_event_id == acked_id)
            .unwrap_or_else(|| panic!("acknowledged event {n} ({acked_id}) was never received"));
        assert_eq!(event.data, json!({"n": n}).to_string());
    }
}

#[tokio::test]
async fn the_last_event_id_query_parameter_resumes_a_first_connection() {
    let herald = Herald::start(&["--dev"]);
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(
            herald
                .publish_ok(json!({"topics": ["t"], "data": n.to_string()}))
                .await,
        );
    }
    // Another topic in between must not be replayed.
    herald
        .publish_ok(json!({"topics": ["other"], "data": "no"}))
        .await;

    let mut sub = herald
        .events()
        .topic("t")
        .query("lastEventId", &ids[1])
        .open()
        .await;
    let live = herald
        .publish_ok(json!({"topics": ["t"], "data": "live"}))
        .await;
    let events = sub.events_until(3, WAIT).await;
    let got: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.last_event_id.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (ids[2].as_str(), "2"),
            (ids[3].as_str(), "3"),
            (live.as_str(), "live")
        ]
    );
}

#[tokio::test]
async fn a_malformed_last_event_id_is_refused_with_400_json() {
    let herald = Herald::start(&["--dev"]);
    for bad in [
        "yesterday",
        "12-",
        "-1-2",
        "1-2-3",
        "99999999999999999999999-0",
    ] {
        let sub = herald
            .events()
            .topic("t")
            .last_event_id(bad)
            .connect()
            .await;
        assert_eq!(
            sub.status(),
            StatusCode::BAD_REQUEST,
            "{bad:?}: {}",
            sub.raw_text()
        );
        assert_eq!(sub.header("content-type"), Some("application/json"));
        let error = sub.error();
        assert!(error.contains("Last-Event-ID"), "{bad:?}: {error}");
    }
    // Not ASCII (full-width digits): the error shows what was sent.
    let sub = herald
        .events()
        .topic("t")
        .last_event_id("\u{ff11}-0")
        .connect()
        .await;
    assert_eq!(sub.status(), StatusCode::BAD_REQUEST, "{}", sub.raw_text());
    assert!(sub.error().contains("\"\u{ff11}-0\""), "{}", sub.error());
    let sub = herald
        .events()
        .topic("t")
        .query("lastEventId", "nope")
        .connect()
        .await;
    assert_eq!(sub.status(), StatusCode::BAD_REQUEST, "{}", sub.raw_text());
}

#[tokio::test]
async fn a_last_event_id_from_the_future_gets_a_reset_and_then_live_events() {
    let herald = Herald::start(&["--dev"]);
    let latest = herald
        .publish_ok(json!({"topics": ["t"], "data": "old"}))
        .await;
    let future = EventId::new(id(&latest).ms + 86_400_000, 0).to_string();

    let mut sub = herald
        .events()
        .topic("t")
        .last_event_id(&future)
        .open()
        .await;
    let reset = sub.next_event(WAIT).await.expect("a reset event");
    assert_eq!(reset.event_type, "herald.reset", "{}", sub.raw_text());
    let data: Value = serde_json::from_str(&reset.data).expect("reset data is JSON");
    assert_eq!(data["reason"], "unknown_last_event_id");
    assert_eq!(data["last_event_id"], future.as_str());
    // The client's cursor moves back to where this server's log stands.
    assert_eq!(reset.last_event_id, latest);

    let live = herald
        .publish_ok(json!({"topics": ["t"], "data": "new"}))
        .await;
    let event = sub.next_event(WAIT).await.expect("the live event");
    assert_eq!(
        (event.last_event_id.as_str(), event.data.as_str()),
        (live.as_str(), "new")
    );
}

#[tokio::test]
async fn a_last_event_id_older_than_the_retained_history_gets_a_reset_then_what_is_left() {
    let herald = Herald::start(&["--dev", "--retain-events", "5", "--trim-interval", "200ms"]);
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(
            herald
                .publish_ok(json!({"topics": ["t"], "data": n.to_string()}))
                .await,
        );
    }
    // Retention runs in the background (every 200 ms here); wait until the server reports a floor.
    let trimmed = eventually(Duration::from_secs(25), || async {
        let stats = herald.call(Method::GET, "/admin/stats").send().await.json();
        !stats["stats"]["log"]["floor"].is_null()
    })
    .await;
    assert!(
        trimmed,
        "retention never trimmed the log:\n{}",
        herald.stderr()
    );
    let stats = herald.call(Method::GET, "/admin/stats").send().await.json();
    assert_eq!(stats["stats"]["log"]["events"], 5, "{stats}");
    assert_eq!(stats["stats"]["log"]["oldest"], ids[7].as_str(), "{stats}");

    let mut sub = herald
        .events()
        .topic("t")
        .last_event_id(&ids[1])
        .open()
        .await;
    let reset = sub.next_event(WAIT).await.expect("a reset event");
    assert_eq!(reset.event_type, "herald.reset", "{}", sub.raw_text());
    let data: Value = serde_json::from_str(&reset.data).expect("reset data is JSON");
    assert_eq!(data["reason"], "history_truncated", "{data}");
    assert_eq!(data["last_event_id"], ids[1].as_str());
    assert_eq!(data["oldest_id"], ids[7].as_str());

    // Then everything still held, in order, and live events after it.
    let live = herald
        .publish_ok(json!({"topics": ["t"], "data": "live"}))
        .await;
    let events = sub.events_until(6, WAIT).await;
    let got: Vec<&str> = events.iter().map(|e| e.last_event_id.as_str()).collect();
    let mut want: Vec<&str> = ids[7..].iter().map(String::as_str).collect();
    want.push(&live);
    assert_eq!(got, want);

    // A resume point inside the retained window replays without a reset.
    let mut inside = herald
        .events()
        .topic("t")
        .last_event_id(&ids[9])
        .open()
        .await;
    let events = inside.events_until(3, WAIT).await;
    let got: Vec<&str> = events.iter().map(|e| e.last_event_id.as_str()).collect();
    assert_eq!(got, [ids[10].as_str(), ids[11].as_str(), live.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_retried_after_a_kill_9_and_restart_keeps_its_id_and_is_not_delivered_twice() {
    let mut herald = Herald::start(&["--dev"]);
    let marker = herald
        .publish_ok(json!({"topics": ["t"], "data": "marker"}))
        .await;
    let keyed = json!({"topics": ["t"], "data": "once", "idempotency_key": "order-17"});
    let first = herald.publish_ok(keyed.clone()).await;

    // The publisher never saw its answer (say); it retries after the server came back.
    herald.kill();
    herald.restart();
    let retried = herald.publish_ok(keyed).await;
    assert_eq!(retried, first, "the retry is answered with the original id");
    let after = herald
        .publish_ok(json!({"topics": ["t"], "data": "after"}))
        .await;

    let mut sub = herald
        .events()
        .topic("t")
        .last_event_id(&marker)
        .open()
        .await;
    let got = sub.events_until(2, WAIT).await;
    let got: Vec<(&str, &str)> = got
        .iter()
        .map(|e| (e.last_event_id.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(
        got,
        [(first.as_str(), "once"), (after.as_str(), "after")],
        "{}",
        sub.raw_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_retried_after_retention_removed_its_event_and_a_restart_is_not_published_twice()
{
    let mut herald = Herald::start(&["--dev", "--retain-events", "2", "--trim-interval", "100ms"]);
    let keyed = json!({"topics": ["t"], "data": "once", "idempotency_key": "order-18"});
    let first = herald.publish_ok(keyed.clone()).await;
    for n in 0..3 {
        herald.publish_ok(json!({"topics": ["t"], "data": n})).await;
    }
    let log = |herald: &Herald| {
        let call = herald.call(Method::GET, "/admin/stats");
        async move { call.send().await.json()["stats"]["log"].clone() }
    };
    let trimmed = eventually(WAIT, || async { log(&herald).await["events"] == 2 }).await;
    assert!(trimmed, "retention never trimmed: {}", log(&herald).await);

    // A clean stop, so the trim is on disk too (after a kill -9 sled may bring back what it
    // had not flushed, and the key with it).
    herald.terminate();
    assert!(herald.wait_exit(WAIT).is_some(), "the server did not stop");
    herald.restart();
    let retried = herald.publish_ok(keyed).await;
    assert_eq!(retried, first, "the retry is answered with the original id");
    let stats = herald.call(Method::GET, "/admin/stats").send().await.json();
    assert_eq!(
        stats["stats"]["counters"]["published"], 0,
        "nothing was published again: {stats}"
    );
}

#[tokio::test]
async fn a_client_that_got_no_event_before_a_crash_resumes_from_its_checkpoint() {
    let mut herald = Herald::start(&["--dev"]);
    // A quiet topic: nothing reaches these subscribers before the crash. Each stream still
    // starts with an id-only block, so each has an id to come back with.
    let on_empty_log = herald.events().topic("quiet").open().await;
    assert_eq!(on_empty_log.last_event_id(), EventId::MIN.to_string());
    let elsewhere = herald
        .publish_ok(json!({"topics": ["busy"], "data": "not for the quiet ones"}))
        .await;
    let later = herald.events().topic("quiet").open().await;
    assert_eq!(later.last_event_id(), elsewhere);

    herald.kill();
    herald.restart();
    let missed = herald
        .publish_ok(json!({"topics": ["quiet"], "data": "published while they were away"}))
        .await;
    for sub in [on_empty_log, later] {
        let from = sub.last_event_id().to_owned();
        let mut back = herald
            .events()
            .topic("quiet")
            .last_event_id(&from)
            .open()
            .await;
        let event = back.next_event(WAIT).await.unwrap_or_else(|| {
            panic!("resuming from {from} replayed nothing: {}", back.raw_text())
        });
        assert_eq!(event.event_type, "message", "{}", back.raw_text());
        assert_eq!(event.last_event_id, missed);
        assert_eq!(event.data, "published while they were away");
        assert!(back.next_event(Duration::from_millis(300)).await.is_none());
    }
}

#[tokio::test]
async fn a_quiet_subscriber_keeps_up_with_retention_through_its_keep_alives() {
    let herald = Herald::start(&[
        "--dev",
        "--keepalive",
        "1s",
        "--retain-events",
        "2",
        "--trim-interval",
        "1s",
    ]);
    let mut quiet = herald.events().topic("quiet").open().await;
    let started = quiet.last_event_id().to_owned();
    let mut busy = Vec::new();
    for n in 0..5 {
        busy.push(
            herald
                .publish_ok(json!({"topics": ["busy"], "data": n}))
                .await,
        );
    }
    let newest = busy.last().expect("published").clone();
    // Retention drops what the quiet stream started before; its keep-alives move it along.
    let trimmed = eventually(WAIT, || async {
        let stats = herald.call(Method::GET, "/admin/stats").send().await.json();
        stats["stats"]["log"]["floor"]
            .as_str()
            .is_some_and(|f| id(f) >= id(&busy[2]))
    })
    .await;
    assert!(trimmed, "retention never trimmed the log");
    let deadline = tokio::time::Instant::now() + WAIT;
    while quiet.last_event_id() != newest && tokio::time::Instant::now() < deadline {
        assert!(quiet.next_event(Duration::from_millis(200)).await.is_none());
    }
    assert_eq!(quiet.last_event_id(), newest, "{}", quiet.raw_text());
    assert!(quiet.comments() >= 1, "{}", quiet.raw_text());
    drop(quiet);

    let missed = herald
        .publish_ok(json!({"topics": ["quiet"], "data": "while away"}))
        .await;
    let mut back = herald
        .events()
        .topic("quiet")
        .last_event_id(&newest)
        .open()
        .await;
    let event = back.next_event(WAIT).await.expect("the missed event");
    assert_eq!(event.event_type, "message", "{}", back.raw_text());
    assert_eq!(event.last_event_id, missed);
    // From where the stream started, the client would have been told it missed events.
    let mut stale = herald
        .events()
        .topic("quiet")
        .last_event_id(&started)
        .open()
        .await;
    let first = stale.next_event(WAIT).await.expect("a notice");
    assert_eq!(first.event_type, "herald.reset", "{}", stale.raw_text());
}
