//! How a child ended, and why starting or joining one failed.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

use crate::codec::CodecError;

/// How a process ended: an exit code or a terminating signal.
///
/// # Examples
/// ```
/// use multiproc::{Process, ProcessError};
/// use std::time::Duration;
///
/// let p: Process<()> = Process::spawn(3, |code: i32| std::process::exit(code))?;
/// let r = p.join_timeout(Duration::from_secs(30));
/// assert!(matches!(r, Err(ProcessError::Exited(s)) if s.code() == Some(3)));
/// let status = p.exit_status().unwrap();
/// assert_eq!((status.code(), status.signal(), status.exitcode()), (Some(3), None, 3));
/// assert_eq!(status.to_string(), "exit code 3");
/// # Ok::<(), multiproc::ProcessError>(())
/// ```
///
/// # Differences from Python's multiprocessing
/// Python folds both into `exitcode` (`n`, or `-signal`); [`ExitStatus::exitcode`]
/// gives that number, [`code`](ExitStatus::code) and [`signal`](ExitStatus::signal)
/// keep the two apart.
#[doc(alias = "exitcode")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExitStatus {
    code: Option<i32>,
    signal: Option<i32>,
}

impl ExitStatus {
    pub(crate) fn from_code(code: i32) -> ExitStatus {
        ExitStatus {
            code: Some(code),
            signal: None,
        }
    }

    /// The status of a child reaped by someone else (see [`ExitStatus::code`]).
    pub(crate) fn unknown() -> ExitStatus {
        ExitStatus {
            code: None,
            signal: None,
        }
    }

    pub(crate) fn from_signal(signal: i32) -> ExitStatus {
        ExitStatus {
            code: None,
            signal: Some(signal),
        }
    }

    /// The exit code, if the process exited (rather than being killed).
    ///
    /// Both `code()` and [`signal()`](ExitStatus::signal) are `None` when the
    /// status was taken by someone else: the kernel, in a program that sets
    /// `SIGCHLD` to `SIG_IGN`, or the program's own `wait` for any child.
    /// `join` still returns what the child returned (or its panic), and
    /// [`exitcode`](ExitStatus::exitcode) is then 0, as for Python's
    /// `subprocess` in the same case.
    ///
    /// # Examples
    /// ```
    /// use multiproc::Process;
    /// use std::time::Duration;
    ///
    /// let p: Process<()> = Process::spawn(7, |code: i32| std::process::exit(code))?;
    /// let status = p.join_timeout(Duration::from_secs(30)).unwrap_err().exit_status().unwrap();
    /// assert_eq!(status.code(), Some(7));
    /// assert_eq!(status.signal(), None);
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn code(&self) -> Option<i32> {
        self.code
    }

    /// The number of the signal that killed the process, if one did.
    ///
    /// # Examples
    /// ```
    /// use multiproc::Process;
    /// use std::time::Duration;
    ///
    /// let p: Process<()> = Process::spawn(30, |s: u64| std::thread::sleep(Duration::from_secs(s)))?;
    /// p.kill()?;
    /// let status = p.join_timeout(Duration::from_secs(30)).unwrap_err().exit_status().unwrap();
    /// assert_eq!(status.signal(), Some(9)); // SIGKILL
    /// assert_eq!(status.code(), None);
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn signal(&self) -> Option<i32> {
        self.signal
    }

