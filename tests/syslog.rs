//! Log lines on syslog keep their priority (issue #23 item 3): with
//! `SMTPBOX_LOG=syslog` (what `etc/smtpbox.init` sets under OpenWrt's
//! procd, which would log all of stderr as `daemon.err`) every line is a
//! datagram on `/dev/log` with its own severity, facility mail, and
//! nothing is written to stderr. The `/dev/log` here is a socket of the
//! test's, put in place in a private mount namespace (root, `unshare`).

mod common;

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn smtpbox_log_syslog_sends_each_line_with_its_severity() {
    if !root_or_skip("a private /dev/log needs a mount namespace")
        || !have_tool("unshare", "util-linux")
    {
        return;
    }
    let dir = TempDir::new("syslog");
    let d = dir.path().display();
    let log = UnixDatagram::bind(dir.path().join("log.sock")).unwrap();
    log.set_read_timeout(Some(upper(Duration::from_secs(5))))
        .unwrap();
    let conf = dir.path().join("smtpbox.conf");
    fs::write(
        &conf,
        format!("hostname = mx.test\nmaildir = {d}/Maildir\nmaildir_quota = 2000\n"),
    )
    .unwrap();
    // /dev/null stays (bound over from the real one); /dev/log is ours.
    let script = format!(
        "set -e; touch {d}/null; mount --bind /dev/null {d}/null; \
         mount -t tmpfs none /dev; touch /dev/null; mount --bind {d}/null /dev/null; \
         ln -s {d}/log.sock /dev/log; exec {} --inetd -c '{}'",
        smtpbox_shell_words(),
        conf.display()
    );
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--", "sh", "-c", &script])
        .env("RUST_LOG", "info")
        .env("SMTPBOX_LOG", "syslog");
    // A message over the quota fails with a warning (452); the next one
    // is stored, an info line.
    let session = format!(
        "EHLO x\r\nMAIL FROM:<big@b.org>\r\nRCPT TO:<root>\r\nDATA\r\n{}\r\n.\r\n\
         MAIL FROM:<a@b.org>\r\nRCPT TO:<root>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
        "x".repeat(3000)
    );
    let out = run_bounded(&mut command, session.as_bytes(), Duration::from_secs(20));
    let replies = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{replies} {}", out.stderr_text());
    assert!(replies.contains("\r\n452 4.2.2 "), "{replies}");
    assert!(
        replies.contains("\r\n250 2.0.0 Ok: queued as "),
        "{replies}"
    );
    assert_eq!(count(&dir.path().join("Maildir"), "new"), 1);

    let mut lines = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = log.recv(&mut buf) {
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = line.contains("from=<a@b.org>");
        lines.push(line);
        if done {
            break;
        }
    }
    let with = |needle: &str| lines.iter().find(|l| l.contains(needle)).cloned();
    // <20>: mail.warning; <22>: mail.info (RFC 5424 §6.2.1).
    let warning = with("delivery failed").unwrap_or_default();
    assert!(warning.starts_with("<20>smtpbox["), "{lines:?}");
    let stored = with("from=<a@b.org>").unwrap_or_default();
    assert!(stored.starts_with("<22>smtpbox["), "{lines:?}");
    assert!(
        !out.stderr_text().contains("from=<a@b.org>"),
        "the lines went to stderr too: {}",
        out.stderr_text()
    );
}
