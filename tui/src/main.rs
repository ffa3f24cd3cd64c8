//! herald-tui: the operator's live console for a Herald server.
//!
//! `herald-tui --url http://127.0.0.1:7070 --token <admin token>` (or `HERALD_URL`,
//! `HERALD_TOKEN`; `https://` URLs too, with `--ca-file` for a private CA). The loop is The Elm Architecture: terminal events and server messages
//! become [`event::Action`]s, [`app::App::update`] applies them and may return a command for
//! the [`client`], and [`ui::draw`] paints the state.

mod app;
mod client;
mod event;
mod tls;
mod ui;

use std::io::{self, Stdout};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{
    self as term_event, DisableBracketedPaste, EnableBracketedPaste, Event,
};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::app::App;
use crate::client::ClientConfig;
use crate::event::Action;

/// Server messages are drawn at most this often; keys are drawn at once.
const FRAME_INTERVAL: Duration = Duration::from_millis(50);
/// How long the input thread waits for a key before checking whether to stop.
const INPUT_POLL: Duration = Duration::from_millis(200);
/// Server messages waiting for the app; when full the client waits (and so does the socket).
const SERVER_QUEUE: usize = 4096;

/// The operator's live console for a Herald server.
#[derive(Debug, clap::Parser)]
#[command(name = "herald-tui", version, about)]
struct Cli {
    /// The server's base URL: http://host:port, or https://host:port for a server started
    /// with --tls-cert (its certificate must chain to the system's roots or to --ca-file).
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    /// PEM certificates to trust besides the system's for an https:// URL (your private CA's).
    #[arg(long, env = "HERALD_CA_FILE", value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// An admin token (sent as `Authorization: Bearer`); not needed against `herald serve --dev`.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Check the arguments before the terminal changes, so errors print normally.
    let config = ClientConfig::new(&cli.url, cli.token.as_deref(), cli.ca_file.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    install_panic_hook();
    let mut terminal = setup_terminal().context("setting up the terminal")?;
    let result = runtime.block_on(run(&mut terminal, config));
    restore_terminal();
    // Dropping the runtime would wait for the client's tasks; none of them matters now.
    runtime.shutdown_background();
    result
}

type Term = Terminal<CrosstermBackend<Stdout>>;

fn setup_terminal() -> io::Result<Term> {
    enable_raw_mode()?;
    // Bracketed paste: pasted text arrives as one event, so a pasted newline cannot send the
    // compose form and a pasted tab cannot move its focus.
    if let Err(e) = execute!(io::stdout(), EnterAlternateScreen, EnableBracketedPaste) {
        restore_terminal();
        return Err(e);
    }
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    Ok(terminal)
}

/// Puts the terminal back as the shell expects it; safe to call more than once.
fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableBracketedPaste,
        LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
}

/// A panic anywhere (the loop, the input thread, a client task) restores the terminal,
/// prints the message where it can be read, and ends the process: a console half drawn over
/// a cooked terminal helps no one.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
        std::process::exit(101);
    }));
}

/// Reads terminal events on a thread of its own (crossterm's reads block).
fn spawn_input(to_app: mpsc::UnboundedSender<Event>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match term_event::poll(INPUT_POLL) {
                Ok(false) => continue,
                Ok(true) => {}
                // No terminal to read: dropping the sender ends the app.
                Err(_) => return,
            }
            let Ok(event) = term_event::read() else {
                return;
            };
            if to_app.send(event).is_err() {
                return;
            }
        }
    });
}

/// Text unique to this run of the console (process id and start time): the prefix of its
/// idempotency keys, so two consoles never send the same key.
fn instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}", std::process::id())
}

async fn run(terminal: &mut Term, config: ClientConfig) -> anyhow::Result<()> {
    let mut app = App::new(config.base()).with_instance(instance_id());
    let size = terminal.size()?;
    app.update(Action::Resize {
        width: size.width,
        height: size.height,
    });

    let (server_tx, mut server_rx) = mpsc::channel(SERVER_QUEUE);
    let commands = client::start(config, server_tx);
    let (input_tx, mut input_rx) = mpsc::unbounded_channel();
    let stop_input = Arc::new(AtomicBool::new(false));
    spawn_input(input_tx, stop_input.clone());

    let mut dirty = true;
    let mut draw_now = true;
    let mut last_draw = Instant::now();
    while !app.should_quit {
        if dirty && (draw_now || last_draw.elapsed() >= FRAME_INTERVAL) {
            app.sync();
            terminal.draw(|frame| ui::draw(frame, &app))?;
            last_draw = Instant::now();
            dirty = false;
            draw_now = false;
        }
        tokio::select! {
            biased;
            input = input_rx.recv() => {
                let Some(input) = input else { break };
                if let Some(action) = event::terminal_action(&app, &input) {
                    if let Some(command) = app.update(action) {
                        // The client outlives the loop; a failed send means it is gone too.
                        let _ = commands.send(command);
                    }
                    dirty = true;
                    draw_now = true;
                }
            }
            msg = server_rx.recv() => {
                let Some(msg) = msg else { break };
                app.update(Action::Server(msg));
                dirty = true;
            }
            () = sleep_until(last_draw + FRAME_INTERVAL), if dirty => {}
        }
    }
    stop_input.store(true, Ordering::Relaxed);
    Ok(())
}
