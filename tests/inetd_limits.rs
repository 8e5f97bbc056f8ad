//! The connection limits of `--inetd` under systemd's Accept=yes (SPEC §3,
//! §5, §8): every session is a process of its own, and they count each
//! other in the unit's RuntimeDirectory=, so a client over
//! `max_connections_per_ip` or `max_connections` reads `421 4.3.2` as it
//! would from the resident server. Each session here is a real
//! `smtpbox --inetd` on an accepted loopback socket, as systemd starts it.

mod common;
use common::*;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Starts one `smtpbox --inetd` on a fresh connection to `listener`, with
/// `run` as its RuntimeDirectory; returns the process and the client.
fn session(listener: &TcpListener, conf: &Path, run: &Path) -> (Child, Client) {
    let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (conn, _) = listener.accept().expect("accept");
    let fd = |s: &TcpStream| Stdio::from(OwnedFd::from(s.try_clone().expect("dup")));
    let child = smtpbox()
        .args(["--inetd", "-c"])
        .arg(conf)
        .env("RUNTIME_DIRECTORY", run)
        .stdin(fd(&conn))
        .stdout(fd(&conn))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start smtpbox --inetd");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let client = Client {
        reader: std::io::BufReader::new(stream),
    };
    (child, client)
}

/// Waits (bounded) for a process to end; its exit status and stderr.
fn finish(mut child: Child) -> (i32, String) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return (status.code().unwrap_or(-1), err);
        }
        if Instant::now() > end {
            kill_tree(&mut child);
            panic!("smtpbox --inetd did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn setup(dir: &TempDir, limits: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let conf = dir.path().join("smtpbox.conf");
    let run = dir.path().join("run");
    fs::create_dir(&run).expect("run dir");
    fs::write(
        &conf,
        format!(
            "hostname = mx.test\ndomain = example.com\nmaildir = {}/Maildir\n{limits}",
            dir.path().display()
        ),
    )
    .expect("config");
    (conf, run)
}

#[test]
fn the_client_over_max_connections_per_ip_reads_421_and_a_freed_slot_serves() {
    let dir = TempDir::new("inetd-per-ip");
    let (conf, run) = setup(&dir, "max_connections_per_ip = 2\n");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");

    let (first, mut c1) = session(&listener, &conf, &run);
    assert!(c1.reply().starts_with("220 mx.test"));
    let (second, mut c2) = session(&listener, &conf, &run);
    assert!(c2.reply().starts_with("220 mx.test"));

    let (third, mut c3) = session(&listener, &conf, &run);
    assert_eq!(
        c3.reply(),
        "421 4.3.2 Too many connections, try again later\r\n"
    );
    assert!(c3.closed());
    let (code, log) = finish(third);
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("too many connections (from this address), refusing [127.0.0.1]"),
        "{log}"
    );

    // The first session delivers and ends: its slot serves the next one.
    c1.expect("EHLO client.test", "250");
    assert!(c1
        .deliver("a@b.org", &["x@example.com"], "Subject: t\r\n\r\nhi")
        .starts_with("250 2.0.0"));
    c1.expect("QUIT", "221 2.0.0");
    finish(first);
    let (fourth, mut c4) = session(&listener, &conf, &run);
    assert!(c4.reply().starts_with("220 mx.test"));
    c4.expect("QUIT", "221 2.0.0");
    finish(fourth);

    // A killed session (as systemd's stop does) frees its slot too.
    let mut second = second;
    kill_tree(&mut second);
    drop(c2);
    let (fifth, mut c5) = session(&listener, &conf, &run);
    assert!(c5.reply().starts_with("220 mx.test"));
    let (sixth, mut c6) = session(&listener, &conf, &run);
    assert!(c6.reply().starts_with("220 mx.test"));
    c5.expect("QUIT", "221 2.0.0");
    c6.expect("QUIT", "221 2.0.0");
    finish(fifth);
    finish(sixth);
    assert_eq!(count(&dir.path().join("Maildir"), "new"), 1);
    // Ended sessions leave no slot files (the killed one's may remain).
    let left = fs::read_dir(&run).expect("run dir").count();
    assert!(left <= 2, "{left} slot files left");
}

#[test]
fn the_client_over_max_connections_reads_421() {
    let dir = TempDir::new("inetd-total");
    let (conf, run) = setup(&dir, "max_connections = 1\n");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (first, mut c1) = session(&listener, &conf, &run);
    assert!(c1.reply().starts_with("220 mx.test"));
    let (second, mut c2) = session(&listener, &conf, &run);
    assert_eq!(
        c2.reply(),
        "421 4.3.2 Too many connections, try again later\r\n"
    );
    let (_, log) = finish(second);
    assert!(log.contains("too many connections (in all)"), "{log}");
    c1.expect("QUIT", "221 2.0.0");
    finish(first);
}

#[test]
fn without_a_runtime_directory_inetd_counts_nothing() {
    // Classic inetd: its own limits apply; smtpbox serves every session.
    let dir = TempDir::new("inetd-none");
    let (conf, run) = setup(&dir, "max_connections_per_ip = 1\n");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let start = |listener: &TcpListener| {
        let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (conn, _) = listener.accept().expect("accept");
        let fd = |s: &TcpStream| Stdio::from(OwnedFd::from(s.try_clone().expect("dup")));
        let child = smtpbox()
            .args(["--inetd", "-c"])
            .arg(&conf)
            .env_remove("RUNTIME_DIRECTORY")
            .stdin(fd(&conn))
            .stdout(fd(&conn))
            .stderr(Stdio::null())
            .spawn()
            .expect("start");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        (
            child,
            Client {
                reader: std::io::BufReader::new(stream),
            },
        )
    };
    let (a, mut ca) = start(&listener);
    let (b, mut cb) = start(&listener);
    assert!(ca.reply().starts_with("220 mx.test"));
    assert!(cb.reply().starts_with("220 mx.test"));
    ca.expect("QUIT", "221 2.0.0");
    cb.expect("QUIT", "221 2.0.0");
    finish(a);
    finish(b);
    assert_eq!(fs::read_dir(&run).expect("run").count(), 0);
}
