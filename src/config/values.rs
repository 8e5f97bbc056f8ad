//! Values, shared by the file and the command line: each setting's
//! parser, turning text into a typed value once, or an error that quotes it.

use super::*;

/// `ADDR:PORT[/MODE]`, IPv6 in brackets (SPEC §2).
pub(super) fn parse_listen(spec: &str) -> Result<Listen, String> {
    let (addr, mode) = match spec.rsplit_once('/') {
        Some((addr, mode)) => {
            let mode = Mode::parse(mode).ok_or_else(|| {
                format!(
                    "unknown mode `{}` in `{}` (expected smtp, submission or tls)",
                    quote(mode),
                    quote(spec)
                )
            })?;
            (addr, mode)
        }
        None => (spec, Mode::Smtp),
    };
    let addr = addr.parse().map_err(|_| {
        format!(
            "bad listen address `{}` (expected ADDR:PORT[/MODE], IPv6 as [::1]:25)",
            quote(spec)
        )
    })?;
    Ok(Listen { addr, mode })
}

pub(super) fn parse_domain(value: &str) -> Result<String, String> {
    let domain = normalize_domain(value);
    let odd = |c: char| c.is_whitespace() || c.is_control() || c == '@';
    if domain.is_empty() || domain.len() > MAX_HOSTNAME || domain.contains(odd) {
        return Err(format!("`{}` is not a domain name", quote(value)));
    }
    Ok(domain)
}

/// A host or user name: one word.
pub(super) fn parse_word(value: &str) -> Result<String, String> {
    if value.is_empty() || value.contains(char::is_whitespace) {
        return Err(format!("expected one word, found `{}`", quote(value)));
    }
    Ok(value.to_string())
}

/// A path in the config file: absolute (SPEC §3), so that what it names
/// does not depend on the directory smtpbox was started in.
pub(super) fn parse_path(value: &str) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err("missing path".to_string());
    }
    if !value.starts_with('/') {
        return Err(format!("`{}` is not an absolute path", quote(value)));
    }
    Ok(PathBuf::from(value))
}

/// An account name as passwd(5) can hold one: one word, no `:` or
/// control characters, at most 256 octets.
pub(super) fn parse_user(value: &str) -> Result<String, String> {
    let name = parse_word(value)?;
    if name.len() > 256 || name.contains(|c: char| c == ':' || c.is_control()) {
        return Err(format!("`{}` is not a user name", quote(&name)));
    }
    Ok(name)
}

pub(super) fn parse_hostname(value: &str) -> Result<String, String> {
    check_hostname(value)?;
    Ok(value.to_string())
}

/// SPEC §3: the hostname is a domain name (labels of letters, digits, `-`
/// and `_`, one trailing dot allowed) or an address literal (`[192.0.2.1]`,
/// `[IPv6:2001:db8::1]`), at most 253 octets. It goes into the banner and
/// every Received header.
pub(super) fn check_hostname(name: &str) -> Result<(), String> {
    let bad = |why: &str| format!("`{}` is {why}", quote(name));
    // The limit is on the name without its optional trailing dot.
    if name.strip_suffix('.').unwrap_or(name).len() > MAX_HOSTNAME {
        return Err(bad("longer than 253 octets"));
    }
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        let ip = match inner.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
                inner[5..].parse::<Ipv6Addr>().is_ok()
            }
            _ => inner.parse::<Ipv4Addr>().is_ok(),
        };
        return if ip {
            Ok(())
        } else {
            Err(bad("not an address literal"))
        };
    }
    let labels = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if labels.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(bad("not a domain name or an address literal"))
    }
}

/// At most [`QUOTED`] bytes of `text`, control characters escaped, for an
/// error message: a bad value may be huge, or hold bytes a terminal acts on.
pub(super) fn quote(text: &str) -> String {
    let mut end = text.len().min(QUOTED);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::new();
    for c in text[..end].chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    if end < text.len() {
        out.push('…');
    }
    out
}

/// A Unix socket's path: absolute, and short enough for `sun_path`
/// (108 bytes with its NUL on Linux).
pub(super) fn parse_socket_path(value: &str) -> Result<PathBuf, String> {
    let path = parse_path(value)?;
    if !path.is_absolute() || path.parent().is_none() {
        return Err(format!("`{value}` is not an absolute file path"));
    }
    if value.len() > 107 {
        return Err(format!(
            "`{value}` is longer than a socket path may be (107 bytes)"
        ));
    }
    Ok(path)
}

