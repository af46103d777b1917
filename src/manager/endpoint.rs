//! The client side: how a proxy reaches its server.
//!
//! An [`Endpoint`] is one process's way to one server: a pool of connections,
//! each used by one call at a time (so threads never interleave requests), and a
//! way to make more. For a local manager, this process makes a socketpair and
//! hands one end to the server over a dedicated control connection (`Adopt`,
//! which has no reply: making a connection costs no round trip; a process that
//! keeps making them makes 16 at a time); for a remote one, new connections
//! come from connecting again with the key. A lock guard keeps the connection
//! that holds its lock, and lends it to the calls its thread makes meanwhile.
//!
//! A child starts with one working connection and no control connection: most
//! children make a call or two and exit. It makes its control connection (sent
//! on a working one) before the first call that may keep a connection for long
//! (a wait on the server, a lock); until then every working connection comes
//! back soon, so a thread that finds none idle waits for one.
//!
//! A call polls for its reply for a moment before it sleeps (see `spin.rs`).
//!
//! No connection crosses a fork: every endpoint remembers the process that made
//! it and refuses to be used from another. A proxy given to a child (as an
//! argument or over a `Connection`) serialises as a fresh connection of its own
//! (once per message and server: the other proxies of that server in the same
//! message refer to it), and the child builds its own endpoint (one per server
//! per process).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::ThreadId;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::stream::write_frame;
use crate::codec::{self, CodecError, Outgoing};
use crate::connection::{Address, Client, ConnectError, Connection, Pipe, RecvError};
use crate::deadline::Deadline;
use crate::manager::error::ManagerError;
use crate::manager::protocol::{Fault, Op, Reply, Request, ServerInfo, PROTOCOL_VERSION};
use crate::manager::server::WireAddr;
use crate::manager::spin::Spin;
use crate::sys::robust::current_tid;

/// How long a call waits for the server unless told otherwise.
pub(crate) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How many connections a process that keeps making them makes at a time
/// (see [`Endpoint::new_local`]).
const SPARE_BATCH: usize = 16;

/// How long a call polls for its reply before it sleeps (see `spin.rs`): longer
/// than the server's work and a sleeping server thread's wake-up, so that at
/// least this side does not sleep.
const REPLY_SPIN: Duration = Duration::from_micros(100);

/// How new connections are made.
#[derive(Debug)]
pub(crate) enum Route {
    /// Ask the server over the control connection. A child's endpoint has
    /// none until it needs one (see [`Endpoint::ensure_control`]).
    Local(Mutex<Option<Connection>>),
    /// Connect again to this address with this key.
    Remote { addr: WireAddr, authkey: Vec<u8> },
}

/// One process's access to one manager server.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) info: ServerInfo,
    route: Route,
    /// The process that made this endpoint: connections are never used elsewhere.
    pid: u32,
    idle: Mutex<Vec<Connection>>,
    /// Working connections that exist (idle, in a call, or held by a lock
    /// guard), and a signal for threads waiting for one to come back (see
    /// [`Endpoint::pooled`]).
    working: AtomicUsize,
    returned: Condvar,
    /// Threads waiting on `returned` (changed and read under the `idle` lock).
    waiters: AtomicUsize,
    /// The control connection failed, or the endpoint was disconnected: with
    /// no idle connection, a call is `ManagerGone` at once (no waiting for a
    /// connection to come back: a lock guard may hold one for long).
    control_lost: AtomicBool,
    /// Connections of a local server handed over already and not used yet (see
    /// [`Endpoint::new_local`]), and how many times connections were made.
    spare: Mutex<(Vec<Connection>, u32)>,
    /// Call timeout in milliseconds, `u64::MAX` for none.
    timeout_ms: AtomicU64,
    /// Whether polling for replies pays.
    spin: Spin,
    /// Connections held by lock guards, and when one comes back from a loan.
    pinned: Mutex<Vec<Pinned>>,
    pin_back: Condvar,
    next_pin: AtomicU64,
}

/// A connection a lock guard holds (the server gives the lock to a
/// connection), lent meanwhile to the calls of the thread that took the lock:
/// the seed's `with lock: d[k] -= 1` then runs on one connection, served by one
/// server thread that is awake already, instead of waking a second one.
#[derive(Debug)]
struct Pinned {
    token: u64,
    thread: ThreadId,
    conn: PinState,
}

