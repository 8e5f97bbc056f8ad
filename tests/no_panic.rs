//! No argument list and no config file makes the binary panic (SPEC §2):
//! a few hundred random argument lists and mutated configs, each under
//! `--check` and in a short real start, end with 0, 1, 64 or 78, never
//! 101 (a panic) or a signal. A real start that gets as far as listening
//! is stopped at once. The seed is fixed; `SMTPBOX_SEED` picks another.

mod common;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{make_cert, TempDir, XorShift};

const CASES: usize = 400;

/// How a run ended.
#[derive(Debug)]
enum End {
    Exit(i32),
    Signal(i32),
    /// Got as far as "listening on"; then killed by the test.
    Served,
}

/// Runs the binary with `args` in `cwd` (stdin empty) to its end, or until
/// it logs "listening on" when `serve` is set.
fn run(args: &[OsString], cwd: &Path) -> (End, String) {
    let mut child = common::smtpbox()
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .env_remove("LISTEN_FDS")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn smtpbox");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut log = String::new();
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line).into_owned();
            if text.contains("listening on ") {
                let _ = tx.send(());
            }
            if log.len() < 4000 {
                log.push_str(&text);
            }
            line.clear();
        }
        log
    });
    let end = Instant::now() + Duration::from_secs(5);
    let outcome = loop {
        if rx.try_recv().is_ok() {
            let _ = child.kill();
            let _ = child.wait();
            break End::Served;
        }
        match child.try_wait() {
            Ok(Some(status)) => match (status.code(), status.signal()) {
                (Some(code), _) => break End::Exit(code),
                (_, Some(signal)) => break End::Signal(signal),
                _ => unreachable!(),
            },
            Ok(None) if Instant::now() < end => thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?}: neither exited nor listened within 5 s");
            }
        }
    };
    let log = reader.join().unwrap_or_default();
    (outcome, log)
}

fn assert_clean(args: &[OsString], end: &End, log: &str) {
    if let End::Signal(signal) = end {
        panic!("{args:?}: killed by signal {signal}:\n{log}");
    }
    let ok = matches!(end, End::Served | End::Exit(0 | 1 | 64 | 78));
    assert!(ok, "{args:?} ended {end:?}:\n{log}");
    assert!(!log.contains("panicked"), "{args:?} panicked:\n{log}");
}

/// Values that have broken parsers: bounds, overflows, odd bytes, files
/// that are not files.
fn values(dir: &Path) -> Vec<Vec<u8>> {
    let d = dir.display().to_string();
    let mut v: Vec<Vec<u8>> = [
        "0",
        "1",
        "86400",
        "86401",
        "604800",
        "604801",
        "1099511627775",
        "1099511627776",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999",
        "-1",
        "+5",
        "",
        " ",
        "=",
        "#",
        "/dev/zero",
        "/dev/null",
        "../../etc",
        "Maildir",
        "nobody",
        "no-such-user",
        "root",
        "[::1]:0/tls",
        "127.0.0.1:0/submission",
        "127.0.0.1:0",
        "127.0.0.1:99999",
        "[IPv6:::1]",
        "[127.0.0.1]",
        "a..b",
        "mx.test.",
        "normalize",
        "reject",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for path in ["fifo", "cert.crt", "cert.key", "users", "Maildir", "none/x"] {
        v.push(format!("{d}/{path}").into_bytes());
    }
    v.push(b"a\0b".to_vec());
    v.push(b"\xff\xfe".to_vec());
    v.push(b"mx\x1b[2Jevil".to_vec());
    v.push(vec![b'a'; 300]);
    v.push(vec![b'9'; 5000]);
    v.push("\u{10ff85}é".as_bytes().to_vec());
    v
}

fn pick<'a, T>(rng: &mut XorShift, items: &'a [T]) -> &'a T {
    &items[rng.range(0, items.len() as u64 - 1) as usize]
}

/// Loopback listeners and Maildirs inside the test's directory only: a
/// real start must not bind a public address or clean another tmp/.
fn safe_to_start(args: &[OsString], dir: &Path) -> bool {
    let dir = dir.as_os_str().as_bytes();
    let mut pairs = args.windows(2);
    pairs.all(|w| match w[0].as_bytes() {
        b"-l" | b"--listen" => {
            let value = w[1].as_bytes();
            value.starts_with(b"127.") || value.starts_with(b"[::1]")
        }
        // Relative Maildirs land in the test's directory (the cwd).
        b"-m" | b"--maildir" => {
            let value = w[1].as_bytes();
            (value.starts_with(dir) || !value.starts_with(b"/")) && !dotdot(value)
        }
        _ => true,
    }) && !args.iter().any(|a| {
        let a = a.as_bytes();
        (a.starts_with(b"--listen=") || a.starts_with(b"-l") && a.len() > 2)
            || a.starts_with(b"--maildir=")
            || a.starts_with(b"-m") && a.len() > 2
    })
}

