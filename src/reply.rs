//! SMTP replies: one type, and every reply smtpbox sends built here by one
//! named constructor, so each text is written once and no reply after the
//! greeting can miss its enhanced status code (RFC 2034, RFC 3463).
//!
//! The enhanced status is a typed value ([`Status`]) whose class must
//! agree with the reply code. Every constructor below checks the pair in a
//! `const` block, so a mismatch (`250 5.1.1`) or a reply without a status
//! where one is due fails to compile instead of reaching a client.

use std::borrow::Cow;
use std::fmt;

/// One SMTP reply: a three-digit code, an enhanced status code (none only
/// on the replies of [`Head::bare`]), and one or more lines of text.
///
/// A one-line reply with a constant text allocates nothing (musl's
/// allocator is slow, and most replies are "250 2.1.0 Ok").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: Option<Status>,
    first: Cow<'static, str>,
    /// The lines after the first (multi-line replies only).
    more: Vec<String>,
}

/// The class of a reply and of its enhanced status (RFC 3463 §3.1): the
/// first digit of both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// 2: the command succeeded.
    Success = 2,
    /// 4: try again later.
    Transient = 4,
    /// 5: do not try again as is.
    Permanent = 5,
}

/// An enhanced status code `class.subject.detail` (RFC 3463 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    class: Class,
    subject: u16,
    detail: u16,
}

impl Status {
    /// `class.subject.detail`; the class is 2, 4 or 5 and the other two
    /// parts at most three digits, or this panics (at compile time in a
    /// `const`, which is where every status here is made):
    ///
    /// ```compile_fail,E0080
    /// const PROVISIONAL: smtpbox::reply::Status = smtpbox::reply::Status::new(3, 0, 0);
    /// let _ = PROVISIONAL;
    /// ```
    pub const fn new(class: u8, subject: u16, detail: u16) -> Status {
        let class = match class {
            2 => Class::Success,
            4 => Class::Transient,
            5 => Class::Permanent,
            _ => panic!("an enhanced status class is 2, 4 or 5"),
        };
        assert!(
            subject <= 999 && detail <= 999,
            "subject and detail are 1-3 digits"
        );
        Status {
            class,
            subject,
            detail,
        }
    }

    pub fn class(self) -> Class {
        self.class
    }

    pub fn subject(self) -> u16 {
        self.subject
    }

    pub fn detail(self) -> u16 {
        self.detail
    }

    /// Appends `c.s.d` to `out` without formatting machinery.
    fn write_to(self, out: &mut Vec<u8>) {
        out.push(b'0' + self.class as u8);
        for part in [self.subject, self.detail] {
            out.push(b'.');
            push_decimal(out, part);
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class as u8, self.subject, self.detail)
    }
}

/// Tests and oracles compare a status with its text (`"5.7.1"`).
impl PartialEq<&str> for Status {
    fn eq(&self, text: &&str) -> bool {
        let mut buf = Vec::with_capacity(11);
        self.write_to(&mut buf);
        buf == text.as_bytes()
    }
}

/// A reply code and its enhanced status, checked against each other. Only
/// made in `const` blocks, so the checks run when smtpbox is compiled.
#[derive(Clone, Copy)]
struct Head {
    code: u16,
    status: Option<Status>,
}

impl Head {
    /// A code 200–599 with a status of its class.
    const fn new(code: u16, status: Status) -> Head {
        assert!(code >= 200 && code <= 599, "a reply code is 2xx-5xx");
        assert!(
            code / 100 == status.class as u16,
            "the enhanced status class must be the reply code's"
        );
        Head {
            code,
            status: Some(status),
        }
    }

    /// The replies that carry no enhanced status: the greeting (220), the
    /// HELO and EHLO replies (250, RFC 2034 §3) and the 3xx intermediate
    /// replies (334 AUTH challenge, 354 DATA go-ahead).
    const fn bare(code: u16) -> Head {
        assert!(
            matches!(code, 220 | 250 | 334 | 354),
            "only the greeting, HELO/EHLO, 334 and 354 go without a status"
        );
        Head { code, status: None }
    }

    const fn text(self, text: &'static str) -> Reply {
        Reply {
            code: self.code,
            status: self.status,
            first: Cow::Borrowed(text),
            more: Vec::new(),
        }
    }

    fn owned(self, text: String) -> Reply {
        Reply {
            code: self.code,
            status: self.status,
            first: Cow::Owned(text),
            more: Vec::new(),
        }
    }

