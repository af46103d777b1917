//! `RobustLock`: the crate's own robust, process-shared lock word.
//!
//! It is laid out like glibc's `pthread_mutex_t` where it matters to the
//! kernel (the futex word 32 bytes below the list `next` field, `prev` 8 bytes
//! below it), so that it can sit on the thread's kernel robust list
//! ([`crate::sys::robust`]): if the owner dies, the kernel marks the word
//! `FUTEX_OWNER_DIED` and wakes a waiter, exactly as for a glibc robust mutex.
//! Unlike glibc's, the uncontended path is one CAS to lock and one swap to
//! unlock, plus a few plain stores into the thread's list.
//!
//! Word: `0` free; else the owner's thread id, with `FUTEX_WAITERS` when
//! someone may sleep on it, or `FUTEX_OWNER_DIED` (and no id) after the
//! owner died. A waiter sets `FUTEX_WAITERS` before each sleep, and one that
//! slept takes the lock with it set (glibc's rule), so the next unlock wakes
//! the next sleeper and the kernel wakes one if that owner dies. There is no
//! waiter count to leak when a waiter is killed. `wake_pending` is set by
//! an unlock that woke a sleeper and cleared when a sleeper runs, so that a
//! holder that re-locks in a loop does not make a futex syscall per unlock
//! while the woken sleeper is on its way. Sleepers re-check the word at least
//! every 250 ms, a safety net that bounds any missed wake-up to a delay.
//!
//! Spinning: before it first sleeps, a waiter spins up to 200 times while
//! the word stays held; a running holder usually releases within that time,
//! which saves a sleep and a cross-CPU wake-up (measured: 8 processes
//! incrementing under one lock went from ~200 to ~40 ns per increment). A
//! waiter that sees the word freed but loses the race to it (a holder that
//! re-locks at once) spins again, up to 4 rounds in all. Measured against a
//! single round (a throwaway probe, 6 alternated runs, medians): two
//! processes handing the lock to each other while re-locking in a loop,
//! pinned to two CPUs, 0.80 -> 0.54 us per hand-off; 8 processes x 10k
//! increments unchanged (26 -> 27 ns each); 2 processes x 50k increments
//! 24 -> 31 ns (the lock changes CPUs more often). More rounds (8) cost the
//! increments 1.7x.
//!
//! Fairness: a waiter that was woken once and lost the race again, or has
//! waited 100 us, puts its thread id in `handoff`;
//! the next unlock then stores that id (with `FUTEX_WAITERS`) into the word
//! instead of freeing it, so a holder that re-locks in a loop cannot starve
//! the others. Asking sooner (after about 1 us of spinning) made 8 processes
//! incrementing under one lock about 5x slower (the lock then changes CPUs at
//! almost every unlock); waiting for the hand-over spinning, without a futex
//! wake, was slower in each of 3 alternated runs of two processes handing the
//! lock to each other (thin evidence: that scenario is bimodal run to run). The waiter keeps the lock announced in its `list_op_pending`
//! while it sleeps, so the kernel marks the word if it dies after the
//! hand-over; if it died before, the 250 ms re-check finds the owner thread
//! gone and takes over (reported as `OwnerDied`).
//!
//! All-zero bytes are a valid, unlocked lock: no in-place initialisation.
//!
//! # Safety
//! - `prev`/`next` are only touched through [`ThreadList`] by the thread that
//!   owns the lock (or is about to, with the list operation announced in
//!   `list_op_pending`), in the order glibc uses; ownership hand-over is
//!   ordered by the acquire/release operations on `word`.
//! - The lock's memory must stay mapped while it is held, because it is on the
//!   owner's robust list: [`crate::sync::shared::Shared`] leaks its mapping
//!   instead of unmapping when a thread of this process still holds a lock in
//!   it (a forgotten guard).
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::sync::raw_mutex::{LockFail, Locked};
use crate::sys::futex;
use crate::sys::robust::{current_tid, is_own_thread, thread_alive, ThreadList};

