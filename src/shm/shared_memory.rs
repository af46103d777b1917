//! `SharedMemory`: a block of raw bytes shared between processes, anonymous
//! (memfd) or named (`shm_open`).
//!
//! # Safety
//! The block is a [`Segment`]: a `MAP_SHARED` mapping of exactly `size` bytes
//! that lives as long as any clone of the handle. Other processes may write it
//! at any time, so the safe views are atomic ([`SharedMemory::as_atomic_bytes`],
//! `read_at`/`write_at` go through it); plain `&[u8]`/`&mut [u8]` views are
//! `unsafe fn`s whose callers promise the absence of concurrent writers.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

use crate::shm::segment::Segment;
use crate::sys::named_shm;

/// A block of bytes shared between processes, like Python's
/// `multiprocessing.shared_memory.SharedMemory`.
///
/// - **Anonymous** (`create(None, size)`): a memfd. It is reachable only
///   through handles (pass it to a child, send it over a `Connection`), and the
///   memory is freed when the last handle and mapping in any process go away —
///   nothing is ever left behind, even after a crash.
/// - **Named** (`create(Some("name"), size)`): a POSIX shared memory object
///   (`/dev/shm/name`) that an unrelated process can [`open`](SharedMemory::open)
///   by name. Its **name belongs to whoever created it**: dropping handles never
///   removes it; call [`unlink`](SharedMemory::unlink) when no new process
///   needs to open it (the memory itself lives on while it is mapped). A
///   creator that crashes before unlinking leaves the name (and its memory) in
///   `/dev/shm` until [`SharedMemory::unlink_name`] or a reboot removes it.
///
/// Byte access: [`read_at`](SharedMemory::read_at) /
/// [`write_at`](SharedMemory::write_at) copy in and out, and
/// [`as_atomic_bytes`](SharedMemory::as_atomic_bytes) is a safe shared view;
/// coordinate writers with a [`Lock`](crate::Lock) as in Python.
///
/// # Examples
///
/// ```
/// use multiproc::SharedMemory;
/// let shm = SharedMemory::create(None, 16)?;
/// shm.write_at(0, b"hello")?;
/// let mut buf = [0u8; 5];
/// shm.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// assert_eq!(shm.size(), 16);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Differences from Python's multiprocessing
/// - No resource tracker: a handle never unlinks a name on drop or at exit, so
///   opening a segment in another process can never destroy it by surprise
///   (CPython gh-82300). Unlinking is explicit.
/// - `buf` (a memoryview) is `read_at`/`write_at`/`as_atomic_bytes`, or the
///   `unsafe` [`as_slice`](SharedMemory::as_slice) /
///   [`as_mut_slice`](SharedMemory::as_mut_slice).
/// - `name=None` creates an anonymous segment instead of a random name.
#[doc(alias = "multiprocessing.shared_memory.SharedMemory")]
#[derive(Clone, Serialize, Deserialize)]
pub struct SharedMemory {
    seg: Segment,
    name: Option<String>,
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("size", &self.size())
            .finish()
    }
}

fn out_of_range(offset: usize, len: usize, size: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("bytes {offset}..{offset}+{len} are outside the shared memory of {size} bytes"),
    )
}

