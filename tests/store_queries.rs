//! Queries against a real database file: images, VMs with their leases,
//! uniqueness conflicts and the event log.

use std::path::PathBuf;

use banger::model::{Lease, VmState};
use banger::store::{NewImage, NewVm, Store, StoreError, Taken, VmProcess, VmRecord};
use tempfile::TempDir;

fn open() -> (TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    (dir, store)
}

fn image(name: &str) -> NewImage {
    NewImage {
        name: name.to_string(),
        rootfs_path: PathBuf::from(format!("/images/{name}/rootfs.ext4")),
        kernel_path: Some(PathBuf::from("/runtime/vmlinux")),
        size_bytes: Some(1 << 30),
        build_key: None,
    }
}

/// A VM whose lease is numbered `n`: 172.30.0.n, 02:fc:00:00:00:n, tap-bg-n.
fn vm(name: &str, n: u8) -> NewVm {
    NewVm {
        name: name.to_string(),
        image: None,
        vmm: banger::model::VmmKind::Firecracker,
        vcpus: 2,
        memory_mib: 1024,
        disk_bytes: 4 << 30,
        work_disk_bytes: Some(1 << 30),
        lease: Some(lease(n)),
        nat: true,
        role: banger::model::VmRole::Vm,
        root_mode: banger::model::RootMode::Clone,
        base_path: None,
    }
}

fn lease(n: u8) -> Lease {
    Lease {
        ip: format!("172.30.0.{n}").parse().unwrap(),
        mac: format!("02:fc:00:00:00:{n:02x}").parse().unwrap(),
        tap: format!("tap-bg-{n}").parse().unwrap(),
    }
}

fn names(vms: &[VmRecord]) -> Vec<&str> {
    vms.iter().map(|vm| vm.name.as_str()).collect()
}

#[test]
fn images_insert_list_get_delete() {
    let (_dir, mut store) = open();

    let base = store.insert_image(&image("base")).unwrap();
    assert_eq!(base.name, "base");
    assert_eq!(base.rootfs_path, PathBuf::from("/images/base/rootfs.ext4"));
    assert_eq!(base.kernel_path, Some(PathBuf::from("/runtime/vmlinux")));
    assert_eq!(base.size_bytes, Some(1 << 30));
    assert!(base.created_at > 1_600_000_000);
    store
        .insert_image(&NewImage {
            kernel_path: None,
            size_bytes: None,
            ..image("alpine")
        })
        .unwrap();

    let listed: Vec<_> = store
        .list_images()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(listed, ["alpine", "base"]);
    assert_eq!(store.get_image("base").unwrap(), base);
    assert_eq!(store.get_image("alpine").unwrap().kernel_path, None);

    assert_eq!(store.delete_image("base").unwrap(), base);
    assert!(matches!(
        store.get_image("base"),
        Err(StoreError::NotFound { kind: "image", name }) if name == "base"
    ));
    assert!(matches!(
        store.delete_image("base"),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn duplicate_image_name_is_a_conflict() {
    let (_dir, mut store) = open();
    store.insert_image(&image("base")).unwrap();

    let err = store.insert_image(&image("base")).unwrap_err();

    assert!(
        matches!(&err, StoreError::Conflict { what: Taken::ImageName, value } if value == "base")
    );
    assert_eq!(err.to_string(), "an image named `base` already exists");
    assert_eq!(store.list_images().unwrap().len(), 1);
}

#[test]
fn vms_insert_list_get_delete_with_leases() {
    let (_dir, mut store) = open();
    store.insert_image(&image("base")).unwrap();

    let testbox = store
        .insert_vm(&NewVm {
            image: Some("base".into()),
            ..vm("testbox", 5)
        })
        .unwrap();
    assert_eq!(testbox.name, "testbox");
    assert_eq!(testbox.image.as_deref(), Some("base"));
    assert_eq!(testbox.state, VmState::Creating);
    assert_eq!(testbox.vmm, banger::model::VmmKind::Firecracker);
    assert_eq!((testbox.vcpus, testbox.memory_mib), (2, 1024));
    assert_eq!(testbox.disk_bytes, 4 << 30);
    assert_eq!(testbox.work_disk_bytes, Some(1 << 30));
    assert_eq!(testbox.lease, Some(lease(5)));
    assert_eq!(testbox.tap(), Some("tap-bg-5"));
    assert_eq!(
        (testbox.pid, testbox.pid_start_ticks, testbox.started_at),
        (None, None, None)
    );

    let bare = store
        .insert_vm(&NewVm {
            lease: None,
            nat: true,
            role: banger::model::VmRole::Vm,
            root_mode: banger::model::RootMode::Clone,
            base_path: None,
            vmm: banger::model::VmmKind::Qemu,
            ..vm("bare", 0)
        })
        .unwrap();
    assert_eq!((bare.image, bare.lease), (None, None));

    assert_eq!(names(&store.list_vms().unwrap()), ["bare", "testbox"]);
    assert_eq!(store.get_vm("testbox").unwrap(), testbox);

    assert_eq!(store.delete_vm("testbox").unwrap(), testbox);
    assert!(matches!(
        store.get_vm("testbox"),
        Err(StoreError::NotFound { kind: "VM", name }) if name == "testbox"
    ));
    assert!(matches!(
        store.delete_vm("testbox"),
        Err(StoreError::NotFound { .. })
    ));
    // The lease went with it: its IP, MAC and tap are free again.
    store.insert_vm(&vm("again", 5)).unwrap();
}

#[test]
fn vm_with_unknown_image_or_backend_is_refused() {
    let (_dir, mut store) = open();

    let err = store
        .insert_vm(&NewVm {
            image: Some("nope".into()),
            ..vm("a", 1)
        })
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "image", .. }),
        "{err:?}"
    );

    assert!(store.list_vms().unwrap().is_empty());
}

