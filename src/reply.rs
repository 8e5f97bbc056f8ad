//! SMTP replies: one type, built in one place, so no reply after the
//! greeting can miss its enhanced status code (RFC 2034, RFC 3463).

use std::borrow::Cow;
use std::fmt;

/// One SMTP reply: a three-digit code, an enhanced status code (empty only
/// for the greeting, RFC 2034 §3), and one or more lines of text.
///
/// A one-line reply with a constant text allocates nothing (musl's
/// allocator is slow, and most replies are "250 2.1.0 Ok").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: &'static str,
    first: Cow<'static, str>,
    /// The lines after the first (multi-line replies only).
    more: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, status: &'static str, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            status,
            first: text.into(),
            more: Vec::new(),
        }
    }

    /// A multi-line reply (EHLO, HELP). The enhanced code goes on every line;
    /// pass [`EHLO`] as the status for an EHLO reply, whose lines stay bare.
    pub fn multi(code: u16, status: &'static str, lines: Vec<String>) -> Reply {
        let mut lines = lines.into_iter();
        Reply {
            code,
            status,
            first: lines.next().unwrap_or_default().into(),
            more: lines.collect(),
        }
    }

    /// The text lines, first to last.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&*self.first).chain(self.more.iter().map(String::as_str))
    }

    /// True for 4xx and 5xx replies.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the reply in wire form (CRLF line endings) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        // Codes are three digits (RFC 5321 §4.2); clamped, so any u16 gives
        // three bytes without formatting.
        let code = self.code.min(999);
        let digits = [code / 100, code / 10 % 10, code % 10].map(|d| b'0' + d as u8);
        let last = self.more.len();
        for (i, line) in self.lines().enumerate() {
            let sep = if i == last { b' ' } else { b'-' };
            out.extend_from_slice(&digits);
            out.push(sep);
            if !self.status.is_empty() && self.status != EHLO {
                out.extend_from_slice(self.status.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Marker status for EHLO replies: no enhanced code on any line (RFC 2034 §3
/// lets only the response lines carry it; keyword lines must not).
pub const EHLO: &str = "ehlo";

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::new();
        self.write_to(&mut buf);
        f.write_str(String::from_utf8_lossy(&buf).trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &Reply) -> String {
        let mut v = Vec::new();
        r.write_to(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn one_line_reply_carries_enhanced_code() {
        let r = Reply::new(250, "2.1.0", "Ok");
        assert_eq!(wire(&r), "250 2.1.0 Ok\r\n");
    }

    #[test]
    fn greeting_has_no_enhanced_code() {
        let r = Reply::new(220, "", "mx ESMTP smtpbox");
        assert_eq!(wire(&r), "220 mx ESMTP smtpbox\r\n");
    }

    #[test]
    fn ehlo_lines_are_bare_keywords() {
        let r = Reply::multi(
            250,
            EHLO,
            vec!["mx".into(), "PIPELINING".into(), "HELP".into()],
        );
        assert_eq!(wire(&r), "250-mx\r\n250-PIPELINING\r\n250 HELP\r\n");
    }

    #[test]
    fn multi_line_help_repeats_code() {
        let r = Reply::multi(214, "2.0.0", vec!["a".into(), "b".into()]);
        assert_eq!(wire(&r), "214-2.0.0 a\r\n214 2.0.0 b\r\n");
    }
}
