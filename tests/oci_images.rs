//! OCI images end to end: layers written here, pushed with skopeo to a
//! real registry on loopback (Debian's docker-registry), pulled by the real
//! daemon and CLI, and checked inside the ext4 image with debugfs. The
//! last test boots an image with no init and no sshd. Skips, saying why,
//! without docker-registry, skopeo or e2fsprogs.
#![allow(clippy::disallowed_methods)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::oci::*;
use common::*;

/// The image's rootfs, from `image show --json`.
fn rootfs(sb: &Sandbox, name: &str) -> PathBuf {
    let shown: serde_json::Value =
        serde_json::from_str(&ok(sb.banger(&["image", "show", name, "--json"]))).unwrap();
    PathBuf::from(shown["rootfs"].as_str().unwrap())
}

/// What `debugfs -R REQUEST` prints about `image` (stdout and stderr).
fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .unwrap();
    let said = stderr(&out);
    let said: String = said
        .lines()
        .filter(|l| !l.starts_with("debugfs 1."))
        .collect();
    format!("{}{said}", stdout(&out))
}

/// The inode number of `path` in `image`.
fn inode(image: &Path, path: &str) -> String {
    debugfs(image, &format!("stat {path}"))
        .split_whitespace()
        .skip_while(|w| *w != "Inode:")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// `banger image import --oci NAME PATH`.
fn import_oci(sb: &Sandbox, name: &str, path: &Path) -> std::process::Output {
    sb.banger(&["image", "import", "--oci", name, path.to_str().unwrap()])
}

fn pull(sb: &Sandbox, reference: &str, name: &str) -> std::process::Output {
    sb.banger(&["image", "pull", "--insecure", reference, "--name", name])
}

/// The first layer of the test image: a little of everything.
fn base_layer() -> Vec<u8> {
    Layer::default()
        .dir("bin", 0o755)
        .file("bin/busybox", b"not really busybox\n", 0o755)
        .symlink("bin/sh", "busybox")
        .dir("etc", 0o755)
        .dir("etc/old", 0o755)
        .file("etc/old/a", b"from below\n", 0o644)
        .dir("gone", 0o755)
        .file("gone/x", b"hidden by a whiteout\n", 0o644)
        .dir("usr/bin", 0o755)
        .owned_file("usr/bin/su", b"setuid\n", 0o4750, (1000, 1001))
        .char_device("dev/null", 1, 3)
        .file_with_xattr(
            "bin/ping",
            b"ping\n",
            ("security.capability", b"\x01\x00\x00\x02"),
        )
        .dir("secret", 0o700)
        .file("secret/key", b"k\n", 0o000)
        .finish()
}

/// The second layer: a whiteout, an opaque directory, a hard link.
fn top_layer() -> Vec<u8> {
    Layer::default()
        .whiteout("gone")
        .opaque("etc/old")
        .file("etc/old/b", b"from above\n", 0o644)
        .hardlink("bin/bb", "bin/busybox")
        .file("etc/motd", b"hello\n", 0o644)
        .finish()
}

/// A registry on loopback and a scratch directory, once the tools are here.
fn registry_and_dir() -> Option<(Registry, tempfile::TempDir)> {
    if !have_tools() {
        return None;
    }
    Some((Registry::start(false)?, tempfile::tempdir().unwrap()))
}

fn have_tools() -> bool {
    installed("mkfs.ext4", "e2fsprogs") && installed("debugfs", "e2fsprogs")
}

#[test]
fn a_pulled_image_holds_what_its_layers_say_and_layers_download_once() {
    let Some((registry, dir)) = registry_and_dir() else {
        return;
    };
    let (base, top) = (base_layer(), top_layer());
    let (reference, manifest) =
        registry.publish(&dir.path().join("app"), "test/app", &[base.clone(), top]);
    let sb = Sandbox::new();

    let out = pull(&sb, &reference, "app");
    let said = ok(out);
    assert!(said.contains("pulled from"), "{said}");
    let image = rootfs(&sb, "app");
    // The whiteout and the opaque directory.
    assert!(debugfs(&image, "stat /gone").contains("not found"));
    let old = debugfs(&image, "ls /etc/old");
    assert!(
        old.contains(" b ") || old.contains(" b\n") || old.contains("b  "),
        "{old}"
    );
    assert!(!old.contains(" a "), "{old}");
    assert_eq!(debugfs(&image, "cat /etc/old/b"), "from above\n");
    // Owners and modes, setuid included, whoever the daemon is.
    let su = debugfs(&image, "stat /usr/bin/su");
    assert!(su.contains("Mode:  04750"), "{su}");
    assert!(
        su.contains("User:  1000") && su.contains("Group:  1001"),
        "{su}"
    );
    let key = debugfs(&image, "stat /secret/key");
    assert!(
        key.contains("Mode:  0000") && key.contains("User:     0"),
        "{key}"
    );
    assert!(debugfs(&image, "stat /secret").contains("Mode:  0700"));
    // A hard link, a symlink, a device node, an extended attribute.
    assert_eq!(inode(&image, "/bin/bb"), inode(&image, "/bin/busybox"));
    assert!(debugfs(&image, "stat /bin/sh").contains("Fast link dest: \"busybox\""));
    let null = debugfs(&image, "stat /dev/null");
    assert!(null.contains("Type: character special"), "{null}");
    assert!(null.contains("Device major/minor number: 01:03"), "{null}");
    let cap = debugfs(&image, "ea_get /bin/ping security.capability");
    assert!(cap.contains("01 00 00 02"), "{cap}");
    // What every root needs, even from scratch.
    assert!(debugfs(&image, "stat /tmp").contains("Mode:  01777"));
    assert!(debugfs(&image, "stat /proc").contains("Type: directory"));
    let check = Command::new("e2fsck")
        .arg("-fn")
        .arg(&image)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stdout(&check));

    // image.json keeps where it came from and how it runs.
    let shown: serde_json::Value =
        serde_json::from_str(&ok(sb.banger(&["image", "show", "app", "--json"]))).unwrap();
    let digest = manifest["digest"].as_str().unwrap();
    assert_eq!(shown["oci_digest"], digest);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.with_file_name("image.json")).unwrap())
            .unwrap();
    assert_eq!(info["oci"]["config"]["Cmd"][0], "/bin/sh");
    assert_eq!(info["oci"]["config"]["WorkingDir"], "/root");

    // By digest: nothing is downloaded again.
    let by_digest = format!("{}/test/app@{digest}", registry.addr);
    let out = pull(&sb, &by_digest, "app-pinned");
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("is cached"), "{said}");
    let base_digest = sha256(&base);
    assert_eq!(registry.blob_gets(&base_digest), 1);

    // Another image sharing the base layer: only its own layer is fetched.
    let extra = Layer::default()
        .file("etc/other", b"other\n", 0o644)
        .finish();
    let (other_ref, _) = registry.publish(
        &dir.path().join("other"),
        "test/other",
        &[base.clone(), extra.clone()],
    );
    ok(pull(&sb, &other_ref, "other"));
    assert_eq!(
        registry.blob_gets(&base_digest),
        1,
        "the shared layer came twice"
    );
    assert_eq!(registry.blob_gets(&sha256(&extra)), 1);

    // A repeat pull of an unchanged image changes nothing.
    let again = ok(pull(&sb, &reference, "app"));
    assert!(again.contains("up to date"), "{again}");
    // The name of an image from elsewhere is not taken over.
    fails(pull(&sb, &other_ref, "app"), "app");
}

