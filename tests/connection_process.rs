//! Connections between real processes: EOF across processes, handles sent to a
//! running child, a peer SIGKILLed mid-message, listener and client in different
//! processes.

use std::time::{Duration, Instant};

use multiproc::{
    Address, AuthError, Client, CodecError, ConnectError, Connection, Listener, Pipe, Process, RecvError,
};

const LONG: Duration = Duration::from_secs(30);
const KEY: &[u8] = b"process key";

/// The seed's consumer: drop the end it does not use, read until EOF.
fn consumer((left, right): (Connection, Connection)) -> Vec<String> {
    left.close();
    let mut got = Vec::new();
    loop {
        match right.recv_timeout::<String>(LONG) {
            Ok(s) => got.push(s),
            Err(RecvError::Eof) => return got,
            Err(e) => panic!("consumer: {e}"),
        }
    }
}

#[test]
fn the_seed_example_ends_with_eof_in_the_child() {
    let (left, right) = Pipe::new().unwrap();
    let p = Process::spawn((left.try_clone().unwrap(), right), consumer).unwrap();
    for i in 0..10 {
        left.send(&format!("hello {i}")).unwrap();
    }
    left.close();
    let got = p.join_timeout(LONG).unwrap().expect("child finished");
    assert_eq!(got, (0..10).map(|i| format!("hello {i}")).collect::<Vec<_>>());
}

fn keeps_left_open((left, right): (Connection, Connection)) -> usize {
    // Forgets to close `left`: its own copy keeps the pipe open, so no EOF.
    let mut n = 0;
    loop {
        match right.recv_timeout::<String>(Duration::from_millis(500)) {
            Ok(_) => n += 1,
            Err(RecvError::Timeout) => return n,
            Err(e) => panic!("{e} after {n} messages ({left:?})"),
        }
    }
}

#[test]
fn a_child_that_keeps_the_other_end_never_sees_eof() {
    let (left, right) = Pipe::new().unwrap();
    left.send(&"one".to_string()).unwrap();
    let p = Process::spawn((left.try_clone().unwrap(), right), keeps_left_open).unwrap();
    left.close();
    assert_eq!(p.join_timeout(LONG).unwrap(), Some(1));
}

fn writer((id, w, go): (u32, Connection, Connection)) {
    w.send(&id).unwrap();
    // Hold the writer until told to finish.
    let _: u8 = go.recv_timeout(LONG).unwrap();
}

#[test]
fn eof_with_four_writer_processes_closing_in_turn() {
    let (reader, w) = Pipe::simplex().unwrap();
    let mut kids = Vec::new();
    for id in 0..4u32 {
        let (go_rx, go_tx) = Pipe::simplex().unwrap();
        let p = Process::spawn((id, w.try_clone().unwrap(), go_rx), writer).unwrap();
        kids.push((p, go_tx));
    }
    drop(w);
    let mut ids: Vec<u32> = (0..4).map(|_| reader.recv_timeout(LONG).unwrap()).collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1, 2, 3]);
    let n = kids.len();
    for (i, (p, go)) in kids.into_iter().enumerate() {
        go.send(&1u8).unwrap();
        assert_eq!(p.join_timeout(LONG).unwrap(), Some(()));
        if i + 1 < n {
            // Others still hold the writer: no EOF yet.
            assert!(
                reader
                    .recv_timeout::<u32>(Duration::from_millis(100))
                    .unwrap_err()
                    .is_timeout(),
                "EOF after {} of {n} writers closed",
                i + 1
            );
        }
    }
    assert!(reader.recv_timeout::<u32>(LONG).unwrap_err().is_eof());
}

fn relay(carrier: Connection) -> u32 {
    // Already running when the connection arrives.
    let c: Connection = carrier.recv_timeout(LONG).unwrap();
    let x: u32 = c.recv_timeout(LONG).unwrap();
    c.send(&(x * 2)).unwrap();
    x
}

#[test]
fn a_connection_is_sent_to_a_running_process() {
    let (carrier, carrier_child) = Pipe::new().unwrap();
    let p = Process::spawn(carrier_child, relay).unwrap();
    let (mine, theirs) = Pipe::new().unwrap();
    carrier.send(&theirs).unwrap();
    drop(theirs);
    mine.send(&21u32).unwrap();
    assert_eq!(mine.recv_timeout::<u32>(LONG).unwrap(), 42);
    assert_eq!(p.join_timeout(LONG).unwrap(), Some(21));
    // The child exited: its copy (the only one) is gone.
    assert!(mine.recv_timeout::<u32>(LONG).unwrap_err().is_eof());
}

fn big_sender(c: Connection) {
    let big = vec![7u8; 64 << 20];
    c.send(&"ready".to_string()).unwrap();
    c.send_bytes(&big).unwrap();
}

