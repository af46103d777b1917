//! Synchronisation objects held by a manager: [`LockProxy`], [`EventProxy`],
//! [`QueueProxy`].
//!
//! They block on the server, not in shared memory: slower than the
//! shared-memory primitives, but reachable from any process that can reach the
//! manager, remote ones included.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::manager::endpoint::Endpoint;
use crate::manager::error::ManagerError;
use crate::manager::protocol::{ObjKind, Op, Request};
use crate::manager::proxy::{self, enc, proxy_common, Core};

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A lock held by a [`Manager`](crate::Manager)'s server (Python's `Manager().Lock()`).
///
/// The lock belongs to the connection that acquired it, and the server releases
/// it when that connection ends: a holder that dies (even by SIGKILL) never
/// wedges the others. [`acquire`](LockProxy::acquire) returns a guard that
/// releases on drop. Waiters get the lock in the order they asked for it.
///
/// While a thread holds a guard, its calls to the same manager (through any
/// proxy) go over the guard's connection. A call there that fails in a way that
/// closes the connection ([`ManagerError::Timeout`], [`ManagerError::ManagerGone`])
/// releases the lock with it; the guard's [`release`](LockProxyGuard::release)
/// then reports [`ManagerError::ManagerGone`].
///
/// # Examples
///
/// ```
/// let m = multiproc::Manager::start()?;
/// let (lock, d) = (m.lock()?, m.dict::<String, i64>()?);
/// d.insert("count".into(), 1)?;
/// {
///     let _g = lock.acquire()?;
///     let n = d.get("count")?.unwrap_or(0);
///     d.insert("count".into(), n - 1)?;
/// } // released here
/// assert!(lock.try_acquire()?.is_some());
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
///
/// # Differences from Python's multiprocessing
///
/// Guard-based; a dead holder's lock is released by the server (Python's
/// manager lock stays held forever).
#[doc(alias = "Lock")]
#[doc(alias = "AcquirerProxy")]
pub struct LockProxy {
    core: Core,
    _t: PhantomData<()>,
}

proxy_common!(LockProxy, ObjKind::Lock);

/// Holds a [`LockProxy`]'s lock; releases it on drop.
///
/// # Examples
///
/// ```
/// let m = multiproc::Manager::start()?;
/// let lock = m.lock()?;
/// let guard = lock.acquire()?;
/// assert!(lock.try_acquire()?.is_none()); // held by the guard
/// drop(guard);
/// assert!(lock.try_acquire()?.is_some());
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockProxyGuard<'a> {
    ep: &'a Endpoint,
    /// The pinned connection that holds the lock (`None` once released).
    pin: Option<u64>,
    id: u64,
}

impl fmt::Debug for LockProxyGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockProxyGuard").field("id", &self.id).finish()
    }
}

impl LockProxyGuard<'_> {
    /// Releases the lock now, reporting whether the server could be told.
    ///
    /// # Errors
    ///
    /// [`ManagerError::ManagerGone`] if the server is gone (the lock died with it).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Manager, ManagerError};
    ///
    /// let m = Manager::start()?;
    /// let lock = m.lock()?;
    /// lock.acquire()?.release()?;
    /// let guard = lock.acquire()?; // free again after the release
    /// m.shutdown()?;
    /// assert!(matches!(guard.release(), Err(ManagerError::ManagerGone)));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn release(mut self) -> Result<(), ManagerError> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<(), ManagerError> {
        let Some(token) = self.pin.take() else {
            return Ok(());
        };
        let req = Request::Call {
            id: self.id,
            kind: ObjKind::Lock,
            op: Op::LockRelease,
        };
        let deadline = self.ep.deadline();
        let mut lease = self.ep.unpin(token, deadline)?;
        // Waits for the server's answer: once a guard is dropped, any later
        // request (of any process) finds the lock released.
        proxy::unit(lease.call(&req, deadline)?)
    }
}

impl Drop for LockProxyGuard<'_> {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

