//! Pipe and Connection behaviours (CPython's `_TestConnection` and `_TestPoll`), in
//! one process: threads on either end of real socketpairs.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use multiproc::{wait, CodecError, Connection, Pipe, RecvError, SendError};
use serde::{Deserialize, Serialize};

const LONG: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    id: u64,
    name: String,
    weights: Vec<f32>,
    tags: BTreeMap<String, Option<i8>>,
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Connection>();
    check::<multiproc::Listener>();
    check::<RecvError>();
    check::<SendError>();
    check::<multiproc::ConnectError>();
}

#[test]
fn send_recv_objects_and_bytes() {
    let (a, b) = Pipe::new().unwrap();
    let job = Job {
        id: 7,
        name: "héllo".into(),
        weights: vec![0.5, -1.0],
        tags: [("x".to_string(), Some(-3)), ("y".to_string(), None)].into(),
    };
    a.send(&job).unwrap();
    a.send(&(1u8, -2i64, "three".to_string())).unwrap();
    a.send(&vec![9u8; 1000]).unwrap();
    a.send_bytes(b"raw").unwrap();
    assert_eq!(b.recv_timeout::<Job>(LONG).unwrap(), job);
    assert_eq!(
        b.recv_timeout::<(u8, i64, String)>(LONG).unwrap(),
        (1, -2, "three".to_string())
    );
    assert_eq!(b.recv_timeout::<Vec<u8>>(LONG).unwrap(), vec![9u8; 1000]);
    assert_eq!(b.recv_bytes_timeout(LONG).unwrap(), b"raw");
    // Duplex: the other way too.
    b.send(&"back".to_string()).unwrap();
    assert_eq!(a.recv_timeout::<String>(LONG).unwrap(), "back");
}

#[test]
fn wrong_type_is_a_decode_error_and_the_stream_stays_usable() {
    let (a, b) = Pipe::new().unwrap();
    a.send(&"not a number".to_string()).unwrap();
    a.send(&5u32).unwrap();
    assert!(matches!(
        b.recv_timeout::<Job>(LONG),
        Err(RecvError::Codec(CodecError::Decode(_)))
    ));
    assert_eq!(b.recv_timeout::<u32>(LONG).unwrap(), 5);
}

#[test]
fn messages_are_never_merged_or_split() {
    let (a, b) = Pipe::new().unwrap();
    let sizes: Vec<usize> = (0..200)
        .map(|i| (i * 7919) % 70_000)
        .chain([0, 0, 1, 65_536, 12])
        .collect();
    let expected = sizes.clone();
    let t = thread::spawn(move || {
        for (i, n) in sizes.iter().enumerate() {
            a.send_bytes(&vec![i as u8; *n]).unwrap();
        }
    });
    for (i, n) in expected.iter().enumerate() {
        let m = b.recv_bytes_timeout(LONG).unwrap();
        assert_eq!(m.len(), *n, "message {i}");
        assert!(m.iter().all(|&x| x == i as u8), "message {i}");
    }
    t.join().unwrap();
    assert!(b.recv_bytes_timeout(LONG).unwrap_err().is_eof());
}

#[test]
fn zero_length_messages_work() {
    let (a, b) = Pipe::new().unwrap();
    a.send_bytes(b"").unwrap();
    a.send(&Vec::<u8>::new()).unwrap();
    a.send(&()).unwrap();
    assert_eq!(b.recv_bytes_timeout(LONG).unwrap(), b"");
    assert_eq!(b.recv_timeout::<Vec<u8>>(LONG).unwrap(), Vec::<u8>::new());
    b.recv_timeout::<()>(LONG).unwrap();
}

#[test]
fn a_64_mib_message_works() {
    let (a, b) = Pipe::new().unwrap();
    let msg: Vec<u8> = (0..64 << 20).map(|i: u32| (i % 251) as u8).collect();
    let expected = msg.clone();
    let t = thread::spawn(move || a.send_bytes(&msg).unwrap());
    let got = b.recv_bytes_timeout(LONG).unwrap();
    t.join().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
}

