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

const CHUNK: usize = 64 * 1024;
/// Payloads above this are received straight into their own buffer.
const DIRECT: usize = 16 * 1024;

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
    current: Option<(Header, Vec<u8>)>,
}

impl FrameReader {
    /// A reader with no buffered data.
    pub(crate) fn new() -> FrameReader {
        FrameReader::default()
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
        if self.buf.len() < CHUNK {
            self.buf.resize(CHUNK, 0);
        }
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = sock::recv_some(sock, &mut self.buf[self.end..], &mut self.fds, deadline)?;
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
        let len = header.len as usize;
        let take = len.min(self.end - self.start);
        buf[..take].copy_from_slice(&self.buf[self.start..self.start + take]);
        self.start += take;
        let mut got = take;
        while got < len {
            // Never past this frame, so no descriptor of a later frame is taken.
            match sock::recv_some(sock, &mut buf[got..len], &mut self.fds, Deadline::NEVER)? {
                0 => return Err(ReadError::Codec(CodecError::Truncated)),
                n => got += n,
            }
        }
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
            if self.buf.len() < CHUNK {
                self.buf.resize(CHUNK, 0);
            }
            self.start = 0;
            self.end = 0;
            let n = sock::recv_some(sock, &mut self.buf, &mut self.fds, deadline)?;
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
                let len = usize::try_from(header.len)
                    .map_err(|_| ReadError::Codec(CodecError::TooLarge { len: header.len, max }))?;
                // Reserve at most what is buffered plus one chunk: a lying header
                // costs nothing until the bytes actually arrive.
                let payload = Vec::with_capacity(len.min(self.end - self.start + CHUNK));
                self.current = Some((header, payload));
            }
            let Some((header, payload)) = self.current.as_mut() else {
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
                let want = (len - payload.len()).min(8 << 20);
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
            let Some((header, payload)) = self.current.take() else {
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
