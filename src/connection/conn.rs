//! `Connection`: one end of a framed, duplex or one-way stream socket (a Unix
//! socketpair, a Unix path connection or a TCP stream).

use std::any::{Any, TypeId};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::handles::{self, deserialize_fd, serialize_fd};
use crate::codec::stream::{FrameReader, ReadError};
use crate::codec::{self, CodecError, Frame, Kind, Outgoing, DEFAULT_MAX_FRAME};
use crate::connection::error::{BufferTooShort, RecvError, SendError};
use crate::deadline::Deadline;

/// What kind of socket a connection runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// A Unix stream socket: handles (descriptors) can travel.
    Unix,
    /// A TCP stream: only plain data can travel.
    Tcp,
}

/// The receiving half's state: the frame reader and, after `poll` or `wait`, a
/// frame (or the end of the stream) already read but not yet delivered.
#[derive(Debug, Default)]
struct ReadState {
    reader: FrameReader,
    pending: Option<Result<Frame, ReadError>>,
}

/// One end of a connection: messages of any serde type, or raw bytes, framed so
/// that they are never merged or split.
///
/// Made by [`Pipe::new`](crate::Pipe::new) / [`Pipe::simplex`](crate::Pipe::simplex),
/// [`Listener::accept`](crate::Listener::accept) and
/// [`Client::connect`](crate::Client::connect). A `Connection` is `Send + Sync`: one
/// thread may send while another receives (each direction is serialised by its own
/// lock). It can be given to a child process as an argument or sent over another
/// `Connection` (it travels as a descriptor, SCM_RIGHTS).
///
/// # End of stream
///
/// [`recv`](Connection::recv) returns [`RecvError::Eof`] only once **every copy** of
/// the other end is closed, in every process, and every message sent before has
/// been received. A child that gets both ends of a pipe (or a copy of an end it
/// does not use) must drop the one it does not use, or the reader never sees EOF;
/// the parent likewise drops its copy of the child's end once the child runs.
///
/// # Drop
///
/// Dropping a `Connection` closes this process's copy of its descriptor; the peer
/// sees EOF when the last copy is gone. Messages already sent stay readable.
///
/// # Examples
///
/// ```
/// use multiproc::Pipe;
///
/// let (a, b) = Pipe::new()?;
/// a.send(&("hello".to_string(), 42u32))?;
/// let (s, n): (String, u32) = b.recv()?;
/// assert_eq!((s.as_str(), n), ("hello", 42));
/// drop(a);
/// assert!(b.recv::<u32>().unwrap_err().is_eof());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Differences from Python's multiprocessing
///
/// - Messages are serde values (postcard), not pickles: nothing arbitrary is
///   executed on receipt, and the receiver names the type it expects.
/// - Every connection has a maximum message size ([`set_max_frame`](Connection::set_max_frame)),
///   enforced on both sides before anything is allocated.
/// - `recv_timeout`/`try_recv` exist; `poll` returning `true` guarantees that the
///   next `recv` does not block (the message is already read).
#[doc(alias = "multiprocessing.connection.Connection")]
pub struct Connection {
    fd: OwnedFd,
    family: Family,
    readable: bool,
    writable: bool,
    max_frame: AtomicU64,
    read: Mutex<ReadState>,
    write: Mutex<SendTimes>,
    /// Set by a send that took long enough for the peer to have run meanwhile
    /// (this process was preempted in it): its reply is probably waiting, so the
    /// next receive tries the socket before polling it.
    peer_ran: AtomicBool,
}

/// What the sending half remembers: the fastest send seen, the yardstick for
/// "this send took long enough for the peer to run".
#[derive(Debug)]
struct SendTimes {
    fastest_ns: u64,
}

impl SendTimes {
    /// A send slower than `SLOW_FACTOR` times the fastest, plus `SLOW_MARGIN_NS`,
    /// included a context switch: on one CPU, the woken peer ran (received, and
    /// often replied) before the send returned. Measured pinned to one CPU on the
    /// development VM: sends take 1-3 us, those the peer preempts 8 us or more.
    const SLOW_FACTOR: u64 = 3;
    const SLOW_MARGIN_NS: u64 = 500;

