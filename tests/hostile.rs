//! Hostile input (issue #6): each test sends one kind of abuse over a real
//! socket, asserts the exact reply (SPEC §5, §6), and then that the server
//! still serves a fresh client and that no session thread panicked.
//! The smuggling sequences have their own suite (tests/smuggling.rs); here
//! they are sent once, all in one message.

mod common;
use common::*;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A reply must come at once: well under any configured timeout (300 s
/// by default), with room for a loaded machine.
fn prompt() -> Duration {
    upper(Duration::from_secs(5))
}

/// Sends `line` + CRLF; asserts the reply starts with `expect` and came
/// within [`prompt`].
fn prompt_reply(c: &mut Client, line: &[u8], expect: &str) -> String {
    let start = Instant::now();
    let mut bytes = line.to_vec();
    bytes.extend_from_slice(b"\r\n");
    c.send(&bytes);
    let reply = c.reply();
    let shown = String::from_utf8_lossy(&line[..line.len().min(60)]).into_owned();
    assert!(
        reply.starts_with(expect),
        "{shown:?}…: expected {expect:?}, got {reply:?}"
    );
    assert!(
        start.elapsed() < prompt(),
        "{shown:?}…: reply took {:?}",
        start.elapsed()
    );
    reply
}

/// MAIL and RCPT for one message to root@example.com.
fn open_transaction(c: &mut Client) {
    c.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
    c.expect("RCPT TO:<root@example.com>", "250 2.1.5");
}

/// Waits until `maildir/tmp` is empty (the spool goes when the session
/// ends, which happens after the client saw its reply or closed).
fn assert_tmp_empties(maildir: &Path) {
    wait_until(|| count(maildir, "tmp") == 0);
    assert_eq!(count(maildir, "tmp"), 0, "tmp/ keeps a spool file");
}

#[test]
fn smuggling_sequences_all_in_one_message_store_one_message() {
    const SEQUENCES: [&[u8]; 12] = [
        b"\n.\n",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r",
        b"\r.\n",
        b"\n.\r",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\r\n\0.\r\n",
        b"\r\n.\0\r\n",
        b"\r\n.\r\r\n",
        b"\r\r\n.\r\r\n",
    ];
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    open_transaction(&mut c);
    c.expect("DATA", "354");
    let mut content = b"Subject: one\r\n\r\nbody".to_vec();
    for seq in SEQUENCES {
        content.extend_from_slice(seq);
        content.extend_from_slice(
            b"MAIL FROM:<evil@x.org>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n\
              Subject: smuggled\r\n\r\nevil",
        );
    }
    content.extend_from_slice(b"\r\n.\r\n");
    c.send(&content);
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply:?}");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n", "no smuggled replies");
    let stored = messages(&server.maildir());
    assert_eq!(stored.len(), 1, "exactly one message");
    let body = body(&stored[0]);
    assert!(body.starts_with(b"Subject: one\r\n\r\nbody"));
    let smuggled = body
        .windows(b"Subject: smuggled".len())
        .filter(|w| w == b"Subject: smuggled")
        .count();
    assert_eq!(smuggled, SEQUENCES.len(), "every smuggled part is content");
    assert_tmp_empties(&server.maildir());
    server.assert_healthy();
}

#[test]
fn nul_byte_in_command_is_500_5_5_2() {
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    prompt_reply(&mut c, b"NOOP\0", "500 5.5.2");
    prompt_reply(&mut c, b"\0", "500 5.5.2");
    prompt_reply(&mut c, b"MAIL FROM:<a\0@b.org>", "500 5.5.2");
    prompt_reply(&mut c, b"\0EHLO x", "500 5.5.2");
    // Nothing half-parsed stayed behind: MAIL is still the first.
    prompt_reply(&mut c, b"MAIL FROM:<a@b.org>", "250 2.1.0");
    prompt_reply(&mut c, b"RCPT TO:<root\0@example.com>", "500 5.5.2");
    prompt_reply(&mut c, b"DATA", "554 5.5.1");
    server.assert_healthy();
}

