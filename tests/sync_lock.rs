//! Lock and RLock across real processes (CPython `_TestLock` behaviours, plus
//! owner death by SIGKILL).
use std::time::{Duration, Instant};

use multiproc::{Event, Lock, LockError, Process, RLock, ReleaseError};

const T: Duration = Duration::from_secs(20);

#[test]
fn lock_held_by_parent_is_busy_in_child() {
    let lock = Lock::new().unwrap();
    let g = lock.acquire().unwrap();
    let p = Process::spawn(lock.clone(), |l: Lock| match l.try_acquire() {
        Err(LockError::WouldBlock) => "busy".to_string(),
        other => format!("{other:?}"),
    })
    .unwrap();
    assert_eq!(p.join_timeout(T).unwrap().as_deref(), Some("busy"));
    drop(g);
    let p = Process::spawn(lock.clone(), |l: Lock| l.try_acquire().is_ok()).unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(true));
}

#[test]
fn child_waits_for_parent_release() {
    let lock = Lock::new().unwrap();
    let g = lock.acquire().unwrap();
    let p = Process::spawn(lock.clone(), |l: Lock| {
        let t = Instant::now();
        let ok = l.acquire_timeout(Duration::from_secs(10)).is_ok();
        (ok, t.elapsed().as_millis() as u64)
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(g);
    let (ok, waited) = p.join_timeout(T).unwrap().unwrap();
    assert!(ok);
    assert!(
        waited >= 100,
        "child got the lock after {waited} ms while the parent held it"
    );
}

#[test]
fn acquire_timeout_times_out_against_a_child_holder() {
    let lock = Lock::new().unwrap();
    let (held, done) = (Event::new().unwrap(), Event::new().unwrap());
    let p = Process::spawn(
        (lock.clone(), held.clone(), done.clone()),
        |(l, held, done): (Lock, Event, Event)| {
            let _g = l.acquire().unwrap();
            held.set();
            done.wait_timeout(Duration::from_secs(20))
        },
    )
    .unwrap();
    assert!(held.wait_timeout(T));
    let t = Instant::now();
    assert!(matches!(
        lock.acquire_timeout(Duration::from_millis(100)),
        Err(LockError::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert!(matches!(lock.release(), Err(ReleaseError::NotHeld)));
    done.set();
    assert_eq!(p.join_timeout(T).unwrap(), Some(true));
    assert!(lock.try_acquire().is_ok());
}

#[test]
fn sigkilled_holder_reports_owner_died_once() {
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let p = Process::spawn((lock.clone(), held.clone()), |(l, held): (Lock, Event)| {
        l.acquire().unwrap().leak();
        held.set();
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    assert!(held.wait_timeout(T));
    // A waiter blocked on the lock is released by the holder's death.
    let l2 = lock.clone();
    let waiter = std::thread::spawn(move || l2.acquire_timeout(T).map(drop).map_err(|e| e.is_owner_died()));
    std::thread::sleep(Duration::from_millis(50));
    p.kill().unwrap();
    assert_eq!(p.join_timeout(T).ok().flatten(), None);
    assert_eq!(waiter.join().unwrap(), Err(true));
    // Reported once: the next acquisition is clean.
    assert!(lock.acquire_timeout(T).is_ok());
}

#[test]
fn rlock_reentrant_in_child_and_not_releasable_by_parent() {
    let l = RLock::new().unwrap();
    let (held, done) = (Event::new().unwrap(), Event::new().unwrap());
    let p = Process::spawn(
        (l.clone(), held.clone(), done.clone()),
        |(l, held, done): (RLock, Event, Event)| {
            let a = l.acquire().unwrap();
            let b = l.acquire().unwrap();
            let n = l.held_count();
            held.set();
            done.wait_timeout(Duration::from_secs(20));
            drop(b);
            drop(a);
            n
        },
    )
    .unwrap();
    assert!(held.wait_timeout(T));
    assert!(matches!(l.release(), Err(ReleaseError::NotHeld)));
    assert!(matches!(l.try_acquire(), Err(LockError::WouldBlock)));
    done.set();
    assert_eq!(p.join_timeout(T).unwrap(), Some(2));
    assert!(l.try_acquire().is_ok());
}

#[test]
fn eight_processes_times_10k_increments_under_a_lock_lose_nothing() {
    // The counter is an Event-free plain shared word guarded by the lock: a
    // Value<u64> (its own lock) is tested in shm_value.rs; here the Lock guards
    // a separate shared memory word.
    let lock = Lock::new().unwrap();
    let counter = multiproc::Value::<u64>::new(0).unwrap();
    let ps: Vec<_> = (0..8)
        .map(|_| {
            Process::spawn(
                (lock.clone(), counter.clone()),
                |(l, c): (Lock, multiproc::Value<u64>)| {
                    for _ in 0..10_000 {
                        let _g = l.acquire().unwrap();
                        // Two separate locked steps: only the outer Lock makes them atomic.
                        let v = c.load().unwrap();
                        c.store(v + 1).unwrap();
                    }
                },
            )
            .unwrap()
        })
        .collect();
    for p in ps {
        p.join_timeout(Duration::from_secs(120)).unwrap().unwrap();
    }
    assert_eq!(counter.load().unwrap(), 80_000);
}

#[test]
fn sigkill_at_random_points_under_contention_never_wedges_the_lock() {
    // Four children hammer one Value; each is SIGKILLed at some point of its
    // loop (inside or outside the lock, mid list operation, or asleep waiting
    // for a hand-over). Afterwards the lock must still be usable at once.
    let v = multiproc::Value::<u64>::new(0).unwrap();
    let ps: Vec<_> = (0..4)
        .map(|_| {
            Process::spawn(v.clone(), |v: multiproc::Value<u64>| -> () {
                loop {
                    match v.lock() {
                        Ok(mut g) => *g += 1,
                        Err(LockError::OwnerDied(mut g)) => *g += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
            .unwrap()
        })
        .collect();
    let mut died_reports = 0;
    for (i, p) in ps.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(20 + 7 * i as u64));
        p.kill().unwrap();
        let _ = p.join_timeout(T);
        match v.lock_timeout(Duration::from_secs(10)) {
            Ok(_) => {}
            Err(LockError::OwnerDied(_)) => died_reports += 1,
            Err(e) => panic!("lock wedged after a SIGKILL: {e}"),
        }
    }
    assert!(v.load().unwrap() > 0);
    assert!(died_reports <= 4);
    // And from another process too.
    let p = Process::spawn(v.clone(), |v: multiproc::Value<u64>| {
        v.lock_timeout(Duration::from_secs(10)).is_ok()
    })
    .unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(true));
}

#[test]
fn fork_child_gets_its_own_thread_identity() {
    // A Spawn child (single-threaded) uses a lock, then forks a grandchild
    // that takes it: the grandchild must own it under its own thread id, so
    // the child sees it busy (not "held by me").
    fn child(_: ()) -> String {
        let lock = Lock::new().unwrap();
        drop(lock.acquire().unwrap());
        let (held, done) = (Event::new().unwrap(), Event::new().unwrap());
        let g = Process::builder()
            .start_method(multiproc::StartMethod::Fork)
            .spawn(
                (lock.clone(), held.clone(), done.clone()),
                |(l, held, done): (Lock, Event, Event)| {
                    let _g = l.acquire().unwrap();
                    held.set();
                    done.wait_timeout(Duration::from_secs(20))
                },
            )
            .unwrap();
        held.wait_timeout(Duration::from_secs(20));
        let seen = match lock.try_acquire() {
            Err(LockError::WouldBlock) => "busy".to_string(),
            other => format!("{other:?}"),
        };
        done.set();
        let _ = g.join_timeout(Duration::from_secs(20));
        seen
    }
    let p = Process::builder()
        .start_method(multiproc::StartMethod::Spawn)
        .spawn((), child)
        .unwrap();
    assert_eq!(p.join_timeout(T).unwrap().as_deref(), Some("busy"));
}

#[test]
fn rlock_holder_sigkilled_reports_owner_died_once() {
    let l = RLock::new().unwrap();
    let held = Event::new().unwrap();
    let p = Process::spawn((l.clone(), held.clone()), |(l, held): (RLock, Event)| {
        l.acquire().unwrap().leak();
        l.acquire().unwrap().leak();
        held.set();
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    assert!(held.wait_timeout(T));
    assert!(matches!(l.try_acquire(), Err(LockError::WouldBlock)));
    p.kill().unwrap();
    let _ = p.join_timeout(T);
    match l.acquire_timeout(T) {
        Err(LockError::OwnerDied(g)) => {
            assert_eq!(
                l.held_count(),
                1,
                "the dead owner's recursion count is not inherited"
            );
            drop(g);
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert_eq!(l.held_count(), 0);
    assert!(l.acquire_timeout(T).is_ok());
}

#[test]
fn a_holder_that_retakes_the_lock_in_a_loop_does_not_starve_a_waiter() {
    // The child re-takes the lock as soon as it releases it, without pause;
    // the parent still gets it, again and again, each time well within its
    // deadline (the waiter asks for a hand-over, which the child's next
    // unlock honours).
    let lock = Lock::new().unwrap();
    let (running, stop) = (Event::new().unwrap(), Event::new().unwrap());
    let p = Process::spawn(
        (lock.clone(), running.clone(), stop.clone()),
        |(l, running, stop): (Lock, Event, Event)| {
            let mut rounds = 0u64;
            while !stop.is_set() {
                drop(l.acquire().unwrap());
                rounds += 1;
                if rounds == 1000 {
                    running.set(); // the loop is under way
                }
            }
            rounds
        },
    )
    .unwrap();
    assert!(running.wait_timeout(T));
    for i in 0..200 {
        match lock.acquire_timeout(Duration::from_secs(10)) {
            Ok(g) => drop(g),
            Err(e) => panic!("acquisition {i} failed against a busy holder: {e}"),
        }
    }
    stop.set();
    let rounds = p.join_timeout(T).unwrap().unwrap();
    assert!(rounds >= 1000, "the child stopped after {rounds} rounds");
}

#[test]
fn waiter_killed_while_waiting_for_a_hand_over_does_not_wedge_the_lock() {
    // The parent holds the lock long enough for a waiting child to ask for a
    // direct hand-over, kills the child, then releases: the lock may be handed
    // to the dead child. The next acquirer must still get it (within the
    // 250 ms liveness re-check), reported as OwnerDied if it was handed over.
    let lock = Lock::new().unwrap();
    let g = lock.acquire().unwrap();
    let p = Process::spawn(lock.clone(), |l: Lock| l.acquire().map(drop).is_ok()).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    p.kill().unwrap();
    let _ = p.join_timeout(T);
    drop(g);
    let t = Instant::now();
    let l2 = lock.clone();
    let r = std::thread::spawn(move || match l2.acquire_timeout(Duration::from_secs(10)) {
        Ok(_) => "clean",
        Err(LockError::OwnerDied(_)) => "owner died",
        Err(_) => "failed",
    })
    .join()
    .unwrap();
    eprintln!("next acquirer: {r} after {:?}", t.elapsed());
    assert_ne!(r, "failed", "the lock is wedged");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(lock.acquire_timeout(T).is_ok());
}

#[test]
fn handles_sent_over_a_connection_are_the_same_objects() {
    let (a, b) = multiproc::Pipe::new().unwrap();
    let p = Process::spawn(b, |b: multiproc::Connection| {
        let (lock, v): (Lock, multiproc::Value<u32>) = b.recv_timeout(Duration::from_secs(20)).unwrap();
        let busy = matches!(lock.try_acquire(), Err(LockError::WouldBlock));
        v.store(7).unwrap();
        busy
    })
    .unwrap();
    let lock = Lock::new().unwrap();
    let v = multiproc::Value::new(0u32).unwrap();
    let _g = lock.acquire().unwrap();
    a.send(&(lock.clone(), v.clone())).unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(true));
    assert_eq!(v.load().unwrap(), 7);
}
