//! Process-safe FIFO queues in shared memory: [`Queue`], [`SimpleQueue`],
//! [`JoinableQueue`].
//!
//! All three are the same mechanism: a byte ring in a memfd ([`ring`]), with
//! two robust process-shared locks (one per side: producers, consumers) and
//! futex words to sleep on, under a typed
//! layer that encodes items in the caller's thread ([`typed`]).
//!
//! Which one should I use? [`Queue`] for producer/consumer work, bounded with
//! [`Queue::bounded`] to keep producers from running ahead;
//! [`JoinableQueue`] when producers must wait until consumers have *processed*
//! everything (`task_done` / `join`); [`SimpleQueue`] for the smallest surface.

mod error;
mod joinable;
#[allow(clippy::module_inception)]
mod queue;
mod ring;
mod simple;
mod typed;

pub use error::{GetError, PutError, QueueError, TaskDoneError};
pub use joinable::JoinableQueue;
pub use queue::Queue;
pub use simple::SimpleQueue;
