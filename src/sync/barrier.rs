//! `Barrier`: `parties` processes (or threads) wait for each other, round after round.
//!
//! Protocol (every field is changed only under `mutex`):
//! - an arriving party takes `index = count`, increments `count`; the last one
//!   runs the action, zeroes `count`, increments `generation`, bumps the futex
//!   word `word` and wakes everyone;
//! - the others sleep on `word` and, relocked, return `Ok(index)` once
//!   `generation` moved past their own — unless that generation was marked
//!   broken by `reset` (`broken_gen`) — or fail if `broken` is set in their
//!   generation;
//! - a timeout, `abort`, a panicking action, or a party that died holding the
//!   mutex sets `broken`: every waiter of the round and every later arrival gets
//!   `BrokenBarrierError` until `reset`.
//!
//! # Safety
//! The layout is a [`RobustLock`] (initialised in place by [`Shared::create`],
//! never moved) and atomics.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::deadline::Deadline;
use crate::sync::raw_mutex::LockFail;
use crate::sync::robust_lock::RobustLock;
use crate::sync::shared::{magic, sleep, Shared, SharedLayout};
use crate::sys::futex;
use crate::sys::plain_fn::{plain_fn_offset, resolve_plain_fn};

/// The shared layout of a [`Barrier`].
#[repr(C)]
pub(crate) struct BarrierState {
    mutex: RobustLock,
    word: AtomicU32,
    parties: AtomicU32,
    count: AtomicU32,
    generation: AtomicU32,
    broken: AtomicU32,
    broken_gen: AtomicU32,
    has_broken_gen: AtomicU32,
    has_action: AtomicU32,
    action: AtomicI64,
    build_id: AtomicU64,
    /// Default timeout of `wait` in nanoseconds (0: none).
    timeout_ns: AtomicU64,
}

// SAFETY: a RobustLock and atomics; initialised by `BarrierState::init`.
unsafe impl SharedLayout for BarrierState {
    const MAGIC: u64 = magic("multiproc.Barrier.v2");

    fn held_in_this_process(&self) -> bool {
        self.mutex.held_in_this_process()
    }
}

/// How a wait ended inside the algorithm.
type Outcome = Result<u32, BrokenBarrierError>;

