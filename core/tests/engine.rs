//! The engine driven through its public API by a simulated driver with simulated time.

mod support;

use std::time::Duration;

use herald_core::{
    CloseReason, ConnId, ConnectError, ConnectRequest, ConnectionInfo, ConnectionQuery,
    EngineConfig, Event, EventId, EventType, HistoryPage, HistoryRequest, Latency, LogBounds,
    Parser, Protocol, PublishError, PublishRequest, Quantiles, Stats, Target, Topic, TopicPattern,
    Transports, UserId,
};
use support::{Sim, ids, read_log, topics, users};

#[test]
fn first_frame_of_a_connection_carries_retry() {
    let mut sim = Sim::new(EngineConfig {
        retry_ms: 2500,
        ..EngineConfig::default()
    });
    let c = sim.connect(&["orders"], None, None);
    // With a checkpoint: where the stream starts (here, before every event).
    assert_eq!(sim.raw(c), "retry: 2500\nid: 0-0\n\n");
    assert!(
        sim.received(c).is_empty(),
        "the checkpoint is not a message"
    );
    let resumed = sim.connect(&["orders"], None, Some(EventId::MIN));
    assert_eq!(
        sim.raw(resumed),
        "retry: 2500\n\n",
        "a resume has its own id already"
    );
}

#[test]
fn a_client_that_drops_before_its_first_event_resumes_from_its_checkpoint() {
    let mut sim = Sim::new(EngineConfig::default());
    let old = sim.publish_topic("news", "before it connected");
    let quiet = sim.connect(&["news"], None, None);
    assert_eq!(sim.raw(quiet), format!("retry: 3000\nid: {old}\n\n"));
    // What a browser would reconnect with: the checkpoint, though no message arrived.
    let mut parser = Parser::new();
    for frame in &sim.frames[&quiet] {
        assert!(parser.feed(frame).is_empty());
    }
    let checkpoint = parser.last_event_id().to_owned();
    assert_eq!(checkpoint, old.to_string());
    sim.engine.handle_disconnect(quiet, sim.now);

    let missed = sim.publish_topic("news", "while it was away");
    let back = sim.connect(&["news"], None, Some(checkpoint.parse().unwrap()));
    assert_eq!(sim.received_ids(back), ids(&[missed]));
    // The same from an empty log: the checkpoint is 0-0, and the replay starts at the start.
    let mut empty = Sim::new(EngineConfig::default());
    let quiet = empty.connect(&["news"], None, None);
    empty.engine.handle_disconnect(quiet, empty.now);
    let first = empty.publish_topic("news", "the very first");
    let back = empty.connect(&["news"], None, Some(EventId::MIN));
    assert_eq!(empty.received_ids(back), ids(&[first]));
    assert!(
        !empty.raw(back).contains("herald.reset"),
        "0-0 is not an unknown id"
    );
}

#[test]
fn events_reach_topic_pattern_user_and_broadcast_subscribers_once_each() {
    let mut sim = Sim::new(EngineConfig::default());
    let orders = sim.connect(&["orders"], None, None);
    let news = sim.connect(&["news/*"], None, None);
    let alice_tab1 = sim.connect(&["orders"], Some("alice"), None);
    let alice_tab2 = sim.connect(&[], Some("alice"), None);
    let bob = sim.connect(&[], Some("bob"), None);

    let o = sim.publish_topic("orders", "o");
    let n = sim.publish_topic("news/eu", "n");
    let a = sim.publish(users(&["alice"]), "a");
    let both = sim.publish(
        Target {
            users: vec![UserId::new("alice").unwrap()],
            ..topics(&["orders"])
        },
        "both",
    );
    let b = sim.publish(
        Target {
            broadcast: true,
            ..Target::default()
        },
        "b",
    );

    assert_eq!(sim.received_ids(orders), ids(&[o, both, b]));
    assert_eq!(sim.received_ids(news), ids(&[n, b]));
    assert_eq!(sim.received_ids(alice_tab1), ids(&[o, a, both, b]));
    assert_eq!(sim.received_ids(alice_tab2), ids(&[a, both, b]));
    assert_eq!(sim.received_ids(bob), ids(&[b]));
}

#[test]
fn nothing_is_delivered_before_the_log_commits() {
    let mut sim = Sim::new(EngineConfig::default());
    sim.auto_commit = false;
    let c = sim.connect(&["orders"], None, None);
    let first = sim.publish_topic("orders", "1");
    let second = sim.publish_topic("orders", "2");
    assert!(sim.received_ids(c).is_empty());
    assert_eq!(sim.appended.len(), 2);
    // The log commits the first only: only it is delivered.
    let one = sim.appended.remove(0);
    sim.log.push((*one).clone());
    sim.engine.handle_committed(first, sim.now);
    sim.drain();
    assert_eq!(sim.received_ids(c), ids(&[first]));
    sim.commit_all();
    sim.drain();
    assert_eq!(sim.received_ids(c), ids(&[first, second]));
}

#[test]
fn a_failed_append_is_never_delivered_and_its_key_can_be_retried() {
    let mut sim = Sim::new(EngineConfig::default());
    sim.auto_commit = false;
    let c = sim.connect(&["orders"], None, None);
    let mut req = PublishRequest::new(topics(&["orders"]), "x");
    req.idempotency_key = Some("k".into());
    let failed = sim
        .engine
        .handle_publish(req.clone(), 1, sim.now)
        .unwrap()
        .id;
    sim.drain();
    sim.appended.clear();
    sim.engine.handle_append_failed(&[failed]);
    let ok = sim.engine.handle_publish(req, 2, sim.now).unwrap();
    assert!(!ok.duplicate);
    sim.drain();
    sim.commit_all();
    sim.drain();
    assert_eq!(sim.received_ids(c), ids(&[ok.id]));
}

#[test]
fn publishing_without_a_target_is_refused() {
    let mut sim = Sim::new(EngineConfig::default());
    let err = sim
        .engine
        .handle_publish(PublishRequest::new(Target::default(), "x"), 1, sim.now);
    assert_eq!(err, Err(PublishError::NoTarget));
}

