//! Synchronization benchmarks, side by side with CPython's multiprocessing
//! (bench/python/sync_*.py) and a raw lock word.
//!
//! `cargo bench --bench sync` (set MULTIPROC_BENCH_QUICK=1 for a tiny run).

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{n, python, scenario, Contender};
use multiproc::{Barrier, Lock, Process, SharedMemory, Value};

const T: Duration = Duration::from_secs(600);

/// CLOCK_MONOTONIC in ns: one clock for every process of the machine, so that
/// each player can stamp its own start and end (Python's `time.monotonic_ns`).
fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The span from the first player's start to the last one's end, in ns. The
/// players stamp these themselves: a parent that starts a timer after the
/// start barrier may run only once its busy children are done (2 CPUs).
fn span_ns(stamps: &[(u64, u64)]) -> f64 {
    let first = stamps.iter().map(|s| s.0).min().unwrap_or(0);
    let last = stamps.iter().map(|s| s.1).max().unwrap_or(0);
    last.saturating_sub(first) as f64
}

/// The classic three-state futex lock word (0 free, 1 locked, 2 locked with
/// waiters; Drepper, "Futexes are tricky"), the floor for an uncontended
/// lock. Its uncontended path (one CAS, one swap) never reaches the kernel;
/// this single-threaded benchmark never takes the slow path, which yields
/// instead of calling futex so that the bench needs no `unsafe`.
struct RawWord(AtomicU32);

impl RawWord {
    #[inline]
    fn lock(&self) {
        if self
            .0
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.0.swap(2, Ordering::Acquire) != 0 {
                std::thread::yield_now(); // futex_wait(word, 2) in a real lock
            }
        }
    }

    #[inline]
    fn unlock(&self) {
        if self.0.swap(0, Ordering::Release) == 2 {
            // futex_wake(word, 1) in a real lock; nobody waits here.
        }
    }
}

fn uncontended() {
    let iters = n(5_000_000, 100_000);
    let lock = Lock::new().unwrap();
    let word = RawWord(AtomicU32::new(0));
    let py_iters = n(1_000_000, 50_000).to_string();
    scenario(
        "uncontended Lock acquire+release",
        "ns/op",
        false,
        5,
        vec![
            Contender::new("multiproc Lock", || {
                let t = Instant::now();
                for _ in 0..iters {
                    drop(black_box(lock.acquire().unwrap()));
                }
                t.elapsed().as_nanos() as f64 / iters as f64
            }),
            Contender::new("raw futex lock word", || {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(&word).lock();
                    black_box(&word).unlock();
                }
                t.elapsed().as_nanos() as f64 / iters as f64
            }),
            Contender::new("CPython mp.Lock", || {
                python("sync_lock_uncontended.py", &[&py_iters])
            }),
        ],
    );
}

/// The first two CPUs this process may run on (one if it has only one).
fn allowed_cpus() -> Vec<usize> {
    let set = rustix::thread::sched_getaffinity(None).unwrap();
    (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .take(2)
        .collect()
}

/// Pins the calling process to `cpu`.
fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).unwrap();
}

/// Lets the players waiting on `start` go, then gathers the start and end
/// stamps they return.
fn released(start: &Barrier, players: Vec<Process<(u64, u64)>>) -> Vec<(u64, u64)> {
    start.wait().unwrap();
    players
        .iter()
        .map(|p| p.join_timeout(T).unwrap().unwrap())
        .collect()
}

/// Two processes alternate strictly: each takes the lock, and if it is its
/// turn (a byte read under the lock) passes the turn on; if not, it releases
/// the lock and yields the CPU (`polite`) or re-takes it at once. Player `i`
/// pins itself to `cpus[i]` when given. Returns us/handoff, from the first
/// player's start to the last one's end.
///
/// With `locked` false, the floor of the polite game: the same players pass
/// the turn byte with no lock at all (read it; if it is mine, flip it, else
/// yield the CPU), so what is left is the cache-line transfer and the
/// `sched_yield` calls (on one CPU: the context switches).
fn handoff_game(rounds: usize, locked: bool, polite: bool, cpus: Option<[usize; 2]>) -> f64 {
    let lock = locked.then(|| Lock::new().unwrap());
    let turn = SharedMemory::create(None, 64).unwrap();
    let start = Barrier::new(3).unwrap();
    let players: Vec<_> = (0u8..2)
        .map(|me| {
            Process::spawn(
                (
                    lock.clone(),
                    turn.clone(),
                    start.clone(),
                    me,
                    rounds as u64,
                    polite,
                    cpus.map(|c| c[me as usize] as u64),
                ),
                |(lock, turn, start, me, rounds, polite, cpu): Player| {
                    if let Some(cpu) = cpu {
                        pin(cpu as usize);
                    }
                    let cell = &turn.as_atomic_bytes()[0];
                    start.wait().unwrap();
                    let t0 = mono_ns();
                    let mut done = 0;
                    while done < rounds {
                        let guard = lock.as_ref().map(|l| l.acquire().unwrap());
                        let mine = cell.load(Ordering::Acquire) == me;
                        if mine {
                            cell.store(1 - me, Ordering::Release);
                            done += 1;
                        }
                        drop(guard);
                        if !mine && polite {
                            std::thread::yield_now();
                        }
                    }
                    (t0, mono_ns())
                },
            )
            .unwrap()
        })
        .collect();
    span_ns(&released(&start, players)) / 1e3 / (2 * rounds) as f64
}

