//! Request and response bodies of the `/v1` API. Plain data: no I/O here.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::{DiskRole, Mac, RootMode, TapName, VmRole, VmState, VmmChoice, VmmKind};

/// `POST /v1/vms/{name}/exec` switches to this protocol (`Upgrade:`): agent
/// frames ([`banger_agent::proto`]) for one session, under this frame id.
pub const EXEC_PROTOCOL: &str = "banger-exec";
pub const EXEC_SESSION: u32 = 1;

/// `GET /v1/health`: who is answering, and since when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    /// The daemon's version, to spot a client and daemon that disagree.
    pub version: String,
    pub pid: u32,
    /// The only uid the daemon serves.
    pub uid: u32,
    pub uptime_secs: u64,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Where to look when something went wrong.
    pub log: PathBuf,
}

/// `GET /v1/doctor`: every host requirement, met or not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DoctorReport {
    pub checks: Vec<DoctorCheck>,
}

impl DoctorReport {
    /// True when every required check passes.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok || !c.required)
    }
}

/// One host requirement.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DoctorCheck {
    pub name: String,
    pub ok: bool,
    /// False for what only some features need (an optional VMM, say).
    pub required: bool,
    /// What was found.
    pub detail: String,
    /// What to do when the check fails.
    pub fix: Option<String>,
    /// Files an administrator installs (as root) to pass it: the network
    /// grant of a user who is not root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grant: Vec<crate::grant::GrantFile>,
}

/// One row of `GET /v1/vms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmSummary {
    pub name: String,
    pub state: VmState,
    pub image: Option<String>,
    /// The VMM that runs it (`backend` in the API's JSON).
    #[serde(rename = "backend")]
    pub vmm: VmmKind,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub ip: Option<Ipv4Addr>,
    /// `<name>.vm`, which the daemon's DNS server answers.
    #[serde(default)]
    pub dns_name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// A user's VM, or the temporary VM of an image build.
    #[serde(default)]
    pub role: VmRole,
    /// The image shared read-only under an upper disk, or a clone.
    pub root_mode: RootMode,
    /// Its disks and the space each really takes.
    #[serde(default)]
    pub disks: Vec<DiskUsage>,
    /// Published ports, `ADDR:HOSTPORT:GUESTPORT/tcp`.
    #[serde(default)]
    pub published: Vec<String>,
}

/// One disk of a VM: how big it looks and how much of the host's disk it
/// takes (sparse files and reflinks take less).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskUsage {
    pub role: DiskRole,
    pub path: PathBuf,
    pub apparent_bytes: u64,
    pub used_bytes: u64,
    /// Attached read-only and shared with the image's other VMs.
    pub shared: bool,
}

/// One row of `GET /v1/images`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageSummary {
    pub name: String,
    pub rootfs: PathBuf,
    pub size_bytes: Option<u64>,
    /// Unix seconds.
    pub created_at: i64,
    /// The image it was built from, for built images.
    #[serde(default)]
    pub base: Option<String>,
    /// How many packages its manifest lists, when it has one.
    #[serde(default)]
    pub package_count: Option<usize>,
}

/// The body of every error response: the cause chain, outermost first, and
/// what the user can do about it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `POST /v1/vms/{name}/clone`: the new VM's name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloneVm {
    pub name: String,
}

/// `POST /v1/vms`: what to create. Unset fields take the bundle's defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreateVm {
    pub name: String,
    pub image: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub disk_bytes: Option<u64>,
    pub work_disk_bytes: Option<u64>,
    /// Unset means the configured choice.
    pub vmm: Option<VmmChoice>,
    /// False for `--no-start`: disks and keys are made, nothing boots.
    pub start: bool,
    /// False for `--no-nat`: host-only networking.
    pub nat: bool,
    /// False for `--no-wait`: answer once the VMM has started the guest,
    /// without waiting for SSH.
    #[serde(default = "yes")]
    pub wait_ssh: bool,
    /// Ports to publish, `[HOSTADDR:]HOSTPORT:GUESTPORT[/tcp]`.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Boot, even where the image has a warm template that fits.
    #[serde(default)]
    pub cold: bool,
}