#[test]
fn a_repeated_idempotency_key_returns_the_original_id() {
    let mut sim = Sim::new(EngineConfig {
        idempotency_keys: 2,
        ..EngineConfig::default()
    });
    let c = sim.connect(&["orders"], None, None);
    let publish = |sim: &mut Sim, key: &str| {
        let mut req = PublishRequest::new(topics(&["orders"]), "x");
        req.idempotency_key = Some(key.into());
        let out = sim.engine.handle_publish(req, 5, sim.now).unwrap();
        sim.drain();
        out
    };
    let first = publish(&mut sim, "a");
    let again = publish(&mut sim, "a");
    assert!(!first.duplicate);
    assert!(again.duplicate && again.committed);
    assert_eq!(first.id, again.id);
    assert_eq!(sim.received_ids(c).len(), 1);
    // Memory for keys is bounded: the oldest key is forgotten.
    publish(&mut sim, "b");
    publish(&mut sim, "c");
    assert!(!publish(&mut sim, "a").duplicate);
}

#[test]
fn an_idempotency_key_is_the_publishers_own() {
    let mut sim = Sim::new(EngineConfig::default());
    let c = sim.connect(&["orders"], None, None);
    let publish = |sim: &mut Sim, publisher: Option<&str>, key: &str| {
        let mut req = PublishRequest::new(topics(&["orders"]), "x");
        req.idempotency_key = Some(key.into());
        req.publisher = publisher.map(|p| UserId::new(p).unwrap());
        let out = sim.engine.handle_publish(req, 5, sim.now);
        sim.drain();
        out
    };
    let mine = publish(&mut sim, Some("billing"), "invoice-1").unwrap();
    // Another publisher guessing the key publishes its own event, and does not learn the id.
    let theirs = publish(&mut sim, Some("mallory"), "invoice-1").unwrap();
    let anonymous = publish(&mut sim, None, "invoice-1").unwrap();
    assert!(!theirs.duplicate && !anonymous.duplicate);
    assert!(mine.id != theirs.id && theirs.id != anonymous.id);
    // The same publisher retrying is answered with its first id.
    let retried = publish(&mut sim, Some("billing"), "invoice-1").unwrap();
    assert!(retried.duplicate);
    assert_eq!(retried.id, mine.id);
    assert_eq!(
        sim.received_ids(c),
        ids(&[mine.id, theirs.id, anonymous.id])
    );
    // A NUL in a key could forge another publisher's scope, so control characters are refused.
    assert_eq!(
        publish(&mut sim, None, "billing\0invoice-1"),
        Err(PublishError::BadIdempotencyKey)
    );
    // What the log keeps, and gives back after a restart, is the scoped key.
    assert_eq!(sim.keys[0], (mine.id, "billing\0invoice-1".to_owned()));
    assert_eq!(sim.keys[2], (anonymous.id, "invoice-1".to_owned()));
}

#[test]
fn idempotency_keys_kept_by_the_log_survive_a_restart() {
    let mut sim = Sim::new(EngineConfig::default());
    let mut req = PublishRequest::new(topics(&["orders"]), "x");
    req.idempotency_key = Some("order-17".into());
    let first = sim.engine.handle_publish(req.clone(), 5, sim.now).unwrap();
    sim.drain();
    assert_eq!(sim.keys, [(first.id, "order-17".to_owned())]);

    // A new engine over the same log, given back what the log kept.
    let bounds = LogBounds {
        events: 1,
        ..LogBounds::default()
    };
    let mut restarted = Sim::with_log(EngineConfig::default(), sim.log.clone(), bounds);
    // A key above the last committed id (never acknowledged) is not restored.
    let unacknowledged = EventId::new(u64::MAX, 0);
    restarted.engine.restore_idempotency_keys(
        sim.keys
            .iter()
            .cloned()
            .chain([(unacknowledged, "lost".to_owned())]),
    );
    let c = restarted.connect(&["orders"], None, None);
    let again = restarted
        .engine
        .handle_publish(req, 9, restarted.now)
        .unwrap();
    restarted.drain();
    assert!(again.duplicate && again.committed);
    assert_eq!(again.id, first.id);
    assert!(restarted.appended.is_empty() && restarted.received_ids(c).is_empty());
    let mut lost = PublishRequest::new(topics(&["orders"]), "y");
    lost.idempotency_key = Some("lost".into());
    assert!(
        !restarted
            .engine
            .handle_publish(lost, 9, restarted.now)
            .unwrap()
            .duplicate
    );
}

#[test]
fn resuming_from_the_recent_window_replays_exactly_what_was_missed() {
    let mut sim = Sim::new(EngineConfig::default());
    let c = sim.connect(&["orders"], None, None);
    let a = sim.publish_topic("orders", "a");
    sim.engine.handle_disconnect(c, sim.now);
    let b = sim.publish_topic("orders", "b");
    sim.publish_topic("other", "not mine");
    let d = sim.publish_topic("orders", "d");
    let again = sim.connect(&["orders"], None, Some(a));
    assert!(sim.history_requests.is_empty());
    assert_eq!(sim.received_ids(again), ids(&[b, d]));
    let e = sim.publish_topic("orders", "e");
    assert_eq!(sim.received_ids(again), ids(&[b, d, e]));
    assert_eq!(sim.engine.counters().replayed, 2);
}

#[test]
fn live_events_during_a_replay_are_held_and_released_without_gap_or_duplicate() {
    let mut sim = Sim::new(EngineConfig {
        recent_events: 2,
        ..EngineConfig::default()
    });
    let mut published = Vec::new();
    for i in 0..10 {
        published.push(sim.publish_topic("orders", &i.to_string()));
    }
    sim.auto_history = false;
    let c = sim.connect(&["orders"], None, Some(published[1]));
    // The window holds only the last two: the engine asks the log.
    assert_eq!(sim.history_requests.len(), 1);
    assert_eq!(sim.history_requests[0].after, Some(published[1]));
    // Events are published and committed while the log read is in flight.
    for i in 10..13 {
        published.push(sim.publish_topic("orders", &i.to_string()));
    }
    assert!(sim.received_ids(c).is_empty());
    // The log answers with what it held when asked (through the old commit point), plus,
    // as a racing read could, some of the newer events too.
    let req = sim.history_requests.remove(0);
    let mut page = read_log(
        &sim.log,
        &HistoryRequest {
            through: published[11],
            ..req.clone()
        },
    );
    page.more = false;
    sim.engine.handle_history(c, page, sim.now);
    sim.drain();
    assert_eq!(sim.received_ids(c), ids(&published[2..]));
}

