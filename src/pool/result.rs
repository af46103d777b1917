//! [`AsyncResult`]: the handle of a submitted task (or map), filled in by the
//! pool's dispatcher thread, decoded in the thread that takes the value.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::deadline::Deadline;
use crate::pool::error::TaskError;
use crate::pool::protocol::JobOutput;

/// Where the outputs of the jobs of one submission are collected.
#[derive(Debug)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

#[derive(Debug)]
struct SlotState {
    parts: Vec<Option<JobOutput>>,
    remaining: usize,
    taken: bool,
    waker: Option<Waker>,
}

impl Slot {
    /// A slot waiting for `parts` job outputs (a submission of no jobs is ready at once).
    pub(crate) fn new(parts: usize) -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(SlotState {
                parts: (0..parts).map(|_| None).collect(),
                remaining: parts,
                taken: false,
                waker: None,
            }),
            ready: Condvar::new(),
        })
    }

    /// A slot that failed before any job was submitted.
    pub(crate) fn failed(e: TaskError) -> Arc<Slot> {
        let s = Slot::new(1);
        s.fill(0, Err(e));
        s
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores the output of job `part`; wakes waiters when it was the last one.
    pub(crate) fn fill(&self, part: usize, out: JobOutput) {
        let waker = {
            let mut st = self.lock();
            match st.parts.get_mut(part) {
                Some(p @ None) => *p = Some(out),
                _ => return,
            }
            st.remaining -= 1;
            if st.remaining > 0 {
                return;
            }
            st.waker.take()
        };
        self.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn wait(&self, deadline: Deadline) -> bool {
        let mut st = self.lock();
        while st.remaining > 0 {
            match deadline.remaining() {
                None => st = self.ready.wait(st).unwrap_or_else(PoisonError::into_inner),
                Some(d) if d.is_zero() => return false,
                Some(d) => {
                    st = self
                        .ready
                        .wait_timeout(st, d)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            }
        }
        true
    }

    fn take(&self) -> Option<Vec<JobOutput>> {
        let mut st = self.lock();
        if st.remaining > 0 || st.taken {
            return None;
        }
        st.taken = true;
        Some(st.parts.drain(..).flatten().collect())
    }
}

/// Turns the job outputs of a submission into its value.
pub(crate) type Finish<R> = fn(Vec<JobOutput>) -> Result<R, TaskError>;

fn already_taken() -> TaskError {
    TaskError::Decode("the result was already taken".into())
}

/// The [`Finish`] of `apply`: one job, one item.
pub(crate) fn finish_one<R: DeserializeOwned + Any>(parts: Vec<JobOutput>) -> Result<R, TaskError> {
    let items = parts.into_iter().next().ok_or_else(already_taken)??;
    items.decode::<R>().next().ok_or_else(already_taken)?
}

/// The [`Finish`] of `map`: every job, every item, in order; the first error
/// (in item order) once all jobs are done.
pub(crate) fn finish_map<T: DeserializeOwned + Any>(parts: Vec<JobOutput>) -> Result<Vec<T>, TaskError> {
    let mut n = 0;
    for p in &parts {
        match p {
            Err(e) => return Err(e.clone()),
            Ok(items) => {
                if let Some(e) = items.first_error() {
                    return Err(e.clone());
                }
                n += items.len();
            }
        }
    }
    let mut out = Vec::with_capacity(n);
    for items in parts.into_iter().flatten() {
        for item in items.decode() {
            out.push(item?);
        }
    }
    Ok(out)
}

/// The result of [`Pool::apply_async`](crate::Pool::apply_async) or
/// [`Pool::map_async`](crate::Pool::map_async): wait for it, poll it, or `.await` it.
///
/// Dropping an `AsyncResult` does not cancel the task; its value is discarded.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = multiproc::Pool::new(2)?;
/// let r = pool.apply_async(|x: u64| x * x, 7);
/// assert_eq!(r.get()?, 49);
/// # Ok(()) }
/// ```
///
/// # Differences from Python's multiprocessing
/// `get` consumes the handle and hands the value over (no `R: Clone` needed);
/// `get_timeout` gives the handle back on timeout. `successful` returns `None`
/// instead of raising while the task runs.
#[doc(alias = "ApplyResult")]
#[doc(alias = "MapResult")]
pub struct AsyncResult<R> {
    slot: Arc<Slot>,
    finish: Finish<R>,
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

/// Why [`AsyncResult::get_timeout`] or [`AsyncResult::try_get`] returned no value.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use multiproc::{AsyncGetError, Pool};
///
/// let pool = Pool::new(1)?;
/// let r = pool.apply_async(|()| std::thread::sleep(Duration::from_millis(200)), ());
/// let r = match r.try_get() {
///     Err(AsyncGetError::Timeout(handle)) => handle, // not ready: the handle comes back
///     other => panic!("{other:?}"),
/// };
/// r.get_timeout(Duration::from_secs(30))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub enum AsyncGetError<R> {
    /// Not ready in time: the handle is given back.
    Timeout(AsyncResult<R>),
    /// The task failed.
    Failed(TaskError),
}

impl<R> AsyncGetError<R> {
    /// True for [`AsyncGetError::Timeout`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(|()| std::thread::sleep(Duration::from_millis(200)), ());
    /// assert!(r.get_timeout(Duration::ZERO).unwrap_err().is_timeout());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, AsyncGetError::Timeout(_))
    }

    /// The task error, if the task failed.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use multiproc::TaskError;
    ///
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(|()| -> u8 { panic!("no") }, ());
    /// let e = r.get_timeout(Duration::from_secs(30)).unwrap_err();
    /// assert_eq!(e.task_error(), Some(&TaskError::Panicked { message: "no".into() }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn task_error(&self) -> Option<&TaskError> {
        match self {
            AsyncGetError::Failed(e) => Some(e),
            AsyncGetError::Timeout(_) => None,
        }
    }
}

