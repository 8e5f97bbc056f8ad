//! The smtpbox binary: parses the command line and starts the chosen mode.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use smtpbox::config::{self, Config, Invocation};
use smtpbox::server::Shared;
use smtpbox::session::{LocalCaller, Peer};
use smtpbox::{
    activation, logging, maildir, privilege, sandbox, sendmail, server, slots, transport,
};

/// Maildir convention: files in tmp/ this old are left over from a crash.
const STALE_TMP: Duration = Duration::from_secs(36 * 3600);

/// sysexits.h EX_CONFIG: a certificate, key or users file that cannot be
/// used at start-up (SPEC §8; the units do not restart on it).
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    // OS strings: a path argument need not be UTF-8 (SPEC §2).
    let argv: Vec<OsString> = std::env::args_os().collect();
    if let Some(args) = sendmail::sendmail_args(&argv) {
        // warn, not info: cron mails back whatever reaches stderr.
        logging::init("warn", true);
        return sendmail::main(&args, |config| {
            serve_inetd(&Shared::new(config)?, transport::Stdio::new());
            Ok(())
        });
    }
    let invocation = match config::from_args(argv.get(1..).unwrap_or_default()) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("smtpbox: {e}");
            return ExitCode::from(1);
        }
    };
    let inetd = matches!(&invocation, Invocation::Run(_, options) if options.inetd);
    logging::init("info", inetd);
    match invocation {
        Invocation::Help(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Invocation::Version => {
            println!("smtpbox {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Invocation::Check(config) => match check(&config) {
            Ok(notes) => {
                for note in notes {
                    println!("smtpbox: {note}");
                }
                println!("smtpbox: configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("smtpbox: {e}");
                ExitCode::from(1)
            }
        },
        Invocation::Run(config, options) => {
            // The files are looked at (type, size, readable) before they are
            // parsed; either failing is a config error, logged with the file
            // and the errno.
            let loaded = config::check_files(&config)
                .map_err(|e| e.to_string())
                .and_then(|()| Shared::new(config));
            let shared = match loaded {
                Ok(shared) => shared,
                Err(e) => {
                    log::error!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            clean_stale_tmp(&shared.config);
            if options.inetd {
                let mut stdio = transport::Stdio::new();
                // Held to the end of the session.
                let Some(_slots) = inetd_slots(&shared.config, &mut stdio) else {
                    return ExitCode::SUCCESS;
                };
                // The slot files are removed when the session ends.
                let slot_dir: Vec<PathBuf> = slots::runtime_directory().into_iter().collect();
                sandbox::enter(&shared.config, &slot_dir);
                serve_inetd(&shared, stdio);
                return ExitCode::SUCCESS;
            }
            match start_listening(&shared) {
                Ok((listeners, local)) => {
                    activation::notify("READY=1\nSTATUS=accepting mail");
                    // After the notify: its socket may be abstract.
                    let socket_dir: Vec<PathBuf> = (shared.config.local_socket.iter())
                        .filter_map(|p| p.parent().map(Path::to_path_buf))
                        .collect();
                    sandbox::enter(&shared.config, &socket_dir);
                    server::run(shared, listeners, local);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("smtpbox: {}", e.message);
                    ExitCode::from(e.exit)
                }
            }
        }
    }
}

/// Takes the sockets systemd passed, or binds the configured ones, and the
/// local submission socket (passed as `local`, else made at
/// `local_socket`); then drops root when `user` is set.
fn start_listening(
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
struct StartError {
    exit: u8,
    message: String,
}

impl From<String> for StartError {
    fn from(message: String) -> StartError {
        StartError { exit: 1, message }
    }
}

/// `--check`: the configuration, the Maildirs, the certificate and key,
/// the users file and the `user` account, all without writing anything.
/// Returns what the first delivery would create.
fn check(config: &Config) -> Result<Vec<String>, String> {
    let notes = config::check(config).map_err(|e| e.to_string())?;
    if let Some(user) = &config.user {
        privilege::lookup(user).map_err(|e| user_error(config, user, &e))?;
    }
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
fn serve_inetd(shared: &Shared, stdio: transport::Stdio) {
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
fn inetd_slots(config: &Config, stdio: &mut transport::Stdio) -> Option<Option<slots::Slots>> {
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

/// Removes files a crash left in the Maildirs' tmp/ (older than 36 hours).
fn clean_stale_tmp(config: &Config) {
    let dirs = config
        .maildir
        .iter()
        .chain(config.mailboxes.iter().map(|(_, p)| p));
    for dir in dirs {
        match maildir::clean_tmp(dir, STALE_TMP) {
            Ok(0) => {}
            Ok(n) => log::info!("removed {} stale file(s) from {}/tmp", n, dir.display()),
            Err(e) => log::debug!("cannot clean {}/tmp: {}", dir.display(), e),
        }
    }
}
