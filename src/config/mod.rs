//! Configuration: the command line (getopts, SPEC §2), the config file
//! (`key = value`, SPEC §3), their merge (options win), defaults and
//! `--check`. Routing decisions on the parsed settings are `routing.rs`'s.
//!
//! Settings are parsed once, here, into typed values; the rest of smtpbox
//! never sees a setting as a string.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::data::BareLf;
use crate::host::system_hostname;
pub use crate::listen::{Listen, Mode};
pub use crate::maildir::Budget;
use crate::notify;
use crate::routing::{alias_cycle, normalize_domain, strip_detail, Tables};

mod check;
mod cli;
mod file;
mod values;

pub use check::{check, check_files, read_bounded};
pub use cli::from_args_with_default;
use file::*;
use values::*;

/// The config file read when `-c` is not given and this file exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/smtpbox/smtpbox.conf";

/// What `--version` prints.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The largest config file read (it is a few lines; `-c /dev/zero` must
/// not fill memory).
pub const MAX_CONFIG_FILE: u64 = 1 << 20;

/// The largest certificate, key or users file read at start-up and by
/// `--check`.
pub const MAX_SECRET_FILE: u64 = 4 << 20;

/// Bounds of the numeric settings (README "Config file"). Durations stay
/// short enough that no deadline computed from them can overflow; sizes
/// stay below 2^40.
pub const MAX_TIMEOUT: u64 = 86_400;
pub const MAX_SESSION_TIMEOUT: u64 = 604_800;
pub const MAX_SIZE: u64 = (1 << 40) - 1;
pub const MAX_RECIPIENTS: u64 = 100_000;
/// `maildir_keep_days`: a hundred years.
pub const MAX_KEEP_DAYS: u64 = 36_500;
pub const MAX_CONNECTIONS: u64 = 65_535;
pub const MAX_ERRORS: u64 = 10_000;

/// RFC 1035 2.3.4 (a name in text form, without the trailing dot).
const MAX_HOSTNAME: usize = 253;

/// How much of a bad key or value an error message quotes.
const QUOTED: usize = 64;

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Serve with this configuration.
    Run(Config, RunOptions),
    /// `--check`: run [`check`] (and the TLS checks) on this, then exit.
    Check(Config),
    /// `--notifier`: the notifier service for this configuration's
    /// `notify` (SPEC §7a).
    Notifier(Config),
    /// `--help`: print this usage text and exit 0.
    Help(String),
    /// `--version`: print [`VERSION`] and exit 0.
    Version,
}

/// How to serve: options that are not configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// `--inetd`: one session over stdin/stdout, then exit.
    pub inetd: bool,
}

/// What one listener serves (TCP, socket-activated, inetd's socket, the
/// local submission socket): where, in which mode, under which limits.
/// Built once per listener and lent to every session it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The listener's address; None for inetd's stdin and the local socket.
    pub addr: Option<SocketAddr>,
    pub mode: Mode,
    pub limits: Limits,
}

/// The limits a session is held to (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long one read may wait.
    pub timeout: Duration,
    /// How long the whole session may last.
    pub session_timeout: Duration,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_errors: u32,
}

impl Policy {
    /// The policy of a listener of `config` at `addr` speaking `mode`.
    pub fn new(config: &Config, addr: Option<SocketAddr>, mode: Mode) -> Policy {
        Policy {
            addr,
            mode,
            limits: config.limits,
        }
    }

    /// The policy of a configured `listen` entry.
    pub fn listen(config: &Config, listen: Listen) -> Policy {
        Policy::new(config, Some(listen.addr), listen.mode)
    }
}

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub hostname: String,
    pub listen: Vec<Listen>,
    /// Local domains, lowercased, without a trailing dot.
    pub domains: Vec<String>,
    /// The default mailbox (catch-all for local recipients).
    pub maildir: Option<PathBuf>,
    /// `mailbox` entries: key is a lowercased local part or full address.
    pub mailboxes: Vec<(String, PathBuf)>,
    /// `alias` entries: lowercased NAME to TARGET (local part or address).
    pub aliases: Vec<(String, String)>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub users: Option<PathBuf>,
    /// What every session is held to; each listener's [`Policy`] carries
    /// this one value.
    pub limits: Limits,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub bare_lf: BareLf,
    pub user: Option<String>,
    /// Where `user` was set (`FILE:LINE`), for what is found wrong with
    /// it only later: the account missing at `--check` or start-up.
    pub user_origin: Option<String>,
    /// The local submission socket (SPEC §3, §5); None: no such socket.
    pub local_socket: Option<PathBuf>,
    /// `maildir_quota`, `maildir_keep` and `maildir_keep_days`: what
    /// every Maildir may hold unless its `mailbox` line says otherwise.
    pub budget: Budget,
    /// Where `maildir_keep` was set (`FILE:LINE`), for what is wrong with
    /// it only next to the other limits.
    pub budget_origin: Option<String>,
    /// The `keep=` and `keep_days=` of `mailbox` lines, as written.
    pub keeps: Vec<Keep>,
    /// The budget of every configured Maildir (default and `mailbox`
    /// ones), each path once: the global one with its `mailbox` line's
    /// `keep=`/`keep_days=`. Made by [`Config::finish`].
    pub budgets: Vec<(PathBuf, Budget)>,
    /// `detail_folders`: `name+detail` goes to the folder `.detail/`.
    pub detail_folders: bool,
    /// `notify`, `notify_timeout`, `notify_jobs`, `notify_rate` (SPEC §7a).
    pub notify: notify::Settings,
}

