//! Rows 11a–11v (issue #26): efficiency the way an appliance feels it.
//!
//! - 11a, 11b: wake-ups per minute of an idle server that has served a
//!   burst: smtpbox (two TCP listeners, the local socket, TLS and a users
//!   file) and a private Postfix (`master` and its resident daemons), side
//!   by side over the same 60 s; counted as the context switches of every
//!   thread of every process (a thread that sleeps and wakes is switched
//!   out and in once).
//! - 11c–11l: on slow flash, 1 and 16 sessions, 1 KiB alerts: smtpbox
//!   (plain, and with `maildir_quota`, which appends to `maildirsize` with
//!   every message), the raw loop and Postfix: deliveries per second,
//!   device flushes and device bytes written per message. Slow flash is
//!   this directory's `slowdev.c` (a FUSE file whose every fsync takes
//!   20 ms, one request at a time, as on an SD card), a loop device on it
//!   and a journaled ext4 on that (`-E lazy_itable_init=0,
//!   lazy_journal_init=0`): the kernel batches as it does on a real card,
//!   and /sys/block/loopN/stat counts every flush and byte. Built when
//!   gcc, pkg-config and libfuse3-dev are there; n/a otherwise.
//! - 11s–11v: on slow flash (11s, 11u at 1 session; 11t, 11v at 16), smtpbox with `notify` set and no rate limit,
//!   so that a program (`cat > /dev/null`: it reads the whole message)
//!   runs for every message: rate and device bytes per message against
//!   the raw loop, the programs' runs included (they read the message
//!   through the descriptor smtpbox passes, which must not write).
//! - 11m–11r: the same stack without the FUSE file (the loop device on a
//!   tmpfs file, no latency): bytes per message, and smtpbox's fsyncs per
//!   message (strace).
//!
//! Everything runs as root (loop devices, mounts, Postfix) on loopback
//! and under `target/` and /dev/shm, and is torn down on drop.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::{raw_loop, row, Bench, Row, Until};

/// Message size: an alert.
const SIZE: usize = KIB;
/// Messages per run: about five seconds on slow flash.
const COUNT_1: usize = 60;
const COUNT_16: usize = 480;
/// The idle window.
const IDLE_WINDOW: Duration = Duration::from_secs(60);
/// The device's size (a sparse file on /dev/shm).
const DEVICE_MIB: u64 = 512;
/// What one flush costs on slow flash.
const FLUSH_MS: &str = "20";

pub fn rows(b: &Bench, root: &Path) -> Res<Vec<Row>> {
    let mut rows = Vec::new();
    if !is_root() {
        let na = |id, what| row(id, what, "n/a: needs root".into(), None);
        rows.push(na("11a", "idle wake-ups"));
        rows.push(na("11c", "slow flash"));
        return Ok(rows);
    }
    eprintln!("bench: 11a idle wake-ups (60 s)");
    rows.extend(
        idle(b).unwrap_or_else(|e| vec![row("11a", "idle wake-ups", format!("error: {e}"), None)]),
    );
    eprintln!("bench: 11c slow flash");
    match build_slowdev(root) {
        Ok(slowdev) => rows.extend(flash(b, Some(&slowdev)).unwrap_or_else(|e| {
            vec![row(
                "11c",
                "slow flash",
                format!("error: {e}"),
                Some(f64::NAN),
            )]
        })),
        Err(e) => rows.push(row("11c", "slow flash", format!("n/a: {e}"), None)),
    }
    eprintln!("bench: 11m latency-free loop device");
    rows.extend(
        flash(b, None)
            .unwrap_or_else(|e| vec![row("11m", "loop device", format!("error: {e}"), None)]),
    );
    Ok(rows)
}

// ------------------------------------------------------------ idle