#[test]
fn a_replay_the_log_cannot_read_for_good_is_told_and_goes_on_live() {
    let mut sim = Sim::new(EngineConfig {
        recent_events: 2,
        ..EngineConfig::default()
    });
    let published: Vec<EventId> = sim.publish_numbered("orders", 10);
    sim.auto_history = false;
    let c = sim.connect(&["orders"], None, Some(published[1]));
    assert_eq!(sim.history_requests.len(), 1);
    sim.history_requests.clear();
    // The records are damaged: no retry would read them.
    sim.engine.handle_history_unreadable(c, sim.now);
    sim.drain();
    let got = sim.received(c);
    assert_eq!(got[0].event_type, "herald.reset", "{got:?}");
    let notice: serde_json::Value = serde_json::from_str(&got[0].data).unwrap();
    assert_eq!(notice["reason"], "history_unreadable");
    assert_eq!(notice["last_event_id"], published[1].to_string());
    // Moved past what it cannot get back, and live from there.
    assert_eq!(got[0].last_event_id, published[9].to_string());
    assert!(sim.engine.is_connected(c));
    let after = sim.publish_topic("orders", "after");
    assert_eq!(sim.received_ids(c).last(), Some(&after.to_string()));
    assert_eq!(sim.engine.counters().resets, 1);
}

#[test]
fn a_replay_larger_than_a_page_is_read_in_pages() {
    let config = EngineConfig {
        recent_events: 1,
        history_page_events: 3,
        ..EngineConfig::default()
    };
    let mut sim = Sim::new(config);
    let published: Vec<EventId> = sim.publish_numbered("t", 10);
    let c = sim.connect(&["t"], None, Some(published[0]));
    assert_eq!(sim.received_ids(c), ids(&published[1..]));
}

#[test]
fn a_replay_goes_out_one_page_per_driver_round_trip_even_from_the_window() {
    // Pages of one event: the driver paces each against the connection's queue.
    let mut sim = Sim::new(EngineConfig {
        history_page_bytes: 1,
        ..EngineConfig::default()
    });
    let published: Vec<EventId> = sim.publish_numbered("t", 4);
    sim.auto_history = false;
    let c = sim.connect(&["t"], None, Some(published[0]));
    // The first page from the window; the rest waits for the driver's go (a history request),
    // however much of it the window holds.
    assert_eq!(sim.received_ids(c), ids(&published[1..2]));
    for n in 2..4 {
        assert_eq!(sim.history_requests.len(), 1, "one page at a time");
        let req = sim.history_requests.remove(0);
        let page = read_log(&sim.log, &req);
        sim.engine.handle_history(c, page, sim.now);
        sim.drain();
        assert_eq!(sim.received_ids(c), ids(&published[1..=n]));
    }
    let after = sim.publish_topic("t", "after");
    assert_eq!(sim.received_ids(c).last(), Some(&after.to_string()));
}

#[test]
fn a_page_that_stopped_at_its_read_budget_moves_the_replay_past_what_it_read() {
    let mut sim = Sim::new(EngineConfig {
        recent_events: 1,
        ..EngineConfig::default()
    });
    let mut published = Vec::new();
    for i in 0..9 {
        published.push(sim.publish_topic(if i % 4 == 3 { "t" } else { "other" }, "x"));
    }
    sim.auto_history = false;
    let c = sim.connect(&["t"], None, Some(published[0]));
    // The log read three records per page and stopped: nothing matched in the first, one
    // event in the second (read on past it), and the rest in the last.
    let answers = [
        (vec![], Some(published[2])),
        (vec![3], Some(published[5])),
        (vec![7], None),
    ];
    let mut afters = Vec::new();
    for (n, (events, read_through)) in answers.into_iter().enumerate() {
        assert_eq!(sim.history_requests.len(), 1, "page {n}");
        let req = sim.history_requests.remove(0);
        afters.push(req.after);
        let page = HistoryPage {
            events: events
                .iter()
                .map(|&i: &usize| {
                    sim.log
                        .iter()
                        .find(|e| e.id == published[i])
                        .unwrap()
                        .clone()
                })
                .collect(),
            more: read_through.is_some(),
            read_through,
        };
        sim.engine.handle_history(c, page, sim.now);
        sim.drain();
    }
    assert_eq!(
        afters,
        [Some(published[0]), Some(published[2]), Some(published[5])]
    );
    assert!(sim.history_requests.is_empty(), "the replay is over");
    assert_eq!(sim.received_ids(c), ids(&[published[3], published[7]]));
    let after = sim.publish_topic("t", "after");
    assert_eq!(sim.received_ids(c).last(), Some(&after.to_string()));
}

#[test]
fn a_page_read_from_the_log_goes_out_as_one_frame() {
    let mut sim = Sim::new(EngineConfig {
        recent_events: 1,
        ..EngineConfig::default()
    });
    let published: Vec<EventId> = sim.publish_numbered("t", 5);
    sim.auto_history = false;
    let c = sim.connect(&["t"], None, Some(published[0]));
    let before = sim.frames[&c].len();
    let req = sim.history_requests.remove(0);
    let page = read_log(&sim.log, &req);
    assert_eq!(page.events.len(), 4);
    sim.engine.handle_history(c, page, sim.now);
    sim.drain();
    assert_eq!(sim.frames[&c].len(), before + 1, "one frame for the page");
    assert_eq!(sim.received_ids(c), ids(&published[1..]));
    assert_eq!(sim.engine.counters().replayed, 4);
}

#[test]
fn held_events_that_overflow_are_replayed_from_the_log_instead() {
    let config = EngineConfig {
        recent_events: 1,
        held_bytes: 64,
        ..EngineConfig::default()
    };
    let mut sim = Sim::new(config);
    let mut published: Vec<EventId> = sim.publish_numbered("t", 3);
    sim.auto_history = false;
    let c = sim.connect(&["t"], None, Some(published[0]));
    for i in 0..20 {
        published.push(sim.publish_topic("t", &format!("live {i}")));
    }
    // Keep answering the log's requests until the replay is over.
    sim.auto_history = true;
    sim.drain();
    assert_eq!(sim.received_ids(c), ids(&published[1..]));
    let after = sim.publish_topic("t", "after");
    assert_eq!(sim.received_ids(c).last(), Some(&after.to_string()));
}

