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
use crate::privilege;
use crate::routing::{self, Route};
use crate::submit::{self, Submission};

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

/// What the command line asks sendmail mode to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Task {
    /// `-bm` (the default): deliver one message.
    #[default]
    Deliver,
    /// `-bs`: one SMTP session on stdin/stdout.
    SmtpSession,
    /// `-bp`, `mailq`: list the queue, which smtpbox does not have.
    ListQueue,
    /// `-bi`, `newaliases`: check the aliases (the config is the database).
    CheckAliases,
    /// `-q…`: run the queue; there is none.
    RunQueue,
    /// `--help`.
    Help,
}

/// The command line, parsed (sendmail's getopt-style options).
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    task: Task,
    /// `-t`: recipients also come from To:, Cc: and Bcc:.
    extract: bool,
    /// `-i`, `-oi`: a lone `.` line is content, only EOF ends the input.
    ignore_dots: bool,
    /// `-f SENDER` (or the obsolete `-r`).
    sender: Option<String>,
    /// `-F NAME`: the full name in a generated From:.
    full_name: Option<String>,
    /// `-C FILE`.
    config: Option<PathBuf>,
    /// The operands: addresses or comma-separated address lists.
    recipients: Vec<String>,
}

/// Options that take a value, glued (`-fSENDER`) or as the next argument.
const TAKES_VALUE: &str = "ABCFLNORVXbdfhopr";

impl Options {
    fn parse<S: AsRef<OsStr>>(args: &[S]) -> Result<Options, String> {
        let mut options = Options::default();
        let mut args = args.iter().map(AsRef::as_ref);
        while let Some(raw) = args.next() {
            // Only a -C path may be other than UTF-8 (SPEC §2).
            let Some(arg) = raw.to_str() else {
                match raw.as_bytes().strip_prefix(b"-C") {
                    Some(path) if !path.is_empty() => {
                        options.config = Some(PathBuf::from(OsStr::from_bytes(path)))
                    }
                    _ => return Err(not_utf8(raw)),
                }
                continue;
            };
            if arg == "--" {
                for rest in args.by_ref() {
                    options
                        .recipients
                        .push(rest.to_str().ok_or_else(|| not_utf8(rest))?.into());
                }
                break;
            }
            if arg == "--help" {
                options.task = Task::Help;
                continue;
            }
            let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
                options.recipients.push(arg.to_string());
                continue;
            };
            for (i, flag) in cluster.char_indices() {
                if flag == 'q' {
                    // -q, -q30m, -qf, -qRsite…: the rest is the queue's business.
                    options.task = Task::RunQueue;
                    break;
                }
                if !TAKES_VALUE.contains(flag) {
                    options.flag(flag)?;
                    continue;
                }
                let glued = &cluster[i + flag.len_utf8()..];
                let value = match glued {
                    "" => {
                        let next = args.next().ok_or(format!("option -{flag} needs a value"))?;
                        if flag == 'C' {
                            options.config = Some(PathBuf::from(next));
                            break;
                        }
                        next.to_str().ok_or_else(|| not_utf8(next))?
                    }
                    _ => glued,
                };
                options.option(flag, value.to_string())?;
                break;
            }
        }
        Ok(options)
    }

    fn flag(&mut self, flag: char) -> Result<(), String> {
        match flag {
            't' => self.extract = true,
            'i' => self.ignore_dots = true,
            // metoo, no aliases, verbose, initial submission, gateway.
            'm' | 'n' | 'v' | 'U' | 'G' => log::debug!("ignoring option -{flag}"),
            _ => return Err(format!("unknown option -{flag}")),
        }
        Ok(())
    }

    fn option(&mut self, flag: char, value: String) -> Result<(), String> {
        match (flag, value.as_str()) {
            ('b', "m") => self.task = Task::Deliver,
            ('b', "s") => self.task = Task::SmtpSession,
            ('b', "p") => self.task = Task::ListQueue,
            ('b', "i") => self.task = Task::CheckAliases,
            ('b', mode) => {
                return Err(format!(
                    "unsupported mode -b{mode} (only -bm, -bs, -bp and -bi)"
                ))
            }
            ('o', "i") => self.ignore_dots = true,
            ('f' | 'r', _) => self.sender = Some(value),
            ('F', _) => self.full_name = Some(value),
            ('C', _) => self.config = Some(PathBuf::from(value)),
            // -oem, -odi, -B8BITMIME, DSN options (-N, -R, -V): no queue, no
            // bounces, 8-bit clean: nothing to do.
            _ => log::debug!("ignoring option -{flag}{value}"),
        }
        Ok(())
    }
}