    /// True for exit code 0.
    ///
    /// # Examples
    /// ```
    /// use multiproc::Process;
    /// use std::time::Duration;
    ///
    /// let p = Process::spawn(2u8, |x| x + 1)?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(3));
    /// assert!(p.exit_status().unwrap().success());
    /// let p: Process<()> = Process::spawn(1, |code: i32| std::process::exit(code))?;
    /// assert!(p.join_timeout(Duration::from_secs(30)).is_err());
    /// assert!(!p.exit_status().unwrap().success());
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Python's `Process.exitcode`: the exit code, or minus the signal number.
    ///
    /// # Examples
    /// ```
    /// use multiproc::Process;
    /// use std::time::Duration;
    ///
    /// let p: Process<()> = Process::spawn(30, |s: u64| std::thread::sleep(Duration::from_secs(s)))?;
    /// p.terminate()?;
    /// let status = p.join_timeout(Duration::from_secs(30)).unwrap_err().exit_status().unwrap();
    /// assert_eq!(status.exitcode(), -15); // minus SIGTERM, as in Python
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn exitcode(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => -s,
            (None, None) => 0,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}{}", signal_name(s)),
            (None, None) => write!(f, "unknown exit status"),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGFPE => " (SIGFPE)",
        libc::SIGILL => " (SIGILL)",
        _ => "",
    }
}

/// Why a process could not be started or did not return its result.
///
/// # Examples
/// ```
/// use multiproc::{Process, ProcessError};
/// use std::time::Duration;
///
/// let p: Process<()> = Process::spawn((), |()| panic!("boom"))?;
/// match p.join_timeout(Duration::from_secs(30)) {
///     Err(ProcessError::Panicked { message }) => assert!(message.contains("boom")),
///     other => panic!("{other:?}"),
/// }
/// let p = Process::spawn(2u8, |x| x * 2)?;
/// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(4));
/// assert!(matches!(p.join(), Err(ProcessError::AlreadyJoined))); // the result was taken
/// # Ok::<(), multiproc::ProcessError>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ProcessError {
    /// The child's function panicked; `message` is the panic's message.
    Panicked {
        /// The panic payload as text.
        message: String,
    },
    /// The child exited (e.g. `std::process::exit(n)`) without returning a result.
    Exited(ExitStatus),
    /// The child was killed by a signal before returning a result.
    Signaled(ExitStatus),
    /// The arguments or the result could not be encoded or decoded.
    Codec(CodecError),
    /// `StartMethod::Fork` was asked for while the process has other threads.
    ForkWithThreads {
        /// How many threads the process had.
        threads: usize,
    },
    /// The child refused to run the function: the executable differs from the
    /// parent's, or the function does not lie in the executable's code.
    Handshake(String),
    /// The result was already returned by an earlier `join`.
    AlreadyJoined,
    /// A system call failed.
    Io(io::Error),
}

impl ProcessError {
    /// The exit status, for `Exited` and `Signaled`.
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Process, ProcessError};
    /// use std::time::Duration;
    ///
    /// let p: Process<()> = Process::spawn(4, |code: i32| std::process::exit(code))?;
    /// let err = p.join_timeout(Duration::from_secs(30)).unwrap_err();
    /// assert!(matches!(err, ProcessError::Exited(_)));
    /// assert_eq!(err.exit_status().and_then(|s| s.code()), Some(4));
    /// assert!(ProcessError::AlreadyJoined.exit_status().is_none());
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match self {
            ProcessError::Exited(s) | ProcessError::Signaled(s) => Some(*s),
            _ => None,
        }
    }
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::Panicked { message } => write!(f, "the child panicked: {message}"),
            ProcessError::Exited(s) => write!(f, "the child ended with {s} before returning a result"),
            ProcessError::Signaled(s) => write!(f, "the child was {s} before returning a result"),
            ProcessError::Codec(e) => write!(f, "{e}"),
            ProcessError::ForkWithThreads { threads } => write!(
                f,
                "StartMethod::Fork needs a single-threaded process, this one has {threads} threads \
                 (use ForkServer or Spawn)"
            ),
            ProcessError::Handshake(m) => write!(f, "the child refused to start: {m}"),
            ProcessError::AlreadyJoined => write!(f, "the process's result was already taken by join"),
            ProcessError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ProcessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcessError::Codec(e) => Some(e),
            ProcessError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ProcessError {
    fn from(e: io::Error) -> Self {
        ProcessError::Io(e)
    }
}

impl From<CodecError> for ProcessError {
    fn from(e: CodecError) -> Self {
        ProcessError::Codec(e)
    }
}
