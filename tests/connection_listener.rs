//! Listener and Client (CPython's `_TestListener`, `_TestListenerClient`), with
//! hostile peers speaking raw bytes on real Unix and TCP sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use multiproc::{Address, AuthError, Client, CodecError, ConnectError, Listener, RecvError};
use sha2::Sha256;

const LONG: Duration = Duration::from_secs(20);
const KEY: &[u8] = b"the key";

fn temp_path(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mp-listener-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("sock")
}

fn addresses(tag: &str) -> Vec<Address> {
    vec![Address::from(temp_path(tag)), Address::from("127.0.0.1:0")]
}

fn connect_raw(addr: &Address) -> Box<dyn RawStream> {
    match addr {
        Address::Unix(p) => Box::new(UnixStream::connect(p).unwrap()),
        Address::Tcp(a) => Box::new(TcpStream::connect(a).unwrap()),
        other => panic!("{other:?}"),
    }
}

trait RawStream: Read + Write + Send {}
impl<T: Read + Write + Send> RawStream for T {}

#[test]
fn round_trip_with_and_without_a_key_over_unix_and_tcp() {
    for key in [Some(KEY), None] {
        for addr in addresses(&format!("rt{}", key.is_some())) {
            let l = Listener::bind(addr.clone(), key).unwrap();
            let at = l.address();
            let t = thread::spawn(move || {
                let c = Client::connect_timeout(at, key, LONG).unwrap();
                c.send(&"ping".to_string()).unwrap();
                c.recv_timeout::<String>(LONG).unwrap()
            });
            let c = l.accept_timeout(LONG).unwrap();
            assert_eq!(c.recv_timeout::<String>(LONG).unwrap(), "ping");
            c.send(&"pong".to_string()).unwrap();
            assert_eq!(t.join().unwrap(), "pong", "{addr:?} key={key:?}");
        }
    }
}

#[test]
fn wrong_key_fails_on_both_sides_and_the_listener_keeps_serving() {
    for addr in addresses("wrongkey") {
        let l = Listener::bind(addr, Some(KEY)).unwrap();
        let at = l.address();
        let t = thread::spawn(move || {
            let bad = Client::connect_timeout(at.clone(), Some(b"not the key"), LONG);
            let good = Client::connect_timeout(at, Some(KEY), LONG).map(|c| {
                c.send(&1u8).unwrap();
            });
            (bad.map(drop), good)
        });
        match l.accept_timeout(LONG) {
            Err(ConnectError::Auth(AuthError::WrongKey)) => {}
            other => panic!("{other:?}"),
        }
        let c = l.accept_timeout(LONG).unwrap();
        assert_eq!(c.recv_timeout::<u8>(LONG).unwrap(), 1);
        let (bad, good) = t.join().unwrap();
        assert!(
            matches!(bad, Err(ConnectError::Auth(AuthError::WrongKey))),
            "{bad:?}"
        );
        good.unwrap();
    }
}

#[test]
fn a_listener_without_the_key_is_refused_by_the_client() {
    // The client checks the listener's proof too (mutual authentication).
    let l = Listener::bind(temp_path("fakeserver"), Some(b"other key")).unwrap();
    let at = l.address();
    let t = thread::spawn(move || Client::connect_timeout(at, Some(KEY), LONG).map(drop));
    assert!(matches!(
        l.accept_timeout(LONG),
        Err(ConnectError::Auth(AuthError::WrongKey))
    ));
    assert!(matches!(
        t.join().unwrap(),
        Err(ConnectError::Auth(AuthError::WrongKey))
    ));
}

