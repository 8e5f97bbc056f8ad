//! The process primitives the notifier needs, in one place: fork, exec,
//! signals, pipes and waiting (std has no fork, and its `Command` was
//! too large for the appliance build, issue #26). Every target smtpbox is
//! built for has these in its libc with these signatures.

use std::ffi::{c_char, c_int, c_void};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

pub(super) const SIGTERM: c_int = 15;
pub(super) const SIGKILL: c_int = 9;

extern "C" {
    pub(super) fn kill(pid: c_int, signal: c_int) -> c_int;
    fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    pub(super) fn fork() -> c_int;
    pub(super) fn setsid() -> c_int;
    pub(super) fn setpgid(pid: c_int, pgid: c_int) -> c_int;
    pub(super) fn dup2(old: c_int, new: c_int) -> c_int;
    pub(super) fn close(fd: c_int) -> c_int;
    pub(super) fn execve(
        path: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int;
    pub(super) fn write(fd: c_int, buf: *const c_void, len: usize) -> isize;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    pub(super) fn _exit(status: c_int) -> !;
}

/// How a program ended.
#[derive(Clone, Copy)]
pub(super) enum Status {
    Exited(c_int),
    Signaled(c_int),
}

/// Waits for `pid` to end.
pub(super) fn wait(pid: c_int) -> io::Result<Status> {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; status outlives the call.
        if unsafe { waitpid(pid, &mut status, 0) } >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(match status & 0x7f {
        0 => Status::Exited((status >> 8) & 0xff),
        signal => Status::Signaled(signal),
    })
}

/// A pipe, both ends close-on-exec.
pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { pipe2(fds.as_mut_ptr(), crate::sys::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
