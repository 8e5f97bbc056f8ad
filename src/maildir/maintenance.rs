//! Maildir maintenance: the work on a Maildir that is not a delivery.
//! Removing what a crash left in `tmp/`, at start-up; and retention
//! (SPEC §7): the oldest messages removed when a delivery takes a Maildir
//! over its byte budget (`maildir_keep`, [`make_room`]), and messages
//! past their age (`maildir_keep_days`, [`expire_when_due`]), checked at
//! start-up, after a delivery when due, and in a resident server by one
//! thread that sleeps until the oldest message comes of age
//! ([`keep_in_time`]).
//!
//! When an age check is due is kept in the Maildir's [`EXPIRY`] file
//! (seconds since the epoch), so that processes that live for one
//! session (inetd, sendmail's direct path) check when it is due and not
//! on every connection.

use std::collections::BinaryHeap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::size::{self, now_secs, Lock, Usage};
use super::{Budget, DeliveryError};

/// Maildir convention: files in tmp/ this old are left over from a crash.
pub const STALE_TMP: Duration = Duration::from_secs(36 * 3600);
/// The file in a Maildir's root that says when its next age check is due.
pub const EXPIRY: &str = "smtpbox-expiry";
/// Age checks of one Maildir run at most this often.
pub const AGE_CHECK_INTERVAL: u64 = 5 * 60;
/// A pruning run brings a Maildir this far under its byte budget
/// (a tenth), so that it does not run again with the next message.
const HEADROOM_DIVISOR: u64 = 10;
/// Candidates for removal one scan keeps in memory; a run that must
/// remove more scans again.
const MAX_CANDIDATES: usize = 16_384;
/// Scans one pruning run may make.
const MAX_PASSES: usize = 64;

/// At start-up, for every configured Maildir and its budget: removes files
/// a crash left in its tmp/ (older than [`STALE_TMP`]), logging what it
/// removed; prunes a Maildir that is over its byte budget, and runs an
/// age check that is due.
pub fn at_start_up<'a>(maildirs: impl IntoIterator<Item = (&'a Path, Budget)>) {
    for (dir, budget) in maildirs {
        match clean_tmp(dir, STALE_TMP) {
            Ok(0) => {}
            Ok(n) => log::info!("removed {} stale file(s) from {}/tmp", n, dir.display()),
            Err(e) => log::debug!("cannot clean {}/tmp: {}", dir.display(), e),
        }
        if budget.keep > 0 {
            if let Err(e) = make_room(dir, budget, 0) {
                log::debug!("cannot apply the budget of {}: {e}", dir.display());
            }
        }
        expire_when_due(dir, budget);
    }
}

/// Before `incoming` bytes are delivered into the Maildir `root`: when
/// they take it over `keep`, prunes its oldest messages until it is a
/// tenth under it with room for them; then, with a quota, refuses them
/// when they would still take it over ([`DeliveryError::Quota`]). O(1)
/// unless it prunes: the usage comes from `maildirsize`. A Maildir that
/// does not exist yet holds nothing.
pub fn make_room(root: &Path, budget: Budget, incoming: u64) -> Result<(), DeliveryError> {
    if !budget.accounted() {
        return Ok(());
    }
    let mut used = match size::usage(root, budget.quota, budget.limit(), incoming) {
        Ok(used) => used,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(DeliveryError::io(&root.join(size::FILE), e)),
    };
    if budget.keep > 0 && used.bytes.saturating_add(incoming) > budget.keep {
        match prune(root, budget, incoming, now_secs()) {
            Ok(pruned) => used = pruned.left,
            Err(e) => log::warn!("cannot prune {}: {e}", root.display()),
        }
    }
    if budget.quota > 0 && used.bytes.saturating_add(incoming) > budget.quota {
        return Err(DeliveryError::Quota {
            maildir: root.to_path_buf(),
            used: used.bytes,
            size: incoming,
            quota: budget.quota,
        });
    }
    Ok(())
}

