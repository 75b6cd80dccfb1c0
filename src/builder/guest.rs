//! The commands a build runs in its guest, as text: pure, so they are
//! tested without a guest. Every word that comes from the user is quoted.

use crate::ssh::quote;

/// Where the build keeps its scripts in the guest; removed before shutdown.
pub const WORK_DIR: &str = "/tmp/banger-build";

/// The apt sources file a build's `--apt-source` lines go to.
pub const APT_SOURCES_FILE: &str = "/etc/apt/sources.list.d/banger.list";

/// Exit status of a shell for a command it cannot find.
pub const NOT_FOUND: u32 = 127;

/// Appends `lines` (fed on stdin) to banger's apt sources file.
pub fn add_apt_sources() -> String {
    format!(
        "mkdir -p /etc/apt/sources.list.d && cat >> {}",
        quote(APT_SOURCES_FILE)
    )
}

/// Installs `packages` non-interactively, keeping the configuration files
/// the image already has, without recommends unless asked.
pub fn apt_install(packages: &[String], recommends: bool) -> String {
    let words: Vec<String> = packages.iter().map(|p| quote(p)).collect();
    let recommends = if recommends {
        "--install-recommends"
    } else {
        "--no-install-recommends"
    };
    format!(
        "export DEBIAN_FRONTEND=noninteractive && apt-get update -q && \
         apt-get install -y -q {recommends} \
         -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -- {}",
        words.join(" ")
    )
}

/// Makes the kernel `kver`'s modules loadable: `modprobe` needs modules.dep.
pub fn depmod(kver: &str) -> String {
    format!("depmod -a {}", quote(kver))
}

/// Where kernel `kver`'s modules go in the guest.
pub fn modules_dir(kver: &str) -> String {
    format!("/lib/modules/{kver}")
}

/// Runs an uploaded script from `/root`, as a login shell would find it.
pub fn run_script(guest_path: &str) -> String {
    format!(
        "cd /root && chmod 0755 {0} && DEBIAN_FRONTEND=noninteractive {0}",
        quote(guest_path)
    )
}

/// Lists installed packages as `status name version`.
pub const LIST_PACKAGES: &str = "dpkg-query -W -f='${db:Status-Status} ${Package} ${Version}\\n'";

/// The manifest from [`LIST_PACKAGES`]' output: installed packages only,
/// as `name version`, sorted and de-duplicated.
pub fn parse_manifest(stdout: &str) -> Vec<String> {
    let installed: String = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("installed "))
        .map(|rest| format!("{rest}\n"))
        .collect();
    crate::system::text::normalize_lines(&installed)
}

/// Leaves the image as a base should be: no apt caches or lists, none of
/// the build VM's keys or identity (every VM gets its own at creation),
/// nothing of the build's own files.
pub fn clean_up() -> String {
    format!(
        "if command -v apt-get >/dev/null; then apt-get clean; rm -rf /var/lib/apt/lists/*; fi; \
         rm -rf {WORK_DIR} /root/.ssh/authorized_keys /etc/ssh/ssh_host_*; \
         : > /etc/machine-id; : > /etc/hostname; sync"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_are_installed_quietly_and_quoted() {
        let cmd = apt_install(&["curl".into(), "hello=2.10-3".into()], false);
        assert!(cmd.contains("--no-install-recommends"), "{cmd}");
        assert!(cmd.ends_with("-- curl hello=2.10-3"), "{cmd}");
        assert!(cmd.contains("DEBIAN_FRONTEND=noninteractive"), "{cmd}");
        let cmd = apt_install(&["a b".into()], true);
        assert!(
            cmd.contains("--install-recommends") && cmd.ends_with("'a b'"),
            "{cmd}"
        );
    }

    #[test]
    fn the_manifest_keeps_installed_packages_only() {
        let out = "installed zlib1g 1:1.2.13\nnot-installed foo 1.0\n\
                   config-files bar 2\ninstalled bash 5.2.15-2\ninstalled bash 5.2.15-2\n";
        assert_eq!(parse_manifest(out), ["bash 5.2.15-2", "zlib1g 1:1.2.13"]);
    }

    #[test]
    fn cleanup_removes_keys_and_caches() {
        let cmd = clean_up();
        for part in [
            "/etc/ssh/ssh_host_*",
            "authorized_keys",
            "apt-get clean",
            WORK_DIR,
        ] {
            assert!(cmd.contains(part), "{part}: {cmd}");
        }
    }
}