/// The error for an argument that is not UTF-8, quoting a short prefix.
fn not_utf8(arg: &OsStr) -> String {
    let shown: String = arg.to_string_lossy().chars().take(64).collect();
    format!("argument `{shown}` is not UTF-8")
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
    let delivered = receive(&options, &config, &user, &sender, server, &mut input);
    if delivered.is_err() {
        // Read to the end anyway, as sendmail does: the writer gets no EPIPE.
        input.drain();
    }
    delivered
}

/// How long sendmail mode waits for the server on the local socket, at
/// most: a server that does not greet in this time is not answering.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(60);

/// The message as sendmail mode prepares it, whichever way it goes: the
/// header fields read so far, what was read past them, and who sends it.
struct Prepared<'a> {
    options: &'a Options,
    /// The header fields as given (`Bcc:` is dropped when writing).
    fields: Vec<&'a [u8]>,
    /// Content read past the header section.
    rest: &'a [u8],
    user: &'a Invoker,
    /// The envelope sender as text, empty for `<>`.
    sender: String,
    host: &'a str,
}

impl Prepared<'_> {
    /// Writes the content: the fields but `Bcc:`, a `From:`, `Date:` and
    /// `Message-ID:` when missing, then the body, streamed from `input`.
    fn write<R: BufRead>(
        &self,
        sink: &mut impl ContentWrite,
        id: &str,
        date: &str,
        input: &mut Input<'_, R>,
    ) -> Result<(), Failure> {
        let host = self.host;
        // Bcc: names hidden recipients; it is never stored.
        for field in self.fields.iter().filter(|f| !is(f, "Bcc")) {
            sink.write(field);
        }
        let has = |name| self.fields.iter().any(|f| is(f, name));
        if !has("From") {
            let address = if self.sender.is_empty() {
                qualified(&self.user.name, host).to_string()
            } else {
                self.sender.clone()
            };
            let from = from_header(&address, self.options.full_name.as_deref());
            sink.write(format!("From: {from}\r\n").as_bytes());
        }
        if !has("Date") {
            sink.write(format!("Date: {date}\r\n").as_bytes());
        }
        if !has("Message-ID") {
            sink.write(format!("Message-ID: <{id}@{host}>\r\n").as_bytes());
        }
        // A body that began with a line that is not a field needs its empty line.
        if !(self.rest.is_empty() || self.rest.starts_with(b"\r\n")) {
            sink.write(b"\r\n");
        }
        sink.write(self.rest);
        let mut chunk = Vec::new();
        while !input.done {
            chunk.clear();
            input.read(&mut chunk)?;
            sink.write(&chunk);
        }
        Ok(())
    }
}

/// Reads the header and the recipients, then hands the message to the
/// server on the local socket when it answered, else delivers it directly.
fn receive<R: BufRead>(
    options: &Options,
    config: &Config,
    user: &Invoker,
    sender: &ReversePath,
    server: Option<Result<Submission, String>>,
    input: &mut Input<'_, R>,
) -> Result<(), Failure> {
    let (buf, end) = input.read_header(config.limits.max_message_size)?;
    let (header, rest) = buf.split_at(end);
    let fields = fields(header);
    let recipients = recipients(options, &fields)?;
    let message = Prepared {
        options,
        fields,
        rest,
        user,
        sender: match sender {
            ReversePath::Address(address) => address.to_string(),
            ReversePath::Null => String::new(),
        },
        host: &config.hostname,
    };
    match server {
        // The server would take only max_recipients of them (452 4.5.3),
        // and a message goes to all its recipients or to none.
        Some(Ok(server)) if recipients.len() > config.limits.max_recipients => {
            server.quit();
            let cause = format!(
                "local socket: {} recipients, over max_recipients ({})",
                recipients.len(),
                config.limits.max_recipients
            );
            deliver_directly(config, &message, &recipients, input).map_err(|f| f.after(&cause))
        }
        Some(Ok(server)) => submit(server, config, &message, &recipients, input),
        Some(Err(cause)) => {
            log::info!("{cause}: delivering directly");
            deliver_directly(config, &message, &recipients, input).map_err(|f| f.after(&cause))
        }
        None => deliver_directly(config, &message, &recipients, input),
    }
}

