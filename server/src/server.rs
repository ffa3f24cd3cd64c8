//! `herald serve`: opens the log, starts the hub, accepts connections, shuts down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use herald_core::{Engine, EngineConfig};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpSocket;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::auth::{JwtKeys, VerifyKey, jwks, keys};
use crate::config::ServeConfig;
use crate::hub::{Hub, HubConfig, Store};
use crate::log::{RedisLog, SledLog, Trimmer};
use crate::{Throttle, stream_h1};

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let (jwt, jwks_read_again) = jwt_keys(&config).await?.unzip();
    if config.dev {
        tracing::warn!(
            "DEVELOPMENT MODE: no authentication; anyone who can reach {} may subscribe, publish and administer",
            config.listen
        );
        eprintln!(
            "\n  *** herald is running in --dev mode: NO AUTHENTICATION. Do not expose it. ***\n"
        );
    }
    let open_files = raise_open_file_limit();
    // Sockets must leave the log (sled opens a file for each large value) room to write:
    // a failed write stops it until a restart. Connections past this wait in the backlog.
    let max_sockets = open_files.map(|limit| {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        limit - RESERVED_FILES.min(limit / 2)
    });
    if let Some(max) = max_sockets
        && config.max_connections > max
    {
        tracing::warn!(
            max_connections = config.max_connections,
            open_file_limit = open_files,
            "the open-file limit (ulimit -n) allows about {max} connections, fewer than \
             --max-connections: connections past it wait to be accepted; raise the limit"
        );
    }

    // Bad TLS files are refused before the data dir is opened (and perhaps created).
    let tls = match &config.tls {
        Some((cert, key)) => Some(crate::tls::acceptor(cert, key)?),
        None => None,
    };
    let store = open_store(&config).await?;
    let log = store.log();
    let defaults = EngineConfig::default();
    let engine_config = EngineConfig {
        retry_ms: config.retry_ms,
        keepalive: config.keepalive,
        max_connections: config.max_connections,
        max_connections_per_user: config.max_connections_per_user,
        max_topics_per_connection: config.max_topics,
        // A replay's pages, and the live events it releases at its end, must fit the
        // connection's queue with room to spare (the hub reads the next page once the queue is
        // half empty), or a small --queue-bytes would close every resume as too slow.
        history_page_bytes: defaults.history_page_bytes.min(config.queue_bytes / 4),
        held_bytes: defaults.held_bytes.min(config.queue_bytes / 4),
        ..defaults
    };
    let key_limit = engine_config.idempotency_keys;
    let mut engine = Engine::new(engine_config, log.last_id(), log.bounds(), Instant::now());
    // A publisher retrying across a restart must still get its original id, not a copy. (In
    // cluster mode Redis keeps the keys.)
    if let Store::Local(local) = &store {
        let keys_log = local.clone();
        let keys = tokio::task::spawn_blocking(move || keys_log.idempotency_keys(key_limit))
            .await?
            .context("cannot read the idempotency keys from the event log")?;
        engine.restore_idempotency_keys(keys);
    }
    let hub_config = HubConfig {
        queue_bytes: config.queue_bytes,
        retry_ms: config.retry_ms,
        ..HubConfig::default()
    };
    let shared_log = match &store {
        Store::Shared(log) => Some(log.clone()),
        Store::Local(_) => None,
    };
    let control = Control::start()?;
    let (hub, hub_task) = {
        let _inside = control.handle.enter();
        Hub::start(engine, store, hub_config)
    };
    let sender = hub.sender();
    let trim_log = log.clone();
    let trimmer = Trimmer::start(log.clone(), config.trim_interval, move |_| {
        sender.log_bounds(trim_log.bounds())
    });

    let listener = listen(config.listen, config.backlog)?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Tests and scripts read this line to learn the port when listening on :0.
    println!("herald listening on {scheme}://{local}");
    match &config.redis {
        Some(shared) => {
            tracing::info!(redis = %shared.redis, prefix = %shared.prefix, "herald (cluster mode) listening on {scheme}://{local}")
        }
        None => {
            tracing::info!(data_dir = %config.log.data_dir.display(), fsync = %config.log.fsync, "herald listening on {scheme}://{local}")
        }
    }

    let name = config
        .node_name
        .clone()
        .unwrap_or_else(|| crate::nodes::node_name(local.port()));
    let nodes = crate::nodes::Nodes::new(name, shared_log.clone());
    let heartbeat = tokio::spawn(nodes.clone().run(hub.clone()));
    let user_cap = match (
        shared_log,
        config.max_connections_per_user,
        nodes.tokens_key(),
    ) {
        (Some(log), Some(limit), Some(tokens)) => Some(crate::user_cap::UserCap::start(
            log,
            tokens.to_owned(),
            nodes.instance().to_owned(),
            limit,
        )),
        _ => None,
    };
    let log_metrics = hub.log_metrics();
    let state = Arc::new(AppState {
        nodes: nodes.clone(),
        user_cap,
        log_metrics: log_metrics.clone(),
        hub: hub.clone(),
        jwt,
        jwks_read_again: jwks_read_again.flatten(),
        dev: config.dev,
        max_body: config.max_body,
        body_timeout: config.header_timeout,
        retry_ms: config.retry_ms,
        cors_origins: config.cors_origins.clone(),
        log: log.clone(),
        refused: api::Refusals::default(),
        // As many as the main runtime has workers: direct writes scale with the cores.
        writers: crate::writer::Writers::start(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            yield_to_control,
        )?,
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .keep_alive(true);
    let mut http2 = builder.http2();
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(1000)
        .max_header_list_size(MAX_REQUEST_HEAD as u32);
    // An HTTP/2 client that vanished without a FIN must not hold its streams until TCP gives
    // up. On Linux the listening socket's options see to it for every connection (see
    // `DEAD_PEER_TIMEOUT`), so HTTP/2 pings would only cost a timer poll on every wake-up of
    // every connection: 3 to 4% of the CPU per delivery at 10,000 subscribers (BENCHMARKS.md).
    if !cfg!(target_os = "linux") {
        http2
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
    }
    // Tells the hyper connections to close gracefully.
    let closing = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut shutdown = Box::pin(shutdown_signal());

    let context = || ConnContext {
        builder: builder.clone(),
        shutdown: closing.clone(),
        state: state.clone(),
        tls: tls.clone(),
        control: control.handle.clone(),
        tracker: tracker.clone(),
    };
    let mut told_full = Throttle::default();
    let mut told_failed = Throttle::default();
    loop {
        if let Some(max) = max_sockets
            && tracker.len() >= max
        {
            if told_full.due(WARNING_EVERY) {
                tracing::warn!(
                    connections = tracker.len(),
                    "not accepting: the connections hold the open files the log needs \
                     (ulimit -n); new ones wait in the backlog until some close"
                );
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => continue,
                _ = &mut shutdown => break,
            }
        }
        tokio::select! {
            // Once SIGTERM is in, connections go to the backlog's answer below, not in here.
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning,
                        // and say so now and then rather than 20 times a second.
                        if told_failed.due(WARNING_EVERY) {
                            tracing::warn!("accept failed: {e}");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let header_timeout = config.header_timeout;
                let ctx = context();
                if ctx.tls.is_some() {
                    // TLS connections are served on the main runtime, handshake included. Which
                    // of them are subscribers is known only after the handshake, and most are
                    // (browsers, over HTTP/2): on the control thread their fan-out would hold
                    // up the hub and every publish behind it, and their encryption would have
                    // one core however many the machine has.
                    tracker.spawn(serve_hyper(stream, remote, header_timeout, ctx));
                } else {
                    let conn = Accepted { stream, remote, header_timeout };
                    tracker.spawn(serve_connection(conn, ctx));
                }
            }
        }
    }

    tracing::info!("shutting down: ending streams and flushing the log");
    // Connections already in the backlog sent their requests: closing the listener would
    // reset them, and a publisher could not tell whether its event was stored. Tell them. A
    // TLS client's request follows its handshake: it is served like any other, with the
    // shutdown under way (its first request given `FIRST_REQUEST_GRACE`).
    while let Ok(Ok((stream, remote))) =
        tokio::time::timeout(Duration::from_millis(1), listener.accept()).await
    {
        if tls.is_none() {
            tracker.spawn(answer_and_close(stream, api::unavailable()));
        } else {
            tracker.spawn(serve_hyper(
                stream,
                remote,
                config.header_timeout,
                context(),
            ));
        }
    }
    drop(listener);
    let bound = config.shutdown_timeout;
    let drained = tokio::time::timeout(bound, async {
        let _ = hub.shutdown().await;
        closing.cancel();
        tracker.close();
        tracker.wait().await;
    });
    tokio::select! {
        ended = drained => if ended.is_err() {
            tracing::warn!(
                connections = tracker.len(),
                "connections still open after {bound:?} (--shutdown-timeout); exiting anyway"
            );
        },
        // An operator who signals again does not want to wait.
        () = shutdown_signal() => tracing::warn!(
            connections = tracker.len(),
            "second signal: exiting without waiting for the connections"
        ),
    }
    heartbeat.abort();
    drop(state);
    drop(hub);
    let _ = tokio::time::timeout(Duration::from_secs(2), hub_task).await;
    tokio::task::spawn_blocking(move || {
        nodes.leave();
        trimmer.shutdown();
        control.stop();
    })
    .await
    .ok();
    tracing::info!("stopped");
    // sled's drop flushes, and after the storage failure that stopped the log its flush
    // waits for ever: leave without it (the log acknowledged nothing since the failure).
    if let Some(reason) = log_metrics.stopped_by() {
        tracing::error!(%reason, "the event log had stopped after a storage failure; exiting without flushing it");
        std::process::exit(1);
    }
    Ok(())
}

/// Opens the log the configuration names: the shared Redis stream in cluster mode, the
/// embedded sled log otherwise.
async fn open_store(config: &ServeConfig) -> anyhow::Result<Store> {
    if let Some(shared) = config.redis.clone() {
        let log = tokio::task::spawn_blocking(move || RedisLog::open(&shared))
            .await?
            .context("cannot open the shared log (cluster mode)")?;
        return Ok(Store::Shared(Arc::new(log)));
    }
    let log_config = config.log.clone();
    let log = tokio::task::spawn_blocking(move || SledLog::open(&log_config))
        .await?
        .with_context(|| {
            format!(
                "cannot open the event log in {}",
                config.log.data_dir.display()
            )
        })?;
    Ok(Store::Local(Arc::new(log)))
}

/// The keys tokens are checked with: none in dev mode when no key is given. Key sets (JWKS)
/// are read now, and again in a task of their own from then on, which the handle asks for a
/// read out of turn.
async fn jwt_keys(
    config: &ServeConfig,
) -> anyhow::Result<Option<(JwtKeys, Option<Arc<jwks::ReadAgain>>)>> {
    let secrets: Vec<&String> = config
        .jwt_secret
        .iter()
        .chain(&config.jwt_previous_secrets)
        .collect();
    for secret in secrets.iter().filter(|s| s.len() < MIN_SECRET_BYTES) {
        tracing::warn!(
            "a JWT secret is {} bytes: anyone who guesses it can mint any token, and a short \
             one can be found by trying; use {MIN_SECRET_BYTES} random bytes or more \
             (`openssl rand -hex 32`)",
            secret.len()
        );
    }
    let mut keys: Vec<VerifyKey> = secrets
        .iter()
        .map(|s| VerifyKey::Secret(s.as_bytes().to_vec()))
        .collect();
    for path in &config.jwt_public_keys {
        keys.extend(keys::public_keys_from_file(path).context("--jwt-public-key")?);
    }
    let sets = jwks::fetch_all(&config.jwt_jwks)
        .await
        .map_err(|why| anyhow::anyhow!("--jwt-jwks: {why}"))?;
    if keys.is_empty() && sets.is_empty() {
        if config.dev {
            return Ok(None);
        }
        anyhow::bail!(
            "no JWT secret or public key configured.\n  \
             For production, set a secret: `herald serve --jwt-secret <secret>` (or \
             HERALD_JWT_SECRET, or jwt_secret in the config file), then mint tokens with \
             `herald token`; or check the tokens your identity provider signs with \
             `--jwt-jwks <URL>` or `--jwt-public-key <PEM>`.\n  \
             For local development without authentication, run `herald serve --dev`."
        );
    }
    let (keys, fetched) = JwtKeys::new(keys)
        .expecting(config.jwt_expected.clone())
        .with_fetched(sets.concat());
    tracing::info!(
        secrets = secrets.len(),
        public_key_files = config.jwt_public_keys.len(),
        jwks_keys = sets.iter().map(Vec::len).sum::<usize>(),
        "checking tokens signed with {}",
        keys.accepted()
    );
    let again = (!sets.is_empty()).then(|| {
        let again = Arc::new(jwks::ReadAgain::default());
        tokio::spawn(jwks::refresh(
            config.jwt_jwks.clone(),
            sets,
            config.jwt_jwks_refresh,
            fetched,
            again.clone(),
        ));
        again
    });
    Ok(Some((keys, again)))
}

/// How an HTTP/2 connection with prior knowledge starts (the first 12 bytes of its preface).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2";

/// The longest request head taken on every path: hyper's own HTTP/1 limit (its default
/// buffer), also for the direct subscribe path and for HTTP/2's header list, so that a
/// browser with many cookies is not refused on one connection and served on another.
pub const MAX_REQUEST_HEAD: usize = 8192 + 4096 * 100;

/// A freshly accepted TCP connection.
struct Accepted {
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    /// How long it may take to complete its first request's headers (TLS handshake and
    /// protocol detection included).
    header_timeout: Duration,
}

/// Everything a connection task needs besides its socket.
struct ConnContext {
    builder: auto::Builder<TokioExecutor>,
    /// Cancelled when the server shuts down.
    shutdown: CancellationToken,
    state: Arc<AppState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    control: tokio::runtime::Handle,
    tracker: TaskTracker,
}

/// The control runtime: one thread running the hub and the plain HTTP/1.1 connections that
/// are not subscriber streams (publishers, the admin API). Subscriber streams on the direct
/// path, HTTP/2 connections and every TLS connection run on the main runtime.
/// Kept apart, a publish is answered as soon as the log has it, even while the main runtime
/// is busy writing a fan-out to thousands of sockets; the next events then queue up behind
/// that fan-out and leave in the same writes.
struct Control {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Control {
    fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("herald-control".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Connections still open after the shutdown bound are dropped here.
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves one plain-HTTP connection on the main runtime, or hands it to hyper in a task of its
/// own. A direct-path subscriber's task is as large as this future, so the hyper connection,
/// several times larger, is never awaited here; and once handed over, this task ends, so a
/// hyper connection does not keep a direct-path-sized task besides its own.
async fn serve_connection(accepted: Accepted, ctx: ConnContext) {
    let Accepted {
        stream,
        remote,
        header_timeout,
    } = accepted;
    // Subscribers on plain HTTP/1.1 stay here, on the direct path. HTTP/2 (mostly subscribers,
    // multiplexed) goes to hyper on this runtime, everything else (publishers, the admin API)
    // to hyper on the control runtime.
    let mut first = [0u8; 12];
    let peeked = tokio::select! {
        peeked = stream.peek(&mut first) => peeked.unwrap_or(0),
        () = first_bytes_wait(header_timeout, &ctx.shutdown) => {
            return tracing::debug!(%remote, "no request within {header_timeout:?}, or in the grace given at shutdown; closing");
        }
    };
    if stream_h1::is_subscribe(&first[..peeked]) {
        return stream_h1::serve(stream, remote, ctx.state, header_timeout).await;
    }
    if first[..peeked].starts_with(H2_PREFACE) {
        let tracker = ctx.tracker.clone();
        tracker.spawn(serve_hyper(stream, remote, header_timeout, ctx));
        return;
    }
    let Ok(stream) = stream.into_std() else {
        return;
    };
    let tracker = ctx.tracker.clone();
    let control = ctx.control.clone();
    control.spawn(tracker.track_future(async move {
        match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => serve_hyper(stream, remote, header_timeout, ctx).await,
            Err(e) => tracing::debug!(%remote, "cannot move the connection: {e}"),
        }
    }));
}

async fn serve_hyper(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    header_timeout: Duration,
    ctx: ConnContext,
) {
    let ConnContext {
        builder,
        shutdown,
        state,
        tls,
        ..
    } = ctx;
    // hyper's header timeout starts only once a request is being read; a client that sends
    // nothing (or half an HTTP/2 preface) would hold its socket forever. The TLS handshake
    // and the first request must start within this deadline.
    let deadline = tokio::time::sleep(header_timeout);
    tokio::pin!(deadline);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let io = match tls {
        None => Either::Left(stream),
        Some(acceptor) => {
            // At shutdown, the handshake gets what a plain connection's first bytes get.
            let handshake_wait = first_bytes_wait(header_timeout, &shutdown);
            tokio::pin!(handshake_wait);
            // A TLS client starts with a handshake record (0x16); a letter is a request in
            // plain HTTP (an `http://` URL for this port), which a failed handshake would
            // answer with nothing at all.
            let mut first = [0u8; 1];
            let peeked = tokio::select! {
                peeked = stream.peek(&mut first) => peeked.unwrap_or(0),
                () = &mut handshake_wait => return tracing::debug!(%remote, "no TLS handshake within {header_timeout:?}"),
            };
            if peeked == 1 && first[0].is_ascii_uppercase() {
                let error = api::ApiError::new(
                    http::StatusCode::BAD_REQUEST,
                    "this port speaks HTTPS: use an https:// URL",
                );
                return answer_and_close(stream, error).await;
            }
            // The handshake and the connection below are boxed: inline, their states would
            // size this task for all of them at once (8.2 KB against 1.2 KB, for every
            // connection that comes through here, plain HTTP/2 included).
            let handshake = tokio::select! {
                done = Box::pin(acceptor.accept(stream)) => done,
                () = &mut handshake_wait => return tracing::debug!(%remote, "TLS handshake timed out"),
            };
            match handshake {
                Ok(s) => Either::Right(s),
                Err(e) => return tracing::debug!(%remote, "TLS handshake failed: {e}"),
            }
        }
    };
    let over_tls = matches!(io, Either::Right(_));
    // Requests in progress (an SSE response counts until its stream ends): a connection with
    // none for `header_timeout` is closed, HTTP/2 too, which has no idle timeout of its own.
    let requests = Arc::new(Requests::default());
    let counted = requests.clone();
    let first_request = requests.clone();
    // A stream the server ended that its client does not take has its connection reset
    // (below).
    let watch = Arc::new(crate::sse::EndWatch::default());
    let on_end = api::ResetOnEnd(watch.clone());
    let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let request = InProgress::start(&counted);
        if over_tls {
            req.extensions_mut().insert(api::OverTls);
        }
        req.extensions_mut().insert(on_end.clone());
        // Boxed: hyper keeps a request's future inline for as long as the connection (HTTP/1.1)
        // or the stream's task (HTTP/2) lives, also once an SSE response is streaming, and
        // `handle` is much larger than the body it returns.
        let handled = Box::pin(api::handle(req, state.clone(), remote));
        async move {
            let res = handled.await?;
            Ok::<_, std::convert::Infallible>(res.map(|body| Counted {
                body,
                _request: request,
            }))
        }
    });
    let mut conn = Box::pin(
        builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned(),
    );
    // The connection runs until it ends, or (`None`) until a stream closed as too slow means
    // it must be reset. Shutting down, or idle, it is closed gracefully (HTTP/2: a GOAWAY).
    let idle = idle_for(requests, header_timeout, deadline.as_mut());
    let closing = tokio::select! {
        result = &mut conn => return ended(result, remote),
        () = watch.reset_due(ENDED_STREAM_GRACE) => return reset_lingering(fd, remote),
        () = shutdown.cancelled() => None,
        () = idle => Some(header_timeout),
    };
    // hyper closes a connection with no request under way at once, also one whose first
    // request it has not read yet, and a close with a request unread resets the connection:
    // the client could not tell whether it was taken. Given a moment, it is read and
    // answered (a publish: 503, the server is shutting down).
    if closing.is_none() {
        tokio::select! {
            result = &mut conn => return ended(result, remote),
            () = first_request.first_started() => {}
            () = tokio::time::sleep(FIRST_REQUEST_GRACE) => {}
        }
    }
    conn.as_mut().graceful_shutdown();
    // An idle connection has nothing left to finish: one that does not close within the
    // timeout (an HTTP/2 client that never acknowledges the GOAWAY's ping) is dropped.
    let linger = tokio::time::sleep(closing.unwrap_or(Duration::MAX));
    tokio::select! {
        result = &mut conn => ended(result, remote),
        () = watch.reset_due(ENDED_STREAM_GRACE) => reset_lingering(fd, remote),
        () = linger => tracing::debug!(%remote, "idle connection did not close; dropping it"),
    }
}

fn ended(result: Result<(), Box<dyn std::error::Error + Send + Sync>>, remote: SocketAddr) {
    if let Err(e) = result {
        tracing::debug!(%remote, "connection ended: {e}");
    }
}

/// Resolves once no request has been in progress on the connection for `after`; the first
/// wait, before any request, ends when `timer` (reused for the later waits) does. A
/// connection busy with a stream waits on no timer.
async fn idle_for(
    requests: Arc<Requests>,
    after: Duration,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
) {
    let mut seen = 0;
    loop {
        timer.as_mut().await;
        let started = requests.started.load(Ordering::Acquire);
        if started == seen && requests.in_progress.load(Ordering::Acquire) == 0 {
            return;
        }
        seen = started;
        requests.none_in_progress().await;
        timer.as_mut().reset(tokio::time::Instant::now() + after);
    }
}

/// The requests of one hyper connection: how many have started, how many are in progress
/// (an SSE response counts until its stream ends).
#[derive(Default)]
struct Requests {
    started: AtomicU64,
    in_progress: AtomicUsize,
    /// Told when `in_progress` falls to 0.
    ended: tokio::sync::Notify,
    /// Told when a request starts.
    began: tokio::sync::Notify,
}

impl Requests {
    /// Returns once a request has started on the connection: at once if one has.
    async fn first_started(&self) {
        let began = self.began.notified();
        tokio::pin!(began);
        began.as_mut().enable();
        if self.started.load(Ordering::Acquire) == 0 {
            began.await;
        }
    }

    async fn none_in_progress(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.in_progress.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }
}

/// One request in progress on a hyper connection, for as long as it lives.
struct InProgress(Arc<Requests>);

impl InProgress {
    fn start(requests: &Arc<Requests>) -> Self {
        requests.in_progress.fetch_add(1, Ordering::AcqRel);
        requests.started.fetch_add(1, Ordering::AcqRel);
        requests.began.notify_waiters();
        Self(requests.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if self.0.in_progress.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ended.notify_waiters();
        }
    }
}

/// A response body that holds its request's [`InProgress`] until hyper drops it (the
/// response is written, or its stream ended).
struct Counted {
    body: api::Body,
    _request: InProgress,
}

impl hyper::body::Body for Counted {
    type Data = <api::Body as hyper::body::Body>::Data;
    type Error = <api::Body as hyper::body::Body>::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// How long a stream the server ended (too slow over HTTP/2, kicked, its token expired, the
/// server shutting down) may stay open, its client not reading the rest, before its
/// connection, and the other streams on it, are reset (they reconnect and resume).
const ENDED_STREAM_GRACE: Duration = Duration::from_secs(5);

/// Resets a connection with a stream the server ended that its client does not take (see
/// [`crate::sse::SseBody::watch_end`]): over HTTP/2 its other streams go with it, which is
/// worth a line in the log.
fn reset_lingering(fd: std::os::fd::RawFd, remote: SocketAddr) {
    tracing::info!(%remote, "a stream the server ended (too slow, kicked, token expired or shutting down) is not taken by its client: resetting the connection; its other streams reconnect and resume");
    reset_on_close(fd);
}

/// Makes the closing of the socket `fd` a reset, dropping what it still holds (for a client
/// that stopped reading): the kernel would keep an orphan socket and its buffers until the
/// client read or gave up. The caller owns the socket and closes it next.
fn reset_on_close(fd: std::os::fd::RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // Failing, the close is an ordinary one.
    let _ = set_socket_option(fd, libc::SOL_SOCKET, libc::SO_LINGER, linger);
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// A client that stops acknowledging what was sent to it (gone without a FIN: a dropped
/// network, a sleeping laptop) is disconnected after this long. SSE keep-alive comments
/// mean a subscriber always has something to acknowledge within the keep-alive interval.
const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(60);
/// An otherwise idle connection (an HTTP/1.1 publisher between requests) is probed after
/// this long, then every `KEEPALIVE_INTERVAL`, so it too is dropped if its peer vanished.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// The listening socket. The options set here are inherited by every accepted connection
/// (on Linux), which saves system calls per accept: no Nagle delay, TCP keepalive, and the
/// dead-peer timeout.
fn listen(addr: SocketAddr, backlog: u32) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.set_keepalive(true)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        let secs = |d: Duration| d.as_secs() as libc::c_int;
        let tcp =
            |option, value: libc::c_int| set_socket_option(fd, libc::IPPROTO_TCP, option, value);
        tcp(libc::TCP_KEEPIDLE, secs(KEEPALIVE_IDLE))?;
        tcp(libc::TCP_KEEPINTVL, secs(KEEPALIVE_INTERVAL))?;
        tcp(libc::TCP_KEEPCNT, 4)?;
        tcp(
            libc::TCP_USER_TIMEOUT,
            DEAD_PEER_TIMEOUT.as_millis() as libc::c_int,
        )?;
    }
    socket
        .bind(addr)
        .with_context(|| format!("cannot listen on {addr}"))?;
    Ok(socket.listen(backlog)?)
}

/// Sets socket option `option` at `level` on the open socket `fd` to `value`, a plain C
/// value (an int, a `linger`).
fn set_socket_option<T: Copy>(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: T,
) -> std::io::Result<()> {
    // SAFETY: `value` is a live T and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Lowers the calling thread's scheduling priority a little (nice +5). The main runtime's
/// workers and the socket writers call it at start: they write fan-outs to thousands of sockets, and on a busy core
/// the control thread (publishes, the hub) and the log's commit thread should run first, so
/// that a publish is acknowledged in milliseconds whatever the fan-out in progress. Raising
/// a nice value needs no privileges.
pub fn yield_to_control() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; setpriority only changes this thread's nice value.
    unsafe {
        let tid = libc::gettid();
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 5);
    }
}

