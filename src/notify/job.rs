//! One run of the `notify` program (SPEC §7a): no shell, a clean
//! environment, the stored message on stdin, its first output lines and
//! its exit status logged under the message ID, `notify_timeout` and then
//! SIGTERM, and SIGKILL 5 s later, to its whole process group.

use std::ffi::c_int;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use super::notifier::Job;
use super::{subject, Settings};

/// Lines of a program's output that are logged; the rest are counted.
pub const MAX_LINES: usize = 10;
/// Bytes of one output line that are logged.
pub const MAX_LINE: usize = 200;
/// From SIGTERM to SIGKILL.
pub const KILL_AFTER: Duration = Duration::from_secs(5);
/// The PATH a program gets when the notifier has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const SIGTERM: c_int = 15;
const SIGKILL: c_int = 9;

extern "C" {
    fn kill(pid: c_int, signal: c_int) -> c_int;
    fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
}

/// Runs `job` with `settings.program` and logs what came of it.
pub(super) fn run(settings: &Settings, job: Job) {
    let Some(program) = &settings.program else {
        return;
    };
    let Job {
        notice,
        file,
        suppressed,
    } = job;
    let id = notice.id.as_str();
    let subject = subject::of(&file);
    let (out_r, out_w) = match pipe() {
        Ok(p) => p,
        Err(e) => {
            log::warn!("notify {id}: cannot make a pipe: {e}");
            return;
        }
    };
    let err_w = match out_w.try_clone() {
        Ok(w) => w,
        Err(e) => {
            log::warn!("notify {id}: cannot make a pipe: {e}");
            return;
        }
    };
    let mut command = Command::new(&program[0]);
    command
        .args(&program[1..])
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        )
        .env(
            "LANG",
            std::env::var_os("LANG").unwrap_or_else(|| "C.UTF-8".into()),
        )
        .env("SMTPBOX_FILE", &notice.file)
        .env("SMTPBOX_MAILDIR", &notice.maildir)
        .env("SMTPBOX_ID", &notice.id)
        .env("SMTPBOX_SENDER", &notice.sender)
        .env("SMTPBOX_RECIPIENTS", &notice.recipients)
        .env("SMTPBOX_SUBJECT", &subject)
        .env("SMTPBOX_SIZE", notice.size.to_string())
        .env("SMTPBOX_CLIENT", &notice.client)
        .env("SMTPBOX_SUPPRESSED", suppressed.to_string())
        .stdin(Stdio::from(file))
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            log::warn!("notify {id}: cannot run {}: {e}", program[0]);
            return;
        }
    };
    // Our copies of the write ends went with `command`.
    drop(command);
    let (done_tx, done_rx) = mpsc::channel();
    let reader_id = id.to_string();
    let reader = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
        log_output(&reader_id, out_r);
        let _ = done_tx.send(());
    });
    let pid = child.id() as c_int;
    let finished = (Mutex::new(false), Condvar::new());
    let status = thread::scope(|s| {
        s.spawn(|| watchdog(id, pid, settings.timeout, &finished));
        let status = child.wait();
        *finished.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        finished.1.notify_all();
        status
    });
    // Its output is logged before its status; a descendant that keeps
    // the pipe open does not hold the worker.
    if reader.is_ok() {
        let _ = done_rx.recv_timeout(Duration::from_secs(1));
    }
    match status {
        Ok(status) => log_status(id, &status),
        Err(e) => log::warn!("notify {id}: cannot wait for the program: {e}"),
    }
}

/// Waits for the program to finish; past `timeout` signals its group.
fn watchdog(id: &str, pid: c_int, timeout: Duration, finished: &(Mutex<bool>, Condvar)) {
    let (lock, cond) = finished;
    let wait = |limit| {
        let done = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (done, _) = cond
            .wait_timeout_while(done, limit, |done| !*done)
            .unwrap_or_else(|p| p.into_inner());
        *done
    };
    if wait(timeout) {
        return;
    }
    log::warn!(
        "notify {id}: still running after {} s: SIGTERM to its process group",
        timeout.as_secs()
    );
    // SAFETY: signals the group we made for the program.
    unsafe { kill(-pid, SIGTERM) };
    if wait(KILL_AFTER) {
        return;
    }
    log::warn!("notify {id}: SIGKILL to its process group");
    // SAFETY: as above.
    unsafe { kill(-pid, SIGKILL) };
}

fn log_status(id: &str, status: &ExitStatus) {
    match (status.code(), status.signal()) {
        (Some(0), _) => log::info!("notify {id}: exit 0"),
        (Some(code), _) => log::warn!("notify {id}: exit {code}"),
        (None, Some(signal)) => log::warn!("notify {id}: killed by signal {signal}"),
        (None, None) => log::warn!("notify {id}: ended ({status})"),
    }
}

/// Logs the first [`MAX_LINES`] lines (each cut at [`MAX_LINE`] bytes) and
/// counts the rest; reads in a fixed buffer, whatever the program writes.
fn log_output(id: &str, pipe: OwnedFd) {
    let mut pipe = File::from(pipe);
    let mut buf = [0u8; 4096];
    let mut line = Vec::with_capacity(MAX_LINE);
    let mut logged = 0;
    let mut more = 0u64;
    let mut emit = |line: &mut Vec<u8>| {
        if logged < MAX_LINES {
            log::info!("notify {id}: {}", printable(line));
            logged += 1;
        } else {
            more += 1;
        }
        line.clear();
    };
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&mut line);
            } else if line.len() < MAX_LINE {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line);
    }
    if more > 0 {
        log::info!("notify {id}: {more} more lines not logged");
    }
}

/// A line as it may go into the log: UTF-8, no control characters.
fn printable(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim_end()
        .to_string()
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { pipe2(fds.as_mut_ptr(), crate::sys::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_are_made_printable() {
        assert_eq!(printable(b"ok\r"), "ok");
        assert_eq!(printable(b"a\x1b[31mb\x07"), "a [31mb");
        assert_eq!(printable(b"\xff x"), "\u{fffd} x");
    }
}
