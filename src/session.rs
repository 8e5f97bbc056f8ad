//! The SMTP session as a sans-IO state machine (RFC 5321 §4.1, §4.3).
//!
//! The session owns every protocol rule: replies, the order of commands,
//! the synchronization rule (RFC 2920, `554 5.5.0`), the error budget, the
//! LF-only-session exception of SPEC §6, and where a message's content
//! stands. It takes the framer's lines and the driver's reports and
//! answers each with a [`Step`]: replies to send and one [`Action`] for the
//! driver (read a command, begin a message, read or discard content, start
//! TLS, close). The driver (`conn.rs`, the fuzz target) does only I/O. The
//! session does none of its own except through its [`Services`]: asking a
//! [`QuotaProbe`] whether a target is full and an [`Authenticator`]
//! whether a password is right, so the same core serves every listener,
//! and its tests are plain byte slices.
//!
//! A message is stored through [`crate::delivery`]: the driver opens a
//! [`crate::delivery::Message`] for the session's [`Session::targets`],
//! [`Session::content_rules`] and [`Session::trace_headers`], and hands
//! what [`crate::delivery::Message::finish`] says to
//! [`Session::message_done`]; the session turns a refusal or a failure
//! into its reply (SPEC §6, §7).
//!
//! Entry points: [`Session::open`] (the greeting), [`Session::framed`] (a
//! command line), [`Session::tls_started`], and for a message
//! [`Session::message_opened`], [`Session::chunk_done`] and
//! [`Session::message_done`].
//!
//! The states are fields rather than one enum: `greeting` (None until HELO
//! or EHLO), `tx` (the transaction, from MAIL on, with its recipients and
//! `chunking`), `content` (where a message stands, below), `auth_exchange`
//! (an AUTH challenge waiting for its answer).
//!
//! ```text
//!  open ─► greeting None ──HELO/EHLO──► greeting Some ──MAIL──► tx ──RCPT──► tx + recipients
//!              ▲                            ▲                                   │
//!              │ tls_started                └─ RSET, HELO/EHLO, message_done ◄──┤ DATA, BDAT
//!              │ (RFC 3207: forget all)                                         ▼
//!
//!  content:  Idle ──DATA/BDAT: BeginMessage──► Opening ──message_opened(Err)──► Idle
//!                                                 │ Ok
//!                        DATA: 354, ReadData ◄────┴────► BDAT: ReadChunk
//!                               │                              │
//!                          Data ─message_done─► Idle      Chunk ─chunk_done─► Chunks ─BDAT─► Chunk
//!                                                          │ last                 │ RSET, HELO:
//!                                                          └─message_done─► Idle  └ AbortMessage ► Idle
//! ```
//!
//! The transaction (sender, recipients) is a separate value, so RSET and the
//! end of a message are simply "drop the transaction".

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::auth;
use crate::command::{self, Address, Body, Command, MailParams, ReversePath};
use crate::config::{Config, Mode, Policy};
use crate::delivery::{
    self, ContentRules, DeliveryError, NotStored, Refusal, Stored, Target, MAX_RECEIVED,
};
use crate::framer::{Frame, Line};
use crate::reply::Reply;
use crate::routing::{self, Route};

/// Asks whether a target already holds `quota` bytes (SPEC §7). A trait so
/// that the session needs no file system in its tests.
pub trait QuotaProbe: Send + Sync {
    fn is_full(&self, target: &Target, quota: u64) -> bool;
}

/// The real probe: [`delivery::is_full`] (a Maildir's message sizes).
pub struct MaildirQuota;

impl QuotaProbe for MaildirQuota {
    fn is_full(&self, target: &Target, quota: u64) -> bool {
        delivery::is_full(target, quota)
    }
}

/// Checks AUTH credentials against the users file (SPEC §3 `users`).
pub trait Authenticator: Send + Sync {
    /// Whether `password` is `user`'s; an error (naming the file and the
    /// reason, for the log) when the users cannot be read now.
    fn verify(&self, user: &str, password: &[u8]) -> Result<bool, String>;
}

/// What a session may ask of the world outside it.
#[derive(Clone)]
pub struct Services {
    pub quota: Arc<dyn QuotaProbe>,
    /// The users file; None when AUTH is not configured.
    pub users: Option<Arc<dyn Authenticator>>,
    /// A certificate is configured: STARTTLS is offered.
    pub tls: bool,
}

impl Authenticator for auth::UsersFile {
    fn verify(&self, user: &str, password: &[u8]) -> Result<bool, String> {
        Ok(self.current()?.verify(user, password))
    }
}

/// Who is on the other end, and on which address they reached us.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address; None when unknown (inetd over a pipe) and on
    /// the local socket.
    pub remote: Option<SocketAddr>,
    /// Our address on this connection, for address literals (`root@[IP]`).
    pub local: Option<SocketAddr>,
    /// The caller on the local submission socket; None on the network.
    pub caller: Option<LocalCaller>,
}

/// A caller on the local submission socket (SPEC §5): the uid the kernel
/// reported (SO_PEERCRED), never one the client claims, and its login name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalCaller {
    pub uid: u32,
    /// From /etc/passwd; the uid in decimal when it has no entry there.
    pub user: String,
}

impl Peer {
    /// A network client. An IPv4 client reached through an IPv6 socket
    /// (`::ffff:a.b.c.d`) is kept as the IPv4 address, so that logs, the
    /// Received header and address literals see one form (SPEC §6).
    pub fn network(remote: Option<SocketAddr>, local: Option<SocketAddr>) -> Peer {
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        Peer {
            remote: remote.map(canonical),
            local: local.map(canonical),
            caller: None,
        }
    }

    /// A caller on the local submission socket.
    pub fn local_caller(caller: LocalCaller) -> Peer {
        Peer {
            remote: None,
            local: None,
            caller: Some(caller),
        }
    }

    /// Loopback clients, local pipes and local-socket callers are trusted
    /// for pipelining rules and may AUTH without TLS.
    pub fn is_loopback(&self) -> bool {
        self.caller.is_some()
            || self
                .remote
                .is_none_or(|a| a.ip().is_loopback() || is_mapped_loopback(a.ip()))
    }

    /// `[IP]:PORT` for logs (`local uid=N user=NAME` on the local socket),
    /// `unknown` when there is no address.
    pub fn describe(&self) -> String {
        match (&self.caller, self.remote) {
            (Some(c), _) => format!("local uid={} user={}", c.uid, c.user),
            (None, Some(a)) => format!("[{}]:{}", a.ip(), a.port()),
            (None, None) => "unknown".to_string(),
        }
    }

    /// The comment after HELO in the Received header: `[IP]`, or
    /// `uid UID user NAME` on the local socket (SPEC §6).
    pub fn trace_comment(&self) -> String {
        match (&self.caller, self.remote) {
            (Some(c), _) => format!("uid {} user {}", c.uid, c.user),
            (None, Some(a)) => format!("[{}]", a.ip()),
            (None, None) => "[unknown]".to_string(),
        }
    }
}

fn is_mapped_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        IpAddr::V4(_) => false,
    }
}

/// What the driver must do after it has sent the step's replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the next command line.
    Continue,
    /// Flush the replies and close the connection; the reason is for the
    /// disconnect log line.
    Close(&'static str),
    /// Flush, discard any input already buffered (CVE-2011-0411), drop any
    /// message being received, handshake, then report
    /// [`Session::tls_started`] and read the next command.
    StartTls,
    /// Open a [`crate::delivery::Message`] for [`Session::targets`] under
    /// [`Session::content_rules`], with [`Session::trace_headers`] and the
    /// listener's quota, and report the result to
    /// [`Session::message_opened`]. (What the message needs is asked, not
    /// carried here: a small Action keeps every Step, and so the command
    /// path's stack, small.)
    BeginMessage { body: MessageBody },
    /// Read DATA content up to CRLF.CRLF into the open message, then report
    /// the outcome to [`Session::message_done`]. `lf_session`: the client
    /// has never ended a line with CRLF, so LF . LF ends the content too
    /// (SPEC §6).
    ReadData { lf_session: bool },
    /// Read a BDAT chunk of `size` bytes into the open message, then report
    /// [`Session::chunk_done`], or for the `last` one the outcome to
    /// [`Session::message_done`].
    ReadChunk { size: u64, last: bool },
    /// Read a BDAT chunk of `size` bytes and throw it away (its command
    /// failed), then read the next command.
    DiscardChunk { size: u64 },
    /// The transaction is gone (RSET, HELO): drop the open message, then
    /// read the next command.
    AbortMessage,
}

/// How a message's content arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// DATA: a 354 once the message is open, then content to CRLF.CRLF.
    Data { lf_session: bool },
    /// BDAT: the first chunk.
    Chunk { size: u64, last: bool },
}

/// The replies for one input, and what to do next.
#[derive(Debug)]
pub struct Step {
    pub replies: Vec<Reply>,
    pub action: Action,
}

