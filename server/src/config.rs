//! `herald serve` settings: flags > `HERALD_*` environment variables > the TOML file >
//! built-in defaults, resolved once at start-up into a [`ServeConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::auth::Expected;
use crate::auth::jwks::JwksSource;
use crate::log::{FsyncPolicy, LogConfig, RedisLogConfig, Retention};
use crate::redis::RedisConfig;
use crate::tls::ClientFiles;

/// The flags of `herald serve`. Every flag also reads `HERALD_<NAME>` (upper case, `_` for
/// `-`), and every setting can be written in the `--config` TOML file under the flag's name
/// with `_` for `-` (for example `max_connections = 1000`): the file is read into this same
/// struct, so flags and file keys cannot drift apart.
#[derive(Args, Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with settings (flags and environment variables override it).
    #[arg(long, env = "HERALD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on, an IP address and a port: `0.0.0.0:7070` for every interface
    /// [default: 127.0.0.1:7070].
    #[arg(long, env = "HERALD_LISTEN", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Directory of the embedded event log [default: ./herald-data].
    #[arg(long, env = "HERALD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Development mode: no authentication, anyone who can reach the server may subscribe,
    /// publish and administer, and `?user=` names a subscriber. Never use it in production.
    /// `--dev=false` (or HERALD_DEV=false) turns off a `dev = true` of the config file.
    #[arg(
        long,
        env = "HERALD_DEV",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub dev: Option<bool>,
    /// Secret for HS256 tokens (HS384 and HS512 are checked too); `herald token` signs with
    /// it. Without --dev, this or --jwt-public-key is required.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// A secret whose tokens are still accepted, while the secret is rotated: give the new one
    /// as --jwt-secret and the old one here until its tokens have expired (repeatable).
    #[arg(
        long = "jwt-previous-secret",
        env = "HERALD_JWT_PREVIOUS_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    #[serde(alias = "jwt_previous_secret")]
    pub jwt_previous_secrets: Vec<String>,
    /// A PEM file of public keys (`PUBLIC KEY` or `CERTIFICATE` blocks) that check tokens an
    /// identity provider signs with its private keys: RS256/384/512 and PS256/384/512 (RSA),
    /// ES256 (P-256), ES384 (P-384), EdDSA (Ed25519). Repeat the flag or separate with commas;
    /// `herald token --private-key` signs such tokens.
    #[arg(
        long = "jwt-public-key",
        env = "HERALD_JWT_PUBLIC_KEY",
        value_delimiter = ',',
        value_name = "PEM"
    )]
    #[serde(alias = "jwt_public_key")]
    pub jwt_public_keys: Vec<PathBuf>,
    /// An identity provider's key set (JWKS, RFC 7517), as a URL (`https://idp.example/
    /// .well-known/jwks.json`, trusting the system's roots) or a file: its RSA, P-256, P-384
    /// and Ed25519 keys check tokens (a token's `kid` picks the key). Read at start (the
    /// server does not start without it) and every --jwt-jwks-refresh after, so a key the
    /// provider adds is taken without a restart. Repeat the flag or separate with commas.
    #[arg(
        long = "jwt-jwks",
        env = "HERALD_JWT_JWKS",
        value_delimiter = ',',
        value_name = "URL|FILE"
    )]
    pub jwt_jwks: Vec<String>,
    /// For https:// --jwt-jwks URLs: PEM certificates to trust besides the system's (an
    /// identity provider inside your network whose certificate your own CA signed).
    #[arg(long, env = "HERALD_JWT_JWKS_CA_FILE", value_name = "PEM")]
    pub jwt_jwks_ca_file: Option<PathBuf>,
    /// The issuer tokens must name (`iss`), e.g. `https://idp.example/`: an identity provider
    /// signs tokens of every application and tenant with the same keys [default: any].
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The audience tokens must name (`aud`), e.g. the id your identity provider gives the
    /// application Herald serves [default: any].
    #[arg(long, env = "HERALD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// How often the --jwt-jwks sets are read again; one that cannot be read keeps its keys
    /// [default: 5m].
    #[arg(long, env = "HERALD_JWT_JWKS_REFRESH", value_parser = parse_duration)]
    #[serde(deserialize_with = "duration_text")]
    pub jwt_jwks_refresh: Option<Duration>,
    /// When an append counts as durable: `every-batch` (fsync each group commit) or `never`
    /// (sled flushes in the background: faster, but a crash can lose the last ~0.5 s)
    /// [default: every-batch].
    #[arg(long, env = "HERALD_FSYNC")]
    #[serde(deserialize_with = "parsed_text")]
    pub fsync: Option<FsyncPolicy>,
    /// Keep at most this many events in the log [default: 1000000].
    #[arg(long, env = "HERALD_RETAIN_EVENTS")]
    pub retain_events: Option<u64>,
    /// Keep events at most this long, e.g. `7d`, `12h` [default: 7d].
    #[arg(long, env = "HERALD_RETAIN_AGE", value_parser = parse_duration)]
    #[serde(deserialize_with = "duration_text")]
    pub retain_age: Option<Duration>,
    /// Keep at most this many bytes of events, e.g. `1GiB`, `500MB` [default: 1GiB].
    #[arg(long, env = "HERALD_RETAIN_BYTES", value_parser = parse_bytes::<u64>)]
    #[serde(deserialize_with = "bytes_value")]
    pub retain_bytes: Option<u64>,
    /// How often retention trims the log [default: 10s].
    #[arg(long, env = "HERALD_TRIM_INTERVAL", value_parser = parse_duration)]
    #[serde(deserialize_with = "duration_text")]
    pub trim_interval: Option<Duration>,
    /// Most subscriber connections at once; beyond it new subscribers are told to retry
    /// later. Admin streams (the console) are not counted, so an operator can watch a full
    /// server [default: 50000].
    #[arg(long, env = "HERALD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most subscriber streams one user (a token's `sub`, or `?user=` in dev mode) may hold
    /// at once; beyond it a new one is told to come back later (a 200 with a `herald.closed`
    /// `too_many_streams` notice and `retry:`). With `--redis`, counted over every
    /// live instance of the cluster (on this instance alone while Redis cannot be reached).
    /// Admin streams and anonymous subscribers are not counted [default: no limit].
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<usize>,
    /// This instance's name in `GET /admin/nodes` and the console's Nodes view; give each
    /// instance of a cluster its own [default: the host name and the listening port].
    #[arg(long, env = "HERALD_NODE_NAME")]
    pub node_name: Option<String>,
    /// Most topics in one subscription [default: 64].
    #[arg(long, env = "HERALD_MAX_TOPICS")]
    pub max_topics: Option<usize>,
    /// Largest publish body, e.g. `64KiB`, `1MiB` (a bare number is bytes). The embedded log
    /// (sled) leaves files behind for events much larger than 64 KiB, which retention does not
    /// remove: raise it with that in mind [default: 64KiB].
    #[arg(long, env = "HERALD_MAX_BODY", value_parser = parse_bytes::<usize>)]
    #[serde(deserialize_with = "bytes_value")]
    pub max_body: Option<usize>,
    /// Bytes queued for one subscriber before it is closed as too slow (it reconnects and
    /// replays); the queue takes one more event when under it, however large
    /// [default: 4MiB].
    #[arg(long, env = "HERALD_QUEUE_BYTES", value_parser = parse_bytes::<usize>)]
    #[serde(deserialize_with = "bytes_value")]
    pub queue_bytes: Option<usize>,
    /// Keep-alive interval on idle streams: a comment, with the stream's resume point as its
    /// id, so a quiet subscriber's `Last-Event-ID` keeps up with the log [default: 15s].
    #[arg(long, env = "HERALD_KEEPALIVE", value_parser = parse_duration)]
    #[serde(deserialize_with = "duration_text")]
    pub keepalive: Option<Duration>,
    /// Reconnection delay sent to clients as `retry:`, in ms, at least 100 [default: 3000].
    #[arg(long, env = "HERALD_RETRY_MS")]
    pub retry_ms: Option<u64>,
    /// Time a client has to send its request headers, and a publisher its body; also how long
    /// a connection with no request in progress (HTTP/1.1 keep-alive, HTTP/2) stays open
    /// [default: 10s].
    #[arg(long, env = "HERALD_HEADER_TIMEOUT", value_parser = parse_duration)]
    #[serde(deserialize_with = "duration_text")]
    pub header_timeout: Option<Duration>,
    /// Longest wait for streams to end and the log to flush on shutdown [default: 10s].
    #[arg(long, env = "HERALD_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    #[serde(deserialize_with = "duration_text")]
    pub shutdown_timeout: Option<Duration>,
    /// Origins allowed to subscribe from a browser on another origin (with credentials);
    /// repeat the flag or separate with commas.
    #[arg(
        long = "cors-origin",
        env = "HERALD_CORS_ORIGIN",
        value_delimiter = ','
    )]
    #[serde(alias = "cors_origin")]
    pub cors_origins: Vec<String>,
    /// TLS certificate chain (PEM); with --tls-key serves HTTPS with HTTP/2.
    #[arg(long, env = "HERALD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "HERALD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Listen backlog (pending connections the kernel queues) [default: 4096].
    #[arg(long, env = "HERALD_BACKLOG")]
    pub backlog: Option<u32>,
    /// Cluster mode: keep the log in this Redis (7.0 or later), shared with every other
    /// instance given the same URL and --redis-prefix, so a client may publish to, subscribe
    /// to and resume on any of them. Form: `redis://[[user]:password@]host[:port][/db]`, or
    /// `rediss://...` for TLS (prefer HERALD_REDIS for a password); any node of a Redis
    /// Cluster will do. For a master that Redis Sentinel watches:
    /// `redis+sentinel://[[user]:password@]sentinel[:26379][,sentinel2...]/master-name[/db]`
    /// (`rediss+sentinel://` for TLS); the credentials are the master's (the sentinels' are
    /// --redis-sentinel-password). The embedded log is not used: --data-dir, --fsync and
    /// --retain-bytes do not apply (durability is Redis's own persistence).
    #[arg(long, env = "HERALD_REDIS", hide_env_values = true)]
    #[serde(deserialize_with = "parsed_text")]
    pub redis: Option<RedisConfig>,
    /// Prefix of Herald's keys in Redis; one deployment's instances share it, and another
    /// deployment on the same Redis picks another [default: herald].
    #[arg(long, env = "HERALD_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// For rediss://: PEM certificates to trust besides the system's (your Redis's CA).
    #[arg(long, env = "HERALD_REDIS_CA_FILE", value_name = "PEM")]
    pub redis_ca_file: Option<PathBuf>,
    /// For rediss:// to a Redis that asks for client certificates (`tls-auth-clients`): this
    /// instance's certificate chain (PEM), with --redis-tls-key.
    #[arg(long, env = "HERALD_REDIS_TLS_CERT", value_name = "PEM")]
    pub redis_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --redis-tls-cert.
    #[arg(long, env = "HERALD_REDIS_TLS_KEY", value_name = "PEM")]
    pub redis_tls_key: Option<PathBuf>,
    /// For redis+sentinel://: the password the sentinels ask for (their `requirepass`, or
    /// an ACL user's with --redis-sentinel-username). Without it sentinels are asked
    /// without AUTH.
    #[arg(long, env = "HERALD_REDIS_SENTINEL_PASSWORD", hide_env_values = true)]
    pub redis_sentinel_password: Option<String>,
    /// For redis+sentinel://: the ACL user of --redis-sentinel-password [default: the
    /// sentinels' default user].
    #[arg(long, env = "HERALD_REDIS_SENTINEL_USERNAME")]
    pub redis_sentinel_username: Option<String>,
}

