//! The server's side of notifications: a `SOCK_SEQPACKET` socket to the
//! notifier, one packet per [`Notice`] with the stored file's read-only
//! descriptor beside it (`SCM_RIGHTS`), sent without ever blocking. The
//! socket is a socketpair to a child forked before the sandbox
//! ([`spawn`]), or a connection to the notifier service's socket
//! ([`connect`], `$SMTPBOX_NOTIFIER`).
//!
//! The message and control headers are the kernel's (`size_t` lengths);
//! musl's differ only in padding on 64-bit targets, which lies where the
//! kernel's high bytes do on little-endian ones: true of every target
//! smtpbox is built for (x86_64, aarch64, and the 32-bit armv7 and MIPS).

use std::ffi::{c_int, c_void};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::process::{self, _exit, close, dup2, fork, setsid};
use super::{notifier, Notice, Settings, MAX_NOTICE};
use crate::logging;
use crate::privilege::{self, Account};
use crate::sys::{MSG_DONTWAIT, SOL_SOCKET};

/// The environment variable that names the notifier service's socket
/// (set by the shipped systemd units): the server connects there instead
/// of forking a notifier of its own.
pub const ENV_SOCKET: &str = "SMTPBOX_NOTIFIER";

const AF_UNIX: c_int = 1;
const SOCK_SEQPACKET: c_int = 5;
const SOCK_CLOEXEC: c_int = crate::sys::O_CLOEXEC;
const SCM_RIGHTS: c_int = 1;
const MSG_NOSIGNAL: c_int = 0x4000;
const MSG_CMSG_CLOEXEC: c_int = 0x4000_0000;
const MSG_CTRUNC: c_int = 8;

#[repr(C)]
struct IoVec {
    base: *mut c_void,
    len: usize,
}

#[repr(C)]
struct MsgHdr {
    name: *mut c_void,
    namelen: u32,
    iov: *mut IoVec,
    iovlen: usize,
    control: *mut c_void,
    controllen: usize,
    flags: c_int,
}

#[repr(C)]
struct CmsgHdr {
    len: usize,
    level: c_int,
    kind: c_int,
}

#[repr(C)]
struct SockaddrUn {
    family: u16,
    path: [u8; 108],
}

/// Room for one control header and one descriptor, aligned as the
/// kernel's CMSG_SPACE.
#[repr(C, align(8))]
struct Control([u8; 32]);

const fn cmsg_align(n: usize) -> usize {
    (n + std::mem::size_of::<usize>() - 1) & !(std::mem::size_of::<usize>() - 1)
}
const CMSG_DATA: usize = cmsg_align(std::mem::size_of::<CmsgHdr>());
const CMSG_LEN_ONE_FD: usize = CMSG_DATA + std::mem::size_of::<c_int>();
const CMSG_SPACE_ONE_FD: usize = CMSG_DATA + cmsg_align(std::mem::size_of::<c_int>());

extern "C" {
    fn socketpair(domain: c_int, kind: c_int, protocol: c_int, fds: *mut c_int) -> c_int;
    fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
    #[link_name = "connect"]
    fn connect_fd(fd: c_int, addr: *const SockaddrUn, len: u32) -> c_int;
    fn sendmsg(fd: c_int, msg: *const MsgHdr, flags: c_int) -> isize;
    fn recvmsg(fd: c_int, msg: *mut MsgHdr, flags: c_int) -> isize;
}

/// Where notices go, shared by every session; sending never blocks.
pub struct Sender {
    link: Mutex<Link>,
}

enum Link {
    /// A socketpair to our own notifier child, its pid (0: not waited
    /// for), and /dev/null, opened before the sandbox, to put over a
    /// stderr that is the client's socket before waiting.
    Child(Option<OwnedFd>, c_int, Option<File>),
    /// The notifier service's socket, connected at the first notice and
    /// again after it broke.
    Service(PathBuf, Option<OwnedFd>),
}

