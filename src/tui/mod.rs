//! `banger tui`: the control plane in a terminal UI. It talks to the
//! daemon only through [`Client`], like the CLI; what needs a process of
//! its own (`ssh`) it asks of its caller, since only `src/cli` may spawn.
//!
//! The shape of ratatui's component template (and of gitui and bottom):
//! all state lives in one [`App`]; key presses, the clock and the daemon's
//! answers are [`Event`]s; [`App::update`] changes the state and returns
//! [`Effect`]s, which a [`Runner`] carries out in the background and
//! answers with more events; [`draw`] is a pure function of the state onto
//! a frame, and ratatui writes only the cells that changed, so a refresh
//! does not flicker. Nothing is redrawn while nothing changes.
//!
//! - [`app`]: the state, and what each event does to it.
//! - [`keys`]: what each key does, and the list the help shows.
//! - [`table`]: the VM table's columns: cells, sorting, which fit.
//! - [`form`]: the create, clone and build forms.
//! - [`logs`]: the logs pane: lines, follow, search.
//! - [`build`]: a build's progress events folded for display.
//! - [`effects`]: requests to the daemon, log following, the build stream.
//! - [`view`]: drawing, a pure function of the state.
//! - [`theme`]: colours, or none under `NO_COLOR`.
//! - [`term`]: raw mode and the alternate screen, restored on exit and on panic.

pub mod app;
pub mod build;
pub mod effects;
pub mod form;
pub mod keys;
pub mod logs;
pub mod table;
pub mod term;
pub mod theme;
pub mod view;

use std::io::IsTerminal;
use std::time::Instant;

use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt;
use tokio::signal::unix::{SignalKind, signal};

pub use app::{App, Effect, Event, ShellKind};
pub use effects::Runner;
pub use theme::Theme;
pub use view::draw;

use crate::rpc::Client;
use crate::rpc::api::VmDetails;

/// Runs an interactive shell in a VM (`ssh`, or `vm exec -it` through its
/// agent) with the terminal handed over and returns its exit status; given
/// by `src/cli`, which may start processes.
pub type Shell<'a> =
    dyn FnMut(&VmDetails, ShellKind) -> anyhow::Result<std::process::ExitStatus> + 'a;

/// Why the TUI could not run.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("banger tui needs a terminal (stdin and stdout must be one)")]
    NotATerminal,
    #[error("cannot use the terminal")]
    Terminal(#[from] std::io::Error),
    /// A task panicked (its message is above); the terminal is restored.
    #[error("banger tui hit a bug and stopped (the panic message is above)")]
    Panicked,
}

/// Refuses to start anywhere but on a terminal (checked before anything
/// else is done, such as starting the daemon).
pub fn require_terminal() -> Result<(), TuiError> {
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        Ok(())
    } else {
        Err(TuiError::NotATerminal)
    }
}

/// Runs the TUI until the user leaves (`q`, Esc, Ctrl-C) or a SIGTERM or
/// SIGHUP arrives. The terminal is restored whatever happens.
pub async fn run(client: Client, shell: &mut Shell<'_>) -> Result<(), TuiError> {
    require_terminal()?;
    let mut app = App::new(Theme::from_env());
    let (mut runner, mut answers) = Runner::new(client);
    // SIGINT is a key in raw mode; one sent while a shell runs must not
    // end the TUI, so it is caught and ignored.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;

    let mut screen = term::Screen::enter()?;
    let size = screen.terminal.size()?;
    app.update(Event::Resize(size.width, size.height));
    for effect in app.start() {
        runner.run(effect);
    }
    let mut input = EventStream::new();
    let mut next_tick = Instant::now() + app.tick_interval();
    loop {
        if term::panicked() {
            return Err(TuiError::Panicked);
        }
        if app.take_dirty() {
            screen.terminal.draw(|frame| draw(frame, &app))?;
        }
        if app.should_quit() {
            break;
        }
        let event = tokio::select! {
            key = input.next() => match key {
                Some(Ok(TermEvent::Key(key))) => Event::Key(key),
                Some(Ok(TermEvent::Resize(w, h))) => Event::Resize(w, h),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => Event::Quit,
            },
            Some(answer) = answers.recv() => answer,
            () = tokio::time::sleep_until(next_tick.into()) => {
                next_tick = Instant::now() + app.tick_interval();
                Event::Tick
            }
            _ = terminate.recv() => Event::Quit,
            _ = hangup.recv() => Event::Quit,
            _ = interrupt.recv() => continue,
        };
        for effect in app.update(event) {
            let Effect::Shell(vm, kind) = effect else {
                runner.run(effect);
                continue;
            };
            // The shell reads the terminal: stop reading it here first.
            drop(input);
            screen.suspend()?;
            let result = shell(&vm, kind)
                .map(|status| status.code().unwrap_or(-1))
                .map_err(|e| format!("{e:#}"));
            screen.resume()?;
            input = EventStream::new();
            let done = Event::SshDone {
                vm: vm.name.clone(),
                result,
            };
            for effect in app.update(done) {
                runner.run(effect);
            }
        }
        // An operation begun shortens the wait for the next refresh.
        next_tick = next_tick.min(Instant::now() + app.tick_interval());
    }
    Ok(())
}