#[derive(Debug)]
enum PinState {
    Here(Connection),
    /// Lent to a call of the guard's thread.
    Lent,
    /// A call on it failed and closed it (the server released the lock).
    Lost,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This process's pid, with no system call after a thread's first: cached
/// with the calling thread's id, which the thread of a fork child does not share.
fn this_pid() -> u32 {
    thread_local! {
        static PID: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
    }
    let tid = current_tid();
    PID.with(|c| match c.get() {
        (t, pid) if t == tid => pid,
        _ => {
            let pid = std::process::id();
            c.set((tid, pid));
            pid
        }
    })
}

/// Endpoints of this process, by server token, so that proxies of one server
/// received separately share connections.
static ENDPOINTS: Mutex<Vec<(u64, Weak<Endpoint>)>> = Mutex::new(Vec::new());

pub(crate) fn registered(token: u64) -> Option<Arc<Endpoint>> {
    let pid = std::process::id();
    let mut list = lock(&ENDPOINTS);
    list.retain(|(_, w)| w.strong_count() > 0);
    list.iter()
        .filter(|(t, _)| *t == token)
        .filter_map(|(_, w)| w.upgrade())
        .find(|e| e.pid == pid)
}

fn register(ep: &Arc<Endpoint>) {
    lock(&ENDPOINTS).push((ep.info.token, Arc::downgrade(ep)));
}

/// Maps a receive failure on a call to the caller's error.
fn recv_error(e: RecvError) -> ManagerError {
    match e {
        RecvError::Eof => ManagerError::ManagerGone,
        RecvError::Timeout => ManagerError::Timeout,
        // The server died mid-reply.
        RecvError::Codec(CodecError::Truncated) => ManagerError::ManagerGone,
        RecvError::Codec(c) => ManagerError::Codec(c),
        RecvError::Io(e) if is_gone(&e) => ManagerError::ManagerGone,
        RecvError::Io(e) => ManagerError::Io(e),
        other => ManagerError::Refused(other.to_string()),
    }
}

fn is_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | ConnectionRefused | NotFound | UnexpectedEof
    )
}

fn connect_error(e: ConnectError) -> ManagerError {
    match e {
        ConnectError::Io(e) if is_gone(&e) => ManagerError::ManagerGone,
        ConnectError::Timeout => ManagerError::Timeout,
        e => ManagerError::Connect(e),
    }
}

/// Maps a send failure to the caller's error.
fn write_error(e: std::io::Error) -> ManagerError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        ManagerError::Timeout
    } else if is_gone(&e) {
        ManagerError::ManagerGone
    } else {
        ManagerError::Io(e)
    }
}

/// Sends `req` on `conn` and waits for the reply until `deadline`.
pub(crate) fn roundtrip(conn: &Connection, req: &Request, deadline: Deadline) -> Result<Reply, ManagerError> {
    roundtrip_frame(conn, &codec::encode(req, false)?, deadline, None)
}

/// [`roundtrip`] with the request already encoded, polling for the reply a
/// little first if `spin` says it pays.
fn roundtrip_frame(
    conn: &Connection,
    out: &Outgoing<'_>,
    deadline: Deadline,
    spin: Option<&Spin>,
) -> Result<Reply, ManagerError> {
    write_frame(conn.fd(), out, deadline).map_err(write_error)?;
    let polled = spin.and_then(|spin| {
        spin.run(REPLY_SPIN, || match conn.try_recv::<Reply>() {
            Err(RecvError::Timeout) => None,
            r => Some(r),
        })
    });
    let reply = match (polled, deadline.remaining()) {
        (Some(r), _) => r,
        (None, None) => conn.recv::<Reply>(),
        (None, Some(left)) => conn.recv_timeout::<Reply>(left),
    };
    reply.map_err(recv_error)
}

impl Endpoint {
    /// An endpoint over the owner's control connection (a local server).
    pub(crate) fn local(info: ServerInfo, control: Connection) -> Arc<Endpoint> {
        Endpoint::registered_new(info, Route::Local(Mutex::new(Some(control))), Vec::new())
    }