/// Every setting of a running server, resolved.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The embedded log's settings (unused in cluster mode).
    pub log: LogConfig,
    /// Cluster mode: the shared Redis log, instead of the embedded one.
    pub redis: Option<RedisLogConfig>,
    /// Development mode (no auth).
    pub dev: bool,
    /// The HS256 secret.
    pub jwt_secret: Option<String>,
    /// Secrets still accepted while they are rotated.
    pub jwt_previous_secrets: Vec<String>,
    /// PEM files of public keys that check tokens.
    pub jwt_public_keys: Vec<PathBuf>,
    /// Key sets (JWKS) that check tokens.
    pub jwt_jwks: Vec<JwksSource>,
    /// How often they are read again.
    pub jwt_jwks_refresh: Duration,
    /// The issuer and audience tokens must name.
    pub jwt_expected: Expected,
    /// How often retention runs.
    pub trim_interval: Duration,
    /// Connection cap.
    pub max_connections: usize,
    /// Connection cap per user; `None` for none.
    pub max_connections_per_user: Option<usize>,
    /// The name given with --node-name, if any.
    pub node_name: Option<String>,
    /// Topics per subscription.
    pub max_topics: usize,
    /// Publish body limit.
    pub max_body: usize,
    /// Per-connection queue bound.
    pub queue_bytes: usize,
    /// Keep-alive interval.
    pub keepalive: Duration,
    /// `retry:` sent to clients.
    pub retry_ms: u64,
    /// Header read timeout.
    pub header_timeout: Duration,
    /// Shutdown bound.
    pub shutdown_timeout: Duration,
    /// CORS allow-list.
    pub cors_origins: Vec<String>,
    /// TLS certificate and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Listen backlog.
    pub backlog: u32,
}

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("{0}")]
    Invalid(String),
}

