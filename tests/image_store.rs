//! The image store through the real daemon and CLI, without booting
//! anything: real `mkfs.ext4` images, imports that keep their package
//! manifest, and the sweep of what a daemon killed mid-import or mid-build
//! leaves behind. Build requests the daemon must refuse before booting are
//! here too.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A small real ext4 image at `dir/name.ext4` holding one file.
fn ext4_image(dir: &Path, name: &str) -> PathBuf {
    let tree = dir.join(format!("{name}-tree"));
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), "x\n").unwrap();
    let image = dir.join(format!("{name}.ext4"));
    common::mkfs_ext4(&tree, &image, 32 << 20);
    image
}

/// A sandbox with a small image imported as `base`, the directory holding
/// the image file, and its path.
fn with_base_image() -> Option<(Sandbox, tempfile::TempDir, PathBuf)> {
    if !have_mkfs() {
        return None;
    }
    let sb = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path(), "base");
    ok(sb.banger(&["image", "import", "base", image.to_str().unwrap()]));
    Some((sb, dir, image))
}

fn have_mkfs() -> bool {
    installed("mkfs.ext4", "e2fsprogs")
}

#[test]
fn import_keeps_the_package_manifest_normalized() {
    if !have_mkfs() {
        return;
    }
    let sb = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path(), "base");
    std::fs::write(
        dir.path().join("base.ext4.packages"),
        "zlib1g 1:1.2.13\n# a comment\nbash   5.2.15-2\n\nbash 5.2.15-2\n",
    )
    .unwrap();
    ok(sb.banger(&["image", "import", "base", image.to_str().unwrap()]));
    assert_eq!(
        ok(sb.banger(&["image", "show", "base", "--packages"])),
        "bash 5.2.15-2\nzlib1g 1:1.2.13\n"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(sb.banger(&["image", "list", "--json"]))).unwrap();
    assert_eq!(listed[0]["package_count"], 2);
    let show = ok(sb.banger(&["image", "show", "base"]));
    assert!(show.contains("packages  2"), "{show}");

    // The manifest sits next to the rootfs in the image's version directory.
    let rootfs = PathBuf::from(listed[0]["rootfs"].as_str().unwrap());
    assert!(rootfs.starts_with(sb.path("data/banger/images/base")));
    let mut manifest = rootfs.clone().into_os_string();
    manifest.push(".packages");
    assert!(Path::new(&manifest).is_file());

    // Without a manifest: none is shown, and --packages says why.
    let bare = ext4_image(dir.path(), "bare");
    ok(sb.banger(&["image", "import", "bare", bare.to_str().unwrap()]));
    fails(
        sb.banger(&["image", "show", "bare", "--packages"]),
        "no package manifest",
    );

    // Deleting removes every file of the image.
    ok(sb.banger(&["image", "delete", "base"]));
    assert!(!sb.path("data/banger/images/base").exists());
}

#[test]
fn a_daemon_start_sweeps_what_a_crash_left_in_the_image_store() {
    let Some((sb, _dir, _image)) = with_base_image() else {
        return;
    };
    let images = sb.path("data/banger/images");
    let current = std::fs::read_dir(images.join("base"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // What a daemon killed mid-build leaves: a staging directory, and a
    // version renamed into place whose transaction never committed.
    let staging = images.join("base/.tmp-123-abcdef");
    let orphan_version = images.join("base/999-abcdef");
    let orphan_image = images.join("never-registered/1-000000");
    for d in [&staging, &orphan_version, &orphan_image] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("rootfs.ext4"), "partial").unwrap();
    }
    ok(sb.banger(&["daemon", "stop"]));
    ok(sb.banger(&["image", "list"]));
    assert!(!staging.exists() && !orphan_version.exists());
    assert!(!images.join("never-registered").exists());
    assert!(
        current.join("rootfs.ext4").is_file(),
        "the current version stays"
    );
    let log = std::fs::read_to_string(sb.state_dir().join("bangerd.log")).unwrap();
    assert!(
        log.contains("removed image files no image points at"),
        "{log}"
    );
}

