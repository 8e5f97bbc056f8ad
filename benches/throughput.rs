//! `cargo bench --bench throughput`: smtpbox against the machine's own
//! ceilings (issue #5), printed as one Markdown table.
//!
//! Builds the release binary (`cargo build --release`, and a static one with
//! `+crt-static` in `target/bench-static`), then measures over loopback, with
//! bounded runs: delivery rate beside a raw durable-write loop on the same
//! filesystem and beside smtp-sink on tmpfs, pipelining (server write
//! syscalls counted with `strace -c`), RSS per idle session and during a
//! 100 MiB message, binary sizes and crate count, and exec-to-banner time in
//! `--inetd` mode. Load comes from Postfix's `smtp-source` when installed
//! (`apt-get install postfix` brings smtp-source and smtp-sink; nothing here
//! starts a Postfix daemon), else from this file's own client.
//! Issue #15's rows: the CPU time per message (utime + stime from /proc) of
//! the server, the raw loop and smtp-sink at 1 and 16 sessions on disk and
//! tmpfs (rows 8a-8d, from the same runs as rows 1 and 3), fsyncs and
//! system calls per message with the server started under `strace -f -c`
//! (8e, 8f; 8g is the same count untraced, from perf's syscall
//! tracepoints), and a private Postfix instance as a peer (row 9, when
//! Postfix is installed and this runs as root; stopped again with
//! `postfix -c DIR stop`).
//! Issue #22's rows 10a-10i: the cost per message of a quota and of a
//! retention budget at 100,000 messages against an empty Maildir, on disk
//! and on tmpfs, and the time of one pruning run (benches/retention).
//! Issue #26's rows 11a-11r: idle wake-ups beside Postfix, and delivery
//! rate, device flushes and bytes per message on a model of slow flash and
//! on a latency-free loop device, beside the raw loop and Postfix
//! (benches/flash; root, and libfuse3-dev for the slow device).
//! `BENCH_ONLY=1a,5` runs only the rows whose ids start with those prefixes
//! (8a-8d come with 1a, 1b and 3; 8f and 8g with 8e). `BENCH_BIN=PATH` measures
//! that binary instead of building this tree's (rows 6 still build).
//! Every process started is killed on drop and every temp dir removed.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

mod appliance;
mod common;
mod flash;
mod retention;
use common::*;

/// Length of one timed slice; rates are the best of `ROUNDS` slices, the
/// raw ceiling and smtpbox interleaved (the disk is shared and noisy).
const SLICE: Duration = Duration::from_secs(2);
const ROUNDS: usize = 3;
/// Trace headers and smtp-source's headers: the raw loop writes this much
/// more than the payload.
const OVERHEAD: usize = 400;
const IDLE: usize = 500;

/// What every row needs: the binary, the load tools and the scratch dirs.
struct Bench {
    bin: PathBuf,
    source: Option<PathBuf>,
    sink: Option<PathBuf>,
    strace: Option<PathBuf>,
    work: TempDir,
    shm: TempDir,
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // BENCH_BIN=PATH measures another build (an older commit's, for a
    // before/after table) instead of this tree's release binary.
    let bin = match std::env::var_os("BENCH_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            eprintln!("bench: cargo build --release");
            build(&cargo, &root, None).expect("release build")
        }
    };
    warn_stale(&root.join("target"), "bench-work-");
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |id: &str| only.is_empty() || only.split(',').any(|p| id.starts_with(p));
    let b = Bench {
        bin,
        source: find_tool("smtp-source"),
        sink: find_tool("smtp-sink"),
        strace: find_tool("strace"),
        work: TempDir::new(&root.join("target"), "bench-work"),
        shm: TempDir::new(Path::new("/dev/shm"), "smtpbox-bench"),
    };
    let mut rows = Vec::new();
    let add = |rows: &mut Vec<Row>, id: &'static str, what: &str, result: Res<Vec<Row>>| {
        let error = |e| vec![row(id, what, format!("error: {e}"), Some(f64::NAN))];
        rows.extend(result.unwrap_or_else(error));
    };
    // The 4 KiB rows also give the CPU rows 8a and 8b.
    let disk_rows = [
        ("1a", 1, 4 * KIB, Some("8a")),
        ("1b", 16, 4 * KIB, Some("8b")),
        ("2a", 1, MIB, None),
        ("2b", 16, MIB, None),
    ];
    for (id, sessions, size, cpu_id) in disk_rows.into_iter().filter(|r| wanted(r.0)) {
        eprintln!("bench: {id}");
        let what = format!("disk, conn/msg, {sessions} × {}", human(size));
        add(
            &mut rows,
            id,
            &what,
            disk(&b, id, &what, sessions, size, cpu_id),
        );
    }
    if wanted("9") {
        eprintln!("bench: 9 Postfix");
        let ours = rows.iter().find(|r| r.id == "1b").and_then(|r| r.rate);
        add(&mut rows, "9", "Postfix (peer)", peer(&b, ours));
    }
    type Measure = fn(&Bench) -> Res<Vec<Row>>;
    let others: [(&str, &str, Measure); 6] = [
        ("3", "tmpfs", tmpfs),
        (
            "10",
            "quota and retention at 100,000 messages",
            retention::rows,
        ),
        ("8e", "system calls", syscalls),
        ("4", "pipelining", pipelining),
        ("5", "memory", memory),
        ("7", "start-up", startup),
    ];
    for (id, what, measure) in others.into_iter().filter(|r| wanted(r.0)) {
        eprintln!("bench: {id} {what}");
        add(&mut rows, id, what, measure(&b));
    }
    if wanted("6") {
        eprintln!("bench: 6 footprint (static build in target/bench-static)");
        let static_bin = build(&cargo, &root, Some(&root.join("target/bench-static")));
        add(
            &mut rows,
            "6",
            "footprint",
            footprint(&cargo, &root, &b.bin, static_bin),
        );
    }
    if wanted("11") {
        add(
            &mut rows,
            "11",
            "appliance efficiency",
            flash::rows(&b, &root),
        );
    }
    if wanted("6d") {
        eprintln!("bench: 6d-6j appliance builds (scripts/cross.sh) and musl's CPU");
        add(
            &mut rows,
            "6d",
            "appliance builds",
            appliance::rows(&b, &root),
        );
    }
    rows.sort_by_key(|r| r.id);
    report(&b, &rows);
}