#[test]
fn an_index_gives_its_linux_amd64_image_or_a_clear_refusal() {
    let Some((registry, dir)) = registry_and_dir() else {
        return;
    };
    let layout = Layout::new(&dir.path().join("multi"));
    let arch_layer = |arch: &str| {
        Layer::default()
            .file("ARCH", arch.as_bytes(), 0o644)
            .finish()
    };
    let arm = layout.image(&[arch_layer("arm64")], "arm64");
    let amd = layout.image(&[arch_layer("amd64")], "amd64");
    let index = layout.index(&[arm.clone(), amd]);
    layout.tag(&index, "v1");
    let reference = registry.push(&layout, "v1", "test/multi");
    let sb = Sandbox::new();
    ok(pull(&sb, &reference, "multi"));
    assert_eq!(debugfs(&rootfs(&sb, "multi"), "cat /ARCH"), "amd64");

    let arm_only = Layout::new(&dir.path().join("arm"));
    let arm = arm_only.image(&[arch_layer("arm64")], "arm64");
    let index = arm_only.index(&[arm]);
    arm_only.tag(&index, "v1");
    let reference = registry.push(&arm_only, "v1", "test/arm");
    let err = fails(pull(&sb, &reference, "arm"), "no linux/amd64 image");
    assert!(err.contains("linux/arm64"), "{err}");
    fails(sb.banger(&["image", "show", "arm"]), "arm");
}

