//! The fork server: a spawned, single-threaded copy of the program that forks
//! children on request, so that the default start method has fork's speed
//! without forking a multi-threaded parent (DESIGN.md, decision 1).
//!
//! The server forks each non-daemon child *ahead* of its use, as a sibling
//! (`CLONE_PARENT`): its parent is the program itself, which reaps it like a
//! `Spawn` child, through a pidfd. The warm child waits, with every inherited
//! descriptor but its socket closed, for the bootstrap of the process it is
//! to become. Starting a child therefore costs the program no round trip to
//! the server and no fork, and its exit no detour through the server.
//!
//! Protocol on the control socket:
//! - parent -> server: [`Request::Take`] when the parent wants a warm child
//!   (once at start, then each time it has taken the warm one);
//!   [`Request::Daemon`] for a daemon child, which the server forks at once
//!   as its own child (so that `PR_SET_PDEATHSIG` ties it to the server).
//!   Each request carries one descriptor: the child's end of the socketpair
//!   that the parent made for the child (the parent keeps the other end).
//! - server -> parent: for each request, in order, an [`Offer`] of a child:
//!   its pid and, as descriptors in this order, a pidfd for it and, for a
//!   child of the server (`served`), the read end of its status pipe; or
//!   why the fork failed.
//!
//! The parent makes the sockets so that none is ever in flight for long: a
//! unix socket in flight (sent, not yet received) makes the kernel run its
//! descriptor garbage collector on a worker thread at every socket close in
//! the system, two per child otherwise.
//!
//! When the server has reaped one of its own children it writes the exit
//! status (8 bytes) to the child's status pipe and closes it. The server exits
//! when the parent's end of the control socket closes (the parent exited or
//! died); its daemon children then die with it, a warm child that was never
//! taken sees its socket close and exits, and the other children run on and
//! are adopted by init.
//!
//! Where the kernel cannot fork a sibling (no `clone3`, no
//! `PR_GET_TID_ADDRESS`), every child is the server's own (`served`).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rustix::event::PollFlags;
use serde::{Deserialize, Serialize};

use crate::codec::stream::{write_frame, FrameReader};
use crate::codec::{self};
use crate::deadline::Deadline;
use crate::process::bootstrap::{rehearsal_sample, served_child_main, StartReader, ENV_FORKSERVER};
use crate::process::child::status_bytes;
use crate::sys::proc::{self, Forked, SiblingFork, SiblingForked};
use crate::sys::sock;

/// A child forked for the parent (see the module's protocol).
#[derive(Debug, Serialize, Deserialize)]
enum Offer {
    Ready { pid: u32, served: bool },
    Failed(String),
}

/// What the parent asks of the server (with the child's socket as the
/// frame's one descriptor).
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Fork the next warm child and offer it.
    Take,
    /// Fork a daemon child now and offer it.
    Daemon,
}

/// A child from the fork server, as the parent receives it.
pub(crate) struct ServedChild {
    pub(crate) pid: u32,
    pub(crate) pidfd: OwnedFd,
    /// The parent's end of the child's socket: the bootstrap goes here.
    pub(crate) sock: OwnedFd,
    /// For a child of the server: readable when the server has reaped it,
    /// with its exit status. `None`: the child is the caller's own.
    pub(crate) status: Option<OwnedFd>,
}

const MAX_CONTROL: u64 = 4096;
/// How long the parent waits for the server to offer a child.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

struct Server {
    sock: OwnedFd,
    reader: FrameReader,
    pidfd: OwnedFd,
    /// The warm offer, once read.
    warm: Option<ServedChild>,
    /// Our ends of the sockets of the children asked for and not offered
    /// yet, in the order of the requests.
    pending: VecDeque<OwnedFd>,
    /// A request could not be sent: replace the server before its next use.
    broken: bool,
}

