//! [`List`]: a proxy for a list held by a manager.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::manager::dict::update;
use crate::manager::error::ManagerError;
use crate::manager::protocol::{ObjKind, Op, Reply, Slot};
use crate::manager::proxy::{self, enc, proxy_common, Core};
use crate::manager::update::update_id;

/// A list held by a [`Manager`](crate::Manager)'s server, shared by every
/// process and thread that has a copy of this proxy (Python's `Manager().list()`).
///
/// Each call is one request, applied atomically by the server. Indices are
/// `usize` as in a `Vec`; an index past the end is
/// [`ManagerError::IndexOutOfRange`], never a panic.
///
/// # Examples
///
/// ```
/// let m = multiproc::Manager::start()?;
/// let l = m.list::<i32>()?;
/// l.extend([1, 2, 3])?;
/// l.push(4)?;
/// assert_eq!(l.pop()?, Some(4));
/// l.set(0, 10)?;
/// assert_eq!(l.to_vec()?, vec![10, 2, 3]);
/// assert_eq!(l.len()?, 3);
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
///
/// # Differences from Python's multiprocessing
///
/// Typed (`List<T>`); `l[i] += 1` is atomic only as [`update_with`](List::update_with).
/// Objects live as long as the server.
#[doc(alias = "ListProxy")]
#[doc(alias = "list")]
pub struct List<T> {
    core: Core,
    _t: PhantomData<fn() -> T>,
}

proxy_common!(List<T>, ObjKind::List);

fn index(i: usize) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

impl<T: Serialize + DeserializeOwned> List<T> {
    fn op(&self, op: Op) -> Result<Reply, ManagerError> {
        self.core.op(ObjKind::List, op)
    }

    /// Appends `item` (Python's `append`).
    ///
    /// # Errors
    ///
    /// [`ManagerError::Codec`] if `item` cannot be encoded (nothing is sent),
    /// [`ManagerError::ManagerGone`] if the server is gone,
    /// [`ManagerError::Timeout`] if it did not answer within the call timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{List, Manager, Process};
    /// use std::time::Duration;
    ///
    /// let m = Manager::start()?;
    /// let l = m.list::<u32>()?;
    /// l.push(1)?;
    /// let p = Process::spawn(l.clone(), |l: List<u32>| l.push(2).is_ok())?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(true));
    /// assert_eq!(l.to_vec()?, [1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "append")]
    pub fn push(&self, item: T) -> Result<(), ManagerError> {
        proxy::unit(self.op(Op::ListPush(enc(&item)?))?)
    }

    /// Removes and returns the last item, `None` if the list is empty.
    ///
    /// # Errors
    ///
    /// As [`push`](List::push); [`ManagerError::Codec`] if the item is not a `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<u32>()?;
    /// l.extend([1, 2])?;
    /// assert_eq!(l.pop()?, Some(2));
    /// assert_eq!(l.pop()?, Some(1));
    /// assert_eq!(l.pop()?, None); // empty
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn pop(&self) -> Result<Option<T>, ManagerError> {
        proxy::opt_value(self.op(Op::ListPop)?)
    }

    /// The item at `index`.
    ///
    /// # Errors
    ///
    /// [`ManagerError::IndexOutOfRange`]; otherwise as [`pop`](List::pop).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::ManagerError;
    ///
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<char>()?;
    /// l.extend(['a', 'b'])?;
    /// assert_eq!(l.get(1)?, 'b');
    /// assert!(matches!(l.get(2), Err(ManagerError::IndexOutOfRange { index: 2, len: 2 })));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "__getitem__")]
    pub fn get(&self, index: usize) -> Result<T, ManagerError> {
        proxy::value(self.op(Op::ListGet(self::index(index)))?)
    }

    /// Replaces the item at `index`; returns the old one.
    ///
    /// # Errors
    ///
    /// As [`get`](List::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::ManagerError;
    ///
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<u32>()?;
    /// l.extend([1, 2])?;
    /// assert_eq!(l.set(0, 10)?, 1); // the old item comes back
    /// assert_eq!(l.to_vec()?, [10, 2]);
    /// assert!(matches!(l.set(5, 0), Err(ManagerError::IndexOutOfRange { .. })));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "__setitem__")]
    pub fn set(&self, index: usize, item: T) -> Result<T, ManagerError> {
        proxy::value(self.op(Op::ListSet(self::index(index), enc(&item)?))?)
    }

