//! Sendmail mode (SPEC §8) through the real binary: invoked through a
//! symlink named `sendmail` and as `smtpbox sendmail`, a message on stdin,
//! the exit status (sysexits.h) and the exact files in the Maildirs.

mod common;
use common::*;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A config (hostname mx.test, domain example.com, mailboxes for alice, bob
/// and carol, nothing else) and a `sendmail` symlink to the binary.
struct Box {
    dir: TempDir,
    conf: PathBuf,
}

impl Box {
    fn new(extra: &str) -> Box {
        let dir = TempDir::new("sendmail");
        let d = dir.path().display().to_string();
        let conf = dir.path().join("smtpbox.conf");
        let text = format!(
            "hostname = mx.test\ndomain = example.com\nmailbox = alice {d}/alice\n\
             mailbox = bob {d}/bob\nmailbox = carol {d}/carol\n{}\n",
            extra.replace("{dir}", &d)
        );
        fs::write(&conf, text).unwrap();
        std::os::unix::fs::symlink(bin(), dir.path().join("sendmail")).unwrap();
        Box { dir, conf }
    }

    fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join(user)
    }

    /// Runs `sendmail -C CONF ARGS` through the symlink with `input` on stdin.
    fn sendmail(&self, args: &[&str], input: &[u8]) -> Outcome {
        let mut command = smtpbox_as(&self.dir.path().join("sendmail"));
        command.arg("-C").arg(&self.conf).args(args);
        run(command, input)
    }

    /// Runs `smtpbox sendmail ARGS` (no -C: the caller picks the config).
    fn smtpbox_sendmail(&self, args: &[&str], input: &[u8]) -> Outcome {
        let mut command = smtpbox();
        command.arg("sendmail").args(args);
        run(command, input)
    }

    /// The one message in `user`'s new/, as text.
    fn only_message(&self, user: &str) -> String {
        let messages = messages(&self.maildir(user));
        assert_eq!(messages.len(), 1, "{user}: {} messages", messages.len());
        String::from_utf8(messages[0].clone()).unwrap()
    }

    /// Nothing in any new/ nor tmp/.
    fn assert_nothing_delivered(&self) {
        for user in ["alice", "bob", "carol"] {
            assert_eq!(count(&self.maildir(user), "new"), 0, "{user}/new");
            let tmp = self.maildir(user).join("tmp");
            if tmp.is_dir() {
                assert_eq!(count(&self.maildir(user), "tmp"), 0, "{user}/tmp");
            }
        }
    }
}

/// Runs `command` with `input` on stdin; fails the test with what it wrote
/// when it has not exited within 10 s.
fn run(mut command: Command, input: &[u8]) -> Outcome {
    command.env_remove("SMTPBOX_CONFIG").env("RUST_LOG", "info");
    run_sendmail(&mut command, input, Duration::from_secs(10))
}

fn assert_code(outcome: &Outcome, code: i32) {
    assert_eq!(outcome.code, code, "stderr: {}", outcome.stderr);
}

/// The message after the trace headers.
fn content(message: &str) -> &str {
    std::str::from_utf8(body(message.as_bytes())).unwrap()
}

#[test]
fn t_flag_delivers_to_to_cc_and_bcc_and_drops_bcc() {
    let b = Box::new("");
    let input = b"From: cron@mx.test\nTo: alice@example.com\nCc: Bob <bob@example.com>,\n alice\n\
                  Bcc: carol\nSubject: hi\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\
                  Message-ID: <m1@mx.test>\n\nbody\n";
    let out = b.sendmail(&["-t"], input);
    assert_code(&out, 0);
    let expected = "From: cron@mx.test\r\nTo: alice@example.com\r\n\
                    Cc: Bob <bob@example.com>,\r\n alice\r\nSubject: hi\r\n\
                    Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <m1@mx.test>\r\n\
                    \r\nbody\r\n";
    for user in ["alice", "bob", "carol"] {
        assert_eq!(content(&b.only_message(user)), expected, "{user}");
    }
    let log = out.stderr;
    assert!(
        log.contains("to=<alice@example.com>,<bob@example.com>,<alice>,<carol> size=")
            && log.contains(" proto=sendmail"),
        "{log}"
    );
}

