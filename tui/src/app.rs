//! The console's state and the one function that changes it: [`App::update`].
//!
//! No IO and no clock here: keys and server messages arrive as [`Action`]s, and requests
//! for the server leave as [`Command`]s that `main` hands to the client. Every time shown on
//! screen comes from the server (uptime, connection ages, event ids), which keeps drawing
//! deterministic.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use herald_core::{AdminEvent, ConnId, ConnectionInfo, NodeInfo, Snapshot, Stats, TopicInfo};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::event::{Action, ApiError, Edit, LinkState, NodesAnswer, ServerMsg, View};

/// How many rate samples the sparklines keep: one a second, so a minute.
pub const RATE_HISTORY: usize = 60;
/// How many published events the feed keeps.
pub const FEED_CAPACITY: usize = 1000;

/// Work for the client, returned by [`App::update`].
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `POST /publish` with this body.
    Publish(PublishBody),
    /// `DELETE /admin/connections/{id}`.
    Disconnect(ConnId),
}

/// The JSON body of `POST /publish`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PublishBody {
    /// Topics to publish to.
    pub topics: Vec<String>,
    /// Users to publish to.
    pub users: Vec<String>,
    /// True to send to every connection.
    pub broadcast: bool,
    /// The `event:` type; omitted for the default `message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The data: a JSON value, or a JSON string whose text is sent as is.
    pub data: JsonText,
    /// Names this event to the server, which answers a repeat of the key with the first
    /// event's id and publishes nothing: a send that timed out can be retried safely.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A JSON value sent as it was typed: parsed and printed again, it would lose the digits of
/// large numbers and the order of keys.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// The value `text` holds, if it is JSON.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text.trim().to_owned()).map(Self)
    }

    /// `text` as a JSON string.
    pub fn string(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(text).map(Self)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// What keys mean right now; [`crate::event::key_action`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Browsing one of the views.
    Normal(View),
    /// The key list is open.
    Help,
    /// A connection's detail is open.
    Detail,
    /// A yes/no question is open.
    Confirm,
    /// Typing the connections filter.
    Filter,
    /// In the compose form, on a choice (target kind or data format).
    ComposeChoice,
    /// In the compose form, on a text field.
    ComposeText,
}

/// The popup over the views, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Popup {
    /// None: the view has the keys.
    #[default]
    None,
    /// One connection's detail; `gone` holds why it ended if it did while shown.
    Detail {
        /// The connection.
        id: ConnId,
        /// The disconnect reason, once it is gone.
        gone: Option<String>,
    },
    /// "Disconnect this connection?"
    ConfirmDisconnect {
        /// The connection.
        id: ConnId,
        /// Return to its detail on "no".
        from_detail: bool,
    },
    /// The compose form ([`App::compose`]).
    Compose,
}

/// A column the connections table can be sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConnSort {
    /// Connection id (the order they came in).
    #[default]
    Id,
    /// User name.
    User,
    /// First topic.
    Topics,
    /// Time connected.
    Age,
    /// Events sent.
    Sent,
    /// Bytes queued.
    Queue,
}

impl ConnSort {
    fn next(self) -> Self {
        match self {
            Self::Id => Self::User,
            Self::User => Self::Topics,
            Self::Topics => Self::Age,
            Self::Age => Self::Sent,
            Self::Sent => Self::Queue,
            Self::Queue => Self::Id,
        }
    }
}

/// A column the topics table can be sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TopicSort {
    /// Topic name.
    #[default]
    Name,
    /// Subscriber count.
    Subscribers,
    /// Events published to it.
    Events,
    /// Recent event rate.
    Rate,
}

impl TopicSort {
    fn next(self) -> Self {
        match self {
            Self::Name => Self::Subscribers,
            Self::Subscribers => Self::Events,
            Self::Events => Self::Rate,
            Self::Rate => Self::Name,
        }
    }
}

/// A selection in a scrolled list: the selected row and the first row shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nav {
    /// Index of the selected row.
    pub selected: usize,
    /// Index of the first visible row.
    pub offset: usize,
}

impl Nav {
    /// Moves by `delta` rows within `len` rows, `rows` of them visible.
    fn move_by(&mut self, delta: isize, len: usize, rows: usize) {
        self.selected = self.selected.saturating_add_signed(delta);
        self.clamp(len, rows);
    }

    /// Keeps the selection within `len` and visible in a window of `rows`.
    fn clamp(&mut self, len: usize, rows: usize) {
        self.selected = self.selected.min(len.saturating_sub(1));
        let rows = rows.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + rows {
            self.offset = self.selected + 1 - rows;
        }
        self.offset = self.offset.min(len.saturating_sub(rows));
    }
}

/// Events per second of one counter, from the deltas between stats samples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    /// Uptime (ms) and value of the previous sample.
    prev: Option<(u64, u64)>,
    /// The last minute of rates, oldest first.
    pub history: VecDeque<u64>,
}

impl Rate {
    /// Takes a sample; when time moved forward since the previous one, records a rate.
    fn sample(&mut self, uptime_ms: u64, value: u64) {
        if let Some((prev_ms, prev_value)) = self.prev
            && uptime_ms > prev_ms
            && value >= prev_value
        {
            let per_sec = per_second(value - prev_value, uptime_ms - prev_ms);
            if self.history.len() == RATE_HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(per_sec.round() as u64);
        }
        // A server restart (uptime went back) just starts a new baseline.
        self.prev = Some((uptime_ms, value));
    }

    /// Records a level rather than a rate (a gauge such as open connections).
    fn level(&mut self, value: u64) {
        if self.history.len() == RATE_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(value);
    }

    /// The latest rate, if there is one.
    pub fn last(&self) -> Option<u64> {
        self.history.back().copied()
    }
}

fn per_second(delta: u64, elapsed_ms: u64) -> f64 {
    delta as f64 * 1000.0 / elapsed_ms.max(1) as f64
}

/// The rate of a counter between two `(uptime ms, value)` samples; none when time did not
/// move forward or the counter went back (the server restarted).
fn rate_between((then_ms, then): (u64, u64), (now_ms, now): (u64, u64)) -> Option<f64> {
    (now_ms > then_ms && now >= then).then(|| per_second(now - then, now_ms - then_ms))
}

/// A server of the deployment with its rates over the last poll interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeRow {
    /// What it reported.
    pub info: NodeInfo,
    /// Publishes it accepted per second, once there are two polls.
    pub published_rate: Option<f64>,
    /// Frames it delivered per second, once there are two polls.
    pub delivered_rate: Option<f64>,
}

/// A topic with its rate over the last poll interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicRow {
    /// What the server reported.
    pub info: TopicInfo,
    /// Events per second since the previous poll, once there are two polls.
    pub rate: Option<f64>,
}

/// One published event in the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedEntry {
    /// Arrival order, from 1.
    pub seq: u64,
    /// The event.
    pub event: herald_core::admin::Published,
}

/// A one-line text field with a cursor (counted in characters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextInput {
    /// The text.
    pub value: String,
    /// The cursor position, in characters from the start.
    pub cursor: usize,
}

impl TextInput {
    /// A field holding `value`, cursor at the end.
    #[cfg(test)]
    pub fn new(value: &str) -> Self {
        Self {
            value: value.to_owned(),
            cursor: value.chars().count(),
        }
    }

    fn byte_at(&self, cursor: usize) -> usize {
        self.value
            .char_indices()
            .nth(cursor)
            .map_or(self.value.len(), |(i, _)| i)
    }

    /// Inserts `text` at the cursor, as if each character were typed.
    fn insert_str(&mut self, text: &str) {
        let at = self.byte_at(self.cursor);
        self.value.insert_str(at, text);
        self.cursor += text.chars().count();
    }

    fn edit(&mut self, edit: Edit) {
        let len = self.value.chars().count();
        match edit {
            Edit::Insert(c) => {
                let at = self.byte_at(self.cursor);
                self.value.insert(at, c);
                self.cursor += 1;
            }
            Edit::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                let at = self.byte_at(self.cursor);
                self.value.remove(at);
            }
            Edit::Delete if self.cursor < len => {
                let at = self.byte_at(self.cursor);
                self.value.remove(at);
            }
            Edit::Left => self.cursor = self.cursor.saturating_sub(1),
            Edit::Right => self.cursor = (self.cursor + 1).min(len),
            Edit::Home => self.cursor = 0,
            Edit::End => self.cursor = len,
            Edit::Clear => *self = Self::default(),
            Edit::Backspace | Edit::Delete => {}
        }
    }
}

/// Who a composed event goes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TargetKind {
    /// One or more topics.
    #[default]
    Topic,
    /// One or more users (all their connections).
    User,
    /// Every connection.
    Broadcast,
}

/// How the compose form reads its data field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DataFormat {
    /// The field must be valid JSON; that value is published.
    #[default]
    Json,
    /// The field is published as a JSON string, that is as plain text.
    Text,
}

/// A field of the compose form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Field {
    /// Target kind (choice).
    #[default]
    Kind,
    /// Topics or users, comma separated.
    Target,
    /// The event type.
    Event,
    /// Data format (choice).
    Format,
    /// The data.
    Data,
}

/// What became of the last send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing sent yet.
    #[default]
    None,
    /// The form is not valid; nothing was sent.
    Invalid(String),
    /// Waiting for the server.
    Sending,
    /// The server accepted it and returned this id.
    Sent(String),
    /// The server (or the network) refused it.
    Failed(String),
}