// ---------------------------------------------------------------- rows

/// The targets of issues #5 and #15: row id prefix, text, limit, and
/// whether the judged number must be at least (true) or at most (false) the
/// limit.
const TARGETS: [(&str, &str, f64, bool); 33] = [
    ("11a", "0 per minute", 0.0, false),
    ("11c", "≥ 0.95× the loop's", 0.95, true),
    ("11d", "≥ 0.95× the loop's", 0.95, true),
    ("11e", "≤ 1.05× the loop's", 1.05, false),
    ("11f", "≤ 1.05× the loop's", 1.05, false),
    ("11g", "≥ 0.95× the loop's", 0.95, true),
    ("11h", "≥ 0.95× the loop's", 0.95, true),
    ("11i", "≤ 1.05× the loop's", 1.05, false),
    ("11j", "≤ 1.05× the loop's", 1.05, false),
    ("11s", "≥ 0.95× the loop's", 0.95, true),
    ("11t", "≥ 0.95× the loop's", 0.95, true),
    ("11u", "≤ 1.05× the loop's", 1.05, false),
    ("11v", "≤ 1.05× the loop's", 1.05, false),
    ("10a", "≤ 1.2× the empty Maildir's cost", 1.2, false),
    ("10b", "≤ 1.2× the empty Maildir's cost", 1.2, false),
    ("10c", "≤ 1.2× the empty Maildir's cost", 1.2, false),
    ("10d", "≤ 1.2× the empty Maildir's cost", 1.2, false),
    ("1", "≥ 0.8×", 0.8, true),
    ("2", "≥ 0.8×", 0.8, true),
    ("3b", "≥ 0.8×", 0.8, true),
    ("8b", "≤ 1.5× the loop's", 1.5, false),
    ("8e", "< 1.5", 1.5, false),
    ("8f", "< 20", 20.0, false),
    ("8g", "< 20", 20.0, false),
    ("4b", "1 write per group", 1.0, false),
    ("4c", "1 socket write per message", 1.0, false),
    ("5a", "≤ 16 KiB", 16.0, false),
    ("5b", "≤ 48 KiB", 48.0, false),
    ("5c", "≤ 1024 KiB", 1024.0, false),
    ("6a", "≤ 1.3 MB", 1.3e6, false),
    ("6b", "≤ 2.4 MB", 2.4e6, false),
    ("7", "≤ 2 ms", 2.0, false),
    // Rows 6d–6j carry their own target and are judged as a ratio to it.
    ("6", "", 1.0, false),
];

/// One line of the table: the value as shown, the ceiling it is set
/// against (if any), and the number judged against its target (the ratio
/// to the ceiling for rates, else the value itself; NaN for an error).
struct Row {
    id: &'static str,
    what: String,
    shown: String,
    ceiling: String,
    judged: Option<f64>,
    /// smtpbox's rate, for rows that set others against it.
    rate: Option<f64>,
}

fn row(id: &'static str, what: &str, shown: String, judged: Option<f64>) -> Row {
    let (what, ceiling) = (what.to_string(), String::new());
    Row {
        id,
        what,
        shown,
        ceiling,
        judged,
        rate: None,
    }
}

/// A rate beside its ceiling, judged by their ratio.
fn rate_row(id: &'static str, what: &str, rate: f64, ceiling: f64, label: &str) -> Row {
    let judged = Some(rate / ceiling);
    let ceiling = format!("{label} {ceiling:.0} msg/s");
    Row {
        ceiling,
        rate: Some(rate),
        ..row(id, what, format!("{rate:.0} msg/s"), judged)
    }
}

/// One load run: messages per second and the CPU time (user + system) the
/// process under test used per message, in microseconds.
#[derive(Clone, Copy, Default)]
struct Run {
    rate: f64,
    cpu: f64,
}

/// Best of several runs: the highest rate, and the lowest CPU per message.
#[derive(Clone, Copy)]
struct Best(Run);

impl Best {
    fn new() -> Best {
        Best(Run {
            rate: 0.0,
            cpu: f64::INFINITY,
        })
    }

    fn add(&mut self, run: Run) {
        self.0.rate = self.0.rate.max(run.rate);
        self.0.cpu = self.0.cpu.min(run.cpu);
    }
}

/// Server CPU per message beside the floors', judged (where a target says
/// so) by smtpbox's over the raw loop's.
fn cpu_row(id: &'static str, what: &str, ours: f64, raw: f64, sink: Option<f64>) -> Row {
    let sink = sink.map_or(String::new(), |s| format!(", smtp-sink {s:.0} µs"));
    let ratio = ours / raw;
    Row {
        ceiling: format!("raw fsync loop {raw:.0} µs{sink}"),
        ..row(
            id,
            what,
            format!("{ours:.0} µs ({ratio:.2}× the loop)"),
            Some(ratio),
        )
    }
}

