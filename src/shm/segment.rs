//! A memfd segment mapped into this process, shareable as a handle.
//!
//! Every shared-memory structure (locks, queues, `Value`, `Array`, anonymous
//! `SharedMemory`) lives in a `Segment`. Cloning shares the mapping; sending it
//! to another process (as a child's argument, over a `Connection`) sends the
//! memfd, and the receiver maps the same pages.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::handles::{deserialize_fd, serialize_fd};
use crate::sys::mem::{file_len, memfd, Mapping};

#[derive(Debug)]
struct Inner {
    fd: OwnedFd,
    map: Mapping,
}

/// A shared, mapped memfd. Cheap to clone; the mapping goes away with the last clone
/// in this process, the memory with the last mapping and descriptor in any process.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    inner: Arc<Inner>,
}

impl Segment {
    /// A new zero-filled segment of `len` bytes. Pages are allocated only when
    /// touched, so a large `len` costs address space, not memory.
    pub(crate) fn create(name: &str, len: usize) -> io::Result<Segment> {
        let fd = memfd(name, len as u64)?;
        Segment::from_fd(fd)
    }

    /// Maps the whole file behind `fd`.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Segment> {
        let len = usize::try_from(file_len(fd.as_fd())?).map_err(io::Error::other)?;
        let map = Mapping::map(&fd, len)?;
        Ok(Segment {
            inner: Arc::new(Inner { fd, map }),
        })
    }

    /// The first byte (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.inner.map.as_ptr()
    }

    /// The length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.inner.map.len()
    }

    /// The memfd.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.inner.fd
    }
}

impl Serialize for Segment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.inner.fd.as_fd(), s)
    }
}

impl<'de> Deserialize<'de> for Segment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fd = deserialize_fd(d)?;
        Segment::from_fd(fd).map_err(serde::de::Error::custom)
    }
}