/// A `mailbox` line's own retention budget (SPEC §7): `keep=SIZE` and
/// `keep_days=DAYS` between its NAME and its PATH.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keep {
    pub path: PathBuf,
    pub keep: Option<u64>,
    pub keep_days: Option<u64>,
    /// `FILE:LINE` of the line.
    pub origin: String,
}

/// A configuration problem; its message names the file and line at fault
/// where there is one, and is what smtpbox prints before exiting 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

/// Parses the command line (`args` without argv[0]) and the config file it
/// names, or [`DEFAULT_CONFIG_PATH`] when that exists. Options override the
/// file; a repeatable option replaces the file's list rather than extending it.
/// Arguments are OS strings (SPEC §2: a path need not be UTF-8).
pub fn from_args<S: AsRef<OsStr>>(args: &[S]) -> Result<Invocation, ConfigError> {
    from_args_with_default(args, Path::new(DEFAULT_CONFIG_PATH))
}

/// `--check`, read-only: every Maildir (the default one and each `mailbox`)
/// is a directory this process can write, or one the first delivery can
/// create; the TLS and users files are readable regular files of a sane
/// size. Returns what the first delivery would create, one note per
/// Maildir. Parsing the certificate and key is left to the TLS module.
impl Config {
    /// Every Maildir of the config, the default one first, then each
    /// `mailbox`'s: the one inventory that `--check`, the sandbox and
    /// start-up maintenance walk.
    pub fn maildirs(&self) -> impl Iterator<Item = &PathBuf> {
        let boxes = self.mailboxes.iter().map(|(_, path)| path);
        self.maildir.iter().chain(boxes)
    }

    /// Every file the server reads while it runs (certificate, key, users
    /// file): checked at start-up and by `--check`, readable in the sandbox.
    pub fn read_files(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.tls_cert, &self.tls_key, &self.users]
            .into_iter()
            .flatten()
    }

    /// The routing tables, as [`crate::routing`] reads them.
    pub fn routes(&self) -> Tables<'_> {
        Tables {
            domains: &self.domains,
            maildir: self.maildir.as_ref(),
            mailboxes: &self.mailboxes,
            aliases: &self.aliases,
            listen: &self.listen,
            budgets: &self.budgets,
            detail_folders: self.detail_folders,
        }
    }

    /// The budget of the Maildir at `path`: the global one, with what a
    /// `mailbox` line naming that path sets for it.
    pub fn budget_of(&self, path: &Path) -> Budget {
        let mut budget = self.budget;
        for keep in self.keeps.iter().filter(|k| k.path == path) {
            budget.keep = keep.keep.unwrap_or(budget.keep);
            budget.keep_days = keep.keep_days.unwrap_or(budget.keep_days);
        }
        budget
    }

    /// Loads a config file alone, with defaults for everything it leaves out
    /// (sendmail mode, which has no smtpbox command line).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::unset();
        read_file(path, &mut config)?;
        config.finish()
    }

    /// Like [`Config::load`] for text already in memory; `origin` names it
    /// in errors. (The fuzzer's entry point.)
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::unset();
        parse_text(text, origin, &mut config)?;
        config.finish()
    }

    /// Built-in defaults (SPEC §3); empty hostname, listen and domains mean
    /// "not set" until [`Config::finish`].
    fn unset() -> Config {
        Config {
            hostname: String::new(),
            listen: Vec::new(),
            domains: Vec::new(),
            maildir: None,
            mailboxes: Vec::new(),
            aliases: Vec::new(),
            tls_cert: None,
            tls_key: None,
            users: None,
            limits: Limits {
                timeout: Duration::from_secs(300),
                session_timeout: Duration::from_secs(1800),
                max_message_size: 10_485_760,
                max_recipients: 100,
                max_errors: 10,
            },
            budget: Budget::default(),
            budget_origin: None,
            keeps: Vec::new(),
            budgets: Vec::new(),
            detail_folders: false,
            notify: notify::Settings::default(),
            max_connections: 32,
            max_connections_per_ip: 8,
            bare_lf: BareLf::Normalize,
            user: None,
            user_origin: None,
            local_socket: None,
        }
    }

    /// Fills in the defaults that depend on other settings, then checks
    /// the settings that only make sense together.
    fn finish(mut self) -> Result<Config, ConfigError> {
        if self.hostname.is_empty() {
            // A system name that could not be a hostname here is not used.
            self.hostname = Some(system_hostname())
                .filter(|h| check_hostname(h).is_ok())
                .unwrap_or_else(|| "localhost".to_string());
        }
        if self.listen.is_empty() {
            let loopback: [IpAddr; 2] = [Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
            let smtp = |ip| Listen {
                addr: SocketAddr::new(ip, 25),
                mode: Mode::Smtp,
            };
            self.listen = loopback.map(smtp).to_vec();
        }
        if self.domains.is_empty() {
            self.domains.push(normalize_domain(&self.hostname));
            if self.domains[0] != "localhost" {
                self.domains.push("localhost".to_string());
            }
        }
        let mut budgets: Vec<(PathBuf, Budget)> = Vec::new();
        for path in self.maildirs() {
            if !budgets.iter().any(|(p, _)| p == path) {
                budgets.push((path.clone(), self.budget_of(path)));
            }
        }
        self.budgets = budgets;
        self.validate().map_err(ConfigError::new)?;
        Ok(self)
    }

    fn validate(&self) -> Result<(), String> {
        check_hostname(&self.hostname).map_err(|e| format!("bad hostname: {e}"))?;
        if self.maildir.is_none() && self.mailboxes.is_empty() {
            return Err(format!(
                "no maildir configured: smtpbox needs --maildir DIR or a `maildir` line in the \
                 config file (-c FILE, default {DEFAULT_CONFIG_PATH}) to know where to store mail"
            ));
        }
        self.validate_budgets()?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls_cert and tls_key go together: set both or neither".into());
        }
        for listen in &self.listen {
            if listen.mode != Mode::Smtp && self.tls_cert.is_none() {
                return Err(format!("listener {listen} needs tls_cert and tls_key"));
            }
            if listen.mode == Mode::Submission && self.users.is_none() {
                return Err(format!("listener {listen} needs a users file for AUTH"));
            }
        }
        Ok(())
    }
}

