//! smtpbox's own sandbox (SPEC §8), for boxes without systemd's: once the
//! listeners are bound and root is dropped, `no_new_privs`, then Landlock
//! (Linux ≥ 5.13) through raw system calls. What stays allowed:
//!
//! - read-write beneath every configured Maildir (made first if missing:
//!   Landlock can only allow what exists) and the local socket's directory;
//! - reading files beneath the directories holding the certificate, the key
//!   and the users file, both as configured and as their symlinks resolve at
//!   start, so a renewal that writes a new file and swaps a symlink (certbot's
//!   `live/` → `archive/`) is still read;
//! - reading `/etc/passwd`, where a local peer's uid is named.
//!
//! Nothing else: no other file opened, no program run, no TCP bind or
//! connect (ABI 4), no signal or abstract Unix socket outside the process
//! (ABI 6). Connecting to a pathname Unix socket (syslog's `/dev/log`, the
//! local socket) is not a file-system access for Landlock up to ABI 7.
//! The config file is read once, before, and needs no rule. Time zone files
//! and `/dev/urandom` are never opened (dates are UTC; randomness comes
//! from getrandom(2)).

use std::ffi::{c_int, c_long};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::maildir;
use crate::sys::{ENOSYS, EOPNOTSUPP, EPERM, SYSCALL_BASE};

extern "C" {
    fn syscall(number: c_long, ...) -> c_long;
    fn prctl(option: c_int, ...) -> c_int;
}

/// What [`enter`] achieved; it has logged the details.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Landlock is in force, at this ABI version.
    Enforced(u32),
    /// The kernel has no (usable) Landlock: running as before.
    Unavailable,
    /// Something unexpected failed: running as before, with a warning.
    Failed,
}

/// Restricts this thread and every thread and child it starts later, so it
/// must be called before any thread is spawned. `socket_dirs` are the
/// directories of local sockets this process serves or reaches.
///
/// On an unexpected error this logs a warning and runs unsandboxed rather
/// than exiting: the sandbox is defence in depth, and refusing to start
/// over a kernel or filter quirk would lose what cron hands to sendmail
/// mode and stop mail that nothing else breaks.
pub fn enter(config: &Config, socket_dirs: &[PathBuf]) -> Outcome {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    if unsafe {
        prctl(
            PR_SET_NO_NEW_PRIVS,
            1 as c_long,
            0 as c_long,
            0 as c_long,
            0 as c_long,
        )
    } != 0
    {
        log::warn!("sandbox: no_new_privs: {}", io::Error::last_os_error());
    }
    let abi = match landlock_abi() {
        Ok(abi) => abi,
        Err(e) if matches!(e.raw_os_error(), Some(ENOSYS | EOPNOTSUPP)) => {
            log::info!("sandbox: the kernel has no Landlock ({e}); file access is not restricted");
            return Outcome::Unavailable;
        }
        // Only a seccomp filter answers EPERM to the version query: systemd's
        // SystemCallFilter=@system-service (as of v252, which leaves Landlock
        // out) or a container's,
        // whose sandbox applies instead.
        Err(e) if e.raw_os_error() == Some(EPERM) => {
            log::info!(
                "sandbox: Landlock is filtered out ({e}); file access is not restricted here"
            );
            return Outcome::Unavailable;
        }
        Err(e) => {
            log::warn!("sandbox: Landlock: {e}; file access is not restricted");
            return Outcome::Failed;
        }
    };
    if abi < 2 {
        // ABI 1 denies every link between two directories (EXDEV), and a
        // Maildir delivery is a link from tmp/ to new/.
        log::info!(
            "sandbox: Landlock ABI 1 cannot allow Maildir delivery; file access is not restricted"
        );
        return Outcome::Unavailable;
    }
    prepare(config);
    let rules = rules(config, socket_dirs);
    match restrict(abi, &rules) {
        Ok(added) => {
            log::info!("sandbox: Landlock ABI {abi} in force; {}", describe(&added));
            Outcome::Enforced(abi)
        }
        Err(e) => {
            log::warn!("sandbox: Landlock: {e}; file access is not restricted");
            Outcome::Failed
        }
    }
}

// <linux/prctl.h>, <linux/landlock.h>
const PR_SET_NO_NEW_PRIVS: c_int = 38;
const LANDLOCK_CREATE_RULESET_VERSION: c_long = 1 << 0;
const LANDLOCK_RULE_PATH_BENEATH: c_long = 1;

// The system call numbers are one table everywhere since Linux 5.1, which
// MIPS offsets by its ABI's base ([`SYSCALL_BASE`]). ENOSYS: Landlock not
// built in; EOPNOTSUPP: off at boot.

