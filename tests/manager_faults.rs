//! The manager under faults: its server killed mid-run, shut down under live
//! proxies, a client's connection killed. Nothing hangs: every wait has a deadline.

use std::time::{Duration, Instant};

use multiproc::{Dict, EventProxy, Manager, ManagerError, Process, QueueProxy};
use rustix::process::{kill_process, Pid, Signal};

const JOIN: Duration = Duration::from_secs(60);

fn sigkill(pid: u32) {
    kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL).unwrap();
}

/// Updates until the manager goes away; returns how the loop ended.
fn update_until_gone((d, started): (Dict<String, u64>, EventProxy)) -> String {
    let _ = started.set();
    loop {
        if let Err(e) = d.update_with("n", |n: &mut u64| *n += 1) {
            return format!("{e:?}");
        }
    }
}

#[test]
fn killing_the_server_mid_run_fails_every_call_with_manager_gone() {
    let m = Manager::start().unwrap();
    let d: Dict<String, u64> = m.dict().unwrap();
    d.insert("n".into(), 0).unwrap();
    let started = m.event().unwrap();
    let procs: Vec<_> = (0..4)
        .map(|_| Process::spawn((d.clone(), started.clone()), update_until_gone).unwrap())
        .collect();
    assert!(started.wait_timeout(Duration::from_secs(30)).unwrap());
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    sigkill(m.server_pid());
    // Every child's loop ends with ManagerGone, promptly.
    for p in procs {
        let how = p
            .join_timeout(JOIN)
            .unwrap()
            .expect("a client hung after the server died");
        assert_eq!(how, "ManagerGone");
    }
    // And here, every kind of call.
    assert!(matches!(d.get("n"), Err(ManagerError::ManagerGone)));
    assert!(matches!(d.insert("x".into(), 1), Err(ManagerError::ManagerGone)));
    assert!(matches!(m.list::<u8>(), Err(ManagerError::ManagerGone)));
    assert!(matches!(
        started.wait_timeout(Duration::from_secs(30)),
        Err(ManagerError::ManagerGone)
    ));
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
    // Shutting down a dead server reaps it.
    m.shutdown().unwrap();
}

fn one_update(d: Dict<String, u64>) -> String {
    match d.update_with("n", |n: &mut u64| *n += 1) {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:?}"),
    }
}

#[test]
fn proxies_given_to_children_after_the_server_died_fail_with_manager_gone() {
    let m = Manager::start().unwrap();
    let d: Dict<String, u64> = m.dict().unwrap();
    d.insert("n".into(), 0).unwrap();
    // Enough children for this process to make the server's connections in
    // batches (some are left over when the server dies).
    for _ in 0..2 {
        let procs: Vec<_> = (0..10)
            .map(|_| Process::spawn(d.clone(), one_update).unwrap())
            .collect();
        for p in procs {
            assert_eq!(p.join_timeout(JOIN).unwrap().expect("a child hung"), "ok");
        }
    }
    assert_eq!(d.get("n").unwrap(), Some(20));
    sigkill(m.server_pid());
    let t = Instant::now();
    for _ in 0..5 {
        // The proxy may fail to travel (no server to hand a connection to) or
        // travel and fail at its first call: never a hang.
        if let Ok(p) = Process::spawn(d.clone(), one_update) {
            let how = p.join_timeout(JOIN).unwrap().expect("a child hung");
            assert_eq!(how, "ManagerGone");
        }
    }
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
    m.shutdown().unwrap();
}

#[test]
fn after_shutdown_under_a_held_guard_calls_are_manager_gone_at_once() {
    let m = Manager::start().unwrap();
    let d: Dict<u8, u8> = m.dict().unwrap();
    let lock = m.lock().unwrap();
    let g = lock.acquire().unwrap();
    let d2 = d.clone();
    m.shutdown().unwrap();
    let t = Instant::now();
    std::thread::scope(|s| {
        let other = s.spawn(|| d2.get(&1));
        assert!(matches!(other.join().unwrap(), Err(ManagerError::ManagerGone)));
    });
    assert!(matches!(d.insert(1, 1), Err(ManagerError::ManagerGone)));
    assert!(matches!(g.release(), Err(ManagerError::ManagerGone)));
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
}

fn wait_on_queue(q: QueueProxy<u32>) -> String {
    match q.get() {
        Ok(v) => format!("got {v}"),
        Err(e) => format!("{e:?}"),
    }
}

