//! One connection: drives a [`Session`] over a [`Transport`].
//!
//! This is the I/O around the sans-IO session: reads and writes, timeouts
//! and TLS. The session takes the bytes read ([`Session::push`]) and says
//! what to send and do; the protocol rules, the message phase included,
//! are all the session's, the content rules and storage the delivery
//! seam's. Every start mode (TCP, the local socket, inetd, `sendmail
//! -bs`) and the fuzz `session` target run this one driver. Replies are
//! queued and written in one go
//! when the input buffer runs dry, right before a read that would block
//! (PIPELINING, RFC 2920), as qmail does.

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::buffers;
use crate::config::Limits;
use crate::reply::Reply;
use crate::session::{Action, Session, Step};
use crate::transport::{Handshake, Transport};

/// Input buffer while reading commands: a pipelined group fits, and an
/// idle session stays small (longer lines are assembled by the framer).
const COMMAND_BUFFER: usize = 512;

/// Input buffer while reading message content: fewer, larger reads; one
/// of the thread's reused content buffers ([`buffers`]).
const CONTENT_BUFFER: usize = buffers::CONTENT;

/// Output kept between flushes; a larger one is given back.
const OUTPUT_BUFFER: usize = 4096;

/// Serves one session to its end, under the limits of its listener's
/// policy ([`Session::policy`]). Never panics on peer input; I/O errors
/// end the session.
/// `tls` is what STARTTLS and implicit TLS handshake with, when configured.
///
/// Stack budget: every stack page a session thread has touched stays
/// resident while it waits for its client, so it counts in the RSS of
/// each idle session (the README's idle-session row). glibc and std
/// already fill much of the top page (struct pthread, static TLS, thread
/// start); the aim is that a plaintext session that has sent EHLO stays
/// within two pages. For that, the Session and the Connection are built
/// on the heap in calls of their own (a `Box::new` of a large value leaves
/// its temporary in the caller's frame), the session loop (`run`) is a
/// call of its own, and the session keeps its message phase boxed and its
/// rare paths in calls of their own.
pub fn serve(
    transport: Box<dyn Transport>,
    session: Box<Session>,
    tls: Option<Arc<dyn Handshake>>,
) {
    serve_tapped(transport, session, tls, None);
}

/// What [`serve_tapped`] shows each step to.
pub type Tap<'a> = &'a mut dyn FnMut(&Session, &Step);

