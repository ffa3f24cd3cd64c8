//! The operator's view: the connections list, disconnecting one, the admin event stream,
//! health and metrics.

use std::time::Duration;

use herald_tests::{End, Herald, WAIT, eventually, mint_token};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

const SECRET: &str = "admin-secret";

fn row_topics(row: &Value) -> Vec<String> {
    let mut topics: Vec<String> = row["topics"]
        .as_array()
        .unwrap_or_else(|| panic!("no topics in {row}"))
        .iter()
        .map(|t| t.as_str().expect("a topic").to_owned())
        .collect();
    topics.sort();
    topics
}

#[tokio::test]
async fn the_connections_list_shows_a_subscriber_with_its_user_and_topics() {
    let herald = Herald::start(&["--jwt-secret", SECRET]);
    let admin = mint_token(SECRET, &["--sub", "ops", "--admin"]);
    let alice = crate::alice_token(SECRET);
    let _sub = herald
        .events()
        .token(&alice)
        .topic("orders")
        .topic("news/*")
        .open()
        .await;

    let rows = herald.client().connections_as(Some(&admin)).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["user"], "alice", "{row}");
    assert_eq!(row_topics(row), ["news/*", "orders"], "{row}");
    assert_eq!(row["admin"], false, "{row}");

    let id = row["id"].as_u64().expect("a numeric id");
    let one = herald
        .call(Method::GET, &format!("/admin/connections/{id}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text());
    assert_eq!(one.json()["user"], "alice");

    let stats = herald
        .call(Method::GET, "/admin/stats")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text());
    assert_eq!(
        stats.json()["stats"]["counters"]["connections"],
        1,
        "{}",
        stats.text()
    );

    // Outside cluster mode the answering server is the deployment's only node.
    let nodes = herald
        .call(Method::GET, "/admin/nodes")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(nodes.status, StatusCode::OK, "{}", nodes.text());
    let nodes = nodes.json();
    assert_eq!(nodes["cluster"], false, "{nodes}");
    let port = format!(":{}", herald.addr().port());
    assert!(
        nodes["node"].as_str().is_some_and(|n| n.ends_with(&port)),
        "{nodes}"
    );
    assert_eq!(nodes["nodes"][0]["name"], nodes["node"], "{nodes}");
    assert_eq!(nodes["nodes"][0]["counters"]["connections"], 1, "{nodes}");
    let anonymous = herald.call(Method::GET, "/admin/nodes").send().await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        anonymous.text()
    );
}

#[tokio::test]
async fn the_connections_list_filters_by_user_and_topic_and_pages() {
    let herald = Herald::start(&["--dev"]);
    let mut subs = Vec::new();
    for (user, topic) in [
        ("alice", "orders/1"),
        ("bob", "orders/*"),
        ("alice", "news"),
        ("carol", "orders/1"),
    ] {
        let sub = herald
            .events()
            .query("user", user)
            .topic(topic)
            .open()
            .await;
        subs.push(sub);
    }
    let all = herald.connections().await;
    let ids: Vec<u64> = all
        .iter()
        .map(|r| r["id"].as_u64().expect("an id"))
        .collect();
    assert_eq!(ids.len(), 4, "{all:?}");
    let list = |query: &'static str| {
        let herald = &herald;
        async move {
            let reply = herald
                .call(Method::GET, &format!("/admin/connections?{query}"))
                .send()
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text());
            let answer = reply.json();
            let ids: Vec<u64> = answer["connections"]
                .as_array()
                .unwrap_or_else(|| panic!("no rows in {answer}"))
                .iter()
                .map(|r| r["id"].as_u64().expect("an id"))
                .collect();
            (ids, answer["next_after"].as_u64())
        }
    };
    assert_eq!(list("user=alice").await, (vec![ids[0], ids[2]], None));
    // A topic lists whom an event to it reaches, through patterns too.
    assert_eq!(
        list("topic=orders/1").await,
        (vec![ids[0], ids[1], ids[3]], None)
    );
    assert_eq!(list("topic=orders/2").await, (vec![ids[1]], None));
    assert_eq!(
        list("user=alice&topic=orders%2F1").await,
        (vec![ids[0]], None)
    );
    assert_eq!(list("user=dave").await, (vec![], None));
    // Pages: `next_after` is where the next one starts, and null on the last.
    let (first, next) = list("limit=3").await;
    assert_eq!((first.as_slice(), next), (&ids[..3], Some(ids[2])));
    let rest = format!("limit=3&after={}", ids[2]);
    let reply = herald
        .call(Method::GET, &format!("/admin/connections?{rest}"))
        .send()
        .await;
    assert_eq!(
        reply.json()["connections"][0]["id"],
        ids[3],
        "{}",
        reply.text()
    );
    assert_eq!(reply.json()["next_after"], Value::Null, "{}", reply.text());
    assert_eq!(list("limit=4").await, (ids.clone(), None));
    // Bad filters are refused, never read as "no filter".
    for (query, says) in [
        ("users=alice", "unknown query parameter \"users\""),
        ("limit=0", "limit"),
        ("limit=ten", "limit"),
        ("after=x", "not a connection id"),
        ("topic=orders/*", "is a pattern"),
        ("topic=", "topic"),
        ("user=alice&user=bob", "more than once"),
    ] {
        let reply = herald
            .call(Method::GET, &format!("/admin/connections?{query}"))
            .send()
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            reply.text()
        );
        let error = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.contains(says), "{query}: {error}");
    }
}