/// The compose form: kept when closed, so a second event is a small edit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComposeForm {
    /// Topic, user or broadcast.
    pub kind: TargetKind,
    /// Topics or users, separated by commas (a space is part of a name: "john smith").
    pub target: TextInput,
    /// The event type; empty means the default `message`.
    pub event_type: TextInput,
    /// JSON or plain text.
    pub format: DataFormat,
    /// The data.
    pub data: TextInput,
    /// The focused field.
    pub focus: Field,
    /// The result of the last send.
    pub outcome: Outcome,
    /// The form was edited while its last send was on the way: the answer, when it comes,
    /// is about the content before the edit.
    pub outcome_is_stale: bool,
    /// The idempotency key of the content as it is now, once it was sent: a second Enter on
    /// the same content (say after a timeout) reuses it, so the event is published at most
    /// once. Any edit, or a confirmed publish, forgets it.
    pub key: Option<String>,
}

impl ComposeForm {
    /// The fields in tab order; the target is skipped for a broadcast.
    pub fn fields(&self) -> &'static [Field] {
        if self.kind == TargetKind::Broadcast {
            &[Field::Kind, Field::Event, Field::Format, Field::Data]
        } else {
            &[
                Field::Kind,
                Field::Target,
                Field::Event,
                Field::Format,
                Field::Data,
            ]
        }
    }

    /// The data field as it would be sent, or why it cannot be.
    pub fn data_value(&self) -> Result<Value, String> {
        match self.format {
            DataFormat::Text => Ok(Value::String(self.data.value.clone())),
            DataFormat::Json if self.data.value.trim().is_empty() => Err(
                "data is empty: type JSON (e.g. {\"n\": 1}) or set \"Data as\" to text".to_owned(),
            ),
            DataFormat::Json => serde_json::from_str(&self.data.value)
                .map_err(|e| format!("data is not valid JSON: {e}")),
        }
    }

    /// The names in the target field: split on commas only, since a user name may hold a
    /// space ("john smith" is one user, not two).
    pub fn targets(&self) -> Vec<String> {
        self.target
            .value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The request to send, or the first thing wrong with the form.
    pub fn body(&self) -> Result<PublishBody, String> {
        let targets = self.targets();
        let (topics, users, broadcast) = match self.kind {
            TargetKind::Topic if targets.is_empty() => {
                return Err("name at least one topic".to_owned());
            }
            TargetKind::User if targets.is_empty() => {
                return Err("name at least one user".to_owned());
            }
            TargetKind::Topic => (targets, Vec::new(), false),
            TargetKind::User => (Vec::new(), targets, false),
            TargetKind::Broadcast => (Vec::new(), Vec::new(), true),
        };
        self.data_value()?;
        let data = match self.format {
            DataFormat::Text => JsonText::string(&self.data.value),
            DataFormat::Json => JsonText::parse(&self.data.value),
        }
        .map_err(|e| format!("data is not valid JSON: {e}"))?;
        let event = self.event_type.value.trim();
        Ok(PublishBody {
            topics,
            users,
            broadcast,
            event: (!event.is_empty()).then(|| event.to_owned()),
            data,
            idempotency_key: self.key.clone(),
        })
    }

    /// The content changed: the last send's result and key are about other content now.
    fn edited(&mut self) {
        self.key = None;
        if self.outcome == Outcome::Sending {
            self.outcome_is_stale = true;
        } else {
            self.outcome = Outcome::None;
            self.outcome_is_stale = false;
        }
    }

    /// Pasted text into the focused text field; a paste on a choice does nothing (a pasted
    /// letter must not pick a target kind).
    ///
    /// A paste is never a key: its newlines and tabs do not send or move focus. The data
    /// field keeps them (meaningful in text, whitespace in JSON); in the one-line fields a
    /// line break or tab separates names in the target (a pasted column of names) and is a
    /// space in the event type. Other control characters are dropped.
    fn paste(&mut self, text: &str) -> bool {
        let separator = match self.focus {
            Field::Data => None,
            Field::Target => Some(','),
            Field::Event | Field::Kind | Field::Format => Some(' '),
        };
        let Some(input) = self.focused_input() else {
            return false;
        };
        let text = pasted_text(text, separator);
        if text.is_empty() {
            return false;
        }
        input.insert_str(&text);
        true
    }

    fn focused_input(&mut self) -> Option<&mut TextInput> {
        match self.focus {
            Field::Target => Some(&mut self.target),
            Field::Event => Some(&mut self.event_type),
            Field::Data => Some(&mut self.data),
            Field::Kind | Field::Format => None,
        }
    }

    fn move_focus(&mut self, forward: bool) {
        let fields = self.fields();
        let at = fields.iter().position(|f| *f == self.focus).unwrap_or(0);
        let next = if forward {
            (at + 1) % fields.len()
        } else {
            (at + fields.len() - 1) % fields.len()
        };
        self.focus = fields[next];
    }

    fn choose(&mut self, forward: bool) {
        if matches!(self.focus, Field::Kind | Field::Format) {
            self.edited();
        }
        match self.focus {
            Field::Kind => {
                self.kind = match (self.kind, forward) {
                    (TargetKind::Topic, true) | (TargetKind::Broadcast, false) => TargetKind::User,
                    (TargetKind::User, true) | (TargetKind::Topic, false) => TargetKind::Broadcast,
                    (TargetKind::Broadcast, true) | (TargetKind::User, false) => TargetKind::Topic,
                };
            }
            Field::Format => {
                self.format = match self.format {
                    DataFormat::Json => DataFormat::Text,
                    DataFormat::Text => DataFormat::Json,
                };
            }
            Field::Target | Field::Event | Field::Data => {}
        }
    }
}

/// A line for the status bar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The text.
    pub text: String,
    /// Shown in red when true.
    pub is_error: bool,
}

/// The whole state of the console.
#[derive(Clone, Debug)]
pub struct App {
    /// The server's base URL, as given.
    pub server: String,
    /// The admin stream's state.
    pub link: LinkState,
    /// The latest stats sample.
    pub stats: Option<Stats>,
    /// Events published per second, counted as the log commits them: in cluster mode that is
    /// every instance's publishes (each instance commits every event of the shared log), not
    /// only the ones this server accepted.
    pub published: Rate,
    /// Delivered frames per second.
    pub delivered: Rate,
    /// Open connections, one sample per stats sample.
    pub open: Rate,
    /// Every connection the server reported, by id.
    pub connections: BTreeMap<ConnId, ConnectionInfo>,
    /// Ids that disconnected since the last connections poll (a poll answer may predate it).
    recently_gone: BTreeSet<ConnId>,
    /// The connections shown, filtered and sorted: rebuilt by [`App::sync`].
    rows: Vec<ConnId>,
    rows_dirty: bool,
    /// The connections table's selection.
    pub conn_nav: Nav,
    /// The connections table's sort column.
    pub conn_sort: ConnSort,
    /// The sort is descending.
    pub conn_desc: bool,
    /// The filter text (user or topic, case-insensitive substring).
    pub filter: TextInput,
    /// The filter box has the keys.
    pub filter_editing: bool,
    /// Topics, sorted as [`App::topic_sort`] says.
    pub topics: Vec<TopicRow>,
    /// Uptime and event counts of the previous topics sample.
    topic_prev: Option<(u64, BTreeMap<String, u64>)>,
    /// The topics table's selection.
    pub topic_nav: Nav,
    /// The topics table's sort column.
    pub topic_sort: TopicSort,
    /// The topics sort is descending.
    pub topic_desc: bool,
    /// The deployment's servers, by name, from the last nodes poll.
    pub nodes: Vec<NodeRow>,
    /// The answering server's name, and whether it runs in cluster mode.
    pub node_self: Option<(String, bool)>,
    /// In cluster mode, how long ago the registry in Redis last answered that server.
    pub registry_ms_ago: Option<u64>,
    /// The nodes table's selection.
    pub node_nav: Nav,
    /// Recent published events, oldest first.
    pub feed: VecDeque<FeedEntry>,
    feed_seq: u64,
    /// When paused, the newest entry (by `seq`) still shown.
    pub feed_paused_at: Option<u64>,
    /// Rows scrolled down from the newest shown entry.
    pub feed_scroll: usize,
    /// The view on screen.
    pub view: View,
    /// The popup, if any.
    pub popup: Popup,
    /// The key list is shown over everything.
    pub show_help: bool,
    /// Lines of the key list scrolled past (it may be taller than the terminal).
    pub help_scroll: usize,
    /// The compose form.
    pub compose: ComposeForm,
    /// The status bar's message.
    pub status: Option<Status>,
    /// The status shows a failed refresh, which the next good one clears.
    refresh_failed: bool,
    /// The terminal size (columns, rows).
    pub size: (u16, u16),
    /// Set by [`Action::Quit`]: `main` leaves its loop.
    pub should_quit: bool,
    /// Unique to this run of the console (from `main`): the prefix of its idempotency keys,
    /// so that two consoles never send the same key.
    instance: String,
    /// Idempotency keys minted so far.
    keys_minted: u64,
    /// Which of the connections is this console's own admin stream.
    own_stream: OwnStream,
}

/// This console's own admin stream, as far as the server has named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnStream {
    /// No snapshot yet on the current stream.
    Unknown,
    /// A snapshot came and this stream's own `connected` event has not yet.
    Awaiting,
    /// The first admin `connected` event after the snapshot named it.
    Known(ConnId),
}

