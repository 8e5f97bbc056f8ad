//! `--check` (SPEC §2): files readable, Maildirs writable or creatable,
//! reported, never created.

use super::*;

pub fn check(config: &Config) -> Result<Vec<String>, ConfigError> {
    let mut notes = Vec::new();
    for dir in config.maildirs() {
        notes.extend(check_maildir(dir)?);
    }
    check_files(config)?;
    Ok(notes)
}

/// The certificate, key and users files can be read: each a regular file
/// of at most [`MAX_SECRET_FILE`] bytes. At start-up a failure here is a
/// config error (SPEC §8: exit 78); the message names the file and errno.
pub fn check_files(config: &Config) -> Result<(), ConfigError> {
    for file in config.read_files() {
        read_bounded(file, MAX_SECRET_FILE, true).map_err(ConfigError::new)?;
    }
    Ok(())
}

/// Reads at most `cap` bytes of `path`; more is an error, never an
/// allocation. With `regular_only`, a device, FIFO, socket or directory is
/// refused before it is opened (opening a FIFO would block).
pub fn read_bounded(path: &Path, cap: u64, regular_only: bool) -> Result<Vec<u8>, String> {
    let fail = |e: io::Error| format!("{}: cannot read: {e}", path.display());
    let refuse = |meta: &fs::Metadata| -> Result<(), String> {
        let kind = file_kind(meta);
        if kind == "directory" || (regular_only && kind != "regular file") {
            return Err(format!("{}: not a regular file ({kind})", path.display()));
        }
        if meta.is_file() && meta.len() > cap {
            return Err(too_large(path, cap));
        }
        Ok(())
    };
    if regular_only {
        refuse(&fs::metadata(path).map_err(fail)?)?;
    }
    let file = File::open(path).map_err(fail)?;
    // Looked at again through the descriptor: the name may have changed.
    refuse(&file.metadata().map_err(fail)?)?;
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() as u64 > cap {
        return Err(too_large(path, cap));
    }
    Ok(bytes)
}

pub(super) fn too_large(path: &Path, cap: u64) -> String {
    format!("{}: too large (more than {cap} bytes)", path.display())
}

pub(super) fn file_kind(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "regular file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// Looks at a Maildir without touching it (`--check` writes nothing):
/// an existing `tmp/`, `new/` and `cur/` must be directories (not
/// symlinks: delivery never follows one) that this process may write; a
/// missing part must be creatable, that is its nearest existing ancestor
/// is a directory this process may write. Returns what the first delivery
/// would create, if anything.
pub(super) fn check_maildir(dir: &Path) -> Result<Option<String>, ConfigError> {
    let fail = |path: &Path, what: &str, e: io::Error| {
        ConfigError::new(format!("{}: {what}: {e}", path.display()))
    };
    let not_dir = |path: &Path, kind: &str| {
        ConfigError::new(format!(
            "{}: not a directory but a {kind} (a Maildir needs tmp/, new/ and cur/)",
            path.display()
        ))
    };
    let subs = ["tmp", "new", "cur"];
    let mut missing = Vec::new();
    match fs::metadata(dir) {
        // The Maildir itself may be a symlink (/var/mail -> /data/mail).
        Ok(meta) if !meta.is_dir() => return Err(not_dir(dir, file_kind(&meta))),
        Ok(_) => {
            for sub in subs {
                let path = dir.join(sub);
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(ConfigError::new(format!(
                            "{}: a symlink (delivery never follows one)",
                            path.display()
                        )))
                    }
                    Ok(m) if !m.is_dir() => return Err(not_dir(&path, file_kind(&m))),
                    Ok(_) => writable(&path).map_err(|e| fail(&path, "cannot write", e))?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(sub),
                    Err(e) => return Err(fail(&path, "cannot inspect", e)),
                }
            }
            if missing.is_empty() {
                return Ok(None);
            }
            writable(dir).map_err(|e| fail(dir, "cannot create its subdirectories", e))?;
        }
        Err(e) if absent(&e) => {
            missing.extend(subs);
            let mut ancestor = dir;
            let existing = loop {
                ancestor = match ancestor.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                match fs::metadata(ancestor) {
                    Ok(meta) if meta.is_dir() => break ancestor,
                    Ok(meta) => return Err(not_dir(ancestor, file_kind(&meta))),
                    Err(e) if absent(&e) && ancestor != Path::new(".") => {}
                    Err(e) => return Err(fail(ancestor, "cannot inspect", e)),
                }
            };
            writable(existing)
                .map_err(|e| fail(existing, &format!("cannot create {}", dir.display()), e))?;
        }
        Err(e) => return Err(fail(dir, "cannot inspect", e)),
    }
    Ok(Some(format!(
        "{}: the first delivery will create {}/{{{}}}",
        dir.display(),
        dir.display(),
        missing.join(",")
    )))
}

/// ENOENT, or ENOTDIR (a file where a directory of the path should be:
/// the walk up the path names it).
pub(super) fn absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// access(2) W_OK | X_OK: may this process create entries in `dir`.
pub(super) fn writable(dir: &Path) -> io::Result<()> {
    crate::privilege::may(dir, crate::privilege::W_OK | crate::privilege::X_OK)
}
