//! The standalone server (SPEC §8): for each listener (the TCP ones and
//! the local submission socket) a pool of session threads with a small
//! stack that accept for themselves, one session at a time each, and the
//! connection limits.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

mod limiter;

use limiter::*;

use crate::auth::UsersFile;
use crate::config::{Config, Listen, Mode, Policy};
use crate::conn;
use crate::delivery::Maildirs;
use crate::privilege;
use crate::reply::Reply;
use crate::session::{Authenticator, LocalCaller, Peer, Services, Session};
use crate::tls::TlsFiles;
use crate::transport::{self, Accepted, Handshake, Transport};

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
            store: Arc::new(Maildirs),
            users,
            tls: tls.is_some(),
        };
        Ok(Shared {
            config: Arc::new(config),
            services,
            tls,
        })
    }

    /// Serves one session over `transport` to its end, under the policy
    /// of the listener it came from.
    pub fn serve(&self, transport: Box<dyn Transport>, peer: Peer, policy: &Policy) {
        let session = self.session(peer, policy);
        let tls = self.tls.clone().map(|files| files as Arc<dyn Handshake>);
        conn::serve(transport, session, tls);
    }

    /// A new session, made on the heap in a call of its own (the stack
    /// budget at `conn::serve`).
    #[inline(never)]
    fn session(&self, peer: Peer, policy: &Policy) -> Box<Session> {
        let config = Arc::clone(&self.config);
        Box::new(Session::new(config, self.services.clone(), peer, policy))
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
    let mut doors = Vec::new();
    if let Some(local) = local {
        // Not "listening on": that line names a TCP address to tools and tests.
        log::info!("local submission socket {}", local.path.display());
        let policy = Policy::new(config, None, Mode::Smtp);
        doors.push((Door::local(local, ACCEPT_WAIT), policy));
    }
    for bound in listeners {
        let policy = Policy::listen(config, bound.listen);
        // The bound address, not the configured one: port 0 picks a port.
        let addr = bound.listener.local_addr().map_or(bound.listen.addr, |a| a);
        log::info!("listening on {} ({})", addr, bound.listen.mode);
        doors.push((Door::tcp(bound, policy.limits.timeout, ACCEPT_WAIT), policy));
    }
    for (door, policy) in doors {
        let pool = Arc::new(Pool {
            door,
            policy,
            shared: shared.clone(),
            limiter: Arc::clone(&limiter),
            accepting: AtomicUsize::new(0),
        });
        if !pool.start() {
            log::error!("cannot serve {}: no session thread", pool.door);
            std::process::exit(EX_OSERR);
        }
    }
    // The pools' threads accept and serve from here on.
    loop {
        thread::park();
    }
}

/// sysexits.h: the system could not give us a thread.
const EX_OSERR: i32 = 71;

/// Where a pool's threads take their connections from.
enum Door {
    Tcp(TcpDoor),
    /// The local submission socket: the caller is who the kernel says
    /// (SO_PEERCRED), and counts against the limits by uid.
    Local(LocalSocket),
}

struct TcpDoor {
    listener: TcpListener,
    /// The configured address, for logs.
    addr: SocketAddr,
    /// Every connection's local address when the listener is bound to one
    /// address (not a wildcard): then no getsockname per connection.
    local: Option<SocketAddr>,
    /// The write timeout and accept wait its connections start with, when
    /// they could be set on the listener (transport::prepare_listener).
    prepared: Option<(Duration, Duration)>,
}

/// Whether a connection starts with its listener's prepared options
/// (transport::prepare_listener), with no system call when that is proven.
///
/// Connections queued before the listener was prepared do not have them:
/// under socket activation, the very connection that started the service;
/// standalone, a client that connected between listen(2) and the
/// setsockopts. They come first, as the accept queue is first in, first
/// out. So each session thread checks what it accepts until one
/// connection has the options; every later one it accepts was queued after
/// that one and has them too. A flag shared by the threads would not do: a
/// thread could trust a connection it took from the queue before another
/// thread took the one that proved it, and that connection would run
/// without its write timeout.
#[derive(Default)]
struct Inheritance {
    /// A connection this thread accepted had the options.
    proven: bool,
}

/// Connections seen without the options while none had them: after
/// [`MISSES`], the kernel is taken not to copy them (Linux does) and
/// threads stop checking.
static MISSED: AtomicUsize = AtomicUsize::new(0);
/// Some connection had the options: the kernel copies them.
static COPIED: AtomicBool = AtomicBool::new(false);
const MISSES: usize = 64;

