//! The DATA phase: a byte automaton that finds the one true end of data
//! (CRLF . CRLF), dot-unstuffs, normalizes or rejects bare line endings,
//! and streams content into a size-limited sink. Also BDAT chunks.
//!
//! [`DataReader`] is sans-IO, in the spirit of qmail's `blast()`: bytes in,
//! unstuffed content out, a few bytes of state, so the end marker may be
//! split over any read boundary and memory never depends on the input.
//! [`read_data`] and [`read_bdat`] drive it (or a plain copy, for BDAT)
//! over a `BufRead` into a [`ContentWrite`]: a [`ContentSink`] (a writer
//! behind a size limit), or the [`crate::delivery::Message`] built on one.
//!
//! The automaton (`after` is what began the line: the start of the data,
//! a CRLF, or a bare LF; the CR of DotCr is the only byte ever held back):
//!
//! ```text
//!   LineStart ──'.'──▶ Dot ──'\r'──▶ DotCr ──'\n'──▶ END  (after ≠ bare LF)
//!     ▲   │                                  (lf_session: Dot ──'\n'──▶ END
//!     │   other                                  when after ≠ CRLF)
//!     │   ▼
//!     │  Mid ──'\r'──▶ Cr
//!     └───────'\n'───── ┘
//!
//!   state      byte   action                                then
//!   LineStart  '.'    drop the dot (never emitted)          Dot
//!   LineStart  other  as in Mid
//!   Dot        '\r'   hold the CR                           DotCr
//!   Dot        other  the dot stays dropped (RFC 5321 4.5.2); as in Mid
//!   DotCr      '\n'   after a bare LF: emit CRLF            LineStart(CRLF)
//!   DotCr      other  emit the (bare) CR, as in Cr
//!   Mid        '\r'   emit                                  Cr
//!   Mid        '\n'   bare LF: emit CRLF (normalize)        LineStart(LF) if
//!                     or LF (reject)                        bare LFs end lines,
//!                                                           else Mid
//!   Mid        other  emit; runs of such bytes in bulk      Mid
//!   Cr         '\n'   emit                                  LineStart(CRLF)
//!   Cr         other  the CR was bare; as in Mid
//! ```
//!
//! Only CRLF . CRLF (or `.` CRLF as the first line) ends the data; a dot
//! between any other line endings is content, which makes SMTP smuggling
//! impossible (SPEC §6). In an `lf_session` (a client that never sent a
//! CRLF, typically someone typing into `nc`) LF . LF ends it too.
//!
//! Dot-unstuffing (RFC 5321 4.5.2): the first dot of every line is removed,
//! unless the line is the end marker. A line begins at the start of the data,
//! after a CRLF, and after a bare LF when bare LFs end lines (normalize mode
//! or an `lf_session`). A bare CR never ends a line.

use std::io::{self, BufRead, Write};

/// What to do with a bare LF (or bare CR) inside content (SPEC §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BareLf {
    /// Store a bare LF as CRLF; a bare CR is stored as it came.
    #[default]
    Normalize,
    /// Store content unchanged; the caller refuses it with `550 5.6.0`
    /// when [`DataReader::bare_line_ending_seen`] is true.
    Reject,
}

/// The DATA automaton: finds the end of data, dot-unstuffs, and handles
/// bare line endings. See the module doc for the state diagram.
#[derive(Debug)]
pub struct DataReader {
    state: State,
    normalize: bool,
    lf_session: bool,
    bare_seen: bool,
}

impl DataReader {
    /// A reader for one message. `lf_session`: the session has never sent
    /// a CRLF, so LF . LF (and `.` LF as the first line) also ends the data.
    pub fn new(bare_lf: BareLf, lf_session: bool) -> DataReader {
        DataReader {
            state: State::LineStart(After::Start),
            normalize: bare_lf == BareLf::Normalize,
            lf_session,
            bare_seen: false,
        }
    }

