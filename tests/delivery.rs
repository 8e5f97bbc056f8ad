//! Delivery over real sockets (SPEC §6, §7) and the command line (§2, §3):
//! exact bytes on disk, Maildir names and modes, routing to several
//! Maildirs, limits (size, quota, Received loop), failures that leave no
//! trace in new/, BDAT, and the binary's start-up behaviour.

mod common;
use common::*;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A whole transaction with raw content bytes; returns the final reply.
fn deliver_raw(c: &mut Client, from: &str, to: &[&str], content: &[u8]) -> String {
    c.expect(&format!("MAIL FROM:<{from}>"), "250 2.1.0");
    for rcpt in to {
        c.expect(&format!("RCPT TO:<{rcpt}>"), "250 2.1.5");
    }
    data(c, content)
}

/// [`deliver_raw`] from a@b.org to root@example.com.
fn to_root(c: &mut Client, content: &[u8]) -> String {
    deliver_raw(c, "a@b.org", &["root@example.com"], content)
}

/// DATA with the transaction already open: the reply to DATA when it is not
/// 354, else the reply to the end of data.
fn data(c: &mut Client, content: &[u8]) -> String {
    let reply = c.cmd("DATA");
    if !reply.starts_with("354") {
        return reply;
    }
    let mut payload = content.to_vec();
    payload.extend_from_slice(b"\r\n.\r\n");
    c.send(&payload);
    c.reply()
}

fn assert_reply(reply: &str, prefix: &str) {
    assert!(
        reply.starts_with(prefix),
        "expected {prefix:?}, got {reply:?}"
    );
}

/// Names of the files in `maildir/new`, sorted.
fn new_names(maildir: &Path) -> Vec<String> {
    let dir = fs::read_dir(maildir.join("new")).expect("new/");
    let mut names: Vec<String> = dir
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `Sat, 28 Nov 2026 20:14:17 +0000`, checked field by field.
fn is_rfc5322_date(s: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let digits = |t: &str, min: usize, max: usize| {
        (min..=max).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit())
    };
    let f: Vec<&str> = s.split(' ').collect();
    let time: Vec<&str> = f.get(4).map_or(vec![], |t| t.split(':').collect());
    f.len() == 6
        && DAYS.contains(&f[0])
        && digits(f[1], 1, 2)
        && (1..=31).contains(&f[1].parse::<u32>().unwrap_or(0))
        && MONTHS.contains(&f[2])
        && digits(f[3], 4, 4)
        && time.len() == 3
        && time.iter().all(|t| digits(t, 2, 2))
        && time[0] < "24"
        && time[1] < "60"
        && time[2] < "61"
        && f[5] == "+0000"
}

