//! The checks behind every fuzz target, shared with `tests/fuzz_corpus.rs`
//! so that `cargo test` on stable replays the saved corpus through exactly
//! the code the fuzzer ran. Each `pub fn` takes the raw fuzz input, drives
//! one part of smtpbox with it, and panics when an invariant breaks.
//!
//! Included by path (`#[path = "../checks.rs"] mod checks;`) from each
//! target in `fuzz/fuzz_targets/` and from the integration test: it may use
//! only `std` and the `smtpbox` library.

#![allow(dead_code)] // each fuzz target uses one check

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use smtpbox::auth::{self, Users};
use smtpbox::command::{self, Address, Command, ReversePath};
use smtpbox::config::{self, Config, Invocation, Mode};
use smtpbox::conn;
use smtpbox::data::{self, BareLf, ContentSink, DataEnd, DataReader};
use smtpbox::delivery::{ContentRules, DeliveryError, Discard, Draft, Store, Target};
use smtpbox::framer::{self, Frame, Framer};
use smtpbox::reply::Reply;
use smtpbox::session::{Action, Authenticator, Peer, Services, Session, Step};
use smtpbox::transport::{Handshake, Transport};

// ---- command_parse: the command-line parser ----

/// `input` is one command line without its CRLF. The parser never panics;
/// an error is a well-formed 5xx reply; upper-casing the verb changes
/// nothing (RFC 5321 §2.4); a parsed address prints as text that parses
/// back to the same address; xtext values survive re-encoding.
pub fn command_parse(input: &[u8]) {
    let result = command::parse(input);
    assert_eq!(command::parse(&upper_verb(input)), result, "verb case");
    let command = match result {
        Ok(command) => command,
        Err(reply) => {
            check_reply(&reply);
            assert!(reply.code >= 500, "parse error {reply} is not 5xx");
            assert_eq!(reply.lines().count(), 1, "{reply}");
            return;
        }
    };
    match command {
        Command::Helo(name) | Command::Ehlo(name) => {
            assert!(!name.is_empty());
            assert!(!name.chars().any(|c| c.is_whitespace() || c.is_control()));
        }
        Command::Mail { from, params } => {
            if let ReversePath::Address(a) = &from {
                reparses(a, "MAIL FROM:", |c| match c {
                    Command::Mail {
                        from: ReversePath::Address(b),
                        ..
                    } => Some(b),
                    _ => None,
                });
            }
            for (key, value) in [("AUTH", &params.auth), ("ENVID", &params.envid)] {
                if let Some(value) = value {
                    xtext_reparses(key, value, |c| match c {
                        Command::Mail { params, .. } if key == "AUTH" => params.auth,
                        Command::Mail { params, .. } => params.envid,
                        _ => None,
                    });
                }
            }
        }
        Command::Rcpt { to, params } => {
            reparses(&to, "RCPT TO:", |c| match c {
                Command::Rcpt { to, .. } => Some(to),
                _ => None,
            });
            if let Some(orcpt) = &params.orcpt {
                xtext_reparses("ORCPT", orcpt, |c| match c {
                    Command::Rcpt { params, .. } => params.orcpt,
                    _ => None,
                });
            }
        }
        Command::Auth { mechanism, initial } => {
            assert!((1..=20).contains(&mechanism.len()), "{mechanism:?}");
            assert!(mechanism
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
            if let Some(initial) = initial {
                assert!(initial.bytes().all(|b| b.is_ascii_graphic()));
            }
        }
        _ => {}
    }
}

/// `input` with the verb (the first word, as `parse` splits it) upper-cased.
fn upper_verb(input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let start = input
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(input.len());
    let end = input[start..]
        .iter()
        .position(|&b| b == b' ')
        .map_or(input.len(), |i| start + i);
    out[start..end].make_ascii_uppercase();
    out
}

/// The address as smtpbox prints it (headers, logs, replies) holds no
/// control character (RFC 5321 §4.1.2 allows none: a CR or LF would inject
/// a header line) and parses back to the same address. The round trip is
/// skipped when the printed path is over the 256-octet limit (RFC 5321
/// §4.5.3.1.3): an IPv6 literal may print longer than it was sent.
fn reparses(address: &Address, verb: &str, pick: impl Fn(Command) -> Option<Address>) {
    let text = address.to_string();
    assert!(!text.chars().any(char::is_control), "control in {text:?}");
    if text.len() + 2 > 256 {
        return;
    }
    let line = format!("{verb}<{text}>");
    match command::parse(line.as_bytes()) {
        Ok(c) => assert_eq!(pick(c).as_ref(), Some(address), "{line:?}"),
        Err(r) => panic!("{line:?} printed from {address:?} does not parse: {r}"),
    }
}

/// An xtext value (RFC 3461 §4), encoded again, decodes to itself.
fn xtext_reparses(key: &str, value: &str, pick: impl Fn(Command) -> Option<String>) {
    let mut encoded = String::new();
    for (i, b) in value.bytes().enumerate() {
        // ORCPT's addr-type must come before a literal ';' (RFC 3461 §4.2).
        if (0x21..=0x7e).contains(&b) && b != b'+' && b != b'=' && (i > 0 || b != b';') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("+{b:02X}"));
        }
    }
    let line = match key {
        "ORCPT" => format!("RCPT TO:<a@b> ORCPT={encoded}"),
        _ => format!("MAIL FROM:<> {key}={encoded}"),
    };
    match command::parse(line.as_bytes()) {
        Ok(c) => assert_eq!(pick(c).as_deref(), Some(value), "{line:?}"),
        Err(r) => panic!("{line:?} does not parse: {r}"),
    }
}

