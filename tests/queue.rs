//! CPython `_TestQueue` behaviours, with real processes, plus sizes and stress.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use multiproc::{GetError, JoinableQueue, Process, PutError, Queue, SimpleQueue, TaskDoneError};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(30);

fn assert_send_sync<X: Send + Sync + Clone>() {}

#[test]
fn public_types_are_send_sync_clone() {
    assert_send_sync::<Queue<String>>();
    assert_send_sync::<SimpleQueue<std::cell::Cell<u8>>>();
    assert_send_sync::<JoinableQueue<Vec<u8>>>();
    fn err<E: std::error::Error + Send + Sync + 'static>() {}
    err::<PutError<String>>();
    err::<GetError>();
    err::<TaskDoneError>();
    err::<multiproc::QueueError>();
}

#[test]
fn bounded_put_try_put_put_timeout() {
    let q: Queue<u32> = Queue::bounded(2).unwrap();
    assert_eq!(q.maxsize(), Some(2));
    q.put(1).unwrap();
    q.try_put(2).unwrap();
    assert!(q.is_full());
    match q.try_put(3) {
        Err(PutError::Full(3)) => {}
        other => panic!("{other:?}"),
    }
    let t0 = Instant::now();
    let e = q.put_timeout(4, Duration::from_millis(100)).unwrap_err();
    assert!(e.is_timeout());
    assert_eq!(e.into_inner(), 4);
    assert!(t0.elapsed() >= Duration::from_millis(100));
    assert_eq!(q.len(), 2);
    assert!(Queue::<u8>::bounded(0).is_err());

    // A child makes room: a blocked put completes.
    fn take_one(q: Queue<u32>) -> u32 {
        std::thread::sleep(Duration::from_millis(100));
        q.get_timeout(T).unwrap()
    }
    let p = Process::spawn(q.clone(), take_one).unwrap();
    q.put_timeout(5, T).unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(1));
    assert_eq!((q.try_get().unwrap(), q.try_get().unwrap()), (2, 5));
}

#[test]
fn get_variants() {
    let q: Queue<String> = Queue::new().unwrap();
    assert!(q.try_get().unwrap_err().is_empty());
    let t0 = Instant::now();
    assert!(q
        .get_timeout(Duration::from_millis(100))
        .unwrap_err()
        .is_timeout());
    assert!(t0.elapsed() >= Duration::from_millis(100));
    fn put_later(q: Queue<String>) {
        std::thread::sleep(Duration::from_millis(100));
        q.put("late".into()).unwrap();
    }
    let p = Process::spawn(q.clone(), put_later).unwrap();
    assert_eq!(q.get_timeout(T).unwrap(), "late");
    p.join_timeout(T).unwrap().unwrap();
}

#[test]
fn fifo_across_parent_and_child_and_len_tracking() {
    let q: Queue<(u64, String)> = Queue::new().unwrap();
    fn produce(q: Queue<(u64, String)>) -> usize {
        for i in 0..1000 {
            q.put((i, format!("item {i}"))).unwrap();
        }
        q.len()
    }
    let p = Process::spawn(q.clone(), produce).unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(1000));
    assert_eq!(q.len(), 1000);
    for i in 0..1000 {
        assert_eq!(q.get_timeout(T).unwrap(), (i, format!("item {i}")));
        assert_eq!(q.len(), 999 - i as usize);
    }
    assert!(q.is_empty());

    // And the other way round, with the child checking the order.
    fn check(q: Queue<(u64, String)>) -> bool {
        (0..500).all(|i| q.get_timeout(T).ok() == Some((i, format!("item {i}"))))
    }
    let p = Process::spawn(q.clone(), check).unwrap();
    for i in 0..500 {
        q.put((i, format!("item {i}"))).unwrap();
    }
    assert_eq!(p.join_timeout(T).unwrap(), Some(true));
}