/// Rows 1–2: a new connection per message into a Maildir on the work dir's
/// filesystem, beside the raw durable-write loop at the same concurrency.
/// With `cpu_id`, also the server's CPU per message beside the loop's.
fn disk(
    b: &Bench,
    id: &'static str,
    what: &str,
    sessions: usize,
    size: usize,
    cpu_id: Option<&'static str>,
) -> Res<Vec<Row>> {
    let (mut raw, mut ours) = (Best::new(), Best::new());
    for round in 0..ROUNDS {
        sync();
        let raw_dir = b.work.0.join(format!("raw-{id}-{round}"));
        let run = raw_ceiling(&raw_dir, sessions, size + OVERHEAD);
        retire(&raw_dir, &b.work.0)?;
        let run = run?;
        raw.add(run);
        sync();
        let dir = b.work.0.join(format!("srv-{id}-{round}"));
        ours.add(delivery_rate(b, &dir, sessions, size, run.rate)?);
    }
    let (raw, ours) = (raw.0, ours.0);
    let mut rows = vec![rate_row(id, what, ours.rate, raw.rate, "raw fsync loop")];
    if let Some(cpu_id) = cpu_id {
        let what = format!("server CPU per message, disk, {sessions} × {}", human(size));
        rows.push(cpu_row(cpu_id, &what, ours.cpu, raw.cpu, None));
    }
    Ok(rows)
}

/// Rows 3a, 3b: Maildir on tmpfs, 1 and 16 × 4 KiB, beside smtp-sink;
/// rows 8c, 8d: the server's CPU per message there beside the raw loop's
/// on tmpfs and smtp-sink's.
fn tmpfs(b: &Bench) -> Res<Vec<Row>> {
    let mut rows = Vec::new();
    for (id, cpu_id, sessions) in [("3a", "8c", 1), ("3b", "8d", 16)] {
        let what = format!("tmpfs, conn/msg, {sessions} × 4 KiB");
        let (mut sink, mut raw, mut ours) = (None::<Best>, Best::new(), Best::new());
        for round in 0..ROUNDS {
            if let Some(run) = sink_rate(b, sessions, 4 * KIB)? {
                sink.get_or_insert_with(Best::new).add(run);
            }
            let raw_dir = b.shm.0.join(format!("raw-{id}-{round}"));
            let run = raw_ceiling(&raw_dir, sessions, 4 * KIB + OVERHEAD);
            retire(&raw_dir, &b.shm.0)?;
            raw.add(run?);
            let dir = b.shm.0.join(format!("srv-{id}-{round}"));
            let expected = sink.map_or(2000.0, |s| s.0.rate);
            ours.add(delivery_rate(b, &dir, sessions, 4 * KIB, expected)?);
        }
        rows.push(match sink {
            Some(s) => rate_row(id, &what, ours.0.rate, s.0.rate, "smtp-sink"),
            None => Row {
                ceiling: "n/a: smtp-sink not installed".into(),
                ..row(id, &what, format!("{:.0} msg/s", ours.0.rate), None)
            },
        });
        let what = format!("server CPU per message, tmpfs, {sessions} × 4 KiB");
        let sink_cpu = sink.map(|s| s.0.cpu);
        rows.push(cpu_row(cpu_id, &what, ours.0.cpu, raw.0.cpu, sink_cpu));
    }
    Ok(rows)
}

/// Rows 8e, 8f (and 8g): fsyncs and all system calls per message, disk,
/// 16 × 4 KiB, each from its own run with the server started under
/// `strace -f -c` (the fsyncs alone through a seccomp filter, which barely
/// slows the server; the full count slows it, which makes more threads
/// wait on futexes than in an untraced run).
fn syscalls(b: &Bench) -> Res<Vec<Row>> {
    let Some(strace) = &b.strace else {
        return Ok(vec![row(
            "8e",
            "system calls",
            "n/a: strace not installed".into(),
            None,
        )]);
    };
    let count = 3000;
    let fsyncs = ["--seccomp-bpf", "-e", "trace=fsync,fdatasync"];
    let mut per_message = Vec::new();
    for (round, filter) in [&fsyncs[..], &[]].into_iter().enumerate() {
        sync();
        let dir = b.work.0.join(format!("srv-8e-{round}"));
        let server = TracedServer::start(strace, &b.bin, &dir, filter)?;
        load(b.source.as_deref(), server.addr, 16, count, 4 * KIB)?;
        let stored = fs::read_dir(server.dir.0.join("Maildir/new"))?.count();
        let maildir = server.dir.0.join("Maildir");
        let calls = server.finish()?;
        retire(&maildir, &b.work.0)?;
        if stored != count {
            return Err(format!("{stored} of {count} messages stored under strace").into());
        }
        let calls: Vec<(String, f64)> = calls
            .into_iter()
            .map(|(name, n)| (name, n as f64 / count as f64))
            .collect();
        per_message.push(calls);
    }
    let fsync: f64 = per_message[0].iter().map(|c| c.1).sum();
    let (all, shown) = summary(per_message.swap_remove(1));
    let untraced = untraced_syscalls(b, count)
        .unwrap_or_else(|e| row("8g", UNTRACED, format!("n/a: {e}"), None));
    Ok(vec![
        row(
            "8e",
            "fsyncs per message, disk, 16 × 4 KiB",
            format!("{fsync:.2}"),
            Some(fsync),
        ),
        row(
            "8f",
            "system calls per message, disk, 16 × 4 KiB (strace -f -c)",
            shown,
            Some(all),
        ),
        untraced,
    ])
}