#[test]
fn a_resume_point_older_than_the_log_gets_a_reset_then_what_the_log_holds() {
    let events: Vec<Event> = (10..15)
        .map(|ms| Event {
            id: EventId::new(ms, 0),
            target: topics(&["t"]),
            event_type: None,
            data: ms.to_string(),
        })
        .collect();
    let bounds = LogBounds {
        oldest: Some(EventId::new(10, 0)),
        floor: Some(EventId::new(9, 0)),
        events: 5,
        bytes: 10,
    };
    let mut sim = Sim::with_log(EngineConfig::default(), events, bounds);
    let c = sim.connect(&["t"], None, Some(EventId::new(3, 0)));
    let got = sim.received(c);
    assert_eq!(got[0].event_type, "herald.reset");
    let data: serde_json::Value = serde_json::from_str(&got[0].data).unwrap();
    assert_eq!(data["reason"], "history_truncated");
    assert_eq!(data["oldest_id"], "10-0");
    assert_eq!(
        got[1..].iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["10", "11", "12", "13", "14"]
    );
    assert_eq!(sim.engine.counters().resets, 1);
    // The client that saw the last trimmed event missed nothing: no reset.
    let exact = sim.connect(&["t"], None, Some(EventId::new(9, 0)));
    assert!(
        sim.received(exact)
            .iter()
            .all(|e| e.event_type != "herald.reset")
    );
    assert_eq!(sim.received_ids(exact).len(), 5);
}

#[test]
fn a_reset_replays_only_what_the_log_holds_even_if_the_window_remembers_more() {
    let mut sim = Sim::new(EngineConfig::default());
    let published: Vec<EventId> = sim.publish_numbered("t", 6);
    // Retention trims the first three; the in-memory window still holds them.
    sim.trim_through(published[2]);
    let c = sim.connect(&["t"], None, Some(published[0]));
    let got = sim.received(c);
    assert_eq!(got[0].event_type, "herald.reset");
    assert_eq!(sim.received_ids(c), ids(&published[3..]));
}

#[test]
fn history_trimmed_while_a_replay_waits_for_the_log_still_gets_a_reset() {
    let mut sim = Sim::new(EngineConfig {
        recent_events: 1,
        ..EngineConfig::default()
    });
    let published: Vec<EventId> = sim.publish_numbered("t", 5);
    sim.auto_history = false;
    let c = sim.connect(&["t"], None, Some(published[0]));
    assert!(
        sim.received(c)
            .iter()
            .all(|e| e.event_type != "herald.reset")
    );
    // Retention removes the first three events before the read happens.
    sim.trim_through(published[2]);
    sim.auto_history = true;
    sim.drain();
    let got = sim.received(c);
    assert_eq!(got[0].event_type, "herald.reset");
    assert_eq!(sim.received_ids(c), ids(&published[3..]));
}

#[test]
fn a_replay_overtaken_by_retention_again_after_its_first_reset_is_told_again() {
    let mut sim = Sim::new(EngineConfig {
        recent_events: 1,
        ..EngineConfig::default()
    });
    let published: Vec<EventId> = sim.publish_numbered("t", 10);
    // The client resumes from below the floor: told at once.
    sim.trim_through(published[1]);
    sim.auto_history = false;
    let c = sim.connect(&["t"], None, Some(published[0]));
    // Retention passes the replay again before its read: that is missed as well.
    sim.trim_through(published[4]);
    sim.auto_history = true;
    sim.drain();
    let got = sim.received(c);
    let resets: Vec<(&str, &str)> = got
        .iter()
        .filter(|e| e.event_type == "herald.reset")
        .map(|e| (e.data.as_str(), e.last_event_id.as_str()))
        .collect();
    assert_eq!(resets.len(), 2, "{}", sim.raw(c));
    let second: serde_json::Value = serde_json::from_str(resets[1].0).unwrap();
    assert_eq!(second["reason"], "history_truncated");
    assert_eq!(second["last_event_id"], published[1].to_string());
    assert_eq!(resets[1].1, published[4].to_string());
    assert_eq!(sim.received_ids(c), ids(&published[5..]));
}

#[test]
fn a_resume_point_from_the_future_gets_a_reset_that_moves_the_cursor() {
    let mut sim = Sim::new(EngineConfig::default());
    let known = sim.publish_topic("t", "x");
    let c = sim.connect(&["t"], None, Some(EventId::new(u64::MAX, 0)));
    let got = sim.received(c);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event_type, "herald.reset");
    assert_eq!(got[0].last_event_id, known.to_string());
    let data: serde_json::Value = serde_json::from_str(&got[0].data).unwrap();
    assert_eq!(data["reason"], "unknown_last_event_id");
    // The log was empty when the engine started, and retention has not looked since: its
    // first event is still named as the oldest.
    assert_eq!(data["oldest_id"], known.to_string());
    let next = sim.publish_topic("t", "y");
    assert_eq!(sim.received_ids(c), ids(&[next]));
    // With an empty log the reset moves the client to the position before every event, so
    // that its next reconnect is replayed the log's first events.
    let mut empty = Sim::new(EngineConfig::default());
    let c = empty.connect(&["t"], None, Some(EventId::new(5, 5)));
    assert!(empty.raw(c).contains("id: 0-0\nevent: herald.reset\n"));
    let first = empty.publish_topic("t", "first");
    empty.engine.handle_disconnect(c, empty.now);
    let again = empty.connect(&["t"], None, Some(EventId::MIN));
    assert_eq!(empty.received_ids(again), ids(&[first]));
}

#[test]
fn ids_are_monotonic_across_a_restart_and_a_clock_that_steps_back() {
    let mut sim = Sim::new(EngineConfig::default());
    sim.wall_ms = 10_000;
    let a = sim.publish_topic("t", "a");
    sim.wall_ms = 5_000; // the clock steps back
    let b = sim.publish_topic("t", "b");
    assert!(b > a);
    let log = sim.log.clone();
    let mut restarted = Sim::with_log(EngineConfig::default(), log, LogBounds::default());
    restarted.wall_ms = 1_000; // and the restarted machine's clock is even further behind
    let c = restarted.publish_topic("t", "c");
    assert!(c > b, "{c} after {b}");
}