    fn lines(self, lines: Vec<String>) -> Reply {
        let mut lines = lines.into_iter();
        Reply {
            code: self.code,
            status: self.status,
            first: lines.next().unwrap_or_default().into(),
            more: lines.collect(),
        }
    }
}

/// `code` with the status `[class, subject, detail]`, checked when compiled.
macro_rules! head {
    ($code:literal, [$class:literal, $subject:literal, $detail:literal]) => {
        const { Head::new($code, Status::new($class, $subject, $detail)) }
    };
}

/// A one-line reply with a constant text, made entirely at compile time.
macro_rules! fixed {
    ($code:literal, [$class:literal, $subject:literal, $detail:literal], $text:literal) => {
        const { Head::new($code, Status::new($class, $subject, $detail)).text($text) }
    };
}

/// The replies of SPEC §5 (and §4, §6), in the order of a session.
impl Reply {
    // ---- Connection ----

    /// `220 HOSTNAME ESMTP smtpbox`.
    pub fn greeting(hostname: &str) -> Reply {
        const { Head::bare(220) }.owned(format!("{hostname} ESMTP smtpbox"))
    }

    /// `421 4.3.2` at connect: over `max_connections` (or per-IP).
    pub fn too_busy() -> Reply {
        fixed!(421, [4, 3, 2], "Too many connections, try again later")
    }

    /// `421 4.4.2`: a read or session timeout.
    pub fn timeout() -> Reply {
        fixed!(421, [4, 4, 2], "Timeout: closing connection")
    }

    /// `554 5.5.0`: the client spoke before the greeting or the 354
    /// (RFC 2920 synchronization).
    pub fn unsynchronized() -> Reply {
        fixed!(
            554,
            [5, 5, 0],
            "Protocol error: wait for the server's reply"
        )
    }

    /// `421 4.7.0` after `max_errors` bad commands.
    pub fn too_many_errors() -> Reply {
        fixed!(421, [4, 7, 0], "Too many errors, closing connection")
    }

    // ---- Command lines ----

    /// `500 5.5.2`: a command line over 2048 bytes.
    pub fn line_too_long() -> Reply {
        fixed!(500, [5, 5, 2], "Line too long")
    }

    /// `500 5.5.2`: a NUL byte in a command line.
    pub fn nul_byte() -> Reply {
        fixed!(500, [5, 5, 2], "NUL byte in command")
    }

    /// `500 5.5.2`: no such verb.
    pub fn unrecognized() -> Reply {
        fixed!(500, [5, 5, 2], "Command unrecognized")
    }

    /// `501 5.5.4` with the usage text of the command or parameter.
    pub fn syntax(usage: impl Into<Cow<'static, str>>) -> Reply {
        match usage.into() {
            Cow::Borrowed(text) => head!(501, [5, 5, 4]).text(text),
            Cow::Owned(text) => head!(501, [5, 5, 4]).owned(text),
        }
    }

    /// `555 5.5.4`: an ESMTP parameter smtpbox does not know.
    pub fn unsupported_parameter(key: &str) -> Reply {
        head!(555, [5, 5, 4]).owned(format!("Unsupported parameter {key}"))
    }

    /// `553 5.1.7`: a reverse-path that breaks RFC 5321 §4.1.2.
    pub fn invalid_sender() -> Reply {
        fixed!(553, [5, 1, 7], "Invalid sender address")
    }

    /// `553 5.1.3`: a forward-path that breaks RFC 5321 §4.1.2.
    pub fn invalid_recipient() -> Reply {
        fixed!(553, [5, 1, 3], "Invalid recipient address")
    }

    /// `501 5.1.7`: a reverse-path over an RFC 5321 §4.5.3.1 limit.
    pub fn sender_too_long() -> Reply {
        fixed!(501, [5, 1, 7], "The sender address is too long")
    }

    /// `501 5.1.3`: a forward-path over an RFC 5321 §4.5.3.1 limit.
    pub fn recipient_too_long() -> Reply {
        fixed!(501, [5, 1, 3], "The recipient address is too long")
    }

    /// `501 5.1.3`: `RCPT TO:<>`.
    pub fn null_recipient() -> Reply {
        fixed!(501, [5, 1, 3], "Null recipient not allowed")
    }

    // ---- Simple verbs ----