    /// A new endpoint, registered under its server's token.
    fn registered_new(info: ServerInfo, route: Route, idle: Vec<Connection>) -> Arc<Endpoint> {
        let ep = Arc::new(Endpoint {
            info,
            route,
            pid: std::process::id(),
            working: AtomicUsize::new(idle.len()),
            idle: Mutex::new(idle),
            returned: Condvar::new(),
            waiters: AtomicUsize::new(0),
            control_lost: AtomicBool::new(false),
            spare: Mutex::new((Vec::new(), 0)),
            timeout_ms: AtomicU64::new(DEFAULT_CALL_TIMEOUT.as_millis() as u64),
            spin: Spin::default(),
            pinned: Mutex::new(Vec::new()),
            pin_back: Condvar::new(),
            next_pin: AtomicU64::new(1),
        });
        register(&ep);
        ep
    }

    /// Connects to a remote server and greets it.
    pub(crate) fn remote(
        addr: &Address,
        authkey: &[u8],
        timeout: Duration,
    ) -> Result<Arc<Endpoint>, ManagerError> {
        let conn = Client::connect_timeout(addr.clone(), Some(authkey), timeout).map_err(connect_error)?;
        let info = match roundtrip(
            &conn,
            &Request::Hello {
                version: PROTOCOL_VERSION,
            },
            Deadline::after(timeout),
        )? {
            Reply::Info(i) => i,
            Reply::Fault(f) => return Err(f.into()),
            other => return Err(unexpected(&other)),
        };
        if let Some(ep) = registered(info.token) {
            // This process reaches that server already (perhaps as its owner):
            // share that way, and close this connection.
            return Ok(ep);
        }
        let route = Route::Remote {
            addr: WireAddr::from(addr),
            authkey: authkey.to_vec(),
        };
        Ok(Endpoint::registered_new(info, route, vec![conn]))
    }

