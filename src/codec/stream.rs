//! Frames over a stream socket (Unix or TCP): buffered, deadline-aware reads
//! that keep their progress across timeouts, and whole-frame writes.

use std::borrow::Cow;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::codec::{parse_header, CodecError, Frame, Header, Kind, Outgoing, HEADER_LEN};
use crate::deadline::Deadline;
use crate::sys::sock;

/// Why reading a frame failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed the stream at a frame boundary.
    Eof,
    /// The deadline passed; what was read so far is kept for the next call.
    TimedOut,
    /// A bad header or a stream that ended mid-frame. The stream is unusable.
    Codec(CodecError),
    /// The socket failed.
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::TimedOut {
            ReadError::TimedOut
        } else {
            ReadError::Io(e)
        }
    }
}

/// Writes one frame (header, payload, descriptors) before `deadline`.
pub(crate) fn write_frame(sock: BorrowedFd<'_>, out: &Outgoing<'_>, deadline: Deadline) -> io::Result<()> {
    write_frames(sock, &[out], deadline)
}

/// Writes several frames with one system call where they fit. Descriptors all
/// ride on the first byte; the reader hands them out to frames in order.
pub(crate) fn write_frames(
    sock: BorrowedFd<'_>,
    frames: &[&Outgoing<'_>],
    deadline: Deadline,
) -> io::Result<()> {
    let fds: Vec<BorrowedFd<'_>> = frames
        .iter()
        .flat_map(|f| f.fds.iter().map(|fd| fd.as_fd()))
        .collect();
    let bufs: Vec<&[u8]> = frames
        .iter()
        .flat_map(|f| [&f.header[..], &f.payload[..]])
        .collect();
    sock::send_all(sock, &bufs, &fds, deadline)
}

/// The most the reader's buffer grows to.
const CHUNK: usize = 64 * 1024;
/// A new reader's buffer: one page. It doubles (up to [`CHUNK`]) each time a
/// receive fills it, so a connection that streams gets the large buffer, and
/// a process that only makes a call or two (a pool worker's, a manager
/// proxy's first call in a child) does not fault in 64 KiB of zeros.
const FIRST: usize = 4096;
/// Payloads above this are received straight into their own buffer.
const DIRECT: usize = 16 * 1024;
/// A large payload's buffer grows by at most this much at a time, as its bytes arrive.
const GROW: usize = 8 << 20;

/// Reads frames from one stream, keeping partial progress across timeouts.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    /// Bytes read but not yet consumed: `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Descriptors received and not yet handed to a frame, in arrival order.
    fds: Vec<OwnedFd>,
    /// The frame being read: its header and the payload so far.
    /// Boxed: rare, and it keeps the reader (and so a `Connection`) small.
    current: Option<Box<(Header, Vec<u8>)>>,
    /// The next receive tries the socket before polling it (see [`FrameReader::expect_data`]).
    likely_ready: bool,
    /// The last frame was larger than [`CHUNK`]: the next one starts with a read of
    /// its header alone, so that a large payload is received straight into its own
    /// buffer instead of first filling (and then being copied out of) this one.
    /// Cleared as soon as the next frame's header is consumed.
    big: bool,
}

impl FrameReader {
    /// A reader with no buffered data.
    pub(crate) fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Hints that data is probably waiting on the socket already (the peer has run
    /// since this side sent it a request): the next receive then tries the socket
    /// at once and polls only if nothing is there, one system call instead of two.
    /// A wrong hint costs one failed non-blocking receive.
    pub(crate) fn expect_data(&mut self) {
        self.likely_ready = true;
    }

    /// One receive from the socket into `buf[from..]`, with the pending hint; only
    /// a header's worth into an empty buffer after a large frame.
    fn recv(&mut self, sock: BorrowedFd<'_>, from: usize, deadline: Deadline) -> Result<usize, ReadError> {
        let mut hint = std::mem::take(&mut self.likely_ready);
        let to = if std::mem::take(&mut self.big) && from == 0 {
            // A large frame often follows a large frame at once, from a sender
            // that was waiting for room.
            hint = true;
            HEADER_LEN
        } else {
            self.buf.len()
        };
        let n = sock::recv_hinted(sock, &mut self.buf[from..to], &mut self.fds, deadline, hint)?;
        if to == self.buf.len() && n == to - from && to < CHUNK {
            // The buffer was too small for what was waiting.
            self.buf.resize((to * 2).min(CHUNK), 0);
        }
        Ok(n)
    }

    /// True if a whole header or more is already buffered (a frame may be
    /// ready without touching the socket).
    pub(crate) fn has_buffered(&self) -> bool {
        self.current.is_some() || self.end > self.start
    }

    fn fill(&mut self, sock: BorrowedFd<'_>, deadline: Deadline) -> Result<usize, ReadError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.is_empty() {
            self.buf.resize(FIRST, 0);
        }
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.recv(sock, self.end, deadline)?;
        self.end += n;
        Ok(n)
    }

