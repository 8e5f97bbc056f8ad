//! Notifications (SPEC §7a) through the real binary: the `notify` program
//! runs after the 250, once per Maildir, with the stored message on stdin
//! and a clean environment, outside the server's sandbox; bounded by its
//! timeout and by the rate, whose storm tail still runs; in standalone,
//! `--inetd` and sendmail modes; and `--check` names a bad program.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

/// Writes an executable hook script `body` (after `#!/bin/sh`) to `dir`.
fn hook(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("hook.sh");
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    // Run as root, smtpbox runs programs as nobody: out/ is theirs too.
    let out = dir.join("out");
    fs::create_dir_all(&out).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).unwrap();
    path
}

/// A hook that records its environment and stdin in `out/` (outside the
/// Maildir, where the sandboxed server could not write), says hello and
/// exits 3.
const RECORDING: &str = r#"out="$(dirname "$0")/out"
mkdir -p "$out"
env > "$out/$SMTPBOX_ID.$$.env.tmp"
cat > "$out/$SMTPBOX_ID.$$.msg"
grep NoNewPrivs /proc/self/status > "$out/$SMTPBOX_ID.$$.nnp" 2>/dev/null
mv "$out/$SMTPBOX_ID.$$.env.tmp" "$out/$SMTPBOX_ID.$$.env"
echo "hello from the hook"
printf 'second\tline\n'
exit 3"#;