impl BarrierState {
    /// # Safety
    /// `this` is valid, aligned, writable memory for the state, not yet shared.
    unsafe fn init(
        this: *mut BarrierState,
        parties: u32,
        action: Option<(i64, u64)>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        // SAFETY: forwarded from the caller; the atomics are written before any sharing.
        unsafe {
            use std::ptr::addr_of_mut;
            addr_of_mut!((*this).word).write(AtomicU32::new(0));
            addr_of_mut!((*this).parties).write(AtomicU32::new(parties));
            addr_of_mut!((*this).count).write(AtomicU32::new(0));
            addr_of_mut!((*this).generation).write(AtomicU32::new(0));
            addr_of_mut!((*this).broken).write(AtomicU32::new(0));
            addr_of_mut!((*this).broken_gen).write(AtomicU32::new(0));
            addr_of_mut!((*this).has_broken_gen).write(AtomicU32::new(0));
            addr_of_mut!((*this).has_action).write(AtomicU32::new(u32::from(action.is_some())));
            let (off, build) = action.unwrap_or((0, 0));
            addr_of_mut!((*this).action).write(AtomicI64::new(off));
            addr_of_mut!((*this).build_id).write(AtomicU64::new(build));
            let ns = timeout.map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX).max(1));
            addr_of_mut!((*this).timeout_ns).write(AtomicU64::new(ns));
            {
                addr_of_mut!((*this).mutex).write(RobustLock::new());
                Ok(())
            }
        }
    }

    /// Locks; a dead holder or a lock failure breaks the barrier (still locked
    /// on `Err` from a dead holder, not locked on other errors).
    fn lock(&self) -> Result<(), BrokenBarrierError> {
        match self.mutex.lock(Deadline::NEVER) {
            Ok(crate::sync::raw_mutex::Locked::Clean) => Ok(()),
            Ok(crate::sync::raw_mutex::Locked::OwnerDied) => {
                self.break_locked();
                let _ = self.mutex.unlock();
                Err(BrokenBarrierError(Reason::OwnerDied))
            }
            Err(LockFail::WouldBlock) => Err(BrokenBarrierError(Reason::Io)),
            Err(LockFail::Io(_)) => Err(BrokenBarrierError(Reason::Io)),
        }
    }

    fn unlock(&self) {
        let _ = self.mutex.unlock();
    }

    fn bump_and_wake(&self) {
        self.word.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&self.word);
    }

    fn break_locked(&self) {
        self.broken.store(1, Ordering::Relaxed);
        self.bump_and_wake();
    }

    fn run_action(&self) -> Result<(), Reason> {
        if self.has_action.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let f = resolve_plain_fn(
            self.build_id.load(Ordering::Relaxed),
            self.action.load(Ordering::Relaxed),
        )
        .ok_or(Reason::ActionUnavailable)?;
        std::panic::catch_unwind(f).map_err(|_| Reason::ActionPanicked)
    }

    fn wait(&self, deadline: Deadline) -> Outcome {
        self.lock()?;
        if self.broken.load(Ordering::Relaxed) != 0 {
            self.unlock();
            return Err(BrokenBarrierError(Reason::Broken));
        }
        let gen = self.generation.load(Ordering::Relaxed);
        let index = self.count.load(Ordering::Relaxed);
        let parties = self.parties.load(Ordering::Relaxed);
        if index + 1 >= parties {
            if let Err(reason) = self.run_action() {
                self.break_locked();
                self.unlock();
                return Err(BrokenBarrierError(reason));
            }
            self.count.store(0, Ordering::Relaxed);
            self.generation.store(gen.wrapping_add(1), Ordering::Relaxed);
            self.bump_and_wake();
            self.unlock();
            return Ok(index);
        }
        self.count.store(index + 1, Ordering::Relaxed);
        loop {
            let w = self.word.load(Ordering::Relaxed);
            self.unlock();
            let timed_out = sleep(&self.word, w, deadline);
            self.lock()?;
            if self.generation.load(Ordering::Relaxed) != gen {
                let broken_by_reset = self.has_broken_gen.load(Ordering::Relaxed) != 0
                    && self.broken_gen.load(Ordering::Relaxed) == gen;
                self.unlock();
                return if broken_by_reset {
                    Err(BrokenBarrierError(Reason::Reset))
                } else {
                    Ok(index)
                };
            }
            if self.broken.load(Ordering::Relaxed) != 0 {
                self.unlock();
                return Err(BrokenBarrierError(Reason::Broken));
            }
            if timed_out {
                self.break_locked();
                self.unlock();
                return Err(BrokenBarrierError(Reason::TimedOut));
            }
        }
    }

    fn abort(&self) {
        if self.lock().is_ok() {
            self.break_locked();
            self.unlock();
        }
    }

    fn reset(&self) {
        // A dead holder already broke it; reset proceeds either way once locked.
        if self.lock().is_err() && self.mutex.lock(Deadline::NEVER).is_err() {
            return;
        }
        if self.count.load(Ordering::Relaxed) > 0 {
            let gen = self.generation.load(Ordering::Relaxed);
            self.broken_gen.store(gen, Ordering::Relaxed);
            self.has_broken_gen.store(1, Ordering::Relaxed);
            self.generation.store(gen.wrapping_add(1), Ordering::Relaxed);
            self.count.store(0, Ordering::Relaxed);
        }
        self.broken.store(0, Ordering::Relaxed);
        self.bump_and_wake();
        self.unlock();
    }
}

/// A barrier for `parties` processes or threads: each [`wait`](Barrier::wait)
/// blocks until all `parties` have called it, then all return, each with a
/// distinct index in `0..parties` (arrival order; the last to arrive,
/// `parties - 1`, runs the action). The barrier then starts a new round.
///
/// **Breaking.** A wait whose timeout passes, [`abort`](Barrier::abort), or an
/// action that panics *breaks* the barrier: every party waiting in that round,
/// and every later `wait`, gets [`BrokenBarrierError`] until
/// [`reset`](Barrier::reset).
///
/// **A party that dies.** A party killed *after* arriving still counts as
/// arrived for that round. A party killed *before* arriving leaves the round
/// short: with [`wait_timeout`](Barrier::wait_timeout) the first timeout
/// breaks the barrier for everyone (nobody hangs); with plain `wait`, the
/// others wait until someone calls [`abort`](Barrier::abort). A party killed
/// while holding the barrier's internal lock (a few instructions) breaks it.
///
/// # Examples
///
/// ```
/// use multiproc::Barrier;
/// let b = Barrier::new(2)?;
/// let b2 = b.clone();
/// let t = std::thread::spawn(move || b2.wait().unwrap());
/// let mine = b.wait()?;
/// let theirs = t.join().unwrap();
/// assert_eq!(mine + theirs, 1); // indices 0 and 1
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Differences from Python's multiprocessing
/// The action is a plain `fn()` (a function item or non-capturing closure),
/// because whichever process arrives last runs it; it must come from the same
/// executable (checked). `timeout=` is [`wait_timeout`](Barrier::wait_timeout).
#[doc(alias = "multiprocessing.Barrier")]
#[derive(Clone, Serialize, Deserialize)]
pub struct Barrier {
    shared: Shared<BarrierState>,
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .finish()
    }
}