/// Submits over SMTP on the local socket (SPEC §8). Replies map to the
/// exit statuses direct delivery gives for the same cause: a recipient
/// refused for good is EX_NOUSER (67) and nothing is sent; a message
/// refused for good (too big, a mail loop) EX_DATAERR (65); any 4xx, and
/// a connection lost on the way, EX_TEMPFAIL (75).
fn submit<R: BufRead>(
    mut server: Submission,
    config: &Config,
    message: &Prepared<'_>,
    recipients: &[Address],
    input: &mut Input<'_, R>,
) -> Result<(), Failure> {
    let shown = config
        .local_socket
        .as_deref()
        .map_or(String::new(), |p| p.display().to_string());
    let lost = |e: io::Error| Exit::TempFail.with(format!("local socket {shown}: {e}"));
    let refused = |stage: &str, reply: &submit::ServerReply| {
        let exit = if reply.is_permanent() {
            Exit::DataErr
        } else {
            Exit::TempFail
        };
        exit.with(format!("local socket {shown}: {stage}: {reply}"))
    };
    let ehlo = server
        .command(&format!("EHLO {}", config.hostname))
        .map_err(lost)?;
    if !ehlo.is_positive() {
        return Err(refused("EHLO", &ehlo));
    }
    let utf8 = !message.sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
    let mail = format!(
        "MAIL FROM:<{}>{}",
        message.sender,
        if utf8 { " SMTPUTF8" } else { "" }
    );
    let reply = server.command(&mail).map_err(lost)?;
    if !reply.is_positive() {
        return Err(refused("MAIL", &reply));
    }
    let mut unknown = Vec::new();
    for rcpt in recipients {
        let reply = server.command(&format!("RCPT TO:<{rcpt}>")).map_err(lost)?;
        if reply.is_permanent() {
            unknown.push(format!("<{rcpt}>: {reply}"));
        } else if !reply.is_positive() {
            return Err(Exit::TempFail.with(format!("<{rcpt}>: {reply}")));
        }
    }
    if !unknown.is_empty() {
        server.quit();
        return Err(Exit::NoUser.with(unknown.join("; ") + "; nothing delivered"));
    }
    let reply = server.command("DATA").map_err(lost)?;
    if reply.code != 354 {
        return Err(refused("DATA", &reply));
    }
    // From here on, a failure drops the connection without the end
    // marker: the server then stores nothing.
    let id = delivery::unique_id();
    let date = crate::date::now_rfc5322();
    let mut sink = ContentSink::new(server.content(), u64::MAX);
    message.write(&mut sink, &id, &date, input)?;
    if let Some(e) = sink.take_error() {
        return Err(lost(e));
    }
    sink.into_inner().finish().map_err(lost)?;
    let reply = server.data_reply().map_err(lost)?;
    if !reply.is_positive() {
        return Err(refused("end of data", &reply));
    }
    server.quit();
    log::info!("submitted on local socket {shown}: {reply}");
    Ok(())
}

/// Routes, spools and delivers into the targets ourselves (as the
/// config's `user` when run as root: [`become_config_user`] came first).
fn deliver_directly<R: BufRead>(
    config: &Config,
    message: &Prepared<'_>,
    recipients: &[Address],
    input: &mut Input<'_, R>,
) -> Result<(), Failure> {
    let targets = route_all(config, recipients)?;
    if targets.is_empty() {
        return Err(Exit::Usage.with("no recipients"));
    }
    let date = crate::date::now_rfc5322();
    let host = &config.hostname;
    let (sender, user) = (&message.sender, message.user);
    let trace = |id: &str| {
        format!(
            "Return-Path: <{sender}>\r\nReceived: by {host} (smtpbox) via sendmail id {id}\r\n\
             \t(uid {} user {}); {date}\r\n",
            user.uid, user.name,
        )
    };
    // SPEC §6's rules, as for SMTP; bare line endings are already CRLF.
    let rules = ContentRules {
        max_size: config.limits.max_message_size,
        bare_lf: BareLf::Normalize,
        max_received: delivery::MAX_RECEIVED,
    };
    let mut stored = delivery::Message::open(targets, rules, config.limits.maildir_quota, trace)
        .map_err(Failure::delivery)?;
    let id = stored.id().to_string();
    message.write(&mut stored, &id, &date, input)?;
    let Stored { id, size } = stored
        .finish()
        .map_err(|why| Failure::not_stored(why, config.limits.max_message_size))?;
    let to: Vec<String> = recipients.iter().map(|r| format!("<{r}>")).collect();
    log::info!(
        "{id} from=<{sender}> to={} size={size} proto=sendmail user={}",
        to.join(","),
        user.name
    );
    Ok(())
}

