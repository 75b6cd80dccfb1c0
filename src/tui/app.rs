//! All of the TUI's state in one [`App`], and what each [`Event`] does to
//! it: [`App::update`] changes the state and returns the [`Effect`]s to
//! carry out (requests to the daemon, a log to follow, a shell). Nothing
//! here does I/O, so every behaviour can be driven by hand in a test.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crossterm::event::KeyEvent;

use super::build::BuildState;
use super::form::Form;
use super::logs::{LogSource, LogView};
use super::table::Column;
use super::theme::Theme;
use crate::rpc::ClientError;
use crate::rpc::api::{
    BuildImage, CreateDefaults, CreateVm, ImageDetails, ImageSummary, Progress, VmAction,
    VmDetails, VmStats, VmSummary,
};

/// How often the list is refreshed when nothing is going on.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How often while an operation runs, so its state changes show promptly.
pub const REFRESH_BUSY: Duration = Duration::from_millis(200);
/// How many samples the CPU and memory sparklines keep.
pub const HISTORY: usize = 120;

/// Something that happened: a key, the clock, or the daemon's answer.
#[derive(Debug)]
pub enum Event {
    Key(KeyEvent),
    Resize(u16, u16),
    /// The clock: refresh what is due, turn the spinner.
    Tick,
    Vms(Result<Vec<VmSummary>, ClientError>),
    Stats(Result<Vec<VmStats>, ClientError>),
    Images(Result<Vec<ImageSummary>, ClientError>),
    Defaults(Result<CreateDefaults, ClientError>),
    /// An image's details, for its package manifest.
    Image(Result<ImageDetails, ClientError>),
    /// An operation finished; `result` says what became of it.
    Done {
        op: String,
        result: Result<String, ClientError>,
    },
    /// Text appended to one of a VM's logs (printable already).
    LogText {
        vm: String,
        source: LogSource,
        text: String,
    },
    /// The logs of `vm` cannot be shown.
    LogsFailed {
        vm: String,
        error: ClientError,
    },
    Build(Progress),
    /// The build's stream ended (after its last event, or cut off).
    BuildEnded(Result<(), ClientError>),
    /// A VM's details, to open a shell of this kind in it.
    SshReady(Result<Box<VmDetails>, ClientError>, ShellKind),
    /// The shell ended: its exit code, or why it could not run.
    SshDone {
        vm: String,
        result: Result<i32, String>,
    },
    /// SIGTERM or SIGHUP: leave as `q` does.
    Quit,
}

/// What [`App::update`] asks the outside world to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    RefreshVms,
    RefreshStats,
    RefreshImages,
    LoadDefaults,
    Run(Op),
    LoadImage(String),
    FollowLogs(String),
    StopLogs,
    Build(BuildImage),
    CancelBuild,
    /// Fetch a VM's details to open a shell in it ([`Event::SshReady`]).
    Ssh(String, ShellKind),
    /// Hand the terminal to a shell in this VM, then take it back.
    Shell(Box<VmDetails>, ShellKind),
}

/// How a shell reaches a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShellKind {
    /// `ssh`, as people use it.
    Ssh,
    /// `vm exec -it` through the guest agent: no sshd or network needed.
    Exec,
}

/// An operation on a VM, run in the background.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Create(CreateVm),
    Start(String),
    Stop {
        name: String,
        force: bool,
    },
    Restart(String),
    Delete(String),
    Clone {
        src: String,
        name: String,
    },
    /// Pause, resume or suspend.
    Action {
        name: String,
        action: VmAction,
    },
}

