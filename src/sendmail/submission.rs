//! Where the message goes: the running server's local socket, or the
//! delivery seam directly when no server answers there.

use super::*;

/// How long sendmail mode waits for the server on the local socket, at
/// most: a server that does not greet in this time is not answering.
pub(super) const SOCKET_TIMEOUT: Duration = Duration::from_secs(60);

/// The message as sendmail mode prepares it, whichever way it goes: the
/// header fields read so far, what was read past them, and who sends it.
pub(super) struct Prepared<'a> {
    pub(super) options: &'a Options,
    /// The header fields as given (`Bcc:` is dropped when writing).
    pub(super) fields: Vec<&'a [u8]>,
    /// Content read past the header section.
    pub(super) rest: &'a [u8],
    pub(super) user: &'a Invoker,
    /// The envelope sender as text, empty for `<>`.
    pub(super) sender: String,
    pub(super) host: &'a str,
}

impl Prepared<'_> {
    /// Writes the content: the fields but `Bcc:`, a `From:`, `Date:` and
    /// `Message-ID:` when missing, then the body, streamed from `input`.
    pub(super) fn write<R: BufRead>(
        &self,
        sink: &mut impl ContentWrite,
        id: &str,
        date: &str,
        input: &mut Input<'_, R>,
    ) -> Result<(), Failure> {
        let host = self.host;
        // Bcc: names hidden recipients; it is never stored.
        for field in self.fields.iter().filter(|f| !is(f, "Bcc")) {
            sink.write(field);
        }
        let has = |name| self.fields.iter().any(|f| is(f, name));
        if !has("From") {
            let address = if self.sender.is_empty() {
                qualified(&self.user.name, host).to_string()
            } else {
                self.sender.clone()
            };
            let from = from_header(&address, self.options.full_name.as_deref());
            sink.write(format!("From: {from}\r\n").as_bytes());
        }
        if !has("Date") {
            sink.write(format!("Date: {date}\r\n").as_bytes());
        }
        if !has("Message-ID") {
            sink.write(format!("Message-ID: <{id}@{host}>\r\n").as_bytes());
        }
        // A body that began with a line that is not a field needs its empty line.
        if !(self.rest.is_empty() || self.rest.starts_with(b"\r\n")) {
            sink.write(b"\r\n");
        }
        sink.write(self.rest);
        let mut chunk = Vec::new();
        while !input.done {
            chunk.clear();
            input.read(&mut chunk)?;
            sink.write(&chunk);
        }
        Ok(())
    }
}

/// Reads the header and the recipients, then hands the message to the
/// server on the local socket when it answered, else delivers it directly.
pub(super) fn receive<R: BufRead>(
    options: &Options,
    config: &Config,
    (user, sender): (&Invoker, &ReversePath),
    server: Option<Result<Submission, String>>,
    input: &mut Input<'_, R>,
) -> Result<(), Failure> {
    let direct = |message: &Prepared<'_>, recipients: &[Address], input: &mut Input<'_, R>| {
        deliver_directly(config, message, recipients, input)
    };
    let (buf, end) = input.read_header(config.limits.max_message_size)?;
    let (header, rest) = buf.split_at(end);
    let fields = fields(header);
    let recipients = recipients(options, &fields)?;
    let message = Prepared {
        options,
        fields,
        rest,
        user,
        sender: match sender {
            ReversePath::Address(address) => address.to_string(),
            ReversePath::Null => String::new(),
        },
        host: &config.hostname,
    };
    match server {
        // The server would take only max_recipients of them (452 4.5.3),
        // and a message goes to all its recipients or to none.
        Some(Ok(server)) if recipients.len() > config.limits.max_recipients => {
            server.quit();
            let cause = format!(
                "local socket: {} recipients, over max_recipients ({})",
                recipients.len(),
                config.limits.max_recipients
            );
            direct(&message, &recipients, input).map_err(|f| f.after(&cause))
        }
        Some(Ok(server)) => submit(server, config, &message, &recipients, input),
        Some(Err(cause)) => {
            log::info!("{cause}: delivering directly");
            direct(&message, &recipients, input).map_err(|f| f.after(&cause))
        }
        None => direct(&message, &recipients, input),
    }
}