    /// Consumes bytes of `input`, appending the unstuffed content to `out`.
    /// Returns the bytes consumed and whether the end marker was consumed;
    /// it stops right after the marker, so a pipelined next command stays
    /// in `input`. Once the end was seen, consumes nothing and returns true.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        if self.state == State::Done {
            return (0, true);
        }
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Mid {
                // Ordinary bytes go through as one slice copy.
                let rest = &input[i..];
                let run = line_end(rest);
                out.extend_from_slice(&rest[..run]);
                i += run;
                if i == input.len() {
                    break;
                }
            }
            let b = input[i];
            i += 1;
            if self.step(b, out) {
                self.state = State::Done;
                return (i, true);
            }
        }
        (i, false)
    }

    /// True once a bare LF or a bare CR appeared in the content, in either
    /// mode. In [`BareLf::Reject`] mode the caller then refuses the message.
    pub fn bare_line_ending_seen(&self) -> bool {
        self.bare_seen
    }

    /// One byte through the automaton; true when it completes the end marker.
    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        match self.state {
            State::LineStart(after) if b == b'.' => self.state = State::Dot(after),
            State::LineStart(_) | State::Mid => self.mid(b, out),
            State::Dot(after) => match b {
                b'\r' => self.state = State::DotCr(after),
                // LF . LF ends an lf_session's data (SPEC §6).
                b'\n' if self.lf_session && after != After::Crlf => return true,
                // RFC 5321 4.5.2: the line's first dot is dropped.
                _ => self.mid(b, out),
            },
            State::DotCr(after) => match b {
                b'\n' if after != After::Lf => return true,
                b'\n' => {
                    // LF . CRLF: content, an empty line after the dropped dot.
                    out.extend_from_slice(b"\r\n");
                    self.state = State::LineStart(After::Crlf);
                }
                _ => {
                    out.push(b'\r');
                    self.bare_seen = true;
                    self.mid(b, out);
                }
            },
            State::Cr if b == b'\n' => {
                out.push(b'\n');
                self.state = State::LineStart(After::Crlf);
            }
            State::Cr => {
                self.bare_seen = true;
                self.mid(b, out);
            }
            State::Done => return true,
        }
        false
    }

    /// Byte `b` in the middle of a line whose previous byte was not a CR.
    fn mid(&mut self, b: u8, out: &mut Vec<u8>) {
        match b {
            b'\r' => {
                out.push(b'\r');
                self.state = State::Cr;
            }
            b'\n' => {
                self.bare_seen = true;
                if self.normalize {
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.push(b'\n');
                }
                self.state = if self.normalize || self.lf_session {
                    State::LineStart(After::Lf)
                } else {
                    State::Mid
                };
            }
            _ => {
                out.push(b);
                self.state = State::Mid;
            }
        }
    }
}

/// Where the automaton stands; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart(After),
    /// Line start + `.` (the dot is never emitted).
    Dot(After),
    /// Line start + `.` + CR (the CR is held: it may be the end marker).
    DotCr(After),
    /// Inside a line; the previous byte was not a CR.
    Mid,
    /// Inside a line; the previous byte was a CR (already emitted).
    Cr,
    /// The end marker was consumed.
    Done,
}

/// What began the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    Start,
    Crlf,
    Lf,
}

/// Where [`read_data`] and [`read_bdat`] put content. Writing never fails
/// from the reader's point of view, so that it keeps reading the client's
/// data to stay in sync; what went wrong is asked at the end.
pub trait ContentWrite {
    fn write(&mut self, bytes: &[u8]);
}

impl<W: Write> ContentWrite for ContentSink<W> {
    fn write(&mut self, bytes: &[u8]) {
        ContentSink::write(self, bytes);
    }
}

/// A writer (the spool file, the local socket) behind a size limit.
/// Writing never fails from the caller's point of view, so the caller
/// keeps reading the client's data to stay in sync; it asks
/// [`oversized`](Self::oversized) and [`take_error`](Self::take_error) at
/// the end of data.
#[derive(Debug)]
pub struct ContentSink<W: Write> {
    inner: W,
    limit: u64,
    size: u64,
    oversized: bool,
    failed: bool,
    error: Option<io::Error>,
    headers: HeaderScan,
}