/// A reply as the wire sees it: a 2xx–5xx code, text without line breaks,
/// and an enhanced status code of the same class (RFC 2034, RFC 3463),
/// except on the replies that carry none: the greeting (220), the HELO and
/// EHLO replies (250), AUTH challenges (334) and the DATA go-ahead (354).
pub fn check_reply(reply: &Reply) {
    assert!((200..=599).contains(&reply.code), "{reply:?}");
    assert!(reply.lines().next().is_some(), "{reply:?}");
    for line in reply.lines() {
        assert!(!line.contains(['\r', '\n']), "line break in {reply:?}");
    }
    let Some(status) = reply.status else {
        assert!(
            [220, 250, 334, 354].contains(&reply.code),
            "no enhanced code: {reply:?}"
        );
        return;
    };
    // The type makes the form class.subject.detail; the class must still
    // be the code's (the constructors check it when compiled).
    assert_eq!(
        status.class() as u16,
        reply.code / 100,
        "class differs: {reply:?}"
    );
}

// ---- data_automaton: DATA end detection and dot-unstuffing ----

/// Input: a mode byte (bit 0: normalize, else reject; bit 1: lf_session),
/// a byte that picks how the rest is cut into reads, then the content.
///
/// The automaton must agree with [`reference_data`], a plain line-by-line
/// RFC 5321 §4.5.2 reader, on where the data ends, what is stored, and
/// whether a bare CR or LF was seen, however the input is cut; so must
/// [`data::read_data`] over a small, stuttering buffer, which must also
/// leave the bytes after the end unread.
pub fn data_automaton(input: &[u8]) {
    let [mode, cut, content @ ..] = input else {
        return;
    };
    let normalize = mode & 1 == 1;
    let lf_session = mode & 2 == 2;
    let bare_lf = if normalize {
        BareLf::Normalize
    } else {
        BareLf::Reject
    };
    let want = reference_data(content, normalize, lf_session);
    check_end_marker(content, lf_session, want.end);

    // The automaton, fed in pieces.
    let mut reader = DataReader::new(bare_lf, lf_session);
    let (mut out, mut used, mut done) = (Vec::new(), 0, false);
    for piece in Cuts::new(content, *cut) {
        let (n, ended) = reader.feed(piece, &mut out);
        used += n;
        if ended {
            done = true;
            break;
        }
        assert_eq!(n, piece.len(), "stopped inside a piece without the end");
    }
    assert_eq!(done.then_some(used), want.end, "end of data");
    assert_eq!(out, want.content, "stored content");
    assert_eq!(reader.bare_line_ending_seen(), want.bare, "bare CR/LF seen");
    if done {
        assert_eq!(reader.feed(b".\r\n", &mut out), (0, true), "after the end");
    }

    // read_data over a BufReader with a tiny buffer and interrupted reads.
    let mut input =
        BufReader::with_capacity(usize::from(*cut % 61) + 1, Stutter::new(content, *cut));
    let mut reader = DataReader::new(bare_lf, lf_session);
    let mut sink = ContentSink::new(Vec::new(), u64::MAX);
    let end = loop {
        match data::read_data(&mut input, &mut reader, &mut sink) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other.expect("in-memory reads do not fail"),
        }
    };
    assert_eq!(
        end == DataEnd::Complete,
        want.end.is_some(),
        "read_data end"
    );
    assert_eq!(sink.size(), want.content.len() as u64);
    assert_eq!(sink.received_headers(), received_headers(&want.content));
    assert_eq!(sink.into_inner(), want.content, "read_data content");
    if let Some(end) = want.end {
        assert_eq!(rest(&mut input), &content[end..], "bytes after the end");
    }
}

