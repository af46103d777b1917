//! Sockets: socketpairs, `sendmsg`/`recvmsg` with SCM_RIGHTS, and `poll`.
//!
//! Every descriptor is an `OwnedFd`/`BorrowedFd`; rustix encodes the control
//! messages we send.
//!
//! # Safety
//! [`send_all`] gathers a small message into an uninitialised stack array and
//! sends only the prefix it has written. [`recvmsg_fds`] calls `recvmsg(2)` directly (no
//! peer-address buffer, which rustix always passes) on a `msghdr` whose single
//! iovec is the caller's `&mut [u8]` and whose control buffer is a local,
//! `cmsghdr`-aligned array, both with their exact lengths. After a successful call
//! the kernel has written `msg_controllen` bytes of well-formed control messages;
//! they are walked with `CMSG_FIRSTHDR`/`CMSG_NXTHDR` (which stay within
//! `msg_controllen`), and each SCM_RIGHTS descriptor is a new descriptor owned by
//! this process, wrapped in an `OwnedFd` exactly once.
#![allow(unsafe_code)]

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    send, sendmsg, AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags,
    SocketType,
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
    // No allocation: one `pollfd` on the stack.
    let mut pfd = [PollFd::new(&fd, flags)];
    loop {
        let ts = deadline.remaining().map(timespec);
        match poll(&mut pfd, ts.as_ref()) {
            Ok(0) => {
                if deadline.passed() {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
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
    if total == 0 {
        // Descriptors need at least one byte to ride on; frames always have a header.
        return Ok(());
    }
    // Without a deadline the call may block in the kernel (one syscall instead of
    // sendmsg + poll + sendmsg); with one, it must not.
    let send_flags = if deadline == Deadline::NEVER {
        SendFlags::NOSIGNAL
    } else {
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT
    };
    let mut sent = 0usize;
    if fds.is_empty() {
        // Without descriptors: plain send(2), which spares the kernel the msghdr
        // and iovec imports. A small message in several pieces is gathered on the
        // stack first.
        if let [one] = bufs {
            return send_plain(sock, one, send_flags, deadline);
        }
        if total <= SMALL {
            let mut small = [MaybeUninit::<u8>::uninit(); SMALL];
            let mut at = 0;
            for b in bufs {
                // SAFETY: `at + b.len() <= total <= SMALL`, so the copy stays inside
                // `small`; a fresh stack array cannot overlap the caller's buffers.
                unsafe {
                    std::ptr::copy_nonoverlapping(b.as_ptr(), small.as_mut_ptr().add(at).cast(), b.len())
                };
                at += b.len();
            }
            // SAFETY: the loop above initialised exactly the first `total` bytes.
            let gathered = unsafe { std::slice::from_raw_parts(small.as_ptr().cast::<u8>(), total) };
            return send_plain(sock, gathered, send_flags, deadline);
        }
    }
    let mut fds_pending = !fds.is_empty();
    // No allocation for the control buffer when there is nothing to attach.
    let mut space = if fds.is_empty() {
        Vec::new()
    } else {
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))]
    };
    // The iovecs live on the stack for up to IOV_STACK buffers.
    let mut iov_stack = [IoSlice::new(&[]); IOV_STACK];
    let mut iov_heap: Vec<IoSlice<'_>> = Vec::new();
    while sent < total || fds_pending {
        // Skip what has gone out already.
        let mut skip = sent;
        let mut count = 0;
        for b in bufs {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            let slice = IoSlice::new(&b[skip..]);
            skip = 0;
            if count < IOV_STACK {
                iov_stack[count] = slice;
            } else {
                if count == IOV_STACK {
                    iov_heap.clear();
                    iov_heap.extend_from_slice(&iov_stack);
                }
                iov_heap.push(slice);
            }
            count += 1;
        }
        let iov = if count <= IOV_STACK {
            &iov_stack[..count]
        } else {
            &iov_heap[..]
        };
        let mut control = SendAncillaryBuffer::new(&mut space);
        if fds_pending && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("control buffer too small for descriptors"));
        }
        match sendmsg(sock, iov, &mut control, send_flags) {
            Ok(n) => {
                if n > 0 {
                    fds_pending = false;
                }
                sent += n;
            }
            Err(Errno::AGAIN) => wait_writable(sock, deadline)?,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Messages up to this size (header included) without descriptors are copied
/// into one stack buffer and sent with `send(2)`.
const SMALL: usize = 512;
/// Iovecs kept on the stack by [`send_all`].
const IOV_STACK: usize = 8;

/// Sends all of `buf` with `send(2)` (no descriptors), waiting for room until `deadline`.
fn send_plain(sock: BorrowedFd<'_>, buf: &[u8], flags: SendFlags, deadline: Deadline) -> io::Result<()> {
    let mut sent = 0;
    while sent < buf.len() {
        match send(sock, &buf[sent..], flags) {
            Ok(n) => sent += n,
            Err(Errno::AGAIN) => wait_writable(sock, deadline)?,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// After `EAGAIN`: waits for room until `deadline` (`TimedOut` once it passes).
fn wait_writable(sock: BorrowedFd<'_>, deadline: Deadline) -> io::Result<()> {
    if poll_one(sock, PollFlags::OUT, deadline)? {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::TimedOut, "send timed out"))
    }
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
    recv_hinted(sock, buf, fds, deadline, false)
}

/// [`recv_some`], told whether data is probably waiting already (`likely_ready`,
/// e.g. the peer is known to have run since this side sent its request).
///
/// Waits in poll, then receives without blocking; never sleeps in recvmsg, even
/// without a deadline. A thread asleep in recvmsg on a Unix stream socket is also
/// woken each time the peer consumes what this socket sent (the "room to write"
/// wake-up shares the socket's wait queue and recvmsg's waiter does not filter
/// it), which in a ping-pong costs a spurious wake-up and two extra context
/// switches per message; a poll waiter is woken only for input.
///
/// Where data is likely there, or the deadline has passed already (a `try_`
/// call), it first tries to receive at once: one system call when it succeeds,
/// instead of a poll and a receive. Otherwise it polls first: a failed receive
/// costs as much as the poll it saves.
pub(crate) fn recv_hinted(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    deadline: Deadline,
    likely_ready: bool,
) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    let mut poll_first = !likely_ready && !deadline.passed();
    loop {
        if poll_first && !poll_one(sock, PollFlags::IN, deadline)? {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "receive timed out"));
        }
        match recvmsg_fds(sock, buf, fds, flags) {
            Ok(n) => return Ok(n),
            Err(Errno::AGAIN) => {
                // No poll once the deadline has passed: one system call per
                // attempt, for callers that try in a loop.
                if deadline.passed() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "receive timed out"));
                }
                poll_first = true;
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives up to `buf.len()` bytes of the rest of a frame whose first bytes have
/// arrived, waiting as long as it takes; `Ok(0)` at EOF.
///
/// A blocking `recv(2)`: one system call per chunk, no poll. Descriptors ride on
/// the first bytes of a frame, so none can come here; a sleeping receiver may be
/// woken spuriously when the peer consumes what this side sent (see
/// [`recv_hinted`]), which costs a little, but mid-frame the peer is busy sending.
pub(crate) fn recv_rest(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::net::recv(sock, &mut *buf, rustix::net::RecvFlags::empty()) {
            Ok((n, _)) => return Ok(n),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Room for the largest SCM_RIGHTS message: `CMSG_SPACE(253 * sizeof(int))`.
const CONTROL_LEN: usize = rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE));

