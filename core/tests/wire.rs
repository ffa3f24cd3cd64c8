//! The wire format end to end: what the encoder writes, the parser reads back, however the
//! bytes are split; the parser survives any input; and the spec's test vectors hold.
//!
//! Rule numbers refer to `SSE_SPEC_NOTES.md`.

use herald_core::frame::{encode_comment, encode_event, encode_retry};
use herald_core::{
    CLOSED_EVENT, CloseReason, Comment, Event, EventId, EventType, ParsedEvent, Parser, Target,
};
use proptest::prelude::*;

/// Feeds `bytes` cut at `cuts` (any values; taken modulo the length), then ends the stream.
fn parse_split(parser: &mut Parser, bytes: &[u8], cuts: &[usize]) -> Vec<ParsedEvent> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut events = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        parser.feed_each(&bytes[start..cut], |e| events.push(e));
        start = cut;
    }
    parser.finish();
    events
}

fn parse(bytes: &[u8]) -> Vec<ParsedEvent> {
    Parser::new().feed(bytes)
}

fn message(data: &str, last_event_id: &str) -> ParsedEvent {
    ParsedEvent {
        event_type: "message".into(),
        data: data.into(),
        last_event_id: last_event_id.into(),
    }
}

/// What a client sees of `event`: CR and CRLF in the data come back as LF.
fn expected(event: &Event) -> ParsedEvent {
    ParsedEvent {
        event_type: event
            .event_type
            .as_ref()
            .map_or("message", EventType::as_str)
            .to_owned(),
        data: event.data.replace("\r\n", "\n").replace('\r', "\n"),
        last_event_id: event.id.to_string(),
    }
}

/// Payloads rich in what could break framing: line breaks, NUL, colons, spaces, BOMs.
fn data() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => any::<String>(),
        1 => Just("\r\n".to_owned()),
        1 => Just("\r".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("\0".to_owned()),
        1 => Just(": ".to_owned()),
        1 => Just("data: x".to_owned()),
        1 => Just("\u{FEFF}".to_owned()),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

fn event_type() -> impl Strategy<Value = Option<EventType>> {
    let name = prop_oneof![
        Just("message".to_owned()),
        Just(" leading space".to_owned()),
        "[a-z.:_-]{1,20}",
        "[^\\p{Cc}]{1,50}",
    ];
    proptest::option::of(name.prop_filter_map("valid event type", |n| EventType::new(&n).ok()))
}

fn event() -> impl Strategy<Value = Event> {
    (any::<u64>(), any::<u64>(), event_type(), data()).prop_map(|(ms, seq, event_type, data)| {
        Event {
            id: EventId::new(ms, seq),
            target: Target::default(),
            event_type,
            data,
        }
    })
}

/// Byte soup made mostly of the tokens the parser cares about.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..6),
        1 => Just(b"data".to_vec()),
        1 => Just(b"id".to_vec()),
        1 => Just(b"event".to_vec()),
        1 => Just(b"retry".to_vec()),
        2 => Just(b":".to_vec()),
        1 => Just(b" ".to_vec()),
        2 => Just(b"\n".to_vec()),
        2 => Just(b"\r".to_vec()),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(b"\0".to_vec()),
        1 => Just(b"\xEF\xBB\xBF".to_vec()),
        1 => Just(b"\xEF\xBB".to_vec()),
        1 => Just(b"\xEF".to_vec()),
        1 => "[0-9]{1,3}".prop_map(String::into_bytes),
        1 => Just("é✓🎉".as_bytes().to_vec()),
    ];
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

/// A transcription of the spec's algorithm over the whole stream at once: the model the
/// incremental parser must agree with.
#[derive(Debug, PartialEq, Eq)]
struct Model {
    events: Vec<ParsedEvent>,
    last_event_id: String,
    retry: Option<u64>,
    comments: u64,
}