/// What a DATA reader should make of some content.
#[derive(Debug)]
pub struct DataOutcome {
    /// Bytes consumed up to and including the end marker, if it came.
    pub end: Option<usize>,
    /// The stored (unstuffed, maybe normalized) content.
    pub content: Vec<u8>,
    /// A bare CR or bare LF appeared before the end.
    pub bare: bool,
}

/// The reference: cut the input into lines, one line at a time.
///
/// Lines end at CRLF; in normalize mode or an `lf_session` a bare LF ends
/// a line too (SPEC §6). A line that is just `.` ends the data when its
/// ending is CRLF and the line before did not end in a bare LF, or, in an
/// lf_session, when its ending is a bare LF and the line before did not end
/// in CRLF. Every other line loses one leading dot (RFC 5321 §4.5.2) and is
/// stored with its ending (CRLF for a bare LF in normalize mode). An
/// unfinished last line is stored as far as it goes, except that the CR of
/// a line `.` CR is held back: it may be the end marker.
pub fn reference_data(input: &[u8], normalize: bool, lf_session: bool) -> DataOutcome {
    #[derive(PartialEq)]
    enum Ending {
        Start,
        Crlf,
        Lf,
    }
    let lf_ends_lines = normalize || lf_session;
    let mut content = Vec::new();
    let (mut start, mut before) = (0, Ending::Start);
    loop {
        let newline = (start..input.len()).find(|&i| {
            input[i] == b'\n' && (lf_ends_lines || (i > start && input[i - 1] == b'\r'))
        });
        let Some(nl) = newline else {
            let line = &input[start..];
            if line != b".\r" {
                content.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            }
            let decided = input.len() - usize::from(input.ends_with(b"\r"));
            return DataOutcome {
                end: None,
                content,
                bare: has_bare(input, decided),
            };
        };
        let ending = if nl > start && input[nl - 1] == b'\r' {
            Ending::Crlf
        } else {
            Ending::Lf
        };
        let line = &input[start..nl + 1 - if ending == Ending::Crlf { 2 } else { 1 }];
        let ends = line == b"."
            && match ending {
                Ending::Crlf => before != Ending::Lf,
                _ => lf_session && before != Ending::Crlf,
            };
        if ends {
            return DataOutcome {
                end: Some(nl + 1),
                content,
                bare: has_bare(input, nl),
            };
        }
        content.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        if ending == Ending::Crlf || normalize {
            content.extend_from_slice(b"\r\n");
        } else {
            content.push(b'\n');
        }
        before = ending;
        start = nl + 1;
    }
}

/// A bare LF (no CR before it) or a bare CR (no LF after it) among the first
/// `upto` bytes of `input`.
fn has_bare(input: &[u8], upto: usize) -> bool {
    (0..upto).any(|i| match input[i] {
        b'\n' => i == 0 || input[i - 1] != b'\r',
        b'\r' => input.get(i + 1) != Some(&b'\n'),
        _ => false,
    })
}

/// The end, when there is one, is the first real end marker: `.` CRLF at
/// the start or CRLF `.` CRLF; in an lf_session also `.` LF at the start or
/// a bare LF followed by `.` LF. Nothing else ever ends the data (SPEC §6),
/// and a real marker always does.
fn check_end_marker(input: &[u8], lf_session: bool, end: Option<usize>) {
    let marker_at = |n: usize| {
        let crlf = input[..n].ends_with(b"\r\n.\r\n") || &input[..n] == b".\r\n";
        let lf = input[..n] == *b".\n"
            || (input[..n].ends_with(b"\n.\n") && (n == 3 || input[n - 4] != b'\r'));
        crlf || (lf_session && lf)
    };
    let first = (1..=input.len()).find(|&n| marker_at(n));
    assert_eq!(end, first, "end of data is not the first real marker");
}

/// `Received:` lines in the header section of stored content, as the
/// content sink counts them (SPEC §6: over 100 is a mail loop).
fn received_headers(content: &[u8]) -> usize {
    let mut count = 0;
    let lines: Vec<&[u8]> = content.split(|&b| b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let complete = i + 1 < lines.len();
        if complete && (line.is_empty() || *line == b"\r") {
            break;
        }
        if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:") {
            count += 1;
        }
    }
    count
}

// ---- bdat_framing: BDAT chunks ----

