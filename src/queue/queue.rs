//! `Queue<T>`: a multi-producer, multi-consumer FIFO in shared memory.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{GetError, PutError, QueueError};
use super::ring::Flavor;
use super::typed::{Typed, DEFAULT_RING_BYTES};

/// A process-safe FIFO queue in shared memory, for any serde type.
///
/// Any number of processes may put and get. Give the queue to a child as
/// (part of) its argument, or send it over a `Connection`: every handle works
/// on the same shared memory. Clones are cheap and share the queue too.
///
/// `put` encodes the item in the caller's thread (errors come back to the
/// caller) and returns once the item is in shared memory: there is no feeder
/// thread, so a producer may exit right after `put` without losing anything.
/// Small items take no system call unless a process is asleep waiting.
///
/// # Crash safety
///
/// Any user of the queue may be killed (SIGKILL) at any point, even holding one
/// of the queue's two locks (producers' side, consumers' side): they are robust
/// locks and every change to the queue is committed through a redo log, so the
/// next user repairs it and goes on. What
/// can be lost is at most the one item the dead process was handling: the item
/// a producer was putting (unless its put had committed), and the item a
/// consumer had taken (once its get has committed; a consumer killed during
/// the copy leaves the item in the queue).
///
/// # Memory
///
/// `Queue::new()` reserves 1 GiB of address space in a memfd; memory is used
/// only as the queue fills, and freed pages are returned as it drains (the
/// first 32 MiB stay resident once used, so a busy queue does not pay page
/// faults on every lap). A queue whose consumers keep up starts again at its
/// first bytes whenever a get finds it empty with no put under way (at most
/// every 256 KiB), so its records stay within its first few MiB.
/// The queue's memory goes away with the last handle in any process.
///
/// # Items larger than the queue
///
/// Items of any size go through. One whose encoding is longer than the
/// queue's ring (1 GiB, or the byte budget of [`Queue::with_limits`]) passes
/// in pieces: the producer writes a piece whenever a quarter of the ring is
/// free, and one consumer takes the pieces as they come and hands over the
/// whole item, so the queue's memory stays within its budget. Meanwhile the
/// other producers and consumers wait their turn. What changes for such an
/// item:
/// - `try_put` refuses it ([`PutError::Full`]): it cannot go in without
///   waiting for a consumer; a `put_timeout` that runs out of time, or a put
///   during which the queue is closed, gives it back, and the pieces already
///   written are dropped;
/// - a get that has taken its first piece waits for the rest, past its
///   timeout while pieces keep coming (giving up would lose the item). If
///   none comes for a second after its timeout (the producer is stopped),
///   it gives up with a timeout, and the producer, when it runs again,
///   starts the item over: nothing is lost. If the producer is killed
///   meanwhile, the get drops the pieces and goes on to the next item (it
///   notices within 200 ms);
/// - a consumer killed while taking it loses it, as any item it was taking;
///   the next get drops the rest of its pieces.
///
/// ```
/// use multiproc::{Process, Queue};
/// use std::time::Duration;
///
/// let q: Queue<Vec<u8>> = Queue::with_limits(None, 64 << 10)?; // a 64 KiB budget
/// let child = Process::spawn(q.clone(), |q: Queue<Vec<u8>>| {
///     q.put(vec![7u8; 4 << 20]).is_ok() // 4 MiB: in pieces
/// })?;
/// let item = q.get_timeout(Duration::from_secs(30))?;
/// assert!(item.len() == 4 << 20 && item.iter().all(|&b| b == 7));
/// assert_eq!(child.join_timeout(Duration::from_secs(30))?, Some(true));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Examples
///
/// ```
/// use multiproc::Queue;
///
/// let q: Queue<String> = Queue::bounded(2)?;
/// q.put("a".to_string())?;
/// q.put("b".to_string())?;
/// assert!(q.is_full());
/// assert!(q.try_put("c".to_string()).unwrap_err().is_full());
/// assert_eq!(q.get()?, "a");
/// assert_eq!(q.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Between processes: the child gets the queue as its argument.
///
/// ```
/// use multiproc::{Process, Queue};
/// use std::time::Duration;
///
/// fn worker(q: Queue<u64>) -> u64 {
///     (0..10).map(|_| q.get_timeout(Duration::from_secs(30)).unwrap()).sum()
/// }
///
/// let q: Queue<u64> = Queue::bounded(4)?;
/// let p = Process::spawn(q.clone(), worker)?;
/// for i in 0..10 {
///     q.put(i)?; // waits while the child has not made room
/// }
/// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(45));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Dropping a handle never blocks and does not close the queue; the shared
/// memory goes away with the last handle in any process.
///
/// # Differences from Python's multiprocessing
///
/// - `len`, `is_empty` and `is_full` are exact at the moment of the call
///   (CPython's `qsize`/`empty`/`full` are approximate).
/// - `put` is synchronous; encoding errors are returned, not printed by a
///   feeder thread; there is no `join_thread`/`cancel_join_thread`.
/// - `close` closes the queue for every process: later puts fail with
///   `Closed`, gets return the items left and then fail with `Closed`.
/// - A dead lock holder never wedges the queue.
#[doc(alias = "multiprocessing.Queue")]
pub struct Queue<T> {
    pub(super) inner: Typed<T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Queue<T> {
    /// A queue with no item limit (see "Memory" above for the size of one item).
    ///
    /// # Errors
    /// The memfd could not be created or mapped.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(vec![1u32, 2, 3])?;
    /// assert_eq!(q.get()?, vec![1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Result<Queue<T>, QueueError> {
        Ok(Queue {
            inner: Typed::create(Flavor::Queue, 0, DEFAULT_RING_BYTES)?,
        })
    }

