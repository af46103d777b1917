//! Shared memory: memfd segments and `MAP_SHARED` mappings.
//!
//! # Safety
//! [`Mapping`] owns one `mmap`ed range: it is created by a successful `mmap`
//! of exactly `len` bytes and unmapped once, in `Drop`. Nothing hands out
//! references into it; users take raw pointers with [`Mapping::as_ptr`] and
//! are responsible for how they use them (the shared-memory structures state
//! their own contracts).
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{fstat, ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// Creates an anonymous memfd of `len` bytes (zero-filled, sparse: pages are
/// allocated only when touched). Nothing is left behind in any file system
/// when the last descriptor and mapping go away.
pub(crate) fn memfd(name: &str, len: u64) -> io::Result<OwnedFd> {
    let fd = memfd_create(name, MemfdFlags::CLOEXEC)?;
    ftruncate(&fd, len)?;
    Ok(fd)
}

/// The size in bytes of the file behind `fd`.
pub(crate) fn file_len(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let st = fstat(fd)?;
    u64::try_from(st.st_size).map_err(|_| io::Error::other("negative file size"))
}

/// Frees the pages of `fd` in `[offset, offset + len)`: they read as zeros
/// afterwards and cost no memory until touched again (every mapping sees it).
pub(crate) fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    use rustix::fs::{fallocate, FallocateFlags};
    fallocate(
        fd,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    )?;
    Ok(())
}

/// Faults in `[ptr, ptr + len)` of a shared mapping as if written (allocating
/// the pages) in one call, instead of one page fault per page later.
/// Contents are unchanged.
///
/// # Safety
/// `ptr` is page aligned and the range lies inside a live read-write mapping
/// of this process.
pub(crate) unsafe fn populate_write(ptr: *mut u8, len: usize) -> io::Result<()> {
    use rustix::mm::{madvise, Advice};
    // SAFETY: per the caller's contract; MADV_POPULATE_WRITE writes nothing.
    unsafe { madvise(ptr.cast::<c_void>(), len, Advice::LinuxPopulateWrite)? };
    Ok(())
}

/// The memory actually allocated to the file behind `fd`, in bytes.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn allocated_bytes(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let st = fstat(fd)?;
    Ok(u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512))
}

/// A read-write `MAP_SHARED` mapping of a whole file.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is a plain address range; it is valid from any thread, and
// the structures placed in it synchronise through atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only exposes the address and the length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd` shared and read-write.
    /// `len` must be non-zero and not larger than the file.
    pub(crate) fn map(fd: impl AsFd, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "cannot map 0 bytes"));
        }
        let flen = file_len(fd.as_fd())?;
        if (len as u64) > flen {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("mapping of {len} bytes asked for a file of {flen} bytes"),
            ));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint) overlaps
        // nothing Rust knows about; the length is non-zero and within the file.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// The first byte of the mapping (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what `mmap` returned, and this is the
        // only place they are unmapped.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}