/// Pasted text as a text field takes it: line breaks (CRLF, CR or LF) and tabs kept as they
/// are with no `separator` (a multi-line field), or each made the `separator` (a one-line
/// field); other control characters dropped.
fn pasted_text(text: &str, separator: Option<char>) -> String {
    text.replace("\r\n", "\n")
        .chars()
        .filter_map(|c| match (c, separator) {
            ('\r', None) => Some('\n'),
            ('\n' | '\t', None) => Some(c),
            ('\r' | '\n' | '\t', Some(separator)) => Some(separator),
            (c, _) if c.is_control() => None,
            (c, _) => Some(c),
        })
        .collect()
}

impl App {
    /// A console for the server at `server`, before anything was heard from it.
    pub fn new(server: &str) -> Self {
        Self {
            server: server.to_owned(),
            link: LinkState::Connecting { attempt: 1 },
            stats: None,
            published: Rate::default(),
            delivered: Rate::default(),
            open: Rate::default(),
            connections: BTreeMap::new(),
            recently_gone: BTreeSet::new(),
            rows: Vec::new(),
            rows_dirty: false,
            conn_nav: Nav::default(),
            conn_sort: ConnSort::default(),
            conn_desc: false,
            filter: TextInput::default(),
            filter_editing: false,
            topics: Vec::new(),
            topic_prev: None,
            topic_nav: Nav::default(),
            topic_sort: TopicSort::default(),
            topic_desc: false,
            nodes: Vec::new(),
            node_self: None,
            registry_ms_ago: None,
            node_nav: Nav::default(),
            feed: VecDeque::new(),
            feed_seq: 0,
            feed_paused_at: None,
            feed_scroll: 0,
            view: View::default(),
            popup: Popup::None,
            show_help: false,
            help_scroll: 0,
            compose: ComposeForm::default(),
            status: None,
            refresh_failed: false,
            size: (80, 24),
            should_quit: false,
            instance: "0".to_owned(),
            keys_minted: 0,
            own_stream: OwnStream::Unknown,
        }
    }

    /// The same console with the text that makes its idempotency keys unique to this run
    /// (`main` gives the process id and start time).
    pub fn with_instance(mut self, instance: String) -> Self {
        self.instance = instance;
        self
    }

    /// What keys mean now.
    pub fn mode(&self) -> Mode {
        if self.show_help {
            return Mode::Help;
        }
        match self.popup {
            Popup::Detail { .. } => Mode::Detail,
            Popup::ConfirmDisconnect { .. } => Mode::Confirm,
            Popup::Compose => match self.compose.focus {
                Field::Kind | Field::Format => Mode::ComposeChoice,
                Field::Target | Field::Event | Field::Data => Mode::ComposeText,
            },
            Popup::None if self.filter_editing => Mode::Filter,
            Popup::None => Mode::Normal(self.view),
        }
    }

    /// The connections shown, in table order (call [`App::sync`] first after server messages).
    pub fn conn_rows(&self) -> &[ConnId] {
        &self.rows
    }

    /// This console's own admin stream, once the server named it.
    pub fn own_conn(&self) -> Option<ConnId> {
        match self.own_stream {
            OwnStream::Known(id) => Some(id),
            OwnStream::Unknown | OwnStream::Awaiting => None,
        }
    }

    /// The selected connection, if the table has any rows.
    pub fn selected_conn(&self) -> Option<&ConnectionInfo> {
        let id = self.rows.get(self.conn_nav.selected)?;
        self.connections.get(id)
    }

    /// The feed entries shown, newest first (a paused feed hides what came since).
    pub fn feed_shown(&self) -> impl Iterator<Item = &FeedEntry> {
        let limit = self.feed_paused_at.unwrap_or(u64::MAX);
        self.feed.iter().rev().filter(move |e| e.seq <= limit)
    }

    /// Events that arrived since the feed was paused.
    pub fn feed_unseen(&self) -> u64 {
        self.feed_paused_at
            .map_or(0, |at| self.feed_seq.saturating_sub(at))
    }

    /// Table rows that fit on screen now.
    pub fn page_rows(&self) -> usize {
        crate::ui::table_rows(self.size.1)
    }

    /// Brings the filtered and sorted connections up to date.
    ///
    /// Server messages only mark the table stale, so a burst of connects costs one sort;
    /// `main` calls this before drawing, and `update` after every key.
    pub fn sync(&mut self) {
        if !self.rows_dirty {
            return;
        }
        self.rows_dirty = false;
        let selected = self.rows.get(self.conn_nav.selected).copied();
        let needle = self.filter.value.trim().to_lowercase();
        let mut rows: Vec<&ConnectionInfo> = self
            .connections
            .values()
            .filter(|c| matches_filter(c, &needle))
            .collect();
        // The map iterates in id order, so sorting by id is already done.
        match self.conn_sort {
            ConnSort::Id => {}
            ConnSort::User => rows.sort_by(|a, b| a.user.cmp(&b.user)),
            ConnSort::Topics => rows.sort_by(|a, b| a.topics.first().cmp(&b.topics.first())),
            ConnSort::Age => rows.sort_by_key(|c| c.connected_ms),
            ConnSort::Sent => rows.sort_by_key(|c| c.events_sent),
            ConnSort::Queue => rows.sort_by_key(|c| c.queued_bytes),
        }
        if self.conn_desc {
            rows.reverse();
        }
        self.rows = rows.into_iter().map(|c| c.id).collect();
        // Keep the same connection selected when it is still listed.
        let mut left = None;
        if let Some(id) = selected {
            match self.rows.iter().position(|r| *r == id) {
                Some(at) => self.conn_nav.selected = at,
                None if !self.connections.contains_key(&id) => left = Some(id),
                None => {}
            }
        }
        let page = self.page_rows();
        self.conn_nav.clamp(self.rows.len(), page);
        // The selection now rests on another connection: say so, or `d` might disconnect a
        // client the operator never chose.
        if let Some(id) = left
            && self.view == View::Connections
        {
            let text = match self.rows.get(self.conn_nav.selected) {
                Some(now) => format!("connection {id} left; selection moved to {now}"),
                None => format!("connection {id} left"),
            };
            self.set_status(text, false);
        }
    }

    /// Applies one action; returns the request to make of the server, if any.
    pub fn update(&mut self, action: Action) -> Option<Command> {
        let command = match action {
            Action::Server(msg) => {
                self.handle_server(msg);
                return None;
            }
            Action::Resize { width, height } => {
                self.size = (width, height);
                self.rows_dirty = true;
                self.scroll_help(0);
                None
            }
            key => {
                self.status = None;
                // Keys act on the rows as shown, so bring them up to date first.
                self.sync();
                self.handle_key(key)
            }
        };
        self.sync();
        command
    }

    fn handle_key(&mut self, action: Action) -> Option<Command> {
        match action {
            Action::Quit => self.should_quit = true,
            Action::ToggleHelp => {
                self.show_help = !self.show_help;
                self.help_scroll = 0;
            }
            Action::NextView => {
                self.show_view(View::ALL[(self.view.index() + 1) % View::ALL.len()]);
            }
            Action::PrevView => {
                let views = View::ALL.len();
                self.show_view(View::ALL[(self.view.index() + views - 1) % views]);
            }
            Action::ShowView(view) => self.show_view(view),
            Action::Move(delta) => self.move_by(delta),
            Action::Page(pages) if self.show_help => {
                let (page, _) = crate::ui::help_window(self.size);
                self.scroll_help(pages * page.max(1) as isize);
            }
            Action::Page(pages) => {
                let page = self.page_rows().max(1) as isize;
                self.move_by(pages * page);
            }
            Action::Top => self.move_by(isize::MIN / 2),
            Action::Bottom => self.move_by(isize::MAX / 2),
            Action::OpenFilter => self.filter_editing = true,
            Action::CycleSort => self.cycle_sort(),
            Action::ReverseSort => self.reverse_sort(),
            Action::OpenDetail => {
                if let Some(conn) = self.selected_conn() {
                    self.popup = Popup::Detail {
                        id: conn.id,
                        gone: None,
                    };
                }
            }
            Action::AskDisconnect => self.ask_disconnect(),
            Action::Confirm => {
                if let Popup::ConfirmDisconnect { id, .. } = self.popup {
                    self.popup = Popup::None;
                    self.set_status(format!("disconnecting connection {id}…"), false);
                    return Some(Command::Disconnect(id));
                }
            }
            Action::Cancel => self.cancel(),
            Action::TogglePause => {
                self.feed_paused_at = match self.feed_paused_at {
                    Some(_) => None,
                    None => Some(self.feed_seq),
                };
                if self.feed_paused_at.is_none() {
                    let over = self.feed.len().saturating_sub(FEED_CAPACITY);
                    self.feed.drain(..over);
                }
                self.feed_scroll = 0;
            }
            Action::ClearFeed => {
                self.feed.clear();
                self.feed_scroll = 0;
                if self.feed_paused_at.is_some() {
                    self.feed_paused_at = Some(self.feed_seq);
                }
            }
            Action::OpenCompose => {
                self.popup = Popup::Compose;
                self.compose.outcome = Outcome::None;
            }
            Action::NextField => self.compose.move_focus(true),
            Action::PrevField => self.compose.move_focus(false),
            Action::Choose(forward) => self.compose.choose(forward),
            Action::Edit(edit) => self.edit(edit),
            Action::Paste(text) => self.paste(&text),
            Action::Submit => return self.submit(),
            Action::Resize { .. } | Action::Server(_) => {}
        }
        None
    }