impl<W: Write> ContentSink<W> {
    /// Wraps `inner`, which stores at most `limit` bytes of content.
    pub fn new(inner: W, limit: u64) -> ContentSink<W> {
        ContentSink {
            inner,
            limit,
            size: 0,
            oversized: false,
            failed: false,
            error: None,
            headers: HeaderScan::default(),
        }
    }

    /// Counts `bytes` and writes them, unless the content is over the limit
    /// or an earlier write failed (the first error is kept).
    pub fn write(&mut self, bytes: &[u8]) {
        self.headers.scan(bytes);
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.size > self.limit {
            self.oversized = true;
        }
        if self.oversized || self.failed || bytes.is_empty() {
            return;
        }
        if let Err(e) = self.inner.write_all(bytes) {
            self.failed = true;
            self.error = Some(e);
        }
    }

    /// Bytes of content seen, including those past the limit.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True once the content went over the limit (`552 5.3.4`).
    pub fn oversized(&self) -> bool {
        self.oversized
    }

    /// The first write error, if any. Later writes stay skipped.
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.error.take()
    }

    /// `Received:` header lines in the header section (before the first
    /// empty line) of the content; over 100 is a mail loop (`554 5.4.6`).
    pub fn received_headers(&self) -> usize {
        self.headers.received
    }

    /// The wrapped writer, for a look.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// How a DATA or BDAT read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataEnd {
    /// The end marker (DATA) or the whole chunk (BDAT) was read.
    Complete,
    /// The input ended first.
    Eof,
}

/// Reads DATA content from `input` through `reader` into `sink` until the
/// end marker, leaving `input` just after it. I/O errors (timeouts)
/// propagate; an input that ends first gives [`DataEnd::Eof`].
pub fn read_data<R: BufRead>(
    input: &mut R,
    reader: &mut DataReader,
    sink: &mut impl ContentWrite,
) -> io::Result<DataEnd> {
    // At most 2 × CHUNK bytes (every LF normalized to CRLF), reused.
    const CHUNK: usize = 16 * 1024;
    let mut out = Vec::with_capacity(CHUNK);
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(DataEnd::Eof);
        }
        out.clear();
        let chunk = &buf[..buf.len().min(CHUNK)];
        let (used, done) = reader.feed(chunk, &mut out);
        input.consume(used);
        sink.write(&out);
        if done {
            return Ok(DataEnd::Complete);
        }
    }
}

/// Copies exactly `size` bytes of a BDAT chunk from `input` into `sink`,
/// byte for byte (RFC 3030: no dot-unstuffing, no normalization).
pub fn read_bdat<R: BufRead>(
    input: &mut R,
    size: u64,
    sink: &mut impl ContentWrite,
) -> io::Result<DataEnd> {
    let mut left = size;
    while left > 0 {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(DataEnd::Eof);
        }
        let n = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
        sink.write(&buf[..n]);
        input.consume(n);
        left -= n as u64;
    }
    Ok(DataEnd::Complete)
}

/// Counts `Received:` lines of the header section with a few bytes of
/// state, so a header split across writes still counts (RFC 5322 2.2:
/// the field name runs up to the colon; the header ends at an empty line).
#[derive(Debug, Default)]
struct HeaderScan {
    state: HeaderState,
    received: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum HeaderState {
    /// At the start of a header line.
    #[default]
    LineStart,
    /// Matched this many bytes of `received:`.
    Prefix(u8),
    /// A CR at the start of a line: an empty line if LF follows.
    BlankCr,
    /// In a line that is not (or is already counted as) `Received:`.
    Skip,
    /// Past the header section.
    Body,
}

impl HeaderScan {
    const NAME: &'static [u8] = b"received:";