#[tokio::test]
async fn deleting_a_connection_ends_its_stream_and_only_that_one() {
    let herald = Herald::start(&["--dev"]);
    let mut kicked = herald
        .events()
        .query("user", "kicked")
        .topic("t")
        .open()
        .await;
    let mut kept = herald
        .events()
        .query("user", "kept")
        .topic("t")
        .open()
        .await;
    let rows = herald.connections().await;
    let id = rows
        .iter()
        .find(|r| r["user"] == "kicked")
        .and_then(|r| r["id"].as_u64())
        .unwrap_or_else(|| panic!("no row for the subscriber: {rows:?}"));

    let reply = herald
        .call(Method::DELETE, &format!("/admin/connections/{id}"))
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        kicked.wait_end(WAIT).await,
        Some(End::Clean),
        "{}",
        kicked.raw_text()
    );
    // The page is told why its stream ended.
    assert!(
        kicked
            .raw_text()
            .ends_with("event: herald.closed\ndata: {\"reason\":\"kicked\"}\n\n"),
        "{}",
        kicked.raw_text()
    );

    let again = herald
        .call(Method::DELETE, &format!("/admin/connections/{id}"))
        .send()
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.text());
    let bad = herald
        .call(Method::DELETE, "/admin/connections/abc")
        .send()
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text());

    let id = herald
        .publish_ok(json!({"topics": ["t"], "data": "x"}))
        .await;
    assert_eq!(
        kept.next_event(WAIT).await.expect("an event").last_event_id,
        id
    );
    let gone = eventually(WAIT, || async { herald.connections().await.len() == 1 }).await;
    assert!(gone, "the kicked connection is still listed");
}

