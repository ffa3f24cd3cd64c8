//! The incremental event-stream parser: what a conforming EventSource does with the bytes.
//!
//! Feed it chunks split anywhere (inside a UTF-8 character, between CR and LF, inside the
//! leading BOM) and it returns the events each chunk completes. It follows the WHATWG
//! "Server-sent events" parsing rules; see `SSE_SPEC_NOTES.md` for the numbered rules the tests
//! refer to.
//!
//! Memory is bounded: a line longer than [`MAX_LINE_LEN`] bytes is ignored as a whole (never
//! truncated), and an event whose decoded data would grow past that limit is dropped at its
//! blank line. Both count in [`Parser::oversized`]. A parser thus holds at most a few times the
//! limit (the line, the data, and the decoded id and event type, which are lines themselves).

use std::borrow::Cow;

/// The default longest line, and longest event data, the parser keeps: 16 MiB.
pub const MAX_LINE_LEN: usize = 16 << 20;

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";
const DEFAULT_EVENT_TYPE: &str = "message";

/// One dispatched event, as an EventSource would deliver it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ParsedEvent {
    /// The `event:` field, or `message` when it was absent or empty.
    pub event_type: String,
    /// The data lines joined with LF (CR and CRLF breaks come back as LF).
    pub data: String,
    /// The last event id in effect when the event was dispatched (it sticks across events).
    pub last_event_id: String,
}

/// An incremental parser for one EventSource: feed it the bytes of its stream(s).
///
/// Use one per connection; after [`Parser::finish`] it can read the client's next stream
/// (a reconnect) and keeps the last event id and the reconnection time, as a browser would.
#[derive(Debug)]
pub struct Parser {
    /// The part of the current line seen so far, when it spans chunks.
    line: Vec<u8>,
    /// The current line is longer than `max_line_len`: skip bytes until its end.
    skipping_line: bool,
    /// The previous chunk ended with CR: an LF at the start of the next one is the same break.
    after_cr: bool,
    /// How many bytes of a leading BOM have been matched (and held back) so far.
    bom_matched: u8,
    /// The start of the stream is behind us: no BOM can follow.
    past_start: bool,
    data: String,
    event_type: String,
    /// The event's data outgrew `max_line_len`: it is dropped at its blank line.
    dropping_event: bool,
    /// The spec's "last event ID buffer": set by `id`, committed at the next blank line.
    id_buffer: String,
    /// The spec's "last event ID string": what a reconnect would send.
    last_event_id: String,
    retry: Option<u64>,
    comments: u64,
    oversized: u64,
    max_line_len: usize,
}

impl Default for Parser {
    fn default() -> Self {
        Self::with_max_line_len(MAX_LINE_LEN)
    }
}

impl Parser {
    /// A parser at the start of a stream, with the default [`MAX_LINE_LEN`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that ignores lines, and drops events whose data grows, past `max_line_len` bytes.
    pub fn with_max_line_len(max_line_len: usize) -> Self {
        Self {
            line: Vec::new(),
            skipping_line: false,
            after_cr: false,
            bom_matched: 0,
            past_start: false,
            data: String::new(),
            event_type: String::new(),
            dropping_event: false,
            id_buffer: String::new(),
            last_event_id: String::new(),
            retry: None,
            comments: 0,
            oversized: 0,
            max_line_len,
        }
    }

