//! Shared (inter-process) futexes on `AtomicU32` words that live in shared memory.
//!
//! No `unsafe`: rustix's futex calls take `&AtomicU32`. The words must live in
//! a `MAP_SHARED` mapping for other processes to see them; the calls here use
//! the shared (not private) futex flags, unlike parking_lot and std.

use std::io;
use std::sync::atomic::AtomicU32;

use rustix::io::Errno;
use rustix::thread::futex;

use crate::deadline::Deadline;

/// What a [`wait`] came back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Woken, or the word no longer held `expected`, or a signal: re-check the word.
    Retry,
    /// The deadline passed.
    TimedOut,
}

/// Sleeps while `*word == expected`, at most until `deadline`.
/// Spurious returns are possible; callers loop on their condition.
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> io::Result<Wake> {
    let ts = match deadline.remaining() {
        None => None,
        Some(d) if d.is_zero() => return Ok(Wake::TimedOut),
        Some(d) => Some(rustix::thread::futex::Timespec {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(d.subsec_nanos()),
        }),
    };
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) | Err(Errno::AGAIN) | Err(Errno::INTR) => Ok(Wake::Retry),
        Err(Errno::TIMEDOUT) => Ok(Wake::TimedOut),
        Err(e) => Err(e.into()),
    }
}

/// Wakes at most `n` sleepers on `word` (in any process); returns how many woke.
pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), n).unwrap_or(0)
}

/// Wakes every sleeper on `word`.
pub(crate) fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}
