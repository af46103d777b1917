//! The manager: a server process holding dicts, lists, values, locks, events
//! and queues, shared through typed proxies by every process that can reach it
//! (Python's `multiprocessing.Manager()` / `BaseManager`).
//!
//! | file | holds |
//! | --- | --- |
//! | `mod.rs` | `Manager`, `ManagerBuilder`: start, serve, connect, shut down, make objects |
//! | `server.rs` | the server process: object table, a poller for new and quiet connections, a thread per busy one |
//! | `protocol.rs` | requests and replies |
//! | `endpoint.rs` | the client side: connection pool, calls with deadlines, how proxies travel |
//! | `spin.rs` | bounded adaptive polling for a reply or the next request |
//! | `proxy.rs` | what every proxy shares, the sealed `Proxy` trait |
//! | `dict.rs`, `list.rs`, `value.rs` | `Dict`, `List`, `ValueProxy` |
//! | `sync_proxies.rs` | `LockProxy`, `EventProxy`, `QueueProxy` |
//! | `update.rs` | `update_with`: a function run on the server, identified as a child's is |
//! | `error.rs` | `ManagerError` |

mod dict;
mod endpoint;
mod error;
mod list;
mod namespace;
mod protocol;
mod proxy;
mod server;
mod spin;
mod sync_proxies;
mod update;
mod value;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use dict::Dict;
pub use error::ManagerError;
pub use list::List;
pub use namespace::Namespace;
pub use proxy::Proxy;
pub use sync_proxies::{EventProxy, LockProxy, LockProxyGuard, QueueProxy};
pub use value::ValueProxy;

use crate::connection::{Address, Pipe, RecvError};
use crate::deadline::Deadline;
use crate::manager::endpoint::{unexpected, Endpoint, EndpointRef};
use crate::manager::protocol::{Bytes, Reply, Request, DEFAULT_MAX_REQUEST};
use crate::manager::proxy::{enc, Core};
use crate::manager::server::{server_main, Ready, ServerArgs, WireAddr};
use crate::process::{Process, StartMethod};

/// How long a stopping server gets at each step (ask, then wait, then kill).
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A manager: a server process that holds shared objects, and the way to it.
///
/// [`start`](Manager::start) runs a private server (reached over Unix
/// socketpairs only); [`serve`](Manager::serve) also listens on an address for
/// other programs, which [`connect`](Manager::connect) with the key. Objects are
/// made with [`dict`](Manager::dict), [`list`](Manager::list),
/// [`value`](Manager::value), [`lock`](Manager::lock), [`event`](Manager::event)
/// and [`queue`](Manager::queue); their proxies can be cloned, shared between
/// threads and given to child processes.
///
/// # Drop
///
/// Dropping a manager that started its server (or calling
/// [`shutdown`](Manager::shutdown)) stops the server and reaps it: it is asked to
/// exit, then killed if it has not within a few seconds. Proxies that outlive it
/// return [`ManagerError::ManagerGone`]. Dropping a connected manager stops
/// nothing; its connections close with its last proxy.
///
/// # Examples
///
/// The seed program's shared counter: 10 processes decrement `count` from 10.
///
/// ```
/// use multiproc::{Dict, Manager, Process};
///
/// let m = Manager::start()?;
/// let d: Dict<String, i64> = m.dict()?;
/// d.insert("count".to_string(), 10)?;
/// let workers: Vec<_> = (0..10)
///     .map(|_| Process::spawn(d.clone(), |d| {
///         d.update_with("count", |c: &mut i64| *c -= 1).map(|_| ()).map_err(|e| e.to_string())
///     }))
///     .collect::<Result<_, _>>()?;
/// for w in workers {
///     w.join()??;
/// }
/// assert_eq!(d.get("count")?, Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Differences from Python's multiprocessing
///
/// - Typed proxies; values are serde values (postcard), never pickles: a client,
///   even an authenticated one, cannot make the server run arbitrary code. The
///   only code it runs is an [`update_with`](Dict::update_with) function of the
///   same build of the same executable.
/// - Atomic read-modify-write with `update_with`.
/// - Every call has a deadline ([`set_call_timeout`](Manager::set_call_timeout));
///   a dead server is [`ManagerError::ManagerGone`] at once, never a hang.
/// - A manager lock held by a process that dies is released.
/// - Objects live until the server stops (no reference counting).
#[doc(alias = "SyncManager")]
#[doc(alias = "BaseManager")]
pub struct Manager {
    ep: Arc<Endpoint>,
    server: Option<Process<()>>,
    address: Option<Address>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("server_pid", &self.ep.info.pid)
            .field("owner", &self.server.is_some())
            .field("address", &self.address)
            .finish()
    }
}

