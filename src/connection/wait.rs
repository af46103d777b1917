//! `wait`: block until one of several connections (or processes) is ready.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use rustix::event::PollFlags;

use crate::connection::conn::Connection;
use crate::connection::listener::Listener;
use crate::deadline::Deadline;
use crate::sys::sock;

/// Something [`wait`] can wait for: a [`Connection`] (ready when a message or the
/// end of the stream can be received without blocking), a [`Listener`] (ready when
/// a client is waiting to be accepted) or a `Process` (ready once it has exited).
///
/// # Examples
///
/// ```
/// use multiproc::{wait, Pipe, Process};
/// use std::time::Duration;
///
/// let (a, b) = Pipe::new()?;
/// let p = Process::spawn((), |()| ())?;
/// // A connection and a process in one call: only the process (it exited) is ready.
/// assert_eq!(wait(&[&b, &p], Some(Duration::from_secs(30)))?, vec![1]);
/// a.send(&0u8)?;
/// assert_eq!(wait(&[&b, &p], Some(Duration::ZERO))?, vec![0, 1]);
/// p.join_timeout(Duration::from_secs(30))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Waitable {
    /// The descriptor that becomes readable when this object may be ready.
    #[doc(hidden)]
    fn wait_fd(&self) -> BorrowedFd<'_>;

    /// True if the object is ready now (checked without blocking; may read what is
    /// already available, e.g. a connection's buffered message).
    #[doc(hidden)]
    fn ready_now(&self) -> bool;
}

impl Waitable for Connection {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }

    fn ready_now(&self) -> bool {
        Connection::ready_now(self)
    }
}

impl Waitable for Listener {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }

    fn ready_now(&self) -> bool {
        // A client is queued. Its handshake may still take up to the handshake timeout.
        sock::poll_one(self.fd(), PollFlags::IN, Deadline::after(Duration::ZERO)).unwrap_or(true)
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes
/// (`None`: forever; `Some(Duration::ZERO)`: check and return at once), and
/// returns the indices of the ready ones (empty on timeout).
///
/// A connection is ready when the next `recv` returns at once (a whole message,
/// the end of the stream, or an error, such as `WriteOnly` for the writer of a
/// simplex pipe); a listener, when a client waits to be accepted; a process, once
/// it has exited.
///
/// # Errors
///
/// The `poll(2)` error.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{wait, Pipe};
///
/// let (a1, b1) = Pipe::new()?;
/// let (a2, b2) = Pipe::new()?;
/// a2.send(&5u32)?;
/// assert_eq!(wait(&[&b1, &b2], Some(Duration::from_secs(5)))?, vec![1]);
/// assert_eq!(b2.recv::<u32>()?, 5);
/// assert!(wait(&[&b1, &b2], Some(Duration::ZERO))?.is_empty());
/// # drop((a1, a2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Differences from Python's multiprocessing
///
/// Python returns the ready objects; here their indices in `objects`. A connection
/// that has received only part of a message is not ready yet.
#[doc(alias = "multiprocessing.connection.wait")]
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> io::Result<Vec<usize>> {
    let deadline = Deadline::from_timeout(timeout);
    let ready_now = || -> Vec<usize> {
        objects
            .iter()
            .enumerate()
            .filter(|(_, o)| o.ready_now())
            .map(|(i, _)| i)
            .collect()
    };
    let ready = ready_now();
    if !ready.is_empty() {
        return Ok(ready);
    }
    let fds: Vec<BorrowedFd<'_>> = objects.iter().map(|o| o.wait_fd()).collect();
    loop {
        let polled = sock::poll_many(&fds, PollFlags::IN, deadline)?;
        if polled.is_empty() {
            return Ok(Vec::new());
        }
        let ready: Vec<usize> = polled.into_iter().filter(|&i| objects[i].ready_now()).collect();
        if !ready.is_empty() || deadline.passed() {
            return Ok(ready);
        }
        // Only part of a message arrived: it is buffered now, so poll waits for more.
    }
}
