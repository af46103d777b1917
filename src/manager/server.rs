//! The server: a process holding the objects, with a thread per busy client
//! connection (threads whose connection ended wait a while for the next one).
//! New and quiet local connections (control connections, a child's first
//! calls) are served by one poller thread instead, until they ask for
//! something that may wait or turn busy (see `poll_loop`).
//!
//! Objects are opaque encoded bytes in a table behind one lock; blocking
//! operations (a queue's get, an event's wait) wait on one condition variable
//! in slices, checking between slices that their client is still connected. A
//! lock's waiters queue on the lock, each on a condition variable of its own; a
//! release hands the lock to the first and sends its client the reply itself.
//! A connection that ends releases the locks it held.
//!
//! After a reply, a connection's thread polls for the next request for a
//! moment before it sleeps (see `spin.rs`): a busy client then never waits for
//! a sleeping thread to wake.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rustix::event::PollFlags;
use serde::{Deserialize, Serialize};

use crate::codec::stream::write_frame;
use crate::codec::{self, CodecError, Outgoing};
use crate::connection::{Address, ConnectError, Connection, Listener, Pipe, RecvError, SendError};
use crate::deadline::Deadline;
use crate::manager::protocol::{
    Bytes, Fault, ObjKind, Op, Reply, Request, ServerInfo, Slot, MAX_ADOPT, MAX_NEW_CONNECTIONS,
    PROTOCOL_VERSION,
};
use crate::manager::spin::Spin;
use crate::manager::update::{run_update, this_build, UpdateFailure};
use crate::sys::sock::{poll_many, poll_one};

/// An [`Address`] as it travels to the server process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
    Host(String),
}

impl From<&Address> for WireAddr {
    fn from(a: &Address) -> Self {
        match a {
            Address::Unix(p) => WireAddr::Unix(p.clone()),
            Address::Tcp(s) => WireAddr::Tcp(*s),
            Address::Host(h) => WireAddr::Host(h.clone()),
            #[allow(unreachable_patterns)]
            other => WireAddr::Host(other.to_string()),
        }
    }
}

impl From<&WireAddr> for Address {
    fn from(a: &WireAddr) -> Self {
        match a {
            WireAddr::Unix(p) => Address::Unix(p.clone()),
            WireAddr::Tcp(s) => Address::Tcp(*s),
            WireAddr::Host(h) => Address::Host(h.clone()),
        }
    }
}

/// What the server process is started with.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ServerArgs {
    /// The owner's first connection: the server reports [`Ready`] on it, then
    /// serves it like any other.
    pub(crate) seed: Connection,
    /// Where to listen for remote clients, and their key.
    pub(crate) listen: Option<(WireAddr, Vec<u8>)>,
    pub(crate) max_request: u64,
}

/// The server's first message on the seed connection.
pub(crate) type Ready = Result<(ServerInfo, Option<WireAddr>), String>;

/// Threads accepting (and authenticating) remote clients.
const ACCEPTORS: usize = 4;
/// How long a remote client has to authenticate.
const HANDSHAKE: Duration = Duration::from_secs(2);

/// Waiting slices: how often a blocked operation checks that its client is alive.
const SLICE: Duration = Duration::from_millis(100);

/// How long a connection's thread polls for the next request after a reply
/// before it sleeps (see `spin.rs`): a busy client's next request comes well
/// within it.
const REQUEST_SPIN: Duration = Duration::from_micros(100);

enum Obj {
    Dict(HashMap<Vec<u8>, Vec<u8>>),
    List(Vec<Vec<u8>>),
    Value(Vec<u8>),
    Lock(LockState),
    Event(bool),
    Queue {
        items: VecDeque<Vec<u8>>,
        max: Option<u64>,
    },
}

impl Obj {
    fn kind(&self) -> ObjKind {
        match self {
            Obj::Dict(_) => ObjKind::Dict,
            Obj::List(_) => ObjKind::List,
            Obj::Value(_) => ObjKind::Value,
            Obj::Lock(_) => ObjKind::Lock,
            Obj::Event(_) => ObjKind::Event,
            Obj::Queue { .. } => ObjKind::Queue,
        }
    }
}

/// A manager lock: its holder (a connection) and the connections waiting for
/// it, in order, each with the condition variable its thread sleeps on. A
/// release hands the lock to the first waiter and wakes that thread alone.
#[derive(Default)]
struct LockState {
    holder: Option<u64>,
    waiters: VecDeque<Waiter>,
}

/// A connection waiting for a lock.
struct Waiter {
    id: u64,
    /// What its thread sleeps on.
    cv: Arc<Condvar>,
    conn: Arc<Connection>,
}

/// How long a release may take to send a waiter its reply.
const HANDOFF_SEND: Duration = Duration::from_millis(10);

impl LockState {
    /// Releases the lock: to the first waiter, if any. The releasing thread
    /// sends that waiter its reply itself (the waiter's client goes on without
    /// waiting for the waiter's thread to wake), then wakes its thread. A
    /// waiter whose reply cannot be sent is passed over (its thread, finding
    /// itself neither waiting nor holding, closes its connection).
    fn release(&mut self) {
        self.holder = None;
        while let Some(w) = self.waiters.pop_front() {
            let sent = codec::encode(&Reply::Unit, false)
                .ok()
                .is_some_and(|out| write_frame(w.conn.fd(), &out, Deadline::after(HANDOFF_SEND)).is_ok());
            w.cv.notify_one();
            if sent {
                self.holder = Some(w.id);
                return;
            }
        }
    }

    fn is_waiting(&self, me: u64) -> bool {
        self.waiters.iter().any(|w| w.id == me)
    }

    /// True if `me` holds the lock and does not wait for it (again).
    fn granted(&self, me: u64) -> bool {
        self.holder == Some(me) && !self.is_waiting(me)
    }
}

#[derive(Default)]
struct State {
    objects: HashMap<u64, Obj>,
    names: HashMap<String, u64>,
    next_id: u64,
}