/// Input: a byte for the read pattern, two little-endian u16 chunk sizes,
/// a byte for the size limit, then the stream. Two chunks are read back to
/// back: each takes exactly its size (or all that is left, then EOF), byte
/// for byte, and the rest of the stream stays unread.
pub fn bdat_framing(input: &[u8]) {
    let [cut, a0, a1, b0, b1, limit, stream @ ..] = input else {
        return;
    };
    let sizes = [
        u64::from(u16::from_le_bytes([*a0, *a1])),
        // A huge size must simply read to EOF.
        match u16::from_le_bytes([*b0, *b1]) {
            0xffff => u64::MAX,
            n => u64::from(n),
        },
    ];
    let limit = u64::from(*limit) * 4;
    let mut input =
        BufReader::with_capacity(usize::from(*cut % 61) + 1, Stutter::new(stream, *cut));
    let mut at = 0;
    for size in sizes {
        let mut sink = ContentSink::new(Vec::new(), limit);
        let end = loop {
            match data::read_bdat(&mut input, size, &mut sink) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other.expect("in-memory reads do not fail"),
            }
        };
        let left = (stream.len() - at) as u64;
        let took = size.min(left) as usize;
        let chunk = &stream[at..at + took];
        assert_eq!(end == DataEnd::Complete, size <= left, "chunk end");
        assert_eq!(sink.size(), took as u64, "chunk size");
        assert_eq!(sink.oversized(), took as u64 > limit, "oversized");
        let stored = sink.into_inner();
        assert!(chunk.starts_with(&stored), "stored bytes differ");
        assert!(stored.len() as u64 <= limit, "stored past the limit");
        if took as u64 <= limit {
            assert_eq!(stored, chunk, "chunk not stored whole");
        }
        at += took;
        if end == DataEnd::Eof {
            return;
        }
    }
    assert_eq!(rest(&mut input), &stream[at..], "bytes after the chunks");
}

// ---- config_parse: the config file ----

/// `input` is a config file. Loading never panics; an error names the file
/// and a line that exists; a loaded config has its defaults filled in and
/// routes any of its own names.
pub fn config_parse(input: &[u8]) {
    // Config::load refuses a file that is not UTF-8 before parsing it.
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let path = Path::new("fuzz.conf");
    let result = Config::parse(text, path);
    let config = match result {
        Ok(config) => config,
        Err(e) => {
            let message = e.to_string();
            let whole_config = [
                "no maildir configured",
                "tls_cert and tls_key go together",
                "listener ",
            ];
            if whole_config.iter().any(|m| message.starts_with(m)) {
                return;
            }
            let prefix = format!("{}:", path.display());
            let rest = message
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("error does not name the file: {message}"));
            let line = rest.split(':').next().and_then(|n| n.parse::<usize>().ok());
            if let Some(line) = line {
                let lines = String::from_utf8_lossy(input).lines().count();
                assert!((1..=lines).contains(&line), "no line {line}: {message}");
            }
            return;
        }
    };
    assert!(!config.hostname.is_empty());
    assert!(!config.listen.is_empty());
    assert!(!config.domains.is_empty());
    assert!(config.maildir.is_some() || !config.mailboxes.is_empty());
    assert_eq!(config.tls_cert.is_some(), config.tls_key.is_some());
    assert!(config.limits.max_message_size >= 1 && config.limits.max_recipients >= 1);
    assert!(config.max_connections >= 1 && config.max_connections_per_ip >= 1);
    assert!(config.limits.max_errors >= 1 && !config.limits.timeout.is_zero());
    // Route every name the file mentions, at every local domain.
    let names = config.mailboxes.iter().map(|(n, _)| n.as_str());
    let names = names.chain(
        config
            .aliases
            .iter()
            .flat_map(|(n, t)| [n.as_str(), t.as_str()]),
    );
    for name in names {
        let local = name.rsplit_once('@').map_or(name, |(l, _)| l);
        for domain in config.domains.iter().map(String::as_str).chain([""]) {
            let text = match domain {
                "" => local.to_string(),
                d => format!("{local}@{d}"),
            };
            if let Ok(to) = command::parse_address(&text) {
                let _ = smtpbox::routing::route(&config.routes(), &to, None);
            }
        }
    }
}

// ---- users_parse: the users file and its crypt hashes ----

