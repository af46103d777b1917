//! The child side: what a new process does before and instead of `main`.
//!
//! Protocol on the child's socket (frames, see `codec`):
//! - parent -> child: [`Bootstrap`] (postcard), then the arguments (one frame,
//!   with the descriptors of any handles inside);
//! - child -> parent: a [`Report`], then, after `Report::Returned`, the result
//!   frame (with its handles' descriptors).
//!
//! The parent learns the exit status separately (pidfd, or from the fork server).

use std::any::Any;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::stream::write_frames;
use crate::codec::{self, Frame, Outgoing, HEADER_LEN};
use crate::deadline::Deadline;
use crate::process::info::{self, Identity};
use crate::sys::image::{conjure_fn, entry_offset, Entry, Image};
use crate::sys::{proc, sock};

/// Environment marker: "you are a spawned child, your socket is fd N".
pub(crate) const ENV_CHILD: &str = "MULTIPROC_CHILD_FD";
/// Environment marker: "you are the fork server, your control socket is fd N".
pub(crate) const ENV_FORKSERVER: &str = "MULTIPROC_FORKSERVER_FD";

/// Exit code of a child whose function panicked (as Python's 1 for an exception).
pub(crate) const EXIT_PANICKED: i32 = 1;
/// Exit code of a child that could not start its function.
pub(crate) const EXIT_REFUSED: i32 = 3;

/// Largest bootstrap frame accepted (names are short).
const MAX_BOOTSTRAP: u64 = 1 << 20;

/// The first message to a child.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Bootstrap {
    pub(crate) build_id: u64,
    pub(crate) entry: i64,
    pub(crate) me: Identity,
    pub(crate) parent: Identity,
}

/// What the child says before exiting.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    /// The function returned; the result frame follows.
    Returned,
    /// The function panicked with this message.
    Panicked(String),
    /// The function was not run: wrong build, bad function, or undecodable arguments.
    Refused(String),
    /// The function returned, but its result could not be encoded.
    BadResult(String),
}

/// The context a type-erased [`Entry`] works in.
pub(crate) struct EntryCtx {
    pub(crate) args: Option<Frame>,
    pub(crate) out: Option<Result<Outgoing<'static>, Report>>,
}

/// The entry point of `F` for arguments `A` and result `R`.
pub(crate) fn entry_for<F, A, R>() -> Entry
where
    F: Fn(A) -> R + Copy + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    trampoline::<F, A, R>
}

/// The offset identifying `entry_for::<F, A, R>()` across processes.
pub(crate) fn entry_id<F, A, R>() -> i64
where
    F: Fn(A) -> R + Copy + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    entry_offset(entry_for::<F, A, R>())
}

fn trampoline<F, A, R>(ctx: &mut dyn Any)
where
    F: Fn(A) -> R + Copy + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    let Some(ctx) = ctx.downcast_mut::<EntryCtx>() else {
        return;
    };
    let Some(frame) = ctx.args.take() else { return };
    let args = match codec::decode::<A>(frame) {
        Ok(a) => a,
        Err(e) => {
            ctx.out = Some(Err(Report::Refused(format!("cannot decode the arguments: {e}"))));
            return;
        }
    };
    let f = conjure_fn::<F>();
    ctx.out = Some(run_and_encode(move || f(args)));
}

/// Runs `f`, catching a panic, and encodes what it returned (handles allowed).
pub(crate) fn run_and_encode<R: Serialize + Any>(f: impl FnOnce() -> R) -> Result<Outgoing<'static>, Report> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => codec::encode_fast(&r, true)
            .map(Outgoing::into_owned)
            .map_err(|e| Report::BadResult(e.to_string())),
        Err(payload) => Err(Report::Panicked(panic_message(payload.as_ref()))),
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// Called by the hook before `main`: becomes a child or the fork server when
/// the environment says so, and returns at once otherwise.
pub(crate) fn before_main() {
    if let Some(fd) = take_env_fd(ENV_CHILD) {
        match fd {
            Ok(sock) => child_main(sock),
            Err(e) => {
                eprintln!("multiproc: cannot start child: {e}");
                proc::exit_now(EXIT_REFUSED)
            }
        }
    }
    if let Some(fd) = take_env_fd(ENV_FORKSERVER) {
        match fd {
            Ok(sock) => crate::process::forkserver::serve(sock),
            Err(e) => {
                eprintln!("multiproc: cannot start the fork server: {e}");
                proc::exit_now(EXIT_REFUSED)
            }
        }
    }
}

fn take_env_fd(var: &str) -> Option<std::io::Result<OwnedFd>> {
    let v = std::env::var(var).ok()?;
    // Not inherited by this process's own children. Before main, one thread.
    std::env::remove_var(var);
    Some(
        v.parse::<i32>()
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad {var}={v}")))
            .and_then(proc::inherited_fd),
    )
}

/// Runs a spawned child: reads its bootstrap and arguments from `sock`, runs
/// the function, reports, and exits. Never returns.
pub(crate) fn child_main(sock: OwnedFd) -> ! {
    // The parent writes the bootstrap right after starting us; a parent that
    // died first gives EOF. The deadline only guards against a wedged parent.
    run_child(sock, Deadline::after(Duration::from_secs(300)), None)
}

