//! The dispatcher thread: owns the worker processes and their sockets, hands
//! jobs out, collects results, and replaces workers that die, time out or retire.
//!
//! Each worker gets jobs in order on its own socket; it acknowledges a job
//! before running it. So at any time the dispatcher knows, per worker, the one
//! job it is running (acknowledged, not done) and the ones queued behind it
//! (sent, not acknowledged). When a worker dies, only the running job fails;
//! the queued ones go back to the front of the pending queue.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustix::event::PollFlags;

use crate::codec::stream::{FrameReader, ReadError};
use crate::codec::DEFAULT_MAX_FRAME;
use crate::deadline::Deadline;
use crate::pool::error::TaskError;
use crate::pool::protocol::{self as proto, Cursor, JobOutput};
use crate::pool::result::Slot;
use crate::pool::worker::Init;
use crate::process::ExitStatus;
use crate::sys::sock;

/// Where a job's output goes.
#[derive(Debug)]
pub(crate) enum Sink {
    /// Part `usize` of an [`AsyncResult`](crate::AsyncResult).
    Slot(Arc<Slot>, usize),
    /// Chunk `usize` of an `imap` iterator.
    Chan(Sender<(usize, JobOutput)>, usize),
}

impl Sink {
    fn deliver(self, out: JobOutput) {
        match self {
            Sink::Slot(s, part) => s.fill(part, out),
            Sink::Chan(tx, seq) => {
                // The iterator may be gone: nobody wants the value then.
                let _ = tx.send((seq, out));
            }
        }
    }
}

/// A job: its complete frame, ready to write, and where its output goes.
/// A job dropped without an output delivers `PoolTerminated`, so no waiter
/// can be forgotten on any path.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) frame: Vec<u8>,
    sink: Option<Sink>,
}

impl Job {
    pub(crate) fn new(frame: Vec<u8>, sink: Sink) -> Job {
        Job {
            frame,
            sink: Some(sink),
        }
    }

    pub(crate) fn deliver(mut self, out: JobOutput) {
        if let Some(s) = self.sink.take() {
            s.deliver(out);
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(s) = self.sink.take() {
            s.deliver(Err(TaskError::PoolTerminated));
        }
    }
}

/// A started worker process, as the dispatcher sees it.
pub(crate) trait WorkerProc: Send {
    /// Its pid.
    fn pid(&self) -> u32;
    /// SIGKILL (no error if it is gone already).
    fn kill(&mut self);
    /// Waits up to `timeout` for it to end and reaps it.
    fn reap(&mut self, timeout: Duration) -> Option<ExitStatus>;
}

/// Starts a worker given its end of the socketpair and the initializer.
pub(crate) type Spawner = Box<dyn FnMut(OwnedFd, &Init) -> io::Result<Box<dyn WorkerProc>> + Send>;

/// Submissions and control flags, shared with the pool handle.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    pub(crate) jobs: VecDeque<Job>,
    pub(crate) closed: bool,
    pub(crate) terminate: bool,
    /// The dispatcher is (about to be) asleep in `poll`: wake it with a byte.
    sleeping: bool,
}

/// What the pool handle and the dispatcher share.
#[derive(Debug)]
pub(crate) struct Shared {
    inbox: Mutex<Inbox>,
    wake_tx: OwnedFd,
    pub(crate) next_id: AtomicU64,
    finished: Mutex<bool>,
    finished_cv: Condvar,
}

impl Shared {
    /// The shared state and the dispatcher's end of the wake-up socket.
    pub(crate) fn new() -> io::Result<(Arc<Shared>, OwnedFd)> {
        let (tx, rx) = sock::socketpair_stream()?;
        Ok((
            Arc::new(Shared {
                inbox: Mutex::new(Inbox::default()),
                wake_tx: tx,
                next_id: AtomicU64::new(1),
                finished: Mutex::new(false),
                finished_cv: Condvar::new(),
            }),
            rx,
        ))
    }

