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
pub use process::{
    active_children, cpu_count, current_process, get_start_method, parent_process, set_start_method, Builder,
    ChildInfo, CurrentProcess, ExitStatus, ParentProcess, Process, ProcessError, StartMethod,
};
pub use queue::{GetError, JoinableQueue, PutError, Queue, QueueError, SimpleQueue, TaskDoneError};
pub use shm::{Array, ArrayGuard, SharedMemory, Value, ValueGuard};
pub use sync::{
    Barrier, BoundedSemaphore, BrokenBarrierError, Condition, ConditionGuard, Event, Lock, LockError,
    LockGuard, RLock, RLockGuard, ReleaseError, Semaphore, SemaphoreGuard,
};
