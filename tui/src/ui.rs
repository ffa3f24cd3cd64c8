//! Drawing: a pure function of [`App`]. Nothing here changes state or reads a clock.
//!
//! The screen is a header (server, link, uptime, rates with sparklines, log), a tab row, the
//! current view, and a status bar; popups (detail, confirm, compose, help) draw on top.
//! Tables build rows only for what is visible, so thousands of connections cost a screenful.

use herald_core::ConnectionInfo;
use herald_core::admin::Published;
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::symbols;
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Cell, Clear, HighlightSpacing, Padding, Paragraph, Row, Sparkline, Table, TableState,
    Tabs, Wrap,
};

use crate::app::{
    App, ConnSort, DataFormat, Field, Nav, Outcome, Popup, TargetKind, TextInput, TopicSort,
};
use crate::event::{LinkState, View};

const HEADER_HEIGHT: u16 = 6;
const TABS_HEIGHT: u16 = 1;
const STATUS_HEIGHT: u16 = 1;
/// Body borders (2) and the table's column header (1).
const BODY_CHROME: u16 = 3;
/// Below this the layout cannot hold together; a notice is drawn instead.
const MIN_SIZE: (u16, u16) = (60, 16);
/// The connections table's fixed columns.
const ID_WIDTH: u16 = 6;
const USER_WIDTH: u16 = 10;
const REMOTE_WIDTH: u16 = 21;
const AGE_WIDTH: u16 = 7;
const SENT_WIDTH: u16 = 6;
/// Event id columns are at least this wide (`1764000000000-12`) and grow, up to
/// [`ID_MAX_WIDTH`], to the longest id in the table, so a busy millisecond's three- or
/// four-digit sequence is shown whole.
const ID_MIN_WIDTH: u16 = 16;
const ID_MAX_WIDTH: u16 = 24;
/// `1023.9 KiB`, the longest size [`fmt_bytes`] writes below 1024 TiB.
const QUEUE_WIDTH: u16 = 10;
/// The Topics column keeps at least this much; Last id gives way first.
const TOPICS_MIN: u16 = 12;
/// Remote is shown only while Topics keeps this much (`news/eu,news/us` whole).
const TOPICS_WITH_REMOTE: u16 = 16;

const SELECTED: &str = "▶ ";

/// How many table rows fit on a terminal `height` rows tall.
pub fn table_rows(height: u16) -> usize {
    usize::from(height.saturating_sub(HEADER_HEIGHT + TABS_HEIGHT + STATUS_HEIGHT + BODY_CHROME))
}

/// Draws the whole console.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let text = format!(
            "herald-tui needs at least {}x{} (now {}x{})",
            MIN_SIZE.0, MIN_SIZE.1, area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let [header, tabs, body, status] = Layout::vertical([
        Constraint::Length(HEADER_HEIGHT),
        Constraint::Length(TABS_HEIGHT),
        Constraint::Fill(1),
        Constraint::Length(STATUS_HEIGHT),
    ])
    .areas(area);
    draw_header(frame, app, header);
    draw_tabs(frame, app, tabs);
    match app.view {
        View::Connections => draw_connections(frame, app, body),
        View::Topics => draw_topics(frame, app, body),
        View::Feed => draw_feed(frame, app, body),
        View::Nodes => draw_nodes(frame, app, body),
    }
    draw_status(frame, app, status);
    match &app.popup {
        Popup::None => {}
        Popup::Detail { id, gone } => draw_detail(frame, app, *id, gone.as_deref(), area),
        Popup::ConfirmDisconnect { id, .. } => draw_confirm(frame, app, *id, area),
        Popup::Compose => draw_compose(frame, app, area),
    }
    if app.show_help {
        draw_help(frame, app, area);
    }
}

fn draw_header(frame: &mut Frame, app: &App, area: Rect) {
    let (link_text, link_style) = match &app.link {
        LinkState::Live => (" ● live ".to_owned(), Style::new().green().bold()),
        LinkState::Connecting { attempt: 1 } => {
            (" ◌ connecting… ".to_owned(), Style::new().yellow().bold())
        }
        LinkState::Connecting { attempt } => (
            format!(" ◌ connecting (try {attempt}) "),
            Style::new().yellow().bold(),
        ),
        LinkState::Down { .. } => (" ✗ disconnected ".to_owned(), Style::new().red().bold()),
    };
    let block = Block::bordered()
        .padding(Padding::horizontal(1))
        .title(Line::from(vec![
            Span::raw(" "),
            Span::styled("Herald", Style::new().bold()),
            Span::raw(format!(" {} ", app.server)),
        ]))
        .title(Line::styled(link_text, link_style).alignment(Alignment::Right));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [first, rates, log, latency] = Layout::vertical([Constraint::Length(1); 4]).areas(inner);

    let stats = app.stats.as_ref();
    let first_line = match (&app.link, stats) {
        (LinkState::Down { error, retry_ms }, _) => {
            // The retry figure is kept whole; the reason gives way if the line is short.
            let retry = format!("  (retrying in {})", fmt_duration(*retry_ms));
            let room = usize::from(first.width).saturating_sub(retry.chars().count());
            Line::from(vec![
                Span::styled(ellipsize(error, room), Style::new().red()),
                Span::styled(retry, Style::new().dim()),
            ])
        }
        (_, None) => Line::styled("waiting for the first stats sample…", Style::new().dim()),
        (_, Some(s)) => {
            let c = &s.counters;
            let slow_style = if c.slow_consumer_closes > 0 {
                Style::new().yellow()
            } else {
                Style::new()
            };
            let mut figures = vec![
                Figure::new("up", "up", 3, vec![Span::raw(fmt_duration(s.uptime_ms))]),
                Figure::new(
                    "connections",
                    "conns",
                    0,
                    vec![Span::styled(c.connections.to_string(), Style::new().bold())],
                ),
                Figure::attached(
                    5,
                    vec![Span::styled(
                        format!("({} total)", c.connections_total),
                        Style::new().dim(),
                    )],
                ),
                Figure::new("topics", "topics", 4, vec![Span::raw(s.topics.to_string())]),
            ];
            if let Some((_, true)) = &app.node_self {
                figures.push(Figure::new(
                    "nodes",
                    "nodes",
                    6,
                    vec![Span::raw(app.nodes.len().to_string())],
                ));
            }
            figures.push(Figure::new(
                "slow closes",
                "slow",
                1,
                vec![Span::styled(c.slow_consumer_closes.to_string(), slow_style)],
            ));
            // Limits that turned subscribers away: shown once it has happened.
            if c.refused > 0 {
                figures.push(Figure::new(
                    "refused",
                    "refused",
                    2,
                    vec![Span::styled(c.refused.to_string(), Style::new().yellow())],
                ));
            }
            fit_line(&figures, first.width)
        }
    };
    frame.render_widget(Paragraph::new(first_line), first);

    let [left, middle, right] = Layout::horizontal([Constraint::Fill(1); 3])
        .spacing(2)
        .areas(rates);
    // While the link is down the rates are the last ones seen, not the server's now.
    let stale = app.link != LinkState::Live;
    draw_rate(
        frame,
        RATE_LABELS[0],
        &app.published,
        Color::Cyan,
        stale,
        left,
    );
    draw_rate(
        frame,
        RATE_LABELS[1],
        &app.delivered,
        Color::Magenta,
        stale,
        middle,
    );
    draw_rate(frame, RATE_LABELS[2], &app.open, Color::Green, stale, right);

    let log_line = match stats {
        None => Line::styled("log —", Style::new().dim()),
        Some(s) => {
            let size = |events: String| {
                vec![
                    Span::raw(events),
                    label(" · "),
                    Span::raw(fmt_bytes(s.log.bytes)),
                ]
            };
            let oldest = s
                .log
                .oldest
                .map_or_else(|| "—".to_owned(), |id| id.to_string());
            let last = s.last_id.clone().unwrap_or_else(|| "—".to_owned());
            let events = if s.log.events == 1 { "event" } else { "events" };
            fit_line(
                &[
                    Figure {
                        short: with_label(
                            "log",
                            size(format!("{} {events}", fmt_count(s.log.events))),
                        ),
                        ..Figure::new("log", "log", 0, size(plural(s.log.events, "event")))
                    },
                    Figure::new("oldest", "oldest", 2, vec![Span::raw(oldest)]),
                    Figure::new("last", "last", 1, vec![Span::raw(last)]),
                ],
                log.width,
            )
        }
    };
    frame.render_widget(Paragraph::new(log_line), log);
    frame.render_widget(Paragraph::new(latency_line(stats, latency.width)), latency);
}

/// One figure of a header line, shown whole or not at all (a cut number reads as another
/// number): its spans with the full label and with a short one.
struct Figure {
    full: Vec<Span<'static>>,
    short: Vec<Span<'static>>,
    /// Which figures give way first when the line is short: the highest rank.
    rank: u8,
    /// Follows the previous figure after one space, as part of it (`(5017 total)`).
    attached: bool,
}

impl Figure {
    fn new(name: &str, short: &str, rank: u8, value: Vec<Span<'static>>) -> Self {
        Self {
            full: with_label(name, value.clone()),
            short: with_label(short, value),
            rank,
            attached: false,
        }
    }

    fn attached(rank: u8, value: Vec<Span<'static>>) -> Self {
        Self {
            full: value.clone(),
            short: value,
            rank,
            attached: true,
        }
    }
}

fn with_label(name: &str, value: Vec<Span<'static>>) -> Vec<Span<'static>> {
    let mut spans = vec![label(&format!("{name} "))];
    spans.extend(value);
    spans
}

/// `figures` on one line of `width` columns, each whole: as many figures as fit (the
/// highest ranks leave first), then the roomiest spacing and labels that fit.
fn fit_line(figures: &[Figure], width: u16) -> Line<'static> {
    let width = usize::from(width);
    let mut by_rank: Vec<u8> = figures.iter().map(|f| f.rank).collect();
    by_rank.sort_unstable();
    for kept in (1..=by_rank.len()).rev() {
        let highest = by_rank[kept - 1];
        let shown: Vec<&Figure> = figures.iter().filter(|f| f.rank <= highest).collect();
        for (short, gap) in [(false, "   "), (false, "  "), (true, "  ")] {
            let mut spans = Vec::new();
            for (i, f) in shown.iter().enumerate() {
                if i > 0 {
                    spans.push(Span::raw(if f.attached { " " } else { gap }));
                }
                spans.extend(if short { &f.short } else { &f.full }.iter().cloned());
            }
            let line = Line::from(spans);
            if line.width() <= width {
                return line;
            }
        }
    }
    Line::default()
}

/// `text` on one line, as a row needs it: a line break (CRLF, LF or CR, as a subscriber's
/// parser reads them) shown as `⏎`, a tab as `⇥`, and other control characters as their
/// Unicode pictures (ESC as `␛`), which a terminal would otherwise act on or drop.
fn one_line(text: &str) -> String {
    text.replace("\r\n", "\n")
        .chars()
        .map(|c| match c {
            '\r' | '\n' => '⏎',
            '\t' => '⇥',
            '\u{7f}' => '␡',
            c if u32::from(c) < 0x20 => char::from_u32(0x2400 + u32::from(c)).unwrap_or('?'),
            c => c,
        })
        .collect()
}

/// `text` in at most `width` columns, ending in `…` when it had to be cut.
fn ellipsize(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        cut.push('…');
    }
    cut
}

/// `text` cut to `width` characters by an ellipsis in its middle, keeping both ends.
fn ellipsize_middle(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width || width < 3 {
        return ellipsize(text, width);
    }
    let head = (width - 1) / 2;
    let tail = width - 1 - head;
    let mut cut: String = text.chars().take(head).collect();
    cut.push('…');
    cut.extend(text.chars().skip(count - tail));
    cut
}

