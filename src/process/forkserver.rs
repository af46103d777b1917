//! The fork server: a spawned, single-threaded copy of the program that forks
//! children on request, so that the default start method has fork's speed
//! without forking a multi-threaded parent (DESIGN.md, decision 1).
//!
//! Protocol on the control socket: the parent sends a [`Request`] with two
//! descriptors (the child's end of its socketpair, and the write end of a
//! status pipe); the server forks, answers with a [`Reply`] carrying a pidfd
//! for the child, and later, when it has reaped the child, writes the exit
//! status (8 bytes) to the status pipe and closes it. The server exits when
//! the parent's end of the control socket closes (the parent exited or
//! died); its daemon children then die with it (`PR_SET_PDEATHSIG`).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rustix::event::PollFlags;
use serde::{Deserialize, Serialize};

use crate::codec::handles::FdHandle;
use crate::codec::stream::{write_frame, FrameReader};
use crate::codec::{self};
use crate::deadline::Deadline;
use crate::process::bootstrap::{child_main, ENV_FORKSERVER};
use crate::process::child::status_bytes;
use crate::sys::proc::{self, Forked};
use crate::sys::sock;

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    daemon: bool,
    child_sock: FdHandle,
    status: FdHandle,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Started { pid: u32, pidfd: FdHandle },
    Failed(String),
}

const MAX_CONTROL: u64 = 4096;
/// How long the parent waits for the server to answer a request.
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

    fn send_request(&mut self, req: &Request) -> io::Result<()> {
        let out = codec::encode(req, true).map_err(io::Error::other)?;
        write_frame(self.sock.as_fd(), &out, Deadline::after(REPLY_TIMEOUT))
    }

    fn read_reply(&mut self) -> io::Result<(u32, OwnedFd)> {
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
        match codec::decode_value::<Reply>(&frame.payload, frame.fds).map_err(io::Error::other)? {
            Reply::Started { pid, pidfd } => Ok((pid, pidfd.0)),
            Reply::Failed(why) => Err(io::Error::other(format!("the fork server could not fork: {why}"))),
        }
    }
}

impl Server {
    /// Stops a server that misbehaved, and reaps it.
    fn kill(self) {
        let _ = proc::signal_pidfd(self.pidfd.as_fd(), proc::SIGKILL);
        let _ = proc::reap(self.pidfd.as_fd(), true);
    }
}

/// Starts a child through the fork server (starting the server on first use,
/// and once more if it has died). Returns the child's pid, a pidfd for it and
/// the read end of its status pipe.
///
/// `while_forking` runs once, after the request went out and before the
/// reply is read: the parent writes the child's bootstrap then, so that the
/// child finds it waiting (one round trip less).
pub(crate) fn start_child(
    daemon: bool,
    child_sock: OwnedFd,
    while_forking: impl FnOnce() -> io::Result<()>,
) -> io::Result<(u32, OwnedFd, OwnedFd)> {
    let mut while_forking = Some(while_forking);
    let (status_r, status_w) = proc::pipe()?;
    let req = Request {
        daemon,
        child_sock: FdHandle(child_sock),
        status: FdHandle(status_w),
    };
    let mut guard = SERVER.lock().unwrap_or_else(PoisonError::into_inner);
    let mut last_err = None;
    for _ in 0..2 {
        if guard.is_none() {
            *guard = Some(Server::start()?);
        }
        let Some(server) = guard.as_mut() else { continue };
        let r = server.send_request(&req).and_then(|()| {
            if let Some(f) = while_forking.take() {
                f()?;
            }
            server.read_reply()
        });
        match r {
            Ok((pid, pidfd)) => return Ok((pid, pidfd, status_r)),
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
    let mut reader = FrameReader::new();
    let mut children: Vec<Served> = Vec::new();
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
        let Ok(req) = codec::decode_value::<Request>(&frame.payload, frame.fds) else {
            proc::exit_now(0)
        };
        let reply = match fork_child(me, &req) {
            Ok((pid, pidfd)) => match pidfd.try_clone() {
                Ok(dup) => {
                    children.push(Served {
                        pidfd,
                        status: req.status.0,
                    });
                    Reply::Started {
                        pid,
                        pidfd: FdHandle(dup),
                    }
                }
                Err(e) => Reply::Failed(e.to_string()),
            },
            Err(e) => Reply::Failed(e.to_string()),
        };
        drop(req.child_sock);
        let sent = codec::encode(&reply, true)
            .map_err(io::Error::other)
            .and_then(|out| write_frame(control.as_fd(), &out, Deadline::after(REPLY_TIMEOUT)));
        if sent.is_err() {
            proc::exit_now(0);
        }
    }
}

fn fork_child(server_pid: u32, req: &Request) -> io::Result<(u32, OwnedFd)> {
    // The fork server has a single thread, so this never refuses.
    let forked = proc::fork_single_threaded()?
        .map_err(|n| io::Error::other(format!("the fork server has {n} threads")))?;
    match forked {
        Forked::Child => {
            let Ok(sock) = req.child_sock.0.try_clone() else {
                proc::exit_now(bootstrap_refused())
            };
            proc::close_fds_except(&[proc::raw(&sock)]);
            if req.daemon && proc::die_with_parent(server_pid).is_err() {
                proc::exit_now(bootstrap_refused());
            }
            child_main(sock)
        }
        Forked::Parent(pid) => {
            let raw = pid.as_raw_nonzero().get().unsigned_abs();
            Ok((raw, proc::open_pidfd(raw)?))
        }
    }
}

fn bootstrap_refused() -> i32 {
    crate::process::bootstrap::EXIT_REFUSED
}
