//! SMTP command lines: parsed once, at the edge, into typed values
//! (RFC 5321 §4.1, RFC 1869 parameters, RFC 6531 SMTPUTF8, RFC 3461 DSN,
//! RFC 3030 BDAT, RFC 4954 AUTH).
//!
//! `parse` takes one command line without its line ending and returns a
//! `Command` or the exact error `Reply` the client gets.

pub use crate::address::{parse_address, Address, AddressError, Domain};
use crate::address::{parse_mailbox, PathError};
use crate::reply::Reply;

/// MAIL FROM's path: `<>` or an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReversePath {
    Null,
    Address(Address),
}

/// BODY= (RFC 6152, RFC 3030).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Body {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// RET= (RFC 3461).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// MAIL FROM parameters (RFC 1869 §6).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Body,
    pub smtputf8: bool,
    /// AUTH= value, xtext-decoded (`<>` is kept as `<>`).
    pub auth: Option<String>,
    pub ret: Option<Ret>,
    /// ENVID= value, xtext-decoded.
    pub envid: Option<String>,
}

/// RCPT TO parameters (RFC 3461 §4).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RcptParams {
    /// NOTIFY= values as given (NEVER, or a list of SUCCESS/FAILURE/DELAY).
    pub notify: Option<String>,
    /// ORCPT= value, xtext-decoded (`rfc822;addr`).
    pub orcpt: Option<String>,
}

/// One parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    Mail {
        from: ReversePath,
        params: MailParams,
    },
    Rcpt {
        to: Address,
        params: RcptParams,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Help,
    Vrfy,
    Expn,
    /// ETRN, TURN, SEND, SOML, SAML: recognised, never implemented.
    NotImplemented(&'static str),
    StartTls,
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// HTTP spoken to an SMTP port (CONNECT, GET, POST, HEAD, PUT).
    Forbidden,
}

/// Parses one command line, given without its CRLF, into a [`Command`], or
/// into the reply the client gets for it. Never panics, whatever the bytes.
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    let line = line.trim_ascii();
    let (verb, args) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], line[i + 1..].trim_ascii()),
        None => (line, &line[line.len()..]),
    };
    // RFC 5321 §2.4: verbs are case-insensitive. Upper-cased on the stack
    // (no allocation per command): no verb is longer than eight bytes, and
    // a non-ASCII byte matches none.
    let mut upper = [0u8; 8];
    let Some(upper) = upper.get_mut(..verb.len()) else {
        return Err(Reply::unrecognized());
    };
    upper.copy_from_slice(verb);
    upper.make_ascii_uppercase();
    let verb = std::str::from_utf8(upper).unwrap_or("");
    match verb {
        "HELO" => hello_arg(args, "Syntax: HELO hostname").map(Command::Helo),
        "EHLO" => hello_arg(args, "Syntax: EHLO hostname").map(Command::Ehlo),
        "MAIL" => parse_mail(args),
        "RCPT" => parse_rcpt(args),
        "DATA" => no_args(args, Command::Data, "Syntax: DATA"),
        "RSET" => no_args(args, Command::Rset, "Syntax: RSET"),
        "QUIT" => no_args(args, Command::Quit, "Syntax: QUIT"),
        "STARTTLS" => no_args(args, Command::StartTls, "Syntax: STARTTLS"),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "AUTH" => parse_auth(args),
        "BDAT" => parse_bdat(args),
        "ETRN" => Ok(Command::NotImplemented("ETRN")),
        "TURN" => Ok(Command::NotImplemented("TURN")),
        "SEND" => Ok(Command::NotImplemented("SEND")),
        "SOML" => Ok(Command::NotImplemented("SOML")),
        "SAML" => Ok(Command::NotImplemented("SAML")),
        "CONNECT" | "GET" | "POST" | "HEAD" | "PUT" => Ok(Command::Forbidden),
        _ => Err(Reply::unrecognized()),
    }
}

/// Whose address is being parsed: it picks the enhanced status code
/// (RFC 3463: X.1.7 bad sender syntax, X.1.3 bad destination syntax).
#[derive(Clone, Copy)]
enum Role {
    Sender,
    Recipient,
}

impl PathError {
    fn reply(self, role: Role, usage: &'static str) -> Reply {
        match (self, role) {
            (PathError::Syntax, _) => Reply::syntax(usage),
            (PathError::Invalid, Role::Sender) => Reply::invalid_sender(),
            (PathError::Invalid, Role::Recipient) => Reply::invalid_recipient(),
            (PathError::TooLong, Role::Sender) => Reply::sender_too_long(),
            (PathError::TooLong, Role::Recipient) => Reply::recipient_too_long(),
        }
    }
}