/// Whether the Maildir `root` already holds its quota (checked at RCPT;
/// never with a byte budget, which makes room instead). A Maildir that
/// cannot be measured is not full: delivery will tell.
pub fn is_full(root: &Path, budget: Budget) -> bool {
    budget.quota > 0
        && budget.keep == 0
        && size::usage(root, budget.quota, budget.quota, 1)
            .is_ok_and(|used| used.bytes >= budget.quota)
}

/// Runs the age check of `root` when it is due ([`EXPIRY`]), logging
/// what fails: nothing of it concerns the delivery that came before.
pub fn expire_when_due(root: &Path, budget: Budget) {
    if budget.keep_days == 0 {
        return;
    }
    let now = now_secs();
    if read_expiry(root).is_some_and(|due| now < due) {
        return;
    }
    if let Err(e) = expire(root, budget, now) {
        log::warn!("cannot remove old mail from {}: {e}", root.display());
    }
}

/// The age check: prunes what is older than `keep_days` (and what the
/// byte budget would), and sets when the next one is due: when the
/// oldest message left comes of age, and no sooner than
/// [`AGE_CHECK_INTERVAL`]. Returns that time.
pub fn expire(root: &Path, budget: Budget, now: u64) -> io::Result<u64> {
    let pruned = prune(root, budget, 0, now)?;
    let lifetime = budget.keep_days.saturating_mul(86_400);
    let next = pruned
        .oldest_kept
        .unwrap_or(now)
        .saturating_add(lifetime)
        .max(now + AGE_CHECK_INTERVAL);
    write_expiry(root, next)?;
    Ok(next)
}

