//! The smtpbox binary: parses the command line and starts the chosen mode.
//! It only wires: the start modes are `start.rs`'s, in the library, where
//! they are tested.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use smtpbox::config::{self, Invocation};
use smtpbox::server::Shared;
use smtpbox::start::{self, EX_CONFIG};
use smtpbox::{activation, logging, maildir, notify, sandbox, sendmail, server, slots, transport};

fn main() -> ExitCode {
    // OS strings: a path argument need not be UTF-8 (SPEC §2).
    let argv: Vec<OsString> = std::env::args_os().collect();
    if let Some(args) = sendmail::sendmail_args(&argv) {
        // warn, not info: cron mails back whatever reaches stderr.
        logging::init("warn", true);
        return sendmail::main(&args, |config| {
            start::serve_inetd(&Shared::new(config)?, transport::Stdio::new());
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
        Invocation::Check(config) => match start::check(&config) {
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
        Invocation::Notifier(config) => {
            if let Err(e) = start::serve_notifier(&config) {
                log::error!("{e}");
            }
            ExitCode::from(EX_CONFIG)
        }
        Invocation::Run(config, options) => {
            // The files are looked at (type, size, readable) before they are
            // parsed; either failing is a config error, logged with the file
            // and the errno.
            if let Err(e) = config::check_files(&config) {
                log::error!("{e}");
                return ExitCode::from(EX_CONFIG);
            }
            // Forked while this is the only thread, outside the sandbox,
            // before the key and the users file are read.
            if let Some(notifier) = start::notifier(&config) {
                notify::install(notifier);
            }
            let shared = match Shared::new(config) {
                Ok(shared) => shared,
                Err(e) => {
                    log::error!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            maildir::maintenance::at_start_up(
                shared.config.budgets.iter().map(|(p, b)| (p.as_path(), *b)),
            );
            if options.inetd {
                let mut stdio = transport::Stdio::new();
                // Held to the end of the session.
                let Some(_slots) = start::inetd_slots(&shared.config, &mut stdio) else {
                    return ExitCode::SUCCESS;
                };
                // The slot files are removed when the session ends.
                let slot_dir: Vec<PathBuf> = slots::runtime_directory().into_iter().collect();
                sandbox::enter(&shared.config, &slot_dir);
                start::serve_inetd(&shared, stdio);
                // The client has its answer; the programs run to their end.
                if let Some(notifier) = notify::installed() {
                    notifier.finish();
                }
                return ExitCode::SUCCESS;
            }
            match start::start_listening(&shared) {
                Ok((listeners, local)) => {
                    activation::notify("READY=1\nSTATUS=accepting mail");
                    // After the notify: its socket may be abstract.
                    let socket_dir: Vec<PathBuf> = (shared.config.local_socket.iter())
                        .filter_map(|p| p.parent().map(Path::to_path_buf))
                        .collect();
                    sandbox::enter(&shared.config, &socket_dir);
                    // Confined as the sessions are: started after the sandbox.
                    maildir::maintenance::keep_in_time(shared.config.budgets.clone());
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
