//! `config.toml`: optional, every key defaulted, unknown keys refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::VmmChoice;

/// Errors reading the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for banger: a typo, an unknown key, a bad value.
    #[error("invalid configuration in {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// banger's configuration. Every field has a default, so an absent file is
/// the same as an empty one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How much the daemon logs: error, warn, info, debug or trace.
    pub log_level: LogLevel,
    /// Which VMM runs new VMs: `auto` probes the host (see `banger doctor`).
    pub vmm: VmmChoice,
    /// The runtime bundle's directory, when not `./runtime` of a checkout
    /// or `$XDG_DATA_HOME/banger/runtime`.
    pub runtime_dir: Option<PathBuf>,
    /// A firecracker binary to use instead of the bundle's or PATH's.
    pub firecracker: Option<PathBuf>,
    /// The privileged network helper a daemon that is not root runs through
    /// `sudo -n`, when not in `/usr/local/libexec/banger` or `/usr/libexec/banger`.
    pub helper: Option<PathBuf>,
    /// Firecracker's jailer, which a root daemon starts Firecracker through
    /// (else `jailer` next to the firecracker binary, or on PATH); `""`
    /// runs Firecracker unjailed.
    pub jailer: Option<PathBuf>,
    /// A root daemon runs each VMM as uid (and gid) `vmm_uid_base` plus
    /// the guest's place in the subnet: ids no account uses (above the
    /// ranges systemd gives users, containers and dynamic users).
    pub vmm_uid_base: u32,
    /// How long a booting VM has to answer SSH.
    pub ssh_timeout_secs: u64,
    /// A boot whose console stays silent this long while SSH does not
    /// answer has stalled: its VMM is killed and the VM booted once more
    /// from the same disks (software emulation stalls now and then). 0
    /// waits the whole `ssh_timeout_secs` instead.
    pub boot_stall_secs: u64,
    /// How long `vm stop` waits for a clean shutdown before killing the VMM.
    pub stop_timeout_secs: u64,
    /// The size at which a log (a VM's console and VMM log, `bangerd.log`)
    /// is rotated, in MiB; one older file is kept beside it.
    pub log_max_mib: u64,
    /// Warm images as they are used: a `vm create` that boots because its
    /// image has no fitting template (none yet, or one of another bundle)
    /// makes one in the background, so the next create of that shape is
    /// restored (see `banger image warm`).
    pub warm: bool,
    pub network: NetworkConfig,
}

impl Config {
    /// [`Config::log_max_mib`] in bytes.
    pub fn log_cap(&self) -> u64 {
        self.log_max_mib.saturating_mul(1 << 20)
    }
}

/// `[network]`: the bridge VMs attach to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// The host bridge's name.
    pub bridge: String,
    /// The bridge's address and prefix; guests get addresses from it.
    pub subnet: String,
    /// Resolvers the `.vm` DNS server forwards other names to, as
    /// `IP` or `IP:PORT`; unset means the host's own, from /etc/resolv.conf.
    pub dns_upstreams: Option<Vec<String>>,
    /// The name of banger's own nftables table (family `ip`).
    pub nat_table: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: "banger0".into(),
            subnet: "172.30.0.1/24".into(),
            dns_upstreams: None,
            nat_table: "banger".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_level: LogLevel::Info,
            vmm: VmmChoice::Auto,
            runtime_dir: None,
            firecracker: None,
            helper: None,
            jailer: None,
            vmm_uid_base: 0x7000_0000,
            ssh_timeout_secs: 300,
            boot_stall_secs: 60,
            stop_timeout_secs: 30,
            log_max_mib: 16,
            warm: false,
            network: NetworkConfig::default(),
        }
    }
}

/// The daemon's log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for tracing::Level {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

impl Config {
    /// Loads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses `text`, naming `path` in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start].lines().count().max(1));
            let message = match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_string(),
            };
            ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/x/config.toml"))
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn keys_are_read() {
        assert_eq!(
            parse("log_level = \"debug\"").unwrap().log_level,
            LogLevel::Debug
        );
    }

    #[test]
    fn network_section_is_read() {
        let cfg = parse("vmm = \"qemu\"\n[network]\nsubnet = \"10.1.2.1/24\"\n").unwrap();
        assert_eq!(cfg.vmm, VmmChoice::Qemu);
        assert_eq!(cfg.network.subnet, "10.1.2.1/24");
        assert_eq!(cfg.network.bridge, "banger0");
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = parse("log_levle = \"debug\"").unwrap_err().to_string();
        assert!(err.contains("log_levle"), "{err}");
        assert!(err.contains("/x/config.toml"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn bad_value_is_refused() {
        let err = parse("\n\nlog_level = \"loud\"").unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("loud"), "{err}");
    }

    #[test]
    fn missing_file_gives_defaults() {
        let cfg = Config::load(Path::new("/nonexistent/banger/config.toml")).unwrap();
        assert_eq!(cfg, Config::default());
    }
}
