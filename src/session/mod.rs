//! The SMTP session as a sans-IO state machine (RFC 5321 §4.1, §4.3).
//!
//! The session owns every protocol rule and its own input: it takes the
//! client's bytes ([`Session::push`], ureq-proto's `try_request(&[u8]) ->
//! (used, Option<Request>)` shape) and answers with how many it used and,
//! when they completed a command or a message, a [`Step`]: replies to send
//! and one [`Action`] for the I/O it cannot do itself (start TLS, close).
//! Inside it are the command-line [`Framer`], the order of commands, the
//! synchronization rule (RFC 2920, `554 5.5.0`), the error budget, the
//! LF-only-session exception of SPEC §6 and the DATA/BDAT automaton
//! (`content.rs`), which writes the message into a [`Draft`] of its
//! [`Store`]. The driver (`conn.rs`, for every start mode and the fuzz
//! target) only moves bytes, runs timeouts and TLS, and flushes replies
//! before a read would block. The session does no I/O of its own but
//! through its [`Services`]: the [`Store`] (open a message, is a target
//! full) and the [`Authenticator`] (is a password right), so its tests are
//! plain byte slices.
//!
//! Rooms: `auth.rs` (AUTH exchanges), `content.rs` (the message phase),
//! `trace.rs` (the trace headers), `peer.rs` (who is connected).
//!
//! The states are fields rather than one enum: `greeting` (None until HELO
//! or EHLO), `tx` (the transaction, from MAIL on, with its recipients and
//! `chunking`), `content` (where a message stands, below), `auth_exchange`
//! (an AUTH challenge waiting for its answer).
//!
//! ```text
//!  open ─► greeting None ──HELO/EHLO──► greeting Some ──MAIL──► tx ──RCPT──► tx + recipients
//!              ▲                            ▲                                   │
//!              │ tls_started                └── RSET, HELO/EHLO, message over ◄─┤ DATA, BDAT
//!              │ (RFC 3207: forget all)                                         ▼
//!
//!  content:  Idle ──DATA: open, 354──► Data ──CRLF.CRLF: finish, 250/4xx/5xx──► Idle
//!              │
//!              ├──BDAT n: open──► Chunk ──n bytes──► Chunks ──BDAT m──► Chunk ─…
//!              │                    │ LAST: finish        │ RSET, HELO, EHLO: dropped
//!              │                    └─► Idle              └─► Idle
//!              └──BDAT n refused──► Discard ──n bytes──► Idle
//! ```
//!
//! The transaction (sender, recipients) is a separate value, so RSET and the
//! end of a message are simply "drop the transaction"; a message under way
//! is dropped with it, and dropping a [`Draft`] stores nothing.
//!
//! Stack: every stack page a session thread has touched stays resident
//! while it waits for its client (the stack budget at `conn::serve`). The
//! session is on the heap, its message phase's state is a few words
//! (`content::Content`: the message and buffers it names are on the
//! heap), and the
//! rare paths are calls of their own (`#[inline(never)]`), so the command
//! path's frames stay small.

mod auth;
mod content;
mod peer;
mod trace;

use std::sync::Arc;

use crate::command::{self, Address, Command, MailParams, ReversePath};
use crate::config::{Config, Mode, Policy};
use crate::delivery::{ContentRules, DeliveryError, Store, Target, MAX_RECEIVED};
use crate::framer::{Frame, Framer, Line};
use crate::notify::{self, Notice};
use crate::reply::Reply;
use crate::routing::{self, Route};

use auth::AuthExchange;
pub use auth::Authenticator;
use content::Content;
pub use peer::{LocalCaller, Peer};

/// What a session may ask of the world outside it.
#[derive(Clone)]
pub struct Services {
    /// Where messages go, and whether a target is full.
    pub store: Arc<dyn Store>,
    /// The users file; None when AUTH is not configured.
    pub users: Option<Arc<dyn Authenticator>>,
    /// A certificate is configured: STARTTLS is offered.
    pub tls: bool,
}

