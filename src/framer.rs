//! The command-line framer (SPEC §5): bytes in, one command line out.
//!
//! Sans-IO, like the DATA automaton: [`Framer::push`] takes the bytes the
//! reader has buffered and says how many it used and whether they completed
//! a line (`try_request(&[u8]) -> (used, Option<Request>)` in ureq-proto's
//! terms). A line that is whole in the input comes back as a slice of it,
//! without a copy; a line split across reads is assembled here, never past
//! the cap. A line over [`MAX_LINE`] bytes is skipped to its LF without
//! being kept and reported once, as [`Frame::TooLong`].
//!
//! ```text
//!   Start ──LF─────────────────────► Line (a slice of the input)
//!     │ bytes, no LF
//!     ▼
//!   Partial ──LF, within the cap───► Line (assembled in the framer)
//!     │ more bytes, over the cap (what was kept is dropped)
//!     ▼
//!   Skipping ──LF──────────────────► TooLong
//! ```
//!
//! After a frame the framer is back at Start. A line that is over the cap
//! when its LF comes is `TooLong` whichever way it got there.
//!
//! LF ends a line; one CR before it is part of the line ending (`crlf`).
//! A NUL anywhere in the line is flagged, not removed (SPEC §5: the session
//! answers `500 5.5.2`). Bytes after the last LF stay with the framer, so
//! the caller may drop its buffer after each push.

/// Longest command line accepted, line ending excluded (SPEC §5).
pub const MAX_LINE: usize = 2048;

/// What one push completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A command line of at most [`MAX_LINE`] bytes.
    Line(Line<'a>),
    /// A line over [`MAX_LINE`] bytes ended; its bytes were dropped.
    TooLong,
}

/// One command line, without its line ending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub text: &'a [u8],
    /// It ended in CRLF, not in a bare LF (SPEC §6: the LF-only session).
    pub crlf: bool,
    /// It holds a NUL byte.
    pub nul: bool,
}

impl<'a> Line<'a> {
    /// A line given whole, e.g. by a test or a caller that framed it itself:
    /// `crlf` as the caller says, `nul` found here.
    pub fn new(text: &'a [u8], crlf: bool) -> Line<'a> {
        Line {
            text,
            crlf,
            nul: text.contains(&0),
        }
    }
}

/// The framer's state between pushes: the start of a line that the input
/// ended in the middle of.
#[derive(Debug, Default)]
pub struct Framer {
    /// The line so far, when it began in an earlier push; at most
    /// `MAX_LINE + 1` bytes (room for the CR of the line ending).
    partial: Vec<u8>,
    /// `partial` holds the line returned by the last push: clear it first.
    returned: bool,
    /// The line so far is over the cap: drop everything up to its LF.
    skipping: bool,
}

impl Framer {
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Takes the next bytes from the client. Returns how many of `input`
    /// were used (through the LF when a line ended, else all of it) and the
    /// line they completed, if any. Bytes after that LF are not looked at:
    /// push them again.
    pub fn push<'a>(&'a mut self, input: &'a [u8]) -> (usize, Option<Frame<'a>>) {
        if self.returned {
            self.partial.clear();
            self.returned = false;
        }
        let Some(lf) = input.iter().position(|&b| b == b'\n') else {
            self.keep(input);
            return (input.len(), None);
        };
        let used = lf + 1;
        let head = &input[..lf];
        if self.skipping {
            self.skipping = false;
            return (used, Some(Frame::TooLong));
        }
        let whole = if self.partial.is_empty() {
            head
        } else {
            self.keep(head);
            if self.skipping {
                self.skipping = false;
                return (used, Some(Frame::TooLong));
            }
            self.returned = true;
            &self.partial
        };
        let (text, crlf) = match whole.strip_suffix(b"\r") {
            Some(text) => (text, true),
            None => (whole, false),
        };
        if text.len() > MAX_LINE {
            return (used, Some(Frame::TooLong));
        }
        (used, Some(Frame::Line(Line::new(text, crlf))))
    }

    /// True while a line has begun and not ended: the client is still
    /// sending it (so its replies so far may wait, RFC 2920).
    pub fn mid_line(&self) -> bool {
        self.skipping || (!self.returned && !self.partial.is_empty())
    }

    /// Adds the bytes of an unfinished line, or starts skipping it when
    /// they would take it over the cap.
    fn keep(&mut self, bytes: &[u8]) {
        if self.skipping {
            return;
        }
        if self.partial.len() + bytes.len() <= MAX_LINE + 1 {
            self.partial.extend_from_slice(bytes);
        } else {
            self.skipping = true;
            self.partial = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame, owned: the text, the CRLF and the NUL flags.
    #[derive(Debug, PartialEq)]
    enum Got {
        Line(Vec<u8>, bool, bool),
        TooLong,
    }
    use Got::TooLong;

    /// Every frame of `input`, pushed in pieces of `piece` bytes as a
    /// reader with that buffer size would, and whether the framer is left
    /// mid-line.
    fn frames(input: &[u8], piece: usize) -> (Vec<Got>, bool) {
        let mut framer = Framer::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let (used, frame) = framer.push(rest);
                assert!(used > 0 && used <= rest.len());
                match frame {
                    Some(Frame::Line(l)) => out.push(Got::Line(l.text.to_vec(), l.crlf, l.nul)),
                    Some(Frame::TooLong) => out.push(TooLong),
                    None => assert_eq!(used, rest.len(), "stopped without a line"),
                }
                rest = &rest[used..];
            }
        }
        (out, framer.mid_line())
    }

    fn line(text: &[u8], crlf: bool) -> Got {
        Got::Line(text.to_vec(), crlf, text.contains(&0))
    }