const WAITERS: u32 = 0x8000_0000;
const OWNER_DIED: u32 = 0x4000_0000;
const TID_MASK: u32 = 0x3fff_ffff;
/// Spin iterations of one spin round.
const SPIN: u32 = 200;
/// Spin rounds before sleeping: a waiter that saw the lock freed and lost
/// the race to it spins again, this many times in all.
const SPIN_ROUNDS: u32 = 4;
const RECHECK: Duration = Duration::from_millis(250);
/// A waiter asks for a direct hand-over after waiting this long.
const FAIR_AFTER: Duration = Duration::from_micros(100);

/// A robust process-shared lock (40 bytes, like `pthread_mutex_t`).
#[repr(C)]
pub(crate) struct RobustLock {
    word: AtomicU32,
    wake_pending: AtomicU32,
    /// Thread id of a waiter that asked for a direct hand-over (0: none).
    handoff: AtomicU32,
    _pad: [u32; 3],
    prev: UnsafeCell<usize>,
    next: UnsafeCell<usize>,
}

const _: () = {
    assert!(std::mem::size_of::<RobustLock>() == 40);
    assert!(std::mem::offset_of!(RobustLock, next) as isize + crate::sys::robust::FUTEX_OFFSET == 0);
    assert!(std::mem::offset_of!(RobustLock, prev) + 8 == std::mem::offset_of!(RobustLock, next));
};

// SAFETY: the atomics are shared freely; `prev`/`next` are only accessed by the
// owning thread (module contract).
unsafe impl Sync for RobustLock {}
// SAFETY: as above.
unsafe impl Send for RobustLock {}

impl Default for RobustLock {
    fn default() -> Self {
        RobustLock::new()
    }
}

fn not_owner() -> io::Error {
    io::Error::from_raw_os_error(libc::EPERM)
}

fn edeadlk() -> LockFail {
    LockFail::Io(io::Error::from_raw_os_error(libc::EDEADLK))
}

impl RobustLock {
    /// An unlocked lock (for memory that is not zeroed already).
    pub(crate) const fn new() -> RobustLock {
        RobustLock {
            word: AtomicU32::new(0),
            wake_pending: AtomicU32::new(0),
            handoff: AtomicU32::new(0),
            _pad: [0; 3],
            prev: UnsafeCell::new(0),
            next: UnsafeCell::new(0),
        }
    }

    fn entry(&self) -> usize {
        self.next.get() as usize
    }

    /// Links the lock onto the owner's list and clears the announcement.
    #[inline]
    fn acquired(&self, list: ThreadList) {
        // SAFETY: this thread now owns the lock, whose layout matches the
        // list's (checked at compile time above); it is not on any list.
        unsafe { list.enqueue(self.entry()) };
        list.clear_pending();
    }

