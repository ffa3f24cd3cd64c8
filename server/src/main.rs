//! `herald`: a Server-Sent Events hub. See `herald --help`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use herald_server::auth::{Audience, Claims, Grants, PublishGrant, SigningKey};
use herald_server::config::{ServeArgs, parse_duration};
use serde_json::value::RawValue;

/// Herald: publish events over HTTP, deliver them to browsers over Server-Sent Events, and
/// replay what a reconnecting client missed from a durable log.
#[derive(Parser, Debug)]
#[command(
    name = "herald",
    version,
    after_help = "What is logged (to stderr): HERALD_LOG, a tracing filter such as `debug` or \
                  `herald_server::api=debug,info` (RUST_LOG when HERALD_LOG is not set; \
                  `info,h2=error` when neither is: the HTTP/2 library warns of every client that \
                  breaks the protocol's rules, which any client can do at will)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server. Settings: flags > HERALD_* environment variables > --config file >
    /// defaults.
    Serve(Box<ServeArgs>),
    /// Mint a signed token (a JWT: HS256 with the server's secret, or signed with a private
    /// key) for a subscriber, publisher or operator.
    Token(TokenArgs),
    /// Publish one event through a running server's HTTP API.
    Publish(PublishArgs),
    /// Measure a running SSE server: N subscribers, M events, latency and throughput.
    Bench(herald_server::bench::BenchArgs),
}