#[test]
fn a_blob_that_is_not_what_its_digest_says_is_refused_and_nothing_registered() {
    let Some((registry, dir)) = registry_and_dir() else {
        return;
    };
    let top = top_layer();
    let (reference, _) = registry.publish(
        &dir.path().join("app"),
        "test/app",
        &[base_layer(), top.clone()],
    );
    // The registry's copy of the top layer goes bad behind its back.
    let stored = registry.blob_file(&sha256(&top));
    let mut bad = std::fs::read(&stored).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::write(&stored, bad).unwrap();

    let sb = Sandbox::new();
    let err = fails(pull(&sb, &reference, "app"), "refused");
    assert!(err.contains(&sha256(&top)), "{err}");
    fails(sb.banger(&["image", "show", "app"]), "app");
    let images = sb.path("data/banger/images");
    let left: Vec<_> = walk(&images);
    assert!(left.is_empty(), "left behind: {left:?}");
    let cached = sb.path("home/.cache/banger/oci/blobs/sha256");
    let hex = sha256(&top).trim_start_matches("sha256:").to_string();
    assert!(!cached.join(hex).exists(), "a bad blob was cached");
    // A daemon killed mid-download leaves a partial blob; the next start removes it.
    let partial = cached.join(".0123.7.part");
    std::fs::write(&partial, b"half a layer").unwrap();
    ok(sb.banger(&["daemon", "stop"]));
    ok(sb.banger(&["image", "list"]));
    assert!(!partial.exists(), "a partial blob outlived a daemon start");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().unwrap().is_dir() {
            found.extend(walk(&entry.path()));
        } else {
            found.push(entry.path());
        }
    }
    found
}

#[test]
fn layers_that_reach_outside_the_image_are_refused() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let victim = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            Layer::default().raw_member("../evil", b"x").finish(),
            "outside the image",
        ),
        (
            "symlink",
            Layer::default()
                .symlink("esc", victim.path().to_str().unwrap())
                .file("esc/pwned", b"x", 0o644)
                .finish(),
            "through a symlink",
        ),
        (
            "hardlink",
            Layer::default()
                .hardlink("passwd", "../../../../etc/passwd")
                .finish(),
            "outside the image",
        ),
    ];
    let sb = Sandbox::new();
    for (name, layer, says) in cases {
        let (layout, _) = Layout::single(&dir.path().join(name), &[layer]);
        let err = fails(import_oci(&sb, name, &layout.dir), says);
        assert!(err.contains("refused"), "{name}: {err}");
        fails(sb.banger(&["image", "show", name]), name);
    }
    assert!(walk(victim.path()).is_empty(), "written outside the image");
    assert!(walk(&sb.path("data/banger/images")).is_empty());
    // The same through a registry.
    if let Some(registry) = Registry::start(false) {
        let layer = Layer::default().raw_member("../evil", b"x").finish();
        let (reference, _) = registry.publish(&dir.path().join("pushed"), "test/evil", &[layer]);
        fails(pull(&sb, &reference, "evil"), "outside the image");
        fails(sb.banger(&["image", "show", "evil"]), "evil");
    }
}

