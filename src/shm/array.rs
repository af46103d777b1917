//! `Array<T>`: a fixed-length slice of plain-old-data values in shared memory
//! with its own lock.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use bytemuck::Pod;
use serde::{Deserialize, Serialize};

use crate::deadline::Deadline;
use crate::shm::pod::{PodBlock, PodGuard};
use crate::sync::error::{LockError, Wait};

/// A fixed-length array of `T` in shared memory, guarded by its own crash-safe lock.
///
/// `T` is any [`bytemuck::Pod`] type. [`lock`](Array::lock) returns a guard
/// that derefs to `[T]`. Clone the handle to share it between threads; pass it
/// to a child or over a `Connection` to share it between processes. Owner
/// death is reported like [`Value`](crate::Value)'s.
///
/// # Examples
///
/// ```
/// use multiproc::Array;
/// let a: Array<f64> = Array::from_slice(&[0.0, 1.0, 2.0, 3.0])?;
/// a.lock()?[3] = 1.5;
/// assert_eq!(a.to_vec()?, [0.0, 1.0, 2.0, 1.5]);
/// assert_eq!(a.len(), 4);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Differences from Python's multiprocessing
/// `Array('d', 10)` is `Array::<f64>::zeroed(10)`, `Array('i', [1, 2])` is
/// `Array::from_slice(&[1i32, 2])`; slicing and indexing happen on the
/// locked guard (`a.lock()?[1..]`), one lock for many elements.
#[doc(alias = "multiprocessing.Array")]
#[doc(alias = "sharedctypes")]
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "", deserialize = "T: Pod"))]
pub struct Array<T> {
    block: PodBlock<T>,
}