    /// `250 2.0.0 Ok`: NOOP, RSET.
    pub fn ok() -> Reply {
        fixed!(250, [2, 0, 0], "Ok")
    }

    /// `221 2.0.0`: QUIT.
    pub fn bye() -> Reply {
        fixed!(221, [2, 0, 0], "Bye")
    }

    /// `214 2.0.0`: HELP.
    pub fn help() -> Reply {
        head!(214, [2, 0, 0]).lines(vec![
            "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY STARTTLS AUTH"
                .to_string(),
            "smtpbox delivers to local Maildirs only".to_string(),
        ])
    }

    /// `252 2.5.0`: VRFY neither confirms nor denies (RFC 5321 §3.5.3).
    pub fn vrfy() -> Reply {
        fixed!(252, [2, 5, 0], "Cannot VRFY user, but will accept message")
    }

    /// `502 5.5.1`: EXPN.
    pub fn expn() -> Reply {
        fixed!(502, [5, 5, 1], "EXPN not available")
    }

    /// `502 5.5.1`: ETRN, TURN, SEND, SOML, SAML.
    pub fn not_implemented(verb: &str) -> Reply {
        head!(502, [5, 5, 1]).owned(format!("{verb} not implemented"))
    }

    /// `521 5.7.0`: HTTP spoken to an SMTP port; the session closes.
    pub fn forbidden() -> Reply {
        fixed!(521, [5, 7, 0], "This is an SMTP server")
    }

    // ---- HELO, EHLO ----

    /// The HELO reply: `250 HOSTNAME`, no enhanced status (RFC 2034 §3).
    pub fn helo(hostname: String) -> Reply {
        const { Head::bare(250) }.owned(hostname)
    }

