//! Validated names: topics, topic patterns, user ids and event types.
//!
//! Everything here is checked on construction, so a value that exists can always be indexed,
//! stored and written into a frame.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest topic, pattern, user id or event type accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// The topic that carries admin events; no client can name it (names starting `$` are reserved).
pub const ADMIN_TOPIC: &str = "$herald/admin";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name was empty.
    #[error("{kind} is empty")]
    Empty {
        /// What was being named (`topic`, `user id`, ...).
        kind: &'static str,
    },
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("{kind} {name:?} is longer than {MAX_NAME_LEN} bytes")]
    TooLong {
        /// What was being named.
        kind: &'static str,
        /// The name, cut to a readable length.
        name: String,
    },
    /// The name holds a control character (CR, LF, NUL, ...).
    #[error("{kind} {name:?} contains a control character")]
    ControlCharacter {
        /// What was being named.
        kind: &'static str,
        /// The offending name.
        name: String,
    },
    /// The name starts with `$`, which is reserved for Herald's own topics.
    #[error("{kind} {name:?} is reserved (names starting with '$' belong to Herald)")]
    Reserved {
        /// What was being named.
        kind: &'static str,
        /// The offending name.
        name: String,
    },
    /// A `*` appears somewhere other than a trailing `/*` (or a lone `*`).
    #[error("topic pattern {0:?} may only use '*' as a whole trailing segment, as in 'news/*'")]
    BadWildcard(String),
    /// A topic (not a pattern) holds a `*`: no subscription could name it exactly, and a
    /// publisher who wrote `news/*` meant every news topic, which is not what it would do.
    #[error(
        "topic {0:?} contains '*': events go to exact topics; patterns such as 'news/*' are for subscribing"
    )]
    WildcardTopic(String),
    /// An event type a browser's `EventSource` or Herald gives its own meaning to.
    #[error(
        "event type {0:?} is reserved: EventSource fires 'error' and 'open' itself (a page's \
         onerror would see the event), and types starting with 'herald.' are Herald's notices"
    )]
    ReservedEventType(String),
}