const SYS_LANDLOCK_CREATE_RULESET: c_long = SYSCALL_BASE + 444;
const SYS_LANDLOCK_ADD_RULE: c_long = SYSCALL_BASE + 445;
const SYS_LANDLOCK_RESTRICT_SELF: c_long = SYSCALL_BASE + 446;

/// File-system access rights (LANDLOCK_ACCESS_FS_*), by the ABI that added them.
mod right {
    pub const EXECUTE: u64 = 1 << 0;
    pub const WRITE_FILE: u64 = 1 << 1;
    pub const READ_FILE: u64 = 1 << 2;
    pub const READ_DIR: u64 = 1 << 3;
    pub const REMOVE_DIR: u64 = 1 << 4;
    pub const REMOVE_FILE: u64 = 1 << 5;
    pub const MAKE_CHAR: u64 = 1 << 6;
    pub const MAKE_DIR: u64 = 1 << 7;
    pub const MAKE_REG: u64 = 1 << 8;
    pub const MAKE_SOCK: u64 = 1 << 9;
    pub const MAKE_FIFO: u64 = 1 << 10;
    pub const MAKE_BLOCK: u64 = 1 << 11;
    pub const MAKE_SYM: u64 = 1 << 12;
    pub const ABI_1: u64 = EXECUTE
        | WRITE_FILE
        | READ_FILE
        | READ_DIR
        | REMOVE_DIR
        | REMOVE_FILE
        | MAKE_CHAR
        | MAKE_DIR
        | MAKE_REG
        | MAKE_SOCK
        | MAKE_FIFO
        | MAKE_BLOCK
        | MAKE_SYM;
    /// ABI 2: link or rename into another directory.
    pub const REFER: u64 = 1 << 13;
    /// ABI 3.
    pub const TRUNCATE: u64 = 1 << 14;
    /// ABI 5: ioctl on a device opened later.
    pub const IOCTL_DEV: u64 = 1 << 15;
    /// The rights that apply to a file rather than a directory.
    pub const ON_FILES: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;
}

/// ABI 4: TCP bind and connect (LANDLOCK_ACCESS_NET_*).
const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;
/// ABI 6: abstract Unix sockets and signals outside the domain.
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

/// A Maildir: files made, written, read (copies, quota), linked from tmp/
/// to new/ (REFER), removed (rollback, stale tmp/ files), and its
/// subdirectories made again when missing. No symlink, device or FIFO.
const MAILDIR: u64 = right::READ_FILE
    | right::WRITE_FILE
    | right::READ_DIR
    | right::MAKE_REG
    | right::MAKE_DIR
    | right::REMOVE_FILE
    | right::REFER
    | right::TRUNCATE;
/// A local socket's directory: as a Maildir, and sockets.
const SOCKET_DIR: u64 = MAILDIR | right::MAKE_SOCK;
/// Certificate, key, users file and /etc/passwd: opened for reading.
const READ: u64 = right::READ_FILE;

/// `struct landlock_ruleset_attr` (ABI 6 layout; an older kernel accepts
/// it as long as the fields it does not know are zero).
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// `struct landlock_path_beneath_attr`, packed as in the kernel header.
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// One rule: `access` beneath `path` (or on it, for a file).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    path: PathBuf,
    access: u64,
}

/// The file-system rights that ABI `abi` knows, all of them handled (so
/// denied unless a rule allows them).
fn handled_fs(abi: u32) -> u64 {
    let mut rights = right::ABI_1;
    if abi >= 2 {
        rights |= right::REFER;
    }
    if abi >= 3 {
        rights |= right::TRUNCATE;
    }
    if abi >= 5 {
        rights |= right::IOCTL_DEV;
    }
    rights
}

fn ruleset_attr(abi: u32) -> RulesetAttr {
    RulesetAttr {
        handled_access_fs: handled_fs(abi),
        handled_access_net: if abi >= 4 {
            NET_BIND_TCP | NET_CONNECT_TCP
        } else {
            0
        },
        scoped: if abi >= 6 {
            SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        } else {
            0
        },
    }
}

