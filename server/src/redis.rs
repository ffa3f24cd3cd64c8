//! The blocking Redis client that cluster mode uses to share the log through Redis Streams.
//!
//! It speaks RESP2 over TCP, or over TLS with rustls for `rediss://`, and nothing more:
//! [`Connection`] sends one command
//! ([`Connection::query`]) or many in one round trip ([`Connection::pipeline`]), and [`Pool`]
//! keeps a few connections for threads that issue short commands. With a
//! `redis+sentinel://` URL every new connection first asks Redis Sentinel where the master is,
//! and a connection to a node that has become a replica is dropped (see [`Sentinels`]). It is
//! blocking on purpose:
//! like the sled log it runs on dedicated threads, so it needs no async runtime, and we avoid
//! the `redis` crate's build time.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::lock;
use crate::tls::{ClientFiles, TlsError};

/// Largest bulk string we accept (Redis allows 512 MiB; our payloads are far smaller).
const MAX_BULK: usize = 64 << 20;
/// Largest array we accept.
const MAX_ARRAY: usize = 16 << 20;
/// Deepest array nesting we accept (XREAD replies are 4 deep).
const MAX_DEPTH: usize = 8;
/// Longest header, status or error line we accept.
const MAX_LINE: usize = 64 << 10;
/// Up-front capacity cap, so a length we have not yet received the bytes for costs little.
const PREALLOC: usize = 64 << 10;

/// Where Redis is: parsed from `redis://[[username]:password@]host[:port][/db]`, or
/// `rediss://...` for TLS (trusting the system's roots until [`RedisConfig::with_tls_files`]
/// says more), or `redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/master[/db]`
/// (`rediss+sentinel://` for TLS) for a master that Redis Sentinel watches.
#[derive(Clone)]
pub struct RedisConfig {
    /// Host name or IP address (an IPv6 address without brackets); with Sentinel, the first
    /// sentinel's.
    pub host: String,
    /// TCP port, 6379 unless the URL says otherwise (26379 for a sentinel).
    pub port: u16,
    /// ACL user for `AUTH user password`; `None` authenticates as the default user.
    pub username: Option<String>,
    /// Password for `AUTH`; `None` sends no `AUTH`.
    pub password: Option<String>,
    /// Database selected with `SELECT` after connecting (0 sends none).
    pub db: u32,
    /// `redis+sentinel://`: the sentinels to ask where the master is, and its name.
    pub sentinels: Option<Arc<Sentinels>>,
    /// `rediss://`: the TLS settings every connection uses.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// `rediss://` whose TLS settings are not resolved yet (parsing reads no files).
    tls_pending: bool,
    /// Where a Redis Cluster last said (`MOVED`) the keys asked for live; every connection
    /// made from this configuration or its clones goes there first.
    moved_to: Arc<Mutex<Option<(String, u16)>>>,
}

/// The sentinels of a `redis+sentinel://` URL and the name of the master they watch.
///
/// Every new connection asks them in turn (`SENTINEL get-master-addr-by-name`), the first
/// that answers first, then checks with `ROLE` that the node it reaches is a master. When
/// the answer changes (a failover), every connection opened before it is given up at its
/// next use. [`Pool::recheck_master`] asks again without opening a connection, so that
/// connections that stay open still follow a failover (the node heartbeat calls it every
/// second). A node that answers `READONLY` (demoted while a connection to it stayed open)
/// breaks that connection too. The URL's credentials and database are the master's; the
/// sentinels' own are given apart ([`RedisConfig::with_sentinel_auth`]), and without them
/// sentinels are asked without `AUTH`.
pub struct Sentinels {
    /// `(host, port)` of each sentinel, in the URL's order.
    pub nodes: Vec<(String, u16)>,
    /// The master's name in the sentinels' configuration (`sentinel monitor <name> ...`).
    pub master: String,
    /// ACL user for `AUTH` to a sentinel; `None` is its default user.
    username: Option<String>,
    /// Password for `AUTH` to a sentinel; `None` sends no `AUTH`.
    password: Option<String>,
    /// What the sentinels said last.
    seen: Mutex<SentinelAnswer>,
}

impl fmt::Debug for Sentinels {
    /// Never shows the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sentinels")
            .field("nodes", &self.nodes)
            .field("master", &self.master)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("seen", &self.seen)
            .finish()
    }
}

/// The sentinels' last answer: where the master is, and how many times the answer has
/// changed (a connection opened under an older count is stale).
#[derive(Debug, Default)]
struct SentinelAnswer {
    master: Option<(String, u16)>,
    epoch: u64,
}

impl Sentinels {
    /// Asks the sentinels where the master is now; returns it with the answer's epoch.
    fn locate(
        &self,
        config: &RedisConfig,
        timeout: Duration,
    ) -> Result<((String, u16), u64), RedisError> {
        let address = self.master_address(config, timeout)?;
        let mut seen = lock(&self.seen);
        if seen
            .master
            .as_ref()
            .is_some_and(|before| *before != address)
        {
            seen.epoch += 1;
            let (host, port) = &address;
            tracing::warn!(master = %self.master, %host, port, "Sentinel names a new master; reconnecting to it");
        }
        seen.master = Some(address.clone());
        Ok((address, seen.epoch))
    }

    /// The number of times the master has moved, as far as this process has seen.
    fn epoch(&self) -> u64 {
        lock(&self.seen).epoch
    }

    /// Asks each sentinel in turn where the master is; the first answer wins.
    fn master_address(
        &self,
        config: &RedisConfig,
        timeout: Duration,
    ) -> Result<(String, u16), RedisError> {
        // A sentinel is asked with its own credentials (if any) and no SELECT.
        let probe = RedisConfig {
            username: self.username.clone(),
            password: self.password.clone(),
            db: 0,
            sentinels: None,
            moved_to: Arc::default(),
            ..config.clone()
        };
        let mut problems = Vec::new();
        for (host, port) in &self.nodes {
            let asked = Connection::open_at(&probe, host, *port, timeout).and_then(|mut c| {
                c.query(&[
                    b"SENTINEL",
                    b"get-master-addr-by-name",
                    self.master.as_bytes(),
                ])
            });
            let reply = match asked {
                Ok(reply) => reply,
                Err(error) => {
                    let error = error.to_string();
                    let hint = match self.password {
                        None if error.contains("NOAUTH") => {
                            " (this sentinel asks for a password: --redis-sentinel-password)"
                        }
                        _ => "",
                    };
                    problems.push(format!("{host}:{port}: {error}{hint}"));
                    continue;
                }
            };
            let address = reply.into_array().unwrap_or_default();
            let found = match address.as_slice() {
                [host, port] => host
                    .as_str()
                    .zip(port.as_str().and_then(|p| p.parse().ok())),
                _ => None,
            };
            match found {
                Some((host, port)) => return Ok((host.to_owned(), port)),
                None => problems.push(format!(
                    "{host}:{port}: knows no master named `{}`",
                    self.master
                )),
            }
        }
        let message = format!(
            "no sentinel named the master `{}`: {}",
            self.master,
            problems.join("; ")
        );
        Err(io::Error::new(io::ErrorKind::NotFound, message).into())
    }
}

impl RedisConfig {
    /// For `redis+sentinel://`: the credentials the sentinels ask for (theirs, not the
    /// master's, which the URL holds). Does nothing for other URLs.
    pub fn with_sentinel_auth(
        mut self,
        username: Option<String>,
        password: Option<String>,
    ) -> Self {
        if let Some(sentinels) = &self.sentinels {
            self.sentinels = Some(Arc::new(Sentinels {
                nodes: sentinels.nodes.clone(),
                master: sentinels.master.clone(),
                username,
                password,
                seen: Mutex::default(),
            }));
        }
        self
    }

    /// True for a `rediss://` URL.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some() || self.tls_pending
    }

    /// Use once at start-up for a `rediss://` URL: reads the CA file and client certificate
    /// (and the system's roots) now, so a bad file is an error before anything connects.
    pub fn with_tls_files(mut self, files: &ClientFiles) -> Result<Self, TlsError> {
        if self.uses_tls() {
            self.tls = Some(Arc::new(crate::tls::client_config(files)?));
            self.tls_pending = false;
        }
        Ok(self)
    }
}

/// Why a Redis URL was rejected; the message never repeats the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Redis URL: {0}")]
pub struct UrlError(String);

fn url_error(message: impl Into<String>) -> UrlError {
    UrlError(message.into())
}

