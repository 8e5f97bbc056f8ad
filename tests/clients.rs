//! Real SMTP clients against the real binary: Python's smtplib, curl's
//! `smtp://`, swaks, and the `printf … | nc` style of alert scripts. Each
//! test asserts the client's own verdict (exit status, transcript) and the
//! exact bytes stored in `new/`. Tools missing from the machine fail the test
//! under CI (`CI` set) and are skipped otherwise: swaks and netcat-openbsd
//! are Debian packages (apt-get install swaks netcat-openbsd).

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A second mailbox, so one transaction is linked into two Maildirs.
const ALICE: &str = "mailbox = alice {dir}/alice";

/// Python's smtplib: `sendmail()` of UTF-8 bytes to two recipients, with a
/// line that needs dot-stuffing. Exits 0 only when every reply was 2xx/3xx.
const PY_SENDMAIL: &str = r#"
import smtplib, sys
msg = ("From: a@b.org\r\nTo: root@example.com, alice@example.com\r\n"
       "Subject: Gr\u00fc\u00dfe aus K\u00f6ln \u2713\r\n\r\n"
       "line one\r\n.leading dot\r\n").encode("utf-8")
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    refused = s.sendmail("a@b.org", ["root@example.com", "alice@example.com"],
                         msg, ["BODY=8BITMIME"])
    assert refused == {}, refused
"#;

/// Python's smtplib: `send_message()` to a non-ASCII local part. argv[2] is
/// `explicit` (the caller passes `mail_options=['SMTPUTF8']`) or `auto`
/// (smtplib adds SMTPUTF8 itself). Prints the flattened message in hex, made
/// by the same generator send_message uses, so the test can compare bytes.
const PY_SMTPUTF8: &str = r#"
import io, smtplib, sys
from email.generator import BytesGenerator
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "a@b.org"
m["To"] = "j\u00f6rg@example.com"
m["Subject"] = "f\u00fcr J\u00f6rg"
m.set_content("hallo J\u00f6rg\n")
buf = io.BytesIO()
BytesGenerator(buf, policy=m.policy.clone(utf8=True)).flatten(m, linesep="\r\n")
opts = ["SMTPUTF8"] if sys.argv[2] == "explicit" else []
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    s.send_message(m, mail_options=opts)
print(buf.getvalue().hex())
"#;

#[test]
fn smtplib_sendmail_utf8_subject_two_recipients_stored() {
    let server = Server::start(ALICE);
    let port = server.addr.port().to_string();
    let out = run(Command::new("python3").args(["-c", PY_SENDMAIL, &port]));
    assert_success(&out, "python3 smtplib sendmail");
    let want = "From: a@b.org\r\nTo: root@example.com, alice@example.com\r\n\
                Subject: Grüße aus Köln ✓\r\n\r\nline one\r\n.leading dot\r\n";
    for maildir in [server.maildir(), alice(&server)] {
        let message = only_message(&maildir);
        assert!(
            message.starts_with(b"Return-Path: <a@b.org>\r\n"),
            "{}",
            show(&message)
        );
        assert_eq!(show(body(&message)), want, "in {}", maildir.display());
    }
}

#[test]
fn smtplib_send_message_smtputf8_option_to_utf8_local_part_stored() {
    // smtplib appends its own SMTPUTF8 to the caller's, so the server sees
    // `MAIL FROM:<a@b.org> size=N SMTPUTF8 SMTPUTF8 BODY=8BITMIME`.
    smtputf8_roundtrip("explicit");
}

#[test]
fn smtplib_send_message_utf8_local_part_stored() {
    smtputf8_roundtrip("auto");
}

#[test]
fn curl_upload_crlf_file_stored_byte_for_byte() {
    // curl dot-stuffs only after CRLF; here every line ends in CRLF.
    let file = b"Subject: curl\r\nFrom: a@b.org\r\n\r\nline1\r\n.dot\r\n..two\r\nend\r\n";
    assert_eq!(show(&curl_upload(file, &[])), show(file));
}

#[test]
fn curl_upload_lf_file_is_stored_with_crlf() {
    // curl 7.88 sends an LF file as is and, since it does not end in CRLF,
    // ends the data with "\r\n.\r\n": the bare LFs are normalized and that
    // CRLF adds one empty line.
    let file = b"Subject: curl\nFrom: a@b.org\n\nline1\nend\n";
    let want = "Subject: curl\r\nFrom: a@b.org\r\n\r\nline1\r\nend\r\n\r\n";
    assert_eq!(show(&curl_upload(file, &[])), want);
}

