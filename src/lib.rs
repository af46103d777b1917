//! # multiproc
//!
//! Python's `multiprocessing`, done right, for Rust: worker processes, queues and
//! pipes between them, process-shared locks and memory, a manager process for
//! shared containers, and process pools.
//!
//! Use it for what only a process boundary gives: code that may crash, leak, hang or
//! is not thread-safe runs in a child that cannot take your program down, and every
//! way a child can fail comes back as a typed error on the one job it hit.
//!
//! ## Processes
//!
//! A child runs a function `fn(A) -> R` (a fn item, or a closure that captures
//! nothing) on serde arguments, and [`Process::join`] returns its result:
//!
//! ```
//! use multiproc::{Process, ProcessError};
//!
//! fn word_count(text: String) -> usize {
//!     text.split_whitespace().count()
//! }
//!
//! let p = Process::spawn("the quick brown fox".to_string(), word_count)?;
//! assert_eq!(p.join()?, 4);
//!
//! // Failures are values: a panic, an exit code, a signal.
//! let p = Process::spawn((), |()| -> u8 { panic!("corrupt input") })?;
//! assert!(matches!(p.join(), Err(ProcessError::Panicked { message }) if message == "corrupt input"));
//! # Ok::<(), ProcessError>(())
//! ```
//!
//! Children start through a fork server by default ([`StartMethod`]); a hook that
//! runs before `main` makes re-executed copies of the program into children, so no
//! `init()` call is needed, under `cargo test` and in doctests too.
//!
//! ## Queues
//!
//! [`Queue`], [`SimpleQueue`] and [`JoinableQueue`] live in shared memory: any number
//! of processes put and get, `put` returns once the item is in shared memory (no
//! feeder thread), `len()` is exact, and a process killed in the middle of a `put` or
//! a `get` leaves the queue consistent for the others.
//!
//! ```
//! use multiproc::{JoinableQueue, Process};
//!
//! fn consumer(q: JoinableQueue<String>) {
//!     while let Ok(item) = q.get() {
//!         println!("ate {item}");
//!         q.task_done().unwrap();
//!     }
//! }
//!
//! let q = JoinableQueue::new()?;
//! let c = Process::builder().daemon(true).spawn(q.clone(), consumer)?;
//! for i in 0..3 {
//!     q.put(format!("dish {i}"))?;
//! }
//! q.join()?; // every item had its task_done
//! assert!(q.is_empty());
//! # drop(c);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Pipes and connections
//!
//! [`Pipe::new`] gives two [`Connection`]s; [`Listener`] and [`Client`] connect
//! unrelated processes over a Unix path or TCP, with an HMAC-SHA256 authkey handshake.
//! `recv` reports [`RecvError::Eof`] once every copy of the other end is closed, in
//! every process. Handles (connections, queues, locks, shared memory) travel inside
//! messages.
//!
//! ```
//! use multiproc::{Pipe, Process};
//!
//! let (parent, child) = Pipe::new()?;
//! let p = Process::spawn(child, |c: multiproc::Connection| {
//!     let n: u64 = c.recv().unwrap();
//!     c.send(&(n * 2)).unwrap();
//! })?;
//! parent.send(&21u64)?;
//! assert_eq!(parent.recv::<u64>()?, 42);
//! p.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Locks and shared memory
//!
//! [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`], [`Event`], [`Condition`]
//! and [`Barrier`] work across processes; when a lock holder dies, the next acquirer
//! gets the lock with [`LockError::OwnerDied`] instead of waiting forever. [`Value`],
//! [`Array`] and [`SharedMemory`] hold plain data shared by all.
//!
//! ```
//! use multiproc::{Lock, Process, Value};
//!
//! let count = Value::new(0i64)?;
//! let lock = Lock::new()?;
//! let workers: Vec<_> = (0..4)
//!     .map(|_| {
//!         Process::spawn((count.clone(), lock.clone()), |(count, lock): (Value<i64>, Lock)| {
//!             for _ in 0..100 {
//!                 let _held = lock.acquire().unwrap();
//!                 let n = count.load().unwrap();
//!                 count.store(n + 1).unwrap();
//!             }
//!         })
//!     })
//!     .collect::<Result<_, _>>()?;
//! for w in workers {
//!     w.join()?;
//! }
//! assert_eq!(count.load().unwrap(), 400);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Managers
//!
//! A [`Manager`] is a server process holding dicts, lists, values, locks, events and
//! queues, reached through typed proxies ([`Dict`], [`List`], [`ValueProxy`], ...)
//! that any process can use, locally or over TCP with an authkey.
//! [`Dict::update_with`] runs a read-modify-write on the server, atomically.
//!
//! ```
//! use multiproc::{Dict, Manager, Process};
//!
//! let m = Manager::start()?;
//! let d: Dict<String, i64> = m.dict()?;
//! d.insert("count".to_string(), 10)?;
//! let workers: Vec<_> = (0..10)
//!     .map(|_| {
//!         Process::spawn(d.clone(), |d: Dict<String, i64>| {
//!             d.update_with(&"count".to_string(), |v: &mut i64| *v -= 1).unwrap();
//!         })
//!     })
//!     .collect::<Result<_, _>>()?;
//! for w in workers {
//!     w.join()?;
//! }
//! assert_eq!(d.get(&"count".to_string())?, Some(0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Pools
//!
//! A [`Pool`] runs tasks on worker processes and never hangs: a worker that dies
//! fails only the task it held ([`TaskError::WorkerLost`]) and is replaced; a task
//! past its timeout is killed.
//!
//! ```
//! use multiproc::{Pool, TaskError};
//!
//! let pool = Pool::new(2)?;
//! assert_eq!(pool.map(|x: u64| x * x, 1..=4)?, vec![1, 4, 9, 16]);
//! let crash = pool.apply(|()| -> u8 { std::process::abort() }, ());
//! assert!(matches!(crash, Err(TaskError::WorkerLost { .. })));
//! assert_eq!(pool.apply(|x: u8| x + 1, 1)?, 2); // the pool goes on
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Which one should I use?
//!
//! | you want | use |
//! | --- | --- |
//! | run a function in isolation and get its result | [`Process`] |
//! | many tasks over a fixed set of workers | [`Pool`] |
//! | a stream of items between many producers and consumers | [`Queue`] / [`JoinableQueue`] |
//! | a private channel between two processes, or handles to pass | [`Pipe`] / [`Connection`] |
//! | processes on other machines, or unrelated programs | [`Listener`] / [`Client`] |
//! | shared counters and arrays of plain data | [`Value`] / [`Array`] with their lock |
//! | shared maps and lists of any serde type, or state reached over the network | [`Manager`] |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "multiproc supports Linux only for now (x86-64 and aarch64); the platform code lives in src/sys."
);

