//! Sendmail mode (SPEC §8): `sendmail [-t] [-i|-oi] [-f SENDER] [-F NAME]
//! [-C CONFIG] [RCPT…]`, which cron, smartd, mdadm, at and mail(1) call as
//! /usr/sbin/sendmail. One message is read from stdin. When the running
//! server answers on `local_socket`, it is handed over there by SMTP
//! (`submit`), so the server writes the files whoever called; otherwise
//! its recipients are routed with the config's rules (SPEC §4) and it is
//! stored through the delivery seam SMTP uses (`delivery::Message`, with
//! the same content rules), a refusal told as a sysexits code.
//! Either way all recipients or none. The exit status follows sysexits.h,
//! the same for the same cause on both paths. Also the admin names:
//! `mailq`/`-bp`, `newaliases`/`-bi`, `-q…`, `--help`.
//!
//! Input: without `-i`/`-oi` a line holding a single `.` ends the message,
//! as in sendmail (and outside SMTP there is no dot-unstuffing); otherwise
//! only end of file does. Bare LF line endings are stored as CRLF. The
//! header section is held in memory (at most `max_message_size` bytes) to
//! read `-t` recipients, drop `Bcc:` and add a missing `From:`, `Date:` and
//! `Message-ID:`; the body is streamed to the spool file or the socket.

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::command::{self, Address, Domain, ReversePath};
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::data::{BareLf, ContentSink, ContentWrite};
use crate::delivery::{self, ContentRules, DeliveryError, NotStored, Refusal, Stored, Target};
use crate::notify;
use crate::privilege;
use crate::routing::{self, Route};
use crate::submit::{self, Submission};

mod headers;
mod options;
mod submission;

use headers::*;
use options::*;
use submission::*;

/// The environment variable naming the config file when `-C` is not given.
pub const CONFIG_ENV: &str = "SMTPBOX_CONFIG";

/// Runs sendmail mode and returns the exit status (0, or a sysexits.h code
/// after a message on stderr). `args` are the arguments after the program
/// name (after `sendmail` in `smtpbox sendmail …`). With `-bs`, calls
/// `smtp_session` with the loaded config, which serves one SMTP session on
/// stdin/stdout as `--inetd` does; then exits 0, or 78 (EX_CONFIG) with its
/// error (a certificate or users file that cannot be loaded).
pub fn main<S: AsRef<OsStr>>(
    args: &[S],
    smtp_session: impl FnOnce(Config) -> Result<(), String>,
) -> ExitCode {
    let stdin = io::stdin();
    match run(args, &mut stdin.lock(), smtp_session) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("sendmail: {}", failure.message);
            ExitCode::from(failure.exit as u8)
        }
    }
}

/// The arguments for [`main`] when `argv` (program name included) asks for
/// sendmail mode: the program was invoked as `sendmail`, `mailq` or
/// `newaliases` (argv[0] basename; the last two as `-bp` and `-bi`, as
/// sendmail does), or as `smtpbox sendmail …`.
pub fn sendmail_args<S: AsRef<OsStr>>(argv: &[S]) -> Option<Vec<OsString>> {
    let program = Path::new(argv.first()?.as_ref()).file_name()?;
    let rest = || argv[1..].iter().map(|a| a.as_ref().to_os_string());
    let named = |mode: &str| {
        std::iter::once(OsString::from(mode))
            .chain(rest())
            .collect()
    };
    match program.to_str() {
        Some("sendmail") => return Some(rest().collect()),
        Some("mailq") => return Some(named("-bp")),
        Some("newaliases") => return Some(named("-bi")),
        _ => {}
    }
    match argv.get(1) {
        Some(mode) if mode.as_ref() == "sendmail" => Some(
            argv[2..]
                .iter()
                .map(|a| a.as_ref().to_os_string())
                .collect(),
        ),
        _ => None,
    }
}

/// What `sendmail --help` prints.
const USAGE: &str = "\
Usage: sendmail [-t] [-i|-oi] [-f SENDER] [-F NAME] [-C CONFIG] [RCPT...]
       (or smtpbox sendmail ...)