    /// The call timeout in force.
    pub(crate) fn call_timeout(&self) -> Option<Duration> {
        match self.timeout_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub(crate) fn set_call_timeout(&self, t: Option<Duration>) {
        let ms = t.map_or(u64::MAX, |d| d.as_millis().min(u64::MAX as u128 - 1) as u64);
        self.timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// The deadline of an ordinary (non-blocking) call made now.
    pub(crate) fn deadline(&self) -> Deadline {
        Deadline::from_timeout(self.call_timeout())
    }

    /// The deadline of a call that may wait `wait` on the server: that, plus the call timeout.
    pub(crate) fn deadline_after(&self, wait: Option<Duration>) -> Deadline {
        match (wait, self.call_timeout()) {
            (Some(w), Some(t)) => Deadline::after(w.saturating_add(t)),
            _ => Deadline::NEVER,
        }
    }

    fn check_process(&self) -> Result<(), ManagerError> {
        if this_pid() != self.pid {
            return Err(ManagerError::Refused(
                "this proxy was inherited through fork, in the memory of the process, and its \
                 connections belong to the parent: give proxies to children as arguments (with any start \
                 method), or connect to a served manager (Manager::serve / Manager::connect) in the child"
                    .into(),
            ));
        }
        Ok(())
    }

    /// A new connection to the server.
    fn connect(&self) -> Result<Connection, ManagerError> {
        match &self.route {
            Route::Local(_) => self.new_local(1)?.pop().ok_or(ManagerError::ManagerGone),
            Route::Remote { addr, authkey } => {
                let t = self
                    .call_timeout()
                    .unwrap_or(crate::connection::DEFAULT_CONNECT_TIMEOUT);
                Client::connect_timeout(Address::from(addr), Some(authkey), t).map_err(connect_error)
            }
        }
    }

    /// `count` new connections to a local server: socketpairs made here, whose
    /// other ends go to the server on the control connection (`Adopt`, no
    /// reply: no round trip, and the server starts serving them while this
    /// process goes on). A server that is gone is `ManagerGone` here or at the
    /// connection's first call.
    ///
    /// A process that makes connections again and again (a proxy given to
    /// child after child) makes them [`SPARE_BATCH`] at a time, with one
    /// `Adopt`, and keeps the rest for the next calls.
    fn new_local(&self, count: usize) -> Result<Vec<Connection>, ManagerError> {
        let Route::Local(control) = &self.route else {
            return Err(ManagerError::Refused(
                "a remote manager hands out no connections".into(),
            ));
        };
        let make = {
            let mut spare = lock(&self.spare);
            if spare.0.len() >= count {
                let at = spare.0.len() - count;
                return Ok(spare.0.split_off(at));
            }
            spare.1 = spare.1.saturating_add(1);
            if spare.1 > 2 {
                SPARE_BATCH.max(count)
            } else {
                count
            }
        };
        let mut ours = Vec::with_capacity(make);
        let mut theirs = Vec::with_capacity(make);
        for _ in 0..make {
            let (a, b) = Pipe::new().map_err(ManagerError::Io)?;
            ours.push(a);
            theirs.push(b);
        }
        let req = Request::Adopt { conns: theirs };
        let out = codec::encode(&req, true)?;
        let mut control = lock(control);
        if control.is_none() {
            // No control connection (a child's endpoint that needed none yet,
            // or one that failed): a working connection carries the `Adopt`
            // (it has no reply, so it leaves no reply unread).
            drop(control);
            let mut carrier = self.pooled_existing()?;
            let c = carrier.conn.as_ref().ok_or(ManagerError::ManagerGone)?;
            if let Err(e) = write_frame(c.fd(), &out, self.deadline()) {
                carrier.close();
                return Err(write_error(e));
            }
            drop(carrier);
            return Ok(self.keep_spares(ours, count));
        }
        let c = control.as_ref().ok_or(ManagerError::ManagerGone)?;
        match write_frame(c.fd(), &out, self.deadline()) {
            Ok(()) => {
                drop(control);
                Ok(self.keep_spares(ours, count))
            }
            Err(e) => {
                // A control connection that failed may be out of step: drop it.
                *control = None;
                self.control_lost.store(true, Ordering::Relaxed);
                Err(write_error(e))
            }
        }
    }

    /// The first `count` of `ours`; the rest are kept as spares.
    fn keep_spares(&self, mut ours: Vec<Connection>, count: usize) -> Vec<Connection> {
        let mut rest = ours.split_off(count.min(ours.len()));
        // Spare connections go to the front: the oldest are used first.
        let mut spare = lock(&self.spare);
        rest.append(&mut spare.0);
        spare.0 = rest;
        ours
    }

    /// Makes this endpoint's control connection if it has none, sending its
    /// server end on `conn` (an idle connection about to be used). Called
    /// before a request that may keep its connection for long (a wait on the
    /// server, or a lock that a guard then holds): a thread that finds no
    /// idle connection and no control connection can then wait for a working
    /// connection to come back, knowing that each comes back soon.
    ///
    /// # Errors
    ///
    /// As a send on `conn` (which may then be out of step).
    fn ensure_control(&self, conn: &Connection, deadline: Deadline) -> Result<(), ManagerError> {
        let Route::Local(control) = &self.route else {
            return Ok(());
        };
        let mut control = lock(control);
        if control.is_some() {
            return Ok(());
        }
        let (ours, theirs) = Pipe::new().map_err(ManagerError::Io)?;
        let out = codec::encode(&Request::Adopt { conns: vec![theirs] }, true)?;
        write_frame(conn.fd(), &out, deadline).map_err(write_error)?;
        *control = Some(ours);
        Ok(())
    }

    /// A connection for one call (or one held lock), from the pool or new.
    /// The calling thread's lock guard's connection if it has one (see
    /// [`Pinned`]), else one of the pool or a new one.
    pub(crate) fn lease(&self) -> Result<Lease<'_>, ManagerError> {
        self.check_process()?;
        self.lease_checked()
    }

    /// [`lease`](Endpoint::lease) after the process check.
    fn lease_checked(&self) -> Result<Lease<'_>, ManagerError> {
        {
            let mut pins = lock(&self.pinned);
            if !pins.is_empty() {
                let me = std::thread::current().id();
                if let Some(p) = pins
                    .iter_mut()
                    .find(|p| p.thread == me && matches!(p.conn, PinState::Here(_)))
                {
                    if let PinState::Here(c) = std::mem::replace(&mut p.conn, PinState::Lent) {
                        return Ok(Lease {
                            ep: self,
                            conn: Some(c),
                            pin: Some(p.token),
                        });
                    }
                }
            }
        }
        self.pooled()
    }