#[test]
fn oversized_frames_are_refused_on_both_sides() {
    let (a, b) = Pipe::new().unwrap();
    // Sender side: nothing goes out.
    a.set_max_frame(1000);
    match a.send_bytes(&[0u8; 1001]) {
        Err(SendError::Codec(CodecError::TooLarge { len: 1001, max: 1000 })) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        !b.poll(Some(Duration::from_millis(50))).unwrap(),
        "nothing was sent"
    );
    // Receiver side: the header is refused.
    a.set_max_frame(u64::MAX);
    b.set_max_frame(1000);
    a.send_bytes(&[0u8; 5000]).unwrap();
    match b.recv_bytes_timeout(LONG) {
        Err(RecvError::Codec(CodecError::TooLarge { len: 5000, max: 1000 })) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn recv_bytes_into_too_short_carries_the_message() {
    let (a, b) = Pipe::new().unwrap();
    a.send_bytes(b"0123456789").unwrap();
    a.send_bytes(b"abc").unwrap();
    let mut buf = [0u8; 5];
    match b.recv_bytes_into(&mut buf) {
        Err(RecvError::BufferTooShort(e)) => {
            assert_eq!(e.message(), b"0123456789");
            assert!(e.to_string().contains("5 bytes"), "{e}");
            assert_eq!(e.into_inner(), b"0123456789");
        }
        other => panic!("{other:?}"),
    }
    // The next message is intact; an offset is a sub-slice.
    let mut big = [b'.'; 8];
    assert_eq!(b.recv_bytes_into(&mut big[2..]).unwrap(), 3);
    assert_eq!(&big, b"..abc...");
}

#[test]
fn poll_false_at_once_waits_for_its_timeout_true_on_empty_message_and_eof() {
    let (a, b) = Pipe::new().unwrap();
    let t = Instant::now();
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    assert!(t.elapsed() < Duration::from_secs(1));
    let t = Instant::now();
    assert!(!b.poll(Some(Duration::from_millis(200))).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(200), "{:?}", t.elapsed());
    a.send_bytes(b"").unwrap();
    assert!(b.poll(Some(LONG)).unwrap());
    assert!(
        b.poll(Some(Duration::ZERO)).unwrap(),
        "still ready until received"
    );
    assert_eq!(b.try_recv_bytes().unwrap(), b"");
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    drop(a);
    assert!(b.poll(Some(LONG)).unwrap());
    assert!(b.try_recv::<u8>().unwrap_err().is_eof());
}

#[test]
fn poll_wakes_when_a_message_arrives_later() {
    let (a, b) = Pipe::new().unwrap();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        a.send(&3u16).unwrap();
        a
    });
    assert!(b.poll(Some(LONG)).unwrap());
    assert_eq!(b.try_recv::<u16>().unwrap(), 3);
    drop(t.join().unwrap());
}

#[test]
fn reader_and_writer_refuse_the_wrong_direction() {
    let (r, w) = Pipe::simplex().unwrap();
    assert!(r.readable() && !r.writable());
    assert!(w.writable() && !w.readable());
    assert!(matches!(r.send(&1u8), Err(SendError::ReadOnly)));
    assert!(matches!(r.send_bytes(b"x"), Err(SendError::ReadOnly)));
    assert!(matches!(w.recv::<u8>(), Err(RecvError::WriteOnly)));
    assert!(matches!(w.recv_bytes(), Err(RecvError::WriteOnly)));
    assert!(matches!(w.poll(Some(Duration::ZERO)), Err(RecvError::WriteOnly)));
    w.send(&2u8).unwrap();
    assert_eq!(r.recv_timeout::<u8>(LONG).unwrap(), 2);
}

