//! Files re-read when they change: the TLS certificate pair (ACME renewals)
//! and the users file (password changes), without a restart.
//!
//! A [`Watched`] value is built from the bytes of one or more files and
//! rebuilt when one of them changes. A change is seen by the files'
//! metadata alone (device, inode, size, mtime, ctime, following symlinks),
//! so an unchanged file is never read again. Every read goes through
//! [`read`]: only a regular file of at most [`MAX_SIZE`] bytes is read, so a
//! setting that names `/dev/zero`, a FIFO or a huge file fails with an error
//! naming the file instead of eating memory or waiting forever.
//!
//! What happens when the files change:
//! - they read and build: the new value is used from then on;
//! - they read but do not build (a half-written renewal, a typo): logged
//!   once, and the previous value stays until the files change again;
//! - one cannot be read (removed, replaced by a directory, unreadable):
//!   logged once, and [`Watched::current`] is an error until it can, which
//!   still carries the previous value for callers that fail open (TLS)
//!   rather than closed (AUTH).

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::sys::O_NONBLOCK;

/// The largest file [`read`] accepts: far above any certificate chain or
/// users file, far below what would hurt a small box.
pub const MAX_SIZE: u64 = 4 << 20;

/// One file's bytes and the path they came from (for error messages).
#[derive(Debug)]
pub struct Contents {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Builds the value from the files' contents, in the order of the paths;
/// the error names the file at fault.
pub type Build<T> = fn(&[Contents]) -> Result<T, String>;

/// A value built from files, rebuilt when they change. Shared by every
/// session (it is `Sync` when `T` is).
pub struct Watched<T> {
    paths: Vec<PathBuf>,
    /// Names the files in log lines (`TLS`, `users file`).
    what: &'static str,
    build: Build<T>,
    /// Minimum time between two looks at the files' metadata (a field so
    /// tests can set it to zero).
    pub(crate) recheck: Duration,
    state: Mutex<State<T>>,
}

/// One of the files cannot be read now.
#[derive(Debug)]
pub struct Unreadable<T> {
    /// Names the file and the reason.
    pub reason: String,
    /// The value built last, for callers that keep serving with it.
    pub last: Arc<T>,
}

struct State<T> {
    value: Arc<T>,
    stamps: Vec<Option<Stamp>>,
    /// Why a file could not be read at the last look.
    unreadable: Option<String>,
    checked: Instant,
}

impl<T> Watched<T> {
    /// Reads the files and builds the value; the error names the file at
    /// fault. `recheck` throttles the looks at the metadata.
    pub fn load(
        what: &'static str,
        paths: &[&Path],
        recheck: Duration,
        build: Build<T>,
    ) -> Result<Watched<T>, String> {
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
        // Stamp before reading: a change made while we read is seen later.
        let stamps = paths.iter().map(|p| Stamp::of(p)).collect();
        let value = build(&read_all(&paths)?)?;
        Ok(Watched {
            paths,
            what,
            build,
            recheck,
            state: Mutex::new(State {
                value: Arc::new(value),
                stamps,
                unreadable: None,
                checked: Instant::now(),
            }),
        })
    }

    /// The files, in the order given to [`Watched::load`].
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The value for the files as they are now, rebuilt when they changed
    /// (looked at no more often than `recheck`). Errs while a file cannot
    /// be read.
    pub fn current(&self) -> Result<Arc<T>, Unreadable<T>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= self.recheck {
            state.checked = Instant::now();
            let stamps: Vec<Option<Stamp>> = self.paths.iter().map(|p| Stamp::of(p)).collect();
            if stamps != state.stamps {
                // Remember even a broken version's stamps: it is logged once
                // and retried when the files change again (the key of a
                // renewal is often written just after the certificate).
                state.stamps = stamps;
                self.reload(&mut state);
            }
        }
        match &state.unreadable {
            Some(reason) => Err(Unreadable {
                reason: reason.clone(),
                last: Arc::clone(&state.value),
            }),
            None => Ok(Arc::clone(&state.value)),
        }
    }

    fn reload(&self, state: &mut State<T>) {
        let contents = match read_all(&self.paths) {
            Ok(contents) => contents,
            Err(reason) => {
                log::error!("{}: {reason}", self.what);
                state.unreadable = Some(reason);
                return;
            }
        };
        state.unreadable = None;
        match (self.build)(&contents) {
            Ok(value) => {
                let names: Vec<String> =
                    self.paths.iter().map(|p| p.display().to_string()).collect();
                log::info!("{}: reloaded {}", self.what, names.join(" and "));
                state.value = Arc::new(value);
            }
            Err(e) => log::error!("{}: {e}; keeping the previous version", self.what),
        }
    }
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("what", &self.what)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

/// Reads a whole file that must be a regular file of at most [`MAX_SIZE`]
/// bytes. Errors read `PATH: cannot read: REASON`.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    let fail = |why: String| format!("{}: cannot read: {why}", path.display());
    // Refused before the open, which would wait for a FIFO's writer; the
    // open does not wait either, should a FIFO take the file's place.
    let meta = fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    check_kind(&meta).map_err(fail)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    check_kind(&meta).map_err(fail)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // One byte more than allowed tells a file that grew past the cap.
    File::take(file, MAX_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(fail(too_large()));
    }
    Ok(bytes)
}

/// Every file of `paths`, read in order; the first error stops.
fn read_all(paths: &[PathBuf]) -> Result<Vec<Contents>, String> {
    paths
        .iter()
        .map(|path| {
            read(path).map(|bytes| Contents {
                path: path.clone(),
                bytes,
            })
        })
        .collect()
}