#[test]
fn a_registry_that_asks_for_a_password_gets_the_users_docker_login() {
    if !have_tools() {
        return;
    }
    let Some(registry) = Registry::start(true) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (reference, _) = registry.publish(&dir.path().join("app"), "test/private", &[base_layer()]);
    let sb = Sandbox::new();
    let err = fails(pull(&sb, &reference, "private"), "refused or failed");
    assert!(err.contains("authorized"), "{err}");
    // What `docker login` writes: base64 of user:password under the host.
    let docker = sb.path("home/.docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
            registry.addr
        ),
    )
    .unwrap();
    ok(pull(&sb, &reference, "private"));
}

#[test]
fn layout_archives_and_docker_save_tarballs_import() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = Layout::single(&dir.path().join("app"), &[base_layer(), top_layer()]);
    // The layout as a tar archive.
    let archive = dir.path().join("app.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    tar.append_dir_all(".", &layout.dir).unwrap();
    tar.finish().unwrap();
    drop(tar);
    let sb = Sandbox::new();
    ok(sb.banger(&["image", "import", "--oci", archive.to_str().unwrap()]));
    assert_eq!(debugfs(&rootfs(&sb, "app"), "cat /etc/motd"), "hello\n");

    // `docker save`: manifest.json names the config and layer files.
    let layer = Layer::default()
        .file("etc/saved", b"saved\n", 0o644)
        .finish();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&layer[..]), &mut raw).unwrap();
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(&raw)]}})
    .to_string();
    let saved = dir.path().join("saved.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&saved).unwrap());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, bytes).unwrap();
    };
    add("abc.json", config.as_bytes());
    add("l1/layer.tar", &raw);
    add(
        "manifest.json",
        br#"[{"Config":"abc.json","RepoTags":["saved:1"],"Layers":["l1/layer.tar"]}]"#,
    );
    tar.finish().unwrap();
    drop(tar);
    ok(import_oci(&sb, "saved", &saved));
    assert_eq!(debugfs(&rootfs(&sb, "saved"), "cat /etc/saved"), "saved\n");

    // A zstd-compressed layer (the `zstd` tool compresses it here).
    if installed("zstd", "zstd") {
        let tar = Layer::default()
            .file("etc/zst", b"zstd\n", 0o644)
            .finish_tar();
        let plain = dir.path().join("layer.tar");
        std::fs::write(&plain, &tar).unwrap();
        let zst = run(Command::new("zstd").args(["-q", "-c"]).arg(&plain)).stdout;
        let (layout, _) = Layout::single(&dir.path().join("zstd"), &[zst]);
        ok(import_oci(&sb, "zst", &layout.dir));
        assert_eq!(debugfs(&rootfs(&sb, "zst"), "cat /etc/zst"), "zstd\n");
    }
}

