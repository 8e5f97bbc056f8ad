//! STARTTLS, implicit TLS and AUTH against the real binary over loopback
//! sockets. Certificates (ECDSA P-256, self-signed end-entity for localhost
//! and 127.0.0.1) and the users file's `$6$`/`$5$` hashes are made with the
//! `openssl` command at test time; the TLS client is rustls, trusting only
//! that certificate. Real clients (openssl s_client, Python smtplib, swaks)
//! run last. swaks needs libnet-ssleay-perl for TLS; a missing swaks fails
//! under CI (`CI` set) and is skipped otherwise, as in tests/clients.rs.

mod common;
use common::*;

use std::fs;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::version::{TLS12, TLS13};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};

/// alice (`$6$`) and bob (`$5$`) share this password.
const PASSWORD: &str = "secret";
/// carol's password, which must never reach the log.
const SECRET: &str = "S3cretPassw0rd";
/// Every TLS version rustls speaks.
const ANY: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// A certificate pair and a users file in a temp dir of their own (the
/// server's dir does not exist until it starts, and it loads them at start).
struct Keys {
    dir: TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = TempDir::new("keys");
        make_pair(dir.path(), "cert");
        let users = format!(
            "alice:{}\nbob:{}\ncarol:{}\n",
            passwd("-6", "alicesalt", PASSWORD),
            passwd("-5", "bobsalt", PASSWORD),
            passwd("-6", "carolsalt", SECRET)
        );
        fs::write(dir.path().join("users"), users).expect("write users");
        Keys { dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("cert.key")
    }

    /// Config lines for the pair, the users file and extra `listeners`
    /// (`tls`, `submission`) next to the harness's plain one.
    fn config(&self, listeners: &[&str]) -> String {
        let mut conf = format!(
            "tls_cert = {}\ntls_key = {}\nusers = {}\n",
            self.cert().display(),
            self.key().display(),
            self.dir.path().join("users").display()
        );
        for mode in listeners {
            conf.push_str(&format!("listen = 127.0.0.1:0/{mode}\n"));
        }
        conf
    }
}

