//! Maildir delivery (SPEC §7), qmail style: a message is written once to a
//! file exclusively created in `tmp/`, fsynced, then hard-linked (or copied
//! when on another filesystem) into the `new/` of every recipient's Maildir,
//! and every `new/` directory is fsynced before the client is told `250`.
//! Any failure removes what was already linked, so no `new/` ever holds a
//! partial or half-delivered message.
//!
//! File names: `SECONDS.MMICROSPPIDQCOUNTER.HOST,S=SIZE` in `new/`, the same
//! without `,S=SIZE` in `tmp/` (the size is unknown until the end).

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::reply::Reply;

/// Creates DIR, DIR/tmp, DIR/new and DIR/cur with mode 0700 when missing
/// (missing parents of DIR too). Existing directories are left as they are.
pub fn ensure(dir: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder.create(dir)?;
    for sub in ["tmp", "new", "cur"] {
        builder.create(dir.join(sub))?;
    }
    Ok(())
}

/// A message being received: a file exclusively created (mode 0600) in
/// `<maildir>/tmp/` under a unique name. Writes are buffered. Dropping a
/// `Spool` that was not delivered removes its file, so an aborted session
/// never leaves anything in `tmp/`.
pub struct Spool {
    out: Option<BufWriter<File>>,
    /// Bytes accepted so far: the file's size once the buffer is flushed.
    written: u64,
    path: PathBuf,
    base: String,
    id: String,
}