struct Server {
    state: Mutex<State>,
    changed: Condvar,
    info: ServerInfo,
    max_request: u64,
    next_conn: AtomicU64,
    stop: Mutex<mpsc::Sender<()>>,
    /// Connection threads polling for a request now, and how many may: one CPU
    /// is left for the clients.
    spinners: AtomicUsize,
    max_spinners: usize,
    /// Connections waiting for an idle connection thread, and how many idle
    /// threads wait for one.
    handoff: Mutex<Handoff>,
    handoff_cv: Condvar,
}

/// See [`Server::handoff`].
#[derive(Default)]
struct Handoff {
    pending: VecDeque<Job>,
    idle: usize,
}

/// How long a connection thread whose connection ended waits for another
/// before it exits, and how many may wait: a manager whose clients come and
/// go (a child process each) reuses its threads instead of starting new ones.
const THREAD_IDLE: Duration = Duration::from_secs(5);
const MAX_IDLE_THREADS: usize = 64;

impl Server {
    /// The next request (with the descriptors it carries): polled for briefly
    /// as `mode` says
    /// (if no more than the allowed number of threads poll already), else
    /// waited for.
    fn next_request(&self, conn: &Connection, spin: &Spin, mode: Poll) -> Result<Request, RecvError> {
        let taken = match mode {
            Poll::No => false,
            Poll::Capped => self
                .spinners
                .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                    (n < self.max_spinners).then_some(n + 1)
                })
                .is_ok(),
            Poll::Always => {
                self.spinners.fetch_add(1, Ordering::Acquire);
                true
            }
        };
        if taken {
            let got = spin.run(REQUEST_SPIN, || match conn.try_recv::<Request>() {
                Err(RecvError::Timeout) => None,
                r => Some(r),
            });
            self.spinners.fetch_sub(1, Ordering::Release);
            if let Some(r) = got {
                return r;
            }
        }
        conn.recv::<Request>()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn random_token() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // Unique enough within one machine: it only tells managers apart.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ u64::from(std::process::id()) << 32;
    }
    u64::from_le_bytes(b)
}

/// The server process's function. Returns when a client asks it to shut down.
pub(crate) fn server_main(args: ServerArgs) {
    let ServerArgs {
        seed,
        listen,
        max_request,
    } = args;
    let info = ServerInfo {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
        build_id: this_build(),
        token: random_token(),
        max_request,
    };
    let listener = match &listen {
        Some((addr, key)) => match Listener::bind(Address::from(addr), Some(key)) {
            Ok(l) => Some(l),
            Err(e) => {
                let ready: Ready = Err(format!("cannot listen on {}: {e}", Address::from(addr)));
                let _ = seed.send(&ready);
                return;
            }
        },
        None => None,
    };
    let bound = listener.as_ref().map(|l| WireAddr::from(&l.address()));
    let (stop_tx, stop_rx) = mpsc::channel();
    let srv = Arc::new(Server {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
        info,
        max_request,
        next_conn: AtomicU64::new(1),
        stop: Mutex::new(stop_tx),
        spinners: AtomicUsize::new(0),
        handoff: Mutex::new(Handoff::default()),
        handoff_cv: Condvar::new(),
        max_spinners: std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .max(1),
    });
    let ready: Ready = Ok((info, bound.clone()));
    if seed.send(&ready).is_err() {
        return;
    }
    let owner = Origin {
        tcp: false,
        remote: false,
    };
    // The owner's first connection (its control connection, which hands the
    // server new connections) is served by the poller.
    let first = Light::new(&srv, seed, owner);
    let poller = srv.clone();
    let polling = std::thread::Builder::new()
        .name("manager-poll".into())
        .spawn(move || poll_loop(&poller, first));
    if polling.is_err() {
        // No thread to serve the owner: it sees the server gone.
        return;
    }
    if let Some(mut l) = listener {
        let origin = Origin {
            tcp: !matches!(bound, Some(WireAddr::Unix(_))),
            remote: true,
        };
        // The listener authenticates each client inside `accept`: several
        // acceptors and a short handshake keep a silent client from stalling
        // the others.
        l.set_handshake_timeout(HANDSHAKE);
        let l = Arc::new(l);
        for _ in 0..ACCEPTORS {
            let (srv, l) = (srv.clone(), l.clone());
            let _ = std::thread::Builder::new()
                .name("manager-accept".into())
                .spawn(move || accept_loop(&srv, &l, origin));
        }
    }
    let _ = stop_rx.recv();
    // The process exits without running destructors: remove the socket file here.
    if let Some(WireAddr::Unix(path)) = &bound {
        let _ = std::fs::remove_file(path);
    }
}

/// Where a connection came from.
#[derive(Debug, Clone, Copy)]
struct Origin {
    /// Over TCP: no descriptor can travel.
    tcp: bool,
    /// From the listener (a remote client), or made for one: not the owner.
    remote: bool,
}

