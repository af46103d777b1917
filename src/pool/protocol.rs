//! The wire protocol between the pool's dispatcher and a worker, and the
//! monomorphised entry points that run a task inside a worker.
//!
//! Every message is one raw-bytes frame (`codec` header, `Kind::Bytes`) whose
//! payload starts with a tag byte:
//!
//! | direction | message | payload |
//! | --- | --- | --- |
//! | pool -> worker | `JOB` | id u64, entry offset i64, arguments |
//! | pool -> worker | `SHUTDOWN` | (none): finish and exit |
//! | worker -> pool | `READY` | (none): the initializer ran |
//! | worker -> pool | `ACK` | id u64: the worker starts this job now |
//! | worker -> pool | `DONE` | id u64, nanos u64, results |
//!
//! Arguments are a u32 count and that many postcard values; results are a u32
//! count and per item a tag ([`ITEM_VALUE`], [`ITEM_BYTES`] or an error tag),
//! a u64 length and the bytes (postcard, raw bytes, or an error message).
//! A worker runs its jobs in the order received and acknowledges each one
//! before running it, so the pool knows which job a dead worker held.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, Frame, Kind, HEADER_LEN};
use crate::pool::error::TaskError;
use crate::process::bootstrap::panic_message;
use crate::sys::image::{conjure_fn, entry_offset, Entry, Image};

pub(crate) const JOB: u8 = 0;
pub(crate) const SHUTDOWN: u8 = 1;
pub(crate) const READY: u8 = 2;
pub(crate) const ACK: u8 = 3;
pub(crate) const DONE: u8 = 4;

pub(crate) const ITEM_VALUE: u8 = 0;
pub(crate) const ITEM_BYTES: u8 = 1;
pub(crate) const ITEM_PANICKED: u8 = 2;
pub(crate) const ITEM_ENCODE: u8 = 3;
pub(crate) const ITEM_DECODE: u8 = 4;

/// Starts a raw-bytes frame in `out`; returns where its header starts for [`end_frame`].
pub(crate) fn begin_frame(out: &mut Vec<u8>, tag: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    out.push(tag);
    start
}

/// Writes the header of the frame begun at `start`.
pub(crate) fn end_frame(out: &mut [u8], start: usize) {
    let len = (out.len() - start - HEADER_LEN) as u64;
    out[start..start + HEADER_LEN].copy_from_slice(&codec::header(Kind::Bytes, len, 0));
}

/// A whole frame holding `tag` and an optional id.
pub(crate) fn push_simple(out: &mut Vec<u8>, tag: u8, id: Option<u64>) {
    let s = begin_frame(out, tag);
    if let Some(id) = id {
        out.extend_from_slice(&id.to_le_bytes());
    }
    end_frame(out, s);
}

/// Reads little-endian integers off the front of a byte slice.
pub(crate) struct Cursor<'a>(pub(crate) &'a [u8]);

impl<'a> Cursor<'a> {
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// One item's outcome in a `DONE` message: where its bytes are, or its error.
#[derive(Debug, Clone)]
enum ItemRef {
    Value(std::ops::Range<usize>),
    Bytes(std::ops::Range<usize>),
    Failed(TaskError),
}

/// The items of a `DONE` message, not yet decoded: the message itself and
/// where each item lies in it (no copy per item).
#[derive(Debug)]
pub(crate) struct Items {
    buf: Vec<u8>,
    refs: Vec<ItemRef>,
}

/// What a job produced: its items, or a failure of the whole job.
pub(crate) type JobOutput = Result<Items, TaskError>;

impl Items {
    /// The number of items.
    pub(crate) fn len(&self) -> usize {
        self.refs.len()
    }

    /// The first failed item's error.
    pub(crate) fn first_error(&self) -> Option<&TaskError> {
        self.refs.iter().find_map(|r| match r {
            ItemRef::Failed(e) => Some(e),
            _ => None,
        })
    }