/// `input` is a users file. Parsing never panics; it counts one user per
/// entry line; errors name the origin and an existing line; `Debug` never
/// shows a hash (SPEC §9). When the text holds a `#verify` line, every
/// entry's hash is also checked against a password (only for hashes of at
/// most 5000 rounds, so one input stays cheap).
pub fn users_parse(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let entries: Vec<(&str, &str)> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim_start().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| {
            let (name, rest) = l.split_once(':').unwrap_or((l, ""));
            (name, rest.split(':').next().unwrap_or_default())
        })
        .collect();
    let users = match Users::parse(text, "users") {
        Ok(users) => users,
        Err(e) => {
            let line = e
                .strip_prefix("users:")
                .and_then(|r| r.split(':').next())
                .and_then(|n| n.parse::<usize>().ok());
            let line = line.unwrap_or_else(|| panic!("error does not name a line: {e}"));
            assert!(
                (1..=text.lines().count()).contains(&line),
                "no line {line}: {e}"
            );
            return;
        }
    };
    assert_eq!(users.len(), entries.len(), "one user per entry line");
    let debug = format!("{users:?}");
    if !entries.iter().any(|(name, _)| name.contains('$')) {
        assert!(!debug.contains("$5$") && !debug.contains("$6$"), "{debug}");
    }
    if !text.lines().any(|l| l.trim() == "#verify") {
        return;
    }
    // At most two crypt runs per input: each costs milliseconds.
    for (name, hash) in entries.into_iter().take(2) {
        let rounds = hash
            .split('$')
            .find_map(|part| part.strip_prefix("rounds="))
            .map_or(Some(0), |n| n.parse::<u64>().ok());
        if rounds.is_some_and(|r| r <= 5000) {
            let ok = auth::sha_crypt_verify(b"fuzz", hash);
            assert_eq!(users.verify(name, b"fuzz"), ok, "verify {name}");
        }
    }
}

// ---- auth_decode: SASL PLAIN / LOGIN responses and base64 ----

/// `input` is one AUTH response line. Strict base64 decodes only canonical
/// text (encoding the result gives the input back); any bytes survive an
/// encode/decode round trip; PLAIN and LOGIN decoding return only
/// well-formed credentials.
pub fn auth_decode(input: &[u8]) {
    if let Some(decoded) = auth::decode_base64(input) {
        assert_eq!(
            auth::encode_base64(&decoded).as_bytes(),
            input,
            "not canonical"
        );
    }
    let encoded = auth::encode_base64(input);
    assert_eq!(
        auth::decode_base64(encoded.as_bytes()).as_deref(),
        Some(input)
    );
    match auth::decode_response(input) {
        Err(auth::AuthError::Cancelled) => assert_eq!(input, b"*"),
        Err(_) => assert_ne!(input, b"*"),
        Ok(bytes) => assert_eq!(auth::decode_base64(input), Some(bytes)),
    }
    if let Ok(c) = auth::decode_plain(input) {
        assert!(!c.user.is_empty() && !c.password.is_empty());
        assert!(!c.user.contains('\0') && !c.password.contains(&0));
        assert!(
            !format!("{c:?}").contains("password: ["),
            "Debug shows the password"
        );
    }
    if let Ok(user) = auth::decode_login_user(input) {
        assert!(!user.is_empty() && !user.contains('\0'));
    }
}

// ---- framer: command lines from bytes ----

/// Input: a byte that picks how the rest is cut into reads, then what a
/// client sends. Whether pushed whole or in pieces, the framer gives the
/// frames of [`reference_lines`] with their CRLF and NUL flags; each push
/// uses the bytes through the first LF, or all of them; a line that began
/// in the bytes pushed comes back as a slice of them (no copy); and the
/// framer is mid-line exactly when bytes follow the last LF.
pub fn framer(input: &[u8]) {
    let [cut, stream @ ..] = input else {
        return;
    };
    let want = reference_lines(stream);
    let whole = std::iter::once(stream).filter(|s| !s.is_empty());
    let pieces: [Box<dyn Iterator<Item = &[u8]>>; 2] =
        [Box::new(whole), Box::new(Cuts::new(stream, *cut))];
    for pieces in pieces {
        let mut framer = Framer::new();
        let mut got = Vec::new();
        for piece in pieces {
            let mut rest = piece;
            while !rest.is_empty() {
                let began_here = !framer.mid_line();
                let lf = rest.iter().position(|&b| b == b'\n');
                let (used, frame) = framer.push(rest);
                assert_eq!(used, lf.map_or(rest.len(), |i| i + 1), "bytes used");
                match frame {
                    None => assert!(lf.is_none(), "an LF and no frame"),
                    Some(Frame::TooLong) => got.push(None),
                    Some(Frame::Line(line)) => {
                        assert_eq!(line.nul, line.text.contains(&0), "NUL flag");
                        if began_here {
                            let inside = rest.as_ptr_range();
                            assert!(inside.contains(&line.text.as_ptr()) || line.text.is_empty());
                        }
                        got.push(Some((line.text.to_vec(), line.crlf)));
                    }
                }
                rest = &rest[used..];
            }
        }
        assert_eq!(got, want, "frames");
        let tail = stream
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        assert_eq!(
            framer.mid_line(),
            tail < stream.len(),
            "mid-line at the end"
        );
    }
}

