//! Delivery by descriptor (issue #13 item 1, SPEC §7), attacked over a real
//! socket the way a local user with write access to a Maildir would: names
//! in `tmp/` swapped while the client is in DATA, and `new/` or `tmp/`
//! replaced by a symlink to another directory. A 250 must mean `new/` holds
//! exactly the bytes the client sent; a symlinked `new/` or `tmp/` fails the
//! message with 451 4.3.0 and a log line naming the path, and nothing is
//! written in the directory it points to. (A name that already exists in
//! `new/` cannot be provoked from outside, since the name holds the
//! microsecond of the delivery: `maildir::tests` pre-creates the exact name.)

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

fn start_alice() -> (Server, std::path::PathBuf) {
    let server = Server::start("mailbox = alice {dir}/alice");
    let alice = server.dir.path().join("alice");
    (server, alice)
}

fn begin_data(c: &mut Client) {
    c.expect("MAIL FROM:<mallory@example.org>", "250 2.1.0");
    c.expect("RCPT TO:<alice@example.com>", "250 2.1.5");
    c.expect("DATA", "354");
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn content(tag: &str) -> Vec<u8> {
    let mut out = format!("Subject: {tag}\r\n\r\n").into_bytes();
    for n in 0..200 {
        out.extend_from_slice(format!("{tag} line {n} of the real message\r\n").as_bytes());
    }
    out
}

/// Renames a file (`as_symlink` false) or a symlink to `evil` over every
/// name now in `tmp`, and plants both under names a spool file is likely to
/// get (this PID, the next counter values, this second and the next).
fn swap_everything_in(tmp: &Path, evil: &Path, pid: u32, as_symlink: bool) {
    let scratch = tmp.parent().unwrap().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let plant = |target: &Path| {
        let staged = scratch.join("staged");
        let _ = fs::remove_file(&staged);
        if as_symlink {
            symlink(evil, &staged).unwrap();
        } else {
            fs::copy(evil, &staged).unwrap();
        }
        fs::rename(&staged, target).unwrap();
    };
    for name in names(tmp) {
        plant(&tmp.join(name));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for secs in [now, now + 1] {
        for q in 0..4 {
            for host in ["mx.test", "localhost"] {
                plant(&tmp.join(format!("{secs}.M0P{pid}Q{q}.{host}")));
            }
        }
    }
}

#[test]
fn spool_swapped_during_data_250_means_new_holds_the_bytes_sent() {
    for as_symlink in [false, true] {
        let (server, alice) = start_alice();
        fs::create_dir_all(&alice).unwrap();
        let evil = server.dir.path().join("evil");
        fs::write(&evil, b"Subject: forged\r\n\r\nattacker's bytes\r\n").unwrap();
        let mut c = server.connect();
        c.hello();
        begin_data(&mut c);
        let sent = content(if as_symlink { "symlink" } else { "file" });
        let (head, tail) = sent.split_at(sent.len() / 2);
        c.send(head);
        // The server is now in DATA, its spool open.
        std::thread::sleep(std::time::Duration::from_millis(100));
        swap_everything_in(&alice.join("tmp"), &evil, server.pid(), as_symlink);
        c.send(tail);
        c.send(b".\r\n");
        let reply = c.reply();
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
        let stored = names(&alice.join("new"));
        assert_eq!(stored.len(), 1, "{stored:?}");
        let path = alice.join("new").join(&stored[0]);
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "new/ holds a symlink");
        let message = fs::read(&path).unwrap();
        assert_eq!(body(&message), &sent[..], "new/ holds other bytes");
        assert_eq!(
            fs::read(&evil).unwrap(),
            b"Subject: forged\r\n\r\nattacker's bytes\r\n"
        );
    }
}

#[test]
fn symlinked_new_during_data_is_451_and_nothing_lands_there() {
    let (server, alice) = start_alice();
    let other = server.dir.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let mut c = server.connect();
    c.hello();
    // A first message: smtpbox has opened alice/new.
    let reply = c.deliver(
        "a@example.org",
        &["alice@example.com"],
        "Subject: 1\r\n\r\none",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    begin_data(&mut c);
    c.send(b"Subject: 2\r\n\r\nsecond\r\n");
    std::thread::sleep(std::time::Duration::from_millis(100));
    fs::rename(alice.join("new"), server.dir.path().join("old-new")).unwrap();
    symlink(&other, alice.join("new")).unwrap();
    c.send(b".\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    assert!(names(&other).is_empty(), "written through the symlink");
    assert_eq!(names(&server.dir.path().join("old-new")).len(), 1);
    let path = alice.join("new").display().to_string();
    assert!(
        server.wait_log(&format!("delivery failed: {path}: is a symbolic link")),
        "{}",
        server.log()
    );
    // The session goes on: a fresh transaction gets the same answer.
    c.expect("RSET", "250 2.0.0");
    let reply = c.deliver(
        "a@example.org",
        &["alice@example.com"],
        "Subject: 3\r\n\r\n3",
    );
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    assert!(names(&other).is_empty());
}

#[test]
fn symlinked_tmp_is_451_and_nothing_lands_there() {
    let (server, alice) = start_alice();
    let other = server.dir.path().join("other");
    for sub in ["new", "cur"] {
        fs::create_dir_all(alice.join(sub)).unwrap();
    }
    fs::create_dir_all(&other).unwrap();
    symlink(&other, alice.join("tmp")).unwrap();
    let mut c = server.connect();
    c.hello();
    c.expect("MAIL FROM:<mallory@example.org>", "250 2.1.0");
    c.expect("RCPT TO:<alice@example.com>", "250 2.1.5");
    let reply = c.cmd("DATA");
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    assert!(names(&other).is_empty(), "written through the symlink");
    assert!(names(&alice.join("new")).is_empty());
    let path = alice.join("tmp").display().to_string();
    assert!(
        server.wait_log(&format!("cannot spool message: {path}: is a symbolic link")),
        "{}",
        server.log()
    );
}
