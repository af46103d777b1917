//! Queues side by side: multiproc's shared-memory queues against CPython's
//! `multiprocessing` queues, ipc-channel's typed channel, and a raw shared-memory SPSC ring of `u64` with
//! futex wake-up (the ceiling: no locking, no serialization).
//!
//! Run: `cargo bench --bench queue` (`MULTIPROC_BENCH_QUICK=1` for a smoke run).
//!
//! # Safety
//! The raw ring baseline (module `raw`) is the only unsafe code here: an
//! anonymous `MAP_SHARED` mapping created before `fork`, used by exactly one
//! producer (the child) and one consumer (the parent) through atomics; slots
//! are written only by the producer before it publishes `tail` (Release) and
//! read only by the consumer after it observes `tail` (Acquire).
#![allow(unsafe_code)]

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

fn one_to_one(n: u64) -> f64 {
    let q: Queue<u64> = Queue::new().unwrap();
    let t = Instant::now();
    let p = Process::spawn((q.clone(), n), produce).unwrap();
    let mut sum = 0;
    for _ in 0..n {
        sum += q.get().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    p.join_timeout(T).unwrap().unwrap();
    assert_eq!(sum, n * (n - 1) / 2);
    n as f64 / secs
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

/// `maxsize: None` lets the producer run ahead into fresh memory (page faults
/// then dominate); `Some(64)` keeps the items in flight within warm pages.
fn bytes_mb_s(n: u64, size: usize, maxsize: Option<usize>) -> f64 {
    let q: Queue<Vec<u8>> = match maxsize {
        Some(m) => Queue::bounded(m).unwrap(),
        None => Queue::new().unwrap(),
    };
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
    let t = Instant::now();
    let p = Process::spawn((name, n), ipc_produce).unwrap();
    let (rx, first) = server.accept().unwrap();
    let mut sum = first;
    for _ in 1..n {
        sum += rx.recv().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    p.join_timeout(T).unwrap().unwrap();
    assert_eq!(sum, n * (n - 1) / 2);
    n as f64 / secs
}

/// The ceiling: a single-producer single-consumer ring of raw u64 in shared
/// memory, futex wake-up only when the other side sleeps.
mod raw {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
    use std::time::Instant;

    const CAP: u64 = 1 << 16;

    #[repr(C, align(64))]
    struct Pad<T>(T);

    #[repr(C)]
    struct Ring {
        head: Pad<AtomicU64>,
        tail: Pad<AtomicU64>,
        consumer_sleeps: Pad<AtomicU32>,
        producer_sleeps: Pad<AtomicU32>,
        slots: [AtomicU64; CAP as usize],
    }

    fn futex_wait(w: &AtomicU32, v: u32) {
        // SAFETY: FUTEX_WAIT on a valid, aligned u32 in a shared mapping; no timeout.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                w.as_ptr(),
                libc::FUTEX_WAIT,
                v,
                std::ptr::null::<libc::timespec>(),
            );
        }
    }

    fn futex_wake(w: &AtomicU32) {
        // SAFETY: FUTEX_WAKE on a valid, aligned u32 in a shared mapping.
        unsafe {
            libc::syscall(libc::SYS_futex, w.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
        }
    }

    fn push(r: &Ring, v: u64, tail: &mut u64) {
        loop {
            if *tail - r.head.0.load(Acquire) < CAP {
                break;
            }
            r.producer_sleeps.0.store(1, SeqCst);
            if *tail - r.head.0.load(SeqCst) < CAP {
                r.producer_sleeps.0.store(0, SeqCst);
                break;
            }
            futex_wait(&r.producer_sleeps.0, 1);
            r.producer_sleeps.0.store(0, SeqCst);
        }
        r.slots[(*tail % CAP) as usize].store(v, Relaxed);
        *tail += 1;
        r.tail.0.store(*tail, SeqCst);
        if r.consumer_sleeps.0.load(SeqCst) != 0 {
            r.consumer_sleeps.0.store(0, SeqCst);
            futex_wake(&r.consumer_sleeps.0);
        }
    }

    fn pop(r: &Ring, head: &mut u64) -> u64 {
        loop {
            if r.tail.0.load(Acquire) != *head {
                break;
            }
            r.consumer_sleeps.0.store(1, SeqCst);
            if r.tail.0.load(SeqCst) != *head {
                r.consumer_sleeps.0.store(0, SeqCst);
                break;
            }
            futex_wait(&r.consumer_sleeps.0, 1);
            r.consumer_sleeps.0.store(0, SeqCst);
        }
        let v = r.slots[(*head % CAP) as usize].load(Relaxed);
        *head += 1;
        r.head.0.store(*head, SeqCst);
        if r.producer_sleeps.0.load(SeqCst) != 0 {
            r.producer_sleeps.0.store(0, SeqCst);
            futex_wake(&r.producer_sleeps.0);
        }
        v
    }

    /// Items per second through the raw ring, producer in a forked child.
    pub fn run(n: u64) -> f64 {
        let len = std::mem::size_of::<Ring>();
        // SAFETY: a fresh anonymous shared mapping (zeroed: a valid Ring of
        // atomics), unmapped below after the child has exited.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: the mapping holds a zeroed Ring and outlives every use below.
        let r = unsafe { &*(p as *const Ring) };
        let t = Instant::now();
        // SAFETY: the child only touches atomics in the shared mapping and the
        // futex syscall, then `_exit`s: nothing that another thread of the
        // parent could have left locked.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let mut tail = 0;
            for i in 0..n {
                push(r, i, &mut tail);
            }
            // SAFETY: ends the forked child without running the parent's atexit code.
            unsafe { libc::_exit(0) };
        }
        let mut head = 0;
        let mut sum = 0u64;
        for _ in 0..n {
            sum = sum.wrapping_add(pop(r, &mut head));
        }
        let secs = t.elapsed().as_secs_f64();
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        // SAFETY: unmaps the mapping made above; `r` is not used afterwards.
        unsafe { libc::munmap(p, len) };
        assert_eq!(sum, n * (n - 1) / 2);
        n as f64 / secs
    }
}

/// `QUEUE_BENCH_ONLY=1p1c,bytes` runs only the named scenarios
/// (1p1c, simple, 2p2c, bytes, joinable).
fn wanted(name: &str) -> bool {
    match std::env::var("QUEUE_BENCH_ONLY") {
        Ok(list) => list.split(',').any(|w| w.trim() == name),
        Err(_) => true,
    }
}

fn main() {
    let items = n(500_000, 10_000) as u64;
    let ns = items.to_string();
    if wanted("1p1c") {
        scenario(
            "Queue<u64>, 1 producer process -> 1 consumer process",
            "items/s",
            true,
            5,
            vec![
                Contender::new("multiproc Queue", || one_to_one(items)),
                Contender::new("raw SPSC shm ring + futex", || raw::run(items)),
                Contender::new("ipc-channel", || ipc_channel_1p1c(items)),
                Contender::new("CPython mp.Queue", || python("queue_1p1c.py", &[&ns])),
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
                    bytes_mb_s(blocks, size, Some(64))
                }),
                Contender::new("multiproc Queue::new()", || bytes_mb_s(blocks, size, None)),
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