    /// The EHLO reply: the hostname, then the keywords of SPEC §5, none
    /// with an enhanced status (RFC 2034 §3: keyword lines must not).
    pub fn ehlo(hostname: String, max_size: u64, starttls: bool, auth: bool) -> Reply {
        // Pushed one by one: a `vec![...]` of them is built on the stack
        // first, a large frame on the path of every session's EHLO (the
        // stack budget at `conn::serve`).
        let mut lines = Vec::with_capacity(11);
        lines.push(hostname);
        lines.push("PIPELINING".to_string());
        lines.push(format!("SIZE {max_size}"));
        for keyword in [
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "DSN",
        ] {
            lines.push(keyword.to_string());
        }
        if starttls {
            lines.push("STARTTLS".to_string());
        }
        if auth {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        lines.push("HELP".to_string());
        const { Head::bare(250) }.lines(lines)
    }

    // ---- Order of commands ----

    /// `503 5.5.1`: MAIL, DATA or BDAT before HELO/EHLO.
    pub fn hello_first() -> Reply {
        fixed!(503, [5, 5, 1], "Send HELO or EHLO first")
    }

    /// `503 5.5.1`: AUTH before EHLO.
    pub fn ehlo_first() -> Reply {
        fixed!(503, [5, 5, 1], "Send EHLO first")
    }

    /// `503 5.5.1`: RCPT, DATA or BDAT before MAIL.
    pub fn mail_first() -> Reply {
        fixed!(503, [5, 5, 1], "Need MAIL command first")
    }

    /// `503 5.5.1`: MAIL inside a transaction.
    pub fn nested_mail() -> Reply {
        fixed!(503, [5, 5, 1], "Nested MAIL command")
    }

    /// `554 5.5.1`: DATA or BDAT without a valid recipient.
    pub fn no_valid_recipients() -> Reply {
        fixed!(554, [5, 5, 1], "No valid recipients")
    }

    /// `503 5.5.1`: DATA after BDAT, or for a BINARYMIME message
    /// (RFC 3030 §3).
    pub fn use_bdat() -> Reply {
        fixed!(503, [5, 5, 1], "Use BDAT for this message")
    }

    // ---- MAIL ----

    /// `250 2.1.0 Ok`: the sender is accepted.
    pub fn sender_ok() -> Reply {
        fixed!(250, [2, 1, 0], "Ok")
    }

    /// `530 5.7.0`: MAIL on a submission listener before STARTTLS.
    pub fn starttls_first() -> Reply {
        fixed!(530, [5, 7, 0], "Must issue a STARTTLS command first")
    }

    /// `530 5.7.0`: MAIL on a submission listener before AUTH.
    pub fn auth_required() -> Reply {
        fixed!(530, [5, 7, 0], "Authentication required")
    }

    /// `552 5.3.4`: a declared SIZE over `max_message_size`.
    pub fn size_over_limit() -> Reply {
        fixed!(552, [5, 3, 4], "Message size exceeds fixed limit")
    }

    /// `553 5.6.7`: a non-ASCII address without SMTPUTF8 (RFC 6531 §3.4).
    pub fn needs_smtputf8() -> Reply {
        fixed!(553, [5, 6, 7], "Non-ASCII address requires SMTPUTF8")
    }

    // ---- RCPT (SPEC §4) ----

    /// `250 2.1.5 Ok`: the recipient is accepted.
    pub fn recipient_ok() -> Reply {
        fixed!(250, [2, 1, 5], "Ok")
    }

    /// `452 4.5.3`: over `max_recipients`.
    pub fn too_many_recipients() -> Reply {
        fixed!(452, [4, 5, 3], "Too many recipients")
    }

    /// `550 5.7.1`: not a local recipient; smtpbox never relays.
    pub fn relay_denied(address: &str) -> Reply {
        head!(550, [5, 7, 1]).owned(format!("<{address}>: Relay access denied"))
    }

    /// `550 5.1.1`: a local recipient without a mailbox.
    pub fn no_such_user(address: &str) -> Reply {
        head!(550, [5, 1, 1]).owned(format!("<{address}>: No such user here"))
    }

    /// `452 4.2.2`: the recipient's Maildir is over `maildir_quota`.
    pub fn recipient_mailbox_full(address: &str) -> Reply {
        head!(452, [4, 2, 2]).owned(format!("<{address}>: Mailbox full"))
    }

    // ---- DATA, BDAT and the message (SPEC §6) ----

    /// `354`: send the content.
    pub fn data_go_ahead() -> Reply {
        const { Head::bare(354).text("End data with <CR><LF>.<CR><LF>") }
    }

    /// `250 2.0.0`: a non-final BDAT chunk was read.
    pub fn chunk_received(size: u64) -> Reply {
        head!(250, [2, 0, 0]).owned(format!("{size} octets received"))
    }

    /// `250 2.0.0`: the message is stored.
    pub fn queued(id: &str) -> Reply {
        head!(250, [2, 0, 0]).owned(format!("Ok: queued as {id}"))
    }

    /// `552 5.3.4`: the content went over `max_message_size`.
    pub fn message_too_big() -> Reply {
        fixed!(552, [5, 3, 4], "Message too big")
    }

    /// `550 5.6.0`: a bare CR or LF under `bare_lf = reject`.
    pub fn bare_line_ending() -> Reply {
        fixed!(
            550,
            [5, 6, 0],
            "Bare CR or LF in message content is not allowed"
        )
    }

    /// `554 5.4.6`: more Received headers than a mail loop would leave.
    pub fn mail_loop() -> Reply {
        fixed!(554, [5, 4, 6], "Too many Received headers: mail loop")
    }

    /// `452 4.2.2`: the Maildir went over its quota during delivery.
    pub fn mailbox_full() -> Reply {
        fixed!(452, [4, 2, 2], "Mailbox full")
    }

    /// `452 4.3.1`: no space left for the message.
    pub fn no_storage() -> Reply {
        fixed!(452, [4, 3, 1], "Insufficient system storage")
    }

    /// `451 4.3.0`: any other delivery failure (the log says which).
    pub fn local_error() -> Reply {
        fixed!(451, [4, 3, 0], "Local error in processing")
    }

    // ---- STARTTLS ----

    /// `220 2.0.0`: the TLS handshake follows.
    pub fn ready_for_tls() -> Reply {
        fixed!(220, [2, 0, 0], "Ready to start TLS")
    }

    /// `502 5.5.1`: no certificate configured.
    pub fn starttls_unavailable() -> Reply {
        fixed!(502, [5, 5, 1], "STARTTLS not available")
    }

    /// `503 5.5.1`: STARTTLS under TLS.
    pub fn tls_active() -> Reply {
        fixed!(503, [5, 5, 1], "TLS already active")
    }

    // ---- AUTH (RFC 4954) ----

    /// `334`: a SASL challenge (base64, possibly empty).
    pub fn auth_challenge(prompt: &'static str) -> Reply {
        const { Head::bare(334) }.text(prompt)
    }

    /// `235 2.7.0`.
    pub fn auth_ok() -> Reply {
        fixed!(235, [2, 7, 0], "Authentication successful")
    }

    /// `535 5.7.8`: bad credentials (counts toward the three failures).
    pub fn auth_invalid() -> Reply {
        fixed!(535, [5, 7, 8], "Authentication credentials invalid")
    }

    /// `454 4.7.0`: the users file cannot be read (RFC 4954 §6).
    pub fn auth_unavailable() -> Reply {
        fixed!(454, [4, 7, 0], "Temporary authentication failure")
    }

    /// `421 4.7.0`: the third failed AUTH; the session closes.
    pub fn too_many_auth_failures() -> Reply {
        fixed!(421, [4, 7, 0], "Too many authentication failures")
    }

    /// `501 5.7.0`: the client sent `*`.
    pub fn auth_cancelled() -> Reply {
        fixed!(501, [5, 7, 0], "Authentication cancelled")
    }

    /// `501 5.5.2`: a response that is not base64.
    pub fn auth_bad_base64() -> Reply {
        fixed!(501, [5, 5, 2], "Cannot decode response")
    }

    /// `501 5.5.2`: base64 that is not a PLAIN or LOGIN response.
    pub fn auth_malformed() -> Reply {
        fixed!(501, [5, 5, 2], "Malformed authentication response")
    }

    /// `503 5.5.1`: no users file configured.
    pub fn auth_not_enabled() -> Reply {
        fixed!(503, [5, 5, 1], "Authentication not enabled")
    }

    /// `538 5.7.11`: AUTH in clear text from a remote client.
    pub fn auth_needs_tls() -> Reply {
        fixed!(
            538,
            [5, 7, 11],
            "Encryption required for requested authentication mechanism"
        )
    }

    /// `503 5.5.1`: AUTH after a successful AUTH.
    pub fn already_authenticated() -> Reply {
        fixed!(503, [5, 5, 1], "Already authenticated")
    }

    /// `503 5.5.1`: AUTH between MAIL and the end of the transaction.
    pub fn auth_in_transaction() -> Reply {
        fixed!(503, [5, 5, 1], "AUTH not allowed during a mail transaction")
    }

    /// `504 5.5.4`: a mechanism other than PLAIN and LOGIN.
    pub fn auth_mechanism_unknown() -> Reply {
        fixed!(504, [5, 5, 4], "Unrecognized authentication mechanism")
    }
}

impl Reply {
    /// The text lines, first to last.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&*self.first).chain(self.more.iter().map(String::as_str))
    }

