//! A committed write survives `kill -9` of the process that made it.
//!
//! The test runs its own binary again as the writer: in that child, the
//! environment variable names the database; it commits, says so on stdout,
//! and keeps writing until it is killed mid-transaction.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use banger::model::VmState;
use banger::store::{NewImage, NewVm, Store, VmProcess};

const WRITER_ENV: &str = "BANGER_STORE_CRASH_WRITER";
const COMMITTED: &str = "banger-store-crash: committed";

#[test]
fn committed_write_survives_kill_9() {
    if let Some(path) = std::env::var_os(WRITER_ENV) {
        write_until_killed(Path::new(&path));
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "committed_write_survives_kill_9", "--nocapture"])
        .env(WRITER_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let committed = stdout
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains(COMMITTED));
    if !committed {
        let status = child.wait().unwrap();
        panic!("the writer exited ({status}) before committing");
    }
    // Let it get into the middle of further writes, then kill it outright.
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();

    let store = Store::open(&path).unwrap();
    let vm = store.get_vm("survivor").unwrap();
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(vm.pid, Some(4242));
    assert_eq!(vm.image.as_deref(), Some("base"));
    assert_eq!(store.get_image("base").unwrap().name, "base");
    let events = store.events(Some("survivor"), 1_000_000).unwrap();
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.message == format!("write {i}"))
    );
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

/// The child: commit, report, then write in a loop until SIGKILL lands.
fn write_until_killed(path: &Path) -> ! {
    let mut store = Store::open(path).unwrap();
    store
        .insert_image(&NewImage {
            name: "base".into(),
            rootfs_path: "/images/base/rootfs.ext4".into(),
            kernel_path: None,
            size_bytes: None,
            build_key: None,
        })
        .unwrap();
    store
        .insert_vm(&NewVm {
            name: "survivor".into(),
            image: Some("base".into()),
            vmm: banger::model::VmmKind::Firecracker,
            vcpus: 1,
            memory_mib: 256,
            disk_bytes: 1 << 30,
            work_disk_bytes: None,
            lease: None,
            nat: true,
            role: banger::model::VmRole::Vm,
            root_mode: banger::model::RootMode::Clone,
            base_path: None,
        })
        .unwrap();
    let process = VmProcess {
        pid: 4242,
        start_ticks: 1,
    };
    store
        .set_vm_state("survivor", VmState::Running, Some(process))
        .unwrap();

    let mut stdout = std::io::stdout();
    writeln!(stdout, "{COMMITTED}").unwrap();
    stdout.flush().unwrap();

    let mut i = 0_u64;
    loop {
        store
            .record_event(Some("survivor"), "write", &format!("write {i}"))
            .unwrap();
        i += 1;
    }
}