#[test]
fn an_image_without_init_or_sshd_boots_with_the_agent_as_init() {
    if !have_tools() {
        return;
    }
    let Some(layer) = busybox_layer() else { return };
    let Some(registry) = Registry::start(false) else {
        return;
    };
    let Some(t) = common::vms::VmSandbox::new("") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (reference, _) = registry.publish(&dir.path().join("busybox"), "test/busybox", &[layer]);
    let sb = &t.sb;
    let _turn = common::vms::booting();
    t.no_upstream_dns();
    ok(pull(sb, &reference, "busybox"));
    let created = ok(sb.banger(&[
        "vm", "create", "--name", "bb", "--image", "busybox", "--vcpus", "1", "--memory", "256",
    ]));
    assert!(created.contains("agent ready"), "{created}");
    let exec = |args: &[&str]| {
        let mut argv = vec!["vm", "exec", "bb", "--"];
        argv.extend(args);
        sb.banger(&argv)
    };
    let uname = ok(exec(&["busybox", "uname", "-a"]));
    assert!(uname.starts_with("Linux bb "), "{uname}");
    let init = ok(exec(&["busybox", "cat", "/proc/1/cmdline"]));
    assert!(init.contains("banger-agent"), "PID 1 is {init:?}");
    let ssh = fails(sb.banger(&["vm", "ssh", "bb", "--", "true"]), "no sshd");
    assert!(ssh.contains("banger vm exec"), "{ssh}");
    ok(exec(&["sh", "-c", "echo kept > /root/note"]));
    ok(sb.banger(&["vm", "stop", "bb"]));
    ok(sb.banger(&["vm", "start", "bb"]));
    assert_eq!(ok(exec(&["busybox", "cat", "/root/note"])), "kept\n");

    // Its changes, flattened onto its image as a new image: a file
    // removed, a directory replaced whole, a file added; its identity
    // (host key, name) left behind.
    ok(exec(&[
        "busybox",
        "sh",
        "-c",
        "busybox rm /bin/sh && busybox rm -rf /etc && busybox mkdir /etc && echo only > /etc/only",
    ]));
    fails(sb.banger(&["vm", "export", "bb", "bb-flat"]), "is running");
    ok(sb.banger(&["vm", "stop", "bb"]));
    ok(sb.banger(&["vm", "export", "bb", "bb-flat"]));
    let flat = rootfs(sb, "bb-flat");
    assert_eq!(debugfs(&flat, "cat /root/note"), "kept\n");
    assert!(debugfs(&flat, "stat /bin/sh").contains("not found"));
    assert!(debugfs(&flat, "stat /bin/busybox").contains("Type: regular"));
    let etc = debugfs(&flat, "ls /etc");
    assert!(etc.contains("only") && !etc.contains("hostname"), "{etc}");
    assert!(debugfs(&flat, "stat /etc/ssh/ssh_host_ed25519_key").contains("not found"));
    ok(sb.banger(&["vm", "delete", "bb"]));

    // A build on it goes through the agent; --packages says what it needs.
    let script = dir.path().join("setup.sh");
    std::fs::write(&script, "#!/bin/sh\necho from-a-build > /etc/built\n").unwrap();
    let built = ok(sb.banger(&[
        "image",
        "build",
        "--from",
        "busybox",
        "busybox-built",
        "--run",
        script.to_str().unwrap(),
    ]));
    assert!(built.contains("built"), "{built}");
    assert_eq!(
        debugfs(&rootfs(sb, "busybox-built"), "cat /etc/built"),
        "from-a-build\n"
    );
    let err = fails(
        sb.banger(&[
            "image",
            "build",
            "--from",
            "busybox",
            "with-curl",
            "--packages",
            "curl",
        ]),
        "needs apt-get",
    );
    assert!(err.contains("--run"), "{err}");
}

#[test]
fn a_daemon_that_is_not_root_gives_files_their_owners_all_the_same() {
    if !have_tools() {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        skip("needs root to run the daemon as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = Layout::single(&dir.path().join("app"), &[base_layer(), top_layer()]);
    let sb = Sandbox::new();
    // Everything of the sandbox and the layout belongs to `nobody`.
    for path in [sb.root.path(), dir.path()] {
        run(Command::new("chown").arg("-R").arg("65534:65534").arg(path));
    }
    let as_nobody = |args: &[&str]| {
        let mut cmd = sb.command("banger");
        cmd.args(args).uid(65534).gid(65534);
        ok(cmd.output().unwrap())
    };
    as_nobody(&[
        "image",
        "import",
        "--oci",
        "app",
        layout.dir.to_str().unwrap(),
    ]);
    let shown: serde_json::Value =
        serde_json::from_str(&as_nobody(&["image", "show", "app", "--json"])).unwrap();
    let image = PathBuf::from(shown["rootfs"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&image).unwrap().uid(), 65534);
    let su = debugfs(&image, "stat /usr/bin/su");
    assert!(
        su.contains("Mode:  04750") && su.contains("User:  1000"),
        "{su}"
    );
    for root_owned in [
        "/",
        "/bin/busybox",
        "/etc/old/b",
        "/secret/key",
        "/dev/null",
    ] {
        let stat = debugfs(&image, &format!("stat {root_owned}"));
        assert!(
            stat.contains("User:     0   Group:     0"),
            "{root_owned}: {stat}"
        );
    }
    as_nobody(&["daemon", "stop"]);
    let cap = debugfs(&image, "ea_get /bin/ping security.capability");
    assert!(cap.contains("01 00 00 02"), "{cap}");
}

/// Every file of the ext4 `image` (but lost+found) with its type, mode,
/// owner and content digest, from `debugfs rdump` (run as root, which keeps
/// owners).
fn files_of(image: &Path) -> std::collections::BTreeMap<String, String> {
    let dump = tempfile::tempdir().unwrap();
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", dump.path().display()))
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut files = std::collections::BTreeMap::new();
    fn walk_into(dir: &Path, root: &Path, files: &mut std::collections::BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if rel == "lost+found" {
                continue;
            }
            let what = if meta.is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                walk_into(&path, root, files);
                "dir".to_string()
            } else {
                sha256(&std::fs::read(&path).unwrap())
            };
            let mode = if meta.is_symlink() {
                0
            } else {
                meta.mode() & 0o7777
            };
            files.insert(
                rel,
                format!("{what} {mode:o} {}:{}", meta.uid(), meta.gid()),
            );
        }
    }
    walk_into(dump.path(), dump.path(), &mut files);
    files
}