impl FromStr for RedisConfig {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        let (rest, tls, sentinel) = match url.split_once("://") {
            Some(("redis", rest)) => (rest, false, false),
            Some(("rediss", rest)) => (rest, true, false),
            Some(("redis+sentinel", rest)) => (rest, false, true),
            Some(("rediss+sentinel", rest)) => (rest, true, true),
            Some((scheme, _)) => {
                return Err(url_error(format!(
                    "scheme `{scheme}://` is not supported; use redis://, rediss:// (TLS), \
                     or redis+sentinel:// / rediss+sentinel:// for a master that Sentinel watches"
                )));
            }
            None => return Err(url_error("it must start with redis:// or rediss://")),
        };
        if rest.contains(['?', '#']) {
            return Err(url_error(
                "`?` and `#` are not supported (percent-encode them in a password)",
            ));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (master, db) = match sentinel {
            false => (None, path),
            true => {
                let (master, db) = path.split_once('/').unwrap_or((path, ""));
                if master.is_empty() {
                    return Err(url_error(
                        "name the master after the sentinels: \
                         redis+sentinel://host:26379,host2:26379/mymaster",
                    ));
                }
                (percent_decode(master)?, db)
            }
        };
        // The last `@` ends the user info, so an unencoded `@` in a password still works.
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (userinfo, hostport),
            None => ("", authority),
        };
        let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let (username, password) = (percent_decode(user)?, percent_decode(pass)?);
        if username.is_some() && password.is_none() {
            return Err(url_error(
                "a username needs a password: redis://user:password@host",
            ));
        }
        let default_port = if sentinel { 26379 } else { 6379 };
        let nodes = match sentinel {
            true => hostport
                .split(',')
                .map(|node| host_port(node, default_port))
                .collect::<Result<Vec<_>, _>>()?,
            false => vec![host_port(hostport, default_port)?],
        };
        let (host, port) = nodes[0].clone();
        let db = match db {
            "" => 0,
            db => db
                .parse()
                .map_err(|_| url_error(format!("database `{db}` is not a number")))?,
        };
        Ok(Self {
            host,
            port,
            username,
            password,
            db,
            sentinels: master.map(|master| {
                Arc::new(Sentinels {
                    nodes,
                    master,
                    username: None,
                    password: None,
                    seen: Mutex::default(),
                })
            }),
            tls: None,
            tls_pending: tls,
            moved_to: Arc::default(),
        })
    }
}

/// Reads `host[:port]` or `[ipv6][:port]`.
fn host_port(text: &str, default_port: u16) -> Result<(String, u16), UrlError> {
    let (host, port) = match text.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, after)) => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(url_error(format!("unexpected `{after}` after `]`"))),
            },
            None => return Err(url_error("`[` without a closing `]` in the host")),
        },
        None => match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    if host.is_empty() {
        return Err(url_error("the host is missing"));
    }
    let port =
        match port {
            None => default_port,
            Some(port) => port.parse().ok().filter(|&p: &u16| p != 0).ok_or_else(|| {
                url_error(format!("port `{port}` is not a number from 1 to 65535"))
            })?,
        };
    Ok((host.to_owned(), port))
}

/// Decodes `%XX` escapes; an empty string is `None`.
fn percent_decode(text: &str) -> Result<Option<String>, UrlError> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    let hex = |digit: u8| char::from(digit).to_digit(16);
    let bad_escape = || url_error("a `%` in the user info is not followed by two hex digits");
    while let [byte, tail @ ..] = rest {
        rest = tail;
        if *byte != b'%' {
            bytes.push(*byte);
            continue;
        }
        let [high, low, tail @ ..] = rest else {
            return Err(bad_escape());
        };
        let (Some(high), Some(low)) = (hex(*high), hex(*low)) else {
            return Err(bad_escape());
        };
        // Two hex digits always fit in a byte.
        bytes.push((high * 16 + low) as u8);
        rest = tail;
    }
    let text =
        String::from_utf8(bytes).map_err(|_| url_error("the decoded user info is not UTF-8"))?;
    Ok(Some(text).filter(|t| !t.is_empty()))
}

impl fmt::Display for RedisConfig {
    /// `redis[s]://[user@]host:port/db` (`redis[s]+sentinel://[user@]host:port,.../master/db`),
    /// never the password, because this goes in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.uses_tls() { "rediss" } else { "redis" })?;
        if self.sentinels.is_some() {
            f.write_str("+sentinel")?;
        }
        f.write_str("://")?;
        if let Some(user) = &self.username {
            write!(f, "{user}@")?;
        }
        let first = [(self.host.clone(), self.port)];
        let nodes = match &self.sentinels {
            Some(sentinels) => &sentinels.nodes[..],
            None => &first[..],
        };
        for (i, (host, port)) in nodes.iter().enumerate() {
            f.write_str(if i == 0 { "" } else { "," })?;
            match host.contains(':') {
                true => write!(f, "[{host}]:{port}")?,
                false => write!(f, "{host}:{port}")?,
            }
        }
        if let Some(sentinels) = &self.sentinels {
            write!(f, "/{}", sentinels.master)?;
        }
        write!(f, "/{}", self.db)
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = self.password.as_ref().map(|_| "<redacted>");
        f.debug_struct("RedisConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &password)
            .field("db", &self.db)
            .field("sentinels", &self.sentinels)
            .field("tls", &self.uses_tls())
            .finish()
    }
}

/// One reply from Redis (an error reply is a [`RedisError::Server`] instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `$-1` or `*-1`: a missing key, or a blocking read that timed out.
    Nil,
    /// `:` integer reply.
    Int(i64),
    /// `+` simple string such as `OK`.
    Status(String),
    /// `$` bulk string: binary-safe data.
    Data(Vec<u8>),
    /// `*` array, possibly nested.
    Array(Vec<Value>),
}

impl Value {
    /// Use to read a field or id as bytes (`Data` or `Status`).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Data(data) => Some(data),
            Value::Status(status) => Some(status.as_bytes()),
            _ => None,
        }
    }

    /// Use to read text (`Data` holding UTF-8, or `Status`).
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes()
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
    }

    /// Use to read a number, which Redis sends as `Int` or as decimal text (XINFO fields).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => self.as_str()?.parse().ok(),
        }
    }

    /// Use to walk a list reply; `Nil` (nothing found) is an empty list.
    pub fn into_array(self) -> Option<Vec<Value>> {
        match self {
            Value::Array(items) => Some(items),
            Value::Nil => Some(Vec::new()),
            _ => None,
        }
    }
}

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// Connecting failed, or the connection broke or timed out.
    #[error("Redis connection: {0}")]
    Io(#[from] io::Error),
    /// Redis sent bytes that are not RESP2 we accept (or over our size limits).
    #[error("Redis protocol error: {0}")]
    Protocol(String),
    /// Redis answered with an error reply; the text is without the leading `-`.
    #[error("Redis error: {0}")]
    Server(String),
    /// The configured URL is invalid.
    #[error(transparent)]
    Url(#[from] UrlError),
}

impl RedisError {
    /// Use to decide whether to drop the connection: after an `Io` or `Protocol` error the
    /// stream may be mid-reply, so the next reply read on it could belong to this command.
    pub fn is_connection_error(&self) -> bool {
        matches!(self, RedisError::Io(_) | RedisError::Protocol(_))
    }
}

fn protocol(message: impl Into<String>) -> RedisError {
    RedisError::Protocol(message.into())
}

/// A reply, or the text of an error reply.
type Reply = Result<Value, String>;

/// Encodes one command as a RESP array of bulk strings.
fn write_command<W: Write, A: AsRef<[u8]>>(out: &mut W, args: &[A]) -> io::Result<()> {
    write!(out, "*{}\r\n", args.len())?;
    for arg in args {
        let arg = arg.as_ref();
        write!(out, "${}\r\n", arg.len())?;
        out.write_all(arg)?;
        out.write_all(b"\r\n")?;
    }
    Ok(())
}

/// Reads one line and strips its CRLF.
fn read_line<R: BufRead>(input: &mut R) -> Result<Vec<u8>, RedisError> {
    let mut line = Vec::new();
    input
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)?;
    if line.ends_with(b"\r\n") {
        line.truncate(line.len() - 2);
        return Ok(line);
    }
    if line.ends_with(b"\n") {
        return Err(protocol("a reply line ends in LF without CR"));
    }
    if line.len() >= MAX_LINE {
        return Err(protocol(format!(
            "a reply line is longer than {MAX_LINE} bytes"
        )));
    }
    let message = match line.is_empty() {
        true => "Redis closed the connection",
        false => "Redis closed the connection in the middle of a reply",
    };
    Err(io::Error::new(io::ErrorKind::UnexpectedEof, message).into())
}

/// Parses a decimal `i64` strictly: an optional `-` and digits only.
fn parse_int(text: &[u8]) -> Result<i64, RedisError> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let number = match !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        true => std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()),
        false => None,
    };
    number.ok_or_else(|| {
        protocol(format!(
            "`{}` is not an integer",
            String::from_utf8_lossy(text)
        ))
    })
}

/// Parses a bulk or array length: `None` for `-1` (Nil).
fn parse_len(text: &[u8], max: usize, what: &str) -> Result<Option<usize>, RedisError> {
    match parse_int(text)? {
        -1 => Ok(None),
        n => match usize::try_from(n) {
            Ok(len) if len <= max => Ok(Some(len)),
            Ok(_) => Err(protocol(format!(
                "{what} of {n} is over our limit of {max}"
            ))),
            Err(_) => Err(protocol(format!("{what} has negative length {n}"))),
        },
    }
}

