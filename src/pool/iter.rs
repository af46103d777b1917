//! [`Imap`]: the lazy iterators of `imap` and `imap_unordered`.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::deadline::Deadline;
use crate::pool::dispatcher::{Job, Sink};
use crate::pool::error::TaskError;
use crate::pool::pool::Pool;
use crate::pool::protocol::{task_id, JobOutput};

/// [`Imap::next_timeout`] found no result in time (the iteration can go on).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use multiproc::{ImapTimeout, Pool};
///
/// let pool = Pool::new(1)?;
/// let mut it = pool.imap(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), [300]);
/// assert_eq!(it.next_timeout(Duration::ZERO).unwrap_err(), ImapTimeout);
/// assert!(matches!(it.next_timeout(Duration::from_secs(30)), Ok(Some(Ok(())))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImapTimeout;

impl fmt::Display for ImapTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no result was ready in time")
    }
}

impl std::error::Error for ImapTimeout {}

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`]: yields one
/// `Result<R, TaskError>` per input item, in input order (`imap`) or in the
/// order the tasks finish (`imap_unordered`).
///
/// Input items are pulled and submitted lazily: at most `4 * processes` jobs
/// are submitted and not yet consumed. Dropping the iterator stops submitting; jobs already in
/// flight finish and their results are discarded.
///
/// # Differences from Python's multiprocessing
/// A failed task yields an `Err` for its item and the iteration goes on
/// (Python raises and the iterator is then still usable, the same idea).
/// Python's `next(timeout)` is [`next_timeout`](Imap::next_timeout).
///
/// # Examples
/// ```
/// use multiproc::{Pool, TaskError};
///
/// let pool = Pool::new(2)?;
/// let out: Vec<Result<u32, TaskError>> = pool
///     .imap(|x: u32| if x == 2 { panic!("two") } else { x * 10 }, 1..=3)
///     .collect();
/// assert_eq!(out[0], Ok(10));
/// assert!(matches!(out[1], Err(TaskError::Panicked { .. })));
/// assert_eq!(out[2], Ok(30)); // the iteration goes on after a failed task
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "IMapIterator")]
pub struct Imap<'a, A, R, I> {
    pool: &'a Pool,
    input: I,
    input_done: bool,
    entry: i64,
    chunksize: usize,
    ordered: bool,
    window: usize,
    tx: Sender<(usize, JobOutput)>,
    rx: Receiver<(usize, JobOutput)>,
    next_seq: usize,
    yield_seq: usize,
    in_flight: usize,
    sizes: HashMap<usize, usize>,
    done: BTreeMap<usize, JobOutput>,
    ready: VecDeque<Result<R, TaskError>>,
    _types: PhantomData<fn(A) -> R>,
}

impl<A, R, I> fmt::Debug for Imap<'_, A, R, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Imap")
            .field("ordered", &self.ordered)
            .field("chunksize", &self.chunksize)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl<'a, A, R, I> Imap<'a, A, R, I>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + Any,
    I: Iterator<Item = A>,
{
    pub(crate) fn new<F>(pool: &'a Pool, _f: F, input: I, chunksize: usize, ordered: bool) -> Self
    where
        F: Fn(A) -> R + Copy + 'static,
    {
        let (tx, rx) = mpsc::channel();
        Imap {
            pool,
            input,
            input_done: false,
            entry: task_id::<F, A, R>(),
            chunksize: chunksize.max(1),
            ordered,
            window: (4 * pool.processes()).max(2),
            tx,
            rx,
            next_seq: 0,
            yield_seq: 0,
            in_flight: 0,
            sizes: HashMap::new(),
            done: BTreeMap::new(),
            ready: VecDeque::new(),
            _types: PhantomData,
        }
    }

    fn completed(&mut self, seq: usize, out: JobOutput) {
        if self.ordered {
            self.done.insert(seq, out);
        } else {
            self.expand(seq, out);
        }
    }

    fn expand(&mut self, seq: usize, out: JobOutput) {
        let n = self.sizes.remove(&seq).unwrap_or(0);
        match out {
            Ok(items) => self.ready.extend(items.decode::<R>()),
            Err(e) => self.ready.extend((0..n).map(|_| Err(e.clone()))),
        }
    }

    /// Submits chunks until the window is full or the input ends. The window
    /// counts chunks in flight and, for `imap`, finished chunks waiting for an
    /// earlier one: what is read ahead of the consumer stays bounded even when
    /// one task is slow.
    fn fill(&mut self) {
        while self.in_flight + self.done.len() < self.window && !self.input_done {
            let chunk: Vec<A> = self.input.by_ref().take(self.chunksize).collect();
            if chunk.len() < self.chunksize {
                self.input_done = true;
            }
            if chunk.is_empty() {
                break;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.sizes.insert(seq, chunk.len());
            match self.pool.encode_job(self.entry, chunk.iter()) {
                Ok(frame) => {
                    self.in_flight += 1;
                    self.pool
                        .submit(vec![Job::new(frame, Sink::Chan(self.tx.clone(), seq))]);
                }
                Err(e) => self.completed(seq, Err(e)),
            }
        }
    }

    /// The next result, waiting at most `timeout`; `Ok(None)` at the end.
    ///
    /// # Errors
    /// [`ImapTimeout`] if no result is ready in time; the next call goes on.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = multiproc::Pool::new(2)?;
    /// let mut it = pool.imap(|x: u8| x + 1, [1, 2]);
    /// let t = Duration::from_secs(30);
    /// assert_eq!(it.next_timeout(t)?, Some(Ok(2)));
    /// assert_eq!(it.next_timeout(t)?, Some(Ok(3)));
    /// assert_eq!(it.next_timeout(t)?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Result<R, TaskError>>, ImapTimeout> {
        self.next_deadline(Deadline::after(timeout))
    }

    fn next_deadline(&mut self, deadline: Deadline) -> Result<Option<Result<R, TaskError>>, ImapTimeout> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Ok(Some(item));
            }
            if self.ordered {
                if let Some(out) = self.done.remove(&self.yield_seq) {
                    let seq = self.yield_seq;
                    self.yield_seq += 1;
                    self.expand(seq, out);
                    continue;
                }
            }
            let had = self.ready.len();
            self.fill();
            if self.ready.len() != had || (self.ordered && self.done.contains_key(&self.yield_seq)) {
                continue;
            }
            if self.in_flight == 0 {
                return Ok(None);
            }
            let got = match deadline.remaining() {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => self.rx.recv_timeout(d),
            };
            match got {
                Ok((seq, out)) => {
                    self.in_flight -= 1;
                    self.completed(seq, out);
                }
                Err(RecvTimeoutError::Timeout) => return Err(ImapTimeout),
                // We hold a sender: cannot happen. End rather than spin.
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }
}

impl<A, R, I> Iterator for Imap<'_, A, R, I>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + Any,
    I: Iterator<Item = A>,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_deadline(Deadline::NEVER).unwrap_or(None)
    }
}