/// Space-separated words, empty ones skipped.
fn words(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|&b| b == b' ').filter(|w| !w.is_empty())
}

fn no_args(args: &[u8], command: Command, usage: &'static str) -> Result<Command, Reply> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(Reply::syntax(usage))
    }
}

/// HELO/EHLO argument: any one printable word (RFC 5321 §4.1.1.1 asks for a
/// domain or address literal; real clients send worse, and we only log it).
fn hello_arg(args: &[u8], usage: &'static str) -> Result<String, Reply> {
    let word = std::str::from_utf8(args).map_err(|_| Reply::syntax(usage))?;
    if word.is_empty() || word.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Reply::syntax(usage));
    }
    Ok(word.to_string())
}

/// `MAIL FROM:<reverse-path> [params]` (RFC 5321 §4.1.1.2).
#[inline(never)] // Its frame stays off HELO's and EHLO's stack.
fn parse_mail(args: &[u8]) -> Result<Command, Reply> {
    const USAGE: &str = "Syntax: MAIL FROM:<address>";
    let rest = strip_prefix_ci(args, b"FROM:").ok_or_else(|| Reply::syntax(USAGE))?;
    let (path, rest) = split_path(rest).map_err(|e| e.reply(Role::Sender, USAGE))?;
    let from = if path.is_empty() {
        ReversePath::Null
    } else {
        ReversePath::Address(parse_mailbox(path).map_err(|e| e.reply(Role::Sender, USAGE))?)
    };
    let mut params = MailParams::default();
    for Param { key, value } in esmtp_params(rest)? {
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => {
                params.size =
                    Some(decimal(v).ok_or_else(|| Reply::syntax("Syntax: SIZE=<bytes>"))?);
            }
            ("BODY", Some(v)) => {
                params.body = match v.to_ascii_uppercase().as_slice() {
                    b"7BIT" => Body::SevenBit,
                    b"8BITMIME" => Body::EightBitMime,
                    b"BINARYMIME" => Body::BinaryMime,
                    _ => return Err(Reply::syntax("Syntax: BODY=7BIT|8BITMIME|BINARYMIME")),
                };
            }
            ("SMTPUTF8", None) => params.smtputf8 = true,
            // RFC 4954 §5: AUTH=xtext or AUTH=<>; "<>" is valid xtext as is.
            ("AUTH", Some(v)) => params.auth = Some(xtext(v)?),
            ("RET", Some(v)) => {
                params.ret = match v.to_ascii_uppercase().as_slice() {
                    b"FULL" => Some(Ret::Full),
                    b"HDRS" => Some(Ret::Hdrs),
                    _ => return Err(Reply::syntax("Syntax: RET=FULL|HDRS")),
                };
            }
            ("ENVID", Some(v)) => params.envid = Some(xtext(v)?),
            ("SIZE" | "BODY" | "SMTPUTF8" | "AUTH" | "RET" | "ENVID", _) => {
                return Err(Reply::syntax(format!("Syntax: bad {key} parameter")));
            }
            _ => return Err(Reply::unsupported_parameter(&key)),
        }
    }
    Ok(Command::Mail { from, params })
}

/// `RCPT TO:<forward-path> [params]` (RFC 5321 §4.1.1.3).
#[inline(never)] // Its frame stays off HELO's and EHLO's stack.
fn parse_rcpt(args: &[u8]) -> Result<Command, Reply> {
    const USAGE: &str = "Syntax: RCPT TO:<address>";
    let rest = strip_prefix_ci(args, b"TO:").ok_or_else(|| Reply::syntax(USAGE))?;
    let (path, rest) = split_path(rest).map_err(|e| e.reply(Role::Recipient, USAGE))?;
    if path.is_empty() {
        return Err(Reply::null_recipient());
    }
    let to = parse_mailbox(path).map_err(|e| e.reply(Role::Recipient, USAGE))?;
    let mut params = RcptParams::default();
    for Param { key, value } in esmtp_params(rest)? {
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) => params.notify = Some(notify(v)?),
            ("ORCPT", Some(v)) => {
                // RFC 3461 §4.2: ORCPT=addr-type ";" xtext
                if v.iter().position(|&b| b == b';').unwrap_or(0) == 0 {
                    return Err(Reply::syntax("Syntax: ORCPT=addr-type;address"));
                }
                params.orcpt = Some(xtext(v)?);
            }
            ("NOTIFY" | "ORCPT", None) => {
                return Err(Reply::syntax(format!("Syntax: bad {key} parameter")));
            }
            _ => return Err(Reply::unsupported_parameter(&key)),
        }
    }
    Ok(Command::Rcpt { to, params })
}

