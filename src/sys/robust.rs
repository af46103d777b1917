//! The calling thread's id and its kernel robust-futex list, for the crate's own
//! robust lock word (`sync::robust_lock`).
//!
//! The kernel keeps, per thread, a pointer to a user-space `robust_list_head`
//! (registered by glibc for every thread). When a thread dies, the kernel walks
//! that list and, for every entry whose futex word (at `entry + futex_offset`)
//! holds the dying thread's id, sets `FUTEX_OWNER_DIED` and wakes a waiter. glibc
//! threads its robust `pthread_mutex_t`s onto this list as a doubly linked list
//! of `{prev, next}` pairs: every link points at an entry's `next` field, the
//! entry's `prev` is 8 bytes below it, and the futex word 32 bytes below it
//! (`futex_offset == -32`, checked at run time). A lock laid out the same way
//! can be linked onto the same list with the same operations (`ENQUEUE_MUTEX` /
//! `DEQUEUE_MUTEX` in glibc's `nptl/descr.h`), and the kernel then treats it
//! exactly like a glibc robust mutex.
//!
//! # Safety
//! - The list is private to its thread: only the owning thread (and the kernel,
//!   when the thread dies) reads or writes it; [`ThreadList`] is `!Send`.
//! - [`ThreadList::this_thread`] checks the registered head (`len == 24`,
//!   `futex_offset == -32`) before any use, and refuses otherwise.
//! - The callers of [`ThreadList::enqueue`]/[`ThreadList::dequeue`] promise that
//!   `entry` is the address of the `next` field of a lock laid out as above, that
//!   the memory stays mapped while the entry is on the list, and that enqueue and
//!   dequeue alternate for each lock, from the thread that owns it.
//! - The thread-id cache is reset in a fork child by a `pthread_atfork` handler
//!   (the child's thread has a new id).
#![allow(unsafe_code)]

use std::cell::Cell;
use std::io;
use std::ptr;
use std::sync::atomic::{compiler_fence, Ordering};
use std::sync::Once;

/// `entry + FUTEX_OFFSET` is the futex word of a list entry (glibc's layout).
pub(crate) const FUTEX_OFFSET: isize = -32;
/// Bytes between an entry's `prev` field and its `next` field.
const PREV_ADJUST: usize = 8;

/// The calling thread's id and list head, in one thread-local so that the
/// lock's fast path reads both with one access (0: not known yet).
#[derive(Clone, Copy)]
struct Cache {
    /// Address of the registered `robust_list_head`, once checked (0: not yet).
    head: usize,
    /// The thread's kernel id (0: not yet); always set when `head` is.
    tid: u32,
}

thread_local! {
    static CACHE: Cell<Cache> = const { Cell::new(Cache { head: 0, tid: 0 }) };
}

static ATFORK: Once = Once::new();

/// Forgets the cached thread id and list head: for a child made by a fork
/// that runs no `pthread_atfork` handler (`proc::SiblingFork`).
pub(crate) fn forget_thread_cache() {
    reset_in_child();
}

extern "C" fn reset_in_child() {
    // In the child of a fork only the forking thread exists, with a new id;
    // its robust list head is at the same address but re-registered by glibc.
    CACHE.with(|c| c.set(Cache { head: 0, tid: 0 }));
}

fn register_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only writes a thread-local cell
        // (async-signal-safe); the function lives for the whole program.
        unsafe {
            libc::pthread_atfork(None, None, Some(reset_in_child));
        }
    });
}

/// The calling thread's kernel id (cached; correct after `fork`).
#[inline(always)]
pub(crate) fn current_tid() -> u32 {
    let t = CACHE.with(Cell::get).tid;
    if t != 0 {
        return t;
    }
    first_tid()
}

#[cold]
#[inline(never)]
fn first_tid() -> u32 {
    register_atfork();
    let t = rustix::thread::gettid().as_raw_nonzero().get().unsigned_abs();
    CACHE.with(|c| c.set(Cache { tid: t, ..c.get() }));
    t
}

