//! The message as it comes on stdin: the header section read up front
//! (for `-t` recipients and the headers sendmail adds), then the body.

use super::*;

/// stdin through the [`LineReader`].
pub(super) struct Input<'a, R> {
    pub(super) source: &'a mut R,
    pub(super) lines: LineReader,
    pub(super) done: bool,
}

impl<R: BufRead> Input<'_, R> {
    /// Appends the next piece of content to `out`; sets `done` at the end.
    pub(super) fn read(&mut self, out: &mut Vec<u8>) -> Result<(), Failure> {
        const CHUNK: usize = 16 * 1024;
        if self.done {
            return Ok(());
        }
        let buf = loop {
            match self.source.fill_buf() {
                Ok(buf) => break buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Exit::IoErr.with(format!("reading stdin: {e}"))),
            }
        };
        if buf.is_empty() {
            self.lines.finish(out);
            self.done = true;
            return Ok(());
        }
        let (used, end) = self.lines.feed(&buf[..buf.len().min(CHUNK)], out);
        self.source.consume(used);
        self.done = end;
        Ok(())
    }

    /// Reads and throws away the rest of the message.
    pub(super) fn drain(&mut self) {
        let mut out = Vec::new();
        while !self.done && self.read(&mut out).is_ok() {
            out.clear();
        }
    }

    /// Reads past the end of the header section: returns what was read and
    /// where the header ends in it. Over `limit` bytes is EX_DATAERR.
    pub(super) fn read_header(&mut self, limit: u64) -> Result<(Vec<u8>, usize), Failure> {
        let mut buf = Vec::new();
        let mut scanned = 0;
        loop {
            if let Some(end) = header_end(&buf, &mut scanned) {
                return Ok((buf, end));
            }
            if self.done {
                let end = buf.len();
                return Ok((buf, end));
            }
            if buf.len() as u64 > limit {
                return Err(Exit::DataErr.with(format!("message too big (over {limit} bytes)")));
            }
            self.read(&mut buf)?;
        }
    }
}

/// Where the header section of `buf` (CRLF lines) ends (RFC 5322 §2.2): at
/// the first empty line, or at the first line that is neither a field nor
/// the continuation of one. `None` until a complete line decides; lines
/// before `*scanned` were already checked.
pub(super) fn header_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    while let Some(lf) = buf[*scanned..].iter().position(|&b| b == b'\n') {
        let start = *scanned;
        let line = &buf[start..=start + lf];
        let continuation = start > 0 && matches!(line[0], b' ' | b'\t');
        if line == b"\r\n" || !(continuation || field_name(line).is_some()) {
            return Some(start);
        }
        *scanned = start + lf + 1;
    }
    None
}

/// The name of the field that `line` begins: printable ASCII but `:`, then
/// the colon (RFC 5322 §2.2; whitespace before it is obsolete syntax, §4.5).
pub(super) fn field_name(line: &[u8]) -> Option<&[u8]> {
    let len = line
        .iter()
        .take_while(|&&b| b.is_ascii_graphic() && b != b':')
        .count();
    let after = line[len..].iter().position(|&b| b != b' ' && b != b'\t')?;
    (len > 0 && line[len + after] == b':').then(|| &line[..len])
}

/// Splits a header section (as [`header_end`] delimits it) into fields,
/// each with its continuation lines.
pub(super) fn fields(header: &[u8]) -> Vec<&[u8]> {
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    for (i, _) in header.iter().enumerate().filter(|(_, &b)| b == b'\n') {
        if !matches!(header.get(i + 1), Some(b' ' | b'\t')) {
            fields.push(&header[start..=i]);
            start = i + 1;
        }
    }
    fields
}

