//! The delivery seam: every way a message comes in (an SMTP session, the
//! local submission socket, sendmail mode) stores it through one
//! [`Message`], which is opened for its [`Target`]s, written, and finished
//! against its [`ContentRules`] (SPEC §6: size, bare line endings,
//! Received hops) into [`Stored`] (an ID) or [`NotStored`] (a [`Refusal`]
//! or a [`DeliveryError`]). How that is told, an SMTP reply or a sysexits
//! code, is the caller's business: nothing here knows a reply code.
//!
//! ```text
//!  Message::open(targets, rules, quota, trace) ──► write … write ──► finish
//!       │ spool file in the least target,              │             ├─► Ok(Stored { id, size })
//!       │ trace headers written first                  │             ├─► Err(Refused(rule))     nothing stored
//!       ▼                                              ▼             └─► Err(Failed(error))     nothing stored
//!  Err(DeliveryError)                        dropped: the spool is thrown away
//! ```
//!
//! Today every target is a Maildir, and [`crate::maildir`] does the durable
//! part (SPEC §7: spool file, fsync, a link into every `new/`, fsync of each
//! `new/`). The spool file goes into the least of the targets (by path),
//! so where it lives never depends on the order of the recipients.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::data::{BareLf, ContentSink, ContentWrite};
pub use crate::maildir::DeliveryError;
use crate::maildir::{self, Budget, Place, Spool};

/// Received headers beyond this mean a mail loop (RFC 5321 §6.3).
pub const MAX_RECEIVED: usize = 100;

/// Where a recipient's mail is stored ([`crate::routing`] decides).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// A Maildir (made when it is missing, SPEC §7), or the Maildir++
    /// folder `.FOLDER` in it; and what the Maildir may hold.
    Maildir {
        root: PathBuf,
        folder: Option<String>,
        budget: Budget,
    },
}

impl Target {
    /// A Maildir's inbox, without a budget.
    pub fn maildir(root: impl Into<PathBuf>) -> Target {
        Target::Maildir {
            root: root.into(),
            folder: None,
            budget: Budget::default(),
        }
    }

    /// The directory the message goes into: the Maildir, or its folder.
    pub fn dir(&self) -> PathBuf {
        match self {
            Target::Maildir { root, folder, .. } => match folder {
                Some(folder) => root.join(format!(".{folder}")),
                None => root.clone(),
            },
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dir().display())
    }
}

/// Where a session's messages go: the one seam between the protocol and
/// storage. The session opens a message through it for its targets,
/// writes the content into what it returns, and finishes it; it also asks
/// it whether a target is full at RCPT. [`Maildirs`] is the real one;
/// [`Discard`] measures content against its rules and keeps nothing (the
/// fuzz target, tests).
pub trait Store: Send + Sync {
    /// Whether `target`'s Maildir already holds its quota (SPEC §7). A
    /// target that cannot be measured is not full: delivery will tell.
    fn is_full(&self, target: &Target) -> bool;

    /// Opens a message for `targets` under `rules`, as [`Message::open`]
    /// does: `trace` makes the trace headers from the message ID.
    fn open(
        &self,
        targets: Vec<Target>,
        rules: ContentRules,
        trace: &dyn Fn(&str) -> String,
    ) -> Result<Box<dyn Draft>, DeliveryError>;
}

/// A message a [`Store`] opened: content goes in, then it is finished
/// (stored everywhere or nowhere) or dropped (nothing stored).
pub trait Draft: ContentWrite + Send {
    /// The DATA reader saw a bare CR or LF ([`crate::data::DataReader`]).
    fn note_bare_line_ending(&mut self);

    /// The content is complete: checks its rules, then stores it.
    fn finish(self: Box<Self>) -> Result<Stored, NotStored>;
}

/// The real store: durable Maildirs ([`Message`]).
pub struct Maildirs;

impl Store for Maildirs {
    fn is_full(&self, target: &Target) -> bool {
        match target {
            Target::Maildir { root, budget, .. } => maildir::maintenance::is_full(root, *budget),
        }
    }

