//! The message phase of a session: DATA and BDAT (RFC 5321 §4.1.1.4,
//! RFC 3030). DATA opens a message in the session's [`Store`] and feeds
//! the client's bytes through the [`DataReader`] automaton into it until
//! CRLF.CRLF; BDAT copies exactly the announced bytes, chunk by chunk.
//! When the content is complete the message is finished, and what the
//! store says becomes the reply (SPEC §6, §7).
//!
//! ```text
//!   Idle ──DATA──► Data(reader, draft) ──CRLF.CRLF──► finish ──► Idle
//!   Idle ──BDAT n──► Chunk(draft, n left) ──0 left──► Chunks(draft) ──BDAT m──► Chunk …
//!                           │ LAST                          │ RSET, HELO, EHLO
//!                           └──► finish ──► Idle            └──► dropped ──► Idle
//!   BDAT n refused ──► Chunk(no draft, n left) ──0 left──► Idle   (the chunk is read and thrown away)
//! ```
//!
//! [`Store`]: crate::delivery::Store

use super::{Session, Step};
use crate::command::Body;
use crate::data::DataReader;
use crate::delivery::{Draft, NotStored, Refusal, Stored};
use crate::reply::Reply;

/// DATA content is fed to the automaton in pieces of at most this many
/// bytes, so its output (at most twice as long: every LF normalized to
/// CRLF) stays bounded whatever the driver's buffer.
const DATA_PIECE: usize = 16 * 1024;

/// Where the message under way stands. Every variant is a few words (a
/// boxed message, the automaton's bytes, its output buffer's handle): the
/// message and the buffer live on the heap (the stack budget at
/// `conn::serve`).
pub(super) enum Content {
    /// No message: commands are read.
    Idle,
    /// DATA content is read up to CRLF.CRLF.
    Data(Incoming),
    /// A BDAT chunk is read: `left` of its `size` bytes go into `draft`,
    /// or are thrown away when there is none (its command failed).
    Chunk {
        draft: Option<Box<dyn Draft>>,
        size: u64,
        left: u64,
        last: bool,
    },
    /// A BDAT message is open between chunks.
    Chunks(Box<dyn Draft>),
}

/// A DATA message as it comes in: the automaton, the message, and the
/// automaton's output buffer, reused for every piece.
pub(super) struct Incoming {
    reader: DataReader,
    draft: Box<dyn Draft>,
    out: Vec<u8>,
}

impl Content {
    /// The client's bytes are content now, not commands.
    pub(super) fn is_reading(&self) -> bool {
        matches!(self, Content::Data(_) | Content::Chunk { .. })
    }

    /// Why the session ended when the input ended here.
    pub(super) fn closed_reason(&self) -> &'static str {
        match self {
            Content::Data(_) => "client closed during DATA",
            Content::Chunk { .. } => "client closed during BDAT",
            Content::Idle | Content::Chunks(_) => "client closed",
        }
    }

    /// The transaction of a BDAT message is gone (RSET, HELO, EHLO): the
    /// message open between chunks is dropped, and nothing of it stored.
    pub(super) fn drop_between_chunks(&mut self) {
        if let Content::Chunks(_) = self {
            *self = Content::Idle;
        }
    }
}

impl Session {
    /// DATA: with a transaction ready, opens the message and answers 354;
    /// the content follows ([`Session::push_content`]).
    #[inline(never)] // Off the stack of EHLO's path (see `framed`).
    pub(super) fn data(&mut self, buffered_after: bool) -> Step {
        let lf_session = !self.sent_crlf;
        match self.tx_ready() {
            Err(reply) => return Step::reply(reply),
            // RFC 3030 §3: BINARYMIME needs BDAT, and BDAT and DATA don't mix.
            Ok(tx) if tx.chunking || tx.params.body == Body::BinaryMime => {
                return Step::reply(Reply::use_bdat())
            }
            Ok(_) => {}
        }
        if buffered_after && !self.peer.is_loopback() {
            return self
                .unsynchronized("sent content before 354", "content before 354 (554 5.5.0)");
        }
        match self.open_message() {
            Ok(draft) => {
                let bare_lf = self.config.bare_lf;
                self.content = Content::Data(Incoming {
                    reader: DataReader::new(bare_lf, lf_session),
                    draft,
                    out: Vec::with_capacity(DATA_PIECE),
                });
                Step::reply(Reply::data_go_ahead())
            }
            Err(reply) => Step::reply(reply),
        }
    }

