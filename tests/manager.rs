//! The manager's containers and proxies, as CPython's `_TestContainers` and
//! `TestSyncManagerTypes` exercise them: from this process, from threads and
//! from child processes. Every wait has a deadline.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use multiproc::{
    Dict, EventProxy, List, LockProxy, Manager, ManagerError, Process, QueueProxy, StartMethod, ValueProxy,
};

const JOIN: Duration = Duration::from_secs(60);

fn join<R: serde::de::DeserializeOwned + 'static>(p: Process<R>) -> R {
    p.join_timeout(JOIN).expect("child failed").expect("child hung")
}

#[test]
fn dict_operations() {
    let m = Manager::start().unwrap();
    let d: Dict<String, i64> = m.dict().unwrap();
    assert!(d.is_empty().unwrap());
    assert_eq!(d.insert("a".into(), 1).unwrap(), None);
    assert_eq!(d.insert("a".into(), 2).unwrap(), Some(1));
    d.update([("b".to_string(), 3), ("c".to_string(), 4)]).unwrap();
    assert_eq!(d.len().unwrap(), 3);
    // Lookups by &str: a String key and a str encode alike.
    assert_eq!(d.get("a").unwrap(), Some(2));
    assert_eq!(d.get("zz").unwrap(), None);
    assert!(d.contains_key("b").unwrap());
    assert!(!d.contains_key("zz").unwrap());
    let mut keys = d.keys().unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "b", "c"]);
    let mut values = d.values().unwrap();
    values.sort();
    assert_eq!(values, [2, 3, 4]);
    let expected: HashMap<String, i64> = [("a", 2), ("b", 3), ("c", 4)]
        .map(|(k, v)| (k.to_string(), v))
        .into();
    assert_eq!(d.to_hashmap().unwrap(), expected);
    assert_eq!(d.items().unwrap().len(), 3);
    assert_eq!(d.remove("b").unwrap(), Some(3));
    assert_eq!(d.remove("b").unwrap(), None);
    assert_eq!(d.get_or_insert("d".into(), 9).unwrap(), 9);
    assert_eq!(d.get_or_insert("d".into(), 10).unwrap(), 9);
    assert_eq!(d.update_with("a", |v: &mut i64| *v *= 10).unwrap(), 20);
    assert_eq!(d.get("a").unwrap(), Some(20));
    assert!(matches!(
        d.update_with("nope", |v: &mut i64| *v += 1),
        Err(ManagerError::KeyNotFound)
    ));
    d.clear().unwrap();
    assert_eq!(d.len().unwrap(), 0);
    m.shutdown().unwrap();
}

#[test]
fn dict_with_structured_keys() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Eq, Hash, Debug, Clone)]
    enum Key {
        User(u32),
        Group(String),
    }
    let m = Manager::start().unwrap();
    let d: Dict<Key, Vec<f64>> = m.dict().unwrap();
    d.insert(Key::User(1), vec![1.0]).unwrap();
    d.insert(Key::Group("g".into()), vec![]).unwrap();
    assert_eq!(d.get(&Key::User(1)).unwrap(), Some(vec![1.0]));
    assert_eq!(d.get(&Key::User(2)).unwrap(), None);
    d.update_with(&Key::Group("g".into()), |v: &mut Vec<f64>| v.push(0.5))
        .unwrap();
    assert_eq!(d.get(&Key::Group("g".into())).unwrap(), Some(vec![0.5]));
}