/// `publish p50 1.6 ms p99 2.4 ms   delivery p50 210 µs p99 38 ms   (last 10s)`: the
/// server's own measure, over its recent window; `—` for a figure with nothing in the window.
fn latency_line(stats: Option<&herald_core::Stats>, width: u16) -> Line<'static> {
    let Some(l) = stats.map(|s| s.latency) else {
        return Line::styled("latency —", Style::new().dim());
    };
    if l.window_ms == 0 && l.publish.is_none() && l.delivery.is_none() {
        // An older server, or one that has not measured a window yet.
        return Line::styled("latency —", Style::new().dim());
    }
    let figure = |name: &str, short: &str, rank: u8, figure: Option<herald_core::Quantiles>| {
        let value = match figure {
            None => vec![Span::raw("—")],
            Some(q) => {
                let slow = if q.p99_us >= STUCK_MS * 1_000 {
                    Style::new().yellow().bold()
                } else {
                    Style::new().bold()
                };
                vec![
                    label("p50 "),
                    Span::styled(fmt_micros(q.p50_us), Style::new().bold()),
                    label(" p99 "),
                    Span::styled(fmt_micros(q.p99_us), slow),
                ]
            }
        };
        Figure::new(name, short, rank, value)
    };
    let window = Figure {
        full: vec![label(&format!("(last {})", fmt_duration(l.window_ms)))],
        short: vec![label(&format!("(last {})", fmt_duration(l.window_ms)))],
        rank: 2,
        attached: false,
    };
    fit_line(
        &[
            figure("publish", "publ", 0, l.publish),
            figure("delivery", "deliv", 1, l.delivery),
            window,
        ],
        width,
    )
}

/// A connection's queue counts as stuck once its oldest event has waited this long, and a
/// delivery p99 this long is shown as a warning.
const STUCK_MS: u64 = 1_000;

/// `0`, `4.0 KiB (oldest 120 ms)`, `2.0 MiB (oldest 3.4 s)`.
fn fmt_queued(c: &ConnectionInfo) -> String {
    if c.queued_bytes == 0 {
        return "0".to_owned();
    }
    format!(
        "{} (oldest {})",
        fmt_bytes(c.queued_bytes),
        fmt_micros(c.queued_ms.saturating_mul(1_000))
    )
}

/// `180 µs`, `1.6 ms`, `38 ms`, `2.5 s`.
pub fn fmt_micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..10_000 => format!("{:.1} ms", us as f64 / 1e3),
        10_000..1_000_000 => format!("{} ms", (us + 500) / 1_000),
        _ => format!("{:.1} s", us as f64 / 1e6),
    }
}

/// The server's open connections by HTTP version, and how many of them are over TLS:
/// `" HTTP/1.1 4680 · HTTP/2 320 · TLS 300 "`. `None` when the server reports none (an older
/// server, or nobody connected).
fn fmt_transports(t: &herald_core::Transports) -> Option<String> {
    let (http1, http2, tls) = (
        t.http1 + t.http1_tls,
        t.http2 + t.http2_tls,
        t.http1_tls + t.http2_tls,
    );
    if http1 + http2 == 0 {
        return None;
    }
    let mut mix = format!(" HTTP/1.1 {http1} · HTTP/2 {http2}");
    if tls > 0 {
        mix.push_str(&format!(" · TLS {tls}"));
    }
    mix.push(' ');
    Some(mix)
}

/// The three rates' labels, in full and short for a narrow header.
const RATE_LABELS: [(&str, &str); 3] = [
    ("published/s", "publ/s"),
    ("delivered/s", "deliv/s"),
    ("connections", "conns"),
];

/// Sparkline columns a rate keeps before its label is shortened.
const MIN_SPARK: usize = 3;

fn draw_rate(
    frame: &mut Frame,
    (name, short): (&str, &str),
    rate: &crate::app::Rate,
    color: Color,
    stale: bool,
    area: Rect,
) {
    let value = rate.last().map_or_else(|| "—".to_owned(), fmt_count);
    let value = format!(" {value:>6} ");
    let room = usize::from(area.width);
    let value_width = value.chars().count();
    // The value is never cut: the label shortens, then goes, before it would be.
    let name = [name, short]
        .into_iter()
        .find(|n| n.chars().count() + value_width + MIN_SPARK <= room)
        .or_else(|| (short.chars().count() + value_width <= room).then_some(short))
        .unwrap_or("");
    let value = if name.is_empty() {
        value.trim_start().to_owned()
    } else {
        value
    };
    let width = u16::try_from(name.chars().count() + value.chars().count()).unwrap_or(u16::MAX);
    let (value_style, spark_style) = if stale {
        (Style::new().dim(), Style::new().fg(color).dim())
    } else {
        (Style::new().bold(), Style::new().fg(color))
    };
    let [label_area, spark_area] =
        Layout::horizontal([Constraint::Length(width), Constraint::Fill(1)]).areas(area);
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            label(name),
            Span::styled(value, value_style),
        ])),
        label_area,
    );
    // Newest at the right edge; columns before the first sample stay blank (not zero).
    let width = usize::from(spark_area.width);
    let history = rate
        .history
        .iter()
        .skip(rate.history.len().saturating_sub(width));
    let padding = width.saturating_sub(rate.history.len());
    let bars: Vec<Option<u64>> = std::iter::repeat_n(None, padding)
        .chain(history.map(|v| Some(*v)))
        .collect();
    frame.render_widget(
        Sparkline::default()
            .data(bars)
            .bar_set(SPARK_BARS)
            .style(spark_style),
        spark_area,
    );
}

/// Ratatui's nine levels, with a baseline for zero so a quiet minute still shows as a line.
const SPARK_BARS: symbols::bar::Set<'static> = symbols::bar::Set {
    empty: "▁",
    ..symbols::bar::NINE_LEVELS
};

fn draw_tabs(frame: &mut Frame, app: &App, area: Rect) {
    let titles = View::ALL
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{} {}", i + 1, v.title()));
    let tabs = Tabs::new(titles)
        .select(app.view.index())
        .highlight_style(Style::new().bold().reversed())
        .divider("│");
    frame.render_widget(tabs, area);
}

fn draw_connections(frame: &mut Frame, app: &App, area: Rect) {
    let sort_name = match app.conn_sort {
        ConnSort::Id => "id",
        ConnSort::User => "user",
        ConnSort::Topics => "topics",
        ConnSort::Age => "age",
        ConnSort::Sent => "sent",
        ConnSort::Queue => "queue",
    };
    let rows = app.conn_rows();
    let mut head = format!(" Connections {}", rows.len());
    if rows.len() != app.connections.len() {
        head.push_str(&format!(" of {}", app.connections.len()));
    }
    // The header counts subscribers; the table also lists the consoles' admin streams.
    let admins = app.connections.values().filter(|c| c.admin).count();
    if admins > 0 {
        head.push_str(&format!(" ({admins} admin)"));
    }
    let arrow = if app.conn_desc { "▼" } else { "▲" };
    let sort = format!(" · sort {sort_name} {arrow} ");
    let mut title = vec![
        Span::styled(head.clone(), Style::new().bold()),
        Span::raw(sort.clone()),
    ];
    if app.filter_editing || !app.filter.value.is_empty() {
        title.push(Span::styled(
            format!("/{} ", app.filter.value),
            Style::new().yellow(),
        ));
    } else if app.link != LinkState::Live && !app.connections.is_empty() {
        title.push(Span::styled("· as last seen ", Style::new().yellow()));
    }
    let mut block = Block::bordered().title(Line::from(title));
    if let Some(mix) = app
        .stats
        .as_ref()
        .and_then(|s| fmt_transports(&s.transports))
    {
        block = block.title_top(Line::styled(mix, Style::new().dim()).right_aligned());
    }
    let inner = block.inner(area);

    if app.filter_editing {
        // The filter is typed in the title: after the corner, the head, the sort and the '/'.
        let before = 1 + head.chars().count() + sort.chars().count() + 1 + app.filter.cursor;
        let x = area
            .x
            .saturating_add(u16::try_from(before).unwrap_or(u16::MAX));
        frame.set_cursor_position(Position::new(x.min(area.right().saturating_sub(1)), area.y));
    }

    let last_id_width = id_width(rows.iter().filter_map(|id| {
        let c = app.connections.get(id)?;
        c.last_id.as_deref()
    }));
    let columns = ConnColumns::for_width(area.width, last_id_width);
    let mut header = vec!["ID", "User", "Topics"];
    let mut widths = vec![
        Constraint::Length(ID_WIDTH),
        Constraint::Length(USER_WIDTH),
        Constraint::Fill(1),
    ];
    if columns.remote {
        header.push("Remote");
        widths.push(Constraint::Length(REMOTE_WIDTH));
    }
    header.extend(["Age", "Sent"]);
    widths.extend([
        Constraint::Length(AGE_WIDTH),
        Constraint::Length(SENT_WIDTH),
    ]);
    if columns.last_id {
        header.push("Last id");
        widths.push(Constraint::Length(columns.last_id_width));
    }
    header.push("Queue");
    widths.push(Constraint::Length(QUEUE_WIDTH));

    let visible = usize::from(inner.height.saturating_sub(1));
    let (start, end, selected) = window(app.conn_nav, rows.len(), visible);
    let table_rows = rows[start..end]
        .iter()
        .filter_map(|id| app.connections.get(id))
        .map(|c| conn_row(c, columns, app.own_conn() == Some(c.id)));

    let empty = rows.is_empty();
    let selected = (!empty).then_some(selected);
    draw_table(frame, area, block, header, widths, table_rows, selected);

    if empty {
        let text = if app.connections.is_empty() {
            "no connections yet: subscribers show up here as they connect"
        } else {
            "no connection matches the filter (Esc clears it)"
        };
        let hint_area = Rect {
            y: inner.y + 2,
            height: 1,
            ..inner
        };
        frame.render_widget(
            Paragraph::new(text).alignment(Alignment::Center).dim(),
            hint_area,
        );
    }
}

/// A row of the connections table; `own` marks this console's own admin stream.
fn conn_row(c: &ConnectionInfo, columns: ConnColumns, own: bool) -> Row<'static> {
    let user = match (&c.user, c.admin) {
        (Some(user), _) => Cell::from(user.clone()),
        (None, true) => Cell::from("(admin)").dim(),
        (None, false) => Cell::from("—").dim(),
    };
    let topics = if own {
        Cell::from("admin stream (this console)").cyan()
    } else if c.admin {
        Cell::from("admin stream").dim()
    } else {
        Cell::from(c.topics.join(","))
    };
    let queue = if c.replaying {
        Cell::from("replay").yellow()
    } else if c.queued_bytes > 0 && c.queued_ms >= STUCK_MS {
        // Its events have waited a second or more: a client that does not keep up.
        Cell::from(fmt_bytes(c.queued_bytes)).red().bold()
    } else if c.queued_bytes > 0 {
        Cell::from(fmt_bytes(c.queued_bytes)).yellow()
    } else {
        Cell::from("0").dim()
    };
    let mut cells = vec![Cell::from(c.id.to_string()), user, topics];
    if columns.remote {
        cells.push(Cell::from(c.remote.clone().unwrap_or_default()));
    }
    cells.extend([
        Cell::from(fmt_duration(c.connected_ms)),
        Cell::from(fmt_count(c.events_sent)),
    ]);
    if columns.last_id {
        cells.push(Cell::from(
            c.last_id.clone().unwrap_or_else(|| "—".to_owned()),
        ));
    }
    cells.push(queue);
    Row::new(cells)
}