#[test]
fn a_slow_consumer_is_closed_while_the_others_keep_receiving() {
    let mut sim = Sim::new(EngineConfig::default());
    let slow = sim.connect(&["t"], None, None);
    let fast = sim.connect(&["t"], None, None);
    let a = sim.publish_topic("t", "a");
    // The driver's queue for `slow` overflows.
    sim.engine.handle_queue_overflow(slow, sim.now);
    sim.drain();
    assert_eq!(sim.closed, vec![(slow, CloseReason::SlowConsumer)]);
    let b = sim.publish_topic("t", "b");
    assert_eq!(sim.received_ids(fast), ids(&[a, b]));
    assert_eq!(sim.received_ids(slow), ids(&[a]));
    assert_eq!(sim.engine.counters().slow_consumer_closes, 1);
    // It reconnects with its last id and replays what it missed.
    let back = sim.connect(&["t"], None, Some(a));
    assert_eq!(sim.received_ids(back), ids(&[b]));
}

#[test]
fn idle_connections_get_a_keep_alive_on_the_coarse_tick() {
    let config = EngineConfig {
        keepalive: Duration::from_secs(15),
        tick: Duration::from_secs(1),
        ..EngineConfig::default()
    };
    let mut sim = Sim::new(config);
    let idle = sim.connect(&["t"], None, None);
    let busy = sim.connect(&["busy"], None, None);
    for _ in 0..14 {
        sim.advance(Duration::from_secs(1));
        sim.publish_topic("busy", "x");
    }
    assert!(!sim.raw(idle).contains(": keep-alive"));
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.raw(idle).matches(": keep-alive").count(), 1);
    assert!(!sim.raw(busy).contains(": keep-alive"));
    for _ in 0..15 {
        sim.advance(Duration::from_secs(1));
    }
    assert_eq!(sim.raw(idle).matches(": keep-alive").count(), 2);
    let parser_comments = {
        let mut p = Parser::new();
        for f in &sim.frames[&idle] {
            p.feed(f);
        }
        p.comments()
    };
    assert_eq!(parser_comments, 2);
}

#[test]
fn a_reset_moves_the_client_past_what_it_missed_so_a_reconnect_is_not_told_twice() {
    let mut sim = Sim::new(EngineConfig::default());
    let published: Vec<EventId> = sim.publish_numbered("t", 4);
    sim.trim_through(published[1]);
    let c = sim.connect(&["t"], None, Some(published[0]));
    let got = sim.received(c);
    assert_eq!(got[0].event_type, "herald.reset");
    assert_eq!(got[0].last_event_id, published[1].to_string());
    // Cut off right after the notice: the browser comes back from the floor.
    sim.engine.handle_disconnect(c, sim.now);
    let back = sim.connect(&["t"], None, Some(published[1]));
    assert!(!sim.raw(back).contains("herald.reset"), "{}", sim.raw(back));
    assert_eq!(sim.received_ids(back), ids(&published[2..]));
    assert_eq!(sim.engine.counters().resets, 1);
}

#[test]
fn a_quiet_subscriptions_keep_alives_carry_the_commit_point_so_it_never_falls_behind() {
    let config = EngineConfig {
        keepalive: Duration::from_secs(15),
        tick: Duration::from_secs(1),
        ..EngineConfig::default()
    };
    let mut sim = Sim::new(config);
    let quiet = sim.connect(&["quiet"], None, None);
    let admin = {
        let mut req = ConnectRequest::new(vec![TopicPattern::admin()]);
        req.admin = true;
        let id = sim.engine.handle_connect(req, sim.now).unwrap();
        sim.drain();
        id
    };
    let others: Vec<EventId> = sim.publish_numbered("busy", 3);
    for _ in 0..15 {
        sim.advance(Duration::from_secs(1));
    }
    assert!(
        sim.raw(quiet)
            .ends_with(&format!(": keep-alive\nid: {}\n\n", others[2])),
        "{}",
        sim.raw(quiet)
    );
    assert!(
        sim.received(quiet).is_empty(),
        "a keep-alive is not a message"
    );
    assert!(
        !sim.raw(admin).contains("\nid: "),
        "admin streams have no resume point"
    );
    // Retention then removes everything the quiet client's stream started before.
    sim.trim_through(others[2]);
    let mut parser = Parser::new();
    for frame in &sim.frames[&quiet] {
        parser.feed(frame);
    }
    let from: EventId = parser.last_event_id().parse().unwrap();
    sim.engine.handle_disconnect(quiet, sim.now);
    let back = sim.connect(&["quiet"], None, Some(from));
    assert!(!sim.raw(back).contains("herald.reset"), "{}", sim.raw(back));
    let next = sim.publish_topic("quiet", "at last");
    assert_eq!(sim.received_ids(back), ids(&[next]));
}

#[test]
fn a_replaying_connection_gets_a_keep_alive_without_an_id() {
    let config = EngineConfig {
        keepalive: Duration::from_secs(15),
        tick: Duration::from_secs(1),
        recent_events: 1,
        ..EngineConfig::default()
    };
    let mut sim = Sim::new(config);
    let first = sim.publish_topic("t", "a");
    for i in 0..3 {
        sim.publish_topic("t", &i.to_string());
    }
    // The log is slow to answer: the replay is still waiting when the keep-alive is due.
    sim.auto_history = false;
    let c = sim.connect(&["t"], None, Some(first));
    for _ in 0..15 {
        sim.advance(Duration::from_secs(1));
    }
    assert!(sim.raw(c).ends_with(": keep-alive\n\n"), "{}", sim.raw(c));
    assert!(!sim.raw(c).contains("\nid: "), "{}", sim.raw(c));
}

#[test]
fn the_timer_never_asks_for_a_past_deadline_and_early_calls_are_harmless() {
    let mut sim = Sim::new(EngineConfig::default());
    sim.connect(&["t"], None, None);
    let deadline = sim.engine.poll_timeout().unwrap();
    sim.engine.handle_timeout(sim.now); // early
    assert_eq!(sim.engine.poll_timeout(), Some(deadline));
    sim.now += Duration::from_secs(10); // the driver was late
    sim.engine.handle_timeout(sim.now);
    assert!(sim.engine.poll_timeout().unwrap() > sim.now);
}

#[test]
fn a_connection_is_closed_when_its_token_expires() {
    let mut sim = Sim::new(EngineConfig::default());
    let mut req = ConnectRequest::new(vec![TopicPattern::parse("t").unwrap()]);
    req.expires_at = Some(sim.now + Duration::from_secs(5));
    let c = sim.engine.handle_connect(req, sim.now).unwrap();
    sim.drain();
    sim.advance(Duration::from_secs(4));
    assert!(sim.closed.is_empty());
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.closed, vec![(c, CloseReason::TokenExpired)]);
    assert!(!sim.engine.is_connected(c));
}

