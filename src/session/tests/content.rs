//! The message phase: DATA and BDAT content pushed through the session
//! into the scripted store, and every way a message ends.

use super::*;

/// MAIL and RCPT, DATA, and the message opened: the session waits for
/// the content.
fn data_opened(s: &mut Session) -> ContentRules {
    one(s, "MAIL FROM:<a@b>");
    one(s, "RCPT TO:<a@example.com>");
    let rules = s.content_rules();
    let step = s.command(b"DATA");
    assert_eq!(
        step.replies[0].to_string(),
        "354 End data with <CR><LF>.<CR><LF>"
    );
    assert_eq!(step.action, Action::Continue);
    assert!(s.reading_content(), "DATA did not begin a message");
    rules
}

/// A session whose messages may hold `max` bytes, in a store of its own.
fn small_session(max: u64) -> (Session, Arc<Scripted>) {
    let mut c = config();
    c.limits.max_message_size = max;
    let store = never_full();
    let s = session_with(c, "127.0.0.1:4000", store.clone(), Mode::Smtp);
    (s, store)
}

#[test]
fn content_rules_at_end_of_data() {
    let mut s = session();
    one(&mut s, "EHLO c");
    let rules = data_opened(&mut s);
    assert_eq!(rules.max_size, 10_485_760);
    s.input_closed();
    let (mut s, store) = small_session(10);
    one(&mut s, "EHLO c");
    data_opened(&mut s);
    let too_big = content(&mut s, b"0123456789a\r\n.\r\n");
    assert_eq!(too_big.status.unwrap(), "5.3.4");
    let mut s = session();
    one(&mut s, "EHLO c");
    data_opened(&mut s);
    let looped = "Received: x\r\n".repeat(101) + "\r\nbody\r\n.\r\n";
    assert_eq!(content(&mut s, looped.as_bytes()).status.unwrap(), "5.4.6");
    data_opened(&mut s);
    let ok = "Received: x\r\n".repeat(100) + "\r\nbody\r\n.\r\n";
    let reply = content(&mut s, ok.as_bytes());
    assert_eq!(reply.to_string(), "250 2.0.0 Ok: queued as ID");
    assert_eq!(
        one(&mut s, "RCPT TO:<a@example.com>"),
        "503 5.5.1",
        "transaction over"
    );
    // A message exactly at the limit is stored, and stored as sent.
    data_opened(&mut s);
    drop(s);
    let (mut s, store_10) = small_session(10);
    one(&mut s, "EHLO c");
    data_opened(&mut s);
    assert_eq!(content(&mut s, b"01234567\r\n.\r\n").code, 250);
    assert_eq!(store_10.finished(), [b"01234567\r\n".to_vec()]);
    assert!(store.finished().is_empty(), "nothing over the limit stored");
}

#[test]
fn bare_lf_rejected_when_configured() {
    let mut c = config();
    c.bare_lf = BareLf::Reject;
    let mut s = session_with(c, "127.0.0.1:4000", never_full(), Mode::Smtp);
    one(&mut s, "EHLO c");
    let rules = data_opened(&mut s);
    assert_eq!(rules.bare_lf, BareLf::Reject);
    assert_eq!(
        content(&mut s, b"a\nb\r\n.\r\n").to_string(),
        "550 5.6.0 Bare CR or LF in message content is not allowed"
    );
}

#[test]
fn delivery_errors_map_to_replies() {
    let store = never_full();
    let mut s = session_with(config(), "127.0.0.1:4000", store.clone(), Mode::Smtp);
    one(&mut s, "EHLO c");
    data_opened(&mut s);
    let full = DeliveryError::io(Path::new("/x"), std::io::Error::from_raw_os_error(28));
    store.fail_next_finish(full);
    assert_eq!(content(&mut s, b".\r\n").status.unwrap(), "4.3.1");
    data_opened(&mut s);
    let broken = DeliveryError::io(Path::new("/x"), std::io::Error::from_raw_os_error(5));
    store.fail_next_finish(broken);
    assert_eq!(content(&mut s, b".\r\n").status.unwrap(), "4.3.0");
    // Each failure's reply, one by one (these were maildir's own once).
    let io = |errno| DeliveryError::io(Path::new("/x"), std::io::Error::from_raw_os_error(errno));
    assert_eq!(failure_reply(&io(28)), Reply::no_storage());
    assert_eq!(failure_reply(&io(5)), Reply::local_error());
    let over = DeliveryError::Quota {
        maildir: PathBuf::from("/x"),
        used: 100,
        size: 50,
        quota: 120,
    };
    assert_eq!(failure_reply(&over), Reply::mailbox_full());
    data_opened(&mut s);
    store.fail_next_finish(over);
    assert_eq!(content(&mut s, b".\r\n"), Reply::mailbox_full());
    assert!(store.finished().is_empty());
}

