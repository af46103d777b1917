//! The authentication handshake: HMAC-SHA256 challenge-response, both ways, on
//! random nonces.
//!
//! Before authentication nothing from the peer is deserialised: the handshake is
//! a fixed sequence of fixed-size messages, read exactly (the listener reads 73
//! bytes in all), under a deadline.
//!
//! | step | direction | bytes |
//! | --- | --- | --- |
//! | 1 | listener -> client | `MAGIC` (8), listener nonce (32) |
//! | 2 | client -> listener | `MAGIC` (8), HMAC(key, "client" ‖ listener nonce) (32), client nonce (32) |
//! | 3 | listener -> client | `0` (wrong key, then close), or `1` and HMAC(key, "server" ‖ client nonce) (32) |
//! | 4 | client -> listener | `1` (accepted) or `0` (the listener's proof is wrong) |
//!
//! The labels keep a proof made by one side from being replayed as the other's.
//! Proofs are compared in constant time (`hmac`'s `verify_slice`).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::connection::error::{AuthError, ConnectError};
use crate::deadline::Deadline;
use crate::sys::sock;

type HmacSha256 = Hmac<Sha256>;

/// Protocol magic: name and version.
const MAGIC: [u8; 8] = *b"mpauth\x01\x00";
const NONCE: usize = 32;
const MAC: usize = 32;
const CLIENT_LABEL: &[u8] = b"multiproc client";
const SERVER_LABEL: &[u8] = b"multiproc server";

/// The most bytes the listener reads from an unauthenticated peer.
#[cfg(test)]
pub(crate) const LISTENER_READS: usize = MAGIC.len() + MAC + NONCE + 1;

fn mac(key: &[u8], label: &[u8], nonce: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; the fallback is never used.
    let mut m = HmacSha256::new_from_slice(key).unwrap_or_else(|_| HmacSha256::new(&Default::default()));
    m.update(label);
    m.update(nonce);
    m
}

fn nonce() -> Result<[u8; NONCE], ConnectError> {
    let mut n = [0u8; NONCE];
    getrandom::fill(&mut n).map_err(|e| ConnectError::Io(io::Error::other(format!("no randomness: {e}"))))?;
    Ok(n)
}

fn handshake_io(e: io::Error) -> ConnectError {
    match e.kind() {
        io::ErrorKind::TimedOut => ConnectError::Auth(AuthError::Timeout),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => ConnectError::Auth(
            AuthError::Protocol("the peer closed the connection during the handshake".into()),
        ),
        _ => ConnectError::Io(e),
    }
}

fn write(fd: BorrowedFd<'_>, parts: &[&[u8]], deadline: Deadline) -> Result<(), ConnectError> {
    sock::send_all(fd, parts, &[], deadline).map_err(handshake_io)
}

/// Reads exactly `buf.len()` bytes (never more), discarding any descriptors.
fn read_exact(fd: BorrowedFd<'_>, buf: &mut [u8], deadline: Deadline) -> Result<(), ConnectError> {
    let mut got = 0;
    while got < buf.len() {
        let mut fds: Vec<OwnedFd> = Vec::new();
        let n = sock::recv_some(fd, &mut buf[got..], &mut fds, deadline).map_err(handshake_io)?;
        drop(fds);
        if n == 0 {
            return Err(ConnectError::Auth(AuthError::Protocol(
                "the peer closed the connection during the handshake".into(),
            )));
        }
        got += n;
    }
    Ok(())
}

fn check_magic(m: &[u8]) -> Result<(), ConnectError> {
    if m == MAGIC {
        Ok(())
    } else {
        Err(ConnectError::Auth(AuthError::Protocol(
            "the peer does not speak the multiproc handshake (or has no key while this side has one)".into(),
        )))
    }
}

