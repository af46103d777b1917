//! `Semaphore` and `BoundedSemaphore` on a shared futex word.
//!
//! # Safety
//! The only `unsafe` is the [`SharedLayout`] declaration: the layout is three atomics.
//!
//! Protocol: `value` is the count and the futex word. An acquirer that finds
//! it zero announces itself in `waiters` (SeqCst) and sleeps while `value`
//! is still zero; a releaser increments `value` (SeqCst) and then wakes one
//! sleeper if `waiters` is non-zero. Either the releaser sees the waiter, or
//! the waiter's futex compare sees the new value: no lost wake-up.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::deadline::Deadline;
use crate::sync::error::ReleaseError;
use crate::sync::shared::{magic, sleep, Shared, SharedLayout};
use crate::sys::futex;

/// The shared layout of a semaphore.
#[repr(C)]
pub(crate) struct SemState {
    value: AtomicU32,
    waiters: AtomicU32,
    /// Upper bound for `release` (`u32::MAX` when unbounded).
    max: AtomicU32,
}

// SAFETY: atomics only.
unsafe impl SharedLayout for SemState {
    const MAGIC: u64 = magic("multiproc.Semaphore.v1");
}

impl SemState {
    pub(crate) fn new(value: u32, max: u32) -> SemState {
        SemState {
            value: AtomicU32::new(value),
            waiters: AtomicU32::new(0),
            max: AtomicU32::new(max),
        }
    }

    fn try_take(&self) -> bool {
        let mut v = self.value.load(Ordering::Relaxed);
        while v > 0 {
            match self
                .value
                .compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// Takes one unit, waiting until `deadline`; false on timeout.
    pub(crate) fn acquire(&self, deadline: Deadline) -> bool {
        loop {
            if self.try_take() {
                return true;
            }
            if deadline.passed() {
                return false;
            }
            self.waiters.fetch_add(1, Ordering::SeqCst);
            let timed_out = sleep(&self.value, 0, deadline);
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            if timed_out {
                return self.try_take();
            }
        }
    }

    /// Gives one unit back; wakes one sleeper.
    pub(crate) fn release(&self) -> Result<(), ReleaseError> {
        let max = self.max.load(Ordering::Relaxed);
        let mut v = self.value.load(Ordering::Relaxed);
        loop {
            if v >= max {
                return Err(ReleaseError::TooManyReleases);
            }
            match self
                .value
                .compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(&self.value, 1);
        }
        Ok(())
    }

    pub(crate) fn value(&self) -> u32 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A counting semaphore shared between processes.
///
/// [`acquire`](Semaphore::acquire) takes one unit, waiting while there is
/// none; the returned [`SemaphoreGuard`] gives it back when dropped.
/// [`release`](Semaphore::release) adds a unit from anywhere (any thread, any
/// process), as in Python.
///
/// **Death of a holder.** Units are not owned: a process that dies while
/// holding a unit (between acquire and release) takes that unit with it, and
/// the count stays one lower (exactly as in Python). Waiters do not hang
/// forever if they use [`acquire_timeout`](Semaphore::acquire_timeout). A
/// process that dies while *waiting* loses nothing.
///
/// # Examples
///
/// ```
/// use multiproc::Semaphore;
/// let sem = Semaphore::new(2)?;
/// let a = sem.acquire();
/// let b = sem.acquire();
/// assert!(sem.try_acquire().is_none());
/// drop(a);
/// assert_eq!(sem.get_value(), 1);
/// # drop(b);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Differences from Python's multiprocessing
/// `acquire(False)` and `acquire(timeout=t)` are
/// [`try_acquire`](Semaphore::try_acquire) and
/// [`acquire_timeout`](Semaphore::acquire_timeout), returning `Option`s of a
/// guard. The count is a `u32`.
#[doc(alias = "multiprocessing.Semaphore")]
#[derive(Clone, Serialize, Deserialize)]
pub struct Semaphore {
    shared: Shared<SemState>,
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.get_value())
            .finish()
    }
}

fn create(value: u32, max: u32) -> io::Result<Shared<SemState>> {
    Shared::create_value("multiproc-semaphore", SemState::new(value, max))
}

impl Semaphore {
    /// A semaphore with `value` units.
    ///
    /// # Errors
    /// The system refused the memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Semaphore;
    /// let sem = Semaphore::new(3)?;
    /// assert_eq!(sem.get_value(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(value: u32) -> io::Result<Semaphore> {
        Ok(Semaphore {
            shared: create(value, u32::MAX)?,
        })
    }

    fn state(&self) -> &SemState {
        self.shared.get()
    }

