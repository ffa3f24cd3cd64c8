//! Turns what happens outside the app (keys, server messages) into [`Action`]s.
//!
//! Keys mean different things in different modes (`q` quits the table but is a letter in a
//! text field), so key mapping reads the app's [`Mode`]. Nothing here does IO.

use herald_core::{
    AdminEvent, ConnId, ConnectionInfo, NodeInfo, ParsedEvent, Snapshot, Stats, TopicInfo,
};
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::app::{App, Mode};

/// Everything that can change the app: the input of [`App::update`].
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Leave the console.
    Quit,
    /// Show the next view (Connections → Topics → Feed → ...).
    NextView,
    /// Show the previous view.
    PrevView,
    /// Show one view.
    ShowView(View),
    /// Open or close the key list.
    ToggleHelp,
    /// Move the selection (or the scroll position) by some rows; negative is up.
    Move(isize),
    /// Move by one screenful; negative is up.
    Page(isize),
    /// Jump to the first row.
    Top,
    /// Jump to the last row.
    Bottom,
    /// Start editing the connections filter.
    OpenFilter,
    /// Sort the current table by its next column.
    CycleSort,
    /// Flip the sort order.
    ReverseSort,
    /// Show the selected connection's detail.
    OpenDetail,
    /// Ask to disconnect the selected connection.
    AskDisconnect,
    /// Answer yes to a confirmation.
    Confirm,
    /// Close the topmost popup, or stop editing.
    Cancel,
    /// Pause or resume the live feed.
    TogglePause,
    /// Forget the events in the feed.
    ClearFeed,
    /// Open the compose form.
    OpenCompose,
    /// Move to the next compose field.
    NextField,
    /// Move to the previous compose field.
    PrevField,
    /// Edit the focused text (compose field or filter).
    Edit(Edit),
    /// Text pasted into the focused text field: inserted whole, never read as keys (a pasted
    /// newline is not Enter, a pasted tab not Tab).
    Paste(String),
    /// Left/Right on a compose choice (kind, data format); `true` is forward.
    Choose(bool),
    /// Enter in a form: send the compose form, or keep the filter.
    Submit,
    /// The terminal's size, in cells.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// Something the client heard from the server.
    Server(ServerMsg),
}

/// One of the three main views.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum View {
    /// The live connections table.
    #[default]
    Connections,
    /// Topics with subscribers and rates.
    Topics,
    /// Recent published events.
    Feed,
    /// The servers of the deployment (every instance in cluster mode).
    Nodes,
}

impl View {
    /// All views, in tab order.
    pub const ALL: [View; 4] = [View::Connections, View::Topics, View::Feed, View::Nodes];

    /// The tab title.
    pub fn title(self) -> &'static str {
        match self {
            View::Connections => "Connections",
            View::Topics => "Topics",
            View::Feed => "Feed",
            View::Nodes => "Nodes",
        }
    }

    /// Its position in [`View::ALL`].
    pub fn index(self) -> usize {
        match self {
            View::Connections => 0,
            View::Topics => 1,
            View::Feed => 2,
            View::Nodes => 3,
        }
    }
}

/// An edit of a one-line text field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Type a character at the cursor.
    Insert(char),
    /// Delete the character before the cursor.
    Backspace,
    /// Delete the character under the cursor.
    Delete,
    /// Cursor one left.
    Left,
    /// Cursor one right.
    Right,
    /// Cursor to the start.
    Home,
    /// Cursor to the end.
    End,
    /// Delete everything.
    Clear,
}

/// The state of the admin stream, as the client reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Opening the stream (`attempt` counts from 1 since the last success).
    Connecting {
        /// Which try this is.
        attempt: u32,
    },
    /// The stream is open and events flow.
    Live,
    /// The stream failed or ended; the client retries after `retry_ms`.
    Down {
        /// What went wrong, with the server's own message when it sent one.
        error: String,
        /// How long until the next try.
        retry_ms: u64,
    },
}