/// The connections table's optional columns at some width.
#[derive(Clone, Copy, Debug)]
struct ConnColumns {
    last_id: bool,
    last_id_width: u16,
    remote: bool,
}

impl ConnColumns {
    /// What fits in a table `width` columns wide (borders included) with Topics kept
    /// readable: an operator needs to know what a connection listens to more than its
    /// last id, and that more than its address.
    fn for_width(width: u16, last_id_width: u16) -> Self {
        let room = table_room(width);
        // Each column with the space after it.
        let fixed = [ID_WIDTH, USER_WIDTH, AGE_WIDTH, SENT_WIDTH, QUEUE_WIDTH]
            .iter()
            .map(|w| w + 1)
            .sum::<u16>();
        let last_id = fixed + last_id_width + 1 + TOPICS_MIN <= room;
        let remote =
            last_id && fixed + last_id_width + REMOTE_WIDTH + 2 + TOPICS_WITH_REMOTE <= room;
        Self {
            last_id,
            last_id_width,
            remote,
        }
    }
}

/// The columns a bordered table with a selection marker, `width` wide, has for its cells.
fn table_room(width: u16) -> u16 {
    let marker = u16::try_from(Span::raw(SELECTED).width()).unwrap_or(u16::MAX);
    width.saturating_sub(2).saturating_sub(marker)
}

/// The width of an event id column that shows `ids` whole (within the bounds above).
fn id_width<'a>(ids: impl Iterator<Item = &'a str>) -> u16 {
    let widest = ids.map(|id| Span::raw(id).width()).max().unwrap_or(0);
    u16::try_from(widest)
        .unwrap_or(u16::MAX)
        .clamp(ID_MIN_WIDTH, ID_MAX_WIDTH)
}

/// The rows to draw for a selection in a list of `len` rows with `visible` rows of room:
/// `start..end` and the selection's index within them. Corrects a stale offset.
fn window(nav: Nav, len: usize, visible: usize) -> (usize, usize, usize) {
    let visible = visible.max(1);
    let selected = nav.selected.min(len.saturating_sub(1));
    let mut start = nav.offset.min(len.saturating_sub(visible));
    if selected < start {
        start = selected;
    } else if selected >= start + visible {
        start = selected + 1 - visible;
    }
    let end = (start + visible).min(len);
    (start, end, selected - start)
}

fn draw_topics(frame: &mut Frame, app: &App, area: Rect) {
    let sort_name = match app.topic_sort {
        TopicSort::Name => "name",
        TopicSort::Subscribers => "subscribers",
        TopicSort::Events => "events",
        TopicSort::Rate => "events/s",
    };
    let title = Line::from(vec![
        Span::styled(format!(" Topics {}", app.topics.len()), Style::new().bold()),
        Span::raw(format!(
            " · sort {sort_name} {} ",
            if app.topic_desc { "▼" } else { "▲" }
        )),
    ]);
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    let visible = usize::from(inner.height.saturating_sub(1));
    let (start, end, selected) = window(app.topic_nav, app.topics.len(), visible);
    let rows = app.topics[start..end].iter().map(|t| {
        let rate = t.rate.map_or_else(|| "—".to_owned(), fmt_rate);
        Row::new(vec![
            Cell::from(t.info.topic.clone()),
            Cell::from(Line::from(t.info.subscribers.to_string()).alignment(Alignment::Right)),
            Cell::from(Line::from(fmt_count(t.info.events)).alignment(Alignment::Right)),
            Cell::from(Line::from(rate).alignment(Alignment::Right)),
        ])
    });
    let header = vec![
        Cell::from("Topic"),
        Cell::from(Line::from("Subscribers").alignment(Alignment::Right)),
        Cell::from(Line::from("Events").alignment(Alignment::Right)),
        Cell::from(Line::from("Events/s").alignment(Alignment::Right)),
    ];
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(11),
        Constraint::Length(8),
        Constraint::Length(9),
    ];
    let empty = app.topics.is_empty();
    let selected = (!empty).then_some(selected);
    draw_table(frame, area, block, header, widths, rows, selected);
    if empty {
        let hint_area = Rect {
            y: inner.y + 2,
            height: 1,
            ..inner
        };
        frame.render_widget(
            Paragraph::new("no topic has subscribers")
                .alignment(Alignment::Center)
                .dim(),
            hint_area,
        );
    }
}

/// How long without an answer from the cluster's registry before the Nodes view says so.
const STALE_REGISTRY_MS: u64 = 3_000;
/// The server lists only instances heard of within this long (`GET /admin/nodes`).
const DROPPED_AFTER_MS: u64 = 10_000;

fn draw_nodes(frame: &mut Frame, app: &App, area: Rect) {
    let (me, cluster) = match &app.node_self {
        Some((name, cluster)) => (name.as_str(), *cluster),
        None => ("", false),
    };
    let mode = match (&app.node_self, cluster) {
        (None, _) => "· waiting for the first poll ",
        (Some(_), true) => "· cluster (shared Redis log) ",
        (Some(_), false) => "· single server (embedded log) ",
    };
    let mut title = vec![
        Span::styled(format!(" Nodes {} ", app.nodes.len()), Style::new().bold()),
        Span::raw(mode),
    ];
    // Past a few heartbeats (one a second), the others' figures are stale, and nodes not
    // heard of for 10 s are left out: say so, or a cut-off node looks like a lone survivor.
    if let Some(ms) = app
        .registry_ms_ago
        .filter(|ms| cluster && *ms >= STALE_REGISTRY_MS)
    {
        let why = if ms >= DROPPED_AFTER_MS {
            "instances not heard of for 10 s are not listed, though they may be running"
        } else {
            "the others' figures are that old"
        };
        title.push(Span::styled(
            format!(" Redis has not answered for {} s: {why} ", ms / 1000),
            Style::new().fg(Color::Red).bold(),
        ));
    }
    let title = Line::from(title);
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    let visible = usize::from(inner.height.saturating_sub(1));
    let (start, end, selected) = window(app.node_nav, app.nodes.len(), visible);
    let right = |text: String| Cell::from(Line::from(text).alignment(Alignment::Right));
    let rate = |rate: Option<f64>| rate.map_or_else(|| "—".to_owned(), fmt_rate);
    const THIS: &str = " (this)";
    let longest = app
        .nodes
        .iter()
        .map(|n| n.info.name.chars().count() + if n.info.name == me { THIS.len() } else { 0 })
        .max()
        .unwrap_or(0);
    let (shown, name_width) = node_columns(area.width, longest);
    let rows = app.nodes[start..end].iter().map(|n| {
        let c = &n.info.counters;
        // A name that does not fit is cut in the middle: names of one deployment tend to
        // differ at their ends (`…-node-07`, `…-node-08`, a port).
        let name = match n.info.name == me {
            true => Line::from(vec![
                Span::raw(ellipsize_middle(
                    &n.info.name,
                    name_width.saturating_sub(THIS.len()).max(8),
                )),
                Span::styled(THIS, Style::new().dim()),
            ]),
            false => Line::from(ellipsize_middle(&n.info.name, name_width)),
        };
        // A node that missed a few heartbeats is on its way out of the list.
        let seen_style = match n.info.seen_ms_ago > 3_000 {
            true => Style::new().yellow(),
            false => Style::new(),
        };
        // Its slowest deliveries: which instance has subscribers that do not keep up.
        let p99 = n.info.latency.delivery.map(|q| q.p99_us);
        let p99_style = match p99.is_some_and(|us| us >= STUCK_MS * 1_000) {
            true => Style::new().yellow(),
            false => Style::new(),
        };
        let cells = [
            Cell::from(name),
            right(fmt_duration(n.info.uptime_ms)),
            right(fmt_count(c.connections)),
            right(rate(n.published_rate)),
            right(rate(n.delivered_rate)),
            Cell::from(
                Line::from(p99.map_or_else(|| "—".to_owned(), fmt_micros))
                    .alignment(Alignment::Right)
                    .style(p99_style),
            ),
            Cell::from(
                n.info
                    .committed_id
                    .clone()
                    .unwrap_or_else(|| "—".to_owned()),
            ),
            Cell::from(
                Line::from(fmt_duration(n.info.seen_ms_ago))
                    .alignment(Alignment::Right)
                    .style(seen_style),
            ),
        ];
        Row::new(shown_only(cells, shown))
    });
    let header = NODE_COLUMNS.map(|(name, _, _)| match name {
        "Node" | "Last id" => Cell::from(name),
        _ => right(name.to_owned()),
    });
    let widths = NODE_COLUMNS.map(|(_, width, _)| match width {
        0 => Constraint::Fill(1),
        w => Constraint::Length(w),
    });
    let selected = (!app.nodes.is_empty()).then_some(selected);
    let (header, widths) = (shown_only(header, shown), shown_only(widths, shown));
    draw_table(frame, area, block, header, widths, rows, selected);
}

/// The Nodes table's columns: header, width (0: the node's name, which takes the rest), and
/// the order in which they give way on a narrow terminal (0: never), so that the name, which
/// tells the instances apart, keeps [`NODE_NAME_MIN`] columns.
const NODE_COLUMNS: [(&str, u16, u8); 8] = [
    ("Node", 0, 0),
    ("Up", 7, 3),
    ("Conns", 7, 0),
    ("Publ/s", 7, 4),
    ("Deliv/s", 8, 0),
    ("Deliv p99", 9, 2),
    ("Last id", 19, 1),
    ("Seen", 6, 0),
];
const NODE_NAME_MIN: u16 = 22;
/// Columns give way for a name up to this long; a longer one is cut.
const NODE_NAME_MAX: u16 = 40;

/// Which of [`NODE_COLUMNS`] a table `width` wide (borders included) shows for names up to
/// `longest` characters, and the width the names get.
fn node_columns(width: u16, longest: usize) -> ([bool; 8], usize) {
    let room = table_room(width);
    let want = u16::try_from(longest)
        .unwrap_or(u16::MAX)
        .clamp(NODE_NAME_MIN, NODE_NAME_MAX);
    let mut shown = [true; 8];
    let used = |shown: &[bool; 8]| -> u16 {
        NODE_COLUMNS
            .iter()
            .zip(shown)
            .filter(|((_, w, _), on)| **on && *w > 0)
            .map(|((_, w, _), _)| w + 1)
            .sum()
    };
    for rank in 1..=4 {
        if used(&shown) + want <= room {
            break;
        }
        for (on, (_, _, r)) in shown.iter_mut().zip(NODE_COLUMNS) {
            *on &= r != rank;
        }
    }
    (shown, usize::from(room.saturating_sub(used(&shown))))
}

/// The items of `all` whose column is shown.
fn shown_only<T>(all: [T; 8], shown: [bool; 8]) -> Vec<T> {
    all.into_iter()
        .zip(shown)
        .filter_map(|(item, on)| on.then_some(item))
        .collect()
}

