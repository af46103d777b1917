//! Pool benchmarks, side by side with CPython's `multiprocessing.Pool` and
//! `concurrent.futures.ProcessPoolExecutor` (same number of workers), and with
//! the ideal of the same CPU-bound work split across threads.
//!
//! `cargo bench --bench pool` (`MULTIPROC_BENCH_QUICK=1` for one short run).

mod common;

use std::time::Instant;

use common::{n, python, scenario, time, Contender};
use multiproc::Pool;

const WORKERS: usize = 2;

fn inc(x: u64) -> u64 {
    x + 1
}

/// `iters` rounds of a 64-bit LCG: pure arithmetic the optimiser cannot skip.
fn spin((seed, iters): (u64, u64)) -> u64 {
    let mut x = seed;
    for _ in 0..iters {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    std::hint::black_box(x)
}

fn warm(pool: &Pool) {
    pool.map_chunked(inc, 0..(WORKERS as u64 * 4), 1)
        .expect("warm-up");
}

fn map_rate(pool: &Pool, items: usize, chunksize: Option<usize>) -> f64 {
    let t = Instant::now();
    let out = match chunksize {
        Some(c) => pool.map_chunked(inc, 0..items as u64, c),
        None => pool.map(inc, 0..items as u64),
    }
    .expect("map");
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(out.last().copied(), Some(items as u64));
    items as f64 / dt
}

/// procspawn's pool: `spawn` per task, then `join` each handle.
fn procspawn_rate(pool: &procspawn::Pool, tasks: usize) -> f64 {
    let t = Instant::now();
    let handles: Vec<_> = (0..tasks as u64).map(|i| pool.spawn(i, inc)).collect();
    let mut last = 0;
    for h in handles {
        last = h.join().expect("procspawn task");
    }
    assert_eq!(last, tasks as u64);
    tasks as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    // procspawn's children start in `main`; ours take over before it.
    procspawn::init();
    let w = WORKERS.to_string();
    let pool = Pool::new(WORKERS).expect("pool");
    warm(&pool);

    let items = n(200_000, 5_000);
    let items_s = items.to_string();
    let ppe_items = n(20_000, 1_000).to_string();
    scenario(
        &format!("map of {items} trivial tasks, chunksize 1, {WORKERS} workers"),
        "tasks/s",
        true,
        5,
        vec![
            Contender::new("multiproc Pool", || map_rate(&pool, items, Some(1))),
            Contender::new("CPython Pool", || {
                python("pool_map.py", &[&items_s, "1", &w, "pool"])
            }),
            Contender::new("CPython ProcessPoolExecutor", || {
                python("pool_map.py", &[&ppe_items, "1", &w, "executor"])
            }),
        ],
    );

    scenario(
        &format!("map of {items} trivial tasks, default chunking, {WORKERS} workers"),
        "tasks/s",
        true,
        5,
        vec![
            Contender::new("multiproc Pool", || map_rate(&pool, items, None)),
            Contender::new("CPython Pool", || {
                python("pool_map.py", &[&items_s, "0", &w, "pool"])
            }),
        ],
    );

    let tasks = n(20_000, 2_000);
    let ps_tasks = n(2_000, 200);
    let ps_pool = procspawn::Pool::new(WORKERS).expect("procspawn pool");
    let tasks_s = tasks.to_string();
    scenario(
        &format!("apply_async of {tasks} trivial tasks then get all, {WORKERS} workers"),
        "tasks/s",
        true,
        5,
        vec![
            Contender::new("multiproc Pool", || {
                let t = Instant::now();
                let rs: Vec<_> = (0..tasks as u64).map(|i| pool.apply_async(inc, i)).collect();
                let mut last = 0;
                for r in rs {
                    last = r.get().expect("task");
                }
                assert_eq!(last, tasks as u64);
                tasks as f64 / t.elapsed().as_secs_f64()
            }),
            Contender::new("CPython Pool", || {
                python("pool_apply.py", &[&tasks_s, &w, "pool"])
            }),
            Contender::new("CPython ProcessPoolExecutor", || {
                python("pool_apply.py", &[&tasks_s, &w, "executor"])
            }),
            Contender::new(format!("procspawn Pool ({ps_tasks} tasks)"), || {
                procspawn_rate(&ps_pool, ps_tasks)
            }),
        ],
    );
    ps_pool.shutdown();

    let reps = n(10, 2);
    let reps_s = reps.to_string();
    scenario(
        &format!("Pool create + 1 task + close + join, {WORKERS} workers"),
        "ms",
        false,
        3,
        vec![
            Contender::new("multiproc Pool", || {
                let mut v: Vec<f64> = (0..reps)
                    .map(|_| {
                        time(|| {
                            let p = Pool::new(WORKERS).expect("pool");
                            assert_eq!(p.apply(inc, 1).expect("task"), 2);
                            p.close();
                            p.join().expect("join");
                        }) * 1000.0
                    })
                    .collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            }),
            Contender::new("CPython Pool", || {
                python("pool_create.py", &[&reps_s, &w, "pool"])
            }),
            Contender::new("CPython ProcessPoolExecutor", || {
                python("pool_create.py", &[&reps_s, &w, "executor"])
            }),
        ],
    );

    // ~1 ms of arithmetic per task, calibrated here.
    let probe = 2_000_000u64;
    // Through an opaque fn pointer, as the workers call it (no inlining).
    let spin_fn: fn((u64, u64)) -> u64 = std::hint::black_box(spin);
    let mut probes: Vec<f64> = (0..5)
        .map(|i| {
            time(|| {
                std::hint::black_box(spin_fn((std::hint::black_box(i), std::hint::black_box(probe))));
            })
        })
        .collect();
    probes.sort_by(f64::total_cmp);
    let per_iter = probes[2] / probe as f64;
    let iters = ((1e-3 / per_iter) as u64).max(1);
    let cpu_tasks = n(2_000, 200);
    let seeds: Vec<(u64, u64)> = (0..cpu_tasks as u64).map(|i| (i, iters)).collect();
    scenario(
        &format!(
            "{cpu_tasks} CPU-bound tasks of {iters} LCG rounds (~{:.1} ms alone), {WORKERS} workers",
            iters as f64 * per_iter * 1e3
        ),
        "s",
        false,
        5,
        vec![
            Contender::new("multiproc Pool (map)", || {
                time(|| {
                    pool.map(spin, seeds.iter().copied()).expect("map");
                })
            }),
            Contender::new("threads, ideal split", || {
                time(|| {
                    std::thread::scope(|s| {
                        for part in seeds.chunks(seeds.len().div_ceil(WORKERS)) {
                            s.spawn(move || part.iter().map(|&a| spin(a)).fold(0u64, u64::wrapping_add));
                        }
                    });
                })
            }),
        ],
    );
    pool.close();
    pool.join().expect("join");
}
