//! `Condition`: a condition variable with its own crash-safe lock, shared
//! between processes.
//!
//! Protocol (every counter is changed only under `mutex`):
//! - `waiting` counts waiters not yet notified, `to_wake` counts notifications
//!   handed out but not yet taken; every thread inside `wait` is counted in
//!   exactly one of the two (`waiting + to_wake` = number of waiters).
//! - `notify(n)` moves `k = min(n, waiting)` from `waiting` to `to_wake`, bumps
//!   the futex word `seq`, and wakes `k` sleepers.
//! - A waiter reads `seq` under the lock, unlocks, sleeps while `seq` is
//!   unchanged, relocks, and then takes a token if there is one (notified), or
//!   leaves `waiting` if its deadline passed (timed out) — so a timed-out waiter
//!   never consumes a notification meant for another.
//!
//! # Safety
//! The layout is a [`RobustLock`] (initialised in place by [`Shared::create`],
//! never moved) and atomics.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::deadline::Deadline;
use crate::sync::error::{lock_raw, LockError, Wait};
use crate::sync::raw_mutex::Locked;
use crate::sync::robust_lock::RobustLock;
use crate::sync::shared::{magic, sleep, Shared, SharedLayout};
use crate::sys::futex;

/// The shared layout of a [`Condition`].
#[repr(C)]
pub(crate) struct CondState {
    mutex: RobustLock,
    seq: AtomicU32,
    waiting: AtomicU32,
    to_wake: AtomicU32,
}

// SAFETY: a RobustLock and atomics; initialised by `CondState::init`.
unsafe impl SharedLayout for CondState {
    const MAGIC: u64 = magic("multiproc.Condition.v1");

    fn held_in_this_process(&self) -> bool {
        self.mutex.held_in_this_process()
    }
}

impl CondState {
    /// # Safety
    /// `this` is valid, aligned, writable memory for the state, not yet shared.
    pub(crate) unsafe fn init(this: *mut CondState) -> io::Result<()> {
        // SAFETY: forwarded from the caller; the atomics are written before any sharing.
        unsafe {
            std::ptr::addr_of_mut!((*this).seq).write(AtomicU32::new(0));
            std::ptr::addr_of_mut!((*this).waiting).write(AtomicU32::new(0));
            std::ptr::addr_of_mut!((*this).to_wake).write(AtomicU32::new(0));
            {
                std::ptr::addr_of_mut!((*this).mutex).write(RobustLock::new());
                Ok(())
            }
        }
    }

    /// Waits for a notification; the caller holds `mutex`, and holds it again
    /// on `Ok`. Returns (notified, a holder died while we were away).
    fn wait(&self, deadline: Deadline) -> io::Result<(bool, bool)> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let mut died = false;
        loop {
            let s = self.seq.load(Ordering::Relaxed);
            let _ = self.mutex.unlock();
            let timed_out = sleep(&self.seq, s, deadline);
            match self.mutex.lock(Deadline::NEVER) {
                Ok(Locked::Clean) => {}
                Ok(Locked::OwnerDied) => died = true,
                Err(crate::sync::raw_mutex::LockFail::Io(e)) => return Err(e),
                Err(crate::sync::raw_mutex::LockFail::WouldBlock) => {
                    return Err(io::Error::other("relocking a condition's lock failed"))
                }
            }
            let tokens = self.to_wake.load(Ordering::Relaxed);
            if tokens > 0 {
                self.to_wake.store(tokens - 1, Ordering::Relaxed);
                return Ok((true, died));
            }
            if timed_out {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                return Ok((false, died));
            }
        }
    }

    /// Notifies up to `n` waiters; the caller holds `mutex`.
    fn notify(&self, n: u32) -> u32 {
        let waiting = self.waiting.load(Ordering::Relaxed);
        let k = waiting.min(n);
        if k > 0 {
            self.waiting.store(waiting - k, Ordering::Relaxed);
            self.to_wake.fetch_add(k, Ordering::Relaxed);
            self.seq.fetch_add(1, Ordering::SeqCst);
            futex::wake(&self.seq, k);
        }
        k
    }
}

