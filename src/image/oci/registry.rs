//! The OCI distribution protocol, through oci-client (rustls on ring):
//! resolve a reference to one linux/amd64 image manifest, then fetch its
//! config and layers into the blob cache. Every document's digest is
//! checked here, whatever the client library already checks.

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::cache::BlobCache;
use super::manifest::{ACCEPTED, Descriptor, Document, sha256};
use super::{Fetched, OciError, Progress};

/// Where to pull from.
pub struct Source {
    pub reference: Reference,
    /// Plain HTTP to this registry (a registry on the host, say).
    pub insecure: bool,
    pub auth: RegistryAuth,
}

impl Source {
    /// `text` parsed the way Docker reads an image reference (`ubuntu:24.04`
    /// is an official image of the default registry), with the credentials
    /// the user's Docker config holds for its registry, if any.
    pub fn parse(
        text: &str,
        insecure: bool,
        docker_config: Option<&[u8]>,
    ) -> Result<Source, OciError> {
        let reference: Reference =
            text.parse()
                .map_err(|e: oci_client::ParseError| OciError::BadReference {
                    reference: text.to_string(),
                    why: e.to_string(),
                })?;
        let auth = docker_config
            .and_then(|json| {
                super::auth::credentials(json, reference.registry(), reference.resolve_registry())
            })
            .map_or(RegistryAuth::Anonymous, |(user, pass)| {
                RegistryAuth::Basic(user, pass)
            });
        Ok(Source {
            reference,
            insecure,
            auth,
        })
    }
}

fn client(source: &Source) -> Client {
    // rustls needs a crypto provider: ring, which banger already links
    // (aws-lc would add a C toolchain dependency for one feature).
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = match source.insecure {
        true => ClientProtocol::HttpsExcept(vec![source.reference.registry().to_string()]),
        false => ClientProtocol::Https,
    };
    Client::new(ClientConfig {
        protocol,
        platform_resolver: None,
        connect_timeout: Some(std::time::Duration::from_secs(15)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..ClientConfig::default()
    })
}

/// Fetches the image `source` names into `cache`: its manifest (an index
/// resolved to linux/amd64), config and layers. Layers already cached are
/// not downloaded again.
pub async fn fetch(
    source: &Source,
    cache: &BlobCache,
    progress: &mut dyn Progress,
) -> Result<Fetched, OciError> {
    let client = client(source);
    let whole = source.reference.whole();
    progress.step(&format!("resolve {whole}"));
    let (mut doc, mut digest) = manifest(&client, source, &source.reference).await?;
    let mut reference = source.reference.clone();
    if doc.is_index() {
        let entry = doc
            .pick_amd64()
            .cloned()
            .ok_or_else(|| OciError::NoPlatform {
                reference: whole.clone(),
                offered: doc.platforms(),
            })?;
        progress.note(&format!("index {digest}: linux/amd64 is {}", entry.digest));
        reference = source.reference.clone_with_digest(entry.digest.clone());
        (doc, digest) = manifest(&client, source, &reference).await?;
        if digest != entry.digest {
            return Err(OciError::WrongBlob {
                digest: entry.digest,
                why: format!("the registry sent a manifest with digest {digest}"),
            });
        }
    }
    let config_desc = doc.config.clone().ok_or_else(|| OciError::NotAnImage {
        what: whole.clone(),
    })?;
    let config_path = pull_blob(&client, &reference, cache, &config_desc, progress).await?;
    let config = std::fs::read(&config_path).map_err(OciError::cache(&config_path))?;
    if sha256(&config) != config_desc.digest {
        let _ = std::fs::remove_file(&config_path);
        return Err(OciError::WrongBlob {
            digest: config_desc.digest,
            why: "the cached copy's content differs; pull again".into(),
        });
    }
    let mut layers = Vec::new();
    for (i, layer) in doc.layers.iter().enumerate() {
        progress.step(&format!(
            "layer {}/{} {} ({})",
            i + 1,
            doc.layers.len(),
            short(&layer.digest),
            crate::size::format_size(layer.size.max(0) as u64)
        ));
        let path = pull_blob(&client, &reference, cache, layer, progress).await?;
        layers.push((layer.clone(), path));
    }
    Ok(Fetched {
        source: whole,
        digest,
        config,
        layers,
    })
}

/// The manifest `reference` names, checked against the digest it was asked
/// by (if any) and the digest the registry claims.
async fn manifest(
    client: &Client,
    source: &Source,
    reference: &Reference,
) -> Result<(Document, String), OciError> {
    let (bytes, claimed) = client
        .pull_manifest_raw(reference, &source.auth, &ACCEPTED)
        .await
        .map_err(|e| OciError::Registry {
            reference: reference.whole(),
            source: e,
        })?;
    let actual = sha256(&bytes);
    for expected in [Some(claimed.as_str()), reference.digest()]
        .into_iter()
        .flatten()
    {
        if expected != actual {
            return Err(OciError::WrongBlob {
                digest: expected.to_string(),
                why: format!("the manifest the registry sent has digest {actual}"),
            });
        }
    }
    let doc: Document = serde_json::from_slice(&bytes).map_err(|e| OciError::BadDocument {
        what: format!("the manifest of {}", reference.whole()),
        why: e.to_string(),
    })?;
    Ok((doc, actual))
}

/// Blob `blob` in the cache, downloaded (and checked) if it is not there.
async fn pull_blob(
    client: &Client,
    reference: &Reference,
    cache: &BlobCache,
    blob: &Descriptor,
    progress: &mut dyn Progress,
) -> Result<PathBuf, OciError> {
    if let Some(path) = cache.get(blob)? {
        progress.note(&format!("{} is cached", short(&blob.digest)));
        return Ok(path);
    }
    let began = Instant::now();
    let registry = |e| OciError::Registry {
        reference: reference.whole(),
        source: e,
    };
    let mut stream = client
        .pull_blob_stream(reference, blob.digest.as_str())
        .await
        .map_err(registry)?
        .stream;
    let mut writer = cache.writer(blob)?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
            {
                // The client checks the digest as the last bytes arrive.
                Some(wrong) => OciError::WrongBlob {
                    digest: blob.digest.clone(),
                    why: wrong.to_string(),
                },
                None => OciError::Download {
                    digest: blob.digest.clone(),
                    source: e,
                },
            }
        })?;
        writer.write(&chunk)?;
    }
    let path = writer.commit()?;
    let secs = began.elapsed().as_secs_f64().max(1e-3);
    progress.note(&format!(
        "{} downloaded: {} in {:.1} s ({:.1} MB/s)",
        short(&blob.digest),
        crate::size::format_size(blob.size.max(0) as u64),
        secs,
        blob.size.max(0) as f64 / 1e6 / secs
    ));
    Ok(path)
}

