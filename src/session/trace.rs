//! The trace headers a stored message starts with (SPEC §6): `Return-Path:`
//! and a `Received:` header, folded so that no line passes 998 octets.

use std::borrow::Cow;
use std::fmt::Write;

use super::Session;

/// A HELO name goes into a header: keep it printable and on one line.
/// RFC 5322 2.1.1: a header line is at most 998 octets, CRLF excluded.
pub(super) const MAX_HEADER_LINE: usize = 998;

/// Where a header that must be folded is folded (RFC 5322 2.1.1's SHOULD).
pub(super) const FOLD_AT: usize = 78;

/// The HELO argument in the trace: as long as a domain may be (RFC 5321
/// 4.5.3.1.2). Longer is cut here; the HELO itself is answered as sent.
const MAX_TRACE_HELO: usize = 255;

/// At most `max` octets of `text`, cut at a character boundary.
pub(super) fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// `header` (one unfolded line, no CRLF) as it is written: unchanged when
/// it fits in 998 octets, otherwise folded (RFC 5322 2.2.3) before words so
/// that lines stay near 78 octets; continuation lines start with the space
/// they were folded at, so unfolding gives back `header` exactly. Every
/// word of a Received header is bounded (HELO cut, hostname at most 253
/// octets, a path at most 256), so every line ends within the limit.
pub(super) fn fold(header: &str) -> Cow<'_, str> {
    if header.len() <= MAX_HEADER_LINE {
        return header.into();
    }
    let mut out = String::with_capacity(header.len() + header.len() / FOLD_AT * 2);
    let mut line = 0;
    for (i, word) in header.split(' ').enumerate() {
        if i > 0 {
            // Never a line of white space alone: fold only before a word.
            if line > 0 && !word.is_empty() && line + 1 + word.len() > FOLD_AT {
                out.push_str("\r\n");
                line = 0;
            }
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out.into()
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

impl Session {
    /// The `Return-Path:` and `Received:` headers that start the stored
    /// message (SPEC §6, RFC 5321 §4.4, RFC 3848 protocol names).
    pub fn trace_headers(&self, id: &str, date: &str) -> String {
        let Some(tx) = &self.tx else {
            return String::new();
        };
        let helo = self
            .greeting
            .as_ref()
            .map_or("unknown", |g| g.name.as_str());
        // One String for the Received line, written in place.
        let mut received = String::with_capacity(256);
        let _ = write!(
            received,
            "Received: from {} ({}) by {} (smtpbox) with {}",
            cut(sanitize(helo), MAX_TRACE_HELO),
            self.peer.trace_comment(),
            self.config.hostname,
            self.protocol(),
        );
        if let Some(tls) = &self.tls {
            let _ = write!(received, " ({tls})");
        }
        let _ = write!(received, " id {id}");
        if let [one] = tx.recipients.as_slice() {
            let _ = write!(received, " for <{}>", one.address);
        }
        let _ = write!(received, "; {date}");
        format!("Return-Path: <{}>\r\n{}\r\n", tx.sender, fold(&received))
    }

    /// RFC 3848 protocol name for the Received header and the log.
    pub(super) fn protocol(&self) -> &'static str {
        let extended = self.greeting.as_ref().is_some_and(|g| g.extended);
        match (extended, self.tls.is_some(), self.auth_user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }
}