/// The listener's side.
pub(crate) fn answer(fd: BorrowedFd<'_>, key: &[u8], deadline: Deadline) -> Result<(), ConnectError> {
    let ours = nonce()?;
    write(fd, &[&MAGIC, &ours], deadline)?;
    let mut reply = [0u8; 8 + MAC + NONCE];
    read_exact(fd, &mut reply, deadline)?;
    check_magic(&reply[..8])?;
    let (proof, theirs) = reply[8..].split_at(MAC);
    if mac(key, CLIENT_LABEL, &ours).verify_slice(proof).is_err() {
        // Tell the client, then fail; a write error changes nothing.
        let _ = write(fd, &[&[0u8]], deadline);
        return Err(ConnectError::Auth(AuthError::WrongKey));
    }
    let our_proof = mac(key, SERVER_LABEL, theirs).finalize().into_bytes();
    write(fd, &[&[1u8], &our_proof[..]], deadline)?;
    let mut verdict = [0u8; 1];
    read_exact(fd, &mut verdict, deadline)?;
    match verdict[0] {
        1 => Ok(()),
        0 => Err(ConnectError::Auth(AuthError::WrongKey)),
        v => Err(ConnectError::Auth(AuthError::Protocol(format!(
            "unexpected verdict byte {v}"
        )))),
    }
}

/// The client's side.
pub(crate) fn deliver(fd: BorrowedFd<'_>, key: &[u8], deadline: Deadline) -> Result<(), ConnectError> {
    let mut challenge = [0u8; 8 + NONCE];
    read_exact(fd, &mut challenge, deadline)?;
    check_magic(&challenge[..8])?;
    let proof = mac(key, CLIENT_LABEL, &challenge[8..]).finalize().into_bytes();
    let ours = nonce()?;
    write(fd, &[&MAGIC, &proof[..], &ours], deadline)?;
    let mut status = [0u8; 1];
    read_exact(fd, &mut status, deadline)?;
    match status[0] {
        1 => {}
        0 => return Err(ConnectError::Auth(AuthError::WrongKey)),
        v => {
            return Err(ConnectError::Auth(AuthError::Protocol(format!(
                "unexpected status byte {v}"
            ))))
        }
    }
    let mut their_proof = [0u8; MAC];
    read_exact(fd, &mut their_proof, deadline)?;
    if mac(key, SERVER_LABEL, &ours).verify_slice(&their_proof).is_err() {
        let _ = write(fd, &[&[0u8]], deadline);
        return Err(ConnectError::Auth(AuthError::WrongKey));
    }
    write(fd, &[&[1u8]], deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Duration;

    fn run(
        server_key: &'static [u8],
        client_key: &'static [u8],
    ) -> (Result<(), ConnectError>, Result<(), ConnectError>) {
        let (a, b) = sock::socketpair_stream().unwrap();
        let d = Deadline::after(Duration::from_secs(10));
        let t = std::thread::spawn(move || answer(a.as_fd(), server_key, d));
        let c = deliver(b.as_fd(), client_key, d);
        (t.join().unwrap(), c)
    }

    #[test]
    fn same_key_passes_both_sides() {
        let (s, c) = run(b"secret", b"secret");
        assert!(s.is_ok() && c.is_ok(), "{s:?} {c:?}");
    }

    #[test]
    fn wrong_key_fails_both_sides() {
        let (s, c) = run(b"secret", b"guess");
        assert!(matches!(s, Err(ConnectError::Auth(AuthError::WrongKey))), "{s:?}");
        assert!(matches!(c, Err(ConnectError::Auth(AuthError::WrongKey))), "{c:?}");
    }

    #[test]
    fn the_listener_reads_no_more_than_the_handshake_before_authentication() {
        let (a, b) = sock::socketpair_stream().unwrap();
        let d = Deadline::after(Duration::from_secs(10));
        // A peer that answers the challenge with 1,000 bytes: the magic, then junk.
        let mut junk = MAGIC.to_vec();
        junk.resize(1000, 0xEE);
        sock::send_all(b.as_fd(), &[&junk], &[], d).unwrap();
        let r = answer(a.as_fd(), b"k", d);
        assert!(matches!(r, Err(ConnectError::Auth(AuthError::WrongKey))), "{r:?}");
        // Everything past the fixed-size reply is still unread in the socket.
        let mut left = 0;
        let mut buf = [0u8; 4096];
        loop {
            match sock::recv_some(
                a.as_fd(),
                &mut buf,
                &mut Vec::new(),
                Deadline::after(Duration::ZERO),
            ) {
                Ok(n) if n > 0 => left += n,
                _ => break,
            }
        }
        assert_eq!(left, 1000 - (LISTENER_READS - 1));
    }

    #[test]
    fn silent_peer_times_out() {
        let (a, _b) = sock::socketpair_stream().unwrap();
        let r = answer(a.as_fd(), b"k", Deadline::after(Duration::from_millis(100)));
        assert!(matches!(r, Err(ConnectError::Auth(AuthError::Timeout))), "{r:?}");
    }
}
