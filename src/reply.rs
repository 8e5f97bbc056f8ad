//! SMTP replies: one type, built in one place, so no reply after the
//! greeting can miss its enhanced status code (RFC 2034, RFC 3463).

use std::fmt;

/// One SMTP reply: a three-digit code, an enhanced status code (empty only
/// for the greeting, RFC 2034 §3), and one or more lines of text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: &'static str,
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply (EHLO, HELP). The enhanced code goes on every line;
    /// pass [`EHLO`] as the status for an EHLO reply, whose lines stay bare.
    pub fn multi(code: u16, status: &'static str, lines: Vec<String>) -> Reply {
        Reply {
            code,
            status,
            lines,
        }
    }

    /// True for 4xx and 5xx replies.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the reply in wire form (CRLF line endings) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.extend_from_slice(self.code.to_string().as_bytes());
            out.push(sep as u8);
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
