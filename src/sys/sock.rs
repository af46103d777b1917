//! Sockets: socketpairs, `sendmsg`/`recvmsg` with SCM_RIGHTS, and `poll`.
//!
//! No `unsafe`: every descriptor is an `OwnedFd`/`BorrowedFd` and rustix does
//! the control-message encoding.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

use crate::deadline::Deadline;

/// The most descriptors the kernel accepts in one SCM_RIGHTS message (`SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 253;

/// A connected pair of Unix stream sockets, close-on-exec.
pub(crate) fn socketpair_stream() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

fn timespec(d: std::time::Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// Waits until `fd` has any of `flags` ready, or the deadline passes (-> `false`).
/// Errors, hang-ups and EOF count as ready: the next read or write reports them.
pub(crate) fn poll_one(fd: BorrowedFd<'_>, flags: PollFlags, deadline: Deadline) -> io::Result<bool> {
    Ok(!poll_many(&[fd], flags, deadline)?.is_empty())
}

/// Waits until at least one of `fds` is ready for `flags` (or the deadline passes)
/// and returns the indices of the ready ones (empty on timeout).
pub(crate) fn poll_many(
    fds: &[BorrowedFd<'_>],
    flags: PollFlags,
    deadline: Deadline,
) -> io::Result<Vec<usize>> {
    let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, flags)).collect();
    loop {
        let ts = deadline.remaining().map(timespec);
        match poll(&mut pfds, ts.as_ref()) {
            Ok(0) => {
                if deadline.passed() {
                    return Ok(Vec::new());
                }
            }
            Ok(_) => {
                return Ok(pfds
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| !p.revents().is_empty())
                    .map(|(i, _)| i)
                    .collect())
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends all of `bufs` (one logical message) on a stream socket, with `fds`
/// attached to the first byte, waiting for room until `deadline`.
///
/// Never raises SIGPIPE: a closed peer is `BrokenPipe`. A deadline that passes
/// mid-message is `TimedOut` (the peer has then seen part of a message).
pub(crate) fn send_all(
    sock: BorrowedFd<'_>,
    bufs: &[&[u8]],
    fds: &[BorrowedFd<'_>],
    deadline: Deadline,
) -> io::Result<()> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a message can carry at most {MAX_FDS_PER_MESSAGE} handles, this one has {}",
                fds.len()
            ),
        ));
    }
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let mut sent = 0usize;
    if total == 0 {
        // Descriptors need at least one byte to ride on; frames always have a header.
        return Ok(());
    }
    let mut fds_pending = !fds.is_empty();
    // Without a deadline the call may block in the kernel (one syscall instead of
    // sendmsg + poll + sendmsg); with one, it must not.
    let send_flags = if deadline == Deadline::NEVER {
        SendFlags::NOSIGNAL
    } else {
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT
    };
    // No allocation for the control buffer when there is nothing to attach.
    let mut space = if fds.is_empty() {
        Vec::new()
    } else {
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))]
    };
    // A zero-length message with no descriptors still "sends": nothing to do.
    while sent < total || fds_pending {
        // Skip what has gone out already.
        let mut skip = sent;
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(bufs.len());
        for b in bufs {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            iov.push(IoSlice::new(&b[skip..]));
            skip = 0;
        }
        let mut control = SendAncillaryBuffer::new(&mut space);
        if fds_pending && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("control buffer too small for descriptors"));
        }
        match sendmsg(sock, &iov, &mut control, send_flags) {
            Ok(n) => {
                if n > 0 {
                    fds_pending = false;
                }
                sent += n;
            }
            Err(Errno::AGAIN) => {
                if !poll_one(sock, PollFlags::OUT, deadline)? {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "send timed out"));
                }
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes, appending any descriptors that came with
/// them to `fds`. Waits until `deadline` for data; returns `Ok(0)` at EOF and
/// `TimedOut` when the deadline passes first.
pub(crate) fn recv_some(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    deadline: Deadline,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    // Without a deadline the call may block in the kernel (one syscall instead of
    // recvmsg + poll + recvmsg: it halves a ping-pong's syscalls); with one, it must not.
    let flags = if deadline == Deadline::NEVER {
        RecvFlags::CMSG_CLOEXEC
    } else {
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC
    };
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg(sock, &mut iov, &mut control, flags) {
            Ok(msg) => {
                for m in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received) = m {
                        fds.extend(received);
                    }
                }
                return Ok(msg.bytes);
            }
            Err(Errno::AGAIN) => {
                // A deadline already passed (a `try_` call) needs no `poll`: one
                // system call per attempt, for callers that poll in a loop.
                if deadline.passed() || !poll_one(sock, PollFlags::IN, deadline)? {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "receive timed out"));
                }
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sets or clears `FD_CLOEXEC`.
pub(crate) fn set_cloexec(fd: impl AsFd, on: bool) -> io::Result<()> {
    let flags = if on {
        rustix::io::FdFlags::CLOEXEC
    } else {
        rustix::io::FdFlags::empty()
    };
    Ok(rustix::io::fcntl_setfd(fd, flags)?)
}
