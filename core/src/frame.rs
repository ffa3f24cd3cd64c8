//! The event-stream encoder: frames are encoded once and shared as [`Bytes`].
//!
//! Every field that reaches here has been validated on construction ([`EventType`] and
//! [`EventId`] cannot hold CR, LF or NUL), so encoding cannot fail. Lines end with LF.

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::Event;
use crate::id::EventId;
use crate::topic::EventType;

/// A comment line's text: no CR or LF. Use for keep-alives and greetings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment(String);

impl Comment {
    /// Validates the text; `None` if it holds CR or LF.
    pub fn new(text: &str) -> Option<Self> {
        (!text.contains(['\r', '\n'])).then(|| Self(text.to_owned()))
    }
}

/// Calls `line` once for each line of `data`, breaking on CRLF, CR and LF (CRLF counts once).
///
/// Empty data is one empty line, so that an empty payload still fires a message.
pub fn for_each_line(data: &str, mut line: impl FnMut(&str)) {
    let bytes = data.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                line(&data[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                line(&data[start..i]);
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    line(&data[start..]);
}

/// Builds one event-stream block field by field; [`FrameBuilder::finish`] adds the blank line.
#[derive(Debug, Default)]
pub struct FrameBuilder {
    buf: BytesMut,
}

impl FrameBuilder {
    /// Starts an empty block with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(capacity),
        }
    }

    /// `id: {id}`.
    pub fn id(mut self, id: EventId) -> Self {
        self.field("id", &id.to_string());
        self
    }

    /// An empty `id:` line: resets the client's last event id to the empty string.
    pub fn empty_id(mut self) -> Self {
        self.buf.put_slice(b"id:\n");
        self
    }

    /// `event: {type}`.
    pub fn event_type(mut self, event_type: &EventType) -> Self {
        self.field("event", event_type.as_str());
        self
    }

    /// One `data:` line per line of `data`.
    pub fn data(mut self, data: &str) -> Self {
        for_each_line(data, |line| self.field("data", line));
        self
    }

    /// `retry: {ms}`: the client's reconnection delay.
    pub fn retry(mut self, ms: u64) -> Self {
        self.field("retry", &ms.to_string());
        self
    }

    /// `: {text}`.
    pub fn comment(mut self, comment: &Comment) -> Self {
        self.buf.put_slice(b": ");
        self.buf.put_slice(comment.0.as_bytes());
        self.buf.put_u8(b'\n');
        self
    }

    /// Ends the block with a blank line and freezes it.
    pub fn finish(mut self) -> Bytes {
        self.buf.put_u8(b'\n');
        self.buf.freeze()
    }

    fn field(&mut self, name: &str, value: &str) {
        self.buf.reserve(name.len() + value.len() + 3);
        self.buf.put_slice(name.as_bytes());
        self.buf.put_slice(b": ");
        self.buf.put_slice(value.as_bytes());
        self.buf.put_u8(b'\n');
    }
}

/// Encodes a published event: `id`, `event` (if any), `data` lines, blank line.
pub fn encode_event(event: &Event) -> Bytes {
    let mut frame = FrameBuilder::with_capacity(event.data.len() + 64).id(event.id);
    if let Some(t) = &event.event_type {
        frame = frame.event_type(t);
    }
    frame.data(&event.data).finish()
}

/// Encodes a block with no id: an ephemeral event (admin events, notices).
pub fn encode_ephemeral(event_type: &EventType, data: &str) -> Bytes {
    FrameBuilder::with_capacity(data.len() + 32)
        .event_type(event_type)
        .data(data)
        .finish()
}

/// Encodes a comment block (keep-alive).
pub fn encode_comment(comment: &Comment) -> Bytes {
    FrameBuilder::default().comment(comment).finish()
}

/// Encodes a `retry:` block, which sets the client's reconnection delay without a message.
pub fn encode_retry(ms: u64) -> Bytes {
    FrameBuilder::default().retry(ms).finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Target;

    #[test]
    fn data_is_split_on_cr_lf_and_crlf_with_crlf_counted_once() {
        let event = Event {
            id: EventId::new(5, 1),
            target: Target::default(),
            event_type: Some(EventType::new("note").unwrap()),
            data: "a\r\nb\rc\nd".into(),
        };
        assert_eq!(
            &encode_event(&event)[..],
            b"id: 5-1\nevent: note\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn empty_data_still_fires_a_message_and_trailing_breaks_keep_their_lines() {
        let mut lines = Vec::new();
        for_each_line("", |l| lines.push(l.to_owned()));
        assert_eq!(lines, [""]);
        lines.clear();
        for_each_line("x\n", |l| lines.push(l.to_owned()));
        assert_eq!(lines, ["x", ""]);
        lines.clear();
        for_each_line("\r\n\r", |l| lines.push(l.to_owned()));
        assert_eq!(lines, ["", "", ""]);
    }

    #[test]
    fn comments_and_retry_have_their_own_blocks() {
        assert_eq!(Comment::new("a\nb"), None);
        assert_eq!(
            &encode_comment(&Comment::new("keep-alive").unwrap())[..],
            b": keep-alive\n\n"
        );
        assert_eq!(&encode_retry(3000)[..], b"retry: 3000\n\n");
        assert_eq!(&FrameBuilder::default().empty_id().finish()[..], b"id:\n\n");
    }
}
