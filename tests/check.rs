//! `--check` (SPEC §2, §3): read-only, complete, and honest: every config
//! it accepts starts and serves; those it refuses do not start either.
//! Also the start-up file errors of SPEC §8 (exit 78, file and errno).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{make_cert, messages, Client, TempDir};

/// Runs the binary to its exit, killed after 10 s by coreutils `timeout`
/// (exit 124), optionally as another uid: (exit code, stdout, stderr).
fn run(args: &[&OsStr], uid: Option<u32>) -> (Option<i32>, String, String) {
    let mut cmd = Command::new("timeout");
    cmd.arg("10")
        .args(common::smtpbox_argv())
        .args(args)
        .stdin(Stdio::null());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().expect("run smtpbox");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn check(conf: &Path) -> (Option<i32>, String, String) {
    run(&["--check".as_ref(), "-c".as_ref(), conf.as_os_str()], None)
}

/// A server started on `conf`, killed on drop.
struct Started {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts smtpbox on `conf` and waits (10 s at most) for its "listening
/// on" line; Err is the exit code and log of a start that failed.
fn start(conf: &Path) -> Result<Started, (Option<i32>, String)> {
    let mut child = common::smtpbox()
        .arg("-c")
        .arg(conf)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start smtpbox");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = common::listening_on(&line) {
                let _ = tx.send(Ok(a));
            }
            log.push_str(&line);
            log.push('\n');
        }
        let _ = tx.send(Err(log));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(addr)) => Ok(Started { child, addr }),
        Ok(Err(log)) => {
            let status = child.wait().ok().and_then(|s| s.code());
            Err((status, log))
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err((None, "did not start within 10 s".into()))
        }
    }
}

/// A config in `dir` with `lines`, listening on an ephemeral port.
fn write_conf(dir: &Path, name: &str, lines: &str) -> PathBuf {
    let conf = dir.join(name);
    let text =
        format!("listen = 127.0.0.1:0\n{lines}\n").replace("{dir}", &dir.display().to_string());
    fs::write(&conf, text).unwrap();
    conf
}

/// Every file and directory under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