    /// Inserts `item` before `index` (`index == len` appends).
    ///
    /// # Errors
    ///
    /// [`ManagerError::IndexOutOfRange`] if `index > len`; otherwise as [`push`](List::push).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::ManagerError;
    ///
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<u32>()?;
    /// l.extend([1, 3])?;
    /// l.insert(1, 2)?;
    /// l.insert(3, 4)?; // index == len appends
    /// assert_eq!(l.to_vec()?, [1, 2, 3, 4]);
    /// assert!(matches!(l.insert(9, 0), Err(ManagerError::IndexOutOfRange { .. })));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn insert(&self, index: usize, item: T) -> Result<(), ManagerError> {
        proxy::unit(self.op(Op::ListInsert(self::index(index), enc(&item)?))?)
    }

    /// Removes and returns the item at `index` (Python's `pop(i)`).
    ///
    /// # Errors
    ///
    /// As [`get`](List::get).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<u32>()?;
    /// l.extend([1, 2, 3])?;
    /// assert_eq!(l.remove(0)?, 1);
    /// assert_eq!(l.to_vec()?, [2, 3]);
    /// assert!(l.remove(2).is_err()); // out of range: nothing removed
    /// assert_eq!(l.len()?, 2);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn remove(&self, index: usize) -> Result<T, ManagerError> {
        proxy::value(self.op(Op::ListRemove(self::index(index)))?)
    }

    /// The number of items.
    ///
    /// # Errors
    ///
    /// As [`push`](List::push).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<u32>()?;
    /// assert_eq!(l.len()?, 0);
    /// l.extend([7, 8, 9])?;
    /// assert_eq!(l.len()?, 3);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "__len__")]
    pub fn len(&self) -> Result<usize, ManagerError> {
        proxy::len(self.op(Op::Len)?)
    }

    /// True if the list has no items.
    ///
    /// # Errors
    ///
    /// As [`push`](List::push).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<u32>()?;
    /// assert!(l.is_empty()?);
    /// l.push(1)?;
    /// assert!(!l.is_empty()?);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// Appends every item of `items`, in one request.
    ///
    /// # Errors
    ///
    /// As [`push`](List::push); nothing is appended if an item cannot be encoded.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<u32>()?;
    /// l.push(0)?;
    /// l.extend(1..=3)?;
    /// assert_eq!(l.to_vec()?, [0, 1, 2, 3]);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<(), ManagerError> {
        let items = items
            .into_iter()
            .map(|i| enc(&i))
            .collect::<Result<Vec<_>, _>>()?;
        proxy::unit(self.op(Op::ListExtend(items))?)
    }

    /// A copy of the whole list (Python's `l[:]` / `list(l)`).
    ///
    /// # Errors
    ///
    /// As [`pop`](List::pop).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<String>()?;
    /// l.extend(["a".to_string(), "b".to_string()])?;
    /// let copy = l.to_vec()?;
    /// l.clear()?; // the copy is not a view
    /// assert_eq!(copy, ["a", "b"]);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>, ManagerError> {
        proxy::values(self.op(Op::ListItems)?)
    }

    /// Removes every item.
    ///
    /// # Errors
    ///
    /// As [`push`](List::push).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<u32>()?;
    /// l.extend([1, 2, 3])?;
    /// l.clear()?;
    /// assert_eq!(l.len()?, 0);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn clear(&self) -> Result<(), ManagerError> {
        proxy::unit(self.op(Op::Clear)?)
    }

    /// Runs `f` on the item at `index` on the server, atomically, and returns
    /// the new item. See [`Dict::update_with`](crate::Dict::update_with).
    ///
    /// # Errors
    ///
    /// [`ManagerError::IndexOutOfRange`]; otherwise as
    /// [`Dict::update_with`](crate::Dict::update_with).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{List, Manager, Process};
    /// use std::time::Duration;
    ///
    /// let m = Manager::start()?;
    /// let l = m.list::<u64>()?;
    /// l.push(0)?;
    /// let p = Process::spawn(l.clone(), |l: List<u64>| {
    ///     (0..50).all(|_| l.update_with(0, |n| *n += 1).is_ok())
    /// })?;
    /// for _ in 0..50 {
    ///     l.update_with(0, |n: &mut u64| *n += 1)?;
    /// }
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(true));
    /// assert_eq!(l.get(0)?, 100); // no increment lost
    /// assert!(l.update_with(1, |n: &mut u64| *n += 1).is_err()); // out of range
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update_with<F>(&self, index: usize, f: F) -> Result<T, ManagerError>
    where
        F: Fn(&mut T) + Copy + 'static,
        T: 'static,
    {
        let _ = f;
        update(
            &self.core,
            ObjKind::List,
            Slot::Index(self::index(index)),
            update_id::<F, T>(),
        )
    }
}
