//! `Value<T>`: one plain-old-data value in shared memory with its own lock.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use bytemuck::Pod;
use serde::{Deserialize, Serialize};

use crate::deadline::Deadline;
use crate::shm::pod::{PodBlock, PodGuard};
use crate::sync::error::{LockError, Wait};

/// A `T` in shared memory, guarded by its own crash-safe lock.
///
/// `T` is any [`bytemuck::Pod`] type (integers, floats, arrays of them,
/// `#[derive(Pod)]` structs): plain bytes, no pointers, so it means the same
/// in every process. Clone the handle to share it between threads; pass it to
/// a child or over a `Connection` to share it between processes.
///
/// [`lock`](Value::lock) returns a guard that derefs to `T`;
/// [`load`](Value::load) and [`store`](Value::store) take the lock for one
/// read or write. If a process died while holding the lock, the next locker
/// gets [`LockError::OwnerDied`] (once) together with the guard or value, so
/// it can check what was half-written.
///
/// # Examples
///
/// ```
/// use multiproc::Value;
/// let v: Value<i64> = Value::new(100)?;
/// *v.lock()? -= 1;
/// assert_eq!(v.load()?, 99);
/// v.store(7)?;
/// assert_eq!(*v.lock()?, 7);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Differences from Python's multiprocessing
/// The type is a Rust type instead of a ctypes code (`Value('i', 0)` is
/// `Value::<i32>::new(0)`); `v.value` is `load`/`store`, `with v.get_lock():`
/// is `let mut g = v.lock()?;`. There is no `lock=False` variant: the lock is
/// what makes concurrent access sound.
#[doc(alias = "multiprocessing.Value")]
#[doc(alias = "sharedctypes")]
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "", deserialize = "T: Pod"))]
pub struct Value<T> {
    block: PodBlock<T>,
}

