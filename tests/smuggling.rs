//! SMTP smuggling (SPEC §6): only CRLF . CRLF ends DATA. Every sequence of
//! the spec's list is sent with a whole second transaction behind it in the
//! same write; the server must store exactly one message holding the
//! smuggled commands as content (default `bare_lf = normalize`), or refuse
//! it with `550 5.6.0` when `bare_lf = reject` and it has a bare CR or LF.

mod common;
use common::*;

use std::io::Read;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// What follows the smuggling sequence: a whole second transaction.
const SMUGGLED: &[u8] = b"MAIL FROM:<evil@x.org>\r\nRCPT TO:<victim@example.com>\r\n\
    DATA\r\nSubject: smuggled\r\n\r\nevil";

/// Opens a transaction, sends `content` + CRLF.CRLF in one write, returns
/// the reply to the data and everything the server sends after QUIT.
fn send_in_one_write(server: &Server, content: &[u8]) -> (String, String) {
    let mut c = server.connect();
    c.hello();
    c.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
    c.expect("RCPT TO:<root@example.com>", "250 2.1.5");
    c.expect("DATA", "354");
    let mut payload = content.to_vec();
    payload.extend_from_slice(b"\r\n.\r\n");
    c.send(&payload);
    let reply = c.reply();
    c.send(b"QUIT\r\n");
    let mut rest = Vec::new();
    let _ = c.reader.read_to_end(&mut rest);
    (reply, String::from_utf8_lossy(&rest).into_owned())
}

