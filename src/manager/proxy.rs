//! What every proxy shares: the way to its server and its object's id, the
//! encoding of values to and from the server, and the sealed [`Proxy`] trait.

use std::cell::Cell;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::manager::endpoint::{registered, unexpected, EndpointRef};
use crate::manager::error::ManagerError;
use crate::manager::protocol::{Bytes, ObjKind, Op, Reply, Request};

/// A proxy's object: its server and its id there. Public only to seal [`Proxy`].
#[derive(Clone)]
pub struct Core {
    pub(crate) ep: EndpointRef,
    pub(crate) id: u64,
}

thread_local! {
    /// True while a value is encoded for, or decoded from, a manager's storage.
    static STORING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` in storage mode: proxies inside values travel as references.
fn storing<R>(f: impl FnOnce() -> R) -> R {
    let was = STORING.with(|s| s.replace(true));
    let r = f();
    STORING.with(|s| s.set(was));
    r
}

/// How a proxy travels.
#[derive(Serialize, Deserialize)]
enum CoreWire {
    /// To another process: a way to the server of its own, and the object's id.
    Handle(EndpointRef, u64),
    /// Inside a value stored by a manager (a nested proxy): the server's token
    /// and the object's id. Whoever reads it back uses its own way to that server.
    Nested { token: u64, id: u64 },
}

/// [`CoreWire`] by reference (same variants, same order).
#[derive(Serialize)]
#[serde(rename = "CoreWire")]
enum CoreWireRef<'a> {
    Handle(&'a EndpointRef, u64),
    Nested { token: u64, id: u64 },
}

impl Serialize for Core {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if STORING.with(Cell::get) {
            CoreWireRef::Nested {
                token: self.ep.0.info.token,
                id: self.id,
            }
            .serialize(s)
        } else {
            CoreWireRef::Handle(&self.ep, self.id).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Core {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match CoreWire::deserialize(d)? {
            CoreWire::Handle(ep, id) => Ok(Core { ep, id }),
            CoreWire::Nested { token, id } => match registered(token) {
                Some(ep) => Ok(Core {
                    ep: EndpointRef(ep),
                    id,
                }),
                None => Err(crate::codec::handles::fail(
                    "a nested proxy refers to a manager this process is not connected to".into(),
                    D::Error::custom,
                )),
            },
        }
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("server_pid", &self.ep.0.info.pid)
            .field("id", &self.id)
            .finish()
    }
}

impl Core {
    /// Applies `op` to this object of kind `kind`.
    pub(crate) fn op(&self, kind: ObjKind, op: Op) -> Result<Reply, ManagerError> {
        self.ep.0.call(&Request::Call {
            id: self.id,
            kind,
            op,
        })
    }
}

/// Encodes a value for the server.
pub(crate) fn enc<T: Serialize + ?Sized>(v: &T) -> Result<Bytes, ManagerError> {
    Ok(Bytes(storing(|| codec::to_bytes(v))?))
}

/// Decodes a value from the server.
pub(crate) fn dec<T: DeserializeOwned>(b: &Bytes) -> Result<T, ManagerError> {
    Ok(storing(|| codec::decode_value::<T>(&b.0, Vec::new()))?)
}

/// `Reply::Value(Some(..))` decoded.
pub(crate) fn value<T: DeserializeOwned>(r: Reply) -> Result<T, ManagerError> {
    match r {
        Reply::Value(Some(b)) => dec(&b),
        other => Err(unexpected(&other)),
    }
}

/// `Reply::Value(..)` decoded.
pub(crate) fn opt_value<T: DeserializeOwned>(r: Reply) -> Result<Option<T>, ManagerError> {
    match r {
        Reply::Value(b) => b.as_ref().map(dec).transpose(),
        other => Err(unexpected(&other)),
    }
}

/// `Reply::Values(..)` decoded.
pub(crate) fn values<T: DeserializeOwned>(r: Reply) -> Result<Vec<T>, ManagerError> {
    match r {
        Reply::Values(v) => v.iter().map(dec).collect(),
        other => Err(unexpected(&other)),
    }
}

/// `Reply::Len(..)`.
pub(crate) fn len(r: Reply) -> Result<usize, ManagerError> {
    match r {
        Reply::Len(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        other => Err(unexpected(&other)),
    }
}

/// `Reply::Bool(..)`.
pub(crate) fn boolean(r: Reply) -> Result<bool, ManagerError> {
    match r {
        Reply::Bool(b) => Ok(b),
        other => Err(unexpected(&other)),
    }
}

/// `Reply::Unit`.
pub(crate) fn unit(r: Reply) -> Result<(), ManagerError> {
    match r {
        Reply::Unit => Ok(()),
        other => Err(unexpected(&other)),
    }
}

pub(crate) mod sealed {
    use super::{Core, ObjKind};

    /// Seals [`Proxy`](super::Proxy).
    pub trait Sealed: Sized {
        /// The kind of object this proxy stands for.
        const KIND: ObjKind;
        /// A proxy for the object `core`.
        fn from_core(core: Core) -> Self;
        /// This proxy's object.
        fn core(&self) -> &Core;
    }
}

/// A proxy for an object held by a [`Manager`](crate::Manager): [`Dict`](crate::Dict),
/// [`List`](crate::List), [`ValueProxy`](crate::ValueProxy), [`LockProxy`](crate::LockProxy),
/// [`EventProxy`](crate::EventProxy), [`QueueProxy`](crate::QueueProxy).
///
/// Used by [`Manager::register`](crate::Manager::register) and
/// [`Manager::lookup`](crate::Manager::lookup). Sealed: implemented by this crate only.
///
/// # Examples
///
/// ```
/// use multiproc::{List, Manager, ManagerError, Proxy, ValueProxy};
///
/// // Works with any kind of proxy.
/// fn publish<P: Proxy>(m: &Manager, name: &str, p: &P) -> Result<(), ManagerError> {
///     m.register(name, p)
/// }
/// let m = Manager::start()?;
/// publish(&m, "list", &m.list::<u8>()?)?;
/// publish(&m, "value", &m.value(1u8)?)?;
/// m.lookup::<List<u8>>("list")?.push(3)?;
/// assert_eq!(m.lookup::<List<u8>>("list")?.to_vec()?, [3]);
/// assert_eq!(m.lookup::<ValueProxy<u8>>("value")?.get()?, 1);
/// # Ok::<(), ManagerError>(())
/// ```
pub trait Proxy: sealed::Sealed + Clone + Send + Sync {}

/// Implements the common traits of a proxy type `$t` over a `core: Core` field.
macro_rules! proxy_common {
    ($t:ident < $($g:ident),* >, $kind:expr) => {
        impl<$($g),*> Clone for $t<$($g),*> {
            fn clone(&self) -> Self {
                $t { core: self.core.clone(), _t: std::marker::PhantomData }
            }
        }
        impl<$($g),*> std::fmt::Debug for $t<$($g),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($t)).field(&self.core).finish()
            }
        }
        impl<$($g),*> serde::Serialize for $t<$($g),*> {
            /// Serialises as a fresh connection to the server (local manager) or
            /// its address and key (remote manager): the receiving process uses
            /// its own connections.
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.core.serialize(s)
            }
        }
        impl<'de, $($g),*> serde::Deserialize<'de> for $t<$($g),*> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok($t { core: $crate::manager::proxy::Core::deserialize(d)?, _t: std::marker::PhantomData })
            }
        }
        impl<$($g),*> $crate::manager::proxy::sealed::Sealed for $t<$($g),*> {
            const KIND: $crate::manager::protocol::ObjKind = $kind;
            fn from_core(core: $crate::manager::proxy::Core) -> Self {
                $t { core, _t: std::marker::PhantomData }
            }
            fn core(&self) -> &$crate::manager::proxy::Core {
                &self.core
            }
        }
        impl<$($g),*> $crate::manager::proxy::Proxy for $t<$($g),*> {}
    };
    ($t:ident, $kind:expr) => {
        proxy_common!($t<>, $kind);
    };
}
pub(crate) use proxy_common;
