//! The shared-memory ring behind every queue: a byte ring of length-prefixed
//! records, guarded by one robust process-shared mutex, with futex words to
//! sleep on (not empty / not full / all tasks done).
//!
//! # Layout
//!
//! | offset | what |
//! | --- | --- |
//! | 0 | [`Header`]: magic, geometry, state, redo log, futex words, the mutex |
//! | [`DATA_OFF`] | the data ring, `cap` bytes (a multiple of 8) |
//!
//! A record is an 8-byte word `(kind << 56) | len` followed by `len` payload
//! bytes, padded to a multiple of 8. Positions `head`/`tail` are byte offsets
//! that grow monotonically (taken modulo `cap`) and go back to 0 whenever the
//! queue becomes empty, so a queue that drains keeps reusing its first pages.
//!
//! # Crash safety
//!
//! Every change of the state (`head`, `tail`, `count`, `unfinished`) is made
//! under the mutex and committed through a one-entry redo log: the new state is
//! written to `pending`, `pending_valid` set, the state copied, `pending_valid`
//! cleared. Record bytes are written (or read) *before* the commit. So a process
//! that dies holding the mutex leaves either the old state (its half-written
//! record lies in free space and is ignored; a half-read record stays in the
//! queue) or a complete `pending` that the next locker, told `OwnerDied` by the
//! robust mutex, rolls forward. The repair also wakes every sleeper, in case the
//! dead process died between a commit and its wake-up call.
//!
//! # Sleeping
//!
//! Each futex word holds a sequence number (bits 1..) and a "sleepers" bit
//! (bit 0). A waiter sets the bit under the mutex, unlocks and sleeps while the
//! word is unchanged; a notifier (under the mutex) bumps the word and calls
//! `FUTEX_WAKE` only if the bit was set, so the fast path makes no syscall. A
//! waiter killed in its sleep costs at most one needless wake-up.
//!
//! # Safety
//!
//! A [`Ring`] holds a pointer to a [`Header`] and to `cap` data bytes inside a
//! mapping that it keeps alive (a [`Segment`] or a private allocation). The
//! contract that makes the accesses sound:
//! - The header is initialised in place (mutex included) by [`Ring::create`]
//!   before the ring is shared, and never moved.
//! - Every header field that changes after creation is an atomic or the
//!   mutex; the geometry (`cap`, `max_items`, `kind`) is read once at attach,
//!   validated against the mapping's length, and kept in the `Ring`, so a
//!   corrupted header can never make us read or write outside the mapping.
//! - Data bytes are read and written only while holding the mutex, at offsets
//!   reduced modulo the local `cap`, with lengths checked against `cap`.
//! - Memory is given back (`fallocate` punch) only for free space, under the
//!   mutex; pages are faulted in ahead (`MADV_POPULATE_WRITE`) without it,
//!   which never changes their contents.
//!
//! # Memory
//!
//! Fresh memfd pages cost a page fault each in every process that touches
//! them, so the first `HOT` bytes stay resident once used, a queue that has
//! grown past `AHEAD` MiB faults its pages in a few MiB ahead of the writes,
//! and pages are given back when the queue empties (everything beyond `HOT`)
//! or, while it is less than a quarter full, chunk by chunk behind the reads.
#![allow(unsafe_code)]

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

use crate::deadline::Deadline;
use crate::shm::segment::Segment;
use crate::sync::raw_mutex::{LockFail, Locked, RawMutex};
use crate::sys::futex::{self, Wake};

/// Where the data ring starts (the header fits in one page).
pub(crate) const DATA_OFF: usize = 4096;
/// "MPQUEUE1".
const MAGIC: u64 = u64::from_le_bytes(*b"MPQUEUE1");
/// Layout version.
const LAYOUT: u32 = 2;
/// Record header length.
const REC_HDR: u64 = 8;
/// Largest payload a record can describe.
const MAX_LEN: u64 = (1 << 56) - 1;
/// Freed memory is returned to the system in chunks of this size...
const CHUNK: u64 = 4 << 20;
/// ...beyond the first `HOT` bytes, which stay resident.
const HOT: u64 = 32 << 20;
const MIB: u64 = 1 << 20;
/// How far ahead of the writes pages are faulted in, in MiB.
const AHEAD: u64 = 8;
/// Attempts at the mutex before sleeping on it.
const SPIN: u32 = 200;
/// Payloads up to this size are copied out without a heap allocation.
pub(crate) const INLINE: usize = 64;

/// Which queue type a ring belongs to (checked when a handle is received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Flavor {
    /// `Queue`.
    Queue = 1,
    /// `SimpleQueue`.
    Simple = 2,
    /// `JoinableQueue`: counts unfinished tasks.
    Joinable = 3,
}

impl Flavor {
    fn from_u32(v: u32) -> Option<Flavor> {
        match v {
            1 => Some(Flavor::Queue),
            2 => Some(Flavor::Simple),
            3 => Some(Flavor::Joinable),
            _ => None,
        }
    }
}