    /// A connection of the pool or a new one: for taking a lock, whose
    /// connection must be none that a guard holds.
    pub(crate) fn lease_unpinned(&self) -> Result<Lease<'_>, ManagerError> {
        self.check_process()?;
        self.pooled()
    }

    fn pooled(&self) -> Result<Lease<'_>, ManagerError> {
        let pooled = lock(&self.idle).pop();
        let conn = match pooled {
            Some(c) => c,
            None if self.can_connect() => {
                let c = self.connect()?;
                self.working.fetch_add(1, Ordering::Relaxed);
                c
            }
            None => return self.pooled_existing(),
        };
        Ok(Lease {
            ep: self,
            conn: Some(conn),
            pin: None,
        })
    }

    /// True if a new connection can be made without a working one.
    fn can_connect(&self) -> bool {
        match &self.route {
            Route::Local(control) => lock(control).is_some(),
            Route::Remote { .. } => true,
        }
    }

    /// A working connection of this endpoint: an idle one, or the first to
    /// come back from a call (a child's endpoint that has needed no control
    /// connection yet: every working connection is in a call that does not
    /// wait on the server, see [`Endpoint::ensure_control`]). `ManagerGone`
    /// if none is left (or the control connection was lost), `Timeout` after
    /// the call timeout.
    fn pooled_existing(&self) -> Result<Lease<'_>, ManagerError> {
        let deadline = self.deadline();
        let mut idle = lock(&self.idle);
        loop {
            if let Some(c) = idle.pop() {
                return Ok(Lease {
                    ep: self,
                    conn: Some(c),
                    pin: None,
                });
            }
            if self.working.load(Ordering::Relaxed) == 0 || self.control_lost.load(Ordering::Relaxed) {
                return Err(ManagerError::ManagerGone);
            }
            let wait = match deadline.remaining() {
                Some(left) if left.is_zero() => return Err(ManagerError::Timeout),
                Some(left) => left.min(Duration::from_millis(100)),
                None => Duration::from_millis(100),
            };
            self.waiters.fetch_add(1, Ordering::Relaxed);
            idle = self
                .returned
                .wait_timeout(idle, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            self.waiters.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Takes back the connection a lock guard pinned (waiting until `deadline`
    /// while a call of the guard's thread uses it).
    ///
    /// # Errors
    ///
    /// `ManagerGone` if a call closed it meanwhile (the lock went with it),
    /// `Timeout` if it was not given back in time.
    pub(crate) fn unpin(&self, token: u64, deadline: Deadline) -> Result<Lease<'_>, ManagerError> {
        self.check_process()?;
        let mut pins = lock(&self.pinned);
        loop {
            let i = pins
                .iter()
                .position(|p| p.token == token)
                .ok_or(ManagerError::ManagerGone)?;
            if !matches!(pins[i].conn, PinState::Lent) {
                return match pins.swap_remove(i).conn {
                    PinState::Here(c) => Ok(Lease {
                        ep: self,
                        conn: Some(c),
                        pin: None,
                    }),
                    _ => Err(ManagerError::ManagerGone),
                };
            }
            let wait = match deadline.remaining() {
                Some(left) if left.is_zero() => return Err(ManagerError::Timeout),
                Some(left) => left,
                None => Duration::from_secs(1),
            };
            pins = self
                .pin_back
                .wait_timeout(pins, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = lock(&self.idle);
        idle.push(conn);
        // (A notification is a system call: only for a thread that waits.)
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.returned.notify_one();
        }
    }

    /// Counts a working connection as closed.
    fn closed_one(&self) {
        let _ = self
            .working
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        // A waiter may find none left (under the idle lock, so none misses it).
        let _idle = lock(&self.idle);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.returned.notify_all();
        }
    }

    /// One request, one reply, with the call timeout.
    pub(crate) fn call(&self, req: &Request) -> Result<Reply, ManagerError> {
        self.call_deadline(req, self.deadline())
    }

    /// [`call`](Endpoint::call) with its own deadline.
    pub(crate) fn call_deadline(&self, req: &Request, deadline: Deadline) -> Result<Reply, ManagerError> {
        self.lease()?.call(req, deadline)
    }

    /// Drops every pooled connection (and the control one): later calls fail with `ManagerGone`
    /// for a local server.
    pub(crate) fn disconnect(&self) {
        self.control_lost.store(true, Ordering::Relaxed);
        let mut idle = lock(&self.idle);
        let n = idle.len();
        idle.clear();
        drop(idle);
        for _ in 0..n {
            self.closed_one();
        }
        lock(&self.spare).0.clear();
        if let Route::Local(c) = &self.route {
            *lock(c) = None;
        }
    }
}

/// A connection checked out of an endpoint's pool; goes back on drop unless a
/// call on it failed (then it may be out of step and is closed).
pub(crate) struct Lease<'a> {
    ep: &'a Endpoint,
    conn: Option<Connection>,
    /// Lent by this lock guard: goes back to it.
    pin: Option<u64>,
}

