//! `Lock`: a non-reentrant, crash-safe lock shared between processes.
//!
//! # Safety
//! The layout is one [`RobustLock`], initialised in place by
//! [`Shared::create`] before the segment is shared; it is never moved.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::deadline::Deadline;
use crate::sync::error::{lock_raw, unlock_raw, LockError, ReleaseError, Wait};
use crate::sync::robust_lock::RobustLock;
use crate::sync::shared::{magic, Shared, SharedLayout};

/// The shared layout of a [`Lock`].
#[repr(C)]
pub(crate) struct LockState {
    mutex: RobustLock,
}

// SAFETY: a RobustLock only; initialised by `LockState::init`.
unsafe impl SharedLayout for LockState {
    const MAGIC: u64 = magic("multiproc.Lock.v1");

    fn held_in_this_process(&self) -> bool {
        self.mutex.held_in_this_process()
    }
}

impl LockState {
    /// # Safety
    /// `this` is valid, aligned, writable memory for the state, not yet shared.
    pub(crate) unsafe fn init(this: *mut LockState) -> io::Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe {
            {
                std::ptr::addr_of_mut!((*this).mutex).write(RobustLock::new());
                Ok(())
            }
        }
    }
}

/// A lock shared between processes: at most one holder at a time, in any process.
///
/// `Lock` lives in shared memory. Clone it to share it between threads, pass
/// it to a child as (part of) its argument, or send it over a `Connection`:
/// every copy refers to the same lock. [`acquire`](Lock::acquire) returns a
/// [`LockGuard`] that releases the lock when dropped.
///
/// **Crash safety.** If a process dies while holding the lock (killed by
/// `SIGKILL`, say), the kernel releases it, and the next acquirer gets it
/// together with [`LockError::OwnerDied`]: the guarded data may be
/// half-updated and can be checked. This is reported once.
///
/// # Examples
///
/// ```
/// use multiproc::Lock;
/// let lock = Lock::new()?;
/// {
///     let _guard = lock.acquire()?;
///     assert!(lock.try_acquire().is_err()); // held (even by this thread)
/// }
/// assert!(lock.try_acquire().is_ok());
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Differences from Python's multiprocessing
/// - Python's `Lock` may be released by any thread or process; here only the
///   thread that acquired it can (a guard is `!Send`), because the lock must
///   know its owner to survive the owner's death.
/// - `acquire(block=False)` is [`try_acquire`](Lock::try_acquire) and
///   `acquire(timeout=t)` is [`acquire_timeout`](Lock::acquire_timeout); both
///   return a guard or an error instead of `True`/`False`.
/// - Acquiring a lock the calling thread already holds is an error
///   ([`LockError::WouldDeadlock`]), not a silent deadlock.
#[doc(alias = "multiprocessing.Lock")]
#[derive(Clone, Serialize, Deserialize)]
pub struct Lock {
    shared: Shared<LockState>,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock").finish_non_exhaustive()
    }
}

impl Lock {
    /// Creates an unlocked lock in a new shared-memory segment.
    ///
    /// # Errors
    /// The system refused the memory (`memfd_create`/`mmap` failed).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Lock;
    /// let lock = Lock::new()?;
    /// assert!(lock.try_acquire().is_ok()); // created unlocked
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> io::Result<Lock> {
        // SAFETY: `create` hands `init` the fresh, unshared, final address.
        let shared = Shared::create("multiproc-lock", 0, 1, |p| unsafe { LockState::init(p) })?;
        Ok(Lock { shared })
    }

    fn raw(&self) -> &RobustLock {
        &self.shared.get().mutex
    }

    fn guard(&self) -> LockGuard<'_> {
        LockGuard {
            mutex: self.raw(),
            _not_send: PhantomData,
        }
    }

    /// Waits until the lock is free and takes it.
    ///
    /// # Errors
    /// - [`LockError::OwnerDied`] (with the guard: the lock is held) when the
    ///   previous holder died holding it.
    /// - [`LockError::WouldDeadlock`] when the calling thread already holds it.
    /// - [`LockError::Io`] when the system refused (not expected).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Lock, LockError};
    /// let lock = Lock::new()?;
    /// let guard = lock.acquire()?;
    /// // Not reentrant: acquiring again from this thread is refused instead of hanging.
    /// assert!(matches!(lock.acquire(), Err(LockError::WouldDeadlock)));
    /// drop(guard); // released
    /// assert!(lock.try_acquire().is_ok());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[doc(alias = "acquire(block=True)")]
    #[inline]
    pub fn acquire(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        lock_raw(self.raw(), Wait::Until(Deadline::NEVER), || self.guard())
    }

    /// Takes the lock if it is free, at once.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] when another thread or process holds it;
    /// [`LockError::WouldDeadlock`] when the calling thread holds it; otherwise
    /// as [`acquire`](Lock::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Lock, LockError, Process};
    /// use std::time::Duration;
    ///
    /// fn try_take(lock: Lock) -> bool {
    ///     matches!(lock.try_acquire(), Err(LockError::WouldBlock))
    /// }
    ///
    /// let lock = Lock::new()?;
    /// let guard = lock.acquire().map_err(std::io::Error::from)?;
    /// // Held by this thread: an error, not a wait.
    /// assert!(matches!(lock.try_acquire(), Err(LockError::WouldDeadlock)));
    /// // Held by this process: another process is refused at once.
    /// let child = Process::spawn(lock.clone(), try_take)?;
    /// assert_eq!(child.join_timeout(Duration::from_secs(30))?, Some(true));
    /// drop(guard);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "acquire(block=False)")]
    pub fn try_acquire(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        lock_raw(self.raw(), Wait::No, || self.guard())
    }

    /// Waits at most `timeout` for the lock.
    ///
    /// # Errors
    /// [`LockError::Timeout`] when the timeout passed; otherwise as
    /// [`acquire`](Lock::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Lock, LockError};
    /// use std::time::Duration;
    /// let lock = Lock::new()?;
    /// let other = lock.clone();
    /// let _guard = lock.acquire()?;
    /// // Held by this thread: another thread waits 10 ms, then gives up.
    /// let r = std::thread::spawn(move || {
    ///     matches!(other.acquire_timeout(Duration::from_millis(10)), Err(LockError::Timeout))
    /// });
    /// assert!(r.join().unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[doc(alias = "acquire(timeout)")]
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        lock_raw(self.raw(), Wait::Until(Deadline::after(timeout)), || self.guard())
    }

    /// Releases the lock held by the calling thread without a guard, after
    /// [`LockGuard::leak`] (Python's `lock.release()`).
    ///
    /// # Errors
    /// [`ReleaseError::NotHeld`] when the calling thread does not hold the lock
    /// (it is free, or held by another thread or process).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Lock, ReleaseError};
    /// let lock = Lock::new()?;
    /// lock.acquire()?.leak();
    /// lock.release()?;
    /// assert!(matches!(lock.release(), Err(ReleaseError::NotHeld)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn release(&self) -> Result<(), ReleaseError> {
        unlock_raw(self.raw())
    }

    /// True when `self` and `other` are handles to the same lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Lock;
    /// let lock = Lock::new()?;
    /// assert!(lock.same_as(&lock.clone()));
    /// assert!(!lock.same_as(&Lock::new()?));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn same_as(&self, other: &Lock) -> bool {
        self.shared.same(&other.shared)
    }
}

