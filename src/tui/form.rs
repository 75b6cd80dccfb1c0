//! The small forms behind create, clone and build: labelled fields filled
//! with the defaults, edited in place, checked before anything is sent.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::rpc::api::{BuildImage, CreateDefaults, CreateVm};
use crate::rpc::{check_image_name, check_vm_name};
use crate::size::{format_size, parse_memory_mib, parse_size};

/// What a form makes when submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormKind {
    Create,
    /// A copy of the stopped VM `src`.
    Clone {
        src: String,
    },
    Build,
}

/// One field: text, or a yes/no toggle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub label: &'static str,
    pub value: String,
    /// What the daemon would use anyway: a value left at this is not sent.
    pub default: String,
    /// Shown greyed when the field is empty.
    pub placeholder: &'static str,
    pub toggle: bool,
}

impl Field {
    fn text(label: &'static str, default: String, placeholder: &'static str) -> Field {
        Field {
            label,
            value: default.clone(),
            default,
            placeholder,
            toggle: false,
        }
    }

    fn toggle(label: &'static str, on: bool) -> Field {
        let value = yes_no(on).to_string();
        Field {
            label,
            value: value.clone(),
            default: value,
            placeholder: "",
            toggle: true,
        }
    }

    pub fn is_on(&self) -> bool {
        self.value == "yes"
    }

    /// The value, or None when left at the default or empty.
    fn changed(&self) -> Option<&str> {
        let v = self.value.trim();
        (!v.is_empty() && v != self.default.trim()).then_some(v)
    }
}

fn yes_no(on: bool) -> &'static str {
    if on { "yes" } else { "no" }
}

/// What submitting a form asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Submit {
    Create(CreateVm),
    Clone { src: String, name: String },
    Build(BuildImage),
}

/// A form being filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub kind: FormKind,
    pub fields: Vec<Field>,
    /// The field being edited.
    pub focus: usize,
    /// Why the last submit was refused.
    pub error: Option<String>,
}

/// What a key did to a form.
#[derive(Debug, Clone, PartialEq)]
pub enum FormOutcome {
    Editing,
    Cancelled,
    Submitted(Submit),
}

impl Form {
    /// `vm create`, filled with the bundle's defaults when they are known.
    pub fn create(defaults: Option<&CreateDefaults>) -> Form {
        let d = |f: &dyn Fn(&CreateDefaults) -> String| defaults.map(f).unwrap_or_default();
        let size = |bytes: u64| format_size(bytes).replace(' ', "").replace("iB", "");
        Form::new(
            FormKind::Create,
            vec![
                Field::text("name", String::new(), "a DNS label: a-z, 0-9, -"),
                Field::text("image", d(&|d| d.image.clone()), "default"),
                Field::text("vcpus", d(&|d| d.vcpus.to_string()), "default"),
                Field::text(
                    "memory",
                    d(&|d| size(u64::from(d.memory_mib) << 20)),
                    "default (MiB or 2G)",
                ),
                Field::text("disk", d(&|d| size(d.disk_bytes)), "default"),
                Field::text("work disk", d(&|d| size(d.work_disk_bytes)), "default"),
                Field::toggle("start", true),
                Field::toggle("nat", true),
            ],
        )
    }

    pub fn clone_of(src: &str) -> Form {
        Form::new(
            FormKind::Clone { src: src.into() },
            vec![Field::text("new name", String::new(), "a DNS label")],
        )
    }

    pub fn build() -> Form {
        Form::new(
            FormKind::Build,
            vec![
                Field::text("name", String::new(), "the new image's name"),
                Field::text("from", "default".into(), "default"),
                Field::text("size", String::new(), "the base's size (or 4G)"),
                Field::text("packages", String::new(), "apt packages, comma-separated"),
                Field::toggle("modules", false),
                Field::toggle("replace", false),
            ],
        )
    }

    fn new(kind: FormKind, fields: Vec<Field>) -> Form {
        Form {
            kind,
            fields,
            focus: 0,
            error: None,
        }
    }

    pub fn title(&self) -> String {
        match &self.kind {
            FormKind::Create => "Create a VM".into(),
            FormKind::Clone { src } => format!("Clone {src} (stopped) as"),
            FormKind::Build => "Build an image".into(),
        }
    }

