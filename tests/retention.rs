//! Mail that fits the flash (SPEC §7): folders by `+detail`, a byte budget
//! that keeps the newest messages, removal by age at start-up and when
//! due (not per connection, under inetd), all through the real binary.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Names in `dir`, sorted; none when it is missing.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn plus_detail_lands_in_its_folder_and_hostile_details_in_the_inbox() {
    let server = Server::start("detail_folders = yes\nalias = ops root");
    let maildir = server.maildir();
    let mut c = server.connect();
    c.hello();
    let reply = c.deliver("a@b.org", &["root+disk@example.com"], "Subject: d\r\n\r\nd");
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let folder = maildir.join(".disk");
    assert_eq!(names(&folder.join("new")).len(), 1);
    assert!(folder.join("maildirfolder").is_file());
    for sub in ["tmp", "cur"] {
        assert!(folder.join(sub).is_dir(), "{sub}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&folder).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(count(&maildir, "new"), 0, "nothing in the inbox");

    // Through an alias, the detail still names the folder.
    let reply = c.deliver("a@b.org", &["OPS+Disk@example.com"], "Subject: d\r\n\r\nd");
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    assert_eq!(names(&folder.join("new")).len(), 2);

    // Details that are no safe folder name: the inbox, nothing elsewhere.
    // (One of 500 bytes never gets this far: a local part is at most 64
    // octets, RFC 5321 4.5.3.1.1; routing's own bound is unit-tested.)
    let long = format!("root+{}@example.com", "a".repeat(495));
    c.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
    c.expect(&format!("RCPT TO:<{long}>"), "501 5.1.3");
    c.expect("RSET", "250 2.0.0");
    let hostile = [
        "\"root+..\"@example.com",
        "\"root+.\"@example.com",
        "root+a/b@example.com",
        "root+%2e%2e@example.com",
        "root+a.b@example.com",
        "root+@example.com",
    ];
    for rcpt in hostile {
        let reply = c.deliver("a@b.org", &[rcpt], "Subject: h\r\n\r\nh");
        assert!(reply.starts_with("250 2.0.0"), "{rcpt}: {reply}");
    }
    assert_eq!(count(&maildir, "new"), hostile.len());
    let mut entries = names(&maildir);
    entries.retain(|n| n.starts_with('.'));
    assert_eq!(entries, vec![".disk"], "no other folder was made");
    assert_eq!(names(server.dir.path()), vec!["Maildir", "smtpbox.conf"]);

    // One message for the inbox and a folder: a copy in each.
    let reply = c.deliver(
        "a@b.org",
        &["root@example.com", "root+net@example.com"],
        "Subject: both\r\n\r\nb",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    assert_eq!(names(&maildir.join(".net/new")).len(), 1);
    assert_eq!(count(&maildir, "new"), hostile.len() + 1);
}

#[test]
fn without_detail_folders_the_detail_is_only_dropped() {
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    let reply = c.deliver("a@b.org", &["root+disk@example.com"], "Subject: d\r\n\r\nd");
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    assert_eq!(count(&server.maildir(), "new"), 1);
    assert!(!server.maildir().join(".disk").exists());
}

#[test]
fn a_byte_budget_keeps_the_newest_and_logs_each_pruning_run() {
    let server = Server::start("max_message_size = 2000\nmaildir_keep = 20000");
    let maildir = server.maildir();
    let mut c = server.connect();
    c.hello();
    let mut body = String::from("Subject: alert\r\n\r\n");
    body.push_str(&"x".repeat(900));
    let mut ids = Vec::new();
    for _ in 0..60 {
        let reply = c.deliver("cron@b.org", &["root@example.com"], &body);
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
        ids.push(reply.trim_end().rsplit(' ').next().unwrap().to_string());
    }
    let kept = names(&maildir.join("new"));
    let bytes: u64 = kept
        .iter()
        .map(|n| fs::metadata(maildir.join("new").join(n)).unwrap().len())
        .sum();
    assert!(bytes <= 20000, "{bytes} bytes kept");
    assert!(kept.len() >= 15, "{} kept", kept.len());
    // The newest ones, the last one always.
    for id in ids.iter().rev().take(kept.len()) {
        assert!(
            kept.iter().any(|n| n.starts_with(id.as_str())),
            "{id} missing"
        );
    }
    // maildirsize agrees with the directory.
    let text = fs::read_to_string(maildir.join("maildirsize")).unwrap();
    let (mut b, mut n) = (0i64, 0i64);
    for line in text.lines().skip(1) {
        let (x, y) = line.split_once(' ').unwrap();
        b += x.parse::<i64>().unwrap();
        n += y.parse::<i64>().unwrap();
    }
    assert_eq!((b as u64, n as usize), (bytes, kept.len()), "{text}");
    assert!(server.wait_log("pruned "), "{}", server.log());
    let line = server
        .log()
        .lines()
        .find(|l| l.contains("pruned "))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&maildir.display().to_string())
            && line.contains("message(s)")
            && line.contains("bytes removed")
            && line.contains("oldest kept"),
        "{line}"
    );
}

