//! smtpbox's Landlock sandbox (SPEC §8), seen from outside the process in
//! standalone, `--inetd` and sendmail mode (direct delivery and `-bs`):
//! `strace -f` shows `landlock_restrict_self` returning 0 before any thread
//! starts; a users file, certificate or Maildir swapped at run time for a
//! symlink to a place outside the allowed directories is not opened
//! (EACCES), while a swap inside them, as ACME clients and `passwd`-style
//! tools do, keeps working. With Landlock missing or failing (errors
//! injected by strace) it logs one line and serves as before.
//!
//! On a kernel without Landlock these tests skip with a message, except
//! under `CI=1`, where they fail: CI runs on a kernel that has it.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// SHA-512 crypt of "secret" (`openssl passwd -6 -salt sandboxsalt secret`).
const HASH: &str =
    "$6$sandboxsalt$vY4fPtN6pakGrFvcCwXPaVh4PfZFXWgFlPLvmy1.QNIS0u5OSOB9eCb6Au0wXmQ1WEX2g93/zfcqkn7oTWKpM.";

/// The log line [`smtpbox::sandbox::enter`] writes once Landlock is on.
const IN_FORCE: &str = "sandbox: Landlock ABI";

/// True when the kernel has Landlock (ABI ≥ 2); false means skip, and
/// under CI a missing Landlock is a failure.
fn landlock() -> bool {
    let dir = TempDir::new("sandbox-probe");
    let text = format!("maildir = {}/Maildir\n", dir.path().display());
    let config = smtpbox::config::Config::parse(&text, Path::new("probe")).expect("probe config");
    // A thread of its own: Landlock restricts only the calling thread.
    let outcome = thread::spawn(move || smtpbox::sandbox::enter(&config, &[]))
        .join()
        .expect("sandbox thread");
    if let smtpbox::sandbox::Outcome::Enforced(_) = outcome {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no Landlock on this CI kernel: {outcome:?}"
    );
    eprintln!("skipping: no usable Landlock here ({outcome:?})");
    false
}

/// True when strace runs; under CI its absence is a failure.
fn strace() -> bool {
    let ok = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is missing under CI"
        );
        eprintln!("skipping: no strace");
    }
    ok
}

/// `AUTH PLAIN` with an initial response for `user`/"secret".
fn auth_plain(user: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("\0{user}\0secret").into_bytes();
    let mut out = String::new();
    for chunk in raw.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("AUTH PLAIN {out}")
}

/// A users file (alice) in a directory of its own, and a directory outside
/// every allowed one.
struct Users {
    dir: TempDir,
    outside: TempDir,
}

impl Users {
    fn new() -> Users {
        let users = Users {
            dir: TempDir::new("sandbox-auth"),
            outside: TempDir::new("sandbox-outside"),
        };
        fs::write(users.path(), format!("alice:{HASH}\n")).unwrap();
        users
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("users")
    }

    fn config_line(&self) -> String {
        format!("users = {}\n", self.path().display())
    }

    /// Replaces the users file, atomically, by a symlink to a new file
    /// naming `user`: beside it (`inside`), or in the outside directory.
    fn swap(&self, user: &str, inside: bool) {
        let dir = if inside { &self.dir } else { &self.outside };
        let target = dir.path().join(format!("users-{user}"));
        fs::write(&target, format!("{user}:{HASH}\n")).unwrap();
        swap_symlink(&target, &self.path());
    }

    /// The log line of the refused reload.
    fn refusal(&self) -> String {
        format!("{}: cannot read: Permission denied", self.path().display())
    }
}

/// Points `link` at `target` atomically (a new symlink renamed over it).
fn swap_symlink(target: &Path, link: &Path) {
    let new = link.with_extension("new-link");
    let _ = fs::remove_file(&new);
    std::os::unix::fs::symlink(target, &new).unwrap();
    fs::rename(&new, link).unwrap();
}

/// The reply to AUTH for a user the server could only know by reading a
/// file outside the sandbox: refused. 454 4.7.0 once an unreadable users
/// file fails closed; until then the previous users are kept and the user
/// is unknown (535 5.7.8).
fn assert_refused(reply: &str) {
    assert!(
        reply.starts_with("454 4.7.0"),
        "AUTH with a users file outside the sandbox: {reply:?}"
    );
}