    /// A queue holding at most `maxsize` items: `put` blocks while it is full.
    ///
    /// # Errors
    /// `maxsize` is 0, or the memfd could not be created or mapped.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::bounded(1)?;
    /// q.put(1u8)?;
    /// assert!(q.try_put(2).unwrap_err().is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "maxsize")]
    pub fn bounded(maxsize: usize) -> Result<Queue<T>, QueueError> {
        Queue::with_limits(Some(maxsize), DEFAULT_RING_BYTES)
    }

    /// A queue with an optional item limit and a byte budget: the encoded items
    /// in the queue (plus 8 to 15 bytes each) never take more than `max_bytes`,
    /// and `put` blocks while the next item does not fit. An item larger than
    /// the budget passes in pieces ([`Queue`], "Items larger than the queue").
    ///
    /// # Errors
    /// `max_items` is `Some(0)`, or the memfd could not be created or mapped.
    ///
    /// # Examples
    /// ```
    /// let q = multiproc::Queue::with_limits(Some(100), 1024)?;
    /// q.put(vec![1u8; 1000])?;
    /// assert!(q.try_put(vec![2u8; 100]).unwrap_err().is_full()); // not now: 1 KiB is used
    /// assert_eq!(q.get()?, vec![1u8; 1000]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_limits(max_items: Option<usize>, max_bytes: u64) -> Result<Queue<T>, QueueError> {
        let max = check_max(max_items)?;
        Ok(Queue {
            inner: Typed::create(Flavor::Queue, max, max_bytes)?,
        })
    }

    /// Puts `item` at the end, waiting while the queue is full.
    ///
    /// # Errors
    /// [`PutError::Closed`], [`PutError::Encode`] (the item's `Serialize`
    /// failed, or it holds a handle); the item comes back.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Process, Queue};
    /// use std::time::Duration;
    /// let q: Queue<String> = Queue::new()?;
    /// q.put("hello".to_string())?;
    /// let child = Process::spawn(q.clone(), |q: Queue<String>| {
    ///     q.get_timeout(Duration::from_secs(30)).ok()
    /// })?;
    /// assert_eq!(child.join_timeout(Duration::from_secs(30))?, Some(Some("hello".to_string())));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.inner.put(item)
    }

    /// [`put`](Queue::put), waiting at most `timeout` for room.
    ///
    /// # Errors
    /// As `put`, plus [`PutError::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Queue;
    /// use std::time::Duration;
    /// let q = Queue::bounded(1)?;
    /// q.put_timeout(1u8, Duration::from_millis(10))?;
    /// let err = q.put_timeout(2, Duration::from_millis(10)).unwrap_err(); // still full
    /// assert!(err.is_timeout());
    /// assert_eq!(err.into_inner(), 2); // the item comes back
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.inner.put_timeout(item, timeout)
    }

    /// [`put`](Queue::put) without waiting.
    ///
    /// # Errors
    /// As `put`, plus [`PutError::Full`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{PutError, Queue};
    /// let q = Queue::bounded(1)?;
    /// q.try_put(1u8)?;
    /// assert!(matches!(q.try_put(2), Err(PutError::Full(2))));
    /// assert_eq!(q.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        self.inner.try_put(item)
    }

    /// Takes the oldest item, waiting while the queue is empty.
    ///
    /// # Errors
    /// [`GetError::Closed`] once the queue is closed and empty;
    /// [`GetError::Decode`] if the item is not a `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{GetError, Queue};
    /// let q = Queue::new()?;
    /// q.put(1u32)?;
    /// q.put(2)?;
    /// q.close();
    /// assert_eq!(q.get()?, 1); // oldest first
    /// assert_eq!(q.get()?, 2);
    /// assert!(matches!(q.get(), Err(GetError::Closed))); // closed and empty: no wait
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self) -> Result<T, GetError> {
        self.inner.get()
    }

    /// [`get`](Queue::get), waiting at most `timeout`.
    ///
    /// # Errors
    /// As `get`, plus [`GetError::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{GetError, Process, Queue};
    /// use std::time::Duration;
    /// let q: Queue<u32> = Queue::new()?;
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(GetError::Timeout)));
    /// let child = Process::spawn(q.clone(), |q: Queue<u32>| q.put(7).is_ok())?;
    /// assert_eq!(q.get_timeout(Duration::from_secs(30))?, 7);
    /// assert_eq!(child.join_timeout(Duration::from_secs(30))?, Some(true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.inner.get_timeout(timeout)
    }

    /// [`get`](Queue::get) without waiting.
    ///
    /// # Errors
    /// As `get`, plus [`GetError::Empty`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{GetError, Queue};
    /// let q = Queue::new()?;
    /// assert!(matches!(q.try_get(), Err(GetError::Empty)));
    /// q.put('x')?;
    /// assert_eq!(q.try_get()?, 'x');
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T, GetError> {
        self.inner.try_get()
    }

    /// The number of items in the queue, exact at the moment of the call.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Queue;
    /// let q = Queue::new()?;
    /// for i in 0..3u8 {
    ///     q.put(i)?;
    /// }
    /// assert_eq!(q.len(), 3);
    /// q.get()?;
    /// assert_eq!(q.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "qsize")]
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True if the queue holds no item.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Queue;
    /// let q = Queue::new()?;
    /// assert!(q.is_empty());
    /// q.put(0u8)?;
    /// assert!(!q.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "empty")]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if the queue holds its maximum number of items (never for an
    /// unbounded queue; a byte budget can still make `put` wait).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Queue;
    /// let q = Queue::bounded(2)?;
    /// q.put(1u8)?;
    /// assert!(!q.is_full());
    /// q.put(2)?;
    /// assert!(q.is_full());
    /// let unbounded = Queue::new()?;
    /// unbounded.put(1u8)?;
    /// assert!(!unbounded.is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "full")]
    pub fn is_full(&self) -> bool {
        self.inner.is_full()
    }

    /// The item limit, `None` for none.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Queue;
    /// assert_eq!(Queue::<u8>::bounded(5)?.maxsize(), Some(5));
    /// assert_eq!(Queue::<u8>::new()?.maxsize(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn maxsize(&self) -> Option<usize> {
        self.inner.maxsize()
    }

    /// Closes the queue for every process: puts fail with `Closed` from now on;
    /// gets return the items still queued, then fail with `Closed`. Wakes every
    /// process waiting on the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{GetError, PutError, Queue};
    /// let q = Queue::new()?;
    /// q.put(1u8)?;
    /// q.close();
    /// assert!(matches!(q.put(2), Err(PutError::Closed(2))));
    /// assert_eq!(q.get()?, 1); // items already queued still come out
    /// assert!(matches!(q.get(), Err(GetError::Closed)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) {
        self.inner.ring.close()
    }

    /// True once any process closed the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Process, Queue};
    /// use std::time::Duration;
    /// let q: Queue<u8> = Queue::new()?;
    /// assert!(!q.is_closed());
    /// let child = Process::spawn(q.clone(), |q: Queue<u8>| q.close())?;
    /// assert_eq!(child.join_timeout(Duration::from_secs(30))?, Some(()));
    /// assert!(q.is_closed()); // closed by the child, for every process
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inner.ring.is_closed()
    }
}

pub(crate) fn check_max(max_items: Option<usize>) -> Result<u64, QueueError> {
    match max_items {
        None => Ok(0),
        Some(0) => Err(QueueError::new(
            "invalid queue size",
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "maxsize must be at least 1"),
        )),
        Some(n) => Ok(n as u64),
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned + 'static> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Queue {
            inner: Typed::deserialize(d, Flavor::Queue)?,
        })
    }
}