/// What the driver must do after it has sent the step's replies: only
/// what needs I/O the session cannot do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Push the client's next bytes.
    Continue,
    /// Flush the replies and close the connection; the reason is for the
    /// disconnect log line.
    Close(&'static str),
    /// Flush, discard any input already buffered (CVE-2011-0411),
    /// handshake, then report [`Session::tls_started`] and push the
    /// client's next bytes.
    StartTls,
}

/// The replies for one input, and what to do next.
#[derive(Debug)]
pub struct Step {
    pub replies: Vec<Reply>,
    pub action: Action,
    /// A message was stored and `notify` is set: its notices, for the
    /// driver to send once the replies are written (SPEC §7a). Here, not
    /// in the session, which stays the size it was (README row 5).
    pub notices: Vec<Notice>,
}

impl Step {
    fn reply(reply: Reply) -> Step {
        Step {
            replies: vec![reply],
            action: Action::Continue,
            notices: Vec::new(),
        }
    }

    /// Nothing to say yet: push the client's next bytes.
    fn none() -> Step {
        Step {
            replies: Vec::new(),
            action: Action::Continue,
            notices: Vec::new(),
        }
    }

    fn close(reply: Reply, reason: &'static str) -> Step {
        Step {
            replies: vec![reply],
            action: Action::Close(reason),
            notices: Vec::new(),
        }
    }
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
    /// Command lines as they arrive.
    framer: Framer,
    /// The message under way, if any.
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
            framer: Framer::new(),
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

    /// Takes the client's next bytes (what the driver has buffered; never
    /// empty). Returns how many were used and, when they completed a
    /// command line or a message, the step that answers it; bytes after
    /// that are not looked at: push them again. Commands go through the
    /// framer; message content into the open message (`content.rs`).
    pub fn push(&mut self, input: &[u8]) -> (usize, Option<Step>) {
        if self.content.is_reading() {
            return self.push_content(input);
        }
        let mut framer = std::mem::take(&mut self.framer);
        let (used, frame) = framer.push(input);
        let step = frame.map(|frame| self.framed(frame, input.len() > used));
        self.framer = framer;
        (used, step)
    }

    /// True while the client is in the middle of a command line: its
    /// replies so far may wait for the rest (a pipelined group split
    /// across two reads still gets one write, RFC 2920).
    pub fn hold_replies(&self) -> bool {
        !self.content.is_reading() && self.framer.mid_line()
    }

    /// True while message content (DATA, a BDAT chunk) is being read: the
    /// driver reads in larger pieces then.
    pub fn reading_content(&self) -> bool {
        self.content.is_reading()
    }

