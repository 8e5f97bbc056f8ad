//! systemd integration, written with std only: socket activation with
//! sd_listen_fds(3) semantics, and sd_notify(3) readiness.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};

use crate::config::Mode;

/// The first passed file descriptor (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: RawFd = 3;

/// A listening socket handed to us by the service manager.
pub struct ActivatedSocket {
    pub listener: TcpListener,
    pub mode: Mode,
    /// The name from `FileDescriptorName=`, for logs.
    pub name: String,
}

/// The `FileDescriptorName=` of the local submission socket (SPEC §8).
pub const LOCAL_NAME: &str = "local";

/// Everything systemd passed: the TCP listeners, and the local submission
/// socket when one was named `local`.
#[derive(Default)]
pub struct Activated {
    pub sockets: Vec<ActivatedSocket>,
    pub local: Option<UnixListener>,
}

impl Activated {
    /// True when systemd passed nothing (not socket-activated).
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty() && self.local.is_none()
    }
}

/// Takes the sockets passed by systemd, if any. `LISTEN_PID` must be our
/// pid; the variables are removed so that children don't inherit them, and
/// every fd gets CLOEXEC. Call before any thread is started.
pub fn listen_fds() -> Result<Activated, String> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Activated::default());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Activated::default()); // Meant for another process.
    }
    let count: RawFd = fds
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_FDS={fds:?} is not a number"))?;
    let names: Vec<&str> = names
        .as_deref()
        .map_or(Vec::new(), |n| n.split(':').collect());
    let mut activated = Activated::default();
    for i in 0..count.clamp(0, 64) {
        let fd = LISTEN_FDS_START + i;
        let name = names.get(i as usize).copied().unwrap_or("").to_string();
        if name == LOCAL_NAME {
            activated.local = Some(take_local(fd)?);
            continue;
        }
        // SAFETY: sd_listen_fds(3): fds 3.. are ours, open, and nothing else
        // in this process owns them.
        let passed = unsafe { TcpListener::from_raw_fd(fd) };
        // std duplicates with F_DUPFD_CLOEXEC: the copy is close-on-exec,
        // and dropping the original closes the inheritable fd.
        let listener = passed
            .try_clone()
            .map_err(|e| format!("passed fd {fd} ({name}): {e}"))?;
        drop(passed);
        listener
            .local_addr()
            .map_err(|e| format!("passed fd {fd} ({name}) is not a TCP socket: {e}"))?;
        activated.sockets.push(ActivatedSocket {
            listener,
            mode: mode_for_name(&name),
            name,
        });
    }
    Ok(activated)
}

/// The one socket passed to `smtpbox --notifier` (the notifier service's
/// listening `SOCK_SEQPACKET` socket), close-on-exec.
pub fn notifier_socket() -> Result<std::os::fd::OwnedFd, String> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let ours = pid.and_then(|p| p.trim().parse::<u32>().ok()) == Some(std::process::id());
    let count: i32 = fds.and_then(|n| n.trim().parse().ok()).unwrap_or(0);
    if !ours || count < 1 {
        return Err("--notifier needs the socket systemd passes (smtpbox-notify.socket)".into());
    }
    // SAFETY: sd_listen_fds(3): fd 3 is ours and open.
    let passed = unsafe { std::os::fd::OwnedFd::from_raw_fd(LISTEN_FDS_START) };
    passed
        .try_clone()
        .map_err(|e| format!("passed fd {LISTEN_FDS_START}: {e}"))
}

/// The fd named `local`: a listening Unix stream socket.
fn take_local(fd: RawFd) -> Result<UnixListener, String> {
    // SAFETY: as for the TCP fds in `listen_fds`.
    let passed = unsafe { UnixListener::from_raw_fd(fd) };
    let listener = passed
        .try_clone()
        .map_err(|e| format!("passed fd {fd} ({LOCAL_NAME}): {e}"))?;
    drop(passed);
    listener
        .local_addr()
        .map_err(|e| format!("passed fd {fd} ({LOCAL_NAME}) is not a Unix socket: {e}"))?;
    Ok(listener)
}

/// `FileDescriptorName=` to listener mode (SPEC §8).
pub fn mode_for_name(name: &str) -> Mode {
    match name {
        "submission" => Mode::Submission,
        "submissions" | "tls" => Mode::Tls,
        _ => Mode::Smtp,
    }
}

/// Tells the service manager we are ready (`Type=notify`); a no-op without
/// `NOTIFY_SOCKET`. Abstract sockets (`@name`) are supported.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_notify(&path.to_string_lossy(), state) {
        log::warn!("sd_notify to {}: {}", path.to_string_lossy(), e);
    }
}

fn send_notify(path: &str, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match path.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr =
                std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_modes() {
        assert_eq!(mode_for_name("smtp"), Mode::Smtp);
        assert_eq!(mode_for_name("submission"), Mode::Submission);
        assert_eq!(mode_for_name("submissions"), Mode::Tls);
        assert_eq!(mode_for_name("tls"), Mode::Tls);
        assert_eq!(mode_for_name("smtpbox.socket"), Mode::Smtp);
    }

    #[test]
    fn notify_reaches_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("smtpbox-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send_notify(&path.display().to_string(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);

        use std::os::linux::net::SocketAddrExt;
        let name = format!("smtpbox-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        send_notify(&format!("@{name}"), "READY=1\nSTATUS=ok").unwrap();
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");
    }
}