Reads one message from stdin and delivers it to local Maildirs: through
the running server's local_socket when it answers, else directly.
  -t          also take recipients from To:, Cc: and Bcc: (Bcc: is removed)
  -i, -oi     a line holding a single '.' is content; only end of file ends
  -f SENDER   envelope sender (<> for none); default: you@hostname
  -F NAME     full name for a generated From:
  -C CONFIG   config file; default $SMTPBOX_CONFIG, else
              /etc/smtpbox/smtpbox.conf
  -bs         one SMTP session on stdin/stdout
  -bp, mailq  there is no queue: says so
  -bi, newaliases
              checks the aliases in the config
  -q...       no queue to run: does nothing
Exit status (sysexits.h): 0 delivered, 64 usage, 65 bad message, 67 unknown
recipient, 75 temporary failure (try again), 78 configuration error.
";

/// The sysexits.h codes sendmail mode exits with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    Usage = 64,
    DataErr = 65,
    NoUser = 67,
    IoErr = 74,
    TempFail = 75,
    Config = 78,
}

/// Why the message was not delivered.
#[derive(Debug)]
struct Failure {
    exit: Exit,
    message: String,
}

impl Exit {
    fn with(self, message: impl Into<String>) -> Failure {
        let message = message.into();
        Failure {
            exit: self,
            message,
        }
    }
}

impl Failure {
    /// Every delivery error is temporary (SPEC §7: 4xx), hence EX_TEMPFAIL.
    fn delivery(error: DeliveryError) -> Failure {
        Exit::TempFail.with(error.to_string())
    }

    /// A message the delivery seam did not store: refused by a content
    /// rule, EX_DATAERR; a delivery error, EX_TEMPFAIL.
    fn not_stored(why: NotStored, max_size: u64) -> Failure {
        let refused = match why {
            NotStored::Failed(error) => return Failure::delivery(error),
            NotStored::Refused(refusal) => refusal,
        };
        let message = match refused {
            Refusal::TooBig => format!("message too big (over {max_size} bytes)"),
            Refusal::MailLoop => "too many Received headers: mail loop".to_string(),
            // Never here: bare line endings are stored as CRLF.
            Refusal::BareLineEnding => "bare CR or LF in the message".to_string(),
        };
        Exit::DataErr.with(message)
    }

    /// Direct delivery failed after the local socket did not answer: a
    /// temporary failure names both causes, on one line (SPEC §8). Any
    /// other failure (an unknown user, a message too big) is the answer
    /// either way, and is told as it is.
    fn after(self, socket_cause: &str) -> Failure {
        if self.exit != Exit::TempFail {
            return self;
        }
        Exit::TempFail.with(format!("{socket_cause}; direct delivery: {}", self.message))
    }
}

/// The user who runs sendmail (the real uid), for the sender and trace.
struct Invoker {
    uid: u32,
    name: String,
}

impl Invoker {
    fn current() -> Invoker {
        let uid = privilege::real_uid();
        let name = privilege::login_name(uid);
        Invoker { uid, name }
    }
}

