//! `SimpleQueue<T>`: the minimal queue (put, get, is_empty, close).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{GetError, PutError, QueueError};
use super::ring::Flavor;
use super::typed::{Typed, DEFAULT_RING_BYTES};

/// A simplified unbounded queue: `put`, `get`, `is_empty`, `close`.
///
/// The same shared-memory queue as [`Queue`](crate::Queue) (same crash
/// safety, same memory use), with CPython's `SimpleQueue` surface plus
/// `try_get`/`get_timeout` so that no wait has to be unbounded.
///
/// # Examples
///
/// ```
/// let q = multiproc::SimpleQueue::new()?;
/// assert!(q.is_empty());
/// q.put(("job".to_string(), 7u64))?;
/// assert!(!q.is_empty());
/// assert_eq!(q.get()?, ("job".to_string(), 7));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Differences from Python's multiprocessing
///
/// CPython's `SimpleQueue` is a pipe and a lock; a process killed holding the
/// lock blocks every other user. Here the lock is robust.
#[doc(alias = "multiprocessing.SimpleQueue")]
pub struct SimpleQueue<T> {
    inner: Typed<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: Serialize + DeserializeOwned + 'static> SimpleQueue<T> {
    /// A new, empty queue.
    ///
    /// # Errors
    /// The memfd could not be created or mapped.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::SimpleQueue;
    /// let q: SimpleQueue<u8> = SimpleQueue::new()?;
    /// assert!(q.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Result<SimpleQueue<T>, QueueError> {
        Ok(SimpleQueue {
            inner: Typed::create(Flavor::Simple, 0, DEFAULT_RING_BYTES)?,
        })
    }

    /// Puts `item` at the end.
    ///
    /// # Errors
    /// As [`Queue::put`](crate::Queue::put).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Process, SimpleQueue};
    /// use std::time::Duration;
    /// let q: SimpleQueue<String> = SimpleQueue::new()?;
    /// let child = Process::spawn(q.clone(), |q: SimpleQueue<String>| {
    ///     q.put("from the child".to_string()).is_ok()
    /// })?;
    /// assert_eq!(q.get_timeout(Duration::from_secs(30))?, "from the child");
    /// assert_eq!(child.join_timeout(Duration::from_secs(30))?, Some(true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.inner.put(item)
    }

    /// Takes the oldest item, waiting while the queue is empty.
    ///
    /// # Errors
    /// As [`Queue::get`](crate::Queue::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{GetError, SimpleQueue};
    /// let q = SimpleQueue::new()?;
    /// q.put(1u8)?;
    /// q.put(2)?;
    /// q.close();
    /// assert_eq!(q.get()?, 1); // oldest first
    /// assert_eq!(q.get()?, 2);
    /// assert!(matches!(q.get(), Err(GetError::Closed)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self) -> Result<T, GetError> {
        self.inner.get()
    }

    /// [`get`](SimpleQueue::get), waiting at most `timeout`.
    ///
    /// # Errors
    /// As `get`, plus [`GetError::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{GetError, SimpleQueue};
    /// use std::time::Duration;
    /// let q: SimpleQueue<u8> = SimpleQueue::new()?;
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(GetError::Timeout)));
    /// q.put(3)?;
    /// assert_eq!(q.get_timeout(Duration::from_millis(10))?, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.inner.get_timeout(timeout)
    }

    /// [`get`](SimpleQueue::get) without waiting.
    ///
    /// # Errors
    /// As `get`, plus [`GetError::Empty`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{GetError, SimpleQueue};
    /// let q = SimpleQueue::new()?;
    /// assert!(matches!(q.try_get(), Err(GetError::Empty)));
    /// q.put(-1i64)?;
    /// assert_eq!(q.try_get()?, -1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_get(&self) -> Result<T, GetError> {
        self.inner.try_get()
    }

    /// True if the queue holds no item, exact at the moment of the call.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::SimpleQueue;
    /// let q = SimpleQueue::new()?;
    /// assert!(q.is_empty());
    /// q.put(())?;
    /// assert!(!q.is_empty());
    /// q.get()?;
    /// assert!(q.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "empty")]
    pub fn is_empty(&self) -> bool {
        self.inner.len() == 0
    }

    /// Closes the queue for every process, as [`Queue::close`](crate::Queue::close).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{GetError, PutError, SimpleQueue};
    /// let q = SimpleQueue::new()?;
    /// q.put(1u8)?;
    /// q.close();
    /// assert!(matches!(q.put(2), Err(PutError::Closed(2))));
    /// assert_eq!(q.get()?, 1);
    /// assert!(matches!(q.try_get(), Err(GetError::Closed)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) {
        self.inner.ring.close()
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned + 'static> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SimpleQueue {
            inner: Typed::deserialize(d, Flavor::Simple)?,
        })
    }
}