impl Barrier {
    /// A barrier for `parties` parties.
    ///
    /// # Errors
    /// `InvalidInput` for zero parties; or the system refused the memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Barrier;
    /// let b = Barrier::new(3)?;
    /// assert_eq!(b.parties(), 3);
    /// assert_eq!(Barrier::new(0).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(parties: u32) -> io::Result<Barrier> {
        Barrier::builder(parties).build()
    }

    /// A builder for a barrier with an action and/or a default timeout
    /// (Python's `Barrier(parties, action, timeout)`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Barrier;
    /// use std::time::Duration;
    /// fn announce() {}
    /// let b = Barrier::builder(1).action(announce).timeout(Duration::from_secs(5)).build()?;
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder(parties: u32) -> BarrierBuilder {
        BarrierBuilder {
            parties,
            action: None,
            timeout: None,
        }
    }

    /// A barrier whose `action` runs once per round, in the last party to
    /// arrive, before any party is released.
    ///
    /// # Errors
    /// As [`new`](Barrier::new); also fails if this executable's image cannot be read.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Barrier;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// static ROUNDS: AtomicU32 = AtomicU32::new(0);
    /// fn count_round() {
    ///     ROUNDS.fetch_add(1, Ordering::SeqCst);
    /// }
    /// let b = Barrier::with_action(1, count_round)?;
    /// b.wait()?;
    /// b.wait()?;
    /// assert_eq!(ROUNDS.load(Ordering::SeqCst), 2); // once per round
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_action(parties: u32, action: fn()) -> io::Result<Barrier> {
        Barrier::builder(parties).action(action).build()
    }

    fn create(parties: u32, action: Option<(i64, u64)>, timeout: Option<Duration>) -> io::Result<Barrier> {
        if parties == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a barrier needs at least one party",
            ));
        }
        // SAFETY: `create` hands `init` the fresh, unshared, final address.
        let shared = Shared::create("multiproc-barrier", 0, 1, |p| unsafe {
            BarrierState::init(p, parties, action, timeout)
        })?;
        Ok(Barrier { shared })
    }

    fn state(&self) -> &BarrierState {
        self.shared.get()
    }

    /// Waits for the other parties; returns this party's index in `0..parties`.
    /// Waits at most the barrier's default timeout, if it was built with one.
    ///
    /// # Errors
    /// [`BrokenBarrierError`] if the barrier is or becomes broken (or the
    /// default timeout passes).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Barrier, Process};
    /// use std::time::Duration;
    /// // A default timeout, so that `wait` cannot hang if the child fails.
    /// let b = Barrier::builder(2).timeout(Duration::from_secs(30)).build()?;
    /// let child = Process::spawn(b.clone(), |b: Barrier| b.wait().ok())?;
    /// let mine = b.wait()?;
    /// let theirs = child.join_timeout(Duration::from_secs(30))?.flatten();
    /// assert_eq!(theirs, Some(1 - mine)); // indices 0 and 1
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self) -> Result<u32, BrokenBarrierError> {
        let ns = self.state().timeout_ns.load(Ordering::Relaxed);
        let deadline = if ns == 0 {
            Deadline::NEVER
        } else {
            Deadline::after(Duration::from_nanos(ns))
        };
        self.state().wait(deadline)
    }

    /// As [`wait`](Barrier::wait), at most `timeout`; when it passes the
    /// barrier breaks (for every party, as in Python).
    ///
    /// # Errors
    /// [`BrokenBarrierError`] (with [`is_timeout`](BrokenBarrierError::is_timeout)
    /// true for the party whose timeout broke it).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Barrier;
    /// use std::time::Duration;
    /// let b = Barrier::new(2)?;
    /// let err = b.wait_timeout(Duration::from_millis(10)).unwrap_err(); // alone
    /// assert!(err.is_timeout());
    /// assert!(b.broken()); // for every party
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, BrokenBarrierError> {
        self.state().wait(Deadline::after(timeout))
    }

    /// Breaks the barrier: current and future waits fail until [`reset`](Barrier::reset).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Barrier;
    /// use std::time::Duration;
    /// let b = Barrier::new(2)?;
    /// b.abort();
    /// assert!(b.broken());
    /// let err = b.wait_timeout(Duration::from_secs(30)).unwrap_err(); // at once
    /// assert!(!err.is_timeout());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn abort(&self) {
        self.state().abort();
    }

    /// Returns the barrier to its initial state; parties waiting in the
    /// current round get [`BrokenBarrierError`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Barrier;
    /// let b = Barrier::new(1)?;
    /// b.abort();
    /// assert!(b.wait().is_err());
    /// b.reset();
    /// assert!(!b.broken());
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reset(&self) {
        self.state().reset();
    }

    /// The number of parties.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Barrier;
    /// assert_eq!(Barrier::new(4)?.parties(), 4);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn parties(&self) -> u32 {
        self.state().parties.load(Ordering::Relaxed)
    }

    /// How many parties are waiting in the current round (a snapshot; 0 when broken).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Barrier;
    /// use std::time::Duration;
    /// let b = Barrier::new(2)?;
    /// assert_eq!(b.n_waiting(), 0);
    /// let b2 = b.clone();
    /// let t = std::thread::spawn(move || b2.wait_timeout(Duration::from_secs(30)));
    /// for _ in 0..10_000 {
    ///     if b.n_waiting() == 1 {
    ///         break;
    ///     }
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// assert_eq!(b.n_waiting(), 1); // the other thread arrived
    /// b.wait_timeout(Duration::from_secs(30))?;
    /// assert!(t.join().unwrap().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn n_waiting(&self) -> u32 {
        let s = self.state();
        if s.broken.load(Ordering::Relaxed) != 0 {
            0
        } else {
            s.count.load(Ordering::Relaxed)
        }
    }

    /// True while the barrier is broken.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Barrier;
    /// let b = Barrier::new(2)?;
    /// assert!(!b.broken());
    /// b.abort();
    /// assert!(b.broken());
    /// b.reset();
    /// assert!(!b.broken());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn broken(&self) -> bool {
        self.state().broken.load(Ordering::Relaxed) != 0
    }
}