    /// BDAT: a chunk of `size` bytes follows the command line, and is read
    /// whatever the reply (RFC 3030 §2: the client does not wait). The
    /// first chunk opens the message, the others go into it; the chunk of
    /// a refused command is read and thrown away, to stay in step.
    #[inline(never)] // Off the stack of EHLO's path (see `framed`).
    pub(super) fn bdat(&mut self, size: u64, last: bool) -> Step {
        let opened = match self.tx_ready() {
            Err(reply) => Err(reply),
            Ok(tx) => {
                tx.chunking = true;
                match std::mem::replace(&mut self.content, Content::Idle) {
                    Content::Chunks(draft) => Ok(draft),
                    _ => self.open_message(),
                }
            }
        };
        let (draft, refused) = match opened {
            Ok(draft) => (Some(draft), None),
            Err(reply) => (None, Some(reply)),
        };
        self.content = Content::Chunk {
            draft,
            size,
            left: size,
            last,
        };
        // An empty chunk is complete at once.
        let done = if size == 0 {
            self.chunk_complete()
        } else {
            None
        };
        match refused {
            Some(reply) => Step::reply(reply),
            None => done.unwrap_or_else(Step::none),
        }
    }

    /// Opens a message for the transaction's targets in the store, with
    /// its trace headers; on failure the reply, and the transaction is
    /// dropped.
    fn open_message(&mut self) -> Result<Box<dyn Draft>, Reply> {
        let targets = self.targets().cloned().collect();
        let rules = self.content_rules();
        let trace = |id: &str| self.trace_headers(id, &crate::date::now_rfc5322());
        match self.services.store.open(targets, rules, &trace) {
            Ok(draft) => Ok(draft),
            Err(error) => Err(self.spool_failed(&error)),
        }
    }

    /// Message content: into the open message through the DATA automaton
    /// or as a BDAT chunk. A step when the content is complete.
    #[inline(never)] // Keeps its frame off the stack of idle sessions.
    pub(super) fn push_content(&mut self, input: &[u8]) -> (usize, Option<Step>) {
        match &mut self.content {
            Content::Data(incoming) => {
                let piece = &input[..input.len().min(DATA_PIECE)];
                incoming.out.clear();
                let (used, done) = incoming.reader.feed(piece, &mut incoming.out);
                incoming.draft.write(&incoming.out);
                if !done {
                    return (used, None);
                }
                let Content::Data(incoming) = std::mem::replace(&mut self.content, Content::Idle)
                else {
                    unreachable!("matched above");
                };
                let Incoming {
                    reader, mut draft, ..
                } = incoming;
                if reader.bare_line_ending_seen() {
                    draft.note_bare_line_ending();
                }
                (used, Some(self.message_done(draft.finish())))
            }
            Content::Chunk { draft, left, .. } => {
                let n = usize::try_from(*left).map_or(input.len(), |left| left.min(input.len()));
                if let Some(draft) = draft {
                    draft.write(&input[..n]);
                }
                *left -= n as u64;
                match *left {
                    0 => (n, self.chunk_complete()),
                    _ => (n, None),
                }
            }
            // Not content (push only sends content here): a command.
            Content::Idle | Content::Chunks(_) => self.push(input),
        }
    }

    /// A BDAT chunk has been read whole: `250` for one that was not the
    /// last, the message's outcome for the last; nothing for a chunk that
    /// was thrown away (its command was answered).
    fn chunk_complete(&mut self) -> Option<Step> {
        let Content::Chunk {
            draft, size, last, ..
        } = std::mem::replace(&mut self.content, Content::Idle)
        else {
            return None;
        };
        let draft = draft?;
        if last {
            return Some(self.message_done(draft.finish()));
        }
        self.content = Content::Chunks(draft);
        Some(Step::reply(Reply::chunk_received(size)))
    }

    /// The message is over (its rules checked, its delivery tried: what
    /// [`Draft::finish`] said): the final reply, and the transaction is
    /// over.
    #[inline(never)] // Keeps its frame off the stack of idle sessions.
    fn message_done(&mut self, outcome: Result<Stored, NotStored>) -> Step {
        let (reply, notices) = match outcome {
            Ok(Stored {
                id,
                size,
                file_name,
            }) => self.delivered(size, Ok((id, file_name))),
            Err(NotStored::Failed(error)) => self.delivered(0, Err(error)),
            Err(NotStored::Refused(refusal)) => {
                self.tx = None;
                let reply = match refusal {
                    Refusal::TooBig => Reply::message_too_big(),
                    Refusal::BareLineEnding => Reply::bare_line_ending(),
                    Refusal::MailLoop => Reply::mail_loop(),
                };
                (reply, Vec::new())
            }
        };
        Step {
            notices,
            ..Step::reply(reply)
        }
    }
}