/// A table in `block` with an underlined header; the `selected` row is marked and reversed.
fn draw_table<'a>(
    frame: &mut Frame,
    area: Rect,
    block: Block<'a>,
    header: impl IntoIterator<Item = impl Into<Cell<'a>>>,
    widths: impl IntoIterator<Item = Constraint>,
    rows: impl IntoIterator<Item = Row<'a>>,
    selected: Option<usize>,
) {
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().bold().underlined()))
        .block(block)
        .row_highlight_style(Style::new().reversed())
        .highlight_symbol(SELECTED)
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_feed(frame: &mut Frame, app: &App, area: Rect) {
    let mut title = vec![Span::styled(
        format!(" Feed {} ", app.feed_shown().count()),
        Style::new().bold(),
    )];
    match app.feed_paused_at {
        None => title.push(Span::styled("· following live ", Style::new().green())),
        Some(_) => title.push(Span::styled(
            format!("· PAUSED, {} new (space resumes) ", app.feed_unseen()),
            Style::new().yellow().bold(),
        )),
    }
    // Each instance delivers to its own connections: in a cluster the count is this one's.
    if let Some((_, true)) = &app.node_self {
        title.push(Span::styled("· Rcpt: this node ", Style::new().dim()));
    }
    let block = Block::bordered().title(Line::from(title));
    let inner = block.inner(area);
    let visible = usize::from(inner.height.saturating_sub(1));
    let rows = app
        .feed_shown()
        .skip(app.feed_scroll)
        .take(visible)
        .map(|entry| feed_row(&entry.event));
    let header = Row::new(vec!["Id", "Target", "Event", "Rcpt", "Data"])
        .style(Style::new().bold().underlined());
    let id_width = id_width(app.feed_shown().map(|entry| entry.event.id.as_str()));
    let table = Table::new(
        rows,
        [
            Constraint::Length(id_width),
            Constraint::Length(16),
            Constraint::Length(14),
            Constraint::Length(5),
            Constraint::Fill(1),
        ],
    )
    .header(header)
    .block(block);
    frame.render_widget(table, area);
    if app.feed.is_empty() {
        let hint_area = Rect {
            y: inner.y + 2,
            height: 1,
            ..inner
        };
        frame.render_widget(
            Paragraph::new("no events yet: published events appear here as they are delivered")
                .alignment(Alignment::Center)
                .dim(),
            hint_area,
        );
    }
}

fn feed_row(event: &Published) -> Row<'static> {
    let mut targets: Vec<String> = event.topics.clone();
    targets.extend(event.users.iter().map(|u| format!("@{u}")));
    if event.broadcast {
        targets.insert(0, "everyone".to_owned());
    }
    let event_type = match &event.event_type {
        Some(t) => Cell::from(t.clone()),
        None => Cell::from("message").dim(),
    };
    let preview = one_line(&event.preview);
    Row::new(vec![
        Cell::from(event.id.clone()),
        Cell::from(targets.join(",")),
        event_type,
        Cell::from(Line::from(fmt_count(event.recipients)).alignment(Alignment::Right)),
        Cell::from(preview),
    ])
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    let line = match &app.status {
        Some(status) => {
            let style = if status.is_error {
                Style::new().red().bold()
            } else {
                Style::new().green()
            };
            Line::styled(format!(" {}", status.text), style)
        }
        None => keys_line(hints(app)),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn hints(app: &App) -> &'static [(&'static str, &'static str)] {
    // An open popup has the keys: the view's would not work.
    match &app.popup {
        Popup::Detail { gone: None, .. } => return &[("d", "disconnect"), ("Esc", "close")],
        Popup::Detail { .. } => return &[("Esc", "close")],
        Popup::ConfirmDisconnect { .. } => return &[("y", "disconnect"), ("n/Esc", "keep it")],
        Popup::Compose => {
            return &[
                ("Tab/↑↓", "field"),
                ("←→", "choose"),
                ("Enter", "send"),
                ("Esc", "close"),
            ];
        }
        Popup::None => {}
    }
    if app.filter_editing {
        return &[
            ("type", "filter by user or topic"),
            ("Enter", "keep"),
            ("Esc", "clear"),
        ];
    }
    match app.view {
        View::Connections => &[
            ("Enter", "detail"),
            ("/", "filter"),
            ("s", "sort"),
            ("d", "disconnect"),
            ("p", "compose"),
            ("?", "help"),
            ("q", "quit"),
        ],
        View::Topics => &[
            ("↑↓", "move"),
            ("s", "sort"),
            ("r", "reverse"),
            ("p", "compose"),
            ("Tab", "view"),
            ("?", "help"),
            ("q", "quit"),
        ],
        View::Nodes => &[
            ("↑↓", "move"),
            ("p", "compose"),
            ("Tab", "view"),
            ("?", "help"),
            ("q", "quit"),
        ],
        View::Feed => &[
            ("space", "pause/follow"),
            ("↑↓", "scroll"),
            ("c", "clear"),
            ("p", "compose"),
            ("?", "help"),
            ("q", "quit"),
        ],
    }
}

fn keys_line(keys: &[(&str, &str)]) -> Line<'static> {
    let mut spans = Vec::new();
    for (key, what) in keys {
        spans.push(Span::styled(format!(" {key}"), Style::new().bold().cyan()));
        spans.push(Span::raw(format!(" {what} ")));
    }
    Line::from(spans)
}

fn popup_area(area: Rect, width: u16, height: u16) -> Rect {
    area.centered(
        Constraint::Length(width.min(area.width)),
        Constraint::Length(height.min(area.height)),
    )
}

const DETAIL_WIDTH: u16 = 70;

fn draw_detail(
    frame: &mut Frame,
    app: &App,
    id: herald_core::ConnId,
    gone: Option<&str>,
    area: Rect,
) {
    let block = Block::bordered()
        .title(Line::from(format!(" Connection {id} ")).bold())
        .border_style(Style::new().cyan())
        .padding(Padding::horizontal(1));
    let mut lines = Vec::new();
    if let Some(reason) = gone {
        lines.push(Line::styled(
            format!("This connection is gone ({reason})."),
            Style::new().yellow().bold(),
        ));
    }
    match app.connections.get(&id) {
        None => lines.push(Line::raw("No longer listed by the server.")),
        Some(c) => {
            let state = if app.own_conn() == Some(id) {
                "admin stream (this console)"
            } else if c.admin {
                "admin stream"
            } else if c.replaying {
                "replaying history"
            } else {
                "live"
            };
            let fields = [
                ("User", c.user.clone().unwrap_or_else(|| "—".to_owned())),
                ("Remote", c.remote.clone().unwrap_or_else(|| "—".to_owned())),
                ("Protocol", fmt_protocol(c)),
                ("Connected", fmt_duration(c.connected_ms)),
                ("State", state.to_owned()),
                (
                    "Sent",
                    format!("{} events, {}", c.events_sent, fmt_bytes(c.bytes_sent)),
                ),
                (
                    "Last id",
                    c.last_id.clone().unwrap_or_else(|| "—".to_owned()),
                ),
                ("Queued", fmt_queued(c)),
            ];
            lines.extend(fields.into_iter().map(|(name, value)| {
                Line::from(vec![label(&format!("{name:<10} ")), Span::raw(value)])
            }));
            // The topics take the rows the screen leaves (a few at most) with "+N more" for
            // the rest, so the popup never grows past its key line.
            let width = usize::from(area.width.min(DETAIL_WIDTH).saturating_sub(4));
            let fixed = lines.len() + 2 + 2 + 1;
            let room = usize::from(area.height)
                .saturating_sub(fixed)
                .clamp(1, DETAIL_TOPIC_ROWS);
            let rows = topic_rows(&c.topics, width.saturating_sub(11), room);
            for (i, row) in rows.into_iter().enumerate() {
                let name = if i == 0 { "Topics" } else { "" };
                lines.push(Line::from(vec![
                    label(&format!("{name:<10} ")),
                    Span::raw(row),
                ]));
            }
        }
    }
    lines.push(Line::raw(""));
    // A connection that is gone has nothing left to disconnect.
    let keys: &[(&str, &str)] = match gone {
        None => &[("d", "disconnect"), ("Esc", "close")],
        Some(_) => &[("Esc", "close")],
    };
    lines.push(keys_line(keys));
    let height = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX);
    let area = popup_area(area, DETAIL_WIDTH, height);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// The most rows the detail gives its topic list.
const DETAIL_TOPIC_ROWS: usize = 3;

/// `topics`, comma separated, in at most `max_rows` rows of `width` columns; what does not
/// fit is counted in a final "+N more" (a topic too long for a row is cut with an ellipsis).
fn topic_rows(topics: &[String], width: usize, max_rows: usize) -> Vec<String> {
    let max_rows = max_rows.max(1);
    let mut rows = vec![String::new()];
    for (i, topic) in topics.iter().enumerate() {
        let after = topics.len() - i - 1;
        loop {
            let row_count = rows.len();
            let Some(row) = rows.last_mut() else {
                return rows;
            };
            let used = row.chars().count();
            let sep = if used == 0 { "" } else { ", " };
            // On the last row, leave room to count the topics after this one.
            let reserve = if row_count == max_rows && after > 0 {
                format!(", +{after} more").chars().count()
            } else {
                0
            };
            let need = sep.chars().count() + topic.chars().count() + reserve;
            if used + need <= width {
                row.push_str(sep);
                row.push_str(topic);
                break;
            }
            if used == 0 {
                // Alone on its row and still too long: cut it.
                let room = width.saturating_sub(reserve);
                row.push_str(&ellipsize(topic, room));
                break;
            }
            if row_count < max_rows {
                rows.push(String::new());
                continue;
            }
            // No row left: count this topic and the rest.
            row.push_str(&format!(", +{} more", after + 1));
            return rows;
        }
    }
    if rows.len() == 1 && rows[0].is_empty() {
        rows[0].push('—');
    }
    rows
}

fn draw_confirm(frame: &mut Frame, app: &App, id: herald_core::ConnId, area: Rect) {
    let area = popup_area(area, 58, 7);
    frame.render_widget(Clear, area);
    // Named as the table names it: a user, and the admin stream for what has no topics.
    let who = app.connections.get(&id).map_or_else(String::new, |c| {
        let mut parts = Vec::new();
        match (&c.user, c.admin) {
            (Some(user), _) => parts.push(user.as_str()),
            (None, false) => parts.push("anonymous"),
            (None, true) => {}
        }
        if c.admin {
            parts.push("admin stream");
        }
        parts.push(c.remote.as_deref().unwrap_or("?"));
        format!(" ({})", parts.join(", "))
    });
    let block = Block::bordered()
        .title(" Disconnect? ".bold())
        .border_style(Style::new().red())
        .padding(Padding::horizontal(1));
    let consequence = if app.own_conn() == Some(id) {
        Line::styled(
            "That would disconnect this console (its own stream).",
            Style::new().yellow().bold(),
        )
    } else {
        Line::styled(
            "Its client may reconnect and resume from its last id.",
            Style::new().dim(),
        )
    };
    let text = vec![
        Line::raw(format!("Close connection {id}{who}?")),
        consequence,
        Line::raw(""),
        keys_line(&[("y", "disconnect"), ("n/Esc", "keep it")]),
    ];
    frame.render_widget(
        Paragraph::new(text).block(block).wrap(Wrap { trim: false }),
        area,
    );
}

