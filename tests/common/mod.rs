//! Test harness: starts the real smtpbox binary on 127.0.0.1 with an
//! ephemeral port (`listen = 127.0.0.1:0`; the port is read from the
//! server's "listening on" log line) and talks SMTP to it over a socket.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The address in the server's `listening on ADDR (MODE)` log line, when
/// `line` is one.
pub fn listening_on(line: &str) -> Option<SocketAddr> {
    line.split("listening on ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The binary under test: `$SMTPBOX_BIN` when set (e.g. a cross-built
/// binary run under qemu-user), else cargo's build of this tree.
pub fn bin() -> PathBuf {
    match std::env::var_os("SMTPBOX_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_smtpbox")),
    }
}

/// `$SMTPBOX_RUNNER` split on whitespace: a command prefix put before every
/// start of the binary (e.g. `qemu-aarch64-static -0 smtpbox`). The word
/// after a `-0` is replaced, per start, by the argv[0] the binary would get
/// without a runner: the path it is started by, which for sendmail mode is
/// a symlink named `sendmail`. A runner must exec the binary in its own
/// process (same PID: `LISTEN_PID` and `/proc/PID` checks rely on it) and
/// pass stdin, stdout, stderr, the environment and inherited fds through.
fn runner() -> Vec<String> {
    std::env::var("SMTPBOX_RUNNER")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The whole argv that starts the binary under test as `program` (the
/// binary itself, or a symlink to it): the runner's words, then `program`.
pub fn smtpbox_argv_as(program: &Path) -> Vec<OsString> {
    let mut argv: Vec<OsString> = Vec::new();
    let mut words = runner().into_iter();
    while let Some(word) = words.next() {
        let argv0 = word == "-0";
        argv.push(word.into());
        if argv0 {
            let _ = words.next();
            argv.push(program.into());
        }
    }
    argv.push(program.into());
    argv
}

/// The argv that starts the binary under test, for a wrapper command to
/// run (`timeout 10 …`, `systemd-socket-activate … …`).
pub fn smtpbox_argv() -> Vec<OsString> {
    smtpbox_argv_as(&bin())
}

/// A command that starts the binary under test (through the runner).
pub fn smtpbox() -> Command {
    smtpbox_as(&bin())
}

/// A command that starts the binary under test by the path `program`, a
/// symlink to [`bin`] (sendmail mode goes by argv[0]).
pub fn smtpbox_as(program: &Path) -> Command {
    let argv = smtpbox_argv_as(program);
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}

/// A command that runs `wrapper` (program and its arguments) with the
/// binary under test's argv after it: `smtpbox_under(&["timeout", "10"])`.
pub fn smtpbox_under(wrapper: &[&str]) -> Command {
    let mut command = Command::new(wrapper[0]);
    command.args(&wrapper[1..]).args(smtpbox_argv());
    command
}

/// The binary under test's argv as single-quoted words for a `sh -c`
/// script (`exec {} -c …`).
pub fn smtpbox_shell_words() -> String {
    smtpbox_argv()
        .iter()
        .map(|w| format!("'{}'", w.to_string_lossy().replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `$SMTPBOX_TIME_SCALE` (default 1, never below 1): how much slower than
/// native the binary runs, e.g. 10 under qemu-user emulation.
pub fn time_scale() -> f64 {
    std::env::var("SMTPBOX_TIME_SCALE")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite())
        .map_or(1.0, |f| f.max(1.0))
}

/// An upper time bound (a wait, a "within" assertion) widened by
/// [`time_scale`]. Lower bounds, which prove that a limit is enforced, are
/// never scaled.
pub fn upper(bound: Duration) -> Duration {
    bound.mul_f64(time_scale())
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "smtpbox-test-{}-{}-{}",
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Room above a limit for a loaded machine (two cores shared with other
/// builds, a lost SYN's 1 s retransmit), before [`upper`] scales it.
pub const ROOM: Duration = Duration::from_secs(3);

/// Asserts that `what` took at least `at_least` (proof that a limit is
/// not enforced early: a server that drops a client at once fails) and at
/// most `limit` plus [`ROOM`], scaled by [`upper`].
pub fn assert_took(what: &str, elapsed: Duration, at_least: Duration, limit: Duration) {
    let at_most = upper(limit + ROOM);
    assert!(
        elapsed >= at_least && elapsed <= at_most,
        "{what}: took {elapsed:?}, expected {at_least:?}..={at_most:?}"
    );
}

/// Whether this test runs as root. Not root: under CI (`CI` set, as
/// `.ci/run` does) the test fails saying why it needs root; elsewhere it is
/// skipped with a note on stderr.
pub fn root_or_skip(why: &str) -> bool {
    if smtpbox::privilege::is_root() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI: not root: {why}");
    eprintln!("skipping: not root: {why}");
    false
}

/// Whether the program `name` is on PATH. Missing: under CI (`CI` set,
/// as `.ci/run` does) the test fails telling what to install; elsewhere
/// it is skipped with a note on stderr.
pub fn have_tool(name: &str, packages: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| dir.join(name).is_file()) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{name} not installed: apt-get install {packages}");
    }
    eprintln!("skipping: {name} not installed (apt-get install {packages})");
    false
}

/// A TCP port on 127.0.0.1 that was free a moment ago (another program
/// may take it before the caller binds it; tests retry nothing on that).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The config file the binary reads when it is run without `-c`.
pub const HOST_CONFIG: &str = "/etc/smtpbox/smtpbox.conf";

/// A command for a run of the binary without `-c`. When this host has a
/// config in /etc/smtpbox, the binary runs in a private mount namespace
/// with an empty tmpfs over that directory (root only: elsewhere the test
/// fails rather than read the host's config).
pub fn smtpbox_without_config() -> Command {
    let etc = Path::new(HOST_CONFIG).parent().expect("a directory");
    if !etc.exists() {
        return smtpbox();
    }
    assert!(
        smtpbox::privilege::is_root(),
        "{} exists and would be read: run this test as root (it hides the \
         directory in a private mount namespace) or without that file",
        etc.display()
    );
    let script = format!(
        "mount -t tmpfs -o size=16k,mode=0755 smtpbox-test '{}' && exec \"$@\"",
        etc.display()
    );
    let mut command = Command::new("unshare");
    command
        .args(["-m", "sh", "-c", &script, "sh"])
        .args(smtpbox_argv());
    command
}

// ---------------------------------------------------------------------------
// Child processes: killed with their descendants, waited for with a bound.

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
const SIGKILL: i32 = 9;
const SIGSTOP: i32 = 19;

/// The PIDs of the live descendants of `pid` (children, their children…),
/// from the parent field of each `/proc/PID/stat`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // "PID (comm) STATE PPID …": comm may hold spaces and parentheses.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            parents.push((child, ppid));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Kills `child` and every descendant it has (a wrapper's forked server,
/// e.g. `systemd-socket-activate --accept`'s or `timeout`'s) by PID, then
/// reaps `child`. The child is stopped first so that it forks no more.
pub fn kill_tree(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let pid = child.id();
    // SAFETY: kill(2) on our own child, which is not reaped yet.
    unsafe { kill(pid as i32, SIGSTOP) };
    for descendant in descendants(pid) {
        // SAFETY: kill(2) takes any PID; a gone one gives ESRCH.
        unsafe { kill(descendant as i32, SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A child process killed with its descendants on drop, a panic included.
pub struct Guard(pub Child);

impl Guard {
    pub fn spawn(cmd: &mut Command) -> Guard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
        Guard(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The exit status within `bound` (scaled by [`upper`]); None when the
    /// child is still running then.
    pub fn wait_for(&mut self, bound: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + upper(bound);
        loop {
            match self.0.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < end => thread::sleep(Duration::from_millis(5)),
                _ => return None,
            }
        }
    }

    /// The exit status within `bound`; fails the test (naming `what`)
    /// when the child is still running then.
    pub fn exit_within(&mut self, bound: Duration, what: &str) -> ExitStatus {
        self.wait_for(bound)
            .unwrap_or_else(|| panic!("{what}: still running after {:?}", upper(bound)))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        kill_tree(&mut self.0);
    }
}

/// Lines from a pipe (a child's stdout or stderr), read in a thread of
/// their own so that every wait has a bound: a pipe has no read timeout.
pub struct PipeLines {
    lines: std::sync::mpsc::Receiver<String>,
    seen: String,
}

impl PipeLines {
    pub fn new(pipe: impl Read + Send + 'static) -> PipeLines {
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(1..) if tx.send(line).is_ok() => {}
                    _ => return,
                }
            }
        });
        PipeLines {
            lines,
            seen: String::new(),
        }
    }

    /// The next line; None at EOF. Fails the test with everything read so
    /// far when no line comes within `bound` (scaled by [`upper`]).
    pub fn line(&mut self, bound: Duration) -> Option<String> {
        match self.lines.recv_timeout(upper(bound)) {
            Ok(line) => {
                self.seen.push_str(&line);
                Some(line)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
                "no line within {:?}; read so far: {:?}",
                upper(bound),
                self.seen
            ),
        }
    }

    /// One whole SMTP reply (all its lines); empty at EOF.
    pub fn reply(&mut self, bound: Duration) -> String {
        whole_reply(|| self.line(bound))
    }
}

/// Waits, bounded, for an already-spawned child to end, collecting what
/// is left of its stdout and stderr (those not taken yet); fails the test
/// with what they held when it does not end within `bound`.
pub fn finish_bounded(child: Child, bound: Duration) -> Finished {
    let mut guard = Guard(child);
    let end = Instant::now() + upper(bound);
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut out);
            }
            let _ = tx.send(out);
        });
        rx
    };
    let stdout = drain(
        guard
            .0
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        guard
            .0
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let Some(status) = guard.wait_for(end.saturating_duration_since(Instant::now())) else {
        kill_tree(&mut guard.0);
        let text = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
            let bytes = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        panic!(
            "child still running after {:?}\nstdout: {}\nstderr: {}",
            upper(bound),
            text(stdout),
            text(stderr)
        );
    };
    let left = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        let wait = end.saturating_duration_since(Instant::now());
        rx.recv_timeout(wait.max(Duration::from_millis(100)))
            .unwrap_or_else(|_| panic!("the child exited, but its output is still open"))
    };
    Finished {
        status,
        stdout: left(stdout),
        stderr: left(stderr),
    }
}