#[test]
fn limits_on_connections_and_topics_are_errors() {
    let mut sim = Sim::new(EngineConfig {
        max_connections: 1,
        max_topics_per_connection: 2,
        ..EngineConfig::default()
    });
    let many = ["a", "b", "c"]
        .iter()
        .map(|t| TopicPattern::parse(t).unwrap())
        .collect();
    assert_eq!(
        sim.engine
            .handle_connect(ConnectRequest::new(many), sim.now),
        Err(ConnectError::TooManyTopics { count: 3, limit: 2 })
    );
    let first = sim.connect(&["a"], None, None);
    assert_eq!(
        sim.engine
            .handle_connect(ConnectRequest::new(vec![]), sim.now),
        Err(ConnectError::TooManyConnections { limit: 1 })
    );
    assert_eq!(sim.engine.counters().refused, 2);
    // An operator still gets in, and takes no subscriber's place.
    let mut admin = ConnectRequest::new(vec![]);
    admin.admin = true;
    let admin = sim.engine.handle_connect(admin, sim.now).unwrap();
    // It is counted apart: the subscriber figures stay those the cap applies to.
    let counters = sim.engine.counters();
    assert_eq!((counters.connections, counters.connections_total), (1, 1));
    assert_eq!(counters.admin_streams, 1);
    let transports = sim.engine.stats(sim.now).transports.each();
    assert_eq!(transports.iter().map(|t| t.2).sum::<u64>(), 1);
    sim.engine.handle_disconnect(first, sim.now);
    sim.connect(&["a"], None, None);
    assert!(sim.engine.is_connected(admin));
    sim.engine.handle_disconnect(admin, sim.now);
    let counters = sim.engine.counters();
    assert_eq!((counters.connections, counters.admin_streams), (1, 0));
}

#[test]
fn one_user_may_hold_only_so_many_streams_and_gets_room_back_when_one_ends() {
    let mut sim = Sim::new(EngineConfig {
        max_connections_per_user: Some(2),
        ..EngineConfig::default()
    });
    let alice = |admin: bool| {
        let mut req = ConnectRequest::new(vec![TopicPattern::parse("t").unwrap()]);
        req.user = Some(UserId::new("alice").unwrap());
        req.admin = admin;
        req
    };
    let first = sim.connect(&["t"], Some("alice"), None);
    sim.connect(&[], Some("alice"), None);
    assert_eq!(
        sim.engine.handle_connect(alice(false), sim.now),
        Err(ConnectError::TooManyForUser {
            user: "alice".into(),
            limit: 2
        })
    );
    // Others, anonymous subscribers and alice's admin streams are not counted.
    sim.connect(&["t"], Some("bob"), None);
    sim.connect(&["t"], None, None);
    sim.connect(&["t"], None, None);
    assert!(sim.engine.handle_connect(alice(true), sim.now).is_ok());
    // A stream that ends makes room for another.
    sim.engine.handle_disconnect(first, sim.now);
    assert!(sim.engine.handle_connect(alice(false), sim.now).is_ok());
    assert!(sim.engine.handle_connect(alice(false), sim.now).is_err());
}

#[test]
fn admin_streams_see_connections_publishes_and_stats_but_no_user_events() {
    let mut sim = Sim::new(EngineConfig::default());
    let mut req = ConnectRequest::new(vec![]);
    req.admin = true;
    let admin = sim.engine.handle_connect(req, sim.now).unwrap();
    sim.drain();
    let user = sim.connect(&["t"], Some("alice"), None);
    sim.publish(
        Target {
            broadcast: true,
            ..topics(&["t"])
        },
        "hello",
    );
    sim.engine.handle_kick(user, sim.now);
    sim.drain();
    sim.advance(Duration::from_secs(1));
    let got = sim.received(admin);
    let kinds: Vec<&str> = got.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "connected",
            "connected",
            "published",
            "disconnected",
            "stats"
        ]
    );
    assert!(
        got.iter().all(|e| e.last_event_id.is_empty()),
        "admin events carry no id"
    );
    let published: serde_json::Value = serde_json::from_str(&got[2].data).unwrap();
    assert_eq!(published["preview"], "hello");
    assert_eq!(published["recipients"], 1);
    let gone: serde_json::Value = serde_json::from_str(&got[3].data).unwrap();
    assert_eq!(gone["reason"], "kicked");
    // Ordinary subscribers cannot name the admin topic at all.
    assert!(TopicPattern::parse("$herald/admin").is_err());
}

#[test]
fn the_stats_samples_carry_the_latency_the_driver_measured() {
    let mut sim = Sim::new(EngineConfig::default());
    let mut req = ConnectRequest::new(vec![]);
    req.admin = true;
    let admin = sim.engine.handle_connect(req, sim.now).unwrap();
    sim.drain();
    assert_eq!(sim.engine.stats(sim.now).latency, Latency::default());
    let latency = Latency {
        window_ms: 10_000,
        publish: Some(Quantiles {
            count: 12,
            p50_us: 1_700,
            p99_us: 4_000,
        }),
        delivery: None,
    };
    sim.engine.handle_latency(latency);
    assert_eq!(sim.engine.stats(sim.now).latency, latency);
    sim.advance(Duration::from_secs(1));
    let sample = sim
        .received(admin)
        .into_iter()
        .find(|e| e.event_type == "stats")
        .expect("a stats sample");
    let sample: serde_json::Value = serde_json::from_str(&sample.data).unwrap();
    assert_eq!(sample["latency"]["publish"]["p99_us"], 4_000, "{sample}");
    assert_eq!(sample["latency"]["delivery"], serde_json::Value::Null);
    // A sample from a server that did not measure it still reads.
    let mut old = sample;
    old.as_object_mut().unwrap().remove("latency");
    let old: Stats = serde_json::from_value(old).unwrap();
    assert_eq!(old.latency, Latency::default());
}