impl Sender {
    /// Sends `notice` with its file opened read-only. Returns why it was
    /// not sent; the caller logs that (the mail is stored either way).
    pub fn send(&self, notice: &Notice) -> Result<(), String> {
        // With O_NOATIME: the program reading it writes no inode.
        let file = crate::maildir::open_unstamped(Path::new(&notice.file), 0)
            .map_err(|e| format!("{}: {e}", notice.file))?;
        let packet = notice.encode();
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *link {
            Link::Child(fd, _, _) => {
                let fd = fd.as_ref().ok_or("the notifier has ended")?;
                send_packet(fd.as_raw_fd(), &packet, file.as_raw_fd()).map_err(busy)
            }
            Link::Service(path, fd) => {
                if let Some(open) = fd.as_ref() {
                    match send_packet(open.as_raw_fd(), &packet, file.as_raw_fd()) {
                        Ok(()) => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(busy(e)),
                        // The service restarted: connect again, once.
                        Err(_) => *fd = None,
                    }
                }
                let open = connect_to(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let sent = send_packet(open.as_raw_fd(), &packet, file.as_raw_fd());
                *fd = Some(open);
                sent.map_err(busy)
            }
        }
    }

    /// Closes the socket and waits for our own notifier child to finish
    /// the programs it runs (`--inetd`: the session's process must not
    /// take its notifications with it, SPEC §7a).
    pub fn finish(&self) {
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        if let Link::Child(fd, pid, null) = &mut *link {
            if fd.take().is_some() && *pid > 0 {
                // Classic inetd's client socket is our stderr too: give it
                // up before waiting, so the client sees the end at once.
                if let Some(null) = null.as_ref().filter(|_| logging::stderr_is_client_socket()) {
                    // SAFETY: replaces fd 2; null stays open across it.
                    unsafe { dup2(null.as_raw_fd(), 2) };
                }
                let _ = process::wait(*pid);
            }
        }
    }
}

fn busy(e: io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock => "the notifier is busy (its socket is full)".to_string(),
        _ => format!("the notifier is gone: {e}"),
    }
}

/// The notifier service's socket (`$SMTPBOX_NOTIFIER`), connected at the
/// first notice.
pub fn connect(path: &Path) -> Sender {
    Sender {
        link: Mutex::new(Link::Service(path.to_path_buf(), None)),
    }
}