/// The reference: split at each LF; one CR before the LF is the CRLF; a
/// line over `MAX_LINE` bytes without its ending is too long (None); the
/// bytes after the last LF are no line yet.
pub fn reference_lines(stream: &[u8]) -> Vec<Option<(Vec<u8>, bool)>> {
    let mut lines: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    lines.pop(); // after the last LF
    lines
        .into_iter()
        .map(|line| {
            let (text, crlf) = match line.strip_suffix(b"\r") {
                Some(text) => (text, true),
                None => (line, false),
            };
            (text.len() <= framer::MAX_LINE).then(|| (text.to_vec(), crlf))
        })
        .collect()
}

// ---- session: the whole session, over the production driver ----

/// Input: a byte of session options, then what a client sends. The
/// session and its driver are production's (`conn::serve_tapped`, which
/// every start mode runs); the target differs only in its transport (the
/// input in reads of 512 bytes, the connection's command buffer, or with
/// option bit 5 of 1 to 16; a STARTTLS that pretends) and its store (the
/// delivery seam's [`Discard`], whose content rules decide; nothing is
/// written: the Maildir part is `maildir.rs`'s tests').
///
/// Every reply is well formed ([`check_reply`]); the trace headers of a
/// message are exactly two CRLF-terminated lines (no header injection);
/// the session closes after `max_errors` bad commands and after three AUTH
/// failures; a close comes with a 221, 421, 521 or 554 reply; nothing is
/// read after it; a recipient that gets `250 2.1.5` is local.
pub fn session(input: &[u8]) {
    let [options, stream @ ..] = input else {
        return;
    };
    let options = *options;
    let config = session_config(options & 8 == 8);
    let services = Services {
        store: Arc::new(FuzzStore),
        users: (options & 2 == 2).then(|| Arc::new(Alice) as Arc<dyn Authenticator>),
        tls: options & 1 == 1,
    };
    let remote = if options & 4 == 4 {
        "127.0.0.1:40000"
    } else {
        "192.0.2.7:40000"
    };
    let peer = Peer::network(remote.parse().ok(), "192.0.2.25:25".parse().ok());
    let mode = if options & 16 == 16 {
        Mode::Submission
    } else {
        Mode::Smtp
    };
    let max_errors = config.limits.max_errors;
    let (auth_configured, tls_offered) = (services.users.is_some(), services.tls);
    let loopback = peer.is_loopback();
    let policy = config::Policy::new(&config, None, mode);
    let session = Box::new(Session::new(config, services, peer, &policy));
    let closed = Arc::new(AtomicBool::new(false));
    let transport = FuzzWire {
        input: stream.to_vec(),
        at: 0,
        reads: ReadSizes::new(options),
        closed: Arc::clone(&closed),
    };
    let handshake = tls_offered.then(|| Arc::new(Pretend) as Arc<dyn Handshake>);

    let mut greeted = false;
    let (mut errors, mut auth_failures) = (0, 0);
    // What the client has achieved, as the replies tell it.
    let (mut tls, mut authenticated) = (false, false);
    // The step answers message content, not a command line.
    let mut after_content = false;
    let mut tap = |session: &Session, step: &Step| {
        assert!(!closed.load(Ordering::Relaxed), "a step after the close");
        if !greeted {
            greeted = true;
            assert_eq!(step.replies.len(), 1);
            check_reply(&step.replies[0]);
            assert_eq!((step.replies[0].code, step.replies[0].status), (220, None));
            assert_eq!(step.action, Action::Continue);
            return;
        }
        for reply in &step.replies {
            check_reply(reply);
            assert!(
                reply.status.is_some() || [250, 334, 354].contains(&reply.code),
                "a reply without an enhanced code: {reply:?}"
            );
            let status = reply.status.map(|s| s.to_string());
            match (reply.code, status.as_deref()) {
                (334, _) => assert!(auth_configured, "AUTH without a users file"),
                // RFC 4954 §6: only when the users file cannot be read.
                (454, status) => assert_eq!(status, Some("4.7.0"), "{reply:?}"),
                (235, _) => {
                    // SPEC §5: no AUTH in clear text from a remote client.
                    assert!(tls || loopback, "AUTH succeeded without TLS");
                    authenticated = true;
                }
                // SPEC §2: submission wants STARTTLS and AUTH before MAIL.
                (250, Some("2.1.0")) if mode == Mode::Submission => {
                    assert!(tls && authenticated, "MAIL accepted on submission")
                }
                // SPEC §4: smtpbox never relays.
                (250, Some("2.1.5")) => check_local_recipient(session.recipients().last()),
                // RFC 2920 §3.1: only a remote client is held to it.
                (554, Some("5.5.0")) => assert!(!loopback, "a loopback client held to RFC 2920"),
                _ => {}
            }
        }
        if let Action::Close(_) = step.action {
            let last = step.replies.last().map(|r| r.code);
            assert!(
                matches!(last, Some(221 | 421 | 521 | 554)),
                "close without 221/421/521/554: {:?}",
                step.replies
            );
            closed.store(true, Ordering::Relaxed);
            return;
        }
        if !after_content {
            if step.replies.iter().any(|r| r.code == 535) {
                auth_failures += 1;
            }
            if step.replies.iter().any(|r| r.code >= 500) {
                errors += 1;
            }
            assert!(errors < max_errors, "still open after {errors} errors");
            assert!(auth_failures < 3, "still open after 3 AUTH failures");
        }
        if step.action == Action::StartTls {
            assert!(tls_offered && !tls, "STARTTLS when not offered");
            (tls, authenticated) = (true, false);
        }
        after_content = session.reading_content();
    };
    conn::serve_tapped(Box::new(transport), session, handshake, Some(&mut tap));
    assert!(greeted, "no greeting");
}

