//! A flat apt repository made from `.deb` files a test builds itself
//! (`dpkg-deb`), and a static file server for it on an address of the
//! test's choosing (the bridge's, so build VMs reach it and nothing else).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A flat apt repository (`deb [trusted=yes] http://HOST:PORT/ ./`).
pub struct LocalRepo {
    pub dir: tempfile::TempDir,
    debs: Vec<(String, String, PathBuf)>,
}

impl LocalRepo {
    pub fn new() -> LocalRepo {
        LocalRepo {
            dir: tempfile::tempdir().unwrap(),
            debs: Vec::new(),
        }
    }

    /// Builds package `name` `version` holding `files` and re-indexes.
    pub fn add(&mut self, name: &str, version: &str, files: &[(&str, &str)]) {
        let root = self.dir.path().join(format!("build-{name}-{version}"));
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            format!(
                "Package: {name}\nVersion: {version}\nArchitecture: all\n\
                 Maintainer: banger tests <tests@banger.invalid>\nDescription: banger test package\n"
            ),
        )
        .unwrap();
        for (path, contents) in files {
            let path = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        let deb = self.dir.path().join(format!("{name}_{version}_all.deb"));
        super::dpkg_deb(&root, &deb);
        std::fs::remove_dir_all(&root).unwrap();
        self.debs.push((name.into(), version.into(), deb));
        self.index();
    }

    /// Writes `Packages` and `Release` for every package built so far.
    fn index(&self) {
        let mut packages = String::new();
        for (name, version, deb) in &self.debs {
            let bytes = std::fs::read(deb).unwrap();
            packages.push_str(&format!(
                "Package: {name}\nVersion: {version}\nArchitecture: all\n\
                 Maintainer: banger tests <tests@banger.invalid>\nFilename: ./{}\n\
                 Size: {}\nSHA256: {}\nDescription: banger test package\n\n",
                deb.file_name().unwrap().to_string_lossy(),
                bytes.len(),
                sha256(&bytes)
            ));
        }
        std::fs::write(self.dir.path().join("Packages"), &packages).unwrap();
        let release = format!(
            "Origin: banger-test\nLabel: banger-test\nDate: Thu, 01 Jan 2026 00:00:00 UTC\nSHA256:\n {} {} Packages\n",
            sha256(packages.as_bytes()),
            packages.len()
        );
        std::fs::write(self.dir.path().join("Release"), release).unwrap();
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A static file server on `addr` for the repository: GET only, one
/// request per connection, stops when dropped.
pub struct FileServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FileServer {
    pub fn start(ip: Ipv4Addr, root: PathBuf) -> FileServer {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => serve_one(stream, &root),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        FileServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(stream: std::net::TcpStream, root: &Path) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let name = path.trim_start_matches('/').trim_start_matches("./");
    let file = (!name.contains("..") && !name.is_empty())
        .then(|| std::fs::read(root.join(name)).ok())
        .flatten();
    let mut stream = stream;
    let _ = match file {
        Some(body) => stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|()| stream.write_all(&body)),
        None => stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    };
}