impl Config {
    /// SPEC §7: a retention budget is no larger than the quota (retention
    /// runs first, so the quota could never be reached) and no smaller
    /// than the largest message (or that message could never be kept);
    /// two `mailbox` lines for one Maildir agree on its budget.
    fn validate_budgets(&self) -> Result<(), String> {
        let check = |keep: u64, origin: Option<&str>, what: &str| {
            let at = origin.map(|o| format!("{o}: ")).unwrap_or_default();
            let quota = self.budget.quota;
            let max = self.limits.max_message_size;
            if keep > 0 && quota > 0 && keep > quota {
                Err(format!(
                    "{at}{what} ({keep} bytes) is larger than maildir_quota ({quota} bytes): \
                     retention runs first, so the quota could never be reached"
                ))
            } else if keep > 0 && keep < max {
                Err(format!(
                    "{at}{what} ({keep} bytes) is smaller than max_message_size ({max} bytes): \
                     a message that large could never be kept"
                ))
            } else {
                Ok(())
            }
        };
        check(
            self.budget.keep,
            self.budget_origin.as_deref(),
            "maildir_keep",
        )?;
        for (i, keep) in self.keeps.iter().enumerate() {
            if let Some(bytes) = keep.keep {
                check(bytes, Some(&keep.origin), "keep")?;
            }
            let earlier = self.keeps[..i].iter().find(|k| {
                k.path == keep.path
                    && ((k.keep.is_some() && keep.keep.is_some() && k.keep != keep.keep)
                        || (k.keep_days.is_some()
                            && keep.keep_days.is_some()
                            && k.keep_days != keep.keep_days))
            });
            if let Some(earlier) = earlier {
                return Err(format!(
                    "{}: the budget of {} differs from the one set at {}: one Maildir has one budget",
                    keep.origin,
                    keep.path.display(),
                    earlier.origin
                ));
            }
        }
        Ok(())
    }
}

impl ConfigError {
    /// An error with this message (for other modules' `--check` failures).
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError {
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line `line`, split on spaces, with no default config file.
    fn run(line: &str) -> Result<Invocation, ConfigError> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        from_args_with_default(&args, Path::new("/nonexistent/smtpbox.conf"))
    }

