//! Function identity for pool tasks: a monomorphised entry point travels
//! between processes of the same executable as its offset from the image anchor.
//!
//! # Safety
//! Two operations need `unsafe`:
//! - [`conjure`] makes a value of a zero-sized, `Copy` function type (a fn item
//!   or a non-capturing closure). The size is checked at compile time; such a
//!   value has no bytes, so there is nothing that could be invalid.
//! - [`resolve`] turns an offset back into an [`Entry`]. It only accepts an
//!   address inside the executable code of the file that holds the anchor
//!   ([`Image::resolve`]); the offset must have been produced by [`offset_of`]
//!   on an `Entry` in a process running the same build (the pool's private
//!   socketpair to a worker it started from this executable guarantees both).
#![allow(unsafe_code)]

use std::io;

use crate::sys::image::Image;

/// The shape of every entry point: read encoded input, append encoded output.
pub(crate) type Entry = fn(&[u8], &mut Vec<u8>);

/// A value of the zero-sized function type `F`.
pub(crate) fn conjure<F: Copy + 'static>() -> F {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "a pool task must be a fn item or a closure that captures nothing"
        )
    };
    // SAFETY: `F` is zero-sized (asserted at compile time above) and `Copy`
    // (no drop glue); a zero-sized fn item or non-capturing closure has no
    // bytes, so the all-zero (empty) value is its only value.
    unsafe { std::mem::zeroed() }
}

/// The offset of `entry` from the image anchor.
pub(crate) fn offset_of(entry: Entry) -> i64 {
    Image::offset_of(entry as usize)
}

/// The entry point at `offset`, if it lies in this executable's code.
pub(crate) fn resolve(offset: i64) -> io::Result<Entry> {
    let addr = Image::get()?.resolve(offset).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "a task's code offset lies outside this executable's code",
        )
    })?;
    // SAFETY: `addr` lies in this executable's code (checked by `resolve`), and by
    // the module contract the offset came from `offset_of` on an `Entry` in a process
    // running the same build, so `addr` is the start of a function of type `Entry`.
    Ok(unsafe { std::mem::transmute::<usize, Entry>(addr) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(input: &[u8], out: &mut Vec<u8>) {
        out.extend(input.iter().map(|b| b * 2));
    }

    #[test]
    fn roundtrip_in_process() {
        let f = resolve(offset_of(double)).unwrap();
        let mut out = Vec::new();
        f(&[1, 2, 3], &mut out);
        assert_eq!(out, [2, 4, 6]);
    }

    #[test]
    fn offsets_outside_code_are_refused() {
        assert!(resolve(i64::MAX / 2).is_err());
        assert!(resolve(-(1 << 50)).is_err());
    }

    #[test]
    fn conjured_closure_runs() {
        fn call<F: Fn(u32) -> u32 + Copy + 'static>(_: F) -> u32 {
            conjure::<F>()(20)
        }
        assert_eq!(call(|x| x + 1), 21);
    }
}
