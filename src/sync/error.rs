//! Errors of the synchronization primitives and of `Value`/`Array`.

use std::fmt;
use std::io;

use crate::deadline::Deadline;
use crate::sync::raw_mutex::{LockFail, Locked};
use crate::sync::robust_lock::RobustLock;

/// Why a lock (a [`Lock`](crate::Lock), [`RLock`](crate::RLock), a
/// [`Condition`](crate::Condition)'s lock, a [`Value`](crate::Value) or an
/// [`Array`](crate::Array)) did not come back clean.
///
/// `G` is what the call would have returned (usually a guard). In the
/// [`OwnerDied`](LockError::OwnerDied) case the lock **is** held and `G` is
/// handed back: a previous holder died (its process was killed, say) while
/// holding the lock, so the data it guarded may be half-updated. This is
/// reported to exactly one acquirer; later acquisitions are clean again.
///
/// `Debug` does not need `G: Debug`.
///
/// # Examples
///
/// ```
/// use multiproc::{Lock, LockError};
/// let lock = Lock::new()?;
/// let guard = match lock.acquire() {
///     Ok(g) => g,
///     // A holder died: check (and repair) what the lock protects, then go on.
///     Err(LockError::OwnerDied(g)) => g,
///     Err(e) => return Err(e.into()), // LockError converts into io::Error
/// };
/// drop(guard);
/// # Ok::<(), std::io::Error>(())
/// ```
pub enum LockError<G> {
    /// Acquired, but the previous holder died holding the lock (reported once).
    OwnerDied(G),
    /// `try_*`: the lock is held by someone else.
    WouldBlock,
    /// `*_timeout`: the timeout passed before the lock was free.
    Timeout,
    /// The calling thread already holds this (non-reentrant) lock; waiting
    /// would deadlock.
    WouldDeadlock,
    /// The operating system refused (not expected on a valid lock).
    Io(io::Error),
}

impl<G> LockError<G> {
    /// The value carried by [`OwnerDied`](LockError::OwnerDied), if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Lock, Process};
    /// use std::time::Duration;
    ///
    /// // The child takes the lock and exits without releasing it.
    /// fn die_holding(lock: Lock) {
    ///     lock.acquire().unwrap().leak();
    /// }
    ///
    /// let lock = Lock::new()?;
    /// let child = Process::spawn(lock.clone(), die_holding)?;
    /// assert_eq!(child.join_timeout(Duration::from_secs(30))?, Some(()));
    /// let err = lock.acquire_timeout(Duration::from_secs(30)).unwrap_err();
    /// let guard = err.into_inner(); // the guard: this thread holds the lock now
    /// assert!(guard.is_some());
    /// drop(guard);
    /// assert!(lock.try_acquire().is_ok()); // reported once; clean again
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_inner(self) -> Option<G> {
        match self {
            LockError::OwnerDied(g) => Some(g),
            _ => None,
        }
    }

    /// True for [`OwnerDied`](LockError::OwnerDied).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Lock, Process};
    /// use std::time::Duration;
    ///
    /// let lock = Lock::new()?;
    /// let child = Process::spawn(lock.clone(), |lock: Lock| lock.acquire().unwrap().leak())?;
    /// assert_eq!(child.join_timeout(Duration::from_secs(30))?, Some(()));
    /// // The child died holding the lock: the next acquirer is told, once.
    /// assert!(lock.acquire_timeout(Duration::from_secs(30)).unwrap_err().is_owner_died());
    /// assert!(lock.acquire_timeout(Duration::from_secs(30)).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_owner_died(&self) -> bool {
        matches!(self, LockError::OwnerDied(_))
    }

    /// True for [`Timeout`](LockError::Timeout) and [`WouldBlock`](LockError::WouldBlock).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Lock;
    /// use std::time::Duration;
    /// let lock = Lock::new()?;
    /// let _held = lock.acquire()?;
    /// let other = lock.clone();
    /// let (would_block, timed_out) = std::thread::spawn(move || {
    ///     let a = other.try_acquire().unwrap_err().is_timeout();
    ///     let b = other.acquire_timeout(Duration::from_millis(5)).unwrap_err().is_timeout();
    ///     (a, b)
    /// })
    /// .join()
    /// .unwrap();
    /// assert!(would_block && timed_out);
    /// assert!(!lock.try_acquire().unwrap_err().is_timeout()); // WouldDeadlock
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, LockError::Timeout | LockError::WouldBlock)
    }

    /// Maps the carried value.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Lock, LockError};
    /// let lock = Lock::new()?;
    /// let _held = lock.acquire()?;
    /// // Drop the guard type (which borrows `lock`) to keep the error around.
    /// let err: LockError<()> = lock.try_acquire().unwrap_err().map(drop);
    /// assert!(matches!(err, LockError::WouldDeadlock));
    /// let boxed: Box<dyn std::error::Error> = Box::new(err);
    /// assert!(boxed.to_string().contains("already holds"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn map<H>(self, f: impl FnOnce(G) -> H) -> LockError<H> {
        match self {
            LockError::OwnerDied(g) => LockError::OwnerDied(f(g)),
            LockError::WouldBlock => LockError::WouldBlock,
            LockError::Timeout => LockError::Timeout,
            LockError::WouldDeadlock => LockError::WouldDeadlock,
            LockError::Io(e) => LockError::Io(e),
        }
    }
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::WouldBlock => f.write_str("WouldBlock"),
            LockError::Timeout => f.write_str("Timeout"),
            LockError::WouldDeadlock => f.write_str("WouldDeadlock"),
            LockError::Io(e) => f.debug_tuple("Io").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str(
                "the previous holder of the lock died holding it; the guarded data may be inconsistent",
            ),
            LockError::WouldBlock => f.write_str("the lock is held elsewhere"),
            LockError::Timeout => f.write_str("timed out waiting for the lock"),
            LockError::WouldDeadlock => f.write_str("the calling thread already holds this lock"),
            LockError::Io(e) => write!(f, "lock failed: {e}"),
        }
    }
}

