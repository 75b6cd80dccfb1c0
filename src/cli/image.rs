//! `banger image ...`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;

use super::{Ctx, autostart, output};
use crate::rpc::api::{
    ExportFormat, ExportImage, ImportImage, OciSource, Progress, PullImage, PushImage, WarmImage,
};
use crate::size::format_size;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List the registered root filesystem images.
    #[command(visible_alias = "ls")]
    List,
    /// Show one image: size, base, the VMs using it, its packages.
    Show {
        name: String,
        /// Print the package manifest (`name version` per line).
        #[arg(long)]
        packages: bool,
    },
    /// Build an image: boot a base in a build VM, install packages, modules,
    /// files and scripts over SSH, and register the result.
    Build(super::build::BuildArgs),
    /// Register an ext4 root filesystem image (it is checked and copied):
    /// `import NAME FILE.ext4`. With --oci, an OCI image layout (directory
    /// or archive) or a `docker save` tarball: `import --oci [NAME] PATH`.
    Import {
        /// The image's name (with --oci and no PATH: the path, the name made from it).
        name: String,
        path: Option<PathBuf>,
        /// PATH is an OCI layout or a `docker save` tarball.
        #[arg(long)]
        oci: bool,
        /// With --oci: the layout's image of this name (its ref.name).
        #[arg(long, requires = "oci")]
        tag: Option<String>,
    },
    /// Pull an image from an OCI registry and register it: `ubuntu:24.04`,
    /// `HOST[:PORT]/PATH:TAG`, `NAME@sha256:DIGEST`. Layers are cached by
    /// digest; credentials come from ~/.docker/config.json.
    Pull {
        reference: String,
        /// The image's name (default: made from the reference, `ubuntu:24.04` → ubuntu-24-04).
        #[arg(long)]
        name: Option<String>,
        /// Speak plain HTTP to the registry (one on this host).
        #[arg(long)]
        insecure: bool,
    },
    /// Boot an image once and keep its memory as a warm template: `vm
    /// create` of that image and shape then restores it instead of booting.
    Warm {
        name: String,
        /// The template's vCPUs (the bundle's default when unset).
        #[arg(long)]
        vcpus: Option<u32>,
        /// The template's memory, e.g. 512M or 1G (the bundle's default when unset).
        #[arg(long)]
        memory: Option<String>,
    },
    /// Write an image into a new directory for other platforms: `raw`
    /// (vmlinux, initrd.img, rootfs.ext4, banger-image.json: Nomad's
    /// Firecracker driver) or `oci` (an OCI layout with a root image and a
    /// kernel image: Flintlock).
    Export {
        name: String,
        #[arg(long, value_enum)]
        format: ExportFormat,
        dir: PathBuf,
    },
    /// Push an image to an OCI registry: its root filesystem as REF and its
    /// kernel as REF's tag with `-kernel`.
    Push {
        name: String,
        reference: String,
        /// Speak plain HTTP to the registry (one on this host).
        #[arg(long)]
        insecure: bool,
    },
    /// Forget an image and delete its files (refused while a VM uses it).
    #[command(visible_alias = "rm")]
    Delete { name: String },
}

