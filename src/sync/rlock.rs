//! `RLock`: a reentrant, crash-safe lock shared between processes.
//!
//! # Safety
//! The only `unsafe` is the [`SharedLayout`] declaration: the layout is a
//! [`RobustLock`] (whose word names the owning thread) and a recursion count
//! that only the owner touches.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::deadline::Deadline;
use crate::sync::error::{lock_raw, LockError, ReleaseError, Wait};
use crate::sync::robust_lock::RobustLock;
use crate::sync::shared::{magic, Shared, SharedLayout};

/// The shared layout of an [`RLock`].
#[repr(C)]
pub(crate) struct RLockState {
    mutex: RobustLock,
    count: AtomicU32,
}

// SAFETY: a RobustLock and an atomic.
unsafe impl SharedLayout for RLockState {
    const MAGIC: u64 = magic("multiproc.RLock.v2");

    fn held_in_this_process(&self) -> bool {
        self.mutex.held_in_this_process()
    }
}

impl RLockState {
    fn new() -> RLockState {
        RLockState {
            mutex: RobustLock::new(),
            count: AtomicU32::new(0),
        }
    }

    /// The owner is the thread whose id is in the lock word.
    fn owned(&self) -> bool {
        self.mutex.held_by_current_thread()
    }

    /// Acquires (or re-enters); `Ok(true)` when the previous owner died.
    fn acquire(&self, wait: Wait) -> Result<bool, LockError<()>> {
        if self.owned() {
            let c = self.count.load(Ordering::Relaxed);
            let c = c
                .checked_add(1)
                .ok_or_else(|| LockError::Io(io::Error::other("RLock recursion count overflow")))?;
            self.count.store(c, Ordering::Relaxed);
            return Ok(false);
        }
        let died = match lock_raw(&self.mutex, wait, || ()) {
            Ok(()) => false,
            Err(LockError::OwnerDied(())) => true,
            Err(e) => return Err(e),
        };
        self.count.store(1, Ordering::Relaxed);
        Ok(died)
    }

    fn release(&self) -> Result<(), ReleaseError> {
        if !self.owned() {
            return Err(ReleaseError::NotHeld);
        }
        let c = self.count.load(Ordering::Relaxed);
        if c > 1 {
            self.count.store(c - 1, Ordering::Relaxed);
            return Ok(());
        }
        self.count.store(0, Ordering::Relaxed);
        crate::sync::error::unlock_raw(&self.mutex)
    }
}

/// A reentrant lock shared between processes: the thread that holds it may
/// acquire it again; it is free once every acquisition has been released.
///
/// The owner is a thread (its kernel thread id is in the lock word). Like [`Lock`](crate::Lock)
/// it survives its owner's death: the next acquirer gets
/// [`LockError::OwnerDied`] once.
///
/// # Examples
///
/// ```
/// use multiproc::RLock;
/// let lock = RLock::new()?;
/// let outer = lock.acquire()?;
/// let inner = lock.acquire()?; // same thread: fine
/// drop(inner);
/// drop(outer);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Differences from Python's multiprocessing
/// Acquisitions are guards ([`RLockGuard`], `!Send`) released on drop; the
/// Python-style [`release`](RLock::release) exists for a leaked guard and
/// refuses a thread that is not the owner, like Python's.
#[doc(alias = "multiprocessing.RLock")]
#[derive(Clone, Serialize, Deserialize)]
pub struct RLock {
    shared: Shared<RLockState>,
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock").finish_non_exhaustive()
    }
}

