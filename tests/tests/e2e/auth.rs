//! Auth: HS256 tokens from a header, the query or a cookie; 401 and 403 with reasons; a
//! stream ends when its token expires.

use std::time::Duration;

use herald_tests::{
    Herald, WAIT, assert_keys_are_the_publishers_own, mint_token, sign_jwt, unix_now,
};
use http::{Method, StatusCode};
use serde_json::json;

const SECRET: &str = "e2e-secret";

fn server() -> Herald {
    Herald::start(&["--jwt-secret", SECRET])
}

fn alice() -> String {
    crate::alice_token(SECRET)
}

fn publisher() -> String {
    mint_token(SECRET, &["--sub", "backend", "--publish"])
}

#[tokio::test]
async fn a_subscriber_without_a_token_is_refused_with_401_json() {
    let herald = server();
    let sub = herald.events().topic("orders").connect().await;
    assert_eq!(sub.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sub.header("content-type"), Some("application/json"));
    assert!(
        sub.error().contains("missing credentials"),
        "{}",
        sub.error()
    );

    // Naming oneself in the query is a --dev convenience only.
    let sub = herald.events().query("user", "alice").connect().await;
    assert_eq!(sub.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = herald
        .publish(json!({"topics": ["orders"], "data": "x"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // One without the right, over HTTP/2 this time.
    let sub = herald
        .events()
        .http2()
        .topic("payroll")
        .query("token", &alice())
        .connect()
        .await;
    assert_eq!(sub.status(), StatusCode::FORBIDDEN);
    // Operators see them: a secret that differs from the publishers' would show here.
    let metrics = herald.call(Method::GET, "/metrics").send().await.text();
    for line in ["herald_unauthorized_total 3", "herald_forbidden_total 1"] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn a_forged_token_is_refused_with_401() {
    let herald = server();
    let forged = mint_token(
        "not-the-server-secret",
        &["--sub", "mallory", "--subscribe", "orders", "--admin"],
    );
    let sub = herald
        .events()
        .topic("orders")
        .token(&forged)
        .connect()
        .await;
    assert_eq!(sub.status(), StatusCode::UNAUTHORIZED);
    assert!(sub.error().contains("signature"), "{}", sub.error());

    let unsigned = format!("{}.", forged.rsplit_once('.').expect("three parts").0);
    let sub = herald
        .events()
        .topic("orders")
        .token(&unsigned)
        .connect()
        .await;
    assert_eq!(sub.status(), StatusCode::UNAUTHORIZED, "{}", sub.raw_text());

    let sub = herald
        .events()
        .topic("orders")
        .token("not a token")
        .connect()
        .await;
    assert_eq!(sub.status(), StatusCode::UNAUTHORIZED);
    assert!(sub.error().contains("malformed"), "{}", sub.error());

    let reply = herald
        .call(Method::GET, "/admin/connections")
        .bearer(&forged)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_token_is_refused_with_401_saying_it_expired() {
    let herald = server();
    let expired = sign_jwt(
        SECRET,
        &json!({"sub": "alice", "exp": unix_now() - 60, "herald": {"subscribe": ["orders"], "publish": true}}),
    );
    let sub = herald
        .events()
        .topic("orders")
        .token(&expired)
        .connect()
        .await;
    assert_eq!(sub.status(), StatusCode::UNAUTHORIZED);
    assert!(sub.error().contains("expired"), "{}", sub.error());
    let (status, answer) = herald
        .publish_as(&expired, json!({"topics": ["orders"], "data": "x"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{answer}"
    );
}

#[tokio::test]
async fn subscribing_to_a_topic_outside_the_grant_is_403_naming_the_topic() {
    let herald = server();
    let token = alice();
    let sub = herald
        .events()
        .token(&token)
        .topic("orders")
        .topic("payroll")
        .connect()
        .await;
    assert_eq!(sub.status(), StatusCode::FORBIDDEN);
    assert_eq!(sub.header("content-type"), Some("application/json"));
    assert!(sub.error().contains("payroll"), "{}", sub.error());

    // A pattern wider than the grant is outside it too.
    let sub = herald.events().token(&token).topic("*").connect().await;
    assert_eq!(sub.status(), StatusCode::FORBIDDEN, "{}", sub.raw_text());
    // Narrower than the grant is fine.
    herald
        .events()
        .token(&token)
        .topic("news/eu/*")
        .open()
        .await;

    // No admin rights: no admin stream, no admin API.
    let sub = herald.admin_events().token(&token).connect().await;
    assert_eq!(sub.status(), StatusCode::FORBIDDEN);
    let reply = herald
        .call(Method::GET, "/admin/connections")
        .bearer(&token)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn publishing_without_the_right_to_is_403() {
    let herald = server();
    let (status, answer) = herald
        .publish_as(&alice(), json!({"topics": ["orders"], "data": "x"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(answer["error"].is_string(), "{answer}");

    let orders_only = mint_token(SECRET, &["--sub", "shop", "--publish-topic", "orders"]);
    let (status, answer) = herald
        .publish_as(&orders_only, json!({"topics": ["orders"], "data": "ok"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = herald
        .publish_as(
            &orders_only,
            json!({"topics": ["orders", "payroll"], "data": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("payroll"),
        "{answer}"
    );
    let (status, _) = herald
        .publish_as(&orders_only, json!({"broadcast": true, "data": "x"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = herald
        .publish_as(&orders_only, json!({"users": ["alice"], "data": "x"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_token_expiring_past_the_clocks_range_streams_and_the_schemes_case_does_not_matter() {
    let herald = server();
    // An `exp` later than the server's clock can count to: a stream that never expires,
    // not a dropped connection.
    let forever = sign_jwt(
        SECRET,
        &json!({"sub": "alice", "exp": u64::MAX, "herald": {"subscribe": ["orders"]}}),
    );
    let mut sub = herald
        .events()
        .topic("orders")
        .header("authorization", &format!("BEARER {forever}"))
        .open()
        .await;
    let (status, answer) = herald
        .publish_as(&publisher(), json!({"topics": ["orders"], "data": "hello"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let event = sub.next_event(WAIT).await.expect("the event");
    assert_eq!(event.data, "hello");
}

#[tokio::test]
async fn in_dev_mode_a_stray_token_does_not_hide_the_user_named_in_the_query() {
    let herald = Herald::start(&["--dev"]);
    // A cookie left over from a production deployment on the same host.
    let mut sub = herald
        .events()
        .topic("orders")
        .query("user", "zed")
        .header("cookie", "herald_token=stale")
        .open()
        .await;
    herald
        .publish_ok(json!({"users": ["zed"], "data": "hi zed"}))
        .await;
    let event = sub.next_event(WAIT).await.expect("zed's event");
    assert_eq!(event.data, "hi zed");
}

#[tokio::test]
async fn a_token_in_the_query_or_the_herald_token_cookie_works_like_a_bearer_token() {
    let herald = server();
    let token = alice();
    let mut by_query = herald
        .events()
        .topic("orders")
        .query("token", &token)
        .open()
        .await;
    let mut by_cookie = herald
        .events()
        .topic("orders")
        .header("cookie", &format!("theme=dark; herald_token={token}"))
        .open()
        .await;
    // A cookie value in quotes (RFC 6265 allows them), beside a page's empty `?token=`.
    let mut by_quoted_cookie = herald
        .events()
        .topic("orders")
        .query("token", "")
        .header("cookie", &format!("herald_token=\"{token}\""))
        .open()
        .await;
    // A token whose dates have fractions, as RFC 7519 allows.
    let fractional = sign_jwt(
        SECRET,
        &json!({"sub": "alice", "exp": unix_now() as f64 + 600.5, "nbf": unix_now() as f64 - 0.5,
                "herald": {"subscribe": ["orders"]}}),
    );
    let mut by_fractional = herald
        .events()
        .topic("orders")
        .token(&fractional)
        .open()
        .await;
    // Identity comes from the token: the user's own events arrive on all of them.
    let (status, answer) = herald
        .publish_as(&publisher(), json!({"users": ["alice"], "data": "hello"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    for sub in [
        &mut by_query,
        &mut by_cookie,
        &mut by_quoted_cookie,
        &mut by_fractional,
    ] {
        let event = sub.next_event(WAIT).await.expect("alice's event");
        assert_eq!(event.data, "hello");
    }
}

#[tokio::test]
async fn a_token_in_the_query_beats_a_stale_cookie() {
    let herald = server();
    let expired = sign_jwt(
        SECRET,
        &json!({"sub": "alice", "exp": unix_now() - 60, "herald": {"subscribe": ["orders"]}}),
    );
    // A page cannot remove an HttpOnly cookie; the token it names must be the one used.
    let mut sub = herald
        .events()
        .topic("orders")
        .query("token", &alice())
        .header("cookie", &format!("herald_token={expired}"))
        .open()
        .await;
    let (status, _) = herald
        .publish_as(&publisher(), json!({"topics": ["orders"], "data": "fresh"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sub.next_event(WAIT).await.expect("an event").data, "fresh");
}

#[tokio::test]
async fn a_publish_carried_by_the_cookie_is_refused_from_a_page_of_another_origin() {
    let allowed = "https://app.example.test";
    let herald = Herald::start(&["--jwt-secret", SECRET, "--cors-origin", allowed]);
    let own = format!("http://{}", herald.addr());
    let cookie = format!("herald_token={}", publisher());
    let publish = |origin: Option<&str>, data: &str| {
        // What a form or a no-cors fetch from that page makes the browser send.
        let body = json!({"topics": ["chat"], "data": data});
        let mut call = herald
            .call(Method::POST, "/publish")
            .header("cookie", &cookie)
            .raw_body("text/plain", body.to_string().into_bytes());
        if let Some(origin) = origin {
            call = call.header("origin", origin);
        }
        call.send()
    };
    for evil in ["http://127.0.0.1:1", "https://evil.example.test", "null"] {
        let reply = publish(Some(evil), "forged").await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{evil}: {}",
            reply.text()
        );
        assert!(reply.error().contains("--cors-origin"), "{}", reply.text());
    }
    // The same token as a header is the page's own doing, not the browser's.
    let by_header = herald
        .call(Method::POST, "/publish")
        .bearer(&publisher())
        .header("origin", "https://evil.example.test")
        .json(&json!({"topics": ["chat"], "data": "by header"}))
        .send()
        .await;
    assert_eq!(by_header.status, StatusCode::OK, "{}", by_header.text());
    for (origin, data) in [
        (Some(own.as_str()), "own page"),
        (Some(allowed), "allowed page"),
        (None, "no page"),
    ] {
        let reply = publish(origin, data).await;
        assert_eq!(reply.status, StatusCode::OK, "{origin:?}: {}", reply.text());
    }
    let admin = mint_token(SECRET, &["--sub", "ops", "--admin"]);
    let stats = herald
        .call(Method::GET, "/admin/stats")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(
        stats.json()["stats"]["counters"]["published"],
        4,
        "{}",
        stats.text()
    );
}

#[tokio::test]
async fn a_user_named_in_the_query_is_ignored_when_a_token_says_who_you_are() {
    let herald = server();
    let mut sub = herald
        .events()
        .token(&alice())
        .query("user", "bob")
        .open()
        .await;
    let p = publisher();
    let (status, _) = herald
        .publish_as(&p, json!({"users": ["bob"], "data": "bob's secret"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = herald
        .publish_as(&p, json!({"users": ["alice"], "data": "alice's"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let event = sub.next_event(WAIT).await.expect("an event");
    assert_eq!(event.data, "alice's");
}

#[tokio::test]
async fn a_stream_is_closed_when_its_token_expires() {
    let herald = server();
    let long = alice();
    let publisher = publisher();
    let short = mint_token(
        SECRET,
        &["--sub", "alice", "--subscribe", "orders", "--ttl", "3s"],
    );
    let mut expiring = herald.events().token(&short).topic("orders").open().await;
    let mut lasting = herald.events().token(&long).topic("orders").open().await;

    let (status, _) = herald
        .publish_as(&publisher, json!({"topics": ["orders"], "data": "before"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let event = expiring
        .next_event(WAIT)
        .await
        .expect("an event before expiry");
    assert_eq!(event.data, "before");

    let end = expiring.wait_end(Duration::from_secs(8)).await;
    assert_eq!(
        end,
        Some(herald_tests::End::Clean),
        "{}",
        expiring.raw_text()
    );
    // It is told to come back (with a fresh token) rather than left to time out.
    assert!(
        expiring.raw_text().ends_with("\n\n") && expiring.raw_text().contains("data: before"),
        "{:?}",
        expiring.raw_text()
    );
    let tail = expiring
        .raw_text()
        .rsplit_once("data: before\n\n")
        .map(|(_, t)| t.to_owned())
        .unwrap_or_default();
    assert!(
        tail.starts_with("retry: ")
            && tail.ends_with("event: herald.closed\ndata: {\"reason\":\"token_expired\"}\n\n"),
        "the stream ends with a retry and says why: {tail:?}"
    );

    // The token is now refused outright, and the long-lived stream is still open.
    let again = herald
        .events()
        .token(&short)
        .topic("orders")
        .connect()
        .await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = herald
        .publish_as(&publisher, json!({"topics": ["orders"], "data": "after"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = lasting.events_until(2, WAIT).await;
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["before", "after"]);
}

#[test]
fn herald_token_refuses_what_would_be_no_token_or_one_the_server_refuses() {
    let token = |args: &[&str]| {
        let mut cmd = std::process::Command::new(herald_tests::herald_bin());
        cmd.arg("token").args(args).env("RUST_BACKTRACE", "0");
        herald_tests::clear_herald_env(&mut cmd);
        herald_tests::run_bounded(&mut cmd, WAIT)
    };
    // Expired on issue: `exp` is in whole seconds.
    let out = token(&["--jwt-secret", SECRET, "--sub", "a", "--ttl", "500ms"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--ttl must be at least 1s"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Signed with nothing.
    let out = token(&["--jwt-secret", "", "--sub", "a"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no JWT secret"), "{stderr}");
    // A user id the server would refuse on every request.
    let long = "u".repeat(201);
    for sub in ["a\nb", long.as_str()] {
        let out = token(&["--jwt-secret", SECRET, "--sub", sub]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("invalid --sub"), "{stderr}");
    }

    // A fraction of a second is rounded up, never down.
    let before = unix_now();
    let minted = mint_token(SECRET, &["--sub", "a", "--ttl", "1500ms"]);
    let payload = minted.split('.').nth(1).expect("a JWT has three parts");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .expect("base64url"),
    )
    .expect("JSON claims");
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(
        (before + 2..=unix_now() + 2).contains(&exp),
        "exp {exp}, issued at {before}"
    );
}

#[tokio::test]
async fn an_idempotency_key_is_its_publishers_own() {
    let herald = server();
    assert_keys_are_the_publishers_own(&herald, &herald, SECRET).await;
}

#[tokio::test]
async fn a_short_secret_is_warned_about_at_start() {
    let herald = Herald::start(&["--jwt-secret", "short"]);
    let warned = herald_tests::eventually(WAIT, || async {
        herald.stderr().contains("the JWT secret is 5 bytes")
    })
    .await;
    assert!(warned, "{}", herald.stderr());
    let long = "k".repeat(32);
    let fine = Herald::start(&["--jwt-secret", &long]);
    fine.call(Method::GET, "/healthz").send().await;
    assert!(
        !fine.stderr().contains("JWT secret is"),
        "{}",
        fine.stderr()
    );
}
