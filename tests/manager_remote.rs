//! Remote managers, as CPython's `_TestRemoteManager`: a server listening on an
//! address, other processes connecting with the key. Hostile peers: a wrong key,
//! garbage bytes before and after authentication.

use std::io::{Read, Write};
use std::time::Duration;

use multiproc::{Address, AuthError, Client, ConnectError, Dict, Manager, ManagerError, Process, QueueProxy};

const KEY: &[u8] = b"the key";
const JOIN: Duration = Duration::from_secs(60);

fn remote_client((addr, key): (String, Vec<u8>)) -> Result<Vec<String>, String> {
    let run = || -> Result<Vec<String>, ManagerError> {
        let m = Manager::connect(addr.as_str(), &key)?;
        let q: QueueProxy<String> = m.lookup("queue")?;
        q.put("hello from a client".into())?;
        let d: Dict<String, i64> = m.lookup("dict")?;
        d.update_with("visits", |n: &mut i64| *n += 1)?;
        let mut keys = d.keys()?;
        keys.sort();
        Ok(keys)
    };
    run().map_err(|e| e.to_string())
}

fn serve_and_connect(addr: Address) {
    let server = Manager::serve(addr, KEY).unwrap();
    let addr = server.address().expect("a serving manager has an address");
    let q: QueueProxy<String> = server.queue().unwrap();
    let d: Dict<String, i64> = server.dict().unwrap();
    d.insert("visits".into(), 0).unwrap();
    server.register("queue", &q).unwrap();
    server.register("dict", &d).unwrap();
    // Two clients in other processes, connecting with the key.
    let procs: Vec<_> = (0..2)
        .map(|_| Process::spawn((addr.to_string(), KEY.to_vec()), remote_client).unwrap())
        .collect();
    for p in procs {
        assert_eq!(
            p.join_timeout(JOIN).unwrap().expect("client hung").unwrap(),
            ["visits"]
        );
    }
    assert_eq!(
        q.get_timeout(Duration::from_secs(10)).unwrap(),
        "hello from a client"
    );
    assert_eq!(
        q.get_timeout(Duration::from_secs(10)).unwrap(),
        "hello from a client"
    );
    assert_eq!(d.get("visits").unwrap(), Some(2));
    // A client here, too; its proxies passed on to a child keep working.
    let client = Manager::connect(addr.clone(), KEY).unwrap();
    let d2: Dict<String, i64> = client.lookup("dict").unwrap();
    let p = Process::spawn(d2, |d: Dict<String, i64>| {
        d.update_with("visits", |n: &mut i64| *n += 10).unwrap()
    })
    .unwrap();
    assert_eq!(p.join_timeout(JOIN).unwrap(), Some(12));
    drop(client);
    server.shutdown().unwrap();
    assert!(matches!(
        Manager::connect(addr, KEY),
        Err(ManagerError::ManagerGone) | Err(ManagerError::Connect(_))
    ));
}

#[test]
fn remote_manager_over_tcp() {
    serve_and_connect(Address::from("127.0.0.1:0"));
}

#[test]
fn remote_manager_over_a_unix_path() {
    let dir = std::env::temp_dir().join(format!("mp-manager-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    serve_and_connect(Address::from(dir.join("manager.sock")));
    // The server removed its socket file when it stopped.
    assert!(!dir.join("manager.sock").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_wrong_key_is_refused() {
    let server = Manager::serve("127.0.0.1:0", KEY).unwrap();
    let addr = server.address().unwrap();
    let err = Manager::connect(addr.clone(), b"not the key").unwrap_err();
    assert!(
        matches!(
            err,
            ManagerError::Connect(ConnectError::Auth(AuthError::WrongKey))
        ),
        "{err:?}"
    );
    // The server serves the right key afterwards.
    let client = Manager::connect(addr, KEY).unwrap();
    assert_eq!(client.value(5u8).unwrap().get().unwrap(), 5);
}

#[test]
fn garbage_bytes_to_the_listener_do_not_disturb_the_server() {
    let server = Manager::serve("127.0.0.1:0", KEY).unwrap();
    let Some(Address::Tcp(sa)) = server.address() else {
        panic!("expected a TCP address")
    };
    let d: Dict<u8, u8> = server.dict().unwrap();
    server.register("d", &d).unwrap();
    // Before authentication: garbage, then a peer that closes, then one that stays silent.
    let mut s = std::net::TcpStream::connect(sa).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(&[0xff; 4096]);
    let mut buf = [0u8; 256];
    // The server drops us (EOF or reset) rather than hanging or crashing.
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(std::net::TcpStream::connect(sa).unwrap());
    let _silent = std::net::TcpStream::connect(sa).unwrap();
    let client = Manager::connect(sa, KEY).unwrap();
    let d2: Dict<u8, u8> = client.lookup("d").unwrap();
    d2.insert(1, 2).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(2));

    // After authentication: a frame of garbage gets an error reply, and both
    // that connection's peer and everyone else go on.
    let conn = Client::connect(sa, Some(KEY)).unwrap();
    conn.send_bytes(b"\xff\xfe garbage that is no request").unwrap();
    let reply = conn.recv_bytes_timeout(Duration::from_secs(20)).unwrap();
    assert!(!reply.is_empty());
    conn.send(&(1u64, "also not a request")).unwrap();
    assert!(!conn
        .recv_bytes_timeout(Duration::from_secs(20))
        .unwrap()
        .is_empty());
    assert_eq!(d2.get(&1).unwrap(), Some(2));
    d.insert(3, 4).unwrap();
    assert_eq!(d2.get(&3).unwrap(), Some(4));
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let server = Manager::serve("127.0.0.1:0", KEY).unwrap();
    let addr = server.address().unwrap();
    let err = Manager::serve(addr, KEY).unwrap_err();
    assert!(
        matches!(err, ManagerError::Refused(ref m) if m.contains("listen")),
        "{err:?}"
    );
}
