//! `/v1/images`: list, show, import, delete.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};

use super::Daemon;
use super::error::{ApiError, detached};
use crate::rpc::api::{ImageDetails, ImageSummary, ImportImage};
use crate::store::ImageRecord;

pub async fn list(State(daemon): State<Arc<Daemon>>) -> Result<Json<Vec<ImageSummary>>, ApiError> {
    let images = daemon.store().list_images()?;
    Ok(Json(
        images
            .into_iter()
            .map(|image| ImageSummary {
                name: image.name,
                rootfs: image.rootfs_path,
                size_bytes: image.size_bytes,
                created_at: image.created_at,
            })
            .collect(),
    ))
}

fn details(daemon: &Daemon, image: ImageRecord) -> Result<ImageDetails, ApiError> {
    let used_by = daemon
        .store()
        .list_vms()?
        .into_iter()
        .filter(|vm| vm.image.as_deref() == Some(image.name.as_str()))
        .map(|vm| vm.name)
        .collect();
    Ok(ImageDetails {
        packages: daemon.vms.images().packages(&image.name),
        name: image.name,
        rootfs: image.rootfs_path,
        size_bytes: image.size_bytes,
        created_at: image.created_at,
        used_by,
    })
}

pub async fn show(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> Result<Json<ImageDetails>, ApiError> {
    let image = daemon.store().get_image(&name)?;
    Ok(Json(details(&daemon, image)?))
}

pub async fn import(
    State(daemon): State<Arc<Daemon>>,
    Json(req): Json<ImportImage>,
) -> Result<Json<ImageDetails>, ApiError> {
    let vms = daemon.vms.clone();
    let Json(image) =
        detached(async move { vms.images().import(vms.store(), &req.name, &req.path).await })
            .await?;
    Ok(Json(details(&daemon, image)?))
}

pub async fn delete(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    daemon.vms.images().delete(daemon.vms.store(), &name)?;
    Ok(Json(serde_json::json!({ "deleted": name })))
}
