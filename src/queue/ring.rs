//! The shared-memory ring behind every queue: a byte ring of length-prefixed
//! records with two robust process-shared locks, one for the producers' side
//! and one for the consumers' side, and futex words to sleep on (not empty /
//! not full / all tasks done).
//!
//! # Layout
//!
//! | offset | what |
//! | --- | --- |
//! | 0 | [`Header`]: the producers' side, the consumers' side, the shared words, the geometry |
//! | [`DATA_OFF`] | the data ring, `cap` bytes (a multiple of 8) |
//!
//! A record is an 8-byte word `PUBLISHED | (kind << 56) | len` followed by
//! `len` payload bytes, padded to a multiple of 8. An item too long for one
//! record is a run of records, its pieces, marked in their kind byte
//! ([`Ring::put_streamed`], [`Ring::take_streamed`]). Positions are logical byte
//! offsets that only grow; position `p` lives at byte `(p - base) % cap` of
//! the data ring, and `base` moves up to the current position whenever a
//! consumer finds the queue empty far from the start, so that a queue that
//! keeps draining keeps reusing its first (warm, cached) pages.
//!
//! # Two sides
//!
//! Producers hold the producer lock and own `tail`, the count of puts and a
//! cached view of the consumers' progress; consumers hold the consumer lock
//! and own `head`, the count of takes and (joinable queues) of tasks done.
//! Neither side writes the other's cache lines, so one producer and one
//! consumer run in parallel as in a single-producer single-consumer ring: the
//! consumer learns that a record is there from its header word alone (a
//! release store, the last write of a put), and the word after the last
//! record is always 0 (a put writes the next zero word before it publishes
//! its own), so a zero word at `head` means "empty". A producer reads the
//! consumers' `head` and count of takes only when its cached copies say the
//! ring is full. `len` is `puts - takes`, read consistently. A put is
//! counted just after its header word is published, so a consumer may take
//! an item before it is counted: `len` is then 0, not -1, and the number of
//! items put, for `task_done` and `join`, is `max(puts, takes)` (every item
//! taken was put). Counting first would let a producer that dies between
//! the count and the publication leave a phantom item behind.
//!
//! # Crash safety
//!
//! Each side changes its state `(position, count)` through a one-entry redo
//! log: the old and new state are written to `pending`, `pending_valid` set,
//! the state written, `pending_valid` cleared. A process that dies holding a
//! side's lock leaves either the old state or a complete log, which the next
//! locker (told `OwnerDied` by the robust lock) applies:
//! - producers: the record is kept if its header word was published (the
//!   consumers may already see it), dropped otherwise (its bytes lie in free
//!   space and are ignored);
//! - consumers: the record was copied out before the log was written, so the
//!   log is rolled forward (the item is lost with the dead process: at most
//!   the one it was taking); a consumer that dies before leaves it queued.
//! - an item in pieces: each piece is committed like a record; a producer
//!   that dies before the last leaves its lock to be repaired by whoever
//!   takes it next, which appends an abort record; a consumer that dies
//!   leaves pieces that the next get drops.
//!
//! The repair also wakes every sleeper. A waiter never sleeps more than
//! [`RECHECK`] at a time, so a process killed between publishing and waking
//! costs the sleepers at most that delay, never a hang.
//!
//! # Sleeping
//!
//! Each futex word holds a sequence number (bits 1..) and a "sleepers" bit
//! (bit 0). A waiter sets the bit, re-checks its condition after a full fence
//! and sleeps while the word is unchanged; the other side, after a full fence
//! following its progress (on x86-64 the unlock's locked instruction is that
//! fence: [`fence_after_unlock`]), bumps the word and calls `FUTEX_WAKE` only
//! if the bit is set, so the fast path makes no syscall.
//!
//! # Safety
//!
//! A [`Ring`] holds a pointer to a [`Header`] and to `cap` data bytes inside a
//! mapping that it keeps alive (a [`Segment`] or a private allocation). The
//! contract that makes the accesses sound:
//! - The header is all-zero (a valid, unlocked state, locks included) and
//!   its geometry is written by [`Ring::create`] before the ring is shared; it
//!   is never moved.
//! - Every header field that changes after creation is an atomic or a lock;
//!   the geometry (`cap`, `max_items`, `flavor`) is read once at attach,
//!   validated against the mapping's length, and kept in the `Ring`, so a
//!   corrupted header can never make us read or write outside the mapping:
//!   every offset is reduced modulo the local `cap` and every length checked
//!   against it.
//! - Free data bytes are written only under the producer lock, record bytes
//!   read only under the consumer lock after their header word was observed
//!   (acquire) and before `head` moves past them (release).
//! - Memory is given back (`fallocate` punch) only for bytes that are free and
//!   that no producer can be writing: with both locks held; pages are faulted
//!   in ahead (`MADV_POPULATE_WRITE`) without them, which never changes their
//!   contents.
//!
//! # Memory
//!
//! Fresh memfd pages cost a page fault each in every process that touches
//! them, so the first `HOT` bytes stay resident once used, a queue that has
//! grown past `AHEAD` MiB faults its pages in a few MiB ahead of the writes,
//! and pages beyond `HOT` are given back when the queue empties, or chunk by
//! chunk behind the reads while it is less than a quarter full.
#![allow(unsafe_code)]

use std::borrow::Cow;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{fence, AtomicU32, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use crate::deadline::Deadline;
use crate::shm::segment::Segment;
use crate::sync::raw_mutex::{LockFail, Locked};
use crate::sync::robust_lock::RobustLock;
use crate::sys::futex::{self, Wake};

/// Where the data ring starts (the header fits in one page).
pub(crate) const DATA_OFF: usize = 4096;
/// "MPQUEUE1".
const MAGIC: u64 = u64::from_le_bytes(*b"MPQUEUE1");
/// Layout version.
const LAYOUT: u32 = 4;
/// Record header length (and the zero word that ends the records).
const REC_HDR: u64 = 8;
/// Set in every published record header word (so that it is never 0).
const PUBLISHED: u64 = 1 << 63;
/// Largest payload a record can describe.
const MAX_LEN: u64 = (1 << 56) - 1;
/// The caller's kind of a record (a [`crate::codec::Kind`]) is in the low bits
/// of its kind byte; the two above say whether it is a piece of an item
/// larger than the ring (see [`Ring::put_streamed`]).
const KIND_MASK: u8 = 0x1f;
/// Kind bit: more pieces of this item follow.
const MORE: u8 = 0x40;
/// Kind bit: this record continues an item begun by an earlier piece.
const CONT: u8 = 0x20;
/// The record (empty) that ends an item whose producer gave up or died
/// before its last piece: its pieces are dropped.
const ABORT: u8 = CONT | KIND_MASK;
/// `stream_cursor` once the consumer of an item in pieces gave up on it.
const ABANDONED: u64 = u64::MAX;
/// A consumer past its deadline gives up an item in pieces once no piece
/// came for this long (its producer is stopped, not just slow).
const STALL: Duration = Duration::from_secs(1);
/// Freed memory is returned to the system in chunks of this size...
const CHUNK: u64 = 4 << 20;
/// ...beyond the first `HOT` bytes, which stay resident.
const HOT: u64 = 32 << 20;
const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;
/// How far ahead of the writes pages are faulted in, in MiB.
const AHEAD: u64 = 8;
/// A consumer that finds the queue empty this far from `base` moves `base`
/// up, so the next records start again at the beginning of the ring.
const REWIND: u64 = 256 << 10;
/// How many times a consumer looks again at an empty queue before it sleeps
/// (about a microsecond).
const SPIN_EMPTY: u32 = 64;
/// The longest a waiter sleeps before it re-checks the queue by itself.
const RECHECK: Duration = Duration::from_millis(200);
/// Payloads up to this size are decoded in place, under the consumer lock;
/// longer ones are copied out and decoded after unlocking, so that consumers
/// decode in parallel.
const IN_PLACE: u64 = 4096;

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

/// One side's committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snap {
    /// `tail` (producers) or `head` (consumers).
    pos: u64,
    /// Puts (producers) or takes (consumers).
    count: u64,
}

/// One side of the ring: its lock, its state, the state's redo log, and
/// fields only this side's lock holder touches. 128-byte aligned, so that the
/// two sides never share a cache line (nor an adjacent-line prefetch pair).
#[repr(C, align(128))]
struct Side {
    lock: RobustLock,
    pos: AtomicU64,
    count: AtomicU64,
    pending_valid: AtomicU32,
    /// Producers: how far (in MiB from the ring's start) records were written
    /// since `base` last moved: what to give back then.
    touched_mib: AtomicU32,
    pending_old: AtomicU64,
    pending_pos: AtomicU64,
    pending_count: AtomicU64,
    /// Producers: the consumers' `head` as last read. Consumers: tasks done.
    seen_pos: AtomicU64,
    /// Producers: the consumers' takes as last read.
    seen_count: AtomicU64,
    /// Producers: while an item larger than the ring is being written in
    /// pieces, the count of puts it will make (it is counted with its last
    /// piece); 0 otherwise.
    streaming: AtomicU64,
    /// Producers: where that item's first piece starts.
    stream_from: AtomicU64,
    /// Producers: how many pieces of that item are published, or
    /// [`ABANDONED`] once its consumer gave up waiting for the next one (a
    /// compare-and-swap on both sides decides which came first).
    stream_cursor: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Side>() == 128);

impl Side {
    #[inline]
    fn load(&self) -> Snap {
        Snap {
            pos: self.pos.load(Relaxed),
            count: self.count.load(Relaxed),
        }
    }

    /// Writes the redo log: the state moves from position `old` to `new`
    /// (lock held). Release: the log is complete before it is marked valid,
    /// for whoever locks next (even after this process dies).
    #[inline]
    fn log(&self, old: u64, new: Snap) {
        self.pending_old.store(old, Relaxed);
        self.pending_pos.store(new.pos, Relaxed);
        self.pending_count.store(new.count, Relaxed);
        self.pending_valid.store(1, Release);
    }