impl Op {
    /// What the status line says while it runs.
    pub fn label(&self) -> String {
        match self {
            Op::Create(req) => format!("creating {}", req.name),
            Op::Start(name) => format!("starting {name}"),
            Op::Stop { name, force: false } => format!("stopping {name}"),
            Op::Stop { name, force: true } => format!("killing {name}"),
            Op::Restart(name) => format!("restarting {name}"),
            Op::Delete(name) => format!("deleting {name}"),
            Op::Clone { src, name } => format!("cloning {src} as {name}"),
            Op::Action { name, action } => format!("{} {name}", action.ing()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Vms,
    Images,
}

/// What has the keyboard.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    /// Typing the name filter after `/`.
    Filter,
    Help,
    /// Waiting for `y` to delete this VM.
    ConfirmDelete(String),
    Form(Form),
    Logs(LogView),
    Packages(Packages),
    /// The running (or last) build's progress.
    Build,
    /// The last error in full.
    Error,
}

/// An image's package manifest on screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packages {
    pub image: String,
    /// None while loading; the lines, or why there are none.
    pub lines: Option<Result<Vec<String>, String>>,
    pub top: usize,
}

/// The status line's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub error: bool,
}

/// Whether the daemon answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// Not asked yet.
    Unknown,
    Up,
    /// The last request could not reach it; the list keeps what it last
    /// showed, and a request goes out every second until one gets through.
    Lost(String),
}

/// The sort key of the VM table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub column: Column,
    pub descending: bool,
}

/// A running VM's recent CPU (per mille of a core) and RSS (MiB), oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub cpu: VecDeque<u64>,
    pub rss: VecDeque<u64>,
}

/// The whole state of the TUI.
#[derive(Debug)]
pub struct App {
    pub(crate) theme: Theme,
    pub(crate) tab: Tab,
    pub(crate) mode: Mode,
    pub(crate) size: (u16, u16),
    pub(crate) vms: Vec<VmSummary>,
    /// The latest sample of each running VM's VMM.
    pub(crate) stats: HashMap<String, VmStats>,
    pub(crate) history: HashMap<String, History>,
    pub(crate) images: Vec<ImageSummary>,
    /// True once the first images list arrived.
    images_loaded: bool,
    pub(crate) defaults: Option<CreateDefaults>,
    pub(crate) sort: Sort,
    pub(crate) filter: String,
    /// The selected VM and image, by name, so a refresh that reorders the
    /// rows keeps the selection on the same one.
    pub(crate) selected_vm: Option<String>,
    pub(crate) selected_image: Option<String>,
    pub(crate) connection: Connection,
    /// True once the first list arrived.
    pub(crate) loaded: bool,
    pub(crate) status: Option<Status>,
    /// The full text of the last error, for `e`.
    pub(crate) last_error: Option<String>,
    /// Operations in flight, as the status line names them.
    pub(crate) busy: Vec<String>,
    pub(crate) build: Option<BuildState>,
    /// Requests in flight (one of each at a time).
    vms_pending: bool,
    vms_again: bool,
    stats_pending: bool,
    images_pending: bool,
    defaults_pending: bool,
    images_stale: bool,
    last_stats: Option<Instant>,
    /// Turns the spinner.
    pub(crate) frame: usize,
    dirty: bool,
    quit: bool,
}

impl App {
    pub fn new(theme: Theme) -> App {
        App {
            theme,
            tab: Tab::Vms,
            mode: Mode::Normal,
            size: (80, 24),
            vms: Vec::new(),
            stats: HashMap::new(),
            history: HashMap::new(),
            images: Vec::new(),
            images_loaded: false,
            defaults: None,
            sort: Sort {
                column: Column::Name,
                descending: false,
            },
            filter: String::new(),
            selected_vm: None,
            selected_image: None,
            connection: Connection::Unknown,
            loaded: false,
            status: None,
            last_error: None,
            busy: Vec::new(),
            build: None,
            vms_pending: false,
            vms_again: false,
            stats_pending: false,
            images_pending: false,
            defaults_pending: false,
            images_stale: true,
            last_stats: None,
            frame: 0,
            dirty: true,
            quit: false,
        }
    }

    /// What to ask for first.
    pub fn start(&mut self) -> Vec<Effect> {
        self.update(Event::Tick)
    }

    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// True (once) when something on screen changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// How long until the next [`Event::Tick`].
    pub fn tick_interval(&self) -> Duration {
        if self.busy.is_empty() && !self.build.as_ref().is_some_and(BuildState::running) {
            REFRESH
        } else {
            REFRESH_BUSY
        }
    }

    /// The status line's message, if any.
    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    pub(crate) fn images_loaded(&self) -> bool {
        self.images_loaded
    }

