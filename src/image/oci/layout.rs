//! Images from files: an OCI image layout (a directory with `oci-layout`,
//! `index.json` and `blobs/`), the same as a tar archive, or a `docker
//! save` tarball (`manifest.json` naming a config and layer files). Every
//! file is copied into the blob cache under the digest of its content, so
//! a blob whose name lies is simply not found.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::cache::BlobCache;
use super::manifest::{Descriptor, Document, digest_hex, sha256};
use super::{Fetched, OciError, Progress};

/// A file of the layout: where its content is in the cache.
#[derive(Debug, Clone)]
struct Stored {
    digest: String,
    size: i64,
    path: PathBuf,
}

/// The JSON files (kept) and every file (in the cache), by relative name.
#[derive(Default)]
struct Files {
    json: HashMap<String, Vec<u8>>,
    stored: HashMap<String, Stored>,
}

/// The largest JSON document read from a layout.
const MAX_JSON: u64 = 4 << 20;

/// Reads the image at `path` (a layout directory, or an archive of one,
/// or a `docker save` tarball) into `cache`.
pub fn read(
    path: &Path,
    tag: Option<&str>,
    cache: &BlobCache,
    progress: &mut dyn Progress,
) -> Result<Fetched, OciError> {
    progress.step(&format!("read {}", path.display()));
    let mut files = Files::default();
    let meta = std::fs::metadata(path).map_err(OciError::read(path))?;
    if meta.is_dir() {
        walk(path, path, cache, &mut files)?;
    } else {
        let file = std::fs::File::open(path).map_err(OciError::read(path))?;
        let mut input = std::io::BufReader::new(file);
        let magic = std::io::BufRead::fill_buf(&mut input).map_err(OciError::read(path))?;
        if magic.starts_with(&[0x1f, 0x8b]) {
            from_tar(flate2::read::GzDecoder::new(input), cache, &mut files)?;
        } else {
            from_tar(input, cache, &mut files)?;
        }
    }
    let source = path.display().to_string();
    if files.json.contains_key("index.json") {
        oci(&files, source, tag)
    } else if files.json.contains_key("manifest.json") {
        docker(&files, source)
    } else {
        Err(OciError::NotAnImage { what: source })
    }
}