#[test]
fn curl_crlf_option_lf_file_with_dot_line_stored() {
    // With --crlf curl converts LF to CRLF and then dot-stuffs.
    let file = b"Subject: curl\n\nline1\n.dot\nend\n";
    let want = "Subject: curl\r\n\r\nline1\r\n.dot\r\nend\r\n";
    assert_eq!(show(&curl_upload(file, &["--crlf"])), want);
}

#[test]
fn swaks_body_stored() {
    if !have_tool("swaks", "swaks") {
        return;
    }
    let server = Server::start("");
    let out = run(swaks(&server).args(["--to", "root@example.com", "--body", "disk failing"]));
    assert_success(&out, "swaks");
    assert!(
        stdout(&out).contains("<-  250 2.0.0 Ok: queued as "),
        "{}",
        stdout(&out)
    );
    let message = only_message(&server.maildir());
    assert_no_bare_lf(&message);
    let (headers, text) = split_header(body(&message));
    assert!(headers.contains("To: root@example.com\r\n"), "{headers}");
    assert!(headers.contains("From: a@b.org\r\n"), "{headers}");
    assert!(headers.contains("X-Mailer: swaks"), "{headers}");
    // swaks appends empty lines after the body; their number is its business.
    assert!(text.starts_with("disk failing\r\n"), "{text:?}");
    assert!(
        text["disk failing\r\n".len()..]
            .chars()
            .all(|c| c == '\r' || c == '\n'),
        "{text:?}"
    );
}

#[test]
fn swaks_pipeline_groups_commands_and_stores_for_both_recipients() {
    if !have_tool("swaks", "swaks") {
        return;
    }
    let server = Server::start(ALICE);
    let out = run(swaks(&server).args([
        "--pipeline",
        "--to",
        "root@example.com,alice@example.com",
        "--body",
        "pipelined",
    ]));
    assert_success(&out, "swaks --pipeline");
    // Pipelined: MAIL, both RCPTs and DATA go out before the first reply.
    let log = stdout(&out);
    let data_sent = log.find(" -> DATA").expect("DATA in transcript");
    let mail_ok = log.find("<-  250 2.1.0").expect("MAIL reply in transcript");
    assert!(data_sent < mail_ok, "not pipelined:\n{log}");
    assert_eq!(log.matches("<-  250 2.1.5").count(), 2, "{log}");
    assert!(log.contains("<-  250 2.0.0 Ok: queued as "), "{log}");
    for maildir in [server.maildir(), alice(&server)] {
        let message = only_message(&maildir);
        assert_no_bare_lf(&message);
        let (headers, text) = split_header(body(&message));
        assert!(
            headers.contains("To: root@example.com,alice@example.com\r\n"),
            "{headers}"
        );
        assert!(text.starts_with("pipelined\r\n"), "{text:?}");
    }
}

/// What an alert script pipes into nc: bare LFs, no waiting for replies.
const TYPED: &[u8] =
    b"HELO x\nMAIL FROM:<root>\nRCPT TO:<root>\nDATA\nSubject: alert\n\ndisk failing\n.\nQUIT\n";

/// The replies to `TYPED`, as code prefixes, in order.
const TYPED_REPLIES: [&str; 7] = [
    "220 mx.test ",
    "250 ",
    "250 2.1.0",
    "250 2.1.5",
    "354 ",
    "250 2.0.0 Ok: queued as ",
    "221 2.0.0",
];

#[test]
fn typed_into_nc_one_write_bare_lf_stored_with_crlf() {
    let server = Server::start("");
    let mut client = server.connect();
    // Loopback: talking before the greeting is allowed (SPEC 5).
    client.send(TYPED);
    for want in TYPED_REPLIES {
        let reply = client.reply();
        assert!(reply.starts_with(want), "expected {want:?}, got {reply:?}");
    }
    assert!(client.closed(), "not closed after QUIT");
    let message = only_message(&server.maildir());
    assert!(
        message.starts_with(b"Return-Path: <root>\r\n"),
        "{}",
        show(&message)
    );
    assert_eq!(
        show(body(&message)),
        "Subject: alert\r\n\r\ndisk failing\r\n"
    );
}

