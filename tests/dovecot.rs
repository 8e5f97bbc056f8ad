//! Maildir++ interop with a real Dovecot (Debian's `dovecot-imapd`, its
//! `quota = maildir` backend): smtpbox and Dovecot keep one `maildirsize`
//! and agree on it. After smtpbox delivers, `doveadm quota get` shows the
//! same bytes and count (and so does Dovecot's own recalculation); after
//! Dovecot expunges over IMAP, smtpbox's next quota decision sees the
//! space freed.
//!
//! A private Dovecot instance (its own config, base_dir and log in the
//! test's directory, IMAP on a free loopback port), started as root (its
//! login and internal users are the package's `dovenull` and `dovecot`),
//! the mail user `nobody`, as smtpbox drops to with `user = nobody`.
//! Needs root and dovecot-imapd; under CI both are required.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const QUOTA: u64 = 6000;

/// The sums of a `maildirsize` file: (bytes, count).
fn maildirsize(maildir: &Path) -> (i64, i64) {
    let text = fs::read_to_string(maildir.join("maildirsize")).unwrap();
    text.lines().skip(1).fold((0, 0), |(b, c), line| {
        let mut f = line.split_whitespace();
        let b2: i64 = f.next().unwrap().parse().unwrap();
        let c2: i64 = f.next().unwrap().parse().unwrap();
        (b + b2, c + c2)
    })
}

/// Bytes and count of the messages on disk, from their `S=` sizes.
fn on_disk(maildir: &Path) -> (i64, i64) {
    let mut total = (0, 0);
    for sub in ["new", "cur"] {
        for entry in fs::read_dir(maildir.join(sub)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let size = name
                .split(':')
                .next()
                .unwrap()
                .split(',')
                .find_map(|f| f.strip_prefix("S="))
                .map(|s| s.parse::<i64>().unwrap())
                .unwrap_or_else(|| panic!("{name} has no S="));
            total = (total.0 + size, total.1 + 1);
        }
    }
    total
}

/// Bytes as doveadm prints storage: KiB, rounded up.
fn kib(bytes: i64) -> i64 {
    (bytes + 1023) / 1024
}

/// `doveadm quota get` for the test user: (STORAGE in KiB, MESSAGE).
fn doveadm_quota(conf: &Path) -> (i64, i64) {
    let out = output_bounded(
        Command::new("doveadm")
            .arg("-c")
            .arg(conf)
            .args(["-f", "tab", "quota", "get", "-u", "test"]),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "doveadm: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = |kind: &str| -> i64 {
        text.lines()
            .find(|l| l.split('\t').nth(1) == Some(kind))
            .and_then(|l| l.split('\t').nth(2))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {kind} in {text}"))
    };
    (value("STORAGE"), value("MESSAGE"))
}

