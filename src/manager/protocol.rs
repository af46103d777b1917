//! The manager's wire protocol: one [`Request`] frame from the client, one
//! [`Reply`] frame back, on a connection that only this client uses.
//!
//! Values and keys travel as opaque encoded bytes ([`Bytes`]): the server never
//! decodes a user's type, it stores and compares bytes.

use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::connection::Connection;

/// Bumped whenever a request or reply changes shape.
pub(crate) const PROTOCOL_VERSION: u32 = 3;

/// The most connections one `NewConnection` request gets.
pub(crate) const MAX_NEW_CONNECTIONS: u8 = 4;

/// The most connections one `Adopt` request hands over.
pub(crate) const MAX_ADOPT: usize = 16;

/// The largest request (payload bytes) a server accepts unless configured otherwise.
pub(crate) const DEFAULT_MAX_REQUEST: u64 = 64 << 20;

/// An encoded value: serialised as a byte string (one `memcpy`), not a sequence
/// of `u8` (postcard's `Vec<u8>` path goes a byte at a time).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub(crate) struct Bytes(pub(crate) Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({})", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut v = Vec::new();
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        Ok(Bytes(v))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }
}

/// The kinds of object a manager holds (public only to seal [`crate::manager::Proxy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum ObjKind {
    Dict,
    List,
    Value,
    Lock,
    Event,
    Queue,
}

impl fmt::Display for ObjKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ObjKind::Dict => "dict",
            ObjKind::List => "list",
            ObjKind::Value => "value",
            ObjKind::Lock => "lock",
            ObjKind::Event => "event",
            ObjKind::Queue => "queue",
        };
        f.write_str(s)
    }
}

/// Where an atomic update applies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Slot {
    /// The value of a dict entry.
    Key(Bytes),
    /// A list element (negative counts from the end).
    Index(i64),
    /// The whole value of a value object.
    Whole,
}

/// One operation on one object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Op {
    // dict
    DictInsert(Bytes, Bytes),
    DictGet(Bytes),
    DictRemove(Bytes),
    DictContains(Bytes),
    DictKeys,
    DictValues,
    DictItems,
    DictUpdate(Vec<(Bytes, Bytes)>),
    DictSetDefault(Bytes, Bytes),
    // list
    ListPush(Bytes),
    ListPop,
    ListGet(i64),
    ListSet(i64, Bytes),
    ListInsert(i64, Bytes),
    ListRemove(i64),
    ListExtend(Vec<Bytes>),
    ListItems,
    // value
    ValueGet,
    ValueSet(Bytes),
    // lock: wait at most this many milliseconds (`None`: forever)
    LockAcquire(Option<u64>),
    LockRelease,
    // event
    EventSet,
    EventClear,
    EventIsSet,
    EventWait(Option<u64>),
    // queue
    QueuePut(Bytes, Option<u64>),
    QueueGet(Option<u64>),
    // shared by containers
    Len,
    Clear,
    /// Runs the function at `entry` (an update trampoline) on the slot, atomically.
    Update {
        slot: Slot,
        build_id: u64,
        entry: i64,
    },
}

/// A request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// The first request of a remote client: versions and build.
    Hello { version: u32 },
    /// Makes an object; `init` is its initial content (a value's value, a queue's
    /// bound as an encoded `Option<u64>`, empty otherwise).
    Create { kind: ObjKind, init: Bytes },
    /// Applies an operation to an object.
    Call { id: u64, kind: ObjKind, op: Op },
    /// Gives an object a name other clients can look up.
    Register { name: String, id: u64 },
    /// The id and kind of a named object.
    Lookup { name: String },
    /// Asks for `count` new connections to the server (Unix socketpair ends;
    /// not over TCP), at most [`MAX_NEW_CONNECTIONS`]. (This crate's clients
    /// make their own and send `Adopt` instead: no round trip.)
    NewConnection { count: u8 },
    /// Stops the server.
    Shutdown,
    /// Serves these connections (ends of Unix socketpairs the client made)
    /// like any other. The only request without a reply, so that a client
    /// makes a connection without waiting (see `Endpoint::new_local`). Only
    /// for clients of a local manager (not remote ones); at most [`MAX_ADOPT`].
    Adopt { conns: Vec<Connection> },
}

/// Facts a server states about itself.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct ServerInfo {
    pub(crate) version: u32,
    pub(crate) pid: u32,
    pub(crate) build_id: u64,
    pub(crate) token: u64,
    /// The largest request it accepts: clients refuse larger ones before sending.
    pub(crate) max_request: u64,
}

/// Why the server refused an operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Fault {
    NoSuchObject(u64),
    WrongKind {
        id: u64,
        expected: ObjKind,
        actual: ObjKind,
    },
    KeyNotFound,
    IndexOutOfRange {
        index: i64,
        len: u64,
    },
    Empty,
    Full,
    TimedOut,
    NotOwner,
    /// The update function was refused (another build, not a function here).
    Refused(String),
    /// The update function panicked (the stored value is unchanged).
    Panicked(String),
    /// The request was not understood or was too large.
    Malformed(String),
    /// The operation does not apply here.
    Unsupported(String),
    NameNotFound(String),
}

/// A reply.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Unit,
    Bool(bool),
    Len(u64),
    Id(u64),
    Value(Option<Bytes>),
    Values(Vec<Bytes>),
    Items(Vec<(Bytes, Bytes)>),
    Info(ServerInfo),
    Found(u64, ObjKind),
    Conns(Vec<Connection>),
    Fault(Fault),
}