/// Runs openssl in `dir` and returns its stdout; fails the test on error.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = output_bounded(
        Command::new("openssl").current_dir(dir).args(args),
        Duration::from_secs(30),
    );
    assert_success(&out, &format!("openssl {args:?}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// NAME.crt and NAME.key in `dir`: a fresh P-256 key, self-signed for
/// localhost and 127.0.0.1, and no CA (rustls refuses a CA as end-entity).
fn make_pair(dir: &Path, name: &str) {
    let args = format!(
        "req -x509 -nodes -days 3650 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
         -subj /CN=localhost -keyout {name}.key -out {name}.crt \
         -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
         -addext basicConstraints=critical,CA:FALSE"
    );
    openssl(dir, &args.split_whitespace().collect::<Vec<_>>());
}

/// `openssl passwd -6|-5 -salt SALT PASSWORD`.
fn passwd(scheme: &str, salt: &str, password: &str) -> String {
    let hash = openssl(Path::new("/"), &["passwd", scheme, "-salt", salt, password]);
    let hash = hash.trim().to_string();
    assert!(hash.starts_with(&format!("${}$", &scheme[1..])), "{hash}");
    hash
}

/// An SMTP client over a plain socket or a TLS stream.
struct Smtp<S: Read + Write> {
    reader: BufReader<S>,
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A plain connection; reads and writes never wait more than 5 s.
fn connect(addr: SocketAddr) -> Smtp<TcpStream> {
    let sock = connect_bounded(addr);
    bound_io(&sock, Duration::from_secs(5));
    Smtp {
        reader: BufReader::new(sock),
    }
}

/// A connection to an implicit-TLS listener: handshake, then the greeting.
fn connect_tls(addr: SocketAddr, trust: &Path) -> Smtp<Tls> {
    let plain = connect(addr);
    let mut tls = Smtp {
        reader: BufReader::new(handshake(plain.reader.into_inner(), trust, ANY)),
    };
    let greeting = tls.reply();
    assert_eq!(greeting, "220 mx.test ESMTP smtpbox\r\n");
    tls
}

/// Client side of a TLS handshake over `sock`, run to completion, for the
/// name `localhost`, trusting only the certificate in `trust`.
fn handshake(sock: TcpStream, trust: &Path, versions: &[&'static SupportedProtocolVersion]) -> Tls {
    let mut roots = RootCertStore::empty();
    roots.add(cert_der(trust)).expect("trust anchor");
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).expect("client connection");
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    tls
}

/// The first certificate in a PEM file, as DER.
fn cert_der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).expect("read certificate")
}

impl Smtp<TcpStream> {
    /// STARTTLS (reply `220 2.0.0`) and the handshake; nothing may have
    /// arrived after the 220 in plain text.
    fn starttls(self, trust: &Path, versions: &[&'static SupportedProtocolVersion]) -> Smtp<Tls> {
        let mut plain = self;
        plain.expect("STARTTLS", "220 2.0.0");
        assert!(plain.reader.buffer().is_empty(), "plaintext after 220");
        let sock = plain.reader.into_inner();
        Smtp {
            reader: BufReader::new(handshake(sock, trust, versions)),
        }
    }
}

impl<S: Read + Write> Smtp<S> {
    /// Writes raw bytes in one write.
    fn send(&mut self, bytes: &[u8]) {
        let sock = self.reader.get_mut();
        sock.write_all(bytes).expect("send");
        sock.flush().expect("flush");
    }

    /// One whole reply, all its lines; empty when the server closed the
    /// connection. A read timeout fails the test with what was seen.
    fn reply(&mut self) -> String {
        whole_reply(|| socket_line(&mut self.reader))
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends `line`, asserts the reply starts with `expect`, returns it.
    fn expect(&mut self, line: &str, expect: &str) -> String {
        let reply = self.cmd(line);
        assert!(
            reply.starts_with(expect),
            "{line:?}: expected {expect:?}, got {reply:?}"
        );
        reply
    }

    /// Reads the greeting (plain connections) and sends EHLO.
    fn hello(&mut self) -> String {
        let greeting = self.reply();
        assert!(greeting.starts_with("220 mx.test "), "{greeting:?}");
        self.expect("EHLO client.test", "250")
    }

    /// MAIL, RCPT root, DATA with `subject`: the final reply must be 250.
    fn deliver(&mut self, subject: &str) {
        self.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
        self.expect("RCPT TO:<root@example.com>", "250 2.1.5");
        self.expect("DATA", "354");
        self.send(format!("Subject: {subject}\r\n\r\nhello\r\n.\r\n").as_bytes());
        let reply = self.reply();
        assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply:?}");
    }

    /// True when the server closed the connection (EOF, reset, or a TLS
    /// stream cut) before the read timeout.
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => return !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            }
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4).
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            let c = if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i)) as usize & 63]
            } else {
                b'='
            };
            out.push(char::from(c));
        }
    }
    out
}

/// `AUTH PLAIN` with the initial response for `user` and `password`.
fn auth_plain(user: &str, password: &str) -> String {
    format!(
        "AUTH PLAIN {}",
        b64(format!("\0{user}\0{password}").as_bytes())
    )
}

/// The one stored message whose content has `Subject: subject`.
fn stored(server: &Server, subject: &str) -> String {
    let needle = format!("\r\nSubject: {subject}\r\n");
    let found: Vec<String> = messages(&server.maildir())
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .filter(|m| m.contains(&needle))
        .collect();
    assert_eq!(found.len(), 1, "messages with {subject:?}: {found:?}");
    found[0].clone()
}

/// The Received header of a stored message (one line).
fn received(message: &str) -> &str {
    let start = message.find("\r\nReceived: ").expect("Received header") + 2;
    let end = message[start..].find("\r\n").unwrap() + start;
    &message[start..end]
}

