//! Local submission (SPEC §3 `local_socket`, §5, §8) through the real
//! binary: the server on its Unix socket (the caller named by SO_PEERCRED,
//! trusted like loopback, never relaying), sendmail mode submitting there
//! as another user, its fallbacks and its exit statuses; and how local
//! facts are written: an IPv4 client on a dual-stack socket, the host name
//! with /proc/sys hidden (ProcSubset=pid).

mod common;
use common::*;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The config lines that give the harness's server a local socket in a
/// directory it has to make.
const LOCAL: &str = "local_socket = {dir}/run/smtpbox.sock";

fn socket_path(server: &Server) -> PathBuf {
    server.dir.path().join("run/smtpbox.sock")
}

fn conf_path(server: &Server) -> PathBuf {
    server.dir.path().join("smtpbox.conf")
}

/// Connects to the local socket, waiting for the server to make it.
fn connect_local(path: &Path) -> BufReader<UnixStream> {
    let end = Instant::now() + upper(Duration::from_secs(5));
    loop {
        match UnixStream::connect(path) {
            Ok(s) => {
                s.set_read_timeout(Some(upper(Duration::from_secs(5))))
                    .unwrap();
                return BufReader::new(s);
            }
            Err(e) if Instant::now() > end => panic!("{}: {e}", path.display()),
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Reads one (possibly multi-line) reply; returns its last line.
fn reply(r: &mut BufReader<UnixStream>) -> String {
    let all = whole_reply(|| socket_line(r));
    all.split_inclusive('\n')
        .next_back()
        .unwrap_or("")
        .to_string()
}

/// Runs `smtpbox sendmail -C CONF ARGS` with `input`, as `uid` when given.
fn sendmail(conf: &Path, args: &[&str], input: &[u8], uid: Option<u32>) -> Outcome {
    let mut command = smtpbox();
    command
        .arg("sendmail")
        .arg("-C")
        .arg(conf)
        .args(args)
        .env_remove("SMTPBOX_CONFIG")
        .env("RUST_LOG", "warn");
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    run_sendmail(&mut command, input, Duration::from_secs(20))
}

/// True when the test may act as another user; when it may not, says so,
/// and under CI (`CI` set) fails instead of skipping.
fn can_switch_users(test: &str) -> bool {
    if smtpbox::privilege::is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: needs root (CommandExt::uid) and CI is set"
    );
    eprintln!("skipping {test}: not root");
    false
}

fn nobody() -> smtpbox::privilege::Account {
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    smtpbox::privilege::find_account(&passwd, "nobody").expect("nobody in /etc/passwd")
}

/// The Received header (first line) of a stored message.
fn received(message: &str) -> &str {
    let start = message.find("Received: ").expect("Received");
    let end = message[start..].find("\r\n").unwrap() + start;
    &message[start..end]
}

#[test]
fn local_socket_is_made_0666_in_a_0755_directory_and_names_the_caller() {
    let server = Server::start(LOCAL);
    let path = socket_path(&server);
    let mut client = connect_local(&path);
    let dir_mode = fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o7777;
    let sock_mode = fs::symlink_metadata(&path).unwrap().mode() & 0o7777;
    assert_eq!((dir_mode, sock_mode), (0o755, 0o666));
    // Trusted like loopback: a whole pipelined transaction sent before the
    // greeting and before 354 is served, not refused with 554 5.5.0.
    client
        .get_mut()
        .write_all(
            b"EHLO client.box\r\nMAIL FROM:<cron@mx.test>\r\nRCPT TO:<x@elsewhere.example>\r\n\
              RCPT TO:<root@example.com>\r\nDATA\r\nSubject: local\r\n\r\nhi\r\n.\r\nQUIT\r\n",
        )
        .unwrap();
    assert!(reply(&mut client).starts_with("220 mx.test ESMTP"));
    assert!(reply(&mut client).starts_with("250 HELP"));
    assert!(reply(&mut client).starts_with("250 2.1.0"));
    let relay = reply(&mut client);
    assert!(relay.starts_with("550 5.7.1"), "never relays: {relay}");
    assert!(reply(&mut client).starts_with("250 2.1.5"));
    assert!(reply(&mut client).starts_with("354"));
    assert!(reply(&mut client).starts_with("250 2.0.0 Ok: queued as "));
    assert!(reply(&mut client).starts_with("221 2.0.0"));
    let uid = smtpbox::privilege::effective_uid();
    let user = smtpbox::privilege::login_name(uid);
    let stored = messages(&server.maildir());
    assert_eq!(stored.len(), 1);
    let message = String::from_utf8(stored[0].clone()).unwrap();
    let trace = received(&message);
    assert!(
        trace.starts_with(&format!(
            "Received: from client.box (uid {uid} user {user}) by mx.test (smtpbox) with ESMTP id "
        )),
        "{trace}"
    );
    assert!(
        server.wait_log(&format!(" proto=ESMTP client=local uid={uid} user={user}")),
        "{}",
        server.log()
    );
    assert!(server.wait_log(&format!("local submission socket {}", path.display())));
}

/// The point of the local socket: any local user's mail lands, written by
/// the server's account, in a Maildir that user could not write.
#[test]
fn sendmail_as_nobody_submits_through_the_server() {
    if !can_switch_users("sendmail_as_nobody_submits_through_the_server") {
        return;
    }
    let nobody = nobody();
    let server = Server::start(LOCAL);
    let maildir = server.maildir();
    for sub in ["", "tmp", "new", "cur"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
        fs::set_permissions(maildir.join(sub), fs::Permissions::from_mode(0o700)).unwrap();
    }
    connect_local(&socket_path(&server)); // The server is up.
                                          // Directly, nobody cannot write there: the mail would be lost.
    let direct = server.dir.path().join("direct.conf");
    let text = fs::read_to_string(conf_path(&server)).unwrap();
    fs::write(&direct, text.replace("local_socket", "# local_socket")).unwrap();
    let out = sendmail(&direct, &["root"], b"Subject: x\n\ny\n", Some(nobody.uid));
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
    let out = sendmail(
        &conf_path(&server),
        &["root"],
        b"Subject: from a crontab\n\nbackup done\n",
        Some(nobody.uid),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    let entries: Vec<_> = fs::read_dir(maildir.join("new")).unwrap().collect();
    assert_eq!(entries.len(), 1);
    let meta = entries[0].as_ref().unwrap().metadata().unwrap();
    assert_eq!(
        meta.uid(),
        smtpbox::privilege::effective_uid(),
        "the server's file"
    );
    let message = String::from_utf8(messages(&maildir)[0].clone()).unwrap();
    assert!(
        message.starts_with("Return-Path: <nobody@mx.test>\r\n"),
        "{message}"
    );
    let trace = received(&message);
    let expected = format!(
        "(uid {} user nobody) by mx.test (smtpbox) with ESMTP",
        nobody.uid
    );
    assert!(trace.contains(&expected), "{trace}");
    assert!(
        message.contains("\r\nFrom: nobody@mx.test\r\n"),
        "{message}"
    );
    assert!(message.ends_with("\r\n\r\nbackup done\r\n"), "{message}");
    assert!(
        server.wait_log(&format!("client=local uid={} user=nobody", nobody.uid)),
        "{}",
        server.log()
    );
}

/// Replies on the socket map to the exit statuses direct delivery gives for
/// the same cause: 67 naming the recipient, 65 too big or a loop, 75 full.
#[test]
fn socket_replies_map_to_the_exit_statuses_of_direct_delivery() {
    let extra =
        format!("{LOCAL}\nmax_message_size = 2000\nmaildir_quota = 1\nmailbox = full {{dir}}/full");
    let server = Server::start(&extra);
    connect_local(&socket_path(&server));
    let full = server.dir.path().join("full");
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(full.join(sub)).unwrap();
    }
    fs::write(full.join("new/old"), "x").unwrap();
    // The same config without the socket: direct delivery.
    let direct = server.dir.path().join("direct.conf");
    let text = fs::read_to_string(conf_path(&server)).unwrap();
    fs::write(&direct, text.replace("local_socket", "# local_socket")).unwrap();
    let looped = "Received: x\n".repeat(101) + "\nloop\n";
    let big = format!("Subject: big\n\n{}\n", "y".repeat(3000));
    let cases: [(&[&str], &[u8], i32); 4] = [
        (
            &["root", "nobody@elsewhere.example"],
            b"Subject: a\n\nb\n",
            67,
        ),
        (&["root"], big.as_bytes(), 65),
        (&["root"], looped.as_bytes(), 65),
        (&["full"], b"Subject: a\n\nb\n", 75),
    ];
    for (args, input, code) in cases {
        let via_socket = sendmail(&conf_path(&server), args, input, None);
        assert_eq!(
            via_socket.code, code,
            "socket {args:?}: {}",
            via_socket.stderr
        );
        let directly = sendmail(&direct, args, input, None);
        assert_eq!(directly.code, code, "direct {args:?}: {}", directly.stderr);
        if code == 67 {
            assert!(
                via_socket
                    .stderr
                    .contains("<nobody@elsewhere.example>: 550 5.7.1"),
                "{}",
                via_socket.stderr
            );
        }
    }
    assert_eq!(count(&server.maildir(), "new"), 0, "nothing delivered");
    // Each went through the server: its log has the sessions.
    assert!(server.wait_log("rejected: 554 5.4.6"), "{}", server.log());
    assert!(
        server.log().contains("rejected: 552 5.3.4"),
        "{}",
        server.log()
    );
    assert!(
        server.log().contains("rejected: 452 4.2.2"),
        "{}",
        server.log()
    );
}

/// The server takes at most max_recipients per message; a message for more
/// is delivered directly, whole, rather than to some of them.
#[test]
fn more_recipients_than_the_server_takes_are_delivered_directly() {
    let server = Server::start(&format!(
        "{LOCAL}\nmax_recipients = 2\nmailbox = a {{dir}}/a\nmailbox = b {{dir}}/b\nmailbox = c {{dir}}/c"
    ));
    connect_local(&socket_path(&server));
    let out = sendmail(
        &conf_path(&server),
        &["a", "b", "c"],
        b"Subject: 3\n\nx\n",
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    for user in ["a", "b", "c"] {
        let maildir = server.dir.path().join(user);
        let message = String::from_utf8(messages(&maildir)[0].clone()).unwrap();
        assert!(
            message.contains(" (smtpbox) via sendmail id "),
            "{user}: {message}"
        );
    }
    let out = sendmail(&conf_path(&server), &["a", "b"], b"Subject: 2\n\nx\n", None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        server.wait_log("client=local uid="),
        "two go through the server"
    );
}

#[test]
fn without_a_server_sendmail_delivers_directly_and_without_either_exits_75() {
    let dir = TempDir::new("local-fallback");
    let d = dir.path().display();
    let conf = dir.path().join("smtpbox.conf");
    let socket = dir.path().join("run/smtpbox.sock");
    fs::write(
        &conf,
        format!("hostname = mx.test\nmaildir = {d}/Maildir\nlocal_socket = {d}/run/smtpbox.sock\n"),
    )
    .unwrap();
    // No socket at all: delivered directly, silently (cron mails stderr).
    let out = sendmail(&conf, &["root"], b"Subject: a\n\nb\n", None);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{}", out.stderr);
    let message = String::from_utf8(messages(&dir.path().join("Maildir"))[0].clone()).unwrap();
    assert!(message.contains(" (smtpbox) via sendmail id "), "{message}");
    // A stale socket (nobody listening) is the same.
    fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(UnixListener::bind(&socket).unwrap());
    let out = sendmail(&conf, &["root"], b"Subject: a\n\nb\n", None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&dir.path().join("Maildir"), "new"), 2);
    // Neither works: the Maildir is under a file. One line, both causes.
    fs::write(dir.path().join("file"), "").unwrap();
    fs::write(
        &conf,
        format!(
            "hostname = mx.test\nmaildir = {d}/file/Maildir\nlocal_socket = {d}/run/smtpbox.sock\n"
        ),
    )
    .unwrap();
    let out = sendmail(&conf, &["root"], b"Subject: a\n\nb\n", None);
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    let line = out.stderr.trim_end();
    assert!(
        line.contains(&format!("local socket {}: ", socket.display())),
        "{line}"
    );
    assert!(line.contains("Connection refused"), "{line}");
    assert!(line.contains("; direct delivery: "), "{line}");
    assert!(line.contains("Not a directory"), "{line}");
}

/// A server that greets, takes the envelope and DATA, then drops the
/// connection mid-message: EX_TEMPFAIL. One that greets with 421 (too
/// busy) is not answering: direct delivery.
#[test]
fn connection_lost_mid_way_is_75_and_a_busy_greeting_falls_back() {
    let dir = TempDir::new("local-fake");
    let d = dir.path().display();
    let conf = dir.path().join("smtpbox.conf");
    let socket = dir.path().join("fake.sock");
    fs::write(
        &conf,
        format!(
            "hostname = mx.test\nmaildir = {d}/Maildir\nlocal_socket = {}\n",
            socket.display()
        ),
    )
    .unwrap();
    let listener = UnixListener::bind(&socket).unwrap();
    let fake = thread::spawn(move || {
        // First: a server that dies after 354.
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut r = BufReader::new(stream);
        r.get_mut().write_all(b"220 fake ESMTP\r\n").unwrap();
        for answer in ["250 fake", "250 2.1.0 Ok", "250 2.1.5 Ok", "354 go ahead"] {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            r.get_mut()
                .write_all(format!("{answer}\r\n").as_bytes())
                .unwrap();
        }
        let mut some = [0u8; 16];
        let _ = r.read(&mut some);
        drop(r);
        // Then: a server too busy to serve.
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .write_all(b"421 4.3.2 Too many connections\r\n")
            .unwrap();
    });
    let out = sendmail(&conf, &["root"], b"Subject: a\n\nb\n", None);
    assert_eq!(out.code, 75, "{}", out.stderr);
    assert!(out.stderr.contains("local socket"), "{}", out.stderr);
    // The sandbox may have made the Maildir; nothing may be in it.
    for sub in ["tmp", "new", "cur"] {
        assert_eq!(
            count(&dir.path().join("Maildir"), sub),
            0,
            "no direct delivery after DATA ({sub}/)"
        );
    }
    let out = sendmail(&conf, &["root"], b"Subject: a\n\nb\n", None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&dir.path().join("Maildir"), "new"), 1);
    fake.join().unwrap();
}

/// Starts the server with `conf` and returns its exit status and stderr;
/// fails the test if it is still running after 5 s.
fn start_fails(conf: &Path) -> (i32, String) {
    let mut command = smtpbox();
    command.arg("-c").arg(conf);
    let done = run_bounded(&mut command, b"", Duration::from_secs(5));
    (done.status.code().unwrap_or(-1), done.stderr_text())
}

#[test]
fn a_socket_path_it_cannot_own_is_a_config_error_and_stale_sockets_go() {
    let dir = TempDir::new("local-paths");
    let d = dir.path().display();
    let conf = dir.path().join("smtpbox.conf");
    let write = |socket: &str| {
        let text = format!(
            "listen = 127.0.0.1:0\nhostname = mx.test\nmaildir = {d}/Maildir\nlocal_socket = {socket}\n"
        );
        fs::write(&conf, text).unwrap();
    };
    // A file in the way that is not a socket is never removed.
    fs::write(dir.path().join("file.sock"), "keep").unwrap();
    write(&format!("{d}/file.sock"));
    let (code, err) = start_fails(&conf);
    assert_eq!(code, 78, "EX_CONFIG: {err}");
    assert!(err.contains("exists and is not a socket"), "{err}");
    assert_eq!(
        fs::read_to_string(dir.path().join("file.sock")).unwrap(),
        "keep"
    );
    let check = output_bounded(
        smtpbox().arg("--check").arg("-c").arg(&conf),
        Duration::from_secs(5),
    );
    assert_eq!(check.status.code(), Some(1), "--check finds it too");
    assert!(String::from_utf8_lossy(&check.stderr).contains("not a socket"));
    // A directory whose parent is missing cannot be made.
    write(&format!("{d}/no/such/smtpbox.sock"));
    let (code, err) = start_fails(&conf);
    assert!(code == 78 && err.contains("is missing"), "{err}");
    // A directory others may write to.
    let open = dir.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    write(&format!("{}/smtpbox.sock", open.display()));
    let (code, err) = start_fails(&conf);
    assert!(code == 78 && err.contains("writable by others"), "{err}");
    // A directory of another user (as root: chown it to nobody).
    if smtpbox::privilege::is_root() {
        let theirs = dir.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(nobody().uid), None).unwrap();
        write(&format!("{}/smtpbox.sock", theirs.display()));
        let (code, err) = start_fails(&conf);
        assert!(
            code == 78 && err.contains("a directory of its own"),
            "{err}"
        );
    }
    // A stale socket is replaced, and served.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let server = Server::start(&format!("local_socket = {}", stale.display()));
    let mut client = connect_local(&stale);
    assert!(reply(&mut client).starts_with("220 mx.test"));
    assert!(server.wait_log("removed stale socket"), "{}", server.log());
    // And a live server's socket is not taken over.
    write(&stale.display().to_string());
    let (code, err) = start_fails(&conf);
    assert!(
        code == 78 && err.contains("a running server answers there"),
        "{err}"
    );
}