/// A recipient that got `250 2.1.5` is local (SPEC §4): no domain, the
/// configured domain, or an address literal naming this box.
fn check_local_recipient(address: Option<&str>) {
    let Some(address) = address else {
        panic!("250 2.1.5 and no recipient in the transaction");
    };
    let line = format!("RCPT TO:<{address}>");
    let Ok(Command::Rcpt { to, .. }) = command::parse(line.as_bytes()) else {
        panic!("an accepted recipient that does not parse back: {address:?}");
    };
    let local = match &to.domain {
        None => true,
        Some(command::Domain::Name(name)) => name.to_lowercase() == "example.com",
        Some(command::Domain::Literal(ip)) => {
            let ip = ip.to_canonical();
            ip.is_loopback() || ip == std::net::IpAddr::from([192, 0, 2, 25])
        }
    };
    assert!(local, "relayed to {to:?}");
}

/// The session target's store: [`Discard`], after checking that the
/// message has somewhere to go and that its trace headers are exactly
/// `Return-Path:` and `Received:`, each one line. Maildirs whose name
/// ends in `full` are full.
struct FuzzStore;

impl Store for FuzzStore {
    fn is_full(&self, target: &Target) -> bool {
        matches!(target, Target::Maildir { root, .. } if root.ends_with("full"))
    }

    fn open(
        &self,
        targets: Vec<Target>,
        rules: ContentRules,
        trace: &dyn Fn(&str) -> String,
    ) -> Result<Box<dyn Draft>, DeliveryError> {
        assert!(!targets.is_empty(), "no Maildir to spool into");
        let headers = trace("FUZZID");
        let lines: Vec<&str> = headers.split_inclusive("\r\n").collect();
        assert_eq!(lines.len(), 2, "{headers:?}");
        assert!(lines[0].starts_with("Return-Path: <"), "{headers:?}");
        assert!(lines[1].starts_with("Received: from "), "{headers:?}");
        for line in lines {
            let body = &line[..line.len() - 2];
            assert!(
                !body.contains(['\r', '\n']),
                "header injection: {headers:?}"
            );
        }
        Discard.open(targets, rules, trace)
    }
}

/// The session target's transport: the client's bytes in reads of the
/// sizes [`ReadSizes`] picks; what the server writes is dropped (each
/// reply was checked on its way out).
struct FuzzWire {
    input: Vec<u8>,
    at: usize,
    reads: ReadSizes,
    /// The session said close: reading now is a bug.
    closed: Arc<AtomicBool>,
}

impl Read for FuzzWire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        assert!(!self.closed.load(Ordering::Relaxed), "read after the close");
        let n = self
            .reads
            .next()
            .min(buf.len())
            .min(self.input.len() - self.at);
        buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Write for FuzzWire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for FuzzWire {
    fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }

    fn input_pending(&mut self) -> bool {
        false
    }
}

