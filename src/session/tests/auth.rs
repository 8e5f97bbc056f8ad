//! AUTH exchanges, the failure budget, and what TLS and submission ask.

use super::*;

#[test]
fn auth_plain_with_and_without_initial_response() {
    let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
    let ehlo = s.command(b"EHLO c").replies[0].to_string();
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN"),
        "loopback may AUTH without TLS: {ehlo}"
    );
    assert_eq!(
        one(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0wrong"))),
        "535 5.7.8"
    );
    assert_eq!(one(&mut s, "AUTH PLAIN"), "334 ");
    assert_eq!(one(&mut s, &b64(b"\0alice\0secret")), "235 2.7.0");
    assert_eq!(
        one(&mut s, "AUTH PLAIN"),
        "503 5.5.1",
        "already authenticated"
    );
    one(
        &mut s,
        "MAIL FROM:<alice@example.com> AUTH=alice@example.com",
    );
    one(&mut s, "RCPT TO:<root@example.com>");
    let trace = s.trace_headers("ID", "date");
    assert!(trace.contains(" with ESMTPA id ID "), "{trace}");
}

#[test]
fn auth_login_exchange() {
    let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
    one(&mut s, "EHLO c");
    let step = s.command(b"AUTH LOGIN");
    assert_eq!(step.replies[0].to_string(), "334 VXNlcm5hbWU6");
    let step = s.command(b64(b"alice").as_bytes());
    assert_eq!(step.replies[0].to_string(), "334 UGFzc3dvcmQ6");
    assert_eq!(one(&mut s, &b64(b"secret")), "235 2.7.0");
    // LOGIN with the user name as initial response.
    let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
    one(&mut s, "EHLO c");
    let step = s.command(format!("AUTH LOGIN {}", b64(b"alice")).as_bytes());
    assert_eq!(step.replies[0].to_string(), "334 UGFzc3dvcmQ6");
    assert_eq!(one(&mut s, &b64(b"nope")), "535 5.7.8");
}

#[test]
fn auth_cancel_bad_base64_and_unknown_mechanism() {
    let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
    one(&mut s, "EHLO c");
    one(&mut s, "AUTH PLAIN");
    assert_eq!(one(&mut s, "*"), "501 5.7.0");
    one(&mut s, "AUTH LOGIN");
    assert_eq!(one(&mut s, "*"), "501 5.7.0");
    assert_eq!(one(&mut s, "AUTH PLAIN !!!notbase64"), "501 5.5.2");
    assert_eq!(one(&mut s, "AUTH CRAM-MD5"), "504 5.5.4");
    assert_eq!(one(&mut s, "NOOP"), "250 2.0.0", "session goes on");
}

#[test]
fn unreadable_users_file_is_454_and_no_failure() {
    let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
    s.services.users = Some(Arc::new(Unreadable));
    one(&mut s, "EHLO c");
    let good = format!("AUTH PLAIN {}", b64(b"\0alice\0secret"));
    for _ in 0..MAX_AUTH_FAILURES + 1 {
        let step = s.command(good.as_bytes());
        let codes: Vec<String> = step.replies.iter().map(|r| r.to_string()).collect();
        assert_eq!(codes, ["454 4.7.0 Temporary authentication failure"]);
        assert_eq!(step.action, Action::Continue);
    }
    // LOGIN reaches the same check after its two challenges.
    assert_eq!(one(&mut s, "AUTH LOGIN"), "334 ");
    assert_eq!(one(&mut s, &b64(b"alice")), "334 ");
    assert_eq!(one(&mut s, &b64(b"secret")), "454 4.7.0");
    // The file is back: the attempts before did not count.
    s.services.users = Some(Arc::new(Alice));
    let bad = format!("AUTH PLAIN {}", b64(b"\0alice\0bad"));
    assert_eq!(one(&mut s, &bad), "535 5.7.8");
    assert_eq!(one(&mut s, &bad), "535 5.7.8");
    assert_eq!(one(&mut s, &good), "235 2.7.0");
}

#[test]
fn three_auth_failures_close_the_session() {
    let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
    one(&mut s, "EHLO c");
    let bad = format!("AUTH PLAIN {}", b64(b"\0alice\0bad"));
    assert_eq!(one(&mut s, &bad), "535 5.7.8");
    assert_eq!(one(&mut s, &bad), "535 5.7.8");
    let step = s.command(bad.as_bytes());
    let codes: Vec<String> = step
        .replies
        .iter()
        .map(|r| format!("{} {}", r.code, status_text(r)))
        .collect();
    assert_eq!(codes, ["535 5.7.8", "421 4.7.0"]);
    assert_eq!(step.action, Action::Close("closed by server"));
}

#[test]
fn auth_needs_tls_on_remote_connections() {
    let mut s = auth_session("192.0.2.1:4000", Mode::Smtp, true);
    let ehlo = s.command(b"EHLO c").replies[0].to_string();
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(one(&mut s, "AUTH PLAIN"), "538 5.7.11");
    s.tls_started("TLSv1.3 TLS_AES_128_GCM_SHA256".to_string());
    let ehlo = s.command(b"EHLO c").replies[0].to_string();
    assert!(
        !ehlo.contains("STARTTLS") && ehlo.contains("AUTH PLAIN LOGIN"),
        "{ehlo}"
    );
    assert_eq!(one(&mut s, "STARTTLS"), "503 5.5.1");
    assert_eq!(
        one(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0secret"))),
        "235 2.7.0"
    );
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<root@example.com>");
    let trace = s.trace_headers("ID", "date");
    assert!(
        trace.contains(" with ESMTPSA (TLSv1.3 TLS_AES_128_GCM_SHA256) id ID "),
        "{trace}"
    );
}

#[test]
fn submission_wants_tls_even_from_loopback() {
    let mut s = auth_session("127.0.0.1:4000", Mode::Submission, true);
    one(&mut s, "EHLO c");
    assert_eq!(
        one(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0secret"))),
        "235 2.7.0"
    );
    assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "530 5.7.0");
}

#[test]
fn submission_accepts_mail_after_tls_and_auth() {
    let mut s = auth_session("192.0.2.1:4000", Mode::Submission, true);
    one(&mut s, "EHLO c");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "530 5.7.0");
    s.tls_started("TLSv1.3".to_string());
    one(&mut s, "EHLO c");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "530 5.7.0");
    one(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0secret")));
    assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "250 2.1.0");
}

#[test]
fn starttls_forgets_the_session() {
    let mut s = auth_session("192.0.2.1:4000", Mode::Smtp, true);
    one(&mut s, "EHLO c");
    let step = s.command(b"STARTTLS");
    assert_eq!(step.replies[0].to_string(), "220 2.0.0 Ready to start TLS");
    assert_eq!(step.action, Action::StartTls);
    s.tls_started("TLSv1.2".to_string());
    assert_eq!(
        one(&mut s, "MAIL FROM:<a@b>"),
        "503 5.5.1",
        "HELO forgotten"
    );
}