#[test]
fn starttls_delivery_names_esmtps_and_version_for_tls12_and_tls13() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&[]));
    for (version, name, suite) in [
        (&TLS12, "TLSv1.2", "TLS_ECDHE_ECDSA_WITH_"),
        // IANA names (SPEC §6), not rustls's `TLS13_` spelling.
        (&TLS13, "TLSv1.3", "TLS_AES_"),
    ] {
        let mut plain = connect(server.addr);
        plain.hello();
        let mut tls = plain.starttls(&keys.cert(), &[version]);
        let negotiated = tls.reader.get_ref().conn.protocol_version();
        assert_eq!(negotiated, Some(version.version), "{name}");
        tls.expect("EHLO client.test", "250");
        tls.deliver(name);
        tls.expect("QUIT", "221 2.0.0");
        let message = stored(&server, name);
        let trace = received(&message);
        assert!(
            trace.contains(&format!(" with ESMTPS ({name} {suite}")),
            "{trace}"
        );
        assert!(
            trace.starts_with("Received: from client.test ([127.0.0.1]) by mx.test"),
            "{trace}"
        );
    }
    assert!(
        server.wait_log(" proto=ESMTPS client=[127.0.0.1]:"),
        "{}",
        server.log()
    );
    assert!(
        server.wait_log(" tls=TLSv1.3/TLS_AES_")
            && !server
                .log()
                .lines()
                .any(|l| l.contains(" tls=") && l.contains("TLS13_")),
        "{}",
        server.log()
    );
}

#[test]
fn ehlo_offers_starttls_before_tls_only_and_second_starttls_is_503() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&[]));
    let mut plain = connect(server.addr);
    let ehlo = plain.hello();
    assert!(ehlo.contains("\r\n250-STARTTLS\r\n"), "{ehlo}");
    let mut tls = plain.starttls(&keys.cert(), ANY);
    let ehlo = tls.expect("EHLO client.test", "250-mx.test\r\n");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("\r\n250-AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    tls.expect("STARTTLS", "503 5.5.1");
    tls.expect("NOOP", "250 2.0.0");
}

#[test]
fn starttls_forgets_helo_and_sender() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&[]));
    let mut plain = connect(server.addr);
    plain.hello();
    plain.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
    let mut tls = plain.starttls(&keys.cert(), ANY);
    tls.expect("MAIL FROM:<a@b.org>", "503 5.5.1");
    tls.expect("EHLO client.test", "250");
    tls.expect("RCPT TO:<root@example.com>", "503 5.5.1");
    tls.deliver("after forgetting");
    assert_eq!(count(&server.maildir(), "new"), 1);
}

#[test]
fn starttls_injected_command_is_discarded_cve_2011_0411() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&[]));
    let mut plain = connect(server.addr);
    plain.hello();
    plain.send(b"STARTTLS\r\nRSET\r\n");
    assert_eq!(plain.reply(), "220 2.0.0 Ready to start TLS\r\n");
    // No plain-text reply to RSET, buffered or late: the handshake would
    // choke on it.
    assert!(plain.reader.buffer().is_empty());
    let sock = plain.reader.into_inner();
    let mut tls = Smtp {
        reader: BufReader::new(handshake(sock, &keys.cert(), ANY)),
    };
    // RSET and NOOP both answer 250 2.0.0: QUIT's 221 must come right after
    // the one 250, or RSET ran under TLS.
    assert_eq!(tls.cmd("NOOP"), "250 2.0.0 Ok\r\n");
    assert_eq!(tls.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    assert!(tls.closed());
}

#[test]
fn implicit_tls_listener_handshakes_before_greeting_and_delivers() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&["tls"]));
    let mut tls = connect_tls(server.listener("tls"), &keys.cert());
    let ehlo = tls.expect("EHLO client.test", "250");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    tls.expect("STARTTLS", "503 5.5.1");
    tls.deliver("implicit");
    let message = stored(&server, "implicit");
    assert!(
        received(&message).contains(" with ESMTPS (TLSv1.3 "),
        "{message}"
    );
}

