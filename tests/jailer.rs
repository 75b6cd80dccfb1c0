//! Firecracker through its jailer, on this host, up to InstanceStart (the
//! guest boots too where KVM can run it): chrooted in its jail inside the
//! VM's directory, in a mount namespace of its own, as the VM's uid; its
//! log through the jail's FIFO; the disk locks held by the log relay;
//! re-adopted by a new daemon; nothing left after delete. Needs root, a
//! static firecracker (`BANGER_TEST_FIRECRACKER`, else the bundle's or
//! PATH's) and a jailer (`BANGER_TEST_JAILER`, else next to it or on PATH);
//! skips, saying why, without them.
#![allow(clippy::disallowed_methods)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger::vmm::disklock::{Disk, DiskLocks};
use common::vms::*;
use common::*;

fn pieces() -> Result<(PathBuf, PathBuf), String> {
    let firecracker = std::env::var_os("BANGER_TEST_FIRECRACKER")
        .map(PathBuf::from)
        .or_else(|| Some(runtime_dir().join("firecracker")).filter(|p| p.is_file()))
        .or_else(|| banger::system::tools::find_program("firecracker", None))
        .ok_or("no firecracker binary (BANGER_TEST_FIRECRACKER)")?;
    if !banger::vmm::jail::is_static_elf(&firecracker) {
        return Err(format!(
            "{} is not a static build; the jailer runs only those (BANGER_TEST_FIRECRACKER)",
            firecracker.display()
        ));
    }
    let jailer = std::env::var_os("BANGER_TEST_JAILER")
        .map(PathBuf::from)
        .or_else(|| {
            firecracker
                .parent()
                .map(|d| d.join("jailer"))
                .filter(|p| p.is_file())
        })
        .or_else(|| banger::system::tools::find_program("jailer", None))
        .ok_or("no jailer binary (BANGER_TEST_JAILER)")?;
    Ok((firecracker, jailer))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[test]
fn a_jailed_firecracker_runs_chrooted_as_its_vm_and_leaves_nothing() {
    let (firecracker, jailer) = match pieces() {
        Ok(p) => p,
        Err(why) => return skip(&why),
    };
    let Some(t) = VmSandbox::with_vmm(
        &runtime_dir(),
        "firecracker",
        &format!(
            "firecracker = \"{}\"\njailer = \"{}\"\n",
            firecracker.display(),
            jailer.display()
        ),
    ) else {
        return;
    };
    let sb = &t.sb;
    let doctor = ok(sb.banger(&["doctor"]));
    assert!(
        doctor.contains("in ") && doctor.contains("jail"),
        "{doctor}"
    );

    ok(sb.banger(&[
        "vm",
        "create",
        "--name",
        "jailed",
        "--vmm",
        "firecracker",
        "--no-wait",
        "--vcpus",
        "1",
        "--memory",
        "256",
    ]));
    let vm = t.json(&["vm", "show", "jailed"]);
    let pid = vm["pid"].as_u64().unwrap() as u32;
    let dir = PathBuf::from(vm["dir"].as_str().unwrap());
    let root = dir.join("jail/firecracker/jailed/root");
    // Chrooted in its jail, in a mount namespace of its own, as its uid.
    assert!(same_dir(Path::new(&format!("/proc/{pid}/root")), &root));
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(),
        std::fs::read_link("/proc/self/ns/mnt").unwrap()
    );
    let uid = vm["vmm_uid"].as_u64().unwrap();
    assert!(uid >= 0x7000_0000, "{vm:#}");
    // Its log came through the jail's FIFO.
    let log_has = |needle: &str| {
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(dir.join("vmm.log")).is_ok_and(|l| l.contains(needle))
        })
    };
    assert!(log_has("InstanceStart"), "no Firecracker log in vmm.log");
    // Its disks are locked for as long as it runs (by the relay: the jailer
    // closes what the VMM inherits).
    let upper = dir.join("upper.ext4");
    assert!(DiskLocks::check(&[Disk::rw(&upper)]).is_err());

    // A new daemon finds it by its jail and adopts it.
    signal(sb.daemon_pid().unwrap(), rustix::process::Signal::KILL);
    std::thread::sleep(Duration::from_millis(300));
    let vm = t.json(&["vm", "show", "jailed"]);
    assert_eq!(vm["state"], "running", "{vm:#}");
    assert_eq!(vm["pid"].as_u64(), Some(u64::from(pid)));

    ok(sb.banger(&["vm", "delete", "--force", "jailed"]));
    assert!(!process_alive(pid as i32));
    assert!(!dir.exists(), "the VM's directory, jail and all, is gone");
    // The relay (which held the locks) went with the VMM.
    let dir_text = dir.display().to_string();
    let relay_left = || {
        processes().into_iter().any(|(_, proc_dir)| {
            std::fs::read(proc_dir.join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&dir_text))
        })
    };
    assert!(wait_until(Duration::from_secs(3), || !relay_left()));
}
