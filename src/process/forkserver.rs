//! The fork server: a spawned, single-threaded copy of the program that forks
//! children on request, so that the default start method has fork's speed
//! without forking a multi-threaded parent (DESIGN.md, decision 1).
//!
//! The server forks each child *ahead* of its use: a warm child waits, with
//! every inherited descriptor but its socket closed, for the bootstrap of the
//! process it is to become. Protocol on the control socket:
//! - server -> parent: an [`Offer`] of the next warm child: its pid, a pidfd,
//!   the parent's end of its socketpair and the read end of its status pipe
//!   (or why the fork failed). One offer is outstanding at a time; the server
//!   sends the first as soon as it starts.
//! - parent -> server: [`Take`] when the parent has taken the offer, so that
//!   the server forks the next child. The parent then writes the bootstrap to
//!   the child's socket itself: starting a child costs no round trip to the
//!   server and no fork on the caller's path.
//!
//! When the server has reaped a child it writes the exit status (8 bytes) to
//! the child's status pipe and closes it. The server exits when the parent's
//! end of the control socket closes (the parent exited or died); its daemon
//! children then die with it (`PR_SET_PDEATHSIG`), a warm child that was never
//! taken sees its socket close and exits, and the other children run on and
//! are adopted by init.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rustix::event::PollFlags;
use serde::{Deserialize, Serialize};

use crate::codec::stream::{write_frame, FrameReader};
use crate::codec::{self};
use crate::deadline::Deadline;
use crate::process::bootstrap::{served_child_main, ENV_FORKSERVER};
use crate::process::child::status_bytes;
use crate::sys::proc::{self, Forked};
use crate::sys::sock;

/// A child forked ahead, offered to the parent. A `Ready` frame carries three
/// descriptors, in this order: a pidfd for the child, the parent's end of the
/// child's socket, and the read end of its status pipe.
#[derive(Debug, Serialize, Deserialize)]
enum Offer {
    Ready { pid: u32 },
    Failed(String),
}

/// The parent took the outstanding offer: fork the next child.
#[derive(Debug, Serialize, Deserialize)]
struct Take;

/// A child from the fork server, as the parent receives it.
pub(crate) struct ServedChild {
    pub(crate) pid: u32,
    pub(crate) pidfd: OwnedFd,
    /// The parent's end of the child's socket: the bootstrap goes here.
    pub(crate) sock: OwnedFd,
    /// Readable when the server has reaped the child: its exit status.
    pub(crate) status: OwnedFd,
}

const MAX_CONTROL: u64 = 4096;
/// How long the parent waits for the server to offer a child.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

struct Server {
    sock: OwnedFd,
    reader: FrameReader,
    pidfd: OwnedFd,
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
        Ok(Server {
            sock: ours,
            reader: FrameReader::new(),
            pidfd,
        })
    }

    /// The outstanding offer (usually already in the socket's buffer).
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
        match (offer, <[OwnedFd; 3]>::try_from(frame.fds)) {
            (Offer::Ready { pid }, Ok([pidfd, sock, status])) => Ok(Ok(ServedChild {
                pid,
                pidfd,
                sock,
                status,
            })),
            (Offer::Failed(why), Ok(_) | Err(_)) => Ok(Err(why)),
            (Offer::Ready { .. }, Err(fds)) => Err(io::Error::other(format!(
                "the fork server offered a child with {} descriptors instead of 3",
                fds.len()
            ))),
        }
    }

    fn send_take(&mut self) -> io::Result<()> {
        let out = codec::encode(&Take, false).map_err(io::Error::other)?;
        write_frame(self.sock.as_fd(), &out, Deadline::after(REPLY_TIMEOUT))
    }

    /// Takes the outstanding offer and asks for the next one. A failed fork
    /// is retried once, so that an old failure is not reported as today's.
    fn take(&mut self) -> io::Result<ServedChild> {
        let mut failed = None;
        for _ in 0..2 {
            let offer = self.read_offer()?;
            self.send_take()?;
            match offer {
                Ok(child) => return Ok(child),
                Err(why) => failed = Some(why),
            }
        }
        Err(io::Error::other(format!(
            "the fork server could not fork: {}",
            failed.unwrap_or_default()
        )))
    }

    /// Stops a server that misbehaved, and reaps it.
    fn kill(self) {
        let _ = proc::signal_pidfd(self.pidfd.as_fd(), proc::SIGKILL);
        let _ = proc::reap(self.pidfd.as_fd(), true);
    }
}