/// What a child run to its end gave.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `cmd` to its end with `input` on its stdin (then closed), its
/// stdout and stderr collected. Bounded by `bound` (scaled by [`upper`]):
/// past it the child and its descendants are killed and the test fails
/// with what they wrote so far.
pub fn run_bounded(cmd: &mut Command, input: &[u8], bound: Duration) -> Finished {
    let end = Instant::now() + upper(bound);
    let mut guard = Guard::spawn(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut stdin = guard.0.stdin.take().expect("stdin");
    let input = input.to_vec();
    // The binary may exit before reading everything (usage errors).
    thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let collect = |mut pipe: Box<dyn Read + Send>| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let _ = tx.send(());
        });
        (seen, rx)
    };
    let (stdout, out_done) = collect(Box::new(guard.0.stdout.take().expect("stdout")));
    let (stderr, err_done) = collect(Box::new(guard.0.stderr.take().expect("stderr")));
    let seen = |what: &str| {
        format!(
            "{:?} {what} after {:?}\nstdout: {}\nstderr: {}",
            cmd.get_program(),
            upper(bound),
            String::from_utf8_lossy(&stdout.lock().unwrap()),
            String::from_utf8_lossy(&stderr.lock().unwrap())
        )
    };
    let left = end.saturating_duration_since(Instant::now());
    let Some(status) = guard.wait_for(left) else {
        panic!("{}", seen("still running"));
    };
    for done in [out_done, err_done] {
        let left = end.saturating_duration_since(Instant::now());
        if done
            .recv_timeout(left.max(Duration::from_millis(100)))
            .is_err()
        {
            panic!("{}", seen("exited, but its output is still open"));
        }
    }
    let take = |v: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *v.lock().unwrap());
    Finished {
        status,
        stdout: take(&stdout),
        stderr: take(&stderr),
    }
}