/// A failed request: the HTTP status when there was one, and the message to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status, or `None` when no response came (refused, timeout, ...).
    pub status: Option<u16>,
    /// The server's `{"error": ...}` text, or what went wrong on the way.
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "{status}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A `GET /admin/nodes` answer: the deployment's servers.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct NodesAnswer {
    /// The server runs in cluster mode (shares a Redis log with the others).
    pub cluster: bool,
    /// The name of the server that answered (the one this console watches).
    pub node: String,
    /// Every server, by name.
    pub nodes: Vec<NodeInfo>,
    /// In cluster mode, how long ago Redis last answered the server's report: the other
    /// nodes' figures are that old (absent from servers that do not say).
    #[serde(default)]
    pub registry_ms_ago: Option<u64>,
}

/// What the client tells the app.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerMsg {
    /// The admin stream changed state.
    Link(LinkState),
    /// The first event of every admin stream: everything at once.
    Snapshot(Box<Snapshot>),
    /// A live admin event.
    Admin(Box<AdminEvent>),
    /// A `GET /admin/connections` answer.
    Connections(Vec<ConnectionInfo>),
    /// A `GET /admin/stats` answer.
    StatsPoll {
        /// The stats at the time of the answer.
        stats: Box<Stats>,
        /// Every topic with subscribers.
        topics: Vec<TopicInfo>,
    },
    /// A `GET /admin/nodes` answer.
    Nodes(NodesAnswer),
    /// A poll failed while the stream was up.
    PollFailed(ApiError),
    /// The answer to a publish: the new event's id, or why not.
    Published(Result<String, ApiError>),
    /// The answer to a disconnect request.
    Kicked(ConnId, Result<(), ApiError>),
}

impl From<ServerMsg> for Action {
    fn from(msg: ServerMsg) -> Self {
        Action::Server(msg)
    }
}

/// Reads one event of the admin stream; `None` for types this console does not know.
///
/// A `snapshot` becomes [`ServerMsg::Snapshot`]; the rest go through
/// [`AdminEvent::from_sse`]. Data that does not parse is skipped rather than fatal, so a newer
/// server with extra event types does not break an older console.
pub fn admin_message(event: &ParsedEvent) -> Option<ServerMsg> {
    if event.event_type == "snapshot" {
        let snapshot: Snapshot = serde_json::from_str(&event.data).ok()?;
        return Some(ServerMsg::Snapshot(Box::new(snapshot)));
    }
    AdminEvent::from_sse(&event.event_type, &event.data).map(|e| ServerMsg::Admin(Box::new(e)))
}

/// Maps a terminal event to an action, given what the app is doing now.
pub fn terminal_action(app: &App, event: &Event) -> Option<Action> {
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => key_action(app.mode(), key),
        Event::Resize(width, height) => Some(Action::Resize {
            width: *width,
            height: *height,
        }),
        // Bracketed paste: only a text field takes it; elsewhere its letters are not keys.
        Event::Paste(text) => match app.mode() {
            Mode::ComposeText | Mode::Filter => Some(Action::Paste(text.clone())),
            _ => None,
        },
        _ => None,
    }
}

/// Maps one key press to an action in `mode`.
pub fn key_action(mode: Mode, key: &KeyEvent) -> Option<Action> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c')) {
        return Some(Action::Quit);
    }
    match mode {
        Mode::Normal(view) => normal_key(view, key),
        Mode::Help => match key.code {
            KeyCode::Esc | KeyCode::Char('?' | 'q') | KeyCode::Enter => Some(Action::ToggleHelp),
            // The key list may be taller than the terminal: it scrolls.
            KeyCode::Up | KeyCode::Char('k') => Some(Action::Move(-1)),
            KeyCode::Down | KeyCode::Char('j') => Some(Action::Move(1)),
            KeyCode::PageUp => Some(Action::Page(-1)),
            KeyCode::PageDown => Some(Action::Page(1)),
            KeyCode::Home | KeyCode::Char('g') => Some(Action::Top),
            KeyCode::End | KeyCode::Char('G') => Some(Action::Bottom),
            _ => None,
        },
        Mode::Detail => match key.code {
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') => Some(Action::Cancel),
            KeyCode::Char('d') => Some(Action::AskDisconnect),
            KeyCode::Char('?') => Some(Action::ToggleHelp),
            _ => None,
        },
        Mode::Confirm => match key.code {
            KeyCode::Char('y' | 'Y') => Some(Action::Confirm),
            KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => Some(Action::Cancel),
            _ => None,
        },
        Mode::Filter => match key.code {
            KeyCode::Enter => Some(Action::Submit),
            KeyCode::Esc => Some(Action::Cancel),
            _ => edit_key(key).map(Action::Edit),
        },
        Mode::ComposeChoice => match key.code {
            KeyCode::Left | KeyCode::Char('h') => Some(Action::Choose(false)),
            KeyCode::Right | KeyCode::Char(' ' | 'l') => Some(Action::Choose(true)),
            _ => compose_common(key),
        },
        Mode::ComposeText => match compose_common(key) {
            Some(action) => Some(action),
            None => edit_key(key).map(Action::Edit),
        },
    }
}

