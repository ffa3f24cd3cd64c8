//! Publish and subscribe: by topic, by pattern, by user (several tabs), and broadcast.

use std::process::Command;

use herald_tests::{Herald, WAIT, herald_bin, mint_token, run_bounded};
use http::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn a_subscriber_receives_events_published_to_its_topic_and_no_others() {
    let herald = Herald::start(&["--dev"]);
    let mut sub = herald.events().topic("orders").open().await;
    assert_eq!(sub.retry(), Some(3000), "the first frame carries retry:");

    herald
        .publish_ok(json!({"topics": ["invoices"], "data": "not for orders"}))
        .await;
    let id = herald
        .publish_ok(json!({"topics": ["orders"], "event": "order.updated", "data": {"id": 1, "total": 9.5}}))
        .await;

    let event = sub.next_event(WAIT).await.expect("the orders event");
    assert_eq!(event.event_type, "order.updated");
    assert_eq!(
        event.data, r#"{"id":1,"total":9.5}"#,
        "JSON data is sent compact"
    );
    assert_eq!(event.last_event_id, id);
    assert_eq!(sub.last_event_id(), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_data_arrives_as_written_less_whitespace_from_the_api_and_the_cli() {
    let herald = Herald::start(&["--dev"]);
    let mut sub = herald.events().topic("t").open().await;
    // Written by hand: a JSON library would have rounded the number before it was sent.
    let body = br#"{"topics": ["t"], "data": { "id" : 98765432109876543210, "z": 1e2, "a": [-0, 1.5e-400] }}"#;
    let reply = herald
        .call(Method::POST, "/publish")
        .raw_body("application/json", body.to_vec())
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let mut cli = Command::new(herald_bin());
    cli.args([
        "publish",
        "--url",
        &herald.url(""),
        "--topic",
        "t",
        "--data",
    ])
    .arg(r#"{"n": 18446744073709551616, "b": 2, "a": 1}"#);
    let out = run_bounded(&mut cli, WAIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let events = sub.events_until(2, WAIT).await;
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(
        data,
        [
            r#"{"id":98765432109876543210,"z":1e2,"a":[-0,1.5e-400]}"#,
            r#"{"n":18446744073709551616,"b":2,"a":1}"#
        ]
    );
}

#[tokio::test]
async fn string_data_is_sent_as_its_text_and_survives_line_breaks() {
    let herald = Herald::start(&["--dev"]);
    let mut sub = herald.events().topic("t").open().await;
    herald
        .publish_ok(json!({"topics": ["t"], "data": "plain text"}))
        .await;
    herald
        .publish_ok(json!({"topics": ["t"], "data": "one\ntwo\r\nthree\rfour\n\n: not a comment"}))
        .await;

    let events = sub.events_until(2, WAIT).await;
    assert_eq!(events.len(), 2, "{}", sub.raw_text());
    assert_eq!(events[0].event_type, "message");
    assert_eq!(events[0].data, "plain text");
    // Every break (LF, CRLF, CR) comes back as LF; blank lines and colons stay data.
    assert_eq!(events[1].data, "one\ntwo\nthree\nfour\n\n: not a comment");
}

#[tokio::test]
async fn a_pattern_subscription_receives_every_topic_under_its_prefix() {
    let herald = Herald::start(&["--dev"]);
    let mut sub = herald.events().topic("news/*").open().await;

    herald
        .publish_ok(json!({"topics": ["sports"], "data": "no"}))
        .await;
    herald
        .publish_ok(json!({"topics": ["newsletter"], "data": "no: not under news/"}))
        .await;
    let eu = herald
        .publish_ok(json!({"topics": ["news/eu"], "data": "eu"}))
        .await;
    let tech = herald
        .publish_ok(json!({"topics": ["news/us/tech"], "data": "tech"}))
        .await;

    // Delivery is in id order, so the first two not arriving first means they never will.
    let events = sub.events_until(2, WAIT).await;
    let got: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.last_event_id.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(got, [(eu.as_str(), "eu"), (tech.as_str(), "tech")]);
}

#[tokio::test]
async fn an_event_for_a_user_reaches_that_user_only() {
    let herald = Herald::start(&["--dev"]);
    let mut alice = herald.events().query("user", "alice").open().await;
    let mut bob = herald.events().query("user", "bob").open().await;

    let for_bob = herald
        .publish_ok(json!({"users": ["bob"], "data": "hi bob"}))
        .await;
    let for_alice = herald
        .publish_ok(json!({"users": ["alice"], "data": "hi alice"}))
        .await;

    let a = alice.next_event(WAIT).await.expect("alice's event");
    assert_eq!(
        (a.last_event_id.as_str(), a.data.as_str()),
        (for_alice.as_str(), "hi alice")
    );
    let b = bob.next_event(WAIT).await.expect("bob's event");
    assert_eq!(
        (b.last_event_id.as_str(), b.data.as_str()),
        (for_bob.as_str(), "hi bob")
    );
    // Bob's stream holds nothing after his own event: alice's is later, so it would be here.
    let marker = herald
        .publish_ok(json!({"users": ["bob"], "data": "marker"}))
        .await;
    let next = bob.next_event(WAIT).await.expect("the marker");
    assert_eq!(next.last_event_id, marker);
}

#[tokio::test]
async fn every_tab_of_a_user_receives_the_users_events() {
    let secret = "tabs-secret";
    let herald = Herald::start(&["--jwt-secret", secret]);
    let alice = crate::alice_token(secret);
    let bob = mint_token(secret, &["--sub", "bob", "--subscribe", "orders"]);
    let publisher = mint_token(secret, &["--sub", "backend", "--publish"]);

    // Three tabs with different topics, one without any: the user's stream is in all of them.
    let mut tabs = [
        herald.events().token(&alice).topic("orders").open().await,
        herald.events().token(&alice).topic("news/*").open().await,
        herald.events().token(&alice).open().await,
    ];
    let mut other = herald.events().token(&bob).topic("orders").open().await;

    let (status, answer) = herald
        .publish_as(
            &publisher,
            json!({"users": ["alice"], "event": "notice", "data": "for alice"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["id"].as_str().expect("an id").to_owned();
    let (status, answer) = herald
        .publish_as(&publisher, json!({"users": ["bob"], "data": "for bob"}))
        .await;
    assert_eq!(status, 200, "{answer}");

    for (i, tab) in tabs.iter_mut().enumerate() {
        let event = tab
            .next_event(WAIT)
            .await
            .unwrap_or_else(|| panic!("tab {i}: {}", tab.raw_text()));
        assert_eq!(
            (event.event_type.as_str(), event.data.as_str()),
            ("notice", "for alice"),
            "tab {i}"
        );
        assert_eq!(event.last_event_id, id, "tab {i}");
    }
    let event = other.next_event(WAIT).await.expect("bob's event");
    assert_eq!(event.data, "for bob", "bob does not get alice's event");
}

#[tokio::test]
async fn a_broadcast_reaches_every_subscriber_whatever_it_subscribed_to() {
    let herald = Herald::start(&["--dev"]);
    let mut subs = [
        herald.events().topic("orders").open().await,
        herald.events().topic("news/*").open().await,
        herald.events().query("user", "carol").open().await,
        herald.events().open().await,
        herald.events().http2().topic("x").open().await,
    ];
    let id = herald
        .publish_ok(json!({"broadcast": true, "event": "maintenance", "data": "in 5 minutes"}))
        .await;
    for (i, sub) in subs.iter_mut().enumerate() {
        let event = sub
            .next_event(WAIT)
            .await
            .unwrap_or_else(|| panic!("subscriber {i}: {}", sub.raw_text()));
        assert_eq!(event.event_type, "maintenance", "subscriber {i}");
        assert_eq!(event.data, "in 5 minutes", "subscriber {i}");
        assert_eq!(event.last_event_id, id, "subscriber {i}");
    }
}

#[tokio::test]
async fn one_event_to_several_targets_is_delivered_once_per_connection() {
    let herald = Herald::start(&["--dev"]);
    // Matches by topic, by pattern and by user at once.
    let mut sub = herald
        .events()
        .topic("orders")
        .topic("orders/*")
        .query("user", "dave")
        .open()
        .await;
    let first = herald
        .publish_ok(json!({"topics": ["orders", "orders/eu"], "users": ["dave"], "data": "once"}))
        .await;
    let marker = herald
        .publish_ok(json!({"topics": ["orders"], "data": "marker"}))
        .await;
    let events = sub.events_until(2, WAIT).await;
    let ids: Vec<&str> = events.iter().map(|e| e.last_event_id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), marker.as_str()]);
}
