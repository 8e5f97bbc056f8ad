//! Helpers for benches/throughput.rs: child processes and directories
//! cleaned up on drop, smtpbox started on loopback, a minimal SMTP client
//! (plain or rustls), the load generator (smtp-source or our own client),
//! and small /proc and build utilities.

use std::error::Error;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::crypto::ring;
use rustls::pki_types::{pem::PemObject, CertificateDer};
use rustls::{ClientConfig, RootCertStore};

pub type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Hard limit for one load run.
pub const LIMIT: Duration = Duration::from_secs(60);
pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;
pub const FROM: &str = "bench@example.org";
pub const TO: &str = "root@example.com";

// --------------------------------------------------------------- load

/// `count` messages of `size` bytes, a connection each, over `sessions`
/// parallel sessions, each command waiting for its reply.
pub fn load(
    source: Option<&Path>,
    addr: SocketAddr,
    sessions: usize,
    count: usize,
    size: usize,
) -> Res<()> {
    if let Some(source) = source {
        let mut cmd = Command::new(source);
        let (s, m, l) = (sessions.to_string(), count.to_string(), size.to_string());
        cmd.args([
            "-s",
            &s,
            "-m",
            &m,
            "-l",
            &l,
            "-f",
            FROM,
            "-t",
            TO,
            "-M",
            "client.bench",
        ]);
        return run_limited(cmd.arg(addr.to_string()));
    }
    let (next, body) = (AtomicUsize::new(0), message(size));
    let client = || -> Res<()> {
        while next.fetch_add(1, Relaxed) < count {
            let mut c = Smtp::connect(addr)?;
            c.greeting_and_ehlo()?;
            c.send_message(&body)?;
            c.quit()?;
        }
        Ok(())
    };
    thread::scope(|s| {
        let workers: Vec<_> = (0..sessions).map(|_| s.spawn(client)).collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("client thread"))
    })
}

/// Runs `cmd` to its end; kills it after `LIMIT`.
pub fn run_limited(cmd: &mut Command) -> Res<()> {
    let name = format!("{:?}", cmd.get_program());
    let mut child = Guard(cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?);
    let started = Instant::now();
    loop {
        match child.0.try_wait()? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                let mut err = String::new();
                child
                    .0
                    .stderr
                    .take()
                    .ok_or("stderr")?
                    .read_to_string(&mut err)?;
                return Err(format!("{name} {status}: {}", err.trim()).into());
            }
            None if started.elapsed() > LIMIT => return Err(format!("{name}: timed out").into()),
            None => thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// A message of exactly `size` bytes (at least 20): a Subject, then lines
/// of 78 bytes and a shorter last one.
pub fn message(size: usize) -> Vec<u8> {
    let mut m = b"Subject: bench\r\n\r\n".to_vec();
    while m.len() < size {
        let len = (size - m.len()).clamp(3, 78);
        m.extend_from_slice(&[b"x".repeat(len - 2), b"\r\n".to_vec()].concat());
    }
    m
}

/// A minimal SMTP client over any stream (TCP, or rustls over TCP).
pub struct Smtp<S: Read + Write> {
    stream: BufReader<S>,
    line: String,
}

impl Smtp<TcpStream> {
    pub fn connect(addr: SocketAddr) -> Res<Smtp<TcpStream>> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        tcp.set_nodelay(true)?;
        Ok(Smtp::new(tcp))
    }
}