#[test]
fn list_operations() {
    let m = Manager::start().unwrap();
    let l: List<String> = m.list().unwrap();
    assert_eq!(l.pop().unwrap(), None);
    l.extend(["a", "b", "c"].map(String::from)).unwrap();
    l.push("d".into()).unwrap();
    assert_eq!(l.len().unwrap(), 4);
    assert_eq!(l.get(1).unwrap(), "b");
    assert_eq!(l.set(1, "B".into()).unwrap(), "b");
    l.insert(0, "first".into()).unwrap();
    l.insert(5, "last".into()).unwrap();
    assert_eq!(l.to_vec().unwrap(), ["first", "a", "B", "c", "d", "last"]);
    assert_eq!(l.remove(0).unwrap(), "first");
    assert_eq!(l.pop().unwrap().as_deref(), Some("last"));
    assert_eq!(
        l.update_with(0, |s: &mut String| s.make_ascii_uppercase())
            .unwrap(),
        "A"
    );
    // Out of range is an error, not a panic, and the server goes on.
    assert!(matches!(
        l.get(4),
        Err(ManagerError::IndexOutOfRange { index: 4, len: 4 })
    ));
    assert!(matches!(
        l.set(10, "x".into()),
        Err(ManagerError::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        l.insert(10, "x".into()),
        Err(ManagerError::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        l.remove(usize::MAX),
        Err(ManagerError::IndexOutOfRange { .. })
    ));
    assert_eq!(l.to_vec().unwrap(), ["A", "B", "c", "d"]);
    l.clear().unwrap();
    assert!(l.is_empty().unwrap());
}

#[test]
fn value_operations() {
    let m = Manager::start().unwrap();
    let v: ValueProxy<(u32, String)> = m.value((1, "x".to_string())).unwrap();
    assert_eq!(v.get().unwrap(), (1, "x".to_string()));
    assert_eq!(v.set((2, "y".into())).unwrap(), (1, "x".to_string()));
    assert_eq!(v.update_with(|v: &mut (u32, String)| v.0 += 40).unwrap().0, 42);
    assert_eq!(v.get().unwrap().0, 42);
}

#[test]
fn a_panicking_update_leaves_the_value_and_the_server_intact() {
    let m = Manager::start().unwrap();
    let v = m.value(5i32).unwrap();
    let err = v
        .update_with(|x: &mut i32| {
            *x = 100;
            panic!("boom at {x}");
        })
        .unwrap_err();
    match err {
        ManagerError::FunctionPanicked(msg) => assert!(msg.contains("boom at 100"), "{msg}"),
        e => panic!("unexpected {e:?}"),
    }
    assert_eq!(v.get().unwrap(), 5);
}

#[test]
fn a_proxy_of_the_wrong_type_gets_a_decode_error() {
    let m = Manager::start().unwrap();
    let d: Dict<String, String> = m.dict().unwrap();
    d.insert("k".into(), "not a number".into()).unwrap();
    m.register("d", &d).unwrap();
    let wrong: Dict<String, bool> = m.lookup("d").unwrap();
    assert!(matches!(wrong.get("k"), Err(ManagerError::Codec(_))));
    // Another kind of object is refused by the server.
    assert!(matches!(
        m.lookup::<List<u8>>("d"),
        Err(ManagerError::WrongKind { .. })
    ));
    assert!(matches!(
        m.lookup::<List<u8>>("nothing"),
        Err(ManagerError::NoSuchObject(_))
    ));
    // The dict is intact.
    assert_eq!(d.get("k").unwrap().as_deref(), Some("not a number"));
}

#[test]
fn proxies_are_send_sync_clone_and_serde() {
    fn check<T: Send + Sync + Clone + serde::Serialize + serde::de::DeserializeOwned>() {}
    check::<Dict<String, i64>>();
    check::<List<Vec<u8>>>();
    check::<ValueProxy<f64>>();
    check::<LockProxy>();
    check::<EventProxy>();
    check::<QueueProxy<String>>();
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Manager>();
    send_sync::<ManagerError>();
}

type Everything = (
    Dict<String, i64>,
    List<String>,
    ValueProxy<f64>,
    LockProxy,
    EventProxy,
    QueueProxy<String>,
    QueueProxy<String>,
);

fn child_uses_everything((d, l, v, lock, ev, q, back): Everything) -> Result<String, String> {
    let run = || -> Result<String, ManagerError> {
        d.insert("child".into(), i64::from(multiproc::current_process().pid() > 0))?;
        d.update_with("n", |n: &mut i64| *n += 1)?;
        l.push("from child".into())?;
        v.set(2.5)?;
        {
            let _g = lock.acquire()?;
        }
        ev.set()?;
        q.put("hello parent".into())?;
        back.get_timeout(Duration::from_secs(30))
    };
    run().map_err(|e| e.to_string())
}

fn every_proxy_from_a_child(method: StartMethod) {
    let m = Manager::builder().start_method(method).start().unwrap();
    let d: Dict<String, i64> = m.dict().unwrap();
    d.insert("n".into(), 41).unwrap();
    let l = m.list().unwrap();
    let v = m.value(0.0f64).unwrap();
    let lock = m.lock().unwrap();
    let ev = m.event().unwrap();
    let q: QueueProxy<String> = m.queue().unwrap();
    let back: QueueProxy<String> = m.queue().unwrap();
    let p = Process::builder()
        .start_method(method)
        .spawn(
            (
                d.clone(),
                l.clone(),
                v.clone(),
                lock.clone(),
                ev.clone(),
                q.clone(),
                back.clone(),
            ),
            child_uses_everything,
        )
        .unwrap();
    assert!(ev.wait_timeout(Duration::from_secs(30)).unwrap());
    assert_eq!(q.get_timeout(Duration::from_secs(30)).unwrap(), "hello parent");
    back.put("hello child".into()).unwrap();
    assert_eq!(join(p).unwrap(), "hello child");
    assert_eq!(d.get("n").unwrap(), Some(42));
    assert_eq!(d.get("child").unwrap(), Some(1));
    assert_eq!(l.to_vec().unwrap(), ["from child"]);
    assert_eq!(v.get().unwrap(), 2.5);
    m.shutdown().unwrap();
}

#[test]
fn every_proxy_from_a_child_forkserver() {
    every_proxy_from_a_child(StartMethod::ForkServer);
}

#[test]
fn every_proxy_from_a_child_spawn() {
    every_proxy_from_a_child(StartMethod::Spawn);
}

#[test]
fn threads_share_a_proxy_without_interleaving() {
    let m = Manager::start().unwrap();
    let d: Dict<u32, u64> = m.dict().unwrap();
    d.insert(0, 0).unwrap();
    let list: List<u32> = m.list().unwrap();
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let (d, list) = (d.clone(), list.clone());
            s.spawn(move || {
                for i in 0..200u32 {
                    d.update_with(&0, |n: &mut u64| *n += 1).unwrap();
                    // Requests with replies of different shapes: interleaving would garble them.
                    list.push(t * 1000 + i).unwrap();
                    assert!(d.contains_key(&0).unwrap());
                    assert!(list.len().unwrap() >= 1);
                }
            });
        }
    });
    assert_eq!(d.get(&0).unwrap(), Some(1600));
    let mut items = list.to_vec().unwrap();
    items.sort();
    let mut expected: Vec<u32> = (0..8).flat_map(|t| (0..200).map(move |i| t * 1000 + i)).collect();
    expected.sort();
    assert_eq!(items, expected);
}

