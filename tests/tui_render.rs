//! `banger tui` drawn into ratatui's `TestBackend`, against a real daemon
//! in a private XDG tree: the same `App`, `Runner` and `draw` the terminal
//! runs, fed by real answers. The VM table in every state a VM can be made
//! to hold still in (created, running with its stats, stopping, stopped,
//! failed), an error in the status line, a small terminal, the images tab
//! and its package manifest, the lost-daemon banner and the reconnect, and
//! NO_COLOR. One guest is launched (not waited for); the failed VM is a
//! real failed start (its published port taken).

mod common;

use std::time::{Duration, Instant};

use banger::rpc::Client;
use banger::tui::{App, Effect, Event, Runner, Theme, draw};
use common::ok;
use common::vms::VmSandbox;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};
use tokio::sync::mpsc::UnboundedReceiver;

/// The TUI without a terminal: events in, effects carried out, frames drawn
/// into a buffer.
struct Ui {
    app: App,
    runner: Runner,
    events: UnboundedReceiver<Event>,
}

impl Ui {
    fn new(sb: &common::Sandbox, theme: Theme) -> Ui {
        let client = Client::new(sb.socket());
        let (runner, events) = Runner::new(client);
        let mut ui = Ui {
            app: App::new(theme),
            runner,
            events,
        };
        let effects = ui.app.start();
        ui.run(effects);
        ui
    }

    fn run(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            self.runner.run(effect);
        }
    }

    fn feed(&mut self, event: Event) {
        let effects = self.app.update(event);
        self.run(effects);
    }

    fn key(&mut self, code: KeyCode) {
        self.feed(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
    }

    fn keys(&mut self, text: &str) {
        for c in text.chars() {
            self.key(KeyCode::Char(c));
        }
    }

    /// Lets the clock tick and answers arrive until `done` holds.
    async fn until(&mut self, what: &str, done: impl Fn(&Ui) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not reached in 60 s; the screen:\n{}",
                self.screen(120, 30).0
            );
            tokio::select! {
                Some(event) = self.events.recv() => self.feed(event),
                _ = tick.tick() => self.feed(Event::Tick),
            }
        }
    }

    /// Draws the app on a `width`×`height` terminal: its text, one line per
    /// row, and the buffer for styles.
    fn screen(&self, width: u16, height: u16) -> (String, Buffer) {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, &self.app)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (text(&buffer), buffer)
    }

    fn state(&self, vm: &str) -> Option<String> {
        let found = self.app.vms().iter().find(|v| v.name == vm);
        found.map(|v| v.state.to_string())
    }
}

