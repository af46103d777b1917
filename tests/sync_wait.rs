//! Semaphore, Event, Condition and Barrier across real processes (CPython's
//! `_TestSemaphore`, `_TestEvent`, `_TestCondition`, `_TestBarrier` behaviours),
//! plus SIGKILLed parties.
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use multiproc::{
    Barrier, BoundedSemaphore, Condition, Event, LockError, Process, ReleaseError, Semaphore, Value,
};

const T: Duration = Duration::from_secs(30);

/// Polls `f` until it is true or 20 s pass; returns its last value.
fn eventually(f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---------- Semaphore ----------

#[test]
fn semaphore_limits_concurrency_across_processes() {
    let sem = Semaphore::new(2).unwrap();
    // [inside now, most inside at once]
    let stats = multiproc::Array::<u32>::zeroed(2).unwrap();
    let ps: Vec<_> = (0..4)
        .map(|_| {
            Process::spawn(
                (sem.clone(), stats.clone()),
                |(sem, stats): (Semaphore, multiproc::Array<u32>)| {
                    for _ in 0..20 {
                        let _unit = sem.acquire_timeout(Duration::from_secs(20)).expect("unit");
                        {
                            let mut s = stats.lock().unwrap();
                            s[0] += 1;
                            s[1] = s[1].max(s[0]);
                        }
                        std::thread::sleep(Duration::from_micros(300));
                        stats.lock().unwrap()[0] -= 1;
                    }
                },
            )
            .unwrap()
        })
        .collect();
    for p in ps {
        p.join_timeout(T).unwrap().unwrap();
    }
    let s = stats.to_vec().unwrap();
    assert_eq!(s[0], 0);
    assert!(s[1] <= 2, "{} processes inside a Semaphore(2)", s[1]);
    assert_eq!(sem.get_value(), 2);
}

#[test]
fn semaphore_release_from_child_wakes_parent_and_timeouts_hold() {
    let sem = Semaphore::new(0).unwrap();
    let t = Instant::now();
    assert!(sem.acquire_timeout(Duration::from_millis(100)).is_none());
    assert!(t.elapsed() >= Duration::from_millis(100));
    let p = Process::spawn(sem.clone(), |s: Semaphore| {
        std::thread::sleep(Duration::from_millis(100));
        s.release().is_ok()
    })
    .unwrap();
    let unit = sem.acquire_timeout(T);
    assert!(unit.is_some());
    unit.unwrap().forget();
    assert_eq!(p.join_timeout(T).unwrap(), Some(true));
    assert_eq!(sem.get_value(), 0);
}

#[test]
fn bounded_semaphore_refuses_release_above_initial_in_child() {
    let sem = BoundedSemaphore::new(1).unwrap();
    let p = Process::spawn(sem.clone(), |s: BoundedSemaphore| {
        matches!(s.release(), Err(ReleaseError::TooManyReleases))
    })
    .unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(true));
    assert_eq!(sem.get_value(), 1);
}