impl Spool {
    /// Creates a new tmp file in `maildir`, making the Maildir first when it
    /// is missing. Create the spool in one of the target Maildirs (or on the
    /// same filesystem) so delivery is a hard link rather than a copy.
    pub fn create(maildir: &Path) -> Result<Spool, DeliveryError> {
        let tmp = maildir.join("tmp");
        // The name is unique by construction; a clash means a stale file from
        // a recycled PID, so take a fresh counter value and try again.
        let mut attempts = 0;
        loop {
            let (id, base) = unique_name();
            let path = tmp.join(&base);
            let opened = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
            match opened {
                Ok(file) => {
                    let out = Some(BufWriter::with_capacity(64 * 1024, file));
                    return Ok(Spool {
                        out,
                        written: 0,
                        path,
                        base,
                        id,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 3 => {
                    attempts += 1;
                }
                // The common case costs no mkdir calls: only a missing
                // Maildir is made, once.
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => {
                    ensure(maildir).map_err(|e| DeliveryError::io(maildir, e))?;
                    attempts += 1;
                }
                Err(e) => return Err(DeliveryError::io(&path, e)),
            }
        }
    }

    /// The message ID shown to the client, in logs and in the Received
    /// header: the unique name without the host part.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tmp file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Turns an error from writing to this spool into a [`DeliveryError`]
    /// that names the tmp file (and maps ENOSPC/EDQUOT to `NoSpace`).
    pub fn error(&self, err: io::Error) -> DeliveryError {
        DeliveryError::io(&self.path, err)
    }

    fn writer(&mut self) -> io::Result<&mut BufWriter<File>> {
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
            // Throw the buffer away rather than flush it into a doomed file.
            let _ = out.into_parts();
        }
        // After a delivery the links in new/ hold the data; otherwise the
        // message is abandoned. Either way the tmp name goes.
        let _ = fs::remove_file(&self.path);
    }
}

/// Durable delivery (SPEC §7): flush and fsync the tmp file, hard-link it into
/// the `new/` of every target Maildir (each once, even if listed twice;
/// copying when the link fails with EXDEV), fsync every `new/` directory, then
/// remove the tmp file. On failure every link or copy already made is
/// removed, the tmp file too, and the error is returned. With `quota > 0`, a
/// target whose usage plus this message would exceed `quota` fails with
/// [`DeliveryError::Quota`] before anything is linked. Returns the ID.
pub fn deliver(mut spool: Spool, targets: &[&Path], quota: u64) -> Result<String, DeliveryError> {
    let out = spool
        .out
        .take()
        .ok_or_else(|| spool.error(io::Error::other("spool already closed")))?;
    let file = out.into_inner().map_err(|e| spool.error(e.into_error()))?;
    file.sync_all().map_err(|e| spool.error(e))?;
    drop(file);
    let size = spool.written;

    let maildirs = distinct_maildirs(targets)?;
    if quota > 0 {
        for dir in &maildirs {
            let used = usage(dir).map_err(|e| DeliveryError::io(dir, e))?;
            if used.saturating_add(size) > quota {
                return Err(DeliveryError::Quota {
                    maildir: dir.to_path_buf(),
                    used,
                    size,
                    quota,
                });
            }
        }
    }

    let name = format!("{},S={}", spool.base, size);
    let mut made = Vec::new();
    let linked = link_all(&spool, &maildirs, &name, &mut made).and_then(|()| sync_new(&maildirs));
    if let Err(e) = linked {
        for path in &made {
            let _ = fs::remove_file(path);
        }
        // Best effort: make the removals durable too, so a crash cannot bring
        // back a message the client was told to retry.
        let _ = sync_new(&maildirs);
        return Err(e);
    }
    // Drop removes the tmp file.
    Ok(spool.id.clone())
}

/// Drops a message that will not be delivered: removes its tmp file.
pub fn discard(spool: Spool) {
    drop(spool);
}

/// Why a delivery failed. Every variant maps to a temporary (4xx) reply.
#[derive(Debug)]
pub enum DeliveryError {
    /// The message would take `maildir` over its quota.
    Quota {
        maildir: PathBuf,
        used: u64,
        size: u64,
        quota: u64,
    },
    /// ENOSPC or EDQUOT while working on `path`.
    NoSpace { path: PathBuf, source: io::Error },
    /// Any other I/O error while working on `path`.
    Io { path: PathBuf, source: io::Error },
}

const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;
const EXDEV: i32 = 18;

impl DeliveryError {
    /// Wraps an I/O error on `path`, classifying a full disk as `NoSpace`.
    pub fn io(path: &Path, source: io::Error) -> DeliveryError {
        let path = path.to_path_buf();
        if is_no_space(&source) {
            DeliveryError::NoSpace { path, source }
        } else {
            DeliveryError::Io { path, source }
        }
    }

    /// The SMTP reply for this failure (SPEC §7).
    pub fn reply(&self) -> Reply {
        match self {
            DeliveryError::Quota { .. } => Reply::new(452, "4.2.2", "Mailbox full"),
            DeliveryError::NoSpace { .. } => {
                Reply::new(452, "4.3.1", "Insufficient system storage")
            }
            DeliveryError::Io { .. } => Reply::new(451, "4.3.0", "Local error in processing"),
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Quota {
                maildir,
                used,
                size,
                quota,
            } => write!(
                f,
                "{}: quota exceeded ({used} + {size} > {quota} bytes)",
                maildir.display()
            ),
            DeliveryError::NoSpace { path, source } | DeliveryError::Io { path, source } => {
                write!(f, "{}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for DeliveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeliveryError::Quota { .. } => None,
            DeliveryError::NoSpace { source, .. } | DeliveryError::Io { source, .. } => {
                Some(source)
            }
        }
    }
}

/// Bytes used by a Maildir: the sizes of the messages in `new/` and `cur/`,
/// taken from `,S=SIZE` in the file name when present, else from metadata.
/// Missing subdirectories count as empty.
pub fn usage(dir: &Path) -> io::Result<u64> {
    let mut total = 0u64;
    for sub in ["new", "cur"] {
        let entries = match fs::read_dir(dir.join(sub)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let size = match size_from_name(&name) {
                Some(size) => size,
                // A mail reader may move or delete the file meanwhile.
                None => match entry.metadata() {
                    Ok(meta) if meta.is_file() => meta.len(),
                    Ok(_) => 0,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(e),
                },
            };
            total = total.saturating_add(size);
        }
    }
    Ok(total)
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

/// A fresh unique base name, `SECONDS.MMICROSPPIDQCOUNTER.HOST`.
pub fn unique_base() -> String {
    unique_name().1
}

/// Escapes a host name for a Maildir file name: `/` as `\057`, `:` as `\072`.
pub fn escape_host(host: &str) -> String {
    host.replace('/', "\\057").replace(':', "\\072")
}

/// Returns `(id, base)`: the ID is the base name without `.HOST`.
fn unique_name() -> (String, String) {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
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

/// The system host name, escaped, read once.
fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let name = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let name = name.trim();
        escape_host(if name.is_empty() { "localhost" } else { name })
    })
}

/// Drops duplicate targets (same directory by device and inode, however the
/// path is spelled), making any Maildir that is missing. A single target
/// costs no system call: the spool was made in it, and `link_all` makes a
/// `new/` that has gone missing.
fn distinct_maildirs<'a>(targets: &[&'a Path]) -> Result<Vec<&'a Path>, DeliveryError> {
    if let [one] = targets {
        return Ok(vec![*one]);
    }
    let mut seen = HashSet::new();
    let mut dirs = Vec::new();
    for &dir in targets {
        let meta = fs::metadata(dir.join("new")).or_else(|e| {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(e);
            }
            ensure(dir)?;
            fs::metadata(dir.join("new"))
        });
        let meta = meta.map_err(|e| DeliveryError::io(dir, e))?;
        if seen.insert((meta.dev(), meta.ino())) {
            dirs.push(dir);
        }
    }
    Ok(dirs)
}