/// [`serve`], showing every step to `tap` before its replies are sent:
/// the fuzz `session` target checks the protocol's rules there, on the
/// driver every start mode uses.
pub fn serve_tapped(
    transport: Box<dyn Transport>,
    session: Box<Session>,
    tls: Option<Arc<dyn Handshake>>,
    tap: Option<Tap<'_>>,
) {
    let peer = session.peer().describe();
    log::info!("connect from {peer}");
    let mut conn = Connection::boxed(transport, session, tls);
    let reason = match conn.run(tap) {
        Ok(reason) => reason,
        Err(e) if is_timeout(&e) => conn.timed_out(),
        Err(e) => {
            log::debug!("connection error from {peer}: {e}");
            "connection error"
        }
    };
    log::info!("disconnect from {peer}: {reason}");
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

struct Connection {
    input: Input,
    session: Session,
    tls: Option<Arc<dyn Handshake>>,
}

impl Connection {
    /// The connection, made on the heap in a call of its own (see the
    /// stack budget at [`serve`]).
    #[inline(never)]
    fn boxed(
        transport: Box<dyn Transport>,
        session: Box<Session>,
        tls: Option<Arc<dyn Handshake>>,
    ) -> Box<Connection> {
        Box::new(Connection {
            input: Input::new(Wire::new(transport, &session.policy().limits)),
            session: *session,
            tls,
        })
    }

    /// Sends the session's replies and does what it says, and pushes it
    /// the client's bytes, until it says close or the client goes.
    #[inline(never)] // The stack budget at `serve`.
    fn run(&mut self, mut tap: Option<Tap<'_>>) -> io::Result<&'static str> {
        // RFC 8314: on an implicit-TLS port the handshake comes first.
        if self.session.implicit_tls() && !self.start_tls() {
            return Ok("TLS handshake failed");
        }
        let wire = self.input.get_mut();
        let mut step = self.session.open(|| wire.transport.input_pending());
        loop {
            if let Some(tap) = tap.as_mut() {
                tap(&self.session, &step);
            }
            for reply in &step.replies {
                self.send(reply);
            }
            if !step.notices.is_empty() {
                self.notify(&step.notices)?;
            }
            match step.action {
                Action::Continue => {}
                Action::Close(reason) => {
                    self.input.get_mut().flush()?;
                    return Ok(reason);
                }
                Action::StartTls => {
                    if !self.start_tls() {
                        return Ok("TLS handshake failed");
                    }
                }
            }
            step = match self.next_step()? {
                Some(next) => next,
                None => return Ok(self.session.input_closed()),
            };
        }
    }

    /// A message was stored and `notify` is set: its 250 goes out first,
    /// then its notices (SPEC §7a). A call of its own: the stack budget
    /// at `serve`.
    #[cold]
    #[inline(never)]
    fn notify(&mut self, notices: &[crate::notify::Notice]) -> io::Result<()> {
        let written = self.input.get_mut().flush();
        crate::notify::send_all(notices);
        written
    }

    /// Reads and pushes the client's bytes until the session answers;
    /// None at the end of the input.
    fn next_step(&mut self) -> io::Result<Option<Step>> {
        loop {
            let size = match self.session.reading_content() {
                true => CONTENT_BUFFER,
                false => COMMAND_BUFFER,
            };
            self.input.resize(size);
            // Mid-line the client is still sending: replies wait, so that
            // a pipelined group split across two reads still gets one write.
            self.input.get_mut().mid_line = self.session.hold_replies();
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let (used, step) = self.session.push(buf);
            self.input.consume(used);
            if step.is_some() {
                return Ok(step);
            }
        }
    }

    /// The session ran out of time: the session's last words, flushed.
    #[cold]
    #[inline(never)] // The stack budget at `serve`.
    fn timed_out(&mut self) -> &'static str {
        let step = self.session.timed_out();
        for reply in &step.replies {
            self.send(reply);
        }
        self.input.get_mut().mid_line = false;
        let _ = self.input.get_mut().flush();
        match step.action {
            Action::Close(reason) => reason,
            _ => "timeout",
        }
    }

    /// Queues a reply; it is written when the input runs dry. Every
    /// rejection is logged with its code and reason here, in one place.
    fn send(&mut self, reply: &Reply) {
        if reply.is_error() {
            log::info!(
                "client={} rejected: {}",
                self.session.peer().describe(),
                reply
            );
        }
        reply.write_to(&mut self.input.get_mut().output);
    }

    /// Flushes the replies, throws away every byte the client sent before
    /// the handshake (CVE-2011-0411: injected commands must never run
    /// under TLS), and handshakes; the session then forgets everything
    /// (RFC 3207 §4.2). False when the handshake failed.
    #[inline(never)] // Keeps its frame off the stack of idle sessions.
    fn start_tls(&mut self) -> bool {
        let peer = self.session.peer().describe();
        let Some(handshake) = self.tls.clone() else {
            log::warn!("client={peer}: TLS requested but no certificate is configured");
            return false;
        };
        let buffered = self.input.buffer().len();
        self.input.consume(buffered);
        match self.input.get_mut().start_tls(&*handshake) {
            Ok(description) => {
                log::info!("client={peer}: {description}");
                self.session.tls_started(description);
                true
            }
            Err(reason) => {
                log::warn!("client={peer}: TLS handshake failed: {reason}");
                false
            }
        }
    }
}

/// A buffered reader over the [`Wire`] whose buffer is resized between
/// commands and content (std's `BufReader` has a fixed capacity).
struct Input {
    wire: Wire,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl Input {
    fn new(wire: Wire) -> Input {
        Input {
            wire,
            buf: vec![0; COMMAND_BUFFER],
            pos: 0,
            end: 0,
        }
    }

    fn get_mut(&mut self) -> &mut Wire {
        &mut self.wire
    }

    /// The bytes read from the client and not consumed yet.
    fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// Sets the buffer size, keeping what is buffered; a shrink waits until
    /// what is buffered fits. A content buffer is the thread's spare when it
    /// has one and goes back to it on the shrink ([`buffers`]); any other
    /// comes zeroed from the allocator (calloc) rather than from
    /// `Vec::resize`, which fills it byte by byte.
    fn resize(&mut self, size: usize) {
        let pending = self.end - self.pos;
        if self.buf.len() == size || pending > size {
            return;
        }
        let mut buf = match size {
            CONTENT_BUFFER => buffers::take(),
            _ => vec![0; size],
        };
        buf[..pending].copy_from_slice(&self.buf[self.pos..self.end]);
        let old = std::mem::replace(&mut self.buf, buf);
        (self.pos, self.end) = (0, pending);
        buffers::give(old);
    }
}

impl Read for Input {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Input {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.end {
            self.end = self.wire.read(&mut self.buf)?;
            self.pos = 0;
        }
        Ok(&self.buf[self.pos..self.end])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.end);
    }
}

/// The transport as the framer sees it: reads flush the queued replies
/// first, so a pipelined group is answered in one write, and only when we
/// would otherwise wait.
struct Wire {
    transport: Box<dyn Transport>,
    output: Vec<u8>,
    /// Set by the framer while a command line is incomplete.
    mid_line: bool,
}

impl Wire {
    /// Wraps the raw transport in the session's [`Deadline`]: every byte
    /// read or written later, TLS handshakes included, obeys it.
    fn new(transport: Box<dyn Transport>, limits: &Limits) -> Wire {
        Wire {
            transport: Box::new(Deadline::new(transport, limits)),
            output: Vec::new(),
            mid_line: false,
        }
    }

    /// Sends what is queued, then replaces the transport with TLS over it.
    fn start_tls(&mut self, handshake: &dyn Handshake) -> Result<String, String> {
        self.mid_line = false;
        self.flush().map_err(|e| e.to_string())?;
        let plain = std::mem::replace(&mut self.transport, Box::new(Closed));
        let (secure, description) = handshake.accept(plain)?;
        self.transport = secure;
        Ok(description)
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.mid_line {
            self.flush()?;
        }
        self.transport.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let result = self.transport.write_all(&self.output);
        self.output.clear();
        if self.output.capacity() > OUTPUT_BUFFER {
            self.output.shrink_to(OUTPUT_BUFFER);
        }
        result?;
        self.transport.flush()
    }
}

/// The session's clock around the raw transport: each read may wait
/// `timeout`, and nothing is read after `session_timeout`. Writes get one
/// more second past the deadline, so that the 421 saying so goes out.
struct Deadline {
    inner: Box<dyn Transport>,
    timeout: Duration,
    deadline: Instant,
    /// The socket timeout last set, to skip a setsockopt when unchanged.
    applied: Option<Duration>,
}

/// How long past the session deadline the last replies may take.
const LAST_WORDS: Duration = Duration::from_secs(1);

/// `at + wait`, or the latest instant that can be made when that
/// overflows.
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait).unwrap_or_else(|| {
        let mut step = wait;
        let mut latest = at;
        while !step.is_zero() {
            match latest.checked_add(step) {
                Some(t) => latest = t,
                None => step /= 2,
            }
        }
        latest
    })
}

