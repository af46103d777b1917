//! `Process::builder()`: name, daemon flag, start method.

use std::any::Any;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::stream::write_frames;
use crate::codec::{self};
use crate::deadline::Deadline;
use crate::process::bootstrap::{self, entry_id, finish, run_and_encode, Bootstrap, ENV_CHILD};
use crate::process::child::{Child, ExitSource};
use crate::process::error::ProcessError;
use crate::process::handle::Process;
use crate::process::{forkserver, info};
use crate::sys::image::Image;
use crate::sys::proc::{self, Forked};
use crate::sys::sock;

/// How a child process is started (Python's start methods, with Python 3.14's
/// default).
///
/// | method | what happens | cost here |
/// | --- | --- | --- |
/// | `ForkServer` (default) | a single-threaded server process, started once by re-executing the program, forks each child ahead of its use | about a fork |
/// | `Spawn` | the program is re-executed (`/proc/self/exe`) for each child | about an exec |
/// | `Fork` | the caller itself forks; refused unless the caller has one thread | a fork |
///
/// In every case the child runs `f(args)` and nothing of `main`: a hook that
/// runs before `main` takes over in re-executed copies, so no `init()` call is
/// needed, under `cargo test`, nextest and doctests too.
///
/// A `ForkServer` child is a copy of the fork server, not of the caller: it
/// sees the environment variables and working directory the program had when
/// the server started (on the first `ForkServer` spawn), as in Python. A
/// `Spawn` child gets the caller's current environment and directory; a `Fork`
/// child is a copy of the caller. With every method the arguments are encoded
/// and decoded in the child (with `Fork` too, unlike Python), so that a handle
/// with state of its own in each process, such as a manager proxy's
/// connections, is made afresh for the child.
///
/// The fork server forks each child before it is asked for one: one child
/// always waits, idle, to be the next (it exits when the program does), so
/// that a spawn costs no fork and no round trip to the server. A non-daemon
/// `ForkServer` child is forked as a child of the program itself (Linux's
/// `CLONE_PARENT`; its `getppid()` is the program), which reaps it as it
/// reaps a `Spawn` child (so, as with `Spawn`, a program that ignores
/// `SIGCHLD` or waits for any child itself takes exit statuses away from
/// the library: `join` still returns the child's value or its panic, and
/// the exit status is unknown, see [`ExitStatus::code`](crate::ExitStatus::code)); a daemon child is
/// the fork server's own child and dies with it.
///
/// # Differences from Python's multiprocessing
/// Python's `fork` forks a multi-threaded parent anyway (and children may
/// deadlock on a lock held by a thread that does not exist in them); here
/// `Fork` refuses with [`ProcessError::ForkWithThreads`].
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use multiproc::{Process, StartMethod};
///
/// assert_eq!(StartMethod::default(), StartMethod::ForkServer);
/// for method in [StartMethod::ForkServer, StartMethod::Spawn] {
///     let p = Process::builder().start_method(method).spawn(20u64, |n| n + 1)?;
///     assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(21));
/// }
/// # Ok::<(), multiproc::ProcessError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum StartMethod {
    /// Fork from a single-threaded fork server (the default).
    #[default]
    ForkServer,
    /// Re-execute the program for each child.
    Spawn,
    /// Fork the calling process directly (single-threaded callers only).
    Fork,
}

static DEFAULT_METHOD: AtomicU8 = AtomicU8::new(0);

impl StartMethod {
    fn to_u8(self) -> u8 {
        match self {
            StartMethod::ForkServer => 0,
            StartMethod::Spawn => 1,
            StartMethod::Fork => 2,
        }
    }

    fn from_u8(v: u8) -> StartMethod {
        match v {
            1 => StartMethod::Spawn,
            2 => StartMethod::Fork,
            _ => StartMethod::ForkServer,
        }
    }
}

/// Sets the start method used when a builder names none (Python's
/// `set_start_method`). Affects the whole process.
///
/// # Examples
/// ```
/// multiproc::set_start_method(multiproc::StartMethod::Spawn);
/// assert_eq!(multiproc::get_start_method(), multiproc::StartMethod::Spawn);
/// multiproc::set_start_method(multiproc::StartMethod::ForkServer);
/// ```
pub fn set_start_method(method: StartMethod) {
    DEFAULT_METHOD.store(method.to_u8(), Ordering::Relaxed);
}

