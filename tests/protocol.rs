//! Real-socket tests for the SMTP protocol (SPEC §5), the recipient rules
//! SMTP exposes (§4), the standalone server's limits (§3, §8) and the log
//! lines of §9.

mod common;
use common::*;

use std::io::{ErrorKind, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

/// A lenient error budget, so tests that collect many 5xx replies are not
/// cut short by `max_errors`.
const LENIENT: &str = "max_errors = 100";

/// Everything the server sends until it closes the connection (EOF or reset
/// within 5 s); panics when the connection stays open.
fn read_to_close(client: &mut Client) -> String {
    let stream = client.reader.get_ref();
    stream
        .set_read_timeout(Some(upper(Duration::from_secs(5))))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match client.reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "connection not closed: {e}; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A connected client past the greeting and EHLO.
fn greeted(server: &Server) -> Client {
    let mut c = server.connect();
    c.hello();
    c
}

/// The EHLO keywords (lines after the first), sorted.
fn ehlo_keywords(reply: &str) -> Vec<String> {
    let mut kws: Vec<String> = reply.lines().skip(1).map(|l| l[4..].to_string()).collect();
    kws.sort();
    kws
}

fn sorted(words: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = words.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

// ---- greeting, EHLO, simple verbs ----

#[test]
fn greeting_names_hostname() {
    let server = Server::start("");
    let mut c = server.connect();
    assert_eq!(c.reply(), "220 mx.test ESMTP smtpbox\r\n");
}

#[test]
fn ehlo_advertises_exactly_the_spec_keywords() {
    let server = Server::start("max_message_size = 123456");
    let mut c = server.connect();
    c.reply();
    let reply = c.cmd("EHLO client.test");
    assert!(reply.starts_with("250-mx.test\r\n"), "{reply:?}");
    assert!(reply.lines().all(|l| l.starts_with("250")), "{reply:?}");
    assert_eq!(
        ehlo_keywords(&reply),
        sorted(&[
            "PIPELINING",
            "SIZE 123456",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "DSN",
            "HELP",
        ]),
        "no STARTTLS without a certificate, no AUTH without a users file"
    );
}

#[test]
fn ehlo_size_defaults_to_ten_mebibytes() {
    let server = Server::start("");
    let mut c = server.connect();
    c.reply();
    let reply = c.cmd("EHLO client.test");
    assert!(reply.contains("250-SIZE 10485760\r\n"), "{reply:?}");
}

#[test]
fn helo_gets_plain_250() {
    let server = Server::start("");
    let mut c = server.connect();
    c.reply();
    assert_eq!(c.cmd("HELO client.test"), "250 mx.test\r\n");
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
}

#[test]
fn simple_verbs_reply_codes() {
    let server = Server::start(LENIENT);
    let mut c = greeted(&server);
    let help = c.cmd("HELP");
    assert!(help.starts_with("214"), "{help:?}");
    let last = help.lines().last().unwrap_or("");
    assert!(last.starts_with("214 2.0.0 "), "{help:?}");
    c.expect("NOOP", "250 2.0.0");
    c.expect("RSET", "250 2.0.0");
    c.expect("VRFY root", "252 2.5.0");
    c.expect("EXPN staff", "502 5.5.1");
    for verb in [
        "ETRN example.com",
        "TURN",
        "SEND FROM:<a@b.example>",
        "SOML FROM:<a@b.example>",
        "SAML FROM:<a@b.example>",
    ] {
        c.expect(verb, "502 5.5.1");
    }
    c.expect("FROBNICATE", "500 5.5.2");
    c.expect("STARTTLS", "502 5.5.1");
    c.expect("AUTH PLAIN", "503 5.5.1");
    c.expect("NOOP", "250 2.0.0");
}

#[test]
fn quit_replies_221_and_closes() {
    let server = Server::start("");
    let mut c = greeted(&server);
    c.send(b"QUIT\r\n");
    let rest = read_to_close(&mut c);
    assert!(rest.starts_with("221 2.0.0 "), "{rest:?}");
    assert_eq!(rest.matches("\r\n").count(), 1, "{rest:?}");
}

// ---- command order ----

#[test]
fn mail_before_helo_is_503() {
    let server = Server::start("");
    let mut c = server.connect();
    c.reply();
    c.expect("MAIL FROM:<a@b.example>", "503 5.5.1");
}

#[test]
fn rcpt_before_mail_is_503() {
    let server = Server::start("");
    let mut c = greeted(&server);
    c.expect("RCPT TO:<root@example.com>", "503 5.5.1");
}

#[test]
fn data_without_valid_recipient_is_554() {
    let server = Server::start("");
    let mut c = greeted(&server);
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
    c.expect("RCPT TO:<x@elsewhere.example>", "550 5.7.1");
    c.expect("DATA", "554 5.5.1");
    assert_eq!(count(&server.maildir(), "new"), 0);
}

#[test]
fn nested_mail_is_503() {
    let server = Server::start("");
    let mut c = greeted(&server);
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
    c.expect("MAIL FROM:<c@d.example>", "503 5.5.1");
}

// ---- MAIL/RCPT forms and parameters ----

#[test]
fn null_sender_is_accepted_and_stored_as_empty_return_path() {
    let server = Server::start("");
    let mut c = greeted(&server);
    let reply = c.deliver("", &["root@example.com"], "Subject: bounce\r\n\r\nx");
    assert!(reply.starts_with("250 2.0.0 "), "{reply:?}");
    let msgs = messages(&server.maildir());
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].starts_with(b"Return-Path: <>\r\n"));
}

#[test]
fn quoted_local_parts_are_delivered() {
    let server = Server::start("");
    let mut c = greeted(&server);
    let reply = c.deliver(
        "\"a b\"@b.example",
        &["\"john doe\"@example.com"],
        "Subject: q\r\n\r\nhi",
    );
    assert!(reply.starts_with("250 2.0.0 "), "{reply:?}");
    let msgs = messages(&server.maildir());
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].starts_with(b"Return-Path: <\"a b\"@b.example>\r\n"));
    assert_eq!(body(&msgs[0]), b"Subject: q\r\n\r\nhi\r\n");
}