/// A condition variable shared between processes, with its own lock.
///
/// [`acquire`](Condition::acquire) the lock; on the returned
/// [`ConditionGuard`] call [`wait`](ConditionGuard::wait) (which releases the
/// lock while sleeping and takes it back), or
/// [`notify`](ConditionGuard::notify) / [`notify_all`](ConditionGuard::notify_all).
/// As with any condition variable, check the awaited condition in a loop, or
/// use [`wait_for`](ConditionGuard::wait_for).
///
/// `notify(n)` wakes up to `n` of the threads waiting at that moment; a waiter
/// whose timeout passes does not consume a notification.
///
/// **Crash safety.** The lock is robust: if a process dies holding it, the
/// next acquirer (or a waiter taking it back) gets [`LockError::OwnerDied`].
/// A process killed while *waiting* stays counted as a waiter until a
/// notification is spent on it: a `notify(n)` may then wake one fewer live
/// waiter, and a later waiter may see one timed wait report `true` early.
/// `notify_all` always wakes every live waiter.
///
/// # Examples
///
/// ```
/// use multiproc::{Condition, Value};
/// use std::time::Duration;
/// let cond = Condition::new()?;
/// let ready = Value::<u32>::new(0)?;
/// let (c2, r2) = (cond.clone(), ready.clone());
/// let t = std::thread::spawn(move || {
///     let g = c2.acquire().unwrap();
///     r2.store(1).unwrap();
///     g.notify_all();
/// });
/// let mut g = cond.acquire()?;
/// let ok = g.wait_for_timeout(|| ready.load().unwrap() == 1, Duration::from_secs(10))?;
/// assert!(ok);
/// # drop(g);
/// # t.join().unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Differences from Python's multiprocessing
/// The lock is part of the condition and is not reentrant (Python's default is
/// an `RLock`); `notify` outside the lock is impossible by construction (it is
/// a method of the guard) instead of a `RuntimeError`.
#[doc(alias = "multiprocessing.Condition")]
#[derive(Clone, Serialize, Deserialize)]
pub struct Condition {
    shared: Shared<CondState>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition").finish_non_exhaustive()
    }
}

impl Condition {
    /// A new condition variable with its lock free.
    ///
    /// # Errors
    /// The system refused the memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Condition;
    /// let cond = Condition::new()?;
    /// assert!(cond.try_acquire().is_ok()); // its lock starts free
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> io::Result<Condition> {
        // SAFETY: `create` hands `init` the fresh, unshared, final address.
        let shared = Shared::create("multiproc-condition", 0, 1, |p| unsafe { CondState::init(p) })?;
        Ok(Condition { shared })
    }

    fn state(&self) -> &CondState {
        self.shared.get()
    }

    fn lock_with(&self, wait: Wait) -> Result<ConditionGuard<'_>, LockError<ConditionGuard<'_>>> {
        lock_raw(&self.state().mutex, wait, || ConditionGuard {
            state: self.state(),
            held: true,
            _not_send: PhantomData,
        })
    }

    /// Takes the condition's lock, waiting as long as needed.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] (guard inside) once after a holder died;
    /// [`LockError::WouldDeadlock`] if this thread holds it already.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Condition, LockError};
    /// let cond = Condition::new()?;
    /// let guard = cond.acquire()?;
    /// assert!(matches!(cond.acquire(), Err(LockError::WouldDeadlock)));
    /// drop(guard);
    /// assert!(cond.acquire().is_ok());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<ConditionGuard<'_>, LockError<ConditionGuard<'_>>> {
        self.lock_with(Wait::Until(Deadline::NEVER))
    }

    /// Takes the lock if it is free now.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] when another thread or process holds it;
    /// [`LockError::WouldDeadlock`] when the calling thread does; otherwise as
    /// [`acquire`](Condition::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Condition, LockError};
    /// let cond = Condition::new()?;
    /// let _guard = cond.acquire()?;
    /// let other = cond.clone();
    /// let refused = std::thread::spawn(move || matches!(other.try_acquire(), Err(LockError::WouldBlock)));
    /// assert!(refused.join().unwrap());
    /// assert!(matches!(cond.try_acquire(), Err(LockError::WouldDeadlock))); // this thread holds it
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<ConditionGuard<'_>, LockError<ConditionGuard<'_>>> {
        self.lock_with(Wait::No)
    }

    /// Takes the lock, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LockError::Timeout`] when the timeout passed; otherwise as
    /// [`acquire`](Condition::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Condition, LockError};
    /// use std::time::Duration;
    /// let cond = Condition::new()?;
    /// let _guard = cond.acquire()?;
    /// let other = cond.clone();
    /// let r = std::thread::spawn(move || {
    ///     matches!(other.acquire_timeout(Duration::from_millis(10)), Err(LockError::Timeout))
    /// });
    /// assert!(r.join().unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<ConditionGuard<'_>, LockError<ConditionGuard<'_>>> {
        self.lock_with(Wait::Until(Deadline::after(timeout)))
    }
}

/// The held lock of a [`Condition`], through which one waits and notifies.
/// Unlocks on drop. `!Send`.
///
/// # Examples
///
/// ```
/// use multiproc::Condition;
/// let cond = Condition::new()?;
/// {
///     let guard = cond.acquire()?;
///     assert_eq!(guard.notify_all(), 0); // nobody is waiting
///     assert!(cond.try_acquire().is_err());
/// } // dropped: unlocked
/// assert!(cond.try_acquire().is_ok());
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    state: &'a CondState,
    held: bool,
    _not_send: PhantomData<*const ()>,
}

