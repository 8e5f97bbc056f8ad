//! The standalone server (SPEC §8): one accept thread per listener (the
//! TCP ones and the local submission socket), one thread per session with
//! a small stack, and the connection limits.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SendError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::auth::UsersFile;
use crate::config::{Config, Listen, Mode};
use crate::conn::{self, Limits};
use crate::privilege;
use crate::reply::Reply;
use crate::session::{Authenticator, LocalCaller, MaildirQuota, Peer, Services, Session};
use crate::tls::TlsFiles;
use crate::transport::{self, Transport};

/// Session threads' stack: debug builds overflow 64 KiB in the TLS
/// handshake; touched pages are all that count towards RSS.
const SESSION_STACK: usize = 256 * 1024;

/// The listen backlog when the kernel's limit cannot be read.
const DEFAULT_BACKLOG: usize = 4096;

extern "C" {
    fn listen(fd: i32, backlog: i32) -> i32;
}

/// A bound listener, ready to accept.
pub struct Bound {
    pub listener: TcpListener,
    pub listen: Listen,
}

/// Binds every configured listener. An IPv6 default address on a box with
/// no IPv6 is skipped with a warning; any other failure is fatal.
pub fn bind(config: &Config) -> Result<Vec<Bound>, String> {
    let mut bound = Vec::new();
    let backlog = backlog(config);
    for listen in &config.listen {
        match TcpListener::bind(listen.addr).and_then(|l| widen_backlog(l, backlog)) {
            Ok(listener) => bound.push(Bound {
                listener,
                listen: *listen,
            }),
            Err(e) if listen.addr.is_ipv6() && e.kind() == io::ErrorKind::AddrNotAvailable => {
                log::warn!("skipping {}: {}", listen.addr, e);
            }
            Err(e) => return Err(format!("cannot listen on {}: {}", listen.addr, e)),
        }
    }
    if bound.is_empty() {
        return Err("no address to listen on".to_string());
    }
    Ok(bound)
}

/// SPEC §8: a backlog that absorbs bursts, so that a client over the limits
/// is accepted and reads `421 4.3.2` instead of waiting in the queue (std
/// listens with 128): the kernel's SOMAXCONN, at least 4096, and at least
/// the configured connection limits. The kernel caps it at SOMAXCONN.
fn backlog(config: &Config) -> i32 {
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(DEFAULT_BACKLOG);
    let wanted = somaxconn
        .max(DEFAULT_BACKLOG)
        .max(config.max_connections)
        .max(config.max_connections_per_ip);
    i32::try_from(wanted).unwrap_or(i32::MAX)
}