#[test]
fn garbage_and_huge_length_headers_before_auth_are_refused() {
    for addr in addresses("garbage") {
        let l = Listener::bind(addr, Some(KEY)).unwrap();
        let at = l.address();
        // A frame header announcing 1 TiB, then garbage.
        let mut huge = (1u64 << 40).to_le_bytes().to_vec();
        huge.extend_from_slice(&[1, 1, 0, 0]);
        huge.extend_from_slice(&[0xAB; 100]);
        for payload in [huge, vec![0xFF; 500]] {
            let at = at.clone();
            let t = thread::spawn(move || {
                let mut s = connect_raw(&at);
                let mut challenge = [0u8; 40];
                s.read_exact(&mut challenge).unwrap();
                let _ = s.write_all(&payload);
                // The listener hangs up on us.
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            });
            match l.accept_timeout(LONG) {
                Err(ConnectError::Auth(AuthError::Protocol(m))) => assert!(m.contains("handshake"), "{m}"),
                other => panic!("{other:?}"),
            }
            t.join().unwrap();
        }
        // And it still serves a real client.
        let t = thread::spawn(move || Client::connect_timeout(at, Some(KEY), LONG).map(drop));
        l.accept_timeout(LONG).unwrap();
        t.join().unwrap().unwrap();
    }
}

#[test]
fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let mut l = Listener::bind(temp_path("silent"), Some(KEY)).unwrap();
    l.set_handshake_timeout(Duration::from_millis(200));
    let at = l.address();
    let silent = connect_raw(&at);
    let t = Instant::now();
    assert!(matches!(
        l.accept_timeout(LONG),
        Err(ConnectError::Auth(AuthError::Timeout))
    ));
    assert!(t.elapsed() >= Duration::from_millis(200) && t.elapsed() < LONG);
    drop(silent);
    let th = thread::spawn(move || Client::connect_timeout(at, Some(KEY), LONG).map(drop));
    l.accept_timeout(LONG).unwrap();
    th.join().unwrap().unwrap();
}

/// The client half of the handshake done by hand, to misbehave after it.
fn authenticate_raw(s: &mut dyn RawStream, key: &[u8]) {
    let mut challenge = [0u8; 40];
    s.read_exact(&mut challenge).unwrap();
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(b"multiproc client");
    m.update(&challenge[8..]);
    let proof = m.finalize().into_bytes();
    let mut reply = challenge[..8].to_vec();
    reply.extend_from_slice(&proof);
    reply.extend_from_slice(&[7u8; 32]);
    s.write_all(&reply).unwrap();
    let mut status = [0u8; 33];
    s.read_exact(&mut status).unwrap();
    assert_eq!(status[0], 1);
    s.write_all(&[1]).unwrap();
}

#[test]
fn garbage_and_huge_length_headers_after_auth_are_errors_not_allocations() {
    for addr in addresses("afterauth") {
        let l = Listener::bind(addr, Some(KEY)).unwrap();
        let at = l.address();
        let mut huge = (1u64 << 50).to_le_bytes().to_vec();
        huge.extend_from_slice(&[1, 1, 0, 0]);
        let garbage = vec![0x5A; 64];
        for (payload, want_too_large) in [(huge, true), (garbage, false)] {
            let at = at.clone();
            let t = thread::spawn(move || {
                let mut s = connect_raw(&at);
                authenticate_raw(&mut *s, KEY);
                s.write_all(&payload).unwrap();
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            });
            let c = l.accept_timeout(LONG).unwrap();
            match c.recv_bytes_timeout(LONG) {
                Err(RecvError::Codec(CodecError::TooLarge { len, .. })) if want_too_large => {
                    assert_eq!(len, 1 << 50)
                }
                Err(RecvError::Codec(CodecError::BadHeader(_))) if !want_too_large => {}
                other => panic!("{other:?}"),
            }
            // The stream stays refused; nothing hangs.
            assert!(matches!(c.recv_bytes_timeout(LONG), Err(RecvError::Codec(_))));
            drop(c);
            t.join().unwrap();
        }
    }
}

#[test]
fn binding_an_address_in_use_is_an_error() {
    let path = temp_path("inuse");
    let l = Listener::bind(path.clone(), None).unwrap();
    let e = Listener::bind(path.clone(), None).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    drop(l);
    // Dropping the listener removes the socket file: the path is free again.
    assert!(!path.exists());
    let _l = Listener::bind(path, None).unwrap();

    let tcp = Listener::bind("127.0.0.1:0", None).unwrap();
    let e = Listener::bind(tcp.address(), None).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
}

