//! Linking a fsynced spool file into every target's `new/`, and the
//! group commit that lets deliveries into one `new/` share its fsync.

use super::*;

/// One target's `new/`: the Maildir it belongs to, the directory (opened
/// O_NOFOLLOW, cached) and its path for messages.
pub(super) struct NewDir<'a> {
    pub(super) maildir: &'a Path,
    pub(super) dir: Arc<Dir>,
    pub(super) path: PathBuf,
    /// This delivery, announced to the directory's group commit.
    pub(super) arrival: Option<Arrival>,
}

/// A `new/` directory opened `O_DIRECTORY | O_NOFOLLOW`, kept open across
/// messages, with the group-commit state of its fsyncs.
pub(super) struct Dir {
    pub(super) fd: File,
    pub(super) commit: Arc<GroupCommit>,
}

/// The `new/` of every target, each directory once (by device and inode,
/// however the path is spelled), making a Maildir that is missing. A `new/`
/// that is a symlink or not a directory fails the message.
pub(super) fn new_dirs<'a>(places: &[Place<'a>]) -> Result<Vec<NewDir<'a>>, DeliveryError> {
    let mut seen = HashSet::new();
    let mut dirs = Vec::new();
    for place in places {
        let maildir = place.dir;
        let path = maildir.join("new");
        let (key, dir) = open_new(place, &path).map_err(|e| DeliveryError::io(&path, e))?;
        if seen.insert(key) {
            let arrival = Some(dir.commit.arriving());
            dirs.push(NewDir {
                maildir,
                dir,
                path,
                arrival,
            });
        }
    }
    Ok(dirs)
}

/// The open `new/` of `maildir`, from the cache when the directory now
/// named `path` is one already open. One `statx` per message instead of
/// `open`, `fsync` and `close`.
///
/// Why a cached descriptor is safe: the name is looked up (without following
/// a symlink) for every message, and the cache is keyed by the device and
/// inode found there, so a `new/` that was renamed, removed or replaced by
/// another directory is never used for a later message: the new directory
/// gets its own entry. The cached descriptor pins its inode, so its number
/// cannot be reused by another directory while the entry exists. A rename
/// between the lookup and the link puts the message where a rename just
/// after the link would have.
pub(super) fn open_new(place: &Place<'_>, path: &Path) -> io::Result<((u64, u64), Arc<Dir>)> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if place.is_folder() {
                ensure_folder(place.root, place.dir)?;
            } else {
                ensure(place.dir)?;
            }
            fs::symlink_metadata(path)?
        }
        other => other?,
    };
    if meta.file_type().is_symlink() {
        return Err(symlink_refused());
    }
    if !meta.is_dir() {
        return Err(io::ErrorKind::NotADirectory.into());
    }
    let key = (meta.dev(), meta.ino());
    let cached = open_dirs().read().map(|dirs| dirs.get(&key).cloned());
    if let Ok(Some(dir)) = cached {
        return Ok((key, dir));
    }
    let fd = open_dir(path)?;
    let meta = fd.metadata()?;
    let key = (meta.dev(), meta.ino());
    let mut dirs = open_dirs()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Directories that went away keep an entry (and a descriptor) each;
    // drop the idle ones now and then so they cannot pile up.
    if dirs.len() >= 256 {
        dirs.retain(|_, dir| Arc::strong_count(dir) > 1);
    }
    let dir = dirs.entry(key).or_insert_with(|| {
        Arc::new(Dir {
            fd,
            commit: Arc::default(),
        })
    });
    Ok((key, Arc::clone(dir)))
}

/// Open `new/` directories by (device, inode).
/// A read lock for the lookup of every message: concurrent deliveries do
/// not contend (no futex call); only a newly opened directory writes.
type OpenDirs = RwLock<HashMap<(u64, u64), Arc<Dir>>>;

pub(super) fn open_dirs() -> &'static OpenDirs {
    static DIRS: OnceLock<OpenDirs> = OnceLock::new();
    DIRS.get_or_init(Default::default)
}

/// Locks a mutex; a thread that panicked while holding it (none should)
/// left consistent data, since every critical section here is a few
/// assignments.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Links (or copies) the spool file to `new/NAME` in every Maildir,
/// recording each file made in `made` so the caller can roll back.
pub(super) fn link_all(
    file: &TmpFile,
    spool: &Spool,
    dirs: &[NewDir<'_>],
    name: &str,
    made: &mut Vec<(Arc<Dir>, PathBuf)>,
) -> Result<(), DeliveryError> {
    let c_name = c_string(Path::new(name)).map_err(|e| spool.error(e))?;
    for target in dirs {
        let dest = target.path.join(name);
        match file.link(&target.dir, &c_name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                copy_into(file, spool, target, &c_name).map_err(|e| DeliveryError::io(&dest, e))?;
            }
            Err(e) => return Err(DeliveryError::io(&dest, e)),
        }
        made.push((Arc::clone(&target.dir), dest));
    }
    Ok(())
}

