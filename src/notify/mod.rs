//! Notifications (SPEC §7a): after a message is stored and its `250`
//! written, the `notify` program runs once per Maildir that received it,
//! in a process of its own, outside the server's sandbox.
//!
//! ```text
//!  server (sandboxed, no network)            notifier (the smtpbox user,
//!  ─────────────────────────────             ordinary files and network)
//!  250 written ─► Notice + the stored   ──►  rate per Maildir ─► backlog ─► notify_jobs
//!                 file, opened read-only     (past it: counted,  (bounded;   workers: one
//!                 (SOCK_SEQPACKET,           the storm's last    past it:    program each,
//!                 SCM_RIGHTS, never           one kept for its    counted)    notify_timeout,
//!                 blocking: Sender)          tail run)                        then TERM, KILL
//! ```
//!
//! There is one notifier per process ([`install`]): the server's own
//! child, forked before the sandbox and before any thread (standalone,
//! `--inetd`, sendmail mode: [`spawn`]), or a service of its own that the
//! server reaches at the socket named by `$SMTPBOX_NOTIFIER` (the shipped
//! systemd units: `smtpbox --notifier`, [`serve`]). Either way the server
//! only sends: a notifier that is gone or full costs a log line, never a
//! reply.
//! The program gets the message on stdin through the descriptor the server
//! passed, so the notifier needs no access to the Maildirs at all.

use std::fmt;
use std::time::Duration;

use crate::delivery::Target;
use crate::privilege::Account;

mod job;
mod link;
mod notifier;
mod process;
mod subject;

pub use link::{connect, spawn, Sender, ENV_SOCKET};
pub use notifier::serve;

/// The `notify*` settings (SPEC §3, §7a).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `notify`: the program (an absolute path) and its fixed arguments;
    /// None: no notifications.
    pub program: Option<Vec<String>>,
    /// Where `notify` was set (`FILE:LINE`), for `--check`.
    pub origin: Option<String>,
    pub timeout: Duration,
    pub jobs: usize,
    pub rate: Rate,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            program: None,
            origin: None,
            timeout: Duration::from_secs(30),
            jobs: 2,
            rate: Rate {
                count: 10,
                period: Duration::from_secs(60),
            },
        }
    }
}

/// `notify_jobs` at most.
pub const MAX_JOBS: u64 = 64;
/// `notify_rate`'s count at most.
pub const MAX_RATE: u64 = 100_000;
/// `notify_rate`'s period at most: a day.
pub const MAX_PERIOD: u64 = 86_400;

/// `notify_rate = N/PERIOD`: at most `count` runs per `period` per Maildir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    /// `N/PERIOD`, PERIOD a number of seconds with an optional unit
    /// (`s`, `m`, `h`, `d`), or a unit alone: `10/1m`, `10/m`, `30/3600`.
    pub fn parse(value: &str) -> Result<Rate, String> {
        let (n, period) = value
            .split_once('/')
            .ok_or_else(|| format!("expected N/PERIOD (like 10/1m), found `{value}`"))?;
        let count: u64 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=MAX_RATE).contains(n))
            .ok_or_else(|| format!("`{}` is not a count from 1 to {MAX_RATE}", n.trim()))?;
        let period = period.trim();
        let (digits, unit) = match period.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((i, _)) => period.split_at(i),
            None => (period, "s"),
        };
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => return Err(format!("`{period}`: the period's unit is s, m, h or d")),
        };
        let number: u64 = match digits {
            "" => 1,
            d => d
                .parse()
                .map_err(|_| format!("`{period}` is not a period"))?,
        };
        let seconds = number.saturating_mul(scale);
        if !(1..=MAX_PERIOD).contains(&seconds) {
            return Err(format!(
                "`{period}`: the period is from 1 s to {MAX_PERIOD} s (1d)"
            ));
        }
        Ok(Rate {
            count: count as u32,
            period: Duration::from_secs(seconds),
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.count, self.period.as_secs())
    }
}

/// `notify = PROGRAM [ARG…]`: split on whitespace, no shell; the program
/// an absolute path.
pub fn parse_program(value: &str) -> Result<Vec<String>, String> {
    let words: Vec<String> = value.split_whitespace().map(str::to_string).collect();
    match words.first() {
        None => Err("expected PROGRAM [ARG...]".to_string()),
        Some(p) if !p.starts_with('/') => Err(format!("`{p}` is not an absolute path")),
        Some(_) => Ok(words),
    }
}

