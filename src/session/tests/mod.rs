//! The session's tests: plain byte slices in, replies out, and a store
//! that keeps messages in memory.

use super::auth::MAX_AUTH_FAILURES;
use super::trace::{cut, fold, FOLD_AT, MAX_HEADER_LINE};
use super::*;
use crate::data::{BareLf, ContentWrite};
use crate::delivery::{Discard, Draft, NotStored, Stored};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

mod auth;
mod content;
mod trace;

/// A store for these tests: messages are measured against their rules
/// by [`Discard`], what was written into them is kept, and it answers as
/// told: targets full, opening failing, the next finish failing.
#[derive(Default)]
struct Scripted {
    full: bool,
    /// Opening a message fails with this errno.
    open_errno: Option<i32>,
    shared: Arc<Outcomes>,
}

/// What the store and its messages share.
#[derive(Default)]
struct Outcomes {
    /// The next finish fails with this, once.
    finish_error: Mutex<Option<DeliveryError>>,
    /// The content of each message stored, in order.
    finished: Mutex<Vec<Vec<u8>>>,
}

impl Scripted {
    fn full() -> Scripted {
        Scripted {
            full: true,
            ..Scripted::default()
        }
    }

    fn failing_open(errno: i32) -> Scripted {
        Scripted {
            open_errno: Some(errno),
            ..Scripted::default()
        }
    }

    fn fail_next_finish(&self, error: DeliveryError) {
        *self.shared.finish_error.lock().unwrap() = Some(error);
    }

    fn finished(&self) -> Vec<Vec<u8>> {
        self.shared.finished.lock().unwrap().clone()
    }
}

impl Store for Scripted {
    fn is_full(&self, _: &Target) -> bool {
        self.full
    }

    fn open(
        &self,
        targets: Vec<Target>,
        rules: ContentRules,
        trace: &dyn Fn(&str) -> String,
    ) -> Result<Box<dyn Draft>, DeliveryError> {
        if let Some(errno) = self.open_errno {
            let error = std::io::Error::from_raw_os_error(errno);
            return Err(DeliveryError::io(Path::new("/x"), error));
        }
        Ok(Box::new(Recorded {
            inner: Discard.open(targets, rules, trace)?,
            bytes: Vec::new(),
            shared: Arc::clone(&self.shared),
        }))
    }
}

/// A message of the [`Scripted`] store.
struct Recorded {
    inner: Box<dyn Draft>,
    bytes: Vec<u8>,
    shared: Arc<Outcomes>,
}

impl ContentWrite for Recorded {
    fn write(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
        self.inner.write(bytes);
    }
}

impl Draft for Recorded {
    fn note_bare_line_ending(&mut self) {
        self.inner.note_bare_line_ending();
    }

    fn finish(self: Box<Self>) -> Result<Stored, NotStored> {
        if let Some(error) = self.shared.finish_error.lock().unwrap().take() {
            return Err(NotStored::Failed(error));
        }
        let stored = self.inner.finish()?;
        self.shared.finished.lock().unwrap().push(self.bytes);
        Ok(Stored {
            id: "ID".to_string(),
            ..stored
        })
    }
}

fn never_full() -> Arc<Scripted> {
    Arc::new(Scripted::default())
}

/// Pushes all of `input` and returns the steps it completed.
fn push_all(s: &mut Session, mut input: &[u8]) -> Vec<Step> {
    let mut steps = Vec::new();
    while !input.is_empty() {
        let (used, step) = s.push(input);
        assert!(used > 0 || step.is_some(), "no progress on {input:?}");
        steps.extend(step);
        input = &input[used..];
    }
    steps
}

/// Pushes message content that completes the message: its one reply.
fn content(s: &mut Session, input: &[u8]) -> Reply {
    let mut steps = push_all(s, input);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].action, Action::Continue);
    assert!(!s.reading_content());
    steps[0].replies.remove(0)
}

/// A path under the temp dir for this test process that nothing
/// creates: the session is sans-IO and never touches its Maildirs.
fn unused_dir(name: &str) -> PathBuf {
    let pid = std::process::id();
    std::env::temp_dir().join(format!("smtpbox-session-{pid}-unused/{name}"))
}

