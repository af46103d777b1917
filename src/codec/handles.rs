//! The out-of-band descriptor list that lets handles travel with data.
//!
//! A handle (a `Connection`, a `Queue`, a shared-memory segment, ...) implements
//! `Serialize` with [`serialize_fd`]: its descriptor is duplicated into the list of
//! the message being encoded and only its index goes into the bytes. The list then
//! travels as SCM_RIGHTS beside the bytes, and [`deserialize_fd`] takes the received
//! descriptor back by index. Where no descriptor can travel (inside a shared-memory
//! queue, or in a plain [`crate::codec::encode`] without handles) serialising a
//! handle is an error that says so.

use std::cell::{Cell, RefCell};
use std::os::fd::{BorrowedFd, OwnedFd};

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

thread_local! {
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
    /// The reason of the last handle failure (postcard drops custom messages).
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The message whose descriptors are being collected, and the last number given.
    static MESSAGE: Cell<Option<u64>> = const { Cell::new(None) };
    static LAST_MESSAGE: Cell<u64> = const { Cell::new(0) };
}

/// A number for the message whose handles this thread is collecting now (in
/// [`collect_fds`]), unique on this thread; `None` outside. A handle that
/// appears twice in one message (a manager's way to its server in two proxies)
/// can then travel once.
pub(crate) fn message_id() -> Option<u64> {
    MESSAGE.with(Cell::get)
}

/// Takes the message of the last handle (de)serialisation failure on this thread.
pub(crate) fn take_error() -> Option<String> {
    LAST_ERROR.with(|e| e.borrow_mut().take())
}

/// Records `msg` as the last handle failure on this thread (postcard drops custom
/// messages) and builds the error with `f`.
pub(crate) fn fail<E>(msg: String, f: impl FnOnce(String) -> E) -> E {
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(msg.clone()));
    f(msg)
}

/// The message explaining why a handle cannot be serialised here.
pub(crate) const NO_FD_HERE: &str =
    "a handle (a value holding a file descriptor) cannot travel here: only a Connection, a Process \
     argument or result, or a manager call can carry handles, not a shared-memory queue";

/// Runs `f` with an empty outgoing descriptor list and returns what was added to it.
/// Nested calls each get their own list.
pub(crate) fn collect_fds<R>(f: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    LAST_ERROR.with(|e| e.borrow_mut().take());
    let saved = OUTGOING.with(|o| o.borrow_mut().replace(Vec::new()));
    let id = LAST_MESSAGE.with(|n| {
        n.set(n.get().wrapping_add(1));
        n.get()
    });
    let saved_id = MESSAGE.with(|m| m.replace(Some(id)));
    let r = f();
    MESSAGE.with(|m| m.set(saved_id));
    let fds = OUTGOING
        .with(|o| std::mem::replace(&mut *o.borrow_mut(), saved))
        .unwrap_or_default();
    (r, fds)
}

/// Runs `f` with `fds` as the incoming descriptor list; descriptors that `f`
/// did not take are closed afterwards.
pub(crate) fn provide_fds<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    LAST_ERROR.with(|e| e.borrow_mut().take());
    let list = fds.into_iter().map(Some).collect();
    let saved = INCOMING.with(|i| i.borrow_mut().replace(list));
    let r = f();
    INCOMING.with(|i| *i.borrow_mut() = saved);
    r
}

/// `Serialize` for a handle's descriptor: duplicates it into the message's
/// out-of-band list and writes its index. Fails where no descriptor can travel.
pub fn serialize_fd<S: Serializer>(fd: BorrowedFd<'_>, s: S) -> Result<S::Ok, S::Error> {
    let index = OUTGOING.with(|o| -> Result<u32, String> {
        let mut o = o.borrow_mut();
        let list = o.as_mut().ok_or_else(|| NO_FD_HERE.to_string())?;
        let dup = fd
            .try_clone_to_owned()
            .map_err(|e| format!("cannot duplicate a handle's descriptor: {e}"))?;
        list.push(dup);
        u32::try_from(list.len() - 1).map_err(|_| "too many handles in one message".to_string())
    });
    index.map_err(|m| fail(m, S::Error::custom))?.serialize(s)
}

/// `Deserialize` for a handle's descriptor: takes the descriptor that arrived
/// with the message at the index read from the bytes.
pub fn deserialize_fd<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedFd, D::Error> {
    let index = u32::deserialize(d)? as usize;
    INCOMING.with(|i| {
        let mut i = i.borrow_mut();
        let Some(list) = i.as_mut() else {
            return Err(fail(
                "a handle arrived where no descriptors can".into(),
                D::Error::custom,
            ));
        };
        list.get_mut(index).and_then(Option::take).ok_or_else(|| {
            fail(
                format!("handle #{index} missing from the message"),
                D::Error::custom,
            )
        })
    })
}

/// A bare descriptor that travels as a handle (for the library's own protocols).
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct FdHandle(pub(crate) OwnedFd);

impl Serialize for FdHandle {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use std::os::fd::AsFd;
        serialize_fd(self.0.as_fd(), s)
    }
}

impl<'de> Deserialize<'de> for FdHandle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_fd(d).map(FdHandle)
    }
}
