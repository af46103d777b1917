//! `Event`: a flag that processes can wait for.
//!
//! The layout is one atomic word, which is also the futex word.
//! Bit 0 is the flag; the upper bits count `set` calls (wrapping), so a waiter
//! that was asleep when the flag was set returns `true` even if it was cleared
//! again before the waiter ran (as Python's `Event.wait` does).
//!
//! # Safety
//! The only `unsafe` is the [`SharedLayout`] declaration: the layout is one atomic.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::deadline::Deadline;
use crate::sync::shared::{magic, sleep, Shared, SharedLayout};
use crate::sys::futex;

/// The shared layout of an [`Event`].
#[repr(C)]
pub(crate) struct EventState {
    word: AtomicU32,
}

// SAFETY: one atomic.
unsafe impl SharedLayout for EventState {
    const MAGIC: u64 = magic("multiproc.Event.v1");
}

impl EventState {
    pub(crate) fn new() -> EventState {
        EventState {
            word: AtomicU32::new(0),
        }
    }

    pub(crate) fn set(&self) {
        let mut w = self.word.load(Ordering::Relaxed);
        loop {
            if w & 1 == 1 {
                return;
            }
            match self.word.compare_exchange_weak(
                w,
                w.wrapping_add(2) | 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        futex::wake_all(&self.word);
    }

    pub(crate) fn clear(&self) {
        self.word.fetch_and(!1, Ordering::SeqCst);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.word.load(Ordering::Acquire) & 1 == 1
    }

    /// Waits until set (or set since the call began); false on timeout.
    pub(crate) fn wait(&self, deadline: Deadline) -> bool {
        let start = self.word.load(Ordering::Acquire);
        if start & 1 == 1 {
            return true;
        }
        let mut seen = start;
        loop {
            let timed_out = sleep(&self.word, seen, deadline);
            let now = self.word.load(Ordering::Acquire);
            if now & 1 == 1 || (now >> 1) != (start >> 1) {
                return true;
            }
            if timed_out {
                return false;
            }
            seen = now;
        }
    }
}

/// A flag shared between processes: [`set`](Event::set) wakes every waiter,
/// [`clear`](Event::clear) resets it.
///
/// Nothing is owned, so nothing is lost when a process dies: a process killed
/// while waiting leaves no trace, and one killed before calling `set` simply
/// never sets it (use [`wait_timeout`](Event::wait_timeout)).
///
/// # Examples
///
/// ```
/// use multiproc::Event;
/// use std::time::Duration;
/// let ev = Event::new()?;
/// assert!(!ev.wait_timeout(Duration::from_millis(1)));
/// ev.set();
/// assert!(ev.is_set());
/// ev.wait();
/// # Ok::<(), std::io::Error>(())
/// ```
#[doc(alias = "multiprocessing.Event")]
#[derive(Clone, Serialize, Deserialize)]
pub struct Event {
    shared: Shared<EventState>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("is_set", &self.is_set()).finish()
    }
}

impl Event {
    /// A new, clear event.
    ///
    /// # Errors
    /// The system refused the memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Event;
    /// let ev = Event::new()?;
    /// assert!(!ev.is_set());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> io::Result<Event> {
        let shared = Shared::create_value("multiproc-event", EventState::new())?;
        Ok(Event { shared })
    }

    fn state(&self) -> &EventState {
        self.shared.get()
    }

    /// Sets the flag and wakes every waiter, in every process.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Event, Process};
    /// use std::time::Duration;
    /// let ev = Event::new()?;
    /// let child = Process::spawn(ev.clone(), |ev: Event| ev.set())?;
    /// assert!(ev.wait_timeout(Duration::from_secs(30))); // set by the child
    /// child.join_timeout(Duration::from_secs(30))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self) {
        self.state().set();
    }

    /// Clears the flag.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Event;
    /// use std::time::Duration;
    /// let ev = Event::new()?;
    /// ev.set();
    /// ev.clear();
    /// assert!(!ev.is_set());
    /// assert!(!ev.wait_timeout(Duration::from_millis(1)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn clear(&self) {
        self.state().clear();
    }

    /// True while the flag is set.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Event;
    /// let ev = Event::new()?;
    /// assert!(!ev.is_set());
    /// ev.clone().set(); // any handle
    /// assert!(ev.is_set());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_set(&self) -> bool {
        self.state().is_set()
    }

    /// Waits until the flag is set.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Event;
    /// let ev = Event::new()?;
    /// let setter = ev.clone();
    /// let t = std::thread::spawn(move || setter.set());
    /// ev.wait(); // returns once the other thread has set the flag
    /// assert!(ev.is_set());
    /// # t.join().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait(&self) {
        self.state().wait(Deadline::NEVER);
    }

    /// Waits at most `timeout`; true if the flag was set (Python's return value).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Event;
    /// use std::time::Duration;
    /// let ev = Event::new()?;
    /// assert!(!ev.wait_timeout(Duration::from_millis(5))); // timed out
    /// ev.set();
    /// assert!(ev.wait_timeout(Duration::from_millis(5)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.state().wait(Deadline::after(timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn heap_state_set_wakes_all_threads() {
        let e = Arc::new(EventState::new());
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let e = e.clone();
                std::thread::spawn(move || e.wait(Deadline::after(Duration::from_secs(10))))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        e.set();
        for h in hs {
            assert!(h.join().unwrap());
        }
    }

    #[test]
    fn set_then_clear_still_wakes_a_sleeper() {
        let e = Event::new().unwrap();
        let e2 = e.clone();
        let h = std::thread::spawn(move || e2.wait_timeout(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(30));
        e.set();
        e.clear();
        assert!(h.join().unwrap());
        assert!(!e.is_set());
        assert!(!e.wait_timeout(Duration::from_millis(10)));
    }
}