    pub(crate) fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        // A full wake-up socket already wakes the dispatcher: ignore errors.
        let _ = sock::send_all(
            self.wake_tx.as_fd(),
            &[&[1]],
            &[],
            Deadline::after(Duration::ZERO),
        );
    }

    /// Queues jobs; gives them back if the pool is closed or terminated.
    pub(crate) fn submit(&self, jobs: impl IntoIterator<Item = Job>) -> Result<(), Vec<Job>> {
        let wake = {
            let mut inbox = self.inbox();
            if inbox.closed || inbox.terminate {
                return Err(jobs.into_iter().collect());
            }
            inbox.jobs.extend(jobs);
            std::mem::replace(&mut inbox.sleeping, false)
        };
        if wake {
            self.wake();
        }
        Ok(())
    }

    /// Sets `closed` (and `terminate` if asked) and wakes the dispatcher.
    pub(crate) fn control(&self, terminate: bool) {
        {
            let mut inbox = self.inbox();
            inbox.closed = true;
            inbox.terminate |= terminate;
            inbox.sleeping = false;
        }
        self.wake();
    }

    /// True once the dispatcher has finished (all workers gone); waits until `deadline`.
    pub(crate) fn wait_finished(&self, deadline: Deadline) -> bool {
        let mut f = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
        while !*f {
            match deadline.remaining() {
                None => f = self.finished_cv.wait(f).unwrap_or_else(PoisonError::into_inner),
                Some(d) if d.is_zero() => return false,
                Some(d) => {
                    f = self
                        .finished_cv
                        .wait_timeout(f, d)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            }
        }
        true
    }

    pub(crate) fn set_finished(&self) {
        *self.finished.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.finished_cv.notify_all();
    }
}

/// Settings the dispatcher needs.
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) init: Init,
    pub(crate) max_tasks_per_child: Option<usize>,
    pub(crate) task_timeout: Option<Duration>,
}

/// One worker as the dispatcher tracks it.
struct Worker {
    proc: Box<dyn WorkerProc>,
    pid: u32,
    sock: OwnedFd,
    reader: FrameReader,
    /// Jobs written and not done, in order; the front one runs once acknowledged.
    sent: VecDeque<Job>,
    /// When the front job was acknowledged (it is running).
    running_since: Option<Instant>,
    /// Bytes of jobs written and not acknowledged.
    unacked_bytes: usize,
    /// Its initializer ran.
    ready: bool,
    /// Jobs ever written to it.
    dispatched: usize,
    /// Average run time of its jobs (exponential), from the worker's own timing.
    avg_nanos: Option<u64>,
    /// SHUTDOWN sent: it takes no more jobs and exits.
    retiring: bool,
    /// Killed for running past the task timeout.
    timed_out: bool,
    /// Its socket failed or reached EOF: to be reaped and replaced.
    dead: bool,
}

/// Jobs queued behind a running one are limited to this many bytes, so that
/// writing them never waits for a busy worker.
const MAX_QUEUED_BYTES: usize = 64 * 1024;
/// How long writing a job to an idle worker may take before it counts as lost.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a killed or exiting worker may take to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// Consecutive workers dying before they are ready, before pending jobs fail.
const MAX_START_FAILURES: usize = 3;

impl Worker {
    /// How many jobs it may hold: enough short jobs to cover about 2 ms of
    /// work (so a round trip never leaves it idle), at most 16; one at a time
    /// for long jobs (a long job must not delay the ones queued behind it).
    fn window(&self) -> usize {
        match self.avg_nanos {
            None => 2,
            Some(n) if n < 20_000_000 => usize::try_from(2_000_000 / n.max(1)).unwrap_or(16).clamp(2, 16),
            Some(_) => 1,
        }
    }

    fn can_take(&self, len: usize, max_tasks: Option<usize>) -> bool {
        if self.dead || self.retiring || max_tasks.is_some_and(|m| self.dispatched >= m) {
            return false;
        }
        let held = self.sent.len();
        held == 0 || (held < self.window() && self.unacked_bytes + len <= MAX_QUEUED_BYTES)
    }
}

/// The dispatcher thread's state.
pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
    wake_rx: OwnedFd,
    spawner: Spawner,
    cfg: Config,
    workers: Vec<Worker>,
    pending: VecDeque<Job>,
    closed: bool,
    terminate: bool,
    start_failures: usize,
    last_start_error: String,
}

impl Dispatcher {
    pub(crate) fn new(shared: Arc<Shared>, wake_rx: OwnedFd, spawner: Spawner, cfg: Config) -> Dispatcher {
        Dispatcher {
            shared,
            wake_rx,
            spawner,
            cfg,
            workers: Vec::new(),
            pending: VecDeque::new(),
            closed: false,
            terminate: false,
            start_failures: 0,
            last_start_error: String::new(),
        }
    }

    /// Starts one worker.
    pub(crate) fn spawn_worker(&mut self) -> io::Result<()> {
        let (mine, theirs) = sock::socketpair_stream()?;
        let proc = (self.spawner)(theirs, &self.cfg.init)?;
        self.workers.push(Worker {
            pid: proc.pid(),
            proc,
            sock: mine,
            reader: FrameReader::new(),
            sent: VecDeque::new(),
            running_since: None,
            unacked_bytes: 0,
            ready: false,
            dispatched: 0,
            avg_nanos: None,
            retiring: false,
            timed_out: false,
            dead: false,
        });
        Ok(())
    }

    /// Kills and reaps every worker started so far (a failed pool build).
    pub(crate) fn abandon(mut self) {
        self.kill_all();
        self.shared.set_finished();
    }

