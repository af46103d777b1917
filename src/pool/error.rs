//! Errors of the pool: what a task can fail with, and what building or joining
//! a pool can fail with.

use std::fmt;

use crate::process::ExitStatus;

/// Why a task submitted to a [`Pool`](crate::Pool) produced no result.
///
/// Each error concerns one job only: every other job of the pool runs on.
///
/// # Differences from Python's multiprocessing
/// CPython's `Pool` hangs forever when a worker dies while running a task, and
/// has no per-task timeout. Here the job gets [`TaskError::WorkerLost`] (with
/// the worker's exit status) or [`TaskError::TimedOut`], and the worker is replaced.
///
/// # Examples
/// ```
/// use multiproc::{Pool, TaskError};
///
/// let pool = Pool::new(2)?;
/// let r = pool.apply(|x: u32| if x == 0 { panic!("zero") } else { 100 / x }, 0);
/// assert_eq!(r, Err(TaskError::Panicked { message: "zero".into() }));
/// // A worker that dies fails only its own job.
/// let r = pool.apply(|()| -> u32 { std::process::abort() }, ());
/// assert!(matches!(r, Err(TaskError::WorkerLost { .. })));
/// assert_eq!(pool.apply(|x: u32| 100 / x, 4)?, 25);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the worker survived and goes on with other jobs.
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The worker process running the task died (SIGKILL, segfault, abort,
    /// `exit`). It has been replaced.
    WorkerLost {
        /// The lost worker's pid.
        pid: u32,
        /// How it ended (`None` if it could not be reaped in time after SIGKILL).
        status: Option<ExitStatus>,
    },
    /// The task ran longer than the pool's `task_timeout`; its worker was killed
    /// and replaced.
    TimedOut,
    /// The argument (in the caller) or the result (in the worker) could not be encoded.
    Encode(String),
    /// The argument (in the worker) or the result (in the caller) could not be decoded.
    Decode(String),
    /// The pool was closed before the task was submitted.
    PoolClosed,
    /// The pool was terminated (or dropped) before the task finished.
    PoolTerminated,
    /// No worker could be started to run the task (the spawn failed, or every
    /// new worker died before taking a job, e.g. in a panicking initializer).
    WorkerStart(String),
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked { message } => write!(f, "the task panicked: {message}"),
            TaskError::WorkerLost { pid, status } => {
                write!(f, "the worker process {pid} running the task died (")?;
                match status {
                    Some(s) => write!(f, "{s})"),
                    None => f.write_str("status unknown)"),
                }
            }
            TaskError::TimedOut => f.write_str("the task ran past the pool's task timeout and was killed"),
            TaskError::Encode(m) => write!(f, "cannot encode the task's value: {m}"),
            TaskError::Decode(m) => write!(f, "cannot decode the task's value: {m}"),
            TaskError::PoolClosed => f.write_str("the pool is closed"),
            TaskError::PoolTerminated => f.write_str("the pool was terminated before the task finished"),
            TaskError::WorkerStart(m) => write!(f, "no worker process could be started: {m}"),
        }
    }
}

impl std::error::Error for TaskError {}

/// Why a pool could not be built, or joined.
///
/// # Examples
/// ```
/// use multiproc::{Pool, PoolError};
///
/// let pool = Pool::new(1)?;
/// assert!(matches!(pool.join(), Err(PoolError::NotClosed)));
/// pool.close();
/// pool.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum PoolError {
    /// The configuration is invalid (e.g. zero processes).
    Config(String),
    /// A worker process could not be started.
    Spawn(std::io::Error),
    /// [`Pool::join`](crate::Pool::join) was called before
    /// [`close`](crate::Pool::close) or [`terminate`](crate::Pool::terminate).
    NotClosed,
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Config(m) => write!(f, "invalid pool configuration: {m}"),
            PoolError::Spawn(e) => write!(f, "cannot start a pool worker: {e}"),
            PoolError::NotClosed => {
                f.write_str("join() needs close() or terminate() first: the pool is still running")
            }
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}
