//! The Unix socket: inheriting it from systemd (`LISTEN_FDS`) or binding it safely
//! (stale-socket probe, then bind under a hidden name, chmod, link), the accept loop with a connection cap, peer credentials, hyper's HTTP/1.1 connections,
//! and the graceful drain at shutdown. Knows the api's entry point and nothing below.

use std::future::Future;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use thiserror::Error;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

use crate::api::Api;
use crate::telemetry;
use crate::types::Caller;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("another otpd is already listening on {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("cannot use the socket passed by systemd (LISTEN_FDS): {0}")]
    Activation(std::io::Error),
    #[error("cannot bind {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A listening socket that otpd created; the file is removed when this is dropped.
pub struct BoundSocket {
    pub listener: UnixListener,
    path: PathBuf,
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != ErrorKind::NotFound
        {
            log::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// The socket otpd serves on: passed by systemd, or bound by otpd (and removed on drop).
pub enum Listening {
    /// Socket activation: the path, mode and owner are the `.socket` unit's business,
    /// so otpd neither chmods nor unlinks it.
    Activated(UnixListener),
    Bound(BoundSocket),
}

impl Listening {
    pub fn listener(&self) -> &UnixListener {
        match self {
            Listening::Activated(listener) => listener,
            Listening::Bound(bound) => &bound.listener,
        }
    }
}

/// The first socket systemd passed through `LISTEN_FDS` (for our pid), if any.
/// listenfd checks LISTEN_PID and the fd's type and wraps it without unsafe code; it
/// also unsets the variables, so call this before any other thread starts.
pub fn passed_socket() -> Result<Option<std::os::unix::net::UnixListener>, ServerError> {
    listenfd::ListenFd::from_env()
        .take_unix_listener(0)
        .map_err(ServerError::Activation)
}

/// Serves on the `passed` socket if there is one, else binds `path` as [`bind`] does.
/// Call inside the tokio runtime.
pub fn listen(
    passed: Option<std::os::unix::net::UnixListener>,
    path: &Path,
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
) -> Result<Listening, ServerError> {
    match passed {
        Some(std_listener) => {
            std_listener
                .set_nonblocking(true)
                .map_err(ServerError::Activation)?;
            let listener = UnixListener::from_std(std_listener).map_err(ServerError::Activation)?;
            log::info!("using the socket passed by systemd");
            Ok(Listening::Activated(listener))
        }
        None => bind(path, mode, owner, group).map(Listening::Bound),
    }
}

/// Binds `path` with `mode` (and owner/group if given). A socket file left by a crashed run (nobody answers it) is
/// replaced; a live one, or a file that is not a socket, is refused.
pub fn bind(
    path: &Path,
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
) -> Result<BoundSocket, ServerError> {
    let bind_error = |source| ServerError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ServerError::NotASocket(path.to_owned()));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ServerError::InUse(path.to_owned())),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                log::info!("removing stale socket {}", path.display());
                std::fs::remove_file(path).map_err(bind_error)?;
            }
            Err(e) => return Err(bind_error(e)),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(bind_error(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(bind_error)?;
    }
    // Bound under a hidden name, given its owner and mode, then linked at `path`: the
    // socket appears already open to the configured group (and to no one else), so a
    // caller that can connect knows it is ready. link(2), unlike rename(2), fails if
    // `path` exists, so a second otpd starting at the same moment still gets "in use".
    let staging = staging_path(path);
    match std::fs::symlink_metadata(&staging) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ServerError::NotASocket(staging));
        }
        Ok(_) => std::fs::remove_file(&staging).map_err(bind_error)?,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(bind_error(e)),
    }
    let listener = UnixListener::bind(&staging).map_err(bind_error)?;
    let published = publish(&staging, path, mode, owner, group);
    // The hidden name goes either way; the listener keeps the socket.
    if let Err(e) = std::fs::remove_file(&staging) {
        log::warn!("cannot remove {}: {e}", staging.display());
    }
    published?;
    Ok(BoundSocket {
        listener,
        path: path.to_owned(),
    })
}

/// `dir/.name`: beside the socket, as link(2) needs the same filesystem, and only one
/// byte longer (a socket path is limited to 107).
fn staging_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    path.with_file_name(name)
}

/// Gives the staged socket its owner and mode, then links it at `path`.
fn publish(
    staging: &Path,
    path: &Path,
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
) -> Result<(), ServerError> {
    let bind_error = |source| ServerError::Bind {
        path: path.to_owned(),
        source,
    };
    if owner.is_some() || group.is_some() {
        std::os::unix::fs::chown(staging, owner, group).map_err(bind_error)?;
    }
    std::fs::set_permissions(staging, std::fs::Permissions::from_mode(mode)).map_err(bind_error)?;
    std::fs::hard_link(staging, path).map_err(|e| match e.kind() {
        ErrorKind::AlreadyExists => ServerError::InUse(path.to_owned()),
        _ => bind_error(e),
    })
}

/// Connection-level limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub drain_timeout: Duration,
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
/// finish for at most `drain_timeout`. Each request takes the [`Api`] current when it
/// arrives, so a reload applies to the next request, even on a kept-alive connection.
pub async fn serve(
    listener: &UnixListener,
    api: Arc<ArcSwap<Api>>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    tokio::pin!(shutdown);

    loop {
        // Waiting for a free slot before accepting leaves excess callers in the
        // kernel's backlog instead of holding open sockets we cannot serve.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let caller = match stream.peer_cred() {
            Ok(cred) => Caller {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid(),
            },
            Err(e) => {
                log::warn!("cannot read peer credentials, dropping connection: {e}");
                continue;
            }
        };
        let api = api.clone();
        let service = service_fn(move |req| api.load_full().handle(req, caller));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let open = metrics::gauge!(telemetry::OPEN_CONNECTIONS);
            open.increment(1);
            if let Err(e) = connection.await {
                log::debug!("connection from pid {:?}: {e}", caller.pid);
            }
            open.decrement(1);
            drop(slot);
        });
    }

    log::info!(
        "shutting down: draining {} open connections",
        graceful.count()
    );
    tokio::select! {
        () = graceful.shutdown() => log::info!("all connections closed"),
        () = tokio::time::sleep(options.drain_timeout) => {
            log::warn!("drain timeout of {:?} reached; closing remaining connections", options.drain_timeout);
        }
    }
}