    /// The thread body.
    pub(crate) fn run(mut self) {
        loop {
            self.take_inbox();
            if self.terminate {
                break;
            }
            self.replace_workers();
            self.dispatch();
            if self.closed && self.pending.is_empty() {
                for w in &mut self.workers {
                    if !w.retiring && !w.dead && w.sent.is_empty() {
                        Self::shutdown(w);
                    }
                }
                if self.workers.is_empty() {
                    break;
                }
            }
            self.wait_and_handle();
            self.bury_dead();
        }
        self.kill_all();
        self.pending.clear(); // Dropping the jobs fails them with PoolTerminated.
        self.shared.inbox().jobs.clear();
        self.shared.set_finished();
    }

    fn take_inbox(&mut self) {
        let mut inbox = self.shared.inbox();
        self.pending.extend(inbox.jobs.drain(..));
        self.closed = inbox.closed;
        self.terminate = inbox.terminate;
    }

    fn live_workers(&self) -> usize {
        self.workers.iter().filter(|w| !w.retiring && !w.dead).count()
    }

    fn replace_workers(&mut self) {
        while self.live_workers() < self.cfg.processes {
            let idle = self.pending.is_empty();
            if idle && (self.closed || self.start_failures >= MAX_START_FAILURES) {
                return;
            }
            if let Err(e) = self.spawn_worker() {
                self.start_failures += 1;
                self.last_start_error = e.to_string();
                if self.live_workers() == 0 {
                    self.fail_pending_start();
                }
                return;
            }
        }
    }

    fn fail_pending_start(&mut self) {
        let msg = self.last_start_error.clone();
        for job in self.pending.drain(..) {
            job.deliver(Err(TaskError::WorkerStart(msg.clone())));
        }
    }

    fn dispatch(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let max_tasks = self.cfg.max_tasks_per_child;
        let mut first_new: Vec<usize> = self.workers.iter().map(|w| w.sent.len()).collect();
        // Round-robin, one job per worker per pass, so a burst is spread evenly.
        loop {
            let mut any = false;
            for w in self.workers.iter_mut() {
                let Some(job) = self.pending.front() else { break };
                if !w.can_take(job.frame.len(), max_tasks) {
                    continue;
                }
                let Some(job) = self.pending.pop_front() else {
                    break;
                };
                w.unacked_bytes += job.frame.len();
                w.dispatched += 1;
                w.sent.push_back(job);
                any = true;
            }
            if !any || self.pending.is_empty() {
                break;
            }
        }
        for (w, first) in self.workers.iter_mut().zip(first_new.drain(..)) {
            if w.sent.len() == first {
                continue;
            }
            let bufs: Vec<&[u8]> = w.sent.iter().skip(first).map(|j| &j.frame[..]).collect();
            if sock::send_all(w.sock.as_fd(), &bufs, &[], Deadline::after(SEND_TIMEOUT)).is_err() {
                w.dead = true;
            }
        }
    }

    fn shutdown(w: &mut Worker) {
        let mut out = Vec::new();
        proto::push_simple(&mut out, proto::SHUTDOWN, None);
        if sock::send_all(w.sock.as_fd(), &[&out], &[], Deadline::after(SEND_TIMEOUT)).is_err() {
            w.dead = true;
        }
        w.retiring = true;
    }

    fn next_timeout(&self) -> Deadline {
        let Some(t) = self.cfg.task_timeout else {
            return Deadline::NEVER;
        };
        let now = Instant::now();
        self.workers
            .iter()
            .filter(|w| !w.timed_out && !w.dead)
            .filter_map(|w| w.running_since)
            .map(|s| (s + t).saturating_duration_since(now))
            .min()
            .map_or(Deadline::NEVER, Deadline::after)
    }

    fn wait_and_handle(&mut self) {
        if self.workers.iter().any(|w| w.dead) {
            return;
        }
        let deadline = {
            let mut inbox = self.shared.inbox();
            if !inbox.jobs.is_empty() || inbox.closed != self.closed || inbox.terminate {
                return;
            }
            inbox.sleeping = true;
            self.next_timeout()
        };
        let ready = {
            let mut fds: Vec<BorrowedFd<'_>> = Vec::with_capacity(self.workers.len() + 1);
            fds.push(self.wake_rx.as_fd());
            fds.extend(self.workers.iter().map(|w| w.sock.as_fd()));
            sock::poll_many(&fds, PollFlags::IN, deadline).unwrap_or_else(|_| {
                // poll itself failing is not expected; avoid spinning.
                std::thread::sleep(Duration::from_millis(1));
                Vec::new()
            })
        };
        self.shared.inbox().sleeping = false;
        for i in ready {
            if i == 0 {
                self.drain_wake();
            } else {
                self.read_worker(i - 1);
            }
        }
        if let Some(t) = self.cfg.task_timeout {
            for w in &mut self.workers {
                if let Some(s) = w.running_since {
                    if !w.timed_out && s.elapsed() >= t {
                        w.timed_out = true;
                        w.proc.kill();
                    }
                }
            }
        }
    }

