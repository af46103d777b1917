//! The hook that runs before `main` (a module constructor from the `ctor`
//! crate) and turns a re-executed copy of the binary into a child or a fork
//! server, so that plain binaries, `cargo test`, nextest and doctests need no
//! `init()` call.
//!
//! # Safety
//! Life before main: the hook only reads the environment and, when a marker is
//! present, runs the child entry point and exits without ever returning to the
//! program's `main`. Without a marker it returns at once, touching nothing.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

static HOOK_RAN: AtomicBool = AtomicBool::new(false);

#[ctor::ctor(unsafe)]
fn multiproc_before_main() {
    HOOK_RAN.store(true, Ordering::Relaxed);
    crate::process::bootstrap::before_main();
}

/// True if the hook ran in this process. Referencing this from the spawn path
/// also keeps the hook's object file in the final link.
#[inline(never)]
pub(crate) fn hook_ran() -> bool {
    HOOK_RAN.load(Ordering::Relaxed)
}