#[repr(C)]
#[derive(Default)]
/// The queue's state. Read and written under the mutex only (which orders
/// the accesses), except `count`/`unfinished` read alone by `len`.
struct State {
    head: AtomicU64,
    tail: AtomicU64,
    count: AtomicU64,
    unfinished: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snap {
    head: u64,
    tail: u64,
    count: u64,
    unfinished: u64,
}

impl State {
    fn load(&self) -> Snap {
        Snap {
            head: self.head.load(Relaxed),
            tail: self.tail.load(Relaxed),
            count: self.count.load(Relaxed),
            unfinished: self.unfinished.load(Relaxed),
        }
    }
    fn store(&self, s: Snap) {
        self.head.store(s.head, Relaxed);
        self.tail.store(s.tail, Relaxed);
        self.count.store(s.count, Relaxed);
        self.unfinished.store(s.unfinished, Relaxed);
    }
}

/// The state and its redo log, together in one cache line.
#[repr(C, align(64))]
struct Hot {
    state: State,
    pending: State,
}

/// The shared header. The fields every operation touches share two cache
/// lines (the mutex and the flags; the state); the geometry, written once
/// before sharing and cached in each `Ring`, lies apart.
#[repr(C, align(64))]
struct Header {
    lock: RawMutex,
    closed: AtomicU32,
    pending_valid: AtomicU32,
    not_empty: AtomicU32,
    not_full: AtomicU32,
    all_done: AtomicU32,
    /// How far (in MiB from the ring's start) records were written since the
    /// queue last emptied: what to give back then.
    touched_mib: AtomicU32,
    hot: Hot,
    magic: AtomicU64,
    layout: AtomicU32,
    flavor: AtomicU32,
    cap: AtomicU64,
    max_items: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= DATA_OFF);

/// Memory a ring lives in.
#[derive(Clone, Debug)]
enum Backing {
    /// A memfd mapping, shareable with other processes.
    Shared(Segment),
    /// Ordinary memory (tests over threads).
    #[cfg_attr(not(test), allow(dead_code))]
    Private(Arc<PrivateMem>),
}

/// A zeroed, 4096-aligned heap block.
#[derive(Debug)]
struct PrivateMem {
    ptr: NonNull<u8>,
    layout: std::alloc::Layout,
}

// SAFETY: a plain block of memory; the ring synchronises all access to it.
unsafe impl Send for PrivateMem {}
// SAFETY: as above.
unsafe impl Sync for PrivateMem {}

impl Drop for PrivateMem {
    fn drop(&mut self) {
        // SAFETY: allocated in `Ring::private` with exactly this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// A payload copied out of the ring.
#[derive(Debug)]
pub(crate) enum Payload {
    /// Short payloads, without a heap allocation.
    Inline([u8; INLINE], usize),
    /// Longer ones.
    Heap(Vec<u8>),
}

impl Payload {
    /// The bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Inline(b, n) => &b[..*n],
            Payload::Heap(v) => v,
        }
    }
    /// The bytes as an owned vector.
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            Payload::Inline(b, n) => b[..n].to_vec(),
            Payload::Heap(v) => v,
        }
    }
}

/// Why a put failed.
#[derive(Debug)]
pub(crate) enum PutFail {
    Full,
    Timeout,
    Closed,
    TooLarge { len: u64, max: u64 },
    Io(io::Error),
}

/// Why a get failed.
#[derive(Debug)]
pub(crate) enum GetFail {
    Empty,
    Timeout,
    Closed,
    Io(io::Error),
}

/// How long an operation may block.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Block {
    /// Not at all (`try_*`): a full/empty queue is an error at once.
    No,
    /// Until the deadline.
    Until(Deadline),
}

impl Block {
    fn lock_deadline(self) -> Deadline {
        match self {
            // The mutex is held only for copies: waiting for it is bounded.
            Block::No => Deadline::NEVER,
            Block::Until(d) => d,
        }
    }
}

/// A handle on a ring; clones share it.
#[derive(Clone, Debug)]
pub(crate) struct Ring {
    backing: Backing,
    hdr: NonNull<Header>,
    data: NonNull<u8>,
    cap: u64,
    max_items: u64,
    flavor: Flavor,
}

// SAFETY: the pointers point into `backing`, which the ring keeps alive; all
// shared accesses go through atomics or under the process-shared mutex.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

fn align8(n: u64) -> Option<u64> {
    n.checked_add(7).map(|n| n & !7)
}

/// A held mutex; unlocks on drop.
struct Guard<'a>(&'a RawMutex);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Ring {
    /// A new ring of `cap` data bytes (rounded up to 8) in a fresh memfd.
    /// `max_items == 0` means no item limit.
    pub(crate) fn create(flavor: Flavor, max_items: u64, cap: u64) -> io::Result<Ring> {
        let cap = align8(cap.max(64)).ok_or_else(|| io::Error::other("ring too large"))?;
        let total = usize::try_from(cap)
            .ok()
            .and_then(|c| c.checked_add(DATA_OFF))
            .ok_or_else(|| io::Error::other("ring too large"))?;
        let seg = Segment::create("multiproc-queue", total)?;
        // SAFETY: the segment is fresh, zero-filled, at least `total` bytes,
        // page aligned, and not shared with anyone yet.
        unsafe { Ring::init(Backing::Shared(seg), flavor, max_items, cap) }
    }

