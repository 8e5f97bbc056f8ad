//! Configuration: the command line (getopts, SPEC §2), the config file
//! (`key = value`, SPEC §3), their merge (options win), defaults, recipient
//! routing (SPEC §4) and `--check`.
//!
//! Settings are parsed once, here, into typed values; the rest of smtpbox
//! never sees a setting as a string.

use std::fmt;
use std::fs::{self, DirBuilder, File};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::command::{Address, Domain};
use crate::data::BareLf;

/// The config file read when `-c` is not given and this file exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/smtpbox/smtpbox.conf";

/// What `--version` prints.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Serve with this configuration.
    Run(Config, RunOptions),
    /// `--check`: run [`check`] (and the TLS checks) on this, then exit.
    Check(Config),
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

/// What a listener speaks (SPEC §2 `--listen ADDR:PORT/MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plain SMTP; STARTTLS offered when a certificate is configured.
    Smtp,
    /// STARTTLS and AUTH required before MAIL.
    Submission,
    /// Implicit TLS from the first byte (port 465 style).
    Tls,
}

/// One `listen` entry: where to bind and what to speak there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    pub mode: Mode,
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
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub timeout: Duration,
    pub session_timeout: Duration,
    pub max_errors: u32,
    /// Bytes per Maildir; 0 is unlimited.
    pub maildir_quota: u64,
    pub bare_lf: BareLf,
    pub user: Option<String>,
}

/// Where a recipient's mail goes (SPEC §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// A local recipient, delivered to this Maildir.
    Mailbox(PathBuf),
    /// A local recipient without a mailbox: `550 5.1.1`.
    NoMailbox,
    /// Not one of ours: `550 5.7.1` relay denied.
    NotLocal,
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
pub fn from_args(args: &[String]) -> Result<Invocation, ConfigError> {
    from_args_with_default(args, Path::new(DEFAULT_CONFIG_PATH))
}

/// `--check`: every Maildir (the default one and each `mailbox`) is a
/// directory we can write, created with `tmp/`, `new/`, `cur/` (mode 0700)
/// when missing; the TLS and users files are readable. Parsing the
/// certificate and key is left to the TLS module.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    let boxes = config.mailboxes.iter().map(|(_, path)| path);
    for dir in config.maildir.iter().chain(boxes) {
        check_maildir(dir)?;
    }
    for file in [&config.tls_cert, &config.tls_key, &config.users]
        .into_iter()
        .flatten()
    {
        let mut byte = [0u8; 1];
        File::open(file)
            .and_then(|mut f| f.read(&mut byte))
            .map_err(|e| ConfigError::new(format!("{}: cannot read: {e}", file.display())))?;
    }
    Ok(())
}

impl Config {
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