    fn scan(&mut self, mut bytes: &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            match self.state {
                HeaderState::Body => return,
                HeaderState::Skip => match bytes.iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        self.state = HeaderState::LineStart;
                        bytes = &bytes[nl + 1..];
                        continue;
                    }
                    None => return,
                },
                HeaderState::LineStart if b == b'\r' => self.state = HeaderState::BlankCr,
                HeaderState::LineStart | HeaderState::BlankCr if b == b'\n' => {
                    self.state = HeaderState::Body;
                }
                HeaderState::BlankCr => self.state = HeaderState::Skip,
                HeaderState::LineStart => self.state = self.name_byte(0, b),
                HeaderState::Prefix(n) => self.state = self.name_byte(n, b),
            }
            bytes = rest;
        }
    }

    /// The next state after byte `b` when `n` bytes of the name matched.
    fn name_byte(&mut self, n: u8, b: u8) -> HeaderState {
        let n = usize::from(n);
        if b == b'\n' {
            return HeaderState::LineStart;
        }
        if !b.eq_ignore_ascii_case(&Self::NAME[n]) {
            return HeaderState::Skip;
        }
        if n + 1 == Self::NAME.len() {
            self.received += 1;
            return HeaderState::Skip;
        }
        // n + 1 < NAME.len() = 9, so it fits.
        HeaderState::Prefix((n + 1) as u8)
    }
}

