//! One run of the `notify` program (SPEC §7a): no shell, a clean
//! environment, the stored message on stdin, its first output lines and
//! its exit status logged under the message ID, `notify_timeout` and then
//! SIGTERM, and SIGKILL 5 s later, to its whole process group. Started
//! with fork and execve of its own, not std's `Command`: what it needs is
//! a few lines, and `Command` cost the appliance build 40 KB (issue #26).

use std::ffi::{c_char, c_int, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use super::notifier::Job;
use super::process::{
    _exit, dup2, execve, fork, kill, pipe, setpgid, wait, write, Status, SIGKILL, SIGTERM,
};
use super::{subject, Settings};

/// Lines of a program's output that are logged; the rest are counted.
pub const MAX_LINES: usize = 10;
/// Bytes of one output line that are logged.
pub const MAX_LINE: usize = 200;
/// From SIGTERM to SIGKILL.
pub const KILL_AFTER: Duration = Duration::from_secs(5);
/// The PATH a program gets when the notifier has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
    let path_var = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
    let lang = std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into());
    let (size, suppressed) = (notice.size.to_string(), suppressed.to_string());
    let env = [
        ("PATH", path_var.as_str()),
        ("LANG", lang.as_str()),
        ("SMTPBOX_FILE", notice.file.as_str()),
        ("SMTPBOX_MAILDIR", notice.maildir.as_str()),
        ("SMTPBOX_ID", id),
        ("SMTPBOX_SENDER", notice.sender.as_str()),
        ("SMTPBOX_RECIPIENTS", notice.recipients.as_str()),
        ("SMTPBOX_SUBJECT", subject.as_str()),
        ("SMTPBOX_SIZE", size.as_str()),
        ("SMTPBOX_CLIENT", notice.client.as_str()),
        ("SMTPBOX_SUPPRESSED", suppressed.as_str()),
    ];
    let spawned = spawn(program, &env, file.as_raw_fd(), out_w.as_raw_fd());
    // The program has its own copies now.
    drop((file, out_w));
    let pid = match spawned {
        Ok(pid) => pid,
        Err(e) => {
            log::warn!("notify {id}: cannot run {}: {e}", program[0]);
            return;
        }
    };
    let reader_done = Arc::new((Mutex::new(false), Condvar::new()));
    let reader_id = id.to_string();
    let done = Arc::clone(&reader_done);
    let reader = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
        log_output(&reader_id, out_r);
        signal(&done);
    });
    let finished = (Mutex::new(false), Condvar::new());
    let status = thread::scope(|s| {
        let watching = thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn_scoped(s, || watchdog(id, pid, settings.timeout, &finished));
        if let Err(e) = watching {
            // No clock to hold it to: it may not run unbounded.
            log::warn!("notify {id}: no thread to time the program ({e}): SIGKILL");
            // SAFETY: signals the group we made for the program.
            unsafe { kill(-pid, SIGKILL) };
        }
        let status = wait(pid);
        signal(&finished);
        status
    });
    // Its output is logged before its status; a descendant that keeps
    // the pipe open does not hold the worker.
    if reader.is_ok() {
        wait_for(&reader_done, Duration::from_secs(1));
    }
    match status {
        Ok(status) => log_status(id, status),
        Err(e) => log::warn!("notify {id}: cannot wait for the program: {e}"),
    }
}

/// A flag set once, and those waiting for it woken.
type Flag = (Mutex<bool>, Condvar);

fn signal(flag: &Flag) {
    *flag.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
    flag.1.notify_all();
}

/// Waits at most `limit` for `flag`; whether it was set.
fn wait_for(flag: &Flag, limit: Duration) -> bool {
    let done = flag.0.lock().unwrap_or_else(|p| p.into_inner());
    let (done, _) = flag
        .1
        .wait_timeout_while(done, limit, |done| !*done)
        .unwrap_or_else(|p| p.into_inner());
    *done
}