#[test]
fn f_sets_return_path_and_trace() {
    let b = Box::new("");
    let conf = b.conf.to_str().unwrap();
    let out = b.smtpbox_sendmail(&["-C", conf, "-f", "cron@mx.test", "alice"], b"Hi\n");
    assert_code(&out, 0);
    let message = b.only_message("alice");
    let rest = message
        .strip_prefix(
            "Return-Path: <cron@mx.test>\r\nReceived: by mx.test (smtpbox) via sendmail id ",
        )
        .unwrap_or_else(|| panic!("{message}"));
    let (id, rest) = rest.split_once("\r\n\t(uid ").unwrap();
    assert!(
        rest.contains(&format!("\r\nMessage-ID: <{id}@mx.test>\r\n")),
        "{message}"
    );
    assert!(rest.contains("\r\nFrom: cron@mx.test\r\n"), "{message}");
    // The first line is not a header field: an empty line separates it.
    assert!(message.ends_with("@mx.test>\r\n\r\nHi\r\n"), "{message}");
    // -fSENDER glued, and the null sender.
    assert_code(&b.sendmail(&["-f<>", "bob"], b"x\n"), 0);
    assert!(b.only_message("bob").starts_with("Return-Path: <>\r\n"));
}

#[test]
fn i_keeps_a_lone_dot_line() {
    let b = Box::new("");
    assert_code(&b.sendmail(&["-i", "alice"], b"Subject: x\n\na\n.\nb\n"), 0);
    assert_code(
        &b.sendmail(&["-oi", "bob"], b"Subject: x\n\na\r\n.\r\nb"),
        0,
    );
    for user in ["alice", "bob"] {
        let message = b.only_message(user);
        assert!(message.ends_with("\r\n\r\na\r\n.\r\nb\r\n"), "{message}");
    }
}

#[test]
fn lone_dot_ends_input_without_i() {
    let b = Box::new("");
    assert_code(
        &b.sendmail(&["alice"], b"Subject: x\n\na\n..\n.\nnot this\n"),
        0,
    );
    let message = b.only_message("alice");
    assert!(message.ends_with("\r\n\r\na\r\n..\r\n"), "{message}");
    assert_code(
        &b.sendmail(&["bob"], b"Subject: y\r\n\r\nc\r\n.\r\nnot this\r\n"),
        0,
    );
    assert!(b.only_message("bob").ends_with("\r\n\r\nc\r\n"));
}

#[test]
fn the_direct_path_keeps_folders_and_budgets() {
    let b = Box::new("detail_folders = yes\nmax_message_size = 2000\nmaildir_keep = 8000");
    let out = b.sendmail(&["alice+disk"], b"Subject: d\n\ndisk\n");
    assert_code(&out, 0);
    assert_eq!(count(&b.maildir("alice").join(".disk"), "new"), 1);
    assert!(b.maildir("alice/.disk/maildirfolder").is_file());
    for i in 0..10 {
        let body = format!("Subject: b\n\nnumber {i}\n{}\n", "x".repeat(1000));
        assert_code(&b.sendmail(&["bob"], body.as_bytes()), 0);
    }
    let kept = messages(&b.maildir("bob"));
    let bytes: u64 = kept.iter().map(|m| m.len() as u64).sum();
    assert!(bytes <= 8000, "{bytes} bytes kept");
    assert!(
        (3..10).contains(&kept.len()),
        "{} messages kept",
        kept.len()
    );
    let newest = kept
        .iter()
        .any(|m| String::from_utf8_lossy(m).contains("number 9\r\n"));
    assert!(newest, "the newest message was pruned");
    assert!(b.maildir("bob/maildirsize").is_file());
}