impl LockProxy {
    fn acquire_inner(&self, wait: Option<Duration>) -> Result<Option<LockProxyGuard<'_>>, ManagerError> {
        let ep = &self.core.ep.0;
        let mut lease = ep.lease_unpinned()?;
        let req = Request::Call {
            id: self.core.id,
            kind: ObjKind::Lock,
            op: Op::LockAcquire(wait.map(ms)),
        };
        match lease.call(&req, ep.deadline_after(wait)) {
            Ok(r) => {
                proxy::unit(r)?;
                Ok(Some(LockProxyGuard {
                    ep,
                    pin: Some(lease.pin()),
                    id: self.core.id,
                }))
            }
            Err(ManagerError::Timeout) if wait.is_some() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for the lock and takes it.
    ///
    /// # Errors
    ///
    /// [`ManagerError::ManagerGone`] if the server is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{LockProxy, Manager, Process};
    /// use std::time::Duration;
    ///
    /// let m = Manager::start()?;
    /// let lock = m.lock()?;
    /// let _guard = lock.acquire()?;
    /// // Another process cannot take it while this one holds it.
    /// let p = Process::spawn(lock.clone(), |l: LockProxy| matches!(l.try_acquire(), Ok(None)))?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire(&self) -> Result<LockProxyGuard<'_>, ManagerError> {
        self.acquire_inner(None)?.ok_or(ManagerError::Timeout)
    }

    /// Takes the lock if it is free now.
    ///
    /// # Errors
    ///
    /// As [`acquire`](LockProxy::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let lock = m.lock()?;
    /// let held = lock.try_acquire()?;
    /// assert!(held.is_some());
    /// assert!(lock.try_acquire()?.is_none()); // taken
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn try_acquire(&self) -> Result<Option<LockProxyGuard<'_>>, ManagerError> {
        self.acquire_inner(Some(Duration::ZERO))
    }

    /// Waits at most `timeout` for the lock: `Ok(None)` if it stayed taken.
    ///
    /// # Errors
    ///
    /// As [`acquire`](LockProxy::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{LockProxy, Manager, Process};
    /// use std::time::Duration;
    ///
    /// let m = Manager::start()?;
    /// let lock = m.lock()?;
    /// // The child takes the lock and exits without releasing it.
    /// let p = Process::spawn(lock.clone(), |l: LockProxy| l.acquire().map(std::mem::forget).is_ok())?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(true));
    /// // The server released it when the child's connection closed.
    /// assert!(lock.acquire_timeout(Duration::from_secs(5))?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<LockProxyGuard<'_>>, ManagerError> {
        self.acquire_inner(Some(timeout))
    }
}

/// An event held by a [`Manager`](crate::Manager)'s server (Python's `Manager().Event()`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let m = multiproc::Manager::start()?;
/// let e = m.event()?;
/// assert!(!e.wait_timeout(Duration::from_millis(10))?);
/// e.set()?;
/// assert!(e.is_set()? && e.wait_timeout(Duration::from_secs(5))?);
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
#[doc(alias = "Event")]
pub struct EventProxy {
    core: Core,
    _t: PhantomData<()>,
}

proxy_common!(EventProxy, ObjKind::Event);

impl EventProxy {
    fn op(&self, op: Op) -> Result<crate::manager::protocol::Reply, ManagerError> {
        self.core.op(ObjKind::Event, op)
    }

    /// Sets the flag and wakes every waiter.
    ///
    /// # Errors
    ///
    /// [`ManagerError::ManagerGone`] if the server is gone, [`ManagerError::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{EventProxy, Manager, Process};
    /// use std::time::Duration;
    ///
    /// let m = Manager::start()?;
    /// let e = m.event()?;
    /// let p = Process::spawn(e.clone(), |e: EventProxy| e.wait_timeout(Duration::from_secs(30)).ok())?;
    /// e.set()?; // wakes the child
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(Some(true)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self) -> Result<(), ManagerError> {
        proxy::unit(self.op(Op::EventSet)?)
    }