/// The total of per-message call counts, and it shown with the calls made
/// at least every other message, most first.
fn summary(mut calls: Vec<(String, f64)>) -> (f64, String) {
    calls.sort_by(|a, b| b.1.total_cmp(&a.1));
    let all: f64 = calls.iter().map(|c| c.1).sum();
    let top: Vec<String> = calls
        .iter()
        .filter(|c| c.1 >= 0.5)
        .map(|(name, n)| format!("{name} {n:.2}"))
        .collect();
    (all, format!("{all:.1}: {}", top.join(", ")))
}

const UNTRACED: &str = "system calls per message, disk, 16 × 4 KiB, untraced (perf)";

/// Row 8g: the same count as 8f without strace's slowdown, which changes
/// how often threads meet on a lock: perf counts the kernel's syscall
/// tracepoints for the server's process (`perf stat -p`, every thread),
/// from just after its start to the end of the load.
fn untraced_syscalls(b: &Bench, count: usize) -> Res<Row> {
    let perf = find_tool("perf").ok_or("perf not installed")?;
    sync();
    let dir = b.work.0.join("srv-8g");
    let server = Server::start(&b.bin, &dir, "", None)?;
    let out = dir.join("perf.txt");
    let mut cmd = Command::new(perf);
    cmd.args(["stat", "-x", ",", "-e", "syscalls:sys_enter_*", "-o"])
        .arg(&out)
        .args(["-p", &server.pid().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut perf = Guard(cmd.spawn()?);
    // perf attaches to every thread before it counts: give it a moment.
    thread::sleep(Duration::from_millis(500));
    load(b.source.as_deref(), server.addr, 16, count, 4 * KIB)?;
    // SIGINT: perf writes its counts and exits (after some seconds: it
    // reads one counter per tracepoint and thread).
    signal(perf.0.id(), "-INT")?;
    wait_within(&mut perf.0, Duration::from_secs(90), "perf stat")?;
    let stored = fs::read_dir(server.dir.0.join("Maildir/new"))?.count();
    let maildir = server.dir.0.join("Maildir");
    let text = fs::read_to_string(&out)?;
    drop(server);
    retire(&maildir, &b.work.0)?;
    if stored != count {
        return Err(format!("{stored} of {count} messages stored").into());
    }
    // CSV lines: count,unit,event,...; "<not counted>" or "<not supported>"
    // when the tracepoints are not there.
    let calls: Vec<(String, f64)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(',');
            let n: f64 = fields.next()?.trim().parse().ok()?;
            let name = fields.nth(1)?.strip_prefix("syscalls:sys_enter_")?;
            (n > 0.0).then(|| (name.to_string(), n / count as f64))
        })
        .collect();
    if calls.is_empty() {
        return Err("perf counted no system calls (tracepoints not available?)".into());
    }
    let (all, shown) = summary(calls);
    Ok(row("8g", UNTRACED, shown, Some(all)))
}

/// Row 9: Postfix, a private instance delivering to a Maildir on the same
/// disk, 16 × 4 KiB, beside smtpbox's rate of row 1b. Its 250 comes once
/// the message is in its queue (fsynced); the Maildir delivery follows.
fn peer(b: &Bench, ours: Option<f64>) -> Res<Vec<Row>> {
    let what = "Postfix 3 (peer), disk, conn/msg, 16 × 4 KiB";
    let Some(postfix) = Postfix::start(&b.work.0.join("postfix"))? else {
        return Ok(vec![row(
            "9",
            what,
            "n/a: Postfix not installed (or not root)".into(),
            None,
        )]);
    };
    let (mut rate, mut lag) = (0f64, 0f64);
    let count = 2000;
    for round in 1..=ROUNDS {
        sync();
        let started = Instant::now();
        load(b.source.as_deref(), postfix.addr, 16, count, 4 * KIB)?;
        let accepted = started.elapsed();
        rate = rate.max(count as f64 / accepted.as_secs_f64());
        while postfix.delivered() < round * count {
            if started.elapsed() > LIMIT {
                return Err("Postfix did not deliver every message in time".into());
            }
            thread::sleep(Duration::from_millis(10));
        }
        lag = lag.max((started.elapsed() - accepted).as_secs_f64());
    }
    drop(postfix);
    let shown = format!("{rate:.0} msg/s accepted (all in its Maildir ≤ {lag:.1} s later)");
    Ok(vec![match ours {
        Some(ours) => Row {
            ceiling: format!("smtpbox {ours:.0} msg/s (row 1b)"),
            ..row("9", what, shown, Some(ours / rate))
        },
        None => row("9", what, shown, None),
    }])
}

/// Starts a server on `dir`, sends about `SLICE` worth of messages at the
/// `expected` rate, checks that every one is in `new/`, returns msg/s.
fn delivery_rate(b: &Bench, dir: &Path, sessions: usize, size: usize, expected: f64) -> Res<Run> {
    let count = ((expected * SLICE.as_secs_f64()) as usize).clamp(4 * sessions, 20_000);
    let server = Server::start(&b.bin, dir, "", None)?;
    let cpu = cpu_us(server.pid())?;
    let started = Instant::now();
    load(b.source.as_deref(), server.addr, sessions, count, size)?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_us(server.pid())? - cpu) / count as f64;
    let stored = fs::read_dir(server.dir.0.join("Maildir/new"))?.count();
    // Retired beside the server's dir, on the same filesystem (tmpfs or disk).
    retire(&dir.join("Maildir"), dir.parent().unwrap_or(&b.work.0))?;
    if stored != count {
        let log = server.log_tail();
        return Err(format!("{stored} of {count} messages stored; log: {log}").into());
    }
    Ok(Run {
        rate: count as f64 / elapsed,
        cpu,
    })
}