#[test]
fn try_recv_and_timeout_keep_partial_messages() {
    let (a, b) = Pipe::new().unwrap();
    assert!(b.try_recv::<u64>().unwrap_err().is_timeout());
    let t = Instant::now();
    assert!(b
        .recv_timeout::<u64>(Duration::from_millis(100))
        .unwrap_err()
        .is_timeout());
    assert!(t.elapsed() >= Duration::from_millis(100));
    // A 32 MiB message read by timed-out pieces arrives whole.
    let msg: Vec<u8> = (0..32u32 << 20).map(|i| (i % 13) as u8).collect();
    let expected = msg.clone();
    let w = thread::spawn(move || {
        a.send_bytes(&msg).unwrap();
        a
    });
    let start = Instant::now();
    let got = loop {
        match b.recv_bytes_timeout(Duration::from_micros(200)) {
            Ok(m) => break m,
            Err(RecvError::Timeout) => assert!(start.elapsed() < LONG, "no progress"),
            Err(e) => panic!("{e}"),
        }
    };
    assert!(got == expected);
    drop(w.join().unwrap());
}

#[test]
fn eof_only_once_every_copy_of_the_other_end_is_closed() {
    let (a, b) = Pipe::new().unwrap();
    let a2 = a.try_clone().unwrap();
    a.send(&1u8).unwrap();
    drop(a);
    assert_eq!(b.recv_timeout::<u8>(LONG).unwrap(), 1);
    assert!(b
        .recv_timeout::<u8>(Duration::from_millis(100))
        .unwrap_err()
        .is_timeout());
    a2.send(&2u8).unwrap();
    a2.close();
    // Messages sent before the close are still delivered, then EOF, and EOF again.
    assert_eq!(b.recv_timeout::<u8>(LONG).unwrap(), 2);
    assert!(b.recv_timeout::<u8>(LONG).unwrap_err().is_eof());
    assert!(b.recv_bytes_timeout(LONG).unwrap_err().is_eof());
    // The other way: sending to a closed peer is an error, not a SIGPIPE.
    assert!(matches!(b.send(&3u8), Err(SendError::Disconnected)));
}

#[test]
fn a_connection_travels_over_a_connection() {
    let (carrier_tx, carrier_rx) = Pipe::new().unwrap();
    let (x, y) = Pipe::new().unwrap();
    carrier_tx.send(&x).unwrap();
    drop(x); // the only copy left is the one in flight
    let x2: Connection = carrier_rx.recv_timeout(LONG).unwrap();
    x2.send(&"through a passed end".to_string()).unwrap();
    assert_eq!(y.recv_timeout::<String>(LONG).unwrap(), "through a passed end");
    y.send(&5u8).unwrap();
    assert_eq!(x2.recv_timeout::<u8>(LONG).unwrap(), 5);
    drop(x2);
    assert!(y.recv_timeout::<u8>(LONG).unwrap_err().is_eof());
    // A simplex end keeps its direction when it travels.
    let (r, w) = Pipe::simplex().unwrap();
    carrier_tx.send(&(r, 1u8)).unwrap();
    let (r2, one): (Connection, u8) = carrier_rx.recv_timeout(LONG).unwrap();
    assert_eq!(one, 1);
    assert!(matches!(r2.send(&0u8), Err(SendError::ReadOnly)));
    w.send(&9u8).unwrap();
    assert_eq!(r2.recv_timeout::<u8>(LONG).unwrap(), 9);
}

#[test]
fn a_connection_with_undelivered_data_refuses_to_travel() {
    let (carrier_tx, _carrier_rx) = Pipe::new().unwrap();
    let (x, y) = Pipe::new().unwrap();
    x.send(&1u8).unwrap();
    assert!(y.poll(Some(LONG)).unwrap()); // y has read the message, not delivered it
    let err = carrier_tx.send(&y).unwrap_err();
    assert!(err.to_string().contains("not yet delivered"), "{err}");
    assert!(y.try_clone().is_err());
    assert_eq!(y.try_recv::<u8>().unwrap(), 1);
    carrier_tx.send(&y).unwrap();
}

