//! The engine behind `Value<T>` and `Array<T>`: a robust lock and `len`
//! plain-old-data values in one shared segment.
//!
//! # Safety
//! - The header's [`RobustLock`] is initialised in place by [`Shared::create`]
//!   before the segment is shared, and never moved.
//! - The data area holds `len` values of `T: bytemuck::Pod`, so every bit
//!   pattern (including the zero-filled fresh segment and anything another
//!   process wrote) is a valid `T`. Its alignment and length are checked when a
//!   handle is created or received ([`PodBlock::from_shared`]).
//! - The data is only read or written through a [`PodGuard`], which exists only
//!   while the calling thread holds the robust mutex: every access in any
//!   process is serialised by that mutex (whose lock/unlock are acquire/release
//!   barriers), so no two accesses race. The guard is `!Send` so the unlock
//!   happens on the locking thread.
#![allow(unsafe_code)]

use std::io;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sync::error::{lock_raw, LockError, Wait};
use crate::sync::robust_lock::RobustLock;
use crate::sync::shared::{magic, Shared, SharedLayout};

/// The header in front of the data.
#[repr(C)]
pub(crate) struct PodHeader {
    mutex: RobustLock,
    elem_size: AtomicU64,
    elem_align: AtomicU32,
    _pad: AtomicU32,
    len: AtomicU64,
}

// SAFETY: a RobustLock (initialised in place by `PodBlock::create`) and atomics.
unsafe impl SharedLayout for PodHeader {
    const MAGIC: u64 = magic("multiproc.PodBlock.v1");

    fn held_in_this_process(&self) -> bool {
        self.mutex.held_in_this_process()
    }
}

/// `len` values of `T` behind a robust lock, in shared memory.
pub(crate) struct PodBlock<T> {
    shared: Shared<PodHeader>,
    len: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for PodBlock<T> {
    fn clone(&self) -> Self {
        PodBlock {
            shared: self.shared.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Pod> PodBlock<T> {
    /// A block of `values.len()` values copied from `values` (zeroes if `None`).
    pub(crate) fn create(name: &str, len: usize, values: Option<&[T]>) -> io::Result<Self> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "array too large"))?;
        let shared = Shared::create(name, bytes, align_of::<T>(), |h: *mut PodHeader| {
            // SAFETY: `create` hands over valid, aligned, unshared memory at its
            // final address; the atomics are written, the mutex initialised in place.
            unsafe {
                std::ptr::addr_of_mut!((*h).elem_size).write(AtomicU64::new(size_of::<T>() as u64));
                std::ptr::addr_of_mut!((*h).elem_align).write(AtomicU32::new(align_of::<T>() as u32));
                std::ptr::addr_of_mut!((*h)._pad).write(AtomicU32::new(0));
                std::ptr::addr_of_mut!((*h).len).write(AtomicU64::new(len as u64));
                {
                    std::ptr::addr_of_mut!((*h).mutex).write(RobustLock::new());
                    Ok(())
                }
            }
        })?;
        let block = PodBlock::from_shared(shared)?;
        if let Some(values) = values {
            let (ptr, _) = block.shared.data();
            // SAFETY: the segment is not shared yet (nobody else has the fd);
            // the data area is `len * size_of::<T>()` bytes, aligned for `T`,
            // and `values` has `len` elements.
            unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), ptr.cast::<T>(), values.len().min(len)) };
        }
        Ok(block)
    }

    fn from_shared(shared: Shared<PodHeader>) -> io::Result<Self> {
        let h = shared.get();
        let (ptr, bytes) = shared.data();
        let len = usize::try_from(h.len.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        let ok = h.elem_size.load(Ordering::Relaxed) == size_of::<T>() as u64
            && h.elem_align.load(Ordering::Relaxed) == align_of::<T>() as u32
            && len.checked_mul(size_of::<T>()) == Some(bytes)
            && (ptr as usize) % align_of::<T>() == 0;
        if !ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "shared memory received does not hold values of type {} (size {}, align {})",
                    std::any::type_name::<T>(),
                    size_of::<T>(),
                    align_of::<T>()
                ),
            ));
        }
        Ok(PodBlock {
            shared,
            len,
            _t: PhantomData,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Locks the block.
    pub(crate) fn lock(&self, wait: Wait) -> Result<PodGuard<'_, T>, LockError<PodGuard<'_, T>>> {
        lock_raw(&self.shared.get().mutex, wait, || PodGuard {
            block: self,
            _not_send: PhantomData,
        })
    }

    /// True when both handles refer to the same shared block.
    pub(crate) fn same(&self, other: &Self) -> bool {
        self.shared.same(&other.shared)
    }
}

impl<T> Serialize for PodBlock<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.shared.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for PodBlock<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let shared = Shared::<PodHeader>::deserialize(d)?;
        PodBlock::from_shared(shared)
            .map_err(|e| crate::codec::handles::fail(e.to_string(), serde::de::Error::custom))
    }
}

/// Exclusive access to a [`PodBlock`]'s data while its lock is held.
pub(crate) struct PodGuard<'a, T> {
    block: &'a PodBlock<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T: Pod> PodGuard<'_, T> {
    pub(crate) fn as_slice(&self) -> &[T] {
        let (ptr, _) = self.block.shared.data();
        // SAFETY: the lock is held by this thread (see the module's contract):
        // no other access happens meanwhile; the area holds `len` valid `T`s,
        // aligned, inside the mapping that `self.block` keeps alive.
        unsafe { std::slice::from_raw_parts(ptr.cast::<T>(), self.block.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        let (ptr, _) = self.block.shared.data();
        // SAFETY: as `as_slice`; `&mut self` makes this the only reference
        // handed out by this guard, and the lock excludes every other guard.
        unsafe { std::slice::from_raw_parts_mut(ptr.cast::<T>(), self.block.len) }
    }
}

impl<T> Drop for PodGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.block.shared.get().mutex.unlock_if_held();
    }
}