/// Runs a child forked ahead by the fork server: waits, for as long as it
/// takes, for a parent to take it and write its bootstrap (EOF: it was never
/// taken, and exits). A child of the server (`server_pid`) that is to be a
/// daemon then ties its life to the server; a sibling (`None`) cannot be a
/// daemon and refuses to.
pub(crate) fn served_child_main(sock: OwnedFd, server_pid: Option<u32>, sample: &[u8]) -> ! {
    rehearse(sample);
    let known = (proc::current_pid(), proc::parent_pid());
    run_child(sock, Deadline::NEVER, Some((server_pid, known)))
}

/// A bootstrap payload for [`rehearse`], made once by the fork server.
pub(crate) fn rehearsal_sample() -> Vec<u8> {
    let id = Identity {
        pid: 0,
        name: "Process-1".into(),
        daemon: false,
        path: vec![1],
    };
    let boot = Bootstrap {
        build_id: 0,
        entry: 0,
        me: id.clone(),
        parent: id,
    };
    codec::encode(&boot, false)
        .map(|o| o.payload.into_owned())
        .unwrap_or_default()
}

/// What a child forked ahead does while it waits: the steps it will take
/// once it has its job, on dummy values and with no effect, so that the code
/// they run is mapped and the memory they write is its own (copy-on-write
/// broken) before the parent waits on it: page faults that would otherwise
/// come one by one between the parent's request and the child's answer.
fn rehearse(sample: &[u8]) {
    let _ = codec::decode_value::<Bootstrap>(sample, Vec::new());
    info::rehearse();
    let _ = Image::get();
    if let Ok(r) = codec::encode(&Report::Returned, false) {
        std::hint::black_box(&r);
    }
    // The standard streams' locks, without flushing: nothing of the server's
    // may come out of a child that is never used.
    drop(std::io::stdout().lock());
    drop(std::io::stderr().lock());
    // libc's code that the job will run (the rest goes through rustix).
    proc::prefault_code(&[proc::code_addr_recvmsg(), proc::code_addr_exit()]);
}

/// `served`: for a child forked ahead, the fork server's pid if the child is
/// the server's own, and its pid and its parent's, read while it waited.
fn run_child(sock: OwnedFd, boot_deadline: Deadline, served: Option<(Option<u32>, (u32, u32))>) -> ! {
    let mut reader = StartReader::default();
    let boot = reader
        .frame(sock.as_fd(), MAX_BOOTSTRAP, boot_deadline)
        .and_then(|f| codec::decode_value::<Bootstrap>(&f.payload, f.fds).ok());
    let Some(boot) = boot else {
        proc::exit_now(EXIT_REFUSED)
    };
    // A fork server's child; a spawned one was made a daemon before exec.
    if let (Some((server, _)), true) = (served, boot.me.daemon) {
        let tied = server.map(proc::die_with_parent);
        if !matches!(tied, Some(Ok(()))) {
            proc::exit_now(EXIT_REFUSED);
        }
    }
    match served {
        Some((_, (pid, ppid))) => info::become_child_known(boot.me.clone(), boot.parent.clone(), pid, ppid),
        None => info::become_child(boot.me.clone(), boot.parent.clone()),
    }
    let entry = match check(&boot) {
        Ok(e) => e,
        Err(why) => finish(&sock, Err(Report::Refused(why))),
    };
    let Some(args) = reader.frame(sock.as_fd(), codec::DEFAULT_MAX_FRAME, Deadline::NEVER) else {
        proc::exit_now(EXIT_REFUSED)
    };
    let mut ctx = EntryCtx {
        args: Some(args),
        out: None,
    };
    entry(&mut ctx);
    let out = ctx
        .out
        .unwrap_or_else(|| Err(Report::Refused("the entry point produced nothing".into())));
    finish(&sock, out)
}

/// Reads the two frames a child starts with (the bootstrap and the arguments,
/// which the parent writes with one call), and the fork server's small
/// control frames. Unlike a `FrameReader`, whose 64 KiB buffer costs a newly
/// forked process 16 page faults (and the fork server 16 more pages to copy
/// into every child and for every child to unmap as it exits), it buffers
/// what one read brings and receives a larger payload straight into its own
/// vector.
#[derive(Default)]
pub(crate) struct StartReader {
    buf: Vec<u8>,
    pos: usize,
    fds: Vec<OwnedFd>,
}

/// What [`StartReader`] asks of the socket at least, and grows a payload by at most.
const START_READ: usize = 2048;
const GROW_AT_MOST: usize = 8 << 20;

