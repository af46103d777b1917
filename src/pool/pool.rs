//! [`Pool`]: the handle the user holds; submissions are encoded here, in the
//! caller's thread, and handed to the dispatcher thread.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::deadline::Deadline;
use crate::pool::builder::PoolBuilder;
use crate::pool::dispatcher::{Config, Dispatcher, Job, Shared, Sink, Spawner};
use crate::pool::error::{PoolError, TaskError};
use crate::pool::iter::Imap;
use crate::pool::protocol::{self as proto, task_id};
use crate::pool::result::{finish_map, finish_one, AsyncResult, Slot};

/// A pool of worker processes that run `fn(A) -> R` tasks.
///
/// Tasks are fn items or closures that capture nothing (checked at compile
/// time); arguments and results are serde types, encoded with postcard.
/// Arguments are encoded in the caller's thread, so an argument that cannot be
/// encoded fails at once, in the caller, and nothing is submitted.
///
/// The failure model: a panicking task fails its job with
/// [`TaskError::Panicked`] and the worker goes on; a worker that dies (killed,
/// segfault, abort, `exit`) fails only the job it was running with
/// [`TaskError::WorkerLost`] and is replaced; with a
/// [`task_timeout`](PoolBuilder::task_timeout), a task that runs too long fails
/// with [`TaskError::TimedOut`] and its worker is killed and replaced. Jobs
/// queued behind a lost worker's job are run by the other workers.
///
/// # Scheduling
/// A dispatcher thread hands jobs to the workers over one socket each. To keep
/// workers busy through round trips, a worker whose jobs are short is sent a
/// few more (about 2 ms of work at its observed rate, at most 16 jobs, 64 KiB);
/// a worker with long jobs gets one at a time. A job queued behind a job that
/// turns out to be unexpectedly long waits for it; the `task_timeout` clock of
/// a job starts only when its worker takes it.
///
/// # Drop
/// Dropping a pool [terminates](Pool::terminate) it: workers are killed
/// (SIGKILL) and reaped, unfinished jobs fail with
/// [`TaskError::PoolTerminated`]. It takes milliseconds, not the time the
/// tasks would have taken. Call [`close`](Pool::close) and [`join`](Pool::join)
/// first to let queued work finish.
///
/// # Examples
/// ```
/// use multiproc::Pool;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.apply(square, 4)?, 16);
/// assert_eq!(pool.map(square, 1..=5)?, [1, 4, 9, 16, 25]);
/// let r = pool.apply_async(|(a, b): (u32, u32)| a.pow(b), (2, 10));
/// assert_eq!(r.get()?, 1024);
/// pool.close();
/// pool.join()?;
/// # Ok(()) }
/// ```
///
/// # Differences from Python's multiprocessing
/// - A task must be a function value (no captured state; pass state in the
///   argument). `starmap` is `map` over tuples.
/// - A dead worker fails its job instead of hanging the pool forever, and
///   `terminate` never waits for running tasks.
/// - `map` and `imap` results arrive as `Result`s: one task's error does not
///   throw away the other results of `imap`; `map` returns the first error (in
///   item order) after every chunk has finished, as Python does.
#[doc(alias = "ProcessPoolExecutor")]
pub struct Pool {
    pub(crate) shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    processes: usize,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inbox = self.shared.inbox();
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .field("closed", &inbox.closed)
            .field("terminated", &inbox.terminate)
            .finish_non_exhaustive()
    }
}

/// Marks the dispatcher finished when its thread ends, however it ends.
struct FinishGuard(Arc<Shared>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        // Nobody will take jobs any more: refuse new ones, fail queued ones.
        let queued = {
            let mut inbox = self.0.inbox();
            inbox.closed = true;
            inbox.terminate = true;
            std::mem::take(&mut inbox.jobs)
        };
        drop(queued);
        self.0.set_finished();
    }
}

/// CPython's default chunk size for `map`: `ceil(len / (4 * processes))`.
pub(crate) fn default_chunksize(len: usize, processes: usize) -> usize {
    len.div_ceil(4 * processes.max(1)).max(1)
}