/// `child` once `start` has written its bootstrap, or it with the error.
fn started(
    child: ServedChild,
    start: &mut impl FnMut(BorrowedFd<'_>) -> io::Result<()>,
) -> Result<ServedChild, (ServedChild, io::Error)> {
    match start(child.sock.as_fd()) {
        Ok(()) => Ok(child),
        Err(e) => Err((child, e)),
    }
}

/// True if a write failed because the child's end of its socket is closed.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// A new child whose bootstrap could not be written: one that died at once
/// is returned (`join` reports how); otherwise it is discarded.
fn dead_at_once(child: ServedChild, e: io::Error) -> io::Result<ServedChild> {
    if is_gone(&e) {
        Ok(child)
    } else {
        discard(&child);
        Err(e)
    }
}

/// Kills a child that will not be used, and reaps it if it is ours (the
/// server reaps its own).
fn discard(child: &ServedChild) {
    let _ = proc::signal_pidfd(child.pidfd.as_fd(), proc::SIGKILL);
    if child.status.is_none() {
        let _ = proc::reap(child.pidfd.as_fd(), true);
    }
}

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

impl Server {
    fn start() -> io::Result<Server> {
        let (ours, theirs) = sock::socketpair_stream()?;
        let (_pid, pidfd) = proc::spawn_self(
            &[(ENV_FORKSERVER, proc::raw(&theirs).to_string())],
            theirs.as_fd(),
            false,
        )?;
        drop(theirs);
        let mut server = Server {
            sock: ours,
            reader: FrameReader::new(),
            pidfd,
            warm: None,
            pending: VecDeque::new(),
            broken: false,
        };
        // The first warm child, forked while the caller goes on.
        if let Err(e) = server.request(Request::Take) {
            server.kill();
            return Err(e);
        }
        Ok(server)
    }

    /// The next offer (a warm one is usually already in the socket's buffer).
    fn read_offer(&mut self) -> io::Result<Result<ServedChild, String>> {
        let deadline = Deadline::after(REPLY_TIMEOUT);
        let frame = self
            .reader
            .read(self.sock.as_fd(), MAX_CONTROL, deadline)
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    format!("the fork server did not answer: {e:?}"),
                )
            })?;
        let offer = codec::decode_value::<Offer>(&frame.payload, Vec::new()).map_err(io::Error::other)?;
        let sock = self
            .pending
            .pop_front()
            .ok_or_else(|| io::Error::other("the fork server offered a child that was not asked for"))?;
        let n = frame.fds.len();
        let mut fds = frame.fds.into_iter();
        match (offer, fds.next(), fds.next()) {
            (Offer::Failed(why), ..) => Ok(Err(why)),
            (Offer::Ready { pid, served }, Some(pidfd), status) if n == 1 + usize::from(served) => {
                Ok(Ok(ServedChild {
                    pid,
                    pidfd,
                    sock,
                    status,
                }))
            }
            (Offer::Ready { .. }, ..) => Err(io::Error::other(format!(
                "the fork server offered a child with {n} descriptors"
            ))),
        }
    }

    /// Asks for a child, with a new socket for it.
    fn request(&mut self, req: Request) -> io::Result<()> {
        let (ours, theirs) = sock::socketpair_stream()?;
        let mut out = codec::encode(&req, false).map_err(io::Error::other)?;
        out.header = codec::header(codec::Kind::Value, out.payload.len() as u64, 1);
        out.fds = vec![theirs];
        write_frame(self.sock.as_fd(), &out, Deadline::after(REPLY_TIMEOUT))?;
        self.pending.push_back(ours);
        Ok(())
    }

    /// Takes the warm offer, or for a daemon a child of the server, starts
    /// it with `start` (which writes its bootstrap), and then asks for the
    /// next warm one, so that the child runs while the server forks. A
    /// failed fork is retried once, so that an old failure is not reported
    /// as today's, and so is a warm child found dead (killed while it
    /// waited). The outer error is the server's, the inner one `start`'s.
    fn take(
        &mut self,
        daemon: bool,
        start: &mut impl FnMut(BorrowedFd<'_>) -> io::Result<()>,
    ) -> io::Result<io::Result<ServedChild>> {
        let mut failed = None;
        for _ in 0..3 {
            // Kept in `self` until handed out, so that `kill` reaps it if
            // the server fails meanwhile.
            let warm = match self.warm.take() {
                Some(w) => self.warm.insert(w),
                None => {
                    let offer = self.read_offer()?;
                    match offer {
                        Ok(w) => self.warm.insert(w),
                        Err(why) => {
                            self.request(Request::Take)?;
                            failed = Some(why);
                            continue;
                        }
                    }
                }
            };
            if daemon && warm.status.is_none() {
                // A sibling cannot be tied to the server: ask for a child of the server.
                self.request(Request::Daemon)?;
                match self.read_offer()? {
                    // A new child that died at once: `join` reports how.
                    Ok(child) => {
                        return Ok(started(child, start).or_else(|(child, e)| dead_at_once(child, e)))
                    }
                    Err(why) => failed = Some(why),
                }
            } else {
                let child = self
                    .warm
                    .take()
                    .ok_or_else(|| io::Error::other("internal: no warm child"))?;
                let started = started(child, start);
                if let Err((child, e)) = &started {
                    if is_gone(e) {
                        // Killed while it waited: reap it, and take the next.
                        discard(child);
                        self.request(Request::Take)?;
                        failed = Some(format!("a child forked ahead had died: {e}"));
                        continue;
                    }
                }
                if self.request(Request::Take).is_err() {
                    // The child is fine; the server is replaced next time.
                    self.broken = true;
                }
                return Ok(started.map_err(|(child, e)| {
                    discard(&child);
                    e
                }));
            }
        }
        Err(io::Error::other(format!(
            "the fork server could not fork: {}",
            failed.unwrap_or_default()
        )))
    }

    /// Stops a server that misbehaved, and reaps it and its untaken warm
    /// child (ours, if a sibling).
    fn kill(self) {
        let _ = proc::signal_pidfd(self.pidfd.as_fd(), proc::SIGKILL);
        let _ = proc::reap(self.pidfd.as_fd(), true);
        if let Some(w) = self.warm {
            let _ = proc::signal_pidfd(w.pidfd.as_fd(), proc::SIGKILL);
            if w.status.is_none() {
                let _ = proc::reap(w.pidfd.as_fd(), true);
            }
        }
    }
}

