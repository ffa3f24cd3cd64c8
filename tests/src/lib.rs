//! End-to-end test support: start the real `herald` binary on a free port with a temp data
//! dir, subscribe to it over HTTP/1.1 or HTTP/2 and read the stream with the core
//! [`Parser`], publish, call the admin API, and kill the process when the test ends.
//!
//! Every wait is bounded: a test that would hang fails with a message instead (and the
//! server's stderr when the server is involved).
//!
//! ```no_run
//! # async fn example() {
//! use herald_tests::{Herald, WAIT};
//! use serde_json::json;
//!
//! let herald = Herald::start(&["--dev"]);
//! let mut sub = herald.events().topic("orders").open().await;
//! let id = herald.publish_ok(json!({"topics": ["orders"], "data": "hi"})).await;
//! let event = sub.next_event(WAIT).await.expect("the published event");
//! assert_eq!(event.last_event_id, id);
//! # }
//! ```

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use herald_core::{ParsedEvent, Parser};
use hmac::{Hmac, Mac};
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The default bound for one wait in a test: an event, a response, a stream's end.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long the server may take to print its address.
const START_WAIT: Duration = Duration::from_secs(20);

/// How long bringing the binary up to date may take.
const BUILD_WAIT: Duration = Duration::from_secs(900);

/// What `herald serve` prints on stdout once it listens.
const READY_PREFIX: &str = "herald listening on ";

/// The `herald` binary under test: `$HERALD_BIN` if set, else the one next to the test
/// executable (`target/<profile>/herald`), brought up to date once per test process with
/// `cargo build -p herald-server --bin herald` (a no-op when nothing changed; cargo does not
/// build another package's binaries for this crate's tests).
pub fn herald_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("HERALD_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => locate_or_build("herald-server", "herald"),
    })
}

/// The `herald-tui` binary, found and brought up to date like [`herald_bin`].
pub fn tui_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| locate_or_build("herald-tui", "herald-tui"))
}

fn locate_or_build(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/herald
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args(["build", "-p", package, "--bin", name]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let out = run_bounded(&mut build, BUILD_WAIT);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if bin.exists() {
            // Someone's edit in progress does not compile: test the last good binary.
            eprintln!(
                "warning: `cargo build -p {package}` failed; testing the existing {}\n{stderr}",
                bin.display()
            );
        } else {
            panic!("cannot build {name}:\n{stderr}");
        }
    }
    assert!(
        bin.exists(),
        "cargo built {name} but {} does not exist",
        bin.display()
    );
    bin
}

/// Runs a command to completion, killing it after `timeout`; stdout and stderr are captured.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = match wait_bounded(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            panic!(
                "{cmd:?} did not finish within {timeout:?}:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Polls `child` until it exits or `timeout` passes.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Mints a token with `herald token --jwt-secret <secret> <args>`, e.g.
