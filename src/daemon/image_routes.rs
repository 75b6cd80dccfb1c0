//! `/v1/images`: list, show, import, build, delete.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Daemon;
use super::error::{ApiError, detached};
use super::extract::{BodyOrDefault, ImageName, JsonBody};
use crate::rpc::api::{
    BuildImage, ExportImage, ImageBuilt, ImageDetails, ImageSummary, ImportImage, Progress,
    PullImage, PushImage, Pushed, TemplateInfo, WarmImage,
};
use crate::store::ImageRecord;

pub async fn list(State(daemon): State<Arc<Daemon>>) -> Result<Json<Vec<ImageSummary>>, ApiError> {
    let images = daemon.store().list_images()?;
    let registry = &daemon.images;
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
    let templates = daemon.vms.templates(&image);
    Ok(ImageDetails {
        templates,
        ..daemon.images.details(image)?
    })
}

pub async fn show(
    State(daemon): State<Arc<Daemon>>,
    ImageName(name): ImageName,
) -> Result<Json<ImageDetails>, ApiError> {
    let image = daemon.store().get_image(&name)?;
    Ok(Json(details(&daemon, image)?))
}

/// Boots the image once and keeps its memory as a warm template.
pub async fn warm(
    State(daemon): State<Arc<Daemon>>,
    ImageName(name): ImageName,
    BodyOrDefault(WarmImage { vcpus, memory_mib }): BodyOrDefault<WarmImage>,
) -> Result<Json<TemplateInfo>, ApiError> {
    let vms = daemon.vms.clone();
    detached(async move { vms.warm_image(&name, vcpus, memory_mib).await }).await
}

pub async fn import(
    State(daemon): State<Arc<Daemon>>,
    JsonBody(req): JsonBody<ImportImage>,
) -> Result<Json<ImageDetails>, ApiError> {
    let images = daemon.images.clone();
    let Json(image) = detached(async move { images.import(&req.name, &req.path).await }).await?;
    Ok(Json(details(&daemon, image)?))
}

/// Starts a build and streams its progress as NDJSON, one event a line.
/// The build runs in a task of its own; the client hanging up (Ctrl-C)
/// cancels it, and the build then undoes everything it made. A request
/// that cannot be built as asked is refused before anything starts.
pub async fn build(
    State(daemon): State<Arc<Daemon>>,
    JsonBody(req): JsonBody<BuildImage>,
) -> Result<Response, ApiError> {
    crate::builder::check_request(&req).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, &e))?;
    let (tx, rx) = crate::builder::progress_channel();
    let (vms, images) = (daemon.vms.clone(), daemon.images.clone());
    tokio::spawn(async move {
        let (reporter, cancelled) = crate::builder::Reporter::new(tx);
        crate::builder::build(vms, images, req, reporter, cancelled).await;
    });
    Ok(ndjson_stream(rx))
}

/// Pulls (or imports) an OCI image and streams its progress as NDJSON,
/// like a build. The client hanging up cancels it; nothing is left.
pub async fn pull(
    State(daemon): State<Arc<Daemon>>,
    JsonBody(req): JsonBody<PullImage>,
) -> Result<Response, ApiError> {
    if let Some(name) = &req.name {
        crate::rpc::check_image_name(name)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, &e))?;
    }
    let (tx, rx) = crate::builder::progress_channel();
    let images = daemon.images.clone();
    let cache_dir = daemon.paths.cache_dir.clone();
    let shown = daemon.clone();
    tokio::spawn(async move {
        let (mut reporter, cancelled) = crate::builder::Reporter::new(tx);
        let started = std::time::Instant::now();
        let pulled = tokio::select! {
            pulled = crate::image::oci::pull(&images, &cache_dir, &req.source, req.name.as_deref(), &mut reporter) => pulled,
            () = cancelled.wait() => return,
        };
        reporter.finish();
        let event = match pulled.map(|p| (details(&shown, p.image), p.cached)) {
            Ok((Ok(image), cached)) => Progress::Done {
                image: Box::new(ImageBuilt {
                    pulled_from: image.oci_reference.clone(),
                    image,
                    cached,
                    total_ms: started.elapsed().as_millis() as u64,
                    log: None,
                    timings: std::mem::take(&mut reporter.timings),
                }),
            },
            Ok((Err(e), _)) => failed(&reporter, e.into_chain()),
            Err(e) => {
                tracing::warn!(error = %e, "image pull failed");
                failed(&reporter, error_chain(&e))
            }
        };
        reporter.end(event);
    });
    Ok(ndjson_stream(rx))
}

/// Writes image `name` into a directory in a shape other platforms take.
pub async fn export(
    State(daemon): State<Arc<Daemon>>,
    ImageName(name): ImageName,
    JsonBody(req): JsonBody<ExportImage>,
) -> Result<Json<ExportImage>, ApiError> {
    let bundle = daemon.vms.bundle()?;
    let images = daemon.images.clone();
    detached(async move {
        let mut log = crate::image::oci::Logged(name.clone());
        crate::image::oci::export_image(&images, &bundle, &name, req.format, &req.dir, &mut log)
            .await
            .map(|()| req)
    })
    .await
}

/// Pushes image `name` to a registry as an OCI image (and its kernel).
pub async fn push(
    State(daemon): State<Arc<Daemon>>,
    ImageName(name): ImageName,
    JsonBody(req): JsonBody<PushImage>,
) -> Result<Json<Pushed>, ApiError> {
    let bundle = daemon.vms.bundle()?;
    let images = daemon.images.clone();
    let cache_dir = daemon.paths.cache_dir.clone();
    detached(async move {
        let mut log = crate::image::oci::Logged(name.clone());
        let (reference, kernel_reference) = crate::image::oci::push_image(
            &images,
            &bundle,
            &cache_dir,
            &name,
            &req.reference,
            req.insecure,
            &mut log,
        )
        .await?;
        Ok::<_, crate::image::oci::OciError>(Pushed {
            reference,
            kernel_reference,
        })
    })
    .await
}

fn failed(reporter: &crate::builder::Reporter, error: Vec<String>) -> Progress {
    Progress::Failed {
        step: reporter.current_step(),
        error,
        hint: None,
        output_tail: Vec::new(),
        log: None,
    }
}

/// `err` and its sources, outermost first.
fn error_chain(err: &dyn std::error::Error) -> Vec<String> {
    let mut chain = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        chain.push(e.to_string());
        source = e.source();
    }
    chain
}

/// The events of `rx` as an NDJSON response, one event a line.
fn ndjson_stream(rx: crate::builder::ProgressRx) -> Response {
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(ndjson_line(&event)), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// `event` as one line of the stream. Only a path that is not UTF-8 (in the
/// daemon's own directories) could fail to encode; the client then gets a
/// `failed` event saying so rather than a stream cut short.
fn ndjson_line(event: &crate::rpc::api::Progress) -> Vec<u8> {
    let mut line = serde_json::to_vec(event).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot encode a progress event");
        serde_json::json!({
            "event": "failed",
            "step": null,
            "error": ["bangerd cannot encode a progress event", e.to_string()],
            "hint": "the daemon log has the details",
            "output_tail": [],
            "log": null,
        })
        .to_string()
        .into_bytes()
    });
    line.push(b'\n');
    line
}

pub async fn delete(
    State(daemon): State<Arc<Daemon>>,
    ImageName(name): ImageName,
) -> Result<Json<serde_json::Value>, ApiError> {
    daemon.images.delete(&name).await?;
    Ok(Json(serde_json::json!({ "deleted": name })))
}