    /// Decodes every item into `R` (in the caller's thread).
    pub(crate) fn decode<R: DeserializeOwned + Any>(self) -> impl Iterator<Item = Result<R, TaskError>> {
        let Items { buf, refs } = self;
        refs.into_iter().map(move |r| match r {
            ItemRef::Failed(e) => Err(e),
            ItemRef::Value(range) => {
                codec::decode_plain::<R>(&buf[range]).map_err(|e| TaskError::Decode(e.to_string()))
            }
            ItemRef::Bytes(range) => codec::decode::<R>(Frame {
                kind: Kind::Bytes,
                payload: buf[range].to_vec(),
                fds: Vec::new(),
            })
            .map_err(|e| TaskError::Decode(e.to_string())),
        })
    }
}

/// Parses the results part of a `DONE` message whose payload is `buf`, the
/// results starting at `at`.
pub(crate) fn parse_items(buf: Vec<u8>, at: usize) -> Option<Items> {
    let mut c = Cursor(buf.get(at..)?);
    let n = c.u32()? as usize;
    let mut refs = Vec::with_capacity(n.min(c.0.len()));
    for _ in 0..n {
        let tag = c.u8()?;
        let len = usize::try_from(c.u64()?).ok()?;
        let start = buf.len() - c.0.len();
        let bytes = c.take(len)?;
        let msg = || String::from_utf8_lossy(bytes).into_owned();
        refs.push(match tag {
            ITEM_VALUE => ItemRef::Value(start..start + len),
            ITEM_BYTES => ItemRef::Bytes(start..start + len),
            ITEM_PANICKED => ItemRef::Failed(TaskError::Panicked { message: msg() }),
            ITEM_ENCODE => ItemRef::Failed(TaskError::Encode(msg())),
            ITEM_DECODE => ItemRef::Failed(TaskError::Decode(msg())),
            _ => return None,
        });
    }
    Some(Items { buf, refs })
}

/// Appends the encoding of one argument (in the caller's thread).
/// Same layout as a result item; `Vec<u8>` arguments take the raw-bytes path.
pub(crate) fn encode_arg<A: Serialize + Any>(arg: &A, out: &mut Vec<u8>) -> Result<(), TaskError> {
    encode_value(arg, out).map_err(|e| TaskError::Encode(e.to_string()))
}

/// Appends `v` as an item (tag, length, bytes): raw bytes for a `Vec<u8>`,
/// postcard straight into `out` otherwise. Handles cannot travel here.
fn encode_value<T: Serialize + Any>(v: &T, out: &mut Vec<u8>) -> Result<(), codec::CodecError> {
    if let Some(b) = (v as &dyn Any).downcast_ref::<Vec<u8>>() {
        push_item(out, ITEM_BYTES, b);
        return Ok(());
    }
    let at = out.len();
    out.push(ITEM_VALUE);
    out.extend_from_slice(&[0u8; 8]);
    match postcard::to_extend(v, Append(out)) {
        Ok(_) => {
            let len = (out.len() - at - 9) as u64;
            out[at + 1..at + 9].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
        Err(_) => {
            out.truncate(at);
            // Encode again for the codec's full error message (rare path).
            Err(codec::to_bytes(v).err().unwrap_or_else(|| {
                codec::CodecError::Encode("the value's Serialize implementation returned an error".into())
            }))
        }
    }
}

/// Lets postcard append to a borrowed buffer.
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Decodes one argument (in the worker).
fn decode_arg<A: DeserializeOwned + Any>(c: &mut Cursor<'_>) -> Option<Result<A, String>> {
    let tag = c.u8()?;
    let len = usize::try_from(c.u64()?).ok()?;
    let bytes = c.take(len)?;
    let r = match tag {
        ITEM_BYTES => codec::decode::<A>(Frame {
            kind: Kind::Bytes,
            payload: bytes.to_vec(),
            fds: Vec::new(),
        }),
        ITEM_VALUE => codec::decode_plain::<A>(bytes),
        _ => return None,
    };
    Some(r.map_err(|e| format!("cannot decode the task's argument: {e}")))
}

fn push_item(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The context a task's [`Entry`] works in: the job message (arguments start
/// at `at`) and the buffer the results are appended to.
pub(crate) struct TaskCtx {
    pub(crate) payload: Vec<u8>,
    pub(crate) at: usize,
    pub(crate) out: Vec<u8>,
}

/// The offset identifying the entry point of task `F` across processes.
pub(crate) fn task_id<F, A, R>() -> i64
where
    F: Fn(A) -> R + Copy + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + Any,
{
    entry_offset(task_entry::<F, A, R>)
}

/// The offset identifying the entry point of initializer `F` across processes.
pub(crate) fn init_id<F, A>() -> i64
where
    F: Fn(A) + Copy + 'static,
    A: DeserializeOwned + 'static,
{
    entry_offset(init_entry::<F, A>)
}

/// The entry point at `offset` (in a worker: the parent runs the same build,
/// checked by the process handshake).
pub(crate) fn resolve(offset: i64) -> std::io::Result<Entry> {
    Image::get()?.resolve_entry(offset).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a task's code offset lies outside this executable's code",
        )
    })
}