#[test]
fn exports_come_back_the_same_through_import_and_a_registry() {
    if !have_tools() || !rustix::process::geteuid().is_root() {
        skip("needs root (debugfs rdump keeps owners only for root) and e2fsprogs");
        return;
    }
    let Some(registry) = Registry::start(false) else {
        return;
    };
    if !common::vms::runtime_dir().join("vmlinux").exists() {
        skip("no runtime bundle (make runtime-debian): an export carries its kernel");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = Layout::single(&dir.path().join("app"), &[base_layer(), top_layer()]);
    let sb = Sandbox::with_config(&format!(
        "runtime_dir = \"{}\"",
        common::vms::runtime_dir().display()
    ));
    ok(import_oci(&sb, "app", &layout.dir));
    let original = files_of(&rootfs(&sb, "app"));
    assert!(original.contains_key("usr/bin/su"), "{original:?}");

    // raw: a kernel and an ext4 boot disk, imported again as it is.
    let raw = dir.path().join("raw");
    ok(sb.banger(&[
        "image",
        "export",
        "app",
        "--format",
        "raw",
        raw.to_str().unwrap(),
    ]));
    for file in ["vmlinux", "rootfs.ext4", "banger-image.json"] {
        assert!(raw.join(file).exists(), "no {file}");
    }
    let description: serde_json::Value =
        serde_json::from_slice(&std::fs::read(raw.join("banger-image.json")).unwrap()).unwrap();
    assert_eq!(description["rootfs"], "rootfs.ext4");
    ok(sb.banger(&[
        "image",
        "import",
        "app-raw",
        raw.join("rootfs.ext4").to_str().unwrap(),
    ]));
    assert_eq!(files_of(&rootfs(&sb, "app-raw")), original);
    // An export never writes into a directory that holds something.
    fails(
        sb.banger(&[
            "image",
            "export",
            "app",
            "--format",
            "raw",
            raw.to_str().unwrap(),
        ]),
        "not empty",
    );

    // oci: a layout (root and kernel images), imported again, and pushed
    // to the registry and pulled back.
    let oci = dir.path().join("oci");
    ok(sb.banger(&[
        "image",
        "export",
        "app",
        "--format",
        "oci",
        oci.to_str().unwrap(),
    ]));
    ok(import_oci(&sb, "app-oci", &oci));
    // rdump shows neither device numbers nor extended attributes: asked apart.
    let special = |image: &Path| {
        let null = debugfs(image, "stat /dev/null");
        assert!(null.contains("Device major/minor number: 01:03"), "{null}");
        let cap = debugfs(image, "ea_get /bin/ping security.capability");
        assert!(cap.contains("01 00 00 02"), "{cap}");
    };
    assert_eq!(files_of(&rootfs(&sb, "app-oci")), original);
    special(&rootfs(&sb, "app-oci"));
    // The layout's other image, by its name.
    let oci_dir = oci.to_str().unwrap();
    ok(sb.banger(&[
        "image",
        "import",
        "--oci",
        "--tag",
        "app-kernel",
        "app-k",
        oci_dir,
    ]));
    assert!(debugfs(&rootfs(&sb, "app-k"), "stat /boot/vmlinux").contains("Type: regular"));
    fails(
        sb.banger(&[
            "image", "import", "--oci", "--tag", "nope", "app-n", oci_dir,
        ]),
        "no image tagged `nope`",
    );
    let reference = format!("{}/test/exported:v1", registry.addr);
    let pushed = ok(sb.banger(&["image", "push", "app", &reference, "--insecure"]));
    assert!(pushed.contains(&format!("{reference}-kernel")), "{pushed}");
    ok(pull(&sb, &reference, "app-pushed"));
    assert_eq!(files_of(&rootfs(&sb, "app-pushed")), original);
    special(&rootfs(&sb, "app-pushed"));
    // The kernel image carries boot/vmlinux.
    ok(pull(&sb, &format!("{reference}-kernel"), "app-kernel"));
    let kernel = debugfs(&rootfs(&sb, "app-kernel"), "stat /boot/vmlinux");
    assert!(kernel.contains("Type: regular"), "{kernel}");
}

#[test]
fn a_debian_image_from_a_registry_boots_with_systemd_and_builds_on() {
    if !have_tools() {
        return;
    }
    let Some(t) = common::vms::VmSandbox::new("") else {
        return;
    };
    if !installed("dpkg-deb", "dpkg") {
        return;
    }
    let Some(registry) = Registry::start(false) else {
        return;
    };
    // The bundle's own Debian root filesystem, as one layer.
    let dir = tempfile::tempdir().unwrap();
    let (layer, _) = bundle_rootfs_layer(dir.path());
    let (reference, _) = registry.publish(&dir.path().join("debian"), "test/debian", &[layer]);
    std::fs::remove_dir_all(dir.path().join("debian")).unwrap();

    let sb = &t.sb;
    t.no_upstream_dns();
    let _turn = common::vms::booting();
    // The bridge first: the build's package repository listens on it.
    let gateway = t.bridge_up();
    ok(pull(sb, &reference, "deb"));
    let shown: serde_json::Value =
        serde_json::from_str(&ok(sb.banger(&["image", "show", "deb", "--json"]))).unwrap();
    let packages = shown["packages"].as_array().map_or(0, Vec::len);
    assert!(packages > 100, "no package manifest from dpkg: {shown}");
    let created = ok(sb.banger(&["vm", "create", "--name", "d1", "--image", "deb"]));
    assert!(
        created.contains("ssh ready") || created.contains("SSH"),
        "{created}"
    );
    let init = ok(sb.banger(&["vm", "ssh", "d1", "--", "cat", "/proc/1/comm"]));
    assert_eq!(init.trim(), "systemd");
    ok(sb.banger(&["vm", "delete", "d1"]));

    // A build on it, with a package from a repository on the bridge.
    let mut repo = common::apt::LocalRepo::new();
    repo.add(
        "banger-oci",
        "1.0",
        &[("/usr/share/banger-oci/hello", "from a package\n")],
    );
    let server = common::apt::FileServer::start(gateway, repo.dir.path().to_path_buf());
    let empty = dir.path().join("sources.list");
    std::fs::write(&empty, "").unwrap();
    let source = format!("deb [trusted=yes] http://{}/ ./", server.addr);
    let copy = format!("{}:/etc/apt/sources.list", empty.display());
    ok(sb.banger(&[
        "image",
        "build",
        "--from",
        "deb",
        "deb-built",
        "--packages",
        "banger-oci",
        "--apt-source",
        &source,
        "--copy",
        &copy,
    ]));
    let built = rootfs(sb, "deb-built");
    assert_eq!(
        debugfs(&built, "cat /usr/share/banger-oci/hello"),
        "from a package\n"
    );
    let manifest = std::fs::read_to_string(built.with_file_name("rootfs.ext4.packages")).unwrap();
    assert!(manifest.contains("banger-oci 1.0"), "{manifest}");
}
