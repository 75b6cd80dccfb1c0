//! The real `banger` and `bangerd` over a real unix socket, each test in its
//! own XDG tree.
#![allow(clippy::disallowed_methods)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn autostart_then_status_list_and_stop() {
    let sb = Sandbox::new();
    assert!(!sb.socket().exists());

    // No daemon yet: the first command starts one.
    let out = ok(sb.banger(&["vm", "list"]));
    assert!(out.starts_with("No VMs."), "{out}");
    let pid = sb.daemon_pid().expect("the daemon recorded its pid");
    assert!(process_alive(pid));

    // Private modes on the socket and its directory.
    assert_eq!(mode(&sb.runtime_dir()), 0o700);
    assert_eq!(mode(&sb.socket()), 0o600);

    let status: serde_json::Value =
        serde_json::from_str(&ok(sb.banger(&["daemon", "status", "--json"]))).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["daemon"]["pid"], pid);
    assert_eq!(status["daemon"]["version"], env!("CARGO_PKG_VERSION"));

    assert_eq!(ok(sb.banger(&["vm", "list", "--json"])).trim(), "[]");
    assert_eq!(ok(sb.banger(&["image", "list", "--json"])).trim(), "[]");
    assert!(ok(sb.banger(&["image", "list"])).starts_with("No images."));
    // Still the same daemon: commands reuse it rather than starting more.
    assert_eq!(sb.daemon_pid(), Some(pid));

    assert_eq!(ok(sb.banger(&["daemon", "stop"])).trim(), "bangerd stopped");
    assert!(!sb.socket().exists(), "the socket is removed on shutdown");
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(pid)),
        "daemon exited"
    );

    let out = sb.banger(&["daemon", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out).trim(), "bangerd is not running");
    assert_eq!(
        ok(sb.banger(&["daemon", "stop"])).trim(),
        "bangerd is not running"
    );

    let log = std::fs::read_to_string(sb.state_dir().join("bangerd.log")).unwrap();
    assert!(log.contains("bangerd listening"), "{log}");
    assert!(log.contains("bangerd stopped"), "{log}");
}

#[test]
fn second_daemon_is_refused() {
    let sb = Sandbox::new();
    let out = ok(sb.banger(&["daemon", "start"]));
    assert!(out.starts_with("bangerd started"), "{out}");
    let pid = sb.daemon_pid().unwrap();

    let second = sb.command("bangerd").output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = stderr(&second);
    assert!(
        err.contains(&format!("bangerd is already running as pid {pid}")),
        "{err}"
    );

    let again = ok(sb.banger(&["daemon", "start"]));
    assert_eq!(
        again.trim(),
        format!("bangerd is already running (pid {pid})")
    );
    // The first one is untouched and still serving.
    assert_eq!(sb.daemon_pid(), Some(pid));
    ok(sb.banger(&["vm", "list"]));
}

#[test]
fn stale_socket_from_a_dead_daemon_is_replaced() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.runtime_dir()).unwrap();
    // A bound-then-dropped listener leaves its socket file behind, exactly
    // as a daemon killed with SIGKILL does.
    drop(std::os::unix::net::UnixListener::bind(sb.socket()).unwrap());
    assert!(sb.socket().exists());

    assert!(ok(sb.banger(&["vm", "list"])).starts_with("No VMs."));
    assert_eq!(mode(&sb.socket()), 0o600);
}

#[test]
fn daemon_killed_with_sigkill_is_replaced_on_next_command() {
    let sb = Sandbox::new();
    ok(sb.banger(&["daemon", "start"]));
    let first = sb.daemon_pid().unwrap();
    signal(first, rustix::process::Signal::KILL);
    assert!(wait_until(Duration::from_secs(5), || !process_alive(first)));

    ok(sb.banger(&["vm", "list"]));
    let second = sb.daemon_pid().unwrap();
    assert_ne!(first, second);
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let sb = Sandbox::new();
    ok(sb.banger(&["daemon", "start"]));
    let pid = sb.daemon_pid().unwrap();
    signal(pid, rustix::process::Signal::TERM);
    assert!(wait_until(Duration::from_secs(5), || !process_alive(pid)));
    assert!(!sb.socket().exists());
    let log = std::fs::read_to_string(sb.state_dir().join("bangerd.log")).unwrap();
    assert!(log.contains("SIGTERM"), "{log}");
}