/// `mint_token("s", &["--sub", "alice", "--subscribe", "orders", "--ttl", "1h"])`.
pub fn mint_token(secret: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(herald_bin());
    cmd.arg("token").arg("--jwt-secret").arg(secret).args(args);
    clear_herald_env(&mut cmd);
    let out = run_bounded(&mut cmd, WAIT);
    assert!(
        out.status.success(),
        "herald token {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("a token is ASCII")
        .trim()
        .to_owned()
}

/// Publishes one idempotency key as `mallory` on `a`, then as `billing` on `b` and again as
/// `billing` on `a` (servers with `--jwt-secret secret`): a key is its publisher's own, so
/// mallory's guess neither stops billing's event nor tells its id, and billing's retry is
/// answered with billing's id. A subscriber on `b` gets both events, once each.
pub async fn assert_keys_are_the_publishers_own(a: &Herald, b: &Herald, secret: &str) {
    let token = |sub: &str| mint_token(secret, &["--sub", sub, "--publish", "--subscribe", "*"]);
    let (billing, mallory) = (token("billing"), token("mallory"));
    let mut sub = b.events().token(&billing).topic("invoices").open().await;
    let publish = |on: &'static str, token: &str, data: &str| {
        let herald = if on == "a" { a } else { b };
        let body = json!({"topics": ["invoices"], "data": data, "idempotency_key": "invoice-1001"});
        let token = token.to_owned();
        async move {
            let (status, answer) = herald.publish_as(&token, body).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            answer["id"].as_str().expect("an id").to_owned()
        }
    };
    let forged = publish("a", &mallory, "forged").await;
    let real = publish("b", &billing, "real").await;
    let retried = publish("a", &billing, "real").await;
    assert_ne!(forged, real);
    assert_eq!(retried, real);
    let got = sub.events_until(2, WAIT).await;
    let got: Vec<_> = got
        .iter()
        .map(|e| (e.last_event_id.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(
        got,
        [(forged.as_str(), "forged"), (real.as_str(), "real")],
        "{}",
        sub.raw_text()
    );
}

/// `POST /publish` of `body` as raw HTTP/1.1, for a test that writes to a bare socket.
pub fn raw_publish(body: &str) -> String {
    format!(
        "POST /publish HTTP/1.1\r\nHost: herald\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Waits until something listens on `127.0.0.1:port` (a helper process the test started),
/// failing the test after [`WAIT`]; `what` names it in the failure.
pub fn wait_until_listening(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `herald serve --dev` with `extra`, which must make it exit at start-up; returns what
/// it printed on stderr.
pub fn serve_fails(extra: &[&str]) -> String {
    let mut args = vec!["--dev"];
    args.extend(extra);
    serve_refused(&args)
}

/// Runs `herald serve` with `args` (and no `HERALD_*` settings from the environment) in a
/// directory of its own (where the default data dir would be), which must make it exit at
/// start-up; returns what it printed on stderr. Paths in `args` must be absolute.
pub fn serve_refused(args: &[&str]) -> String {
    let cwd = tempfile::tempdir().expect("a temp dir");
    let mut cmd = Command::new(herald_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(cwd.path())
        .env("RUST_BACKTRACE", "0");
    clear_herald_env(&mut cmd);
    let out = run_bounded(&mut cmd, WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "herald {args:?} started: {stderr}");
    stderr
}

/// Signs arbitrary `claims` as an HS256 JWT: for tokens `herald token` will not mint (already
/// expired, odd claims).
pub fn sign_jwt(secret: &str, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{body}");
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{input}.{sig}")
}

/// Unix time in seconds, for hand-made token claims.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A test CA and a server certificate it issued for `localhost` and `127.0.0.1` (PEM files).
pub struct TestCerts {
    /// The CA's certificate: what a client is told to trust.
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

/// Writes a CA and a server certificate it signed into `dir` with the `openssl` command. The
/// server certificate is an end-entity one (not a CA), as rustls clients require.
pub fn test_certs(dir: &Path) -> TestCerts {
    std::fs::write(
        dir.join("cert.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write the extensions file");
    // Run in `dir`, so every file is named by a plain relative name.
    let openssl = |args: &str| {
        let args: Vec<&str> = args.split(' ').collect();
        let out = run_bounded(Command::new("openssl").args(&args).current_dir(dir), WAIT);
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The CA (self-signed, a CA by openssl's defaults), the server's key and signing request,
    // then the CA's signature on it.
    openssl(
        "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=herald-test-ca \
         -keyout ca-key.pem -out ca.pem",
    );
    openssl("req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out cert.csr");
    openssl(
        "x509 -req -days 2 -set_serial 2 -in cert.csr -CA ca.pem -CAkey ca-key.pem \
         -extfile cert.ext -out cert.pem",
    );
    TestCerts {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

/// Writes a self-signed certificate for `names` (`subjectAltName` entries such as
/// `IP:127.0.0.1`) and its key into `dir` as `<stem>.pem` and `<stem>-key.pem`, made the way
/// guides show (`openssl req -x509`), which marks it a CA.
pub fn self_signed_cert(dir: &Path, stem: &str, names: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (format!("{stem}.pem"), format!("{stem}-key.pem"));
    let san = format!("subjectAltName={names}");
    let args = [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=herald",
        "-addext",
        &san,
        "-keyout",
        &key,
        "-out",
        &cert,
    ];
    let out = run_bounded(Command::new("openssl").args(args).current_dir(dir), WAIT);
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir.join(cert), dir.join(key))
}

/// `herald serve --dev` over HTTPS with a certificate from a fresh test CA.
pub struct HttpsHerald {
    /// The server.
    pub herald: Herald,
    /// The test CA's certificate (PEM), for clients to trust.
    pub ca: String,
    _certs: tempfile::TempDir,
}

impl HttpsHerald {
    /// Starts it with `extra` flags after `--dev --tls-cert .. --tls-key ..`.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_open_files(None, extra)
    }

    /// Starts it like [`HttpsHerald::start`], under `ulimit -n <open_files>` if given.
    pub fn start_with_open_files(open_files: Option<u32>, extra: &[&str]) -> Self {
        let certs = tempfile::tempdir().expect("a temp dir");
        let TestCerts { ca, cert, key } = test_certs(certs.path());
        let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
        let (cert, key) = (path(&cert), path(&key));
        let mut args = vec!["--dev", "--tls-cert", &cert, "--tls-key", &key];
        args.extend_from_slice(extra);
        let herald = Herald::start_with_open_files(open_files, &args);
        assert!(herald.url("").starts_with("https://"), "{}", herald.url(""));
        Self {
            herald,
            ca: path(&ca),
            _certs: certs,
        }
    }
}

/// Keeps the child's environment free of the runner's `HERALD_*` settings.
pub fn clear_herald_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            cmd.env_remove(name);
        }
    }
}

/// The Redis that cluster-mode tests share (`HERALD_TEST_REDIS`, e.g.
/// `redis://127.0.0.1:6379`, which `.ci/run` sets). Without it a test calls [`skip`] and
/// returns.
pub fn test_redis() -> Option<String> {
    std::env::var("HERALD_TEST_REDIS")
        .ok()
        .filter(|url| !url.is_empty())
}

/// Says plainly that `test` did not run, and why (it shows with `--nocapture` and in the
/// output of a failing run).
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED: {test}: {why}");
}

/// A key prefix of its own in the test Redis for one test's cluster (`--redis-prefix`),
/// whose keys are deleted when it is dropped, so tests running at once never share a stream.
pub struct RedisPrefix {
    url: String,
    prefix: String,
}

impl RedisPrefix {
    /// A fresh prefix on the Redis at `url`.
    pub fn new(url: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            url: url.to_owned(),
            prefix: format!("herald-test-{}-{n}-{}", std::process::id(), unix_now()),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `["--dev", "--redis", URL, "--redis-prefix", PREFIX]` plus `extra`: the flags of one
    /// instance of this test's cluster.
    pub fn serve_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "--dev",
            "--redis",
            &self.url,
            "--redis-prefix",
            &self.prefix,
        ];
        args.extend_from_slice(extra);
        args
    }

    /// Runs one Redis command on a new connection.
    pub fn query(&self, args: &[&[u8]]) -> Result<herald_server::redis::Value, String> {
        let config: herald_server::redis::RedisConfig =
            self.url.parse().map_err(|e| format!("{e}"))?;
        let mut conn = herald_server::redis::Connection::open(&config, WAIT)
            .map_err(|e| format!("cannot reach Redis at {}: {e}", self.url))?;
        conn.query(args).map_err(|e| e.to_string())
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.prefix);
        let Ok(keys) = self.query(&[b"KEYS", pattern.as_bytes()]) else {
            return;
        };
        for key in keys.into_array().unwrap_or_default() {
            if let Some(key) = key.as_bytes() {
                let _ = self.query(&[b"DEL", key]);
            }
        }
    }
}

/// A running `herald serve` with its own temp data dir; SIGKILLed when dropped.
///
/// Started with `serve --listen 127.0.0.1:0 --data-dir <tempdir>` plus the test's flags; the
/// port comes from the line the server prints. [`Herald::restart`] starts it again on the same
/// data dir and port.
pub struct Herald {
    child: Option<Child>,
    dir: tempfile::TempDir,
    args: Vec<String>,
    client: Client,
    stderr: Arc<Mutex<String>>,
    open_files: Option<u32>,
}

impl Herald {
    /// Starts `herald serve` with `args` (e.g. `&["--dev"]`), panicking with its stderr if it
    /// does not report its address within 20 s.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_open_files(None, args)
    }

    /// Starts it like [`Herald::start`], under `ulimit -n <open_files>` if given.
    pub fn start_with_open_files(open_files: Option<u32>, args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("herald-e2e-")
            .tempdir()
            .expect("a temp dir");
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (child, client) = spawn_server(dir.path(), "127.0.0.1:0", &args, &stderr, open_files)
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            child: Some(child),
            dir,
            args,
            client,
            stderr,
            open_files,
        }
    }

    /// A cheap, `'static` handle for requests (for spawned tasks).
    pub fn client(&self) -> Client {
        self.client
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.client.addr
    }

    /// `http://127.0.0.1:PORT{path}` (or `https` when serving TLS).
    pub fn url(&self, path: &str) -> String {
        self.client.url(path)
    }

    /// The data directory (kept for the life of this value, across restarts).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id of the running server, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the server (all its runs) wrote to stderr so far.
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// Waits until the server has logged `text` (within [`WAIT`]), failing the test with what
    /// it did log otherwise.
    pub async fn assert_logs(&self, text: &str) {
        let logged = eventually(WAIT, || async { self.stderr().contains(text) }).await;
        assert!(logged, "{text:?} was not logged:\n{}", self.stderr());
    }

    /// SIGKILL, then reap: a crash, with no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (a graceful shutdown); see [`Herald::wait_exit`].
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `signal` to the running server (SIGSTOP and SIGCONT freeze and thaw it).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid().expect("the server is running");
        let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
        // SAFETY: kill(2) with a pid of our own child and a valid signal number.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
    }

    /// Waits (bounded) for the server to exit on its own; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = wait_bounded(child, timeout)?;
        self.child = None;
        Some(status)
    }

    /// Starts the server again on the same data dir and port with the same flags, after
    /// SIGKILLing it if it still runs.
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.client.addr.to_string();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match spawn_server(
                self.dir.path(),
                &listen,
                &self.args,
                &self.stderr,
                self.open_files,
            ) {
                Ok((child, client)) => {
                    assert_eq!(client.addr, self.client.addr, "restarted on another port");
                    self.child = Some(child);
                    return;
                }
                // The port can still be held for a moment by the dying process's sockets.
                Err(e) if e.contains("cannot listen") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// A subscription to `GET /events`; add topics, credentials, then `open` or `connect`.
    pub fn events(&self) -> Events {
        self.client.events()
    }

    /// A subscription to the admin stream `GET /admin/events`.
    pub fn admin_events(&self) -> Events {
        self.client.admin_events()
    }

    /// A request to `path`; add headers and a body, then `send`.
    pub fn call(&self, method: Method, path: &str) -> Call {
        self.client.call(method, path)
    }

    /// `POST /publish` without credentials (for `--dev` servers): status and JSON answer.
    pub async fn publish(&self, body: Value) -> (StatusCode, Value) {
        self.client.publish(body).await
    }

    /// `POST /publish` with a bearer token: status and JSON answer.
    pub async fn publish_as(&self, token: &str, body: Value) -> (StatusCode, Value) {
        self.client.publish_as(token, body).await
    }

    /// `POST /publish` that must succeed (`--dev`); returns the event id.
    pub async fn publish_ok(&self, body: Value) -> String {
        self.client.publish_ok(body).await
    }

    /// The open connections from `GET /admin/connections` (`--dev`, or pass a token to
    /// [`Client::connections_as`]).
    pub async fn connections(&self) -> Vec<Value> {
        self.client.connections_as(None).await
    }

    /// A subscriber to `topic` (`--dev`) on a bare socket that reads only when the test reads
    /// it, with a receive buffer of `recv_buffer` bytes if given; returned once it is the
    /// server's only connection. With `after_a_request` it first asks for `/healthz` on the
    /// same connection, so that its stream is served by hyper, as HTTPS streams are, rather
    /// than by the direct path that takes a connection's first request.
    /// `n` bare connections that each send a subscribe request to `topic` and read nothing:
    /// a crowd that holds the server's sockets (the kernel queues those the server does not
    /// take, so each connects whether or not it is served).
    pub async fn crowd(&self, n: usize, topic: &str) -> Vec<TcpStream> {
        use tokio::io::AsyncWriteExt as _;
        let request = format!("GET /events?topic={topic} HTTP/1.1\r\nHost: herald\r\n\r\n");
        let mut crowd = Vec::with_capacity(n);
        for _ in 0..n {
            let mut socket = TcpStream::connect(self.addr()).await.expect("connect");
            socket.write_all(request.as_bytes()).await.expect("send");
            crowd.push(socket);
        }
        crowd
    }

    pub async fn stalled_subscriber(
        &self,
        topic: &str,
        recv_buffer: Option<u32>,
        after_a_request: bool,
    ) -> TcpStream {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        }
        let mut tcp = socket.connect(self.addr()).await.expect("connect");
        if after_a_request {
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
                .await
                .expect("request");
            // The whole answer (a small JSON body), so the stream's bytes start clean.
            let mut answer = Vec::new();
            while !answer.ends_with(b"}") {
                let mut chunk = [0u8; 512];
                let n = tcp.read(&mut chunk).await.expect("the health answer");
                assert!(n > 0, "closed after /healthz");
                answer.extend_from_slice(&chunk[..n]);
            }
        }
        let request = format!("GET /events?topic={topic} HTTP/1.1\r\nHost: herald\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("request");
        assert!(
            eventually(WAIT, || async { self.connections().await.len() == 1 }).await,
            "the subscriber is connected"
        );
        tcp
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- herald stderr ---\n{}--- end ---", self.stderr());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Spawns `herald serve` and waits for its address; on failure, the reason and its stderr.
fn spawn_server(
    dir: &Path,
    listen: &str,
    args: &[String],
    stderr: &Arc<Mutex<String>>,
    open_files: Option<u32>,
) -> Result<(Child, Client), String> {
    let mut cmd = match open_files {
        None => Command::new(herald_bin()),
        Some(limit) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                .arg(herald_bin());
            sh
        }
    };
    cmd.arg("serve").args(["--listen", listen]);
    // Cluster mode keeps no data dir (and refuses one); a test may name its own.
    if !args.iter().any(|a| a == "--redis" || a == "--data-dir") {
        cmd.arg("--data-dir").arg(dir);
    }
    cmd.args(args);
    clear_herald_env(&mut cmd);
    let log = std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "info".into());
    cmd.env("HERALD_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", herald_bin().display()))?;

    lock(stderr).push_str(&format!("=== herald serve --listen {listen} {args:?}\n"));
    let err_pipe = child.stderr.take().expect("piped stderr");
    let err_log = stderr.clone();
    let err_thread = std::thread::spawn(move || {
        let mut lines = BufReader::new(err_pipe);
        let mut line = String::new();
        while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
            lock(&err_log).push_str(&line);
            line.clear();
        }
    });
    let out_pipe = child.stdout.take().expect("piped stdout");
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after the address so the server never blocks on a full pipe.
        for line in BufReader::new(out_pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix(READY_PREFIX) {
                let _ = ready_tx.send(url.to_owned());
            }
        }
    });

    let url = match ready_rx.recv_timeout(START_WAIT) {
        Ok(url) => url,
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            let _ = err_thread.join();
            let why = match e {
                mpsc::RecvTimeoutError::Timeout => format!("did not listen within {START_WAIT:?}"),
                mpsc::RecvTimeoutError::Disconnected => format!("exited ({status:?})"),
            };
            return Err(format!(
                "herald serve {why}; stderr:\n{}",
                lock(stderr).as_str()
            ));
        }
    };
    let (scheme, addr) = url
        .split_once("://")
        .ok_or_else(|| format!("unexpected address line {url:?}"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("unexpected address {addr:?}: {e}"))?;
    let tls = scheme == "https";
    Ok((child, Client { addr, tls }))
}

