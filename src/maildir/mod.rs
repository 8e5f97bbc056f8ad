//! Maildir storage (SPEC §7), the durable part behind the delivery seam
//! ([`crate::delivery::Message`] opens a [`Spool`] and calls [`deliver`];
//! nothing else stores mail), qmail style, by descriptor: a message is
//! written once to an unnamed `O_TMPFILE` file in `tmp/` (or, where the
//! kernel, the filesystem or `/proc` does not allow that, a file exclusively
//! created there under a unique name), fsynced, then hard-linked (or copied
//! when on another filesystem) into the `new/` of every target Maildir,
//! and every `new/` directory is fsynced before the client is told `250`.
//! Any failure removes what was already linked, so no `new/` ever holds a
//! partial or half-delivered message.
//!
//! The inode linked into `new/` is always the one that was written and
//! fsynced: the unnamed file is linked through `/proc/self/fd/N`, and a named
//! one only after its inode is compared with the name's, before and after the
//! link, failing closed. `tmp/` and `new/` are opened without following
//! symlinks and files are created and linked relative to them, so a symlink
//! planted in a Maildir is never written through; `linkat` never replaces a
//! name that exists.
//!
//! Deliveries into the same `new/` at the same time share its fsync (group
//! commit, [`GroupCommit`]): one fsync started after a link covers it.
//!
//! File names: `SECONDS.MMICROSPPIDQCOUNTER.HOST,S=SIZE` in `new/`, the same
//! without `,S=SIZE` in `tmp/` for a named spool file.
//!
//! Errors are [`DeliveryError`]s naming the file; which reply or exit code
//! they become is the caller's business.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs::{self, DirBuilder, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::thread::Thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::buffers;
mod at;
mod commit;
mod error;
pub mod maintenance;
pub mod size;
mod tmpfile;

use at::*;
use commit::*;
pub use error::DeliveryError;
pub use maintenance::clean_tmp;
use tmpfile::*;

use crate::sys::{
    AT_FDCWD, AT_SYMLINK_FOLLOW, ELOOP, EOPNOTSUPP, O_CLOEXEC, O_CREAT, O_DIRECTORY, O_EXCL,
    O_NOFOLLOW, O_PATH, O_RDONLY, O_RDWR, O_TMPFILE,
};

/// Creates DIR, DIR/tmp, DIR/new and DIR/cur with mode 0700 when missing
/// (missing parents of DIR too), each made durable before this returns
/// ([`make_dir_durably`]): a Maildir that a `250` depends on must not
/// vanish in a power cut. Existing directories are left as they are.
pub fn ensure(dir: &Path) -> io::Result<()> {
    make_dir_durably(dir)?;
    for sub in ["tmp", "new", "cur"] {
        make_dir_durably(&dir.join(sub))?;
    }
    Ok(())
}

/// Creates the Maildir++ folder `dir` of the Maildir `root` as [`ensure`]
/// does (the root too when missing), with its `maildirfolder` file, the
/// mark Courier and Dovecot know a folder by; made durable as the
/// directories are.
pub fn ensure_folder(root: &Path, dir: &Path) -> io::Result<()> {
    ensure(root)?;
    ensure(dir)?;
    let mark = dir.join("maildirfolder");
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&mark)
    {
        Ok(_) => File::open(dir)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes `dir` (mode 0700) and its missing parents, and fsyncs the parent
/// of each: a new directory entry is durable only once its parent
/// directory is (ext4 and XFS happen to commit it with the first fsync of
/// a file below; other file systems used on flash need not, SPEC §7).
///
/// A directory that already exists gets its parent fsynced too, since
/// its creator may be another thread that has not done so yet; where the
/// parent cannot be opened (outside the sandbox's Landlock rules, whose
/// Maildirs [`crate::sandbox`] made durably before it applied them), that
/// is left to the creator.
pub fn make_dir_durably(dir: &Path) -> io::Result<()> {
    let made = match DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(parent) => make_dir_durably(parent)?,
                None => return Err(e),
            }
            DirBuilder::new().mode(0o700).create(dir)
        }
        other => other,
    };
    let created = match made {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => false,
        Err(e) => return Err(e),
    };
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match File::open(parent).and_then(|d| d.sync_all()) {
        Ok(()) => Ok(()),
        Err(e) if !created && e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(e),
    }
}

/// A message being received: an unnamed file (mode 0600) in
/// `<maildir>/tmp/`, or a named one where that is not possible. Writes are
/// buffered. Dropping a `Spool` that was not delivered throws the file away
/// (a named one is unlinked), so an aborted session leaves nothing in `tmp/`.
pub struct Spool {
    out: Option<SpoolWriter>,
    /// Bytes accepted so far: the file's size once the buffer is flushed.
    written: u64,
    /// Where the message is being written, for error messages.
    path: PathBuf,
    base: String,
    id: String,
    /// Forced named files (tests of the fallback); copies follow the spool.
    named: bool,
}

impl Spool {
    /// Creates the spool file in `maildir`'s `tmp/`, making the Maildir
    /// first when it is missing. Create the spool in one of the target
    /// Maildirs (or on the same filesystem) so delivery is a hard link rather
    /// than a copy. A `tmp/` that is a symlink is refused.
    pub fn create(maildir: &Path) -> Result<Spool, DeliveryError> {
        Spool::create_in(maildir, false)
    }