impl Deadline {
    fn new(inner: Box<dyn Transport>, limits: &Limits) -> Deadline {
        Deadline {
            inner,
            timeout: limits.timeout,
            // Config bounds keep this far from overflow; Limits' fields are
            // public, so a session must not panic on one anyway.
            deadline: later(Instant::now(), limits.session_timeout),
            applied: None,
        }
    }

    /// Sets the socket timeout to what is left before `deadline`.
    fn arm(&mut self, deadline: Instant) -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "session timeout"));
        }
        let timeout = left.min(self.timeout);
        if self.applied != Some(timeout) {
            self.inner.set_timeout(timeout)?;
            self.applied = Some(timeout);
        }
        Ok(())
    }
}

// With SO_RCVTIMEO set, Linux answers a stop and continue (SIGSTOP, a
// debugger attaching) with EINTR instead of restarting the call: retry.
impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.arm(self.deadline)?;
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            self.arm(later(self.deadline, LAST_WORDS))?;
            match self.inner.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Transport for Deadline {
    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.timeout = timeout;
        self.applied = None;
        Ok(())
    }

    fn input_pending(&mut self) -> bool {
        self.inner.input_pending()
    }
}

/// The transport while it is lent to the TLS handshake.
struct Closed;

impl Read for Closed {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

impl Write for Closed {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::BrokenPipe.into())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Closed {
    fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }

    fn input_pending(&mut self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Invocation, Mode, Policy};
    use crate::delivery::Maildirs;
    use crate::session::{Peer, Services};
    use std::io::Cursor;
    use std::sync::Mutex;