/// [`run_bounded`] with nothing on stdin, as `Command::output` gives it.
pub fn output_bounded(cmd: &mut Command, bound: Duration) -> std::process::Output {
    let run = run_bounded(cmd, b"", bound);
    std::process::Output {
        status: run.status,
        stdout: run.stdout,
        stderr: run.stderr,
    }
}

/// A running smtpbox, killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts smtpbox with a config file holding `extra` plus a listen line
    /// on an ephemeral port, a default `maildir` in the temp dir (unless
    /// `extra` names one), hostname `mx.test` and domain `example.com`.
    /// `{dir}` in `extra` is replaced by the temp dir's path.
    pub fn start(extra: &str) -> Server {
        Server::start_with_args(extra, &[])
    }

    pub fn start_with_args(extra: &str, args: &[&str]) -> Server {
        Server::launch(extra, args, true)
    }

    /// Starts smtpbox with no default `maildir` line: only the mailboxes
    /// that `extra` names exist.
    pub fn start_no_default(extra: &str) -> Server {
        Server::launch(extra, &[], false)
    }

    /// As `start`, with more environment for the server (e.g. `RUST_LOG`,
    /// which is `debug` otherwise).
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Server {
        Server::launch_env(extra, &[], true, env)
    }

    fn launch(extra: &str, args: &[&str], default_maildir: bool) -> Server {
        Server::launch_env(extra, args, default_maildir, &[])
    }

    fn launch_env(
        extra: &str,
        args: &[&str],
        default_maildir: bool,
        env: &[(&str, &str)],
    ) -> Server {
        let dir = TempDir::new("srv");
        let extra = extra.replace("{dir}", &dir.path().display().to_string());
        let mut conf =
            String::from("listen = 127.0.0.1:0\nhostname = mx.test\ndomain = example.com\n");
        let names_maildir = extra
            .lines()
            .any(|l| l.split('=').next().map(str::trim) == Some("maildir"));
        if default_maildir && !names_maildir {
            conf.push_str(&format!("maildir = {}/Maildir\n", dir.path().display()));
        }
        conf.push_str(&extra);
        conf.push('\n');
        let conf_path = dir.path().join("smtpbox.conf");
        fs::write(&conf_path, conf).expect("write config");
        let mut command = smtpbox();
        command
            .arg("-c")
            .arg(&conf_path)
            .args(args)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied());
        Server::spawn(&mut command, dir)
    }

    /// Starts `command` (a start of the binary that logs "listening on
    /// ADDR") and waits for that line; `dir` goes with the server.
    pub fn spawn(command: &mut Command, dir: TempDir) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start smtpbox");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            let mut tx = Some(tx);
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if let Some(a) = listening_on(&line) {
                    if let Some(t) = tx.take() {
                        let _ = t.send(a);
                    }
                }
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let addr = match rx.recv_timeout(upper(Duration::from_secs(10))) {
            Ok(a) => a,
            Err(_) => {
                kill_tree(&mut child);
                panic!("smtpbox did not start; log:\n{}", log.lock().unwrap());
            }
        };
        Server {
            child,
            addr,
            dir,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The default Maildir.
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("Maildir")
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (logs arrive asynchronously).
    pub fn wait_log(&self, needle: &str) -> bool {
        wait_until(|| self.log().contains(needle))
    }

    /// The address of the listener logged as `listening on ADDR (MODE)`
    /// (`smtp`, `submission`, `tls`); listeners beyond the default plain
    /// one come from `listen = 127.0.0.1:0/MODE` lines in `extra`.
    pub fn listener(&self, mode: &str) -> SocketAddr {
        let tail = format!(" ({mode})");
        assert!(self.wait_log(&tail), "no {mode} listener:\n{}", self.log());
        self.log()
            .lines()
            .filter(|l| l.ends_with(&tail))
            .find_map(listening_on)
            .unwrap_or_else(|| panic!("no {mode} listener:\n{}", self.log()))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        kill_tree(&mut self.child);
    }
}