/// Runs the binary to its exit, failing after 10 s: (exit code, stdout,
/// stderr). Without `-c` in `args`, the host's config is hidden from it.
fn run_bin(args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = if args.contains(&"-c") {
        smtpbox()
    } else {
        smtpbox_without_config()
    };
    let out = run_bounded(command.args(args), b"", Duration::from_secs(10));
    (out.status.code(), out.stdout_text(), out.stderr_text())
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// The server's resident set size in KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn stored_message_is_trace_headers_plus_exact_content() {
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    let content = b"Subject: exact\r\nFrom: a@b.org\r\n\r\nHello.";
    let reply = to_root(&mut c, content);
    let id = reply
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .and_then(|r| r.strip_suffix("\r\n"))
        .unwrap_or_else(|| panic!("reply {reply:?}"));
    assert!(!id.is_empty() && !id.contains(' '), "id {id:?}");

    let maildir = server.maildir();
    let names = new_names(&maildir);
    assert_eq!(names.len(), 1, "new/: {names:?}");
    assert_eq!(count(&maildir, "tmp"), 0, "tmp/");
    let stored = fs::read(maildir.join("new").join(&names[0])).unwrap();

    // Return-Path, Received with id and for, date, then the content as sent.
    let head = format!(
        "Return-Path: <a@b.org>\r\nReceived: from client.test ([127.0.0.1]) by mx.test \
         (smtpbox) with ESMTP id {id} for <root@example.com>; "
    );
    let rest = stored
        .strip_prefix(head.as_bytes())
        .unwrap_or_else(|| panic!("stored {:?}", String::from_utf8_lossy(&stored)));
    let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
    let date = std::str::from_utf8(&rest[..eol]).unwrap();
    assert!(is_rfc5322_date(date), "date {date:?}");
    assert_eq!(
        &rest[eol + 2..],
        &b"Subject: exact\r\nFrom: a@b.org\r\n\r\nHello.\r\n"[..]
    );

    // SECONDS.MMICROSPPIDQCOUNTER.HOST,S=SIZE
    let (base, size) = names[0].split_once(",S=").expect(",S= in name");
    assert_eq!(
        size.parse::<u64>().ok(),
        Some(stored.len() as u64),
        "{}",
        names[0]
    );
    let mut parts = base.splitn(3, '.');
    let (secs, unique, host) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let secs: u64 = secs.unwrap().parse().expect("SECONDS");
    assert!(
        secs <= now.as_secs() && now.as_secs() - secs < 120,
        "{secs}"
    );
    // MMICROSPPIDQCOUNTER
    let fields: Vec<&str> = unique.unwrap_or("").split(['M', 'P', 'Q']).collect();
    assert_eq!(fields.len(), 4, "{unique:?}");
    assert!(fields[0].is_empty(), "{unique:?}");
    assert!(
        fields[1].parse::<u32>().is_ok_and(|m| m < 1_000_000),
        "{unique:?}"
    );
    assert_eq!(fields[2].parse::<u32>().ok(), Some(server.pid()));
    assert!(fields[3].parse::<u64>().is_ok(), "{unique:?}");
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let expected_host = hostname.trim().replace('/', "\\057").replace(':', "\\072");
    assert_eq!(host, expected_host);

    for sub in ["tmp", "new", "cur"] {
        let meta = fs::metadata(maildir.join(sub)).expect(sub);
        assert!(meta.is_dir(), "{sub}");
        assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{sub} mode");
    }
}

#[test]
fn helo_session_is_received_with_smtp() {
    let server = Server::start("");
    let mut c = server.connect();
    assert_reply(&c.reply(), "220 mx.test ESMTP smtpbox");
    c.expect("HELO client.test", "250");
    let reply = to_root(&mut c, b"Subject: x\r\n\r\nx");
    assert_reply(&reply, "250 2.0.0 Ok: queued as ");
    let stored = messages(&server.maildir());
    assert_eq!(stored.len(), 1);
    let head = String::from_utf8_lossy(&stored[0][..stored[0].len() - body(&stored[0]).len()]);
    assert!(
        head.contains("by mx.test (smtpbox) with SMTP id "),
        "{head}"
    );
}

#[test]
fn eight_bit_nul_and_long_line_are_stored_unchanged() {
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    let mut content = b"Subject: bytes\r\n\r\n\x80\xff\xfe caf\xc3\xa9 \x00 nul\x00\r\n".to_vec();
    content.extend((0..200_000u32).map(|i| b'a' + (i % 26) as u8));
    content.extend_from_slice(b"\r\nend");
    let reply = to_root(&mut c, &content);
    assert_reply(&reply, "250 2.0.0");
    let stored = messages(&server.maildir());
    content.extend_from_slice(b"\r\n");
    assert_eq!(body(&stored[0]), &content[..]);
}

#[test]
fn bare_lf_in_content_is_stored_as_crlf() {
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    let content = b"Subject: lf\r\n\r\none\ntwo\r\nthree\n\nfour";
    let reply = to_root(&mut c, content);
    assert_reply(&reply, "250 2.0.0");
    let stored = messages(&server.maildir());
    assert_eq!(
        body(&stored[0]),
        &b"Subject: lf\r\n\r\none\r\ntwo\r\nthree\r\n\r\nfour\r\n"[..]
    );
}

