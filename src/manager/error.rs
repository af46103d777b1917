//! [`ManagerError`]: what a manager or one of its proxies reports.

use std::fmt;
use std::io;

use crate::codec::CodecError;
use crate::connection::ConnectError;
use crate::manager::protocol::{Fault, ObjKind};
use crate::process::ProcessError;

/// Why a manager operation failed.
///
/// # Examples
///
/// ```
/// use multiproc::{Manager, ManagerError};
///
/// let m = Manager::start()?;
/// let d = m.dict::<String, i64>()?;
/// // An atomic update of a missing key is an error, as `d['x'] -= 1` is in Python.
/// assert!(matches!(d.update_with("x", |v: &mut i64| *v -= 1), Err(ManagerError::KeyNotFound)));
/// m.shutdown()?;
/// // The server is gone: every call says so at once.
/// assert!(matches!(d.len(), Err(ManagerError::ManagerGone)));
/// # Ok::<(), ManagerError>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ManagerError {
    /// The manager's server process is gone (shut down, killed, or unreachable).
    ManagerGone,
    /// The call did not complete within its deadline (the server may be wedged).
    Timeout,
    /// The key is not in the dict (Python's `KeyError`).
    KeyNotFound,
    /// The list index is out of range (Python's `IndexError`).
    IndexOutOfRange {
        /// The index given.
        index: i64,
        /// The list's length at the time.
        len: u64,
    },
    /// The queue is empty (`try_get`, or a `get_timeout` that timed out).
    Empty,
    /// The queue is full (`try_put`, or a `put_timeout` that timed out).
    Full,
    /// The server knows no object with this id (or name).
    NoSuchObject(String),
    /// The object exists but is of another kind than the proxy expects.
    WrongKind {
        /// What the proxy expected.
        expected: String,
        /// What the server holds.
        actual: String,
    },
    /// An `update_with` function was refused: the server runs another build of
    /// the executable, or the function is not in its code.
    FunctionRefused(String),
    /// An `update_with` function panicked on the server; the stored value is unchanged.
    FunctionPanicked(String),
    /// A value could not be encoded, a request is larger than the manager accepts
    /// ([`CodecError::TooLarge`]), or a stored value could not be decoded as the
    /// proxy's type (proxies for the same object with different types).
    Codec(CodecError),
    /// The server refused the request (malformed, too large, not applicable).
    Refused(String),
    /// Connecting or authenticating to a manager failed (wrong key, refused...).
    Connect(ConnectError),
    /// Starting or stopping the server process failed.
    Process(ProcessError),
    /// An I/O error other than the server going away.
    Io(io::Error),
}

impl fmt::Display for ManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagerError::ManagerGone => f.write_str("the manager's server process is gone"),
            ManagerError::Timeout => f.write_str("the manager did not answer in time"),
            ManagerError::KeyNotFound => f.write_str("no such key"),
            ManagerError::IndexOutOfRange { index, len } => {
                write!(f, "list index {index} out of range for a list of length {len}")
            }
            ManagerError::Empty => f.write_str("the queue is empty"),
            ManagerError::Full => f.write_str("the queue is full"),
            ManagerError::NoSuchObject(what) => write!(f, "the manager holds no object {what}"),
            ManagerError::WrongKind { expected, actual } => {
                write!(f, "the object is a {actual}, not a {expected}")
            }
            ManagerError::FunctionRefused(m) => write!(f, "the update function was refused: {m}"),
            ManagerError::FunctionPanicked(m) => write!(f, "the update function panicked: {m}"),
            ManagerError::Codec(e) => write!(f, "{e}"),
            ManagerError::Refused(m) => write!(f, "the manager refused the request: {m}"),
            ManagerError::Connect(e) => write!(f, "cannot connect to the manager: {e}"),
            ManagerError::Process(e) => write!(f, "manager process: {e}"),
            ManagerError::Io(e) => write!(f, "manager I/O error: {e}"),
        }
    }
}

impl std::error::Error for ManagerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ManagerError::Codec(e) => Some(e),
            ManagerError::Connect(e) => Some(e),
            ManagerError::Process(e) => Some(e),
            ManagerError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl ManagerError {
    /// True for [`ManagerError::ManagerGone`].
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<u8>()?;
    /// m.shutdown()?;
    /// let err = l.push(1).unwrap_err();
    /// assert!(err.is_gone());
    /// assert!(!err.is_timeout());
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn is_gone(&self) -> bool {
        matches!(self, ManagerError::ManagerGone)
    }

    /// True for [`ManagerError::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let m = multiproc::Manager::start()?;
    /// let v = m.value(0u8)?;
    /// m.set_call_timeout(Some(Duration::from_millis(5)));
    /// // The server runs this for 100 ms, longer than the call timeout.
    /// let err = v.update_with(|_: &mut u8| std::thread::sleep(Duration::from_millis(100))).unwrap_err();
    /// assert!(err.is_timeout());
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, ManagerError::Timeout)
    }
}

impl From<CodecError> for ManagerError {
    fn from(e: CodecError) -> Self {
        ManagerError::Codec(e)
    }
}

impl From<ProcessError> for ManagerError {
    fn from(e: ProcessError) -> Self {
        ManagerError::Process(e)
    }
}

impl From<ConnectError> for ManagerError {
    fn from(e: ConnectError) -> Self {
        ManagerError::Connect(e)
    }
}

fn kind_name(k: ObjKind) -> String {
    k.to_string()
}

impl From<Fault> for ManagerError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::NoSuchObject(id) => ManagerError::NoSuchObject(format!("#{id}")),
            Fault::NameNotFound(n) => ManagerError::NoSuchObject(format!("named {n:?}")),
            Fault::WrongKind { expected, actual, .. } => ManagerError::WrongKind {
                expected: kind_name(expected),
                actual: kind_name(actual),
            },
            Fault::KeyNotFound => ManagerError::KeyNotFound,
            Fault::IndexOutOfRange { index, len } => ManagerError::IndexOutOfRange { index, len },
            Fault::Empty => ManagerError::Empty,
            Fault::Full => ManagerError::Full,
            Fault::TimedOut => ManagerError::Timeout,
            Fault::NotOwner => ManagerError::Refused("the lock is not held by this connection".into()),
            Fault::Refused(m) => ManagerError::FunctionRefused(m),
            Fault::Panicked(m) => ManagerError::FunctionPanicked(m),
            Fault::Malformed(m) | Fault::Unsupported(m) => ManagerError::Refused(m),
        }
    }
}