impl<'a> Lease<'a> {
    /// Keeps this connection for a lock guard (see [`Pinned`]): the token to
    /// take it back with [`Endpoint::unpin`].
    pub(crate) fn pin(mut self) -> u64 {
        let token = self.ep.next_pin.fetch_add(1, Ordering::Relaxed);
        let conn = match self.conn.take() {
            Some(c) => PinState::Here(c),
            None => PinState::Lost,
        };
        lock(&self.ep.pinned).push(Pinned {
            token,
            thread: std::thread::current().id(),
            conn,
        });
        token
    }

    /// Sends `req` and waits for the reply until `deadline`. A fault reply is an `Err`.
    pub(crate) fn call(&mut self, req: &Request, deadline: Deadline) -> Result<Reply, ManagerError> {
        let r = settle(&mut self.conn, req, deadline, self.ep);
        if self.conn.is_none() {
            self.ep.closed_one();
        }
        r
    }

    /// Closes this lease's connection (it may be out of step).
    fn close(&mut self) {
        if self.conn.take().is_some() {
            self.ep.closed_one();
        }
    }
}

/// One round trip on `slot`'s connection; a fault reply is an `Err`. A
/// connection that may be out of step afterwards (timeout, broken, refused by
/// the server) is closed: `slot` becomes `None`.
fn settle(
    slot: &mut Option<Connection>,
    req: &Request,
    deadline: Deadline,
    ep: &Endpoint,
) -> Result<Reply, ManagerError> {
    let conn = slot.as_ref().ok_or(ManagerError::ManagerGone)?;
    let out = codec::encode(req, false)?;
    let len = out.payload.len() as u64;
    let max = ep.info.max_request;
    if len > max {
        // The server would refuse it from its header and close the connection.
        return Err(ManagerError::Codec(CodecError::TooLarge { len, max }));
    }
    if holds_connection(req) {
        if let Err(e) = ep.ensure_control(conn, deadline) {
            *slot = None;
            return Err(e);
        }
    }
    // A reply that may be long in coming is not polled for.
    let spin = (!may_wait(req)).then_some(&ep.spin);
    match roundtrip_frame(conn, &out, deadline, spin) {
        Ok(Reply::Fault(f @ Fault::Malformed(_))) => {
            // The server closes a connection whose stream it could not read.
            *slot = None;
            Err(f.into())
        }
        Ok(Reply::Fault(f)) => Err(f.into()),
        Ok(r) => Ok(r),
        Err(e @ ManagerError::Codec(CodecError::Encode(_))) => Err(e),
        Err(e) => {
            *slot = None;
            Err(e)
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if this_pid() != self.ep.pid {
            return;
        }
        if let Some(token) = self.pin {
            let mut pins = lock(&self.ep.pinned);
            if let Some(p) = pins.iter_mut().find(|p| p.token == token) {
                p.conn = match self.conn.take() {
                    Some(c) => PinState::Here(c),
                    None => PinState::Lost,
                };
                self.ep.pin_back.notify_all();
                return;
            }
        }
        if let Some(c) = self.conn.take() {
            self.ep.give_back(c);
        }
    }
}

/// True if `req` may keep its connection for long: a wait on the server, or a
/// lock (its guard then holds the connection).
fn holds_connection(req: &Request) -> bool {
    may_wait(req)
        || matches!(
            req,
            Request::Call {
                op: Op::LockAcquire(_),
                ..
            }
        )
}

/// True if the server may hold `req`'s reply back (a lock, queue or event wait).
fn may_wait(req: &Request) -> bool {
    match req {
        Request::Call {
            op: Op::LockAcquire(ms) | Op::EventWait(ms) | Op::QueueGet(ms) | Op::QueuePut(_, ms),
            ..
        } => *ms != Some(0),
        _ => false,
    }
}

pub(crate) fn unexpected(r: &Reply) -> ManagerError {
    ManagerError::Refused(format!("unexpected reply from the manager: {r:?}"))
}

/// How an endpoint travels to another process.
#[derive(Serialize, Deserialize)]
enum EndpointWire {
    /// A fresh connection: the receiver's first working one (it makes a
    /// control connection when it needs one, see `Endpoint::ensure_control`).
    Local {
        info: ServerInfo,
        first: Box<Connection>,
    },
    /// Again in the same message: the receiver has it from the first copy.
    Again { info: ServerInfo },
    /// The address and key to connect with.
    Remote {
        info: ServerInfo,
        addr: WireAddr,
        authkey: Vec<u8>,
    },
}

/// True if a way to the server with `token` was put in the message being
/// encoded already (two proxies of one manager in a child's arguments): the
/// receiver gets one set of connections per message and server, not one per
/// proxy. Records `token` otherwise.
fn sent_in_this_message(token: u64) -> bool {
    thread_local! {
        /// The message being encoded and the servers whose connections it carries.
        static SENT: RefCell<(u64, Vec<u64>)> = const { RefCell::new((0, Vec::new())) };
    }
    let Some(msg) = crate::codec::handles::message_id() else {
        return false;
    };
    SENT.with(|s| {
        let mut s = s.borrow_mut();
        if s.0 != msg {
            *s = (msg, Vec::new());
        }
        if s.1.contains(&token) {
            return true;
        }
        s.1.push(token);
        false
    })
}

/// `Arc<Endpoint>` with the wire format of a proxy's way to its server.
#[derive(Debug, Clone)]
pub(crate) struct EndpointRef(pub(crate) Arc<Endpoint>);

impl Serialize for EndpointRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let ep = &self.0;
        let wire = match &ep.route {
            Route::Local(_) if sent_in_this_message(ep.info.token) => EndpointWire::Again { info: ep.info },
            Route::Local(_) => {
                // The receiver's first working connection (no round trip
                // before its first call).
                let mut fresh = ep.check_process().and_then(|()| ep.new_local(1)).map_err(|e| {
                    crate::codec::handles::fail(format!("cannot pass a manager proxy: {e}"), S::Error::custom)
                })?;
                let Some(first) = fresh.pop() else {
                    return Err(S::Error::custom("the manager handed out no connection"));
                };
                EndpointWire::Local {
                    info: ep.info,
                    first: Box::new(first),
                }
            }
            Route::Remote { addr, authkey } => EndpointWire::Remote {
                info: ep.info,
                addr: addr.clone(),
                authkey: authkey.clone(),
            },
        };
        wire.serialize(s)
    }
}