fn normal_key(view: View, key: &KeyEvent) -> Option<Action> {
    let sortable = matches!(view, View::Connections | View::Topics);
    let action = match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('?') => Action::ToggleHelp,
        KeyCode::Char('1') => Action::ShowView(View::Connections),
        KeyCode::Char('2') => Action::ShowView(View::Topics),
        KeyCode::Char('3') => Action::ShowView(View::Feed),
        KeyCode::Char('4') => Action::ShowView(View::Nodes),
        KeyCode::Tab | KeyCode::Right => Action::NextView,
        KeyCode::BackTab | KeyCode::Left => Action::PrevView,
        KeyCode::Up | KeyCode::Char('k') => Action::Move(-1),
        KeyCode::Down | KeyCode::Char('j') => Action::Move(1),
        KeyCode::PageUp => Action::Page(-1),
        KeyCode::PageDown => Action::Page(1),
        KeyCode::Home | KeyCode::Char('g') => Action::Top,
        KeyCode::End | KeyCode::Char('G') => Action::Bottom,
        KeyCode::Char('p') => Action::OpenCompose,
        KeyCode::Char('s') if sortable => Action::CycleSort,
        KeyCode::Char('r') if sortable => Action::ReverseSort,
        KeyCode::Char('/') if view == View::Connections => Action::OpenFilter,
        KeyCode::Enter if view == View::Connections => Action::OpenDetail,
        KeyCode::Char('d') if view == View::Connections => Action::AskDisconnect,
        KeyCode::Esc if view == View::Connections => Action::Cancel,
        KeyCode::Char(' ') if view == View::Feed => Action::TogglePause,
        KeyCode::Char('c') if view == View::Feed => Action::ClearFeed,
        _ => return None,
    };
    Some(action)
}

/// Keys that mean the same on every compose field.
fn compose_common(key: &KeyEvent) -> Option<Action> {
    match key.code {
        KeyCode::Esc => Some(Action::Cancel),
        KeyCode::Enter => Some(Action::Submit),
        KeyCode::Tab | KeyCode::Down => Some(Action::NextField),
        KeyCode::BackTab | KeyCode::Up => Some(Action::PrevField),
        _ => None,
    }
}

