//! [`PoolBuilder`]: processes, start method, initializer, worker recycling and
//! per-task timeouts.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::pool::dispatcher::Config;
use crate::pool::error::PoolError;
use crate::pool::pool::Pool;
use crate::pool::protocol::init_id;
use crate::pool::spawn::process_spawner;
use crate::pool::worker::Init;
use crate::process::StartMethod;

/// Configures and starts a [`Pool`]. Made by [`Pool::builder`].
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use multiproc::Pool;
///
/// let pool = Pool::builder()
///     .processes(2)
///     .max_tasks_per_child(100)
///     .task_timeout(Duration::from_secs(60))
///     .initializer(|| println!("worker {} ready", std::process::id()))
///     .build()?;
/// assert_eq!(pool.apply(|x: i32| -x, 5)?, -5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct PoolBuilder {
    processes: Option<usize>,
    method: Option<StartMethod>,
    init: Option<Result<(i64, Vec<u8>), String>>,
    max_tasks_per_child: Option<usize>,
    task_timeout: Option<Duration>,
}

impl PoolBuilder {
    /// The number of worker processes (default: [`cpu_count`](crate::cpu_count)).
    ///
    /// # Examples
    /// ```
    /// use multiproc::Pool;
    ///
    /// let pool = Pool::builder().processes(3).build()?;
    /// assert_eq!(pool.processes(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "max_workers")]
    pub fn processes(mut self, n: usize) -> PoolBuilder {
        self.processes = Some(n);
        self
    }

    /// How workers are started (default: [`get_start_method`](crate::get_start_method)).
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Pool, StartMethod};
    ///
    /// // Workers that are fresh copies of the program, as Python's "spawn".
    /// let pool = Pool::builder().processes(1).start_method(StartMethod::Spawn).build()?;
    /// assert_eq!(pool.apply(|x: u32| x + 1, 41)?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> PoolBuilder {
        self.method = Some(method);
        self
    }

    /// A function each worker runs once when it starts, before any task. If
    /// it panics, the worker dies before taking a job; when that happens to
    /// several workers in a row, the queued tasks fail with
    /// [`TaskError::WorkerStart`](crate::TaskError::WorkerStart).
    ///
    /// # Examples
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use multiproc::Pool;
    ///
    /// static READY: AtomicBool = AtomicBool::new(false);
    ///
    /// // Each worker sets its own copy of READY once; tasks then see it set.
    /// let pool = Pool::builder()
    ///     .processes(2)
    ///     .initializer(|| READY.store(true, Ordering::Relaxed))
    ///     .build()?;
    /// assert!(pool.apply(|()| READY.load(Ordering::Relaxed), ())?);
    /// assert!(!READY.load(Ordering::Relaxed)); // the parent's copy is untouched
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn initializer<F: Fn() + Copy + 'static>(self, f: F) -> PoolBuilder {
        // A closure capturing only the zero-sized `f` is itself zero-sized.
        self.initializer_with(move |()| f(), ())
    }

    /// As [`initializer`](PoolBuilder::initializer), with an argument
    /// (Python's `initargs`), encoded here.
    ///
    /// # Examples
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use multiproc::Pool;
    ///
    /// static SCALE: AtomicU64 = AtomicU64::new(1);
    ///
    /// let pool = Pool::builder()
    ///     .processes(2)
    ///     .initializer_with(|k: u64| SCALE.store(k, Ordering::Relaxed), 10)
    ///     .build()?;
    /// assert_eq!(pool.map(|x: u64| x * SCALE.load(Ordering::Relaxed), [1, 2, 3])?, [10, 20, 30]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "initargs")]
    pub fn initializer_with<F, A>(mut self, _f: F, arg: A) -> PoolBuilder
    where
        F: Fn(A) + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
    {
        self.init = Some(
            codec::to_bytes(&arg)
                .map(|b| (init_id::<F, A>(), b))
                .map_err(|e| format!("cannot encode the initializer's argument: {e}")),
        );
        self
    }

    /// Each worker exits after this many jobs (a `map` chunk is one job) and
    /// is replaced by a fresh process (Python's `maxtasksperchild`).
    ///
    /// # Examples
    /// ```
    /// use std::collections::HashSet;
    /// use multiproc::Pool;
    ///
    /// // One worker, one job per worker: each task runs in a new process.
    /// let pool = Pool::builder().processes(1).max_tasks_per_child(1).build()?;
    /// let pids: HashSet<u32> = (0..3).map(|_| pool.apply(|()| std::process::id(), ())).collect::<Result<_, _>>()?;
    /// assert_eq!(pids.len(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "maxtasksperchild")]
    pub fn max_tasks_per_child(mut self, n: usize) -> PoolBuilder {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// A job that runs longer than this fails with
    /// [`TaskError::TimedOut`](crate::TaskError::TimedOut); its worker is killed
    /// and replaced. The clock starts when the worker takes the job.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Pool, TaskError};
    ///
    /// let pool = Pool::builder().processes(1).task_timeout(Duration::from_millis(200)).build()?;
    /// let stuck = pool.apply(|()| std::thread::sleep(Duration::from_secs(60)), ());
    /// assert_eq!(stuck, Err(TaskError::TimedOut));
    /// assert_eq!(pool.apply(|x: i32| x * 2, 21)?, 42); // a new worker took over
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn task_timeout(mut self, timeout: Duration) -> PoolBuilder {
        self.task_timeout = Some(timeout);
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    /// [`PoolError::Config`] for zero processes, a zero `max_tasks_per_child`
    /// or an initializer argument that cannot be encoded;
    /// [`PoolError::Spawn`] if a worker cannot be started.
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Pool, PoolError};
    ///
    /// assert!(matches!(Pool::builder().processes(0).build(), Err(PoolError::Config(_))));
    /// let pool = Pool::builder().processes(2).build()?;
    /// assert_eq!(pool.apply(|s: String| s.len(), "four".to_string())?, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<Pool, PoolError> {
        let processes = self.processes.unwrap_or_else(crate::cpu_count);
        if processes == 0 {
            return Err(PoolError::Config(
                "the number of processes must be at least 1".into(),
            ));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(PoolError::Config("max_tasks_per_child must be at least 1".into()));
        }
        let init: Init = self.init.transpose().map_err(PoolError::Config)?;
        let cfg = Config {
            processes,
            init,
            max_tasks_per_child: self.max_tasks_per_child,
            task_timeout: self.task_timeout,
        };
        Pool::start(cfg, process_spawner(self.method))
    }
}
