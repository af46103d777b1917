//! Receiving into a `Vec`'s spare capacity, so large payloads are not zeroed
//! before the kernel overwrites them.
//!
//! # Safety
//! The one `unsafe` call is `Vec::set_len` after `recv(2)`: rustix's `recv` into
//! a `&mut [MaybeUninit<u8>]` returns the prefix it initialised, and only that
//! many bytes are added to the length.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::BorrowedFd;

use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::net::{recv, RecvFlags};

use crate::deadline::Deadline;
use crate::sys::sock::poll_one;

/// Receives up to `max` bytes from a stream socket and appends them to `v`
/// (growing its capacity by at most `max`). Waits until `deadline` for data;
/// `Ok(0)` at EOF, `TimedOut` after the deadline.
///
/// Plain `recv(2)`: no descriptors can be received. Use it only where none can
/// arrive (inside a frame, past its first bytes: descriptors ride on the first
/// bytes of the `sendmsg` that carries them).
pub(crate) fn recv_append(
    sock: BorrowedFd<'_>,
    v: &mut Vec<u8>,
    max: usize,
    deadline: Deadline,
) -> io::Result<usize> {
    if max == 0 {
        return Ok(0);
    }
    v.reserve(max);
    let flags = if deadline == Deadline::NEVER {
        RecvFlags::empty()
    } else {
        RecvFlags::DONTWAIT
    };
    loop {
        let spare = &mut v.spare_capacity_mut()[..max];
        match recv(sock, spare, flags) {
            Ok(((filled, _), _)) => {
                let n = filled.len();
                let len = v.len() + n;
                // SAFETY: `recv` initialised the first `n` bytes of the spare
                // capacity (the slice it returned), so `len` bytes are initialised;
                // `n <= max <= spare capacity`, so `len <= capacity`.
                unsafe { v.set_len(len) };
                return Ok(n);
            }
            Err(Errno::AGAIN) => {
                if !poll_one(sock, PollFlags::IN, deadline)? {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "receive timed out"));
                }
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
