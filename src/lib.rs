//! # multiproc
//!
//! Python's `multiprocessing`, done right, for Rust.
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
pub use process::{
    active_children, cpu_count, current_process, get_start_method, parent_process, set_start_method, Builder,
    ChildInfo, CurrentProcess, ExitStatus, ParentProcess, Process, ProcessError, StartMethod,
};