/// Contents of the files in `maildir/new`, sorted by name.
pub fn messages(maildir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = match fs::read_dir(maildir.join("new")) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => return Vec::new(),
    };
    names.sort();
    names
        .iter()
        .map(|p| fs::read(p).expect("read message"))
        .collect()
}

/// Number of entries in `maildir/SUB` (0 when missing).
pub fn count(maildir: &Path, sub: &str) -> usize {
    fs::read_dir(maildir.join(sub))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// The message after smtpbox's own trace headers: `Return-Path:` and the
/// first `Received:` (folded over several lines).
pub fn body(message: &[u8]) -> &[u8] {
    let mut rest = message;
    for name in [&b"Return-Path:"[..], b"Received:"] {
        assert!(
            rest.starts_with(name),
            "missing {}",
            String::from_utf8_lossy(name)
        );
        rest = after_header(rest);
    }
    rest
}

/// Skips one header field with its continuation lines.
fn after_header(mut rest: &[u8]) -> &[u8] {
    loop {
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => rest = &rest[i + 2..],
            None => return &[],
        }
        if !(rest.starts_with(b" ") || rest.starts_with(b"\t")) {
            return rest;
        }
    }
}

/// An SMTP client over a plain socket.
pub struct Client {
    pub reader: BufReader<TcpStream>,
}

