//! Pipes and connections: [`Pipe`], [`Connection`], [`Listener`]/[`Client`] with an
//! authentication key, and [`wait`].
//!
//! | file | holds |
//! | --- | --- |
//! | `conn.rs` | `Connection`: framed messages over a Unix or TCP stream socket |
//! | `pipe.rs` | `Pipe`: connected pairs over a socketpair |
//! | `listener.rs` | `Address`, `Listener`, `Client` |
//! | `auth.rs` | the HMAC-SHA256 challenge-response handshake |
//! | `wait.rs` | `Waitable`, `wait` |
//! | `error.rs` | `RecvError`, `SendError`, `BufferTooShort`, `AuthError`, `ConnectError` |

mod auth;
mod conn;
mod error;
mod listener;
mod pipe;
mod wait;

pub use conn::Connection;
pub use error::{AuthError, BufferTooShort, ConnectError, RecvError, SendError};
pub use listener::{Address, Client, Listener, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT};
pub use pipe::Pipe;
pub use wait::{wait, Waitable};