    /// Feeds a chunk (split anywhere) and returns the events it dispatched, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<ParsedEvent> {
        let mut events = Vec::new();
        self.feed_each(chunk, |event| events.push(event));
        events
    }

    /// Feeds a chunk and calls `on_event` for each event it dispatches; no `Vec` is built.
    pub fn feed_each(&mut self, chunk: &[u8], mut on_event: impl FnMut(ParsedEvent)) {
        let mut rest = self.skip_bom(chunk);
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let [b'\n', tail @ ..] = rest {
                rest = tail;
            }
        }
        while let Some(end) = find_break(rest) {
            let (part, after) = rest.split_at(end);
            rest = match after {
                [b'\r', b'\n', tail @ ..] => tail,
                [b'\r'] => {
                    self.after_cr = true;
                    &[]
                }
                [_, tail @ ..] => tail,
                [] => &[],
            };
            self.end_line(part, &mut on_event);
        }
        self.push_partial(rest);
    }

    /// The reconnection time (ms) set by the last valid `retry:` field, if any.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The last event id, as an EventSource would send it in `Last-Event-ID` (empty: none).
    ///
    /// Per the spec an `id:` line takes effect at the blank line that ends its block, so an id
    /// in a block cut off by the end of the stream never shows up here.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The number of comment lines seen (keep-alives), for tests and load reports.
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// The number of lines ignored and events dropped because they exceeded the size limit.
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// Ends the stream: discards a partially received line and event, as the spec requires.
    ///
    /// The parser is then ready for the next stream (its own BOM included) and keeps the last
    /// event id, the reconnection time and the counters.
    pub fn finish(&mut self) {
        self.line.clear();
        self.skipping_line = false;
        self.after_cr = false;
        self.bom_matched = 0;
        self.past_start = false;
        self.data.clear();
        self.event_type.clear();
        self.dropping_event = false;
        self.id_buffer.clone_from(&self.last_event_id);
    }

    /// Strips one leading BOM, even split across chunks; returns the rest of `chunk`.
    fn skip_bom<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        let mut rest = chunk;
        while !self.past_start {
            let Some((&byte, tail)) = rest.split_first() else {
                return rest;
            };
            let matched = usize::from(self.bom_matched);
            if BOM.get(matched) == Some(&byte) {
                rest = tail;
                self.bom_matched += 1;
                self.past_start = matched + 1 == BOM.len();
            } else {
                // Not a BOM after all: the bytes held back are ordinary text of the first line.
                self.past_start = true;
                self.line.extend_from_slice(&BOM[..matched]);
            }
        }
        rest
    }

    /// Keeps the start of a line that continues in the next chunk, within the size limit.
    fn push_partial(&mut self, part: &[u8]) {
        if part.is_empty() || self.skipping_line {
            return;
        }
        if self.line.len() + part.len() > self.max_line_len {
            self.line.clear();
            self.skipping_line = true;
            self.oversized += 1;
            return;
        }
        self.line.extend_from_slice(part);
    }

    /// A line break ends the line whose last part is `part`.
    fn end_line(&mut self, part: &[u8], on_event: &mut impl FnMut(ParsedEvent)) {
        if self.skipping_line {
            self.skipping_line = false;
        } else if self.line.is_empty() {
            if part.len() > self.max_line_len {
                self.oversized += 1;
            } else {
                self.handle_line(part, on_event);
            }
        } else {
            self.push_partial(part);
            if !self.skipping_line {
                let line = std::mem::take(&mut self.line);
                self.handle_line(&line, on_event);
                self.line = line;
                self.line.clear();
            }
            self.skipping_line = false;
        }
    }

    /// Interprets one complete line (without its break).
    fn handle_line(&mut self, line: &[u8], on_event: &mut impl FnMut(ParsedEvent)) {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => {
                self.comments += 1;
                return;
            }
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None if line.is_empty() => {
                self.dispatch(on_event);
                return;
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => self.append_data(value),
            b"event" => {
                self.event_type.clear();
                self.event_type.push_str(&decode(value));
            }
            // A NUL is checked on bytes: lossy decoding never produces one.
            b"id" if !value.contains(&0) => {
                self.id_buffer.clear();
                self.id_buffer.push_str(&decode(value));
            }
            b"retry" => {
                if let Some(ms) = parse_retry(value) {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn append_data(&mut self, value: &[u8]) {
        if self.dropping_event {
            return;
        }
        // Measured after decoding: each invalid byte grows into a 3-byte U+FFFD.
        let value = decode(value);
        if self.data.len() + value.len() + 1 > self.max_line_len {
            self.data.clear();
            self.dropping_event = true;
            return;
        }
        self.data.push_str(&value);
        self.data.push('\n');
    }

    /// The blank line: commits the id and fires the event if it had any data line.
    fn dispatch(&mut self, on_event: &mut impl FnMut(ParsedEvent)) {
        if self.last_event_id != self.id_buffer {
            self.last_event_id.clone_from(&self.id_buffer);
        }
        if self.dropping_event {
            self.dropping_event = false;
            self.oversized += 1;
            self.event_type.clear();
            return;
        }
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        self.data.pop();
        // Cloning (rather than taking) keeps the buffers' capacity for the next event.
        let event_type = if self.event_type.is_empty() {
            DEFAULT_EVENT_TYPE.to_owned()
        } else {
            self.event_type.clone()
        };
        let event = ParsedEvent {
            event_type,
            data: self.data.clone(),
            last_event_id: self.last_event_id.clone(),
        };
        self.data.clear();
        self.event_type.clear();
        on_event(event);
    }
}

/// The index of the first CR or LF in `bytes`, scanning eight bytes at a time.
fn find_break(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const LFS: u64 = u64::from_ne_bytes([b'\n'; 8]);
    const CRS: u64 = u64::from_ne_bytes([b'\r'; 8]);
    // Flags the zero bytes of `word`; the lowest flag is always exact (borrows only move up).
    let zeros = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let (words, tail) = bytes.as_chunks::<8>();
    for (i, word) in words.iter().enumerate() {
        let word = u64::from_le_bytes(*word);
        let found = zeros(word ^ LFS) | zeros(word ^ CRS);
        if found != 0 {
            return Some(i * 8 + (found.trailing_zeros() / 8) as usize);
        }
    }
    let at = tail.iter().position(|&b| b == b'\n' || b == b'\r')?;
    Some(words.len() * 8 + at)
}

/// UTF-8 with invalid sequences replaced by U+FFFD; borrowed when already valid.
///
/// Decoding line by line equals decoding the whole stream: breaks, colons and spaces are
/// ASCII, which never continue a multi-byte sequence.
fn decode(bytes: &[u8]) -> Cow<'_, str> {
    // `from_utf8` has a fast path for ASCII that `from_utf8_lossy` lacks.
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// A `retry:` value: ASCII digits only, base 10; `None` (ignored) otherwise or on overflow.
fn parse_retry(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |ms, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        ms.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, data: &str, last_event_id: &str) -> ParsedEvent {
        ParsedEvent {
            event_type: event_type.into(),
            data: data.into(),
            last_event_id: last_event_id.into(),
        }
    }

    fn parse(input: &[u8]) -> Vec<ParsedEvent> {
        Parser::new().feed(input)
    }

    /// Feeds `input` one byte at a time.
    fn parse_bytewise(input: &[u8]) -> (Parser, Vec<ParsedEvent>) {
        let mut parser = Parser::new();
        let events = input
            .iter()
            .flat_map(|b| parser.feed(std::slice::from_ref(b)))
            .collect();
        (parser, events)
    }

    /// Every two-way split of `input` gives the same events as one chunk.
    fn assert_split_invariant(input: &[u8]) {
        let whole = parse(input);
        for cut in 0..=input.len() {
            let mut parser = Parser::new();
            let mut events = parser.feed(&input[..cut]);
            events.extend(parser.feed(&input[cut..]));
            assert_eq!(events, whole, "split at {cut} of {input:?}");
        }
        assert_eq!(parse_bytewise(input).1, whole);
    }

    #[test]
    fn a_data_line_and_a_blank_line_dispatch_a_message() {
        assert_eq!(parse(b"data: hello\n\n"), [event("message", "hello", "")]);
    }

    #[test]
    fn lf_cr_and_crlf_all_end_lines_and_crlf_counts_once() {
        let expected = [event("message", "a\nb", ""), event("message", "c", "")];
        assert_eq!(parse(b"data: a\ndata: b\n\ndata: c\n\n"), expected);
        assert_eq!(parse(b"data: a\rdata: b\r\rdata: c\r\r"), expected);
        assert_eq!(
            parse(b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"),
            expected
        );
        assert_eq!(parse(b"data: a\rdata: b\r\n\ndata: c\n\r"), expected);
        // Two CRs are two breaks, an LF CR pair is two breaks.
        assert_eq!(
            parse(b"data: a\r\rdata: b\n\r"),
            [event("message", "a", ""), event("message", "b", "")]
        );
    }

    #[test]
    fn a_cr_at_the_end_of_one_chunk_and_an_lf_at_the_start_of_the_next_are_one_break() {
        let mut parser = Parser::new();
        assert_eq!(parser.feed(b"data: a\r"), []);
        assert_eq!(parser.feed(b"\ndata: b\r"), []);
        assert_eq!(parser.feed(b""), []);
        assert_eq!(parser.feed(b"\n\r"), [event("message", "a\nb", "")]);
        assert_eq!(parser.feed(b"\n"), []);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        assert_split_invariant(
            "\u{FEFF}id: 1\r\nevent: é\r\ndata: ✓ x\rdata\n: c\n\nretry: 5\r\rdata: 🎉\r\n\r\n"
                .as_bytes(),
        );
        assert_split_invariant(b"\xEF\xBBdata: x\n\n\xEF\xBB\xBFdata: y\n\n");
    }

    #[test]
    fn one_leading_bom_is_stripped_even_split_across_chunks() {
        assert_eq!(
            parse(b"\xEF\xBB\xBFdata: a\n\n"),
            [event("message", "a", "")]
        );
        let mut parser = Parser::new();
        assert_eq!(parser.feed(b"\xEF"), []);
        assert_eq!(parser.feed(b"\xBB"), []);
        assert_eq!(parser.feed(b"\xBFdata: a\n\n"), [event("message", "a", "")]);
    }

    #[test]
    fn a_second_bom_corrupts_the_field_name_and_the_line_is_ignored() {
        assert_eq!(
            parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n"),
            [event("message", "b", "")]
        );
        // A BOM after the start is ordinary text.
        assert_eq!(
            parse("data: a\n\n\u{FEFF}data: b\n\n".as_bytes()),
            [event("message", "a", "")]
        );
    }

    #[test]
    fn a_broken_bom_is_kept_as_text_and_decoded_lossily() {
        assert_eq!(
            parse(b"\xEF\xBB\n\ndata: a\n\n"),
            [event("message", "a", "")]
        );
        let mut parser = Parser::new();
        parser.feed(b"\xEF");
        assert_eq!(
            parser.feed(b"\xBBdata: x\n\ndata: y\n\n"),
            [event("message", "y", "")]
        );
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters_even_split_inside_a_character() {
        assert_eq!(
            parse(b"data: a\xFFb\n\n"),
            [event("message", "a\u{FFFD}b", "")]
        );
        let mut parser = Parser::new();
        assert_eq!(parser.feed(b"data: \xE2\x9C"), []);
        assert_eq!(parser.feed(b"\x93\n\n"), [event("message", "✓", "")]);
        assert_eq!(
            parse(b"data: \xE2\x9C\n\n"),
            [event("message", "\u{FFFD}", "")]
        );
    }

    #[test]
    fn comment_lines_are_counted_and_ignored() {
        let mut parser = Parser::new();
        assert_eq!(
            parser.feed(b": keep-alive\n\n:\ndata: a\n: inside\n\n"),
            [event("message", "a", "")]
        );
        assert_eq!(parser.comments(), 3);
    }

    #[test]
    fn exactly_one_space_after_the_colon_is_stripped() {
        assert_eq!(parse(b"data:a\n\n"), [event("message", "a", "")]);
        assert_eq!(parse(b"data: a\n\n"), [event("message", "a", "")]);
        assert_eq!(parse(b"data:  a \n\n"), [event("message", " a ", "")]);
        assert_eq!(parse(b"data:\ta\n\n"), [event("message", "\ta", "")]);
        assert_eq!(parse(b"data: a: b\n\n"), [event("message", "a: b", "")]);
    }

    #[test]
    fn a_line_without_a_colon_is_a_field_with_an_empty_value() {
        assert_eq!(parse(b"data\n\n"), [event("message", "", "")]);
        assert_eq!(parse(b"data\ndata\n\n"), [event("message", "\n", "")]);
        assert_eq!(parse(b"data: a\nevent\n\n"), [event("message", "a", "")]);
        let mut parser = Parser::new();
        assert_eq!(
            parser.feed(b"id: 1\n\nid\ndata: a\n\n"),
            [event("message", "a", "")]
        );
        assert_eq!(parser.last_event_id(), "");
    }

    #[test]
    fn field_names_are_case_sensitive_and_unknown_names_are_ignored() {
        assert_eq!(
            parse(b"Data: a\nDATA: b\nEvent: x\nID: 3\nfoo: bar\ndata : c\n\n"),
            []
        );
        assert_eq!(parse(b"Data: a\ndata: b\n\n"), [event("message", "b", "")]);
    }

    #[test]
    fn data_lines_are_joined_with_lf_and_one_trailing_lf_is_removed() {
        assert_eq!(
            parse(b"data: a\ndata: b\ndata\n\n"),
            [event("message", "a\nb\n", "")]
        );
        assert_eq!(
            parse(b"data: a\ndata:\ndata: b\n\n"),
            [event("message", "a\n\nb", "")]
        );
    }

    #[test]
    fn a_block_without_data_dispatches_nothing_but_its_id_and_retry_take_effect() {
        let mut parser = Parser::new();
        assert_eq!(parser.feed(b"id: 42\nretry: 1000\nevent: x\n\n"), []);
        assert_eq!(parser.last_event_id(), "42");
        assert_eq!(parser.retry(), Some(1000));
        // The event type did not leak into the next block.
        assert_eq!(parser.feed(b"data: a\n\n"), [event("message", "a", "42")]);
    }

    #[test]
    fn an_empty_data_field_dispatches_an_empty_message() {
        assert_eq!(parse(b"data:\n\n"), [event("message", "", "")]);
        assert_eq!(parse(b"data: \n\n"), [event("message", "", "")]);
    }

    #[test]
    fn blank_lines_alone_dispatch_nothing() {
        assert_eq!(parse(b"\n\n\r\n\r\r"), []);
    }

    #[test]
    fn the_event_type_applies_to_one_event_and_empty_means_message() {
        assert_eq!(
            parse(b"event: note\ndata: a\n\ndata: b\n\nevent:\ndata: c\n\nevent: x\nevent: y\ndata: d\n\n"),
            [
                event("note", "a", ""),
                event("message", "b", ""),
                event("message", "c", ""),
                event("y", "d", ""),
            ]
        );
    }

    #[test]
    fn the_last_event_id_sticks_across_events_until_changed_or_reset() {
        let mut parser = Parser::new();
        let events =
            parser.feed(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\n\ndata: c\n\nid:\ndata: d\n\n");
        assert_eq!(
            events,
            [
                event("message", "a", "1"),
                event("message", "b", "1"),
                event("message", "c", "2"),
                event("message", "d", "")
            ]
        );
        assert_eq!(parser.last_event_id(), "");
    }

    #[test]
    fn an_id_containing_nul_is_ignored_entirely() {
        let mut parser = Parser::new();
        let events = parser.feed(b"id: 1\n\nid: a\0b\ndata: x\n\nid: \0\ndata: y\n\n");
        assert_eq!(
            events,
            [event("message", "x", "1"), event("message", "y", "1")]
        );
        assert_eq!(parser.last_event_id(), "1");
    }

    #[test]
    fn an_empty_id_resets_the_last_event_id() {
        for input in [
            &b"id: 7\n\nid:\n\n"[..],
            b"id: 7\n\nid\n\n",
            b"id: 7\n\nid: \n\n",
        ] {
            let mut parser = Parser::new();
            parser.feed(input);
            assert_eq!(parser.last_event_id(), "", "{input:?}");
        }
    }

    #[test]
    fn an_id_takes_effect_at_the_blank_line_that_ends_its_block() {
        let mut parser = Parser::new();
        parser.feed(b"id: 1\n\nid: 2\ndata: x\n");
        assert_eq!(parser.last_event_id(), "1");
        parser.finish();
        assert_eq!(parser.last_event_id(), "1");
        // The cut-off id is forgotten with its block.
        assert_eq!(parser.feed(b"data: y\n\n"), [event("message", "y", "1")]);
    }

    #[test]
    fn retry_accepts_ascii_digits_only() {
        let mut parser = Parser::new();
        parser.feed(b"retry: 1500\n\n");
        assert_eq!(parser.retry(), Some(1500));
        for bad in [
            "1.5",
            "-1",
            "3s",
            "+5",
            " 5",
            "5 ",
            "",
            "１２",
            "0x10",
            "99999999999999999999999",
        ] {
            parser.feed(format!("retry: {bad}\n\n").as_bytes());
            assert_eq!(parser.retry(), Some(1500), "retry: {bad:?}");
        }
        parser.feed(b"retry:007\n\n");
        assert_eq!(parser.retry(), Some(7));
        parser.feed(b"retry: 18446744073709551615\n\n");
        assert_eq!(parser.retry(), Some(u64::MAX));
        parser.feed(b"retry: 0\n\n");
        assert_eq!(parser.retry(), Some(0));
    }

    #[test]
    fn retry_takes_effect_without_a_blank_line_or_a_message() {
        let mut parser = Parser::new();
        parser.feed(b"retry: 250\n");
        parser.finish();
        assert_eq!(parser.retry(), Some(250));
    }

    #[test]
    fn an_event_cut_off_by_the_end_of_the_stream_is_discarded() {
        let mut parser = Parser::new();
        assert_eq!(
            parser.feed(b"data: a\n\nevent: x\ndata: partial\ndata: line"),
            [event("message", "a", "")]
        );
        parser.finish();
        assert_eq!(parser.feed(b"\n\n"), []);
        assert_eq!(parser.feed(b"data: b\n\n"), [event("message", "b", "")]);
    }

    #[test]
    fn after_finish_the_next_stream_may_start_with_its_own_bom() {
        let mut parser = Parser::new();
        parser.feed(b"\xEF\xBB\xBFid: 3\ndata: a\n\n");
        parser.finish();
        assert_eq!(
            parser.feed(b"\xEF\xBB\xBFdata: b\n\n"),
            [event("message", "b", "3")]
        );
    }

    #[test]
    fn finish_forgets_a_cr_so_the_next_stream_keeps_its_first_lf() {
        let mut parser = Parser::new();
        parser.feed(b"data: a\r");
        parser.finish();
        assert_eq!(parser.feed(b"\ndata: b\n\n"), [event("message", "b", "")]);
    }

    #[test]
    fn feed_each_calls_back_with_the_same_events_as_feed() {
        let input = b"data: a\n\nevent: t\ndata: b\n\n";
        let mut seen = Vec::new();
        Parser::new().feed_each(input, |e| seen.push(e));
        assert_eq!(seen, parse(input));
    }

    #[test]
    fn a_line_over_the_limit_is_ignored_whole_in_one_chunk_or_many() {
        let input = b"data: 0123456789\ndata: ok\n\n";
        let mut parser = Parser::with_max_line_len(10);
        assert_eq!(parser.feed(input), [event("message", "ok", "")]);
        assert_eq!(parser.oversized(), 1);

        let (mut parser, mut events) = (Parser::with_max_line_len(10), Vec::new());
        for b in input {
            events.extend(parser.feed(std::slice::from_ref(b)));
        }
        assert_eq!(events, [event("message", "ok", "")]);
        assert_eq!(parser.oversized(), 1);
        assert!(parser.line.capacity() <= 16);

        // Exactly at the limit is fine.
        assert_eq!(
            Parser::with_max_line_len(8).feed(b"data: ab\n\n"),
            [event("message", "ab", "")]
        );
    }

    #[test]
    fn the_default_limit_ignores_a_line_one_byte_over_16_mib_without_keeping_it() {
        let mut parser = Parser::new();
        parser.feed(b"data: ");
        let block = vec![b'x'; 1 << 20];
        for _ in 0..16 {
            parser.feed(&block);
        }
        assert_eq!(parser.oversized(), 1);
        assert!(parser.line.is_empty());
        assert_eq!(parser.feed(b"\ndata: ok\n\n"), [event("message", "ok", "")]);
    }

    #[test]
    fn the_data_limit_counts_replacement_characters_not_raw_bytes() {
        // Four invalid bytes decode to 12 bytes of U+FFFD, over a 10-byte limit.
        let mut parser = Parser::with_max_line_len(10);
        assert_eq!(
            parser.feed(b"data:\x80\x80\x80\x80\n\ndata: ok\n\n"),
            [event("message", "ok", "")]
        );
        assert_eq!(parser.oversized(), 1);
    }

    #[test]
    fn an_event_whose_data_outgrows_the_limit_is_dropped_but_its_id_counts() {
        let mut parser = Parser::with_max_line_len(10);
        let events = parser.feed(b"id: 1\ndata: abcd\ndata: efgh\ndata: ij\n\ndata: ok\n\n");
        assert_eq!(events, [event("message", "ok", "1")]);
        assert_eq!(parser.oversized(), 1);
    }

    #[test]
    fn the_word_at_a_time_scan_finds_the_first_break_like_a_plain_search() {
        for filler in [0x00, 0x09, 0x0B, 0x0C, 0x0E, 0x7F, 0x80, 0x8A, 0x8D, 0xFF] {
            for len in 0..24 {
                let mut bytes = vec![filler; len];
                assert_eq!(find_break(&bytes), None);
                for at in 0..len {
                    for (first, second) in [(b'\n', b'\r'), (b'\r', b'\n')] {
                        bytes.fill(filler);
                        bytes[at] = first;
                        if at + 3 < len {
                            bytes[at + 3] = second;
                        }
                        assert_eq!(find_break(&bytes), Some(at), "{bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn arbitrary_garbage_never_panics() {
        let mut parser = Parser::with_max_line_len(4);
        for chunk in [
            &b"\xFF\xFE\r"[..],
            b"\n\r\r:",
            b"\0\0data\xF0\x9F",
            b"\n\n",
            b"id\0:\n\n",
            b"retry:\xFF\n",
        ] {
            parser.feed(chunk);
        }
        parser.finish();
    }

    #[test]
    fn the_parser_reads_what_the_encoder_writes() {
        use crate::event::{Event, Target};
        use crate::frame::{Comment, FrameBuilder, encode_event};
        use crate::id::EventId;
        use crate::topic::EventType;

        let mut parser = Parser::new();
        let stream = [
            encode_event(&Event {
                id: EventId::new(5, 1),
                target: Target::default(),
                event_type: Some(EventType::new("note").unwrap()),
                data: "a\r\nb\rc\nd".into(),
            }),
            FrameBuilder::default()
                .comment(&Comment::new("hi").unwrap())
                .retry(10)
                .finish(),
            FrameBuilder::default().empty_id().finish(),
        ]
        .concat();
        assert_eq!(parser.feed(&stream), [event("note", "a\nb\nc\nd", "5-1")]);
        assert_eq!(
            (parser.last_event_id(), parser.retry(), parser.comments()),
            ("", Some(10), 1)
        );
    }
}
