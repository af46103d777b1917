//! [`Namespace`]: named fields of any types, held by a manager.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::manager::dict::{update, Dict};
use crate::manager::endpoint::unexpected;
use crate::manager::error::ManagerError;
use crate::manager::protocol::{ObjKind, Op, Reply, Slot};
use crate::manager::proxy::{self, enc, proxy_common, sealed::Sealed, Core};
use crate::manager::update::update_id;

/// Named fields held by a [`Manager`](crate::Manager)'s server, each of its own
/// type, shared by every process that has a copy of this proxy (Python's
/// `Manager().Namespace()`, whose attributes are the fields here).
///
/// The type of a field is chosen at each call: [`set`](Namespace::set) stores
/// any serde value, [`get`](Namespace::get) reads it back as the type asked for.
/// Read it as the type it was stored as: the encoding (postcard) does not
/// record types, so bytes that do not fit the type asked for are a
/// [`ManagerError::Codec`], but a value of the same shape (a `String` read as a
/// `Vec<u8>`) decodes. On the server a namespace is a
/// dict from field names to values: [`as_dict`](Namespace::as_dict) gives a
/// typed [`Dict`] view of the same object.
///
/// # Examples
///
/// ```
/// use multiproc::{Manager, Process};
///
/// let m = Manager::start()?;
/// let ns = m.namespace()?;
/// ns.set("name", "run-7")?;
/// ns.set("done", &0u32)?;
/// let p = Process::spawn(ns.clone(), |ns| {
///     ns.update_with("done", |d: &mut u32| *d += 1).unwrap();
///     ns.get::<String>("name").unwrap()
/// })?;
/// assert_eq!(p.join()?, Some("run-7".to_string()));
/// assert_eq!(ns.get::<u32>("done")?, Some(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Differences from Python's multiprocessing
///
/// - Fields are set and read by name with [`set`](Namespace::set) and
///   [`get`](Namespace::get), not as attributes; a missing field is `None`,
///   not an `AttributeError`.
/// - [`update_with`](Namespace::update_with) changes a field atomically on the
///   server (`ns.x += 1` in Python is a get and a set).
#[doc(alias = "NamespaceProxy")]
pub struct Namespace {
    core: Core,
    _t: std::marker::PhantomData<fn() -> ()>,
}

proxy_common!(Namespace, ObjKind::Dict);

impl Namespace {
    fn op(&self, op: Op) -> Result<Reply, ManagerError> {
        self.core.op(ObjKind::Dict, op)
    }