/// Builds a [`Barrier`]: `Barrier::builder(parties).action(f).timeout(t).build()`.
///
/// # Examples
///
/// ```
/// use multiproc::Barrier;
/// use std::time::Duration;
/// let b = Barrier::builder(2).timeout(Duration::from_millis(10)).build()?;
/// assert!(b.wait().unwrap_err().is_timeout()); // the default timeout applies
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "call build() to create the barrier"]
pub struct BarrierBuilder {
    parties: u32,
    action: Option<fn()>,
    timeout: Option<Duration>,
}

impl BarrierBuilder {
    /// The action run once per round by the last party to arrive, before any
    /// party is released (a plain `fn()` of this executable).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Barrier;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// static RAN: AtomicBool = AtomicBool::new(false);
    /// let b = Barrier::builder(1).action(|| RAN.store(true, Ordering::SeqCst)).build()?;
    /// assert!(!RAN.load(Ordering::SeqCst));
    /// b.wait()?;
    /// assert!(RAN.load(Ordering::SeqCst)); // run by the last party to arrive
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn action(mut self, action: fn()) -> Self {
        self.action = Some(action);
        self
    }

    /// The default timeout of [`Barrier::wait`] (Python's `timeout=`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Barrier;
    /// use std::time::Duration;
    /// let b = Barrier::builder(2).timeout(Duration::from_millis(10)).build()?;
    /// assert!(b.wait().unwrap_err().is_timeout());
    /// assert!(b.broken());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Creates the barrier.
    ///
    /// # Errors
    /// `InvalidInput` for zero parties; the system refused the memory; or this
    /// executable's image cannot be read (with an action).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Barrier;
    /// assert_eq!(Barrier::builder(2).build()?.parties(), 2);
    /// let err = Barrier::builder(0).build().unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn build(self) -> io::Result<Barrier> {
        let action = match self.action {
            None => None,
            Some(f) => Some((plain_fn_offset(f), crate::sys::image::Image::get()?.build_id)),
        };
        Barrier::create(self.parties, action, self.timeout)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Broken,
    TimedOut,
    Reset,
    OwnerDied,
    ActionPanicked,
    ActionUnavailable,
    Io,
}