#[test]
fn nul_bytes_in_content_are_stored_as_sent() {
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    open_transaction(&mut c);
    c.expect("DATA", "354");
    let content = b"Subject: nul\r\n\r\na\0b\r\n\0\r\n\0\0\0 x\r\n";
    c.send(content);
    c.send(b".\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply:?}");
    let stored = messages(&server.maildir());
    assert_eq!(stored.len(), 1);
    assert_eq!(body(&stored[0]), content);
    server.assert_healthy();
}

#[test]
fn eight_bit_garbage_lines_are_500_5_5_2() {
    let server = Server::start("");
    let mut rng = XorShift::seeded("eight_bit_garbage_lines_are_500_5_5_2");
    let mut c = server.connect();
    c.hello();
    // Fewer than max_errors (10): the session goes on.
    for _ in 0..8 {
        let len = rng.range(1, 300) as usize;
        let line: Vec<u8> = (0..len).map(|_| rng.range(0x80, 0xFF) as u8).collect();
        prompt_reply(&mut c, &line, "500 5.5.2");
    }
    prompt_reply(&mut c, b"NOOP", "250 2.0.0");
    server.assert_healthy();
}

#[test]
fn one_mib_command_line_is_500_5_5_2_and_session_goes_on() {
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    let mut line = b"MAIL FROM:<".to_vec();
    line.resize(1 << 20, b'a');
    line.extend_from_slice(b"@example.com>");
    prompt_reply(&mut c, &line, "500 5.5.2");
    // The rest of the line was skipped, not taken for commands.
    prompt_reply(&mut c, b"MAIL FROM:<a@b.org>", "250 2.1.0");
    server.assert_healthy();
}

#[test]
fn unterminated_data_then_close_stores_nothing() {
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    open_transaction(&mut c);
    c.expect("DATA", "354");
    let mut content = b"Subject: cut\r\n\r\n".to_vec();
    content.extend_from_slice(&b"a line of a message that never ends\r\n".repeat(3000));
    content.extend_from_slice(b"\r\n.");
    c.send(&content);
    drop(c);
    assert!(
        server.wait_log("client closed during DATA"),
        "{}",
        server.log()
    );
    server.assert_nothing_stored_and_healthy();
}

#[test]
fn tls_client_hello_on_plain_port_gets_500s_then_421_4_7_0() {
    // SPEC §5: bad commands get 500 5.5.2; after max_errors, 421 4.7.0.
    let server = Server::start("max_errors = 3");
    let hello = client_hello();
    let mut c = server.connect();
    // A TLS client talks first and does not wait for the greeting; each
    // hello is followed by CRLF so that its last fragment is a line too.
    let mut payload = Vec::new();
    for _ in 0..3 {
        payload.extend_from_slice(&hello);
        payload.extend_from_slice(b"\r\n");
    }
    c.send(&payload);
    let greeting = c.reply();
    assert!(greeting.starts_with("220 mx.test "), "{greeting:?}");
    for i in 0..3 {
        let reply = c.reply();
        assert!(reply.starts_with("500 5.5.2 "), "error {i}: {reply:?}");
    }
    let last = c.reply();
    assert!(last.starts_with("421 4.7.0 "), "{last:?}");
    assert!(c.closed(), "closed after 421");
    server.assert_healthy();
}

/// A TLS connection to `addr` trusting only `cert`; returns the greeting.
fn tls_greeting(addr: SocketAddr, cert: &Path) -> String {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).expect("read cert"))
        .expect("trust anchor");
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).expect("client");
    let sock = connect_bounded(addr);
    bound_io(&sock, Duration::from_secs(5));
    let mut tls = StreamOwned::new(conn, sock);
    let mut greeting = Vec::new();
    let mut byte = [0u8; 1];
    while !greeting.ends_with(b"\r\n") {
        match tls.read(&mut byte) {
            Ok(1) => greeting.push(byte[0]),
            other => panic!("TLS greeting: {other:?} after {greeting:?}"),
        }
    }
    tls.write_all(b"QUIT\r\n").expect("QUIT");
    String::from_utf8_lossy(&greeting).into_owned()
}