    fn open(
        &self,
        targets: Vec<Target>,
        rules: ContentRules,
        trace: &dyn Fn(&str) -> String,
    ) -> Result<Box<dyn Draft>, DeliveryError> {
        Ok(Box::new(Message::open(targets, rules, trace)?))
    }
}

impl Draft for Message {
    fn note_bare_line_ending(&mut self) {
        Message::note_bare_line_ending(self);
    }

    fn finish(self: Box<Self>) -> Result<Stored, NotStored> {
        Message::finish(*self)
    }
}

/// A store that keeps nothing: content is measured against its rules
/// with the same code as a stored message's, and a message that keeps
/// them is "stored" under a fresh ID; no target is ever full. For the
/// fuzz `session` target and tests, which run the real driver and session
/// without a file system.
pub struct Discard;

impl Store for Discard {
    fn is_full(&self, _: &Target) -> bool {
        false
    }

    fn open(
        &self,
        _: Vec<Target>,
        rules: ContentRules,
        _trace: &dyn Fn(&str) -> String,
    ) -> Result<Box<dyn Draft>, DeliveryError> {
        // No file, so no trace headers to write.
        Ok(Box::new(Discarded {
            id: unique_id(),
            content: Content::new(io::sink(), rules),
        }))
    }
}

/// A message of the [`Discard`] store.
struct Discarded {
    id: String,
    content: Content<io::Sink>,
}

impl ContentWrite for Discarded {
    fn write(&mut self, bytes: &[u8]) {
        self.content.write(bytes);
    }
}

impl Draft for Discarded {
    fn note_bare_line_ending(&mut self) {
        self.content.note_bare_line_ending();
    }

    fn finish(self: Box<Self>) -> Result<Stored, NotStored> {
        let size = self.content.check().map_err(NotStored::Refused)?;
        Ok(Stored {
            id: self.id,
            size,
            file_name: String::new(),
        })
    }
}

/// A fresh message ID, unique as a stored message's (`SECONDS.MmicrosPpidQn`),
/// for a message that is not stored here (the `Message-ID:` sendmail mode
/// adds before handing a message to the local socket).
pub fn unique_id() -> String {
    maildir::unique_id()
}

/// The content rules of SPEC §6, checked on a complete message before it
/// is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRules {
    /// Content bytes allowed (trace headers excluded).
    pub max_size: u64,
    /// How DATA content treats bare line endings.
    pub bare_lf: BareLf,
    /// Received headers beyond this mean a mail loop.
    pub max_received: usize,
}

/// Why a complete message is not stored: the rule it broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Over `max_size`.
    TooBig,
    /// A bare CR or LF, and the rules say reject.
    BareLineEnding,
    /// More than `max_received` `Received:` headers.
    MailLoop,
}

/// What was seen of a message's content, for [`ContentRules::check`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ContentSummary {
    /// Content bytes, trace headers excluded, counting past the limit.
    pub size: u64,
    pub oversized: bool,
    pub bare_line_ending: bool,
    pub received_headers: usize,
}

impl ContentRules {
    /// Whether the message `summary` describes may be stored; the first
    /// rule broken, in the order of SPEC §6.
    pub fn check(&self, summary: &ContentSummary) -> Result<(), Refusal> {
        if summary.oversized {
            Err(Refusal::TooBig)
        } else if summary.bare_line_ending && self.bare_lf == BareLf::Reject {
            Err(Refusal::BareLineEnding)
        } else if summary.received_headers > self.max_received {
            Err(Refusal::MailLoop)
        } else {
            Ok(())
        }
    }
}

/// A message's content as it streams in, measured for its rules: written
/// into `W` up to the size limit (a [`ContentSink`]), with the bare line
/// ending the reader reports. [`Message`] is one over its spool file,
/// [`Discarded`] one over `io::Sink`.
#[derive(Debug)]
struct Content<W: Write> {
    sink: ContentSink<W>,
    rules: ContentRules,
    bare_line_ending: bool,
}

impl<W: Write> Content<W> {
    fn new(inner: W, rules: ContentRules) -> Content<W> {
        Content {
            sink: ContentSink::new(inner, rules.max_size),
            rules,
            bare_line_ending: false,
        }
    }