#[test]
fn image_in_use_cannot_be_deleted() {
    let (_dir, mut store) = open();
    store.insert_image(&image("base")).unwrap();
    store
        .insert_vm(&NewVm {
            image: Some("base".into()),
            ..vm("testbox", 5)
        })
        .unwrap();

    let err = store.delete_image("base").unwrap_err();

    assert!(
        matches!(&err, StoreError::ImageInUse { name } if name == "base"),
        "{err:?}"
    );
    assert!(store.get_image("base").is_ok());
    store.delete_vm("testbox").unwrap();
    store.delete_image("base").unwrap();
}

#[test]
fn each_unique_vm_field_conflicts_and_leaves_no_partial_row() {
    let (_dir, mut store) = open();
    let first = store.insert_vm(&vm("first", 5)).unwrap();
    let free = lease(9);
    let second = |lease| NewVm {
        lease: Some(lease),
        nat: true,
        role: banger::model::VmRole::Vm,
        root_mode: banger::model::RootMode::Clone,
        base_path: None,
        ..vm("second", 0)
    };

    let cases = [
        (
            NewVm {
                name: "first".into(),
                ..second(free.clone())
            },
            Taken::VmName,
            "a VM named `first` already exists",
        ),
        (
            second(Lease {
                ip: "172.30.0.5".parse().unwrap(),
                ..free.clone()
            }),
            Taken::Ip,
            "IP 172.30.0.5 is already leased",
        ),
        (
            second(Lease {
                mac: "02:FC:00:00:00:05".parse().unwrap(),
                ..free.clone()
            }),
            Taken::Mac,
            "MAC 02:fc:00:00:00:05 is already leased",
        ),
        (
            second(Lease {
                tap: "tap-bg-5".parse().unwrap(),
                ..free.clone()
            }),
            Taken::Tap,
            "tap tap-bg-5 is already leased",
        ),
    ];
    for (new, what, message) in cases {
        let err = store.insert_vm(&new).unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { what: w, .. } if w == what),
            "{err:?}"
        );
        assert_eq!(err.to_string(), message);
        // Nothing of the refused VM remains: not the VM row, not its lease.
        assert_eq!(store.list_vms().unwrap(), std::slice::from_ref(&first));
    }
    // The refused lease was never recorded, so it can be taken now.
    store.insert_vm(&second(free)).unwrap();
}

