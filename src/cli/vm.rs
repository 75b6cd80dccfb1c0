//! `banger vm ...`

use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::{Ctx, autostart, cp, exec, output};
use crate::model::{VmRole, VmmChoice};
use crate::rpc::api::{CreateVm, StartVm, VmAction, VmDetails, VmOpResult};
use crate::size::{format_duration, format_size, parse_memory_mib, parse_size};

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM and boot it; prints its address once SSH answers.
    Create(CreateArgs),
    /// List every VM with its state and address.
    #[command(visible_alias = "ls")]
    List,
    /// Show everything about one VM.
    Show { name: String },
    /// Boot a stopped VM with the disks it had, or restore a suspended one
    /// where it was.
    Start {
        name: String,
        /// Return once the VMM runs the guest, without waiting for SSH.
        #[arg(long)]
        no_wait: bool,
        /// A suspended VM: discard its snapshot and boot from its disks.
        #[arg(long)]
        cold: bool,
    },
    /// Stop a running VM's vCPUs; its memory stays in its VMM.
    Pause { name: String },
    /// Run a paused VM again.
    Resume { name: String },
    /// Write a running VM's memory to disk and end its VMM; `vm start`
    /// restores it where it was.
    Suspend { name: String },
    /// Shut a VM down (its disks and address are kept).
    Stop {
        name: String,
        /// Kill the VMM at once instead of asking the guest to shut down.
        #[arg(long)]
        force: bool,
    },
    /// Stop, then start.
    Restart { name: String },
    /// Publish a guest port on the host, now and at every start:
    /// [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp] (HOSTADDR defaults to 127.0.0.1).
    Publish { name: String, port: String },
    /// Stop publishing a port.
    Unpublish { name: String, port: String },
    /// Copy a stopped VM under a new name, address and host key (its disks
    /// are reflinked or sparse-copied; a layered VM's are a few MiB).
    Clone {
        /// The stopped VM to copy.
        src: String,
        /// The new VM's name.
        name: String,
    },
    /// Copy a running VM, memory and all: both run after, each with its
    /// own name, address and host key (the source is held still for a
    /// moment).
    Fork {
        /// The running VM to copy.
        src: String,
        /// The new VM's name.
        name: String,
    },
    /// Register a stopped VM's root filesystem as a new image: its image
    /// with the VM's changes on top (its own keys and name left out).
    /// `banger image export` or `push` then takes it elsewhere.
    Export {
        /// The stopped VM.
        name: String,
        /// The new image's name.
        image: String,
    },
    /// Delete a VM and its disks (a running one is stopped first).
    #[command(visible_alias = "rm")]
    Delete {
        name: String,
        /// Kill a running VM instead of shutting it down cleanly.
        #[arg(long)]
        force: bool,
    },
    /// Open a shell in a VM, or run a command there (`banger vm ssh box -- uname -a`).
    Ssh {
        name: String,
        /// Print the ssh command instead of running it.
        #[arg(long)]
        print: bool,
        /// Forward your ssh agent into the VM (off by default: code in the
        /// VM could use your keys while you are connected).
        #[arg(long)]
        forward_agent: bool,
        /// The command to run; without one, an interactive shell.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Run a command in a VM through its guest agent, like `docker exec`
    /// (no sshd or network needed): `banger vm exec box -- uname -a`,
    /// `banger vm exec -it box -- bash`. Exits with the command's code.
    Exec {
        name: String,
        /// Stream this terminal's stdin to the command.
        #[arg(short, long)]
        interactive: bool,
        /// Give the command a terminal (with -i: an interactive shell).
        #[arg(short, long)]
        tty: bool,
        /// Set an environment variable in the command's environment (repeatable).
        #[arg(short, long, value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Run in this guest directory (default /).
        #[arg(short, long, value_name = "DIR")]
        workdir: Option<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Copy files between the host and a VM: `banger vm cp ./dir box:/root/`,
    /// `banger vm cp box:/etc/os-release .`
    Cp {
        /// What to copy: a host path, or NAME:PATH in a VM.
        src: String,
        /// Where to: a host path, or NAME:PATH in a VM (exactly one side is a VM).
        dst: String,
    },
    /// Give a running VM a new identity through its agent: a host name, a
    /// new address (and MAC and tap), a new SSH host key; a new machine id
    /// always. Its `.vm` name stays.
    Identity {
        name: String,
        /// The guest's new host name.
        #[arg(long)]
        hostname: Option<String>,
        /// Move it to a new address; the old one stops answering.
        #[arg(long)]
        new_address: bool,
        /// Give it a new SSH host key.
        #[arg(long)]
        new_host_key: bool,
    },
    /// Set the guest's clock from the host's (and feed its RNG), through its agent.
    Clock { name: String },
    /// CPU, memory and uptime of the VM's VMM process.
    Stats { name: String },
    /// The VM's serial console and VMM log.
    Logs {
        name: String,
        /// Keep printing what is appended.
        #[arg(short, long)]
        follow: bool,
        /// How many lines of each log to print first.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The VM's name, also its host name and DNS name (<name>.vm).
    #[arg(long)]
    name: String,
    /// The image it runs on (default: the bundle's): shared read-only under
    /// the VM's own upper disk (a full clone where the bundle cannot layer).
    #[arg(long)]
    image: Option<String>,
    /// Virtual CPUs (default: the runtime bundle's).
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory: MiB, or a size like 2G (default: the runtime bundle's).
    #[arg(long)]
    memory: Option<String>,
    /// Space for the VM's own changes to its root, like 4G: its upper disk
    /// (the whole root disk, at least the image's size, where the bundle
    /// cannot layer).
    #[arg(long)]
    disk: Option<String>,
    /// Size of the persistent work disk mounted at /work, like 8G.
    #[arg(long)]
    work_disk: Option<String>,
    /// Make the disks and keys but do not boot.
    #[arg(long)]
    no_start: bool,
    /// Host-only networking: no NAT to the outside world.
    #[arg(long)]
    no_nat: bool,
    /// Return once the VMM runs the guest, without waiting for SSH.
    #[arg(long)]
    no_wait: bool,
    /// Boot, even where the image has a warm template that fits.
    #[arg(long)]
    cold: bool,
    /// Publish a guest port on the host: [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp]
    /// (HOSTADDR defaults to 127.0.0.1); repeatable.
    #[arg(long, value_name = "PORT")]
    publish: Vec<String>,
    /// The VMM: auto (default), firecracker or qemu.
    #[arg(long)]
    vmm: Option<VmmChoice>,
}

pub async fn run(ctx: &Ctx, command: VmCommand) -> anyhow::Result<ExitCode> {
    let name = match &command {
        VmCommand::Create(args) => Some(args.name.as_str()),
        VmCommand::List => None,
        VmCommand::Show { name }
        | VmCommand::Start { name, .. }
        | VmCommand::Stop { name, .. }
        | VmCommand::Restart { name }
        | VmCommand::Pause { name }
        | VmCommand::Resume { name }
        | VmCommand::Suspend { name }
        | VmCommand::Publish { name, .. }
        | VmCommand::Unpublish { name, .. }
        | VmCommand::Clone { name, .. }
        | VmCommand::Fork { name, .. }
        | VmCommand::Export { name, .. }
        | VmCommand::Delete { name, .. }
        | VmCommand::Ssh { name, .. }
        | VmCommand::Exec { name, .. }
        | VmCommand::Clock { name }
        | VmCommand::Identity { name, .. }
        | VmCommand::Stats { name }
        | VmCommand::Logs { name, .. } => Some(name.as_str()),
        VmCommand::Cp { src, dst } => Some(cp::vm_name(src, dst)?),
    };
    if let Some(name) = name {
        crate::rpc::check_vm_name(name)?;
    }
    let client = autostart::client(&ctx.paths).await?;
    match command {
        VmCommand::Create(args) => {
            let req = create_request(args)?;
            let result = client.create_vm(&req).await?;
            print_op(ctx, &result, "created")?;
        }
        VmCommand::List => list(ctx, client.list_vms().await?)?,
        VmCommand::Show { name } => show(ctx, &client.vm(&name).await?)?,
        VmCommand::Start {
            name,
            no_wait,
            cold,
        } => {
            let start = StartVm { no_wait, cold };
            print_op(ctx, &client.start_vm(&name, &start).await?, "started")?
        }
        VmCommand::Pause { name } => print_action(ctx, &client, &name, VmAction::Pause).await?,
        VmCommand::Resume { name } => print_action(ctx, &client, &name, VmAction::Resume).await?,
        VmCommand::Suspend { name } => print_action(ctx, &client, &name, VmAction::Suspend).await?,
        VmCommand::Clone { src, name } => {
            let result = client.clone_vm(&src, &name).await?;
            print_op(ctx, &result, "cloned")?;
        }
        VmCommand::Fork { src, name } => {
            let result = client.fork_vm(&src, &name).await?;
            print_op(ctx, &result, "forked")?;
            if let (false, Some(ms)) = (ctx.json, result.source_paused_ms) {
                println!("  {src} was held still for {ms} ms and runs on");
            }
        }
        VmCommand::Export { name, image } => {
            let details = client.export_vm(&name, &image).await?;
            ctx.print(&details, |details| {
                format!(
                    "{name} exported as image {image} ({})",
                    details
                        .size_bytes
                        .map_or_else(|| "-".into(), crate::size::format_size)
                )
            })?;
        }
        VmCommand::Publish { name, port } => {
            print_ports(ctx, &client.publish_port(&name, &port, false).await?)?
        }
        VmCommand::Unpublish { name, port } => {
            print_ports(ctx, &client.publish_port(&name, &port, true).await?)?
        }
        VmCommand::Restart { name } => {
            print_op(ctx, &client.restart_vm(&name).await?, "restarted")?
        }
        VmCommand::Stop { name, force } => print_state(ctx, &client.stop_vm(&name, force).await?)?,
        VmCommand::Delete { name, force } => {
            client.delete_vm(&name, force).await?;
            println!("{name} deleted");
        }
        VmCommand::Ssh {
            name,
            print,
            forward_agent,
            command,
        } => return ssh(&client.vm(&name).await?, print, forward_agent, command),
        VmCommand::Exec {
            name,
            interactive,
            tty,
            env,
            workdir,
            command,
        } => {
            let req = exec::ExecRequest {
                argv: command,
                env,
                workdir,
                interactive,
                tty,
            };
            return exec::run(&client, &name, req).await;
        }
        VmCommand::Cp { src, dst } => cp::run(&client, &src, &dst).await?,
        VmCommand::Identity {
            name,
            hostname,
            new_address,
            new_host_key,
        } => {
            let req = crate::rpc::api::SetIdentity {
                hostname,
                new_address,
                new_host_key,
            };
            let vm = client.set_identity(&name, &req).await?;
            ctx.print(&vm, |vm| {
                format!(
                    "{} has a new identity: {} ({})",
                    vm.name,
                    vm.ip.map_or("-".into(), |ip| ip.to_string()),
                    vm.dns_name
                )
            })?;
        }
        VmCommand::Clock { name } => {
            let set = client.sync_clock(&name).await?;
            ctx.print(&set, |set| {
                format!(
                    "{name}: clock set from the host's (it was {:.3} s off)",
                    set.skew_ms as f64 / 1000.0
                )
            })?;
        }
        VmCommand::Stats { name } => {
            let stats = client.vm_stats(&name).await?;
            if ctx.json {
                output::json(&stats)?;
            } else {
                output::table(
                    &["NAME", "PID", "CPU", "MEMORY", "UPTIME"],
                    &[vec![
                        stats.name,
                        stats.pid.to_string(),
                        format!("{:.1}%", stats.cpu_percent),
                        format_size(stats.rss_bytes),
                        format_duration(stats.uptime_secs),
                    ]],
                );
            }
        }
        VmCommand::Logs {
            name,
            follow,
            lines,
        } => logs(&client.vm(&name).await?, follow, lines).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the state `vm` is in now (after a stop, pause, resume or suspend).
fn print_state(ctx: &Ctx, vm: &VmDetails) -> anyhow::Result<()> {
    if ctx.json {
        output::json(vm)?;
    } else {
        println!("{} {}", vm.name, vm.state);
    }
    Ok(())
}

async fn print_action(
    ctx: &Ctx,
    client: &crate::rpc::Client,
    name: &str,
    action: VmAction,
) -> anyhow::Result<()> {
    print_state(ctx, &client.vm_action(name, action).await?)
}

fn print_ports(ctx: &Ctx, vm: &VmDetails) -> anyhow::Result<()> {
    if ctx.json {
        output::json(vm)?;
    } else if vm.published.is_empty() {
        println!("{} publishes no ports", vm.name);
    } else {
        println!("{} publishes {}", vm.name, vm.published.join(", "));
    }
    Ok(())
}

fn create_request(args: CreateArgs) -> anyhow::Result<CreateVm> {
    let size = |flag: &str, value: Option<String>| -> anyhow::Result<Option<u64>> {
        value
            .map(|v| parse_size(&v).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
            .transpose()
    };
    let memory_mib = args
        .memory
        .map(|m| parse_memory_mib(&m).map_err(|e| anyhow::anyhow!("--memory: {e}")))
        .transpose()?;
    Ok(CreateVm {
        name: args.name,
        image: args.image,
        vcpus: args.vcpus,
        memory_mib,
        disk_bytes: size("disk", args.disk)?,
        work_disk_bytes: size("work-disk", args.work_disk)?,
        vmm: args.vmm,
        start: !args.no_start,
        nat: !args.no_nat,
        wait_ssh: !args.no_wait,
        publish: args.publish,
        cold: args.cold,
    })
}

fn print_op(ctx: &Ctx, result: &VmOpResult, verb: &str) -> anyhow::Result<()> {
    if ctx.json {
        return output::json(result);
    }
    let vm = &result.vm;
    println!("{}", result.summary(verb));
    if result.stalled_boots > 0 {
        println!(
            "  note: the first boot stalled (console silent, no SSH); it was killed and the VM booted again from the same disks"
        );
    }
    if let Some(key) = &result.template {
        println!("  restored from warm template {key}");
    } else if let Some(why) = &result.booted_because {
        println!("  booted: {why}");
    }
    println!("  vmm: {}", vm.vmm_detail);
    match result.ssh_ready_ms {
        Some(_) => println!("  ssh: banger vm ssh {}", vm.name),
        None if result.agent_ready_ms.is_some() => {
            println!("  exec: banger vm exec -it {} -- sh", vm.name)
        }
        None => println!("  ssh: banger vm ssh {}", vm.name),
    }
    Ok(())
}

fn list(ctx: &Ctx, vms: Vec<crate::rpc::api::VmSummary>) -> anyhow::Result<()> {
    if ctx.json {
        return output::json(&vms);
    }
    if vms.is_empty() {
        println!("No VMs. Create one: banger vm create --name NAME");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = vms
        .into_iter()
        .map(|vm| {
            // A build VM is shown for what it is: the image build's.
            let state = match vm.role {
                VmRole::Build => format!("{} (image build)", vm.state),
                VmRole::Template => format!("{} (warming image)", vm.state),
                VmRole::Vm => vm.state.to_string(),
            };
            vec![
                vm.name,
                state,
                vm.image.unwrap_or_else(|| "-".into()),
                vm.vmm.to_string(),
                vm.vcpus.to_string(),
                format_size(u64::from(vm.memory_mib) << 20),
                vm.ip.map_or("-".into(), |ip| ip.to_string()),
            ]
        })
        .collect();
    output::table(
        &["NAME", "STATE", "IMAGE", "VMM", "VCPUS", "MEMORY", "IP"],
        &rows,
    );
    Ok(())
}

fn show(ctx: &Ctx, vm: &VmDetails) -> anyhow::Result<()> {
    if ctx.json {
        return output::json(vm);
    }
    let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
    fn shown(v: Option<impl std::fmt::Display>) -> String {
        v.map_or("-".into(), |v| v.to_string())
    }
    let rows = [
        ("name", vm.name.clone()),
        ("state", vm.state.to_string()),
        ("image", dash(vm.image.as_deref())),
        ("vmm", vm.vmm_detail.clone()),
        (
            "agent",
            match &vm.agent {
                Some(a) => format!(
                    "banger-agent {} over {} (protocol {}); sshd {}",
                    a.version,
                    a.channel,
                    a.protocol,
                    if a.sshd_accepting {
                        "accepting"
                    } else {
                        "not answering"
                    }
                ),
                None => vm.agent_detail.clone().unwrap_or_else(|| "-".into()),
            },
        ),
        ("vcpus", vm.vcpus.to_string()),
        ("memory", format_size(u64::from(vm.memory_mib) << 20)),
        ("disk", format_size(vm.disk_bytes)),
        (
            "work disk",
            vm.work_disk_bytes
                .map_or("-".into(), |b| format!("{} at /work", format_size(b))),
        ),
        ("ip", shown(vm.ip)),
        ("dns", vm.dns_name.clone()),
        ("mac", shown(vm.mac)),
        ("tap", shown(vm.tap.as_ref())),
        (
            "nat",
            if vm.nat {
                "yes".into()
            } else {
                "no (host-only)".into()
            },
        ),
        ("pid", vm.pid.map_or("-".into(), |p| p.to_string())),
        (
            "vmm uid",
            vm.vmm_uid.map_or("-".into(), |u| match u {
                0 => "0 (root)".to_string(),
                u => u.to_string(),
            }),
        ),
        ("uptime", vm.uptime_secs.map_or("-".into(), format_duration)),
        ("directory", vm.dir.display().to_string()),
    ];
    for (key, value) in rows {
        println!("{key:<10} {value}");
    }
    println!("{:<10} {}: {}", "root", vm.root_mode, vm.root_mode_detail);
    if !vm.published.is_empty() {
        println!("{:<10} {}", "published", vm.published.join(", "));
    }
    for event in &vm.events {
        let first = event.message.lines().next().unwrap_or("");
        println!("{:<10} {} {}: {first}", "event", event.at, event.kind);
    }
    for disk in &vm.disks {
        println!(
            "{:<10} {:<6} {} apparent, {} used{}  {}",
            "disk",
            disk.role,
            format_size(disk.apparent_bytes),
            format_size(disk.used_bytes),
            if disk.shared {
                " (shared, read-only)"
            } else {
                ""
            },
            disk.path.display()
        );
    }
    Ok(())
}

/// Replaces this process with the system ssh client, so the remote exit
/// code is ours and the terminal is the user's.
fn ssh(
    vm: &VmDetails,
    print: bool,
    forward_agent: bool,
    command: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let argv = ssh_argv(vm, forward_agent, command)?;
    if print {
        let quoted: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
        println!("ssh {}", quoted.join(" "));
        return Ok(ExitCode::SUCCESS);
    }
    let err = std::process::Command::new("ssh").args(&argv).exec();
    Err(anyhow::Error::new(err).context("cannot run ssh (install openssh-client)"))
}

/// Runs `banger vm exec -it NAME -- sh` (this very binary) and waits for
/// it: the TUI's way into a guest through its agent.
pub fn exec_shell_and_wait(vm: &VmDetails) -> anyhow::Result<std::process::ExitStatus> {
    let me = std::env::current_exe().context("cannot find the banger binary")?;
    std::process::Command::new(me)
        .args(["vm", "exec", "-it", &vm.name, "--", "sh"])
        .status()
        .context("cannot run banger vm exec")
}

/// Runs an interactive `ssh` into `vm` and waits for it: the TUI's way in,
/// with the terminal handed over while it runs.
pub fn ssh_and_wait(vm: &VmDetails) -> anyhow::Result<std::process::ExitStatus> {
    let argv = ssh_argv(vm, false, Vec::new())?;
    std::process::Command::new("ssh")
        .args(&argv)
        .status()
        .context("cannot run ssh (install openssh-client)")
}

/// The `ssh` client's arguments for `vm`: banger's key and known_hosts,
/// nothing of the user's forwarded unless asked, then `command`.
fn ssh_argv(
    vm: &VmDetails,
    forward_agent: bool,
    command: Vec<String>,
) -> anyhow::Result<Vec<String>> {
    if !vm.state.is_running() {
        bail!(
            "VM `{}` is {}; run it with `{}`",
            vm.name,
            vm.state,
            vm.state.to_run(&vm.name)
        );
    }
    if let Some(agent) = vm.agent.as_ref().filter(|a| !a.sshd_accepting) {
        bail!(
            "VM `{name}` has no sshd answering (its agent {} says so; the image may have none): \
             run commands with `banger vm exec {name} -- COMMAND`, or a shell with `banger vm exec -it {name} -- sh`",
            agent.version,
            name = vm.name
        );
    }
    let ip = vm.ip.context("the VM has no address")?;
    let mut argv = crate::system::ssh::isolation_options(forward_agent);
    argv.extend(crate::system::ssh::client_options(
        &vm.ssh_key,
        &vm.known_hosts,
    ));
    argv.push(format!("root@{ip}"));
    if !command.is_empty() {
        argv.push("--".into());
        argv.extend(command);
    }
    Ok(argv)
}

/// Quotes `arg` for a POSIX shell when it needs it (for `--print` only).
fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Prints the tail of the VMM log and the console, then, with `follow`,
/// what is appended to either.
async fn logs(vm: &VmDetails, follow: bool, lines: usize) -> anyhow::Result<()> {
    use crate::system::follow::Follow;
    use crate::system::fs::log_tail;
    let sources = [("vmm log", &vm.vmm_log), ("console", &vm.console_log)];
    let mut follows = Vec::new();
    for (label, path) in sources {
        // Where to follow from, taken before the tail is read: nothing is lost.
        follows.push((label, Follow::from_end(path)));
        println!("==> {label} ({}) <==", path.display());
        println!("{}", log_tail(path, 0, lines));
    }
    if !follow {
        return Ok(());
    }
    let mut current = 1;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (i, (label, follow)) in follows.iter_mut().enumerate() {
            let text = follow.read();
            if text.is_empty() {
                continue;
            }
            if current != i {
                println!("==> {label} <==");
                current = i;
            }
            print!("{text}");
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_quotes_only_what_needs_it() {
        assert_eq!(shell_quote("root@172.30.0.2"), "root@172.30.0.2");
        assert_eq!(
            shell_quote("UserKnownHostsFile=/a b"),
            "'UserKnownHostsFile=/a b'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