#[test]
fn random_argument_lists_never_panic() {
    let dir = TempDir::new("nopanic-args");
    setup(dir.path());
    let conf = dir.path().join("base.conf");
    fs::write(&conf, base_config(dir.path())).unwrap();
    let mut rng = XorShift::fixed("random_argument_lists_never_panic", 0x5eed_13c0);
    let options = [
        "-c",
        "--config",
        "-l",
        "--listen",
        "-m",
        "--maildir",
        "-d",
        "--domain",
        "-H",
        "--hostname",
        "--tls-cert",
        "--tls-key",
        "--inetd",
        "-t",
        "--check",
        "-h",
        "-V",
        "--bogus",
        "-",
        "--",
        "-cx",
        "--config=",
        "-tm",
        "-x",
    ];
    let mut values = values(dir.path());
    values.push(conf.as_os_str().as_bytes().to_vec());
    let started = Instant::now();
    let (mut served, mut exits) = (0, [0usize; 4]);
    for _ in 0..CASES {
        let mut args: Vec<OsString> = Vec::new();
        // Half of the lists start from a config that works.
        if rng.range(0, 1) == 0 {
            args.extend(["-c".into(), conf.clone().into_os_string()]);
        }
        for _ in 0..rng.range(0, 6) {
            let mut token = if rng.range(0, 2) == 0 {
                pick(&mut rng, &values).clone()
            } else {
                pick(&mut rng, &options).as_bytes().to_vec()
            };
            // execve(2) cannot pass a NUL inside an argument.
            token.retain(|&b| b != 0);
            args.push(OsString::from_vec(token));
        }
        // Sendmail mode is another program with its own exit codes.
        if args.first().is_some_and(|a| a == "sendmail") {
            continue;
        }
        let mut check = vec![OsString::from("--check")];
        check.extend(args.iter().cloned());
        let (end, log) = run(&check, dir.path());
        assert_clean(&check, &end, &log);
        assert!(!matches!(end, End::Served), "{check:?}: --check served");
        if safe_to_start(&args, dir.path()) {
            let mut start = vec![OsString::from("-l"), OsString::from("127.0.0.1:0")];
            start.extend(args);
            let (end, log) = run(&start, dir.path());
            assert_clean(&start, &end, &log);
            match end {
                End::Served => served += 1,
                End::Exit(0) => exits[0] += 1,
                End::Exit(1) => exits[1] += 1,
                End::Exit(64) => exits[2] += 1,
                _ => exits[3] += 1,
            }
        }
    }
    eprintln!(
        "{CASES} argument lists in {:?}: real starts served {served}, exited 0/1/64/78 {exits:?}",
        started.elapsed()
    );
}

#[test]
fn mutated_configs_never_panic() {
    let dir = TempDir::new("nopanic-conf");
    setup(dir.path());
    let base = base_config(dir.path()).into_bytes();
    let values = values(dir.path());
    let keys = [
        "hostname",
        "listen",
        "domain",
        "maildir",
        "mailbox",
        "alias",
        "tls_cert",
        "tls_key",
        "users",
        "max_message_size",
        "max_recipients",
        "max_connections",
        "max_connections_per_ip",
        "timeout",
        "session_timeout",
        "max_errors",
        "maildir_quota",
        "bare_lf",
        "user",
        "bogus",
    ];
    let mut rng = XorShift::fixed("mutated_configs_never_panic", 0xc0f1_6013);
    let conf = dir.path().join("mutated.conf");
    let started = Instant::now();
    let (mut served, mut checked_ok) = (0, 0);
    for _ in 0..CASES {
        let mut text = base.clone();
        for _ in 0..rng.range(1, 4) {
            mutate(&mut rng, &mut text, &keys, &values);
        }
        fs::write(&conf, &text).unwrap();
        let check: Vec<OsString> = vec!["--check".into(), "-c".into(), conf.clone().into()];
        let (end, log) = run(&check, dir.path());
        assert_clean(&check, &end, &log);
        let checked = matches!(end, End::Exit(0));
        if checked {
            checked_ok += 1;
        }
        if config_safe_to_start(&text, dir.path()) {
            let start: Vec<OsString> = vec!["-c".into(), conf.clone().into()];
            let (end, log) = run(&start, dir.path());
            assert_clean(&start, &end, &log);
            served += matches!(end, End::Served) as usize;
            // What --check accepts starts and serves (SPEC §2).
            assert!(
                !checked || matches!(end, End::Served),
                "--check accepted {:?}, but the start ended {end:?}:\n{log}",
                String::from_utf8_lossy(&text)
            );
        }
    }
    eprintln!(
        "{CASES} mutated configs in {:?}: --check accepted {checked_ok}, real starts served {served}",
        started.elapsed()
    );
}