    /// Buffers and checks the next frame's header without consuming it.
    fn peek_header(
        &mut self,
        sock: BorrowedFd<'_>,
        max: u64,
        deadline: Deadline,
    ) -> Result<Header, ReadError> {
        while self.end - self.start < HEADER_LEN {
            let had = self.end - self.start;
            if self.fill(sock, deadline)? == 0 {
                return Err(if had == 0 {
                    ReadError::Eof
                } else {
                    ReadError::Codec(CodecError::Truncated)
                });
            }
        }
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
        parse_header(&h, max).map_err(ReadError::Codec)
    }

    /// Reads the next frame's payload straight into `buf`, without a deadline,
    /// when it fits and carries no descriptors: no allocation, and no copy beyond
    /// the bytes already buffered. Returns `Ok(None)`, leaving the frame to
    /// [`FrameReader::read`], when it does not fit, carries descriptors, or was
    /// partly read by an earlier call.
    pub(crate) fn read_into(
        &mut self,
        sock: BorrowedFd<'_>,
        max: u64,
        buf: &mut [u8],
    ) -> Result<Option<usize>, ReadError> {
        if self.current.is_some() {
            return Ok(None);
        }
        let header = self.peek_header(sock, max, Deadline::NEVER)?;
        if header.len > buf.len() as u64 || header.nfds > 0 {
            return Ok(None);
        }
        self.start += HEADER_LEN;
        self.big = false;
        let len = header.len as usize;
        let take = len.min(self.end - self.start);
        buf[..take].copy_from_slice(&self.buf[self.start..self.start + take]);
        self.start += take;
        let mut got = take;
        while got < len {
            // Never past this frame, so no descriptor of a later frame is taken; none
            // can come with the rest of this one (they ride on a frame's first bytes).
            match sock::recv_rest(sock, &mut buf[got..len])? {
                0 => return Err(ReadError::Codec(CodecError::Truncated)),
                n => got += n,
            }
        }
        self.big = len > CHUNK;
        Ok(Some(len))
    }

    /// The fast path of [`FrameReader::read_with`]: with nothing buffered, one
    /// receive straight into the buffer; then the next frame's header and the
    /// offset of its payload if the whole frame is buffered, else `Ok(None)`
    /// (nothing consumed) for the general path to finish.
    #[inline]
    fn whole_frame(
        &mut self,
        sock: BorrowedFd<'_>,
        max: u64,
        deadline: Deadline,
    ) -> Result<Option<(Header, usize)>, ReadError> {
        if self.start == self.end {
            if self.buf.is_empty() {
                self.buf.resize(FIRST, 0);
            }
            self.start = 0;
            self.end = 0;
            let n = self.recv(sock, 0, deadline)?;
            if n == 0 {
                return Err(ReadError::Eof);
            }
            self.end = n;
        }
        let avail = &self.buf[self.start..self.end];
        let Some(h) = avail.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = parse_header(h, max).map_err(ReadError::Codec)?;
        let whole = usize::try_from(header.len).is_ok_and(|len| len <= avail.len() - HEADER_LEN);
        if !whole || self.fds.len() < header.nfds {
            return Ok(None);
        }
        Ok(Some((header, self.start + HEADER_LEN)))
    }

