//! Who this process is, who its parent is, and which children it has.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::deadline::Deadline;
use crate::process::child::Child;
use crate::sys::{proc, sock};

/// A process's identity as multiproc names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) pid: u32,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    /// Python's `_identity`: (1,) for the first child of the main process, (1, 2)
    /// for the second child of that child, ...
    pub(crate) path: Vec<u32>,
}

struct Me {
    id: Identity,
    parent: Option<(Identity, ParentFd)>,
}

/// How a child watches its parent: a pidfd, opened at start, or on first use
/// when the parent is the child's parent in the kernel's eyes too (its
/// `getppid()`), which tells whether the pidfd opened then is the right one.
enum ParentFd {
    Opened(Option<Arc<OwnedFd>>),
    Lazy(OnceLock<Option<Arc<OwnedFd>>>),
}

impl ParentFd {
    fn for_parent(pid: u32, ppid: u32) -> ParentFd {
        if ppid == pid {
            ParentFd::Lazy(OnceLock::new())
        } else {
            // A fork server's child: its kernel parent is the server.
            ParentFd::Opened(proc::open_pidfd(pid).ok().map(Arc::new))
        }
    }

    fn get(&self, pid: u32) -> Option<Arc<OwnedFd>> {
        match self {
            ParentFd::Opened(fd) => fd.clone(),
            ParentFd::Lazy(cell) => cell
                .get_or_init(|| {
                    let fd = proc::open_pidfd(pid).ok()?;
                    // Still our parent after the open: the pidfd is its. If it
                    // has died, we were handed to another process (whose pid
                    // differs), and `None` says "ended".
                    (proc::parent_pid() == pid).then(|| Arc::new(fd))
                })
                .clone(),
        }
    }
}

static ME: Mutex<Option<Arc<Me>>> = Mutex::new(None);
static CHILD_COUNTER: AtomicU32 = AtomicU32::new(0);
static CHILDREN: Mutex<Vec<Arc<Child>>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn me() -> Arc<Me> {
    let mut g = lock(&ME);
    g.get_or_insert_with(|| {
        Arc::new(Me {
            id: Identity {
                pid: proc::current_pid(),
                name: "MainProcess".into(),
                daemon: false,
                path: vec![],
            },
            parent: None,
        })
    })
    .clone()
}

/// Records who we are, in a new child (before its function runs).
pub(crate) fn become_child(id: Identity, parent: Identity) {
    become_child_known(id, parent, proc::current_pid(), proc::parent_pid());
}

/// As [`become_child`], with our pid and our parent's as the kernel says
/// them (`getpid`, `getppid`), read ahead by a child forked ahead of its use.
pub(crate) fn become_child_known(mut id: Identity, parent: Identity, pid: u32, ppid: u32) {
    id.pid = pid;
    let pidfd = ParentFd::for_parent(parent.pid, ppid);
    *lock(&ME) = Some(Arc::new(Me {
        id,
        parent: Some((parent, pidfd)),
    }));
    CHILD_COUNTER.store(0, Ordering::Relaxed);
    // The parent's children are not ours (after a fork).
    lock(&CHILDREN).clear();
}

/// Takes, with no effect, the locks that [`become_child`] takes, so that a
/// child forked ahead owns their pages before it has its job.
pub(crate) fn rehearse() {
    drop(lock(&ME));
    drop(lock(&CHILDREN));
}

/// The identity of the next child: its default name and path.
pub(crate) fn next_child(name: Option<String>, daemon: bool) -> (Identity, Identity) {
    let me = me();
    let n = CHILD_COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
    let mut path = me.id.path.clone();
    path.push(n);
    let name = name.unwrap_or_else(|| {
        let p: Vec<String> = path.iter().map(u32::to_string).collect();
        format!("Process-{}", p.join(":"))
    });
    (
        Identity {
            pid: 0,
            name,
            daemon,
            path,
        },
        me.id.clone(),
    )
}

/// Registers a started child, and forgets (reaping) those that have ended.
pub(crate) fn register(child: Arc<Child>) {
    let mut children = lock(&CHILDREN);
    prune(&mut children);
    children.push(child);
}

fn prune(children: &mut Vec<Arc<Child>>) {
    children.retain(|c| c.known_status().is_none());
    if children.is_empty() {
        return;
    }
    // One poll for all: only the ended ones are looked at further.
    let ready = {
        let fds: Vec<_> = children.iter().map(|c| c.ready_fd()).collect();
        sock::poll_many(
            &fds,
            rustix::event::PollFlags::IN,
            Deadline::after(Duration::ZERO),
        )
        .unwrap_or_default()
    };
    let ended: Vec<usize> = ready
        .into_iter()
        .filter(|&i| !matches!(children[i].try_status(), Ok(None)))
        .collect();
    for i in ended.into_iter().rev() {
        children.swap_remove(i);
    }
}

/// Facts about the calling process, as [`current_process`] returns them.
///
/// # Examples
/// ```
/// let me = multiproc::current_process();
/// assert_eq!((me.name(), me.daemon(), me.identity()), ("MainProcess", false, &[][..]));
/// ```
#[derive(Debug, Clone)]
pub struct CurrentProcess {
    id: Identity,
}

