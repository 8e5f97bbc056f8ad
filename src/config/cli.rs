//! The command line (getopts, SPEC §2): options, their merge over the
//! file, and arguments that are OS strings, not UTF-8.

use super::*;

/// As [`from_args`], with `default_config` in place of
/// [`DEFAULT_CONFIG_PATH`]: tests pass a path that does not exist (an empty
/// one never does) so that no host's config leaks into their results.
pub fn from_args_with_default<S: AsRef<OsStr>>(
    args: &[S],
    default_config: &Path,
) -> Result<Invocation, ConfigError> {
    let options = options();
    // getopts takes UTF-8 only: non-UTF-8 bytes travel escaped through it.
    let args: Vec<String> = args.iter().map(|a| escape_arg(a.as_ref())).collect();
    let matches = options.parse(&args).map_err(|e| {
        let e = unescape_lossy(&e.to_string());
        ConfigError::new(format!("{} (see --help)", quote(&e)))
    })?;
    if matches.opt_present("help") {
        return Ok(Invocation::Help(options.usage("Usage: smtpbox [OPTIONS]")));
    }
    if matches.opt_present("version") {
        return Ok(Invocation::Version);
    }
    if let Some(extra) = matches.free.first() {
        return Err(ConfigError::new(format!(
            "unexpected argument `{}` (see --help)",
            quote(&unescape_lossy(extra))
        )));
    }
    let mut config = Config::unset();
    match matches.opt_str("config") {
        Some(path) => read_file(Path::new(&unescape(&path)), &mut config)?,
        None if default_config.exists() => read_file(default_config, &mut config)?,
        None => {}
    }
    apply_options(&matches, &mut config)?;
    let config = config.finish()?;
    Ok(if matches.opt_present("check") {
        Invocation::Check(config)
    } else if matches.opt_present("notifier") {
        Invocation::Notifier(config)
    } else {
        let inetd = matches.opt_present("inetd");
        Invocation::Run(config, RunOptions { inetd })
    })
}

/// The options of SPEC §2, one per line as in its usage text.
#[rustfmt::skip]
pub(super) fn options() -> getopts::Options {
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
    o.optflag("", "notifier", "run the notify programs for the servers that connect \
        to the socket systemd passes (smtpbox-notify.service)");
    o.optflag("t", "check", "validate the configuration (files readable, maildirs \
        writable or creatable, values in range, user known, cert and key match), \
        writing nothing, and exit");
    o.optflag("h", "help", "usage");
    o.optflag("V", "version", "version");
    o
}

/// Command-line options override the file; lists are replaced, not extended.
pub(super) fn apply_options(m: &getopts::Matches, config: &mut Config) -> Result<(), ConfigError> {
    let bad = |option: &'static str| move |e: String| ConfigError::new(format!("--{option}: {e}"));
    let listen = m.opt_strs("listen");
    if !listen.is_empty() {
        let parsed: Result<_, _> = listen
            .iter()
            .map(|s| text_arg(s).and_then(|s| parse_listen(&s)))
            .collect();
        config.listen = parsed.map_err(bad("listen"))?;
    }
    let domains = m.opt_strs("domain");
    if !domains.is_empty() {
        let parsed: Result<_, _> = domains
            .iter()
            .map(|s| text_arg(s).and_then(|s| parse_domain(&s)))
            .collect();
        config.domains = parsed.map_err(bad("domain"))?;
    }
    if let Some(value) = m.opt_str("hostname") {
        config.hostname = text_arg(&value)
            .and_then(|v| parse_hostname(&v))
            .map_err(bad("hostname"))?;
    }
    // Paths on the command line may be relative and need not be UTF-8.
    let path = |value: String| match unescape(&value) {
        p if p.is_empty() => Err("missing path".to_string()),
        p => Ok(PathBuf::from(p)),
    };
    if let Some(value) = m.opt_str("maildir") {
        config.maildir = Some(path(value).map_err(bad("maildir"))?);
    }
    if let Some(value) = m.opt_str("tls-cert") {
        config.tls_cert = Some(path(value).map_err(bad("tls-cert"))?);
    }
    if let Some(value) = m.opt_str("tls-key") {
        config.tls_key = Some(path(value).map_err(bad("tls-key"))?);
    }
    Ok(())
}

/// Non-UTF-8 bytes of an argument pass through getopts as the characters
/// U+10FF80..U+10FFFF (private use); a real character of the block
/// U+10FF00..U+10FFFF is escaped byte by byte too, so [`unescape`] gives
/// back exactly the bytes of the argument.
pub(super) const ESCAPE_BASE: u32 = 0x10_FF00;

pub(super) fn escape_arg(arg: &OsStr) -> String {
    if let Some(text) = arg.to_str() {
        if !text.chars().any(is_escape) {
            return text.to_string();
        }
    }
    let mut out = String::new();
    let escape = |out: &mut String, bytes: &[u8]| {
        out.extend(
            bytes
                .iter()
                .filter_map(|&b| char::from_u32(ESCAPE_BASE + u32::from(b))),
        )
    };
    for chunk in arg.as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_escape(c) {
                escape(&mut out, c.encode_utf8(&mut [0; 4]).as_bytes());
            } else {
                out.push(c);
            }
        }
        escape(&mut out, chunk.invalid());
    }
    out
}

pub(super) fn is_escape(c: char) -> bool {
    (ESCAPE_BASE..=ESCAPE_BASE + 0xFF).contains(&u32::from(c))
}

/// The bytes of an argument that went through [`escape_arg`].
pub(super) fn unescape(text: &str) -> OsString {
    let mut bytes = Vec::with_capacity(text.len());
    for c in text.chars() {
        match u32::from(c).checked_sub(ESCAPE_BASE) {
            Some(b) if b <= 0xFF => bytes.push(b as u8),
            _ => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    OsString::from_vec(bytes)
}

pub(super) fn unescape_lossy(text: &str) -> String {
    unescape(text).to_string_lossy().into_owned()
}

/// An argument that must be text (an address, a name).
pub(super) fn text_arg(value: &str) -> Result<String, String> {
    unescape(value)
        .into_string()
        .map_err(|raw| format!("not UTF-8: `{}`", quote(&raw.to_string_lossy())))
}
