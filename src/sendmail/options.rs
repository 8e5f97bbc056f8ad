//! sendmail's command line: the options cron, smartd and mail(1) pass,
//! parsed into what to do (deliver, -bs, -bp, -bi, -q).

use super::*;

/// What the command line asks sendmail mode to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Task {
    /// `-bm` (the default): deliver one message.
    #[default]
    Deliver,
    /// `-bs`: one SMTP session on stdin/stdout.
    SmtpSession,
    /// `-bp`, `mailq`: list the queue, which smtpbox does not have.
    ListQueue,
    /// `-bi`, `newaliases`: check the aliases (the config is the database).
    CheckAliases,
    /// `-q…`: run the queue; there is none.
    RunQueue,
    /// `--help`.
    Help,
}

/// The command line, parsed (sendmail's getopt-style options).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Options {
    pub(super) task: Task,
    /// `-t`: recipients also come from To:, Cc: and Bcc:.
    pub(super) extract: bool,
    /// `-i`, `-oi`: a lone `.` line is content, only EOF ends the input.
    pub(super) ignore_dots: bool,
    /// `-f SENDER` (or the obsolete `-r`).
    pub(super) sender: Option<String>,
    /// `-F NAME`: the full name in a generated From:.
    pub(super) full_name: Option<String>,
    /// `-C FILE`.
    pub(super) config: Option<PathBuf>,
    /// The operands: addresses or comma-separated address lists.
    pub(super) recipients: Vec<String>,
}

/// Options that take a value, glued (`-fSENDER`) or as the next argument.
pub(super) const TAKES_VALUE: &str = "ABCFLNORVXbdfhopr";

impl Options {
    pub(super) fn parse<S: AsRef<OsStr>>(args: &[S]) -> Result<Options, String> {
        let mut options = Options::default();
        let mut args = args.iter().map(AsRef::as_ref);
        while let Some(raw) = args.next() {
            // Only a -C path may be other than UTF-8 (SPEC §2).
            let Some(arg) = raw.to_str() else {
                match raw.as_bytes().strip_prefix(b"-C") {
                    Some(path) if !path.is_empty() => {
                        options.config = Some(PathBuf::from(OsStr::from_bytes(path)))
                    }
                    _ => return Err(not_utf8(raw)),
                }
                continue;
            };
            if arg == "--" {
                for rest in args.by_ref() {
                    options
                        .recipients
                        .push(rest.to_str().ok_or_else(|| not_utf8(rest))?.into());
                }
                break;
            }
            if arg == "--help" {
                options.task = Task::Help;
                continue;
            }
            let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
                options.recipients.push(arg.to_string());
                continue;
            };
            for (i, flag) in cluster.char_indices() {
                if flag == 'q' {
                    // -q, -q30m, -qf, -qRsite…: the rest is the queue's business.
                    options.task = Task::RunQueue;
                    break;
                }
                if !TAKES_VALUE.contains(flag) {
                    options.flag(flag)?;
                    continue;
                }
                let glued = &cluster[i + flag.len_utf8()..];
                let value = match glued {
                    "" => {
                        let next = args.next().ok_or(format!("option -{flag} needs a value"))?;
                        if flag == 'C' {
                            options.config = Some(PathBuf::from(next));
                            break;
                        }
                        next.to_str().ok_or_else(|| not_utf8(next))?
                    }
                    _ => glued,
                };
                options.option(flag, value.to_string())?;
                break;
            }
        }
        Ok(options)
    }

    pub(super) fn flag(&mut self, flag: char) -> Result<(), String> {
        match flag {
            't' => self.extract = true,
            'i' => self.ignore_dots = true,
            // metoo, no aliases, verbose, initial submission, gateway.
            'm' | 'n' | 'v' | 'U' | 'G' => log::debug!("ignoring option -{flag}"),
            _ => return Err(format!("unknown option -{flag}")),
        }
        Ok(())
    }

    pub(super) fn option(&mut self, flag: char, value: String) -> Result<(), String> {
        match (flag, value.as_str()) {
            ('b', "m") => self.task = Task::Deliver,
            ('b', "s") => self.task = Task::SmtpSession,
            ('b', "p") => self.task = Task::ListQueue,
            ('b', "i") => self.task = Task::CheckAliases,
            ('b', mode) => {
                return Err(format!(
                    "unsupported mode -b{mode} (only -bm, -bs, -bp and -bi)"
                ))
            }
            ('o', "i") => self.ignore_dots = true,
            ('f' | 'r', _) => self.sender = Some(value),
            ('F', _) => self.full_name = Some(value),
            ('C', _) => self.config = Some(PathBuf::from(value)),
            // -oem, -odi, -B8BITMIME, DSN options (-N, -R, -V): no queue, no
            // bounces, 8-bit clean: nothing to do.
            _ => log::debug!("ignoring option -{flag}{value}"),
        }
        Ok(())
    }
}

/// The error for an argument that is not UTF-8, quoting a short prefix.
pub(super) fn not_utf8(arg: &OsStr) -> String {
    let shown: String = arg.to_string_lossy().chars().take(64).collect();
    format!("argument `{shown}` is not UTF-8")
}