#[test]
fn task_done_with_four_consumers_and_join() {
    let q: JoinableQueue<u64> = JoinableQueue::new().unwrap();
    let results: Queue<u64> = Queue::new().unwrap();
    fn worker((q, out): (JoinableQueue<u64>, Queue<u64>)) {
        loop {
            match q.get_timeout(T) {
                Ok(u64::MAX) => {
                    q.task_done().unwrap();
                    return;
                }
                Ok(x) => {
                    out.put(x * x).unwrap();
                    q.task_done().unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    let workers: Vec<_> = (0..4)
        .map(|_| Process::spawn((q.clone(), results.clone()), worker).unwrap())
        .collect();
    for i in 0..200 {
        q.put(i).unwrap();
    }
    assert!(q.join_timeout(T).unwrap(), "join timed out");
    assert_eq!(q.unfinished_tasks(), 0);
    // Every task_done came after its result was put.
    assert_eq!(results.len(), 200);
    let mut sq: Vec<u64> = (0..200).map(|_| results.try_get().unwrap()).collect();
    sq.sort_unstable();
    assert_eq!(sq, (0..200u64).map(|i| i * i).collect::<Vec<_>>());
    for _ in 0..4 {
        q.put(u64::MAX).unwrap();
    }
    for w in workers {
        w.join_timeout(T).unwrap().unwrap();
    }
    assert!(q.join_timeout(T).unwrap());
}

#[test]
fn task_done_too_many_times() {
    let q: JoinableQueue<u8> = JoinableQueue::new().unwrap();
    assert!(matches!(q.task_done(), Err(TaskDoneError::TooManyCalls)));
    q.put(1).unwrap();
    q.get().unwrap();
    q.task_done().unwrap();
    let e = q.task_done().unwrap_err();
    assert!(e.to_string().contains("more times than items"), "{e}");
    assert!(q.join_timeout(Duration::from_secs(1)).unwrap());
}

#[test]
fn close_then_put_and_get_seen_by_other_processes() {
    let q: Queue<u32> = Queue::new().unwrap();
    fn blocked_get(q: Queue<u32>) -> String {
        match q.get_timeout(T) {
            Err(e) => format!("{e:?}"),
            Ok(v) => format!("got {v}"),
        }
    }
    let p = Process::spawn(q.clone(), blocked_get).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    q.close();
    assert_eq!(p.join_timeout(T).unwrap().as_deref(), Some("Closed"));
    assert!(q.put(1).unwrap_err().is_closed());
    assert!(q.get_timeout(Duration::from_secs(1)).unwrap_err().is_closed());

    // A child closes; the parent's put fails, and the items left can be drained.
    let q: Queue<u32> = Queue::new().unwrap();
    q.put(7).unwrap();
    fn close(q: Queue<u32>) {
        q.close()
    }
    Process::spawn(q.clone(), close)
        .unwrap()
        .join_timeout(T)
        .unwrap()
        .unwrap();
    assert!(q.is_closed());
    assert_eq!(q.put(8).unwrap_err().into_inner(), 8);
    assert_eq!(q.get_timeout(T).unwrap(), 7);
    assert!(q.try_get().unwrap_err().is_closed());
}

#[test]
fn simple_queue_emptiness_across_processes() {
    let q: SimpleQueue<String> = SimpleQueue::new().unwrap();
    assert!(q.is_empty());
    fn put_one(q: SimpleQueue<String>) -> bool {
        q.put("x".into()).unwrap();
        q.is_empty()
    }
    let p = Process::spawn(q.clone(), put_one).unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(false));
    assert!(!q.is_empty());
    fn take(q: SimpleQueue<String>) -> (String, bool) {
        (q.get_timeout(T).unwrap(), q.is_empty())
    }
    let p = Process::spawn(q.clone(), take).unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(("x".to_string(), true)));
    assert!(q.is_empty());
}

#[test]
fn four_producers_four_consumers_every_item_once() {
    const N: u64 = 100_000;
    let q: Queue<u64> = Queue::bounded(10_000).unwrap();
    fn produce((q, p): (Queue<u64>, u64)) {
        for i in 0..N {
            q.put_timeout(p * N + i, T).unwrap();
        }
    }
    fn consume(q: Queue<u64>) -> Vec<u64> {
        let mut got = Vec::new();
        loop {
            match q.get_timeout(T) {
                Ok(v) => got.push(v),
                Err(GetError::Closed) => return got,
                Err(e) => panic!("{e}"),
            }
        }
    }
    let consumers: Vec<_> = (0..4)
        .map(|_| Process::spawn(q.clone(), consume).unwrap())
        .collect();
    let producers: Vec<_> = (0..4)
        .map(|p| Process::spawn((q.clone(), p), produce).unwrap())
        .collect();
    for p in producers {
        p.join_timeout(Duration::from_secs(120)).unwrap().unwrap();
    }
    q.close();
    let mut all = Vec::new();
    for c in consumers {
        let got = c.join_timeout(Duration::from_secs(120)).unwrap().unwrap();
        // Each producer's items reach one consumer in order.
        for p in 0..4 {
            let mine: Vec<_> = got.iter().filter(|v| **v / N == p).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]));
        }
        all.extend(got);
    }
    assert_eq!(all.len() as u64, 4 * N);
    let set: HashSet<u64> = all.into_iter().collect();
    assert_eq!(set.len() as u64, 4 * N);
    assert!(q.is_empty());
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn messages_of_0b_1kib_1mib_64mib_between_processes() {
    let sizes = [0usize, 1024, 1 << 20, 64 << 20];
    let q: Queue<Vec<u8>> = Queue::new().unwrap();
    fn send(q: Queue<Vec<u8>>) {
        for (i, n) in [0usize, 1024, 1 << 20, 64 << 20].into_iter().enumerate() {
            q.put(pattern(n, i as u8)).unwrap();
        }
    }
    let p = Process::spawn(q.clone(), send).unwrap();
    for (i, n) in sizes.into_iter().enumerate() {
        let got = q.get_timeout(T).unwrap();
        assert_eq!(got.len(), n);
        assert!(got == pattern(n, i as u8), "payload {i} corrupted");
    }
    p.join_timeout(T).unwrap().unwrap();
    // Structured values of the same sizes go through serde.
    let q: Queue<(String, Vec<u16>)> = Queue::new().unwrap();
    let big = (String::from("x").repeat(1 << 20), vec![7u16; 1 << 20]);
    q.put(big.clone()).unwrap();
    q.put((String::new(), vec![])).unwrap();
    assert_eq!(q.get().unwrap(), big);
    assert_eq!(q.get().unwrap(), (String::new(), vec![]));
}