#[test]
fn plaintext_on_tls_port_is_closed_and_next_client_is_served() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&["tls"]));
    let addr = server.listener("tls");
    let mut plain = connect(addr);
    plain.send(b"EHLO x\r\n");
    assert!(plain.closed(), "plain text on the TLS port not closed");
    assert!(server.wait_log("TLS handshake failed"), "{}", server.log());
    let mut tls = connect_tls(addr, &keys.cert());
    tls.expect("EHLO client.test", "250");
    tls.deliver("after garbage");
}

/// STARTTLS and EHLO on the server's plain listener.
fn tls_session(server: &Server, keys: &Keys) -> Smtp<Tls> {
    let mut plain = connect(server.addr);
    plain.hello();
    let mut tls = plain.starttls(&keys.cert(), ANY);
    tls.expect("EHLO client.test", "250");
    tls
}

#[test]
fn auth_plain_initial_response_sha512_user_gives_esmtpsa_and_logs_user() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&[]));
    let mut tls = tls_session(&server, &keys);
    assert_eq!(
        tls.cmd(&auth_plain("alice", PASSWORD)),
        "235 2.7.0 Authentication successful\r\n"
    );
    tls.expect(&auth_plain("alice", PASSWORD), "503 5.5.1");
    tls.deliver("alice");
    let message = stored(&server, "alice");
    assert!(
        received(&message).contains(" with ESMTPSA (TLSv1."),
        "{message}"
    );
    assert!(
        server.wait_log(" proto=ESMTPSA client=[127.0.0.1]:"),
        "{}",
        server.log()
    );
    let log = server.log();
    let line = log.lines().find(|l| l.contains(" proto=ESMTPSA ")).unwrap();
    assert!(line.ends_with(" user=alice"), "{line}");
    // SPEC §9 and issue 3: the message's log line names the TLS version.
    assert!(line.contains(" tls=TLSv1."), "{line}");
}

#[test]
fn auth_plain_after_334_sha256_user() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&[]));
    let mut tls = tls_session(&server, &keys);
    assert_eq!(tls.cmd("AUTH PLAIN"), "334 \r\n");
    tls.expect(&b64(b"\0bob\0secret"), "235 2.7.0");
    tls.deliver("bob");
    assert!(server.wait_log(" user=bob"), "{}", server.log());
}

#[test]
fn auth_login_succeeds_for_sha512_and_sha256_users() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&[]));
    for user in ["alice", "bob"] {
        let mut tls = tls_session(&server, &keys);
        assert_eq!(tls.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6\r\n");
        assert_eq!(tls.cmd(&b64(user.as_bytes())), "334 UGFzc3dvcmQ6\r\n");
        tls.expect(&b64(PASSWORD.as_bytes()), "235 2.7.0");
    }
    // The user name as LOGIN's initial response.
    let mut tls = tls_session(&server, &keys);
    let first = format!("AUTH LOGIN {}", b64(b"alice"));
    assert_eq!(tls.cmd(&first), "334 UGFzc3dvcmQ6\r\n");
    tls.expect(&b64(PASSWORD.as_bytes()), "235 2.7.0");
}

#[test]
fn three_bad_passwords_give_535_then_421_and_close() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&[]));
    let mut tls = tls_session(&server, &keys);
    tls.expect(&auth_plain("alice", "Secret"), "535 5.7.8");
    assert_eq!(tls.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6\r\n");
    tls.expect(&b64(b"bob"), "334 UGFzc3dvcmQ6");
    tls.expect(&b64(b"wrong"), "535 5.7.8");
    tls.expect(&auth_plain("nobody", PASSWORD), "535 5.7.8");
    let last = tls.reply();
    assert!(last.starts_with("421 4.7.0 "), "{last:?}");
    assert!(tls.closed(), "not closed after three AUTH failures");
}