impl<S: Read + Write> Smtp<S> {
    pub fn new(stream: S) -> Smtp<S> {
        let stream = BufReader::with_capacity(16 * KIB, stream);
        Smtp {
            stream,
            line: String::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> Res<()> {
        self.stream.get_mut().write_all(bytes)?;
        Ok(self.stream.get_mut().flush()?)
    }

    /// Reads one reply per code in `codes`, checking each.
    pub fn expect(&mut self, codes: &[u16]) -> Res<()> {
        for code in codes {
            loop {
                self.line.clear();
                if self.stream.read_line(&mut self.line)? == 0 {
                    return Err("server closed the connection".into());
                }
                if !self.line.starts_with(&code.to_string()) {
                    let got = self.line.trim_end();
                    return Err(format!("expected {code}, got {got:?}").into());
                }
                if self.line.as_bytes().get(3) != Some(&b'-') {
                    break;
                }
            }
        }
        Ok(())
    }

    pub fn greeting_and_ehlo(&mut self) -> Res<()> {
        self.expect(&[220])?;
        self.send(b"EHLO client.bench\r\n")?;
        self.expect(&[250])
    }

    /// One transaction, each command waiting for its reply.
    pub fn send_message(&mut self, body: &[u8]) -> Res<()> {
        let (mail, rcpt) = (format!("MAIL FROM:<{FROM}>"), format!("RCPT TO:<{TO}>"));
        for (cmd, code) in [(mail.as_str(), 250), (&rcpt, 250), ("DATA", 354)] {
            self.send(format!("{cmd}\r\n").as_bytes())?;
            self.expect(&[code])?;
        }
        self.send(&[body, b".\r\n"].concat())?;
        self.expect(&[250])
    }

    pub fn quit(&mut self) -> Res<()> {
        self.send(b"QUIT\r\n")?;
        self.expect(&[221])
    }
}

pub fn tls_client(cert: &Path) -> Res<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(cert)?)?;
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

// ------------------------------------------------------------- server

/// A child process, killed and reaped on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` (`-INT`, `-TERM`…) to process `pid`.
pub fn signal(pid: impl ToString, signal: &str) -> Res<()> {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()?;
    Ok(())
}

/// Waits up to `limit` for `child` to exit (a tracer writing its counts).
pub fn wait_within(child: &mut Child, limit: Duration, what: &str) -> Res<()> {
    let end = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > end {
            return Err(format!("{what} did not exit").into());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(parent: &Path, tag: &str) -> TempDir {
        let path = parent.join(format!("{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// smtpbox on 127.0.0.1 (and an implicit-TLS listener when `extra` names
/// a certificate); config, Maildir and log in `dir`, removed on drop.
pub struct Server {
    child: Guard,
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub dir: TempDir,
}

impl Server {
    pub fn start(bin: &Path, dir: &Path, extra: &str, log_level: Option<&str>) -> Res<Server> {
        fs::create_dir_all(dir)?;
        let dir = TempDir(dir.to_path_buf());
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let addr = local(free_port()?);
        let mut conf = format!(
            "listen = {addr}\nhostname = mx.bench\ndomain = example.com\nmaildir = {}/Maildir\n\
             max_connections = 2000\nmax_connections_per_ip = 2000\n\
             max_message_size = 209715200\ntimeout = 60\n{extra}",
            dir.0.display()
        );
        let tls_addr = match extra.contains("tls_cert") {
            true => Some(local(free_port()?)),
            false => None,
        };
        if let Some(tls) = tls_addr {
            conf.push_str(&format!("listen = {tls}/tls\n"));
        }
        fs::write(dir.0.join("smtpbox.conf"), conf)?;
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(dir.0.join("smtpbox.conf"))
            .env_remove("RUST_LOG");
        if let Some(level) = log_level {
            cmd.env("RUST_LOG", level);
        }
        let log = File::create(dir.0.join("server.log"))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let server = Server {
            child: Guard(cmd.spawn()?),
            addr,
            tls_addr,
            dir,
        };
        wait_port(addr).map_err(|e| format!("{e}; log: {}", server.log_tail()))?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.0.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    }
}

pub fn free_port() -> Res<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn wait_port(addr: SocketAddr) -> Res<()> {
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > end {
            return Err(format!("nothing listening on {addr}").into());
        }
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

// ------------------------------------------------------------ helpers

/// `cargo build --release`; with `target_dir`, the `+crt-static` build.
pub fn build(cargo: &str, root: &Path, target_dir: Option<&Path>) -> Res<PathBuf> {
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--bin", "smtpbox"])
        .current_dir(root);
    cmd.env_remove("RUSTFLAGS").stdout(Stdio::null());
    let path = match target_dir {
        None => root.join("target/release/smtpbox"),
        Some(dir) => {
            cmd.args(["--target", "x86_64-unknown-linux-gnu"])
                .env("CARGO_TARGET_DIR", dir);
            // The README's static build.
            cmd.env(
                "RUSTFLAGS",
                "-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs",
            );
            dir.join("x86_64-unknown-linux-gnu/release/smtpbox")
        }
    };
    let out = cmd.output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(4).collect();
        return Err(format!("build failed: {}", tail.join(" / ")).into());
    }
    Ok(path)
}

/// The size after `strip` (the profile strips already; this makes sure).
pub fn stripped_size(bin: &Path) -> Res<u64> {
    let copy = std::env::temp_dir().join(format!("smtpbox-strip-{}", std::process::id()));
    fs::copy(bin, &copy)?;
    let _ = Command::new("strip")
        .arg(&copy)
        .stderr(Stdio::null())
        .status();
    let size = fs::metadata(&copy).map(|m| m.len());
    let _ = fs::remove_file(&copy);
    Ok(size?)
}

/// A self-signed P-256 end-entity certificate for 127.0.0.1 (openssl CLI).
pub fn make_cert(dir: &Path) -> Res<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() {
        return Ok((cert, key));
    }
    fs::create_dir_all(dir)?;
    let args = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
                -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
                -addext basicConstraints=critical,CA:FALSE";
    let mut cmd = Command::new("openssl");
    cmd.args(args.split_whitespace())
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert);
    let status = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    if !status.success() {
        return Err("openssl req failed".into());
    }
    Ok((cert, key))
}

pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs: Vec<&str> = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin"])
        .collect();
    dirs.into_iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

pub fn proc_field(file: &Path, key: &str) -> Res<u64> {
    let text = fs::read_to_string(file)?;
    let mut values = text.lines().filter_map(|l| l.strip_prefix(key));
    let value = values.find_map(|v| v.split_whitespace().next()?.parse().ok());
    Ok(value.ok_or_else(|| format!("no {key} in {}", file.display()))?)
}

pub fn rss_kib(pid: u32) -> Res<u64> {
    proc_field(Path::new(&format!("/proc/{pid}/status")), "VmRSS:")
}

pub fn is_root() -> bool {
    proc_field(Path::new("/proc/self/status"), "Uid:").is_ok_and(|uid| uid == 0)
}

/// Flushes dirty pages so one disk run does not pay for the previous one.
pub fn sync() {
    let _ = Command::new("sync").status();
}

pub fn human(n: usize) -> String {
    match n >= MIB {
        true => format!("{} MiB", n / MIB),
        false => format!("{} KiB", n / KIB),
    }
}

pub fn shell(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

// ------------------------------------------------------------- CPU

/// Clock ticks per second of /proc's utime and stime (`getconf CLK_TCK`,
/// 100 on Linux unless the kernel says otherwise).
pub fn clock_ticks() -> f64 {
    shell("getconf", &["CLK_TCK"]).parse().unwrap_or(100.0)
}

/// CPU time used by process `pid` so far (user + system, every thread, no
/// children) in microseconds, from /proc/PID/stat.
pub fn cpu_us(pid: u32) -> Res<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Res<f64> { Ok(fields.get(i).ok_or("short stat")?.parse::<f64>()?) };
    Ok((tick(11)? + tick(12)?) * 1e6 / clock_ticks())
}

// ---------------------------------------------------- traced server

/// smtpbox started under `strace -f -c` (from its first system call, so
/// that no blocked call is interrupted by an attach); `finish` stops it and
/// returns the counts by system call name.
pub struct TracedServer {
    strace: Guard,
    pub addr: SocketAddr,
    pub dir: TempDir,
    out: PathBuf,
}

impl TracedServer {
    pub fn start(strace: &Path, bin: &Path, dir: &Path, filter: &[&str]) -> Res<TracedServer> {
        fs::create_dir_all(dir)?;
        let dir = TempDir(dir.to_path_buf());
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let conf = format!(
            "listen = {addr}\nhostname = mx.bench\ndomain = example.com\nmaildir = {}/Maildir\n\
             max_connections = 2000\nmax_connections_per_ip = 2000\ntimeout = 60\n",
            dir.0.display()
        );
        fs::write(dir.0.join("smtpbox.conf"), conf)?;
        let out = dir.0.join("strace.txt");
        let mut cmd = Command::new(strace);
        cmd.args(["-f", "-c", "-qq"])
            .args(filter)
            .arg("-o")
            .arg(&out);
        cmd.arg(bin)
            .arg("-c")
            .arg(dir.0.join("smtpbox.conf"))
            .env_remove("RUST_LOG");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let server = TracedServer {
            strace: Guard(cmd.spawn()?),
            addr,
            dir,
            out,
        };
        wait_port(addr)?;
        Ok(server)
    }

    /// The traced server's own PID (strace's child).
    fn tracee(&self) -> Option<String> {
        let id = self.strace.0.id();
        let children = fs::read_to_string(format!("/proc/{id}/task/{id}/children")).ok()?;
        children.split_whitespace().next().map(str::to_string)
    }

    /// Stops the server; strace then writes its table: calls by name.
    pub fn finish(mut self) -> Res<std::collections::HashMap<String, u64>> {
        if let Some(pid) = self.tracee() {
            signal(pid, "-TERM")?;
        }
        wait_within(&mut self.strace.0, Duration::from_secs(20), "strace")?;
        let text = fs::read_to_string(&self.out)?;
        let mut calls = std::collections::HashMap::new();
        for line in text.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let name = cols.last().copied().unwrap_or("");
            // "% time seconds usecs/call calls [errors] syscall"
            if let Some(n) = cols.get(3).and_then(|n| n.parse::<u64>().ok()) {
                if name != "total" {
                    calls.insert(name.to_string(), n);
                }
            }
        }
        Ok(calls)
    }
}

impl Drop for TracedServer {
    fn drop(&mut self) {
        // Killing strace alone would leave the server running, detached.
        if let Some(pid) = self.tracee() {
            let _ = signal(pid, "-KILL");
        }
    }
}

// ------------------------------------------------------------ Postfix

/// A private Postfix instance (its own config, queue and data directories
/// under `dir`) listening on 127.0.0.1, delivering every recipient of
/// example.com to one Maildir with virtual(8). Stopped on drop
/// (`postfix -c DIR stop`), so no Postfix daemon outlives the benchmark.
pub struct Postfix {
    dir: PathBuf,
    pub addr: SocketAddr,
}

impl Postfix {
    /// None when Postfix is not installed or this is not root.
    pub fn start(dir: &Path) -> Res<Option<Postfix>> {
        if !is_root() || find_tool("postfix").is_none() {
            return Ok(None);
        }
        let _ = fs::remove_dir_all(dir);
        for sub in ["conf", "spool", "data", "mail"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let owner = |path: &Path, user: &str| -> Res<()> {
            let status = Command::new("chown").arg(user).arg(path).status()?;
            match status.success() {
                true => Ok(()),
                false => Err(format!("chown {user} {}", path.display()).into()),
            }
        };
        owner(&dir.join("data"), "postfix")?;
        owner(&dir.join("mail"), "nobody")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let d = dir.display();
        let main = format!(
            "compatibility_level = 3.6\nqueue_directory = {d}/spool\ndata_directory = {d}/data\n\
             myhostname = mx.bench\nmydestination =\ninet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n\
             virtual_mailbox_domains = example.com\nvirtual_mailbox_base = {d}/mail\n\
             virtual_mailbox_maps = static:bench/\nvirtual_uid_maps = static:65534\n\
             virtual_gid_maps = static:65534\nmaillog_file_prefixes = {d}\n\
             maillog_file = {d}/maillog\ndefault_process_limit = 100\n"
        );
        fs::write(dir.join("conf/main.cf"), main)?;
        let services = [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "local unix - n n - - local",
            "virtual unix - n n - - virtual",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ];
        let master = format!("{addr} inet n - n - - smtpd\n{}\n", services.join("\n"));
        fs::write(dir.join("conf/master.cf"), master)?;
        let postfix = Postfix {
            dir: dir.to_path_buf(),
            addr,
        };
        postfix.command("start")?;
        wait_port(addr)?;
        Ok(Some(postfix))
    }

    fn command(&self, what: &str) -> Res<()> {
        let status = Command::new("postfix")
            .arg("-c")
            .arg(self.dir.join("conf"))
            .arg(what)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        match status.success() {
            true => Ok(()),
            false => {
                Err(format!("postfix {what} failed (see {}/maillog)", self.dir.display()).into())
            }
        }
    }

    /// The PID of its `master` process.
    pub fn master_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.dir.join("spool/pid/master.pid")).ok()?;
        text.trim().parse().ok()
    }

    /// Messages in the Maildir so far.
    pub fn delivered(&self) -> usize {
        fs::read_dir(self.dir.join("mail/bench/new")).map_or(0, |d| d.count())
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.command("stop");
    }
}
