//! `banger::ssh` against a real OpenSSH server on loopback: exec with exit
//! status and streamed output, tar upload and download, and the two
//! refusals (wrong client key, wrong host key) that must fail at once.
//! Needs root (sshd) and /usr/sbin/sshd; otherwise each test says
//! `skipped: ...` and passes.
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use banger::ssh::archive::Entry;
use banger::ssh::{OutputStream, Session, SshError, Target, wait_for};

const SSHD: &str = "/usr/sbin/sshd";

/// A private sshd on 127.0.0.1 with its own host key and one authorized
/// client key, killed on drop.
struct Sshd {
    dir: tempfile::TempDir,
    child: Child,
    addr: SocketAddr,
}

impl Sshd {
    /// Starts one, or says why this machine cannot and returns None.
    fn start() -> Option<Sshd> {
        if !common::netns::is_root() {
            common::skip("needs root to run sshd");
            return None;
        }
        if !Path::new(SSHD).exists() {
            common::skip(&format!("no {SSHD} (install openssh-server)"));
            return None;
        }
        if !Path::new("/run/sshd").is_dir() {
            fs::create_dir_all("/run/sshd").unwrap();
            fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755)).unwrap();
        }
        let dir = tempfile::Builder::new()
            .prefix("banger-sshd-")
            .tempdir()
            .unwrap();
        for name in ["host", "client", "other-host", "other-client"] {
            keygen(&dir.path().join(name));
        }
        fs::copy(
            dir.path().join("client.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let config = dir.path().join("sshd_config");
        fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\n\
                 HostKey {dir}/host\n\
                 AuthorizedKeysFile {dir}/authorized_keys\n\
                 PidFile none\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n",
                dir = dir.path().display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = fs::File::create(dir.path().join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let sshd = Sshd { dir, child, addr };
        let up = common::wait_until(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(
            up,
            "sshd did not listen on {addr}:\n{}",
            fs::read_to_string(sshd.path("sshd.log")).unwrap_or_default()
        );
        Some(sshd)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The target banger would use: root, the authorized key, the real host key.
    fn target(&self) -> Target {
        Target {
            addr: self.addr,
            user: "root".into(),
            key: self.path("client"),
            host_key: fs::read_to_string(self.path("host.pub")).unwrap(),
        }
    }

    async fn session(&self) -> Session {
        Session::connect(&self.target(), Duration::from_secs(10))
            .await
            .unwrap()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "{}", common::stderr(&out));
}

/// `SHA256:...` of a public key file, as ssh-keygen prints it.
fn fingerprint(pub_file: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(pub_file)
        .output()
        .unwrap();
    common::ok(out)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The full chain of an error, one cause per line, as the CLI prints it.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(&format!("\n  caused by: {c}"));
        cause = c.source();
    }
    text
}

fn same_contents(a: &Path, b: &Path) -> bool {
    let (mut a, mut b) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (mut x, mut y) = (vec![0; 1 << 20], vec![0; 1 << 20]);
    loop {
        let n = read_full(&mut a, &mut x);
        let m = read_full(&mut b, &mut y);
        if n != m || x[..n] != y[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[tokio::test]
async fn exec_returns_status_and_keeps_stdout_and_stderr_apart() {
    let Some(sshd) = Sshd::start() else { return };
    let mut ssh = sshd.session().await;

    assert_eq!(ssh.output("true").await.unwrap().status, 0);
    assert_eq!(ssh.output("exit 7").await.unwrap().status, 7);
    let got = ssh.output("echo out; echo err >&2").await.unwrap();
    assert_eq!(got.status, 0);
    assert_eq!(got.stdout, b"out\n");
    assert_eq!(got.stderr, b"err\n");
    // Killed by a signal: 128 + its number, as a shell reports it.
    assert_eq!(ssh.output("kill -9 $$").await.unwrap().status, 137);
    // Stdin is at EOF, so a command reading it does not hang.
    assert_eq!(ssh.output("cat").await.unwrap().stdout, b"");
    ssh.close().await;
}

#[tokio::test]
async fn exec_streams_long_output_complete_and_in_pieces() {
    let Some(sshd) = Sshd::start() else { return };
    let mut ssh = sshd.session().await;
    let (mut bytes, mut chunks, mut stray) = (0usize, 0usize, 0usize);
    let status = ssh
        .exec(
            "head -c 20000000 /dev/zero | tr '\\0' x",
            &mut |stream, data| {
                assert_eq!(stream, OutputStream::Stdout);
                chunks += 1;
                bytes += data.len();
                stray += data.iter().filter(|&&b| b != b'x').count();
            },
        )
        .await
        .unwrap();
    assert_eq!(status, 0);
    assert_eq!(bytes, 20_000_000);
    assert_eq!(stray, 0);
    assert!(chunks > 1, "output came in {chunks} callback(s)");
}

#[tokio::test]
async fn exec_with_input_feeds_stdin_then_eof() {
    let Some(sshd) = Sshd::start() else { return };
    let mut ssh = sshd.session().await;
    let input = vec![b'a'; 3_000_000];
    let mut out = Vec::new();
    let status = ssh
        .exec_with_input("wc -c", &input, &mut |_, data| out.extend_from_slice(data))
        .await
        .unwrap();
    assert_eq!(status, 0);
    assert_eq!(String::from_utf8(out).unwrap().trim(), "3000000");
}

#[tokio::test]
async fn upload_keeps_modes_links_empty_dirs_and_big_files() {
    let Some(sshd) = Sshd::start() else { return };
    let host = tempfile::tempdir().unwrap();
    let guest = tempfile::tempdir().unwrap();

    let tree = host.path().join("app");
    fs::create_dir_all(tree.join("nested/deeper")).unwrap();
    fs::create_dir(tree.join("empty")).unwrap();
    fs::write(tree.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(tree.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(tree.join("nested/secret"), "s3cret").unwrap();
    fs::set_permissions(
        tree.join("nested/secret"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::write(tree.join("nested/deeper/leaf.txt"), "leaf").unwrap();
    std::os::unix::fs::symlink("../run.sh", tree.join("nested/link")).unwrap();
    // Owned by someone else on the host: lands as root in the guest.
    std::os::unix::fs::chown(tree.join("run.sh"), Some(1234), Some(1234)).unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    fs::File::options()
        .write(true)
        .open(tree.join("nested/deeper/leaf.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();

    // 200 MiB apparent size, a few KiB of data at scattered offsets.
    let big = host.path().join("big.img");
    {
        let mut f = fs::File::create(&big).unwrap();
        f.set_len(200 << 20).unwrap();
        for (i, offset) in [0u64, 1 << 20, 77 << 20, (200 << 20) - 4096]
            .iter()
            .enumerate()
        {
            f.seek(SeekFrom::Start(*offset)).unwrap();
            f.write_all(&vec![b'a' + i as u8; 4096]).unwrap();
        }
    }

    let dest = guest.path().display().to_string();
    let mut ssh = sshd.session().await;
    ssh.upload(&[
        Entry {
            host: tree.clone(),
            guest: format!("{dest}/opt/app"),
        },
        Entry {
            host: big.clone(),
            guest: format!("{dest}/var/big.img"),
        },
    ])
    .await
    .unwrap();

    let app = guest.path().join("opt/app");
    assert_eq!(
        fs::read(app.join("run.sh")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(mode(&app.join("run.sh")), 0o750);
    let meta = fs::metadata(app.join("run.sh")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert_eq!(fs::read(app.join("nested/secret")).unwrap(), b"s3cret");
    assert_eq!(mode(&app.join("nested/secret")), 0o600);
    assert_eq!(
        fs::read_link(app.join("nested/link")).unwrap(),
        Path::new("../run.sh")
    );
    assert!(app.join("empty").is_dir());
    assert_eq!(fs::read_dir(app.join("empty")).unwrap().count(), 0);
    let leaf = fs::metadata(app.join("nested/deeper/leaf.txt")).unwrap();
    assert_eq!(leaf.modified().unwrap(), old);
    let landed = guest.path().join("var/big.img");
    assert_eq!(fs::metadata(&landed).unwrap().len(), 200 << 20);
    assert!(same_contents(&big, &landed));
    ssh.close().await;
}

#[tokio::test]
async fn upload_failure_carries_the_guest_tar_stderr() {
    let Some(sshd) = Sshd::start() else { return };
    let host = tempfile::tempdir().unwrap();
    let guest = tempfile::tempdir().unwrap();
    fs::write(host.path().join("f"), "x").unwrap();
    fs::write(guest.path().join("plain-file"), "").unwrap();
    let mut ssh = sshd.session().await;
    let err = ssh
        .upload(&[Entry {
            host: host.path().join("f"),
            guest: format!("{}/plain-file/sub/f", guest.path().display()),
        }])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SshError::ExtractUpload { status, stderr } if *status != 0 && stderr.contains("plain-file")),
        "{}",
        chain(&err)
    );
}

#[tokio::test]
async fn download_follows_cp_semantics_for_directories_and_files() {
    let Some(sshd) = Sshd::start() else { return };
    let guest = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let tree = guest.path().join("data");
    fs::create_dir_all(tree.join("sub/empty")).unwrap();
    fs::write(tree.join("sub/file"), "payload").unwrap();
    fs::set_permissions(tree.join("sub/file"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(tree.join("tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(tree.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("sub/file", tree.join("link")).unwrap();
    fs::set_permissions(tree.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
    let tree_path = tree.display().to_string();
    let mut ssh = sshd.session().await;

    // Into an existing directory: lands as dest/<basename>.
    ssh.download(&tree_path, host.path()).await.unwrap();
    let into = host.path().join("data");
    assert_eq!(fs::read(into.join("sub/file")).unwrap(), b"payload");
    assert_eq!(mode(&into.join("sub/file")), 0o640);
    assert_eq!(mode(&into.join("sub")), 0o750);
    assert_eq!(mode(&into.join("tool")), 0o755);
    assert!(into.join("sub/empty").is_dir());
    assert_eq!(
        fs::read_link(into.join("link")).unwrap(),
        Path::new("sub/file")
    );

    // To a new name: the directory becomes that name.
    let renamed = host.path().join("copy");
    ssh.download(&format!("{tree_path}/"), &renamed)
        .await
        .unwrap();
    assert_eq!(fs::read(renamed.join("sub/file")).unwrap(), b"payload");
    assert!(!renamed.join("data").exists());

    // A single file, into a directory and to a new name.
    let file = format!("{tree_path}/tool");
    let dir = host.path().join("bin");
    fs::create_dir(&dir).unwrap();
    ssh.download(&file, &dir).await.unwrap();
    assert_eq!(fs::read(dir.join("tool")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(mode(&dir.join("tool")), 0o755);
    ssh.download(&file, &host.path().join("t2")).await.unwrap();
    assert_eq!(fs::read(host.path().join("t2")).unwrap(), b"#!/bin/sh\n");

    // A missing guest path is the guest tar's error, with its words.
    let err = ssh
        .download(&format!("{tree_path}/nope"), host.path())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SshError::PackDownload { stderr, .. } if stderr.contains("nope")),
        "{}",
        chain(&err)
    );
    ssh.close().await;
}

#[tokio::test]
async fn a_refused_client_key_fails_at_once() {
    let Some(sshd) = Sshd::start() else { return };
    let target = Target {
        key: sshd.path("other-client"),
        ..sshd.target()
    };
    let started = Instant::now();
    let err = wait_for(&target, Duration::from_secs(30))
        .await
        .err()
        .expect("a key not in authorized_keys must be refused");
    assert!(started.elapsed() < Duration::from_secs(5), "it was retried");
    assert!(
        matches!(err, SshError::Authenticate { .. }),
        "{}",
        chain(&err)
    );
    let msg = err.to_string();
    assert!(
        msg.contains("root") && msg.contains("other-client"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_wrong_host_key_is_a_mismatch_naming_both_fingerprints() {
    let Some(sshd) = Sshd::start() else { return };
    let target = Target {
        host_key: fs::read_to_string(sshd.path("other-host.pub")).unwrap(),
        ..sshd.target()
    };
    let started = Instant::now();
    let err = wait_for(&target, Duration::from_secs(30))
        .await
        .err()
        .expect("a host key other than the expected one must be refused");
    assert!(started.elapsed() < Duration::from_secs(5), "it was retried");
    assert!(
        matches!(err, SshError::VerifyHostKey { .. }),
        "{}",
        chain(&err)
    );
    let msg = err.to_string();
    let expected = fingerprint(&sshd.path("other-host.pub"));
    let offered = fingerprint(&sshd.path("host.pub"));
    assert!(msg.contains(&expected) && msg.contains(&offered), "{msg}");
    assert!(msg.contains("not the machine banger made"), "{msg}");
}

#[tokio::test]
async fn wait_for_a_silent_port_gives_up_with_the_last_error() {
    let Some(sshd) = Sshd::start() else { return };
    let target = Target {
        addr: ([127, 0, 0, 1], free_port()).into(),
        ..sshd.target()
    };
    let started = Instant::now();
    let err = wait_for(&target, Duration::from_secs(1))
        .await
        .err()
        .expect("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(3));
    let text = chain(&err);
    assert!(matches!(err, SshError::WaitSsh { .. }), "{text}");
    assert!(text.contains("Cannot connect"), "{text}");
    // And it does connect once something answers.
    let mut ssh = wait_for(&sshd.target(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(ssh.output("echo ok").await.unwrap().stdout, b"ok\n");
}