/// Row 4: pipelined transactions on one connection (our client:
/// smtp-source does not pipeline), then two sessions under `strace -f -c`
/// counting the server's socket writes per pipelined group and message.
/// strace attaches before the session starts: attaching interrupts a
/// blocked recv, which smtpbox takes as a connection error (EINTR).
fn pipelining(b: &Bench) -> Res<Vec<Row>> {
    // RUST_LOG=warn: no log line per message, only socket and spool writes.
    let server = Server::start(&b.bin, &b.shm.0.join("srv-4"), "", Some("warn"))?;
    let (rate, _) = pipelined_session(server.addr, 20_000, SLICE)?;
    let what = "pipelined, 1 conn, 3–5 KiB, tmpfs";
    let mut rows = vec![row("4a", what, format!("{rate:.0} msg/s"), None)];
    let Some(strace) = &b.strace else {
        rows[0].ceiling = "strace not installed: no write counts".into();
        return Ok(rows);
    };
    let groups = 500;
    let calls = traced(strace, server.pid(), || {
        let mut c = Smtp::connect(server.addr)?;
        c.greeting_and_ehlo()?;
        let group = format!("MAIL FROM:<{FROM}>\r\nRCPT TO:<{TO}>\r\nRSET\r\n");
        for _ in 0..groups {
            c.send(group.as_bytes())?;
            c.expect(&[250, 250, 250])?;
        }
        c.quit()
    })?;
    // 220, EHLO and 221 are one write each.
    let per_group = (sends(&calls) - 3.0) / groups as f64;
    let what = "server socket writes per pipelined group (MAIL, RCPT, RSET)";
    rows.push(row("4b", what, format!("{per_group:.2}"), Some(per_group)));
    let msgs = 500;
    let calls = traced(strace, server.pid(), || {
        pipelined_session(server.addr, msgs, LIMIT).map(drop)
    })?;
    // 220, EHLO, the first MAIL/RCPT/DATA and 221 are one write each.
    let socket = (sends(&calls) - 4.0) / msgs as f64;
    let file = calls.get("write").copied().unwrap_or(0) as f64 / msgs as f64;
    let shown = format!("{socket:.2} (and {file:.2} file writes)");
    rows.push(row(
        "4c",
        "server socket writes per pipelined message",
        shown,
        Some(socket),
    ));
    Ok(rows)
}

fn sends(calls: &HashMap<String, u64>) -> f64 {
    let n = |name: &str| calls.get(name).copied().unwrap_or(0);
    (n("sendto") + n("sendmsg") + n("writev")) as f64
}

/// RFC 2920 pipelining: the end of one message's data, then the next MAIL,
/// RCPT and DATA in one write, answered 250, 250, 250, 354. Sends up to
/// `count` messages for at most `run` on a new session; returns (msg/s,
/// messages sent).
fn pipelined_session(addr: SocketAddr, count: usize, run: Duration) -> Res<(f64, usize)> {
    let mut c = Smtp::connect(addr)?;
    c.greeting_and_ehlo()?;
    let txn = format!("MAIL FROM:<{FROM}>\r\nRCPT TO:<{TO}>\r\nDATA\r\n");
    let started = Instant::now();
    c.send(txn.as_bytes())?;
    c.expect(&[250, 250, 354])?;
    let mut sent = 0;
    loop {
        sent += 1;
        let more = sent < count && started.elapsed() < run;
        let tail = if more { txn.as_bytes() } else { b"" };
        // 3-5 KiB: the end of the group meets every alignment with the
        // server's input buffer, as real message sizes do.
        let body = message(3 * KIB + (sent * 997) % (2 * KIB));
        c.send(&[&body, b".\r\n".as_slice(), tail].concat())?;
        c.expect(if more { &[250, 250, 250, 354] } else { &[250] })?;
        if !more {
            let rate = sent as f64 / started.elapsed().as_secs_f64();
            c.quit()?;
            return Ok((rate, sent));
        }
    }
}

/// Runs `f` while `strace -f -c` counts the write syscalls of `pid`.
fn traced(strace: &Path, pid: u32, f: impl FnOnce() -> Res<()>) -> Res<HashMap<String, u64>> {
    let out = std::env::temp_dir().join(format!("smtpbox-strace-{}", std::process::id()));
    let mut cmd = Command::new(strace);
    cmd.args([
        "-f",
        "-c",
        "-qq",
        "-e",
        "trace=write,writev,sendto,sendmsg",
        "-o",
    ]);
    cmd.arg(&out)
        .args(["-p", &pid.to_string()])
        .stderr(Stdio::null());
    let mut guard = Guard(cmd.spawn()?);
    // Attached when every thread has a tracer.
    let end = Instant::now() + Duration::from_secs(10);
    let tracer = |t: fs::DirEntry| proc_field(&t.path().join("status"), "TracerPid:");
    let attached = || -> Res<bool> {
        let tasks = fs::read_dir(format!("/proc/{pid}/task"))?;
        Ok(tasks.flatten().all(|t| tracer(t).is_ok_and(|p| p != 0)))
    };
    while !attached()? {
        if Instant::now() > end {
            return Err("strace did not attach".into());
        }
        thread::sleep(Duration::from_millis(5));
    }
    let result = f();
    signal(guard.0.id(), "-INT")?;
    wait_within(&mut guard.0, Duration::from_secs(20), "strace")?;
    let text = fs::read_to_string(&out).unwrap_or_default();
    let _ = fs::remove_file(&out);
    result?;
    let mut calls = HashMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if let (Some(name), Some(n)) = (cols.last(), cols.get(3).and_then(|n| n.parse().ok())) {
            calls.insert(name.to_string(), n);
        }
    }
    Ok(calls)
}