    /// Routes one recipient (SPEC §4). `box_ips` are this box's addresses
    /// for address literals: the connection's local IP and the listen IPs.
    ///
    /// Aliases are followed first, then `mailbox` entries, then the default
    /// `maildir`. An entry naming a full address wins over one naming only
    /// the local part. An alias TARGET is always looked up locally, even when
    /// it names another domain: smtpbox never relays.
    pub fn route(&self, addr: &Address, box_ips: &[IpAddr]) -> Route {
        let mut key = match &addr.domain {
            // RFC 5321 4.5.1: `postmaster` (and any bare local part) is ours.
            None => Key::new(&addr.local, None),
            Some(Domain::Name(name)) => {
                let name = normalize_domain(name);
                if !self.domains.iter().any(|d| normalize_domain(d) == name) {
                    return Route::NotLocal;
                }
                Key::new(&addr.local, Some(&name))
            }
            Some(Domain::Literal(ip)) if is_box_ip(*ip, box_ips) => Key::new(&addr.local, None),
            Some(Domain::Literal(_)) => return Route::NotLocal,
        };
        // Bounded: loading rejects alias loops, but the fields are public.
        for _ in 0..self.aliases.len() {
            let Some(i) = find(&self.aliases, &key) else {
                break;
            };
            key = Key::from_name(&self.aliases[i].1);
        }
        match find(&self.mailboxes, &key) {
            Some(i) => Route::Mailbox(self.mailboxes[i].1.clone()),
            None => self
                .maildir
                .clone()
                .map_or(Route::NoMailbox, Route::Mailbox),
        }
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
            max_message_size: 10_485_760,
            max_recipients: 100,
            max_connections: 32,
            max_connections_per_ip: 8,
            timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(1800),
            max_errors: 10,
            maildir_quota: 0,
            bare_lf: BareLf::Normalize,
            user: None,
        }
    }

    /// Fills in the defaults that depend on other settings, then checks
    /// the settings that only make sense together.
    fn finish(mut self) -> Result<Config, ConfigError> {
        if self.hostname.is_empty() {
            self.hostname = system_hostname();
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
        self.validate().map_err(ConfigError::new)?;
        Ok(self)
    }

    fn validate(&self) -> Result<(), String> {
        if self.maildir.is_none() && self.mailboxes.is_empty() {
            return Err(format!(
                "no maildir configured: smtpbox needs --maildir DIR or a `maildir` line in the \
                 config file (-c FILE, default {DEFAULT_CONFIG_PATH}) to know where to store mail"
            ));
        }
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

impl Mode {
    fn parse(name: &str) -> Option<Mode> {
        match name {
            "smtp" => Some(Mode::Smtp),
            "submission" => Some(Mode::Submission),
            "tls" => Some(Mode::Tls),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Smtp => "smtp",
            Mode::Submission => "submission",
            Mode::Tls => "tls",
        })
    }
}

/// `127.0.0.1:25/smtp`, `[::1]:587/submission`: the spec syntax.
impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.mode)
    }
}

// ---- Command line (SPEC §2) ----

/// [`from_args`] with the default config path as a parameter, for tests.
/// As [`from_args`], with `default_config` in place of
/// [`DEFAULT_CONFIG_PATH`]: tests pass a path that does not exist (an empty
/// one never does) so that no host's config leaks into their results.
pub fn from_args_with_default(
    args: &[String],
    default_config: &Path,
) -> Result<Invocation, ConfigError> {
    let options = options();
    let matches = options
        .parse(args)
        .map_err(|e| ConfigError::new(format!("{e} (see --help)")))?;
    if matches.opt_present("help") {
        return Ok(Invocation::Help(options.usage("Usage: smtpbox [OPTIONS]")));
    }
    if matches.opt_present("version") {
        return Ok(Invocation::Version);
    }
    if let Some(extra) = matches.free.first() {
        return Err(ConfigError::new(format!(
            "unexpected argument `{extra}` (see --help)"
        )));
    }
    let mut config = Config::unset();
    match matches.opt_str("config") {
        Some(path) => read_file(Path::new(&path), &mut config)?,
        None if default_config.exists() => read_file(default_config, &mut config)?,
        None => {}
    }
    apply_options(&matches, &mut config)?;
    let config = config.finish()?;
    Ok(if matches.opt_present("check") {
        Invocation::Check(config)
    } else {
        let inetd = matches.opt_present("inetd");
        Invocation::Run(config, RunOptions { inetd })
    })
}

/// The options of SPEC §2, one per line as in its usage text.
#[rustfmt::skip]
fn options() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optopt("c", "config", "config file; default /etc/smtpbox/smtpbox.conf if it exists", "FILE");
    o.optmulti("l", "listen", "repeatable; ADDR:PORT[/MODE], IPv6 as [::1]:25, \
        MODE smtp (default), submission or tls", "SPEC");
    o.optopt("m", "maildir", "the default mailbox: receives mail for every accepted \
        recipient that has no mailbox of its own", "DIR");
    o.optmulti("d", "domain", "repeatable; domains delivered locally (default: the \
        hostname and localhost)", "NAME");
    o.optopt("H", "hostname", "name used in the banner, EHLO reply and Received header", "NAME");
    o.optopt("", "tls-cert", "PEM certificate chain", "FILE");
    o.optopt("", "tls-key", "PEM private key", "FILE");
    o.optflag("", "inetd", "serve one session on stdin/stdout, then exit");
    o.optflag("t", "check", "validate the configuration (files readable, maildirs \
        writable, cert and key match) and exit");
    o.optflag("h", "help", "usage");
    o.optflag("V", "version", "version");
    o
}