#[test]
fn accept_timeout_try_accept_and_refused_connections() {
    let l = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let t = Instant::now();
    assert!(matches!(l.try_accept(), Err(ConnectError::Timeout)));
    assert!(matches!(
        l.accept_timeout(Duration::from_millis(100)),
        Err(ConnectError::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100) && t.elapsed() < LONG);
    let at = l.address();
    drop(l);
    assert!(matches!(
        Client::connect_timeout(at, Some(KEY), LONG),
        Err(ConnectError::Io(_))
    ));
    let missing = temp_path("missing");
    assert!(matches!(
        Client::connect_timeout(missing, None, LONG),
        Err(ConnectError::Io(_))
    ));
}

#[test]
fn handles_cannot_travel_over_tcp_but_can_over_unix_paths() {
    for addr in addresses("handles") {
        let l = Listener::bind(addr.clone(), None).unwrap();
        let at = l.address();
        let t = thread::spawn(move || Client::connect_timeout(at, None, LONG).unwrap());
        let server = l.accept_timeout(LONG).unwrap();
        let client = t.join().unwrap();
        let (x, y) = multiproc::Pipe::new().unwrap();
        let r = client.send(&x);
        match addr {
            Address::Unix(_) => {
                r.unwrap();
                let x2: multiproc::Connection = server.recv_timeout(LONG).unwrap();
                x2.send(&4u8).unwrap();
                assert_eq!(y.recv_timeout::<u8>(LONG).unwrap(), 4);
            }
            _ => {
                let e = r.unwrap_err();
                assert!(e.to_string().contains("TCP"), "{e}");
                // Nothing was sent: the connection is still in step.
                client.send(&5u8).unwrap();
                assert_eq!(server.recv_timeout::<u8>(LONG).unwrap(), 5);
            }
        }
    }
}

#[test]
fn a_client_that_connects_and_sends_before_accept_is_served() {
    // CPython's test_issue14725 and test_issue16955: the client is connected (and
    // has sent) before `accept` runs; poll on the accepted end sees the message.
    for addr in addresses("early") {
        let l = Listener::bind(addr, None).unwrap();
        let c = Client::connect_timeout(l.address(), None, LONG).unwrap();
        c.send_bytes(b"early").unwrap();
        thread::sleep(Duration::from_millis(100));
        let s = l.accept_timeout(LONG).unwrap();
        assert!(s.poll(Some(LONG)).unwrap());
        assert_eq!(s.try_recv_bytes().unwrap(), b"early");
        drop(c);
        assert!(s.recv_bytes_timeout(LONG).unwrap_err().is_eof());
    }
}

#[test]
fn wait_covers_listeners_and_connections_together() {
    let l = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let (a, b) = multiproc::Pipe::new().unwrap();
    assert!(multiproc::wait(&[&l, &b], Some(Duration::from_millis(50)))
        .unwrap()
        .is_empty());
    let at = l.address();
    let t = thread::spawn(move || Client::connect_timeout(at, Some(KEY), LONG).unwrap());
    assert_eq!(multiproc::wait(&[&l, &b], Some(LONG)).unwrap(), vec![0]);
    let s = l.accept_timeout(LONG).unwrap();
    let c = t.join().unwrap();
    c.send(&1u8).unwrap();
    a.send(&2u8).unwrap();
    let start = Instant::now();
    let mut ready = Vec::new();
    while ready.len() < 2 && start.elapsed() < LONG {
        ready = multiproc::wait(&[&l, &b, &s], Some(LONG)).unwrap();
    }
    assert_eq!(ready, vec![1, 2]);
    assert_eq!(s.try_recv::<u8>().unwrap(), 1);
    assert_eq!(b.try_recv::<u8>().unwrap(), 2);
}