/// Where a server listens; every request opens its own connection. Cheap to copy into tasks.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    addr: SocketAddr,
    tls: bool,
}

impl Client {
    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// A subscription to `GET /events`.
    pub fn events(&self) -> Events {
        Events::new(*self, "/events")
    }

    /// A subscription to `GET /admin/events`.
    pub fn admin_events(&self) -> Events {
        Events::new(*self, "/admin/events")
    }

    /// A request to `path`.
    pub fn call(&self, method: Method, path: &str) -> Call {
        Call {
            client: *self,
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
            h2: None,
        }
    }

    /// `POST /publish` without credentials: status and JSON answer.
    pub async fn publish(&self, body: Value) -> (StatusCode, Value) {
        let reply = self.call(Method::POST, "/publish").json(&body).send().await;
        (reply.status, reply.json())
    }

    /// `POST /publish` with a bearer token: status and JSON answer.
    pub async fn publish_as(&self, token: &str, body: Value) -> (StatusCode, Value) {
        let reply = self
            .call(Method::POST, "/publish")
            .bearer(token)
            .json(&body)
            .send()
            .await;
        (reply.status, reply.json())
    }

    /// `POST /publish` that must succeed; returns the event id.
    pub async fn publish_ok(&self, body: Value) -> String {
        let (status, answer) = self.publish(body.clone()).await;
        assert_eq!(status, StatusCode::OK, "publish {body} answered {answer}");
        answer["id"]
            .as_str()
            .unwrap_or_else(|| panic!("publish answered without an id: {answer}"))
            .to_owned()
    }

