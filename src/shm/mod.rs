//! Shared memory: `SharedMemory`, `Value`, `Array`.

pub(crate) mod array;
pub(crate) mod pod;
pub(crate) mod segment;
pub(crate) mod value;

pub use array::{Array, ArrayGuard};
pub use value::{Value, ValueGuard};
