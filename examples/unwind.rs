//! Unwinding check for the appliance targets (scripts/cross.sh builds it
//! with the server's profile and flags for each target; .ci/run runs it
//! under qemu-user). smtpbox has no way to make a session panic on
//! purpose, so this does what a session thread does in `server.rs`: a
//! thread with a session-sized stack, holding a guard whose `Drop` frees
//! its slot, panics deep in a call; the spawner must see the panic, the
//! guard must have run, and the process must go on serving threads.
//! Exits 0 and prints `unwind: ok` only when all of that held.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// Same order as server.rs's SESSION_STACK (SPEC §8: 128–256 KiB).
const STACK: usize = 256 * 1024;

struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[inline(never)]
fn deep(n: u32, bytes: &[u8]) -> usize {
    if n == 0 {
        // An index past the end: the same bounds-check panic a bug in
        // session code would raise.
        let at = bytes.len() + 7;
        return usize::from(bytes[at]);
    }
    deep(n - 1, bytes) + 1
}

fn session(in_use: &Arc<AtomicUsize>, fail: bool) -> thread::Result<usize> {
    in_use.fetch_add(1, Ordering::SeqCst);
    let slot = Slot(Arc::clone(in_use));
    let arg = std::env::args().count().to_string().into_bytes();
    thread::Builder::new()
        .name("session".to_string())
        .stack_size(STACK)
        .spawn(move || {
            let _slot = slot;
            if fail {
                deep(16, &arg)
            } else {
                arg.len()
            }
        })
        .map_err(|e| Box::new(e.to_string()) as Box<dyn std::any::Any + Send>)?
        .join()
}

fn main() -> std::process::ExitCode {
    let in_use = Arc::new(AtomicUsize::new(0));
    let mut failures = Vec::new();
    match session(&in_use, true) {
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .unwrap_or("");
            if !message.contains("index out of bounds") {
                failures.push(format!("panic payload {message:?}"));
            }
        }
        Ok(n) => failures.push(format!("no panic: {n}")),
    }
    if in_use.load(Ordering::SeqCst) != 0 {
        failures.push("the panicking thread's slot was not freed".to_string());
    }
    // The process goes on: the next session runs.
    match session(&in_use, false) {
        Ok(n) if n > 0 => {}
        other => failures.push(format!("next session: {other:?}")),
    }
    if failures.is_empty() && in_use.load(Ordering::SeqCst) == 0 {
        println!("unwind: ok");
        std::process::ExitCode::SUCCESS
    } else {
        println!("unwind: FAILED: {}", failures.join("; "));
        std::process::ExitCode::FAILURE
    }
}