/// A hand-off player's arguments: lock (none for the floor), turn cell, start
/// barrier, its number, rounds, polite, the CPU to pin itself to.
type Player = (Option<Lock>, SharedMemory, Barrier, u8, u64, bool, Option<u64>);

fn handoff() {
    let rounds = n(5_000, 500);
    let r = rounds.to_string();
    // Both contenders' players are pinned the same way: where the scheduler
    // puts them decides the figure (one CPU: every hand-off is a context
    // switch), so it is fixed instead of left to chance. The floor contender
    // plays the same game without a lock: a player whose turn it is not
    // spends its time in `sched_yield` (measured 0.7-0.9 us per call on the
    // 2-vCPU KVM guest we bench on), so a hand-off costs about half a yield on
    // two CPUs and a context switch on one, whatever the lock.
    let cpus = allowed_cpus();
    let mut layouts = Vec::new();
    if cpus.len() == 2 {
        layouts.push(("players on CPUs", [cpus[0], cpus[1]]));
    } else {
        println!("(one CPU: the polite hand-off on two CPUs is skipped)");
    }
    layouts.push(("both players on CPU", [cpus[0], cpus[0]]));
    for (what, [c0, c1]) in layouts {
        let (a, b) = (c0.to_string(), c1.to_string());
        let title = if c0 == c1 {
            format!("2 processes hand a Lock back and forth (yield when not your turn; {what} {c0})")
        } else {
            format!("2 processes hand a Lock back and forth (yield when not your turn; {what} {c0} and {c1})")
        };
        scenario(
            &title,
            "us/handoff",
            false,
            5,
            vec![
                Contender::new("multiproc Lock", || {
                    handoff_game(rounds, true, true, Some([c0, c1]))
                }),
                Contender::new("CPython mp.Lock", || {
                    python("sync_lock_handoff.py", &[&r, "polite", &a, &b])
                }),
                Contender::new("floor: turn byte, no lock", || {
                    handoff_game(rounds, false, true, Some([c0, c1]))
                }),
            ],
        );
    }
    // Busy: the process whose turn it is not re-takes the lock at once, so the
    // lock is contended all the time. Left to the scheduler, CPython's two
    // players often share a CPU and need ~ms per hand-off, which makes most
    // of the ratio; pinned apart, both contenders play on two CPUs. The same
    // 5,000 rounds as the polite game: with 1,000, a run of ours lasted about
    // 1 ms, so where the scheduler first put the new players weighed more
    // than the lock (our median ranged 0.8-2.7 us from one bench run to the
    // next; 0.54 and 0.55 us in two runs with 5,000).
    let mut placements = vec![None];
    if cpus.len() == 2 {
        placements.push(Some([cpus[0], cpus[1]]));
    }
    for pin in placements {
        let (a, b) = pin.map_or((String::new(), String::new()), |[c0, c1]| {
            (c0.to_string(), c1.to_string())
        });
        let (where_, args) = match pin {
            None => (
                "placement left to the scheduler".to_string(),
                vec![r.as_str(), "busy"],
            ),
            Some([c0, c1]) => (
                format!("players on CPUs {c0} and {c1}"),
                vec![r.as_str(), "busy", &a, &b],
            ),
        };
        scenario(
            &format!("2 processes hand a Lock back and forth (busy re-acquire; {where_})"),
            "us/handoff",
            false,
            5,
            vec![
                Contender::new("multiproc Lock", || handoff_game(rounds, true, false, pin)),
                Contender::new("CPython mp.Lock", || python("sync_lock_handoff.py", &args)),
            ],
        );
    }
}

/// `procs` processes x `iters` increments of a Value under its own lock;
/// returns ns per increment, from the first start to the last end as the
/// players stamp them.
fn increments_multiproc(procs: usize, iters: usize) -> f64 {
    let v = Value::new(0u64).unwrap();
    let start = Barrier::new(procs as u32 + 1).unwrap();
    let ps: Vec<_> = (0..procs)
        .map(|_| {
            Process::spawn(
                (v.clone(), start.clone(), iters as u64),
                |(v, start, iters): (Value<u64>, Barrier, u64)| {
                    start.wait().unwrap();
                    let t0 = mono_ns();
                    for _ in 0..iters {
                        *v.lock().unwrap() += 1;
                    }
                    (t0, mono_ns())
                },
            )
            .unwrap()
        })
        .collect();
    let stamps = released(&start, ps);
    assert_eq!(v.load().unwrap(), (procs * iters) as u64);
    span_ns(&stamps) / (procs * iters) as f64
}

fn increments() {
    let iters = n(10_000, 1_000);
    let i = iters.to_string();
    scenario(
        "8 processes x 10k increments of a Value under its lock",
        "ns/increment",
        false,
        5,
        vec![
            Contender::new("multiproc Value", || increments_multiproc(8, iters)),
            Contender::new("CPython Value.get_lock()", || {
                python("sync_value_increments.py", &["8", &i])
            }),
        ],
    );
}

fn main() {
    // `cargo bench --bench sync -- <filter>` runs the scenarios whose function name contains it.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let on = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if on("uncontended") {
        uncontended();
    }
    if on("handoff") {
        handoff();
    }
    if on("increments") {
        increments();
    }
}
