//! Maildir++ accounting (SPEC §7): a Maildir's usage kept in its
//! `maildirsize` file, as Courier, maildrop, Exim and Dovecot's `maildir`
//! quota backend keep it, so that a quota or retention decision reads one
//! small file instead of every name in `new/` and `cur/`.
//!
//! The file: a header line (the quota, `NS[,NC]`, or empty), then one
//! `BYTES COUNT` line per change, either number possibly negative; the
//! usage is the sum of those lines. Writers append one line with a single
//! `write` on an `O_APPEND` descriptor. The file is recalculated from the
//! directories (every folder's `new/` and `cur/`) and replaced by a rename
//! when it is missing or unreadable as such a file, when it has grown to
//! 5,120 bytes (compacted instead when this process recalculated it in
//! the last 15 minutes, see [`usage`]), or when it is older than 15
//! minutes and the Maildir is near its limit.
//!
//! Several writers at once (session threads, inetd processes, sendmail's
//! direct path) agree through `flock(2)` on the Maildir's directory: a
//! delivery holds it shared from its link to its appended line, a
//! recalculation or a pruning run holds it exclusively from its scan to
//! its rename or last removal, so no delivery is counted twice or lost by
//! a recalculation. Others that append without that lock (Dovecot, after
//! an expunge) can make a concurrent recalculation miss their line; the
//! next recalculation corrects it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::at::size_from_name;
use crate::sys::{ELOOP, O_DIRECTORY, O_NOFOLLOW};

/// The file's name in the Maildir's root.
pub const FILE: &str = "maildirsize";
/// Maildir++: a file this large is recalculated (or compacted, see
/// [`usage`]).
pub const MAX_FILE: u64 = 5120;
/// A file this large (other writers grew it past [`MAX_FILE`]) is not
/// read at all: recalculated.
const MAX_READ: u64 = 64 * 1024;
/// Maildir++: a file this old is recalculated when the Maildir is near
/// its limit.
pub const STALE: Duration = Duration::from_secs(15 * 60);

/// Bytes and messages a Maildir holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub count: u64,
}

/// The usage a `maildirsize` file states, or None when it cannot be
/// trusted and must be recalculated: a header that is not a quota
/// definition, a line that is not two whole numbers ending in a newline
/// (a truncated last line included), or sums below zero.
pub fn parse(text: &[u8]) -> Option<Usage> {
    let mut lines = text.split_inclusive(|&b| b == b'\n');
    let header = lines.next()?.strip_suffix(b"\n")?;
    let quota_chars = |b: &u8| b.is_ascii_digit() || matches!(b, b'S' | b'C' | b',' | b' ');
    if !header.iter().all(quota_chars) {
        return None;
    }
    let (mut bytes, mut count) = (0i64, 0i64);
    for line in lines {
        let line = std::str::from_utf8(line.strip_suffix(b"\n")?).ok()?;
        let mut fields = line.split_ascii_whitespace();
        let (Some(b), Some(c), None) = (fields.next(), fields.next(), fields.next()) else {
            return None;
        };
        bytes = bytes.checked_add(b.parse().ok()?)?;
        count = count.checked_add(c.parse().ok()?)?;
    }
    Some(Usage {
        bytes: u64::try_from(bytes).ok()?,
        count: u64::try_from(count).ok()?,
    })
}

/// The header line smtpbox writes: its quota in bytes, or nothing.
pub fn header(quota: u64) -> String {
    if quota > 0 {
        format!("{quota}S\n")
    } else {
        "\n".to_string()
    }
}