/// A regular file within the size cap, else what it is instead.
fn check_kind(meta: &fs::Metadata) -> Result<(), String> {
    let kind = meta.file_type();
    let other = if kind.is_dir() {
        "is a directory"
    } else if kind.is_fifo() {
        "is a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "is a device"
    } else if kind.is_socket() {
        "is a socket"
    } else if meta.len() > MAX_SIZE {
        return Err(too_large());
    } else {
        return Ok(());
    };
    Err(format!("not a regular file: it {other}"))
}

fn too_large() -> String {
    format!("larger than {} MiB", MAX_SIZE >> 20)
}

/// What identifies one version of a file without reading it; `None` for a
/// file that cannot be examined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    /// Catches a chmod, which changes whether the file can be read.
    ctime: (i64, i64),
}

impl Stamp {
    /// Follows symlinks, so a renewal that repoints a link is seen.
    fn of(path: &Path) -> Option<Stamp> {
        let meta = fs::metadata(path).ok()?;
        Some(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A temp directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("smtpbox-watched-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn read_refuses_devices_fifos_directories_sockets_and_big_files() {
        let dir = TempDir::new("kinds");
        let fifo = dir.0.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo");
        let socket = dir.0.join("socket");
        let _listener = UnixListener::bind(&socket).unwrap();
        let big = dir.0.join("big");
        File::create(&big).unwrap().set_len(MAX_SIZE + 1).unwrap();
        let cases = [
            (Path::new("/dev/zero"), "not a regular file: it is a device"),
            (Path::new("/dev/null"), "not a regular file: it is a device"),
            (&fifo, "not a regular file: it is a FIFO"),
            (&dir.0, "not a regular file: it is a directory"),
            (&socket, "not a regular file: it is a socket"),
            (&big, "larger than 4 MiB"),
        ];
        for (path, why) in cases {
            let err = read(path).unwrap_err();
            assert_eq!(err, format!("{}: cannot read: {why}", path.display()));
        }
        let missing = read(&dir.0.join("missing")).unwrap_err();
        assert!(
            missing.contains("/missing: cannot read: No such file"),
            "{missing}"
        );
        // At the cap is fine.
        File::create(&big).unwrap().set_len(MAX_SIZE).unwrap();
        assert_eq!(read(&big).unwrap().len() as u64, MAX_SIZE);
    }

    /// The text of the file, which must be a number.
    fn number(files: &[Contents]) -> Result<u32, String> {
        let text = String::from_utf8_lossy(&files[0].bytes);
        text.trim()
            .parse()
            .map_err(|_| format!("{}: not a number", files[0].path.display()))
    }

    #[test]
    fn rebuilt_on_change_kept_when_broken_error_while_unreadable() {
        let dir = TempDir::new("reload");
        let path = dir.0.join("n");
        fs::write(&path, "1\n").unwrap();
        let watched = Watched::load("test", &[&path], Duration::ZERO, number).unwrap();
        let first = watched.current().unwrap();
        assert_eq!(*first, 1);
        assert!(
            Arc::ptr_eq(&first, &watched.current().unwrap()),
            "rebuilt unchanged"
        );

        // A new file, as `mv` makes it.
        fs::write(dir.0.join("n.new"), "2\n").unwrap();
        fs::rename(dir.0.join("n.new"), &path).unwrap();
        assert_eq!(*watched.current().unwrap(), 2);

        // Broken: the previous value stays.
        fs::write(&path, "two\n").unwrap();
        assert_eq!(*watched.current().unwrap(), 2);

        // Gone, then a directory, then a dangling symlink: unreadable, with
        // the last value beside the reason.
        fs::remove_file(&path).unwrap();
        let gone = watched.current().unwrap_err();
        assert!(gone
            .reason
            .starts_with(&format!("{}: cannot read: ", path.display())));
        assert_eq!(*gone.last, 2);
        fs::create_dir(&path).unwrap();
        let err = watched.current().unwrap_err();
        assert!(err.reason.ends_with("it is a directory"), "{}", err.reason);
        assert!(watched.current().is_err(), "still a directory");
        fs::remove_dir(&path).unwrap();
        std::os::unix::fs::symlink(dir.0.join("nowhere"), &path).unwrap();
        assert!(watched.current().is_err());

        // Back: the new value.
        fs::remove_file(&path).unwrap();
        fs::write(&path, "3\n").unwrap();
        assert_eq!(*watched.current().unwrap(), 3);
    }

    #[test]
    fn load_names_the_file_at_fault() {
        let dir = TempDir::new("load");
        let path = dir.0.join("n");
        fs::write(&path, "x\n").unwrap();
        let err = Watched::load("test", &[&path], Duration::ZERO, number).unwrap_err();
        assert_eq!(err, format!("{}: not a number", path.display()));
        let err = Watched::load("test", &[Path::new("/dev/zero")], Duration::ZERO, number);
        assert!(err
            .unwrap_err()
            .starts_with("/dev/zero: cannot read: not a regular file"));
    }

    #[test]
    fn recheck_throttles_the_looks() {
        let dir = TempDir::new("throttle");
        let path = dir.0.join("n");
        fs::write(&path, "1\n").unwrap();
        let mut watched =
            Watched::load("test", &[&path], Duration::from_secs(3600), number).unwrap();
        fs::write(&path, "22\n").unwrap();
        assert_eq!(*watched.current().unwrap(), 1, "looked within the throttle");
        watched.recheck = Duration::ZERO;
        assert_eq!(*watched.current().unwrap(), 22);
    }
}
