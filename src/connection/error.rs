//! The errors of connections, listeners and clients.

use std::fmt;
use std::io;

use crate::codec::CodecError;

/// Why a [`Connection`](crate::Connection) could not receive a message.
///
/// # Examples
///
/// ```
/// use multiproc::{Pipe, RecvError};
/// use std::time::Duration;
///
/// let (a, b) = Pipe::new()?;
/// assert!(matches!(b.try_recv::<u32>(), Err(RecvError::Timeout))); // nothing sent yet
/// a.send(&7u32)?;
/// drop(a); // the only copy of the other end
/// assert_eq!(b.recv::<u32>()?, 7); // what was sent before the close still arrives
/// assert!(matches!(b.recv_timeout::<u32>(Duration::from_secs(5)), Err(RecvError::Eof)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub enum RecvError {
    /// Every copy of the other end is closed, in every process, and every message
    /// sent before that has been received. Python raises `EOFError` here.
    #[doc(alias = "EOFError")]
    Eof,
    /// No whole message arrived before the timeout (`recv_timeout`), or none was
    /// ready at once (`try_recv`). What arrived of a message so far is kept: the
    /// next call continues from there.
    Timeout,
    /// This end was created write-only (the writer of [`Pipe::simplex`](crate::Pipe::simplex)).
    WriteOnly,
    /// The buffer given to `recv_bytes_into` is smaller than the message; the
    /// message (received whole, and no longer in the connection) is inside.
    BufferTooShort(BufferTooShort),
    /// The message could not be decoded into the requested type (the stream stays
    /// usable), or the stream is corrupt: a frame larger than the maximum, a bad
    /// header, a stream that ended inside a message (the peer died mid-send).
    Codec(CodecError),
    /// The socket failed (for example the connection was reset).
    Io(io::Error),
}

impl RecvError {
    /// True for [`RecvError::Eof`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe::new()?;
    /// drop(a);
    /// let err = b.recv_timeout::<u32>(std::time::Duration::from_secs(5)).unwrap_err();
    /// assert!(err.is_eof());
    /// assert!(!err.is_timeout());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_eof(&self) -> bool {
        matches!(self, RecvError::Eof)
    }

    /// True for [`RecvError::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (a, b) = multiproc::Pipe::new()?;
    /// let err = b.recv_timeout::<u32>(Duration::from_millis(5)).unwrap_err();
    /// assert!(err.is_timeout());
    /// a.send(&1u32)?;
    /// assert_eq!(b.recv_timeout::<u32>(Duration::from_secs(5))?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecvError::Timeout)
    }
}

impl fmt::Debug for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Eof => f.write_str("Eof"),
            RecvError::Timeout => f.write_str("Timeout"),
            RecvError::WriteOnly => f.write_str("WriteOnly"),
            RecvError::BufferTooShort(b) => f.debug_tuple("BufferTooShort").field(b).finish(),
            RecvError::Codec(e) => f.debug_tuple("Codec").field(e).finish(),
            RecvError::Io(e) => f.debug_tuple("Io").field(e).finish(),
        }
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Eof => f.write_str("end of stream: every copy of the other end is closed"),
            RecvError::Timeout => f.write_str("no message arrived in time"),
            RecvError::WriteOnly => f.write_str("this end of the pipe is write-only"),
            RecvError::BufferTooShort(b) => b.fmt(f),
            RecvError::Codec(e) => e.fmt(f),
            RecvError::Io(e) => write!(f, "receive failed: {e}"),
        }
    }
}

impl std::error::Error for RecvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecvError::Codec(e) => Some(e),
            RecvError::Io(e) => Some(e),
            RecvError::BufferTooShort(b) => Some(b),
            _ => None,
        }
    }
}

impl From<CodecError> for RecvError {
    fn from(e: CodecError) -> Self {
        RecvError::Codec(e)
    }
}