/// listen(2) again on a listening socket: Linux then takes the new backlog.
fn widen_backlog(listener: TcpListener, backlog: i32) -> io::Result<TcpListener> {
    // SAFETY: the descriptor is owned by `listener`, alive for the call.
    match unsafe { listen(listener.as_raw_fd(), backlog) } {
        0 => Ok(listener),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The local submission socket (SPEC §5), bound or passed by systemd.
pub struct LocalSocket {
    pub listener: UnixListener,
    /// Where it is, for logs.
    pub path: PathBuf,
}

/// Creates the local submission socket at `path` (SPEC §3 `local_socket`):
/// in a directory of ours (made 0755 when missing) that no one else may
/// write to, so no one can put another socket in its place; mode 0666, so
/// that every local user can submit. A socket left by an earlier run is
/// removed; one a running server answers on, or any other file, is an
/// error.
pub fn bind_local(path: &Path) -> Result<LocalSocket, String> {
    let fail = |what: &str, e: io::Error| format!("local_socket {}: {what}: {e}", path.display());
    check_local(path)?;
    let dir = socket_dir(path)?;
    if !dir.exists() {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .map_err(|e| fail("cannot create its directory", e))?;
        // The umask may have taken bits away: exactly 0755.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| fail("cannot set its directory's mode", e))?;
    }
    if fs::symlink_metadata(path).is_ok() {
        fs::remove_file(path).map_err(|e| fail("cannot remove the stale socket", e))?;
        log::info!("removed stale socket {}", path.display());
    }
    let listener = UnixListener::bind(path).map_err(|e| fail("cannot listen", e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))
        .map_err(|e| fail("cannot set its mode", e))?;
    Ok(LocalSocket {
        listener,
        path: path.to_path_buf(),
    })
}

/// What [`bind_local`] would refuse, found without creating or removing
/// anything (`--check`): a directory that is not ours or that others may
/// write, a missing directory whose parent is missing too, a file in the
/// way that is not a socket, a socket a running server answers on (but
/// not one the service manager holds for socket activation).
pub fn check_local(path: &Path) -> Result<(), String> {
    let shown = path.display();
    // systemd's smtpbox-local.socket: the service manager (pid 1) listens
    // there and passes the socket in, wherever its directory belongs.
    if let Ok(stream) = UnixStream::connect(path) {
        if crate::transport::peer_pid(&stream).ok() == Some(1) {
            return Ok(());
        }
    }
    let dir = socket_dir(path)?;
    match fs::symlink_metadata(dir) {
        Ok(meta) => {
            let me = privilege::effective_uid();
            if !meta.is_dir() {
                return Err(format!(
                    "local_socket {shown}: {} is not a directory",
                    dir.display()
                ));
            }
            if meta.uid() != me {
                return Err(format!(
                    "local_socket {shown}: {} belongs to uid {}, not to this process (uid {me}): \
                     smtpbox makes its socket only in a directory of its own",
                    dir.display(),
                    meta.uid()
                ));
            }
            if meta.mode() & 0o022 != 0 {
                return Err(format!(
                    "local_socket {shown}: {} is writable by others (mode {:o})",
                    dir.display(),
                    meta.mode() & 0o7777
                ));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = dir.parent().unwrap_or(Path::new("/"));
            if !parent.is_dir() {
                return Err(format!(
                    "local_socket {shown}: {} is missing, and so is {}",
                    dir.display(),
                    parent.display()
                ));
            }
            return Ok(()); // bind_local makes the directory.
        }
        Err(e) => return Err(format!("local_socket {shown}: {}: {e}", dir.display())),
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            Err(format!("local_socket {shown}: exists and is not a socket"))
        }
        Ok(_) if UnixStream::connect(path).is_ok() => Err(format!(
            "local_socket {shown}: a running server answers there"
        )),
        Ok(_) => Ok(()), // Stale: bind_local removes it.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("local_socket {shown}: {e}")),
    }
}

fn socket_dir(path: &Path) -> Result<&Path, String> {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| format!("local_socket {}: no directory", path.display()))
}

/// What every session of a server shares: the configuration, the
/// certificate, the users file and the quota probe. Built once at start-up.
#[derive(Clone)]
pub struct Shared {
    pub config: Arc<Config>,
    pub services: Services,
    pub tls: Option<Arc<TlsFiles>>,
}

impl Shared {
    /// Loads the certificate and the users file named by the config.
    pub fn new(config: Config) -> Result<Shared, String> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(TlsFiles::load(cert, key)?)),
            _ => None,
        };
        let users: Option<Arc<dyn Authenticator>> = match &config.users {
            Some(path) => Some(Arc::new(UsersFile::open(path)?)),
            None => None,
        };
        let services = Services {
            quota: Arc::new(MaildirQuota),
            users,
            tls: tls.is_some(),
        };
        Ok(Shared {
            config: Arc::new(config),
            services,
            tls,
        })
    }

    /// Serves one session over `transport` to its end.
    pub fn serve(&self, transport: Box<dyn Transport>, peer: Peer, mode: Mode) {
        let session = self.session(peer, mode);
        conn::serve(transport, session, limits(&self.config), self.tls.clone());
    }

    /// A new session, made on the heap in a call of its own (the stack
    /// budget at `conn::serve`).
    #[inline(never)]
    fn session(&self, peer: Peer, mode: Mode) -> Box<Session> {
        let config = Arc::clone(&self.config);
        Box::new(Session::new(config, self.services.clone(), peer, mode))
    }
}

/// Serves on every listener, and on the local socket when there is one,
/// until the process is stopped.
pub fn run(shared: Shared, listeners: Vec<Bound>, local: Option<LocalSocket>) {
    let config = &shared.config;
    let limiter = Arc::new(Limiter::new(
        config.max_connections,
        config.max_connections_per_ip,
    ));
    let local_thread = local.map(|local| {
        let shared = shared.clone();
        let limiter = Arc::clone(&limiter);
        // Not "listening on": that line names a TCP address to tools and tests.
        log::info!("local submission socket {}", local.path.display());
        thread::spawn(move || local_accept_loop(local, shared, limiter))
    });
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|bound| {
            let shared = shared.clone();
            let limiter = Arc::clone(&limiter);
            // The bound address, not the configured one: port 0 picks a port.
            let addr = bound.listener.local_addr().map_or(bound.listen.addr, |a| a);
            log::info!("listening on {} ({})", addr, bound.listen.mode);
            thread::spawn(move || accept_loop(bound, shared, limiter))
        })
        .collect();
    for t in threads.into_iter().chain(local_thread) {
        let _ = t.join();
    }
}