/// Takes a child from the fork server (starting the server on first use, and
/// once more if it has died) and starts it: `start` writes its bootstrap to
/// the child's socket. A daemon child is always the server's own.
pub(crate) fn take_child(
    daemon: bool,
    mut start: impl FnMut(BorrowedFd<'_>) -> io::Result<()>,
) -> io::Result<ServedChild> {
    let mut guard = SERVER.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.as_ref().is_some_and(|s| s.broken) {
        if let Some(s) = guard.take() {
            s.kill();
        }
    }
    let mut last_err = None;
    for _ in 0..2 {
        if guard.is_none() {
            *guard = Some(Server::start()?);
        }
        let Some(server) = guard.as_mut() else { continue };
        let result = server.take(daemon, &mut start);
        match result {
            Ok(child) => return child,
            Err(e) => {
                // A dead or confused server: replace it and try once more.
                if let Some(s) = guard.take() {
                    s.kill();
                }
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("the fork server could not be started")))
}

/// Forgets the fork server connection without touching the server (in a
/// forked child, whose parent still uses it).
pub(crate) fn forget_after_fork() {
    // Closes our copies of the descriptors; the server is not signalled, and
    // the warm child is not ours to reap.
    drop(SERVER.lock().unwrap_or_else(PoisonError::into_inner).take());
}

/// A child of the server that has not been reaped yet.
struct Served {
    pidfd: OwnedFd,
    status: OwnedFd,
}

/// The fork server's state.
struct State {
    me: u32,
    /// How to fork siblings; `None` once that has proved impossible.
    sibling: Option<SiblingFork>,
    children: Vec<Served>,
    /// What a child rehearses while it waits (see `bootstrap::rehearse`).
    sample: Vec<u8>,
}

/// The fork server's main loop. Runs before `main` in a re-executed copy of
/// the program, single-threaded. Never returns.
pub(crate) fn serve(control: OwnedFd) -> ! {
    // Read the executable's mappings once here, so that every forked child
    // inherits them instead of parsing /proc/self/maps again.
    let _ = crate::sys::image::Image::get();
    // Likewise the standard streams, which every child flushes as it exits,
    // and the codec's per-thread descriptor lists, which every child uses
    // (the first use of one registers its destructor: a few page faults).
    let _ = (std::io::stdout(), std::io::stderr());
    let _ = codec::encode(&(), true);
    let _ = codec::decode_value::<()>(&[], Vec::new());
    let mut st = State {
        me: proc::current_pid(),
        sibling: SiblingFork::prepare(),
        children: Vec::new(),
        sample: rehearsal_sample(),
    };
    let mut reader = StartReader::default();
    loop {
        let ready = {
            let mut fds = vec![control.as_fd()];
            fds.extend(st.children.iter().map(|c| c.pidfd.as_fd()));
            // A request already buffered is served at once.
            let wait = if reader.has_buffered() {
                Deadline::after(Duration::ZERO)
            } else {
                Deadline::NEVER
            };
            sock::poll_many(&fds, PollFlags::IN, wait).unwrap_or_default()
        };
        // Children first (indices shift by one for the control socket).
        for i in ready.iter().rev().filter(|&&i| i > 0).map(|&i| i - 1) {
            if let Ok(Some(ended)) = proc::reap(st.children[i].pidfd.as_fd(), false) {
                let c = st.children.swap_remove(i);
                let _ = proc::write_all(c.status.as_fd(), &status_bytes(ended));
            }
        }
        if !ready.contains(&0) && !reader.has_buffered() {
            continue;
        }
        let Some(frame) = reader.frame(control.as_fd(), MAX_CONTROL, Deadline::after(REPLY_TIMEOUT)) else {
            // The parent is gone (or talks nonsense): stop. Daemon children die
            // with us; the others run on and are adopted by init.
            proc::exit_now(0)
        };
        let mut fds = frame.fds;
        let (Some(child_end), true) = (fds.pop(), fds.is_empty()) else {
            proc::exit_now(0)
        };
        match codec::decode_value::<Request>(&frame.payload, Vec::new()) {
            Ok(Request::Take) => offer(&mut st, &control, child_end, false),
            Ok(Request::Daemon) => offer(&mut st, &control, child_end, true),
            Err(_) => proc::exit_now(0),
        }
    }
}

/// Forks a child (a sibling unless `daemon` or impossible) on `child_end`
/// and offers it to the parent. Exits if the parent is gone.
fn offer(st: &mut State, control: &OwnedFd, child_end: OwnedFd, daemon: bool) {
    let (offer, fds) = match fork_waiting(st, child_end, daemon) {
        Ok((pid, fds)) => (
            Offer::Ready {
                pid,
                served: fds.len() == 2,
            },
            fds,
        ),
        Err(e) => (Offer::Failed(e.to_string()), Vec::new()),
    };
    // The descriptors travel as they are (no duplicates), then close here.
    let sent = codec::encode(&offer, false)
        .map(|mut out| {
            out.header = codec::header(codec::Kind::Value, out.payload.len() as u64, fds.len());
            out.fds = fds;
            out
        })
        .map_err(io::Error::other)
        .and_then(|out| write_frame(control.as_fd(), &out, Deadline::after(REPLY_TIMEOUT)));
    if sent.is_err() {
        proc::exit_now(0);
    }
}

/// Forks a child that waits for its bootstrap. Returns its pid and the
/// descriptors to offer (see [`Offer`]).
///
/// A sibling is the parent's child from the moment it exists: if the server
/// were killed between this fork and the offer, the parent would never learn
/// of it, and it would stay a zombie of the parent once it saw its socket
/// close. The window is a few system calls long.
fn fork_waiting(st: &mut State, child_end: OwnedFd, daemon: bool) -> io::Result<(u32, Vec<OwnedFd>)> {
    if !daemon {
        if let Some(sibling) = st.sibling {
            match sibling.fork() {
                Ok(Ok(SiblingForked::Child)) => {
                    proc::close_fds_except(&[proc::raw(&child_end)]);
                    served_child_main(child_end, None, &st.sample)
                }
                Ok(Ok(SiblingForked::Caller(pid, pidfd))) => return Ok((pid, vec![pidfd])),
                // Not possible here: fork children of our own from now on.
                Ok(Err(_)) | Err(_) => st.sibling = None,
            }
        }
    }
    let (status_r, status_w) = proc::pipe()?;
    // The fork server has a single thread, so this never refuses.
    let forked = proc::fork_single_threaded()?
        .map_err(|n| io::Error::other(format!("the fork server has {n} threads")))?;
    match forked {
        Forked::Child => {
            proc::close_fds_except(&[proc::raw(&child_end)]);
            // Closed just above with the rest of the server's descriptors.
            std::mem::forget((status_r, status_w));
            served_child_main(child_end, Some(st.me), &st.sample)
        }
        Forked::Parent(pid) => {
            let raw = pid.as_raw_nonzero().get().unsigned_abs();
            let pidfds = proc::open_pidfd(raw).and_then(|p| Ok((p.try_clone()?, p)));
            let (ours, theirs) = match pidfds {
                Ok(p) => p,
                Err(e) => {
                    // Our own unreaped child: its pid is still its own.
                    proc::kill_and_reap(pid);
                    return Err(e);
                }
            };
            st.children.push(Served {
                pidfd: ours,
                status: status_w,
            });
            Ok((raw, vec![theirs, status_r]))
        }
    }
}
