//! How a failure leaves the daemon: an HTTP status and the JSON cause
//! chain.

use std::error::Error;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::model::VmState;
use crate::rpc::api::ErrorBody;
use crate::store::StoreError;

/// Runs `op` in a task of its own, so it completes even if the client
/// hangs up mid-request, and answers with its result as JSON.
pub async fn detached<T, E>(
    op: impl std::future::Future<Output = Result<T, E>> + Send + 'static,
) -> Result<Json<T>, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    match tokio::spawn(op).await {
        Ok(result) => result.map(Json).map_err(Into::into),
        Err(join) => Err(ApiError::message(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the operation failed inside bangerd: {join}"),
        )),
    }
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// `err` and its sources, outermost first.
    pub fn new(status: StatusCode, err: &(dyn Error + 'static)) -> ApiError {
        let mut chain = vec![err.to_string()];
        let mut source = err.source();
        while let Some(e) = source {
            chain.push(e.to_string());
            source = e.source();
        }
        ApiError {
            status,
            body: ErrorBody {
                error: chain,
                hint: None,
            },
        }
    }

    /// A plain message with no cause.
    pub fn message(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: vec![message.into()],
                hint: None,
            },
        }
    }

    /// The error and its causes, outermost first.
    pub fn into_chain(self) -> Vec<String> {
        self.body.error
    }

    /// Adds what the user can do about it.
    pub fn hint(mut self, hint: impl Into<String>) -> ApiError {
        self.body.hint = Some(hint.into());
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        let status = match err {
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::Conflict { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %err, "store failure");
        }
        ApiError::new(status, &err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<crate::network::NetworkError> for ApiError {
    fn from(err: crate::network::NetworkError) -> ApiError {
        crate::vm::VmError::from(err).into()
    }
}

impl From<crate::vm::VmError> for ApiError {
    fn from(err: crate::vm::VmError) -> ApiError {
        use crate::vm::VmError as E;
        let (status, hint) = match &err {
            E::Store(StoreError::NotFound { .. }) => (
                StatusCode::NOT_FOUND,
                Some("`banger vm list` shows your VMs".to_string()),
            ),
            E::Store(StoreError::Conflict { .. }) => (
                StatusCode::CONFLICT,
                Some("pick another name, or delete the old VM".into()),
            ),
            E::UnknownImage(_) => (
                StatusCode::NOT_FOUND,
                Some(
                    "`banger image list` shows images; `banger image import NAME PATH` adds one"
                        .into(),
                ),
            ),
            E::WrongState { action, state, .. } => (
                StatusCode::CONFLICT,
                Some(match (*action, state) {
                    (_, VmState::Paused) => {
                        "it is paused: `banger vm resume NAME` runs it again".into()
                    }
                    (_, VmState::Suspended) => {
                        "it is suspended: `banger vm start NAME` restores it (`--cold` boots it afresh)"
                            .into()
                    }
                    ("start", _) => {
                        "it is already running: `banger vm ssh NAME`, or `banger vm restart NAME`"
                            .into()
                    }
                    _ => "start it first: `banger vm start NAME`".into(),
                }),
            ),
            E::Snapshot { .. } => (
                StatusCode::CONFLICT,
                Some("`banger vm start --cold NAME` discards the snapshot and boots from the disks".into()),
            ),
            E::Vmm(crate::vmm::VmmError::Unavailable(..)) => (
                StatusCode::BAD_REQUEST,
                Some("`banger doctor` shows which VMMs this host can run".into()),
            ),
            // The host's configuration says what to change; nothing the request did.
            E::BadConfig(_)
            | E::NoFreeAddress
            | E::Networking(crate::network::NetworkError::Config(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, None)
            }
            // The host is not set up to run VMs yet: nothing the request did.
            E::Bundle(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("`banger doctor` checks the runtime bundle and says how to get one".into()),
            ),
            E::Image(e) => return ApiError::from_image(e, &err),
            e if e.is_user_error() => (StatusCode::BAD_REQUEST, None),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(
                    "the daemon log has the details: `banger daemon status` shows where it is"
                        .into(),
                ),
            ),
        };
        if status.is_server_error() {
            tracing::error!(error = %err, "VM operation failed");
        }
        let api = ApiError::new(status, &err);
        match hint {
            Some(h) => api.hint(h),
            None => api,
        }
    }
}

impl From<crate::image::ImageError> for ApiError {
    fn from(err: crate::image::ImageError) -> ApiError {
        ApiError::from_image(&err, &err)
    }
}

impl From<crate::image::oci::OciError> for ApiError {
    fn from(err: crate::image::oci::OciError) -> ApiError {
        use crate::image::oci::OciError as E;
        match &err {
            E::Image(image) => ApiError::from_image(image, &err),
            E::BadReference { .. } | E::ExportTarget { .. } | E::NoName { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, &err)
            }
            E::Registry { .. } | E::Download { .. } => ApiError::new(StatusCode::BAD_GATEWAY, &err),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, &err),
        }
    }
}

impl ApiError {
    fn from_image(image: &crate::image::ImageError, err: &(dyn Error + 'static)) -> ApiError {
        use crate::image::ImageError as E;
        let status = match image {
            E::Store(StoreError::NotFound { .. }) => StatusCode::NOT_FOUND,
            E::Store(StoreError::Conflict { .. } | StoreError::ImageInUse { .. }) => {
                StatusCode::CONFLICT
            }
            E::BadName(_)
            | E::NoSource { .. }
            | E::NotExt4 { .. }
            | E::NotExtFs { .. }
            | E::Read { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, err)
    }
}