    /// An in-memory transport: all input arrives in one read, like one
    /// TCP segment; writes are recorded one by one.
    struct Fake {
        /// Each read returns at most what is left of the first packet.
        packets: std::collections::VecDeque<Cursor<Vec<u8>>>,
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        pending: bool,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            while let Some(packet) = self.packets.front_mut() {
                if packet.get_ref().is_empty() {
                    // An empty packet stands for a signal interrupting the read.
                    self.packets.pop_front();
                    return Err(io::ErrorKind::Interrupted.into());
                }
                match packet.read(buf)? {
                    0 => {
                        self.packets.pop_front();
                    }
                    n => return Ok(n),
                }
            }
            Ok(0)
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Transport for Fake {
        fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
        fn input_pending(&mut self) -> bool {
            self.pending
        }
    }

    #[test]
    fn input_resize_keeps_buffered_bytes_and_shrinks_only_when_they_fit() {
        let fake = Fake {
            packets: [Cursor::new(b"0123456789".repeat(100))].into(),
            writes: Arc::default(),
            pending: false,
        };
        let limits = Limits {
            timeout: Duration::from_secs(5),
            session_timeout: Duration::from_secs(5),
            max_message_size: 0,
            max_recipients: 1,
            max_errors: 1,
        };
        let mut input = Input::new(Wire::new(Box::new(fake), &limits));
        assert_eq!(input.fill_buf().unwrap().len(), COMMAND_BUFFER);
        input.consume(5);
        input.resize(CONTENT_BUFFER);
        assert_eq!(input.buf.len(), CONTENT_BUFFER);
        assert_eq!(&input.buffer()[..5], b"56789");
        assert_eq!(input.buffer().len(), COMMAND_BUFFER - 5);
        // The rest of the packet arrives in the bigger buffer.
        input.consume(COMMAND_BUFFER - 5);
        assert_eq!(input.fill_buf().unwrap().len(), 1000 - COMMAND_BUFFER);
        // 488 bytes buffered, 512 would fit: shrink.
        input.resize(COMMAND_BUFFER);
        assert_eq!(input.buf.len(), COMMAND_BUFFER);
        assert_eq!(input.buffer(), &b"0123456789".repeat(100)[COMMAND_BUFFER..]);
        // More buffered than a command buffer holds: the shrink waits.
        let mut input = Input::new(Wire::new(
            Box::new(Fake {
                packets: [Cursor::new(vec![b'x'; 2000])].into(),
                writes: Arc::default(),
                pending: false,
            }),
            &limits,
        ));
        input.resize(CONTENT_BUFFER);
        assert_eq!(input.fill_buf().unwrap().len(), 2000);
        input.resize(COMMAND_BUFFER);
        assert_eq!(input.buf.len(), CONTENT_BUFFER);
        input.consume(1600);
        input.resize(COMMAND_BUFFER);
        assert_eq!(
            (input.buf.len(), input.buffer()),
            (COMMAND_BUFFER, &[b'x'; 400][..])
        );
    }

    /// Runs one session over `input` from `remote`; returns each write.
    fn run(remote: &str, input: &[u8], pending: bool, maildir: &std::path::Path) -> Vec<String> {
        run_packets(remote, &[input], pending, maildir)
    }

