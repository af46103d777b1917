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
    #[doc(alias = "max_workers")]
    pub fn processes(mut self, n: usize) -> PoolBuilder {
        self.processes = Some(n);
        self
    }

    /// How workers are started (default: [`get_start_method`](crate::get_start_method)).
    pub fn start_method(mut self, method: StartMethod) -> PoolBuilder {
        self.method = Some(method);
        self
    }

    /// A function each worker runs once when it starts, before any task. If
    /// it panics, the worker dies before taking a job; when that happens to
    /// several workers in a row, the queued tasks fail with
    /// [`TaskError::WorkerStart`](crate::TaskError::WorkerStart).
    pub fn initializer<F: Fn() + Copy + 'static>(self, f: F) -> PoolBuilder {
        // A closure capturing only the zero-sized `f` is itself zero-sized.
        self.initializer_with(move |()| f(), ())
    }

    /// As [`initializer`](PoolBuilder::initializer), with an argument
    /// (Python's `initargs`), encoded here.
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
    #[doc(alias = "maxtasksperchild")]
    pub fn max_tasks_per_child(mut self, n: usize) -> PoolBuilder {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// A job that runs longer than this fails with
    /// [`TaskError::TimedOut`](crate::TaskError::TimedOut); its worker is killed
    /// and replaced. The clock starts when the worker takes the job.
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