#[test]
fn real_nc_printf_pipe_stored_with_crlf() {
    if !have_tool("nc", "netcat-openbsd") {
        return;
    }
    let server = Server::start("");
    let script = r"printf 'HELO x\nMAIL FROM:<root>\nRCPT TO:<root>\nDATA\nSubject: alert\n\ndisk failing\n.\nQUIT\n' | nc -w 5 127.0.0.1 $0";
    let out = run(Command::new("sh").args(["-c", script, &server.addr.port().to_string()]));
    assert_success(&out, "printf | nc");
    let text = stdout(&out);
    let replies: Vec<&str> = text.lines().collect();
    assert_eq!(replies.len(), TYPED_REPLIES.len(), "{replies:?}");
    for (reply, want) in replies.iter().zip(TYPED_REPLIES) {
        assert!(reply.starts_with(want), "expected {want:?}, got {reply:?}");
    }
    let message = only_message(&server.maildir());
    assert_eq!(
        show(body(&message)),
        "Subject: alert\r\n\r\ndisk failing\r\n"
    );
}

/// Sends a non-ASCII-addressed message with smtplib (`mode` as PY_SMTPUTF8
/// takes it) and checks the stored bytes equal what smtplib generated.
fn smtputf8_roundtrip(mode: &str) {
    let server = Server::start("");
    let port = server.addr.port().to_string();
    let out = run(Command::new("python3").args(["-c", PY_SMTPUTF8, &port, mode]));
    assert_success(&out, "python3 smtplib send_message");
    let sent = unhex(stdout(&out).trim());
    let message = only_message(&server.maildir());
    assert!(
        message.starts_with(b"Return-Path: <a@b.org>\r\n"),
        "{}",
        show(&message)
    );
    let trace = &message[..message.len() - body(&message).len()];
    assert!(
        show(trace).contains("for <jörg@example.com>"),
        "{}",
        show(trace)
    );
    assert_eq!(show(body(&message)), show(&sent));
    assert!(
        show(&sent).contains("To: jörg@example.com\r\n"),
        "{}",
        show(&sent)
    );
}

/// Uploads `file` with curl (plus `extra` options) to a fresh server and
/// returns the stored message after the trace headers.
fn curl_upload(file: &[u8], extra: &[&str]) -> Vec<u8> {
    let server = Server::start("");
    let path = server.dir.path().join("upload.eml");
    std::fs::write(&path, file).expect("write upload file");
    let url = format!("smtp://127.0.0.1:{}", server.addr.port());
    let mut curl = Command::new("curl");
    curl.args(["-s", "-S", "--max-time", "10", "--url", &url])
        .args(["--mail-from", "a@b.org", "--mail-rcpt", "root@example.com"])
        .args(extra)
        .arg("--upload-file")
        .arg(&path);
    assert_success(&run(&mut curl), "curl smtp://");
    body(&only_message(&server.maildir())).to_vec()
}

/// swaks aimed at `server`, sender a@b.org, bounded in time.
fn swaks(server: &Server) -> Command {
    let mut cmd = Command::new("swaks");
    cmd.args([
        "--server",
        &server.addr.to_string(),
        "--from",
        "a@b.org",
        "--timeout",
        "10",
    ]);
    cmd
}

/// Runs `cmd` to completion, capturing its output; fails the test with
/// what it wrote when it takes more than 30 s.
fn run(cmd: &mut Command) -> Output {
    output_bounded(cmd, Duration::from_secs(30))
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one message in `maildir/new`, whole.
fn only_message(maildir: &Path) -> Vec<u8> {
    let mut all = messages(maildir);
    assert_eq!(all.len(), 1, "messages in {}", maildir.display());
    all.remove(0)
}

fn alice(server: &Server) -> PathBuf {
    server.dir.path().join("alice")
}

/// Bytes as text for readable assertion failures (all stored text is UTF-8).
fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Splits a message at its first empty line: (header with its CRLF, body).
fn split_header(message: &[u8]) -> (String, String) {
    let text = show(message);
    match text.split_once("\r\n\r\n") {
        Some((h, b)) => (format!("{h}\r\n"), b.to_owned()),
        None => panic!("no header/body separator in {text:?}"),
    }
}

fn assert_no_bare_lf(message: &[u8]) {
    let bare = message
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || message[i - 1] != b'\r'));
    assert!(!bare, "bare LF stored: {}", show(message));
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex from python"))
        .collect()
}