fn edit_key(key: &KeyEvent) -> Option<Edit> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Char('u') if ctrl => Some(Edit::Clear),
        KeyCode::Char('a') if ctrl => Some(Edit::Home),
        KeyCode::Char('e') if ctrl => Some(Edit::End),
        KeyCode::Char(_) if ctrl => None,
        KeyCode::Char(c) => Some(Edit::Insert(c)),
        KeyCode::Backspace => Some(Edit::Backspace),
        KeyCode::Delete => Some(Edit::Delete),
        KeyCode::Left => Some(Edit::Left),
        KeyCode::Right => Some(Edit::Right),
        KeyCode::Home => Some(Edit::Home),
        KeyCode::End => Some(Edit::End),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn parsed(event_type: &str, data: &str) -> ParsedEvent {
        ParsedEvent {
            event_type: event_type.to_owned(),
            data: data.to_owned(),
            last_event_id: String::new(),
        }
    }

    #[test]
    fn q_quits_the_table_but_is_a_letter_in_a_text_field() {
        let q = key(KeyCode::Char('q'));
        assert_eq!(
            key_action(Mode::Normal(View::Connections), &q),
            Some(Action::Quit)
        );
        assert_eq!(
            key_action(Mode::ComposeText, &q),
            Some(Action::Edit(Edit::Insert('q')))
        );
        assert_eq!(
            key_action(Mode::Filter, &q),
            Some(Action::Edit(Edit::Insert('q')))
        );
    }

    #[test]
    fn ctrl_c_quits_in_every_mode() {
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        for mode in [
            Mode::Normal(View::Feed),
            Mode::Help,
            Mode::Detail,
            Mode::Confirm,
            Mode::Filter,
            Mode::ComposeChoice,
            Mode::ComposeText,
        ] {
            assert_eq!(key_action(mode, &ctrl_c), Some(Action::Quit), "{mode:?}");
        }
    }

    #[test]
    fn view_specific_keys_only_act_in_their_view() {
        let d = key(KeyCode::Char('d'));
        let space = key(KeyCode::Char(' '));
        assert_eq!(
            key_action(Mode::Normal(View::Connections), &d),
            Some(Action::AskDisconnect)
        );
        assert_eq!(key_action(Mode::Normal(View::Feed), &d), None);
        assert_eq!(
            key_action(Mode::Normal(View::Feed), &space),
            Some(Action::TogglePause)
        );
        assert_eq!(key_action(Mode::Normal(View::Topics), &space), None);
    }

    #[test]
    fn the_help_scrolls_with_the_movement_keys() {
        for (code, action) in [
            (KeyCode::Down, Action::Move(1)),
            (KeyCode::Char('k'), Action::Move(-1)),
            (KeyCode::PageDown, Action::Page(1)),
            (KeyCode::Home, Action::Top),
            (KeyCode::Char('G'), Action::Bottom),
            (KeyCode::Esc, Action::ToggleHelp),
        ] {
            assert_eq!(key_action(Mode::Help, &key(code)), Some(action), "{code:?}");
        }
    }

    #[test]
    fn confirmation_takes_only_yes_or_no() {
        assert_eq!(
            key_action(Mode::Confirm, &key(KeyCode::Char('y'))),
            Some(Action::Confirm)
        );
        assert_eq!(
            key_action(Mode::Confirm, &key(KeyCode::Esc)),
            Some(Action::Cancel)
        );
        assert_eq!(key_action(Mode::Confirm, &key(KeyCode::Enter)), None);
    }

    #[test]
    fn key_releases_are_ignored() {
        let app = App::new("http://x");
        let mut release = key(KeyCode::Char('q'));
        release.kind = KeyEventKind::Release;
        assert_eq!(terminal_action(&app, &Event::Key(release)), None);
    }

    #[test]
    fn a_paste_goes_to_a_text_field_whole_and_nowhere_else() {
        let mut app = App::new("http://x");
        let paste = Event::Paste("a\nb\tq".to_owned());
        // On the table, pasted letters are not keys (no `q` quits, no `d` disconnects).
        assert_eq!(terminal_action(&app, &paste), None);
        app.update(Action::OpenCompose);
        assert_eq!(app.mode(), Mode::ComposeChoice);
        assert_eq!(terminal_action(&app, &paste), None);
        app.update(Action::NextField);
        assert_eq!(
            terminal_action(&app, &paste),
            Some(Action::Paste("a\nb\tq".to_owned()))
        );
    }

    #[test]
    fn snapshot_and_admin_events_are_read_and_unknown_ones_skipped() {
        let snapshot = serde_json::to_string(&Snapshot::default()).unwrap();
        assert!(matches!(
            admin_message(&parsed("snapshot", &snapshot)),
            Some(ServerMsg::Snapshot(_))
        ));
        let stats = AdminEvent::Stats(Stats::default());
        assert_eq!(
            admin_message(&parsed("stats", &stats.data_json())),
            Some(ServerMsg::Admin(Box::new(stats)))
        );
        assert_eq!(admin_message(&parsed("dropped", "{}")), None);
        assert_eq!(admin_message(&parsed("stats", "not json")), None);
    }
}