/// Reads one whole reply. An error nested in an array (as EXEC can send) makes the whole
/// reply an error, but only after the rest of it is read, so the stream stays in step.
fn read_reply<R: BufRead>(input: &mut R, depth: usize) -> Result<Reply, RedisError> {
    let line = read_line(input)?;
    let Some((&kind, rest)) = line.split_first() else {
        return Err(protocol("an empty reply line"));
    };
    match kind {
        // Redis only sends ASCII here; a stray byte is not worth failing the reply over.
        b'+' => Ok(Ok(Value::Status(
            String::from_utf8_lossy(rest).into_owned(),
        ))),
        b'-' => Ok(Err(String::from_utf8_lossy(rest).into_owned())),
        b':' => Ok(Ok(Value::Int(parse_int(rest)?))),
        b'$' => {
            let Some(len) = parse_len(rest, MAX_BULK, "a bulk string")? else {
                return Ok(Ok(Value::Nil));
            };
            // `take` + `read_to_end` grows the buffer as bytes arrive instead of trusting `len`.
            let mut data = Vec::with_capacity(len.min(PREALLOC));
            input.by_ref().take(len as u64).read_to_end(&mut data)?;
            if data.len() < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "Redis closed the connection in a bulk string",
                )
                .into());
            }
            let mut crlf = [0; 2];
            input.read_exact(&mut crlf)?;
            if crlf != *b"\r\n" {
                return Err(protocol(format!(
                    "a bulk string of {len} bytes is not followed by CRLF"
                )));
            }
            Ok(Ok(Value::Data(data)))
        }
        b'*' => {
            let Some(len) = parse_len(rest, MAX_ARRAY, "an array")? else {
                return Ok(Ok(Value::Nil));
            };
            if depth >= MAX_DEPTH {
                return Err(protocol(format!("arrays nested deeper than {MAX_DEPTH}")));
            }
            let mut items = Vec::with_capacity(len.min(PREALLOC / size_of::<Value>()));
            let mut first_error = None;
            for _ in 0..len {
                match read_reply(input, depth + 1)? {
                    Ok(item) => items.push(item),
                    Err(message) => {
                        first_error.get_or_insert(message);
                    }
                }
            }
            Ok(first_error.map_or(Ok(Value::Array(items)), Err))
        }
        other => Err(protocol(format!(
            "unknown reply type byte 0x{other:02x} (only RESP2 is supported)"
        ))),
    }
}

/// The bytes under a [`Connection`]: TCP, or TLS over it.
enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(tls) => &tls.sock,
        }
    }

    /// Wraps `tcp` in TLS for `host` and completes the handshake now (bounded by the
    /// socket's timeouts), so a certificate problem is reported when connecting.
    fn tls(
        tcp: TcpStream,
        host: &str,
        settings: Arc<rustls::ClientConfig>,
    ) -> Result<Self, RedisError> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            let message = format!("`{host}` is not a name a TLS certificate can hold");
            io::Error::new(io::ErrorKind::InvalidInput, message)
        })?;
        let session = rustls::ClientConnection::new(settings, name).map_err(io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(session, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).map_err(|e| {
                let hint = match e.to_string().contains("certificate") {
                    true => " (trust its CA with --redis-ca-file)",
                    false => "",
                };
                io::Error::new(e.kind(), format!("TLS handshake with `{host}`: {e}{hint}"))
            })?;
        }
        Ok(Transport::Tls(Box::new(stream)))
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.read(buf),
            Transport::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.write(buf),
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(tcp) => tcp.flush(),
            Transport::Tls(tls) => tls.flush(),
        }
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Transport::Plain(_) => "tcp",
            Transport::Tls(_) => "tls",
        };
        write!(f, "{kind} {:?}", self.tcp().peer_addr().ok())
    }
}

/// Where a Redis Cluster `MOVED <slot> <host>:<port>` error reply points (an empty host
/// means the node that answered); `None` for any other error.
fn moved_target(error: &str) -> Option<(String, u16)> {
    redirect_target(error, "MOVED")
}

/// Why a Redis Cluster did not run a command where it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Redirect {
    /// `MOVED <slot> <host>:<port>`: the slot is served there now.
    Moved((String, u16)),
    /// `ASK <slot> <host>:<port>`: the slot is being migrated there, and this one command
    /// (not the ones after it) must be asked there after `ASKING`.
    Ask((String, u16)),
    /// `TRYAGAIN`: the command's keys are split between the two nodes of a slot being
    /// migrated; it will run once they have all moved.
    TryAgain,
}

impl Redirect {
    /// What an error reply says, if it is a redirect.
    fn of(error: &str) -> Option<Self> {
        if let Some(target) = moved_target(error) {
            return Some(Self::Moved(target));
        }
        if let Some(target) = redirect_target(error, "ASK") {
            return Some(Self::Ask(target));
        }
        error.starts_with("TRYAGAIN").then_some(Self::TryAgain)
    }
}

/// True for an error reply saying Redis cannot take the command now but will (`LOADING` a
/// dataset after a restart, `BUSY` in a script, a replica whose master is down, a cluster
/// that is down, a node demoted to a replica, too few replicas, out of memory until
/// retention frees some): the command did not run.
pub fn is_transient(error: &str) -> bool {
    const NOT_NOW: [&str; 7] = [
        "LOADING",
        "BUSY",
        "MASTERDOWN",
        "CLUSTERDOWN",
        "READONLY",
        "NOREPLICAS",
        "OOM",
    ];
    let word = error.split(' ').next().unwrap_or_default();
    NOT_NOW.contains(&word)
}

/// True for an error reply that says where a Redis Cluster slot is rather than what went
/// wrong (`MOVED`, `ASK`, `TRYAGAIN`): the command did not run. [`Connection::pipeline`]
/// follows these for a while; one still there after that means a migration outlasted it.
pub fn is_redirect(error: &str) -> bool {
    Redirect::of(error).is_some()
}

