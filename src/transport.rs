//! The byte streams a session runs over: a TCP socket, the local
//! submission socket (Unix, SPEC §5) or inetd's stdin/stdout (and TLS over
//! any of them). The connection code sees only [`Transport`], so one code
//! path serves them all.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

extern "C" {
    fn getsockopt(fd: i32, level: i32, name: i32, value: *mut Ucred, len: *mut u32) -> i32;
    fn recv(fd: i32, buf: *mut u8, len: usize, flags: i32) -> isize;
}

/// recv(2) flags: look without taking, and without waiting.
const MSG_PEEK: i32 = 2;
const MSG_DONTWAIT: i32 = 0x40;

/// SOL_SOCKET and SO_PEERCRED on Linux: asm-generic (x86, ARM, RISC-V),
/// except MIPS (0xffff and 18, arch/mips/include/uapi/asm/socket.h) and
/// PowerPC (SO_PEERCRED 21). With the generic values, MIPS answered
/// ENOPROTOOPT and every local-socket client was refused.
#[cfg(any(target_arch = "mips", target_arch = "mips64"))]
const SOL_SOCKET: i32 = 0xffff;
#[cfg(not(any(target_arch = "mips", target_arch = "mips64")))]
const SOL_SOCKET: i32 = 1;
#[cfg(any(target_arch = "mips", target_arch = "mips64"))]
const SO_PEERCRED: i32 = 18;
#[cfg(any(target_arch = "powerpc", target_arch = "powerpc64"))]
const SO_PEERCRED: i32 = 21;
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "powerpc",
    target_arch = "powerpc64"
)))]
const SO_PEERCRED: i32 = 17;

/// `struct ucred` (socket(7)).
#[repr(C)]
#[derive(Default)]
struct Ucred {
    pid: i32,
    uid: u32,
    gid: u32,
}

/// The uid of the process that connected `stream`, as the kernel recorded
/// it at connect(2) (SO_PEERCRED): what the client cannot lie about.
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    peer_cred(stream).map(|c| c.uid)
}

/// The pid of the process at the other end of `stream`: for a client, the
/// one that called listen(2) (1 when the service manager holds the socket
/// for socket activation).
pub fn peer_pid(stream: &UnixStream) -> io::Result<i32> {
    peer_cred(stream).map(|c| c.pid)
}

fn peer_cred(stream: &UnixStream) -> io::Result<Ucred> {
    let mut cred = Ucred::default();
    let mut len = std::mem::size_of::<Ucred>() as u32;
    // SAFETY: `cred` and `len` are valid for writes and outlive the call;
    // `len` tells the kernel how much of `cred` it may fill.
    let rc = unsafe {
        getsockopt(
            stream.as_raw_fd(),
            SOL_SOCKET,
            SO_PEERCRED,
            &mut cred,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<Ucred>() {
        return Err(io::Error::other("SO_PEERCRED: short answer"));
    }
    Ok(cred)
}

/// A bidirectional stream with timeouts.
pub trait Transport: Read + Write + Send {
    /// Sets the timeout of every later read and write.
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()>;

    /// True when the client has sent bytes that have not been read yet,
    /// checked without blocking (the synchronization rule of RFC 5321 §4.3.1
    /// before the greeting).
    fn input_pending(&mut self) -> bool;
}

impl Transport for TcpStream {
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        // A zero Duration is an error for the socket API: use the smallest one.
        let timeout = timeout.max(Duration::from_millis(1));
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }

    fn input_pending(&mut self) -> bool {
        socket_has_input(self)
    }
}

impl Transport for UnixStream {
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let timeout = timeout.max(Duration::from_millis(1));
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }

    fn input_pending(&mut self) -> bool {
        // std has no stable peek on Unix streams.
        let mut byte = 0u8;
        // SAFETY: a one-byte buffer that outlives the call.
        let n = unsafe { recv(self.as_raw_fd(), &mut byte, 1, MSG_PEEK | MSG_DONTWAIT) };
        n > 0
    }
}

/// Peeks without blocking; false on any error (a pipe, a closed socket).
fn socket_has_input(sock: &TcpStream) -> bool {
    if sock.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    let pending = matches!(sock.peek(&mut byte), Ok(n) if n > 0);
    let _ = sock.set_nonblocking(false);
    pending
}

/// inetd's connection: the client on stdin (fd 0) and stdout (fd 1).
pub struct Stdio {
    input: File,
    output: File,
}

impl Stdio {
    /// Takes over fds 0 and 1.
    pub fn new() -> Stdio {
        // SAFETY: fds 0 and 1 are open for the life of the process, and from
        // here on nothing else in smtpbox reads stdin or writes stdout.
        unsafe {
            Stdio {
                input: File::from_raw_fd(0),
                output: File::from_raw_fd(1),
            }
        }
    }

    /// fd 0 seen as a socket, when it is one (borrowed: never closed here).
    fn socket(&self) -> ManuallyDrop<TcpStream> {
        // SAFETY: the TcpStream is never dropped, so fd 0 is not closed; on a
        // pipe, socket calls on it fail with ENOTSOCK and nothing else.
        ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(0) })
    }

    /// The caller's uid when stdin is a Unix stream socket (the local
    /// socket under systemd's Accept=yes): SO_PEERCRED, as on the listener.
    pub fn unix_peer_uid(&self) -> Option<u32> {
        // SAFETY: as in `socket`: never dropped, so fd 0 stays open.
        let sock = ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(0) });
        // Fails on TCP sockets and pipes, where SO_PEERCRED means nothing.
        sock.local_addr().ok()?;
        peer_uid(&sock).ok()
    }

    /// The client's address and ours when stdin is a socket.
    pub fn addresses(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let sock = self.socket();
        (sock.peer_addr().ok(), sock.local_addr().ok())
    }
}

impl Default for Stdio {
    fn default() -> Stdio {
        Stdio::new()
    }
}

impl Read for Stdio {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Stdio {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.output.flush()
    }
}

impl Transport for Stdio {
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        // Pipes have no timeouts; inetd and systemd give us sockets.
        let sock = self.socket();
        let timeout = timeout.max(Duration::from_millis(1));
        let _ = sock.set_read_timeout(Some(timeout));
        let _ = sock.set_write_timeout(Some(timeout));
        Ok(())
    }

    fn input_pending(&mut self) -> bool {
        socket_has_input(&self.socket())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_uid_is_the_connecting_process_uid() {
        let (a, b) = UnixStream::pair().unwrap();
        let me = crate::privilege::effective_uid();
        assert_eq!(peer_uid(&a).unwrap(), me);
        assert_eq!(peer_uid(&b).unwrap(), me);
        let (mut a, mut b) = (a, b);
        assert!(!b.input_pending());
        a.write_all(b"x").unwrap();
        assert!(b.input_pending() && b.input_pending(), "peeked, not taken");
    }
}
