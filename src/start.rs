//! The start modes (SPEC §8) as the binary runs them: standalone (binding,
//! or the sockets systemd passed, and the local socket), one `--inetd`
//! session on stdin/stdout with its connection limits, and `--check`.
//! `main.rs` only wires these together; what they decide is tested here.

use std::path::Path;

use crate::config::{self, Config};
use crate::server::{self, Shared};
use crate::session::{LocalCaller, Peer};
use crate::{activation, notify, privilege, slots, transport};

/// sysexits.h EX_CONFIG: a certificate, key or users file that cannot be
/// used at start-up (SPEC §8; the units do not restart on it).
pub const EX_CONFIG: u8 = 78;

/// Takes the sockets systemd passed, or binds the configured ones, and the
/// local submission socket (passed as `local`, else made at
/// `local_socket`); then drops root when `user` is set.
pub fn start_listening(
    shared: &Shared,
) -> Result<(Vec<server::Bound>, Option<server::LocalSocket>), StartError> {
    let config = &shared.config;
    let activated = activation::listen_fds()?;
    // Socket-activated: systemd's sockets only, even when it passed no TCP one.
    let standalone = activated.is_empty();
    let local = match (activated.local, &config.local_socket) {
        (Some(listener), path) => {
            let path = listener
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf))
                .or_else(|| path.clone())
                .unwrap_or_default();
            log::info!(
                "socket-activated {} ({})",
                path.display(),
                activation::LOCAL_NAME
            );
            Some(server::LocalSocket { listener, path })
        }
        // A local_socket path it cannot make is a config error (SPEC §3).
        (None, Some(path)) => Some(server::bind_local(path).map_err(|message| StartError {
            exit: EX_CONFIG,
            message,
        })?),
        (None, None) => None,
    };
    let listeners = if standalone {
        server::bind(config)?
    } else {
        let mut bound = Vec::new();
        for socket in activated.sockets {
            let addr = socket
                .listener
                .local_addr()
                .map_err(|e| format!("passed socket: {e}"))?;
            log::info!("socket-activated {} ({})", addr, socket.name);
            if socket.mode != config::Mode::Smtp && shared.tls.is_none() {
                return Err(format!(
                    "passed socket {:?} ({}) needs tls_cert and tls_key",
                    socket.name, socket.mode
                )
                .into());
            }
            bound.push(server::Bound {
                listener: socket.listener,
                listen: config::Listen {
                    addr,
                    mode: socket.mode,
                },
            });
        }
        bound
    };
    match &config.user {
        Some(user) if privilege::is_root() => {
            let account = privilege::lookup(user).map_err(|e| user_error(config, user, &e))?;
            privilege::drop_to(&account)?;
            log::info!(
                "running as {} (uid {}, gid {})",
                account.name,
                account.uid,
                account.gid
            );
        }
        // Already that user (systemd's User=smtpbox with the example config).
        Some(user)
            if privilege::lookup(user).is_ok_and(|a| a.uid == privilege::effective_uid()) => {}
        Some(user) => log::warn!("not started as root: `user = {user}` has nothing to drop"),
        None if privilege::is_root() => {
            log::warn!("serving as root: set `user = NAME` in the config, or start from systemd with User=/DynamicUser=")
        }
        None => {}
    }
    Ok((listeners, local))
}

/// Why the server did not start, and the exit status that tells it.
pub struct StartError {
    pub exit: u8,
    pub message: String,
}

impl From<String> for StartError {
    fn from(message: String) -> StartError {
        StartError { exit: 1, message }
    }
}

/// Who runs the `notify` programs of a server that runs as root without
/// `user` (they never run as root).
pub const NOTIFY_FALLBACK_USER: &str = "nobody";

/// `--notifier` (the notifier service, SPEC §7a): the socket systemd
/// passed, served as the `user` account (nobody without one) when started
/// as root.
pub fn serve_notifier(config: &Config) -> Result<(), String> {
    let socket = activation::notifier_socket()?;
    if privilege::is_root() {
        let name = config.user.as_deref().unwrap_or(NOTIFY_FALLBACK_USER);
        let account = privilege::lookup(name).map_err(|e| format!("notifier: {e}"))?;
        privilege::drop_to(&account)?;
    }
    notify::serve(&config.notify, socket)
}