/// The buffer given to [`Connection::recv_bytes_into`](crate::Connection::recv_bytes_into)
/// was too small. Holds the whole message, which is no longer in the connection.
///
/// # Examples
///
/// ```
/// use multiproc::RecvError;
///
/// let (a, b) = multiproc::Pipe::new()?;
/// a.send_bytes(b"0123456789")?;
/// let mut buf = [0u8; 4];
/// match b.recv_bytes_into(&mut buf) {
///     Err(RecvError::BufferTooShort(e)) => {
///         assert_eq!(e.to_string(), "buffer of 4 bytes is too short for a message of 10 bytes");
///         assert_eq!(e.message(), b"0123456789");
///     }
///     other => panic!("{other:?}"),
/// }
/// assert!(b.try_recv_bytes().is_err()); // the message has left the connection
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BufferTooShort {
    message: Vec<u8>,
    capacity: usize,
}

impl BufferTooShort {
    pub(crate) fn new(message: Vec<u8>, capacity: usize) -> Self {
        BufferTooShort { message, capacity }
    }

    /// The whole message.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::RecvError;
    ///
    /// let (a, b) = multiproc::Pipe::new()?;
    /// a.send_bytes(b"hello")?;
    /// let Err(RecvError::BufferTooShort(e)) = b.recv_bytes_into(&mut [0u8; 2]) else {
    ///     panic!("expected BufferTooShort");
    /// };
    /// assert_eq!(e.message(), b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Gives the whole message back.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::RecvError;
    ///
    /// let (a, b) = multiproc::Pipe::new()?;
    /// a.send_bytes(b"hello")?;
    /// let Err(RecvError::BufferTooShort(e)) = b.recv_bytes_into(&mut [0u8; 2]) else {
    ///     panic!("expected BufferTooShort");
    /// };
    /// let message: Vec<u8> = e.into_inner();
    /// assert_eq!(message, b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_inner(self) -> Vec<u8> {
        self.message
    }
}

impl fmt::Debug for BufferTooShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferTooShort")
            .field("message_len", &self.message.len())
            .field("buffer_len", &self.capacity)
            .finish()
    }
}

impl fmt::Display for BufferTooShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "buffer of {} bytes is too short for a message of {} bytes",
            self.capacity,
            self.message.len()
        )
    }
}

impl std::error::Error for BufferTooShort {}

/// Why a [`Connection`](crate::Connection) could not send a message.
///
/// # Examples
///
/// ```
/// use multiproc::{CodecError, Pipe, SendError};
///
/// let (a, b) = Pipe::new()?;
/// a.set_max_frame(4);
/// assert!(matches!(a.send_bytes(b"too long"), Err(SendError::Codec(CodecError::TooLarge { .. }))));
/// drop(b); // the only copy of the other end
/// assert!(matches!(a.send_bytes(b"ok"), Err(SendError::Disconnected)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub enum SendError {
    /// Every copy of the other end is closed (`EPIPE`/`ECONNRESET`). Python raises
    /// `BrokenPipeError`.
    #[doc(alias = "BrokenPipeError")]
    Disconnected,
    /// This end was created read-only (the reader of [`Pipe::simplex`](crate::Pipe::simplex)).
    ReadOnly,
    /// The value could not be encoded, holds handles where none can travel (over
    /// TCP), or is larger than the connection's maximum frame size. Nothing was sent.
    Codec(CodecError),
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Disconnected => f.write_str("Disconnected"),
            SendError::ReadOnly => f.write_str("ReadOnly"),
            SendError::Codec(e) => f.debug_tuple("Codec").field(e).finish(),
            SendError::Io(e) => f.debug_tuple("Io").field(e).finish(),
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Disconnected => f.write_str("the other end of the connection is closed"),
            SendError::ReadOnly => f.write_str("this end of the pipe is read-only"),
            SendError::Codec(e) => e.fmt(f),
            SendError::Io(e) => write!(f, "send failed: {e}"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Codec(e) => Some(e),
            SendError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for SendError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => SendError::Disconnected,
            _ => SendError::Io(e),
        }
    }
}