/// Accepts on the local submission socket: the caller is who the kernel
/// says (SO_PEERCRED), and counts against the limits by uid.
fn local_accept_loop(local: LocalSocket, shared: Shared, limiter: Arc<Limiter>) {
    let workers = Workers::new(shared);
    loop {
        let stream = match local.listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("accept on {}: {}", local.path.display(), e);
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let uid = match transport::peer_uid(&stream) {
            Ok(uid) => uid,
            Err(e) => {
                // Never serve a caller we cannot name.
                log::warn!("local connection without credentials: {e}");
                continue;
            }
        };
        let caller = LocalCaller {
            uid,
            user: privilege::login_name(uid),
        };
        let Some(slot) = limiter.acquire(Source::Uid(uid)) else {
            log::warn!(
                "too many connections, refusing local uid={} user={} (421 4.3.2)",
                caller.uid,
                caller.user
            );
            refuse(stream);
            continue;
        };
        workers.run(Job {
            stream: Box::new(stream),
            peer: Peer::local_caller(caller),
            mode: Mode::Smtp,
            slot,
        });
    }
}

fn accept_loop(bound: Bound, shared: Shared, limiter: Arc<Limiter>) {
    let workers = Workers::new(shared);
    loop {
        // accept(2) gives the client's address: no getpeername.
        let (stream, remote) = match bound.listener.accept() {
            // An IPv4 client on a dual-stack socket is counted and logged
            // as IPv4, not `::ffff:a.b.c.d` (SPEC §6).
            Ok((stream, remote)) => (stream, canonical(remote)),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept on {}: {}", bound.listen.addr, e);
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let Some(slot) = limiter.acquire(Source::Ip(remote.ip())) else {
            log::warn!(
                "too many connections, refusing [{}]:{} (421 4.3.2)",
                remote.ip(),
                remote.port()
            );
            refuse(stream);
            continue;
        };
        // Replies are batched by the connection: Nagle would only add a
        // delayed-ACK stall to the second write of a split group.
        let _ = stream.set_nodelay(true);
        let peer = Peer::network(Some(remote), stream.local_addr().ok());
        workers.run(Job {
            stream: Box::new(stream),
            peer,
            mode: bound.listen.mode,
            slot,
        });
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; every other address as it is.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// One accepted connection, with its place under the limits.
struct Job {
    stream: Box<dyn Transport>,
    peer: Peer,
    mode: Mode,
    slot: Slot,
}

/// Session threads. One that has finished its session waits a moment for
/// the next connection instead of exiting: starting and ending a thread
/// costs about a fifth of a whole SMTP transaction on tmpfs.
struct Workers {
    shared: Shared,
    /// Threads waiting for a job, each with the id that names it here.
    idle: Mutex<Vec<(usize, SyncSender<Job>)>>,
    next_id: AtomicUsize,
}

/// How long a finished session thread waits for another connection.
const WORKER_IDLE: Duration = Duration::from_secs(2);

impl Workers {
    fn new(shared: Shared) -> Arc<Workers> {
        Arc::new(Workers {
            shared,
            idle: Mutex::new(Vec::new()),
            next_id: AtomicUsize::new(0),
        })
    }

    /// Hands the job to an idle thread, or starts one.
    fn run(self: &Arc<Self>, mut job: Job) {
        loop {
            let idle = lock(&self.idle).pop();
            let Some((_, worker)) = idle else { break };
            match worker.send(job) {
                Ok(()) => return,
                Err(SendError(back)) => job = back, // That thread is gone.
            }
        }
        let workers = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("session".to_string())
            .stack_size(SESSION_STACK)
            .spawn(move || workers.work(job));
        if let Err(e) = spawned {
            // The job, slot included, was dropped with the closure.
            log::error!("cannot start a session thread: {e}");
        }
    }

    /// A session thread: serves jobs until none comes for WORKER_IDLE.
    /// Serving and waiting are calls of their own, so the frame under a
    /// session stays small (the stack budget at `conn::serve`).
    fn work(&self, first: Job) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Made when first idle: a busy session carries no channel.
        let mut channel = None;
        let mut job = first;
        loop {
            self.serve(job);
            match self.next_job(id, &mut channel) {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    #[inline(never)]
    fn serve(&self, job: Job) {
        let Job {
            stream,
            peer,
            mode,
            slot,
        } = job;
        self.shared.serve(stream, peer, mode);
        drop(slot); // Freed by a panic in serve too, as it unwinds.
    }

    /// Puts this thread on the idle list and waits up to WORKER_IDLE for a
    /// job; None when none came and the thread should end.
    #[inline(never)]
    fn next_job(
        &self,
        id: usize,
        channel: &mut Option<(SyncSender<Job>, Receiver<Job>)>,
    ) -> Option<Job> {
        let (sender, jobs) = channel.get_or_insert_with(|| sync_channel(1));
        lock(&self.idle).push((id, sender.clone()));
        if let Ok(next) = jobs.recv_timeout(WORKER_IDLE) {
            return Some(next);
        }
        let mut idle = lock(&self.idle);
        match idle.iter().position(|(i, _)| *i == id) {
            Some(at) => {
                idle.swap_remove(at);
                None
            }
            // The acceptor took this thread just now: its job is on the way.
            None => {
                drop(idle);
                jobs.recv().ok()
            }
        }
    }
}

/// Locks a mutex, going on after a panic elsewhere (the data stays sound:
/// every critical section here is a single push, pop or count).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The connection limits of a config.
pub fn limits(config: &Config) -> Limits {
    Limits {
        timeout: config.timeout,
        session_timeout: config.session_timeout,
        max_message_size: config.max_message_size,
        maildir_quota: config.maildir_quota,
    }
}

/// Over the limits: one reply, written without blocking for long, then close.
fn refuse(mut stream: impl Transport) {
    let _ = stream.set_timeout(Duration::from_secs(1));
    let mut out = Vec::new();
    Reply::too_busy().write_to(&mut out);
    let _ = stream.write_all(&out);
}

/// Counts sessions, in all and per client (address, or uid on the local
/// socket).
struct Limiter {
    max: usize,
    max_per_ip: usize,
    state: Mutex<Counts>,
}

/// Who a session is counted against for `max_connections_per_ip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    Ip(IpAddr),
    /// A caller on the local socket.
    Uid(u32),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        Source::Ip(ip)
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<Source, usize>,
}

/// One session's place under the limits, given back on drop.
struct Slot {
    limiter: Arc<Limiter>,
    ip: Source,
}

impl Limiter {
    fn new(max: usize, max_per_ip: usize) -> Limiter {
        Limiter {
            max,
            max_per_ip,
            state: Mutex::new(Counts::default()),
        }
    }

    fn acquire(self: &Arc<Self>, ip: impl Into<Source>) -> Option<Slot> {
        let ip = ip.into();
        let mut counts = lock(&self.state);
        let for_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if counts.total >= self.max || for_ip >= self.max_per_ip {
            return None;
        }
        counts.total += 1;
        counts.per_ip.insert(ip, for_ip + 1);
        Some(Slot {
            limiter: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.limiter.state);
        counts.total -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_total_and_per_ip() {
        let limiter = Arc::new(Limiter::new(3, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = limiter.acquire(a).unwrap();
        let _s2 = limiter.acquire(a).unwrap();
        assert!(limiter.acquire(a).is_none(), "per-IP limit");
        let _s3 = limiter.acquire(b).unwrap();
        assert!(limiter.acquire(b).is_none(), "total limit");
        drop(s1);
        assert!(limiter.acquire(a).is_some(), "slot given back");
    }

    /// A directory path under the temp dir, removed on drop.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_finished_session_thread_serves_the_next_connection() {
        use std::io::{BufRead, BufReader, Write};
        use std::net::TcpStream;
        let dir =
            TempDir(std::env::temp_dir().join(format!("smtpbox-workers-{}", std::process::id())));
        let args: Vec<String> = ["-m", &dir.0.display().to_string(), "-H", "mx.test"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // No config file, not even the host's default one.
        let no_default = std::path::Path::new("");
        let Ok(crate::config::Invocation::Run(config, _)) =
            crate::config::from_args_with_default(&args, no_default)
        else {
            panic!("config");
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let workers = Workers::new(Shared::new(config).unwrap());
        let limiter = Arc::new(Limiter::new(4, 4));
        for round in 0..3 {
            let client = TcpStream::connect(addr).unwrap();
            let (stream, remote) = listener.accept().unwrap();
            workers.run(Job {
                stream: Box::new(stream),
                peer: Peer::network(Some(remote), Some(addr)),
                mode: Mode::Smtp,
                slot: limiter.acquire(remote.ip()).unwrap(),
            });
            let stream = client;
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with("220 mx.test"), "{line}");
            reader.get_mut().write_all(b"QUIT\r\n").unwrap();
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
            assert_eq!(rest, "221 2.0.0 Bye\r\n");
            // The thread puts itself on the idle list after the session:
            // wait for that (well inside WORKER_IDLE) before the next one.
            let end = std::time::Instant::now() + Duration::from_secs(5);
            while lock(&workers.idle).len() != 1 {
                assert!(
                    std::time::Instant::now() < end,
                    "round {round}: no idle thread"
                );
                thread::sleep(Duration::from_millis(1));
            }
        }
        let sessions = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "session")
            .count();
        assert_eq!(sessions, 1, "three sessions in a row, one thread");
    }

    #[test]
    fn slot_is_freed_when_a_session_panics() {
        let limiter = Arc::new(Limiter::new(1, 1));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let slot = limiter.acquire(ip).unwrap();
        let t = thread::spawn(move || {
            let _slot = slot;
            panic!("session bug");
        });
        assert!(t.join().is_err());
        assert!(limiter.acquire(ip).is_some());
    }
}