    /// The client's input ended: why, for the disconnect log line. A
    /// message under way is dropped; nothing of it is stored.
    pub fn input_closed(&mut self) -> &'static str {
        std::mem::replace(&mut self.content, Content::Idle).closed_reason()
    }

    /// The addresses accepted by RCPT in the transaction under way, in
    /// order, as they appear in the log line.
    pub fn recipients(&self) -> impl Iterator<Item = &str> {
        let recipients = self.tx.as_ref().map_or(&[][..], |tx| &tx.recipients);
        recipients.iter().map(|r| r.address.as_str())
    }

    /// Handles one command line (without its line ending), as if it ended
    /// in CRLF and nothing followed it.
    pub fn command(&mut self, line: &[u8]) -> Step {
        self.framed(Frame::Line(Line::new(line, true)), false)
    }

    /// Handles what the framer made of the client's next bytes: a command
    /// line (or the answer to an AUTH challenge), or a line that was too
    /// long. `buffered_after`: the client's bytes after this frame have
    /// already arrived, which a remote client may not do after DATA
    /// (RFC 2920 §3.1: DATA is the last command of a group).
    #[inline(never)] // Its frame stays out of the driver's loop.
    fn framed(&mut self, frame: Frame<'_>, buffered_after: bool) -> Step {
        let line = match frame {
            Frame::TooLong => return self.line_too_long(),
            Frame::Line(line) => line,
        };
        self.sent_crlf |= line.crlf;
        let mut step = match self.auth_exchange.take() {
            Some(exchange) => self.auth_response(exchange, line.text),
            None if line.nul => Step::reply(Reply::nul_byte()),
            None => match parse(line.text) {
                Ok(command) => self.dispatch(command, buffered_after),
                Err(reply) => Step::reply(reply),
            },
        };
        if !matches!(step.action, Action::Close(_)) && step.replies.iter().any(|r| r.code >= 500) {
            step = self.count_error(step);
        }
        // RSET, HELO or EHLO ended the transaction of a BDAT message.
        if !self.tx.as_ref().is_some_and(|tx| tx.chunking) {
            self.content.drop_between_chunks();
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
    /// message and a partial command line included.
    pub fn tls_started(&mut self, description: String) {
        self.tls = Some(description);
        self.greeting = None;
        self.tx = None;
        self.auth_user = None;
        self.auth_exchange = None;
        self.framer = Framer::new();
        self.content = Content::Idle;
    }

    /// The session is closed for a timeout.
    pub fn timed_out(&mut self) -> Step {
        Step::close(Reply::timeout(), "timeout (421 4.4.2)")
    }

    /// The targets the current message goes to, each once.
    fn targets(&self) -> impl Iterator<Item = &Target> {
        let recipients = self.tx.as_ref().map_or(&[][..], |tx| &tx.recipients);
        recipients
            .iter()
            .enumerate()
            .filter(|(i, r)| !recipients[..*i].iter().any(|o| o.target == r.target))
            .map(|(_, r)| &r.target)
    }

    /// The content rules of a message of this session (SPEC §6).
    fn content_rules(&self) -> ContentRules {
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
    /// The reply to a message whose delivery was tried, and, when it was
    /// stored and `notify` is set, its notices.
    fn delivered(
        &mut self,
        size: u64,
        result: Result<(String, String), DeliveryError>,
    ) -> (Reply, Vec<Notice>) {
        let tx = self.tx.take();
        let mut notices = Vec::new();
        match result {
            Ok((id, file_name)) => {
                if let Some(tx) = &tx {
                    if self.config.notify.program.is_some() {
                        let stored = notify::Stored {
                            id: &id,
                            file_name: &file_name,
                            sender: &tx.sender,
                            size,
                            client: self.peer.describe(),
                        };
                        let to = tx
                            .recipients
                            .iter()
                            .map(|r| (r.address.as_str(), &r.target));
                        notices = stored.notices(to);
                    }
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
                (Reply::queued(&id), notices)
            }
            Err(e) => {
                let reply = failure_reply(&e);
                log::warn!(
                    "delivery failed: {} ({}) client={}",
                    e,
                    reply.code,
                    self.peer.describe()
                );
                (reply, notices)
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

    fn dispatch(&mut self, command: Command, buffered_after: bool) -> Step {
        match command {
            Command::Helo(name) => self.helo(name, false),
            Command::Ehlo(name) => self.helo(name, true),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params: _ } => self.rcpt(to),
            Command::Data => self.data(buffered_after),
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
        let reply =
            match routing::route(&self.config.routes(), &to, self.peer.local.map(|a| a.ip())) {
                Route::NotLocal => Reply::relay_denied(&address),
                Route::NoMailbox => Reply::no_such_user(&address),
                Route::Mailbox(target) => {
                    if self.services.store.is_full(&target) {
                        Reply::recipient_mailbox_full(&address)
                    } else {
                        tx.recipients.push(Recipient { address, target });
                        return Step::reply(Reply::recipient_ok());
                    }
                }
            };
        Step::reply(reply)
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
            action: Action::StartTls,
            ..Step::reply(Reply::ready_for_tls())
        }
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

#[cfg(test)]
mod tests;