#[test]
fn connections_are_listed_by_user_and_topic_a_page_at_a_time() {
    let mut sim = Sim::new(EngineConfig::default());
    let a = sim.connect(&["orders/1"], Some("alice"), None);
    let b = sim.connect(&["orders/*"], Some("bob"), None);
    let c = sim.connect(&["*"], Some("alice"), None);
    let d = sim.connect(&["news"], Some("alice"), None);
    let e = sim.connect(&["orders/1"], None, None);
    let listed = |sim: &Sim, q: ConnectionQuery| -> Vec<ConnId> {
        let rows = sim.engine.connections(&q, sim.now);
        rows.iter().map(|r| r.id).collect()
    };
    let query = |user: Option<&str>, topic: Option<&str>| ConnectionQuery {
        user: user.map(|u| UserId::new(u).unwrap()),
        topic: topic.map(|t| Topic::new(t).unwrap()),
        ..ConnectionQuery::default()
    };
    assert_eq!(listed(&sim, query(None, None)), [a, b, c, d, e]);
    // A topic lists whom an event to it reaches: its own subscribers and the patterns'.
    assert_eq!(listed(&sim, query(None, Some("orders/1"))), [a, b, c, e]);
    assert_eq!(listed(&sim, query(None, Some("orders/2"))), [b, c]);
    assert_eq!(listed(&sim, query(None, Some("weather"))), [c]);
    assert_eq!(listed(&sim, query(Some("alice"), None)), [a, c, d]);
    assert_eq!(listed(&sim, query(Some("alice"), Some("orders/1"))), [a, c]);
    assert_eq!(listed(&sim, query(Some("carol"), None)), []);
    assert_eq!(listed(&sim, query(Some("carol"), Some("orders/1"))), []);
    // Pages follow the ids, with or without a filter, and a closed connection leaves them.
    let page = |user, topic, after, limit| ConnectionQuery {
        after,
        limit: Some(limit),
        ..query(user, topic)
    };
    assert_eq!(listed(&sim, page(None, None, None, 2)), [a, b]);
    assert_eq!(listed(&sim, page(None, None, Some(b), 2)), [c, d]);
    assert_eq!(listed(&sim, page(None, None, Some(d), 2)), [e]);
    assert_eq!(listed(&sim, page(None, None, Some(e), 2)), []);
    assert_eq!(
        listed(&sim, page(None, Some("orders/1"), Some(a), 2)),
        [b, c]
    );
    sim.engine.handle_disconnect(c, sim.now);
    assert_eq!(
        listed(&sim, page(None, Some("orders/1"), Some(a), 2)),
        [b, e]
    );
    assert_eq!(listed(&sim, page(Some("alice"), None, None, 5)), [a, d]);
    // The rows are the snapshot's.
    let all = sim.engine.connections(&ConnectionQuery::default(), sim.now);
    assert_eq!(all, sim.engine.snapshot(sim.now).connections);
    assert_eq!(all[0].topics, ["orders/1"]);
}

#[test]
fn the_snapshot_lists_connections_topics_and_counters() {
    let mut sim = Sim::new(EngineConfig::default());
    let a = sim.connect(&["orders", "news/*"], Some("alice"), None);
    let mut req = ConnectRequest::new(vec![TopicPattern::parse("orders").unwrap()]);
    req.remote = Some("10.0.0.7:40000".to_owned());
    req.protocol = Protocol::Http2;
    req.tls = true;
    let b = sim.engine.handle_connect(req, sim.now).unwrap();
    sim.drain();
    sim.publish_topic("orders", "x");
    sim.advance(Duration::from_secs(2));
    let snap = sim.engine.snapshot(sim.now);
    assert_eq!(snap.connections.len(), 2);
    let row = &snap.connections[0];
    assert_eq!(row.id, a);
    assert_eq!(row.user.as_deref(), Some("alice"));
    assert_eq!(row.topics, ["orders", "news/*"]);
    assert_eq!(row.events_sent, 1);
    assert_eq!(row.connected_ms, 2000);
    assert_eq!((row.protocol, row.tls), (Some(Protocol::Http1), false));
    // How the other one connected, as the admin API shows it.
    let row = serde_json::to_value(&snap.connections[1]).unwrap();
    assert_eq!(row["id"], serde_json::json!(b));
    assert_eq!(row["remote"], "10.0.0.7:40000");
    assert_eq!(row["protocol"], "HTTP/2");
    assert_eq!(row["tls"], true);
    // A row from a server that did not report them yet still reads.
    let mut old = row.as_object().unwrap().clone();
    old.remove("protocol");
    old.remove("tls");
    old.remove("queued_ms");
    let old: ConnectionInfo = serde_json::from_value(old.into()).unwrap();
    assert_eq!((old.protocol, old.tls, old.queued_ms), (None, false, 0));
    let topics: Vec<(String, u64, u64)> = snap
        .topics
        .iter()
        .map(|t| (t.topic.clone(), t.subscribers, t.events))
        .collect();
    assert_eq!(
        topics,
        [("news/*".to_owned(), 1, 0), ("orders".to_owned(), 2, 1)]
    );
    assert_eq!(snap.stats.counters.delivered, 2);
    assert_eq!(snap.stats.counters.connections, 2);
    // The same two, counted by how they came; a closed one is no longer counted.
    let by_transport = |sim: &Sim| {
        let t = sim.engine.stats(sim.now).transports;
        (t.http1, t.http1_tls, t.http2, t.http2_tls)
    };
    assert_eq!(by_transport(&sim), (1, 0, 0, 1));
    sim.engine.handle_disconnect(b, sim.now);
    sim.drain();
    assert_eq!(by_transport(&sim), (1, 0, 0, 0));
    // A sample from a server that did not report them yet still reads.
    let mut old = serde_json::to_value(sim.engine.stats(sim.now)).unwrap();
    old.as_object_mut().unwrap().remove("transports");
    let old: Stats = serde_json::from_value(old).unwrap();
    assert_eq!(old.transports, Transports::default());
}

#[test]
fn shutdown_closes_every_connection() {
    let mut sim = Sim::new(EngineConfig::default());
    let a = sim.connect(&["t"], None, None);
    let b = sim.connect(&["u"], None, None);
    sim.engine.handle_shutdown(sim.now);
    sim.drain();
    assert_eq!(
        sim.closed,
        vec![(a, CloseReason::Shutdown), (b, CloseReason::Shutdown)]
    );
    assert_eq!(sim.engine.counters().connections, 0);
}

#[test]
fn event_types_and_multiline_data_arrive_as_sent() {
    let mut sim = Sim::new(EngineConfig::default());
    let c = sim.connect(&["t"], None, None);
    let mut req = PublishRequest::new(topics(&["t"]), "line 1\r\nline 2\rline 3");
    req.event_type = Some(EventType::new("order.updated").unwrap());
    sim.engine.handle_publish(req, 1, sim.now).unwrap();
    sim.drain();
    let got = sim.received(c);
    assert_eq!(got[0].event_type, "order.updated");
    assert_eq!(got[0].data, "line 1\nline 2\nline 3");
}