/// Options only: no config file, not even the host's default one.
fn config() -> Config {
    let maildir = unused_dir("Maildir").display().to_string();
    let args: Vec<String> = [
        "--maildir",
        &maildir,
        "-H",
        "mx.example",
        "-d",
        "example.com",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match crate::config::from_args_with_default(&args, Path::new("")) {
        Ok(crate::config::Invocation::Run(c, _)) => c,
        other => panic!("unexpected {other:?}"),
    }
}

fn session_with(config: Config, remote: &str, store: Arc<dyn Store>, mode: Mode) -> Session {
    let peer = Peer::network(
        Some(remote.parse().unwrap()),
        Some("127.0.0.1:25".parse().unwrap()),
    );
    let services = Services {
        store,
        users: None,
        tls: false,
    };
    let policy = Policy::new(&config, None, mode);
    Session::new(Arc::new(config), services, peer, &policy)
}

/// One user, alice, with password "secret".
struct Alice;
impl Authenticator for Alice {
    fn verify(&self, user: &str, password: &[u8]) -> Result<bool, String> {
        Ok(user == "alice" && password == b"secret")
    }
}

/// A users file that cannot be read.
struct Unreadable;
impl Authenticator for Unreadable {
    fn verify(&self, _: &str, _: &[u8]) -> Result<bool, String> {
        Err("/etc/smtpbox/users: cannot read: not a regular file".into())
    }
}

fn auth_session(remote: &str, mode: Mode, tls: bool) -> Session {
    let peer = Peer::network(
        Some(remote.parse().unwrap()),
        Some("192.0.2.25:25".parse().unwrap()),
    );
    let services = Services {
        store: never_full(),
        users: Some(Arc::new(Alice)),
        tls,
    };
    let config = config();
    let policy = Policy::new(&config, None, mode);
    Session::new(Arc::new(config), services, peer, &policy)
}

fn b64(s: &[u8]) -> String {
    crate::auth::encode_base64(s)
}

fn session() -> Session {
    session_with(config(), "127.0.0.1:4000", never_full(), Mode::Smtp)
}

/// Sends one line and returns "code status" of each reply.
fn say(s: &mut Session, line: &str) -> Vec<String> {
    s.command(line.as_bytes())
        .replies
        .iter()
        .map(|r| format!("{} {}", r.code, status_text(r)))
        .collect()
}

/// The enhanced status as text, empty for none.
fn status_text(r: &Reply) -> String {
    r.status.map_or(String::new(), |s| s.to_string())
}

fn one(s: &mut Session, line: &str) -> String {
    let mut r = say(s, line);
    assert_eq!(r.len(), 1, "{line}: {r:?}");
    r.remove(0)
}

#[test]
fn greeting_names_host() {
    assert_eq!(
        session().greeting().to_string(),
        "220 mx.example ESMTP smtpbox"
    );
}

#[test]
fn ehlo_advertises_extensions_without_starttls_or_auth() {
    let mut s = session();
    let step = s.command(b"EHLO client");
    let text = step.replies[0].to_string();
    for kw in [
        "PIPELINING",
        "SIZE 10485760",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
        "HELP",
    ] {
        assert!(text.contains(kw), "{kw} missing in {text}");
    }
    assert!(!text.contains("STARTTLS"));
    assert!(!text.contains("AUTH"));
}

#[test]
fn sequence_errors() {
    let mut s = session();
    assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "503 5.5.1");
    assert_eq!(one(&mut s, "RCPT TO:<root@example.com>"), "503 5.5.1");
    assert_eq!(one(&mut s, "DATA"), "503 5.5.1");
    assert_eq!(one(&mut s, "HELO c"), "250 ");
    assert_eq!(one(&mut s, "RCPT TO:<root@example.com>"), "503 5.5.1");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "250 2.1.0");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "503 5.5.1");
    assert_eq!(one(&mut s, "DATA"), "554 5.5.1");
    assert_eq!(one(&mut s, "RCPT TO:<root@example.com>"), "250 2.1.5");
    assert_eq!(one(&mut s, "DATA"), "354 ");
    assert!(s.reading_content());
}

#[test]
fn recipients_local_relay_and_unknown() {
    let mut s = session();
    one(&mut s, "EHLO c");
    one(&mut s, "MAIL FROM:<>");
    assert_eq!(one(&mut s, "RCPT TO:<x@elsewhere.org>"), "550 5.7.1");
    assert_eq!(one(&mut s, "RCPT TO:<Root+disk@EXAMPLE.com>"), "250 2.1.5");
    assert_eq!(one(&mut s, "RCPT TO:<postmaster>"), "250 2.1.5");
    assert_eq!(one(&mut s, "RCPT TO:<root@[127.0.0.1]>"), "250 2.1.5");
    assert_eq!(
        s.targets().count(),
        1,
        "one maildir, however many recipients"
    );
}