/// Rows 11a and 11b.
fn idle(b: &Bench) -> Res<Vec<Row>> {
    let dir = b.work.0.join("r11-idle");
    fs::create_dir_all(&dir)?;
    let (cert, key) = make_cert(&dir)?;
    let hash = Command::new("openssl")
        .args(["passwd", "-6", "secret"])
        .output()?;
    let users = dir.join("users");
    fs::write(
        &users,
        format!("alice:{}", String::from_utf8_lossy(&hash.stdout)),
    )?;
    let submission = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let extra = format!(
        "tls_cert = {}\ntls_key = {}\nusers = {}\nlisten = {submission}/submission\n\
         local_socket = {}/run/smtpbox.sock\n",
        cert.display(),
        key.display(),
        users.display(),
        dir.join("srv").display()
    );
    let server = Server::start(&b.bin, &dir.join("srv"), &extra, Some("warn"))?;
    let postfix = Postfix::start(&dir.join("postfix"))?;

    // A burst: 24 sessions open at once on each server, then all closed.
    let mut targets = vec![server.addr, submission];
    if let Some(p) = &postfix {
        targets.push(p.addr);
    }
    for addr in targets {
        let mut open = Vec::new();
        for _ in 0..24 {
            let mut c = Smtp::connect(addr)?;
            c.greeting_and_ehlo()?;
            open.push(c);
        }
        for mut c in open {
            c.quit()?;
        }
    }
    // smtpbox's surplus threads retire 2 s after their last accept.
    thread::sleep(Duration::from_secs(5));

    let postfix_pids = || -> Vec<u32> {
        postfix
            .as_ref()
            .and_then(|p| p.master_pid())
            .map(|m| std::iter::once(m).chain(children(m)).collect())
            .unwrap_or_default()
    };
    let before = (switches(&[server.pid()]), switches(&postfix_pids()));
    thread::sleep(IDLE_WINDOW);
    let after = (switches(&[server.pid()]), switches(&postfix_pids()));
    let per_minute = |a: u64, b: u64| a.saturating_sub(b) as f64 * 60.0 / IDLE_WINDOW.as_secs_f64();
    let ours = per_minute(after.0, before.0);
    let mut rows = vec![row(
        "11a",
        "idle wake-ups per minute, smtpbox after a burst (2 TCP listeners, local socket, TLS, users)",
        format!("{ours:.0}"),
        Some(ours),
    )];
    rows.push(match postfix {
        Some(_) => {
            let theirs = per_minute(after.1, before.1);
            Row {
                ceiling: format!("smtpbox {ours:.0}"),
                ..row(
                    "11b",
                    "idle wake-ups per minute, Postfix 3 after a burst (master and its daemons)",
                    format!("{theirs:.0}"),
                    None,
                )
            }
        }
        None => row(
            "11b",
            "idle wake-ups per minute, Postfix",
            "n/a: Postfix not installed".into(),
            None,
        ),
    });
    Ok(rows)
}

/// Context switches, voluntary and not, of every thread of `pids`.
fn switches(pids: &[u32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let status = fs::read_to_string(task.path().join("status")).unwrap_or_default();
            total += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    total
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // "PID (COMM) STATE PPID ...": the fields after the last ')'.
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(pid)
        })
        .collect()
}

// ------------------------------------------------------------ devices

/// Builds `slowdev` into `target/bench-slowdev`.
fn build_slowdev(root: &Path) -> Res<PathBuf> {
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "fuse3"])
        .output()
        .map_err(|e| format!("pkg-config: {e} (apt-get install pkg-config libfuse3-dev fuse3)"))?;
    if !flags.status.success() {
        return Err("no fuse3 for pkg-config (apt-get install libfuse3-dev fuse3)".into());
    }
    if find_tool("fusermount3").is_none() {
        return Err("no fusermount3 (apt-get install fuse3)".into());
    }
    let out_dir = root.join("target/bench-slowdev");
    fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("slowdev");
    let flags = String::from_utf8_lossy(&flags.stdout).to_string();
    let status = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(root.join("benches/flash/slowdev.c"))
        .args(flags.split_whitespace())
        .status()
        .map_err(|e| format!("gcc: {e}"))?;
    if !status.success() {
        return Err("gcc failed to build slowdev".into());
    }
    Ok(out)
}

/// A journaled ext4 on a loop device, on slow flash (the FUSE file) or on
/// a tmpfs file; mounted at `mount`. Torn down on drop, in reverse.
struct Device {
    base: PathBuf,
    mount: PathBuf,
    /// `loopN`.
    name: String,
    slowdev: Option<(Child, PathBuf)>,
}

/// What the device did: flushes and bytes written.
#[derive(Clone, Copy, Default)]
struct Io {
    flushes: u64,
    bytes: u64,
}