/// Run as root (cron, smartd), deliver as the config's `user`, so that the
/// Maildir files belong to the same account as the server's; then the
/// sandbox.
fn become_config_user(config: &Config) -> Result<(), Failure> {
    match &config.user {
        Some(name) if privilege::is_root() => {
            let account = privilege::lookup(name).map_err(|e| Exit::Config.with(e))?;
            privilege::drop_to(&account).map_err(|e| Exit::TempFail.with(e))?;
        }
        _ => {}
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

/// stdin through the [`LineReader`].
struct Input<'a, R> {
    source: &'a mut R,
    lines: LineReader,
    done: bool,
}

impl<R: BufRead> Input<'_, R> {
    /// Appends the next piece of content to `out`; sets `done` at the end.
    fn read(&mut self, out: &mut Vec<u8>) -> Result<(), Failure> {
        const CHUNK: usize = 16 * 1024;
        if self.done {
            return Ok(());
        }
        let buf = loop {
            match self.source.fill_buf() {
                Ok(buf) => break buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Exit::IoErr.with(format!("reading stdin: {e}"))),
            }
        };
        if buf.is_empty() {
            self.lines.finish(out);
            self.done = true;
            return Ok(());
        }
        let (used, end) = self.lines.feed(&buf[..buf.len().min(CHUNK)], out);
        self.source.consume(used);
        self.done = end;
        Ok(())
    }

    /// Reads and throws away the rest of the message.
    fn drain(&mut self) {
        let mut out = Vec::new();
        while !self.done && self.read(&mut out).is_ok() {
            out.clear();
        }
    }

    /// Reads past the end of the header section: returns what was read and
    /// where the header ends in it. Over `limit` bytes is EX_DATAERR.
    fn read_header(&mut self, limit: u64) -> Result<(Vec<u8>, usize), Failure> {
        let mut buf = Vec::new();
        let mut scanned = 0;
        loop {
            if let Some(end) = header_end(&buf, &mut scanned) {
                return Ok((buf, end));
            }
            if self.done {
                let end = buf.len();
                return Ok((buf, end));
            }
            if buf.len() as u64 > limit {
                return Err(Exit::DataErr.with(format!("message too big (over {limit} bytes)")));
            }
            self.read(&mut buf)?;
        }
    }
}

/// Where the header section of `buf` (CRLF lines) ends (RFC 5322 §2.2): at
/// the first empty line, or at the first line that is neither a field nor
/// the continuation of one. `None` until a complete line decides; lines
/// before `*scanned` were already checked.
fn header_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    while let Some(lf) = buf[*scanned..].iter().position(|&b| b == b'\n') {
        let start = *scanned;
        let line = &buf[start..=start + lf];
        let continuation = start > 0 && matches!(line[0], b' ' | b'\t');
        if line == b"\r\n" || !(continuation || field_name(line).is_some()) {
            return Some(start);
        }
        *scanned = start + lf + 1;
    }
    None
}

/// The name of the field that `line` begins: printable ASCII but `:`, then
/// the colon (RFC 5322 §2.2; whitespace before it is obsolete syntax, §4.5).
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let len = line
        .iter()
        .take_while(|&&b| b.is_ascii_graphic() && b != b':')
        .count();
    let after = line[len..].iter().position(|&b| b != b' ' && b != b'\t')?;
    (len > 0 && line[len + after] == b':').then(|| &line[..len])
}

/// Splits a header section (as [`header_end`] delimits it) into fields,
/// each with its continuation lines.
fn fields(header: &[u8]) -> Vec<&[u8]> {
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    for (i, _) in header.iter().enumerate().filter(|(_, &b)| b == b'\n') {
        if !matches!(header.get(i + 1), Some(b' ' | b'\t')) {
            fields.push(&header[start..=i]);
            start = i + 1;
        }
    }
    fields
}

