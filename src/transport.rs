//! The byte streams a session runs over: a TCP socket, the local
//! submission socket (Unix, SPEC §5) or inetd's stdin/stdout (and TLS over
//! any of them). The connection code sees only [`Transport`], so one code
//! path serves them all.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

// recv(2) flags (look without taking, and without waiting) and the
// SO_PEERCRED option, whose numbers differ on MIPS and PowerPC: with the
// generic ones MIPS answered ENOPROTOOPT and refused every local client.
use crate::sys::{MSG_DONTWAIT, MSG_PEEK, SOL_SOCKET, SO_PEERCRED};

extern "C" {
    fn getsockopt(fd: i32, level: i32, name: i32, value: *mut Ucred, len: *mut u32) -> i32;
    fn recv(fd: i32, buf: *mut u8, len: usize, flags: i32) -> isize;
    fn poll(fds: *mut PollFd, nfds: std::ffi::c_ulong, timeout: i32) -> i32;
}

/// `struct pollfd` (poll(2)).
#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

/// poll(2): data to read (a connection to accept). The same on every
/// architecture.
const POLLIN: i16 = 1;

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
pub fn peer_uid(stream: &impl AsRawFd) -> io::Result<u32> {
    peer_cred(stream).map(|c| c.uid)
}

/// The pid of the process at the other end of `stream`: for a client, the
/// one that called listen(2) (1 when the service manager holds the socket
/// for socket activation).
pub fn peer_pid(stream: &UnixStream) -> io::Result<i32> {
    peer_cred(stream).map(|c| c.pid)
}

fn peer_cred(stream: &impl AsRawFd) -> io::Result<Ucred> {
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

/// `timeout` as a socket timeout: a zero one is an error for the socket
/// API (and would mean "never" to the kernel), so the smallest one.
fn socket_timeout(timeout: Duration) -> Duration {
    timeout.max(Duration::from_millis(1))
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

/// What turns a plain transport into a secure one, for STARTTLS and
/// implicit TLS: the certificate pair ([`crate::tls::TlsFiles`]), or a
/// fuzz target's stand-in that pretends.
pub trait Handshake: Send + Sync {
    /// Runs the server side of a handshake over `plain`: the secure
    /// transport and its description for logs and the Received header
    /// (`TLSv1.3 TLS_AES_256_GCM_SHA384`), or why it failed.
    fn accept(&self, plain: Box<dyn Transport>) -> Result<(Box<dyn Transport>, String), String>;
}

impl Transport for TcpStream {
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let timeout = socket_timeout(timeout);
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }

    fn input_pending(&mut self) -> bool {
        peek_pending(self.as_raw_fd())
    }
}

/// A connection accepted from a listener prepared by [`prepare_listener`]:
/// on Linux an accepted TCP socket starts as a copy of its listener's, so
/// TCP_NODELAY and the write timeout are already set, with no system call
/// per connection. Only the read timeout, which on the listener bounds
/// accept(2), is set here.
pub struct Accepted {
    stream: TcpStream,
    /// The socket's read and write timeouts when known.
    read: Option<Duration>,
    write: Option<Duration>,
}

impl Accepted {
    /// `inherited` is the listener's write timeout and accept wait, when
    /// [`inherits`] said that connections start with them.
    pub fn new(stream: TcpStream, inherited: Option<(Duration, Duration)>) -> Accepted {
        Accepted {
            stream,
            read: inherited.map(|(_, wait)| socket_timeout(wait)),
            write: inherited.map(|(timeout, _)| socket_timeout(timeout)),
        }
    }
}

impl Read for Accepted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for Accepted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Transport for Accepted {
    /// Sets each of the two timeouts only when it differs.
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let timeout = Some(socket_timeout(timeout));
        if self.read != timeout {
            self.read = None; // Unknown if the call fails.
            self.stream.set_read_timeout(timeout)?;
            self.read = timeout;
        }
        if self.write != timeout {
            self.write = None;
            self.stream.set_write_timeout(timeout)?;
            self.write = timeout;
        }
        Ok(())
    }

    fn input_pending(&mut self) -> bool {
        self.stream.input_pending()
    }
}

/// Sets on a TCP listener what its connections should start with: no
/// Nagle (replies are batched by the connection: Nagle would only add a
/// delayed-ACK stall to the second write of a split group) and `timeout`
/// on writes. Its read timeout bounds each accept(2), which then fails
/// with WouldBlock: how an accepting thread learns it has waited `wait`.
pub fn prepare_listener(
    listener: &TcpListener,
    timeout: Duration,
    wait: Duration,
) -> io::Result<()> {
    // SAFETY: borrowed for three setsockopt calls and never dropped, so the
    // listener's descriptor is not closed; these socket options mean the
    // same on a listening socket.
    let sock = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(listener.as_raw_fd()) });
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(socket_timeout(wait)))?;
    sock.set_write_timeout(Some(socket_timeout(timeout)))
}

