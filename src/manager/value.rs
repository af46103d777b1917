//! [`ValueProxy`]: a proxy for one value held by a manager.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::manager::dict::update;
use crate::manager::error::ManagerError;
use crate::manager::protocol::{ObjKind, Op, Slot};
use crate::manager::proxy::{self, enc, proxy_common, Core};
use crate::manager::update::update_id;

/// One value held by a [`Manager`](crate::Manager)'s server (Python's
/// `Manager().Value(typecode, v)`, without the type code: any serde type).
///
/// # Examples
///
/// ```
/// let m = multiproc::Manager::start()?;
/// let v = m.value(String::from("a"))?;
/// v.set("b".to_string())?;
/// assert_eq!(v.get()?, "b");
/// assert_eq!(v.update_with(|s: &mut String| s.push('c'))?, "bc");
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
///
/// # Differences from Python's multiprocessing
///
/// Named `ValueProxy` so as not to clash with the shared-memory [`Value`]
/// (which needs no server and is faster for plain numbers).
/// [`update_with`](ValueProxy::update_with) gives an atomic `v.value += 1`.
///
/// [`Value`]: https://docs.python.org/3/library/multiprocessing.html#multiprocessing.Value
#[doc(alias = "Value")]
pub struct ValueProxy<T> {
    core: Core,
    _t: PhantomData<fn() -> T>,
}

proxy_common!(ValueProxy<T>, ObjKind::Value);

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// The current value.
    ///
    /// # Errors
    ///
    /// [`ManagerError::ManagerGone`] if the server is gone,
    /// [`ManagerError::Timeout`] if it did not answer within the call timeout,
    /// [`ManagerError::Codec`] if the stored value is not a `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Manager, Process, ValueProxy};
    /// use std::time::Duration;
    ///
    /// let m = Manager::start()?;
    /// let v = m.value(1.5f64)?;
    /// assert_eq!(v.get()?, 1.5);
    /// let p = Process::spawn(v.clone(), |v: ValueProxy<f64>| v.set(2.5).is_ok())?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(true));
    /// assert_eq!(v.get()?, 2.5); // the child's change
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self) -> Result<T, ManagerError> {
        proxy::value(self.core.op(ObjKind::Value, Op::ValueGet)?)
    }

    /// Sets the value; returns the previous one.
    ///
    /// # Errors
    ///
    /// As [`get`](ValueProxy::get); [`ManagerError::Codec`] if `value` cannot be
    /// encoded (nothing is sent).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let v = m.value(vec![1u8])?;
    /// assert_eq!(v.set(vec![2, 3])?, [1]); // the previous value comes back
    /// assert_eq!(v.get()?, [2, 3]);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn set(&self, value: T) -> Result<T, ManagerError> {
        proxy::value(self.core.op(ObjKind::Value, Op::ValueSet(enc(&value)?))?)
    }

    /// Runs `f` on the value on the server, atomically, and returns the new
    /// value. See [`Dict::update_with`](crate::Dict::update_with).
    ///
    /// # Errors
    ///
    /// As [`Dict::update_with`](crate::Dict::update_with), without `KeyNotFound`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Manager, Process, ValueProxy};
    /// use std::time::Duration;
    ///
    /// let m = Manager::start()?;
    /// let v = m.value(0u64)?;
    /// let p = Process::spawn(v.clone(), |v: ValueProxy<u64>| {
    ///     (0..50).all(|_| v.update_with(|n| *n += 1).is_ok())
    /// })?;
    /// for _ in 0..50 {
    ///     v.update_with(|n: &mut u64| *n += 1)?;
    /// }
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(true));
    /// assert_eq!(v.get()?, 100); // no increment lost
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update_with<F>(&self, f: F) -> Result<T, ManagerError>
    where
        F: Fn(&mut T) + Copy + 'static,
        T: 'static,
    {
        let _ = f;
        update(&self.core, ObjKind::Value, Slot::Whole, update_id::<F, T>())
    }
}
