//! The notifier process: notices come in, each Maildir's rate decides
//! which run now and which are counted as suppressed, a bounded backlog
//! feeds `notify_jobs` workers, and a timer runs the tail of a storm.
//! Every thread sleeps until there is work: an idle notifier makes no
//! system call (issue #26).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Instant;

use super::link::{self, Received};
use super::{job, Notice, Settings};

/// Notifications waiting for a worker at most; past it they are counted
/// as suppressed (and the last one kept for its Maildir's tail run).
pub const BACKLOG: usize = 64;

/// One program run to make: a notice, its file (the program's stdin)
/// and the notifications suppressed since its Maildir's last run.
pub(super) struct Job {
    pub notice: Notice,
    pub file: File,
    pub suppressed: u64,
}

/// One Maildir's rate window.
struct Window {
    start: Instant,
    runs: u32,
    /// Suppressed since the last run.
    suppressed: u64,
    /// The last suppressed notification, for the tail run.
    last: Option<Job>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    windows: HashMap<String, Window>,
    /// No more notices will come: run the tails now, drain, end.
    closed: bool,
}

struct Notifier {
    settings: Settings,
    state: Mutex<State>,
    /// Workers wait here for a job.
    work: Condvar,
    /// The tail timer waits here for a window with suppressed ones.
    timer: Condvar,
}

impl Notifier {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A notice arrived: run it, or count it as suppressed.
    fn admit(&self, notice: Notice, file: File) {
        let rate = self.settings.rate;
        let now = Instant::now();
        let mut state = self.lock();
        let state = &mut *state;
        let window = state
            .windows
            .entry(notice.maildir.clone())
            .or_insert(Window {
                start: now,
                runs: 0,
                suppressed: 0,
                last: None,
            });
        if now.duration_since(window.start) >= rate.period {
            window.start = now;
            window.runs = 0;
        }
        let job = Job {
            notice,
            file,
            suppressed: 0,
        };
        if window.runs < rate.count && state.queue.len() < BACKLOG {
            window.runs += 1;
            // This run carries the count; the kept one is not run.
            let job = Job {
                suppressed: std::mem::take(&mut window.suppressed),
                ..job
            };
            window.last = None;
            state.queue.push_back(job);
            self.work.notify_one();
        } else {
            if window.runs < rate.count {
                log::warn!(
                    "notify {}: suppressed: {} notifications are waiting already",
                    job.notice.id,
                    BACKLOG
                );
            } else {
                log::info!(
                    "notify {}: suppressed: over notify_rate {} for {}",
                    job.notice.id,
                    rate,
                    job.notice.maildir
                );
            }
            window.suppressed += 1;
            window.last = Some(job);
            self.timer.notify_one();
        }
    }

    /// Moves each Maildir's last suppressed notification whose window is
    /// over (every one, when closing) to the queue, with its count.
    /// Returns when the next window with one ends.
    fn run_tails(&self, state: &mut State) -> Option<Instant> {
        let now = Instant::now();
        let period = self.settings.rate.period;
        let mut next = None::<Instant>;
        for window in state.windows.values_mut() {
            if window.last.is_none() {
                continue;
            }
            let end = window.start + period;
            if now < end && !state.closed {
                next = Some(next.map_or(end, |n| n.min(end)));
                continue;
            }
            if let Some(mut job) = window.last.take() {
                job.suppressed = std::mem::take(&mut window.suppressed);
                log::info!(
                    "notify {}: the tail of {} suppressed notifications runs",
                    job.notice.id,
                    job.suppressed
                );
                // Past the backlog by at most one per Maildir.
                state.queue.push_back(job);
                self.work.notify_one();
            }
        }
        next
    }

    /// The tail timer: sleeps until a window with suppressed
    /// notifications ends (untimed while there is none).
    fn timer_loop(&self) {
        let mut state = self.lock();
        loop {
            let next = self.run_tails(&mut state);
            if state.closed {
                return;
            }
            state = match next {
                None => self.timer.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    self.timer
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// A worker: runs jobs until the queue is closed and empty.
    fn worker_loop(&self) {
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if let Some(job) = state.queue.pop_front() {
                        break job;
                    }
                    if state.closed {
                        return;
                    }
                    state = self.work.wait(state).unwrap_or_else(|p| p.into_inner());
                }
            };
            job::run(&self.settings, job);
        }
    }

    /// No more notices: the tails run now, the workers drain the queue.
    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        self.run_tails(&mut state);
        self.work.notify_all();
        self.timer.notify_all();
    }
}

/// Starts the workers and the tail timer.
fn start(settings: &Settings) -> (Arc<Notifier>, Vec<thread::JoinHandle<()>>) {
    let notifier = Arc::new(Notifier {
        settings: settings.clone(),
        state: Mutex::new(State::default()),
        work: Condvar::new(),
        timer: Condvar::new(),
    });
    let mut threads = Vec::new();
    let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
        let started = thread::Builder::new().name(name.into()).spawn(body);
        started
            .map_err(|e| log::error!("notifier: cannot start its {name} thread: {e}"))
            .ok()
    };
    for _ in 0..settings.jobs.max(1) {
        let n = Arc::clone(&notifier);
        threads.extend(spawn("notify-job", Box::new(move || n.worker_loop())));
    }
    let n = Arc::clone(&notifier);
    threads.extend(spawn("notify-timer", Box::new(move || n.timer_loop())));
    (notifier, threads)
}

