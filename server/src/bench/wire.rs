//! The little HTTP/1.1 the subscribers speak by hand: a URL, a response head, and the body
//! framing (chunked, a length, or until close).
//!
//! Done by hand rather than with hyper's client so that a subscriber is one task with one read
//! buffer and no allocation per read: the load generator shares the machine with the server it
//! measures.

use std::fmt;

/// Where to send a request: `http[s]://host[:port]/path?query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://`: TLS to `host`.
    pub tls: bool,
    /// The host, for TLS (IPv6 hosts keep their brackets).
    pub host: String,
    /// The `Host` header value (the URL's authority).
    pub authority: String,
    /// `host:port` for the resolver (IPv6 hosts keep their brackets).
    pub connect: String,
    /// The request target: path and query, at least `/`.
    pub path: String,
}

/// A URL the load generator cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `http://` or `https://`.
    #[error("{0:?} is not an http:// or https:// URL")]
    NotHttp(String),
    /// No host between `http://` and the path.
    #[error("{0:?} has no host")]
    NoHost(String),
    /// A port that is not a number from 1 to 65535.
    #[error("{0:?} has an invalid port")]
    BadPort(String),
}

impl Endpoint {
    /// Splits an `http://` or `https://` URL into what a request needs.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (None, Some(rest)) => (true, rest),
            (None, None) => return Err(UrlError::NotHttp(url.into())),
        };
        let default_port = if tls { 443 } else { 80 };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let bad_port = || UrlError::BadPort(url.into());
        let parse_port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(bad_port)
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| UrlError::NoHost(url.into()))?;
            let port = match after {
                "" => default_port,
                p => parse_port(p.strip_prefix(':').ok_or_else(bad_port)?)?,
            };
            (format!("[{host}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, p)) => (host.to_owned(), parse_port(p)?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(UrlError::NoHost(url.into()));
        }
        Ok(Self {
            tls,
            connect: format!("{host}:{port}"),
            host,
            authority: authority.to_owned(),
            path,
        })
    }
}

/// A response head the subscriber cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The status line is not `HTTP/1.x NNN ...`.
    #[error("not an HTTP/1.x status line: {0:?}")]
    StatusLine(String),
    /// A `Content-Length` that is not a number.
    #[error("invalid Content-Length {0:?}")]
    ContentLength(String),
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// `Content-Length: N`.
    Length(u64),
    /// Neither: the body runs until the server closes the connection.
    UntilClose,
}

/// The parts of a response head a subscriber acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// How the body is framed.
    pub framing: Framing,
}

/// The length of the head (through its blank line) once `buf` holds all of it.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads a response head (the bytes up to and including its blank line).
pub fn parse_head(head: &[u8]) -> Result<ResponseHead, HeadError> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(1..))
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| HeadError::StatusLine(status_line.chars().take(80).collect()))?;
    let mut framing = Framing::UntilClose;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding decides how the body ends.
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            if last.eq_ignore_ascii_case("chunked") {
                framing = Framing::Chunked;
            }
        } else if name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let n = value
                .parse()
                .map_err(|_| HeadError::ContentLength(value.to_owned()))?;
            framing = Framing::Length(n);
        }
    }
    Ok(ResponseHead { status, framing })
}

/// A body that breaks the chunked encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A byte that has no place where it was found.
    #[error("unexpected byte {byte:#04x} {context}")]
    Unexpected {
        /// The byte.
        byte: u8,
        /// Where it was found.
        context: Context,
    },
    /// A chunk size with more hex digits than fit in 60 bits.
    #[error("chunk size too large")]
    SizeTooLarge,
}

/// Where in the chunked encoding a [`ChunkError::Unexpected`] byte was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// In a chunk-size line.
    Size,
    /// After a chunk's data, where CRLF belongs.
    AfterData,
    /// After the last chunk's trailers, where the final LF belongs.
    End,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Size => "in a chunk size",
            Self::AfterData => "after chunk data",
            Self::End => "at the end of the body",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Hex digits of a chunk size; `digits` counts them.
    Size {
        size: u64,
        digits: u8,
    },
    /// A chunk extension (ignored) up to the end of the size line.
    Extension {
        size: u64,
    },
    /// The LF after a size line's CR.
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// The start of a trailer line, or the final blank line.
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

