//! `Process` with real processes: lifecycle, results, panics, exit codes,
//! signals, timeouts, daemons, parents, start methods.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use multiproc::{ExitStatus, Process, ProcessError, StartMethod};
use serde::{Deserialize, Serialize};

mod common;

const LONG: Duration = Duration::from_secs(30);
const METHODS: [StartMethod; 2] = [StartMethod::ForkServer, StartMethod::Spawn];

fn join<R: serde::de::DeserializeOwned + 'static>(p: &Process<R>) -> Result<R, ProcessError> {
    p.join_timeout(LONG)
        .map(|r| r.expect("the child did not finish within 30 s"))
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Polls `cond` until it holds or `limit` passes.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        sleep_ms(10);
    }
    cond()
}

/// True if `pid` no longer runs (gone, or a zombie nobody reaped yet).
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(true),
    }
}

fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "multiproc-test-{tag}-{}-{:?}",
        std::process::id(),
        Instant::now()
    ))
}

fn read_pid(path: &PathBuf) -> u32 {
    assert!(eventually(LONG, || std::fs::read_to_string(path)
        .map(|s| s.ends_with('\n'))
        .unwrap_or(false)));
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

#[test]
fn lifecycle_alive_then_ended_with_status() {
    for m in METHODS {
        let p = Process::builder()
            .start_method(m)
            .spawn(300u64, sleep_ms)
            .unwrap();
        assert!(p.is_alive(), "{m:?}");
        assert_eq!(p.exit_status(), None);
        assert!(p.pid() > 0 && p.pid() != std::process::id());
        join(&p).unwrap();
        assert!(!p.is_alive());
        assert_eq!(p.exit_status().map(|s| s.exitcode()), Some(0));
        assert!(p.exit_status().unwrap().success());
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    name: String,
    values: Vec<f64>,
    counts: HashMap<String, u32>,
    nested: Option<Box<Report>>,
}

fn make_report(n: u32) -> Report {
    let mut counts = HashMap::new();
    counts.insert("n".to_string(), n);
    Report {
        name: format!("r{n}"),
        values: vec![1.5, -2.0, f64::MAX],
        counts,
        nested: Some(Box::new(Report {
            name: "inner".into(),
            values: vec![],
            counts: HashMap::new(),
            nested: None,
        })),
    }
}

#[test]
fn returns_serde_values_of_several_types() {
    for m in METHODS {
        let b = || Process::builder().start_method(m);
        assert_eq!(
            join(&b().spawn(4u32, make_report).unwrap()).unwrap(),
            make_report(4)
        );
        assert_eq!(
            join(
                &b().spawn("héllo".to_string(), |s: String| s.to_uppercase())
                    .unwrap()
            )
            .unwrap(),
            "HÉLLO"
        );
        assert_eq!(
            join(&b().spawn(3usize, |n| vec![7u8; n << 20]).unwrap()).unwrap(),
            vec![7u8; 3 << 20]
        );
        assert_eq!(
            join(&b().spawn((), |()| Option::<u8>::None).unwrap()).unwrap(),
            None
        );
        let r: Result<u8, String> = join(
            &b().spawn(-1i32, |x| u8::try_from(x).map_err(|e| e.to_string()))
                .unwrap(),
        )
        .unwrap();
        assert!(r.is_err());
        assert_eq!(join(&b().spawn((), |()| ()).unwrap()).unwrap(), ());
        // Large arguments travel too.
        let big: Vec<u64> = (0..500_000).collect();
        assert_eq!(
            join(&b().spawn(big, |v: Vec<u64>| v.iter().sum::<u64>()).unwrap()).unwrap(),
            124_999_750_000
        );
    }
}

#[test]
fn panic_message_comes_back() {
    for m in METHODS {
        let p = Process::builder()
            .start_method(m)
            .spawn(3u32, |x: u32| -> u32 { panic!("boom {x}") })
            .unwrap();
        match join(&p) {
            Err(ProcessError::Panicked { message }) => assert_eq!(message, "boom 3"),
            other => panic!("{m:?}: unexpected {other:?}"),
        }
        assert_eq!(p.exit_status().map(|s| s.exitcode()), Some(1));
    }
}

#[test]
fn exit_code_comes_back_as_status() {
    for m in METHODS {
        let p = Process::builder()
            .start_method(m)
            .spawn(7i32, |c| -> u8 { std::process::exit(c) })
            .unwrap();
        match join(&p) {
            Err(ProcessError::Exited(st)) => {
                assert_eq!(st.code(), Some(7));
                assert_eq!(st.exitcode(), 7);
            }
            other => panic!("{m:?}: unexpected {other:?}"),
        }
    }
}

#[test]
fn terminate_and_kill_give_signal_statuses() {
    for m in METHODS {
        for (sig, send) in [(15, true), (9, false)] {
            let p = Process::builder()
                .start_method(m)
                .spawn(60_000u64, sleep_ms)
                .unwrap();
            sleep_ms(50);
            if send {
                p.terminate().unwrap();
            } else {
                p.kill().unwrap();
            }
            match join(&p) {
                Err(ProcessError::Signaled(st)) => {
                    assert_eq!(st.signal(), Some(sig));
                    assert_eq!(st.exitcode(), -sig);
                }
                other => panic!("{m:?}: unexpected {other:?}"),
            }
            // Signalling an ended (and reaped) child is harmless.
            p.kill().unwrap();
        }
    }
}

#[test]
fn join_timeout_on_a_sleeping_child() {
    let p = Process::spawn(400u64, sleep_ms).unwrap();
    let t = Instant::now();
    assert!(p.join_timeout(Duration::from_millis(50)).unwrap().is_none());
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert!(p.is_alive());
    assert_eq!(p.join_timeout(LONG).unwrap(), Some(()));
    assert!(matches!(p.join_timeout(LONG), Err(ProcessError::AlreadyJoined)));
}

#[test]
fn names_identity_and_current_process() {
    let p = Process::builder().name("worker-7").spawn((), |()| {
        let me = multiproc::current_process();
        let parent = multiproc::parent_process().map(|p| (p.pid(), p.name().to_string(), p.is_alive()));
        (me.pid(), me.name().to_string(), me.daemon(), parent)
    });
    let p = p.unwrap();
    let (pid, name, daemon, parent) = join(&p).unwrap();
    assert_eq!(pid, p.pid());
    assert_eq!(name, "worker-7");
    assert!(!daemon);
    assert_eq!(
        parent,
        Some((std::process::id(), "MainProcess".to_string(), true))
    );
    // Default names count up; nested children get "Process-N:M".
    let p = Process::spawn((), |()| {
        let inner = Process::spawn((), |()| multiproc::current_process().name().to_string()).unwrap();
        (
            multiproc::current_process().name().to_string(),
            inner.join().unwrap(),
        )
    })
    .unwrap();
    let (outer, inner) = join(&p).unwrap();
    assert!(outer.starts_with("Process-"), "{outer}");
    assert_eq!(inner, format!("{outer}:1"));
}

#[test]
fn active_children_tracks_children() {
    let p = Process::spawn((), |()| {
        let a = Process::spawn(300u64, sleep_ms).unwrap();
        let b = Process::builder()
            .name("b")
            .daemon(true)
            .spawn(300u64, sleep_ms)
            .unwrap();
        let mut live: Vec<u32> = multiproc::active_children().iter().map(|c| c.pid).collect();
        live.sort();
        let mut want = vec![a.pid(), b.pid()];
        want.sort();
        let names: Vec<String> = multiproc::active_children().into_iter().map(|c| c.name).collect();
        a.join().unwrap();
        b.join().unwrap();
        (
            live == want,
            names.contains(&"b".to_string()),
            multiproc::active_children().len(),
        )
    })
    .unwrap();
    assert_eq!(join(&p).unwrap(), (true, true, 0));
}

#[test]
fn fork_is_refused_with_threads() {
    // The test harness runs tests on threads: this process has several.
    let _t = std::thread::spawn(|| sleep_ms(500));
    match Process::builder()
        .start_method(StartMethod::Fork)
        .spawn(1u8, |x| x)
    {
        Err(ProcessError::ForkWithThreads { threads }) => assert!(threads > 1),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn fork_works_in_a_single_threaded_process() {
    fn outer(base: u64) -> Result<(u64, bool), String> {
        let captured_by_copy = base * 10;
        let p = Process::builder()
            .start_method(StartMethod::Fork)
            .spawn(captured_by_copy, |x| {
                (x + 1, multiproc::parent_process().is_some())
            })
            .map_err(|e| e.to_string())?;
        p.join().map_err(|e| e.to_string())
    }
    let p = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(4u64, outer)
        .unwrap();
    assert_eq!(join(&p).unwrap(), Ok((41, true)));
}

fn spawn_daemon_and_wait(args: (String, bool)) {
    let (path, via_spawn) = args;
    let method = if via_spawn {
        StartMethod::Spawn
    } else {
        StartMethod::ForkServer
    };
    let d = Process::builder()
        .daemon(true)
        .start_method(method)
        .spawn(120_000u64, sleep_ms)
        .unwrap();
    std::fs::write(&path, format!("{}\n", d.pid())).unwrap();
    sleep_ms(120_000);
}

#[test]
fn daemon_child_dies_when_its_parent_is_killed() {
    for via_spawn in [false, true] {
        let path = temp_path("daemon");
        let p = Process::spawn(
            (path.to_string_lossy().into_owned(), via_spawn),
            spawn_daemon_and_wait,
        )
        .unwrap();
        let daemon = read_pid(&path);
        assert!(!is_gone(daemon));
        p.kill().unwrap();
        assert!(matches!(join(&p), Err(ProcessError::Signaled(_))));
        assert!(
            eventually(LONG, || is_gone(daemon)),
            "daemon {daemon} outlived its parent (via_spawn={via_spawn})"
        );
        let _ = std::fs::remove_file(&path);
    }
}

fn parent_then_grandchild(path: String) {
    let g = Process::spawn(path.clone(), |path: String| {
        let parent = multiproc::parent_process().expect("a parent");
        let before = parent.is_alive();
        let died = parent.join_timeout(Duration::from_secs(60));
        std::fs::write(
            format!("{path}.seen"),
            format!("{before} {died} {}\n", parent.is_alive()),
        )
        .unwrap();
    })
    .unwrap();
    std::fs::write(&path, format!("{}\n", g.pid())).unwrap();
    sleep_ms(120_000);
}

#[test]
fn grandchild_sees_its_parent_die() {
    let path = temp_path("grand");
    let p = Process::spawn(path.to_string_lossy().into_owned(), parent_then_grandchild).unwrap();
    let _grandchild = read_pid(&path);
    p.kill().unwrap();
    let seen = PathBuf::from(format!("{}.seen", path.display()));
    assert!(eventually(LONG, || std::fs::read_to_string(&seen)
        .map(|s| s.ends_with('\n'))
        .unwrap_or(false)));
    assert_eq!(std::fs::read_to_string(&seen).unwrap().trim(), "true true false");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&seen);
}

#[test]
fn every_start_method_works_under_the_threaded_harness() {
    // Many spawns at once from several threads of this multi-threaded process.
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..5u64 {
                    let m = METHODS[(t + i as usize) % 2];
                    let p = Process::builder().start_method(m).spawn(i, |x| x * 2).unwrap();
                    assert_eq!(join(&p).unwrap(), i * 2);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn dropping_a_running_process_does_not_block_or_kill() {
    let path = temp_path("drop");
    let p = Process::spawn(path.to_string_lossy().into_owned(), |path: String| {
        sleep_ms(300);
        std::fs::write(path, "done\n").unwrap();
    })
    .unwrap();
    let t = Instant::now();
    drop(p);
    assert!(t.elapsed() < Duration::from_millis(200));
    assert!(eventually(LONG, || std::fs::read_to_string(&path).is_ok()));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn exit_status_display() {
    let p = Process::spawn(60_000u64, sleep_ms).unwrap();
    p.kill().unwrap();
    let err = join(&p).unwrap_err();
    assert!(err.to_string().contains("SIGKILL"), "{err}");
    let st: ExitStatus = err.exit_status().unwrap();
    assert_eq!(st.signal(), Some(9));
}

#[test]
fn wait_over_processes_and_connections() {
    use multiproc::{wait, Pipe};
    let quick = Process::spawn(50u64, sleep_ms).unwrap();
    let slow = Process::spawn(60_000u64, sleep_ms).unwrap();
    let (a, b) = Pipe::new().unwrap();
    // Nothing ready yet: a zero timeout returns at once, empty.
    let t = Instant::now();
    assert!(wait(&[&slow, &b], Some(Duration::ZERO)).unwrap().is_empty());
    assert!(t.elapsed() < Duration::from_secs(1));
    // The quick child ends first.
    assert_eq!(wait(&[&slow, &quick, &b], Some(LONG)).unwrap(), vec![1]);
    a.send(&1u8).unwrap();
    let ready = wait(&[&slow, &quick, &b], Some(LONG)).unwrap();
    assert_eq!(ready, vec![1, 2]);
    // A timeout with nothing ready gives an empty list after about the timeout.
    let t = Instant::now();
    assert!(wait(&[&slow], Some(Duration::from_millis(100)))
        .unwrap()
        .is_empty());
    assert!(t.elapsed() >= Duration::from_millis(100));
    slow.kill().unwrap();
    assert_eq!(wait(&[&slow], Some(LONG)).unwrap(), vec![0]);
}

/// The live children of `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    common::proc_children(parent, |state| state != "Z")
}

/// The children of `parent` that are zombies (ended, not reaped).
fn zombie_children(parent: u32) -> Vec<u32> {
    common::proc_children(parent, |state| state == "Z")
}

#[test]
fn fork_server_daemon_and_plain_children_interleave() {
    let handles: Vec<_> = (0..3u64)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..6u64 {
                    let daemon = (i + t) % 2 == 0;
                    let p = Process::builder()
                        .daemon(daemon)
                        .start_method(StartMethod::ForkServer)
                        .spawn(i, |x| (x * 3, multiproc::current_process().daemon()))
                        .unwrap();
                    assert_eq!(join(&p).unwrap(), (i * 3, daemon));
                    assert!(p.exit_status().unwrap().success());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn use_fork_server_then_list_helpers(_: ()) -> Vec<u32> {
    let c = Process::builder()
        .start_method(StartMethod::ForkServer)
        .spawn(3u32, |x| x + 1)
        .unwrap();
    assert_eq!(join(&c).unwrap(), 4);
    // What is left: the fork server, and the child it forked ahead.
    children_of(std::process::id())
}

#[test]
fn nothing_of_the_fork_server_outlives_the_program() {
    // The program is a `Spawn` child that uses the fork server, then exits.
    let p = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn((), use_fork_server_then_list_helpers)
        .unwrap();
    let helpers = join(&p).unwrap();
    assert!(!helpers.is_empty(), "no fork server found");
    assert!(
        eventually(LONG, || helpers.iter().all(|&pid| is_gone(pid))),
        "left running after the program exited: {helpers:?}"
    );
}

fn kill_the_fork_server_then_spawn(_: ()) -> (u32, Vec<u32>) {
    let me = std::process::id();
    let c = Process::spawn(1u32, |x| x + 1).unwrap();
    assert_eq!(join(&c).unwrap(), 2);
    // The server and (where the kernel allows siblings) the child it forked
    // ahead, both children of this program.
    eventually(Duration::from_secs(5), || children_of(me).len() >= 2);
    for pid in children_of(me) {
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    assert!(eventually(LONG, || children_of(me).is_empty()));
    // The next spawn notices, starts a new server, and reaps what was killed.
    let d = Process::spawn(5u32, |x| x * 2).unwrap();
    let v = join(&d).unwrap();
    (v, zombie_children(me))
}

#[test]
fn a_killed_fork_server_is_replaced_and_reaped() {
    let p = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn((), kill_the_fork_server_then_spawn)
        .unwrap();
    assert_eq!(join(&p).unwrap(), (10, vec![]));
}

/// The start time of `pid` (clock ticks since boot, field 22 of its stat).
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19)?.parse().ok())
        .unwrap_or(0)
}

fn kill_the_waiting_child_then_spawn(_: ()) -> (u32, Vec<u32>, bool) {
    let me = std::process::id();
    let c = Process::spawn(1u32, |x| x + 1).unwrap();
    assert_eq!(join(&c).unwrap(), 2);
    // The server and the child it forked ahead, both children of this
    // program: the child is the younger.
    assert!(eventually(Duration::from_secs(5), || children_of(me).len() >= 2));
    let waiting = children_of(me)
        .into_iter()
        .max_by_key(|&pid| (start_time(pid), pid))
        .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &waiting.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(eventually(LONG, || is_gone(waiting)));
    // The next spawn finds it dead, reaps it, and uses another one.
    let d = Process::spawn(5u32, |x| x * 2).unwrap();
    let v = join(&d).unwrap();
    let server_alive = children_of(me).len() >= 2;
    (v, zombie_children(me), server_alive)
}

#[test]
fn a_killed_waiting_child_is_replaced_and_reaped() {
    let p = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn((), kill_the_waiting_child_then_spawn)
        .unwrap();
    let (v, zombies, server_alive) = join(&p).unwrap();
    assert_eq!(v, 10);
    assert_eq!(zombies, Vec::<u32>::new());
    assert!(server_alive, "the fork server should have been kept");
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn large_results_and_panic_messages_come_back() {
    // More than a socket's buffer holds: the parent must read while the
    // child writes, whichever way the child was started.
    for (method, daemon) in [
        (StartMethod::ForkServer, false),
        (StartMethod::ForkServer, true),
        (StartMethod::Spawn, false),
    ] {
        let p = Process::builder()
            .daemon(daemon)
            .start_method(method)
            .spawn(3_000_001usize, pattern)
            .unwrap();
        let got = join(&p).unwrap();
        assert!(got == pattern(3_000_001), "{method:?} daemon={daemon}");
        let p = Process::builder()
            .daemon(daemon)
            .start_method(method)
            .spawn(100_000usize, |n| -> () { panic!("{}", "x".repeat(n)) })
            .unwrap();
        match join(&p) {
            Err(ProcessError::Panicked { message }) => assert_eq!(message.len(), 100_000),
            other => panic!("{method:?}: expected a panic, got {other:?}"),
        }
    }
}

/// What a child that ignores SIGCHLD saw of its own children, per start method.
#[derive(Debug, Serialize, Deserialize)]
struct Ignored {
    method: String,
    value: Option<u64>,
    panicked: bool,
    code: Option<i32>,
    signal: Option<i32>,
    alive_after: bool,
}

#[test]
fn a_program_that_ignores_sigchld_still_gets_values_and_panics() {
    // With SIGCHLD ignored the kernel reaps children at once, so their exit
    // status is lost: `join` must still answer (never hang, never fail) with
    // what the child sent. Runs in a child, whose signal disposition is its own.
    #[allow(unsafe_code)]
    fn ignore_sigchld_then_spawn(_: ()) -> Vec<Ignored> {
        // SAFETY: sets a signal disposition in this single-purpose child; no
        // handler runs, SIG_IGN only changes how the kernel treats SIGCHLD.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
        METHODS
            .iter()
            .map(|&m| {
                let p = Process::builder()
                    .start_method(m)
                    .spawn(41u64, |x| x + 1)
                    .unwrap();
                let value = join(&p).ok();
                let status = p.exit_status().expect("joined: the child has ended");
                let q = Process::builder()
                    .start_method(m)
                    .spawn((), |_| -> () { panic!("boom") })
                    .unwrap();
                let panicked = matches!(join(&q), Err(ProcessError::Panicked { .. }));
                Ignored {
                    method: format!("{m:?}"),
                    value,
                    panicked,
                    code: status.code(),
                    signal: status.signal(),
                    alive_after: p.is_alive() || q.is_alive(),
                }
            })
            .collect()
    }
    let p = Process::spawn((), ignore_sigchld_then_spawn).unwrap();
    let seen = join(&p).unwrap();
    assert_eq!(seen.len(), METHODS.len());
    for s in seen {
        assert_eq!(s.value, Some(42), "{s:?}");
        assert!(s.panicked, "{s:?}");
        assert!(!s.alive_after, "{s:?}");
        // The status is either lost (reaped by the kernel) or exit code 0.
        assert!(
            matches!((s.code, s.signal), (None, None) | (Some(0), None)),
            "{s:?}"
        );
    }
}