#[test]
fn shutdown_with_live_proxies_blocked_and_idle() {
    let m = Manager::start().unwrap();
    let q: QueueProxy<u32> = m.queue().unwrap();
    let d: Dict<u8, u8> = m.dict().unwrap();
    d.insert(1, 1).unwrap();
    // A child blocked in a get without timeout, and a thread here likewise.
    let p = Process::spawn(q.clone(), wait_on_queue).unwrap();
    let q2 = q.clone();
    let t = std::thread::spawn(move || wait_on_queue(q2));
    std::thread::sleep(Duration::from_millis(300));
    let pid = m.server_pid();
    m.shutdown().unwrap();
    assert_eq!(
        p.join_timeout(JOIN).unwrap().expect("blocked child hung"),
        "ManagerGone"
    );
    assert_eq!(t.join().unwrap(), "ManagerGone");
    assert!(matches!(d.get(&1), Err(ManagerError::ManagerGone)));
    assert!(matches!(q.try_get(), Err(ManagerError::ManagerGone)));
    // The server was reaped: no process, no zombie.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn dropping_the_manager_stops_the_server() {
    let m = Manager::start().unwrap();
    let v = m.value(3u8).unwrap();
    let pid = m.server_pid();
    drop(m);
    assert!(matches!(v.get(), Err(ManagerError::ManagerGone)));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

/// SIGSTOP takes effect asynchronously: waits until every thread of `pid` is stopped.
fn wait_all_threads_stopped(pid: u32) {
    let t = Instant::now();
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let all_stopped = tasks.filter_map(Result::ok).all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // The state follows the parenthesised command name.
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
        });
        if all_stopped {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the server did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_stopped_server_is_a_timeout_not_a_hang() {
    let m = Manager::builder()
        .call_timeout(Some(Duration::from_millis(300)))
        .start()
        .unwrap();
    let d: Dict<u8, u8> = m.dict().unwrap();
    d.insert(1, 1).unwrap();
    let pid = Pid::from_raw(m.server_pid() as i32).unwrap();
    kill_process(pid, Signal::STOP).unwrap();
    wait_all_threads_stopped(m.server_pid());
    let t = Instant::now();
    assert!(matches!(d.get(&1), Err(ManagerError::Timeout)));
    assert!(t.elapsed() < Duration::from_secs(5));
    kill_process(pid, Signal::CONT).unwrap();
    // The timed-out connection was dropped; a new one works.
    assert_eq!(d.get(&1).unwrap(), Some(1));
}

#[test]
fn a_call_that_times_out_under_a_lock_releases_it_and_the_guard_says_so() {
    let m = Manager::builder()
        .call_timeout(Some(Duration::from_millis(300)))
        .start()
        .unwrap();
    let (d, lock) = (m.dict::<u8, u8>().unwrap(), m.lock().unwrap());
    d.insert(1, 1).unwrap();
    let g = lock.acquire().unwrap();
    // Calls under the guard use its connection.
    assert_eq!(d.get(&1).unwrap(), Some(1));
    let pid = Pid::from_raw(m.server_pid() as i32).unwrap();
    kill_process(pid, Signal::STOP).unwrap();
    wait_all_threads_stopped(m.server_pid());
    assert!(matches!(d.get(&1), Err(ManagerError::Timeout)));
    kill_process(pid, Signal::CONT).unwrap();
    // That connection, and the lock with it, are gone.
    assert!(matches!(g.release(), Err(ManagerError::ManagerGone)));
    let again = lock.acquire_timeout(Duration::from_secs(10)).unwrap();
    assert!(again.is_some(), "the lock stayed held");
    assert_eq!(d.get(&1).unwrap(), Some(1));
}

fn killed_mid_update((d, ev): (Dict<u8, u64>, EventProxy)) {
    ev.set().unwrap();
    loop {
        d.update_with(&0, |n: &mut u64| *n += 1).unwrap();
    }
}

#[test]
fn a_client_killed_mid_run_does_not_disturb_the_others() {
    let m = Manager::start().unwrap();
    let d: Dict<u8, u64> = m.dict().unwrap();
    d.insert(0, 0).unwrap();
    let ev = m.event().unwrap();
    let p = Process::spawn((d.clone(), ev.clone()), killed_mid_update).unwrap();
    assert!(ev.wait_timeout(Duration::from_secs(30)).unwrap());
    std::thread::sleep(Duration::from_millis(50));
    p.kill().unwrap();
    assert!(p.join_timeout(JOIN).is_err());
    let before = d.get(&0).unwrap().unwrap();
    for _ in 0..100 {
        d.update_with(&0, |n: &mut u64| *n += 1).unwrap();
    }
    // None of ours is lost. The killed client's last request may have been
    // sent before the kill and be applied by the server after our first
    // read: at most one more.
    let after = d.get(&0).unwrap().unwrap();
    assert!(
        (before + 100..=before + 101).contains(&after),
        "{before} -> {after} after 100 updates"
    );
}

fn start_manager_and_wait(report: multiproc::Connection) {
    let m = Manager::start().unwrap();
    let v = m.value(1u8).unwrap();
    report.send(&(m.server_pid(), v)).unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_manager_dies_with_the_process_that_started_it() {
    let (ours, theirs) = multiproc::Pipe::new().unwrap();
    let p = Process::spawn(theirs, start_manager_and_wait).unwrap();
    let (server_pid, v): (u32, multiproc::ValueProxy<u8>) =
        ours.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(v.get().unwrap(), 1);
    p.kill().unwrap();
    assert!(p.join_timeout(JOIN).is_err());
    // The server was a daemon of the killed process: it goes too, and its
    // proxies say so.
    let t = Instant::now();
    while std::path::Path::new(&format!("/proc/{server_pid}")).exists() {
        let status = std::fs::read_to_string(format!("/proc/{server_pid}/status")).unwrap_or_default();
        if status.contains("State:\tZ") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the manager outlived its owner"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(v.get(), Err(ManagerError::ManagerGone)));
}