impl Step {
    fn reply(reply: Reply) -> Step {
        Step {
            replies: vec![reply],
            action: Action::Continue,
        }
    }

    fn close(reply: Reply, reason: &'static str) -> Step {
        Step {
            replies: vec![reply],
            action: Action::Close(reason),
        }
    }

    fn act(action: Action) -> Step {
        Step {
            replies: Vec::new(),
            action,
        }
    }
}

/// Where the message under way stands, as the driver was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Content {
    /// No message: commands are read.
    Idle,
    /// `BeginMessage` returned; waiting for `message_opened`.
    Opening(MessageBody),
    /// `ReadData` returned; waiting for `message_done`.
    Data,
    /// A BDAT message is open between chunks.
    Chunks,
    /// `ReadChunk` returned; waiting for `chunk_done` or `message_done`.
    Chunk { size: u64, last: bool },
}

/// A recipient accepted by RCPT.
#[derive(Clone, Debug)]
struct Recipient {
    address: String,
    target: Target,
}

/// `<a>,<b>` for the delivery log line, written straight into the log
/// record (no String per recipient, none per message when not logging).
struct RecipientList<'a>(&'a [Recipient]);

impl std::fmt::Display for RecipientList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}<{}>", r.address)?;
        }
        Ok(())
    }
}

/// One mail transaction: MAIL, RCPTs, content.
#[derive(Debug)]
struct Transaction {
    sender: String,
    params: MailParams,
    recipients: Vec<Recipient>,
    /// A BDAT chunk has been accepted: DATA is no longer allowed (RFC 3030 §3).
    chunking: bool,
}

#[derive(Clone, Debug)]
struct Greeting {
    name: String,
    extended: bool,
}

/// An AUTH exchange waiting for the client's next line (RFC 4954 §4).
#[derive(Debug)]
enum AuthExchange {
    /// PLAIN without an initial response: `334 ` sent.
    Plain,
    /// LOGIN: the user name prompt sent.
    LoginUser,
    /// LOGIN: the password prompt sent.
    LoginPassword { user: String },
}

/// Failed AUTH attempts before the session is closed (SPEC §5).
const MAX_AUTH_FAILURES: u32 = 3;

/// One SMTP session.
pub struct Session {
    config: Arc<Config>,
    services: Services,
    peer: Peer,
    /// The listener's policy: its mode and the limits (SPEC §3).
    policy: Policy,
    tls: Option<String>,
    auth_user: Option<String>,
    auth_exchange: Option<AuthExchange>,
    auth_failures: u32,
    greeting: Option<Greeting>,
    tx: Option<Transaction>,
    errors: u32,
    /// The client has ended a line with CRLF at least once; until then a
    /// bare LF . LF may end DATA (SPEC §6, people typing into nc).
    sent_crlf: bool,
    content: Content,
}

impl Session {
    /// A session for a connection that arrived on a listener with `policy`.
    pub fn new(config: Arc<Config>, services: Services, peer: Peer, policy: &Policy) -> Session {
        Session {
            config,
            services,
            peer,
            policy: *policy,
            tls: None,
            auth_user: None,
            auth_exchange: None,
            auth_failures: 0,
            greeting: None,
            tx: None,
            errors: 0,
            sent_crlf: false,
            content: Content::Idle,
        }
    }

    /// The start of the session: the 220 greeting, or, when a remote
    /// client talked first (`input_pending` says so), 554 5.5.0 and close
    /// (RFC 5321 §4.3.1: a client must wait for the greeting). The probe
    /// is called only for clients the rule applies to.
    pub fn open(&mut self, input_pending: impl FnOnce() -> bool) -> Step {
        if !self.peer.is_loopback() && input_pending() {
            return self.unsynchronized(
                "talked before the greeting",
                "talked before greeting (554 5.5.0)",
            );
        }
        Step::reply(self.greeting())
    }

    /// The 220 banner (the only reply without an enhanced status code).
    pub fn greeting(&self) -> Reply {
        Reply::greeting(&self.config.hostname)
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The policy of the listener this session came from.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// An implicit-TLS listener: handshake before [`Session::open`].
    pub fn implicit_tls(&self) -> bool {
        self.policy.mode == Mode::Tls
    }

    /// Handles one command line (without its line ending), as if it ended
    /// in CRLF and nothing followed it.
    pub fn command(&mut self, line: &[u8]) -> Step {
        self.framed(Frame::Line(Line::new(line, true)), false)
    }

    /// Handles what the [`crate::framer`] made of the client's next bytes:
    /// a command line (or the answer to an AUTH challenge), or a line that
    /// was too long. `buffered_after`: the client's bytes after this frame
    /// have already arrived, which a remote client may not do after DATA
    /// (RFC 2920 §3.1: DATA is the last command of a group).
    #[inline(never)] // Its frame stays out of the driver's loop.
    pub fn framed(&mut self, frame: Frame<'_>, buffered_after: bool) -> Step {
        let line = match frame {
            Frame::TooLong => return self.line_too_long(),
            Frame::Line(line) => line,
        };
        self.sent_crlf |= line.crlf;
        let mut step = match self.auth_exchange.take() {
            Some(exchange) => self.auth_response(exchange, line.text),
            None if line.nul => Step::reply(Reply::nul_byte()),
            None => match parse(line.text) {
                Ok(command) => self.dispatch(command),
                Err(reply) => Step::reply(reply),
            },
        };
        if let Action::BeginMessage {
            body: MessageBody::Data { .. },
        } = step.action
        {
            if buffered_after && !self.peer.is_loopback() {
                self.content = Content::Idle;
                return self
                    .unsynchronized("sent content before 354", "content before 354 (554 5.5.0)");
            }
        }
        if !matches!(step.action, Action::Close(_)) && step.replies.iter().any(|r| r.code >= 500) {
            step = self.count_error(step);
        }
        // RSET, HELO or EHLO ended a BDAT message the driver holds open.
        if self.content == Content::Chunks && !self.tx.as_ref().is_some_and(|tx| tx.chunking) {
            self.content = Content::Idle;
            if step.action == Action::Continue {
                step.action = Action::AbortMessage;
            }
        }
        step
    }

    /// A command line over the 2048-byte limit was skipped.
    fn line_too_long(&mut self) -> Step {
        self.auth_exchange = None;
        self.error(Reply::line_too_long())
    }

    /// Called after a successful TLS handshake: RFC 3207 §4.2, the session
    /// forgets everything it learnt from the client before, an open
    /// message included.
    pub fn tls_started(&mut self, description: String) {
        self.tls = Some(description);
        self.greeting = None;
        self.tx = None;
        self.auth_user = None;
        self.auth_exchange = None;
        self.content = Content::Idle;
    }

    /// The driver opened the message of a `BeginMessage` (or could not):
    /// for DATA the 354 and `ReadData`, for BDAT `ReadChunk`; on failure
    /// the reply, the transaction dropped, and a BDAT chunk to discard.
    pub fn message_opened(&mut self, result: Result<(), DeliveryError>) -> Step {
        let Content::Opening(body) = self.content else {
            return Step::act(Action::Continue);
        };
        match (result, body) {
            (Ok(()), MessageBody::Data { lf_session }) => {
                self.content = Content::Data;
                Step {
                    replies: vec![Reply::data_go_ahead()],
                    action: Action::ReadData { lf_session },
                }
            }
            (Ok(()), MessageBody::Chunk { size, last }) => {
                self.content = Content::Chunk { size, last };
                Step::act(Action::ReadChunk { size, last })
            }
            (Err(error), body) => {
                self.content = Content::Idle;
                let reply = self.spool_failed(&error);
                Step {
                    replies: vec![reply],
                    action: match body {
                        MessageBody::Data { .. } => Action::Continue,
                        MessageBody::Chunk { size, .. } => Action::DiscardChunk { size },
                    },
                }
            }
        }
    }

    /// A BDAT chunk that was not the last has been read into the message.
    pub fn chunk_done(&mut self) -> Step {
        match self.content {
            Content::Chunk { size, last: false } => {
                self.content = Content::Chunks;
                Step::reply(Reply::chunk_received(size))
            }
            _ => Step::act(Action::Continue),
        }
    }

    /// The message is over (DATA content or the last BDAT chunk read, its
    /// rules checked, its delivery tried: what
    /// [`crate::delivery::Message::finish`] said): the final reply, and the
    /// transaction is over.
    pub fn message_done(&mut self, outcome: Result<Stored, NotStored>) -> Step {
        self.content = Content::Idle;
        let reply = match outcome {
            Ok(Stored { id, size }) => self.delivered(size, Ok(id)),
            Err(NotStored::Failed(error)) => self.delivered(0, Err(error)),
            Err(NotStored::Refused(refusal)) => {
                self.tx = None;
                match refusal {
                    Refusal::TooBig => Reply::message_too_big(),
                    Refusal::BareLineEnding => Reply::bare_line_ending(),
                    Refusal::MailLoop => Reply::mail_loop(),
                }
            }
        };
        Step::reply(reply)
    }

    /// The session is closed for a timeout.
    pub fn timed_out(&mut self) -> Step {
        Step::close(Reply::timeout(), "timeout (421 4.4.2)")
    }

    /// The targets the current message goes to, each once.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        let recipients = self.tx.as_ref().map_or(&[][..], |tx| &tx.recipients);
        recipients
            .iter()
            .enumerate()
            .filter(|(i, r)| !recipients[..*i].iter().any(|o| o.target == r.target))
            .map(|(_, r)| &r.target)
    }