fn check_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > MAX_NAME_LEN {
        let cut: String = name.chars().take(40).collect();
        return Err(NameError::TooLong { kind, name: cut });
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $reserve:expr, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(Arc<str>);

        impl $ty {
            /// Validates `name` (non-empty, bounded, no control characters, and the rules
            /// of its kind).
            pub fn new(name: &str) -> Result<Self, NameError> {
                let checked = Self::stored(name)?;
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(name)?;
                Ok(checked)
            }

            /// Validates a name read back from storage, by the rules of every version that
            /// could have written it (so a rule added since does not make old records
            /// unreadable).
            fn stored(name: &str) -> Result<Self, NameError> {
                check_name($kind, name)?;
                if $reserve && name.starts_with('$') {
                    return Err(NameError::Reserved { kind: $kind, name: name.to_owned() });
                }
                Ok(Self(Arc::from(name)))
            }

            /// A name Herald itself defines; the caller guarantees it is valid.
            #[allow(dead_code)] // not every name type has built-in names
            pub(crate) fn from_static(name: &'static str) -> Self {
                debug_assert!(check_name($kind, name).is_ok());
                Self(Arc::from(name))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                // Stored records may hold the reserved admin topic only if written by Herald
                // itself, which never logs admin events; refuse anything invalid.
                Self::stored(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A topic events are published to, such as `orders` or `news/eu`.
    Topic,
    "topic",
    true,
    |name| match name.contains('*') {
        true => Err(NameError::WildcardTopic(name.to_owned())),
        false => Ok(()),
    }
);
name_type!(
    /// The id of an authenticated user: an event to a user reaches all their connections.
    UserId,
    "user id",
    false,
    |_| Ok(())
);
name_type!(
    /// An event's type, written as the `event:` field (absent means `message`).
    EventType,
    "event type",
    false,
    |name| match name == "error" || name == "open" || name.starts_with("herald.") {
        true => Err(NameError::ReservedEventType(name.to_owned())),
        false => Ok(()),
    }
);

impl Topic {
    /// The reserved topic admin events travel on; only the server may subscribe to it.
    pub fn admin() -> Self {
        Self::from_static(ADMIN_TOPIC)
    }

    /// True for Herald's own reserved topics.
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }
}

/// What a subscription names: one exact topic, or every topic under a prefix (`news/*`).
///
/// A lone `*` matches every (non-system) topic.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TopicPattern {
    /// Exactly this topic.
    Exact(Topic),
    /// Every topic starting with this prefix (which ends with `/`, or is empty for `*`).
    Prefix(Arc<str>),
}

impl TopicPattern {
    /// Parses `orders`, `news/*` or `*`; rejects reserved names and misplaced wildcards.
    pub fn parse(pattern: &str) -> Result<Self, NameError> {
        check_name("topic pattern", pattern)?;
        if pattern.starts_with('$') {
            return Err(NameError::Reserved {
                kind: "topic pattern",
                name: pattern.to_owned(),
            });
        }
        if pattern == "*" {
            return Ok(Self::Prefix(Arc::from("")));
        }
        if let Some(prefix) = pattern.strip_suffix("/*") {
            if prefix.is_empty() || prefix.contains('*') {
                return Err(NameError::BadWildcard(pattern.to_owned()));
            }
            return Ok(Self::Prefix(Arc::from(&pattern[..pattern.len() - 1])));
        }
        if pattern.contains('*') {
            return Err(NameError::BadWildcard(pattern.to_owned()));
        }
        Ok(Self::Exact(Topic::new(pattern)?))
    }

    /// The pattern admin connections hold.
    pub fn admin() -> Self {
        Self::Exact(Topic::admin())
    }

    /// True when an event on `topic` is meant for this pattern.
    pub fn matches(&self, topic: &Topic) -> bool {
        match self {
            Self::Exact(t) => t == topic,
            Self::Prefix(p) => !topic.is_system() && topic.as_str().starts_with(&**p),
        }
    }

    /// True when every topic this pattern matches is also matched by `grant`
    /// (use to check a subscription against what a token allows).
    pub fn is_within(&self, grant: &TopicPattern) -> bool {
        match (self, grant) {
            (_, Self::Exact(g)) => matches!(self, Self::Exact(t) if t == g),
            (Self::Exact(t), Self::Prefix(_)) => grant.matches(t),
            (Self::Prefix(p), Self::Prefix(g)) => p.starts_with(&**g),
        }
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(t) => f.write_str(t.as_str()),
            Self::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

impl fmt::Debug for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Serialize for TopicPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_on_construction() {
        assert!(Topic::new("orders").is_ok());
        assert!(Topic::new("news/eu").is_ok());
        assert_eq!(Topic::new(""), Err(NameError::Empty { kind: "topic" }));
        assert!(matches!(
            Topic::new("a\nb"),
            Err(NameError::ControlCharacter { .. })
        ));
        assert!(matches!(
            Topic::new(&"x".repeat(201)),
            Err(NameError::TooLong { .. })
        ));
        assert!(matches!(
            Topic::new("$herald/admin"),
            Err(NameError::Reserved { .. })
        ));
        for wild in ["news/*", "*", "a*b"] {
            assert_eq!(
                Topic::new(wild),
                Err(NameError::WildcardTopic(wild.to_owned()))
            );
        }
        assert!(UserId::new("$weird-but-fine").is_ok());
        assert!(UserId::new("star*user").is_ok());
        assert!(matches!(
            EventType::new("a\rb"),
            Err(NameError::ControlCharacter { .. })
        ));
        for reserved in ["error", "open", "herald.reset", "herald.closed", "herald.x"] {
            assert_eq!(
                EventType::new(reserved),
                Err(NameError::ReservedEventType(reserved.to_owned()))
            );
        }
        for fine in ["Error", "opened", "herald", "heraldry.x", "message"] {
            assert!(EventType::new(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn a_stored_topic_is_read_back_by_the_rules_it_was_written_under() {
        // Topics with '*' were accepted once; records holding one stay readable.
        let old: Topic = serde_json::from_str(r#""news/*""#).unwrap();
        assert_eq!(old.as_str(), "news/*");
        assert!(serde_json::from_str::<Topic>(r#""""#).is_err());
        assert!(serde_json::from_str::<Topic>(r#""$herald/admin""#).is_err());
    }

    #[test]
    fn patterns_match_exact_topics_and_prefixes() {
        let news = TopicPattern::parse("news/*").unwrap();
        let all = TopicPattern::parse("*").unwrap();
        let orders = TopicPattern::parse("orders").unwrap();
        let t = |s| Topic::new(s).unwrap();
        assert!(news.matches(&t("news/eu")));
        assert!(news.matches(&t("news/eu/fr")));
        assert!(!news.matches(&t("news")));
        assert!(!news.matches(&t("newsroom")));
        assert!(orders.matches(&t("orders")));
        assert!(!orders.matches(&t("orders/1")));
        assert!(all.matches(&t("anything")));
        assert!(!all.matches(&Topic::admin()));
        assert_eq!(news.to_string(), "news/*");
        assert_eq!(all.to_string(), "*");
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "",
            "/*",
            "a*",
            "a/*/b",
            "*/x",
            "a/**",
            "$herald/admin",
            "$x/*",
        ] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn grants_cover_narrower_patterns_only() {
        let p = |s| TopicPattern::parse(s).unwrap();
        assert!(p("news/eu").is_within(&p("news/*")));
        assert!(p("news/eu/*").is_within(&p("news/*")));
        assert!(p("news/*").is_within(&p("news/*")));
        assert!(!p("news/*").is_within(&p("news/eu/*")));
        assert!(!p("news/*").is_within(&p("news/eu")));
        assert!(p("orders").is_within(&p("orders")));
        assert!(!p("orders").is_within(&p("order")));
        assert!(p("x/*").is_within(&p("*")));
        assert!(!p("*").is_within(&p("x/*")));
    }
}