/// One mutation of a config file's bytes.
fn mutate(rng: &mut XorShift, text: &mut Vec<u8>, keys: &[&str], values: &[Vec<u8>]) {
    let len = text.len() as u64;
    let at = rng.range(0, len.saturating_sub(1)) as usize;
    match rng.range(0, 5) {
        // A byte flipped to anything (NUL, controls, non-UTF-8).
        0 if !text.is_empty() => text[at] = rng.next() as u8,
        // A range deleted.
        1 if !text.is_empty() => {
            let end = (at + rng.range(1, 40) as usize).min(text.len());
            text.drain(at..end);
        }
        // A value replaced.
        2 => {
            let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
            let i = rng.range(0, lines.len() as u64 - 1) as usize;
            let mut out = Vec::new();
            for (n, line) in lines.iter().enumerate() {
                if n == i {
                    let key = line.split(|&b| b == b'=').next().unwrap_or(b"");
                    out.extend_from_slice(key);
                    out.extend_from_slice(b"= ");
                    out.extend_from_slice(pick::<Vec<u8>>(rng, values));
                } else {
                    out.extend_from_slice(line);
                }
                out.push(b'\n');
            }
            *text = out;
        }
        // A line duplicated.
        3 => {
            let start = text[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let end = text[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(text.len(), |i| at + i);
            let line = text[start..end].to_vec();
            text.extend_from_slice(b"\n");
            text.extend_from_slice(&line);
            text.push(b'\n');
        }
        // A new line of a known key and an odd value.
        _ => {
            text.extend_from_slice(pick(rng, keys).as_bytes());
            text.extend_from_slice(b" = ");
            text.extend_from_slice(pick::<Vec<u8>>(rng, values));
            text.push(b'\n');
        }
    }
}

/// Every `listen` on loopback and every Maildir inside `dir` (a real start
/// cleans old files out of each Maildir's tmp/).
fn config_safe_to_start(text: &[u8], dir: &Path) -> bool {
    let dir = dir.as_os_str().as_bytes();
    text.split(|&b| b == b'\n').all(|line| {
        let Some(eq) = line.iter().position(|&b| b == b'=') else {
            return true;
        };
        let key = OsStr::from_bytes(&line[..eq]).to_string_lossy();
        let value = line[eq + 1..].trim_ascii();
        match key.trim() {
            "listen" => value.starts_with(b"127.") || value.starts_with(b"[::1]"),
            "maildir" => value.starts_with(dir) && !dotdot(value),
            "mailbox" => value.windows(dir.len()).any(|w| w == dir) && !dotdot(value),
            _ => true,
        }
    })
}

fn dotdot(path: &[u8]) -> bool {
    path.windows(2).any(|w| w == b"..")
}

/// A certificate pair, a users file, a FIFO and a Maildir in `dir`.
fn setup(dir: &Path) {
    make_cert(dir);
    let hash = common::output_bounded(
        Command::new("openssl").args(["passwd", "-6", "-salt", "nopanic", "secret"]),
        Duration::from_secs(30),
    );
    let hash = String::from_utf8(hash.stdout).unwrap();
    fs::write(dir.join("users"), format!("alice:{}\n", hash.trim())).unwrap();
    assert!(Command::new("mkfifo")
        .arg(dir.join("fifo"))
        .status()
        .unwrap()
        .success());
}

/// A config that uses every key, listening on an ephemeral loopback port.
fn base_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "# every key\nhostname = mx.test\nlisten = 127.0.0.1:0\nlisten = 127.0.0.1:0/tls\n\
         domain = example.com\nmaildir = {d}/Maildir\nmailbox = alice {d}/alice\n\
         alias = root alice\ntls_cert = {d}/cert.crt\ntls_key = {d}/cert.key\n\
         users = {d}/users\nmax_message_size = 1000000\nmax_recipients = 100\n\
         max_connections = 32\nmax_connections_per_ip = 8\ntimeout = 300\n\
         session_timeout = 1800\nmax_errors = 10\nmaildir_quota = 0\nbare_lf = normalize\n"
    )
}