    /// The `Return-Path:` and `Received:` headers that start the stored
    /// message (SPEC §6, RFC 5321 §4.4, RFC 3848 protocol names).
    pub fn trace_headers(&self, id: &str, date: &str) -> String {
        let Some(tx) = &self.tx else {
            return String::new();
        };
        let helo = self
            .greeting
            .as_ref()
            .map_or("unknown", |g| g.name.as_str());
        let ip = self.peer.trace_comment();
        let tls = match &self.tls {
            Some(t) => format!(" ({t})"),
            None => String::new(),
        };
        let rcpt = match tx.recipients.as_slice() {
            [one] => format!(" for <{}>", one.address),
            _ => String::new(),
        };
        let received = format!(
            "Received: from {} ({}) by {} (smtpbox) with {}{} id {}{}; {}",
            cut(sanitize(helo), MAX_TRACE_HELO),
            ip,
            self.config.hostname,
            self.protocol(),
            tls,
            id,
            rcpt,
            date
        );
        format!("Return-Path: <{}>\r\n{}\r\n", tx.sender, fold(&received))
    }

    /// The content rules of a message of this session (SPEC §6).
    pub fn content_rules(&self) -> ContentRules {
        ContentRules {
            max_size: self.policy.limits.max_message_size,
            bare_lf: self.config.bare_lf,
            max_received: MAX_RECEIVED,
        }
    }

    /// A remote client broke the synchronization rule: 554 5.5.0, close.
    #[cold]
    #[inline(never)] // Off the stack of every command's path.
    fn unsynchronized(&self, what: &str, reason: &'static str) -> Step {
        log::warn!("{} {} (554 5.5.0)", self.peer.describe(), what);
        Step::close(Reply::unsynchronized(), reason)
    }

    /// The delivery attempt is over: the final reply to DATA or BDAT LAST.
    fn delivered(&mut self, size: u64, result: Result<String, DeliveryError>) -> Reply {
        let tx = self.tx.take();
        match result {
            Ok(id) => {
                if let Some(tx) = &tx {
                    log::info!(
                        "{} from=<{}> to={} size={} proto={} client={}{}{}",
                        id,
                        tx.sender,
                        RecipientList(&tx.recipients),
                        size,
                        self.protocol(),
                        self.peer.describe(),
                        self.tls
                            .as_ref()
                            .map(|t| format!(" tls={}", t.replace(' ', "/")))
                            .unwrap_or_default(),
                        self.auth_user
                            .as_ref()
                            .map(|u| format!(" user={u}"))
                            .unwrap_or_default()
                    );
                }
                Reply::queued(&id)
            }
            Err(e) => {
                let reply = failure_reply(&e);
                log::warn!(
                    "delivery failed: {} ({}) client={}",
                    e,
                    reply.code,
                    self.peer.describe()
                );
                reply
            }
        }
    }

    /// A reply to a failed spool creation: the transaction is dropped.
    fn spool_failed(&mut self, error: &DeliveryError) -> Reply {
        log::warn!(
            "cannot spool message: {} client={}",
            error,
            self.peer.describe()
        );
        self.tx = None;
        failure_reply(error)
    }

    /// RFC 3848 protocol name for the Received header and the log.
    fn protocol(&self) -> &'static str {
        let extended = self.greeting.as_ref().is_some_and(|g| g.extended);
        match (extended, self.tls.is_some(), self.auth_user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }

    fn dispatch(&mut self, command: Command) -> Step {
        match command {
            Command::Helo(name) => self.helo(name, false),
            Command::Ehlo(name) => self.helo(name, true),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params: _ } => self.rcpt(to),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.tx = None;
                Step::reply(Reply::ok())
            }
            Command::Noop => Step::reply(Reply::ok()),
            Command::Quit => Step::close(Reply::bye(), "closed by server"),
            Command::Help => Step::reply(Reply::help()),
            // RFC 5321 §3.5.3: 252 neither confirms nor denies.
            Command::Vrfy => Step::reply(Reply::vrfy()),
            Command::Expn => Step::reply(Reply::expn()),
            Command::NotImplemented(verb) => Step::reply(Reply::not_implemented(verb)),
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial.as_deref()),
            Command::Forbidden => Step::close(Reply::forbidden(), "closed by server"),
        }
    }

    fn helo(&mut self, name: String, extended: bool) -> Step {
        // RFC 5321 §4.1.4: HELO/EHLO resets any transaction.
        self.tx = None;
        let hostname = self.config.hostname.clone();
        self.greeting = Some(Greeting { name, extended });
        if !extended {
            return Step::reply(Reply::helo(hostname));
        }
        let starttls = self.services.tls && self.tls.is_none();
        let (size, auth) = (self.policy.limits.max_message_size, self.auth_allowed());
        Step::reply(Reply::ehlo(hostname, size, starttls, auth))
    }

    fn auth_allowed(&self) -> bool {
        self.services.users.is_some() && (self.tls.is_some() || self.peer.is_loopback())
    }

    #[inline(never)] // Off the stack of EHLO's path (see `framed`).
    fn mail(&mut self, from: ReversePath, params: MailParams) -> Step {
        if self.greeting.is_none() {
            return Step::reply(Reply::hello_first());
        }
        if self.tx.is_some() {
            return Step::reply(Reply::nested_mail());
        }
        // SPEC §2: on submission, STARTTLS and AUTH before MAIL, from
        // loopback clients too.
        if self.policy.mode == Mode::Submission {
            if self.tls.is_none() {
                return Step::reply(Reply::starttls_first());
            }
            if self.auth_user.is_none() {
                return Step::reply(Reply::auth_required());
            }
        }
        if params
            .size
            .is_some_and(|s| s > self.policy.limits.max_message_size)
        {
            return Step::reply(Reply::size_over_limit());
        }
        let sender = match &from {
            ReversePath::Null => String::new(),
            ReversePath::Address(a) => {
                // RFC 6531 §3.4: non-ASCII addresses need SMTPUTF8.
                if !params.smtputf8 && !a.is_ascii() {
                    return Step::reply(Reply::needs_smtputf8());
                }
                a.to_wire()
            }
        };
        self.tx = Some(Transaction {
            sender,
            params,
            recipients: Vec::new(),
            chunking: false,
        });
        Step::reply(Reply::sender_ok())
    }

    #[inline(never)] // Off the stack of EHLO's path (see `framed`).
    fn rcpt(&mut self, to: Address) -> Step {
        let Some(tx) = &mut self.tx else {
            return Step::reply(Reply::mail_first());
        };
        if !tx.params.smtputf8 && !to.is_ascii() {
            return Step::reply(Reply::needs_smtputf8());
        }
        if tx.recipients.len() >= self.policy.limits.max_recipients {
            return Step::reply(Reply::too_many_recipients());
        }
        let address = to.to_wire();
        let reply = match routing::route(&self.config, &to, self.peer.local.map(|a| a.ip())) {
            Route::NotLocal => Reply::relay_denied(&address),
            Route::NoMailbox => Reply::no_such_user(&address),
            Route::Mailbox(target) => {
                if self
                    .services
                    .quota
                    .is_full(&target, self.policy.limits.maildir_quota)
                {
                    Reply::recipient_mailbox_full(&address)
                } else {
                    tx.recipients.push(Recipient { address, target });
                    return Step::reply(Reply::recipient_ok());
                }
            }
        };
        Step::reply(reply)
    }

    #[inline(never)] // Off the stack of EHLO's path (see `framed`).
    fn data(&mut self) -> Step {
        match self.tx_ready() {
            Err(reply) => Step::reply(reply),
            Ok(tx) if tx.chunking || tx.params.body == Body::BinaryMime => {
                // RFC 3030 §3: BINARYMIME needs BDAT, and BDAT and DATA don't mix.
                Step::reply(Reply::use_bdat())
            }
            Ok(_) => {
                let body = MessageBody::Data {
                    lf_session: !self.sent_crlf,
                };
                self.content = Content::Opening(body);
                Step::act(Action::BeginMessage { body })
            }
        }
    }

    #[inline(never)] // Off the stack of EHLO's path (see `framed`).
    fn bdat(&mut self, size: u64, last: bool) -> Step {
        match self.tx_ready() {
            Err(reply) => Step {
                replies: vec![reply],
                action: Action::DiscardChunk { size },
            },
            Ok(tx) => {
                tx.chunking = true;
                // RFC 3030 §2: the first chunk opens the message, the
                // others go into it.
                if self.content == Content::Chunks {
                    self.content = Content::Chunk { size, last };
                    return Step::act(Action::ReadChunk { size, last });
                }
                let body = MessageBody::Chunk { size, last };
                self.content = Content::Opening(body);
                Step::act(Action::BeginMessage { body })
            }
        }
    }

    /// The guard shared by DATA and BDAT: a transaction with a recipient.
    fn tx_ready(&mut self) -> Result<&mut Transaction, Reply> {
        match &mut self.tx {
            None if self.greeting.is_none() => Err(Reply::hello_first()),
            None => Err(Reply::mail_first()),
            Some(tx) if tx.recipients.is_empty() => Err(Reply::no_valid_recipients()),
            Some(tx) => Ok(tx),
        }
    }

    #[inline(never)] // Off the stack of EHLO's path (see `framed`).
    fn starttls(&mut self) -> Step {
        if !self.services.tls {
            return Step::reply(Reply::starttls_unavailable());
        }
        if self.tls.is_some() {
            return Step::reply(Reply::tls_active());
        }
        Step {
            replies: vec![Reply::ready_for_tls()],
            action: Action::StartTls,
        }
    }

    /// AUTH (RFC 4954): PLAIN (RFC 4616) and LOGIN.
    #[inline(never)] // Off the stack of EHLO's path (see `framed`).
    fn auth(&mut self, mechanism: &str, initial: Option<&str>) -> Step {
        if self.services.users.is_none() {
            return Step::reply(Reply::auth_not_enabled());
        }
        if !self.auth_allowed() {
            return Step::reply(Reply::auth_needs_tls());
        }
        if self.greeting.is_none() {
            return Step::reply(Reply::ehlo_first());
        }
        if self.auth_user.is_some() {
            return Step::reply(Reply::already_authenticated());
        }
        if self.tx.is_some() {
            return Step::reply(Reply::auth_in_transaction());
        }
        match (mechanism, initial) {
            // RFC 4954 §4: "=" is an empty initial response.
            ("PLAIN", Some(response)) => {
                let response = if response == "=" { "" } else { response };
                self.auth_plain(response.as_bytes())
            }
            ("PLAIN", None) => self.challenge(AuthExchange::Plain, ""),
            ("LOGIN", None) => self.challenge(AuthExchange::LoginUser, auth::LOGIN_USER_PROMPT),
            ("LOGIN", Some(user)) => self.login_user(user.as_bytes()),
            _ => Step::reply(Reply::auth_mechanism_unknown()),
        }
    }

    fn challenge(&mut self, exchange: AuthExchange, prompt: &'static str) -> Step {
        self.auth_exchange = Some(exchange);
        Step::reply(Reply::auth_challenge(prompt))
    }

    /// The client's answer to a 334 challenge.
    #[inline(never)] // Off the stack of EHLO's path (see `framed`).
    fn auth_response(&mut self, exchange: AuthExchange, line: &[u8]) -> Step {
        match exchange {
            AuthExchange::Plain => self.auth_plain(line),
            AuthExchange::LoginUser => self.login_user(line),
            AuthExchange::LoginPassword { user } => match auth::decode_response(line) {
                Ok(password) => self.auth_check(&user, &password),
                Err(e) => self.auth_error(e),
            },
        }
    }

    fn auth_plain(&mut self, response: &[u8]) -> Step {
        match auth::decode_plain(response) {
            Ok(credentials) => self.auth_check(&credentials.user, &credentials.password),
            // Asking to act as someone else is a failed attempt, not a typo.
            Err(auth::AuthError::AuthzidMismatch) => self.auth_check("", b""),
            Err(e) => self.auth_error(e),
        }
    }

    /// LOGIN's user name arrived (initial response or answer to 334).
    fn login_user(&mut self, line: &[u8]) -> Step {
        match auth::decode_login_user(line) {
            Ok(user) => self.challenge(
                AuthExchange::LoginPassword { user },
                auth::LOGIN_PASS_PROMPT,
            ),
            Err(e) => self.auth_error(e),
        }
    }

    fn auth_check(&mut self, user: &str, password: &[u8]) -> Step {
        let verdict = match &self.services.users {
            Some(users) => users.verify(user, password),
            None => Ok(false),
        };
        let ok = match verdict {
            Ok(ok) => ok,
            // RFC 4954 §6: the server cannot check now; the client may try
            // again later, and this attempt is no failure of its own.
            Err(reason) => {
                log::error!(
                    "AUTH for {:?} unavailable (454 4.7.0) client={}: {reason}",
                    user,
                    self.peer.describe()
                );
                return Step::reply(Reply::auth_unavailable());
            }
        };
        if ok {
            log::info!("AUTH as {} client={}", user, self.peer.describe());
            self.auth_user = Some(user.to_string());
            return Step::reply(Reply::auth_ok());
        }
        self.auth_failures += 1;
        log::warn!(
            "AUTH failed for {:?} (535 5.7.8) client={}",
            user,
            self.peer.describe()
        );
        let reply = Reply::auth_invalid();
        if self.auth_failures >= MAX_AUTH_FAILURES {
            log::warn!(
                "too many AUTH failures (421) client={}",
                self.peer.describe()
            );
            return Step {
                replies: vec![reply, Reply::too_many_auth_failures()],
                action: Action::Close("closed by server"),
            };
        }
        Step::reply(reply)
    }

    fn auth_error(&mut self, error: auth::AuthError) -> Step {
        let reply = match error {
            auth::AuthError::Cancelled => Reply::auth_cancelled(),
            auth::AuthError::BadBase64 => Reply::auth_bad_base64(),
            auth::AuthError::Malformed | auth::AuthError::AuthzidMismatch => {
                Reply::auth_malformed()
            }
        };
        Step::reply(reply)
    }

    fn error(&mut self, reply: Reply) -> Step {
        self.count_error(Step::reply(reply))
    }

    /// The error budget (SPEC §5): after `max_errors` bad commands the
    /// session ends with 421 4.7.0, right after the reply to the last one.
    fn count_error(&mut self, mut step: Step) -> Step {
        self.errors += 1;
        if self.errors >= self.policy.limits.max_errors {
            step.replies.push(Reply::too_many_errors());
            step.action = Action::Close("closed by server");
        }
        step
    }
}

/// A HELO name goes into a header: keep it printable and on one line.
/// RFC 5322 2.1.1: a header line is at most 998 octets, CRLF excluded.
const MAX_HEADER_LINE: usize = 998;

/// Where a header that must be folded is folded (RFC 5322 2.1.1's SHOULD).
const FOLD_AT: usize = 78;

/// The HELO argument in the trace: as long as a domain may be (RFC 5321
/// 4.5.3.1.2). Longer is cut here; the HELO itself is answered as sent.
const MAX_TRACE_HELO: usize = 255;

/// The reply to a message that could not be stored now (SPEC §7): every
/// delivery failure is temporary.
fn failure_reply(error: &DeliveryError) -> Reply {
    match error {
        DeliveryError::Quota { .. } => Reply::mailbox_full(),
        DeliveryError::NoSpace { .. } => Reply::no_storage(),
        DeliveryError::Io { .. } => Reply::local_error(),
    }
}

/// [`command::parse`] in a call of its own: inlined, its locals would
/// stay in `Session::framed`'s frame under every command's handler, EHLO's
/// included (the stack budget at `conn::serve`).
#[inline(never)]
fn parse(line: &[u8]) -> Result<Command, Reply> {
    command::parse(line)
}