/// The calling thread's robust list, as registered with the kernel, and the
/// thread's id.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ThreadList {
    /// Address of the `robust_list_head` (its first field is `list.next`).
    head: usize,
    /// The calling thread's kernel id ([`current_tid`]).
    tid: u32,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl ThreadList {
    /// The calling thread's list (cached after the first call).
    ///
    /// # Errors
    /// `Unsupported` when no list is registered or it does not have glibc's layout.
    #[inline(always)]
    pub(crate) fn this_thread() -> io::Result<ThreadList> {
        let c = CACHE.with(Cell::get);
        if c.head != 0 {
            return Ok(ThreadList {
                head: c.head,
                tid: c.tid,
                _not_send: std::marker::PhantomData,
            });
        }
        ThreadList::first_use()
    }

    /// The calling thread's list if [`this_thread`](ThreadList::this_thread)
    /// already succeeded on this thread (`None`: call it).
    #[inline(always)]
    pub(crate) fn cached() -> Option<ThreadList> {
        let c = CACHE.with(Cell::get);
        (c.head != 0).then_some(ThreadList {
            head: c.head,
            tid: c.tid,
            _not_send: std::marker::PhantomData,
        })
    }

    /// The calling thread's kernel id (as [`current_tid`]).
    #[inline(always)]
    pub(crate) fn tid(self) -> u32 {
        self.tid
    }

    #[cold]
    #[inline(never)]
    fn first_use() -> io::Result<ThreadList> {
        register_atfork();
        let mut head: usize = 0;
        let mut len: usize = 0;
        // SAFETY: get_robust_list(0, ...) writes the calling thread's head
        // pointer and its length into the two locals.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_get_robust_list,
                0 as libc::c_long,
                ptr::addr_of_mut!(head),
                ptr::addr_of_mut!(len),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let unsupported = |why: &str| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("robust locks need glibc's robust futex list on this thread: {why}"),
            )
        };
        if head == 0 || head % std::mem::align_of::<usize>() != 0 {
            return Err(unsupported("no list registered"));
        }
        if len != 3 * std::mem::size_of::<usize>() {
            return Err(unsupported("unexpected list head size"));
        }
        // SAFETY: the kernel gave us the live head of this thread's list, a
        // `robust_list_head { next, futex_offset, list_op_pending }`.
        let offset = unsafe { ptr::read_volatile((head + 8) as *const isize) };
        if offset != FUTEX_OFFSET {
            return Err(unsupported(
                "unexpected futex offset (not glibc's pthread_mutex_t layout)",
            ));
        }
        // glibc's list is doubly linked: the first entry's `prev` (or, for an
        // empty list, the `robust_prev` slot just below the head) points back
        // at the head.
        // SAFETY: the head is live (above); its first link points at a live
        // entry's `next` field, or at the head itself, with a `prev` slot 8 bytes below.
        let back = unsafe {
            let first = ptr::read_volatile(head as *const usize);
            ptr::read_volatile(((first & !1) - PREV_ADJUST) as *const usize)
        };
        if back & !1 != head {
            return Err(unsupported("the list is not glibc's doubly linked list"));
        }
        let tid = current_tid();
        CACHE.with(|c| c.set(Cache { head, tid }));
        Ok(ThreadList {
            head,
            tid,
            _not_send: std::marker::PhantomData,
        })
    }

    /// Announces that `entry` is about to be locked or unlocked, so that the
    /// kernel also checks it if the thread dies in between.
    #[inline(always)]
    pub(crate) fn set_pending(self, entry: usize) {
        // SAFETY: `head + 16` is `list_op_pending` of this thread's head (checked
        // in `this_thread`); only this thread writes it.
        unsafe { ptr::write_volatile((self.head + 16) as *mut usize, entry) };
        compiler_fence(Ordering::SeqCst);
    }

    /// Clears the announcement.
    #[inline(always)]
    pub(crate) fn clear_pending(self) {
        compiler_fence(Ordering::SeqCst);
        // SAFETY: as in `set_pending`.
        unsafe { ptr::write_volatile((self.head + 16) as *mut usize, 0) };
    }

    /// Links `entry` at the front of the list (glibc's `ENQUEUE_MUTEX_BOTH`, val 0).
    ///
    /// # Safety
    /// See the module's contract: `entry` is the `next` field of a lock laid out
    /// like glibc's robust mutex, owned by this thread, not on any list.
    #[inline(always)]
    pub(crate) unsafe fn enqueue(self, entry: usize) {
        // SAFETY: every link of this thread's list points at a live entry's
        // `next` field with its `prev` 8 bytes below (glibc's invariant, which
        // we keep); `entry` is valid per the caller.
        unsafe {
            let first = ptr::read_volatile(self.head as *const usize);
            ptr::write_volatile(((first & !1) - PREV_ADJUST) as *mut usize, entry);
            ptr::write_volatile(entry as *mut usize, first);
            ptr::write_volatile((entry - PREV_ADJUST) as *mut usize, self.head);
            compiler_fence(Ordering::SeqCst);
            ptr::write_volatile(self.head as *mut usize, entry);
        }
    }

    /// Unlinks `entry` (glibc's `DEQUEUE_MUTEX`, without clearing the entry's
    /// own links: nothing reads them while it is off the list, neither the
    /// kernel, which only follows links from the head and reads nothing but
    /// the futex word of the `list_op_pending` entry, nor `enqueue`, which
    /// overwrites both. Two stores fewer before the unlocking swap, which has
    /// to wait for every earlier store to reach the cache).
    ///
    /// # Safety
    /// `entry` was linked by [`enqueue`](ThreadList::enqueue) on this thread's
    /// list and is still mapped.
    #[inline(always)]
    pub(crate) unsafe fn dequeue(self, entry: usize) {
        // SAFETY: as in `enqueue`; `entry`'s neighbours are live entries.
        unsafe {
            let next = ptr::read_volatile(entry as *const usize);
            let prev = ptr::read_volatile((entry - PREV_ADJUST) as *const usize);
            ptr::write_volatile(((next & !1) - PREV_ADJUST) as *mut usize, prev);
            ptr::write_volatile((prev & !1) as *mut usize, next);
            compiler_fence(Ordering::SeqCst);
        }
    }
}

/// True when `tid` is a live thread of the calling process.
pub(crate) fn is_own_thread(tid: u32) -> bool {
    tid != 0 && std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

/// False once thread `tid` has exited (or its process is a zombie); true
/// while it runs, or when this cannot be told.
pub(crate) fn thread_alive(tid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        Err(e) => e.kind() != io::ErrorKind::NotFound,
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
    }
}
