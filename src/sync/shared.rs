//! The shared-memory slot every synchronization primitive (and `Value`/`Array`)
//! lives in, plus the small helpers their algorithms share.
//!
//! A [`Shared<L>`] is a [`Segment`] (a mapped memfd) whose first bytes hold a
//! `#[repr(C)]` [`Slot`]: a magic number naming the layout, the offset and
//! length of an optional data area, and the layout `L` itself. Cloning shares
//! the mapping; serializing sends the memfd, and the receiver maps the same
//! pages and checks the magic, so a handle decoded as the wrong type is a clear
//! error rather than a misread.
//!
//! # Safety
//! - `L: SharedLayout` promises that `L` is made only of atomics, `RobustLock`s
//!   and other `Sync` interior-mutable cells, so `&L` may be handed out while
//!   other threads and processes use the same memory.
//! - [`Shared::create`] initialises the slot in place, at its final address,
//!   before the magic is published with `Release`; [`Shared::attach`] reads the
//!   magic with `Acquire` and checks that the segment is long enough for the slot
//!   and its data area before any reference is formed.
//! - The mapping lives as long as the `Segment` inside the `Shared`, so
//!   references returned by [`Shared::get`] never outlive it. When the last
//!   handle in this process goes away while one of its threads still holds a
//!   lock inside (a forgotten guard), the mapping is leaked instead of
//!   unmapped, because that lock is linked on the thread's robust list.
//! - The mapping is page aligned, and `L`'s alignment is checked against the
//!   page size at compile time of each use.
#![allow(unsafe_code)]

use std::io;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::deadline::Deadline;
use crate::shm::segment::Segment;
use crate::sys::futex::{self, Wake};

/// A `#[repr(C)]` layout that can live in shared memory.
///
/// # Safety
/// Implementors contain only atomics, `RobustLock`s and other cells that are
/// `Sync` and sound to share between threads and processes, and are fully
/// initialised by the `init` function given to [`Shared::create`].
pub(crate) unsafe trait SharedLayout: Sync + Sized {
    /// Identifies the layout (and its version) in the slot header.
    const MAGIC: u64;

    /// True when a thread of this process holds a lock inside the layout (so
    /// the mapping must not be unmapped: the lock is on that thread's robust
    /// list). Called only when the last handle in this process goes away.
    fn held_in_this_process(&self) -> bool {
        false
    }
}

/// The header at the start of every segment, followed by the layout.
#[repr(C)]
struct Slot<L> {
    magic: AtomicU64,
    /// Byte offset of the data area from the start of the segment.
    data_off: AtomicU64,
    /// Length in bytes of the data area.
    data_len: AtomicU64,
    body: L,
}

const PAGE: usize = 4096;

/// A layout `L` in a shared segment, with an optional data area after it.
pub(crate) struct Shared<L: SharedLayout> {
    inner: Arc<Inner<L>>,
    /// The layout inside `inner`'s mapping (cached: the lock fast paths
    /// should not chase three pointers).
    body: NonNull<L>,
}

// SAFETY: `body` points into the mapping kept alive by `inner` (Send + Sync);
// `L: SharedLayout` is `Sync`, and only `&L` is ever handed out.
unsafe impl<L: SharedLayout> Send for Shared<L> {}
// SAFETY: as above.
unsafe impl<L: SharedLayout> Sync for Shared<L> {}

struct Inner<L: SharedLayout> {
    seg: Segment,
    data_off: usize,
    data_len: usize,
    _layout: PhantomData<fn() -> L>,
}

impl<L: SharedLayout> Drop for Inner<L> {
    fn drop(&mut self) {
        // SAFETY: as in `Shared::get`: the slot is initialised and mapped.
        let body = unsafe { &(*self.seg.as_ptr().cast::<Slot<L>>()).body };
        if body.held_in_this_process() {
            // A forgotten guard: the lock is still on a thread's robust list,
            // which points into this mapping. Keep the mapping forever.
            std::mem::forget(self.seg.clone());
        }
    }
}

impl<L: SharedLayout> Clone for Shared<L> {
    fn clone(&self) -> Self {
        Shared {
            inner: self.inner.clone(),
            body: self.body,
        }
    }
}

impl<L: SharedLayout> std::fmt::Debug for Shared<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("len", &self.inner.seg.len())
            .finish()
    }
}

impl<L: SharedLayout> Shared<L> {
    fn wrap(seg: Segment, data_off: usize, data_len: usize) -> Self {
        // SAFETY: the caller checked the segment holds a `Slot<L>`; the
        // mapping is never null.
        let body =
            unsafe { NonNull::new_unchecked(std::ptr::addr_of_mut!((*seg.as_ptr().cast::<Slot<L>>()).body)) };
        Shared {
            body,
            inner: Arc::new(Inner {
                seg,
                data_off,
                data_len,
                _layout: PhantomData,
            }),
        }
    }
}

fn round_up(x: usize, align: usize) -> Option<usize> {
    x.checked_add(align - 1).map(|v| v / align * align)
}

