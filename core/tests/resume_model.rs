//! Resume correctness under random histories: clients that come and go (dropped, cut off as
//! slow consumers, kicked, across crashes), a log that commits late, fails appends, answers
//! history late or not at all, and trims while clients are away. Each client reconnects the
//! way a browser's `EventSource` does, with the last event id it parsed; the model then
//! checks every stream against the events that were committed, by an oracle of its own.

mod support;

use std::time::Duration;

use bytes::Bytes;
use herald_core::{
    ConnId, Engine, EngineConfig, Event, EventId, LogBounds, ParsedEvent, Parser, PublishRequest,
    Target, Topic, UserId,
};
use proptest::prelude::*;
use support::Sim;

const TOPICS: [&str; 4] = ["a", "b", "n/x", "n/y"];
const USERS: [&str; 2] = ["u1", "u2"];

/// What each client subscribes to: patterns and an optional user.
const CLIENTS: [(&[&str], Option<&str>); 4] = [
    (&["a"], None),
    (&["n/*"], Some("u1")),
    (&[], Some("u2")),
    (&["*"], None),
];

#[derive(Debug, Clone)]
enum Op {
    /// Topics and users as bit sets.
    Publish {
        topics: u8,
        users: u8,
        broadcast: bool,
    },
    AutoCommit(bool),
    /// Commits the oldest appended events, up to this many.
    CommitSome(usize),
    FailAppends,
    AutoHistory(bool),
    ServeHistory,
    FailHistory,
    Trim(usize),
    Connect(usize),
    /// The client reads this many of its queued frames.
    Read(usize, usize),
    /// The client goes away after reading this many frames (and maybe half of the next).
    Drop(usize, usize, bool),
    /// The driver's queue overflows after this many frames were written.
    Overflow(usize, usize, bool),
    Kick(usize),
    Advance(u64),
    /// A crash: each client got this many of its queued frames; uncommitted events are lost.
    Restart(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..CLIENTS.len();
    prop_oneof![
        6 => (0u8..16, 0u8..4, prop::bool::weighted(0.1))
            .prop_map(|(topics, users, broadcast)| Op::Publish { topics, users, broadcast }),
        1 => any::<bool>().prop_map(Op::AutoCommit),
        1 => (1usize..4).prop_map(Op::CommitSome),
        1 => Just(Op::FailAppends),
        1 => any::<bool>().prop_map(Op::AutoHistory),
        1 => Just(Op::ServeHistory),
        1 => Just(Op::FailHistory),
        1 => (1usize..4).prop_map(Op::Trim),
        3 => client.clone().prop_map(Op::Connect),
        2 => (client.clone(), 0usize..4).prop_map(|(c, n)| Op::Read(c, n)),
        1 => (client.clone(), 0usize..4, any::<bool>()).prop_map(|(c, n, h)| Op::Drop(c, n, h)),
        1 => (client.clone(), 0usize..4, any::<bool>())
            .prop_map(|(c, n, h)| Op::Overflow(c, n, h)),
        1 => client.clone().prop_map(Op::Kick),
        1 => (1u64..20).prop_map(Op::Advance),
        1 => (0usize..3).prop_map(Op::Restart),
    ]
}

/// Where a stream started, as the model recorded it when the client connected.
#[derive(Debug, Clone, Copy)]
enum Start {
    Fresh { committed: Option<EventId> },
    Resume { last: EventId },
}

/// One connection of a client, from its start to now or to its end.
#[derive(Debug)]
struct Session {
    start: Start,
    events: Vec<ParsedEvent>,
    ended: bool,
}

#[derive(Debug, Default)]
struct Client {
    conn: Option<ConnId>,
    /// Frames the server queued that the client has not read.
    queued: Vec<Bytes>,
    /// Reads every stream of this client: its last event id is the browser's.
    parser: Parser,
    sessions: Vec<Session>,
}

struct Model {
    sim: Sim,
    config: EngineConfig,
    clients: Vec<Client>,
    /// Every event ever committed, trimmed or not, in id order.
    committed: Vec<Event>,
    bounds: LogBounds,
}

impl Model {
    fn new() -> Self {
        let config = EngineConfig {
            recent_events: 3,
            history_page_events: 2,
            held_bytes: 40,
            keepalive: Duration::from_secs(15),
            tick: Duration::from_secs(1),
            ..EngineConfig::default()
        };
        Self {
            sim: Sim::new(config.clone()),
            config,
            clients: (0..CLIENTS.len()).map(|_| Client::default()).collect(),
            committed: Vec::new(),
            bounds: LogBounds::default(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Publish {
                topics,
                users,
                broadcast,
            } => {
                let target = Target {
                    topics: pick(&TOPICS, topics, |t| Topic::new(t).unwrap()),
                    users: pick(&USERS, users, |u| UserId::new(u).unwrap()),
                    broadcast,
                };
                if !target.is_empty() {
                    self.sim.wall_ms += 1;
                    let now = self.sim.now;
                    let wall = self.sim.wall_ms;
                    let req = PublishRequest::new(target, format!("at {wall}"));
                    self.sim.engine.handle_publish(req, wall, now).unwrap();
                }
            }
            Op::AutoCommit(on) => self.sim.auto_commit = on,
            Op::CommitSome(n) => {
                let n = n.min(self.sim.appended.len());
                if n > 0 {
                    let batch: Vec<_> = self.sim.appended.drain(..n).collect();
                    let last = batch[n - 1].id;
                    self.sim.log.extend(batch.iter().map(|e| (**e).clone()));
                    self.sim.engine.handle_committed(last, self.sim.now);
                }
            }
            Op::FailAppends => {
                let ids: Vec<EventId> = self.sim.appended.drain(..).map(|e| e.id).collect();
                self.sim.engine.handle_append_failed(&ids);
            }
            Op::AutoHistory(on) => self.sim.auto_history = on,
            Op::ServeHistory => self.sim.serve_history(),
            Op::FailHistory => {
                for req in std::mem::take(&mut self.sim.history_requests) {
                    self.sim
                        .engine
                        .handle_history_failed(req.conn, self.sim.now);
                }
            }
            Op::Trim(n) => {
                self.record_commits();
                let n = n.min(self.sim.log.len());
                if n > 0 {
                    let removed: Vec<Event> = self.sim.log.drain(..n).collect();
                    self.bounds = LogBounds {
                        oldest: self.sim.log.first().map(|e| e.id),
                        floor: removed.last().map(|e| e.id),
                        events: self.sim.log.len() as u64,
                        bytes: 0,
                    };
                    self.sim.engine.handle_log_bounds(self.bounds);
                }
            }
            Op::Connect(c) => self.connect(c),
            Op::Read(c, n) => {
                if self.clients[c].conn.is_some() {
                    let n = n.min(self.clients[c].queued.len());
                    self.read(c, n, false);
                }
            }
            Op::Drop(c, n, half) => {
                if let Some(conn) = self.cut(c, n, half) {
                    self.sim.engine.handle_disconnect(conn, self.sim.now);
                }
            }
            Op::Overflow(c, n, half) => {
                if let Some(conn) = self.cut(c, n, half) {
                    self.sim.engine.handle_queue_overflow(conn, self.sim.now);
                }
            }
            Op::Kick(c) => {
                if let Some(conn) = self.clients[c].conn {
                    self.sim.engine.handle_kick(conn, self.sim.now);
                }
            }
            Op::Advance(secs) => {
                for _ in 0..secs {
                    self.sim.advance(Duration::from_secs(1));
                }
            }
            Op::Restart(n) => self.restart(n),
        }
        self.settle_outputs();
    }

    /// Drains the engine, hands each client the frames sent to it, and ends the streams the
    /// engine closed (after the client read everything queued, as the hub writes it).
    fn settle_outputs(&mut self) {
        self.sim.drain();
        self.record_commits();
        for c in 0..self.clients.len() {
            let Some(conn) = self.clients[c].conn else {
                continue;
            };
            if let Some(frames) = self.sim.frames.remove(&conn) {
                self.clients[c].queued.extend(frames);
            }
            if let Some(at) = self.sim.closed.iter().position(|&(id, _)| id == conn) {
                self.sim.closed.remove(at);
                let n = self.clients[c].queued.len();
                self.read(c, n, false);
                self.end_session(c);
            }
        }
    }

    fn record_commits(&mut self) {
        let known = self.committed.last().map(|e| e.id);
        let new: Vec<Event> = self
            .sim
            .log
            .iter()
            .filter(|e| known.is_none_or(|k| e.id > k))
            .cloned()
            .collect();
        self.committed.extend(new);
    }

    fn connect(&mut self, c: usize) {
        if self.clients[c].conn.is_some() {
            return;
        }
        let (patterns, user) = CLIENTS[c];
        let last = self.clients[c].parser.last_event_id();
        let last: Option<EventId> = (!last.is_empty()).then(|| last.parse().unwrap());
        let committed = self.sim.engine.committed_id();
        let start = match last {
            None => Start::Fresh { committed },
            Some(last) => Start::Resume { last },
        };
        let conn = self.sim.connect(patterns, user, last);
        let client = &mut self.clients[c];
        client.conn = Some(conn);
        client.sessions.push(Session {
            start,
            events: Vec::new(),
            ended: false,
        });
    }

    /// The client reads its next `n` queued frames, then maybe half of the one after.
    fn read(&mut self, c: usize, n: usize, half: bool) {
        let client = &mut self.clients[c];
        let mut taken: Vec<Bytes> = client.queued.drain(..n).collect();
        if half && let Some(next) = client.queued.first() {
            taken.push(next.slice(..next.len() / 2));
        }
        let session = client.sessions.last_mut().expect("a stream to read");
        for frame in taken {
            session.events.extend(client.parser.feed(&frame));
        }
    }

    /// The connection ends with `n` frames read: what was still queued never arrives.
    fn cut(&mut self, c: usize, n: usize, half: bool) -> Option<ConnId> {
        let conn = self.clients[c].conn?;
        let n = n.min(self.clients[c].queued.len());
        self.read(c, n, half);
        self.end_session(c);
        Some(conn)
    }

    fn end_session(&mut self, c: usize) {
        let client = &mut self.clients[c];
        client.queued.clear();
        client.parser.finish();
        client.conn = None;
        if let Some(s) = client.sessions.last_mut() {
            s.ended = true;
        }
    }

    fn restart(&mut self, n: usize) {
        self.record_commits();
        for c in 0..self.clients.len() {
            if self.clients[c].conn.is_some() {
                let n = n.min(self.clients[c].queued.len());
                self.read(c, n, false);
                self.end_session(c);
            }
        }
        // Unacknowledged appends die with the process; the log keeps what it committed.
        self.sim.appended.clear();
        self.sim.history_requests.clear();
        self.sim.frames.clear();
        self.sim.closed.clear();
        let last = self.committed.last().map(|e| e.id);
        self.sim.engine = Engine::new(self.config.clone(), last, self.bounds, self.sim.now);
    }

    /// Lets everything finish: commits, history, and each client reads all it was sent.
    fn settle(&mut self) {
        self.sim.auto_commit = true;
        self.sim.auto_history = true;
        self.settle_outputs();
        for c in 0..self.clients.len() {
            let n = self.clients[c].queued.len();
            if self.clients[c].conn.is_some() {
                self.read(c, n, false);
            }
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let floor = self.bounds.floor;
        for (c, client) in self.clients.iter().enumerate() {
            for (s, session) in client.sessions.iter().enumerate() {
                let at = format!("client {c} stream {s} ({:?})", session.start);
                check_session(&self.committed, &self.sim.log, floor, c, session)
                    .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
            }
        }
        Ok(())
    }
}

fn pick<T>(names: &[&str], bits: u8, make: impl Fn(&str) -> T) -> Vec<T> {
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, n)| make(n))
        .collect()
}

/// The oracle: does client `c` subscribe to `event`? (Written apart from the engine's own.)
fn wanted(c: usize, event: &Event) -> bool {
    let (patterns, user) = CLIENTS[c];
    let topic_match = event.target.topics.iter().any(|t| {
        patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => t.as_str().starts_with(prefix),
            None => t.as_str() == *p,
        })
    });
    let user_match = user.is_some_and(|u| event.target.users.iter().any(|x| x.as_str() == u));
    event.target.broadcast || topic_match || user_match
}

