//! `Listener` and `Client`: connections between unrelated processes, over a Unix
//! socket path or TCP, with an optional authentication key.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::connection::auth;
use crate::connection::conn::{Connection, Family};
use crate::connection::error::ConnectError;
use crate::deadline::Deadline;
use crate::sys::listen::{connect_tcp, connect_unix, ListenSocket};

/// Where a [`Listener`] listens and a [`Client`] connects: a Unix socket path or a
/// TCP address.
///
/// From a string: an IP socket address (`"127.0.0.1:6000"`, `"[::1]:6000"`) is TCP;
/// a string without `/` of the form `host:port` (`"localhost:6000"`) is TCP, the
/// host resolved when binding or connecting; anything else is a Unix path.
///
/// # Examples
///
/// ```
/// use multiproc::Address;
/// assert!(matches!(Address::from("127.0.0.1:0"), Address::Tcp(_)));
/// assert!(matches!(Address::from("localhost:8000"), Address::Host(_)));
/// assert!(matches!(Address::from("/tmp/app.sock"), Address::Unix(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A Unix stream socket at this path (Python's `AF_UNIX` family).
    Unix(PathBuf),
    /// A TCP address (Python's `AF_INET`/`AF_INET6`).
    Tcp(SocketAddr),
    /// A `host:port` TCP address, resolved when used.
    Host(String),
}

impl Address {
    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        match self {
            Address::Tcp(a) => Ok(vec![*a]),
            Address::Host(h) => {
                let v: Vec<SocketAddr> = h.to_socket_addrs()?.collect();
                if v.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{h} resolves to no address"),
                    ));
                }
                Ok(v)
            }
            Address::Unix(_) => Ok(Vec::new()),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Host(h) => f.write_str(h),
        }
    }
}

impl From<&str> for Address {
    fn from(s: &str) -> Self {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Address::Tcp(a);
        }
        if !s.contains('/') {
            if let Some((host, port)) = s.rsplit_once(':') {
                if !host.is_empty() && port.parse::<u16>().is_ok() {
                    return Address::Host(s.to_string());
                }
            }
        }
        Address::Unix(PathBuf::from(s))
    }
}

impl From<String> for Address {
    fn from(s: String) -> Self {
        Address::from(s.as_str())
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Tcp(a)
    }
}

