//! The loop run in each worker process: read jobs, acknowledge each one,
//! run it, send its results; exit on `SHUTDOWN` or when the pool goes away.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::handles::{deserialize_fd, serialize_fd};
use crate::codec::stream::{FrameReader, ReadError};
use crate::codec::DEFAULT_MAX_FRAME;
use crate::deadline::Deadline;
use crate::pool::protocol::TaskCtx;
use crate::pool::protocol::{self as proto, Cursor};
use crate::sys::image::Entry;
use crate::sys::sock;

/// The worker's end of its socketpair, travelling to the worker as a handle.
#[derive(Debug)]
pub(crate) struct WorkerSock(pub(crate) OwnedFd);

impl Serialize for WorkerSock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.0.as_fd(), s)
    }
}

impl<'de> Deserialize<'de> for WorkerSock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_fd(d).map(WorkerSock)
    }
}

/// An initializer: its entry offset and encoded argument.
pub(crate) type Init = Option<(i64, Vec<u8>)>;

/// What a worker process is started with.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub(crate) sock: WorkerSock,
    pub(crate) init: Init,
}

/// The function a worker process runs.
pub(crate) fn worker_main(args: WorkerArgs) {
    // An error here means the pool is gone or spoke nonsense: the process ends,
    // and the pool (if any) sees the exit.
    if let Err(e) = run(args.sock.0.as_fd(), &args.init) {
        eprintln!("multiproc pool worker {}: {e}", std::process::id());
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad message from the pool: {what}"),
    )
}

/// The worker loop over `sock` (also run on a thread by the unit tests).
pub(crate) fn run(sock: BorrowedFd<'_>, init: &Init) -> io::Result<()> {
    if let Some((offset, arg)) = init {
        let entry = proto::resolve(*offset)?;
        entry(&mut TaskCtx {
            payload: arg.clone(),
            at: 0,
            out: Vec::new(),
        });
    }
    let mut out = Vec::with_capacity(256);
    proto::push_simple(&mut out, proto::READY, None);
    let mut reader = FrameReader::new();
    let mut cached: Option<(i64, Entry)> = None;
    loop {
        // Results wait for the next acknowledgement when another job is
        // already buffered: one write per job.
        if !out.is_empty() && !reader.has_buffered() {
            sock::send_all(sock, &[&out], &[], Deadline::NEVER)?;
            out.clear();
            if out.capacity() > 4 << 20 {
                // Do not keep a huge result's buffer for the worker's lifetime.
                out.shrink_to(1 << 16);
            }
        }
        let frame = match reader.read(sock, DEFAULT_MAX_FRAME, Deadline::NEVER) {
            Ok(f) => f,
            Err(ReadError::Eof) => return Ok(()),
            Err(ReadError::TimedOut) => continue,
            Err(ReadError::Codec(e)) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(ReadError::Io(e)) => return Err(e),
        };
        let mut c = Cursor(&frame.payload);
        match c.u8() {
            Some(proto::JOB) => {
                let (Some(id), Some(offset)) = (c.u64(), c.i64()) else {
                    return Err(invalid("short job"));
                };
                let entry = match cached {
                    Some((o, e)) if o == offset => e,
                    _ => {
                        let e = proto::resolve(offset)?;
                        cached = Some((offset, e));
                        e
                    }
                };
                proto::push_simple(&mut out, proto::ACK, Some(id));
                sock::send_all(sock, &[&out], &[], Deadline::NEVER)?;
                out.clear();
                let start = proto::begin_frame(&mut out, proto::DONE);
                out.extend_from_slice(&id.to_le_bytes());
                let nanos_at = out.len();
                out.extend_from_slice(&0u64.to_le_bytes());
                let at = frame.payload.len() - c.0.len();
                let t = Instant::now();
                let mut ctx = TaskCtx {
                    payload: frame.payload,
                    at,
                    out: std::mem::take(&mut out),
                };
                entry(&mut ctx);
                out = ctx.out;
                let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
                out[nanos_at..nanos_at + 8].copy_from_slice(&nanos.to_le_bytes());
                proto::end_frame(&mut out, start);
            }
            Some(proto::SHUTDOWN) => {
                if !out.is_empty() {
                    sock::send_all(sock, &[&out], &[], Deadline::NEVER)?;
                }
                return Ok(());
            }
            _ => return Err(invalid("unknown message")),
        }
    }
}