/// Row 5: RSS per idle session (plain and implicit TLS), and RSS while a
/// 100 MiB message streams in.
fn memory(b: &Bench) -> Res<Vec<Row>> {
    let (cert, key) = make_cert(&b.work.0.join("keys"))?;
    let tls = format!(
        "tls_cert = {}\ntls_key = {}\n",
        cert.display(),
        key.display()
    );
    let server = Server::start(&b.bin, &b.work.0.join("srv-5"), &tls, None)?;
    let plain = idle_rss(&server, server.addr, None)?;
    let tls_addr = server.tls_addr.ok_or("no TLS listener")?;
    let tls = idle_rss(&server, tls_addr, Some(tls_client(&cert)?))?;
    let (idle, peak) = big_message_rss(&server, 100 * MIB)?;
    let delta = peak.saturating_sub(idle) as f64;
    let what = |kind| format!("RSS per idle session, {kind} ({IDLE} after EHLO)");
    let shown = format!("+{delta:.0} KiB (idle {idle} KiB, peak {peak} KiB)");
    Ok(vec![
        row("5a", &what("plain"), format!("{plain:.1} KiB"), Some(plain)),
        row("5b", &what("TLS"), format!("{tls:.1} KiB"), Some(tls)),
        row(
            "5c",
            "RSS during a 100 MiB message − idle",
            shown,
            Some(delta),
        ),
    ])
}

/// Opens `IDLE` sessions that read the greeting and send EHLO; returns the
/// server's RSS growth per session in KiB (after one warm-up session).
fn idle_rss(server: &Server, addr: SocketAddr, tls: Option<Arc<ClientConfig>>) -> Res<f64> {
    let open = || -> Res<Box<dyn Send>> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let Some(config) = &tls else {
            let mut c = Smtp::new(tcp);
            c.greeting_and_ehlo()?;
            return Ok(Box::new(c));
        };
        let name = ServerName::try_from("127.0.0.1")?;
        let conn = ClientConnection::new(Arc::clone(config), name)?;
        let mut c = Smtp::new(StreamOwned::new(conn, tcp));
        c.greeting_and_ehlo()?;
        Ok(Box::new(c))
    };
    drop(open()?);
    thread::sleep(Duration::from_millis(200));
    let base = rss_kib(server.pid())?;
    let held = (0..IDLE).map(|_| open()).collect::<Res<Vec<_>>>()?;
    thread::sleep(Duration::from_millis(300));
    let loaded = rss_kib(server.pid())?;
    drop(held);
    thread::sleep(Duration::from_millis(300));
    Ok(loaded.saturating_sub(base) as f64 / IDLE as f64)
}

/// Sends a small message (warm-up), takes the idle RSS, then streams a
/// message of `size` while sampling RSS. Returns (idle, peak) in KiB.
fn big_message_rss(server: &Server, size: usize) -> Res<(u64, u64)> {
    let pid = server.pid();
    let mut c = Smtp::connect(server.addr)?;
    c.greeting_and_ehlo()?;
    c.send_message(&message(4 * KIB))?;
    thread::sleep(Duration::from_millis(200));
    let idle = rss_kib(pid)?;
    let (peak, done) = (
        Arc::new(AtomicU64::new(idle)),
        Arc::new(AtomicBool::new(false)),
    );
    let (p, d) = (Arc::clone(&peak), Arc::clone(&done));
    let sampler = thread::spawn(move || {
        while !d.load(Relaxed) {
            p.fetch_max(rss_kib(pid).unwrap_or(0), Relaxed);
            thread::sleep(Duration::from_millis(5));
        }
    });
    let block = [b"y".repeat(998), b"\r\n".to_vec()].concat().repeat(64);
    let mut send = || -> Res<()> {
        c.send(format!("MAIL FROM:<{FROM}>\r\nRCPT TO:<{TO}>\r\nDATA\r\n").as_bytes())?;
        c.expect(&[250, 250, 354])?;
        c.send(b"Subject: big\r\n\r\n")?;
        for _ in 0..size / block.len() {
            c.send(&block)?;
        }
        c.send(b".\r\n")?;
        c.expect(&[250])
    };
    let sent = send();
    done.store(true, Relaxed);
    let _ = sampler.join();
    sent?;
    Ok((idle, peak.load(Relaxed)))
}

/// Row 6: stripped sizes and the crate count.
fn footprint(cargo: &str, root: &Path, bin: &Path, static_bin: Res<PathBuf>) -> Res<Vec<Row>> {
    let size_row = |id, what, bin: Res<PathBuf>| match bin.and_then(|p| stripped_size(&p)) {
        Ok(n) => row(
            id,
            what,
            format!("{:.2} MB ({n} B)", n as f64 / 1e6),
            Some(n as f64),
        ),
        Err(e) => row(id, what, format!("error: {e}"), Some(f64::NAN)),
    };
    let mut rows = vec![
        size_row("6a", "stripped binary, dynamic", Ok(bin.to_path_buf())),
        size_row("6b", "stripped binary, static (+crt-static)", static_bin),
    ];
    let mut cmd = Command::new(cargo);
    let out = cmd
        .args(["tree", "-e", "normal", "--prefix", "none"])
        .current_dir(root)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut crates: Vec<&str> = text.lines().map(|l| l.trim_end_matches(" (*)")).collect();
    crates.sort_unstable();
    crates.dedup();
    let n = crates
        .iter()
        .filter(|c| !c.is_empty())
        .count()
        .saturating_sub(1);
    rows.push(row(
        "6c",
        "crates in `cargo tree -e normal`",
        format!("{n} + smtpbox"),
        None,
    ));
    Ok(rows)
}