#[test]
fn plaintext_on_tls_port_fails_the_handshake_and_closes() {
    let keys = TempDir::new("hostile-keys");
    make_cert(keys.path());
    let cert = keys.path().join("cert.crt");
    let server = Server::start(&format!(
        "tls_cert = {}\ntls_key = {}\nlisten = 127.0.0.1:0/tls\ntimeout = 30",
        cert.display(),
        keys.path().join("cert.key").display()
    ));
    let tls = server.listener("tls");
    let start = Instant::now();
    let mut c = Client::connect(tls);
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@b.org>\r\n");
    let mut got = Vec::new();
    let end = loop {
        let mut buf = [0u8; 512];
        match c.reader.read(&mut buf) {
            Ok(0) => break "eof",
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("no close: {e} after {got:?}"),
        }
    };
    assert!(
        start.elapsed() < prompt(),
        "closed after {:?} ({end})",
        start.elapsed()
    );
    // At most a TLS alert record (content type 21), never an SMTP reply.
    assert!(
        got.is_empty() || got[0] == 0x15,
        "expected nothing or a TLS alert, got {got:?}"
    );
    assert!(server.wait_log("TLS handshake failed"), "{}", server.log());
    assert_eq!(tls_greeting(tls, &cert), "220 mx.test ESMTP smtpbox\r\n");
    server.assert_healthy();
}