impl From<&Path> for Address {
    fn from(p: &Path) -> Self {
        Address::Unix(p.to_path_buf())
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Self {
        Address::Unix(p)
    }
}

impl From<&PathBuf> for Address {
    fn from(p: &PathBuf) -> Self {
        Address::Unix(p.clone())
    }
}

impl From<&Address> for Address {
    fn from(a: &Address) -> Self {
        a.clone()
    }
}

/// How long a listener gives a client to complete the authentication handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Client::connect`] waits for the connection and the handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// A bound socket that accepts [`Connection`]s from [`Client`]s
/// (Python's `multiprocessing.connection.Listener`).
///
/// With an authentication key, every client must prove that it knows the key,
/// and the listener proves it to the client (HMAC-SHA256 on random nonces, both
/// ways). Before that, nothing the client sends is deserialised and at most 73
/// bytes of it are read; a client that stays silent is dropped after the
/// handshake timeout ([`DEFAULT_HANDSHAKE_TIMEOUT`]).
///
/// # Drop
///
/// Closes the socket and, for a Unix path, removes the socket file. Connections
/// already accepted stay open.
///
/// # Examples
///
/// ```
/// use multiproc::{Client, Listener};
///
/// let dir = std::env::temp_dir().join(format!("mp-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let listener = Listener::bind(dir.join("sock"), Some(b"secret".as_slice()))?;
/// let addr = listener.address();
/// let t = std::thread::spawn(move || -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
///     let c = Client::connect(addr, Some(b"secret".as_slice()))?;
///     c.send(&41u32)?;
///     Ok(c.recv::<u32>()?)
/// });
/// let conn = listener.accept()?;
/// let n: u32 = conn.recv()?;
/// conn.send(&(n + 1))?;
/// assert_eq!(t.join().unwrap().unwrap(), 42);
/// # drop(listener); std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Differences from Python's multiprocessing
///
/// The handshake uses HMAC-SHA256 only, with a deadline; messages are serde values,
/// never pickles, so even an authenticated peer cannot make this side run code.
/// Binding a Unix path that exists (even a stale socket file) is an error.
#[doc(alias = "multiprocessing.connection.Listener")]
pub struct Listener {
    sock: ListenSocket,
    address: Address,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Duration,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl Listener {
    /// Binds `addr` and listens. TCP port 0 picks a free port (see [`address`](Listener::address)).
    ///
    /// # Errors
    ///
    /// The bind error: `AddrInUse` for an address in use (a Unix path that exists),
    /// `NotFound` for a host that resolves to nothing, and so on.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Address, Listener};
    ///
    /// let tcp = Listener::bind("127.0.0.1:0", None)?;
    /// let Address::Tcp(addr) = tcp.address() else { panic!("a TCP address") };
    /// assert_ne!(addr.port(), 0); // port 0 picked a free port
    /// let dir = std::env::temp_dir().join(format!("mp-doc-bind-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("sock");
    /// let unix = Listener::bind(&path, None)?;
    /// assert_eq!(Listener::bind(&path, None).unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
    /// drop(unix); // removes the socket file
    /// assert!(!path.exists());
    /// std::fs::remove_dir(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "Listener")]
    pub fn bind(addr: impl Into<Address>, authkey: Option<&[u8]>) -> io::Result<Listener> {
        let addr = addr.into();
        let (sock, address) = match &addr {
            Address::Unix(p) => (ListenSocket::bind_unix(p)?, addr.clone()),
            _ => {
                let mut last = None;
                let mut bound = None;
                for a in addr.resolve()? {
                    match ListenSocket::bind_tcp(a) {
                        Ok(s) => {
                            bound = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let sock = bound.ok_or_else(|| last.unwrap_or_else(|| io::Error::other("no address")))?;
                let actual = match sock.tcp_addr() {
                    Some(a) => Address::Tcp(a?),
                    None => addr.clone(),
                };
                (sock, actual)
            }
        };
        Ok(Listener {
            sock,
            address,
            authkey: authkey.map(<[u8]>::to_vec),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// The address clients connect to (for TCP, with the port actually bound).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Client, Listener};
    /// use std::time::Duration;
    ///
    /// let listener = Listener::bind("127.0.0.1:0", None)?;
    /// let addr = listener.address();
    /// assert!(addr.to_string().starts_with("127.0.0.1:"));
    /// let client = Client::connect(addr, None)?;
    /// client.send(&1u8)?;
    /// let conn = listener.accept_timeout(Duration::from_secs(5))?;
    /// assert_eq!(conn.recv_timeout::<u8>(Duration::from_secs(5))?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn address(&self) -> Address {
        self.address.clone()
    }

    /// Sets how long a client gets to complete the authentication handshake.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{AuthError, ConnectError, Listener};
    /// use std::net::TcpStream;
    /// use std::time::Duration;
    ///
    /// let mut listener = Listener::bind("127.0.0.1:0", Some(b"key".as_slice()))?;
    /// listener.set_handshake_timeout(Duration::from_millis(20));
    /// let _silent = TcpStream::connect(listener.address().to_string())?; // never answers
    /// let err = listener.accept_timeout(Duration::from_secs(5)).unwrap_err();
    /// assert!(matches!(err, ConnectError::Auth(AuthError::Timeout)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    fn accept_deadline(&self, deadline: Deadline) -> Result<Connection, ConnectError> {
        use std::os::fd::AsFd;
        let fd = self.sock.accept(deadline)?;
        if let Some(key) = &self.authkey {
            auth::answer(fd.as_fd(), key, Deadline::after(self.handshake_timeout))?;
        }
        let family = match self.address {
            Address::Unix(_) => Family::Unix,
            _ => Family::Tcp,
        };
        Ok(Connection::from_fd(fd, family, true, true))
    }

    /// Waits for a client and returns the connection to it, once it has
    /// authenticated (with a key).
    ///
    /// # Errors
    ///
    /// [`ConnectError::Auth`] if this client failed the handshake (wrong key,
    /// garbage, silence past the handshake timeout): the client is dropped and the
    /// listener serves the next one on the next call. [`ConnectError::Io`] if
    /// accepting failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Client, Listener};
    /// use std::time::Duration;
    ///
    /// let listener = Listener::bind("127.0.0.1:0", None)?;
    /// let client = Client::connect(listener.address(), None)?;
    /// let conn = listener.accept()?; // the client is already waiting
    /// client.send(&"hi".to_string())?;
    /// assert_eq!(conn.recv_timeout::<String>(Duration::from_secs(5))?, "hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept(&self) -> Result<Connection, ConnectError> {
        self.accept_deadline(Deadline::NEVER)
    }

    /// [`accept`](Listener::accept), waiting at most `timeout` for a client to
    /// arrive (the handshake then has its own timeout).
    ///
    /// # Errors
    ///
    /// As `accept`, plus [`ConnectError::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Client, ConnectError, Listener};
    /// use std::time::Duration;
    ///
    /// let listener = Listener::bind("127.0.0.1:0", None)?;
    /// let none = listener.accept_timeout(Duration::from_millis(10));
    /// assert!(matches!(none, Err(ConnectError::Timeout)));
    /// let client = Client::connect(listener.address(), None)?;
    /// let conn = listener.accept_timeout(Duration::from_secs(5))?;
    /// conn.send(&2u16)?;
    /// assert_eq!(client.recv_timeout::<u16>(Duration::from_secs(5))?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection, ConnectError> {
        self.accept_deadline(Deadline::after(timeout))
    }

    /// [`accept`](Listener::accept) if a client is waiting now.
    ///
    /// # Errors
    ///
    /// As `accept`, plus [`ConnectError::Timeout`] if none is.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{wait, Client, ConnectError, Listener};
    /// use std::time::Duration;
    ///
    /// let listener = Listener::bind("127.0.0.1:0", None)?;
    /// assert!(matches!(listener.try_accept(), Err(ConnectError::Timeout))); // nobody yet
    /// let _client = Client::connect(listener.address(), None)?;
    /// assert_eq!(wait(&[&listener], Some(Duration::from_secs(5)))?, vec![0]);
    /// assert!(listener.try_accept().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_accept(&self) -> Result<Connection, ConnectError> {
        self.accept_deadline(Deadline::after(Duration::ZERO))
    }

    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.fd()
    }

    /// Closes the listener (same as dropping it).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Client, Listener};
    ///
    /// let dir = std::env::temp_dir().join(format!("mp-doc-close-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("sock");
    /// let listener = Listener::bind(&path, None)?;
    /// assert!(path.exists());
    /// listener.close();
    /// assert!(!path.exists()); // the socket file is gone
    /// assert!(Client::connect(&path, None).is_err());
    /// std::fs::remove_dir(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(self) {
        drop(self);
    }
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client`).
///
/// # Examples
///
/// ```
/// use multiproc::{Client, Listener};
/// use std::time::Duration;
///
/// let listener = Listener::bind("127.0.0.1:0", None)?;
/// let conn = Client::connect(listener.address(), None)?;
/// let server_side = listener.accept_timeout(Duration::from_secs(5))?;
/// conn.send(&[1u8, 2, 3])?;
/// assert_eq!(server_side.recv_timeout::<[u8; 3]>(Duration::from_secs(5))?, [1, 2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// With an authentication key, see [`Listener`].
#[doc(alias = "multiprocessing.connection.Client")]
#[derive(Debug)]
pub struct Client;

impl Client {
    /// Connects to `addr` and, with a key, runs the authentication handshake;
    /// gives up after [`DEFAULT_CONNECT_TIMEOUT`]. Both sides must agree on whether
    /// there is a key.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Auth`] if the keys differ ([`AuthError::WrongKey`](crate::AuthError::WrongKey)),
    /// the peer is not a multiproc listener, or the handshake is not complete in
    /// time ([`AuthError::Timeout`](crate::AuthError::Timeout): the listener has not
    /// accepted, or is slow); [`ConnectError::Io`] if the connection is refused;
    /// [`ConnectError::Timeout`] if the TCP connection is not made in time.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Client, Listener};
    /// use std::time::Duration;
    ///
    /// let listener = Listener::bind("127.0.0.1:0", Some(b"key".as_slice()))?;
    /// let addr = listener.address();
    /// let server = std::thread::spawn(move || -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    ///     let conn = listener.accept_timeout(Duration::from_secs(5))?;
    ///     Ok(conn.recv_timeout::<u32>(Duration::from_secs(5))?)
    /// });
    /// let conn = Client::connect(addr, Some(b"key".as_slice()))?;
    /// conn.send(&5u32)?;
    /// assert_eq!(server.join().unwrap().unwrap(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "Client")]
    #[allow(clippy::new_ret_no_self)]
    pub fn connect(addr: impl Into<Address>, authkey: Option<&[u8]>) -> Result<Connection, ConnectError> {
        Client::connect_timeout(addr, authkey, DEFAULT_CONNECT_TIMEOUT)
    }

