//! The rules that apply only to clients that are not on loopback (SPEC §5,
//! §6): `554 5.5.0` for talking before the greeting or sending content
//! before 354, and `538 5.7.11` for AUTH in clear text. Each test runs the
//! server and its client in a private network namespace of its own, where
//! the loopback device also carries 192.0.2.1 (TEST-NET-1, RFC 5737): a
//! connection to that address comes from that address, a peer that is not
//! loopback, and nothing leaves the namespace. Root only (unshare).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::*;

/// The address the namespace's loopback device gets besides 127.0.0.1.
const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// A users file, so that AUTH exists (its password is never tried here).
const USERS: &str =
    "alice:$6$remotesalt$.1KLn7kzE.sV2TgUAjpTG/gpzzaMrfIyg.RwEAV6M0cBhtEQnnrQzgzt2KlSRsnATA7ImnGIs77zcnkpVyiOm1\n";

extern "C" {
    fn unshare(flags: i32) -> i32;
    fn kill(pid: i32, signal: i32) -> i32;
}
const CLONE_NEWNET: i32 = 0x4000_0000;
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

/// Runs `test` on a thread of its own that has moved into a new network
/// namespace (a thread's namespace is its own, and the processes it starts
/// inherit it); None when not root and not under CI.
fn in_private_network<T: Send + 'static>(test: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    if !root_or_skip("a private network namespace needs unshare(CLONE_NEWNET)") {
        return None;
    }
    let worker = thread::spawn(move || {
        // SAFETY: unshare takes flags only; it changes this thread alone.
        let rc = unsafe { unshare(CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        ip(&["link", "set", "lo", "up"]);
        ip(&["addr", "add", &format!("{REMOTE}/32"), "dev", "lo"]);
        test()
    });
    Some(
        worker
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e)),
    )
}

fn ip(args: &[&str]) {
    let out = output_bounded(Command::new("ip").args(args), Duration::from_secs(10));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server listening on 192.0.2.1 (beside the harness's 127.0.0.1
/// listener), and that listener's address.
fn remote_server(extra: &str) -> (Server, SocketAddr) {
    let server = Server::start(&format!("listen = {REMOTE}:0\n{extra}"));
    assert!(
        server.wait_log(&format!("listening on {REMOTE}:")),
        "{}",
        server.log()
    );
    let addr = server
        .log()
        .lines()
        .filter_map(listening_on)
        .find(|a| a.ip() == IpAddr::V4(REMOTE))
        .expect("the 192.0.2.1 listener");
    (server, addr)
}

/// The rejection log line for `reply`, naming the client by its address.
fn assert_rejection_logged(server: &Server, reply: &str) {
    let needle = format!("client=[{REMOTE}]");
    assert!(server.wait_log(reply.trim_end()), "{}", server.log());
    let line = server
        .log()
        .lines()
        .find(|l| l.contains("rejected:") && l.contains(reply.trim_end()))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains(&needle), "{line:?} should name {needle}");
}

/// The client's next reply is the 554 5.5.0 of SPEC §5, then the server
/// closes; the rejection and `why` are logged, and nothing was stored.
fn assert_unsynchronized(server: &Server, client: &mut Client, why: &str) {
    let reply = client.reply();
    assert_eq!(
        reply,
        "554 5.5.0 Protocol error: wait for the server's reply\r\n"
    );
    assert_eq!(
        client.read_to_eof(),
        "",
        "nothing after the 554, then close"
    );
    assert_rejection_logged(server, &reply);
    assert!(server.wait_log(why), "{}", server.log());
    assert_eq!(count(&server.maildir(), "new"), 0);
}

/// A client that has said EHLO and sent MAIL, RCPT and `rest` in one
/// write, with the MAIL and RCPT replies read.
fn envelope_then(addr: SocketAddr, rest: &[u8]) -> Client {
    let mut client = Client::connect(addr);
    client.hello();
    let mut group = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<postmaster@example.com>\r\n".to_vec();
    group.extend_from_slice(rest);
    client.send(&group);
    assert!(client.reply().starts_with("250 2.1.0"));
    assert!(client.reply().starts_with("250 2.1.5"));
    client
}

#[test]
fn a_remote_client_that_talks_before_the_greeting_gets_554_and_is_closed() {
    in_private_network(|| {
        let (server, addr) = remote_server("");
        // Stopped, the server cannot greet: the kernel completes the
        // handshake and queues the client's bytes, so they are waiting
        // when the session starts, every time (loopback queues them as
        // the write returns).
        let pid = server.pid() as i32;
        // SAFETY: signals to the server this test started, by its PID.
        assert_eq!(unsafe { kill(pid, SIGSTOP) }, 0);
        let mut client = Client::connect(addr);
        client.send(b"EHLO early.test\r\n");
        // SAFETY: as above.
        assert_eq!(unsafe { kill(pid, SIGCONT) }, 0);
        assert_unsynchronized(&server, &mut client, "talked before greeting (554 5.5.0)");
    });
}

#[test]
fn a_remote_client_that_sends_content_before_354_gets_554_and_nothing_is_stored() {
    in_private_network(|| {
        let (server, addr) = remote_server("");
        // One write: the content is already there when DATA is read.
        let mut client = envelope_then(addr, b"DATA\r\nSubject: too soon\r\n\r\nbody\r\n.\r\n");
        assert_unsynchronized(&server, &mut client, "content before 354 (554 5.5.0)");
        assert_eq!(count(&server.maildir(), "tmp"), 0);
    });
}

#[test]
fn a_remote_client_that_pipelines_up_to_data_is_served() {
    // The control for the test above: the same group, waiting for 354.
    in_private_network(|| {
        let (server, addr) = remote_server("");
        let mut client = envelope_then(addr, b"DATA\r\n");
        assert!(client.reply().starts_with("354 "));
        client.send(b"Subject: in time\r\n\r\nbody\r\n.\r\n");
        assert!(client.reply().starts_with("250 2.0.0 Ok: queued as "));
        let stored = messages(&server.maildir());
        assert_eq!(stored.len(), 1);
        let text = String::from_utf8_lossy(&stored[0]).to_string();
        assert!(text.contains(&format!("([{REMOTE}])")), "{text}");
    });
}

#[test]
fn auth_in_clear_text_from_a_remote_client_gets_538() {
    in_private_network(|| {
        let keys = TempDir::new("users");
        let users = keys.path().join("users");
        std::fs::write(&users, USERS).expect("write users");
        let (server, addr) = remote_server(&format!("users = {}\n", users.display()));
        let mut client = Client::connect(addr);
        assert!(client.reply().starts_with("220 "));
        let ehlo = client.cmd("EHLO client.test");
        assert!(
            !ehlo.contains("AUTH"),
            "no AUTH offered in clear text: {ehlo}"
        );
        let reply = client.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==");
        assert_eq!(
            reply,
            "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
        );
        assert_rejection_logged(&server, &reply);
        // Not a protocol failure that ends the session.
        client.expect("NOOP", "250 2.0.0");
        // The same from loopback is allowed to try (and fails on the
        // password, not on the channel).
        let mut local = server.connect();
        local.hello();
        let reply = local.cmd("AUTH PLAIN AGFsaWNlAHdyb25n");
        assert!(reply.starts_with("535 5.7.8"), "{reply}");
    });
}