/// Reads notices from one connection until it ends.
fn receive_loop(notifier: &Notifier, socket: RawFd) {
    loop {
        match link::receive(socket) {
            Ok(Received::Notice(notice, file)) => notifier.admit(*notice, file),
            Ok(Received::Bad) => log::warn!("notifier: a packet that is not a notice, dropped"),
            Ok(Received::End) => return,
            Err(e) => {
                log::warn!("notifier: {e}");
                return;
            }
        }
    }
}

/// Serves the server's own socketpair ([`super::spawn`]) until the
/// server closes it; then runs the pending tails, waits for every
/// program, and returns.
pub(super) fn serve_socket(socket: OwnedFd, settings: &Settings) {
    let (notifier, threads) = start(settings);
    receive_loop(&notifier, socket.as_raw_fd());
    notifier.close();
    for t in threads {
        let _ = t.join();
    }
}

extern "C" {
    fn accept4(fd: i32, addr: *mut u8, len: *mut u32, flags: i32) -> i32;
    fn geteuid() -> u32;
}

/// `smtpbox --notifier`: the notifier service (the shipped systemd units).
/// Serves the listening socket systemd passed (the first one) for as long
/// as it runs; each connection is a server (the resident one, or one
/// `--inetd` session's process). Only our own user and root may send.
pub fn serve(settings: &Settings, listener: OwnedFd) -> Result<(), String> {
    if settings.program.is_none() {
        log::warn!("notifier: no `notify` program is configured: notices are dropped");
    }
    let (notifier, _threads) = start(settings);
    // SAFETY: geteuid cannot fail.
    let me = unsafe { geteuid() };
    loop {
        // SAFETY: no address is asked for.
        let fd = unsafe {
            accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                crate::sys::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                _ => return Err(format!("notifier: accept: {e}")),
            }
        }
        // SAFETY: a fresh descriptor we own.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) };
        match crate::transport::peer_uid(&conn) {
            Ok(uid) if uid == me || uid == 0 => {}
            Ok(uid) => {
                log::warn!("notifier: refused a connection from uid {uid}");
                continue;
            }
            Err(e) => {
                log::warn!("notifier: refused a connection: {e}");
                continue;
            }
        }
        let n = Arc::clone(&notifier);
        let spawned = thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || receive_loop(&n, conn.as_raw_fd()));
        if let Err(e) = spawned {
            log::warn!("notifier: cannot serve a connection: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Rate;
    use std::time::Duration;

    fn notifier(count: u32, period: Duration) -> Notifier {
        Notifier {
            settings: Settings {
                program: None,
                rate: Rate { count, period },
                ..Settings::default()
            },
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            timer: Condvar::new(),
        }
    }

    fn notice(maildir: &str, id: &str) -> Notice {
        Notice {
            maildir: maildir.into(),
            id: id.into(),
            ..Notice::default()
        }
    }

    fn null() -> File {
        File::open("/dev/null").unwrap()
    }

    fn queued(n: &Notifier) -> Vec<(String, u64)> {
        n.lock()
            .queue
            .iter()
            .map(|j| (j.notice.id.clone(), j.suppressed))
            .collect()
    }

    #[test]
    fn past_the_rate_notifications_are_counted_and_the_tail_runs_with_the_count() {
        let n = notifier(2, Duration::from_secs(3600));
        for id in ["a", "b", "c", "d", "e"] {
            n.admit(notice("/m", id), null());
        }
        n.admit(notice("/other", "x"), null());
        assert_eq!(
            queued(&n),
            [("a".into(), 0), ("b".into(), 0), ("x".into(), 0)]
        );
        // The window has not ended: no tail yet, and it is due at its end.
        let next = n.run_tails(&mut n.lock());
        assert!(next.is_some());
        assert_eq!(queued(&n).len(), 3);
        // Closing runs the tail now: the last suppressed one, with the count.
        n.close();
        assert_eq!(queued(&n)[3], ("e".into(), 3));
        assert!(n.lock().windows["/m"].last.is_none());
    }

    #[test]
    fn the_next_run_after_the_window_carries_the_count_and_no_tail_runs() {
        let n = notifier(1, Duration::from_millis(50));
        for id in ["a", "b", "c"] {
            n.admit(notice("/m", id), null());
        }
        thread::sleep(Duration::from_millis(60));
        n.admit(notice("/m", "d"), null());
        assert_eq!(queued(&n), [("a".into(), 0), ("d".into(), 2)]);
        assert!(n.run_tails(&mut n.lock()).is_none());
        assert_eq!(queued(&n).len(), 2);
    }

    #[test]
    fn a_window_that_ends_with_suppressed_ones_runs_its_tail_on_the_timer() {
        let n = Arc::new(notifier(1, Duration::from_millis(100)));
        let t = {
            let n = Arc::clone(&n);
            thread::spawn(move || n.timer_loop())
        };
        n.admit(notice("/m", "a"), null());
        n.admit(notice("/m", "b"), null());
        n.admit(notice("/m", "c"), null());
        let end = Instant::now() + Duration::from_secs(5);
        while queued(&n).len() < 2 && Instant::now() < end {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(queued(&n), [("a".into(), 0), ("c".into(), 2)]);
        n.close();
        t.join().unwrap();
    }

    #[test]
    fn a_full_backlog_suppresses_and_memory_stays_bounded() {
        let n = notifier(100_000, Duration::from_secs(3600));
        for i in 0..BACKLOG + 500 {
            n.admit(notice("/m", &i.to_string()), null());
        }
        assert_eq!(n.lock().queue.len(), BACKLOG);
        assert_eq!(n.lock().windows["/m"].suppressed, 500);
    }
}