/// Settings for starting a [`Manager`]'s server.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Manager, StartMethod};
///
/// let m = Manager::builder()
///     .start_method(StartMethod::Spawn)
///     .call_timeout(Some(Duration::from_secs(5)))
///     .max_request(1 << 20)
///     .start()?;
/// assert_eq!(m.value(7u8)?.get()?, 7);
/// # Ok::<(), multiproc::ManagerError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start` or `serve` is called"]
pub struct ManagerBuilder {
    method: Option<StartMethod>,
    call_timeout: Option<Duration>,
    max_request: u64,
    start_timeout: Duration,
}

impl Default for ManagerBuilder {
    fn default() -> Self {
        ManagerBuilder {
            method: None,
            call_timeout: Some(endpoint::DEFAULT_CALL_TIMEOUT),
            max_request: DEFAULT_MAX_REQUEST,
            start_timeout: Duration::from_secs(30),
        }
    }
}

impl ManagerBuilder {
    /// How the server process starts (default: the process default, see
    /// [`get_start_method`](crate::get_start_method)).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Manager, StartMethod};
    ///
    /// let m = Manager::builder().start_method(StartMethod::Spawn).start()?;
    /// assert_ne!(m.server_pid(), std::process::id()); // a process of its own
    /// assert_eq!(m.value(1u8)?.get()?, 1);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// How long an ordinary call waits for the server before
    /// [`ManagerError::Timeout`] (default 60 s; `None`: forever). Blocking calls
    /// (a lock's `acquire_timeout`, a queue's `get_timeout`) wait their own
    /// timeout plus this one.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Manager, ManagerError};
    /// use std::time::Duration;
    ///
    /// let m = Manager::builder().call_timeout(Some(Duration::from_secs(5))).start()?;
    /// let q = m.queue::<u8>()?;
    /// // A blocking call waits its own timeout, then reports `Empty`, not `Timeout`.
    /// let r = q.get_timeout(Duration::from_millis(20));
    /// assert!(matches!(r, Err(ManagerError::Empty)));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn call_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The largest request, in bytes, the server accepts (default 64 MiB).
    /// Proxies refuse a larger one before sending it
    /// ([`ManagerError::Codec`] with [`CodecError::TooLarge`](crate::CodecError::TooLarge));
    /// the server refuses one from any other client by its header, before
    /// reading it, and closes that connection.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{CodecError, Manager, ManagerError};
    ///
    /// let m = Manager::builder().max_request(1024).start()?;
    /// let v = m.value(Vec::<u8>::new())?;
    /// let r = v.set(vec![0; 4096]);
    /// assert!(matches!(r, Err(ManagerError::Codec(CodecError::TooLarge { .. }))));
    /// assert!(v.get()?.is_empty()); // nothing was sent
    /// v.set(vec![0; 100])?; // a small one goes through
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn max_request(mut self, bytes: u64) -> Self {
        self.max_request = bytes;
        self
    }