    /// Like `run`, the input arriving in separate packets (reads).
    fn run_packets(
        remote: &str,
        packets: &[&[u8]],
        pending: bool,
        maildir: &std::path::Path,
    ) -> Vec<String> {
        let args: Vec<String> = [
            "-m",
            &maildir.display().to_string(),
            "-H",
            "mx.test",
            "-d",
            "example.com",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // No config file, not even the host's default one.
        let Ok(Invocation::Run(config, _)) =
            config::from_args_with_default(&args, std::path::Path::new(""))
        else {
            panic!("config");
        };
        let config = Arc::new(config);
        let peer = Peer::network(
            Some(remote.parse().unwrap()),
            Some("192.0.2.25:25".parse().unwrap()),
        );
        let services = Services {
            store: Arc::new(Maildirs),
            users: None,
            tls: false,
        };
        let policy = Policy::new(&config, None, Mode::Smtp);
        let session = Session::new(Arc::clone(&config), services, peer, &policy);
        let writes = Arc::new(Mutex::new(Vec::new()));
        let fake = Fake {
            packets: packets.iter().map(|p| Cursor::new(p.to_vec())).collect(),
            writes: Arc::clone(&writes),
            pending,
        };
        serve(Box::new(fake), Box::new(session), None);
        let out = writes
            .lock()
            .unwrap()
            .iter()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        out
    }

    /// A Maildir path under the temp dir for one test, removed on drop
    /// (the session creates it when it delivers).
    struct TempDir(std::path::PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("smtpbox-conn-{}-{}", tag, std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }

    fn stored(maildir: &std::path::Path) -> usize {
        std::fs::read_dir(maildir.join("new")).map_or(0, |d| d.count())
    }

    const TRANSACTION: &[u8] = b"EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<root@example.com>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n";

    #[test]
    fn remote_client_talking_before_greeting_gets_554() {
        let dir = temp("early");
        let out = run("192.0.2.1:4000", b"EHLO c\r\n", true, &dir);
        assert_eq!(
            out.concat(),
            "554 5.5.0 Protocol error: wait for the server's reply\r\n"
        );
    }

    #[test]
    fn remote_client_sending_content_before_354_gets_554() {
        let dir = temp("before354");
        let out = run("192.0.2.1:4000", TRANSACTION, false, &dir).concat();
        assert!(
            out.ends_with(
                "250 2.1.5 Ok\r\n554 5.5.0 Protocol error: wait for the server's reply\r\n"
            ),
            "{out}"
        );
        assert_eq!(stored(&dir), 0);
    }

    #[test]
    fn loopback_client_may_pipeline_content() {
        let dir = temp("loop354");
        let out = run("127.0.0.1:4000", TRANSACTION, false, &dir).concat();
        assert!(out.contains("354 "), "{out}");
        assert!(out.contains("250 2.0.0 Ok: queued as "), "{out}");
        assert!(out.ends_with("221 2.0.0 Bye\r\n"), "{out}");
        assert_eq!(stored(&dir), 1);
    }

    #[test]
    fn pipelined_group_is_answered_in_one_write() {
        let dir = temp("pipe");
        let out = run("192.0.2.1:4000", b"EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<root@example.com>\r\nRSET\r\nNOOP\r\nQUIT\r\n", false, &dir);
        assert_eq!(
            out.len(),
            2,
            "greeting, then one write for the whole group: {out:?}"
        );
        assert!(out[0].starts_with("220 mx.test"));
        assert!(
            out[1].ends_with(
                "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"
            ),
            "{}",
            out[1]
        );
    }

    #[test]
    fn pipelined_group_split_mid_line_is_still_one_write() {
        let dir = temp("split");
        let out = run_packets(
            "192.0.2.1:4000",
            &[
                b"EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<root@exa",
                b"mple.com>\r\nNOOP\r\n",
                b"QUIT\r\n",
            ],
            false,
            &dir,
        );
        // Greeting; the whole group (the second packet ends at a line end,
        // so its replies go out before the third read); then QUIT's.
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(
            out[1].ends_with("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n"),
            "{}",
            out[1]
        );
        assert_eq!(out[2], "221 2.0.0 Bye\r\n");
    }

    #[test]
    fn interrupted_read_is_retried_not_fatal() {
        let dir = temp("eintr");
        let out = run_packets(
            "127.0.0.1:4000",
            &[b"NOOP\r\n", b"", b"QUIT\r\n"],
            false,
            &dir,
        );
        assert_eq!(
            out.concat().lines().last(),
            Some("221 2.0.0 Bye"),
            "{out:?}"
        );
    }

    #[test]
    fn overlong_line_is_skipped_and_session_goes_on() {
        let dir = temp("long");
        let mut input = vec![b'X'; 100_000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let out = run("127.0.0.1:4000", &input, false, &dir).concat();
        assert!(
            out.ends_with("500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n"),
            "{out}"
        );
    }

    #[test]
    fn a_deadline_past_the_clock_range_saturates() {
        let now = Instant::now();
        let latest = later(now, Duration::MAX);
        assert!(latest > now + Duration::from_secs(86_400 * 365 * 100));
        assert!(latest.checked_add(Duration::from_secs(1)).is_none());
        assert_eq!(later(latest, LAST_WORDS), latest);
        assert_eq!(later(now, LAST_WORDS), now + LAST_WORDS);
    }
}