    fn drain_wake(&mut self) {
        let mut buf = [0u8; 256];
        let mut fds = Vec::new();
        while let Ok(n) = sock::recv_some(
            self.wake_rx.as_fd(),
            &mut buf,
            &mut fds,
            Deadline::after(Duration::ZERO),
        ) {
            if n < buf.len() {
                break;
            }
        }
    }

    fn read_worker(&mut self, i: usize) {
        loop {
            let w = &mut self.workers[i];
            let frame =
                match w
                    .reader
                    .read(w.sock.as_fd(), DEFAULT_MAX_FRAME, Deadline::after(Duration::ZERO))
                {
                    Ok(f) => f,
                    Err(ReadError::TimedOut) => return,
                    Err(_) => {
                        w.dead = true;
                        return;
                    }
                };
            if !self.handle_message(i, frame.payload) {
                let w = &mut self.workers[i];
                w.proc.kill();
                w.dead = true;
                return;
            }
        }
    }

    /// Handles one message; false if it breaks the protocol.
    fn handle_message(&mut self, i: usize, payload: Vec<u8>) -> bool {
        let max_tasks = self.cfg.max_tasks_per_child;
        let w = &mut self.workers[i];
        let mut c = Cursor(&payload);
        match c.u8() {
            Some(proto::READY) => {
                w.ready = true;
                self.start_failures = 0;
                true
            }
            Some(proto::ACK) => {
                let Some(id) = c.u64() else { return false };
                if w.running_since.is_some() || w.sent.front().map(job_id) != Some(Some(id)) {
                    return false;
                }
                w.running_since = Some(Instant::now());
                if let Some(j) = w.sent.front() {
                    w.unacked_bytes = w.unacked_bytes.saturating_sub(j.frame.len());
                }
                true
            }
            Some(proto::DONE) => {
                let (Some(id), Some(nanos)) = (c.u64(), c.u64()) else {
                    return false;
                };
                if w.running_since.is_none() || w.sent.front().map(job_id) != Some(Some(id)) {
                    return false;
                }
                let Some(job) = w.sent.pop_front() else {
                    return false;
                };
                w.running_since = None;
                w.avg_nanos = Some(match w.avg_nanos {
                    None => nanos,
                    Some(a) => (a * 3 + nanos) / 4,
                });
                let at = payload.len() - c.0.len();
                match proto::parse_items(payload, at) {
                    Some(items) => job.deliver(Ok(items)),
                    None => {
                        job.deliver(Err(TaskError::Decode(
                            "corrupt result message from the worker".into(),
                        )));
                        return false;
                    }
                }
                if max_tasks.is_some_and(|m| w.dispatched >= m) && w.sent.is_empty() && !w.retiring {
                    Self::shutdown(w);
                }
                true
            }
            _ => false,
        }
    }

    /// Reaps dead workers, fails the job each was running, and requeues the rest.
    fn bury_dead(&mut self) {
        let mut i = 0;
        while i < self.workers.len() {
            if !self.workers[i].dead {
                i += 1;
                continue;
            }
            let mut w = self.workers.swap_remove(i);
            w.proc.kill();
            let status = w.proc.reap(REAP_TIMEOUT);
            if w.running_since.is_some() {
                if let Some(job) = w.sent.pop_front() {
                    job.deliver(Err(if w.timed_out {
                        TaskError::TimedOut
                    } else {
                        TaskError::WorkerLost { pid: w.pid, status }
                    }));
                }
            }
            while let Some(job) = w.sent.pop_back() {
                self.pending.push_front(job);
            }
            if !w.ready && !w.retiring {
                self.start_failures += 1;
                self.last_start_error = format!(
                    "worker process {} ended ({}) before it was ready",
                    w.pid,
                    status.map_or_else(|| "status unknown".to_string(), |s| s.to_string())
                );
                if self.start_failures >= MAX_START_FAILURES {
                    self.fail_pending_start();
                }
            }
        }
    }

    fn kill_all(&mut self) {
        for w in &mut self.workers {
            w.proc.kill();
        }
        for mut w in self.workers.drain(..) {
            w.proc.reap(REAP_TIMEOUT);
            // Dropping `w.sent` fails its jobs with PoolTerminated.
        }
    }
}

/// The id of a job (from its frame).
fn job_id(j: &Job) -> Option<u64> {
    let mut c = Cursor(j.frame.get(crate::codec::HEADER_LEN..)?);
    c.u8()?;
    c.u64()
}
