//! What each key does, by what has the keyboard. The keys are listed for
//! people in [`HELP`]; the help bar and the `?` overlay draw from it.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::{App, Effect, Mode, Op, Packages, ShellKind, Tab};
use super::build::BuildState;
use super::form::{Form, FormOutcome, Submit};
use super::logs::LogView;
use crate::model::VmState;
use crate::rpc::api::VmAction;

/// Every key, as `(keys, what, where)`; `where` is "vm", "image" or "" (both).
pub const HELP: &[(&str, &str, &str)] = &[
    ("c", "create a VM", "vm"),
    ("s", "start", "vm"),
    ("t", "stop (T: kill)", "vm"),
    ("r", "restart", "vm"),
    ("p", "pause / resume", "vm"),
    ("z", "suspend (s restores)", "vm"),
    ("d", "delete", "vm"),
    ("n", "clone", "vm"),
    ("⏎", "ssh", "vm"),
    ("x", "shell through the agent (no sshd needed)", "vm"),
    ("l", "logs", "vm"),
    ("⏎", "packages", "image"),
    ("b", "build an image", ""),
    ("/", "filter by name", "vm"),
    ("o", "sort (O: reverse)", "vm"),
    ("tab", "VMs / images", ""),
    ("e", "last error in full", ""),
    ("?", "help", ""),
    ("q", "quit", ""),
];