/// One of an image's warm templates (`image warm`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TemplateInfo {
    /// Its shape as a name: `qemu-1cpu-384mib`.
    pub key: String,
    pub vmm: VmmKind,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// The memory snapshot's size.
    pub snapshot_bytes: u64,
    /// Unix seconds.
    pub made_at: i64,
}

/// `POST /v1/images/{name}/warm`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WarmImage {
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u32>,
}

fn yes() -> bool {
    true
}

/// `GET /v1/defaults`: what `POST /v1/vms` gives a VM whose request
/// leaves a field unset (the runtime bundle's defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreateDefaults {
    pub image: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub work_disk_bytes: u64,
}

/// One VM in full, as `vm show` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmDetails {
    pub name: String,
    pub state: VmState,
    /// A user's VM, or the temporary VM of an image build.
    #[serde(default)]
    pub role: VmRole,
    pub image: Option<String>,
    /// The VMM that runs it (`backend` in the API's JSON).
    #[serde(rename = "backend")]
    pub vmm: VmmKind,
    /// How this VMM runs here (e.g. software emulation).
    #[serde(rename = "backend_detail")]
    pub vmm_detail: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub work_disk_bytes: Option<u64>,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<Mac>,
    pub tap: Option<TapName>,
    pub dns_name: String,
    pub nat: bool,
    pub pid: Option<u32>,
    /// The uid the VMM runs as, while it runs (a uid of its own under a
    /// root daemon; the daemon's otherwise).
    #[serde(default)]
    pub vmm_uid: Option<u32>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    /// Seconds since the VMM started, while it runs.
    pub uptime_secs: Option<u64>,
    pub dir: PathBuf,
    pub console_log: PathBuf,
    pub vmm_log: PathBuf,
    /// The private key `vm ssh` uses and the known_hosts holding this VM's key.
    pub ssh_key: PathBuf,
    pub known_hosts: PathBuf,
    pub host_key: Option<String>,
    /// How its root filesystem is made, and why.
    pub root_mode: RootMode,
    #[serde(default)]
    pub root_mode_detail: String,
    /// Its disks and the space each really takes.
    #[serde(default)]
    pub disks: Vec<DiskUsage>,
    /// Published ports, `ADDR:HOSTPORT:GUESTPORT/tcp`.
    #[serde(default)]
    pub published: Vec<String>,
    /// Its last events (started, stalled boot, failures...), oldest first.
    #[serde(default)]
    pub events: Vec<VmEvent>,
    /// Its guest agent, when one answers.
    #[serde(default)]
    pub agent: Option<AgentInfo>,
    /// Why no agent answers, when none does.
    #[serde(default)]
    pub agent_detail: Option<String>,
}

/// A guest agent that answers, as it said at its last hello.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentInfo {
    pub version: String,
    pub protocol: u16,
    /// `virtio-serial` or `vsock`.
    pub channel: String,
    /// Whether the guest's sshd accepted connections then.
    pub sshd_accepting: bool,
    pub kernel_release: String,
    pub boot_id: String,
}

/// `POST /v1/vms/{name}/identity`: what of a running VM's identity to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetIdentity {
    /// The guest's host name (its `.vm` name stays the VM's name).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Move it to a new lease: address, MAC and tap.
    #[serde(default)]
    pub new_address: bool,
    /// Give it a new SSH host key (banger's known_hosts follows).
    #[serde(default)]
    pub new_host_key: bool,
}

/// `POST /v1/vms/{name}/clock`: the guest's clock was set from the host's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClockSet {
    /// How far off it was, in milliseconds.
    pub skew_ms: u64,
}

/// One thing that happened to a VM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmEvent {
    /// Unix seconds.
    pub at: i64,
    /// A short tag: `started`, `boot-stalled`, `start-failed`, ...
    pub kind: String,
    pub message: String,
}

/// `POST /v1/vms/{name}/publish` and `/unpublish`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishPort {
    /// `[HOSTADDR:]HOSTPORT:GUESTPORT[/tcp]`.
    pub port: String,
}

/// How long one step of an operation took.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Timing {
    pub step: String,
    pub ms: u64,
}