fn accept_loop(srv: &Arc<Server>, l: &Listener, origin: Origin) {
    loop {
        match l.accept() {
            Ok(c) => spawn_conn(srv, Job::new(srv, c, origin)),
            // This client failed the handshake; serve the next one.
            Err(ConnectError::Auth(_)) | Err(ConnectError::Timeout) => {}
            // Out of descriptors or the like: do not spin.
            Err(ConnectError::Io(_)) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A connection for a connection thread to serve, and what it left to do.
struct Job {
    conn: Arc<Connection>,
    origin: Origin,
    /// The connection's identity (a lock's holder or waiter).
    me: u64,
    pending: Option<Pending>,
}

/// What a connection handed from the poller to a thread has left to do.
enum Pending {
    /// Handle this request (one that may wait, or of a busy client).
    Request(Request),
    /// Send this reply (too large for the poller to send without waiting).
    Reply(Outgoing<'static>),
}

impl Job {
    fn new(srv: &Server, conn: Connection, origin: Origin) -> Job {
        conn.set_max_frame(srv.max_request);
        Job {
            conn: Arc::new(conn),
            origin,
            me: srv.next_conn.fetch_add(1, Ordering::Relaxed),
            pending: None,
        }
    }
}

/// Serves a connection on an idle connection thread, or a new one.
fn spawn_conn(srv: &Arc<Server>, job: Job) {
    let job = {
        let mut h = lock(&srv.handoff);
        // Each pending connection has an idle thread of its own.
        if h.idle > h.pending.len() {
            h.pending.push_back(job);
            srv.handoff_cv.notify_one();
            return;
        }
        job
    };
    let srv = srv.clone();
    let _ = std::thread::Builder::new()
        .name("manager-conn".into())
        .spawn(move || conn_thread(&srv, job));
}

/// A connection thread: serves its connection, then the next one handed to it.
fn conn_thread(srv: &Arc<Server>, job: Job) {
    let mut job = Some(job);
    while let Some(Job {
        conn,
        origin,
        me,
        pending,
    }) = job.take()
    {
        serve_conn(srv, &conn, origin, me, pending);
        drop(conn);
        let mut h = lock(&srv.handoff);
        if h.idle >= MAX_IDLE_THREADS {
            return;
        }
        h.idle += 1;
        let until = Deadline::after(THREAD_IDLE);
        loop {
            if let Some(next) = h.pending.pop_front() {
                job = Some(next);
                break;
            }
            match until.remaining() {
                Some(left) if !left.is_zero() => {
                    h = srv
                        .handoff_cv
                        .wait_timeout(h, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                _ => break,
            }
        }
        h.idle -= 1;
    }
}

/// Whether a connection thread polls for the next request before it sleeps.
#[derive(Debug, Clone, Copy)]
enum Poll {
    /// No: no request is expected soon (a new connection, whose client may not
    /// run yet; after a lock release, often a client's last request; after an
    /// `Adopt`).
    No,
    /// If fewer threads than the limit poll: after an ordinary reply.
    Capped,
    /// Whatever the limit: a lock was just handed over, and every waiter
    /// waits for this client's critical section.
    Always,
}

/// What a request's handling leaves to do.
enum Answer {
    /// Send this reply.
    Reply(Reply),
    /// The reply was sent already (by the thread that handed over a lock).
    Sent,
    /// The stream may be out of step: close the connection.
    Close,
}

fn serve_conn(srv: &Arc<Server>, conn: &Arc<Connection>, origin: Origin, me: u64, pending: Option<Pending>) {
    let spin = Spin::default();
    let mut mode = Poll::No;
    let mut pending = pending;
    loop {
        let next = match pending.take() {
            Some(Pending::Request(r)) => Ok(r),
            Some(Pending::Reply(out)) => {
                if write_frame(conn.fd(), &out, Deadline::NEVER).is_err() {
                    break;
                }
                mode = Poll::Capped;
                continue;
            }
            None => srv.next_request(conn, &spin, mode),
        };
        let req = match next {
            Ok(Request::Adopt { conns }) if !origin.remote => {
                // No reply: the client does not wait for one. Too many at once
                // are closed unserved (their client sees the end of the stream).
                if conns.len() <= MAX_ADOPT {
                    for c in conns {
                        spawn_conn(srv, Job::new(srv, c, origin));
                    }
                }
                mode = Poll::No;
                continue;
            }
            Ok(r) => r,
            Err(RecvError::Codec(e @ (CodecError::TooLarge { .. } | CodecError::BadHeader(_)))) => {
                // The stream is unusable past a refused header: say why, then close.
                let _ = conn.send(&Reply::Fault(Fault::Malformed(e.to_string())));
                break;
            }
            Err(RecvError::Codec(e @ CodecError::Decode(_))) => {
                // Not a request, but a whole frame: the stream goes on.
                if conn.send(&Reply::Fault(Fault::Malformed(e.to_string()))).is_err() {
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        let shutdown = matches!(req, Request::Shutdown) && !origin.remote;
        mode = match &req {
            Request::Call {
                op: Op::LockRelease, ..
            } => Poll::No,
            _ => Poll::Capped,
        };
        let reply = match srv.handle(me, conn, origin, req) {
            Answer::Reply(r) => r,
            Answer::Sent => {
                mode = Poll::Always;
                continue;
            }
            Answer::Close => break,
        };
        match conn.send(&reply) {
            Ok(()) => {}
            Err(SendError::Codec(e)) => {
                if conn.send(&Reply::Fault(Fault::Malformed(e.to_string()))).is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
        if shutdown {
            let _ = lock(&srv.stop).send(());
        }
    }
    srv.release_all(me);
}

/// A connection served by the poller thread.
struct Light {
    conn: Arc<Connection>,
    origin: Origin,
    me: u64,
    /// Requests served so far.
    served: u32,
}

impl Light {
    fn new(srv: &Server, conn: Connection, origin: Origin) -> Light {
        let Job { conn, origin, me, .. } = Job::new(srv, conn, origin);
        Light {
            conn,
            origin,
            me,
            served: 0,
        }
    }
}

/// Requests the poller serves on one connection before the connection gets a
/// thread of its own (whose polling for the next request serves a busy client
/// faster).
const LIGHT_REQUESTS: u32 = 2;
/// Frames the poller reads from one connection in a row before it serves the others.
const LIGHT_BURST: usize = 16;
/// The largest reply the poller sends itself: one that fits in an idle
/// socket's buffer, so that sending it does not wait for the client.
const LIGHT_REPLY: usize = 64 * 1024;
/// How long the poller may take to send a reply before it closes the connection.
const LIGHT_SEND: Duration = Duration::from_millis(500);

/// What the poller does with a connection after serving what it sent.
enum After {
    Keep,
    Close,
    /// Hand it to a connection thread with this left to do.
    Promote(Pending),
}

/// The poller: one thread serving local connections that are new or quiet
/// (the owner's control connection, each child's control connection and its
/// first one) until they ask for something that may wait or turn busy; then a
/// connection thread takes over. A child that makes one call and exits then
/// costs the server no thread wake-up of its own, and the wake-ups of many
/// children's calls and exits are shared.
///
/// Connections the poller's clients hand over (`Adopt`) join its set. It exits
/// when its set is empty (the owner gone); connections threads are handed
/// over go to threads.
fn poll_loop(srv: &Arc<Server>, first: Light) {
    let mut conns = vec![first];
    let mut adopted = Vec::new();
    while !conns.is_empty() {
        let ready = {
            let fds: Vec<_> = conns.iter().map(|l| l.conn.fd()).collect();
            poll_many(&fds, PollFlags::IN, Deadline::NEVER)
        };
        let ready = match ready {
            Ok(r) => r,
            Err(_) => {
                // Out of memory or the like: do not spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // Highest index first: `swap_remove` moves only entries already served.
        for &i in ready.iter().rev() {
            match serve_light(srv, &mut conns[i], &mut adopted) {
                After::Keep => {}
                After::Close => {
                    conns.swap_remove(i);
                }
                After::Promote(pending) => {
                    let l = conns.swap_remove(i);
                    let job = Job {
                        conn: l.conn,
                        origin: l.origin,
                        me: l.me,
                        pending: Some(pending),
                    };
                    spawn_conn(srv, job);
                }
            }
        }
        conns.append(&mut adopted);
    }
}

/// True if `req` may make the server wait (a lock, or a blocking queue or
/// event operation): a connection thread serves it.
fn may_wait(req: &Request) -> bool {
    match req {
        Request::Call {
            op: Op::LockAcquire(_),
            ..
        } => true,
        Request::Call {
            op: Op::EventWait(ms) | Op::QueueGet(ms) | Op::QueuePut(_, ms),
            ..
        } => *ms != Some(0),
        _ => false,
    }
}

/// Serves what a readable connection of the poller sent (as `serve_conn`
/// does, without waiting for anything).
fn serve_light(srv: &Arc<Server>, l: &mut Light, adopted: &mut Vec<Light>) -> After {
    for _ in 0..LIGHT_BURST {
        let req = match l.conn.try_recv::<Request>() {
            // Nothing more, or a request that came in part.
            Err(RecvError::Timeout) => return After::Keep,
            Ok(Request::Adopt { conns }) if !l.origin.remote => {
                if conns.len() <= MAX_ADOPT {
                    adopted.extend(conns.into_iter().map(|c| Light::new(srv, c, l.origin)));
                }
                continue;
            }
            Ok(r) => r,
            Err(RecvError::Codec(e @ (CodecError::TooLarge { .. } | CodecError::BadHeader(_)))) => {
                let _ = send_light(
                    &l.conn,
                    &Reply::Fault(Fault::Malformed(e.to_string())),
                    srv.max_request,
                );
                return After::Close;
            }
            Err(RecvError::Codec(e @ CodecError::Decode(_))) => {
                match send_light(
                    &l.conn,
                    &Reply::Fault(Fault::Malformed(e.to_string())),
                    srv.max_request,
                ) {
                    Ok(None) => continue,
                    _ => return After::Close,
                }
            }
            Err(_) => return After::Close,
        };
        if l.served >= LIGHT_REQUESTS || may_wait(&req) {
            return After::Promote(Pending::Request(req));
        }
        l.served += 1;
        let shutdown = matches!(req, Request::Shutdown) && !l.origin.remote;
        let reply = match srv.handle(l.me, &l.conn, l.origin, req) {
            Answer::Reply(r) => r,
            // Not for requests that may wait.
            Answer::Sent | Answer::Close => return After::Close,
        };
        match send_light(&l.conn, &reply, srv.max_request) {
            Ok(None) => {}
            Ok(Some(big)) => return After::Promote(Pending::Reply(big)),
            Err(()) => return After::Close,
        }
        if shutdown {
            let _ = lock(&srv.stop).send(());
        }
    }
    After::Keep
}

/// Sends `reply` from the poller: `Ok(Some(frame))` if it is too large to
/// send without waiting for the client (a thread sends it), `Err` if the
/// connection must close.
fn send_light(conn: &Connection, reply: &Reply, max: u64) -> Result<Option<Outgoing<'static>>, ()> {
    let fault = |why: String| codec::encode(&Reply::Fault(Fault::Malformed(why)), false).map_err(|_| ());
    let out = match codec::encode(reply, true) {
        // A reply is limited as a request is (as `Connection::send` limits it).
        Ok(out) if out.payload.len() as u64 > max => fault(
            CodecError::TooLarge {
                len: out.payload.len() as u64,
                max,
            }
            .to_string(),
        )?,
        Ok(out) => out,
        Err(e) => fault(e.to_string())?,
    };
    if out.payload.len() > LIGHT_REPLY {
        return Ok(Some(out));
    }
    write_frame(conn.fd(), &out, Deadline::after(LIGHT_SEND)).map_err(|_| ())?;
    Ok(None)
}

/// True if the client has closed its end (or sent something while it should be
/// waiting for our reply): a blocked operation for it can be abandoned.
fn client_gone(conn: &Connection) -> bool {
    poll_one(
        conn.fd(),
        PollFlags::IN | PollFlags::RDHUP,
        Deadline::after(Duration::ZERO),
    )
    .unwrap_or(true)
}

fn norm_index(index: i64, len: usize) -> Option<usize> {
    let len_i = i64::try_from(len).ok()?;
    let i = if index < 0 {
        index.checked_add(len_i)?
    } else {
        index
    };
    (0..len_i).contains(&i).then_some(i as usize)
}

fn out_of_range(index: i64, len: usize) -> Fault {
    Fault::IndexOutOfRange {
        index,
        len: len as u64,
    }
}

fn deadline_ms(ms: Option<u64>) -> Deadline {
    Deadline::from_timeout(ms.map(Duration::from_millis))
}

impl Server {
    fn handle(self: &Arc<Self>, me: u64, conn: &Arc<Connection>, origin: Origin, req: Request) -> Answer {
        match req {
            Request::Call {
                id,
                kind: ObjKind::Lock,
                op: Op::LockAcquire(ms),
            } => self.acquire(me, conn, id, ms),
            other => Answer::Reply(self.handle_other(me, conn, origin, other)),
        }
    }

    fn handle_other(self: &Arc<Self>, me: u64, conn: &Connection, origin: Origin, req: Request) -> Reply {
        match req {
            Request::Hello { version } => {
                if version == PROTOCOL_VERSION {
                    Reply::Info(self.info)
                } else {
                    Reply::Fault(Fault::Unsupported(format!(
                        "the manager speaks protocol {PROTOCOL_VERSION}, the client {version}"
                    )))
                }
            }
            Request::Create { kind, init } => self.create(kind, init),
            Request::Call { id, kind, op } => match self.call(me, conn, id, kind, op) {
                Ok(r) => r,
                Err(f) => Reply::Fault(f),
            },
            Request::Register { name, id } => {
                let mut st = lock(&self.state);
                if !st.objects.contains_key(&id) {
                    return Reply::Fault(Fault::NoSuchObject(id));
                }
                st.names.insert(name, id);
                Reply::Unit
            }
            Request::Lookup { name } => {
                let st = lock(&self.state);
                match st
                    .names
                    .get(&name)
                    .and_then(|id| st.objects.get(id).map(|o| (*id, o.kind())))
                {
                    Some((id, kind)) => Reply::Found(id, kind),
                    None => Reply::Fault(Fault::NameNotFound(name)),
                }
            }
            Request::NewConnection { count } => {
                if origin.tcp {
                    return Reply::Fault(Fault::Unsupported(
                        "new connections over TCP come from connecting again, not from the server".into(),
                    ));
                }
                if !(1..=MAX_NEW_CONNECTIONS).contains(&count) {
                    return Reply::Fault(Fault::Malformed(format!(
                        "{count} connections asked for, 1 to {MAX_NEW_CONNECTIONS} allowed"
                    )));
                }
                let mut conns = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    match Pipe::new() {
                        Ok((ours, theirs)) => {
                            // A connection made for a remote client is remote too.
                            let origin = Origin {
                                tcp: false,
                                remote: origin.remote,
                            };
                            spawn_conn(self, Job::new(self, ours, origin));
                            conns.push(theirs);
                        }
                        Err(e) => {
                            return Reply::Fault(Fault::Unsupported(format!("cannot make a connection: {e}")))
                        }
                    }
                }
                Reply::Conns(conns)
            }
            Request::Shutdown if origin.remote => Reply::Fault(Fault::Unsupported(
                "only the process that started the manager can shut it down".into(),
            )),
            Request::Shutdown => Reply::Unit,
            // A local client's is served without a reply (see `serve_conn`).
            Request::Adopt { .. } => Reply::Fault(Fault::Unsupported(
                "a remote client cannot hand the manager connections".into(),
            )),
        }
    }

    fn create(&self, kind: ObjKind, init: Bytes) -> Reply {
        let obj = match kind {
            ObjKind::Dict => Obj::Dict(HashMap::new()),
            ObjKind::List => match codec::decode_value::<Vec<Bytes>>(&init.0, Vec::new()) {
                Ok(v) => Obj::List(v.into_iter().map(|b| b.0).collect()),
                Err(e) => return Reply::Fault(Fault::Malformed(e.to_string())),
            },
            ObjKind::Value => Obj::Value(init.0),
            ObjKind::Lock => Obj::Lock(LockState::default()),
            ObjKind::Event => Obj::Event(false),
            ObjKind::Queue => match codec::decode_value::<Option<u64>>(&init.0, Vec::new()) {
                Ok(max) => Obj::Queue {
                    items: VecDeque::new(),
                    max,
                },
                Err(e) => return Reply::Fault(Fault::Malformed(e.to_string())),
            },
        };
        let mut st = lock(&self.state);
        st.next_id += 1;
        let id = st.next_id;
        st.objects.insert(id, obj);
        Reply::Id(id)
    }

    fn release_all(&self, me: u64) {
        let mut st = lock(&self.state);
        for obj in st.objects.values_mut() {
            if let Obj::Lock(l) = obj {
                l.waiters.retain(|w| w.id != me);
                if l.holder == Some(me) {
                    l.release();
                }
            }
        }
    }

    /// Takes lock `id` for `me`, waiting until `ms` (`None`: forever) if it is held.
    fn acquire(&self, me: u64, conn: &Arc<Connection>, id: u64, ms: Option<u64>) -> Answer {
        let mut st = lock(&self.state);
        let l = match lock_state(&mut st, id) {
            Ok(l) => l,
            Err(f) => return Answer::Reply(Reply::Fault(f)),
        };
        if l.holder.is_none() {
            l.holder = Some(me);
            return Answer::Reply(Reply::Unit);
        }
        let deadline = deadline_ms(ms);
        if deadline.passed() {
            return Answer::Reply(Reply::Fault(Fault::TimedOut));
        }
        let cv = Arc::new(Condvar::new());
        l.waiters.push_back(Waiter {
            id: me,
            cv: cv.clone(),
            conn: conn.clone(),
        });
        // Sleeps in slices, checking that the client is still there.
        loop {
            let slice = deadline.remaining().map_or(SLICE, |r| r.min(SLICE));
            let give_up = slice.is_zero() || {
                st = cv
                    .wait_timeout(st, slice)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                let l = match lock_state(&mut st, id) {
                    Ok(l) => l,
                    Err(f) => return Answer::Reply(Reply::Fault(f)),
                };
                if l.granted(me) {
                    // The releasing thread sent the reply.
                    return Answer::Sent;
                }
                if !l.is_waiting(me) {
                    // Passed over: the reply could not be sent, perhaps in part.
                    return Answer::Close;
                }
                client_gone(conn)
            };
            if give_up {
                if let Ok(l) = lock_state(&mut st, id) {
                    l.waiters.retain(|w| w.id != me);
                }
                return Answer::Reply(Reply::Fault(Fault::TimedOut));
            }
        }
    }

    /// Waits until `ready` gives a value, the deadline passes, or the client leaves.
    fn wait_for<T>(
        &self,
        conn: &Connection,
        mut st: MutexGuard<'_, State>,
        deadline: Deadline,
        mut ready: impl FnMut(&mut State) -> Result<Option<T>, Fault>,
    ) -> Result<T, Fault> {
        loop {
            if let Some(t) = ready(&mut st)? {
                return Ok(t);
            }
            let slice = deadline.remaining().map_or(SLICE, |r| r.min(SLICE));
            if slice.is_zero() {
                return Err(Fault::TimedOut);
            }
            st = self
                .changed
                .wait_timeout(st, slice)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if client_gone(conn) {
                return Err(Fault::TimedOut);
            }
        }
    }

    fn call(&self, me: u64, conn: &Connection, id: u64, kind: ObjKind, op: Op) -> Result<Reply, Fault> {
        let mut st = lock(&self.state);
        let obj = get_obj(&mut st, id, kind)?;
        match op {
            Op::Len => Ok(Reply::Len(match obj {
                Obj::Dict(d) => d.len(),
                Obj::List(l) => l.len(),
                Obj::Queue { items, .. } => items.len(),
                _ => return Err(unsupported("len", kind)),
            } as u64)),
            Op::Clear => {
                match obj {
                    Obj::Dict(d) => d.clear(),
                    Obj::List(l) => l.clear(),
                    Obj::Queue { items, .. } => {
                        items.clear();
                        self.changed.notify_all();
                    }
                    _ => return Err(unsupported("clear", kind)),
                }
                Ok(Reply::Unit)
            }
            Op::Update {
                slot,
                build_id,
                entry,
            } => {
                let target: &mut Vec<u8> = match (obj, slot) {
                    (Obj::Dict(d), Slot::Key(k)) => d.get_mut(&k.0).ok_or(Fault::KeyNotFound)?,
                    (Obj::List(l), Slot::Index(i)) => {
                        let len = l.len();
                        let i = norm_index(i, len).ok_or_else(|| out_of_range(i, len))?;
                        &mut l[i]
                    }
                    (Obj::Value(v), Slot::Whole) => v,
                    _ => return Err(unsupported("this update", kind)),
                };
                match run_update(build_id, entry, target.clone()) {
                    Err(why) => Err(Fault::Refused(why)),
                    Ok(Err(UpdateFailure::Panicked(m))) => Err(Fault::Panicked(m)),
                    Ok(Err(UpdateFailure::Codec(m))) => Err(Fault::Malformed(m)),
                    Ok(Ok(new)) => {
                        *target = new.clone();
                        Ok(Reply::Value(Some(Bytes(new))))
                    }
                }
            }
            Op::DictInsert(k, v) => Ok(Reply::Value(dict(obj)?.insert(k.0, v.0).map(Bytes))),
            Op::DictGet(k) => Ok(Reply::Value(dict(obj)?.get(&k.0).cloned().map(Bytes))),
            Op::DictRemove(k) => Ok(Reply::Value(dict(obj)?.remove(&k.0).map(Bytes))),
            Op::DictContains(k) => Ok(Reply::Bool(dict(obj)?.contains_key(&k.0))),
            Op::DictKeys => Ok(Reply::Values(dict(obj)?.keys().cloned().map(Bytes).collect())),
            Op::DictValues => Ok(Reply::Values(dict(obj)?.values().cloned().map(Bytes).collect())),
            Op::DictItems => Ok(Reply::Items(
                dict(obj)?
                    .iter()
                    .map(|(k, v)| (Bytes(k.clone()), Bytes(v.clone())))
                    .collect(),
            )),
            Op::DictUpdate(pairs) => {
                let d = dict(obj)?;
                d.extend(pairs.into_iter().map(|(k, v)| (k.0, v.0)));
                Ok(Reply::Unit)
            }
            Op::DictSetDefault(k, v) => Ok(Reply::Value(Some(Bytes(
                dict(obj)?.entry(k.0).or_insert(v.0).clone(),
            )))),
            Op::ListPush(v) => {
                list(obj)?.push(v.0);
                Ok(Reply::Unit)
            }
            Op::ListPop => Ok(Reply::Value(list(obj)?.pop().map(Bytes))),
            Op::ListGet(i) => {
                let l = list(obj)?;
                let at = norm_index(i, l.len()).ok_or_else(|| out_of_range(i, l.len()))?;
                Ok(Reply::Value(Some(Bytes(l[at].clone()))))
            }
            Op::ListSet(i, v) => {
                let l = list(obj)?;
                let at = norm_index(i, l.len()).ok_or_else(|| out_of_range(i, l.len()))?;
                Ok(Reply::Value(Some(Bytes(std::mem::replace(&mut l[at], v.0)))))
            }
            Op::ListInsert(i, v) => {
                let l = list(obj)?;
                let at = if i == l.len() as i64 {
                    l.len()
                } else {
                    norm_index(i, l.len()).ok_or_else(|| out_of_range(i, l.len()))?
                };
                l.insert(at, v.0);
                Ok(Reply::Unit)
            }
            Op::ListRemove(i) => {
                let l = list(obj)?;
                let at = norm_index(i, l.len()).ok_or_else(|| out_of_range(i, l.len()))?;
                Ok(Reply::Value(Some(Bytes(l.remove(at)))))
            }
            Op::ListExtend(vs) => {
                list(obj)?.extend(vs.into_iter().map(|b| b.0));
                Ok(Reply::Unit)
            }
            Op::ListItems => Ok(Reply::Values(list(obj)?.iter().cloned().map(Bytes).collect())),
            Op::ValueGet => match obj {
                Obj::Value(v) => Ok(Reply::Value(Some(Bytes(v.clone())))),
                _ => Err(unsupported("get", kind)),
            },
            Op::ValueSet(new) => match obj {
                Obj::Value(v) => Ok(Reply::Value(Some(Bytes(std::mem::replace(v, new.0))))),
                _ => Err(unsupported("set", kind)),
            },
            // A lock's is `Server::acquire`.
            Op::LockAcquire(_) => Err(unsupported("acquire", kind)),
            Op::LockRelease => match obj {
                Obj::Lock(l) if l.granted(me) => {
                    l.release();
                    Ok(Reply::Unit)
                }
                _ => Err(Fault::NotOwner),
            },
            Op::EventSet => match obj {
                Obj::Event(e) => {
                    *e = true;
                    self.changed.notify_all();
                    Ok(Reply::Unit)
                }
                _ => Err(unsupported("set", kind)),
            },
            Op::EventClear => match obj {
                Obj::Event(e) => {
                    *e = false;
                    Ok(Reply::Unit)
                }
                _ => Err(unsupported("clear", kind)),
            },
            Op::EventIsSet => match obj {
                Obj::Event(e) => Ok(Reply::Bool(*e)),
                _ => Err(unsupported("is_set", kind)),
            },
            Op::EventWait(ms) => {
                let r = self.wait_for(conn, st, deadline_ms(ms), |st| match get_obj(st, id, kind)? {
                    Obj::Event(true) => Ok(Some(())),
                    _ => Ok(None),
                });
                match r {
                    Ok(()) => Ok(Reply::Bool(true)),
                    Err(Fault::TimedOut) => Ok(Reply::Bool(false)),
                    Err(f) => Err(f),
                }
            }
            Op::QueuePut(v, ms) => {
                let mut item = Some(v.0);
                let r = self.wait_for(conn, st, deadline_ms(ms), |st| match get_obj(st, id, kind)? {
                    Obj::Queue { items, max } => {
                        if max.is_some_and(|m| items.len() as u64 >= m) {
                            return Ok(None);
                        }
                        items.extend(item.take());
                        Ok(Some(()))
                    }
                    _ => Err(unsupported("put", kind)),
                });
                match r {
                    Ok(()) => {
                        self.changed.notify_all();
                        Ok(Reply::Unit)
                    }
                    Err(Fault::TimedOut) => Err(Fault::Full),
                    Err(f) => Err(f),
                }
            }
            Op::QueueGet(ms) => {
                let r = self.wait_for(conn, st, deadline_ms(ms), |st| match get_obj(st, id, kind)? {
                    Obj::Queue { items, .. } => Ok(items.pop_front()),
                    _ => Err(unsupported("get", kind)),
                });
                match r {
                    Ok(v) => {
                        self.changed.notify_all();
                        Ok(Reply::Value(Some(Bytes(v))))
                    }
                    Err(Fault::TimedOut) => Err(Fault::Empty),
                    Err(f) => Err(f),
                }
            }
        }
    }
}

fn get_obj(st: &mut State, id: u64, kind: ObjKind) -> Result<&mut Obj, Fault> {
    let obj = st.objects.get_mut(&id).ok_or(Fault::NoSuchObject(id))?;
    if obj.kind() != kind {
        return Err(Fault::WrongKind {
            id,
            expected: kind,
            actual: obj.kind(),
        });
    }
    Ok(obj)
}

fn unsupported(what: &str, kind: ObjKind) -> Fault {
    Fault::Unsupported(format!("{what} does not apply to a {kind}"))
}

fn lock_state(st: &mut State, id: u64) -> Result<&mut LockState, Fault> {
    match get_obj(st, id, ObjKind::Lock)? {
        Obj::Lock(l) => Ok(l),
        o => Err(unsupported("a lock operation", o.kind())),
    }
}

fn dict(obj: &mut Obj) -> Result<&mut HashMap<Vec<u8>, Vec<u8>>, Fault> {
    match obj {
        Obj::Dict(d) => Ok(d),
        o => Err(unsupported("a dict operation", o.kind())),
    }
}

fn list(obj: &mut Obj) -> Result<&mut Vec<Vec<u8>>, Fault> {
    match obj {
        Obj::List(l) => Ok(l),
        o => Err(unsupported("a list operation", o.kind())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Client;
    use crate::manager::endpoint::roundtrip;
    use crate::manager::error::ManagerError;

    fn call(c: &Connection, req: Request) -> Reply {
        roundtrip(c, &req, Deadline::after(Duration::from_secs(20))).unwrap()
    }

    /// A server in a thread of this process, listening on a Unix path.
    fn server() -> (Connection, std::path::PathBuf, std::thread::JoinHandle<()>) {
        server_with(1 << 16)
    }

    fn server_with(max_request: u64) -> (Connection, std::path::PathBuf, std::thread::JoinHandle<()>) {
        let dir = std::env::temp_dir().join(format!("mp-mgr-unit-{}-{}", std::process::id(), random_token()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let (ours, theirs) = Pipe::new().unwrap();
        let args = ServerArgs {
            seed: theirs,
            listen: Some((WireAddr::Unix(path.clone()), b"k".to_vec())),
            max_request,
        };
        let t = std::thread::spawn(move || server_main(args));
        let ready: Ready = ours.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(ready.is_ok());
        (ours, path, t)
    }

    fn create(c: &Connection, kind: ObjKind, init: Vec<u8>) -> u64 {
        match call(
            c,
            Request::Create {
                kind,
                init: Bytes(init),
            },
        ) {
            Reply::Id(id) => id,
            r => panic!("no id: {r:?}"),
        }
    }

    #[test]
    fn the_poller_serves_new_connections_and_hands_over_waits_and_large_replies() {
        let (owner, path, t) = server_with(1 << 20);
        // Garbage on the owner's connection (served by the poller): an error
        // reply, and the connection goes on.
        owner.send_bytes(b"\xff\xff\xff garbage").unwrap();
        assert!(matches!(
            owner.recv_timeout::<Reply>(Duration::from_secs(20)).unwrap(),
            Reply::Fault(Fault::Malformed(_))
        ));
        // Connections handed over on it are served.
        let (a, a_srv) = Pipe::new().unwrap();
        let (b, b_srv) = Pipe::new().unwrap();
        let (c, c_srv) = Pipe::new().unwrap();
        let adopt = codec::encode(
            &Request::Adopt {
                conns: vec![a_srv, b_srv, c_srv],
            },
            true,
        )
        .unwrap();
        write_frame(owner.fd(), &adopt, Deadline::after(Duration::from_secs(20))).unwrap();
        drop(adopt);
        let lock_id = create(&a, ObjKind::Lock, vec![]);
        let list = create(&b, ObjKind::List, vec![0]);
        let acquire = move |ms| Request::Call {
            id: lock_id,
            kind: ObjKind::Lock,
            op: Op::LockAcquire(ms),
        };
        assert!(matches!(call(&a, acquire(None)), Reply::Unit));
        // `b` waits for the lock (a thread takes it over) while `owner` is served.
        let waiter = std::thread::spawn(move || {
            let r = call(&b, acquire(Some(20_000)));
            (b, r)
        });
        std::thread::sleep(Duration::from_millis(50));
        let chunk = Bytes(vec![7; 60 * 1024]);
        for _ in 0..4 {
            let push = Request::Call {
                id: list,
                kind: ObjKind::List,
                op: Op::ListPush(chunk.clone()),
            };
            assert!(matches!(call(&owner, push), Reply::Unit));
        }
        let release = Request::Call {
            id: lock_id,
            kind: ObjKind::Lock,
            op: Op::LockRelease,
        };
        assert!(matches!(call(&a, release), Reply::Unit));
        let (b, r) = waiter.join().unwrap();
        assert!(matches!(r, Reply::Unit), "{r:?}");
        // A reply larger than the poller sends itself arrives whole.
        let get = || Request::Call {
            id: list,
            kind: ObjKind::List,
            op: Op::ListItems,
        };
        for conn in [&c, &a] {
            match call(conn, get()) {
                Reply::Values(v) => assert_eq!(v, vec![chunk.clone(); 4]),
                r => panic!("{r:?}"),
            }
        }
        // A connection that closes holding a lock releases it.
        drop(b);
        assert!(matches!(call(&a, acquire(Some(20_000))), Reply::Unit));
        assert!(matches!(call(&owner, get()), Reply::Values(v) if v.len() == 4));
        assert!(matches!(call(&owner, Request::Shutdown), Reply::Unit));
        t.join().unwrap();
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn faults_are_replies_and_the_server_goes_on() {
        let (owner, path, t) = server();
        let c = Client::connect_timeout(path.clone(), Some(b"k"), Duration::from_secs(20)).unwrap();
        // Bytes that are no request.
        c.send_bytes(b"\xff\xff\xff garbage").unwrap();
        assert!(matches!(
            c.recv_timeout::<Reply>(Duration::from_secs(20)).unwrap(),
            Reply::Fault(Fault::Malformed(_))
        ));
        // The same connection still works.
        assert!(matches!(
            call(
                &c,
                Request::Hello {
                    version: PROTOCOL_VERSION
                }
            ),
            Reply::Info(_)
        ));
        assert!(matches!(
            call(&c, Request::Hello { version: 999 }),
            Reply::Fault(Fault::Unsupported(_))
        ));
        // Unknown object, wrong kind.
        let op = |id, kind| Request::Call {
            id,
            kind,
            op: Op::Len,
        };
        assert!(matches!(
            call(&c, op(12345, ObjKind::Dict)),
            Reply::Fault(Fault::NoSuchObject(12345))
        ));
        let Reply::Id(id) = call(
            &c,
            Request::Create {
                kind: ObjKind::List,
                init: Bytes(vec![0]),
            },
        ) else {
            panic!("no id")
        };
        assert!(matches!(
            call(&c, op(id, ObjKind::Dict)),
            Reply::Fault(Fault::WrongKind { .. })
        ));
        assert!(matches!(call(&c, op(id, ObjKind::List)), Reply::Len(0)));
        // A malformed initial value is refused.
        let bad = Request::Create {
            kind: ObjKind::Queue,
            init: Bytes(vec![9, 9, 9]),
        };
        assert!(matches!(call(&c, bad), Reply::Fault(Fault::Malformed(_))));
        // A remote client can neither get descriptors over TCP nor stop the server.
        assert!(matches!(
            call(&c, Request::Shutdown),
            Reply::Fault(Fault::Unsupported(_))
        ));
        // A connection handed to a remote client is remote too.
        assert!(matches!(
            call(&c, Request::NewConnection { count: 0 }),
            Reply::Fault(Fault::Malformed(_))
        ));
        assert!(matches!(
            call(&c, Request::NewConnection { count: 200 }),
            Reply::Fault(Fault::Malformed(_))
        ));
        // Nor hand the server connections: refused, and closed.
        let (mine, theirs) = Pipe::new().unwrap();
        let adopt = codec::encode(&Request::Adopt { conns: vec![theirs] }, true).unwrap();
        write_frame(c.fd(), &adopt, Deadline::after(Duration::from_secs(20))).unwrap();
        drop(adopt);
        assert!(matches!(
            c.recv_timeout::<Reply>(Duration::from_secs(20)).unwrap(),
            Reply::Fault(Fault::Unsupported(_))
        ));
        assert!(matches!(
            mine.recv_timeout::<Reply>(Duration::from_secs(20)),
            Err(RecvError::Eof)
        ));
        let Reply::Conns(mut conns) = call(&c, Request::NewConnection { count: 1 }) else {
            panic!("no connection")
        };
        let c2 = conns.pop().unwrap();
        assert!(matches!(
            call(&c2, Request::Shutdown),
            Reply::Fault(Fault::Unsupported(_))
        ));
        assert!(matches!(call(&c2, op(id, ObjKind::List)), Reply::Len(0)));
        // An oversized request: refused from its header, that connection closed.
        let big = Request::Call {
            id,
            kind: ObjKind::List,
            op: Op::ListPush(Bytes(vec![0; 1 << 17])),
        };
        // The fault comes back as the reply, or, when the client's send fails
        // first (the server closed the connection with the request's bytes
        // unread), as the next message; over TCP the reset may lose it. At
        // most one, then the end of the stream.
        let r = roundtrip(&c2, &big, Deadline::after(Duration::from_secs(20)));
        let mut faults = match r {
            Ok(Reply::Fault(Fault::Malformed(_))) => 1,
            Err(ManagerError::ManagerGone) => 0,
            other => panic!("{other:?}"),
        };
        loop {
            match c2.recv_timeout::<Reply>(Duration::from_secs(20)) {
                Ok(Reply::Fault(Fault::Malformed(_))) if faults == 0 => faults += 1,
                Err(RecvError::Eof) | Err(RecvError::Io(_)) => break,
                other => panic!("after {faults} fault(s): {other:?}"),
            }
        }
        assert!(matches!(call(&c, op(id, ObjKind::List)), Reply::Len(0)));
        // The owner can.
        assert!(matches!(call(&owner, Request::Shutdown), Reply::Unit));
        t.join().unwrap();
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
