//! Process-shared synchronization: `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`,
//! `Event`, `Condition`, `Barrier`.
//!
//! Every primitive lives in its own shared-memory segment ([`shared::Shared`]):
//! handles are `Clone + Send + Sync` and `Serialize + Deserialize`, so they can
//! be given to a child process or sent over a `Connection`. Locks are robust
//! lock words of the crate's own, linked on the kernel's robust list as glibc
//! links its robust mutexes (a holder's death is reported to the next
//! acquirer); the other primitives block on shared futex words with deadlines.

pub(crate) mod barrier;
pub(crate) mod condition;
pub(crate) mod error;
pub(crate) mod event;
pub(crate) mod lock;
pub(crate) mod raw_mutex;
pub(crate) mod rlock;
pub(crate) mod robust_lock;
pub(crate) mod semaphore;
pub(crate) mod shared;

pub use barrier::{Barrier, BarrierBuilder, BrokenBarrierError};
pub use condition::{Condition, ConditionGuard};
pub use error::{LockError, ReleaseError};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};