#[test]
fn foreground_daemon_logs_to_stderr_and_stops_on_sigint() {
    let sb = Sandbox::new();
    let child = sb
        .command("bangerd")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || sb.socket().exists()));
    ok(sb.banger(&["vm", "list"]));
    signal(child.id() as i32, rustix::process::Signal::INT);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let err = stderr(&out);
    assert!(
        err.contains("bangerd listening") && err.contains("SIGINT"),
        "{err}"
    );
}

#[test]
fn another_uid_is_refused() {
    if !rustix::process::geteuid().is_root() {
        skip("needs root to run the client as another uid");
        return;
    }
    let sb = Sandbox::new();
    ok(sb.banger(&["daemon", "start"]));
    // Open the way to the socket for everyone, so that only the daemon's own
    // peer check stands between uid 65534 and the API.
    use std::os::unix::fs::PermissionsExt;
    let open = |p: std::path::PathBuf, m| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    for dir in ["", "run", "home", "config", "state", "data"] {
        open(sb.path(dir), 0o755);
    }
    open(sb.runtime_dir(), 0o755);
    open(sb.socket(), 0o666);

    // The client refuses a socket directory that is not its user's.
    let out = sb
        .command("banger")
        .args(["vm", "list"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("refusing to use") && err.contains("belongs to uid 0"),
        "{err}"
    );
    // And the daemon refuses the connection itself: a raw request from
    // uid 65534 (this test binary, run again as that user).
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "raw_request_helper", "--nocapture"])
        .env("BANGER_RAW_SOCKET", sb.socket())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let said = stdout(&out);
    assert!(
        said.contains("403")
            && said.contains("bangerd refused a connection from uid 65534: it serves only uid 0"),
        "{said}{}",
        stderr(&out)
    );
    // The owner is still served.
    ok(sb.banger(&["vm", "list"]));
}

/// Not a test by itself: with BANGER_RAW_SOCKET set, sends one request to
/// that socket and prints the answer (`another_uid_is_refused` runs it as
/// another user).
#[test]
fn raw_request_helper() {
    use std::io::{Read, Write};
    let Some(socket) = std::env::var_os("BANGER_RAW_SOCKET") else {
        return;
    };
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: bangerd\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    println!("{answer}");
}

