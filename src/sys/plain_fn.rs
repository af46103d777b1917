//! Plain `fn()` pointers that travel between processes of the same build as
//! offsets from the image anchor (used for a `Barrier`'s action).
//!
//! # Safety
//! [`resolve_plain_fn`] turns an offset back into a `fn()` only if the address
//! lies in an executable mapping of this very file ([`Image::resolve`]), and
//! only for offsets that the caller recorded with [`plain_fn_offset`] from a
//! `fn()` in a process whose `build_id` it checked equal to ours.
#![allow(unsafe_code)]

use crate::sys::image::Image;

/// The offset of `f` from the image anchor.
pub(crate) fn plain_fn_offset(f: fn()) -> i64 {
    Image::offset_of(f as usize)
}

/// The `fn()` at `offset`, measured by [`plain_fn_offset`] in a process running
/// the build `build_id`; `None` if that is not this build or the address is not
/// in this executable's code.
pub(crate) fn resolve_plain_fn(build_id: u64, offset: i64) -> Option<fn()> {
    let image = Image::get().ok()?;
    if image.build_id != build_id {
        return None;
    }
    let addr = image.resolve(offset)?;
    // SAFETY: the same build maps the same code at the same distance from the
    // anchor, and the offset was measured from a `fn()` (module contract);
    // `addr` lies in this executable's text. A `fn()` is a `usize` wide.
    Some(unsafe { std::mem::transmute::<usize, fn()>(addr) })
}