    /// The rules the content is checked against.
    fn rules(&self) -> &ContentRules {
        &self.rules
    }

    /// The DATA reader saw a bare CR or LF ([`crate::data::DataReader`]).
    fn note_bare_line_ending(&mut self) {
        self.bare_line_ending = true;
    }

    /// What was seen so far.
    fn summary(&self) -> ContentSummary {
        ContentSummary {
            size: self.sink.size(),
            oversized: self.sink.oversized(),
            bare_line_ending: self.bare_line_ending,
            received_headers: self.sink.received_headers(),
        }
    }

    /// The content is complete: its size, or the rule it broke.
    fn check(&self) -> Result<u64, Refusal> {
        let summary = self.summary();
        self.rules.check(&summary).map(|()| summary.size)
    }

    /// The writer, and the first error writing into it.
    fn into_parts(mut self) -> (W, Option<io::Error>) {
        let error = self.sink.take_error();
        (self.sink.into_inner(), error)
    }
}

impl<W: Write> ContentWrite for Content<W> {
    fn write(&mut self, bytes: &[u8]) {
        self.sink.write(bytes);
    }
}

/// A message stored: its ID (in the file name, the Received header and
/// the log) and its content bytes (trace headers excluded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub id: String,
    pub size: u64,
    /// The file's name in each target's `new/` (empty when nothing was
    /// stored: [`Discard`]).
    pub file_name: String,
}

/// Why a complete message was not stored. Nothing of it is left anywhere.
#[derive(Debug)]
pub enum NotStored {
    /// It broke a content rule: for good.
    Refused(Refusal),
    /// Storing it failed: for now (SPEC §7).
    Failed(DeliveryError),
}

/// One message on its way to its targets: the spool file (trace headers
/// first), its content rules, where it goes. Dropping a message that was
/// not finished throws its spool file away.
pub struct Message {
    content: Content<Spool>,
    /// Sorted, each once.
    targets: Vec<Target>,
}

impl Message {
    /// Opens a message for `targets` (each taken once, in any order):
    /// creates its spool file in the least target and writes into it the
    /// trace headers `trace` makes from the message ID. Each target's
    /// Maildir is held to its budget when the message is finished.
    pub fn open(
        targets: impl IntoIterator<Item = Target>,
        rules: ContentRules,
        trace: impl FnOnce(&str) -> String,
    ) -> Result<Message, DeliveryError> {
        let mut targets: Vec<Target> = targets.into_iter().collect();
        targets.sort_unstable();
        targets.dedup();
        // A folder's messages are spooled in its Maildir's tmp/.
        let Some(Target::Maildir { root: first, .. }) = targets.first() else {
            return Err(DeliveryError::io(
                Path::new("(no target)"),
                io::ErrorKind::NotFound.into(),
            ));
        };
        let mut spool = Spool::create(first)?;
        let trace = trace(spool.id());
        if let Err(e) = spool.write_all(trace.as_bytes()) {
            return Err(spool.error(e));
        }
        Ok(Message {
            content: Content::new(spool, rules),
            targets,
        })
    }

    /// The message ID.
    pub fn id(&self) -> &str {
        self.content.sink.get_ref().id()
    }

    /// The rules the content is checked against.
    pub fn rules(&self) -> &ContentRules {
        self.content.rules()
    }

    /// The DATA reader saw a bare CR or LF.
    pub fn note_bare_line_ending(&mut self) {
        self.content.note_bare_line_ending();
    }

    /// The content is complete: checks the rules, then stores the message
    /// durably in every target, or nowhere.
    pub fn finish(self) -> Result<Stored, NotStored> {
        let Message { content, targets } = self;
        let size = content.check().map_err(NotStored::Refused)?;
        let (spool, write_error) = content.into_parts();
        if let Some(e) = write_error {
            return Err(NotStored::Failed(spool.error(e)));
        }
        let dirs: Vec<PathBuf> = targets.iter().map(Target::dir).collect();
        let places: Vec<Place<'_>> = targets
            .iter()
            .zip(&dirs)
            .map(|(target, dir)| match target {
                Target::Maildir { root, budget, .. } => Place {
                    root,
                    dir,
                    budget: *budget,
                },
            })
            .collect();
        match maildir::deliver_to(spool, &places) {
            Ok((id, file_name)) => Ok(Stored {
                id,
                size,
                file_name,
            }),
            Err(e) => Err(NotStored::Failed(e)),
        }
    }
}

