//! Deployment: the start modes of SPEC §8 driven the way service managers
//! drive them (systemd socket activation with `systemd-socket-activate`,
//! sd_notify readiness, inetd on a socket or a pipe, `user =` privilege
//! drop) and the unit files in systemd/ checked by `systemd-analyze verify`.
//! The systemd tools are skipped when missing, except under CI (`CI` set).

mod common;
use common::*;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A message as sent (`deliver` adds the final CRLF) and as stored.
const MESSAGE: &str = "Subject: deploy\r\n\r\nhello";
/// A whole session after the greeting, [`MESSAGE`] as its content.
const SESSION: &str = "EHLO client.test\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<x@example.com>\r\n\
                       DATA\r\nSubject: deploy\r\n\r\nhello\r\n.\r\nQUIT\r\n";
const STORED: &[u8] = b"Subject: deploy\r\n\r\nhello\r\n";

/// A self-signed P-256 certificate for mx.test (valid until 2126) and its
/// key, and a users file for alice, password "secret".
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg4xYZi13+PS0VGbLd
jSXOGelD1HLcZ2YYurZ944rlmzmhRANCAARwTB12oX88rIcO3D8JwdRUHfpAJ6Hl
TDu9Zrd7uLbkRolmu04oh1MwFoE1hywcvK2yLz77c2yRKXhIEhvhywiQ
-----END PRIVATE KEY-----
";
const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBezCCASGgAwIBAgIUVZ8+KRhW29lmDF0EmiP/757ZmicwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHbXgudGVzdDAgFw0yNjExMjgyMDI3NDJaGA8yMTI2MTEwNDIw
Mjc0MlowEjEQMA4GA1UEAwwHbXgudGVzdDBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABHBMHXahfzyshw7cPwnB1FQd+kAnoeVMO71mt3u4tuRGiWa7TiiHUzAWgTWH
LBy8rbIvPvtzbJEpeEgSG+HLCJCjUzBRMB0GA1UdDgQWBBTJnL+EAfpM7g0VraqG
tXmViYaDzDAfBgNVHSMEGDAWgBTJnL+EAfpM7g0VraqGtXmViYaDzDAPBgNVHRMB
Af8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCICvde3P67zX66inSNEe6DxmkFWHA
sYKws2JKgbPjgZxsAiEAmOHHbKsHR59gPP5Vf91BLII0Vypljgpxsh1vlLb9YbI=
-----END CERTIFICATE-----
";
const TEST_USERS: &str = "alice:$5$deploytest$P5LcaAFkufYaKwcVhiWwtK0S6Ri9D8cDJGgcYPd6p07\n";

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if !have_tool("systemd-analyze", "systemd") {
        return;
    }
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let dir = TempDir::new("units");
    let mut names = Vec::new();
    for entry in fs::read_dir(&units).expect("systemd/") {
        let path = entry.expect("entry").path();
        // smtpbox.sysusers is no unit: checked by the live-systemd test.
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("socket" | "service")
        ) {
            continue;
        }
        let text = fs::read_to_string(&path).expect("unit");
        for fd_name in text
            .lines()
            .filter_map(|l| l.strip_prefix("FileDescriptorName="))
        {
            assert!(
                ["smtp", "submission", "submissions", "tls", "local"].contains(&fd_name),
                "{}: FileDescriptorName={fd_name} maps to no mode",
                path.display()
            );
        }
        // verify insists that ExecStart= exists: point it at the test binary.
        let text = text.replace("/usr/local/sbin/smtpbox", &bin().display().to_string());
        let name = path.file_name().expect("name").to_owned();
        fs::write(dir.path().join(&name), text).expect("copy unit");
        names.push(dir.path().join(name));
    }
    let wanted = "smtpbox.socket smtpbox-submission.socket smtpbox-local.socket \
                 smtpbox.service smtpbox-inetd.socket smtpbox-inetd@.service";
    for unit in wanted.split_whitespace() {
        assert!(dir.path().join(unit).exists(), "systemd/{unit} missing");
    }
    let out = output_bounded(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no", "--generators=no"])
            .args(&names),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys are only warnings: any output at all is a failure.
    assert!(
        out.status.success() && stderr.trim().is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

/// `systemd-analyze security` of the shipped services, offline: the
/// servers stay at 1.0 whatever `notify` needs (issue #21: the program
/// runs in smtpbox-notify.service, whose exposure is its own and stays
/// "OK").
#[test]
fn the_servers_exposure_stays_1_0_and_the_notifiers_is_ok() {
    if !have_tool("systemd-analyze", "systemd") {
        return;
    }
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let dir = TempDir::new("security");
    for (unit, most) in [
        ("smtpbox.service", 1.0),
        ("smtpbox-inetd@.service", 1.0),
        ("smtpbox-notify.service", 4.0),
    ] {
        let text = fs::read_to_string(units.join(unit)).expect("unit");
        let text = text.replace("/usr/local/sbin/smtpbox", &bin().display().to_string());
        fs::write(dir.path().join(unit), text).expect("copy unit");
        let out = output_bounded(
            Command::new("systemd-analyze")
                .args(["security", "--offline=true", "--no-pager"])
                .arg(dir.path().join(unit)),
            Duration::from_secs(30),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let level: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{unit}: no exposure level: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        assert!(level <= most, "{unit}: exposure {level} over {most}");
    }
}

#[test]
fn socket_activation_accept_no_serves_the_passed_socket() {
    if !have_tool("systemd-socket-activate", "systemd") {
        return;
    }
    let dir = TempDir::new("sa");
    let (proc, port) = activate(&[], &[], &config(&dir, ""));
    let mut client = connect_retry(port, &proc);
    client.hello();
    deliver_ok(&mut client);
    client.expect("QUIT", "221 2.0.0");
    assert!(
        proc.wait_log(&format!("socket-activated 127.0.0.1:{port}")),
        "log: {}",
        proc.log()
    );
    stored_one(&dir.path().join("Maildir"));
}

#[test]
fn socket_activation_accept_yes_names_the_client_in_received() {
    if !have_tool("systemd-socket-activate", "systemd") {
        return;
    }
    let dir = TempDir::new("sai");
    // --accept: one child per connection, the connection on stdin/stdout
    // (without it, --inetd would hand over the listening socket itself).
    let (proc, port) = activate(&["--inetd", "--accept"], &["--inetd"], &config(&dir, ""));
    let mut client = connect_retry(port, &proc);
    client.hello();
    deliver_ok(&mut client);
    client.expect("QUIT", "221 2.0.0");
    assert!(client.closed());
    let text = stored_one(&dir.path().join("Maildir"));
    assert!(
        text.contains("Received: from client.test ([127.0.0.1]) by mx.test"),
        "{text}"
    );
}

#[test]
fn socket_activation_accept_yes_forked_smtpbox_dies_with_the_activator() {
    if !have_tool("systemd-socket-activate", "systemd") {
        return;
    }
    let dir = TempDir::new("saorph");
    let (proc, port) = activate(&["--inetd", "--accept"], &["--inetd"], &config(&dir, ""));
    let mut client = connect_retry(port, &proc);
    client.hello();
    // The connection's smtpbox is the activator's child, not ours.
    let forked = forked_children(&proc);
    drop(proc);
    assert_all_dead(&forked);
    assert_eq!(
        client.read_to_eof(),
        "",
        "the session ended with its process"
    );
}

#[test]
fn a_wrappers_forked_smtpbox_dies_with_the_wrapper() {
    // systemd-socket-activate asks for SIGTERM on its death (its children
    // die anyway); a shell running smtpbox in the background does not:
    // the harness's guard kills by PID what the wrapper started.
    let dir = TempDir::new("wrapfork");
    let mut sh = Command::new("sh");
    sh.args(["-c", "\"$@\" & wait", "sh"])
        .args(smtpbox_argv())
        .arg("-c")
        .arg(config(&dir, "listen = 127.0.0.1:0\n"));
    let proc = Proc::spawn(&mut sh);
    let mut client = Client::connect(proc.listening());
    client.hello();
    let forked = forked_children(&proc);
    drop(proc);
    assert_all_dead(&forked);
    assert_eq!(
        client.read_to_eof(),
        "",
        "the session ended with its process"
    );
}

/// The descendants of `proc`, once it has some (within 5 s).
fn forked_children(proc: &Proc) -> Vec<u32> {
    let end = Instant::now() + upper(Duration::from_secs(5));
    loop {
        let found = descendants(proc.guard.pid());
        if !found.is_empty() {
            return found;
        }
        assert!(Instant::now() < end, "no forked smtpbox: {}", proc.log());
        thread::sleep(Duration::from_millis(10));
    }
}

/// Each of `pids` is gone (or a zombie waiting for init) within 5 s:
/// killed, not orphaned.
fn assert_all_dead(pids: &[u32]) {
    for pid in pids {
        let end = Instant::now() + upper(Duration::from_secs(5));
        loop {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(')').map_or("", |(_, r)| r.trim_start());
            if stat.is_empty() || state.starts_with('Z') {
                break;
            }
            assert!(Instant::now() < end, "{pid} outlived its parent: {stat}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn socket_activation_fd_named_submission_requires_auth_before_mail() {
    if !have_tool("systemd-socket-activate", "systemd") {
        return;
    }
    // No `listen` line: the mode comes from the fd name alone.
    let dir = TempDir::new("sas");
    let mut tls = String::new();
    for (key, text) in [
        ("tls_cert", TEST_CERT),
        ("tls_key", TEST_KEY),
        ("users", TEST_USERS),
    ] {
        let path = dir.path().join(key);
        fs::write(&path, text).expect("write TLS/users file");
        tls.push_str(&format!("{key} = {}\n", path.display()));
    }
    let (proc, port) = activate(&["--fdname=submission"], &[], &config(&dir, &tls));
    let mut client = connect_retry(port, &proc);
    client.hello();
    client.expect("MAIL FROM:<a@b.org>", "530 5.7.0");
    // AUTH works from loopback ("\0alice\0secret"), but submission still
    // wants STARTTLS before MAIL (SPEC §2); tests/tls.rs delivers over TLS.
    client.expect("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "235 2.7.0");
    client.expect("MAIL FROM:<a@b.org>", "530 5.7.0");
    client.expect("QUIT", "221 2.0.0");
    assert!(proc.wait_log("(submission)"), "log: {}", proc.log());
    assert_eq!(count(&dir.path().join("Maildir"), "new"), 0);
}

#[test]
fn socket_activation_fd_named_submission_without_tls_is_refused_at_start() {
    if !have_tool("systemd-socket-activate", "systemd") {
        return;
    }
    // Like `listen = …/submission` without tls_cert in the config check.
    let dir = TempDir::new("sasx");
    let (mut proc, port) = activate(&["--fdname=submission"], &[], &config(&dir, ""));
    // Accept=no: the activator execs smtpbox on the first connection, which
    // refuses to start: the client sees the connection closed (no greeting,
    // and not a read timeout), smtpbox exits 1.
    let mut client = connect_retry(port, &proc);
    assert_eq!(client.read_to_eof(), "", "no session expected");
    let status = proc.guard.exit_within(Duration::from_secs(5), "smtpbox");
    assert_eq!(status.code(), Some(1), "log: {}", proc.log());
    assert!(
        proc.wait_log("needs tls_cert and tls_key"),
        "log: {}",
        proc.log()
    );
}

#[test]
fn notify_socket_receives_ready_once_listening() {
    let dir = TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let proc = Proc::spawn(
        smtpbox()
            .arg("-c")
            .arg(config(&dir, "listen = 127.0.0.1:0\n"))
            .env("NOTIFY_SOCKET", &path),
    );
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("no datagram within 5 s");
    let state = String::from_utf8_lossy(&buf[..n]);
    assert!(state.lines().any(|l| l == "READY=1"), "got {state:?}");
    let mut client = Client::connect(proc.listening());
    client.hello();
    client.expect("QUIT", "221 2.0.0");
}

#[test]
fn inetd_over_pipes_serves_a_whole_pipelined_session() {
    let dir = TempDir::new("pipe");
    let mut command = smtpbox();
    command.arg("--inetd").arg("-c").arg(config(&dir, ""));
    let run = run_bounded(&mut command, SESSION.as_bytes(), Duration::from_secs(10));
    let out = run.stdout_text();
    assert!(
        run.status.success(),
        "{}: {}",
        run.status,
        run.stderr_text()
    );
    // The last line of each reply: "NNN " (continuation lines are "NNN-").
    let finals: Vec<&str> = out
        .split("\r\n")
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .collect();
    let expected = "220 |250 |250 2.1.0|250 2.1.5|354 |250 2.0.0|221 2.0.0";
    let expected: Vec<&str> = expected.split('|').collect();
    assert_eq!(finals.len(), expected.len(), "replies: {out:?}");
    for (reply, want) in finals.iter().zip(expected) {
        assert!(
            reply.starts_with(want),
            "expected {want:?}, got {reply:?} in {out:?}"
        );
    }
    let text = stored_one(&dir.path().join("Maildir"));
    assert!(
        text.contains("Received: from client.test ([unknown]) by mx.test"),
        "{text}"
    );
}

#[test]
fn inetd_with_stderr_on_the_socket_sends_the_client_only_replies() {
    // Classic inetd, xinetd and busybox inetd put the connection on fds 0, 1
    // AND 2; smtpbox's log lines must not reach the client.
    let dir = TempDir::new("stderr");
    let (mut child, client) = spawn_on_socket(
        smtpbox()
            .args(["--inetd", "-c"])
            .arg(config(&dir, ""))
            .env_remove("RUST_LOG"), // the default level, info
    );
    let replies = session_over(client);
    let status = child.exit_within(Duration::from_secs(5), "smtpbox --inetd");
    assert!(status.success(), "{status}: {replies}");
    for line in replies.lines() {
        let code = line.get(..3).unwrap_or("");
        assert!(
            code.bytes().all(|b| b.is_ascii_digit())
                && matches!(line.as_bytes().get(3), Some(b' ' | b'-')),
            "the client received a line that is no SMTP reply: {line:?}\nall: {replies}"
        );
    }
    assert_eq!(count(&dir.path().join("Maildir"), "new"), 1);
}

#[test]
fn privilege_drop_to_nobody_after_binding() {
    if !root_or_skip("no privileges to drop") {
        return;
    }
    let passwd = fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let nobody = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("no nobody in /etc/passwd");
    let fields: Vec<&str> = nobody.split(':').collect();
    let (uid, gid): (u32, u32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    let store = TempDir::new("priv");
    let maildir = store.path().join("Maildir");
    for sub in ["", "tmp", "new", "cur"] {
        let path = maildir.join(sub);
        fs::create_dir_all(&path).expect("create Maildir");
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
    }
    let server = Server::start(&format!("user = nobody\nmaildir = {}", maildir.display()));
    let status = fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("status");
    for key in ["Uid:", "Gid:"] {
        let line = status.lines().find(|l| l.starts_with(key)).expect(key);
        let want = if key == "Uid:" { uid } else { gid };
        let ids: Vec<u32> = line[4..]
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(ids, vec![want; 4], "{line}");
    }
    assert!(server
        .log()
        .contains(&format!("running as nobody (uid {uid}, gid {gid})")));
    let mut client = server.connect();
    client.hello();
    deliver_ok(&mut client);
    stored_one(&maildir);
}

#[test]
fn listen_fds_meant_for_another_pid_are_ignored() {
    let dir = TempDir::new("pid");
    let proc = Proc::spawn(
        smtpbox()
            .arg("-c")
            .arg(config(&dir, "listen = 127.0.0.1:0\n"))
            .env("LISTEN_PID", "1")
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "submission"),
    );
    let addr = proc.listening();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    let mut client = Client::connect(addr);
    client.hello();
    deliver_ok(&mut client);
    let log = proc.log();
    assert!(!log.contains("socket-activated"), "{log}");
    assert!(log.to_lowercase().contains("(smtp)"), "{log}");
    assert_eq!(count(&dir.path().join("Maildir"), "new"), 1);
}

/// Runs smtpbox under `systemd-socket-activate OPTS --listen=127.0.0.1:PORT`
/// once the activator has said it listens on PORT (it takes no port 0:
/// when a port that was free is taken before it binds, it exits and a
/// new port is tried). Returns the activator and the port.
fn activate(opts: &[&str], args: &[&str], conf: &Path) -> (Proc, u16) {
    let mut failures = String::new();
    for _ in 0..5 {
        let port = free_port();
        let mut proc = Proc::spawn(
            Command::new("systemd-socket-activate")
                .args(opts)
                .arg(format!("--listen=127.0.0.1:{port}"))
                .args(smtpbox_argv())
                .args(args)
                .arg("-c")
                .arg(conf),
        );
        let listening = format!("Listening on 127.0.0.1:{port} ");
        let end = Instant::now() + upper(Duration::from_secs(5));
        while Instant::now() < end {
            if proc.log().contains(&listening) {
                return (proc, port);
            }
            if proc.guard.wait_for(Duration::ZERO).is_some() {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        failures.push_str(&proc.log());
    }
    panic!("systemd-socket-activate did not listen: {failures}");
}

fn deliver_ok(client: &mut Client) {
    let reply = client.deliver("a@b.org", &["x@example.com"], MESSAGE);
    assert!(reply.starts_with("250 2.0.0"), "end of data: {reply:?}");
}

/// Asserts `maildir` holds one message, [`MESSAGE`]; returns it as text.
fn stored_one(maildir: &Path) -> String {
    let stored = messages(maildir);
    assert_eq!(stored.len(), 1, "messages in {}", maildir.display());
    assert_eq!(body(&stored[0]), STORED);
    String::from_utf8_lossy(&stored[0]).into_owned()
}

/// A process killed with its descendants on drop, its stderr collected.
struct Proc {
    guard: Guard,
    log: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut guard = Guard::spawn(
            cmd.env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let stderr = guard.0.stderr.take().expect("stderr");
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Proc { guard, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, needle: &str) -> bool {
        wait_until(|| self.log().contains(needle))
    }

    /// The address from the "listening on ADDR" log line.
    fn listening(&self) -> SocketAddr {
        assert!(
            self.wait_log("listening on "),
            "not listening: {}",
            self.log()
        );
        let log = self.log();
        log.lines()
            .find_map(listening_on)
            .unwrap_or_else(|| panic!("no address in: {log}"))
    }
}

/// Writes a config for a Maildir in `dir`, plus `extra`.
fn config(dir: &TempDir, extra: &str) -> PathBuf {
    let path = dir.path().join("smtpbox.conf");
    let text = format!(
        "hostname = mx.test\ndomain = example.com\nmaildir = {}/Maildir\ntimeout = 5\n{extra}",
        dir.path().display()
    );
    fs::write(&path, text).expect("write config");
    path
}

/// Connects to 127.0.0.1:`port`, retrying for up to 5 s while the
/// activator starts.
fn connect_retry(port: u16, proc: &Proc) -> Client {
    let end = Instant::now() + upper(Duration::from_secs(5));
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => {
                bound_io(&stream, Duration::from_secs(10));
                return Client {
                    reader: BufReader::new(stream),
                };
            }
            Err(e) if Instant::now() > end => panic!("connect: {e}; log: {}", proc.log()),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// After the greeting, the whole of [`SESSION`] in one write (pipelined,
/// as the pipe test sends it); returns every byte received until the server
/// closed the connection.
fn session_over(stream: TcpStream) -> String {
    let mut client = Client {
        reader: BufReader::new(stream),
    };
    let mut all = client.reply();
    client.send(SESSION.as_bytes());
    all.push_str(&client.read_to_eof());
    all
}

/// `etc/smtpbox.init`, OpenWrt's procd script, run by busybox's `sh` (the
/// shell OpenWrt has; dash elsewhere) with procd's shell functions
/// recorded instead of sent to procd: no OpenWrt image is at hand, so
/// this checks the script's own logic (issue #23 item 3), not procd. A
/// config `--check` refuses fails `start` with the reason and no
/// instance; a good one gets the socket's directory made (OpenWrt has no
/// /run) and an instance that logs to syslog at each line's priority.
#[test]
fn openwrt_init_script_checks_first_makes_the_socket_dir_and_asks_for_syslog() {
    let shell = if have_tool("busybox", "busybox") {
        vec!["busybox", "sh"]
    } else {
        vec!["sh"]
    };
    let dir = TempDir::new("openwrt-init");
    let d = dir.path().display().to_string();
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/smtpbox.init");
    // One program for PROG (an emulator prefix under qemu runs).
    let prog = dir.path().join("smtpbox");
    fs::write(
        &prog,
        format!("#!/bin/sh\nexec {} \"$@\"\n", smtpbox_shell_words()),
    )
    .unwrap();
    fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let harness = dir.path().join("harness.sh");
    fs::write(
        &harness,
        format!(
            "calls={d}/calls\n\
             procd_open_instance() {{ echo open >> \"$calls\"; }}\n\
             procd_set_param() {{ echo \"param $*\" >> \"$calls\"; }}\n\
             procd_close_instance() {{ echo close >> \"$calls\"; }}\n\
             logger() {{ echo \"logger $*\" >> \"$calls\"; }}\n\
             . '{}'\n\
             PROG='{}'\n\
             CONF=\"$1\"\n\
             start_service\n",
            init.display(),
            prog.display()
        ),
    )
    .unwrap();
    let start = |conf: &Path| {
        let _ = fs::remove_file(dir.path().join("calls"));
        let mut cmd = Command::new(shell[0]);
        cmd.args(&shell[1..]).arg(&harness).arg(conf);
        let out = run_bounded(&mut cmd, b"", Duration::from_secs(30));
        let calls = fs::read_to_string(dir.path().join("calls")).unwrap_or_default();
        (out, calls)
    };

    // A typo: `start` fails at once, saying where, and starts nothing.
    let bad = dir.path().join("bad.conf");
    fs::write(&bad, format!("maildir = {d}/Maildir\nmaildir_kep = 5\n")).unwrap();
    let (out, calls) = start(&bad);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr_text());
    let said = out.stderr_text();
    assert!(said.contains(&format!("{}:2", bad.display())), "{said}");
    assert!(said.contains("not started"), "{said}");
    assert!(!calls.lines().any(|l| l == "open"), "{calls}");
    assert!(
        calls.contains("logger -t smtpbox -p mail.err not started"),
        "{calls}"
    );

    // A good config whose socket lives under a /var/run that has no
    // smtpbox/ yet: made (0755), checked, and one instance started.
    let socket = format!("{d}/var/run/smtpbox/smtpbox.sock");
    fs::create_dir_all(dir.path().join("var/run")).unwrap();
    let good = dir.path().join("good.conf");
    fs::write(
        &good,
        format!("maildir = {d}/Maildir\nlocal_socket = {socket}  \n"),
    )
    .unwrap();
    let (out, calls) = start(&good);
    assert!(out.status.success(), "{}", out.stderr_text());
    let made = fs::metadata(dir.path().join("var/run/smtpbox")).unwrap();
    assert!(made.is_dir());
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&made.permissions()) & 0o7777,
        0o755
    );
    let expected = [
        "open".to_string(),
        format!("param command {} -c {}", prog.display(), good.display()),
        "param respawn 3600 5 5".to_string(),
        "param env RUST_LOG=info SMTPBOX_LOG=syslog".to_string(),
        "param stderr 1".to_string(),
        format!("param file {}", good.display()),
        "close".to_string(),
    ];
    assert_eq!(calls.lines().collect::<Vec<_>>(), expected, "{calls}");
}
