//! Log set-up (SPEC §9): env_logger on stderr, level from `RUST_LOG`.
//!
//! One exception: classic inetd, xinetd and busybox inetd put the client's
//! socket on stderr too. Logging there would send log lines to the SMTP
//! client, so in that case lines go to syslog (`/dev/log`), or nowhere when
//! there is no syslog.

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;

/// Starts the logger. `default_level` applies when `RUST_LOG` is unset;
/// `guard_stderr` is set in modes where stderr may be the client's socket.
pub fn init(default_level: &str, guard_stderr: bool) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    if guard_stderr && stderr_is_socket() {
        let target: Box<dyn Write + Send> = match Syslog::connect() {
            Ok(syslog) => Box::new(syslog),
            Err(_) => Box::new(io::sink()),
        };
        builder.target(env_logger::Target::Pipe(target));
        builder.format(|buf, record| writeln!(buf, "{}: {}", record.level(), record.args()));
    }
    let logger = Demoting {
        inner: builder.build(),
    };
    log::set_max_level(logger.inner.filter());
    // Fails only when a logger is already set (a second init): keep that one.
    let _ = log::set_boxed_logger(Box::new(logger));
}

/// rustls warns for every client that sends an IP address as SNI, which
/// RFC 6066 §3 forbids but many SMTP clients do when they connect by
/// address: noise, not an event. Those records are logged at debug level;
/// everything else passes through unchanged.
struct Demoting {
    inner: env_logger::Logger,
}

impl log::Log for Demoting {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !is_sni_ip_warning(record) {
            self.inner.log(record);
            return;
        }
        let demoted = log::Record::builder()
            .args(*record.args())
            .level(log::Level::Debug)
            .target(record.target())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        self.inner.log(&demoted);
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// rustls's "Illegal SNI extension: ignoring IP address presented as
/// hostname" warning (rustls::msgs::handshake).
fn is_sni_ip_warning(record: &log::Record<'_>) -> bool {
    record.level() == log::Level::Warn
        && record.target().starts_with("rustls")
        && record
            .args()
            .to_string()
            .starts_with("Illegal SNI extension: ignoring IP address")
}

/// True when fd 2 is a socket (inetd's connection), not a tty, pipe or file.
fn stderr_is_socket() -> bool {
    // SAFETY: fd 2 is borrowed for one fstat and never closed here.
    let stderr = ManuallyDrop::new(unsafe { File::from_raw_fd(2) });
    stderr.metadata().is_ok_and(|m| m.file_type().is_socket())
}

/// A syslog writer: each log line becomes one datagram on `/dev/log`,
/// facility mail (RFC 3164 framing, as busybox syslogd and journald read it).
struct Syslog {
    socket: UnixDatagram,
    line: Vec<u8>,
}

impl Syslog {
    fn connect() -> io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        socket.connect("/dev/log")?;
        Ok(Syslog {
            socket,
            line: Vec::new(),
        })
    }
}

impl Write for Syslog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        while let Some(end) = self.line.iter().position(|&b| b == b'\n') {
            // <22>: facility mail (2) * 8 + severity info (6).
            let mut datagram = format!("<22>smtpbox[{}]: ", std::process::id()).into_bytes();
            datagram.extend_from_slice(&self.line[..end]);
            let _ = self.socket.send(&datagram);
            self.line.drain(..=end);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(level: log::Level, target: &'a str, args: std::fmt::Arguments<'a>) -> bool {
        is_sni_ip_warning(
            &log::Record::builder()
                .level(level)
                .target(target)
                .args(args)
                .build(),
        )
    }

    #[test]
    fn only_rustls_sni_ip_warning_is_demoted() {
        let ip = "192.0.2.1";
        let text = "Illegal SNI extension: ignoring IP address presented as hostname";
        let target = "rustls::msgs::handshake";
        assert!(record(
            log::Level::Warn,
            target,
            format_args!("{text} ({ip})")
        ));
        assert!(!record(
            log::Level::Warn,
            "smtpbox::conn",
            format_args!("{text}")
        ));
        assert!(!record(log::Level::Error, target, format_args!("{text}")));
        let duplicate = "Illegal SNI extension: duplicate host_name received";
        assert!(!record(
            log::Level::Warn,
            target,
            format_args!("{duplicate}")
        ));
    }
}
