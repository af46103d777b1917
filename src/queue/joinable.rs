//! `JoinableQueue<T>`: a [`Queue`](crate::Queue) that counts unfinished tasks.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{GetError, PutError, QueueError, TaskDoneError};
use super::queue::check_max;
use super::ring::Flavor;
use super::typed::{Typed, DEFAULT_RING_BYTES};
use crate::deadline::Deadline;

/// A [`Queue`](crate::Queue) whose consumers report each item done with
/// [`task_done`](JoinableQueue::task_done), so a producer can
/// [`join`](JoinableQueue::join) until every item put has been processed.
///
/// Every `put` adds one unfinished task (in the same commit as the item);
/// every `task_done` removes one. The count lives in the shared memory, so
/// producers and consumers in different processes see the same figure.
///
/// Crash safety and memory are as for [`Queue`](crate::Queue). A consumer
/// killed after taking an item and before its `task_done` leaves that task
/// unfinished forever (as in CPython): use [`join_timeout`](JoinableQueue::join_timeout)
/// where consumers may die.
///
/// # Examples
///
/// ```
/// use multiproc::JoinableQueue;
/// use std::time::Duration;
///
/// let q: JoinableQueue<u32> = JoinableQueue::new()?;
/// q.put(1)?;
/// q.put(2)?;
/// assert!(!q.join_timeout(Duration::from_millis(10))?);
/// while let Ok(_item) = q.try_get() {
///     q.task_done()?;
/// }
/// q.join()?;
/// assert!(q.task_done().is_err()); // more task_done calls than items
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Differences from Python's multiprocessing
///
/// As for [`Queue`](crate::Queue); `task_done` called too many times returns
/// [`TaskDoneError::TooManyCalls`] instead of raising `ValueError`.
#[doc(alias = "multiprocessing.JoinableQueue")]
pub struct JoinableQueue<T> {
    inner: Typed<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: Serialize + DeserializeOwned + 'static> JoinableQueue<T> {
    /// A joinable queue with no item limit.
    ///
    /// # Errors
    /// The memfd could not be created or mapped.
    pub fn new() -> Result<JoinableQueue<T>, QueueError> {
        Ok(JoinableQueue {
            inner: Typed::create(Flavor::Joinable, 0, DEFAULT_RING_BYTES)?,
        })
    }

    /// A joinable queue holding at most `maxsize` items.
    ///
    /// # Errors
    /// `maxsize` is 0, or the memfd could not be created or mapped.
    pub fn bounded(maxsize: usize) -> Result<JoinableQueue<T>, QueueError> {
        JoinableQueue::with_limits(Some(maxsize), DEFAULT_RING_BYTES)
    }

    /// A joinable queue with an optional item limit and a byte budget, as
    /// [`Queue::with_limits`](crate::Queue::with_limits).
    ///
    /// # Errors
    /// `max_items` is `Some(0)`, or the memfd could not be created or mapped.
    pub fn with_limits(max_items: Option<usize>, max_bytes: u64) -> Result<JoinableQueue<T>, QueueError> {
        let max = check_max(max_items)?;
        Ok(JoinableQueue {
            inner: Typed::create(Flavor::Joinable, max, max_bytes)?,
        })
    }

    /// Puts `item` at the end (one more unfinished task), waiting while full.
    ///
    /// # Errors
    /// As [`Queue::put`](crate::Queue::put).
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.inner.put(item)
    }

    /// [`put`](JoinableQueue::put), waiting at most `timeout` for room.
    ///
    /// # Errors
    /// As `put`, plus [`PutError::Timeout`].
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.inner.put_timeout(item, timeout)
    }

    /// [`put`](JoinableQueue::put) without waiting.
    ///
    /// # Errors
    /// As `put`, plus [`PutError::Full`].
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        self.inner.try_put(item)
    }

    /// Takes the oldest item, waiting while the queue is empty. Call
    /// [`task_done`](JoinableQueue::task_done) once it is processed.
    ///
    /// # Errors
    /// As [`Queue::get`](crate::Queue::get).
    pub fn get(&self) -> Result<T, GetError> {
        self.inner.get()
    }

    /// [`get`](JoinableQueue::get), waiting at most `timeout`.
    ///
    /// # Errors
    /// As `get`, plus [`GetError::Timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.inner.get_timeout(timeout)
    }

    /// [`get`](JoinableQueue::get) without waiting.
    ///
    /// # Errors
    /// As `get`, plus [`GetError::Empty`].
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T, GetError> {
        self.inner.try_get()
    }

    /// Marks one task done; wakes the joiners when none is left.
    ///
    /// # Errors
    /// [`TaskDoneError::TooManyCalls`] if every item put is already done.
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        self.inner.task_done()
    }

    /// Waits until every item put has had its `task_done`.
    ///
    /// # Errors
    /// The operating system refused a lock or futex operation.
    pub fn join(&self) -> Result<(), QueueError> {
        self.inner.join_deadline(Deadline::NEVER).map(|_| ())
    }

    /// [`join`](JoinableQueue::join), waiting at most `timeout`: `Ok(true)` if
    /// every task is done, `Ok(false)` on timeout.
    ///
    /// # Errors
    /// As `join`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, QueueError> {
        self.inner.join_deadline(Deadline::after(timeout))
    }

    /// Items put and not yet marked done, exact at the moment of the call.
    pub fn unfinished_tasks(&self) -> usize {
        usize::try_from(self.inner.ring.unfinished()).unwrap_or(usize::MAX)
    }

    /// The number of items in the queue, exact at the moment of the call.
    #[doc(alias = "qsize")]
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True if the queue holds no item.
    #[doc(alias = "empty")]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if the queue holds its maximum number of items.
    #[doc(alias = "full")]
    pub fn is_full(&self) -> bool {
        self.inner.is_full()
    }

    /// The item limit, `None` for none.
    pub fn maxsize(&self) -> Option<usize> {
        self.inner.maxsize()
    }

    /// Closes the queue for every process, as [`Queue::close`](crate::Queue::close).
    /// Joiners are not woken: `join` still waits for the tasks.
    pub fn close(&self) {
        self.inner.ring.close()
    }

    /// True once any process closed the queue.
    pub fn is_closed(&self) -> bool {
        self.inner.ring.is_closed()
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned + 'static> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(JoinableQueue {
            inner: Typed::deserialize(d, Flavor::Joinable)?,
        })
    }
}