/// True when `stream`, accepted from a listener that [`prepare_listener`]
/// set to `timeout` and `wait`, came with those options (Linux copies the
/// listening socket; checked once rather than assumed, for kernels and
/// sandboxes that do otherwise).
pub fn inherits(stream: &TcpStream, timeout: Duration, wait: Duration) -> bool {
    stream.nodelay().unwrap_or(false)
        && stream.read_timeout().ok() == Some(Some(socket_timeout(wait)))
        && stream.write_timeout().ok() == Some(Some(socket_timeout(timeout)))
}

/// Sets how long each accept(2) on the local socket may wait (connections
/// to a Unix socket do not inherit it: they are new sockets, not copies).
pub fn bound_accept(listener: &UnixListener, wait: Duration) -> io::Result<()> {
    // SAFETY: as in `prepare_listener`: borrowed, never dropped.
    let sock = ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(listener.as_raw_fd()) });
    sock.set_read_timeout(Some(socket_timeout(wait)))
}

/// Waits, with no timeout, until `listener` has a connection to accept
/// (or poll(2) fails: the caller's accept, which has its own timeout,
/// then decides). A listener's last waiting thread sleeps here rather
/// than in a timed accept, so an idle server makes no system call at all;
/// level-triggered, so a connection already queued returns at once.
pub fn wait_readable(listener: &impl AsRawFd) {
    let mut fds = PollFd {
        fd: listener.as_raw_fd(),
        events: POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd that outlives the call; the descriptor is
    // borrowed from a live listener.
    unsafe { poll(&mut fds, 1, -1) };
}

impl Transport for UnixStream {
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let timeout = socket_timeout(timeout);
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }

    fn input_pending(&mut self) -> bool {
        peek_pending(self.as_raw_fd())
    }
}

/// Peeks one byte without blocking, in one recv(2) (std's peek on a
/// blocking socket would need two more calls to switch to non-blocking
/// and back); false on any error (a pipe, a closed socket).
fn peek_pending(fd: i32) -> bool {
    let mut byte = 0u8;
    // SAFETY: a one-byte buffer that outlives the call; `fd` is borrowed
    // from a live socket (or is fd 0, where an error is the answer).
    let n = unsafe { recv(fd, &mut byte, 1, MSG_PEEK | MSG_DONTWAIT) };
    n > 0
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
        peer_uid(&*sock).ok()
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
        let timeout = socket_timeout(timeout);
        let _ = sock.set_read_timeout(Some(timeout));
        let _ = sock.set_write_timeout(Some(timeout));
        Ok(())
    }

    fn input_pending(&mut self) -> bool {
        peek_pending(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_inherit_a_prepared_listeners_options() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (timeout, wait) = (Duration::from_millis(2500), Duration::from_millis(1500));
        prepare_listener(&listener, timeout, wait).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        assert!(
            inherits(&stream, timeout, wait),
            "Linux copies the listener's options"
        );
        assert!(!inherits(&stream, wait, timeout));
        // The read timeout bounds accept(2).
        let start = std::time::Instant::now();
        prepare_listener(&listener, timeout, Duration::from_millis(50)).unwrap();
        let e = listener.accept().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn an_accepted_connection_sets_only_the_timeout_it_lacks() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (timeout, wait) = (Duration::from_secs(7), Duration::from_secs(2));
        prepare_listener(&listener, timeout, wait).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        let probe = stream.try_clone().unwrap();
        let mut accepted = Accepted::new(stream, Some((timeout, wait)));
        accepted.set_timeout(timeout).unwrap();
        assert_eq!(probe.read_timeout().unwrap(), Some(timeout));
        assert_eq!(probe.write_timeout().unwrap(), Some(timeout));
        // Both, when neither is known.
        let mut unknown = Accepted::new(probe.try_clone().unwrap(), None);
        unknown.set_timeout(Duration::from_secs(3)).unwrap();
        assert_eq!(probe.read_timeout().unwrap(), Some(Duration::from_secs(3)));
        assert_eq!(probe.write_timeout().unwrap(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn input_pending_peeks_without_taking_or_blocking() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        assert!(!stream.input_pending());
        client.write_all(b"x").unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while !stream.input_pending() {
            assert!(std::time::Instant::now() < end);
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x", "peeked, not taken");
    }

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