/// systemd passes the local socket as the fd named `local` (SPEC §8).
#[test]
fn socket_activation_fd_named_local_is_the_local_socket() {
    let Ok(status) = Command::new("systemd-socket-activate")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-socket-activate missing under CI"
        );
        eprintln!("skipping: no systemd-socket-activate");
        return;
    };
    assert!(status.success());
    let dir = TempDir::new("local-sa");
    let d = dir.path().display();
    let conf = dir.path().join("smtpbox.conf");
    fs::write(
        &conf,
        format!("hostname = mx.test\ndomain = example.com\nmaildir = {d}/Maildir\nlocal_socket = {d}/unused.sock\n"),
    )
    .unwrap();
    let socket = dir.path().join("passed.sock");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen_tcp = format!("--listen=127.0.0.1:{port}");
    let listen_local = format!("--listen={}", socket.display());
    let mut child = Guard::spawn(
        smtpbox_under(&[
            "systemd-socket-activate",
            &listen_tcp,
            &listen_local,
            "--fdname=smtp:local",
        ])
        .arg("-c")
        .arg(&conf)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped()),
    );
    // systemd-socket-activate starts smtpbox on the first connection.
    let mut client = connect_local(&socket);
    client
        .get_mut()
        .write_all(
            b"EHLO box\r\nMAIL FROM:<a@mx.test>\r\n\
        RCPT TO:<root@example.com>\r\nDATA\r\nSubject: sa\r\n\r\nhi\r\n.\r\nQUIT\r\n",
        )
        .unwrap();
    let mut all = String::new();
    let _ = client.read_to_string(&mut all);
    // The TCP socket passed next to it serves too.
    let mut tcp = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    assert!(tcp.reply().starts_with("220 mx.test"));
    kill_tree(&mut child.0);
    let mut log = String::new();
    let _ = child
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log);
    assert!(all.contains("250 2.0.0 Ok: queued as "), "{all}\n{log}");
    let uid = smtpbox::privilege::effective_uid();
    assert!(log.contains(&format!("client=local uid={uid} ")), "{log}");
    assert!(
        log.contains(&format!("socket-activated {} (local)", socket.display())),
        "{log}"
    );
    assert!(
        !dir.path().join("unused.sock").exists(),
        "the passed socket, not a new one"
    );
}

