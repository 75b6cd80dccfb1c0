//! `banger image build`: the recipe from flags and/or `--file build.toml`,
//! sent to the daemon, which runs the build; this side only draws it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

use super::progress::BuildView;
use super::{Ctx, autostart};
use crate::rpc::ClientError;
use crate::rpc::api::{BuildImage, CopyInto, Progress};
use crate::size::parse_size;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The new image's name (or `name` in the --file).
    name: Option<String>,
    /// The image to start from (default: `default`, the bundle's rootfs).
    #[arg(long)]
    from: Option<String>,
    /// Grow the root filesystem to this size, like 4G.
    #[arg(long)]
    size: Option<String>,
    /// Packages to install with the guest's apt: `--packages curl,git`.
    #[arg(long, value_delimiter = ',')]
    packages: Vec<String>,
    /// A file listing packages, one per line (`#` comments).
    #[arg(long)]
    packages_file: Option<PathBuf>,
    /// Let apt install recommended packages too.
    #[arg(long)]
    install_recommends: bool,
    /// Install the runtime bundle's kernel modules (then `modprobe` works in its VMs).
    #[arg(long)]
    modules: bool,
    /// Put a host file or directory into the image: HOSTPATH:GUESTPATH (repeatable).
    #[arg(long = "copy", value_name = "HOSTPATH:GUESTPATH")]
    copy: Vec<String>,
    /// Run a host script in the guest, after packages and modules (repeatable, in order).
    #[arg(long = "run", value_name = "SCRIPT")]
    run: Vec<PathBuf>,
    /// An apt source line added before packages, e.g. `deb [trusted=yes] http://10.0.0.1/ ./`.
    #[arg(long = "apt-source", value_name = "LINE")]
    apt_source: Vec<String>,
    /// Replace an existing image of this name (VMs made from it keep working).
    #[arg(long)]
    replace: bool,
    /// Build even if an image with the same inputs exists.
    #[arg(long)]
    no_cache: bool,
    /// Read the recipe from a TOML file (flags override its fields).
    #[arg(long, short = 'f', value_name = "build.toml")]
    file: Option<PathBuf>,
    /// The build VM's VMM: auto (default), firecracker or qemu.
    #[arg(long)]
    vmm: Option<crate::model::VmmChoice>,
}

/// `build.toml`: the same fields as the flags. Relative paths are relative
/// to the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildFile {
    name: Option<String>,
    from: Option<String>,
    size: Option<String>,
    #[serde(default)]
    packages: Vec<String>,
    packages_file: Option<PathBuf>,
    #[serde(default)]
    install_recommends: bool,
    #[serde(default)]
    modules: bool,
    #[serde(default)]
    copy: Vec<String>,
    #[serde(default)]
    run: Vec<PathBuf>,
    #[serde(default)]
    apt_sources: Vec<String>,
}

pub async fn run(ctx: &Ctx, args: BuildArgs) -> anyhow::Result<ExitCode> {
    let req = request(args)?;
    let client = autostart::client(&ctx.paths).await?;
    let mut view = BuildView::new(ctx.json);
    let build = client.build_image(&req, |event| view.show(&event));
    let outcome = tokio::select! {
        result = build => result,
        _ = tokio::signal::ctrl_c() => {
            view.interrupted();
            return Ok(ExitCode::from(130));
        }
    };
    match outcome {
        Ok(()) => {}
        // Refused before it started (a bad request): the daemon's own words.
        Err(e @ ClientError::Api { .. }) => return Err(e.into()),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(
                "the connection to bangerd broke during the build; if the daemon died, its next start removes the build VM",
            ));
        }
    }
    Ok(match view.last() {
        Some(Progress::Done { .. }) => ExitCode::SUCCESS,
        Some(Progress::Failed { .. }) => ExitCode::FAILURE,
        _ => bail!(
            "bangerd ended the build without saying how it went; see `banger daemon status` for its log"
        ),
    })
}

