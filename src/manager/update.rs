//! `update_with`: a function `fn(&mut V)` run by the server on a stored value.
//!
//! The function travels exactly as a child's entry point does (see
//! `process::bootstrap`): the client sends the offset of a monomorphised
//! trampoline from the executable's anchor, and the server, which checked that
//! it runs the same build, resolves it with `Image::resolve_entry` (an address
//! outside this executable's code is refused, never called). The trampoline
//! decodes the stored bytes as `V`, runs the function, and encodes the result;
//! a panic is caught and leaves the stored value unchanged.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::process::bootstrap::panic_message;
use crate::sys::image::{conjure_fn, entry_offset, Image};

/// What the trampoline works on: the stored bytes in, the new bytes (or why
/// not) out.
pub(crate) struct UpdateCtx {
    pub(crate) value: Vec<u8>,
    pub(crate) out: Option<Result<Vec<u8>, UpdateFailure>>,
}

/// Why an update produced no new value.
#[derive(Debug)]
pub(crate) enum UpdateFailure {
    /// The stored bytes are not a `V`, or the new value cannot be encoded.
    Codec(String),
    /// The function panicked.
    Panicked(String),
}

fn trampoline<F, V>(ctx: &mut dyn Any)
where
    F: Fn(&mut V) + Copy + 'static,
    V: Serialize + DeserializeOwned + 'static,
{
    let Some(ctx) = ctx.downcast_mut::<UpdateCtx>() else {
        return;
    };
    let mut v = match codec::decode_value::<V>(&ctx.value, Vec::new()) {
        Ok(v) => v,
        Err(e) => {
            ctx.out = Some(Err(UpdateFailure::Codec(format!(
                "the stored value is not a {}: {e}",
                std::any::type_name::<V>()
            ))));
            return;
        }
    };
    let f = conjure_fn::<F>();
    ctx.out = Some(match catch_unwind(AssertUnwindSafe(|| f(&mut v))) {
        Ok(()) => codec::to_bytes(&v).map_err(|e| UpdateFailure::Codec(e.to_string())),
        Err(p) => Err(UpdateFailure::Panicked(panic_message(p.as_ref()))),
    });
}

/// The offset identifying the trampoline for `F` over `V` in every process
/// running this build.
pub(crate) fn update_id<F, V>() -> i64
where
    F: Fn(&mut V) + Copy + 'static,
    V: Serialize + DeserializeOwned + 'static,
{
    entry_offset(trampoline::<F, V>)
}

/// The build identity of this executable (0 if it cannot be read: no server
/// will match it, so updates are refused rather than misrouted).
pub(crate) fn this_build() -> u64 {
    Image::get().map(|i| i.build_id).unwrap_or(0)
}

/// Runs the update at `entry` on `value` (server side). `Err` says why not.
pub(crate) fn run_update(
    build_id: u64,
    entry: i64,
    value: Vec<u8>,
) -> Result<Result<Vec<u8>, UpdateFailure>, String> {
    let image = Image::get().map_err(|e| e.to_string())?;
    if build_id != image.build_id {
        return Err("the manager runs a different build of the executable than the caller".into());
    }
    let entry = image
        .resolve_entry(entry)
        .ok_or_else(|| "the function is not in the manager's executable".to_string())?;
    let mut ctx = UpdateCtx { value, out: None };
    entry(&mut ctx);
    ctx.out
        .ok_or_else(|| "the address is not an update function".to_string())
}