/// Answers a connection's request with `error` in plain HTTP/1.1 and closes it, after reading
/// what the client sent (a close with the request unread would reset the connection).
async fn answer_and_close(mut stream: tokio::net::TcpStream, error: api::ApiError) {
    use tokio::io::AsyncReadExt;
    let no_cors = stream_h1::Cors::default();
    stream_h1::write_error(&mut stream, &error, &no_cors).await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// At shutdown, how long a connection that has not sent its first request yet is given to
/// send it (it is then answered: a publish with a 503) before it is closed.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// How long a new connection may take to send its first bytes (or its TLS handshake):
/// `timeout`, and once the server is shutting down, [`FIRST_REQUEST_GRACE`] at most. A
/// browser's preconnected socket may send nothing at all, and must not hold the shutdown
/// until its timeout.
async fn first_bytes_wait(timeout: Duration, shutdown: &CancellationToken) {
    let grace_after_shutdown = async {
        shutdown.cancelled().await;
        tokio::time::sleep(FIRST_REQUEST_GRACE).await;
    };
    tokio::select! {
        () = tokio::time::sleep(timeout) => {}
        () = grace_after_shutdown => {}
    }
}

/// Below this many bytes, a JWT secret is warned about at start (HS256's key is 32 bytes).
const MIN_SECRET_BYTES: usize = 32;

/// Open files kept out of the connections' reach: the log's files (sled opens one for each
/// large value), Redis connections, certificates. Half the limit at most.
const RESERVED_FILES: usize = 256;

/// How often the accept loop repeats a warning (it cannot take more connections, or accept
/// failed).
const WARNING_EVERY: Duration = Duration::from_secs(10);

/// Lifts the soft open-file limit to the hard limit (every subscriber is a socket) and
/// returns the limit now in force, if it can be read.
fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                ..lim
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            } else {
                tracing::warn!("could not raise the open-file limit");
            }
        }
        Some(lim.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn option(fd: std::os::fd::RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are live and describe a c_int.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
        value
    }

    #[tokio::test]
    async fn accepted_connections_inherit_nodelay_keepalive_and_the_dead_peer_timeout() {
        let listener = listen("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let fd = accepted.as_raw_fd();
        assert_ne!(option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY), 0);
        assert_ne!(option(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
        assert_eq!(option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 60);
        assert_eq!(option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 15);
        assert_eq!(option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 4);
        assert_eq!(
            option(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
            DEAD_PEER_TIMEOUT.as_millis() as libc::c_int
        );
    }

    #[test]
    fn each_accept_warning_is_throttled_on_its_own() {
        let (mut full, mut failed) = (Throttle::default(), Throttle::default());
        assert!(full.due(WARNING_EVERY));
        assert!(!full.due(WARNING_EVERY), "again within WARNING_EVERY");
        assert!(
            failed.due(WARNING_EVERY),
            "the other warning was not given yet"
        );
        full.0 = Some(Instant::now() - WARNING_EVERY);
        assert!(full.due(WARNING_EVERY));
        assert!(!failed.due(WARNING_EVERY));
    }
}
