//! Named POSIX shared memory (`shm_open` / `shm_unlink`), for segments that
//! unrelated processes attach to by name.
//!
//! # Safety
//! The only `unsafe` is calling libc's `shm_open`/`shm_unlink` with a
//! NUL-terminated name built here; the returned descriptor is owned at once.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use rustix::fs::ftruncate;

/// Turns a user name (`"name"` or `"/name"`) into the `shm_open` form.
pub(crate) fn shm_name(name: &str) -> io::Result<CString> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let invalid = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid shared memory name {name:?}: {why}"),
        )
    };
    if bare.is_empty() {
        return Err(invalid("empty"));
    }
    if bare.len() > 250 {
        return Err(invalid("longer than 250 bytes"));
    }
    if bare.contains('/') {
        return Err(invalid("contains '/'"));
    }
    if bare == "." || bare == ".." {
        return Err(invalid("reserved"));
    }
    CString::new(format!("/{bare}")).map_err(|_| invalid("contains a NUL byte"))
}

/// Creates a new named segment of `len` bytes (mode 0600); fails with
/// `AlreadyExists` if the name is taken.
pub(crate) fn create(name: &str, len: u64) -> io::Result<OwnedFd> {
    let c = shm_name(name)?;
    // SAFETY: `c` is a valid NUL-terminated string; the flags and mode are plain integers.
    let fd = unsafe {
        libc::shm_open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o600 as libc::mode_t,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `shm_open` returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Err(e) = ftruncate(&fd, len) {
        let _ = unlink(name);
        return Err(e.into());
    }
    Ok(fd)
}

/// Opens an existing named segment read-write.
pub(crate) fn open(name: &str) -> io::Result<OwnedFd> {
    let c = shm_name(name)?;
    // SAFETY: as in `create`.
    let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `shm_open` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes a name; the memory lives on while anyone has it mapped or open.
pub(crate) fn unlink(name: &str) -> io::Result<()> {
    let c = shm_name(name)?;
    // SAFETY: `c` is a valid NUL-terminated string.
    if unsafe { libc::shm_unlink(c.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