/// STARTTLS that succeeds at once, keeping the plain transport: the
/// session's states after TLS are reached without a handshake.
struct Pretend;

impl Handshake for Pretend {
    fn accept(&self, plain: Box<dyn Transport>) -> Result<(Box<dyn Transport>, String), String> {
        Ok((plain, "TLSv1.3 (fuzz)".to_string()))
    }
}

/// How many bytes each read hands the driver in the session target.
struct ReadSizes {
    state: u32,
    small: bool,
}

impl ReadSizes {
    fn new(options: u8) -> ReadSizes {
        ReadSizes {
            state: u32::from(options) | 0x100,
            small: options & 32 == 32,
        }
    }

    fn next(&mut self) -> usize {
        if !self.small {
            return 512;
        }
        // xorshift32
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        (1 + self.state % 16) as usize
    }
}

/// The session's config: small limits so the fuzzer reaches them, a few
/// mailboxes and an alias. `reject`: `bare_lf = reject`.
fn session_config(reject: bool) -> Arc<Config> {
    static CONFIGS: OnceLock<[Arc<Config>; 2]> = OnceLock::new();
    let configs = CONFIGS.get_or_init(|| {
        let args: Vec<String> = [
            "-c",
            "/dev/null",
            "-m",
            "/nonexistent/smtpbox-fuzz/default",
            "-H",
            "mx.example",
            "-d",
            "example.com",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // An empty default path never exists: the host's config stays out.
        let mut config = match config::from_args_with_default(&args, Path::new("")) {
            Ok(Invocation::Run(config, _)) => config,
            other => panic!("session config: {other:?}"),
        };
        config.limits.max_message_size = 1000;
        config.limits.max_recipients = 3;
        config.limits.max_errors = 10;
        let boxes = [
            ("alice", "alice"),
            ("full", "full"),
            ("bob@example.com", "bob"),
        ];
        config.mailboxes = boxes
            .iter()
            .map(|(name, dir)| {
                (
                    name.to_string(),
                    Path::new("/nonexistent/smtpbox-fuzz").join(dir),
                )
            })
            .collect();
        config.aliases = vec![("root".to_string(), "alice".to_string())];
        let mut reject = config.clone();
        reject.bare_lf = BareLf::Reject;
        config.bare_lf = BareLf::Normalize;
        [Arc::new(config), Arc::new(reject)]
    });
    configs[usize::from(reject)].clone()
}

/// One user, `alice`, password `secret` (no crypt: the fuzzer stays fast);
/// asking for user `down` finds the users file unreadable.
struct Alice;

impl Authenticator for Alice {
    fn verify(&self, user: &str, password: &[u8]) -> Result<bool, String> {
        if user == "down" {
            return Err("users: cannot read: not a regular file".into());
        }
        Ok(user == "alice" && password == b"secret")
    }
}

// ---- Shared helpers ----

/// Cuts `input` into pieces whose sizes a small generator seeded with
/// `seed` picks: 1..=16 bytes when the seed's top bit is set, else 1..=300.
struct Cuts<'a> {
    rest: &'a [u8],
    state: u32,
    max: u32,
}

impl<'a> Cuts<'a> {
    fn new(input: &'a [u8], seed: u8) -> Cuts<'a> {
        Cuts {
            rest: input,
            state: u32::from(seed) | 0x100,
            max: if seed & 0x80 != 0 { 16 } else { 300 },
        }
    }
}

impl<'a> Iterator for Cuts<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        // xorshift32
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        let n = (1 + self.state % self.max) as usize;
        let (piece, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        Some(piece)
    }
}

/// A reader that returns short reads of varying size and, every few calls,
/// `Interrupted`, as a socket may.
struct Stutter<'a> {
    cuts: Cuts<'a>,
    pending: &'a [u8],
    calls: u32,
    interrupt_every: u32,
}

impl<'a> Stutter<'a> {
    fn new(input: &'a [u8], seed: u8) -> Stutter<'a> {
        Stutter {
            cuts: Cuts::new(input, seed),
            pending: &[],
            calls: 0,
            interrupt_every: u32::from(seed % 5),
        }
    }
}

impl Read for Stutter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.interrupt_every > 1 && self.calls % self.interrupt_every == 0 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if self.pending.is_empty() {
            self.pending = self.cuts.next().unwrap_or_default();
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending = &self.pending[n..];
        Ok(n)
    }
}

/// Everything left in a reader.
fn rest<R: BufRead>(input: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        match input.read_to_end(&mut out) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => {
                other.expect("in-memory reads do not fail");
                return out;
            }
        }
    }
}