/// The shortest `--retry-ms`.
const MIN_RETRY_MS: u64 = 100;

/// The CORS allow-list, each entry trimmed (`a, b` in an environment variable), checked and
/// written as a browser sends its origin (`scheme://host[:port]`, lowercase, without the
/// scheme's default port), since the comparison is exact: anything else (`*`, a path, a
/// trailing slash, a Unicode host) would never match and silently allow nothing.
fn origins(list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    list.iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .map(|o| {
            let invalid = |why: &str| {
                ConfigError::Invalid(format!(
                    "cors-origin {o:?} is not an origin{why}: write it as the browser sends \
                     it, scheme, host and port only (https://app.example.com)"
                ))
            };
            if !o.is_ascii() {
                return Err(invalid(" (write a Unicode host in its xn-- form)"));
            }
            let lower = o.to_ascii_lowercase();
            let (scheme, host) = lower.split_once("://").unwrap_or(("", ""));
            let default_port = match scheme {
                "http" => ":80",
                "https" => ":443",
                _ => return Err(invalid("")),
            };
            if host.is_empty() || host.contains(['/', '*', ' ', '?', '#', '@']) {
                return Err(invalid(""));
            }
            let host = host.strip_suffix(default_port).unwrap_or(host);
            Ok(format!("{scheme}://{host}"))
        })
        .collect()
}