#[test]
fn unknown_user_exits_67_and_delivers_nothing() {
    let b = Box::new("");
    let out = b.sendmail(&["alice,", "nobody@example.com"], b"Subject: x\n\nhi\n");
    assert_code(&out, 67);
    assert!(out.stderr.contains("nobody@example.com"), "{}", out.stderr);
    let out = b.sendmail(&["-t"], b"To: alice, dave\nSubject: x\n\nhi\n");
    assert_code(&out, 67);
    assert!(out.stderr.contains("<dave>"), "{}", out.stderr);
    b.assert_nothing_delivered();
}

#[test]
fn non_local_recipient_exits_67() {
    let b = Box::new("");
    let out = b.sendmail(&["alice", "someone@elsewhere.org"], b"hi\n");
    assert_code(&out, 67);
    assert!(
        out.stderr.contains("someone@elsewhere.org"),
        "{}",
        out.stderr
    );
    b.assert_nothing_delivered();
}

#[test]
fn missing_headers_are_added() {
    let b = Box::new("");
    assert_code(
        &b.sendmail(&["-F", "Cron Daemon", "alice"], b"Subject: s\n\nbody\n"),
        0,
    );
    let message = b.only_message("alice");
    let lines: Vec<&str> = content(&message).split("\r\n").collect();
    assert_eq!(lines[0], "Subject: s");
    let from = lines[1].strip_prefix("From: Cron Daemon <").unwrap();
    assert!(from.ends_with("@mx.test>"), "{from}");
    let date = lines[2].strip_prefix("Date: ").unwrap();
    assert!(date.ends_with(" +0000") && date.len() >= 30, "{date}");
    let id = lines[3].strip_prefix("Message-ID: <").unwrap();
    assert!(id.ends_with("@mx.test>"), "{id}");
    assert_eq!(&lines[4..], ["", "body", ""]);
}

#[test]
fn existing_headers_are_kept_as_they_are() {
    let b = Box::new("");
    let input = "FROM: Me <me@x.org>\r\ndate: Tue, 2 Jan 2024 03:04:05 -0500\r\n\
                 Message-Id: <abc@x.org>\r\n\r\nbody\r\n";
    assert_code(
        &b.sendmail(&["-F", "Ignored", "alice"], input.as_bytes()),
        0,
    );
    assert_eq!(content(&b.only_message("alice")), input);
}

#[test]
fn temporary_failure_exits_75_and_leaves_nothing() {
    let b = Box::new("mailbox = dave {dir}/dave");
    // dave's Maildir cannot take a message: new/ is a regular file (chmod
    // would not stop root).
    let dave = b.dir.path().join("dave");
    for sub in ["tmp", "cur"] {
        fs::create_dir_all(dave.join(sub)).unwrap();
    }
    fs::write(dave.join("new"), b"not a directory").unwrap();
    for args in [&["alice", "dave"][..], &["dave", "alice"], &["-t"]] {
        let out = b.sendmail(args, b"To: bob, dave\nSubject: x\n\nhi\n");
        assert_code(&out, 75);
        assert!(out.stderr.contains("dave"), "{}", out.stderr);
        b.assert_nothing_delivered();
        assert_eq!(count(&dave, "tmp"), 0);
    }
}

#[test]
fn oversized_message_exits_65() {
    let b = Box::new("max_message_size = 100");
    let out = b.sendmail(&["alice"], &b"x".repeat(300));
    assert_code(&out, 65);
    let mut long_header = b"Subject: ".to_vec();
    long_header.extend_from_slice(&b"y".repeat(300));
    assert_code(&b.sendmail(&["alice"], &long_header), 65);
    b.assert_nothing_delivered();
}