fn redirect_target(error: &str, kind: &str) -> Option<(String, u16)> {
    let mut words = error.split(' ');
    if words.next() != Some(kind) {
        return None;
    }
    let (host, port) = words.nth(1)?.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

/// The largest command buffer kept between sends (a big pipeline's is freed after it).
const KEEP_OUT_BUFFER: usize = 1 << 20;

/// One connection to Redis; use [`Pool`] unless the thread owns its connection.
/// After a connection error it refuses further commands (`NotConnected`); open a new one.
#[derive(Debug)]
pub struct Connection {
    stream: BufReader<Transport>,
    /// Commands encoded for the next write.
    out: Vec<u8>,
    /// Set by a connection error: the stream may be mid-reply, so its next reply is not ours.
    broken: bool,
    /// What it was opened with, to follow a Redis Cluster `MOVED` redirect.
    config: RedisConfig,
    timeout: Duration,
    /// The read timeout asked for with [`Connection::set_read_timeout`].
    read_timeout: Option<Duration>,
    /// With Sentinel: the [`Sentinels`] epoch of the master this connection reached.
    epoch: u64,
    /// When its last exchange ended (or it opened).
    used: Instant,
}

/// A connection idle this long is checked before its next command: Redis (its `timeout`), a
/// proxy's idle limit or a restart may have closed it meanwhile.
pub const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The most `MOVED` redirects one command follows (a slot moves once; more means the cluster
/// is still being resharded, and the caller's retry comes later).
const MAX_REDIRECTS: usize = 3;
/// How long commands follow `ASK` and `TRYAGAIN` while a slot is being migrated (moving a
/// slot's keys takes milliseconds per batch); then the caller gets the error to retry.
pub const MIGRATION_WAIT: Duration = Duration::from_secs(2);
/// The wait before sending a command again after `TRYAGAIN`.
const TRY_AGAIN_WAIT: Duration = Duration::from_millis(50);

impl Connection {
    /// Use to connect: resolves the host and tries each address with `timeout`, then sets
    /// TCP_NODELAY, read and write timeouts of `timeout`, completes the TLS handshake for
    /// `rediss://`, and sends `AUTH` and `SELECT` if configured. With a Redis Cluster it goes
    /// where the last `MOVED` pointed, and follows `MOVED` replies itself.
    pub fn open(config: &RedisConfig, timeout: Duration) -> Result<Self, RedisError> {
        if let Some(sentinels) = &config.sentinels {
            let ((host, port), epoch) = sentinels.locate(config, timeout)?;
            let mut connection = Self::open_at(config, &host, port, timeout)?;
            connection.epoch = epoch;
            // An ACL user without ROLE (an admin command) trusts the sentinels' answer.
            let role = match connection.query(&[b"ROLE"]) {
                Err(RedisError::Server(_)) => Value::Array(vec![Value::Status("master".into())]),
                other => other?,
            };
            let role = role.into_array().unwrap_or_default();
            if role.first().and_then(Value::as_str) != Some("master") {
                // The sentinels have not caught up with a failover yet; the caller retries.
                let message = format!(
                    "Sentinel named {host}:{port} as the master `{}`, but it is not one (yet)",
                    sentinels.master
                );
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, message).into());
            }
            return Ok(connection);
        }
        let moved = lock(&config.moved_to).clone();
        match moved {
            None => Self::open_at(config, &config.host, config.port, timeout),
            Some((host, port)) => Self::open_at(config, &host, port, timeout).or_else(|error| {
                // The node the keys moved to is gone (a failover): ask the configured node
                // again, which redirects to the new owner.
                if !error.is_connection_error() {
                    return Err(error);
                }
                *lock(&config.moved_to) = None;
                Self::open_at(config, &config.host, config.port, timeout)
            }),
        }
    }

    fn open_at(
        config: &RedisConfig,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Self, RedisError> {
        let addrs = (host, port).to_socket_addrs().map_err(|error| {
            io::Error::new(error.kind(), format!("resolving `{host}`: {error}"))
        })?;
        let mut last_error =
            io::Error::new(io::ErrorKind::NotFound, format!("`{host}` has no address"));
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(error) => last_error = error,
            }
        }
        let stream = stream.ok_or(last_error)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let transport = match (&config.tls, config.tls_pending) {
            (Some(settings), _) => Transport::tls(stream, host, settings.clone())?,
            (None, true) => {
                let settings = crate::tls::client_config(&ClientFiles::default())
                    .map_err(|e| io::Error::other(e.to_string()))?;
                Transport::tls(stream, host, Arc::new(settings))?
            }
            (None, false) => Transport::Plain(stream),
        };
        let mut connection = Self {
            stream: BufReader::new(transport),
            out: Vec::new(),
            broken: false,
            config: config.clone(),
            timeout,
            read_timeout: Some(timeout),
            epoch: 0,
            used: Instant::now(),
        };
        if let Some(password) = &config.password {
            match &config.username {
                Some(user) => connection.query(&[b"AUTH", user.as_bytes(), password.as_bytes()])?,
                None => connection.query(&[b"AUTH", password.as_bytes()])?,
            };
        }
        if config.db != 0 {
            connection.query(&[b"SELECT", config.db.to_string().as_bytes()])?;
        }
        Ok(connection)
    }

    /// Use before a blocking read (`XREAD BLOCK`) to wait longer than the open timeout;
    /// `None` waits forever.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout = timeout;
        self.stream.get_ref().tcp().set_read_timeout(timeout)
    }

    /// Use to send one command, e.g. `[b"XADD", b"key", b"*", b"f", b"v"]`. An error reply is
    /// `Err(RedisError::Server)` and leaves the connection usable. Redis Cluster redirects
    /// are followed as in [`Connection::pipeline`].
    pub fn query(&mut self, args: &[&[u8]]) -> Result<Value, RedisError> {
        let mut replies = self.pipeline(&[args])?;
        replies
            .pop()
            .unwrap_or_else(|| Err("no reply".into()))
            .map_err(RedisError::Server)
    }

    /// Use to send many commands in one write and read all replies in order (pipelining).
    /// The outer `Err` is a connection failure; a command's error reply is its inner `Err`.
    ///
    /// With a Redis Cluster, commands that did not run because of where their slot is are
    /// sent again, in their order: after `MOVED` (the slot moved) to where it points, which
    /// every later connection then goes to first; after `ASK` (the slot is being migrated)
    /// to the node it names, after `ASKING`; after `TRYAGAIN` (their keys are split between
    /// the two nodes of a migration) to the same node, a moment later. `ASK` and `TRYAGAIN`
    /// are followed for [`MIGRATION_WAIT`] at most; then their error replies are returned.
    pub fn pipeline<C: AsRef<[A]>, A: AsRef<[u8]>>(
        &mut self,
        commands: &[C],
    ) -> Result<Vec<Reply>, RedisError> {
        let mut results = self.send_all(commands)?;
        let mut moves = 0;
        let give_up = Instant::now() + MIGRATION_WAIT;
        loop {
            // The first redirected command decides what happens next; the others it applies
            // to go along with it.
            let redirect = |reply: &Reply| reply.as_ref().err().and_then(|e| Redirect::of(e));
            let Some(first) = results.iter().find_map(redirect) else {
                break;
            };
            let allowed = match first {
                Redirect::Moved(_) => moves < MAX_REDIRECTS,
                Redirect::Ask(_) | Redirect::TryAgain => Instant::now() < give_up,
            };
            if !allowed {
                break;
            }
            let group: Vec<usize> = (0..results.len())
                .filter(|&i| redirect(&results[i]).as_ref() == Some(&first))
                .collect();
            let again: Vec<&C> = group.iter().map(|&i| &commands[i]).collect();
            let replies = match first {
                Redirect::Moved(target) => {
                    moves += 1;
                    self.follow(target)?;
                    self.send_all(&again)?
                }
                Redirect::Ask(target) => self.ask_at(target, &again)?,
                Redirect::TryAgain => {
                    std::thread::sleep(TRY_AGAIN_WAIT);
                    self.send_all(&again)?
                }
            };
            for (i, reply) in group.into_iter().zip(replies) {
                results[i] = reply;
            }
        }
        Ok(results)
    }

    /// Sends `commands` in one write and reads their replies.
    fn send_all<C: AsRef<[A]>, A: AsRef<[u8]>>(
        &mut self,
        commands: &[C],
    ) -> Result<Vec<Reply>, RedisError> {
        let results = self.exchange(|connection| {
            connection.send(commands)?;
            commands
                .iter()
                .map(|_| connection.read())
                .collect::<Result<Vec<_>, _>>()
        })?;
        self.demoted(&results.iter().collect::<Vec<_>>())?;
        Ok(results)
    }

    /// Sends `commands` to the node an `ASK` reply named, each after `ASKING`, on a
    /// connection of their own (this one stays where it is: the rest of the slot has not
    /// moved); returns their replies.
    fn ask_at<C: AsRef<[A]>, A: AsRef<[u8]>>(
        &self,
        (host, port): (String, u16),
        commands: &[C],
    ) -> Result<Vec<Reply>, RedisError> {
        let host = self.redirect_host(host)?;
        tracing::debug!(%host, port, "Redis Cluster is migrating Herald's slot; asking the node it goes to");
        let mut there = Self::open_at(&self.config, &host, port, self.timeout)?;
        there.set_read_timeout(self.read_timeout)?;
        let mut asked: Vec<Vec<&[u8]>> = Vec::with_capacity(commands.len() * 2);
        for command in commands {
            asked.push(vec![b"ASKING"]);
            asked.push(command.as_ref().iter().map(AsRef::as_ref).collect());
        }
        let replies = there.send_all(&asked)?;
        Ok(replies.into_iter().skip(1).step_by(2).collect())
    }

    /// Reconnects to where a `MOVED` reply pointed, and makes every later connection from
    /// the same configuration go there first.
    fn follow(&mut self, (host, port): (String, u16)) -> Result<(), RedisError> {
        let host = self.redirect_host(host)?;
        tracing::info!(%host, port, "Redis Cluster moved Herald's keys; following");
        *lock(&self.config.moved_to) = Some((host, port));
        self.reopen()
    }

    /// Replaces this connection with a new one from the same configuration (and read
    /// timeout).
    fn reopen(&mut self) -> Result<(), RedisError> {
        let read_timeout = self.read_timeout;
        *self = Connection::open(&self.config, self.timeout)?;
        self.set_read_timeout(read_timeout)?;
        Ok(())
    }

    /// True when the server closed this connection while it sat idle for [`IDLE_CHECK`] or
    /// more: its end of the socket is closed, or has bytes nobody asked for (a TLS
    /// `close_notify`). A command sent on it would fail, and one that changes data could not
    /// be retried safely (did it run?); a new connection can be used at once.
    fn closed_while_idle(&self) -> bool {
        if self.used.elapsed() < IDLE_CHECK {
            return false;
        }
        let tcp = self.stream.get_ref().tcp();
        if tcp.set_nonblocking(true).is_err() {
            return true;
        }
        let peeked = tcp.peek(&mut [0u8; 1]);
        let restored = tcp.set_nonblocking(false).is_ok();
        !restored || !matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// The host of a redirect: an empty one means "the node you asked" (only the port
    /// differs).
    fn redirect_host(&self, host: String) -> Result<String, RedisError> {
        match host.is_empty() {
            true => Ok(self.stream.get_ref().tcp().peer_addr()?.ip().to_string()),
            false => Ok(host),
        }
    }

    /// Runs one request/reply exchange and remembers whether it broke the connection.
    fn exchange<T>(
        &mut self,
        run: impl FnOnce(&mut Self) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        if self.broken {
            let message = "an earlier error broke this Redis connection";
            return Err(io::Error::new(io::ErrorKind::NotConnected, message).into());
        }
        if self.is_stale() {
            self.broken = true;
            let message = "Sentinel named a new master since this connection opened";
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, message).into());
        }
        if self.closed_while_idle() {
            tracing::debug!("Redis closed an idle connection; opening another");
            self.reopen()?;
        }
        let result = run(self);
        self.broken = matches!(&result, Err(error) if error.is_connection_error());
        self.used = Instant::now();
        result
    }

    /// True when Sentinel has named another master since this connection was opened.
    fn is_stale(&self) -> bool {
        self.config
            .sentinels
            .as_ref()
            .is_some_and(|sentinels| sentinels.epoch() != self.epoch)
    }

    /// With Sentinel, a `READONLY` reply means this node was demoted in a failover: the
    /// connection is broken (the next one asks the sentinels) and the command fails as a
    /// connection error, which callers retry.
    fn demoted(&mut self, replies: &[&Reply]) -> Result<(), RedisError> {
        let readonly = |reply: &&Reply| {
            reply
                .as_ref()
                .is_err_and(|error| error.starts_with("READONLY"))
        };
        if self.config.sentinels.is_none() || !replies.iter().any(readonly) {
            return Ok(());
        }
        self.broken = true;
        let message = "the Redis node is a replica now (a failover); asking Sentinel again";
        Err(io::Error::new(io::ErrorKind::ConnectionAborted, message).into())
    }

    fn send<C: AsRef<[A]>, A: AsRef<[u8]>>(&mut self, commands: &[C]) -> Result<(), RedisError> {
        // Redis sends no reply to an empty command, so we would wait for one forever.
        if commands.iter().any(|command| command.as_ref().is_empty()) {
            return Err(protocol("an empty command"));
        }
        self.out.clear();
        for command in commands {
            write_command(&mut self.out, command.as_ref())?;
        }
        let transport = self.stream.get_mut();
        transport.write_all(&self.out)?;
        transport.flush()?;
        if self.out.capacity() > KEEP_OUT_BUFFER {
            self.out = Vec::new();
        }
        Ok(())
    }

    fn read(&mut self) -> Result<Reply, RedisError> {
        read_reply(&mut self.stream, 0).map_err(|error| match error {
            // A read timeout surfaces as EAGAIN on Unix, whose text does not say "timeout".
            RedisError::Io(e) if e.kind() == io::ErrorKind::WouldBlock => io::Error::new(
                io::ErrorKind::TimedOut,
                "Redis did not answer within the read timeout",
            )
            .into(),
            other => other,
        })
    }
}