/// Parses `500ms`, `15s`, `10m`, `12h`, `7d` (a bare number is seconds).
/// `--listen`: an IP address and a port; a host name or a bare port is refused with what
/// to write instead.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!(
            "{s:?} is not an IP address and a port: write e.g. 127.0.0.1:7070 (this machine \
             only) or 0.0.0.0:7070 (every interface; [::]:7070 for IPv6 too)"
        )
    })
}

/// `s` read as a whole number and the unit after it (`15s`: 15 and `s`); `like` names the
/// forms `s` should take, for the error.
fn number_and_unit<'s>(s: &'s str, like: &str) -> Result<(u64, &'s str), String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n = num.parse().map_err(|_| format!("{s:?} is not {like}"))?;
    Ok((n, unit))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = number_and_unit(s, "a duration like 500ms, 15s, 10m, 12h or 7d")?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.saturating_mul(1_000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        "d" => n.saturating_mul(86_400_000),
        _ => return Err(format!("{s:?} has an unknown unit (use ms, s, m, h or d)")),
    };
    Ok(Duration::from_millis(ms))
}

/// The default `--max-body`: sled, the embedded log, stores larger values in files of their
/// own and leaves many of those behind after retention removes the events (with 1 MB events,
/// a log kept at 100 MB grew to 6 GB on disk in 8 minutes; with 64 KB events it stayed within
/// 3x of what it held).
pub const DEFAULT_MAX_BODY: usize = 64 << 10;

/// Parses a size: `1048576`, `64KiB`, `4MiB`, `1GiB` (powers of 1024), `500KB`, `1MB`, `1GB`
/// (powers of 1000); a bare number is bytes.
pub fn parse_bytes<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    let s = s.trim();
    let (n, unit) = number_and_unit(s, "a size like 1048576, 64KiB, 4MiB or 1GiB")?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    n.checked_mul(scale)
        .and_then(|bytes| T::try_from(bytes).ok())
        .ok_or_else(|| format!("{s:?} is too large"))
}

