//! The on-disk form of one event: a format version byte, then a bincode 2 record.
//!
//! Every log implementation (sled now, Redis later) stores events through this module, so a
//! change of record layout is one new version number here and a decoder for the old one.

use herald_core::{Event, EventId, EventType, Target, Topic, UserId};
use serde::{Deserialize, Serialize};

/// The record layout written by [`encode_event`]; the first byte of every stored value.
pub const RECORD_VERSION: u8 = 1;

/// The largest encoded record accepted, in bytes.
///
/// Also the bincode decode limit: a corrupted length prefix then fails to decode instead of
/// asking the allocator for gigabytes.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_RECORD_BYTES>,
> {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

/// Why a record could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The stored value is empty: not even a version byte.
    #[error("record is empty")]
    Empty,
    /// The version byte names a layout this build does not know.
    #[error("record has format version {found}, this build reads version {RECORD_VERSION}")]
    UnknownVersion {
        /// The version byte found.
        found: u8,
    },
    /// bincode refused the bytes (truncated, bad length, invalid name, over the limit, ...).
    #[error("record does not decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The record decoded but bytes were left over, so it is not what was written.
    #[error("record has {extra} trailing bytes")]
    TrailingBytes {
        /// How many bytes followed the record.
        extra: usize,
    },
    /// bincode could not encode the event.
    #[error("record does not encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The encoded event is larger than [`MAX_RECORD_BYTES`].
    #[error("record is {size} bytes, over the limit of {MAX_RECORD_BYTES}")]
    TooLarge {
        /// The encoded size.
        size: usize,
    },
}

// The id is the storage key, so the record leaves it out. Encoding borrows the event's parts
// (no clones on the hot path); decoding fills the owned twin, which has the same serde shape.
#[derive(Serialize)]
struct EventRecordRef<'a> {
    topics: &'a [Topic],
    users: &'a [UserId],
    broadcast: bool,
    event_type: Option<&'a EventType>,
    data: &'a str,
}

#[derive(Deserialize)]
struct EventRecord {
    topics: Vec<Topic>,
    users: Vec<UserId>,
    broadcast: bool,
    event_type: Option<EventType>,
    data: String,
}

/// Encodes `event` (all but its id, which is the key) as a versioned record.
pub fn encode_event(event: &Event) -> Result<Vec<u8>, CodecError> {
    let record = EventRecordRef {
        topics: &event.target.topics,
        users: &event.target.users,
        broadcast: event.target.broadcast,
        event_type: event.event_type.as_ref(),
        data: &event.data,
    };
    let mut out = Vec::with_capacity(event.data.len() + 64);
    out.push(RECORD_VERSION);
    bincode::serde::encode_into_std_write(&record, &mut out, config())?;
    if out.len() > MAX_RECORD_BYTES {
        return Err(CodecError::TooLarge { size: out.len() });
    }
    Ok(out)
}

/// Decodes a record written by [`encode_event`] and stored under `id`.
pub fn decode_event(id: EventId, bytes: &[u8]) -> Result<Event, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != RECORD_VERSION {
        return Err(CodecError::UnknownVersion { found: version });
    }
    let (record, used): (EventRecord, usize) = bincode::serde::decode_from_slice(body, config())?;
    if used != body.len() {
        return Err(CodecError::TrailingBytes {
            extra: body.len() - used,
        });
    }
    Ok(Event {
        id,
        target: Target {
            topics: record.topics,
            users: record.users,
            broadcast: record.broadcast,
        },
        event_type: record.event_type,
        data: record.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            id: EventId::new(1_700_000_000_000, 3),
            target: Target {
                topics: vec![
                    Topic::new("news/eu").unwrap(),
                    Topic::new("orders").unwrap(),
                ],
                users: vec![UserId::new("alice").unwrap()],
                broadcast: false,
            },
            event_type: Some(EventType::new("update").unwrap()),
            data: "line one\nline two \u{1F600}".to_owned(),
        }
    }

    #[test]
    fn events_round_trip_through_the_codec() {
        let event = sample();
        let bytes = encode_event(&event).unwrap();
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(decode_event(event.id, &bytes).unwrap(), event);
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let bytes = encode_event(&sample()).unwrap();
        let id = EventId::new(1, 0);
        assert!(matches!(decode_event(id, &[]), Err(CodecError::Empty)));
        let mut wrong_version = bytes.clone();
        wrong_version[0] = 99;
        assert!(matches!(
            decode_event(id, &wrong_version),
            Err(CodecError::UnknownVersion { found: 99 })
        ));
        for cut in 1..bytes.len() {
            assert!(
                decode_event(id, &bytes[..cut]).is_err(),
                "cut at {cut} decoded"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode_event(id, &trailing),
            Err(CodecError::TrailingBytes { extra: 1 })
        ));
        // A topic name with a control character is refused by Topic's own validation.
        let mut bad_name = bytes.clone();
        let at = bad_name.windows(6).position(|w| w == b"orders").unwrap();
        bad_name[at] = b'\n';
        assert!(matches!(
            decode_event(id, &bad_name),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn a_corrupt_length_is_refused_without_a_giant_allocation() {
        // Version, then a varint length of u64::MAX for the topics list.
        let mut bytes = vec![RECORD_VERSION, 0xFF];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode_event(EventId::MIN, &bytes),
            Err(CodecError::Decode(_))
        ));
        // The same for the data string, after an otherwise valid prefix.
        let mut bytes = vec![RECORD_VERSION, 0, 0, 0, 0, 0xFD];
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            decode_event(EventId::MIN, &bytes),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn oversized_events_are_refused_at_encoding() {
        let mut event = sample();
        event.data = "x".repeat(MAX_RECORD_BYTES);
        assert!(encode_event(&event).is_err());
    }
}