impl<'de> Deserialize<'de> for EndpointRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let wire = EndpointWire::deserialize(d)?;
        let (info, route, idle) = match wire {
            EndpointWire::Again { info } => {
                return registered(info.token).map(EndpointRef).ok_or_else(|| {
                    crate::codec::handles::fail(
                        "a manager proxy's way to its server came without its first copy".into(),
                        D::Error::custom,
                    )
                })
            }
            EndpointWire::Local { info, first } => (info, Route::Local(Mutex::new(None)), vec![*first]),
            EndpointWire::Remote { info, addr, authkey } => {
                (info, Route::Remote { addr, authkey }, Vec::new())
            }
        };
        if let Some(ep) = registered(info.token) {
            // This process reaches that server already: keep the working
            // connection if its pool is empty (it is this process's own), drop the rest.
            let mut pool = lock(&ep.idle);
            if pool.is_empty() && matches!(ep.route, Route::Local(_)) {
                ep.working.fetch_add(idle.len(), Ordering::Relaxed);
                pool.extend(idle);
                if ep.waiters.load(Ordering::Relaxed) > 0 {
                    ep.returned.notify_all();
                }
            }
            drop(pool);
            return Ok(EndpointRef(ep));
        }
        Ok(EndpointRef(Endpoint::registered_new(info, route, idle)))
    }
}
