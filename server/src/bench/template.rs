//! What the load generator sends: URL and body templates, and each event's data
//! (`{"seq":K,"t":MICROS,"pad":"xxx..."}`), which the subscribers decode back.

use std::fmt::Write as _;

/// The default publish body: Herald's `POST /publish`.
pub const DEFAULT_BODY_TEMPLATE: &str = r#"{"topics":["{topic}"],"data":{data}}"#;

/// A string with `{url}`, `{topic}` and `{data}` placeholders, split once so that expanding it
/// per event is a few copies.
///
/// Any other text, braces included, is literal (a JSON body template is mostly braces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Url,
    Topic,
    Data,
}

/// What the placeholders stand for.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    /// `{url}`: the `--url` option, without a trailing slash.
    pub url: &'a str,
    /// `{topic}`: the `--topic` option.
    pub topic: &'a str,
    /// `{data}`: the event's data.
    pub data: &'a str,
}

impl Template {
    /// Splits `text` at its placeholders.
    pub fn parse(text: &str) -> Self {
        const PLACEHOLDERS: [(&str, Part); 3] = [
            ("{url}", Part::Url),
            ("{topic}", Part::Topic),
            ("{data}", Part::Data),
        ];
        let mut parts = Vec::new();
        let mut text_start = 0;
        let mut at = 0;
        while at < text.len() {
            let found = PLACEHOLDERS
                .iter()
                .find(|(name, _)| text[at..].starts_with(name));
            match found {
                Some((name, part)) => {
                    if text_start < at {
                        parts.push(Part::Text(text[text_start..at].to_owned()));
                    }
                    parts.push(part.clone());
                    at += name.len();
                    text_start = at;
                }
                None => at += text[at..].chars().next().map_or(1, char::len_utf8),
            }
        }
        if text_start < text.len() {
            parts.push(Part::Text(text[text_start..].to_owned()));
        }
        Self { parts }
    }

    /// Appends the template with its placeholders replaced to `out`.
    pub fn expand_into(&self, values: Values<'_>, out: &mut String) {
        for part in &self.parts {
            out.push_str(match part {
                Part::Text(t) => t,
                Part::Url => values.url,
                Part::Topic => values.topic,
                Part::Data => values.data,
            });
        }
    }

    /// The template with its placeholders replaced.
    pub fn expand(&self, values: Values<'_>) -> String {
        let mut out = String::new();
        self.expand_into(values, &mut out);
        out
    }
}

/// Writes event `seq`'s data, sent `t_us` microseconds after the run started, padded with `x`
/// to `payload` bytes (or as short as it can be when `payload` is smaller).
pub fn write_event_data(seq: u32, t_us: u64, payload: usize, out: &mut String) {
    let start = out.len();
    let _ = write!(out, r#"{{"seq":{seq},"t":{t_us},"pad":""#);
    let used = out.len() - start + r#""}"#.len();
    out.extend(std::iter::repeat_n('x', payload.saturating_sub(used)));
    out.push_str(r#""}"#);
}

/// Reads `seq` and `t` back from an event's data, whatever the key order and spacing (a hub
/// may re-serialize the JSON); `None` for data the load generator did not send.
pub fn read_event_data(data: &str) -> Option<(u32, u64)> {
    let seq = number_after(data, r#""seq""#)?;
    let t = number_after(data, r#""t""#)?;
    Some((u32::try_from(seq).ok()?, t))
}

fn number_after(data: &str, key: &str) -> Option<u64> {
    let mut from = 0;
    loop {
        let at = from + find(&data.as_bytes()[from..], key.as_bytes())? + key.len();
        // The key inside a string value is not followed by a colon: look further.
        let Some(rest) = data[at..].trim_start().strip_prefix(':') else {
            from = at;
            continue;
        };
        let rest = rest.trim_start();
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        return rest[..digits].parse().ok();
    }
}

/// Where `needle` (non-empty, starting with a quote) first occurs in `hay`.
///
/// Jumps from quote to quote: a hub may put the long padding first, and comparing at every
/// byte of it cost a fifth of the load generator's CPU.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(i) = hay[from..].iter().position(|&b| b == first) {
        let at = from + i;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: Values<'static> = Values {
        url: "http://h:1",
        topic: "news",
        data: r#"{"a":1}"#,
    };

    #[test]
    fn the_default_body_template_makes_a_herald_publish_body() {
        let body = Template::parse(DEFAULT_BODY_TEMPLATE).expand(VALUES);
        assert_eq!(body, r#"{"topics":["news"],"data":{"a":1}}"#);
    }

    #[test]
    fn placeholders_expand_anywhere_and_other_braces_stay() {
        let t = Template::parse("{url}/events?topic={topic}&x={nope}{data}{topic}");
        assert_eq!(
            t.expand(VALUES),
            r#"http://h:1/events?topic=news&x={nope}{"a":1}news"#
        );
        assert_eq!(Template::parse("{data}").expand(VALUES), r#"{"a":1}"#);
        assert_eq!(Template::parse("é{").expand(VALUES), "é{");
        assert_eq!(Template::parse("").expand(VALUES), "");
    }

    #[test]
    fn event_data_is_padded_to_the_payload_size_and_reads_back() {
        let mut out = String::new();
        write_event_data(42, 1_234_567, 64, &mut out);
        assert_eq!(out.len(), 64);
        assert!(out.starts_with(r#"{"seq":42,"t":1234567,"pad":"xxx"#));
        assert_eq!(read_event_data(&out), Some((42, 1_234_567)));
        serde_json::from_str::<serde_json::Value>(&out).unwrap();

        out.clear();
        write_event_data(7, 1, 0, &mut out);
        assert_eq!(out, r#"{"seq":7,"t":1,"pad":""}"#);
    }

    #[test]
    fn event_data_reads_back_after_reserialization() {
        assert_eq!(
            read_event_data(r#"{"pad":"xx","seq":3,"t":99}"#),
            Some((3, 99))
        );
        assert_eq!(read_event_data(r#"{ "seq" : 3, "t" : 99 }"#), Some((3, 99)));
        assert_eq!(read_event_data("hello"), None);
        assert_eq!(
            read_event_data(r#"{"pad":"\"seq","seq":4,"t":1}"#),
            Some((4, 1))
        );
        assert_eq!(read_event_data(r#"{"seq":-1,"t":5}"#), None);
        assert_eq!(read_event_data(r#"{"seq":99999999999,"t":5}"#), None);
    }
}
