//! Processes: fork, exec of the current binary, pidfds, signals, parent-death
//! signals, and the few process facts the library needs.
//!
//! # Safety
//! `fork` is the one dangerous call: after it the child may only use
//! async-signal-safe operations until it has re-established a sane state.
//! [`fork`] is therefore `unsafe` and its callers state why the child is sound
//! (the process has one thread, or it is the single-threaded fork server).
//! The `pre_exec` hook of [`spawn_self`] runs between fork and exec and only
//! makes raw syscalls (`fcntl`, `prctl`).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use rustix::process::{
    getpid, pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal, WaitId, WaitIdOptions,
};

/// What `fork` returned in the calling process.
#[derive(Debug)]
pub(crate) enum Forked {
    /// In the parent, with the child's pid.
    Parent(Pid),
    /// In the child.
    Child,
}

/// `fork(2)`.
///
/// # Safety
/// The caller guarantees that the child only does what is sound after a fork:
/// either the calling process has a single thread (so no lock is held by a
/// thread that does not exist in the child), or the child restricts itself to
/// async-signal-safe calls until it execs or exits.
unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: delegated to the caller (see above).
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        // `pid > 0` here, so `from_raw` succeeds.
        p => Pid::from_raw(p)
            .map(Forked::Parent)
            .ok_or_else(|| io::Error::other("fork returned an invalid pid")),
    }
}

/// Forks if, and only if, the calling process has a single thread (which
/// makes the child sound: no lock can be held by a thread that is missing in
/// it). `Ok(Err(n))`: refused, the process has `n` threads.
pub(crate) fn fork_single_threaded() -> io::Result<Result<Forked, usize>> {
    if !never_threaded() {
        let n = thread_count()?;
        if n != 1 {
            return Ok(Err(n));
        }
    }
    // SAFETY: the process has exactly one thread (the caller's), checked just
    // above; a thread can only be created by this thread, which is busy here.
    unsafe { fork() }.map(Ok)
}

/// True if glibc says this process has never created a thread since it
/// started or forked (`__libc_single_threaded`, glibc 2.32+, looked up once
/// at run time): a free answer that spares reading `/proc`. False when
/// unknown.
fn never_threaded() -> bool {
    static FLAG: OnceLock<usize> = OnceLock::new();
    let addr = *FLAG.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks
        // a symbol up; a null result means it does not exist.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__libc_single_threaded".as_ptr()) as usize }
    });
    if addr == 0 {
        return false;
    }
    // SAFETY: the symbol is glibc's `char __libc_single_threaded`, a static
    // that lives as long as the process. glibc clears it in the thread that
    // creates a thread; while it is still 1 the caller is the only thread, so
    // nothing writes it concurrently with this read.
    unsafe { std::ptr::read_volatile(addr as *const u8) == 1 }
}

/// Forks children as *siblings* of the caller (`CLONE_PARENT`): the new
/// process's parent is the caller's parent, which then waits for it directly.
/// The fork server uses this so that the program, not the server, reaps
/// its non-daemon children.
///
/// The child is set up as glibc's own `fork` sets it up (its thread id
/// written where glibc keeps it, with `CLONE_CHILD_SETTID`, and its robust
/// mutex list registered again), except that no `pthread_atfork` handler runs
/// and glibc's internal locks are not reinitialised: sound only in a
/// single-threaded process that is not inside libc (checked, and the fork
/// server's loop).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SiblingFork {
    tid_addr: u64,
    robust_head: usize,
    robust_len: usize,
}

/// What [`SiblingFork::fork`] returned in the calling process.
#[derive(Debug)]
pub(crate) enum SiblingForked {
    /// In the caller, with the new process's pid and a pidfd for it.
    Caller(u32, OwnedFd),
    /// In the new process.
    Child,
}

/// `struct clone_args` up to `tls` (`CLONE_ARGS_SIZE_VER0`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

const PR_GET_TID_ADDRESS: libc::c_int = 40;