/// Row 7: median exec-to-220 in `--inetd` mode over pipes.
fn startup(b: &Bench) -> Res<Vec<Row>> {
    let dir = b.work.0.join("inetd");
    fs::create_dir_all(&dir)?;
    let (cert, key) = make_cert(&b.work.0.join("keys"))?;
    let plain = format!("hostname = mx.bench\nmaildir = {}/Maildir\n", dir.display());
    let tls = format!(
        "{plain}tls_cert = {}\ntls_key = {}\n",
        cert.display(),
        key.display()
    );
    let mut rows = Vec::new();
    for (id, kind, conf) in [("7a", "plain", plain), ("7b", "TLS cert configured", tls)] {
        let path = dir.join(format!("{id}.conf"));
        fs::write(&path, conf)?;
        let mut times: Vec<_> = (0..53)
            .map(|_| banner_time(&b.bin, &path))
            .collect::<Res<_>>()?;
        times.drain(..3); // page cache warm-up
        times.sort_unstable();
        let median = times[times.len() / 2].as_secs_f64() * 1e3;
        let shown = format!("{median:.2} ms (median of {})", times.len());
        rows.push(row(
            id,
            &format!("exec → 220, --inetd, {kind}"),
            shown,
            Some(median),
        ));
    }
    Ok(rows)
}

fn banner_time(bin: &Path, conf: &Path) -> Res<Duration> {
    let started = Instant::now();
    let mut cmd = Command::new(bin);
    cmd.arg("--inetd")
        .arg("-c")
        .arg(conf)
        .env_remove("RUST_LOG");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = Guard(cmd.spawn()?);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let elapsed = started.elapsed();
    if !line.starts_with("220 ") {
        return Err(format!("--inetd greeting: {line:?}").into());
    }
    drop(child.0.stdin.take()); // EOF ends the session
    child.0.wait()?;
    Ok(elapsed)
}

// ------------------------------------------------------------ ceilings

/// What a durable Maildir delivery must do, without SMTP: create in tmp/,
/// write, fsync, link into new/, fsync new/, unlink from tmp/; `threads`
/// loops for `SLICE`. Returns deliveries per second.
fn raw_ceiling(dir: &Path, threads: usize, size: usize) -> Res<Run> {
    let raw = raw_loop(dir, threads, size, Until::Time(SLICE))?;
    Ok(Run {
        rate: raw.count as f64 / raw.secs,
        cpu: raw.cpu / raw.count as f64,
    })
}

/// How long a raw loop runs: a time, or a number of deliveries in all.
#[derive(Clone, Copy)]
enum Until {
    Time(Duration),
    Count(u64),
}

/// What a raw loop did: deliveries, seconds, and this process's CPU time
/// in microseconds.
struct RawRun {
    count: u64,
    secs: f64,
    cpu: f64,
}

/// The raw loop of [`raw_ceiling`], `threads` at once, until `until`.
fn raw_loop(dir: &Path, threads: usize, size: usize, until: Until) -> Res<RawRun> {
    // This process does nothing else meanwhile: its CPU time is the loop's.
    let cpu = cpu_us(std::process::id())?;
    let (tmp, new) = (dir.join("tmp"), dir.join("new"));
    fs::create_dir_all(&tmp)?;
    fs::create_dir_all(&new)?;
    let (total, tickets) = (AtomicU64::new(0), AtomicU64::new(0));
    let started = Instant::now();
    let go = || match until {
        Until::Time(limit) => started.elapsed() < limit,
        Until::Count(count) => tickets.fetch_add(1, Relaxed) < count,
    };
    let deliver = |t: usize| -> io::Result<()> {
        let payload = vec![b'x'; size];
        let mut n = 0u64;
        let mut create = OpenOptions::new();
        create.write(true).create_new(true).mode(0o600);
        while go() {
            let name = format!("{t}.{n}");
            let mut file = create.open(tmp.join(&name))?;
            file.write_all(&payload)?;
            file.sync_all()?;
            drop(file);
            fs::hard_link(tmp.join(&name), new.join(&name))?;
            File::open(&new)?.sync_all()?;
            fs::remove_file(tmp.join(&name))?;
            n += 1;
        }
        total.fetch_add(n, Relaxed);
        Ok(())
    };
    let result = thread::scope(|s| {
        let workers: Vec<_> = (0..threads).map(|t| s.spawn(move || deliver(t))).collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("raw loop thread"))
    });
    let secs = started.elapsed().as_secs_f64();
    result?;
    Ok(RawRun {
        count: total.load(Relaxed),
        secs,
        cpu: cpu_us(std::process::id())? - cpu,
    })
}

/// Moves `dir` into `work`'s `retired/`, deleted when the benchmark ends,
/// after emptying its big files (truncating frees their blocks but not
/// their inodes). Deleting here would skew the runs that follow: ext4
/// without a journal passes over every inode freed in the last 60 to 300
/// seconds on each new allocation (`recently_deleted` in
/// fs/ext4/ialloc.c), which cut the next run's rate by up to 2.5× here.
/// Small files stay whole (about 1 GB for all the 4 KiB rows): freeing
/// their scattered blocks halved the 1 MiB rate that followed.
fn retire(dir: &Path, work: &Path) -> io::Result<()> {
    fn empty(dir: &Path) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                empty(&entry.path())?;
            } else if entry.metadata()?.len() > 64 * KIB as u64 {
                OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(entry.path())?;
            }
        }
        Ok(())
    }
    if !dir.exists() {
        return Ok(());
    }
    empty(dir)?;
    let retired = work.join("retired");
    fs::create_dir_all(&retired)?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    fs::rename(dir, retired.join(NEXT.fetch_add(1, Relaxed).to_string()))
}

