//! Published events, their targets, and the filter a subscription applies to them.

use serde::{Deserialize, Serialize};

use crate::id::EventId;
use crate::topic::{EventType, Topic, TopicPattern, UserId};

/// Who an event is for. An event reaches a connection if any part of the target matches it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Topics the event is published to.
    pub topics: Vec<Topic>,
    /// Users the event is for (every open connection of each).
    pub users: Vec<UserId>,
    /// Everyone connected, whatever they subscribed to.
    pub broadcast: bool,
}

impl Target {
    /// True when the target names nobody (publishing it is an error).
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty() && self.users.is_empty() && !self.broadcast
    }
}

/// An event as the log stores it and replays it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its id, minted by the engine.
    pub id: EventId,
    /// Who it is for.
    pub target: Target,
    /// The `event:` field; `None` means the default `message`.
    pub event_type: Option<EventType>,
    /// The payload, sent as one `data:` line per line.
    pub data: String,
}

/// What a connection receives: its topic patterns and its own user stream.
///
/// The log uses it to replay only what a reconnecting client should see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Exact topics and `prefix/*` patterns.
    pub patterns: Vec<TopicPattern>,
    /// The connection's user, whose own events it receives.
    pub user: Option<UserId>,
}

impl Subscription {
    /// True when `event` should reach a connection with this subscription.
    pub fn matches(&self, event: &Event) -> bool {
        let target = &event.target;
        if target.broadcast {
            return true;
        }
        if let Some(user) = &self.user
            && target.users.iter().any(|u| u == user)
        {
            return true;
        }
        target
            .topics
            .iter()
            .any(|t| self.patterns.iter().any(|p| p.matches(t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(topics: &[&str], users: &[&str], broadcast: bool) -> Event {
        Event {
            id: EventId::new(1, 0),
            target: Target {
                topics: topics.iter().map(|t| Topic::new(t).unwrap()).collect(),
                users: users.iter().map(|u| UserId::new(u).unwrap()).collect(),
                broadcast,
            },
            event_type: None,
            data: String::new(),
        }
    }

    #[test]
    fn a_subscription_matches_its_topics_its_user_and_broadcasts() {
        let sub = Subscription {
            patterns: vec![
                TopicPattern::parse("orders").unwrap(),
                TopicPattern::parse("news/*").unwrap(),
            ],
            user: Some(UserId::new("alice").unwrap()),
        };
        assert!(sub.matches(&event(&["orders"], &[], false)));
        assert!(sub.matches(&event(&["news/eu"], &[], false)));
        assert!(sub.matches(&event(&[], &["alice"], false)));
        assert!(sub.matches(&event(&[], &[], true)));
        assert!(!sub.matches(&event(&["other"], &["bob"], false)));
        assert!(Target::default().is_empty());
    }
}
