//! Auth: tokens (HS256 with a secret, or signed with a private key) from a header, the query
//! or a cookie; 401 and 403 with reasons; a stream ends when its token expires.

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

/// `herald token <args>`, with no `HERALD_*` settings from the environment.
fn herald_token(args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(herald_tests::herald_bin());
    cmd.arg("token").args(args).env("RUST_BACKTRACE", "0");
    herald_tests::clear_herald_env(&mut cmd);
    herald_tests::run_bounded(&mut cmd, WAIT)
}

#[test]
fn herald_token_refuses_what_would_be_no_token_or_one_the_server_refuses() {
    let token = herald_token;
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
    herald.assert_logs("a JWT secret is 5 bytes").await;
    let long = "k".repeat(32);
    let fine = Herald::start(&["--jwt-secret", &long]);
    fine.call(Method::GET, "/healthz").send().await;
    assert!(
        !fine.stderr().contains("JWT secret is"),
        "{}",
        fine.stderr()
    );
}

#[tokio::test]
async fn a_rotated_secrets_tokens_are_accepted_beside_the_new_ones() {
    let (new, old) = (
        "new-secret-0123456789abcdef012345",
        "old-secret-0123456789abcdef012345",
    );
    let herald = Herald::start(&["--jwt-secret", new, "--jwt-previous-secret", old]);
    let mut on_old = herald
        .events()
        .topic("orders")
        .token(&crate::alice_token(old))
        .open()
        .await;
    let mut on_new = herald
        .events()
        .topic("orders")
        .token(&crate::alice_token(new))
        .open()
        .await;
    let publisher = mint_token(new, &["--sub", "backend", "--publish"]);
    let (status, body) = herald
        .publish_as(&publisher, json!({"topics": ["orders"], "data": "x"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["id"].as_str().expect("an id");
    on_old.expect_event_id(id).await;
    on_new.expect_event_id(id).await;
    // A secret the server was not given is not one of them.
    let sub = herald
        .events()
        .topic("orders")
        .token(&crate::alice_token("a-third-secret-0123456789abcdef0"))
        .connect()
        .await;
    assert_eq!(sub.status(), StatusCode::UNAUTHORIZED);
    assert!(sub.error().contains("signature"), "{}", sub.error());
}

/// `openssl` in `dir`, for key files; what it printed.
fn openssl(dir: &std::path::Path, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(args).current_dir(dir);
    let out = herald_tests::run_bounded(&mut cmd, WAIT);
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new private key of `kind` in `dir/name`, as `openssl genpkey` writes it (PKCS#8).
fn new_private_key(dir: &std::path::Path, name: &str, kind: KeyKind) {
    let algorithm: &[&str] = match kind {
        KeyKind::Rsa => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        KeyKind::P256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        KeyKind::Ed25519 => &["-algorithm", "ed25519"],
    };
    let mut args = vec!["genpkey"];
    args.extend(algorithm);
    args.extend(["-out", name]);
    openssl(dir, &args);
}

#[derive(Clone, Copy)]
enum KeyKind {
    Rsa,
    P256,
    Ed25519,
}

/// `herald token --private-key <key> <args>`.
fn sign_with(key: &std::path::Path, args: &[&str]) -> String {
    let key_path = key.to_str().expect("a UTF-8 path");
    let mut all = vec!["--private-key", key_path];
    all.extend(args);
    let out = herald_token(&all);
    assert!(
        out.status.success(),
        "herald token --private-key {key:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Alice's token, allowed to subscribe to `orders`, signed with the private key `dir/key`
/// and naming its key id `kid` (as a key set lists it).
fn alice_signed_with(dir: &std::path::Path, key: &str, kid: &str) -> String {
    sign_with(
        &dir.join(key),
        &["--sub", "alice", "--subscribe", "orders", "--kid", kid],
    )
}

#[tokio::test]
async fn tokens_an_identity_provider_signs_are_checked_with_its_public_keys() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = |name: &str| dir.path().join(name);
    // Keys as `openssl` writes them: RSA, P-256 and Ed25519 private keys (PKCS#8) with their
    // public halves, and a certificate, whose key checks tokens too.
    for (name, kind) in [
        ("rsa", KeyKind::Rsa),
        ("p256", KeyKind::P256),
        ("ed25519", KeyKind::Ed25519),
    ] {
        let private = format!("{name}.pem");
        let public = format!("{name}-public.pem");
        new_private_key(dir.path(), &private, kind);
        openssl(
            dir.path(),
            &["pkey", "-in", &private, "-pubout", "-out", &public],
        );
    }
    let (cert, cert_key) = herald_tests::self_signed_cert(dir.path(), "idp", "DNS:idp");
    let keys = format!(
        "{},{}",
        path("rsa-public.pem").display(),
        path("p256-public.pem").display()
    );
    let ed25519 = path("ed25519-public.pem");
    let herald = Herald::start(&[
        "--jwt-public-key",
        &keys,
        "--jwt-public-key",
        ed25519.to_str().expect("a UTF-8 path"),
        "--jwt-public-key",
        cert.to_str().expect("a UTF-8 path"),
    ]);
    let mut subscribers = Vec::new();
    for (key, alg) in [
        (path("rsa.pem"), "RS256"),
        (path("p256.pem"), "ES256"),
        (path("ed25519.pem"), "EdDSA"),
        (cert_key.clone(), "RS256"),
    ] {
        let token = sign_with(&key, &["--sub", "alice", "--subscribe", "orders"]);
        let header = token.split('.').next().expect("a header");
        let header =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .expect("base64url");
        assert!(
            String::from_utf8_lossy(&header).contains(&format!("\"alg\":\"{alg}\"")),
            "{key:?}: {}",
            String::from_utf8_lossy(&header)
        );
        subscribers.push(herald.events().topic("orders").token(&token).open().await);
    }
    let publisher = sign_with(&path("p256.pem"), &["--sub", "backend", "--publish"]);
    let (status, body) = herald
        .publish_as(&publisher, json!({"topics": ["orders"], "data": "x"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["id"].as_str().expect("an id");
    for sub in &mut subscribers {
        sub.expect_event_id(id).await;
    }
    // Such a server has no secret: a token signed with one names the algorithms it checks.
    let sub = herald
        .events()
        .topic("orders")
        .token(&alice())
        .connect()
        .await;
    assert_eq!(sub.status(), StatusCode::UNAUTHORIZED);
    assert!(
        sub.error().contains(
            "\"HS256\" (this server checks RS256, RS384, RS512, PS256, PS384, PS512, ES256, EdDSA)"
        ),
        "{}",
        sub.error()
    );
    // A key of the right kind, but not one the server was given.
    new_private_key(dir.path(), "other.pem", KeyKind::P256);
    let stranger = sign_with(
        &path("other.pem"),
        &["--sub", "alice", "--subscribe", "orders"],
    );
    let sub = herald
        .events()
        .topic("orders")
        .token(&stranger)
        .connect()
        .await;
    assert_eq!(sub.status(), StatusCode::UNAUTHORIZED);
    assert!(sub.error().contains("signature"), "{}", sub.error());
    assert!(
        herald.stderr().contains(
            "checking tokens signed with RS256, RS384, RS512, PS256, PS384, PS512, ES256, EdDSA"
        ),
        "{}",
        herald.stderr()
    );

    // A key file that cannot be used stops the start, saying why.
    let without_dev = |key: &str| {
        let key = path(key);
        herald_tests::serve_refused(&["--jwt-public-key", key.to_str().expect("a UTF-8 path")])
    };
    let stderr = without_dev("rsa.pem");
    assert!(stderr.contains("holds a private key"), "{stderr}");
    let stderr = without_dev("nothing-here.pem");
    assert!(stderr.contains("cannot read"), "{stderr}");
    // And `herald token` says what it cannot sign with.
    let public = path("rsa-public.pem");
    let out = herald_token(&[
        "--sub",
        "a",
        "--private-key",
        public.to_str().expect("a UTF-8 path"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("expected a PEM `PRIVATE KEY`"), "{stderr}");
}

/// The public half of the key in `dir/private`, as a JWK named `kid`: an EC P-256 or an RSA
/// key, read back from `openssl`.
fn jwk(dir: &std::path::Path, private: &str, kid: &str) -> serde_json::Value {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let public = format!("{private}.der");
    openssl(
        dir,
        &[
            "pkey", "-in", private, "-pubout", "-outform", "DER", "-out", &public,
        ],
    );
    let der = std::fs::read(dir.join(&public)).expect("the public key");
    if private.starts_with("rsa") {
        let text = openssl(dir, &["rsa", "-noout", "-modulus", "-in", private]);
        let hex = text.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&n), "e": "AQAB"})
    } else {
        // A P-256 key's DER ends with its point: 4, then x and y of 32 bytes each.
        let point = &der[der.len() - 64..];
        json!({"kty": "EC", "crv": "P-256", "kid": kid,
               "x": b64(&point[..32]), "y": b64(&point[32..])})
    }
}

/// Serves whatever `document` holds at the time to every request, as JSON; returns the URL.
async fn serve_json(
    document: std::sync::Arc<std::sync::Mutex<serde_json::Value>>,
) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().expect("an address")
    );
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let body = document.lock().expect("the document").to_string();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, task)
}

// Two threads: the key set's server answers while `Herald::start` blocks one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_providers_key_set_is_read_from_its_url_and_read_again() {
    let dir = tempfile::tempdir().expect("a temp dir");
    for (name, kind) in [
        ("one.pem", KeyKind::P256),
        ("two.pem", KeyKind::P256),
        ("rsa.pem", KeyKind::Rsa),
    ] {
        new_private_key(dir.path(), name, kind);
    }
    let (one, two, rsa) = (
        jwk(dir.path(), "one.pem", "one"),
        jwk(dir.path(), "two.pem", "two"),
        jwk(dir.path(), "rsa.pem", "r"),
    );
    let document = std::sync::Arc::new(std::sync::Mutex::new(json!({"keys": [one.clone(), rsa]})));
    let (url, provider) = serve_json(document.clone()).await;
    let herald = Herald::start(&["--jwt-jwks", &url, "--jwt-jwks-refresh", "1s"]);
    let token = |key: &str, kid: &str| alice_signed_with(dir.path(), key, kid);
    let status = |token: String| {
        let herald = &herald;
        async move {
            herald
                .events()
                .topic("orders")
                .token(&token)
                .connect()
                .await
                .status()
        }
    };
    assert_eq!(status(token("one.pem", "one")).await, StatusCode::OK);
    assert_eq!(status(token("rsa.pem", "r")).await, StatusCode::OK);
    let sub = herald
        .events()
        .topic("orders")
        .token(&token("two.pem", "two"))
        .connect()
        .await;
    assert_eq!(sub.status(), StatusCode::UNAUTHORIZED);
    assert!(
        sub.error().contains("key id \"two\" is not one of"),
        "{}",
        sub.error()
    );
    // The provider adds a key and drops another: the server follows within a refresh.
    *document.lock().expect("the document") = json!({"keys": [one, two]});
    let two_taken = herald_tests::eventually(WAIT, || async {
        status(token("two.pem", "two")).await == StatusCode::OK
    })
    .await;
    assert!(two_taken, "{}", herald.stderr());
    assert_eq!(
        status(token("rsa.pem", "r")).await,
        StatusCode::UNAUTHORIZED
    );
    // The provider is down for a while: the keys read last stay in use.
    provider.abort();
    herald.assert_logs("cannot read the JWKS").await;
    assert_eq!(status(token("two.pem", "two")).await, StatusCode::OK);

    // A key set the server cannot read at start stops it, saying why.
    let stderr = herald_tests::serve_refused(&["--jwt-jwks", &url]);
    assert!(
        stderr.contains("--jwt-jwks: cannot read the JWKS http://"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_token_must_name_the_issuer_and_audience_the_server_expects() {
    let herald = Herald::start(&[
        "--jwt-secret",
        SECRET,
        "--jwt-issuer",
        "https://idp.example/",
        "--jwt-audience",
        "herald",
    ]);
    let token = |extra: &[&str]| {
        let mut args = vec!["--sub", "alice", "--subscribe", "orders"];
        args.extend(extra);
        mint_token(SECRET, &args)
    };
    let named = token(&["--iss", "https://idp.example/", "--aud", "herald"]);
    herald.events().topic("orders").token(&named).open().await;
    for (token, why) in [
        (token(&["--aud", "herald"]), "issuer"),
        (
            token(&["--iss", "https://idp.example/", "--aud", "billing"]),
            "audience",
        ),
        (token(&[]), "issuer"),
    ] {
        let sub = herald
            .events()
            .topic("orders")
            .token(&token)
            .connect()
            .await;
        assert_eq!(sub.status(), StatusCode::UNAUTHORIZED);
        assert!(sub.error().contains(why), "{why}: {}", sub.error());
    }
}

// Two threads: the key set's server answers while `Herald::start` blocks one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_naming_a_key_the_provider_just_added_has_the_set_read_at_once() {
    let dir = tempfile::tempdir().expect("a temp dir");
    for name in ["one.pem", "two.pem"] {
        new_private_key(dir.path(), name, KeyKind::P256);
    }
    let (one, two) = (
        jwk(dir.path(), "one.pem", "one"),
        jwk(dir.path(), "two.pem", "two"),
    );
    let document = std::sync::Arc::new(std::sync::Mutex::new(json!({"keys": [one.clone()]})));
    let (url, _provider) = serve_json(document.clone()).await;
    // Read on a timer only once an hour: what follows is the read a token asks for.
    let herald = Herald::start(&["--jwt-jwks", &url, "--jwt-jwks-refresh", "1h"]);
    let token = |key: &str, kid: &str| alice_signed_with(dir.path(), key, kid);
    herald
        .events()
        .topic("orders")
        .token(&token("one.pem", "one"))
        .open()
        .await;
    *document.lock().expect("the document") = json!({"keys": [one, two]});
    herald
        .events()
        .topic("orders")
        .token(&token("two.pem", "two"))
        .open()
        .await;
    // A key id nobody has asks for no second read within 10 s: it is refused at once.
    let started = std::time::Instant::now();
    let sub = herald
        .events()
        .topic("orders")
        .token(&token("two.pem", "three"))
        .connect()
        .await;
    assert_eq!(sub.status(), StatusCode::UNAUTHORIZED);
    assert!(sub.error().contains("key id \"three\""), "{}", sub.error());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// `openssl s_server -WWW`: serves the files of `dir` over HTTPS with `certs`' server
/// certificate, until dropped.
struct HttpsFiles {
    child: std::process::Child,
    port: u16,
}

impl HttpsFiles {
    fn serve(dir: &std::path::Path, certs: &herald_tests::TestCerts) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&certs.cert)
            .arg("-key")
            .arg(&certs.key)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let server = Self { child, port };
        herald_tests::wait_until_listening(port, "openssl s_server");
        server
    }
}

impl Drop for HttpsFiles {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_key_set_served_over_https_by_a_private_ca_is_read_with_its_ca_file() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let certs = herald_tests::test_certs(dir.path());
    new_private_key(dir.path(), "one.pem", KeyKind::P256);
    let set = json!({"keys": [jwk(dir.path(), "one.pem", "one")]});
    std::fs::write(dir.path().join("jwks.json"), set.to_string()).expect("write the set");
    let provider = HttpsFiles::serve(dir.path(), &certs);
    let url = format!("https://localhost:{}/jwks.json", provider.port);
    // The system's roots do not know the CA: the server does not start, and names the option.
    let stderr = herald_tests::serve_refused(&["--jwt-jwks", &url]);
    assert!(stderr.contains("with --jwt-jwks-ca-file)"), "{stderr}");
    let ca = certs.ca.to_str().expect("a UTF-8 path");
    let herald = Herald::start(&["--jwt-jwks", &url, "--jwt-jwks-ca-file", ca]);
    let token = alice_signed_with(dir.path(), "one.pem", "one");
    herald.events().topic("orders").token(&token).open().await;
    // The CA file is for key sets read over HTTPS only.
    let stderr = herald_tests::serve_refused(&[
        "--jwt-jwks",
        dir.path().join("jwks.json").to_str().expect("a UTF-8 path"),
        "--jwt-jwks-ca-file",
        ca,
    ]);
    assert!(stderr.contains("applies to https://"), "{stderr}");
}
