//! Cluster mode: several `herald` instances sharing one Redis stream (`--redis`). They need
//! the Redis in `HERALD_TEST_REDIS`; without it each says that it was skipped.

use std::process::Command;
use std::time::Duration;

use herald_core::ParsedEvent;
use herald_tests::{
    Herald, RedisPrefix, Subscriber, TestCerts, WAIT, eventually, run_bounded, serve_fails, skip,
    test_certs, test_redis, wait_until_listening,
};
use serde_json::{Value, json};

/// A prefix of the test's own in the test Redis, or `None` after saying the test is skipped.
fn cluster(test: &str) -> Option<RedisPrefix> {
    match test_redis() {
        Some(url) => Some(RedisPrefix::new(&url)),
        None => {
            skip(test, "HERALD_TEST_REDIS is not set (bash .ci/run sets it)");
            None
        }
    }
}

fn ids(events: &[ParsedEvent]) -> Vec<String> {
    events.iter().map(|e| e.last_event_id.clone()).collect()
}

/// The ids of the events a stream closed for a gap in the shared log still carried: none but
/// the `herald.closed` notice that says so, which is checked and left out.
fn past_the_gap(events: &[ParsedEvent]) -> Vec<String> {
    let (notice, rest) = events.split_last().expect("the stream says why it ended");
    assert_eq!(
        (notice.event_type.as_str(), notice.data.as_str()),
        ("herald.closed", r#"{"reason":"log_gap"}"#),
        "{events:?}"
    );
    ids(rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_on_any_instance_reaches_every_instance_in_one_order() {
    let Some(redis) = cluster("an_event_published_on_any_instance_reaches_every_instance") else {
        return;
    };
    let a = Herald::start(&redis.serve_args(&[]));
    let b = Herald::start(&redis.serve_args(&[]));
    let mut on_a = a.events().topic("t").open().await;
    let mut on_b = b.events().topic("t").open().await;
    let mut published = Vec::new();
    for n in 0..10 {
        let via = if n % 2 == 0 { &a } else { &b };
        published.push(via.publish_ok(json!({"topics": ["t"], "data": n})).await);
    }
    let got_a = on_a.events_until(10, WAIT).await;
    let got_b = on_b.events_until(10, WAIT).await;
    assert_eq!(ids(&got_a), published, "{}", on_a.raw_text());
    assert_eq!(ids(&got_b), published, "{}", on_b.raw_text());
    let data: Vec<&str> = got_b.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_instance_without_gaps_or_duplicates() {
    let Some(redis) = cluster("a_client_resumes_on_another_instance") else {
        return;
    };
    let a = Herald::start(&redis.serve_args(&[]));
    let b = Herald::start(&redis.serve_args(&[]));
    let mut sub = a.events().topic("t").open().await;
    let first = a.publish_ok(json!({"topics": ["t"], "data": "1"})).await;
    let seen = sub.next_event(WAIT).await.expect("the first event");
    assert_eq!(seen.last_event_id, first);
    drop(sub);

    // Published while the client was away, on both instances.
    let missed = vec![
        b.publish_ok(json!({"topics": ["t"], "data": "2"})).await,
        a.publish_ok(json!({"topics": ["t"], "data": "3"})).await,
    ];
    let mut resumed = b.events().topic("t").last_event_id(&first).open().await;
    let replayed = resumed.events_until(2, WAIT).await;
    assert_eq!(ids(&replayed), missed, "{}", resumed.raw_text());
    let live = a.publish_ok(json!({"topics": ["t"], "data": "4"})).await;
    let next = resumed.next_event(WAIT).await.expect("the live event");
    assert_eq!(next.last_event_id, live, "{}", resumed.raw_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_got_no_event_resumes_from_its_checkpoint_on_another_instance() {
    let Some(redis) = cluster("a_client_that_got_no_event_resumes_from_its_checkpoint") else {
        return;
    };
    let a = Herald::start(&redis.serve_args(&[]));
    let b = Herald::start(&redis.serve_args(&[]));
    // The stream is empty: the checkpoint is 0-0, which no instance takes for an unknown id.
    let on_empty = a.events().topic("quiet").open().await;
    assert_eq!(on_empty.last_event_id(), "0-0");
    let elsewhere = b.publish_ok(json!({"topics": ["busy"], "data": "x"})).await;
    let later_seen = eventually(WAIT, || async {
        a.events().topic("quiet").open().await.last_event_id() == elsewhere
    })
    .await;
    assert!(
        later_seen,
        "a's new subscribers never started after {elsewhere}"
    );
    let later = a.events().topic("quiet").open().await;
    drop(on_empty);

    let missed = b
        .publish_ok(json!({"topics": ["quiet"], "data": "while away"}))
        .await;
    for from in ["0-0".to_owned(), later.last_event_id().to_owned()] {
        let mut back = b.events().topic("quiet").last_event_id(&from).open().await;
        let event = back.next_event(WAIT).await.expect("the missed event");
        assert_eq!(event.event_type, "message", "{}", back.raw_text());
        assert_eq!(
            event.last_event_id,
            missed,
            "from {from}: {}",
            back.raw_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_retried_on_another_instance_keeps_its_id_and_is_delivered_once() {
    let Some(redis) = cluster("a_publish_retried_on_another_instance") else {
        return;
    };
    let a = Herald::start(&redis.serve_args(&[]));
    let b = Herald::start(&redis.serve_args(&[]));
    let mut sub = b.events().topic("t").open().await;
    let body = json!({"topics": ["t"], "data": "charge", "idempotency_key": "order-42"});
    let (status_a, first) = a.publish(body.clone()).await;
    let (status_b, retry) = b.publish(body).await;
    assert_eq!((status_a.as_u16(), status_b.as_u16()), (200, 200));
    assert_eq!(first["id"], retry["id"], "{first} vs {retry}");
    let marker = b
        .publish_ok(json!({"topics": ["t"], "data": "after"}))
        .await;
    let got = sub.events_until(2, WAIT).await;
    let expected = vec![first["id"].as_str().expect("an id").to_owned(), marker];
    assert_eq!(ids(&got), expected, "{}", sub.raw_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_its_publishers_own_on_every_instance() {
    let Some(redis) = cluster("an_idempotency_key_is_its_publishers_own") else {
        return;
    };
    let secret = "cluster-secret";
    let a = Herald::start(&redis.serve_args(&["--jwt-secret", secret]));
    let b = Herald::start(&redis.serve_args(&["--jwt-secret", secret]));
    herald_tests::assert_keys_are_the_publishers_own(&a, &b, secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_and_restarted_replays_what_others_published_meanwhile() {
    let Some(redis) = cluster("an_instance_killed_and_restarted_replays") else {
        return;
    };
    let mut a = Herald::start(&redis.serve_args(&[]));
    let b = Herald::start(&redis.serve_args(&[]));
    let mut sub = a.events().topic("t").open().await;
    let first = a.publish_ok(json!({"topics": ["t"], "data": "1"})).await;
    assert_eq!(
        sub.next_event(WAIT).await.map(|e| e.last_event_id),
        Some(first.clone())
    );
    a.kill();
    assert!(
        sub.wait_end(WAIT).await.is_some(),
        "the stream ends with its server"
    );
    let missed = vec![
        b.publish_ok(json!({"topics": ["t"], "data": "2"})).await,
        b.publish_ok(json!({"topics": ["t"], "data": "3"})).await,
    ];
    a.restart();
    let mut resumed = a.events().topic("t").last_event_id(&first).open().await;
    let replayed = resumed.events_until(2, WAIT).await;
    assert_eq!(ids(&replayed), missed, "{}", resumed.raw_text());
    // Ids minted after the restart still come after everything before it.
    let later = a.publish_ok(json!({"topics": ["t"], "data": "4"})).await;
    let next = resumed.next_event(WAIT).await.expect("the live event");
    assert_eq!(next.last_event_id, later);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_the_shared_retention_is_told_it_missed_events() {
    let Some(redis) = cluster("a_client_behind_the_shared_retention") else {
        return;
    };
    let a = Herald::start(&redis.serve_args(&["--retain-events", "3", "--trim-interval", "200ms"]));
    let mut published = Vec::new();
    for n in 0..6 {
        published.push(a.publish_ok(json!({"topics": ["t"], "data": n})).await);
    }
    let stream = format!("{}:events", redis.prefix());
    let trimmed = eventually(WAIT, || async {
        redis
            .query(&[b"XLEN", stream.as_bytes()])
            .ok()
            .and_then(|v| v.as_int())
            == Some(3)
    })
    .await;
    assert!(trimmed, "retention trims the shared stream to 3 events");
    // Give the instance a tick to take in the new bounds.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let mut resumed = a
        .events()
        .topic("t")
        .last_event_id(&published[0])
        .open()
        .await;
    let got = resumed.events_until(4, WAIT).await;
    assert_eq!(got[0].event_type, "herald.reset", "{}", resumed.raw_text());
    let reset: Value = serde_json::from_str(&got[0].data).expect("the reset notice is JSON");
    assert_eq!(reset["reason"], "history_truncated");
    assert_eq!(ids(&got[1..]), published[3..], "{}", resumed.raw_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_streams_are_capped_across_the_instances_and_a_closed_one_frees_its_place() {
    let Some(redis) = cluster("a_users_streams_are_capped_across_the_instances") else {
        return;
    };
    let args = redis.serve_args(&["--max-connections-per-user", "2"]);
    let a = Herald::start(&args);
    let b = Herald::start(&args);
    let alice = |h: &Herald| h.events().topic("t").query("user", "alice");
    let first = alice(&a).open().await;
    let mut second = alice(&b).open().await;
    // One stream on each instance: neither takes a third, though each holds only one.
    for via in [&a, &b] {
        alice(via)
            .connect()
            .await
            .assert_refused_for_now("too_many_streams")
            .await;
    }
    // Another user has places of his own.
    let mut bob = b.events().topic("t").query("user", "bob").open().await;
    let metrics = a.call(http::Method::GET, "/metrics").send().await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "herald_connections_refused_total 1"),
        "a counts its refusal: {metrics}"
    );

    // Closing the stream on a frees its place for b.
    drop(first);
    let freed = eventually(WAIT, || async {
        alice(&b).connect().await.admitted().await
    })
    .await;
    assert!(
        freed,
        "alice never got her place back on b after closing a stream on a"
    );
    let id = b
        .publish_ok(json!({"users": ["alice", "bob"], "data": "hi"}))
        .await;
    second.expect_event_id(&id).await;
    bob.expect_event_id(&id).await;
}

#[test]
fn cluster_mode_refuses_an_unreachable_redis_and_bad_settings_clearly() {
    let stderr = serve_fails(&["--redis", "redis://127.0.0.1:1"]);
    assert!(
        stderr.contains("cannot open the shared log") && stderr.contains("redis://127.0.0.1:1"),
        "{stderr}"
    );
    let stderr = serve_fails(&["--redis", "redis://127.0.0.1:1", "--fsync", "never"]);
    assert!(
        stderr.contains("--fsync") && stderr.contains("--redis"),
        "{stderr}"
    );
    let stderr = serve_fails(&["--redis", "http://127.0.0.1:6379"]);
    assert!(stderr.contains("redis://"), "{stderr}");
    let stderr = serve_fails(&["--redis", "redis+sentinel://127.0.0.1:1/m"]);
    assert!(
        stderr.contains("no sentinel named the master `m`") && stderr.contains("127.0.0.1:1"),
        "{stderr}"
    );
    let stderr = serve_fails(&["--redis", "redis+sentinel://127.0.0.1:1"]);
    assert!(stderr.contains("/mymaster"), "{stderr}");
    let stderr = serve_fails(&["--redis", "redis://h", "--redis-ca-file", "/dev/null"]);
    assert!(stderr.contains("rediss://"), "{stderr}");
    let stderr = serve_fails(&["--redis", "rediss://h", "--redis-ca-file", "/no/such.pem"]);
    assert!(stderr.contains("/no/such.pem"), "{stderr}");
    let stderr = serve_fails(&["--redis", "rediss://h", "--redis-tls-cert", "/dev/null"]);
    assert!(stderr.contains("--redis-tls-key"), "{stderr}");
}

/// False (after saying the test is skipped) when `redis-server` or `redis-cli` is missing
/// outside CI; in CI a missing one fails the test (`bash .ci/run` installs them).
fn redis_binaries_or_skip(test: &str) -> bool {
    let runs = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if runs("redis-server") && runs("redis-cli") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "redis-server or redis-cli is missing: `apt-get install redis-server` (bash .ci/run does)"
    );
    skip(test, "no redis-server / redis-cli on this machine");
    false
}

/// A `redis-server` of the test's own on a free port, so that it can be stopped and started
/// again without disturbing other tests; killed when dropped.
struct OwnRedis {
    port: u16,
    /// `rediss://`: it speaks only TLS, with these certificates.
    tls: Option<TlsArgs>,
    /// A replica of the master on this port.
    replica_of: Option<u16>,
    /// Its working directory: a replica writes the master's snapshot there.
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

/// The TLS settings of an [`OwnRedis`]: its certificate, and whether clients must present one.
struct TlsArgs {
    certs: (String, String, String),
    client_certificates: bool,
}

impl OwnRedis {
    /// Starts one, or `None` after saying the test is skipped when there is no `redis-server`.
    fn start(test: &str) -> Option<Self> {
        Self::start_with(test, None, None)
    }

    /// Starts a replica of the master on `port` (which must be running).
    fn start_replica(test: &str, port: u16) -> Option<Self> {
        Self::start_with(test, None, Some(port))
    }

    /// Starts one that speaks only TLS with `certs` (its CA also checks client certificates,
    /// which clients must present when `client_certificates`).
    fn start_tls(test: &str, certs: &TestCerts, client_certificates: bool) -> Option<Self> {
        let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();
        let certs = (path(&certs.ca), path(&certs.cert), path(&certs.key));
        Self::start_with(
            test,
            Some(TlsArgs {
                certs,
                client_certificates,
            }),
            None,
        )
    }

    fn start_with(test: &str, tls: Option<TlsArgs>, replica_of: Option<u16>) -> Option<Self> {
        if !redis_binaries_or_skip(test) {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self {
            port,
            tls,
            replica_of,
            dir: tempfile::tempdir().expect("a temp dir"),
            child: None,
        };
        redis.restart();
        Some(redis)
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again, empty: it keeps nothing on disk) and waits until it accepts.
    fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some(TlsArgs {
                certs: (ca, cert, key),
                client_certificates,
            }) => cmd
                .args(["--port", "0", "--tls-port", &port])
                .args(["--tls-ca-cert-file", ca, "--tls-cert-file", cert])
                .args(["--tls-key-file", key, "--tls-auth-clients"])
                .arg(if *client_certificates { "yes" } else { "no" }),
        };
        if let Some(master) = self.replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        wait_until_listening(self.port, "redis-server");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A master and a replica of the test's own, watched by one Redis Sentinel that fails the
/// master over after 1 s of silence (quorum 1); all killed when dropped.
struct OwnSentinel {
    master: OwnRedis,
    replica: OwnRedis,
    port: u16,
    /// The sentinel's `requirepass`, if it has one.
    password: Option<&'static str>,
    sentinel: std::process::Child,
    /// The sentinel's configuration file (Sentinel rewrites it).
    _dir: tempfile::TempDir,
}

impl OwnSentinel {
    /// Starts all three and waits until the sentinel knows the replica, or `None` after
    /// saying the test is skipped without `redis-server`.
    fn start(test: &str) -> Option<Self> {
        Self::start_with(test, None)
    }

    /// [`OwnSentinel::start`] with a sentinel that asks clients for `password`.
    fn start_with(test: &str, password: Option<&'static str>) -> Option<Self> {
        let master = OwnRedis::start(test)?;
        let replica = OwnRedis::start_replica(test, master.port)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("a temp dir");
        let conf = dir.path().join("sentinel.conf");
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\nsentinel monitor m 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds m 1000\nsentinel failover-timeout m 5000\n",
            master.port
        );
        if let Some(password) = password {
            text.push_str(&format!("requirepass {password}\n"));
        }
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        let own = Self {
            master,
            replica,
            port,
            password,
            sentinel,
            _dir: dir,
        };
        // A failover needs a replica the sentinel has seen in sync.
        let replica = format!("{}", own.replica.port);
        own.until("the sentinel to know the replica", |s| {
            let out = s.ask(&["sentinel", "replicas", "m"]);
            let lines: Vec<&str> = out.lines().collect();
            lines.contains(&replica.as_str())
                && lines.contains(&"slave")
                && lines.windows(2).any(|w| w == ["master-link-status", "ok"])
        });
        Some(own)
    }

    fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/m", self.port)
    }

    /// What `redis-cli` prints for `args` sent to the sentinel.
    fn ask(&self, args: &[&str]) -> String {
        match self.password {
            Some(password) => {
                let authed = [&["--no-auth-warning", "-a", password], args].concat();
                redis_cli(self.port, &authed)
            }
            None => redis_cli(self.port, args),
        }
    }

    /// The port of the node the sentinel names as the master.
    fn master_port(&self) -> String {
        let out = self.ask(&["sentinel", "get-master-addr-by-name", "m"]);
        out.lines().nth(1).unwrap_or_default().to_owned()
    }

    /// Waits (up to 30 s: a failover takes a few seconds) until `done` holds.
    fn until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(std::time::Instant::now() < deadline, "waited for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OwnSentinel {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
    }
}

/// What `redis-cli` prints for `args` sent to the Redis on `port`.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = run_bounded(
        Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args),
        WAIT,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_asks_for_a_password_gets_the_one_herald_is_given() {
    let Some(redis) = OwnSentinel::start_with("sentinel_password", Some("s3ntinel")) else {
        return;
    };
    let url = redis.url();
    // Without it, or with a wrong one, the start fails and says what to give.
    let stderr = serve_fails(&["--redis", &url]);
    assert!(
        stderr.contains("NOAUTH") && stderr.contains("--redis-sentinel-password"),
        "{stderr}"
    );
    let stderr = serve_fails(&["--redis", &url, "--redis-sentinel-password", "wrong"]);
    assert!(stderr.contains("WRONGPASS"), "{stderr}");
    assert!(
        !stderr.contains("s3ntinel") && !stderr.contains("wrong\""),
        "{stderr}"
    );

    let a = Herald::start(&[
        "--dev",
        "--redis",
        &url,
        "--redis-sentinel-password",
        "s3ntinel",
    ]);
    let mut live = a.events().topic("p").open().await;
    let id = a.publish_ok(json!({"topics": ["p"], "data": "x"})).await;
    assert_eq!(
        live.next_event(WAIT).await.map(|e| e.last_event_id),
        Some(id)
    );
    // The master the sentinel names holds the log.
    assert_eq!(redis.master_port(), redis.master.port.to_string());
    let keys = redis_cli(redis.master.port, &["--scan"]);
    assert!(keys.lines().any(|k| k.ends_with(":events")), "{keys}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sentinel_instances_follow_failovers_after_a_crash_and_a_partition() {
    let Some(mut redis) = OwnSentinel::start("with_sentinel_instances_follow_failovers") else {
        return;
    };
    let url = redis.url();
    let a = Herald::start(&["--dev", "--redis", &url]);
    let b = Herald::start(&["--dev", "--redis", &url]);
    let mut live = b.events().topic("f").open().await;
    let before = a
        .publish_ok(json!({"topics": ["f"], "data": "before"}))
        .await;
    assert_eq!(
        live.next_event(WAIT).await.map(|e| e.last_event_id),
        Some(before.clone())
    );
    // The event is on the replica too before the master dies.
    assert_eq!(
        redis_cli(redis.master.port, &["wait", "1", "5000"]).trim(),
        "1"
    );

    // The master dies: Sentinel promotes the replica, and both instances move to it.
    redis.master.stop();
    let promoted = redis.replica.port.to_string();
    let after = publish_once_redis_is_back(&a, json!({"topics": ["f"], "data": "after"})).await;
    assert_eq!(redis.master_port(), promoted);
    let event = live
        .next_event(WAIT)
        .await
        .expect("the event after the failover");
    assert_eq!(
        (event.data.as_str(), &event.last_event_id),
        ("after", &after)
    );
    let mut resumed = a.events().topic("f").last_event_id(&before).open().await;
    let got = resumed.events_until(1, WAIT).await;
    assert_eq!(ids(&got), [after], "{}", resumed.raw_text());
    assert!(
        a.stderr().contains("Sentinel names a new master"),
        "{}",
        a.stderr()
    );

    // The old master comes back as a replica. Then the current master is cut off from the
    // sentinel but not from the instances (a network partition): it starts asking for a
    // password, and the sentinel's own connections to it are closed, so the sentinel sees it
    // down and promotes the replica, but cannot demote it. The instances' connections to it
    // stay open and keep working, so nothing breaks them: they must follow the sentinel's
    // answer by asking it again, or they would write to the cut-off master for good.
    redis.master.replica_of = Some(redis.replica.port);
    redis.master.restart();
    let back = redis.master.port.to_string();
    redis.until("the sentinel to know the old master as a replica", |s| {
        let out = s.ask(&["sentinel", "replicas", "m"]);
        let lines: Vec<&str> = out.lines().collect();
        lines.contains(&back.as_str())
            && lines.windows(2).any(|w| w == ["master-link-status", "ok"])
    });
    let cut_off = redis.replica.port;
    redis_cli(cut_off, &["config", "set", "requirepass", "partitioned"]);
    let clients = redis_cli(cut_off, &["-a", "partitioned", "client", "list"]);
    for client in clients.lines().filter(|l| l.contains("name=sentinel-")) {
        let id = client
            .split(' ')
            .find_map(|field| field.strip_prefix("id="))
            .expect("a client id");
        redis_cli(cut_off, &["-a", "partitioned", "client", "kill", "id", id]);
    }
    redis.until("the sentinel to promote the replica", |s| {
        s.master_port() == back
    });
    let deadline = std::time::Instant::now() + WAIT;
    let landed = loop {
        // On A, whose connections to the cut-off master are open since the first failover.
        let id = publish_once_redis_is_back(&a, json!({"topics": ["f"], "data": "moved"})).await;
        if redis_cli(redis.master.port, &["xrange", "herald:events", &id, &id]).contains(&id) {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "publishes still go to the cut-off master: {}",
            a.stderr()
        );
        // A publish to the cut-off master is acknowledged, and lost to everyone who reads the
        // new one (resumes from it get `herald.reset`).
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The subscriber gets it: on through both failovers, or, when its instance read the
    // publishes lost to the cut-off master as a gap in the log and closed it (saying so), by
    // resuming from where it was, as a browser does.
    let mut resumes = 0;
    loop {
        match live.next_event(WAIT).await {
            Some(event) if event.last_event_id == landed => break,
            Some(_) => {}
            None => {
                assert!(
                    live.raw_text()
                        .ends_with("event: herald.closed\ndata: {\"reason\":\"log_gap\"}\n\n")
                        && resumes < 3,
                    "the stream ended without {landed}: {}",
                    live.raw_text()
                );
                resumes += 1;
                let from = live.last_event_id().to_owned();
                live = b.events().topic("f").last_event_id(&from).open().await;
            }
        }
    }
    for herald in [&a, &b] {
        assert!(!herald.stderr().contains("panicked"), "{}", herald.stderr());
    }
}

/// Publishes `body` until the instance, back in touch with Redis, accepts it; its id.
async fn publish_once_redis_is_back(herald: &Herald, body: Value) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, answer) = herald.publish(body.clone()).await;
        if status.as_u16() == 200 {
            return answer["id"].as_str().expect("an id").to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "publishing works again: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_goes_away_publishes_fail_with_503_and_delivery_resumes_when_it_is_back() {
    let Some(mut redis) = OwnRedis::start("when_redis_goes_away_publishes_fail_with_503") else {
        return;
    };
    let url = redis.url();
    let herald = Herald::start(&["--dev", "--redis", &url]);
    let mut sub = herald.events().topic("t").open().await;
    let before = herald
        .publish_ok(json!({"topics": ["t"], "data": "before"}))
        .await;
    assert_eq!(
        sub.next_event(WAIT).await.map(|e| e.last_event_id),
        Some(before)
    );

    redis.stop();
    let (status, body) = herald
        .publish(json!({"topics": ["t"], "data": "lost"}))
        .await;
    assert_eq!(status.as_u16(), 503, "{body}");
    let error = body["error"].as_str().expect("a JSON error");
    assert!(
        error.contains("Redis") && error.contains("idempotency_key"),
        "{error}"
    );

    redis.restart();
    // The publisher and the reader reconnect by themselves.
    let after =
        publish_once_redis_is_back(&herald, json!({"topics": ["t"], "data": "after"})).await;
    let event = sub
        .next_event(WAIT)
        .await
        .expect("the event published after the outage");
    assert_eq!((event.data.as_str(), event.last_event_id), ("after", after));
    assert!(!herald.stderr().contains("panicked"), "{}", herald.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_was_away_while_retention_removed_unread_events_makes_its_clients_resume()
{
    let Some(redis) = OwnRedis::start("an_instance_that_was_away_while_retention_removed") else {
        return;
    };
    let url = redis.url();
    let flags = [
        "--dev",
        "--redis",
        &url,
        "--retain-events",
        "2",
        "--trim-interval",
        "200ms",
    ];
    let a = Herald::start(&flags);
    let b = Herald::start(&flags);
    let mut sub = a.events().topic("t").open().await;
    let first = a.publish_ok(json!({"topics": ["t"], "data": "1"})).await;
    assert_eq!(
        sub.next_event(WAIT).await.map(|e| e.last_event_id),
        Some(first.clone())
    );

    // Instance a stops reading while b publishes and retention removes what a never read.
    a.signal(libc::SIGSTOP);
    let mut published = Vec::new();
    for n in 2..=6 {
        published.push(b.publish_ok(json!({"topics": ["t"], "data": n})).await);
    }
    let own = RedisPrefix::new(&url);
    let trimmed = eventually(WAIT, || async {
        own.query(&[b"XLEN", b"herald:events"])
            .ok()
            .and_then(|v| v.as_int())
            == Some(2)
    })
    .await;
    a.signal(libc::SIGCONT);
    assert!(trimmed, "b's retention trims the stream to 2 events");

    // The client does not silently skip to the retained events: its stream is closed...
    let end = sub.wait_end(WAIT).await;
    assert!(end.is_some(), "the stream ends: {}", sub.raw_text());
    let skipped = past_the_gap(&sub.events_until(10, Duration::ZERO).await);
    assert!(
        skipped.is_empty(),
        "nothing after the gap on the old stream: {skipped:?}"
    );
    // ...and its resume says what it missed, then replays what is left.
    let mut resumed = a.events().topic("t").last_event_id(&first).open().await;
    let got = resumed.events_until(3, WAIT).await;
    assert_eq!(
        got.first().map(|e| e.event_type.as_str()),
        Some("herald.reset"),
        "{}",
        resumed.raw_text()
    );
    assert_eq!(ids(&got[1..]), published[3..], "{}", resumed.raw_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_instances_share_a_redis_that_checks_both_sides_certificates() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let certs = test_certs(dir.path());
    let Some(redis) = OwnRedis::start_tls("over_tls_instances_share_a_redis", &certs, true) else {
        return;
    };
    let url = redis.url();
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();
    let (ca, cert, key) = (path(&certs.ca), path(&certs.cert), path(&certs.key));

    // Redis's certificate is from the test CA, which the system does not trust.
    let stderr = serve_fails(&["--redis", &url]);
    assert!(
        stderr.contains("cannot open the shared log") && stderr.contains("--redis-ca-file"),
        "{stderr}"
    );
    // Trusting it is not enough: this Redis also wants a client certificate.
    let stderr = serve_fails(&["--redis", &url, "--redis-ca-file", &ca]);
    assert!(stderr.contains("cannot open the shared log"), "{stderr}");

    let args = [
        "--dev",
        "--redis",
        &url,
        "--redis-ca-file",
        &ca,
        "--redis-tls-cert",
        &cert,
        "--redis-tls-key",
        &key,
    ];
    let a = Herald::start(&args);
    let b = Herald::start(&args);
    publish_deliver_and_resume([&a, &b, &b, &a]).await;
}

/// Two publishes on two instances (the first retried on the second with its idempotency key)
/// reach a subscriber on a third, once each and in order, and a client resuming on a fourth
/// after the first gets the second: `[publish first, publish second, subscribe, resume]`.
async fn publish_deliver_and_resume([one, two, subscribe, resume]: [&Herald; 4]) {
    let mut live = subscribe.events().topic("t").open().await;
    let keyed = json!({"topics": ["t"], "data": "1", "idempotency_key": "k1"});
    let first = one.publish_ok(keyed.clone()).await;
    let second = two.publish_ok(json!({"topics": ["t"], "data": "2"})).await;
    assert_eq!(
        two.publish_ok(keyed).await,
        first,
        "the retry is the same event"
    );
    let got = live.events_until(2, WAIT).await;
    let expected = [first.clone(), second.clone()];
    assert_eq!(ids(&got), expected, "{}", live.raw_text());
    let mut resumed = resume
        .events()
        .topic("t")
        .last_event_id(&first)
        .open()
        .await;
    let got = resumed.events_until(1, WAIT).await;
    assert_eq!(ids(&got), [second], "{}", resumed.raw_text());
}

/// `GET /admin/nodes` on `herald`, asked again until `done` holds for the answer; panics
/// with the last answer, saying `what` was awaited, if it does not within [`WAIT`].
async fn nodes_until(herald: &Herald, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let answer = herald
            .call(http::Method::GET, "/admin/nodes")
            .send()
            .await
            .json();
        if done(&answer) {
            return answer;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn node_names(answer: &Value) -> Vec<&str> {
    let rows = answer["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    rows.iter().filter_map(|n| n["name"].as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_lists_the_others_with_their_figures_and_forgets_one_that_stops() {
    let Some(redis) = cluster("every_instance_lists_the_others") else {
        return;
    };
    let a = Herald::start(&redis.serve_args(&[]));
    // A by its default name (host:port), B by the one the operator gave it.
    let mut b = Herald::start(&redis.serve_args(&["--node-name", "eu-b"]));
    let _on_b = b.events().topic("t").open().await;
    let any = |_: &Value| true;
    let a_name = nodes_until(&a, "A's name", any).await["node"].clone();
    let b_name = nodes_until(&b, "B's name", any).await["node"].clone();
    assert!(
        a_name
            .as_str()
            .is_some_and(|n| n.ends_with(&format!(":{}", a.addr().port()))),
        "{a_name}"
    );
    assert_eq!(b_name, "eu-b");

    // Within a heartbeat or two, A sees B and B's subscriber.
    let answer = nodes_until(&a, "A lists B with its subscriber", |answer| {
        let rows = answer["nodes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        rows.len() == 2
            && rows
                .iter()
                .any(|n| n["name"] == b_name && n["counters"]["connections"] == 1)
    })
    .await;
    assert_eq!(answer["cluster"], true, "{answer}");

    // B stops gracefully and leaves at once (a killed one would be dropped after 10 s).
    b.terminate();
    assert!(b.wait_exit(WAIT).is_some(), "B did not stop");
    nodes_until(&a, "A forgets B", |answer| {
        node_names(answer) == [a_name.as_str().unwrap_or_default()]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_the_stream_ids_keep_rising_and_resumes_from_before_the_loss_are_told() {
    let Some(mut redis) = OwnRedis::start("after_redis_loses_the_stream") else {
        return;
    };
    let url = redis.url();
    let a = Herald::start(&["--dev", "--redis", &url]);
    let mut live = a.events().topic("t").open().await;
    let mut before = Vec::new();
    for n in 0..3 {
        before.push(a.publish_ok(json!({"topics": ["t"], "data": n})).await);
    }
    assert_eq!(ids(&live.events_until(3, WAIT).await), before);

    // Redis comes back empty (it keeps nothing on disk): the three events are gone.
    redis.restart();
    let after = publish_once_redis_is_back(&a, json!({"topics": ["t"], "data": "after"})).await;
    let id = |text: &str| text.parse::<herald_core::EventId>().expect("an event id");
    assert!(id(&after) > id(&before[2]), "{after} follows {}", before[2]);
    assert_eq!(
        ids(&live.events_until(1, WAIT).await),
        std::slice::from_ref(&after)
    );

    // A client that saw only the first event resumes on an instance started after the loss:
    // it is told that events are missing, then gets what followed.
    let b = Herald::start(&["--dev", "--redis", &url]);
    let mut resumed = b.events().topic("t").last_event_id(&before[0]).open().await;
    let got = resumed.events_until(2, WAIT).await;
    assert_eq!(got[0].event_type, "herald.reset", "{}", resumed.raw_text());
    let reset: Value = serde_json::from_str(&got[0].data).expect("the reset notice is JSON");
    assert_eq!(reset["reason"], "history_truncated", "{reset}");
    assert_eq!(ids(&got[1..]), [after], "{}", resumed.raw_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_the_stream_a_resume_from_what_only_one_instance_had_read_is_told() {
    let Some(mut redis) = OwnRedis::start("after_redis_loses_the_stream_a_resume_from_what_only")
    else {
        return;
    };
    let url = redis.url();
    let a = Herald::start(&["--dev", "--redis", &url]);
    let b = Herald::start(&["--dev", "--redis", &url]);
    let mut on_a = a.events().topic("t").open().await;
    let mut on_b = b.events().topic("t").open().await;
    let mut read = Vec::new();
    for n in 0..2 {
        read.push(a.publish_ok(json!({"topics": ["t"], "data": n})).await);
    }
    assert_eq!(ids(&on_a.events_until(2, WAIT).await), read);
    assert_eq!(ids(&on_b.events_until(2, WAIT).await), read);

    // b falls behind: a reads two more events that b has not read when Redis comes back
    // empty. b, thawed first, heals the stream to the last id it had read and publishes.
    // a, thawed next, raises the floor to what it had read.
    b.signal(libc::SIGSTOP);
    let mut only_a = Vec::new();
    for n in 2..4 {
        only_a.push(a.publish_ok(json!({"topics": ["t"], "data": n})).await);
    }
    assert_eq!(ids(&on_a.events_until(2, WAIT).await), only_a);
    a.signal(libc::SIGSTOP);
    redis.restart();
    b.signal(libc::SIGCONT);
    let after = publish_once_redis_is_back(&b, json!({"topics": ["t"], "data": "after"})).await;
    a.signal(libc::SIGCONT);
    // a goes on with the new event (nothing it had delivered was lost for its subscriber).
    assert_eq!(
        ids(&on_a.events_until(1, WAIT).await),
        std::slice::from_ref(&after),
        "{}",
        on_a.raw_text()
    );

    // b's subscriber, which never got a's two events, is not carried on past them: b held
    // the new event until a had looked, then closed its subscribers.
    let end = on_b.wait_end(WAIT).await;
    assert!(end.is_some(), "b's stream ends: {}", on_b.raw_text());
    let skipped = past_the_gap(&on_b.events_until(10, Duration::ZERO).await);
    assert!(
        skipped.is_empty(),
        "b delivered {skipped:?} past the lost events"
    );

    // A client that had the first of a's two events resumes: the second is gone, and it is
    // told so rather than carrying on as if nothing were missing.
    let mut resumed = b.events().topic("t").last_event_id(&only_a[0]).open().await;
    assert_reset_then(&mut resumed, &after).await;
    // One that had both misses nothing: no notice.
    let mut complete = a.events().topic("t").last_event_id(&only_a[1]).open().await;
    let got = complete.events_until(1, WAIT).await;
    assert_eq!(
        ids(&got),
        std::slice::from_ref(&after),
        "{}",
        complete.raw_text()
    );
    // So is b's subscriber when it comes back with the last id it had.
    let mut back = b.events().topic("t").last_event_id(&read[1]).open().await;
    assert_reset_then(&mut back, &after).await;
}

/// Asserts that a resumed stream is told `herald.reset` first, then gets the event `id`.
async fn assert_reset_then(sub: &mut Subscriber, id: &str) {
    let got = sub.events_until(2, WAIT).await;
    assert_eq!(got[0].event_type, "herald.reset", "{}", sub.raw_text());
    assert_eq!(ids(&got[1..]), [id], "{}", sub.raw_text());
}

/// Three `redis-server --cluster-enabled yes` masters of the test's own, joined into one Redis
/// Cluster with `redis-cli --cluster create`; killed when dropped.
struct OwnRedisCluster {
    ports: Vec<u16>,
    children: Vec<std::process::Child>,
    /// The nodes' working directories (each writes its cluster state there).
    dir: tempfile::TempDir,
}

impl OwnRedisCluster {
    /// Starts one, or `None` after saying the test is skipped without `redis-server`.
    fn start(test: &str) -> Option<Self> {
        if !redis_binaries_or_skip(test) {
            return None;
        }
        // Built first, so the nodes started so far are killed if a step below fails.
        let mut cluster = Self {
            ports: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().expect("a temp dir"),
        };
        for _ in 0..3 {
            // Each node also listens on its port + 10000 for the cluster bus.
            let port = free_port_with_bus();
            let node_dir = cluster.dir.path().join(port.to_string());
            std::fs::create_dir(&node_dir).expect("a node dir");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server starts");
            cluster.children.push(child);
            cluster.ports.push(port);
        }
        for &port in &cluster.ports {
            wait_until_listening(port, "a cluster node");
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = run_bounded(
            Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&nodes)
                .args(["--cluster-replicas", "0", "--cluster-yes"]),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for &port in &cluster.ports {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let out = run_bounded(
                    Command::new("redis-cli").args(["-p", &port.to_string(), "cluster", "info"]),
                    WAIT,
                );
                if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the cluster did not become ok"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some(cluster)
    }

    fn url(&self, node: usize) -> String {
        format!("redis://127.0.0.1:{}", self.ports[node])
    }

    /// The node id of the node on `port`, and whether it serves `slot`.
    fn identity(port: u16, slot: u32) -> (String, bool) {
        let out = redis_cli(port, &["cluster", "nodes"]);
        let me = out
            .lines()
            .find(|l| l.contains("myself"))
            .unwrap_or_else(|| panic!("no `myself` in CLUSTER NODES: {out}"));
        let words: Vec<&str> = me.split(' ').collect();
        let serves = words[8..].iter().any(|range| {
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            match (low.parse::<u32>(), high.parse::<u32>()) {
                (Ok(low), Ok(high)) => (low..=high).contains(&slot),
                _ => false,
            }
        });
        (words[0].to_owned(), serves)
    }

    /// `(owner, other)`: the index of the node serving `slot` and of another node.
    fn owner_of(&self, slot: u32) -> (usize, usize) {
        let owner = (0..self.ports.len())
            .find(|&i| Self::identity(self.ports[i], slot).1)
            .expect("a node serves the slot");
        (owner, (owner + 1) % self.ports.len())
    }

    /// Sets `CLUSTER SETSLOT slot` on every node: `NODE <id>` when the migration is done.
    fn assign(&self, slot: u32, to: usize) {
        let id = Self::identity(self.ports[to], slot).0;
        for &port in &self.ports {
            let out = redis_cli(
                port,
                &["cluster", "setslot", &slot.to_string(), "node", &id],
            );
            assert_eq!(out.trim(), "OK", "SETSLOT NODE on {port}");
        }
    }

    /// Moves `keys` of a slot being migrated from node `from` to node `to` (`MIGRATE`).
    fn migrate(&self, from: usize, to: usize, keys: &[&str]) {
        let port = self.ports[to].to_string();
        let mut args = vec!["migrate", "127.0.0.1", &port, "", "0", "5000", "keys"];
        args.extend_from_slice(keys);
        let out = redis_cli(self.ports[from], &args);
        assert_eq!(out.trim(), "OK", "MIGRATE {keys:?}");
    }
}

impl Drop for OwnRedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port that is free, and whose cluster bus port (+10000) is free too (below the usual
/// ephemeral range, spread by process so parallel test runs rarely meet).
fn free_port_with_bus() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    for _ in 0..1_000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let offset = (std::process::id().wrapping_mul(31).wrapping_add(n * 17)) % 12_000;
        let port = 10_000 + u16::try_from(offset).expect("below 12,000");
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair for a Redis Cluster node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_cluster_migrates_heralds_slot_instances_publish_deliver_and_resume() {
    let Some(redis) = OwnRedisCluster::start("while_redis_cluster_migrates") else {
        return;
    };
    let slot: u32 = redis_cli(redis.ports[0], &["cluster", "keyslot", "{herald}"])
        .trim()
        .parse()
        .expect("a slot number");
    let (from, to) = redis.owner_of(slot);
    let a = Herald::start(&["--dev", "--redis", &redis.url(from)]);
    let b = Herald::start(&["--dev", "--redis", &redis.url(to)]);
    let mut live = a.events().topic("t").open().await;
    let before = b
        .publish_ok(json!({"topics": ["t"], "data": "before"}))
        .await;
    assert_eq!(
        ids(&live.events_until(1, WAIT).await),
        std::slice::from_ref(&before)
    );

    // The migration starts, and the stream moves first: the other keys of the slot (the
    // node registry) are still on the old node, so the slot is served by both.
    let (from_id, to_id) = (
        OwnRedisCluster::identity(redis.ports[from], slot).0,
        OwnRedisCluster::identity(redis.ports[to], slot).0,
    );
    let slot_text = slot.to_string();
    let importing = ["cluster", "setslot", &slot_text, "importing", &from_id];
    assert_eq!(redis_cli(redis.ports[to], &importing).trim(), "OK");
    let migrating = ["cluster", "setslot", &slot_text, "migrating", &to_id];
    assert_eq!(redis_cli(redis.ports[from], &migrating).trim(), "OK");
    redis.migrate(from, to, &["{herald}:events"]);

    // Mid-migration, publishes on either instance, live delivery and a resume work: the old
    // node answers ASK for the stream, and the instances ask the new one.
    let during = [
        a.publish_ok(json!({"topics": ["t"], "data": "during 1"}))
            .await,
        b.publish_ok(json!({"topics": ["t"], "data": "during 2"}))
            .await,
    ];
    let got = live.events_until(2, WAIT).await;
    assert_eq!(ids(&got), during, "{}", live.raw_text());
    let mut resumed = b.events().topic("t").last_event_id(&before).open().await;
    assert_eq!(ids(&resumed.events_until(2, WAIT).await), during);

    // A publish with a new idempotency key names a key that is on neither node yet next to
    // the stream: Redis answers TRYAGAIN until the migration is done. It waits for that.
    let keyed = json!({"topics": ["t"], "data": "keyed", "idempotency_key": "k1"});
    let (keyed_answer, ()) = tokio::join!(a.publish(keyed.clone()), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The rest of the slot's keys move, and the slot is the new node's.
        let rest = redis_cli(
            redis.ports[from],
            &["cluster", "getkeysinslot", &slot_text, "1000"],
        );
        let rest: Vec<&str> = rest.lines().filter(|l| !l.is_empty()).collect();
        if !rest.is_empty() {
            redis.migrate(from, to, &rest);
        }
        redis.assign(slot, to);
    });
    assert_eq!(keyed_answer.0, http::StatusCode::OK, "{}", keyed_answer.1);
    let keyed_id = keyed_answer.1["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        b.publish_ok(keyed).await,
        keyed_id,
        "the retry is the same event"
    );
    let after = a
        .publish_ok(json!({"topics": ["t"], "data": "after"}))
        .await;
    let got = live.events_until(2, WAIT).await;
    assert_eq!(
        ids(&got),
        [keyed_id.clone(), after.clone()],
        "{}",
        live.raw_text()
    );
    let mut resumed = b.events().topic("t").last_event_id(&during[1]).open().await;
    assert_eq!(ids(&resumed.events_until(2, WAIT).await), [keyed_id, after]);
    assert!(
        a.stderr().contains("Redis Cluster moved"),
        "A followed the slot to its new node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_a_redis_cluster_whichever_node_each_is_given() {
    let Some(redis) = OwnRedisCluster::start("instances_share_a_redis_cluster") else {
        return;
    };
    // Every key of the deployment is in one slot, so two of the three are redirected.
    let a = Herald::start(&["--dev", "--redis", &redis.url(0)]);
    let b = Herald::start(&["--dev", "--redis", &redis.url(1)]);
    let c = Herald::start(&["--dev", "--redis", &redis.url(2)]);
    // The idempotency key's record and the stream are one script's keys: a cross-slot
    // error here would mean the hash tag is missing.
    publish_deliver_and_resume([&a, &c, &b, &c]).await;
    nodes_until(&a, "A lists all three instances", |answer| {
        node_names(answer).len() == 3
    })
    .await;
    let redirected = [&a, &b, &c]
        .iter()
        .filter(|h| h.stderr().contains("Redis Cluster moved"))
        .count();
    assert!(
        redirected >= 2,
        "the instances on the other nodes were redirected"
    );
}

/// A TCP proxy in front of Redis whose connections can be cut (and new ones refused) and let
/// through again: one instance's link to Redis failing while the others' stays up.
struct Cuttable {
    port: u16,
    cut: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    async fn start(to: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let port = listener.local_addr().expect("an address").port();
        let cut = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
        let watch = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = watch.subscribe();
                if *cut.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut redis) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut redis) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { port, cut, task }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_redis_sends_a_resume_it_cannot_read_back_unmoved() {
    let Some(shared) = cluster("an_instance_cut_off_from_redis_sends_a_resume_it_cannot_read")
    else {
        return;
    };
    let a = Herald::start(&shared.serve_args(&[]));
    // `redis://[user:password@]host:port[/db]`, as HERALD_TEST_REDIS holds it.
    let url = test_redis().expect("the test's Redis");
    let host_port = url
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .and_then(|rest| rest.split('/').next())
        .expect("a host and port");
    let to = std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .expect("Redis's address");
    let proxy = Cuttable::start(to).await;
    let b = Herald::start(&[
        "--dev",
        "--redis",
        &proxy.url(),
        "--redis-prefix",
        shared.prefix(),
    ]);
    let mut on_b = b.events().topic("t").open().await;
    let first = a.publish_ok(json!({"topics": ["t"], "data": "1"})).await;
    on_b.expect_event_id(&first).await;

    // b can no longer read the stream; a goes on publishing, and its client moves to b.
    proxy.set_cut(true);
    let second = a.publish_ok(json!({"topics": ["t"], "data": "2"})).await;
    let resumed = b.events().topic("t").last_event_id(&second).connect().await;
    let notice = resumed.assert_refused_for_now("log_unavailable").await;
    // No `id:`: the client keeps its own resume point, not b's older one.
    assert_eq!(notice.last_event_id, "", "{notice:?}");
    b.assert_logs("a client resumed from an id this instance has not read")
        .await;

    // Once b reads again, the same resume gets what follows, and nothing it had. A refusal
    // comes within the 2 s catch-up wait: a stream quiet for longer was taken.
    proxy.set_cut(false);
    let mut back = None;
    let deadline = std::time::Instant::now() + WAIT;
    while back.is_none() && std::time::Instant::now() < deadline {
        let mut sub = b.events().topic("t").last_event_id(&second).connect().await;
        match sub.next_event(Duration::from_secs(3)).await {
            Some(event) if event.event_type == "herald.closed" => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(event) => panic!("{event:?} before any new event: {}", sub.raw_text()),
            None => back = Some(sub),
        }
    }
    let mut back = back.expect("b takes the resume once it reads the stream again");
    let third = a.publish_ok(json!({"topics": ["t"], "data": "3"})).await;
    back.expect_event_id(&third).await;
    assert!(
        !back.raw_text().contains("herald.reset"),
        "{}",
        back.raw_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_busy_in_a_script_turns_publishes_away_with_503_until_it_is_free() {
    let Some(redis) = OwnRedis::start("a_redis_busy_in_a_script_turns_publishes_away_with_503")
    else {
        return;
    };
    let herald = Herald::start(&["--dev", "--redis", &redis.url()]);
    herald
        .publish_ok(json!({"topics": ["t"], "data": "before"}))
        .await;
    // A script that runs for ever: after 100 ms Redis answers every other command `BUSY`.
    redis_cli(
        redis.port,
        &["CONFIG", "SET", "busy-reply-threshold", "100"],
    );
    let mut busy = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "EVAL",
            "while true do end",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-cli");
    let turned_away = eventually(WAIT, || async {
        let (status, body) = herald
            .publish(json!({"topics": ["t"], "data": "busy"}))
            .await;
        status.as_u16() == 503
            && body["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot take writes now (BUSY"))
    })
    .await;
    redis_cli(redis.port, &["SCRIPT", "KILL"]);
    let _ = busy.wait();
    assert!(turned_away, "{}", herald.stderr());
    publish_once_redis_is_back(&herald, json!({"topics": ["t"], "data": "after"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_evicts_keys_when_full_is_warned_about_at_start() {
    let Some(redis) = OwnRedis::start("a_redis_that_evicts_keys_when_full_is_warned_about") else {
        return;
    };
    // Without a memory limit nothing is ever evicted, whatever the policy.
    redis_cli(
        redis.port,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    );
    let unlimited = Herald::start(&["--dev", "--redis", &redis.url()]);
    unlimited
        .publish_ok(json!({"topics": ["t"], "data": "x"}))
        .await;
    assert!(
        !unlimited.stderr().contains("Redis evicts keys"),
        "{}",
        unlimited.stderr()
    );
    redis_cli(redis.port, &["CONFIG", "SET", "maxmemory", "100mb"]);
    let evicting = Herald::start(&["--dev", "--redis", &redis.url()]);
    evicting
        .assert_logs("Redis evicts keys when it is full (maxmemory-policy allkeys-lru)")
        .await;
}