/// RFC 4954 §6, issue 10: a users file that cannot be read (the tests run
/// as root, whom a chmod does not stop: a directory and a dangling symlink
/// take its place) fails closed with 454 4.7.0, which is no AUTH failure:
/// four in a row do not close the session, and the file back in place is
/// served again.
#[test]
fn unreadable_users_file_gives_454_and_counts_no_failure() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&[]));
    let users = keys.dir.path().join("users");
    let saved = keys.dir.path().join("users.saved");
    let mut plain = connect(server.addr);
    plain.hello();
    fs::rename(&users, &saved).expect("move the users file away");
    fs::create_dir(&users).expect("a directory in its place");
    for _ in 0..4 {
        plain.expect(
            &auth_plain("alice", PASSWORD),
            "454 4.7.0 Temporary authentication failure\r\n",
        );
    }
    let named = format!("{}: cannot read: not a regular file", users.display());
    assert!(server.wait_log(&named), "{}", server.log());
    fs::remove_dir(&users).expect("remove the directory");
    std::os::unix::fs::symlink(keys.dir.path().join("nowhere"), &users).expect("symlink");
    assert_eq!(plain.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(plain.cmd(&b64(b"alice")), "334 UGFzc3dvcmQ6\r\n");
    plain.expect(&b64(PASSWORD.as_bytes()), "454 4.7.0");
    plain.expect("NOOP", "250 2.0.0");
    fs::remove_file(&users).expect("remove the symlink");
    fs::rename(&saved, &users).expect("the users file back");
    plain.expect(&auth_plain("alice", PASSWORD), "235 2.7.0");
    plain.deliver("users file back");
    assert!(!server.log().contains("AUTH failed"), "{}", server.log());
}

#[test]
fn star_cancels_auth_with_501_5_7_0() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&[]));
    let mut tls = tls_session(&server, &keys);
    tls.expect("AUTH PLAIN", "334 ");
    tls.expect("*", "501 5.7.0");
    tls.expect("AUTH LOGIN", "334 VXNlcm5hbWU6");
    tls.expect(&b64(b"alice"), "334 UGFzc3dvcmQ6");
    tls.expect("*", "501 5.7.0");
    // Cancelling is no failed attempt and the session goes on.
    tls.expect(&auth_plain("alice", PASSWORD), "235 2.7.0");
}

#[test]
fn auth_over_plaintext_from_loopback_is_allowed() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&[]));
    let mut plain = connect(server.addr);
    let ehlo = plain.hello();
    assert!(ehlo.contains("\r\n250-AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    plain.expect(&auth_plain("bob", PASSWORD), "235 2.7.0");
    plain.deliver("loopback auth");
    let message = stored(&server, "loopback auth");
    assert!(received(&message).contains(" with ESMTPA id "), "{message}");
}

#[test]
fn submission_needs_auth_before_mail_even_from_loopback() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&["submission"]));
    let mut plain = connect(server.listener("submission"));
    plain.hello();
    plain.expect("MAIL FROM:<a@b.org>", "530 5.7.0");
    let mut tls = plain.starttls(&keys.cert(), ANY);
    tls.expect("EHLO client.test", "250");
    tls.expect("MAIL FROM:<a@b.org>", "530 5.7.0");
    tls.expect(&auth_plain("alice", PASSWORD), "235 2.7.0");
    tls.deliver("submitted");
    let message = stored(&server, "submitted");
    assert!(
        received(&message).contains(" with ESMTPSA (TLSv1."),
        "{message}"
    );
}