/// A few reusable connections; use from threads that issue short commands (history reads,
/// XINFO, trims). It is `Send + Sync`; share it in an `Arc`.
#[derive(Debug)]
pub struct Pool {
    config: RedisConfig,
    timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    /// Use once per process; connections open lazily with `timeout`, at most `max_idle` are kept.
    pub fn new(config: RedisConfig, timeout: Duration, max_idle: usize) -> Self {
        Self {
            config,
            timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Use to run `f` on an idle connection (or a new one). The connection goes back to the
    /// pool unless `f` returned or swallowed a connection error, so a broken socket is never
    /// reused.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        let idle = {
            let mut idle = lock(&self.idle);
            if idle.last().is_some_and(Connection::is_stale) {
                idle.clear();
            }
            idle.pop()
        };
        let mut connection = match idle {
            Some(connection) => connection,
            None => Connection::open(&self.config, self.timeout)?,
        };
        let result = f(&mut connection);
        let reusable = !connection.broken
            && !matches!(&result, Err(error) if error.is_connection_error())
            // `f` may have changed the read timeout; the next user expects the default.
            && connection.set_read_timeout(Some(self.timeout)).is_ok();
        let mut idle = lock(&self.idle);
        if !reusable {
            // One broken connection often means Redis restarted, so the idle ones are dead too.
            idle.clear();
        } else if idle.len() < self.max_idle {
            idle.push(connection);
        }
        result
    }