    /// Reads the next frame, waiting until `deadline`, and hands it to `f`: its
    /// kind, its payload (borrowed from the reader's buffer when the frame was
    /// whole there, so a small message costs no allocation) and its descriptors.
    /// Frames larger than `max` are refused from their header, before any
    /// allocation.
    pub(crate) fn read_with<R>(
        &mut self,
        sock: BorrowedFd<'_>,
        max: u64,
        deadline: Deadline,
        f: impl FnOnce(Kind, Cow<'_, [u8]>, Vec<OwnedFd>) -> R,
    ) -> Result<R, ReadError> {
        if self.current.is_none() {
            if let Some((header, body)) = self.whole_frame(sock, max, deadline)? {
                let fds = if header.nfds == 0 {
                    Vec::new()
                } else {
                    self.fds.drain(..header.nfds).collect()
                };
                // `whole_frame` checked that the payload is buffered, so `len` fits.
                let end = body + header.len as usize;
                self.start = end;
                self.big = false;
                return Ok(f(header.kind, Cow::Borrowed(&self.buf[body..end]), fds));
            }
        }
        let frame = self.read_general(sock, max, deadline)?;
        Ok(f(frame.kind, Cow::Owned(frame.payload), frame.fds))
    }

    /// Reads the next frame, waiting until `deadline`. Frames larger than `max`
    /// are refused from their header, before any allocation.
    pub(crate) fn read(
        &mut self,
        sock: BorrowedFd<'_>,
        max: u64,
        deadline: Deadline,
    ) -> Result<Frame, ReadError> {
        self.read_with(sock, max, deadline, |kind, payload, fds| Frame {
            kind,
            payload: payload.into_owned(),
            fds,
        })
    }

    /// [`FrameReader::read`] for a frame that is not whole in the buffer (or was
    /// partly read by an earlier call): payload and progress kept in `current`.
    fn read_general(
        &mut self,
        sock: BorrowedFd<'_>,
        max: u64,
        deadline: Deadline,
    ) -> Result<Frame, ReadError> {
        loop {
            if self.current.is_none() {
                let header = self.peek_header(sock, max, deadline)?;
                self.start += HEADER_LEN;
                self.big = false;
                let len = usize::try_from(header.len)
                    .map_err(|_| ReadError::Codec(CodecError::TooLarge { len: header.len, max }))?;
                // Reserve at most one growth step (untouched until the bytes arrive,
                // so a lying header costs address space only), and for most frames
                // the whole payload at once: no reallocation, no copy.
                let payload = Vec::with_capacity(len.min(GROW));
                self.current = Some(Box::new((header, payload)));
            }
            let Some((header, payload)) = self.current.as_deref_mut() else {
                continue;
            };
            let len = header.len as usize;
            // Take what is buffered.
            let take = (len - payload.len()).min(self.end - self.start);
            payload.extend_from_slice(&self.buf[self.start..self.start + take]);
            self.start += take;
            // Large remainders go straight into the payload's spare capacity (no
            // zeroing), grown by at most 8 MiB at a time: a lying header costs
            // nothing until the bytes arrive. No descriptor can arrive here (they
            // ride on a frame's first bytes), so a plain recv is enough.
            while len - payload.len() >= DIRECT {
                let want = (len - payload.len()).min(GROW);
                match crate::sys::uninit::recv_append(sock, payload, want, deadline) {
                    Ok(0) => {
                        self.current = None;
                        return Err(ReadError::Codec(CodecError::Truncated));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if payload.len() < len {
                if self.fill(sock, deadline)? == 0 {
                    self.current = None;
                    return Err(ReadError::Codec(CodecError::Truncated));
                }
                continue;
            }
            let Some((header, payload)) = self.current.take().map(|b| *b) else {
                continue;
            };
            if self.fds.len() < header.nfds {
                // Descriptors ride on the frame's first bytes, so they are here by now.
                return Err(ReadError::Codec(CodecError::BadHeader(format!(
                    "{} descriptors announced, {} arrived",
                    header.nfds,
                    self.fds.len()
                ))));
            }
            let fds: Vec<OwnedFd> = self.fds.drain(..header.nfds).collect();
            self.big = header.len > CHUNK as u64;
            return Ok(Frame {
                kind: header.kind,
                payload,
                fds,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, handles::FdHandle, header};
    use std::time::Duration;

    fn pair() -> (OwnedFd, OwnedFd) {
        sock::socketpair_stream().unwrap()
    }

    fn soon() -> Deadline {
        Deadline::after(Duration::from_secs(5))
    }

    fn raw_send(fd: &OwnedFd, bytes: &[u8]) {
        sock::send_all(fd.as_fd(), &[bytes], &[], soon()).unwrap();
    }

    #[test]
    fn frames_and_descriptors_arrive_in_order() {
        let (a, b) = pair();
        let file: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let one = codec::encode(&(1u8, FdHandle(file)), true).unwrap();
        let two = codec::encode(&"two".to_string(), true).unwrap();
        let three = codec::bytes_frame(&[9u8; 100_000]);
        write_frames(a.as_fd(), &[&one, &two], soon()).unwrap();
        let writer = std::thread::spawn(move || write_frame(a.as_fd(), &three.into_owned(), soon()));
        let mut r = FrameReader::new();
        let f = r.read(b.as_fd(), 1 << 20, soon()).unwrap();
        assert_eq!(f.fds.len(), 1);
        let (n, _fd): (u8, FdHandle) = codec::decode(f).unwrap();
        assert_eq!(n, 1);
        let s: String = codec::decode(r.read(b.as_fd(), 1 << 20, soon()).unwrap()).unwrap();
        assert_eq!(s, "two");
        let v: Vec<u8> = codec::decode(r.read(b.as_fd(), 1 << 20, soon()).unwrap()).unwrap();
        assert_eq!(v, vec![9u8; 100_000]);
        writer.join().unwrap().unwrap();
        assert!(matches!(r.read(b.as_fd(), 1 << 20, soon()), Err(ReadError::Eof)));
    }

    #[test]
    fn frames_after_a_large_frame_arrive_whole_with_their_descriptors() {
        // After a frame larger than CHUNK the reader takes the next header alone;
        // small and large frames, with and without descriptors, through `read`
        // and `read_into`, in every order.
        let (a, b) = pair();
        let big = codec::bytes_frame(&[3u8; 3 * CHUNK + 5]).into_owned();
        let small = codec::encode(&"small".to_string(), true).unwrap();
        let file: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let with_fd = codec::encode(&(9u8, FdHandle(file)), true).unwrap();
        let writer = std::thread::spawn(move || {
            for f in [&big, &with_fd, &big, &big, &small, &big, &small] {
                write_frame(a.as_fd(), f, soon()).unwrap();
            }
        });
        let mut r = FrameReader::new();
        let fd = b.as_fd();
        let check_big =
            |f: Frame| assert!(f.payload.len() == 3 * CHUNK + 5 && f.payload.iter().all(|&x| x == 3));
        check_big(r.read(fd, 1 << 20, soon()).unwrap());
        let f = r.read(fd, 1 << 20, soon()).unwrap();
        assert_eq!(f.fds.len(), 1);
        let (n, _file): (u8, FdHandle) = codec::decode(f).unwrap();
        assert_eq!(n, 9);
        check_big(r.read(fd, 1 << 20, soon()).unwrap());
        let mut into = vec![0u8; 4 * CHUNK];
        assert_eq!(r.read_into(fd, 1 << 20, &mut into).unwrap(), Some(3 * CHUNK + 5));
        assert!(into[..3 * CHUNK + 5].iter().all(|&x| x == 3));
        let s: String = codec::decode(r.read(fd, 1 << 20, soon()).unwrap()).unwrap();
        assert_eq!(s, "small");
        assert_eq!(r.read_into(fd, 1 << 20, &mut into).unwrap(), Some(3 * CHUNK + 5));
        let n = r.read_into(fd, 1 << 20, &mut into).unwrap().unwrap();
        let s: String = codec::decode_value(&into[..n], Vec::new()).unwrap();
        assert_eq!(s, "small");
        writer.join().unwrap();
        assert!(matches!(r.read(fd, 1 << 20, soon()), Err(ReadError::Eof)));
    }

    #[test]
    fn a_wrong_hint_waits_and_loses_nothing() {
        let (a, b) = pair();
        let mut r = FrameReader::new();
        // Nothing there: the hinted receive times out, then a later frame arrives.
        r.expect_data();
        let short = Deadline::after(Duration::from_millis(20));
        assert!(matches!(
            r.read(b.as_fd(), 1 << 20, short),
            Err(ReadError::TimedOut)
        ));
        r.expect_data();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            write_frame(a.as_fd(), &codec::bytes_frame(b"late"), soon()).unwrap();
            a
        });
        assert_eq!(
            r.read(b.as_fd(), 1 << 20, Deadline::NEVER).unwrap().payload,
            b"late"
        );
        drop(writer.join().unwrap());
        r.expect_data();
        assert!(matches!(
            r.read(b.as_fd(), 1 << 20, Deadline::NEVER),
            Err(ReadError::Eof)
        ));
    }

    #[test]
    fn garbage_header_is_refused() {
        let (a, b) = pair();
        raw_send(&a, b"GET / HTTP/1.1\r\n\r\n");
        let mut r = FrameReader::new();
        assert!(matches!(
            r.read(b.as_fd(), 1 << 20, soon()),
            Err(ReadError::Codec(CodecError::BadHeader(_)))
        ));
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let (a, b) = pair();
        raw_send(&a, &header(Kind::Value, u64::MAX - 1, 0));
        let mut r = FrameReader::new();
        match r.read(b.as_fd(), 1 << 20, soon()) {
            Err(ReadError::Codec(CodecError::TooLarge { len, max })) => {
                assert_eq!((len, max), (u64::MAX - 1, 1 << 20))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_frame_is_an_error() {
        // Cut inside the payload, and inside the header.
        let mut in_payload = header(Kind::Value, 100, 0).to_vec();
        in_payload.extend_from_slice(&[1, 2, 3]);
        for bytes in [&in_payload[..], &[1, 2, 3][..]] {
            let (a, b) = pair();
            raw_send(&a, bytes);
            drop(a);
            let mut r = FrameReader::new();
            assert!(matches!(
                r.read(b.as_fd(), 1 << 20, soon()),
                Err(ReadError::Codec(CodecError::Truncated))
            ));
        }
    }

    #[test]
    fn a_small_first_buffer_grows_and_every_size_arrives_whole() {
        // Frames of every size class back to back, sent while nothing reads:
        // the reader starts with one page, grows as receives fill it, and
        // every frame comes out whole and in order.
        let (a, b) = pair();
        let sizes: Vec<usize> = (0..120).map(|i| (i * 997) % (3 * CHUNK)).collect();
        let writer = {
            let sizes = sizes.clone();
            std::thread::spawn(move || {
                for (i, &n) in sizes.iter().enumerate() {
                    write_frame(a.as_fd(), &codec::bytes_frame(&vec![i as u8; n]), soon()).unwrap();
                }
            })
        };
        let mut r = FrameReader::new();
        for (i, &n) in sizes.iter().enumerate() {
            let f = r.read(b.as_fd(), 1 << 20, soon()).unwrap();
            assert_eq!(f.payload.len(), n, "frame {i}");
            assert!(f.payload.iter().all(|&x| x == i as u8), "frame {i}");
        }
        writer.join().unwrap();
        assert!(r.buf.len() > FIRST && r.buf.len() <= CHUNK);
    }

    #[test]
    fn a_timeout_keeps_progress() {
        let (a, b) = pair();
        let out = codec::encode(&vec![5u32; 10], false).unwrap();
        raw_send(&a, &out.header);
        let mut r = FrameReader::new();
        let short = Deadline::after(Duration::from_millis(20));
        assert!(matches!(
            r.read(b.as_fd(), 1 << 20, short),
            Err(ReadError::TimedOut)
        ));
        raw_send(&a, &out.payload);
        let v: Vec<u32> = codec::decode(r.read(b.as_fd(), 1 << 20, soon()).unwrap()).unwrap();
        assert_eq!(v, vec![5u32; 10]);
    }
}