/// The request: the file's fields, overridden by the flags given.
fn request(args: BuildArgs) -> anyhow::Result<BuildImage> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let (file, file_dir) = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let file: BuildFile = toml::from_str(&text)
                .with_context(|| format!("{} is not a valid build file", path.display()))?;
            let dir = std::path::absolute(path)?
                .parent()
                .map_or_else(|| cwd.clone(), Path::to_path_buf);
            (file, dir)
        }
        None => (BuildFile::default(), cwd.clone()),
    };
    let name = args
        .name
        .or(file.name)
        .context("name the image: `banger image build NAME ...` (or `name` in --file)")?;
    crate::rpc::check_image_name(&name)?;

    // A list given as flags replaces the file's; paths resolve against
    // where they were written.
    let (packages, packages_file, pkg_dir) =
        if args.packages.is_empty() && args.packages_file.is_none() {
            (file.packages, file.packages_file, &file_dir)
        } else {
            (args.packages, args.packages_file, &cwd)
        };
    let mut packages: Vec<String> = packages
        .iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if let Some(list) = packages_file {
        let path = pkg_dir.join(list);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the package list {}", path.display()))?;
        packages.extend(crate::system::text::normalize_lines(&text));
    }
    let (copy, copy_dir) = pick(args.copy, file.copy, &cwd, &file_dir);
    let copy = copy
        .iter()
        .map(|c| parse_copy(c, copy_dir))
        .collect::<anyhow::Result<_>>()?;
    let (run, run_dir) = pick(args.run, file.run, &cwd, &file_dir);
    let run = run.iter().map(|p| run_dir.join(p)).collect();
    let (apt_sources, _) = pick(args.apt_source, file.apt_sources, &cwd, &file_dir);
    let size = args.size.or(file.size);
    Ok(BuildImage {
        name,
        from: args.from.or(file.from),
        size_bytes: size
            .map(|s| parse_size(&s).map_err(anyhow::Error::msg))
            .transpose()?,
        packages,
        install_recommends: args.install_recommends || file.install_recommends,
        modules: args.modules || file.modules,
        copy,
        run,
        apt_sources,
        replace: args.replace,
        no_cache: args.no_cache,
        vmm: args.vmm,
    })
}

/// The flags' list if any were given (paths relative to `cwd`), else the
/// file's (relative to the file).
fn pick<'a, T>(
    flags: Vec<T>,
    file: Vec<T>,
    cwd: &'a Path,
    file_dir: &'a Path,
) -> (Vec<T>, &'a Path) {
    if flags.is_empty() {
        (file, file_dir)
    } else {
        (flags, cwd)
    }
}

/// `HOSTPATH:GUESTPATH`; the guest path is absolute, so the split is at
/// the last `:/`.
fn parse_copy(text: &str, base: &Path) -> anyhow::Result<CopyInto> {
    let Some(at) = text.rfind(":/") else {
        bail!(
            "--copy {text}: use HOSTPATH:GUESTPATH with an absolute guest path, like ./motd:/etc/motd"
        );
    };
    let (host, guest) = (&text[..at], &text[at + 1..]);
    if host.is_empty() {
        bail!("--copy {text}: the host path is empty");
    }
    let host = base.join(host);
    if std::fs::symlink_metadata(&host).is_err() {
        bail!("--copy {text}: {} does not exist", host.display());
    }
    Ok(CopyInto {
        host,
        guest: guest.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_specs_split_at_the_guest_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a:b"), "").unwrap();
        let c = parse_copy("a:b:/etc/x", dir.path()).unwrap();
        assert_eq!(c.host, dir.path().join("a:b"));
        assert_eq!(c.guest, "/etc/x");
        assert!(parse_copy("a:b", dir.path()).is_err());
        assert!(parse_copy(":/etc/x", dir.path()).is_err());
        assert!(parse_copy("missing:/etc/x", dir.path()).is_err());
    }

    #[test]
    fn the_file_gives_defaults_and_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("setup.sh"), "true\n").unwrap();
        std::fs::write(dir.path().join("pkgs.txt"), "jq\n# comment\ncurl\n").unwrap();
        let file = dir.path().join("build.toml");
        std::fs::write(
            &file,
            "name = \"web\"\nfrom = \"base\"\nsize = \"3G\"\npackages_file = \"pkgs.txt\"\nrun = [\"setup.sh\"]\nmodules = true\n",
        )
        .unwrap();
        let args = |extra: &[&str]| {
            use clap::Parser;
            #[derive(Parser)]
            struct T {
                #[command(flatten)]
                b: BuildArgs,
            }
            let mut argv = vec!["t", "--file", file.to_str().unwrap()];
            argv.extend_from_slice(extra);
            T::parse_from(argv).b
        };
        let req = request(args(&[])).unwrap();
        assert_eq!(req.name, "web");
        assert_eq!(req.from.as_deref(), Some("base"));
        assert_eq!(req.size_bytes, Some(3 << 30));
        assert_eq!(req.packages, ["curl", "jq"]);
        assert_eq!(req.run, [dir.path().join("setup.sh")]);
        assert!(req.modules);

        let req = request(args(&["other", "--packages", "git,make", "--from", "x"])).unwrap();
        assert_eq!(req.name, "other");
        assert_eq!(req.from.as_deref(), Some("x"));
        assert_eq!(req.packages, ["git", "make"]);
    }
}