/// Links (or copies) the spool file to `new/NAME` in every Maildir, recording
/// each file made in `made` so the caller can roll back.
fn link_all(
    spool: &Spool,
    maildirs: &[&Path],
    name: &str,
    made: &mut Vec<PathBuf>,
) -> Result<(), DeliveryError> {
    for dir in maildirs {
        let dest = dir.join("new").join(name);
        let mut linked = fs::hard_link(&spool.path, &dest);
        if matches!(&linked, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            ensure(dir).map_err(|e| DeliveryError::io(dir, e))?;
            linked = fs::hard_link(&spool.path, &dest);
        }
        match linked {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(EXDEV) => {
                copy_into(&spool.path, dir, &spool.base, &dest)?;
            }
            Err(e) => return Err(DeliveryError::io(&dest, e)),
        }
        made.push(dest);
    }
    Ok(())
}

/// Delivers to a Maildir on another filesystem: copies `src` into
/// `maildir/tmp/BASE`, fsyncs it, links it to `dest`, and removes the copy's
/// tmp name, so `dest` only ever names a complete file.
#[inline(never)] // io::copy's 8 KiB buffer stays out of deliver's frame.
fn copy_into(src: &Path, maildir: &Path, base: &str, dest: &Path) -> Result<(), DeliveryError> {
    let tmp = maildir.join("tmp").join(base);
    let mut input = File::open(src).map_err(|e| DeliveryError::io(src, e))?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| DeliveryError::io(&tmp, e))?;
    let copied = io::copy(&mut input, &mut output)
        .and_then(|_| output.sync_all())
        .map_err(|e| DeliveryError::io(&tmp, e))
        .and_then(|()| fs::hard_link(&tmp, dest).map_err(|e| DeliveryError::io(dest, e)));
    let _ = fs::remove_file(&tmp);
    copied
}

/// Fsyncs the `new/` directory of every Maildir, making the links durable.
fn sync_new(maildirs: &[&Path]) -> Result<(), DeliveryError> {
    for dir in maildirs {
        let new = dir.join("new");
        File::open(&new)
            .and_then(|d| d.sync_all())
            .map_err(|e| DeliveryError::io(&new, e))?;
    }
    Ok(())
}

/// The `S=SIZE` field of a Maildir++ file name (`BASE,S=SIZE[,…][:2,FLAGS]`).
fn size_from_name(name: &str) -> Option<u64> {
    let fields = name.split(':').next()?;
    fields
        .split(',')
        .skip(1)
        .find_map(|field| field.strip_prefix("S="))
        .and_then(|size| size.parse().ok())
}

/// True when the error, or any error it wraps, is ENOSPC or EDQUOT.
fn is_no_space(err: &io::Error) -> bool {
    let full = |e: &io::Error| matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT));
    if full(err) {
        return true;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = err.get_ref().map(|e| e as _);
    while let Some(e) = next {
        next = match e.downcast_ref::<io::Error>() {
            Some(inner) if full(inner) => return true,
            Some(inner) => inner.get_ref().map(|e| e as _),
            None => e.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let s = Scratch::new("discard");
        let spool = spool_with(&s.0, b"data");
        assert_eq!(names(&s.0.join("tmp")).len(), 1);
        discard(spool);
        assert!(names(&s.0.join("tmp")).is_empty());
        {
            let _spool = spool_with(&s.0, b"data");
            assert_eq!(names(&s.0.join("tmp")).len(), 1);
        }
        assert!(names(&s.0.join("tmp")).is_empty());
        assert!(names(&s.0.join("new")).is_empty());
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
        assert_eq!(err.reply(), Reply::new(452, "4.2.2", "Mailbox full"));
        assert!(names(&a.join("new")).is_empty());
        assert!(names(&a.join("tmp")).is_empty());
        assert!(names(&b.join("new")).is_empty());
        // Exactly at the limit is allowed.
        let spool = spool_with(&a, &[b'x'; 50]);
        deliver(spool, &[&a, &b], 150).unwrap();
        assert_eq!(usage(&b).unwrap(), 150);
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
        assert_eq!(usage(&s.0).unwrap(), 1025);
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

    #[test]
    fn errors_map_to_replies() {
        let error =
            |errno| DeliveryError::io(Path::new("/m/new/x"), io::Error::from_raw_os_error(errno));
        let full = Reply::new(452, "4.3.1", "Insufficient system storage");
        assert_eq!(error(ENOSPC).reply(), full);
        assert_eq!(error(EDQUOT).reply(), full);
        let wrapped = io::Error::other(io::Error::from_raw_os_error(ENOSPC));
        assert_eq!(DeliveryError::io(Path::new("x"), wrapped).reply(), full);
        let eio = error(5);
        assert_eq!(
            eio.reply(),
            Reply::new(451, "4.3.0", "Local error in processing")
        );
        let text = eio.to_string();
        assert!(
            text.starts_with("/m/new/x: ") && text.contains("os error 5"),
            "{text}"
        );
    }
}
