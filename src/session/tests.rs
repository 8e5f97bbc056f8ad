//! The session's tests: plain byte slices in, replies out, and a store
//! that keeps messages in memory.

use super::auth::MAX_AUTH_FAILURES;
use super::trace::{cut, fold, FOLD_AT, MAX_HEADER_LINE};
use super::*;
use crate::data::{BareLf, ContentWrite};
use crate::delivery::{Discard, Draft, NotStored, Stored};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    fn is_full(&self, _: &Target, _: u64) -> bool {
        self.full
    }

    fn open(
        &self,
        targets: Vec<Target>,
        rules: ContentRules,
        quota: u64,
        trace: &dyn Fn(&str) -> String,
    ) -> Result<Box<dyn Draft>, DeliveryError> {
        if let Some(errno) = self.open_errno {
            let error = std::io::Error::from_raw_os_error(errno);
            return Err(DeliveryError::io(Path::new("/x"), error));
        }
        Ok(Box::new(Recorded {
            inner: Discard.open(targets, rules, quota, trace)?,
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

#[test]
fn auth_plain_with_and_without_initial_response() {
    let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
    let ehlo = s.command(b"EHLO c").replies[0].to_string();
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN"),
        "loopback may AUTH without TLS: {ehlo}"
    );
    assert_eq!(
        one(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0wrong"))),
        "535 5.7.8"
    );
    assert_eq!(one(&mut s, "AUTH PLAIN"), "334 ");
    assert_eq!(one(&mut s, &b64(b"\0alice\0secret")), "235 2.7.0");
    assert_eq!(
        one(&mut s, "AUTH PLAIN"),
        "503 5.5.1",
        "already authenticated"
    );
    one(
        &mut s,
        "MAIL FROM:<alice@example.com> AUTH=alice@example.com",
    );
    one(&mut s, "RCPT TO:<root@example.com>");
    let trace = s.trace_headers("ID", "date");
    assert!(trace.contains(" with ESMTPA id ID "), "{trace}");
}

#[test]
fn auth_login_exchange() {
    let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
    one(&mut s, "EHLO c");
    let step = s.command(b"AUTH LOGIN");
    assert_eq!(step.replies[0].to_string(), "334 VXNlcm5hbWU6");
    let step = s.command(b64(b"alice").as_bytes());
    assert_eq!(step.replies[0].to_string(), "334 UGFzc3dvcmQ6");
    assert_eq!(one(&mut s, &b64(b"secret")), "235 2.7.0");
    // LOGIN with the user name as initial response.
    let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
    one(&mut s, "EHLO c");
    let step = s.command(format!("AUTH LOGIN {}", b64(b"alice")).as_bytes());
    assert_eq!(step.replies[0].to_string(), "334 UGFzc3dvcmQ6");
    assert_eq!(one(&mut s, &b64(b"nope")), "535 5.7.8");
}

#[test]
fn auth_cancel_bad_base64_and_unknown_mechanism() {
    let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
    one(&mut s, "EHLO c");
    one(&mut s, "AUTH PLAIN");
    assert_eq!(one(&mut s, "*"), "501 5.7.0");
    one(&mut s, "AUTH LOGIN");
    assert_eq!(one(&mut s, "*"), "501 5.7.0");
    assert_eq!(one(&mut s, "AUTH PLAIN !!!notbase64"), "501 5.5.2");
    assert_eq!(one(&mut s, "AUTH CRAM-MD5"), "504 5.5.4");
    assert_eq!(one(&mut s, "NOOP"), "250 2.0.0", "session goes on");
}

#[test]
fn unreadable_users_file_is_454_and_no_failure() {
    let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
    s.services.users = Some(Arc::new(Unreadable));
    one(&mut s, "EHLO c");
    let good = format!("AUTH PLAIN {}", b64(b"\0alice\0secret"));
    for _ in 0..MAX_AUTH_FAILURES + 1 {
        let step = s.command(good.as_bytes());
        let codes: Vec<String> = step.replies.iter().map(|r| r.to_string()).collect();
        assert_eq!(codes, ["454 4.7.0 Temporary authentication failure"]);
        assert_eq!(step.action, Action::Continue);
    }
    // LOGIN reaches the same check after its two challenges.
    assert_eq!(one(&mut s, "AUTH LOGIN"), "334 ");
    assert_eq!(one(&mut s, &b64(b"alice")), "334 ");
    assert_eq!(one(&mut s, &b64(b"secret")), "454 4.7.0");
    // The file is back: the attempts before did not count.
    s.services.users = Some(Arc::new(Alice));
    let bad = format!("AUTH PLAIN {}", b64(b"\0alice\0bad"));
    assert_eq!(one(&mut s, &bad), "535 5.7.8");
    assert_eq!(one(&mut s, &bad), "535 5.7.8");
    assert_eq!(one(&mut s, &good), "235 2.7.0");
}

#[test]
fn three_auth_failures_close_the_session() {
    let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
    one(&mut s, "EHLO c");
    let bad = format!("AUTH PLAIN {}", b64(b"\0alice\0bad"));
    assert_eq!(one(&mut s, &bad), "535 5.7.8");
    assert_eq!(one(&mut s, &bad), "535 5.7.8");
    let step = s.command(bad.as_bytes());
    let codes: Vec<String> = step
        .replies
        .iter()
        .map(|r| format!("{} {}", r.code, status_text(r)))
        .collect();
    assert_eq!(codes, ["535 5.7.8", "421 4.7.0"]);
    assert_eq!(step.action, Action::Close("closed by server"));
}

#[test]
fn auth_needs_tls_on_remote_connections() {
    let mut s = auth_session("192.0.2.1:4000", Mode::Smtp, true);
    let ehlo = s.command(b"EHLO c").replies[0].to_string();
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(one(&mut s, "AUTH PLAIN"), "538 5.7.11");
    s.tls_started("TLSv1.3 TLS_AES_128_GCM_SHA256".to_string());
    let ehlo = s.command(b"EHLO c").replies[0].to_string();
    assert!(
        !ehlo.contains("STARTTLS") && ehlo.contains("AUTH PLAIN LOGIN"),
        "{ehlo}"
    );
    assert_eq!(one(&mut s, "STARTTLS"), "503 5.5.1");
    assert_eq!(
        one(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0secret"))),
        "235 2.7.0"
    );
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<root@example.com>");
    let trace = s.trace_headers("ID", "date");
    assert!(
        trace.contains(" with ESMTPSA (TLSv1.3 TLS_AES_128_GCM_SHA256) id ID "),
        "{trace}"
    );
}

#[test]
fn submission_wants_tls_even_from_loopback() {
    let mut s = auth_session("127.0.0.1:4000", Mode::Submission, true);
    one(&mut s, "EHLO c");
    assert_eq!(
        one(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0secret"))),
        "235 2.7.0"
    );
    assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "530 5.7.0");
}

#[test]
fn submission_accepts_mail_after_tls_and_auth() {
    let mut s = auth_session("192.0.2.1:4000", Mode::Submission, true);
    one(&mut s, "EHLO c");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "530 5.7.0");
    s.tls_started("TLSv1.3".to_string());
    one(&mut s, "EHLO c");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "530 5.7.0");
    one(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0secret")));
    assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "250 2.1.0");
}

#[test]
fn starttls_forgets_the_session() {
    let mut s = auth_session("192.0.2.1:4000", Mode::Smtp, true);
    one(&mut s, "EHLO c");
    let step = s.command(b"STARTTLS");
    assert_eq!(step.replies[0].to_string(), "220 2.0.0 Ready to start TLS");
    assert_eq!(step.action, Action::StartTls);
    s.tls_started("TLSv1.2".to_string());
    assert_eq!(
        one(&mut s, "MAIL FROM:<a@b>"),
        "503 5.5.1",
        "HELO forgotten"
    );
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

/// MAIL and RCPT, DATA, and the message opened: the session waits for
/// the content.
fn data_opened(s: &mut Session) -> ContentRules {
    one(s, "MAIL FROM:<a@b>");
    one(s, "RCPT TO:<a@example.com>");
    let rules = s.content_rules();
    let step = s.command(b"DATA");
    assert_eq!(
        step.replies[0].to_string(),
        "354 End data with <CR><LF>.<CR><LF>"
    );
    assert_eq!(step.action, Action::Continue);
    assert!(s.reading_content(), "DATA did not begin a message");
    rules
}

/// A session whose messages may hold `max` bytes, in a store of its own.
fn small_session(max: u64) -> (Session, Arc<Scripted>) {
    let mut c = config();
    c.limits.max_message_size = max;
    let store = never_full();
    let s = session_with(c, "127.0.0.1:4000", store.clone(), Mode::Smtp);
    (s, store)
}

#[test]
fn content_rules_at_end_of_data() {
    let mut s = session();
    one(&mut s, "EHLO c");
    let rules = data_opened(&mut s);
    assert_eq!(rules.max_size, 10_485_760);
    s.input_closed();
    let (mut s, store) = small_session(10);
    one(&mut s, "EHLO c");
    data_opened(&mut s);
    let too_big = content(&mut s, b"0123456789a\r\n.\r\n");
    assert_eq!(too_big.status.unwrap(), "5.3.4");
    let mut s = session();
    one(&mut s, "EHLO c");
    data_opened(&mut s);
    let looped = "Received: x\r\n".repeat(101) + "\r\nbody\r\n.\r\n";
    assert_eq!(content(&mut s, looped.as_bytes()).status.unwrap(), "5.4.6");
    data_opened(&mut s);
    let ok = "Received: x\r\n".repeat(100) + "\r\nbody\r\n.\r\n";
    let reply = content(&mut s, ok.as_bytes());
    assert_eq!(reply.to_string(), "250 2.0.0 Ok: queued as ID");
    assert_eq!(
        one(&mut s, "RCPT TO:<a@example.com>"),
        "503 5.5.1",
        "transaction over"
    );
    // A message exactly at the limit is stored, and stored as sent.
    data_opened(&mut s);
    drop(s);
    let (mut s, store_10) = small_session(10);
    one(&mut s, "EHLO c");
    data_opened(&mut s);
    assert_eq!(content(&mut s, b"01234567\r\n.\r\n").code, 250);
    assert_eq!(store_10.finished(), [b"01234567\r\n".to_vec()]);
    assert!(store.finished().is_empty(), "nothing over the limit stored");
}

#[test]
fn bare_lf_rejected_when_configured() {
    let mut c = config();
    c.bare_lf = BareLf::Reject;
    let mut s = session_with(c, "127.0.0.1:4000", never_full(), Mode::Smtp);
    one(&mut s, "EHLO c");
    let rules = data_opened(&mut s);
    assert_eq!(rules.bare_lf, BareLf::Reject);
    assert_eq!(
        content(&mut s, b"a\nb\r\n.\r\n").to_string(),
        "550 5.6.0 Bare CR or LF in message content is not allowed"
    );
}

#[test]
fn delivery_errors_map_to_replies() {
    let store = never_full();
    let mut s = session_with(config(), "127.0.0.1:4000", store.clone(), Mode::Smtp);
    one(&mut s, "EHLO c");
    data_opened(&mut s);
    let full = DeliveryError::io(Path::new("/x"), std::io::Error::from_raw_os_error(28));
    store.fail_next_finish(full);
    assert_eq!(content(&mut s, b".\r\n").status.unwrap(), "4.3.1");
    data_opened(&mut s);
    let broken = DeliveryError::io(Path::new("/x"), std::io::Error::from_raw_os_error(5));
    store.fail_next_finish(broken);
    assert_eq!(content(&mut s, b".\r\n").status.unwrap(), "4.3.0");
    // Each failure's reply, one by one (these were maildir's own once).
    let io = |errno| DeliveryError::io(Path::new("/x"), std::io::Error::from_raw_os_error(errno));
    assert_eq!(failure_reply(&io(28)), Reply::no_storage());
    assert_eq!(failure_reply(&io(5)), Reply::local_error());
    let over = DeliveryError::Quota {
        maildir: PathBuf::from("/x"),
        used: 100,
        size: 50,
        quota: 120,
    };
    assert_eq!(failure_reply(&over), Reply::mailbox_full());
    data_opened(&mut s);
    store.fail_next_finish(over);
    assert_eq!(content(&mut s, b".\r\n"), Reply::mailbox_full());
    assert!(store.finished().is_empty());
}

#[test]
fn a_message_that_cannot_be_opened_is_a_reply_and_no_transaction() {
    let store = Arc::new(Scripted::failing_open(5));
    let mut s = session_with(config(), "127.0.0.1:4000", store, Mode::Smtp);
    one(&mut s, "EHLO c");
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<a@example.com>");
    let step = s.command(b"DATA");
    assert_eq!(
        (status_text(&step.replies[0]), step.action),
        ("4.3.0".to_string(), Action::Continue)
    );
    assert!(!s.reading_content());
    assert_eq!(one(&mut s, "DATA"), "503 5.5.1");
    // A BDAT chunk whose message cannot be opened is read and dropped.
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<a@example.com>");
    let step = s.command(b"BDAT 7");
    assert_eq!(status_text(&step.replies[0]), "4.3.0");
    assert!(s.reading_content(), "the chunk is read");
    assert_eq!(push_all(&mut s, b"1234567").len(), 0);
    assert!(!s.reading_content());
    assert_eq!(one(&mut s, "NOOP"), "250 2.0.0", "in step after the chunk");
}

#[test]
fn lf_only_session_is_the_clients_until_it_sends_crlf() {
    let store = never_full();
    let mut s = session_with(config(), "127.0.0.1:4000", store.clone(), Mode::Smtp);
    push_all(
        &mut s,
        b"HELO c\nMAIL FROM:<a@b>\nRCPT TO:<a@example.com>\n",
    );
    let steps = push_all(&mut s, b"DATA\n");
    assert_eq!(steps[0].replies[0].code, 354);
    // LF . LF ends the data of a session that never sent a CRLF.
    assert_eq!(content(&mut s, b"hi\n.\n").code, 250);
    assert_eq!(store.finished(), [b"hi\r\n".to_vec()]);
    // One CRLF line, and the exception is over for the session.
    one(&mut s, "NOOP");
    push_all(&mut s, b"MAIL FROM:<a@b>\nRCPT TO:<a@example.com>\nDATA\n");
    assert!(s.reading_content());
    assert!(push_all(&mut s, b"x\n.\n").is_empty(), "LF . LF is content");
    assert_eq!(content(&mut s, b"\r\n.\r\n").code, 250);
    // (The dot after a bare LF began a line: unstuffed, RFC 5321 4.5.2.)
    assert_eq!(store.finished()[1], b"x\r\n\r\n\r\n".to_vec());
}

#[test]
fn synchronization_rule_for_remote_clients_only() {
    let mut remote = session_with(config(), "192.0.2.1:4000", never_full(), Mode::Smtp);
    let step = remote.open(|| true);
    assert_eq!(
        step.replies[0].to_string(),
        "554 5.5.0 Protocol error: wait for the server's reply"
    );
    assert_eq!(
        step.action,
        Action::Close("talked before greeting (554 5.5.0)")
    );
    let mut remote = session_with(config(), "192.0.2.1:4000", never_full(), Mode::Smtp);
    assert_eq!(remote.open(|| false).replies[0].code, 220);
    one(&mut remote, "EHLO c");
    one(&mut remote, "MAIL FROM:<a@b>");
    one(&mut remote, "RCPT TO:<a@example.com>");
    let (_, step) = remote.push(b"DATA\r\nSubject: early\r\n");
    let step = step.unwrap();
    assert_eq!(step.replies[0].status.unwrap(), "5.5.0");
    assert_eq!(step.action, Action::Close("content before 354 (554 5.5.0)"));
    // Loopback clients may do both; the probe is not even asked.
    let mut local = session();
    let step = local.open(|| panic!("probed"));
    assert_eq!(step.replies[0].code, 220);
    one(&mut local, "EHLO c");
    one(&mut local, "MAIL FROM:<a@b>");
    one(&mut local, "RCPT TO:<a@example.com>");
    let (_, step) = local.push(b"DATA\r\nSubject: early\r\n");
    assert_eq!(step.unwrap().replies[0].code, 354);
    assert!(local.reading_content());
}

#[test]
fn bdat_flow() {
    let store = never_full();
    let mut s = session_with(config(), "127.0.0.1:4000", store.clone(), Mode::Smtp);
    one(&mut s, "EHLO c");
    // A refused chunk is read and thrown away.
    assert_eq!(one(&mut s, "BDAT 5"), "503 5.5.1");
    assert!(s.reading_content());
    assert!(push_all(&mut s, b"12345").is_empty());
    one(&mut s, "MAIL FROM:<a@b> BODY=BINARYMIME");
    assert_eq!(one(&mut s, "BDAT 5"), "554 5.5.1", "no recipient yet");
    assert!(push_all(&mut s, b"12345").is_empty());
    one(&mut s, "RCPT TO:<a@example.com>");
    assert_eq!(one(&mut s, "DATA"), "503 5.5.1", "BINARYMIME needs BDAT");
    let step = s.command(b"BDAT 5");
    assert!(
        step.replies.is_empty(),
        "the first chunk begins the message"
    );
    assert!(s.reading_content());
    let steps = push_all(&mut s, b"ab\ncd");
    assert_eq!(
        steps[0].replies[0].to_string(),
        "250 2.0.0 5 octets received"
    );
    assert_eq!(one(&mut s, "DATA"), "503 5.5.1", "no DATA after BDAT");
    let step = s.command(b"BDAT 0 LAST");
    assert_eq!(step.replies[0].to_string(), "250 2.0.0 Ok: queued as ID");
    assert_eq!(store.finished(), [b"ab\ncd".to_vec()], "byte for byte");
    // RSET between chunks drops the message.
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<a@example.com>");
    s.command(b"BDAT 3");
    push_all(&mut s, b"xyz");
    let step = s.command(b"RSET");
    assert_eq!(step.replies[0].to_string(), "250 2.0.0 Ok");
    assert_eq!(step.action, Action::Continue);
    assert_eq!(one(&mut s, "RCPT TO:<a@example.com>"), "503 5.5.1");
    assert_eq!(
        store.finished().len(),
        1,
        "the dropped message is not stored"
    );
    // A last chunk with content, pipelined after its command.
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<a@example.com>");
    let steps = push_all(&mut s, b"BDAT 2 LAST\r\nokNOOP\r\n");
    let replies: Vec<String> = steps
        .iter()
        .flat_map(|s| &s.replies)
        .map(|r| r.to_string())
        .collect();
    assert_eq!(replies, ["250 2.0.0 Ok: queued as ID", "250 2.0.0 Ok"]);
    assert_eq!(store.finished()[1], b"ok".to_vec());
}

#[test]
fn input_closed_names_the_phase_and_stores_nothing() {
    let store = never_full();
    let mut s = session_with(config(), "127.0.0.1:4000", store.clone(), Mode::Smtp);
    assert_eq!(s.input_closed(), "client closed");
    one(&mut s, "EHLO c");
    data_opened(&mut s);
    push_all(&mut s, b"half a message");
    assert_eq!(s.input_closed(), "client closed during DATA");
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<a@example.com>");
    s.command(b"BDAT 10");
    assert_eq!(s.input_closed(), "client closed during BDAT");
    assert!(store.finished().is_empty());
}

#[test]
fn starttls_forgets_the_message_and_the_partial_line() {
    let store = never_full();
    let mut s = session_with(config(), "127.0.0.1:4000", store.clone(), Mode::Smtp);
    one(&mut s, "EHLO c");
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<a@example.com>");
    s.command(b"BDAT 1");
    push_all(&mut s, b"x");
    push_all(&mut s, b"MAIL FROM:<injected@");
    s.tls_started("TLSv1.3 (test)".to_string());
    assert!(!s.hold_replies());
    assert_eq!(
        one(&mut s, "MAIL FROM:<a@b>"),
        "503 5.5.1",
        "HELO forgotten"
    );
    assert!(store.finished().is_empty());
}

#[test]
fn trace_headers_name_everything() {
    let mut s = session();
    one(&mut s, "EHLO client.example");
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<root@example.com>");
    let h = s.trace_headers("ID7", "Sat, 28 Nov 2026 20:14:17 +0000");
    assert_eq!(
        h,
        "Return-Path: <a@b>\r\nReceived: from client.example ([127.0.0.1]) by mx.example (smtpbox) with ESMTP id ID7 for <root@example.com>; Sat, 28 Nov 2026 20:14:17 +0000\r\n"
    );
}

#[test]
fn an_overlong_helo_is_cut_in_the_trace_and_still_answered() {
    let mut s = session();
    let helo = "a".repeat(2000);
    let reply = s.command(format!("EHLO {helo}").as_bytes()).replies;
    assert!(
        reply[0].to_string().starts_with("250-mx.example"),
        "{reply:?}"
    );
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<root@example.com>");
    let h = s.trace_headers("ID7", "Sat, 28 Nov 2026 20:14:17 +0000");
    let want = format!(
        "Received: from {} ([127.0.0.1]) by mx.example (smtpbox) with ESMTP id ID7 \
         for <root@example.com>; Sat, 28 Nov 2026 20:14:17 +0000\r\n",
        "a".repeat(255)
    );
    assert!(h.ends_with(&want), "{h}");
}

#[test]
fn a_header_over_998_octets_is_folded_at_spaces() {
    let words: Vec<String> = (0..300).map(|i| format!("w{i}")).collect();
    let header = format!("Received: from {} ; date", words.join(" "));
    let folded = fold(&header);
    assert_eq!(
        folded.replace("\r\n", ""),
        header,
        "unfolds to the original"
    );
    for line in folded.split("\r\n") {
        assert!(line.len() <= FOLD_AT, "{line:?}");
    }
    let lines: Vec<&str> = folded.split("\r\n").collect();
    assert!(lines.len() > 10 && lines[1..].iter().all(|l| l.starts_with(' ')));
    // A long word stays whole, on a line of its own; double spaces never
    // leave a line of white space alone.
    let header = format!(
        "Received: from {}  by x {}",
        "h".repeat(900),
        "y ".repeat(60)
    );
    let folded = fold(&header);
    assert_eq!(folded.replace("\r\n", ""), header);
    assert!(folded
        .split("\r\n")
        .all(|l| l.len() <= MAX_HEADER_LINE && !l.trim().is_empty()));
    assert_eq!(fold("Received: short"), "Received: short");
    assert_eq!(cut("é".repeat(200), 255), "é".repeat(127));
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
