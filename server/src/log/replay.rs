//! Reading a page of history for one subscription through the index trees.
//!
//! Each part of the subscription is a key range of ids in ascending order: one per exact topic,
//! one per topic found under a prefix pattern, one for the user, one for broadcasts. A k-way
//! merge of those ranges yields the matching ids in id order without touching events that do
//! not match, so 1,000 matching events out of 1,000,000 cost about 1,000 index steps and 1,000
//! event lookups.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use herald_core::{Event, EventId, HistoryPage, HistoryRequest, Subscription, TopicPattern};

use super::LogError;
use super::codec::{self, CodecError};
use super::sled_log::{id_of_key, index_key};

/// Above this many ranges to merge (a prefix pattern over very many topics), reading the
/// events tree in id order and filtering is cheaper, and its memory stays bounded: every open
/// sled iterator holds on to a tree node.
const MAX_MERGE_SOURCES: usize = 256;

/// The trees a read needs.
pub(super) struct Trees<'a> {
    pub events: &'a sled::Tree,
    pub by_topic: &'a sled::Tree,
    pub by_user: &'a sled::Tree,
    pub broadcast: &'a sled::Tree,
}

/// Reads one page for `req`; nothing at or below `floor` is considered (retention removed it,
/// and index entries of undecodable records may linger there).
pub(super) fn read_page(
    trees: &Trees<'_>,
    floor: Option<EventId>,
    req: &HistoryRequest,
    on_corrupt: &mut dyn FnMut(EventId, &CodecError),
) -> Result<HistoryPage, LogError> {
    let after = req.after.max(floor);
    if after.is_some_and(|after| after >= req.through) {
        return Ok(HistoryPage::default());
    }
    let lo = after.map_or(EventId::MIN, EventId::successor);
    let hi = req.through;
    let mut page = Collector {
        subscription: &req.subscription,
        max_events: req.max_events,
        max_bytes: req.max_bytes,
        bytes: 0,
        page: HistoryPage::default(),
        on_corrupt,
    };
    match index_ranges(trees, &req.subscription, lo, hi)? {
        Some(ranges) => merge(trees.events, ranges, &mut page)?,
        None => scan(trees.events, lo, hi, &mut page)?,
    }
    Ok(page.page)
}

fn name_range(tree: &sled::Tree, name: &[u8], lo: EventId, hi: EventId) -> sled::Iter {
    tree.range(index_key(name, lo)..=index_key(name, hi))
}

/// The ranges to merge, or `None` when there are too many and a filtered scan is better.
fn index_ranges(
    trees: &Trees<'_>,
    subscription: &Subscription,
    lo: EventId,
    hi: EventId,
) -> Result<Option<Vec<sled::Iter>>, LogError> {
    // A set, because `news/*` and `news/eu` name the same topic twice.
    let mut topics: BTreeSet<Vec<u8>> = BTreeSet::new();
    for pattern in &subscription.patterns {
        match pattern {
            TopicPattern::Exact(topic) => {
                topics.insert(topic.as_str().as_bytes().to_vec());
            }
            TopicPattern::Prefix(prefix) => {
                if !topics_under(trees.by_topic, prefix.as_bytes(), &mut topics)? {
                    return Ok(None);
                }
            }
        }
        if topics.len() > MAX_MERGE_SOURCES {
            return Ok(None);
        }
    }
    let mut ranges: Vec<sled::Iter> =
        topics.iter().map(|topic| name_range(trees.by_topic, topic, lo, hi)).collect();
    if let Some(user) = &subscription.user {
        ranges.push(name_range(trees.by_user, user.as_str().as_bytes(), lo, hi));
    }
    ranges.push(trees.broadcast.range(lo.to_bytes()..=hi.to_bytes()));
    Ok(Some(ranges))
}