impl<R> fmt::Debug for AsyncGetError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsyncGetError::Timeout(_) => f.write_str("Timeout(..)"),
            AsyncGetError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<R> fmt::Display for AsyncGetError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsyncGetError::Timeout(_) => f.write_str("the result was not ready in time"),
            AsyncGetError::Failed(e) => e.fmt(f),
        }
    }
}

impl<R> std::error::Error for AsyncGetError<R> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AsyncGetError::Failed(e) => Some(e),
            AsyncGetError::Timeout(_) => None,
        }
    }
}

impl<R> AsyncResult<R> {
    pub(crate) fn new(slot: Arc<Slot>, finish: Finish<R>) -> AsyncResult<R> {
        AsyncResult { slot, finish }
    }

    /// True once the task has finished (successfully or not).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(|()| std::thread::sleep(Duration::from_millis(200)), ());
    /// assert!(!r.ready());
    /// r.wait();
    /// assert!(r.ready());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ready(&self) -> bool {
        self.slot.lock().remaining == 0
    }

    /// `Some(true)` if the task finished without error, `Some(false)` if it
    /// failed, `None` while it runs. (A result that then fails to decode in
    /// [`get`](Self::get) still counts as successful here.)
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = multiproc::Pool::new(2)?;
    /// let ok = pool.apply_async(|x: u32| x + 1, 1);
    /// let bad = pool.apply_async(|x: u32| 10 / x, 0); // divides by zero: panics
    /// assert!(ok.wait_timeout(Duration::from_secs(30)) && bad.wait_timeout(Duration::from_secs(30)));
    /// assert_eq!((ok.successful(), bad.successful()), (Some(true), Some(false)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn successful(&self) -> Option<bool> {
        let st = self.slot.lock();
        if st.remaining > 0 {
            return None;
        }
        Some(st.parts.iter().flatten().all(|p| match p {
            Ok(items) => items.first_error().is_none(),
            Err(_) => false,
        }))
    }

    /// Blocks until the task has finished.
    ///
    /// # Examples
    /// ```
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(|x: u64| x * 3, 14);
    /// r.wait();
    /// assert!(r.ready());
    /// assert_eq!(r.get()?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self) {
        self.slot.wait(Deadline::NEVER);
    }

    /// Blocks until the task has finished or `timeout` passes; true if it finished.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(|()| std::thread::sleep(Duration::from_millis(300)), ());
    /// assert!(!r.wait_timeout(Duration::from_millis(1)));
    /// assert!(r.wait_timeout(Duration::from_secs(30)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait(Deadline::after(timeout))
    }

    fn take(self) -> Result<R, TaskError> {
        (self.finish)(self.slot.take().ok_or_else(already_taken)?)
    }

    /// Waits for the task and returns its value.
    ///
    /// # Errors
    /// The task's [`TaskError`]: it panicked, its worker died or timed out, a
    /// value failed to encode or decode, or the pool was closed or terminated.
    ///
    /// # Examples
    /// ```
    /// let pool = multiproc::Pool::new(2)?;
    /// let handles: Vec<_> = (1..=3).map(|i| pool.apply_async(|x: u32| x * x, i)).collect();
    /// let squares: Vec<u32> = handles.into_iter().map(|h| h.get()).collect::<Result<_, _>>()?;
    /// assert_eq!(squares, [1, 4, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(self) -> Result<R, TaskError> {
        self.wait();
        self.take()
    }

    /// Waits at most `timeout` for the task's value.
    ///
    /// # Errors
    /// [`AsyncGetError::Timeout`] with the handle back if it is not ready in
    /// time (the task goes on); [`AsyncGetError::Failed`] if the task failed.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(|s: String| s.repeat(2), "ab".to_string());
    /// assert_eq!(r.get_timeout(Duration::from_secs(30))?, "abab");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_timeout(self, timeout: Duration) -> Result<R, AsyncGetError<R>> {
        if !self.wait_timeout(timeout) {
            return Err(AsyncGetError::Timeout(self));
        }
        self.take().map_err(AsyncGetError::Failed)
    }

    /// The value if the task has finished, without waiting.
    ///
    /// # Errors
    /// As [`get_timeout`](Self::get_timeout).
    ///
    /// # Examples
    /// ```
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(|x: i32| -x, 7);
    /// r.wait();
    /// assert_eq!(r.try_get()?, -7); // finished: no waiting
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_get(self) -> Result<R, AsyncGetError<R>> {
        self.get_timeout(Duration::ZERO)
    }
}

impl<R> Future for AsyncResult<R> {
    type Output = Result<R, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        {
            let mut st = self.slot.lock();
            if st.remaining > 0 {
                st.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        Poll::Ready(
            self.slot
                .take()
                .ok_or_else(already_taken)
                .and_then(|parts| (self.finish)(parts)),
        )
    }
}