/// At most `max` octets of `text`, cut at a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// `header` (one unfolded line, no CRLF) as it is written: unchanged when
/// it fits in 998 octets, otherwise folded (RFC 5322 2.2.3) before words so
/// that lines stay near 78 octets; continuation lines start with the space
/// they were folded at, so unfolding gives back `header` exactly. Every
/// word of a Received header is bounded (HELO cut, hostname at most 253
/// octets, a path at most 256), so every line ends within the limit.
fn fold(header: &str) -> std::borrow::Cow<'_, str> {
    if header.len() <= MAX_HEADER_LINE {
        return header.into();
    }
    let mut out = String::with_capacity(header.len() + header.len() / FOLD_AT * 2);
    let mut line = 0;
    for (i, word) in header.split(' ').enumerate() {
        if i > 0 {
            // Never a line of white space alone: fold only before a word.
            if line > 0 && !word.is_empty() && line + 1 + word.len() > FOLD_AT {
                out.push_str("\r\n");
                line = 0;
            }
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out.into()
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::BareLf;
    use crate::delivery::ContentSummary;
    use std::path::{Path, PathBuf};

    struct NeverFull;
    impl QuotaProbe for NeverFull {
        fn is_full(&self, _: &Target, _: u64) -> bool {
            false
        }
    }

    struct AlwaysFull;
    impl QuotaProbe for AlwaysFull {
        fn is_full(&self, _: &Target, _: u64) -> bool {
            true
        }
    }

    /// A path under the temp dir for this test process that nothing
    /// creates: the session is sans-IO and never touches its Maildirs.
    fn unused_dir(name: &str) -> PathBuf {
        let pid = std::process::id();
        std::env::temp_dir().join(format!("smtpbox-session-{pid}-unused/{name}"))
    }

    /// Options only: no config file, not even the host's default one.
    fn config() -> Config {
        let maildir = unused_dir("Maildir").display().to_string();
        let args: Vec<String> = [
            "--maildir",
            &maildir,
            "-H",
            "mx.example",
            "-d",
            "example.com",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match crate::config::from_args_with_default(&args, Path::new("")) {
            Ok(crate::config::Invocation::Run(c, _)) => c,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn session_with(
        config: Config,
        remote: &str,
        quota: Arc<dyn QuotaProbe>,
        mode: Mode,
    ) -> Session {
        let peer = Peer::network(
            Some(remote.parse().unwrap()),
            Some("127.0.0.1:25".parse().unwrap()),
        );
        let services = Services {
            quota,
            users: None,
            tls: false,
        };
        let policy = Policy::new(&config, None, mode);
        Session::new(Arc::new(config), services, peer, &policy)
    }

    /// One user, alice, with password "secret".
    struct Alice;
    impl Authenticator for Alice {
        fn verify(&self, user: &str, password: &[u8]) -> Result<bool, String> {
            Ok(user == "alice" && password == b"secret")
        }
    }

    /// A users file that cannot be read.
    struct Unreadable;
    impl Authenticator for Unreadable {
        fn verify(&self, _: &str, _: &[u8]) -> Result<bool, String> {
            Err("/etc/smtpbox/users: cannot read: not a regular file".into())
        }
    }

    fn auth_session(remote: &str, mode: Mode, tls: bool) -> Session {
        let peer = Peer::network(
            Some(remote.parse().unwrap()),
            Some("192.0.2.25:25".parse().unwrap()),
        );
        let services = Services {
            quota: Arc::new(NeverFull),
            users: Some(Arc::new(Alice)),
            tls,
        };
        let config = config();
        let policy = Policy::new(&config, None, mode);
        Session::new(Arc::new(config), services, peer, &policy)
    }

    fn b64(s: &[u8]) -> String {
        auth::encode_base64(s)
    }

    #[test]
    fn auth_plain_with_and_without_initial_response() {
        let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
        let ehlo = s.command(b"EHLO c").replies[0].to_string();
        assert!(
            ehlo.contains("AUTH PLAIN LOGIN"),
            "loopback may AUTH without TLS: {ehlo}"
        );
        assert_eq!(
            one(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0wrong"))),
            "535 5.7.8"
        );
        assert_eq!(one(&mut s, "AUTH PLAIN"), "334 ");
        assert_eq!(one(&mut s, &b64(b"\0alice\0secret")), "235 2.7.0");
        assert_eq!(
            one(&mut s, "AUTH PLAIN"),
            "503 5.5.1",
            "already authenticated"
        );
        one(
            &mut s,
            "MAIL FROM:<alice@example.com> AUTH=alice@example.com",
        );
        one(&mut s, "RCPT TO:<root@example.com>");
        let trace = s.trace_headers("ID", "date");
        assert!(trace.contains(" with ESMTPA id ID "), "{trace}");
    }

    #[test]
    fn auth_login_exchange() {
        let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
        one(&mut s, "EHLO c");
        let step = s.command(b"AUTH LOGIN");
        assert_eq!(step.replies[0].to_string(), "334 VXNlcm5hbWU6");
        let step = s.command(b64(b"alice").as_bytes());
        assert_eq!(step.replies[0].to_string(), "334 UGFzc3dvcmQ6");
        assert_eq!(one(&mut s, &b64(b"secret")), "235 2.7.0");
        // LOGIN with the user name as initial response.
        let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
        one(&mut s, "EHLO c");
        let step = s.command(format!("AUTH LOGIN {}", b64(b"alice")).as_bytes());
        assert_eq!(step.replies[0].to_string(), "334 UGFzc3dvcmQ6");
        assert_eq!(one(&mut s, &b64(b"nope")), "535 5.7.8");
    }

    #[test]
    fn auth_cancel_bad_base64_and_unknown_mechanism() {
        let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
        one(&mut s, "EHLO c");
        one(&mut s, "AUTH PLAIN");
        assert_eq!(one(&mut s, "*"), "501 5.7.0");
        one(&mut s, "AUTH LOGIN");
        assert_eq!(one(&mut s, "*"), "501 5.7.0");
        assert_eq!(one(&mut s, "AUTH PLAIN !!!notbase64"), "501 5.5.2");
        assert_eq!(one(&mut s, "AUTH CRAM-MD5"), "504 5.5.4");
        assert_eq!(one(&mut s, "NOOP"), "250 2.0.0", "session goes on");
    }

    #[test]
    fn unreadable_users_file_is_454_and_no_failure() {
        let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
        s.services.users = Some(Arc::new(Unreadable));
        one(&mut s, "EHLO c");
        let good = format!("AUTH PLAIN {}", b64(b"\0alice\0secret"));
        for _ in 0..MAX_AUTH_FAILURES + 1 {
            let step = s.command(good.as_bytes());
            let codes: Vec<String> = step.replies.iter().map(|r| r.to_string()).collect();
            assert_eq!(codes, ["454 4.7.0 Temporary authentication failure"]);
            assert_eq!(step.action, Action::Continue);
        }
        // LOGIN reaches the same check after its two challenges.
        assert_eq!(one(&mut s, "AUTH LOGIN"), "334 ");
        assert_eq!(one(&mut s, &b64(b"alice")), "334 ");
        assert_eq!(one(&mut s, &b64(b"secret")), "454 4.7.0");
        // The file is back: the attempts before did not count.
        s.services.users = Some(Arc::new(Alice));
        let bad = format!("AUTH PLAIN {}", b64(b"\0alice\0bad"));
        assert_eq!(one(&mut s, &bad), "535 5.7.8");
        assert_eq!(one(&mut s, &bad), "535 5.7.8");
        assert_eq!(one(&mut s, &good), "235 2.7.0");
    }

    #[test]
    fn three_auth_failures_close_the_session() {
        let mut s = auth_session("127.0.0.1:4000", Mode::Smtp, false);
        one(&mut s, "EHLO c");
        let bad = format!("AUTH PLAIN {}", b64(b"\0alice\0bad"));
        assert_eq!(one(&mut s, &bad), "535 5.7.8");
        assert_eq!(one(&mut s, &bad), "535 5.7.8");
        let step = s.command(bad.as_bytes());
        let codes: Vec<String> = step
            .replies
            .iter()
            .map(|r| format!("{} {}", r.code, status_text(r)))
            .collect();
        assert_eq!(codes, ["535 5.7.8", "421 4.7.0"]);
        assert_eq!(step.action, Action::Close("closed by server"));
    }

    #[test]
    fn auth_needs_tls_on_remote_connections() {
        let mut s = auth_session("192.0.2.1:4000", Mode::Smtp, true);
        let ehlo = s.command(b"EHLO c").replies[0].to_string();
        assert!(
            ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
            "{ehlo}"
        );
        assert_eq!(one(&mut s, "AUTH PLAIN"), "538 5.7.11");
        s.tls_started("TLSv1.3 TLS_AES_128_GCM_SHA256".to_string());
        let ehlo = s.command(b"EHLO c").replies[0].to_string();
        assert!(
            !ehlo.contains("STARTTLS") && ehlo.contains("AUTH PLAIN LOGIN"),
            "{ehlo}"
        );
        assert_eq!(one(&mut s, "STARTTLS"), "503 5.5.1");
        assert_eq!(
            one(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0secret"))),
            "235 2.7.0"
        );
        one(&mut s, "MAIL FROM:<a@b>");
        one(&mut s, "RCPT TO:<root@example.com>");
        let trace = s.trace_headers("ID", "date");
        assert!(
            trace.contains(" with ESMTPSA (TLSv1.3 TLS_AES_128_GCM_SHA256) id ID "),
            "{trace}"
        );
    }

    #[test]
    fn submission_wants_tls_even_from_loopback() {
        let mut s = auth_session("127.0.0.1:4000", Mode::Submission, true);
        one(&mut s, "EHLO c");
        assert_eq!(
            one(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0secret"))),
            "235 2.7.0"
        );
        assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "530 5.7.0");
    }

    #[test]
    fn submission_accepts_mail_after_tls_and_auth() {
        let mut s = auth_session("192.0.2.1:4000", Mode::Submission, true);
        one(&mut s, "EHLO c");
        assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "530 5.7.0");
        s.tls_started("TLSv1.3".to_string());
        one(&mut s, "EHLO c");
        assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "530 5.7.0");
        one(&mut s, &format!("AUTH PLAIN {}", b64(b"\0alice\0secret")));
        assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "250 2.1.0");
    }

    #[test]
    fn starttls_forgets_the_session() {
        let mut s = auth_session("192.0.2.1:4000", Mode::Smtp, true);
        one(&mut s, "EHLO c");
        let step = s.command(b"STARTTLS");
        assert_eq!(step.replies[0].to_string(), "220 2.0.0 Ready to start TLS");
        assert_eq!(step.action, Action::StartTls);
        s.tls_started("TLSv1.2".to_string());
        assert_eq!(
            one(&mut s, "MAIL FROM:<a@b>"),
            "503 5.5.1",
            "HELO forgotten"
        );
    }

    fn session() -> Session {
        session_with(config(), "127.0.0.1:4000", Arc::new(NeverFull), Mode::Smtp)
    }

    /// Sends one line and returns "code status" of each reply.
    fn say(s: &mut Session, line: &str) -> Vec<String> {
        s.command(line.as_bytes())
            .replies
            .iter()
            .map(|r| format!("{} {}", r.code, status_text(r)))
            .collect()
    }

    /// The enhanced status as text, empty for none.
    fn status_text(r: &Reply) -> String {
        r.status.map_or(String::new(), |s| s.to_string())
    }

    fn one(s: &mut Session, line: &str) -> String {
        let mut r = say(s, line);
        assert_eq!(r.len(), 1, "{line}: {r:?}");
        r.remove(0)
    }

    #[test]
    fn greeting_names_host() {
        assert_eq!(
            session().greeting().to_string(),
            "220 mx.example ESMTP smtpbox"
        );
    }

    #[test]
    fn ehlo_advertises_extensions_without_starttls_or_auth() {
        let mut s = session();
        let step = s.command(b"EHLO client");
        let text = step.replies[0].to_string();
        for kw in [
            "PIPELINING",
            "SIZE 10485760",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "DSN",
            "HELP",
        ] {
            assert!(text.contains(kw), "{kw} missing in {text}");
        }
        assert!(!text.contains("STARTTLS"));
        assert!(!text.contains("AUTH"));
    }

    #[test]
    fn sequence_errors() {
        let mut s = session();
        assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "503 5.5.1");
        assert_eq!(one(&mut s, "RCPT TO:<root@example.com>"), "503 5.5.1");
        assert_eq!(one(&mut s, "DATA"), "503 5.5.1");
        assert_eq!(one(&mut s, "HELO c"), "250 ");
        assert_eq!(one(&mut s, "RCPT TO:<root@example.com>"), "503 5.5.1");
        assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "250 2.1.0");
        assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "503 5.5.1");
        assert_eq!(one(&mut s, "DATA"), "554 5.5.1");
        assert_eq!(one(&mut s, "RCPT TO:<root@example.com>"), "250 2.1.5");
        assert!(matches!(
            s.command(b"DATA").action,
            Action::BeginMessage {
                body: MessageBody::Data { lf_session: false },
            }
        ));
    }

    #[test]
    fn recipients_local_relay_and_unknown() {
        let mut s = session();
        one(&mut s, "EHLO c");
        one(&mut s, "MAIL FROM:<>");
        assert_eq!(one(&mut s, "RCPT TO:<x@elsewhere.org>"), "550 5.7.1");
        assert_eq!(one(&mut s, "RCPT TO:<Root+disk@EXAMPLE.com>"), "250 2.1.5");
        assert_eq!(one(&mut s, "RCPT TO:<postmaster>"), "250 2.1.5");
        assert_eq!(one(&mut s, "RCPT TO:<root@[127.0.0.1]>"), "250 2.1.5");
        assert_eq!(
            s.targets().count(),
            1,
            "one maildir, however many recipients"
        );
    }

    #[test]
    fn unknown_local_user_without_default_maildir() {
        let mut c = config();
        c.maildir = None;
        c.mailboxes = vec![("alice".to_string(), unused_dir("alice"))];
        let mut s = session_with(c, "127.0.0.1:4000", Arc::new(NeverFull), Mode::Smtp);
        one(&mut s, "EHLO c");
        one(&mut s, "MAIL FROM:<a@b>");
        assert_eq!(one(&mut s, "RCPT TO:<bob@example.com>"), "550 5.1.1");
        assert_eq!(one(&mut s, "RCPT TO:<alice@example.com>"), "250 2.1.5");
    }

    #[test]
    fn limits_come_from_the_listeners_policy() {
        let config = config();
        let mut policy = Policy::new(&config, None, Mode::Smtp);
        assert_eq!(
            policy.limits.max_message_size,
            config.limits.max_message_size
        );
        policy.limits.max_message_size = 500;
        policy.limits.max_recipients = 1;
        let peer = Peer::network(Some("127.0.0.1:4000".parse().unwrap()), None);
        let services = Services {
            quota: Arc::new(NeverFull),
            users: None,
            tls: false,
        };
        let mut s = Session::new(Arc::new(config), services, peer, &policy);
        let ehlo = s.command(b"EHLO c").replies[0].to_string();
        assert!(ehlo.contains("SIZE 500\r\n"), "{ehlo}");
        assert_eq!(one(&mut s, "MAIL FROM:<a@b> SIZE=501"), "552 5.3.4");
        assert_eq!(one(&mut s, "MAIL FROM:<a@b> SIZE=500"), "250 2.1.0");
        assert_eq!(one(&mut s, "RCPT TO:<a@example.com>"), "250 2.1.5");
        assert_eq!(one(&mut s, "RCPT TO:<b@example.com>"), "452 4.5.3");
        let Action::BeginMessage { .. } = s.command(b"DATA").action else {
            panic!("DATA did not begin a message");
        };
        assert_eq!(s.content_rules().max_size, 500);
    }

    #[test]
    fn too_many_recipients() {
        let mut c = config();
        c.limits.max_recipients = 2;
        let mut s = session_with(c, "127.0.0.1:4000", Arc::new(NeverFull), Mode::Smtp);
        one(&mut s, "EHLO c");
        one(&mut s, "MAIL FROM:<a@b>");
        assert_eq!(one(&mut s, "RCPT TO:<a@example.com>"), "250 2.1.5");
        assert_eq!(one(&mut s, "RCPT TO:<b@example.com>"), "250 2.1.5");
        assert_eq!(one(&mut s, "RCPT TO:<c@example.com>"), "452 4.5.3");
    }

    #[test]
    fn full_mailbox_at_rcpt() {
        let mut s = session_with(config(), "127.0.0.1:4000", Arc::new(AlwaysFull), Mode::Smtp);
        one(&mut s, "EHLO c");
        one(&mut s, "MAIL FROM:<a@b>");
        assert_eq!(one(&mut s, "RCPT TO:<a@example.com>"), "452 4.2.2");
    }

    #[test]
    fn declared_size_over_limit() {
        let mut s = session();
        one(&mut s, "EHLO c");
        assert_eq!(one(&mut s, "MAIL FROM:<a@b> SIZE=10485761"), "552 5.3.4");
        assert_eq!(one(&mut s, "MAIL FROM:<a@b> SIZE=10485760"), "250 2.1.0");
    }

    #[test]
    fn utf8_addresses_need_smtputf8() {
        let mut s = session();
        one(&mut s, "EHLO c");
        assert_eq!(one(&mut s, "MAIL FROM:<jörg@b.de>"), "553 5.6.7");
        assert_eq!(one(&mut s, "MAIL FROM:<jörg@b.de> SMTPUTF8"), "250 2.1.0");
        assert_eq!(one(&mut s, "RCPT TO:<jörg@example.com>"), "250 2.1.5");
    }

    #[test]
    fn simple_replies() {
        let mut s = session();
        assert_eq!(one(&mut s, "NOOP"), "250 2.0.0");
        assert_eq!(one(&mut s, "RSET"), "250 2.0.0");
        assert_eq!(one(&mut s, "VRFY root"), "252 2.5.0");
        assert_eq!(one(&mut s, "EXPN staff"), "502 5.5.1");
        assert_eq!(one(&mut s, "HELP"), "214 2.0.0");
        for verb in [
            "ETRN x",
            "TURN",
            "SEND FROM:<a@b>",
            "SOML FROM:<a@b>",
            "SAML FROM:<a@b>",
        ] {
            assert_eq!(one(&mut s, verb), "502 5.5.1", "{verb}");
        }
        let step = s.command(b"QUIT");
        assert_eq!(step.replies[0].to_string(), "221 2.0.0 Bye");
        assert_eq!(step.action, Action::Close("closed by server"));
    }

    #[test]
    fn forbidden_http_closes() {
        let mut s = session();
        let step = s.command(b"GET / HTTP/1.1");
        assert_eq!(step.replies[0].code, 521);
        assert_eq!(step.replies[0].status.unwrap(), "5.7.0");
        assert_eq!(step.action, Action::Close("closed by server"));
    }

    #[test]
    fn nul_byte_and_long_line() {
        let mut s = session();
        assert_eq!(one(&mut s, "NO\0OP"), "500 5.5.2");
        let step = s.line_too_long();
        assert_eq!(step.replies[0].status.unwrap(), "5.5.2");
    }

    #[test]
    fn error_budget_closes_with_421() {
        let mut s = session();
        for _ in 0..9 {
            assert_eq!(one(&mut s, "BOGUS"), "500 5.5.2");
        }
        let step = s.command(b"BOGUS");
        let codes: Vec<u16> = step.replies.iter().map(|r| r.code).collect();
        assert_eq!(codes, vec![500, 421]);
        assert_eq!(step.replies[1].status.unwrap(), "4.7.0");
        assert_eq!(step.action, Action::Close("closed by server"));
    }

    #[test]
    fn rset_and_ehlo_drop_transaction() {
        let mut s = session();
        one(&mut s, "EHLO c");
        one(&mut s, "MAIL FROM:<a@b>");
        one(&mut s, "RSET");
        assert_eq!(one(&mut s, "RCPT TO:<a@example.com>"), "503 5.5.1");
        one(&mut s, "MAIL FROM:<a@b>");
        one(&mut s, "EHLO c");
        assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "250 2.1.0");
    }

    /// MAIL and RCPT, DATA, and the message opened: the session waits for
    /// the content.
    fn data_opened(s: &mut Session) -> ContentRules {
        one(s, "MAIL FROM:<a@b>");
        one(s, "RCPT TO:<a@example.com>");
        let Action::BeginMessage { body } = s.command(b"DATA").action else {
            panic!("DATA did not begin a message");
        };
        assert_eq!(body, MessageBody::Data { lf_session: false });
        let rules = s.content_rules();
        let step = s.message_opened(Ok(()));
        assert_eq!(
            step.replies[0].to_string(),
            "354 End data with <CR><LF>.<CR><LF>"
        );
        assert_eq!(step.action, Action::ReadData { lf_session: false });
        rules
    }

    fn refused(s: &mut Session, rules: ContentRules, summary: ContentSummary) -> Reply {
        let refusal = rules.check(&summary).unwrap_err();
        let mut step = s.message_done(Err(NotStored::Refused(refusal)));
        assert_eq!(step.action, Action::Continue);
        step.replies.remove(0)
    }

    #[test]
    fn content_rules_at_end_of_data() {
        let mut s = session();
        one(&mut s, "EHLO c");
        let rules = data_opened(&mut s);
        assert_eq!(rules.max_size, 10_485_760);
        let too_big = ContentSummary {
            oversized: true,
            ..Default::default()
        };
        assert_eq!(refused(&mut s, rules, too_big).status.unwrap(), "5.3.4");
        let rules = data_opened(&mut s);
        let looped = ContentSummary {
            received_headers: 101,
            ..Default::default()
        };
        assert_eq!(refused(&mut s, rules, looped).status.unwrap(), "5.4.6");
        let rules = data_opened(&mut s);
        let ok = ContentSummary {
            received_headers: 100,
            ..Default::default()
        };
        assert!(rules.check(&ok).is_ok());
        let step = s.message_done(Ok(Stored {
            id: "ID1".to_string(),
            size: 10,
        }));
        assert_eq!(step.replies[0].to_string(), "250 2.0.0 Ok: queued as ID1");
        assert_eq!(
            one(&mut s, "RCPT TO:<a@example.com>"),
            "503 5.5.1",
            "transaction over"
        );
    }

    #[test]
    fn bare_lf_rejected_when_configured() {
        let mut c = config();
        c.bare_lf = BareLf::Reject;
        let mut s = session_with(c, "127.0.0.1:4000", Arc::new(NeverFull), Mode::Smtp);
        one(&mut s, "EHLO c");
        let rules = data_opened(&mut s);
        assert_eq!(rules.bare_lf, BareLf::Reject);
        let bare = ContentSummary {
            bare_line_ending: true,
            ..Default::default()
        };
        assert_eq!(
            refused(&mut s, rules, bare).to_string(),
            "550 5.6.0 Bare CR or LF in message content is not allowed"
        );
    }

    #[test]
    fn delivery_errors_map_to_replies() {
        let mut s = session();
        one(&mut s, "EHLO c");
        data_opened(&mut s);
        let full = DeliveryError::io(Path::new("/x"), std::io::Error::from_raw_os_error(28));
        let step = s.message_done(Err(NotStored::Failed(full)));
        assert_eq!(step.replies[0].status.unwrap(), "4.3.1");
        data_opened(&mut s);
        let broken = DeliveryError::io(Path::new("/x"), std::io::Error::from_raw_os_error(5));
        let step = s.message_done(Err(NotStored::Failed(broken)));
        assert_eq!(step.replies[0].status.unwrap(), "4.3.0");
        // Each failure's reply, one by one (these were maildir's own once).
        let io =
            |errno| DeliveryError::io(Path::new("/x"), std::io::Error::from_raw_os_error(errno));
        assert_eq!(failure_reply(&io(28)), Reply::no_storage());
        assert_eq!(failure_reply(&io(5)), Reply::local_error());
        let over = DeliveryError::Quota {
            maildir: PathBuf::from("/x"),
            used: 100,
            size: 50,
            quota: 120,
        };
        assert_eq!(failure_reply(&over), Reply::mailbox_full());
        data_opened(&mut s);
        let step = s.message_done(Err(NotStored::Failed(over)));
        assert_eq!(step.replies[0], Reply::mailbox_full());
    }

    #[test]
    fn a_message_that_cannot_be_opened_is_a_reply_and_no_transaction() {
        let mut s = session();
        one(&mut s, "EHLO c");
        one(&mut s, "MAIL FROM:<a@b>");
        one(&mut s, "RCPT TO:<a@example.com>");
        s.command(b"DATA");
        let broken = DeliveryError::io(Path::new("/x"), std::io::Error::from_raw_os_error(5));
        let step = s.message_opened(Err(broken));
        assert_eq!(
            (status_text(&step.replies[0]), step.action),
            ("4.3.0".to_string(), Action::Continue)
        );
        assert_eq!(one(&mut s, "DATA"), "503 5.5.1");
        // A BDAT chunk whose message cannot be opened is read and dropped.
        one(&mut s, "MAIL FROM:<a@b>");
        one(&mut s, "RCPT TO:<a@example.com>");
        s.command(b"BDAT 7");
        let broken = DeliveryError::io(Path::new("/x"), std::io::Error::from_raw_os_error(5));
        let step = s.message_opened(Err(broken));
        assert_eq!(step.action, Action::DiscardChunk { size: 7 });
    }

    #[test]
    fn lf_only_session_is_the_clients_until_it_sends_crlf() {
        let mut s = session();
        let lf =
            |s: &mut Session, text: &[u8]| s.framed(Frame::Line(Line::new(text, false)), false);
        lf(&mut s, b"HELO c");
        lf(&mut s, b"MAIL FROM:<a@b>");
        lf(&mut s, b"RCPT TO:<a@example.com>");
        let step = lf(&mut s, b"DATA");
        assert!(matches!(
            step.action,
            Action::BeginMessage {
                body: MessageBody::Data { lf_session: true },
            }
        ));
        s.message_opened(Ok(()));
        s.message_done(Ok(Stored {
            id: "ID".to_string(),
            size: 1,
        }));
        // One CRLF line, and the exception is over for the session.
        one(&mut s, "NOOP");
        lf(&mut s, b"MAIL FROM:<a@b>");
        lf(&mut s, b"RCPT TO:<a@example.com>");
        assert!(matches!(
            lf(&mut s, b"DATA").action,
            Action::BeginMessage {
                body: MessageBody::Data { lf_session: false },
            }
        ));
    }

    #[test]
    fn synchronization_rule_for_remote_clients_only() {
        let mut remote = session_with(config(), "192.0.2.1:4000", Arc::new(NeverFull), Mode::Smtp);
        let step = remote.open(|| true);
        assert_eq!(
            step.replies[0].to_string(),
            "554 5.5.0 Protocol error: wait for the server's reply"
        );
        assert_eq!(
            step.action,
            Action::Close("talked before greeting (554 5.5.0)")
        );
        let mut remote = session_with(config(), "192.0.2.1:4000", Arc::new(NeverFull), Mode::Smtp);
        assert_eq!(remote.open(|| false).replies[0].code, 220);
        one(&mut remote, "EHLO c");
        one(&mut remote, "MAIL FROM:<a@b>");
        one(&mut remote, "RCPT TO:<a@example.com>");
        let step = remote.framed(Frame::Line(Line::new(b"DATA", true)), true);
        assert_eq!(step.replies[0].status.unwrap(), "5.5.0");
        assert_eq!(step.action, Action::Close("content before 354 (554 5.5.0)"));
        // Loopback clients may do both; the probe is not even asked.
        let mut local = session();
        let step = local.open(|| panic!("probed"));
        assert_eq!(step.replies[0].code, 220);
        one(&mut local, "EHLO c");
        one(&mut local, "MAIL FROM:<a@b>");
        one(&mut local, "RCPT TO:<a@example.com>");
        let step = local.framed(Frame::Line(Line::new(b"DATA", true)), true);
        assert!(matches!(step.action, Action::BeginMessage { .. }));
    }

    #[test]
    fn bdat_flow() {
        let mut s = session();
        one(&mut s, "EHLO c");
        assert_eq!(
            s.command(b"BDAT 5").action,
            Action::DiscardChunk { size: 5 }
        );
        one(&mut s, "MAIL FROM:<a@b> BODY=BINARYMIME");
        assert_eq!(
            s.command(b"BDAT 5").action,
            Action::DiscardChunk { size: 5 },
            "no recipient yet"
        );
        one(&mut s, "RCPT TO:<a@example.com>");
        assert_eq!(one(&mut s, "DATA"), "503 5.5.1", "BINARYMIME needs BDAT");
        let Action::BeginMessage { body, .. } = s.command(b"BDAT 5").action else {
            panic!("the first chunk begins the message");
        };
        assert_eq!(
            body,
            MessageBody::Chunk {
                size: 5,
                last: false
            }
        );
        assert_eq!(
            s.message_opened(Ok(())).action,
            Action::ReadChunk {
                size: 5,
                last: false
            }
        );
        let step = s.chunk_done();
        assert_eq!(step.replies[0].to_string(), "250 2.0.0 5 octets received");
        assert_eq!(one(&mut s, "DATA"), "503 5.5.1", "no DATA after BDAT");
        assert_eq!(
            s.command(b"BDAT 0 LAST").action,
            Action::ReadChunk {
                size: 0,
                last: true
            }
        );
        let step = s.message_done(Ok(Stored {
            id: "ID".to_string(),
            size: 5,
        }));
        assert_eq!(step.replies[0].to_string(), "250 2.0.0 Ok: queued as ID");
        // RSET between chunks drops the message the driver holds.
        one(&mut s, "MAIL FROM:<a@b>");
        one(&mut s, "RCPT TO:<a@example.com>");
        s.command(b"BDAT 3");
        s.message_opened(Ok(()));
        s.chunk_done();
        let step = s.command(b"RSET");
        assert_eq!(step.replies[0].to_string(), "250 2.0.0 Ok");
        assert_eq!(step.action, Action::AbortMessage);
        assert_eq!(one(&mut s, "RCPT TO:<a@example.com>"), "503 5.5.1");
    }

    #[test]
    fn trace_headers_name_everything() {
        let mut s = session();
        one(&mut s, "EHLO client.example");
        one(&mut s, "MAIL FROM:<a@b>");
        one(&mut s, "RCPT TO:<root@example.com>");
        let h = s.trace_headers("ID7", "Sat, 28 Nov 2026 20:14:17 +0000");
        assert_eq!(
            h,
            "Return-Path: <a@b>\r\nReceived: from client.example ([127.0.0.1]) by mx.example (smtpbox) with ESMTP id ID7 for <root@example.com>; Sat, 28 Nov 2026 20:14:17 +0000\r\n"
        );
    }

    #[test]
    fn an_overlong_helo_is_cut_in_the_trace_and_still_answered() {
        let mut s = session();
        let helo = "a".repeat(2000);
        let reply = s.command(format!("EHLO {helo}").as_bytes()).replies;
        assert!(
            reply[0].to_string().starts_with("250-mx.example"),
            "{reply:?}"
        );
        one(&mut s, "MAIL FROM:<a@b>");
        one(&mut s, "RCPT TO:<root@example.com>");
        let h = s.trace_headers("ID7", "Sat, 28 Nov 2026 20:14:17 +0000");
        let want = format!(
            "Received: from {} ([127.0.0.1]) by mx.example (smtpbox) with ESMTP id ID7 \
             for <root@example.com>; Sat, 28 Nov 2026 20:14:17 +0000\r\n",
            "a".repeat(255)
        );
        assert!(h.ends_with(&want), "{h}");
    }

    #[test]
    fn a_header_over_998_octets_is_folded_at_spaces() {
        let words: Vec<String> = (0..300).map(|i| format!("w{i}")).collect();
        let header = format!("Received: from {} ; date", words.join(" "));
        let folded = fold(&header);
        assert_eq!(
            folded.replace("\r\n", ""),
            header,
            "unfolds to the original"
        );
        for line in folded.split("\r\n") {
            assert!(line.len() <= FOLD_AT, "{line:?}");
        }
        let lines: Vec<&str> = folded.split("\r\n").collect();
        assert!(lines.len() > 10 && lines[1..].iter().all(|l| l.starts_with(' ')));
        // A long word stays whole, on a line of its own; double spaces never
        // leave a line of white space alone.
        let header = format!(
            "Received: from {}  by x {}",
            "h".repeat(900),
            "y ".repeat(60)
        );
        let folded = fold(&header);
        assert_eq!(folded.replace("\r\n", ""), header);
        assert!(folded
            .split("\r\n")
            .all(|l| l.len() <= MAX_HEADER_LINE && !l.trim().is_empty()));
        assert_eq!(fold("Received: short"), "Received: short");
        assert_eq!(cut("é".repeat(200), 255), "é".repeat(127));
    }

    #[test]
    fn submission_requires_tls_and_auth() {
        let mut s = session_with(
            config(),
            "192.0.2.1:4000",
            Arc::new(NeverFull),
            Mode::Submission,
        );
        one(&mut s, "EHLO c");
        assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "530 5.7.0");
        let mut s = session_with(
            config(),
            "127.0.0.1:4000",
            Arc::new(NeverFull),
            Mode::Submission,
        );
        one(&mut s, "EHLO c");
        assert_eq!(one(&mut s, "MAIL FROM:<a@b>"), "530 5.7.0");
    }

    #[test]
    fn starttls_without_certificate() {
        let mut s = session();
        assert_eq!(one(&mut s, "STARTTLS"), "502 5.5.1");
    }

    fn session_for(peer: Peer) -> Session {
        let services = Services {
            quota: Arc::new(NeverFull),
            users: Some(Arc::new(Alice)),
            tls: false,
        };
        let config = config();
        let policy = Policy::new(&config, None, Mode::Smtp);
        Session::new(Arc::new(config), services, peer, &policy)
    }

    #[test]
    fn ipv4_mapped_peer_is_written_as_ipv4() {
        let peer = Peer::network(
            Some("[::ffff:192.0.2.7]:4000".parse().unwrap()),
            Some("[::ffff:192.0.2.25]:25".parse().unwrap()),
        );
        assert_eq!(peer.describe(), "[192.0.2.7]:4000");
        assert!(!peer.is_loopback());
        let mut s = session_for(peer);
        one(&mut s, "EHLO client.example");
        one(&mut s, "MAIL FROM:<a@b>");
        // The address literal matches the connection's own IPv4 address.
        assert_eq!(one(&mut s, "RCPT TO:<root@[192.0.2.25]>"), "250 2.1.5");
        let h = s.trace_headers("ID", "date");
        assert!(
            h.contains("Received: from client.example ([192.0.2.7]) by"),
            "{h}"
        );
        let mapped = Peer::network(Some("[::ffff:127.0.0.1]:1".parse().unwrap()), None);
        assert!(mapped.is_loopback());
        let v6 = Peer::network(Some("[2001:db8::1]:25".parse().unwrap()), None);
        assert_eq!(v6.describe(), "[2001:db8::1]:25");
    }

    #[test]
    fn local_caller_is_trusted_named_by_uid_and_never_relays() {
        let caller = LocalCaller {
            uid: 1000,
            user: "joe".to_string(),
        };
        let peer = Peer::local_caller(caller);
        assert_eq!(peer.describe(), "local uid=1000 user=joe");
        assert!(peer.is_loopback());
        let mut s = session_for(peer);
        let ehlo = s.command(b"EHLO box").replies[0].to_string();
        assert!(
            ehlo.contains("AUTH PLAIN LOGIN"),
            "AUTH without TLS: {ehlo}"
        );
        assert_eq!(one(&mut s, "MAIL FROM:<joe@mx.example>"), "250 2.1.0");
        assert_eq!(one(&mut s, "RCPT TO:<x@elsewhere.example>"), "550 5.7.1");
        assert_eq!(one(&mut s, "RCPT TO:<root@example.com>"), "250 2.1.5");
        let h = s.trace_headers("ID", "date");
        assert!(
            h.contains("Received: from box (uid 1000 user joe) by mx.example (smtpbox) with ESMTP"),
            "{h}"
        );
    }
}
