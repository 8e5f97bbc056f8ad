//! The `*at(2)` wrappers storage works through (relative to an open
//! directory, never following a planted symlink), and small checks on
//! what they return.

use super::*;

pub(super) fn swapped() -> io::Error {
    io::Error::other("spool file was replaced in tmp/; not linked")
}

pub(super) fn symlink_refused() -> io::Error {
    io::Error::other("is a symbolic link; not followed")
}

/// A clearer error for a Maildir subdirectory that could not be opened
/// because it is a symlink.
pub(super) fn refused(path: &Path, err: io::Error) -> io::Error {
    let maybe_link =
        err.kind() == io::ErrorKind::NotADirectory || err.raw_os_error() == Some(ELOOP);
    if maybe_link && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return symlink_refused();
    }
    err
}

pub(super) fn same_inode(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Whether unnamed files can be linked: `linkat` through `/proc/self/fd/N`
/// needs /proc (an `AT_EMPTY_PATH` link would need CAP_DAC_READ_SEARCH).
pub(super) fn proc_fd_links() -> bool {
    static PROC: OnceLock<bool> = OnceLock::new();
    *PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// `O_TMPFILE` refused by the filesystem (EOPNOTSUPP) or unknown to an old
/// kernel (EISDIR: it reads as O_DIRECTORY; EINVAL on some filesystems).
pub(super) fn tmpfile_unsupported(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::IsADirectory | io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
    ) || err.raw_os_error() == Some(EOPNOTSUPP)
}

/// A directory opened `O_DIRECTORY | O_NOFOLLOW`: a symlink is refused.
pub(super) fn open_dir(path: &Path) -> io::Result<File> {
    let flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    open_at(AT_FDCWD, &c_string(path)?, flags, 0).map_err(|e| refused(path, e))
}

/// The metadata of `name` in `dir` without following a symlink (an
/// `O_PATH | O_NOFOLLOW` descriptor's, which is the link's own).
pub(super) fn stat_at(dir: RawFd, name: &CStr) -> io::Result<Metadata> {
    open_at(dir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0)?.metadata()
}

pub(super) fn c_string(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

extern "C" {
    pub(super) fn openat(dirfd: RawFd, path: *const std::ffi::c_char, flags: i32, ...) -> RawFd;
    pub(super) fn linkat(
        olddirfd: RawFd,
        oldpath: *const std::ffi::c_char,
        newdirfd: RawFd,
        newpath: *const std::ffi::c_char,
        flags: i32,
    ) -> i32;
    pub(super) fn unlinkat(dirfd: RawFd, path: *const std::ffi::c_char, flags: i32) -> i32;
}

pub(super) fn open_at(dir: RawFd, path: &CStr, flags: i32, mode: u32) -> io::Result<File> {
    // SAFETY: `path` is NUL-terminated; the mode is passed as the C
    // variadic `mode_t` (an unsigned int) openat reads with O_CREAT or
    // O_TMPFILE; a returned descriptor is new and owned by the File.
    let fd = unsafe { openat(dir, path.as_ptr(), flags, mode as std::ffi::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above.
    Ok(unsafe { File::from_raw_fd(fd) })
}

pub(super) fn link_at(
    old_dir: RawFd,
    old: &CStr,
    new_dir: RawFd,
    new: &CStr,
    flags: i32,
) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated C strings that outlive the call.
    let rc = unsafe { linkat(old_dir, old.as_ptr(), new_dir, new.as_ptr(), flags) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn unlink_at(dir: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is a NUL-terminated C string that outlives the call.
    if unsafe { unlinkat(dir, name.as_ptr(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `S=SIZE` field of a Maildir++ file name (`BASE,S=SIZE[,…][:2,FLAGS]`).
pub(super) fn size_from_name(name: &str) -> Option<u64> {
    let fields = name.split(':').next()?;
    fields
        .split(',')
        .skip(1)
        .find_map(|field| field.strip_prefix("S="))
        .and_then(|size| size.parse().ok())
}