/// A child blocked in the middle of sending a 64 MiB message: nobody reads
/// until a good part of it sits in the socket.
fn child_blocked_mid_message() -> (Connection, Process<()>) {
    let (mine, theirs) = Pipe::new().unwrap();
    let p = Process::spawn(theirs, big_sender).unwrap();
    assert_eq!(mine.recv_timeout::<String>(LONG).unwrap(), "ready");
    let start = Instant::now();
    while rustix::io::ioctl_fionread(&mine).unwrap() < 100_000 {
        assert!(start.elapsed() < LONG, "the child never sent");
        std::thread::sleep(Duration::from_millis(5));
    }
    (mine, p)
}

#[test]
fn a_peer_sigkilled_mid_message_gives_an_error_not_a_hang() {
    let (mine, p) = child_blocked_mid_message();
    p.kill().unwrap();
    let t = Instant::now();
    match mine.recv_bytes_timeout(LONG) {
        Err(RecvError::Codec(CodecError::Truncated)) => {}
        other => panic!("{:?}", other.map(|m| m.len())),
    }
    assert!(t.elapsed() < LONG);
    assert!(p.join_timeout(LONG).is_err(), "killed child reports its signal");
}

/// Runs `f` on a thread and fails if it has not finished within `LONG` (for the
/// calls that have no timeout variant).
fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(LONG).expect("hung")
}