/// `--check` (SPEC §7a): the program exists, is a regular file, and
/// `account` (the `user`; None: this process) may execute it. The error
/// names the file and line of `notify`.
pub fn check_program(settings: &Settings, account: Option<&Account>) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Some(program) = settings.program.as_ref().and_then(|p| p.first()) else {
        return Ok(());
    };
    let origin = settings.origin.as_deref().unwrap_or("config");
    let fail = |why: String| Err(format!("{origin}: `notify`: {program}: {why}"));
    let meta = match std::fs::metadata(program) {
        Ok(meta) => meta,
        Err(e) => return fail(e.to_string()),
    };
    if !meta.is_file() {
        return fail("not a regular file".to_string());
    }
    let mode = meta.mode();
    let runnable = match account {
        // setgroups(1, gid) at the drop: the primary group is the only one.
        Some(a) if a.uid == 0 => mode & 0o111 != 0,
        Some(a) if a.uid == meta.uid() => mode & 0o100 != 0,
        Some(a) if a.gid == meta.gid() => mode & 0o010 != 0,
        Some(_) => mode & 0o001 != 0,
        None => executable(program),
    };
    match (runnable, account) {
        (true, _) => Ok(()),
        (false, Some(a)) => fail(format!(
            "not executable by {} (mode {:o})",
            a.name,
            mode & 0o7777
        )),
        (false, None) => fail(format!("not executable (mode {:o})", mode & 0o7777)),
    }
}

fn executable(path: &str) -> bool {
    crate::privilege::may(std::path::Path::new(path), crate::privilege::X_OK).is_ok()
}

/// One notification: one stored message in one Maildir, what the program
/// is told of it (SPEC §7a). The stored file travels beside it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notice {
    /// The Maildir (its root, not a folder): the rate is counted per one.
    pub maildir: String,
    /// The file's path in `new/` when it was stored.
    pub file: String,
    pub id: String,
    pub sender: String,
    /// The recipients routed to this Maildir, comma-separated.
    pub recipients: String,
    pub size: u64,
    /// The client as in the delivery log line.
    pub client: String,
}

/// A message just stored, as its notices tell it.
pub struct Stored<'a> {
    pub id: &'a str,
    /// Its name in `new/`.
    pub file_name: &'a str,
    pub sender: &'a str,
    pub size: u64,
    pub client: String,
}

impl Stored<'_> {
    /// One notice per Maildir that received the message, in the order of
    /// its recipients (`(address, target)`); the file is where it went in
    /// the first of that Maildir's directories.
    pub fn notices<'t>(
        &self,
        recipients: impl Iterator<Item = (&'t str, &'t Target)>,
    ) -> Vec<Notice> {
        let mut out: Vec<Notice> = Vec::new();
        for (address, target) in recipients {
            let Target::Maildir { root, .. } = target;
            let maildir = root.display().to_string();
            match out.iter_mut().find(|n| n.maildir == maildir) {
                Some(n) => {
                    if !n.recipients.split(',').any(|a| a == address) {
                        n.recipients.push(',');
                        n.recipients.push_str(address);
                    }
                }
                None => out.push(Notice {
                    file: target
                        .dir()
                        .join("new")
                        .join(self.file_name)
                        .display()
                        .to_string(),
                    maildir,
                    id: self.id.to_string(),
                    sender: self.sender.to_string(),
                    recipients: address.to_string(),
                    size: self.size,
                    client: self.client.clone(),
                }),
            }
        }
        out
    }
}

/// This process's notifier: one per process (forked once, or the
/// service's socket), set at start-up by [`install`].
static NOTIFIER: std::sync::OnceLock<Sender> = std::sync::OnceLock::new();

/// Makes `sender` where this process's notices go ([`send_all`]); a
/// second call changes nothing.
pub fn install(sender: Sender) {
    let _ = NOTIFIER.set(sender);
}

/// This process's notifier, when `notify` is set and it started.
pub fn installed() -> Option<&'static Sender> {
    NOTIFIER.get()
}

/// Sends every notice to this process's notifier, logging each one that
/// could not go (the mail is stored either way).
pub fn send_all(notices: &[Notice]) {
    let Some(sender) = installed() else {
        return;
    };
    for notice in notices {
        if let Err(e) = sender.send(notice) {
            log::warn!("notify {}: not sent: {e}", notice.id);
        }
    }
}

/// The largest encoded notice: a record that would be larger is cut in
/// its recipients.
pub const MAX_NOTICE: usize = 16 * 1024;