impl SharedMemory {
    /// Creates a zero-filled block of `size` bytes: anonymous for `None`,
    /// named otherwise (the name may start with `/`).
    ///
    /// # Errors
    /// `InvalidInput` for a zero size or an invalid name (empty, containing
    /// `/` or NUL, longer than 250 bytes); `AlreadyExists` if the name is taken;
    /// or the system refused.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// use std::io::ErrorKind;
    /// let anon = SharedMemory::create(None, 4096)?;
    /// assert_eq!((anon.name(), anon.size()), (None, 4096));
    /// let name = format!("multiproc-doc-create-{}", std::process::id());
    /// let named = SharedMemory::create(Some(&name), 64)?;
    /// assert_eq!(SharedMemory::create(Some(&name), 64).unwrap_err().kind(), ErrorKind::AlreadyExists);
    /// named.unlink()?;
    /// assert_eq!(SharedMemory::create(None, 0).unwrap_err().kind(), ErrorKind::InvalidInput);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create(name: Option<&str>, size: usize) -> io::Result<SharedMemory> {
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shared memory size must be positive",
            ));
        }
        match name {
            None => Ok(SharedMemory {
                seg: Segment::create("multiproc-shared-memory", size)?,
                name: None,
            }),
            Some(n) => {
                let fd = named_shm::create(n, size as u64)?;
                let seg = match Segment::from_fd(fd) {
                    Ok(seg) => seg,
                    Err(e) => {
                        let _ = named_shm::unlink(n);
                        return Err(e);
                    }
                };
                Ok(SharedMemory {
                    seg,
                    name: Some(n.trim_start_matches('/').to_string()),
                })
            }
        }
    }

    /// Attaches to the named block `name`, created by any process.
    ///
    /// # Errors
    /// `NotFound` if no such name exists (never created, or unlinked);
    /// `InvalidInput` for an invalid name or an empty object (one whose creator
    /// has not sized it yet: `create` makes the name, then sizes it; retry).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Process, SharedMemory};
    /// use std::time::Duration;
    /// let name = format!("multiproc-doc-open-{}", std::process::id());
    /// let shm = SharedMemory::create(Some(&name), 16)?;
    /// // The child gets only the name and attaches by it.
    /// let child = Process::spawn(name.clone(), |name: String| {
    ///     SharedMemory::open(&name).and_then(|shm| shm.write_at(0, b"hi")).is_ok()
    /// })?;
    /// assert_eq!(child.join_timeout(Duration::from_secs(30))?, Some(true));
    /// let mut buf = [0u8; 2];
    /// shm.read_at(0, &mut buf)?;
    /// assert_eq!(&buf, b"hi");
    /// shm.unlink()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(name: &str) -> io::Result<SharedMemory> {
        let fd = named_shm::open(name)?;
        Ok(SharedMemory {
            seg: Segment::from_fd(fd)?,
            name: Some(name.trim_start_matches('/').to_string()),
        })
    }

    /// Removes the name, so no new process can open it; handles already open
    /// (here or elsewhere) keep working, and the memory is freed when the last
    /// one is gone. Does nothing for an anonymous block.
    ///
    /// # Errors
    /// `NotFound` if the name was already removed.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// use std::io::ErrorKind;
    /// let name = format!("multiproc-doc-unlink-{}", std::process::id());
    /// let shm = SharedMemory::create(Some(&name), 8)?;
    /// shm.unlink()?;
    /// assert_eq!(SharedMemory::open(&name).unwrap_err().kind(), ErrorKind::NotFound);
    /// shm.write_at(0, b"still ok")?; // open handles keep working
    /// assert_eq!(shm.unlink().unwrap_err().kind(), ErrorKind::NotFound);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn unlink(&self) -> io::Result<()> {
        match &self.name {
            Some(n) => named_shm::unlink(n),
            None => Ok(()),
        }
    }

    /// Removes the name `name` (e.g. one left behind by a crashed creator).
    ///
    /// # Errors
    /// `NotFound` if there is no such name; `InvalidInput` for an invalid name.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// use std::io::ErrorKind;
    /// let name = format!("multiproc-doc-unlink-name-{}", std::process::id());
    /// drop(SharedMemory::create(Some(&name), 8)?); // the name outlives the handle
    /// SharedMemory::unlink_name(&name)?;
    /// assert_eq!(SharedMemory::open(&name).unwrap_err().kind(), ErrorKind::NotFound);
    /// assert_eq!(SharedMemory::unlink_name(&name).unwrap_err().kind(), ErrorKind::NotFound);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn unlink_name(name: &str) -> io::Result<()> {
        named_shm::unlink(name)
    }

    /// The name (without a leading `/`), `None` for an anonymous block.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// let name = format!("multiproc-doc-name-{}", std::process::id());
    /// let shm = SharedMemory::create(Some(&format!("/{name}")), 8)?;
    /// assert_eq!(shm.name(), Some(name.as_str())); // without the leading '/'
    /// shm.unlink()?;
    /// assert_eq!(SharedMemory::create(None, 8)?.name(), None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The size in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// assert_eq!(SharedMemory::create(None, 100)?.size(), 100);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn size(&self) -> usize {
        self.seg.len()
    }

    /// The bytes as atomics: a safe view that other processes may write concurrently.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// use std::sync::atomic::Ordering;
    /// let shm = SharedMemory::create(None, 4)?;
    /// let bytes = shm.as_atomic_bytes();
    /// assert_eq!(bytes.len(), 4);
    /// bytes[3].fetch_add(7, Ordering::Relaxed);
    /// let mut buf = [0u8; 4];
    /// shm.read_at(0, &mut buf)?;
    /// assert_eq!(buf, [0, 0, 0, 7]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn as_atomic_bytes(&self) -> &[AtomicU8] {
        // SAFETY: the mapping is `size` bytes, lives as long as `self`, and
        // `AtomicU8` has the layout of `u8` and tolerates concurrent access.
        unsafe { std::slice::from_raw_parts(self.seg.as_ptr().cast::<AtomicU8>(), self.seg.len()) }
    }

    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    ///
    /// # Errors
    /// `InvalidInput` if the range is outside the block.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// let shm = SharedMemory::create(None, 8)?;
    /// shm.write_at(4, &[1, 2, 3, 4])?;
    /// let mut buf = [0u8; 3];
    /// shm.read_at(3, &mut buf)?;
    /// assert_eq!(buf, [0, 1, 2]);
    /// let err = shm.read_at(6, &mut buf).unwrap_err(); // bytes 6..9 of 8
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> io::Result<()> {
        let src = offset
            .checked_add(buf.len())
            .and_then(|end| self.as_atomic_bytes().get(offset..end))
            .ok_or_else(|| out_of_range(offset, buf.len(), self.size()))?;
        for (d, s) in buf.iter_mut().zip(src) {
            *d = s.load(Ordering::Relaxed);
        }
        std::sync::atomic::fence(Ordering::Acquire);
        Ok(())
    }

    /// Copies `data` into the block starting at `offset`.
    ///
    /// # Errors
    /// `InvalidInput` if the range is outside the block.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// use std::sync::atomic::Ordering;
    /// let shm = SharedMemory::create(None, 4)?;
    /// shm.write_at(1, b"ab")?;
    /// assert_eq!(shm.as_atomic_bytes()[2].load(Ordering::Relaxed), b'b');
    /// assert!(shm.write_at(3, b"ab").is_err()); // past the end: nothing written
    /// assert_eq!(shm.as_atomic_bytes()[3].load(Ordering::Relaxed), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write_at(&self, offset: usize, data: &[u8]) -> io::Result<()> {
        let dst = offset
            .checked_add(data.len())
            .and_then(|end| self.as_atomic_bytes().get(offset..end))
            .ok_or_else(|| out_of_range(offset, data.len(), self.size()))?;
        std::sync::atomic::fence(Ordering::Release);
        for (d, s) in dst.iter().zip(data) {
            d.store(*s, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The first byte of the mapping (page aligned), for FFI or custom layouts.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// let shm = SharedMemory::create(None, 64)?;
    /// let p = shm.as_ptr();
    /// assert!(!p.is_null());
    /// assert_eq!(p as usize % 4096, 0); // page aligned
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn as_ptr(&self) -> *mut u8 {
        self.seg.as_ptr()
    }

    /// The bytes as a plain slice.
    ///
    /// # Safety
    /// While the slice lives, no thread or process may write the block.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// let shm = SharedMemory::create(None, 4)?;
    /// shm.write_at(0, &[1, 2, 3, 4])?;
    /// // SAFETY: nothing writes the block while `bytes` lives.
    /// let bytes = unsafe { shm.as_slice() };
    /// assert_eq!(bytes, [1, 2, 3, 4]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: in bounds and alive (see `as_atomic_bytes`); no concurrent
        // writer per the caller's promise.
        unsafe { std::slice::from_raw_parts(self.seg.as_ptr(), self.seg.len()) }
    }

    /// The bytes as a mutable slice.
    ///
    /// # Safety
    /// While the slice lives, no other thread or process may read or write the
    /// block, and no other slice of it may exist in this process.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// let shm = SharedMemory::create(None, 4)?;
    /// {
    ///     // SAFETY: no other slice exists and no one else touches the block meanwhile.
    ///     let bytes = unsafe { shm.as_mut_slice() };
    ///     bytes.copy_from_slice(b"rust");
    /// }
    /// let mut buf = [0u8; 4];
    /// shm.read_at(0, &mut buf)?;
    /// assert_eq!(&buf, b"rust");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: in bounds and alive; exclusive per the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.seg.as_ptr(), self.seg.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let shm = SharedMemory::create(None, 8).unwrap();
        assert_eq!(
            shm.write_at(5, b"1234").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            shm.read_at(usize::MAX, &mut [0u8; 2]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        shm.write_at(4, b"1234").unwrap();
        let mut b = [0u8; 8];
        shm.read_at(0, &mut b).unwrap();
        assert_eq!(&b, b"\0\0\0\x001234");
        assert_eq!(
            SharedMemory::create(None, 0).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for n in ["", "/", "a/b", "x\0y"] {
            assert_eq!(
                SharedMemory::create(Some(n), 8).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{n:?}"
            );
        }
    }
}