#[test]
fn semaphore_unit_held_by_a_killed_process_is_lost_and_waiters_time_out() {
    let sem = Semaphore::new(1).unwrap();
    let held = Event::new().unwrap();
    let p = Process::spawn((sem.clone(), held.clone()), |(s, held): (Semaphore, Event)| {
        s.acquire().forget();
        held.set();
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    assert!(held.wait_timeout(T));
    p.kill().unwrap();
    let _ = p.join_timeout(T);
    // Documented: the unit died with its holder; a timed wait does not hang.
    assert!(sem.acquire_timeout(Duration::from_millis(100)).is_none());
    assert_eq!(sem.get_value(), 0);
    sem.release().unwrap();
    assert!(sem.try_acquire().is_some());
}

#[test]
fn semaphore_waiter_killed_while_waiting_loses_nothing() {
    let sem = Semaphore::new(0).unwrap();
    let p = Process::spawn(sem.clone(), |s: Semaphore| s.acquire().forget()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    p.kill().unwrap();
    let _ = p.join_timeout(T);
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 1);
    assert!(sem.try_acquire().is_some());
}

// ---------- Event ----------

#[test]
fn event_set_in_parent_wakes_children() {
    let ev = Event::new().unwrap();
    assert!(!ev.is_set());
    let ps: Vec<_> = (0..3)
        .map(|_| Process::spawn(ev.clone(), |e: Event| e.wait_timeout(Duration::from_secs(20))).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    ev.set();
    for p in ps {
        assert_eq!(p.join_timeout(T).unwrap(), Some(true));
    }
    ev.clear();
    let p = Process::spawn(ev.clone(), |e: Event| {
        (e.is_set(), e.wait_timeout(Duration::from_millis(50)))
    })
    .unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some((false, false)));
}

// ---------- Condition ----------

/// Starts `n` children that each take the condition's lock, count themselves
/// in `started`, wait (up to `ms`), and then count themselves in `woken` if notified.
fn cond_waiters(
    c: &Condition,
    started: &Value<u32>,
    woken: &Value<u32>,
    n: usize,
    ms: u64,
) -> Vec<Process<bool>> {
    (0..n)
        .map(|_| {
            Process::spawn(
                (c.clone(), started.clone(), woken.clone(), ms),
                |(c, started, woken, ms): (Condition, Value<u32>, Value<u32>, u64)| {
                    let mut g = c.acquire().unwrap();
                    *started.lock().unwrap() += 1;
                    let notified = g.wait_timeout(Duration::from_millis(ms)).unwrap();
                    drop(g);
                    if notified {
                        *woken.lock().unwrap() += 1;
                    }
                    notified
                },
            )
            .unwrap()
        })
        .collect()
}

/// Waits until `n` waiters have entered `wait` (each released the lock).
fn all_waiting(c: &Condition, started: &Value<u32>, n: u32) {
    assert!(eventually(|| started.load().unwrap() == n));
    drop(c.acquire().unwrap());
}

#[test]
fn condition_notify_n_wakes_exactly_n_processes() {
    let c = Condition::new().unwrap();
    let (started, woken) = (Value::new(0u32).unwrap(), Value::new(0u32).unwrap());
    let ps = cond_waiters(&c, &started, &woken, 4, 30_000);
    all_waiting(&c, &started, 4);
    assert_eq!(c.acquire().unwrap().notify(2), 2);
    assert!(eventually(|| woken.load().unwrap() == 2));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(woken.load().unwrap(), 2, "notify(2) woke more than 2");
    assert_eq!(c.acquire().unwrap().notify_all(), 2);
    for p in ps {
        assert_eq!(p.join_timeout(T).unwrap(), Some(true));
    }
    assert_eq!(woken.load().unwrap(), 4);
}

#[test]
fn condition_timed_out_processes_do_not_consume_notifications() {
    let c = Condition::new().unwrap();
    let (started, woken) = (Value::new(0u32).unwrap(), Value::new(0u32).unwrap());
    for p in cond_waiters(&c, &started, &woken, 3, 50) {
        assert_eq!(p.join_timeout(T).unwrap(), Some(false));
    }
    let late = cond_waiters(&c, &started, &woken, 1, 30_000);
    all_waiting(&c, &started, 4);
    assert_eq!(
        c.acquire().unwrap().notify(3),
        1,
        "only the live waiter is counted"
    );
    for p in late {
        assert_eq!(p.join_timeout(T).unwrap(), Some(true));
    }
}

#[test]
fn condition_wait_for_predicate_set_by_child() {
    let c = Condition::new().unwrap();
    let flag = Value::new(0u32).unwrap();
    let p = Process::spawn((c.clone(), flag.clone()), |(c, flag): (Condition, Value<u32>)| {
        std::thread::sleep(Duration::from_millis(50));
        let g = c.acquire().unwrap();
        flag.store(1).unwrap();
        g.notify_all();
    })
    .unwrap();
    let mut g = c.acquire().unwrap();
    assert!(g.wait_for_timeout(|| flag.load().unwrap() == 1, T).unwrap());
    drop(g);
    p.join_timeout(T).unwrap().unwrap();
    let mut g = c.acquire().unwrap();
    assert!(!g
        .wait_for_timeout(|| flag.load().unwrap() == 2, Duration::from_millis(50))
        .unwrap());
}

#[test]
fn condition_waiter_sigkilled_others_still_notified() {
    let c = Condition::new().unwrap();
    let (started, woken) = (Value::new(0u32).unwrap(), Value::new(0u32).unwrap());
    let mut ps = cond_waiters(&c, &started, &woken, 2, 30_000);
    all_waiting(&c, &started, 2);
    let victim = ps.remove(0);
    victim.kill().unwrap();
    let _ = victim.join_timeout(T);
    // The live waiter gets the single notification (the dead one left the futex queue).
    c.acquire().unwrap().notify(1);
    assert_eq!(ps.pop().unwrap().join_timeout(T).unwrap(), Some(true));
    // The condition keeps working for new waiters.
    let more = cond_waiters(&c, &started, &woken, 1, 30_000);
    all_waiting(&c, &started, 3);
    c.acquire().unwrap().notify_all();
    assert_eq!(
        more.into_iter().next().unwrap().join_timeout(T).unwrap(),
        Some(true)
    );
}

#[test]
fn condition_lock_holder_sigkilled_next_acquirer_learns() {
    let c = Condition::new().unwrap();
    let held = Event::new().unwrap();
    let p = Process::spawn((c.clone(), held.clone()), |(c, held): (Condition, Event)| {
        std::mem::forget(c.acquire().unwrap());
        held.set();
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    assert!(held.wait_timeout(T));
    p.kill().unwrap();
    let _ = p.join_timeout(T);
    assert!(matches!(c.acquire_timeout(T), Err(LockError::OwnerDied(_))));
    assert!(c.acquire_timeout(T).is_ok());
}

// ---------- Barrier ----------

static ROUNDS: OnceLock<Value<u64>> = OnceLock::new();

fn count_round() {
    if let Some(v) = ROUNDS.get() {
        *v.lock().unwrap() += 1;
    }
}

#[test]
fn barrier_1000_rounds_with_5_processes() {
    const ROUNDS_N: usize = 1000;
    let rounds = Value::new(0u64).unwrap();
    let b = Barrier::with_action(5, count_round).unwrap();
    let ps: Vec<_> = (0..5)
        .map(|_| {
            Process::spawn(
                (b.clone(), rounds.clone()),
                |(b, rounds): (Barrier, Value<u64>)| {
                    let _ = ROUNDS.set(rounds);
                    (0..ROUNDS_N)
                        .map(|_| b.wait_timeout(Duration::from_secs(20)).map_err(|e| e.to_string()))
                        .collect::<Result<Vec<u32>, String>>()
                },
            )
            .unwrap()
        })
        .collect();
    let all: Vec<Vec<u32>> = ps
        .into_iter()
        .map(|p| {
            p.join_timeout(Duration::from_secs(120))
                .unwrap()
                .unwrap()
                .unwrap()
        })
        .collect();
    for round in 0..ROUNDS_N {
        let mut idx: Vec<u32> = all.iter().map(|v| v[round]).collect();
        idx.sort();
        assert_eq!(idx, [0, 1, 2, 3, 4], "round {round}");
    }
    assert_eq!(
        rounds.load().unwrap(),
        ROUNDS_N as u64,
        "the action runs once per round"
    );
    assert_eq!(b.n_waiting(), 0);
    assert!(!b.broken());
}

#[test]
fn barrier_party_killed_before_arriving_breaks_by_timeout() {
    let b = Barrier::new(3).unwrap();
    let absent = Process::spawn((), |()| std::thread::sleep(Duration::from_secs(60))).unwrap();
    let present = Process::spawn(b.clone(), |b: Barrier| {
        b.wait_timeout(Duration::from_secs(20)).is_err()
    })
    .unwrap();
    assert!(eventually(|| b.n_waiting() == 1));
    absent.kill().unwrap();
    let _ = absent.join_timeout(T);
    let t = Instant::now();
    let r = b.wait_timeout(Duration::from_millis(200));
    assert!(r.unwrap_err().is_timeout());
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(
        present.join_timeout(T).unwrap(),
        Some(true),
        "the other party sees the barrier broken"
    );
    assert!(b.broken());
    b.reset();
    assert!(!b.broken());
}

#[test]
fn barrier_abort_from_child_releases_parent() {
    let b = Barrier::new(2).unwrap();
    let p = Process::spawn(b.clone(), |b: Barrier| {
        std::thread::sleep(Duration::from_millis(100));
        b.abort();
    })
    .unwrap();
    let r = b.wait_timeout(T);
    assert!(r.is_err_and(|e| !e.is_timeout()));
    p.join_timeout(T).unwrap().unwrap();
    assert!(
        b.wait_timeout(Duration::from_millis(10)).is_err(),
        "stays broken until reset"
    );
}

#[test]
fn barrier_party_killed_while_waiting_still_counts_as_arrived() {
    let b = Barrier::new(3).unwrap();
    let p = Process::spawn(b.clone(), |b: Barrier| b.wait().is_ok()).unwrap();
    assert!(eventually(|| b.n_waiting() == 1));
    p.kill().unwrap();
    let _ = p.join_timeout(T);
    let b2 = b.clone();
    let t = std::thread::spawn(move || b2.wait_timeout(T));
    assert!(b.wait_timeout(T).is_ok());
    assert!(t.join().unwrap().is_ok());
}

#[test]
fn barrier_reset_breaks_current_waiters_then_works_again() {
    let b = Barrier::new(3).unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| {
            Process::spawn(b.clone(), |b: Barrier| {
                b.wait_timeout(Duration::from_secs(20)).is_err()
            })
            .unwrap()
        })
        .collect();
    assert!(eventually(|| b.n_waiting() == 2));
    b.reset();
    for p in ps {
        assert_eq!(
            p.join_timeout(T).unwrap(),
            Some(true),
            "a waiter of the reset round is broken"
        );
    }
    assert!(!b.broken());
    assert_eq!(b.n_waiting(), 0);
    let ps: Vec<_> = (0..2)
        .map(|_| {
            Process::spawn(b.clone(), |b: Barrier| {
                b.wait_timeout(Duration::from_secs(20)).ok()
            })
            .unwrap()
        })
        .collect();
    let mine = b.wait_timeout(T).unwrap();
    let mut idx: Vec<u32> = ps
        .into_iter()
        .map(|p| p.join_timeout(T).unwrap().unwrap().unwrap())
        .collect();
    idx.push(mine);
    idx.sort();
    assert_eq!(idx, [0, 1, 2]);
    assert_eq!(
        Barrier::new(1).unwrap().wait_timeout(T).unwrap(),
        0,
        "a one-party barrier never waits"
    );
}