fn passwd_hash(secret: &str) -> String {
    let out = Command::new("openssl")
        .args(["passwd", "-6", "-salt", "checksalt", secret])
        .output()
        .expect("openssl passwd");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn every_config_check_accepts_starts_and_serves() {
    let dir = TempDir::new("check-serve");
    make_cert(dir.path());
    fs::write(
        dir.path().join("users"),
        format!("alice:{}\n", passwd_hash("pw")),
    )
    .unwrap();
    let long_host = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    let tls = "tls_cert = {dir}/cert.crt\ntls_key = {dir}/cert.key\nusers = {dir}/users\n";
    let configs = [
        ("minimal", "maildir = {dir}/m1/Maildir".to_string()),
        (
            "upper-bounds",
            "maildir = {dir}/m2\ntimeout = 86400\nsession_timeout = 604800\n\
             max_message_size = 1099511627775\nmaildir_quota = 1099511627775\n\
             max_recipients = 100000\nmax_connections = 65535\n\
             max_connections_per_ip = 65535\nmax_errors = 10000"
                .to_string(),
        ),
        (
            "lower-bounds",
            "maildir = {dir}/m3\ntimeout = 1\nsession_timeout = 5\nmax_message_size = 1\n\
             maildir_quota = 0\nmax_recipients = 1\nmax_connections = 1\n\
             max_connections_per_ip = 1\nmax_errors = 1"
                .to_string(),
        ),
        ("long-hostname", format!("maildir = {{dir}}/m4\nhostname = {long_host}.")),
        ("literal-v4", "maildir = {dir}/m5\nhostname = [127.0.0.1]".to_string()),
        ("literal-v6", "maildir = {dir}/m6\nhostname = [IPv6:::1]".to_string()),
        (
            "routes",
            "mailbox = alice {dir}/alice\nmailbox = bob@example.org {dir}/bob\n\
             alias = root alice\ndomain = example.org\nbare_lf = reject"
                .to_string(),
        ),
        (
            "tls",
            format!("maildir = {{dir}}/m7\nlisten = 127.0.0.1:0/submission\nlisten = 127.0.0.1:0/tls\n{tls}"),
        ),
    ];
    for (name, lines) in &configs {
        let conf = write_conf(dir.path(), &format!("{name}.conf"), lines);
        let before = tree(dir.path());
        let (code, out, err) = check(&conf);
        assert_eq!(code, Some(0), "{name}: --check refused: {err}");
        assert!(
            out.ends_with("smtpbox: configuration OK\n"),
            "{name}: {out}"
        );
        assert_eq!(tree(dir.path()), before, "{name}: --check wrote something");

        let server =
            start(&conf).unwrap_or_else(|e| panic!("{name}: --check said OK, start: {e:?}"));
        let mut c = Client::connect(server.addr);
        let banner = c.reply();
        assert!(banner.starts_with("220 "), "{name}: {banner:?}");
        c.expect("EHLO client.test", "250");
        if *name != "lower-bounds" {
            let rcpt = match lines.contains("domain = example.org") {
                true => "root@example.org",
                false => "root@localhost",
            };
            let reply = c.deliver("a@b.org", &[rcpt], "Subject: ok\r\n\r\nhi");
            assert!(reply.starts_with("250 2.0.0"), "{name}: {reply}");
        }
        c.expect("QUIT", "221 2.0.0");
    }
    // The first deliveries made what --check said they would.
    assert_eq!(messages(&dir.path().join("m1/Maildir")).len(), 1);
    assert_eq!(messages(&dir.path().join("alice")).len(), 1);
}

#[test]
fn check_reports_what_the_first_delivery_creates_and_creates_nothing() {
    let dir = TempDir::new("check-ro");
    let conf = write_conf(dir.path(), "a.conf", "maildir = {dir}/deep/er/Maildir");
    let (code, out, err) = check(&conf);
    assert_eq!(code, Some(0), "{err}");
    let maildir = dir.path().join("deep/er/Maildir");
    let md = maildir.display();
    assert_eq!(
        out,
        format!("smtpbox: {md}: the first delivery will create {md}/{{tmp,new,cur}}\nsmtpbox: configuration OK\n")
    );
    assert_eq!(tree(dir.path()), ["a.conf"]);
    // A relative maildir (`../../etc` once made /etc/tmp, /etc/new, /etc/cur).
    let work = dir.path().join("a/b");
    fs::create_dir_all(&work).unwrap();
    fs::write(dir.path().join("rel.conf"), "maildir = ../../etc\n").unwrap();
    let out = common::output_bounded(
        common::smtpbox()
            .args(["--check", "-c"])
            .arg(dir.path().join("rel.conf"))
            .current_dir(&work),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rel.conf:1: bad `maildir`: `../../etc` is not an absolute path"),
        "{err}"
    );
    assert!(!dir.path().join("etc").exists());
}

/// The findings of issue 13 that --check used to accept, each refused by
/// --check (exit 1, naming the file and line) and by a real start.
#[test]
fn check_refuses_what_would_not_serve() {
    let dir = TempDir::new("check-bad");
    let fifo = dir.path().join("fifo.pem");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let cases: [(&str, String, &str); 9] = [
        (
            "budget",
            "maildir_quota = 1000000\nmaildir_keep = 2000000".into(),
            ":4: maildir_keep (2000000 bytes) is larger than maildir_quota (1000000 bytes)",
        ),
        (
            "small-budget",
            "mailbox = ops keep=1000 /srv/ops".into(),
            ":3: keep (1000 bytes) is smaller than max_message_size (10485760 bytes)",
        ),
        (
            "user",
            "user = no-such-user-w13c".into(),
            ":3: `user = no-such-user-w13c`: user \"no-such-user-w13c\" not found in /etc/passwd",
        ),
        (
            "session",
            "session_timeout = 18446744073709551615".into(),
            ":3: bad `session_timeout`: 18446744073709551615 is over the limit of 604800",
        ),
        (
            "nul",
            "hostname = mx\0evil".into(),
            ":3: bad `hostname`: `mx\\0evil` is not a domain name",
        ),
        (
            "huge-host",
            format!("hostname = {}", "h".repeat(100_000)),
            ":3: bad `hostname`: `hhhh",
        ),
        (
            "zero",
            "tls_cert = /dev/zero\ntls_key = /dev/zero".into(),
            "/dev/zero: not a regular file (device)",
        ),
        (
            "fifo",
            format!(
                "tls_cert = {}\ntls_key = {}",
                fifo.display(),
                fifo.display()
            ),
            "fifo.pem: not a regular file (FIFO)",
        ),
        (
            "long-key",
            format!("{} = 1", "k".repeat(100_000)),
            ":3: unknown key `kkkk",
        ),
    ];
    for (name, line, want) in &cases {
        let conf = write_conf(
            dir.path(),
            &format!("{name}.conf"),
            &format!("maildir = {{dir}}/m\n{line}"),
        );
        let (code, _, err) = check(&conf);
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
        assert!(err.len() < 400, "{name}: a {}-byte message", err.len());
        match start(&conf) {
            Ok(_) if *name == "user" && !is_root() => {} // Nothing to drop to.
            Ok(_) => panic!("{name}: --check refused it, yet it serves"),
            Err((code, log)) => {
                let expected = if ["zero", "fifo"].contains(name) {
                    78
                } else {
                    1
                };
                assert_eq!(code, Some(expected), "{name}: {log}");
                assert!(log.contains(want), "{name}: {log}");
            }
        }
    }
    assert!(!dir.path().join("m").exists());
}

#[test]
fn a_config_that_is_not_utf8_is_named_by_file_and_line() {
    let dir = TempDir::new("check-utf8");
    let conf = dir.path().join("x.conf");
    fs::write(&conf, b"listen = 127.0.0.1:0\nmaildir = /m\n# caf\xe9\n").unwrap();
    let (code, _, err) = check(&conf);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        format!("smtpbox: {}:3: not valid UTF-8\n", conf.display())
    );
}

