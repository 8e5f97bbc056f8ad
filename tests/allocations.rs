//! Heap allocations on the hot path, counted with a counting global
//! allocator around the library's real connection code (`conn::serve` over
//! an in-memory transport, delivering into a real Maildir). musl's
//! allocator is slow: every allocation per command or per message costs
//! CPU on an appliance. The bounds pin today's counts so they cannot creep
//! back; lower them when a change removes more.
//!
//! This file holds one test: the counter is process-wide, so no other test
//! may allocate while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smtpbox::config::{self, Invocation, Mode};
use smtpbox::conn;
use smtpbox::delivery::Maildirs;
use smtpbox::session::{Peer, Services, Session};
use smtpbox::transport::Transport;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A pipelining client: each packet is what it sends in one go (a group
/// of commands up to DATA, the content, ...); one read returns bytes of
/// one packet only, as a socket would after the client waited for a reply.
struct Client {
    packets: VecDeque<io::Cursor<Vec<u8>>>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(packet) = self.packets.front_mut() {
            let n = packet.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            self.packets.pop_front();
        }
        Ok(0)
    }
}

impl Write for Client {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Client {
    fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }

    fn input_pending(&mut self) -> bool {
        false
    }
}

/// Serves one session that sends `input`; returns the allocations counted
/// while it ran and what the server wrote.
fn session(maildir: &Path, input: &[u8]) -> (usize, String) {
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
    let Ok(Invocation::Run(config, _)) = config::from_args(&args) else {
        panic!("config");
    };
    let policy = config::Policy::new(&config, None, Mode::Smtp);
    let services = Services {
        store: Arc::new(Maildirs),
        users: None,
        tls: false,
    };
    let peer = Peer::network(
        Some("192.0.2.1:4000".parse().unwrap()),
        Some("192.0.2.25:25".parse().unwrap()),
    );
    // Room for every reply up front: the client's own buffer must not grow
    // while the server's allocations are counted.
    let output = Arc::new(Mutex::new(Vec::with_capacity(1 << 20)));
    // A new packet after each DATA: the client waits for 354 there.
    let mut packets = VecDeque::new();
    let mut rest = input;
    while let Some(at) = find(rest, b"DATA\r\n") {
        let (packet, tail) = rest.split_at(at + 6);
        packets.push_back(io::Cursor::new(packet.to_vec()));
        rest = tail;
    }
    packets.push_back(io::Cursor::new(rest.to_vec()));
    let client = Client {
        packets,
        output: Arc::clone(&output),
    };
    let session = Box::new(Session::new(Arc::new(config), services, peer, &policy));
    let transport: Box<dyn Transport> = Box::new(client);
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    conn::serve(transport, session, None);
    let counted = ALLOCATIONS.load(Ordering::SeqCst) - before;
    let out = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    (counted, out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

const MESSAGE: &[u8] =
    b"MAIL FROM:<a@b.org>\r\nRCPT TO:<root@example.com>\r\nDATA\r\nSubject: x\r\n\r\nhello\r\n.\r\n";

/// `n` copies of `unit` between EHLO and QUIT.
fn script(unit: &[u8], n: usize) -> Vec<u8> {
    let mut s = b"EHLO client.test\r\n".to_vec();
    for _ in 0..n {
        s.extend_from_slice(unit);
    }
    s.extend_from_slice(b"QUIT\r\n");
    s
}

/// Allocations per `unit` in a session: the difference between a session
/// with `N` of them and one with none, divided by `N`.
fn per_unit(maildir: &Path, unit: &[u8]) -> (f64, String) {
    const N: usize = 20;
    // A first session warms up what is made once per process.
    session(maildir, &script(unit, 1));
    let (base, _) = session(maildir, &script(unit, 0));
    let (many, out) = session(maildir, &script(unit, N));
    ((many.saturating_sub(base)) as f64 / N as f64, out)
}

fn stored(maildir: &Path) -> usize {
    std::fs::read_dir(maildir.join("new")).map_or(0, |d| d.count())
}

/// A directory under the temp dir, removed on drop (a failure included).
struct Temp(PathBuf);

impl std::ops::Deref for Temp {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp() -> Temp {
    let p = std::env::temp_dir().join(format!("smtpbox-allocations-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    Temp(p)
}

#[test]
fn hot_path_allocations_stay_pinned() {
    let dir = temp();
    let maildir = dir.join("Maildir");

    let (noop, out) = per_unit(&maildir, b"NOOP\r\n");
    assert_eq!(out.matches("250 2.0.0 Ok").count(), 20, "{out}");

    let (rset, out) = per_unit(&maildir, b"MAIL FROM:<a@b.org>\r\nRSET\r\n");
    assert_eq!(out.matches("250 2.1.0").count(), 20, "{out}");

    let rcpt_unit = b"MAIL FROM:<a@b.org>\r\nRCPT TO:<root@example.com>\r\nRSET\r\n";
    let (rcpt, out) = per_unit(&maildir, rcpt_unit);
    assert_eq!(out.matches("250 2.1.5").count(), 20, "{out}");
    let rcpt = rcpt - rset;

    let before = stored(&maildir);
    let (message, out) = per_unit(&maildir, MESSAGE);
    assert_eq!(out.matches("250 2.0.0 Ok: queued as").count(), 20, "{out}");
    // One warm-up message and twenty counted ones, all on disk.
    assert_eq!(stored(&maildir) - before, 21, "{out}");

    println!(
        "allocations: NOOP {noop:.1}, MAIL+RSET {rset:.1}, RCPT {rcpt:.1}, \
         delivered message {message:.1}"
    );
    // Today's counts, as measured (each includes the Vec of the Step that
    // carries its reply). Lower them when a change removes more.
    assert!(noop <= 1.5, "NOOP allocates {noop:.1} times");
    assert!(rset <= 6.0, "MAIL FROM + RSET allocate {rset:.1} times");
    assert!(rcpt <= 13.0, "RCPT TO allocates {rcpt:.1} times");
    assert!(
        message <= 64.5,
        "a delivered message allocates {message:.1} times"
    );
}