/// Command-line options override the file; lists are replaced, not extended.
fn apply_options(m: &getopts::Matches, config: &mut Config) -> Result<(), ConfigError> {
    let bad = |option: &'static str| move |e: String| ConfigError::new(format!("--{option}: {e}"));
    let listen = m.opt_strs("listen");
    if !listen.is_empty() {
        let parsed: Result<_, _> = listen.iter().map(|s| parse_listen(s)).collect();
        config.listen = parsed.map_err(bad("listen"))?;
    }
    let domains = m.opt_strs("domain");
    if !domains.is_empty() {
        let parsed: Result<_, _> = domains.iter().map(|s| parse_domain(s)).collect();
        config.domains = parsed.map_err(bad("domain"))?;
    }
    if let Some(value) = m.opt_str("hostname") {
        config.hostname = parse_word(&value).map_err(bad("hostname"))?;
    }
    if let Some(value) = m.opt_str("maildir") {
        config.maildir = Some(parse_path(&value).map_err(bad("maildir"))?);
    }
    if let Some(value) = m.opt_str("tls-cert") {
        config.tls_cert = Some(parse_path(&value).map_err(bad("tls-cert"))?);
    }
    if let Some(value) = m.opt_str("tls-key") {
        config.tls_key = Some(parse_path(&value).map_err(bad("tls-key"))?);
    }
    Ok(())
}

// ---- Config file (SPEC §3) ----

fn read_file(path: &Path, config: &mut Config) -> Result<(), ConfigError> {
    let text = fs::read_to_string(path)
        .map_err(|e| ConfigError::new(format!("{}: cannot read: {e}", path.display())))?;
    parse_text(&text, path, config)
}

/// Applies every `key = value` line of `text` to `config`; `origin` names
/// the file in errors (`FILE:LINE: message`).
fn parse_text(text: &str, origin: &Path, config: &mut Config) -> Result<(), ConfigError> {
    let at = |line: usize, message: String| {
        ConfigError::new(format!("{}:{line}: {message}", origin.display()))
    };
    let mut alias_lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(at(
                index + 1,
                format!("expected `key = value`, found `{line}`"),
            ));
        };
        let key = key.trim();
        set_key(config, key, value.trim()).map_err(|e| at(index + 1, e))?;
        if key == "alias" {
            alias_lines.push(index + 1);
        }
    }
    // Aliases come only from the file, so alias_lines matches config.aliases.
    if let Some((i, chain)) = alias_cycle(&config.aliases) {
        let line = alias_lines.get(i).copied().unwrap_or(0);
        return Err(at(line, format!("alias loop: {}", chain.join(" -> "))));
    }
    Ok(())
}

/// `#` starts a comment at the start of a line or after whitespace, so a
/// path like `/srv/mail#1` keeps its `#`.
fn strip_comment(line: &str) -> &str {
    let mut after_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && after_space {
            return &line[..i];
        }
        after_space = c.is_whitespace();
    }
    line
}

/// One setting. Single-valued keys given twice: the last one wins.
fn set_key(config: &mut Config, key: &str, value: &str) -> Result<(), String> {
    let bad = |e: String| format!("bad `{key}`: {e}");
    match key {
        "hostname" => config.hostname = parse_word(value).map_err(bad)?,
        "listen" => config.listen.push(parse_listen(value).map_err(bad)?),
        "domain" => config.domains.push(parse_domain(value).map_err(bad)?),
        "maildir" => config.maildir = Some(parse_path(value).map_err(bad)?),
        "mailbox" => config.mailboxes.push(parse_mailbox(value).map_err(bad)?),
        "alias" => config.aliases.push(parse_alias(value).map_err(bad)?),
        "tls_cert" => config.tls_cert = Some(parse_path(value).map_err(bad)?),
        "tls_key" => config.tls_key = Some(parse_path(value).map_err(bad)?),
        "users" => config.users = Some(parse_path(value).map_err(bad)?),
        "max_message_size" => config.max_message_size = parse_number(value, 1).map_err(bad)?,
        "max_recipients" => config.max_recipients = parse_number(value, 1).map_err(bad)?,
        "max_connections" => config.max_connections = parse_number(value, 1).map_err(bad)?,
        "max_connections_per_ip" => {
            config.max_connections_per_ip = parse_number(value, 1).map_err(bad)?
        }
        "timeout" => config.timeout = Duration::from_secs(parse_number(value, 1).map_err(bad)?),
        "session_timeout" => {
            config.session_timeout = Duration::from_secs(parse_number(value, 1).map_err(bad)?)
        }
        "max_errors" => config.max_errors = parse_number(value, 1).map_err(bad)?,
        "maildir_quota" => config.maildir_quota = parse_number(value, 0).map_err(bad)?,
        "bare_lf" => config.bare_lf = parse_bare_lf(value).map_err(bad)?,
        "user" => config.user = Some(parse_word(value).map_err(bad)?),
        _ => return Err(format!("unknown key `{key}`")),
    }
    Ok(())
}