/// The kernel's Landlock ABI version.
fn landlock_abi() -> io::Result<u32> {
    // SAFETY: a null attribute with size 0 and the VERSION flag only asks.
    let abi = unsafe {
        syscall(
            SYS_LANDLOCK_CREATE_RULESET,
            std::ptr::null::<RulesetAttr>(),
            0 as c_long,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::try_from(abi).unwrap_or(u32::MAX))
}

/// Makes the directory of every Maildir that is missing, as the first
/// delivery would (mode 0700, durably: [`maildir::make_dir_durably`]), so
/// that it can be allowed: Landlock allows only what exists, and its
/// parent, which a later delivery may not open to fsync, is outside the
/// rules. Its tmp/, new/ and cur/ are left to that delivery. Reads what
/// is read once and cached.
fn prepare(config: &Config) {
    for dir in config.maildirs() {
        if dir.exists() {
            continue;
        }
        // info, not warn: sendmail mode must not mail cron's owner about a
        // mailbox that this message is not for.
        if let Err(e) = maildir::make_dir_durably(dir) {
            log::info!(
                "sandbox: cannot make Maildir {}: {e}; mail for it fails until a restart",
                dir.display()
            );
        }
    }
    // The host name in Maildir file names is read once, before.
    let _ = maildir::unique_base();
}

/// The rules for `config`, deduplicated.
fn rules(config: &Config, socket_dirs: &[PathBuf]) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    let mut add = |path: PathBuf, access: u64| match rules.iter_mut().find(|r| r.path == path) {
        Some(rule) => rule.access |= access,
        None => rules.push(Rule { path, access }),
    };
    for dir in config.maildirs() {
        add(dir.clone(), MAILDIR);
    }
    for dir in socket_dirs {
        add(dir.clone(), SOCKET_DIR);
    }
    for file in config.read_files() {
        add(parent(file), READ);
        if let Ok(real) = std::fs::canonicalize(file) {
            add(parent(&real), READ);
        }
    }
    add(PathBuf::from("/etc/passwd"), READ);
    rules
}