mod codec;
mod deadline;
mod sys;

mod connection;
mod manager;
mod pool;
mod process;
mod queue;
mod shm;
mod sync;

pub use codec::{CodecError, DEFAULT_MAX_FRAME};
pub use connection::{
    wait, Address, AuthError, BufferTooShort, Client, ConnectError, Connection, Listener, Pipe, RecvError,
    SendError, Waitable, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT,
};
pub use manager::{
    Dict, EventProxy, List, LockProxy, LockProxyGuard, Manager, ManagerBuilder, ManagerError, Namespace,
    Proxy, QueueProxy, ValueProxy,
};
pub use pool::{AsyncGetError, AsyncResult, Imap, ImapTimeout, Pool, PoolBuilder, PoolError, TaskError};
pub use process::{
    active_children, cpu_count, current_process, get_start_method, parent_process, set_start_method, Builder,
    ChildInfo, CurrentProcess, ExitStatus, ParentProcess, Process, ProcessError, StartMethod,
};
pub use queue::{GetError, JoinableQueue, PutError, Queue, QueueError, SimpleQueue, TaskDoneError};
pub use shm::{Array, ArrayGuard, SharedMemory, Value, ValueGuard};
pub use sync::{
    Barrier, BarrierBuilder, BoundedSemaphore, BrokenBarrierError, Condition, ConditionGuard, Event, Lock,
    LockError, LockGuard, RLock, RLockGuard, ReleaseError, Semaphore, SemaphoreGuard,
};

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