#[test]
fn unknown_local_user_without_default_maildir() {
    let mut c = config();
    c.maildir = None;
    c.mailboxes = vec![("alice".to_string(), unused_dir("alice"))];
    let mut s = session_with(c, "127.0.0.1:4000", never_full(), Mode::Smtp);
    one(&mut s, "EHLO c");
    one(&mut s, "MAIL FROM:<a@b>");
    assert_eq!(one(&mut s, "RCPT TO:<bob@example.com>"), "550 5.1.1");
    assert_eq!(one(&mut s, "RCPT TO:<alice@example.com>"), "250 2.1.5");
}

#[test]
fn limits_come_from_the_listeners_policy() {
    let config = config();
    let mut policy = Policy::new(&config, None, Mode::Smtp);
    assert_eq!(
        policy.limits.max_message_size,
        config.limits.max_message_size
    );
    policy.limits.max_message_size = 500;
    policy.limits.max_recipients = 1;
    let peer = Peer::network(Some("127.0.0.1:4000".parse().unwrap()), None);
    let services = Services {
        store: never_full(),
        users: None,
        tls: false,
    };
    let mut s = Session::new(Arc::new(config), services, peer, &policy);
    let ehlo = s.command(b"EHLO c").replies[0].to_string();
    assert!(ehlo.contains("SIZE 500\r\n"), "{ehlo}");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b> SIZE=501"), "552 5.3.4");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b> SIZE=500"), "250 2.1.0");
    assert_eq!(one(&mut s, "RCPT TO:<a@example.com>"), "250 2.1.5");
    assert_eq!(one(&mut s, "RCPT TO:<b@example.com>"), "452 4.5.3");
    assert_eq!(one(&mut s, "DATA"), "354 ", "DATA begins a message");
    assert_eq!(s.content_rules().max_size, 500);
}

#[test]
fn too_many_recipients() {
    let mut c = config();
    c.limits.max_recipients = 2;
    let mut s = session_with(c, "127.0.0.1:4000", never_full(), Mode::Smtp);
    one(&mut s, "EHLO c");
    one(&mut s, "MAIL FROM:<a@b>");
    assert_eq!(one(&mut s, "RCPT TO:<a@example.com>"), "250 2.1.5");
    assert_eq!(one(&mut s, "RCPT TO:<b@example.com>"), "250 2.1.5");
    assert_eq!(one(&mut s, "RCPT TO:<c@example.com>"), "452 4.5.3");
}

#[test]
fn full_mailbox_at_rcpt() {
    let mut s = session_with(
        config(),
        "127.0.0.1:4000",
        Arc::new(Scripted::full()),
        Mode::Smtp,
    );
    one(&mut s, "EHLO c");
    one(&mut s, "MAIL FROM:<a@b>");
    assert_eq!(one(&mut s, "RCPT TO:<a@example.com>"), "452 4.2.2");
}

#[test]
fn declared_size_over_limit() {
    let mut s = session();
    one(&mut s, "EHLO c");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b> SIZE=10485761"), "552 5.3.4");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b> SIZE=10485760"), "250 2.1.0");
}

#[test]
fn utf8_addresses_need_smtputf8() {
    let mut s = session();
    one(&mut s, "EHLO c");
    assert_eq!(one(&mut s, "MAIL FROM:<jörg@b.de>"), "553 5.6.7");
    assert_eq!(one(&mut s, "MAIL FROM:<jörg@b.de> SMTPUTF8"), "250 2.1.0");
    assert_eq!(one(&mut s, "RCPT TO:<jörg@example.com>"), "250 2.1.5");
}

#[test]
fn simple_replies() {
    let mut s = session();
    assert_eq!(one(&mut s, "NOOP"), "250 2.0.0");
    assert_eq!(one(&mut s, "RSET"), "250 2.0.0");
    assert_eq!(one(&mut s, "VRFY root"), "252 2.5.0");
    assert_eq!(one(&mut s, "EXPN staff"), "502 5.5.1");
    assert_eq!(one(&mut s, "HELP"), "214 2.0.0");
    for verb in [
        "ETRN x",
        "TURN",
        "SEND FROM:<a@b>",
        "SOML FROM:<a@b>",
        "SAML FROM:<a@b>",
    ] {
        assert_eq!(one(&mut s, verb), "502 5.5.1", "{verb}");
    }
    let step = s.command(b"QUIT");
    assert_eq!(step.replies[0].to_string(), "221 2.0.0 Bye");
    assert_eq!(step.action, Action::Close("closed by server"));
}