/// The entry point of task `F` (runs in a worker): decodes the arguments, runs
/// `F` on each under `catch_unwind`, and appends the results.
fn task_entry<F, A, R>(ctx: &mut dyn Any)
where
    F: Fn(A) -> R + Copy + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + Any,
{
    let Some(TaskCtx { payload, at, out }) = ctx.downcast_mut::<TaskCtx>() else {
        return;
    };
    let f = conjure_fn::<F>();
    let mut c = Cursor(payload.get(*at..).unwrap_or_default());
    let n = c.u32().unwrap_or(0);
    out.extend_from_slice(&n.to_le_bytes());
    for _ in 0..n {
        let arg = match decode_arg::<A>(&mut c) {
            Some(Ok(a)) => a,
            Some(Err(m)) => {
                push_item(out, ITEM_DECODE, m.as_bytes());
                continue;
            }
            None => {
                push_item(out, ITEM_DECODE, b"corrupt job message");
                continue;
            }
        };
        match catch_unwind(AssertUnwindSafe(|| f(arg))) {
            Ok(r) => {
                if let Err(e) = encode_value(&r, out) {
                    push_item(out, ITEM_ENCODE, e.to_string().as_bytes());
                }
            }
            Err(p) => push_item(out, ITEM_PANICKED, panic_message(p.as_ref()).as_bytes()),
        }
    }
}

/// The entry point of an initializer `F` (runs once in each new worker). A
/// panic is not caught: the worker dies before taking a job, and the pool
/// reports that as a start failure.
fn init_entry<F, A>(ctx: &mut dyn Any)
where
    F: Fn(A) + Copy + 'static,
    A: DeserializeOwned + 'static,
{
    let Some(ctx) = ctx.downcast_mut::<TaskCtx>() else {
        return;
    };
    let f = conjure_fn::<F>();
    match postcard::from_bytes::<A>(ctx.payload.get(ctx.at..).unwrap_or_default()) {
        Ok(a) => f(a),
        Err(e) => panic!("cannot decode the initializer's argument: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F, A, R>(_f: F, args: &[A]) -> Items
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + Any,
    {
        let mut payload = vec![9u8; 3];
        payload.extend_from_slice(&(args.len() as u32).to_le_bytes());
        for a in args {
            encode_arg(a, &mut payload).unwrap();
        }
        let entry = resolve(task_id::<F, A, R>()).unwrap();
        let mut ctx = TaskCtx {
            payload,
            at: 3,
            out: vec![1, 2],
        };
        entry(&mut ctx);
        parse_items(ctx.out, 2).unwrap()
    }

    #[test]
    fn task_results_come_back_in_order() {
        let items = run(|x: u64| x * 3, &[1u64, 2, 3]);
        let v: Vec<u64> = items.decode().map(Result::unwrap).collect();
        assert_eq!(v, [3, 6, 9]);
    }

    #[test]
    fn a_panic_fails_only_its_item() {
        let items = run(
            |x: i32| {
                if x == 2 {
                    panic!("two is bad")
                }
                x
            },
            &[1, 2, 3],
        );
        assert_eq!(
            items.first_error(),
            Some(&TaskError::Panicked {
                message: "two is bad".into()
            })
        );
        let v: Vec<Result<i32, TaskError>> = items.decode().collect();
        assert_eq!(v[0], Ok(1));
        assert_eq!(
            v[1],
            Err(TaskError::Panicked {
                message: "two is bad".into()
            })
        );
        assert_eq!(v[2], Ok(3));
    }

    #[test]
    fn bytes_take_the_fast_path_both_ways() {
        let mut out = Vec::new();
        encode_arg(&vec![5u8; 4], &mut out).unwrap();
        assert_eq!(out[0], ITEM_BYTES);
        let items = run(
            |v: Vec<u8>| v.into_iter().map(|b| b + 1).collect::<Vec<u8>>(),
            &[vec![1u8, 2]],
        );
        assert!(matches!(items.refs[0], ItemRef::Bytes(_)));
        let v: Vec<Vec<u8>> = items.decode().map(Result::unwrap).collect();
        assert_eq!(v, [vec![2u8, 3]]);
    }

    #[test]
    fn a_wrong_result_type_is_a_decode_error() {
        let items = run(|x: u32| x.to_string(), &[5u32]);
        let r = items.decode::<bool>().next().unwrap();
        assert!(matches!(r, Err(TaskError::Decode(_))), "{r:?}");
    }

    #[test]
    fn corrupt_results_are_refused() {
        let mut out = Vec::new();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.push(ITEM_VALUE);
        out.extend_from_slice(&100u64.to_le_bytes());
        assert!(parse_items(out.clone(), 0).is_none());
        out[4] = 77;
        assert!(parse_items(out, 0).is_none());
    }
}