/// `AUTH mechanism [initial-response]` (RFC 4954 §4).
#[inline(never)] // Its frame stays off HELO's and EHLO's stack.
fn parse_auth(args: &[u8]) -> Result<Command, Reply> {
    const USAGE: &str = "Syntax: AUTH mechanism [initial-response]";
    let words: Vec<&[u8]> = words(args).collect();
    let (mechanism, initial) = match words.as_slice() {
        [m] => (*m, None),
        [m, i] => (*m, Some(*i)),
        _ => return Err(Reply::syntax(USAGE)),
    };
    // RFC 4422 §3.1: mechanism names are 1 to 20 of A-Z 0-9 - _.
    let name_ok = mechanism.len() <= 20
        && mechanism
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if !name_ok {
        return Err(Reply::syntax(USAGE));
    }
    let initial = match initial {
        Some(i) if i.iter().all(u8::is_ascii_graphic) => Some(ascii_string(i)),
        Some(_) => return Err(Reply::syntax(USAGE)),
        None => None,
    };
    Ok(Command::Auth {
        mechanism: ascii_string(mechanism).to_ascii_uppercase(),
        initial,
    })
}

/// `BDAT chunk-size [LAST]` (RFC 3030 §2).
fn parse_bdat(args: &[u8]) -> Result<Command, Reply> {
    const USAGE: &str = "Syntax: BDAT size [LAST]";
    let words: Vec<&[u8]> = words(args).collect();
    let (size, last) = match words.as_slice() {
        [n] => (*n, false),
        [n, l] if l.eq_ignore_ascii_case(b"LAST") => (*n, true),
        _ => return Err(Reply::syntax(USAGE)),
    };
    let size = decimal(size).ok_or_else(|| Reply::syntax(USAGE))?;
    Ok(Command::Bdat { size, last })
}

/// Only for bytes already checked to be ASCII.
fn ascii_string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// One or more decimal digits that fit a u64.
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Splits `<path> params` after FROM:/TO: into the bytes between the angle
/// brackets and the rest. A space before `<` is tolerated: many clients send
/// `MAIL FROM: <a@b>`.
fn split_path(s: &[u8]) -> Result<(&[u8], &[u8]), PathError> {
    let s = s.trim_ascii_start();
    if s.first() != Some(&b'<') {
        return Err(PathError::Syntax);
    }
    // Find the closing '>' outside a quoted local part ("a>b"@x is legal).
    let (mut quoted, mut escaped, mut end) = (false, false, None);
    for (i, &b) in s.iter().enumerate().skip(1) {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let end = match end {
        Some(end) => end,
        None if quoted => return Err(PathError::Invalid),
        None => return Err(PathError::Syntax),
    };
    let rest = &s[end + 1..];
    if !rest.is_empty() && rest[0] != b' ' {
        return Err(PathError::Syntax);
    }
    // RFC 5321 §4.5.3.1.3: a path is at most 256 octets, brackets included.
    if end + 1 > 256 {
        return Err(PathError::TooLong);
    }
    Ok((&s[1..end], rest))
}

/// One RFC 1869 `keyword[=value]` parameter, its keyword uppercased.
struct Param<'a> {
    key: String,
    value: Option<&'a [u8]>,
}

/// RFC 1869 §6: `keyword[=value]` words, keywords uppercased; a keyword given
/// twice is a syntax error.
fn esmtp_params(s: &[u8]) -> Result<Vec<Param<'_>>, Reply> {
    let mut params: Vec<Param> = Vec::new();
    for word in words(s) {
        let (key, value) = match word.iter().position(|&b| b == b'=') {
            Some(i) => (&word[..i], Some(&word[i + 1..])),
            None => (word, None),
        };
        // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        let key_ok = key.first().is_some_and(u8::is_ascii_alphanumeric)
            && key.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-');
        if !key_ok {
            return Err(Reply::syntax("Syntax: bad parameter"));
        }
        let key = ascii_string(key).to_ascii_uppercase();
        // A repeat with the same value is harmless (Python's smtplib sends
        // `SMTPUTF8 SMTPUTF8` when the caller asked for it too); a repeat
        // that disagrees is an error.
        match params.iter().find(|p| p.key == key) {
            Some(p)
                if p.value.map(<[u8]>::to_ascii_uppercase)
                    == value.map(<[u8]>::to_ascii_uppercase) => {}
            Some(_) => return Err(Reply::syntax(format!("Conflicting parameter {key}"))),
            None => params.push(Param { key, value }),
        }
    }
    Ok(params)
}