    /// Starts a private server (see [`Manager::start`]).
    ///
    /// # Errors
    ///
    /// As [`Manager::start`].
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::builder().start()?;
    /// assert!(m.address().is_none()); // private: nothing listens
    /// let e = m.event()?;
    /// e.set()?;
    /// assert!(e.is_set()?);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn start(self) -> Result<Manager, ManagerError> {
        self.launch(None)
    }

    /// Starts a server that also listens on `addr` (see [`Manager::serve`]).
    ///
    /// # Errors
    ///
    /// As [`Manager::serve`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Address, Manager, ValueProxy};
    ///
    /// let server = Manager::builder().max_request(1 << 16).serve("127.0.0.1:0", b"key")?;
    /// let Some(Address::Tcp(addr)) = server.address() else { panic!("not TCP") };
    /// assert_ne!(addr.port(), 0); // port 0 picked a free port
    /// server.register("n", &server.value(5i32)?)?;
    /// let client = Manager::connect(addr, b"key")?;
    /// assert_eq!(client.lookup::<ValueProxy<i32>>("n")?.get()?, 5);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn serve(self, addr: impl Into<Address>, authkey: &[u8]) -> Result<Manager, ManagerError> {
        let addr = addr.into();
        self.launch(Some((WireAddr::from(&addr), authkey.to_vec())))
    }

    fn launch(self, listen: Option<(WireAddr, Vec<u8>)>) -> Result<Manager, ManagerError> {
        let (ours, theirs) = Pipe::new().map_err(ManagerError::Io)?;
        let args = ServerArgs {
            seed: theirs,
            listen,
            max_request: self.max_request,
        };
        let mut b = Process::builder().name("SyncManager").daemon(true);
        if let Some(m) = self.method {
            b = b.start_method(m);
        }
        // The arguments (our copy of the server's end included) are dropped
        // here, so a server that dies is EOF on `ours`.
        let server = b.spawn(args, server_main)?;
        let ready = ours.recv_timeout::<Ready>(self.start_timeout);
        let fail = |e: ManagerError| {
            let _ = server.kill();
            let _ = server.join_timeout(STOP_GRACE);
            Err(e)
        };
        let (info, bound) = match ready {
            Ok(Ok(r)) => r,
            Ok(Err(why)) => return fail(ManagerError::Refused(why)),
            Err(RecvError::Timeout) => return fail(ManagerError::Timeout),
            Err(RecvError::Eof) => {
                return match server.join_timeout(STOP_GRACE) {
                    Err(e) => Err(ManagerError::Process(e)),
                    _ => fail(ManagerError::ManagerGone),
                }
            }
            Err(e) => return fail(ManagerError::Refused(format!("the server did not start: {e}"))),
        };
        let ep = Endpoint::local(info, ours);
        ep.set_call_timeout(self.call_timeout);
        Ok(Manager {
            ep,
            server: Some(server),
            address: bound.as_ref().map(Address::from),
        })
    }
}