    /// A new ring in ordinary memory (for tests over threads).
    #[cfg(test)]
    pub(crate) fn private(flavor: Flavor, max_items: u64, cap: u64) -> io::Result<Ring> {
        let cap = align8(cap.max(64)).ok_or_else(|| io::Error::other("ring too large"))?;
        let total = DATA_OFF + cap as usize;
        let layout = std::alloc::Layout::from_size_align(total, 4096).map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::other("out of memory"))?;
        let mem = Arc::new(PrivateMem { ptr, layout });
        // SAFETY: fresh zeroed block of `total` bytes, aligned to 4096, unshared.
        unsafe { Ring::init(Backing::Private(mem), flavor, max_items, cap) }
    }

    fn base(backing: &Backing) -> (*mut u8, usize) {
        match backing {
            Backing::Shared(s) => (s.as_ptr(), s.len()),
            Backing::Private(m) => (m.ptr.as_ptr(), m.layout.size()),
        }
    }

    /// # Safety
    /// `backing` is zero-filled, at least `DATA_OFF + cap` bytes, page aligned,
    /// and used by no one else yet.
    unsafe fn init(backing: Backing, flavor: Flavor, max_items: u64, cap: u64) -> io::Result<Ring> {
        let (base, _) = Ring::base(&backing);
        let hdr = base.cast::<Header>();
        // SAFETY: per the contract, `hdr` is valid, aligned and unshared; zeroed
        // memory is a valid `Header` apart from the mutex, initialised in place.
        unsafe {
            RawMutex::init(std::ptr::addr_of_mut!((*hdr).lock))?;
            let h = &*hdr;
            h.layout.store(LAYOUT, SeqCst);
            h.flavor.store(flavor as u32, SeqCst);
            h.cap.store(cap, SeqCst);
            h.max_items.store(max_items, SeqCst);
            h.magic.store(MAGIC, SeqCst);
        }
        Ring::attach_backing(backing, Some(flavor))
    }

    /// Attaches to a ring received as a segment, checking that it is one of
    /// `flavor` and that its geometry fits the mapping.
    pub(crate) fn attach(seg: Segment, flavor: Flavor) -> io::Result<Ring> {
        Ring::attach_backing(Backing::Shared(seg), Some(flavor))
    }

    fn attach_backing(backing: Backing, want: Option<Flavor>) -> io::Result<Ring> {
        let (base, len) = Ring::base(&backing);
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        if len < DATA_OFF + 64 || (base as usize) % 4096 != 0 {
            return Err(bad(format!("a {len}-byte segment cannot hold a queue")));
        }
        // SAFETY: the mapping is at least DATA_OFF bytes and page aligned, so a
        // Header fits at its start; all its fields are atomics or the mutex.
        let h = unsafe { &*base.cast::<Header>() };
        if h.magic.load(SeqCst) != MAGIC || h.layout.load(SeqCst) != LAYOUT {
            return Err(bad(
                "the segment does not hold a multiproc queue of this version".into()
            ));
        }
        let flavor = Flavor::from_u32(h.flavor.load(SeqCst))
            .ok_or_else(|| bad("the segment holds an unknown kind of queue".into()))?;
        if let Some(w) = want {
            if w != flavor {
                return Err(bad(format!(
                    "the handle is a {flavor:?} queue, not a {w:?} queue"
                )));
            }
        }
        let cap = h.cap.load(SeqCst);
        if cap % 8 != 0 || cap < 64 || cap > (len - DATA_OFF) as u64 {
            return Err(bad(format!(
                "queue capacity {cap} does not fit its {len}-byte segment"
            )));
        }
        let max_items = h.max_items.load(SeqCst);
        // SAFETY: base is non-null (a live mapping) and DATA_OFF < len.
        let (hdr, data) = unsafe {
            (
                NonNull::new_unchecked(base.cast::<Header>()),
                NonNull::new_unchecked(base.add(DATA_OFF)),
            )
        };
        Ok(Ring {
            backing,
            hdr,
            data,
            cap,
            max_items,
            flavor,
        })
    }

    fn h(&self) -> &Header {
        // SAFETY: the header was initialised before the ring was shared and
        // lives as long as `backing`; shared fields are atomics or the mutex.
        unsafe { self.hdr.as_ref() }
    }

    /// The segment, to send this ring to another process.
    pub(crate) fn segment(&self) -> Option<&Segment> {
        match &self.backing {
            Backing::Shared(s) => Some(s),
            Backing::Private(_) => None,
        }
    }

    /// The flavor.
    pub(crate) fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Item limit, 0 for none.
    pub(crate) fn max_items(&self) -> u64 {
        self.max_items
    }

    /// The largest payload a single item can have in this ring.
    pub(crate) fn max_payload(&self) -> u64 {
        (self.cap - REC_HDR).min(MAX_LEN)
    }

    /// Items in the queue now (one atomic read of the committed count).
    pub(crate) fn len(&self) -> u64 {
        self.h().hot.state.count.load(Acquire)
    }

    /// Items put and not yet marked done (joinable rings).
    pub(crate) fn unfinished(&self) -> u64 {
        self.h().hot.state.unfinished.load(Acquire)
    }

    /// True once `close` was called by any process.
    pub(crate) fn is_closed(&self) -> bool {
        self.h().closed.load(SeqCst) != 0
    }

    fn lock(&self, deadline: Deadline) -> Result<Guard<'_>, LockFail> {
        let h = self.h();
        // The mutex is held for a copy only: spin briefly before sleeping in
        // the kernel (a futex sleep and wake-up across CPUs costs far more).
        let mut got = None;
        for _ in 0..SPIN {
            match h.lock.try_lock() {
                Ok(l) => {
                    got = Some(l);
                    break;
                }
                Err(LockFail::WouldBlock) => std::hint::spin_loop(),
                Err(e) => return Err(e),
            }
        }
        let locked = match got {
            Some(l) => l,
            None => h.lock.lock(deadline)?,
        };
        match locked {
            Locked::Clean => {}
            Locked::OwnerDied => self.repair(),
        }
        Ok(Guard(&h.lock))
    }

    /// Called with the mutex held after its owner died.
    fn repair(&self) {
        let h = self.h();
        if h.pending_valid.load(SeqCst) != 0 {
            h.hot.state.store(h.hot.pending.load());
            h.pending_valid.store(0, SeqCst);
        }
        self.state();
        for w in [&h.not_empty, &h.not_full, &h.all_done] {
            w.fetch_add(2, SeqCst);
            futex::wake_all(w);
        }
    }

    /// The committed state (mutex held). A state whose numbers disagree
    /// (impossible through the redo log, but the shared memory is writable by
    /// every process holding the queue) is reset to empty rather than trusted,
    /// so no arithmetic below can overflow or reach outside the ring.
    fn state(&self) -> Snap {
        let s = self.h().hot.state.load();
        let ok = s.tail >= s.head
            && s.tail - s.head <= self.cap
            && (s.count == 0) == (s.tail == s.head)
            && s.count <= (s.tail - s.head) / REC_HDR;
        if ok {
            return s;
        }
        let empty = Snap {
            head: 0,
            tail: 0,
            count: 0,
            unfinished: s.unfinished,
        };
        self.commit(empty);
        empty
    }

    /// Makes `new` the state, crash-atomically (mutex held).
    fn commit(&self, new: Snap) {
        let h = self.h();
        h.hot.pending.store(new);
        // Release: `pending` is complete before it is marked valid, and the
        // state is complete before the log is cleared, for whoever locks next
        // (even after this process dies).
        h.pending_valid.store(1, Release);
        h.hot.state.store(new);
        h.pending_valid.store(0, Release);
    }

    /// Wakes the sleepers on `w` if any (mutex held).
    fn notify(w: &AtomicU32) {
        // Waiters set the bit under the mutex we hold: a relaxed read sees it.
        let cur = w.load(Relaxed);
        if cur & 1 != 0 {
            let _ = w.fetch_update(SeqCst, SeqCst, |v| Some((v & !1).wrapping_add(2)));
            futex::wake_all(w);
        }
    }

    /// Announces a sleeper on `w` (mutex held); returns the value to wait on.
    fn arm(w: &AtomicU32) -> u32 {
        w.fetch_or(1, SeqCst) | 1
    }

    fn sleep(w: &AtomicU32, v: u32, deadline: Deadline) -> io::Result<Wake> {
        futex::wait(w, v, deadline)
    }

    /// The offset in the data ring of logical position `pos` (positions go
    /// back to 0 whenever the queue empties, so the division is rare).
    fn phys(&self, pos: u64) -> u64 {
        if pos < self.cap {
            pos
        } else {
            pos % self.cap
        }
    }

    /// Writes a record header word at logical position `pos` (mutex held).
    fn write_word(&self, pos: u64, word: u64) {
        let off = self.phys(pos);
        // SAFETY: `pos` is a record start, a multiple of 8, and so is `cap`:
        // the 8 bytes at `off < cap` are inside the ring and 8-aligned (the ring
        // starts on a page); the mutex excludes other accesses to them.
        unsafe {
            self.data
                .as_ptr()
                .add(off as usize)
                .cast::<u64>()
                .write(word.to_le())
        }
    }

    /// Reads the record header word at logical position `pos` (mutex held).
    fn read_word(&self, pos: u64) -> u64 {
        let off = self.phys(pos);
        // SAFETY: as in `write_word`; the word was written before the commit
        // that made it part of the queue (or is garbage from a corrupted state,
        // which the caller checks).
        u64::from_le(unsafe { self.data.as_ptr().add(off as usize).cast::<u64>().read() })
    }

    /// Copies `src` into the ring at logical position `pos` (mutex held).
    fn write_at(&self, pos: u64, src: &[u8]) {
        let off = self.phys(pos);
        let first = (self.cap - off).min(src.len() as u64) as usize;
        // SAFETY: `off < cap` and `first <= cap - off`, and the rest,
        // `src.len() - first <= cap` (callers check the record fits), starts at 0:
        // both copies stay inside the data ring; the mutex excludes every other
        // access to these free bytes; `src` is ordinary memory, not the ring.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.as_ptr().add(off as usize), first);
            if first < src.len() {
                std::ptr::copy_nonoverlapping(src.as_ptr().add(first), self.data.as_ptr(), src.len() - first);
            }
        }
    }

    /// Copies from the ring at logical position `pos` into `dst` (mutex held).
    fn read_at(&self, pos: u64, dst: &mut [u8]) {
        let off = self.phys(pos);
        let first = (self.cap - off).min(dst.len() as u64) as usize;
        // SAFETY: as in `write_at`, with the roles swapped; the record's bytes
        // are committed and only this mutex holder reads them.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.as_ptr().add(off as usize), dst.as_mut_ptr(), first);
            if first < dst.len() {
                std::ptr::copy_nonoverlapping(
                    self.data.as_ptr(),
                    dst.as_mut_ptr().add(first),
                    dst.len() - first,
                );
            }
        }
    }

    /// Copies `len` bytes from the ring at logical position `pos` into a new
    /// vector, without zeroing it first (mutex held; `len <= cap`).
    fn read_vec(&self, pos: u64, len: usize) -> Vec<u8> {
        let mut v = Vec::<u8>::with_capacity(len);
        let off = self.phys(pos);
        let first = (self.cap - off).min(len as u64) as usize;
        // SAFETY: the ring side is as in `read_at` (`len <= cap`, checked by
        // the caller against the committed record); the vector has capacity
        // for `len` bytes, all of which the two copies initialise before
        // `set_len`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.as_ptr().add(off as usize), v.as_mut_ptr(), first);
            if first < len {
                std::ptr::copy_nonoverlapping(self.data.as_ptr(), v.as_mut_ptr().add(first), len - first);
            }
            v.set_len(len);
        }
        v
    }

    /// Appends a record, blocking as `block` says while the queue is full.
    pub(crate) fn put(&self, kind: u8, payload: &[u8], block: Block) -> Result<(), PutFail> {
        let len = payload.len() as u64;
        let rec = match align8(len.saturating_add(REC_HDR)) {
            Some(r) if len <= MAX_LEN && r <= self.cap => r,
            _ => {
                return Err(PutFail::TooLarge {
                    len,
                    max: self.max_payload(),
                })
            }
        };
        let h = self.h();
        loop {
            let g = self.lock(block.lock_deadline()).map_err(|e| match e {
                LockFail::WouldBlock => PutFail::Timeout,
                LockFail::Io(e) => PutFail::Io(e),
            })?;
            if self.is_closed() {
                return Err(PutFail::Closed);
            }
            let s = self.state();
            let used = s.tail - s.head;
            let room = self.max_items == 0 || s.count < self.max_items;
            if room && self.cap - used >= rec {
                self.write_word(s.tail, ((kind as u64) << 56) | len);
                self.write_at(s.tail + REC_HDR, payload);
                let joinable = u64::from(self.flavor == Flavor::Joinable);
                self.commit(Snap {
                    head: s.head,
                    tail: s.tail + rec,
                    count: s.count + 1,
                    unfinished: s.unfinished + joinable,
                });
                // Pages ahead of the writes are faulted in a few MiB at a time,
                // after unlocking (fresh memfd pages otherwise cost a fault each).
                let end = (self.phys(s.tail) + rec).min(self.cap).div_ceil(MIB);
                let frontier = u64::from(h.touched_mib.load(Relaxed));
                let mut populate = None;
                if end >= AHEAD && end + AHEAD / 2 > frontier {
                    // A queue that has grown past a few MiB: fault ahead.
                    let to = (end + AHEAD).min(self.cap / MIB).max(frontier);
                    h.touched_mib.store(to as u32, Relaxed);
                    populate = Some((frontier.max(end), to));
                } else if end > frontier {
                    h.touched_mib.store(end as u32, Relaxed);
                }
                Ring::notify(&h.not_empty);
                drop(g);
                if let Some((from, to)) = populate {
                    self.populate(from * MIB, to * MIB);
                }
                return Ok(());
            }
            let Block::Until(deadline) = block else {
                return Err(PutFail::Full);
            };
            let v = Ring::arm(&h.not_full);
            drop(g);
            match Ring::sleep(&h.not_full, v, deadline) {
                Ok(Wake::Retry) => {}
                Ok(Wake::TimedOut) => return Err(PutFail::Timeout),
                Err(e) => return Err(PutFail::Io(e)),
            }
        }
    }

    /// Takes the oldest record, blocking as `block` says while the queue is empty.
    /// Returns its kind and payload.
    pub(crate) fn get(&self, block: Block) -> Result<(u8, Payload), GetFail> {
        let h = self.h();
        loop {
            let g = self.lock(block.lock_deadline()).map_err(|e| match e {
                LockFail::WouldBlock => GetFail::Timeout,
                LockFail::Io(e) => GetFail::Io(e),
            })?;
            let s = self.state();
            if s.count > 0 {
                let word = self.read_word(s.head);
                let (kind, len) = ((word >> 56) as u8, word & MAX_LEN);
                let rec = align8(len + REC_HDR).unwrap_or(u64::MAX);
                if rec > s.tail - s.head {
                    // Corrupted by someone writing the segment outside the protocol.
                    self.commit(Snap {
                        head: 0,
                        tail: 0,
                        count: 0,
                        unfinished: s.unfinished,
                    });
                    Ring::notify(&h.not_full);
                    return Err(GetFail::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the queue's shared memory was corrupted; its items were discarded",
                    )));
                }
                let payload = if len as usize <= INLINE {
                    let mut b = [0u8; INLINE];
                    self.read_at(s.head + REC_HDR, &mut b[..len as usize]);
                    Payload::Inline(b, len as usize)
                } else {
                    Payload::Heap(self.read_vec(s.head + REC_HDR, len as usize))
                };
                let new = if s.count == 1 {
                    Snap {
                        head: 0,
                        tail: 0,
                        count: 0,
                        unfinished: s.unfinished,
                    }
                } else {
                    Snap {
                        head: s.head + rec,
                        tail: s.tail,
                        count: s.count - 1,
                        unfinished: s.unfinished,
                    }
                };
                self.commit(new);
                Ring::notify(&h.not_full);
                self.release(s.head, s.head + rec, new);
                drop(g);
                return Ok((kind, payload));
            }
            if self.is_closed() {
                return Err(GetFail::Closed);
            }
            let Block::Until(deadline) = block else {
                return Err(GetFail::Empty);
            };
            let v = Ring::arm(&h.not_empty);
            drop(g);
            match Ring::sleep(&h.not_empty, v, deadline) {
                Ok(Wake::Retry) => {}
                Ok(Wake::TimedOut) => return Err(GetFail::Timeout),
                Err(e) => return Err(GetFail::Io(e)),
            }
        }
    }

    /// Gives memory back after a get that freed the logical range
    /// `[from, to)` (mutex held; memfd rings only; the first `HOT` bytes stay):
    /// - the queue is now empty: everything written beyond `HOT` since it last
    ///   emptied, in one call;
    /// - at least a quarter full: nothing (the pages will be written again
    ///   within a lap; freeing them would only cost page faults);
    /// - else the chunks the range freed that hold no live data.
    fn release(&self, from: u64, to: u64, now: Snap) {
        let Backing::Shared(seg) = &self.backing else {
            return;
        };
        if self.cap <= HOT {
            return;
        }
        let fd = std::os::fd::AsFd::as_fd(seg.fd());
        let h = self.h();
        if now.count == 0 {
            let touched = (u64::from(h.touched_mib.load(Relaxed)) * MIB).min(self.cap);
            if touched > HOT {
                let _ = crate::sys::mem::punch_hole(fd, DATA_OFF as u64 + HOT, touched - HOT);
                h.touched_mib.store((HOT / MIB) as u32, Relaxed);
            }
            return;
        }
        if now.tail - now.head >= self.cap / 4 {
            return;
        }
        let live = |c: u64| -> bool {
            // Does chunk c (physical) intersect the live range [head, tail)?
            if now.count == 0 {
                return false;
            }
            let (cs, ce) = (c * CHUNK, ((c + 1) * CHUNK).min(self.cap));
            let (hp, used) = (self.phys(now.head), now.tail - now.head);
            let inter = |a: u64, b: u64| a < ce && cs < b;
            if hp + used <= self.cap {
                inter(hp, hp + used)
            } else {
                inter(hp, self.cap) || inter(0, hp + used - self.cap)
            }
        };
        let nchunks = self.cap.div_ceil(CHUNK);
        let start = self.phys(from);
        let first = start / CHUNK;
        let last = (start + (to - from).max(1) - 1) / CHUNK;
        for i in 0..(last - first + 1).min(nchunks) {
            let c = (first + i) % nchunks;
            if c * CHUNK < HOT || live(c) {
                continue;
            }
            let len = CHUNK.min(self.cap - c * CHUNK);
            let _ = crate::sys::mem::punch_hole(fd, DATA_OFF as u64 + c * CHUNK, len);
        }
    }

    /// Faults in the data pages `[from, to)` (offsets, MiB aligned) of a memfd
    /// ring. Only allocates memory; any process may be using those bytes.
    fn populate(&self, from: u64, to: u64) {
        if !matches!(self.backing, Backing::Shared(_)) || from >= to || to > self.cap {
            return;
        }
        // SAFETY: `from < to <= cap`, so the range is inside the data ring of
        // our live mapping; `DATA_OFF` and `from` are multiples of the page
        // size, and the mapping is page aligned.
        let _ = unsafe {
            crate::sys::mem::populate_write(self.data.as_ptr().add(from as usize), (to - from) as usize)
        };
    }

    /// Marks one task done (joinable rings). `Ok(false)` if there was none.
    pub(crate) fn task_done(&self) -> io::Result<bool> {
        let h = self.h();
        let g = self.lock(Deadline::NEVER).map_err(lock_io)?;
        let s = h.hot.state.load();
        if s.unfinished == 0 {
            return Ok(false);
        }
        self.commit(Snap {
            unfinished: s.unfinished - 1,
            ..s
        });
        if s.unfinished == 1 {
            Ring::notify(&h.all_done);
        }
        drop(g);
        Ok(true)
    }

    /// Waits until no task is unfinished. `Ok(false)` on timeout.
    pub(crate) fn join(&self, deadline: Deadline) -> io::Result<bool> {
        let h = self.h();
        loop {
            let g = match self.lock(deadline) {
                Ok(g) => g,
                Err(LockFail::WouldBlock) => return Ok(false),
                Err(LockFail::Io(e)) => return Err(e),
            };
            if h.hot.state.unfinished.load(SeqCst) == 0 {
                return Ok(true);
            }
            let v = Ring::arm(&h.all_done);
            drop(g);
            if Ring::sleep(&h.all_done, v, deadline)? == Wake::TimedOut {
                return Ok(h.hot.state.unfinished.load(SeqCst) == 0);
            }
        }
    }

    /// Closes the ring for every process: puts fail from now on, gets fail
    /// once the remaining items are taken. Wakes every sleeper.
    pub(crate) fn close(&self) {
        let h = self.h();
        h.closed.store(1, SeqCst);
        for w in [&h.not_empty, &h.not_full] {
            w.fetch_add(2, SeqCst);
            futex::wake_all(w);
        }
    }

    /// Memory the ring's pages use now (memfd rings; 0 for private ones).
    #[cfg(test)]
    pub(crate) fn allocated_bytes(&self) -> u64 {
        match &self.backing {
            Backing::Shared(s) => {
                crate::sys::mem::allocated_bytes(std::os::fd::AsFd::as_fd(s.fd())).unwrap_or(0)
            }
            Backing::Private(_) => 0,
        }
    }
}

