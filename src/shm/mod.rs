//! Shared memory: `SharedMemory`, `Value`, `Array`.

pub(crate) mod segment;