fn walk(root: &Path, dir: &Path, cache: &BlobCache, files: &mut Files) -> Result<(), OciError> {
    for entry in std::fs::read_dir(dir).map_err(OciError::read(dir))? {
        let entry = entry.map_err(OciError::read(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(OciError::read(&path))?;
        if kind.is_dir() {
            walk(root, &path, cache, files)?;
        } else if kind.is_file() {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let file = std::fs::File::open(&path).map_err(OciError::read(&path))?;
            let len = file.metadata().map_err(OciError::read(&path))?.len();
            add(files, name, len, file, cache)?;
        }
    }
    Ok(())
}

fn from_tar(input: impl Read, cache: &BlobCache, files: &mut Files) -> Result<(), OciError> {
    let mut archive = tar::Archive::new(input);
    let bad = |e| OciError::read("the archive")(e);
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(bad)?;
        // Names only say which file is which; nothing is written by name.
        let name: PathBuf = name
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let name = name.to_string_lossy().into_owned();
        let len = entry.size();
        add(files, name, len, entry, cache)?;
    }
    Ok(())
}

fn add(
    files: &mut Files,
    name: String,
    len: u64,
    mut input: impl Read,
    cache: &BlobCache,
) -> Result<(), OciError> {
    if name.ends_with(".json") && len <= MAX_JSON {
        let mut bytes = Vec::new();
        input
            .read_to_end(&mut bytes)
            .map_err(OciError::read(&name))?;
        let stored = cache.put_any(&bytes[..])?;
        files.json.insert(name.clone(), bytes);
        files.stored.insert(name, stored_of(stored));
    } else if name != "oci-layout" {
        let stored = cache.put_any(input)?;
        files.stored.insert(name, stored_of(stored));
    }
    Ok(())
}

fn stored_of((digest, size, path): (String, u64, PathBuf)) -> Stored {
    Stored {
        digest,
        size: size as i64,
        path,
    }
}

impl Files {
    /// The blob with `digest`, checked against its descriptor's size.
    fn blob(&self, want: &Descriptor) -> Result<&Stored, OciError> {
        digest_hex(&want.digest).ok_or_else(|| OciError::BadDigest {
            digest: want.digest.clone(),
        })?;
        let found = self
            .stored
            .values()
            .find(|s| s.digest == want.digest)
            .ok_or_else(|| OciError::WrongBlob {
                digest: want.digest.clone(),
                why: "no file of the layout has that content".into(),
            })?;
        if found.size != want.size {
            return Err(OciError::WrongBlob {
                digest: want.digest.clone(),
                why: format!("it is {} bytes, not {}", found.size, want.size),
            });
        }
        Ok(found)
    }

    fn document(&self, want: &Descriptor) -> Result<(Document, Vec<u8>), OciError> {
        let stored = self.blob(want)?;
        let bytes = std::fs::read(&stored.path).map_err(OciError::cache(&stored.path))?;
        let doc = serde_json::from_slice(&bytes).map_err(|e| OciError::BadDocument {
            what: want.digest.clone(),
            why: e.to_string(),
        })?;
        Ok((doc, bytes))
    }
}

/// An OCI layout: `index.json` to one linux/amd64 image manifest.
fn oci(files: &Files, source: String, tag: Option<&str>) -> Result<Fetched, OciError> {
    let index: Document =
        serde_json::from_slice(&files.json["index.json"]).map_err(|e| OciError::BadDocument {
            what: "index.json".into(),
            why: e.to_string(),
        })?;
    let mut doc = index;
    let mut digest = String::new();
    if let Some(tag) = tag {
        let named = |m: &&Descriptor| {
            m.annotations
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                .is_some_and(|name| name == tag)
        };
        let entry = doc
            .manifests
            .iter()
            .flatten()
            .find(named)
            .cloned()
            .ok_or_else(|| OciError::NotAnImage {
                what: format!("{source} (no image tagged `{tag}`)"),
            })?;
        (doc, _) = files.document(&entry)?;
        digest = entry.digest;
    }
    // index.json → (an index →) a manifest.
    for _ in 0..3 {
        if !doc.is_index() {
            break;
        }
        let entries = doc.manifests.clone().unwrap_or_default();
        let entry = match (doc.pick_amd64(), entries.as_slice()) {
            (Some(entry), _) => entry.clone(),
            (None, [only]) if only.platform.is_none() => only.clone(),
            _ => {
                return Err(OciError::NoPlatform {
                    reference: source,
                    offered: doc.platforms(),
                });
            }
        };
        (doc, _) = files.document(&entry)?;
        digest = entry.digest;
    }
    let config = doc.config.clone().ok_or_else(|| OciError::NotAnImage {
        what: source.clone(),
    })?;
    let config_bytes =
        std::fs::read(&files.blob(&config)?.path).map_err(OciError::read("the config"))?;
    let layers = doc
        .layers
        .iter()
        .map(|l| Ok((l.clone(), files.blob(l)?.path.clone())))
        .collect::<Result<Vec<_>, OciError>>()?;
    Ok(Fetched {
        source,
        digest,
        config: config_bytes,
        layers,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    layers: Vec<String>,
}

/// A `docker save` tarball: `manifest.json` names files, not digests.
fn docker(files: &Files, source: String) -> Result<Fetched, OciError> {
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&files.json["manifest.json"]).map_err(|e| {
            OciError::BadDocument {
                what: "manifest.json".into(),
                why: e.to_string(),
            }
        })?;
    let entry = entries.first().ok_or_else(|| OciError::NotAnImage {
        what: source.clone(),
    })?;
    let named = |name: &str| {
        files
            .stored
            .get(name)
            .cloned()
            .ok_or_else(|| OciError::BadDocument {
                what: "manifest.json".into(),
                why: format!("it names {name}, which the archive does not hold"),
            })
    };
    let config = named(&entry.config)?;
    let config_bytes = std::fs::read(&config.path).map_err(OciError::read("the config"))?;
    let mut layers = Vec::new();
    for name in &entry.layers {
        let stored = named(name)?;
        let desc = Descriptor {
            media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
            digest: stored.digest.clone(),
            size: stored.size,
            platform: None,
            annotations: None,
        };
        layers.push((desc, stored.path));
    }
    Ok(Fetched {
        source,
        digest: sha256(&files.json["manifest.json"]),
        config: config_bytes,
        layers,
    })
}
