//! Why a message could not be stored now ([`DeliveryError`]), named by
//! storage and by the delivery seam above it (which re-exports it).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::sys::{EDQUOT, ENOSPC};

/// Why a message could not be stored now. Every variant is temporary:
/// the sender may try again (SPEC §7).
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

impl DeliveryError {
    /// Wraps an I/O error on `path`, classifying a full disk as `NoSpace`
    /// (tested in `maildir::tests`, beside the errno values).
    pub fn io(path: &Path, source: io::Error) -> DeliveryError {
        let path = path.to_path_buf();
        if is_no_space(&source) {
            DeliveryError::NoSpace { path, source }
        } else {
            DeliveryError::Io { path, source }
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

/// True when the error, or any error it wraps, is ENOSPC or EDQUOT.
pub(crate) fn is_no_space(err: &io::Error) -> bool {
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