#[test]
fn utf8_addresses_need_the_smtputf8_parameter() {
    let server = Server::start(LENIENT);
    let mut c = greeted(&server);
    c.expect("MAIL FROM:<jörg@b.example>", "553 5.6.7");
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
    c.expect("RCPT TO:<jörg@example.com>", "553 5.6.7");
    c.expect("RSET", "250 2.0.0");
    c.expect("MAIL FROM:<jörg@b.example> SMTPUTF8", "250 2.1.0");
    c.expect("RCPT TO:<jörg@example.com>", "250 2.1.5");
    c.expect("DATA", "354");
    c.send(b"Subject: utf8\r\n\r\nhi\r\n.\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0 "), "{reply:?}");
    let msgs = messages(&server.maildir());
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].starts_with("Return-Path: <jörg@b.example>\r\n".as_bytes()));
}

#[test]
fn dsn_size_and_body_parameters_are_accepted() {
    let server = Server::start("");
    let mut c = greeted(&server);
    c.expect(
        "MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=QQ+2Bid AUTH=<>",
        "250 2.1.0",
    );
    c.expect(
        "RCPT TO:<root@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;root+40example.com",
        "250 2.1.5",
    );
    c.expect("RCPT TO:<bob@example.com> NOTIFY=NEVER", "250 2.1.5");
    c.expect("RSET", "250 2.0.0");
    c.expect("MAIL FROM:<a@b.example> BODY=7BIT RET=FULL", "250 2.1.0");
}

#[test]
fn unknown_parameter_is_555() {
    let server = Server::start(LENIENT);
    let mut c = greeted(&server);
    c.expect("MAIL FROM:<a@b.example> FOO=bar", "555 5.5.4");
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
    c.expect("RCPT TO:<root@example.com> XYZZY", "555 5.5.4");
}

#[test]
fn declared_size_over_limit_is_552() {
    let server = Server::start("max_message_size = 1000");
    let mut c = greeted(&server);
    c.expect("MAIL FROM:<a@b.example> SIZE=1001", "552 5.3.4");
    c.expect("MAIL FROM:<a@b.example> SIZE=1000", "250 2.1.0");
}

#[test]
fn bad_xtext_is_501() {
    let server = Server::start(LENIENT);
    let mut c = greeted(&server);
    c.expect("MAIL FROM:<a@b.example> ENVID=a+zz", "501 5.5.4");
    c.expect("MAIL FROM:<a@b.example> ENVID=a+2", "501 5.5.4");
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
    c.expect("RCPT TO:<root@example.com> ORCPT=rfc822;a+G0b", "501 5.5.4");
}

// ---- recipients (SPEC §4) ----

