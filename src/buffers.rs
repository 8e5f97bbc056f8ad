//! The 64 KiB content buffers (the connection's input during DATA and BDAT,
//! the spool file's write buffer), kept on the session thread for its next
//! message. musl's allocator hands a freed block of that size straight back
//! to the kernel, so without this every message pays an `mmap`, a `munmap`
//! and fresh page faults for each of the two. A thread keeps at most
//! [`SPARES`] buffers, also while its session idles between messages or it
//! waits in accept for the next connection, and they go when the thread
//! ends (an idle pool shrinks to one thread per listener within seconds:
//! `server`). Only the pages a message touched count towards RSS.

use std::cell::RefCell;

/// The size of a content buffer.
pub const CONTENT: usize = 64 * 1024;

/// Buffers a thread keeps: one for the input, one for the spool.
const SPARES: usize = 2;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A content buffer, `CONTENT` bytes long: a spare of this thread's (its
/// bytes are a previous message's) or a new zeroed one.
pub fn take() -> Vec<u8> {
    let spare = SPARE.try_with(|s| s.borrow_mut().pop()).ok().flatten();
    spare.unwrap_or_else(|| vec![0; CONTENT])
}

/// Gives a buffer from [`take`] back for this thread's next message. Any
/// other buffer, or one more than the thread keeps, is freed.
pub fn give(buf: Vec<u8>) {
    if buf.len() != CONTENT {
        return;
    }
    // During the thread's exit the spares may be gone: then it is freed.
    let _ = SPARE.try_with(|s| {
        let mut spares = s.borrow_mut();
        if spares.len() < SPARES {
            spares.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_on_the_same_thread_only() {
        std::thread::spawn(|| {
            let mut buf = take();
            assert_eq!(buf.len(), CONTENT);
            buf[0] = 42;
            let at = buf.as_ptr();
            give(buf);
            let again = take();
            assert_eq!((again.as_ptr(), again[0]), (at, 42), "the spare was reused");
            // Another thread gets a new, zeroed one.
            let other = std::thread::spawn(|| take()[0]).join().unwrap();
            assert_eq!(other, 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_keeps_at_most_two_and_only_content_buffers() {
        std::thread::spawn(|| {
            let bufs: Vec<Vec<u8>> = (0..3).map(|_| take()).collect();
            let ptrs: Vec<*const u8> = bufs.iter().map(|b| b.as_ptr()).collect();
            bufs.into_iter().for_each(give);
            give(vec![0; 10]);
            let kept = SPARE.with(|s| s.borrow().iter().map(|b| b.as_ptr()).collect::<Vec<_>>());
            assert_eq!(kept, ptrs[..2].to_vec());
        })
        .join()
        .unwrap();
    }
}