pub async fn run(ctx: &Ctx, command: ImageCommand) -> anyhow::Result<ExitCode> {
    let command = match command {
        ImageCommand::Build(args) => return super::build::run(ctx, args).await,
        ImageCommand::Pull {
            reference,
            name,
            insecure,
        } => {
            let source = OciSource::Registry {
                reference,
                insecure,
            };
            return pull(ctx, PullImage { source, name }).await;
        }
        ImageCommand::Import {
            name,
            path,
            oci: true,
            tag,
        } => {
            let (name, path) = match path {
                Some(path) => (Some(name), path),
                None => (None, PathBuf::from(name)),
            };
            let path = std::path::absolute(&path)
                .with_context(|| format!("bad path {}", path.display()))?;
            let source = OciSource::Layout { path, tag };
            return pull(ctx, PullImage { source, name }).await;
        }
        other => other,
    };
    // A bad name is refused before a daemon is started for it.
    if let ImageCommand::Show { name, .. }
    | ImageCommand::Import { name, .. }
    | ImageCommand::Warm { name, .. }
    | ImageCommand::Export { name, .. }
    | ImageCommand::Push { name, .. }
    | ImageCommand::Delete { name } = &command
    {
        crate::rpc::check_image_name(name)?;
    }
    let client = autostart::client(&ctx.paths).await?;
    match command {
        ImageCommand::List => {
            let images = client.list_images().await?;
            if ctx.json {
                output::json(&images)?;
            } else if images.is_empty() {
                println!(
                    "No images. The runtime bundle's rootfs becomes `default` on the first `vm create`."
                );
            } else {
                let rows: Vec<Vec<String>> = images
                    .into_iter()
                    .map(|image| {
                        vec![
                            image.name,
                            image.size_bytes.map_or_else(|| "-".into(), format_size),
                            image
                                .package_count
                                .map_or_else(|| "-".into(), |n| n.to_string()),
                            image.base.unwrap_or_else(|| "-".into()),
                            image.rootfs.display().to_string(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "SIZE", "PACKAGES", "BASE", "ROOTFS"], &rows);
            }
        }
        ImageCommand::Show { name, packages } => {
            let image = client.image(&name).await?;
            if ctx.json {
                output::json(&image)?;
            } else if packages {
                match &image.packages {
                    // Read from the guest's package database: shown, not trusted.
                    Some(lines) => lines
                        .iter()
                        .for_each(|l| println!("{}", crate::system::text::printable(l.as_bytes()))),
                    None => bail!(
                        "image `{name}` has no package manifest (it was imported without a .packages file)"
                    ),
                }
            } else {
                println!("name      {}", image.name);
                println!(
                    "size      {}",
                    image.size_bytes.map_or_else(|| "-".into(), format_size)
                );
                println!("rootfs    {}", image.rootfs.display());
                println!("base      {}", image.base.as_deref().unwrap_or("-"));
                if let (Some(from), Some(digest)) = (&image.oci_reference, &image.oci_digest) {
                    println!("from      {from} ({digest})");
                }
                if !image.requested_packages.is_empty() {
                    println!("asked     {}", image.requested_packages.join(" "));
                }
                if let Some(kver) = &image.kernel_version {
                    println!("modules   {kver}");
                }
                let used = if image.used_by.is_empty() {
                    "-".into()
                } else {
                    image.used_by.join(", ")
                };
                println!("used by   {used}");
                let warm: Vec<&str> = image.templates.iter().map(|t| t.key.as_str()).collect();
                match warm.is_empty() {
                    true => println!("warm      - (`banger image warm {name}` makes a template)"),
                    false => println!("warm      {}", warm.join(", ")),
                }
                match &image.packages {
                    Some(p) => println!(
                        "packages  {} (`banger image show {name} --packages` lists them)",
                        p.len()
                    ),
                    None => println!("packages  - (no manifest)"),
                }
            }
        }
        ImageCommand::Import { name, path, .. } => {
            let Some(path) = path else {
                bail!(
                    "say which file to import: `banger image import {name} FILE.ext4` (or --oci PATH)"
                );
            };
            let path = std::path::absolute(&path)
                .with_context(|| format!("bad path {}", path.display()))?;
            let image = client.import_image(&ImportImage { name, path }).await?;
            println!(
                "imported {} ({})",
                image.name,
                image.size_bytes.map_or_else(|| "-".into(), format_size)
            );
        }
        ImageCommand::Warm {
            name,
            vcpus,
            memory,
        } => {
            let memory_mib = memory
                .map(|m| {
                    crate::size::parse_memory_mib(&m).map_err(|e| anyhow::anyhow!("--memory: {e}"))
                })
                .transpose()?;
            let template = client
                .warm_image(&name, &WarmImage { vcpus, memory_mib })
                .await?;
            ctx.print(&template, |template| {
                format!(
                    "{name} warmed: template {} ({} of memory); `banger vm create --image {name} --vcpus {} --memory {}` restores it",
                    template.key,
                    format_size(template.snapshot_bytes),
                    template.vcpus,
                    template.memory_mib
                )
            })?;
        }
        ImageCommand::Export { name, format, dir } => {
            let dir =
                std::path::absolute(&dir).with_context(|| format!("bad path {}", dir.display()))?;
            let done = client
                .export_image(&name, &ExportImage { format, dir })
                .await?;
            println!("{name} exported to {}", done.dir.display());
        }
        ImageCommand::Push {
            name,
            reference,
            insecure,
        } => {
            let pushed = client
                .push_image(
                    &name,
                    &PushImage {
                        reference,
                        insecure,
                    },
                )
                .await?;
            ctx.print(&pushed, |pushed| {
                format!(
                    "{name} pushed: {} (kernel: {})",
                    pushed.reference, pushed.kernel_reference
                )
            })?;
        }
        ImageCommand::Delete { name } => {
            client.delete_image(&name).await?;
            println!("{name} deleted");
        }
        ImageCommand::Build(_) | ImageCommand::Pull { .. } => {
            unreachable!("handled before connecting")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `image pull` and `image import --oci`: progress as a build shows it.
async fn pull(ctx: &Ctx, req: PullImage) -> anyhow::Result<ExitCode> {
    if let Some(name) = &req.name {
        crate::rpc::check_image_name(name)?;
    }
    let client = autostart::client(&ctx.paths).await?;
    let mut view = super::progress::BuildView::new(ctx.json);
    let pulled = client.pull_image(&req, |event| view.show(&event));
    tokio::select! {
        result = pulled => result?,
        _ = tokio::signal::ctrl_c() => {
            view.interrupted();
            return Ok(ExitCode::from(130));
        }
    }
    Ok(match view.last() {
        Some(Progress::Done { .. }) => ExitCode::SUCCESS,
        Some(Progress::Failed { .. }) => ExitCode::FAILURE,
        _ => bail!(
            "bangerd ended the pull without saying how it went; see `banger daemon status` for its log"
        ),
    })
}