    pub fn key(&mut self, key: KeyEvent) -> FormOutcome {
        let field = &mut self.fields[self.focus];
        match key.code {
            KeyCode::Esc => return FormOutcome::Cancelled,
            KeyCode::Enter => match self.submit() {
                Ok(submit) => return FormOutcome::Submitted(submit),
                Err(e) => self.error = Some(e),
            },
            KeyCode::Tab | KeyCode::Down => self.focus = (self.focus + 1) % self.fields.len(),
            KeyCode::BackTab | KeyCode::Up => {
                self.focus = (self.focus + self.fields.len() - 1) % self.fields.len()
            }
            KeyCode::Char(' ') | KeyCode::Left | KeyCode::Right if field.toggle => {
                field.value = yes_no(!field.is_on()).into()
            }
            KeyCode::Char('y') if field.toggle => field.value = "yes".into(),
            KeyCode::Char('n') if field.toggle => field.value = "no".into(),
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                field.value.clear()
            }
            KeyCode::Char(c)
                if !field.toggle
                    && !key.modifiers.contains(KeyModifiers::CONTROL)
                    && field.value.chars().count() < 200 =>
            {
                field.value.push(c)
            }
            KeyCode::Backspace if !field.toggle => {
                field.value.pop();
            }
            _ => {}
        }
        FormOutcome::Editing
    }

    fn get(&self, label: &str) -> &Field {
        self.fields
            .iter()
            .find(|f| f.label == label)
            .expect("a form's own field")
    }

    /// The request this form asks for, or why it cannot be sent.
    fn submit(&self) -> Result<Submit, String> {
        let text = |label: &str| self.get(label).value.trim().to_string();
        let size = |label: &str| -> Result<Option<u64>, String> {
            self.get(label)
                .changed()
                .map(|v| parse_size(v).map_err(|e| format!("{label}: {e}")))
                .transpose()
        };
        match &self.kind {
            FormKind::Create => {
                let name = text("name");
                check_vm_name(&name).map_err(|e| e.to_string())?;
                let image = self.get("image").changed().map(str::to_string);
                if let Some(image) = &image {
                    check_image_name(image).map_err(|e| e.to_string())?;
                }
                let vcpus = self
                    .get("vcpus")
                    .changed()
                    .map(|v| {
                        v.parse::<u32>()
                            .map_err(|_| format!("vcpus: `{v}` is not a number"))
                    })
                    .transpose()?;
                let memory_mib = self
                    .get("memory")
                    .changed()
                    .map(|v| parse_memory_mib(v).map_err(|e| format!("memory: {e}")))
                    .transpose()?;
                let start = self.get("start").is_on();
                Ok(Submit::Create(CreateVm {
                    name,
                    image,
                    vcpus,
                    memory_mib,
                    disk_bytes: size("disk")?,
                    work_disk_bytes: size("work disk")?,
                    vmm: None,
                    start,
                    nat: self.get("nat").is_on(),
                    wait_ssh: start,
                    publish: Vec::new(),
                    cold: false,
                }))
            }
            FormKind::Clone { src } => {
                let name = text("new name");
                check_vm_name(&name).map_err(|e| e.to_string())?;
                Ok(Submit::Clone {
                    src: src.clone(),
                    name,
                })
            }
            FormKind::Build => {
                let name = text("name");
                check_image_name(&name).map_err(|e| e.to_string())?;
                let from = match text("from") {
                    from if from.is_empty() => None,
                    from => {
                        check_image_name(&from).map_err(|e| e.to_string())?;
                        Some(from)
                    }
                };
                let packages = text("packages")
                    .split([',', ' '])
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect();
                let size_bytes = match text("size") {
                    s if s.is_empty() => None,
                    s => Some(parse_size(&s).map_err(|e| format!("size: {e}"))?),
                };
                Ok(Submit::Build(BuildImage {
                    name,
                    from,
                    size_bytes,
                    packages,
                    modules: self.get("modules").is_on(),
                    replace: self.get("replace").is_on(),
                    ..BuildImage::default()
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(form: &mut Form, keys: &str) {
        for c in keys.chars() {
            form.key(KeyEvent::from(KeyCode::Char(c)));
        }
    }

    fn enter(form: &mut Form) -> FormOutcome {
        form.key(KeyEvent::from(KeyCode::Enter))
    }

    fn defaults() -> CreateDefaults {
        CreateDefaults {
            image: "default".into(),
            vcpus: 2,
            memory_mib: 1024,
            disk_bytes: 2 << 30,
            work_disk_bytes: 1 << 30,
        }
    }

    #[test]
    fn create_sends_only_what_differs_from_the_defaults() {
        let mut form = Form::create(Some(&defaults()));
        assert_eq!(form.get("memory").value, "1G");
        press(&mut form, "box1");
        form.key(KeyEvent::from(KeyCode::Tab));
        form.key(KeyEvent::from(KeyCode::Tab));
        form.key(KeyEvent::from(KeyCode::Backspace));
        press(&mut form, "4");
        let FormOutcome::Submitted(Submit::Create(req)) = enter(&mut form) else {
            panic!("not submitted");
        };
        assert_eq!(req.name, "box1");
        assert_eq!(req.vcpus, Some(4));
        assert_eq!(
            (req.image, req.memory_mib, req.disk_bytes),
            (None, None, None)
        );
        assert!(req.start && req.nat && req.wait_ssh);
    }

    #[test]
    fn a_bad_name_or_size_is_refused_in_the_form() {
        let mut form = Form::create(Some(&defaults()));
        press(&mut form, "Bad_Name");
        assert_eq!(enter(&mut form), FormOutcome::Editing);
        assert!(
            form.error.as_deref().unwrap().contains("Bad_Name"),
            "{:?}",
            form.error
        );
        form.key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        press(&mut form, "ok");
        form.focus = 3;
        press(&mut form, "x");
        assert_eq!(enter(&mut form), FormOutcome::Editing);
        assert!(form.error.as_deref().unwrap().starts_with("memory:"));
    }

    #[test]
    fn build_splits_packages_and_reads_toggles() {
        let mut form = Form::build();
        press(&mut form, "dev");
        form.focus = 3;
        press(&mut form, "git, curl jq");
        form.focus = 4;
        press(&mut form, " ");
        let FormOutcome::Submitted(Submit::Build(req)) = enter(&mut form) else {
            panic!("not submitted");
        };
        assert_eq!(req.packages, ["git", "curl", "jq"]);
        assert_eq!(req.from.as_deref(), Some("default"));
        assert!(req.modules && !req.replace);
    }
}
