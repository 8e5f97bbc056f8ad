//! The smtpbox binary: parses the command line and starts the chosen mode.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use smtpbox::config::{self, Config, Invocation};
use smtpbox::session::{MaildirQuota, Peer, Session};
use smtpbox::{conn, maildir, server, transport};

/// Maildir convention: files in tmp/ this old are left over from a crash.
const STALE_TMP: Duration = Duration::from_secs(36 * 3600);

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invocation = match config::from_args(&args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("smtpbox: {e}");
            return ExitCode::from(1);
        }
    };
    match invocation {
        Invocation::Help(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Invocation::Version => {
            println!("smtpbox {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Invocation::Check(config) => match config::check(&config) {
            Ok(()) => {
                println!("smtpbox: configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("smtpbox: {e}");
                ExitCode::from(1)
            }
        },
        Invocation::Run(config, options) => {
            let config = Arc::new(config);
            clean_stale_tmp(&config);
            if options.inetd {
                serve_inetd(config);
                return ExitCode::SUCCESS;
            }
            match server::bind(&config) {
                Ok(listeners) => {
                    server::run(config, listeners);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("smtpbox: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// One session on stdin/stdout (inetd, systemd Accept=yes).
fn serve_inetd(config: Arc<Config>) {
    let stdio = transport::Stdio::new();
    let (remote, local) = stdio.addresses();
    let peer = Peer { remote, local };
    let mode = config.listen.first().map_or(config::Mode::Smtp, |l| l.mode);
    let session = Session::new(
        Arc::clone(&config),
        Arc::new(MaildirQuota),
        peer,
        mode,
        false,
    );
    conn::serve(Box::new(stdio), session, server::limits(&config));
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