impl ServeArgs {
    /// Resolves flags and environment over the file over the defaults.
    pub fn resolve(&self) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        let s = self.clone().over(file);
        let defaults = Retention::default();
        let retention = Retention {
            max_events: s.retain_events.unwrap_or(defaults.max_events),
            max_age: s.retain_age.unwrap_or(defaults.max_age),
            max_bytes: s.retain_bytes.unwrap_or(defaults.max_bytes),
            max_keys: defaults.max_keys,
        };
        let tls = cert_and_key(("--tls-cert", s.tls_cert), ("--tls-key", s.tls_key))?;
        let jwt_jwks: Vec<JwksSource> = s
            .jwt_jwks
            .iter()
            .map(|text| JwksSource::parse(text, s.jwt_jwks_ca_file.as_deref()))
            .collect();
        if s.jwt_jwks_ca_file.is_some() && !s.jwt_jwks.iter().any(|u| u.starts_with("https://")) {
            return Err(ConfigError::Invalid(
                "--jwt-jwks-ca-file applies to https:// --jwt-jwks URLs only".into(),
            ));
        }
        let redis_tls_files = ClientFiles {
            ca_file: s.redis_ca_file,
            identity: cert_and_key(
                ("--redis-tls-cert", s.redis_tls_cert),
                ("--redis-tls-key", s.redis_tls_key),
            )?,
        };
        if redis_tls_files != ClientFiles::default()
            && !s.redis.as_ref().is_some_and(RedisConfig::uses_tls)
        {
            return Err(ConfigError::Invalid(
                "--redis-ca-file, --redis-tls-cert and --redis-tls-key apply to a rediss:// \
                 --redis URL only"
                    .into(),
            ));
        }
        let sentinel_auth = (
            s.redis_sentinel_username.filter(|u| !u.is_empty()),
            s.redis_sentinel_password.filter(|p| !p.is_empty()),
        );
        if sentinel_auth != (None, None) && s.redis.as_ref().is_none_or(|r| r.sentinels.is_none()) {
            return Err(ConfigError::Invalid(
                "--redis-sentinel-password and --redis-sentinel-username apply to a \
                 redis+sentinel:// --redis URL only"
                    .into(),
            ));
        }
        if let (Some(_), None) = sentinel_auth {
            return Err(ConfigError::Invalid(
                "--redis-sentinel-username needs --redis-sentinel-password".into(),
            ));
        }
        let redis = match s.redis {
            None => None,
            Some(redis) => {
                let embedded_only = [
                    ("--data-dir", s.data_dir.is_some()),
                    ("--fsync", s.fsync.is_some()),
                    ("--retain-bytes", s.retain_bytes.is_some()),
                ];
                if let Some((flag, _)) = embedded_only.iter().find(|(_, set)| *set) {
                    return Err(ConfigError::Invalid(format!(
                        "{flag} is a setting of the embedded log and does not apply with --redis \
                         (the shared log is trimmed by count and age, and is as durable as \
                         Redis's own persistence); remove one of them"
                    )));
                }
                let prefix = s.redis_prefix.unwrap_or_else(|| "herald".to_owned());
                // Braces are Redis Cluster's hash tag, which Herald adds itself there.
                if prefix.is_empty()
                    || prefix
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
                {
                    return Err(ConfigError::Invalid(format!(
                        "redis-prefix {prefix:?} must be non-empty, without spaces, braces or \
                         control characters"
                    )));
                }
                let (username, password) = sentinel_auth;
                let redis = redis
                    .with_tls_files(&redis_tls_files)
                    .map_err(|e| ConfigError::Invalid(format!("Redis TLS: {e}")))?
                    .with_sentinel_auth(username, password);
                Some(RedisLogConfig {
                    redis,
                    prefix,
                    retention,
                })
            }
        };
        let config = ServeConfig {
            redis,
            listen: s
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7070))),
            log: LogConfig {
                data_dir: s
                    .data_dir
                    .unwrap_or_else(|| PathBuf::from(crate::log::DEFAULT_DATA_DIR)),
                fsync: s.fsync.unwrap_or_default(),
                retention,
            },
            dev: s.dev.unwrap_or(false),
            jwt_secret: s.jwt_secret.filter(|s| !s.is_empty()),
            jwt_previous_secrets: s
                .jwt_previous_secrets
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
            jwt_public_keys: s.jwt_public_keys,
            jwt_jwks,
            jwt_jwks_refresh: s.jwt_jwks_refresh.unwrap_or(Duration::from_secs(300)),
            jwt_expected: Expected {
                issuer: s.jwt_issuer.filter(|s| !s.is_empty()),
                audience: s.jwt_audience.filter(|s| !s.is_empty()),
            },
            trim_interval: s.trim_interval.unwrap_or(Duration::from_secs(10)),
            max_connections: s.max_connections.unwrap_or(50_000),
            max_connections_per_user: s.max_connections_per_user,
            node_name: s.node_name,
            max_topics: s.max_topics.unwrap_or(64),
            max_body: s.max_body.unwrap_or(DEFAULT_MAX_BODY),
            queue_bytes: s.queue_bytes.unwrap_or(4 << 20),
            keepalive: s.keepalive.unwrap_or(Duration::from_secs(15)),
            retry_ms: s.retry_ms.unwrap_or(3_000),
            header_timeout: s.header_timeout.unwrap_or(Duration::from_secs(10)),
            shutdown_timeout: s.shutdown_timeout.unwrap_or(Duration::from_secs(10)),
            cors_origins: origins(s.cors_origins)?,
            tls,
            backlog: s.backlog.unwrap_or(4096),
        };
        let too_small = [
            ("max-connections", config.max_connections, 1),
            (
                "max-connections-per-user",
                config.max_connections_per_user.unwrap_or(1),
                1,
            ),
            ("max-topics", config.max_topics, 1),
            ("max-body", config.max_body, 1),
            ("queue-bytes", config.queue_bytes, 1024),
        ];
        if let Some((name, value, least)) = too_small.iter().find(|(_, v, least)| v < least) {
            return Err(ConfigError::Invalid(format!(
                "{name} must be at least {least} (got {value})"
            )));
        }
        // Every browser refused by a cap comes back after this: at 0 they would spin.
        if config.retry_ms < MIN_RETRY_MS {
            return Err(ConfigError::Invalid(format!(
                "retry-ms must be at least {MIN_RETRY_MS}: browsers turned away by a connection \
                 cap reconnect after it"
            )));
        }
        // Each read of a key set is a request to the identity provider.
        if config.jwt_jwks_refresh < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "jwt-jwks-refresh must be at least 1s".into(),
            ));
        }
        // A log that keeps nothing could replay nothing: every resume would be a reset.
        let kept = &config.log.retention;
        for (name, zero) in [
            ("retain-events", kept.max_events == 0),
            ("retain-bytes", kept.max_bytes == 0),
            ("retain-age", kept.max_age.is_zero()),
        ] {
            if zero {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be more than zero: a log that keeps nothing can replay nothing"
                )));
            }
        }
        if let Some(name) = &config.node_name
            && (name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control))
        {
            return Err(ConfigError::Invalid(format!(
                "node-name {name:?} must be 1 to 100 bytes of printable text"
            )));
        }
        for (name, duration) in [
            ("keepalive", config.keepalive),
            ("trim-interval", config.trim_interval),
            ("header-timeout", config.header_timeout),
        ] {
            if duration.is_zero() {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be longer than zero"
                )));
            }
        }
        Ok(config)
    }

    /// These settings, with `file`'s wherever these have none. Every field is named (no
    /// `..`), so a new setting cannot be left out of the file.
    fn over(self, file: ServeArgs) -> ServeArgs {
        ServeArgs {
            config: self.config,
            listen: self.listen.or(file.listen),
            data_dir: self.data_dir.or(file.data_dir),
            dev: self.dev.or(file.dev),
            jwt_secret: self.jwt_secret.or(file.jwt_secret),
            jwt_previous_secrets: or_file(self.jwt_previous_secrets, file.jwt_previous_secrets),
            jwt_public_keys: or_file(self.jwt_public_keys, file.jwt_public_keys),
            jwt_jwks: or_file(self.jwt_jwks, file.jwt_jwks),
            jwt_jwks_ca_file: self.jwt_jwks_ca_file.or(file.jwt_jwks_ca_file),
            jwt_jwks_refresh: self.jwt_jwks_refresh.or(file.jwt_jwks_refresh),
            jwt_issuer: self.jwt_issuer.or(file.jwt_issuer),
            jwt_audience: self.jwt_audience.or(file.jwt_audience),
            fsync: self.fsync.or(file.fsync),
            retain_events: self.retain_events.or(file.retain_events),
            retain_age: self.retain_age.or(file.retain_age),
            retain_bytes: self.retain_bytes.or(file.retain_bytes),
            trim_interval: self.trim_interval.or(file.trim_interval),
            max_connections: self.max_connections.or(file.max_connections),
            max_connections_per_user: self
                .max_connections_per_user
                .or(file.max_connections_per_user),
            node_name: self.node_name.or(file.node_name),
            max_topics: self.max_topics.or(file.max_topics),
            max_body: self.max_body.or(file.max_body),
            queue_bytes: self.queue_bytes.or(file.queue_bytes),
            keepalive: self.keepalive.or(file.keepalive),
            retry_ms: self.retry_ms.or(file.retry_ms),
            header_timeout: self.header_timeout.or(file.header_timeout),
            shutdown_timeout: self.shutdown_timeout.or(file.shutdown_timeout),
            cors_origins: or_file(self.cors_origins, file.cors_origins),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            backlog: self.backlog.or(file.backlog),
            redis: self.redis.or(file.redis),
            redis_prefix: self.redis_prefix.or(file.redis_prefix),
            redis_ca_file: self.redis_ca_file.or(file.redis_ca_file),
            redis_tls_cert: self.redis_tls_cert.or(file.redis_tls_cert),
            redis_tls_key: self.redis_tls_key.or(file.redis_tls_key),
            redis_sentinel_password: self
                .redis_sentinel_password
                .or(file.redis_sentinel_password),
            redis_sentinel_username: self
                .redis_sentinel_username
                .or(file.redis_sentinel_username),
        }
    }
}