/// The Maildir's usage, from its `maildirsize` when that can be trusted,
/// else recalculated (and the file rewritten). `limit` is the limit the
/// caller is about to hold `incoming` more bytes against (0: none): a
/// file older than [`STALE`] is recalculated when they would cross it.
///
/// A file that has grown to [`MAX_FILE`] bytes is recalculated from the
/// directories, as Maildir++ says, unless this process did that for this
/// Maildir less than [`STALE`] ago: then it is compacted (its header and
/// one line with its sum, under the exclusive lock, so exact). Maildir++'s
/// rule alone costs a scan of every message every ~700 deliveries, which
/// at 100,000 messages and 16 sessions stalls all of them for the scan
/// (README "Mail that fits the flash").
pub fn usage(root: &Path, quota: u64, limit: u64, incoming: u64) -> io::Result<Usage> {
    let near = |usage: Usage| limit > 0 && usage.bytes.saturating_add(incoming) > limit;
    match read(root)? {
        Some(f) if f.len < MAX_FILE && !(near(f.usage) && f.stale()) => return Ok(f.usage),
        _ => {}
    }
    let _lock = Lock::exclusive(root)?;
    // Writers that found the file wanting at once (it reached 5,120 bytes
    // under all of them) mend it once: the others, once they hold the
    // lock, find it mended.
    match read(root)? {
        Some(f) if f.len < MAX_FILE && !(near(f.usage) && f.stale()) => Ok(f.usage),
        Some(f) if !(near(f.usage) && f.stale()) && recalculated_lately(root) => {
            write(root, &f.header, f.usage)?;
            Ok(f.usage)
        }
        found => {
            let header = found.map_or_else(|| header(quota), |f| f.header);
            recalculate_locked(root, &header)
        }
    }
}

/// Whether this process recalculated `root`'s file from the directories
/// less than [`STALE`] ago.
fn recalculated_lately(root: &Path) -> bool {
    let times = recalculations().lock().unwrap_or_else(|p| p.into_inner());
    times.get(root).is_some_and(|at| at.elapsed() < STALE)
}

/// When this process last recalculated each Maildir's file (one entry
/// per configured Maildir at most).
fn recalculations() -> &'static Mutex<HashMap<PathBuf, Instant>> {
    static TIMES: OnceLock<Mutex<HashMap<PathBuf, Instant>>> = OnceLock::new();
    TIMES.get_or_init(Default::default)
}

/// The header a rewrite keeps: the file's own (another program's quota
/// definition stays as it wrote it), else smtpbox's for `quota`.
pub fn header_kept(root: &Path, quota: u64) -> String {
    match read(root) {
        Ok(Some(f)) => f.header,
        _ => header(quota),
    }
}

/// The bytes the file says the Maildir holds, without recalculating:
/// a pruning run's first estimate.
pub fn usage_estimate(root: &Path) -> Option<u64> {
    read(root).ok().flatten().map(|f| f.usage.bytes)
}

/// A `maildirsize` file as read.
struct Read {
    /// Its first line, with the newline.
    header: String,
    usage: Usage,
    modified: SystemTime,
    len: u64,
}

impl Read {
    fn stale(&self) -> bool {
        self.modified.elapsed().is_ok_and(|age| age >= STALE)
    }
}