#[test]
fn old_mail_goes_at_start_up_and_the_next_check_waits_until_it_is_due() {
    let dir = TempDir::new("age");
    let maildir = dir.path().join("Maildir");
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let day = 86_400;
    // One clock reading: the expiry is compared with the young one's
    // name, and a slow run (qemu) may cross a second in between.
    let start = now();
    let old = format!("{}.M1P1Q1.old,S=10", start - 40 * day);
    let young = format!("{}.M1P1Q2.young,S=10:2,S", start - 20 * day);
    fs::write(maildir.join("new").join(&old), b"x").unwrap();
    fs::write(maildir.join("cur").join(&young), b"x").unwrap();
    let conf = dir.path().join("smtpbox.conf");
    fs::write(
        &conf,
        format!(
            "hostname = mx.test\ndomain = example.com\nmaildir = {}\nmaildir_keep_days = 30\n",
            maildir.display()
        ),
    )
    .unwrap();

    // inetd: one process per connection. The first removes what is old
    // and notes when the next check is due (the young one's birthday).
    let session = "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<root@example.com>\r\nDATA\r\n\
                   Subject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n";
    let run = |what: &str| {
        let mut command = smtpbox();
        command.args(["--inetd", "-c"]).arg(&conf);
        let run = run_bounded(&mut command, session.as_bytes(), Duration::from_secs(10));
        assert!(
            run.stdout_text().contains("250 2.0.0 Ok"),
            "{what}: {}",
            run.stdout_text()
        );
        run.stderr_text()
    };
    let log = run("first");
    assert!(!maildir.join("new").join(&old).exists(), "{log}");
    assert!(maildir.join("cur").join(&young).exists());
    assert!(
        log.contains("pruned ") && log.contains("1 message(s)"),
        "{log}"
    );
    let due: u64 = fs::read_to_string(maildir.join("smtpbox-expiry"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(due, start - 20 * day + 30 * day, "the young one's birthday");

    // The next connection does not scan: an old message planted now
    // waits for the check that is due.
    fs::write(maildir.join("new").join(&old), b"x").unwrap();
    let log = run("second");
    assert!(maildir.join("new").join(&old).exists(), "{log}");
    assert!(!log.contains("pruned "), "{log}");

    // A standalone start-up runs the check when it is due.
    fs::write(maildir.join("smtpbox-expiry"), "0\n").unwrap();
    let mut command = smtpbox();
    command
        .arg("-c")
        .arg(&conf)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info");
    let server = Server::spawn(&mut command, dir);
    assert!(server.wait_log("pruned "), "{}", server.log());
    assert!(!maildir.join("new").join(&old).exists());
    assert!(maildir.join("cur").join(&young).exists());
}