/// The whole delivery; `stdin` is the message.
fn run<R: BufRead, S: AsRef<OsStr>>(
    args: &[S],
    stdin: &mut R,
    smtp_session: impl FnOnce(Config) -> Result<(), String>,
) -> Result<(), Failure> {
    let options = Options::parse(args).map_err(|e| Exit::Usage.with(e))?;
    // The admin names (SPEC §8): none of them reads mail or starts a server.
    match options.task {
        Task::Help => {
            print!("{USAGE}");
            return Ok(());
        }
        Task::ListQueue => {
            println!(
                "Mail queue is empty (smtpbox has no queue: mail is delivered or refused at once)"
            );
            return Ok(());
        }
        Task::RunQueue => return Ok(()),
        Task::CheckAliases => {
            let config = load_config(options.config.as_deref())?;
            println!("{}", check_aliases(&config)?);
            return Ok(());
        }
        Task::SmtpSession | Task::Deliver => {}
    }
    let config = load_config(options.config.as_deref())?;
    if options.task == Task::SmtpSession {
        become_config_user(&config)?;
        return smtp_session(config).map_err(|e| Exit::Config.with(e));
    }
    if options.recipients.is_empty() && !options.extract {
        return Err(
            Exit::Usage.with("no recipients: name them, or use -t to take them from the headers")
        );
    }
    let user = Invoker::current();
    let sender = envelope_sender(options.sender.as_deref(), &user.name, &config.hostname)?;
    // SO_PEERCRED records the caller at connect(2): connect before any
    // change of privileges, so that the server names who called.
    let server = config.local_socket.as_deref().map(|path| {
        Submission::connect(path, config.limits.timeout.min(SOCKET_TIMEOUT))
            .map_err(|e| format!("local socket {}: {e}", path.display()))
    });
    // Then the account and the sandbox, before a byte of the message is
    // read: a submission needs neither, a direct delivery both.
    become_config_user(&config)?;
    let mut input = Input {
        source: stdin,
        lines: LineReader::new(options.ignore_dots),
        done: false,
    };
    let delivered = receive(&options, &config, (&user, &sender), server, &mut input);
    if delivered.is_err() {
        // Read to the end anyway, as sendmail does: the writer gets no EPIPE.
        input.drain();
    }
    delivered
}

/// Run as root (cron, smartd), deliver as the config's `user`, so that the
/// Maildir files belong to the same account as the server's; then the
/// sandbox.
///
/// With `notify` set, the notifier is forked between the two, outside the
/// sandbox and detached: the caller (cron) does not wait for it (SPEC §7a).
fn become_config_user(config: &Config) -> Result<(), Failure> {
    match &config.user {
        Some(name) if privilege::is_root() => {
            let account = privilege::lookup(name).map_err(|e| Exit::Config.with(e))?;
            privilege::drop_to(&account).map_err(|e| Exit::TempFail.with(e))?;
        }
        _ => {}
    }
    let notifier = config.notify.program.as_ref().and_then(|_| {
        // Root without `user` (SPEC §7a): the programs run as nobody.
        let fallback = privilege::is_root()
            .then(|| privilege::lookup(crate::start::NOTIFY_FALLBACK_USER).ok())
            .flatten();
        notify::spawn(&config.notify, fallback.as_ref(), true)
            .map_err(|e| log::warn!("{e}: no notifications"))
            .ok()
    });
    if let Some(notifier) = notifier {
        notify::install(notifier);
    }
    crate::sandbox::enter(config, &[]);
    Ok(())
}

/// The config named by `-C`, else by `$SMTPBOX_CONFIG`, else the default.
fn load_config(flag: Option<&Path>) -> Result<Config, Failure> {
    let from_env = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty());
    let path = flag
        .map(Path::to_path_buf)
        .or(from_env.map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    Config::load(&path).map_err(|e| {
        let text = e.to_string();
        let shown = path.display().to_string();
        if text.starts_with(&shown) {
            Exit::Config.with(text)
        } else {
            Exit::Config.with(format!("{shown}: {text}"))
        }
    })
}

/// `newaliases`: the config is the alias database, so there is nothing to
/// build; loading it has already refused loops. What is left to check is
/// that every alias leads to a mailbox. EX_CONFIG naming those that don't.
fn check_aliases(config: &Config) -> Result<String, Failure> {
    let mut broken = Vec::new();
    for (name, target) in &config.aliases {
        let routed = match command::parse_address(name) {
            Ok(to) => routing::route(&config.routes(), &to, None),
            Err(_) => Route::NoMailbox,
        };
        if !matches!(routed, Route::Mailbox(_)) {
            broken.push(format!("alias {name} -> {target}: no mailbox"));
        }
    }
    if !broken.is_empty() {
        return Err(Exit::Config.with(broken.join("; ")));
    }
    Ok(format!(
        "{} alias(es) in the config, each leading to a mailbox",
        config.aliases.len()
    ))
}