fn doveadm(conf: &Path, args: &[&str]) {
    let out = output_bounded(
        Command::new("doveadm").arg("-c").arg(conf).args(args),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "doveadm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Logs in over IMAP and expunges the first `n` messages of INBOX.
fn imap_expunge(port: u16, n: usize) {
    let script = format!(
        "import imaplib\n\
         m = imaplib.IMAP4('127.0.0.1', {port})\n\
         m.login('test', 'pass')\n\
         typ, data = m.select('INBOX')\n\
         assert typ == 'OK', data\n\
         m.store('1:{n}', '+FLAGS', '(\\\\Deleted)')\n\
         typ, data = m.expunge()\n\
         assert typ == 'OK' and len(data) == {n}, data\n\
         m.logout()\n"
    );
    let out = output_bounded(
        Command::new("python3").args(["-c", &script]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "IMAP expunge: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dovecot_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "base_dir = {d}/dovecot-run\n\
         state_dir = {d}/dovecot-state\n\
         log_path = {d}/dovecot.log\n\
         instance_name = smtpbox-test-{port}\n\
         protocols = imap\n\
         listen = 127.0.0.1\n\
         ssl = no\n\
         disable_plaintext_auth = no\n\
         auth_mechanisms = plain\n\
         default_login_user = dovenull\n\
         default_internal_user = dovecot\n\
         first_valid_uid = 1\n\
         passdb {{\n  driver = static\n  args = password=pass\n}}\n\
         userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={d}/home\n}}\n\
         mail_location = maildir:{d}/Maildir\n\
         mail_plugins = quota\n\
         plugin {{\n  quota = maildir:User quota\n  quota_rule = *:bytes={QUOTA}\n}}\n\
         service imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n"
    )
}

#[test]
fn dovecot_and_smtpbox_agree_on_maildirsize() {
    if !root_or_skip("Dovecot runs as root; smtpbox and the mail user are nobody")
        || !have_tool("dovecot", "dovecot-imapd")
        || !have_tool("python3", "python3")
    {
        return;
    }
    let dir = TempDir::new("dovecot");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let maildir = dir.path().join("Maildir");
    // The mail user owns the Maildir (smtpbox drops to it).
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mkdir -p '{m}/tmp' '{m}/new' '{m}/cur' '{d}/dovecot-state' && chown -R nobody:nogroup '{m}'",
            m = maildir.display(),
            d = dir.path().display()
        ))
        .status()
        .unwrap();
    assert!(status.success());

    let port = free_port();
    let conf = dir.path().join("dovecot.conf");
    fs::write(&conf, dovecot_conf(dir.path(), port)).unwrap();
    let _dovecot = Guard::spawn(
        Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let up = wait_until(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(
        up,
        "dovecot did not listen: {}",
        fs::read_to_string(dir.path().join("dovecot.log")).unwrap_or_default()
    );

    let smtpbox_conf = dir.path().join("smtpbox.conf");
    fs::write(
        &smtpbox_conf,
        format!(
            "listen = 127.0.0.1:0\nhostname = mx.test\ndomain = example.com\n\
             maildir = {}\nmaildir_quota = {QUOTA}\nuser = nobody\n",
            maildir.display()
        ),
    )
    .unwrap();
    let mut command = smtpbox();
    command.arg("-c").arg(&smtpbox_conf).env("RUST_LOG", "info");
    let server = Server::spawn(&mut command, dir);
    let mut c = server.connect();
    c.hello();
    let body = format!("Subject: alert\r\n\r\n{}", "x".repeat(1000));
    let mut stored = 0;
    loop {
        let reply = c.deliver("cron@b.org", &["root@example.com"], &body);
        if reply.starts_with("452 4.2.2") {
            break;
        }
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
        stored += 1;
        assert!(stored < 10, "the quota never refused");
    }
    assert!(stored >= 4, "{stored} stored");

    // One maildirsize, three views that agree: its sums, the directory,
    // Dovecot's (in KiB, rounded up, as doveadm prints storage).
    let disk = on_disk(&maildir);
    assert_eq!(maildirsize(&maildir), disk);
    assert_eq!(disk.1, stored);
    assert_eq!(doveadm_quota(&conf), (kib(disk.0), disk.1));
    // Dovecot's own recalculation of the directory gives the same.
    doveadm(&conf, &["quota", "recalc", "-u", "test"]);
    assert_eq!(maildirsize(&maildir), disk);

    // Full: the same message is refused again.
    let reply = c.deliver("cron@b.org", &["root@example.com"], &body);
    assert!(reply.starts_with("452 4.2.2"), "{reply}");
    // Dovecot expunges two over IMAP and writes that into maildirsize
    // (a line of its own); smtpbox's next decision sees the room.
    imap_expunge(port, 2);
    let text = fs::read_to_string(maildir.join("maildirsize")).unwrap();
    assert!(text.lines().any(|l| l.starts_with('-')), "{text}");
    let after = on_disk(&maildir);
    assert_eq!(after.1, stored - 2);
    assert_eq!(maildirsize(&maildir), after);
    let reply = c.deliver("cron@b.org", &["root@example.com"], &body);
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let last = on_disk(&maildir);
    assert_eq!(maildirsize(&maildir), last);
    assert_eq!(doveadm_quota(&conf), (kib(last.0), last.1));
}
