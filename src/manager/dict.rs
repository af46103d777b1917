//! [`Dict`]: a proxy for a dictionary held by a manager.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::manager::endpoint::unexpected;
use crate::manager::error::ManagerError;
use crate::manager::protocol::{ObjKind, Op, Reply, Request, Slot};
use crate::manager::proxy::{self, dec, enc, proxy_common, Core};
use crate::manager::update::{this_build, update_id};

/// A dictionary held by a [`Manager`](crate::Manager)'s server, shared by every
/// process and thread that has a copy of this proxy (Python's `Manager().dict()`).
///
/// Each call is one request to the server and one reply: the server applies it
/// atomically. A read-modify-write of one entry is atomic with
/// [`update_with`](Dict::update_with), which runs the function on the server.
///
/// Keys compare **by their encoding** (postcard bytes), not by `Eq`: two keys are
/// the same key when they serialise to the same bytes. That is the case for
/// equal values of the usual key types (integers, strings, tuples, derived
/// structs and enums); a type whose encoding is not a function of its value
/// (a `HashMap` key, floats with several NaNs) makes a poor key. Lookups accept
/// any `Q` that `K` borrows as (`&str` for `String`): `Q` must encode as `K`
/// does, as `str`/`String` and `[T]`/`Vec<T>` do.
///
/// A `Dict` is `Clone + Send + Sync` and can be given to a child process as an
/// argument: the child gets its own connection to the server.
///
/// # Examples
///
/// ```
/// use multiproc::{Manager, Process};
///
/// let m = Manager::start()?;
/// let d = m.dict::<String, i64>()?;
/// d.insert("count".to_string(), 10)?;
/// let p = Process::spawn(d.clone(), |d| {
///     d.update_with("count", |v: &mut i64| *v -= 1).unwrap();
/// })?;
/// p.join()?;
/// assert_eq!(d.get("count")?, Some(9));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Differences from Python's multiprocessing
///
/// - Typed: every key is a `K` and every value a `V`. A value stored through a
///   proxy of another type fails to decode ([`ManagerError::Codec`]) when its
///   bytes do not fit a `V` (the encoding does not record types, so a value of
///   the same shape, a `String` read as a `Vec<u8>`, decodes).
/// - `d[k] -= 1` in Python is a get and a set, two requests: not atomic.
///   [`update_with`](Dict::update_with) is one request and is.
/// - The order of [`keys`](Dict::keys), [`values`](Dict::values) and
///   [`items`](Dict::items) is unspecified (a hash map), not insertion order.
/// - Objects live as long as the server: dropping the last proxy does not free
///   the dict on the server.
/// - Nested proxies work as in Python: a value may hold proxies (a
///   `Dict<String, List<u8>>`), stored as references and read back as proxies
///   for the same objects. Other handles (a `Connection`, shared memory) cannot
///   be stored: their descriptors cannot live in the server ([`ManagerError::Codec`]).
#[doc(alias = "DictProxy")]
#[doc(alias = "dict")]
pub struct Dict<K, V> {
    core: Core,
    _t: PhantomData<fn() -> (K, V)>,
}

proxy_common!(Dict<K, V>, ObjKind::Dict);