fn text(buffer: &Buffer) -> String {
    let area = buffer.area;
    (0..area.height)
        .map(|y| {
            (0..area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where `needle` starts on screen (in cells), on the first row that also
/// holds `row_with`.
fn find(buffer: &Buffer, row_with: &str, needle: &str) -> Option<(u16, u16)> {
    let area = buffer.area;
    (0..area.height).find_map(|y| {
        let cells: Vec<&str> = (0..area.width).map(|x| buffer[(x, y)].symbol()).collect();
        let line: String = cells.concat();
        if !line.contains(row_with) {
            return None;
        }
        let target: Vec<String> = needle.chars().map(String::from).collect();
        (0..cells.len().saturating_sub(target.len() - 1))
            .find(|&x| {
                cells[x..x + target.len()]
                    .iter()
                    .zip(&target)
                    .all(|(a, b)| a == b)
            })
            .map(|x| (x as u16, y))
    })
}

/// The table row of VM `name`: its name, then a state.
fn row<'a>(screen: &'a str, name: &str) -> &'a str {
    const STATES: [&str; 8] = [
        "creating", "created", "starting", "running", "stopping", "stopped", "failed", "deleting",
    ];
    let is_row = |line: &&str| {
        let mut words = line.trim_start_matches('▶').split_whitespace();
        words.next() == Some(name) && words.next().is_some_and(|w| STATES.contains(&w))
    };
    screen
        .lines()
        .find(is_row)
        .unwrap_or_else(|| panic!("no row for {name} in:\n{screen}"))
}

fn fg(buffer: &Buffer, at: (u16, u16)) -> Color {
    buffer[at].fg
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A sandbox whose daemon runs, with VMs made through the CLI (nothing boots).
fn sandbox(vms: &[&str]) -> Option<VmSandbox> {
    let vm = VmSandbox::new("stop_timeout_secs = 5")?;
    vm.no_upstream_dns();
    ok(vm.sb.banger(&["daemon", "start"]));
    for name in vms {
        ok(vm
            .sb
            .banger(&["vm", "create", "--name", name, "--no-start"]));
    }
    Some(vm)
}

#[test]
fn the_table_in_each_state_with_errors_in_the_status_line() {
    let Some(vm) = sandbox(&["idle"]) else {
        return;
    };
    let sb = &vm.sb;
    // A VM whose start will fail: its published port is taken first.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    drop(holder);
    let publish = format!("127.0.0.1:{port}:80");
    ok(sb.banger(&[
        "vm",
        "create",
        "--name",
        "broken",
        "--no-start",
        "--publish",
        &publish,
    ]));
    let _guard = common::vms::booting();
    ok(sb.banger(&["vm", "create", "--name", "box", "--no-wait"]));

    runtime().block_on(async {
        let mut ui = Ui::new(sb, Theme::colored());
        ui.until("box sampled", |ui| ui.app.vm_stats("box").is_some())
            .await;
        // Two samples make a sparkline.
        let first = Instant::now();
        ui.until("a second sample", |_| {
            first.elapsed() > Duration::from_millis(1500)
        })
        .await;

        // Sorted by name: box, broken, idle; box is selected.
        let (screen, buf) = ui.screen(120, 30);
        let running = row(&screen, "box");
        assert!(running.contains("running"), "{screen}");
        assert!(running.contains("MiB"), "no RSS in: {running}");
        assert!(
            running.contains(&format!("{port}→80"))
                || row(&screen, "broken").contains(&format!("{port}→80")),
            "{screen}"
        );
        assert!(row(&screen, "idle").contains("created"), "{screen}");
        assert!(
            row(&screen, "box").starts_with('▶'),
            "box is not selected:\n{screen}"
        );
        let at = find(&buf, "box ", "running").unwrap();
        assert_eq!(fg(&buf, at), Color::Green);
        assert!(
            buf[at].modifier.contains(Modifier::REVERSED),
            "box is not highlighted"
        );
        assert_eq!(
            fg(&buf, find(&buf, "idle ", "created").unwrap()),
            Color::DarkGray
        );
        for header in [
            "NAME", "STATE", "VMM", "IP", "DNS", "IMAGE", "CPUS", "MEM", "CPU%", "RSS", "UPTIME",
            "PORTS",
        ] {
            assert!(
                screen.lines().nth(1).unwrap().contains(header),
                "{header} missing:\n{screen}"
            );
        }
        assert!(screen.contains("box.vm"), "{screen}");
        // The details pane: the selected VM with its CPU and memory history.
        assert!(
            screen.contains("CPU ") && screen.contains("RSS ") && screen.contains(" of 1 GiB"),
            "{screen}"
        );
        assert!(
            screen.chars().any(|c| ('▁'..='█').contains(&c)),
            "no sparkline:\n{screen}"
        );

        // Its logs: the console as the guest boots, followed; `/` searches.
        ui.key(KeyCode::Char('l'));
        // The kernel's banner is the console's first line: once a few
        // lines are in, a search finds it wherever the view is.
        ui.until("the console's first lines", |ui| {
            let screen = ui.screen(120, 30).0;
            let total = screen
                .split(" of ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next()?.parse::<usize>().ok());
            total.is_some_and(|n| n >= 3)
        })
        .await;
        ui.key(KeyCode::Char('/'));
        ui.keys("linux version");
        ui.key(KeyCode::Enter);
        let (screen, buf) = ui.screen(120, 30);
        assert!(screen.contains("box: console"), "{screen}");
        assert!(screen.contains("`linux version` at line"), "{screen}");
        let at = find(&buf, "Linux version", "Linux version").unwrap();
        assert_eq!(
            buf[at].bg,
            Color::Yellow,
            "the match is not highlighted:\n{screen}"
        );
        ui.key(KeyCode::Tab);
        assert!(ui.screen(120, 30).0.contains("box: vmm log"));
        ui.key(KeyCode::Esc);
        assert!(ui.screen(120, 30).0.contains("UPTIME"));

        // A refused start: the daemon's error in the status line, in red,
        // and the VM failed.
        let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        ui.key(KeyCode::Down);
        ui.key(KeyCode::Char('s'));
        ui.until("the start of broken refused", |ui| {
            ui.app.busy().is_empty() && ui.state("broken").as_deref() == Some("failed")
        })
        .await;
        let (screen, buf) = ui.screen(120, 30);
        let status: Vec<&str> = screen.lines().rev().skip(1).take(3).collect();
        assert!(
            status.concat().contains("already in use"),
            "status line: {status:?}\n{screen}"
        );
        assert_eq!(
            fg(&buf, find(&buf, "already in use", "already").unwrap()),
            Color::Red
        );
        assert!(row(&screen, "broken").contains("failed"), "{screen}");
        assert_eq!(
            fg(&buf, find(&buf, "broken ", "failed").unwrap()),
            Color::Red
        );
        // `e` shows the error whole; any key closes it.
        ui.key(KeyCode::Char('e'));
        assert!(ui.screen(120, 30).0.contains("last error"));
        ui.key(KeyCode::Esc);

        // Stop the running one: stopping (yellow), then stopped.
        ui.key(KeyCode::Up);
        ui.key(KeyCode::Char('t'));
        ui.until("box stopping", |ui| {
            ui.state("box").as_deref() != Some("running")
        })
        .await;
        let (screen, buf) = ui.screen(120, 30);
        if row(&screen, "box").contains("stopping") {
            assert_eq!(
                fg(&buf, find(&buf, "box ", "stopping").unwrap()),
                Color::Yellow
            );
            assert!(screen.contains("stopping box"), "no busy line:\n{screen}");
        } else {
            // The guest went down before a refresh caught it stopping.
            eprintln!("box stopped before a refresh saw `stopping`");
        }
        ui.until("box stopped", |ui| {
            ui.state("box").as_deref() == Some("stopped") && ui.app.busy().is_empty()
        })
        .await;
        let (screen, buf) = ui.screen(120, 30);
        assert!(row(&screen, "box").contains("stopped"), "{screen}");
        assert_eq!(
            fg(&buf, find(&buf, "box ", "stopped").unwrap()),
            Color::DarkGray
        );
        assert!(screen.contains("box stopped"), "{screen}");
        assert!(
            screen.contains("not running"),
            "details of a stopped VM:\n{screen}"
        );
    });
}

#[test]
fn a_small_terminal_keeps_what_matters() {
    let Some(vm) = sandbox(&["alpha", "a-rather-long-vm-name", "gamma"]) else {
        return;
    };
    runtime().block_on(async {
        let mut ui = Ui::new(&vm.sb, Theme::colored());
        ui.until("listed", |ui| ui.app.vms().len() == 3).await;

        let (screen, _) = ui.screen(80, 24);
        assert_eq!(screen.lines().count(), 24);
        let header = screen.lines().nth(1).unwrap();
        for column in ["NAME", "STATE", "IP", "IMAGE"] {
            assert!(header.contains(column), "{column}:\n{screen}");
        }
        // A name longer than its column is cut visibly; the details have it whole.
        assert!(
            row(&screen, "a-rather-long-vm-na…").contains("created"),
            "{screen}"
        );
        // The details pane and the help bar fit.
        assert!(screen.contains("a-rather-long-vm-name ─"), "{screen}");
        let help = screen.lines().last().unwrap();
        assert!(
            help.contains("c create") && help.contains("? help"),
            "{help}"
        );

        // Narrower and shorter: name, state and address stay; the details go.
        let (screen, _) = ui.screen(44, 12);
        let header = screen.lines().nth(1).unwrap();
        assert!(
            header.contains("NAME") && header.contains("STATE") && header.contains("IP"),
            "{screen}"
        );
        assert!(!header.contains("PORTS"), "{screen}");
        assert!(row(&screen, "gamma").contains("created"), "{screen}");
        assert!(!screen.contains("gamma ─"), "{screen}");
        assert!(
            screen.lines().last().unwrap().contains("? help"),
            "{screen}"
        );

        // `?` lists every key, over the table; any key closes it.
        ui.key(KeyCode::Char('?'));
        let (screen, _) = ui.screen(80, 24);
        for line in [
            "create a VM",
            "delete",
            "ssh",
            "logs",
            "build an image",
            "quit",
        ] {
            assert!(screen.contains(line), "{line}:\n{screen}");
        }
        ui.key(KeyCode::Char('x'));
        assert!(!ui.screen(80, 24).0.contains("build an image"));

        // Too small to draw: says so instead.
        let (screen, _) = ui.screen(20, 5);
        assert!(screen.contains("too small"), "{screen}");

        // The form fits an 80×24 screen too.
        ui.key(KeyCode::Char('c'));
        let (screen, _) = ui.screen(80, 24);
        assert!(
            screen.contains("Create a VM") && screen.contains("nat"),
            "{screen}"
        );
    });
}

#[test]
fn the_images_tab_and_a_package_manifest() {
    let Some(vm) = sandbox(&["one", "two"]) else {
        return;
    };
    let manifest = std::fs::read_to_string(common::vms::runtime_dir().join("rootfs.ext4.packages"));
    runtime().block_on(async {
        let mut ui = Ui::new(&vm.sb, Theme::colored());
        ui.until("listed", |ui| ui.app.vms().len() == 2).await;
        ui.key(KeyCode::Tab);
        ui.until("images listed", |ui| {
            ui.screen(100, 24).0.contains("default ")
        })
        .await;
        let (screen, _) = ui.screen(100, 24);
        let header = screen.lines().nth(1).unwrap();
        for column in ["NAME", "SIZE", "PACKAGES", "BASE", "USED BY"] {
            assert!(header.contains(column), "{screen}");
        }
        let default = screen
            .lines()
            .find(|l| {
                l.trim_start_matches('▶')
                    .trim_start()
                    .starts_with("default ")
            })
            .unwrap_or_else(|| panic!("no image row:\n{screen}"));
        assert!(default.contains("one, two"), "{screen}");
        assert!(
            default.contains("GiB") || default.contains("MiB"),
            "{screen}"
        );
        assert!(screen.contains("Images (1)"), "{screen}");

        ui.key(KeyCode::Enter);
        ui.until("the manifest", |ui| {
            ui.screen(100, 24).0.contains("packages ─")
        })
        .await;
        let (screen, _) = ui.screen(100, 24);
        match manifest {
            Ok(manifest) => {
                let lines: Vec<&str> = manifest.lines().collect();
                let heading = format!("default: {} packages", lines.len());
                assert!(screen.contains(&heading), "{heading}:\n{screen}");
                assert!(screen.contains(lines[0]), "{}:\n{screen}", lines[0]);
            }
            Err(_) => assert!(screen.contains("no package manifest"), "{screen}"),
        }
        ui.key(KeyCode::Esc);
        assert!(ui.screen(100, 24).0.contains("USED BY"));
    });
}

#[test]
fn a_lost_daemon_shows_a_banner_and_is_found_again() {
    let Some(vm) = sandbox(&["keep"]) else {
        return;
    };
    let sb = &vm.sb;
    runtime().block_on(async {
        let mut ui = Ui::new(sb, Theme::colored());
        ui.until("listed", |ui| ui.app.vms().len() == 1).await;
        ok(sb.banger(&["daemon", "stop"]));
        ui.until("the daemon lost", |ui| {
            ui.screen(80, 24).0.contains("not answering")
        })
        .await;
        let (screen, buf) = ui.screen(80, 24);
        // The banner on the second line; the last list stays under it.
        assert!(
            screen
                .lines()
                .nth(1)
                .unwrap()
                .contains("bangerd is not answering"),
            "{screen}"
        );
        assert_eq!(buf[(1, 1)].bg, Color::Red);
        assert!(row(&screen, "keep").contains("created"), "{screen}");
        assert!(screen.contains("not running"), "the reason:\n{screen}");

        ok(sb.banger(&["daemon", "start"]));
        ui.until("reconnected", |ui| {
            !ui.screen(80, 24).0.contains("not answering")
        })
        .await;
        assert!(ui.screen(80, 24).0.contains("reconnected to bangerd"));
    });
}

#[test]
fn create_clone_build_and_delete_through_the_keys() {
    let Some(vm) = sandbox(&[]) else {
        return;
    };
    runtime().block_on(async {
        let mut ui = Ui::new(&vm.sb, Theme::colored());
        ui.until("listed and defaults known", |ui| {
            ui.screen(80, 24).0.contains("No VMs")
        })
        .await;
        // The form comes filled with the bundle's defaults.
        ui.until("the defaults", |ui| ui.app.defaults().is_some())
            .await;
        ui.key(KeyCode::Char('c'));
        let (screen, _) = ui.screen(80, 24);
        let vcpus = ui.app.defaults().unwrap().vcpus;
        assert!(screen.contains(&format!("vcpus  {vcpus} ")), "{screen}");
        ui.key(KeyCode::Esc);
        ui.key(KeyCode::Char('c'));
        ui.keys("made");
        for _ in 0..6 {
            ui.key(KeyCode::Tab);
        }
        ui.key(KeyCode::Char(' ')); // start: no
        ui.key(KeyCode::Enter);
        ui.until("made created", |ui| {
            ui.state("made").as_deref() == Some("created")
        })
        .await;
        let (screen, _) = ui.screen(80, 24);
        assert!(screen.contains("made created, not started"), "{screen}");

        // Clone it under a new name.
        ui.key(KeyCode::Char('n'));
        assert!(ui.screen(80, 24).0.contains("Clone made"));
        ui.keys("copy");
        ui.key(KeyCode::Enter);
        ui.until("copy cloned", |ui| {
            ui.state("copy").is_some() && ui.app.busy().is_empty()
        })
        .await;
        assert!(ui.screen(80, 24).0.contains("made cloned as copy"));

        // A build from a base that does not exist: the daemon's stream
        // ends in `failed`, and the build pane says why.
        ui.key(KeyCode::Char('b'));
        ui.keys("nobase");
        ui.key(KeyCode::Tab);
        for _ in 0.."default".len() {
            ui.key(KeyCode::Backspace);
        }
        ui.keys("missing");
        ui.key(KeyCode::Enter);
        ui.until("the build failed", |ui| {
            ui.screen(80, 24).0.contains("finished")
        })
        .await;
        let (screen, buf) = ui.screen(80, 24);
        assert!(screen.contains("build nobase"), "{screen}");
        assert!(
            screen.contains('✗') && screen.contains("missing"),
            "{screen}"
        );
        assert_eq!(fg(&buf, find(&buf, "✗", "✗").unwrap()), Color::Red);
        ui.key(KeyCode::Esc);
        // The selection stayed on made as copy appeared above it.
        assert!(row(&ui.screen(80, 24).0, "made").starts_with('▶'));
        ui.key(KeyCode::Up);
        ui.key(KeyCode::Char('d'));
        ui.key(KeyCode::Char('y'));
        ui.until("copy deleted", |ui| ui.state("copy").is_none())
            .await;

        // A delete asks first; another key keeps the VM.
        ui.key(KeyCode::Char('d'));
        assert!(
            ui.screen(80, 24)
                .0
                .contains("Delete VM made and its disks?")
        );
        ui.key(KeyCode::Char('n'));
        assert!(ui.screen(80, 24).0.contains("made kept"));
        ui.key(KeyCode::Char('d'));
        ui.key(KeyCode::Char('y'));
        ui.until("made deleted", |ui| ui.app.vms().is_empty()).await;
        assert!(ui.screen(80, 24).0.contains("made deleted"));
    });
}

#[test]
fn no_color_draws_without_colours() {
    let Some(vm) = sandbox(&["plain"]) else {
        return;
    };
    runtime().block_on(async {
        let mut ui = Ui::new(&vm.sb, Theme::plain());
        ui.until("listed", |ui| ui.app.vms().len() == 1).await;
        ui.key(KeyCode::Char('t')); // refused: it does not run
        ui.until("refused", |ui| {
            ui.app.busy().is_empty() && ui.app.status().is_some()
        })
        .await;
        let (screen, buf) = ui.screen(80, 24);
        assert!(ui.app.status().unwrap().error, "{screen}");
        for cell in buf.content() {
            assert_eq!(
                (cell.fg, cell.bg),
                (Color::Reset, Color::Reset),
                "a coloured cell:\n{screen}"
            );
        }
        // Selection and errors still stand out.
        let at = find(&buf, "plain ", "plain").unwrap();
        assert!(buf[at].modifier.contains(Modifier::REVERSED), "{screen}");
    });
}