    #[test]
    fn lines_end_at_lf_and_one_cr_before_it_is_the_crlf() {
        for piece in [1, 2, 3, 7, 512, 4096] {
            let (got, mid) = frames(b"EHLO a\r\nNOOP\n\r\n\nx\r\r\nQUIT", piece);
            let want = vec![
                line(b"EHLO a", true),
                line(b"NOOP", false),
                line(b"", true),
                line(b"", false),
                line(b"x\r", true),
            ];
            assert_eq!(got, want, "pieces of {piece}");
            assert!(mid, "QUIT without its line ending is still being sent");
        }
    }

    #[test]
    fn nul_is_flagged_and_kept() {
        let (got, _) = frames(b"NO\0OP\r\nNOOP\r\n", 3);
        assert_eq!(
            got,
            [
                Got::Line(b"NO\0OP".to_vec(), true, true),
                line(b"NOOP", true)
            ]
        );
    }

    #[test]
    fn the_cap_is_2048_bytes_without_the_line_ending() {
        let fits = [vec![b'a'; MAX_LINE], b"\r\n".to_vec()].concat();
        let over = [vec![b'a'; MAX_LINE + 1], b"\r\n".to_vec()].concat();
        let over_lf = [vec![b'a'; MAX_LINE + 1], b"\n".to_vec()].concat();
        for piece in [1, 100, 512, 2049, 2050, 5000] {
            let (got, _) = frames(&[&fits[..], &over, &over_lf, b"NOOP\r\n"].concat(), piece);
            assert_eq!(
                got,
                [
                    line(&fits[..MAX_LINE], true),
                    TooLong,
                    TooLong,
                    line(b"NOOP", true)
                ],
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn overlong_line_is_reported_once_and_never_buffered() {
        let mut framer = Framer::new();
        let junk = [b'X'; 1000];
        for _ in 0..100 {
            assert_eq!(framer.push(&junk), (1000, None));
            assert!(framer.partial.capacity() <= 2 * (MAX_LINE + 1));
            assert!(framer.mid_line());
        }
        assert_eq!(framer.partial.capacity(), 0, "dropped once over the cap");
        assert_eq!(framer.push(b"XX\r\nNOOP\r\n"), (4, Some(Frame::TooLong)));
        assert!(!framer.mid_line());
        let (used, frame) = framer.push(b"NOOP\r\n");
        assert_eq!(
            (used, frame),
            (6, Some(Frame::Line(Line::new(b"NOOP", true))))
        );
    }

    #[test]
    fn a_line_whole_in_the_input_is_not_copied() {
        let mut framer = Framer::new();
        let input = b"NOOP\r\nRSET\r\n";
        let (used, frame) = framer.push(input);
        let Some(Frame::Line(line)) = frame else {
            panic!("{frame:?}");
        };
        assert_eq!((used, line.text.as_ptr()), (6, input.as_ptr()));
    }

    #[test]
    fn a_split_line_is_assembled_then_forgotten() {
        let mut framer = Framer::new();
        assert_eq!(framer.push(b"RCPT TO:<a@exa"), (14, None));
        assert!(framer.mid_line());
        let (used, frame) = framer.push(b"mple.com>\r\nNO");
        assert_eq!(used, 11);
        assert_eq!(
            frame,
            Some(Frame::Line(Line::new(b"RCPT TO:<a@example.com>", true)))
        );
        assert!(!framer.mid_line());
        assert_eq!(framer.push(b"NO"), (2, None));
        let (_, frame) = framer.push(b"OP\n");
        assert_eq!(frame, Some(Frame::Line(Line::new(b"NOOP", false))));
        assert_eq!(framer.push(b""), (0, None));
        assert!(!framer.mid_line());
    }

    #[test]
    fn a_cr_split_from_its_lf_still_makes_a_crlf() {
        let (got, _) = frames(b"NOOP\r\n", 5);
        assert_eq!(got, [line(b"NOOP", true)]);
        // The CR that takes a line of 2048 over the cap in the first read
        // but is the line ending's in the second.
        let input = [vec![b'a'; MAX_LINE], b"\r\n".to_vec()].concat();
        let (got, _) = frames(&input, MAX_LINE + 1);
        assert_eq!(got, [line(&input[..MAX_LINE], true)]);
    }

    /// Random streams over {a, CR, LF, NUL} with long runs, cut at random:
    /// the frames are those of splitting at each LF (what the fuzz target
    /// checks at length; this runs under plain `cargo test`).
    #[test]
    fn random_streams_agree_with_splitting_at_lf() {
        let mut state: u32 = 0x9e37_79b9;
        let mut next = move |n: u32| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % n) as usize
        };
        for _ in 0..300 {
            let mut input = Vec::new();
            while input.len() < 6000 {
                let byte = [b'a', b'\r', b'\n', 0][next(4)];
                let run = if next(8) == 0 { 1 + next(2100) } else { 1 };
                input.extend(std::iter::repeat_n(byte, run));
            }
            let mut want: Vec<Got> = Vec::new();
            let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
            let tail = parts.pop().unwrap_or_default();
            for part in parts {
                let (text, crlf) = match part.strip_suffix(b"\r") {
                    Some(text) => (text, true),
                    None => (part, false),
                };
                want.push(if text.len() > MAX_LINE {
                    TooLong
                } else {
                    line(text, crlf)
                });
            }
            let piece = 1 + next(3000);
            let (got, mid) = frames(&input, piece);
            assert_eq!(got, want, "pieces of {piece}");
            assert_eq!(mid, !tail.is_empty());
        }
    }
}
