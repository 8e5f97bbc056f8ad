//! Rows 10a–10i (issue #22): what a quota or a retention budget costs per
//! message when the Maildir is large. The same server config delivers
//! into an empty Maildir and into one pre-filled with 100,000 messages,
//! alternately in the same run, 1 and 16 sessions, 1 KiB messages; the
//! row is the cost per message at 100,000 over the cost when empty.
//! Rows 10a–10d on the work dir's disk, as an appliance stores mail (and
//! as the issue measured the old cost, 128×); rows 10f–10i the same on
//! tmpfs, for information (without fsyncs, any scan of the directories
//! shows at once). Each run's server is warmed up past its one
//! recalculation of `maildirsize` (see [`WARM`]): a resident server
//! pays it once per 15 minutes, not once per run of a few seconds.
//! Row 10e: the time one pruning run takes to bring a 100,000-message
//! Maildir under a budget that keeps a tenth of it (smtpbox prunes at
//! start-up, before it listens: start-up time with that Maildir less
//! start-up time without).

use std::fs;
use std::path::Path;
use std::time::Instant;

use crate::common::*;
use crate::{row, Bench, Best, Row, Run, ROUNDS, SLICE};

/// Messages in the pre-filled Maildir.
const PREFILL: usize = 100_000;
/// Their size as their names say (`S=`; the files are empty: accounting
/// goes by the name, as Maildir++ does).
const SIZE: u64 = 1000;

pub fn rows(b: &Bench) -> Res<Vec<Row>> {
    let mut rows = Vec::new();
    // Budgets that the runs never reach: what is measured is keeping
    // count, not pruning.
    let budgets = [
        ("maildir_quota", "maildir_quota = 1099511627775\n"),
        ("maildir_keep", "maildir_keep = 1099511627775\n"),
    ];
    let places = [
        ("disk", &b.work.0, ["10a", "10b", "10c", "10d"]),
        ("tmpfs", &b.shm.0, ["10f", "10g", "10h", "10i"]),
    ];
    for (fs_name, base, ids) in places {
        let full = base.join("r10-full");
        prefill(&full.join("Maildir"), PREFILL)?;
        let mut ids = ids.into_iter();
        for (key, extra) in budgets {
            for sessions in [1, 16] {
                let id = ids.next().expect("an id per row");
                eprintln!("bench: {id}");
                let what = format!(
                    "`{key}` set, {fs_name}, {sessions} × 1 KiB: 100,000 messages vs empty"
                );
                let judged = fs_name == "disk";
                // A row that fails (an older build, BENCH_BIN, without
                // `maildir_keep`) says so; the others are still measured.
                rows.push(match compare(b, base, &full, id, extra, sessions) {
                    Ok((empty, filled)) => {
                        let ratio = empty / filled;
                        row(
                            id,
                            &what,
                            format!("{filled:.0} vs {empty:.0} msg/s ({ratio:.2}× the cost)"),
                            judged.then_some(ratio),
                        )
                    }
                    Err(e) => row(id, &what, format!("error: {e}"), judged.then_some(f64::NAN)),
                });
            }
        }
        let _ = fs::remove_dir_all(&full);
    }
    eprintln!("bench: 10e");
    rows.push(pruning(b).unwrap_or_else(|e| {
        let what = "pruning 100,000 messages to a budget that keeps 10%, tmpfs";
        row("10e", what, format!("error: {e}"), None)
    }));
    Ok(rows)
}

/// The best rates of [`ROUNDS`] runs into an empty Maildir and into the
/// pre-filled one at `full`, interleaved.
fn compare(
    b: &Bench,
    base: &Path,
    full: &Path,
    id: &str,
    extra: &str,
    sessions: usize,
) -> Res<(f64, f64)> {
    let (mut empty, mut filled) = (Best::new(), Best::new());
    for round in 0..ROUNDS {
        sync();
        let dir = base.join(format!("r10-empty-{id}-{round}"));
        empty.add(rate(b, &dir, &dir.join("Maildir"), extra, sessions)?);
        sync();
        let dir = base.join(format!("r10-srv-{id}-{round}"));
        filled.add(rate(b, &dir, &full.join("Maildir"), extra, sessions)?);
    }
    Ok((empty.0.rate, filled.0.rate))
}