    fn show_view(&mut self, view: View) {
        self.view = view;
        self.filter_editing = false;
    }

    fn move_by(&mut self, delta: isize) {
        if self.show_help {
            self.scroll_help(delta);
            return;
        }
        let page = self.page_rows();
        match self.view {
            View::Connections => self.conn_nav.move_by(delta, self.rows.len(), page),
            View::Topics => self.topic_nav.move_by(delta, self.topics.len(), page),
            View::Nodes => self.node_nav.move_by(delta, self.nodes.len(), page),
            View::Feed => {
                // Scrolling down a live feed pauses it, or the rows would move under the
                // reader; a live feed is already at its top.
                if self.feed_paused_at.is_none() {
                    if delta <= 0 {
                        return;
                    }
                    self.feed_paused_at = Some(self.feed_seq);
                }
                let shown = self.feed_shown().count();
                let max = shown.saturating_sub(page);
                self.feed_scroll = self.feed_scroll.saturating_add_signed(delta).min(max);
            }
        }
    }

    /// Scrolls the key list by `delta` lines, within what the terminal leaves hidden.
    fn scroll_help(&mut self, delta: isize) {
        let (_, hidden) = crate::ui::help_window(self.size);
        self.help_scroll = self.help_scroll.saturating_add_signed(delta).min(hidden);
    }

    fn cycle_sort(&mut self) {
        match self.view {
            View::Connections => {
                self.conn_sort = self.conn_sort.next();
                // Counts read best biggest first; names and ages smallest first.
                self.conn_desc = matches!(self.conn_sort, ConnSort::Sent | ConnSort::Queue);
                self.rows_dirty = true;
            }
            View::Topics => {
                self.topic_sort = self.topic_sort.next();
                self.topic_desc = self.topic_sort != TopicSort::Name;
                self.sort_topics();
            }
            View::Feed | View::Nodes => {}
        }
    }

    fn reverse_sort(&mut self) {
        match self.view {
            View::Connections => {
                self.conn_desc = !self.conn_desc;
                self.rows_dirty = true;
            }
            View::Topics => {
                self.topic_desc = !self.topic_desc;
                self.sort_topics();
            }
            View::Feed | View::Nodes => {}
        }
    }

    fn ask_disconnect(&mut self) {
        let (id, from_detail) = match &self.popup {
            Popup::Detail { id, gone: None } => (*id, true),
            Popup::Detail { .. } => return,
            _ => match self.selected_conn() {
                Some(conn) => (conn.id, false),
                None => return,
            },
        };
        self.popup = Popup::ConfirmDisconnect { id, from_detail };
    }

    fn cancel(&mut self) {
        match self.popup {
            Popup::ConfirmDisconnect {
                id,
                from_detail: true,
            } => {
                let gone = (!self.connections.contains_key(&id)).then(|| "gone".to_owned());
                self.popup = Popup::Detail { id, gone };
            }
            Popup::None if self.filter_editing => {
                self.filter_editing = false;
                self.filter = TextInput::default();
                self.rows_dirty = true;
            }
            Popup::None if !self.filter.value.is_empty() => {
                self.filter = TextInput::default();
                self.rows_dirty = true;
            }
            _ => self.popup = Popup::None,
        }
    }

    fn edit(&mut self, edit: Edit) {
        if self.popup == Popup::Compose {
            let Some(input) = self.compose.focused_input() else {
                return;
            };
            // Every edit that changes the text changes its length; cursor moves leave the
            // content (and what was said about it) as it is.
            let before = input.value.len();
            input.edit(edit);
            if input.value.len() != before {
                self.compose.edited();
            }
        } else if self.filter_editing {
            self.filter.edit(edit);
            self.rows_dirty = true;
        }
    }

    fn paste(&mut self, text: &str) {
        if self.popup == Popup::Compose {
            if self.compose.paste(text) {
                self.compose.edited();
            }
        } else if self.filter_editing {
            self.filter.insert_str(&pasted_text(text, Some(' ')));
            self.rows_dirty = true;
        }
    }

    fn submit(&mut self) -> Option<Command> {
        if self.popup != Popup::Compose {
            // Enter in the filter box keeps the filter and gives the keys back to the table.
            self.filter_editing = false;
            return None;
        }
        if self.compose.outcome == Outcome::Sending {
            return None;
        }
        match self.compose.body() {
            Ok(mut body) => {
                // The same content keeps its key, so a retry is published at most once.
                let key = match &self.compose.key {
                    Some(key) => key.clone(),
                    None => {
                        self.keys_minted += 1;
                        format!("herald-tui-{}-{}", self.instance, self.keys_minted)
                    }
                };
                self.compose.key = Some(key.clone());
                body.idempotency_key = Some(key);
                self.compose.outcome = Outcome::Sending;
                self.compose.outcome_is_stale = false;
                Some(Command::Publish(body))
            }
            Err(why) => {
                self.compose.outcome = Outcome::Invalid(why);
                None
            }
        }
    }

    fn set_status(&mut self, text: String, is_error: bool) {
        self.status = Some(Status { text, is_error });
        self.refresh_failed = false;
    }

    /// A refresh came back: a "refresh failed" it followed is no longer true.
    fn refreshed(&mut self) {
        if self.refresh_failed {
            self.status = None;
            self.refresh_failed = false;
        }
    }

    fn handle_server(&mut self, msg: ServerMsg) {
        match msg {
            ServerMsg::Link(link) => {
                // Live again after going down: the client's attempts count from 1 since the
                // stream last worked, so any after the first follow a loss.
                let lost = matches!(
                    self.link,
                    LinkState::Down { .. } | LinkState::Connecting { attempt: 2.. }
                );
                if link == LinkState::Live && lost {
                    self.set_status("reconnected to the server".to_owned(), false);
                }
                self.link = link;
            }
            ServerMsg::Snapshot(snapshot) => self.handle_snapshot(*snapshot),
            ServerMsg::Admin(event) => self.handle_admin(*event),
            ServerMsg::Connections(list) => {
                // The first answer of each refresh (the client sends them in order).
                self.refreshed();
                self.connections = list
                    .into_iter()
                    .filter(|c| !self.recently_gone.contains(&c.id))
                    .map(|c| (c.id, c))
                    .collect();
                self.recently_gone.clear();
                self.rows_dirty = true;
            }
            ServerMsg::StatsPoll { stats, topics } => self.handle_topics(stats.uptime_ms, topics),
            ServerMsg::Nodes(answer) => self.handle_nodes(answer),
            ServerMsg::PollFailed(err) => {
                if self.link == LinkState::Live {
                    self.set_status(format!("refresh failed: {err}"), true);
                    self.refresh_failed = true;
                }
            }
            ServerMsg::Published(result) => self.handle_published(result),
            ServerMsg::Kicked(id, Ok(())) => {
                self.set_status(format!("disconnected connection {id}"), false);
            }
            ServerMsg::Kicked(id, Err(err)) => {
                self.set_status(format!("could not disconnect {id}: {err}"), true);
            }
        }
    }

    fn handle_snapshot(&mut self, snapshot: Snapshot) {
        self.take_stats(snapshot.stats.clone());
        self.connections = snapshot
            .connections
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        self.recently_gone.clear();
        self.rows_dirty = true;
        // A new admin stream: the server names it in the first admin `connected` event.
        self.own_stream = OwnStream::Awaiting;
        self.handle_topics(snapshot.stats.uptime_ms, snapshot.topics);
        if let Popup::Detail { id, gone } = &mut self.popup
            && gone.is_none()
            && !self.connections.contains_key(id)
        {
            *gone = Some("gone".to_owned());
        }
    }

    fn handle_admin(&mut self, event: AdminEvent) {
        match event {
            AdminEvent::Connected(conn) => {
                // The server sends the snapshot, then this very stream's `connected` event.
                if self.own_stream == OwnStream::Awaiting && conn.admin {
                    self.own_stream = OwnStream::Known(conn.id);
                }
                self.connections.insert(conn.id, conn);
                self.rows_dirty = true;
            }
            AdminEvent::Disconnected(d) => {
                self.connections.remove(&d.id);
                self.recently_gone.insert(d.id);
                self.rows_dirty = true;
                match &mut self.popup {
                    Popup::Detail { id, gone } if *id == d.id => *gone = Some(d.reason),
                    Popup::ConfirmDisconnect { id, .. } if *id == d.id => {
                        self.popup = Popup::None;
                        let text = format!("connection {} is already gone ({})", d.id, d.reason);
                        self.set_status(text, false);
                    }
                    _ => {}
                }
            }
            AdminEvent::Published(event) => {
                self.feed_seq += 1;
                match self.feed_paused_at {
                    // A paused feed keeps what it shows, and the newest events it has not
                    // shown yet, up to the capacity each.
                    Some(at) => {
                        let shown = self.feed.partition_point(|e| e.seq <= at);
                        if self.feed.len() - shown == FEED_CAPACITY {
                            self.feed.remove(shown);
                        }
                    }
                    None if self.feed.len() >= FEED_CAPACITY => {
                        self.feed.pop_front();
                    }
                    None => {}
                }
                self.feed.push_back(FeedEntry {
                    seq: self.feed_seq,
                    event,
                });
            }
            AdminEvent::Stats(stats) => self.take_stats(stats),
        }
    }