/// Where this server's notices go (SPEC §7a), or None without `notify`:
/// the notifier service's socket when `$SMTPBOX_NOTIFIER` names one (the
/// shipped systemd units), else a notifier forked now, as the `user`
/// account. Call before any thread is started, before the sandbox.
/// Programs never run as root: as root without `user`, they run as nobody.
pub fn notifier(config: &Config) -> Option<notify::Sender> {
    config.notify.program.as_ref()?;
    if let Some(path) = std::env::var_os(notify::ENV_SOCKET).filter(|p| !p.is_empty()) {
        return Some(notify::connect(Path::new(&path)));
    }
    let account = match &config.user {
        Some(user) if privilege::is_root() => match privilege::lookup(user) {
            Ok(account) => Some(account),
            Err(e) => {
                log::error!("{}: no notifications", user_error(config, user, &e));
                return None;
            }
        },
        // Programs never run as root: without `user`, as nobody.
        None if privilege::is_root() => match privilege::lookup(NOTIFY_FALLBACK_USER) {
            Ok(account) => {
                log::warn!("`notify` programs run as {NOTIFY_FALLBACK_USER}: set `user = NAME`");
                Some(account)
            }
            Err(e) => {
                log::error!("`notify` without `user` as root: {e}: no notifications");
                return None;
            }
        },
        _ => None,
    };
    // A program that is missing now may be installed later: said, not fatal.
    if let Err(e) = notify::check_program(&config.notify, account.as_ref()) {
        log::warn!("{e}");
    }
    match notify::spawn(&config.notify, account.as_ref(), false) {
        Ok(sender) => Some(sender),
        Err(e) => {
            log::error!("{e}: no notifications");
            None
        }
    }
}

/// `--check`: the configuration, the Maildirs, the certificate and key,
/// the users file and the `user` account, all without writing anything.
/// Returns what the first delivery would create.
pub fn check(config: &Config) -> Result<Vec<String>, String> {
    let notes = config::check(config).map_err(|e| e.to_string())?;
    let account = match &config.user {
        Some(user) => Some(privilege::lookup(user).map_err(|e| user_error(config, user, &e))?),
        None => None,
    };
    notify::check_program(&config.notify, account.as_ref())?;
    if let Some(path) = &config.local_socket {
        server::check_local(path)?;
    }
    Shared::new(config.clone())?;
    Ok(notes)
}

/// A problem with the `user` account, named by the file and line that
/// set it (SPEC §2).
fn user_error(config: &Config, user: &str, error: &str) -> String {
    let origin = config.user_origin.as_deref().unwrap_or("config");
    format!("{origin}: `user = {user}`: {error}")
}

/// One session on stdin/stdout (inetd, systemd Accept=yes).
pub fn serve_inetd(shared: &Shared, stdio: transport::Stdio) {
    let peer = match stdio.unix_peer_uid() {
        Some(uid) => Peer::local_caller(LocalCaller {
            uid,
            user: privilege::login_name(uid),
        }),
        None => {
            let (remote, local) = stdio.addresses();
            Peer::network(remote, local)
        }
    };
    let mode = shared
        .config
        .listen
        .first()
        .map_or(config::Mode::Smtp, |l| l.mode);
    let policy = config::Policy::new(&shared.config, None, mode);
    shared.serve(Box::new(stdio), peer, &policy);
}