/// RFC 3461 §4.1: NOTIFY=NEVER, or a list of SUCCESS, FAILURE, DELAY.
fn notify(v: &[u8]) -> Result<String, Reply> {
    let usage = || Reply::syntax("Syntax: NOTIFY=NEVER or SUCCESS,FAILURE,DELAY");
    if !v.eq_ignore_ascii_case(b"NEVER") {
        let known = [&b"SUCCESS"[..], b"FAILURE", b"DELAY"];
        let item_ok = |item: &[u8]| known.iter().any(|k| k.eq_ignore_ascii_case(item));
        if !v.split(|&b| b == b',').all(item_ok) {
            return Err(usage());
        }
    }
    Ok(ascii_string(v))
}

/// Decodes RFC 3461 §4 xtext: 0x21-0x7E except '+' and '=', and "+XX" with
/// two uppercase hex digits. Empty, invalid or non-UTF-8 results are errors.
fn xtext(v: &[u8]) -> Result<String, Reply> {
    let bad = || Reply::syntax("Syntax: bad xtext value");
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'+' => {
                let hi = v.get(i + 1).copied().and_then(hex).ok_or_else(bad)?;
                let lo = v.get(i + 2).copied().and_then(hex).ok_or_else(bad)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b @ 0x21..=0x7e if b != b'=' => {
                out.push(b);
                i += 1;
            }
            _ => return Err(bad()),
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Status;

    const SYNTAX: (u16, &str) = (501, "5.5.4");
    const UNRECOGNIZED: (u16, &str) = (500, "5.5.2");
    const UNSUPPORTED: (u16, &str) = (555, "5.5.4");
    const BAD_SENDER: (u16, &str) = (553, "5.1.7");
    const BAD_RCPT: (u16, &str) = (553, "5.1.3");

    fn ok(line: &str) -> Command {
        parse(line.as_bytes()).unwrap_or_else(|r| panic!("{line:?} gave {r}"))
    }

    /// A reply's code and enhanced code, compared with `(501, "5.5.4")`.
    #[derive(Debug)]
    struct Code(u16, Option<Status>);

    impl PartialEq<(u16, &str)> for Code {
        fn eq(&self, (code, status): &(u16, &str)) -> bool {
            self.0 == *code && self.1.is_some_and(|s| s == *status)
        }
    }

    /// The code and enhanced code of the error reply to `line`.
    fn err(line: impl AsRef<[u8]>) -> Code {
        let line = line.as_ref();
        match parse(line) {
            Ok(c) => panic!("{:?} gave {c:?}", String::from_utf8_lossy(line)),
            Err(r) => Code(r.code, r.status),
        }
    }

    /// Each row `line => Debug form of its Command` holds.
    fn each_ok(table: &str) {
        for row in table.lines().map(str::trim_start).filter(|r| !r.is_empty()) {
            let (line, want) = row.split_once(" => ").expect("a table row");
            assert_eq!(format!("{:?}", ok(line)), want, "{line:?}");
        }
    }

    /// `template` with `{}` replaced by each `|`-separated case gets `want`.
    fn each_err(template: &str, cases: &str, want: (u16, &str)) {
        for case in cases.split('|') {
            assert_eq!(err(template.replace("{}", case)), want, "{case:?}");
        }
    }

    /// The reply text to an error line.
    fn text(line: &str) -> String {
        parse(line.as_bytes()).map_or_else(
            |r| r.lines().collect::<Vec<_>>().join("\n"),
            |c| format!("{c:?}"),
        )
    }

    fn addr(local: &str, domain: &str) -> Address {
        let (local, domain) = (local.into(), Some(Domain::Name(domain.into())));
        Address { local, domain }
    }

    fn bare(local: &str) -> Address {
        let (local, domain) = (local.into(), None);
        Address { local, domain }
    }

    fn mail(line: &str) -> (ReversePath, MailParams) {
        match ok(line) {
            Command::Mail { from, params } => (from, params),
            c => panic!("{c:?}"),
        }
    }

    fn rcpt(line: &str) -> (Address, RcptParams) {
        match ok(line) {
            Command::Rcpt { to, params } => (to, params),
            c => panic!("{c:?}"),
        }
    }

    fn to(line: &str) -> Address {
        rcpt(&format!("RCPT TO:<{line}>")).0
    }

    #[test]
    fn display_requotes_local_part() {
        assert_eq!(to("a.b@example.com").to_string(), "a.b@example.com");
        assert_eq!(to("\"john doe\"@x.org").to_string(), "\"john doe\"@x.org");
        assert_eq!(to("\"a\\\"b\"@x.org").to_string(), "\"a\\\"b\"@x.org");
        assert_eq!(to("root@[127.0.0.1]").to_string(), "root@[127.0.0.1]");
        assert_eq!(to("root@[IPv6:::1]").to_string(), "root@[IPv6:::1]");
        assert_eq!(to("postmaster").to_string(), "postmaster");
    }

    #[test]
    fn verbs_in_any_case_http_forbidden() {
        each_ok(
            r#"HELO mx.example.com => Helo("mx.example.com")
            ehlo [127.0.0.1] => Ehlo("[127.0.0.1]")
            EhLo my_pc => Ehlo("my_pc")
            EHLO  host   => Ehlo("host")
            DATA => Data
            data  => Data
            RSET => Rset
            Quit => Quit
            STARTTLS => StartTls
            NOOP => Noop
            noop whatever you like => Noop
            HELP => Help
            help mail => Help
            VRFY root => Vrfy
            VRFY => Vrfy
            expn staff => Expn
            etrn x => NotImplemented("ETRN")
            TURN => NotImplemented("TURN")
            send x => NotImplemented("SEND")
            Soml x => NotImplemented("SOML")
            SAML x => NotImplemented("SAML")
            AUTH plain => Auth { mechanism: "PLAIN", initial: None }
            auth PLAIN AGFsaWNlAHM= => Auth { mechanism: "PLAIN", initial: Some("AGFsaWNlAHM=") }
            AUTH PLAIN = => Auth { mechanism: "PLAIN", initial: Some("=") }
            AUTH login => Auth { mechanism: "LOGIN", initial: None }
            AUTH SCRAM-SHA-1 => Auth { mechanism: "SCRAM-SHA-1", initial: None }
            BDAT 100 => Bdat { size: 100, last: false }
            bdat 0 last => Bdat { size: 0, last: true }
            BDAT 5 LAST => Bdat { size: 5, last: true }
            GET / HTTP/1.1 => Forbidden
            post /x HTTP/1.0 => Forbidden
            CONNECT a:443 HTTP/1.1 => Forbidden
            HEAD / => Forbidden
            Put => Forbidden"#,
        );
    }

    #[test]
    fn bad_arguments_are_syntax_errors() {
        each_err("{}", "HELO|EHLO|EHLO |EHLO a b|HELO a\u{7}b", SYNTAX);
        each_err("{}", "DATA x|RSET now|QUIT bye|STARTTLS please", SYNTAX);
        each_err(
            "{}",
            "AUTH|AUTH |AUTH PLAIN a b|AUTH PL@IN|AUTH ABCDEFGHIJKLMNOPQRSTU",
            SYNTAX,
        );
        let bdat =
            "BDAT|BDAT x|BDAT -1|BDAT +1|BDAT 1 FIRST|BDAT 1 LAST x|BDAT 99999999999999999999";
        each_err("{}", bdat, SYNTAX);
        assert_eq!(err(b"EHLO \xff"), SYNTAX);
        assert_eq!(err(b"AUTH PLAIN \xff"), SYNTAX);
        assert_eq!(text("EHLO"), "Syntax: EHLO hostname");
    }

    #[test]
    fn unknown_or_empty_is_unrecognized() {
        each_err("{}", "|   |FOO|MAILFROM:<a@b>|HELO\tx|QUITX", UNRECOGNIZED);
        assert_eq!(err(b"\xff\xfe"), UNRECOGNIZED);
        assert_eq!(err(b"D\xc3\xa4TA"), UNRECOGNIZED);
        assert_eq!(text("XYZZY"), "Command unrecognized");
    }

    #[test]
    fn mail_from_forms() {
        let a = |l, d| ReversePath::Address(addr(l, d));
        assert_eq!(
            mail("MAIL FROM:<>"),
            (ReversePath::Null, MailParams::default())
        );
        assert_eq!(mail("MAIL FROM:<a@b.example>").0, a("a", "b.example"));
        assert_eq!(mail("mail from:<a@b>").0, a("a", "b"));
        // Liberal: a space (or more) after the colon.
        assert_eq!(mail("MAIL FROM: <a@b>").0, a("a", "b"));
        assert_eq!(mail("MAIL FROM:  <>").0, ReversePath::Null);
        assert_eq!(mail("MAIL FROM:<@a:u@b>").0, a("u", "b"));
        assert_eq!(
            mail("MAIL FROM:<root>").0,
            ReversePath::Address(bare("root"))
        );
    }

    #[test]
    fn rcpt_to_forms() {
        let plain = (addr("u", "example.org"), RcptParams::default());
        assert_eq!(rcpt("RCPT TO:<u@example.org>"), plain);
        assert_eq!(rcpt("rcpt to: <u@x>").0, addr("u", "x"));
        assert_eq!(to("postmaster"), bare("postmaster"));
        assert_eq!(to("Root"), bare("Root"));
        let a = to("o'neil+tag/x=y{z}~!#$%&*?^_`|@my-host.Example9.com");
        assert_eq!(
            a,
            addr("o'neil+tag/x=y{z}~!#$%&*?^_`|", "my-host.Example9.com")
        );
        assert_eq!(err("RCPT TO:<>"), (501, "5.1.3"));
        assert_eq!(err("RCPT TO: <>"), (501, "5.1.3"));
    }

    #[test]
    fn mail_and_rcpt_syntax_errors() {
        let mail = "MAIL|MAIL <a@b>|MAIL FROM|MAIL TO:<a@b>|MAIL FROM:|MAIL FROM:a@b|\
                    MAIL FROM:<a@b|MAIL FROM:<a@b>x|MAIL FROM :<a@b>";
        each_err("{}", mail, SYNTAX);
        let rcpt = "RCPT|RCPT TO|RCPT FROM:<a@b>|RCPT TO:a@b|RCPT TO:<a@b|RCPT TO:<a@b>junk";
        each_err("{}", rcpt, SYNTAX);
        assert_eq!(text("MAIL FROM:a@b"), "Syntax: MAIL FROM:<address>");
        assert_eq!(text("RCPT TO:a@b"), "Syntax: RCPT TO:<address>");
    }

    #[test]
    fn quoted_local_parts() {
        assert_eq!(
            to(r#""john doe"@example.com"#),
            addr("john doe", "example.com")
        );
        assert_eq!(to(r#""a\"b\\c"@x"#), addr(r#"a"b\c"#, "x"));
        assert_eq!(to(r#""a>b@c"@x"#), addr("a>b@c", "x"));
        assert_eq!(to(r#""bare local""#), bare("bare local"));
        let bad = "\"unterminated@x|\"a\"b@x|\"\"@x|\"a\tb\"@x|\"a\\\u{1}\"@x|\"a\\";
        each_err("RCPT TO:<{}>", bad, BAD_RCPT);
        each_err("MAIL FROM:<{}>", bad, BAD_SENDER);
    }

    #[test]
    fn address_literals() {
        let lit = |s: &str| Some(Domain::Literal(s.parse().unwrap()));
        assert_eq!(to("root@[127.0.0.1]").domain, lit("127.0.0.1"));
        assert_eq!(to("root@[IPv6:::1]").domain, lit("::1"));
        assert_eq!(to("root@[ipv6:::1]").domain, lit("::1"));
        assert_eq!(
            to("a@[IPv6:::ffff:10.0.0.1]").domain,
            lit("::ffff:10.0.0.1")
        );
        let bad = "[300.0.0.1]|[::1]|[IPv6:1.2.3.4]|[127.0.0.1|[x:y]|[]|[IPv6:]|[1.2.3]|[1.2.3.4]x";
        each_err("RCPT TO:<a@{}>", bad, BAD_RCPT);
    }

    #[test]
    fn source_routes_are_ignored() {
        assert_eq!(
            to("@a.example,@b.example:user@c.example"),
            addr("user", "c.example")
        );
        assert_eq!(to("@[IPv6:::1]:user@c"), addr("user", "c"));
        let bad = "@a|@a,b:u@c|@:u@c|@a:|@a,@:u@c|@bad_dom:u@c|@[1.2.3.4]";
        each_err("RCPT TO:<{}>", bad, BAD_RCPT);
    }

    #[test]
    fn invalid_addresses_get_553_with_role_code() {
        let bad = "@example.com|a@|a@@b|a b@c|a@b c|a@b..c|a@.b|a@b.|a@-b|a@b-|a@b_c|a@b!c|\
                   .a@b|a.@b|a..b@c|a(b)@c|a\u{1}@b|a@b\u{7f}|a@b\u{85}|a<b@c|\u{a0}@b";
        each_err("RCPT TO:<{}>", bad, BAD_RCPT);
        each_err("MAIL FROM:<{}>", bad, BAD_SENDER);
        assert_eq!(err(b"RCPT TO:<\xff@b>"), BAD_RCPT);
        assert_eq!(err(b"MAIL FROM:<a@\xc3>"), BAD_SENDER);
        assert_eq!(text("RCPT TO:<a@>"), "Invalid recipient address");
    }

    #[test]
    fn utf8_addresses() {
        let a = to("用户@例子.广告");
        assert_eq!(a, addr("用户", "例子.广告"));
        assert!(!a.is_ascii());
        assert!(!addr("ascii", "bücher.de").is_ascii());
        assert!(!bare("jürgen").is_ascii());
        assert!(addr("a", "b").is_ascii());
        assert!(to("root@[127.0.0.1]").is_ascii());
        assert_eq!(to("\"José Ñ\"@x").local, "José Ñ");
    }

    #[test]
    fn length_limits_give_501() {
        let l64 = "l".repeat(64);
        assert_eq!(to(&format!("{l64}@x")).local, l64);
        assert_eq!(err(format!("RCPT TO:<{l64}l@x>")), (501, "5.1.3"));
        assert_eq!(err(format!("MAIL FROM:<{l64}l@x>")), (501, "5.1.7"));
        let q63 = "q".repeat(63);
        assert_eq!(err(format!("RCPT TO:<\"{q63}\"@x>")), (501, "5.1.3"));
        // a@ plus a 252-octet domain is a 256-octet path; one more is too long.
        let d = format!("{0}.{0}.{0}.{1}", "d".repeat(63), "d".repeat(60));
        assert_eq!(to(&format!("a@{d}")), addr("a", &d));
        assert_eq!(err(format!("RCPT TO:<ab@{d}>")), (501, "5.1.3"));
        assert_eq!(err(format!("MAIL FROM:<ab@{d}>")), (501, "5.1.7"));
        // A route domain over 255 octets.
        let d256 = "d".repeat(256);
        assert_eq!(err(format!("RCPT TO:<@{d256}:a@b>")), (501, "5.1.3"));
    }

    #[test]
    fn parse_address_agrees_with_the_rcpt_path() {
        let d = format!("{0}.{0}.{0}.{1}", "d".repeat(63), "d".repeat(60));
        let cases = [
            "a@b",
            "ROOT",
            "\"a b\"@c",
            "\"a>b@c\"@x",
            "root@[127.0.0.1]",
            "x@[IPv6:::1]",
            "@a,@b:u@c",
            "用户@例子.广告",
            "a@",
            "a@b.",
            "a b@c",
            "a@b c",
            "@a",
            "a<b@c",
        ];
        let long = [
            format!("a@{d}"),
            format!("ab@{d}"),
            format!("{}@x", "l".repeat(65)),
        ];
        for text in cases.iter().copied().chain(long.iter().map(String::as_str)) {
            let want = match parse(format!("RCPT TO:<{text}>").as_bytes()) {
                Ok(Command::Rcpt { to, .. }) => Ok(to),
                Ok(other) => panic!("{text:?} gave {other:?}"),
                Err(r) if r.code == 501 => Err(AddressError::TooLong),
                Err(_) => Err(AddressError::Invalid),
            };
            assert_eq!(parse_address(text), want, "{text:?}");
        }
        // What only a command line could hold is not an address.
        for text in ["", "a@b> NOTIFY=NEVER", "a@b>", "<a@b>", " a@b", "a@b "] {
            assert_eq!(parse_address(text), Err(AddressError::Invalid), "{text:?}");
        }
    }

    #[test]
    fn mail_parameters() {
        let p = mail("MAIL FROM:<a@b> size=1000 BODY=8bitmime SMTPUTF8 AUTH=a+2Bb+3Dc@d").1;
        assert_eq!(p.size, Some(1000));
        assert_eq!(p.body, Body::EightBitMime);
        assert!(p.smtputf8);
        assert_eq!(p.auth.as_deref(), Some("a+b=c@d"));
        let p = mail("MAIL FROM:<> RET=hdrs ENVID=Q+2B1").1;
        assert_eq!((p.ret, p.envid.as_deref()), (Some(Ret::Hdrs), Some("Q+1")));
        assert_eq!(mail("MAIL FROM:<>  BODY=7BIT ").1.body, Body::SevenBit);
        assert_eq!(
            mail("MAIL FROM:<> BODY=BinaryMIME").1.body,
            Body::BinaryMime
        );
        assert_eq!(mail("MAIL FROM:<> RET=FULL").1.ret, Some(Ret::Full));
        assert_eq!(mail("MAIL FROM:<> AUTH=<>").1.auth.as_deref(), Some("<>"));
        let max = mail("MAIL FROM:<> SIZE=18446744073709551615").1;
        assert_eq!(max.size, Some(u64::MAX));
        assert_eq!(mail("MAIL FROM: <a@b> SIZE=0").1.size, Some(0));
        // An identical repeat is harmless (smtplib sends SMTPUTF8 twice).
        assert!(
            mail("MAIL FROM:<a@b> smtputf8 SMTPUTF8 BODY=8BITMIME body=8bitmime")
                .1
                .smtputf8
        );
    }

    #[test]
    fn bad_mail_parameters() {
        let syntax = "SIZE|SIZE=|SIZE=12k|SIZE=+5|SIZE=-1|SIZE=18446744073709551616|BODY=9BIT|BODY|\
                      SMTPUTF8=yes|AUTH=|AUTH=a=b|AUTH=a+2b|RET=ALL|RET|ENVID=+4|ENVID=a+ZZ|ENVID=+FF|\
                      =x|-X|SIZE=1 SIZE=2|BODY=7BIT body=8BITMIME";
        each_err("MAIL FROM:<a@b> {}", syntax, SYNTAX);
        let unsupported = "FOO|X-BAR=1|NOTIFY=NEVER|ORCPT=rfc822;a@b";
        each_err("MAIL FROM:<a@b> {}", unsupported, UNSUPPORTED);
        assert_eq!(err(b"MAIL FROM:<a@b> SIZE=\xff"), SYNTAX);
        assert_eq!(err(b"MAIL FROM:<a@b> \xff=1"), SYNTAX);
    }

    #[test]
    fn rcpt_parameters() {
        let (_, p) = rcpt("RCPT TO:<a@b> NOTIFY=success,Delay ORCPT=rfc822;a+2Bx@b");
        assert_eq!(p.notify.as_deref(), Some("success,Delay"));
        assert_eq!(p.orcpt.as_deref(), Some("rfc822;a+x@b"));
        let notify = |line| rcpt(line).1.notify;
        assert_eq!(
            notify("RCPT TO:<a@b> notify=NEVER").as_deref(),
            Some("NEVER")
        );
        assert_eq!(
            notify("RCPT TO:<a@b> NOTIFY=FAILURE").as_deref(),
            Some("FAILURE")
        );
        let syntax = "NOTIFY=|NOTIFY|NOTIFY=NEVER,SUCCESS|NOTIFY=SUCCESS,|NOTIFY=ALWAYS|ORCPT=a@b|\
                      ORCPT=;a@b|ORCPT|ORCPT=rfc822;a=b|NOTIFY=DELAY NOTIFY=NEVER";
        each_err("RCPT TO:<a@b> {}", syntax, SYNTAX);
        let unsupported = "SIZE=10|BODY=8BITMIME|SMTPUTF8|FOO=bar";
        each_err("RCPT TO:<a@b> {}", unsupported, UNSUPPORTED);
        assert_eq!(text("RCPT TO:<a@b> x-y"), "Unsupported parameter X-Y");
    }

    #[test]
    fn xtext_decoding() {
        assert_eq!(xtext(b"plain").ok().as_deref(), Some("plain"));
        assert_eq!(xtext(b"+2B+3D+20").ok().as_deref(), Some("+= "));
        assert_eq!(xtext(b"+C3+A9").ok().as_deref(), Some("é"));
        let bad: [&[u8]; 9] = [
            b"",
            b"+",
            b"+2",
            b"+2b",
            b"a=b",
            b"a b",
            b"\x7f",
            b"\xc3\xa9",
            b"+FF",
        ];
        for v in bad {
            assert!(xtext(v).is_err(), "{v:?}");
        }
    }

    /// Every byte at every position of a few tricky lines: no panic.
    #[test]
    fn never_panics_on_any_byte() {
        let lines = [
            "MAIL FROM:<\"a\\\"b\"@[IPv6:::1]> SIZE=1 AUTH=+2B",
            "RCPT TO:<@a,@[1.2.3.4]:u@x> NOTIFY=NEVER ORCPT=rfc822;a+40b",
            "RCPT TO:<用户@例子.广告>",
            "EHLO x",
            "AUTH PLAIN =",
            "BDAT 10 LAST",
        ];
        for line in lines.map(str::as_bytes) {
            for i in 0..=line.len() {
                let _ = parse(&line[..i]);
                for b in 0..=255u8 {
                    let mut v = line.to_vec();
                    v.insert(i, b);
                    let _ = parse(&v);
                    v[i] = b;
                    let _ = parse(&v);
                }
            }
        }
    }
}
