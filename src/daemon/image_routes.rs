//! `/v1/images`: list, show, import, build, delete.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::Response;

use super::Daemon;
use super::error::{ApiError, detached};
use crate::rpc::api::{BuildImage, ImageDetails, ImageSummary, ImportImage};
use crate::store::ImageRecord;

pub async fn list(State(daemon): State<Arc<Daemon>>) -> Result<Json<Vec<ImageSummary>>, ApiError> {
    let images = daemon.store().list_images()?;
    let registry = daemon.vms.images();
    Ok(Json(
        images
            .into_iter()
            .map(|image| ImageSummary {
                base: registry.info(&image).and_then(|i| i.base),
                package_count: registry.packages(&image).map(|p| p.len()),
                name: image.name,
                rootfs: image.rootfs_path,
                size_bytes: image.size_bytes,
                created_at: image.created_at,
            })
            .collect(),
    ))
}

fn details(daemon: &Daemon, image: ImageRecord) -> Result<ImageDetails, ApiError> {
    Ok(daemon.vms.images().details(daemon.vms.store(), image)?)
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

/// Starts a build and streams its progress as NDJSON, one event a line.
/// The build runs in a task of its own; the client hanging up (Ctrl-C)
/// cancels it, and the build then undoes everything it made.
pub async fn build(State(daemon): State<Arc<Daemon>>, Json(req): Json<BuildImage>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let vms = daemon.vms.clone();
    tokio::spawn(async move {
        let (reporter, cancelled) = crate::builder::Reporter::new(tx);
        crate::builder::build(vms, req, reporter, cancelled).await;
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).expect("progress events serialize");
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(line), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .expect("a response with a static header")
}

pub async fn delete(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    daemon
        .vms
        .images()
        .delete(daemon.vms.store(), &name)
        .await?;
    Ok(Json(serde_json::json!({ "deleted": name })))
}
