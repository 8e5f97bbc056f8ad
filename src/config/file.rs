//! The config file (SPEC §3): `key = value` lines, comments, and the
//! key each line sets; errors name the file and the line.

use super::*;

/// Any file type may be named (`-c <(…)` is a pipe), but at most
/// [`MAX_CONFIG_FILE`] bytes are read.
pub(super) fn read_file(path: &Path, config: &mut Config) -> Result<(), ConfigError> {
    let bytes = read_bounded(path, MAX_CONFIG_FILE, false).map_err(ConfigError::new)?;
    parse_lines(&bytes, path, config)
}

/// Applies every `key = value` line of `text` to `config`; `origin` names
/// the file in errors (`FILE:LINE: message`).
pub(super) fn parse_text(
    text: &str,
    origin: &Path,
    config: &mut Config,
) -> Result<(), ConfigError> {
    parse_lines(text.as_bytes(), origin, config)
}

/// [`parse_text`] for bytes: a line that is not UTF-8 is an error naming
/// its file and line.
pub(super) fn parse_lines(
    text: &[u8],
    origin: &Path,
    config: &mut Config,
) -> Result<(), ConfigError> {
    let at = |line: usize, message: String| {
        ConfigError::new(format!("{}:{line}: {message}", origin.display()))
    };
    let mut alias_lines = Vec::new();
    let lines = text
        .strip_suffix(b"\n")
        .unwrap_or(text)
        .split(|&b| b == b'\n');
    for (index, raw) in lines.enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(raw) = std::str::from_utf8(raw) else {
            return Err(at(index + 1, "not valid UTF-8".to_string()));
        };
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(at(
                index + 1,
                format!("expected `key = value`, found `{}`", quote(line)),
            ));
        };
        let key = key.trim();
        set_key(config, key, value.trim()).map_err(|e| at(index + 1, e))?;
        let here = || format!("{}:{}", origin.display(), index + 1);
        match key {
            "alias" => alias_lines.push(index + 1),
            "user" => config.user_origin = Some(here()),
            "maildir_keep" => config.budget_origin = Some(here()),
            "notify" => config.notify.origin = Some(here()),
            "mailbox" => {
                if let Some(keep) = config.keeps.last_mut().filter(|k| k.origin.is_empty()) {
                    keep.origin = here();
                }
            }
            _ => {}
        }
    }
    // Aliases come only from the file, so alias_lines matches config.aliases.
    if let Some((i, chain)) = alias_cycle(&config.aliases) {
        let line = alias_lines.get(i).copied().unwrap_or(0);
        let chain: Vec<String> = chain.into_iter().map(quote).collect();
        return Err(at(line, format!("alias loop: {}", chain.join(" -> "))));
    }
    Ok(())
}

/// `#` starts a comment at the start of a line or after whitespace, so a
/// path like `/srv/mail#1` keeps its `#`.
pub(super) fn strip_comment(line: &str) -> &str {
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
pub(super) fn set_key(config: &mut Config, key: &str, value: &str) -> Result<(), String> {
    let bad = |e: String| format!("bad `{key}`: {e}");
    let number = |min, max| parse_number(value, min, max).map_err(bad);
    let seconds = |max| number(1, max).map(Duration::from_secs);
    match key {
        "hostname" => config.hostname = parse_hostname(value).map_err(bad)?,
        "listen" => config.listen.push(parse_listen(value).map_err(bad)?),
        "domain" => config.domains.push(parse_domain(value).map_err(bad)?),
        "maildir" => config.maildir = Some(parse_path(value).map_err(bad)?),
        "mailbox" => {
            let (name, path, keep) = parse_mailbox(value).map_err(bad)?;
            if let Some((keep, keep_days)) = keep {
                config.keeps.push(Keep {
                    path: path.clone(),
                    keep,
                    keep_days,
                    origin: String::new(),
                });
            }
            config.mailboxes.push((name, path));
        }
        "alias" => config.aliases.push(parse_alias(value).map_err(bad)?),
        "tls_cert" => config.tls_cert = Some(parse_path(value).map_err(bad)?),
        "tls_key" => config.tls_key = Some(parse_path(value).map_err(bad)?),
        "users" => config.users = Some(parse_path(value).map_err(bad)?),
        "max_message_size" => config.limits.max_message_size = number(1, MAX_SIZE)?,
        "max_recipients" => config.limits.max_recipients = count(number(1, MAX_RECIPIENTS)?),
        "max_connections" => config.max_connections = count(number(1, MAX_CONNECTIONS)?),
        "max_connections_per_ip" => {
            config.max_connections_per_ip = count(number(1, MAX_CONNECTIONS)?)
        }
        "timeout" => config.limits.timeout = seconds(MAX_TIMEOUT)?,
        "session_timeout" => config.limits.session_timeout = seconds(MAX_SESSION_TIMEOUT)?,
        "max_errors" => config.limits.max_errors = number(1, MAX_ERRORS)? as u32,
        "maildir_quota" => config.budget.quota = number(0, MAX_SIZE)?,
        "maildir_keep" => config.budget.keep = number(0, MAX_SIZE)?,
        "maildir_keep_days" => config.budget.keep_days = number(0, MAX_KEEP_DAYS)?,
        "notify" => config.notify.program = Some(notify::parse_program(value).map_err(bad)?),
        "notify_timeout" => config.notify.timeout = seconds(MAX_TIMEOUT)?,
        "notify_jobs" => config.notify.jobs = count(number(1, notify::MAX_JOBS)?),
        "notify_rate" => config.notify.rate = notify::Rate::parse(value).map_err(bad)?,
        "detail_folders" => config.detail_folders = parse_yes_no(value).map_err(bad)?,
        "bare_lf" => config.bare_lf = parse_bare_lf(value).map_err(bad)?,
        "user" => config.user = Some(parse_user(value).map_err(bad)?),
        "local_socket" => config.local_socket = Some(parse_socket_path(value).map_err(bad)?),
        _ => return Err(format!("unknown key `{}`", quote(key))),
    }
    Ok(())
}

/// A bounded count as a `usize` (every bound fits in 32 bits).
pub(super) fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