#[test]
fn non_local_recipient_is_relay_denied() {
    let server = Server::start("");
    let mut c = greeted(&server);
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
    c.expect("RCPT TO:<victim@elsewhere.example>", "550 5.7.1");
    c.expect("RCPT TO:<root@[192.0.2.1]>", "550 5.7.1");
}

#[test]
fn unknown_local_user_without_default_maildir_is_550_5_1_1() {
    let server = Server::start_no_default("mailbox = alice {dir}/alice");
    let mut c = greeted(&server);
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
    c.expect("RCPT TO:<bob@example.com>", "550 5.1.1");
    c.expect("RCPT TO:<alice@example.com>", "250 2.1.5");
    c.expect("DATA", "354");
    c.send(b"Subject: a\r\n\r\nfor alice\r\n.\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0 "), "{reply:?}");
    let msgs = messages(&server.dir.path().join("alice"));
    assert_eq!(msgs.len(), 1);
    assert_eq!(body(&msgs[0]), b"Subject: a\r\n\r\nfor alice\r\n");
    assert_eq!(count(&server.maildir(), "new"), 0);
}

#[test]
fn bare_postmaster_address_literal_and_domain_case_are_local() {
    let server = Server::start("");
    let mut c = greeted(&server);
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
    c.expect("RCPT TO:<postmaster>", "250 2.1.5");
    c.expect("RCPT TO:<Postmaster>", "250 2.1.5");
    c.expect("RCPT TO:<root@[127.0.0.1]>", "250 2.1.5");
    c.expect("RCPT TO:<root@EXAMPLE.COM>", "250 2.1.5");
    c.expect("RCPT TO:<Root@Example.Com>", "250 2.1.5");
    c.expect("DATA", "354");
    c.send(b"Subject: many\r\n\r\nx\r\n.\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0 "), "{reply:?}");
    assert_eq!(
        messages(&server.maildir()).len(),
        1,
        "one Maildir, stored once"
    );
}

#[test]
fn too_many_recipients_is_452() {
    let server = Server::start("max_recipients = 2");
    let mut c = greeted(&server);
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
    c.expect("RCPT TO:<a@example.com>", "250 2.1.5");
    c.expect("RCPT TO:<b@example.com>", "250 2.1.5");
    c.expect("RCPT TO:<c@example.com>", "452 4.5.3");
    c.expect("DATA", "354");
    c.send(b"x\r\n.\r\n");
    let reply = c.reply();
    assert!(
        reply.starts_with("250 2.0.0 "),
        "the first two still get it: {reply:?}"
    );
}

// ---- forbidden commands, error budget ----

#[test]
fn http_get_gets_one_521_and_close() {
    let server = Server::start("");
    let mut c = server.connect();
    c.reply();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let rest = read_to_close(&mut c);
    assert!(rest.starts_with("521 5.7.0 "), "{rest:?}");
    assert_eq!(
        rest.matches("\r\n").count(),
        1,
        "exactly one reply line: {rest:?}"
    );
}

#[test]
fn http_verbs_get_one_521_and_close() {
    let server = Server::start("");
    let requests: [&[u8]; 5] = [
        b"CONNECT mx.test:25 HTTP/1.1\r\nHost: mx.test:25\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"HEAD / HTTP/1.0\r\n\r\n",
        b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"get / http/1.0\r\n\r\n",
    ];
    for request in requests {
        let mut c = server.connect();
        c.reply();
        c.send(request);
        let rest = read_to_close(&mut c);
        let what = String::from_utf8_lossy(request);
        assert!(rest.starts_with("521 5.7.0 "), "{what:?}: {rest:?}");
        assert_eq!(rest.matches("\r\n").count(), 1, "{what:?}: {rest:?}");
    }
}

#[test]
fn error_budget_ends_session_with_421() {
    let server = Server::start("max_errors = 3");
    let mut c = greeted(&server);
    c.expect("BOGUS1", "500 5.5.2");
    c.expect("BOGUS2", "500 5.5.2");
    c.send(b"BOGUS3\r\n");
    let rest = read_to_close(&mut c);
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(lines.len(), 2, "{rest:?}");
    assert!(lines[0].starts_with("500 5.5.2 "), "{rest:?}");
    assert!(lines[1].starts_with("421 4.7.0 "), "{rest:?}");
}

// ---- command line framing ----

