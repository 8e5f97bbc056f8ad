//! Connection limits across `--inetd` processes (systemd `Accept=yes`).
//!
//! Each session of the Accept=yes pair is a process of its own, so the
//! in-process limiter of `server` sees one session. Here a session holds an
//! flock(2) on one of `max_connections_per_ip` slot files named after its
//! client address, and on one of `max_connections` files for all clients,
//! in a directory shared by every instance (the unit's
//! `RuntimeDirectory=`). No free slot: the client reads `421 4.3.2`, as
//! from the resident server. A lock dies with its process, so a killed
//! session frees its slot; a session that ends normally also removes its
//! files, so the directory does not fill up with one file per address ever
//! seen.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

extern "C" {
    fn flock(fd: i32, operation: i32) -> i32;
}

const LOCK_EX: i32 = 2;
const LOCK_NB: i32 = 4;
const O_NOFOLLOW: i32 = 0o400000;

/// How often one slot is tried again when its file was removed by the
/// session holding it just as we locked it.
const RETRIES: usize = 8;

/// One held slot: the locked file and its name, given back on drop.
struct Held {
    _file: File,
    path: PathBuf,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Removed while still locked (the lock goes when the file closes,
        // after this): a process waiting on this inode then sees that it
        // is no longer the file at that name and opens the name again.
        let _ = fs::remove_file(&self.path);
    }
}

/// The slots a session holds, given back on drop.
pub struct Slots {
    _held: [Held; 2],
}

/// Which limit a refused client is over.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    PerAddress,
    Total,
}

/// Takes a slot for `ip` and one of the total in `dir`. `Ok(Err(_))` when
/// the client is over a limit; `Err` when the directory is unusable.
pub fn acquire(
    dir: &Path,
    ip: IpAddr,
    max_total: usize,
    max_per_ip: usize,
) -> io::Result<Result<Slots, Full>> {
    // IPv4-mapped IPv6 is the same client as its IPv4 address.
    let ip = ip.to_canonical();
    let Some(per_ip) = take(dir, &format!("ip-{ip}"), max_per_ip)? else {
        return Ok(Err(Full::PerAddress));
    };
    let Some(total) = take(dir, "all", max_total)? else {
        return Ok(Err(Full::Total)); // per_ip is given back as it drops.
    };
    Ok(Ok(Slots {
        _held: [per_ip, total],
    }))
}

/// Locks the first free one of `prefix.0` … `prefix.(n-1)`.
fn take(dir: &Path, prefix: &str, n: usize) -> io::Result<Option<Held>> {
    for k in 0..n {
        let path = dir.join(format!("{prefix}.{k}"));
        for _ in 0..RETRIES {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(O_NOFOLLOW)
                .open(&path)?;
            // SAFETY: flock on an fd this File owns.
            if unsafe { flock(file.as_raw_fd(), LOCK_EX | LOCK_NB) } != 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break; // Held by a live session: try the next slot.
                }
                return Err(e);
            }
            let ours = file.metadata()?;
            match fs::symlink_metadata(&path) {
                Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {
                    return Ok(Some(Held { _file: file, path }));
                }
                // Its holder removed it as we locked it: open the name again.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(None)
}

/// The directory systemd made for the unit (`RuntimeDirectory=`), the
/// first one when there are several.
pub fn runtime_directory() -> Option<PathBuf> {
    let dirs = std::env::var_os("RUNTIME_DIRECTORY")?;
    let first = dirs.to_str()?.split(':').next()?;
    (!first.is_empty()).then(|| PathBuf::from(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("smtpbox-slots-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn per_address_limit_then_a_freed_slot_is_taken_again() {
        let dir = temp("ip");
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let first = acquire(&dir, a, 10, 2).unwrap().unwrap();
        let _second = acquire(&dir, a, 10, 2).unwrap().unwrap();
        assert_eq!(
            acquire(&dir, a, 10, 2).unwrap().err(),
            Some(Full::PerAddress)
        );
        let _other = acquire(&dir, b, 10, 2).unwrap().unwrap();
        drop(first);
        let _again = acquire(&dir, a, 10, 2).unwrap().unwrap();
        assert_eq!(
            acquire(&dir, a, 10, 2).unwrap().err(),
            Some(Full::PerAddress)
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn total_limit_counts_every_address() {
        let dir = temp("total");
        let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
        let _s1 = acquire(&dir, ip(1), 2, 8).unwrap().unwrap();
        let _s2 = acquire(&dir, ip(2), 2, 8).unwrap().unwrap();
        assert_eq!(acquire(&dir, ip(3), 2, 8).unwrap().err(), Some(Full::Total));
        // The refused client's per-address slot was given back.
        assert!(!names(&dir).contains(&"ip-192.0.2.3.0".to_string()));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn mapped_ipv4_is_the_same_client_and_files_go_when_done() {
        let dir = temp("mapped");
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let held = acquire(&dir, v4, 4, 1).unwrap().unwrap();
        assert_eq!(
            acquire(&dir, mapped, 4, 1).unwrap().err(),
            Some(Full::PerAddress)
        );
        assert_eq!(names(&dir), ["all.0", "ip-127.0.0.1.0"]);
        drop(held);
        assert!(names(&dir).is_empty(), "{:?}", names(&dir));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_left_by_a_killed_session_is_reused() {
        let dir = temp("stale");
        fs::write(dir.join("ip-192.0.2.9.0"), b"").unwrap();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let _held = acquire(&dir, ip, 4, 1).unwrap().unwrap();
        assert_eq!(
            acquire(&dir, ip, 4, 1).unwrap().err(),
            Some(Full::PerAddress)
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unusable_directory_is_an_error_not_a_refusal() {
        let dir = temp("gone").join("missing");
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(acquire(&dir, ip, 4, 1).is_err());
    }
}
