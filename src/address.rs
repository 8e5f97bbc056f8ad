//! Mail addresses: the RFC 5321 §4.1.2 mailbox grammar (with RFC 6531
//! UTF-8 and the §4.5.3.1 length limits) that SMTP's MAIL and RCPT,
//! routing, sendmail's operands and headers, and alias names all use, and
//! the form an address is written back in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A mailbox address `local@domain`, or a bare local part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// The local part with any quoting removed (`"a b"@x` gives `a b`).
    pub local: String,
    /// The domain, absent for a bare local part (`<postmaster>`, `<root>`).
    pub domain: Option<Domain>,
}

/// The domain of an [`Address`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A host name, as sent (compare case-insensitively).
    Name(String),
    /// An address literal: `[127.0.0.1]` or `[IPv6:::1]`, parsed.
    Literal(IpAddr),
}

/// Why [`parse_address`] refused a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// Not a mailbox by the RFC 5321 §4.1.2 grammar (with RFC 6531 UTF-8),
    /// or empty.
    Invalid,
    /// Over an RFC 5321 §4.5.3.1 length limit.
    TooLong,
}

/// Parses a mailbox as it stands between the angle brackets of a MAIL or
/// RCPT path (`local@domain`, `"a b"@domain`, `root@[127.0.0.1]`, a bare
/// local part), with the grammar and length limits of those commands. The
/// empty text is [`AddressError::Invalid`]: what `<>` means is the caller's
/// business. For addresses that do not arrive in a command line (sendmail's
/// operands and header fields, alias names).
pub fn parse_address(text: &str) -> Result<Address, AddressError> {
    // RFC 5321 §4.5.3.1.3: a path is at most 256 octets, brackets included.
    if text.len() > 254 {
        return Err(AddressError::TooLong);
    }
    parse_mailbox(text.as_bytes()).map_err(|e| match e {
        PathError::TooLong => AddressError::TooLong,
        PathError::Syntax | PathError::Invalid => AddressError::Invalid,
    })
}

impl Address {
    /// True when neither the local part nor the domain holds a non-ASCII
    /// character, i.e. the address needs no SMTPUTF8 (RFC 6531 §3.4).
    pub fn is_ascii(&self) -> bool {
        let domain_ascii = match &self.domain {
            Some(Domain::Name(name)) => name.is_ascii(),
            Some(Domain::Literal(_)) | None => true,
        };
        self.local.is_ascii() && domain_ascii
    }
}

impl Address {
    /// The [`Display`](std::fmt::Display) form in one allocation (the
    /// default `to_string` grows its buffer piece by piece; MAIL and RCPT
    /// make one per command).
    pub fn to_wire(&self) -> String {
        let domain = match &self.domain {
            None => 0,
            Some(Domain::Name(name)) => 1 + name.len(),
            Some(Domain::Literal(_)) => 48, // "@[IPv6:" + 39 + "]"
        };
        // Room for quoting a short local part; a long quoted one grows.
        let mut out = String::with_capacity(self.local.len() + 8 + domain);
        let _ = std::fmt::Write::write_fmt(&mut out, format_args!("{self}"));
        out
    }
}

/// The address as it goes on the wire and into headers and logs: the
/// local part quoted again when it is not a dot-string (RFC 5321 §4.1.2).
impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.local.split('.').all(is_atom) {
            f.write_str(&self.local)?;
        } else {
            f.write_str("\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\"")?;
        }
        match &self.domain {
            None => Ok(()),
            Some(Domain::Name(name)) => write!(f, "@{name}"),
            Some(Domain::Literal(IpAddr::V4(ip))) => write!(f, "@[{ip}]"),
            Some(Domain::Literal(IpAddr::V6(ip))) => write!(f, "@[IPv6:{ip}]"),
        }
    }
}

/// Why a path was refused.
pub(crate) enum PathError {
    /// No `<...>` around the path, or junk after it: a command syntax error.
    Syntax,
    /// The path breaks the RFC 5321 §4.1.2 grammar.
    Invalid,
    /// Over an RFC 5321 §4.5.3.1 length limit.
    TooLong,
}

