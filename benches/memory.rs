//! Peak memory of the queue and pool scenarios, side by side with CPython
//! (bench/python/mem_queue.py, mem_pool.py): the figure is the throughput, and
//! each row also gets the peak RSS of the parent and of a worker
//! (`common::report_rss`; see bench/README.md for how it is measured).
//!
//! Run through `bench/run`, or alone: `cargo bench --bench memory`.

mod common;

use common::{n, peak_rss_kib, python, report_rss, scenario, Contender};
use multiproc::{Pool, Process, Queue};
use std::time::{Duration, Instant};

/// No wait in a benchmark may hang it.
const T: Duration = Duration::from_secs(600);

/// Queue capacity in items, for both sides.
const MAXSIZE: usize = 64;

/// Gets `n` items and returns this worker's peak RSS in KiB.
fn consume((q, n): (Queue<Vec<u8>>, usize)) -> u64 {
    for _ in 0..n {
        q.get_timeout(T).expect("get");
    }
    peak_rss_kib()
}

/// One producer (this process) and one worker: `n` items of `size` bytes
/// through `Queue::bounded(MAXSIZE)`. Items per second, from the worker's start
/// to its join.
fn queue_1p1c(n: usize, size: usize) -> f64 {
    let q: Queue<Vec<u8>> = Queue::bounded(MAXSIZE).expect("queue");
    let item = vec![0u8; size];
    let t = Instant::now();
    let p = Process::spawn((q.clone(), n), consume).expect("spawn");
    for _ in 0..n {
        q.put_timeout(item.clone(), T).expect("put");
    }
    let worker_kib = p.join_timeout(T).expect("join").expect("worker timed out");
    let secs = t.elapsed().as_secs_f64();
    report_rss(peak_rss_kib(), worker_kib);
    n as f64 / secs
}

/// `Pool::new(workers).map` of a trivial function over `0..n` (default
/// chunking; timed), then every worker reports its peak RSS (untimed). Tasks
/// per second.
fn pool_map(workers: usize, n: u64) -> f64 {
    let pool = Pool::new(workers).expect("pool");
    let t = Instant::now();
    let out = pool.map(|x: u64| x * x, 0..n).expect("map");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(out.last(), Some(&((n - 1) * (n - 1))));
    let peaks = pool
        .map_chunked(|_: u64| peak_rss_kib(), 0..4 * workers as u64, 1)
        .expect("peaks");
    pool.close();
    assert!(pool.join_timeout(T).expect("join"), "pool did not stop");
    report_rss(peak_rss_kib(), peaks.into_iter().max().unwrap_or(0));
    n as f64 / secs
}

fn main() {
    let reps = 5;
    let (items, size) = (n(2_000, 50), 64 << 10);
    let workers = 2;
    let tasks = n(100_000, 1_000) as u64;
    let (items_s, size_s, maxsize_s) = (items.to_string(), size.to_string(), MAXSIZE.to_string());
    let (workers_s, tasks_s) = (workers.to_string(), tasks.to_string());

    scenario(
        "memory: queue 1P1C, 64 KiB items, maxsize 64",
        "items/s",
        true,
        reps,
        vec![
            Contender::new("multiproc Queue", || queue_1p1c(items, size)),
            Contender::new("CPython Queue", || {
                python("mem_queue.py", &[&items_s, &size_s, &maxsize_s])
            }),
        ],
    );
    scenario(
        "memory: pool map, 2 workers, default chunks",
        "tasks/s",
        true,
        reps,
        vec![
            Contender::new("multiproc Pool", || pool_map(workers, tasks)),
            Contender::new("CPython Pool", || python("mem_pool.py", &[&workers_s, &tasks_s])),
        ],
    );
}