impl SiblingFork {
    /// Reads what the child must be given (where glibc keeps this thread's id,
    /// and its robust list head). `None` where the kernel does not say
    /// (`PR_GET_TID_ADDRESS` needs `CONFIG_CHECKPOINT_RESTORE`): callers then
    /// fork normally.
    pub(crate) fn prepare() -> Option<SiblingFork> {
        let mut tid_addr: *mut libc::c_int = std::ptr::null_mut();
        // SAFETY: PR_GET_TID_ADDRESS stores one pointer at the address given,
        // which is a live local of pointer size.
        let rc = unsafe {
            libc::prctl(
                PR_GET_TID_ADDRESS,
                &mut tid_addr as *mut *mut libc::c_int as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if rc != 0 || tid_addr.is_null() {
            return None;
        }
        // glibc keeps the thread's id at that address (its `set_tid_address`
        // at start-up): check before relying on it.
        // SAFETY: the kernel returned the clear-child-tid address of this
        // thread, which glibc points at the `tid` field of this thread's live
        // descriptor; only the kernel writes it, at clone and at exit.
        let tid_there = unsafe { std::ptr::read_volatile(tid_addr) };
        if tid_there != rustix::thread::gettid().as_raw_nonzero().get() {
            return None;
        }
        let mut head: *mut libc::c_void = std::ptr::null_mut();
        let mut len: libc::size_t = 0;
        // SAFETY: get_robust_list(0, ...) stores this thread's robust list head
        // and its size into the two live locals given.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_get_robust_list,
                0,
                &mut head as *mut *mut libc::c_void,
                &mut len as *mut libc::size_t,
            )
        };
        if rc != 0 || head.is_null() {
            return None;
        }
        Some(SiblingFork {
            tid_addr: tid_addr as u64,
            robust_head: head as usize,
            robust_len: len,
        })
    }

    /// Forks a sibling (see [`SiblingFork`]) if, and only if, the process has
    /// a single thread (`Ok(Err(n))`: refused, it has `n`). An error such as
    /// `ENOSYS` (no `clone3`, or a seccomp filter) means: fork normally.
    pub(crate) fn fork(&self) -> io::Result<Result<SiblingForked, usize>> {
        if !never_threaded() {
            let n = thread_count()?;
            if n != 1 {
                return Ok(Err(n));
            }
        }
        let mut pidfd: libc::c_int = -1;
        let args = CloneArgs {
            flags: (libc::CLONE_PARENT
                | libc::CLONE_PIDFD
                | libc::CLONE_CHILD_SETTID
                | libc::CLONE_CHILD_CLEARTID) as u64,
            pidfd: &mut pidfd as *mut libc::c_int as u64,
            child_tid: self.tid_addr,
            // With CLONE_PARENT the kernel takes the caller's own exit signal
            // (SIGCHLD, to the common parent) and refuses any other.
            exit_signal: 0,
            ..CloneArgs::default()
        };
        // SAFETY: without CLONE_VM the child gets a copy of this process, as
        // with fork; the process has one thread (checked above), so no lock is
        // held by a thread missing in the child. `args` and `pidfd` are live
        // locals of the layout the kernel reads and writes.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match rc {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                // What glibc's `_Fork` does in a child: register the (empty,
                // since no robust mutex is held while forking) robust list.
                // SAFETY: the head is this thread's own robust list head in
                // glibc's thread descriptor, at the same address in this copy.
                unsafe { libc::syscall(libc::SYS_set_robust_list, self.robust_head, self.robust_len) };
                // What our own `pthread_atfork` handler does in a fork child.
                crate::sys::robust::forget_thread_cache();
                Ok(Ok(SiblingForked::Child))
            }
            pid => {
                // SAFETY: with CLONE_PIDFD the kernel stored a new descriptor
                // that nothing else owns.
                let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd) };
                let pid = u32::try_from(pid).map_err(|_| io::Error::other("clone3 returned a bad pid"))?;
                Ok(Ok(SiblingForked::Caller(pid, fd)))
            }
        }
    }
}

