//! The trace headers: what they name, and folding within 998 octets.

use super::*;

#[test]
fn trace_headers_name_everything() {
    let mut s = session();
    one(&mut s, "EHLO client.example");
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<root@example.com>");
    let h = s.trace_headers("ID7", "Sat, 28 Nov 2026 20:14:17 +0000");
    assert_eq!(
        h,
        "Return-Path: <a@b>\r\nReceived: from client.example ([127.0.0.1]) by mx.example (smtpbox) with ESMTP id ID7 for <root@example.com>; Sat, 28 Nov 2026 20:14:17 +0000\r\n"
    );
}

#[test]
fn an_overlong_helo_is_cut_in_the_trace_and_still_answered() {
    let mut s = session();
    let helo = "a".repeat(2000);
    let reply = s.command(format!("EHLO {helo}").as_bytes()).replies;
    assert!(
        reply[0].to_string().starts_with("250-mx.example"),
        "{reply:?}"
    );
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<root@example.com>");
    let h = s.trace_headers("ID7", "Sat, 28 Nov 2026 20:14:17 +0000");
    let want = format!(
        "Received: from {} ([127.0.0.1]) by mx.example (smtpbox) with ESMTP id ID7 \
         for <root@example.com>; Sat, 28 Nov 2026 20:14:17 +0000\r\n",
        "a".repeat(255)
    );
    assert!(h.ends_with(&want), "{h}");
}

#[test]
fn a_header_over_998_octets_is_folded_at_spaces() {
    let words: Vec<String> = (0..300).map(|i| format!("w{i}")).collect();
    let header = format!("Received: from {} ; date", words.join(" "));
    let folded = fold(&header);
    assert_eq!(
        folded.replace("\r\n", ""),
        header,
        "unfolds to the original"
    );
    for line in folded.split("\r\n") {
        assert!(line.len() <= FOLD_AT, "{line:?}");
    }
    let lines: Vec<&str> = folded.split("\r\n").collect();
    assert!(lines.len() > 10 && lines[1..].iter().all(|l| l.starts_with(' ')));
    // A long word stays whole, on a line of its own; double spaces never
    // leave a line of white space alone.
    let header = format!(
        "Received: from {}  by x {}",
        "h".repeat(900),
        "y ".repeat(60)
    );
    let folded = fold(&header);
    assert_eq!(folded.replace("\r\n", ""), header);
    assert!(folded
        .split("\r\n")
        .all(|l| l.len() <= MAX_HEADER_LINE && !l.trim().is_empty()));
    assert_eq!(fold("Received: short"), "Received: short");
    assert_eq!(cut("é".repeat(200), 255), "é".repeat(127));
}