impl Pool {
    /// A pool of `processes` workers with the default settings.
    ///
    /// # Errors
    /// [`PoolError::Config`] for zero processes, [`PoolError::Spawn`] if a
    /// worker cannot be started.
    ///
    /// # Examples
    /// ```
    /// use multiproc::Pool;
    ///
    /// let pool = Pool::new(2)?;
    /// assert_eq!(pool.map(|x: i64| x * x, [1, 2, 3])?, [1, 4, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(processes: usize) -> Result<Pool, PoolError> {
        Pool::builder().processes(processes).build()
    }

    /// A builder for the number of processes, start method, initializer,
    /// `max_tasks_per_child` and `task_timeout`.
    ///
    /// # Examples
    /// ```
    /// use multiproc::Pool;
    ///
    /// let pool = Pool::builder().processes(2).max_tasks_per_child(10).build()?;
    /// assert_eq!(pool.apply(|s: String| s.to_uppercase(), "hi".to_string())?, "HI");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    pub(crate) fn start(cfg: Config, spawner: Spawner) -> Result<Pool, PoolError> {
        let processes = cfg.processes;
        let (shared, wake_rx) = Shared::new().map_err(PoolError::Spawn)?;
        let (tx, rx) = mpsc::channel();
        let sh = shared.clone();
        // Workers are started from the dispatcher thread, which lives as long
        // as the pool (a daemon worker started with `Spawn` dies with the
        // thread that started it).
        let thread = std::thread::Builder::new()
            .name("multiproc-pool".into())
            .spawn(move || {
                // Even if the dispatcher panicked, `join`/`terminate` must return.
                let _finished = FinishGuard(sh.clone());
                let mut d = Dispatcher::new(sh, wake_rx, spawner, cfg);
                for _ in 0..processes {
                    if let Err(e) = d.spawn_worker() {
                        let _ = tx.send(Err(e));
                        d.abandon();
                        return;
                    }
                }
                let _ = tx.send(Ok(()));
                d.run();
            })
            .map_err(PoolError::Spawn)?;
        let started = rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the pool's dispatcher thread failed")));
        if let Err(e) = started {
            let _ = thread.join();
            return Err(PoolError::Spawn(e));
        }
        Ok(Pool {
            shared,
            thread: Mutex::new(Some(thread)),
            processes,
        })
    }

    /// The number of worker processes.
    ///
    /// # Examples
    /// ```
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.processes(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// Encodes one job of `items` for the task entry `entry`.
    pub(crate) fn encode_job<'a, A: Serialize + std::any::Any>(
        &self,
        entry: i64,
        items: impl ExactSizeIterator<Item = &'a A>,
    ) -> Result<Vec<u8>, TaskError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::with_capacity(64);
        let start = proto::begin_frame(&mut out, proto::JOB);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&entry.to_le_bytes());
        let n = u32::try_from(items.len())
            .map_err(|_| TaskError::Encode("too many items in one chunk".into()))?;
        out.extend_from_slice(&n.to_le_bytes());
        for a in items {
            proto::encode_arg(a, &mut out)?;
        }
        proto::end_frame(&mut out, start);
        Ok(out)
    }

    /// Queues jobs, failing them with `PoolClosed` if the pool is closed.
    pub(crate) fn submit(&self, jobs: Vec<Job>) {
        if let Err(jobs) = self.shared.submit(jobs) {
            for j in jobs {
                j.deliver(Err(TaskError::PoolClosed));
            }
        }
    }

    /// Runs `f(arg)` in a worker and waits for the result.
    ///
    /// # Errors
    /// The task's [`TaskError`].
    ///
    /// # Examples
    /// ```
    /// # let pool = multiproc::Pool::new(1)?;
    /// assert_eq!(pool.apply(|s: String| s.len(), "four".to_string())?, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply<F, A, R>(&self, f: F, arg: A) -> Result<R, TaskError>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.apply_async(f, arg).get()
    }

    /// Submits `f(arg)` and returns at once; the [`AsyncResult`] gives the
    /// value. An argument that cannot be encoded, or a closed pool, gives an
    /// `AsyncResult` that is already failed.
    ///
    /// # Examples
    /// ```
    /// # let pool = multiproc::Pool::new(2)?;
    /// let results: Vec<_> = (0..4u64).map(|i| pool.apply_async(|x: u64| x + 1, i)).collect();
    /// let values: Result<Vec<u64>, _> = results.into_iter().map(|r| r.get()).collect();
    /// assert_eq!(values?, [1, 2, 3, 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "submit")]
    pub fn apply_async<F, A, R>(&self, _f: F, arg: A) -> AsyncResult<R>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let slot = match self.encode_job(task_id::<F, A, R>(), std::iter::once(&arg)) {
            Ok(frame) => {
                let slot = Slot::new(1);
                self.submit(vec![Job::new(frame, Sink::Slot(slot.clone(), 0))]);
                slot
            }
            Err(e) => Slot::failed(e),
        };
        AsyncResult::new(slot, finish_one::<R>)
    }

    /// Applies `f` to every item, in parallel, and returns the results in
    /// order. Items go to workers in chunks of `ceil(len / (4 * processes))`,
    /// as in Python.
    ///
    /// # Errors
    /// Once every chunk has finished: the first [`TaskError`] in item order.
    ///
    /// # Examples
    /// ```
    /// # let pool = multiproc::Pool::new(2)?;
    /// let lens = pool.map(|s: String| s.len(), ["a", "bb", "ccc"].map(String::from))?;
    /// assert_eq!(lens, [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "starmap")]
    pub fn map<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>, TaskError>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async(f, items).get()
    }

    /// [`map`](Pool::map) with an explicit chunk size (0 counts as 1).
    ///
    /// # Errors
    /// As [`map`](Pool::map).
    ///
    /// # Examples
    /// ```
    /// # let pool = multiproc::Pool::new(2)?;
    /// // 1,000 items in 10 jobs of 100.
    /// let v = pool.map_chunked(|x: u32| x % 7, 0..1000, 100)?;
    /// assert_eq!(v.len(), 1000);
    /// assert_eq!(v[..8], [0, 1, 2, 3, 4, 5, 6, 0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_chunked<F, A, R, I>(&self, f: F, items: I, chunksize: usize) -> Result<Vec<R>, TaskError>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        let items: Vec<A> = items.into_iter().collect();
        self.map_async_vec(f, items, Some(chunksize)).get()
    }

    /// [`map`](Pool::map) without waiting: the [`AsyncResult`] gives the
    /// whole `Vec` (Python's `map_async`).
    ///
    /// # Examples
    /// ```
    /// # let pool = multiproc::Pool::new(2)?;
    /// let pending = pool.map_async(|x: u8| u32::from(x) * 2, [1, 2, 3]);
    /// // ... other work meanwhile ...
    /// assert_eq!(pending.get()?, [2, 4, 6]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "starmap_async")]
    pub fn map_async<F, A, R, I>(&self, f: F, items: I) -> AsyncResult<Vec<R>>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async_vec(f, items.into_iter().collect(), None)
    }

    /// [`map_async`](Pool::map_async) with an explicit chunk size (0 counts as 1).
    ///
    /// # Examples
    /// ```
    /// # let pool = multiproc::Pool::new(2)?;
    /// let pending = pool.map_async_chunked(|x: u64| x + 1, 0..10, 3);
    /// assert_eq!(pending.get()?, (1..=10).collect::<Vec<u64>>());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_async_chunked<F, A, R, I>(&self, f: F, items: I, chunksize: usize) -> AsyncResult<Vec<R>>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async_vec(f, items.into_iter().collect(), Some(chunksize))
    }

    fn map_async_vec<F, A, R>(&self, _f: F, items: Vec<A>, chunksize: Option<usize>) -> AsyncResult<Vec<R>>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let chunksize = chunksize
            .unwrap_or_else(|| default_chunksize(items.len(), self.processes))
            .max(1);
        let entry = task_id::<F, A, R>();
        let frames: Result<Vec<Vec<u8>>, TaskError> = items
            .chunks(chunksize)
            .map(|c| self.encode_job(entry, c.iter()))
            .collect();
        let slot = match frames {
            Ok(frames) => {
                let slot = Slot::new(frames.len());
                let jobs = frames
                    .into_iter()
                    .enumerate()
                    .map(|(i, fr)| Job::new(fr, Sink::Slot(slot.clone(), i)))
                    .collect();
                self.submit(jobs);
                slot
            }
            Err(e) => Slot::failed(e),
        };
        AsyncResult::new(slot, finish_map::<R>)
    }

    /// A lazy, ordered iterator of `f(item)` results (Python's `imap`).
    ///
    /// Items are read from `items` and submitted as results are consumed, at
    /// most a few per worker ahead, so an endless input is fine. Each result
    /// is a `Result`: a failed task does not end the iteration.
    ///
    /// # Examples
    /// ```
    /// # let pool = multiproc::Pool::new(2)?;
    /// let evens: Vec<u64> = pool
    ///     .imap(|x: u64| x * 2, 0..)
    ///     .take(5)
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(evens, [0, 2, 4, 6, 8]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap<F, A, R, I>(&self, f: F, items: I) -> Imap<'_, A, R, I::IntoIter>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        Imap::new(self, f, items.into_iter(), 1, true)
    }

    /// [`imap`](Pool::imap) sending `chunksize` items per job.
    ///
    /// # Examples
    /// ```
    /// # let pool = multiproc::Pool::new(2)?;
    /// let firsts: Vec<u64> = pool
    ///     .imap_chunked(|x: u64| x * 10, 0.., 50)
    ///     .take(3)
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(firsts, [0, 10, 20]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap_chunked<F, A, R, I>(&self, f: F, items: I, chunksize: usize) -> Imap<'_, A, R, I::IntoIter>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        Imap::new(self, f, items.into_iter(), chunksize, true)
    }

    /// As [`imap`](Pool::imap), but results come in the order they finish.
    ///
    /// # Examples
    /// ```
    /// # let pool = multiproc::Pool::new(2)?;
    /// let mut squares: Vec<u64> = pool
    ///     .imap_unordered(|x: u64| x * x, 1..=4)
    ///     .collect::<Result<_, _>>()?;
    /// squares.sort();
    /// assert_eq!(squares, [1, 4, 9, 16]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap_unordered<F, A, R, I>(&self, f: F, items: I) -> Imap<'_, A, R, I::IntoIter>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        Imap::new(self, f, items.into_iter(), 1, false)
    }

    /// [`imap_unordered`](Pool::imap_unordered) sending `chunksize` items per job.
    ///
    /// # Examples
    /// ```
    /// # let pool = multiproc::Pool::new(2)?;
    /// let total: u64 = pool
    ///     .imap_unordered_chunked(|x: u64| x, 1..=100, 10)
    ///     .sum::<Result<u64, _>>()?;
    /// assert_eq!(total, 5050);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap_unordered_chunked<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> Imap<'_, A, R, I::IntoIter>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        Imap::new(self, f, items.into_iter(), chunksize, false)
    }

    /// Stops accepting tasks: later submissions fail with
    /// [`TaskError::PoolClosed`]. Queued tasks still run; the workers exit once
    /// they are done. Then [`join`](Pool::join) waits for them.
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Pool, TaskError};
    ///
    /// let pool = Pool::new(2)?;
    /// let queued = pool.apply_async(|x: u32| x + 1, 1);
    /// pool.close();
    /// assert_eq!(pool.apply(|x: u32| x + 1, 2), Err(TaskError::PoolClosed));
    /// assert_eq!(queued.get()?, 2); // submitted before close: it still runs
    /// pool.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "shutdown")]
    pub fn close(&self) {
        self.shared.control(false);
    }

    /// Kills the workers at once (SIGKILL) and reaps them; every unfinished
    /// task fails with [`TaskError::PoolTerminated`]. Returns when all workers
    /// are gone, which takes milliseconds however many tasks were queued.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Pool, TaskError};
    ///
    /// let pool = Pool::new(1)?;
    /// let slow = pool.apply_async(|()| std::thread::sleep(Duration::from_secs(60)), ());
    /// pool.terminate();
    /// assert_eq!(slow.get(), Err(TaskError::PoolTerminated));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn terminate(&self) {
        self.shared.control(true);
        self.shared.wait_finished(Deadline::NEVER);
        self.join_thread();
    }

    fn join_thread(&self) {
        let handle = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Waits until every worker has exited, after [`close`](Pool::close)
    /// (all queued tasks done) or [`terminate`](Pool::terminate).
    ///
    /// # Errors
    /// [`PoolError::NotClosed`] if the pool is neither closed nor terminated.
    ///
    /// # Examples
    /// ```
    /// let pool = multiproc::Pool::new(2)?;
    /// let results: Vec<_> = (0..4).map(|i| pool.apply_async(|x: u32| x * x, i)).collect();
    /// pool.close();
    /// pool.join()?; // every queued task has run
    /// assert!(results.iter().all(|r| r.ready()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(&self) -> Result<(), PoolError> {
        self.join_deadline(Deadline::NEVER).map(|_| ())
    }

    /// As [`join`](Pool::join), waiting at most `timeout`; `Ok(false)` if the
    /// workers are still running then.
    ///
    /// # Errors
    /// As [`join`](Pool::join).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = multiproc::Pool::new(1)?;
    /// let busy = pool.apply_async(|()| std::thread::sleep(Duration::from_millis(300)), ());
    /// pool.close();
    /// assert!(!pool.join_timeout(Duration::from_millis(10))?); // still working
    /// assert!(pool.join_timeout(Duration::from_secs(30))?);
    /// busy.get()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, PoolError> {
        self.join_deadline(Deadline::after(timeout))
    }

    fn join_deadline(&self, deadline: Deadline) -> Result<bool, PoolError> {
        if !self.shared.inbox().closed {
            return Err(PoolError::NotClosed);
        }
        if !self.shared.wait_finished(deadline) {
            return Ok(false);
        }
        self.join_thread();
        Ok(true)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}
