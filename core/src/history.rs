//! What the engine asks of the log when a client resumes, and what the log answers.

use serde::{Deserialize, Serialize};

use crate::conn::ConnId;
use crate::event::{Event, Subscription};
use crate::id::EventId;

/// A request for one page of history, emitted as [`crate::Output::LoadHistory`].
///
/// The driver reads events with `after < id <= through` that match `subscription`, in id
/// order, at most `max_events` of them and about `max_bytes` of data (always at least one
/// event when any is in range), and answers with [`crate::Engine::handle_history`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRequest {
    /// The connection that is resuming.
    pub conn: ConnId,
    /// Exclusive lower bound; `None` means from the oldest event held.
    pub after: Option<EventId>,
    /// Inclusive upper bound: the last committed id when the replay started.
    pub through: EventId,
    /// Which events the connection should see.
    pub subscription: Subscription,
    /// Most events in one page.
    pub max_events: usize,
    /// Rough bound on the payload bytes in one page.
    pub max_bytes: usize,
}

impl HistoryRequest {
    /// True when `id` lies in the requested range.
    pub fn contains(&self, id: EventId) -> bool {
        self.after.is_none_or(|a| id > a) && id <= self.through
    }
}

/// One page of history, in ascending id order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryPage {
    /// The events, ascending, all within the request's range and matching its subscription.
    pub events: Vec<Event>,
    /// True when the page stopped at a limit and more events may lie in the range.
    pub more: bool,
    /// Where a read that stopped at its budget of records looked last, when that is past the
    /// page's last event (few of the records it read matched): the next page starts after it.
    /// `None`: after the page's last event.
    pub read_through: Option<EventId>,
}

/// What the log holds, as far as resuming clients are concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBounds {
    /// The oldest id still held.
    pub oldest: Option<EventId>,
    /// The highest id retention has removed: a client whose last id is below it may have
    /// missed events and is sent `herald.reset`.
    pub floor: Option<EventId>,
    /// How many events the log holds.
    pub events: u64,
    /// Roughly how many bytes the log's records take.
    pub bytes: u64,
}
