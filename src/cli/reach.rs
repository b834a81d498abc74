//! Why a client command could not reach the daemon, told apart for the person at the
//! terminal, with what to do: no socket at the path, a socket nobody listens on, or
//! permission denied (naming the socket's owner, group and mode, and the group to
//! join). Knows nothing of HTTP: it reads the connect error and the file system.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

use super::exit;

/// What to print, and the exit code.
pub(super) struct Unreachable {
    pub message: String,
    pub code: u8,
}

/// The first `io::Error` in `error`'s chain of causes (the connect's own error).
pub(super) fn io_cause<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cause = e.source();
    }
    None
}

/// Explains a failed connection to `socket`; `error` is what the connection attempt got.
pub(super) fn explain(socket: &Path, error: Option<&io::Error>, fallback: &str) -> Unreachable {
    let path = socket.display();
    let raw = error.and_then(io::Error::raw_os_error);
    let no_daemon = |message: String| Unreachable {
        message,
        code: exit::NO_DAEMON,
    };
    match raw {
        Some(libc::ENOENT) => no_daemon(format!(
            "no socket at {path}: the daemon is not running, or it listens elsewhere\n  \
             start it (systemctl start otpd), or name its socket with --socket or \
             OTPD_SOCKET (its server.socket_path)"
        )),
        Some(libc::ECONNREFUSED) => match std::fs::metadata(socket) {
            Ok(meta) if !meta.file_type().is_socket() => no_daemon(format!(
                "{path} is not a socket: name the daemon's socket with --socket or OTPD_SOCKET"
            )),
            _ => no_daemon(format!(
                "nothing listens on {path}: the daemon is not running (the socket file \
                 is left from an earlier run)\n  start it: systemctl start otpd"
            )),
        },
        Some(libc::EACCES | libc::EPERM) => Unreachable {
            message: permission_denied(socket),
            code: exit::NO_PERMISSION,
        },
        _ => no_daemon(format!("cannot reach the daemon on {path}: {fallback}")),
    }
}

/// Names the file that refused us (the socket, or the directory above it when even the
/// socket cannot be looked at) and what would let the caller in.
fn permission_denied(socket: &Path) -> String {
    let (what, meta) = match std::fs::metadata(socket) {
        Ok(meta) => (socket, meta),
        Err(_) => match socket.parent().map(|dir| (dir, std::fs::metadata(dir))) {
            Some((dir, Ok(meta))) => (dir, meta),
            _ => {
                return format!(
                    "permission denied on {}: ask the administrator which group may use it",
                    socket.display()
                );
            }
        },
    };
    let owner = user_name(meta.uid());
    let group = group_name(meta.gid());
    let mut message = format!(
        "permission denied on {} (owner {owner}, group {group}, mode {:04o})",
        what.display(),
        meta.mode() & 0o7777
    );
    let me = Uid::effective();
    let in_group = Gid::effective().as_raw() == meta.gid()
        || nix::unistd::getgroups()
            .is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == meta.gid()));
    let listed = User::from_uid(me).ok().flatten().is_some_and(|user| {
        Group::from_gid(Gid::from_raw(meta.gid()))
            .ok()
            .flatten()
            .is_some_and(|g| g.mem.contains(&user.name))
    });
    // Connecting needs write access to the socket (and search access to a directory).
    let group_bits = if what == socket { 0o060 } else { 0o010 };
    let advice = if meta.mode() & group_bits != group_bits {
        format!(
            "  its mode lets no one but its owner {owner} in (server.socket_mode, default 0660)"
        )
    } else if in_group {
        format!("  you are in group {group}; ask the administrator what else restricts it")
    } else if listed {
        format!(
            "  you were added to group {group} after this session started: the membership \
             takes effect at your next login (for a service such as www-data: at its restart)"
        )
    } else {
        format!(
            "  to use the daemon, join the socket's group: sudo adduser $USER {group}\n  \
             the membership takes effect at your next login (for a service such as \
             www-data: at its restart)"
        )
    };
    message.push('\n');
    message.push_str(&advice);
    message
}

fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(group)) => group.name,
        _ => gid.to_string(),
    }
}