impl ContentWrite for Message {
    fn write(&mut self, bytes: &[u8]) {
        self.content.write(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A scratch directory for one test, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("smtpbox-delivery-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn maildir(&self, name: &str) -> Target {
            Target::maildir(self.0.join(name))
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn path(target: &Target) -> &Path {
        match target {
            Target::Maildir { root, .. } => root,
        }
    }

    fn rules() -> ContentRules {
        ContentRules {
            max_size: 2000,
            bare_lf: BareLf::Reject,
            max_received: MAX_RECEIVED,
        }
    }

    fn trace(id: &str) -> String {
        format!("Received: by test id {id}\r\n")
    }

    /// Nothing of a message left in `target`'s `tmp/` or `new/`.
    fn assert_empty(target: &Target) {
        for sub in ["tmp", "new"] {
            let dir = path(target).join(sub);
            assert!(names(&dir).is_empty(), "{}", dir.display());
        }
    }

    #[test]
    fn a_stored_message_is_its_trace_then_its_content_in_every_target() {
        let s = Scratch::new("stored");
        let (a, b) = (s.maildir("a"), s.maildir("b"));
        let mut message = Message::open([b.clone(), a.clone(), b.clone()], rules(), trace).unwrap();
        let id = message.id().to_string();
        let content = b"Subject: x\r\n\r\nhello\r\n";
        for piece in content.chunks(5) {
            message.write(piece);
        }
        let stored = message.finish().unwrap();
        assert_eq!(
            (stored.id.as_str(), stored.size),
            (id.as_str(), content.len() as u64),
            "the size counts the content, not the trace"
        );
        // The name in new/ counts the whole file (Maildir++ S=).
        let whole = content.len() + trace(&id).len();
        assert!(stored.file_name.starts_with(&id), "{}", stored.file_name);
        assert!(
            stored.file_name.ends_with(&format!(",S={whole}")),
            "{}",
            stored.file_name
        );
        assert!(a.dir().join("new").join(&stored.file_name).is_file());
        let mut expected = trace(&id).into_bytes();
        expected.extend_from_slice(content);
        for target in [&a, &b] {
            let new = path(target).join("new");
            let files = names(&new);
            assert_eq!(files.len(), 1, "{}", new.display());
            assert!(files[0].starts_with(&id), "{files:?}");
            assert_eq!(fs::read(new.join(&files[0])).unwrap(), expected);
            assert!(names(&path(target).join("tmp")).is_empty());
        }
    }

    #[test]
    fn each_rule_refuses_and_leaves_nothing() {
        let s = Scratch::new("refused");
        let target = s.maildir("m");
        let open = || Message::open([target.clone()], rules(), trace).unwrap();

        let mut too_big = open();
        too_big.write(&[b'x'; 2001]);
        let mut bare = open();
        bare.write(b"Subject: x\n\nbare\n");
        bare.note_bare_line_ending();
        let mut looped = open();
        looped.write("Received: x\r\n".repeat(MAX_RECEIVED + 1).as_bytes());
        looped.write(b"\r\nbody\r\n");
        for (message, rule) in [
            (too_big, Refusal::TooBig),
            (bare, Refusal::BareLineEnding),
            (looped, Refusal::MailLoop),
        ] {
            match message.finish() {
                Err(NotStored::Refused(refusal)) => assert_eq!(refusal, rule),
                other => panic!("{rule:?}: {other:?}"),
            }
            assert_empty(&target);
        }
        // At the limits, and a bare line ending where the rules allow it.
        let mut ok = open();
        ok.write("Received: x\r\n".repeat(MAX_RECEIVED).as_bytes());
        ok.write(&vec![b'x'; 2000 - 13 * MAX_RECEIVED]);
        assert_eq!(ok.finish().unwrap().size, 2000);
        let relaxed = ContentRules {
            bare_lf: BareLf::Normalize,
            ..rules()
        };
        let mut bare = Message::open([target.clone()], relaxed, trace).unwrap();
        bare.note_bare_line_ending();
        assert!(bare.finish().is_ok());
        assert_eq!(names(&path(&target).join("new")).len(), 2);
    }

    #[test]
    fn the_spool_goes_to_the_least_target_whatever_the_order() {
        // Opening makes the spool's Maildir (and only that one) when it is
        // missing: it shows which target was chosen.
        for order in [["b", "a", "c"], ["c", "b", "a"], ["a", "c", "b"]] {
            let s = Scratch::new("order");
            let targets = order.map(|name| s.maildir(name));
            let message = Message::open(targets, rules(), trace).unwrap();
            let made: Vec<String> = names(&s.0);
            assert_eq!(made, ["a"], "{order:?}");
            drop(message);
        }
    }

    #[test]
    fn a_dropped_message_leaves_nothing() {
        let s = Scratch::new("dropped");
        let (a, b) = (s.maildir("a"), s.maildir("b"));
        let mut message = Message::open([a.clone(), b.clone()], rules(), trace).unwrap();
        message.write(b"Subject: x\r\n\r\nhalf a mess");
        drop(message);
        assert_empty(&a);
        assert!(names(&path(&b).join("new")).is_empty());
    }

    #[test]
    fn a_failure_is_a_delivery_error_and_leaves_nothing() {
        let s = Scratch::new("failed");
        let (a, b) = (s.maildir("a"), s.maildir("b"));
        // b's new/ is a file: the link into it fails, and a's goes too.
        fs::create_dir_all(path(&b)).unwrap();
        fs::write(path(&b).join("new"), b"not a directory").unwrap();
        let mut message = Message::open([a.clone(), b.clone()], rules(), trace).unwrap();
        message.write(b"Subject: x\r\n\r\nbody\r\n");
        match message.finish() {
            Err(NotStored::Failed(DeliveryError::Io { path: p, .. })) => {
                assert_eq!(p, path(&b).join("new"))
            }
            other => panic!("{other:?}"),
        }
        assert_empty(&a);
        // Over quota: refused before anything is linked.
        fs::remove_file(path(&b).join("new")).unwrap();
        let quota = |t: &Target| match t.clone() {
            Target::Maildir { root, folder, .. } => Target::Maildir {
                root,
                folder,
                budget: Budget {
                    quota: 10,
                    ..Budget::default()
                },
            },
        };
        let mut message = Message::open([quota(&a), quota(&b)], rules(), trace).unwrap();
        message.write(b"Subject: x\r\n\r\nbody\r\n");
        assert!(matches!(
            message.finish(),
            Err(NotStored::Failed(DeliveryError::Quota { .. }))
        ));
        assert_empty(&a);
        assert!(names(&path(&b).join("new")).is_empty());
    }

    #[test]
    fn no_target_is_a_delivery_error() {
        let err = Message::open([], rules(), trace).err().unwrap();
        assert!(matches!(err, DeliveryError::Io { .. }), "{err}");
    }

    #[test]
    fn is_full_measures_a_maildir() {
        let s = Scratch::new("full");
        let target = s.maildir("m");
        let is_full = |target: &Target, quota| {
            let Target::Maildir { root, .. } = target;
            let budget = Budget {
                quota,
                ..Budget::default()
            };
            Maildirs.is_full(&Target::Maildir {
                root: root.clone(),
                folder: None,
                budget,
            })
        };
        assert!(!is_full(&target, 100), "missing is empty");
        maildir::ensure(path(&target)).unwrap();
        fs::write(path(&target).join("cur").join("1.M1P1Q1.h,S=100:2,S"), b"x").unwrap();
        assert!(is_full(&target, 100));
        assert!(!is_full(&target, 101));
        assert!(!is_full(&target, 0), "0 is no quota");
    }
}