/// The barrier is broken (aborted, reset during the wait, a party timed out, or
/// the action panicked): Python's `BrokenBarrierError`.
///
/// # Examples
///
/// ```
/// use multiproc::{Barrier, BrokenBarrierError};
/// let b = Barrier::new(2)?;
/// b.abort();
/// let err: BrokenBarrierError = b.wait().unwrap_err();
/// assert!(!err.is_timeout());
/// assert!(err.to_string().contains("broken"));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenBarrierError(Reason);

impl BrokenBarrierError {
    /// True when this party's own timeout broke the barrier.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Barrier;
    /// use std::time::Duration;
    /// let b = Barrier::new(2)?;
    /// assert!(b.wait_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// // Broken by that timeout: the next wait fails at once, not by its own timeout.
    /// assert!(!b.wait_timeout(Duration::from_secs(30)).unwrap_err().is_timeout());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_timeout(&self) -> bool {
        self.0 == Reason::TimedOut
    }
}

impl fmt::Display for BrokenBarrierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Reason::Broken => "the barrier is broken",
            Reason::TimedOut => "timed out waiting at the barrier; it is now broken",
            Reason::Reset => "the barrier was reset during the wait",
            Reason::OwnerDied => "a party died inside the barrier; it is now broken",
            Reason::ActionPanicked => "the barrier's action panicked; the barrier is now broken",
            Reason::ActionUnavailable => {
                "the barrier's action comes from another executable and cannot run here; the barrier is now broken"
            }
            Reason::Io => "the barrier's lock failed",
        })
    }
}

impl std::error::Error for BrokenBarrierError {}

impl From<BrokenBarrierError> for io::Error {
    fn from(e: BrokenBarrierError) -> io::Error {
        let kind = if e.is_timeout() {
            io::ErrorKind::TimedOut
        } else {
            io::ErrorKind::Other
        };
        io::Error::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static ACTIONS: AtomicUsize = AtomicUsize::new(0);

    fn count_action() {
        ACTIONS.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn distinct_indices_and_action_once_per_round() {
        let b = Barrier::with_action(3, count_action).unwrap();
        let before = ACTIONS.load(Ordering::SeqCst);
        for _round in 0..20 {
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    let b = b.clone();
                    std::thread::spawn(move || b.wait_timeout(Duration::from_secs(10)).unwrap())
                })
                .collect();
            let mut idx: Vec<u32> = hs.into_iter().map(|h| h.join().unwrap()).collect();
            idx.sort();
            assert_eq!(idx, [0, 1, 2]);
        }
        assert_eq!(ACTIONS.load(Ordering::SeqCst) - before, 20);
    }

    #[test]
    fn timeout_breaks_for_everyone_and_reset_repairs() {
        let b = Barrier::new(3).unwrap();
        let b2 = b.clone();
        let other = std::thread::spawn(move || b2.wait_timeout(Duration::from_secs(10)));
        let mine = b.wait_timeout(Duration::from_millis(50));
        assert!(mine.unwrap_err().is_timeout());
        let theirs = other.join().unwrap();
        assert!(theirs.is_err_and(|e| !e.is_timeout()));
        assert!(b.broken());
        assert!(b.wait().is_err());
        b.reset();
        assert!(!b.broken());
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || b.wait_timeout(Duration::from_secs(10)))
            })
            .collect();
        assert!(b.wait_timeout(Duration::from_secs(10)).is_ok());
        assert!(hs.into_iter().all(|h| h.join().unwrap().is_ok()));
    }

    #[test]
    fn abort_releases_waiters() {
        let b = Barrier::new(2).unwrap();
        let b2 = b.clone();
        let h = std::thread::spawn(move || b2.wait());
        while b.n_waiting() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        b.abort();
        assert!(h.join().unwrap().is_err());
        assert_eq!(b.n_waiting(), 0);
    }

    #[test]
    fn default_timeout_breaks_a_short_round() {
        let b = Barrier::builder(2)
            .timeout(Duration::from_millis(30))
            .build()
            .unwrap();
        let t = std::time::Instant::now();
        assert!(b.wait().unwrap_err().is_timeout());
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert!(b.broken());
    }

    #[test]
    fn zero_parties_is_an_error() {
        assert_eq!(Barrier::new(0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
