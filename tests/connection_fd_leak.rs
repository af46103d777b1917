//! 1,000 connect/authenticate/close cycles leave no descriptor behind. Alone in
//! its test binary so that no other test opens descriptors meanwhile.

use std::thread;
use std::time::Duration;

use multiproc::{Address, Client, Listener};

const LONG: Duration = Duration::from_secs(20);
const KEY: &[u8] = b"leak check";

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn cycles(addr: Address, n: usize) {
    let l = Listener::bind(addr, Some(KEY)).unwrap();
    let at = l.address();
    let client = thread::spawn(move || {
        for i in 0..n {
            // Every tenth client has the wrong key.
            let key: &[u8] = if i % 10 == 9 { b"wrong" } else { KEY };
            match Client::connect_timeout(at.clone(), Some(key), LONG) {
                Ok(c) => {
                    c.send(&(i as u64)).unwrap();
                    assert_eq!(c.recv_timeout::<u64>(LONG).unwrap(), i as u64 + 1);
                }
                Err(e) => assert!(i % 10 == 9 && e.is_auth(), "cycle {i}: {e}"),
            }
        }
    });
    for i in 0..n {
        match l.accept_timeout(LONG) {
            Ok(c) => {
                let x: u64 = c.recv_timeout(LONG).unwrap();
                c.send(&(x + 1)).unwrap();
                // Wait for the client to hang up, then close our end.
                assert!(c.recv_timeout::<u64>(LONG).unwrap_err().is_eof());
            }
            Err(e) => assert!(i % 10 == 9 && e.is_auth(), "cycle {i}: {e}"),
        }
    }
    client.join().unwrap();
}

#[test]
fn a_thousand_connect_auth_close_cycles_leak_no_descriptor() {
    let dir = std::env::temp_dir().join(format!("mp-fdleak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Warm up (lazy runtime descriptors, e.g. the randomness source), then count.
    cycles(Address::from(dir.join("warm")), 10);
    let before = open_fds();
    cycles(Address::from(dir.join("sock")), 1000);
    cycles(Address::from("127.0.0.1:0"), 200);
    assert_eq!(open_fds(), before);
    std::fs::remove_dir_all(&dir).unwrap();
}