/// Index of the first CR or LF in `bytes`, or its length: eight bytes at
/// a time (the DATA hot path; a byte loop at opt-level "z" was a quarter of
/// the server's CPU on large messages).
fn line_end(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    for (n, chunk) in chunks.by_ref().enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let (cr, lf) = (word ^ (ONES * 0x0d), word ^ (ONES * 0x0a));
        // A zero byte in `cr` or `lf` is a CR or LF in `word`; the lowest
        // flagged byte is always a true one (Mycroft's haszero).
        let found = (cr.wrapping_sub(ONES) & !cr | lf.wrapping_sub(ONES) & !lf) & HIGHS;
        if found != 0 {
            return n * 8 + (found.trailing_zeros() / 8) as usize;
        }
    }
    let tail = chunks.remainder();
    let start = bytes.len() - tail.len();
    start
        + tail
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(tail.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Read};

    const SECOND_TX: &[u8] = b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n";

    /// (sequence, stored in normalize mode, stored in reject mode, bare?)
    #[allow(clippy::type_complexity)] // a plain test table
    const SMUGGLING: &[(&[u8], &[u8], &[u8], bool)] = &[
        (b"\n.\n", b"\r\n\r\n", b"\n.\n", true),
        (b"\n.\r\n", b"\r\n\r\n", b"\n.\r\n", true),
        (b"\r\n.\n", b"\r\n\r\n", b"\r\n\n", true),
        (b"\r.\r", b"\r.\r", b"\r.\r", true),
        (b"\r.\n", b"\r.\r\n", b"\r.\n", true),
        (b"\n.\r", b"\r\n\r", b"\n.\r", true),
        (b"\r.\r\n", b"\r.\r\n", b"\r.\r\n", true),
        (b"\r\n.\r", b"\r\n\r", b"\r\n\r", true),
        (b"\r\n\0.\r\n", b"\r\n\0.\r\n", b"\r\n\0.\r\n", false),
        (b"\r\n.\0\r\n", b"\r\n\0\r\n", b"\r\n\0\r\n", false),
        (b"\r\n.\r\r\n", b"\r\n\r\r\n", b"\r\n\r\r\n", true),
        (b"\r\r\n.\r\r\n", b"\r\r\n\r\r\n", b"\r\r\n\r\r\n", true),
        (b"\r\n..\r\n", b"\r\n.\r\n", b"\r\n.\r\n", false),
    ];

    /// Feeds `input` in the given pieces, as a caller would: each call gets
    /// the rest of its piece until the end is seen. Returns
    /// (consumed, ended, content, bare).
    fn feed_pieces(mode: BareLf, lf: bool, pieces: &[&[u8]]) -> (usize, bool, Vec<u8>, bool) {
        let mut r = DataReader::new(mode, lf);
        let (mut out, mut used) = (Vec::new(), 0);
        for piece in pieces {
            let (n, done) = r.feed(piece, &mut out);
            used += n;
            if done {
                return (used, true, out, r.bare_line_ending_seen());
            }
            assert_eq!(n, piece.len(), "stopped early without the end");
        }
        (used, false, out, r.bare_line_ending_seen())
    }

    fn feed_all(mode: BareLf, lf: bool, input: &[u8]) -> (usize, bool, Vec<u8>, bool) {
        feed_pieces(mode, lf, &[input])
    }

    /// One call, byte by byte, and every 2-piece split agree.
    fn assert_split_invariant(mode: BareLf, lf: bool, input: &[u8]) {
        let whole = feed_all(mode, lf, input);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            feed_pieces(mode, lf, &bytes),
            whole,
            "byte by byte: {input:?}"
        );
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(
                feed_pieces(mode, lf, &[a, b]),
                whole,
                "split {at}: {input:?}"
            );
        }
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn line_end_finds_the_first_cr_or_lf_at_any_offset() {
        let naive = |b: &[u8]| {
            b.iter()
                .position(|&x| x == b'\r' || x == b'\n')
                .unwrap_or(b.len())
        };
        for len in 0..40 {
            for at in 0..=len {
                for mark in [b'\r', b'\n'] {
                    let mut v: Vec<u8> = (0..len).map(|i| b'a' + (i % 20) as u8).collect();
                    // Bytes next to CR/LF in value, to catch borrow errors.
                    v.iter_mut().step_by(3).for_each(|x| *x = 0x0c);
                    if at < len {
                        v[at] = mark;
                    }
                    assert_eq!(line_end(&v), naive(&v), "{v:?}");
                    v.iter_mut().skip(at + 1).for_each(|x| *x = 0x0b);
                    assert_eq!(line_end(&v), naive(&v), "{v:?}");
                }
            }
        }
        assert_eq!(
            line_end(&[0x8d, 0x8a, 0xff, 0x00, 0x0e, 0x09, 0x0b, 0x0c, 0x0a]),
            8
        );
    }

    #[test]
    fn smuggling_sequences_are_content() {
        for &(seq, normalized, raw, bare) in SMUGGLING {
            let input = cat(&[b"hello", seq, SECOND_TX, b"\r\n.\r\n", b"NEXT"]);
            let end = input.len() - 4;
            for (mode, stored) in [(BareLf::Normalize, normalized), (BareLf::Reject, raw)] {
                let (used, done, out, seen) = feed_all(mode, false, &input);
                assert!(done, "{seq:?} {mode:?}");
                assert_eq!(used, end, "ends only at the real marker: {seq:?}");
                assert_eq!(out, cat(&[b"hello", stored, SECOND_TX, b"\r\n"]), "{seq:?}");
                assert_eq!(seen, bare, "{seq:?} {mode:?}");
                assert_split_invariant(mode, false, &input);
            }
        }
    }

    #[test]
    fn dot_stuffed_line_stores_one_dot() {
        let (_, done, out, _) = feed_all(BareLf::Reject, false, b"a\r\n..\r\n.\r\n");
        assert!(done);
        assert_eq!(out, b"a\r\n.\r\n");
        let (_, _, out, _) = feed_all(BareLf::Normalize, false, b"..x\r\n...\r\n.\r\n");
        assert_eq!(out, b".x\r\n..\r\n");
    }

    #[test]
    fn first_line_dot_ends_with_empty_content() {
        for mode in [BareLf::Normalize, BareLf::Reject] {
            let empty = (3, true, vec![], false);
            assert_eq!(feed_all(mode, false, b".\r\nQUIT\r\n"), empty);
        }
    }

    #[test]
    fn ended_reader_consumes_nothing() {
        let mut r = DataReader::new(BareLf::Normalize, false);
        let mut out = Vec::new();
        assert_eq!(r.feed(b"x\r\n.\r\n", &mut out), (6, true));
        assert_eq!(r.feed(b"more", &mut out), (0, true));
        assert_eq!(out, b"x\r\n");
    }

    #[test]
    fn lf_session_ends_at_lf_dot_lf() {
        let (used, done, out, bare) = feed_all(BareLf::Normalize, true, b"a\n.\nQUIT\n");
        assert_eq!(
            (used, done, out.as_slice(), bare),
            (4, true, &b"a\r\n"[..], true)
        );
        assert_eq!(
            feed_all(BareLf::Normalize, true, b".\nX"),
            (2, true, vec![], false)
        );
        let (_, done, out, _) = feed_all(BareLf::Normalize, true, b"a\n..\nb\n.\n");
        assert!(done);
        assert_eq!(out, b"a\r\n.\r\nb\r\n");
        // CRLF . CRLF still ends; the mixed forms still do not.
        assert!(feed_all(BareLf::Normalize, true, b"a\r\n.\r\n").1);
        assert!(!feed_all(BareLf::Normalize, true, b"a\r\n.\nb\n.\r\n").1);
        assert_split_invariant(BareLf::Normalize, true, b"a\n..\nb\r\n.\nc\n.\nQUIT\n");
    }

    #[test]
    fn smuggling_lf_dot_lf_is_content() {
        let input = cat(&[b"a\n.\n", SECOND_TX]);
        let (used, done, out, _) = feed_all(BareLf::Normalize, false, &input);
        assert_eq!((used, done), (input.len(), false));
        assert_eq!(out, cat(&[b"a\r\n\r\n", SECOND_TX]));
        assert!(!feed_all(BareLf::Normalize, false, b".\n").1);
    }

    #[test]
    fn reject_mode_flags_and_stores_unchanged() {
        let (_, done, out, bare) = feed_all(BareLf::Reject, false, b"a\nb\r\n.\r\n");
        assert_eq!((done, out.as_slice(), bare), (true, &b"a\nb\r\n"[..], true));
        let (_, done, out, bare) = feed_all(BareLf::Reject, false, b"a\rb\r\n.\r\n");
        assert_eq!((done, out.as_slice(), bare), (true, &b"a\rb\r\n"[..], true));
        let (_, _, _, bare) = feed_all(BareLf::Reject, false, b"a\r\nb\r\n.\r\n");
        assert!(!bare);
    }

    #[test]
    fn normalize_stores_crlf_and_keeps_bare_cr() {
        let (_, done, out, bare) = feed_all(BareLf::Normalize, false, b"a\nb\rc\r\n.\r\n");
        assert_eq!(
            (done, out.as_slice(), bare),
            (true, &b"a\r\nb\rc\r\n"[..], true)
        );
    }

    #[test]
    fn nul_and_8bit_and_long_lines_are_content() {
        let mut input = vec![0u8, 0xff, 0x80, b'.'];
        input.resize(input.len() + 100_000, b'z');
        input.extend_from_slice(b"\r\n.\r\n");
        let (_, done, out, _) = feed_all(BareLf::Reject, false, &input);
        assert!(done);
        assert_eq!(out, &input[..input.len() - 3]);
    }

    #[test]
    fn cut_off_message_never_ends() {
        let input = b"a\r\n..\r\nb\r\n.\r";
        assert_split_invariant(BareLf::Normalize, false, input);
        for len in 0..=input.len() {
            assert!(!feed_all(BareLf::Normalize, false, &input[..len]).1);
        }
    }

    /// A plain line-based reference: split into lines, end at the first
    /// "." line between the right endings, drop each line's first dot.
    /// Returns (consumed when ended, content, bare line ending seen).
    fn oracle(input: &[u8], mode: BareLf, lf_session: bool) -> (Option<usize>, Vec<u8>, bool) {
        let normalize = mode == BareLf::Normalize;
        let lf_ends_line = normalize || lf_session;
        let (mut out, mut prev, mut start) = (Vec::new(), "start", 0);
        loop {
            let mut j = start;
            let term = loop {
                if j >= input.len() {
                    break None;
                } else if input[j..].starts_with(b"\r\n") {
                    break Some("crlf");
                } else if input[j] == b'\n' && lf_ends_line {
                    break Some("lf");
                }
                j += 1;
            };
            let line = &input[start..j];
            let body = line.strip_prefix(b".").unwrap_or(line);
            let Some(term) = term else {
                out.extend_from_slice(body);
                return (None, out, has_bare(input));
            };
            let tlen = if term == "crlf" { 2 } else { 1 };
            let ends =
                (term == "crlf" && prev != "lf") || (lf_session && term == "lf" && prev != "crlf");
            if line == b"." && ends {
                return (Some(j + tlen), out, has_bare(&input[..start]));
            }
            out.extend_from_slice(body);
            out.extend_from_slice(if normalize {
                b"\r\n"
            } else {
                &input[j..j + tlen]
            });
            prev = term;
            start = j + tlen;
        }
    }

    /// A LF without a CR before it, or a CR with something other than LF
    /// after it (a final CR is undecided).
    fn has_bare(s: &[u8]) -> bool {
        (0..s.len()).any(|i| {
            (s[i] == b'\n' && (i == 0 || s[i - 1] != b'\r'))
                || (s[i] == b'\r' && i + 1 < s.len() && s[i + 1] != b'\n')
        })
    }

    #[test]
    fn automaton_matches_reference_on_random_inputs() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Bytes of the alphabet {CR, LF, '.', 'a', NUL}, drawn in pieces
        // so that line endings and markers turn up often.
        const PIECES: [&[u8]; 7] = [b"\r", b"\n", b".", b"a", b"\0", b"\r\n", b"\r\n."];
        let mut ended = [0; 4];
        for round in 0..20_000 {
            let pieces = next() % 16;
            let input: Vec<u8> = (0..pieces)
                .flat_map(|_| PIECES[(next() % 7) as usize].iter().copied())
                .collect();
            let len = input.len();
            let (mode, lf) = match round % 4 {
                0 => (BareLf::Reject, false),
                1 => (BareLf::Reject, true),
                2 => (BareLf::Normalize, false),
                _ => (BareLf::Normalize, true),
            };
            let (end, want, want_bare) = oracle(&input, mode, lf);
            let split = (next() as usize) % (len + 1);
            let (a, b) = input.split_at(split);
            let got = feed_pieces(mode, lf, &[a, b]);
            assert_eq!(got, feed_all(mode, lf, &input), "{input:?}");
            let (used, done, out, bare) = got;
            assert_eq!(done, end.is_some(), "{input:?} {mode:?} {lf}");
            assert_eq!(bare, want_bare, "{input:?} {mode:?} {lf}");
            if let Some(end) = end {
                ended[round % 4] += 1;
                assert_eq!((used, &out), (end, &want), "{input:?} {mode:?} {lf}");
            } else {
                // Only a held CR of a line-start ".\r" may be missing.
                assert!(
                    out == want || [&out[..], b"\r"].concat() == want,
                    "{input:?}"
                );
            }
        }
        assert!(ended.iter().all(|&n| n > 100), "too few ended: {ended:?}");
    }

    /// A writer that fails once it holds `room` bytes, counting calls.
    #[derive(Default)]
    struct Failing {
        room: usize,
        held: Vec<u8>,
        calls: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.held.len() + buf.len() > self.room {
                return Err(io::Error::other("disk full"));
            }
            self.held.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn sink_counts_past_the_limit() {
        let mut sink = ContentSink::new(Vec::new(), 10);
        sink.write(b"12345");
        sink.write(b"67890");
        assert!(!sink.oversized(), "exactly the limit fits");
        sink.write(b"x");
        sink.write(b"yz");
        assert!(sink.oversized());
        assert_eq!(sink.size(), 13);
        assert!(sink.take_error().is_none());
        assert_eq!(sink.into_inner(), b"1234567890");
    }

    #[test]
    fn sink_latches_the_first_error() {
        let failing = Failing {
            room: 4,
            ..Failing::default()
        };
        let mut sink = ContentSink::new(failing, 100);
        sink.write(b"abc");
        sink.write(b"def");
        sink.write(b"ghi");
        assert_eq!(sink.size(), 9);
        assert!(!sink.oversized());
        let error = sink.take_error().map(|e| e.to_string());
        assert_eq!(error.as_deref(), Some("disk full"));
        assert!(sink.take_error().is_none());
        sink.write(b"jkl");
        let inner = sink.into_inner();
        assert_eq!((inner.held.as_slice(), inner.calls), (&b"abc"[..], 2));
    }

    #[test]
    fn sink_counts_received_headers_across_writes() {
        let content: &[u8] = b"Received: a\r\nreceived:b\r\n\tReceived: folded\r\n\
            X-Received: c\r\nReceivedX: d\r\nRECEIVED: e\nReceived\r\n\r\n\
            Received: in the body\r\n";
        let count = |pieces: &[&[u8]]| {
            let mut sink = ContentSink::new(Vec::new(), 1000);
            for p in pieces {
                sink.write(p);
            }
            sink.received_headers()
        };
        assert_eq!(count(&[content]), 3);
        let bytes: Vec<&[u8]> = content.chunks(1).collect();
        assert_eq!(count(&bytes), 3);
        for at in 0..=content.len() {
            let (a, b) = content.split_at(at);
            assert_eq!(count(&[a, b]), 3, "split at {at}");
        }
        // An empty first line: no header section at all.
        assert_eq!(count(&[b"\nReceived: x\r\n"]), 0);
        assert_eq!(count(&[b"Subject: x\r\nReceived:"]), 1);
    }

    #[test]
    fn read_data_leaves_the_pipelined_rest() {
        let input: &[u8] = b"Subject: a\r\n\r\n..b\r\nc\r\n.\r\nQUIT\r\n";
        let mut r = BufReader::with_capacity(3, input);
        let mut reader = DataReader::new(BareLf::Normalize, false);
        let mut sink = ContentSink::new(Vec::new(), 1000);
        let end = read_data(&mut r, &mut reader, &mut sink).unwrap();
        assert_eq!(end, DataEnd::Complete);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"QUIT\r\n");
        assert_eq!(sink.size(), 21);
        assert_eq!(sink.into_inner(), b"Subject: a\r\n\r\n.b\r\nc\r\n");
    }

    #[test]
    fn read_data_reports_eof_and_errors() {
        let mut r = BufReader::with_capacity(3, &b"a\r\n.\r"[..]);
        let mut reader = DataReader::new(BareLf::Normalize, false);
        let mut sink = ContentSink::new(Vec::new(), 1000);
        let end = read_data(&mut r, &mut reader, &mut sink).unwrap();
        assert_eq!(end, DataEnd::Eof);

        struct TimedOut;
        impl Read for TimedOut {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::TimedOut.into())
            }
        }
        let mut r = BufReader::new(TimedOut);
        let err = read_data(&mut r, &mut reader, &mut sink).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn read_bdat_copies_exactly() {
        let mut r = BufReader::with_capacity(3, &b"a\n.\r\n..bcNEXT"[..]);
        let mut sink = ContentSink::new(Vec::new(), 1000);
        assert_eq!(read_bdat(&mut r, 9, &mut sink).unwrap(), DataEnd::Complete);
        assert_eq!(read_bdat(&mut r, 0, &mut sink).unwrap(), DataEnd::Complete);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"NEXT");
        assert_eq!(sink.into_inner(), b"a\n.\r\n..bc");
    }

    #[test]
    fn read_bdat_reports_early_eof() {
        let mut r = BufReader::with_capacity(3, &b"short"[..]);
        let mut sink = ContentSink::new(Vec::new(), 1000);
        assert_eq!(read_bdat(&mut r, 20, &mut sink).unwrap(), DataEnd::Eof);
        assert_eq!(sink.size(), 5);
    }
}
