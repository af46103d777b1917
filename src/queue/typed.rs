//! The typed layer shared by the three queues: items encoded in the caller's
//! thread, the bytes fast path for `Vec<u8>`, errors that give the item back.

use std::any::Any;
use std::borrow::Cow;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{GetError, PutError, QueueError, TaskDoneError};
use super::ring::{Block, Flavor, GetFail, PutFail, Ring};
use crate::codec::{self, CodecError, Frame, Kind};
use crate::deadline::Deadline;
use crate::shm::segment::Segment;

/// Default data capacity of a ring: 1 GiB of address space, backed by memory
/// only as it fills.
pub(crate) const DEFAULT_RING_BYTES: u64 = 1 << 30;

/// Small values are encoded on the stack first.
const STACK_ENCODE: usize = 64;

/// A typed view of a ring.
pub(crate) struct Typed<T> {
    pub(crate) ring: Ring,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Typed<T> {
    fn clone(&self) -> Self {
        Typed {
            ring: self.ring.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Typed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("flavor", &self.ring.flavor())
            .field("len", &self.ring.len())
            .field("max_items", &self.ring.max_items())
            .field("closed", &self.ring.is_closed())
            .finish()
    }
}

/// Encodes into `buf` when it fits, else on the heap (or borrowed, for bytes).
fn encode<'a, T: Serialize + Any>(
    item: &'a T,
    buf: &'a mut [u8; STACK_ENCODE],
) -> Result<(u8, Cow<'a, [u8]>), CodecError> {
    let any = item as &dyn Any;
    if any.is::<Vec<u8>>() || any.is::<Box<[u8]>>() {
        let out = codec::encode_fast(item, false)?;
        return Ok((Kind::Bytes as u8, out.payload));
    }
    match codec::stack::encode(item, buf) {
        Ok(bytes) => Ok((Kind::Value as u8, bytes)),
        // A failure: the codec gives the right message (a handle inside, ...).
        Err(_) => Err(codec::encode(item, false).err().unwrap_or_else(|| {
            CodecError::Encode("the value's Serialize implementation returned an error".into())
        })),
    }
}

#[inline(always)]
fn decode<T: DeserializeOwned + Any>(kind: u8, payload: Cow<'_, [u8]>) -> Result<T, CodecError> {
    if kind == Kind::Bytes as u8 {
        decode_bytes(payload)
    } else {
        codec::decode_plain(&payload)
    }
}

/// A `Vec<u8>`/`Box<[u8]>` item (the bytes fast path), out of line so that
/// the common decoding inlines into the get.
#[inline(never)]
fn decode_bytes<T: DeserializeOwned + Any>(payload: Cow<'_, [u8]>) -> Result<T, CodecError> {
    codec::decode(Frame {
        kind: Kind::Bytes,
        payload: payload.into_owned(),
        fds: Vec::new(),
    })
}

fn get_err(e: GetFail) -> GetError {
    match e {
        GetFail::Empty => GetError::Empty,
        GetFail::Timeout => GetError::Timeout,
        GetFail::Closed => GetError::Closed,
        GetFail::Io(e) => GetError::Io(e),
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Typed<T> {
    pub(crate) fn create(flavor: Flavor, max_items: u64, bytes: u64) -> Result<Typed<T>, QueueError> {
        let ring = Ring::create(flavor, max_items, bytes)
            .map_err(|e| QueueError::new("cannot create the queue's shared memory", e))?;
        Ok(Typed::from_ring(ring))
    }

    pub(crate) fn from_ring(ring: Ring) -> Typed<T> {
        Typed {
            ring,
            _t: PhantomData,
        }
    }

    pub(crate) fn put_block(&self, item: T, block: Block) -> Result<(), PutError<T>> {
        let mut buf = [0u8; STACK_ENCODE];
        let r = match encode(&item, &mut buf) {
            Ok((kind, bytes)) => self.ring.put(kind, &bytes, block),
            Err(e) => return Err(PutError::Encode(item, e)),
        };
        r.map_err(|e| match e {
            PutFail::Full => PutError::Full(item),
            PutFail::Timeout => PutError::Timeout(item),
            PutFail::Closed => PutError::Closed(item),
            PutFail::Io(e) => PutError::Io(item, e),
        })
    }

    pub(crate) fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_block(item, Block::Until(Deadline::NEVER))
    }

    pub(crate) fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_block(item, Block::Until(Deadline::after(timeout)))
    }

    pub(crate) fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_block(item, Block::No)
    }