impl Manager {
    /// Starts a manager server process (Python's `multiprocessing.Manager()`),
    /// reachable from this process and from the processes its proxies are given to.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Process`] if the process cannot be started,
    /// [`ManagerError::Timeout`] if it did not report ready within 30 s.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<String>()?;
    /// l.push("hello".into())?;
    /// assert_eq!(l.to_vec()?, ["hello"]);
    /// m.shutdown()?;
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "Manager")]
    pub fn start() -> Result<Manager, ManagerError> {
        ManagerBuilder::default().start()
    }

    /// Settings for the server: start method, call timeout, request size limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let m = multiproc::Manager::builder().call_timeout(Some(Duration::from_secs(10))).start()?;
    /// let l = m.list::<u8>()?;
    /// l.push(1)?;
    /// assert_eq!(l.to_vec()?, [1]);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// Starts a manager server that also listens on `addr` (a Unix socket path or
    /// a TCP address; port 0 picks a free port, see [`address`](Manager::address)),
    /// for other programs to [`connect`](Manager::connect) with `authkey`.
    ///
    /// Every connection must pass the HMAC-SHA256 challenge with the key before
    /// anything it sends is read as a request; requests are size-limited; a
    /// malformed request gets an error reply and the server goes on serving.
    /// Only this process (and the processes its proxies are given to) can shut
    /// the server down, not the clients that connect.
    ///
    /// Give the key only to programs you trust: an authenticated client reads
    /// and writes every object, and its `update_with` functions run in the
    /// server if it runs the same build of the executable (a client of another
    /// build gets [`ManagerError::FunctionRefused`]; the function is never
    /// called at an unchecked address).
    ///
    /// # Errors
    ///
    /// [`ManagerError::Refused`] if the server cannot listen on `addr` (in use,
    /// no permission); otherwise as [`start`](Manager::start).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Manager;
    ///
    /// let server = Manager::serve("127.0.0.1:0", b"secret")?;
    /// let addr = server.address().unwrap();
    /// let q = server.queue::<String>()?;
    /// server.register("jobs", &q)?;
    ///
    /// let client = Manager::connect(addr, b"secret")?;
    /// let jobs = client.lookup::<multiproc::QueueProxy<String>>("jobs")?;
    /// jobs.put("build".into())?;
    /// assert_eq!(q.get()?, "build");
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "BaseManager.start")]
    pub fn serve(addr: impl Into<Address>, authkey: &[u8]) -> Result<Manager, ManagerError> {
        ManagerBuilder::default().serve(addr, authkey)
    }

    /// Connects to a manager started with [`serve`](Manager::serve).
    ///
    /// # Errors
    ///
    /// [`ManagerError::Connect`] with [`AuthError::WrongKey`](crate::AuthError::WrongKey)
    /// for a wrong key, [`ManagerError::ManagerGone`] if nothing listens there,
    /// [`ManagerError::Timeout`] after 60 s.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{AuthError, ConnectError, Manager, ManagerError};
    ///
    /// let server = Manager::serve("127.0.0.1:0", b"right key")?;
    /// let addr = server.address().unwrap();
    /// let wrong = Manager::connect(&addr, b"wrong key");
    /// assert!(matches!(wrong, Err(ManagerError::Connect(ConnectError::Auth(AuthError::WrongKey)))));
    /// let client = Manager::connect(&addr, b"right key")?;
    /// assert_eq!(client.server_pid(), server.server_pid());
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "BaseManager.connect")]
    pub fn connect(addr: impl Into<Address>, authkey: &[u8]) -> Result<Manager, ManagerError> {
        let addr = addr.into();
        let ep = Endpoint::remote(&addr, authkey, endpoint::DEFAULT_CALL_TIMEOUT)?;
        Ok(Manager {
            ep,
            server: None,
            address: Some(addr),
        })
    }

    /// The address the server listens on (`None` for a private server from [`start`](Manager::start)).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Address, Manager};
    ///
    /// let private = Manager::start()?;
    /// assert!(private.address().is_none());
    /// let served = Manager::serve("127.0.0.1:0", b"key")?;
    /// assert!(matches!(served.address(), Some(Address::Tcp(a)) if a.port() != 0));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn address(&self) -> Option<Address> {
        self.address.clone()
    }

    /// The server process's id.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::path::Path;
    ///
    /// let m = multiproc::Manager::start()?;
    /// let proc_dir = format!("/proc/{}", m.server_pid());
    /// assert_ne!(m.server_pid(), std::process::id());
    /// assert!(Path::new(&proc_dir).exists());
    /// m.shutdown()?;
    /// assert!(!Path::new(&proc_dir).exists()); // stopped and reaped
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn server_pid(&self) -> u32 {
        self.ep.info.pid
    }

    /// Sets how long an ordinary call of this process's proxies of this manager
    /// waits for the server (`None`: forever). See [`ManagerBuilder::call_timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Manager, ManagerError};
    /// use std::time::Duration;
    ///
    /// let m = Manager::start()?;
    /// let v = m.value(1u8)?;
    /// m.set_call_timeout(Some(Duration::from_millis(10)));
    /// // The server takes 60 ms over this call: longer than the call timeout.
    /// let slow = v.update_with(|_: &mut u8| std::thread::sleep(Duration::from_millis(60)));
    /// assert!(matches!(slow, Err(ManagerError::Timeout)));
    /// m.set_call_timeout(Some(Duration::from_secs(60)));
    /// assert_eq!(v.get()?, 1); // answers again
    /// # Ok::<(), ManagerError>(())
    /// ```
    pub fn set_call_timeout(&self, timeout: Option<Duration>) {
        self.ep.set_call_timeout(timeout);
    }

    fn create<P: Proxy>(&self, init: Bytes) -> Result<P, ManagerError> {
        match self.ep.call(&Request::Create { kind: P::KIND, init })? {
            Reply::Id(id) => Ok(P::from_core(Core {
                ep: EndpointRef(self.ep.clone()),
                id,
            })),
            other => Err(unexpected(&other)),
        }
    }

    /// A new, empty shared dict.
    ///
    /// # Errors
    ///
    /// [`ManagerError::ManagerGone`], [`ManagerError::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let d = m.dict::<String, u32>()?;
    /// assert_eq!(d.insert("a".into(), 1)?, None);
    /// assert_eq!(d.insert("a".into(), 2)?, Some(1));
    /// assert_eq!(d.get("a")?, Some(2));
    /// assert_eq!(d.len()?, 1);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn dict<K, V>(&self) -> Result<Dict<K, V>, ManagerError> {
        self.create(Bytes::default())
    }

    /// A new namespace with no field set: named fields of any types (Python's
    /// `Manager().Namespace()`).
    ///
    /// # Errors
    ///
    /// As [`dict`](Manager::dict).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let ns = m.namespace()?;
    /// assert_eq!(ns.get::<u32>("x")?, None);
    /// ns.set("x", &10u32)?;
    /// ns.set("name", "job")?;
    /// assert_eq!(ns.get::<u32>("x")?, Some(10));
    /// assert_eq!(ns.get::<String>("name")?.as_deref(), Some("job"));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "Namespace")]
    pub fn namespace(&self) -> Result<Namespace, ManagerError> {
        self.create(Bytes::default())
    }

    /// A new, empty shared list.
    ///
    /// # Errors
    ///
    /// As [`dict`](Manager::dict).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let l = m.list::<String>()?;
    /// assert!(l.is_empty()?);
    /// l.extend(["a".to_string(), "b".into()])?;
    /// assert_eq!(l.to_vec()?, ["a", "b"]);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn list<T>(&self) -> Result<List<T>, ManagerError> {
        self.create(enc(&Vec::<Bytes>::new())?)
    }

    /// A new shared value, set to `init`.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Codec`] if `init` cannot be encoded; otherwise as [`dict`](Manager::dict).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let v = m.value((1u8, String::from("x")))?;
    /// assert_eq!(v.get()?, (1, "x".to_string()));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "Value")]
    pub fn value<T: Serialize + DeserializeOwned>(&self, init: T) -> Result<ValueProxy<T>, ManagerError> {
        self.create(enc(&init)?)
    }

    /// A new lock, released.
    ///
    /// # Errors
    ///
    /// As [`dict`](Manager::dict).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let lock = m.lock()?;
    /// let guard = lock.acquire()?;
    /// assert!(lock.try_acquire()?.is_none()); // taken
    /// drop(guard);
    /// assert!(lock.try_acquire()?.is_some());
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "Lock")]
    pub fn lock(&self) -> Result<LockProxy, ManagerError> {
        self.create(Bytes::default())
    }

    /// A new event, clear.
    ///
    /// # Errors
    ///
    /// As [`dict`](Manager::dict).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let e = m.event()?;
    /// assert!(!e.is_set()?);
    /// e.set()?;
    /// assert!(e.is_set()?);
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "Event")]
    pub fn event(&self) -> Result<EventProxy, ManagerError> {
        self.create(Bytes::default())
    }

    /// A new queue without an item limit.
    ///
    /// # Errors
    ///
    /// As [`dict`](Manager::dict).
    ///
    /// # Examples
    ///
    /// ```
    /// let m = multiproc::Manager::start()?;
    /// let q = m.queue::<u32>()?;
    /// for i in 0..100 {
    ///     q.try_put(i)?; // never full
    /// }
    /// assert_eq!(q.len()?, 100);
    /// assert_eq!(q.get()?, 0); // first in, first out
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    #[doc(alias = "Queue")]
    pub fn queue<T>(&self) -> Result<QueueProxy<T>, ManagerError> {
        self.create(enc(&Option::<u64>::None)?)
    }

    /// A new queue holding at most `maxsize` items.
    ///
    /// # Errors
    ///
    /// As [`dict`](Manager::dict).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::ManagerError;
    ///
    /// let m = multiproc::Manager::start()?;
    /// let q = m.bounded_queue::<u32>(1)?;
    /// q.put(1)?;
    /// assert!(matches!(q.try_put(2), Err(ManagerError::Full)));
    /// assert_eq!(q.get()?, 1);
    /// q.try_put(2)?; // room again
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn bounded_queue<T>(&self, maxsize: usize) -> Result<QueueProxy<T>, ManagerError> {
        self.create(enc(&Some(maxsize as u64))?)
    }

    /// Gives `proxy`'s object a name on the server, for [`lookup`](Manager::lookup)
    /// by other clients (Python's `BaseManager.register` with a shared object).
    /// A name given again points to the new object.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Refused`] if the proxy belongs to another manager; otherwise as
    /// [`dict`](Manager::dict).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Dict, Manager, ManagerError};
    ///
    /// let (m, other) = (Manager::start()?, Manager::start()?);
    /// let d = m.dict::<String, u8>()?;
    /// m.register("d", &d)?;
    /// let found: Dict<String, u8> = m.lookup("d")?;
    /// d.insert("k".into(), 1)?;
    /// assert_eq!(found.get("k")?, Some(1)); // the same object
    /// assert!(matches!(other.register("d", &d), Err(ManagerError::Refused(_))));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn register<P: Proxy>(&self, name: &str, proxy: &P) -> Result<(), ManagerError> {
        let core = proxy.core();
        if core.ep.0.info.token != self.ep.info.token {
            return Err(ManagerError::Refused(
                "the proxy belongs to another manager".into(),
            ));
        }
        match self.ep.call(&Request::Register {
            name: name.to_string(),
            id: core.id,
        })? {
            Reply::Unit => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// A proxy for the object named `name` (see [`register`](Manager::register)).
    /// The server checks the kind of object (a dict is not a list); the element
    /// types are the caller's to get right (a mismatch fails to decode).
    ///
    /// # Errors
    ///
    /// [`ManagerError::NoSuchObject`] if no object has that name,
    /// [`ManagerError::WrongKind`] if it is another kind of object.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Dict, Manager, ManagerError, QueueProxy};
    ///
    /// let m = Manager::start()?;
    /// m.register("q", &m.queue::<u8>()?)?;
    /// m.lookup::<QueueProxy<u8>>("q")?.put(7)?;
    /// assert_eq!(m.lookup::<QueueProxy<u8>>("q")?.try_get()?, 7);
    /// assert!(matches!(m.lookup::<Dict<u8, u8>>("q"), Err(ManagerError::WrongKind { .. })));
    /// assert!(matches!(m.lookup::<Dict<u8, u8>>("nope"), Err(ManagerError::NoSuchObject(_))));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn lookup<P: Proxy>(&self, name: &str) -> Result<P, ManagerError> {
        match self.ep.call(&Request::Lookup {
            name: name.to_string(),
        })? {
            Reply::Found(id, kind) if kind == P::KIND => Ok(P::from_core(Core {
                ep: EndpointRef(self.ep.clone()),
                id,
            })),
            Reply::Found(_, kind) => Err(ManagerError::WrongKind {
                expected: P::KIND.to_string(),
                actual: kind.to_string(),
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Stops the server and waits for it to exit (Python's `shutdown()`).
    /// Proxies of a stopped server return [`ManagerError::ManagerGone`]. For a
    /// connected manager, does nothing but drop it (only the process that
    /// started a server can stop it).
    ///
    /// # Errors
    ///
    /// [`ManagerError::Process`] if the server could not be killed and reaped.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Manager, ManagerError};
    ///
    /// let m = Manager::start()?;
    /// let v = m.value(1u8)?;
    /// m.shutdown()?;
    /// assert!(matches!(v.get(), Err(ManagerError::ManagerGone)));
    /// # Ok::<(), multiproc::ManagerError>(())
    /// ```
    pub fn shutdown(mut self) -> Result<(), ManagerError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), ManagerError> {
        let Some(server) = self.server.take() else {
            // A connected manager: its connections close with the last proxy
            // (the endpoint may be shared with other managers and proxies).
            return Ok(());
        };
        // Ask; a server that is already gone answers nothing, which is fine.
        let asked = self
            .ep
            .call_deadline(&Request::Shutdown, Deadline::after(STOP_GRACE));
        self.ep.disconnect();
        if asked.is_ok() {
            if let Ok(Some(())) = server.join_timeout(STOP_GRACE) {
                return Ok(());
            }
        }
        if server.exit_status().is_none() {
            let _ = server.kill();
        }
        match server.join_timeout(STOP_GRACE) {
            // Killed or dead already: stopped and reaped either way.
            Ok(_) | Err(_) if server.exit_status().is_some() => Ok(()),
            Ok(_) => Err(ManagerError::Timeout),
            Err(e) => Err(ManagerError::Process(e)),
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
