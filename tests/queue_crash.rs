//! SIGKILL producers and consumers at any point: the queue stays consistent and
//! usable, and at most the item the dead process was handling is lost.

use std::collections::HashSet;
use std::time::Duration;

use multiproc::{GetError, Process, ProcessError, Queue};

const T: Duration = Duration::from_secs(30);
const ITEM: usize = 4 << 20;

/// A 4 MiB item carrying its sequence number, checkable for corruption.
fn item(seq: u64) -> Vec<u8> {
    let mut v = vec![(seq % 251) as u8; ITEM];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    v
}

fn check(v: &[u8]) -> u64 {
    assert_eq!(v.len(), ITEM, "item of the wrong length");
    let seq = u64::from_le_bytes(v[..8].try_into().unwrap());
    assert!(
        v[8..].iter().all(|b| *b == (seq % 251) as u8),
        "item {seq} corrupted"
    );
    seq
}

/// Spawns a child that is meant to be killed as a daemon, so that a test that
/// fails before it kills it leaves no process behind (a daemon dies with its
/// parent; an orphan would also keep the test's output pipe open).
fn victim<A, R, F>(args: A, f: F) -> Process<R>
where
    A: serde::Serialize + serde::de::DeserializeOwned + 'static,
    R: serde::Serialize + serde::de::DeserializeOwned + 'static,
    F: Fn(A) -> R + Copy + 'static,
{
    Process::builder().daemon(true).spawn(args, f).unwrap()
}

fn kill_and_reap<R: serde::de::DeserializeOwned + 'static>(p: Process<R>) {
    p.kill().unwrap();
    match p.join_timeout(T) {
        Err(ProcessError::Signaled(_)) => {}
        Ok(Some(_)) => {} // finished before the signal: also fine
        other => panic!("killed child: {:?}", other.map(|_| ())),
    }
}

/// A consumer child: takes items, checks them, reports their numbers on `done`.
fn consume_checked((q, done): (Queue<Vec<u8>>, Queue<u64>)) {
    while let Ok(v) = q.get_timeout(T) {
        done.put(check(&v)).unwrap();
    }
}

/// A producer child: puts items 0, 1, 2, ... until it is killed.
fn put_items_forever(q: Queue<Vec<u8>>) {
    for s in 0.. {
        q.put(item(s)).unwrap();
    }
}

fn works_after(q: &Queue<Vec<u8>>) {
    q.put(vec![42; 3]).unwrap();
    let mut last = None;
    while let Ok(v) = q.try_get() {
        last = Some(v);
    }
    assert_eq!(last, Some(vec![42; 3]));
}

#[test]
fn consumer_killed_while_blocked_in_get() {
    let q: Queue<Vec<u8>> = Queue::new().unwrap();
    fn wait_forever(q: Queue<Vec<u8>>) -> usize {
        q.get().map(|v| v.len()).unwrap_or(0)
    }
    for round in 0..4u8 {
        let p = victim(q.clone(), wait_forever);
        std::thread::sleep(Duration::from_millis(150));
        kill_and_reap(p);
        // Nothing was lost: the next item reaches a live consumer.
        q.put(vec![round; 10]).unwrap();
        let p = Process::spawn(q.clone(), wait_forever).unwrap();
        assert_eq!(p.join_timeout(T).unwrap(), Some(10));
        assert!(q.is_empty());
    }
}

#[test]
fn producer_killed_while_blocked_in_put() {
    let q: Queue<Vec<u8>> = Queue::bounded(2).unwrap();
    q.put(vec![1]).unwrap();
    q.put(vec![2]).unwrap();
    fn put_more(q: Queue<Vec<u8>>) {
        q.put(vec![3]).unwrap();
    }
    let p = victim(q.clone(), put_more);
    std::thread::sleep(Duration::from_millis(150));
    kill_and_reap(p);
    assert_eq!(q.len(), 2);
    assert_eq!(q.get_timeout(T).unwrap(), vec![1]);
    q.put_timeout(vec![4], T).unwrap();
    assert_eq!(q.get_timeout(T).unwrap(), vec![2]);
    assert_eq!(q.get_timeout(T).unwrap(), vec![4]);
    assert!(q.is_empty());
}