/// The first message, the sequence, the smuggled transaction.
fn smuggling_content(seq: &[u8]) -> Vec<u8> {
    let mut content = b"Subject: one\r\n\r\nbody".to_vec();
    content.extend_from_slice(seq);
    content.extend_from_slice(SMUGGLED);
    content
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Exactly one reply line, starting with `prefix`.
fn assert_single_reply(reply: &str, prefix: &str, seq: &[u8]) {
    assert!(
        reply.starts_with(prefix) && reply.ends_with("\r\n") && reply.lines().count() == 1,
        "{seq:?}: expected one {prefix:?} reply, got {reply:?}"
    );
}

/// After QUIT only the 221 arrives: no reply from a smuggled transaction.
fn assert_only_221(rest: &str, seq: &[u8]) {
    assert!(
        rest.starts_with("221 2.0.0") && rest.lines().count() == 1,
        "{seq:?}: after QUIT expected only 221, got {rest:?}"
    );
}

/// One message in new/, holding the smuggled commands as content.
fn assert_one_message_with_smuggled_content(maildir: &Path, seq: &[u8]) {
    let stored = messages(maildir);
    assert_eq!(stored.len(), 1, "{seq:?}: messages in new/");
    let body = body(&stored[0]);
    assert!(
        body.starts_with(b"Subject: one\r\n\r\nbody"),
        "{seq:?}: {body:?}"
    );
    assert!(
        contains(body, b"MAIL FROM:<evil@x.org>\r\n") && contains(body, b"Subject: smuggled"),
        "{seq:?}: smuggled commands missing from the content: {:?}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(count(maildir, "tmp"), 0, "{seq:?}: tmp/");
}

/// Default `bare_lf = normalize`: one message, a single 250.
fn smuggled_is_content(seq: &[u8]) {
    let server = Server::start("");
    let (reply, rest) = send_in_one_write(&server, &smuggling_content(seq));
    assert_single_reply(&reply, "250 2.0.0 Ok: queued as ", seq);
    assert_only_221(&rest, seq);
    assert_one_message_with_smuggled_content(&server.maildir(), seq);
}

/// `bare_lf = reject`: a bare CR or LF gets 550 5.6.0 and nothing is stored;
/// a sequence without one is content as above.
fn smuggled_refused_when_bare(seq: &[u8], bare: bool) {
    let server = Server::start("bare_lf = reject");
    let (reply, rest) = send_in_one_write(&server, &smuggling_content(seq));
    assert_only_221(&rest, seq);
    if bare {
        assert_single_reply(&reply, "550 5.6.0", seq);
        assert_eq!(count(&server.maildir(), "new"), 0, "{seq:?}: new/");
        assert_eq!(count(&server.maildir(), "tmp"), 0, "{seq:?}: tmp/");
    } else {
        assert_single_reply(&reply, "250 2.0.0 Ok: queued as ", seq);
        assert_one_message_with_smuggled_content(&server.maildir(), seq);
    }
}

/// One test per sequence in each mode: `smuggling_is_content::NAME` and
/// `smuggling_with_bare_lf_reject::NAME`.
macro_rules! smuggling_tests {
    ($($name:ident: $seq:expr, bare: $bare:expr;)*) => {
        mod smuggling_is_content {
            $(
                #[test]
                fn $name() {
                    super::smuggled_is_content($seq);
                }
            )*
        }
        mod smuggling_with_bare_lf_reject {
            $(
                #[test]
                fn $name() {
                    super::smuggled_refused_when_bare($seq, $bare);
                }
            )*
        }
    };
}

smuggling_tests! {
    lf_dot_lf: b"\n.\n", bare: true;
    lf_dot_crlf: b"\n.\r\n", bare: true;
    crlf_dot_lf: b"\r\n.\n", bare: true;
    cr_dot_cr: b"\r.\r", bare: true;
    cr_dot_lf: b"\r.\n", bare: true;
    lf_dot_cr: b"\n.\r", bare: true;
    cr_dot_crlf: b"\r.\r\n", bare: true;
    crlf_dot_cr: b"\r\n.\r", bare: true;
    crlf_nul_dot_crlf: b"\r\n\0.\r\n", bare: false;
    crlf_dot_nul_crlf: b"\r\n.\0\r\n", bare: false;
    crlf_dot_cr_crlf: b"\r\n.\r\r\n", bare: true;
    cr_crlf_dot_cr_crlf: b"\r\r\n.\r\r\n", bare: true;
}

#[test]
fn dot_stuffed_line_stores_a_single_dot() {
    let server = Server::start("");
    let content = b"Subject: dots\r\n\r\nbody\r\n..\r\n...\r\n.x\r\nafter";
    let (reply, rest) = send_in_one_write(&server, content);
    assert_single_reply(&reply, "250 2.0.0 Ok: queued as ", b"\r\n..\r\n");
    assert_only_221(&rest, b"\r\n..\r\n");
    let stored = messages(&server.maildir());
    assert_eq!(stored.len(), 1);
    assert_eq!(
        body(&stored[0]),
        &b"Subject: dots\r\n\r\nbody\r\n.\r\n..\r\nx\r\nafter\r\n"[..],
        "RFC 5321 4.5.2: the first dot of each line is removed"
    );
}

#[test]
fn data_cut_off_before_end_leaves_new_and_tmp_empty() {
    let server = Server::start("");
    let mut c = server.connect();
    c.hello();
    c.expect("MAIL FROM:<a@b.org>", "250 2.1.0");
    c.expect("RCPT TO:<root@example.com>", "250 2.1.5");
    c.expect("DATA", "354");
    let mut content = b"Subject: cut\r\n\r\n".to_vec();
    content.extend(std::iter::repeat_n(b'x', 100_000));
    content.extend_from_slice(b"\r\n.\n\r\n.\r");
    c.send(&content);
    drop(c);
    assert!(server.wait_log("disconnect from"), "log:\n{}", server.log());
    let maildir = server.maildir();
    let end = Instant::now() + Duration::from_secs(5);
    while count(&maildir, "tmp") > 0 && Instant::now() < end {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count(&maildir, "tmp"), 0, "tmp/ after an aborted DATA");
    assert_eq!(count(&maildir, "new"), 0, "new/ after an aborted DATA");
}