#[test]
fn overlong_command_lines_are_500_and_session_continues() {
    let server = Server::start(LENIENT);
    let mut c = greeted(&server);
    for len in [2049, 3000, 1 << 20] {
        let mut line = b"NOOP ".to_vec();
        line.resize(len, b'x');
        line.extend_from_slice(b"\r\n");
        c.send(&line);
        let reply = c.reply();
        assert!(reply.starts_with("500 5.5.2 "), "{len} bytes: {reply:?}");
        c.expect("NOOP", "250 2.0.0");
    }
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
}

#[test]
fn command_line_of_exactly_2048_bytes_is_accepted() {
    let server = Server::start("");
    let mut c = greeted(&server);
    let mut line = b"NOOP ".to_vec();
    line.resize(2048, b'x');
    line.extend_from_slice(b"\r\n");
    c.send(&line);
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0 "), "{reply:?}");
}

#[test]
fn nul_byte_in_command_is_500() {
    let server = Server::start(LENIENT);
    let mut c = greeted(&server);
    c.send(b"NO\0OP\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("500 5.5.2 "), "{reply:?}");
    c.send(b"MAIL FROM:<a@b.example>\0\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("500 5.5.2 "), "{reply:?}");
    c.expect("NOOP", "250 2.0.0");
}

// ---- PIPELINING ----

#[test]
fn pipelined_transaction_gets_every_reply() {
    let server = Server::start("");
    let mut c = greeted(&server);
    c.send(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<root@example.com>\r\n\
          RCPT TO:<nobody@elsewhere.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n",
    );
    for expect in ["250 2.1.0", "250 2.1.5", "550 5.7.1", "250 2.1.5", "354"] {
        let reply = c.reply();
        assert!(
            reply.starts_with(expect),
            "expected {expect:?}, got {reply:?}"
        );
    }
    c.send(b"Subject: p\r\n\r\npipelined\r\n.\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0 "), "{reply:?}");
    let msgs = messages(&server.maildir());
    assert_eq!(msgs.len(), 1);
    assert_eq!(body(&msgs[0]), b"Subject: p\r\n\r\npipelined\r\n");
}

#[test]
fn quit_pipelined_after_final_dot_is_answered_in_order() {
    let server = Server::start("");
    let mut c = greeted(&server);
    c.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<root@example.com>\r\nDATA\r\n");
    for expect in ["250 2.1.0", "250 2.1.5", "354"] {
        let reply = c.reply();
        assert!(
            reply.starts_with(expect),
            "expected {expect:?}, got {reply:?}"
        );
    }
    c.send(b"Subject: q\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    let rest = read_to_close(&mut c);
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(lines.len(), 2, "{rest:?}");
    assert!(lines[0].starts_with("250 2.0.0 "), "{rest:?}");
    assert!(lines[1].starts_with("221 2.0.0 "), "{rest:?}");
    let msgs = messages(&server.maildir());
    assert_eq!(msgs.len(), 1);
    assert_eq!(body(&msgs[0]), b"Subject: q\r\n\r\nbody\r\n");
}

#[test]
fn loopback_client_may_send_whole_session_in_one_write() {
    // SPEC §5: loopback clients are exempt from the synchronization checks,
    // so `printf '...' | nc localhost 25` alert scripts work.
    let server = Server::start("");
    let mut c = server.connect();
    c.send(
        b"EHLO script\r\nMAIL FROM:<cron@box.example>\r\nRCPT TO:<root@example.com>\r\n\
          DATA\r\nSubject: alert\r\n\r\ndisk full\r\n.\r\nQUIT\r\n",
    );
    let rest = read_to_close(&mut c);
    let codes: Vec<&str> = rest
        .lines()
        .filter(|l| l.as_bytes().get(3) != Some(&b'-'))
        .map(|l| &l[..3])
        .collect();
    assert_eq!(
        codes,
        ["220", "250", "250", "250", "354", "250", "221"],
        "{rest:?}"
    );
    let msgs = messages(&server.maildir());
    assert_eq!(msgs.len(), 1);
    assert_eq!(body(&msgs[0]), b"Subject: alert\r\n\r\ndisk full\r\n");
}

// ---- timeouts ----

#[test]
fn idle_client_times_out_with_421() {
    let server = Server::start("timeout = 1");
    let mut c = greeted(&server);
    let start = Instant::now();
    let rest = read_to_close(&mut c);
    let elapsed = start.elapsed();
    assert!(rest.starts_with("421 4.4.2 "), "{rest:?}");
    assert_eq!(rest.matches("\r\n").count(), 1, "{rest:?}");
    // The read timer starts as the EHLO reply leaves, a moment before the
    // client sees it: the lower bound has a little slack.
    assert_took(
        "421 for an idle client, timeout = 1",
        elapsed,
        Duration::from_millis(800),
        Duration::from_secs(1),
    );
}

#[test]
fn busy_client_hits_session_timeout_with_421() {
    let server = Server::start("timeout = 10\nsession_timeout = 2");
    let mut c = server.connect();
    let start = Instant::now();
    c.hello();
    let last = loop {
        thread::sleep(Duration::from_millis(500));
        // The server may have closed already: a failed write is an outcome.
        let _ = c.reader.get_mut().write_all(b"NOOP\r\n");
        let reply = c.reply();
        if !reply.starts_with("250 ") || start.elapsed() > upper(Duration::from_secs(2) + ROOM) {
            break reply;
        }
    };
    let elapsed = start.elapsed();
    assert!(
        last.starts_with("421 4.4.2 "),
        "after {elapsed:?}: {last:?}; log:\n{}",
        server.log()
    );
    // NOOPs every 0.5 s keep the 10 s read timer from firing: only the
    // 2 s session limit stops this client.
    assert_took(
        "421 for a busy client, session_timeout = 2",
        elapsed,
        Duration::from_millis(1800),
        Duration::from_secs(2),
    );
    assert!(c.closed());
}

// ---- connection limits (SPEC §3, §8) ----

#[test]
fn connections_over_max_connections_get_421_until_a_slot_frees() {
    let server = Server::start("max_connections = 2\nmax_connections_per_ip = 10");
    let mut first = server.connect();
    let mut second = server.connect();
    assert!(first.reply().starts_with("220 "));
    assert!(second.reply().starts_with("220 "));
    let mut third = server.connect();
    let rest = read_to_close(&mut third);
    assert!(rest.starts_with("421 4.3.2 "), "{rest:?}");
    assert_eq!(rest.matches("\r\n").count(), 1, "{rest:?}");

    first.expect("QUIT", "221 2.0.0");
    assert!(first.closed());
    // The slot is given back when the session thread ends: poll briefly.
    let end = Instant::now() + upper(Duration::from_secs(5));
    loop {
        let mut c = server.connect();
        let greeting = c.reply();
        if greeting.starts_with("220 ") {
            break;
        }
        assert!(greeting.starts_with("421 4.3.2 "), "{greeting:?}");
        assert!(Instant::now() < end, "slot never freed");
        thread::sleep(Duration::from_millis(20));
    }
    second.expect("NOOP", "250 2.0.0");
}

#[test]
fn connections_over_max_connections_per_ip_get_421() {
    let server = Server::start("max_connections = 10\nmax_connections_per_ip = 1");
    let mut first = server.connect();
    assert!(first.reply().starts_with("220 "));
    let mut second = server.connect();
    let rest = read_to_close(&mut second);
    assert!(rest.starts_with("421 4.3.2 "), "{rest:?}");
    assert_eq!(rest.matches("\r\n").count(), 1, "{rest:?}");
    first.expect("EHLO client.test", "250");
}

// ---- logs (SPEC §9) ----

#[test]
fn accepted_message_is_logged_with_envelope_size_and_client() {
    let server = Server::start("");
    let mut c = greeted(&server);
    let port = c.reader.get_ref().local_addr().unwrap().port();
    let reply = c.deliver(
        "a@b.example",
        &["root@example.com", "bob@example.com"],
        "Subject: log\r\n\r\nlogged",
    );
    let id = reply
        .trim_end()
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("{reply:?}"))
        .to_string();
    let msgs = messages(&server.maildir());
    assert_eq!(msgs.len(), 1);
    let size = body(&msgs[0]).len();
    let line = format!(
        "{id} from=<a@b.example> to=<root@example.com>,<bob@example.com> size={size} proto=ESMTP client=[127.0.0.1]:{port}"
    );
    assert!(
        server.wait_log(&line),
        "missing {line:?} in log:\n{}",
        server.log()
    );
}

#[test]
fn rejected_recipient_is_logged_with_reply_code() {
    let server = Server::start("");
    let mut c = greeted(&server);
    let port = c.reader.get_ref().local_addr().unwrap().port();
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
    let reply = c.expect("RCPT TO:<victim@elsewhere.example>", "550 5.7.1 ");
    // SPEC §9: the client, the reply code and its reason, as sent.
    let line = format!("client=[127.0.0.1]:{port} rejected: {}", reply.trim_end());
    assert!(
        reply.contains("<victim@elsewhere.example>"),
        "the reply names the address: {reply:?}"
    );
    assert!(
        server.wait_log(&line),
        "missing {line:?} in log:\n{}",
        server.log()
    );
}

#[test]
fn invalid_addresses_are_553_5_1_7_for_the_sender_and_5_1_3_for_a_recipient() {
    let server = Server::start("");
    let mut c = greeted(&server);
    let port = c.reader.get_ref().local_addr().unwrap().port();
    let sender = c.expect("MAIL FROM:<a@@b.example>", "553 5.1.7 ");
    // The transaction did not start: RCPT needs MAIL first.
    c.expect("RCPT TO:<root@example.com>", "503 5.5.1");
    c.expect("MAIL FROM:<a@b.example>", "250 2.1.0");
    let recipient = c.expect("RCPT TO:<a b@example.com>", "553 5.1.3 ");
    c.expect("RCPT TO:<root@example.com>", "250 2.1.5");
    for reply in [&sender, &recipient] {
        let line = format!("client=[127.0.0.1]:{port} rejected: {}", reply.trim_end());
        assert!(
            server.wait_log(&line),
            "missing {line:?}:\n{}",
            server.log()
        );
    }
    c.expect("DATA", "354");
    c.send(b"Subject: x\r\n\r\nafter two bad addresses\r\n.\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("250 2.0.0 "), "{reply:?}");
    assert_eq!(messages(&server.maildir()).len(), 1);
}

#[test]
fn auth_with_an_unknown_mechanism_is_504_5_5_4() {
    // alice, password "secret" (SHA-256 crypt).
    let keys = TempDir::new("auth504");
    let users = keys.path().join("users");
    std::fs::write(
        &users,
        "alice:$5$deploytest$P5LcaAFkufYaKwcVhiWwtK0S6Ri9D8cDJGgcYPd6p07\n",
    )
    .unwrap();
    let server = Server::start(&format!("users = {}", users.display()));
    let mut c = server.connect();
    c.reply();
    let ehlo = c.expect("EHLO client.test", "250");
    assert!(
        ehlo.contains("250-AUTH PLAIN LOGIN") || ehlo.contains("250 AUTH PLAIN LOGIN"),
        "{ehlo}"
    );
    c.expect("AUTH CRAM-MD5", "504 5.5.4 ");
    c.expect("AUTH GSSAPI dGVzdA==", "504 5.5.4 ");
    // The session goes on: a known mechanism still works ("\0alice\0secret").
    c.expect("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "235 2.7.0");
}

#[test]
fn abuse_leaves_server_serving_and_no_panic_in_log() {
    let mut server = Server::start("max_errors = 5");
    let abuse: [&[u8]; 6] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\0\0\0\r\n\xff\xfe\r\nEHLO \xc3\r\nMAIL FROM:<\0>\r\n\r\n\r\n",
        b"EHLO x\r\nMAIL FROM:<a@b> SIZE=99999999999999999999999\r\nRCPT TO:<\"\\\r\n",
        b"EHLO x\r\nMAIL FROM:<a@b> ENVID=+\r\nMAIL FROM:<a@b>\r\nRCPT TO:<a@[999.1.1.1]>\r\nRCPT TO:<@a,@b:c@example.com>\r\n",
        b"EHLO x\r\nBDAT 99999999999999999999\r\nBDAT -1\r\nAUTH\r\n",
        b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<root@example.com>\r\nDATA\r\n\r\n.\r",
    ];
    for bytes in abuse {
        let mut c = server.connect();
        c.send(bytes);
        drop(c);
    }
    let mut long = server.connect();
    long.reply();
    long.send(&vec![b'A'; 300_000]);
    drop(long);
    let mut c = greeted(&server);
    c.expect("NOOP", "250 2.0.0");
    c.expect("QUIT", "221 2.0.0");
    // Every session, abusive or not, has ended before the log is judged.
    let end = Instant::now() + Duration::from_secs(5);
    while server.log().matches("disconnect from").count() < 8 && Instant::now() < end {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        server.log().matches("disconnect from").count(),
        8,
        "{}",
        server.log()
    );
    assert!(server.alive());
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
