//! The host's name, read once from uname(2): the default `hostname` and
//! the host part of Maildir file names.

/// The node name from uname(2): unlike /proc/sys/kernel/hostname it is
/// there under systemd's `ProcSubset=pid`, in chroots and without /proc.
/// `localhost` when it is empty or not a usable name. The one place the
/// host name is read: config defaults and Maildir file names use it.
pub fn system_hostname() -> String {
    hostname_from_nodename(&uname_nodename())
}

/// `struct utsname` on Linux: six fields of 65 bytes (`_UTSNAME_LENGTH`).
#[repr(C)]
struct UtsName {
    fields: [[u8; 65]; 6],
}

extern "C" {
    fn uname(buf: *mut UtsName) -> i32;
}

/// The `nodename` field of uname(2), up to its NUL; empty on failure.
fn uname_nodename() -> Vec<u8> {
    let mut uts = UtsName {
        fields: [[0; 65]; 6],
    };
    // SAFETY: `uts` is a writable struct utsname that outlives the call.
    if unsafe { uname(&mut uts) } != 0 {
        return Vec::new();
    }
    let node = &uts.fields[1];
    let len = node.iter().position(|&b| b == 0).unwrap_or(node.len());
    node[..len].to_vec()
}

/// The hostname for a node name: trimmed, `localhost` when empty or not
/// one printable word (the kernel accepts any bytes there).
fn hostname_from_nodename(node: &[u8]) -> String {
    match std::str::from_utf8(node).map(str::trim) {
        Ok(name) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()) => {
            name.to_string()
        }
        _ => "localhost".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    #[test]
    fn hostname_comes_from_uname() {
        // uname(2) and /proc agree where /proc is there; only uname is
        // there under ProcSubset=pid.
        let node = uname_nodename();
        assert!(!node.is_empty(), "uname gave no node name");
        if let Ok(proc_name) = fs::read_to_string("/proc/sys/kernel/hostname") {
            assert_eq!(system_hostname(), proc_name.trim());
        }
        assert_eq!(hostname_from_nodename(b"box.example\n"), "box.example");
        assert_eq!(hostname_from_nodename(b""), "localhost");
        assert_eq!(hostname_from_nodename(b"two words"), "localhost");
        assert_eq!(hostname_from_nodename(b"bad\xff"), "localhost");
    }
}