fn check_session(
    committed: &[Event],
    retained: &[Event],
    floor: Option<EventId>,
    c: usize,
    session: &Session,
) -> Result<(), String> {
    let mut got = Vec::new();
    let mut resets = Vec::new();
    let mut reset_to = Vec::new();
    for e in &session.events {
        match e.event_type.as_str() {
            "message" => got.push(
                e.last_event_id
                    .parse::<EventId>()
                    .map_err(|x| x.to_string())?,
            ),
            "herald.reset" => {
                resets.push(e.data.clone());
                reset_to.push(
                    e.last_event_id
                        .parse::<EventId>()
                        .map_err(|x| x.to_string())?,
                );
            }
            other => return Err(format!("an event of type {other}")),
        }
    }
    if got.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("ids not strictly increasing: {got:?}"));
    }
    let after = match session.start {
        Start::Fresh { committed } => committed.unwrap_or(EventId::MIN),
        Start::Resume { last } => last,
    };
    let expected: Vec<EventId> = committed
        .iter()
        .filter(|e| e.id > after && wanted(c, e))
        .map(|e| e.id)
        .collect();
    // An ended stream got a prefix of what it should; an open one got all of it.
    let through = if session.ended {
        got.last().copied()
    } else {
        Some(EventId::MAX)
    };
    let due: Vec<EventId> = expected
        .iter()
        .copied()
        .filter(|id| through.is_some_and(|t| *id <= t))
        .collect();
    if resets.is_empty() {
        if got != due {
            return Err(format!("got {got:?}, expected {due:?}"));
        }
        return Ok(());
    }
    // Told it missed events: only a resume from below the floor may be, as it starts and
    // again each time retention passes its replay before a read.
    if resets.iter().any(|r| !r.contains("history_truncated")) {
        return Err(format!("resets {resets:?}"));
    }
    if floor.is_none_or(|f| after >= f) || matches!(session.start, Start::Fresh { .. }) {
        return Err(format!("reset {resets:?} from {after}, floor {floor:?}"));
    }
    if let Some(stray) = got.iter().find(|id| !expected.contains(id)) {
        return Err(format!(
            "{stray} is not an event it should get; got {got:?}"
        ));
    }
    // Everything the log still holds arrives. (Not everything committed after it connected:
    // live events held during a replay that overflow the hold are read back from the log,
    // which may have trimmed them by then; the reset covers those too.)
    let must: Vec<EventId> = due
        .iter()
        .copied()
        .filter(|id| retained.iter().any(|e| e.id == *id))
        .collect();
    if let Some(missing) = must.iter().find(|id| !got.contains(id)) {
        return Err(format!(
            "{missing} never arrived; got {got:?}, expected {due:?}"
        ));
    }
    // What did not arrive, a reset said it missed: none lies above every reset's position.
    let told = reset_to.iter().max().copied().unwrap_or(EventId::MIN);
    if let Some(silent) = due.iter().find(|id| !got.contains(id) && **id > told) {
        return Err(format!(
            "{silent} was missed without a reset past it; resets to {reset_to:?}, got {got:?}"
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_stream_gets_exactly_what_it_missed(ops in prop::collection::vec(op(), 1..80)) {
        let mut model = Model::new();
        for op in &ops {
            model.apply(op);
        }
        model.settle();
        model.check()?;
    }
}