#[test]
fn lf_only_session_ends_data_with_lf_dot_lf() {
    let server = Server::start("");
    let mut c = server.connect();
    assert_reply(&c.reply(), "220 ");
    let mut lf = |line: &str, expect: &str| {
        c.send(format!("{line}\n").as_bytes());
        assert_reply(&c.reply(), expect);
    };
    lf("EHLO client.test", "250");
    lf("MAIL FROM:<a@b.org>", "250 2.1.0");
    lf("RCPT TO:<root@example.com>", "250 2.1.5");
    lf("DATA", "354");
    lf("hello\n.", "250 2.0.0 Ok: queued as ");
    lf("QUIT", "221 2.0.0");
    let stored = messages(&server.maildir());
    assert_eq!(stored.len(), 1);
    assert_eq!(body(&stored[0]), b"hello\r\n");
}

#[test]
fn three_recipients_in_two_maildirs_one_copy_each_without_for() {
    let server = Server::start("mailbox = alice {dir}/alice");
    let alice = server.dir.path().join("alice");
    let mut c = server.connect();
    c.hello();
    let to = ["alice@example.com", "bob@example.com", "carol@example.com"];
    let reply = deliver_raw(&mut c, "a@b.org", &to, b"Subject: three\r\n\r\nhi");
    assert_reply(&reply, "250 2.0.0");
    assert_eq!(count(&alice, "new"), 1, "alice");
    assert_eq!(
        count(&server.maildir(), "new"),
        1,
        "bob and carol share one copy"
    );
    for maildir in [&alice, &server.maildir()] {
        let stored = &messages(maildir)[0];
        let head = &stored[..stored.len() - body(stored).len()];
        assert!(
            !contains(head, b"for <"),
            "{}",
            String::from_utf8_lossy(head)
        );
        assert_eq!(body(stored), b"Subject: three\r\n\r\nhi\r\n");
        assert_eq!(count(maildir, "tmp"), 0);
    }
}

#[test]
fn alias_and_plus_detail_route_to_the_mailbox() {
    let server = Server::start("mailbox = alice {dir}/alice\nalias = root alice");
    let alice = server.dir.path().join("alice");
    let mut c = server.connect();
    c.hello();
    let reply = to_root(&mut c, b"Subject: 1\r\n\r\n1");
    assert_reply(&reply, "250 2.0.0");
    assert_eq!(count(&alice, "new"), 1, "root@ is alice's");
    let to = ["alice+disk@example.com"];
    assert_reply(
        &deliver_raw(&mut c, "a@b.org", &to, b"Subject: 2\r\n\r\n2"),
        "250 2.0.0",
    );
    assert_eq!(count(&alice, "new"), 2, "alice+disk@ is alice's");
    assert_eq!(
        count(&server.maildir(), "new"),
        0,
        "nothing in the default maildir"
    );
}

#[test]
fn alias_cycle_is_a_config_error_naming_file_and_line() {
    let dir = TempDir::new("cycle");
    let conf = dir.path().join("cycle.conf");
    let text = format!(
        "listen = 127.0.0.1:0\nmaildir = {}/Maildir\nalias = a b\nalias = b a\n",
        dir.path().display()
    );
    fs::write(&conf, text).unwrap();
    let (code, _, err) = run_bin(&["-c", path_str(&conf)]);
    assert_eq!(code, Some(1), "stderr: {err}");
    let at = |line: u32| format!("{}:{line}", conf.display());
    assert!(
        err.contains(&at(3)) || err.contains(&at(4)),
        "stderr: {err}"
    );
}