#[test]
fn a_message_that_cannot_be_opened_is_a_reply_and_no_transaction() {
    let store = Arc::new(Scripted::failing_open(5));
    let mut s = session_with(config(), "127.0.0.1:4000", store, Mode::Smtp);
    one(&mut s, "EHLO c");
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<a@example.com>");
    let step = s.command(b"DATA");
    assert_eq!(
        (status_text(&step.replies[0]), step.action),
        ("4.3.0".to_string(), Action::Continue)
    );
    assert!(!s.reading_content());
    assert_eq!(one(&mut s, "DATA"), "503 5.5.1");
    // A BDAT chunk whose message cannot be opened is read and dropped.
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<a@example.com>");
    let step = s.command(b"BDAT 7");
    assert_eq!(status_text(&step.replies[0]), "4.3.0");
    assert!(s.reading_content(), "the chunk is read");
    assert_eq!(push_all(&mut s, b"1234567").len(), 0);
    assert!(!s.reading_content());
    assert_eq!(one(&mut s, "NOOP"), "250 2.0.0", "in step after the chunk");
}

#[test]
fn lf_only_session_is_the_clients_until_it_sends_crlf() {
    let store = never_full();
    let mut s = session_with(config(), "127.0.0.1:4000", store.clone(), Mode::Smtp);
    push_all(
        &mut s,
        b"HELO c\nMAIL FROM:<a@b>\nRCPT TO:<a@example.com>\n",
    );
    let steps = push_all(&mut s, b"DATA\n");
    assert_eq!(steps[0].replies[0].code, 354);
    // LF . LF ends the data of a session that never sent a CRLF.
    assert_eq!(content(&mut s, b"hi\n.\n").code, 250);
    assert_eq!(store.finished(), [b"hi\r\n".to_vec()]);
    // One CRLF line, and the exception is over for the session.
    one(&mut s, "NOOP");
    push_all(&mut s, b"MAIL FROM:<a@b>\nRCPT TO:<a@example.com>\nDATA\n");
    assert!(s.reading_content());
    assert!(push_all(&mut s, b"x\n.\n").is_empty(), "LF . LF is content");
    assert_eq!(content(&mut s, b"\r\n.\r\n").code, 250);
    // (The dot after a bare LF began a line: unstuffed, RFC 5321 4.5.2.)
    assert_eq!(store.finished()[1], b"x\r\n\r\n\r\n".to_vec());
}

#[test]
fn synchronization_rule_for_remote_clients_only() {
    let mut remote = session_with(config(), "192.0.2.1:4000", never_full(), Mode::Smtp);
    let step = remote.open(|| true);
    assert_eq!(
        step.replies[0].to_string(),
        "554 5.5.0 Protocol error: wait for the server's reply"
    );
    assert_eq!(
        step.action,
        Action::Close("talked before greeting (554 5.5.0)")
    );
    let mut remote = session_with(config(), "192.0.2.1:4000", never_full(), Mode::Smtp);
    assert_eq!(remote.open(|| false).replies[0].code, 220);
    one(&mut remote, "EHLO c");
    one(&mut remote, "MAIL FROM:<a@b>");
    one(&mut remote, "RCPT TO:<a@example.com>");
    let (_, step) = remote.push(b"DATA\r\nSubject: early\r\n");
    let step = step.unwrap();
    assert_eq!(step.replies[0].status.unwrap(), "5.5.0");
    assert_eq!(step.action, Action::Close("content before 354 (554 5.5.0)"));
    // Loopback clients may do both; the probe is not even asked.
    let mut local = session();
    let step = local.open(|| panic!("probed"));
    assert_eq!(step.replies[0].code, 220);
    one(&mut local, "EHLO c");
    one(&mut local, "MAIL FROM:<a@b>");
    one(&mut local, "RCPT TO:<a@example.com>");
    let (_, step) = local.push(b"DATA\r\nSubject: early\r\n");
    assert_eq!(step.unwrap().replies[0].code, 354);
    assert!(local.reading_content());
}

