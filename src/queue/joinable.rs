//! `JoinableQueue<T>`: a [`Queue`](crate::Queue) that counts unfinished tasks.

use std::ops::Deref;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{QueueError, TaskDoneError};
use super::queue::{check_max, Queue};
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
/// A `JoinableQueue<T>` is a [`Queue<T>`](crate::Queue) (it dereferences to
/// one, as Python's class derives from `Queue`): every method of `Queue` works
/// on it. [`close`](crate::Queue::close) does not wake joiners: `join` still
/// waits for the tasks.
///
/// # Differences from Python's multiprocessing
///
/// As for [`Queue`](crate::Queue); `task_done` called too many times returns
/// [`TaskDoneError::TooManyCalls`] instead of raising `ValueError`.
#[doc(alias = "multiprocessing.JoinableQueue")]
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> std::fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.queue.inner.fmt(f)
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T: Serialize + DeserializeOwned + 'static> JoinableQueue<T> {
    fn from_typed(inner: Typed<T>) -> JoinableQueue<T> {
        JoinableQueue {
            queue: Queue { inner },
        }
    }

    /// A joinable queue with no item limit.
    ///
    /// # Errors
    /// The memfd could not be created or mapped.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::JoinableQueue;
    /// let q = JoinableQueue::new()?;
    /// assert_eq!(q.unfinished_tasks(), 0);
    /// q.put("job".to_string())?;
    /// assert_eq!(q.unfinished_tasks(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Result<JoinableQueue<T>, QueueError> {
        Ok(JoinableQueue::from_typed(Typed::create(
            Flavor::Joinable,
            0,
            DEFAULT_RING_BYTES,
        )?))
    }

    /// A joinable queue holding at most `maxsize` items.
    ///
    /// # Errors
    /// `maxsize` is 0, or the memfd could not be created or mapped.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::JoinableQueue;
    /// let q = JoinableQueue::bounded(1)?;
    /// q.put(1u8)?;
    /// assert!(q.try_put(2).unwrap_err().is_full());
    /// assert!(JoinableQueue::<u8>::bounded(0).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bounded(maxsize: usize) -> Result<JoinableQueue<T>, QueueError> {
        JoinableQueue::with_limits(Some(maxsize), DEFAULT_RING_BYTES)
    }

    /// A joinable queue with an optional item limit and a byte budget, as
    /// [`Queue::with_limits`](crate::Queue::with_limits).
    ///
    /// # Errors
    /// `max_items` is `Some(0)`, or the memfd could not be created or mapped.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::JoinableQueue;
    /// let q: JoinableQueue<Vec<u8>> = JoinableQueue::with_limits(Some(8), 1024)?;
    /// assert_eq!(q.maxsize(), Some(8));
    /// assert!(JoinableQueue::<u8>::with_limits(Some(0), 1024).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_limits(max_items: Option<usize>, max_bytes: u64) -> Result<JoinableQueue<T>, QueueError> {
        let max = check_max(max_items)?;
        Ok(JoinableQueue::from_typed(Typed::create(
            Flavor::Joinable,
            max,
            max_bytes,
        )?))
    }

    /// Marks one task done; wakes the joiners when none is left.
    ///
    /// # Errors
    /// [`TaskDoneError::TooManyCalls`] if every item put is already done.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{JoinableQueue, TaskDoneError};
    /// let q = JoinableQueue::new()?;
    /// q.put(1u8)?;
    /// q.get()?; // taken, not yet done
    /// assert_eq!(q.unfinished_tasks(), 1);
    /// q.task_done()?;
    /// assert_eq!(q.unfinished_tasks(), 0);
    /// assert!(matches!(q.task_done(), Err(TaskDoneError::TooManyCalls)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        self.queue.inner.task_done()
    }

    /// Waits until every item put has had its `task_done`.
    ///
    /// # Errors
    /// The operating system refused a lock or futex operation.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::JoinableQueue;
    /// let q = JoinableQueue::new()?;
    /// q.put(1u8)?;
    /// q.put(2)?;
    /// while let Ok(_item) = q.try_get() {
    ///     q.task_done()?;
    /// }
    /// q.join()?; // every task is done: returns at once
    /// assert_eq!(q.unfinished_tasks(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(&self) -> Result<(), QueueError> {
        self.queue.inner.join_deadline(Deadline::NEVER).map(|_| ())
    }

    /// [`join`](JoinableQueue::join), waiting at most `timeout`: `Ok(true)` if
    /// every task is done, `Ok(false)` on timeout.
    ///
    /// # Errors
    /// As `join`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{JoinableQueue, Process};
    /// use std::time::Duration;
    ///
    /// fn consume(q: JoinableQueue<u32>) -> u32 {
    ///     let mut sum = 0;
    ///     for _ in 0..3 {
    ///         sum += q.get_timeout(Duration::from_secs(30)).unwrap();
    ///         q.task_done().unwrap();
    ///     }
    ///     sum
    /// }
    ///
    /// let q = JoinableQueue::new()?;
    /// for i in 1..=3 {
    ///     q.put(i)?;
    /// }
    /// assert!(!q.join_timeout(Duration::from_millis(10))?); // nobody consumed yet
    /// let child = Process::spawn(q.clone(), consume)?;
    /// assert!(q.join_timeout(Duration::from_secs(30))?); // the child marked all three done
    /// assert_eq!(child.join_timeout(Duration::from_secs(30))?, Some(6));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, QueueError> {
        self.queue.inner.join_deadline(Deadline::after(timeout))
    }

    /// Items put and not yet marked done, exact at the moment of the call.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::JoinableQueue;
    /// let q = JoinableQueue::new()?;
    /// q.put('a')?;
    /// q.put('b')?;
    /// assert_eq!(q.unfinished_tasks(), 2);
    /// q.get()?;
    /// assert_eq!(q.unfinished_tasks(), 2); // taken is not done
    /// q.task_done()?;
    /// assert_eq!(q.unfinished_tasks(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unfinished_tasks(&self) -> usize {
        usize::try_from(self.queue.inner.ring.unfinished()).unwrap_or(usize::MAX)
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.queue.inner.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned + 'static> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(JoinableQueue::from_typed(Typed::deserialize(
            d,
            Flavor::Joinable,
        )?))
    }
}