    /// Locks, waiting until `deadline`.
    #[inline]
    pub(crate) fn lock(&self, deadline: Deadline) -> Result<Locked, LockFail> {
        let list = ThreadList::this_thread().map_err(LockFail::Io)?;
        let tid = list.tid();
        list.set_pending(self.entry());
        if self
            .word
            .compare_exchange(0, tid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.acquired(list);
            return Ok(Locked::Clean);
        }
        self.lock_contended(list, tid, Some(deadline))
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(
        &self,
        list: ThreadList,
        tid: u32,
        deadline: Option<Deadline>,
    ) -> Result<Locked, LockFail> {
        let r = self.slow(list, tid, deadline);
        if r.is_err() {
            list.clear_pending();
        }
        r
    }

    /// Locks if free (or abandoned by a dead owner), at once.
    #[inline]
    pub(crate) fn try_lock(&self) -> Result<Locked, LockFail> {
        let list = ThreadList::this_thread().map_err(LockFail::Io)?;
        let tid = list.tid();
        list.set_pending(self.entry());
        self.lock_contended(list, tid, None)
    }

    /// Takes the lock after `slow` decided so.
    fn take(&self, list: ThreadList) {
        self.acquired(list);
    }

    fn slow(&self, list: ThreadList, tid: u32, deadline: Option<Deadline>) -> Result<Locked, LockFail> {
        let mut registered = false;
        let mut requested = false;
        let mut naps = 0u32;
        let mut rounds = SPIN_ROUNDS;
        let started = Instant::now();
        loop {
            let v = self.word.load(Ordering::Acquire);
            let owner = v & TID_MASK;
            if owner == tid {
                if requested {
                    // The previous owner handed the lock over to us.
                    self.take(list);
                    return Ok(Locked::Clean);
                }
                return Err(edeadlk());
            }
            if owner == 0 {
                // Having slept, assume others sleep too (as glibc does): the
                // next unlock then wakes one, at worst for nothing.
                let new = tid
                    | if registered || v & WAITERS != 0 {
                        WAITERS
                    } else {
                        0
                    };
                if self
                    .word
                    .compare_exchange(v, new, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    if requested {
                        // Nobody can have claimed the request: an unlocker hands
                        // over without ever freeing the word.
                        let _ = self
                            .handoff
                            .compare_exchange(tid, 0, Ordering::Relaxed, Ordering::Relaxed);
                    }
                    self.take(list);
                    return Ok(if v & OWNER_DIED != 0 {
                        Locked::OwnerDied
                    } else {
                        Locked::Clean
                    });
                }
                continue;
            }
            let deadline = match deadline {
                Some(d) if !d.passed() => d,
                _ => {
                    if requested
                        && self
                            .handoff
                            .compare_exchange(tid, 0, Ordering::Relaxed, Ordering::Relaxed)
                            .is_err()
                    {
                        // An unlocker claimed our request and is handing the lock to us.
                        return self.await_handoff(list, tid);
                    }
                    return Err(LockFail::WouldBlock);
                }
            };
            if !registered {
                // A short spin first: a holder that is running releases within
                // a few hundred nanoseconds, far cheaper than a sleep and a
                // cross-CPU wake-up.
                // At most `SPIN_ROUNDS` rounds per call, so a thread that
                // keeps losing the race goes to sleep (and may then ask for
                // a hand-over).
                if rounds > 0 {
                    rounds -= 1;
                    let mut spins = 0;
                    while spins < SPIN && self.word.load(Ordering::Relaxed) & TID_MASK != 0 {
                        std::hint::spin_loop();
                        spins += 1;
                    }
                    if spins < SPIN {
                        continue; // released (or abandoned) while we spun: try again
                    }
                }
                registered = true;
                continue;
            }
            if v & WAITERS == 0
                && self
                    .word
                    .compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            if !requested && (naps > 0 || started.elapsed() >= FAIR_AFTER) {
                // Woken once and still beaten to it, or waited long enough while
                // others barged in: ask the owner to hand the lock over at its
                // next unlock.
                requested = self
                    .handoff
                    .compare_exchange(0, tid, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
            }
            let (nap, recheck) = match deadline.remaining() {
                Some(left) if left < RECHECK => (deadline, false),
                _ => (Deadline::after(RECHECK), true),
            };
            let woke = futex::wait(&self.word, v | WAITERS, nap);
            naps += 1;
            self.wake_pending.store(0, Ordering::Relaxed);
            if recheck
                && matches!(woke, Ok(futex::Wake::TimedOut))
                && self.word.load(Ordering::Relaxed) == v | WAITERS
                && !thread_alive(owner)
            {
                // The owner is gone without the kernel marking the word (it was
                // handed the lock after it died): take over, and say so.
                if self
                    .word
                    .compare_exchange(v | WAITERS, tid | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    if requested {
                        let _ = self
                            .handoff
                            .compare_exchange(tid, 0, Ordering::Relaxed, Ordering::Relaxed);
                    }
                    self.take(list);
                    return Ok(Locked::OwnerDied);
                }
            }
        }
    }

    /// Our hand-over request was claimed: the word becomes ours in a moment
    /// (or is marked `OWNER_DIED` if the unlocker died meanwhile).
    #[cold]
    fn await_handoff(&self, list: ThreadList, tid: u32) -> Result<Locked, LockFail> {
        loop {
            let v = self.word.load(Ordering::Acquire);
            if v & TID_MASK == tid {
                self.take(list);
                return Ok(Locked::Clean);
            }
            if v & TID_MASK == 0
                && self
                    .word
                    .compare_exchange(v, tid | (v & WAITERS), Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.take(list);
                return Ok(if v & OWNER_DIED != 0 {
                    Locked::OwnerDied
                } else {
                    Locked::Clean
                });
            }
            std::thread::yield_now();
        }
    }

    /// Unlocks.
    ///
    /// # Errors
    /// `EPERM` when the calling thread does not hold the lock.
    #[inline]
    pub(crate) fn unlock(&self) -> io::Result<()> {
        match ThreadList::cached() {
            Some(list) => self.unlock_on(list),
            None => self.unlock_first(),
        }
    }

    /// Unlocks if the calling thread holds the lock, else does nothing: for
    /// a guard's drop, which has no use for the error (no `io::Error` to
    /// build and drop keeps the inlined code small).
    #[inline(always)]
    pub(crate) fn unlock_if_held(&self) {
        match ThreadList::cached() {
            Some(list) if self.word.load(Ordering::Relaxed) & TID_MASK == list.tid() => {
                self.unlock_owned(list)
            }
            _ => self.unlock_first_if_held(),
        }
    }

    #[cold]
    #[inline(never)]
    fn unlock_first_if_held(&self) {
        let _ = self.unlock_first();
    }

    /// `unlock` on a thread whose list is not cached yet (it cannot hold the
    /// lock, unless the cache was reset by a fork).
    #[cold]
    #[inline(never)]
    fn unlock_first(&self) -> io::Result<()> {
        match ThreadList::this_thread() {
            Ok(list) => self.unlock_on(list),
            Err(e) if self.word.load(Ordering::Relaxed) & TID_MASK == current_tid() => Err(e),
            Err(_) => Err(not_owner()),
        }
    }

    #[inline(always)]
    fn unlock_on(&self, list: ThreadList) -> io::Result<()> {
        if self.word.load(Ordering::Relaxed) & TID_MASK != list.tid() {
            return Err(not_owner());
        }
        self.unlock_owned(list);
        Ok(())
    }

    /// Unlocks a lock that the calling thread (of `list`) holds.
    #[inline(always)]
    fn unlock_owned(&self, list: ThreadList) {
        list.set_pending(self.entry());
        // SAFETY: this thread owns the lock, so `enqueue` linked it on this
        // thread's list and it is still mapped (the caller holds a reference).
        unsafe { list.dequeue(self.entry()) };
        let h = self.handoff.load(Ordering::Relaxed);
        if h != 0 {
            self.unlock_handing_over(list, h);
        } else {
            self.release(list);
        }
    }

    /// Frees the word (the last step of an unlock) and wakes a sleeper if
    /// the word says one may sleep.
    #[inline(always)]
    fn release(&self, list: ThreadList) {
        let old = self.word.swap(0, Ordering::Release);
        list.clear_pending();
        if old & WAITERS != 0 {
            self.wake_one();
        }
    }

    /// The end of an unlock when waiter `h` asked for a hand-over (out of
    /// line: the unlock of an uncontended lock stays small enough to inline).
    #[cold]
    #[inline(never)]
    fn unlock_handing_over(&self, list: ThreadList, h: u32) {
        if self
            .handoff
            .compare_exchange(h, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            // A waiter asked for the lock: give it directly, never freeing the
            // word, so that this thread cannot barge in again.
            self.word.store(h | WAITERS, Ordering::Release);
            list.clear_pending();
            futex::wake_all(&self.word);
        } else {
            // The waiter withdrew its request (it timed out).
            self.release(list);
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_one(&self) {
        if self.wake_pending.swap(1, Ordering::Relaxed) == 0 && futex::wake(&self.word, 1) == 0 {
            self.wake_pending.store(0, Ordering::Relaxed);
        }
    }

    /// True when the calling thread holds the lock.
    pub(crate) fn held_by_current_thread(&self) -> bool {
        self.word.load(Ordering::Relaxed) & TID_MASK == current_tid()
    }

    /// True when some thread of this process holds the lock (slow: reads /proc).
    pub(crate) fn held_in_this_process(&self) -> bool {
        is_own_thread(self.word.load(Ordering::Relaxed) & TID_MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    /// The algorithm over ordinary heap memory, with threads.
    #[test]
    fn heap_lock_excludes_threads() {
        let lock = Arc::new(RobustLock::new());
        let count = Arc::new(AtomicU64::new(0));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (lock, count) = (lock.clone(), count.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        assert_eq!(lock.lock(Deadline::NEVER).unwrap(), Locked::Clean);
                        let v = count.load(Ordering::Relaxed);
                        count.store(v + 1, Ordering::Relaxed);
                        lock.unlock().unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(count.load(Ordering::Relaxed), 80_000);
    }

    /// Short timeouts race with hand-overs (request, withdraw, claimed request):
    /// mutual exclusion holds and every success is counted exactly once.
    #[test]
    fn heap_lock_timeouts_and_hand_overs_keep_exclusion() {
        let lock = Arc::new(RobustLock::new());
        let count = Arc::new(AtomicU64::new(0));
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                let (lock, count) = (lock.clone(), count.clone());
                std::thread::spawn(move || {
                    let mut ok = 0u64;
                    for i in 0..3000u64 {
                        let wait = Duration::from_micros((i * 7 + t * 13) % 150);
                        if lock.lock(Deadline::after(wait)).is_ok() {
                            let v = count.load(Ordering::Relaxed);
                            if i % 64 == 0 {
                                std::thread::yield_now();
                            }
                            count.store(v + 1, Ordering::Relaxed);
                            lock.unlock().unwrap();
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        let total: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(count.load(Ordering::Relaxed), total);
        assert!(total > 0);
        assert_eq!(
            lock.try_lock().unwrap(),
            Locked::Clean,
            "left unlocked, no stale hand-over"
        );
        lock.unlock().unwrap();
        assert_eq!(lock.handoff.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn heap_lock_owner_thread_death_is_reported_once_and_wakes_a_sleeper() {
        let lock = Arc::new(RobustLock::new());
        let l2 = lock.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let owner = std::thread::spawn(move || {
            l2.lock(Deadline::NEVER).unwrap();
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            // Exits holding the lock.
        });
        rx.recv().unwrap();
        let t = std::time::Instant::now();
        assert_eq!(
            lock.lock(Deadline::after(Duration::from_secs(10))).unwrap(),
            Locked::OwnerDied
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        owner.join().unwrap();
        lock.unlock().unwrap();
        assert_eq!(lock.try_lock().unwrap(), Locked::Clean);
        assert!(matches!(lock.lock(Deadline::NEVER), Err(LockFail::Io(_))));
        lock.unlock().unwrap();
        assert!(lock.unlock().is_err());
    }

    #[test]
    fn interleaves_with_glibc_robust_mutexes_on_the_same_list() {
        use crate::sync::raw_mutex::RawMutex;
        let mut m = Box::new(std::mem::MaybeUninit::<RawMutex>::uninit());
        // SAFETY: fresh heap memory at its final address, used by this test only.
        unsafe { RawMutex::init(m.as_mut_ptr()).unwrap() };
        // SAFETY: initialised just above.
        let m = unsafe { m.assume_init_ref() };
        let (a, b) = (RobustLock::new(), RobustLock::new());
        a.lock(Deadline::NEVER).unwrap();
        m.lock(Deadline::NEVER).unwrap();
        b.lock(Deadline::NEVER).unwrap();
        a.unlock().unwrap(); // from the middle of the list
        m.unlock().unwrap();
        a.lock(Deadline::NEVER).unwrap();
        b.unlock().unwrap();
        a.unlock().unwrap();
        m.lock(Deadline::NEVER).unwrap();
        m.unlock().unwrap();
    }
}