/// True when `field` is named `name` (case-insensitive, RFC 5322 §1.2.2).
pub(super) fn is(field: &[u8], name: &str) -> bool {
    field_name(field).is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// The unfolded value of `field` (RFC 5322 §2.2.3), trimmed.
pub(super) fn value(field: &[u8]) -> String {
    let colon = field.iter().position(|&b| b == b':').map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(&field[colon..]);
    text.replace("\r\n", "").trim().to_string()
}

/// The addresses of an RFC 5322 §3.4 address list, as address texts:
/// `a@b`, `Name <a@b>`, `"Doe, J" <a@b>`, `a@b (comment)`, groups
/// `team: a@b, c@d;`. Display names and comments are dropped.
pub(super) fn address_list(value: &str) -> Vec<String> {
    let mut list = Vec::new();
    // This entry's text outside `<>` (no spaces, no comments), and its `<>`.
    let (mut bare, mut angle) = (String::new(), None::<String>);
    let (mut in_angle, mut quoted, mut literal) = (false, false, false);
    let (mut escaped, mut comment) = (false, 0u32);
    for c in value.chars() {
        if comment > 0 {
            match c {
                _ if escaped => escaped = false,
                '(' => comment += 1,
                ')' => comment -= 1,
                '\\' => escaped = true,
                _ => {}
            }
            continue;
        }
        let text = match &mut angle {
            Some(inside) if in_angle => inside,
            _ => &mut bare,
        };
        if quoted || literal {
            text.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' if quoted => quoted = false,
                ']' if literal => literal = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' | '[' => {
                quoted = c == '"';
                literal = c == '[';
                text.push(c);
            }
            '(' => comment = 1,
            '<' if !in_angle => (in_angle, angle) = (true, Some(String::new())),
            '>' if in_angle => in_angle = false,
            ':' if !in_angle => bare.clear(), // a group's display name
            ',' | ';' if !in_angle => {
                list.push(angle.take().unwrap_or_else(|| bare.clone()));
                bare.clear();
            }
            _ if c.is_whitespace() => {}
            _ => text.push(c),
        }
    }
    list.push(angle.unwrap_or(bare));
    list.retain(|a| !a.is_empty());
    list
}

/// `From:` for a generated header: `addr`, or `Name <addr>` with `-F`.
pub(super) fn from_header(address: &str, full_name: Option<&str>) -> String {
    let name: String = full_name
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let name = name.trim();
    if name.is_empty() {
        return address.to_string();
    }
    // RFC 5322 §3.2.5: a phrase of atoms as is, anything else quoted.
    let atext = |c: char| c.is_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if name.chars().all(atext) {
        return format!("{name} <{address}>");
    }
    let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\" <{address}>")
}

/// Sendmail's input rules as a byte automaton, sans-IO like
/// `data::DataReader`: a line holding a single `.` (then LF or CRLF, or end
/// of file) ends the input unless `ignore_dots`; a bare LF becomes CRLF;
/// nothing is unstuffed; an unterminated last line gets its CRLF.
///
/// ```text
///   LineStart ──'.'──▶ Dot ──'\r'──▶ DotCr ──'\n'──▶ END
///                       └──────────'\n'────────────▶ END
///   Dot/DotCr + other: emit what was held, go on as Mid
///   Mid ──'\r'──▶ Cr ──'\n'──▶ LineStart;  Mid ──'\n' (emit CRLF)──▶ LineStart
/// ```
#[derive(Debug)]
pub(super) struct LineReader {
    pub(super) state: LineState,
    pub(super) ignore_dots: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LineState {
    LineStart,
    /// A line so far holding only `.` (held back).
    Dot,
    /// `.` CR at the start of a line (both held back).
    DotCr,
    Mid,
    /// The previous byte was a CR (already emitted).
    Cr,
}

impl LineReader {
    pub(super) fn new(ignore_dots: bool) -> LineReader {
        LineReader {
            state: LineState::LineStart,
            ignore_dots,
        }
    }

    /// Consumes `input` into `out`; returns the bytes used and whether the
    /// end line was consumed (then it stops right after it).
    pub(super) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        for (i, &b) in input.iter().enumerate() {
            if self.step(b, out) {
                return (i + 1, true);
            }
        }
        (input.len(), false)
    }

    /// End of file: completes the last line (a lone `.` there is the end).
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        match self.state {
            LineState::Mid => out.extend_from_slice(b"\r\n"),
            LineState::Cr => out.push(b'\n'),
            LineState::LineStart | LineState::Dot | LineState::DotCr => {}
        }
        self.state = LineState::LineStart;
    }

    pub(super) fn step(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        use LineState::*;
        let (emit, next): (&[u8], LineState) = match (self.state, b) {
            (LineStart, b'.') if !self.ignore_dots => (b"", Dot),
            (Dot | DotCr, b'\n') => return true,
            (Dot, b'\r') => (b"", DotCr),
            (held @ (Dot | DotCr), _) => {
                // Not the end line after all: what was held is content.
                let (bytes, then) = if held == Dot {
                    (&b"."[..], Mid)
                } else {
                    (&b".\r"[..], Cr)
                };
                out.extend_from_slice(bytes);
                self.state = then;
                return self.step(b, out);
            }
            (Cr, b'\n') => (b"\n", LineStart),
            (_, b'\n') => (b"\r\n", LineStart),
            (_, b'\r') => (b"\r", Cr),
            _ => (std::slice::from_ref(&b), Mid),
        };
        out.extend_from_slice(emit);
        self.state = next;
        false
    }
}