impl<K, V> Dict<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    fn op(&self, op: Op) -> Result<Reply, ManagerError> {
        self.core.op(ObjKind::Dict, op)
    }

    /// Sets `key` to `value`; returns the value it had.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Codec`] if the key or value cannot be encoded (nothing is
    /// sent), [`ManagerError::ManagerGone`] if the server is gone,
    /// [`ManagerError::Timeout`] if it did not answer within the call timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<String, u32>()?;
    /// assert_eq!(d.insert("a".into(), 1)?, None);
    /// assert_eq!(d.insert("a".into(), 2)?, Some(1)); // the old value comes back
    /// assert_eq!(d.get("a")?, Some(2));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "__setitem__")]
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>, ManagerError> {
        proxy::opt_value(self.op(Op::DictInsert(enc(&key)?, enc(&value)?))?)
    }

    /// The value of `key`, if present.
    ///
    /// # Errors
    ///
    /// As [`insert`](Dict::insert); [`ManagerError::Codec`] if the stored value is not a `V`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Dict, Manager, Process};
    /// use std::time::Duration;
    ///
    /// let m = Manager::start()?;
    /// let d = m.dict::<u32, String>()?;
    /// let p = Process::spawn(d.clone(), |d: Dict<u32, String>| d.insert(1, "child".into()).is_ok())?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(true));
    /// assert_eq!(d.get(&1)?.as_deref(), Some("child"));
    /// assert_eq!(d.get(&2)?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "__getitem__")]
    pub fn get<Q>(&self, key: &Q) -> Result<Option<V>, ManagerError>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        proxy::opt_value(self.op(Op::DictGet(enc(key)?))?)
    }

    /// Removes `key`; returns its value if it was present.
    ///
    /// # Errors
    ///
    /// As [`get`](Dict::get).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<String, u32>()?;
    /// d.insert("a".into(), 1)?;
    /// assert_eq!(d.remove("a")?, Some(1));
    /// assert_eq!(d.remove("a")?, None); // already gone
    /// assert!(d.is_empty()?);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "pop")]
    #[doc(alias = "__delitem__")]
    pub fn remove<Q>(&self, key: &Q) -> Result<Option<V>, ManagerError>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        proxy::opt_value(self.op(Op::DictRemove(enc(key)?))?)
    }

    /// True if `key` is present.
    ///
    /// # Errors
    ///
    /// As [`insert`](Dict::insert).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<String, u32>()?;
    /// d.insert("a".into(), 1)?;
    /// assert!(d.contains_key("a")?);
    /// assert!(!d.contains_key("b")?);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "__contains__")]
    pub fn contains_key<Q>(&self, key: &Q) -> Result<bool, ManagerError>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        proxy::boolean(self.op(Op::DictContains(enc(key)?))?)
    }

    /// The number of entries.
    ///
    /// # Errors
    ///
    /// As [`insert`](Dict::insert).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// assert_eq!(d.len()?, 0);
    /// d.update([(1, 10), (2, 20), (1, 11)])?; // key 1 twice: one entry
    /// assert_eq!(d.len()?, 2);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "__len__")]
    pub fn len(&self) -> Result<usize, ManagerError> {
        proxy::len(self.op(Op::Len)?)
    }

    /// True if the dict has no entries.
    ///
    /// # Errors
    ///
    /// As [`insert`](Dict::insert).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// assert!(d.is_empty()?);
    /// d.insert(1, 1)?;
    /// assert!(!d.is_empty()?);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// The keys, in no particular order.
    ///
    /// # Errors
    ///
    /// As [`get`](Dict::get).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<String, u32>()?;
    /// d.update([("b".to_string(), 2), ("a".to_string(), 1)])?;
    /// let mut keys = d.keys()?;
    /// keys.sort(); // in no particular order
    /// assert_eq!(keys, ["a", "b"]);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn keys(&self) -> Result<Vec<K>, ManagerError> {
        proxy::values(self.op(Op::DictKeys)?)
    }

    /// The values, in no particular order.
    ///
    /// # Errors
    ///
    /// As [`get`](Dict::get).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<String, u32>()?;
    /// d.update([("b".to_string(), 2), ("a".to_string(), 1)])?;
    /// let mut values = d.values()?;
    /// values.sort(); // in no particular order
    /// assert_eq!(values, [1, 2]);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn values(&self) -> Result<Vec<V>, ManagerError> {
        proxy::values(self.op(Op::DictValues)?)
    }

    /// The entries, in no particular order (one consistent snapshot).
    ///
    /// # Errors
    ///
    /// As [`get`](Dict::get).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<String, u32>()?;
    /// d.update([("b".to_string(), 2), ("a".to_string(), 1)])?;
    /// let mut items = d.items()?;
    /// items.sort(); // in no particular order
    /// assert_eq!(items, [("a".to_string(), 1), ("b".to_string(), 2)]);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn items(&self) -> Result<Vec<(K, V)>, ManagerError> {
        match self.op(Op::DictItems)? {
            Reply::Items(v) => v.iter().map(|(k, v)| Ok((dec(k)?, dec(v)?))).collect(),
            other => Err(unexpected(&other)),
        }
    }

    /// A copy of the whole dict (Python's `d.copy()` / `dict(d)`).
    ///
    /// # Errors
    ///
    /// As [`get`](Dict::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    ///
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<String, u32>()?;
    /// d.update([("a".to_string(), 1), ("b".to_string(), 2)])?;
    /// let copy: HashMap<String, u32> = d.to_hashmap()?;
    /// d.clear()?; // the copy is not a view
    /// assert_eq!(copy, HashMap::from([("a".to_string(), 1), ("b".to_string(), 2)]));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "copy")]
    pub fn to_hashmap(&self) -> Result<HashMap<K, V>, ManagerError>
    where
        K: Eq + Hash,
    {
        Ok(self.items()?.into_iter().collect())
    }

    /// Inserts every pair of `pairs`, in one request (Python's `d.update(...)`).
    ///
    /// # Errors
    ///
    /// As [`insert`](Dict::insert); nothing is inserted if any pair cannot be encoded.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<String, u32>()?;
    /// d.insert("a".into(), 0)?;
    /// d.update([("a".to_string(), 1), ("b".to_string(), 2)])?; // overwrites "a"
    /// assert_eq!(d.get("a")?, Some(1));
    /// assert_eq!(d.get("b")?, Some(2));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn update(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Result<(), ManagerError> {
        let pairs = pairs
            .into_iter()
            .map(|(k, v)| Ok((enc(&k)?, enc(&v)?)))
            .collect::<Result<Vec<_>, ManagerError>>()?;
        proxy::unit(self.op(Op::DictUpdate(pairs))?)
    }

    /// The value of `key`, inserting `default` first if it is absent
    /// (Python's `d.setdefault(k, default)`), atomically.
    ///
    /// # Errors
    ///
    /// As [`get`](Dict::get).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<String, u32>()?;
    /// assert_eq!(d.get_or_insert("a".into(), 1)?, 1); // absent: inserted
    /// assert_eq!(d.get_or_insert("a".into(), 2)?, 1); // present: kept
    /// assert_eq!(d.get("a")?, Some(1));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "setdefault")]
    pub fn get_or_insert(&self, key: K, default: V) -> Result<V, ManagerError> {
        proxy::value(self.op(Op::DictSetDefault(enc(&key)?, enc(&default)?))?)
    }

    /// Removes every entry.
    ///
    /// # Errors
    ///
    /// As [`insert`](Dict::insert).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// d.update([(1, 1), (2, 2)])?;
    /// d.clear()?;
    /// assert!(d.is_empty()?);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn clear(&self) -> Result<(), ManagerError> {
        proxy::unit(self.op(Op::Clear)?)
    }

    /// Runs `f` on the value of `key` **on the server**, atomically (no other
    /// request touches the dict meanwhile), and returns the new value.
    ///
    /// `f` is a fn item or a closure that captures nothing (checked at compile
    /// time), identified in the server as a child's function is: the server must
    /// run the same build of the executable, which a local manager always does.
    /// `f` should be quick: it holds up every other request to the manager.
    ///
    /// # Errors
    ///
    /// [`ManagerError::KeyNotFound`] if `key` is absent;
    /// [`ManagerError::FunctionPanicked`] if `f` panicked (the value is unchanged);
    /// [`ManagerError::FunctionRefused`] if the server runs another build;
    /// otherwise as [`get`](Dict::get).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<String, Vec<u32>>()?;
    /// d.insert("xs".into(), vec![1])?;
    /// assert_eq!(d.update_with("xs", |v: &mut Vec<u32>| v.push(2))?, vec![1, 2]);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn update_with<Q, F>(&self, key: &Q, f: F) -> Result<V, ManagerError>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
        F: Fn(&mut V) + Copy + 'static,
        V: 'static,
    {
        let _ = f;
        update(
            &self.core,
            ObjKind::Dict,
            Slot::Key(enc(key)?),
            update_id::<F, V>(),
        )
    }
}

/// Sends an update request and decodes the new value.
pub(crate) fn update<V: DeserializeOwned>(
    core: &Core,
    kind: ObjKind,
    slot: Slot,
    entry: i64,
) -> Result<V, ManagerError> {
    let build_id = this_build();
    if build_id != core.ep.0.info.build_id {
        return Err(ManagerError::FunctionRefused(
            "the manager runs a different build of the executable than this process".into(),
        ));
    }
    let req = Request::Call {
        id: core.id,
        kind,
        op: Op::Update {
            slot,
            build_id,
            entry,
        },
    };
    proxy::value(core.ep.0.call(&req)?)
}
