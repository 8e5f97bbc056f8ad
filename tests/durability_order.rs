//! The 250 promise under concurrency (SPEC §7, issue #15 item 1), seen from
//! outside the process: the real binary runs under `strace -f` while 16
//! sessions deliver at once, and for every message the trace must show, in
//! this order: the spool file's fsync, its link into `new/`, an fsync of
//! that `new/` which *started* after the link returned (group commit may
//! share it with other messages, never with one linked later), and only then
//! the `250 2.0.0 Ok: queued as ID` write.
//!
//! strace prints each system call where it enters and, when another thread
//! runs in between, its end on a `<... resumed>` line: the line order is the
//! order of those events, and a traced thread is stopped at each of them, so
//! an fsync whose entry is printed after a link's return began after it.
//!
//! Needs `strace` (Debian package `strace`): skipped with a message when it
//! is missing, unless `CI` is set, when the test fails.

mod common;
use common::*;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SESSIONS: usize = 16;
const PER_SESSION: usize = 12;

fn strace() -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .map(|d| PathBuf::from(d).join("strace"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is missing (Debian package strace); required under CI"
        );
        eprintln!("skipped: strace is not installed");
    }
    found
}

/// smtpbox started by `strace -f`; both go on drop.
struct Traced {
    strace: Child,
    addr: SocketAddr,
}

impl Traced {
    /// `extra`: more config lines.
    fn start(strace: &PathBuf, dir: &TempDir, out: &PathBuf, extra: &str) -> Traced {
        let conf = dir.path().join("smtpbox.conf");
        let maildir = dir.path().join("Maildir");
        let text = format!(
            "listen = 127.0.0.1:0\nhostname = mx.test\ndomain = example.com\n\
             max_connections = 200\nmax_connections_per_ip = 200\nmaildir = {}\n{extra}",
            maildir.display()
        );
        fs::write(&conf, text).unwrap();
        let mut strace = Command::new(strace)
            .args(["-f", "-qq", "-s", "200", "-o"])
            .arg(out)
            .args([
                "-e",
                "trace=?open,openat,close,fsync,fdatasync,linkat,write,writev,sendto,sendmsg,mkdir,mkdirat",
            ])
            .args(smtpbox_argv())
            .arg("-c")
            .arg(&conf)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start strace");
        let stderr = strace.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = listening_on(&line) {
                    if let Some(t) = tx.take() {
                        let _ = t.send(a);
                    }
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(20)) else {
            // Dropped: the server (if any) and strace are killed.
            let unused = SocketAddr::from(([127, 0, 0, 1], 0));
            drop(Traced {
                strace,
                addr: unused,
            });
            panic!("smtpbox under strace did not start");
        };
        Traced { strace, addr }
    }

    /// The server's PID: strace's child.
    fn tracee(&self) -> Option<String> {
        let id = self.strace.id();
        let children = fs::read_to_string(format!("/proc/{id}/task/{id}/children")).ok()?;
        children.split_whitespace().next().map(str::to_string)
    }