#[test]
fn builds_that_cannot_work_are_refused_before_anything_boots() {
    let Some((sb, dir, image)) = with_base_image() else {
        return;
    };
    let runtime = dir.path().join("runtime");
    write_bundle(&runtime, &image);
    std::fs::write(
        sb.config_file(),
        format!(
            "runtime_dir = \"{}\"\n{}",
            runtime.display(),
            std::fs::read_to_string(sb.config_file()).unwrap()
        ),
    )
    .unwrap();
    ok(sb.banger(&["daemon", "stop"]));

    let failed = |args: &[&str]| {
        let mut argv = vec!["image", "build"];
        argv.extend_from_slice(args);
        let out = sb.banger(&argv);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        stderr(&out)
    };
    let err = failed(&["base", "--from", "base"]);
    assert!(
        err.contains("image `base` already exists") && err.contains("--replace"),
        "{err}"
    );
    let err = failed(&["x", "--from", "nothing"]);
    assert!(err.contains("no image `nothing` to build from"), "{err}");
    let err = failed(&["x", "--from", "base", "--packages", "curl;reboot"]);
    assert!(err.contains("invalid package name `curl;reboot`"), "{err}");
    let err = failed(&["x", "--from", "base", "--modules"]);
    assert!(err.contains("no kernel modules"), "{err}");
    let err = failed(&["x", "--from", "base", "--size", "1M"]);
    assert!(err.contains("smaller than the base image"), "{err}");
    let err = failed(&["x", "--from", "base", "--apt-source", "rm -rf /"]);
    assert!(err.contains("invalid apt source"), "{err}");
    let out = sb.banger(&["image", "build", "Bad_Name"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("lowercase"), "{}", stderr(&out));
    let out = sb.banger(&["image", "build", "x", "--copy", "/nonexistent:/etc/x"]);
    assert!(
        stderr(&out).contains("/nonexistent does not exist"),
        "{}",
        stderr(&out)
    );

    // Each failure is logged, and nothing was left behind.
    assert_eq!(ok(sb.banger(&["vm", "list", "--json"])).trim(), "[]");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(sb.banger(&["image", "list", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}

/// A runtime bundle without modules whose rootfs is `rootfs` (enough for
/// the daemon to check a build request; nothing boots).
fn write_bundle(dir: &Path, rootfs: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
    elf.resize(18, 0);
    elf.extend(0x3eu16.to_le_bytes());
    elf.resize(64, 0);
    std::fs::write(dir.join("vmlinux"), elf).unwrap();
    std::fs::copy(rootfs, dir.join("rootfs.ext4")).unwrap();
    std::fs::write(
        dir.join("bundle.json"),
        r#"{"kernel":"vmlinux","rootfs":"rootfs.ext4","defaults":{"vcpus":1,"memory_mib":256,"disk_size":"32M","work_disk_size":"16M","kernel_args":"console=ttyS0"}}"#,
    )
    .unwrap();
}

/// A replaced image keeps its old version for as long as a layered VM runs
/// on that file; the last such VM's delete (or the next sweep) removes it.
#[test]
fn a_replaced_version_stays_while_a_layered_vm_uses_it() {
    use banger::image::{ImageInfo, Images};
    use banger::model::{RootMode, VmRole};
    use banger::store::{NewVm, SharedStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = SharedStore::new(Store::open(&dir.path().join("state.db")).unwrap());
    let images = Images::new(&dir.path().join("data"), store.clone());
    let version = |contents: &str| {
        let staged = images.stage("base").unwrap();
        std::fs::write(staged.rootfs(), contents).unwrap();
        let info = ImageInfo {
            name: "base".into(),
            size_bytes: contents.len() as u64,
            ..Default::default()
        };
        images.register(staged, &info, true).unwrap()
    };
    let old = version("one");
    store
        .lock()
        .insert_vm(&NewVm {
            name: "rider".into(),
            image: Some("base".into()),
            vmm: banger::model::VmmKind::Qemu,
            vcpus: 1,
            memory_mib: 128,
            disk_bytes: 64 << 20,
            work_disk_bytes: None,
            lease: None,
            nat: false,
            role: VmRole::Vm,
            root_mode: RootMode::Layered,
            base_path: Some(old.rootfs_path.clone()),
        })
        .unwrap();
    let new = version("two");
    assert_ne!(new.rootfs_path, old.rootfs_path);
    assert_eq!(std::fs::read_to_string(&old.rootfs_path).unwrap(), "one");
    images.sweep().unwrap();
    assert!(
        old.rootfs_path.is_file(),
        "the sweep took a file a VM runs on"
    );
    // The VM goes: so does the version only it used.
    store.lock().delete_vm("rider").unwrap();
    images.release(&old.rootfs_path);
    assert!(!old.rootfs_path.exists());
    assert_eq!(std::fs::read_to_string(&new.rootfs_path).unwrap(), "two");
}