#[test]
fn consumer_killed_mid_get_loses_at_most_its_item() {
    const N: u64 = 40;
    let mut lost_total = 0;
    for (round, delay) in [15u64, 40, 70, 100, 130].into_iter().enumerate() {
        let q: Queue<Vec<u8>> = Queue::new().unwrap();
        let done: Queue<u64> = Queue::new().unwrap();
        for s in 0..N {
            q.put(item(s)).unwrap();
        }
        let p = victim((q.clone(), done.clone()), consume_checked);
        std::thread::sleep(Duration::from_millis(delay));
        kill_and_reap(p);
        let mut seen = HashSet::new();
        let mut taken = 0;
        while let Ok(s) = done.try_get() {
            assert!(seen.insert(s), "item {s} taken twice");
            taken += 1;
        }
        let mut left = Vec::new();
        loop {
            match q.try_get() {
                Ok(v) => left.push(check(&v)),
                Err(GetError::Empty) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(left.windows(2).all(|w| w[0] < w[1]), "order lost: {left:?}");
        for s in &left {
            assert!(seen.insert(*s), "item {s} both taken and still queued");
        }
        let lost = N as usize - seen.len();
        assert!(
            lost <= 1,
            "round {round}: {lost} items lost ({taken} taken, {} left)",
            left.len()
        );
        lost_total += lost;
        works_after(&q);
        // The consumer may have died inside `done.put`: that queue works too.
        done.put(1).unwrap();
        assert_eq!(done.try_get().unwrap(), 1);
    }
    eprintln!("consumer killed mid-get 5 times: {lost_total} items lost in all");
}

#[test]
fn producer_killed_mid_put_leaves_a_consistent_queue() {
    for delay in [10u64, 35, 60, 90, 120, 150] {
        let q: Queue<Vec<u8>> = Queue::new().unwrap();
        let p = victim(q.clone(), put_items_forever);
        std::thread::sleep(Duration::from_millis(delay));
        kill_and_reap(p);
        // Every committed item is intact and in order, with no gap: only the
        // item being put when the producer died can be missing (at the end).
        let n = q.len();
        for expect in 0..n as u64 {
            assert_eq!(check(&q.get_timeout(T).unwrap()), expect);
        }
        assert!(q.is_empty());
        works_after(&q);
    }
}

#[test]
fn survivors_keep_going_while_others_are_killed() {
    // Two producers and a consumer run; one extra producer and one extra
    // consumer are killed repeatedly; the survivors finish their work.
    const N: u64 = 20_000;
    fn produce((q, base): (Queue<u64>, u64)) {
        for i in 0..N {
            q.put_timeout(base + i, T).unwrap();
        }
    }
    // The victim producer puts until it is killed: a finite one could finish
    // early while the victim consumer, scheduled ahead of the test thread on a
    // loaded machine, eats all it put, leaving this round short of items.
    fn produce_forever((q, base): (Queue<u64>, u64)) {
        for i in 0.. {
            q.put_timeout(base + i, T).unwrap();
        }
    }
    fn consume_forever((q, taken): (Queue<u64>, Queue<u64>)) {
        while let Ok(v) = q.get() {
            taken.put(v).unwrap();
        }
    }
    let taken: Queue<u64> = Queue::new().unwrap();
    let q: Queue<u64> = Queue::bounded(64).unwrap();
    let survivors: Vec<_> = (0..2u64)
        .map(|p| Process::spawn((q.clone(), p * N), produce).unwrap())
        .collect();
    let mut got = Vec::new();
    for round in 0..6u64 {
        let victim_p = victim((q.clone(), 1 << (32 + round)), produce_forever);
        let victim_c = victim((q.clone(), taken.clone()), consume_forever);
        for i in 0..2000 {
            match q.get_timeout(T) {
                Ok(v) => got.push(v),
                Err(e) => panic!(
                    "round {round}, item {i}: {e}; len {}, survivors alive {:?}, victims alive {} {}",
                    q.len(),
                    survivors.iter().map(|p| p.is_alive()).collect::<Vec<_>>(),
                    victim_p.is_alive(),
                    victim_c.is_alive(),
                ),
            }
        }
        kill_and_reap(victim_p);
        kill_and_reap(victim_c);
    }
    while survivors.iter().any(|p| p.is_alive()) || !q.is_empty() {
        match q.get_timeout(Duration::from_millis(500)) {
            Ok(v) => got.push(v),
            Err(GetError::Timeout) => {}
            Err(e) => panic!("{e}"),
        }
    }
    for p in survivors {
        p.join_timeout(T).unwrap().unwrap();
    }
    while let Ok(v) = taken.try_get() {
        got.push(v);
    }
    // Each of the survivors' items arrived exactly once, in order per producer,
    // except at most one per killed consumer (the item it was holding).
    let mine: Vec<u64> = got.iter().copied().filter(|v| *v < 2 * N).collect();
    let set: HashSet<u64> = mine.iter().copied().collect();
    assert_eq!(set.len(), mine.len(), "an item arrived twice");
    let lost = 2 * N as usize - set.len();
    assert!(lost <= 6, "{lost} items lost with 6 consumers killed");
    eprintln!("6 consumers and 6 producers killed: {lost} of the survivors' items lost");
    q.put(7).unwrap();
    assert_eq!(q.get_timeout(T).unwrap(), 7);
}

/// A 64 KiB ring: the 4 MiB items pass in pieces (about 16 KiB each).
fn small_ring() -> Queue<Vec<u8>> {
    Queue::with_limits(None, 64 << 10).unwrap()
}

#[test]
fn producer_killed_writing_an_item_larger_than_the_ring() {
    // No consumer: the producer waits for room after the first pieces,
    // holding the producers' lock. Killed there, its pieces are dropped by
    // the next get, which then waits for an item as usual.
    let q = small_ring();
    let p = victim(q.clone(), put_items_forever);
    std::thread::sleep(Duration::from_millis(150));
    kill_and_reap(p);
    assert!(q
        .get_timeout(Duration::from_millis(600))
        .unwrap_err()
        .is_timeout());
    assert!(q.is_empty());
    works_after(&q);
    // With a consumer taking the pieces: killed at any point, every item the
    // consumer gets is whole and in order, with no gap.
    let mut total = 0;
    for delay in [5u64, 20, 45, 80] {
        let q = small_ring();
        let p = victim(q.clone(), put_items_forever);
        let consumer = std::thread::spawn({
            let q = q.clone();
            move || {
                let mut got = Vec::new();
                while let Ok(v) = q.get_timeout(Duration::from_millis(1500)) {
                    got.push(check(&v));
                }
                got
            }
        });
        std::thread::sleep(Duration::from_millis(delay));
        kill_and_reap(p);
        let got = consumer.join().unwrap();
        assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
        assert!(q.is_empty());
        total += got.len();
        works_after(&q);
    }
    assert!(total > 0, "no item went through in pieces");
    eprintln!("producer killed writing 4 MiB items in pieces: {total} whole items taken in 4 rounds");
}

#[test]
fn consumer_killed_taking_an_item_larger_than_the_ring() {
    const N: u64 = 12;
    let mut lost_total = 0;
    for delay in [5u64, 20, 45] {
        let q = small_ring();
        let done: Queue<u64> = Queue::new().unwrap();
        let c = victim((q.clone(), done.clone()), consume_checked);
        let producer = std::thread::spawn({
            let q = q.clone();
            move || {
                for s in 0..N {
                    q.put_timeout(item(s), T).unwrap();
                }
            }
        });
        std::thread::sleep(Duration::from_millis(delay));
        kill_and_reap(c);
        // The next consumer drops what is left of the dead one's item and
        // takes the rest; the producer, waiting for room, finishes.
        let mut rest = Vec::new();
        while let Ok(v) = q.get_timeout(Duration::from_millis(1500)) {
            rest.push(check(&v));
        }
        producer.join().unwrap();
        let mut taken = Vec::new();
        while let Ok(s) = done.try_get() {
            taken.push(s);
        }
        let all: Vec<u64> = taken.iter().chain(&rest).copied().collect();
        assert!(
            all.windows(2).all(|w| w[0] < w[1]),
            "order lost or item twice: {all:?}"
        );
        assert!(all.len() as u64 >= N - 1, "more than one item lost: {all:?}");
        assert!(q.is_empty());
        works_after(&q);
        lost_total += N - all.len() as u64;
    }
    eprintln!("consumer killed taking 4 MiB items in pieces 3 times: {lost_total} items lost in all");
}

#[test]
fn a_get_gives_up_on_a_stopped_producer_mid_item_and_nothing_is_lost() {
    use rustix::process::{kill_process, Pid, Signal};
    fn send(q: Queue<Vec<u8>>) -> bool {
        q.put(item(7)).is_ok()
    }
    // A 64 KiB ring: the 4 MiB item goes in pieces. No consumer yet, so the
    // producer fills the ring and waits for room; it is stopped there.
    let q = small_ring();
    let p = victim(q.clone(), send);
    std::thread::sleep(Duration::from_millis(200));
    let pid = Pid::from_raw(p.pid() as i32).unwrap();
    kill_process(pid, Signal::STOP).unwrap();
    // The get takes the pieces in the ring, waits for the next one past its
    // timeout while a piece could still come, then gives up.
    let t = std::time::Instant::now();
    let err = q.get_timeout(Duration::from_millis(200)).unwrap_err();
    let took = t.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "gave up after {took:?}"
    );
    // Running again, the producer starts the item over: it arrives whole.
    kill_process(pid, Signal::CONT).unwrap();
    assert_eq!(check(&q.get_timeout(T).unwrap()), 7);
    assert_eq!(p.join_timeout(T).unwrap(), Some(true));
    assert!(q.is_empty());
    works_after(&q);
}