    /// Stops the server (strace then exits) and waits for the trace.
    fn stop(mut self) {
        if let Some(pid) = self.tracee() {
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        }
        for _ in 0..200 {
            if matches!(self.strace.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        // Killing strace alone would leave the server running, detached.
        if let Some(pid) = self.tracee() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        let _ = self.strace.kill();
        let _ = self.strace.wait();
    }
}

/// One traced call: thread, name, first argument, the whole text, and the
/// line indices where it entered and returned (with its result).
#[derive(Debug)]
struct Call {
    pid: u32,
    name: String,
    text: String,
    entered: usize,
    returned: usize,
    result: Option<i64>,
}

/// Joins `<unfinished ...>` and `<... resumed>` halves into calls.
fn parse(trace: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut open: HashMap<u32, Call> = HashMap::new();
    for (i, line) in trace.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let (Ok(pid), rest) = (pid.parse::<u32>(), rest.trim_start()) else {
            continue;
        };
        let result = |s: &str| {
            s.rsplit_once(" = ")
                .and_then(|(_, r)| r.split_whitespace().next()?.parse::<i64>().ok())
        };
        if let Some(resumed) = rest.strip_prefix("<... ") {
            if let Some(mut call) = open.remove(&pid) {
                call.text.push_str(resumed);
                call.returned = i;
                call.result = result(resumed);
                calls.push(call);
            }
            continue;
        }
        let Some((name, _)) = rest.split_once('(') else {
            continue;
        };
        let mut call = Call {
            pid,
            name: name.to_string(),
            text: rest.to_string(),
            entered: i,
            returned: i,
            result: None,
        };
        if rest.ends_with("<unfinished ...>") {
            open.insert(pid, call);
        } else {
            call.result = result(rest);
            calls.push(call);
        }
    }
    calls.sort_by_key(|c| c.entered);
    calls
}

fn first_arg(call: &Call) -> Option<i64> {
    let args = call.text.split_once('(')?.1;
    args.split([',', ')', ' ']).next()?.parse().ok()
}

/// open(2) or openat(2): musl's std opens directories with open where the
/// architecture has it (x86_64), glibc's always with openat. strace's `?`
/// skips open where it does not exist (aarch64).
fn is_open(call: &Call) -> bool {
    call.name == "open" || call.name == "openat"
}

/// The first quoted argument of a call: the path of mkdir, mkdirat, open
/// and openat.
fn quoted(call: &Call) -> Option<String> {
    let args = call.text.split_once('(')?.1;
    let start = args.find('"')? + 1;
    let len = args[start..].find('"')?;
    Some(args[start..start + len].to_string())
}

/// linkat(AT_FDCWD, "/proc/self/fd/N", D, "NAME", AT_SYMLINK_FOLLOW):
/// (N, D, NAME).
fn link_args(call: &Call) -> Option<(i64, i64, String)> {
    let args = call.text.split_once('(')?.1;
    let mut parts = args.split(", ");
    let _ = parts.next()?;
    let old = parts.next()?.trim_matches('"');
    let fd = old.strip_prefix("/proc/self/fd/")?.parse().ok()?;
    let dir = parts.next()?.parse().ok()?;
    let name = parts.next()?.trim_matches('"').to_string();
    Some((fd, dir, name))
}

#[test]
fn every_250_follows_file_fsync_link_and_a_later_dir_fsync() {
    let Some(strace) = strace() else {
        return;
    };
    let dir = TempDir::new("order");
    let out = dir.path().join("trace");
    let server = Traced::start(&strace, &dir, &out, "");
    let addr = server.addr;
    let clients: Vec<_> = (0..SESSIONS)
        .map(|s| {
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for m in 0..PER_SESSION {
                    let mut c = Client::connect(addr);
                    c.hello();
                    let content = format!("Subject: {s}.{m}\r\n\r\nsession {s} message {m}");
                    let reply = c.deliver("a@example.org", &["root@example.com"], &content);
                    assert!(reply.starts_with("250 2.0.0"), "{reply}");
                    ids.push(reply.trim_end().rsplit(' ').next().unwrap().to_string());
                    c.cmd("QUIT");
                }
                ids
            })
        })
        .collect();
    let ids: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    server.stop();
    let trace = fs::read_to_string(&out).unwrap();
    let calls = parse(&trace);
    let total = SESSIONS * PER_SESSION;
    assert_eq!(ids.len(), total);
    assert_eq!(count(&dir.path().join("Maildir"), "new"), total);

    let mut dir_fsyncs = std::collections::HashSet::new();
    for id in &ids {
        let queued = format!("250 2.0.0 Ok: queued as {id}\\r\\n");
        let reply = calls
            .iter()
            .find(|c| c.text.contains(&queued))
            .unwrap_or_else(|| panic!("no traced write of {queued}"));
        let pid = reply.pid;
        let link = calls
            .iter()
            .rev()
            .filter(|c| c.pid == pid && c.entered < reply.entered && c.name == "linkat")
            .find(|c| link_args(c).is_some_and(|(_, _, n)| n.starts_with(&format!("{id}."))))
            .unwrap_or_else(|| panic!("{id}: no linkat before its 250"));
        assert_eq!(link.result, Some(0), "{id}: {}", link.text);
        let (fd, new_fd, _) = link_args(link).unwrap();
        // The same thread's last fsync before the link is the file's.
        let file_sync = calls
            .iter()
            .rev()
            .filter(|c| c.pid == pid && c.returned < link.entered)
            .find(|c| c.name == "fsync" || c.name == "fdatasync")
            .unwrap_or_else(|| panic!("{id}: no fsync before the link"));
        assert_eq!(first_arg(file_sync), Some(fd), "{id}: {}", file_sync.text);
        assert_eq!(file_sync.result, Some(0), "{id}: {}", file_sync.text);
        // A new/ fsync, by any thread, entered after the link returned and
        // done before the 250 was written.
        let dir_sync = calls
            .iter()
            .filter(|c| c.name == "fsync" && first_arg(c) == Some(new_fd))
            .find(|c| {
                c.entered > link.returned && c.returned < reply.entered && c.result == Some(0)
            })
            .unwrap_or_else(|| panic!("{id}: no fsync of new/ between its link and its 250"));
        dir_fsyncs.insert(dir_sync.entered);
    }
    // Every directory the server made (the Maildir and its tmp/, new/ and
    // cur/, made at start-up here) has its parent fsynced after the mkdir
    // returned and before the first 250 (issue #22 item 4).
    let first_250 = calls
        .iter()
        .filter(|c| c.text.contains("250 2.0.0 Ok: queued as "))
        .map(|c| c.entered)
        .min()
        .unwrap();
    let made: Vec<&Call> = calls
        .iter()
        .filter(|c| (c.name == "mkdir" || c.name == "mkdirat") && c.result == Some(0))
        .collect();
    let maildir = dir.path().join("Maildir");
    for sub in ["", "tmp", "new", "cur"] {
        let path = maildir.join(sub);
        let path = path.to_str().unwrap().trim_end_matches('/');
        assert!(
            made.iter().any(|c| quoted(c).as_deref() == Some(path)),
            "no mkdir of {path}"
        );
    }
    for mkdir in &made {
        let path = quoted(mkdir).unwrap();
        assert!(
            synced_after(&calls, mkdir, Path::new(&path).parent().unwrap(), first_250),
            "{path}: its parent was not fsynced before the first 250"
        );
    }
    // The new/ descriptor is cached and never closed: no file gets its
    // number, so every fsync of it is a directory fsync.
    let new_fds: std::collections::HashSet<i64> = calls
        .iter()
        .filter_map(|c| (c.name == "linkat").then(|| link_args(c)).flatten())
        .map(|(_, dir, _)| dir)
        .collect();
    let all_dir_syncs = calls
        .iter()
        .filter(|c| c.name == "fsync" && first_arg(c).is_some_and(|fd| new_fds.contains(&fd)))
        .count();
    eprintln!(
        "{total} messages, {all_dir_syncs} fsyncs of new/ ({:.2} per message), \
         {} of them covering a 250",
        all_dir_syncs as f64 / total as f64,
        dir_fsyncs.len()
    );
}

