//! smtpbox: a minimal SMTP server that stores mail in Maildir folders.
//!
//! The modules in layers: each imports only from its own layer or below
//! (`../shared/tools/import_graph.py src` finds no cycle).
//!
//! ```text
//!  main.rs           wires the rest: parse, bind, drop root, sandbox, serve
//!  start modes       start (standalone, --inetd, --check: what main.rs runs),
//!                    server (listeners, threads, the local socket, limits),
//!                    sendmail (the sendmail command), submit (its client),
//!                    activation (systemd), slots (limits across --inetd),
//!                    sandbox (Landlock), privilege, logging,
//!                    notify (the notifier process and the program runs
//!                    after each stored message; one per process)
//!  connection        conn (the one driver: bytes, timeouts, TLS), tls,
//!                    transport (sockets, stdio, the Handshake seam)
//!  protocol          session/ (the sans-IO SMTP state machine: commands,
//!                    the message phase, AUTH, trace headers, peer)
//!                    auth (users file, SASL), watched (files re-read)
//!  settings          config/ (command line, file, values, --check)
//!  routing           routing (is a recipient local, where its mail goes)
//!  grammar           address (the mailbox grammar), command (command
//!                    lines), framer, reply
//!  delivery          delivery (the seam: Store, Draft, content rules),
//!                    data (the DATA automaton, content sinks)
//!  storage           maildir/ (spool, link, group commit, *at wrappers,
//!                    DeliveryError, size: Maildir++ accounting,
//!                    maintenance: stale tmp/, retention)
//!  ground            buffers, host (the system hostname), listen (Mode,
//!                    Listen), sys (Linux ABI numbers), date
//! ```

pub mod activation;
pub mod address;
pub mod auth;
pub mod buffers;
pub mod command;
pub mod config;
pub mod conn;
pub mod data;
pub mod date;
pub mod delivery;
pub mod framer;
pub mod host;
pub mod listen;
pub mod logging;
pub mod maildir;
pub mod notify;
pub mod privilege;
pub mod reply;
pub mod routing;
pub mod sandbox;
pub mod sendmail;
pub mod server;
pub mod session;
pub mod slots;
pub mod start;
pub mod submit;
pub mod sys;
pub mod tls;
pub mod transport;
pub mod watched;