    /// Records a send that took `ns`; true if it was slow.
    fn record(&mut self, ns: u64) -> bool {
        let slow = ns
            > self
                .fastest_ns
                .saturating_mul(Self::SLOW_FACTOR)
                .saturating_add(Self::SLOW_MARGIN_NS);
        self.fastest_ns = self.fastest_ns.min(ns);
        slow
    }
}

/// Encodings up to this many bytes stay on the stack in `send`.
const STACK_ENCODE: usize = 128;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read_error(e: ReadError) -> RecvError {
    match e {
        ReadError::Eof => RecvError::Eof,
        ReadError::TimedOut => RecvError::Timeout,
        ReadError::Codec(c) => RecvError::Codec(c),
        ReadError::Io(e) => RecvError::Io(e),
    }
}

impl Connection {
    pub(crate) fn from_fd(fd: OwnedFd, family: Family, readable: bool, writable: bool) -> Connection {
        Connection {
            fd,
            family,
            readable,
            writable,
            max_frame: AtomicU64::new(DEFAULT_MAX_FRAME),
            read: Mutex::new(ReadState::default()),
            write: Mutex::new(SendTimes { fastest_ns: u64::MAX }),
            peer_ran: AtomicBool::new(false),
        }
    }

    /// True if this end can receive (Python's `readable`).
    ///
    /// # Examples
    /// ```
    /// let (reader, writer) = multiproc::Pipe::simplex()?;
    /// assert!(reader.readable() && !writer.readable());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// True if this end can send (Python's `writable`).
    ///
    /// # Examples
    /// ```
    /// let (reader, writer) = multiproc::Pipe::simplex()?;
    /// assert!(writer.writable() && !reader.writable());
    /// let (a, _b) = multiproc::Pipe::new()?; // duplex: both ways
    /// assert!(a.readable() && a.writable());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The largest message (payload bytes) this end sends or accepts.
    /// Defaults to [`DEFAULT_MAX_FRAME`](crate::DEFAULT_MAX_FRAME) (4 GiB).
    ///
    /// # Examples
    /// ```
    /// let (a, _b) = multiproc::Pipe::new()?;
    /// assert_eq!(a.max_frame(), multiproc::DEFAULT_MAX_FRAME);
    /// a.set_max_frame(1 << 20);
    /// assert_eq!(a.max_frame(), 1 << 20);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_frame(&self) -> u64 {
        self.max_frame.load(Ordering::Relaxed)
    }

    /// Sets the largest message this end sends or accepts. A larger message is
    /// refused by `send` before anything is written, and by `recv` from its header,
    /// before anything is allocated (the stream is then unusable: the peer
    /// breaks the agreed limit).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{CodecError, Pipe, SendError};
    ///
    /// let (a, b) = Pipe::new()?;
    /// a.set_max_frame(4);
    /// assert!(matches!(a.send_bytes(b"too long"), Err(SendError::Codec(CodecError::TooLarge { .. }))));
    /// a.send_bytes(b"ok")?;
    /// assert_eq!(b.recv_bytes()?, b"ok");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_max_frame(&self, max: u64) {
        self.max_frame.store(max, Ordering::Relaxed);
    }

    // ---- sending ----

    fn send_frame(&self, out: &Outgoing<'_>) -> Result<(), SendError> {
        if !self.writable {
            return Err(SendError::ReadOnly);
        }
        let len = out.payload.len() as u64;
        let max = self.max_frame();
        if len > max {
            return Err(SendError::Codec(CodecError::TooLarge { len, max }));
        }
        if self.family == Family::Tcp && !out.fds.is_empty() {
            return Err(SendError::Codec(CodecError::Encode(
                "a handle (a value holding a file descriptor) cannot travel over a TCP connection".into(),
            )));
        }
        // No allocation for the common message without handles.
        let fds: Vec<BorrowedFd<'_>> = if out.fds.is_empty() {
            Vec::new()
        } else {
            out.fds.iter().map(|f| f.as_fd()).collect()
        };
        let mut times = lock(&self.write);
        // Timed only where a reply can be received.
        let start = self.readable.then(Instant::now);
        crate::sys::sock::send_all(
            self.fd.as_fd(),
            &[&out.header, &out.payload],
            &fds,
            Deadline::NEVER,
        )
        .map_err(SendError::from)?;
        if let Some(start) = start {
            let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if times.record(ns) {
                self.peer_ran.store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Passes a pending "the peer has run" hint to the reader.
    fn take_hint(&self, st: &mut ReadState) {
        if self.peer_ran.load(Ordering::Relaxed) {
            self.peer_ran.store(false, Ordering::Relaxed);
            st.reader.expect_data();
        }
    }

    /// Sends one value of any serde type. Handles inside it (a `Connection`, a
    /// queue, shared memory...) travel too, over Unix sockets; a `Vec<u8>` goes the
    /// raw-bytes fast path. Blocks while the socket buffer is full.
    ///
    /// # Errors
    ///
    /// [`SendError::Disconnected`] once the other end is closed everywhere,
    /// [`SendError::ReadOnly`] on the reader of a simplex pipe,
    /// [`SendError::Codec`] if the value cannot be encoded or is larger than
    /// [`max_frame`](Connection::max_frame) (nothing is sent then).
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe::new()?;
    /// a.send(&vec![1.5f64, 2.5])?;
    /// assert_eq!(b.recv::<Vec<f64>>()?, vec![1.5, 2.5]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send<T: Serialize + Any>(&self, value: &T) -> Result<(), SendError> {
        if !self.writable {
            return Err(SendError::ReadOnly);
        }
        let id = TypeId::of::<T>();
        if id == TypeId::of::<Vec<u8>>() || id == TypeId::of::<Box<[u8]>>() {
            // The raw-bytes fast path: no serde pass, no copy.
            let out = codec::encode_fast(value, true).map_err(SendError::Codec)?;
            return self.send_frame(&out);
        }
        // One serialisation pass (a handle's `Serialize` may have effects, such as
        // opening a connection), into a stack buffer for a small value.
        let mut stack = [0u8; STACK_ENCODE];
        let on_stack = &mut stack;
        let (encoded, fds) = handles::collect_fds(move || codec::stack::encode(value, on_stack));
        let payload = encoded.map_err(|e| SendError::Codec(CodecError::Encode(codec::reason(e))))?;
        self.send_frame(&Outgoing {
            header: codec::header(Kind::Value, payload.len() as u64, fds.len()),
            payload,
            fds,
        })
    }

    /// Sends `buf` as one message of raw bytes (no serialisation, no copy).
    /// A zero-length message is a message.
    ///
    /// # Errors
    ///
    /// As [`send`](Connection::send).
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe::new()?;
    /// a.send_bytes(b"abc")?;
    /// a.send_bytes(b"")?;
    /// assert_eq!(b.recv_bytes()?, b"abc");
    /// assert_eq!(b.recv_bytes()?, b"");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_bytes(&self, buf: &[u8]) -> Result<(), SendError> {
        self.send_frame(&codec::bytes_frame(buf))
    }

    // ---- receiving ----

    fn read_frame(&self, deadline: Deadline) -> Result<Frame, RecvError> {
        if !self.readable {
            return Err(RecvError::WriteOnly);
        }
        let mut st = lock(&self.read);
        if let Some(r) = st.pending.take() {
            return r.map_err(read_error);
        }
        self.take_hint(&mut st);
        let max = self.max_frame();
        st.reader.read(self.fd.as_fd(), max, deadline).map_err(read_error)
    }

    fn recv_deadline<T: DeserializeOwned + Any>(&self, deadline: Deadline) -> Result<T, RecvError> {
        if !self.readable {
            return Err(RecvError::WriteOnly);
        }
        let mut st = lock(&self.read);
        if let Some(r) = st.pending.take() {
            drop(st);
            return codec::decode(r.map_err(read_error)?).map_err(RecvError::Codec);
        }
        self.take_hint(&mut st);
        let max = self.max_frame();
        // A value is decoded straight from the reader's buffer when it is whole
        // there: no allocation for a small message.
        st.reader
            .read_with(self.fd.as_fd(), max, deadline, |kind, payload, fds| match kind {
                Kind::Value => codec::decode_value(&payload, fds),
                Kind::Bytes => codec::decode(Frame {
                    kind,
                    payload: payload.into_owned(),
                    fds,
                }),
            })
            .map_err(read_error)?
            .map_err(RecvError::Codec)
    }

    /// Receives the next message as a `T`, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`RecvError::Eof`] once every copy of the other end is closed and all
    /// messages are received; [`RecvError::Codec`] if the message is not a `T`
    /// (the message is consumed, the connection stays usable) or the stream is
    /// corrupt (for example the peer died in the middle of a message);
    /// [`RecvError::WriteOnly`] on the writer of a simplex pipe.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Connection, Pipe, Process};
    ///
    /// let (parent, child) = Pipe::new()?;
    /// let p = Process::spawn(child, |c: Connection| {
    ///     let words: Vec<String> = c.recv().unwrap();
    ///     c.send(&words.join(" ")).unwrap();
    /// })?;
    /// parent.send(&vec!["hello", "child"])?;
    /// assert_eq!(parent.recv::<String>()?, "hello child");
    /// p.join_timeout(Duration::from_secs(30))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv<T: DeserializeOwned + Any>(&self) -> Result<T, RecvError> {
        self.recv_deadline(Deadline::NEVER)
    }

    /// [`recv`](Connection::recv), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As `recv`, plus [`RecvError::Timeout`] (a message that arrived in part is
    /// kept for the next call).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = multiproc::Pipe::new()?;
    /// assert!(b.recv_timeout::<u8>(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// a.send(&7u8)?;
    /// assert_eq!(b.recv_timeout::<u8>(Duration::from_secs(5))?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_timeout<T: DeserializeOwned + Any>(&self, timeout: Duration) -> Result<T, RecvError> {
        self.recv_deadline(Deadline::after(timeout))
    }

    /// [`recv`](Connection::recv) if a whole message is ready now, else
    /// [`RecvError::Timeout`] at once.
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Connection::recv_timeout).
    ///
    /// # Examples
    /// ```
    /// let (a, b) = multiproc::Pipe::new()?;
    /// assert!(b.try_recv::<u32>().unwrap_err().is_timeout()); // nothing yet
    /// a.send(&5u32)?;
    /// assert_eq!(b.try_recv::<u32>()?, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv<T: DeserializeOwned + Any>(&self) -> Result<T, RecvError> {
        self.recv_deadline(Deadline::after(Duration::ZERO))
    }

    /// Receives the next message as raw bytes: the payload of a `send_bytes`, or
    /// the encoding of a `send` (handles that came with it are closed).
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv).
    ///
    /// # Examples
    /// ```
    /// let (a, b) = multiproc::Pipe::new()?;
    /// a.send_bytes(b"raw")?;
    /// a.send_bytes(b"")?; // an empty message is a message
    /// assert_eq!(b.recv_bytes()?, b"raw");
    /// assert_eq!(b.recv_bytes()?, b"");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_bytes(&self) -> Result<Vec<u8>, RecvError> {
        Ok(self.read_frame(Deadline::NEVER)?.payload)
    }

    /// [`recv_bytes`](Connection::recv_bytes), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Connection::recv_timeout).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let (a, b) = multiproc::Pipe::new()?;
    /// assert!(b.recv_bytes_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// a.send_bytes(&[1, 2, 3])?;
    /// assert_eq!(b.recv_bytes_timeout(Duration::from_secs(5))?, [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        Ok(self.read_frame(Deadline::after(timeout))?.payload)
    }

    /// [`recv_bytes`](Connection::recv_bytes) if a whole message is ready now.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Connection::try_recv).
    ///
    /// # Examples
    /// ```
    /// let (a, b) = multiproc::Pipe::new()?;
    /// assert!(b.try_recv_bytes().unwrap_err().is_timeout());
    /// a.send_bytes(b"now")?;
    /// assert_eq!(b.try_recv_bytes()?, b"now");
    /// drop(a);
    /// assert!(b.try_recv_bytes().unwrap_err().is_eof());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv_bytes(&self) -> Result<Vec<u8>, RecvError> {
        Ok(self.read_frame(Deadline::after(Duration::ZERO))?.payload)
    }

    /// Receives the next message into `buf` and returns its length. For an offset,
    /// pass `&mut buf[offset..]`.
    ///
    /// # Errors
    ///
    /// [`RecvError::BufferTooShort`] if the message is longer than `buf`: it then
    /// carries the whole message (which has left the connection). Otherwise as
    /// [`recv`](Connection::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::RecvError;
    /// let (a, b) = multiproc::Pipe::new()?;
    /// a.send_bytes(b"hello world")?;
    /// let mut small = [0u8; 4];
    /// match b.recv_bytes_into(&mut small) {
    ///     Err(RecvError::BufferTooShort(e)) => assert_eq!(e.message(), b"hello world"),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        if !self.readable {
            return Err(RecvError::WriteOnly);
        }
        let frame = {
            let mut st = lock(&self.read);
            match st.pending.take() {
                Some(r) => r.map_err(read_error)?,
                None => {
                    self.take_hint(&mut st);
                    let max = self.max_frame();
                    // Straight into `buf` when the message fits.
                    if let Some(n) = st
                        .reader
                        .read_into(self.fd.as_fd(), max, buf)
                        .map_err(read_error)?
                    {
                        return Ok(n);
                    }
                    st.reader
                        .read(self.fd.as_fd(), max, Deadline::NEVER)
                        .map_err(read_error)?
                }
            }
        };
        let payload = frame.payload;
        if payload.len() > buf.len() {
            return Err(RecvError::BufferTooShort(BufferTooShort::new(payload, buf.len())));
        }
        buf[..payload.len()].copy_from_slice(&payload);
        Ok(payload.len())
    }

    /// Reads a whole frame (or the end of the stream, or a stream error) into the
    /// pending slot if one is ready before `deadline`. True if something is pending.
    fn fill_pending(&self, st: &mut ReadState, deadline: Deadline) -> bool {
        if st.pending.is_some() {
            return true;
        }
        self.take_hint(st);
        match st.reader.read(self.fd.as_fd(), self.max_frame(), deadline) {
            Err(ReadError::TimedOut) => false,
            r => {
                st.pending = Some(r);
                true
            }
        }
    }

    /// Waits until a whole message, the end of the stream or an error is ready,
    /// at most `timeout` (`None`: forever; `Some(Duration::ZERO)`: just check).
    /// `true` means the next `recv` returns at once.
    ///
    /// # Errors
    ///
    /// [`RecvError::WriteOnly`] on the writer of a simplex pipe.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = multiproc::Pipe::new()?;
    /// assert!(!b.poll(Some(Duration::ZERO))?);
    /// a.send_bytes(b"")?;
    /// assert!(b.poll(Some(Duration::from_secs(5)))?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Differences from Python's multiprocessing
    ///
    /// Python's `poll()` without argument does not wait; here the timeout is always
    /// explicit. Python reports "some bytes arrived"; here `true` means a whole
    /// message did.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool, RecvError> {
        if !self.readable {
            return Err(RecvError::WriteOnly);
        }
        let mut st = lock(&self.read);
        Ok(self.fill_pending(&mut st, Deadline::from_timeout(timeout)))
    }

    /// True if this end holds nothing received but not yet delivered.
    fn is_clean(&self) -> bool {
        match self.read.try_lock() {
            Ok(st) => st.pending.is_none() && !st.reader.has_buffered(),
            Err(_) => false,
        }
    }

    /// Another `Connection` on the same end (a duplicated descriptor): what you
    /// give a child when this process keeps using the end too. The peer sees EOF
    /// only once both (and every other copy) are closed.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if this end holds part of a message it has received but not
    /// delivered (the copy would start mid-message): receive it first. The
    /// `dup(2)` error otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe::new()?;
    /// let a2 = a.try_clone()?;
    /// drop(a);
    /// a2.send(&1u8)?; // the end is still open through the copy
    /// assert_eq!(b.recv::<u8>()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_clone(&self) -> io::Result<Connection> {
        if !self.is_clean() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, BUFFERED));
        }
        let c = Connection::from_fd(self.fd.try_clone()?, self.family, self.readable, self.writable);
        c.set_max_frame(self.max_frame());
        Ok(c)
    }

    /// Closes this end (this process's copy). Same as dropping it.
    ///
    /// # Examples
    /// ```
    /// let (a, b) = multiproc::Pipe::new()?;
    /// a.send(&1u8)?;
    /// a.close();
    /// assert_eq!(b.recv::<u8>()?, 1); // what was sent before still arrives
    /// assert!(b.recv::<u8>().unwrap_err().is_eof());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(self) {
        drop(self);
    }

    /// For `wait`: true if a message (or EOF, or an error) can be received now
    /// without blocking. Reads what the socket has without waiting.
    pub(crate) fn ready_now(&self) -> bool {
        if !self.readable {
            // `recv` fails at once with `WriteOnly`.
            return true;
        }
        match self.read.try_lock() {
            Ok(mut st) => self.fill_pending(&mut st, Deadline::after(Duration::ZERO)),
            Err(std::sync::TryLockError::Poisoned(p)) => {
                self.fill_pending(&mut p.into_inner(), Deadline::after(Duration::ZERO))
            }
            // Another thread is receiving: report ready rather than spin on a readable fd.
            Err(std::sync::TryLockError::WouldBlock) => true,
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsFd for Connection {
    /// The socket (Python's `fileno()`), e.g. to poll it with other descriptors.
    /// Reading or writing it directly breaks the message framing.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Connection {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd.as_raw_fd())
            .field("family", &self.family)
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .finish()
    }
}

const BUFFERED: &str = "this Connection holds received data not yet delivered (or is receiving): \
                        receive it before copying or sending the Connection";

const READABLE: u8 = 1;
const WRITABLE: u8 = 2;
const TCP: u8 = 4;

impl Serialize for Connection {
    /// Sends a duplicate of this end's descriptor (this `Connection` stays open:
    /// drop it once sent if this process should no longer hold the end).
    ///
    /// Fails if this end has read part of a message that it has not delivered
    /// (the receiver would start mid-message): receive it first.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeTuple};
        if !self.is_clean() {
            return Err(crate::codec::handles::fail(
                BUFFERED.to_string(),
                S::Error::custom,
            ));
        }
        let mut flags = 0u8;
        if self.readable {
            flags |= READABLE;
        }
        if self.writable {
            flags |= WRITABLE;
        }
        if self.family == Family::Tcp {
            flags |= TCP;
        }
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&FdField(self.fd.as_fd()))?;
        t.serialize_element(&flags)?;
        t.serialize_element(&self.max_frame())?;
        t.end()
    }
}

