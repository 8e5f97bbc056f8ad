//! `SMTPBOX_SUBJECT`: the stored message's first `Subject:` field,
//! unfolded, RFC 2047 encoded words decoded to UTF-8 (B and Q, in UTF-8,
//! US-ASCII and ISO-8859-1; other charsets stay as written), control
//! characters replaced by spaces, at most [`MAX_SUBJECT`] bytes, cut on a
//! character boundary.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Bytes of the subject at most.
pub const MAX_SUBJECT: usize = 256;
/// Bytes of the header read at most to find it.
const MAX_HEADER: usize = 64 * 1024;

/// The subject of the message in `file` (read from its first byte, without
/// moving its offset: the file is the program's stdin); empty when none.
pub(super) fn of(file: &File) -> String {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut len = 0;
    while len < buf.len() {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    buf.truncate(len);
    from_header(&buf)
}

/// The subject in a message's header (the bytes up to its blank line).
pub fn from_header(message: &[u8]) -> String {
    let mut value: Option<Vec<u8>> = None;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let folded = line[0] == b' ' || line[0] == b'\t';
        match &mut value {
            Some(v) if folded => v.extend_from_slice(line),
            Some(_) => break,
            None if !folded && is_subject(line) => value = Some(line[8..].to_vec()),
            None => {}
        }
    }
    let raw = String::from_utf8_lossy(value.as_deref().unwrap_or_default()).into_owned();
    let decoded = decode_words(raw.trim());
    let clean: String = decoded
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cut(clean.trim(), MAX_SUBJECT).to_string()
}

fn is_subject(line: &[u8]) -> bool {
    line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"subject:")
}

/// At most `max` bytes of `text`, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Decodes every encoded word; white space between two of them goes
/// (RFC 2047 §6.2).
fn decode_words(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, candidate) = rest.split_at(start);
        match encoded_word(candidate) {
            Some((decoded, used)) => {
                if !(after_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                rest = &candidate[used..];
                after_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &candidate[2..];
                after_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `=?charset?B|Q?text?=` at the start of `s`: its text and its length.
fn encoded_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, rest) = inner.split_once('?')?;
    let (encoding, rest) = rest.split_once('?')?;
    let end = rest.find("?=")?;
    let text = &rest[..end];
    if text.contains(char::is_whitespace) || charset.is_empty() {
        return None;
    }
    let used = 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
    let bytes = match encoding {
        "B" | "b" => base64(text)?,
        "Q" | "q" => quoted(text)?,
        _ => return None,
    };
    // RFC 2231 language: charset*lang.
    let charset = charset.split('*').next()?.to_ascii_lowercase();
    let decoded = match charset.as_str() {
        "utf-8" | "utf8" | "us-ascii" => String::from_utf8_lossy(&bytes).into_owned(),
        "iso-8859-1" | "latin1" | "iso8859-1" => bytes.iter().map(|&b| b as char).collect(),
        _ => return None,
    };
    Some((decoded, used))
}

fn quoted(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

fn base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_folded_and_missing_subjects() {
        assert_eq!(
            from_header(b"From: a\r\nSubject: disk sda\r\n\r\nx"),
            "disk sda"
        );
        assert_eq!(
            from_header(b"SUBJECT: RAID\r\n  degraded\r\nTo: b\r\n\r\n"),
            "RAID  degraded"
        );
        assert_eq!(from_header(b"From: a\r\n\r\nSubject: body\r\n"), "");
        assert_eq!(from_header(b"Subject: a\tb\x07c\r\n\r\n"), "a b c");
    }

    #[test]
    fn encoded_words_are_decoded() {
        assert_eq!(
            from_header(b"Subject: =?UTF-8?B?ZMOpZ3JhZMOp?= array\r\n\r\n"),
            "d\u{e9}grad\u{e9} array"
        );
        assert_eq!(
            from_header(b"Subject: =?iso-8859-1?q?caf=E9_ok?= =?utf-8?Q?_=E2=9C=93?=\r\n\r\n"),
            "caf\u{e9} ok \u{2713}"
        );
        // Unknown charsets and broken words stay as written.
        assert_eq!(
            from_header(b"Subject: =?koi8-r?B?9NXS?= =?x\r\n\r\n"),
            "=?koi8-r?B?9NXS?= =?x"
        );
        assert_eq!(
            from_header(b"Subject: =?utf-8?B?Gw==?=x\r\n\r\n"),
            " x".trim()
        );
    }

    #[test]
    fn long_subjects_are_cut_on_a_character_boundary() {
        let mut m = b"Subject: ".to_vec();
        m.extend("\u{e9}".repeat(300).bytes());
        m.extend_from_slice(b"\r\n\r\n");
        let s = from_header(&m);
        assert_eq!(s.len(), MAX_SUBJECT);
        assert!(s.chars().all(|c| c == '\u{e9}'));
    }
}