#[test]
fn message_over_size_limit_552_and_session_continues() {
    let server = Server::start("max_message_size = 1000");
    let mut c = server.connect();
    c.hello();
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    big.resize(2000, b'x');
    let reply = to_root(&mut c, &big);
    assert_reply(&reply, "552 5.3.4");
    assert_eq!(count(&server.maildir(), "new"), 0);
    assert_eq!(count(&server.maildir(), "tmp"), 0);
    let reply = to_root(&mut c, b"Subject: s\r\n\r\ns");
    assert_reply(&reply, "250 2.0.0");
    assert_eq!(count(&server.maildir(), "new"), 1);
}

#[test]
fn ten_mib_single_line_is_streamed_without_growing_memory() {
    let server = Server::start("max_message_size = 20971520");
    let mut c = server.connect();
    c.hello();
    c.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
    c.expect("RCPT TO:<root@example.com>", "250 2.1.5");
    c.expect("DATA", "354");
    const SIZE: usize = 10 * 1024 * 1024;
    let content: Vec<u8> = (0..SIZE).map(|i| b'A' + (i % 58) as u8).collect();
    assert!(!content.contains(&b'\r') && !content.contains(&b'\n'));
    let before = vm_rss_kib(server.pid());
    let mut peak = before;
    for (n, chunk) in content.chunks(64 * 1024).enumerate() {
        c.send(chunk);
        if n % 16 == 15 {
            peak = peak.max(vm_rss_kib(server.pid()));
        }
    }
    c.send(b"\r\n.\r\n");
    assert_reply(&c.reply(), "250 2.0.0");
    peak = peak.max(vm_rss_kib(server.pid()));
    assert!(
        peak <= before + 4096,
        "VmRSS grew from {before} KiB to {peak} KiB"
    );
    let stored = messages(&server.maildir());
    assert_eq!(stored.len(), 1);
    let body = body(&stored[0]);
    assert_eq!(body.len(), SIZE + 2);
    assert_eq!(&body[..SIZE], &content[..], "content stored byte-exact");
    assert_eq!(&body[SIZE..], b"\r\n");
}

#[test]
fn quota_452_at_end_of_data_then_at_rcpt_when_full() {
    // Name the maildir: the harness takes any line starting with `maildir`
    // (here `maildir_quota`) for one.
    let server = Server::start("maildir = {dir}/Maildir\nmaildir_quota = 1000");
    let maildir = server.maildir();
    let mut c = server.connect();
    c.hello();
    let mut content = b"Subject: q\r\n\r\n".to_vec();
    content.resize(400, b'q');
    assert_reply(&to_root(&mut c, &content), "250 2.0.0");
    assert_reply(&to_root(&mut c, &content), "452 4.2.2");
    assert_eq!(count(&maildir, "new"), 1, "the second message went nowhere");
    assert_eq!(count(&maildir, "tmp"), 0);

    // Usage is kept in Maildir++'s maildirsize: the header (the quota),
    // then one line per delivery.
    let used: u64 = messages(&maildir).iter().map(|m| m.len() as u64).sum();
    assert!(used < 1000, "first message alone is {used} bytes");
    let maildirsize = maildir.join("maildirsize");
    assert_eq!(
        fs::read_to_string(&maildirsize).unwrap(),
        format!("1000S\n0 0\n{used} 1\n")
    );
    // A message another Maildir++ writer stored (and counted) fills the
    // Maildir exactly: RCPT is refused.
    let filler = 1000 - used;
    let name = format!("1.M1P1Q1.filler,S={filler}:2,S");
    fs::write(maildir.join("cur").join(&name), vec![b'f'; filler as usize]).unwrap();
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(&maildirsize)
        .unwrap();
    writeln!(file, "{filler} 1").unwrap();
    c.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
    c.expect("RCPT TO:<root@example.com>", "452 4.2.2");
    assert_eq!(count(&maildir, "new"), 1);
    c.expect("RSET", "250 2.0.0");

    // A reader that removed it without counting: the file is trusted
    // until it is 15 minutes old; then, near the quota, recalculated.
    fs::remove_file(maildir.join("cur").join(&name)).unwrap();
    c.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
    c.expect("RCPT TO:<root@example.com>", "452 4.2.2");
    c.expect("RSET", "250 2.0.0");
    let old = SystemTime::now() - Duration::from_secs(16 * 60);
    file.set_modified(old).unwrap();
    c.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
    c.expect("RCPT TO:<root@example.com>", "250 2.1.5");
    assert_eq!(
        fs::read_to_string(&maildirsize).unwrap(),
        format!("1000S\n{used} 1\n")
    );
}