/// The answer to create, start and restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmOpResult {
    pub vm: VmDetails,
    /// Step by step, for `--verbose` and benchmarks.
    pub timings: Vec<Timing>,
    /// From the request to SSH answering, when the VM was booted and waited
    /// for (and its image has sshd).
    pub ssh_ready_ms: Option<u64>,
    /// From the request to the guest agent answering, when it has one.
    #[serde(default)]
    pub agent_ready_ms: Option<u64>,
    /// From the request to the VMM running the guest (Firecracker's
    /// InstanceStart acknowledged, or QEMU launched).
    pub vmm_started_ms: Option<u64>,
    /// Boots that stalled (console silent, no SSH) and were killed before
    /// the one that came up.
    #[serde(default)]
    pub stalled_boots: u32,
    /// Restored from a snapshot (a suspended VM's) instead of booted.
    #[serde(default)]
    pub restored: bool,
    /// For a create: the warm template it was restored from.
    #[serde(default)]
    pub template: Option<String>,
    /// For a create that booted: why no warm template served.
    #[serde(default)]
    pub booted_because: Option<String>,
    /// For a fork: how long its source was held still.
    #[serde(default)]
    pub source_paused_ms: Option<u64>,
}

impl VmOpResult {
    /// One line saying what came of a create, start or restart (`verb`),
    /// for the CLI and the TUI alike.
    pub fn summary(&self, verb: &str) -> String {
        let vm = &self.vm;
        let ip = vm.ip.map_or("-".into(), |ip| ip.to_string());
        let secs = |ms: u64| ms as f64 / 1000.0;
        let verb = if self.restored && self.template.is_none() && self.source_paused_ms.is_none() {
            "restored from its snapshot"
        } else {
            verb
        };
        match (self.ssh_ready_ms, self.agent_ready_ms, self.vmm_started_ms) {
            (Some(ms), _, _) => format!(
                "{} {verb}: {ip} ({}), SSH ready in {:.1} s",
                vm.name,
                vm.dns_name,
                secs(ms)
            ),
            (None, Some(ms), _) => format!(
                "{} {verb}: {ip} ({}), agent ready in {:.1} s; no sshd in the guest (use banger vm exec)",
                vm.name,
                vm.dns_name,
                secs(ms)
            ),
            (None, None, Some(ms)) => format!(
                "{} {verb}: {ip} ({}), VMM started in {ms} ms (not waiting for the guest)",
                vm.name, vm.dns_name
            ),
            (None, None, None) => format!("{} {verb}, not started", vm.name),
        }
    }
}

/// `POST /v1/vms/{name}/start` (the body is optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StartVm {
    /// Return once the VMM runs the guest, without waiting for SSH.
    #[serde(default)]
    pub no_wait: bool,
    /// A suspended VM: discard its snapshot and boot from its disks.
    #[serde(default)]
    pub cold: bool,
}

/// `POST /v1/vms/{name}/{action}`: what happens to a VM's running guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmAction {
    /// Stop its vCPUs; the VMM keeps its memory.
    Pause,
    /// Run a paused guest again.
    Resume,
    /// Write its memory to a snapshot and end the VMM.
    Suspend,
}

impl VmAction {
    pub fn as_str(self) -> &'static str {
        match self {
            VmAction::Pause => "pause",
            VmAction::Resume => "resume",
            VmAction::Suspend => "suspend",
        }
    }

    /// The action under way, for a status line.
    pub fn ing(self) -> &'static str {
        match self {
            VmAction::Pause => "pausing",
            VmAction::Resume => "resuming",
            VmAction::Suspend => "suspending",
        }
    }
}

/// `POST /v1/vms/{name}/stop` and `DELETE /v1/vms/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StopVm {
    /// Kill the VMM at once instead of asking the guest to shut down.
    #[serde(default)]
    pub force: bool,
}

/// `GET /v1/vms/{name}/stats`: the VMM process, from /proc. `GET
/// /v1/stats` answers a list of these, one per running VM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VmStats {
    pub name: String,
    pub pid: u32,
    /// Percent of one core over a short sample.
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub uptime_secs: u64,
    pub cpu_time_ms: u64,
}

/// `POST /v1/images`: register an ext4 rootfs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportImage {
    pub name: String,
    pub path: PathBuf,
}

