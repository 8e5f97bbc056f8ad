//! AUTH (RFC 4954) in the session: PLAIN (RFC 4616) and LOGIN, the
//! challenge exchange, and the failure budget (SPEC §5). The users file is
//! asked through an [`Authenticator`], so tests need no file.

use super::{Action, Session, Step};
use crate::auth;
use crate::reply::Reply;

/// Checks AUTH credentials against the users file (SPEC §3 `users`).
pub trait Authenticator: Send + Sync {
    /// Whether `password` is `user`'s; an error (naming the file and the
    /// reason, for the log) when the users cannot be read now.
    fn verify(&self, user: &str, password: &[u8]) -> Result<bool, String>;
}

impl Authenticator for auth::UsersFile {
    fn verify(&self, user: &str, password: &[u8]) -> Result<bool, String> {
        Ok(self.current()?.verify(user, password))
    }
}

/// An AUTH exchange waiting for the client's next line (RFC 4954 §4).
#[derive(Debug)]
pub(super) enum AuthExchange {
    /// PLAIN without an initial response: `334 ` sent.
    Plain,
    /// LOGIN: the user name prompt sent.
    LoginUser,
    /// LOGIN: the password prompt sent.
    LoginPassword { user: String },
}

/// Failed AUTH attempts before the session is closed (SPEC §5).
pub(super) const MAX_AUTH_FAILURES: u32 = 3;

impl Session {
    pub(super) fn auth_allowed(&self) -> bool {
        self.services.users.is_some() && (self.tls.is_some() || self.peer.is_loopback())
    }

    /// AUTH (RFC 4954): PLAIN (RFC 4616) and LOGIN.
    #[inline(never)] // Off the stack of EHLO's path (see `framed`).
    pub(super) fn auth(&mut self, mechanism: &str, initial: Option<&str>) -> Step {
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
    pub(super) fn auth_response(&mut self, exchange: AuthExchange, line: &[u8]) -> Step {
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
                notices: Vec::new(),
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
}