#[test]
fn standalone_reads_a_users_file_swapped_inside_but_not_outside() {
    if !landlock() {
        return;
    }
    let users = Users::new();
    let server = Server::start(&users.config_line());
    assert!(server.wait_log(IN_FORCE), "{}", server.log());
    let auth = |user: &str| {
        let mut client = server.connect();
        client.hello();
        client.cmd(&auth_plain(user))
    };
    assert!(auth("alice").starts_with("235 2.7.0"));
    users.swap("mallory", true);
    let reply = auth("mallory");
    assert!(
        reply.starts_with("235 2.7.0"),
        "{reply:?}\n{}",
        server.log()
    );
    users.swap("eve", false);
    assert_refused(&auth("eve"));
    assert!(server.wait_log(&users.refusal()), "{}", server.log());
}

#[test]
fn standalone_under_strace_restricts_itself_before_any_thread() {
    if !landlock() || !strace() {
        return;
    }
    let dir = TempDir::new("sandbox-strace");
    let conf = dir.path().join("smtpbox.conf");
    let maildir = dir.path().join("Maildir");
    fs::write(
        &conf,
        format!(
            "listen = 127.0.0.1:0\nhostname = mx.test\ndomain = example.com\nmaildir = {}\n",
            maildir.display()
        ),
    )
    .unwrap();
    let trace = dir.path().join("strace.out");
    let mut traced = Traced(
        traced(&trace, &["-c", conf.to_str().unwrap()])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start strace"),
    );
    let addr = listening_addr(&mut traced.0);
    let mut client = Client::connect(addr);
    client.hello();
    let reply = client.deliver("a@b.org", &["alice@example.com"], "Subject: s\r\n\r\nhi");
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    client.expect("QUIT", "221");
    drop(traced);
    let text = fs::read_to_string(&trace).unwrap();
    restricted_pid(&text);
    let restrict = text.find("landlock_restrict_self(").unwrap();
    let first_thread = text.find("clone").unwrap_or(text.len());
    assert!(
        restrict < first_thread,
        "a thread before the sandbox:\n{text}"
    );
    assert_stored_with_host(&maildir);
}

/// strace running a server: on drop (a failed assertion too) the server
/// is stopped, by the pid strace started, then strace is reaped.
struct Traced(Child);

