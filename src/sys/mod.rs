//! The only module that talks to the kernel.
//!
//! Everything above it works with owned descriptors, deadlines and plain Rust
//! values. Built on rustix; libc only where rustix has nothing (fork, clone3,
//! `_exit`, `close_range`, `recvmsg` without an address buffer, the robust
//! list, and glibc's robust mutex in the tests of the sync layer).

pub(crate) mod futex;
pub(crate) mod hook;
pub(crate) mod image;
pub(crate) mod listen;
pub(crate) mod mem;
pub(crate) mod named_shm;
pub(crate) mod plain_fn;
pub(crate) mod proc;
pub(crate) mod robust;
pub(crate) mod sock;
pub(crate) mod uninit;