/// Why the authentication handshake of a [`Listener`](crate::Listener) or
/// [`Client`](crate::Client) failed.
///
/// # Examples
///
/// ```
/// use multiproc::{AuthError, Client, ConnectError, Listener};
/// use std::time::Duration;
///
/// let listener = Listener::bind("127.0.0.1:0", Some(b"right key".as_slice()))?;
/// let addr = listener.address();
/// let server = std::thread::spawn(move || listener.accept_timeout(Duration::from_secs(5)).map(drop));
/// let err = Client::connect_timeout(addr, Some(b"wrong key".as_slice()), Duration::from_secs(5));
/// assert!(matches!(err, Err(ConnectError::Auth(AuthError::WrongKey))));
/// assert!(matches!(server.join().unwrap(), Err(ConnectError::Auth(AuthError::WrongKey))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "AuthenticationError")]
#[non_exhaustive]
#[derive(Debug)]
pub enum AuthError {
    /// The peer does not know the authentication key (its proof did not match),
    /// or it rejected ours.
    WrongKey,
    /// The peer did not complete the handshake before the handshake timeout.
    Timeout,
    /// The peer does not speak this handshake (garbage, wrong version, or a peer
    /// that expects no key while this side has one), or it closed the connection.
    Protocol(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::WrongKey => f.write_str("authentication failed: the peer's key does not match"),
            AuthError::Timeout => f.write_str("authentication failed: the handshake timed out"),
            AuthError::Protocol(m) => write!(f, "authentication failed: {m}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Why [`Listener::accept`](crate::Listener::accept) or
/// [`Client::connect`](crate::Client::connect) gave no connection.
///
/// # Examples
///
/// ```
/// use multiproc::{Client, ConnectError, Listener};
///
/// let listener = Listener::bind("127.0.0.1:0", None)?;
/// assert!(matches!(listener.try_accept(), Err(ConnectError::Timeout))); // no client yet
/// let missing = std::env::temp_dir().join(format!("mp-doc-missing-{}.sock", std::process::id()));
/// assert!(matches!(Client::connect(&missing, None), Err(ConnectError::Io(_))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
#[derive(Debug)]
pub enum ConnectError {
    /// The authentication handshake failed. For a listener this concerns only the
    /// one client: the next `accept` serves the next one.
    Auth(AuthError),
    /// No client arrived before the timeout (`accept_timeout`, `try_accept`), or
    /// the TCP connection of `Client::connect` was not made in time (a handshake
    /// that is not complete in time is [`AuthError::Timeout`]).
    Timeout,
    /// Connecting, accepting or the socket failed.
    Io(io::Error),
}

impl ConnectError {
    /// True for an authentication failure.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Client, Listener};
    /// use std::time::Duration;
    ///
    /// let listener = Listener::bind("127.0.0.1:0", Some(b"key".as_slice()))?;
    /// let addr = listener.address();
    /// let key = Some(b"other".as_slice());
    /// let client = std::thread::spawn(move || Client::connect_timeout(addr, key, Duration::from_secs(5)));
    /// let err = listener.accept_timeout(Duration::from_secs(5)).unwrap_err();
    /// assert!(err.is_auth());
    /// assert!(client.join().unwrap().unwrap_err().is_auth());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_auth(&self) -> bool {
        matches!(self, ConnectError::Auth(_))
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Auth(e) => e.fmt(f),
            ConnectError::Timeout => f.write_str("no connection arrived in time"),
            ConnectError::Io(e) => write!(f, "cannot connect: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Auth(e) => Some(e),
            ConnectError::Io(e) => Some(e),
            ConnectError::Timeout => None,
        }
    }
}

impl From<AuthError> for ConnectError {
    fn from(e: AuthError) -> Self {
        ConnectError::Auth(e)
    }
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::TimedOut {
            ConnectError::Timeout
        } else {
            ConnectError::Io(e)
        }
    }
}
