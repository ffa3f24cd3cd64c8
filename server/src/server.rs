//! `herald serve`: opens the log, starts the hub, accepts connections, shuts down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use herald_core::{Engine, EngineConfig};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpSocket;
use tokio_util::either::Either;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::auth::JwtKey;
use crate::config::ServeConfig;
use crate::hub::{Hub, HubConfig};
use crate::log::{EventLog, SledLog, Trimmer};
use crate::stream_h1;

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let jwt = match (&config.jwt_secret, config.dev) {
        (Some(secret), _) => Some(JwtKey::new(secret.as_bytes())),
        (None, true) => None,
        (None, false) => anyhow::bail!(
            "no JWT secret configured.\n  \
             For production, set one: `herald serve --jwt-secret <secret>` (or HERALD_JWT_SECRET, or \
             jwt_secret in the config file), then mint tokens with `herald token`.\n  \
             For local development without authentication, run `herald serve --dev`."
        ),
    };
    if config.dev {
        tracing::warn!(
            "DEVELOPMENT MODE: no authentication; anyone who can reach {} may subscribe, publish and administer",
            config.listen
        );
        eprintln!(
            "\n  *** herald is running in --dev mode: NO AUTHENTICATION. Do not expose it. ***\n"
        );
    }
    raise_open_file_limit();

    let log_config = config.log.clone();
    let log: Arc<dyn EventLog> = Arc::new(
        tokio::task::spawn_blocking(move || SledLog::open(&log_config))
            .await?
            .with_context(|| {
                format!(
                    "cannot open the event log in {}",
                    config.log.data_dir.display()
                )
            })?,
    );
    let engine_config = EngineConfig {
        retry_ms: config.retry_ms,
        keepalive: config.keepalive,
        max_connections: config.max_connections,
        max_topics_per_connection: config.max_topics,
        ..EngineConfig::default()
    };
    let engine = Engine::new(engine_config, log.last_id(), log.bounds(), Instant::now());
    let hub_config = HubConfig {
        queue_bytes: config.queue_bytes,
        retry_ms: config.retry_ms,
        ..HubConfig::default()
    };
    let (hub, hub_task) = Hub::start(engine, log.clone(), hub_config);
    let sender = hub.sender();
    let trim_log = log.clone();
    let trimmer = Trimmer::start(log.clone(), config.trim_interval, move |_| {
        sender.log_bounds(trim_log.bounds())
    });

    let tls = match &config.tls {
        Some((cert, key)) => Some(crate::tls::acceptor(cert, key)?),
        None => None,
    };
    let socket = if config.listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let listener = socket.listen(config.backlog)?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Tests and scripts read this line to learn the port when listening on :0.
    println!("herald listening on {scheme}://{local}");
    tracing::info!(data_dir = %config.log.data_dir.display(), fsync = %config.log.fsync, "herald listening on {scheme}://{local}");

    let state = Arc::new(AppState {
        log_metrics: hub.log_metrics(),
        hub: hub.clone(),
        jwt,
        dev: config.dev,
        max_body: config.max_body,
        retry_ms: config.retry_ms,
        cors_origins: config.cors_origins.clone(),
        log: log.clone(),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1000);
    let graceful = GracefulShutdown::new();
    let tracker = TaskTracker::new();
    let mut shutdown = Box::pin(shutdown_signal());

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = Accepted { stream, remote, header_timeout: config.header_timeout };
                tracker.spawn(serve_connection(conn, builder.clone(), graceful.watcher(), state.clone(), tls.clone()));
            }
            _ = &mut shutdown => break,
        }
    }

    tracing::info!("shutting down: ending streams and flushing the log");
    drop(listener);
    let bound = config.shutdown_timeout;
    let ended = tokio::time::timeout(bound, async {
        let _ = hub.shutdown().await;
        graceful.shutdown().await;
        tracker.close();
        tracker.wait().await;
    })
    .await;
    if ended.is_err() {
        tracing::warn!("connections still open after {bound:?}; exiting anyway");
    }
    drop(state);
    drop(hub);
    let _ = tokio::time::timeout(Duration::from_secs(2), hub_task).await;
    tokio::task::spawn_blocking(move || trimmer.shutdown())
        .await
        .ok();
    tracing::info!("stopped");
    Ok(())
}

/// A freshly accepted TCP connection.
struct Accepted {
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    /// How long it may take to complete its first request's headers (TLS handshake and
    /// protocol detection included).
    header_timeout: Duration,
}

async fn serve_connection(
    accepted: Accepted,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    state: Arc<AppState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let Accepted {
        stream,
        remote,
        header_timeout,
    } = accepted;
    // hyper's header timeout starts only once a request is being read; a client that sends
    // nothing (or half an HTTP/2 preface) would hold its socket forever. Until the first
    // request arrives, this deadline applies.
    let deadline = tokio::time::sleep(header_timeout);
    tokio::pin!(deadline);
    let io = match tls {
        None => {
            let mut first = [0u8; 12];
            let peeked = tokio::select! {
                peeked = stream.peek(&mut first) => peeked.unwrap_or(0),
                _ = &mut deadline => return tracing::debug!(%remote, "no request within {header_timeout:?}; closing"),
            };
            if stream_h1::is_subscribe(&first[..peeked]) {
                return stream_h1::serve(stream, remote, state, header_timeout).await;
            }
            Either::Left(stream)
        }
        Some(acceptor) => {
            let handshake = tokio::select! {
                done = acceptor.accept(stream) => done,
                _ = &mut deadline => return tracing::debug!(%remote, "TLS handshake timed out"),
            };
            match handshake {
                Ok(s) => Either::Right(s),
                Err(e) => return tracing::debug!(%remote, "TLS handshake failed: {e}"),
            }
        }
    };
    let started = Arc::new(AtomicBool::new(false));
    let seen = started.clone();
    let service = service_fn(move |req| {
        seen.store(true, Ordering::Relaxed);
        api::handle(req, state.clone(), remote)
    });
    let conn = watcher.watch(
        builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned(),
    );
    tokio::pin!(conn);
    let result = tokio::select! {
        result = &mut conn => result,
        _ = &mut deadline, if !started.load(Ordering::Relaxed) => {
            if started.load(Ordering::Relaxed) {
                conn.await
            } else {
                return tracing::debug!(%remote, "no request within {header_timeout:?}; closing");
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, "connection ended: {e}");
    }
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

/// Lifts the soft open-file limit to the hard limit: every subscriber is a socket.
fn raise_open_file_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise the open-file limit");
            }
        }
    }
}
