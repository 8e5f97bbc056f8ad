//! What a listener is: an address and the mode spoken there (SPEC §2
//! `--listen ADDR:PORT/MODE`). Below config, routing and the start modes,
//! which all name it.

use std::fmt;
use std::net::SocketAddr;

/// What a listener speaks (SPEC §2 `--listen ADDR:PORT/MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plain SMTP; STARTTLS offered when a certificate is configured.
    Smtp,
    /// STARTTLS and AUTH required before MAIL.
    Submission,
    /// Implicit TLS from the first byte (port 465 style).
    Tls,
}

/// One `listen` entry: where to bind and what to speak there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    pub mode: Mode,
}

impl Mode {
    /// The mode named `name` in a listen spec or a socket name.
    pub fn parse(name: &str) -> Option<Mode> {
        match name {
            "smtp" => Some(Mode::Smtp),
            "submission" => Some(Mode::Submission),
            "tls" => Some(Mode::Tls),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Smtp => "smtp",
            Mode::Submission => "submission",
            Mode::Tls => "tls",
        })
    }
}

/// `127.0.0.1:25/smtp`, `[::1]:587/submission`: the spec syntax.
impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.mode)
    }
}