    /// True for 4xx and 5xx replies.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the reply in wire form (CRLF line endings) to `out`. A
    /// multi-line reply carries its status on every line (HELP); EHLO's
    /// lines carry none.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        // Codes are three digits (RFC 5321 §4.2): every constructor
        // makes one in 200..=599.
        let code = self.code.min(999);
        let digits = [code / 100, code / 10 % 10, code % 10].map(|d| b'0' + d as u8);
        let last = self.more.len();
        for (i, line) in self.lines().enumerate() {
            let sep = if i == last { b' ' } else { b'-' };
            out.extend_from_slice(&digits);
            out.push(sep);
            if let Some(status) = self.status {
                status.write_to(out);
                out.push(b' ');
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::new();
        self.write_to(&mut buf);
        f.write_str(String::from_utf8_lossy(&buf).trim_end())
    }
}

/// Up to three decimal digits (a status part is at most 999).
fn push_decimal(out: &mut Vec<u8>, n: u16) {
    let n = n.min(999);
    if n >= 100 {
        out.push(b'0' + (n / 100) as u8);
    }
    if n >= 10 {
        out.push(b'0' + (n / 10 % 10) as u8);
    }
    out.push(b'0' + (n % 10) as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &Reply) -> String {
        let mut v = Vec::new();
        r.write_to(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn one_line_reply_carries_enhanced_code() {
        assert_eq!(wire(&Reply::sender_ok()), "250 2.1.0 Ok\r\n");
        assert_eq!(
            wire(&Reply::auth_needs_tls()),
            "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
        );
    }

    #[test]
    fn greeting_has_no_enhanced_code() {
        let r = Reply::greeting("mx");
        assert_eq!(wire(&r), "220 mx ESMTP smtpbox\r\n");
        assert_eq!(r.status, None);
    }

    #[test]
    fn ehlo_lines_are_bare_keywords() {
        let r = Reply::ehlo("mx".into(), 5, false, false);
        assert_eq!(
            wire(&r),
            "250-mx\r\n250-PIPELINING\r\n250-SIZE 5\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
             250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-DSN\r\n250 HELP\r\n"
        );
        let r = Reply::ehlo("mx".into(), 5, true, true);
        assert!(wire(&r).contains("250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 HELP\r\n"));
    }

    #[test]
    fn multi_line_help_repeats_code() {
        assert_eq!(
            wire(&Reply::help()),
            "214-2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY \
             STARTTLS AUTH\r\n214 2.0.0 smtpbox delivers to local Maildirs only\r\n"
        );
    }

    #[test]
    fn status_parts_are_typed_and_print_as_text() {
        let s = Status::new(5, 7, 11);
        assert_eq!(
            (s.class(), s.subject(), s.detail()),
            (Class::Permanent, 7, 11)
        );
        assert_eq!(s.to_string(), "5.7.11");
        assert_eq!(s, "5.7.11");
        assert_ne!(s, "5.7.1");
        assert_eq!(Status::new(4, 100, 999), "4.100.999");
        assert_eq!(Reply::timeout().status, Some(Status::new(4, 4, 2)));
    }

    #[test]
    fn class_agrees_with_the_code_on_every_reply() {
        let all = [
            Reply::greeting("mx"),
            Reply::too_busy(),
            Reply::timeout(),
            Reply::unsynchronized(),
            Reply::too_many_errors(),
            Reply::line_too_long(),
            Reply::nul_byte(),
            Reply::unrecognized(),
            Reply::syntax("x"),
            Reply::syntax(String::from("y")),
            Reply::unsupported_parameter("X"),
            Reply::invalid_sender(),
            Reply::invalid_recipient(),
            Reply::sender_too_long(),
            Reply::recipient_too_long(),
            Reply::null_recipient(),
            Reply::ok(),
            Reply::bye(),
            Reply::help(),
            Reply::vrfy(),
            Reply::expn(),
            Reply::not_implemented("TURN"),
            Reply::forbidden(),
            Reply::helo("mx".into()),
            Reply::ehlo("mx".into(), 1, true, true),
            Reply::hello_first(),
            Reply::ehlo_first(),
            Reply::mail_first(),
            Reply::nested_mail(),
            Reply::no_valid_recipients(),
            Reply::use_bdat(),
            Reply::sender_ok(),
            Reply::starttls_first(),
            Reply::auth_required(),
            Reply::size_over_limit(),
            Reply::needs_smtputf8(),
            Reply::recipient_ok(),
            Reply::too_many_recipients(),
            Reply::relay_denied("a@b"),
            Reply::no_such_user("a@b"),
            Reply::recipient_mailbox_full("a@b"),
            Reply::data_go_ahead(),
            Reply::chunk_received(1),
            Reply::queued("id"),
            Reply::message_too_big(),
            Reply::bare_line_ending(),
            Reply::mail_loop(),
            Reply::mailbox_full(),
            Reply::no_storage(),
            Reply::local_error(),
            Reply::ready_for_tls(),
            Reply::starttls_unavailable(),
            Reply::tls_active(),
            Reply::auth_challenge(""),
            Reply::auth_ok(),
            Reply::auth_invalid(),
            Reply::auth_unavailable(),
            Reply::too_many_auth_failures(),
            Reply::auth_cancelled(),
            Reply::auth_bad_base64(),
            Reply::auth_malformed(),
            Reply::auth_not_enabled(),
            Reply::auth_needs_tls(),
            Reply::already_authenticated(),
            Reply::auth_in_transaction(),
            Reply::auth_mechanism_unknown(),
        ];
        let mut texts = Vec::new();
        for r in &all {
            assert!((200..=599).contains(&r.code), "{r}");
            match r.status {
                Some(s) => assert_eq!(s.class() as u16, r.code / 100, "{r}"),
                None => assert!([220, 250, 334, 354].contains(&r.code), "{r}"),
            }
            // The wire form parses back to the code and the status.
            let line = r.to_string();
            assert!(line.starts_with(&r.code.to_string()), "{r}");
            if let Some(s) = r.status {
                assert_eq!(line.get(4..4 + s.to_string().len()), Some(&*s.to_string()));
            }
            texts.push(line);
        }
        // No two constructors make the same reply.
        let mut unique = texts.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), texts.len());
    }
}