/// systemd's Accept=yes on the local socket: `--inetd` with the Unix
/// connection on stdin and stdout names the caller by SO_PEERCRED too.
#[test]
fn inetd_on_a_unix_socket_names_the_caller() {
    let dir = TempDir::new("local-inetd");
    let d = dir.path().display();
    let conf = dir.path().join("smtpbox.conf");
    fs::write(
        &conf,
        format!("hostname = mx.test\nmaildir = {d}/Maildir\n"),
    )
    .unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let stdin = std::os::fd::OwnedFd::from(theirs.try_clone().unwrap());
    let stdout = std::os::fd::OwnedFd::from(theirs);
    let mut child = Guard::spawn(
        smtpbox()
            .arg("--inetd")
            .arg("-c")
            .arg(&conf)
            .env("RUST_LOG", "off")
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::null()),
    );
    ours.set_read_timeout(Some(upper(Duration::from_secs(5))))
        .unwrap();
    let mut client = BufReader::new(ours);
    client
        .get_mut()
        .write_all(b"HELO box\r\nMAIL FROM:<>\r\nRCPT TO:<root>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n")
        .unwrap();
    let mut all = String::new();
    let _ = client.read_to_string(&mut all);
    assert!(all.contains("250 2.0.0 Ok: queued as "), "{all}");
    child.exit_within(Duration::from_secs(5), "smtpbox --inetd");
    let message = String::from_utf8(messages(&dir.path().join("Maildir"))[0].clone()).unwrap();
    let uid = smtpbox::privilege::effective_uid();
    let user = smtpbox::privilege::login_name(uid);
    let expected =
        format!("Received: from box (uid {uid} user {user}) by mx.test (smtpbox) with SMTP");
    assert!(received(&message).starts_with(&expected), "{message}");
}

