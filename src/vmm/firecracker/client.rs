//! A typed client for Firecracker's API: HTTP/1.1 over the VMM's unix
//! socket, one connection per request. Firecracker answers 204 with no
//! body on success and 4xx/5xx with `{"fault_message": ...}` on failure.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::FirecrackerError;

use super::models::{
    ActionType, ApiErrorBody, BootSource, Drive, InstanceActionInfo, InstanceInfo, Logger,
    MachineConfiguration, NetworkInterface, SnapshotCreateParams, SnapshotLoadParams, VmRunState,
    VmStateChange, Vsock,
};

/// The largest answer read from Firecracker's API (its biggest, the VM
/// config, is a few KiB).
const MAX_ANSWER: usize = 1 << 20;

/// How long one request may take before it counts as unanswered. Every
/// call is local and answered in milliseconds; this only bounds a hung VMM.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `InstanceStart` may take (tens of ms on a quiet host).
pub const INSTANCE_START_TIMEOUT: Duration = Duration::from_secs(60);

/// One failed API request; every variant names the request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing answers on the socket (not there yet, or the VMM is gone).
    #[error("cannot connect to {socket}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The request could not be built (e.g. an id that is not valid in a path).
    #[error("invalid request {method} {path}")]
    InvalidRequest {
        method: Method,
        path: String,
        #[source]
        source: hyper::http::Error,
    },
    /// The body could not be encoded (not expected for the models' plain structs).
    #[error("cannot encode the body of {method} {path}")]
    Encode {
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// The HTTP exchange broke off.
    #[error("{method} {path} failed")]
    Http {
        method: Method,
        path: String,
        #[source]
        source: hyper::Error,
    },
    /// The answer was larger than any Firecracker sends (a compromised VMM).
    #[error("{method} {path}: the answer is larger than {limit} bytes")]
    TooLarge {
        method: Method,
        path: String,
        limit: usize,
    },
    /// No answer within the request timeout.
    #[error("{method} {path} got no answer within {timeout:?}")]
    Timeout {
        method: Method,
        path: String,
        timeout: Duration,
    },
    /// Firecracker refused the request and said why.
    #[error("{method} {path} refused (HTTP {status}): {fault_message}")]
    Refused {
        method: Method,
        path: String,
        status: StatusCode,
        fault_message: String,
    },
    /// A success answer whose body is not what the spec describes.
    #[error("{method} {path}: unexpected answer (HTTP {status})")]
    Decode {
        method: Method,
        path: String,
        status: StatusCode,
        #[source]
        source: serde_json::Error,
    },
}

impl ApiError {
    /// The request path (`/drives/rootfs`), or `None` when the socket itself failed.
    pub fn path(&self) -> Option<&str> {
        match self {
            ApiError::Connect { .. } => None,
            ApiError::InvalidRequest { path, .. }
            | ApiError::Encode { path, .. }
            | ApiError::Http { path, .. }
            | ApiError::TooLarge { path, .. }
            | ApiError::Timeout { path, .. }
            | ApiError::Refused { path, .. }
            | ApiError::Decode { path, .. } => Some(path),
        }
    }

    /// Firecracker's `fault_message`, when it refused the request.
    pub fn fault_message(&self) -> Option<&str> {
        match self {
            ApiError::Refused { fault_message, .. } => Some(fault_message),
            _ => None,
        }
    }

