//! `Process<R>`: the parent's handle on a running child that will return an `R`.

use std::any::Any;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustix::event::PollFlags;
use serde::de::DeserializeOwned;

use crate::codec::stream::{FrameReader, ReadError};
use crate::codec::{self, CodecError, Frame};
use crate::deadline::Deadline;
use crate::process::bootstrap::Report;
use crate::process::child::Child;
use crate::process::error::{ExitStatus, ProcessError};
use crate::sys::{proc, sock};

/// What the child said before it exited.
enum Outcome {
    Returned(Frame),
    Report(Report),
    /// It exited without a word (exit(n), a signal).
    Nothing,
}

enum Next {
    Frame(Frame),
    Ended,
    TimedOut,
}

struct Conn {
    sock: OwnedFd,
    reader: FrameReader,
    /// A `Report::Returned` was read; the result frame comes next.
    expecting_result: bool,
    outcome: Option<Outcome>,
    taken: bool,
}

/// A child process running a function that returns an `R`.
///
/// Made by [`Process::spawn`] or [`Process::builder`]. The child runs
/// `f(args)` and sends the result back; [`join`](Process::join) returns it.
///
/// # Drop
/// Dropping a `Process` never blocks and never kills the child: a non-daemon
/// child runs on (as in Python); the library still reaps it when it ends (a
/// daemon `ForkServer` child is reaped by the fork server; any other child at
/// the next spawn or [`active_children`](crate::active_children) call), so no zombie
/// outlives those calls. Daemon children are killed when their parent exits.
///
/// # Examples
/// ```
/// use multiproc::Process;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let p = Process::spawn(7u64, square)?;
/// assert_eq!(p.join()?, 49);
///
/// // A closure that captures nothing works as well.
/// let p = Process::spawn((2u32, 3u32), |(a, b)| a.pow(b))?;
/// assert_eq!(p.join()?, 8);
/// # Ok::<(), multiproc::ProcessError>(())
/// ```
pub struct Process<R> {
    child: Arc<Child>,
    conn: Mutex<Conn>,
    _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.child.pid)
            .field("name", &self.child.name)
            .field("daemon", &self.child.daemon)
            .finish_non_exhaustive()
    }
}

impl<R> Process<R> {
    pub(crate) fn new(child: Arc<Child>, sock: OwnedFd) -> Process<R> {
        Process {
            child,
            conn: Mutex::new(Conn {
                sock,
                reader: FrameReader::new(),
                expecting_result: false,
                outcome: None,
                taken: false,
            }),
            _result: PhantomData,
        }
    }