    /// Clears the flag.
    ///
    /// # Errors
    ///
    /// As [`set`](EventProxy::set).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let m = multiproc::Manager::start()?;
    /// let e = m.event()?;
    /// e.set()?;
    /// e.clear()?;
    /// assert!(!e.is_set()?);
    /// assert!(!e.wait_timeout(Duration::from_millis(10))?);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn clear(&self) -> Result<(), ManagerError> {
        proxy::unit(self.op(Op::EventClear)?)
    }

    /// True if the flag is set.
    ///
    /// # Errors
    ///
    /// As [`set`](EventProxy::set).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let e = m.event()?;
    /// assert!(!e.is_set()?);
    /// e.set()?;
    /// assert!(e.is_set()?);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn is_set(&self) -> Result<bool, ManagerError> {
        proxy::boolean(self.op(Op::EventIsSet)?)
    }

    fn wait_inner(&self, wait: Option<Duration>) -> Result<bool, ManagerError> {
        let ep = &self.core.ep.0;
        let req = Request::Call {
            id: self.core.id,
            kind: ObjKind::Event,
            op: Op::EventWait(wait.map(ms)),
        };
        proxy::boolean(ep.lease()?.call(&req, ep.deadline_after(wait))?)
    }

    /// Waits until the flag is set.
    ///
    /// # Errors
    ///
    /// As [`set`](EventProxy::set).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{EventProxy, Manager, Process};
    /// use std::time::Duration;
    ///
    /// let m = Manager::start()?;
    /// let e = m.event()?;
    /// let p = Process::spawn(e.clone(), |e: EventProxy| e.set().is_ok())?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(true));
    /// e.wait()?; // set by the child: returns at once
    /// assert!(e.is_set()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self) -> Result<(), ManagerError> {
        self.wait_inner(None).map(|_| ())
    }

    /// Waits at most `timeout` for the flag: `true` if it is set.
    ///
    /// # Errors
    ///
    /// As [`set`](EventProxy::set).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let m = multiproc::Manager::start()?;
    /// let e = m.event()?;
    /// assert!(!e.wait_timeout(Duration::from_millis(10))?); // not set: times out
    /// e.set()?;
    /// assert!(e.wait_timeout(Duration::from_secs(5))?);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, ManagerError> {
        self.wait_inner(Some(timeout))
    }
}

/// A FIFO queue held by a [`Manager`](crate::Manager)'s server (Python's
/// `Manager().Queue()`), reachable by remote clients too.
///
/// # Examples
///
/// ```
/// let m = multiproc::Manager::start()?;
/// let q = m.queue::<String>()?;
/// q.put("job".to_string())?;
/// assert_eq!(q.len()?, 1);
/// assert_eq!(q.get()?, "job");
/// assert!(matches!(q.try_get(), Err(multiproc::ManagerError::Empty)));
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
///
/// # Differences from Python's multiprocessing
///
/// For processes of one program, the shared-memory queue is much faster; this
/// one is for remote clients and for symmetry with Python's manager.
#[doc(alias = "Queue")]
pub struct QueueProxy<T> {
    core: Core,
    _t: PhantomData<fn() -> T>,
}