#[tokio::test]
async fn the_admin_stream_starts_with_a_snapshot_and_shows_connects_publishes_and_leaves() {
    let herald = Herald::start(&["--dev"]);
    let mut admin = herald.admin_events().open().await;
    let snapshot = admin.next_event(WAIT).await.expect("a first event");
    assert_eq!(snapshot.event_type, "snapshot", "{}", admin.raw_text());
    let snap: Value = serde_json::from_str(&snapshot.data).expect("snapshot JSON");
    assert!(
        snap["connections"].is_array() && snap["stats"].is_object(),
        "{snap}"
    );

    let sub = herald
        .events()
        .query("user", "alice")
        .topic("orders")
        .open()
        .await;
    // Skip the `connected` of the admin stream itself.
    let info = loop {
        let connected = admin
            .next_event_of_type("connected", WAIT)
            .await
            .unwrap_or_else(|| panic!("no connected event for alice: {}", admin.raw_text()));
        let info: Value = serde_json::from_str(&connected.data).expect("JSON");
        if info["admin"] == false {
            break info;
        }
    };
    assert_eq!(info["user"], "alice", "{info}");
    assert_eq!(row_topics(&info), ["orders"]);

    let id = herald
        .publish_ok(json!({"topics": ["orders"], "event": "order.created", "data": {"n": 1}}))
        .await;
    let published = admin
        .next_event_of_type("published", WAIT)
        .await
        .expect("a published event");
    let info: Value = serde_json::from_str(&published.data).expect("JSON");
    assert_eq!(info["id"], id.as_str(), "{info}");
    assert_eq!(info["topics"], json!(["orders"]), "{info}");
    assert_eq!(info["event_type"], "order.created", "{info}");
    assert_eq!(info["recipients"], 1, "{info}");

    drop(sub);
    let left = admin
        .next_event_of_type("disconnected", WAIT)
        .await
        .expect("a disconnected event");
    let info: Value = serde_json::from_str(&left.data).expect("JSON");
    assert_eq!(info["reason"], "client_gone", "{info}");

    // A stats sample every second.
    let stats = admin
        .next_event_of_type("stats", WAIT)
        .await
        .expect("a stats sample");
    let stats: Value = serde_json::from_str(&stats.data).expect("JSON");
    assert_eq!(stats["counters"]["published"], 1, "{stats}");
}

#[tokio::test]
async fn health_and_prometheus_metrics_are_served() {
    let herald = Herald::start(&["--dev"]);
    let health = herald.call(Method::GET, "/healthz").send().await;
    assert_eq!(health.status, StatusCode::OK);
    // The engine answered: its uptime, and no event committed yet.
    let body = health.json();
    assert_eq!(body["status"], "ok", "{body}");
    assert!(body["uptime_ms"].is_u64(), "{body}");
    assert_eq!(body["committed_id"], Value::Null, "{body}");

    let _sub = herald.events().topic("t").open().await;
    // A console watching: not a subscriber.
    let _console = herald.admin_events().open().await;
    let id = herald
        .publish_ok(json!({"topics": ["t"], "data": "x"}))
        .await;
    let health = herald.call(Method::GET, "/healthz").send().await.json();
    assert_eq!(health["committed_id"], id, "{health}");
    let metrics = herald.call(Method::GET, "/metrics").send().await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        metrics.headers
    );
    let text = metrics.text();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .to_owned()
    };
    assert_eq!(value("herald_connections"), "1");
    assert_eq!(value("herald_connections_total"), "1");
    assert_eq!(value("herald_admin_streams"), "1");
    assert_eq!(value("herald_published_total"), "1");
    assert!(text.contains("# TYPE herald_connections gauge"), "{text}");

    let index = herald.call(Method::GET, "/").send().await;
    assert_eq!(index.status, StatusCode::OK);
    assert!(
        index.text().contains("EventSource"),
        "the page subscribes with EventSource"
    );
}