/// Events as a shared log (cluster mode) hands them back, with ids it assigned.
fn replicated(ids_and_topics: &[(u64, &str)]) -> Vec<Event> {
    ids_and_topics
        .iter()
        .map(|&(ms, topic)| Event {
            id: EventId::new(ms, 0),
            target: topics(&[topic]),
            event_type: None,
            data: format!("at {ms}"),
        })
        .collect()
}

#[test]
fn replicated_events_are_delivered_once_in_log_order() {
    let mut sim = Sim::new(EngineConfig::default());
    let a = sim.connect(&["t"], None, None);
    let b = sim.connect(&["u"], None, None);
    let events = replicated(&[(10, "t"), (11, "u"), (12, "t")]);
    sim.engine.handle_replicated(events.clone(), sim.now);
    sim.drain();
    // A reader that reconnects to the log reads some of them again: nothing is sent twice.
    sim.engine
        .handle_replicated(events[1..].iter().cloned(), sim.now);
    sim.drain();
    assert_eq!(sim.received_ids(a), ["10-0", "12-0"]);
    assert_eq!(sim.received_ids(b), ["11-0"]);
    assert_eq!(sim.engine.committed_id(), Some(EventId::new(12, 0)));
    assert_eq!(sim.engine.last_id(), Some(EventId::new(12, 0)));
    assert_eq!(sim.engine.counters().committed, 3);
    assert!(
        sim.appended.is_empty(),
        "a shared log's events are not appended again"
    );
}

#[test]
fn a_client_resuming_on_another_server_gets_what_it_missed_from_the_shared_log() {
    let mut sim = Sim::new(EngineConfig::default());
    let events = replicated(&[(10, "t"), (11, "t"), (12, "t")]);
    sim.log.extend(events.iter().cloned());
    sim.engine.handle_replicated(events, sim.now);
    sim.drain();
    // The client saw 10-0 through another server; this one replays the rest.
    let c = sim.connect(&["t"], None, Some(EventId::new(10, 0)));
    sim.engine
        .handle_replicated(replicated(&[(13, "t")]), sim.now);
    sim.drain();
    assert_eq!(sim.received_ids(c), ["11-0", "12-0", "13-0"]);
}

#[test]
fn a_shared_publish_is_checked_and_counted_but_gets_no_id_here() {
    let mut sim = Sim::new(EngineConfig::default());
    assert_eq!(
        sim.engine
            .handle_shared_publish(&PublishRequest::new(Target::default(), "x")),
        Err(PublishError::NoTarget)
    );
    let mut req = PublishRequest::new(topics(&["t"]), "x");
    req.idempotency_key = Some(String::new());
    assert_eq!(
        sim.engine.handle_shared_publish(&req),
        Err(PublishError::BadIdempotencyKey)
    );
    req.idempotency_key = Some("k".into());
    assert_eq!(sim.engine.handle_shared_publish(&req), Ok(()));
    sim.drain();
    assert!(sim.appended.is_empty());
    assert_eq!(sim.engine.counters().published, 1);
    assert_eq!(sim.engine.last_id(), None);
}

#[test]
fn a_resume_from_an_id_this_server_never_read_is_decided_by_the_shared_log_not_its_window() {
    // Redis came back without 11-0 and 12-0, which another server had read and delivered.
    // This one had read 10-0, then 20-0 after the loss: its window seems to cover 11-0.
    let mut sim = Sim::new(EngineConfig::default());
    let events = replicated(&[(10, "t"), (20, "t")]);
    sim.log.extend(events[1..].iter().cloned());
    sim.engine.handle_replicated(events, sim.now);
    sim.drain();
    sim.auto_history = false;
    // A position it read is served from the window, as always.
    let known = sim.connect(&["t"], None, Some(EventId::new(10, 0)));
    assert!(sim.history_requests.is_empty());
    assert_eq!(sim.received_ids(known), ["20-0"]);

    let c = sim.connect(&["t"], None, Some(EventId::new(11, 0)));
    assert_eq!(sim.history_requests.len(), 1, "the log is asked");
    assert!(sim.received_ids(c).is_empty());
    // The page comes with the log's bounds, whose floor the other server raised to 12-0.
    sim.engine.handle_log_bounds(LogBounds {
        oldest: Some(EventId::new(20, 0)),
        floor: Some(EventId::new(12, 0)),
        events: 1,
        bytes: 0,
    });
    sim.serve_history();
    sim.drain();
    let got = sim.received(c);
    let types: Vec<&str> = got.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["herald.reset", "message"], "{}", sim.raw(c));
    assert_eq!(got[1].last_event_id, "20-0");
}

#[test]
fn a_gap_in_the_shared_log_closes_subscribers_and_their_resume_says_what_they_missed() {
    let mut sim = Sim::new(EngineConfig::default());
    sim.engine
        .handle_replicated(replicated(&[(10, "t")]), sim.now);
    sim.drain();
    let c = sim.connect(&["t"], None, None);
    let mut admin = ConnectRequest::new(Vec::new());
    admin.admin = true;
    let admin = sim.engine.handle_connect(admin, sim.now).unwrap();
    sim.drain();
    // While this server was cut off, 11-0..13-0 were published and trimmed away by others.
    sim.engine.handle_log_gap(sim.now);
    sim.drain();
    assert_eq!(sim.closed, vec![(c, CloseReason::LogGap)]);
    assert!(sim.engine.is_connected(admin), "admin streams stay open");

    let retained = replicated(&[(14, "t")]);
    sim.log.extend(retained.iter().cloned());
    sim.engine.handle_log_bounds(LogBounds {
        oldest: Some(EventId::new(14, 0)),
        floor: Some(EventId::new(13, 0)),
        events: 1,
        bytes: 0,
    });
    sim.engine.handle_replicated(retained, sim.now);
    sim.drain();
    let again = sim.connect(&["t"], None, Some(EventId::new(10, 0)));
    let got = sim.received(again);
    let types: Vec<&str> = got.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["herald.reset", "message"], "{}", sim.raw(again));
    assert_eq!(got[1].last_event_id, "14-0");
}