#[test]
fn unwritable_maildir_451_and_other_mail_still_delivered() {
    let server = Server::start("mailbox = bob {dir}/bob");
    let bob = server.dir.path().join("bob");
    fs::create_dir_all(&bob).unwrap();
    fs::write(bob.join("tmp"), b"not a directory").unwrap();
    let mut c = server.connect();
    c.hello();
    let content = b"Subject: b\r\n\r\nb";

    c.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
    c.expect("RCPT TO:<bob@example.com>", "250 2.1.5");
    assert_reply(&data(&mut c, content), "451 4.3.0");
    c.expect("RSET", "250 2.0.0");

    c.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
    c.expect("RCPT TO:<alice@example.com>", "250 2.1.5");
    c.expect("RCPT TO:<bob@example.com>", "250 2.1.5");
    assert_reply(&data(&mut c, content), "451 4.3.0");
    assert_eq!(count(&server.maildir(), "new"), 0, "alice's new/");
    assert_eq!(count(&bob, "new"), 0);
    c.expect("RSET", "250 2.0.0");

    let reply = deliver_raw(&mut c, "a@b.org", &["alice@example.com"], content);
    assert_reply(&reply, "250 2.0.0");
    let mut c2 = server.connect();
    c2.hello();
    let reply = deliver_raw(&mut c2, "a@b.org", &["alice@example.com"], content);
    assert_reply(&reply, "250 2.0.0");
    assert_eq!(count(&server.maildir(), "new"), 2);
    assert_eq!(count(&server.maildir(), "tmp"), 0);
}

#[test]
fn more_than_100_received_headers_is_a_loop() {
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    let with = |n: usize| {
        let mut m = "Received: from a by b; Sat, 1 Jan 2000 00:00:00 +0000\r\n".repeat(n);
        m.push_str("Subject: loop\r\n\r\nbody");
        m.into_bytes()
    };
    assert_reply(&to_root(&mut c, &with(101)), "554 5.4.6");
    assert_eq!(count(&server.maildir(), "new"), 0);
    assert_eq!(count(&server.maildir(), "tmp"), 0);
    assert_reply(&to_root(&mut c, &with(100)), "250 2.0.0");
    assert_eq!(count(&server.maildir(), "new"), 1);
}

#[test]
fn bdat_chunks_are_stored_byte_for_byte() {
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    c.expect("MAIL FROM:<a@b.org> BODY=BINARYMIME", "250 2.1.0");
    c.expect("RCPT TO:<root@example.com>", "250 2.1.5");
    let chunks: [&[u8]; 2] = [
        b"Subject: bin\r\n\r\n\x00\xff\x80bare\nlf\r\n.\r\n",
        b"..dots\rbare cr\n\r\n.\r\nno final newline",
    ];
    for chunk in chunks {
        let mut cmd = format!("BDAT {}\r\n", chunk.len()).into_bytes();
        cmd.extend_from_slice(chunk);
        c.send(&cmd);
        assert_reply(&c.reply(), "250 2.0.0");
    }
    c.expect("BDAT 0 LAST", "250 2.0.0 Ok: queued as ");
    let stored = messages(&server.maildir());
    assert_eq!(stored.len(), 1);
    assert_eq!(body(&stored[0]), &[chunks[0], chunks[1]].concat()[..]);
}