impl App {
    pub(crate) fn key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.set_quit();
            return Vec::new();
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.normal_key(key),
            Mode::Filter => {
                match key.code {
                    KeyCode::Esc => self.filter.clear(),
                    KeyCode::Enter => {}
                    KeyCode::Backspace => {
                        self.filter.pop();
                        self.mode = Mode::Filter;
                    }
                    KeyCode::Char(c) => {
                        self.filter.push(c);
                        self.mode = Mode::Filter;
                    }
                    _ => self.mode = Mode::Filter,
                }
                Vec::new()
            }
            Mode::Help | Mode::Error => Vec::new(),
            Mode::ConfirmDelete(name) => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => self.run(Op::Delete(name)),
                _ => {
                    self.say(format!("{name} kept"));
                    Vec::new()
                }
            },
            Mode::Form(mut form) => match form.key(key) {
                FormOutcome::Editing => {
                    self.mode = Mode::Form(form);
                    Vec::new()
                }
                FormOutcome::Cancelled => Vec::new(),
                FormOutcome::Submitted(Submit::Create(req)) => self.run(Op::Create(req)),
                FormOutcome::Submitted(Submit::Clone { src, name }) => {
                    self.run(Op::Clone { src, name })
                }
                FormOutcome::Submitted(Submit::Build(req)) => {
                    self.build = Some(BuildState::new(&req.name));
                    self.mode = Mode::Build;
                    vec![Effect::Build(req)]
                }
            },
            Mode::Logs(mut view) => {
                let page = usize::from(self.size.1.saturating_sub(4));
                if view.key(key, page) {
                    self.mode = Mode::Logs(view);
                    Vec::new()
                } else {
                    vec![Effect::StopLogs]
                }
            }
            Mode::Packages(mut p) => {
                let len = p
                    .lines
                    .as_ref()
                    .and_then(|l| l.as_ref().ok())
                    .map_or(0, Vec::len);
                let page = usize::from(self.size.1.saturating_sub(4)).max(1);
                match key.code {
                    KeyCode::Esc | KeyCode::Char('q') | KeyCode::Enter => return Vec::new(),
                    KeyCode::Up | KeyCode::Char('k') => p.top = p.top.saturating_sub(1),
                    KeyCode::Down | KeyCode::Char('j') => p.top += 1,
                    KeyCode::PageUp => p.top = p.top.saturating_sub(page),
                    KeyCode::PageDown | KeyCode::Char(' ') => p.top += page,
                    KeyCode::Home | KeyCode::Char('g') => p.top = 0,
                    KeyCode::End | KeyCode::Char('G') => p.top = len,
                    _ => {}
                }
                p.top = p.top.min(len.saturating_sub(page));
                self.mode = Mode::Packages(p);
                Vec::new()
            }
            Mode::Build => match key.code {
                KeyCode::Char('x') if self.build.as_ref().is_some_and(BuildState::running) => {
                    if let Some(build) = &mut self.build {
                        build.ended(
                            "cancelled: bangerd removes the build VM and keeps the log".into(),
                        );
                    }
                    self.say("build cancelled".into());
                    vec![Effect::CancelBuild]
                }
                KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('b') => Vec::new(),
                _ => {
                    self.mode = Mode::Build;
                    Vec::new()
                }
            },
        }
    }

    fn normal_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        match key.code {
            KeyCode::Char('q') => self.set_quit(),
            KeyCode::Esc if !self.filter.is_empty() => self.filter.clear(),
            KeyCode::Esc => self.set_quit(),
            KeyCode::Char('?') => self.mode = Mode::Help,
            KeyCode::Char('e') => match self.last_error {
                Some(_) => self.mode = Mode::Error,
                None => self.say("no error so far".into()),
            },
            KeyCode::Tab | KeyCode::BackTab => {
                return match self.tab {
                    Tab::Vms => self.open_images(),
                    Tab::Images => {
                        self.tab = Tab::Vms;
                        Vec::new()
                    }
                };
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-10),
            KeyCode::PageDown => self.move_by(10),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX / 2),
            KeyCode::Char('b') => match &self.build {
                Some(build) if build.running() => self.mode = Mode::Build,
                _ => self.mode = Mode::Form(Form::build()),
            },
            _ if self.tab == Tab::Images => return self.image_key(key),
            _ => return self.vm_key(key),
        }
        Vec::new()
    }

    fn vm_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        match key.code {
            KeyCode::Char('/') => {
                self.mode = Mode::Filter;
                return Vec::new();
            }
            KeyCode::Char('o') => {
                self.sort.column = self.sort.column.next();
                self.sort.descending = false;
                return Vec::new();
            }
            KeyCode::Char('O') => {
                self.sort.descending = !self.sort.descending;
                return Vec::new();
            }
            KeyCode::Char('c') => {
                self.mode = Mode::Form(Form::create(self.defaults.as_ref()));
                return Vec::new();
            }
            _ => {}
        }
        let Some((name, state)) = self.selected_vm().map(|vm| (vm.name.clone(), vm.state)) else {
            if matches!(
                key.code,
                KeyCode::Char('s' | 't' | 'T' | 'r' | 'p' | 'z' | 'd' | 'n' | 'l' | 'x')
                    | KeyCode::Enter
            ) {
                self.fail("no VM selected (c creates one)".into());
            }
            return Vec::new();
        };
        match key.code {
            KeyCode::Char('s') => self.run(Op::Start(name)),
            KeyCode::Char('t') => self.run(Op::Stop { name, force: false }),
            KeyCode::Char('T') => self.run(Op::Stop { name, force: true }),
            KeyCode::Char('r') => self.run(Op::Restart(name)),
            KeyCode::Char('p') => {
                let action = match state {
                    VmState::Paused => VmAction::Resume,
                    _ => VmAction::Pause,
                };
                self.run(Op::Action { name, action })
            }
            KeyCode::Char('z') => self.run(Op::Action {
                name,
                action: VmAction::Suspend,
            }),
            KeyCode::Char('d') => {
                self.mode = Mode::ConfirmDelete(name);
                Vec::new()
            }
            KeyCode::Char('n') => {
                self.mode = Mode::Form(Form::clone_of(&name));
                Vec::new()
            }
            KeyCode::Char('l') => {
                self.mode = Mode::Logs(LogView::new(&name));
                vec![Effect::FollowLogs(name)]
            }
            KeyCode::Enter => {
                self.say(format!("connecting to {name}…"));
                vec![Effect::Ssh(name, ShellKind::Ssh)]
            }
            KeyCode::Char('x') => {
                self.say(format!("a shell in {name} through its agent…"));
                vec![Effect::Ssh(name, ShellKind::Exec)]
            }
            _ => Vec::new(),
        }
    }

    fn image_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let rows = self.image_rows();
        let Some(image) = self.image_index().map(|i| rows[i].0.name.clone()) else {
            return Vec::new();
        };
        if key.code == KeyCode::Enter {
            self.mode = Mode::Packages(Packages {
                image: image.clone(),
                lines: None,
                top: 0,
            });
            return vec![Effect::LoadImage(image)];
        }
        Vec::new()
    }

    /// Starts `op` in the background; the status line names it until it ends.
    fn run(&mut self, op: Op) -> Vec<Effect> {
        self.busy.push(op.label());
        vec![Effect::Run(op)]
    }

    /// Moves the selection of the current tab by `delta` rows.
    fn move_by(&mut self, delta: isize) {
        let step = |index: Option<usize>, len: usize| {
            index.map(|i| {
                (i as isize)
                    .saturating_add(delta)
                    .clamp(0, len as isize - 1) as usize
            })
        };
        match self.tab {
            Tab::Vms => {
                let visible = self.visible_vms();
                let name =
                    step(self.vm_index(&visible), visible.len()).map(|i| visible[i].name.clone());
                if name.is_some() {
                    self.selected_vm = name;
                }
            }
            Tab::Images => {
                let rows = self.image_rows();
                let name = step(self.image_index(), rows.len()).map(|i| rows[i].0.name.clone());
                if name.is_some() {
                    self.selected_image = name;
                }
            }
        }
    }
}
