//! smtpbox: a minimal SMTP server that stores mail in Maildir folders.
//!
//! The modules, by job: `config` (command line, config file, routing),
//! `command` (parsing command lines), `session` (the sans-IO SMTP state
//! machine), `data` (the DATA/BDAT byte automaton), `maildir` (durable
//! delivery), `conn` (one connection's I/O), `server` (listeners and
//! threads), `transport` (sockets and stdio), `activation` (systemd),
//! `privilege` (dropping root), `sandbox` (Landlock), `reply`, `date`.

pub mod activation;
pub mod auth;
pub mod command;
pub mod config;
pub mod conn;
pub mod data;
pub mod date;
pub mod logging;
pub mod maildir;
pub mod privilege;
pub mod reply;
pub mod sandbox;
pub mod sendmail;
pub mod server;
pub mod session;
pub mod tls;
pub mod transport;