    fn take_stats(&mut self, stats: Stats) {
        let c = &stats.counters;
        self.published.sample(stats.uptime_ms, c.committed);
        self.delivered.sample(stats.uptime_ms, c.delivered);
        self.open.level(c.connections);
        self.stats = Some(stats);
    }

    fn handle_topics(&mut self, uptime_ms: u64, topics: Vec<TopicInfo>) {
        let prev = self.topic_prev.take();
        let rows = topics
            .into_iter()
            .map(|info| {
                let rate = prev.as_ref().and_then(|(prev_ms, counts)| {
                    let before = *counts.get(&info.topic)?;
                    rate_between((*prev_ms, before), (uptime_ms, info.events))
                });
                TopicRow { info, rate }
            })
            .collect::<Vec<_>>();
        let counts = rows
            .iter()
            .map(|r| (r.info.topic.clone(), r.info.events))
            .collect();
        self.topic_prev = Some((uptime_ms, counts));
        self.topics = rows;
        self.sort_topics();
    }

    fn handle_nodes(&mut self, answer: NodesAnswer) {
        let prev: BTreeMap<String, NodeInfo> = self
            .nodes
            .drain(..)
            .map(|row| (row.info.name.clone(), row.info))
            .collect();
        self.nodes = answer
            .nodes
            .into_iter()
            .map(|info| {
                let before = prev.get(&info.name);
                let rate = |count: fn(&NodeInfo) -> u64| {
                    let before = before?;
                    rate_between(
                        (before.uptime_ms, count(before)),
                        (info.uptime_ms, count(&info)),
                    )
                };
                NodeRow {
                    published_rate: rate(|n| n.counters.published),
                    delivered_rate: rate(|n| n.counters.delivered),
                    info,
                }
            })
            .collect();
        self.node_self = Some((answer.node, answer.cluster));
        self.registry_ms_ago = answer.registry_ms_ago;
        let page = self.page_rows();
        self.node_nav.clamp(self.nodes.len(), page);
    }

    fn sort_topics(&mut self) {
        match self.topic_sort {
            TopicSort::Name => self.topics.sort_by(|a, b| a.info.topic.cmp(&b.info.topic)),
            TopicSort::Subscribers => self.topics.sort_by_key(|t| t.info.subscribers),
            TopicSort::Events => self.topics.sort_by_key(|t| t.info.events),
            TopicSort::Rate => self.topics.sort_by(|a, b| {
                let (a, b) = (a.rate.unwrap_or(0.0), b.rate.unwrap_or(0.0));
                a.total_cmp(&b)
            }),
        }
        if self.topic_desc {
            self.topics.reverse();
        }
        let page = self.page_rows();
        self.topic_nav.clamp(self.topics.len(), page);
    }

    fn handle_published(&mut self, result: Result<String, ApiError>) {
        let (outcome, status) = match result {
            Ok(id) => {
                // Published for sure: the next send of this content is a new event.
                self.compose.key = None;
                (
                    Outcome::Sent(id.clone()),
                    Status {
                        text: format!("published event {id}"),
                        is_error: false,
                    },
                )
            }
            Err(err) if may_have_arrived(&err) => (
                Outcome::Failed(format!(
                    "{err}; it may have been published: Enter sends it again safely (at most once)"
                )),
                Status {
                    text: format!(
                        "publish unconfirmed ({err}); it may have been published: \
                         p, Enter sends it again safely"
                    ),
                    is_error: true,
                },
            ),
            Err(err) => (
                Outcome::Failed(err.to_string()),
                Status {
                    text: format!("publish failed: {err}"),
                    is_error: true,
                },
            ),
        };
        self.compose.outcome = outcome;
        if self.popup != Popup::Compose {
            self.status = Some(status);
        }
    }
}

/// A publish that failed without an answer after the request may have left: the server
/// may have published it (all but a refused connection, which sent nothing).
fn may_have_arrived(err: &ApiError) -> bool {
    err.status.is_none() && !err.message.starts_with("cannot reach the server")
}

fn matches_filter(conn: &ConnectionInfo, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    let user_hit = conn
        .user
        .as_deref()
        .is_some_and(|u| u.to_lowercase().contains(needle));
    user_hit
        || conn
            .topics
            .iter()
            .any(|t| t.to_lowercase().contains(needle))
}

#[cfg(test)]
pub(crate) mod tests {
    use herald_core::admin::{Disconnected, Published};
    use herald_core::{Counters, EventId, LogBounds, Protocol};

    use super::*;

    /// A connection as the server would describe it.
    pub fn conn(id: u64, user: Option<&str>, topics: &[&str]) -> ConnectionInfo {
        ConnectionInfo {
            id: ConnId(id),
            user: user.map(str::to_owned),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            remote: Some(format!("10.0.0.{}:{}", id % 250 + 1, 40000 + id)),
            protocol: Some(if id.is_multiple_of(2) {
                Protocol::Http2
            } else {
                Protocol::Http1
            }),
            tls: id.is_multiple_of(2),
            connected_ms: 1000 * (600 - id.min(600)),
            events_sent: id * 7,
            bytes_sent: id * 700,
            last_id: (id > 1).then(|| format!("1700000000000-{}", id % 100)),
            replaying: false,
            admin: false,
            queued_bytes: if id.is_multiple_of(10) { 4096 } else { 0 },
            queued_ms: if id.is_multiple_of(10) { 1_250 } else { 0 },
        }
    }

    /// Stats at `uptime_s` with the given totals.
    pub fn stats(uptime_s: u64, published: u64, delivered: u64) -> Stats {
        Stats {
            uptime_ms: uptime_s * 1000,
            counters: Counters {
                connections: 3,
                connections_total: 10,
                published,
                committed: published,
                delivered,
                slow_consumer_closes: 2,
                ..Counters::default()
            },
            last_id: Some("1700000000000-41".to_owned()),
            committed_id: Some("1700000000000-41".to_owned()),
            pending: 0,
            topics: 2,
            log: LogBounds {
                oldest: Some(EventId::new(1_699_999_000_000, 0)),
                floor: None,
                events: 1234,
                bytes: 5 << 20,
            },
            latency: herald_core::Latency {
                window_ms: 10_000,
                publish: Some(herald_core::Quantiles {
                    count: 300,
                    p50_us: 1_650,
                    p99_us: 4_100,
                }),
                delivery: Some(herald_core::Quantiles {
                    count: 4_800,
                    p50_us: 210,
                    p99_us: 12_400,
                }),
            },
            ..Stats::default()
        }
    }

    pub fn published(id: &str, topics: &[&str], preview: &str) -> Published {
        Published {
            id: id.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            users: Vec::new(),
            broadcast: false,
            event_type: Some("order.created".to_owned()),
            preview: preview.to_owned(),
            recipients: 3,
        }
    }

    fn server(app: &mut App, msg: ServerMsg) {
        assert_eq!(app.update(Action::Server(msg)), None);
        app.sync();
    }

    pub fn admin(app: &mut App, event: AdminEvent) {
        server(app, ServerMsg::Admin(Box::new(event)));
    }

    fn type_text(app: &mut App, text: &str) {
        for c in text.chars() {
            app.update(Action::Edit(Edit::Insert(c)));
        }
    }

    fn with_connections(n: u64) -> App {
        let mut app = App::new("http://127.0.0.1:7070");
        let snapshot = Snapshot {
            stats: stats(60, 0, 0),
            connections: (1..=n)
                .map(|i| conn(i, Some("alice"), &["orders"]))
                .collect(),
            topics: Vec::new(),
        };
        server(&mut app, ServerMsg::Snapshot(Box::new(snapshot)));
        app
    }

    #[test]
    fn rates_come_from_counter_deltas_between_samples() {
        let mut app = App::new("x");
        admin(&mut app, AdminEvent::Stats(stats(10, 100, 1000)));
        assert_eq!(app.published.last(), None, "one sample has no rate yet");
        admin(&mut app, AdminEvent::Stats(stats(12, 140, 1400)));
        assert_eq!(app.published.last(), Some(20));
        assert_eq!(app.delivered.last(), Some(200));
        // Connections are a level: each sample as it is.
        assert_eq!(app.open.history, [3, 3]);
    }

    /// A nodes poll: each node as `(name, uptime s, connections, published, delivered)`.
    pub fn nodes_answer(
        me: &str,
        cluster: bool,
        nodes: &[(&str, u64, u64, u64, u64)],
    ) -> ServerMsg {
        let nodes = nodes
            .iter()
            .map(
                |&(name, up_s, connections, published, delivered)| NodeInfo {
                    name: name.to_owned(),
                    uptime_ms: up_s * 1000,
                    counters: Counters {
                        connections,
                        published,
                        delivered,
                        ..Counters::default()
                    },
                    committed_id: Some("1700000000000-41".to_owned()),
                    seen_ms_ago: if name == me { 0 } else { 400 },
                    // A node that delivers nothing has no figure; a busy one a slow tail.
                    latency: herald_core::Latency {
                        window_ms: 10_000,
                        delivery: (delivered > 0).then_some(herald_core::Quantiles {
                            count: delivered * 10,
                            p50_us: 300,
                            p99_us: if connections > 1000 { 1_400_000 } else { 9_000 },
                        }),
                        ..herald_core::Latency::default()
                    },
                },
            )
            .collect();
        ServerMsg::Nodes(NodesAnswer {
            cluster,
            node: me.to_owned(),
            nodes,
            registry_ms_ago: cluster.then_some(300),
        })
    }