#[derive(clap::Args, Debug)]
struct TokenArgs {
    /// The user id (`sub`): events sent to this user reach all its connections, and the
    /// publisher its idempotency keys belong to. Empty for a token with no user (a backend
    /// that only publishes).
    #[arg(long)]
    sub: String,
    /// A topic or `prefix/*` pattern the user may subscribe to (repeatable).
    #[arg(long = "subscribe")]
    subscribe: Vec<String>,
    /// May publish to anything (topics, users, broadcast).
    #[arg(long)]
    publish: bool,
    /// May publish to this topic or pattern only (repeatable; ignored with --publish).
    #[arg(long = "publish-topic")]
    publish_topics: Vec<String>,
    /// May use the admin API and console.
    #[arg(long)]
    admin: bool,
    /// How long the token is valid, e.g. 15m, 1h, 30d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// The server's secret (the same as `herald serve` uses).
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Sign with this private key (PEM, PKCS#8 as `openssl genpkey` writes it, or an `RSA
    /// PRIVATE KEY`) instead of a secret: RS256 for RSA, ES256 for P-256, ES384 for P-384,
    /// EdDSA for Ed25519. The server checks it with the public half (`--jwt-public-key`).
    #[arg(long, value_name = "PEM", conflicts_with = "jwt_secret")]
    private_key: Option<std::path::PathBuf>,
    /// The issuer (`iss`) to name, for a server started with --jwt-issuer.
    #[arg(long)]
    iss: Option<String>,
    /// The audience (`aud`) to name, for a server started with --jwt-audience.
    #[arg(long)]
    aud: Option<String>,
    /// The key's id (`kid`) to name in the token's header: the id the key has in the key set
    /// (JWKS) the server reads with --jwt-jwks.
    #[arg(long)]
    kid: Option<String>,
    /// Read the secret from this config file when not given otherwise.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<std::path::PathBuf>,
}

#[derive(clap::Args, Debug)]
struct PublishArgs {
    /// The server.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    /// A token with publish rights (not needed against `herald serve --dev`).
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Topic to publish to (repeatable).
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// User to send to (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
    /// Send to everyone connected.
    #[arg(long)]
    broadcast: bool,
    /// The event type (`event:` field); default `message`.
    #[arg(long)]
    event: Option<String>,
    /// The data: JSON is sent as JSON (compact), anything else as text.
    #[arg(long)]
    data: String,
    /// Makes retries safe: the same key returns the first publish's id.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// For an `https://` URL: PEM certificates to trust besides the system's (a private CA).
    #[arg(long, env = "HERALD_CA_FILE", value_name = "PEM")]
    ca_file: Option<std::path::PathBuf>,
}

/// What is logged unless HERALD_LOG or RUST_LOG says otherwise. The h2 crate logs a warning
/// for each client that breaks HTTP/2's rules (resetting streams faster than it allows, say):
/// hundreds a second from one hostile client, and nothing an operator can act on.
const DEFAULT_LOG: &str = "info,h2=error";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let asked = std::env::var("HERALD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .filter(|f| !f.trim().is_empty());
    let (filter, refused) = match asked.as_deref().map(tracing_subscriber::EnvFilter::try_new) {
        None => (tracing_subscriber::EnvFilter::new(DEFAULT_LOG), None),
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (tracing_subscriber::EnvFilter::new(DEFAULT_LOG), Some(e)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes are for a terminal, not for a log file or a journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let (Some(asked), Some(e)) = (asked, refused) {
        tracing::warn!(
            "the log filter {asked:?} (HERALD_LOG or RUST_LOG) is not one ({e}); logging at {DEFAULT_LOG}"
        );
    }
    match cli.command {
        Command::Serve(args) => {
            let config = args.resolve()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .on_thread_start(herald_server::server::yield_to_control)
                .build()?;
            runtime.block_on(herald_server::server::serve(config))
        }
        Command::Token(args) => token(args),
        Command::Publish(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(publish(args))
        }
        Command::Bench(args) => herald_server::bench::run(args),
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    // An empty secret (an empty `$(...)`, say) is no secret: the server refuses it too.
    let key = match (args.private_key, args.jwt_secret.filter(|s| !s.is_empty())) {
        (Some(path), _) => SigningKey::from_file(&path)?,
        (None, Some(s)) => SigningKey::Secret(s.into_bytes()),
        (None, None) => {
            let from_file = ServeArgs {
                config: args.config.clone(),
                ..ServeArgs::default()
            };
            let secret = from_file.resolve()?.jwt_secret.context(
                "no JWT secret: pass --jwt-secret (or set HERALD_JWT_SECRET, or jwt_secret in \
                 --config), or --private-key",
            )?;
            SigningKey::Secret(secret.into_bytes())
        }
    };
    // The server refuses a token whose user id it would refuse in `?user=`.
    if !args.sub.is_empty() {
        herald_core::UserId::new(&args.sub).with_context(|| "invalid --sub")?;
    }
    for p in args.subscribe.iter().chain(&args.publish_topics) {
        herald_core::TopicPattern::parse(p)
            .with_context(|| format!("invalid topic pattern {p:?}"))?;
    }
    // `exp` is in whole seconds: a shorter ttl would be a token that is already expired.
    anyhow::ensure!(
        args.ttl >= Duration::from_secs(1),
        "--ttl must be at least 1s (a token's expiry is in whole seconds)"
    );
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let publish = if args.publish {
        PublishGrant::All(true)
    } else if !args.publish_topics.is_empty() {
        PublishGrant::Topics(args.publish_topics)
    } else {
        PublishGrant::All(false)
    };
    let claims = Claims {
        sub: args.sub,
        exp: now + args.ttl.as_secs() + u64::from(args.ttl.subsec_nanos() > 0),
        nbf: None,
        iss: args.iss,
        aud: args.aud.map(Audience::One),
        herald: Grants {
            subscribe: args.subscribe,
            publish,
            admin: args.admin,
        },
    };
    println!("{}", key.mint_as(args.kid.as_deref(), &claims));
    Ok(())
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    /// The publish body; `data` goes out as the user wrote it (a JSON value parsed and printed
    /// again would lose the digits of large numbers and the order of keys).
    #[derive(serde::Serialize)]
    struct Body {
        topics: Vec<String>,
        users: Vec<String>,
        broadcast: bool,
        data: Box<RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        event: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
    }
    let data = match RawValue::from_string(args.data.trim().to_owned()) {
        Ok(json) => json,
        Err(_) => serde_json::value::to_raw_value(&args.data)?,
    };
    let body = serde_json::to_string(&Body {
        topics: args.topics,
        users: args.users,
        broadcast: args.broadcast,
        data,
        event: args.event,
        idempotency_key: args.idempotency_key,
    })?;
    let url = format!("{}/publish", args.url.trim_end_matches('/'));
    let (status, answer) = herald_server::client::request_json(
        http::Method::POST,
        &url,
        args.token.as_deref(),
        Some(body),
        herald_server::client::Trust {
            ca_file: args.ca_file.as_deref(),
            flag: "--ca-file",
        },
    )
    .await?;
    if !status.is_success() {
        let message = answer
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("unknown error");
        bail!("{status}: {message}");
    }
    let id = answer
        .get("id")
        .and_then(|i| i.as_str())
        .with_context(|| format!("{url} answered {status} without an id: {answer}"))?;
    println!("{id}");
    Ok(())
}