fn hammer((d, n): (Dict<String, u64>, u32)) -> Result<(), String> {
    for _ in 0..n {
        d.update_with("count", |c: &mut u64| *c += 1)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn sixteen_clients_times_a_thousand_updates_lose_nothing() {
    let m = Manager::start().unwrap();
    let d: Dict<String, u64> = m.dict().unwrap();
    d.insert("count".into(), 0).unwrap();
    let procs: Vec<_> = (0..16)
        .map(|_| Process::spawn((d.clone(), 1000u32), hammer).unwrap())
        .collect();
    for p in procs {
        join(p).unwrap();
    }
    assert_eq!(d.get("count").unwrap(), Some(16_000));
}

fn decrement_with_lock((d, lock): (Dict<String, i64>, LockProxy)) -> Result<(), String> {
    let run = || -> Result<(), ManagerError> {
        let _g = lock.acquire()?;
        let n = d.get("count")?.ok_or(ManagerError::KeyNotFound)?;
        // Widen the race window: without the lock, updates would be lost.
        std::thread::sleep(Duration::from_millis(1));
        d.insert("count".into(), n - 1)?;
        Ok(())
    };
    run().map_err(|e| e.to_string())
}

#[test]
fn the_seed_counter_with_a_manager_lock_ends_at_zero() {
    let m = Manager::start().unwrap();
    let d: Dict<String, i64> = m.dict().unwrap();
    let lock = m.lock().unwrap();
    d.insert("count".into(), 30).unwrap();
    let procs: Vec<_> = (0..30)
        .map(|_| Process::spawn((d.clone(), lock.clone()), decrement_with_lock).unwrap())
        .collect();
    for p in procs {
        join(p).unwrap();
    }
    assert_eq!(d.get("count").unwrap(), Some(0));
}

#[test]
fn lock_timeouts_and_try() {
    let m = Manager::start().unwrap();
    let lock = m.lock().unwrap();
    let g = lock.acquire().unwrap();
    // Another thread has its own connection: the lock is taken for it.
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(lock.try_acquire().unwrap().is_none());
            let t = Instant::now();
            assert!(lock
                .acquire_timeout(Duration::from_millis(200))
                .unwrap()
                .is_none());
            assert!(t.elapsed() >= Duration::from_millis(190));
        });
    });
    g.release().unwrap();
    assert!(lock.acquire_timeout(Duration::from_secs(5)).unwrap().is_some());
}