    #[test]
    fn node_rates_come_from_each_nodes_own_counters_between_polls() {
        let mut app = App::new("x");
        let me = "web-1:7070";
        server(
            &mut app,
            nodes_answer(
                me,
                true,
                &[(me, 10, 5, 100, 1000), ("web-2:7070", 50, 7, 0, 0)],
            ),
        );
        assert!(app.nodes.iter().all(|n| n.published_rate.is_none()));
        // web-2 restarted (its uptime went back): no rate for it, a new baseline instead; a
        // third node appeared.
        server(
            &mut app,
            nodes_answer(
                me,
                true,
                &[
                    (me, 12, 5, 140, 1600),
                    ("web-2:7070", 1, 0, 0, 0),
                    ("web-3:7070", 9, 1, 3, 3),
                ],
            ),
        );
        let rates: Vec<_> = app
            .nodes
            .iter()
            .map(|n| (n.info.name.as_str(), n.published_rate, n.delivered_rate))
            .collect();
        assert_eq!(
            rates,
            [
                (me, Some(20.0), Some(300.0)),
                ("web-2:7070", None, None),
                ("web-3:7070", None, None),
            ]
        );
        assert_eq!(app.node_self, Some((me.to_owned(), true)));
        app.update(Action::ShowView(View::Nodes));
        app.update(Action::Bottom);
        assert_eq!(app.node_nav.selected, 2);
    }

    #[test]
    fn in_cluster_mode_the_publish_rate_counts_other_instances_publishes_too() {
        let mut app = App::new("x");
        let mut sample = stats(10, 0, 0);
        admin(&mut app, AdminEvent::Stats(sample.clone()));
        // This instance accepted 2 publishes; the shared log brought it 30 events in all.
        sample.uptime_ms = 12_000;
        sample.counters.published = 2;
        sample.counters.committed = 30;
        admin(&mut app, AdminEvent::Stats(sample));
        assert_eq!(app.published.last(), Some(15));
    }

    #[test]
    fn a_server_restart_starts_a_new_baseline_instead_of_a_bogus_rate() {
        let mut app = App::new("x");
        admin(&mut app, AdminEvent::Stats(stats(100, 5000, 5000)));
        admin(&mut app, AdminEvent::Stats(stats(101, 5010, 5010)));
        admin(&mut app, AdminEvent::Stats(stats(1, 0, 0)));
        admin(&mut app, AdminEvent::Stats(stats(2, 3, 3)));
        assert_eq!(
            app.published.history.iter().copied().collect::<Vec<_>>(),
            [10, 3]
        );
    }

    #[test]
    fn sparkline_history_keeps_one_minute() {
        let mut app = App::new("x");
        for s in 0..100 {
            admin(&mut app, AdminEvent::Stats(stats(s, s * 2, s * 4)));
        }
        assert_eq!(app.published.history.len(), RATE_HISTORY);
    }

    #[test]
    fn connected_and_disconnected_events_update_the_table() {
        let mut app = with_connections(2);
        admin(
            &mut app,
            AdminEvent::Connected(conn(3, Some("bob"), &["news"])),
        );
        assert_eq!(app.conn_rows(), [ConnId(1), ConnId(2), ConnId(3)]);
        admin(
            &mut app,
            AdminEvent::Disconnected(Disconnected {
                id: ConnId(1),
                reason: "client_gone".to_owned(),
                events_sent: 0,
            }),
        );
        assert_eq!(app.conn_rows(), [ConnId(2), ConnId(3)]);
    }

    #[test]
    fn a_poll_answer_does_not_bring_back_a_connection_that_just_left() {
        let mut app = with_connections(2);
        admin(
            &mut app,
            AdminEvent::Disconnected(Disconnected {
                id: ConnId(2),
                reason: "kicked".to_owned(),
                events_sent: 0,
            }),
        );
        let stale = vec![conn(1, None, &[]), conn(2, None, &[])];
        server(&mut app, ServerMsg::Connections(stale));
        assert_eq!(app.conn_rows(), [ConnId(1)]);
    }

    #[test]
    fn filter_matches_user_or_topic_and_escape_clears_it() {
        let mut app = App::new("x");
        let snapshot = Snapshot {
            connections: vec![
                conn(1, Some("alice"), &["orders"]),
                conn(2, Some("bob"), &["news/eu"]),
                conn(3, None, &["Orders/returns"]),
            ],
            ..Snapshot::default()
        };
        server(&mut app, ServerMsg::Snapshot(Box::new(snapshot)));
        app.update(Action::OpenFilter);
        type_text(&mut app, "order");
        assert_eq!(app.conn_rows(), [ConnId(1), ConnId(3)]);
        app.update(Action::Submit);
        assert_eq!(app.mode(), Mode::Normal(View::Connections));
        assert_eq!(app.conn_rows(), [ConnId(1), ConnId(3)], "Enter keeps it");
        app.update(Action::OpenFilter);
        app.update(Action::Edit(Edit::Clear));
        type_text(&mut app, "BOB");
        assert_eq!(app.conn_rows(), [ConnId(2)]);
        app.update(Action::Cancel);
        assert_eq!(app.conn_rows().len(), 3);
    }

    #[test]
    fn sorting_keeps_the_selected_connection_selected() {
        let mut app = App::new("x");
        let snapshot = Snapshot {
            connections: vec![
                conn(1, Some("carol"), &[]),
                conn(2, Some("alice"), &[]),
                conn(3, Some("bob"), &[]),
            ],
            ..Snapshot::default()
        };
        server(&mut app, ServerMsg::Snapshot(Box::new(snapshot)));
        app.update(Action::Move(2));
        assert_eq!(app.selected_conn().map(|c| c.id), Some(ConnId(3)));
        app.update(Action::CycleSort);
        assert_eq!(app.conn_sort, ConnSort::User);
        assert_eq!(app.conn_rows(), [ConnId(2), ConnId(3), ConnId(1)]);
        assert_eq!(app.selected_conn().map(|c| c.id), Some(ConnId(3)));
        app.update(Action::ReverseSort);
        assert_eq!(app.conn_rows(), [ConnId(1), ConnId(3), ConnId(2)]);
    }

    #[test]
    fn scrolling_keeps_the_selection_on_screen() {
        let mut app = with_connections(1000);
        app.update(Action::Resize {
            width: 80,
            height: 24,
        });
        let page = app.page_rows();
        app.update(Action::Page(1));
        assert_eq!(app.conn_nav.selected, page);
        assert_eq!(app.conn_nav.offset, 1);
        app.update(Action::Bottom);
        assert_eq!(app.conn_nav.selected, 999);
        assert_eq!(app.conn_nav.offset, 1000 - page);
        app.update(Action::Top);
        assert_eq!(app.conn_nav, Nav::default());
    }

    #[test]
    fn disconnect_asks_first_and_sends_only_on_yes() {
        let mut app = with_connections(3);
        app.update(Action::Move(1));
        assert_eq!(app.update(Action::AskDisconnect), None);
        assert_eq!(app.mode(), Mode::Confirm);
        assert_eq!(app.update(Action::Cancel), None);
        assert_eq!(app.popup, Popup::None);
        app.update(Action::AskDisconnect);
        assert_eq!(
            app.update(Action::Confirm),
            Some(Command::Disconnect(ConnId(2)))
        );
        server(&mut app, ServerMsg::Kicked(ConnId(2), Ok(())));
        assert_eq!(
            app.status.as_ref().map(|s| s.text.as_str()),
            Some("disconnected connection 2")
        );
    }

    #[test]
    fn detail_notes_when_its_connection_goes_away() {
        let mut app = with_connections(2);
        app.update(Action::OpenDetail);
        admin(
            &mut app,
            AdminEvent::Disconnected(Disconnected {
                id: ConnId(1),
                reason: "slow_consumer".to_owned(),
                events_sent: 9,
            }),
        );
        assert_eq!(
            app.popup,
            Popup::Detail {
                id: ConnId(1),
                gone: Some("slow_consumer".to_owned())
            }
        );
        assert_eq!(app.update(Action::AskDisconnect), None);
        assert_eq!(app.mode(), Mode::Detail);
    }

    #[test]
    fn compose_refuses_invalid_json_and_says_why() {
        let mut app = App::new("x");
        app.update(Action::OpenCompose);
        app.update(Action::NextField);
        type_text(&mut app, "orders");
        app.update(Action::NextField);
        app.update(Action::NextField);
        app.update(Action::NextField);
        assert_eq!(app.compose.focus, Field::Data);
        type_text(&mut app, "{\"id\": 42,");
        assert_eq!(app.update(Action::Submit), None);
        let Outcome::Invalid(why) = &app.compose.outcome else {
            panic!("{:?}", app.compose.outcome)
        };
        assert!(why.starts_with("data is not valid JSON"), "{why}");
    }