    /// Sets `field` to `value` (Python's `ns.field = value`).
    ///
    /// # Errors
    ///
    /// [`ManagerError::Codec`] if the value cannot be encoded (nothing is sent),
    /// [`ManagerError::ManagerGone`] if the server is gone,
    /// [`ManagerError::Timeout`] if it did not answer within the call timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let ns = m.namespace()?;
    /// ns.set("name", "job")?;
    /// ns.set("size", &3u64)?;
    /// ns.set("size", &4u64)?; // replaces
    /// assert_eq!(ns.get::<String>("name")?.as_deref(), Some("job"));
    /// assert_eq!(ns.get::<u64>("size")?, Some(4));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "__setattr__")]
    pub fn set<T: Serialize + ?Sized>(&self, field: &str, value: &T) -> Result<(), ManagerError> {
        match self.op(Op::DictInsert(enc(field)?, enc(value)?))? {
            Reply::Value(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The value of `field` as a `T`, if the field is set (Python's `ns.field`).
    ///
    /// # Errors
    ///
    /// As [`set`](Namespace::set); [`ManagerError::Codec`] if the field holds
    /// something else than a `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Manager, Namespace, Process};
    /// use std::time::Duration;
    ///
    /// let m = Manager::start()?;
    /// let ns = m.namespace()?;
    /// let p = Process::spawn(ns.clone(), |ns: Namespace| ns.set("answer", &42i32).is_ok())?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(true));
    /// assert_eq!(ns.get::<i32>("answer")?, Some(42));
    /// assert_eq!(ns.get::<i32>("missing")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "__getattr__")]
    pub fn get<T: DeserializeOwned>(&self, field: &str) -> Result<Option<T>, ManagerError> {
        proxy::opt_value(self.op(Op::DictGet(enc(field)?))?)
    }

    /// Removes `field`; true if it was set (Python's `del ns.field`).
    ///
    /// # Errors
    ///
    /// As [`set`](Namespace::set).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let ns = m.namespace()?;
    /// ns.set("x", &1u8)?;
    /// assert!(ns.remove("x")?);
    /// assert!(!ns.remove("x")?); // was not set any more
    /// assert_eq!(ns.get::<u8>("x")?, None);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "__delattr__")]
    pub fn remove(&self, field: &str) -> Result<bool, ManagerError> {
        match self.op(Op::DictRemove(enc(field)?))? {
            Reply::Value(old) => Ok(old.is_some()),
            other => Err(unexpected(&other)),
        }
    }

    /// True if `field` is set (Python's `hasattr(ns, field)`).
    ///
    /// # Errors
    ///
    /// As [`set`](Namespace::set).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let ns = m.namespace()?;
    /// ns.set("x", &1u8)?;
    /// assert!(ns.contains("x")?);
    /// assert!(!ns.contains("y")?);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "hasattr")]
    pub fn contains(&self, field: &str) -> Result<bool, ManagerError> {
        proxy::boolean(self.op(Op::DictContains(enc(field)?))?)
    }

    /// The names of the fields that are set, in no particular order (Python's
    /// `vars(ns)`).
    ///
    /// # Errors
    ///
    /// As [`set`](Namespace::set).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let ns = m.namespace()?;
    /// ns.set("b", &1u8)?;
    /// ns.set("a", "text")?;
    /// let mut fields = ns.fields()?;
    /// fields.sort(); // in no particular order
    /// assert_eq!(fields, ["a", "b"]);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "vars")]
    pub fn fields(&self) -> Result<Vec<String>, ManagerError> {
        proxy::values(self.op(Op::DictKeys)?)
    }

    /// Runs `f` on the value of `field` **on the server**, atomically, and
    /// returns the new value; as [`Dict::update_with`].
    ///
    /// # Errors
    ///
    /// [`ManagerError::KeyNotFound`] if `field` is not set; otherwise as
    /// [`Dict::update_with`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::ManagerError;
    ///
    /// let m = multiproc::Manager::start()?;
    /// let ns = m.namespace()?;
    /// ns.set("count", &1u32)?;
    /// assert_eq!(ns.update_with("count", |c: &mut u32| *c *= 10)?, 10);
    /// assert_eq!(ns.get::<u32>("count")?, Some(10));
    /// let missing = ns.update_with("nope", |c: &mut u32| *c += 1);
    /// assert!(matches!(missing, Err(ManagerError::KeyNotFound)));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn update_with<T, F>(&self, field: &str, f: F) -> Result<T, ManagerError>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: Fn(&mut T) + Copy + 'static,
    {
        let _ = f;
        update(
            &self.core,
            ObjKind::Dict,
            Slot::Key(enc(field)?),
            update_id::<F, T>(),
        )
    }

    /// The same object as a [`Dict`] from field names to `V`s (for a namespace
    /// whose fields all hold `V`s).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let ns = m.namespace()?;
    /// ns.set("a", &1u32)?;
    /// let d = ns.as_dict::<u32>();
    /// d.insert("b".into(), 2)?; // the same object
    /// assert_eq!(ns.get::<u32>("b")?, Some(2));
    /// assert_eq!(d.len()?, 2);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn as_dict<V: Serialize + DeserializeOwned>(&self) -> Dict<String, V> {
        Dict::from_core(self.core.clone())
    }
}