/// The start method used when a builder names none.
///
/// # Examples
/// ```
/// // ForkServer unless `set_start_method` chose another.
/// assert_eq!(multiproc::get_start_method(), multiproc::StartMethod::ForkServer);
/// ```
pub fn get_start_method() -> StartMethod {
    StartMethod::from_u8(DEFAULT_METHOD.load(Ordering::Relaxed))
}

/// Configures and starts a [`Process`]. Made by [`Process::builder`].
///
/// # Examples
/// ```
/// use multiproc::{Process, StartMethod};
///
/// let p = Process::builder()
///     .name("worker-1")
///     .daemon(true)
///     .start_method(StartMethod::Spawn)
///     .spawn((), |()| multiproc::current_process().name().to_string())?;
/// assert_eq!(p.join()?, "worker-1");
/// # Ok::<(), multiproc::ProcessError>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `spawn` is called"]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
    method: Option<StartMethod>,
}

impl<R> Process<R> {
    /// Starts `f(args)` in a new process with the default settings.
    ///
    /// `f` is a fn item or a closure that captures nothing (checked at
    /// compile time): it is identified across processes by its place in the
    /// executable, not sent as data. `args` and the result are any serde
    /// types, handles (queues, connections, locks, ...) included.
    ///
    /// # Errors
    /// As [`Builder::spawn`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Process;
    ///
    /// fn count_words(text: String) -> usize {
    ///     text.split_whitespace().count()
    /// }
    ///
    /// let p = Process::spawn("to be or not to be".to_string(), count_words)?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(6));
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn spawn<A, F>(args: A, f: F) -> Result<Process<R>, ProcessError>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        Builder::default().spawn(args, f)
    }
}

impl Process<()> {
    /// A builder to set the name, daemon flag and start method; its
    /// [`spawn`](Builder::spawn) returns a `Process<R>` for any `R`.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Process;
    ///
    /// let p = Process::builder().name("adder").spawn((2, 3), |(a, b): (i32, i32)| a + b)?;
    /// assert_eq!(p.name(), "adder");
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(5));
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl Builder {
    /// The child's name (default `"Process-N"`), as [`crate::current_process`] reports it.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Process;
    ///
    /// let p = Process::builder()
    ///     .name("resizer")
    ///     .spawn((), |()| multiproc::current_process().name().to_string())?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?.as_deref(), Some("resizer"));
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// A daemon child is killed (SIGKILL) when its parent exits or dies.
    ///
    /// With `Spawn` and `Fork`, "parent" is the thread that spawned it
    /// (Linux's `PR_SET_PDEATHSIG`): spawn daemons from a long-lived thread.
    /// With `ForkServer` it is the fork server, which exits with the process.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Process;
    ///
    /// let p = Process::builder().daemon(true).spawn((), |()| multiproc::current_process().daemon())?;
    /// assert!(p.daemon());
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(true));
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn daemon(mut self, daemon: bool) -> Builder {
        self.daemon = daemon;
        self
    }

    /// How to start the child (default: [`get_start_method`]).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Process, StartMethod};
    ///
    /// // A fresh copy of the program: nothing of the parent's memory is inherited.
    /// let p = Process::builder().start_method(StartMethod::Spawn).spawn(6u32, |n| n * 7)?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(42));
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    /// Starts `f(args)` in a new process. See [`Process::spawn`].
    ///
    /// The arguments are encoded here, in the caller's thread: an encoding
    /// error returns before any process exists.
    ///
    /// # Errors
    /// [`ProcessError::Codec`] if `args` cannot be encoded,
    /// [`ProcessError::ForkWithThreads`] for `Fork` in a multi-threaded
    /// process, [`ProcessError::Io`] if the process cannot be created.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Process, ProcessError, StartMethod};
    ///
    /// let p = Process::builder().name("sq").spawn(9u64, |n| n * n)?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(81));
    ///
    /// // Fork refuses while this process has another thread.
    /// let t = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(300)));
    /// let r = Process::builder().start_method(StartMethod::Fork).spawn((), |()| ());
    /// assert!(matches!(r, Err(ProcessError::ForkWithThreads { .. })));
    /// t.join().unwrap();
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn spawn<A, R, F>(self, args: A, f: F) -> Result<Process<R>, ProcessError>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        // Keeps the before-main hook in the link.
        let _ = crate::sys::hook::hook_ran();
        let method = self.method.unwrap_or_else(get_start_method);
        let (me, parent) = info::next_child(self.name, self.daemon);
        if method == StartMethod::Fork {
            return spawn_fork(me, parent, args, f);
        }
        let args_frame = codec::encode_fast(&args, true)?;
        let boot = Bootstrap {
            build_id: Image::get()?.build_id,
            entry: entry_id::<F, A, R>(),
            me: me.clone(),
            parent,
        };
        let boot_frame = codec::encode(&boot, false)?;
        let send_bootstrap = |sock: BorrowedFd<'_>| {
            match write_frames(sock, &[&boot_frame, &args_frame], Deadline::NEVER) {
                // A child that died at once: `join` reports how.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                r => r,
            }
        };
        let (pid, pidfd, source, ours) = if method == StartMethod::Spawn {
            let (ours, theirs) = sock::socketpair_stream()?;
            let env = [(ENV_CHILD, proc::raw(&theirs).to_string())];
            let (pid, pidfd) = proc::spawn_self(&env, theirs.as_fd(), me.daemon)?;
            drop(theirs);
            send_bootstrap(ours.as_fd())?;
            (pid, pidfd, ExitSource::Direct, ours)
        } else {
            // A child the server forked ahead: it runs as soon as it reads this
            // (one found dead is replaced, so no `BrokenPipe` is hidden here).
            let c = forkserver::take_child(me.daemon, |sock| {
                write_frames(sock, &[&boot_frame, &args_frame], Deadline::NEVER)
            })?;
            let source = match c.status {
                Some(status) => ExitSource::Served { status },
                None => ExitSource::Direct,
            };
            (c.pid, c.pidfd, source, c.sock)
        };
        let child = Arc::new(Child::new(pid, me.name, me.daemon, pidfd, source));
        info::register(child.clone());
        Ok(Process::new(child, ours))
    }
}