    /// The child's process id.
    ///
    /// # Examples
    /// ```
    /// use multiproc::Process;
    /// use std::time::Duration;
    ///
    /// let p = Process::spawn((), |()| multiproc::current_process().pid())?;
    /// let pid = p.pid();
    /// assert_ne!(pid, std::process::id());
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(pid)); // as the child sees it
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn pid(&self) -> u32 {
        self.child.pid
    }

    /// The child's name (`"Process-N"` unless one was given to the builder).
    ///
    /// # Examples
    /// ```
    /// use multiproc::Process;
    /// use std::time::Duration;
    ///
    /// let p = Process::builder()
    ///     .name("worker")
    ///     .spawn((), |()| multiproc::current_process().name().to_string())?;
    /// assert_eq!(p.name(), "worker");
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?.as_deref(), Some("worker"));
    /// let p = Process::spawn((), |()| ())?;
    /// assert!(p.name().starts_with("Process-"));
    /// p.join_timeout(Duration::from_secs(30))?;
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.child.name
    }

    /// Whether the child is a daemon (killed when its parent exits).
    ///
    /// # Examples
    /// ```
    /// use multiproc::Process;
    /// use std::time::Duration;
    ///
    /// let p = Process::builder().daemon(true).spawn((), |()| ())?;
    /// assert!(p.daemon());
    /// p.join_timeout(Duration::from_secs(30))?;
    /// let p = Process::spawn((), |()| ())?;
    /// assert!(!p.daemon()); // the default
    /// p.join_timeout(Duration::from_secs(30))?;
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn daemon(&self) -> bool {
        self.child.daemon
    }

    /// True until the child has ended.
    ///
    /// # Examples
    /// ```
    /// # use multiproc::Process;
    /// let p = Process::spawn(50u64, |ms| std::thread::sleep(std::time::Duration::from_millis(ms)))?;
    /// assert!(p.is_alive());
    /// p.join()?;
    /// assert!(!p.is_alive());
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn is_alive(&self) -> bool {
        !self.child.has_exited()
    }

    /// How the child ended, or `None` while it runs. Python's `exitcode` is
    /// [`ExitStatus::exitcode`].
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Connection, Pipe, Process};
    /// use std::time::Duration;
    ///
    /// let (tx, rx) = Pipe::new()?;
    /// let p = Process::spawn(rx, |rx: Connection| rx.recv_timeout::<()>(Duration::from_secs(30)).is_ok())?;
    /// assert_eq!(p.exit_status(), None); // still waiting for the message
    /// tx.send(&())?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(true));
    /// assert!(p.exit_status().is_some_and(|s| s.success()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "exitcode")]
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child.status_if_exited().ok().flatten()
    }

    /// Asks the child to stop with SIGTERM (Python's `terminate`). Never hits
    /// another process, even if the child has already been reaped.
    ///
    /// # Errors
    /// Only if the signal cannot be sent for a reason other than the child
    /// having ended.
    ///
    /// # Examples
    /// ```
    /// use multiproc::Process;
    /// use std::time::Duration;
    ///
    /// let p: Process<()> = Process::spawn(30, |s: u64| std::thread::sleep(Duration::from_secs(s)))?;
    /// p.terminate()?;
    /// let err = p.join_timeout(Duration::from_secs(30)).unwrap_err();
    /// assert_eq!(err.exit_status().and_then(|s| s.signal()), Some(15)); // SIGTERM
    /// p.terminate()?; // already ended and reaped: nothing is signalled, no error
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn terminate(&self) -> io::Result<()> {
        self.child.signal(proc::SIGTERM)
    }

    /// Kills the child with SIGKILL (Python's `kill`).
    ///
    /// # Errors
    /// As [`terminate`](Process::terminate).
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Process, ProcessError};
    /// use std::time::Duration;
    ///
    /// let p: Process<()> = Process::spawn(30, |s: u64| std::thread::sleep(Duration::from_secs(s)))?;
    /// p.kill()?;
    /// let r = p.join_timeout(Duration::from_secs(30));
    /// assert!(matches!(r, Err(ProcessError::Signaled(s)) if s.signal() == Some(9))); // SIGKILL
    /// assert!(!p.is_alive());
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn kill(&self) -> io::Result<()> {
        self.child.signal(proc::SIGKILL)
    }
}

/// A process is ready for [`crate::wait`] once it has ended.
impl<R> crate::Waitable for Process<R> {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.child.exit_fd()
    }

    fn ready_now(&self) -> bool {
        !self.is_alive()
    }
}

impl<R: DeserializeOwned + Any> Process<R> {
    /// Waits for the child to end and returns what its function returned.
    ///
    /// # Errors
    /// - [`ProcessError::Panicked`] with the panic message if the function panicked;
    /// - [`ProcessError::Exited`] if the child exited (`std::process::exit(n)`)
    ///   before returning, [`ProcessError::Signaled`] if a signal killed it;
    /// - [`ProcessError::Codec`] if the result could not be encoded or decoded;
    /// - [`ProcessError::Handshake`] if the child refused to run the function;
    /// - [`ProcessError::AlreadyJoined`] on a second successful join.
    ///
    /// # Examples
    /// ```
    /// use multiproc::Process;
    ///
    /// let p = Process::spawn(vec![1, 2, 3], |v: Vec<i32>| v.iter().sum::<i32>())?;
    /// assert_eq!(p.join()?, 6);
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn join(&self) -> Result<R, ProcessError> {
        match self.join_deadline(Deadline::NEVER)? {
            Some(r) => Ok(r),
            None => Err(ProcessError::Io(io::Error::other(
                "join without a deadline timed out",
            ))),
        }
    }