/// The body decoder for one response: feed it what the socket gives, split anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyDecoder(Kind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Chunked(ChunkState),
    /// This many body bytes are left.
    Length(u64),
    UntilClose,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`.
    pub fn new(framing: Framing) -> Self {
        Self(match framing {
            Framing::Chunked => Kind::Chunked(ChunkState::Size { size: 0, digits: 0 }),
            Framing::Length(n) => Kind::Length(n),
            Framing::UntilClose => Kind::UntilClose,
        })
    }

    /// Passes the body bytes in `input` to `out` (in one or more slices); returns whether the
    /// body has ended. Bytes after the end are ignored.
    pub fn feed(&mut self, input: &[u8], mut out: impl FnMut(&[u8])) -> Result<bool, ChunkError> {
        match &mut self.0 {
            Kind::UntilClose => {
                out(input);
                Ok(false)
            }
            Kind::Length(left) => {
                let take = input
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                out(&input[..take]);
                *left -= take as u64;
                Ok(*left == 0)
            }
            Kind::Chunked(state) => feed_chunked(state, input, out),
        }
    }
}

fn feed_chunked(
    state: &mut ChunkState,
    mut input: &[u8],
    mut out: impl FnMut(&[u8]),
) -> Result<bool, ChunkError> {
    use ChunkState as S;
    while let Some((&byte, rest)) = input.split_first() {
        if *state == S::Done {
            return Ok(true);
        }
        if let S::Data { left } = *state {
            let take = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            out(&input[..take]);
            let left = left - take as u64;
            *state = if left == 0 {
                S::DataCr
            } else {
                S::Data { left }
            };
            input = &input[take..];
            continue;
        }
        input = rest;
        let unexpected = |context| ChunkError::Unexpected { byte, context };
        *state = match (*state, byte) {
            (S::Size { size, digits }, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                if digits >= 15 {
                    return Err(ChunkError::SizeTooLarge);
                }
                let digit = (byte as char).to_digit(16).unwrap_or_default();
                S::Size {
                    size: size * 16 + u64::from(digit),
                    digits: digits + 1,
                }
            }
            (S::Size { digits: 0, .. }, _) => return Err(unexpected(Context::Size)),
            (S::Size { size, .. }, b';' | b' ' | b'\t') => S::Extension { size },
            (S::Size { size, .. } | S::Extension { size }, b'\r') => S::SizeLf { size },
            (S::Size { size, .. } | S::Extension { size } | S::SizeLf { size }, b'\n') => {
                if size == 0 {
                    S::TrailerStart
                } else {
                    S::Data { left: size }
                }
            }
            (S::Size { .. } | S::SizeLf { .. }, _) => return Err(unexpected(Context::Size)),
            (S::Extension { size }, _) => S::Extension { size },
            (S::DataCr, b'\r') => S::DataLf,
            (S::DataCr | S::DataLf, b'\n') => S::Size { size: 0, digits: 0 },
            (S::DataCr | S::DataLf, _) => return Err(unexpected(Context::AfterData)),
            (S::TrailerStart, b'\r') => S::EndLf,
            (S::TrailerStart | S::EndLf, b'\n') => S::Done,
            (S::EndLf, _) => return Err(unexpected(Context::End)),
            (S::TrailerLine, b'\n') => S::TrailerStart,
            (S::TrailerStart | S::TrailerLine, _) => S::TrailerLine,
            // Both handled before the match.
            (S::Data { left }, _) => S::Data { left },
            (S::Done, _) => S::Done,
        };
    }
    Ok(*state == S::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_split_everywhere(framing: Framing, body: &[u8]) -> Vec<(Vec<u8>, bool)> {
        (0..=body.len())
            .map(|at| {
                let mut decoder = BodyDecoder::new(framing);
                let mut out = Vec::new();
                let mut ended = decoder
                    .feed(&body[..at], |d| out.extend_from_slice(d))
                    .unwrap();
                if !ended {
                    ended = decoder
                        .feed(&body[at..], |d| out.extend_from_slice(d))
                        .unwrap();
                }
                (out, ended)
            })
            .collect()
    }

    #[test]
    fn a_chunked_body_decodes_the_same_wherever_it_is_split() {
        let body = b"7\r\nretry: \r\n1a;name=value\r\n0123456789abcdefghijklmnop\r\n0\r\nX-Trailer: 1\r\n\r\nafter";
        for (out, ended) in decode_split_everywhere(Framing::Chunked, body) {
            assert_eq!(out, b"retry: 0123456789abcdefghijklmnop");
            assert!(ended);
        }
    }

    #[test]
    fn bare_lf_line_ends_are_accepted_in_chunked_framing() {
        let mut decoder = BodyDecoder::new(Framing::Chunked);
        let mut out = Vec::new();
        assert_eq!(
            decoder.feed(b"3\nabc\n0\n\n", |d| out.extend_from_slice(d)),
            Ok(true)
        );
        assert_eq!(out, b"abc");
    }

    #[test]
    fn an_open_chunked_stream_has_not_ended() {
        let mut decoder = BodyDecoder::new(Framing::Chunked);
        assert_eq!(decoder.feed(b"3\r\nabc\r\n4\r\nde", |_| {}), Ok(false));
    }

    #[test]
    fn garbage_in_a_chunked_body_is_an_error() {
        let feed = |input: &[u8]| BodyDecoder::new(Framing::Chunked).feed(input, |_| {});
        assert_eq!(
            feed(b"zz\r\n"),
            Err(ChunkError::Unexpected {
                byte: b'z',
                context: Context::Size
            })
        );
        assert_eq!(
            feed(b"1\r\nab"),
            Err(ChunkError::Unexpected {
                byte: b'b',
                context: Context::AfterData
            })
        );
        assert_eq!(feed(b"1000000000000000\r\n"), Err(ChunkError::SizeTooLarge));
        assert_eq!(
            feed(b"0\r\n\rx"),
            Err(ChunkError::Unexpected {
                byte: b'x',
                context: Context::End
            })
        );
    }

    #[test]
    fn a_length_body_ends_after_its_length_and_ignores_the_rest() {
        for (out, ended) in decode_split_everywhere(Framing::Length(5), b"hello world") {
            assert_eq!(out, b"hello");
            assert!(ended);
        }
    }

    #[test]
    fn response_heads_give_status_and_framing() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(head_len(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(head_len(&[&head[..], b"data"].concat()), Some(head.len()));
        assert_eq!(
            parse_head(head),
            Ok(ResponseHead {
                status: 200,
                framing: Framing::Chunked
            })
        );
        assert_eq!(
            parse_head(b"HTTP/1.0 404 Not Found\r\nContent-Length: 12\r\n\r\n"),
            Ok(ResponseHead {
                status: 404,
                framing: Framing::Length(12)
            })
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"),
            Ok(ResponseHead {
                status: 200,
                framing: Framing::UntilClose
            })
        );
        assert!(matches!(
            parse_head(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(HeadError::StatusLine(_))
        ));
    }

    #[test]
    fn urls_split_into_authority_address_and_target() {
        let e = Endpoint::parse("http://127.0.0.1:7070/events?topic=a").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.connect.as_str(), e.path.as_str()),
            ("127.0.0.1:7070", "127.0.0.1:7070", "/events?topic=a")
        );
        let e = Endpoint::parse("http://localhost").unwrap();
        assert_eq!((e.connect.as_str(), e.path.as_str()), ("localhost:80", "/"));
        let e = Endpoint::parse("http://[::1]:81?x=1").unwrap();
        assert_eq!((e.connect.as_str(), e.path.as_str()), ("[::1]:81", "/?x=1"));
        let e = Endpoint::parse("https://example.org/events").unwrap();
        assert_eq!((e.tls, e.host.as_str()), (true, "example.org"));
        assert_eq!(e.connect, "example.org:443");
        assert!(!Endpoint::parse("http://x").unwrap().tls);
        assert!(matches!(
            Endpoint::parse("ftp://x/"),
            Err(UrlError::NotHttp(_))
        ));
        assert!(matches!(
            Endpoint::parse("http://:80/"),
            Err(UrlError::NoHost(_))
        ));
        assert!(matches!(
            Endpoint::parse("http://x:0/"),
            Err(UrlError::BadPort(_))
        ));
        assert!(matches!(
            Endpoint::parse("http://x:http/"),
            Err(UrlError::BadPort(_))
        ));
    }
}