impl ConditionGuard<'_> {
    fn wait_until(&mut self, deadline: Deadline) -> Result<bool, LockError<bool>> {
        if !self.held {
            return Err(LockError::Io(io::Error::other("the condition's lock was lost")));
        }
        match self.state.wait(deadline) {
            Ok((notified, false)) => Ok(notified),
            Ok((notified, true)) => Err(LockError::OwnerDied(notified)),
            Err(e) => {
                self.held = false;
                Err(LockError::Io(e))
            }
        }
    }

    /// Releases the lock, sleeps until notified, and takes the lock back.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] when, while this thread slept, a holder died
    /// holding the lock (this thread holds it again). [`LockError::Io`] if the
    /// lock could not be taken back (not expected; the guard then no longer
    /// holds it).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Condition, Value};
    /// let cond = Condition::new()?;
    /// let ready = Value::<u32>::new(0)?;
    /// let (c2, r2) = (cond.clone(), ready.clone());
    /// let t = std::thread::spawn(move || {
    ///     let g = c2.acquire().unwrap();
    ///     r2.store(1).unwrap();
    ///     g.notify_all();
    /// });
    /// let mut g = cond.acquire()?;
    /// while ready.load()? == 0 {
    ///     g.wait()?; // the lock is free while this thread sleeps
    /// }
    /// # drop(g);
    /// # t.join().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait(&mut self) -> Result<(), LockError<()>> {
        self.wait_until(Deadline::NEVER)
            .map(drop)
            .map_err(|e| e.map(drop))
    }

    /// As [`wait`](ConditionGuard::wait), at most `timeout`; `true` if notified,
    /// `false` if the timeout passed.
    ///
    /// # Errors
    /// As [`wait`](ConditionGuard::wait); `OwnerDied` carries the `bool`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Condition;
    /// use std::time::Duration;
    /// let cond = Condition::new()?;
    /// let mut g = cond.acquire()?;
    /// assert!(!g.wait_timeout(Duration::from_millis(10))?); // nobody notified
    /// assert!(cond.try_acquire().is_err()); // the lock is held again
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<bool, LockError<bool>> {
        self.wait_until(Deadline::after(timeout))
    }

    /// Waits until `predicate()` is true (checked under the lock, first
    /// before any wait).
    ///
    /// # Errors
    /// As [`wait`](ConditionGuard::wait).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Condition, Value};
    /// let cond = Condition::new()?;
    /// let count = Value::<u32>::new(0)?;
    /// let (c2, n2) = (cond.clone(), count.clone());
    /// let t = std::thread::spawn(move || {
    ///     for _ in 0..3 {
    ///         let g = c2.acquire().unwrap();
    ///         *n2.lock().unwrap() += 1;
    ///         g.notify_all();
    ///     }
    /// });
    /// let mut g = cond.acquire()?;
    /// g.wait_for(|| count.load().is_ok_and(|n| n == 3))?;
    /// assert_eq!(count.load()?, 3);
    /// # drop(g);
    /// # t.join().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_for(&mut self, mut predicate: impl FnMut() -> bool) -> Result<(), LockError<()>> {
        while !predicate() {
            self.wait()?;
        }
        Ok(())
    }

    /// Waits at most `timeout` until `predicate()` is true; returns the
    /// predicate's last value (Python's `wait_for(predicate, timeout)`).
    ///
    /// # Errors
    /// As [`wait`](ConditionGuard::wait); `OwnerDied` carries the predicate's value.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Condition;
    /// use std::time::Duration;
    /// let cond = Condition::new()?;
    /// let mut g = cond.acquire()?;
    /// assert!(g.wait_for_timeout(|| true, Duration::ZERO)?); // checked before any wait
    /// assert!(!g.wait_for_timeout(|| false, Duration::from_millis(10))?); // timed out
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_for_timeout(
        &mut self,
        mut predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<bool, LockError<bool>> {
        let deadline = Deadline::after(timeout);
        loop {
            if predicate() {
                return Ok(true);
            }
            if deadline.passed() {
                return Ok(false);
            }
            if let Err(e) = self.wait_until(deadline) {
                return Err(e.map(|_| predicate()));
            }
        }
    }

    /// Wakes up to `n` waiters (in any process); returns how many were notified.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Condition;
    /// use std::time::Duration;
    /// let cond = Condition::new()?;
    /// assert_eq!(cond.acquire()?.notify(1), 0); // nobody waits
    /// let c2 = cond.clone();
    /// let waiter = std::thread::spawn(move || {
    ///     let mut g = c2.acquire().unwrap();
    ///     g.wait_timeout(Duration::from_secs(30)).unwrap()
    /// });
    /// let mut woken = 0;
    /// for _ in 0..10_000 {
    ///     woken = cond.acquire()?.notify(2); // once the waiter sleeps
    ///     if woken > 0 {
    ///         break;
    ///     }
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// assert_eq!(woken, 1); // one waiter: one notified
    /// assert!(waiter.join().unwrap()); // notified, not timed out
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn notify(&self, n: u32) -> u32 {
        self.state.notify(n)
    }

    /// Wakes one waiter (Python's `notify()`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Condition, Value};
    /// use std::time::Duration;
    /// let cond = Condition::new()?;
    /// let flag = Value::<u8>::new(0)?;
    /// let (c2, f2) = (cond.clone(), flag.clone());
    /// let waiter = std::thread::spawn(move || {
    ///     let mut g = c2.acquire().unwrap();
    ///     g.wait_for_timeout(|| f2.load().is_ok_and(|v| v == 1), Duration::from_secs(30)).unwrap()
    /// });
    /// {
    ///     let g = cond.acquire()?;
    ///     flag.store(1)?;
    ///     g.notify_one();
    /// }
    /// assert!(waiter.join().unwrap()); // woken and saw the flag
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn notify_one(&self) -> u32 {
        self.state.notify(1)
    }

    /// Wakes every waiter.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Condition;
    /// use std::time::Duration;
    /// let cond = Condition::new()?;
    /// let waiters: Vec<_> = (0..2)
    ///     .map(|_| {
    ///         let c = cond.clone();
    ///         std::thread::spawn(move || {
    ///             let mut g = c.acquire().unwrap();
    ///             g.wait_timeout(Duration::from_secs(30)).unwrap()
    ///         })
    ///     })
    ///     .collect();
    /// let mut woken = 0;
    /// for _ in 0..10_000 {
    ///     woken += cond.acquire()?.notify_all();
    ///     if woken == 2 {
    ///         break;
    ///     }
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// assert_eq!(woken, 2);
    /// for w in waiters {
    ///     assert!(w.join().unwrap()); // every waiter was notified
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn notify_all(&self) -> u32 {
        self.state.notify(u32::MAX)
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard").finish_non_exhaustive()
    }
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        if self.held {
            let _ = self.state.mutex.unlock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Spawns `n` threads each waiting once (up to `timeout`); returns their handles.
    fn waiters(
        c: &Condition,
        n: usize,
        timeout: Duration,
        started: &Arc<AtomicU32>,
    ) -> Vec<std::thread::JoinHandle<bool>> {
        (0..n)
            .map(|_| {
                let (c, started) = (c.clone(), started.clone());
                std::thread::spawn(move || {
                    let mut g = c.acquire().unwrap();
                    started.fetch_add(1, Ordering::SeqCst);
                    g.wait_timeout(timeout).unwrap()
                })
            })
            .collect()
    }

    fn until(f: impl Fn() -> bool) {
        let d = Deadline::after(Duration::from_secs(10));
        while !f() && !d.passed() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn notify_n_wakes_n_threads() {
        let c = Condition::new().unwrap();
        let started = Arc::new(AtomicU32::new(0));
        let hs = waiters(&c, 5, Duration::from_secs(20), &started);
        until(|| started.load(Ordering::SeqCst) == 5);
        // Every waiter is inside `wait` once it released the lock again.
        drop(c.acquire().unwrap());
        assert_eq!(c.acquire().unwrap().notify(2), 2);
        until(|| hs.iter().filter(|h| h.is_finished()).count() >= 2);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(hs.iter().filter(|h| h.is_finished()).count(), 2);
        assert_eq!(c.acquire().unwrap().notify_all(), 3);
        for h in hs {
            assert!(h.join().unwrap());
        }
    }

    #[test]
    fn timed_out_waiters_do_not_consume_notifications() {
        let c = Condition::new().unwrap();
        let started = Arc::new(AtomicU32::new(0));
        let short = waiters(&c, 3, Duration::from_millis(30), &started);
        until(|| started.load(Ordering::SeqCst) == 3);
        for h in short {
            assert!(!h.join().unwrap(), "nobody notified: must time out");
        }
        let long = waiters(&c, 1, Duration::from_secs(20), &started);
        until(|| started.load(Ordering::SeqCst) == 4);
        drop(c.acquire().unwrap());
        // Exactly one waiter is counted now, not four.
        assert_eq!(c.acquire().unwrap().notify(3), 1);
        assert!(long.into_iter().all(|h| h.join().unwrap()));
    }
}
