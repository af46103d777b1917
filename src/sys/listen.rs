//! Listening and connecting stream sockets: Unix paths and TCP.
//!
//! No `unsafe`: std's socket types create the descriptors (close-on-exec), and
//! they are handed upwards as `OwnedFd`.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use rustix::event::PollFlags;

use crate::deadline::Deadline;
use crate::sys::sock;

/// A bound, listening socket.
#[derive(Debug)]
pub(crate) enum ListenSocket {
    /// A Unix socket bound to a path (unlinked when this is dropped).
    Unix(UnixListener, PathBuf),
    /// A TCP socket.
    Tcp(TcpListener),
}

impl ListenSocket {
    /// Binds a Unix stream socket at `path`. A path that exists already (a live
    /// listener or a stale socket file) is `AddrInUse`.
    pub(crate) fn bind_unix(path: &Path) -> io::Result<ListenSocket> {
        let l = UnixListener::bind(path)?;
        l.set_nonblocking(true)?;
        Ok(ListenSocket::Unix(l, path.to_path_buf()))
    }

    /// Binds a TCP socket at `addr` (port 0 picks a free port).
    pub(crate) fn bind_tcp(addr: SocketAddr) -> io::Result<ListenSocket> {
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(ListenSocket::Tcp(l))
    }

    /// The bound TCP address, if this is a TCP listener.
    pub(crate) fn tcp_addr(&self) -> Option<io::Result<SocketAddr>> {
        match self {
            ListenSocket::Tcp(l) => Some(l.local_addr()),
            ListenSocket::Unix(..) => None,
        }
    }

    /// The listening descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            ListenSocket::Unix(l, _) => l.as_fd(),
            ListenSocket::Tcp(l) => l.as_fd(),
        }
    }

    /// Accepts one connection, waiting until `deadline` (`TimedOut` after it).
    /// The accepted socket is blocking and close-on-exec; TCP sockets get
    /// `TCP_NODELAY`.
    pub(crate) fn accept(&self, deadline: Deadline) -> io::Result<OwnedFd> {
        loop {
            let r = match self {
                ListenSocket::Unix(l, _) => l.accept().map(|(s, _)| OwnedFd::from(s)),
                ListenSocket::Tcp(l) => l.accept().and_then(|(s, _)| {
                    s.set_nodelay(true)?;
                    Ok(OwnedFd::from(s))
                }),
            };
            match r {
                Ok(fd) => return Ok(fd),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !sock::poll_one(self.fd(), PollFlags::IN, deadline)? {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "accept timed out"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The client went away between the kernel queueing it and us accepting it.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for ListenSocket {
    fn drop(&mut self) {
        if let ListenSocket::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Connects a Unix stream socket to `path`.
pub(crate) fn connect_unix(path: &Path) -> io::Result<OwnedFd> {
    Ok(UnixStream::connect(path)?.into())
}

/// Connects a TCP socket to `addr` within `deadline`, with `TCP_NODELAY`.
pub(crate) fn connect_tcp(addr: SocketAddr, deadline: Deadline) -> io::Result<OwnedFd> {
    let s = match deadline.remaining() {
        None => TcpStream::connect(addr)?,
        Some(d) if d.is_zero() => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        Some(d) => TcpStream::connect_timeout(&addr, d)?,
    };
    s.set_nodelay(true)?;
    Ok(s.into())
}
