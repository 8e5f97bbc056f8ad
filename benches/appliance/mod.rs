//! Rows 6d–6j: the appliance builds of `scripts/cross.sh` (README
//! "Building for an appliance"): each target's stripped size against its
//! footprint target, then musl's server CPU per message against glibc's,
//! both built the same way, in the same run under the same load.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use crate::{row, Bench, Row, ROUNDS};

/// Row id, target triple, stripped-size limit in bytes (issue 14).
const BUILDS: [(&str, &str, f64); 6] = [
    ("6d", "x86_64-unknown-linux-musl", 1.3e6),
    ("6e", "aarch64-unknown-linux-musl", 1.2e6),
    ("6f", "armv7-unknown-linux-musleabihf", 0.9e6),
    ("6g", "mips-unknown-linux-musl", 1.3e6),
    ("6h", "mipsel-unknown-linux-musl", 1.3e6),
    ("6i", "x86_64-unknown-linux-gnu", 1.3e6),
];

/// musl's CPU per message may be at most this many times glibc's.
const CPU_RATIO: f64 = 1.25;

/// Builds every target (incremental after the first run: std is rebuilt
/// once per target, ~3 minutes each on 2 cores) and measures.
pub fn rows(b: &Bench, root: &Path) -> Res<Vec<Row>> {
    let out = Command::new(root.join("scripts/cross.sh"))
        .args(BUILDS.iter().map(|t| t.1))
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("scripts/cross.sh failed: {}", out.status).into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let built = |target: &str| -> Option<PathBuf> {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.first() == Some(&target))
            .and_then(|w| w.get(1).map(|p| root.join(p)))
    };
    let mut rows = Vec::new();
    for (id, target, limit) in BUILDS {
        let what = format!("stripped binary, appliance build, {target}");
        let limit_text = format!("≤ {:.1} MB", limit / 1e6);
        let shown = match built(target)
            .ok_or("not built".into())
            .and_then(|p| stripped_size(&p))
        {
            Ok(n) => (
                format!("{:.2} MB ({n} B)", n as f64 / 1e6),
                n as f64 / limit,
            ),
            Err(e) => (format!("error: {e}"), f64::NAN),
        };
        rows.push(Row {
            ceiling: limit_text,
            ..row(id, &what, shown.0, Some(shown.1))
        });
    }
    let what = "server CPU per 4 KiB message, musl / glibc (appliance builds, tmpfs, 16 sessions)";
    let cpu = match (built(BUILDS[0].1), built(BUILDS[5].1)) {
        (Some(musl), Some(glibc)) => cpu_row(b, &musl, &glibc, what),
        _ => Err("a build is missing".into()),
    };
    rows.push(cpu.unwrap_or_else(|e| row("6j", what, format!("error: {e}"), Some(f64::NAN))));
    Ok(rows)
}

/// Interleaved rounds on each binary; the lowest CPU per message of each.
fn cpu_row(b: &Bench, musl: &Path, glibc: &Path, what: &str) -> Res<Row> {
    let (mut best_musl, mut best_glibc) = (f64::INFINITY, f64::INFINITY);
    for round in 0..ROUNDS {
        best_musl = best_musl.min(cpu_per_message(b, musl, round)?);
        best_glibc = best_glibc.min(cpu_per_message(b, glibc, round)?);
    }
    let ratio = best_musl / best_glibc;
    Ok(Row {
        ceiling: format!("≤ {CPU_RATIO}× glibc"),
        ..row(
            "6j",
            what,
            format!("musl {best_musl:.0} µs, glibc {best_glibc:.0} µs: {ratio:.2}×"),
            Some(ratio / CPU_RATIO),
        )
    })
}

/// The server's utime + stime (from /proc/PID/stat) per delivered message.
fn cpu_per_message(b: &Bench, bin: &Path, round: usize) -> Res<f64> {
    const COUNT: usize = 4000;
    let name = bin
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map_or("bin".into(), |n| n.to_string_lossy().into_owned());
    let dir = b.shm.0.join(format!("srv-6j-{name}-{round}"));
    let server = Server::start(bin, &dir, "", None)?;
    let before = cpu_ticks(server.pid())?;
    load(b.source.as_deref(), server.addr, 16, COUNT, 4 * KIB)?;
    // The last replies are out; the session threads may still be closing.
    std::thread::sleep(Duration::from_millis(200));
    let ticks = cpu_ticks(server.pid())? - before;
    let stored = std::fs::read_dir(dir.join("Maildir/new"))?.count();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    if stored != COUNT {
        return Err(format!("{stored} of {COUNT} messages stored").into());
    }
    let hz: f64 = shell("getconf", &["CLK_TCK"])
        .trim()
        .parse()
        .unwrap_or(100.0);
    Ok(ticks as f64 / hz * 1e6 / COUNT as f64)
}

/// utime + stime of a process, in clock ticks (fields 14 and 15 of
/// /proc/PID/stat, counted after the `(comm)` field, which may hold spaces).
fn cpu_ticks(pid: u32) -> Res<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> Res<u64> {
        Ok(fields
            .get(i)
            .ok_or("short /proc/PID/stat")?
            .parse::<u64>()?)
    };
    // After ")": state is field 3, so utime (14) and stime (15) are 11, 12.
    Ok(field(11)? + field(12)?)
}
