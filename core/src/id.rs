//! Event ids: `{ms}-{seq}`, totally ordered, minted from a wall clock that may step back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest wire form an id can have: two `u64`s and a dash.
pub const MAX_ID_LEN: usize = 20 + 1 + 20;

/// An event's id: wall-clock milliseconds and a sequence within that millisecond.
///
/// Ordered first by `ms`, then by `seq`; written on the wire as `"{ms}-{seq}"`, the shape of a
/// Redis stream id. Use [`IdSequencer`] to mint them and [`EventId::from_str`] to read one a
/// client sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// Unix time in milliseconds when the id was minted (never less than the previous id's).
    pub ms: u64,
    /// Position within `ms`.
    pub seq: u64,
}

impl EventId {
    /// The smallest id; no minted id equals it unless the clock read zero.
    pub const MIN: EventId = EventId { ms: 0, seq: 0 };
    /// The largest id.
    pub const MAX: EventId = EventId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// Use to build an id from its parts (tests, the log's key decoding).
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// Use as a storage key: big-endian `ms` then `seq`, so byte order is id order.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.ms.to_be_bytes());
        out[8..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// Use to read a key written by [`EventId::to_bytes`]; `None` unless exactly 16 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let ms: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let seq: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
        if bytes.len() != 16 {
            return None;
        }
        Some(Self::new(u64::from_be_bytes(ms), u64::from_be_bytes(seq)))
    }

    /// The id right after this one (saturating), for exclusive-to-inclusive range bounds.
    pub fn successor(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => Self::new(self.ms, seq),
            None => Self::new(self.ms.saturating_add(1), 0),
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

// JSON (admin API, metrics) shows ids as clients see them, `"ms-seq"`; binary formats (the
// log's records) keep the two integers.
impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            (self.ms, self.seq).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let (ms, seq) = <(u64, u64)>::deserialize(d)?;
            Ok(Self::new(ms, seq))
        }
    }
}

/// Why a client-supplied id could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// The id was the empty string.
    #[error("event id is empty")]
    Empty,
    /// The id is longer than any id Herald mints.
    #[error("event id is longer than {MAX_ID_LEN} characters")]
    TooLong,
    /// The id is not `{ms}-{seq}` with both parts decimal digits that fit in 64 bits.
    #[error("event id {0:?} is not of the form <ms>-<seq> (for example 1700000000000-0)")]
    Malformed(String),
}

impl FromStr for EventId {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(IdParseError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(IdParseError::TooLong);
        }
        let malformed = || IdParseError::Malformed(s.to_owned());
        let (ms, seq) = s.split_once('-').ok_or_else(malformed)?;
        let digits = |part: &str| -> Result<u64, IdParseError> {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            part.parse().map_err(|_| malformed())
        };
        Ok(Self::new(digits(ms)?, digits(seq)?))
    }
}

/// Mints ids that only go up, whatever the wall clock does.
///
/// Seed it with the last id in the log at start so ids are never reused across restarts.
#[derive(Debug, Clone)]
pub struct IdSequencer {
    last: Option<EventId>,
}

impl IdSequencer {
    /// Use at start-up with the last id the log holds (`None` for an empty log).
    pub fn new(last: Option<EventId>) -> Self {
        Self { last }
    }

    /// Mints the next id from the wall clock in unix milliseconds.
    ///
    /// A clock that steps back (or stands still) keeps the previous `ms` and bumps `seq`.
    pub fn next(&mut self, wall_ms: u64) -> EventId {
        let id = match self.last {
            Some(last) if wall_ms <= last.ms => last.successor(),
            _ => EventId::new(wall_ms, 0),
        };
        self.last = Some(id);
        id
    }

    /// Records an id minted elsewhere (a shared log's sequencer, in cluster mode), so that
    /// `last` and resume checks know of it. Never lowers the last id.
    pub fn observe(&mut self, id: EventId) {
        if self.last.is_none_or(|last| id > last) {
            self.last = Some(id);
        }
    }

    /// The last id minted (or the seed), if any.
    pub fn last(&self) -> Option<EventId> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_wire_form() {
        let id = EventId::new(1_700_000_000_123, 42);
        assert_eq!(id.to_string(), "1700000000123-42");
        assert_eq!("1700000000123-42".parse::<EventId>(), Ok(id));
        assert_eq!(EventId::from_bytes(&id.to_bytes()), Some(id));
    }

    #[test]
    fn malformed_ids_are_errors_not_panics() {
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1",
            "a-1",
            "1-b",
            "1--2",
            "+1-2",
            "1-2-3",
            " 1-2",
            "1-2 ",
            "99999999999999999999-0",
            "1-99999999999999999999",
            "１-2",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            "1".repeat(100).parse::<EventId>(),
            Err(IdParseError::TooLong)
        );
    }

    #[test]
    fn json_shows_ids_in_their_wire_form() {
        let id = EventId::new(12, 3);
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"12-3\"");
        assert_eq!(serde_json::from_str::<EventId>("\"12-3\"").unwrap(), id);
        assert!(serde_json::from_str::<EventId>("\"x\"").is_err());
    }

    #[test]
    fn byte_order_is_id_order() {
        let a = EventId::new(1, u64::MAX);
        let b = EventId::new(2, 0);
        assert!(a < b);
        assert!(a.to_bytes() < b.to_bytes());
        assert_eq!(EventId::from_bytes(&[0; 15]), None);
        assert_eq!(EventId::from_bytes(&[0; 17]), None);
    }

    #[test]
    fn sequencer_never_goes_backwards_when_the_clock_does() {
        let mut seq = IdSequencer::new(None);
        let a = seq.next(1000);
        let b = seq.next(1000);
        let c = seq.next(900);
        let d = seq.next(1001);
        assert_eq!(a, EventId::new(1000, 0));
        assert_eq!(b, EventId::new(1000, 1));
        assert_eq!(c, EventId::new(1000, 2));
        assert_eq!(d, EventId::new(1001, 0));
    }

    #[test]
    fn sequencer_seeded_after_restart_continues_above_the_seed() {
        let mut seq = IdSequencer::new(Some(EventId::new(5000, 7)));
        assert_eq!(seq.next(4000), EventId::new(5000, 8));
        assert_eq!(seq.next(6000), EventId::new(6000, 0));
    }
}