/// Proof that the calling thread holds a [`Lock`]; releases it on drop.
///
/// `!Send`: a lock is released by the thread that took it.
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// let lock = multiproc::Lock::new().unwrap();
/// send(lock.acquire().unwrap()); // error: a guard cannot move to another thread
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    mutex: &'a RobustLock,
    _not_send: PhantomData<*const ()>,
}

impl LockGuard<'_> {
    /// Keeps the lock held without a guard; release it later with
    /// [`Lock::release`] from the same thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Lock;
    /// let lock = Lock::new()?;
    /// lock.acquire()?.leak();
    /// assert!(lock.try_acquire().is_err()); // still held without a guard
    /// lock.release()?;
    /// assert!(lock.try_acquire().is_ok());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

impl Drop for LockGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // This thread holds the mutex (unless `Lock::release` released it
        // meanwhile: then there is nothing to do).
        self.mutex.unlock_if_held();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn threads_exclude_each_other() {
        let lock = Lock::new().unwrap();
        let counter = Arc::new(AtomicU64::new(0));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (lock, counter) = (lock.clone(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        let _g = lock.acquire().unwrap();
                        // Non-atomic read-modify-write made visible by the lock.
                        let v = counter.load(Ordering::Relaxed);
                        counter.store(v + 1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 8000);
    }

    #[test]
    fn relock_by_owner_is_an_error_not_a_hang() {
        let lock = Lock::new().unwrap();
        let _g = lock.acquire().unwrap();
        assert!(matches!(lock.acquire(), Err(LockError::WouldDeadlock)));
    }

    #[test]
    fn other_thread_cannot_release() {
        let lock = Lock::new().unwrap();
        lock.acquire().unwrap().leak();
        let l2 = lock.clone();
        let r = std::thread::spawn(move || l2.release()).join().unwrap();
        assert!(matches!(r, Err(ReleaseError::NotHeld)));
        lock.release().unwrap();
    }

    #[test]
    fn owner_thread_exit_reports_owner_died_once() {
        let lock = Lock::new().unwrap();
        let l2 = lock.clone();
        std::thread::spawn(move || l2.acquire().unwrap().leak())
            .join()
            .unwrap();
        let g = lock.acquire_timeout(Duration::from_secs(5));
        assert!(matches!(g, Err(LockError::OwnerDied(_))));
        drop(g);
        assert!(lock.acquire_timeout(Duration::from_secs(5)).is_ok());
    }
}

#[cfg(test)]
mod handle_tests {
    use super::*;
    use crate::codec::handles::{collect_fds, provide_fds};

    #[test]
    fn forgotten_guard_then_dropped_handle_keeps_the_robust_list_valid() {
        let lock = Lock::new().unwrap();
        lock.acquire().unwrap().leak();
        // The last handle goes away while this thread holds the lock: the
        // mapping must stay, since the lock is linked on this thread's list.
        drop(lock);
        let other = Lock::new().unwrap();
        for _ in 0..3 {
            drop(other.acquire().unwrap());
        }
    }

    #[test]
    fn a_handle_decoded_as_another_type_is_a_clear_error() {
        let lock = Lock::new().unwrap();
        let (bytes, fds) = collect_fds(|| postcard::to_allocvec(&lock).unwrap());
        let r = provide_fds(fds, || postcard::from_bytes::<crate::Semaphore>(&bytes));
        assert!(r.is_err());
        let msg = crate::codec::handles::take_error().unwrap_or_default();
        assert!(msg.contains("is not a"), "{msg}");
        let (bytes, fds) = collect_fds(|| postcard::to_allocvec(&lock).unwrap());
        let back: Lock = provide_fds(fds, || postcard::from_bytes(&bytes)).unwrap();
        // The decoded handle is the same lock, mapped again.
        let _g = back.acquire().unwrap();
        assert!(matches!(lock.try_acquire(), Err(LockError::WouldDeadlock)));
    }
}