/// Parses the inside of `<...>`: `[route:]local@domain` or a bare local part
/// (RFC 5321 §4.1.2, with RFC 6531 UTF-8).
pub(crate) fn parse_mailbox(path: &[u8]) -> Result<Address, PathError> {
    let path = std::str::from_utf8(path).map_err(|_| PathError::Invalid)?;
    let mailbox = skip_source_route(path)?;
    let (local, local_len) = if mailbox.starts_with('"') {
        quoted_local(mailbox)?
    } else {
        let len = mailbox.find('@').unwrap_or(mailbox.len());
        let atoms = &mailbox[..len];
        if !atoms.split('.').all(is_atom) {
            return Err(PathError::Invalid);
        }
        (atoms.to_string(), len)
    };
    // RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
    if local_len > 64 {
        return Err(PathError::TooLong);
    }
    if local.is_empty() {
        return Err(PathError::Invalid);
    }
    let domain = match mailbox[local_len..].strip_prefix('@') {
        Some(domain) => Some(parse_domain(domain)?),
        None if mailbox.len() == local_len => None,
        None => return Err(PathError::Invalid),
    };
    Ok(Address { local, domain })
}

/// RFC 5321 §4.1.2: `@one,@two:` before the mailbox is accepted and ignored.
fn skip_source_route(mut s: &str) -> Result<&str, PathError> {
    if !s.starts_with('@') {
        return Ok(s);
    }
    while let Some(rest) = s.strip_prefix('@') {
        // A route domain ends at ',' or ':', but an IPv6 literal holds ':'.
        let end = match rest.strip_prefix('[') {
            Some(lit) => lit.find(']').map(|i| i + 2).ok_or(PathError::Invalid)?,
            None => rest.find([',', ':']).ok_or(PathError::Invalid)?,
        };
        parse_domain(&rest[..end])?;
        match rest.as_bytes().get(end) {
            Some(b',') => s = &rest[end + 1..],
            Some(b':') => return Ok(&rest[end + 1..]),
            _ => return Err(PathError::Invalid),
        }
    }
    Err(PathError::Invalid)
}

/// A quoted local part: returns the unquoted text and the quoted length.
fn quoted_local(s: &str) -> Result<(String, usize), PathError> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            // quoted-pairSMTP = "\" %d32-126
            '\\' => match chars.next() {
                Some((_, q)) if (' '..='~').contains(&q) => out.push(q),
                _ => return Err(PathError::Invalid),
            },
            // qtextSMTP = %d32-33 / %d35-91 / %d93-126, or UTF-8 (RFC 6531).
            c if (' '..='~').contains(&c) || (!c.is_ascii() && !c.is_control()) => out.push(c),
            _ => return Err(PathError::Invalid),
        }
    }
    Err(PathError::Invalid)
}

/// RFC 5322 §3.2.3 atext, plus UTF-8 (RFC 6531 §3.3); never empty.
pub(crate) fn is_atom(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || "!#$%&'*+-/=?^_`{|}~".contains(c)
                || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
        })
}

/// A domain name or an address literal (RFC 5321 §4.1.2, §4.1.3).
fn parse_domain(s: &str) -> Result<Domain, PathError> {
    // RFC 5321 §4.5.3.1.2: a domain is at most 255 octets.
    if s.len() > 255 {
        return Err(PathError::TooLong);
    }
    if let Some(literal) = s.strip_prefix('[') {
        let literal = literal.strip_suffix(']').ok_or(PathError::Invalid)?;
        let ip = match literal.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
                literal[5..].parse::<Ipv6Addr>().map(IpAddr::V6)
            }
            _ => literal.parse::<Ipv4Addr>().map(IpAddr::V4),
        };
        return ip.map(Domain::Literal).map_err(|_| PathError::Invalid);
    }
    // sub-domain = Let-dig [Ldh-str], with U-labels allowed (RFC 6531 §3.3).
    let label_ok = |label: &str| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || c == '-'
                    || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
            })
    };
    if !s.split('.').all(label_ok) {
        return Err(PathError::Invalid);
    }
    Ok(Domain::Name(s.to_string()))
}