/// A connection to `addr` within 5 s (scaled): a server whose listen
/// queue is full and never drained would leave connect(2) retrying its
/// SYN for two minutes.
pub fn connect_bounded(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, upper(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Read and write timeouts of `bound` (scaled by [`upper`]) on `stream`:
/// a server that stops reading or replying fails the test, never hangs it.
pub fn bound_io(stream: &TcpStream, bound: Duration) {
    let bound = Some(upper(bound));
    stream.set_read_timeout(bound).expect("read timeout");
    stream.set_write_timeout(bound).expect("write timeout");
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = connect_bounded(addr);
        bound_io(&stream, Duration::from_secs(10));
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// Writes raw bytes in one write; a write the server does not take
    /// within the write timeout fails the test.
    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.reader.get_mut().write_all(bytes) {
            panic!("send of {} bytes: {e}", bytes.len());
        }
    }

    /// Reads one whole reply (all its lines); empty string when the
    /// server closed the connection (EOF or a reset). A read timeout fails
    /// the test with what was seen: a hung server is no closed one.
    pub fn reply(&mut self) -> String {
        whole_reply(|| socket_line(&mut self.reader))
    }

    /// Sends `line` + CRLF and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends a command and asserts the reply starts with `expect`
    /// (e.g. "250 2.1.0"); returns the reply.
    pub fn expect(&mut self, line: &str, expect: &str) -> String {
        let reply = self.cmd(line);
        assert!(
            reply.starts_with(expect),
            "{line:?}: expected {expect:?}, got {reply:?}"
        );
        reply
    }

    /// Reads the greeting and sends EHLO.
    pub fn hello(&mut self) {
        let greeting = self.reply();
        assert!(greeting.starts_with("220 "), "greeting {greeting:?}");
        self.expect("EHLO client.test", "250");
    }

    /// A whole transaction; returns the final reply to the data.
    pub fn deliver(&mut self, from: &str, to: &[&str], content: &str) -> String {
        self.expect(&format!("MAIL FROM:<{from}>"), "250 2.1.0");
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), "250 2.1.5");
        }
        self.expect("DATA", "354");
        self.send(content.as_bytes());
        self.send(b"\r\n.\r\n");
        self.reply()
    }

    /// Everything the server sends until it closes the connection; fails
    /// the test with what was seen when that does not happen within the
    /// read timeout.
    pub fn read_to_eof(&mut self) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) if is_timeout(&e) => panic!(
                    "the server did not close the connection ({e}); got {:?}",
                    String::from_utf8_lossy(&seen)
                ),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break, // a reset is a close too
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    /// True when the server has closed the connection (EOF or a reset
    /// within 5 s), whatever it sent before; what it sent is on stderr
    /// when it did not close.
    pub fn closed(&mut self) -> bool {
        self.reader
            .get_ref()
            .set_read_timeout(Some(upper(Duration::from_secs(5))))
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(e) => {
                    let seen = String::from_utf8_lossy(&seen);
                    eprintln!("connection not closed ({e}); received {seen:?}");
                    return false;
                }
            }
        }
    }
}

/// Whether a read error is a read timeout (`SO_RCVTIMEO`).
/// One whole SMTP reply, read line by line from `next_line` (each line
/// with its ending): lines until one whose fourth byte is not `-` (RFC
/// 5321 4.2.1). What was read; empty when the input ended first. Every
/// reply reader of the suites is this one over its own line source.
pub fn whole_reply(mut next_line: impl FnMut() -> Option<String>) -> String {
    let mut all = String::new();
    while let Some(line) = next_line() {
        let last = line.as_bytes().get(3) != Some(&b'-');
        all.push_str(&line);
        if last {
            break;
        }
    }
    all
}

/// The next line from a client socket: None when the server closed the
/// connection (EOF or a reset); a read timeout fails the test with what
/// was read of the line: a hung server is no closed one.
pub fn socket_line(reader: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => None,
        Err(e) if is_timeout(&e) => {
            panic!("no whole reply within the read timeout ({e}); got {line:?}")
        }
        Err(_) => None,
        Ok(_) => Some(line),
    }
}