/// `--inetd` under systemd (Accept=yes): the connection limits across
/// every session's process, counted in the unit's RuntimeDirectory=. None
/// when the client is over a limit: it has read `421 4.3.2`. Without that
/// directory (classic inetd, a pipe) inetd's own limits apply; an unusable
/// one is logged and the session served.
pub fn inetd_slots(config: &Config, stdio: &mut transport::Stdio) -> Option<Option<slots::Slots>> {
    let (Some(dir), (Some(remote), _)) = (slots::runtime_directory(), stdio.addresses()) else {
        return Some(None);
    };
    let ip = remote.ip();
    match slots::acquire(
        &dir,
        ip,
        config.max_connections,
        config.max_connections_per_ip,
    ) {
        Ok(Ok(held)) => Some(Some(held)),
        Ok(Err(full)) => {
            log::warn!(
                "too many connections ({}), refusing [{}]:{} (421 4.3.2)",
                match full {
                    slots::Full::PerAddress => "from this address",
                    slots::Full::Total => "in all",
                },
                ip.to_canonical(),
                remote.port()
            );
            server::refuse(stdio);
            None
        }
        Err(e) => {
            log::warn!("connection limits not counted: {}: {}", dir.display(), e);
            Some(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A scratch directory for one test, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let pid = std::process::id();
            let dir = std::env::temp_dir().join(format!("smtpbox-start-{tag}-{pid}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("/etc/smtpbox/t.conf")).unwrap()
    }

    #[test]
    fn check_names_the_line_of_a_missing_user_and_writes_nothing() {
        let s = Scratch::new("check");
        let maildir = s.0.join("Maildir");
        let text = format!(
            "hostname = box\nmaildir = {}\nuser = no-such-user-start\n",
            maildir.display()
        );
        let err = check(&config(&text)).unwrap_err();
        assert!(
            err.starts_with("/etc/smtpbox/t.conf:3: `user = no-such-user-start`: "),
            "{err}"
        );
        let notes = check(&config(&text.replace("user = no-such-user-start\n", ""))).unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains(&maildir.display().to_string()),
            "{notes:?}"
        );
        assert!(!maildir.exists(), "--check created the Maildir");
    }

    #[test]
    fn standalone_binds_every_listener_and_the_local_socket() {
        let s = Scratch::new("listen");
        let socket = s.0.join("run/smtpbox.sock");
        let text = format!(
            "hostname = box\nmaildir = {}\nlisten = 127.0.0.1:0\nlisten = 127.0.0.2:0\nlocal_socket = {}\n",
            s.0.join("Maildir").display(),
            socket.display()
        );
        let shared = Shared::new(config(&text)).unwrap();
        let Ok((bound, local)) = start_listening(&shared) else {
            panic!("did not start");
        };
        let ips: Vec<String> = bound
            .iter()
            .map(|b| b.listener.local_addr().unwrap().ip().to_string())
            .collect();
        assert_eq!(ips, ["127.0.0.1", "127.0.0.2"]);
        for b in &bound {
            assert_ne!(b.listener.local_addr().unwrap().port(), 0);
            assert_eq!(b.listen.mode, config::Mode::Smtp);
        }
        assert_eq!(local.as_ref().map(|l| &l.path), Some(&socket));
        assert!(std::os::unix::net::UnixStream::connect(&socket).is_ok());
        drop(local);
    }

    #[test]
    fn a_local_socket_it_cannot_make_is_exit_78() {
        let s = Scratch::new("local");
        let blocker = s.0.join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let text = format!(
            "hostname = box\nmaildir = {}\nlisten = 127.0.0.1:0\nlocal_socket = {}/sock\n",
            s.0.join("Maildir").display(),
            blocker.display()
        );
        let shared = Shared::new(config(&text)).unwrap();
        let Err(e) = start_listening(&shared) else {
            panic!("started with a socket under a file");
        };
        assert_eq!(e.exit, EX_CONFIG, "{}", e.message);
        assert!(
            e.message.contains(&blocker.display().to_string()),
            "{}",
            e.message
        );
    }

    #[test]
    fn user_errors_fall_back_to_the_config_without_a_line() {
        let mut c = config("hostname = box\nmaildir = /nonexistent/m\n");
        c.user = Some("x".to_string());
        assert_eq!(user_error(&c, "x", "gone"), "config: `user = x`: gone");
        c.user_origin = Some("f:7".to_string());
        assert_eq!(user_error(&c, "x", "gone"), "f:7: `user = x`: gone");
    }
}
