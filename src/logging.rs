//! Log set-up (SPEC §9): env_logger on stderr, level from `RUST_LOG`.
//!
//! Two exceptions, where lines go to syslog (`/dev/log`, facility mail,
//! each line with its own severity: error, warning, info, debug):
//! - classic inetd, xinetd and busybox inetd put the client's socket on
//!   stderr too. Logging there would send log lines to the SMTP client, so
//!   they go to syslog, or nowhere when there is no syslog;
//! - `SMTPBOX_LOG=syslog` in the environment asks for syslog in every
//!   mode: OpenWrt's procd logs all of a service's stderr at one priority
//!   (`daemon.err`), so `etc/smtpbox.init` sets it. Without a syslog the
//!   lines stay on stderr.

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;

/// The environment variable that sends log lines to syslog.
pub const LOG_TARGET_ENV: &str = "SMTPBOX_LOG";

/// Starts the logger. `default_level` applies when `RUST_LOG` is unset;
/// `guard_stderr` is set in modes where stderr may be the client's socket.
pub fn init(default_level: &str, guard_stderr: bool) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    let stderr_is_client = guard_stderr && stderr_is_socket();
    let asked = std::env::var_os(LOG_TARGET_ENV).is_some_and(|v| v == "syslog");
    if stderr_is_client || asked {
        let target: Option<Box<dyn Write + Send>> = match Syslog::connect() {
            Ok(syslog) => Some(Box::new(syslog)),
            Err(_) if stderr_is_client => Some(Box::new(io::sink())),
            // Asked for, but there is none: stderr loses nothing.
            Err(_) => None,
        };
        if let Some(target) = target {
            builder.target(env_logger::Target::Pipe(target));
            builder.format(|buf, record| {
                writeln!(buf, "<{}>{}", priority(record.level()), record.args())
            });
        }
    }
    let logger = Demoting {
        inner: builder.build(),
    };
    log::set_max_level(logger.inner.filter());
    // Fails only when a logger is already set (a second init): keep that one.
    let _ = log::set_boxed_logger(Box::new(logger));
}

/// A record's syslog priority: facility mail (2) times 8 plus the
/// severity of its level (RFC 5424 §6.2.1).
fn priority(level: log::Level) -> u8 {
    let severity = match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    };
    2 * 8 + severity
}

/// Where records go instead of the logger's target, once
/// [`detach_to_syslog`] has set it.
static DETACHED: std::sync::OnceLock<std::sync::Mutex<Syslog>> = std::sync::OnceLock::new();

/// A process that leaves its caller (sendmail mode's notifier, which
/// outlives the command cron waits for) logs to syslog from now on, or
/// nowhere when there is none; its stderr is the caller's to close.
pub fn detach_to_syslog() -> bool {
    match Syslog::connect() {
        Ok(syslog) => DETACHED.set(std::sync::Mutex::new(syslog)).is_ok(),
        Err(_) => false,
    }
}

/// Whether stderr is the client's socket (classic inetd): a child that
/// must not hold the connection open gives it up.
pub fn stderr_is_client_socket() -> bool {
    stderr_is_socket()
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
        if let Some(syslog) = DETACHED.get() {
            if self.inner.enabled(record.metadata()) {
                to_syslog(syslog, record);
            }
            return;
        }
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

/// A detached process's record, to syslog. A call of its own, so that
/// it does not grow the frame of every log call (the session threads'
/// stacks, README row 5).
#[cold]
#[inline(never)]
fn to_syslog(syslog: &std::sync::Mutex<Syslog>, record: &log::Record<'_>) {
    let mut syslog = syslog.lock().unwrap_or_else(|p| p.into_inner());
    let _ = writeln!(syslog, "<{}>{}", priority(record.level()), record.args());
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

/// A syslog writer: each log line becomes one datagram on `/dev/log`
/// (RFC 3164 framing, `<PRI>smtpbox[PID]: TEXT`, as busybox syslogd,
/// OpenWrt's logd and journald read it). A line the format began with
/// `<PRI>` sets the priority; the other lines of a record (a message
/// with newlines) keep it.
struct Syslog {
    socket: UnixDatagram,
    line: Vec<u8>,
    priority: u8,
}

impl Syslog {
    fn connect() -> io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        socket.connect("/dev/log")?;
        Ok(Syslog::on(socket))
    }

    fn on(socket: UnixDatagram) -> Syslog {
        Syslog {
            socket,
            line: Vec::new(),
            priority: priority(log::Level::Info),
        }
    }
}

/// `<N>` at the start of `line`: N and the rest.
fn split_priority(line: &[u8]) -> Option<(u8, &[u8])> {
    let rest = line.strip_prefix(b"<")?;
    let end = rest.iter().position(|&b| b == b'>')?;
    let n = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((n, &rest[end + 1..]))
}

impl Write for Syslog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        while let Some(end) = self.line.iter().position(|&b| b == b'\n') {
            let line = &self.line[..end];
            let text = match split_priority(line) {
                Some((priority, text)) => {
                    self.priority = priority;
                    text
                }
                None => line,
            };
            let mut datagram =
                format!("<{}>smtpbox[{}]: ", self.priority, std::process::id()).into_bytes();
            datagram.extend_from_slice(text);
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

    /// Each line its own datagram, with its record's severity; the lines
    /// of a record with newlines keep it.
    #[test]
    fn syslog_lines_keep_their_priority() {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let mut syslog = Syslog::on(ours);
        for level in [log::Level::Error, log::Level::Warn, log::Level::Info] {
            writeln!(syslog, "<{}>{level} line", priority(level)).unwrap();
        }
        syslog.write_all(b"<23>debug one\nand two\n").unwrap();
        let pid = std::process::id();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        for _ in 0..5 {
            let n = theirs.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(
            got,
            [
                format!("<19>smtpbox[{pid}]: ERROR line"),
                format!("<20>smtpbox[{pid}]: WARN line"),
                format!("<22>smtpbox[{pid}]: INFO line"),
                format!("<23>smtpbox[{pid}]: debug one"),
                format!("<23>smtpbox[{pid}]: and two"),
            ]
        );
        assert_eq!(priority(log::Level::Trace), 23);
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