    fn create_in(maildir: &Path, named: bool) -> Result<Spool, DeliveryError> {
        let (id, base) = unique_name();
        let file = TmpFile::create_or_ensure(maildir, &base, named)?;
        let path = file.path.clone();
        Ok(Spool {
            out: Some(SpoolWriter {
                file,
                buf: buffers::take(),
                filled: 0,
            }),
            written: 0,
            path,
            base,
            id,
            named,
        })
    }

    /// The message ID shown to the client, in logs and in the Received
    /// header: the unique name without the host part.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The name the message gets in `new/` (`BASE,S=SIZE`), once all of
    /// it is written.
    pub fn file_name(&self) -> String {
        format!("{},S={}", self.base, self.written)
    }

    /// Turns an error from writing to this spool into a [`DeliveryError`]
    /// that names the tmp file (and maps ENOSPC/EDQUOT to `NoSpace`).
    pub fn error(&self, err: io::Error) -> DeliveryError {
        DeliveryError::io(&self.path, err)
    }

    fn writer(&mut self) -> io::Result<&mut SpoolWriter> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("spool already closed"))
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.writer()?.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer()?.flush()
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            // Throw the buffered bytes away rather than flush them into a
            // doomed file; dropping the file unlinks a named one.
            buffers::give(out.buf);
        }
    }
}

/// The spool file's write buffer: as `BufWriter`, but in a reused content
/// buffer ([`buffers`]), so a message allocates none.
struct SpoolWriter {
    file: TmpFile,
    /// `buffers::CONTENT` bytes; the first `filled` are waiting.
    buf: Vec<u8>,
    filled: usize,
}

impl SpoolWriter {
    /// Writes what is buffered and returns the file; the buffer goes back
    /// for the next message either way.
    fn into_file(mut self) -> io::Result<TmpFile> {
        let flushed = self.flush();
        buffers::give(std::mem::take(&mut self.buf));
        flushed.map(|()| self.file)
    }
}

impl Write for SpoolWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.filled + bytes.len() > self.buf.len() {
            self.flush()?;
        }
        if bytes.len() >= self.buf.len() {
            return self.file.write(bytes);
        }
        self.buf[self.filled..self.filled + bytes.len()].copy_from_slice(bytes);
        self.filled += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let waiting = self.filled;
        self.filled = 0;
        self.file.write_all(&self.buf[..waiting])
    }
}

/// What a Maildir may hold (SPEC §3, §7); a zero is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Budget {
    /// `maildir_quota`: bytes past which new mail is refused.
    pub quota: u64,
    /// `maildir_keep`: bytes past which the oldest messages are removed.
    pub keep: u64,
    /// `maildir_keep_days`: messages older than this are removed.
    pub keep_days: u64,
}

impl Budget {
    /// Whether the Maildir's usage is kept in its `maildirsize`.
    pub fn accounted(&self) -> bool {
        self.quota > 0 || self.keep > 0
    }

    /// The bytes past which something happens to a delivery (pruning,
    /// else refusal); 0: none.
    pub fn limit(&self) -> u64 {
        if self.keep > 0 {
            self.keep
        } else {
            self.quota
        }
    }
}

/// Where one copy of a message goes: `dir`, the Maildir `root` itself or
/// a Maildir++ folder (`.NAME`) in it, counted against the root's budget.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    pub root: &'a Path,
    pub dir: &'a Path,
    pub budget: Budget,
}

impl<'a> Place<'a> {
    /// A Maildir's inbox without a budget.
    pub fn inbox(root: &'a Path) -> Place<'a> {
        Place {
            root,
            dir: root,
            budget: Budget::default(),
        }
    }

    fn is_folder(&self) -> bool {
        self.dir != self.root
    }
}

/// Durable delivery (SPEC §7) into Maildirs without budgets: as
/// [`deliver_to`], each target an inbox held to `quota` (0: none).
pub fn deliver<'a, P>(
    spool: Spool,
    targets: impl IntoIterator<Item = &'a P>,
    quota: u64,
) -> Result<String, DeliveryError>
where
    P: AsRef<Path> + ?Sized + 'a,
{
    let budget = Budget {
        quota,
        ..Budget::default()
    };
    let places: Vec<Place<'_>> = targets
        .into_iter()
        .map(|p| Place {
            budget,
            ..Place::inbox(p.as_ref())
        })
        .collect();
    deliver_to(spool, &places).map(|(id, _)| id)
}