#[test]
fn items_larger_than_the_queue_go_through_in_pieces() {
    // A 4 KiB ring: the larger items pass in pieces while the consumer takes
    // them; the others whole. Between processes, with task counting.
    let q: JoinableQueue<Vec<u8>> = JoinableQueue::with_limits(None, 4096).unwrap();
    fn send(q: JoinableQueue<Vec<u8>>) {
        for (i, n) in [4088usize, 4089, 0, 1 << 20, 100, 5 << 20]
            .into_iter()
            .enumerate()
        {
            q.put(pattern(n, i as u8)).unwrap();
        }
        q.join_timeout(T).unwrap();
    }
    let p = Process::spawn(q.clone(), send).unwrap();
    for (i, n) in [4088usize, 4089, 0, 1 << 20, 100, 5 << 20]
        .into_iter()
        .enumerate()
    {
        let got = q.get_timeout(T).unwrap();
        assert_eq!(got.len(), n);
        assert!(got == pattern(n, i as u8), "item {i} corrupted");
        q.task_done().unwrap();
    }
    p.join_timeout(T).unwrap().unwrap();
    assert!(q.is_empty());
    assert!(q.join_timeout(Duration::ZERO).unwrap());
    // `try_put` never waits, and such an item cannot go in without waiting.
    assert!(q.try_put(vec![2; 8 << 10]).unwrap_err().is_full());
    // With no consumer, `put_timeout` gives the item back; the pieces that
    // went out are dropped by the next get, which goes on.
    let err = q
        .put_timeout(pattern(1 << 20, 9), Duration::from_millis(50))
        .unwrap_err();
    assert!(err.is_timeout());
    assert!(err.into_inner() == pattern(1 << 20, 9));
    assert_eq!(q.len(), 0);
    assert!(q.get_timeout(Duration::from_millis(50)).unwrap_err().is_timeout());
    q.put(vec![1; 3]).unwrap();
    assert_eq!(q.get_timeout(T).unwrap(), vec![1; 3]);
    // A byte-budget full queue still refuses what does not fit now.
    q.put(vec![1; 4088]).unwrap();
    assert!(q.try_put(vec![3; 8]).unwrap_err().is_full());
    assert_eq!(q.get().unwrap(), vec![1; 4088]);
}

#[test]
fn items_in_pieces_through_a_ring_that_gives_memory_back() {
    // Past 32 MiB a ring gives the pages behind its consumers back, which
    // takes the producers' lock; the producer of an item in pieces holds it
    // while it waits for room. Both sides are children, joined with a
    // deadline, so that a deadlock fails the test instead of hanging it.
    // A backlog of small items first, so that the consumer crosses chunks
    // of the ring behind it while the big item's producer waits for room.
    let q: Queue<Vec<u8>> = Queue::with_limits(None, 34 << 20).unwrap();
    fn sizes() -> impl Iterator<Item = usize> {
        (0..2000).map(|_| 10 << 10).chain([80 << 20, 10, 80 << 20])
    }
    fn send(q: Queue<Vec<u8>>) {
        for (i, n) in sizes().enumerate() {
            q.put(pattern(n, i as u8)).unwrap();
        }
    }
    fn take(q: Queue<Vec<u8>>) -> bool {
        std::thread::sleep(Duration::from_millis(300));
        sizes()
            .enumerate()
            .all(|(i, n)| q.get_timeout(T).is_ok_and(|v| v == pattern(n, i as u8)))
    }
    let c = Process::builder().daemon(true).spawn(q.clone(), take).unwrap();
    let p = Process::builder().daemon(true).spawn(q.clone(), send).unwrap();
    assert_eq!(c.join_timeout(T).unwrap(), Some(true));
    assert_eq!(p.join_timeout(T).unwrap(), Some(()));
    assert!(q.is_empty());
}

struct Refuses;
impl Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refused"))
    }
}
impl<'de> Deserialize<'de> for Refuses {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Refuses)
    }
}

#[test]
fn failing_serialize_returns_its_error_and_changes_nothing() {
    let q: Queue<Refuses> = Queue::new().unwrap();
    match q.put(Refuses) {
        Err(PutError::Encode(Refuses, e)) => assert!(e.to_string().contains("Serialize"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(q.is_empty());
    assert!(matches!(q.try_get(), Err(GetError::Empty)));
}

#[test]
fn a_handle_cannot_travel_in_a_queue() {
    let q: Queue<Queue<u8>> = Queue::new().unwrap();
    let inner: Queue<u8> = Queue::new().unwrap();
    let e = q.put(inner).unwrap_err();
    assert!(e.to_string().contains("cannot travel"), "{e}");
    assert!(q.is_empty());
}
