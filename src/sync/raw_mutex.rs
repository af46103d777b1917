//! The outcome types of every robust lock in the crate ([`Locked`],
//! [`LockFail`]), and glibc's robust process-shared mutex (`RawMutex`,
//! `PTHREAD_PROCESS_SHARED` + `PTHREAD_MUTEX_ROBUST`), which the crate's own
//! lock word (`sync::robust_lock`) replaced; it stays for the tests that
//! check that both kinds of lock share a thread's robust list.
//!
//! If the owning thread dies (its process is SIGKILLed, say), the kernel walks
//! the thread's robust list, marks the word `OWNER_DIED` and wakes a waiter;
//! the next locker gets [`Locked::OwnerDied`], and the mutex stays usable.
//! Owner death is reported exactly once.
//!
//! # Safety
//! A `RawMutex` must be initialised with [`RawMutex::init`] exactly once, in
//! place, at its final address in shared memory, before any other use; it must
//! never be moved afterwards (the glibc robust list links to its address).
//! `lock`/`unlock` pairs are made by the same thread (a guard is `!Send`).
#![allow(unsafe_code)]

#[cfg(test)]
use std::cell::UnsafeCell;
use std::io;
#[cfg(test)]
use std::mem::MaybeUninit;

#[cfg(test)]
use crate::deadline::Deadline;

/// How a lock was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locked {
    /// The previous owner unlocked normally.
    Clean,
    /// The previous owner died holding the lock; the data it guarded may be
    /// half-updated. The mutex has been made consistent again.
    OwnerDied,
}

/// Why a lock was not obtained.
#[derive(Debug)]
pub(crate) enum LockFail {
    /// The deadline passed (or, for `try_lock`, the lock was busy).
    WouldBlock,
    /// Any other error from the C library (`EDEADLK` when the calling thread
    /// already holds the mutex).
    Io(io::Error),
}

/// A robust process-shared mutex (40 bytes on x86-64 Linux).
#[cfg(test)]
#[repr(C)]
pub(crate) struct RawMutex {
    m: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: the pthread mutex is made for concurrent use from many threads and
// processes; all access goes through the pthread API.
#[cfg(test)]
unsafe impl Sync for RawMutex {}
// SAFETY: as above.
#[cfg(test)]
unsafe impl Send for RawMutex {}

#[cfg(test)]
impl RawMutex {
    /// Initialises the mutex at `this`, unlocked.
    ///
    /// # Safety
    /// `this` points to writable, suitably aligned memory for a `RawMutex`
    /// that no other thread or process uses yet, at its final address.
    pub(crate) unsafe fn init(this: *mut RawMutex) -> io::Result<()> {
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: attr is a local the pthread calls initialise and destroy;
        // `this` is valid and unshared per the caller's contract.
        unsafe {
            check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            let r = (|| {
                check(libc::pthread_mutexattr_setpshared(
                    attr.as_mut_ptr(),
                    libc::PTHREAD_PROCESS_SHARED,
                ))?;
                check(libc::pthread_mutexattr_setrobust(
                    attr.as_mut_ptr(),
                    libc::PTHREAD_MUTEX_ROBUST,
                ))?;
                // Error-checking: relocking by the owner returns EDEADLK instead of
                // hanging forever (a robust NORMAL mutex self-deadlocks).
                check(libc::pthread_mutexattr_settype(
                    attr.as_mut_ptr(),
                    libc::PTHREAD_MUTEX_ERRORCHECK,
                ))?;
                check(libc::pthread_mutex_init(
                    UnsafeCell::raw_get(std::ptr::addr_of!((*this).m)),
                    attr.as_ptr(),
                ))
            })();
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
            r
        }
    }

    fn ptr(&self) -> *mut libc::pthread_mutex_t {
        self.m.get()
    }

    fn after_lock(&self, rc: i32) -> Result<Locked, LockFail> {
        match rc {
            0 => Ok(Locked::Clean),
            libc::EOWNERDEAD => {
                // SAFETY: we own the mutex now (EOWNERDEAD means acquired).
                let rc = unsafe { libc::pthread_mutex_consistent(self.ptr()) };
                check(rc).map_err(LockFail::Io)?;
                Ok(Locked::OwnerDied)
            }
            libc::EBUSY | libc::ETIMEDOUT => Err(LockFail::WouldBlock),
            e => Err(LockFail::Io(io::Error::from_raw_os_error(e))),
        }
    }

    /// Locks, waiting until `deadline`.
    pub(crate) fn lock(&self, deadline: Deadline) -> Result<Locked, LockFail> {
        let rc = match deadline.remaining() {
            // SAFETY: initialised per the type's contract.
            None => unsafe { libc::pthread_mutex_lock(self.ptr()) },
            Some(left) => {
                // Fast path without reading the clock.
                // SAFETY: as above.
                let rc = unsafe { libc::pthread_mutex_trylock(self.ptr()) };
                if rc != libc::EBUSY || left.is_zero() {
                    rc
                } else {
                    // pthread_mutex_timedlock takes a CLOCK_REALTIME instant.
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                    let at = now.saturating_add(left);
                    let ts = libc::timespec {
                        tv_sec: at.as_secs().min(i64::MAX as u64) as libc::time_t,
                        tv_nsec: libc::c_long::from(at.subsec_nanos() as i32),
                    };
                    // SAFETY: as above; ts is a valid timespec.
                    unsafe { libc::pthread_mutex_timedlock(self.ptr(), &ts) }
                }
            }
        };
        self.after_lock(rc)
    }

    /// Unlocks. Only the thread that locked may call this (`EPERM` otherwise).
    pub(crate) fn unlock(&self) -> io::Result<()> {
        // SAFETY: initialised per the type's contract; glibc checks ownership
        // for robust mutexes.
        check(unsafe { libc::pthread_mutex_unlock(self.ptr()) })
    }
}

#[cfg(test)]
fn check(rc: i32) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}
