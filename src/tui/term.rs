//! The terminal: raw mode and the alternate screen while the TUI runs,
//! handed back around a shell, and restored however the TUI ends (a
//! guard's drop, and a panic hook for a panic).

use std::io::{self, Stdout};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use crossterm::cursor::Show;
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// The terminal in the TUI's hands; dropping it gives it back.
pub struct Screen {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    pub fn enter() -> io::Result<Screen> {
        install_panic_hook();
        take()?;
        match Terminal::new(CrosstermBackend::new(io::stdout())) {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    /// Gives the terminal back for a while (a shell runs in it).
    pub fn suspend(&mut self) -> io::Result<()> {
        restore_result()
    }

    /// Takes the terminal again after [`Screen::suspend`] and redraws all of it.
    pub fn resume(&mut self) -> io::Result<()> {
        take()?;
        self.terminal.clear()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

fn take() -> io::Result<()> {
    enable_raw_mode()?;
    if let Err(e) = execute!(io::stdout(), EnterAlternateScreen) {
        restore();
        return Err(e);
    }
    Ok(())
}

fn restore_result() -> io::Result<()> {
    // Each step is tried even if one before it failed.
    let raw = disable_raw_mode();
    let screen = execute!(io::stdout(), LeaveAlternateScreen, Show);
    raw.and(screen)
}

/// Cooked mode, the main screen, a visible cursor: the terminal as the
/// shell had it. Safe to call twice.
pub fn restore() {
    let _ = restore_result();
}

/// Set by the panic hook: a panic in a background task leaves the TUI
/// running on a terminal that is no longer its own, so it must end too.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// True once anything panicked since the TUI took the terminal.
pub fn panicked() -> bool {
    PANICKED.load(Ordering::SeqCst)
}

/// A panic restores the terminal before its message is printed, so the
/// message is readable and the shell usable.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            restore();
            previous(info);
        }));
    });
}