    pub fn vms(&self) -> &[VmSummary] {
        &self.vms
    }

    /// What a create gives a VM unless told otherwise, once the daemon said.
    pub fn defaults(&self) -> Option<&CreateDefaults> {
        self.defaults.as_ref()
    }

    /// The latest sample of VM `name`'s VMM, while it runs.
    pub fn vm_stats(&self, name: &str) -> Option<&VmStats> {
        self.stats.get(name)
    }

    /// Operations in flight, as the status line names them.
    pub fn busy(&self) -> &[String] {
        &self.busy
    }

    pub fn update(&mut self, event: Event) -> Vec<Effect> {
        let mut fx = Vec::new();
        match event {
            Event::Key(key) => {
                self.dirty = true;
                fx = self.key(key);
            }
            Event::Resize(w, h) => {
                self.size = (w, h);
                self.dirty = true;
            }
            Event::Tick => fx = self.tick(),
            Event::Vms(result) => fx = self.vms_loaded(result),
            Event::Stats(result) => {
                self.stats_pending = false;
                if let Ok(stats) = result {
                    self.stats_loaded(stats);
                }
            }
            Event::Images(result) => {
                self.images_pending = false;
                match result {
                    Ok(images) if images != self.images || !self.images_loaded => {
                        self.images = images;
                        self.images_loaded = true;
                        self.dirty = true;
                    }
                    Ok(_) => {}
                    Err(e) => self.error(&e),
                }
            }
            Event::Defaults(result) => {
                self.defaults_pending = false;
                self.defaults = result.ok();
            }
            Event::Image(result) => {
                if let Mode::Packages(p) = &mut self.mode {
                    p.lines = Some(match result {
                        Ok(image) => image
                            .packages
                            .ok_or_else(|| format!("{} has no package manifest", image.name)),
                        Err(e) => Err(describe(&e)),
                    });
                    self.dirty = true;
                }
            }
            Event::Done { op, result } => {
                if let Some(i) = self.busy.iter().position(|b| *b == op) {
                    self.busy.remove(i);
                }
                match result {
                    Ok(message) => self.say(message),
                    Err(e) => self.error(&e),
                }
                fx.extend(self.refresh_vms_now());
            }
            Event::LogText { vm, source, text } => {
                if let Mode::Logs(view) = &mut self.mode
                    && view.vm == vm
                {
                    view.append(source, &text);
                    self.dirty = true;
                }
            }
            Event::LogsFailed { vm, error } => {
                if let Mode::Logs(view) = &mut self.mode
                    && view.vm == vm
                {
                    view.note = Some(describe(&error));
                    self.dirty = true;
                }
            }
            Event::Build(progress) => {
                if let Some(build) = &mut self.build {
                    build.show(progress);
                    self.dirty = true;
                }
            }
            Event::BuildEnded(result) => fx = self.build_ended(result),
            Event::SshReady(Ok(vm), kind) if vm.state.is_running() => {
                fx.push(Effect::Shell(vm, kind))
            }
            Event::SshReady(Ok(vm), _) => {
                let key = match vm.state {
                    crate::model::VmState::Paused => "resume it first (p)",
                    _ => "start it first (s)",
                };
                self.fail(format!("{} is {}: {key}", vm.name, vm.state))
            }
            Event::SshReady(Err(e), _) => self.error(&e),
            Event::SshDone { vm, result } => {
                match result {
                    Ok(0) => self.say(format!("ssh {vm}: done")),
                    Ok(code) => self.say(format!("ssh {vm}: exit status {code}")),
                    Err(e) => self.fail(format!("ssh {vm}: {e}")),
                }
                fx.extend(self.refresh_vms_now());
            }
            Event::Quit => self.quit = true,
        }
        fx
    }