impl Inheritance {
    /// The options `stream` starts with, when known without a system call
    /// or checked.
    fn of(
        &mut self,
        stream: &TcpStream,
        prepared: Option<(Duration, Duration)>,
    ) -> Option<(Duration, Duration)> {
        let (timeout, wait) = prepared?;
        if self.proven {
            return prepared;
        }
        if !COPIED.load(Ordering::Relaxed) && MISSED.load(Ordering::Relaxed) >= MISSES {
            return None;
        }
        if transport::inherits(stream, timeout, wait) {
            self.proven = true;
            COPIED.store(true, Ordering::Relaxed);
            return prepared;
        }
        MISSED.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// What one accept gave.
enum Taken {
    /// A connection admitted under the limits, to serve.
    Session(Job),
    /// Nothing to serve (refused, or accept failed): accept again.
    Nothing,
    /// accept(2) waited its whole timeout.
    Idle,
}

impl Door {
    /// `timeout` is the listener's policy's, `wait` how long one accept
    /// may wait.
    fn tcp(bound: Bound, timeout: Duration, wait: Duration) -> Door {
        let listener = bound.listener;
        let bound_to = listener.local_addr().ok();
        let local = bound_to.filter(|a| !a.ip().is_unspecified());
        // A socket passed by systemd may come non-blocking: accept would spin.
        let blocking = listener.set_nonblocking(false);
        let prepared =
            blocking.and_then(|()| transport::prepare_listener(&listener, timeout, wait));
        if let Err(e) = &prepared {
            log::warn!("listener {}: socket options: {e}", bound.listen.addr);
        }
        Door::Tcp(TcpDoor {
            listener,
            addr: bound.listen.addr,
            local,
            prepared: prepared.ok().map(|()| (timeout, wait)),
        })
    }

    fn local(local: LocalSocket, wait: Duration) -> Door {
        let options = local
            .listener
            .set_nonblocking(false)
            .and_then(|()| transport::bound_accept(&local.listener, wait));
        if let Err(e) = options {
            log::warn!("local socket {}: socket options: {e}", local.path.display());
        }
        Door::Local(local)
    }

    /// Sleeps until a connection waits to be accepted (see
    /// [`transport::wait_readable`]).
    fn wait(&self) {
        match self {
            Door::Tcp(door) => transport::wait_readable(&door.listener),
            Door::Local(local) => transport::wait_readable(&local.listener),
        }
    }

    /// Accepts one connection and admits it under the limits; one over
    /// them reads `421 4.3.2` here.
    fn take(&self, limiter: &Arc<Limiter>, inheritance: &mut Inheritance) -> Taken {
        match self {
            Door::Tcp(door) => door.take(limiter, inheritance),
            Door::Local(local) => take_local(local, limiter),
        }
    }
}

impl std::fmt::Display for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Door::Tcp(door) => write!(f, "{}", door.addr),
            Door::Local(local) => write!(f, "{}", local.path.display()),
        }
    }
}

/// accept(2) timed out (SO_RCVTIMEO on the listener).
fn is_idle(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl TcpDoor {
    fn take(&self, limiter: &Arc<Limiter>, inheritance: &mut Inheritance) -> Taken {
        // accept(2) gives the client's address: no getpeername.
        let (mut stream, remote) = match self.listener.accept() {
            // An IPv4 client on a dual-stack socket is counted and logged
            // as IPv4, not `::ffff:a.b.c.d` (SPEC §6).
            Ok((stream, remote)) => (stream, canonical(remote)),
            Err(e) if is_idle(&e) => return Taken::Idle,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept on {}: {}", self.addr, e);
                thread::sleep(Duration::from_millis(50));
                return Taken::Nothing;
            }
        };
        let Some(slot) = limiter.acquire(Source::Ip(remote.ip())) else {
            log::warn!(
                "too many connections, refusing [{}]:{} (421 4.3.2)",
                remote.ip(),
                remote.port()
            );
            refuse(&mut stream);
            return Taken::Nothing;
        };
        let inherited = inheritance.of(&stream, self.prepared);
        if inherited.is_none() {
            // See transport::prepare_listener.
            let _ = stream.set_nodelay(true);
        }
        let local = self.local.or_else(|| stream.local_addr().ok());
        Taken::Session(Job {
            stream: Box::new(Accepted::new(stream, inherited)),
            peer: Peer::network(Some(remote), local),
            slot,
        })
    }
}