#[test]
fn wait_returns_the_ready_ones_empty_on_timeout_and_at_once_for_zero() {
    let (a1, b1) = Pipe::new().unwrap();
    let (a2, b2) = Pipe::new().unwrap();
    let (a3, b3) = Pipe::new().unwrap();
    let t = Instant::now();
    assert!(wait(&[&b1, &b2, &b3], Some(Duration::ZERO)).unwrap().is_empty());
    assert!(t.elapsed() < Duration::from_secs(1));
    let t = Instant::now();
    assert!(wait(&[&b1, &b2, &b3], Some(Duration::from_millis(200)))
        .unwrap()
        .is_empty());
    assert!(t.elapsed() >= Duration::from_millis(200));
    a2.send(&2u8).unwrap();
    a3.send(&3u8).unwrap();
    assert_eq!(wait(&[&b1, &b2, &b3], Some(LONG)).unwrap(), vec![1, 2]);
    assert_eq!(b2.try_recv::<u8>().unwrap(), 2);
    assert_eq!(wait(&[&b1, &b2, &b3], Some(LONG)).unwrap(), vec![2]);
    assert_eq!(b3.try_recv::<u8>().unwrap(), 3);
    // EOF counts as ready.
    drop(a1);
    assert_eq!(wait(&[&b1, &b2, &b3], Some(LONG)).unwrap(), vec![0]);
    // A message arriving while waiting wakes it.
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        a2.send(&7u8).unwrap();
        a2
    });
    assert_eq!(wait(&[&b2, &b3], Some(LONG)).unwrap(), vec![0]);
    drop((t.join().unwrap(), a3));
}

#[test]
fn wait_ignores_a_partial_message_until_it_is_whole() {
    // A frame header alone (the payload promised but not sent) is not "ready".
    let (a, b) = Pipe::new().unwrap();
    let big = vec![1u8; 8 << 20];
    let t = thread::spawn(move || {
        a.send_bytes(&big).unwrap();
        a
    });
    // The sender blocks when the socket buffer is full; wait must still see
    // the message once it is whole (wait reads as it goes).
    let start = Instant::now();
    loop {
        let r = wait(&[&b], Some(Duration::from_millis(50))).unwrap();
        if r == vec![0] {
            break;
        }
        assert!(start.elapsed() < LONG, "never became ready");
    }
    assert_eq!(b.try_recv_bytes().unwrap().len(), 8 << 20);
    drop(t.join().unwrap());
}

#[test]
fn concurrent_senders_never_interleave_frames() {
    let (a, b) = Pipe::new().unwrap();
    let a = std::sync::Arc::new(a);
    let threads: Vec<_> = (0..4u8)
        .map(|k| {
            let a = a.clone();
            thread::spawn(move || {
                for i in 0..200usize {
                    a.send_bytes(&vec![k; 1 + (i * 997) % 40_000]).unwrap();
                }
            })
        })
        .collect();
    for _ in 0..800 {
        let m = b.recv_bytes_timeout(LONG).unwrap();
        assert!(m.iter().all(|&x| x == m[0]));
    }
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn recv_bytes_into_takes_messages_of_every_size_in_order() {
    let (a, b) = Pipe::new().unwrap();
    let sizes = [0usize, 1, 12, 16 << 10, 100_000, 1 << 20, 3, 5 << 20];
    let t = thread::spawn(move || {
        for (i, n) in sizes.iter().enumerate() {
            a.send_bytes(&vec![i as u8 + 1; *n]).unwrap();
            a.send(&(i as u32)).unwrap();
        }
        a
    });
    let mut buf = vec![0u8; 6 << 20];
    for (i, n) in sizes.iter().enumerate() {
        let got = b.recv_bytes_into(&mut buf).unwrap();
        assert_eq!(got, *n, "message {i}");
        assert!(buf[..got].iter().all(|&x| x == i as u8 + 1), "message {i}");
        assert_eq!(b.recv_timeout::<u32>(LONG).unwrap(), i as u32);
    }
    drop(t.join().unwrap());
    assert!(matches!(b.recv_bytes_into(&mut buf), Err(RecvError::Eof)));
}