    fn run_config(line: &str) -> Config {
        match run(line) {
            Ok(Invocation::Run(config, _)) => config,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    fn run_err(line: &str) -> String {
        run(line).unwrap_err().to_string()
    }

    /// Parses `text` as the file `t.conf` on top of the built-in defaults.
    fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::unset();
        parse_text(text, Path::new("t.conf"), &mut config)?;
        Ok(config)
    }

    /// `parse` then `finish`, with a fixed hostname.
    fn load(text: &str) -> Config {
        let mut config = parse(text).unwrap();
        config.hostname = "box".into();
        config.finish().unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    /// A fresh, empty directory under the system temp dir, removed on
    /// drop (a failing test leaves nothing behind either).
    fn temp_dir(name: &str) -> TempDir {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("smtpbox-config-{pid}-{name}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for TempDir {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn every_key_is_parsed() {
        let c = parse(
            "hostname = mx.example.org\nlisten = 0.0.0.0:25\nlisten = [::]:465/tls\n\
             domain = Example.ORG.\ndomain = example.net\nmaildir = /var/mail/all\n\
             mailbox = Alice /var/mail/alice\nmailbox = bob@Example.org /var/mail/my bob\n\
             alias = Root alice\ntls_cert = /etc/cert.pem\ntls_key = /etc/key.pem\n\
             users = /etc/users\nmax_message_size = 1000\nmax_recipients = 5\n\
             max_connections = 6\nmax_connections_per_ip = 2\ntimeout = 30\n\
             session_timeout = 600\nmax_errors = 3\nmaildir_quota = 0\nbare_lf = reject\n\
             user = smtpbox\n",
        )
        .unwrap();
        assert_eq!(c.hostname, "mx.example.org");
        let listen: Vec<String> = c.listen.iter().map(Listen::to_string).collect();
        assert_eq!(listen, ["0.0.0.0:25/smtp", "[::]:465/tls"]);
        assert_eq!(c.domains, ["example.org", "example.net"]);
        assert_eq!(c.maildir, Some(PathBuf::from("/var/mail/all")));
        let boxes: Vec<String> = c
            .mailboxes
            .iter()
            .map(|(k, p)| format!("{k} {}", p.display()))
            .collect();
        assert_eq!(
            boxes,
            ["alice /var/mail/alice", "bob@example.org /var/mail/my bob"]
        );
        assert_eq!(c.aliases, [("root".to_string(), "alice".to_string())]);
        assert_eq!(c.tls_cert, Some(PathBuf::from("/etc/cert.pem")));
        assert_eq!(c.tls_key, Some(PathBuf::from("/etc/key.pem")));
        assert_eq!(c.users, Some(PathBuf::from("/etc/users")));
        assert_eq!(
            (c.limits.max_message_size, c.limits.max_recipients),
            (1000, 5)
        );
        assert_eq!((c.max_connections, c.max_connections_per_ip), (6, 2));
        assert_eq!(
            (c.limits.timeout, c.limits.session_timeout),
            (Duration::from_secs(30), Duration::from_secs(600))
        );
        assert_eq!((c.limits.max_errors, c.budget.quota), (3, 0));
        assert_eq!(c.bare_lf, BareLf::Reject);
        assert_eq!(c.user.as_deref(), Some("smtpbox"));
        assert!(c.finish().is_ok());
    }

    #[test]
    fn local_socket_is_an_absolute_short_path() {
        assert_eq!(parse("").unwrap().local_socket, None, "off by default");
        let c = parse("local_socket = /run/smtpbox/smtpbox.sock\n").unwrap();
        assert_eq!(
            c.local_socket,
            Some(PathBuf::from("/run/smtpbox/smtpbox.sock"))
        );
        for bad in ["smtpbox.sock", "/", &format!("/{}", "s".repeat(107))] {
            let e = parse_err(&format!("local_socket = {bad}\n"));
            assert!(e.contains(":1: bad `local_socket`"), "{bad}: {e}");
        }
    }

    #[test]
    fn comments_and_blank_lines() {
        let c = parse("# comment\n\n  \n  # indented\nmaildir = /srv/mail#1 # trailing\n").unwrap();
        assert_eq!(c.maildir, Some(PathBuf::from("/srv/mail#1")));
        // `#` without a space before it is part of the value.
        let e = parse_err("# comment\n\nmax_errors=4#x\n");
        assert_eq!(
            e,
            "t.conf:3: bad `max_errors`: expected a positive whole number, found `4#x`"
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse_err("maildir = /m\n\n# x\nlisen = 1.2.3.4:25\n");
        assert_eq!(e, "t.conf:4: unknown key `lisen`");
        // Each case: a config line, ` => `, the message after `t.conf:1: `.
        let cases = "\
            maildir /x => expected `key = value`, found `maildir /x`
            maildir = => bad `maildir`: missing path
            timeout = 0 => bad `timeout`: expected a positive whole number, found `0`
            session_timeout = -5 => bad `session_timeout`: expected a positive whole number, found `-5`
            max_recipients = +5 => bad `max_recipients`: expected a positive whole number, found `+5`
            max_connections = x => bad `max_connections`: expected a positive whole number, found `x`
            max_connections_per_ip = 0 => bad `max_connections_per_ip`: expected a positive whole number, found `0`
            max_message_size = 0 => bad `max_message_size`: expected a positive whole number, found `0`
            max_errors = 9999999999 => bad `max_errors`: 9999999999 is over the limit of 10000
            timeout = 86401 => bad `timeout`: 86401 is over the limit of 86400
            session_timeout = 18446744073709551615 => bad `session_timeout`: 18446744073709551615 is over the limit of 604800
            session_timeout = 18446744073709551616 => bad `session_timeout`: `18446744073709551616` is over the limit of 604800
            max_message_size = 1099511627776 => bad `max_message_size`: 1099511627776 is over the limit of 1099511627775
            maildir_quota = 1099511627776 => bad `maildir_quota`: 1099511627776 is over the limit of 1099511627775
            max_recipients = 100001 => bad `max_recipients`: 100001 is over the limit of 100000
            max_connections = 65536 => bad `max_connections`: 65536 is over the limit of 65535
            maildir = ../../etc => bad `maildir`: `../../etc` is not an absolute path
            tls_key = key.pem => bad `tls_key`: `key.pem` is not an absolute path
            mailbox = alice Maildir => bad `mailbox`: `Maildir` is not an absolute path
            maildir_quota = x => bad `maildir_quota`: expected a whole number, found `x`
            bare_lf = strip => bad `bare_lf`: expected normalize or reject, found `strip`
            hostname = a b => bad `hostname`: `a b` is not a domain name or an address literal
            user = => bad `user`: expected one word, found ``
            user = a:b => bad `user`: `a:b` is not a user name
            domain = a@b => bad `domain`: `a@b` is not a domain name
            mailbox = alice => bad `mailbox`: expected `NAME PATH`, found `alice`
            mailbox = @x /m => bad `mailbox`: `@x` is not a local part or address
            alias = a b c => bad `alias`: expected `NAME TARGET`, found `a b c`
            alias = a => bad `alias`: expected `NAME TARGET`, found `a`
            alias = a+b c => bad `alias`: `a+b` can never match: `+detail` is dropped before lookup
            mailbox = a+b@x /m => bad `mailbox`: `a+b@x` can never match: `+detail` is dropped before lookup
            listen = 1.2.3.4:25/smtps => bad `listen`: unknown mode `smtps` in `1.2.3.4:25/smtps` (expected smtp, submission or tls)
            listen = ::1:25 => bad `listen`: bad listen address `::1:25` (expected ADDR:PORT[/MODE], IPv6 as [::1]:25)
            maildir_keep = 1099511627776 => bad `maildir_keep`: 1099511627776 is over the limit of 1099511627775
            maildir_keep = 1M => bad `maildir_keep`: expected a whole number, found `1M`
            maildir_keep_days = 36501 => bad `maildir_keep_days`: 36501 is over the limit of 36500
            maildir_keep_days = -1 => bad `maildir_keep_days`: expected a whole number, found `-1`
            detail_folders = on => bad `detail_folders`: expected yes or no, found `on`
            detail_folders = => bad `detail_folders`: expected yes or no, found ``
            mailbox = a keep=x /m => bad `mailbox`: `keep=x`: expected a whole number, found `x`
            mailbox = a keep_days=99999 /m => bad `mailbox`: `keep_days=99999`: 99999 is over the limit of 36500
            mailbox = a keep=5 => bad `mailbox`: missing path
            mailbox = a keep=5 m => bad `mailbox`: `m` is not an absolute path";
        for case in cases.lines() {
            let (text, want) = case.trim().split_once(" => ").unwrap();
            assert_eq!(parse_err(text), format!("t.conf:1: {want}"));
        }
    }

    #[test]
    fn budgets_global_and_per_mailbox() {
        let c = load(
            "maildir = /m/all\nmailbox = ops keep=20000000 keep_days=30 /m/ops dir\n\
             mailbox = ops@x /m/ops dir\nmailbox = bob keep_days=7 /m/bob\n\
             maildir_quota = 50000000\nmaildir_keep = 30000000\ndetail_folders = yes\n",
        );
        assert!(c.detail_folders);
        let global = Budget {
            quota: 50_000_000,
            keep: 30_000_000,
            keep_days: 0,
        };
        assert_eq!(c.budget, global);
        // A path may hold spaces after the options; each Maildir once.
        assert_eq!(
            c.budgets,
            vec![
                (PathBuf::from("/m/all"), global),
                (
                    PathBuf::from("/m/ops dir"),
                    Budget {
                        keep: 20_000_000,
                        keep_days: 30,
                        ..global
                    }
                ),
                (
                    PathBuf::from("/m/bob"),
                    Budget {
                        keep_days: 7,
                        ..global
                    }
                ),
            ]
        );
        assert_eq!(
            c.mailboxes[0],
            ("ops".to_string(), PathBuf::from("/m/ops dir"))
        );
    }

    #[test]
    fn budgets_that_cannot_work_name_their_line() {
        let cases = [
            (
                "maildir = /m\nmaildir_quota = 1000000\nmaildir_keep = 2000000\n",
                "t.conf:3: maildir_keep (2000000 bytes) is larger than maildir_quota (1000000 bytes)",
            ),
            (
                "maildir = /m\nmaildir_keep = 1000\n",
                "t.conf:2: maildir_keep (1000 bytes) is smaller than max_message_size (10485760 bytes)",
            ),
            (
                "maildir_quota = 1000000\nmaildir = /m\nmailbox = a keep=2000000 /m/a\n",
                "t.conf:3: keep (2000000 bytes) is larger than maildir_quota",
            ),
            (
                "maildir = /m\nmailbox = a keep=20000000 /m/a\nmailbox = b keep=30000000 /m/a\n",
                "t.conf:3: the budget of /m/a differs from the one set at t.conf:2",
            ),
        ];
        for (text, want) in cases {
            let mut config = parse(text).unwrap();
            config.hostname = "box".into();
            let e = config.finish().unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}\nwanted {want}");
        }
        // A smaller max_message_size makes a small budget fine; 0 is none.
        load("maildir = /m\nmax_message_size = 1000\nmaildir_keep = 1000\n");
        load("maildir = /m\nmaildir_quota = 1000\nmaildir_keep = 0\n");
    }

    #[test]
    fn listen_specs() {
        let cases = [
            ("127.0.0.1:25", "127.0.0.1:25/smtp"),
            ("[::1]:587/submission", "[::1]:587/submission"),
            ("[::]:465/tls", "[::]:465/tls"),
            ("0.0.0.0:2525/smtp", "0.0.0.0:2525/smtp"),
        ];
        for (spec, shown) in cases {
            assert_eq!(parse_listen(spec).unwrap().to_string(), shown);
        }
        for bad in "localhost:25|1.2.3.4|1.2.3.4:99999|1.2.3.4:25/|::1|".split('|') {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn defaults() {
        let c = run_config("-m /srv/mail");
        let host = system_hostname();
        assert_eq!(c.hostname, host);
        let listen: Vec<String> = c.listen.iter().map(Listen::to_string).collect();
        assert_eq!(listen, ["127.0.0.1:25/smtp", "[::1]:25/smtp"]);
        assert_eq!(c.domains[0], normalize_domain(&host));
        assert_eq!(c.domains.last().map(String::as_str), Some("localhost"));
        assert_eq!(c.maildir, Some(PathBuf::from("/srv/mail")));
        assert!(c.mailboxes.is_empty() && c.aliases.is_empty() && c.user.is_none());
        assert!(c.tls_cert.is_none() && c.tls_key.is_none() && c.users.is_none());
        assert_eq!(
            (c.limits.max_message_size, c.limits.max_recipients),
            (10_485_760, 100)
        );
        assert_eq!((c.max_connections, c.max_connections_per_ip), (32, 8));
        assert_eq!(c.limits.timeout, Duration::from_secs(300));
        assert_eq!(c.limits.session_timeout, Duration::from_secs(1800));
        assert_eq!((c.limits.max_errors, c.budget.quota), (10, 0));
        assert_eq!(c.bare_lf, BareLf::Normalize);
        let c = run_config("-m /m -H Box.Example.");
        assert_eq!(c.hostname, "Box.Example.");
        assert_eq!(c.domains, ["box.example", "localhost"]);
        assert_eq!(run_config("-m /m -H localhost").domains, ["localhost"]);
    }

    #[test]
    fn options_override_the_file() {
        let dir = temp_dir("precedence");
        let file = dir.join("smtpbox.conf");
        let text = "hostname = file.example\nlisten = 10.0.0.1:25\nlisten = 10.0.0.2:25\n\
                    domain = a.example\ndomain = b.example\nmaildir = /file/mail\nmax_errors = 3\n";
        fs::write(&file, text).unwrap();
        let c = run_config(&format!("-c {}", file.display()));
        assert_eq!((c.listen.len(), c.hostname.as_str()), (2, "file.example"));
        assert_eq!(c.domains, ["a.example", "b.example"]);
        let line = "-l [::1]:2525 --domain C.example -m /opt/mail -H cli.example --tls-cert /c";
        let c = run_config(&format!("-c {} {line} --tls-key /k", file.display()));
        let listen: Vec<String> = c.listen.iter().map(Listen::to_string).collect();
        assert_eq!(listen, ["[::1]:2525/smtp"]);
        assert_eq!(c.domains, ["c.example"]);
        assert_eq!(c.maildir, Some(PathBuf::from("/opt/mail")));
        assert_eq!(
            (c.hostname.as_str(), c.limits.max_errors),
            ("cli.example", 3)
        );
        assert_eq!(
            (c.tls_cert, c.tls_key),
            (Some("/c".into()), Some("/k".into()))
        );
        // The default path is read when it exists and -c is absent.
        match from_args_with_default::<String>(&[], &file) {
            Ok(Invocation::Run(c, _)) => assert_eq!(c.hostname, "file.example"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invocations() {
        assert!(matches!(run("--version"), Ok(Invocation::Version)));
        // --help and --version need no maildir.
        match run("-h") {
            Ok(Invocation::Help(text)) => assert!(text.contains("Usage: smtpbox [OPTIONS]")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(run("-t -m /m"), Ok(Invocation::Check(_))));
        assert!(matches!(
            run("--check -m /m --inetd"),
            Ok(Invocation::Check(_))
        ));
        let inetd = |line| match run(line) {
            Ok(Invocation::Run(_, options)) => options.inetd,
            other => panic!("{other:?}"),
        };
        assert!(inetd("-m /m --inetd") && !inetd("--maildir /m"));
        assert!(run_err("--bogus").contains("bogus"));
        assert!(run_err("-m /m -m /n").contains("more than once"));
        assert_eq!(
            run_err("-m /m extra"),
            "unexpected argument `extra` (see --help)"
        );
        assert!(run_err("-m /m -l 1.2.3.4:25/xyz").starts_with("--listen: unknown mode `xyz`"));
        assert!(run_err("-m /m -d a@b").starts_with("--domain: `a@b`"));
        assert!(run_err("-c /nonexistent/x.conf").starts_with("/nonexistent/x.conf: cannot read"));
    }

    #[test]
    fn missing_maildir_is_explained() {
        for line in ["", "-t", "-H x -l 127.0.0.1:2525"] {
            let e = run_err(line);
            assert!(
                e.contains("--maildir DIR") && e.contains("`maildir` line"),
                "{e}"
            );
            assert!(e.contains("to know where to store mail"), "{e}");
        }
        // A mailbox entry alone is enough.
        assert!(load("mailbox = root /m\n").maildir.is_none());
    }

    #[test]
    fn settings_that_go_together() {
        let e = run_err("-m /m --tls-cert /c");
        assert_eq!(e, "tls_cert and tls_key go together: set both or neither");
        let e = run_err("-m /m -l [::]:465/tls");
        assert_eq!(e, "listener [::]:465/tls needs tls_cert and tls_key");
        let e = run_err("-m /m -l [::]:587/submission --tls-cert /c --tls-key /k");
        assert!(e.contains("needs a users file"));
    }

    #[test]
    fn alias_loops_are_errors() {
        let e = parse_err("maildir = /m\nalias = a b\nalias = b c\nalias = c A\n");
        assert_eq!(e, "t.conf:2: alias loop: a -> b -> c -> a");
        assert_eq!(
            parse_err("alias = root root+x\n"),
            "t.conf:1: alias loop: root -> root"
        );
        let e = parse_err("alias = x a\nalias = a@h.example b\nalias = b a@h.example\n");
        assert_eq!(e, "t.conf:2: alias loop: a@h.example -> b -> a@h.example");
        // Chains without a loop are fine, and `a` does not match `a@x`.
        assert!(parse("alias = a b\nalias = b c\nalias = c@x a\n").is_ok());
    }

    #[test]
    fn bounds_are_inclusive() {
        let c = parse(&format!(
            "timeout = {MAX_TIMEOUT}\nsession_timeout = {MAX_SESSION_TIMEOUT}\n\
             max_message_size = {MAX_SIZE}\nmaildir_quota = {MAX_SIZE}\n\
             max_recipients = {MAX_RECIPIENTS}\nmax_connections = {MAX_CONNECTIONS}\n\
             max_connections_per_ip = {MAX_CONNECTIONS}\nmax_errors = {MAX_ERRORS}\n"
        ))
        .unwrap();
        assert_eq!(
            c.limits.session_timeout,
            Duration::from_secs(MAX_SESSION_TIMEOUT)
        );
        assert_eq!(
            (c.limits.max_message_size, c.budget.quota),
            (MAX_SIZE, MAX_SIZE)
        );
        assert_eq!(c.limits.max_errors, 10_000);
        // No deadline computed from a bound overflows.
        let now = std::time::Instant::now();
        assert!(now
            .checked_add(c.limits.session_timeout + c.limits.timeout)
            .is_some());
    }

    #[test]
    fn hostname_is_a_domain_name_or_address_literal() {
        for good in [
            "mx.example.org",
            "Box.Example.",
            "localhost",
            "my_box-1",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            &format!(
                "{}.{}.{}.{}",
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(61)
            ),
        ] {
            assert_eq!(check_hostname(good), Ok(()), "{good}");
        }
        for bad in [
            "a\0b",
            "mx\x1bevil",
            "a..b",
            ".a",
            "a b",
            "[192.0.2.1",
            "[2001:db8::1]",
            "[IPv6:192.0.2.1]",
            "[300.1.1.1]",
            "ünicode.example",
            &"a".repeat(64),
            &format!(
                "{}.{}.{}.{}",
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(62)
            ),
        ] {
            assert!(check_hostname(bad).is_err(), "{bad:?}");
        }
        // From the file, and from -H, with control bytes escaped and a long
        // name quoted by its first 64 bytes only.
        let e = parse_err("maildir = /m\nhostname = mx\u{0}evil\n");
        assert_eq!(
            e,
            "t.conf:2: bad `hostname`: `mx\\0evil` is not a domain name or an address literal"
        );
        let e = parse_err(&format!("hostname = {}\n", "h".repeat(10_000_000)));
        assert_eq!(
            e,
            format!(
                "t.conf:1: bad `hostname`: `{}…` is longer than 253 octets",
                "h".repeat(64)
            )
        );
        let e = run_err("-m /m -H a\u{7}b");
        assert!(e.starts_with("--hostname: `a\\u{7}b` is not"), "{e}");
        // Set some other way, it is checked as a whole.
        let mut c = parse("maildir = /m\n").unwrap();
        c.hostname = "a b".into();
        let e = c.finish().unwrap_err().to_string();
        assert_eq!(
            e,
            "bad hostname: `a b` is not a domain name or an address literal"
        );
    }

    #[test]
    fn long_keys_and_values_are_quoted_short() {
        let key = "k".repeat(100_000);
        let e = parse_err(&format!("{key} = 1\n"));
        assert_eq!(e, format!("t.conf:1: unknown key `{}…`", "k".repeat(64)));
        let e = parse_err(&format!("timeout = {}\n", "9".repeat(100_000)));
        assert_eq!(
            e,
            format!(
                "t.conf:1: bad `timeout`: `{}…` is over the limit of 86400",
                "9".repeat(64)
            )
        );
        let (a, b) = ("a".repeat(1000), "b".repeat(1000));
        let e = parse_err(&format!("alias = {a} {b}\nalias = {b} {a}\n"));
        let (qa, qb) = (&a[..64], &b[..64]);
        assert_eq!(e, format!("t.conf:1: alias loop: {qa}… -> {qb}… -> {qa}…"));
        let e = parse_err(&format!("user = {}\n", "u".repeat(1000)));
        assert_eq!(
            e,
            format!(
                "t.conf:1: bad `user`: `{}…` is not a user name",
                "u".repeat(64)
            )
        );
        // A multi-byte character is never cut in half.
        let e = parse_err(&format!("user = {}\u{e9}x y\n", "u".repeat(63)));
        assert!(e.ends_with(&format!("`{}…`", "u".repeat(63))), "{e}");
    }

    #[test]
    fn a_line_that_is_not_utf8_is_named() {
        let mut c = Config::unset();
        let e = parse_lines(b"maildir = /m\r\n# \xff\xfe\n", Path::new("t.conf"), &mut c);
        assert_eq!(e.unwrap_err().to_string(), "t.conf:2: not valid UTF-8");
        let dir = temp_dir("utf8");
        let file = dir.join("x.conf");
        fs::write(&file, b"maildir = /m\n\nhostname = \xc3\n").unwrap();
        let args = [OsString::from("-c"), file.clone().into_os_string()];
        let e = from_args_with_default(&args, Path::new("/nonexistent/x.conf")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}:3: not valid UTF-8", file.display())
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn arguments_need_not_be_utf8() {
        use std::os::unix::ffi::OsStrExt;
        let os = |b: &[u8]| OsStr::from_bytes(b).to_os_string();
        let run_os = |args: &[OsString]| {
            from_args_with_default(args, Path::new("/nonexistent/smtpbox.conf"))
        };
        // Paths keep their bytes, a real U+10FF85 included.
        let maildir = b"/srv/\xff\xfe/\xf4\x8f\xbe\x85/m";
        let tls = [os(b"--tls-cert=/c\x80"), os(b"--tls-key"), os(b"/k\xc3")];
        let mut args = vec![os(b"-m"), os(maildir), os(b"-H"), os(b"mx.test")];
        args.extend(tls);
        match run_os(&args) {
            Ok(Invocation::Run(c, _)) => {
                assert_eq!(c.maildir.unwrap().as_os_str().as_bytes(), maildir);
                assert_eq!(c.tls_cert.unwrap().as_os_str().as_bytes(), b"/c\x80");
                assert_eq!(c.tls_key.unwrap().as_os_str().as_bytes(), b"/k\xc3");
            }
            other => panic!("{other:?}"),
        }
        let e = run_os(&[os(b"-c"), os(b"/nonexistent/\xff\xfe.conf")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/\u{fffd}\u{fffd}.conf: cannot read"),
            "{e}"
        );
        let e = run_os(&[os(b"-m"), os(b"/m"), os(b"-H"), os(b"\xff")]).unwrap_err();
        assert_eq!(e.to_string(), "--hostname: not UTF-8: `\u{fffd}`");
        let e = run_os(&[os(b"-m"), os(b"/m"), os(b"-d"), os(b"a\xff")]).unwrap_err();
        assert_eq!(e.to_string(), "--domain: not UTF-8: `a\u{fffd}`");
        let e = run_os(&[os(b"-m"), os(b"/m"), os(b"x\xff")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unexpected argument `x\u{fffd}` (see --help)"
        );
        let e = run_os(&[os(b"--\xff")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Unrecognized option: '\u{fffd}' (see --help)"
        );
    }

    #[test]
    fn check_writes_nothing_and_reports_what_delivery_creates() {
        use std::os::unix::fs::symlink;
        let dir = temp_dir("check");
        let mut c = parse("").unwrap();
        c.maildir = Some(dir.join("all"));
        c.mailboxes = vec![("a".into(), dir.join("deep/alice"))];
        let notes = check(&c).unwrap();
        let all = dir.join("all").display().to_string();
        let alice = dir.join("deep/alice").display().to_string();
        assert_eq!(
            notes,
            [
                format!("{all}: the first delivery will create {all}/{{tmp,new,cur}}"),
                format!("{alice}: the first delivery will create {alice}/{{tmp,new,cur}}"),
            ]
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "nothing created");
        // Complete: nothing to report. Half made: the missing parts.
        for sub in ["all/tmp", "all/new", "all/cur", "deep/alice/new"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let notes = check(&c).unwrap();
        assert_eq!(
            notes,
            [format!(
                "{alice}: the first delivery will create {alice}/{{tmp,cur}}"
            )]
        );
        assert!(!dir.join("deep/alice/tmp").exists());

        // A symlinked tmp/ or new/ is refused (delivery never follows one).
        fs::remove_dir(dir.join("all/new")).unwrap();
        symlink("/etc", dir.join("all/new")).unwrap();
        let e = check(&c).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{all}/new: a symlink (delivery never follows one)")
        );
        fs::remove_file(dir.join("all/new")).unwrap();
        fs::create_dir(dir.join("all/new")).unwrap();

        let file = dir.join("file");
        fs::write(&file, "x").unwrap();
        c.mailboxes = vec![("a".into(), file.clone())];
        let e = check(&c).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: not a directory", file.display())),
            "{e}"
        );
        c.mailboxes = vec![("a".into(), file.join("below"))];
        let e = check(&c).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: not a directory", file.display())),
            "{e}"
        );

        c.mailboxes.clear();
        c.users = Some(file.clone());
        assert_eq!(check(&c).unwrap(), Vec::<String>::new());
        let missing = dir.join("missing.pem");
        c.tls_cert = Some(missing.clone());
        let e = check(&c).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: cannot read: No such file or directory (os error 2)",
                missing.display()
            )
        );
        c.tls_cert = Some(dir.join("all"));
        let e = check(&c).unwrap_err().to_string();
        assert_eq!(e, format!("{all}: not a regular file (directory)"));
        c.tls_cert = Some("/dev/zero".into());
        let e = check(&c).unwrap_err().to_string();
        assert_eq!(e, "/dev/zero: not a regular file (device)");
        let big = dir.join("big.pem");
        File::create(&big)
            .unwrap()
            .set_len(MAX_SECRET_FILE + 1)
            .unwrap();
        c.tls_cert = Some(big.clone());
        let e = check(&c).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{}: too large (more than 4194304 bytes)", big.display())
        );
        // Only what --check itself was given was made here.
        let mut left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["all", "big.pem", "deep", "file"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_config_file_is_read_up_to_a_cap() {
        let mut c = Config::unset();
        let e = read_file(Path::new("/dev/zero"), &mut c)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "/dev/zero: too large (more than 1048576 bytes)");
        assert!(read_file(Path::new("/dev/null"), &mut c).is_ok());
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../etc/smtpbox.conf");
        let shipped = parse(text).unwrap();
        assert!(shipped.maildir.is_some());
        // SPEC §3: the shipped config and units agree on the local socket.
        let socket = Path::new("/run/smtpbox/smtpbox.sock");
        assert_eq!(shipped.local_socket.as_deref(), Some(socket));
        // Every setting shown commented out (`#key = value`) parses too,
        // and every key of SPEC §3 is shown.
        let uncomment = |l: &'static str| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
            _ => l,
        };
        let all: String = text.lines().flat_map(|l| [uncomment(l), "\n"]).collect();
        assert!(parse(&all).unwrap().finish().is_ok());
        let keys = "hostname listen domain maildir mailbox alias tls_cert tls_key users \
                    max_message_size max_recipients max_connections max_connections_per_ip \
                    timeout session_timeout max_errors maildir_quota bare_lf user local_socket";
        for key in keys.split_whitespace() {
            assert!(
                all.lines().any(|l| l.starts_with(&format!("{key} = "))),
                "{key}"
            );
        }
    }
}