fn take_local(local: &LocalSocket, limiter: &Arc<Limiter>) -> Taken {
    let mut stream = match local.listener.accept() {
        Ok((stream, _)) => stream,
        Err(e) if is_idle(&e) => return Taken::Idle,
        Err(e) => {
            log::warn!("accept on {}: {}", local.path.display(), e);
            thread::sleep(Duration::from_millis(50));
            return Taken::Nothing;
        }
    };
    let uid = match transport::peer_uid(&stream) {
        Ok(uid) => uid,
        Err(e) => {
            // Never serve a caller we cannot name.
            log::warn!("local connection without credentials: {e}");
            return Taken::Nothing;
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
        refuse(&mut stream);
        return Taken::Nothing;
    };
    Taken::Session(Job {
        stream: Box::new(stream),
        peer: Peer::local_caller(caller),
        slot,
    })
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; every other address as it is.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// One accepted connection, with its place under the limits.
struct Job {
    stream: Box<dyn Transport>,
    peer: Peer,
    slot: Slot,
}

/// The session threads of one listener, which accept for themselves
/// (SPEC §8): several wait in accept(2) on the same socket and the kernel
/// gives each connection to one of them, which then serves it; no
/// hand-off between threads, so no wake-up of a second one. The thread
/// that takes the last waiting place starts a replacement before it
/// serves, so one always waits while sessions are under the limits.
/// After its session a thread goes back to accept unless enough already
/// wait; a waiting thread whose accept waited ACCEPT_WAIT for nothing
/// ends unless it is the last one, so an idle server is soon down to one
/// thread per listener. That one waits in poll(2) with no timeout before
/// it accepts: an idle server makes no system call until a client comes.
struct Pool {
    door: Door,
    policy: Policy,
    shared: Shared,
    limiter: Arc<Limiter>,
    /// Threads in accept(2), or on their way to it.
    accepting: AtomicUsize,
}

/// How many threads may wait in accept on one listener once their
/// session is over: enough that sessions ending and starting again at a
/// steady rate seldom start a thread (which costs about a fifth of a
/// whole SMTP transaction on tmpfs); half the default `max_connections`.
const IDLE_ACCEPTORS: usize = 16;

/// How long a thread waits in accept before it ends, unless it is the
/// last one of its listener. Not the session timeout: connections start
/// with their listener's read timeout, so each sets its own (one
/// setsockopt), and in exchange idle threads go within seconds.
const ACCEPT_WAIT: Duration = Duration::from_secs(2);

impl Pool {
    /// Starts one more accepting thread; false when the system has none
    /// to give.
    fn start(self: &Arc<Self>) -> bool {
        self.accepting.fetch_add(1, Ordering::AcqRel);
        let pool = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("session".to_string())
            .stack_size(SESSION_STACK)
            .spawn(move || pool.work());
        match spawned {
            Ok(_) => true,
            Err(e) => {
                self.accepting.fetch_sub(1, Ordering::AcqRel);
                log::error!("cannot start a session thread: {e}");
                false
            }
        }
    }

    /// A session thread: accepts, serves, and again, until it is not
    /// needed. Taking and serving are calls of their own, so the frame
    /// under a session stays small (the stack budget at `conn::serve`).
    /// A panic in a session ends this thread, as it unwinds through
    /// `serve`; the pool does not miss it, since it stopped counting as
    /// accepting before it served.
    fn work(self: Arc<Self>) {
        let mut inheritance = Inheritance::default();
        loop {
            if self.accepting.load(Ordering::Acquire) == 1 {
                // The only one waiting: sleep until a client comes, with
                // no timeout, so an idle listener wakes nobody.
                self.door.wait();
            }
            let job = match self.take(&mut inheritance) {
                Taken::Session(job) => job,
                Taken::Nothing => continue,
                Taken::Idle if self.retire() => return,
                Taken::Idle => continue,
            };
            if self.accepting.fetch_sub(1, Ordering::AcqRel) == 1 {
                // The last one waiting: a failure is logged, and this
                // thread comes back to accept when its session is over.
                self.start();
            }
            self.serve(job);
            if !self.rejoin() {
                return;
            }
        }
    }

    #[inline(never)]
    fn take(&self, inheritance: &mut Inheritance) -> Taken {
        self.door.take(&self.limiter, inheritance)
    }

    #[inline(never)]
    fn serve(&self, job: Job) {
        let Job { stream, peer, slot } = job;
        self.shared.serve(stream, peer, &self.policy);
        drop(slot); // Freed by a panic in serve too, as it unwinds.
    }

    /// After a session: counts this thread as accepting again, unless
    /// enough threads already are.
    fn rejoin(&self) -> bool {
        self.accepting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < IDLE_ACCEPTORS).then_some(n + 1)
            })
            .is_ok()
    }

    /// After an accept that timed out: true when this thread should end,
    /// as one more is waiting.
    fn retire(&self) -> bool {
        self.accepting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 1).then(|| n - 1)
            })
            .is_ok()
    }
}