/// A socket another user's process listens on, where this user's daemon
/// socket should be: the client refuses to talk to it.
#[test]
fn a_server_of_another_user_is_refused() {
    if !rustix::process::geteuid().is_root() {
        skip("needs root to run a server as another uid");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // uid 65534's own daemon, in a sandbox it owns.
    let theirs = Sandbox::new();
    let chown = |p: &std::path::Path| {
        let out = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(p)
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    chown(theirs.root.path());
    std::fs::set_permissions(theirs.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut daemon = theirs
        .command("bangerd")
        .uid(65534)
        .gid(65534)
        .spawn()
        .unwrap();
    assert!(wait_until(std::time::Duration::from_secs(10), || theirs
        .socket()
        .exists()));

    // Ours: a proper runtime directory, with their socket moved into it.
    let mine = Sandbox::new();
    std::fs::create_dir_all(mine.runtime_dir()).unwrap();
    std::fs::set_permissions(mine.runtime_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::rename(theirs.socket(), mine.socket()).unwrap();
    let out = mine.banger(&["vm", "list"]);
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("refusing the server") && err.contains("uid 65534"),
        "{err}"
    );
}

#[test]
fn unknown_config_key_stops_the_daemon_with_a_clear_error() {
    let sb = Sandbox::with_config("log_levle = \"debug\"");

    let out = sb.banger(&["vm", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bangerd exited at start-up"), "{err}");
    assert!(err.contains("log_levle"), "{err}");
    assert!(
        err.contains(&sb.config_file().display().to_string()),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// `sudo -E banger ...` hands a root daemon the user's XDG directories: a
/// config the user wrote, naming a "helper" the user owns, must not be
/// what root runs. Each is refused with its reason.
#[test]
fn a_root_daemon_refuses_a_config_or_state_another_user_can_change() {
    if !rustix::process::geteuid().is_root() {
        skip("the checks are a root daemon's");
        return;
    }
    let nobody = Some(rustix::process::Uid::from_raw(65534));
    // A user-owned config file.
    let sb = Sandbox::with_config("helper = \"/tmp/evil-helper\"");
    rustix::fs::chown(sb.config_file(), nobody, None).unwrap();
    let out = sb.banger(&["vm", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("will not trust"), "{err}");
    assert!(err.contains("belongs to uid 65534"), "{err}");
    assert!(
        err.contains(&sb.config_file().display().to_string()),
        "{err}"
    );

    // A root-owned config naming a program the user can replace.
    let evil = sb.path("home/evil-helper");
    std::fs::write(&evil, "#!/bin/sh\n").unwrap();
    rustix::fs::chown(&evil, nobody, None).unwrap();
    let sb = Sandbox::with_config(&format!("helper = \"{}\"", evil.display()));
    let out = sb.banger(&["vm", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("will not use `helper`"), "{err}");
    assert!(err.contains("belongs to uid 65534"), "{err}");

    // A state directory in a tree the user can write to.
    let sb = Sandbox::new();
    std::fs::set_permissions(sb.path("state"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = sb.banger(&["vm", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("will not trust"), "{err}");
    assert!(err.contains("writable by group or others"), "{err}");
}

#[test]
fn corrupt_database_is_kept_and_named() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.state_dir()).unwrap();
    let db = sb.state_dir().join("state.db");
    let garbage = vec![0x5a_u8; 8192];
    std::fs::write(&db, &garbage).unwrap();

    let out = sb.banger(&["vm", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        garbage,
        "the database is left as it was"
    );
}

#[test]
fn usage_errors_exit_2_and_help_reads_well() {
    let sb = Sandbox::new();
    let out = sb.banger(&["vm", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = sb.banger(&["--help"]);
    let help = ok(out);
    for word in [
        "vm",
        "image",
        "doctor",
        "daemon",
        "version",
        "completions",
        "--json",
    ] {
        assert!(help.contains(word), "help lacks {word}:\n{help}");
    }
    // Neither usage errors nor help start a daemon.
    assert!(!sb.socket().exists());
}

#[test]
fn version_does_not_start_a_daemon() {
    let sb = Sandbox::new();
    let out = ok(sb.banger(&["version"]));
    assert!(
        out.contains(&format!("banger {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(out.contains("bangerd not running"), "{out}");
    assert!(!sb.socket().exists());
}

#[test]
fn completions_for_each_shell() {
    let sb = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(sb.banger(&["completions", shell]));
        assert!(script.contains("banger"), "{shell}");
        assert!(script.contains("doctor"), "{shell}");
    }
}

#[test]
fn doctor_lists_every_requirement() {
    let sb = Sandbox::new();
    let out = sb.banger(&["doctor", "--json"]);
    // Exit status depends on this host; the report's shape does not.
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for needed in ["mkfs.ext4", "ip", "nft", "ssh"] {
        assert!(
            names.iter().any(|n| n.contains(needed)),
            "{needed} missing from {names:?}"
        );
    }
    assert!(names.iter().any(|n| n.contains("kvm")), "{names:?}");
    let text = stdout(&sb.banger(&["doctor"]));
    assert!(text.contains('✓') || text.contains('✗'), "{text}");
}

#[test]
fn concurrent_first_commands_share_one_daemon() {
    // Several commands at once with no daemon: one daemon wins the lock,
    // and every command waits for it rather than failing.
    for _ in 0..5 {
        let sb = Sandbox::new();
        let children: Vec<_> = (0..4)
            .map(|_| sb.command("banger").args(["vm", "list"]).spawn().unwrap())
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
        }
        let pid = sb.daemon_pid().expect("one daemon");
        assert!(process_alive(pid));
        ok(sb.banger(&["daemon", "stop"]));
    }
}