impl Device {
    fn new(b: &Bench, slowdev: Option<&Path>) -> Res<Device> {
        let tag = if slowdev.is_some() { "slow" } else { "fast" };
        let base = b.shm.0.join(format!("r11-{tag}"));
        fs::create_dir_all(&base)?;
        let backing = base.join("backing.img");
        let file = fs::File::create(&backing)?;
        file.set_len(DEVICE_MIB << 20)?;
        drop(file);
        let mut device = Device {
            mount: b.work.0.join(format!("r11-{tag}-mnt")),
            base: base.clone(),
            name: String::new(),
            slowdev: None,
        };
        let image = match slowdev {
            Some(slowdev) => {
                let fuse = base.join("fuse");
                fs::create_dir_all(&fuse)?;
                let child = Command::new(slowdev)
                    .arg(&backing)
                    .arg(&fuse)
                    .args(["-s", "-f"])
                    .env("SLOWDEV_FLUSH_MS", FLUSH_MS)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?;
                device.slowdev = Some((child, fuse.clone()));
                let image = fuse.join("disk.img");
                let end = Instant::now() + Duration::from_secs(10);
                while !image.exists() {
                    if Instant::now() > end {
                        return Err("slowdev did not mount".into());
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                image
            }
            None => backing,
        };
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output()?;
        if !out.status.success() {
            return Err(format!("losetup: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        device.name = dev.trim_start_matches("/dev/").to_string();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&dev))?;
        fs::create_dir_all(&device.mount)?;
        run(Command::new("mount").arg(&dev).arg(&device.mount))?;
        Ok(device)
    }

    /// Everything written so far on stable storage (syncfs), then the
    /// device's counters.
    fn settled(&self) -> Res<Io> {
        run(Command::new("sync").arg("-f").arg(&self.mount))?;
        let stat = fs::read_to_string(format!("/sys/block/{}/stat", self.name))?;
        let f: Vec<u64> = stat
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // Field 7: sectors written (512 bytes); field 16: flushes done.
        Ok(Io {
            bytes: f.get(6).copied().unwrap_or(0) * 512,
            flushes: f.get(15).copied().unwrap_or(0),
        })
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        if !self.name.is_empty() {
            let _ = Command::new("losetup")
                .args(["-d", &format!("/dev/{}", self.name)])
                .status();
        }
        if let Some((child, fuse)) = &mut self.slowdev {
            let _ = Command::new("fusermount3").arg("-u").arg(&*fuse).status();
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir(&self.mount);
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn run(cmd: &mut Command) -> Res<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{:?}: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into()),
    }
}

// ------------------------------------------------------------ runs

/// One system's run: deliveries per second, flushes and bytes per
/// message.
#[derive(Clone, Copy)]
struct Measured {
    rate: f64,
    flushes: f64,
    bytes: f64,
}

impl Measured {
    fn of(count: usize, secs: f64, before: Io, after: Io) -> Measured {
        let n = count as f64;
        Measured {
            rate: n / secs,
            flushes: after.flushes.saturating_sub(before.flushes) as f64 / n,
            bytes: after.bytes.saturating_sub(before.bytes) as f64 / n,
        }
    }

    fn shown(&self) -> String {
        format!(
            "{:.1} msg/s, {:.2} flushes, {:.1} KB per message",
            self.rate,
            self.flushes,
            self.bytes / 1000.0
        )
    }
}

/// smtpbox with `extra` on the device: `count` messages over `sessions`.
fn smtpbox(
    b: &Bench,
    dev: &Device,
    tag: &str,
    extra: &str,
    sessions: usize,
    count: usize,
) -> Res<Measured> {
    let dir = dev.mount.join(tag);
    let server = Server::start(&b.bin, &dir, extra, Some("warn"))?;
    let before = dev.settled()?;
    let started = Instant::now();
    load(b.source.as_deref(), server.addr, sessions, count, SIZE)?;
    let secs = started.elapsed().as_secs_f64();
    let stored = fs::read_dir(dir.join("Maildir/new"))?.count();
    let after = dev.settled()?;
    if stored != count {
        return Err(format!("{stored} of {count} stored; log: {}", server.log_tail()).into());
    }
    Ok(Measured::of(count, secs, before, after))
}

/// smtpbox with a notify program for every message (rows 11s–11v); the
/// device is measured once every program has run. Returns the runs too.
fn notified(
    b: &Bench,
    dev: &Device,
    tag: &str,
    sessions: usize,
    count: usize,
) -> Res<(Measured, usize)> {
    // Off the device: the program and its record of runs. As root without
    // `user`, programs run as nobody.
    let side = PathBuf::from(format!(
        "/dev/shm/smtpbox-bench-notify-{}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&side);
    fs::create_dir_all(&side)?;
    let runs = side.join("runs");
    let program = side.join("hook");
    fs::write(&runs, "")?;
    fs::write(
        &program,
        format!("#!/bin/sh\ncat > /dev/null\necho x >> {}\n", runs.display()),
    )?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&side, fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(&runs, fs::Permissions::from_mode(0o666))?;
    let extra = format!("notify = {}\nnotify_rate = 100000/1m\n", program.display());
    let dir = dev.mount.join(tag);
    let server = Server::start(&b.bin, &dir, &extra, Some("warn"))?;
    let before = dev.settled()?;
    let started = Instant::now();
    load(b.source.as_deref(), server.addr, sessions, count, SIZE)?;
    let secs = started.elapsed().as_secs_f64();
    let stored = fs::read_dir(dir.join("Maildir/new"))?.count();
    if stored != count {
        return Err(format!("{stored} of {count} stored; log: {}", server.log_tail()).into());
    }
    // Every program has run when the count of runs stops moving for a
    // second (a full backlog suppresses some: they never run).
    let ran = || fs::read_to_string(&runs).map(|t| t.lines().count());
    let mut last = (ran()?, Instant::now());
    while last.1.elapsed() < Duration::from_secs(1) && started.elapsed() < LIMIT {
        thread::sleep(Duration::from_millis(50));
        let now = ran()?;
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let after = dev.settled()?;
    drop(server);
    let _ = fs::remove_dir_all(&side);
    Ok((Measured::of(count, secs, before, after), last.0))
}

/// The raw loop on the device.
fn raw(dev: &Device, tag: &str, sessions: usize, count: usize) -> Res<Measured> {
    let dir = dev.mount.join(tag);
    let before = dev.settled()?;
    let done = raw_loop(&dir, sessions, SIZE, Until::Count(count as u64))?;
    let after = dev.settled()?;
    Ok(Measured::of(done.count as usize, done.secs, before, after))
}

/// Postfix on the device: accepted per second; flushes and bytes until
/// every message is in its Maildir.
fn postfix(
    b: &Bench,
    postfix: &Postfix,
    dev: &Device,
    sessions: usize,
    count: usize,
) -> Res<Measured> {
    let already = postfix.delivered();
    let before = dev.settled()?;
    let started = Instant::now();
    load(b.source.as_deref(), postfix.addr, sessions, count, SIZE)?;
    let secs = started.elapsed().as_secs_f64();
    while postfix.delivered() < already + count {
        if started.elapsed() > LIMIT {
            return Err("Postfix did not deliver every message in time".into());
        }
        thread::sleep(Duration::from_millis(10));
    }
    let after = dev.settled()?;
    Ok(Measured::of(count, secs, before, after))
}

/// Rows 11c–11l (`slowdev` given) or 11m–11r (the loop device on tmpfs).
fn flash(b: &Bench, slowdev: Option<&Path>) -> Res<Vec<Row>> {
    let dev = Device::new(b, slowdev)?;
    let slow = slowdev.is_some();
    let place = if slow {
        "slow flash"
    } else {
        "loop device, no latency"
    };
    let pf = Postfix::start(&dev.mount.join("postfix"))?;
    let mut rows = Vec::new();
    let ids: [[&'static str; 5]; 2] = if slow {
        [
            ["11c", "11e", "11g", "11i", "11k"],
            ["11d", "11f", "11h", "11j", "11l"],
        ]
    } else {
        [["11m", "11o", "11q", "", ""], ["11n", "11p", "11r", "", ""]]
    };
    for (ids, (sessions, count)) in ids.iter().zip([(1, COUNT_1), (16, COUNT_16)]) {
        let tag = |name: &str| format!("{name}-{sessions}");
        let loop_ = raw(&dev, &tag("raw"), sessions, count)?;
        let ours = smtpbox(b, &dev, &tag("smtpbox"), "", sessions, count)?;
        let quota = "maildir_quota = 1099511627775\n";
        let counted = smtpbox(b, &dev, &tag("quota"), quota, sessions, count)?;
        let hooked = match slow {
            true => Some(notified(b, &dev, &tag("notify"), sessions, count)?),
            false => None,
        };
        let theirs = match &pf {
            Some(pf) => Some(postfix(b, pf, &dev, sessions, count)?),
            None => None,
        };
        let what = |s: &str| format!("{place}, {sessions} × 1 KiB: {s}");
        let vs_raw = format!("raw loop {}", loop_.shown());
        let postfix_text = theirs.map_or("Postfix n/a".to_string(), |t| {
            format!("Postfix {}", t.shown())
        });
        if slow {
            rows.push(Row {
                ceiling: vs_raw.clone(),
                ..row(
                    ids[0],
                    &what("smtpbox rate"),
                    ours.shown(),
                    Some(ours.rate / loop_.rate),
                )
            });
            rows.push(Row {
                ceiling: vs_raw.clone(),
                ..row(
                    ids[1],
                    &what("smtpbox bytes per message"),
                    format!("{:.1} KB", ours.bytes / 1000.0),
                    Some(ours.bytes / loop_.bytes),
                )
            });
            rows.push(Row {
                ceiling: vs_raw.clone(),
                ..row(
                    ids[2],
                    &what("smtpbox with `maildir_quota`, rate"),
                    counted.shown(),
                    Some(counted.rate / loop_.rate),
                )
            });
            rows.push(Row {
                ceiling: vs_raw.clone(),
                ..row(
                    ids[3],
                    &what("smtpbox with `maildir_quota`, bytes per message"),
                    format!("{:.1} KB", counted.bytes / 1000.0),
                    Some(counted.bytes / loop_.bytes),
                )
            });
            if let Some((hooked, runs)) = hooked {
                let notify_ids = if sessions == 1 {
                    ["11s", "11u"]
                } else {
                    ["11t", "11v"]
                };
                rows.push(Row {
                    ceiling: vs_raw.clone(),
                    ..row(
                        notify_ids[0],
                        &what("smtpbox with `notify`, a program per message, rate"),
                        format!("{} ({runs} runs)", hooked.shown()),
                        Some(hooked.rate / loop_.rate),
                    )
                });
                rows.push(Row {
                    ceiling: vs_raw.clone(),
                    ..row(
                        notify_ids[1],
                        &what("smtpbox with `notify`, bytes per message"),
                        format!("{:.1} KB", hooked.bytes / 1000.0),
                        Some(hooked.bytes / loop_.bytes),
                    )
                });
            }
            if let Some(t) = theirs {
                rows.push(Row {
                    ceiling: format!("smtpbox {}", ours.shown()),
                    ..row(
                        ids[4],
                        &what("Postfix 3 (peer)"),
                        t.shown(),
                        Some(t.rate / ours.rate),
                    )
                });
            } else {
                rows.push(row(
                    ids[4],
                    &what("Postfix 3 (peer)"),
                    "n/a: Postfix not installed".into(),
                    None,
                ));
            }
        } else {
            rows.push(Row {
                ceiling: format!("{vs_raw}; {postfix_text}"),
                ..row(
                    ids[0],
                    &what("bytes per message, smtpbox (and with `maildir_quota`)"),
                    format!(
                        "{:.1} KB ({:.1} KB)",
                        ours.bytes / 1000.0,
                        counted.bytes / 1000.0
                    ),
                    Some(ours.bytes / loop_.bytes),
                )
            });
            rows.push(Row {
                ceiling: format!("smtpbox {:.1} KB", ours.bytes / 1000.0),
                ..row(
                    ids[1],
                    &what("bytes per message, Postfix 3 (peer)"),
                    theirs.map_or("n/a".to_string(), |t| format!("{:.1} KB", t.bytes / 1000.0)),
                    theirs.map(|t| t.bytes / ours.bytes),
                )
            });
            rows.push(fsyncs(
                b,
                &dev,
                ids[2],
                &what("smtpbox fsyncs per message (strace)"),
                sessions,
                count,
            ));
        }
    }
    drop(pf);
    Ok(rows)
}

/// smtpbox's fsync and fdatasync calls per message on the device.
fn fsyncs(
    b: &Bench,
    dev: &Device,
    id: &'static str,
    what: &str,
    sessions: usize,
    count: usize,
) -> Row {
    let Some(strace) = &b.strace else {
        return row(id, what, "n/a: strace not installed".into(), None);
    };
    let measured = || -> Res<f64> {
        let dir = dev.mount.join(format!("traced-{sessions}"));
        let filter = ["--seccomp-bpf", "-e", "trace=fsync,fdatasync"];
        let server = TracedServer::start(strace, &b.bin, &dir, &filter)?;
        load(b.source.as_deref(), server.addr, sessions, count, SIZE)?;
        let calls = server.finish()?;
        Ok(calls.values().sum::<u64>() as f64 / count as f64)
    };
    match measured() {
        Ok(n) => row(id, what, format!("{n:.2}"), Some(n)),
        Err(e) => row(id, what, format!("error: {e}"), None),
    }
}