/// `-f`: empty or `<>` is the null sender; a bare local part is qualified
/// with the hostname. Without `-f`, the invoking user at the hostname.
fn envelope_sender(flag: Option<&str>, user: &str, host: &str) -> Result<ReversePath, Failure> {
    let Some(text) = flag else {
        return Ok(ReversePath::Address(qualified(user, host)));
    };
    let text = text.trim();
    let bare = text
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(text);
    if bare.is_empty() {
        return Ok(ReversePath::Null);
    }
    match command::parse_address(bare) {
        Ok(a) if a.domain.is_none() => Ok(ReversePath::Address(qualified(&a.local, host))),
        Ok(a) => Ok(ReversePath::Address(a)),
        Err(_) => Err(Exit::Usage.with(format!("-f {text}: invalid sender address"))),
    }
}

fn qualified(local: &str, host: &str) -> Address {
    let domain = Some(Domain::Name(host.to_string()));
    Address {
        local: local.to_string(),
        domain,
    }
}

/// The recipients: the operands, and with `-t` To:, Cc: and Bcc: too (as
/// Postfix does; sendmail 8 would drop the operands instead). Repeats go.
fn recipients(options: &Options, fields: &[&[u8]]) -> Result<Vec<Address>, Failure> {
    let mut texts: Vec<String> = options
        .recipients
        .iter()
        .flat_map(|a| address_list(a))
        .collect();
    if options.extract {
        for field in fields
            .iter()
            .filter(|f| ["To", "Cc", "Bcc"].iter().any(|n| is(f, n)))
        {
            texts.extend(address_list(&value(field)));
        }
    }
    let mut addresses: Vec<Address> = Vec::new();
    for text in texts {
        let Ok(to) = command::parse_address(&text) else {
            return Err(Exit::DataErr.with(format!("<{text}>: invalid address")));
        };
        if !addresses.contains(&to) {
            addresses.push(to);
        }
    }
    if addresses.is_empty() {
        return Err(Exit::Usage.with("no recipient addresses found in the header"));
    }
    Ok(addresses)
}