impl RLock {
    /// Creates an unlocked reentrant lock in a new shared-memory segment.
    ///
    /// # Errors
    /// The system refused the memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::RLock;
    /// let lock = RLock::new()?;
    /// assert_eq!(lock.held_count(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> io::Result<RLock> {
        let shared = Shared::create_value("multiproc-rlock", RLockState::new())?;
        Ok(RLock { shared })
    }

    fn state(&self) -> &RLockState {
        self.shared.get()
    }

    fn finish(&self, r: Result<bool, LockError<()>>) -> Result<RLockGuard<'_>, LockError<RLockGuard<'_>>> {
        let guard = || RLockGuard {
            state: self.state(),
            _not_send: PhantomData,
        };
        match r {
            Ok(false) => Ok(guard()),
            Ok(true) => Err(LockError::OwnerDied(guard())),
            Err(e) => Err(e.map(|()| guard())),
        }
    }

    /// Acquires the lock, waiting as long as another thread or process holds it;
    /// at once if the calling thread already does.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] (lock held, guard given) when the previous owner
    /// died holding it; [`LockError::Io`] when the system refused.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::RLock;
    /// let lock = RLock::new()?;
    /// let a = lock.acquire()?;
    /// let b = lock.acquire()?; // the owner acquires again at once
    /// assert_eq!(lock.held_count(), 2);
    /// drop((a, b));
    /// assert_eq!(lock.held_count(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<RLockGuard<'_>, LockError<RLockGuard<'_>>> {
        self.finish(self.state().acquire(Wait::Until(Deadline::NEVER)))
    }

    /// Acquires the lock if it is free or already held by the calling thread.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] when another thread holds it; otherwise as
    /// [`acquire`](RLock::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{LockError, RLock};
    /// let lock = RLock::new()?;
    /// let _g = lock.acquire()?;
    /// assert!(lock.try_acquire().is_ok()); // the owner: fine
    /// let other = lock.clone();
    /// let refused = std::thread::spawn(move || matches!(other.try_acquire(), Err(LockError::WouldBlock)));
    /// assert!(refused.join().unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<RLockGuard<'_>, LockError<RLockGuard<'_>>> {
        self.finish(self.state().acquire(Wait::No))
    }

    /// Waits at most `timeout` for the lock.
    ///
    /// # Errors
    /// [`LockError::Timeout`] when the timeout passed; otherwise as
    /// [`acquire`](RLock::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{LockError, RLock};
    /// use std::time::Duration;
    /// let lock = RLock::new()?;
    /// let _g = lock.acquire()?;
    /// let other = lock.clone();
    /// let r = std::thread::spawn(move || {
    ///     matches!(other.acquire_timeout(Duration::from_millis(10)), Err(LockError::Timeout))
    /// });
    /// assert!(r.join().unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>, LockError<RLockGuard<'_>>> {
        self.finish(self.state().acquire(Wait::Until(Deadline::after(timeout))))
    }

    /// Releases one acquisition held by the calling thread without a guard
    /// (after [`RLockGuard::leak`]).
    ///
    /// # Errors
    /// [`ReleaseError::NotHeld`] when the calling thread is not the owner
    /// (another thread or process holds it, or nobody does).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{RLock, ReleaseError};
    /// let lock = RLock::new()?;
    /// assert!(matches!(lock.release(), Err(ReleaseError::NotHeld)));
    /// lock.acquire()?.leak();
    /// lock.acquire()?.leak();
    /// lock.release()?;
    /// assert_eq!(lock.held_count(), 1);
    /// lock.release()?;
    /// assert_eq!(lock.held_count(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.state().release()
    }

    /// How many times the calling thread holds the lock (0 if it is not the owner).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::RLock;
    /// let lock = RLock::new()?;
    /// let _g = lock.acquire()?;
    /// assert_eq!(lock.held_count(), 1);
    /// let other = lock.clone();
    /// // Another thread is not the owner.
    /// assert_eq!(std::thread::spawn(move || other.held_count()).join().unwrap(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn held_count(&self) -> u32 {
        let s = self.state();
        if s.owned() {
            s.count.load(Ordering::Relaxed)
        } else {
            0
        }
    }
}

/// One acquisition of an [`RLock`]; released on drop. `!Send`.
///
/// # Examples
///
/// ```
/// use multiproc::RLock;
/// let lock = RLock::new()?;
/// {
///     let _outer = lock.acquire()?;
///     let _inner = lock.acquire()?;
///     assert_eq!(lock.held_count(), 2);
/// } // both guards dropped: the lock is free
/// assert_eq!(lock.held_count(), 0);
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "the acquisition is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    state: &'a RLockState,
    _not_send: PhantomData<*const ()>,
}

impl RLockGuard<'_> {
    /// Keeps this acquisition without a guard; release it later with
    /// [`RLock::release`] from the same thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::RLock;
    /// let lock = RLock::new()?;
    /// lock.acquire()?.leak();
    /// assert_eq!(lock.held_count(), 1); // still held without a guard
    /// lock.release()?;
    /// assert_eq!(lock.held_count(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard").finish_non_exhaustive()
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.state.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reentrant_and_released_after_last_guard() {
        let l = RLock::new().unwrap();
        let a = l.acquire().unwrap();
        let b = l.try_acquire().unwrap();
        assert_eq!(l.held_count(), 2);
        let l2 = l.clone();
        let other = std::thread::spawn(move || l2.try_acquire().is_err())
            .join()
            .unwrap();
        assert!(other, "another thread must not get a held RLock");
        drop(b);
        assert_eq!(l.held_count(), 1);
        drop(a);
        assert_eq!(l.held_count(), 0);
        let l2 = l.clone();
        let ok = std::thread::spawn(move || l2.try_acquire().is_ok())
            .join()
            .unwrap();
        assert!(ok);
    }

    #[test]
    fn non_owner_cannot_release() {
        let l = RLock::new().unwrap();
        assert!(matches!(l.release(), Err(ReleaseError::NotHeld)));
        l.acquire().unwrap().leak();
        let l2 = l.clone();
        let r = std::thread::spawn(move || l2.release()).join().unwrap();
        assert!(matches!(r, Err(ReleaseError::NotHeld)));
        l.release().unwrap();
        assert!(matches!(l.release(), Err(ReleaseError::NotHeld)));
    }
}