    /// The HTTP status Firecracker answered with, when it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Refused { status, .. } | ApiError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A handle on one Firecracker's API socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(self, timeout: Duration) -> Client {
        Client { timeout, ..self }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /`: id, state and version of the VMM.
    pub async fn describe_instance(&self) -> Result<InstanceInfo, FirecrackerError> {
        self.get("/")
            .await
            .map_err(FirecrackerError::DescribeInstance)
    }

    /// `PUT /logger`. The log file must exist.
    pub async fn put_logger(&self, logger: &Logger) -> Result<(), FirecrackerError> {
        self.put("/logger", logger)
            .await
            .map_err(FirecrackerError::PutLogger)
    }

    /// `PUT /machine-config`.
    pub async fn put_machine_config(
        &self,
        config: &MachineConfiguration,
    ) -> Result<(), FirecrackerError> {
        self.put("/machine-config", config)
            .await
            .map_err(FirecrackerError::PutMachineConfig)
    }

    /// `PUT /boot-source`.
    pub async fn put_boot_source(&self, boot: &BootSource) -> Result<(), FirecrackerError> {
        self.put("/boot-source", boot)
            .await
            .map_err(FirecrackerError::PutBootSource)
    }

    /// `PUT /drives/{drive_id}`, the id taken from `drive`.
    pub async fn put_drive(&self, drive: &Drive) -> Result<(), FirecrackerError> {
        let path = format!("/drives/{}", drive.drive_id);
        self.put(&path, drive)
            .await
            .map_err(|source| FirecrackerError::PutDrive {
                drive_id: drive.drive_id.clone(),
                source,
            })
    }

    /// `PUT /network-interfaces/{iface_id}`, the id taken from `iface`.
    pub async fn put_network_interface(
        &self,
        iface: &NetworkInterface,
    ) -> Result<(), FirecrackerError> {
        let path = format!("/network-interfaces/{}", iface.iface_id);
        self.put(&path, iface)
            .await
            .map_err(|source| FirecrackerError::PutNetworkInterface {
                iface_id: iface.iface_id.clone(),
                source,
            })
    }

    /// `PUT /vsock`.
    pub async fn put_vsock(&self, vsock: &Vsock) -> Result<(), FirecrackerError> {
        self.put("/vsock", vsock)
            .await
            .map_err(FirecrackerError::PutVsock)
    }

    /// `PUT /actions` `InstanceStart`: boots the configured machine. Firecracker
    /// answers once the vCPUs run, not when the guest has booted.
    pub async fn instance_start(&self) -> Result<(), FirecrackerError> {
        // Loading the kernel and initrd can wait on a host busy writing
        // back (a nested host under software emulation took over 10 s).
        self.clone()
            .with_timeout(INSTANCE_START_TIMEOUT)
            .action(ActionType::InstanceStart)
            .await
            .map_err(FirecrackerError::StartInstance)
    }

    /// `PUT /actions` `SendCtrlAltDel`: asks a running guest to shut down.
    pub async fn send_ctrl_alt_del(&self) -> Result<(), FirecrackerError> {
        self.action(ActionType::SendCtrlAltDel)
            .await
            .map_err(FirecrackerError::SendCtrlAltDel)
    }

    /// `PATCH /vm`: pauses or resumes the running microVM.
    pub async fn set_vm_state(&self, state: VmRunState) -> Result<(), FirecrackerError> {
        self.send(Method::PATCH, "/vm", &VmStateChange { state })
            .await
            .map_err(FirecrackerError::SetVmState)
    }

    /// `PUT /snapshot/create` of a paused VM. It takes as long as writing
    /// the guest's memory does: call it on a client [`Client::with_timeout`].
    pub async fn create_snapshot(
        &self,
        params: &SnapshotCreateParams,
    ) -> Result<(), FirecrackerError> {
        self.put("/snapshot/create", params)
            .await
            .map_err(FirecrackerError::CreateSnapshot)
    }

    /// `PUT /snapshot/load` into this fresh process.
    pub async fn load_snapshot(&self, params: &SnapshotLoadParams) -> Result<(), FirecrackerError> {
        self.put("/snapshot/load", params)
            .await
            .map_err(FirecrackerError::LoadSnapshot)
    }

    async fn action(&self, action_type: ActionType) -> Result<(), ApiError> {
        self.put("/actions", &InstanceActionInfo { action_type })
            .await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let (status, bytes) = self.request(Method::GET, path, None).await?;
        serde_json::from_slice(&bytes).map_err(|source| ApiError::Decode {
            method: Method::GET,
            path: path.to_owned(),
            status,
            source,
        })
    }

    async fn put<B: Serialize>(&self, path: &str, body: &B) -> Result<(), ApiError> {
        self.send(Method::PUT, path, body).await
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<(), ApiError> {
        let body = serde_json::to_vec(body).map_err(|source| ApiError::Encode {
            method: method.clone(),
            path: path.to_owned(),
            source,
        })?;
        self.request(method, path, Some(body)).await?;
        Ok(())
    }

    /// Sends one request within the timeout; a success status gives the body,
    /// anything else the `fault_message`.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let exchange = self.exchange(method.clone(), path, body);
        let (status, bytes) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer?,
            Err(_) => {
                return Err(ApiError::Timeout {
                    method,
                    path: path.to_owned(),
                    timeout: self.timeout,
                });
            }
        };
        if status.is_success() {
            return Ok((status, bytes));
        }
        let fault_message = match serde_json::from_slice::<ApiErrorBody>(&bytes) {
            Ok(body) => body.fault_message,
            Err(_) if bytes.is_empty() => String::from("(no fault_message)"),
            Err(_) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        };
        tracing::debug!(%method, path, %status, fault_message, "firecracker refused a request");
        Err(ApiError::Refused {
            method,
            path: path.to_owned(),
            status,
            fault_message,
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let stream = crate::vmm::vmm_io::connect_control(&self.socket)
            .await
            .map_err(|source| ApiError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let http = |source| ApiError::Http {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        // The connection task ends once the answer is read and the sender is
        // dropped; its errors surface through `send_request`.
        tokio::spawn(conn);

        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|source| ApiError::InvalidRequest {
                method: method.clone(),
                path: path.to_owned(),
                source,
            })?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        // The VMM runs as another uid and may be compromised: read what
        // any real answer fits in, and no more.
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(source) => http(*source),
                Err(_) => ApiError::TooLarge {
                    method: method.clone(),
                    path: path.to_owned(),
                    limit: MAX_ANSWER,
                },
            })?
            .to_bytes();
        Ok((status, bytes))
    }
}
