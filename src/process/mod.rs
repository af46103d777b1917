//! Processes: [`Process`], its [`Builder`], start methods, exit statuses, and
//! the facts about the current process ([`current_process`], ...).

pub(crate) mod bootstrap;
mod builder;
pub(crate) mod child;
mod error;
pub(crate) mod forkserver;
mod handle;
pub(crate) mod info;

pub use builder::{get_start_method, set_start_method, Builder, StartMethod};
pub use error::{ExitStatus, ProcessError};
pub use handle::Process;
pub use info::{
    active_children, cpu_count, current_process, parent_process, ChildInfo, CurrentProcess, ParentProcess,
};