impl Notice {
    /// Fields separated by NUL, in a fixed order, after a version tag.
    pub fn encode(&self) -> Vec<u8> {
        let size = self.size.to_string();
        let fields = [
            "smtpbox-notice-1",
            &self.maildir,
            &self.file,
            &self.id,
            &self.sender,
            &self.recipients,
            &size,
            &self.client,
        ];
        let mut out = Vec::new();
        for field in fields {
            out.extend(field.bytes().map(|b| if b == 0 { b' ' } else { b }));
            out.push(0);
        }
        if out.len() > MAX_NOTICE {
            // Only the recipients can be long: cut them, keep the rest.
            let over = out.len() - MAX_NOTICE;
            let mut cut = self.clone();
            let keep = cut.recipients.len().saturating_sub(over + 4);
            let mut end = keep;
            while !cut.recipients.is_char_boundary(end) {
                end -= 1;
            }
            cut.recipients.truncate(end);
            cut.recipients.push_str(",...");
            return cut.encode();
        }
        out
    }

    /// The inverse of [`Notice::encode`]; None for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Notice> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut fields = text.strip_suffix('\0')?.split('\0');
        if fields.next()? != "smtpbox-notice-1" {
            return None;
        }
        let mut next = || fields.next().map(str::to_string);
        let notice = Notice {
            maildir: next()?,
            file: next()?,
            id: next()?,
            sender: next()?,
            recipients: next()?,
            size: next()?.parse().ok()?,
            client: next()?,
        };
        fields.next().is_none().then_some(notice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_units_and_bounds() {
        let r = |s| Rate::parse(s);
        assert_eq!(r("10/1m").unwrap(), Rate::parse("10/60").unwrap());
        assert_eq!(r("10/m").unwrap().period, Duration::from_secs(60));
        assert_eq!(r(" 3 / 2h ").unwrap().period, Duration::from_secs(7_200));
        assert_eq!(r("1/1d").unwrap().period, Duration::from_secs(86_400));
        assert_eq!(r("5/30s").unwrap().count, 5);
        for bad in [
            "10",
            "0/1m",
            "x/1m",
            "10/0",
            "10/2d",
            "10/1w",
            "10/m5",
            "100001/1m",
        ] {
            assert!(r(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn check_names_the_line_and_what_is_wrong_with_the_program() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("smtpbox-notify-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("hook");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let settings = |p: &std::path::Path| Settings {
            program: Some(vec![p.display().to_string()]),
            origin: Some("/etc/smtpbox/smtpbox.conf:7".into()),
            ..Settings::default()
        };
        let me = std::fs::metadata(&dir).unwrap();
        use std::os::unix::fs::MetadataExt;
        let owner = Account {
            name: "owner".into(),
            uid: me.uid(),
            gid: me.gid(),
        };
        let other = Account {
            name: "other".into(),
            uid: 4242,
            gid: 4242,
        };
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o744)).unwrap();
        assert_eq!(check_program(&settings(&script), Some(&owner)), Ok(()));
        let e = check_program(&settings(&script), Some(&other)).unwrap_err();
        assert!(
            e.starts_with("/etc/smtpbox/smtpbox.conf:7: `notify`: "),
            "{e}"
        );
        assert!(e.ends_with("not executable by other (mode 744)"), "{e}");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_program(&settings(&script), Some(&other)), Ok(()));
        let e = check_program(&settings(&dir.join("gone")), None).unwrap_err();
        assert!(e.contains("gone: No such file"), "{e}");
        let e = check_program(&settings(&dir), None).unwrap_err();
        assert!(e.ends_with("not a regular file"), "{e}");
        assert_eq!(check_program(&Settings::default(), None), Ok(()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn programs_are_absolute_and_split_on_whitespace() {
        assert_eq!(
            parse_program("/usr/bin/curl -sT -  https://x").unwrap(),
            ["/usr/bin/curl", "-sT", "-", "https://x"]
        );
        assert!(parse_program("curl -T -").unwrap_err().contains("absolute"));
        assert!(parse_program("").is_err());
    }

    #[test]
    fn notices_round_trip_and_long_recipient_lists_are_cut() {
        let n = Notice {
            maildir: "/m".into(),
            file: "/m/new/1.M2P3Q4,S=5".into(),
            id: "1.M2P3Q4".into(),
            sender: "a@b".into(),
            recipients: "root@box,x@box".into(),
            size: 5,
            client: "127.0.0.1".into(),
        };
        assert_eq!(Notice::decode(&n.encode()), Some(n.clone()));
        assert_eq!(Notice::decode(b"other\0"), None);
        assert_eq!(Notice::decode(&n.encode()[1..]), None);
        let long = Notice {
            recipients: "é".repeat(MAX_NOTICE),
            ..n
        };
        let bytes = long.encode();
        assert!(bytes.len() <= MAX_NOTICE, "{}", bytes.len());
        let back = Notice::decode(&bytes).unwrap();
        assert!(back.recipients.ends_with(",..."));
        assert_eq!(back.client, "127.0.0.1");
    }
}
