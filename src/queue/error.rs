//! Errors of the queues. Failed puts give the item back.

use std::fmt;
use std::io;

use crate::codec::CodecError;

/// Why an item was not put. Every variant gives the item back
/// ([`PutError::into_inner`]); nothing was added to the queue.
///
/// # Examples
///
/// ```
/// use multiproc::{PutError, Queue};
/// let q = Queue::bounded(1)?;
/// q.put(1u8)?;
/// match q.try_put(2) {
///     Err(PutError::Full(item)) => assert_eq!(item, 2), // the item comes back
///     other => panic!("expected Full, got {other:?}"),
/// }
/// q.close();
/// assert!(matches!(q.put(3), Err(PutError::Closed(3))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub enum PutError<T> {
    /// The queue is full (`try_put`).
    Full(T),
    /// The queue stayed full until the timeout (`put_timeout`).
    Timeout(T),
    /// The queue was closed (by any process).
    Closed(T),
    /// The item's `Serialize` failed, or it holds a handle (no descriptor can
    /// travel through shared memory).
    Encode(T, CodecError),
    /// The operating system refused an operation on the queue's lock or futex.
    Io(T, io::Error),
}

impl<T> PutError<T> {
    /// The item that was not put.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Queue;
    /// let q = Queue::new()?;
    /// q.close();
    /// let err = q.put(vec![1u8, 2, 3]).unwrap_err();
    /// assert_eq!(err.into_inner(), [1, 2, 3]); // nothing is lost
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(t)
            | PutError::Timeout(t)
            | PutError::Closed(t)
            | PutError::Encode(t, _)
            | PutError::Io(t, _) => t,
        }
    }

    /// True for [`PutError::Full`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Queue;
    /// let q = Queue::bounded(1)?;
    /// q.put(1u8)?;
    /// let err = q.try_put(2).unwrap_err();
    /// assert!(err.is_full() && !err.is_timeout() && !err.is_closed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, PutError::Full(_))
    }

    /// True for [`PutError::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Queue;
    /// use std::time::Duration;
    /// let q = Queue::bounded(1)?;
    /// q.put(1u8)?;
    /// let err = q.put_timeout(2, Duration::from_millis(10)).unwrap_err();
    /// assert!(err.is_timeout() && !err.is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, PutError::Timeout(_))
    }

    /// True for [`PutError::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Queue;
    /// let q = Queue::new()?;
    /// q.close();
    /// assert!(q.put(1u8).unwrap_err().is_closed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, PutError::Closed(_))
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Timeout(_) => f.write_str("Timeout(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Encode(_, e) => f.debug_tuple("Encode").field(&"..").field(e).finish(),
            PutError::Io(_, e) => f.debug_tuple("Io").field(&"..").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("the queue is full"),
            PutError::Timeout(_) => f.write_str("timed out waiting for room in the queue"),
            PutError::Closed(_) => f.write_str("the queue is closed"),
            PutError::Encode(_, e) => write!(f, "cannot put the item: {e}"),
            PutError::Io(_, e) => write!(f, "queue operation failed: {e}"),
        }
    }
}

impl<T> std::error::Error for PutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PutError::Encode(_, e) => Some(e),
            PutError::Io(_, e) => Some(e),
            _ => None,
        }
    }
}

/// Why no item was taken.
///
/// # Examples
///
/// ```
/// use multiproc::{GetError, Queue};
/// use std::time::Duration;
/// let q: Queue<u8> = Queue::new()?;
/// assert!(matches!(q.try_get(), Err(GetError::Empty)));
/// assert!(matches!(q.get_timeout(Duration::from_millis(5)), Err(GetError::Timeout)));
/// q.close();
/// assert!(matches!(q.get(), Err(GetError::Closed)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum GetError {
    /// The queue is empty (`try_get`).
    Empty,
    /// The queue stayed empty until the timeout (`get_timeout`).
    Timeout,
    /// The queue is closed and empty: no item will ever come.
    Closed,
    /// An item was taken but could not be decoded as the queue's type (another
    /// process put a different type through a handle of the same queue).
    /// The item is gone from the queue.
    Decode(CodecError),
    /// The operating system refused an operation on the queue's lock or futex,
    /// or the shared memory was found corrupted (its items were discarded).
    Io(io::Error),
}

impl GetError {
    /// True for [`GetError::Empty`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Queue;
    /// let q: Queue<u8> = Queue::new()?;
    /// let err = q.try_get().unwrap_err();
    /// assert!(err.is_empty() && !err.is_timeout() && !err.is_closed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        matches!(self, GetError::Empty)
    }

    /// True for [`GetError::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Queue;
    /// use std::time::Duration;
    /// let q: Queue<u8> = Queue::new()?;
    /// let err = q.get_timeout(Duration::from_millis(5)).unwrap_err();
    /// assert!(err.is_timeout() && !err.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, GetError::Timeout)
    }

    /// True for [`GetError::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Queue;
    /// let q: Queue<u8> = Queue::new()?;
    /// q.close();
    /// let err = q.try_get().unwrap_err();
    /// assert!(err.is_closed() && !err.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, GetError::Closed)
    }
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Empty => f.write_str("the queue is empty"),
            GetError::Timeout => f.write_str("timed out waiting for an item"),
            GetError::Closed => f.write_str("the queue is closed and empty"),
            GetError::Decode(e) => write!(f, "cannot decode the item taken from the queue: {e}"),
            GetError::Io(e) => write!(f, "queue operation failed: {e}"),
        }
    }
}

impl std::error::Error for GetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GetError::Decode(e) => Some(e),
            GetError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`JoinableQueue::task_done`](crate::JoinableQueue::task_done) failed.
///
/// # Examples
///
/// ```
/// use multiproc::{JoinableQueue, TaskDoneError};
/// let q: JoinableQueue<u8> = JoinableQueue::new()?;
/// assert!(matches!(q.task_done(), Err(TaskDoneError::TooManyCalls))); // nothing was put
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum TaskDoneError {
    /// Called more times than items were put (CPython raises `ValueError`).
    TooManyCalls,
    /// The operating system refused an operation on the queue's lock.
    Io(io::Error),
}

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskDoneError::TooManyCalls => f.write_str("task_done() called more times than items were put"),
            TaskDoneError::Io(e) => write!(f, "task_done failed: {e}"),
        }
    }
}

impl std::error::Error for TaskDoneError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TaskDoneError::Io(e) => Some(e),
            TaskDoneError::TooManyCalls => None,
        }
    }
}

/// A queue could not be created or attached, or `join` failed.
///
/// # Examples
///
/// ```
/// use multiproc::{Queue, QueueError};
/// use std::error::Error;
/// let err: QueueError = Queue::<u8>::bounded(0).unwrap_err();
/// assert!(err.to_string().contains("maxsize must be at least 1"));
/// let kind = err.source().and_then(|e| e.downcast_ref::<std::io::Error>()).map(|e| e.kind());
/// assert_eq!(kind, Some(std::io::ErrorKind::InvalidInput));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct QueueError {
    what: &'static str,
    source: io::Error,
}

impl QueueError {
    pub(crate) fn new(what: &'static str, source: io::Error) -> QueueError {
        QueueError { what, source }
    }
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
