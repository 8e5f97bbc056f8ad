//! The trace headers smtpbox writes stay within RFC 5322 2.1.1's 998
//! octets a line, whatever the client sends as its HELO (SPEC §6).

mod common;

use common::{messages, Server};

/// The header section of a stored message, line by line (CRLF removed).
fn header_lines(message: &[u8]) -> Vec<Vec<u8>> {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of header");
    message[..end]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .collect()
}

/// The first Received header, unfolded (RFC 5322 2.2.3: CRLF removed).
fn received(lines: &[Vec<u8>]) -> String {
    let start = lines
        .iter()
        .position(|l| l.starts_with(b"Received: "))
        .expect("Received header");
    let mut out = String::from_utf8(lines[start].clone()).unwrap();
    for next in &lines[start + 1..] {
        if !(next.starts_with(b" ") || next.starts_with(b"\t")) {
            break;
        }
        out.push_str(std::str::from_utf8(next).unwrap());
    }
    out
}

fn assert_lines_fit(lines: &[Vec<u8>]) {
    for line in lines {
        assert!(
            line.len() <= 998,
            "a {}-octet header line: {:?}",
            line.len(),
            String::from_utf8_lossy(&line[..80])
        );
    }
}

#[test]
fn ehlo_of_2000_octets_is_answered_and_cut_in_the_trace() {
    let server = Server::start("");
    let mut c = server.connect();
    assert!(c.reply().starts_with("220 mx.test"));
    let helo = "a".repeat(2000);
    // Answered as before the cut existed.
    c.expect(&format!("EHLO {helo}"), "250-mx.test");
    let reply = c.deliver(
        "a@b.org",
        &["root@example.com"],
        "Subject: long helo\r\n\r\nhi",
    );
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    c.expect("QUIT", "221 2.0.0");

    let stored = messages(&server.maildir());
    assert_eq!(stored.len(), 1);
    let lines = header_lines(&stored[0]);
    assert_lines_fit(&lines);
    let trace = received(&lines);
    let cut = "a".repeat(255);
    assert!(
        trace.starts_with(&format!("Received: from {cut} ([127.0.0.1]) by mx.test ")),
        "{trace}"
    );
    assert!(!trace.contains(&"a".repeat(256)), "{trace}");
    for part in [" with ESMTP ", " id ", " for <root@example.com>; "] {
        assert!(trace.contains(part), "{part:?} in {trace}");
    }
    assert!(lines.iter().any(|l| l == b"Subject: long helo"));
}

/// The longest trace smtpbox can write: a 253-octet hostname, a 2000-octet
/// HELO and a 254-octet recipient address.
#[test]
fn the_longest_trace_still_fits() {
    let label = |c: &str, n| c.repeat(n);
    let hostname = format!(
        "{}.{}.{}.{}",
        label("h", 63),
        label("i", 63),
        label("j", 63),
        label("k", 61)
    );
    assert_eq!(hostname.len(), 253);
    let domain = format!("{}.{}.{}", label("d", 63), label("e", 63), label("f", 61));
    let rcpt = format!("{}@{domain}", "r".repeat(64));
    assert_eq!(rcpt.len(), 254);
    let server = Server::start(&format!("hostname = {hostname}\ndomain = {domain}\n"));
    let mut c = server.connect();
    assert!(c.reply().starts_with(&format!("220 {hostname}")));
    c.expect(&format!("EHLO {}", "a".repeat(2000)), "250");
    let reply = c.deliver("a@b.org", &[&rcpt], "Subject: x\r\n\r\nhi");
    assert!(reply.starts_with("250 2.0.0"), "{reply}");

    let stored = messages(&server.maildir());
    assert_eq!(stored.len(), 1);
    let lines = header_lines(&stored[0]);
    assert_lines_fit(&lines);
    let trace = received(&lines);
    assert!(
        trace.contains(&format!(" by {hostname} (smtpbox) with ESMTP id ")),
        "{trace}"
    );
    assert!(trace.contains(&format!(" for <{rcpt}>; ")), "{trace}");
}