    /// With Sentinel: asks the sentinels where the master is now, so that if it moved, every
    /// connection to the old one is given up at its next use (a no-op without Sentinel).
    /// Call it periodically from a thread that may wait for the sentinels.
    pub fn recheck_master(&self) -> Result<(), RedisError> {
        match &self.config.sentinels {
            Some(sentinels) => sentinels.locate(&self.config, self.timeout).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Use to log where the pool connects (Display hides the password).
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn parse(mut bytes: &[u8]) -> Result<Reply, RedisError> {
        read_reply(&mut bytes, 0)
    }

    #[test]
    fn replies_that_mean_not_now_are_told_from_those_that_mean_never() {
        for reply in [
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "READONLY You can't write against a read only replica.",
            "OOM command not allowed when used memory > 'maxmemory'.",
        ] {
            assert!(is_transient(reply), "{reply}");
        }
        for reply in [
            "ERR wrong number of arguments",
            "WRONGTYPE Operation",
            "BUSYKEY x",
        ] {
            assert!(!is_transient(reply), "{reply}");
        }
    }

    fn data(bytes: &[u8]) -> Value {
        Value::Data(bytes.to_vec())
    }

    fn status(text: &str) -> Value {
        Value::Status(text.to_owned())
    }

    fn is_protocol_error(bytes: &[u8]) -> bool {
        matches!(parse(bytes), Err(RedisError::Protocol(_)))
    }

    #[test]
    fn every_reply_type_parses() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Ok(status("OK")));
        assert_eq!(
            parse(b"-ERR bad thing\r\n").unwrap(),
            Err("ERR bad thing".into())
        );
        assert_eq!(parse(b":-42\r\n").unwrap(), Ok(Value::Int(-42)));
        assert_eq!(parse(b"$5\r\na\r\n\0b\r\n").unwrap(), Ok(data(b"a\r\n\0b")));
        assert_eq!(parse(b"$0\r\n\r\n").unwrap(), Ok(data(b"")));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Ok(Value::Nil));
        assert_eq!(parse(b"*-1\r\n").unwrap(), Ok(Value::Nil));
        assert_eq!(parse(b"*0\r\n").unwrap(), Ok(Value::Array(vec![])));
        let nested = parse(b"*3\r\n:1\r\n*2\r\n$1\r\nf\r\n*1\r\n$-1\r\n+x\r\n").unwrap();
        let inner = Value::Array(vec![data(b"f"), Value::Array(vec![Value::Nil])]);
        assert_eq!(
            nested,
            Ok(Value::Array(vec![Value::Int(1), inner, status("x")]))
        );
    }

    #[test]
    fn an_error_inside_an_array_fails_the_reply_after_reading_all_of_it() {
        let mut bytes: &[u8] = b"*3\r\n-ERR one\r\n:1\r\n-ERR two\r\n+NEXT\r\n";
        assert_eq!(read_reply(&mut bytes, 0).unwrap(), Err("ERR one".into()));
        assert_eq!(bytes, b"+NEXT\r\n");
    }

    #[test]
    fn malformed_lines_and_lengths_are_protocol_errors() {
        let bad = [
            "+OK\n", "\r\n", "%1\r\n", ":\r\n", ":12a\r\n", ":+1\r\n", ":-\r\n", "$-2\r\n",
        ];
        let more = [
            "*-5\r\n",
            "$x\r\n",
            "$3\r\nabcXY",
            "$3\r\nabc\nX",
            ":99999999999999999999\r\n",
        ];
        for bad in bad.into_iter().chain(more) {
            assert!(is_protocol_error(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn replies_over_the_limits_are_refused_before_reading_them() {
        let too_deep = format!("{}:1\r\n", "*1\r\n".repeat(MAX_DEPTH + 1));
        let too_long = format!("+{}\r\n", "a".repeat(MAX_LINE));
        for bad in [
            format!("${}\r\n", MAX_BULK + 1),
            format!("*{}\r\n", MAX_ARRAY + 1),
            too_long,
            too_deep,
        ] {
            assert!(
                is_protocol_error(bad.as_bytes()),
                "{}",
                &bad[..20.min(bad.len())]
            );
        }
        assert!(parse(format!("{}:1\r\n", "*1\r\n".repeat(MAX_DEPTH)).as_bytes()).is_ok());
    }

    #[test]
    fn truncated_replies_are_connection_errors_not_panics() {
        let whole = b"*2\r\n$5\r\nhello\r\n*2\r\n:7\r\n+OK\r\n";
        assert!(parse(whole).is_ok());
        for end in 0..whole.len() {
            let error = parse(&whole[..end]).expect_err("a prefix is incomplete");
            assert!(error.is_connection_error(), "{end}: {error}");
        }
        let promised_but_missing = format!("${MAX_BULK}\r\nabc");
        assert!(matches!(
            parse(promised_but_missing.as_bytes()),
            Err(RedisError::Io(_))
        ));
    }

    #[test]
    fn value_accessors_convert_what_redis_sends() {
        assert_eq!(data(b"ab").as_bytes(), Some(&b"ab"[..]));
        assert_eq!(status("OK").as_str(), Some("OK"));
        assert_eq!(data(b"\xff").as_str(), None);
        assert_eq!(data(b"-12").as_int(), Some(-12));
        assert_eq!(Value::Int(3).as_int(), Some(3));
        assert_eq!(data(b"x").as_int(), None);
        assert_eq!(Value::Nil.into_array(), Some(vec![]));
        assert_eq!(Value::Int(1).into_array(), None);
    }

    #[test]
    fn commands_encode_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        write_command(&mut out, &[&b"SET"[..], b"k", b"a\r\nb", b""]).unwrap();
        assert_eq!(
            out,
            b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n$0\r\n\r\n"
        );
    }

    /// xorshift64: a deterministic stand-in for proptest, which this crate does not depend on.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn any_encoded_command_parses_back_and_mutations_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let arg = |state: &mut u64| {
                (0..next(state) % 12)
                    .map(|_| next(state) as u8 % 16)
                    .collect()
            };
            let args: Vec<Vec<u8>> = (0..next(&mut state) % 5).map(|_| arg(&mut state)).collect();
            let mut encoded = Vec::new();
            write_command(&mut encoded, &args).unwrap();
            let expected = Value::Array(args.iter().map(|arg| data(arg)).collect());
            assert_eq!(parse(&encoded).unwrap(), Ok(expected));
            let at = next(&mut state) as usize % encoded.len();
            encoded[at] = b"\r\n*$:+-1x\0"[next(&mut state) as usize % 10];
            let _ = parse(&encoded);
        }
    }

    fn url(text: &str) -> Result<RedisConfig, UrlError> {
        text.parse()
    }

    #[test]
    fn urls_parse_with_defaults_and_credentials() {
        let plain = url("redis://localhost").unwrap();
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.db),
            ("localhost", 6379, 0)
        );
        assert_eq!((plain.username, plain.password), (None, None));
        let full = url("redis://alice:s%40cr@t@example.com:6380/2").unwrap();
        assert_eq!(
            (full.host.as_str(), full.port, full.db),
            ("example.com", 6380, 2)
        );
        assert_eq!(full.username.as_deref(), Some("alice"));
        assert_eq!(full.password.as_deref(), Some("s@cr@t"));
        let password_only = url("redis://:secret@h/").unwrap();
        assert_eq!(
            (password_only.username, password_only.password.as_deref()),
            (None, Some("secret"))
        );
        assert_eq!(url("redis://[::1]:7000").unwrap().host, "::1");
    }

    #[test]
    fn bad_urls_are_rejected_without_echoing_the_password() {
        let bad = "http://h h:6379 redis:// redis://:6379 redis://h: redis://h:0 redis://h:70000 \
                   redis://h:x redis://h/x redis://h/1/2 redis://h?db=1 redis://u@h redis://:%zz@h \
                   redis://[::1 redis://[::1]x";
        for bad in bad.split_whitespace() {
            assert!(url(bad).is_err(), "{bad}");
        }
        let error = url("redis://:topsecret@h:bad").unwrap_err().to_string();
        assert!(!error.contains("topsecret"), "{error}");
    }

    #[test]
    fn rediss_means_tls_and_says_so_in_logs() {
        let config = url("rediss://:pw@redis.example:6380/1").unwrap();
        assert!(config.uses_tls());
        assert_eq!(config.to_string(), "rediss://redis.example:6380/1");
        assert!(!url("redis://h").unwrap().uses_tls());
        assert!(
            url("redis://h")
                .unwrap()
                .to_string()
                .starts_with("redis://")
        );
    }

    #[test]
    fn sentinel_urls_name_the_sentinels_and_the_master() {
        let config = url("redis+sentinel://:pw@s1,[::1]:26380,s3:5000/my%20master/2").unwrap();
        let sentinels = config.sentinels.as_deref().unwrap();
        assert_eq!(sentinels.master, "my master");
        let nodes: Vec<(&str, u16)> = sentinels.nodes.iter().map(|(h, p)| (&h[..], *p)).collect();
        assert_eq!(nodes, [("s1", 26379), ("::1", 26380), ("s3", 5000)]);
        assert_eq!((config.password.as_deref(), config.db), (Some("pw"), 2));
        assert!(!config.uses_tls());
        assert_eq!(
            config.to_string(),
            "redis+sentinel://s1:26379,[::1]:26380,s3:5000/my master/2"
        );
        let tls = url("rediss+sentinel://s1/m").unwrap();
        assert!(tls.uses_tls());
        assert_eq!(tls.to_string(), "rediss+sentinel://s1:26379/m/0");
        assert!(url("redis://h").unwrap().sentinels.is_none());
        for bad in [
            "redis+sentinel://s1",
            "redis+sentinel://s1/",
            "redis+sentinel://s1,/m",
            "redis+sentinel://s1:0/m",
            "redis+sentinel://s1/m/x",
            "redis+sentinel://s1/m/1/2",
        ] {
            assert!(url(bad).is_err(), "{bad}");
        }
        let error = url("redis+sentinel://s1:26379").unwrap_err().to_string();
        assert!(error.contains("/mymaster"), "{error}");
    }

    #[test]
    fn with_sentinel_connections_go_to_the_named_master_and_leave_a_demoted_one() {
        // The master: OK to anything, `master` to ROLE. A replica: READONLY to writes.
        let (master, _) = fake_node("*1\r\n$6\r\nmaster\r\n".to_owned());
        let points_to = |port: u16| {
            format!(
                "*2\r\n$9\r\n127.0.0.1\r\n${}\r\n{port}\r\n",
                port.to_string().len()
            )
        };
        let sentinel_for = |port: u16| fake_node(points_to(port));
        let answer = Arc::new(Mutex::new(points_to(master)));
        let (sentinel, asked) = fake_node_saying(answer.clone());
        // The first sentinel is down; the second answers.
        let config = url(&format!(
            "redis+sentinel://127.0.0.1:1,127.0.0.1:{sentinel}/m"
        ))
        .unwrap();
        let mut conn = Connection::open(&config, TIMEOUT).unwrap();
        assert_eq!(asked.load(Ordering::Relaxed), 1);
        let port = |conn: &Connection| conn.stream.get_ref().tcp().peer_addr().unwrap().port();
        assert_eq!(port(&conn), master);
        assert_eq!(
            conn.query(&[b"PING"]).unwrap(),
            Value::Array(vec![data(b"master")])
        );

        // A failover: the next connection finds the new master, and the one to the old
        // master is given up at its next use.
        let (promoted, _) = fake_node("*1\r\n$6\r\nmaster\r\n".to_owned());
        *lock(&answer) = points_to(promoted);
        let mut after = Connection::open(&config, TIMEOUT).unwrap();
        assert_eq!(port(&after), promoted);
        assert!(after.query(&[b"PING"]).is_ok());
        let error = conn.query(&[b"PING"]).unwrap_err();
        assert!(error.is_connection_error(), "{error}");
        assert!(error.to_string().contains("new master"), "{error}");

        // A node that says it is a replica is refused, as a connection error (retried).
        let (replica, _) = fake_node("*1\r\n$5\r\nslave\r\n".to_owned());
        let (stale, _) = sentinel_for(replica);
        let config = url(&format!("redis+sentinel://127.0.0.1:{stale}/m")).unwrap();
        let error = Connection::open(&config, TIMEOUT).unwrap_err();
        assert!(error.is_connection_error(), "{error}");
        assert!(error.to_string().contains("not one"), "{error}");

        // A master demoted while connected answers READONLY: the connection is given up.
        let (demoted, _) =
            fake_node("-READONLY You can't write against a read only replica.\r\n".to_owned());
        let mut conn = Connection::open_at(&config, "127.0.0.1", demoted, TIMEOUT).unwrap();
        let error = conn.query(&[b"XADD", b"k", b"*", b"f", b"v"]).unwrap_err();
        assert!(error.is_connection_error(), "{error}");
        assert!(conn.broken);
        let mut conn = Connection::open_at(&config, "127.0.0.1", demoted, TIMEOUT).unwrap();
        let commands = vec![vec![b"XADD".to_vec(), b"k".to_vec()]; 2];
        assert!(conn.pipeline(&commands).unwrap_err().is_connection_error());
        // Without Sentinel, READONLY is the command's own error reply.
        let direct = url(&format!("redis://127.0.0.1:{demoted}")).unwrap();
        let mut conn = Connection::open(&direct, TIMEOUT).unwrap();
        assert!(matches!(
            conn.query(&[b"SET", b"k", b"v"]),
            Err(RedisError::Server(_))
        ));

        // No sentinel knows the master: the error names each sentinel's answer.
        let (unknown, _) = fake_node("*-1\r\n".to_owned());
        let config = url(&format!("redis+sentinel://127.0.0.1:{unknown}/nope")).unwrap();
        let error = Connection::open(&config, TIMEOUT).unwrap_err().to_string();
        assert!(error.contains("knows no master named `nope`"), "{error}");
    }

    #[test]
    fn a_sentinel_that_wants_a_password_gets_its_own_and_says_so_when_missing() {
        let (protected, _) = fake_node("-NOAUTH Authentication required.\r\n".to_owned());
        let config = url(&format!(
            "redis+sentinel://:masterpw@127.0.0.1:{protected}/m"
        ))
        .unwrap();
        let error = Connection::open(&config, TIMEOUT).unwrap_err().to_string();
        assert!(error.contains("--redis-sentinel-password"), "{error}");

        // The sentinel's credentials, not the master's, go to the sentinel; the master's stay.
        let config = config.with_sentinel_auth(Some("watcher".into()), Some("sentinelpw".into()));
        let sentinels = config.sentinels.as_deref().unwrap();
        assert_eq!(
            (sentinels.username.as_deref(), sentinels.password.as_deref()),
            (Some("watcher"), Some("sentinelpw"))
        );
        assert_eq!(config.password.as_deref(), Some("masterpw"));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("sentinelpw") && shown.contains("watcher"),
            "{shown}"
        );
        // Given a password, the NOAUTH hint is not repeated.
        let error = Connection::open(&config, TIMEOUT).unwrap_err().to_string();
        assert!(!error.contains("--redis-sentinel-password"), "{error}");
        // Without Sentinel it changes nothing.
        let direct = url("redis://h")
            .unwrap()
            .with_sentinel_auth(None, Some("x".into()));
        assert!(direct.sentinels.is_none());
    }

    #[test]
    fn display_and_debug_hide_the_password() {
        let config = url("redis://alice:secret@h:6380/2").unwrap();
        assert_eq!(config.to_string(), "redis://alice@h:6380/2");
        assert!(!format!("{config:?}").contains("secret"));
        assert_eq!(
            url("redis://:secret@[::1]").unwrap().to_string(),
            "redis://[::1]:6379/0"
        );
    }

    #[test]
    fn pool_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Pool>();
    }

    #[test]
    fn opening_a_closed_port_is_an_io_error() {
        let config = url("redis://127.0.0.1:1").unwrap();
        let result = Connection::open(&config, Duration::from_secs(2));
        assert!(matches!(result, Err(RedisError::Io(_))), "{result:?}");
    }

    /// A fake node on a free port: every command read on any connection is answered with
    /// `answer`; counts the connections it accepted.
    fn fake_node(answer: String) -> (u16, Arc<AtomicU32>) {
        fake_node_saying(Arc::new(Mutex::new(answer)))
    }

    /// A [`fake_node`] whose answer the test may change.
    fn fake_node_saying(answer: Arc<Mutex<String>>) -> (u16, Arc<AtomicU32>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU32::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::Relaxed);
                let answer = answer.clone();
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    // A command is a RESP array, which the reply parser reads as well.
                    while let Ok(Ok(_)) = read_reply(&mut reader, 0) {
                        let answer = lock(&answer).clone();
                        if writer.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    #[test]
    fn a_cluster_redirect_is_followed_for_commands_and_pipelines_and_remembered() {
        let (owner, _) = fake_node("+OK\r\n".to_owned());
        let (other, other_accepted) = fake_node(format!("-MOVED 3999 127.0.0.1:{owner}\r\n"));
        let config = url(&format!("redis://127.0.0.1:{other}")).unwrap();
        let mut conn = Connection::open(&config, TIMEOUT).unwrap();
        assert_eq!(conn.query(&[b"GET", b"k"]).unwrap(), status("OK"));
        // Later connections from the same configuration go to the owner directly.
        let mut again = Connection::open(&config.clone(), TIMEOUT).unwrap();
        assert_eq!(again.query(&[b"GET", b"k"]).unwrap(), status("OK"));
        assert_eq!(other_accepted.load(Ordering::Relaxed), 1);

        // The owner went away (a failover): the configured node is asked again.
        *lock(&config.moved_to) = Some(("127.0.0.1".to_owned(), 1));
        let mut after_failover = Connection::open(&config, TIMEOUT).unwrap();
        assert_eq!(after_failover.query(&[b"GET", b"k"]).unwrap(), status("OK"));
        assert_eq!(other_accepted.load(Ordering::Relaxed), 2);

        // A pipeline whose commands were all redirected is sent again, in order, to the owner.
        let fresh = url(&format!("redis://127.0.0.1:{other}")).unwrap();
        let mut conn = Connection::open(&fresh, TIMEOUT).unwrap();
        let commands = vec![vec![b"GET".to_vec(), b"a".to_vec()]; 3];
        let replies = conn.pipeline(&commands).unwrap();
        assert_eq!(replies, vec![Ok(status("OK")); 3]);

        // A node that keeps redirecting is given up on after a few hops.
        let (looping, _) = fake_node("-MOVED 1 127.0.0.1:1\r\n".to_owned());
        let (start, _) = fake_node(format!("-MOVED 1 127.0.0.1:{looping}\r\n"));
        let mut conn = Connection::open(
            &url(&format!("redis://127.0.0.1:{start}")).unwrap(),
            TIMEOUT,
        )
        .unwrap();
        assert!(conn.query(&[b"GET", b"k"]).is_err());
    }

    /// A fake node that answers each command with what `answer` says for it, and records the
    /// commands it got (their words), in order.
    #[allow(clippy::type_complexity)]
    fn fake_node_answering(
        answer: impl Fn(&[String]) -> String + Send + Sync + 'static,
    ) -> (u16, Arc<Mutex<Vec<Vec<String>>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let (record, answer) = (got.clone(), Arc::new(answer));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (record, answer) = (record.clone(), answer.clone());
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    while let Ok(Ok(command)) = read_reply(&mut reader, 0) {
                        let words: Vec<String> = command
                            .into_array()
                            .unwrap_or_default()
                            .iter()
                            .map(|w| {
                                String::from_utf8_lossy(w.as_bytes().unwrap_or_default())
                                    .into_owned()
                            })
                            .collect();
                        let reply = answer(&words);
                        lock(&record).push(words);
                        if writer.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, got)
    }

    #[test]
    fn a_slot_being_migrated_is_asked_at_its_new_node_one_command_at_a_time() {
        // The new node runs what comes after ASKING, and only then.
        let (new_node, asked) = fake_node_answering(|words| match words[0].as_str() {
            "ASKING" | "GET" | "SET" => "+OK\r\n".to_owned(),
            _ => "-ERR unexpected\r\n".to_owned(),
        });
        // The old node still has key `here`; the others have moved.
        let (old_node, old_got) = fake_node_answering(move |words| {
            if words.get(1).map(String::as_str) == Some("here") {
                "$2\r\nhi\r\n".to_owned()
            } else {
                format!("-ASK 866 127.0.0.1:{new_node}\r\n")
            }
        });
        let config = url(&format!("redis://127.0.0.1:{old_node}")).unwrap();
        let mut conn = Connection::open(&config, TIMEOUT).unwrap();
        assert_eq!(conn.query(&[b"GET", b"gone"]).unwrap(), status("OK"));
        let words: Vec<String> = lock(&asked).iter().map(|c| c.join(" ")).collect();
        assert_eq!(words, ["ASKING", "GET gone"]);
        // Unlike MOVED, ASK does not move the connection: the next command goes to the old
        // node again.
        assert_eq!(conn.query(&[b"GET", b"here"]).unwrap(), data(b"hi"));
        assert_eq!(lock(&old_got).len(), 2);
        assert!(lock(&config.moved_to).is_none());

        // In a pipeline, only the redirected commands are asked there, in their order.
        lock(&asked).clear();
        let commands: Vec<Vec<Vec<u8>>> = [&b"a"[..], b"here", b"b"]
            .iter()
            .map(|k| vec![b"SET".to_vec(), k.to_vec()])
            .collect();
        let replies = conn.pipeline(&commands).unwrap();
        assert_eq!(
            replies,
            [Ok(status("OK")), Ok(data(b"hi")), Ok(status("OK"))]
        );
        let words: Vec<String> = lock(&asked).iter().map(|c| c.join(" ")).collect();
        assert_eq!(words, ["ASKING", "SET a", "ASKING", "SET b"]);
    }

    #[test]
    fn a_command_whose_keys_are_split_by_a_migration_is_sent_again() {
        let tries = Arc::new(AtomicU32::new(0));
        let seen = tries.clone();
        let (node, _) = fake_node_answering(move |_| match seen.fetch_add(1, Ordering::Relaxed) {
            0 | 1 => "-TRYAGAIN Multiple keys request during rehashing of slot\r\n".to_owned(),
            _ => "+OK\r\n".to_owned(),
        });
        let config = url(&format!("redis://127.0.0.1:{node}")).unwrap();
        let mut conn = Connection::open(&config, TIMEOUT).unwrap();
        assert_eq!(
            conn.query(&[b"MSET", b"a", b"1", b"b", b"2"]).unwrap(),
            status("OK")
        );
        assert_eq!(tries.load(Ordering::Relaxed), 3);
        // One that never stops saying so fails with Redis's words, after a few tries.
        let (stuck, _) =
            fake_node_answering(|_| "-TRYAGAIN Multiple keys request during rehashing\r\n".into());
        let config = url(&format!("redis://127.0.0.1:{stuck}")).unwrap();
        let mut conn = Connection::open(&config, TIMEOUT).unwrap();
        let error = conn.query(&[b"MSET", b"a", b"1"]).unwrap_err().to_string();
        assert!(error.contains("TRYAGAIN"), "{error}");
    }

    #[test]
    fn moved_replies_are_read_and_other_errors_are_not() {
        assert_eq!(
            moved_target("MOVED 3999 10.0.0.7:6381"),
            Some(("10.0.0.7".to_owned(), 6381))
        );
        assert_eq!(
            moved_target("MOVED 1 ::1:7000"),
            Some(("::1".to_owned(), 7000))
        );
        assert_eq!(moved_target("MOVED 1 :7000"), Some((String::new(), 7000)));
        assert_eq!(moved_target("ASK 1 h:7000"), None);
        let at = |host: &str, port| (host.to_owned(), port);
        assert_eq!(
            Redirect::of("ASK 1 h:7000"),
            Some(Redirect::Ask(at("h", 7000)))
        );
        assert_eq!(
            Redirect::of("MOVED 1 h:7000"),
            Some(Redirect::Moved(at("h", 7000)))
        );
        assert_eq!(
            Redirect::of("TRYAGAIN Multiple keys request during rehashing of slot"),
            Some(Redirect::TryAgain)
        );
        assert_eq!(Redirect::of("ERR TRYAGAIN"), None);
        assert_eq!(moved_target("ERR wrong number of arguments"), None);
        assert_eq!(moved_target("MOVED 1 h:port"), None);
    }

    // Integration tests: they need a Redis at HERALD_TEST_REDIS and skip without it.

    pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

    /// The Redis in HERALD_TEST_REDIS, or `None` after saying `test` was skipped.
    pub(crate) fn redis_or_skip(test: &str) -> Option<RedisConfig> {
        match std::env::var("HERALD_TEST_REDIS") {
            Ok(text) if !text.is_empty() => {
                Some(text.parse().expect("HERALD_TEST_REDIS is a redis:// URL"))
            }
            _ => {
                eprintln!("SKIPPED: {test}: HERALD_TEST_REDIS is not set");
                None
            }
        }
    }

    /// A key no other test (or test process) uses.
    pub(crate) fn unique_key(name: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("herald-test:{}:{n}:{name}", std::process::id())
    }

    /// Deletes the test's keys even when an assertion fails.
    pub(crate) struct Cleanup<'a>(pub(crate) &'a RedisConfig, pub(crate) &'a str);

    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            if let Ok(mut connection) = Connection::open(self.0, TIMEOUT) {
                let _ = connection.query(&[b"DEL", self.1.as_bytes()]);
            }
        }
    }

    #[test]
    fn binary_values_with_crlf_and_nul_round_trip() {
        let Some(config) = redis_or_skip("binary_values_with_crlf_and_nul_round_trip") else {
            return;
        };
        let key = unique_key("binary");
        let _cleanup = Cleanup(&config, &key);
        let mut connection = Connection::open(&config, TIMEOUT).unwrap();
        let value: Vec<u8> = b"\r\n$-1\r\n\0".iter().copied().chain(0..=255).collect();
        let k = key.as_bytes();
        assert_eq!(connection.query(&[b"GET", k]).unwrap(), Value::Nil);
        assert_eq!(
            connection.query(&[b"SET", k, &value]).unwrap(),
            status("OK")
        );
        assert_eq!(connection.query(&[b"GET", k]).unwrap(), Value::Data(value));
    }

    #[test]
    fn an_error_reply_is_a_server_error_and_the_connection_stays_usable() {
        let test = "an_error_reply_is_a_server_error_and_the_connection_stays_usable";
        let Some(config) = redis_or_skip(test) else {
            return;
        };
        let mut connection = Connection::open(&config, TIMEOUT).unwrap();
        let error = connection
            .query(&[b"INCRBY", b"k", b"not-a-number"])
            .unwrap_err();
        assert!(
            matches!(&error, RedisError::Server(m) if m.starts_with("ERR ")),
            "{error}"
        );
        assert!(!error.is_connection_error());
        assert_eq!(connection.query(&[b"PING"]).unwrap(), status("PONG"));
    }

    #[test]
    fn a_pipeline_returns_each_commands_result_in_order() {
        let Some(config) = redis_or_skip("a_pipeline_returns_each_commands_result_in_order") else {
            return;
        };
        let key = unique_key("pipeline");
        let _cleanup = Cleanup(&config, &key);
        let mut connection = Connection::open(&config, TIMEOUT).unwrap();
        let k = key.as_bytes();
        let commands: [&[&[u8]]; 5] = [
            &[b"SET", k, b"1"],
            &[b"INCR", k],
            &[b"HGET", k, b"f"],
            &[b"NOSUCH"],
            &[b"GET", k],
        ];
        let commands: Vec<Vec<Vec<u8>>> = commands
            .iter()
            .map(|c| c.iter().map(|a| a.to_vec()).collect())
            .collect();
        let replies = connection.pipeline(&commands).unwrap();
        assert_eq!(replies.len(), 5);
        assert_eq!(replies[..2], [Ok(status("OK")), Ok(Value::Int(2))]);
        assert!(
            matches!(&replies[2], Err(m) if m.starts_with("WRONGTYPE")),
            "{:?}",
            replies[2]
        );
        assert!(
            matches!(&replies[3], Err(m) if m.starts_with("ERR unknown command")),
            "{:?}",
            replies[3]
        );
        assert_eq!(replies[4], Ok(data(b"2")));
    }

    #[test]
    fn xrange_returns_entries_as_nested_arrays() {
        let Some(config) = redis_or_skip("xrange_returns_entries_as_nested_arrays") else {
            return;
        };
        let key = unique_key("stream");
        let _cleanup = Cleanup(&config, &key);
        let mut connection = Connection::open(&config, TIMEOUT).unwrap();
        let k = key.as_bytes();
        let first = connection
            .query(&[b"XADD", k, b"*", b"data", b"one"])
            .unwrap();
        let second = connection
            .query(&[b"XADD", k, b"*", b"data", b"t\r\nwo"])
            .unwrap();
        let entry = |id, value: &[u8]| {
            Value::Array(vec![id, Value::Array(vec![data(b"data"), data(value)])])
        };
        let range = connection.query(&[b"XRANGE", k, b"-", b"+"]).unwrap();
        assert_eq!(
            range,
            Value::Array(vec![entry(first, b"one"), entry(second, b"t\r\nwo")])
        );
    }

    #[test]
    fn a_pool_reuses_its_connection_until_a_connection_error() {
        let Some(config) = redis_or_skip("a_pool_reuses_its_connection_until_a_connection_error")
        else {
            return;
        };
        let pool = Pool::new(config, TIMEOUT, 2);
        let client_id = || {
            pool.with(|c| c.query(&[b"CLIENT", b"ID"]))
                .unwrap()
                .as_int()
                .unwrap()
        };
        let first = client_id();
        assert_eq!(client_id(), first);
        let key = unique_key("never-pushed");
        let timed_out = pool.with(|connection| {
            connection.set_read_timeout(Some(Duration::from_millis(50)))?;
            connection.query(&[b"BLPOP", key.as_bytes(), b"0"])
        });
        assert!(
            matches!(&timed_out, Err(RedisError::Io(e)) if e.kind() == io::ErrorKind::TimedOut),
            "{timed_out:?}"
        );
        assert_ne!(client_id(), first);
    }

    #[test]
    fn a_connection_redis_closed_while_it_was_idle_is_replaced_before_its_next_command() {
        let Some(config) = redis_or_skip("a_connection_redis_closed_while_it_was_idle") else {
            return;
        };
        let mut conn = Connection::open(&config, TIMEOUT).unwrap();
        let id = conn.query(&[b"CLIENT", b"ID"]).unwrap().as_int().unwrap();
        // What Redis's `timeout` does to an idle client; only this test's connection goes.
        let mut other = Connection::open(&config, TIMEOUT).unwrap();
        let killed = other
            .query(&[b"CLIENT", b"KILL", b"ID", id.to_string().as_bytes()])
            .unwrap();
        assert_eq!(killed.as_int(), Some(1));
        std::thread::sleep(IDLE_CHECK + Duration::from_millis(100));
        let replaced = conn.query(&[b"CLIENT", b"ID"]).unwrap().as_int().unwrap();
        assert_ne!(replaced, id);
        // A connection in use is left alone.
        assert_eq!(
            conn.query(&[b"CLIENT", b"ID"]).unwrap().as_int(),
            Some(replaced)
        );
    }

    #[test]
    fn xread_block_returns_nil_when_the_block_time_passes() {
        let Some(config) = redis_or_skip("xread_block_returns_nil_when_the_block_time_passes")
        else {
            return;
        };
        let key = unique_key("blocking");
        let xread = |block: &'static [u8]| {
            [
                &b"XREAD"[..],
                b"BLOCK",
                block,
                b"STREAMS",
                key.as_bytes(),
                b"$",
            ]
        };
        let mut connection = Connection::open(&config, TIMEOUT).unwrap();
        connection.set_read_timeout(None).unwrap();
        let started = Instant::now();
        assert_eq!(connection.query(&xread(b"100")).unwrap(), Value::Nil);
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "{:?}",
            started.elapsed()
        );
        connection
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let error = connection.query(&xread(b"5000")).unwrap_err();
        assert!(error.is_connection_error(), "{error}");
        let error = connection.query(&[b"PING"]).unwrap_err();
        assert!(
            matches!(&error, RedisError::Io(e) if e.kind() == io::ErrorKind::NotConnected),
            "{error}"
        );
    }

    #[test]
    fn the_database_in_the_url_is_selected_on_open() {
        let Some(mut config) = redis_or_skip("the_database_in_the_url_is_selected_on_open") else {
            return;
        };
        config.db = 1;
        let mut connection = Connection::open(&config, TIMEOUT).unwrap();
        let info = connection.query(&[b"CLIENT", b"INFO"]).unwrap();
        assert!(
            info.as_str().is_some_and(|info| info.contains(" db=1 ")),
            "{info:?}"
        );
    }

    #[test]
    fn a_wrong_password_is_a_server_error_from_open() {
        let Some(mut config) = redis_or_skip("a_wrong_password_is_a_server_error_from_open") else {
            return;
        };
        // No username: Redis 7 accepts any password for a user marked `nopass`, like `default`.
        (config.username, config.password) = (None, Some("herald-wrong-password".into()));
        let result = Connection::open(&config, TIMEOUT);
        let Err(RedisError::Server(message)) = result else {
            panic!("expected a server error: {result:?}")
        };
        assert!(
            message.starts_with("ERR AUTH") || message.starts_with("WRONGPASS"),
            "{message}"
        );
    }
}
