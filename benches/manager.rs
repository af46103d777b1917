//! The manager against CPython's `multiprocessing.Manager`, side by side:
//! dict get/set round trips from one process, the seed's 100-process counter
//! (with a lock, and with `update_with`), and manager start+shutdown.
//!
//! `cargo bench --bench manager` (`MULTIPROC_BENCH_QUICK=1` for one short run).

mod common;

use std::time::Duration;

use common::{n, python, scenario, time, Contender};
use multiproc::{Dict, LockProxy, Manager, Process};

fn dict_ops(m: &Manager, ops: usize) -> f64 {
    let d: Dict<String, i64> = m.dict().unwrap();
    d.insert("k".into(), 0).unwrap();
    let secs = time(|| {
        for i in 0..ops / 2 {
            d.insert("k".into(), i as i64).unwrap();
            std::hint::black_box(d.get("k").unwrap());
        }
    });
    ops as f64 / secs
}

fn with_lock((d, lock): (Dict<String, i64>, LockProxy)) {
    let _g = lock.acquire().unwrap();
    let n = d.get("count").unwrap().unwrap();
    d.insert("count".into(), n - 1).unwrap();
}

fn with_update(d: Dict<String, i64>) {
    d.update_with("count", |n: &mut i64| *n -= 1).unwrap();
}

fn counter(m: &Manager, procs: usize, use_lock: bool) -> f64 {
    let d: Dict<String, i64> = m.dict().unwrap();
    let lock = m.lock().unwrap();
    d.insert("count".into(), procs as i64).unwrap();
    let secs = time(|| {
        if use_lock {
            let ps: Vec<_> = (0..procs)
                .map(|_| Process::spawn((d.clone(), lock.clone()), with_lock).unwrap())
                .collect();
            for p in ps {
                p.join_timeout(Duration::from_secs(120)).unwrap().unwrap();
            }
        } else {
            let ps: Vec<_> = (0..procs)
                .map(|_| Process::spawn(d.clone(), with_update).unwrap())
                .collect();
            for p in ps {
                p.join_timeout(Duration::from_secs(120)).unwrap().unwrap();
            }
        }
    });
    assert_eq!(d.get("count").unwrap(), Some(0));
    secs
}

fn main() {
    let m = Manager::start().unwrap();

    let ops = n(100_000, 2_000);
    let py_ops = n(20_000, 2_000).to_string();
    scenario(
        "manager dict get+set round trips, one process",
        "ops/s",
        true,
        5,
        vec![
            Contender::new("multiproc Dict", || dict_ops(&m, ops)),
            Contender::new("CPython Manager().dict()", || {
                python("manager_dict_ops.py", &[&py_ops])
            }),
        ],
    );

    let procs = n(100, 10);
    let p = procs.to_string();
    scenario(
        "seed counter: 100 processes decrement d['count'], with a lock",
        "s",
        false,
        5,
        vec![
            Contender::new("multiproc, manager lock", || counter(&m, procs, true)),
            Contender::new("CPython, Lock + dict proxy", || {
                python("manager_counter.py", &[&p])
            }),
        ],
    );
    scenario(
        "seed counter: 100 processes decrement d['count'], atomic update",
        "s",
        false,
        5,
        vec![
            Contender::new("multiproc, update_with", || counter(&m, procs, false)),
            Contender::new("CPython, Lock + dict proxy", || {
                python("manager_counter.py", &[&p])
            }),
        ],
    );
    drop(m);

    let starts = n(20, 2);
    let s = starts.to_string();
    scenario(
        "manager start + shutdown",
        "s",
        false,
        5,
        vec![
            Contender::new("multiproc Manager", || {
                time(|| {
                    for _ in 0..starts {
                        Manager::start().unwrap().shutdown().unwrap();
                    }
                }) / starts as f64
            }),
            Contender::new("CPython Manager()", || python("manager_start.py", &[&s])),
        ],
    );
}