/// Waits, bounded (5 s, scaled by [`upper`]), until `ready` says so;
/// false when it never did.
pub fn wait_until(mut ready: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + upper(Duration::from_secs(5));
    while Instant::now() < end {
        if ready() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    ready()
}

/// What a run of the binary in sendmail mode (or any run of it that
/// must end by itself) gave.
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` (the binary as `sendmail`, `mailq`, `newaliases`, or
/// `smtpbox sendmail …`; the caller sets its environment) with `input` on
/// stdin; fails the test when it has not ended within `bound`.
pub fn run_sendmail(command: &mut Command, input: &[u8], bound: Duration) -> Outcome {
    let done = run_bounded(command, input, bound);
    Outcome {
        code: done.status.code().unwrap_or(-1),
        stdout: done.stdout_text(),
        stderr: done.stderr_text(),
    }
}

pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A numeric field of `/proc/PID/status` (`VmRSS` in kB, `Threads`); 0 when
/// the process or the field is gone.
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of process `pid` (entries of `/proc/PID/fd`).
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |rd| rd.count())
}

impl Server {
    /// Asserts the server still serves a fresh client (greeting, EHLO,
    /// NOOP, QUIT) and that no session thread has panicked so far.
    pub fn assert_healthy(&self) {
        let mut c = self.connect();
        c.hello();
        c.expect("NOOP", "250 2.0.0");
        c.expect("QUIT", "221 2.0.0");
        let log = self.log();
        assert!(!log.contains("panicked"), "a session panicked:\n{log}");
    }

    /// The ending of every test of input that must store nothing: nothing
    /// in `new/`, `tmp/` empty once the session is over (its spool goes
    /// when the session ends, after the client saw its reply or closed),
    /// and the server still serves ([`Server::assert_healthy`]).
    pub fn assert_nothing_stored_and_healthy(&self) {
        let maildir = self.maildir();
        assert_eq!(count(&maildir, "new"), 0, "nothing stored");
        wait_until(|| count(&maildir, "tmp") == 0);
        assert_eq!(count(&maildir, "tmp"), 0, "tmp/ keeps a spool file");
        self.assert_healthy();
    }
}

/// A xorshift64 generator for randomized tests; seeded from the clock and
/// printed (or from `SMTPBOX_SEED`), so a failing run can be replayed.
pub struct XorShift(u64);

impl XorShift {
    pub fn seeded(test: &str) -> XorShift {
        let seed = std::env::var("SMTPBOX_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
            | 1;
        eprintln!("{test}: seed {seed} (replay with SMTPBOX_SEED={seed})");
        XorShift(seed)
    }

    /// A generator with a fixed seed (unless `SMTPBOX_SEED` is set): the
    /// same run every time.
    pub fn fixed(test: &str, seed: u64) -> XorShift {
        if std::env::var_os("SMTPBOX_SEED").is_some() {
            return XorShift::seeded(test);
        }
        XorShift(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// A real TLS ClientHello (rustls, TLS 1.2 and 1.3), as any TLS client
/// sends it first.
pub fn client_hello() -> Vec<u8> {
    use rustls::crypto::ring;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(Arc::new(config), name).expect("client");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("write hello");
    }
    assert_eq!(hello.first(), Some(&0x16), "a handshake record");
    hello
}

/// `dir/cert.crt` and `dir/cert.key`: a self-signed P-256 certificate for
/// localhost and 127.0.0.1 (not a CA), made with the openssl CLI.
pub fn make_cert(dir: &Path) {
    let out = output_bounded(
        Command::new("openssl")
            .current_dir(dir)
            .args(["req", "-x509", "-nodes", "-days", "30", "-newkey", "ec"])
            .args([
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-subj",
                "/CN=localhost",
            ])
            .args(["-keyout", "cert.key", "-out", "cert.crt"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` inetd-style: a fresh loopback connection on its stdin, stdout
/// and stderr. Returns the child and the client's end.
pub fn spawn_on_socket(cmd: &mut Command) -> (Guard, TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (conn, _) = listener.accept().expect("accept");
    let fd = |s: &TcpStream| Stdio::from(std::os::fd::OwnedFd::from(s.try_clone().expect("dup")));
    let child = Guard::spawn(cmd.stdin(fd(&conn)).stdout(fd(&conn)).stderr(fd(&conn)));
    bound_io(&client, Duration::from_secs(10));
    (child, client)
}