/// `count` messages into `dir/new` named as delivered ones, the oldest
/// first, one per millisecond a hundred days ago.
fn prefill(maildir: &Path, count: usize) -> Res<()> {
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(maildir.join(sub))?;
    }
    let start = 1_700_000_000u64;
    for i in 0..count as u64 {
        let name = format!(
            "{}.M{}P1Q{i}.bench,S={SIZE}:2,S",
            start + i / 1000,
            (i % 1000) * 1000
        );
        fs::write(maildir.join("cur").join(name), b"")?;
    }
    Ok(())
}

/// Deliveries that take a fresh `maildirsize` past 5,120 bytes (lines
/// such as `1063 1`): the warm-up delivers them, so that the server
/// process has done its one recalculation from the directories (the
/// first time the file reaches that size in a process; then at most
/// once per 15 minutes, see src/maildir/size.rs) before the timed run.
const WARM: usize = 800;

/// One timed run of 1 KiB messages into `maildir` with `extra` set,
/// after a warm-up of [`WARM`] messages: the costs that come once per
/// process (making `maildirsize`, its first recalculation) are not what
/// a message costs a resident server.
fn rate(b: &Bench, dir: &Path, maildir: &Path, extra: &str, sessions: usize) -> Res<Run> {
    let extra = format!("{extra}maildir = {}\n", maildir.display());
    let server = Server::start(&b.bin, dir, &extra, Some("warn"))?;
    let new = || fs::read_dir(maildir.join("new")).map(|d| d.count());
    let warm = WARM.max(2 * sessions);
    let started = Instant::now();
    load(b.source.as_deref(), server.addr, sessions, warm, KIB)?;
    let pilot = warm as f64 / started.elapsed().as_secs_f64();
    let count = ((pilot * SLICE.as_secs_f64()) as usize).clamp(8 * sessions, 20_000);
    let before = new()?;
    let cpu = cpu_us(server.pid())?;
    let started = Instant::now();
    load(b.source.as_deref(), server.addr, sessions, count, KIB)?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_us(server.pid())? - cpu) / count as f64;
    let stored = new()? - before;
    if stored != count {
        let log = server.log_tail();
        return Err(format!("{stored} of {count} messages stored; log: {log}").into());
    }
    Ok(Run {
        rate: count as f64 / elapsed,
        cpu,
    })
}

/// Row 10e: start-up with a 100,000-message Maildir over a budget that
/// keeps a tenth, less start-up with an empty one (best of the rounds).
fn pruning(b: &Bench) -> Res<Row> {
    let keep = PREFILL as u64 * SIZE / 10;
    let extra = |maildir: &Path| {
        format!(
            "maildir_keep = {keep}\nmax_message_size = {SIZE}\nmaildir = {}\n",
            maildir.display()
        )
    };
    let (mut pruned, mut plain) = (f64::INFINITY, f64::INFINITY);
    let mut left = 0;
    for round in 0..ROUNDS {
        let maildir = b.shm.0.join(format!("r10e-{round}"));
        prefill(&maildir, PREFILL)?;
        let dir = b.shm.0.join(format!("r10e-srv-{round}"));
        let started = Instant::now();
        let server = Server::start(&b.bin, &dir, &extra(&maildir), Some("info"))?;
        pruned = pruned.min(started.elapsed().as_secs_f64());
        left = fs::read_dir(maildir.join("cur"))?.count();
        drop(server);
        let _ = fs::remove_dir_all(&maildir);
        let empty = b.shm.0.join(format!("r10e-empty-{round}"));
        let dir = b.shm.0.join(format!("r10e-srv-empty-{round}"));
        let started = Instant::now();
        let server = Server::start(&b.bin, &dir, &extra(&empty), Some("info"))?;
        plain = plain.min(started.elapsed().as_secs_f64());
        drop(server);
        let _ = fs::remove_dir_all(&empty);
    }
    if left > PREFILL / 10 {
        return Err(format!("{left} messages left of {PREFILL}, budget {keep} bytes").into());
    }
    let secs = pruned - plain;
    Ok(row(
        "10e",
        "pruning 100,000 messages to a budget that keeps 10%, tmpfs",
        format!("{:.0} ms ({left} left)", secs * 1000.0),
        None,
    ))
}