/// Starts `argv` (no shell, no PATH search) with exactly `env`, `stdin`
/// on fd 0 and `out` on fds 1 and 2, in a process group of its own.
/// Between fork and exec the child only makes async-signal-safe calls
/// (the notifier has threads); an exec that fails reports its errno
/// through a close-on-exec pipe.
fn spawn(argv: &[String], env: &[(&str, &str)], stdin: c_int, out: c_int) -> io::Result<c_int> {
    let c = |s: String| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let args: Vec<CString> = argv
        .iter()
        .map(|a| c(a.clone()))
        .collect::<Result<_, _>>()?;
    let vars: Vec<CString> = env
        .iter()
        .map(|(k, v)| c(format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    let mut arg_ptrs: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
    arg_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const c_char> = vars.iter().map(|v| v.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    let (report_r, report_w) = pipe()?;
    // SAFETY: the child runs only async-signal-safe calls on memory
    // prepared above, then execs or exits.
    let pid = unsafe { fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: as above; every pointer stays valid in the child.
        unsafe {
            setpgid(0, 0);
            if dup2(stdin, 0) >= 0 && dup2(out, 1) >= 0 && dup2(out, 2) >= 0 {
                execve(args[0].as_ptr(), arg_ptrs.as_ptr(), env_ptrs.as_ptr());
            }
            let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            write(report_w.as_raw_fd(), (&errno as *const c_int).cast(), 4);
            _exit(127)
        }
    }
    // SAFETY: the child is ours; a failure (it has exec'd already) is moot.
    unsafe { setpgid(pid, pid) };
    drop(report_w);
    let mut report = [0u8; 4];
    let mut got = 0;
    let mut reader = File::from(report_r);
    while got < 4 {
        match reader.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got == 4 {
        let _ = wait(pid);
        return Err(io::Error::from_raw_os_error(c_int::from_ne_bytes(report)));
    }
    Ok(pid)
}

/// Waits for the program to finish; past `timeout` signals its group.
fn watchdog(id: &str, pid: c_int, timeout: Duration, finished: &Flag) {
    if wait_for(finished, timeout) {
        return;
    }
    log::warn!(
        "notify {id}: still running after {} s: SIGTERM to its process group",
        timeout.as_secs()
    );
    // SAFETY: signals the group we made for the program.
    unsafe { kill(-pid, SIGTERM) };
    if wait_for(finished, KILL_AFTER) {
        return;
    }
    log::warn!("notify {id}: SIGKILL to its process group");
    // SAFETY: as above.
    unsafe { kill(-pid, SIGKILL) };
}

fn log_status(id: &str, status: Status) {
    match status {
        Status::Exited(0) => log::info!("notify {id}: exit 0"),
        Status::Exited(code) => log::warn!("notify {id}: exit {code}"),
        Status::Signaled(signal) => log::warn!("notify {id}: killed by signal {signal}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run_sh(script: &str, env: &[(&str, &str)]) -> (io::Result<Status>, String) {
        let (r, w) = pipe().unwrap();
        let null = File::open("/dev/null").unwrap();
        let argv = ["/bin/sh".to_string(), "-c".to_string(), script.to_string()];
        let pid = match spawn(&argv, env, null.as_raw_fd(), w.as_raw_fd()) {
            Ok(pid) => pid,
            Err(e) => return (Err(e), String::new()),
        };
        drop(w);
        let mut out = String::new();
        File::from(r).read_to_string(&mut out).unwrap();
        (wait(pid), out)
    }

    #[test]
    fn programs_get_exactly_their_environment_and_report_how_they_ended() {
        let (status, out) = run_sh("env; echo err >&2; exit 7", &[("A", "1"), ("B", "x y")]);
        assert!(matches!(status, Ok(Status::Exited(7))));
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort_unstable();
        // dash adds PWD; nothing of ours leaks.
        lines.retain(|l| !l.starts_with("PWD="));
        assert_eq!(lines, ["A=1", "B=x y", "err"]);
        let (status, _) = run_sh("kill -9 $$", &[]);
        assert!(matches!(status, Ok(Status::Signaled(9))));
        // Its own process group.
        // Field 5 of /proc/PID/stat is the process group (the shell's
        // name, field 2, is "(sh)": no space in it).
        let (_, out) = run_sh("read -r stat < /proc/$$/stat; echo $stat; echo $$", &[]);
        let mut lines = out.lines();
        let stat: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
        assert_eq!(stat.get(4).copied(), lines.next(), "{out}");
    }

    #[test]
    fn a_program_that_cannot_be_executed_is_an_error_with_its_errno() {
        let null = File::open("/dev/null").unwrap();
        let argv = ["/nonexistent/hook".to_string()];
        let e = spawn(&argv, &[], null.as_raw_fd(), null.as_raw_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let argv = ["/dev/null".to_string()];
        let e = spawn(&argv, &[], null.as_raw_fd(), null.as_raw_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(13), "EACCES: {e}");
    }

    #[test]
    fn output_lines_are_made_printable() {
        assert_eq!(printable(b"ok\r"), "ok");
        assert_eq!(printable(b"a\x1b[31mb\x07"), "a [31mb");
        assert_eq!(printable(b"\xff x"), "\u{fffd} x");
    }
}