/// True when `field` is named `name` (case-insensitive, RFC 5322 §1.2.2).
fn is(field: &[u8], name: &str) -> bool {
    field_name(field).is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// The unfolded value of `field` (RFC 5322 §2.2.3), trimmed.
fn value(field: &[u8]) -> String {
    let colon = field.iter().position(|&b| b == b':').map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(&field[colon..]);
    text.replace("\r\n", "").trim().to_string()
}

/// The addresses of an RFC 5322 §3.4 address list, as address texts:
/// `a@b`, `Name <a@b>`, `"Doe, J" <a@b>`, `a@b (comment)`, groups
/// `team: a@b, c@d;`. Display names and comments are dropped.
fn address_list(value: &str) -> Vec<String> {
    let mut list = Vec::new();
    // This entry's text outside `<>` (no spaces, no comments), and its `<>`.
    let (mut bare, mut angle) = (String::new(), None::<String>);
    let (mut in_angle, mut quoted, mut literal) = (false, false, false);
    let (mut escaped, mut comment) = (false, 0u32);
    for c in value.chars() {
        if comment > 0 {
            match c {
                _ if escaped => escaped = false,
                '(' => comment += 1,
                ')' => comment -= 1,
                '\\' => escaped = true,
                _ => {}
            }
            continue;
        }
        let text = match &mut angle {
            Some(inside) if in_angle => inside,
            _ => &mut bare,
        };
        if quoted || literal {
            text.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' if quoted => quoted = false,
                ']' if literal => literal = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' | '[' => {
                quoted = c == '"';
                literal = c == '[';
                text.push(c);
            }
            '(' => comment = 1,
            '<' if !in_angle => (in_angle, angle) = (true, Some(String::new())),
            '>' if in_angle => in_angle = false,
            ':' if !in_angle => bare.clear(), // a group's display name
            ',' | ';' if !in_angle => {
                list.push(angle.take().unwrap_or_else(|| bare.clone()));
                bare.clear();
            }
            _ if c.is_whitespace() => {}
            _ => text.push(c),
        }
    }
    list.push(angle.unwrap_or(bare));
    list.retain(|a| !a.is_empty());
    list
}

/// `From:` for a generated header: `addr`, or `Name <addr>` with `-F`.
fn from_header(address: &str, full_name: Option<&str>) -> String {
    let name: String = full_name
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let name = name.trim();
    if name.is_empty() {
        return address.to_string();
    }
    // RFC 5322 §3.2.5: a phrase of atoms as is, anything else quoted.
    let atext = |c: char| c.is_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if name.chars().all(atext) {
        return format!("{name} <{address}>");
    }
    let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\" <{address}>")
}

/// Sendmail's input rules as a byte automaton, sans-IO like
/// `data::DataReader`: a line holding a single `.` (then LF or CRLF, or end
/// of file) ends the input unless `ignore_dots`; a bare LF becomes CRLF;
/// nothing is unstuffed; an unterminated last line gets its CRLF.
///
/// ```text
///   LineStart ──'.'──▶ Dot ──'\r'──▶ DotCr ──'\n'──▶ END
///                       └──────────'\n'────────────▶ END
///   Dot/DotCr + other: emit what was held, go on as Mid
///   Mid ──'\r'──▶ Cr ──'\n'──▶ LineStart;  Mid ──'\n' (emit CRLF)──▶ LineStart
/// ```
#[derive(Debug)]
struct LineReader {
    state: LineState,
    ignore_dots: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineState {
    LineStart,
    /// A line so far holding only `.` (held back).
    Dot,
    /// `.` CR at the start of a line (both held back).
    DotCr,
    Mid,
    /// The previous byte was a CR (already emitted).
    Cr,
}

impl LineReader {
    fn new(ignore_dots: bool) -> LineReader {
        LineReader {
            state: LineState::LineStart,
            ignore_dots,
        }
    }

    /// Consumes `input` into `out`; returns the bytes used and whether the
    /// end line was consumed (then it stops right after it).
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        for (i, &b) in input.iter().enumerate() {
            if self.step(b, out) {
                return (i + 1, true);
            }
        }
        (input.len(), false)
    }

    /// End of file: completes the last line (a lone `.` there is the end).
    fn finish(&mut self, out: &mut Vec<u8>) {
        match self.state {
            LineState::Mid => out.extend_from_slice(b"\r\n"),
            LineState::Cr => out.push(b'\n'),
            LineState::LineStart | LineState::Dot | LineState::DotCr => {}
        }
        self.state = LineState::LineStart;
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        use LineState::*;
        let (emit, next): (&[u8], LineState) = match (self.state, b) {
            (LineStart, b'.') if !self.ignore_dots => (b"", Dot),
            (Dot | DotCr, b'\n') => return true,
            (Dot, b'\r') => (b"", DotCr),
            (held @ (Dot | DotCr), _) => {
                // Not the end line after all: what was held is content.
                let (bytes, then) = if held == Dot {
                    (&b"."[..], Mid)
                } else {
                    (&b".\r"[..], Cr)
                };
                out.extend_from_slice(bytes);
                self.state = then;
                return self.step(b, out);
            }
            (Cr, b'\n') => (b"\n", LineStart),
            (_, b'\n') => (b"\r\n", LineStart),
            (_, b'\r') => (b"\r", Cr),
            _ => (std::slice::from_ref(&b), Mid),
        };
        out.extend_from_slice(emit);
        self.state = next;
        false
    }
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