/// Durable delivery (SPEC §7): flush and fsync the spool file, link it into
/// the `new/` of every place (each once, even if listed twice; copying
/// when the link fails with EXDEV), fsync every `new/` directory (shared
/// with concurrent deliveries, [`GroupCommit`]). On failure every link or
/// copy already made is removed and the error is returned.
///
/// Before anything is linked, each Maildir's budget is applied
/// ([`maintenance::make_room`]): its oldest messages are pruned when the
/// message takes it over `keep`, and a Maildir that would still go over
/// its quota fails the message with [`DeliveryError::Quota`]. After, the
/// message is counted in each accounted Maildir's `maildirsize`, and
/// messages past `keep_days` are removed when that check is due. Returns
/// the ID and the file's name in `new/`.
pub fn deliver_to(
    mut spool: Spool,
    places: &[Place<'_>],
) -> Result<(String, String), DeliveryError> {
    let out = spool
        .out
        .take()
        .ok_or_else(|| spool.error(io::Error::other("spool already closed")))?;
    let file = out.into_file().map_err(|e| spool.error(e))?;
    let size = spool.written;

    // Each Maildir once, with the bytes and copies it receives (a message
    // for two of its folders is two copies).
    let mut roots: Vec<(&Path, Budget, u64)> = Vec::new();
    let mut seen_dirs = HashSet::new();
    for place in places.iter().filter(|p| seen_dirs.insert(p.dir)) {
        match roots.iter_mut().find(|(root, _, _)| *root == place.root) {
            Some((_, _, copies)) => *copies += 1,
            None => roots.push((place.root, place.budget, 1)),
        }
    }
    for &(root, budget, copies) in &roots {
        maintenance::make_room(root, budget, size.saturating_mul(copies))?;
    }
    // From here until its link is counted (or it fails), an fsync of these
    // directories that is about to start waits a moment for this message.
    let mut dirs = new_dirs(places)?;
    file.file.sync_all().map_err(|e| spool.error(e))?;

    let name = spool.file_name();
    let mut made = Vec::new();
    // The links and their lines in `maildirsize` go together: no
    // recalculation runs between them (the lock is shared with other
    // deliveries, and held only that long, not across the fsyncs).
    let accounted: Vec<(&Path, u64)> = roots
        .iter()
        .filter(|r| r.1.accounted())
        .map(|&(root, _, copies)| (root, copies))
        .collect();
    let locks = lock_shared(&accounted).map_err(|(root, e)| DeliveryError::io(root, e))?;
    let linked = link_all(&file, &spool, &dirs, &name, &mut made);
    let counted = linked.is_ok();
    if counted {
        count(&accounted, size, 1);
    }
    drop(locks);
    let linked = linked.and_then(|()| commit(&made, &mut dirs));
    if let Err(e) = linked {
        let locks = lock_shared(&accounted);
        for (dir, dest) in &made {
            if let Ok(c_name) = c_string(Path::new(&name)) {
                let _ = unlink_at(dir.fd.as_raw_fd(), &c_name);
            }
            log::debug!("removed {} after a failed delivery", dest.display());
        }
        if counted {
            count(&accounted, size, -1);
        }
        drop(locks);
        // Best effort: make the removals durable too, so a crash cannot bring
        // back a message the client was told to retry.
        for (dir, _) in &made {
            let _ = dir.fd.sync_all();
        }
        return Err(e);
    }
    for &(root, budget, _) in &roots {
        maintenance::expire_when_due(root, budget);
    }
    Ok((spool.id.clone(), name))
}

/// Each Maildir's lock, shared; a Maildir that does not exist yet (made
/// with this message) has none to take and no `maildirsize` to count in.
fn lock_shared<'a>(roots: &[(&'a Path, u64)]) -> Result<Vec<size::Lock>, (&'a Path, io::Error)> {
    let mut locks = Vec::new();
    for &(root, _) in roots {
        match size::Lock::shared(root) {
            Ok(lock) => locks.push(lock),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err((root, e)),
        }
    }
    Ok(locks)
}

/// Counts `sign` times `size` bytes per copy in each Maildir's
/// `maildirsize` (a failure is logged: the next recalculation mends it).
fn count(roots: &[(&Path, u64)], size: u64, sign: i64) {
    for &(root, copies) in roots {
        let bytes = i64::try_from(size.saturating_mul(copies)).unwrap_or(i64::MAX);
        let copies = i64::try_from(copies).unwrap_or(i64::MAX);
        if let Err(e) = size::append(root, sign * bytes, sign * copies) {
            log::warn!(
                "cannot count a message in {}/{}: {e}",
                root.display(),
                size::FILE
            );
        }
    }
}

/// Opens `path` read-only with `flags` and O_NOATIME: reading a file
/// that changed since its last read would write its inode again
/// (relatime), one more metadata block in a journal commit on flash, for
/// `maildirsize` at every quota check and for a message a notify program
/// reads. O_NOATIME is for the file's owner (or CAP_FOWNER); anyone else
/// gets a plain open.
pub fn open_unstamped(path: &Path, flags: i32) -> io::Result<File> {
    let open = |extra| {
        File::options()
            .read(true)
            .custom_flags(flags | extra)
            .open(path)
    };
    match open(crate::sys::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(crate::sys::EPERM) => open(0),
        opened => opened,
    }
}

/// A fresh unique base name, `SECONDS.MMICROSPPIDQCOUNTER.HOST`.
pub fn unique_base() -> String {
    unique_name().1
}

/// A fresh unique ID, `SECONDS.MMICROSPPIDQCOUNTER`: a base name without
/// the host, as [`Spool::id`] gives.
pub fn unique_id() -> String {
    unique_name().0
}

/// Escapes a host name for a Maildir file name: `/` as `\057`, `:` as `\072`.
pub fn escape_host(host: &str) -> String {
    host.replace('/', "\\057").replace(':', "\\072")
}

/// Returns `(id, base)`: the ID is the base name without `.HOST`.
fn unique_name() -> (String, String) {
    // 32 bits: 64-bit atomics do not exist on every target (32-bit MIPS).
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!(
        "{}.M{}P{}Q{}",
        now.as_secs(),
        now.subsec_micros(),
        pid(),
        count
    );
    let base = format!("{id}.{}", host());
    (id, base)
}

