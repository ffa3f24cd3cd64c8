//! Reading a page of history for one subscription through the index trees.
//!
//! Each part of the subscription is a stream of ids in ascending order, read from one name's
//! index entries: one per exact topic, one per topic found under a prefix pattern, one for the
//! user, one for broadcasts. A k-way merge of those streams yields the matching ids in id order
//! without touching events that do not match, so 1,000 matching events out of 1,000,000 cost
//! about 1,000 index steps and 1,000 event lookups.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use herald_core::{Event, EventId, HistoryPage, HistoryRequest, Subscription, TopicPattern};

use super::LogError;
use super::codec::{self, CodecError};
use super::sled_log::{id_of_key, index_key};

/// Above this many streams to merge (a prefix pattern over very many topics), reading the
/// events tree in id order and filtering is cheaper, and its memory stays bounded: every open
/// sled iterator holds on to a tree node.
const MAX_MERGE_SOURCES: usize = 256;

/// Most records one page reads by scanning. A page stops there with what matched so far
/// (nothing, for a pattern that matches few of the records) and says where it stopped: a
/// broad pattern's resume over a large log is read a few milliseconds at a time, paced like
/// any replay, and a client that leaves stops it at the next page.
pub(super) const SCAN_BUDGET: usize = 10_000;

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
    match index_sources(trees, &req.subscription, lo, hi)? {
        Some(sources) => merge(trees.events, sources, &mut page)?,
        None => scan(trees.events, lo, hi, &mut page)?,
    }
    Ok(page.page)
}

/// One name's index entries (or the broadcasts') from `lo` on, read as a stream of ids.
struct Source {
    entries: sled::Iter,
    ids: sled::IVec,
    at: usize,
    lo: EventId,
    hi: EventId,
    /// The current entry reaches past `hi`: no later entry is needed.
    last_entry: bool,
}

impl Source {
    /// Entries whose last id is at least `lo`: those holding ids in `lo..=hi`, plus at most
    /// one past `hi`, where the stream stops.
    fn new(tree: &sled::Tree, name: Option<&[u8]>, lo: EventId, hi: EventId) -> Self {
        let entries = match name {
            Some(name) => tree.range(index_key(name, lo)..=index_key(name, EventId::MAX)),
            None => tree.range(lo.to_bytes()..),
        };
        Self {
            entries,
            ids: sled::IVec::default(),
            at: 0,
            lo,
            hi,
            last_entry: false,
        }
    }

    fn next_id(&mut self) -> Result<Option<EventId>, LogError> {
        loop {
            while let Some(bytes) = self.ids.get(self.at..self.at + 16) {
                self.at += 16;
                match EventId::from_bytes(bytes) {
                    Some(id) if id < self.lo => continue,
                    Some(id) if id <= self.hi => return Ok(Some(id)),
                    _ => return Ok(None),
                }
            }
            if self.last_entry {
                return Ok(None);
            }
            let Some(item) = self.entries.next() else {
                return Ok(None);
            };
            let (key, ids) = item?;
            if ids.len() % 16 != 0 {
                // Not a list this log writes: its ids cannot be trusted, so skip the entry.
                tracing::warn!(key = ?key, "skipping a malformed index entry");
                continue;
            }
            self.last_entry = id_of_key(&key).is_none_or(|last| last >= self.hi);
            self.ids = ids;
            self.at = 0;
        }
    }
}

/// The sources to merge, or `None` when there are too many and a filtered scan is better.
fn index_sources(
    trees: &Trees<'_>,
    subscription: &Subscription,
    lo: EventId,
    hi: EventId,
) -> Result<Option<Vec<Source>>, LogError> {
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
    let mut sources: Vec<Source> = topics
        .iter()
        .map(|topic| Source::new(trees.by_topic, Some(topic), lo, hi))
        .collect();
    if let Some(user) = &subscription.user {
        sources.push(Source::new(
            trees.by_user,
            Some(user.as_str().as_bytes()),
            lo,
            hi,
        ));
    }
    sources.push(Source::new(trees.broadcast, None, lo, hi));
    Ok(Some(sources))
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

/// Merges the sources in id order, reading each distinct id once.
fn merge(
    events: &sled::Tree,
    mut sources: Vec<Source>,
    page: &mut Collector<'_, '_>,
) -> Result<(), LogError> {
    let mut heap = BinaryHeap::with_capacity(sources.len());
    for (index, source) in sources.iter_mut().enumerate() {
        if let Some(id) = source.next_id()? {
            heap.push(Reverse((id, index)));
        }
    }
    let mut previous = None;
    while let Some(Reverse((id, source))) = heap.pop() {
        if let Some(next) = sources[source].next_id()? {
            heap.push(Reverse((next, source)));
        }
        if previous == Some(id) {
            continue; // the same event through another topic, the user, or broadcast
        }
        previous = Some(id);
        // Missing: trimmed since the index was read. Skip it.
        let Some(value) = events.get(id.to_bytes())? else {
            continue;
        };
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
    for (read, item) in events.range(lo.to_bytes()..=hi.to_bytes()).enumerate() {
        let (key, value) = item?;
        let Some(id) = EventId::from_bytes(&key) else {
            continue;
        };
        if page.offer(id, &value) == Offer::Full {
            break;
        }
        if read + 1 >= SCAN_BUDGET && id < hi {
            page.page.more = true;
            page.page.read_through = Some(id);
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