impl<L: SharedLayout> Shared<L> {
    /// Creates a segment named `name` (visible in `/proc/<pid>/fd` only) holding
    /// `L`, initialised in place by `init`, and a zeroed data area of `data_len`
    /// bytes aligned to `data_align` (a power of two, at most a page).
    pub(crate) fn create(
        name: &str,
        data_len: usize,
        data_align: usize,
        init: impl FnOnce(*mut L) -> io::Result<()>,
    ) -> io::Result<Self> {
        const { assert!(align_of::<Slot<L>>() <= PAGE) };
        if !data_align.is_power_of_two() || data_align > PAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("alignment {data_align} is not supported in shared memory (at most {PAGE})"),
            ));
        }
        let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "shared data area too large");
        let data_off = round_up(size_of::<Slot<L>>(), data_align).ok_or_else(too_big)?;
        let total = data_off.checked_add(data_len).ok_or_else(too_big)?;
        if isize::try_from(total).is_err() {
            return Err(too_big());
        }
        let seg = Segment::create(name, total)?;
        let slot = seg.as_ptr().cast::<Slot<L>>();
        // SAFETY: the segment is fresh, zero-filled, at least `size_of::<Slot<L>>()`
        // bytes long, page aligned (so aligned for `Slot<L>`), and not yet shared
        // with anyone: writing its header and initialising `L` in place is sound.
        unsafe {
            std::ptr::addr_of_mut!((*slot).data_off).write(AtomicU64::new(data_off as u64));
            std::ptr::addr_of_mut!((*slot).data_len).write(AtomicU64::new(data_len as u64));
            init(std::ptr::addr_of_mut!((*slot).body))?;
            std::ptr::addr_of_mut!((*slot).magic).write(AtomicU64::new(0));
            (*slot).magic.store(L::MAGIC, Ordering::Release);
        }
        Ok(Shared::wrap(seg, data_off, data_len))
    }

    /// Creates a segment holding `value` (for layouts that need no in-place
    /// initialisation, e.g. atomics only) and no data area.
    pub(crate) fn create_value(name: &str, value: L) -> io::Result<Self> {
        Shared::create(name, 0, 1, |p: *mut L| {
            // SAFETY: `create` hands over valid, aligned, unshared memory for an `L`.
            unsafe { p.write(value) };
            Ok(())
        })
    }

    /// Takes a segment received from elsewhere, checking that it holds an `L`.
    pub(crate) fn attach(seg: Segment) -> io::Result<Self> {
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "shared memory received is not a {}: {what}",
                    std::any::type_name::<L>()
                ),
            )
        };
        if seg.len() < size_of::<Slot<L>>() {
            return Err(bad("segment too short"));
        }
        let slot = seg.as_ptr().cast::<Slot<L>>();
        // SAFETY: the segment is page aligned and long enough for the header;
        // the header fields are atomics, valid for any bit pattern.
        let (magic, off, len) = unsafe {
            (
                (*slot).magic.load(Ordering::Acquire),
                (*slot).data_off.load(Ordering::Relaxed),
                (*slot).data_len.load(Ordering::Relaxed),
            )
        };
        if magic != L::MAGIC {
            return Err(bad("wrong type tag"));
        }
        let (off, len) = (usize::try_from(off).ok(), usize::try_from(len).ok());
        let (Some(off), Some(len)) = (off, len) else {
            return Err(bad("data area out of range"));
        };
        if off < size_of::<Slot<L>>() || off.checked_add(len).is_none_or(|end| end > seg.len()) {
            return Err(bad("data area out of range"));
        }
        Ok(Shared::wrap(seg, off, len))
    }

    /// The layout.
    pub(crate) fn get(&self) -> &L {
        // SAFETY: `create`/`attach` checked the segment holds an initialised
        // `Slot<L>` (magic published after init); `L: SharedLayout` is made of
        // cells that are sound to share; the mapping outlives `&self`.
        unsafe { self.body.as_ref() }
    }

    /// The data area: its first byte (aligned as asked at creation) and length.
    pub(crate) fn data(&self) -> (*mut u8, usize) {
        let i = &self.inner;
        // SAFETY: `data_off + data_len <= seg.len()` was checked, so the
        // pointer stays within the mapping.
        (unsafe { i.seg.as_ptr().add(i.data_off) }, i.data_len)
    }

    /// True when both handles refer to the same shared object.
    pub(crate) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.seg.as_ptr() == other.inner.seg.as_ptr()
    }
}

impl<L: SharedLayout> Serialize for Shared<L> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.seg.serialize(s)
    }
}

impl<'de, L: SharedLayout> Deserialize<'de> for Shared<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let seg = Segment::deserialize(d)?;
        Shared::attach(seg).map_err(|e| crate::codec::handles::fail(e.to_string(), serde::de::Error::custom))
    }
}

/// Sleeps on a shared futex word while it holds `expected`, at most until
/// `deadline`. Returns `true` once the deadline has passed. Spurious returns
/// happen: callers re-check their condition. An unexpected futex error (none
/// is possible on a valid mapping) degrades to a short sleep, never a busy loop.
pub(crate) fn sleep(word: &AtomicU32, expected: u32, deadline: Deadline) -> bool {
    match futex::wait(word, expected, deadline) {
        Ok(Wake::Retry) => false,
        Ok(Wake::TimedOut) => true,
        Err(_) => {
            let nap = Duration::from_millis(1);
            std::thread::sleep(deadline.remaining().map_or(nap, |r| r.min(nap)));
            deadline.passed()
        }
    }
}

/// A 64-bit tag from a short name, for [`SharedLayout::MAGIC`].
pub(crate) const fn magic(name: &str) -> u64 {
    // FNV-1a.
    let b = name.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}