impl<G> std::error::Error for LockError<G> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl<G> From<LockError<G>> for io::Error {
    fn from(e: LockError<G>) -> io::Error {
        let kind = match &e {
            LockError::WouldBlock => io::ErrorKind::WouldBlock,
            LockError::Timeout => io::ErrorKind::TimedOut,
            LockError::WouldDeadlock => io::ErrorKind::Deadlock,
            LockError::OwnerDied(_) => io::ErrorKind::Other,
            LockError::Io(e) => e.kind(),
        };
        io::Error::new(kind, e.to_string())
    }
}

/// Why a `release` was refused.
///
/// # Examples
///
/// ```
/// use multiproc::{BoundedSemaphore, Lock, ReleaseError};
/// let lock = Lock::new()?;
/// assert!(matches!(lock.release(), Err(ReleaseError::NotHeld)));
/// let sem = BoundedSemaphore::new(1)?;
/// assert!(matches!(sem.release(), Err(ReleaseError::TooManyReleases)));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The calling thread does not hold the lock (it is unlocked, or held by
    /// another thread or process).
    NotHeld,
    /// A [`BoundedSemaphore`](crate::BoundedSemaphore) would go above its
    /// initial value (or a [`Semaphore`](crate::Semaphore) above `u32::MAX`).
    TooManyReleases,
    /// The operating system refused.
    Io(io::Error),
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseError::NotHeld => f.write_str("release of a lock the calling thread does not hold"),
            ReleaseError::TooManyReleases => f.write_str("semaphore or lock released too many times"),
            ReleaseError::Io(e) => write!(f, "release failed: {e}"),
        }
    }
}

impl std::error::Error for ReleaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReleaseError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// How a lock call should wait.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Do not wait (`try_*`).
    No,
    /// Wait until the deadline (`NEVER` for plain calls).
    Until(Deadline),
}

#[inline]
/// Locks `m` and turns the outcome into `Ok(make())` or a [`LockError`].
pub(crate) fn lock_raw<G>(m: &RobustLock, wait: Wait, make: impl FnOnce() -> G) -> Result<G, LockError<G>> {
    let r = match wait {
        Wait::No => m.try_lock(),
        Wait::Until(d) => m.lock(d),
    };
    match r {
        Ok(Locked::Clean) => Ok(make()),
        Ok(Locked::OwnerDied) => Err(LockError::OwnerDied(make())),
        Err(LockFail::WouldBlock) => Err(match wait {
            Wait::No => LockError::WouldBlock,
            Wait::Until(_) => LockError::Timeout,
        }),
        Err(LockFail::Io(e)) if e.raw_os_error() == Some(libc::EDEADLK) => Err(LockError::WouldDeadlock),
        Err(LockFail::Io(e)) => Err(LockError::Io(e)),
    }
}

#[inline]
/// Unlocks `m`, mapping `EPERM` (not the owner) to [`ReleaseError::NotHeld`].
pub(crate) fn unlock_raw(m: &RobustLock) -> Result<(), ReleaseError> {
    m.unlock().map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            ReleaseError::NotHeld
        } else {
            ReleaseError::Io(e)
        }
    })
}

impl From<ReleaseError> for io::Error {
    fn from(e: ReleaseError) -> io::Error {
        match e {
            ReleaseError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
        }
    }
}
