//! The parent's record of one child: how to signal it and learn how it ended.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, PoisonError};

use rustix::event::PollFlags;

use crate::deadline::Deadline;
use crate::process::error::ExitStatus;
use crate::sys::proc::{self, Ended};
use crate::sys::sock;

/// Where the exit status comes from.
#[derive(Debug)]
pub(crate) enum ExitSource {
    /// Our own child (Spawn, Fork, a non-daemon ForkServer child): reaped through its pidfd.
    Direct,
    /// A fork server's child: the server reaps it and writes the status to this pipe.
    Served { status: OwnedFd },
}

/// One child, shared by its `Process` handle and the registry of children.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) pid: u32,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    /// Refers to exactly this process: signals never hit a recycled pid.
    pidfd: OwnedFd,
    source: ExitSource,
    status: Mutex<Option<ExitStatus>>,
}

/// Encodes a status for the fork server's status pipe.
pub(crate) fn status_bytes(e: Ended) -> [u8; 8] {
    let (tag, v) = match e {
        Ended::Code(c) => (0i32, c),
        Ended::Signal(s) => (1i32, s),
    };
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&tag.to_le_bytes());
    b[4..].copy_from_slice(&v.to_le_bytes());
    b
}

fn from_ended(e: Ended) -> ExitStatus {
    match e {
        Ended::Code(c) => ExitStatus::from_code(c),
        Ended::Signal(s) => ExitStatus::from_signal(s),
    }
}

impl Child {
    pub(crate) fn new(pid: u32, name: String, daemon: bool, pidfd: OwnedFd, source: ExitSource) -> Child {
        Child {
            pid,
            name,
            daemon,
            pidfd,
            source,
            status: Mutex::new(None),
        }
    }

    /// Readable once the child has ended (and, for a served child, once its
    /// status is known): what `wait` and `poll` watch.
    pub(crate) fn ready_fd(&self) -> BorrowedFd<'_> {
        match &self.source {
            ExitSource::Direct => self.pidfd.as_fd(),
            ExitSource::Served { status } => status.as_fd(),
        }
    }

    /// Readable once the child has ended (its pidfd), status known or not.
    pub(crate) fn exit_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The exit status if it is already known here (no system call).
    pub(crate) fn known_status(&self) -> Option<ExitStatus> {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True once the child has ended (its pidfd is readable), even if a fork
    /// server has not told us its status yet. No waiting.
    pub(crate) fn has_exited(&self) -> bool {
        self.known_status().is_some()
            || sock::poll_one(
                self.pidfd.as_fd(),
                PollFlags::IN,
                Deadline::after(std::time::Duration::ZERO),
            )
            .unwrap_or(false)
    }

    /// The exit status: at once if known, else without waiting for a running
    /// child, and for an ended one as long as its fork server takes to report.
    pub(crate) fn status_if_exited(&self) -> io::Result<Option<ExitStatus>> {
        match self.try_status()? {
            Some(s) => Ok(Some(s)),
            None if self.has_exited() => self.wait_status(Deadline::after(std::time::Duration::from_secs(5))),
            None => Ok(None),
        }
    }

    /// The exit status if the child has ended, without waiting.
    pub(crate) fn try_status(&self) -> io::Result<Option<ExitStatus>> {
        self.wait_status(Deadline::after(std::time::Duration::ZERO))
    }

    /// Waits until the child has ended or `deadline` passes (`Ok(None)`).
    pub(crate) fn wait_status(&self, deadline: Deadline) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = *self.status.lock().unwrap_or_else(PoisonError::into_inner) {
            return Ok(Some(s));
        }
        // Wait without holding the lock, so that `is_alive` from another
        // thread never waits behind a blocking `join`.
        if !sock::poll_one(self.ready_fd(), PollFlags::IN, deadline)? {
            return Ok(None);
        }
        let mut st = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = *st {
            return Ok(Some(s));
        }
        let status = match &self.source {
            ExitSource::Direct => match proc::reap(self.pidfd.as_fd(), false) {
                Ok(Some(e)) => from_ended(e),
                Ok(None) => return Ok(None),
                // Reaped by someone else: the kernel, in a program that ignores
                // SIGCHLD, or the program's own wait for any child. The child
                // has ended (its pidfd is readable); its status is lost.
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => ExitStatus::unknown(),
                Err(e) => return Err(e),
            },
            ExitSource::Served { status } => {
                let mut b = [0u8; 8];
                let mut got = 0;
                while got < b.len() {
                    let n = proc::read_some(status.as_fd(), &mut b[got..])?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                if got < b.len() {
                    // The fork server died before it could tell us. If the child
                    // is gone too, say so; the status itself is lost.
                    if !sock::poll_one(self.pidfd.as_fd(), PollFlags::IN, deadline)? {
                        return Ok(None);
                    }
                    return Err(io::Error::other(
                        "the fork server died, so the child's exit status is unknown",
                    ));
                }
                let tag = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                let v = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                from_ended(if tag == 0 {
                    Ended::Code(v)
                } else {
                    Ended::Signal(v)
                })
            }
        };
        *st = Some(status);
        Ok(Some(status))
    }

    /// Sends `signal` unless the child is known to have ended.
    pub(crate) fn signal(&self, signal: rustix::process::Signal) -> io::Result<()> {
        if self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
        {
            return Ok(());
        }
        proc::signal_pidfd(self.pidfd.as_fd(), signal)
    }
}