#[test]
fn paths_in_arguments_need_not_be_utf8() {
    let dir = TempDir::new("check-os");
    let os = |b: &[u8]| OsStr::from_bytes(b).to_os_string();
    // A missing config file with such a name: a message, not a panic.
    let (code, _, err) = run(
        &["--check".as_ref(), "-c".as_ref(), &os(b"\xff\xfe.conf")],
        None,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with("smtpbox: \u{fffd}\u{fffd}.conf: cannot read: "),
        "{err}"
    );
    let (code, _, err) = run(
        &["-m".as_ref(), "/m".as_ref(), "-H".as_ref(), &os(b"\xff")],
        None,
    );
    assert_eq!(
        (code, err.as_str()),
        (Some(1), "smtpbox: --hostname: not UTF-8: `\u{fffd}`\n")
    );

    // A config file and a Maildir whose names are not UTF-8 work.
    let mut name = dir.path().as_os_str().to_os_string();
    name.push(os(b"/conf-\xff.conf"));
    let mut maildir = dir.path().as_os_str().to_os_string();
    maildir.push(os(b"/mail-\xfe"));
    fs::write(&name, "listen = 127.0.0.1:0\nhostname = mx.test\n").unwrap();
    let (code, out, err) = run(
        &[
            "--check".as_ref(),
            "-c".as_ref(),
            &name,
            "-m".as_ref(),
            &maildir,
        ],
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.ends_with("configuration OK\n"), "{out}");
    let mut child = common::smtpbox()
        .arg("-c")
        .arg(&name)
        .arg("-m")
        .arg(&maildir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let addr: SocketAddr = stderr
        .lines()
        .map_while(Result::ok)
        .find_map(|l| common::listening_on(&l))
        .expect("listening");
    let mut c = Client::connect(addr);
    c.hello();
    let reply = c.deliver("a@b.org", &["root@localhost"], "Subject: bytes\r\n\r\nhi");
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(messages(Path::new(&maildir)).len(), 1);
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .ok()
        == Some(0)
}

/// SPEC §8: a key the service account cannot read. `--check` run as that
/// account (here `nobody`) names the file; a real start exits 78 with the
/// file and errno in the log.
#[test]
fn an_unreadable_key_is_named_by_check_and_exits_78_at_start() {
    use std::os::unix::fs::{chown, PermissionsExt};
    if !is_root() {
        eprintln!("skipped: needs root to run smtpbox as nobody");
        return;
    }
    const NOBODY: u32 = 65534;
    let dir = TempDir::new("check-nobody");
    make_cert(dir.path());
    let key = dir.path().join("cert.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let maildir = dir.path().join("Maildir");
    fs::create_dir(&maildir).unwrap();
    chown(&maildir, Some(NOBODY), Some(NOBODY)).unwrap();
    let conf = write_conf(
        dir.path(),
        "a.conf",
        "maildir = {dir}/Maildir\ntls_cert = {dir}/cert.crt\ntls_key = {dir}/cert.key",
    );
    let want = format!(
        "{}: cannot read: Permission denied (os error 13)",
        key.display()
    );
    // As root, all is well.
    let (code, _, err) = check(&conf);
    assert_eq!(code, Some(0), "{err}");
    // As nobody, --check names the key; so does a real start, with 78.
    let (code, _, err) = run(
        &["--check".as_ref(), "-c".as_ref(), conf.as_os_str()],
        Some(NOBODY),
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err, format!("smtpbox: {want}\n"));
    let (code, _, err) = run(&["-c".as_ref(), conf.as_os_str()], Some(NOBODY));
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains(&want), "{err}");
}
