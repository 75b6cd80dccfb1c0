//! The client side of the API: one HTTP/1.1 request per connection over the
//! daemon's unix socket.

use std::io;
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::api::{
    BuildImage, CloneVm, CreateDefaults, CreateVm, DoctorReport, ErrorBody, ExportImage, Health,
    ImageDetails, ImageSummary, ImportImage, NetworkCleanup, NetworkStatus, Progress, PublishPort,
    PullImage, PushImage, Pushed, StartVm, StopVm, TemplateInfo, VmAction, VmDetails, VmOpResult,
    VmStats, VmSummary, WarmImage,
};
use super::names::{NameError, check_image_name, check_vm_name};

/// `value` as a request body. Only a path that is not UTF-8 makes this fail.
fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, ClientError> {
    serde_json::to_value(value).map_err(ClientError::Encode)
}

/// `/v1/vms/NAME` and what follows, once `name` is known to be one.
fn vm_path(name: &str, rest: &str) -> Result<String, ClientError> {
    check_vm_name(name)?;
    Ok(format!("/v1/vms/{name}{rest}"))
}

/// `/v1/images/NAME` then `rest`, once `name` is known to be an image name.
fn image_path(name: &str, rest: &str) -> Result<String, ClientError> {
    check_image_name(name)?;
    Ok(format!("/v1/images/{name}{rest}"))
}

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An exec session failed (the agent refused it, or its stream broke).
    #[error("{0}")]
    Exec(String),
    /// A name the API would refuse; nothing was sent.
    #[error(transparent)]
    BadName(#[from] NameError),
    /// The request cannot be put into JSON (a path that is not UTF-8).
    #[error("cannot encode the request for bangerd")]
    Encode(#[source] serde_json::Error),
    /// The request cannot be put into HTTP.
    #[error("cannot build the request for bangerd")]
    Request(#[source] hyper::http::Error),
    /// Nothing listens on the socket: the daemon is not running.
    #[error("bangerd is not running (no answer on {socket})")]
    NotRunning {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The socket exists but could not be used.
    #[error("cannot connect to bangerd at {socket}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The HTTP exchange broke off.
    #[error("request to bangerd failed")]
    Http(#[from] hyper::Error),
    /// The daemon answered with something that is not the expected JSON.
    #[error("bangerd sent an answer this banger does not understand (HTTP {status})")]
    Decode {
        status: StatusCode,
        #[source]
        source: serde_json::Error,
    },
    /// The daemon refused or failed the request; `chain` is its cause chain.
    #[error("{}", chain.first().map(String::as_str).unwrap_or("bangerd reported an error"))]
    Api {
        status: StatusCode,
        chain: Vec<String>,
        hint: Option<String>,
    },
    /// A socket directory another user owns or can write to.
    #[error(
        "refusing to use {dir}: it belongs to uid {owner} with mode {mode:o}, not to you (uid {me}) with mode 700; another user may have made it; remove it (or set XDG_RUNTIME_DIR)"
    )]
    UnsafeSocketDir {
        dir: PathBuf,
        owner: u32,
        mode: u32,
        me: u32,
    },
    /// The server on the socket runs as another user.
    #[error("refusing the server on {socket}: it runs as uid {}, not as you; stop it and remove the socket", uid.map_or("unknown".into(), |u| u.to_string()))]
    ForeignServer { socket: PathBuf, uid: Option<u32> },
}

impl ClientError {
    /// True when the daemon is simply not there (so starting it may help).
    pub fn is_not_running(&self) -> bool {
        matches!(self, ClientError::NotRunning { .. })
    }
}

/// A handle on the daemon's socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Refuses a socket directory that is not this user's: on a shared host
    /// another user can make `/tmp/banger-<uid>` first and listen there.
    /// One of this user's that others may enter is made 0700 again. A
    /// directory that does not exist yet is fine (nothing answers; the
    /// daemon makes it).
    fn check_socket_dir(&self) -> Result<(), ClientError> {
        use std::os::unix::fs::MetadataExt;
        let Some(dir) = self.socket.parent() else {
            return Ok(());
        };
        let Ok(meta) = std::fs::symlink_metadata(dir) else {
            return Ok(());
        };
        let me = rustix::process::getuid().as_raw();
        let mode = meta.mode() & 0o7777;
        // Ours but open to others: ours to close again.
        let closed = meta.uid() == me
            && meta.is_dir()
            && (mode & 0o077 == 0 || {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).is_ok()
            });
        if !closed {
            return Err(ClientError::UnsafeSocketDir {
                dir: dir.to_path_buf(),
                owner: meta.uid(),
                mode,
                me,
            });
        }
        Ok(())
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(Method::GET, "/v1/health", None).await
    }

    pub async fn doctor(&self) -> Result<DoctorReport, ClientError> {
        self.call(Method::GET, "/v1/doctor", None).await
    }

    pub async fn list_vms(&self) -> Result<Vec<VmSummary>, ClientError> {
        self.call(Method::GET, "/v1/vms", None).await
    }

    pub async fn list_images(&self) -> Result<Vec<ImageSummary>, ClientError> {
        self.call(Method::GET, "/v1/images", None).await
    }

    pub async fn create_vm(&self, req: &CreateVm) -> Result<VmOpResult, ClientError> {
        check_vm_name(&req.name)?;
        if let Some(image) = &req.image {
            check_image_name(image)?;
        }
        self.call(Method::POST, "/v1/vms", Some(json(req)?)).await
    }

    pub async fn vm(&self, name: &str) -> Result<VmDetails, ClientError> {
        self.call(Method::GET, &vm_path(name, "")?, None).await
    }

    pub async fn start_vm(&self, name: &str, start: &StartVm) -> Result<VmOpResult, ClientError> {
        let path = vm_path(name, "/start")?;
        self.call(Method::POST, &path, Some(json(start)?)).await
    }

    /// `pause`, `resume` or `suspend` VM `name`.
    pub async fn vm_action(&self, name: &str, action: VmAction) -> Result<VmDetails, ClientError> {
        let path = vm_path(name, &format!("/{}", action.as_str()))?;
        self.call(Method::POST, &path, None).await
    }

    pub async fn stop_vm(&self, name: &str, force: bool) -> Result<VmDetails, ClientError> {
        let path = vm_path(name, "/stop")?;
        let body = json(&StopVm { force })?;
        self.call(Method::POST, &path, Some(body)).await
    }

    pub async fn restart_vm(&self, name: &str) -> Result<VmOpResult, ClientError> {
        self.call(Method::POST, &vm_path(name, "/restart")?, None)
            .await
    }

    pub async fn clone_vm(&self, src: &str, new: &str) -> Result<VmOpResult, ClientError> {
        self.copy_vm(src, new, "/clone").await
    }

    /// A running VM's copy, memory and all, running beside it.
    pub async fn fork_vm(&self, src: &str, new: &str) -> Result<VmOpResult, ClientError> {
        self.copy_vm(src, new, "/fork").await
    }

    async fn copy_vm(&self, src: &str, new: &str, how: &str) -> Result<VmOpResult, ClientError> {
        check_vm_name(new)?;
        let path = vm_path(src, how)?;
        let body = json(&CloneVm { name: new.into() })?;
        self.call(Method::POST, &path, Some(body)).await
    }

    /// `unpublish` false publishes `port` for VM `name`, true stops it.
    pub async fn publish_port(
        &self,
        name: &str,
        port: &str,
        unpublish: bool,
    ) -> Result<VmDetails, ClientError> {
        let verb = if unpublish { "/unpublish" } else { "/publish" };
        let path = vm_path(name, verb)?;
        let body = json(&PublishPort { port: port.into() })?;
        self.call(Method::POST, &path, Some(body)).await
    }

    pub async fn delete_vm(&self, name: &str, force: bool) -> Result<(), ClientError> {
        let path = vm_path(name, "")?;
        let body = json(&StopVm { force })?;
        let _: serde_json::Value = self.call(Method::DELETE, &path, Some(body)).await?;
        Ok(())
    }

    /// Changes running VM `name`'s identity, through its agent.
    pub async fn set_identity(
        &self,
        name: &str,
        req: &super::api::SetIdentity,
    ) -> Result<VmDetails, ClientError> {
        check_vm_name(name)?;
        self.call(
            Method::POST,
            &format!("/v1/vms/{name}/identity"),
            Some(json(req)?),
        )
        .await
    }

    /// Sets VM `name`'s clock from the host's, through its agent.
    pub async fn sync_clock(&self, name: &str) -> Result<super::api::ClockSet, ClientError> {
        check_vm_name(name)?;
        self.call(Method::POST, &format!("/v1/vms/{name}/clock"), None)
            .await
    }

    pub async fn vm_stats(&self, name: &str) -> Result<VmStats, ClientError> {
        self.call(Method::GET, &vm_path(name, "/stats")?, None)
            .await
    }

    /// Every running VM's VMM, sampled over one shared window.
    pub async fn all_stats(&self) -> Result<Vec<VmStats>, ClientError> {
        self.call(Method::GET, "/v1/stats", None).await
    }

    /// What `create_vm` gives a VM for the fields a request leaves unset.
    pub async fn create_defaults(&self) -> Result<CreateDefaults, ClientError> {
        self.call(Method::GET, "/v1/defaults", None).await
    }

    pub async fn image(&self, name: &str) -> Result<ImageDetails, ClientError> {
        self.call(Method::GET, &image_path(name, "")?, None).await
    }

    pub async fn import_image(&self, req: &ImportImage) -> Result<ImageDetails, ClientError> {
        check_image_name(&req.name)?;
        self.call(Method::POST, "/v1/images", Some(json(req)?))
            .await
    }

    /// Warms image `name` (it boots once: this takes a boot's time).
    pub async fn warm_image(
        &self,
        name: &str,
        req: &WarmImage,
    ) -> Result<TemplateInfo, ClientError> {
        let path = image_path(name, "/warm")?;
        self.call(Method::POST, &path, Some(json(req)?)).await
    }

    /// Registers stopped VM `name`'s root filesystem as image `image`.
    pub async fn export_vm(&self, name: &str, image: &str) -> Result<ImageDetails, ClientError> {
        check_image_name(image)?;
        let req = super::api::ExportVm {
            image: image.to_string(),
        };
        self.call(Method::POST, &vm_path(name, "/export")?, Some(json(&req)?))
            .await
    }

    /// Exports image `name` (see [`ExportImage`]).
    pub async fn export_image(
        &self,
        name: &str,
        req: &ExportImage,
    ) -> Result<ExportImage, ClientError> {
        let path = image_path(name, "/export")?;
        self.call(Method::POST, &path, Some(json(req)?)).await
    }

    /// Pushes image `name` to a registry.
    pub async fn push_image(&self, name: &str, req: &PushImage) -> Result<Pushed, ClientError> {
        let path = image_path(name, "/push")?;
        self.call(Method::POST, &path, Some(json(req)?)).await
    }

    pub async fn delete_image(&self, name: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .call(Method::DELETE, &image_path(name, "")?, None)
            .await?;
        Ok(())
    }

    pub async fn network_status(&self) -> Result<NetworkStatus, ClientError> {
        self.call(Method::GET, "/v1/network", None).await
    }

    pub async fn network_cleanup(&self) -> Result<NetworkCleanup, ClientError> {
        self.call(Method::POST, "/v1/network/cleanup", None).await
    }

    /// Asks the daemon to stop; it answers before it goes.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        let _: serde_json::Value = self.call(Method::POST, "/v1/daemon/shutdown", None).await?;
        Ok(())
    }

    /// Builds an image, calling `on_event` with each progress event as it
    /// arrives; returns when the daemon sends the last one. Dropping the
    /// future (Ctrl-C) hangs up, which cancels the build.
    pub async fn build_image(
        &self,
        req: &BuildImage,
        mut on_event: impl FnMut(Progress) + Send,
    ) -> Result<(), ClientError> {
        check_image_name(&req.name)?;
        if let Some(from) = &req.from {
            check_image_name(from)?;
        }
        self.stream(Method::POST, "/v1/builds", json(req)?, &mut on_event)
            .await
    }

    /// Pulls or imports an OCI image, calling `on_event` for each progress
    /// event as it arrives; returns once the daemon ends the stream.
    pub async fn pull_image(
        &self,
        req: &PullImage,
        mut on_event: impl FnMut(Progress) + Send,
    ) -> Result<(), ClientError> {
        if let Some(name) = &req.name {
            check_image_name(name)?;
        }
        self.stream(Method::POST, "/v1/pulls", json(req)?, &mut on_event)
            .await
    }

    /// Sends a request whose answer is an NDJSON stream of progress events.
    async fn stream(
        &self,
        method: Method,
        path: &str,
        body: serde_json::Value,
        on_event: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), ClientError> {
        let response = self.send(method, path, Some(body)).await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.into_body().collect().await?.to_bytes();
            return Err(api_error(status, &bytes));
        }
        let mut body = response.into_body();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event = serde_json::from_slice(&line)
                    .map_err(|source| ClientError::Decode { status, source })?;
                on_event(event);
            }
        }
        Ok(())
    }

    /// Opens an exec stream to VM `name`'s agent: the connection, switched
    /// to agent frames for one session (see [`super::api::EXEC_PROTOCOL`]).
    pub async fn exec_stream(
        &self,
        name: &str,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, ClientError> {
        check_vm_name(name)?;
        let stream = self.connect().await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn.with_upgrades());
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/vms/{name}/exec"))
            .header(hyper::header::HOST, "bangerd")
            .header(hyper::header::CONNECTION, "upgrade")
            .header(hyper::header::UPGRADE, super::api::EXEC_PROTOCOL)
            .body(Full::new(Bytes::new()))
            .map_err(ClientError::Request)?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let bytes = response.into_body().collect().await?.to_bytes();
            return Err(api_error(status, &bytes));
        }
        let upgraded = hyper::upgrade::on(response).await?;
        Ok(TokioIo::new(upgraded))
    }

    /// Sends one request and decodes the JSON answer (or the error chain).
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|source| ClientError::Decode { status, source });
        }
        Err(api_error(status, &bytes))
    }

    /// Sends one request on a new connection and returns the response head.
    /// `path` is static or made of checked names: nothing in it needs escaping.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let stream = self.connect().await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection task ends when the response is read; its own error,
        // if any, surfaces through `send_request` below.
        tokio::spawn(conn);

        let body = match body {
            Some(value) => Bytes::from(value.to_string()),
            None => Bytes::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "bangerd")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(ClientError::Request)?;
        Ok(sender.send_request(request).await?)
    }

    /// A connection to this user's daemon (and no one else's).
    async fn connect(&self) -> Result<UnixStream, ClientError> {
        self.check_socket_dir()?;
        let stream = UnixStream::connect(&self.socket).await.map_err(|source| {
            let socket = self.socket.clone();
            match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning { socket, source }
                }
                _ => ClientError::Connect { socket, source },
            }
        })?;
        // Whoever answers must be this user's daemon: another user could
        // have put a socket of theirs here first.
        let me = rustix::process::getuid().as_raw();
        let peer = stream.peer_cred().ok().map(|c| c.uid());
        if peer != Some(me) {
            return Err(ClientError::ForeignServer {
                socket: self.socket.clone(),
                uid: peer,
            });
        }
        Ok(stream)
    }
}

/// The daemon's error answer as a [`ClientError`].
fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(err) => ClientError::Api {
            status,
            chain: err.error,
            hint: err.hint,
        },
        Err(source) => ClientError::Decode { status, source },
    }
}
