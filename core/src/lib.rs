//! herald-core: the sans-IO engine of Herald, a Server-Sent Events hub.
//!
//! The [`Engine`] owns connections, subscriptions, the id sequencer and the window of recent
//! events. It never performs IO and never reads a clock: the driver (the `herald` server)
//! feeds it inputs that carry `now`, and does the work it asks for through [`Output`]s.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use herald_core::{ConnectRequest, Engine, EngineConfig, Output, PublishRequest, Target, Topic, TopicPattern};
//!
//! let now = Instant::now();
//! let mut engine = Engine::new(EngineConfig::default(), None, Default::default(), now);
//! let conn = engine
//!     .handle_connect(ConnectRequest::new(vec![TopicPattern::parse("orders").unwrap()]), now)
//!     .unwrap();
//! let target = Target { topics: vec![Topic::new("orders").unwrap()], ..Default::default() };
//! let id = engine.handle_publish(PublishRequest::new(target, "hello"), 1_700_000_000_000, now).unwrap().id;
//! while let Some(output) = engine.poll_output() {
//!     match output {
//!         Output::Append(event, _key) => { /* write to the log, then: */ }
//!         Output::Send { conn, frame } => { /* queue `frame` on `conn`'s stream */ }
//!         _ => {}
//!     }
//! }
//! engine.handle_committed(id, now); // the log says the event is durable: now it is delivered
//! while let Some(output) = engine.poll_output() { /* ... */ }
//! let next_wakeup: Option<Instant> = engine.poll_timeout(); // call handle_timeout then
//! # let _ = (conn, next_wakeup);
//! ```
//!
//! A driver whose log assigns ids itself (the server's cluster mode: a Redis stream that
//! several servers share) checks publishes with [`Engine::handle_shared_publish`], appends
//! them to that log, and feeds everything the log holds, in its order, to
//! [`Engine::handle_replicated`]; [`Engine::handle_log_gap`] tells the engine that the log
//! lost events before this server read them.

pub mod admin;
pub mod conn;
pub mod engine;
pub mod event;
pub mod frame;
pub mod history;
pub mod id;
pub mod parser;
pub mod topic;

pub use admin::{
    AdminEvent, ConnectionInfo, ConnectionQuery, Counters, Latency, NodeInfo, Quantiles, Snapshot,
    Stats, TopicInfo, Transports,
};
pub use conn::{CLOSED_EVENT, CloseReason, ConnId, ConnectRequest, Protocol};
pub use engine::{
    ConnectError, Engine, EngineConfig, Output, PublishError, PublishOutcome, PublishRequest,
};
pub use event::{Event, Subscription, Target};
pub use frame::{Comment, FrameBuilder};
pub use history::{HistoryPage, HistoryRequest, LogBounds};
pub use id::{EventId, IdParseError, IdSequencer};
pub use parser::{ParsedEvent, Parser};
pub use topic::{EventType, NameError, Topic, TopicPattern, UserId};