#[test]
fn bdat_flow() {
    let store = never_full();
    let mut s = session_with(config(), "127.0.0.1:4000", store.clone(), Mode::Smtp);
    one(&mut s, "EHLO c");
    // A refused chunk is read and thrown away.
    assert_eq!(one(&mut s, "BDAT 5"), "503 5.5.1");
    assert!(s.reading_content());
    assert!(push_all(&mut s, b"12345").is_empty());
    one(&mut s, "MAIL FROM:<a@b> BODY=BINARYMIME");
    assert_eq!(one(&mut s, "BDAT 5"), "554 5.5.1", "no recipient yet");
    assert!(push_all(&mut s, b"12345").is_empty());
    one(&mut s, "RCPT TO:<a@example.com>");
    assert_eq!(one(&mut s, "DATA"), "503 5.5.1", "BINARYMIME needs BDAT");
    let step = s.command(b"BDAT 5");
    assert!(
        step.replies.is_empty(),
        "the first chunk begins the message"
    );
    assert!(s.reading_content());
    let steps = push_all(&mut s, b"ab\ncd");
    assert_eq!(
        steps[0].replies[0].to_string(),
        "250 2.0.0 5 octets received"
    );
    assert_eq!(one(&mut s, "DATA"), "503 5.5.1", "no DATA after BDAT");
    let step = s.command(b"BDAT 0 LAST");
    assert_eq!(step.replies[0].to_string(), "250 2.0.0 Ok: queued as ID");
    assert_eq!(store.finished(), [b"ab\ncd".to_vec()], "byte for byte");
    // RSET between chunks drops the message.
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<a@example.com>");
    s.command(b"BDAT 3");
    push_all(&mut s, b"xyz");
    let step = s.command(b"RSET");
    assert_eq!(step.replies[0].to_string(), "250 2.0.0 Ok");
    assert_eq!(step.action, Action::Continue);
    assert_eq!(one(&mut s, "RCPT TO:<a@example.com>"), "503 5.5.1");
    assert_eq!(
        store.finished().len(),
        1,
        "the dropped message is not stored"
    );
    // A last chunk with content, pipelined after its command.
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<a@example.com>");
    let steps = push_all(&mut s, b"BDAT 2 LAST\r\nokNOOP\r\n");
    let replies: Vec<String> = steps
        .iter()
        .flat_map(|s| &s.replies)
        .map(|r| r.to_string())
        .collect();
    assert_eq!(replies, ["250 2.0.0 Ok: queued as ID", "250 2.0.0 Ok"]);
    assert_eq!(store.finished()[1], b"ok".to_vec());
}

#[test]
fn input_closed_names_the_phase_and_stores_nothing() {
    let store = never_full();
    let mut s = session_with(config(), "127.0.0.1:4000", store.clone(), Mode::Smtp);
    assert_eq!(s.input_closed(), "client closed");
    one(&mut s, "EHLO c");
    data_opened(&mut s);
    push_all(&mut s, b"half a message");
    assert_eq!(s.input_closed(), "client closed during DATA");
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<a@example.com>");
    s.command(b"BDAT 10");
    assert_eq!(s.input_closed(), "client closed during BDAT");
    assert!(store.finished().is_empty());
}

#[test]
fn starttls_forgets_the_message_and_the_partial_line() {
    let store = never_full();
    let mut s = session_with(config(), "127.0.0.1:4000", store.clone(), Mode::Smtp);
    one(&mut s, "EHLO c");
    one(&mut s, "MAIL FROM:<a@b>");
    one(&mut s, "RCPT TO:<a@example.com>");
    s.command(b"BDAT 1");
    push_all(&mut s, b"x");
    push_all(&mut s, b"MAIL FROM:<injected@");
    s.tls_started("TLSv1.3 (test)".to_string());
    assert!(!s.hold_replies());
    assert_eq!(
        one(&mut s, "MAIL FROM:<a@b>"),
        "503 5.5.1",
        "HELO forgotten"
    );
    assert!(store.finished().is_empty());
}