/// Every run recorded in `out/`: (environment as `KEY=VALUE` lines, pid tag).
fn runs(out: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = fs::read_dir(out)
        .map(|d| {
            d.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let tag = name.strip_suffix(".env")?.to_string();
                Some((fs::read_to_string(out.join(&name)).ok()?, tag))
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn var<'a>(env: &'a str, key: &str) -> Option<&'a str> {
    env.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn wait_runs(out: &Path, n: usize) -> Vec<(String, String)> {
    wait_until(|| runs(out).len() >= n);
    runs(out)
}

#[test]
fn a_stored_message_runs_the_program_with_the_message_and_a_clean_environment() {
    let dir = TempDir::new("notify-env");
    let script = hook(dir.path(), RECORDING);
    let server = Server::start_with_env(
        &format!(
            "notify = {} --flag\nmailbox = alice {}/alice\n",
            script.display(),
            dir.path().display()
        ),
        &[("SECRET_OF_THE_SERVER", "x")],
    );
    let mut c = server.connect();
    c.hello();
    let reply = c.deliver(
        "ops@example.org",
        &[
            "root@example.com",
            "alice@example.com",
            "postmaster@example.com",
        ],
        "Subject: =?UTF-8?B?UkFJRCBkw6lncmFkw6k=?= on\r\n nas\x07\r\n\r\nmd0 degraded\r\n",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let id = reply.split_whitespace().last().unwrap().to_string();
    let out = dir.path().join("out");
    let runs = wait_runs(&out, 2);
    assert_eq!(
        runs.len(),
        2,
        "one run per Maildir: {runs:?}\n{}",
        server.log()
    );
    let maildir = server.maildir();
    for (env, tag) in &runs {
        assert_eq!(var(env, "SMTPBOX_ID"), Some(id.as_str()), "{env}");
        assert_eq!(var(env, "SMTPBOX_SENDER"), Some("ops@example.org"));
        assert_eq!(
            var(env, "SMTPBOX_SUBJECT"),
            Some("RAID d\u{e9}grad\u{e9} on nas")
        );
        assert_eq!(var(env, "SMTPBOX_SUPPRESSED"), Some("0"));
        assert!(var(env, "SMTPBOX_CLIENT")
            .unwrap()
            .starts_with("[127.0.0.1]:"));
        assert!(var(env, "PATH").is_some() && var(env, "LANG").is_some());
        // Nothing of the server's own environment.
        assert!(
            !env.contains("SECRET_OF_THE_SERVER") && !env.contains("RUST_LOG"),
            "{env}"
        );
        // stdin is the stored file, whole, from its first byte.
        let file = PathBuf::from(var(env, "SMTPBOX_FILE").unwrap());
        let stored = fs::read(&file).unwrap();
        assert_eq!(fs::read(out.join(format!("{tag}.msg"))).unwrap(), stored);
        assert!(stored.windows(12).any(|w| w == b"md0 degraded"));
        // The size is the log line's: the content, without the trace.
        let size = format!(" size={} ", var(env, "SMTPBOX_SIZE").unwrap());
        assert!(
            server
                .log()
                .lines()
                .any(|l| l.contains(&id) && l.contains(&size)),
            "{size}\n{}",
            server.log()
        );
        // Outside the sandbox: no no_new_privs, and it wrote out/.
        let nnp = fs::read_to_string(out.join(format!("{tag}.nnp"))).unwrap_or_default();
        assert_eq!(
            nnp.trim(),
            "NoNewPrivs:\t0",
            "the program inherited no_new_privs"
        );
        match var(env, "SMTPBOX_MAILDIR").unwrap() {
            m if Path::new(m) == maildir => {
                assert_eq!(
                    var(env, "SMTPBOX_RECIPIENTS"),
                    Some("root@example.com,postmaster@example.com")
                );
                assert!(file.starts_with(maildir.join("new")));
            }
            m => {
                assert_eq!(Path::new(m), dir.path().join("alice"));
                assert_eq!(var(env, "SMTPBOX_RECIPIENTS"), Some("alice@example.com"));
            }
        }
    }
    // Output and status are logged under the message ID.
    assert!(
        server.wait_log(&format!("notify {id}: second line")),
        "{}",
        server.log()
    );
    assert!(server.wait_log(&format!("notify {id}: hello from the hook")));
    assert!(
        server.wait_log(&format!("notify {id}: exit 3")),
        "{}",
        server.log()
    );
    // The server itself is still confined (SPEC §8): no_new_privs is set.
    let status = fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
}

#[test]
fn a_storm_runs_the_rate_and_then_one_tail_with_the_count() {
    let dir = TempDir::new("notify-rate");
    let script = hook(dir.path(), RECORDING);
    // A period long enough for the burst even under emulation.
    let period = (upper(Duration::from_secs(3)).as_secs()).max(3);
    let server = Server::start(&format!(
        "notify = {}\nnotify_rate = 2/{period}s\n",
        script.display()
    ));
    let mut c = server.connect();
    c.hello();
    let mut ids = Vec::new();
    for i in 0..6 {
        let reply = c.deliver(
            "a@b.org",
            &["root@example.com"],
            &format!("Subject: {i}\r\n\r\nx"),
        );
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
        ids.push(reply.split_whitespace().last().unwrap().to_string());
    }
    let out = dir.path().join("out");
    let first = wait_runs(&out, 2);
    assert_eq!(first.len(), 2);
    // The tail: once the window ends, the last one runs with the count.
    let end =
        std::time::Instant::now() + Duration::from_secs(period) + upper(Duration::from_secs(5));
    while runs(&out).len() < 3 && std::time::Instant::now() < end {
        thread::sleep(Duration::from_millis(50));
    }
    let all = runs(&out);
    assert_eq!(all.len(), 3, "{all:?}\n{}", server.log());
    let by_id = |id: &str| {
        all.iter()
            .find(|(e, _)| var(e, "SMTPBOX_ID") == Some(id))
            .map(|(e, _)| e.clone())
    };
    assert_eq!(
        var(&by_id(&ids[0]).unwrap(), "SMTPBOX_SUPPRESSED"),
        Some("0")
    );
    assert_eq!(
        var(&by_id(&ids[1]).unwrap(), "SMTPBOX_SUPPRESSED"),
        Some("0")
    );
    let tail = by_id(&ids[5]).expect("the storm's last message runs");
    assert_eq!(var(&tail, "SMTPBOX_SUPPRESSED"), Some("4"));
    assert_eq!(var(&tail, "SMTPBOX_SUBJECT"), Some("5"));
    assert!(server.log().contains("suppressed: over notify_rate"));
    // Nothing more runs, and every message is stored.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(runs(&out).len(), 3);
    assert_eq!(count(&server.maildir(), "new"), 6);
}

#[test]
fn a_program_past_its_timeout_is_killed_with_its_process_group() {
    let dir = TempDir::new("notify-timeout");
    let script = hook(
        dir.path(),
        r#"sleep 60 &
echo $! > "$(dirname "$0")/out/child.pid"
trap '' TERM
while :; do sleep 1; done"#,
    );
    let server = Server::start(&format!(
        "notify = {}\nnotify_timeout = 1\n",
        script.display()
    ));
    let mut c = server.connect();
    c.hello();
    let reply = c.deliver("a@b.org", &["root@example.com"], "Subject: t\r\n\r\nx");
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let id = reply.split_whitespace().last().unwrap().to_string();
    // The reply did not wait for the program, and the session goes on.
    c.expect("NOOP", "250");
    assert!(server.wait_log(&format!("notify {id}: still running after 1 s: SIGTERM")));
    let killed = format!("notify {id}: killed by signal 9");
    let end = std::time::Instant::now() + upper(Duration::from_secs(10));
    while !server.log().contains(&killed) && std::time::Instant::now() < end {
        thread::sleep(Duration::from_millis(50));
    }
    let log = server.log();
    assert!(
        log.contains(&format!("notify {id}: SIGKILL to its process group")),
        "{log}"
    );
    assert!(log.contains(&killed), "{log}");
    // The background child went with its group.
    let pid = fs::read_to_string(dir.path().join("out/child.pid")).unwrap();
    assert!(
        wait_until(|| !Path::new(&format!("/proc/{}", pid.trim())).exists()
            || fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .is_ok_and(|s| s.contains(") Z "))),
        "the program's child {pid} survived"
    );
    assert_eq!(count(&server.maildir(), "new"), 1, "the mail stays");
}

#[test]
fn a_missing_program_is_logged_and_the_mail_is_stored() {
    let dir = TempDir::new("notify-missing");
    let server = Server::start(&format!("notify = {}/nowhere\n", dir.path().display()));
    assert!(server.wait_log("nowhere: No such file"), "{}", server.log());
    let mut c = server.connect();
    c.hello();
    let reply = c.deliver("a@b.org", &["root@example.com"], "Subject: t\r\n\r\nx");
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let id = reply.split_whitespace().last().unwrap().to_string();
    assert!(
        server.wait_log(&format!("notify {id}: cannot run")),
        "{}",
        server.log()
    );
    assert_eq!(count(&server.maildir(), "new"), 1);
}

/// The config for the one-shot modes: a Maildir and the recording hook.
fn one_shot_config(dir: &Path, hook_body: &str) -> PathBuf {
    let script = hook(dir, hook_body);
    let conf = dir.join("smtpbox.conf");
    fs::write(
        &conf,
        format!(
            "hostname = mx.test\ndomain = example.com\nmaildir = {}/Maildir\nnotify = {}\n",
            dir.display(),
            script.display()
        ),
    )
    .unwrap();
    conf
}

#[test]
fn inetd_waits_for_its_programs_after_the_client_has_its_answer() {
    let dir = TempDir::new("notify-inetd");
    // The hook takes a moment, then records.
    let conf = one_shot_config(dir.path(), &format!("sleep 1\n{RECORDING}"));
    let session = "EHLO client.test\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<root@example.com>\r\n\
                   DATA\r\nSubject: inetd\r\n\r\nx\r\n.\r\nQUIT\r\n";
    let mut command = smtpbox();
    command
        .arg("--inetd")
        .arg("-c")
        .arg(&conf)
        .env("RUST_LOG", "info");
    let run = run_bounded(&mut command, session.as_bytes(), Duration::from_secs(20));
    assert!(
        run.stdout_text().contains("250 2.0.0"),
        "{}",
        run.stdout_text()
    );
    // When the process has exited, the program has run to its end.
    let all = runs(&dir.path().join("out"));
    assert_eq!(all.len(), 1, "{}", run.stderr_text());
    assert_eq!(var(&all[0].0, "SMTPBOX_SUBJECT"), Some("inetd"));
    assert!(
        run.stderr_text().contains("exit 3"),
        "{}",
        run.stderr_text()
    );
}

#[test]
fn sendmail_direct_delivery_notifies_and_does_not_wait() {
    let dir = TempDir::new("notify-sendmail");
    let conf = one_shot_config(dir.path(), &format!("sleep 1\n{RECORDING}"));
    let mut command = smtpbox();
    command.args(["sendmail", "-C"]).arg(&conf).arg("root");
    let started = std::time::Instant::now();
    let run = run_bounded(
        &mut command,
        b"Subject: cron\n\nout\n",
        Duration::from_secs(20),
    );
    assert!(run.status.success(), "{}", run.stderr_text());
    assert!(
        started.elapsed() < Duration::from_millis(900) || time_scale() > 1.0,
        "sendmail waited for the program: {:?}",
        started.elapsed()
    );
    let all = wait_runs(&dir.path().join("out"), 1);
    assert_eq!(all.len(), 1);
    let env = &all[0].0;
    assert_eq!(var(env, "SMTPBOX_SUBJECT"), Some("cron"));
    assert!(
        var(env, "SMTPBOX_CLIENT")
            .unwrap()
            .starts_with("local uid="),
        "{env}"
    );
    assert_eq!(var(env, "SMTPBOX_RECIPIENTS"), Some("root"));
}

#[test]
fn check_names_a_bad_notify_program_with_its_line() {
    let dir = TempDir::new("notify-check");
    let conf = dir.path().join("c.conf");
    let script = hook(dir.path(), "exit 0");
    let check = |text: &str| {
        fs::write(
            &conf,
            format!("maildir = {}/M\n{text}\n", dir.path().display()),
        )
        .unwrap();
        let mut command = smtpbox();
        command.arg("-c").arg(&conf).arg("--check");
        run_bounded(&mut command, b"", Duration::from_secs(10))
    };
    let ok = check(&format!("notify = {} a b", script.display()));
    assert!(ok.status.success(), "{}", ok.stderr_text());
    let missing = check(&format!("notify = {}/gone", dir.path().display()));
    assert_eq!(missing.status.code(), Some(1));
    let at = format!(
        "{}:2: `notify`: {}/gone: ",
        conf.display(),
        dir.path().display()
    );
    assert!(
        missing.stderr_text().contains(&at),
        "{}",
        missing.stderr_text()
    );
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let plain = check(&format!("notify = {}", script.display()));
    assert_eq!(plain.status.code(), Some(1));
    assert!(
        plain.stderr_text().contains("not executable"),
        "{}",
        plain.stderr_text()
    );
    for (text, why) in [
        ("notify = hook.sh", "is not an absolute path"),
        ("notify_timeout = 0", "bad `notify_timeout`"),
        ("notify_jobs = 65", "bad `notify_jobs`"),
        ("notify_rate = 10/1w", "bad `notify_rate`"),
        ("notify_rate = ten", "bad `notify_rate`"),
    ] {
        let bad = check(text);
        assert_eq!(bad.status.code(), Some(1), "{text}");
        let want = format!("{}:2: ", conf.display());
        let err = bad.stderr_text();
        assert!(err.contains(&want) && err.contains(why), "{text}: {err}");
    }
}

#[test]
fn the_notifier_service_runs_programs_for_servers_that_connect_to_it() {
    // As the shipped units: `smtpbox --notifier` on a socket systemd
    // passes (here systemd-socket-activate), the server told where it is
    // by SMTPBOX_NOTIFIER; the server forks no notifier of its own.
    if !have_tool("systemd-socket-activate", "systemd") {
        return;
    }
    let dir = TempDir::new("notify-service");
    let script = hook(dir.path(), RECORDING);
    let socket = dir.path().join("notify.sock");
    let conf = dir.path().join("notifier.conf");
    fs::write(
        &conf,
        format!(
            "maildir = {}/M\nnotify = {}\n",
            dir.path().display(),
            script.display()
        ),
    )
    .unwrap();
    let mut activator = std::process::Command::new("systemd-socket-activate");
    activator
        .arg("--seqpacket")
        .arg(format!("--listen={}", socket.display()))
        .args(smtpbox_argv())
        .arg("--notifier")
        .arg("-c")
        .arg(&conf)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _notifier = Guard::spawn(&mut activator);
    assert!(
        wait_until(|| socket.exists()),
        "the notifier socket never appeared"
    );
    let server = Server::start_with_env(
        &format!("notify = {}\n", script.display()),
        &[("SMTPBOX_NOTIFIER", socket.to_str().unwrap())],
    );
    let mut c = server.connect();
    c.hello();
    for subject in ["one", "two"] {
        let reply = c.deliver(
            "a@b.org",
            &["root@example.com"],
            &format!("Subject: {subject}\r\n\r\nx"),
        );
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    let all = wait_runs(&dir.path().join("out"), 2);
    let mut subjects: Vec<&str> = all
        .iter()
        .filter_map(|(e, _)| var(e, "SMTPBOX_SUBJECT"))
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["one", "two"], "{}", server.log());
    // The server has no child of its own: the notifier is the service.
    assert!(
        descendants(server.pid()).is_empty(),
        "{:?}",
        descendants(server.pid())
    );
}

#[test]
fn classic_inetd_closes_the_client_before_it_waits_for_its_programs() {
    // inetd, xinetd and busybox inetd put the connection on fds 0, 1 and 2:
    // the session's process and its notifier must let go of all three
    // before the program ends, while the process still waits for it.
    let dir = TempDir::new("notify-inetd-socket");
    // Long enough for the rest of the session, under emulation too.
    let conf = one_shot_config(
        dir.path(),
        &format!(
            "sleep {}\ntouch \"$(dirname \"$0\")/out/done\"",
            upper(Duration::from_secs(2)).as_secs()
        ),
    );
    let done = dir.path().join("out/done");
    // A temporary Command: it holds copies of the socket until dropped.
    let (mut child, stream) = spawn_on_socket(smtpbox().args(["--inetd", "-c"]).arg(&conf));
    let mut client = Client {
        reader: std::io::BufReader::new(stream),
    };
    assert!(client.reply().starts_with("220"));
    client.send(
        b"EHLO c.test\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<root@example.com>\r\nDATA\r\n\
          Subject: s\r\n\r\nx\r\n.\r\nQUIT\r\n",
    );
    let rest = client.read_to_eof();
    assert!(rest.contains("250 2.0.0") && rest.contains("221"), "{rest}");
    assert!(!done.exists(), "the client waited for the program");
    let status = child.exit_within(Duration::from_secs(20), "smtpbox --inetd");
    assert!(status.success(), "{status}");
    assert!(done.exists(), "the process ended before its program");
}

#[test]
fn at_most_notify_jobs_programs_run_at_once_and_a_full_backlog_suppresses() {
    let overlapping = r#"out="$(dirname "$0")/out"
mkdir "$out/running" 2>/dev/null || touch "$out/overlap"
sleep 0.3
rmdir "$out/running" 2>/dev/null
touch "$out/ran.$SMTPBOX_ID""#;
    let ran = |out: &Path| {
        fs::read_dir(out)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("ran.")
            })
            .count()
    };
    for (jobs, overlap) in [(1, false), (3, true)] {
        let dir = TempDir::new("notify-jobs");
        let script = hook(dir.path(), overlapping);
        let server = Server::start(&format!(
            "notify = {}\nnotify_jobs = {jobs}\nnotify_rate = 1000/1m\n",
            script.display()
        ));
        let mut c = server.connect();
        c.hello();
        for i in 0..4 {
            let reply = c.deliver(
                "a@b.org",
                &["root@example.com"],
                &format!("Subject: {i}\r\n\r\nx"),
            );
            assert!(reply.starts_with("250 2.0.0"), "{reply}");
        }
        let out = dir.path().join("out");
        let end = std::time::Instant::now() + upper(Duration::from_secs(10));
        while ran(&out) < 4 && std::time::Instant::now() < end {
            thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(ran(&out), 4, "jobs={jobs}: {}", server.log());
        assert_eq!(out.join("overlap").exists(), overlap, "jobs={jobs}");
    }

    // One slow program and more notices than the backlog holds: the rest
    // are counted as suppressed, never queued.
    let dir = TempDir::new("notify-backlog");
    let script = hook(dir.path(), "sleep 30");
    let server = Server::start(&format!(
        "notify = {}\nnotify_jobs = 1\nnotify_rate = 1000/1m\n",
        script.display()
    ));
    let mut c = server.connect();
    c.hello();
    for i in 0..70 {
        let reply = c.deliver(
            "a@b.org",
            &["root@example.com"],
            &format!("Subject: {i}\r\n\r\nx"),
        );
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    assert!(
        server.wait_log("suppressed: 64 notifications are waiting already"),
        "{}",
        server.log()
    );
    let suppressed = server
        .log()
        .matches("notifications are waiting already")
        .count();
    assert!(
        (4..=6).contains(&suppressed),
        "{suppressed} suppressed:\n{}",
        server.log()
    );
    assert_eq!(count(&server.maildir(), "new"), 70);
}

#[test]
fn sendmail_through_the_local_socket_is_notified_by_the_server() {
    let dir = TempDir::new("notify-local");
    let script = hook(dir.path(), RECORDING);
    let server = Server::start(&format!(
        "notify = {}\nlocal_socket = {{dir}}/run/smtpbox.sock\n",
        script.display()
    ));
    let conf = server.dir.path().join("smtpbox.conf");
    let mut command = smtpbox();
    command.args(["sendmail", "-C"]).arg(&conf).arg("root");
    let run = run_bounded(
        &mut command,
        b"Subject: via socket\n\nout\n",
        Duration::from_secs(20),
    );
    assert!(run.status.success(), "{}", run.stderr_text());
    let all = wait_runs(&dir.path().join("out"), 1);
    assert_eq!(all.len(), 1, "{}", server.log());
    let env = &all[0].0;
    assert_eq!(var(env, "SMTPBOX_SUBJECT"), Some("via socket"));
    // The server's session wrote it: the client is the local caller.
    assert!(
        var(env, "SMTPBOX_CLIENT")
            .unwrap()
            .starts_with("local uid=0"),
        "{env}"
    );
}

#[test]
fn sendmail_bs_sessions_notify_too() {
    let dir = TempDir::new("notify-bs");
    let conf = one_shot_config(dir.path(), RECORDING);
    let session = "EHLO c.test\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<root@example.com>\r\nDATA\r\n\
                   Subject: bs\r\n\r\nx\r\n.\r\nQUIT\r\n";
    let mut command = smtpbox();
    command.args(["sendmail", "-bs", "-C"]).arg(&conf);
    let run = run_bounded(&mut command, session.as_bytes(), Duration::from_secs(20));
    assert!(
        run.stdout_text().contains("250 2.0.0"),
        "{}",
        run.stdout_text()
    );
    let all = wait_runs(&dir.path().join("out"), 1);
    assert_eq!(all.len(), 1, "{}", run.stderr_text());
    assert_eq!(var(&all[0].0, "SMTPBOX_SUBJECT"), Some("bs"));
}

#[test]
fn a_program_reading_the_message_leaves_its_access_time_alone() {
    // On flash, an access-time update is one more inode write per message
    // (relatime updates the first read after a write): the descriptor the
    // program reads is opened with O_NOATIME.
    let dir = TempDir::new("notify-atime");
    let script = hook(
        dir.path(),
        r#"cat > /dev/null
touch "$(dirname "$0")/out/$SMTPBOX_ID""#,
    );
    let server = Server::start(&format!("notify = {}\n", script.display()));
    let mut c = server.connect();
    c.hello();
    let reply = c.deliver(
        "ops@example.org",
        &["root@example.com"],
        "Subject: s\r\n\r\nbody\r\n",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let id = reply.split_whitespace().last().unwrap().to_string();
    let ran = dir.path().join("out").join(&id);
    wait_until(|| ran.exists());
    assert!(ran.exists(), "{}", server.log());
    let new = server.maildir().join("new");
    let file = fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&id))
        .unwrap();
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(&file).unwrap();
    // Made, then written: atime is the making's, before the last write.
    assert!(
        (meta.atime(), meta.atime_nsec()) <= (meta.mtime(), meta.mtime_nsec()),
        "the program's read moved the access time: atime {}.{:09}, mtime {}.{:09}",
        meta.atime(),
        meta.atime_nsec(),
        meta.mtime(),
        meta.mtime_nsec()
    );
}