// ---- Values (shared by the file and the command line) ----

/// `ADDR:PORT[/MODE]`, IPv6 in brackets (SPEC §2).
fn parse_listen(spec: &str) -> Result<Listen, String> {
    let (addr, mode) = match spec.rsplit_once('/') {
        Some((addr, mode)) => {
            let mode = Mode::parse(mode).ok_or_else(|| {
                format!("unknown mode `{mode}` in `{spec}` (expected smtp, submission or tls)")
            })?;
            (addr, mode)
        }
        None => (spec, Mode::Smtp),
    };
    let addr = addr.parse().map_err(|_| {
        format!("bad listen address `{spec}` (expected ADDR:PORT[/MODE], IPv6 as [::1]:25)")
    })?;
    Ok(Listen { addr, mode })
}

fn parse_domain(value: &str) -> Result<String, String> {
    let domain = normalize_domain(value);
    if domain.is_empty() || domain.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(format!("`{value}` is not a domain name"));
    }
    Ok(domain)
}

/// Lowercased, one trailing dot dropped (`Example.ORG.` is `example.org`).
fn normalize_domain(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_lowercase()
}

/// A host or user name: one word.
fn parse_word(value: &str) -> Result<String, String> {
    if value.is_empty() || value.contains(char::is_whitespace) {
        return Err(format!("expected one word, found `{value}`"));
    }
    Ok(value.to_string())
}

fn parse_path(value: &str) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err("missing path".to_string());
    }
    Ok(PathBuf::from(value))
}

/// `LOCALPART PATH` or `ADDRESS PATH`; the path is the rest of the line.
fn parse_mailbox(value: &str) -> Result<(String, PathBuf), String> {
    let Some((name, path)) = value.split_once(char::is_whitespace) else {
        return Err(format!("expected `NAME PATH`, found `{value}`"));
    };
    Ok((parse_entry_name(name)?, parse_path(path.trim())?))
}

/// `NAME TARGET`, each a local part or an address.
fn parse_alias(value: &str) -> Result<(String, String), String> {
    let mut words = value.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(name), Some(target), None) => {
            Ok((parse_entry_name(name)?, parse_recipient_name(target)?))
        }
        _ => Err(format!("expected `NAME TARGET`, found `{value}`")),
    }
}

/// A `mailbox` or `alias` NAME. Lookups drop `+detail`, so a NAME with one
/// could never match: refuse it rather than ignore it silently.
fn parse_entry_name(name: &str) -> Result<String, String> {
    let name = parse_recipient_name(name)?;
    let local = name
        .rsplit_once('@')
        .map_or(name.as_str(), |(local, _)| local);
    if strip_detail(local) != local {
        return Err(format!(
            "`{name}` can never match: `+detail` is dropped before lookup"
        ));
    }
    Ok(name)
}

/// A local part or `local@domain` as `mailbox` and `alias` name them,
/// lowercased like the lookups in [`Config::route`].
fn parse_recipient_name(name: &str) -> Result<String, String> {
    match name.rsplit_once('@') {
        None => Ok(name.to_lowercase()),
        Some((local, domain)) if !local.is_empty() && domain != "." && !domain.is_empty() => Ok(
            format!("{}@{}", local.to_lowercase(), normalize_domain(domain)),
        ),
        Some(_) => Err(format!("`{name}` is not a local part or address")),
    }
}