/// Standard base64 with padding.
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn auth_with_broken_base64_is_501_5_5_2() {
    let keys = TempDir::new("hostile-users");
    let out = output_bounded(
        Command::new("openssl").args(["passwd", "-6", "secret"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let users = keys.path().join("users");
    fs::write(&users, format!("alice:{hash}\n")).unwrap();
    let server = Server::start(&format!("users = {}", users.display()));
    let mut c = server.connect();
    c.hello(); // loopback: AUTH is offered without TLS
    prompt_reply(&mut c, b"AUTH PLAIN !!!notbase64", "501 5.5.2");
    prompt_reply(&mut c, b"AUTH PLAIN", "334");
    prompt_reply(&mut c, b"@@@@", "501 5.5.2");
    prompt_reply(&mut c, b"AUTH LOGIN", "334");
    prompt_reply(&mut c, b"%%%%", "501 5.5.2");
    prompt_reply(&mut c, b"AUTH LOGIN", "334");
    prompt_reply(&mut c, b64(b"alice").as_bytes(), "334");
    prompt_reply(&mut c, b"not base64!", "501 5.5.2");
    // The broken exchanges left no state behind: a good one succeeds.
    let good = format!("AUTH PLAIN {}", b64(b"\0alice\0secret"));
    prompt_reply(&mut c, good.as_bytes(), "235 2.7.0");
    server.assert_healthy();
}

#[test]
fn mail_with_thousands_of_parameters_is_answered_at_once() {
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    // As many distinct unknown parameters as a 2 KB line holds.
    let mut line = b"MAIL FROM:<a@b.org>".to_vec();
    let mut n = 0;
    while line.len() + 8 < 2048 {
        line.extend_from_slice(format!(" X{n}=1").as_bytes());
        n += 1;
    }
    prompt_reply(&mut c, &line, "555 5.5.4");
    // The same parameter repeated with the same value is accepted.
    let mut line = b"MAIL FROM:<a@b.org>".to_vec();
    while line.len() + 10 < 2048 {
        line.extend_from_slice(b" ENVID=abc");
    }
    prompt_reply(&mut c, &line, "250 2.1.0");
    prompt_reply(&mut c, b"RSET", "250 2.0.0");
    // 10,000 parameters do not fit a command line at all.
    let mut line = b"MAIL FROM:<a@b.org>".to_vec();
    for i in 0..10_000 {
        line.extend_from_slice(format!(" P{i}").as_bytes());
    }
    prompt_reply(&mut c, &line, "500 5.5.2");
    prompt_reply(&mut c, b"MAIL FROM:<a@b.org>", "250 2.1.0");
    server.assert_healthy();
}

#[test]
fn rcpt_beyond_max_recipients_is_452_4_5_3() {
    let server = Server::start("max_recipients = 100");
    let mut c = server.connect();
    c.hello();
    c.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
    let mut group = Vec::new();
    for i in 0..200 {
        group.extend_from_slice(format!("RCPT TO:<root+{i}@example.com>\r\n").as_bytes());
    }
    c.send(&group);
    for i in 0..200 {
        let reply = c.reply();
        let expect = if i < 100 { "250 2.1.5" } else { "452 4.5.3" };
        assert!(reply.starts_with(expect), "RCPT {}: {reply:?}", i + 1);
    }
    c.expect("DATA", "354");
    c.send(b"Subject: many\r\n\r\nhi\r\n.\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0 "), "{reply:?}");
    assert_eq!(count(&server.maildir(), "new"), 1, "one copy per Maildir");
    server.assert_healthy();
}

#[test]
fn bdat_of_u64_max_then_close_stores_nothing() {
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    open_transaction(&mut c);
    // One more than u64::MAX is not a size at all.
    prompt_reply(&mut c, b"BDAT 18446744073709551616 LAST", "501 5.5.4");
    let mut chunk = format!("BDAT {} LAST\r\n", u64::MAX).into_bytes();
    chunk.extend_from_slice(&b"Subject: huge\r\n\r\n".repeat(1000));
    c.send(&chunk);
    c.reader.get_ref().shutdown(Shutdown::Write).unwrap();
    assert!(c.closed(), "the server closes after the client's EOF");
    assert!(
        server.wait_log("client closed during BDAT"),
        "{}",
        server.log()
    );
    server.assert_nothing_stored_and_healthy();
}

#[test]
fn bdat_over_max_message_size_is_read_then_552_5_3_4() {
    let server = Server::start("max_message_size = 1000");
    let mut c = server.connect();
    c.hello();
    // One chunk over the limit: read to its end (its QUIT lines are
    // content), then 552 5.3.4.
    open_transaction(&mut c);
    let mut chunk = b"BDAT 5000 LAST\r\n".to_vec();
    chunk.extend_from_slice(&b"QUIT\r\n".repeat(5000 / 6));
    chunk.resize(16 + 5000, b'x');
    c.send(&chunk);
    assert!(c.reply().starts_with("552 5.3.4 "));
    prompt_reply(&mut c, b"NOOP", "250 2.0.0");
    // Over the limit across chunks: 250 for each chunk, 552 at LAST.
    open_transaction(&mut c);
    let mut chunk = b"BDAT 800\r\n".to_vec();
    chunk.resize(10 + 800, b'y');
    c.send(&chunk);
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0 "), "{reply:?}");
    let mut chunk = b"BDAT 800 LAST\r\n".to_vec();
    chunk.resize(15 + 800, b'z');
    c.send(&chunk);
    let reply = c.reply();
    assert!(reply.starts_with("552 5.3.4 "), "{reply:?}");
    assert_eq!(count(&server.maildir(), "new"), 0);
    // A huge declared size, less sent, then close: nothing stored.
    open_transaction(&mut c);
    let mut chunk = b"BDAT 1000000000 LAST\r\n".to_vec();
    chunk.resize(chunk.len() + 5000, b'w');
    c.send(&chunk);
    c.reader.get_ref().shutdown(Shutdown::Write).unwrap();
    assert!(c.closed());
    assert!(
        server.wait_log("client closed during BDAT"),
        "{}",
        server.log()
    );
    server.assert_nothing_stored_and_healthy();
}