/// Forks the server's own notifier: call it before any thread exists and
/// before the sandbox. The child drops root to `account` (when root),
/// gives up stdin, stdout and any socket systemd passed, and serves the
/// socketpair until the server closes its end, then waits for its
/// programs and exits. With `detach` (sendmail mode, whose caller waits
/// for it) the child leaves the caller's session and is not waited for.
pub fn spawn(
    settings: &Settings,
    account: Option<&Account>,
    detach: bool,
) -> Result<Sender, String> {
    let mut fds = [-1; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(format!("notifier socket: {}", io::Error::last_os_error()));
    }
    // SAFETY: both are fresh descriptors we own.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: called while the process has one thread (the caller's
    // contract), so the child may go on running ordinary code.
    let pid = unsafe { fork() };
    if pid < 0 {
        return Err(format!(
            "cannot start the notifier: {}",
            io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        drop(ours);
        let code = match child_setup(account, detach) {
            Ok(()) => {
                notifier::serve_socket(theirs, settings);
                0
            }
            Err(e) => {
                log::error!("notifier: {e}");
                1
            }
        };
        // SAFETY: ends the child without running the parent's exit paths.
        unsafe { _exit(code) }
    }
    drop(theirs);
    let (pid, null) = match detach {
        true => (0, None),
        false => (pid, File::options().write(true).open("/dev/null").ok()),
    };
    Ok(Sender {
        link: Mutex::new(Link::Child(Some(ours), pid, null)),
    })
}

/// The forked notifier's own state: no client connection on stdin or
/// stdout, no listening socket, not root.
fn child_setup(account: Option<&Account>, detach: bool) -> Result<(), String> {
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    // The caller's stderr: inetd's client socket, or the pipe a caller of
    // sendmail may read to its end. Our lines go to syslog there.
    let give_up_stderr = detach || logging::stderr_is_client_socket();
    if detach {
        logging::detach_to_syslog();
    }
    // SAFETY: plain descriptor calls; null stays open across them.
    unsafe {
        dup2(null.as_raw_fd(), 0);
        dup2(null.as_raw_fd(), 1);
        if give_up_stderr {
            dup2(null.as_raw_fd(), 2);
        }
        if detach {
            setsid();
        }
    }
    if std::env::var("LISTEN_PID").ok() == Some(std::os::unix::process::parent_id().to_string()) {
        let n: RawFd = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        for fd in 3..3 + n.clamp(0, 1024) {
            // SAFETY: these are the passed sockets, which the child never uses.
            unsafe { close(fd) };
        }
    }
    if let Some(account) = account.filter(|_| privilege::is_root()) {
        privilege::drop_to(account)?;
    }
    Ok(())
}

fn connect_to(path: &Path) -> io::Result<OwnedFd> {
    let bytes = path.as_os_str().as_bytes();
    let mut addr = SockaddrUn {
        family: AF_UNIX as u16,
        path: [0; 108],
    };
    if bytes.len() >= addr.path.len() {
        return Err(io::Error::other("socket path too long"));
    }
    addr.path[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: plain socket calls; addr outlives connect.
    unsafe {
        let fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let len = (std::mem::size_of::<u16>() + bytes.len() + 1) as u32;
        if connect_fd(fd.as_raw_fd(), &addr, len) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// One packet with one descriptor, never blocking.
fn send_packet(socket: RawFd, packet: &[u8], fd: RawFd) -> io::Result<()> {
    let mut control = Control([0; 32]);
    // SAFETY: control is large and aligned enough for one header and fd.
    unsafe {
        let header = control.0.as_mut_ptr().cast::<CmsgHdr>();
        (*header).len = CMSG_LEN_ONE_FD;
        (*header).level = SOL_SOCKET;
        (*header).kind = SCM_RIGHTS;
        control
            .0
            .as_mut_ptr()
            .add(CMSG_DATA)
            .cast::<c_int>()
            .write_unaligned(fd);
    }
    let mut iov = IoVec {
        base: packet.as_ptr() as *mut c_void,
        len: packet.len(),
    };
    let msg = MsgHdr {
        name: std::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: control.0.as_mut_ptr().cast(),
        controllen: CMSG_SPACE_ONE_FD,
        flags: 0,
    };
    loop {
        // SAFETY: msg and what it points to outlive the call.
        let n = unsafe { sendmsg(socket, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// What one receive gave.
pub(super) enum Received {
    /// A notice and its file.
    Notice(Box<Notice>, File),
    /// A packet that was not a notice with one file: dropped.
    Bad,
    /// The other end closed.
    End,
}

/// Receives one packet (blocking), with its descriptor.
pub(super) fn receive(socket: RawFd) -> io::Result<Received> {
    let mut buf = vec![0u8; MAX_NOTICE + 1];
    let mut control = Control([0; 32]);
    let mut iov = IoVec {
        base: buf.as_mut_ptr().cast(),
        len: buf.len(),
    };
    let mut msg = MsgHdr {
        name: std::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: control.0.as_mut_ptr().cast(),
        controllen: control.0.len(),
        flags: 0,
    };
    let n = loop {
        // SAFETY: msg and what it points to outlive the call.
        let n = unsafe { recvmsg(socket, &mut msg, MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // A descriptor that came is ours to close, whatever else is wrong.
    let mut file = None;
    if msg.controllen >= CMSG_LEN_ONE_FD {
        // SAFETY: the kernel wrote at least one header and one fd.
        unsafe {
            let header = control.0.as_ptr().cast::<CmsgHdr>().read_unaligned();
            if header.level == SOL_SOCKET && header.kind == SCM_RIGHTS {
                let fd = control
                    .0
                    .as_ptr()
                    .add(CMSG_DATA)
                    .cast::<c_int>()
                    .read_unaligned();
                file = Some(File::from_raw_fd(fd));
            }
        }
    }
    if n == 0 && file.is_none() {
        return Ok(Received::End);
    }
    let notice = Notice::decode(&buf[..n]).filter(|_| msg.flags & MSG_CTRUNC == 0);
    Ok(match (notice, file) {
        (Some(notice), Some(file)) => Received::Notice(Box::new(notice), file),
        _ => Received::Bad,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_notice_and_its_file_cross_a_socketpair() {
        let mut fds = [-1; 2];
        assert_eq!(
            unsafe { socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds.as_mut_ptr()) },
            0
        );
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let path = std::env::temp_dir().join(format!("smtpbox-link-{}", std::process::id()));
        File::create(&path)
            .unwrap()
            .write_all(b"Subject: hi\r\n\r\nbody\r\n")
            .unwrap();
        let notice = Notice {
            maildir: "/m".into(),
            file: path.display().to_string(),
            id: "1.M2P3Q4".into(),
            size: 21,
            ..Notice::default()
        };
        let sender = Sender {
            link: Mutex::new(Link::Child(Some(a), 0, None)),
        };
        sender.send(&notice).unwrap();
        std::fs::remove_file(&path).unwrap();
        let Received::Notice(got, mut file) = receive(b.as_raw_fd()).unwrap() else {
            panic!("no notice");
        };
        assert_eq!(*got, notice);
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "Subject: hi\r\n\r\nbody\r\n");
        assert!(file.write_all(b"x").is_err(), "the file is read-only");
        sender.finish();
        assert!(matches!(receive(b.as_raw_fd()).unwrap(), Received::End));
    }

    #[test]
    fn a_full_socket_is_reported_at_once() {
        let mut fds = [-1; 2];
        assert_eq!(
            unsafe { socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds.as_mut_ptr()) },
            0
        );
        let (a, _b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let null = File::open("/dev/null").unwrap();
        let packet = vec![b'x'; 4096];
        let full = (0..10_000)
            .map(|_| send_packet(a.as_raw_fd(), &packet, null.as_raw_fd()))
            .find_map(Result::err)
            .expect("the socket never filled");
        assert_eq!(full.kind(), io::ErrorKind::WouldBlock);
    }
}