/// Takes a child from the fork server (starting the server on first use, and
/// once more if it has died). The child waits for its bootstrap on the
/// returned socket.
pub(crate) fn take_child() -> io::Result<ServedChild> {
    let mut guard = SERVER.lock().unwrap_or_else(PoisonError::into_inner);
    let mut last_err = None;
    for _ in 0..2 {
        if guard.is_none() {
            *guard = Some(Server::start()?);
        }
        let Some(server) = guard.as_mut() else { continue };
        match server.take() {
            Ok(child) => return Ok(child),
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
    // Closes our copies of the descriptors; the server is not signalled.
    drop(SERVER.lock().unwrap_or_else(PoisonError::into_inner).take());
}

/// A child of the server that has not been reaped yet.
struct Served {
    pidfd: OwnedFd,
    status: OwnedFd,
}

/// The fork server's main loop. Runs before `main` in a re-executed copy of
/// the program, single-threaded. Never returns.
pub(crate) fn serve(control: OwnedFd) -> ! {
    let me = proc::current_pid();
    // Read the executable's mappings once here, so that every forked child
    // inherits them instead of parsing /proc/self/maps again.
    let _ = crate::sys::image::Image::get();
    // Likewise the standard streams, which every child flushes as it exits.
    let _ = (std::io::stdout().lock(), std::io::stderr().lock());
    let mut reader = FrameReader::new();
    let mut children: Vec<Served> = Vec::new();
    offer_next(me, &control, &mut children);
    loop {
        let ready = {
            let mut fds = vec![control.as_fd()];
            fds.extend(children.iter().map(|c| c.pidfd.as_fd()));
            sock::poll_many(&fds, PollFlags::IN, Deadline::NEVER).unwrap_or_default()
        };
        // Children first (indices shift by one for the control socket).
        for i in ready.iter().rev().filter(|&&i| i > 0).map(|&i| i - 1) {
            if let Ok(Some(ended)) = proc::reap(children[i].pidfd.as_fd(), false) {
                let c = children.swap_remove(i);
                let _ = proc::write_all(c.status.as_fd(), &status_bytes(ended));
            }
        }
        if !ready.contains(&0) {
            continue;
        }
        let frame = match reader.read(control.as_fd(), MAX_CONTROL, Deadline::after(REPLY_TIMEOUT)) {
            Ok(f) => f,
            // The parent is gone (or talks nonsense): stop. Daemon children die
            // with us; the others run on and are adopted by init.
            Err(_) => proc::exit_now(0),
        };
        if codec::decode_value::<Take>(&frame.payload, frame.fds).is_err() {
            proc::exit_now(0)
        }
        offer_next(me, &control, &mut children);
    }
}

/// Forks the next child and offers it to the parent. Exits if the parent is gone.
fn offer_next(me: u32, control: &OwnedFd, children: &mut Vec<Served>) {
    let (offer, fds) = match fork_warm(me) {
        Ok((served, pid, fds)) => {
            children.push(served);
            (Offer::Ready { pid }, fds)
        }
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

/// Forks a child that waits for its bootstrap. Returns the server's record of
/// it, its pid, and the descriptors to offer the parent (see [`Offer`]).
fn fork_warm(server_pid: u32) -> io::Result<(Served, u32, Vec<OwnedFd>)> {
    let (parent_end, child_end) = sock::socketpair_stream()?;
    let (status_r, status_w) = proc::pipe()?;
    // The fork server has a single thread, so this never refuses.
    let forked = proc::fork_single_threaded()?
        .map_err(|n| io::Error::other(format!("the fork server has {n} threads")))?;
    match forked {
        Forked::Child => {
            proc::close_fds_except(&[proc::raw(&child_end)]);
            // Closed just above with the rest of the server's descriptors.
            std::mem::forget((parent_end, status_r, status_w));
            served_child_main(child_end, server_pid)
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
            let served = Served {
                pidfd: ours,
                status: status_w,
            };
            Ok((served, raw, vec![theirs, parent_end, status_r]))
        }
    }
}