    /// [`connect`](Client::connect), giving up after `timeout` (connection and
    /// handshake together).
    ///
    /// # Errors
    ///
    /// As `connect`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{AuthError, Client, ConnectError, Listener};
    /// use std::time::Duration;
    ///
    /// let listener = Listener::bind("127.0.0.1:0", Some(b"key".as_slice()))?;
    /// // Nobody accepts, so the handshake cannot complete in time.
    /// let key = Some(b"key".as_slice());
    /// let r = Client::connect_timeout(listener.address(), key, Duration::from_millis(20));
    /// assert!(matches!(r, Err(ConnectError::Auth(AuthError::Timeout))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect_timeout(
        addr: impl Into<Address>,
        authkey: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Connection, ConnectError> {
        use std::os::fd::AsFd;
        let deadline = Deadline::after(timeout);
        let addr = addr.into();
        let (fd, family) = match &addr {
            Address::Unix(p) => (connect_unix(p)?, Family::Unix),
            _ => {
                let mut last = None;
                let mut fd = None;
                for a in addr.resolve()? {
                    match connect_tcp(a, deadline) {
                        Ok(f) => {
                            fd = Some(f);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let fd = fd.ok_or_else(|| last.unwrap_or_else(|| io::Error::other("no address")))?;
                (fd, Family::Tcp)
            }
        };
        if let Some(key) = authkey {
            auth::deliver(fd.as_fd(), key, deadline)?;
        }
        Ok(Connection::from_fd(fd, family, true, true))
    }
}
