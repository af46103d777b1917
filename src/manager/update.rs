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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        build_id: u64,
        entry: i64,
        value: &impl Serialize,
    ) -> Result<Result<Vec<u8>, UpdateFailure>, String> {
        run_update(build_id, entry, codec::to_bytes(value).unwrap())
    }

    #[test]
    fn the_function_runs_on_the_stored_bytes() {
        fn id<F: Fn(&mut (u32, String)) + Copy + 'static>(_: F) -> i64 {
            update_id::<F, (u32, String)>()
        }
        let id = id(|v: &mut (u32, String)| {
            v.0 += 1;
            v.1.push('!');
        });
        let out = run(this_build(), id, &(41u32, "hi".to_string()))
            .unwrap()
            .unwrap();
        assert_eq!(
            codec::decode_value::<(u32, String)>(&out, vec![]).unwrap(),
            (42, "hi!".into())
        );
    }

    fn id_of<F: Fn(&mut u64) + Copy + 'static>(_: F) -> i64 {
        update_id::<F, u64>()
    }

    #[test]
    fn another_build_is_refused_before_anything_runs() {
        let id = id_of(|v| *v += 1);
        let err = run(this_build() ^ 1, id, &1u64).unwrap_err();
        assert!(err.contains("different build"), "{err}");
    }

    #[test]
    fn an_address_outside_the_code_is_refused() {
        for offset in [i64::MIN, -(1 << 40), 1 << 40, i64::MAX] {
            let err = run(this_build(), offset, &1u64).unwrap_err();
            assert!(err.contains("not in the manager's executable"), "{err}");
        }
    }

    #[test]
    fn a_child_entry_point_is_not_an_update_function() {
        fn entry<F: Fn(u8) -> u8 + Copy + 'static>(_: F) -> i64 {
            crate::process::bootstrap::entry_id::<F, u8, u8>()
        }
        let entry = entry(|x| x + 1);
        let err = run(this_build(), entry, &1u64).unwrap_err();
        assert!(err.contains("not an update function"), "{err}");
    }

    #[test]
    fn bytes_of_another_type_and_panics_are_reported() {
        let id = id_of(|v| *v += 1);
        assert!(matches!(
            run(this_build(), id, &"text"),
            Ok(Err(UpdateFailure::Codec(_)))
        ));
        let id = id_of(|_| panic!("no"));
        assert!(matches!(run(this_build(), id, &1u64), Ok(Err(UpdateFailure::Panicked(m))) if m == "no"));
    }
}