/// A duration written as text in the file, like the flags take it (`15s`, `7d`).
/// A list given on the command line or in the environment replaces the file's, which is
/// kept when none is.
fn or_file<T>(given: Vec<T>, file: Vec<T>) -> Vec<T> {
    if given.is_empty() { file } else { given }
}

fn duration_text<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(de)?;
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A size in the file: a number of bytes, or text as the flags take it (`"1GiB"`).
fn bytes_value<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    let bytes = match Size::deserialize(de)? {
        Size::Bytes(n) => n.to_string(),
        Size::Text(text) => text,
    };
    parse_bytes(&bytes)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A value written as text in the file and parsed as its flag is (`fsync`, `redis`).
fn parsed_text<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr<Err: std::fmt::Display>,
{
    let text = String::deserialize(de)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    // The message and line only: toml's own text quotes the line, which may hold a secret.
    toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(String::new(), |span| {
            let line = text[..span.start].matches('\n').count() + 1;
            format!(" (line {line})")
        });
        ConfigError::Parse {
            path: path.to_owned(),
            message: format!("{}{line}", e.message().trim_end()),
        }
    })
}

/// A certificate and its key, given both or neither; the names are the flags, for the error.
fn cert_and_key(
    (cert_flag, cert): (&str, Option<PathBuf>),
    (key_flag, key): (&str, Option<PathBuf>),
) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        _ => Err(ConfigError::Invalid(format!(
            "{cert_flag} and {key_flag} go together"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("3w").is_err());
        assert_eq!(parse_bytes::<u64>("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes::<usize>("64KiB"), Ok(65_536));
        assert_eq!(parse_bytes::<u64>("500MB"), Ok(500_000_000));
        assert_eq!(parse_bytes::<u64>("1048576"), Ok(1_048_576));
        assert!(parse_bytes::<u64>("1.5GiB").is_err());
        assert!(parse_bytes::<u64>("4 megs").is_err());
        assert!(parse_bytes::<u32>("8GiB").is_err());
    }

    #[test]
    fn a_setting_out_of_range_is_named_and_listen_says_what_to_write() {
        let refused = |args: ServeArgs| args.resolve().unwrap_err().to_string();
        let dev = || ServeArgs {
            dev: Some(true),
            ..ServeArgs::default()
        };
        for (args, says) in [
            (
                ServeArgs {
                    queue_bytes: Some(0),
                    ..dev()
                },
                "queue-bytes must be at least 1024 (got 0)",
            ),
            (
                ServeArgs {
                    max_connections_per_user: Some(0),
                    ..dev()
                },
                "max-connections-per-user must be at least 1",
            ),
            (
                ServeArgs {
                    retain_age: Some(Duration::ZERO),
                    ..dev()
                },
                "retain-age must be more than zero",
            ),
            (
                ServeArgs {
                    keepalive: Some(Duration::ZERO),
                    ..dev()
                },
                "keepalive must be longer than zero",
            ),
        ] {
            let error = refused(args);
            assert!(error.contains(says), "{error}");
        }
        assert_eq!(
            parse_listen("0.0.0.0:7070"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 7070)))
        );
        let host = parse_listen("localhost:7070").unwrap_err();
        assert!(
            host.contains("127.0.0.1:7070") && host.contains("0.0.0.0:7070"),
            "{host}"
        );
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(
            &path,
            "max_connections = 7\nmax_topics = 3\nkeepalive = \"5s\"\nfsync = \"never\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            max_topics: Some(9),
            ..ServeArgs::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.max_topics, 9);
        assert_eq!(c.keepalive, Duration::from_secs(5));
        assert_eq!(c.log.fsync, FsyncPolicy::Never);
        assert_eq!(c.max_body, DEFAULT_MAX_BODY);
    }

    #[test]
    fn the_file_takes_values_as_their_flags_do_and_its_errors_keep_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        let write = |text: &str| std::fs::write(&path, text).unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        write(
            "dev = true\ntrim_interval = \"500ms\"\ncors_origins = [\"https://a.example\"]\n\
             redis = \"redis://:pw@10.0.0.5:6380/2\"\nredis_prefix = \"blue\"\n",
        );
        let c = args.resolve().unwrap();
        assert!(c.dev);
        assert_eq!(c.trim_interval, Duration::from_millis(500));
        assert_eq!(c.cors_origins, ["https://a.example"]);
        let shared = c.redis.unwrap();
        assert_eq!(shared.redis.to_string(), "redis://10.0.0.5:6380/2");
        assert_eq!(shared.prefix, "blue");
        // Key lists, under the setting's name or the flag's.
        write(
            "jwt_secret = \"new\"\njwt_previous_secrets = [\"old\", \"older\"]\n\
             jwt_public_key = [\"/etc/idp.pem\"]\n",
        );
        let c = args.resolve().unwrap();
        assert_eq!(c.jwt_previous_secrets, ["old", "older"]);
        assert_eq!(c.jwt_public_keys, [PathBuf::from("/etc/idp.pem")]);
        // Sizes as text or as a number of bytes.
        write("dev = true\nmax_body = \"64KiB\"\nqueue_bytes = 2048\nretain_bytes = \"1GB\"\n");
        let c = args.resolve().unwrap();
        assert_eq!((c.max_body, c.queue_bytes), (65_536, 2_048));
        assert_eq!(c.log.retention.max_bytes, 1_000_000_000);
        write("dev = true\nmax_body = \"64 kilos\"\n");
        let err = args.resolve().unwrap_err().to_string();
        assert!(
            err.contains("unknown unit") && err.contains("line 2"),
            "{err}"
        );

        write("redis = \"redis://:topsecret@h:bad\"\n");
        let err = args.resolve().unwrap_err().to_string();
        assert!(
            err.contains("port `bad`") && err.contains("line 1"),
            "{err}"
        );
        assert!(!err.contains("topsecret"), "{err}");
        write("redis = \"redis://h\"\nfsync = \"never\"\n");
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("--fsync"), "{err}");
    }

    #[test]
    fn dev_mode_from_the_file_can_be_turned_off_and_cors_origins_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(
            &path,
            "dev = true\ncors_origin = [\" https://a.example\"]\n",
        )
        .unwrap();
        let with = |dev: Option<bool>| ServeArgs {
            config: Some(path.clone()),
            jwt_secret: Some("s".into()),
            dev,
            ..ServeArgs::default()
        };
        let from_file = with(None).resolve().unwrap();
        assert!(from_file.dev);
        // The flag's key name works in the file too, and the entry is trimmed.
        assert_eq!(from_file.cors_origins, ["https://a.example"]);
        assert!(
            !with(Some(false)).resolve().unwrap().dev,
            "--dev=false wins"
        );

        let cors = |origins: &[&str]| {
            ServeArgs {
                cors_origins: origins.iter().map(|o| o.to_string()).collect(),
                ..ServeArgs::default()
            }
            .resolve()
            .map(|c| c.cors_origins)
        };
        assert_eq!(
            cors(&["https://a.example", " http://b.example:8080", ""]).unwrap(),
            ["https://a.example", "http://b.example:8080"]
        );
        // Written as a browser sends it: lowercase, without the scheme's default port.
        assert_eq!(
            cors(&[
                "HTTP://LOCALHOST:7531",
                "http://localhost:80",
                "https://A.example:443"
            ])
            .unwrap(),
            [
                "http://localhost:7531",
                "http://localhost",
                "https://a.example"
            ]
        );
        for bad in [
            "*",
            "https://c.example/",
            "c.example",
            "https://",
            "https://c.example/app",
            "ftp://c.example",
            "https://bücher.example",
        ] {
            let err = cors(&[bad]).unwrap_err().to_string();
            assert!(err.contains("not an origin"), "{bad}: {err}");
        }
    }

    #[test]
    fn settings_that_would_leave_the_server_half_working_are_refused() {
        let zero = [
            ServeArgs {
                max_body: Some(0),
                ..ServeArgs::default()
            },
            ServeArgs {
                retain_events: Some(0),
                ..ServeArgs::default()
            },
            ServeArgs {
                retain_bytes: Some(0),
                ..ServeArgs::default()
            },
            ServeArgs {
                retain_age: Some(Duration::ZERO),
                ..ServeArgs::default()
            },
            ServeArgs {
                retry_ms: Some(0),
                ..ServeArgs::default()
            },
            ServeArgs {
                retry_ms: Some(99),
                ..ServeArgs::default()
            },
        ];
        for args in zero {
            let err = args.clone().resolve().unwrap_err().to_string();
            assert!(
                err.contains("zero") || err.contains("at least 1"),
                "{args:?}: {err}"
            );
        }
    }

    #[test]
    fn a_node_name_is_printable_text() {
        let named = |name: &str| {
            ServeArgs {
                node_name: Some(name.into()),
                ..ServeArgs::default()
            }
            .resolve()
        };
        assert_eq!(named("eu-1").unwrap().node_name.as_deref(), Some("eu-1"));
        for bad in ["", "  ", "a\nb", &"x".repeat(101)] {
            let err = named(bad).unwrap_err().to_string();
            assert!(err.contains("node-name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn sentinel_credentials_need_a_sentinel_url_and_a_password() {
        let with = |redis: &str, user: Option<&str>, pass: Option<&str>| {
            ServeArgs {
                redis: Some(redis.parse().unwrap()),
                redis_sentinel_username: user.map(Into::into),
                redis_sentinel_password: pass.map(Into::into),
                ..ServeArgs::default()
            }
            .resolve()
        };
        let err = with("redis://h", None, Some("pw")).unwrap_err().to_string();
        assert!(err.contains("redis+sentinel://"), "{err}");
        let err = with("redis+sentinel://s/m", Some("u"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs --redis-sentinel-password"), "{err}");
        let c = with("redis+sentinel://:masterpw@s/m", Some("u"), Some("pw")).unwrap();
        let redis = c.redis.unwrap().redis;
        let shown = format!("{:?}", redis.sentinels);
        assert!(
            shown.contains("\"u\"") && !shown.contains("\"pw\""),
            "{shown}"
        );
        assert_eq!(redis.password.as_deref(), Some("masterpw"));
    }

    #[test]
    fn unknown_settings_in_the_file_are_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "max_conections = 7\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("herald.toml"), "{err}");
    }
}