fn spawn_fork<A, R, F>(
    me: info::Identity,
    parent: info::Identity,
    args: A,
    f: F,
) -> Result<Process<R>, ProcessError>
where
    F: Fn(A) -> R + Copy + 'static,
    A: Serialize + DeserializeOwned,
    R: Serialize + Any,
{
    // The arguments cross as with the other start methods, encoded here and
    // decoded in the child, so that a handle with per-process state (a
    // manager proxy's connections) is made afresh for the child instead of
    // being shared with this process through the fork.
    let out = codec::encode(&args, true)?;
    let (ours, theirs) = sock::socketpair_stream()?;
    match proc::fork_single_threaded()? {
        Err(threads) => Err(ProcessError::ForkWithThreads { threads }),
        Ok(Forked::Child) => {
            drop(ours);
            forkserver::forget_after_fork();
            let daemon = me.daemon;
            let parent_pid = parent.pid;
            info::become_child(me, parent);
            if daemon && proc::die_with_parent(parent_pid).is_err() {
                proc::exit_now(bootstrap::EXIT_REFUSED);
            }
            // The copy of the caller's arguments: dropping it closes this
            // process's copies of their descriptors (the decoded arguments
            // hold their own, from `out`).
            drop(args);
            match codec::decode_value::<A>(&out.payload, out.fds) {
                Ok(args) => finish(&theirs, run_and_encode(move || f(args))),
                Err(e) => finish(
                    &theirs,
                    Err(bootstrap::Report::Refused(format!(
                        "cannot decode the arguments: {e}"
                    ))),
                ),
            }
        }
        Ok(Forked::Parent(pid)) => {
            drop(theirs);
            drop(out);
            let raw = pid.as_raw_nonzero().get().unsigned_abs();
            let child = Arc::new(Child::new(
                raw,
                me.name,
                me.daemon,
                proc::open_pidfd(raw)?,
                ExitSource::Direct,
            ));
            info::register(child.clone());
            Ok(Process::new(child, ours))
        }
    }
}
