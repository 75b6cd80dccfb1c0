//! Image records: a base rootfs and the kernel that boots it.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde::Serialize;

use super::error::{Taken, conflict, one_named};
use super::{Store, StoreError};

/// What it takes to register an image.
#[derive(Debug, Clone)]
pub struct NewImage {
    /// Unique among images; what `--image` names.
    pub name: String,
    /// The base rootfs each VM's disk is cloned from.
    pub rootfs_path: PathBuf,
    /// The kernel to boot it with; `None` uses the runtime bundle's.
    pub kernel_path: Option<PathBuf>,
    /// Size of the rootfs file, when known, for listings.
    pub size_bytes: Option<u64>,
    /// The digest of a built image's inputs, so a repeat build is found
    /// without booting; `None` for imported images.
    pub build_key: Option<String>,
}

/// An image as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRecord {
    /// Row id, which VMs refer to.
    pub id: i64,
    /// Unique among images; what `--image` names.
    pub name: String,
    /// The base rootfs each VM's disk is cloned from.
    pub rootfs_path: PathBuf,
    /// The kernel to boot it with; `None` uses the runtime bundle's.
    pub kernel_path: Option<PathBuf>,
    /// Size of the rootfs file, when known, for listings.
    pub size_bytes: Option<u64>,
    /// The digest of a built image's inputs; `None` for imported images.
    pub build_key: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

const SELECT_IMAGE: &str =
    "SELECT id, name, rootfs_path, kernel_path, size_bytes, build_key, created_at FROM images";

fn image_from_row(row: &Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        id: row.get("id")?,
        name: row.get("name")?,
        rootfs_path: PathBuf::from(row.get::<_, String>("rootfs_path")?),
        kernel_path: row
            .get::<_, Option<String>>("kernel_path")?
            .map(PathBuf::from),
        size_bytes: row.get("size_bytes")?,
        build_key: row.get("build_key")?,
        created_at: row.get("created_at")?,
    })
}

/// The image named `name`, or `NotFound`.
fn image_named(conn: &Connection, name: &str) -> Result<ImageRecord, StoreError> {
    one_named(
        conn,
        "image",
        &format!("{SELECT_IMAGE} WHERE name = ?1"),
        name,
        image_from_row,
    )
}

/// The row id of the image named `name`, or `NotFound`.
pub(super) fn image_id(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    let sql = "SELECT id FROM images WHERE name = ?1";
    one_named(conn, "image", sql, name, |row| row.get(0))
}

/// `path` as text, which is how SQLite keeps it.
fn path_text(path: &Path) -> Result<&str, StoreError> {
    path.to_str().ok_or_else(|| StoreError::NonUtf8Path {
        path: path.to_path_buf(),
    })
}

impl NewImage {
    /// Its rootfs and kernel paths as the text SQLite keeps.
    fn paths_as_text(&self) -> Result<(&str, Option<&str>), StoreError> {
        let kernel_path = self.kernel_path.as_deref().map(path_text).transpose()?;
        Ok((path_text(&self.rootfs_path)?, kernel_path))
    }
}

impl Store {
    /// Registers an image. A taken name is a [`StoreError::Conflict`].
    pub fn insert_image(&mut self, image: &NewImage) -> Result<ImageRecord, StoreError> {
        let (rootfs_path, kernel_path) = image.paths_as_text()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO images (name, rootfs_path, kernel_path, size_bytes, build_key, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, unixepoch())",
            params![
                image.name,
                rootfs_path,
                kernel_path,
                image.size_bytes,
                image.build_key
            ],
        )
        .map_err(|err| {
            conflict(err, |what| {
                (what == Taken::ImageName).then(|| image.name.clone())
            })
        })?;
        let record = image_named(&tx, &image.name)?;
        tx.commit()?;
        Ok(record)
    }

    /// Points image `image.name` at a new version of its files, in one
    /// transaction; VMs made from it keep referring to it. Returns the
    /// record as it was, so the caller can remove the old files.
    pub fn replace_image(&mut self, image: &NewImage) -> Result<ImageRecord, StoreError> {
        let (rootfs_path, kernel_path) = image.paths_as_text()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old = image_named(&tx, &image.name)?;
        tx.execute(
            "UPDATE images SET rootfs_path = ?2, kernel_path = ?3, size_bytes = ?4,
                               build_key = ?5, created_at = unixepoch()
             WHERE id = ?1",
            params![
                old.id,
                rootfs_path,
                kernel_path,
                image.size_bytes,
                image.build_key
            ],
        )?;
        tx.commit()?;
        Ok(old)
    }

    /// The image built from the inputs with digest `key`, if any.
    pub fn image_by_build_key(&self, key: &str) -> Result<Option<ImageRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("{SELECT_IMAGE} WHERE build_key = ?1 ORDER BY id LIMIT 1"),
                [key],
                image_from_row,
            )
            .optional()?)
    }

    /// Every image, by name.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("{SELECT_IMAGE} ORDER BY name"))?;
        let images = stmt
            .query_map([], image_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(images)
    }

    /// The image named `name`.
    pub fn get_image(&self, name: &str) -> Result<ImageRecord, StoreError> {
        image_named(&self.conn, name)
    }

    /// Forgets an image no VM uses ([`StoreError::ImageInUse`] otherwise).
    /// Returns what was deleted, so the caller can remove its files.
    pub fn delete_image(&mut self, name: &str) -> Result<ImageRecord, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = image_named(&tx, name)?;
        let in_use: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM vms WHERE image_id = ?1)",
            [record.id],
            |row| row.get(0),
        )?;
        if in_use {
            return Err(StoreError::ImageInUse {
                name: name.to_string(),
            });
        }
        tx.execute("DELETE FROM images WHERE id = ?1", [record.id])?;
        tx.commit()?;
        Ok(record)
    }
}