    /// Makes `new` the state and clears the log (lock held; release: the
    /// state is complete before the log is cleared).
    #[inline]
    fn apply(&self, new: Snap) {
        self.pos.store(new.pos, Release);
        self.count.store(new.count, Release);
        self.pending_valid.store(0, Release);
    }

    /// The logged state (`pending_valid` set).
    fn logged(&self) -> (u64, Snap) {
        let new = Snap {
            pos: self.pending_pos.load(Relaxed),
            count: self.pending_count.load(Relaxed),
        };
        (self.pending_old.load(Relaxed), new)
    }

    /// Makes `new` this side's state, crash-atomically (lock held).
    #[inline]
    fn commit(&self, old: u64, new: Snap) {
        self.log(old, new);
        self.apply(new);
    }
}

/// Words both sides read on every operation and write rarely.
#[repr(C, align(128))]
struct Common {
    /// Logical position of data byte 0.
    base: AtomicU64,
    closed: AtomicU32,
    not_empty: AtomicU32,
    not_full: AtomicU32,
    all_done: AtomicU32,
}

/// The shared header.
#[repr(C, align(128))]
struct Header {
    prod: Side,
    cons: Side,
    common: Common,
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

/// Takes the record a consumer was decoding in place if the decoding panics
/// (dropped while unwinding, before the consumer lock's guard): the record
/// is consumed, not left at the head to panic every consumer in turn. On
/// the normal path it is forgotten, and `get_with` commits the take itself.
struct TakeOnUnwind<'a> {
    ring: &'a Ring,
    base: u64,
    from: u64,
    new: Snap,
}

impl Drop for TakeOnUnwind<'_> {
    #[cold]
    fn drop(&mut self) {
        let h = self.ring.h();
        h.cons.commit(self.from, self.new);
        self.ring.release(self.base, self.from, self.new.pos);
        // The producers wait for room, not for the consumer lock: they may
        // be woken before it is released.
        fence(SeqCst);
        Ring::notify(&h.common.not_full);
    }
}

/// Why a put failed.
#[derive(Debug)]
pub(crate) enum PutFail {
    Full,
    Timeout,
    Closed,
    Io(io::Error),
}

/// What a consumer waiting for the next piece of an item found.
enum Next {
    /// The next piece's header word.
    Piece(u64),
    /// The producer is gone and no record follows.
    Gone,
    /// We gave the item up (see [`Ring::next_piece`]).
    Abandoned,
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
// shared accesses go through atomics or under the process-shared locks.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

/// The full fence between a side's progress, made visible before its lock
/// was released, and the look for sleepers in [`Ring::notify`] (the other
/// half of [`Ring::arm`]'s fence).
///
/// On x86-64 the release of the lock just before is itself a full barrier:
/// `RobustLock::unlock` always ends the critical section with a locked
/// read-modify-write (the swap of the lock word, or the exchange of the
/// hand-off word), and reads are not reordered with locked instructions
/// (Intel SDM vol. 3A, "Memory Ordering in P6 and More Recent Processor
/// Families"). A second barrier would only cost (about 20 cycles on every put
/// and get), so there a compiler fence keeps the compiler from moving the
/// load up and the hardware does the rest. Elsewhere, a real fence. Were
/// this wrong, the price would be a late wake-up (a sleeper re-checks every
/// [`RECHECK`]), never a lost or duplicated item.
#[inline(always)]
fn fence_after_unlock() {
    #[cfg(target_arch = "x86_64")]
    std::sync::atomic::compiler_fence(SeqCst);
    #[cfg(not(target_arch = "x86_64"))]
    fence(SeqCst);
}

fn align8(n: u64) -> Option<u64> {
    n.checked_add(7).map(|n| n & !7)
}

/// A held lock; unlocks on drop.
struct Guard<'a>(&'a RobustLock);

impl Drop for Guard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.unlock_if_held();
    }
}

/// Whether a record fits (producer lock held).
enum Room {
    Fits,
    Full,
    /// The two sides' positions disagree: the shared memory was written
    /// outside the protocol.
    Corrupt,
}

/// `a - b` for two counters read consistently: `a` is read before and after
/// `b` until it did not move, so the difference held at the moment `b` was
/// read. Gives up (and answers from the last reads) after a few tries.
fn consistent_diff(a: &AtomicU64, b: &AtomicU64) -> u64 {
    let mut x = a.load(Acquire);
    for _ in 0..64 {
        let y = b.load(Acquire);
        let x2 = a.load(Acquire);
        if x2 == x {
            return x.saturating_sub(y);
        }
        x = x2;
    }
    x.saturating_sub(b.load(Acquire))
}

impl Ring {
    /// A new ring for `bytes` bytes of records (rounded up to 8) in a fresh
    /// memfd. `max_items == 0` means no item limit.
    pub(crate) fn create(flavor: Flavor, max_items: u64, bytes: u64) -> io::Result<Ring> {
        let cap = Ring::cap_for(bytes)?;
        let total = usize::try_from(cap)
            .ok()
            .and_then(|c| c.checked_add(DATA_OFF))
            .ok_or_else(|| io::Error::other("ring too large"))?;
        let seg = Segment::create("multiproc-queue", total)?;
        // SAFETY: the segment is fresh, zero-filled, at least `total` bytes,
        // page aligned, and not shared with anyone yet.
        unsafe { Ring::init(Backing::Shared(seg), flavor, max_items, cap) }
    }

    /// The data ring's size for a budget of `bytes`: one more word for the
    /// zero word that follows the last record.
    fn cap_for(bytes: u64) -> io::Result<u64> {
        align8(bytes.max(64))
            .and_then(|c| c.checked_add(REC_HDR))
            .ok_or_else(|| io::Error::other("ring too large"))
    }