/// Whether `dir` was opened after `after` returned and that descriptor
/// fsynced (successfully, by the same thread) before `deadline`.
fn synced_after(calls: &[Call], after: &Call, dir: &Path, deadline: usize) -> bool {
    let dir = dir.to_str().unwrap();
    calls.iter().any(|open| {
        is_open(open)
            && open.entered > after.returned
            && quoted(open).as_deref() == Some(dir)
            && open.result.is_some_and(|fd| {
                calls.iter().any(|c| {
                    c.name == "fsync"
                        && c.pid == open.pid
                        && c.entered > open.returned
                        && c.returned < deadline
                        && first_arg(c) == Some(fd)
                        && c.result == Some(0)
                })
            })
    })
}

/// A Maildir++ folder made for a message (`detail_folders`, issue #22
/// items 3 and 4): the folder and its tmp/, new/ and cur/ each have their
/// parent fsynced after their mkdir, and the folder once its
/// `maildirfolder` mark exists, all before the 250 that depends on them.
#[test]
fn a_folder_made_for_a_message_is_durable_before_its_250() {
    let Some(strace) = strace() else {
        return;
    };
    let dir = TempDir::new("order-folder");
    let out = dir.path().join("trace");
    let server = Traced::start(&strace, &dir, &out, "detail_folders = yes\n");
    let mut c = Client::connect(server.addr);
    c.hello();
    let reply = c.deliver(
        "a@example.org",
        &["root+disk@example.com"],
        "Subject: d\r\n\r\nd",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    c.cmd("QUIT");
    server.stop();
    let folder = dir.path().join("Maildir/.disk");
    assert_eq!(count(&folder, "new"), 1);
    let calls = parse(&fs::read_to_string(&out).unwrap());
    let the_250 = calls
        .iter()
        .find(|c| c.text.contains("250 2.0.0 Ok: queued as "))
        .expect("no traced 250")
        .entered;
    for sub in ["", "tmp", "new", "cur"] {
        let path = folder.join(sub);
        let path = path.to_str().unwrap().trim_end_matches('/');
        let mkdir = calls
            .iter()
            .find(|c| {
                (c.name == "mkdir" || c.name == "mkdirat")
                    && c.result == Some(0)
                    && quoted(c).as_deref() == Some(path)
            })
            .unwrap_or_else(|| panic!("no mkdir of {path}"));
        assert!(mkdir.returned < the_250, "{path} made after the 250");
        let parent = Path::new(path).parent().unwrap();
        assert!(
            synced_after(&calls, mkdir, parent, the_250),
            "{path}: its parent was not fsynced between its mkdir and the 250"
        );
    }
    let mark = folder.join("maildirfolder");
    let made = calls
        .iter()
        .find(|c| {
            is_open(c)
                && quoted(c).as_deref() == mark.to_str()
                && c.result.is_some_and(|fd| fd >= 0)
        })
        .expect("no creation of maildirfolder");
    assert!(
        synced_after(&calls, made, &folder, the_250),
        "the folder was not fsynced after its maildirfolder mark and before the 250"
    );
}