    fn tick(&mut self) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.frame = self.frame.wrapping_add(1);
        if !self.busy.is_empty() || self.build.as_ref().is_some_and(BuildState::running) {
            self.dirty = true;
        }
        if !self.vms_pending {
            self.vms_pending = true;
            fx.push(Effect::RefreshVms);
        }
        if self.connection != Connection::Up {
            return fx;
        }
        let running = self.vms.iter().any(|vm| vm.state.can_stop());
        let stats_due = self
            .last_stats
            .is_none_or(|t| t.elapsed() + REFRESH_BUSY / 2 >= REFRESH);
        if running && stats_due && !self.stats_pending {
            self.stats_pending = true;
            self.last_stats = Some(Instant::now());
            fx.push(Effect::RefreshStats);
        }
        if (self.tab == Tab::Images || self.images_stale) && !self.images_pending {
            self.images_pending = true;
            self.images_stale = false;
            fx.push(Effect::RefreshImages);
        }
        if self.defaults.is_none() && !self.defaults_pending {
            self.defaults_pending = true;
            fx.push(Effect::LoadDefaults);
        }
        fx
    }

    /// A refresh of the list right away, or as soon as the one in flight is back.
    pub(crate) fn refresh_vms_now(&mut self) -> Vec<Effect> {
        if self.vms_pending {
            self.vms_again = true;
            Vec::new()
        } else {
            self.vms_pending = true;
            vec![Effect::RefreshVms]
        }
    }

    fn vms_loaded(&mut self, result: Result<Vec<VmSummary>, ClientError>) -> Vec<Effect> {
        self.vms_pending = false;
        let mut fx = Vec::new();
        match result {
            Ok(vms) => {
                if self.connection != Connection::Up {
                    if matches!(self.connection, Connection::Lost(_)) {
                        self.say("reconnected to bangerd".into());
                        // What changed while it was away.
                        self.images_stale = true;
                    }
                    self.connection = Connection::Up;
                    self.dirty = true;
                }
                if !self.loaded || vms != self.vms {
                    self.loaded = true;
                    self.vms = vms;
                    self.forget_stopped();
                    self.dirty = true;
                    // Hold on to the selected row by name, so rows that
                    // come and go around it leave it where it is.
                    let gone = |name: &String| !self.vms.iter().any(|vm| vm.name == *name);
                    if self.selected_vm.as_ref().is_none_or(gone) {
                        self.selected_vm = self.visible_vms().first().map(|vm| vm.name.clone());
                    }
                }
                if std::mem::take(&mut self.vms_again) {
                    fx.extend(self.refresh_vms_now());
                }
            }
            Err(e) if lost(&e) => {
                let why = describe(&e);
                if self.connection != Connection::Lost(why.clone()) {
                    self.fail(why.clone());
                    self.connection = Connection::Lost(why);
                    self.stats.clear();
                }
            }
            Err(e) => self.error(&e),
        }
        fx
    }

    /// Drops the samples of VMs that no longer run (or exist).
    fn forget_stopped(&mut self) {
        let running: Vec<&str> = self
            .vms
            .iter()
            .filter(|vm| vm.state.can_stop())
            .map(|vm| vm.name.as_str())
            .collect();
        self.stats
            .retain(|name, _| running.contains(&name.as_str()));
        let names: Vec<&str> = self.vms.iter().map(|vm| vm.name.as_str()).collect();
        self.history
            .retain(|name, _| names.contains(&name.as_str()));
    }

    fn stats_loaded(&mut self, stats: Vec<VmStats>) {
        self.stats.clear();
        for s in stats {
            let history = self.history.entry(s.name.clone()).or_default();
            for (series, value) in [
                (&mut history.cpu, (s.cpu_percent * 10.0).round() as u64),
                (&mut history.rss, s.rss_bytes >> 20),
            ] {
                if series.len() == HISTORY {
                    series.pop_front();
                }
                series.push_back(value);
            }
            self.stats.insert(s.name.clone(), s);
        }
        self.forget_stopped();
        self.dirty = true;
    }

    fn build_ended(&mut self, result: Result<(), ClientError>) -> Vec<Effect> {
        let Some(build) = &mut self.build else {
            return Vec::new();
        };
        match result {
            Err(e) => build.ended(describe(&e)),
            Ok(()) => build.ended("bangerd ended the build's stream without a result".into()),
        }
        let message = match &build.outcome {
            Some(super::build::Outcome::Built(line)) => Ok(line.clone()),
            Some(super::build::Outcome::Failed(lines)) => Err(lines.join(": ")),
            None => Ok(String::new()),
        };
        match message {
            Ok(line) => self.say(line),
            Err(line) => self.fail(line),
        }
        // The new image belongs in the images tab.
        if self.images_pending {
            self.images_stale = true;
            return Vec::new();
        }
        self.images_pending = true;
        vec![Effect::RefreshImages]
    }

    pub(crate) fn say(&mut self, text: String) {
        self.status = Some(Status { text, error: false });
        self.dirty = true;
    }

    pub(crate) fn fail(&mut self, text: String) {
        self.last_error = Some(text.clone());
        self.status = Some(Status { text, error: true });
        self.dirty = true;
    }

    pub(crate) fn error(&mut self, err: &ClientError) {
        self.fail(describe(err));
    }

    /// The VMs the table shows: filtered by name, in sort order.
    pub(crate) fn visible_vms(&self) -> Vec<&VmSummary> {
        let filter = self.filter.to_lowercase();
        let mut vms: Vec<&VmSummary> = self
            .vms
            .iter()
            .filter(|vm| vm.name.to_lowercase().contains(&filter))
            .collect();
        let Sort { column, descending } = self.sort;
        vms.sort_by(|a, b| {
            let order = column.compare((a, self.stats.get(&a.name)), (b, self.stats.get(&b.name)));
            if descending { order.reverse() } else { order }
        });
        vms
    }

    /// The selected row of the VM table.
    pub(crate) fn vm_index(&self, visible: &[&VmSummary]) -> Option<usize> {
        if visible.is_empty() {
            return None;
        }
        let found = self
            .selected_vm
            .as_ref()
            .and_then(|name| visible.iter().position(|vm| vm.name == *name));
        Some(found.unwrap_or(0))
    }

    pub(crate) fn selected_vm(&self) -> Option<&VmSummary> {
        let visible = self.visible_vms();
        self.vm_index(&visible).map(|i| visible[i])
    }

    /// The images in name order, each with the VMs made from it.
    pub(crate) fn image_rows(&self) -> Vec<(&ImageSummary, Vec<&str>)> {
        let mut images: Vec<&ImageSummary> = self.images.iter().collect();
        images.sort_by(|a, b| a.name.cmp(&b.name));
        images
            .into_iter()
            .map(|image| {
                let users = self
                    .vms
                    .iter()
                    .filter(|vm| vm.image.as_deref() == Some(image.name.as_str()))
                    .map(|vm| vm.name.as_str())
                    .collect();
                (image, users)
            })
            .collect()
    }

    pub(crate) fn image_index(&self) -> Option<usize> {
        if self.images.is_empty() {
            return None;
        }
        let rows = self.image_rows();
        let found = self
            .selected_image
            .as_ref()
            .and_then(|name| rows.iter().position(|(image, _)| image.name == *name));
        Some(found.unwrap_or(0))
    }

    pub(crate) fn set_quit(&mut self) {
        self.quit = true;
    }

    pub(crate) fn open_images(&mut self) -> Vec<Effect> {
        self.tab = Tab::Images;
        if self.images_pending || self.connection != Connection::Up {
            self.images_stale = true;
            return Vec::new();
        }
        self.images_pending = true;
        self.images_stale = false;
        vec![Effect::RefreshImages]
    }
}

/// True for errors that mean the daemon is not there (as opposed to one
/// that answered with a refusal).
fn lost(err: &ClientError) -> bool {
    matches!(
        err,
        ClientError::NotRunning { .. } | ClientError::Connect { .. } | ClientError::Http(_)
    )
}

/// An error as one line: the daemon's own chain and hint, or ours.
pub fn describe(err: &ClientError) -> String {
    let text = match err {
        ClientError::Api { chain, hint, .. } => {
            let mut text = chain.join(": ");
            if let Some(hint) = hint {
                text.push_str(&format!(" (hint: {hint})"));
            }
            text
        }
        other => {
            let mut parts = vec![other.to_string()];
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                parts.push(cause.to_string());
                source = cause.source();
            }
            parts.join(": ")
        }
    };
    // A daemon's error may quote a guest's console.
    crate::system::text::printable(text.as_bytes())
}
