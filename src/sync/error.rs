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
    pub fn into_inner(self) -> Option<G> {
        match self {
            LockError::OwnerDied(g) => Some(g),
            _ => None,
        }
    }

    /// True for [`OwnerDied`](LockError::OwnerDied).
    pub fn is_owner_died(&self) -> bool {
        matches!(self, LockError::OwnerDied(_))
    }

    /// True for [`Timeout`](LockError::Timeout) and [`WouldBlock`](LockError::WouldBlock).
    pub fn is_timeout(&self) -> bool {
        matches!(self, LockError::Timeout | LockError::WouldBlock)
    }

    /// Maps the carried value.
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
