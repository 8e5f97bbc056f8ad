//! Dropping root after binding (SPEC §3 `user`): do as little as possible
//! as root. The account is read from /etc/passwd (a static binary cannot
//! rely on NSS modules), then setgroups/setgid/setuid, and a check that
//! root cannot be regained.

use std::io;

extern "C" {
    fn setgroups(size: usize, list: *const u32) -> i32;
    fn setgid(gid: u32) -> i32;
    fn setuid(uid: u32) -> i32;
    fn getuid() -> u32;
    fn geteuid() -> u32;
    fn getgid() -> u32;
    fn getegid() -> u32;
    fn access(path: *const std::ffi::c_char, mode: i32) -> i32;
}

/// access(2) modes.
pub const X_OK: i32 = 1;
pub const W_OK: i32 = 2;

/// access(2): may this process (by its real ids) use `path` as `mode`.
pub fn may(path: &std::path::Path, mode: i32) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: `path` is a valid NUL-terminated string for the call's duration.
    match unsafe { access(path.as_ptr(), mode) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A user account: the ids to run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// True when the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { geteuid() == 0 }
}

/// The real uid: who ran us (sendmail mode's caller).
pub fn real_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { getuid() }
}

/// The effective uid: who owns what we create.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { geteuid() }
}

/// The login name of `uid` from /etc/passwd, or the uid in decimal when it
/// has none there (or a name that is not one printable word), so that a
/// Received header or a log line can always name the caller.
pub fn login_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    user_name(&passwd, uid)
        .filter(|n| n.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| uid.to_string())
}

/// The login name for `uid` in passwd(5) text.
pub fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let found = fields.nth(1)?.parse::<u32>().ok()? == uid;
        (found && !name.is_empty()).then(|| name.to_string())
    })
}

/// Finds `name` in /etc/passwd.
pub fn lookup(name: &str) -> Result<Account, String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    find_account(&passwd, name).ok_or_else(|| format!("user {name:?} not found in /etc/passwd"))
}

/// Parses passwd(5) lines `name:x:uid:gid:gecos:home:shell`.
pub fn find_account(passwd: &str, name: &str) -> Option<Account> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(Account {
            name: name.to_string(),
            uid,
            gid,
        })
    })
}

/// Becomes `account` for good: supplementary groups, group, then user.
pub fn drop_to(account: &Account) -> Result<(), String> {
    let fail = |what: &str| {
        format!(
            "cannot drop privileges to {} ({what}): {}",
            account.name,
            io::Error::last_os_error()
        )
    };
    // SAFETY: plain system calls on integers and a one-element array that
    // outlives the call.
    unsafe {
        if setgroups(1, &account.gid) != 0 {
            return Err(fail("setgroups"));
        }
        if setgid(account.gid) != 0 {
            return Err(fail("setgid"));
        }
        if setuid(account.uid) != 0 {
            return Err(fail("setuid"));
        }
        if getuid() != account.uid
            || geteuid() != account.uid
            || getgid() != account.gid
            || getegid() != account.gid
        {
            return Err(format!(
                "privilege drop to {} did not take effect",
                account.name
            ));
        }
        if account.uid != 0 && setuid(0) == 0 {
            return Err(format!(
                "privilege drop to {} failed: root could be regained",
                account.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_accounts_in_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(
            find_account(passwd, "nobody"),
            Some(Account {
                name: "nobody".to_string(),
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(find_account(passwd, "nobod"), None);
        assert_eq!(find_account("broken:x:abc:1::\n", "broken"), None);
    }

    #[test]
    fn user_names_from_passwd() {
        let passwd = "root:x:0:0::/root:/bin/sh\nbad\njoe:x:1000:1000::/home/joe:/bin/sh\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("joe"));
        assert_eq!(user_name(passwd, 5), None);
        assert_eq!(login_name(0), "root");
        assert_eq!(login_name(4_000_000_123), "4000000123", "no entry: the uid");
    }
}