/// The file, or None when it is missing, beyond [`MAX_READ`] bytes or
/// not a `maildirsize` file.
fn read(root: &Path) -> io::Result<Option<Read>> {
    let mut file = match open_nofollow(&root.join(FILE), false) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // A symlink planted there: replaced by the recalculation's rename.
        Err(e) if e.raw_os_error() == Some(ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() >= MAX_READ {
        return Ok(None);
    }
    let mut text = Vec::with_capacity(meta.len() as usize + 64);
    // Bounded: a file that grew meanwhile is recalculated.
    (&mut file).take(MAX_READ).read_to_end(&mut text)?;
    if text.len() as u64 >= MAX_READ {
        return Ok(None);
    }
    let Some(usage) = parse(&text) else {
        return Ok(None);
    };
    let end = text.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    Ok(Some(Read {
        header: String::from_utf8_lossy(&text[..end]).into_owned(),
        usage,
        modified: meta.modified().unwrap_or(UNIX_EPOCH),
        len: text.len() as u64,
    }))
}

/// Appends one change to the file, as one `write`. A missing file is left
/// missing (the next reader recalculates it); the caller holds the
/// Maildir's lock shared (a delivery) or exclusively (a pruning run).
pub fn append(root: &Path, bytes: i64, count: i64) -> io::Result<()> {
    let mut file = match open_nofollow(&root.join(FILE), true) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    file.write_all(format!("{bytes} {count}\n").as_bytes())
}

/// Recalculates the usage from the directories and replaces the file
/// (written in `tmp/`, then renamed), holding the Maildir's lock
/// exclusively.
pub fn recalculate(root: &Path, quota: u64) -> io::Result<Usage> {
    let _lock = Lock::exclusive(root)?;
    recalculate_locked(root, &header(quota))
}

/// [`recalculate`] for a caller that holds the lock exclusively, keeping
/// `header` (another program's quota definition stays as it wrote it).
fn recalculate_locked(root: &Path, header: &str) -> io::Result<Usage> {
    let usage = scan(root, |_| {})?;
    write(root, header, usage)?;
    let mut times = recalculations().lock().unwrap_or_else(|p| p.into_inner());
    times.insert(root.to_path_buf(), Instant::now());
    Ok(usage)
}

/// Replaces the file with `header` (a line) and one line of usage. The
/// caller holds the lock exclusively.
pub(super) fn write(root: &Path, header: &str, usage: Usage) -> io::Result<()> {
    let text = format!("{header}{} {}\n", usage.bytes, usage.count);
    let tmp = root
        .join("tmp")
        .join(format!("{}.{FILE}", super::unique_base()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| fs::rename(&tmp, root.join(FILE)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// One message file found by [`scan`].
#[derive(Debug)]
pub struct Found<'a> {
    /// The directory it is in (some folder's `new/` or `cur/`).
    pub dir: &'a Path,
    pub name: &'a str,
    pub size: u64,
    /// Delivery time in seconds since the epoch: the number that starts
    /// the name, else the file's modification time.
    pub time: u64,
    /// The delivery time in microseconds where the name has them
    /// (`SECONDS.MMICROS…`, smtpbox's and Dovecot's names): what orders
    /// the messages of one second.
    pub order: u64,
}

/// Walks every message of the Maildir: `cur/` and `new/` of the root and
/// of each Maildir++ folder (a directory `.NAME` in the root; symlinks,
/// there or as `cur/` and `new/`, are not followed). `cur/` is
/// read before `new/`, so a message a reader moves from `new/` to `cur/`
/// meanwhile is counted once or not at all, never twice. Names starting
/// with `.` are not messages. Returns the sum of what it found.
pub fn scan(root: &Path, mut each: impl FnMut(&Found<'_>)) -> io::Result<Usage> {
    let mut usage = Usage::default();
    let mut folders = vec![root.to_path_buf()];
    match fs::read_dir(root) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name();
                let is_folder = name.as_encoded_bytes().first() == Some(&b'.')
                    && entry.file_type().is_ok_and(|t| t.is_dir());
                if is_folder {
                    folders.push(entry.path());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(usage),
        Err(e) => return Err(e),
    }
    for folder in &folders {
        for sub in ["cur", "new"] {
            let dir = folder.join(sub);
            // A symlink is no message directory: never followed out.
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name();
                let Some(name) = name.to_str().filter(|n| !n.starts_with('.')) else {
                    continue;
                };
                let named = size_from_name(name);
                let leading = name
                    .split('.')
                    .next()
                    .and_then(|secs| secs.parse::<u64>().ok());
                let (size, time) = match (named, leading) {
                    (Some(size), Some(time)) => (size, time),
                    // A reader may move or delete the file meanwhile.
                    _ => match entry.metadata() {
                        Ok(meta) if meta.is_file() => (
                            named.unwrap_or(meta.len()),
                            leading.unwrap_or(meta.mtime().max(0) as u64),
                        ),
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    },
                };
                usage.bytes = usage.bytes.saturating_add(size);
                usage.count += 1;
                let micros = micros_from_name(name).unwrap_or(0);
                each(&Found {
                    dir: &dir,
                    name,
                    size,
                    time,
                    order: time.saturating_mul(1_000_000).saturating_add(micros),
                });
            }
        }
    }
    Ok(usage)
}

/// The microseconds of a `SECONDS.MMICROS…` name.
fn micros_from_name(name: &str) -> Option<u64> {
    let digits = name.split('.').nth(1)?.strip_prefix('M')?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok().filter(|&us| us < 1_000_000)
}

/// `flock(2)` on a Maildir's directory, released on drop.
pub struct Lock {
    _dir: File,
}

extern "C" {
    fn flock(fd: i32, operation: i32) -> i32;
}
const LOCK_SH: i32 = 1;
const LOCK_EX: i32 = 2;

impl Lock {
    /// Shared: a delivery, from its link to its line in the file.
    pub fn shared(root: &Path) -> io::Result<Lock> {
        Lock::take(root, LOCK_SH)
    }

    /// Exclusive: a recalculation or a pruning run.
    pub fn exclusive(root: &Path) -> io::Result<Lock> {
        Lock::take(root, LOCK_EX)
    }

    fn take(root: &Path, operation: i32) -> io::Result<Lock> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(O_DIRECTORY)
            .open(root)?;
        loop {
            // SAFETY: flock on a descriptor this File owns.
            if unsafe { flock(dir.as_raw_fd(), operation) } == 0 {
                return Ok(Lock { _dir: dir });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// For reading without touching the access time (see
/// [`super::open_unstamped`]), or for appending.
fn open_nofollow(path: &Path, append: bool) -> io::Result<File> {
    if !append {
        return super::open_unstamped(path, O_NOFOLLOW);
    }
    OpenOptions::new()
        .append(true)
        .custom_flags(O_NOFOLLOW)
        .open(path)
}

/// Seconds since the epoch now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn usage(bytes: u64, count: u64) -> Option<Usage> {
        Some(Usage { bytes, count })
    }

    #[test]
    fn parse_reads_the_maildir_plus_plus_forms() {
        assert_eq!(parse(b"1000S\n"), usage(0, 0));
        assert_eq!(parse(b"\n12 1\n"), usage(12, 1));
        assert_eq!(parse(b"1000S,10C\n100 2\n50 1\n"), usage(150, 3));
        // Removals are negative lines; several spaces are fine.
        assert_eq!(parse(b"1000S\n100 2\n-40  -1\n"), usage(60, 1));
        assert_eq!(parse(b"5C\n7 1\n"), usage(7, 1));
    }

    #[test]
    fn parse_refuses_what_it_cannot_trust() {
        for bad in [
            &b""[..],
            b"1000S",              // no newline after the header
            b"1000S\n100 2\n50",   // truncated last line
            b"1000S\n100 2\n50 1", // last line without its newline
            b"1000S\n100\n",       // one number
            b"1000S\n1 2 3\n",     // three
            b"1000S\nx 1\n",
            b"1000S\n-10 -1\n", // below zero
            b"junk\x00\n1 1\n", // not a quota definition
            b"1000S\n\xff 1\n",
            b"1000S\n9223372036854775807 1\n1 1\n", // overflow
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// A Maildir with `n` messages of `size` bytes in `cur/`.
    fn maildir_with(tag: &str, n: u64, size: u64) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "smtpbox-size-{tag}-{}",
            super::super::unique_base()
        ));
        super::super::ensure(&root).unwrap();
        for i in 0..n {
            fs::write(
                root.join("cur")
                    .join(format!("{}.M1P1Q{i}.h,S={size}:2,S", 1000 + i)),
                b"x",
            )
            .unwrap();
        }
        root
    }

    #[test]
    fn a_missing_or_untrustworthy_file_is_recalculated_never_trusted() {
        let root = maildir_with("recalc", 3, 100);
        let file = root.join(FILE);
        // Missing: made from the directories, header the quota.
        assert_eq!(
            super::usage(&root, 1000, 1000, 0).unwrap(),
            Usage {
                bytes: 300,
                count: 3
            }
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), "1000S\n300 3\n");
        // Trusted as it is: O(1), even when it disagrees with the directories.
        fs::write(&file, "1000S\n250 2\n-50 -1\n").unwrap();
        assert_eq!(
            super::usage(&root, 1000, 1000, 0).unwrap(),
            Usage {
                bytes: 200,
                count: 1
            }
        );
        // Corrupted by a reader, truncated, negative, a symlink: recalculated.
        for bad in ["1000S\n250 2\n-5", "\x00\x00", "1000S\n-1 -1\n", ""] {
            fs::write(&file, bad).unwrap();
            assert_eq!(
                super::usage(&root, 1000, 0, 0).unwrap().bytes,
                300,
                "{bad:?}"
            );
        }
        fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &file).unwrap();
        assert_eq!(super::usage(&root, 1000, 0, 0).unwrap().bytes, 300);
        assert!(
            fs::symlink_metadata(&file).unwrap().is_file(),
            "replaced, not followed"
        );
        // Grown to 5,120 bytes, just after this process recalculated it:
        // compacted (its own sum, its header kept), not scanned.
        let mut text = String::from("777S\n");
        while text.len() < MAX_FILE as usize {
            text.push_str("1 1\n");
        }
        let lines = (text.lines().count() - 1) as u64;
        fs::write(&file, &text).unwrap();
        assert_eq!(super::usage(&root, 1000, 0, 0).unwrap().bytes, lines);
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            format!("777S\n{lines} {lines}\n")
        );
        // Not recalculated lately (another process, or 15 minutes on):
        // recalculated from the directories, as Maildir++ says.
        fs::write(&file, &text).unwrap();
        recalculations().lock().unwrap().remove(&root);
        assert_eq!(super::usage(&root, 1000, 0, 0).unwrap().bytes, 300);
        assert_eq!(fs::read_to_string(&file).unwrap(), "777S\n300 3\n");
        // Past 64 KiB (other writers): not even read.
        let mut huge = String::from("1000S\n");
        while huge.len() < MAX_READ as usize {
            huge.push_str("1 1\n");
        }
        fs::write(&file, &huge).unwrap();
        assert_eq!(super::usage(&root, 1000, 0, 0).unwrap().bytes, 300);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn a_stale_file_is_recalculated_only_near_the_limit() {
        let root = maildir_with("stale", 2, 100);
        let file = root.join(FILE);
        fs::write(&file, "1000S\n50 1\n").unwrap();
        let old = SystemTime::now() - STALE - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // Far from the limit: the old figure stands.
        assert_eq!(super::usage(&root, 1000, 1000, 100).unwrap().bytes, 50);
        // Near it: recalculated.
        assert_eq!(super::usage(&root, 1000, 1000, 960).unwrap().bytes, 200);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn reading_leaves_the_access_time_alone() {
        // relatime stamps the first read after a write: without O_NOATIME
        // every quota check would write the file's inode again.
        use std::os::unix::fs::MetadataExt;
        let root = maildir_with("atime", 1, 10);
        recalculate(&root, 0).unwrap();
        append(&root, 10, 1).unwrap();
        let before = fs::metadata(root.join(FILE)).unwrap();
        assert!(super::usage(&root, 0, 0, 0).unwrap().count >= 1);
        let after = fs::metadata(root.join(FILE)).unwrap();
        assert_eq!(
            (after.atime(), after.atime_nsec()),
            (before.atime(), before.atime_nsec())
        );
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn appends_are_lines_and_a_missing_file_stays_missing() {
        let root = maildir_with("append", 0, 0);
        append(&root, 10, 1).unwrap();
        assert!(!root.join(FILE).exists());
        recalculate(&root, 0).unwrap();
        append(&root, 10, 1).unwrap();
        append(&root, -4, -1).unwrap();
        assert_eq!(
            fs::read_to_string(root.join(FILE)).unwrap(),
            "\n0 0\n10 1\n-4 -1\n"
        );
        assert_eq!(
            super::usage(&root, 0, 0, 0).unwrap(),
            Usage { bytes: 6, count: 0 }
        );
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn scan_orders_by_the_name_time_and_falls_back_to_metadata() {
        let root = maildir_with("scan", 0, 0);
        fs::write(root.join("new/1700000000.M12P1Q1.h,S=5"), b"x").unwrap();
        fs::write(root.join("cur/odd-name:2,S"), b"1234").unwrap();
        let mut found = Vec::new();
        let usage = scan(&root, |f| {
            found.push((f.name.to_string(), f.size, f.time, f.order))
        })
        .unwrap();
        assert_eq!(usage, Usage { bytes: 9, count: 2 });
        found.sort();
        assert_eq!(
            found[0],
            (
                "1700000000.M12P1Q1.h,S=5".into(),
                5,
                1_700_000_000,
                1_700_000_000_000_012
            )
        );
        assert_eq!(found[1].1, 4);
        assert!(found[1].2 > 1_700_000_000, "mtime");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn header_states_the_quota_or_nothing() {
        assert_eq!(header(1000), "1000S\n");
        assert_eq!(header(0), "\n");
    }
}