/// A control-message buffer aligned for `cmsghdr`.
#[repr(C, align(8))]
struct ControlBuf([MaybeUninit<u8>; CONTROL_LEN]);

/// One `recvmsg(2)` into `buf`, without a peer-address buffer; descriptors that
/// came with the bytes are appended to `fds` (close-on-exec with
/// `MSG_CMSG_CLOEXEC` in `flags`).
fn recvmsg_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    flags: libc::c_int,
) -> Result<usize, Errno> {
    let mut control = ControlBuf([MaybeUninit::uninit(); CONTROL_LEN]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `msghdr` is plain old data (integers and raw pointers), for which
    // all-zero bytes are a valid value (null name, no iovecs, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = CONTROL_LEN as _;
    // SAFETY: `msg` points at one iovec covering exactly `buf` (exclusively
    // borrowed) and at `control` with its exact length; both outlive the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
    if n < 0 {
        return Err(Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::IO));
    }
    if msg.msg_controllen > 0 {
        // SAFETY: the kernel wrote `msg_controllen` bytes of control messages
        // into `control`; CMSG_FIRSTHDR returns null or a header inside them.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cmsg.is_null() {
            // SAFETY: `cmsg` is non-null and points at a complete, aligned
            // header inside the initialised part of `control`.
            let (level, kind, len) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
            if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
                // SAFETY: CMSG_LEN(0) is a constant computation.
                let head = unsafe { libc::CMSG_LEN(0) } as usize;
                // `cmsg_len` is a `size_t` on glibc but a `u32` on musl.
                #[allow(clippy::unnecessary_cast)]
                let count = (len as usize).saturating_sub(head) / std::mem::size_of::<libc::c_int>();
                // SAFETY: the message's data holds `count` ints within `cmsg_len`.
                let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<libc::c_int>();
                for i in 0..count {
                    // SAFETY: `i < count` keeps the read inside this message's
                    // data; it may be unaligned, hence `read_unaligned`.
                    let fd = unsafe { data.add(i).read_unaligned() };
                    // SAFETY: SCM_RIGHTS installed `fd` in this process just now;
                    // nothing else owns it, and it is wrapped exactly once.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            // SAFETY: `cmsg` is a valid header of `msg`'s control data;
            // CMSG_NXTHDR returns the next one within `msg_controllen`, or null.
            cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
        }
    }
    Ok(n as usize)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Deadline {
        Deadline::after(Duration::from_secs(5))
    }

    #[test]
    fn descriptors_arrive_with_their_bytes_close_on_exec() {
        let (a, b) = socketpair_stream().unwrap();
        let files: Vec<OwnedFd> = (0..3)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect();
        let borrowed: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
        send_all(a.as_fd(), &[b"head", b"tail"], &borrowed, soon()).unwrap();
        let mut buf = [0u8; 64];
        let mut fds = Vec::new();
        let n = recv_some(b.as_fd(), &mut buf, &mut fds, soon()).unwrap();
        assert_eq!(&buf[..n], b"headtail");
        assert_eq!(fds.len(), 3);
        for fd in &fds {
            assert!(rustix::io::fcntl_getfd(fd)
                .unwrap()
                .contains(rustix::io::FdFlags::CLOEXEC));
            assert!(rustix::fs::fstat(fd).is_ok());
            assert!(!files.iter().any(|f| f.as_raw_fd() == fd.as_raw_fd()));
        }
    }

    #[test]
    fn a_small_message_in_pieces_arrives_whole() {
        let (a, b) = socketpair_stream().unwrap();
        send_all(a.as_fd(), &[b"ab", b"", b"cde", &[7u8; 300]], &[], soon()).unwrap();
        let mut buf = vec![0u8; 1024];
        let mut fds = Vec::new();
        let mut got = 0;
        while got < 305 {
            got += recv_some(b.as_fd(), &mut buf[got..], &mut fds, soon()).unwrap();
        }
        assert_eq!(&buf[..5], b"abcde");
        assert!(buf[5..305].iter().all(|&x| x == 7));
        assert!(fds.is_empty());
    }

    #[test]
    fn many_pieces_with_a_descriptor_arrive_in_order_across_partial_sends() {
        let (a, b) = socketpair_stream().unwrap();
        // More pieces than the iovecs kept on the stack, and more bytes than the
        // socket buffer, so that sendmsg goes out in parts resumed mid-piece.
        let pieces: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i; 1 + usize::from(i) * 40_000]).collect();
        let expected: Vec<u8> = pieces.concat();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut fds = Vec::new();
            let mut chunk = vec![0u8; 1 << 16];
            loop {
                match recv_some(b.as_fd(), &mut chunk, &mut fds, soon()).unwrap() {
                    0 => return (got, fds.len()),
                    n => got.extend_from_slice(&chunk[..n]),
                }
            }
        });
        let file: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let bufs: Vec<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
        send_all(a.as_fd(), &bufs, &[file.as_fd()], soon()).unwrap();
        drop(a);
        let (got, nfds) = reader.join().unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected);
        assert_eq!(nfds, 1);
    }

    #[test]
    fn hinted_receives_and_passed_deadlines() {
        let (a, b) = socketpair_stream().unwrap();
        let mut buf = [0u8; 8];
        let mut fds = Vec::new();
        let passed = Deadline::after(Duration::ZERO);
        // A passed deadline: nothing there times out at once, data is taken.
        for hint in [false, true] {
            let e = recv_hinted(b.as_fd(), &mut buf, &mut fds, passed, hint).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        }
        send_all(a.as_fd(), &[b"now"], &[], soon()).unwrap();
        assert_eq!(
            recv_hinted(b.as_fd(), &mut buf, &mut fds, passed, false).unwrap(),
            3
        );
        // A wrong hint without a deadline waits for the data.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            send_all(a.as_fd(), &[b"later"], &[], soon()).unwrap();
            a
        });
        assert_eq!(
            recv_hinted(b.as_fd(), &mut buf, &mut fds, Deadline::NEVER, true).unwrap(),
            5
        );
        assert_eq!(&buf[..5], b"later");
        drop(writer.join().unwrap());
        assert_eq!(
            recv_hinted(b.as_fd(), &mut buf, &mut fds, Deadline::NEVER, true).unwrap(),
            0
        );
        assert_eq!(recv_rest(b.as_fd(), &mut buf).unwrap(), 0);
        assert!(fds.is_empty());
    }

    #[test]
    fn deadlines_and_end_of_stream() {
        let (a, b) = socketpair_stream().unwrap();
        let mut buf = [0u8; 8];
        let mut fds = Vec::new();
        let short = Deadline::after(Duration::from_millis(20));
        let e = recv_some(b.as_fd(), &mut buf, &mut fds, short).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // Fill the socket: a large send times out part way, a small one at once.
        let big = vec![1u8; 16 << 20];
        let e = send_all(a.as_fd(), &[&big], &[], short).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let e = send_all(a.as_fd(), &[b"x", b"y"], &[], Deadline::after(Duration::ZERO)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // What went out is readable; then the end of the stream is Ok(0).
        drop(a);
        let mut total = 0;
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match recv_some(b.as_fd(), &mut chunk, &mut fds, soon()).unwrap() {
                0 => break,
                n => total += n,
            }
        }
        assert!(total > 0 && total < big.len());
    }
}