impl StartReader {
    /// Buffers at least `want` bytes past `pos`; false at EOF or on error.
    fn fill(&mut self, sock: BorrowedFd<'_>, want: usize, deadline: Deadline) -> bool {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        while self.buf.len() - self.pos < want {
            let old = self.buf.len();
            self.buf.resize(old + START_READ, 0);
            match sock::recv_some(sock, &mut self.buf[old..], &mut self.fds, deadline) {
                Ok(n) if n > 0 => self.buf.truncate(old + n),
                _ => {
                    self.buf.truncate(old);
                    return false;
                }
            }
        }
        true
    }

    /// True if bytes of a next frame are already buffered.
    pub(crate) fn has_buffered(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// The next frame, or `None` at EOF, on error, or for a bad frame.
    pub(crate) fn frame(&mut self, sock: BorrowedFd<'_>, max: u64, deadline: Deadline) -> Option<Frame> {
        if !self.fill(sock, HEADER_LEN, deadline) {
            return None;
        }
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&self.buf[self.pos..self.pos + HEADER_LEN]);
        let header = codec::parse_header(&h, max).ok()?;
        let len = usize::try_from(header.len).ok()?;
        self.pos += HEADER_LEN;
        let take = len.min(self.buf.len() - self.pos);
        let mut payload = self.buf[self.pos..self.pos + take].to_vec();
        self.pos += take;
        // The rest goes straight into the payload, grown as the bytes come.
        while payload.len() < len {
            let got = payload.len();
            payload.resize(got + (len - got).min(GROW_AT_MOST), 0);
            match sock::recv_some(sock, &mut payload[got..], &mut self.fds, deadline) {
                Ok(n) if n > 0 => payload.truncate(got + n),
                _ => return None,
            }
        }
        // Descriptors ride on a write's first byte, so they are here by now.
        if self.fds.len() < header.nfds {
            return None;
        }
        let fds = self.fds.drain(..header.nfds).collect();
        Some(Frame {
            kind: header.kind,
            payload,
            fds,
        })
    }
}

fn check(boot: &Bootstrap) -> Result<Entry, String> {
    let image = Image::get().map_err(|e| e.to_string())?;
    if image.build_id != boot.build_id {
        return Err("the parent runs a different build of the executable".into());
    }
    image
        .resolve_entry(boot.entry)
        .ok_or_else(|| "the function is not in this executable's code".to_string())
}

/// Sends the report (and the result), flushes stdio and exits. Never returns.
pub(crate) fn finish(sock: &OwnedFd, out: Result<Outgoing<'static>, Report>) -> ! {
    let (report, result, code) = match out {
        Ok(frame) => (Report::Returned, Some(frame), 0),
        Err(r @ Report::Panicked(_)) => (r, None, EXIT_PANICKED),
        Err(r) => (r, None, EXIT_REFUSED),
    };
    if let Ok(r) = codec::encode(&report, false) {
        let _ = match &result {
            Some(frame) => write_frames(sock.as_fd(), &[&r, frame], Deadline::NEVER),
            None => write_frames(sock.as_fd(), &[&r], Deadline::NEVER),
        };
    }
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    proc::exit_now(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(build_id: u64, entry: i64) -> Bootstrap {
        let id = Identity {
            pid: 1,
            name: "x".into(),
            daemon: false,
            path: vec![1],
        };
        Bootstrap {
            build_id,
            entry,
            me: id.clone(),
            parent: id,
        }
    }

    fn double(x: u8) -> u8 {
        x * 2
    }

    fn id_of<F: Fn(u8) -> u8 + Copy + 'static>(_: F) -> i64 {
        entry_id::<F, u8, u8>()
    }

    #[test]
    fn same_build_and_a_real_entry_are_accepted() {
        let image = Image::get().unwrap();
        let entry = check(&boot(image.build_id, id_of(double))).unwrap();
        // The resolved entry runs the function.
        let args = codec::encode(&21u8, false).unwrap();
        let frame = Frame {
            kind: codec::Kind::Value,
            payload: args.payload.into_owned(),
            fds: vec![],
        };
        let mut ctx = EntryCtx {
            args: Some(frame),
            out: None,
        };
        entry(&mut ctx);
        let out = ctx.out.unwrap().ok().unwrap();
        assert_eq!(codec::decode_value::<u8>(&out.payload, vec![]).unwrap(), 42);
    }

    #[test]
    fn another_build_is_refused() {
        let image = Image::get().unwrap();
        let err = check(&boot(image.build_id ^ 1, id_of(double))).unwrap_err();
        assert!(err.contains("different build"), "{err}");
    }

    #[test]
    fn a_function_outside_the_executable_is_refused() {
        let image = Image::get().unwrap();
        for offset in [i64::MIN, -(1 << 40), 1 << 40, i64::MAX] {
            let err = check(&boot(image.build_id, offset)).unwrap_err();
            assert!(err.contains("not in this executable"), "{err}");
        }
        // Data (a heap address) is not code either.
        let heap = Box::new(0u64);
        let offset = Image::offset_of(&*heap as *const u64 as usize);
        assert!(check(&boot(image.build_id, offset)).is_err());
    }

    #[test]
    fn panic_messages() {
        let r = catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(r.as_ref()), "plain");
        let r = catch_unwind(|| panic!("formatted {}", 1)).unwrap_err();
        assert_eq!(panic_message(r.as_ref()), "formatted 1");
        let r = catch_unwind(|| std::panic::panic_any(5u8)).unwrap_err();
        assert_eq!(panic_message(r.as_ref()), "a panic with a non-string payload");
    }
}