proxy_common!(QueueProxy<T>, ObjKind::Queue);

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    fn put_inner(&self, item: &T, wait: Option<Duration>) -> Result<(), ManagerError> {
        let ep = &self.core.ep.0;
        let req = Request::Call {
            id: self.core.id,
            kind: ObjKind::Queue,
            op: Op::QueuePut(enc(item)?, wait.map(ms)),
        };
        proxy::unit(ep.lease()?.call(&req, ep.deadline_after(wait))?)
    }

    fn get_inner(&self, wait: Option<Duration>) -> Result<T, ManagerError> {
        let ep = &self.core.ep.0;
        let req = Request::Call {
            id: self.core.id,
            kind: ObjKind::Queue,
            op: Op::QueueGet(wait.map(ms)),
        };
        proxy::value(ep.lease()?.call(&req, ep.deadline_after(wait))?)
    }

    /// Appends `item`, waiting for room in a bounded queue.
    ///
    /// # Errors
    ///
    /// [`ManagerError::ManagerGone`], [`ManagerError::Codec`] (nothing sent).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let q = m.queue::<u32>()?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// assert_eq!(q.get()?, 1); // first in, first out
    /// assert_eq!(q.get()?, 2);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn put(&self, item: T) -> Result<(), ManagerError> {
        self.put_inner(&item, None)
    }

    /// Appends `item` if there is room now.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Full`]; otherwise as [`put`](QueueProxy::put).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::ManagerError;
    ///
    /// let m = multiproc::Manager::start()?;
    /// let q = m.bounded_queue::<u32>(1)?;
    /// q.try_put(1)?;
    /// assert!(matches!(q.try_put(2), Err(ManagerError::Full)));
    /// assert_eq!(q.len()?, 1); // the item that did not fit is not in
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn try_put(&self, item: T) -> Result<(), ManagerError> {
        self.put_inner(&item, Some(Duration::ZERO))
    }

    /// Appends `item`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Full`] after the timeout; otherwise as [`put`](QueueProxy::put).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::ManagerError;
    /// use std::time::Duration;
    ///
    /// let m = multiproc::Manager::start()?;
    /// let q = m.bounded_queue::<u32>(1)?;
    /// q.put(1)?;
    /// let r = q.put_timeout(2, Duration::from_millis(20));
    /// assert!(matches!(r, Err(ManagerError::Full)));
    /// assert_eq!(q.get()?, 1);
    /// q.put_timeout(2, Duration::from_secs(5))?; // room now
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), ManagerError> {
        self.put_inner(&item, Some(timeout))
    }

    /// Takes the oldest item, waiting for one.
    ///
    /// # Errors
    ///
    /// [`ManagerError::ManagerGone`]; [`ManagerError::Codec`] if the item is not a `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let q = m.queue::<(u8, String)>()?;
    /// q.put((1, "job".to_string()))?;
    /// assert_eq!(q.get()?, (1, "job".to_string()));
    /// assert!(q.is_empty()?);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn get(&self) -> Result<T, ManagerError> {
        self.get_inner(None)
    }

    /// Takes the oldest item if there is one now.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Empty`]; otherwise as [`get`](QueueProxy::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::ManagerError;
    ///
    /// let m = multiproc::Manager::start()?;
    /// let q = m.queue::<u32>()?;
    /// assert!(matches!(q.try_get(), Err(ManagerError::Empty)));
    /// q.put(5)?;
    /// assert_eq!(q.try_get()?, 5);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn try_get(&self) -> Result<T, ManagerError> {
        self.get_inner(Some(Duration::ZERO))
    }

    /// Takes the oldest item, waiting at most `timeout` for one.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Empty`] after the timeout; otherwise as [`get`](QueueProxy::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Manager, ManagerError, Process, QueueProxy};
    /// use std::time::Duration;
    ///
    /// let m = Manager::start()?;
    /// let q = m.queue::<String>()?;
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(ManagerError::Empty)));
    /// let p = Process::spawn(q.clone(), |q: QueueProxy<String>| q.put("from child".into()).is_ok())?;
    /// assert_eq!(q.get_timeout(Duration::from_secs(30))?, "from child");
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, ManagerError> {
        self.get_inner(Some(timeout))
    }

    /// The number of items now.
    ///
    /// # Errors
    ///
    /// [`ManagerError::ManagerGone`], [`ManagerError::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let q = m.queue::<u32>()?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// assert_eq!(q.len()?, 2);
    /// q.get()?;
    /// assert_eq!(q.len()?, 1);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "qsize")]
    pub fn len(&self) -> Result<usize, ManagerError> {
        proxy::len(self.core.op(ObjKind::Queue, Op::Len)?)
    }

    /// True if the queue holds no item now.
    ///
    /// # Errors
    ///
    /// As [`len`](QueueProxy::len).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let q = m.queue::<u32>()?;
    /// assert!(q.is_empty()?);
    /// q.put(1)?;
    /// assert!(!q.is_empty()?);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }
}