/// A whole number >= `min`, digits only (no sign), that fits in `T`.
fn parse_number<T: TryFrom<u64>>(value: &str, min: u64) -> Result<T, String> {
    let digits = value.bytes().all(|b| b.is_ascii_digit());
    let number = (value.parse::<u64>().ok())
        .filter(|n| digits && *n >= min)
        .and_then(|n| T::try_from(n).ok());
    let what = if min == 0 { "whole" } else { "positive whole" };
    number.ok_or_else(|| format!("expected a {what} number, found `{value}`"))
}

fn parse_bare_lf(value: &str) -> Result<BareLf, String> {
    match value {
        "normalize" => Ok(BareLf::Normalize),
        "reject" => Ok(BareLf::Reject),
        _ => Err(format!("expected normalize or reject, found `{value}`")),
    }
}

fn system_hostname() -> String {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match name.trim() {
        "" => "localhost".to_string(),
        name => name.to_string(),
    }
}

// ---- Routing (SPEC §4) ----

/// A recipient reduced to what `alias` and `mailbox` entries are matched
/// against: the lowercased local part without `+detail`, and with it
/// `local@domain` when the domain is a name.
struct Key {
    local: String,
    full: Option<String>,
}

impl Key {
    fn new(local: &str, domain: Option<&str>) -> Key {
        let local = strip_detail(&local.to_lowercase()).to_string();
        let full = domain.map(|d| format!("{local}@{d}"));
        Key { local, full }
    }

    /// An alias TARGET, as stored by [`parse_recipient_name`].
    fn from_name(name: &str) -> Key {
        match name.rsplit_once('@') {
            Some((local, domain)) => Key::new(local, Some(domain)),
            None => Key::new(name, None),
        }
    }
}

/// `root+disk` is looked up as `root`; a local part that starts with `+`
/// has no base to strip to and is kept whole.
fn strip_detail(local: &str) -> &str {
    match local.find('+') {
        Some(i) if i > 0 => &local[..i],
        _ => local,
    }
}

/// The entry for `key`: one naming the full address wins over one naming
/// the local part alone.
fn find<T>(entries: &[(String, T)], key: &Key) -> Option<usize> {
    let by_full = key
        .full
        .as_ref()
        .and_then(|full| entries.iter().position(|(name, _)| name == full));
    by_full.or_else(|| entries.iter().position(|(name, _)| *name == key.local))
}

/// Is `ip` an address of this box: loopback, or one the caller knows.
fn is_box_ip(ip: IpAddr, box_ips: &[IpAddr]) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || box_ips.iter().any(|b| b.to_canonical() == ip)
}

/// Follows each alias chain; one that comes back to its start is a loop
/// (SPEC §4). Returns the first such alias in file order and the loop.
fn alias_cycle(aliases: &[(String, String)]) -> Option<(usize, Vec<&str>)> {
    for start in 0..aliases.len() {
        let mut chain = vec![aliases[start].0.as_str()];
        let mut current = start;
        // A chain longer than the alias count has repeated an alias.
        for _ in 0..aliases.len() {
            let Some(next) = find(aliases, &Key::from_name(&aliases[current].1)) else {
                break;
            };
            chain.push(aliases[next].0.as_str());
            if next == start {
                return Some((start, chain));
            }
            current = next;
        }
    }
    None
}

// ---- Check ----