#[test]
fn certificate_replaced_on_disk_is_served_to_new_connections() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&["tls"]));
    let addr = server.listener("tls");
    let first = connect_tls(addr, &keys.cert());
    // The server looked at the files for `first`, before this instant.
    let looked = Instant::now();
    let served =
        |tls: &Smtp<Tls>| tls.reader.get_ref().conn.peer_certificates().unwrap()[0].clone();
    assert_eq!(served(&first), cert_der(&keys.cert()));

    // A renewal: the new pair is written aside, then renamed over.
    make_pair(keys.dir.path(), "new");
    let renewed = cert_der(&keys.dir.path().join("new.crt"));
    assert_ne!(renewed, cert_der(&keys.cert()));
    fs::copy(
        keys.dir.path().join("new.crt"),
        keys.dir.path().join("next.crt"),
    )
    .unwrap();
    fs::rename(keys.dir.path().join("next.crt"), keys.cert()).unwrap();
    fs::rename(keys.dir.path().join("new.key"), keys.key()).unwrap();
    // The files are looked at once a second at most: a connection a second
    // after the last look gets the new pair (however slow this machine is,
    // the wait is measured from that look, not guessed).
    let next_look = looked + Duration::from_millis(1050);
    thread::sleep(next_look.saturating_duration_since(Instant::now()));
    let mut second = connect_tls(addr, &keys.cert());
    assert_eq!(served(&second), renewed);
    second.expect("EHLO client.test", "250");
    second.deliver("renewed");
    assert!(server.wait_log("TLS: reloaded"), "{}", server.log());
}

#[test]
fn passwords_and_auth_payloads_never_reach_debug_or_trace_log() {
    let keys = Keys::new();
    for level in ["debug", "trace"] {
        let server = Server::start_with_env(&keys.config(&[]), &[("RUST_LOG", level)]);
        // Success with PLAIN over TLS and in plain text, with LOGIN.
        let mut tls = tls_session(&server, &keys);
        tls.expect(&auth_plain("carol", SECRET), "235 2.7.0");
        tls.deliver("carol");
        tls.expect("QUIT", "221");
        let mut plain = connect(server.addr);
        plain.hello();
        plain.expect(&auth_plain("carol", SECRET), "235 2.7.0");
        plain.expect("QUIT", "221");
        let mut tls = tls_session(&server, &keys);
        tls.expect(&format!("AUTH LOGIN {}", b64(b"carol")), "334 ");
        tls.expect(&b64(SECRET.as_bytes()), "235 2.7.0");
        tls.expect("QUIT", "221");
        // Failures: the password of another user, an unknown user.
        let mut plain = connect(server.addr);
        plain.hello();
        plain.expect(&auth_plain("bob", SECRET), "535 5.7.8");
        plain.expect("AUTH LOGIN", "334 ");
        plain.expect(&b64(b"nobody"), "334 ");
        plain.expect(&b64(SECRET.as_bytes()), "535 5.7.8");
        plain.expect("QUIT", "221");

        let log = wait_disconnects(&server, 4);
        assert!(log.contains(" user=carol"), "{level}: {log}");
        let shown = if level == "trace" {
            "[TRACE "
        } else {
            "[DEBUG "
        };
        assert!(log.contains(shown), "{level} not applied: {log}");
        for secret in [
            SECRET.to_string(),
            b64(SECRET.as_bytes()),
            b64(format!("\0carol\0{SECRET}").as_bytes()),
            b64(format!("\0bob\0{SECRET}").as_bytes()),
        ] {
            assert!(!log.contains(&secret), "{level}: {secret:?} in log:\n{log}");
        }
    }
}

/// The log once it holds `n` disconnect lines.
fn wait_disconnects(server: &Server, n: usize) -> String {
    let end = Instant::now() + upper(Duration::from_secs(5));
    while Instant::now() < end {
        let log = server.log();
        if log.matches("disconnect from ").count() >= n {
            return log;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("fewer than {n} disconnects:\n{}", server.log());
}

#[test]
fn check_with_mismatched_key_exits_1_naming_the_key_file() {
    let keys = Keys::new();
    make_pair(keys.dir.path(), "other");
    let other_key = keys.dir.path().join("other.key");
    let conf = keys.dir.path().join("smtpbox.conf");
    fs::write(
        &conf,
        format!(
            "listen = 127.0.0.1:0\nhostname = mx.test\ndomain = example.com\n\
             maildir = {}/Maildir\ntls_cert = {}\ntls_key = {}\n",
            keys.dir.path().display(),
            keys.cert().display(),
            other_key.display()
        ),
    )
    .unwrap();
    let out = output_bounded(
        smtpbox().arg("-c").arg(&conf).arg("--check"),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: private key does not match",
            other_key.display()
        )),
        "{stderr}"
    );
}