fn draw_compose(frame: &mut Frame, app: &App, area: Rect) {
    let form = &app.compose;
    // The check and the server's answer wrap: the popup grows to show them whole.
    let text_width = usize::from(area.width.min(COMPOSE_WIDTH).saturating_sub(4));
    let (check_text, check_style) = compose_check(form);
    let (result_text, result_style) = compose_result(form);
    let check_lines = wrap_words(&check_text, text_width);
    let result_lines = wrap_words(&result_text, text_width);
    let grown = check_lines.len() + result_lines.len();
    let height = u16::try_from(10 + grown).unwrap_or(u16::MAX);
    let area = popup_area(area, COMPOSE_WIDTH, height);
    frame.render_widget(Clear, area);
    let block = Block::bordered()
        .title(" Compose an event ".bold())
        .border_style(Style::new().cyan())
        .padding(Padding::horizontal(1));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let rows = |lines: &[String]| Constraint::Length(u16::try_from(lines.len()).unwrap_or(1));
    let [kind, target, event, format, data, _, check, result, _, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        rows(&check_lines),
        rows(&result_lines),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(inner);

    let choice = |options: &[&str], chosen: usize| {
        let mut spans = Vec::new();
        for (i, option) in options.iter().enumerate() {
            if i == chosen {
                spans.push(Span::styled(
                    format!("‹{option}›"),
                    Style::new().bold().reversed(),
                ));
            } else {
                spans.push(Span::styled(format!(" {option} "), Style::new().dim()));
            }
            spans.push(Span::raw(" "));
        }
        spans
    };
    let kind_index = match form.kind {
        TargetKind::Topic => 0,
        TargetKind::User => 1,
        TargetKind::Broadcast => 2,
    };
    draw_form_row(
        frame,
        form.focus == Field::Kind,
        "Send to",
        choice(&["topic", "user", "broadcast"], kind_index),
        kind,
    );

    let target_label = match form.kind {
        TargetKind::Topic => "Topics",
        TargetKind::User => "Users",
        TargetKind::Broadcast => "Target",
    };
    if form.kind == TargetKind::Broadcast {
        draw_form_row(
            frame,
            false,
            target_label,
            vec![Span::styled("every connection", Style::new().dim())],
            target,
        );
    } else {
        draw_text_row(
            frame,
            form.focus == Field::Target,
            target_label,
            &form.target,
            "names, separated by commas (spaces are part of a name)",
            target,
        );
    }
    draw_text_row(
        frame,
        form.focus == Field::Event,
        "Event",
        &form.event_type,
        "type (empty: message)",
        event,
    );
    let format_index = match form.format {
        DataFormat::Json => 0,
        DataFormat::Text => 1,
    };
    draw_form_row(
        frame,
        form.focus == Field::Format,
        "Data as",
        choice(&["JSON", "text"], format_index),
        format,
    );
    draw_text_row(
        frame,
        form.focus == Field::Data,
        "Data",
        &form.data,
        "{\"hello\": \"world\"}",
        data,
    );

    let lines = |texts: Vec<String>, style: Style| {
        Text::from(
            texts
                .into_iter()
                .map(|t| Line::styled(t, style))
                .collect::<Vec<_>>(),
        )
    };
    frame.render_widget(Paragraph::new(lines(check_lines, check_style)), check);
    frame.render_widget(Paragraph::new(lines(result_lines, result_style)), result);
    frame.render_widget(
        Paragraph::new(keys_line(&[
            ("Tab/↑↓", "field"),
            ("←→", "choose"),
            ("Enter", "send"),
            ("Esc", "close"),
        ])),
        keys,
    );
}

/// The compose popup's width, on a terminal wide enough.
const COMPOSE_WIDTH: u16 = 76;

/// What the data field holds, as the form sees it while typing.
fn compose_check(form: &crate::app::ComposeForm) -> (String, Style) {
    match (form.data_value(), form.format) {
        (Ok(_), DataFormat::Text) => (
            "✓ sent as a JSON string: the text as typed".to_owned(),
            Style::new().green(),
        ),
        (Ok(value), DataFormat::Json) => (
            format!("✓ valid JSON ({})", json_kind(&value)),
            Style::new().green(),
        ),
        (Err(_), _) if form.data.value.is_empty() => (
            "data: type JSON, or choose “Data as: text”".to_owned(),
            Style::new().dim(),
        ),
        (Err(why), _) => (format!("✗ {why}"), Style::new().red()),
    }
}

/// What became of the last send: nothing yet, refused, on its way, or the server's answer.
fn compose_result(form: &crate::app::ComposeForm) -> (String, Style) {
    let failed = Style::new().red().bold();
    let (text, style) = compose_answer(form, failed);
    if form.outcome_is_stale && !text.is_empty() {
        // Edited while it was on its way: the answer is not about what the form holds now.
        return (format!("{text} (before your edit)"), style);
    }
    (text, style)
}

fn compose_answer(form: &crate::app::ComposeForm, failed: Style) -> (String, Style) {
    match &form.outcome {
        Outcome::None => (String::new(), Style::new()),
        Outcome::Invalid(why) if form.data_value().as_ref().err() == Some(why) => (
            "✗ not sent: fix the JSON, or switch “Data as” to text".to_owned(),
            failed,
        ),
        Outcome::Invalid(why) => (format!("✗ not sent: {why}"), failed),
        Outcome::Sending => ("… sending".to_owned(), Style::new().yellow()),
        Outcome::Sent(id) => (format!("✓ published, id {id}"), Style::new().green().bold()),
        Outcome::Failed(why) => (format!("✗ not published: {why}"), failed),
    }
}

/// `text` in lines of at most `width` columns, broken between words (a word longer than a
/// line is broken where it must be); always at least one line.
fn wrap_words(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        let used = line.chars().count();
        if used > 0 && used + 1 + word.len() <= width {
            line.push(' ');
            line.extend(word);
            continue;
        }
        if used > 0 {
            lines.push(std::mem::take(&mut line));
        }
        while word.len() > width {
            lines.push(word.drain(..width).collect());
        }
        line.extend(word);
    }
    lines.push(line);
    lines
}

const LABEL_WIDTH: u16 = 10;

fn draw_form_row(
    frame: &mut Frame,
    focused: bool,
    name: &str,
    value: Vec<Span<'static>>,
    area: Rect,
) {
    let marker = if focused { "▶ " } else { "  " };
    let style = if focused {
        Style::new().cyan().bold()
    } else {
        Style::new().dim()
    };
    let [label_area, value_area] =
        Layout::horizontal([Constraint::Length(LABEL_WIDTH), Constraint::Fill(1)]).areas(area);
    frame.render_widget(
        Paragraph::new(Span::styled(format!("{marker}{name}"), style)),
        label_area,
    );
    frame.render_widget(Paragraph::new(Line::from(value)), value_area);
}

fn draw_text_row(
    frame: &mut Frame,
    focused: bool,
    name: &str,
    input: &TextInput,
    placeholder: &str,
    area: Rect,
) {
    let [_, value_area] =
        Layout::horizontal([Constraint::Length(LABEL_WIDTH), Constraint::Fill(1)]).areas(area);
    let width = usize::from(value_area.width.saturating_sub(1)).max(1);
    // Scroll horizontally so the cursor stays in view.
    let start = input.cursor.saturating_sub(width - 1).min(input.cursor);
    // A pasted line break or tab is kept (and sent) in the data: shown as one visible cell
    // each, so the row stays one line and the cursor where it is.
    let shown: String = input
        .value
        .chars()
        .skip(start)
        .take(width)
        .map(|c| match c {
            '\n' => '⏎',
            '\t' => '⇥',
            c => c,
        })
        .collect();
    let value = if input.value.is_empty() {
        Span::styled(placeholder.to_owned(), Style::new().dim().italic())
    } else {
        Span::raw(shown)
    };
    let value = if focused { value.underlined() } else { value };
    draw_form_row(frame, focused, name, vec![value], area);
    if focused {
        let x = value_area.x + u16::try_from(input.cursor - start).unwrap_or(0);
        frame.set_cursor_position(Position::new(x.min(value_area.right()), value_area.y));
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Every key, by where it works.
const HELP: &[(&str, &[(&str, &str)])] = &[
    (
        "Everywhere",
        &[
            ("1 2 3 4  Tab ←→", "Connections, Topics, Feed, Nodes"),
            ("↑↓ j k  PgUp PgDn", "move;  Home End (g G): first, last"),
            ("p", "compose an event (topic, user or broadcast)"),
            ("?  /  q  Ctrl-C", "this help  /  quit"),
        ],
    ),
    (
        "Connections",
        &[
            ("/", "filter by user or topic (Enter keeps, Esc clears)"),
            ("s  r", "sort by the next column  /  reverse the order"),
            ("Enter", "detail of the selected connection"),
            ("d", "disconnect it (asks y / n)"),
        ],
    ),
    (
        "Topics",
        &[("s  r", "sort by the next column  /  reverse the order")],
    ),
    (
        "Feed",
        &[
            ("space", "pause  /  follow live (scrolling also pauses)"),
            ("c", "clear the feed"),
        ],
    ),
    (
        "Compose",
        &[
            ("Tab ↑↓", "next  /  previous field"),
            ("←→ space", "choose the target kind and data format"),
            ("Enter  Esc", "send  /  close (the form keeps its text)"),
            (
                "Ctrl-U",
                "clear the field  (a paste is text: it never sends)",
            ),
        ],
    ),
];

/// The key list's width, on a terminal wide enough.
const HELP_WIDTH: u16 = 76;
/// The key column of the key list.
const HELP_KEY_WIDTH: usize = 21;

/// The key list in lines of at most `width` columns: what a key does wraps under itself.
fn help_lines(width: usize) -> Vec<Line<'static>> {
    let what_width = width.saturating_sub(HELP_KEY_WIDTH).max(10);
    let mut lines = Vec::new();
    for (section, keys) in HELP {
        lines.push(Line::styled(*section, Style::new().bold().underlined()));
        for (key, what) in *keys {
            let key = format!("  {key:<w$}", w = HELP_KEY_WIDTH - 2);
            for (i, part) in wrap_words(what, what_width).into_iter().enumerate() {
                let key = if i == 0 {
                    key.clone()
                } else {
                    " ".repeat(HELP_KEY_WIDTH)
                };
                lines.push(Line::from(vec![
                    Span::styled(key, Style::new().cyan().bold()),
                    Span::raw(part),
                ]));
            }
        }
    }
    lines
}

/// The key list's popup on a terminal of `size`.
fn help_area(size: Rect) -> (Rect, Vec<Line<'static>>) {
    let width = HELP_WIDTH.min(size.width);
    let lines = help_lines(usize::from(width.saturating_sub(4)));
    let height = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX);
    (popup_area(size, width, height), lines)
}

/// How many lines of the key list a terminal of `size` (columns, rows) shows at once, and
/// how many stay hidden: how far it can scroll.
pub fn help_window((width, height): (u16, u16)) -> (usize, usize) {
    let (area, lines) = help_area(Rect::new(0, 0, width, height));
    let visible = usize::from(area.height.saturating_sub(2));
    (visible, lines.len().saturating_sub(visible))
}

fn draw_help(frame: &mut Frame, app: &App, area: Rect) {
    let (area, lines) = help_area(area);
    let total = lines.len();
    let visible = usize::from(area.height.saturating_sub(2));
    let scroll = app.help_scroll.min(total.saturating_sub(visible));
    frame.render_widget(Clear, area);
    let mut block = Block::bordered()
        .title(" Keys ".bold())
        .title(Line::from(" Esc closes ").alignment(Alignment::Right))
        .border_style(Style::new().cyan())
        .padding(Padding::horizontal(1));
    if total > visible {
        // Taller than the terminal: say where we are and how to see the rest.
        let last = (scroll + visible).min(total);
        block = block.title_bottom(
            Line::from(format!(" {}–{last} of {total} · ↑↓ scroll ", scroll + 1))
                .alignment(Alignment::Right),
        );
    }
    let shown: Vec<Line> = lines.into_iter().skip(scroll).take(visible).collect();
    frame.render_widget(Paragraph::new(Text::from(shown)).block(block), area);
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn label(text: &str) -> Span<'static> {
    Span::styled(text.to_owned(), Style::new().add_modifier(Modifier::DIM))
}

