//! What a handler takes from a request, checked: names in the path, JSON
//! bodies, and the body itself (bounded in size and time). Every refusal is
//! an [`ApiError`], so a client always gets the API's JSON error body, never
//! axum's plain-text rejections.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, HttpBody};
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::rpc::{NameError, check_image_name, check_vm_name};

/// The most a request body may hold: every request is a small JSON document.
pub const BODY_LIMIT: usize = 1 << 20;

/// How long a client may take to send a body once its headers are in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a rejection's text goes back to the client: enough to say
/// what was wrong, without echoing a megabyte of what was sent.
const REJECTION_CHARS: usize = 500;

/// A VM name from the path (`/v1/vms/{name}`), checked.
pub struct VmName(pub String);

/// An image name from the path (`/v1/images/{name}`), checked.
pub struct ImageName(pub String);

/// Each name type is the path's one `{name}`, refused unless its check
/// passes.
macro_rules! checked_path_name {
    ($($name:ident: $check:path),*) => {$(
        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
                let name = path_name(parts, state).await?;
                $check(&name).map_err(bad_name)?;
                Ok($name(name))
            }
        }
    )*};
}

checked_path_name!(VmName: check_vm_name, ImageName: check_image_name);

/// The one `{name}` of the path, percent-decoded.
async fn path_name<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<String, ApiError> {
    match Path::<String>::from_request_parts(parts, state).await {
        Ok(Path(name)) => Ok(name),
        Err(rejection) => Err(path_rejection(&rejection)),
    }
}

fn path_rejection(rejection: &PathRejection) -> ApiError {
    ApiError::message(rejection.status(), clip(&rejection.body_text()))
}

fn bad_name(err: NameError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, &err)
}

/// A JSON request body of type `T`. As `Option<JsonBody<T>>`, a request
/// without a `Content-Type` has none.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match <Json<T> as FromRequest<S>>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, ApiError> {
        match <Json<T> as OptionalFromRequest<S>>::from_request(request, state).await {
            Ok(value) => Ok(value.map(|Json(v)| JsonBody(v))),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

/// An optional JSON request body of type `T`: its default when the
/// request has none (no `Content-Type`).
pub struct BodyOrDefault<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for BodyOrDefault<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let body = <JsonBody<T> as OptionalFromRequest<S>>::from_request(request, state).await?;
        Ok(BodyOrDefault(body.map(|JsonBody(b)| b).unwrap_or_default()))
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    ApiError::message(rejection.status(), clip(&rejection.body_text()))
        .hint("banger sends valid requests: the client and daemon may be different versions (`banger version`)")
}

/// Middleware: reads the whole request body before the handler runs, so a
/// body larger than [`BODY_LIMIT`] is refused with 413 and one that does
/// not arrive within [`BODY_TIMEOUT`] with 408, whatever the route.
pub async fn buffer_body(request: Request, next: Next) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    // A declared length over the limit is refused before reading any of it.
    if body.size_hint().lower() > BODY_LIMIT as u64 {
        return Err(too_large());
    }
    let read = Limited::new(body, BODY_LIMIT).collect();
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(ApiError::message(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            ));
        }
        Err(_) => {
            return Err(ApiError::message(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
}

fn too_large() -> ApiError {
    ApiError::message(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {} KiB", BODY_LIMIT >> 10),
    )
}

/// `text` cut to [`REJECTION_CHARS`] characters.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(REJECTION_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(REJECTION_CHARS + 10);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), REJECTION_CHARS + 1);
        assert!(clipped.ends_with('…'));
    }
}
