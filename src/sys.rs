//! Linux ABI numbers that std does not export, for every architecture
//! smtpbox is built for, in one place: errno values, open(2) flags, socket
//! options and the system call base. asm-generic's are the default (x86,
//! RISC-V); MIPS numbers errno, several open flags and the socket options
//! its own way and offsets system calls by its ABI's base; ARM and PowerPC
//! move `O_DIRECTORY` and `O_NOFOLLOW`; PowerPC also `SO_PEERCRED`.
//! (arch/*/include/uapi/asm/{errno,fcntl,socket}.h in the kernel's tree.)

#![allow(dead_code)] // Each table lists its family's values; not all are used on all targets.

pub use arch::*;
pub use open::*;

/// The same everywhere.
pub const EPERM: i32 = 1;
pub const ENOSPC: i32 = 28;
pub const AT_FDCWD: i32 = -100;
pub const AT_SYMLINK_FOLLOW: i32 = 0x400;
pub const O_RDONLY: i32 = 0;
pub const O_RDWR: i32 = 2;
pub const O_CLOEXEC: i32 = 0o2000000;
pub const O_PATH: i32 = 0o10000000;
pub const O_TMPFILE: i32 = 0o20000000 | O_DIRECTORY;
/// The same on every architecture smtpbox is built for (sparc, alpha and
/// parisc, which it is not, differ).
pub const O_NOATIME: i32 = 0o1000000;
pub const MSG_PEEK: i32 = 2;
pub const MSG_DONTWAIT: i32 = 0x40;

/// errno, socket options and the system call base.
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6"
)))]
mod arch {
    pub const ENOSYS: i32 = 38;
    pub const ELOOP: i32 = 40;
    pub const EOPNOTSUPP: i32 = 95;
    pub const EDQUOT: i32 = 122;
    pub const O_NONBLOCK: i32 = 0o4000;
    pub const SOL_SOCKET: i32 = 1;
    #[cfg(not(any(target_arch = "powerpc", target_arch = "powerpc64")))]
    pub const SO_PEERCRED: i32 = 17;
    #[cfg(any(target_arch = "powerpc", target_arch = "powerpc64"))]
    pub const SO_PEERCRED: i32 = 21;
    pub const SYSCALL_BASE: std::ffi::c_long = 0;
}
#[cfg(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6"
))]
mod arch {
    pub const ENOSYS: i32 = 89;
    pub const ELOOP: i32 = 90;
    pub const EOPNOTSUPP: i32 = 122;
    pub const EDQUOT: i32 = 1133;
    pub const O_NONBLOCK: i32 = 0x80;
    pub const SOL_SOCKET: i32 = 0xffff;
    pub const SO_PEERCRED: i32 = 18;
    /// o32 4000, n64 5000, n32 6000.
    #[cfg(any(target_arch = "mips", target_arch = "mips32r6"))]
    pub const SYSCALL_BASE: std::ffi::c_long = 4000;
    #[cfg(all(
        any(target_arch = "mips64", target_arch = "mips64r6"),
        target_pointer_width = "64"
    ))]
    pub const SYSCALL_BASE: std::ffi::c_long = 5000;
    #[cfg(all(
        any(target_arch = "mips64", target_arch = "mips64r6"),
        target_pointer_width = "32"
    ))]
    pub const SYSCALL_BASE: std::ffi::c_long = 6000;
}

/// The open(2) flags that move between families.
#[cfg(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6"
))]
mod open {
    pub const O_CREAT: i32 = 0x100;
    pub const O_EXCL: i32 = 0x400;
    pub const O_DIRECTORY: i32 = 0x10000;
    pub const O_NOFOLLOW: i32 = 0x20000;
}
#[cfg(any(
    target_arch = "arm",
    target_arch = "aarch64",
    target_arch = "powerpc",
    target_arch = "powerpc64"
))]
mod open {
    pub const O_CREAT: i32 = 0o100;
    pub const O_EXCL: i32 = 0o200;
    pub const O_DIRECTORY: i32 = 0o40000;
    pub const O_NOFOLLOW: i32 = 0o100000;
}
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6",
    target_arch = "arm",
    target_arch = "aarch64",
    target_arch = "powerpc",
    target_arch = "powerpc64"
)))]
mod open {
    pub const O_CREAT: i32 = 0o100;
    pub const O_EXCL: i32 = 0o200;
    pub const O_DIRECTORY: i32 = 0o200000;
    pub const O_NOFOLLOW: i32 = 0o400000;
}
