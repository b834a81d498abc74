//! The socket file: inheriting it from systemd (`LISTEN_FDS`) or binding it safely
//! (stale-socket probe, then bind under a hidden name, chown/chmod, link into place), and
//! removing it at exit. Knows nothing of HTTP or of what is served on it.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;
use tokio::net::UnixListener;

#[derive(Debug, Error)]
pub enum SocketError {
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
pub fn passed_socket() -> Result<Option<std::os::unix::net::UnixListener>, SocketError> {
    listenfd::ListenFd::from_env()
        .take_unix_listener(0)
        .map_err(SocketError::Activation)
}

/// Serves on the `passed` socket if there is one, else binds `path` as [`bind`] does.
/// Call inside the tokio runtime.
pub fn listen(
    passed: Option<std::os::unix::net::UnixListener>,
    path: &Path,
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
) -> Result<Listening, SocketError> {
    match passed {
        Some(std_listener) => {
            std_listener
                .set_nonblocking(true)
                .map_err(SocketError::Activation)?;
            let listener = UnixListener::from_std(std_listener).map_err(SocketError::Activation)?;
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
) -> Result<BoundSocket, SocketError> {
    let bind_error = |source| SocketError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(SocketError::NotASocket(path.to_owned()));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(SocketError::InUse(path.to_owned())),
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
            return Err(SocketError::NotASocket(staging));
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
) -> Result<(), SocketError> {
    let bind_error = |source| SocketError::Bind {
        path: path.to_owned(),
        source,
    };
    if owner.is_some() || group.is_some() {
        std::os::unix::fs::chown(staging, owner, group).map_err(bind_error)?;
    }
    std::fs::set_permissions(staging, std::fs::Permissions::from_mode(mode)).map_err(bind_error)?;
    std::fs::hard_link(staging, path).map_err(|e| match e.kind() {
        ErrorKind::AlreadyExists => SocketError::InUse(path.to_owned()),
        _ => bind_error(e),
    })
}