impl CurrentProcess {
    /// The process id.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Process;
    ///
    /// let p = Process::spawn((), |()| multiproc::current_process().pid())?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(p.pid()));
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn pid(&self) -> u32 {
        self.id.pid
    }
    /// `"MainProcess"` in the main process, the name given at spawn (default
    /// `"Process-N"`, `"Process-N:M"` for grandchildren) in a child.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Process;
    ///
    /// assert_eq!(multiproc::current_process().name(), "MainProcess");
    /// let p = Process::builder()
    ///     .name("indexer")
    ///     .spawn((), |()| multiproc::current_process().name().to_string())?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?.as_deref(), Some("indexer"));
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.id.name
    }
    /// True in a daemon child.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Process;
    ///
    /// let p = Process::builder().daemon(true).spawn((), |()| multiproc::current_process().daemon())?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(true));
    /// assert!(!multiproc::current_process().daemon());
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn daemon(&self) -> bool {
        self.id.daemon
    }
    /// Python's `_identity`: empty in the main process, `[n]` in its n-th child,
    /// `[n, m]` in that child's m-th child.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Process;
    ///
    /// let p = Process::spawn((), |()| multiproc::current_process().identity().to_vec())?;
    /// let path = p.join_timeout(Duration::from_secs(30))?.unwrap();
    /// assert_eq!(path.len(), 1); // a child of the main process
    /// assert!(multiproc::current_process().identity().is_empty());
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn identity(&self) -> &[u32] {
        &self.id.path
    }
}

/// The calling process: its pid, name and whether it is a daemon.
///
/// # Examples
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.pid(), std::process::id());
/// ```
pub fn current_process() -> CurrentProcess {
    let me = me();
    let mut id = me.id.clone();
    id.pid = proc::current_pid();
    CurrentProcess { id }
}

/// The process that started the calling one (its logical parent, even when a
/// fork server did the forking).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use multiproc::Process;
///
/// let p = Process::spawn((), |()| {
///     let parent = multiproc::parent_process().expect("a child has a parent");
///     (parent.pid(), parent.name().to_string(), parent.is_alive())
/// })?;
/// let got = p.join_timeout(Duration::from_secs(30))?;
/// assert_eq!(got, Some((std::process::id(), "MainProcess".to_string(), true)));
/// # Ok::<(), multiproc::ProcessError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ParentProcess {
    id: Identity,
    pidfd: Option<Arc<OwnedFd>>,
}

impl ParentProcess {
    /// The parent's pid.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let p = multiproc::Process::spawn((), |()| multiproc::parent_process().map(|p| p.pid()))?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(Some(std::process::id())));
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn pid(&self) -> u32 {
        self.id.pid
    }
    /// The parent's name.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let p = multiproc::Process::spawn((), |()| {
    ///     multiproc::parent_process().map(|p| p.name().to_string())
    /// })?;
    /// let name = p.join_timeout(Duration::from_secs(30))?.flatten();
    /// assert_eq!(name.as_deref(), Some("MainProcess"));
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.id.name
    }
    /// True while the parent runs.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// let p = multiproc::Process::spawn((), |()| multiproc::parent_process().unwrap().is_alive())?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(true));
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn is_alive(&self) -> bool {
        !self.join_timeout(Duration::ZERO)
    }
    /// Waits up to `timeout` for the parent to end; true if it has.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    ///
    /// // The parent is alive and joining this child: the child's wait times out.
    /// let p = multiproc::Process::spawn((), |()| {
    ///     multiproc::parent_process().unwrap().join_timeout(Duration::from_millis(10))
    /// })?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?, Some(false));
    /// # Ok::<(), multiproc::ProcessError>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        match &self.pidfd {
            Some(fd) => sock::poll_one(fd.as_fd(), rustix::event::PollFlags::IN, Deadline::after(timeout))
                .unwrap_or(true),
            None => true,
        }
    }
}

/// The parent of the calling process, or `None` in the main process.
///
/// # Examples
/// ```
/// assert!(multiproc::parent_process().is_none());
/// ```
pub fn parent_process() -> Option<ParentProcess> {
    let me = me();
    me.parent.as_ref().map(|(id, pidfd)| ParentProcess {
        id: id.clone(),
        pidfd: pidfd.get(id.pid),
    })
}

/// A running child of this process, as [`active_children`] lists it.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use multiproc::Process;
///
/// let p = Process::builder()
///     .name("sleeper")
///     .daemon(true)
///     .spawn((), |()| std::thread::sleep(Duration::from_secs(30)))?;
/// let kids = multiproc::active_children();
/// let me = kids.iter().find(|c| c.pid == p.pid()).expect("listed while it runs");
/// assert_eq!((me.name.as_str(), me.daemon), ("sleeper", true));
/// p.kill()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// The child's pid.
    pub pid: u32,
    /// The child's name.
    pub name: String,
    /// Whether it is a daemon.
    pub daemon: bool,
}

/// The children of this process that are still running. Like Python's, it also
/// reaps children that have ended (including those whose `Process` was dropped).
///
/// # Examples
/// ```
/// assert!(multiproc::active_children().is_empty());
/// ```
pub fn active_children() -> Vec<ChildInfo> {
    let mut children = lock(&CHILDREN);
    prune(&mut children);
    children
        .iter()
        .map(|c| ChildInfo {
            pid: c.pid,
            name: c.name.clone(),
            daemon: c.daemon,
        })
        .collect()
}

/// The number of CPUs this process may run on (its affinity mask, as
/// `std::thread::available_parallelism`), at least 1.
///
/// # Differences from Python's multiprocessing
/// Python's `cpu_count()` counts every CPU of the machine, even those the
/// process may not use; this is Python's `os.process_cpu_count()`.
///
/// # Examples
/// ```
/// let n = multiproc::cpu_count();
/// assert!(n >= 1);
/// assert_eq!(n, std::thread::available_parallelism().map_or(1, |n| n.get()));
/// ```
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
