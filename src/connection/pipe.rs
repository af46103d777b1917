//! `Pipe`: a connected pair of [`Connection`]s over a Unix socketpair.

use std::io;

use crate::connection::conn::{pair, Connection};

/// Makes pairs of connected [`Connection`]s (Python's `multiprocessing.Pipe`).
///
/// # Examples
///
/// The seed's example: a child reads until every writer is closed.
///
/// ```
/// use multiproc::Pipe;
///
/// let (left, right) = Pipe::new()?;
/// left.send(&"aaa".to_string())?;
/// assert_eq!(right.recv::<String>()?, "aaa");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Differences from Python's multiprocessing
///
/// `Pipe(duplex=False)` is [`Pipe::simplex`], and both kinds are Unix socketpairs
/// (Python uses an `os.pipe()` for the one-way kind), so handles can travel both
/// ways over either.
#[doc(alias = "multiprocessing.Pipe")]
#[derive(Debug)]
pub struct Pipe;

impl Pipe {
    /// A duplex pair: each end sends and receives.
    ///
    /// # Errors
    ///
    /// The `socketpair(2)` error (e.g. out of descriptors).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Connection, Pipe, Process};
    /// use std::time::Duration;
    ///
    /// let (parent, child) = Pipe::new()?;
    /// let p = Process::spawn(child, |c: Connection| {
    ///     let n: u32 = c.recv_timeout(Duration::from_secs(30)).unwrap();
    ///     c.send(&(n * 2)).unwrap();
    /// })?;
    /// parent.send(&21u32)?;
    /// assert_eq!(parent.recv_timeout::<u32>(Duration::from_secs(30))?, 42);
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> io::Result<(Connection, Connection)> {
        pair(true)
    }

    /// A one-way pair `(reader, writer)` (Python's `Pipe(duplex=False)`): the reader
    /// only receives, the writer only sends; the wrong direction is an error.
    ///
    /// # Errors
    ///
    /// The `socketpair(2)` error.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Pipe, RecvError, SendError};
    /// let (reader, writer) = Pipe::simplex()?;
    /// writer.send(&1u8)?;
    /// assert_eq!(reader.recv::<u8>()?, 1);
    /// assert!(matches!(reader.send(&1u8), Err(SendError::ReadOnly)));
    /// assert!(matches!(writer.recv::<u8>(), Err(RecvError::WriteOnly)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn simplex() -> io::Result<(Connection, Connection)> {
        pair(false)
    }
}