    /// A new ring in ordinary memory (for tests over threads).
    #[cfg(test)]
    pub(crate) fn private(flavor: Flavor, max_items: u64, bytes: u64) -> io::Result<Ring> {
        let cap = Ring::cap_for(bytes)?;
        let total = DATA_OFF + cap as usize;
        let layout = std::alloc::Layout::from_size_align(total, 4096).map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::other("out of memory"))?;
        let mem = Arc::new(PrivateMem { ptr, layout });
        // SAFETY: fresh zeroed block of `total` bytes, aligned to 4096, unshared.
        unsafe { Ring::init(Backing::Private(mem), flavor, max_items, cap) }
    }

    fn base_of(backing: &Backing) -> (*mut u8, usize) {
        match backing {
            Backing::Shared(s) => (s.as_ptr(), s.len()),
            Backing::Private(m) => (m.ptr.as_ptr(), m.layout.size()),
        }
    }

    /// # Safety
    /// `backing` is zero-filled, at least `DATA_OFF + cap` bytes, page aligned,
    /// and used by no one else yet.
    unsafe fn init(backing: Backing, flavor: Flavor, max_items: u64, cap: u64) -> io::Result<Ring> {
        let (base, _) = Ring::base_of(&backing);
        // SAFETY: per the contract, the header is valid, aligned and unshared;
        // all-zero bytes are a valid `Header` (atomics and unlocked locks).
        let h = unsafe { &*base.cast::<Header>() };
        h.layout.store(LAYOUT, SeqCst);
        h.flavor.store(flavor as u32, SeqCst);
        h.cap.store(cap, SeqCst);
        h.max_items.store(max_items, SeqCst);
        h.magic.store(MAGIC, SeqCst);
        Ring::attach_backing(backing, Some(flavor))
    }

    /// Attaches to a ring received as a segment, checking that it is one of
    /// `flavor` and that its geometry fits the mapping.
    pub(crate) fn attach(seg: Segment, flavor: Flavor) -> io::Result<Ring> {
        Ring::attach_backing(Backing::Shared(seg), Some(flavor))
    }

    fn attach_backing(backing: Backing, want: Option<Flavor>) -> io::Result<Ring> {
        let (base, len) = Ring::base_of(&backing);
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        if len < DATA_OFF + 72 || (base as usize) % 4096 != 0 {
            return Err(bad(format!("a {len}-byte segment cannot hold a queue")));
        }
        // SAFETY: the mapping is at least DATA_OFF bytes and page aligned, so a
        // Header fits at its start; all its fields are atomics or locks.
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
        if cap % 8 != 0 || cap < 72 || cap > (len - DATA_OFF) as u64 {
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
        // lives as long as `backing`; shared fields are atomics or locks.
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

    /// The largest payload a single item can have in this ring: the ring less
    /// the record's header word and the zero word after it.
    #[inline]
    pub(crate) fn max_payload(&self) -> u64 {
        (self.cap - 2 * REC_HDR).min(MAX_LEN)
    }

    /// Items in the queue now: puts less takes, read consistently.
    pub(crate) fn len(&self) -> u64 {
        let h = self.h();
        consistent_diff(&h.prod.count, &h.cons.count)
    }

    /// Items put and not yet marked done (joinable rings): the larger of puts
    /// and takes, less tasks done, with `done` read before and after the
    /// others until it did not move.
    pub(crate) fn unfinished(&self) -> u64 {
        let h = self.h();
        let mut done = h.cons.seen_pos.load(Acquire);
        for _ in 0..64 {
            let takes = h.cons.count.load(Acquire);
            let puts = h.prod.count.load(Acquire);
            let again = h.cons.seen_pos.load(Acquire);
            if again == done {
                return puts.max(takes).saturating_sub(done);
            }
            done = again;
        }
        let put = h.prod.count.load(Acquire).max(h.cons.count.load(Acquire));
        put.saturating_sub(h.cons.seen_pos.load(Acquire))
    }

    /// True once `close` was called by any process.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.h().common.closed.load(SeqCst) != 0
    }

    /// Locks the producers' side, repairing it if its last owner died.
    #[inline]
    fn lock_prod(&self, deadline: Deadline) -> Result<Guard<'_>, LockFail> {
        let p = &self.h().prod;
        if p.lock.lock(deadline)? == Locked::OwnerDied {
            self.repair_prod();
        }
        Ok(Guard(&p.lock))
    }

    /// Locks the consumers' side, repairing it if its last owner died.
    #[inline]
    fn lock_cons(&self, deadline: Deadline) -> Result<Guard<'_>, LockFail> {
        let c = &self.h().cons;
        if c.lock.lock(deadline)? == Locked::OwnerDied {
            self.repair_cons();
        }
        Ok(Guard(&c.lock))
    }

    /// Called with the producer lock held after its owner died.
    #[cold]
    fn repair_prod(&self) {
        let h = self.h();
        let p = &h.prod;
        if p.pending_valid.load(Acquire) != 0 {
            let (old, new) = p.logged();
            let base = h.common.base.load(Acquire);
            if self.slot(base, old).load(Acquire) != 0 {
                // Published: the consumers may have it already. Keep it.
                p.apply(new);
            } else {
                // Never published: its bytes lie in free space, and the state
                // is still the old one (it is written after publishing).
                p.apply(Snap {
                    pos: old,
                    count: p.count.load(Acquire),
                });
            }
        }
        self.end_orphan_stream();
        Ring::wake_everyone(h);
    }

    /// Producer lock held, by a process other than the one that was writing
    /// an item in pieces (it died, or failed to end it): ends that item with
    /// an abort record if some of its pieces were published and not its
    /// last, so that its consumer drops them and goes on.
    #[cold]
    fn end_orphan_stream(&self) {
        let p = &self.h().prod;
        let count = p.streaming.load(Acquire);
        if count == 0 {
            return;
        }
        if p.count.load(Acquire) != count && p.pos.load(Acquire) != p.stream_from.load(Acquire) {
            self.write_abort();
        }
        p.streaming.store(0, Release);
    }

    /// Appends the record that ends an item given up in pieces (producer
    /// lock held, after at least one piece: each piece leaves room for it).
    #[cold]
    fn write_abort(&self) {
        let h = self.h();
        let p = &h.prod;
        let s = p.load();
        let base = h.common.base.load(Acquire);
        let new = Snap {
            pos: s.pos.wrapping_add(REC_HDR),
            count: s.count,
        };
        self.append(base, s, new, PUBLISHED | (u64::from(ABORT) << 56), || {}, || true);
        p.streaming.store(0, Release);
        fence(SeqCst);
        Ring::notify(&h.common.not_empty);
    }

    /// Called with the consumer lock held after its owner died.
    #[cold]
    fn repair_cons(&self) {
        let h = self.h();
        let c = &h.cons;
        if c.pending_valid.load(Acquire) != 0 {
            // The record was copied out before the log was written: the item
            // went with the dead process. Roll forward.
            c.apply(c.logged().1);
        }
        Ring::wake_everyone(h);
    }

    /// Wakes every sleeper, in case a dead process made progress and died
    /// before waking them.
    fn wake_everyone(h: &Header) {
        for w in [&h.common.not_empty, &h.common.not_full, &h.common.all_done] {
            w.fetch_add(2, SeqCst);
            futex::wake_all(w);
        }
    }

    /// Wakes the sleepers on `w` if any. The caller made its progress visible
    /// and then issued a full fence ([`fence_after_unlock`]).
    #[inline]
    fn notify(w: &AtomicU32) {
        if w.load(Relaxed) & 1 != 0 {
            Ring::wake_sleepers(w);
        }
    }

    #[cold]
    fn wake_sleepers(w: &AtomicU32) {
        let _ = w.fetch_update(SeqCst, SeqCst, |v| Some((v & !1).wrapping_add(2)));
        futex::wake_all(w);
    }

    /// Announces a sleeper on `w`; returns the value to wait on. The caller
    /// then re-checks its condition before sleeping.
    fn arm(w: &AtomicU32) -> u32 {
        let v = w.fetch_or(1, SeqCst) | 1;
        fence(SeqCst);
        v
    }

    /// Sleeps on `w` while it holds `v`, at most until `deadline` and at most
    /// [`RECHECK`]. `Ok(true)` once the deadline has passed.
    fn sleep(w: &AtomicU32, v: u32, deadline: Deadline) -> io::Result<bool> {
        let nap = match deadline.remaining() {
            Some(left) if left < RECHECK => deadline,
            _ => Deadline::after(RECHECK),
        };
        match futex::wait(w, v, nap)? {
            Wake::Retry => Ok(false),
            Wake::TimedOut => Ok(deadline.passed()),
        }
    }

    /// The offset in the data ring of logical position `pos` (`pos - base`
    /// stays below `cap` unless the queue laps without ever emptying, so the
    /// division is rare). Always `< cap`, whatever the inputs.
    fn phys(&self, base: u64, pos: u64) -> u64 {
        let off = pos.wrapping_sub(base);
        if off < self.cap {
            off
        } else {
            off % self.cap
        }
    }

    /// The record header word at logical position `pos`.
    fn slot(&self, base: u64, pos: u64) -> &AtomicU64 {
        // Positions are record starts: multiples of 8 apart from `base`.
        let off = self.phys(base, pos) & !7;
        // SAFETY: `off` is a multiple of 8 below `cap`, itself a multiple of 8:
        // the 8 bytes are inside the data ring, which starts on a page, so the
        // pointer is aligned for an AtomicU64; the ring outlives `&self`.
        unsafe { &*self.data.as_ptr().add(off as usize).cast::<AtomicU64>() }
    }

    /// Copies `src` into the ring at logical position `pos` (producer lock held).
    fn write_at(&self, base: u64, pos: u64, src: &[u8]) {
        let off = self.phys(base, pos);
        let first = (self.cap - off).min(src.len() as u64) as usize;
        // SAFETY: `off < cap` and `first <= cap - off`, and the rest,
        // `src.len() - first <= cap` (callers check the record fits), starts at 0:
        // both copies stay inside the data ring; these bytes are free space,
        // which only the producer lock holder writes and no one reads (so a
        // `&mut` slice over them aliases nothing); `src` is ordinary memory,
        // not the ring.
        unsafe {
            let dst = self.data.as_ptr().add(off as usize);
            if first == src.len() {
                // Short items (most encoded values): no call into memcpy.
                crate::codec::stack::copy_short(std::slice::from_raw_parts_mut(dst, first), src);
                return;
            }
            std::ptr::copy_nonoverlapping(src.as_ptr(), dst, first);
            if first < src.len() {
                std::ptr::copy_nonoverlapping(src.as_ptr().add(first), self.data.as_ptr(), src.len() - first);
            }
        }
    }

    /// Copies `len` bytes from the ring at logical position `pos` into a new
    /// vector, without zeroing it first (consumer lock held, after the
    /// record's header word was seen; `len <= cap`).
    fn read_vec(&self, base: u64, pos: u64, len: usize) -> Vec<u8> {
        let mut v = Vec::<u8>::with_capacity(len);
        self.read_into(base, pos, len, &mut v);
        v
    }

    /// Appends `len` bytes from the ring at logical position `pos` to `v`
    /// (as [`Ring::read_vec`]).
    fn read_into(&self, base: u64, pos: u64, len: usize, v: &mut Vec<u8>) {
        v.reserve(len);
        let off = self.phys(base, pos);
        let first = (self.cap - off).min(len as u64) as usize;
        // SAFETY: `off < cap` and `first <= cap - off`, and the rest,
        // `len - first <= cap` (checked by the caller), starts at 0: both
        // copies stay inside the data ring; the record's bytes were published
        // (acquire) and stay until `head` moves past them; the vector has
        // room for `len` more bytes, all of which the two copies initialise
        // before `set_len`.
        unsafe {
            let dst = v.as_mut_ptr().add(v.len());
            std::ptr::copy_nonoverlapping(self.data.as_ptr().add(off as usize), dst, first);
            if first < len {
                std::ptr::copy_nonoverlapping(self.data.as_ptr(), dst.add(first), len - first);
            }
            v.set_len(v.len() + len);
        }
    }

    /// Whether `rec` more bytes and one more item fit (producer lock held).
    /// Reads the consumers' side only when the cached view says no.
    #[inline]
    fn room(&self, s: Snap, rec: u64) -> Room {
        let h = self.h();
        let p = &h.prod;
        if self.max_items != 0 {
            let mut takes = p.seen_count.load(Relaxed);
            if s.count.wrapping_sub(takes) >= self.max_items {
                takes = h.cons.count.load(Acquire);
                p.seen_count.store(takes, Relaxed);
                if s.count.wrapping_sub(takes) >= self.max_items {
                    return Room::Full;
                }
            }
        }
        // The record and the zero word after it.
        let need = rec + REC_HDR;
        let fits = |head: u64| self.free(head, s.pos).map(|free| free >= need);
        if fits(p.seen_pos.load(Relaxed)) == Some(true) {
            return Room::Fits;
        }
        let head = h.cons.pos.load(Acquire);
        p.seen_pos.store(head, Relaxed);
        match fits(head) {
            Some(true) => Room::Fits,
            Some(false) => Room::Full,
            None => Room::Corrupt,
        }
    }

    /// Appends a record, blocking as `block` says while the queue is full.
    /// Inlined into the typed put (one per item type), as `get_with` is.
    #[inline(always)]
    pub(crate) fn put(&self, kind: u8, payload: &[u8], block: Block) -> Result<(), PutFail> {
        let len = payload.len() as u64;
        let rec = match align8(len.saturating_add(REC_HDR)) {
            Some(r) if len <= self.max_payload() && r + REC_HDR <= self.cap => r,
            _ => return self.put_streamed(kind, payload, block),
        };
        let h = self.h();
        let p = &h.prod;
        loop {
            let g = self.lock_prod(block.lock_deadline()).map_err(|e| match e {
                LockFail::WouldBlock => PutFail::Timeout,
                LockFail::Io(e) => PutFail::Io(e),
            })?;
            if self.is_closed() {
                return Err(PutFail::Closed);
            }
            let s = p.load();
            let mut room = self.room(s, rec);
            if let (Room::Full, Block::Until(deadline)) = (&room, block) {
                // Announce a sleeper, then look again (the consumers check
                // for sleepers after they make room).
                let v = Ring::arm(&h.common.not_full);
                room = self.room(s, rec);
                if let Room::Full = room {
                    drop(g);
                    match Ring::sleep(&h.common.not_full, v, deadline) {
                        Ok(false) => continue,
                        Ok(true) => return Err(PutFail::Timeout),
                        Err(e) => return Err(PutFail::Io(e)),
                    }
                }
            }
            match room {
                Room::Fits => {}
                Room::Full => return Err(PutFail::Full),
                Room::Corrupt => {
                    drop(g);
                    self.discard_all(false);
                    return Err(PutFail::Io(corrupted()));
                }
            }
            let base = h.common.base.load(Acquire);
            let off = self.phys(base, s.pos);
            let new = Snap {
                pos: s.pos.wrapping_add(rec),
                count: s.count.wrapping_add(1),
            };
            let word = PUBLISHED | (u64::from(kind & KIND_MASK) << 56) | len;
            // The zero word that ends the records, then the payload, then the
            // log, then the header word that publishes it all.
            if off + rec + REC_HDR <= self.cap {
                // The common case: the record and the zero word after it lie
                // in one piece, `off` to `off + rec + REC_HDR`.
                // SAFETY: that range is inside the data ring (`off + rec +
                // REC_HDR <= cap`), `off` and `rec` are multiples of 8 (so the
                // words are aligned), and it is free space, which only the
                // producer lock holder (us) writes and no consumer reads
                // before the header word is published.
                unsafe {
                    let at = self.data.as_ptr().add(off as usize);
                    (*at.add(rec as usize).cast::<AtomicU64>()).store(0, Relaxed);
                    crate::codec::stack::copy_short(
                        std::slice::from_raw_parts_mut(at.add(REC_HDR as usize), payload.len()),
                        payload,
                    );
                    p.log(s.pos, new);
                    (*at.cast::<AtomicU64>()).store(word, Release);
                }
                p.apply(new);
            } else {
                let fill = || self.write_at(base, s.pos.wrapping_add(REC_HDR), payload);
                self.append(base, s, new, word, fill, || true);
            }
            let populate = self.track_writes(p, off, rec);
            drop(g);
            fence_after_unlock();
            Ring::notify(&h.common.not_empty);
            if let Some((from, to)) = populate {
                self.populate(from * MIB, to * MIB);
            }
            return Ok(());
        }
    }

    /// Appends a record at the producers' position `s.pos` (producer lock
    /// held) in the order the crash repair relies on: the zero word that will
    /// end the records, the record's bytes (`fill`), the redo log; then, if
    /// `go` agrees, the header word that publishes it all and the new state
    /// `new`. If `go` refuses, the log is dropped and nothing was published.
    /// True if it published. (`put` inlines the same steps for a record that
    /// does not wrap.)
    fn append(
        &self,
        base: u64,
        s: Snap,
        new: Snap,
        word: u64,
        fill: impl FnOnce(),
        go: impl FnOnce() -> bool,
    ) -> bool {
        let p = &self.h().prod;
        self.slot(base, new.pos).store(0, Relaxed);
        fill();
        p.log(s.pos, new);
        if !go() {
            p.apply(s);
            return false;
        }
        self.slot(base, s.pos).store(word, Release);
        p.apply(new);
        true
    }

    /// Free bytes in the ring for the producers (producer lock held), from
    /// the consumers' `head` read now; `None` if the two sides disagree.
    fn free_bytes(&self, s: Snap) -> Option<u64> {
        let h = self.h();
        let head = h.cons.pos.load(Acquire);
        h.prod.seen_pos.store(head, Relaxed);
        self.free(head, s.pos)
    }

    /// Free bytes between the consumers' `head` and the producers' `tail`;
    /// `None` if they are further apart than the ring (they disagree).
    #[inline]
    fn free(&self, head: u64, tail: u64) -> Option<u64> {
        self.cap.checked_sub(tail.wrapping_sub(head))
    }

    /// Appends an item that cannot be one record (its encoding is longer than
    /// the ring's free space can ever be) as a run of pieces, holding the
    /// producer lock from the first to the last so that nothing comes in
    /// between, and waiting for the consumers to take each piece to make room
    /// for the next:
    /// - the first piece's payload starts with the item's length (8 bytes,
    ///   little-endian), its kind byte has `MORE`; the next ones have `CONT`
    ///   and `MORE`, the last only `CONT`; the item is counted (`len`, item
    ///   limit, tasks) with its last piece;
    /// - each piece leaves room after it for an [`ABORT`] record: written if
    ///   the put times out or the queue is closed before the last piece (the
    ///   item comes back to the caller), or by the next producer-lock holder
    ///   if this process dies meanwhile ([`Ring::end_orphan_stream`]);
    /// - `try_put` (no waiting) refuses such an item as `Full`: it can only
    ///   go through while consumers take its pieces;
    /// - a piece is published only if `stream_cursor` still counts the
    ///   pieces before it (compare-and-swap): a consumer that gave up
    ///   waiting has set it to [`ABANDONED`], and the producer then unwrites
    ///   the piece, ends the item with an abort record and starts it over.
    #[cold]
    #[inline(never)]
    fn put_streamed(&self, kind: u8, payload: &[u8], block: Block) -> Result<(), PutFail> {
        let Block::Until(deadline) = block else {
            return Err(PutFail::Full);
        };
        let h = self.h();
        let p = &h.prod;
        let g = self.lock_prod(deadline).map_err(|e| match e {
            LockFail::WouldBlock => PutFail::Timeout,
            LockFail::Io(e) => PutFail::Io(e),
        })?;
        let total = payload.len() as u64;
        // Pieces are at least a quarter of the ring (or the rest of the item).
        let piece = (self.cap / 4).max(64);
        let mut sent = 0u64;
        let mut pieces = 0u64;
        loop {
            let s = p.load();
            let lead = if sent == 0 { 8 } else { 0 };
            let left = total - sent;
            // Bytes of the item that fit in a piece now, if enough do.
            let fits = |s: Snap| -> Option<Option<u64>> {
                let free = self.free_bytes(s)?;
                let takes = h.cons.count.load(Acquire);
                if sent == 0 && self.max_items != 0 && s.count.wrapping_sub(takes) >= self.max_items {
                    return Some(None);
                }
                // The piece's header and lead, then room for the zero word
                // that ends the records and for an abort record.
                let room = free.saturating_sub(3 * REC_HDR + lead);
                Some((room >= left.min(piece)).then(|| left.min(room)))
            };
            let mut now = fits(s);
            if let Some(None) = now {
                if self.is_closed() {
                    return self.give_up_stream(sent, PutFail::Closed);
                }
                let v = Ring::arm(&h.common.not_full);
                now = fits(s);
                if let Some(None) = now {
                    match Ring::sleep(&h.common.not_full, v, deadline) {
                        Ok(false) => continue,
                        Ok(true) => return self.give_up_stream(sent, PutFail::Timeout),
                        Err(e) => return self.give_up_stream(sent, PutFail::Io(e)),
                    }
                }
            }
            let Some(Some(data)) = now else {
                drop(g);
                self.discard_all(false);
                return Err(PutFail::Io(corrupted()));
            };
            if self.is_closed() {
                return self.give_up_stream(sent, PutFail::Closed);
            }
            let last = data == left;
            let len = lead + data;
            let rec = REC_HDR + align8(len).unwrap_or(len);
            let base = h.common.base.load(Acquire);
            let new = Snap {
                pos: s.pos.wrapping_add(rec),
                count: s.count.wrapping_add(u64::from(last)),
            };
            let bits = (if sent == 0 { 0 } else { CONT }) | (if last { 0 } else { MORE });
            let word = PUBLISHED | (u64::from((kind & KIND_MASK) | bits) << 56) | len;
            let fill = || {
                if sent == 0 {
                    self.write_at(base, s.pos.wrapping_add(REC_HDR), &total.to_le_bytes());
                    p.stream_from.store(s.pos, Relaxed);
                    p.streaming.store(s.count.wrapping_add(1), Relaxed);
                    p.stream_cursor.store(0, SeqCst);
                }
                let part = &payload[sent as usize..(sent + data) as usize];
                self.write_at(base, s.pos.wrapping_add(REC_HDR + lead), part);
            };
            let counted = || {
                p.stream_cursor
                    .compare_exchange(pieces, pieces + 1, SeqCst, SeqCst)
                    .is_ok()
            };
            if !self.append(base, s, new, word, fill, counted) {
                // The consumer gave up waiting for this piece (we were stopped
                // for a while): end the item, and start it again.
                self.write_abort();
                (sent, pieces) = (0, 0);
                continue;
            }
            if last {
                p.streaming.store(0, Release);
            }
            let populate = self.track_writes(p, self.phys(base, s.pos), rec);
            fence(SeqCst);
            Ring::notify(&h.common.not_empty);
            if let Some((from, to)) = populate {
                self.populate(from * MIB, to * MIB);
            }
            sent += data;
            pieces += 1;
            if last {
                return Ok(());
            }
        }
    }

    /// A put of an item in pieces that stops before its last piece (producer
    /// lock held): ends the item with an abort record if a piece went out.
    #[cold]
    fn give_up_stream(&self, sent: u64, why: PutFail) -> Result<(), PutFail> {
        if sent > 0 {
            self.write_abort();
        }
        Err(why)
    }

    /// Records how far into the ring records were written since `base` last
    /// moved; past `AHEAD` MiB, returns the MiB range to fault in ahead of
    /// the writes, after unlocking (fresh memfd pages otherwise cost a fault
    /// each). Producer lock held.
    #[inline]
    fn track_writes(&self, p: &Side, off: u64, rec: u64) -> Option<(u64, u64)> {
        let end = (off + rec).min(self.cap);
        let frontier = u64::from(p.touched_mib.load(Relaxed));
        // Most puts: well behind the pages faulted in ahead, or inside the
        // frontier of a queue too short to fault ahead (what the test below
        // computes, in bytes rather than MiB).
        if end + AHEAD / 2 * MIB <= frontier * MIB || (end <= frontier * MIB && end <= (AHEAD - 1) * MIB) {
            return None;
        }
        self.track_writes_slow(p, end.div_ceil(MIB), frontier)
    }

    #[cold]
    fn track_writes_slow(&self, p: &Side, end: u64, frontier: u64) -> Option<(u64, u64)> {
        let cap_mib = (self.cap / MIB).min(u64::from(u32::MAX));
        if end >= AHEAD && end + AHEAD / 2 > frontier {
            let to = (end + AHEAD).min(cap_mib).max(frontier);
            p.touched_mib.store(to as u32, Relaxed);
            return Some((frontier.max(end), to));
        }
        if end > frontier {
            p.touched_mib.store(end.min(cap_mib.max(1)) as u32, Relaxed);
        }
        None
    }

    /// Takes the oldest record, blocking as `block` says while the queue is
    /// empty, and returns what `f` makes of its kind and payload. Short
    /// payloads are handed to `f` in place, in the ring, under the consumer
    /// lock (a panic in `f` still takes the record, then resumes); longer ones
    /// are copied out and handed over after unlocking.
    #[inline(always)]
    pub(crate) fn get_with<R>(
        &self,
        block: Block,
        f: impl FnOnce(u8, Cow<'_, [u8]>) -> R,
    ) -> Result<R, GetFail> {
        let h = self.h();
        let c = &h.cons;
        loop {
            let g = self.lock_cons(block.lock_deadline()).map_err(|e| match e {
                LockFail::WouldBlock => GetFail::Timeout,
                LockFail::Io(e) => GetFail::Io(e),
            })?;
            let s = c.load();
            let mut base = h.common.base.load(Acquire);
            let mut word = self.slot(base, s.pos).load(Acquire);
            if word == 0 {
                if self.is_closed() {
                    return Err(GetFail::Closed);
                }
                if s.pos.wrapping_sub(base) >= REWIND && self.try_rewind(s.pos) {
                    base = s.pos;
                }
                if let Block::No = block {
                    return Err(GetFail::Empty);
                }
                // A producer that is running publishes within a few hundred
                // nanoseconds: wait that long before the cost of a sleep and a
                // cross-CPU wake-up (which the producer pays too).
                for _ in 0..SPIN_EMPTY {
                    std::hint::spin_loop();
                    word = self.slot(base, s.pos).load(Acquire);
                    if word != 0 {
                        break;
                    }
                }
            }
            if word == 0 {
                let Block::Until(deadline) = block else {
                    return Err(GetFail::Empty);
                };
                // Announce a sleeper, then look again (the producers check
                // for sleepers after they publish).
                let v = Ring::arm(&h.common.not_empty);
                word = self.slot(base, s.pos).load(Acquire);
                if word == 0 {
                    drop(g);
                    match Ring::sleep(&h.common.not_empty, v, deadline) {
                        Ok(false) => continue,
                        Ok(true) => return Err(GetFail::Timeout),
                        Err(e) => return Err(GetFail::Io(e)),
                    }
                }
            }
            let (kind, len) = (((word >> 56) & 0x7f) as u8, word & MAX_LEN);
            if word & PUBLISHED == 0 || len > self.max_payload() {
                // Written by someone outside the protocol.
                self.discard_all(true);
                drop(g);
                return Err(GetFail::Io(corrupted()));
            }
            let rec = align8(len + REC_HDR).unwrap_or(u64::MAX);
            let new = Snap {
                pos: s.pos.wrapping_add(rec),
                count: s.count.wrapping_add(1),
            };
            let start = self.phys(base, s.pos.wrapping_add(REC_HDR));
            // One call of `f` for both cases, so that it inlines.
            let mut g = Some(g);
            let (kind, bytes, take) = if kind & (MORE | CONT) != 0 {
                match self.take_streamed(g.take(), word, block) {
                    Ok(Some((kind, v))) => (kind, Cow::Owned(v), None),
                    Ok(None) => continue,
                    Err(e) => return Err(e),
                }
            } else if len <= IN_PLACE && start + len <= self.cap {
                // SAFETY: `start + len <= cap`: the bytes are inside the data
                // ring; they were published (acquire above) and no producer
                // writes them before `head` moves past them (after `f`).
                let bytes = unsafe {
                    std::slice::from_raw_parts(self.data.as_ptr().add(start as usize), len as usize)
                };
                let take = TakeOnUnwind {
                    ring: self,
                    base,
                    from: s.pos,
                    new,
                };
                (kind, Cow::Borrowed(bytes), Some(take))
            } else {
                let v = self.read_vec(base, s.pos.wrapping_add(REC_HDR), len as usize);
                self.finish_get(base, s.pos, new, g.take());
                (kind, Cow::Owned(v), None)
            };
            let r = f(kind, bytes);
            if let Some(take) = take {
                std::mem::forget(take);
                self.finish_get(base, s.pos, new, g.take());
            }
            return Ok(r);
        }
    }

    /// Commits a take from `from` to `new` (consumer lock held, given as `g`),
    /// unlocks, and wakes the producers waiting for room.
    #[inline(always)]
    fn finish_get(&self, base: u64, from: u64, new: Snap, g: Option<Guard<'_>>) {
        let h = self.h();
        h.cons.commit(from, new);
        self.release(base, from, new.pos);
        drop(g);
        fence_after_unlock();
        Ring::notify(&h.common.not_full);
    }

    /// A get that found a piece of an item larger than the ring at `head`
    /// (consumer lock held, given as `g`; `word` is the piece's header):
    /// - a first piece: takes it and the following pieces as the producer
    ///   writes them, keeping the consumer lock, making room after each, and
    ///   waiting for the next past the get's deadline while pieces keep
    ///   coming (a taken piece cannot go back). Returns the item's kind and
    ///   bytes; or `None` after an abort record (the producer gave up or
    ///   died; its item came back to it or died with it), and the get goes
    ///   on to the next item; or the get's timeout once it gave the item up
    ///   to a stopped producer ([`Ring::next_piece`]);
    /// - a later piece or an abort with no first piece before it (its
    ///   consumer died taking it): drops it and returns `None`.
    ///
    /// While it waits for a piece, it checks every [`RECHECK`] that the
    /// producer lock is held: the producer holds it until its last piece, so
    /// a free (or abandoned) lock means it is gone, and the lock's holder
    /// (us, then) ends its item ([`Ring::end_orphan_stream`]).
    #[cold]
    #[inline(never)]
    fn take_streamed(
        &self,
        g: Option<Guard<'_>>,
        mut word: u64,
        block: Block,
    ) -> Result<Option<(u8, Vec<u8>)>, GetFail> {
        let h = self.h();
        let c = &h.cons;
        let mut item: Option<(u8, u64, Result<Vec<u8>, ()>)> = None;
        let mut taken = 0u64;
        loop {
            let s = c.load();
            let base = h.common.base.load(Acquire);
            let (kind, len) = (((word >> 56) & 0x7f) as u8, word & MAX_LEN);
            let rec = align8(len + REC_HDR).unwrap_or(u64::MAX);
            let last = kind & MORE == 0;
            let mut new = Snap {
                pos: s.pos.wrapping_add(rec),
                count: s.count,
            };
            let payload = s.pos.wrapping_add(REC_HDR);
            match &mut item {
                None if kind & CONT != 0 => {
                    // Left by a consumer that died taking its item: dropped
                    // (counted as taken with its last piece, as it was put).
                    if last && kind != ABORT {
                        new.count = new.count.wrapping_add(1);
                    }
                    self.finish_get(base, s.pos, new, g);
                    return Ok(None);
                }
                None => {
                    if len < 8 {
                        return self.corrupt_stream(g);
                    }
                    let head = self.read_vec(base, payload, 8);
                    let total = u64::from_le_bytes(head.try_into().unwrap_or([0; 8]));
                    if len - 8 > total {
                        return self.corrupt_stream(g);
                    }
                    let mut v = Vec::new();
                    let v = match usize::try_from(total).map(|t| v.try_reserve_exact(t)) {
                        Ok(Ok(())) => {
                            self.read_into(base, payload.wrapping_add(8), (len - 8) as usize, &mut v);
                            Ok(v)
                        }
                        _ => Err(()),
                    };
                    item = Some((kind & KIND_MASK, total, v));
                }
                Some(_) if kind == ABORT => {
                    self.finish_get(base, s.pos, new, g);
                    return Ok(None);
                }
                Some((k, total, v)) => {
                    if kind & CONT == 0 || kind & KIND_MASK != *k {
                        return self.corrupt_stream(g);
                    }
                    if let Ok(v) = v {
                        if v.len() as u64 + len > *total {
                            return self.corrupt_stream(g);
                        }
                        self.read_into(base, payload, len as usize, v);
                    }
                }
            }
            if last {
                new.count = new.count.wrapping_add(1);
            }
            taken += 1;
            c.commit(s.pos, new);
            self.release(base, s.pos, new.pos);
            // The producer waits for this room holding its lock, not ours.
            fence(SeqCst);
            Ring::notify(&h.common.not_full);
            if last {
                drop(g);
                let Some((kind, total, v)) = item else {
                    return Ok(None);
                };
                return match v {
                    Ok(v) if v.len() as u64 == total => Ok(Some((kind, v))),
                    Ok(_) => Err(GetFail::Io(corrupted())),
                    Err(()) => Err(GetFail::Io(io::Error::new(
                        io::ErrorKind::OutOfMemory,
                        format!(
                            "an item of {total} bytes does not fit in this process's memory; it was dropped"
                        ),
                    ))),
                };
            }
            word = match self.next_piece(h.common.base.load(Acquire), new.pos, taken, block)? {
                Next::Piece(w) if w & PUBLISHED != 0 && w & MAX_LEN <= self.max_payload() => w,
                Next::Piece(_) => return self.corrupt_stream(g),
                Next::Gone => {
                    // The producer is gone and left no end: the item is lost.
                    drop(g);
                    return Ok(None);
                }
                Next::Abandoned => {
                    // Its producer will start it again: nothing is lost.
                    drop(g);
                    return Err(match block {
                        Block::No => GetFail::Empty,
                        Block::Until(_) => GetFail::Timeout,
                    });
                }
            };
        }
    }

    /// Waits for the record at `pos` while the item's producer holds the
    /// producer lock (consumer lock held), having taken `taken` pieces:
    /// - [`Next::Gone`] if the lock is free or abandoned and no record came;
    /// - [`Next::Abandoned`] if the get's deadline has passed and no piece
    ///   came for [`STALL`], and the producer had not published the next one
    ///   when we gave up (`stream_cursor`): it starts the item again when it
    ///   runs again, so a stopped producer cannot hold a get forever.
    fn next_piece(&self, base: u64, pos: u64, taken: u64, block: Block) -> Result<Next, GetFail> {
        let h = self.h();
        let stall = Deadline::after(STALL);
        let deadline = match block {
            Block::No => Deadline::after(Duration::ZERO),
            Block::Until(d) => d,
        };
        let mut coming = false;
        loop {
            for _ in 0..SPIN_EMPTY {
                let w = self.slot(base, pos).load(Acquire);
                if w != 0 {
                    return Ok(Next::Piece(w));
                }
                std::hint::spin_loop();
            }
            match h.prod.lock.try_lock() {
                Ok(locked) => {
                    let _p = Guard(&h.prod.lock);
                    if locked == Locked::OwnerDied {
                        self.repair_prod();
                    } else {
                        self.end_orphan_stream();
                    }
                    let w = self.slot(base, pos).load(Acquire);
                    return Ok(if w != 0 { Next::Piece(w) } else { Next::Gone });
                }
                Err(LockFail::WouldBlock) => {
                    if !coming && deadline.passed() && stall.passed() {
                        let cursor = &h.prod.stream_cursor;
                        if cursor.compare_exchange(taken, ABANDONED, SeqCst, SeqCst).is_ok() {
                            return Ok(Next::Abandoned);
                        }
                        // The producer counted the next piece before it
                        // stopped: it will publish it (maybe as the last),
                        // so wait for it.
                        coming = true;
                    }
                    let v = Ring::arm(&h.common.not_empty);
                    if self.slot(base, pos).load(Acquire) == 0 {
                        // Wake up in time to give up, at the latest.
                        // (Never with no deadline, nor once the piece is coming.)
                        let give_up = match deadline.remaining() {
                            Some(left) if !coming => left.max(stall.remaining().unwrap_or(Duration::ZERO)),
                            _ => RECHECK,
                        };
                        let nap = Deadline::after(give_up.clamp(Duration::from_millis(1), RECHECK));
                        Ring::sleep(&h.common.not_empty, v, nap).map_err(GetFail::Io)?;
                    }
                }
                Err(LockFail::Io(e)) => return Err(GetFail::Io(e)),
            }
        }
    }

    /// A piece out of order: the shared memory was written outside the
    /// protocol.
    #[cold]
    fn corrupt_stream<R>(&self, g: Option<Guard<'_>>) -> Result<R, GetFail> {
        self.discard_all(true);
        drop(g);
        Err(GetFail::Io(corrupted()))
    }

    /// Takes the oldest record as `(kind, payload)` (tests).
    #[cfg(test)]
    pub(crate) fn get(&self, block: Block) -> Result<(u8, Vec<u8>), GetFail> {
        self.get_with(block, |k, b| (k, b.into_owned()))
    }

    /// After a get freed the logical range `[from, to)` (consumer lock held)
    /// and crossed a page:
    /// - the queue is empty and `to` is far from `base`: rewind it
    ///   ([`Ring::try_rewind`]);
    /// - else give back the chunks beyond `HOT` that the range left, if they
    ///   hold no live data and the queue is less than a quarter full (this
    ///   needs the producer lock too).
    ///
    /// Looking for emptiness here means reading the word at the new `head`,
    /// which a running producer may be writing: once per page consumed, not
    /// on every get. A get that finds the queue empty tries the rewind too.
    #[inline]
    fn release(&self, base: u64, from: u64, to: u64) {
        let (a, b) = (from.wrapping_sub(base), to.wrapping_sub(base));
        if b < self.cap && a / PAGE == b / PAGE {
            return; // the common case: no page (so no chunk) left behind
        }
        self.release_pages(base, from, to);
    }

    /// Called by a get that found the queue empty at `at`, `REWIND` or more
    /// past `base`, or emptied it crossing a page (consumer lock held): if
    /// the producer lock is free at once and the queue still empty, moves
    /// `base` to `at`, so that the next records start at the ring's first
    /// bytes again, and gives back everything written beyond `HOT` (memfd
    /// rings). True if it did.
    ///
    /// A queue whose consumers keep up finds itself empty often, so its
    /// records stay within the ring's first few MiB, whose pages are mapped
    /// in both processes already; trying only where a get crossed a page let
    /// a producer that stays a few items ahead push the records into fresh
    /// memory. Each attempt touches the producers' lock word, which a running
    /// producer then fetches back: a few times per `REWIND` bytes consumed.
    #[cold]
    fn try_rewind(&self, at: u64) -> bool {
        let h = self.h();
        let Ok(locked) = h.prod.lock.try_lock() else {
            return false;
        };
        if locked == Locked::OwnerDied {
            self.repair_prod();
        }
        let _g = Guard(&h.prod.lock);
        if h.prod.pos.load(Acquire) != at {
            return false;
        }
        // Empty, and no put can start while we hold both locks.
        self.slot(at, at).store(0, Relaxed);
        h.common.base.store(at, Release);
        self.give_back_beyond_hot();
        h.prod.touched_mib.store(0, Relaxed);
        true
    }

    /// [`release`](Ring::release) once a get left a page behind.
    #[cold]
    #[inline(never)]
    fn release_pages(&self, base: u64, from: u64, to: u64) {
        let h = self.h();
        let b = to.wrapping_sub(base);
        if b >= REWIND && self.slot(base, to).load(Acquire) == 0 {
            self.try_rewind(to);
            return;
        }
        let Backing::Shared(seg) = &self.backing else {
            return;
        };
        if self.cap <= HOT {
            return;
        }
        let (a, b) = (self.phys(base, from), self.phys(base, to));
        if a / CHUNK == b / CHUNK && to.wrapping_sub(from) < CHUNK {
            return; // no chunk left behind
        }
        // Never wait long for the producers' lock while holding the
        // consumers' one: a producer writing an item in pieces holds it
        // until consumers make room. Such a producer, or a busy lock, means
        // the pages are given back another time.
        if h.prod.streaming.load(Acquire) != 0 {
            return;
        }
        let Ok(_g) = self.lock_prod(Deadline::after(Duration::from_millis(1))) else {
            return;
        };
        let tail = h.prod.pos.load(Acquire);
        let used = tail.wrapping_sub(to);
        if used >= self.cap / 4 {
            return; // the pages will be written again within a lap
        }
        // Live: [to, tail] and the zero word after it.
        let (hp, live) = (b, used + REC_HDR);
        let is_live = |c: u64| -> bool {
            let (cs, ce) = (c * CHUNK, ((c + 1) * CHUNK).min(self.cap));
            let inter = |x: u64, y: u64| x < ce && cs < y;
            if hp + live <= self.cap {
                inter(hp, hp + live)
            } else {
                inter(hp, self.cap) || inter(0, hp + live - self.cap)
            }
        };
        let fd = std::os::fd::AsFd::as_fd(seg.fd());
        let nchunks = self.cap.div_ceil(CHUNK);
        let first = a / CHUNK;
        let last = (a + to.wrapping_sub(from).clamp(1, self.cap) - 1) / CHUNK;
        for i in 0..(last - first + 1).min(nchunks) {
            let c = (first + i) % nchunks;
            if c * CHUNK < HOT || is_live(c) {
                continue;
            }
            let len = CHUNK.min(self.cap - c * CHUNK);
            let _ = crate::sys::mem::punch_hole(fd, DATA_OFF as u64 + c * CHUNK, len);
        }
    }

    /// Gives back every page written beyond `HOT` since `base` last moved
    /// (both locks held, queue empty).
    fn give_back_beyond_hot(&self) {
        let Backing::Shared(seg) = &self.backing else {
            return;
        };
        let touched = (u64::from(self.h().prod.touched_mib.load(Relaxed)) * MIB).min(self.cap);
        if touched > HOT {
            let fd = std::os::fd::AsFd::as_fd(seg.fd());
            let _ = crate::sys::mem::punch_hole(fd, DATA_OFF as u64 + HOT, touched - HOT);
        }
    }

    /// Empties a ring whose shared memory was written outside the protocol,
    /// so that it is usable again (its items are lost). Takes the consumer
    /// lock unless `cons_held`, then the producer lock (always in that order).
    fn discard_all(&self, cons_held: bool) {
        let h = self.h();
        let _c = if cons_held {
            None
        } else {
            match self.lock_cons(Deadline::NEVER) {
                Ok(g) => Some(g),
                Err(_) => return,
            }
        };
        // A producer writing an item in pieces holds its lock until consumers
        // make room: with the consumer lock held, do not wait for it forever
        // (the next get or put that finds the corruption tries again).
        let Ok(_p) = self.lock_prod(Deadline::after(RECHECK)) else {
            return;
        };
        let at = h.prod.pos.load(Acquire).max(h.cons.pos.load(Acquire));
        self.slot(at, at).store(0, Relaxed);
        h.common.base.store(at, Release);
        h.prod.pos.store(at, Release);
        h.cons.pos.store(at, Release);
        h.prod.seen_pos.store(at, Relaxed);
        let puts = h.prod.count.load(Acquire);
        h.cons.count.store(puts, Release);
        // The discarded items will never be processed: not unfinished either.
        h.cons.seen_pos.store(puts, Release);
        h.prod.seen_count.store(puts, Relaxed);
        h.prod.streaming.store(0, Relaxed);
        self.give_back_beyond_hot();
        h.prod.touched_mib.store(0, Relaxed);
        Ring::wake_everyone(h);
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
        let g = self.lock_cons(Deadline::NEVER).map_err(lock_io)?;
        let done = h.cons.seen_pos.load(Relaxed);
        // Every item taken was put, even if its put is not counted yet.
        let puts = h.prod.count.load(Acquire).max(h.cons.count.load(Relaxed));
        let unfinished = puts.wrapping_sub(done);
        if unfinished == 0 || unfinished > u64::MAX / 2 {
            return Ok(false);
        }
        h.cons.seen_pos.store(done.wrapping_add(1), Release);
        drop(g);
        if unfinished == 1 {
            fence_after_unlock();
            Ring::notify(&h.common.all_done);
        }
        Ok(true)
    }

    /// Waits until no task is unfinished. `Ok(false)` on timeout.
    pub(crate) fn join(&self, deadline: Deadline) -> io::Result<bool> {
        let w = &self.h().common.all_done;
        loop {
            if self.unfinished() == 0 {
                return Ok(true);
            }
            let v = Ring::arm(w);
            if self.unfinished() == 0 {
                return Ok(true);
            }
            if Ring::sleep(w, v, deadline)? {
                return Ok(self.unfinished() == 0);
            }
        }
    }

    /// Closes the ring for every process: puts fail from now on, gets fail
    /// once the remaining items are taken. Wakes every sleeper.
    pub(crate) fn close(&self) {
        let h = self.h();
        h.common.closed.store(1, SeqCst);
        for w in [&h.common.not_empty, &h.common.not_full] {
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

fn corrupted() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the queue's shared memory was corrupted; its items were discarded",
    )
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
        // An item larger than the ring: `try_put` cannot wait for its pieces.
        assert!(matches!(r.put(0, &[0; 2000], Block::No), Err(PutFail::Full)));
        assert_eq!(r.len(), 2);
    }

    fn big(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    #[test]
    fn items_larger_than_the_ring_go_through_in_pieces() {
        for r in rings(Flavor::Joinable, 3, 1024) {
            let sizes = [5000usize, 10, 1009, 1010, 1 << 20, 0, 3000];
            std::thread::scope(|s| {
                s.spawn(|| {
                    for (i, n) in sizes.into_iter().enumerate() {
                        r.put(i as u8, &big(i as u8, n), Block::Until(Deadline::NEVER))
                            .unwrap();
                    }
                });
                for (i, n) in sizes.into_iter().enumerate() {
                    let (kind, v) = r
                        .get(Block::Until(Deadline::after(Duration::from_secs(30))))
                        .unwrap();
                    assert_eq!((kind, v.len()), (i as u8, n));
                    assert!(v == big(i as u8, n), "item {i} corrupted");
                }
            });
            assert_eq!((r.len(), r.unfinished()), (0, sizes.len() as u64));
            assert!(matches!(r.get(Block::No), Err(GetFail::Empty)));
        }
    }

    #[test]
    fn a_put_in_pieces_that_times_out_gives_its_item_back_and_leaves_nothing() {
        for r in rings(Flavor::Queue, 0, 256) {
            let d = Deadline::after(Duration::from_millis(50));
            assert!(matches!(
                r.put(1, &big(1, 4000), Block::Until(d)),
                Err(PutFail::Timeout)
            ));
            assert_eq!(r.len(), 0);
            // The pieces already out fill the ring until a get drops them
            // (and goes on: here, to find the queue empty).
            assert!(matches!(r.put(0, b"after", Block::No), Err(PutFail::Full)));
            assert!(matches!(r.get(Block::No), Err(GetFail::Empty)));
            r.put(0, b"after", Block::No).unwrap();
            assert_eq!(r.get(Block::No).unwrap(), (0, b"after".to_vec()));
            // A consumer that took the first pieces before the abort drops them too.
            std::thread::scope(|s| {
                let got = s.spawn(|| {
                    r.get(Block::Until(Deadline::after(Duration::from_secs(30))))
                        .unwrap()
                });
                let d = Deadline::after(Duration::from_millis(50));
                let stuck = r.put(2, &big(2, 1 << 20), Block::Until(d));
                // The getter took pieces as they came; with no one slowing it
                // the item may also have gone through whole.
                if stuck.is_err() {
                    let d = Deadline::after(Duration::from_secs(30));
                    r.put(0, b"next", Block::Until(d)).unwrap();
                    assert_eq!(got.join().unwrap(), (0, b"next".to_vec()));
                } else {
                    assert_eq!(got.join().unwrap(), (2, big(2, 1 << 20)));
                }
            });
            assert_eq!(r.len(), 0);
        }
    }

    #[test]
    fn a_producer_that_dies_mid_item_leaves_an_abort_for_its_consumer() {
        for r in rings(Flavor::Queue, 0, 512) {
            // The producer writes the first piece of an item of 5000 bytes by
            // hand, as `put_streamed` does, and dies holding its lock.
            die_holding_producer_lock(&r, |r, p, base| {
                let pos = p.pos.load(SeqCst);
                let count = p.count.load(SeqCst);
                let len = 8 + 100;
                r.slot(base, pos + 8 + 112).store(0, SeqCst);
                r.write_at(base, pos + 8, &5000u64.to_le_bytes());
                r.write_at(base, pos + 16, &[7; 100]);
                p.stream_from.store(pos, SeqCst);
                p.streaming.store(count + 1, SeqCst);
                let new = Snap {
                    pos: pos + 120,
                    count,
                };
                p.log(pos, new);
                r.slot(base, pos)
                    .store(PUBLISHED | (u64::from(MORE) << 56) | len, SeqCst);
                p.apply(new);
            });
            // The consumer takes the piece, finds the producer gone, ends the
            // item itself and goes on to wait for the next one.
            let d = Deadline::after(Duration::from_millis(300));
            assert!(matches!(r.get(Block::Until(d)), Err(GetFail::Timeout)));
            assert_eq!(r.len(), 0);
            r.put(0, b"ok", Block::No).unwrap();
            assert_eq!(r.get(Block::No).unwrap(), (0, b"ok".to_vec()));
            assert!(matches!(r.get(Block::No), Err(GetFail::Empty)));
        }
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

    /// Item `i` of producer `p`: its numbers, then a pattern; every fifth
    /// one longer than a 2 KiB ring, so that it goes in pieces.
    fn mixed_item(p: u64, i: u64) -> Vec<u8> {
        let len = if i % 5 == 0 {
            5000 + i as usize
        } else {
            16 + (i % 48) as usize
        };
        let mut v = big((p * 7 + i) as u8, len);
        v[..8].copy_from_slice(&p.to_le_bytes());
        v[8..16].copy_from_slice(&i.to_le_bytes());
        v
    }

    #[test]
    fn threads_mpmc_mixing_items_in_pieces_and_whole() {
        for r in rings(Flavor::Joinable, 4, 2048) {
            let n = 300u64;
            let per_consumer = std::thread::scope(|s| {
                for p in 0..3u64 {
                    let r = r.clone();
                    s.spawn(move || {
                        for i in 0..n {
                            let d = Deadline::after(Duration::from_secs(30));
                            r.put(0, &mixed_item(p, i), Block::Until(d)).unwrap();
                        }
                    });
                }
                let hs: Vec<_> = (0..3)
                    .map(|_| {
                        let r = r.clone();
                        s.spawn(move || {
                            let mut got = Vec::new();
                            let d = || Block::Until(Deadline::after(Duration::from_millis(1500)));
                            while let Ok((_, v)) = r.get(d()) {
                                let p = u64::from_le_bytes(v[..8].try_into().unwrap());
                                let i = u64::from_le_bytes(v[8..16].try_into().unwrap());
                                assert!(v == mixed_item(p, i), "item {i} of producer {p} corrupted");
                                got.push((p, i));
                            }
                            got
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
            });
            // FIFO: each consumer sees each producer's items in order.
            for got in &per_consumer {
                for p in 0..3 {
                    let mine: Vec<u64> = got.iter().filter(|x| x.0 == p).map(|x| x.1).collect();
                    assert!(mine.windows(2).all(|w| w[0] < w[1]), "producer {p} out of order");
                }
            }
            let mut all: Vec<(u64, u64)> = per_consumer.into_iter().flatten().collect();
            all.sort_unstable();
            let want: Vec<(u64, u64)> = (0..3).flat_map(|p| (0..n).map(move |i| (p, i))).collect();
            assert_eq!(all, want);
            assert_eq!((r.len(), r.unfinished()), (0, 3 * n));
        }
    }

    #[test]
    fn blocked_getter_wakes_on_put_and_close() {
        let r = Ring::private(Flavor::Queue, 0, 1024).unwrap();
        std::thread::scope(|s| {
            let r2 = r.clone();
            let h = s.spawn(move || {
                r2.get(Block::Until(Deadline::after(Duration::from_secs(10))))
                    .map(|x| x.1)
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

    /// Runs `f` in a thread that exits holding the producer lock (a thread
    /// that dies holding a robust lock counts as a dead owner, as a SIGKILLed
    /// process does).
    fn die_holding_producer_lock(r: &Ring, f: impl FnOnce(&Ring, &Side, u64) + Send) {
        std::thread::scope(|s| {
            s.spawn(|| {
                let h = r.h();
                assert_eq!(h.prod.lock.lock(Deadline::NEVER).unwrap(), Locked::Clean);
                f(r, &h.prod, h.common.base.load(SeqCst));
            });
        });
    }

    /// A put (of at most 8 bytes) that dies holding the producer lock after
    /// writing its record and its log, with its header word published or not.
    fn die_mid_put(r: &Ring, payload: &[u8], publish: bool) {
        die_holding_producer_lock(r, |r, p, base| {
            let pos = p.pos.load(SeqCst);
            r.slot(base, pos + 16).store(0, SeqCst);
            r.write_at(base, pos + 8, payload);
            p.log(
                pos,
                Snap {
                    pos: pos + 16,
                    count: p.count.load(SeqCst) + 1,
                },
            );
            if publish {
                r.slot(base, pos).store(PUBLISHED | payload.len() as u64, SeqCst);
            }
        });
    }

    #[test]
    fn a_producer_that_dies_mid_put_loses_nothing_else() {
        for r in rings(Flavor::Joinable, 0, 1024) {
            r.put(0, b"first", Block::No).unwrap();
            // Dies with a half-written record: nothing published.
            die_holding_producer_lock(&r, |r, p, base| {
                let pos = p.pos.load(SeqCst);
                r.write_at(base, pos + 8, b"garbage!");
            });
            assert_eq!(r.len(), 1);
            r.put(0, b"second", Block::No).unwrap();
            // Dies after writing the log, before publishing: dropped.
            die_mid_put(&r, b"lost", false);
            assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"first");
            r.put(0, b"third", Block::No).unwrap();
            // Dies after publishing, before moving `tail`: kept.
            die_mid_put(&r, b"fourth", true);
            assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"second");
            assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"third");
            // The next put repairs the producer side first.
            r.put(0, b"fifth", Block::No).unwrap();
            assert_eq!(r.len(), 2);
            assert_eq!(r.unfinished(), 5);
            assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"fourth");
            assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"fifth");
            assert!(matches!(r.get(Block::No), Err(GetFail::Empty)));
        }
    }

    #[test]
    fn an_item_published_by_a_producer_that_died_before_counting_it_is_whole() {
        // No put follows to repair the producer side: consumers, len,
        // task_done and join must still agree.
        for r in rings(Flavor::Joinable, 0, 1024) {
            r.put(0, b"one", Block::No).unwrap();
            die_mid_put(&r, b"two", true);
            assert_eq!(r.len(), 1, "counted once repaired, not before");
            for want in [&b"one"[..], b"two"] {
                assert_eq!(r.get(Block::No).unwrap().1, want);
                assert!(r.task_done().unwrap());
            }
            assert_eq!(r.len(), 0);
            assert!(r.join(Deadline::after(Duration::from_secs(1))).unwrap());
            assert!(!r.task_done().unwrap());
            assert!(matches!(r.get(Block::No), Err(GetFail::Empty)));
            r.put(0, b"three", Block::No).unwrap();
            assert_eq!(r.len(), 1);
            assert_eq!(r.unfinished(), 1);
            assert_eq!(r.get(Block::No).unwrap().1, b"three");
        }
    }

    #[test]
    fn a_consumer_that_dies_mid_get_takes_at_most_its_item() {
        for r in rings(Flavor::Queue, 0, 1024) {
            for it in [&b"a"[..], b"b", b"c"] {
                r.put(0, it, Block::No).unwrap();
            }
            // Dies while copying: the item stays.
            std::thread::scope(|s| {
                s.spawn(|| {
                    assert_eq!(r.h().cons.lock.lock(Deadline::NEVER).unwrap(), Locked::Clean);
                });
            });
            assert_eq!(r.len(), 3);
            assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"a");
            // Dies after writing the log: rolled forward, "b" is gone with it.
            std::thread::scope(|s| {
                s.spawn(|| {
                    let c = &r.h().cons;
                    assert_eq!(c.lock.lock(Deadline::NEVER).unwrap(), Locked::Clean);
                    let pos = c.pos.load(SeqCst);
                    c.log(
                        pos,
                        Snap {
                            pos: pos + 16,
                            count: c.count.load(SeqCst) + 1,
                        },
                    );
                });
            });
            assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"c");
            assert_eq!(r.len(), 0);
            assert!(matches!(r.get(Block::No), Err(GetFail::Empty)));
        }
    }

    #[test]
    fn a_garbled_state_is_discarded_not_trusted() {
        for r in rings(Flavor::Queue, 0, 1024) {
            r.put(0, b"x", Block::No).unwrap();
            let h = r.h();
            // `head` beyond `tail`: the positions disagree (seen once the
            // producer needs more room than its cached view promises).
            h.cons.pos.store(1 << 40, SeqCst);
            assert!(matches!(r.put(0, &[1; 1016], Block::No), Err(PutFail::Io(_))));
            assert_eq!(r.len(), 0);
            r.put(0, b"y", Block::No).unwrap();
            assert_eq!(r.len(), 1);
            assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"y");
            // A record header claiming more than the ring holds, then one
            // without the published bit.
            for bogus in [PUBLISHED | 4000, 3] {
                r.put(0, b"z", Block::No).unwrap();
                let base = h.common.base.load(SeqCst);
                r.slot(base, h.cons.pos.load(SeqCst)).store(bogus, SeqCst);
                assert!(matches!(r.get(Block::No), Err(GetFail::Io(_))));
                assert_eq!(r.len(), 0);
                r.put(0, b"w", Block::No).unwrap();
                assert_eq!(r.get(Block::No).unwrap().1.as_slice(), b"w");
            }
        }
    }

    #[test]
    fn a_get_that_finds_the_queue_empty_mid_page_rewinds_it() {
        let r = Ring::create(Flavor::Queue, 0, 64 << 20).unwrap();
        // 16-byte records, past REWIND, ending mid-page: the gets that cross
        // a page leave the queue not empty, the last one is mid-page.
        let n = REWIND / 16 + 10;
        for i in 0..n {
            r.put(0, &i.to_le_bytes(), Block::No).unwrap();
        }
        for i in 0..n {
            assert_eq!(r.get(Block::No).unwrap().1, i.to_le_bytes());
        }
        // The next get finds it empty.
        assert!(matches!(r.get(Block::No), Err(GetFail::Empty)));
        assert_eq!(r.h().common.base.load(SeqCst), n * 16);
        // The next records start again at the ring's first bytes.
        r.put(0, b"again", Block::No).unwrap();
        assert_eq!(
            r.phys(r.h().common.base.load(SeqCst), r.h().prod.pos.load(SeqCst)),
            16
        );
        assert_eq!(r.get(Block::No).unwrap().1, b"again");
    }

    #[test]
    fn a_draining_queue_keeps_reusing_its_first_pages() {
        let r = Ring::create(Flavor::Queue, 0, 64 << 20).unwrap();
        let item = vec![5u8; 1000];
        for _ in 0..20_000 {
            r.put(0, &item, Block::No).unwrap();
            assert_eq!(r.get(Block::No).unwrap().1.as_slice(), &item[..]);
        }
        // 20 MB went through; the records stayed within the first REWIND bytes.
        let used = r.allocated_bytes();
        assert!(used <= REWIND + 8192, "{used} bytes allocated");
        assert!(r.h().common.base.load(SeqCst) > 0);
    }

    /// Puts 0..n as 8-byte items, waiting for room.
    fn put_numbers(r: &Ring, n: u64) {
        for i in 0..n {
            r.put(0, &i.to_le_bytes(), Block::Until(Deadline::NEVER)).unwrap();
        }
    }

    #[test]
    fn counts_stay_exact_while_both_sides_run() {
        let r = Ring::private(Flavor::Queue, 0, 1 << 16).unwrap();
        let n = 20_000u64;
        std::thread::scope(|s| {
            let r2 = r.clone();
            s.spawn(move || put_numbers(&r2, n));
            let mut got = 0;
            while got < n {
                assert!(r.len() <= n - got, "len counts an item twice");
                if r.get(Block::No).is_ok() {
                    got += 1;
                }
            }
        });
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn task_done_right_after_get_never_outruns_the_put_count() {
        let r = Ring::private(Flavor::Joinable, 0, 1 << 16).unwrap();
        let n = 50_000u64;
        std::thread::scope(|s| {
            let r2 = r.clone();
            s.spawn(move || put_numbers(&r2, n));
            for _ in 0..n {
                r.get(Block::Until(Deadline::after(Duration::from_secs(20))))
                    .unwrap();
                assert!(r.task_done().unwrap(), "task_done refused for an item taken");
            }
        });
        assert!(r.join(Deadline::after(Duration::from_secs(1))).unwrap());
        assert!(!r.task_done().unwrap());
    }

    #[test]
    fn a_panic_while_decoding_in_place_takes_the_item_and_unlocks() {
        for r in rings(Flavor::Queue, 0, 1024) {
            r.put(0, b"poison", Block::No).unwrap();
            r.put(0, b"next", Block::No).unwrap();
            let hit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                r.get_with(Block::No, |_, bytes| -> () { panic!("bad item {bytes:?}") })
            }));
            assert!(hit.is_err());
            assert_eq!(r.len(), 1);
            assert_eq!(r.get(Block::No).unwrap().1, b"next");
        }
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