    pub(crate) fn get_block(&self, block: Block) -> Result<T, GetError> {
        // A closure, not the fn item `decode::<T>`: the closure's call
        // inlines into `get_with` (the fn item's `call_once` shim did not).
        self.ring
            .get_with(block, |kind, bytes| decode::<T>(kind, bytes))
            .map_err(get_err)?
            .map_err(GetError::Decode)
    }

    pub(crate) fn get(&self) -> Result<T, GetError> {
        self.get_block(Block::Until(Deadline::NEVER))
    }

    pub(crate) fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_block(Block::Until(Deadline::after(timeout)))
    }

    pub(crate) fn try_get(&self) -> Result<T, GetError> {
        self.get_block(Block::No)
    }

    pub(crate) fn len(&self) -> usize {
        usize::try_from(self.ring.len()).unwrap_or(usize::MAX)
    }

    pub(crate) fn is_full(&self) -> bool {
        let max = self.ring.max_items();
        max != 0 && self.ring.len() >= max
    }

    pub(crate) fn maxsize(&self) -> Option<usize> {
        match self.ring.max_items() {
            0 => None,
            n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }

    pub(crate) fn task_done(&self) -> Result<(), TaskDoneError> {
        match self.ring.task_done() {
            Ok(true) => Ok(()),
            Ok(false) => Err(TaskDoneError::TooManyCalls),
            Err(e) => Err(TaskDoneError::Io(e)),
        }
    }

    pub(crate) fn join_deadline(&self, deadline: Deadline) -> Result<bool, QueueError> {
        self.ring
            .join(deadline)
            .map_err(|e| QueueError::new("waiting for the queue's tasks failed", e))
    }

    pub(crate) fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.ring.segment() {
            Some(seg) => seg.serialize(s),
            None => Err(serde::ser::Error::custom("a private test queue cannot be sent")),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D, flavor: Flavor) -> Result<Typed<T>, D::Error> {
        let seg = Segment::deserialize(d)?;
        let ring = Ring::attach(seg, flavor).map_err(serde::de::Error::custom)?;
        Ok(Typed::from_ring(ring))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_encoding_is_postcard_and_falls_back_past_the_buffer() {
        for len in [0, 1, 3, 7, 8, 15, 16, 17, 40, 62, 63, 64, 65, 200] {
            let item = (len as u64 * 0x0123_4567_89ab, "x".repeat(len));
            let mut buf = [0u8; STACK_ENCODE];
            let (kind, bytes) = encode(&item, &mut buf).unwrap();
            assert_eq!(kind, Kind::Value as u8);
            assert_eq!(
                bytes.as_ref(),
                postcard::to_allocvec(&item).unwrap(),
                "length {len}"
            );
            assert_eq!(
                matches!(bytes, Cow::Borrowed(_)),
                bytes.len() <= STACK_ENCODE,
                "length {len}"
            );
        }
    }

    #[test]
    fn wrong_type_is_a_decode_error_and_the_queue_goes_on() {
        let ring = Ring::create(Flavor::Queue, 0, 4096).unwrap();
        let as_u64: Typed<u64> = Typed::from_ring(ring.clone());
        let as_string: Typed<String> = Typed::from_ring(ring);
        as_u64.put(u64::MAX).unwrap();
        as_string.put("ok".into()).unwrap();
        assert!(matches!(as_string.try_get(), Err(GetError::Decode(_))));
        assert_eq!(as_string.try_get().unwrap(), "ok");
        let bytes: Typed<Vec<u8>> = Typed::from_ring(as_u64.ring.clone());
        bytes.put(vec![1, 2, 3]).unwrap();
        assert!(matches!(as_string.try_get(), Err(GetError::Decode(_))));
    }
}