impl<T> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("type", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl<T: Pod> Value<T> {
    /// A shared value initialised to `value`.
    ///
    /// # Errors
    /// The system refused the memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Value;
    /// let v = Value::new(1.5f64)?;
    /// assert_eq!(v.load()?, 1.5);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(value: T) -> io::Result<Value<T>> {
        Ok(Value {
            block: PodBlock::create("multiproc-value", 1, Some(std::slice::from_ref(&value)))?,
        })
    }

    /// A shared value of all-zero bytes.
    ///
    /// # Errors
    /// The system refused the memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Value;
    /// let v = Value::<[u16; 4]>::zeroed()?;
    /// assert_eq!(v.load()?, [0; 4]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn zeroed() -> io::Result<Value<T>> {
        Ok(Value {
            block: PodBlock::create("multiproc-value", 1, None)?,
        })
    }

    fn guard(g: PodGuard<'_, T>) -> ValueGuard<'_, T> {
        ValueGuard { inner: g }
    }

    fn lock_with(&self, wait: Wait) -> Result<ValueGuard<'_, T>, LockError<ValueGuard<'_, T>>> {
        self.block
            .lock(wait)
            .map(Value::guard)
            .map_err(|e| e.map(Value::guard))
    }

    /// Locks the value, waiting as long as needed.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] (guard inside: the lock is held) once after a
    /// holder died; [`LockError::WouldDeadlock`] if this thread holds it already.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Value;
    /// let v = Value::new(0u32)?;
    /// {
    ///     let mut g = v.lock()?;
    ///     *g += 1;
    ///     assert!(v.try_lock().is_err()); // held until the guard drops
    /// }
    /// assert_eq!(v.load()?, 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[doc(alias = "get_lock")]
    pub fn lock(&self) -> Result<ValueGuard<'_, T>, LockError<ValueGuard<'_, T>>> {
        self.lock_with(Wait::Until(Deadline::NEVER))
    }

    /// Locks the value if the lock is free now.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] when another thread or process holds it;
    /// [`LockError::WouldDeadlock`] when the calling thread does; otherwise as
    /// [`lock`](Value::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{LockError, Value};
    /// let v = Value::new(0u8)?;
    /// let _g = v.try_lock()?;
    /// let other = v.clone();
    /// let refused = std::thread::spawn(move || matches!(other.try_lock(), Err(LockError::WouldBlock)));
    /// assert!(refused.join().unwrap());
    /// assert!(matches!(v.try_lock(), Err(LockError::WouldDeadlock))); // this thread holds it
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_lock(&self) -> Result<ValueGuard<'_, T>, LockError<ValueGuard<'_, T>>> {
        self.lock_with(Wait::No)
    }

    /// Locks the value, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LockError::Timeout`] when the timeout passed; otherwise as [`lock`](Value::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{LockError, Value};
    /// use std::time::Duration;
    /// let v = Value::new(0u8)?;
    /// let _g = v.lock()?;
    /// let other = v.clone();
    /// let r = std::thread::spawn(move || {
    ///     matches!(other.lock_timeout(Duration::from_millis(10)), Err(LockError::Timeout))
    /// });
    /// assert!(r.join().unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ValueGuard<'_, T>, LockError<ValueGuard<'_, T>>> {
        self.lock_with(Wait::Until(Deadline::after(timeout)))
    }

    /// Reads the value under the lock (Python's `v.value`).
    ///
    /// # Errors
    /// As [`lock`](Value::lock); `OwnerDied` carries the value read.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Process, Value};
    /// use std::time::Duration;
    /// let v = Value::new(0u64)?;
    /// let child = Process::spawn(v.clone(), |v: Value<u64>| v.store(42).is_ok())?;
    /// assert_eq!(child.join_timeout(Duration::from_secs(30))?, Some(true));
    /// assert_eq!(v.load()?, 42); // stored by the child
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load(&self) -> Result<T, LockError<T>> {
        self.lock().map(|g| *g).map_err(|e| e.map(|g| *g))
    }

    /// Writes the value under the lock (Python's `v.value = x`).
    ///
    /// # Errors
    /// As [`lock`](Value::lock); on `OwnerDied` the value has been written.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Process, Value};
    /// use std::time::Duration;
    /// let v = Value::new(0i32)?;
    /// v.store(-5)?;
    /// let child = Process::spawn(v.clone(), |v: Value<i32>| v.load().ok())?;
    /// assert_eq!(child.join_timeout(Duration::from_secs(30))?, Some(Some(-5))); // seen by the child
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn store(&self, value: T) -> Result<(), LockError<()>> {
        match self.lock() {
            Ok(mut g) => {
                *g = value;
                Ok(())
            }
            Err(e) => Err(e.map(|mut g| *g = value)),
        }
    }

    /// True when both handles refer to the same shared value.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Value;
    /// let v = Value::new(0u8)?;
    /// assert!(v.same_as(&v.clone()));
    /// assert!(!v.same_as(&Value::new(0u8)?));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn same_as(&self, other: &Value<T>) -> bool {
        self.block.same(&other.block)
    }
}

/// The locked value; derefs to `T`, unlocks on drop. `!Send`.
///
/// # Examples
///
/// ```
/// use multiproc::Value;
/// let v = Value::new([1u8, 2])?;
/// let mut g = v.lock()?;
/// g.swap(0, 1); // derefs to the value
/// assert_eq!(*g, [2, 1]);
/// drop(g); // unlocked
/// assert_eq!(v.load()?, [2, 1]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "the value is unlocked as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Pod> {
    inner: PodGuard<'a, T>,
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner.as_slice()[0]
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner.as_mut_slice()[0]
    }
}

impl<T: Pod> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_increment_without_losing_updates() {
        let v = Value::<u64>::new(0).unwrap();
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let v = v.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        *v.lock().unwrap() += 1;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(v.load().unwrap(), 4000);
    }

    #[test]
    fn load_while_locked_by_self_is_an_error() {
        let v = Value::<[f32; 3]>::new([1.0, 2.0, 3.0]).unwrap();
        let g = v.lock().unwrap();
        assert!(matches!(v.load(), Err(LockError::WouldDeadlock)));
        assert_eq!(*g, [1.0, 2.0, 3.0]);
    }
}