/// `950`, `12.3k`, `4.5M`: counts in a few columns.
pub fn fmt_count(n: u64) -> String {
    match n {
        0..10_000 => n.to_string(),
        10_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

fn fmt_rate(rate: f64) -> String {
    if rate < 10.0 {
        format!("{rate:.1}")
    } else {
        fmt_count(rate.round() as u64)
    }
}

/// `512 B`, `4.0 KiB`, `5.0 MiB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `HTTP/2 over TLS`, `HTTP/1.1`; `—` from a server that does not report it.
fn fmt_protocol(c: &ConnectionInfo) -> String {
    match (c.protocol, c.tls) {
        (Some(p), true) => format!("{p} over TLS"),
        (Some(p), false) => p.to_string(),
        (None, _) => "—".to_owned(),
    }
}

/// `12s`, `4m05s`, `2h03m`, `3d04h`.
pub fn fmt_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use herald_core::{AdminEvent, Snapshot, TopicInfo};
    use insta::assert_snapshot;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::app::tests::{admin, conn, nodes_answer, published, stats};
    use crate::event::{Action, ApiError, Edit, ServerMsg};

    fn render(app: &mut App, width: u16, height: u16) -> String {
        app.update(Action::Resize { width, height });
        app.sync();
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, app)).unwrap();
        terminal.backend().to_string()
    }

    fn server(app: &mut App, msg: ServerMsg) {
        app.update(Action::Server(msg));
    }

    fn live_app() -> App {
        let mut app = App::new("http://127.0.0.1:7070");
        server(&mut app, ServerMsg::Link(LinkState::Live));
        app
    }

    /// A server up for an hour with traffic that rose over the last minute.
    fn busy_app(connections: u64) -> App {
        let mut app = live_app();
        let snapshot = Snapshot {
            stats: stats(3600, 0, 0),
            connections: (1..=connections)
                .map(|i| {
                    let user = ["alice", "bob", "carol", "dave"][(i % 4) as usize];
                    let topics: &[&str] = match i % 3 {
                        0 => &["orders"],
                        1 => &["news/eu", "news/us"],
                        _ => &["prices/*"],
                    };
                    conn(i, Some(user), topics)
                })
                .collect(),
            topics: vec![],
        };
        server(&mut app, ServerMsg::Snapshot(Box::new(snapshot)));
        let (mut published_total, mut delivered_total) = (0, 0);
        for s in 1..=60 {
            published_total += 10 + (s * 7) % 40;
            delivered_total += 100 + (s * 53) % 400;
            let mut sample = stats(3600 + s, published_total, delivered_total);
            sample.counters.connections = connections;
            sample.counters.connections_total = connections + 17;
            server(
                &mut app,
                ServerMsg::Admin(Box::new(AdminEvent::Stats(sample))),
            );
        }
        app
    }

    fn type_text(app: &mut App, text: &str) {
        for c in text.chars() {
            app.update(Action::Edit(Edit::Insert(c)));
        }
    }

    #[test]
    fn empty_server() {
        let mut app = live_app();
        server(
            &mut app,
            ServerMsg::Snapshot(Box::new(Snapshot {
                stats: stats(5, 0, 0),
                ..Snapshot::default()
            })),
        );
        assert_snapshot!(render(&mut app, 80, 24));
    }

    #[test]
    fn the_connections_view_shows_how_the_servers_connections_came() {
        let mut app = busy_app(10);
        assert!(!render(&mut app, 100, 24).contains("HTTP/2"));
        let mut sample = stats(3700, 0, 0);
        sample.transports = herald_core::Transports {
            http1: 6,
            http1_tls: 1,
            http2: 0,
            http2_tls: 3,
        };
        server(
            &mut app,
            ServerMsg::Admin(Box::new(AdminEvent::Stats(sample))),
        );
        let screen = render(&mut app, 100, 24);
        let title = screen
            .lines()
            .find(|l| l.contains("Connections 10"))
            .unwrap_or_default();
        assert!(title.contains("HTTP/1.1 7 · HTTP/2 3 · TLS 4"), "{screen}");
    }

    #[test]
    fn the_header_shows_the_servers_own_latency_over_its_window() {
        let mut app = busy_app(10);
        let mut sample = stats(3700, 0, 0);
        // A server older than these figures.
        sample.latency = herald_core::Latency::default();
        server(
            &mut app,
            ServerMsg::Admin(Box::new(AdminEvent::Stats(sample.clone()))),
        );
        let screen = render(&mut app, 100, 24);
        assert!(screen.contains("latency —"), "{screen}");
        sample.latency = herald_core::Latency {
            window_ms: 10_000,
            publish: Some(herald_core::Quantiles {
                count: 40,
                p50_us: 1_620,
                p99_us: 2_400,
            }),
            delivery: None,
        };
        server(
            &mut app,
            ServerMsg::Admin(Box::new(AdminEvent::Stats(sample.clone()))),
        );
        let screen = render(&mut app, 100, 24);
        assert!(
            screen.contains("publish p50 1.6 ms p99 2.4 ms   delivery —   (last 10s)"),
            "{screen}"
        );
        sample.latency.delivery = Some(herald_core::Quantiles {
            count: 4000,
            p50_us: 180,
            p99_us: 38_400,
        });
        server(
            &mut app,
            ServerMsg::Admin(Box::new(AdminEvent::Stats(sample))),
        );
        let screen = render(&mut app, 100, 24);
        assert!(screen.contains("delivery p50 180 µs p99 38 ms"), "{screen}");
    }

    #[test]
    fn a_queue_whose_oldest_event_waited_a_second_shows_red_and_a_young_one_yellow() {
        let mut app = busy_app(20);
        let (width, height) = (100, 40);
        app.update(Action::Resize { width, height });
        app.sync();
        let colour_of_queue = |app: &App, id: &str| {
            let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
            terminal.draw(|frame| draw(frame, app)).unwrap();
            let buffer = terminal.backend().buffer().clone();
            let row = (0..height)
                .find(|&y| {
                    let line: String = (0..width).map(|x| buffer[(x, y)].symbol()).collect();
                    line.trim_start_matches(['│', ' ', '▶'])
                        .starts_with(&format!("{id} "))
                        && line.contains("4.0 KiB")
                })
                .unwrap_or_else(|| panic!("no row for connection {id}"));
            let line: String = (0..width).map(|x| buffer[(x, row)].symbol()).collect();
            let column = line.find("4.0 KiB").unwrap();
            // Byte offset to cell index: the box-drawing characters before it are 3 bytes.
            let x = line[..column].chars().count() as u16;
            buffer[(x, row)].fg
        };
        // Connections 10 and 20 have 4 KiB queued; 10 for 1.25 s (see `conn`).
        assert_eq!(colour_of_queue(&app, "10"), Color::Red);
        let mut young = conn(20, Some("bob"), &["orders"]);
        young.queued_ms = 40;
        server(
            &mut app,
            ServerMsg::Admin(Box::new(AdminEvent::Connected(young))),
        );
        assert_eq!(colour_of_queue(&app, "20"), Color::Yellow);
    }

    #[test]
    fn latencies_read_in_the_unit_that_suits_them() {
        assert_eq!(fmt_micros(0), "0 µs");
        assert_eq!(fmt_micros(999), "999 µs");
        assert_eq!(fmt_micros(1_000), "1.0 ms");
        assert_eq!(fmt_micros(9_949), "9.9 ms");
        assert_eq!(fmt_micros(38_400), "38 ms");
        assert_eq!(fmt_micros(999_499), "999 ms");
        assert_eq!(fmt_micros(2_500_000), "2.5 s");
    }

    /// A server with large figures everywhere: 123456 connections, 99999 published/s.
    fn big_figures_app() -> App {
        let mut app = live_app();
        let big = |uptime_s: u64, k: u64| {
            let mut s = stats(uptime_s, 99_999 * k, 88_888 * k);
            s.counters.committed = 99_999 * k;
            s.counters.connections = 123_456;
            s.counters.connections_total = 7_654_321;
            s.counters.slow_consumer_closes = 4_321;
            s.counters.refused = 77;
            s.topics = 9_876;
            s.log.events = 123_456_789;
            s.log.bytes = 1_023 << 30;
            s.last_id = Some("1700000000000-12345".to_owned());
            s.latency.publish = Some(herald_core::Quantiles {
                count: 300,
                p50_us: 999_000,
                p99_us: 12_500_000,
            });
            s.latency.delivery = Some(herald_core::Quantiles {
                count: 300,
                p50_us: 998_000,
                p99_us: 1_500_000,
            });
            s
        };
        for k in 0..3 {
            server(
                &mut app,
                ServerMsg::Admin(Box::new(AdminEvent::Stats(big(3_600 + k, k)))),
            );
        }
        app
    }

    /// The header's four text rows, without the borders and padding.
    fn header_rows(screen: &str) -> Vec<String> {
        screen
            .lines()
            .skip(1)
            .take(4)
            .map(|l| l.trim_matches('"').trim_matches('│').trim().to_owned())
            .collect()
    }

    #[test]
    fn header_figures_are_shown_whole_or_not_at_all_at_every_width() {
        let mut app = big_figures_app();
        // Every figure the header may show; a token with a digit must be one of them whole.
        let figures = [
            "1h00m",
            "123456",
            "(7654321",
            "total)",
            "9876",
            "4321",
            "77",
            "100.0k",
            "88.9k",
            "123.5k",
            "123456789",
            "123.5M",
            "1023.0",
            "1699999000000-0",
            "1700000000000-12345",
            "999",
            "12.5",
            "998",
            "1.5",
            "10s)",
            "p50",
            "p99",
        ];
        for width in [60, 61, 62, 70, 80, 100] {
            let screen = render(&mut app, width, 16);
            let rows = header_rows(&screen);
            for token in rows.iter().flat_map(|r| r.split_whitespace()) {
                if token.chars().any(|c| c.is_ascii_digit()) {
                    assert!(
                        figures.contains(&token),
                        "{token:?} is cut at width {width}:\n{screen}"
                    );
                }
            }
            let header = rows.join("\n");
            // What must be there at any width: the live figures and the warnings.
            for must in [
                "123456 ",
                "100.0k",
                "88.9k",
                "123.5k",
                "4321",
                "77",
                "1700000000000-12345",
            ] {
                assert!(
                    header.contains(must),
                    "no {must:?} at width {width}:\n{screen}"
                );
            }
        }
    }

    #[test]
    fn header_at_the_minimum_width() {
        let mut app = big_figures_app();
        assert_snapshot!(render(&mut app, 60, 16));
    }

    #[test]
    fn the_queue_column_holds_the_longest_size_with_its_unit() {
        let mut app = busy_app(3);
        for (id, queued_ms) in [(4, 0), (5, 5_000)] {
            // 1023.9 KiB, the longest size the formatter writes; connection 5 is stuck.
            let mut big = conn(id, Some("bob"), &["orders"]);
            big.queued_bytes = 1_048_476;
            big.queued_ms = queued_ms;
            server(
                &mut app,
                ServerMsg::Admin(Box::new(AdminEvent::Connected(big))),
            );
        }
        for width in [60, 80, 100, 120] {
            let screen = render(&mut app, width, 16);
            let full = screen.lines().filter(|l| l.contains("1023.9 KiB")).count();
            assert_eq!(full, 2, "width {width}:\n{screen}");
        }
    }

    #[test]
    fn a_narrow_connections_table_keeps_topics_and_drops_last_id_first() {
        let mut app = busy_app(20);
        for width in [60, 70, 80, 99, 100, 120] {
            let screen = render(&mut app, width, 16);
            let head = screen
                .lines()
                .find(|l| l.contains("ID ") && l.contains("User"))
                .unwrap_or_default();
            assert!(head.contains("Topics"), "width {width}:\n{screen}");
            assert!(
                screen.contains("news/eu,news/us") || !head.contains("Last id"),
                "topics squeezed for Last id at width {width}:\n{screen}"
            );
        }
        let narrow = render(&mut app, 60, 16);
        assert!(!narrow.contains("Last id"), "{narrow}");
        assert!(narrow.contains("prices/*"), "{narrow}");
        let wide = render(&mut app, 120, 16);
        assert!(
            wide.contains("Last id") && wide.contains("Remote"),
            "{wide}"
        );
    }

    #[test]
    fn event_ids_with_long_sequences_are_shown_whole() {
        let long = "1700000000000-12345";
        let mut app = busy_app(3);
        let mut busy = conn(2, Some("erin"), &["orders"]);
        busy.last_id = Some(long.to_owned());
        admin(&mut app, AdminEvent::Connected(busy));
        let screen = render(&mut app, 120, 16);
        assert!(screen.contains(long), "{screen}");

        admin(
            &mut app,
            AdminEvent::Published(published(long, &["orders"], "{}")),
        );
        admin(
            &mut app,
            AdminEvent::Published(published("1700000000001-0", &["orders"], "{}")),
        );
        app.update(Action::ShowView(View::Feed));
        let screen = render(&mut app, 80, 24);
        assert!(screen.contains(long), "{screen}");
        assert!(screen.contains("1700000000001-0 "), "{screen}");
    }

    #[test]
    fn the_detail_of_a_connection_that_is_gone_offers_no_disconnect() {
        let mut app = busy_app(3);
        app.update(Action::OpenDetail);
        let offer = "d disconnect  Esc close";
        assert!(render(&mut app, 100, 24).contains(offer));
        let id = app.selected_conn().expect("a selected row").id;
        admin(
            &mut app,
            AdminEvent::Disconnected(herald_core::admin::Disconnected {
                id,
                reason: "kicked".to_owned(),
                events_sent: 0,
            }),
        );
        let screen = render(&mut app, 100, 24);
        assert!(screen.contains("is gone (kicked)"), "{screen}");
        assert!(!screen.contains(offer), "{screen}");
        assert!(screen.contains("│  Esc close"), "{screen}");
    }

    #[test]
    fn the_header_counts_refused_subscribers_once_there_are_some() {
        let mut app = busy_app(10);
        assert!(!render(&mut app, 100, 24).contains("refused"));
        let mut sample = stats(3700, 0, 0);
        sample.counters.refused = 3;
        server(
            &mut app,
            ServerMsg::Admin(Box::new(AdminEvent::Stats(sample))),
        );
        let screen = render(&mut app, 100, 24);
        assert!(screen.contains("slow closes 2   refused 3"), "{screen}");
    }

    #[test]
    fn many_connections() {
        let mut app = busy_app(5000);
        app.update(Action::Move(3));
        assert_snapshot!(render(&mut app, 80, 24));
    }

    #[test]
    fn many_connections_wide_scrolled_to_the_end() {
        let mut app = busy_app(5000);
        app.update(Action::Resize {
            width: 120,
            height: 30,
        });
        app.update(Action::Bottom);
        assert_snapshot!(render(&mut app, 120, 30));
    }

    #[test]
    fn filtered_connections() {
        let mut app = busy_app(40);
        app.update(Action::OpenFilter);
        type_text(&mut app, "car");
        assert_snapshot!(render(&mut app, 80, 24));
    }

    #[test]
    fn connection_detail() {
        let mut app = busy_app(40);
        app.update(Action::Move(9));
        app.update(Action::OpenDetail);
        assert_snapshot!(render(&mut app, 80, 24));
    }

    #[test]
    fn disconnect_confirmation() {
        let mut app = busy_app(40);
        app.update(Action::Move(1));
        app.update(Action::AskDisconnect);
        assert_snapshot!(render(&mut app, 80, 24));
    }

    #[test]
    fn the_disconnect_confirmation_names_an_admin_stream_as_the_table_does() {
        let mut app = busy_app(2);
        let mut console = conn(3, None, &[]);
        console.admin = true;
        console.remote = Some("127.0.0.1:44786".to_owned());
        server(
            &mut app,
            ServerMsg::Admin(Box::new(AdminEvent::Connected(console))),
        );
        app.update(Action::Bottom);
        let table = render(&mut app, 80, 24);
        assert!(
            table.contains("(admin)") && table.contains("admin stream"),
            "{table}"
        );
        // The header counts subscribers: the table's title says why it lists one more.
        assert!(table.contains(" Connections 3 (1 admin)"), "{table}");
        app.update(Action::AskDisconnect);
        let screen = render(&mut app, 80, 24);
        assert!(
            screen.contains("Close connection 3 (admin stream, 127.0.0.1:44786)?"),
            "{screen}"
        );
        assert!(!screen.contains("anonymous"), "{screen}");
    }

    #[test]
    fn compose_with_a_json_error() {
        let mut app = busy_app(3);
        app.update(Action::OpenCompose);
        app.update(Action::NextField);
        type_text(&mut app, "orders, news/eu");
        app.update(Action::NextField);
        type_text(&mut app, "order.created");
        app.update(Action::NextField);
        app.update(Action::NextField);
        type_text(&mut app, "{\"id\": 42, \"total\": }");
        app.update(Action::Submit);
        assert_snapshot!(render(&mut app, 80, 24));
    }

    #[test]
    fn compose_sent() {
        let mut app = busy_app(3);
        app.update(Action::OpenCompose);
        app.update(Action::Choose(false));
        app.update(Action::NextField);
        app.update(Action::NextField);
        app.update(Action::Choose(true));
        app.update(Action::NextField);
        type_text(&mut app, "maintenance at 22:00");
        app.update(Action::Submit);
        server(
            &mut app,
            ServerMsg::Published(Ok("1700000000000-42".to_owned())),
        );
        assert_snapshot!(render(&mut app, 80, 24));
    }

    #[test]
    fn a_long_server_error_in_the_compose_form_wraps_whole() {
        let message = "topic \"news/*\" contains '*': events go to exact topics; \
                       patterns are for subscribing (GET /events?topic=news/*)";
        let mut app = busy_app(3);
        app.update(Action::OpenCompose);
        app.update(Action::NextField);
        type_text(&mut app, "news/*");
        app.update(Action::NextField);
        app.update(Action::NextField);
        app.update(Action::NextField);
        type_text(&mut app, "{}");
        app.update(Action::Submit);
        server(
            &mut app,
            ServerMsg::Published(Err(ApiError {
                status: Some(400),
                message: message.to_owned(),
            })),
        );
        for (width, height) in [(60, 16), (80, 24)] {
            let screen = render(&mut app, width, height);
            // The popup's words in reading order, whatever the borders around them.
            let words = screen.replace(['│', '"'], " ");
            let words: Vec<&str> = words.split_whitespace().collect();
            let wanted = format!("✗ not published: 400: {message}");
            let wanted = wanted.replace('"', " ");
            let wanted: Vec<&str> = wanted.split_whitespace().collect();
            assert!(
                words.windows(wanted.len()).any(|w| w == wanted.as_slice()),
                "{width}x{height}:\n{screen}"
            );
        }
        assert_snapshot!(render(&mut app, 60, 16));
    }

    #[test]
    fn the_consoles_own_admin_stream_is_marked_and_disconnecting_it_says_so() {
        let mut app = busy_app(2);
        let admin_conn = |id| {
            let mut c = conn(id, None, &[]);
            c.admin = true;
            c
        };
        // The first admin `connected` after the snapshot is this stream; then another console.
        for id in [3, 4] {
            server(
                &mut app,
                ServerMsg::Admin(Box::new(AdminEvent::Connected(admin_conn(id)))),
            );
        }
        app.update(Action::Bottom);
        let table = render(&mut app, 100, 24);
        let row = |id: &str| {
            table
                .lines()
                .find(|l| l.contains(&format!(" {id} ")) && l.contains("(admin)"))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(row("3").contains("admin stream (this console)"), "{table}");
        assert!(!row("4").contains("this console"), "{table}");
        app.update(Action::AskDisconnect);
        let other = render(&mut app, 100, 24);
        assert!(!other.contains("disconnect this console"), "{other}");
        app.update(Action::Cancel);
        app.update(Action::Move(-1));
        app.update(Action::AskDisconnect);
        let own = render(&mut app, 100, 24);
        assert!(
            own.contains("That would disconnect this console (its own stream)."),
            "{own}"
        );
    }

    /// Whether the header's rate values (`published/s` and the rest) are drawn dim.
    fn rate_values_dim(app: &mut App) -> Vec<bool> {
        app.update(Action::Resize {
            width: 100,
            height: 24,
        });
        let mut terminal = Terminal::new(TestBackend::new(100, 24)).unwrap();
        terminal.draw(|frame| draw(frame, app)).unwrap();
        let buffer = terminal.backend().buffer();
        // The rates are the header's second line inside its border.
        let y = 2;
        (0..100)
            .filter(|&x| buffer[(x, y)].symbol().chars().all(|c| c.is_ascii_digit()))
            .filter(|&x| !buffer[(x, y)].symbol().trim().is_empty())
            .map(|x| buffer[(x, y)].modifier.contains(Modifier::DIM))
            .collect()
    }

    #[test]
    fn while_disconnected_the_header_rates_are_dim_as_last_seen() {
        let mut app = busy_app(12);
        let live = rate_values_dim(&mut app);
        assert!(!live.is_empty() && live.iter().all(|dim| !dim), "{live:?}");
        server(
            &mut app,
            ServerMsg::Link(LinkState::Down {
                error: "cannot reach the server: connection refused".to_owned(),
                retry_ms: 4000,
            }),
        );
        let down = rate_values_dim(&mut app);
        assert!(!down.is_empty() && down.iter().all(|dim| *dim), "{down:?}");
    }

    #[test]
    fn in_a_cluster_the_feed_says_its_recipients_are_this_nodes() {
        let mut app = busy_app(3);
        app.update(Action::ShowView(View::Feed));
        let me = "web-1:7070";
        server(&mut app, nodes_answer(me, false, &[(me, 10, 3, 0, 0)]));
        assert!(!render(&mut app, 100, 24).contains("Rcpt: this node"));
        server(&mut app, nodes_answer(me, true, &[(me, 10, 3, 0, 0)]));
        let screen = render(&mut app, 100, 24);
        assert!(screen.contains("· Rcpt: this node"), "{screen}");
    }

    #[test]
    fn connection_detail_with_many_topics() {
        let mut app = live_app();
        let topics: Vec<String> = (0..40).map(|i| format!("tenant-{i}/orders")).collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let snapshot = Snapshot {
            stats: stats(3600, 0, 0),
            connections: vec![conn(1, Some("alice"), &topics)],
            topics: vec![],
        };
        server(&mut app, ServerMsg::Snapshot(Box::new(snapshot)));
        app.update(Action::OpenDetail);
        let screen = render(&mut app, 80, 24);
        assert!(screen.contains("more"), "{screen}");
        assert!(screen.contains("d disconnect  Esc close"), "{screen}");
        // At the smallest size the topics give way to the key line too.
        let small = render(&mut app, 60, 16);
        assert!(small.contains("d disconnect  Esc close"), "{small}");
        assert!(small.contains("more"), "{small}");
        assert_snapshot!(screen);
    }

    #[test]
    fn the_topic_list_counts_what_does_not_fit() {
        let topics: Vec<String> = ["aaaa", "bbbb", "cccc", "dddd", "eeee"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(topic_rows(&topics, 40, 1), ["aaaa, bbbb, cccc, dddd, eeee"]);
        assert_eq!(
            topic_rows(&topics, 16, 2),
            ["aaaa, bbbb, cccc", "dddd, eeee"]
        );
        assert_eq!(topic_rows(&topics, 16, 1), ["aaaa, +4 more"]);
        assert_eq!(topic_rows(&topics, 20, 1), ["aaaa, bbbb, +3 more"]);
        assert_eq!(topic_rows(&[], 20, 2), ["—"]);
        let long = vec!["x".repeat(30), "y".to_owned()];
        // Cut to leave room for the count, which the next topic then did not need.
        assert_eq!(
            topic_rows(&long, 20, 1),
            [format!("{}…, y", "x".repeat(10))]
        );
        let longer = vec!["x".repeat(30), "y".to_owned(), "z".to_owned()];
        assert_eq!(
            topic_rows(&longer, 20, 1),
            [format!("{}…, +2 more", "x".repeat(10))]
        );
    }

    #[test]
    fn a_pasted_line_break_shows_in_the_data_field_and_the_target_hint_says_commas() {
        let mut app = busy_app(3);
        app.update(Action::OpenCompose);
        app.update(Action::NextField);
        let empty = render(&mut app, 100, 30);
        assert!(
            empty.contains("names, separated by commas (spaces are part of a name)"),
            "{empty}"
        );
        type_text(&mut app, "orders");
        for _ in 0..3 {
            app.update(Action::NextField);
        }
        app.update(Action::Paste("{\"a\":\n 1}".to_owned()));
        let screen = render(&mut app, 100, 30);
        assert!(screen.contains("{\"a\":⏎ 1}"), "{screen}");
        assert!(screen.contains("✓ valid JSON (object)"), "{screen}");
        app.update(Action::Submit);
        app.update(Action::Paste(" ".to_owned()));
        server(
            &mut app,
            ServerMsg::Published(Ok("1700000000000-42".to_owned())),
        );
        let screen = render(&mut app, 100, 30);
        assert!(
            screen.contains("✓ published, id 1700000000000-42 (before your edit)"),
            "{screen}"
        );
    }

    #[test]
    fn disconnected() {
        let mut app = busy_app(12);
        server(
            &mut app,
            ServerMsg::Link(LinkState::Down {
                error: "cannot reach the server: connection refused".to_owned(),
                retry_ms: 4000,
            }),
        );
        assert_snapshot!(render(&mut app, 80, 24));
    }

    #[test]
    fn unauthorized() {
        let mut app = App::new("http://127.0.0.1:7070");
        server(
            &mut app,
            ServerMsg::Link(LinkState::Down {
                error: ApiError {
                    status: Some(401),
                    message: "token expired".to_owned(),
                }
                .to_string(),
                retry_ms: 10_000,
            }),
        );
        assert_snapshot!(render(&mut app, 80, 24));
    }

    #[test]
    fn a_preview_is_one_line_and_shows_what_a_subscriber_reads() {
        assert_eq!(
            one_line("line1\nline2\r\nline3\rline4\ttab \u{1b}[31mred\u{7f}"),
            "line1⏎line2⏎line3⏎line4⇥tab ␛[31mred␡"
        );
        assert_eq!(one_line("plain é ✓"), "plain é ✓");
    }

    #[test]
    fn the_nodes_view_says_when_redis_has_stopped_answering() {
        let mut app = busy_app(1);
        let me = "web-1.internal:7070";
        let mut answer = nodes_answer(me, true, &[(me, 60, 1, 5, 5)]);
        server(&mut app, answer.clone());
        app.update(Action::ShowView(View::Nodes));
        assert!(!render(&mut app, 140, 16).contains("Redis has not answered"));
        // First the others' figures age; past 10 s they are no longer listed at all.
        for (ms, says) in [
            (5_400, "for 5 s: the others' figures are that old"),
            (
                12_400,
                "for 12 s: instances not heard of for 10 s are not listed",
            ),
        ] {
            if let ServerMsg::Nodes(nodes) = &mut answer {
                nodes.registry_ms_ago = Some(ms);
            }
            server(&mut app, answer.clone());
            let screen = render(&mut app, 160, 16);
            assert!(screen.contains(says), "{screen}");
        }
    }

    #[test]
    fn nodes_view() {
        let mut app = busy_app(10);
        let me = "web-1.internal:7070";
        let poll = |k: u64| {
            nodes_answer(
                me,
                true,
                &[
                    (me, 3660 + 2 * k, 10, 5_000 + 30 * k, 60_000 + 900 * k),
                    (
                        "web-2.internal:7070",
                        86_400 + 2 * k,
                        4_200,
                        12_000 + 50 * k,
                        9_000_000 + 120_000 * k,
                    ),
                    ("web-3.internal:7070", 120 + 2 * k, 0, 7, 7),
                ],
            )
        };
        server(&mut app, poll(0));
        server(&mut app, poll(1));
        app.update(Action::ShowView(View::Nodes));
        assert_snapshot!(render(&mut app, 100, 16));
        // Narrower, whole columns give way; the names that tell the nodes apart stay whole.
        for width in 60..100 {
            let screen = render(&mut app, width, 16);
            for name in ["web-2.internal:7070", "web-3.internal:7070"] {
                assert!(screen.contains(name), "width {width}:\n{screen}");
            }
            let head = screen.lines().find(|l| l.contains("Conns")).unwrap_or("");
            for column in [" Conns", " Deliv/s", " Seen"] {
                assert!(head.contains(column), "width {width}:\n{screen}");
            }
        }
        // Long names: columns give way first, then the names are cut in the middle, where
        // they are alike, so that they still read apart.
        let long = |k: u64| {
            let name = format!("eu-west-1-production-herald-node-0{k}:7070");
            (
                name.clone(),
                86_400,
                4_200,
                12_000 + 50 * k,
                9_000_000 + 120_000 * k,
            )
        };
        let names: Vec<_> = (7..=8).map(long).collect();
        let rows: Vec<_> = names
            .iter()
            .map(|(n, up, conns, p, d)| (n.as_str(), *up, *conns, *p, *d))
            .collect();
        server(&mut app, nodes_answer(me, true, &rows));
        for width in 60..130 {
            let screen = render(&mut app, width, 16);
            for k in [7, 8] {
                let whole = format!("eu-west-1-production-herald-node-0{k}:7070");
                let cut_visibly = screen.lines().any(|l| {
                    l.contains('…') && l.contains(&format!("-0{k}:7070")) && l.contains("eu-west")
                });
                assert!(
                    screen.contains(&whole) || cut_visibly,
                    "width {width}:\n{screen}"
                );
            }
        }
        assert!(render(&mut app, 120, 16).contains("eu-west-1-production-herald-node-07:7070"));
    }

    #[test]
    fn topics_view() {
        let mut app = busy_app(10);
        let topic = |name: &str, subscribers: u64, events: u64| TopicInfo {
            topic: name.to_owned(),
            subscribers,
            events,
        };
        let poll = |s: u64, k: u64| ServerMsg::StatsPoll {
            stats: Box::new(stats(s, 0, 0)),
            topics: vec![
                topic("orders", 1200, 50_000 + 40 * k),
                topic("news/eu", 310, 9_000 + 3 * k),
                topic("news/*", 42, 9_500 + 3 * k),
                topic("prices/btc", 7, 1_000_000 + 900 * k),
                topic("quiet", 1, 12),
            ],
        };
        server(&mut app, poll(3660, 0));
        server(&mut app, poll(3662, 2));
        app.update(Action::ShowView(View::Topics));
        app.update(Action::CycleSort);
        assert_snapshot!(render(&mut app, 80, 24));
    }

    #[test]
    fn feed_view() {
        let mut app = busy_app(10);
        for i in 0..30u64 {
            let mut event = published(
                &format!("1700000000{:03}-{}", i * 7, i % 3),
                &["orders"],
                &format!("{{\"order\":{i},\"total\":{}.50}}", i * 3),
            );
            match i % 5 {
                0 => {
                    event.topics.clear();
                    event.broadcast = true;
                    event.event_type = None;
                    event.preview = "maintenance\nat 22:00".to_owned();
                }
                1 => {
                    event.topics.clear();
                    event.users = vec!["alice".to_owned()];
                    event.event_type = Some("notice".to_owned());
                }
                _ => {}
            }
            server(
                &mut app,
                ServerMsg::Admin(Box::new(AdminEvent::Published(event))),
            );
        }
        app.update(Action::ShowView(View::Feed));
        assert_snapshot!("feed_view_live", render(&mut app, 80, 24));
        app.update(Action::TogglePause);
        for i in 0..4 {
            let event = published(&format!("1700000001000-{i}"), &["late"], "{}");
            server(
                &mut app,
                ServerMsg::Admin(Box::new(AdminEvent::Published(event))),
            );
        }
        assert_snapshot!("feed_view_paused", render(&mut app, 80, 24));
    }

    #[test]
    fn help() {
        let mut app = busy_app(3);
        app.update(Action::ToggleHelp);
        assert_snapshot!(render(&mut app, 80, 24));
    }

    #[test]
    fn the_help_reads_whole_at_the_minimum_size_by_scrolling() {
        let mut app = busy_app(3);
        app.update(Action::ToggleHelp);
        let (width, height) = (60, 16);
        let mut screens = vec![render(&mut app, width, height)];
        assert!(screens[0].contains("↑↓ scroll"), "{}", screens[0]);
        for _ in 0..40 {
            app.update(Action::Move(1));
            screens.push(render(&mut app, width, height));
        }
        // Scrolling stops at the last line.
        assert_eq!(screens[39], screens[40]);
        let words_of = |text: &str| {
            text.replace(['│', '"'], " ")
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let shown: Vec<Vec<String>> = screens.iter().map(|s| words_of(s)).collect();
        for (section, keys) in HELP {
            for (key, what) in *keys {
                let wanted = words_of(&format!("{key} {what}"));
                assert!(
                    shown
                        .iter()
                        .any(|words| words.windows(wanted.len()).any(|w| w == wanted)),
                    "{section}: {key} {what} is never shown whole"
                );
            }
        }
        assert_snapshot!("help_at_the_minimum_size_scrolled_to_the_end", &screens[40]);
        app.update(Action::Top);
        assert_eq!(render(&mut app, width, height), screens[0]);
    }

    #[test]
    fn too_small_a_terminal_gets_a_notice_not_a_panic() {
        let mut app = busy_app(3);
        let mut terminal = Terminal::new(TestBackend::new(0, 0)).unwrap();
        terminal.draw(|frame| draw(frame, &app)).unwrap();
        for (w, h) in [(1, 1), (20, 5), (59, 30), (80, 15)] {
            let screen = render(&mut app, w, h);
            if w > 40 {
                assert!(screen.contains("needs at least"), "{screen}");
            }
        }
    }

    #[test]
    fn every_view_and_popup_draws_at_many_sizes() {
        let mut app = busy_app(200);
        for (w, h) in [(60, 16), (80, 24), (120, 40), (250, 80)] {
            for view in View::ALL {
                app.update(Action::ShowView(view));
                render(&mut app, w, h);
            }
            app.update(Action::ShowView(View::Connections));
            app.update(Action::OpenDetail);
            render(&mut app, w, h);
            app.update(Action::AskDisconnect);
            render(&mut app, w, h);
            app.update(Action::Cancel);
            app.update(Action::Cancel);
            app.update(Action::OpenCompose);
            app.update(Action::NextField);
            type_text(&mut app, &"x".repeat(300));
            render(&mut app, w, h);
            app.update(Action::Cancel);
            app.update(Action::ToggleHelp);
            render(&mut app, w, h);
            app.update(Action::ToggleHelp);
        }
    }

    #[test]
    fn formats_are_short() {
        assert_eq!(fmt_count(9_999), "9999");
        assert_eq!(fmt_count(12_345), "12.3k");
        assert_eq!(fmt_count(4_500_000), "4.5M");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(5 << 20), "5.0 MiB");
        assert_eq!(fmt_duration(12_000), "12s");
        assert_eq!(fmt_duration(245_000), "4m05s");
        assert_eq!(fmt_duration(7_380_000), "2h03m");
        assert_eq!(fmt_duration(273_600_000), "3d04h");
        assert_eq!(wrap_words("", 10), [""]);
        assert_eq!(wrap_words("a bc def", 4), ["a bc", "def"]);
        assert_eq!(wrap_words("abcdefgh ij", 3), ["abc", "def", "gh", "ij"]);
    }
}