// Real clients.

#[test]
fn openssl_s_client_starttls_whole_session_on_stdin_is_stored() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&[]));
    let session = "EHLO s-client.test\nMAIL FROM:<a@b.org>\nRCPT TO:<root@example.com>\nDATA\n\
                   Subject: s_client\n\nhello over TLS\n.\nQUIT\n";
    let mut s_client = Command::new("openssl");
    s_client
        .args(["s_client", "-starttls", "smtp", "-quiet", "-crlf"])
        .args([
            "-connect",
            &server.addr.to_string(),
            "-servername",
            "localhost",
        ])
        .arg("-verify_return_error")
        .arg("-CAfile")
        .arg(keys.cert());
    let run = run_bounded(&mut s_client, session.as_bytes(), Duration::from_secs(20));
    let out = std::process::Output {
        status: run.status,
        stdout: run.stdout,
        stderr: run.stderr,
    };
    assert_success(&out, "openssl s_client");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        transcript.contains("250 2.0.0 Ok: queued as "),
        "{transcript}"
    );
    assert!(transcript.ends_with("221 2.0.0 Bye\r\n"), "{transcript}");
    let message = stored(&server, "s_client");
    assert!(
        message.ends_with("\r\n\r\nhello over TLS\r\n"),
        "{message:?}"
    );
    assert!(
        received(&message).contains(" with ESMTPS (TLSv1.3 "),
        "{message}"
    );
}

/// smtplib: STARTTLS verifying the certificate, LOGIN (smtplib picks PLAIN),
/// sendmail. argv: port, CA file, password.
const PY_STARTTLS: &str = r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    s.starttls(context=ctx)
    s.login("alice", sys.argv[3])
    refused = s.sendmail("a@b.org", ["root@example.com"],
                         b"Subject: smtplib\r\n\r\nhello from python\r\n")
    assert refused == {}, refused
"#;

#[test]
fn smtplib_starttls_login_sendmail_is_stored() {
    let keys = Keys::new();
    let server = Server::start(&keys.config(&[]));
    let out = output_bounded(
        Command::new("python3")
            .args(["-c", PY_STARTTLS, &server.addr.port().to_string()])
            .arg(keys.cert())
            .arg(PASSWORD),
        Duration::from_secs(30),
    );
    assert_success(&out, "python3 smtplib starttls");
    let message = stored(&server, "smtplib");
    assert!(
        message.ends_with("\r\n\r\nhello from python\r\n"),
        "{message:?}"
    );
    assert!(
        received(&message).contains(" with ESMTPSA (TLSv1.3 "),
        "{message}"
    );
    assert!(server.wait_log(" user=alice"), "{}", server.log());
}