/// Every recipient's target, or EX_NOUSER naming each one that has none.
fn route_all(config: &Config, recipients: &[Address]) -> Result<Vec<Target>, Failure> {
    let mut targets = Vec::new();
    let mut unknown = Vec::new();
    for rcpt in recipients {
        // No connection: an address literal is local when it names loopback or
        // a listen address.
        match routing::route(&config.routes(), rcpt, None) {
            Route::Mailbox(target) => targets.push(target),
            Route::NoMailbox => unknown.push(format!("<{rcpt}>: user unknown")),
            Route::NotLocal => unknown.push(format!("<{rcpt}>: not local (smtpbox never relays)")),
        }
    }
    if !unknown.is_empty() {
        let message = unknown.join("; ") + "; nothing delivered";
        return Err(Exit::NoUser.with(message));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(&strings(args))
    }

    #[test]
    fn options_separate_glued_and_ignored() {
        let o = parse(&["-t", "-i", "-f", "a@b", "-F", "A B", "-C", "/c", "x", "y,z"]).unwrap();
        let expected = Options {
            extract: true,
            ignore_dots: true,
            sender: Some("a@b".into()),
            full_name: Some("A B".into()),
            config: Some("/c".into()),
            recipients: strings(&["x", "y,z"]),
            ..Options::default()
        };
        assert_eq!(o, expected);
        let glued = [
            "-ti",
            "-fa@b",
            "-FA B",
            "-C/c",
            "x",
            "-oem",
            "-B8BITMIME",
            "-odi",
        ];
        let recipients = strings(&["x"]);
        assert_eq!(
            parse(&glued).unwrap(),
            Options {
                recipients,
                ..expected
            }
        );
        let o = parse(&["-oi", "-bm", "-Nnever", "-v", "--", "-x"]).unwrap();
        assert!(o.ignore_dots && o.task == Task::Deliver && o.recipients == ["-x"]);
        assert_eq!(parse(&["-bs"]).unwrap().task, Task::SmtpSession);
    }

    #[test]
    fn admin_modes() {
        let task = |args: &[&str]| parse(args).map(|o| o.task);
        assert_eq!(task(&["-bp"]), Ok(Task::ListQueue));
        assert_eq!(task(&["-bi"]), Ok(Task::CheckAliases));
        assert_eq!(task(&["-q"]), Ok(Task::RunQueue));
        assert_eq!(task(&["-q30m"]), Ok(Task::RunQueue));
        assert_eq!(task(&["-qRexample.com"]), Ok(Task::RunQueue));
        assert_eq!(task(&["-v", "-qf"]), Ok(Task::RunQueue));
        assert_eq!(task(&["--help"]), Ok(Task::Help));
    }

    #[test]
    fn options_refused() {
        assert_eq!(parse(&["-f"]).unwrap_err(), "option -f needs a value");
        assert_eq!(parse(&["-x"]).unwrap_err(), "unknown option -x");
        assert!(parse(&["-bd"])
            .unwrap_err()
            .starts_with("unsupported mode -bd"));
    }

    #[test]
    fn a_config_path_need_not_be_utf8() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let os = |b: &[u8]| OsString::from_vec(b.to_vec());
        for args in [
            vec![os(b"-C"), os(b"/etc/\xff.conf"), os(b"root")],
            vec![os(b"-C/etc/\xff.conf"), os(b"root")],
        ] {
            let o = Options::parse(&args).unwrap();
            assert_eq!(o.config, Some(PathBuf::from(os(b"/etc/\xff.conf"))));
            assert_eq!(o.recipients, ["root"]);
        }
        let e = Options::parse(&[os(b"r\xffot")]).unwrap_err();
        assert_eq!(e, "argument `r\u{fffd}ot` is not UTF-8");
        let e = Options::parse(&[os(b"-f"), os(b"\xff")]).unwrap_err();
        assert_eq!(e, "argument `\u{fffd}` is not UTF-8");
    }

    #[test]
    fn sendmail_args_by_name_or_word() {
        let os = |a: &[&str]| Some(a.iter().map(OsString::from).collect::<Vec<_>>());
        let argv = strings(&["/usr/sbin/sendmail", "-t"]);
        assert_eq!(sendmail_args(&argv), os(&["-t"]));
        let argv = strings(&["smtpbox", "sendmail", "root"]);
        assert_eq!(sendmail_args(&argv), os(&["root"]));
        assert_eq!(sendmail_args(&strings(&["smtpbox", "-c", "x"])), None);
        let argv = strings(&["/usr/bin/mailq", "-v"]);
        assert_eq!(sendmail_args(&argv), os(&["-bp", "-v"]));
        let argv = strings(&["newaliases"]);
        assert_eq!(sendmail_args(&argv), os(&["-bi"]));
    }

    /// Feeds `input` whole and byte by byte: (output, consumed, ended).
    fn lines(input: &[u8], ignore_dots: bool) -> (Vec<u8>, usize, bool) {
        let mut whole = LineReader::new(ignore_dots);
        let mut out = Vec::new();
        let (used, end) = whole.feed(input, &mut out);
        if !end {
            whole.finish(&mut out);
        }
        let mut bytewise = LineReader::new(ignore_dots);
        let mut out2 = Vec::new();
        let ended = input.iter().any(|b| bytewise.feed(&[*b], &mut out2).1);
        if !ended {
            bytewise.finish(&mut out2);
        }
        assert_eq!((&out, end), (&out2, ended));
        (out, used, end)
    }

    #[test]
    fn lone_dot_ends_input_unless_ignored() {
        assert_eq!(lines(b"a\n.\nb\n", false), (b"a\r\n".to_vec(), 4, true));
        assert_eq!(lines(b"a\r\n.\r\nb", false), (b"a\r\n".to_vec(), 6, true));
        assert_eq!(lines(b".\n", false), (Vec::new(), 2, true));
        assert_eq!(lines(b"a\n.", false).0, b"a\r\n");
        let kept = lines(b"a\n.\nb\n", true);
        assert_eq!(kept, (b"a\r\n.\r\nb\r\n".to_vec(), 6, false));
    }

    #[test]
    fn dots_are_not_unstuffed_and_endings_normalized() {
        let (out, _, end) = lines(b"..\n.x\n.\r.\nlast", false);
        assert_eq!(out, b"..\r\n.x\r\n.\r.\r\nlast\r\n");
        assert!(!end);
        assert_eq!(lines(b"a\rb\r\n\n", false).0, b"a\rb\r\n\r\n");
        assert_eq!(lines(b"a\r", false).0, b"a\r\n");
    }

    /// (header, rest) as split by [`header_end`], or at the end of `text`.
    fn head(text: &[u8]) -> (&[u8], &[u8]) {
        text.split_at(header_end(text, &mut 0).unwrap_or(text.len()))
    }

    #[test]
    fn header_section_ends_at_empty_or_non_field_line() {
        let text = b"Subject: a\r\n b\r\nX : obs\r\n\r\nbody: x\r\n";
        let header = &b"Subject: a\r\n b\r\nX : obs\r\n"[..];
        assert_eq!(head(text), (header, &b"\r\nbody: x\r\n"[..]));
        assert_eq!(head(b"A: 1\r\nplain text\r\n").0, b"A: 1\r\n");
        assert_eq!(head(b" folded\r\n").0, b"");
        assert_eq!(head(b"From me\r\n").0, b"");
        assert_eq!(head(b"A: 1\r\n"), (&b"A: 1\r\n"[..], &b""[..]));
        assert_eq!(header_end(b"Subject: no end yet", &mut 0), None);
    }

    #[test]
    fn fields_unfold_and_match_names() {
        let f = fields(b"TO: a,\r\n\tb\r\nbcc: c\r\nSubject: s\r\n");
        assert_eq!(
            f,
            [&b"TO: a,\r\n\tb\r\n"[..], b"bcc: c\r\n", b"Subject: s\r\n"]
        );
        assert!(is(f[0], "To") && is(f[1], "Bcc") && !is(f[2], "Subj"));
        assert_eq!(value(f[0]), "a,\tb");
    }

    #[test]
    fn address_lists() {
        let cases: &[(&str, &[&str])] = &[
            ("Name <a@b>, c@d", &["a@b", "c@d"]),
            ("\"Doe, J\" <j@d>, k@l (Kay, K)", &["j@d", "k@l"]),
            ("team: a@b, c@d;, e@f", &["a@b", "c@d", "e@f"]),
            ("undisclosed-recipients:;", &[]),
            ("\"a b\"@c, root", &["\"a b\"@c", "root"]),
            ("<@x:a@b>, x@[IPv6:::1]", &["@x:a@b", "x@[IPv6:::1]"]),
            ("a@b,, c@d (x) ,", &["a@b", "c@d"]),
            ("\"q\\\"<x>\" <r@s>", &["r@s"]),
        ];
        for (list, expected) in cases {
            assert_eq!(address_list(list), *expected, "{list}");
        }
    }

    #[test]
    fn senders_and_from() {
        let sender = |f: Option<&str>| envelope_sender(f, "joe", "mx.test").map_err(|e| e.exit);
        let address = |s: &str| {
            let Ok(ReversePath::Address(a)) = sender(Some(s)) else {
                panic!("{s}")
            };
            a.to_string()
        };
        assert_eq!(address("root"), "root@mx.test");
        assert_eq!(address("<a@b.c>"), "a@b.c");
        let joe = ReversePath::Address(qualified("joe", "mx.test"));
        assert_eq!(sender(None), Ok(joe));
        assert_eq!(sender(Some("<>")), Ok(ReversePath::Null));
        assert_eq!(sender(Some("")), Ok(ReversePath::Null));
        assert_eq!(sender(Some("a@")), Err(Exit::Usage));
        assert_eq!(from_header("a@b", None), "a@b");
        assert_eq!(from_header("a@b", Some("Cron Daemon")), "Cron Daemon <a@b>");
        assert_eq!(
            from_header("a@b", Some("D. \"X\"\r\n")),
            "\"D. \\\"X\\\"\" <a@b>"
        );
    }
}