/// When the next age check of `root` is due, if its file says so.
pub fn read_expiry(root: &Path) -> Option<u64> {
    let mut text = String::new();
    OpenOptions::new()
        .read(true)
        .custom_flags(crate::sys::O_NOFOLLOW)
        .open(root.join(EXPIRY))
        .ok()?
        .take(32)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

fn write_expiry(root: &Path, due: u64) -> io::Result<()> {
    let tmp = root
        .join("tmp")
        .join(format!("{}.expiry", super::unique_base()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(format!("{due}\n").as_bytes()))
        .and_then(|()| fs::rename(&tmp, root.join(EXPIRY)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// In a resident server: one thread that runs each Maildir's age check
/// when it is due, sleeping until then (no wake-up while nothing comes of
/// age). Nothing is started when no Maildir has `keep_days`.
pub fn keep_in_time(maildirs: Vec<(PathBuf, Budget)>) {
    let maildirs: Vec<(PathBuf, Budget)> = maildirs
        .into_iter()
        .filter(|(_, budget)| budget.keep_days > 0)
        .collect();
    if maildirs.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("expiry".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            // When each check is due, as far as this thread knows; another
            // process may have run one since (its file says so).
            let mut due: Vec<u64> = vec![0; maildirs.len()];
            loop {
                let now = now_secs();
                for ((root, budget), due) in maildirs.iter().zip(due.iter_mut()) {
                    let file_due = read_expiry(root);
                    if file_due.is_some_and(|d| now < d) {
                        *due = file_due.unwrap_or(0);
                        continue;
                    }
                    *due = match expire(root, *budget, now) {
                        Ok(next) => next,
                        Err(e) => {
                            log::warn!("cannot remove old mail from {}: {e}", root.display());
                            now + AGE_CHECK_INTERVAL
                        }
                    };
                }
                let next = due.iter().copied().min().unwrap_or(now);
                std::thread::sleep(Duration::from_secs(next.saturating_sub(now).max(1)));
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the expiry thread: {e}; old mail is removed after deliveries");
    }
}

/// What a pruning run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Messages and bytes removed.
    pub removed: Usage,
    /// What the Maildir holds after.
    pub left: Usage,
    /// Delivery time of the oldest message left.
    pub oldest_kept: Option<u64>,
}

/// A message that may be removed for the byte budget: the oldest first.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    order: u64,
    time: u64,
    name: String,
    dir: usize,
    size: u64,
}

/// One pruning run of the Maildir `root`, holding its lock exclusively:
/// removes the messages older than `keep_days`, then the oldest until it
/// holds at most a tenth under `keep` less `incoming`, from `new/` and
/// `cur/` of every folder, whatever their flags; never anything in
/// `tmp/` or outside the message directories. (The message whose
/// delivery prunes is not linked yet; every other delivery into the
/// Maildir waits for the lock between its link and its count.) Rewrites
/// `maildirsize` (when the Maildir is accounted) with what is left, and
/// logs one line when it removed anything. Memory is bounded ([`MAX_CANDIDATES`] names): a run that must
/// remove more scans again.
pub fn prune(root: &Path, budget: Budget, incoming: u64, now: u64) -> io::Result<Pruned> {
    let _lock = Lock::exclusive(root)?;
    let lifetime = budget.keep_days.saturating_mul(86_400);
    let too_old = if budget.keep_days > 0 {
        now.saturating_sub(lifetime)
    } else {
        0
    };
    let target = if budget.keep > 0 {
        (budget.keep - budget.keep / HEADROOM_DIVISOR).saturating_sub(incoming)
    } else {
        u64::MAX
    };
    let mut removed = Usage::default();
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut left;
    let mut oldest_kept;
    let mut passes = 0;
    loop {
        passes += 1;
        let mut heap: BinaryHeap<Candidate> = BinaryHeap::new();
        let mut heap_bytes = 0u64;
        // The oldest message that is not a candidate.
        let mut oldest_outside: Option<u64> = None;
        // Whether a candidate was let go (the estimate or the bound).
        let mut let_go = false;
        let mut aged = Usage::default();
        // Until the scan ends, the excess is estimated from maildirsize's
        // figure; the candidates cover it, the oldest first.
        let estimate = size::usage_estimate(root).unwrap_or(u64::MAX);
        let mut needed = estimate.saturating_add(incoming).saturating_sub(target);
        let scanned = size::scan(root, |found| {
            if found.time < too_old && remove(found.dir, found.name) {
                aged.bytes += found.size;
                aged.count += 1;
                return;
            }
            if budget.keep == 0 {
                oldest_outside = Some(oldest_outside.map_or(found.time, |t| t.min(found.time)));
                return;
            }
            let dir = match dirs.iter().rposition(|d| d == found.dir) {
                Some(i) => i,
                None => {
                    dirs.push(found.dir.to_path_buf());
                    dirs.len() - 1
                }
            };
            heap.push(Candidate {
                order: found.order,
                time: found.time,
                name: found.name.to_string(),
                dir,
                size: found.size,
            });
            heap_bytes += found.size;
            // Keep only the oldest that cover the excess (and a bounded
            // number of them).
            while let Some(top) = heap.peek() {
                let covered = heap_bytes - top.size >= needed.max(1);
                if !(covered || heap.len() > MAX_CANDIDATES) {
                    break;
                }
                let top = heap.pop().expect("peeked");
                heap_bytes -= top.size;
                let_go = true;
                oldest_outside = Some(oldest_outside.map_or(top.time, |t| t.min(top.time)));
            }
        })?;
        removed.bytes += aged.bytes;
        removed.count += aged.count;
        left = Usage {
            bytes: scanned.bytes - aged.bytes,
            count: scanned.count - aged.count,
        };
        needed = left.bytes.saturating_add(incoming).saturating_sub(target);
        let mut candidates = heap.into_sorted_vec();
        let mut freed = 0u64;
        let mut next = 0;
        while freed < needed && next < candidates.len() {
            let c = &candidates[next];
            if remove(&dirs[c.dir], &c.name) {
                freed += c.size;
                removed.bytes += c.size;
                removed.count += 1;
                left.bytes -= c.size;
                left.count -= 1;
            }
            next += 1;
        }
        let kept = candidates.drain(next..).map(|c| c.time).min();
        oldest_kept = match (kept, oldest_outside) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Done; or no older message is left to remove, or none could
        // be; or the scans are spent.
        if freed >= needed || !let_go || freed == 0 || passes >= MAX_PASSES {
            break;
        }
    }
    if removed.count > 0 {
        if budget.accounted() {
            size::write(root, &size::header_kept(root, budget.quota), left)?;
        }
        let age = oldest_kept.map_or("none left".to_string(), |t| {
            format!("oldest kept {}", describe_age(now.saturating_sub(t)))
        });
        log::info!(
            "pruned {}: {} message(s), {} bytes removed; {} message(s), {} bytes left; {}",
            root.display(),
            removed.count,
            removed.bytes,
            left.count,
            left.bytes,
            age
        );
    }
    Ok(Pruned {
        removed,
        left,
        oldest_kept,
    })
}

/// Removes one message file; false when it is gone already (a reader
/// moved or deleted it).
fn remove(dir: &Path, name: &str) -> bool {
    match fs::remove_file(dir.join(name)) {
        Ok(()) => true,
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("cannot remove {}/{name}: {e}", dir.display());
            }
            false
        }
    }
}

/// `3d 4h`, `5h 2m`, `42s`: an age for a log line.
fn describe_age(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    if d > 0 {
        format!("{d}d {h}h old")
    } else if h > 0 {
        format!("{h}h {m}m old")
    } else if m > 0 {
        format!("{m}m {}s old", secs % 60)
    } else {
        format!("{secs}s old")
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

#[cfg(test)]
mod tests {
    use super::super::{deliver_to, ensure, ensure_folder, size, Place, Spool};
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A scratch Maildir on tmpfs where there is one (thousands of
    /// deliveries with free fsyncs), removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let shm = Path::new("/dev/shm");
            let base = if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            };
            let path = base.join(format!(
                "smtpbox-keep-{tag}-{}",
                super::super::unique_base()
            ));
            ensure(&path).unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn deliver(
        root: &Path,
        dir: &Path,
        budget: Budget,
        body: &[u8],
    ) -> Result<String, DeliveryError> {
        let mut spool = Spool::create(root).unwrap();
        spool.write_all(body).unwrap();
        deliver_to(spool, &[Place { root, dir, budget }]).map(|(id, _)| id)
    }

    /// Every message file (name up to its flags) of the Maildir.
    fn ids(root: &Path) -> HashSet<String> {
        let mut ids = HashSet::new();
        size::scan(root, |f| {
            ids.insert(f.name.split(',').next().unwrap().to_string());
        })
        .unwrap();
        ids
    }

    #[test]
    fn a_byte_budget_keeps_the_newest_while_a_reader_moves_messages() {
        let s = Scratch::new("budget");
        let root = s.0.clone();
        let budget = Budget {
            keep: 1_000_000,
            ..Budget::default()
        };
        // What retention must never touch.
        fs::write(root.join("tmp/1.M1P1Q1.being-written"), b"x").unwrap();
        fs::write(root.join("dovecot-uidlist"), b"3 V1 N1\n").unwrap();
        fs::write(root.join("cur/.hidden"), b"x").unwrap();
        // A mail reader: moves new/X to cur/X:2,S as it goes.
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (root, stop) = (root.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut moved = 0;
                while !stop.load(Ordering::Relaxed) {
                    for entry in fs::read_dir(root.join("new")).unwrap().flatten() {
                        let name = entry.file_name().into_string().unwrap();
                        let to = root.join("cur").join(format!("{name}:2,S"));
                        if fs::rename(entry.path(), to).is_ok() {
                            moved += 1;
                        }
                    }
                }
                moved
            })
        };
        let body = vec![b'x'; 1024];
        let mut delivered = Vec::new();
        for _ in 0..3000 {
            let id = deliver(&root, &root, budget, &body).unwrap();
            // The newest is always there (in new/, or, moved, in cur/).
            let name = format!("{id}.{},S=1024", super::super::host());
            let there = root.join("new").join(&name).exists()
                || root.join("cur").join(format!("{name}:2,S")).exists();
            assert!(there, "{id}");
            delivered.push(id);
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0, "the reader moved messages");

        let kept = ids(&root);
        let used = size::scan(&root, |_| {}).unwrap();
        assert!(used.bytes <= budget.keep, "{used:?}");
        assert!((870..=977).contains(&kept.len()), "{} kept", kept.len());
        // Exactly the newest ones.
        let newest: HashSet<&String> = delivered.iter().rev().take(kept.len()).collect();
        for name in &kept {
            let id = name.rsplit_once('.').unwrap().0;
            assert!(
                newest.contains(&id.to_string()),
                "{name} is not among the newest"
            );
        }
        // maildirsize agrees with the directories (a move during a scan
        // may hide one message from it until the next recalculation).
        let text = fs::read(root.join(size::FILE)).unwrap();
        let said = size::parse(&text).unwrap();
        assert!(said.count.abs_diff(used.count) <= 2, "{said:?} vs {used:?}");
        assert_eq!(size::recalculate(&root, 0).unwrap(), used);
        // Untouched.
        assert!(root.join("tmp/1.M1P1Q1.being-written").exists());
        assert!(root.join("dovecot-uidlist").exists());
        assert!(root.join("cur/.hidden").exists());
    }

    #[test]
    fn folders_count_against_their_maildir_and_are_pruned_with_it() {
        let s = Scratch::new("folders");
        let root = s.0.clone();
        let folder = root.join(".disk");
        let budget = Budget {
            keep: 10_000,
            ..Budget::default()
        };
        let body = vec![b'x'; 1000];
        let first = deliver(&root, &folder, budget, &body).unwrap();
        assert!(folder.join("maildirfolder").is_file());
        for _ in 0..20 {
            deliver(&root, &root, budget, &body).unwrap();
        }
        let used = size::scan(&root, |_| {}).unwrap();
        assert!(used.bytes <= 10_000, "{used:?}");
        assert!(
            fs::read_dir(folder.join("new")).unwrap().next().is_none(),
            "{first} pruned"
        );
    }

    #[test]
    fn a_quota_and_a_budget_prune_first_and_refuse_only_what_cannot_fit() {
        let s = Scratch::new("quota");
        let root = s.0.clone();
        let budget = Budget {
            quota: 3000,
            keep: 2000,
            keep_days: 0,
        };
        for _ in 0..10 {
            deliver(&root, &root, budget, &[b'x'; 500]).unwrap();
        }
        assert!(size::scan(&root, |_| {}).unwrap().bytes <= 2000);
        // Alone over what the budget can make room for: refused.
        let err = deliver(&root, &root, budget, &[b'x'; 3001]).unwrap_err();
        assert!(matches!(err, DeliveryError::Quota { .. }), "{err}");
        // And RCPT never sees a Maildir with a budget as full.
        assert!(!is_full(&root, budget));
        let quota_only = Budget { keep: 0, ..budget };
        for _ in 0..6 {
            let _ = deliver(&root, &root, quota_only, &[b'x'; 500]);
        }
        assert!(is_full(&root, quota_only));
    }

    #[test]
    fn age_removes_old_messages_and_sets_the_next_check() {
        let s = Scratch::new("age");
        let root = s.0.clone();
        let now = 1_800_000_000;
        let day = 86_400;
        let budget = Budget {
            keep_days: 7,
            ..Budget::default()
        };
        let old = format!("{}.M1P1Q1.h,S=10", now - 8 * day);
        let kept = format!("{}.M1P1Q2.h,S=10:2,S", now - 6 * day);
        fs::write(root.join("new").join(&old), b"x").unwrap();
        fs::write(root.join("cur").join(&kept), b"x").unwrap();
        // A name without a time: its modification time decides.
        let odd = root.join("cur/odd:2,S");
        fs::write(&odd, b"x").unwrap();
        let mtime = UNIX_EPOCH + Duration::from_secs(now - 30 * day);
        fs::File::options()
            .write(true)
            .open(&odd)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        ensure_folder(&root, &root.join(".old")).unwrap();
        let in_folder = format!("{}.M1P1Q3.h,S=10", now - 9 * day);
        fs::write(root.join(".old/new").join(&in_folder), b"x").unwrap();

        let next = expire(&root, budget, now).unwrap();
        assert_eq!(
            ids(&root),
            HashSet::from([kept.split(',').next().unwrap().to_string()])
        );
        // Due when the oldest kept message comes of age.
        assert_eq!(next, now - 6 * day + 7 * day);
        assert_eq!(read_expiry(&root), Some(next));
        // Not before: a message that is old already waits for it.
        fs::write(root.join("new").join(&old), b"x").unwrap();
        expire_when_due(&root, budget);
        assert!(root.join("new").join(&old).exists());
        // Nothing left: the next check is one lifetime away, and never
        // sooner than the interval.
        fs::remove_dir_all(root.join("cur")).unwrap();
        fs::remove_file(root.join("new").join(&old)).unwrap();
        assert_eq!(expire(&root, budget, now).unwrap(), now + 7 * day);
        let soon = Budget {
            keep_days: 1,
            ..budget
        };
        fs::write(
            root.join("new")
                .join(format!("{}.M1P1Q4.h,S=1", now - day + 1)),
            b"x",
        )
        .unwrap();
        assert_eq!(expire(&root, soon, now).unwrap(), now + AGE_CHECK_INTERVAL);
    }

    #[test]
    fn symlinks_are_never_followed_out_of_the_maildir() {
        let s = Scratch::new("links");
        let root = s.0.join("Maildir");
        ensure(&root).unwrap();
        let outside = s.0.join("outside");
        fs::create_dir_all(&outside).unwrap();
        let precious = outside.join("1000000000.M1P1Q1.h,S=5");
        fs::write(&precious, b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join(".evil")).unwrap();
        fs::create_dir_all(root.join(".box")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join(".box/cur")).unwrap();
        let budget = Budget {
            keep: 1,
            keep_days: 1,
            ..Budget::default()
        };
        let pruned = prune(&root, budget, 0, 1_800_000_000).unwrap();
        assert_eq!(pruned.removed.count, 0);
        assert!(precious.exists());
    }

    #[test]
    fn a_large_removal_takes_several_bounded_scans() {
        let s = Scratch::new("passes");
        let root = s.0.clone();
        let n = MAX_CANDIDATES as u64 + 4000;
        for i in 0..n {
            let name = format!("{}.M{}P1Q1.h,S=100:2,S", 1_700_000_000 + i / 1000, i % 1000);
            fs::write(root.join("cur").join(name), b"").unwrap();
        }
        let budget = Budget {
            keep: 100_000,
            ..Budget::default()
        };
        size::recalculate(&root, 0).unwrap();
        let pruned = prune(&root, budget, 0, 1_800_000_000).unwrap();
        assert_eq!(pruned.left.count, 900);
        assert_eq!(pruned.removed.count, n - 900);
        assert_eq!(size::usage(&root, 0, 0, 0).unwrap(), pruned.left);
        // The newest 900 are left.
        let oldest_left = n - 900;
        assert_eq!(pruned.oldest_kept, Some(1_700_000_000 + oldest_left / 1000));
        let mut names = ids(&root).into_iter().collect::<Vec<_>>();
        names.sort();
        assert_eq!(names.len(), 900);
    }
}