/// Adds every topic under `prefix` to `topics`, one seek per distinct topic (each seek jumps
/// over all of the previous topic's entries). Returns false once there are too many to merge.
fn topics_under(
    by_topic: &sled::Tree,
    prefix: &[u8],
    topics: &mut BTreeSet<Vec<u8>>,
) -> Result<bool, LogError> {
    let mut cursor = prefix.to_vec();
    loop {
        let Some(item) = by_topic.range(cursor.as_slice()..).next() else {
            return Ok(true);
        };
        let (key, _) = item?;
        if !key.starts_with(prefix) {
            return Ok(true);
        }
        let Some(name_len) = key.len().checked_sub(17).filter(|&n| key[n] == 0) else {
            // Not a key this log writes: step past it.
            cursor = key.to_vec();
            cursor.push(0);
            continue;
        };
        let name = &key[..name_len];
        // Prefix patterns never match Herald's own `$` topics (see `TopicPattern::matches`).
        if !name.starts_with(b"$") {
            topics.insert(name.to_vec());
            if topics.len() > MAX_MERGE_SOURCES {
                return Ok(false);
            }
        }
        // 0x01 sorts after this topic's `0x00` separator and before any longer topic name
        // (names hold no control characters), so the next seek lands on the next topic.
        cursor = name.to_vec();
        cursor.push(1);
    }
}

fn next_id(range: &mut sled::Iter) -> Result<Option<EventId>, LogError> {
    for item in range {
        let (key, _) = item?;
        if let Some(id) = id_of_key(&key) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// Merges the ranges in id order, reading each distinct id once.
fn merge(
    events: &sled::Tree,
    mut ranges: Vec<sled::Iter>,
    page: &mut Collector<'_, '_>,
) -> Result<(), LogError> {
    let mut heap = BinaryHeap::with_capacity(ranges.len());
    for (source, range) in ranges.iter_mut().enumerate() {
        if let Some(id) = next_id(range)? {
            heap.push(Reverse((id, source)));
        }
    }
    let mut previous = None;
    while let Some(Reverse((id, source))) = heap.pop() {
        if let Some(next) = next_id(&mut ranges[source])? {
            heap.push(Reverse((next, source)));
        }
        if previous == Some(id) {
            continue; // the same event through another topic, the user, or broadcast
        }
        previous = Some(id);
        // Missing: trimmed since the index was read. Skip it.
        let Some(value) = events.get(id.to_bytes())? else { continue };
        if page.offer(id, &value) == Offer::Full {
            break;
        }
    }
    Ok(())
}

/// Reads the events tree in id order, keeping what matches.
fn scan(
    events: &sled::Tree,
    lo: EventId,
    hi: EventId,
    page: &mut Collector<'_, '_>,
) -> Result<(), LogError> {
    for item in events.range(lo.to_bytes()..=hi.to_bytes()) {
        let (key, value) = item?;
        let Some(id) = EventId::from_bytes(&key) else { continue };
        if page.offer(id, &value) == Offer::Full {
            break;
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Offer {
    Taken,
    Skipped,
    Full,
}

/// Builds a page within its limits.
struct Collector<'s, 'c> {
    subscription: &'s Subscription,
    max_events: usize,
    max_bytes: usize,
    bytes: usize,
    page: HistoryPage,
    /// Told about every record that fails to decode, before it is skipped.
    on_corrupt: &'c mut (dyn FnMut(EventId, &CodecError) + 'c),
}

impl Collector<'_, '_> {
    fn offer(&mut self, id: EventId, value: &[u8]) -> Offer {
        let event: Event = match codec::decode_event(id, value) {
            Ok(event) => event,
            Err(error) => {
                (self.on_corrupt)(id, &error);
                return Offer::Skipped;
            }
        };
        // The indices only narrow the search; the subscription decides (exactly as live
        // delivery does).
        if !self.subscription.matches(&event) {
            return Offer::Skipped;
        }
        let full = self.page.events.len() >= self.max_events
            || self.bytes.saturating_add(event.data.len()) > self.max_bytes;
        // A page always takes its first event, however large, so a replay always progresses.
        if full && !self.page.events.is_empty() {
            self.page.more = true;
            return Offer::Full;
        }
        self.bytes += event.data.len();
        self.page.events.push(event);
        Offer::Taken
    }
}