/// The directory holding `file` (`.` for a bare relative name).
fn parent(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Builds the ruleset and restricts this thread with it; returns the rules
/// that are in force. A rule whose path cannot be opened is left out (what
/// it would allow stays denied); one the kernel refuses abandons the whole
/// sandbox, which would otherwise deny what the configuration needs.
fn restrict(abi: u32, rules: &[Rule]) -> io::Result<Vec<&Rule>> {
    let attr = ruleset_attr(abi);
    // SAFETY: `attr` is a valid landlock_ruleset_attr for the duration of
    // the call, and its size is passed with it.
    let fd = unsafe {
        syscall(
            SYS_LANDLOCK_CREATE_RULESET,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0 as c_long,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor; we own it.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as c_int) };
    let mut added = Vec::new();
    for rule in rules {
        let file = match open_path(&rule.path) {
            Ok(file) => file,
            Err(e) => {
                log::info!("sandbox: {}: {e}; not allowed", rule.path.display());
                continue;
            }
        };
        add_rule(&ruleset, &file, rule.access & attr.handled_access_fs)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", rule.path.display())))?;
        added.push(rule);
    }
    // SAFETY: an owned, open ruleset descriptor and no flags.
    if unsafe {
        syscall(
            SYS_LANDLOCK_RESTRICT_SELF,
            ruleset.as_raw_fd() as c_long,
            0 as c_long,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(added)
}

/// Allows `access` beneath `file` (a directory), or on it (the rights that
/// apply to a file).
fn add_rule(ruleset: &OwnedFd, file: &File, mut access: u64) -> io::Result<()> {
    if !file.metadata().is_ok_and(|m| m.is_dir()) {
        access &= right::ON_FILES;
    }
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd: file.as_raw_fd(),
    };
    // SAFETY: `attr` lives across the call and `ruleset` is open.
    let added = unsafe {
        syscall(
            SYS_LANDLOCK_ADD_RULE,
            ruleset.as_raw_fd() as c_long,
            LANDLOCK_RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0 as c_long,
        )
    };
    if added != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `O_PATH`: a handle for the rule that needs no read permission on the
/// directory itself (a key's directory is often mode 0710).
fn open_path(path: &Path) -> io::Result<File> {
    // <asm-generic/fcntl.h>; the same on every architecture smtpbox is
    // built for (only alpha, parisc and sparc differ).
    const O_PATH: c_int = 0o10000000;
    OpenOptions::new()
        .read(true)
        .custom_flags(O_PATH)
        .open(path)
}

/// The rules for the log line.
fn describe(rules: &[&Rule]) -> String {
    let list = |pick: fn(u64) -> bool| {
        rules
            .iter()
            .filter(|r| pick(r.access))
            .map(|r| r.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "read-write beneath: {}; read-only: {}",
        list(|a| a & right::WRITE_FILE != 0),
        list(|a| a & right::WRITE_FILE == 0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    #[test]
    fn every_known_right_is_handled_per_abi() {
        assert_eq!(handled_fs(1), 0x1fff);
        assert_eq!(handled_fs(2), 0x3fff);
        assert_eq!(handled_fs(3), 0x7fff);
        assert_eq!(handled_fs(4), 0x7fff);
        assert_eq!(handled_fs(5), 0xffff);
        assert_eq!(handled_fs(7), 0xffff);
        assert_eq!(
            handled_fs(9),
            0xffff,
            "rights of later ABIs are not ours to name"
        );
        assert_eq!(ruleset_attr(3).handled_access_net, 0);
        assert_eq!(ruleset_attr(4).handled_access_net, 3);
        assert_eq!(ruleset_attr(5).scoped, 0);
        assert_eq!(ruleset_attr(6).scoped, 3);
        assert_eq!(std::mem::size_of::<PathBeneathAttr>(), 12);
        assert_eq!(std::mem::size_of::<RulesetAttr>(), 24);
    }

    #[test]
    fn rules_cover_maildirs_and_the_directories_of_files_and_their_targets() {
        let dir =
            std::env::temp_dir().join(format!("smtpbox-sandbox-rules-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("live")).unwrap();
        fs::create_dir_all(dir.join("archive")).unwrap();
        fs::write(dir.join("archive/cert1.pem"), "x").unwrap();
        std::os::unix::fs::symlink("../archive/cert1.pem", dir.join("live/cert.pem")).unwrap();
        let text = format!(
            "maildir = /srv/mail\nmailbox = bob /srv/bob\ntls_cert = {d}/live/cert.pem\ntls_key = {d}/live/key.pem\n",
            d = dir.display()
        );
        let config = Config::parse(&text, Path::new("test.conf")).unwrap();
        let rules = rules(&config, &[PathBuf::from("/run/smtpbox")]);
        let access = |p: &str| {
            rules
                .iter()
                .find(|r| r.path == Path::new(p))
                .map(|r| r.access)
        };
        assert_eq!(access("/srv/mail"), Some(MAILDIR));
        assert_eq!(access("/srv/bob"), Some(MAILDIR));
        assert_eq!(access("/run/smtpbox"), Some(SOCKET_DIR));
        assert_eq!(access(&format!("{}/live", dir.display())), Some(READ));
        let archive = fs::canonicalize(dir.join("archive")).unwrap();
        assert_eq!(access(archive.to_str().unwrap()), Some(READ));
        assert_eq!(access("/etc/passwd"), Some(READ));
        assert_eq!(rules.len(), 6, "{rules:?}");
        assert_eq!(
            MAILDIR
                & (right::EXECUTE
                    | right::MAKE_SYM
                    | right::MAKE_FIFO
                    | right::MAKE_CHAR
                    | right::MAKE_BLOCK
                    | right::MAKE_SOCK
                    | right::REMOVE_DIR
                    | right::IOCTL_DEV),
            0
        );
        assert_eq!(parent(Path::new("users")), PathBuf::from("."));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Landlock restricts the calling thread only, so a thread of its own
    /// can be sandboxed without touching the rest of the test binary.
    #[test]
    fn a_sandboxed_thread_delivers_but_cannot_write_or_read_elsewhere() {
        let dir =
            std::env::temp_dir().join(format!("smtpbox-sandbox-thread-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("outside")).unwrap();
        fs::write(dir.join("outside/secret"), "s").unwrap();
        let text = format!("maildir = {}/Maildir\n", dir.display());
        let config = Config::parse(&text, Path::new("test.conf")).unwrap();
        let inner = dir.clone();
        let outcome = std::thread::spawn(move || {
            let outcome = enter(&config, &[]);
            let maildir = inner.join("Maildir");
            let mut spool = maildir::Spool::create(&maildir).unwrap();
            io::Write::write_all(&mut spool, b"Subject: x\r\n\r\nbody\r\n").unwrap();
            maildir::deliver(spool, &[&maildir], 0).unwrap();
            let write = fs::write(inner.join("outside/new"), "x").map_err(|e| e.kind());
            let read = fs::read(inner.join("outside/secret")).map_err(|e| e.kind());
            (outcome, write, read)
        })
        .join()
        .unwrap();
        let (outcome, write, read) = outcome;
        if matches!(outcome, Outcome::Enforced(_)) {
            assert_eq!(write, Err(io::ErrorKind::PermissionDenied));
            assert_eq!(read, Err(io::ErrorKind::PermissionDenied));
        } else {
            assert!(
                std::env::var_os("CI").is_none(),
                "no Landlock under CI: {outcome:?}"
            );
        }
        assert_eq!(fs::read_dir(dir.join("Maildir/new")).unwrap().count(), 1);
        // This thread was never restricted.
        fs::write(dir.join("outside/new"), "x").unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