#[tokio::test]
async fn the_server_measures_how_long_publishes_and_deliveries_take() {
    // A queue large enough that the reader below is kept waiting, not cut off.
    let herald = Herald::start(&["--dev", "--queue-bytes", "64MiB", "--max-body", "1MiB"]);
    // A subscriber that reads nothing for a while: the sockets' buffers take a few MB (up to
    // 4 MiB of send buffer here) of the 12 MB published below, the rest waits in its queue.
    let mut tcp = herald.stalled_subscriber("slow", None, false).await;
    let big = "x".repeat(400_000);
    let mut last = String::new();
    for _ in 0..30 {
        last = herald
            .publish_ok(json!({"topics": ["slow"], "data": big}))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The connections list shows how much is queued for it, and for how long.
    let rows = herald.connections().await;
    assert!(rows[0]["queued_bytes"].as_u64().unwrap() > 0, "{rows:?}");
    let waited = rows[0]["queued_ms"].as_u64().unwrap();
    assert!((1_000..60_000).contains(&waited), "{rows:?}");
    let end = format!("id: {last}\n");
    // Only the last bytes read are searched for the last event's id: 12 MB come through.
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read = tokio::time::timeout(WAIT, async {
        while !tail.windows(end.len()).any(|w| w == end.as_bytes()) {
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(n > 0, "the stream ended early");
            tail.drain(..tail.len().saturating_sub(end.len()));
            tail.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "every event arrives once the subscriber reads"
    );

    let text = herald.call(Method::GET, "/metrics").send().await.text();
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    assert_eq!(value("herald_publish_seconds_count"), 30, "{text}");
    let deliveries = value("herald_delivery_seconds_count");
    assert!(deliveries >= 2, "{text}");
    // The events queued while the subscriber did not read waited well over a second.
    assert!(
        deliveries > value("herald_delivery_seconds_bucket{le=\"1\"}"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE herald_delivery_seconds histogram"),
        "{text}"
    );

    // The stats samples (and so the console) show the same over their window.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (mut latency, mut seen) = (Value::Null, false);
    while !seen && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stats = herald.call(Method::GET, "/admin/stats").send().await.json();
        latency = stats["stats"]["latency"].clone();
        seen = latency["delivery"]["p99_us"]
            .as_u64()
            .is_some_and(|p99| p99 >= 1_000_000);
    }
    assert!(seen, "{latency}\n{text}");
    assert_eq!(latency["publish"]["count"], 30, "{latency}");
    assert!(
        latency["window_ms"].as_u64().is_some_and(|w| w > 0),
        "{latency}"
    );
}

#[tokio::test]
async fn a_consoles_own_stream_is_not_counted_in_the_delivery_latency() {
    let herald = Herald::start(&["--dev"]);
    let mut console = herald.admin_events().open().await;
    // The snapshot and two stats samples: written to the console, and no subscriber's.
    let events = console.events_until(3, WAIT).await;
    assert_eq!(events.len(), 3, "{}", console.raw_text());
    let text = herald.call(Method::GET, "/metrics").send().await.text();
    assert!(
        text.lines().any(|l| l == "herald_delivery_seconds_count 0"),
        "{text}"
    );
    let stats = herald.call(Method::GET, "/admin/stats").send().await.json();
    assert_eq!(
        stats["stats"]["latency"]["delivery"],
        Value::Null,
        "{stats}"
    );
}

#[tokio::test]
async fn an_admin_stream_whose_snapshot_is_larger_than_a_queue_is_not_taken_for_too_slow() {
    // Twenty connections make a snapshot several times the smallest queue.
    let herald = Herald::start(&["--dev", "--queue-bytes", "1024"]);
    let mut subs = Vec::new();
    for i in 0..20 {
        let user = format!("user-{i}");
        subs.push(herald.events().query("user", &user).topic("t").open().await);
    }
    let mut admin = herald.admin_events().open().await;
    let snapshot = admin.next_event(WAIT).await.expect("a first event");
    assert_eq!(snapshot.event_type, "snapshot", "{}", admin.raw_text());
    assert!(snapshot.data.len() > 4 * 1024, "{}", snapshot.data.len());
    let snap: Value = serde_json::from_str(&snapshot.data).expect("snapshot JSON");
    let rows = snap["connections"].as_array().expect("rows");
    assert!(rows.len() >= 20, "{snap}");
    // What follows the snapshot still reaches it: the stream was not closed as too slow.
    let id = herald.publish_ok(json!({"topics": ["t"], "data": 1})).await;
    let published = admin
        .next_event_of_type("published", WAIT)
        .await
        .unwrap_or_else(|| panic!("the admin stream ended: {:?}", admin.end()));
    let info: Value = serde_json::from_str(&published.data).expect("JSON");
    assert_eq!(info["id"], id.as_str(), "{info}");
    let stats = herald.call(Method::GET, "/admin/stats").send().await.json();
    assert_eq!(
        stats["stats"]["counters"]["slow_consumer_closes"], 0,
        "{stats}"
    );
}