#[test]
fn state_changes_record_the_vmm_process() {
    let (_dir, mut store) = open();
    store.insert_vm(&vm("testbox", 5)).unwrap();
    let process = VmProcess {
        pid: 4242,
        start_ticks: 123_456,
    };

    let starting = store
        .set_vm_state("testbox", VmState::Starting, Some(process))
        .unwrap();
    assert_eq!(starting.state, VmState::Starting);
    assert_eq!(
        (starting.pid, starting.pid_start_ticks),
        (Some(4242), Some(123_456))
    );
    assert_eq!(starting.started_at, None);

    let running = store
        .set_vm_state("testbox", VmState::Running, Some(process))
        .unwrap();
    assert_eq!(running.state, VmState::Running);
    assert!(running.started_at.is_some());

    let stopped = store
        .set_vm_state("testbox", VmState::Stopped, None)
        .unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    assert_eq!((stopped.pid, stopped.pid_start_ticks), (None, None));
    assert_eq!(
        stopped.started_at, running.started_at,
        "started_at is the last start"
    );
    assert_eq!(store.get_vm("testbox").unwrap(), stopped);

    let err = store
        .set_vm_state("nope", VmState::Running, None)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "VM", .. }),
        "{err:?}"
    );
}

#[test]
fn events_are_recorded_and_read_back() {
    let (_dir, mut store) = open();
    store.insert_vm(&vm("a", 1)).unwrap();
    store.insert_vm(&vm("b", 2)).unwrap();

    store
        .record_event(None, "daemon", "bangerd started")
        .unwrap();
    store
        .record_event(Some("a"), "created", "a created")
        .unwrap();
    store
        .record_event(Some("b"), "created", "b created")
        .unwrap();
    store
        .record_event(Some("a"), "started", "a started")
        .unwrap();

    let a: Vec<_> = store.events(Some("a"), 10).unwrap();
    let messages: Vec<_> = a.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["a created", "a started"]);
    assert!(a.iter().all(|e| e.vm.as_deref() == Some("a")));
    assert_eq!(a[1].kind, "started");
    assert!(a[0].at > 1_600_000_000);

    let last_two: Vec<_> = store
        .events(None, 2)
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(last_two, ["b created", "a started"]);
    assert_eq!(store.events(None, 100).unwrap().len(), 4);
    assert_eq!(store.events(None, 100).unwrap()[0].vm, None);

    let err = store.record_event(Some("nope"), "x", "y").unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "VM", .. }),
        "{err:?}"
    );
    assert!(matches!(
        store.events(Some("nope"), 10),
        Err(StoreError::NotFound { .. })
    ));

    // A deleted VM's events stay in the log, still named.
    store.delete_vm("a").unwrap();
    let all = store.events(None, 100).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[3].vm.as_deref(), Some("a"));
}

#[test]
fn a_damaged_lease_is_an_error_not_a_guess() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let mut store = Store::open(&db).unwrap();
    store.insert_vm(&vm("a", 1)).unwrap();
    // Another writer (an old banger, a hand edit) leaves a MAC that is none.
    let raw = rusqlite::Connection::open(&db).unwrap();
    raw.execute("UPDATE leases SET mac = 'not-a-mac'", [])
        .unwrap();
    drop(raw);
    let err = store.get_vm("a").unwrap_err();
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        chain.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(
        chain.contains("leases.mac: `not-a-mac` is not a MAC address"),
        "{chain}"
    );
}