/// `image pull` and `image import --oci`: an OCI image registered as an
/// ext4 image (default name: made from the reference or file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PullImage {
    pub source: OciSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `image export`: the image in a shape other platforms take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportImage {
    pub format: ExportFormat,
    /// A new (or empty) directory.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// vmlinux, initrd.img, rootfs.ext4 and banger-image.json.
    Raw,
    /// An OCI image layout: the root image and a kernel image.
    Oci,
}

/// `vm export`: a stopped VM's root filesystem as a new image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportVm {
    pub image: String,
}

/// `image push`: the image to a registry, as an OCI image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushImage {
    pub reference: String,
    #[serde(default)]
    pub insecure: bool,
}

/// What `image push` pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushed {
    pub reference: String,
    pub kernel_reference: String,
}

/// Where an OCI image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OciSource {
    /// A registry reference; `insecure` allows plain HTTP to its registry.
    Registry { reference: String, insecure: bool },
    /// An OCI layout (directory or archive) or a `docker save` tarball;
    /// `tag` picks the layout's image of that name (`org.opencontainers.image.ref.name`).
    Layout {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag: Option<String>,
    },
}

/// One image in full.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageDetails {
    pub name: String,
    pub rootfs: PathBuf,
    pub size_bytes: Option<u64>,
    pub created_at: i64,
    /// VMs created from it (it cannot be deleted while any exist).
    pub used_by: Vec<String>,
    /// `name version` lines from the package manifest, when it has one.
    pub packages: Option<Vec<String>>,
    /// The image it was built from, for built images.
    #[serde(default)]
    pub base: Option<String>,
    /// Packages asked for over the chain of builds that made it.
    #[serde(default)]
    pub requested_packages: Vec<String>,
    /// The kernel whose modules were installed into it, if any.
    #[serde(default)]
    pub kernel_version: Option<String>,
    /// The digest of its build's inputs, for built images.
    #[serde(default)]
    pub build_key: Option<String>,
    /// Its warm templates (`image warm`).
    #[serde(default)]
    pub templates: Vec<TemplateInfo>,
    /// The OCI image it came from (`image pull`, `image import --oci`):
    /// the reference or file, and the manifest's digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_digest: Option<String>,
}

/// `POST /v1/builds`: what to build. The answer is an NDJSON stream
/// of [`Progress`] events.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuildImage {
    pub name: String,
    /// The base image; unset means `default`.
    pub from: Option<String>,
    /// Grow the root filesystem to this size.
    pub size_bytes: Option<u64>,
    /// Packages for the guest's package manager (`name` or `name=version`).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Let apt install recommended packages too.
    #[serde(default)]
    pub install_recommends: bool,
    /// Install the runtime bundle's kernel modules.
    #[serde(default)]
    pub modules: bool,
    /// Host files and directories to put into the image, in order.
    #[serde(default)]
    pub copy: Vec<CopyInto>,
    /// Host scripts to run in the guest, in order, after packages and modules.
    #[serde(default)]
    pub run: Vec<PathBuf>,
    /// apt source lines (`deb [trusted=yes] http://... ./`) added before packages.
    #[serde(default)]
    pub apt_sources: Vec<String>,
    /// Build even if an image of this name exists (its VMs keep working).
    #[serde(default)]
    pub replace: bool,
    /// Build even if an image with the same inputs exists.
    #[serde(default)]
    pub no_cache: bool,
    /// The build VM's VMM; unset means the configured choice.
    #[serde(default)]
    pub vmm: Option<VmmChoice>,
}

/// One `--copy HOSTPATH:GUESTPATH`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CopyInto {
    /// Absolute host path (file or directory).
    pub host: PathBuf,
    /// Absolute guest path it lands at.
    pub guest: String,
}

/// `GET /v1/network`: the bridge, NAT table, DNS listener and leases.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkStatus {
    pub bridge: String,
    pub bridge_present: bool,
    pub bridge_addresses: Vec<String>,
    pub subnet: String,
    /// Whether banger's nftables table is loaded, and its rules.
    pub nat_table: Option<String>,
    /// Where the `.vm` DNS server listens, when it does.
    pub dns_listen: Option<String>,
    /// Why it does not listen, when it does not.
    pub dns_problem: Option<String>,
    pub dns_upstreams: Vec<String>,
    pub leases: Vec<LeaseStatus>,
}