fn model(bytes: &[u8]) -> Model {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
    let mut m = Model {
        events: Vec::new(),
        last_event_id: String::new(),
        retry: None,
        comments: 0,
    };
    let (mut data, mut event_type, mut id_buffer) = (String::new(), String::new(), String::new());
    // Only complete lines count: what follows the last break is cut off by the end of stream.
    let mut lines: Vec<&str> = text
        .split("\r\n")
        .flat_map(|l| l.split(['\r', '\n']))
        .collect();
    lines.pop();
    for line in lines {
        if line.is_empty() {
            m.last_event_id = id_buffer.clone();
            if !data.is_empty() {
                data.pop();
                let event_type = if event_type.is_empty() {
                    "message".into()
                } else {
                    event_type.clone()
                };
                m.events.push(ParsedEvent {
                    event_type,
                    data: data.clone(),
                    last_event_id: id_buffer.clone(),
                });
            }
            data.clear();
            event_type.clear();
            continue;
        }
        if line.starts_with(':') {
            m.comments += 1;
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => id_buffer = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    m.retry = Some(ms);
                }
            }
            _ => {}
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_encoded_event_parses_back_equal(event in event()) {
        let mut parser = Parser::new();
        let events = parser.feed(&encode_event(&event));
        prop_assert_eq!(events, vec![expected(&event)]);
        prop_assert_eq!(parser.last_event_id(), event.id.to_string());
    }

    #[test]
    fn many_encoded_events_split_anywhere_parse_back_equal(
        events in prop::collection::vec((event(), 0..4u8), 1..12),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        bom in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        if bom {
            stream.extend_from_slice("\u{FEFF}".as_bytes());
        }
        let mut keep_alives = 0;
        let mut retry = None;
        for (event, extra) in &events {
            stream.extend_from_slice(&encode_event(event));
            // Interleave keep-alives and retry blocks, which must not disturb the events.
            match extra {
                1 => {
                    stream.extend_from_slice(&encode_comment(&Comment::new("keep-alive").unwrap()));
                    keep_alives += 1;
                }
                2 => {
                    stream.extend_from_slice(&encode_retry(event.id.seq));
                    retry = Some(event.id.seq);
                }
                _ => {}
            }
        }
        let mut parser = Parser::new();
        let parsed = parse_split(&mut parser, &stream, &cuts);
        let wanted: Vec<ParsedEvent> = events.iter().map(|(e, _)| expected(e)).collect();
        prop_assert_eq!(parsed, wanted);
        prop_assert_eq!(parser.comments(), keep_alives);
        prop_assert_eq!(parser.retry(), retry);
        prop_assert_eq!(parser.last_event_id(), events.last().unwrap().0.id.to_string());
    }

    #[test]
    fn the_parser_never_panics_on_arbitrary_bytes_split_anywhere(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        max_line_len in 0usize..64,
    ) {
        parse_split(&mut Parser::new(), &bytes, &cuts);
        parse_split(&mut Parser::with_max_line_len(max_line_len), &bytes, &cuts);
    }

    #[test]
    fn the_parser_agrees_with_the_spec_model_however_the_stream_is_split(
        bytes in stream_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut parser = Parser::new();
        let events = parse_split(&mut parser, &bytes, &cuts);
        let got = Model {
            events,
            last_event_id: parser.last_event_id().to_owned(),
            retry: parser.retry(),
            comments: parser.comments(),
        };
        prop_assert_eq!(got, model(&bytes));
    }

    #[test]
    fn the_size_limit_bounds_event_data_and_is_split_invariant(
        bytes in stream_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        max_line_len in 0usize..24,
    ) {
        let mut whole = Parser::with_max_line_len(max_line_len);
        let expected = whole.feed(&bytes);
        whole.finish();
        let mut split = Parser::with_max_line_len(max_line_len);
        prop_assert_eq!(parse_split(&mut split, &bytes, &cuts), expected.clone());
        prop_assert_eq!(split.oversized(), whole.oversized());
        for event in &expected {
            // The buffer holds the data plus one LF per line, so at most `max_line_len - 1`.
            prop_assert!(event.data.len() < max_line_len);
        }
    }
}

// Spec test vectors.

