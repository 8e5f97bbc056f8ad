//! An idle server sleeps (issue #26): after a burst, its surplus accept
//! threads retire, and what is left — one thread per listener and the
//! local socket, with TLS, a users file and `notify` configured (its
//! notifier process too, after a storm's tail has run) — makes no system
//! call until a client comes. Measured by the threads' own counters: a
//! thread that makes a system call which waits, or one that times out,
//! is switched out and back in; a thread that spins burns CPU time.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Context switches (voluntary and not) of every thread of `pid`, and
/// its CPU time in clock ticks.
fn activity(pid: u32) -> (u64, u64) {
    let mut switches = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let status = fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if line.contains("ctxt_switches:") {
                switches += line
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            }
        }
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command's closing parenthesis; utime and stime are
    // fields 14 and 15 of the line.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    (switches, fields.iter().sum())
}

/// The server's threads named `session` (its accepting threads).
fn session_threads(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|comm| comm.trim() == "session")
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn an_idle_server_after_a_burst_makes_no_system_call() {
    let keys = TempDir::new("idle-keys");
    make_cert(keys.path());
    // A users file that is never used here: loaded and watched, as in
    // production.
    let users = keys.path().join("users");
    let hash = output_bounded(
        Command::new("openssl").args(["passwd", "-6", "secret"]),
        Duration::from_secs(30),
    );
    assert!(hash.status.success(), "openssl passwd");
    let hash = String::from_utf8_lossy(&hash.stdout).trim().to_string();
    fs::write(&users, format!("alice:{hash}\n")).unwrap();
    let server = Server::start(&format!(
        "tls_cert = {}\ntls_key = {}\nusers = {}\nlisten = 127.0.0.1:0/submission\n\
         local_socket = {{dir}}/run/smtpbox.sock\nmax_connections_per_ip = 64\n\
         notify = /bin/true\nnotify_rate = 1/1s",
        keys.path().join("cert.crt").display(),
        keys.path().join("cert.key").display(),
        users.display()
    ));
    let pid = server.pid();
    let socket = server.dir.path().join("run/smtpbox.sock");
    let doors = 3; // port 25's stand-in, submission, the local socket

    // A burst: 24 sessions open at once on the two TCP listeners (each
    // needs a thread of its own), then all closed.
    let submission = server.listener("submission");
    let mut open = Vec::new();
    for i in 0..24 {
        let mut c = Client::connect(if i % 2 == 0 { server.addr } else { submission });
        c.hello();
        open.push(c);
    }
    assert!(session_threads(pid) >= 24, "{}", session_threads(pid));
    // Three alerts: one notify run, two suppressed, and the tail run a
    // second later; then the notifier's timer has nothing left to wait for.
    for c in open.iter_mut().step_by(2).take(3) {
        let reply = c.deliver("a@b.org", &["root@example.com"], "Subject: idle\r\n\r\nx");
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    for mut c in open {
        c.expect("QUIT", "221");
    }
    let notifier = descendants(pid);
    assert_eq!(notifier.len(), 1, "the notifier child: {notifier:?}");
    assert!(
        server.wait_log("the tail of 2 suppressed notifications runs"),
        "{}",
        server.log()
    );

    // The surplus retires within a few seconds of its last accept.
    let end = Instant::now() + upper(Duration::from_secs(15));
    while session_threads(pid) > doors && Instant::now() < end {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(session_threads(pid), doors, "surplus threads still there");

    // Then nothing: no thread is woken, none runs. (The old accept loop
    // woke every thread every 2 s.)
    thread::sleep(Duration::from_millis(300));
    let before = (activity(pid), activity(notifier[0]));
    thread::sleep(Duration::from_secs(5));
    let after = (activity(pid), activity(notifier[0]));
    assert_eq!(
        before, after,
        "(context switches, CPU ticks) of the server and its notifier changed while idle"
    );

    // And no system call either, counted by strace attached for the idle
    // window: 5 s here, a minute under .ci/run (SMTPBOX_IDLE_SECONDS=60).
    // A first, short attach settles what attaching itself does: the first
    // ptrace stop of a thread parked on a futex the notifier's condvar
    // used a moment before can end that wait once (EAGAIN, restarted at
    // once), which strace counts. A second attach sees only real calls.
    let _ = traced_calls(&[pid, notifier[0]], Duration::from_secs(1));
    if let Some(calls) = traced_calls(&[pid, notifier[0]], idle_window()) {
        assert!(calls.is_empty(), "system calls while idle: {calls:?}");
    }

    // And it still serves, at once, on every door.
    for addr in [server.addr, submission] {
        let mut c = Client::connect(addr);
        c.hello();
        c.expect("QUIT", "221");
    }
    let stream = UnixStream::connect(&socket).expect("local socket");
    stream
        .set_read_timeout(Some(upper(Duration::from_secs(5))))
        .unwrap();
    let mut greeting = String::new();
    BufReader::new(stream).read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("220 "), "{greeting:?}");
}

/// How long the idle server is watched by strace.
fn idle_window() -> Duration {
    let seconds = std::env::var("SMTPBOX_IDLE_SECONDS").ok();
    Duration::from_secs(seconds.and_then(|s| s.parse().ok()).unwrap_or(5))
}

/// The lines of `strace -f -c`'s table (one per system call made) while
/// attached to `pid` for `window`; None when strace cannot attach (not
/// installed, or not root: ptrace of a process this test did not start
/// under it), which CI does not allow.
fn traced_calls(pids: &[u32], window: Duration) -> Option<Vec<String>> {
    if !have_tool("strace", "strace") || !root_or_skip("strace attaches to the server") {
        return None;
    }
    let out = TempDir::new("idle-strace");
    let table = out.path().join("table");
    let mut strace = Command::new("strace")
        .args(["-f", "-c", "-qq", "-o"])
        .arg(&table)
        .args(pids.iter().flat_map(|p| ["-p".to_string(), p.to_string()]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strace");
    // A moment to seize every thread, then the window.
    thread::sleep(Duration::from_millis(500) + window);
    // SIGINT: strace detaches and writes its table.
    let _ = Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status();
    let mut errors = String::new();
    let _ = strace.stderr.take().unwrap().read_to_string(&mut errors);
    let status = strace.wait().expect("strace");
    // It ends by the signal it was sent, or exits; never by failing to
    // attach.
    let interrupted = status.signal() == Some(2) || status.code() == Some(130);
    assert!(
        status.success() || interrupted,
        "strace: {status}: {errors}"
    );
    // "attach: ptrace(PTRACE_SEIZE, …): …" is a failure to attach; a
    // note such as "entering, ptrace_syscall_info.op == 2" (a thread
    // seized inside a system call) is not, and the table still counts.
    assert!(
        !errors.contains("attach:"),
        "strace did not attach: {errors}"
    );
    let text = fs::read_to_string(&table).unwrap_or_default();
    // "% time seconds usecs/call calls [errors] syscall" rows, without
    // the header, the rules and the total.
    Some(
        text.lines()
            .filter(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.get(3).is_some_and(|n| n.parse::<u64>().is_ok())
                    && cols.last() != Some(&"total")
            })
            .map(str::to_string)
            .collect(),
    )
}