/// This process's ID, asked once (smtpbox never forks; glibc does not cache
/// getpid, so this saves a system call per message).
fn pid() -> u32 {
    static PID: OnceLock<u32> = OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// The system host name (uname(2), so right under `ProcSubset=pid`),
/// escaped, read once.
fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| escape_host(&crate::host::system_hostname()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{EDQUOT, ENOSPC};
    use std::os::unix::fs::PermissionsExt;

    /// A unique scratch directory under `root`, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            Scratch::under(&std::env::temp_dir(), tag)
        }

        fn under(root: &Path, tag: &str) -> Scratch {
            let path = root.join(format!("smtpbox-maildir-{tag}-{}", unique_base()));
            fs::create_dir_all(&path).unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn spool_with(maildir: &Path, body: &[u8]) -> Spool {
        let mut spool = Spool::create(maildir).unwrap();
        for piece in body.chunks(7) {
            spool.write_all(piece).unwrap();
        }
        spool
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn ensure_makes_subdirs_0700() {
        let s = Scratch::new("ensure");
        let md = s.0.join("a/Maildir");
        ensure(&md).unwrap();
        ensure(&md).unwrap(); // idempotent
        for sub in ["", "tmp", "new", "cur"] {
            assert_eq!(mode(&md.join(sub)), 0o700, "{sub}");
        }
    }

    /// `SECONDS.MMICROSPPIDQCOUNTER.HOST` with this process's PID and host.
    fn matches_pattern(base: &str) -> Option<()> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (secs, rest) = base.split_once(".M")?;
        let (micros, rest) = rest.split_once('P')?;
        let (pid, rest) = rest.split_once('Q')?;
        let (count, host) = rest.split_once('.')?;
        let ok = digits(secs)
            && digits(micros)
            && micros.parse::<u32>().ok()? < 1_000_000
            && pid == std::process::id().to_string()
            && digits(count)
            && host == super::host()
            && !host.is_empty()
            && !host.contains(['/', ':']);
        ok.then_some(())
    }

    #[test]
    fn names_match_pattern_and_are_unique_across_threads() {
        let threads: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| unique_base()).collect::<Vec<_>>()))
            .collect();
        let mut all = HashSet::new();
        for t in threads {
            for name in t.join().unwrap() {
                assert!(matches_pattern(&name).is_some(), "{name}");
                assert!(all.insert(name), "duplicate name");
            }
        }
        assert_eq!(all.len(), 8000);
    }

    #[test]
    fn escape_host_encodes_slash_and_colon() {
        assert_eq!(escape_host("mx.example.org"), "mx.example.org");
        assert_eq!(escape_host("a/b:c"), "a\\057b\\072c");
    }

    #[test]
    fn delivers_once_per_maildir_with_exact_bytes_and_size() {
        let s = Scratch::new("deliver");
        let (a, b) = (s.0.join("a"), s.0.join("b"));
        let body = b"Subject: hi\r\n\r\nhello\r\n".repeat(50);
        let spool = spool_with(&a, &body);
        let id = spool.id().to_string();
        let a_again = a.join("."); // the same Maildir, spelled differently
        assert_eq!(deliver(spool, &[&a, &b, &a, &a_again], 0).unwrap(), id);
        let expected = format!("{id}.{},S={}", super::host(), body.len());
        for md in [&a, &b] {
            assert_eq!(names(&md.join("new")), vec![expected.clone()]);
            let file = md.join("new").join(&expected);
            assert_eq!(fs::read(&file).unwrap(), body);
            assert_eq!(mode(&file), 0o600);
            assert!(names(&md.join("tmp")).is_empty());
            assert!(names(&md.join("cur")).is_empty());
        }
    }

    #[test]
    fn single_target_remakes_a_missing_new_dir() {
        let s = Scratch::new("remake-new");
        let md = s.0.join("Maildir");
        let body = b"Subject: x\r\n\r\nbody\r\n".to_vec();
        let spool = spool_with(&md, &body);
        fs::remove_dir(md.join("new")).unwrap();
        let id = deliver(spool, &[&md], 0).unwrap();
        let expected = format!("{id}.{},S={}", super::host(), body.len());
        assert_eq!(names(&md.join("new")), vec![expected.clone()]);
        assert_eq!(fs::read(md.join("new").join(expected)).unwrap(), body);
        assert_eq!(mode(&md.join("new")), 0o700);
    }

    #[test]
    fn copies_across_filesystems() {
        // /dev/shm is tmpfs on most Linux systems: a link there fails with
        // EXDEV and delivery must fall back to a copy.
        let shm = Path::new("/dev/shm");
        let s = Scratch::new("exdev");
        match fs::metadata(shm) {
            Ok(meta) if meta.dev() != fs::metadata(&s.0).unwrap().dev() => {}
            _ => return,
        }
        let other = Scratch::under(shm, "exdev");
        let body = b"across filesystems\r\n".repeat(1000);
        let spool = spool_with(&s.0, &body);
        deliver(spool, &[&s.0, &other.0], 0).unwrap();
        let files = names(&other.0.join("new"));
        assert_eq!(files.len(), 1);
        assert_eq!(fs::read(other.0.join("new").join(&files[0])).unwrap(), body);
        assert!(names(&other.0.join("tmp")).is_empty());
        assert_eq!(names(&s.0.join("new")), files);
    }

    #[test]
    fn tmp_is_empty_after_discard_and_drop() {
        // An unnamed spool file has no name in tmp/ at all; a named one
        // (the fallback) has one until it is discarded or dropped.
        for (named, while_spooling) in [(false, 0), (true, 1)] {
            let s = Scratch::new("discard");
            let spool = Spool::create_in(&s.0, named).unwrap();
            assert_eq!(names(&s.0.join("tmp")).len(), while_spooling);
            drop(spool);
            assert!(names(&s.0.join("tmp")).is_empty());
            {
                let _spool = Spool::create_in(&s.0, named).unwrap();
                assert_eq!(names(&s.0.join("tmp")).len(), while_spooling);
            }
            assert!(names(&s.0.join("tmp")).is_empty());
            assert!(names(&s.0.join("new")).is_empty());
        }
    }

    #[test]
    fn rollback_when_second_target_is_unusable() {
        let s = Scratch::new("rollback");
        let (a, b) = (s.0.join("a"), s.0.join("b"));
        fs::create_dir_all(b.join("tmp")).unwrap();
        fs::write(b.join("new"), b"not a directory").unwrap();
        let spool = spool_with(&a, b"message");
        let err = deliver(spool, &[&a, &b], 0).unwrap_err();
        assert!(matches!(err, DeliveryError::Io { .. }), "{err}");
        assert!(names(&a.join("new")).is_empty());
        assert!(names(&a.join("tmp")).is_empty());
    }

    #[test]
    fn rollback_removes_links_already_made() {
        // The link into b fails (the name is taken) after the link into a
        // was made: a's link must go, b's own file must stay.
        let s = Scratch::new("unlink");
        let (a, b) = (s.0.join("a"), s.0.join("b"));
        ensure(&b).unwrap();
        let spool = spool_with(&a, b"message");
        let taken = format!("{},S=7", spool.base);
        fs::write(b.join("new").join(&taken), b"other").unwrap();
        let err = deliver(spool, &[&a, &b], 0).unwrap_err();
        assert!(matches!(err, DeliveryError::Io { .. }), "{err}");
        assert!(err.to_string().contains(&taken), "{err}");
        assert!(names(&a.join("new")).is_empty());
        assert!(names(&a.join("tmp")).is_empty());
        assert_eq!(names(&b.join("new")), vec![taken.clone()]);
        assert_eq!(fs::read(b.join("new").join(&taken)).unwrap(), b"other");
    }

    #[test]
    fn quota_refuses_before_delivering_anything() {
        let s = Scratch::new("quota");
        let (a, b) = (s.0.join("a"), s.0.join("b"));
        ensure(&b).unwrap();
        fs::write(b.join("cur").join("1.M1P1Q1.h,S=100:2,S"), b"x").unwrap();
        let spool = spool_with(&a, &[b'x'; 50]);
        let err = deliver(spool, &[&a, &b], 120).unwrap_err();
        assert!(err.to_string().contains("(100 + 50 > 120 bytes)"), "{err}");
        assert!(matches!(err, DeliveryError::Quota { .. }), "{err}");
        assert!(names(&a.join("new")).is_empty());
        assert!(names(&a.join("tmp")).is_empty());
        assert!(names(&b.join("new")).is_empty());
        // Exactly at the limit is allowed.
        let spool = spool_with(&a, &[b'x'; 50]);
        deliver(spool, &[&a, &b], 150).unwrap();
        assert_eq!(usage(&b).unwrap(), 150);
        // Counted in each Maildir's maildirsize: made at the first quota
        // decision (its header the quota then), then one line for the
        // message. A header that differs from the quota is left as it is
        // (another program may keep its own there).
        let text = fs::read_to_string(b.join(size::FILE)).unwrap();
        assert_eq!(text, "120S\n100 1\n50 1\n");
        assert_eq!(
            fs::read_to_string(a.join(size::FILE)).unwrap(),
            "120S\n0 0\n50 1\n"
        );
    }

    fn usage(dir: &Path) -> io::Result<u64> {
        size::scan(dir, |_| {}).map(|u| u.bytes)
    }

    #[test]
    fn usage_reads_size_from_name_else_metadata() {
        let s = Scratch::new("usage");
        assert_eq!(usage(&s.0.join("missing")).unwrap(), 0);
        ensure(&s.0).unwrap();
        fs::write(s.0.join("new").join("1.M1P1Q1.h,S=1000"), b"x").unwrap();
        fs::write(s.0.join("cur").join("2.M1P1Q1.h,S=20,W=21:2,S"), b"x").unwrap();
        fs::write(s.0.join("cur").join("3.M1P1Q1.h:2,S"), b"12345").unwrap();
        fs::write(s.0.join("cur").join(".hidden"), b"1234567").unwrap();
        fs::write(s.0.join("tmp").join("4.M1P1Q1.h"), b"ignored").unwrap();
        fs::write(s.0.join(size::FILE), b"1S\n7 1\n").unwrap();
        assert_eq!(usage(&s.0).unwrap(), 1025);
        // Maildir++ folders count; files in the root, tmp/ and a folder's
        // maildirfolder do not.
        ensure_folder(&s.0, &s.0.join(".disk")).unwrap();
        fs::write(s.0.join(".disk/cur").join("6.M1P1Q1.h,S=300:2,"), b"x").unwrap();
        fs::write(s.0.join(".disk/new").join("7.M1P1Q1.h,S=400"), b"x").unwrap();
        assert_eq!(usage(&s.0).unwrap(), 1725);
        assert_eq!(size_from_name("5.M1P1Q1.h:2,S=12"), None);
    }

    #[test]
    fn clean_tmp_removes_only_old_files() {
        let s = Scratch::new("clean");
        ensure(&s.0).unwrap();
        let old = s.0.join("tmp").join("old");
        fs::write(&old, b"x").unwrap();
        fs::write(s.0.join("tmp").join("fresh"), b"x").unwrap();
        let then = SystemTime::now() - Duration::from_secs(37 * 3600);
        let file = File::options().write(true).open(&old).unwrap();
        file.set_modified(then).unwrap();
        assert_eq!(clean_tmp(&s.0, Duration::from_secs(36 * 3600)).unwrap(), 1);
        assert_eq!(names(&s.0.join("tmp")), vec!["fresh".to_string()]);
    }

    /// The failure SMTP answers with `451 4.3.0` (session.rs maps it).
    fn local_error(err: &DeliveryError) -> bool {
        matches!(err, DeliveryError::Io { .. })
    }

    /// Both ways of spooling: unnamed (O_TMPFILE) and the named fallback.
    const MODES: [bool; 2] = [false, true];

    #[test]
    fn named_fallback_delivers_exact_bytes_and_copies_across_filesystems() {
        let s = Scratch::new("named");
        let shm = Scratch::under(Path::new("/dev/shm"), "named");
        let (a, b) = (s.0.join("a"), shm.0.join("b"));
        let body = b"Subject: named\r\n\r\nbody\r\n".repeat(3000);
        let mut spool = Spool::create_in(&a, true).unwrap();
        spool.write_all(&body).unwrap();
        let id = deliver(spool, &[&a, &b], 0).unwrap();
        let expected = format!("{id}.{},S={}", super::host(), body.len());
        for md in [&a, &b] {
            assert_eq!(names(&md.join("new")), vec![expected.clone()]);
            assert_eq!(fs::read(md.join("new").join(&expected)).unwrap(), body);
            assert!(names(&md.join("tmp")).is_empty(), "{}", md.display());
        }
    }

    #[test]
    fn named_spool_swapped_in_tmp_is_not_linked() {
        // A file and a symlink renamed over tmp/NAME after the message was
        // written: the fallback compares inodes and fails closed.
        for swap in ["file", "symlink"] {
            let s = Scratch::new("swap");
            let md = s.0.join("Maildir");
            let spool = spool_with_mode(&md, b"the real message\r\n", true);
            let name = names(&md.join("tmp")).pop().unwrap();
            let evil = s.0.join("evil");
            fs::write(&evil, b"attacker's bytes\r\n").unwrap();
            let planted = s.0.join("planted");
            match swap {
                "file" => fs::copy(&evil, &planted).map(drop).unwrap(),
                _ => std::os::unix::fs::symlink(&evil, &planted).unwrap(),
            }
            fs::rename(&planted, md.join("tmp").join(&name)).unwrap();
            let err = deliver(spool, &[&md], 0).unwrap_err();
            assert!(local_error(&err), "{swap}: {err}");
            assert!(err.to_string().contains("replaced in tmp/"), "{err}");
            assert!(names(&md.join("new")).is_empty(), "{swap}");
            assert_eq!(fs::read(&evil).unwrap(), b"attacker's bytes\r\n");
        }
    }

    #[test]
    fn unnamed_spool_ignores_names_planted_in_tmp() {
        let s = Scratch::new("plant");
        let md = s.0.join("Maildir");
        let body = b"Subject: x\r\n\r\nreal\r\n";
        let spool = spool_with_mode(&md, body, false);
        // Every likely name, as a file and as a symlink.
        let evil = s.0.join("evil");
        fs::write(&evil, b"attacker").unwrap();
        let tmp = md.join("tmp");
        fs::write(tmp.join(&spool.base), b"attacker").unwrap();
        std::os::unix::fs::symlink(&evil, tmp.join(format!("{},S=20", spool.base))).unwrap();
        let id = deliver(spool, &[&md], 0).unwrap();
        let stored = names(&md.join("new"));
        assert_eq!(stored.len(), 1);
        assert!(stored[0].starts_with(&id));
        let path = md.join("new").join(&stored[0]);
        assert!(fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(fs::read(path).unwrap(), body);
    }

    fn spool_with_mode(maildir: &Path, body: &[u8], named: bool) -> Spool {
        let mut spool = Spool::create_in(maildir, named).unwrap();
        spool.write_all(body).unwrap();
        spool
    }

    #[test]
    fn symlinked_new_fails_451_and_writes_nothing_there() {
        for named in MODES {
            let s = Scratch::new("newlink");
            let (md, other) = (s.0.join("alice"), s.0.join("other"));
            ensure(&md).unwrap();
            fs::create_dir(&other).unwrap();
            // A first message opens (and caches) the real new/.
            deliver(spool_with_mode(&md, b"first\r\n", named), &[&md], 0).unwrap();
            fs::rename(md.join("new"), s.0.join("old-new")).unwrap();
            std::os::unix::fs::symlink(&other, md.join("new")).unwrap();
            let err = deliver(spool_with_mode(&md, b"second\r\n", named), &[&md], 0).unwrap_err();
            assert!(local_error(&err), "{err}");
            let text = err.to_string();
            let path = md.join("new").display().to_string();
            assert!(
                text.contains(&path) && text.contains("symbolic link"),
                "{text}"
            );
            assert!(names(&other).is_empty());
            assert_eq!(names(&s.0.join("old-new")).len(), 1);
            assert!(names(&md.join("tmp")).is_empty());
        }
    }

    #[test]
    fn symlinked_tmp_fails_451_and_writes_nothing_there() {
        for named in MODES {
            let s = Scratch::new("tmplink");
            let (md, other) = (s.0.join("alice"), s.0.join("other"));
            ensure(&md).unwrap();
            fs::create_dir(&other).unwrap();
            fs::remove_dir(md.join("tmp")).unwrap();
            std::os::unix::fs::symlink(&other, md.join("tmp")).unwrap();
            let err = Spool::create_in(&md, named).err().unwrap();
            assert!(local_error(&err), "{err}");
            let text = err.to_string();
            let path = md.join("tmp").display().to_string();
            assert!(
                text.contains(&path) && text.contains("symbolic link"),
                "{text}"
            );
            assert!(names(&other).is_empty());
        }
    }

    #[test]
    fn existing_name_in_new_is_451_and_never_overwritten() {
        for named in MODES {
            let s = Scratch::new("collide");
            let md = s.0.join("Maildir");
            let spool = spool_with_mode(&md, b"message", named);
            // The exact name this delivery will use.
            let taken = format!("{},S=7", spool.base);
            fs::write(md.join("new").join(&taken), b"other").unwrap();
            let err = deliver(spool, &[&md], 0).unwrap_err();
            assert!(local_error(&err), "{err}");
            assert!(err.to_string().contains(&taken), "{err}");
            assert_eq!(names(&md.join("new")), vec![taken.clone()]);
            assert_eq!(fs::read(md.join("new").join(&taken)).unwrap(), b"other");
            assert!(names(&md.join("tmp")).is_empty());
        }
    }

    #[test]
    fn a_replaced_new_dir_gets_the_next_message() {
        // The cached descriptor of new/ is used only while new/ is still
        // the directory it refers to.
        let s = Scratch::new("replaced");
        let md = s.0.join("Maildir");
        deliver(spool_with(&md, b"one\r\n"), &[&md], 0).unwrap();
        fs::rename(md.join("new"), s.0.join("old-new")).unwrap();
        fs::create_dir(md.join("new")).unwrap();
        deliver(spool_with(&md, b"two\r\n"), &[&md], 0).unwrap();
        let stored = names(&md.join("new"));
        assert_eq!(stored.len(), 1);
        assert_eq!(
            fs::read(md.join("new").join(&stored[0])).unwrap(),
            b"two\r\n"
        );
        assert_eq!(names(&s.0.join("old-new")).len(), 1);
    }

    /// An injected fsync that blocks until released, recording when it ran.
    struct Gate {
        started: std::sync::mpsc::Sender<u64>,
        release: Mutex<std::sync::mpsc::Receiver<()>>,
    }

    #[test]
    fn a_link_made_after_the_fsync_began_does_not_ride_on_it() {
        use std::sync::mpsc::channel;
        let commit = Arc::new(GroupCommit::default());
        let (started_tx, started) = channel();
        let (release, release_rx) = channel();
        let gate = Arc::new(Gate {
            started: started_tx,
            release: Mutex::new(release_rx),
        });
        let syncs = Arc::new(AtomicU32::new(0));
        let fsync = |gate: &Arc<Gate>, syncs: &Arc<AtomicU32>| {
            let (gate, syncs) = (Arc::clone(gate), Arc::clone(syncs));
            move || {
                let n = syncs.fetch_add(1, Ordering::SeqCst) + 1;
                gate.started.send(u64::from(n)).unwrap();
                // Bounded: a test that goes wrong fails instead of hanging.
                let released = lock(&gate.release).recv_timeout(Duration::from_secs(10));
                released.map_err(|_| io::Error::other("never released"))
            }
        };
        // Link 1, then its fsync starts and blocks.
        let t1 = commit.ticket();
        let first = {
            let (c, f) = (Arc::clone(&commit), fsync(&gate, &syncs));
            std::thread::spawn(move || c.wait(t1, f))
        };
        let next_fsync = || started.recv_timeout(Duration::from_secs(10)).ok();
        assert_eq!(next_fsync(), Some(1));
        // Links 2 and 3 return while fsync 1 runs.
        let done = Arc::new(AtomicU32::new(0));
        let later: Vec<_> = (0..2)
            .map(|_| {
                let t = commit.ticket();
                let (c, f, d) = (Arc::clone(&commit), fsync(&gate, &syncs), Arc::clone(&done));
                std::thread::spawn(move || {
                    let r = c.wait(t, f);
                    d.fetch_add(1, Ordering::SeqCst);
                    r
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        release.send(()).unwrap();
        first.join().unwrap().unwrap();
        // Fsync 1 is over, but it began before links 2 and 3: they are
        // still waiting, for one fsync that starts now and covers both.
        assert_eq!(next_fsync(), Some(2), "links 2 and 3 rode on fsync 1");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(done.load(Ordering::SeqCst), 0, "rode on an earlier fsync");
        release.send(()).unwrap();
        for t in later {
            t.join().unwrap().unwrap();
        }
        assert_eq!(syncs.load(Ordering::SeqCst), 2, "links 2 and 3 share one");
        assert!(started.try_recv().is_err());
    }

    /// A group commit that gathers for `gather`, and an fsync for it that
    /// counts its runs.
    fn gathering(gather: Duration) -> (Arc<GroupCommit>, Arc<AtomicU32>) {
        let commit = GroupCommit {
            gather,
            ..GroupCommit::default()
        };
        (Arc::new(commit), Arc::new(AtomicU32::new(0)))
    }

    fn counted(syncs: &Arc<AtomicU32>) -> impl FnOnce() -> io::Result<()> {
        let syncs = Arc::clone(syncs);
        move || {
            syncs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// Polls until a caller is gathering (bounded).
    fn wait_until_gathering(commit: &GroupCommit) {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while lock(&commit.state).gatherer.is_none() {
            assert!(std::time::Instant::now() < end, "nobody gathered");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn an_fsync_waits_for_a_delivery_under_way_and_covers_it() {
        let (commit, syncs) = gathering(Duration::from_secs(10));
        // B is under way (its file being fsynced) when A's link returns.
        let b = commit.arriving();
        let a = {
            let (c, f) = (Arc::clone(&commit), counted(&syncs));
            std::thread::spawn(move || {
                let arrival = c.arriving();
                c.durable(Some(arrival), f)
            })
        };
        wait_until_gathering(&commit);
        assert_eq!(
            syncs.load(Ordering::SeqCst),
            0,
            "A ran its fsync without waiting"
        );
        // B links: one fsync, started after both links, covers both.
        let never = || -> io::Result<()> { panic!("B ran an fsync of its own") };
        let started = std::time::Instant::now();
        commit.durable(Some(b), never).unwrap();
        a.join().unwrap().unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "A waited out its bound"
        );
        assert_eq!(lock(&commit.state).arriving, 0);
    }

    #[test]
    fn gathering_is_bounded_and_a_failed_delivery_ends_it() {
        // A delivery under way that never links delays the fsync by the
        // bound only.
        let (commit, syncs) = gathering(Duration::from_millis(50));
        let stuck = commit.arriving();
        let started = std::time::Instant::now();
        commit
            .durable(Some(commit.arriving()), counted(&syncs))
            .unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(50),
            "did not gather: {waited:?}"
        );
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
        drop(stuck);
        // One that fails (its arrival dropped) wakes the gatherer at once.
        let (commit, syncs) = gathering(Duration::from_secs(10));
        let failing = commit.arriving();
        let a = {
            let (c, f) = (Arc::clone(&commit), counted(&syncs));
            std::thread::spawn(move || c.durable(Some(c.arriving()), f))
        };
        wait_until_gathering(&commit);
        let started = std::time::Instant::now();
        drop(failing);
        a.join().unwrap().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the gatherer was not woken"
        );
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_single_delivery_does_not_wait() {
        let (commit, syncs) = gathering(Duration::from_secs(10));
        let started = std::time::Instant::now();
        commit
            .durable(Some(commit.arriving()), counted(&syncs))
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(syncs.load(Ordering::SeqCst), 1);
        // The counted arrival let go of the group commit (nothing leaks
        // per message), and a dropped one is counted out once.
        assert_eq!(Arc::strong_count(&commit), 1);
        drop(commit.arriving());
        assert_eq!(lock(&commit.state).arriving, 0);
        assert_eq!(Arc::strong_count(&commit), 1);
    }

    #[test]
    fn an_fsync_failure_fails_every_link_it_covered() {
        let commit = GroupCommit::default();
        let (t1, t2) = (commit.ticket(), commit.ticket());
        let eio = || Err(io::Error::from_raw_os_error(5));
        assert_eq!(commit.wait(t2, eio).unwrap_err().raw_os_error(), Some(5));
        // Link 1 was covered by that failed fsync: no second try.
        let never = || -> io::Result<()> { panic!("a second fsync for a failed generation") };
        assert_eq!(commit.wait(t1, never).unwrap_err().raw_os_error(), Some(5));
        // A later link gets its own fsync.
        let t3 = commit.ticket();
        commit.wait(t3, || Ok(())).unwrap();
    }

    #[test]
    fn concurrent_deliveries_into_one_new_all_land() {
        let s = Scratch::new("concurrent");
        let md = s.0.join("Maildir");
        ensure(&md).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let md = md.clone();
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let body = format!("thread {t} message {i}\r\n");
                        deliver(spool_with(&md, body.as_bytes()), &[&md], 0).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(names(&md.join("new")).len(), 160);
        assert!(names(&md.join("tmp")).is_empty());
    }

    #[test]
    fn full_disk_errors_are_no_space() {
        let error =
            |errno| DeliveryError::io(Path::new("/m/new/x"), io::Error::from_raw_os_error(errno));
        let full = |e: DeliveryError| matches!(e, DeliveryError::NoSpace { .. });
        assert!(full(error(ENOSPC)));
        assert!(full(error(EDQUOT)));
        let wrapped = io::Error::other(io::Error::from_raw_os_error(ENOSPC));
        assert!(full(DeliveryError::io(Path::new("x"), wrapped)));
        let eio = error(5);
        assert!(local_error(&eio));
        let text = eio.to_string();
        assert!(
            text.starts_with("/m/new/x: ") && text.contains("os error 5"),
            "{text}"
        );
    }
}