impl<T> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("type", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl<T: Pod> Array<T> {
    /// `len` values of all-zero bytes.
    ///
    /// # Errors
    /// The system refused the memory, or `len * size_of::<T>()` overflows.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Array;
    /// assert_eq!(Array::<u32>::zeroed(3)?.to_vec()?, [0, 0, 0]);
    /// assert!(Array::<u64>::zeroed(usize::MAX).is_err()); // the size overflows
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn zeroed(len: usize) -> io::Result<Array<T>> {
        Ok(Array {
            block: PodBlock::create("multiproc-array", len, None)?,
        })
    }

    /// A copy of `values` in shared memory.
    ///
    /// # Errors
    /// The system refused the memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Array;
    /// let a = Array::from_slice(&[1i32, -2, 3])?;
    /// assert_eq!(a.to_vec()?, [1, -2, 3]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_slice(values: &[T]) -> io::Result<Array<T>> {
        Ok(Array {
            block: PodBlock::create("multiproc-array", values.len(), Some(values))?,
        })
    }

    /// The number of elements.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Array;
    /// assert_eq!(Array::<f32>::zeroed(5)?.len(), 5);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.block.len()
    }

    /// True for an array of no elements.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Array;
    /// assert!(Array::<u8>::zeroed(0)?.is_empty());
    /// assert!(!Array::from_slice(&[1u8])?.is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn guard(g: PodGuard<'_, T>) -> ArrayGuard<'_, T> {
        ArrayGuard { inner: g }
    }

    fn lock_with(&self, wait: Wait) -> Result<ArrayGuard<'_, T>, LockError<ArrayGuard<'_, T>>> {
        self.block
            .lock(wait)
            .map(Array::guard)
            .map_err(|e| e.map(Array::guard))
    }

    /// Locks the array, waiting as long as needed.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] (guard inside: the lock is held) once after a
    /// holder died; [`LockError::WouldDeadlock`] if this thread holds it already.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Array;
    /// let a = Array::<i32>::zeroed(3)?;
    /// {
    ///     let mut g = a.lock()?;
    ///     g[0] = 5;
    ///     g[1..].copy_from_slice(&[6, 7]);
    ///     assert!(a.try_lock().is_err()); // held until the guard drops
    /// }
    /// assert_eq!(a.to_vec()?, [5, 6, 7]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[doc(alias = "get_lock")]
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>, LockError<ArrayGuard<'_, T>>> {
        self.lock_with(Wait::Until(Deadline::NEVER))
    }

    /// Locks the array if the lock is free now.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] when another thread or process holds it;
    /// [`LockError::WouldDeadlock`] when the calling thread does; otherwise as
    /// [`lock`](Array::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Array, LockError};
    /// let a = Array::<u8>::zeroed(2)?;
    /// let _g = a.try_lock()?;
    /// let other = a.clone();
    /// let refused = std::thread::spawn(move || matches!(other.try_lock(), Err(LockError::WouldBlock)));
    /// assert!(refused.join().unwrap());
    /// assert!(matches!(a.try_lock(), Err(LockError::WouldDeadlock))); // this thread holds it
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_lock(&self) -> Result<ArrayGuard<'_, T>, LockError<ArrayGuard<'_, T>>> {
        self.lock_with(Wait::No)
    }

    /// Locks the array, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LockError::Timeout`] when the timeout passed; otherwise as [`lock`](Array::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Array, LockError};
    /// use std::time::Duration;
    /// let a = Array::<u8>::zeroed(2)?;
    /// let _g = a.lock()?;
    /// let other = a.clone();
    /// let r = std::thread::spawn(move || {
    ///     matches!(other.lock_timeout(Duration::from_millis(10)), Err(LockError::Timeout))
    /// });
    /// assert!(r.join().unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ArrayGuard<'_, T>, LockError<ArrayGuard<'_, T>>> {
        self.lock_with(Wait::Until(Deadline::after(timeout)))
    }

    /// A copy of the elements, taken under the lock (Python's `a[:]`).
    ///
    /// # Errors
    /// As [`lock`](Array::lock); `OwnerDied` carries the copy.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Array, Process};
    /// use std::time::Duration;
    /// let a = Array::<u64>::zeroed(4)?;
    /// let child = Process::spawn(a.clone(), |a: Array<u64>| {
    ///     for (i, x) in a.lock().unwrap().iter_mut().enumerate() {
    ///         *x = i as u64 * 10;
    ///     }
    /// })?;
    /// assert_eq!(child.join_timeout(Duration::from_secs(30))?, Some(()));
    /// assert_eq!(a.to_vec()?, [0, 10, 20, 30]); // written by the child
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>, LockError<Vec<T>>> {
        self.lock().map(|g| g.to_vec()).map_err(|e| e.map(|g| g.to_vec()))
    }

    /// True when both handles refer to the same shared array.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Array;
    /// let a = Array::<u8>::zeroed(1)?;
    /// assert!(a.same_as(&a.clone()));
    /// assert!(!a.same_as(&Array::zeroed(1)?));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn same_as(&self, other: &Array<T>) -> bool {
        self.block.same(&other.block)
    }
}

/// The locked array; derefs to `[T]`, unlocks on drop. `!Send`.
///
/// # Examples
///
/// ```
/// use multiproc::Array;
/// let a = Array::from_slice(&[3u16, 1, 2])?;
/// let mut g = a.lock()?;
/// g.sort(); // any slice method
/// assert_eq!(*g, [1, 2, 3]);
/// drop(g); // unlocked
/// assert_eq!(a.to_vec()?, [1, 2, 3]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "the array is unlocked as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Pod> {
    inner: PodGuard<'a, T>,
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.inner.as_slice()
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.inner.as_mut_slice()
    }
}

impl<T: Pod> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayGuard").field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_and_from_slice() {
        let a = Array::<u32>::zeroed(5).unwrap();
        assert_eq!(a.to_vec().unwrap(), [0; 5]);
        let b = Array::from_slice(&[1u16, 2, 3]).unwrap();
        b.lock().unwrap()[1..].copy_from_slice(&[7, 8]);
        assert_eq!(b.to_vec().unwrap(), [1, 7, 8]);
        let e = Array::<u8>::zeroed(0).unwrap();
        assert!(e.is_empty());
        assert!(e.to_vec().unwrap().is_empty());
    }
}