/// Submits over SMTP on the local socket (SPEC §8). Replies map to the
/// exit statuses direct delivery gives for the same cause: a recipient
/// refused for good is EX_NOUSER (67) and nothing is sent; a message
/// refused for good (too big, a mail loop) EX_DATAERR (65); any 4xx, and
/// a connection lost on the way, EX_TEMPFAIL (75).
pub(super) fn submit<R: BufRead>(
    mut server: Submission,
    config: &Config,
    message: &Prepared<'_>,
    recipients: &[Address],
    input: &mut Input<'_, R>,
) -> Result<(), Failure> {
    let shown = config
        .local_socket
        .as_deref()
        .map_or(String::new(), |p| p.display().to_string());
    let lost = |e: io::Error| Exit::TempFail.with(format!("local socket {shown}: {e}"));
    let refused = |stage: &str, reply: &submit::ServerReply| {
        let exit = if reply.is_permanent() {
            Exit::DataErr
        } else {
            Exit::TempFail
        };
        exit.with(format!("local socket {shown}: {stage}: {reply}"))
    };
    let ehlo = server
        .command(&format!("EHLO {}", config.hostname))
        .map_err(lost)?;
    if !ehlo.is_positive() {
        return Err(refused("EHLO", &ehlo));
    }
    let utf8 = !message.sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
    let mail = format!(
        "MAIL FROM:<{}>{}",
        message.sender,
        if utf8 { " SMTPUTF8" } else { "" }
    );
    let reply = server.command(&mail).map_err(lost)?;
    if !reply.is_positive() {
        return Err(refused("MAIL", &reply));
    }
    let mut unknown = Vec::new();
    for rcpt in recipients {
        let reply = server.command(&format!("RCPT TO:<{rcpt}>")).map_err(lost)?;
        if reply.is_permanent() {
            unknown.push(format!("<{rcpt}>: {reply}"));
        } else if !reply.is_positive() {
            return Err(Exit::TempFail.with(format!("<{rcpt}>: {reply}")));
        }
    }
    if !unknown.is_empty() {
        server.quit();
        return Err(Exit::NoUser.with(unknown.join("; ") + "; nothing delivered"));
    }
    let reply = server.command("DATA").map_err(lost)?;
    if reply.code != 354 {
        return Err(refused("DATA", &reply));
    }
    // From here on, a failure drops the connection without the end
    // marker: the server then stores nothing.
    let id = delivery::unique_id();
    let date = crate::date::now_rfc5322();
    let mut sink = ContentSink::new(server.content(), u64::MAX);
    message.write(&mut sink, &id, &date, input)?;
    if let Some(e) = sink.take_error() {
        return Err(lost(e));
    }
    sink.into_inner().finish().map_err(lost)?;
    let reply = server.data_reply().map_err(lost)?;
    if !reply.is_positive() {
        return Err(refused("end of data", &reply));
    }
    server.quit();
    log::info!("submitted on local socket {shown}: {reply}");
    Ok(())
}

/// Routes, spools and delivers into the targets ourselves (as the
/// config's `user` when run as root: [`become_config_user`] came first).
pub(super) fn deliver_directly<R: BufRead>(
    config: &Config,
    message: &Prepared<'_>,
    recipients: &[Address],
    input: &mut Input<'_, R>,
) -> Result<(), Failure> {
    let targets = route_all(config, recipients)?;
    let routed: Vec<(String, Target)> = recipients
        .iter()
        .map(ToString::to_string)
        .zip(targets.iter().cloned())
        .collect();
    if targets.is_empty() {
        return Err(Exit::Usage.with("no recipients"));
    }
    let date = crate::date::now_rfc5322();
    let host = &config.hostname;
    let (sender, user) = (&message.sender, message.user);
    let trace = |id: &str| {
        format!(
            "Return-Path: <{sender}>\r\nReceived: by {host} (smtpbox) via sendmail id {id}\r\n\
             \t(uid {} user {}); {date}\r\n",
            user.uid, user.name,
        )
    };
    // SPEC §6's rules, as for SMTP; bare line endings are already CRLF.
    let rules = ContentRules {
        max_size: config.limits.max_message_size,
        bare_lf: BareLf::Normalize,
        max_received: delivery::MAX_RECEIVED,
    };
    let mut stored = delivery::Message::open(targets, rules, trace).map_err(Failure::delivery)?;
    let id = stored.id().to_string();
    message.write(&mut stored, &id, &date, input)?;
    let Stored {
        id,
        size,
        file_name,
    } = stored
        .finish()
        .map_err(|why| Failure::not_stored(why, config.limits.max_message_size))?;
    let to: Vec<String> = recipients.iter().map(|r| format!("<{r}>")).collect();
    log::info!(
        "{id} from=<{sender}> to={} size={size} proto=sendmail user={}",
        to.join(","),
        user.name
    );
    if notify::installed().is_some() {
        let stored = notify::Stored {
            id: &id,
            file_name: &file_name,
            sender,
            size,
            client: format!("local uid={} user={}", user.uid, user.name),
        };
        let notices = stored.notices(routed.iter().map(|(a, t)| (a.as_str(), t)));
        notify::send_all(&notices);
    }
    Ok(())
}