/// Delivers to a Maildir on another filesystem: copies the spool file by
/// descriptor into a new file in that Maildir's `tmp/`, fsyncs it and links
/// it into `new/` the same way, so `new/NAME` only ever names a complete,
/// durable file.
#[inline(never)] // The copy buffer stays out of deliver's frame.
pub(super) fn copy_into(
    src: &TmpFile,
    spool: &Spool,
    target: &NewDir<'_>,
    name: &CStr,
) -> io::Result<()> {
    let mut copy = TmpFile::create(target.maildir, &spool.base, spool.named)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    loop {
        let n = match src.file.read_at(&mut buf, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        copy.file.write_all(&buf[..n])?;
        offset += n as u64;
    }
    copy.file.sync_all()?;
    copy.link(&target.dir, name)
}

/// Makes every link in `made` durable: an fsync of each `new/` that
/// started after the link returned. `dirs` are the ones linked into, in
/// the same order, with the delivery's arrivals.
pub(super) fn commit(
    made: &[(Arc<Dir>, PathBuf)],
    dirs: &mut [NewDir<'_>],
) -> Result<(), DeliveryError> {
    for (i, (dir, dest)) in made.iter().enumerate() {
        let arrival = dirs.get_mut(i).and_then(|d| d.arrival.take());
        dir.commit
            .durable(arrival, || dir.fd.sync_all())
            .map_err(|e| DeliveryError::io(dest.parent().unwrap_or(dest), e))?;
    }
    Ok(())
}

/// Group commit of one directory's fsyncs. Every link into the directory
/// takes a ticket (a generation number) after `linkat` returns; it is
/// durable once an fsync that *started* after that generation was counted
/// has succeeded. One caller runs the fsync, the others wait for it: a
/// caller whose ticket is newer than the running fsync's start waits for
/// that one to end and then has a fresh fsync run (by itself or by another
/// waiter), so a link never rides on an fsync that began before it.
///
/// Before it runs an fsync, a caller waits up to [`GATHER`] for the other
/// deliveries into the directory that are under way (their file fsynced or
/// being fsynced, their link not yet counted: [`GroupCommit::arriving`]),
/// so that one fsync covers them too rather than each needing its own:
/// sessions that finish their messages together share a directory fsync.
/// Callers whose links return meanwhile wait for that fsync as for a
/// running one. With one delivery at a time nothing waits.
///
/// Waiters park on their own slot rather than on a shared condition
/// variable: the fsync's runner wakes exactly the callers it covered (one
/// futex wake each, and they return without taking the lock again) and one
/// of the others to run the next fsync; the rest sleep on.
pub(super) struct GroupCommit {
    pub(super) state: Mutex<CommitState>,
    /// How long an fsync about to start waits for deliveries under way.
    pub(super) gather: Duration,
}

impl Default for GroupCommit {
    fn default() -> GroupCommit {
        GroupCommit {
            state: Mutex::default(),
            gather: GATHER,
        }
    }
}

#[derive(Default)]
pub(super) struct CommitState {
    /// Tickets handed out: links counted so far.
    pub(super) linked: u64,
    /// The generation a running fsync covers (it started after that many
    /// links had returned).
    pub(super) running: Option<u64>,
    /// Every ticket up to this is durable.
    pub(super) durable: u64,
    /// Every ticket up to this (and above `durable`) saw its fsync fail.
    pub(super) failed: u64,
    /// That failure, for the waiters it covered.
    pub(super) error: Option<(io::ErrorKind, Option<i32>)>,
    /// Callers waiting for the running fsync to end: ticket and slot.
    pub(super) waiters: Vec<(u64, Arc<Slot>)>,
    /// Deliveries under way whose link is not counted yet.
    pub(super) arriving: usize,
    /// The caller waiting for them before it runs the next fsync.
    pub(super) gatherer: Option<Thread>,
}

/// How long an fsync about to start waits for deliveries under way: about
/// one file fsync on a virtual disk. A bound, so a slow copy to another
/// filesystem delays others by no more than this.
pub(super) const GATHER: Duration = Duration::from_millis(2);

/// A delivery under way into one directory ([`GroupCommit::arriving`]);
/// counted until [`GroupCommit::durable`] takes its link or it is dropped.
pub(super) struct Arrival {
    pub(super) commit: Arc<GroupCommit>,
    /// Counted by `durable` already: dropping it then changes nothing.
    pub(super) counted: bool,
}

impl Drop for Arrival {
    fn drop(&mut self) {
        if !self.counted {
            lock(&self.commit.state).arrived();
        }
    }
}

impl CommitState {
    /// One delivery under way is no longer: its link was counted, or it
    /// failed. The last one wakes the caller gathering them.
    pub(super) fn arrived(&mut self) {
        self.arriving = self.arriving.saturating_sub(1);
        if self.arriving == 0 {
            if let Some(gatherer) = &self.gatherer {
                gatherer.unpark();
            }
        }
    }
}

/// Where a waiter sleeps: `WAITING` until the fsync runner sets `DURABLE`
/// (return at once) or `LOOK` (take the lock and look: run the next fsync,
/// or the covering fsync failed).
pub(super) struct Slot {
    pub(super) state: AtomicU8,
    pub(super) thread: Thread,
}

pub(super) const WAITING: u8 = 0;
pub(super) const DURABLE: u8 = 1;
pub(super) const LOOK: u8 = 2;

impl GroupCommit {
    /// Announces a delivery into the directory whose link will follow; an
    /// fsync about to start waits for it (a little). Drop the arrival once
    /// the link is counted or the delivery failed.
    pub(super) fn arriving(self: &Arc<Self>) -> Arrival {
        lock(&self.state).arriving += 1;
        Arrival {
            commit: Arc::clone(self),
            counted: false,
        }
    }

    /// Counts a link that has returned, and its delivery's `arrival` as
    /// arrived, and waits until the link is durable (as
    /// [`GroupCommit::ticket`] then [`GroupCommit::wait`], with one lock).
    /// Call after every link into the directory has returned.
    pub(super) fn durable(
        &self,
        arrival: Option<Arrival>,
        sync: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.linked += 1;
        if let Some(mut arrival) = arrival {
            // Counted here, under the same lock as the ticket; its drop
            // at the end of this block (the lock still held) does nothing.
            arrival.counted = true;
            state.arrived();
        }
        let ticket = state.linked;
        self.wait_locked(state, ticket, sync)
    }

    /// Counts a link that has returned; call right after `linkat`.
    #[cfg(test)]
    pub(super) fn ticket(&self) -> u64 {
        let mut state = lock(&self.state);
        state.linked += 1;
        state.linked
    }

    /// Returns once the link with `ticket` is durable, running `sync` (an
    /// fsync of the directory) when no running fsync covers it.
    #[cfg(test)]
    pub(super) fn wait(
        &self,
        ticket: u64,
        sync: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        self.wait_locked(lock(&self.state), ticket, sync)
    }

    /// Waits up to `gather` ([`GATHER`]) while other deliveries into the directory
    /// are under way, as the one about to run the fsync. Meanwhile callers
    /// whose links return wait for this caller's fsync.
    pub(super) fn gather<'a>(
        &'a self,
        mut state: MutexGuard<'a, CommitState>,
    ) -> MutexGuard<'a, CommitState> {
        if state.arriving == 0 {
            return state;
        }
        let end = std::time::Instant::now() + self.gather;
        while state.arriving > 0 {
            let now = std::time::Instant::now();
            if now >= end {
                break;
            }
            if state.gatherer.is_none() {
                state.gatherer = Some(std::thread::current());
            }
            drop(state);
            std::thread::park_timeout(end - now);
            state = lock(&self.state);
        }
        state.gatherer = None;
        state
    }

    pub(super) fn wait_locked<'a>(
        &'a self,
        mut state: MutexGuard<'a, CommitState>,
        ticket: u64,
        sync: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        let mut sync = Some(sync);
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if state.failed >= ticket {
                // The fsync that covered this link failed. Trying again
                // could report success for data the kernel has dropped.
                return Err(match state.error {
                    Some((_, Some(code))) => io::Error::from_raw_os_error(code),
                    Some((kind, None)) => io::Error::new(kind, "directory fsync failed"),
                    None => io::Error::other("directory fsync failed"),
                });
            }
            if state.running.is_some() || state.gatherer.is_some() {
                let slot = Arc::new(Slot {
                    state: AtomicU8::new(WAITING),
                    thread: std::thread::current(),
                });
                state.waiters.push((ticket, Arc::clone(&slot)));
                drop(state);
                let woken = loop {
                    match slot.state.load(Ordering::Acquire) {
                        WAITING => std::thread::park(),
                        woken => break woken,
                    }
                };
                if woken == DURABLE {
                    return Ok(());
                }
                state = lock(&self.state);
                continue;
            }
            let Some(run) = sync.take() else {
                // Unreachable: a caller that ran its fsync returned.
                return Err(io::Error::other("directory fsync not run"));
            };
            state = self.gather(state);
            let start = state.linked;
            state.running = Some(start);
            drop(state);
            let result = run();
            state = lock(&self.state);
            state.running = None;
            let ok = result.is_ok();
            match &result {
                Ok(()) => state.durable = state.durable.max(start),
                Err(e) => {
                    state.failed = state.failed.max(start);
                    state.error = Some((e.kind(), e.raw_os_error()));
                }
            }
            // Wake the covered waiters, and one other to run the next fsync
            // (it covers the rest, whose links all returned before it).
            let mut wake = Vec::new();
            let mut next = None;
            state.waiters.retain(|(t, slot)| {
                if *t <= start {
                    wake.push((Arc::clone(slot), if ok { DURABLE } else { LOOK }));
                    false
                } else if next.is_none() {
                    next = Some(Arc::clone(slot));
                    false
                } else {
                    true
                }
            });
            wake.extend(next.map(|slot| (slot, LOOK)));
            drop(state);
            for (slot, verdict) in wake {
                slot.state.store(verdict, Ordering::Release);
                slot.thread.unpark();
            }
            // This caller's own ticket is covered: start >= ticket.
            return result;
        }
    }
}