/// One VM's network identity and whether its tap exists.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseStatus {
    pub vm: String,
    pub state: VmState,
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub tap: TapName,
    pub tap_present: bool,
    pub nat: bool,
}

/// What `network cleanup` removed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkCleanup {
    pub removed: Vec<String>,
}

/// One line of a long operation's NDJSON progress stream (`image build`):
/// the daemon emits these; the CLI's spinner view, `--json` and the TUI all
/// render the same enum.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// A step began.
    Step { step: String },
    /// The running step finished.
    StepDone { step: String, ms: u64 },
    /// A line the guest (or a host tool) printed during `step`.
    Output {
        step: String,
        stream: OutputStream,
        line: String,
    },
    /// Something worth saying that is not a step (a cache hit, say).
    Note { message: String },
    /// The operation succeeded; always the last event of a success.
    Done { image: Box<ImageBuilt> },
    /// The operation failed; always the last event of a failure.
    Failed {
        /// The step that failed, when one was running.
        step: Option<String>,
        error: Vec<String>,
        hint: Option<String>,
        /// The last lines of output before the failure.
        output_tail: Vec<String>,
        log: Option<PathBuf>,
    },
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// The result of `image build`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageBuilt {
    pub image: ImageDetails,
    /// True when nothing was booted: an image with this build key existed.
    pub cached: bool,
    pub total_ms: u64,
    /// The build's full log.
    pub log: Option<PathBuf>,
    pub timings: Vec<Timing>,
    /// Set when the image was pulled or imported from an OCI image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled_from: Option<String>,
}

impl ImageBuilt {
    /// One line saying what was built, for the CLI and the TUI alike.
    pub fn summary(&self) -> String {
        let image = &self.image;
        let size = image
            .size_bytes
            .map_or_else(|| "-".into(), crate::size::format_size);
        let packages = image.packages.as_ref().map_or_else(
            || "no package manifest".into(),
            |p| format!("{} packages", p.len()),
        );
        let pulled = self
            .pulled_from
            .as_ref()
            .map(|from| format!("pulled from {from}"));
        let how = match (self.cached, &pulled) {
            (true, _) => "up to date (cached)",
            (false, Some(pulled)) => pulled.as_str(),
            (false, None) => "built",
        };
        let took = if self.total_ms < 60_000 {
            format!("{:.1} s", self.total_ms as f64 / 1000.0)
        } else {
            crate::size::format_duration(self.total_ms / 1000)
        };
        format!("image {} {how} in {took}: {size}, {packages}", image.name)
    }
}

#[cfg(test)]
mod tests {
    /// Fields that name a VM's state, role, root mode or VMM carry the
    /// model's enums, never a `String` a client would compare by hand.
    #[test]
    fn no_api_field_holds_a_domain_value_as_a_string() {
        const DOMAIN: [&str; 5] = ["state", "role", "root_mode", "vmm", "backend"];
        let source = include_str!("api.rs");
        let stringly: Vec<&str> = source
            .lines()
            .map(str::trim)
            .filter(|line| line.starts_with("pub "))
            .filter(|line| {
                let Some((name, ty)) = line["pub ".len()..].split_once(':') else {
                    return false;
                };
                DOMAIN.contains(&name.trim()) && ty.contains("String")
            })
            .collect();
        assert!(
            stringly.is_empty(),
            "stringly-typed domain fields: {stringly:?}"
        );
    }

    #[test]
    fn domain_values_keep_their_json_strings() {
        use crate::model::{DiskRole, VmState, VmmKind};
        let json = serde_json::json!({
            "name": "a", "state": "running", "image": null, "backend": "qemu",
            "vcpus": 1, "memory_mib": 256, "ip": "172.30.0.2", "dns_name": "a.vm",
            "created_at": 0, "role": "build", "root_mode": "layered",
            "disks": [{"role": "upper", "path": "/x", "apparent_bytes": 1,
                       "used_bytes": 1, "shared": false}],
            "published": []
        });
        let vm: super::VmSummary = serde_json::from_value(json.clone()).unwrap();
        assert_eq!((vm.state, vm.vmm), (VmState::Running, VmmKind::Qemu));
        assert_eq!(vm.disks[0].role, DiskRole::Upper);
        assert_eq!(serde_json::to_value(&vm).unwrap(), json);
    }
}