#[test]
fn a_peer_sigkilled_mid_message_fails_the_calls_without_a_deadline_too() {
    // recv_bytes (payload received into its own buffer) and recv_bytes_into
    // (received straight into the caller's) wait without a deadline.
    for into in [false, true] {
        let (mine, p) = child_blocked_mid_message();
        let reader = std::thread::spawn(move || {
            if into {
                let mut buf = vec![0u8; 64 << 20];
                mine.recv_bytes_into(&mut buf)
            } else {
                mine.recv_bytes().map(|m| m.len())
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        p.kill().unwrap();
        let got = within_deadline(move || reader.join().unwrap());
        assert!(
            matches!(got, Err(RecvError::Codec(CodecError::Truncated))),
            "{got:?}"
        );
        assert!(p.join_timeout(LONG).is_err(), "killed child reports its signal");
    }
}

/// Answers each message in kind until EOF.
fn echo_every_kind(c: Connection) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        match c.recv::<(u8, u64)>() {
            Ok((0, x)) => c.send(&(x + 1)).unwrap(),
            Ok((1, len)) => {
                let m = c.recv_bytes().unwrap();
                assert_eq!(m.len() as u64, len);
                c.send_bytes(&m).unwrap();
            }
            Ok((2, len)) => {
                let got = c.recv_bytes_into(&mut buf).unwrap();
                assert_eq!(got as u64, len);
                c.send_bytes(&buf[..got]).unwrap();
            }
            Ok((3, _)) => {
                let other: Connection = c.recv().unwrap();
                other.send(&n).unwrap();
            }
            Ok(_) => panic!("unknown kind"),
            Err(e) if e.is_eof() => return n,
            Err(e) => panic!("{e}"),
        }
        n += 1;
    }
}

fn set_affinity(cpus: &rustix::thread::CpuSet) {
    rustix::thread::sched_setaffinity(None, cpus).unwrap();
}

#[test]
fn a_ping_pong_on_one_cpu_keeps_every_message_whole_and_in_order() {
    // Both processes on one CPU: a sender is then often preempted by the peer it
    // woke, which makes the next receive try the socket before polling it.
    let all = rustix::thread::sched_getaffinity(None).unwrap();
    let cpu = (0..rustix::thread::CpuSet::MAX_CPU)
        .find(|&c| all.is_set(c))
        .unwrap();
    let mut one = rustix::thread::CpuSet::new();
    one.set(cpu);
    set_affinity(&one);
    let (mine, theirs) = Pipe::new().unwrap();
    let p = Process::spawn(theirs, echo_every_kind).unwrap();
    set_affinity(&all);
    let deadline = Instant::now() + LONG;
    let sizes = [0usize, 8, 100, 70_000, 300_000];
    let mut into = vec![0u8; 1 << 20];
    let mut rounds = 0u64;
    for i in 0..3000u64 {
        assert!(Instant::now() < deadline, "too slow: {i} rounds");
        match i % 7 {
            0..=3 => {
                mine.send(&(0u8, i)).unwrap();
                assert_eq!(mine.recv_timeout::<u64>(LONG).unwrap(), i + 1);
            }
            4 => {
                let len = sizes[(i / 7) as usize % sizes.len()];
                mine.send(&(1u8, len as u64)).unwrap();
                mine.send_bytes(&vec![i as u8; len]).unwrap();
                let m = mine.recv_bytes().unwrap();
                assert!(m.len() == len && m.iter().all(|&x| x == i as u8));
            }
            5 => {
                let len = sizes[(i / 7 + 2) as usize % sizes.len()];
                mine.send(&(2u8, len as u64)).unwrap();
                mine.send_bytes(&vec![i as u8; len]).unwrap();
                let got = mine.recv_bytes_into(&mut into).unwrap();
                assert!(got == len && into[..got].iter().all(|&x| x == i as u8));
            }
            _ => {
                let (x, y) = Pipe::new().unwrap();
                mine.send(&(3u8, 0u64)).unwrap();
                mine.send(&y).unwrap();
                drop(y);
                assert_eq!(x.recv_timeout::<u64>(LONG).unwrap(), i);
            }
        }
        rounds += 1;
    }
    drop(mine);
    assert_eq!(p.join_timeout(LONG).unwrap(), Some(rounds));
}

fn client_side((addr, key, tcp): (String, Vec<u8>, bool)) -> Result<u64, String> {
    let addr = if tcp {
        Address::from(addr.as_str())
    } else {
        Address::from(std::path::PathBuf::from(addr))
    };
    let c = Client::connect_timeout(addr, Some(&key), LONG).map_err(|e| match e {
        ConnectError::Auth(AuthError::WrongKey) => "wrong key".to_string(),
        e => e.to_string(),
    })?;
    let n: u64 = c.recv_timeout(LONG).map_err(|e| e.to_string())?;
    c.send(&(n + 1)).map_err(|e| e.to_string())?;
    Ok(n)
}

#[test]
fn listener_and_client_in_different_processes_for_both_families() {
    let dir = std::env::temp_dir().join(format!("mp-connproc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (addr, tcp) in [
        (Address::from(dir.join("sock")), false),
        (Address::from("127.0.0.1:0"), true),
    ] {
        let l = Listener::bind(addr, Some(KEY)).unwrap();
        let at = l.address().to_string();
        // Right key.
        let p = Process::spawn((at.clone(), KEY.to_vec(), tcp), client_side).unwrap();
        let c = l.accept_timeout(LONG).unwrap();
        c.send(&41u64).unwrap();
        assert_eq!(c.recv_timeout::<u64>(LONG).unwrap(), 42);
        assert_eq!(p.join_timeout(LONG).unwrap(), Some(Ok(41)));
        // Wrong key: both sides fail, and the listener serves the next client.
        let p = Process::spawn((at.clone(), b"wrong".to_vec(), tcp), client_side).unwrap();
        assert!(matches!(
            l.accept_timeout(LONG),
            Err(ConnectError::Auth(AuthError::WrongKey))
        ));
        assert_eq!(p.join_timeout(LONG).unwrap(), Some(Err("wrong key".to_string())));
        let p = Process::spawn((at, KEY.to_vec(), tcp), client_side).unwrap();
        let c = l.accept_timeout(LONG).unwrap();
        c.send(&1u64).unwrap();
        assert_eq!(c.recv_timeout::<u64>(LONG).unwrap(), 2);
        assert_eq!(p.join_timeout(LONG).unwrap(), Some(Ok(1)));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn sleep_then_send((c, ms): (Connection, u64)) {
    std::thread::sleep(Duration::from_millis(ms));
    c.send(&ms).unwrap();
}

fn linger(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn wait_over_connections_and_processes_returns_the_ready_ones() {
    // CPython's TestWait: processes are ready when they exit, connections when
    // a message (or EOF) can be received.
    let (mine, theirs) = Pipe::new().unwrap();
    let sender = Process::spawn((theirs, 300u64), sleep_then_send).unwrap();
    let sleeper = Process::spawn(5_000u64, linger).unwrap();
    // Nothing ready: an empty list at once for a zero timeout, after it otherwise.
    let t = Instant::now();
    assert!(multiproc::wait(&[&mine, &sleeper], Some(Duration::ZERO))
        .unwrap()
        .is_empty());
    assert!(t.elapsed() < Duration::from_millis(250));
    // The sender's message arrives first; the sender itself then exits.
    let mut seen_msg = false;
    let mut seen_exit = false;
    let start = Instant::now();
    while !(seen_msg && seen_exit) {
        assert!(start.elapsed() < LONG, "msg={seen_msg} exit={seen_exit}");
        let ready = multiproc::wait(&[&mine, &sender, &sleeper], Some(LONG)).unwrap();
        assert!(!ready.contains(&2), "the sleeper is still running");
        if ready.contains(&0) && !seen_msg {
            assert_eq!(mine.try_recv::<u64>().unwrap(), 300);
            seen_msg = true;
        } else if ready.contains(&0) {
            // After the message: EOF once the sender has exited.
            assert!(mine.try_recv::<u64>().unwrap_err().is_eof());
        }
        if ready.contains(&1) {
            assert!(!sender.is_alive());
            seen_exit = true;
        }
    }
    sender.join_timeout(LONG).unwrap();
    sleeper.kill().unwrap();
    assert_eq!(multiproc::wait(&[&sleeper], Some(LONG)).unwrap(), vec![0]);
    assert!(sleeper.join_timeout(LONG).is_err(), "killed");
}
