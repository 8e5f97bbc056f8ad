//! smtpbox: a minimal SMTP server that stores mail in Maildir folders.
//!
//! The modules, by job: `config` (command line, config file), `routing`
//! (which recipients are local, and their delivery targets), `framer`
//! (bytes into command lines), `command` (parsing command lines), `session`
//! (the sans-IO SMTP state machine), `data` (the DATA/BDAT byte automaton),
//! `delivery` (the one way a message is stored: targets, content rules,
//! stored or refused), `maildir` (durable Maildir storage behind it),
//! `buffers` (content buffers reused per thread), `conn` (one connection's
//! I/O), `server`
//! (listeners, the local socket and threads), `transport` (sockets and
//! stdio), `tls` (rustls and the certificate pair), `auth` (the users file
//! and SASL), `watched` (files re-read when they change), `sendmail` (the
//! sendmail command) and `submit` (its client for the local socket),
//! `activation` (systemd), `slots` (limits across --inetd processes),
//! `privilege` (dropping root), `sandbox` (Landlock), `sys` (Linux ABI
//! numbers per architecture), `logging`, `reply`, `date`.

pub mod activation;
pub mod auth;
pub mod buffers;
pub mod command;
pub mod config;
pub mod conn;
pub mod data;
pub mod date;
pub mod delivery;
pub mod framer;
pub mod logging;
pub mod maildir;
pub mod privilege;
pub mod reply;
pub mod routing;
pub mod sandbox;
pub mod sendmail;
pub mod server;
pub mod session;
pub mod slots;
pub mod submit;
pub mod sys;
pub mod tls;
pub mod transport;
pub mod watched;