fn acquire_within_20s(lock: LockProxy) -> Result<bool, String> {
    let got = lock.acquire_timeout(Duration::from_secs(20));
    got.map(|g| g.is_some()).map_err(|e| e.to_string())
}

#[test]
fn a_dropped_guard_has_released_the_lock_for_everyone_and_wakes_a_waiting_process() {
    let m = Manager::start().unwrap();
    let lock = m.lock().unwrap();
    // Once a guard's drop returns, a try from another thread (over another
    // connection, ready and waiting for the word) finds the lock free.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (got_tx, got_rx) = std::sync::mpsc::channel::<bool>();
    std::thread::scope(|s| {
        let lock = &lock;
        s.spawn(move || {
            let _ = lock.try_acquire().unwrap();
            got_tx.send(true).unwrap();
            while go_rx.recv().is_ok() {
                got_tx.send(lock.try_acquire().unwrap().is_some()).unwrap();
            }
        });
        assert!(got_rx.recv_timeout(JOIN).unwrap());
        for i in 0..500 {
            let g = lock.acquire().unwrap();
            drop(g);
            go_tx.send(()).unwrap();
            assert!(
                got_rx.recv_timeout(JOIN).unwrap(),
                "round {i}: the lock was still held"
            );
        }
        drop(go_tx);
    });
    // A process waiting for the lock gets it when the guard is dropped.
    let g = lock.acquire().unwrap();
    let p = Process::spawn(lock.clone(), acquire_within_20s).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(g);
    assert_eq!(join(p), Ok(true));
}

