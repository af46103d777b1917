//! Process pools: [`Pool`], [`AsyncResult`], and the `imap` iterators.
//!
//! | file | holds |
//! | --- | --- |
//! | `pool.rs` | the user's handle: submissions, encoded in the caller's thread |
//! | `builder.rs` | [`PoolBuilder`] |
//! | `dispatcher.rs` | the thread that owns the workers, hands out jobs, replaces the dead |
//! | `worker.rs` | the loop each worker process runs |
//! | `protocol.rs` | the messages between them and the task entry points |
//! | `result.rs` | [`AsyncResult`] |
//! | `iter.rs` | [`Imap`] (`imap`, `imap_unordered`) |
//! | `spawn.rs` | starting workers as [`Process`](crate::Process)es |
//! | `error.rs` | [`TaskError`], [`PoolError`] |

mod builder;
mod dispatcher;
mod error;
mod iter;
#[allow(clippy::module_inception)]
mod pool;
mod protocol;
mod result;
mod spawn;
mod worker;

pub use builder::PoolBuilder;
pub use error::{PoolError, TaskError};
pub use iter::{Imap, ImapTimeout};
pub use pool::Pool;
pub use result::{AsyncGetError, AsyncResult};
