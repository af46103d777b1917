//! Shared memory: `SharedMemory`, `Value`, `Array`.

pub(crate) mod array;
pub(crate) mod pod;
pub(crate) mod segment;
pub(crate) mod shared_memory;
pub(crate) mod value;

pub use array::{Array, ArrayGuard};
pub use shared_memory::SharedMemory;
pub use value::{Value, ValueGuard};