#[test]
fn config_from_environment_then_errors() {
    let b = Box::new("");
    let mut command = smtpbox_as(&b.dir.path().join("sendmail"));
    command
        .arg("alice")
        .env("SMTPBOX_CONFIG", &b.conf)
        .env_remove("RUST_LOG");
    let output = run_bounded(&mut command, b"hi\n", Duration::from_secs(10));
    let stderr = output.stderr_text();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // sendmail mode logs at warn by default: cron mails stderr back.
    assert!(stderr.is_empty(), "{stderr}");
    assert!(output.stdout.is_empty(), "{}", output.stdout_text());
    assert_eq!(messages(&b.maildir("alice")).len(), 1);
    let missing = b.dir.path().join("missing.conf");
    let out = b.smtpbox_sendmail(&["-C", missing.to_str().unwrap(), "alice"], b"hi\n");
    assert_code(&out, 78);
    assert!(out.stderr.contains("missing.conf"), "{}", out.stderr);
}

#[test]
fn legacy_flags_are_accepted_and_bad_usage_is_64() {
    let b = Box::new("");
    let args = ["-oem", "-B8BITMIME", "-odi", "-bm", "-oi", "-v", "alice"];
    assert_code(&b.sendmail(&args, b"Subject: x\n\nhi\n"), 0);
    assert_eq!(count(&b.maildir("alice"), "new"), 1);
    assert_code(&b.sendmail(&[], b"hi\n"), 64);
    assert_code(&b.sendmail(&["-bd"], b""), 64);
    // SPEC §8: -q runs a queue there is not, -bp lists it: both exit 0
    // and deliver nothing (tests/admin.rs has the rest).
    assert_code(&b.sendmail(&["-q", "alice"], b"hi\n"), 0);
    assert_code(&b.sendmail(&["-bp"], b""), 0);
    assert_eq!(count(&b.maildir("alice"), "new"), 1);
}

#[test]
fn bs_runs_one_smtp_session_on_stdio() {
    let b = Box::new("");
    let input = b"EHLO client\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<alice@example.com>\r\n\
                  DATA\r\nSubject: s\r\n\r\nhi\r\n.\r\nQUIT\r\n";
    let out = b.sendmail(&["-bs"], input);
    assert_code(&out, 0);
    assert!(
        out.stdout.starts_with("220 mx.test ESMTP smtpbox\r\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("250 2.0.0 Ok: queued as "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("\r\n221 2.0.0 "), "{}", out.stdout);
    assert!(b
        .only_message("alice")
        .starts_with("Return-Path: <a@b.org>\r\n"));
}

#[test]
fn bare_lf_input_is_stored_as_crlf() {
    let b = Box::new("");
    assert_code(
        &b.sendmail(&["alice"], b"Subject: x\n\nline1\nline2\r\nline3"),
        0,
    );
    let message = b.only_message("alice");
    let bare = message
        .as_bytes()
        .windows(2)
        .any(|w| w[1] == b'\n' && w[0] != b'\r');
    assert!(!bare && message.starts_with("Return-Path:"), "{message:?}");
    assert!(
        message.ends_with("\r\n\r\nline1\r\nline2\r\nline3\r\n"),
        "{message:?}"
    );
}

/// cron and smartd run sendmail as root: with `user` set, the message is
/// written as that user, so the server and the mail reader own the files.
#[test]
fn sendmail_as_root_delivers_as_the_config_user() {
    if !root_or_skip("sendmail drops to the config's user only as root") {
        return;
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let nobody =
        smtpbox::privilege::find_account(&passwd, "nobody").expect("nobody in /etc/passwd");
    let b = Box::new("user = nobody");
    let alice = b.maildir("alice");
    for sub in ["", "tmp", "new", "cur"] {
        fs::create_dir_all(alice.join(sub)).unwrap();
        std::os::unix::fs::chown(alice.join(sub), Some(nobody.uid), Some(nobody.gid)).unwrap();
    }
    let out = b.sendmail(&["alice@example.com"], b"Subject: disk\n\nfailing\n");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let entry = fs::read_dir(alice.join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    use std::os::unix::fs::MetadataExt;
    let meta = entry.metadata().unwrap();
    assert_eq!((meta.uid(), meta.gid()), (nobody.uid, nobody.gid));
    // The trace still names who invoked sendmail.
    assert!(
        b.only_message("alice").contains("(uid 0 user root)"),
        "{}",
        b.only_message("alice")
    );
}