#[test]
fn rule_10_lf_cr_and_crlf_each_end_a_line_and_crlf_counts_once() {
    for stream in [
        &b"data: a\ndata: b\n\n"[..],
        b"data: a\rdata: b\r\r",
        b"data: a\r\ndata: b\r\n\r\n",
    ] {
        assert_eq!(parse(stream), [message("a\nb", "")], "{stream:?}");
    }
    assert_eq!(
        parse(b"data: a\r\n\rdata: b\n\r\n"),
        [message("a", ""), message("b", "")]
    );
    let mut parser = Parser::new();
    assert_eq!(parser.feed(b"data: a\r"), []);
    assert_eq!(parser.feed(b"\n"), []);
    assert_eq!(parser.feed(b"\r\n"), [message("a", "")]);
}

#[test]
fn rule_9_one_leading_bom_is_stripped_even_split_across_chunks() {
    assert_eq!(parse(b"\xEF\xBB\xBFdata: a\n\n"), [message("a", "")]);
    let mut parser = Parser::new();
    let mut events = Vec::new();
    for chunk in [&b"\xEF"[..], b"\xBB", b"\xBF", b"data: a\n\n"] {
        events.extend(parser.feed(chunk));
    }
    assert_eq!(events, [message("a", "")]);
}

#[test]
fn rule_9_a_second_bom_corrupts_the_first_field_name_and_that_line_is_ignored() {
    assert_eq!(parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n"), []);
    assert_eq!(
        parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\ndata: b\n\n"),
        [message("b", "")]
    );
}

#[test]
fn rule_11_an_event_cut_off_by_the_end_of_the_stream_is_discarded() {
    let mut parser = Parser::new();
    assert_eq!(parser.feed(b"data: a\n\ndata: b\n"), [message("a", "")]);
    parser.finish();
    assert_eq!(parser.feed(b"\n"), []);
}

#[test]
fn rule_12_comments_are_ignored_and_counted() {
    let mut parser = Parser::new();
    assert_eq!(
        parser.feed(b":\n: keep-alive\ndata: a\n:x\n\n"),
        [message("a", "")]
    );
    assert_eq!(parser.comments(), 3);
}

#[test]
fn rule_13_data_with_and_without_the_space_and_only_one_space_stripped() {
    assert_eq!(parse(b"data:a\n\n"), [message("a", "")]);
    assert_eq!(parse(b"data: a\n\n"), [message("a", "")]);
    assert_eq!(parse(b"data:  a\n\n"), [message(" a", "")]);
}

#[test]
fn rule_13_a_field_without_a_colon_has_an_empty_value() {
    assert_eq!(parse(b"data\n\n"), [message("", "")]);
    assert_eq!(parse(b"data\ndata\n\n"), [message("\n", "")]);
    assert_eq!(parse(b"data: a\ndata\n\n"), [message("a\n", "")]);
}

#[test]
fn rule_14_field_names_are_case_sensitive_and_unknown_ones_ignored() {
    assert_eq!(parse(b"Data: a\nfoo: b\n\n"), []);
    assert_eq!(parse(b"Event: x\nfoo: b\ndata: a\n\n"), [message("a", "")]);
}

#[test]
fn rule_15_data_lines_join_with_lf_and_one_trailing_lf_is_removed() {
    assert_eq!(
        parse(b"data: a\ndata: b\ndata:\n\n"),
        [message("a\nb\n", "")]
    );
}

#[test]
fn rule_16_a_block_without_data_fires_nothing_and_empty_data_fires_an_empty_message() {
    let mut parser = Parser::new();
    assert_eq!(parser.feed(b"id: 1\nretry: 9\nevent: x\n\n"), []);
    assert_eq!((parser.last_event_id(), parser.retry()), ("1", Some(9)));
    assert_eq!(parser.feed(b"data:\n\n"), [message("", "1")]);
}

#[test]
fn a_closed_stream_says_why_and_when_to_come_back_without_moving_the_resume_point() {
    let mut parser = Parser::new();
    parser.feed(b"id: 1-0\ndata: a\n\n");
    let notice = CloseReason::TokenExpired.notice(2500);
    let events = parser.feed(&notice);
    assert_eq!(
        events,
        [ParsedEvent {
            event_type: CLOSED_EVENT.to_owned(),
            data: r#"{"reason":"token_expired"}"#.to_owned(),
            last_event_id: "1-0".to_owned(),
        }]
    );
    assert_eq!(
        (parser.last_event_id(), parser.retry()),
        ("1-0", Some(2500))
    );
    // Every reason is a JSON object a page can read.
    for reason in [
        CloseReason::SlowConsumer,
        CloseReason::Kicked,
        CloseReason::Shutdown,
        CloseReason::LogUnavailable,
        CloseReason::LogGap,
        CloseReason::ServerFull,
        CloseReason::TooManyStreams,
    ] {
        let event = Parser::new().feed(&reason.notice(1)).remove(0);
        let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["reason"], reason.as_str());
    }
}