    /// As [`join`](Process::join), waiting at most `timeout`: `Ok(None)` if the
    /// child is still running then.
    ///
    /// # Examples
    /// ```
    /// # use multiproc::Process;
    /// use std::time::Duration;
    /// let p = Process::spawn(500u64, |ms| std::thread::sleep(Duration::from_millis(ms)))?;
    /// assert!(p.join_timeout(Duration::from_millis(10))?.is_none());
    /// assert!(p.join_timeout(Duration::from_secs(30))?.is_some());
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<Option<R>, ProcessError> {
        self.join_deadline(Deadline::after(timeout))
    }

    fn join_deadline(&self, deadline: Deadline) -> Result<Option<R>, ProcessError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if conn.taken {
            return Err(ProcessError::AlreadyJoined);
        }
        while conn.outcome.is_none() {
            let frame = match self.next_frame(&mut conn, deadline)? {
                Next::Frame(f) => f,
                Next::TimedOut => return Ok(None),
                Next::Ended => {
                    conn.outcome = Some(Outcome::Nothing);
                    break;
                }
            };
            if conn.expecting_result {
                conn.outcome = Some(Outcome::Returned(frame));
                continue;
            }
            match codec::decode_value::<Report>(&frame.payload, frame.fds) {
                Ok(Report::Returned) => conn.expecting_result = true,
                Ok(r) => conn.outcome = Some(Outcome::Report(r)),
                Err(e) => return Err(ProcessError::Codec(e)),
            }
        }
        // The answer comes once the child has ended and been reaped, so that
        // no zombie is left when `join` returns.
        let Some(status) = self.child.wait_status(deadline)? else {
            return Ok(None);
        };
        conn.taken = true;
        match conn.outcome.take() {
            Some(Outcome::Returned(frame)) => Ok(Some(codec::decode::<R>(frame)?)),
            Some(Outcome::Report(Report::Panicked(message))) => Err(ProcessError::Panicked { message }),
            Some(Outcome::Report(Report::Refused(why))) => Err(ProcessError::Handshake(why)),
            Some(Outcome::Report(Report::BadResult(why))) => {
                Err(ProcessError::Codec(CodecError::Encode(why)))
            }
            // Silent, or a report that announced a result and died before
            // sending it: the exit status is the answer.
            Some(Outcome::Report(Report::Returned)) | Some(Outcome::Nothing) | None => {
                Err(if status.signal().is_some() {
                    ProcessError::Signaled(status)
                } else {
                    ProcessError::Exited(status)
                })
            }
        }
    }

    /// The next frame from the child.
    fn next_frame(&self, conn: &mut Conn, deadline: Deadline) -> Result<Next, ProcessError> {
        let now = Deadline::after(Duration::ZERO);
        loop {
            if !conn.reader.has_buffered() {
                let ready = sock::poll_many(
                    &[conn.sock.as_fd(), self.child.ready_fd()],
                    PollFlags::IN,
                    deadline,
                )?;
                if ready.is_empty() {
                    return Ok(Next::TimedOut);
                }
                if !ready.contains(&0) {
                    // Ended. Whatever it sent is already in the socket: one last look.
                    return match conn.reader.read(conn.sock.as_fd(), codec::DEFAULT_MAX_FRAME, now) {
                        Ok(f) => Ok(Next::Frame(f)),
                        Err(_) => Ok(Next::Ended),
                    };
                }
            }
            match conn.reader.read(conn.sock.as_fd(), codec::DEFAULT_MAX_FRAME, now) {
                Ok(f) => return Ok(Next::Frame(f)),
                Err(ReadError::TimedOut) => {
                    if deadline.passed() {
                        return Ok(Next::TimedOut);
                    }
                }
                // EOF, or a frame cut short by the child's death: the caller
                // then waits for the exit status and reports it.
                Err(ReadError::Eof) | Err(ReadError::Codec(CodecError::Truncated)) => return Ok(Next::Ended),
                Err(ReadError::Codec(e)) => return Err(ProcessError::Codec(e)),
                Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(Next::Ended)
                }
                Err(ReadError::Io(e)) => return Err(ProcessError::Io(e)),
            }
        }
    }
}
