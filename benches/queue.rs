//! Queues side by side: multiproc's shared-memory queues against CPython's
//! `multiprocessing` queues, ipc-channel's typed channel, and a raw shared-memory SPSC ring of `u64` with
//! futex wake-up (the ceiling: no locking, no serialization).
//!
//! Run: `cargo bench --bench queue` (`MULTIPROC_BENCH_QUICK=1` for a smoke run).
//! The raw ring is `common::raw::shm_ring_msgs_s`, shared with `benches/limits.rs`.

mod common;

use std::time::{Duration, Instant};

use common::{n, python, scenario, Contender};
use multiproc::{JoinableQueue, Process, Queue, SimpleQueue};

const T: Duration = Duration::from_secs(600);

fn produce((q, n): (Queue<u64>, u64)) {
    for i in 0..n {
        q.put(i).unwrap();
    }
}

fn consume((q, n): (Queue<u64>, u64)) -> u64 {
    let mut sum = 0;
    for _ in 0..n {
        sum += q.get().unwrap();
    }
    sum
}

fn produce_simple((q, n): (SimpleQueue<u64>, u64)) {
    for i in 0..n {
        q.put(i).unwrap();
    }
}

/// Items per second from the first item the consumer gets to the last (the
/// steady rate: the producer's start is the process benchmark's business);
/// every contender of the 1P1C scenario is timed the same way.
fn one_to_one(n: u64) -> f64 {
    let q: Queue<u64> = Queue::new().unwrap();
    let p = Process::spawn((q.clone(), n), produce).unwrap();
    let mut sum = q.get().unwrap();
    let t = Instant::now();
    for _ in 1..n {
        sum += q.get().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    p.join_timeout(T).unwrap().unwrap();
    assert_eq!(sum, n * (n - 1) / 2);
    (n - 1) as f64 / secs
}

fn one_to_one_simple(n: u64) -> f64 {
    let q: SimpleQueue<u64> = SimpleQueue::new().unwrap();
    let t = Instant::now();
    let p = Process::spawn((q.clone(), n), produce_simple).unwrap();
    for _ in 0..n {
        q.get().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    p.join_timeout(T).unwrap().unwrap();
    n as f64 / secs
}

fn two_to_two(n: u64) -> f64 {
    let half = n / 2;
    let q: Queue<u64> = Queue::new().unwrap();
    let t = Instant::now();
    let ps: Vec<_> = (0..2)
        .map(|_| Process::spawn((q.clone(), half), produce).unwrap())
        .collect();
    let cs: Vec<_> = (0..2)
        .map(|_| Process::spawn((q.clone(), half), consume).unwrap())
        .collect();
    let sum: u64 = cs.iter().map(|c| c.join_timeout(T).unwrap().unwrap()).sum();
    let secs = t.elapsed().as_secs_f64();
    for p in ps {
        p.join_timeout(T).unwrap().unwrap();
    }
    assert_eq!(sum, 2 * (half * (half - 1) / 2));
    (2 * half) as f64 / secs
}

fn produce_bytes((q, n, size): (Queue<Vec<u8>>, u64, usize)) {
    for i in 0..n {
        q.put(vec![(i % 251) as u8; size]).unwrap();
    }
}

/// `n` items of `size` bytes through `q`, in MB/s. `Queue::new()` lets the
/// producer run ahead into fresh memory (page faults then dominate);
/// `Queue::bounded(64)` keeps the items in flight within warm pages; a byte
/// budget smaller than the items makes them pass in pieces.
fn bytes_mb_s(n: u64, size: usize, q: Queue<Vec<u8>>) -> f64 {
    let t = Instant::now();
    let p = Process::spawn((q.clone(), n, size), produce_bytes).unwrap();
    let mut total = 0;
    for _ in 0..n {
        total += q.get().unwrap().len();
    }
    let secs = t.elapsed().as_secs_f64();
    p.join_timeout(T).unwrap().unwrap();
    total as f64 / secs / 1e6
}

/// Single-core memcpy bandwidth: 64 KiB blocks from a 256 MiB buffer to another
/// (out of cache, as a queue's pages are in general), in MB/s.
fn memcpy_mb_s(size: usize) -> f64 {
    let total = 256 << 20;
    let src = vec![1u8; total];
    let mut dst = vec![0u8; total];
    dst.fill(2); // fault the pages in before timing
    let t = Instant::now();
    for (d, s) in dst.chunks_mut(size).zip(src.chunks(size)) {
        d.copy_from_slice(s);
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(&dst);
    total as f64 / secs / 1e6
}

fn task_consumer((q, n): (JoinableQueue<u64>, u64)) {
    for _ in 0..n {
        q.get().unwrap();
        q.task_done().unwrap();
    }
}

fn joinable(n: u64) -> f64 {
    let q: JoinableQueue<u64> = JoinableQueue::new().unwrap();
    let t = Instant::now();
    let p = Process::spawn((q.clone(), n), task_consumer).unwrap();
    for i in 0..n {
        q.put(i).unwrap();
    }
    assert!(q.join_timeout(T).unwrap());
    let secs = t.elapsed().as_secs_f64();
    p.join_timeout(T).unwrap().unwrap();
    n as f64 / secs
}

fn ipc_produce((name, n): (String, u64)) {
    let tx: ipc_channel::ipc::IpcSender<u64> = ipc_channel::ipc::IpcSender::connect(name).unwrap();
    for i in 0..n {
        tx.send(i).unwrap();
    }
}

/// ipc-channel's typed channel (a Unix socket per channel), producer process -> parent.
fn ipc_channel_1p1c(n: u64) -> f64 {
    let (server, name) = ipc_channel::ipc::IpcOneShotServer::<u64>::new().unwrap();
    let p = Process::spawn((name, n), ipc_produce).unwrap();
    let (rx, first) = server.accept().unwrap();
    let t = Instant::now();
    let mut sum = first;
    for _ in 1..n {
        sum += rx.recv().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    p.join_timeout(T).unwrap().unwrap();
    assert_eq!(sum, n * (n - 1) / 2);
    (n - 1) as f64 / secs
}

fn wanted(name: &str) -> bool {
    match std::env::var("QUEUE_BENCH_ONLY") {
        Ok(list) => list.split(',').any(|w| w.trim() == name),
        Err(_) => true,
    }
}

fn main() {
    let items = n(500_000, 10_000) as u64;
    let ns = items.to_string();
    // The scenario: 1M items, the steady rate (from the first item
    // the consumer gets to the last, every contender alike).
    let million = n(1_000_000, 10_000) as u64;
    let ms = million.to_string();
    if wanted("1p1c") {
        scenario(
            "Queue<u64>, 1 producer process -> 1 consumer process, 1M items, steady rate",
            "items/s",
            true,
            5,
            vec![
                Contender::new("multiproc Queue", || one_to_one(million)),
                Contender::new("raw SPSC shm ring + futex", || {
                    common::raw::shm_ring_msgs_s(million)
                }),
                Contender::new("ipc-channel", || ipc_channel_1p1c(million)),
                Contender::new("CPython mp.Queue", || python("queue_1p1c.py", &[&ms, "steady"])),
            ],
        );
    }
    if wanted("simple") {
        scenario(
            "SimpleQueue<u64>, 1 producer process -> 1 consumer process",
            "items/s",
            true,
            3,
            vec![
                Contender::new("multiproc SimpleQueue", || one_to_one_simple(items)),
                Contender::new("CPython mp.SimpleQueue", || {
                    python("queue_1p1c.py", &[&ns, "simple"])
                }),
            ],
        );
    }
    if wanted("2p2c") {
        scenario(
            "Queue<u64>, 2 producer processes -> 2 consumer processes",
            "items/s",
            true,
            3,
            vec![
                Contender::new("multiproc Queue", || two_to_two(items)),
                Contender::new("CPython mp.Queue", || python("queue_2p2c.py", &[&ns])),
            ],
        );
    }
    let size = 64 << 10;
    let blocks = n(20_000, 200) as u64;
    let bs = blocks.to_string();
    let sz = size.to_string();
    if wanted("bytes") {
        scenario(
            "Vec<u8> of 64 KiB, 1 producer process -> 1 consumer process",
            "MB/s",
            true,
            5,
            vec![
                Contender::new("multiproc Queue::bounded(64)", || {
                    bytes_mb_s(blocks, size, Queue::bounded(64).unwrap())
                }),
                Contender::new("multiproc Queue::new()", || {
                    bytes_mb_s(blocks, size, Queue::new().unwrap())
                }),
                Contender::new("memcpy, one core", || memcpy_mb_s(size)),
                Contender::new("CPython mp.Queue(64) (bytes)", || {
                    python("queue_bytes.py", &[&bs, &sz, "64"])
                }),
                Contender::new("CPython mp.Queue() (bytes)", || {
                    python("queue_bytes.py", &[&bs, &sz])
                }),
            ],
        );
    }
    // Items larger than the ring: 16 MiB items through a queue whose byte
    // budget is 1 MiB (pieces of 256 KiB or more), against the same items
    // whole through the default 1 GiB ring, and CPython's unbounded Queue.
    let big = 16 << 20;
    let bigs = n(64, 4) as u64;
    let (bn, bz) = (bigs.to_string(), big.to_string());
    if wanted("big") {
        scenario(
            "Vec<u8> of 16 MiB, 1 producer process -> 1 consumer process",
            "MB/s",
            true,
            5,
            vec![
                Contender::new("multiproc Queue, 1 MiB budget (in pieces)", || {
                    bytes_mb_s(bigs, big, Queue::with_limits(None, 1 << 20).unwrap())
                }),
                Contender::new("multiproc Queue::new() (whole)", || {
                    bytes_mb_s(bigs, big, Queue::new().unwrap())
                }),
                Contender::new("memcpy, one core", || memcpy_mb_s(big)),
                Contender::new("CPython mp.Queue() (bytes)", || {
                    python("queue_bytes.py", &[&bn, &bz])
                }),
            ],
        );
    }
    let jobs = n(500_000, 10_000) as u64;
    let js = jobs.to_string();
    if wanted("joinable") {
        scenario(
            "JoinableQueue<u64>, put + get + task_done per item, then join",
            "items/s",
            true,
            3,
            vec![
                Contender::new("multiproc JoinableQueue", || joinable(jobs)),
                Contender::new("CPython mp.JoinableQueue", || python("queue_joinable.py", &[&js])),
            ],
        );
    }
}