/// A `mailbox` line's own budget: `keep=` and `keep_days=`, each optional.
pub(super) type MailboxKeep = (Option<u64>, Option<u64>);

/// `NAME [keep=BYTES] [keep_days=DAYS] PATH`, NAME a local part or an
/// address; the path (absolute) is the rest of the line.
pub(super) fn parse_mailbox(value: &str) -> Result<(String, PathBuf, Option<MailboxKeep>), String> {
    let Some((name, mut rest)) = value.split_once(char::is_whitespace) else {
        return Err(format!("expected `NAME PATH`, found `{}`", quote(value)));
    };
    let (mut keep, mut keep_days) = (None, None);
    loop {
        rest = rest.trim_start();
        let word = rest.split(char::is_whitespace).next().unwrap_or("");
        let (slot, max) = if let Some(v) = word.strip_prefix("keep=") {
            (&mut keep, (v, MAX_SIZE))
        } else if let Some(v) = word.strip_prefix("keep_days=") {
            (&mut keep_days, (v, MAX_KEEP_DAYS))
        } else {
            break;
        };
        let (v, max) = max;
        let n = parse_number(v, 0, max).map_err(|e| format!("`{}`: {e}", quote(word)))?;
        *slot = Some(n);
        rest = &rest[word.len()..];
    }
    let own = (keep.is_some() || keep_days.is_some()).then_some((keep, keep_days));
    Ok((parse_entry_name(name)?, parse_path(rest.trim())?, own))
}

/// `yes` or `no`.
pub(super) fn parse_yes_no(value: &str) -> Result<bool, String> {
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!("expected yes or no, found `{}`", quote(value))),
    }
}

/// `NAME TARGET`, each a local part or an address.
pub(super) fn parse_alias(value: &str) -> Result<(String, String), String> {
    let mut words = value.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(name), Some(target), None) => {
            Ok((parse_entry_name(name)?, parse_recipient_name(target)?))
        }
        _ => Err(format!("expected `NAME TARGET`, found `{}`", quote(value))),
    }
}

/// A `mailbox` or `alias` NAME. Lookups drop `+detail`, so a NAME with one
/// could never match: refuse it rather than ignore it silently.
pub(super) fn parse_entry_name(name: &str) -> Result<String, String> {
    let name = parse_recipient_name(name)?;
    let local = name
        .rsplit_once('@')
        .map_or(name.as_str(), |(local, _)| local);
    if strip_detail(local) != local {
        return Err(format!(
            "`{}` can never match: `+detail` is dropped before lookup",
            quote(&name)
        ));
    }
    Ok(name)
}

/// A local part or `local@domain` as `mailbox` and `alias` name them,
/// lowercased like the lookups in [`crate::routing::route`].
pub(super) fn parse_recipient_name(name: &str) -> Result<String, String> {
    match name.rsplit_once('@') {
        None => Ok(name.to_lowercase()),
        Some((local, domain)) if !local.is_empty() && domain != "." && !domain.is_empty() => Ok(
            format!("{}@{}", local.to_lowercase(), normalize_domain(domain)),
        ),
        Some(_) => Err(format!("`{}` is not a local part or address", quote(name))),
    }
}

/// A whole number in `min..=max`, digits only (no sign).
pub(super) fn parse_number(value: &str, min: u64, max: u64) -> Result<u64, String> {
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    let what = if min == 0 { "whole" } else { "positive whole" };
    match value.parse::<u64>() {
        Ok(n) if digits && n > max => Err(format!("{n} is over the limit of {max}")),
        Ok(n) if digits && n >= min => Ok(n),
        // All digits, yet no u64: far over the limit.
        Err(_) if digits => Err(format!("`{}` is over the limit of {max}", quote(value))),
        _ => Err(format!(
            "expected a {what} number, found `{}`",
            quote(value)
        )),
    }
}

pub(super) fn parse_bare_lf(value: &str) -> Result<BareLf, String> {
    match value {
        "normalize" => Ok(BareLf::Normalize),
        "reject" => Ok(BareLf::Reject),
        _ => Err(format!(
            "expected normalize or reject, found `{}`",
            quote(value)
        )),
    }
}