/// `sha256:0123456789ab`, enough to tell layers apart.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// Pushes image `tag` of the OCI layout at `layout` (as [`super::export`]
/// writes it) to the reference `to` names: its blobs, then its manifest.
/// The manifest's digest.
pub async fn push(
    to: &Source,
    layout: &Path,
    tag: &str,
    progress: &mut dyn Progress,
) -> Result<String, OciError> {
    let client = client(to);
    let registry = |e| OciError::Registry {
        reference: to.reference.whole(),
        source: e,
    };
    client
        .store_auth_if_needed(to.reference.resolve_registry(), &to.auth)
        .await;
    let index: Document = read_json(&layout.join("index.json"))?;
    let entry = index
        .manifests
        .iter()
        .flatten()
        .find(|m| {
            m.annotations
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                .is_some_and(|name| name == tag)
        })
        .ok_or_else(|| OciError::NotAnImage {
            what: format!("{} (tag {tag})", layout.display()),
        })?;
    let blob_path = |digest: &str| -> Result<PathBuf, OciError> {
        let hex = super::manifest::digest_hex(digest).ok_or_else(|| OciError::BadDigest {
            digest: digest.to_string(),
        })?;
        Ok(layout.join("blobs/sha256").join(hex))
    };
    let manifest_bytes =
        std::fs::read(blob_path(&entry.digest)?).map_err(OciError::read("the manifest"))?;
    let manifest: Document =
        serde_json::from_slice(&manifest_bytes).map_err(|e| OciError::BadDocument {
            what: entry.digest.clone(),
            why: e.to_string(),
        })?;
    let config = manifest
        .config
        .clone()
        .ok_or_else(|| OciError::NotAnImage {
            what: entry.digest.clone(),
        })?;
    for blob in manifest.layers.iter().chain([&config]) {
        progress.step(&format!(
            "push {} ({})",
            short(&blob.digest),
            crate::size::format_size(blob.size.max(0) as u64)
        ));
        let exists = client
            .blob_exists(&to.reference, &blob.digest)
            .await
            .unwrap_or(false);
        if exists {
            progress.note(&format!("{} is already there", short(&blob.digest)));
            continue;
        }
        // Streamed from the file in chunks (PATCH requests), never whole.
        let path = blob_path(&blob.digest)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(OciError::read(&path))?;
        client
            .push_blob_stream(
                &to.reference,
                chunks(file),
                &blob.digest,
                Some(blob.size.max(0) as u64),
            )
            .await
            .map_err(registry)?;
    }
    progress.step("push manifest");
    client
        .push_manifest_raw(
            &to.reference,
            manifest_bytes.clone(),
            http::HeaderValue::from_static(super::manifest::OCI_MANIFEST),
        )
        .await
        .map_err(registry)?;
    Ok(sha256(&manifest_bytes))
}

/// A file as a stream of 4 MiB chunks; it ends at the first error.
fn chunks(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = oci_client::errors::Result<hyper::body::Bytes>> + Send + 'static
{
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 4 << 20];
        match tokio::io::AsyncReadExt::read(&mut file, &mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(hyper::body::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e.into()), None)),
        }
    })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, OciError> {
    let bytes = std::fs::read(path).map_err(OciError::read(path))?;
    serde_json::from_slice(&bytes).map_err(|e| OciError::BadDocument {
        what: path.display().to_string(),
        why: e.to_string(),
    })
}