    #[test]
    fn compose_sends_json_values_and_text_as_a_string() {
        let mut app = App::new("x");
        app.update(Action::OpenCompose);
        app.update(Action::NextField);
        type_text(&mut app, "orders, news/eu");
        app.update(Action::NextField);
        type_text(&mut app, "order.created");
        app.update(Action::NextField);
        app.update(Action::NextField);
        type_text(&mut app, "{\"id\": 42}");
        let expected = PublishBody {
            topics: vec!["orders".to_owned(), "news/eu".to_owned()],
            users: Vec::new(),
            broadcast: false,
            event: Some("order.created".to_owned()),
            data: JsonText::parse("{\"id\": 42}").unwrap(),
            idempotency_key: Some("herald-tui-0-1".to_owned()),
        };
        assert_eq!(app.update(Action::Submit), Some(Command::Publish(expected)));
        assert_eq!(app.update(Action::Submit), None, "no double send");
        server(
            &mut app,
            ServerMsg::Published(Ok("1700000000000-7".to_owned())),
        );
        assert_eq!(
            app.compose.outcome,
            Outcome::Sent("1700000000000-7".to_owned())
        );

        app.update(Action::PrevField);
        app.update(Action::Choose(true));
        assert_eq!(app.compose.format, DataFormat::Text);
        let Some(Command::Publish(body)) = app.update(Action::Submit) else {
            panic!("not sent")
        };
        assert_eq!(body.data.as_str(), r#""{\"id\": 42}""#);
    }

    #[test]
    fn broadcast_skips_the_target_field_and_needs_no_names() {
        let mut app = App::new("x");
        app.update(Action::OpenCompose);
        app.update(Action::Choose(false));
        assert_eq!(app.compose.kind, TargetKind::Broadcast);
        app.update(Action::NextField);
        assert_eq!(app.compose.focus, Field::Event);
        app.update(Action::NextField);
        app.update(Action::Choose(true));
        app.update(Action::NextField);
        type_text(&mut app, "hello everyone");
        let Some(Command::Publish(body)) = app.update(Action::Submit) else {
            panic!("not sent: {:?}", app.compose.outcome)
        };
        assert!(body.broadcast);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "topics": [], "users": [], "broadcast": true, "data": "hello everyone",
                "idempotency_key": "herald-tui-0-1",
            })
        );
    }

    #[test]
    fn a_topic_target_needs_a_name() {
        let mut app = App::new("x");
        app.update(Action::OpenCompose);
        app.update(Action::Submit);
        assert_eq!(
            app.compose.outcome,
            Outcome::Invalid("name at least one topic".to_owned())
        );
    }

    #[test]
    fn the_server_error_shows_in_the_form() {
        let mut app = App::new("x");
        app.update(Action::OpenCompose);
        server(
            &mut app,
            ServerMsg::Published(Err(ApiError {
                status: Some(403),
                message: "this token may not publish".to_owned(),
            })),
        );
        assert_eq!(
            app.compose.outcome,
            Outcome::Failed("403: this token may not publish".to_owned())
        );
    }

    #[test]
    fn text_input_edits_at_the_cursor_by_character() {
        let mut input = TextInput::new("héllo");
        input.edit(Edit::Left);
        input.edit(Edit::Left);
        input.edit(Edit::Backspace);
        input.edit(Edit::Insert('L'));
        assert_eq!(input.value, "héLlo");
        input.edit(Edit::Home);
        input.edit(Edit::Delete);
        assert_eq!(input.value, "éLlo");
        input.edit(Edit::Backspace);
        assert_eq!(input.value, "éLlo");
    }

    #[test]
    fn a_paused_feed_holds_still_and_counts_what_it_missed() {
        let mut app = App::new("x");
        app.update(Action::ShowView(View::Feed));
        admin(
            &mut app,
            AdminEvent::Published(published("1-0", &["a"], "one")),
        );
        app.update(Action::TogglePause);
        admin(
            &mut app,
            AdminEvent::Published(published("1-1", &["a"], "two")),
        );
        let shown: Vec<_> = app.feed_shown().map(|e| e.event.id.as_str()).collect();
        assert_eq!(shown, ["1-0"]);
        assert_eq!(app.feed_unseen(), 1);
        app.update(Action::TogglePause);
        let shown: Vec<_> = app.feed_shown().map(|e| e.event.id.as_str()).collect();
        assert_eq!(shown, ["1-1", "1-0"]);
    }

    #[test]
    fn a_paused_feed_keeps_what_it_shows_however_much_comes_after() {
        let mut app = App::new("x");
        let publish = |app: &mut App, i: usize| {
            admin(
                app,
                AdminEvent::Published(published(&format!("1-{i}"), &["a"], "x")),
            );
        };
        for i in 0..5 {
            publish(&mut app, i);
        }
        app.update(Action::TogglePause);
        for i in 5..(5 + 3 * FEED_CAPACITY) {
            publish(&mut app, i);
        }
        let shown: Vec<_> = app.feed_shown().map(|e| e.event.id.as_str()).collect();
        assert_eq!(shown, ["1-4", "1-3", "1-2", "1-1", "1-0"]);
        assert_eq!(app.feed_unseen(), 3 * FEED_CAPACITY as u64);
        assert_eq!(app.feed.len(), 5 + FEED_CAPACITY, "bounded while paused");
        // Following again shows the newest, within the capacity.
        app.update(Action::TogglePause);
        let shown: Vec<_> = app.feed_shown().map(|e| e.event.id.clone()).collect();
        assert_eq!(shown.len(), FEED_CAPACITY);
        assert_eq!(shown[0], format!("1-{}", 4 + 3 * FEED_CAPACITY));
    }

    #[test]
    fn the_feed_keeps_a_bounded_number_of_events() {
        let mut app = App::new("x");
        for i in 0..(FEED_CAPACITY + 10) {
            admin(
                &mut app,
                AdminEvent::Published(published(&format!("1-{i}"), &["a"], "x")),
            );
        }
        assert_eq!(app.feed.len(), FEED_CAPACITY);
    }

    #[test]
    fn topic_rates_come_from_event_deltas_between_polls() {
        let mut app = App::new("x");
        let topic = |events| TopicInfo {
            topic: "orders".to_owned(),
            subscribers: 2,
            events,
        };
        let poll = |s, events| ServerMsg::StatsPoll {
            stats: Box::new(stats(s, 0, 0)),
            topics: vec![topic(events)],
        };
        server(&mut app, poll(10, 100));
        assert_eq!(app.topics[0].rate, None);
        server(&mut app, poll(12, 150));
        assert_eq!(app.topics[0].rate, Some(25.0));
    }

    #[test]
    fn the_topics_sort_key_visits_every_column_shown() {
        let mut app = App::new("x");
        let topic = |name: &str, subscribers, events| TopicInfo {
            topic: name.to_owned(),
            subscribers,
            events,
        };
        let poll = |s, k: u64| ServerMsg::StatsPoll {
            stats: Box::new(stats(s, 0, 0)),
            topics: vec![
                // Most events, least traffic now; most subscribers; fastest.
                topic("archive", 1, 1_000_000 + k),
                topic("busy", 500, 10 + k),
                topic("chat", 2, 100 + 100 * k),
            ],
        };
        server(&mut app, poll(10, 0));
        server(&mut app, poll(11, 1));
        app.update(Action::ShowView(View::Topics));
        let first = |app: &App| app.topics[0].info.topic.clone();
        let mut order = vec![(app.topic_sort, first(&app))];
        for _ in 0..4 {
            app.update(Action::CycleSort);
            order.push((app.topic_sort, first(&app)));
        }
        assert_eq!(
            order,
            [
                (TopicSort::Name, "archive".to_owned()),
                (TopicSort::Subscribers, "busy".to_owned()),
                (TopicSort::Events, "archive".to_owned()),
                (TopicSort::Rate, "chat".to_owned()),
                (TopicSort::Name, "archive".to_owned()),
            ]
        );
    }

    #[test]
    fn link_changes_show_in_the_state_and_reconnects_are_announced() {
        let mut app = App::new("x");
        let down = LinkState::Down {
            error: "connection refused".to_owned(),
            retry_ms: 2000,
        };
        server(&mut app, ServerMsg::Link(down.clone()));
        assert_eq!(app.link, down);
        // The client tries again before the stream is live.
        let connecting = LinkState::Connecting { attempt: 2 };
        server(&mut app, ServerMsg::Link(connecting));
        server(&mut app, ServerMsg::Link(LinkState::Live));
        assert_eq!(
            app.status.as_ref().map(|s| s.text.as_str()),
            Some("reconnected to the server")
        );
    }

    #[test]
    fn a_failed_refresh_is_no_longer_shown_once_one_succeeds() {
        let mut app = App::new("x");
        server(&mut app, ServerMsg::Link(LinkState::Live));
        let failed = ApiError {
            status: None,
            message: "no answer within 5s".to_owned(),
        };
        server(&mut app, ServerMsg::PollFailed(failed));
        assert!(app.status.as_ref().is_some_and(|s| s.is_error));
        server(&mut app, ServerMsg::Connections(Vec::new()));
        assert_eq!(app.status, None);
        // Other messages stay until a key is pressed.
        app.set_status("disconnecting connection 3…".to_owned(), false);
        server(&mut app, ServerMsg::Connections(Vec::new()));
        assert!(app.status.is_some());
    }

    /// An app with the compose form open on the data field, topic `orders` named.
    fn composing() -> App {
        let mut app = App::new("x");
        app.update(Action::OpenCompose);
        app.update(Action::NextField);
        type_text(&mut app, "orders");
        for _ in 0..3 {
            app.update(Action::NextField);
        }
        assert_eq!(app.compose.focus, Field::Data);
        app
    }

    fn sent_key(command: Option<Command>) -> String {
        let Some(Command::Publish(body)) = command else {
            panic!("not sent: {command:?}")
        };
        body.idempotency_key.expect("every publish has a key")
    }

    #[test]
    fn a_paste_is_text_in_the_field_never_a_send_nor_a_focus_change() {
        let mut app = composing();
        app.update(Action::PrevField);
        app.update(Action::Choose(true));
        assert_eq!(app.compose.format, DataFormat::Text);
        app.update(Action::NextField);
        assert_eq!(
            app.update(Action::Paste("line one\r\nline\ttwo\n".to_owned())),
            None
        );
        assert_eq!(app.compose.focus, Field::Data);
        assert_eq!(app.compose.outcome, Outcome::None);
        assert_eq!(app.compose.data.value, "line one\nline\ttwo\n");
        // What the field holds is what is sent, newlines and all.
        let Some(Command::Publish(body)) = app.update(Action::Submit) else {
            panic!("not sent: {:?}", app.compose.outcome)
        };
        assert_eq!(body.data.as_str(), r#""line one\nline\ttwo\n""#);
    }

    #[test]
    fn a_pasted_list_of_names_is_split_at_its_line_breaks_and_a_choice_takes_no_paste() {
        let mut app = App::new("x");
        app.update(Action::OpenCompose);
        // On the target kind, pasted letters must not pick another kind.
        app.update(Action::Paste("ub\t".to_owned()));
        assert_eq!(app.compose.kind, TargetKind::Topic);
        assert_eq!(app.compose.focus, Field::Kind);
        app.update(Action::NextField);
        app.update(Action::Paste("orders\nnews/eu\n".to_owned()));
        assert_eq!(app.compose.targets(), ["orders", "news/eu"]);
        app.update(Action::NextField);
        app.update(Action::Paste("order.created\n".to_owned()));
        assert_eq!(app.compose.event_type.value, "order.created ");
        assert_eq!(app.compose.focus, Field::Event);
    }

    #[test]
    fn a_paste_into_the_filter_is_one_line_whatever_its_line_breaks() {
        let mut app = App::new("x");
        app.update(Action::OpenFilter);
        app.update(Action::Paste("ali\r\nce\tbob\rx\u{7}y\n".to_owned()));
        assert_eq!(app.filter.value, "ali ce bob xy ");
        assert_eq!(pasted_text("a\r\nb\rc", None), "a\nb\nc");
    }

    #[test]
    fn user_names_are_split_on_commas_only_so_a_space_stays_in_the_name() {
        let mut app = App::new("x");
        app.update(Action::OpenCompose);
        app.update(Action::Choose(true));
        assert_eq!(app.compose.kind, TargetKind::User);
        app.update(Action::NextField);
        type_text(&mut app, " john smith ,ann,, ");
        app.update(Action::NextField);
        app.update(Action::NextField);
        app.update(Action::Choose(true));
        app.update(Action::NextField);
        type_text(&mut app, "hi");
        let Some(Command::Publish(body)) = app.update(Action::Submit) else {
            panic!("not sent: {:?}", app.compose.outcome)
        };
        assert_eq!(body.users, ["john smith", "ann"]);
    }

    #[test]
    fn a_retry_after_a_timeout_reuses_the_key_and_new_content_gets_a_new_one() {
        let mut app = composing();
        type_text(&mut app, "1");
        let first = sent_key(app.update(Action::Submit));
        server(
            &mut app,
            ServerMsg::Published(Err(ApiError {
                status: None,
                message: "no answer within 5s".to_owned(),
            })),
        );
        let Outcome::Failed(why) = &app.compose.outcome else {
            panic!("{:?}", app.compose.outcome)
        };
        assert!(why.contains("may have been published"), "{why}");
        assert!(
            why.contains("Enter sends it again safely (at most once)"),
            "{why}"
        );
        // Enter again: the same event, so the same key (the server publishes it once).
        assert_eq!(sent_key(app.update(Action::Submit)), first);
        server(&mut app, ServerMsg::Published(Ok("1-1".to_owned())));
        // Confirmed: sending the same content again is a new event.
        let second = sent_key(app.update(Action::Submit));
        assert_ne!(second, first);
        server(
            &mut app,
            ServerMsg::Published(Err(ApiError {
                status: Some(503),
                message: "the log is unavailable".to_owned(),
            })),
        );
        // Changed content is another event.
        type_text(&mut app, "2");
        let third = sent_key(app.update(Action::Submit));
        assert!(![&first, &second].contains(&&third), "{third}");
        // Keys of another run of the console differ.
        let mut other = App::new("x").with_instance("b".to_owned());
        other.popup = Popup::Compose;
        other.compose = app.compose.clone();
        other.compose.key = None;
        other.compose.outcome = Outcome::None;
        assert_eq!(sent_key(other.update(Action::Submit)), "herald-tui-b-1");
    }

    #[test]
    fn a_refused_connection_is_not_said_to_have_maybe_published() {
        let mut app = composing();
        type_text(&mut app, "1");
        app.update(Action::Submit);
        let refused = ApiError {
            status: None,
            message: "cannot reach the server: Connection refused".to_owned(),
        };
        server(&mut app, ServerMsg::Published(Err(refused)));
        let Outcome::Failed(why) = &app.compose.outcome else {
            panic!("{:?}", app.compose.outcome)
        };
        assert!(!why.contains("may have been"), "{why}");
    }

    #[test]
    fn editing_the_form_clears_what_was_said_about_its_previous_content() {
        let mut app = App::new("x");
        app.update(Action::OpenCompose);
        app.update(Action::Submit);
        assert_eq!(
            app.compose.outcome,
            Outcome::Invalid("name at least one topic".to_owned())
        );
        app.update(Action::NextField);
        assert!(matches!(app.compose.outcome, Outcome::Invalid(_)));
        type_text(&mut app, "o");
        assert_eq!(app.compose.outcome, Outcome::None);

        let mut app = composing();
        type_text(&mut app, "1");
        app.update(Action::Submit);
        server(&mut app, ServerMsg::Published(Ok("1-1".to_owned())));
        // Moving the cursor changes nothing; an edit does.
        app.update(Action::Edit(Edit::Left));
        assert_eq!(app.compose.outcome, Outcome::Sent("1-1".to_owned()));
        app.update(Action::Edit(Edit::End));
        app.update(Action::Edit(Edit::Backspace));
        assert_eq!(app.compose.outcome, Outcome::None);
        // So does a choice.
        type_text(&mut app, "2");
        app.update(Action::Submit);
        server(&mut app, ServerMsg::Published(Ok("1-2".to_owned())));
        app.update(Action::PrevField);
        app.update(Action::Choose(true));
        assert_eq!(app.compose.outcome, Outcome::None);

        // An answer to a send made before an edit is marked as about the old content.
        app.update(Action::Choose(true));
        app.update(Action::Submit);
        app.update(Action::NextField);
        type_text(&mut app, "3");
        assert_eq!(app.compose.outcome, Outcome::Sending);
        server(&mut app, ServerMsg::Published(Ok("1-3".to_owned())));
        assert!(app.compose.outcome_is_stale);
        app.update(Action::Submit);
        assert!(!app.compose.outcome_is_stale);
    }

    #[test]
    fn when_the_selected_connection_leaves_the_status_says_where_the_selection_went() {
        let mut app = with_connections(3);
        app.update(Action::Move(1));
        assert_eq!(app.selected_conn().map(|c| c.id), Some(ConnId(2)));
        admin(
            &mut app,
            AdminEvent::Disconnected(Disconnected {
                id: ConnId(2),
                reason: "client_gone".to_owned(),
                events_sent: 0,
            }),
        );
        assert_eq!(app.selected_conn().map(|c| c.id), Some(ConnId(3)));
        assert_eq!(
            app.status.as_ref().map(|s| s.text.as_str()),
            Some("connection 2 left; selection moved to 3")
        );
        // Another connection leaving does not move the selection, and says nothing.
        app.update(Action::Move(0));
        admin(
            &mut app,
            AdminEvent::Disconnected(Disconnected {
                id: ConnId(1),
                reason: "client_gone".to_owned(),
                events_sent: 0,
            }),
        );
        assert_eq!(app.selected_conn().map(|c| c.id), Some(ConnId(3)));
        assert_eq!(app.status, None);
    }

    #[test]
    fn the_console_knows_its_own_stream_from_the_first_admin_connected_after_the_snapshot() {
        let mut app = with_connections(2);
        let admin_conn = |id| {
            let mut c = conn(id, None, &[]);
            c.admin = true;
            c
        };
        assert_eq!(app.own_conn(), None);
        admin(
            &mut app,
            AdminEvent::Connected(conn(5, Some("bob"), &["a"])),
        );
        admin(&mut app, AdminEvent::Connected(admin_conn(7)));
        admin(&mut app, AdminEvent::Connected(admin_conn(9)));
        assert_eq!(
            app.own_conn(),
            Some(ConnId(7)),
            "another console came later"
        );
        // A new stream (after a reconnect) is another connection.
        server(&mut app, ServerMsg::Snapshot(Box::default()));
        assert_eq!(app.own_conn(), None);
        admin(&mut app, AdminEvent::Connected(admin_conn(12)));
        assert_eq!(app.own_conn(), Some(ConnId(12)));
    }

    #[test]
    fn q_sets_should_quit() {
        let mut app = App::new("x");
        app.update(Action::Quit);
        assert!(app.should_quit);
    }
}
