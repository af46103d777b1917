//! Encoding small values without allocating: postcard writes into a buffer on
//! the caller's stack and moves to the heap only if the encoding outgrows it.
//! Used by `Connection::send` and by the queues' `put`.

use std::borrow::Cow;

use serde::Serialize;

/// `dst.copy_from_slice(src)` (same lengths) without a call into `memcpy` for
/// up to 16 bytes: overlapping fixed-size copies, which compile to a few
/// moves (a byte loop would be turned back into a `memcpy` call, which costs
/// more than the copy itself at these sizes).
#[inline(always)]
pub(crate) fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    // Every piece is read into a register before anything is written: copies
    // from slice to slice, once inlined, may be merged back into a call.
    match n {
        0 => {}
        1..=3 => {
            let (a, b, c) = (src[0], src[n / 2], src[n - 1]);
            dst[0] = a;
            dst[n / 2] = b;
            dst[n - 1] = c;
        }
        4..=7 => {
            let a = u32::from_ne_bytes([src[0], src[1], src[2], src[3]]);
            let b = u32::from_ne_bytes([src[n - 4], src[n - 3], src[n - 2], src[n - 1]]);
            dst[..4].copy_from_slice(&a.to_ne_bytes());
            dst[n - 4..n].copy_from_slice(&b.to_ne_bytes());
        }
        8..=16 => {
            let a = u64::from_ne_bytes(src[..8].try_into().unwrap_or([0; 8]));
            let b = u64::from_ne_bytes(src[n - 8..].try_into().unwrap_or([0; 8]));
            dst[..8].copy_from_slice(&a.to_ne_bytes());
            dst[n - 8..n].copy_from_slice(&b.to_ne_bytes());
        }
        _ => dst.copy_from_slice(src),
    }
}

/// The postcard output ("flavor"): the stack buffer, left for the heap once
/// the encoding outgrows it. Short pieces (varints, small fields) are copied
/// with [`copy_short`].
struct StackOrHeap<'a, const N: usize> {
    stack: &'a mut [u8; N],
    len: usize,
    heap: Option<Vec<u8>>,
}

impl<const N: usize> postcard::ser_flavors::Flavor for StackOrHeap<'_, N> {
    /// The length on the stack, or the heap buffer.
    type Output = (usize, Option<Vec<u8>>);

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        match self.stack.get_mut(self.len) {
            Some(slot) if self.heap.is_none() => {
                *slot = byte;
                self.len += 1;
                Ok(())
            }
            _ => self.try_extend(&[byte]),
        }
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.len + data.len();
        match (&mut self.heap, self.stack.get_mut(self.len..end)) {
            (None, Some(dst)) => {
                copy_short(dst, data);
                self.len = end;
            }
            (Some(v), _) => v.extend_from_slice(data),
            (None, None) => {
                let mut v = Vec::with_capacity(2 * end);
                v.extend_from_slice(&self.stack[..self.len]);
                v.extend_from_slice(data);
                self.heap = Some(v);
            }
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<(usize, Option<Vec<u8>>)> {
        Ok((self.len, self.heap))
    }
}

/// Encodes `value` with postcard into `stack`, or on the heap once it does not
/// fit: borrowed from `stack` when it fits.
///
/// # Errors
/// Postcard's error (the value's `Serialize` failed, e.g. a handle where none
/// can travel); see `codec::reason` for the message to show.
#[inline]
pub(crate) fn encode<'a, T: Serialize + ?Sized, const N: usize>(
    value: &T,
    stack: &'a mut [u8; N],
) -> postcard::Result<Cow<'a, [u8]>> {
    // `postcard::serialize_with_flavor` without the call: inlined, the
    // flavor's fields stay in registers instead of being copied in and out.
    let mut ser = postcard::Serializer {
        output: StackOrHeap {
            stack: &mut *stack,
            len: 0,
            heap: None,
        },
    };
    value.serialize(&mut ser)?;
    Ok(match postcard::ser_flavors::Flavor::finalize(ser.output)? {
        (len, None) => Cow::Borrowed(&stack[..len]),
        (_, Some(heap)) => Cow::Owned(heap),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_short_copies_every_length() {
        let src: Vec<u8> = (1..=40).collect();
        for n in 0..=40 {
            let mut dst = vec![0u8; n];
            copy_short(&mut dst, &src[..n]);
            assert_eq!(dst, src[..n], "length {n}");
        }
    }

    #[test]
    fn encodings_are_postcard_on_the_stack_then_on_the_heap() {
        for len in [0, 1, 7, 8, 16, 17, 40, 60, 61, 62, 63, 64, 65, 200, 5000] {
            let value = (len as u64 * 0x0123_4567_89ab, "x".repeat(len));
            let mut stack = [0u8; 64];
            let out = encode(&value, &mut stack).unwrap();
            assert_eq!(
                out.as_ref(),
                postcard::to_allocvec(&value).unwrap(),
                "length {len}"
            );
            assert_eq!(matches!(out, Cow::Borrowed(_)), out.len() <= 64, "length {len}");
        }
    }
}