    /// The rows of `GET /admin/connections`, with an admin token or none (`--dev`).
    pub async fn connections_as(&self, token: Option<&str>) -> Vec<Value> {
        let mut call = self.call(Method::GET, "/admin/connections");
        if let Some(t) = token {
            call = call.bearer(t);
        }
        let reply = call.send().await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()["connections"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no connections array in {}", reply.text()))
    }
}

/// Polls `check` every 20 ms until it is true or `timeout` passes; returns whether it became
/// true. Use instead of sleeping for something asynchronous (a disconnect, a trim).
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One HTTP/1.1 request (a new connection each time) with a bounded wait for the answer.
#[derive(Debug)]
pub struct Call {
    client: Client,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    /// HTTP/2 on a connection of its own (`Some(None)`) or on a shared one; HTTP/1.1 if `None`.
    h2: Option<Option<H2Connection>>,
}

impl Call {
    /// Speaks HTTP/2 with prior knowledge on a connection of its own.
    pub fn http2(mut self) -> Self {
        self.h2 = Some(None);
        self
    }

    /// Speaks HTTP/2 as one more stream on `conn`.
    pub fn over(mut self, conn: &H2Connection) -> Self {
        self.h2 = Some(Some(conn.clone()));
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Sends `value` as a JSON body.
    pub fn json(self, value: &Value) -> Self {
        self.raw_body("application/json", value.to_string().into_bytes())
    }

    /// Sends `body` as is, with this content type.
    pub fn raw_body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.headers
            .push(("content-type".to_owned(), content_type.to_owned()));
        self.body = Bytes::from(body);
        self
    }