impl Drop for Traced {
    fn drop(&mut self) {
        let pid = self.0.id();
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
        for child in children.unwrap_or_default().split_whitespace() {
            let _ = Command::new("kill").arg(child).status();
        }
        let end = Instant::now() + Duration::from_secs(10);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < end {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `smtpbox ARGS` under `strace -f`, writing the sandbox's system
/// calls and every thread start to `out`.
fn traced(out: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("strace");
    command
        .args(["-f", "-qq", "-o"])
        .arg(out)
        .args([
            "-e",
            "trace=prctl,landlock_create_ruleset,landlock_restrict_self,clone,clone3",
        ])
        .args(smtpbox_argv())
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped());
    command
}

/// Reads the server's log until "listening on ADDR"; the rest of the log
/// is drained in the background.
fn listening_addr(child: &mut Child) -> std::net::SocketAddr {
    let mut lines = PipeLines::new(child.stderr.take().unwrap());
    // Each line within 20 s; the rest of the log is drained by the reader.
    while let Some(line) = lines.line(Duration::from_secs(20)) {
        if let Some(addr) = listening_on(&line) {
            return addr;
        }
    }
    kill_tree(child);
    panic!("the server ended without a listening line");
}

/// The pid whose `landlock_restrict_self` returned 0 (after
/// `PR_SET_NO_NEW_PRIVS`), from strace's output.
fn restricted_pid(trace: &str) -> u32 {
    let nnp = trace
        .lines()
        .find(|l| l.contains("prctl(PR_SET_NO_NEW_PRIVS, 1") && l.ends_with("= 0"));
    assert!(nnp.is_some(), "no no_new_privs:\n{trace}");
    let line = trace
        .lines()
        .find(|l| l.contains("landlock_restrict_self(") && l.ends_with("= 0"))
        .unwrap_or_else(|| panic!("no landlock_restrict_self returning 0:\n{trace}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// One message in `maildir/new`, named with the host name (read before the
/// sandbox: /proc is not allowed after it).
fn assert_stored_with_host(maildir: &Path) {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    let names: Vec<String> = fs::read_dir(maildir.join("new"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    if !host.is_empty() && !host.contains(['/', ':']) {
        assert!(names[0].contains(&format!(".{host},S=")), "{names:?}");
    }
}

/// A config file for the stdio modes in its own directory, with `extra`.
fn stdio_config(dir: &Path, extra: &str) -> PathBuf {
    let conf = dir.join("smtpbox.conf");
    fs::write(
        &conf,
        format!(
            "hostname = mx.test\ndomain = example.com\nmaildir = {}/Maildir\n\
             timeout = 10\nsession_timeout = 20\n{extra}",
            dir.display()
        ),
    )
    .unwrap();
    conf
}

/// One SMTP session on the stdin/stdout of `command` (`--inetd`, `sendmail
/// -bs`): `between` runs after the greeting, when the sandbox is in force;
/// then EHLO and `line`. Returns the reply to `line` and the log (stderr).
fn stdio_session(mut command: Command, between: impl FnOnce(), line: &str) -> (String, String) {
    let mut child = command
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start smtpbox");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = PipeLines::new(child.stdout.take().unwrap());
    let mut reply = || stdout.reply(Duration::from_secs(10));
    let greeting = reply();
    assert!(greeting.starts_with("220 "), "{greeting:?}");
    between();
    stdin.write_all(b"EHLO client.test\r\n").unwrap();
    assert!(reply().starts_with("250"));
    stdin.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    let answer = reply();
    stdin.write_all(b"QUIT\r\n").unwrap();
    reply();
    drop(stdin);
    let end = finish_bounded(child, Duration::from_secs(10));
    assert!(
        end.status.success(),
        "{:?}: {}",
        end.status,
        end.stderr_text()
    );
    (answer, end.stderr_text())
}

fn inetd(conf: &Path) -> Command {
    let mut command = smtpbox();
    command.arg("-c").arg(conf).arg("--inetd");
    command
}

fn sendmail_bs(conf: &Path) -> Command {
    let mut command = smtpbox();
    command.args(["sendmail", "-bs", "-C"]).arg(conf);
    command
}

/// The users-file check for a stdio mode: a swap inside is read, one
/// outside is not, each in a session of its own.
fn stdio_users_check(mode: fn(&Path) -> Command) {
    let users = Users::new();
    let dir = TempDir::new("sandbox-stdio");
    let conf = stdio_config(dir.path(), &users.config_line());
    let (reply, log) = stdio_session(
        mode(&conf),
        || users.swap("mallory", true),
        &auth_plain("mallory"),
    );
    assert!(reply.starts_with("235 2.7.0"), "{reply:?}\n{log}");
    assert!(log.contains(IN_FORCE), "{log}");
    let (reply, log) = stdio_session(mode(&conf), || users.swap("eve", false), &auth_plain("eve"));
    assert_refused(&reply);
    assert!(log.contains(&users.refusal()), "{log}");
}

#[test]
fn inetd_reads_a_users_file_swapped_inside_but_not_outside() {
    if landlock() {
        stdio_users_check(inetd);
    }
}

#[test]
fn sendmail_bs_reads_a_users_file_swapped_inside_but_not_outside() {
    if landlock() {
        stdio_users_check(sendmail_bs);
    }
}

#[test]
fn inetd_and_sendmail_bs_under_strace_restrict_themselves() {
    if !landlock() || !strace() {
        return;
    }
    for (name, args) in [
        ("inetd", &["--inetd", "-c"][..]),
        ("bs", &["sendmail", "-bs", "-C"]),
    ] {
        let dir = TempDir::new("sandbox-strace-stdio");
        let conf = stdio_config(dir.path(), "");
        let trace = dir.path().join("strace.out");
        let mut args = args.to_vec();
        args.push(conf.to_str().unwrap());
        let input = "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<alice@example.com>\r\n\
                     DATA\r\nSubject: s\r\n\r\nhi\r\n.\r\nQUIT\r\n";
        let out = feed(traced(&trace, &args), input.as_bytes());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("250 2.0.0 Ok: queued"), "{name}: {stdout}");
        restricted_pid(&fs::read_to_string(&trace).unwrap());
        assert_stored_with_host(&dir.path().join("Maildir"));
    }
}

/// Runs `command` with `input` on stdin to its end (30 s at most).
fn feed(mut command: Command, input: &[u8]) -> Finished {
    run_bounded(&mut command, input, Duration::from_secs(30))
}

#[test]
fn sendmail_under_strace_delivers_inside_the_sandbox() {
    if !landlock() || !strace() {
        return;
    }
    let dir = TempDir::new("sandbox-sendmail");
    let conf = stdio_config(dir.path(), "");
    let trace = dir.path().join("strace.out");
    let args = [
        "sendmail",
        "-C",
        conf.to_str().unwrap(),
        "alice@example.com",
    ];
    let out = feed(traced(&trace, &args), b"Subject: cron\n\ndone\n");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    restricted_pid(&fs::read_to_string(&trace).unwrap());
    assert_stored_with_host(&dir.path().join("Maildir"));
}

/// The Maildir is allowed as the directory it was at start: a Maildir path
/// re-pointed at another directory while sendmail mode reads its input
/// leads nowhere (without the sandbox the message would land there).
#[test]
fn sendmail_cannot_write_through_a_maildir_swapped_after_the_sandbox() {
    if !landlock() {
        return;
    }
    let dir = TempDir::new("sandbox-sendmail-swap");
    let outside = TempDir::new("sandbox-sendmail-outside");
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(outside.path().join(sub)).unwrap();
    }
    let conf = stdio_config(dir.path(), "");
    let maildir = dir.path().join("Maildir");
    let mut child = smtpbox()
        .args(["sendmail", "-C"])
        .arg(&conf)
        .arg("alice@example.com")
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sendmail");
    // The sandbox is in force (logged once Landlock restricts) before
    // stdin is read.
    let mut log = PipeLines::new(child.stderr.take().unwrap());
    while let Some(line) = log.line(Duration::from_secs(10)) {
        if line.contains(IN_FORCE) {
            break;
        }
    }
    assert!(maildir.is_dir(), "the Maildir is made before the sandbox");
    fs::rename(&maildir, dir.path().join("Maildir.start")).unwrap();
    std::os::unix::fs::symlink(outside.path(), &maildir).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Subject: cron\n\ndone\n").unwrap();
    drop(stdin);
    let out = finish_bounded(child, Duration::from_secs(10));
    let mut stderr = String::new();
    while let Some(line) = log.line(Duration::from_secs(10)) {
        stderr.push_str(&line);
    }
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    for sub in ["tmp", "new", "cur"] {
        assert_eq!(count(outside.path(), sub), 0, "{sub}");
    }
}

/// certbot's layout: `live/` holds symlinks into `archive/`. A renewal adds
/// files to `archive/` and re-points the links: read. Links re-pointed
/// outside both directories: not read, the old pair is kept.
#[test]
fn acme_renewal_through_symlinks_is_read_and_a_link_outside_is_not() {
    if !landlock() {
        return;
    }
    let base = TempDir::new("sandbox-acme");
    let live = base.path().join("live");
    let archive = base.path().join("archive");
    fs::create_dir_all(&live).unwrap();
    fs::create_dir_all(&archive).unwrap();
    let issue = |dir: &Path, n: u32| {
        let work = TempDir::new("sandbox-acme-issue");
        make_cert(work.path());
        let cert = dir.join(format!("cert{n}.pem"));
        let key = dir.join(format!("privkey{n}.pem"));
        fs::copy(work.path().join("cert.crt"), &cert).unwrap();
        fs::copy(work.path().join("cert.key"), &key).unwrap();
        swap_symlink(&cert, &live.join("cert.pem"));
        swap_symlink(&key, &live.join("privkey.pem"));
    };
    issue(&archive, 1);
    let server = Server::start(&format!(
        "tls_cert = {0}/cert.pem\ntls_key = {0}/privkey.pem\n",
        live.display()
    ));
    assert!(server.wait_log(IN_FORCE), "{}", server.log());
    let starttls = || {
        let mut client = server.connect();
        client.hello();
        client.expect("STARTTLS", "220 2.0.0");
    };
    starttls();
    // The files are looked at once a second, at a connection: new ones
    // until the look has come (polling, not a guess at the server's clock).
    let poll = |needle: &str| {
        let end = Instant::now() + upper(Duration::from_secs(1) + ROOM);
        while !server.log().contains(needle) {
            assert!(Instant::now() < end, "no {needle:?}:\n{}", server.log());
            starttls();
            thread::sleep(Duration::from_millis(50));
        }
    };
    issue(&archive, 2);
    poll("TLS: reloaded");
    let outside = TempDir::new("sandbox-acme-outside");
    issue(outside.path(), 3);
    poll("cert.pem: cannot read: Permission denied");
    assert!(
        server.wait_log("cert.pem: cannot read: Permission denied"),
        "{}",
        server.log()
    );
    let log = server.log();
    let refusal = log
        .lines()
        .find(|l| l.contains("cert.pem: cannot read"))
        .unwrap();
    assert!(refusal.contains("Permission denied"), "{refusal}");
}

/// Without Landlock (ENOSYS, injected by strace) smtpbox says so once at
/// info and serves as before; an unexpected error (EINVAL from
/// landlock_restrict_self, or a refused rule) is a warning, and it serves
/// too, unconfined.
#[test]
fn without_landlock_or_on_an_error_it_says_so_and_serves() {
    if !strace() {
        return;
    }
    let cases = [
        (
            "landlock_create_ruleset:error=ENOSYS",
            "INFO",
            "the kernel has no Landlock",
        ),
        (
            "landlock_create_ruleset:error=EPERM",
            "INFO",
            "Landlock is filtered out",
        ),
        (
            "landlock_restrict_self:error=EINVAL",
            "WARN",
            "Invalid argument",
        ),
        (
            "landlock_add_rule:error=EBADF",
            "WARN",
            "Bad file descriptor",
        ),
    ];
    for (inject, level, reason) in cases {
        let dir = TempDir::new("sandbox-inject");
        let conf = stdio_config(dir.path(), "");
        // The same command as `inetd`, run by strace.
        let server = inetd(&conf);
        let mut command = Command::new("strace");
        command
            .args(["-f", "-qq", "-o", "/dev/null", "-e"])
            .arg(format!("inject={inject}"))
            .arg(server.get_program())
            .args(server.get_args())
            .env("RUST_LOG", "info");
        let input = "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<alice@example.com>\r\n\
                     DATA\r\nSubject: s\r\n\r\nhi\r\n.\r\nQUIT\r\n";
        let out = feed(command, input.as_bytes());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            stdout.contains("250 2.0.0 Ok: queued"),
            "{inject}: {stdout}\n{log}"
        );
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("sandbox:")).collect();
        assert_eq!(lines.len(), 1, "{inject}: {log}");
        assert!(
            lines[0].starts_with(&format!("[{level}")),
            "{inject}: {log}"
        );
        assert!(lines[0].contains(reason), "{inject}: {log}");
        assert!(
            lines[0].ends_with("not restricted") || lines[0].ends_with("not restricted here"),
            "{inject}: {log}"
        );
        assert_eq!(count(&dir.path().join("Maildir"), "new"), 1, "{inject}");
    }
}

/// Issue #22 item 4: a Maildir without tmp/, new/ and cur/ (as the sandbox
/// leaves one it made at start-up, or one emptied later) gets them, made
/// durably, at the next delivery; under the sandbox the Maildir's parent
/// cannot be opened to fsync, and need not be (the sandbox made the
/// Maildir durably before it applied its rules): the delivery goes on.
#[test]
fn the_first_delivery_under_the_sandbox_makes_the_maildirs_subdirectories() {
    if !landlock() {
        return;
    }
    let server = Server::start("");
    assert!(server.wait_log(IN_FORCE), "{}", server.log());
    let maildir = server.maildir();
    assert!(maildir.is_dir() && !maildir.join("new").exists());
    let mut client = server.connect();
    client.hello();
    let reply = client.deliver(
        "a@example.org",
        &["root@example.com"],
        "Subject: again\r\n\r\nhi",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}\n{}", server.log());
    assert_eq!(count(&maildir, "new"), 1);
    for sub in ["tmp", "cur"] {
        assert!(maildir.join(sub).is_dir(), "{sub}/ made");
    }
}