#[test]
fn swaks_tls_auth_plain_is_stored() {
    if !have_tool("swaks", "swaks libnet-ssleay-perl") {
        return;
    }
    let keys = Keys::new();
    let server = Server::start(&keys.config(&[]));
    let out = output_bounded(
        Command::new("swaks")
            .args(["--server", &server.addr.to_string(), "--timeout", "10"])
            .args(["--from", "a@b.org", "--to", "root@example.com"])
            .args(["--tls", "--auth", "PLAIN", "--auth-user", "bob"])
            .args(["--auth-password", PASSWORD, "--header", "Subject: swaks"])
            .args(["--body", "hello from swaks"]),
        Duration::from_secs(30),
    );
    assert_success(&out, "swaks --tls --auth PLAIN");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("<~  235 2.7.0 "), "{transcript}");
    let message = stored(&server, "swaks");
    assert!(
        message.contains("\r\n\r\nhello from swaks\r\n"),
        "{message:?}"
    );
    assert!(
        received(&message).contains(" with ESMTPSA (TLSv1."),
        "{message}"
    );
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 4: `--inetd` serves STARTTLS over its stdin/stdout socket too
/// (systemd Accept=yes, inetd), and names the client from that socket.
#[test]
fn starttls_works_in_inetd_mode() {
    use std::net::TcpListener;
    use std::os::fd::OwnedFd;

    let keys = Keys::new();
    let dir = TempDir::new("inetd-tls");
    let conf = dir.path().join("smtpbox.conf");
    fs::write(
        &conf,
        format!(
            "hostname = mx.test\ndomain = example.com\nmaildir = {}/Maildir\n{}",
            dir.path().display(),
            keys.config(&[])
        ),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (conn, _) = listener.accept().unwrap();
    let fd = |s: &TcpStream| Stdio::from(OwnedFd::from(s.try_clone().unwrap()));
    let mut child = Guard::spawn(
        smtpbox()
            .args(["--inetd", "-c"])
            .arg(&conf)
            .stdin(fd(&conn))
            .stdout(fd(&conn))
            .stderr(Stdio::null()),
    );
    drop(conn);
    bound_io(&client, Duration::from_secs(5));
    let mut plain = Smtp {
        reader: BufReader::new(client),
    };
    let ehlo = plain.hello();
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    let mut tls = plain.starttls(&keys.cert(), ANY);
    tls.expect("EHLO client.test", "250");
    tls.deliver("over inetd");
    tls.expect("QUIT", "221 2.0.0");
    let status = child.exit_within(Duration::from_secs(5), "smtpbox --inetd");
    assert!(status.success(), "smtpbox --inetd after QUIT: {status}");
    let stored = messages(&dir.path().join("Maildir"));
    assert_eq!(stored.len(), 1);
    let message = String::from_utf8_lossy(&stored[0]).into_owned();
    let trace = received(&message);
    assert!(
        trace.starts_with("Received: from client.test ([127.0.0.1])"),
        "{trace}"
    );
    assert!(trace.contains(" with ESMTPS (TLSv1."), "{trace}");
}

/// Many SMTP clients that connect by address send it as SNI, which RFC
/// 6066 §3 forbids: rustls warns for each one. smtpbox logs that at debug
/// level (issue 12): seen with RUST_LOG=debug, never as a WARN line.
#[test]
fn ip_address_sni_is_logged_at_debug_not_warn() {
    let keys = Keys::new();
    for (level, shown) in [("info", false), ("debug", true)] {
        let server = Server::start_with_env(&keys.config(&["tls"]), &[("RUST_LOG", level)]);
        let addr = server.listener("tls");
        // rustls sends no SNI for an address: put one in its place
        // ("localhost" and "127.0.0.1" have the same length).
        let mut hello = client_hello();
        let at = hello
            .windows(9)
            .position(|w| w == b"localhost")
            .expect("SNI in the ClientHello");
        hello[at..at + 9].copy_from_slice(b"127.0.0.1");
        let mut sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.write_all(&hello).unwrap();
        let mut first = [0u8; 1];
        sock.read_exact(&mut first).expect("ServerHello");
        assert_eq!(first[0], 0x16, "the handshake goes on");
        drop(sock);
        assert!(server.wait_log("disconnect from"), "{}", server.log());
        let log = server.log();
        let sni: Vec<&str> = log.lines().filter(|l| l.contains("Illegal SNI")).collect();
        assert!(sni.iter().all(|l| !l.contains("WARN")), "{log}");
        assert_eq!(sni.len(), usize::from(shown), "RUST_LOG={level}: {log}");
        if shown {
            assert!(sni[0].contains("DEBUG"), "{log}");
        }
    }
}