#[test]
fn a_refused_stream_says_why_and_moves_a_client_with_no_id_to_where_the_log_stands() {
    let position = EventId::new(1_700_000_000_000, 4);
    let mut fresh = Parser::new();
    let events = fresh.feed(&CloseReason::ServerFull.refusal(2500, Some(position)));
    assert_eq!(
        events,
        [ParsedEvent {
            event_type: CLOSED_EVENT.to_owned(),
            data: r#"{"reason":"server_full"}"#.to_owned(),
            last_event_id: position.to_string(),
        }]
    );
    assert_eq!(fresh.retry(), Some(2500));
    // A client that came with an id keeps it.
    let mut resuming = Parser::new();
    resuming.feed(b"id: 1-0\n\n");
    resuming.feed(&CloseReason::TooManyStreams.refusal(2500, None));
    assert_eq!(resuming.last_event_id(), "1-0");
}

#[test]
fn rule_17_the_event_type_defaults_to_message_and_resets_after_each_event() {
    let events = parse(b"event: note\ndata: a\n\ndata: b\n\nevent:\ndata: c\n\n");
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["note", "message", "message"]);
}

#[test]
fn rule_18_an_id_with_nul_is_ignored_and_ids_stick_across_events() {
    let mut parser = Parser::new();
    let events = parser.feed(b"id: 1\ndata: a\n\nid: 2\0\ndata: b\n\ndata: c\n\n");
    assert_eq!(
        events,
        [message("a", "1"), message("b", "1"), message("c", "1")]
    );
}

#[test]
fn rule_19_an_empty_id_resets_the_last_event_id() {
    for reset in [&b"id:\n\n"[..], b"id\n\n", b"id: \n\n"] {
        let mut parser = Parser::new();
        parser.feed(b"id: 5\n\n");
        assert_eq!(parser.last_event_id(), "5");
        parser.feed(reset);
        assert_eq!(parser.last_event_id(), "", "{reset:?}");
    }
}

#[test]
fn rule_20_an_id_only_block_is_a_checkpoint() {
    let mut parser = Parser::new();
    assert_eq!(parser.feed(b"id: 42\n\n"), []);
    assert_eq!(parser.last_event_id(), "42");
}

#[test]
fn rule_21_retry_accepts_ascii_digits_only() {
    let mut parser = Parser::new();
    parser.feed(b"retry: 3000\n\n");
    for bad in [
        "1.5",
        "-1",
        "3s",
        "3000 ",
        "",
        "1e3",
        "99999999999999999999",
    ] {
        parser.feed(format!("retry: {bad}\n\n").as_bytes());
        assert_eq!(parser.retry(), Some(3000), "retry: {bad:?}");
    }
    parser.feed(b"retry:0042\n");
    assert_eq!(parser.retry(), Some(42));
}

#[test]
fn rule_8_invalid_utf8_becomes_replacement_characters() {
    assert_eq!(
        parse(b"data: \xFFa\xC3\n\n"),
        [message("\u{FFFD}a\u{FFFD}", "")]
    );
}
