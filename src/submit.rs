//! The SMTP client sendmail mode speaks on the local submission socket
//! (SPEC §8, OpenSMTPD's model): the running server writes the message, so
//! every file in every Maildir belongs to the server's account, whoever
//! called sendmail. One transaction: EHLO, MAIL, RCPT per recipient, DATA
//! with the content dot-stuffed (RFC 5321 §4.5.2), QUIT.
//!
//! The server is smtpbox itself, but the socket is still input: replies are
//! read with a cap on line length and on the number of lines.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A reply line longer than this is not from smtpbox.
const MAX_REPLY_LINE: usize = 4096;
/// Lines of one multi-line reply (EHLO's is about ten).
const MAX_REPLY_LINES: usize = 64;

/// The server's final reply to a command: `554 5.4.6 Too many …`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerReply {
    pub code: u16,
    /// The last line after the code: enhanced code and text.
    pub text: String,
}

impl ServerReply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl std::fmt::Display for ServerReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// An open session with the server, greeted.
pub struct Submission {
    reader: BufReader<UnixStream>,
}

impl Submission {
    /// Connects to `path` and reads the greeting. Fails when nothing
    /// listens there or the server does not greet with 220 (too busy):
    /// then nothing has been sent and the caller may deliver otherwise.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Submission, String> {
        let stream = UnixStream::connect(path).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| e.to_string())?;
        let mut submission = Submission {
            reader: BufReader::new(stream),
        };
        match submission.reply() {
            Ok(greeting) if greeting.code == 220 => Ok(submission),
            Ok(other) => Err(format!("the server said {other}")),
            Err(e) => Err(format!("no greeting: {e}")),
        }
    }

    /// Sends one command line and reads its reply.
    pub fn command(&mut self, line: &str) -> io::Result<ServerReply> {
        let stream = self.reader.get_mut();
        stream.write_all(line.as_bytes())?;
        stream.write_all(b"\r\n")?;
        self.reply()
    }

    /// After a 354: the writer for the content, which dot-stuffs it. End
    /// it with [`DotStuffer::finish`], then read [`Submission::data_reply`].
    pub fn content(&self) -> DotStuffer<&UnixStream> {
        DotStuffer::new(self.reader.get_ref())
    }

    /// The reply to the end of the content.
    pub fn data_reply(&mut self) -> io::Result<ServerReply> {
        self.reply()
    }

    /// QUIT; the reply does not matter any more.
    pub fn quit(mut self) {
        let _ = self.command("QUIT");
    }

    /// Reads one reply, multi-line or not (RFC 5321 §4.2.1).
    fn reply(&mut self) -> io::Result<ServerReply> {
        for _ in 0..MAX_REPLY_LINES {
            let line = self.line()?;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            let code = text
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| bad_reply(text))?;
            match text.as_bytes().get(3) {
                Some(b'-') => continue,
                Some(b' ') | None => {
                    return Ok(ServerReply {
                        code,
                        text: text.get(4..).unwrap_or("").to_string(),
                    })
                }
                Some(_) => return Err(bad_reply(text)),
            }
        }
        Err(io::Error::other("reply of too many lines"))
    }

    /// One reply line, without the CRLF, at most MAX_REPLY_LINE bytes.
    fn line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let (used, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(lf) => (lf + 1, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..used]);
            self.reader.consume(used);
            if line.len() > MAX_REPLY_LINE {
                return Err(io::Error::other("reply line too long"));
            }
            if done {
                return Ok(line);
            }
        }
    }
}

fn bad_reply(text: &str) -> io::Error {
    let shown: String = text.chars().take(80).collect();
    io::Error::other(format!("not an SMTP reply: {shown:?}"))
}

/// Writes CRLF-terminated content for DATA: a line that starts with `.`
/// gets one more (RFC 5321 §4.5.2), so only the end marker ends it.
pub struct DotStuffer<W: Write> {
    inner: io::BufWriter<W>,
    /// The next byte starts a line.
    line_start: bool,
}

impl<W: Write> DotStuffer<W> {
    fn new(inner: W) -> DotStuffer<W> {
        DotStuffer {
            inner: io::BufWriter::with_capacity(16 * 1024, inner),
            line_start: true,
        }
    }

    /// Completes an unterminated last line, writes `.` CRLF and flushes.
    pub fn finish(mut self) -> io::Result<()> {
        if !self.line_start {
            self.inner.write_all(b"\r\n")?;
        }
        self.inner.write_all(b".\r\n")?;
        self.inner.flush()
    }
}

impl<W: Write> Write for DotStuffer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.line_start && rest[0] == b'.' {
                self.inner.write_all(b".")?;
            }
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |lf| lf + 1);
            self.inner.write_all(&rest[..end])?;
            self.line_start = rest[end - 1] == b'\n';
            rest = &rest[end..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = DotStuffer::new(&mut out);
        for p in pieces {
            w.write_all(p).unwrap();
        }
        w.finish().unwrap();
        out
    }

    #[test]
    fn dot_lines_are_stuffed_across_writes() {
        assert_eq!(
            stuffed(&[b".\r\n", b"a.b\r\n..x\r\n"]),
            b"..\r\na.b\r\n...x\r\n.\r\n"
        );
        assert_eq!(stuffed(&[b"a\r\n", b".", b"b\r\n"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(stuffed(&[b"x\r", b"\n.y"]), b"x\r\n..y\r\n.\r\n");
        assert_eq!(stuffed(&[]), b".\r\n");
    }

    #[test]
    fn replies_multi_line_and_bounded() {
        let (client, mut server) = UnixStream::pair().unwrap();
        server
            .write_all(b"220 mx ESMTP\r\n250-mx\r\n250-SIZE 1\r\n250 HELP\r\nbogus\r\n")
            .unwrap();
        let mut s = Submission {
            reader: BufReader::new(client),
        };
        assert_eq!(s.reply().unwrap().code, 220);
        let ehlo = s.reply().unwrap();
        assert_eq!((ehlo.code, ehlo.text.as_str()), (250, "HELP"));
        assert!(s.reply().is_err(), "not a reply");
        server.write_all(&[b'x'; MAX_REPLY_LINE + 10]).unwrap();
        assert!(s.reply().is_err(), "too long");
        drop(server);
    }
}