    /// Sends it; panics if the server cannot be reached or does not answer within [`WAIT`].
    pub async fn send(self) -> Reply {
        let what = format!("{} {}", self.method, self.path);
        self.try_send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Sends it; an error if the server cannot be reached or does not answer within [`WAIT`].
    pub async fn try_send(self) -> Result<Reply, String> {
        assert!(!self.client.tls, "Call speaks plain HTTP; use curl for TLS");
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut req = Request::builder().method(self.method);
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        let over = self.h2;
        // `_conn` drives the connection; it must live until the body has been read.
        let (res, _conn) =
            send_request(self.client, over, req, &self.path, self.body, deadline).await?;
        let res = res
            .map_err(|_| "no answer in time".to_owned())?
            .map_err(|e| e.to_string())?;
        let (parts, body) = res.into_parts();
        let body = tokio::time::timeout_at(deadline, body.collect())
            .await
            .map_err(|_| "the body did not end in time".to_owned())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The message of a JSON error answer; panics, showing the answer, if it is not one.
    pub fn error(&self) -> String {
        error_message(self.header("content-type"), &self.body)
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The `error` of a JSON error body, which every refusal of Herald's carries.
fn error_message(content_type: Option<&str>, body: &[u8]) -> String {
    let shown = String::from_utf8_lossy(body);
    assert_eq!(
        content_type,
        Some("application/json"),
        "not a JSON error: {shown}"
    );
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no error message in {shown}"))
}

/// Aborts the task driving a client connection when the last user of it goes away, which
/// closes the socket.
#[derive(Debug)]
struct ConnTask(JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connect_tcp(
    addr: SocketAddr,
    deadline: tokio::time::Instant,
) -> Result<TcpStream, String> {
    let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

async fn http1_connection(
    addr: SocketAddr,
    deadline: tokio::time::Instant,
) -> Result<(http1::SendRequest<Full<Bytes>>, Arc<ConnTask>), String> {
    let tcp = connect_tcp(addr, deadline).await?;
    let (sender, conn) = tokio::time::timeout_at(deadline, http1::handshake(TokioIo::new(tcp)))
        .await
        .map_err(|_| "HTTP/1.1 handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((sender, Arc::new(ConnTask(task))))
}

/// What [`send_request`] got: the response head, or why none came (`Elapsed`: not before the
/// deadline).
type Answer = Result<Result<http::Response<Incoming>, hyper::Error>, tokio::time::error::Elapsed>;

/// Sends `req` (its method and headers set) for `target` (a path and query) with `body`:
/// over HTTP/1.1 on a connection of its own (`over` is `None`), or HTTP/2 on a connection of
/// its own (`Some(None)`) or on a shared one. Returns the answer and the task driving the
/// connection, which must live until the body has been read; `Err` if the request could not
/// be sent.
async fn send_request(
    client: Client,
    over: Option<Option<H2Connection>>,
    req: http::request::Builder,
    target: &str,
    body: Bytes,
    deadline: tokio::time::Instant,
) -> Result<(Answer, Arc<ConnTask>), String> {
    let body = Full::new(body);
    Ok(match over {
        None => {
            let (mut sender, conn) = http1_connection(client.addr, deadline).await?;
            let req = req
                .uri(target)
                .header(header::HOST, client.addr.to_string())
                .body(body)
                .map_err(|e| e.to_string())?;
            (
                tokio::time::timeout_at(deadline, sender.send_request(req)).await,
                conn,
            )
        }
        Some(shared) => {
            let h2 = match shared {
                Some(h2) => h2,
                None => H2Connection::open(client).await,
            };
            let req = req
                .uri(client.url(target))
                .body(body)
                .map_err(|e| e.to_string())?;
            let mut sender = h2.sender.clone();
            (
                tokio::time::timeout_at(deadline, sender.send_request(req)).await,
                h2.task,
            )
        }
    })
}

/// One HTTP/2 connection (prior knowledge, no TLS) that several subscriptions can share, as
/// a browser's tabs share one connection to an origin.
#[derive(Clone, Debug)]
pub struct H2Connection {
    sender: http2::SendRequest<Full<Bytes>>,
    task: Arc<ConnTask>,
}

impl H2Connection {
    /// Whether the server closed the connection within `wait` (checked every 20 ms).
    pub async fn closed_within(&self, wait: Duration) -> bool {
        eventually(wait, || async { self.task.0.is_finished() }).await
    }

    /// Opens the connection and does the HTTP/2 handshake (bounded by [`WAIT`]).
    pub async fn open(client: Client) -> Self {
        let deadline = tokio::time::Instant::now() + WAIT;
        let tcp = connect_tcp(client.addr, deadline)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (sender, conn) = tokio::time::timeout_at(
            deadline,
            http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)),
        )
        .await
        .expect("HTTP/2 handshake in time")
        .expect("HTTP/2 handshake with prior knowledge");
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Self {
            sender,
            task: Arc::new(ConnTask(task)),
        }
    }
}

/// A subscription request being built: topics, credentials, resume point, protocol.
#[derive(Debug)]
pub struct Events {
    client: Client,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    h2: Option<Option<H2Connection>>,
    timeout: Duration,
}

impl Events {
    fn new(client: Client, path: &str) -> Self {
        Self {
            client,
            path: path.to_owned(),
            query: Vec::new(),
            headers: vec![("accept".into(), "text/event-stream".into())],
            h2: None,
            timeout: WAIT,
        }
    }

    /// Subscribes to a topic or `prefix/*` pattern (`?topic=`).
    pub fn topic(self, topic: &str) -> Self {
        self.query("topic", topic)
    }

    /// Adds a query parameter (percent-encoded here).
    pub fn query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn token(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Adds the `Last-Event-ID` header, as a reconnecting EventSource does.
    pub fn last_event_id(self, id: &str) -> Self {
        self.header("last-event-id", id)
    }

    /// Speaks HTTP/2 with prior knowledge on a connection of its own.
    pub fn http2(mut self) -> Self {
        self.h2 = Some(None);
        self
    }

    /// Speaks HTTP/2 as one more stream on `conn`.
    pub fn over(mut self, conn: &H2Connection) -> Self {
        self.h2 = Some(Some(conn.clone()));
        self
    }

    fn path_and_query(&self) -> String {
        let mut s = self.path.clone();
        for (i, (k, v)) in self.query.iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            s.push_str(&percent_encode(k));
            s.push('=');
            s.push_str(&percent_encode(v));
        }
        s
    }

    /// Sends the request and returns whatever the server answered, with the whole body read
    /// when it is not a 200. Panics if the server cannot be reached or does not answer in time.
    pub async fn connect(self) -> Subscriber {
        assert!(
            !self.client.tls,
            "Events speaks plain HTTP; use curl for TLS"
        );
        let deadline = tokio::time::Instant::now() + self.timeout;
        let target = self.path_and_query();
        let mut req = Request::builder().method(Method::GET);
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        let (res, conn) = send_request(self.client, self.h2, req, &target, Bytes::new(), deadline)
            .await
            .unwrap_or_else(|e| panic!("GET {target}: {e}"));
        let res = res
            .unwrap_or_else(|_| {
                panic!(
                    "GET {target}: no response headers within {:?}",
                    self.timeout
                )
            })
            .unwrap_or_else(|e| panic!("GET {target}: {e}"));
        let (parts, body) = res.into_parts();
        let mut sub = Subscriber {
            target,
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: Some(body),
            parser: Parser::new(),
            raw: Vec::new(),
            events: VecDeque::new(),
            end: None,
            _conn: conn,
        };
        if sub.status != StatusCode::OK {
            sub.wait_end(WAIT).await;
        }
        sub
    }

    /// Like [`Events::connect`], and asserts an event stream: 200, `text/event-stream`,
    /// `Cache-Control: no-cache`, `X-Accel-Buffering: no`, and a first `retry:` frame.
    pub async fn open(self) -> Subscriber {
        let mut sub = self.connect().await;
        assert_eq!(
            sub.status,
            StatusCode::OK,
            "GET {} answered {}: {}",
            sub.target,
            sub.status,
            sub.raw_text()
        );
        assert_eq!(sub.header("content-type"), Some("text/event-stream"));
        assert_eq!(sub.header("cache-control"), Some("no-cache"));
        assert_eq!(sub.header("x-accel-buffering"), Some("no"));
        // The first frame is `retry:` and arrives at once: that is how we know the
        // subscription is registered before the test publishes.
        let deadline = tokio::time::Instant::now() + WAIT;
        while sub.parser.retry().is_none() && sub.read_more(deadline).await {}
        assert!(
            sub.parser.retry().is_some(),
            "GET {}: no retry frame; got {:?} ({:?})",
            sub.target,
            sub.raw_text(),
            sub.end
        );
        sub
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The body ended properly (the last chunk of HTTP/1.1, END_STREAM on HTTP/2).
    Clean,
    /// The connection broke (reset, cut mid-body).
    Error(String),
}

/// An open (or refused) subscription, read through the core [`Parser`] as an EventSource
/// would read it. Dropping it closes the connection.
#[derive(Debug)]
pub struct Subscriber {
    target: String,
    status: StatusCode,
    version: http::Version,
    headers: HeaderMap,
    body: Option<Incoming>,
    parser: Parser,
    raw: Vec<u8>,
    events: VecDeque<ParsedEvent>,
    end: Option<End>,
    _conn: Arc<ConnTask>,
}

impl Subscriber {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The HTTP version the response came with.
    pub fn version(&self) -> http::Version {
        self.version
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every body byte received so far.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The body so far as text.
    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// The body as JSON (for error answers; `Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.raw).unwrap_or(Value::Null)
    }

    /// The message of a JSON error answer; panics, showing the answer, if it is not one.
    pub fn error(&self) -> String {
        error_message(self.header("content-type"), &self.raw)
    }

    /// The reconnection time from the last valid `retry:` field.
    pub fn retry(&self) -> Option<u64> {
        self.parser.retry()
    }

    /// The last event id, as a reconnecting EventSource would send it.
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// Comment lines (keep-alives) seen.
    pub fn comments(&self) -> u64 {
        self.parser.comments()
    }

    /// How the stream ended, if it has.
    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// Reads one more chunk, waiting until `deadline`; false once the stream ended or the
    /// deadline passed.
    async fn read_more(&mut self, deadline: tokio::time::Instant) -> bool {
        let Some(body) = self.body.as_mut() else {
            return false;
        };
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => false,
            Ok(None) => {
                self.finish(End::Clean);
                false
            }
            Ok(Some(Err(e))) => {
                self.finish(End::Error(e.to_string()));
                false
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    self.raw.extend_from_slice(&data);
                    self.events.extend(self.parser.feed(&data));
                }
                true
            }
        }
    }

    fn finish(&mut self, end: End) {
        self.body = None;
        self.parser.finish();
        self.end = Some(end);
    }

    /// Whether the server took this stream: a 200 whose first block is not a refusal's
    /// `herald.closed` (see [`Subscriber::assert_refused_for_now`]). Waits for that block.
    pub async fn admitted(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.raw.windows(2).any(|w| w == b"\n\n") && self.read_more(deadline).await {}
        self.status == StatusCode::OK
            && self.raw.windows(2).any(|w| w == b"\n\n")
            && !self.raw_text().contains("event: herald.closed")
    }

    /// Asserts that this stream was refused for now by a limit: a 200 (a browser's
    /// `EventSource` would give up for good on any other status) whose only block is a
    /// `herald.closed` naming `reason` with a jittered `retry:` (3 s base), and that then
    /// ends. Returns that block: its `last_event_id` is where the client resumes.
    pub async fn assert_refused_for_now(mut self, reason: &str) -> ParsedEvent {
        assert_eq!(self.status(), StatusCode::OK, "{}", self.raw_text());
        assert_eq!(self.header("content-type"), Some("text/event-stream"));
        let notice = self.next_event(WAIT).await.expect("the refusal's notice");
        assert_eq!(notice.event_type, "herald.closed", "{}", self.raw_text());
        let data: Value = serde_json::from_str(&notice.data).expect("a JSON notice");
        assert_eq!(data["reason"], reason, "{}", self.raw_text());
        assert_eq!(self.wait_end(WAIT).await, Some(End::Clean));
        let retry = self.retry().expect("a retry: field");
        assert!(
            (3000..6000).contains(&retry),
            "retry {retry} is the 3 s base plus jitter"
        );
        notice
    }

    /// Asserts that the next event, within [`WAIT`], has id `id`.
    pub async fn expect_event_id(&mut self, id: &str) {
        let event = self.next_event(WAIT).await.expect("the event");
        assert_eq!(event.last_event_id, id, "{}", self.raw_text());
    }

    /// The next event, waiting at most `timeout`; `None` on timeout or when the stream ends.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<ParsedEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            if !self.read_more(deadline).await {
                return self.events.pop_front();
            }
        }
    }

    /// The next event of type `event_type`, skipping others (stats samples, say).
    pub async fn next_event_of_type(
        &mut self,
        event_type: &str,
        timeout: Duration,
    ) -> Option<ParsedEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next_event(left).await?;
            if event.event_type == event_type {
                return Some(event);
            }
        }
    }

    /// Up to `n` events, waiting at most `timeout` in all; fewer if time runs out or the
    /// stream ends.
    pub async fn events_until(&mut self, n: usize, timeout: Duration) -> Vec<ParsedEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(event) => out.push(event),
                None => break,
            }
        }
        out
    }

    /// Reads (buffering events for `next_event`) until the stream ends or `timeout` passes;
    /// how it ended, or `None` if it is still open.
    pub async fn wait_end(&mut self, timeout: Duration) -> Option<End> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.read_more(deadline).await {}
        self.end.clone()
    }
}
