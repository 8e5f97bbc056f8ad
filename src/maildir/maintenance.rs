//! Maildir maintenance: the work on a Maildir that is not a delivery.
//! Today that is removing what a crash left in `tmp/`, at start-up;
//! retention (SPEC §7) joins it here.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Maildir convention: files in tmp/ this old are left over from a crash.
pub const STALE_TMP: Duration = Duration::from_secs(36 * 3600);

/// At start-up, for every configured Maildir: removes files a crash left
/// in its tmp/ (older than [`STALE_TMP`]), logging what it removed.
pub fn at_start_up<'a>(maildirs: impl IntoIterator<Item = &'a PathBuf>) {
    for dir in maildirs {
        match clean_tmp(dir, STALE_TMP) {
            Ok(0) => {}
            Ok(n) => log::info!("removed {} stale file(s) from {}/tmp", n, dir.display()),
            Err(e) => log::debug!("cannot clean {}/tmp: {}", dir.display(), e),
        }
    }
}

/// Removes files in `dir/tmp/` last modified more than `age` ago (the Maildir
/// convention is 36 hours) and returns how many were removed.
pub fn clean_tmp(dir: &Path, age: Duration) -> io::Result<usize> {
    let cutoff = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
    let mut removed = 0;
    for entry in fs::read_dir(dir.join("tmp"))? {
        let entry = entry?;
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !meta.is_file() || meta.modified()? >= cutoff {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}