/// Locks a mutex, going on after a panic elsewhere (the data stays sound:
/// every critical section here is a single push, pop or count).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Over the limits: one reply, written without blocking for long; the
/// caller closes. The inetd start uses it too.
pub fn refuse(stream: &mut impl Transport) {
    let _ = stream.set_timeout(Duration::from_secs(1));
    let mut out = Vec::new();
    Reply::too_busy().write_to(&mut out);
    let _ = stream.write_all(&out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that was in the accept queue before the listener got
    /// its options (socket activation's first connection) is checked, not
    /// trusted, even after another thread saw a later one inherit them;
    /// so it is given its own write timeout. A thread that has seen one
    /// inherit trusts the connections it accepts after it.
    #[test]
    fn a_connection_queued_before_the_listener_was_prepared_gets_its_own_timeouts() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _early_client = TcpStream::connect(addr).unwrap();
        let (timeout, wait) = (Duration::from_secs(7), Duration::from_secs(2));
        transport::prepare_listener(&listener, timeout, wait).unwrap();
        let _late_clients = [
            TcpStream::connect(addr).unwrap(),
            TcpStream::connect(addr).unwrap(),
        ];
        let prepared = Some((timeout, wait));
        let (early, _) = listener.accept().unwrap();
        let (late, _) = listener.accept().unwrap();
        let (later, _) = listener.accept().unwrap();

        let mut other_thread = Inheritance::default();
        assert_eq!(other_thread.of(&late, prepared), prepared);
        let mut this_thread = Inheritance::default();
        let probe = early.try_clone().unwrap();
        assert_eq!(
            this_thread.of(&early, prepared),
            None,
            "checked, not trusted"
        );
        let mut session = transport::Accepted::new(early, this_thread.of(&probe, prepared));
        session.set_timeout(timeout).unwrap();
        assert_eq!(probe.write_timeout().unwrap(), Some(timeout));
        assert_eq!(probe.read_timeout().unwrap(), Some(timeout));

        assert_eq!(other_thread.of(&later, prepared), prepared);
        assert!(other_thread.proven && !this_thread.proven);
    }

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

    /// A pool on a fresh loopback listener whose accepts time out after
    /// `wait`, with a Maildir under `dir`.
    fn pool(dir: &TempDir, wait: Duration) -> (Arc<Pool>, SocketAddr) {
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
        let listen = Listen {
            addr,
            mode: Mode::Smtp,
        };
        let policy = Policy::listen(&config, listen);
        let pool = Arc::new(Pool {
            door: Door::tcp(Bound { listener, listen }, policy.limits.timeout, wait),
            policy,
            shared: Shared::new(config).unwrap(),
            limiter: Arc::new(Limiter::new(4, 4)),
            accepting: AtomicUsize::new(0),
        });
        assert!(pool.start());
        (pool, addr)
    }

    /// One session from greeting to QUIT.
    fn greet_and_quit(addr: SocketAddr) {
        use std::io::{BufRead, BufReader, Write};
        let stream = std::net::TcpStream::connect(addr).unwrap();
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
    }

    /// Waits up to 5 s for `accepting` threads to wait in accept.
    fn wait_accepting(pool: &Pool, accepting: usize, what: &str) {
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while pool.accepting.load(Ordering::Acquire) != accepting {
            assert!(std::time::Instant::now() < end, "{what}: not {accepting}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn session_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "session")
            .count()
    }

    #[test]
    fn session_threads_accept_again_after_their_session_and_idle_ones_retire() {
        let dir =
            TempDir(std::env::temp_dir().join(format!("smtpbox-pool-{}", std::process::id())));
        // Only this test starts session threads in this process.
        let (pool, addr) = pool(&dir, Duration::from_secs(1));
        for round in 0..3 {
            greet_and_quit(addr);
            // The one that served is back in accept, beside the one it
            // started when it took the last waiting place.
            wait_accepting(&pool, 2, &format!("round {round}"));
        }
        // (At most: an accept that waited its whole second between two
        // rounds of a loaded machine retires its thread.)
        assert!(
            session_threads() <= 2,
            "three sessions in a row, two threads"
        );
        // Nothing comes for the accept wait: one of them ends.
        thread::sleep(Duration::from_millis(1500));
        wait_accepting(&pool, 1, "after the idle timeout");
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while session_threads() != 1 {
            assert!(std::time::Instant::now() < end, "no thread retired");
            thread::sleep(Duration::from_millis(1));
        }
        // The last one stays, however long it waits.
        thread::sleep(Duration::from_millis(1500));
        assert_eq!(pool.accepting.load(Ordering::Acquire), 1);
        greet_and_quit(addr);
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