/// Names the work dirs an interrupted run left behind (the disk rows keep
/// about 1 GB until the end). They are not removed here: deleting that many
/// files would slow the runs that follow (see `retire`).
fn warn_stale(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(prefix) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            // An interrupted run may have left its Postfix peer running.
            let postfix = entry.path().join("postfix/conf");
            if postfix.is_dir() {
                let _ = Command::new("postfix")
                    .arg("-c")
                    .arg(&postfix)
                    .arg("stop")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            eprintln!(
                "bench: {} is left from an interrupted run: remove it, and on ext4 \
                 without a journal wait 5 minutes before benchmarking",
                entry.path().display()
            );
        }
    }
}

/// smtp-sink's rate under the same load: the protocol ceiling. None
/// without smtp-sink or smtp-source.
fn sink_rate(b: &Bench, sessions: usize, size: usize) -> Res<Option<Run>> {
    let (Some(sink), Some(_)) = (&b.sink, &b.source) else {
        return Ok(None);
    };
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let mut cmd = Command::new(sink);
    if is_root() {
        cmd.args(["-u", "nobody"]); // required as root: it drops privileges
    }
    cmd.arg(addr.to_string())
        .arg("256")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let sink = Guard(cmd.spawn()?);
    wait_port(addr)?;
    let count = if sessions == 1 { 4000 } else { 10_000 };
    let cpu = cpu_us(sink.0.id())?;
    let started = Instant::now();
    load(b.source.as_deref(), addr, sessions, count, size)?;
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let cpu = (cpu_us(sink.0.id())? - cpu) / count as f64;
    Ok(Some(Run { rate, cpu }))
}

fn report(b: &Bench, rows: &[Row]) {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .unwrap_or("?");
    let cpu = cpu.trim_start_matches([' ', '\t', ':']);
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let work = b.work.0.parent().unwrap_or(&b.work.0).display().to_string();
    let fs_type = shell("df", &["--output=fstype", &work]);
    let fs_type = fs_type.lines().last().unwrap_or("?");
    let load = match (&b.source, &b.sink) {
        (Some(_), Some(_)) => "Postfix smtp-source; protocol ceiling: smtp-sink",
        _ => {
            "the bench's own Rust client (no smtp-source/smtp-sink: `apt-get install postfix`, \
              then `postfix stop`)"
        }
    };
    let date = shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    println!("\n## smtpbox benchmark, {date}\n");
    println!("- machine: {cores} CPUs ({cpu}), Linux {}", kernel.trim());
    println!("- work dir {work} on {fs_type}; tmpfs rows on /dev/shm");
    println!("- load: {load}; rates: best of {ROUNDS} interleaved runs of ~{SLICE:?}");
    println!("- raw fsync loop: create in tmp/, write, fsync, link into new/, fsync new/, unlink,");
    println!("  at the same concurrency on the same filesystem");
    println!("- CPU per message: utime + stime of the process under test (/proc/PID/stat)");
    println!("  over the run, lowest of the rounds; the raw loop's is this benchmark's own");
    println!(
        "- load average at the end: {}",
        shell("cat", &["/proc/loadavg"])
    );
    println!("- run dirs are deleted only at the end (1 MiB files are emptied): on ext4");
    println!("  without a journal, inodes freed in the last 60-300 s slow every new file\n");
    println!("| # | measurement | smtpbox | ceiling / target | ratio | result |");
    println!("|---|---|---|---|---|---|");
    let mut misses = 0;
    for r in rows {
        // "1" is the target of 1a and 1b, not of 10a or 11k.
        let target = TARGETS.iter().find(|t| {
            r.id.strip_prefix(t.0)
                .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_alphabetic()))
        });
        let (mut text, mut ratio, mut result) = ("", "—".to_string(), "info");
        match (r.judged, target) {
            (Some(x), Some(&(_, t, limit, at_least))) => {
                let pass = if at_least { x >= limit } else { x <= limit };
                let r = if at_least { x } else { x / limit };
                (text, result) = (t, if pass { "PASS" } else { "MISS" });
                if !r.is_nan() {
                    ratio = format!("{r:.2}");
                }
                misses += usize::from(!pass);
            }
            // An error in a row without a target.
            (Some(x), None) if x.is_nan() => {
                result = "MISS";
                misses += 1;
            }
            (Some(x), None) => ratio = format!("{x:.2}"),
            (None, _) => {}
        }
        let sep = if r.ceiling.is_empty() || text.is_empty() {
            ""
        } else {
            ", "
        };
        let ceiling = match [r.ceiling.as_str(), sep, text].concat() {
            c if c.is_empty() => "—".to_string(),
            c => c,
        };
        let shown = r.shown.replace(['\n', '|'], " ");
        let (id, what) = (r.id, &r.what);
        println!("| {id} | {what} | {shown} | {ceiling} | {ratio} | {result} |");
    }
    let judged = rows
        .iter()
        .filter(|r| r.judged.is_some() && TARGETS.iter().any(|t| r.id.starts_with(t.0)))
        .count();
    println!("\n{misses} MISS of {judged} rows with a target.");
}