#[test]
fn forbidden_http_closes() {
    let mut s = session();
    let step = s.command(b"GET / HTTP/1.1");
    assert_eq!(step.replies[0].code, 521);
    assert_eq!(step.replies[0].status.unwrap(), "5.7.0");
    assert_eq!(step.action, Action::Close("closed by server"));
}

#[test]
fn nul_byte_and_long_line() {
    let mut s = session();
    assert_eq!(one(&mut s, "NO\0OP"), "500 5.5.2");
    let step = s.line_too_long();
    assert_eq!(step.replies[0].status.unwrap(), "5.5.2");
}

#[test]
fn error_budget_closes_with_421() {
    let mut s = session();
    for _ in 0..9 {
        assert_eq!(one(&mut s, "BOGUS"), "500 5.5.2");
    }
    let step = s.command(b"BOGUS");
    let codes: Vec<u16> = step.replies.iter().map(|r| r.code).collect();
    assert_eq!(codes, vec![500, 421]);
    assert_eq!(step.replies[1].status.unwrap(), "4.7.0");
    assert_eq!(step.action, Action::Close("closed by server"));
}

#[test]
fn rset_and_ehlo_drop_transaction() {
    let mut s = session();
    one(&mut s, "EHLO c");
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RSET");
    assert_eq!(one(&mut s, "RCPT TO:<a@example.com>"), "503 5.5.1");
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "EHLO c");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "250 2.1.0");
}

#[test]
fn submission_requires_tls_and_auth() {
    let mut s = session_with(config(), "192.0.2.1:4000", never_full(), Mode::Submission);
    one(&mut s, "EHLO c");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "530 5.7.0");
    let mut s = session_with(config(), "127.0.0.1:4000", never_full(), Mode::Submission);
    one(&mut s, "EHLO c");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "530 5.7.0");
}

#[test]
fn starttls_without_certificate() {
    let mut s = session();
    assert_eq!(one(&mut s, "STARTTLS"), "502 5.5.1");
}

fn session_for(peer: Peer) -> Session {
    let services = Services {
        store: never_full(),
        users: Some(Arc::new(Alice)),
        tls: false,
    };
    let config = config();
    let policy = Policy::new(&config, None, Mode::Smtp);
    Session::new(Arc::new(config), services, peer, &policy)
}

#[test]
fn ipv4_mapped_peer_is_written_as_ipv4() {
    let peer = Peer::network(
        Some("[::ffff:192.0.2.7]:4000".parse().unwrap()),
        Some("[::ffff:192.0.2.25]:25".parse().unwrap()),
    );
    assert_eq!(peer.describe(), "[192.0.2.7]:4000");
    assert!(!peer.is_loopback());
    let mut s = session_for(peer);
    one(&mut s, "EHLO client.example");
    one(&mut s, "MAIL FROM:<a@b>");
    // The address literal matches the connection's own IPv4 address.
    assert_eq!(one(&mut s, "RCPT TO:<root@[192.0.2.25]>"), "250 2.1.5");
    let h = s.trace_headers("ID", "date");
    assert!(
        h.contains("Received: from client.example ([192.0.2.7]) by"),
        "{h}"
    );
    let mapped = Peer::network(Some("[::ffff:127.0.0.1]:1".parse().unwrap()), None);
    assert!(mapped.is_loopback());
    let v6 = Peer::network(Some("[2001:db8::1]:25".parse().unwrap()), None);
    assert_eq!(v6.describe(), "[2001:db8::1]:25");
}

#[test]
fn local_caller_is_trusted_named_by_uid_and_never_relays() {
    let caller = LocalCaller {
        uid: 1000,
        user: "joe".to_string(),
    };
    let peer = Peer::local_caller(caller);
    assert_eq!(peer.describe(), "local uid=1000 user=joe");
    assert!(peer.is_loopback());
    let mut s = session_for(peer);
    let ehlo = s.command(b"EHLO box").replies[0].to_string();
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN"),
        "AUTH without TLS: {ehlo}"
    );
    assert_eq!(one(&mut s, "MAIL FROM:<joe@mx.example>"), "250 2.1.0");
    assert_eq!(one(&mut s, "RCPT TO:<x@elsewhere.example>"), "550 5.7.1");
    assert_eq!(one(&mut s, "RCPT TO:<root@example.com>"), "250 2.1.5");
    let h = s.trace_headers("ID", "date");
    assert!(
        h.contains("Received: from box (uid 1000 user joe) by mx.example (smtpbox) with ESMTP"),
        "{h}"
    );
}