/// Creates the Maildir and its `tmp/`, `new/`, `cur/` (mode 0700, SPEC §7)
/// when missing, then creates and removes a file in `tmp/`.
fn check_maildir(dir: &Path) -> Result<(), ConfigError> {
    let fail = |path: &Path, what: &str, e: std::io::Error| {
        ConfigError::new(format!("{}: {what}: {e}", path.display()))
    };
    let subs = ["tmp", "new", "cur"].map(|s| dir.join(s));
    for sub in std::iter::once(dir.to_path_buf()).chain(subs) {
        if sub.exists() && !sub.is_dir() {
            return Err(ConfigError::new(format!(
                "{}: not a directory (a Maildir needs tmp/, new/ and cur/)",
                sub.display()
            )));
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&sub)
            .map_err(|e| fail(&sub, "cannot create directory", e))?;
    }
    let probe = dir.join(format!("tmp/.smtpbox-check.{}", std::process::id()));
    File::create_new(&probe).map_err(|e| fail(dir, "cannot write", e))?;
    fs::remove_file(&probe).map_err(|e| fail(&probe, "cannot remove", e))
}

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

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// `local@domain`, `local@[ip]` or a bare `local`.
    fn addr(text: &str) -> Address {
        let (local, domain) = match text.rsplit_once('@') {
            None => (text, None),
            Some((local, d)) => match d.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
                Some(ip) => (local, Some(Domain::Literal(ip.parse().unwrap()))),
                None => (local, Some(Domain::Name(d.to_string()))),
            },
        };
        Address {
            local: local.to_string(),
            domain,
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
        assert_eq!((c.max_message_size, c.max_recipients), (1000, 5));
        assert_eq!((c.max_connections, c.max_connections_per_ip), (6, 2));
        assert_eq!(
            (c.timeout, c.session_timeout),
            (Duration::from_secs(30), Duration::from_secs(600))
        );
        assert_eq!((c.max_errors, c.maildir_quota), (3, 0));
        assert_eq!(c.bare_lf, BareLf::Reject);
        assert_eq!(c.user.as_deref(), Some("smtpbox"));
        assert!(c.finish().is_ok());
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
            max_errors = 9999999999 => bad `max_errors`: expected a positive whole number, found `9999999999`
            maildir_quota = x => bad `maildir_quota`: expected a whole number, found `x`
            bare_lf = strip => bad `bare_lf`: expected normalize or reject, found `strip`
            hostname = a b => bad `hostname`: expected one word, found `a b`
            user = => bad `user`: expected one word, found ``
            domain = a@b => bad `domain`: `a@b` is not a domain name
            mailbox = alice => bad `mailbox`: expected `NAME PATH`, found `alice`
            mailbox = @x /m => bad `mailbox`: `@x` is not a local part or address
            alias = a b c => bad `alias`: expected `NAME TARGET`, found `a b c`
            alias = a => bad `alias`: expected `NAME TARGET`, found `a`
            alias = a+b c => bad `alias`: `a+b` can never match: `+detail` is dropped before lookup
            mailbox = a+b@x /m => bad `mailbox`: `a+b@x` can never match: `+detail` is dropped before lookup
            listen = 1.2.3.4:25/smtps => bad `listen`: unknown mode `smtps` in `1.2.3.4:25/smtps` (expected smtp, submission or tls)
            listen = ::1:25 => bad `listen`: bad listen address `::1:25` (expected ADDR:PORT[/MODE], IPv6 as [::1]:25)";
        for case in cases.lines() {
            let (text, want) = case.trim().split_once(" => ").unwrap();
            assert_eq!(parse_err(text), format!("t.conf:1: {want}"));
        }
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
        assert_eq!((c.max_message_size, c.max_recipients), (10_485_760, 100));
        assert_eq!((c.max_connections, c.max_connections_per_ip), (32, 8));
        assert_eq!(c.timeout, Duration::from_secs(300));
        assert_eq!(c.session_timeout, Duration::from_secs(1800));
        assert_eq!((c.max_errors, c.maildir_quota), (10, 0));
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
        assert_eq!((c.hostname.as_str(), c.max_errors), ("cli.example", 3));
        assert_eq!(
            (c.tls_cert, c.tls_key),
            (Some("/c".into()), Some("/k".into()))
        );
        // The default path is read when it exists and -c is absent.
        match from_args_with_default(&[], &file) {
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
    fn routing() {
        let c = load(
            "domain = example.org\ndomain = box.lan\nmaildir = /m/all\n\
             mailbox = alice /m/alice\nmailbox = alice@box.lan /m/alice-lan\n\
             mailbox = ops@example.org /m/ops\nmailbox = other /m/other\n\
             alias = root admin\nalias = admin alice\nalias = abuse@example.org ops@example.org\n\
             alias = bounce other@elsewhere.example\n",
        );
        let mine: IpAddr = "192.0.2.7".parse().unwrap();
        let route = |a: &str| match c.route(&addr(a), &[mine]) {
            Route::Mailbox(path) => path.display().to_string(),
            other => format!("{other:?}"),
        };
        let cases = [
            // Domains: case-insensitive, one trailing dot ignored.
            ("alice@EXAMPLE.org", "/m/alice"),
            ("alice@example.org.", "/m/alice"),
            ("alice@example.org..", "NotLocal"),
            ("alice@example.com", "NotLocal"),
            ("alice@localhost", "NotLocal"),
            // Local part case-insensitive; +detail stripped; "+x" kept whole.
            ("ALICE+disk@example.org", "/m/alice"),
            ("+alice", "/m/all"),
            // Full-address entries win over local-part entries.
            ("Alice@box.lan", "/m/alice-lan"),
            ("ops@example.org", "/m/ops"),
            ("ops@box.lan", "/m/all"),
            // Aliases, chained, by local part and by address.
            ("root+cron", "/m/alice"),
            ("abuse@example.org", "/m/ops"),
            ("abuse@box.lan", "/m/all"),
            // A target in another domain is still looked up locally.
            ("bounce", "/m/other"),
            // Bare local parts and postmaster go to the default maildir.
            ("postmaster", "/m/all"),
            ("nobody@example.org", "/m/all"),
            // Address literals of the box: loopback and the given IPs.
            ("alice@[127.0.0.1]", "/m/alice"),
            ("x@[::1]", "/m/all"),
            ("x@[192.0.2.7]", "/m/all"),
            ("x@[::ffff:192.0.2.7]", "/m/all"),
            ("x@[198.51.100.1]", "NotLocal"),
        ];
        for (rcpt, want) in cases {
            assert_eq!(route(rcpt), want, "{rcpt}");
        }
    }

    #[test]
    fn routing_without_default_maildir() {
        let mut c =
            load("domain = example.org\nmailbox = alice /m/alice\nalias = postmaster alice\n");
        assert_eq!(c.route(&addr("bob@example.org"), &[]), Route::NoMailbox);
        assert_eq!(
            c.route(&addr("Postmaster"), &[]),
            Route::Mailbox("/m/alice".into())
        );
        c.aliases.clear();
        assert_eq!(c.route(&addr("postmaster"), &[]), Route::NoMailbox);
        // A loop slipped in through the public fields cannot spin forever.
        c.aliases = vec![("a".into(), "b".into()), ("b".into(), "a".into())];
        assert_eq!(c.route(&addr("a"), &[]), Route::NoMailbox);
    }

    #[test]
    fn check_creates_and_probes_maildirs() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("check");
        let mut c = parse("").unwrap();
        c.maildir = Some(dir.join("all"));
        c.mailboxes = vec![("a".into(), dir.join("deep/alice"))];
        check(&c).unwrap();
        for sub in ["all/tmp", "all/new", "all/cur", "deep/alice/cur"] {
            let meta = fs::metadata(dir.join(sub)).unwrap();
            assert!(
                meta.is_dir() && meta.permissions().mode() & 0o777 == 0o700,
                "{sub}"
            );
        }
        assert_eq!(fs::read_dir(dir.join("all/tmp")).unwrap().count(), 0);
        check(&c).unwrap(); // idempotent

        let file = dir.join("file");
        fs::write(&file, "x").unwrap();
        c.mailboxes = vec![("a".into(), file.clone())];
        let e = check(&c).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: not a directory", file.display())),
            "{e}"
        );

        c.mailboxes.clear();
        c.users = Some(file);
        check(&c).unwrap();
        let missing = dir.join("missing.pem");
        c.tls_cert = Some(missing.clone());
        let e = check(&c).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: cannot read", missing.display())),
            "{e}"
        );
        c.tls_cert = Some(dir.join("all"));
        assert!(check(&c).unwrap_err().to_string().contains("cannot read"));
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../etc/smtpbox.conf");
        assert!(parse(text).unwrap().maildir.is_some());
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
                    timeout session_timeout max_errors maildir_quota bare_lf user";
        for key in keys.split_whitespace() {
            assert!(
                all.lines().any(|l| l.starts_with(&format!("{key} = "))),
                "{key}"
            );
        }
    }
}