fn lock_io(e: LockFail) -> io::Error {
    match e {
        LockFail::WouldBlock => io::Error::from(io::ErrorKind::WouldBlock),
        LockFail::Io(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rings(flavor: Flavor, max: u64, cap: u64) -> Vec<Ring> {
        vec![
            Ring::private(flavor, max, cap).unwrap(),
            Ring::create(flavor, max, cap).unwrap(),
        ]
    }

    #[test]
    fn fifo_with_wraparound_and_sizes() {
        for r in rings(Flavor::Queue, 0, 256) {
            for round in 0..50u64 {
                let items: Vec<Vec<u8>> = (0..3)
                    .map(|i| vec![(round + i) as u8; ((round * 7 + i * 13) % 70) as usize])
                    .collect();
                for it in &items {
                    r.put(1, it, Block::No).unwrap();
                }
                assert_eq!(r.len(), 3);
                for it in &items {
                    let (k, p) = r.get(Block::No).unwrap();
                    assert_eq!(k, 1);
                    assert_eq!(p.as_slice(), &it[..]);
                }
                assert!(matches!(r.get(Block::No), Err(GetFail::Empty)));
                // keep the positions away from 0 so records wrap
                r.put(0, &[9; 5], Block::No).unwrap();
                r.put(0, &[9; 5], Block::No).unwrap();
                r.get(Block::No).unwrap();
                let _ = r.get(Block::No).unwrap();
            }
        }
    }

    #[test]
    fn wraps_records_across_the_end() {
        let r = Ring::private(Flavor::Queue, 0, 128).unwrap();
        r.put(0, &[1; 40], Block::No).unwrap(); // 48 bytes
        r.put(0, &[2; 40], Block::No).unwrap(); // 96
        r.get(Block::No).unwrap(); // head 48
        r.put(0, &[3; 60], Block::No).unwrap(); // 72 bytes: 96..168 wraps at 128
        assert!(matches!(r.put(0, &[4; 1], Block::No), Err(PutFail::Full)));
        assert_eq!(r.get(Block::No).unwrap().1.as_slice(), &[2; 40]);
        assert_eq!(r.get(Block::No).unwrap().1.as_slice(), &[3; 60]);
    }

    #[test]
    fn item_limit_bytes_limit_and_too_large() {
        let r = Ring::private(Flavor::Queue, 2, 1024).unwrap();
        r.put(0, b"a", Block::No).unwrap();
        r.put(0, b"b", Block::No).unwrap();
        assert!(matches!(r.put(0, b"c", Block::No), Err(PutFail::Full)));
        let d = Deadline::after(Duration::from_millis(30));
        assert!(matches!(r.put(0, b"c", Block::Until(d)), Err(PutFail::Timeout)));
        assert!(matches!(
            r.put(0, &[0; 2000], Block::No),
            Err(PutFail::TooLarge { len: 2000, max: 1016 })
        ));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn threads_mpmc_every_item_once() {
        for r in rings(Flavor::Queue, 8, 4096) {
            let n = 5000u64;
            let mut seen = std::thread::scope(|s| {
                for p in 0..3u64 {
                    let r = r.clone();
                    s.spawn(move || {
                        for i in 0..n {
                            let v = p * n + i;
                            r.put(
                                0,
                                &v.to_le_bytes(),
                                Block::Until(Deadline::after(Duration::from_secs(20))),
                            )
                            .unwrap();
                        }
                    });
                }
                let hs: Vec<_> = (0..3)
                    .map(|_| {
                        let r = r.clone();
                        s.spawn(move || {
                            let mut got = Vec::new();
                            while let Ok((_, p)) =
                                r.get(Block::Until(Deadline::after(Duration::from_millis(500))))
                            {
                                got.push(u64::from_le_bytes(p.as_slice().try_into().unwrap()));
                            }
                            got
                        })
                    })
                    .collect();
                hs.into_iter().flat_map(|h| h.join().unwrap()).collect::<Vec<_>>()
            });
            seen.sort_unstable();
            assert_eq!(seen, (0..3 * n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn blocked_getter_wakes_on_put_and_close() {
        let r = Ring::private(Flavor::Queue, 0, 1024).unwrap();
        std::thread::scope(|s| {
            let r2 = r.clone();
            let h = s.spawn(move || {
                r2.get(Block::Until(Deadline::after(Duration::from_secs(10))))
                    .map(|x| x.1.into_vec())
            });
            std::thread::sleep(Duration::from_millis(50));
            r.put(0, b"hi", Block::No).unwrap();
            assert_eq!(h.join().unwrap().unwrap(), b"hi");
            let r2 = r.clone();
            let h = s.spawn(move || {
                r2.get(Block::Until(Deadline::after(Duration::from_secs(10))))
                    .map(|_| ())
            });
            std::thread::sleep(Duration::from_millis(50));
            r.close();
            assert!(matches!(h.join().unwrap(), Err(GetFail::Closed)));
        });
        assert!(matches!(r.put(0, b"x", Block::No), Err(PutFail::Closed)));
    }

    #[test]
    fn close_lets_getters_drain() {
        let r = Ring::private(Flavor::Queue, 0, 1024).unwrap();
        r.put(0, b"1", Block::No).unwrap();
        r.close();
        assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"1");
        assert!(matches!(r.get(Block::No), Err(GetFail::Closed)));
    }

    #[test]
    fn joinable_counts_tasks() {
        let r = Ring::private(Flavor::Joinable, 0, 1024).unwrap();
        assert!(r.join(Deadline::after(Duration::from_millis(10))).unwrap());
        r.put(0, b"a", Block::No).unwrap();
        r.put(0, b"b", Block::No).unwrap();
        assert!(!r.join(Deadline::after(Duration::from_millis(20))).unwrap());
        std::thread::scope(|s| {
            let r2 = r.clone();
            let h = s.spawn(move || r2.join(Deadline::after(Duration::from_secs(10))).unwrap());
            r.get(Block::No).unwrap();
            assert!(r.task_done().unwrap());
            r.get(Block::No).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            assert!(r.task_done().unwrap());
            assert!(h.join().unwrap());
        });
        assert!(!r.task_done().unwrap());
    }

    #[test]
    fn redo_log_is_rolled_forward_after_a_crash() {
        // Simulate a holder that died after filling `pending` but before copying it.
        let r = Ring::private(Flavor::Queue, 0, 1024).unwrap();
        r.put(0, b"one", Block::No).unwrap();
        let h = r.h();
        let s = h.hot.state.load();
        r.write_at(s.tail, &((3u64).to_le_bytes()));
        r.write_at(s.tail + 8, b"two");
        h.hot.pending.store(Snap {
            tail: s.tail + 16,
            count: 2,
            ..s
        });
        h.pending_valid.store(1, SeqCst);
        r.repair();
        assert_eq!(r.len(), 2);
        assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"one");
        assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"two");
    }

    #[test]
    fn a_holder_that_dies_mid_put_is_repaired() {
        // A thread that exits holding a robust mutex counts as a dead owner, as a
        // SIGKILLed process does: it dies with a record half-written, then with a
        // complete redo log not yet applied.
        for r in rings(Flavor::Joinable, 0, 1024) {
            r.put(0, b"first", Block::No).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| {
                    let h = r.h();
                    assert_eq!(h.lock.lock(Deadline::NEVER).unwrap(), Locked::Clean);
                    let st = h.hot.state.load();
                    r.write_at(st.tail, &[0xff; 8]); // a half-written record header
                });
            });
            assert_eq!(r.len(), 1);
            r.put(0, b"second", Block::No).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| {
                    let h = r.h();
                    assert_eq!(h.lock.lock(Deadline::NEVER).unwrap(), Locked::Clean);
                    let st = h.hot.state.load();
                    r.write_at(st.tail, &(5u64.to_le_bytes()));
                    r.write_at(st.tail + 8, b"third");
                    h.hot.pending.store(Snap {
                        tail: st.tail + 16,
                        count: st.count + 1,
                        unfinished: st.unfinished + 1,
                        ..st
                    });
                    h.pending_valid.store(1, SeqCst);
                });
            });
            // The redo log is applied by the next locker.
            assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"first");
            assert_eq!(r.len(), 2);
            assert_eq!(r.unfinished(), 3);
            assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"second");
            assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"third");
            assert!(matches!(r.get(Block::No), Err(GetFail::Empty)));
        }
    }

    #[test]
    fn a_garbled_state_is_reset_not_trusted() {
        let r = Ring::private(Flavor::Queue, 0, 1024).unwrap();
        r.put(0, b"x", Block::No).unwrap();
        let h = r.h();
        h.hot.state.head.store(500, Relaxed); // tail < head
        assert!(matches!(r.get(Block::No), Err(GetFail::Empty)));
        h.hot.state.tail.store(u64::MAX, Relaxed);
        h.hot.state.count.store(3, Relaxed);
        r.put(0, b"y", Block::No).unwrap();
        assert_eq!(r.len(), 1);
        // A record header claiming more than is queued.
        r.write_at(0, &(4000u64).to_le_bytes());
        assert!(matches!(r.get(Block::No), Err(GetFail::Io(_))));
        r.put(0, b"z", Block::No).unwrap();
        assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"z");
    }

    #[test]
    fn memory_is_returned_as_the_ring_cycles() {
        let r = Ring::create(Flavor::Queue, 0, 256 << 20).unwrap();
        let item = vec![7u8; 1 << 20];
        // Keep 4 items in flight so the queue never empties and the positions march.
        for _ in 0..4 {
            r.put(0, &item, Block::No).unwrap();
        }
        for _ in 0..600 {
            r.put(0, &item, Block::No).unwrap();
            r.get(Block::No).unwrap();
        }
        let used = r.allocated_bytes();
        assert!(
            used < 48 << 20,
            "{used} bytes still allocated after cycling 600 MiB through the ring"
        );
        assert!(used >= 4 << 20, "{used}: the live items must still be there");
    }

    #[test]
    fn memory_is_returned_when_a_backlog_drains() {
        let r = Ring::create(Flavor::Queue, 0, 256 << 20).unwrap();
        let item = vec![7u8; 1 << 20];
        for _ in 0..100 {
            r.put(0, &item, Block::No).unwrap();
        }
        assert!(r.allocated_bytes() >= 100 << 20);
        while r.get(Block::No).is_ok() {}
        let used = r.allocated_bytes();
        assert!(used <= 33 << 20, "{used} bytes still allocated once empty");
    }

    #[test]
    fn attach_checks_the_flavor() {
        let r = Ring::create(Flavor::Queue, 0, 1024).unwrap();
        let seg = r.segment().unwrap().clone();
        assert!(Ring::attach(seg.clone(), Flavor::Joinable).is_err());
        let r2 = Ring::attach(seg, Flavor::Queue).unwrap();
        r.put(0, b"x", Block::No).unwrap();
        assert_eq!(r2.get(Block::No).unwrap().1.as_slice(), b"x");
    }
}
