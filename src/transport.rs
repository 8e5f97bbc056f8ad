//! The byte streams a session runs over: a TCP socket or inetd's
//! stdin/stdout (and, later, TLS over either). The connection code sees
//! only [`Transport`], so one code path serves them all.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::Duration;

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