    /// Takes a unit, waiting as long as needed.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Semaphore;
    /// let sem = Semaphore::new(1)?;
    /// let unit = sem.acquire();
    /// assert_eq!(sem.get_value(), 0);
    /// drop(unit); // given back
    /// assert_eq!(sem.get_value(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn acquire(&self) -> SemaphoreGuard<'_> {
        self.state().acquire(Deadline::NEVER);
        SemaphoreGuard { state: self.state() }
    }

    /// Takes a unit if one is available now.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Semaphore;
    /// let sem = Semaphore::new(1)?;
    /// let unit = sem.try_acquire();
    /// assert!(unit.is_some());
    /// assert!(sem.try_acquire().is_none()); // no unit left
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
        self.state()
            .try_take()
            .then(|| SemaphoreGuard { state: self.state() })
    }

    /// Takes a unit, waiting at most `timeout`; `None` if the timeout passed.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Semaphore;
    /// use std::time::Duration;
    /// let sem = Semaphore::new(0)?;
    /// assert!(sem.acquire_timeout(Duration::from_millis(10)).is_none());
    /// sem.release()?;
    /// assert!(sem.acquire_timeout(Duration::from_millis(10)).is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphoreGuard<'_>> {
        self.state()
            .acquire(Deadline::after(timeout))
            .then(|| SemaphoreGuard { state: self.state() })
    }

    /// Adds a unit and wakes one waiter.
    ///
    /// # Errors
    /// [`ReleaseError::TooManyReleases`] if the count would pass `u32::MAX`, or,
    /// for a [`BoundedSemaphore`], its initial value.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Process, Semaphore};
    /// use std::time::Duration;
    /// let sem = Semaphore::new(0)?;
    /// // Units are not owned: another process may add one.
    /// let child = Process::spawn(sem.clone(), |sem: Semaphore| sem.release().is_ok())?;
    /// assert!(sem.acquire_timeout(Duration::from_secs(30)).is_some());
    /// assert_eq!(child.join_timeout(Duration::from_secs(30))?, Some(true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.state().release()
    }

    /// The number of available units (a snapshot).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Semaphore;
    /// let sem = Semaphore::new(2)?;
    /// let _unit = sem.acquire();
    /// assert_eq!(sem.get_value(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn get_value(&self) -> u32 {
        self.state().value()
    }
}

/// A semaphore that refuses to be released above its initial value.
///
/// # Examples
///
/// ```
/// use multiproc::{BoundedSemaphore, ReleaseError};
/// let sem = BoundedSemaphore::new(1)?;
/// assert!(matches!(sem.release(), Err(ReleaseError::TooManyReleases)));
/// sem.acquire().forget();
/// sem.release()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "multiprocessing.BoundedSemaphore")]
#[derive(Clone, Serialize, Deserialize)]
pub struct BoundedSemaphore {
    inner: Semaphore,
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedSemaphore")
            .field("value", &self.get_value())
            .finish()
    }
}

impl BoundedSemaphore {
    /// A bounded semaphore with `value` units, never more.
    ///
    /// # Errors
    /// The system refused the memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::BoundedSemaphore;
    /// let sem = BoundedSemaphore::new(2)?;
    /// assert_eq!(sem.get_value(), 2);
    /// assert!(sem.release().is_err()); // never above 2
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(value: u32) -> io::Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            inner: Semaphore {
                shared: create(value, value)?,
            },
        })
    }
}

/// A `BoundedSemaphore` is a [`Semaphore`] (as in Python, where it is a
/// subclass) whose [`release`](Semaphore::release) fails with
/// [`ReleaseError::TooManyReleases`] once the count is back at its initial value.
impl std::ops::Deref for BoundedSemaphore {
    type Target = Semaphore;

    fn deref(&self) -> &Semaphore {
        &self.inner
    }
}

/// One unit of a [`Semaphore`] or [`BoundedSemaphore`]; given back on drop.
///
/// # Examples
///
/// ```
/// use multiproc::Semaphore;
/// let sem = Semaphore::new(1)?;
/// {
///     let _unit = sem.acquire();
///     assert_eq!(sem.get_value(), 0);
/// }
/// assert_eq!(sem.get_value(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "the unit is given back as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    state: &'a SemState,
}

impl SemaphoreGuard<'_> {
    /// Keeps the unit: nothing is given back (release it later with `release`,
    /// from any thread or process, or never).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Semaphore;
    /// let sem = Semaphore::new(1)?;
    /// sem.acquire().forget();
    /// assert_eq!(sem.get_value(), 0); // not given back
    /// sem.release()?;
    /// assert_eq!(sem.get_value(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard").finish_non_exhaustive()
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        let _ = self.state.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The algorithm over ordinary memory, with threads.
    #[test]
    fn heap_state_threads_never_exceed_the_count() {
        let s = Arc::new(SemState::new(2, u32::MAX));
        let inside = Arc::new(AtomicU32::new(0));
        let max_seen = Arc::new(AtomicU32::new(0));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (s, inside, max_seen) = (s.clone(), inside.clone(), max_seen.clone());
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        assert!(s.acquire(Deadline::after(Duration::from_secs(10))));
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max_seen.fetch_max(n, Ordering::SeqCst);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        s.release().unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert!(max_seen.load(Ordering::SeqCst) <= 2);
        assert_eq!(s.value(), 2);
    }

    #[test]
    fn timeout_returns_none_and_release_wakes() {
        let s = Semaphore::new(0).unwrap();
        let t = std::time::Instant::now();
        assert!(s.acquire_timeout(Duration::from_millis(50)).is_none());
        assert!(t.elapsed() >= Duration::from_millis(50));
        let s2 = s.clone();
        let h = std::thread::spawn(move || s2.acquire_timeout(Duration::from_secs(10)).map(|g| g.forget()));
        std::thread::sleep(Duration::from_millis(20));
        s.release().unwrap();
        assert!(h.join().unwrap().is_some());
        assert_eq!(s.get_value(), 0);
    }

    #[test]
    fn bounded_refuses_above_initial() {
        let s = BoundedSemaphore::new(2).unwrap();
        assert!(matches!(s.release(), Err(ReleaseError::TooManyReleases)));
        s.acquire().forget();
        s.release().unwrap();
        assert_eq!(s.get_value(), 2);
    }
}