fn hold_lock_forever((lock, ev): (LockProxy, EventProxy)) {
    let _g = lock.acquire().unwrap();
    ev.set().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_lock_whose_holder_is_killed_is_released() {
    let m = Manager::start().unwrap();
    let (lock, ev) = (m.lock().unwrap(), m.event().unwrap());
    let p = Process::spawn((lock.clone(), ev.clone()), hold_lock_forever).unwrap();
    assert!(ev.wait_timeout(Duration::from_secs(30)).unwrap());
    assert!(lock.try_acquire().unwrap().is_none());
    p.kill().unwrap();
    let g = lock.acquire_timeout(Duration::from_secs(10)).unwrap();
    assert!(g.is_some(), "the dead holder's lock was not released");
    assert!(p.join_timeout(JOIN).is_err());
}

#[test]
fn calls_under_a_lock_and_a_guard_released_on_another_thread() {
    let m = Manager::start().unwrap();
    let (lock, d) = (m.lock().unwrap(), m.dict::<u8, u32>().unwrap());
    d.insert(0, 0).unwrap();
    let g = lock.acquire().unwrap();
    std::thread::scope(|s| {
        // Another thread's calls go on while this one holds the lock.
        s.spawn(|| {
            d.insert(1, 1).unwrap();
            assert!(lock.try_acquire().unwrap().is_none());
        })
        .join()
        .unwrap();
        for i in 0..100 {
            d.update_with(&0, |v: &mut u32| *v += 1).unwrap();
            assert_eq!(d.get(&0).unwrap(), Some(i + 1));
        }
        // The guard travels to another thread and releases there.
        s.spawn(move || g.release().unwrap()).join().unwrap();
    });
    assert!(lock.try_acquire().unwrap().is_some());
    assert_eq!(d.len().unwrap(), 2);
}

fn wait_for_lock((lock, ev): (LockProxy, EventProxy)) {
    ev.set().unwrap();
    let _g = lock.acquire().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_waiter_killed_in_the_queue_does_not_wedge_the_lock() {
    let m = Manager::start().unwrap();
    let (lock, ev) = (m.lock().unwrap(), m.event().unwrap());
    let g = lock.acquire().unwrap();
    // A child queues for the lock (first in line), then this process's second
    // thread; the child dies while queued; the lock is released: the thread
    // gets it, whether the server handed it to the dead child first or not.
    let p = Process::spawn((lock.clone(), ev.clone()), wait_for_lock).unwrap();
    assert!(ev.wait_timeout(Duration::from_secs(30)).unwrap());
    std::thread::sleep(Duration::from_millis(200));
    std::thread::scope(|s| {
        let waiter = s.spawn(|| lock.acquire_timeout(Duration::from_secs(20)).unwrap().is_some());
        std::thread::sleep(Duration::from_millis(100));
        p.kill().unwrap();
        g.release().unwrap();
        assert!(
            waiter.join().unwrap(),
            "the lock went to the dead waiter and stayed there"
        );
    });
    assert!(p.join_timeout(JOIN).is_err());
    assert!(lock.try_acquire().unwrap().is_some());
}

#[test]
fn bounded_queue_and_event() {
    let m = Manager::start().unwrap();
    let q = m.bounded_queue::<u32>(2).unwrap();
    q.put(1).unwrap();
    q.try_put(2).unwrap();
    assert!(matches!(q.try_put(3), Err(ManagerError::Full)));
    assert!(matches!(
        q.put_timeout(3, Duration::from_millis(50)),
        Err(ManagerError::Full)
    ));
    assert_eq!(q.len().unwrap(), 2);
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.try_get().unwrap(), 2);
    assert!(matches!(
        q.get_timeout(Duration::from_millis(50)),
        Err(ManagerError::Empty)
    ));
    assert!(q.is_empty().unwrap());
    let e = m.event().unwrap();
    assert!(!e.is_set().unwrap());
    e.set().unwrap();
    assert!(e.is_set().unwrap());
    e.clear().unwrap();
    assert!(!e.wait_timeout(Duration::from_millis(20)).unwrap());
}

#[test]
fn requests_over_the_limit_are_refused_and_the_server_goes_on() {
    let m = Manager::builder().max_request(4096).start().unwrap();
    let d: Dict<u8, Vec<u8>> = m.dict().unwrap();
    // Refused before sending: the server states its limit.
    let err = d.insert(1, vec![7; 100_000]).unwrap_err();
    assert!(
        matches!(err, ManagerError::Codec(multiproc::CodecError::TooLarge { len, max: 4096 }) if len > 100_000),
        "{err:?}"
    );
    d.insert(2, vec![7; 100]).unwrap();
    assert_eq!(d.get(&2).unwrap().map(|v| v.len()), Some(100));
    assert_eq!(d.len().unwrap(), 1);
}

#[test]
fn nested_proxies() {
    // CPython's test_dict_proxy_nested / test_nested_queue: proxies stored in
    // containers come back as proxies for the same objects.
    let m = Manager::start().unwrap();
    let inner: List<u8> = m.list().unwrap();
    inner.push(1).unwrap();
    let d: Dict<String, List<u8>> = m.dict().unwrap();
    d.insert("xs".into(), inner.clone()).unwrap();
    let again = d.get("xs").unwrap().unwrap();
    again.push(2).unwrap();
    assert_eq!(inner.to_vec().unwrap(), [1, 2]);
    // A list of dicts, one level further, and a queue inside a value.
    let outer: List<Dict<u8, String>> = m.list().unwrap();
    let a: Dict<u8, String> = m.dict().unwrap();
    outer.push(a.clone()).unwrap();
    outer.get(0).unwrap().insert(7, "seven".into()).unwrap();
    assert_eq!(a.get(&7).unwrap().as_deref(), Some("seven"));
    let q: QueueProxy<u32> = m.queue().unwrap();
    let holder = m.value(Some(q.clone())).unwrap();
    holder.get().unwrap().unwrap().put(5).unwrap();
    assert_eq!(q.try_get().unwrap(), 5);
    // From a child: it reads the nested proxy and uses its own connection.
    let p = Process::spawn(d.clone(), |d: Dict<String, List<u8>>| {
        d.get("xs").unwrap().unwrap().push(3).unwrap();
    })
    .unwrap();
    join(p);
    assert_eq!(inner.to_vec().unwrap(), [1, 2, 3]);
}

type ThreadsInAChild = (Dict<u32, u32>, QueueProxy<u32>, LockProxy);

/// In a child (which starts with one connection to the server): a thread
/// blocked on the server, others calling meanwhile, a lock held while other
/// threads call, and the proxy handed on to a grandchild.
fn threads_in_a_child((d, q, lock): ThreadsInAChild) -> Result<u32, String> {
    let e = |e: ManagerError| e.to_string();
    std::thread::scope(|s| -> Result<u32, String> {
        // Blocks on the server until the other thread puts.
        let getter = s.spawn(|| q.get_timeout(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        // Calls from several threads at once.
        let writers: Vec<_> = (0..4u32)
            .map(|t| {
                let d = &d;
                s.spawn(move || -> Result<(), ManagerError> {
                    for i in 0..50 {
                        d.insert(t * 100 + i, i)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap().map_err(e)?;
        }
        q.put(7).map_err(e)?;
        let got = getter.join().unwrap().map_err(e)?;
        // A lock taken with a try and held while another thread calls.
        let g = lock.try_acquire().map_err(e)?.ok_or("the lock was taken")?;
        s.spawn(|| d.insert(999, 1)).join().unwrap().map_err(e)?;
        drop(g);
        // The proxy handed on to a grandchild.
        let p = Process::spawn(d.clone(), |d: Dict<u32, u32>| d.len().map_err(|e| e.to_string()))
            .map_err(|e| e.to_string())?;
        let len = p
            .join_timeout(JOIN)
            .map_err(|e| e.to_string())?
            .ok_or("the grandchild hung")??;
        Ok(got + len as u32)
    })
}

#[test]
fn threads_of_a_child_share_its_connections_without_deadlock() {
    let m = Manager::start().unwrap();
    let (d, q, lock) = (m.dict().unwrap(), m.queue().unwrap(), m.lock().unwrap());
    for method in [StartMethod::ForkServer, StartMethod::Spawn] {
        d.clear().unwrap();
        let p = Process::builder()
            .start_method(method)
            .spawn((d.clone(), q.clone(), lock.clone()), threads_in_a_child)
            .unwrap();
        // 7 from the queue, plus 201 entries.
        assert_eq!(join(p), Ok(208), "{method:?}");
        assert!(lock.try_acquire().unwrap().is_some());
    }
}

type TwoManagers = (
    Dict<String, i64>,
    ValueProxy<i64>,
    LockProxy,
    Dict<String, i64>,
    LockProxy,
);

/// Uses proxies of two managers, interleaved in one message.
fn use_two_managers((d1, v2, l1, d2, l2): TwoManagers) -> Result<i64, String> {
    let e = |e: ManagerError| e.to_string();
    let _g1 = l1.acquire().map_err(e)?;
    let _g2 = l2.acquire().map_err(e)?;
    d1.insert("a".into(), 1).map_err(e)?;
    d2.insert("b".into(), 2).map_err(e)?;
    let v = v2.update_with(|v: &mut i64| *v += 10).map_err(e)?;
    Ok(v + d1.get("a").map_err(e)?.unwrap_or(0) + d2.get("b").map_err(e)?.unwrap_or(0))
}

#[test]
fn several_proxies_of_two_managers_in_one_message() {
    let (m1, m2) = (Manager::start().unwrap(), Manager::start().unwrap());
    let (d1, l1) = (m1.dict().unwrap(), m1.lock().unwrap());
    let (d2, l2, v2) = (m2.dict().unwrap(), m2.lock().unwrap(), m2.value(5i64).unwrap());
    for method in [StartMethod::ForkServer, StartMethod::Spawn] {
        let p = Process::builder()
            .start_method(method)
            .spawn(
                (d1.clone(), v2.clone(), l1.clone(), d2.clone(), l2.clone()),
                use_two_managers,
            )
            .unwrap();
        let got = join(p).unwrap();
        assert_eq!(got, v2.get().unwrap() + 3, "{method:?}");
        // The child's guards were dropped as it returned: both locks are free.
        assert!(l1.try_acquire().unwrap().is_some());
        assert!(l2.try_acquire().unwrap().is_some());
    }
    assert_eq!(v2.get().unwrap(), 25);
}

#[test]
fn a_proxy_of_another_manager_can_be_nested_too() {
    let (m1, m2) = (Manager::start().unwrap(), Manager::start().unwrap());
    let elsewhere = m2.value(9u8).unwrap();
    let d: Dict<u8, ValueProxy<u8>> = m1.dict().unwrap();
    d.insert(0, elsewhere.clone()).unwrap();
    assert_eq!(d.get(&0).unwrap().unwrap().get().unwrap(), 9);
    m2.shutdown().unwrap();
    assert!(matches!(
        d.get(&0).unwrap().unwrap().get(),
        Err(ManagerError::ManagerGone)
    ));
}

#[test]
fn other_handles_cannot_be_stored() {
    let m = Manager::start().unwrap();
    let d: Dict<u8, multiproc::Connection> = m.dict().unwrap();
    let (a, _b) = multiproc::Pipe::new().unwrap();
    // A descriptor cannot live in the server's storage: a clear error, nothing sent.
    let err = d.insert(1, a).unwrap_err();
    assert!(matches!(err, ManagerError::Codec(_)), "{err:?}");
    assert_eq!(d.len().unwrap(), 0);
}

#[test]
fn start_methods_all_work() {
    for method in [StartMethod::ForkServer, StartMethod::Spawn] {
        let m = Manager::builder().start_method(method).start().unwrap();
        let v = m.value(1u8).unwrap();
        assert_eq!(v.update_with(|x: &mut u8| *x += 1).unwrap(), 2);
        let pid = m.server_pid();
        m.shutdown().unwrap();
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/status")).exists() || {
                let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                !s.contains("State:\tZ")
            }
        );
    }
}

#[test]
fn namespace_fields_of_several_types_shared_with_children() {
    let m = Manager::start().unwrap();
    let ns = m.namespace().unwrap();
    ns.set("name", "run-7").unwrap();
    ns.set("count", &0u64).unwrap();
    ns.set("xs", &vec![1u8, 2]).unwrap();
    assert!(ns.contains("name").unwrap());
    assert!(!ns.contains("missing").unwrap());
    assert_eq!(ns.get::<String>("missing").unwrap(), None);
    let mut fields = ns.fields().unwrap();
    fields.sort();
    assert_eq!(fields, ["count", "name", "xs"]);
    // Read as another type: an error, not a wrong value.
    assert!(matches!(ns.get::<bool>("name"), Err(ManagerError::Codec(_))));

    let children: Vec<_> = (0..4)
        .map(|_| {
            Process::spawn(ns.clone(), |ns| {
                for _ in 0..25 {
                    ns.update_with("count", |c: &mut u64| *c += 1).unwrap();
                }
                (
                    ns.get::<String>("name").unwrap(),
                    ns.get::<Vec<u8>>("xs").unwrap(),
                )
            })
            .unwrap()
        })
        .collect();
    for c in children {
        assert_eq!(join(c), (Some("run-7".to_string()), Some(vec![1, 2])));
    }
    assert_eq!(ns.get::<u64>("count").unwrap(), Some(100));
    assert!(matches!(
        ns.update_with("missing", |c: &mut u64| *c += 1),
        Err(ManagerError::KeyNotFound)
    ));

    // A child's changes are seen by the parent, and removals too.
    let p = Process::spawn(ns.clone(), |ns| {
        ns.set("from_child", &(1u8, 'x')).unwrap();
        ns.remove("xs").unwrap()
    })
    .unwrap();
    assert!(join(p));
    assert_eq!(ns.get::<(u8, char)>("from_child").unwrap(), Some((1, 'x')));
    assert!(!ns.contains("xs").unwrap());
    assert!(!ns.remove("xs").unwrap());

    // The same object as a typed dict.
    let counts = m.namespace().unwrap();
    counts.set("a", &1i32).unwrap();
    let d = counts.as_dict::<i32>();
    d.insert("b".into(), 2).unwrap();
    assert_eq!(counts.get::<i32>("b").unwrap(), Some(2));
    assert_eq!(d.len().unwrap(), 2);
}

#[test]
fn proxies_work_in_children_started_with_fork() {
    // Fork needs a single-threaded caller: the test harness is not, so a
    // ForkServer child (single-threaded) does the forking.
    fn fork_and_use(d: Dict<String, u32>) -> Result<u32, String> {
        let p = Process::builder()
            .start_method(StartMethod::Fork)
            .spawn(d.clone(), |d| {
                d.insert("forked".to_string(), 7).unwrap();
                d.update_with("count", |c: &mut u32| *c += 1).unwrap()
            })
            .map_err(|e| e.to_string())?;
        let got = p.join_timeout(JOIN).map_err(|e| e.to_string())?.ok_or("hung")?;
        // The parent's own proxy still works after the fork.
        d.update_with("count", |c: &mut u32| *c += 10)
            .map_err(|e| e.to_string())?;
        Ok(got)
    }
    let m = Manager::start().unwrap();
    let d = m.dict::<String, u32>().unwrap();
    d.insert("count".to_string(), 0).unwrap();
    let p = Process::spawn(d.clone(), fork_and_use).unwrap();
    assert_eq!(join(p), Ok(1));
    assert_eq!(d.get("forked").unwrap(), Some(7));
    assert_eq!(d.get("count").unwrap(), Some(11));
}