#[test]
fn bdat_over_size_limit_552_at_last() {
    let server = Server::start("max_message_size = 1000");
    let mut c = server.connect();
    c.hello();
    c.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
    c.expect("RCPT TO:<root@example.com>", "250 2.1.5");
    let mut first = b"BDAT 600\r\n".to_vec();
    first.resize(first.len() + 600, b'x');
    c.send(&first);
    assert_reply(&c.reply(), "250 2.0.0");
    let mut last = b"BDAT 600 LAST\r\n".to_vec();
    last.resize(last.len() + 600, b'y');
    c.send(&last);
    assert_reply(&c.reply(), "552 5.3.4");
    assert_eq!(count(&server.maildir(), "new"), 0);
    assert_eq!(count(&server.maildir(), "tmp"), 0);
    c.expect("NOOP", "250 2.0.0");
}

#[test]
fn bdat_without_rcpt_554_and_chunk_is_consumed() {
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    c.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
    // The chunk holds a command: it must be read as data, not obeyed.
    c.send(b"BDAT 6 LAST\r\nQUIT\r\n");
    assert_reply(&c.reply(), "554 5.5.1");
    c.expect("NOOP", "250 2.0.0");
    assert_eq!(count(&server.maildir(), "new"), 0);
}

#[test]
fn no_maildir_and_no_config_exits_1_naming_maildir_option() {
    let dir = TempDir::new("empty");
    let conf = dir.path().join("empty.conf");
    fs::write(&conf, "").unwrap();
    let (code, _, err) = run_bin(&["-c", path_str(&conf), "-l", "127.0.0.1:0"]);
    assert_eq!(code, Some(1), "stderr: {err}");
    assert!(err.contains("--maildir"), "stderr: {err}");
}

#[test]
fn check_accepts_good_config_and_names_unknown_key() {
    let dir = TempDir::new("check");
    let good = dir.path().join("good.conf");
    let maildir = dir.path().join("Maildir");
    fs::write(
        &good,
        format!(
            "# ok\nlisten = 127.0.0.1:0\nmaildir = {}\n",
            maildir.display()
        ),
    )
    .unwrap();
    let (code, _, err) = run_bin(&["--check", "-c", path_str(&good)]);
    assert_eq!(code, Some(0), "stderr: {err}");

    let bad = dir.path().join("bad.conf");
    fs::write(
        &bad,
        format!("maildir = {}\n\nfrobnicate = 1\n", maildir.display()),
    )
    .unwrap();
    let (code, _, err) = run_bin(&["--check", "-c", path_str(&bad)]);
    assert_eq!(code, Some(1), "stderr: {err}");
    assert!(
        err.contains(&format!("{}:3", bad.display())),
        "stderr: {err}"
    );
}

#[test]
fn version_and_help() {
    let (code, out, _) = run_bin(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    let (code, out, _) = run_bin(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("Usage") && out.contains("--maildir") && out.contains("--listen"),
        "{out}"
    );
}

#[test]
fn listen_and_maildir_options_work_without_config_file() {
    let dir = TempDir::new("cli");
    let maildir: PathBuf = dir.path().join("Maildir");
    // Port 0, the port read back from the log: no port to race for.
    let mut command = smtpbox_without_config();
    command
        .args(["-l", "127.0.0.1:0", "-m"])
        .arg(&maildir)
        .args(["-H", "cli.test", "-d", "example.com"]);
    let server = Server::spawn(&mut command, dir);
    let mut c = server.connect();
    assert_reply(&c.reply(), "220 cli.test ESMTP smtpbox");
    c.expect("EHLO client.test", "250");
    let reply = to_root(&mut c, b"Subject: cli\r\n\r\nhi");
    assert_reply(&reply, "250 2.0.0");
    c.expect("QUIT", "221 2.0.0");
    let stored = messages(&maildir);
    assert_eq!(stored.len(), 1);
    assert_eq!(body(&stored[0]), b"Subject: cli\r\n\r\nhi\r\n");
}