/// Ends the calling process at once with `code`, running no destructors and no
/// `atexit` handlers (what a forked child must do). Flushes nothing: callers flush.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and always sound to call.
    unsafe { libc::_exit(code) }
}

/// The calling process's pid.
pub(crate) fn current_pid() -> u32 {
    getpid().as_raw_nonzero().get().unsigned_abs()
}

/// The parent's pid as the kernel sees it (0 if there is none).
pub(crate) fn parent_pid() -> u32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get().unsigned_abs())
}

/// Converts a raw pid to rustix's non-zero `Pid`.
pub(crate) fn pid(raw: u32) -> io::Result<Pid> {
    i32::try_from(raw)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid pid"))
}

/// A pidfd for `raw` (a child, or any process visible to us).
pub(crate) fn open_pidfd(raw: u32) -> io::Result<OwnedFd> {
    Ok(pidfd_open(pid(raw)?, PidfdFlags::empty())?)
}

/// How a process ended, as `waitid` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// `exit(code)`.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

/// Reaps the child behind `pidfd` if it has ended (`block` waits for it).
/// `Ok(None)`: still running (only when `!block`).
pub(crate) fn reap(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<Ended>> {
    let mut opts = WaitIdOptions::EXITED;
    if !block {
        opts |= WaitIdOptions::NOHANG;
    }
    loop {
        match rustix::process::waitid(WaitId::PidFd(pidfd), opts) {
            Ok(None) => return Ok(None),
            Ok(Some(st)) => {
                if let Some(sig) = st.terminating_signal() {
                    return Ok(Some(Ended::Signal(sig)));
                }
                return Ok(Some(Ended::Code(st.exit_status().unwrap_or(0))));
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends `signal` through a pidfd: never hits a recycled pid.
/// A process that is already gone is not an error.
pub(crate) fn signal_pidfd(pidfd: BorrowedFd<'_>, signal: Signal) -> io::Result<()> {
    match pidfd_send_signal(pidfd, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// SIGKILLs and reaps our own child `pid` (one not yet reaped, so its pid
/// cannot have been reused): for a child forked but not usable.
pub(crate) fn kill_and_reap(pid: Pid) {
    let _ = rustix::process::kill_process(pid, Signal::KILL);
    loop {
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
            Err(rustix::io::Errno::INTR) => {}
            _ => return,
        }
    }
}

/// `SIGTERM`.
pub(crate) const SIGTERM: Signal = Signal::TERM;
/// `SIGKILL`.
pub(crate) const SIGKILL: Signal = Signal::KILL;

/// Asks the kernel to SIGKILL the calling process when the thread that created
/// it exits (`PR_SET_PDEATHSIG`), and closes the race with a parent that died
/// before the call by comparing the parent pid with `expected_parent`.
pub(crate) fn die_with_parent(expected_parent: u32) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    if parent_pid() != expected_parent {
        exit_now(128 + 9);
    }
    Ok(())
}

/// The number of threads of the calling process (from `/proc/self/stat`).
pub(crate) fn thread_count() -> io::Result<usize> {
    use std::io::Read;
    // One read into a stack buffer (the line is well under 1 KiB): this runs
    // before every `Fork` and every fork of the fork server.
    let mut buf = [0u8; 1024];
    let mut f = std::fs::File::open("/proc/self/stat")?;
    let mut len = 0;
    while len < buf.len() {
        match f.read(&mut buf[len..])? {
            0 => break,
            n => len += n,
        }
    }
    let stat = std::str::from_utf8(&buf[..len]).map_err(io::Error::other)?;
    // Field 20; the command name (field 2) may hold spaces, so count after ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("unexpected /proc/self/stat"))?;
    rest.split_whitespace()
        .nth(17)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("unexpected /proc/self/stat"))
}

/// Closes every descriptor from 3 up except `keep` (used by forked children so
/// that nothing of the parent's leaks into them).
pub(crate) fn close_fds_except(keep: &[i32]) {
    let mut keep: Vec<u32> = keep.iter().filter_map(|&k| u32::try_from(k).ok()).collect();
    keep.sort_unstable();
    let mut lo: u32 = 3;
    for k in keep.into_iter().filter(|&k| k >= 3) {
        if k > lo {
            close_range(lo, k - 1);
        }
        lo = k + 1;
    }
    close_range(lo, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes descriptors; callers run it in a freshly
    // forked child where nothing else uses the closed ones.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc != 0 {
        // Old kernels: fall back to closing what /proc says is open.
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let open: Vec<u32> = dir
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            for fd in open.into_iter().filter(|&fd| fd >= first && fd <= last) {
                // SAFETY: as above.
                unsafe { libc::close(fd as i32) };
            }
        }
    }
}

/// Starts a fresh copy of the current executable (`/proc/self/exe`, which names
/// the running binary even if its file was replaced), with `env` added, `fd`
/// inherited at the same number, and stdin at `/dev/null`. With `die_with_me`
/// the child gets `PR_SET_PDEATHSIG` = SIGKILL tied to the calling thread.
/// Returns the child's pid and a pidfd for it.
pub(crate) fn spawn_self(
    env: &[(&str, String)],
    fd: BorrowedFd<'_>,
    die_with_me: bool,
) -> io::Result<(u32, OwnedFd)> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let raw = fd.as_raw_fd();
    let parent = current_pid();
    // SAFETY: the hook runs in the forked child before exec and only makes
    // async-signal-safe syscalls (fcntl, prctl, getppid, _exit); it allocates
    // nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            if die_with_me {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() as u32 != parent {
                    libc::_exit(128 + 9);
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id();
    // Our own child, not yet reaped: its pid cannot have been reused.
    let pidfd = open_pidfd(pid)?;
    // `Child` has no Drop that waits or kills; the pidfd takes over.
    drop(child);
    Ok((pid, pidfd))
}

/// The raw number of a descriptor, for the environment of a spawned child.
pub(crate) fn raw(fd: impl AsFd) -> i32 {
    fd.as_fd().as_raw_fd()
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Writes all of `buf` to a pipe or file.
pub(crate) fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads into `buf` once (0 = EOF), retrying on EINTR. Blocks if the
/// descriptor is blocking and empty: callers poll first.
pub(crate) fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Takes ownership of a descriptor inherited from the parent under a number
/// passed in the environment, after checking that it is open.
pub(crate) fn inherited_fd(raw: i32) -> io::Result<OwnedFd> {
    if raw < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "inherited descriptor out of range",
        ));
    }
    // SAFETY: F_GETFD only queries the descriptor table.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked above) and was placed there by
    // our parent for us alone; this runs once, before main, so nothing else in
    // this process owns it.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    crate::sys::sock::set_cloexec(&fd, true)?;
    Ok(fd)
}

/// The address of libc's `recvmsg` (for [`prefault_code`]).
pub(crate) fn code_addr_recvmsg() -> usize {
    libc::recvmsg as *const () as usize
}

/// The address of libc's `_exit` (for [`prefault_code`]).
pub(crate) fn code_addr_exit() -> usize {
    libc::_exit as *const () as usize
}

/// Maps in, without running it, the code page at each address (and the
/// kernel's usual neighbourhood of it), as a first call would: for a process
/// that is about to call it and would rather not take the page fault then.
/// Errors are ignored (a kernel without `MADV_POPULATE_READ` faults later).
pub(crate) fn prefault_code(addrs: &[usize]) {
    const MADV_POPULATE_READ: libc::c_int = 22;
    for &a in addrs {
        let page = a & !4095;
        // SAFETY: MADV_POPULATE_READ only faults in the pages of an existing
        // mapping, as reading them would; it changes no memory. A page that
        // is not mapped gives an error, which is ignored.
        unsafe { libc::madvise(page as *mut libc::c_void, 4096, MADV_POPULATE_READ) };
    }
}
