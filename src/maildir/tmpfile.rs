//! The spool file in `tmp/`: unnamed (`O_TMPFILE`) where the kernel and
//! file system allow it, else exclusively created under a unique name.

use super::*;

/// The file a message is written to: unnamed (`O_TMPFILE`) in `tmp/`, or
/// named there, with the `tmp/` descriptor it was created relative to.
/// Dropping a named one unlinks the name.
pub(super) struct TmpFile {
    pub(super) file: File,
    pub(super) named: Option<(File, CString)>,
    /// `tmp/` or `tmp/NAME`, for messages.
    pub(super) path: PathBuf,
}

impl TmpFile {
    /// As [`TmpFile::create`], making the Maildir first when `tmp/` is
    /// missing; a name already taken (a stale file from a recycled PID) is
    /// retried under a fresh counter value.
    pub(super) fn create_or_ensure(
        maildir: &Path,
        base: &str,
        named: bool,
    ) -> Result<TmpFile, DeliveryError> {
        let tmp = maildir.join("tmp");
        let mut base = base.to_string();
        for attempt in 0.. {
            match TmpFile::create(maildir, &base, named) {
                Ok(file) => return Ok(file),
                // The common case costs no mkdir calls: only a missing
                // Maildir is made, once.
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 3 => {
                    ensure(maildir).map_err(|e| DeliveryError::io(maildir, e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 3 => {
                    base = unique_name().1;
                }
                Err(e) => return Err(DeliveryError::io(&tmp, e)),
            }
        }
        Err(DeliveryError::io(&tmp, io::Error::other("no spool file")))
    }

    /// A new file (mode 0600 before the umask) in `maildir/tmp/`, which must
    /// be a directory, not a symlink. Unnamed where `O_TMPFILE` and
    /// `/proc/self/fd` both work (and `named` is false), else `tmp/BASE`,
    /// created exclusively.
    pub(super) fn create(maildir: &Path, base: &str, named: bool) -> io::Result<TmpFile> {
        let tmp = maildir.join("tmp");
        if !named && proc_fd_links() {
            // The path names the directory itself, resolved once with
            // O_NOFOLLOW: a symlinked tmp/ fails (ENOTDIR), as opening tmp/
            // O_DIRECTORY | O_NOFOLLOW and creating relative to it would,
            // one system call fewer.
            let flags = O_TMPFILE | O_RDWR | O_NOFOLLOW | O_CLOEXEC;
            match open_at(AT_FDCWD, &c_string(&tmp)?, flags, 0o600) {
                Ok(file) => {
                    return Ok(TmpFile {
                        file,
                        named: None,
                        path: tmp,
                    })
                }
                Err(e) if tmpfile_unsupported(&e) => {}
                Err(e) => return Err(refused(&tmp, e)),
            }
        }
        let dir = open_dir(&tmp)?;
        let name = c_string(Path::new(base))?;
        let flags = O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC;
        let file = open_at(dir.as_raw_fd(), &name, flags, 0o600)?;
        Ok(TmpFile {
            file,
            named: Some((dir, name)),
            path: tmp.join(base),
        })
    }

    /// Links this very inode into `new` as `name`; never replaces a name
    /// that exists (EEXIST).
    pub(super) fn link(&self, new: &Dir, name: &CStr) -> io::Result<()> {
        let new_fd = new.fd.as_raw_fd();
        let Some((tmp, tmp_name)) = &self.named else {
            let proc = c_string(Path::new(&format!(
                "/proc/self/fd/{}",
                self.file.as_raw_fd()
            )))?;
            return link_at(AT_FDCWD, &proc, new_fd, name, AT_SYMLINK_FOLLOW);
        };
        // By name: only when the name still holds our inode, checked right
        // before a link that does not follow symlinks, and checked again on
        // the link made, which is removed when it is not ours (a swap in
        // between), failing closed.
        let ours = self.file.metadata()?;
        let there = stat_at(tmp.as_raw_fd(), tmp_name)?;
        if !same_inode(&ours, &there) {
            return Err(swapped());
        }
        link_at(tmp.as_raw_fd(), tmp_name, new_fd, name, 0)?;
        match stat_at(new_fd, name) {
            Ok(linked) if same_inode(&ours, &linked) => Ok(()),
            _ => {
                let _ = unlink_at(new_fd, name);
                Err(swapped())
            }
        }
    }
}

impl Write for TmpFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        // After a delivery the links in new/ hold the data; otherwise the
        // message is abandoned. Either way a tmp name goes (relative to the
        // tmp/ it was made in).
        if let Some((dir, name)) = &self.named {
            let _ = unlink_at(dir.as_raw_fd(), name);
        }
    }
}