/// An IPv4 client on a dual-stack [::] listener is `[127.0.0.1]`, not
/// `[::ffff:127.0.0.1]`, in Received and in the log (SPEC §6), and an
/// address literal of that IPv4 address is local.
#[test]
fn ipv4_client_on_a_dual_stack_socket_is_written_as_ipv4() {
    let server = Server::start("listen = [::]:0");
    assert!(server.wait_log("listening on [::]:"), "{}", server.log());
    let log = server.log();
    let port: u16 = log
        .split("listening on [::]:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("the [::] port");
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        eprintln!("skipping: [::] is IPv6-only here (net.ipv6.bindv6only)");
        return;
    };
    drop(stream);
    let mut client = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    client.hello();
    let reply = client.deliver(
        "a@b.org",
        &["root@[127.0.0.1]"],
        "Subject: v4\r\n\r\nhi\r\n",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    client.expect("QUIT", "221");
    let message = String::from_utf8(messages(&server.maildir())[0].clone()).unwrap();
    assert!(
        received(&message).contains(" ([127.0.0.1]) by mx.test"),
        "{message}"
    );
    assert!(server.wait_log(" client=[127.0.0.1]:"), "{}", server.log());
    assert!(!server.log().contains("::ffff:"), "{}", server.log());
}

/// ProcSubset=pid hides /proc/sys/kernel/hostname; the banner still names
/// the host (uname(2)). Simulated with a private mount namespace in which
/// an empty tmpfs covers /proc/sys.
#[test]
fn host_name_is_right_with_proc_sys_hidden() {
    let node = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let node = node.trim();
    let Ok(status) = Command::new("unshare")
        .arg("--help")
        .stdout(Stdio::null())
        .status()
    else {
        eprintln!("skipping: no unshare");
        return;
    };
    assert!(status.success());
    if !smtpbox::privilege::is_root() {
        eprintln!("skipping: unshare --mount needs root");
        return;
    }
    // A config of our own, without `hostname`: never the host's.
    let dir = TempDir::new("local-uname");
    let conf = dir.path().join("smtpbox.conf");
    fs::write(
        &conf,
        format!("maildir = {}/Maildir\n", dir.path().display()),
    )
    .unwrap();
    let script = format!(
        "mount -t tmpfs none /proc/sys && test ! -e /proc/sys/kernel/hostname && \
         exec {} --inetd -c '{}'",
        smtpbox_shell_words(),
        conf.display()
    );
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--", "sh", "-c", &script])
        .env("RUST_LOG", "off");
    // A message too: its file name in new/ carries the host name as well.
    let session = b"HELO x\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<root>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n";
    let out = run_bounded(&mut command, session, Duration::from_secs(10));
    let banner = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{banner} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        banner.starts_with(&format!("220 {node} ESMTP smtpbox\r\n")),
        "{banner}"
    );
    assert_ne!(node, "localhost", "the test needs a real host name");
    let names: Vec<String> = fs::read_dir(dir.path().join("Maildir/new"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{banner}");
    assert!(
        names[0].contains(&format!(".{node},S=")),
        "{names:?}: the Maildir file name has the host name"
    );
}