struct FdField<'a>(BorrowedFd<'a>);

impl Serialize for FdField<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.0, s)
    }
}

struct OwnedFdField(OwnedFd);

impl<'de> Deserialize<'de> for OwnedFdField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_fd(d).map(OwnedFdField)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (fd, flags, max): (OwnedFdField, u8, u64) = Deserialize::deserialize(d)?;
        let family = if flags & TCP != 0 {
            Family::Tcp
        } else {
            Family::Unix
        };
        let c = Connection::from_fd(fd.0, family, flags & READABLE != 0, flags & WRITABLE != 0);
        c.set_max_frame(max);
        Ok(c)
    }
}

/// Makes a connected pair over a fresh socketpair.
pub(crate) fn pair(duplex: bool) -> io::Result<(Connection, Connection)> {
    let (a, b) = crate::sys::sock::socketpair_stream()?;
    Ok(if duplex {
        (
            Connection::from_fd(a, Family::Unix, true, true),
            Connection::from_fd(b, Family::Unix, true, true),
        )
    } else {
        (
            Connection::from_fd(a, Family::Unix, true, false),
            Connection::from_fd(b, Family::Unix, false, true),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts its serialisations.
    struct Counted(Vec<u8>, &'static AtomicU64);

    impl Serialize for Counted {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.serialize(s)
        }
    }

    #[test]
    fn values_of_every_size_are_encoded_as_postcard_once() {
        let (a, b) = pair(true).unwrap();
        // Around the stack buffer's size and well past it: the bytes on the wire
        // are postcard's, and the value decodes.
        for n in (0..40)
            .chain(STACK_ENCODE - 20..STACK_ENCODE + 20)
            .chain([1000, 100_000])
        {
            let s = "x".repeat(n);
            a.send(&s).unwrap();
            assert_eq!(b.recv_bytes().unwrap(), postcard::to_allocvec(&s).unwrap(), "{n}");
            a.send(&(n as u64, s.clone())).unwrap();
            assert_eq!(b.recv::<(u64, String)>().unwrap(), (n as u64, s));
        }
        // A handle and a long payload: one serialisation pass.
        static PASSES: AtomicU64 = AtomicU64::new(0);
        let (x, y) = pair(true).unwrap();
        a.send(&(Counted(vec![5; 1000], &PASSES), x)).unwrap();
        assert_eq!(PASSES.load(Ordering::Relaxed), 1);
        let (v, x2): (Vec<u8>, Connection) = b.recv().unwrap();
        assert_eq!(v, vec![5; 1000]);
        x2.send(&3u8).unwrap();
        assert_eq!(y.recv::<u8>().unwrap(), 3);
    }

    #[test]
    fn a_failing_serialize_is_an_encode_error_and_sends_nothing() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let (a, b) = pair(true).unwrap();
        match a.send(&("a long prefix".repeat(20), Fails)) {
            Err(SendError::Codec(CodecError::Encode(m))) => {
                assert!(m.contains("Serialize implementation returned an error"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        a.send(&1u8).unwrap();
        assert_eq!(b.recv::<u8>().unwrap(), 1);
    }

    #[test]
    fn a_send_is_slow_only_against_the_fastest_seen() {
        let mut t = SendTimes { fastest_ns: u64::MAX };
        assert!(!t.record(5_000), "the first send sets the yardstick");
        assert!(!t.record(1_000));
        assert!(!t.record(3_400), "within 3x + 0.5 us of the fastest");
        assert!(t.record(3_600));
        assert!(t.record(u64::MAX));
        assert_eq!(t.fastest_ns, 1_000);
    }

    #[test]
    fn a_slow_send_hints_the_next_receive_which_still_times_out_or_waits() {
        let (a, b) = pair(true).unwrap();
        a.send_bytes(b"x").unwrap();
        // A send that fills the socket waits for the reader: slow.
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(b.recv_bytes().unwrap().len(), 1);
            assert_eq!(b.recv_bytes().unwrap().len(), 8 << 20);
            b
        });
        // The yardstick as on an idle machine, whatever the first send took here.
        lock(&a.write).fastest_ns = 1_000;
        a.send_bytes(&vec![1u8; 8 << 20]).unwrap();
        assert!(a.peer_ran.load(Ordering::Relaxed));
        // The hint is wrong (no reply yet): the receive still times out...
        assert!(a
            .recv_timeout::<u8>(Duration::from_millis(20))
            .unwrap_err()
            .is_timeout());
        assert!(!a.peer_ran.load(Ordering::Relaxed), "a hint is used once");
        let b = reader.join().unwrap();
        // ...or waits, without a deadline, for the reply.
        a.peer_ran.store(true, Ordering::Relaxed);
        let replier = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            b.send(&7u8).unwrap();
            b
        });
        assert_eq!(a.recv::<u8>().unwrap(), 7);
        drop(replier.join().unwrap());
        a.peer_ran.store(true, Ordering::Relaxed);
        assert!(a.recv::<u8>().unwrap_err().is_eof());
    }
}
