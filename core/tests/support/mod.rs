//! The simulated driver the engine's tests share: a perfect in-memory log, simulated time,
//! and every frame each connection was sent.
#![allow(dead_code)] // each test binary uses its own part of it

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_core::{
    CloseReason, ConnId, ConnectRequest, Engine, EngineConfig, Event, EventId, HistoryPage,
    HistoryRequest, LogBounds, Output, ParsedEvent, Parser, PublishRequest, Target, Topic,
    TopicPattern, UserId,
};

/// A driver with a perfect in-memory log and simulated time.
pub struct Sim {
    pub engine: Engine,
    pub now: Instant,
    pub wall_ms: u64,
    /// Committed events, as the log would hold them.
    pub log: Vec<Event>,
    /// Appended but not yet committed.
    pub appended: Vec<Arc<Event>>,
    /// Idempotency keys the log was given with its events.
    pub keys: Vec<(EventId, String)>,
    /// Commit appends as soon as they are drained.
    pub auto_commit: bool,
    /// Serve history requests as soon as they are drained.
    pub auto_history: bool,
    pub history_requests: Vec<HistoryRequest>,
    pub frames: BTreeMap<ConnId, Vec<Bytes>>,
    pub closed: Vec<(ConnId, CloseReason)>,
}

impl Sim {
    pub fn new(config: EngineConfig) -> Self {
        Self::with_log(config, Vec::new(), LogBounds::default())
    }

    pub fn with_log(config: EngineConfig, log: Vec<Event>, bounds: LogBounds) -> Self {
        // Simulated time needs an origin; only differences from it matter.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let last = log.last().map(|e| e.id);
        Self {
            engine: Engine::new(config, last, bounds, now),
            now,
            wall_ms: 1_700_000_000_000,
            log,
            appended: Vec::new(),
            keys: Vec::new(),
            auto_commit: true,
            auto_history: true,
            history_requests: Vec::new(),
            frames: BTreeMap::new(),
            closed: Vec::new(),
        }
    }

    pub fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(out) = self.engine.poll_output() {
                progressed = true;
                match out {
                    Output::Send { conn, frame } => {
                        self.frames.entry(conn).or_default().push(frame)
                    }
                    Output::Close { conn, reason } => self.closed.push((conn, reason)),
                    Output::Append(event, key) => {
                        if let Some(key) = key {
                            self.keys.push((event.id, key.to_string()));
                        }
                        self.appended.push(event)
                    }
                    Output::LoadHistory(req) => self.history_requests.push(*req),
                }
            }
            if self.auto_commit && !self.appended.is_empty() {
                self.commit_all();
                progressed = true;
            }
            if self.auto_history && !self.history_requests.is_empty() {
                self.serve_history();
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
    }

    pub fn commit_all(&mut self) {
        let Some(last) = self.appended.last().map(|e| e.id) else {
            return;
        };
        self.log
            .extend(self.appended.drain(..).map(|e| (*e).clone()));
        self.engine.handle_committed(last, self.now);
    }

    pub fn serve_history(&mut self) {
        for req in std::mem::take(&mut self.history_requests) {
            let page = read_log(&self.log, &req);
            self.engine.handle_history(req.conn, page, self.now);
        }
    }

    pub fn connect(
        &mut self,
        patterns: &[&str],
        user: Option<&str>,
        last: Option<EventId>,
    ) -> ConnId {
        let mut req = ConnectRequest::new(
            patterns
                .iter()
                .map(|p| TopicPattern::parse(p).unwrap())
                .collect(),
        );
        req.user = user.map(|u| UserId::new(u).unwrap());
        req.last_id = last;
        let id = self.engine.handle_connect(req, self.now).unwrap();
        self.drain();
        id
    }

    pub fn publish(&mut self, target: Target, data: &str) -> EventId {
        self.wall_ms += 1;
        let out = self
            .engine
            .handle_publish(PublishRequest::new(target, data), self.wall_ms, self.now)
            .unwrap();
        self.drain();
        out.id
    }

    pub fn publish_topic(&mut self, topic: &str, data: &str) -> EventId {
        self.publish(topics(&[topic]), data)
    }

    /// Publishes `n` events to `topic`, each with its number as data; their ids.
    pub fn publish_numbered(&mut self, topic: &str, n: usize) -> Vec<EventId> {
        (0..n)
            .map(|i| self.publish_topic(topic, &i.to_string()))
            .collect()
    }

    /// Retention removes every event up to `floor` from the log and tells the engine, as the
    /// trimmer does (counting the events left as their bytes).
    pub fn trim_through(&mut self, floor: EventId) {
        self.log.retain(|e| e.id > floor);
        let left = self.log.len() as u64;
        self.engine.handle_log_bounds(LogBounds {
            oldest: self.log.first().map(|e| e.id),
            floor: Some(floor),
            events: left,
            bytes: left,
        });
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.engine.poll_timeout().is_some_and(|t| t <= self.now) {
            self.engine.handle_timeout(self.now);
        }
        self.drain();
    }

    /// What the client on `conn` has seen, parsed as a browser would.
    pub fn received(&self, conn: ConnId) -> Vec<ParsedEvent> {
        let mut parser = Parser::new();
        let mut out = Vec::new();
        for frame in self.frames.get(&conn).into_iter().flatten() {
            out.extend(parser.feed(frame));
        }
        out
    }

    pub fn received_ids(&self, conn: ConnId) -> Vec<String> {
        self.received(conn)
            .into_iter()
            .filter(|e| e.event_type == "message")
            .map(|e| e.last_event_id)
            .collect()
    }

    pub fn raw(&self, conn: ConnId) -> String {
        self.frames
            .get(&conn)
            .into_iter()
            .flatten()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect()
    }
}

pub fn read_log(log: &[Event], req: &HistoryRequest) -> HistoryPage {
    let mut page = HistoryPage::default();
    let mut bytes = 0;
    for event in log
        .iter()
        .filter(|e| req.contains(e.id) && req.subscription.matches(e))
    {
        if page.events.len() >= req.max_events
            || (bytes >= req.max_bytes && !page.events.is_empty())
        {
            page.more = true;
            break;
        }
        bytes += event.data.len();
        page.events.push(event.clone());
    }
    page
}

pub fn topics(names: &[&str]) -> Target {
    Target {
        topics: names.iter().map(|t| Topic::new(t).unwrap()).collect(),
        ..Target::default()
    }
}

pub fn users(names: &[&str]) -> Target {
    Target {
        users: names.iter().map(|u| UserId::new(u).unwrap()).collect(),
        ..Target::default()
    }
}

pub fn ids(list: &[EventId]) -> Vec<String> {
    list.iter().map(|i| i.to_string()).collect()
}
