//! The pool's contract, with real worker processes: CPython's `_TestPool` and
//! `_TestPoolWorkerLifetime` behaviours, and the failure model (a worker killed
//! while busy or idle, a task that aborts or exits, a task past its timeout, a
//! huge result, values that fail to encode or decode). Every wait has a deadline.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use multiproc::{AsyncGetError, AsyncResult, Pool, PoolError, TaskError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const LONG: Duration = Duration::from_secs(60);

fn sqr(x: i64) -> i64 {
    x * x
}

fn pid_of(_: ()) -> u32 {
    std::process::id()
}

fn sleep_ms(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// Writes the worker's pid to `path`, then sleeps `ms`.
fn report_then_sleep((path, ms): (PathBuf, u64)) -> u32 {
    std::fs::write(&path, std::process::id().to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn get<R>(r: AsyncResult<R>) -> Result<R, TaskError> {
    match r.get_timeout(LONG) {
        Ok(v) => Ok(v),
        Err(AsyncGetError::Failed(e)) => Err(e),
        Err(AsyncGetError::Timeout(_)) => panic!("no result within {LONG:?}"),
    }
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("multiproc-pool-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn wait_for_pid(path: &Path) -> u32 {
    let t = Instant::now();
    while t.elapsed() < LONG {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Ok(pid) = s.trim().parse() {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the task never reported its pid");
}

fn kill9(pid: u32) {
    let st = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// True while `pid` exists in any state, zombies included.
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn wait_gone(pid: u32) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if !exists(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// The pids of the workers that ran `n` tasks of `ms` each, all submitted at once.
/// The pids of the pool's workers: rounds of `n` jobs of `ms` each until every
/// worker has answered one (a worker still starting on a loaded machine may
/// miss a round), for at most 30 s.
fn worker_pids(pool: &Pool, n: usize, ms: u64) -> BTreeSet<u32> {
    let start = Instant::now();
    let mut pids = BTreeSet::new();
    while pids.len() < pool.processes() && start.elapsed() < LONG {
        let results: Vec<_> = (0..n).map(|_| pool.apply_async(sleep_ms, ms)).collect();
        pids.extend(results.into_iter().map(|r| get(r).unwrap()));
    }
    pids
}

fn close_join(pool: &Pool) {
    pool.close();
    assert!(pool.join_timeout(LONG).unwrap(), "join timed out");
}

// ---- _TestPool ----------------------------------------------------------

#[test]
fn apply_and_apply_async() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(sqr, 5).unwrap(), 25);
    assert_eq!(pool.apply(|(a, b): (i64, i64)| a + b, (2, 3)).unwrap(), 5);
    let r = pool.apply_async(sqr, 7);
    assert_eq!(get(r).unwrap(), 49);
    let r = pool.apply_async(|s: String| s.to_uppercase(), "abc".to_string());
    assert!(r.wait_timeout(LONG));
    assert!(r.ready());
    assert_eq!(r.successful(), Some(true));
    assert_eq!(get(r).unwrap(), "ABC");
    close_join(&pool);
}

#[test]
fn map_keeps_order_for_every_chunk_size() {
    let pool = Pool::new(3).unwrap();
    let items: Vec<i64> = (0..40).collect();
    let want: Vec<i64> = items.iter().map(|x| x * x).collect();
    assert_eq!(get(pool.map_async(sqr, items.clone())).unwrap(), want);
    for cs in 1..=items.len() + 1 {
        let got = get(pool.map_async_chunked(sqr, items.clone(), cs)).unwrap();
        assert_eq!(got, want, "chunksize {cs}");
    }
    assert_eq!(pool.map_chunked(sqr, items.clone(), 0).unwrap(), want);
    close_join(&pool);
}

#[test]
fn empty_inputs() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(get(pool.map_async(sqr, Vec::new())).unwrap(), Vec::<i64>::new());
    assert_eq!(
        get(pool.map_async_chunked(sqr, Vec::new(), 5)).unwrap(),
        Vec::<i64>::new()
    );
    let mut it = pool.imap(sqr, Vec::new());
    assert_eq!(it.next_timeout(LONG).unwrap(), None);
    let mut it = pool.imap_unordered(sqr, Vec::new());
    assert_eq!(it.next_timeout(LONG).unwrap(), None);
    close_join(&pool);
}

fn drain<I: Iterator<Item = i64>>(mut it: multiproc::Imap<'_, i64, i64, I>) -> Vec<Result<i64, TaskError>> {
    let mut out = Vec::new();
    while let Some(r) = it.next_timeout(LONG).expect("imap result timed out") {
        out.push(r);
    }
    out
}

#[test]
fn imap_is_ordered_and_imap_unordered_complete() {
    let pool = Pool::new(3).unwrap();
    let want: Vec<i64> = (0..100).map(|x| x * x).collect();
    for cs in [1, 3, 7, 100, 1000] {
        let got: Vec<i64> = drain(pool.imap_chunked(sqr, 0..100, cs))
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, want, "imap chunksize {cs}");
        let mut got: Vec<i64> = drain(pool.imap_unordered_chunked(sqr, 0..100, cs))
            .into_iter()
            .map(Result::unwrap)
            .collect();
        got.sort();
        assert_eq!(got, want, "imap_unordered chunksize {cs}");
    }
    close_join(&pool);
}

#[test]
fn imap_unordered_yields_in_completion_order() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(worker_pids(&pool, 4, 20).len(), 2, "both workers up");
    let slow_then_quick = |ms: u64| {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    };
    // 1 s then 0 ms, one on each worker: the quick one comes first...
    let mut it = pool.imap_unordered(slow_then_quick, [1000u64, 0]);
    assert_eq!(it.next_timeout(LONG).unwrap().unwrap().unwrap(), 0);
    assert_eq!(it.next_timeout(LONG).unwrap().unwrap().unwrap(), 1000);
    assert_eq!(it.next_timeout(LONG).unwrap(), None);
    // ... while imap keeps the input order.
    let mut it = pool.imap(slow_then_quick, [300u64, 0]);
    assert_eq!(it.next_timeout(LONG).unwrap().unwrap().unwrap(), 300);
    assert_eq!(it.next_timeout(LONG).unwrap().unwrap().unwrap(), 0);
    close_join(&pool);
}

#[test]
fn imap_is_lazy_over_an_endless_input() {
    let pool = Pool::new(2).unwrap();
    let mut it = pool.imap(sqr, 0..);
    let mut got = Vec::new();
    for _ in 0..50 {
        got.push(it.next_timeout(LONG).unwrap().unwrap().unwrap());
    }
    assert_eq!(got, (0..50).map(|x| x * x).collect::<Vec<_>>());
    drop(it);
    close_join(&pool);
}

static PULLED: AtomicU32 = AtomicU32::new(0);

#[test]
fn imap_reads_its_input_within_a_bounded_window() {
    let pool = Pool::new(2).unwrap();
    let input = (0..).inspect(|_| {
        PULLED.fetch_add(1, Ordering::SeqCst);
    });
    let mut it = pool.imap(sqr, input);
    assert_eq!(it.next_timeout(LONG).unwrap().unwrap().unwrap(), 0);
    // At most 4 jobs per worker in flight (chunksize 1), plus the one consumed.
    let pulled = PULLED.load(Ordering::SeqCst);
    assert!(pulled <= 4 * 2 + 1, "{pulled} items read ahead");
    for i in 1..100 {
        assert_eq!(it.next_timeout(LONG).unwrap().unwrap().unwrap(), i * i);
    }
    let pulled = PULLED.load(Ordering::SeqCst);
    assert!(
        (100..=100 + 4 * 2).contains(&pulled),
        "{pulled} items read for 100 results"
    );
    drop(it);
    close_join(&pool);
}

#[test]
fn the_default_size_is_the_cpu_count() {
    let pool = Pool::builder().build().unwrap();
    assert_eq!(pool.processes(), multiproc::cpu_count());
    let pids = worker_pids(&pool, 4 * pool.processes(), 20);
    assert!(pids.len() <= pool.processes());
    close_join(&pool);
}

#[test]
fn async_timeout_gives_the_handle_back() {
    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async(sleep_ms, 500);
    let r = match r.get_timeout(Duration::from_millis(20)) {
        Err(AsyncGetError::Timeout(r)) => r,
        other => panic!("expected a timeout, got {other:?}"),
    };
    assert!(!r.ready());
    assert_eq!(r.successful(), None);
    assert!(get(r).is_ok());
    close_join(&pool);
}

#[test]
fn a_panic_fails_its_task_only_and_the_worker_goes_on() {
    let pool = Pool::new(1).unwrap();
    let before = pool.apply(pid_of, ()).unwrap();
    let r = pool.apply_async(
        |x: i32| -> i32 {
            if x == 13 {
                panic!("unlucky {x}");
            }
            x
        },
        13,
    );
    assert!(r.wait_timeout(LONG));
    assert_eq!(r.successful(), Some(false));
    assert_eq!(
        get(r).unwrap_err(),
        TaskError::Panicked {
            message: "unlucky 13".into()
        }
    );
    assert_eq!(
        pool.apply(pid_of, ()).unwrap(),
        before,
        "same worker after the panic"
    );
    close_join(&pool);
}

fn fail_on_zero(ms: u64) -> u64 {
    if ms == 0 {
        panic!("zero");
    }
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn map_waits_for_every_chunk_before_reporting_an_error() {
    let pool = Pool::new(2).unwrap();
    let t = Instant::now();
    let r = get(pool.map_async_chunked(fail_on_zero, vec![0, 300, 300, 300], 1));
    assert_eq!(
        r.unwrap_err(),
        TaskError::Panicked {
            message: "zero".into()
        }
    );
    // The three 300 ms tasks ran on 2 workers before the error was reported.
    assert!(t.elapsed() >= Duration::from_millis(600), "{:?}", t.elapsed());
    // imap reports the failed item and goes on.
    let got = drain(pool.imap(|x: i64| if x == 2 { panic!("two") } else { x }, 0..5));
    assert_eq!(got.iter().filter(|r| r.is_err()).count(), 1);
    assert_eq!(
        got[2],
        Err(TaskError::Panicked {
            message: "two".into()
        })
    );
    assert_eq!(got[4], Ok(4));
    close_join(&pool);
}

#[test]
fn terminate_with_10k_pending_is_prompt_and_leaves_no_zombie() {
    let pool = Pool::new(2).unwrap();
    let pids = worker_pids(&pool, 8, 50);
    assert_eq!(pids.len(), 2);
    let results: Vec<_> = (0..10_000).map(|_| pool.apply_async(sleep_ms, 1000)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    pool.terminate();
    // 10,000 s of queued work: "prompt" is anything near zero of that.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    for r in results {
        assert_eq!(get(r).unwrap_err(), TaskError::PoolTerminated);
    }
    for pid in pids {
        assert!(!exists(pid), "worker {pid} left behind (zombie or alive)");
    }
    assert!(pool.join_timeout(LONG).unwrap());
    assert_eq!(get(pool.apply_async(sqr, 1)).unwrap_err(), TaskError::PoolClosed);
}

#[test]
fn drop_terminates_without_blocking_for_long() {
    let pool = Pool::new(2).unwrap();
    let pid = pool.apply(pid_of, ()).unwrap();
    let results: Vec<_> = (0..100).map(|_| pool.apply_async(sleep_ms, 5000)).collect();
    let t = Instant::now();
    drop(pool);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(!exists(pid));
    for r in results {
        assert_eq!(get(r).unwrap_err(), TaskError::PoolTerminated);
    }
}

#[test]
fn close_then_join_finishes_queued_work() {
    let pool = Pool::new(2).unwrap();
    assert!(matches!(pool.join_timeout(LONG), Err(PoolError::NotClosed)));
    let results: Vec<_> = (0..10).map(|i| pool.apply_async(sqr, i)).collect();
    pool.close();
    assert_eq!(get(pool.apply_async(sqr, 1)).unwrap_err(), TaskError::PoolClosed);
    assert!(pool.join_timeout(LONG).unwrap());
    for (i, r) in results.into_iter().enumerate() {
        assert!(r.ready());
        assert_eq!(get(r).unwrap(), (i * i) as i64);
    }
}

#[test]
fn bad_configuration_is_refused() {
    assert!(matches!(Pool::new(0), Err(PoolError::Config(_))));
    assert!(matches!(
        Pool::builder().processes(1).max_tasks_per_child(0).build(),
        Err(PoolError::Config(_))
    ));
}

// ---- _TestPoolWorkerLifetime --------------------------------------------

#[test]
fn max_tasks_per_child_recycles_workers_without_deadlock() {
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(3)
        .build()
        .unwrap();
    // A backlog larger than the workers' lifetimes.
    let results: Vec<_> = (0..30).map(|_| pool.apply_async(sleep_ms, 2)).collect();
    let pids: Vec<u32> = results.into_iter().map(|r| get(r).unwrap()).collect();
    let distinct: BTreeSet<u32> = pids.iter().copied().collect();
    assert!(
        distinct.len() >= 10,
        "30 jobs, 3 per worker: {} workers",
        distinct.len()
    );
    for pid in &distinct {
        let n = pids.iter().filter(|p| *p == pid).count();
        assert!(n <= 3, "worker {pid} ran {n} jobs");
    }
    // And map chunks count as jobs too.
    assert_eq!(get(pool.map_async_chunked(sqr, 0..50, 2)).unwrap().len(), 50);
    close_join(&pool);
    for pid in distinct {
        assert!(wait_gone(pid), "worker {pid} not reaped");
    }
}

#[test]
fn max_tasks_per_child_with_early_close() {
    let pool = Pool::builder()
        .processes(3)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let results: Vec<_> = (0..6).map(|i| pool.apply_async(sqr, i)).collect();
    close_join(&pool);
    let got: Vec<i64> = results.into_iter().map(|r| get(r).unwrap()).collect();
    assert_eq!(got, [0, 1, 4, 9, 16, 25]);
}

// ---- failure model --------------------------------------------------------

#[test]
fn kill_9_of_a_busy_worker_fails_only_its_job() {
    let pool = Pool::new(2).unwrap();
    let path = tmp("busy");
    let victim = pool.apply_async(report_then_sleep, (path.clone(), 30_000));
    let pid = wait_for_pid(&path);
    let others: Vec<_> = (0..20).map(|i| pool.apply_async(sqr, i)).collect();
    kill9(pid);
    match get(victim).unwrap_err() {
        TaskError::WorkerLost { pid: p, status } => {
            assert_eq!(p, pid);
            assert_eq!(status.and_then(|s| s.signal()), Some(9));
        }
        e => panic!("expected WorkerLost, got {e:?}"),
    }
    for (i, r) in others.into_iter().enumerate() {
        assert_eq!(get(r).unwrap(), (i * i) as i64);
    }
    // Replaced: the pool still has two workers, neither is the dead one.
    let pids = worker_pids(&pool, 10, 30);
    assert_eq!(pids.len(), 2);
    assert!(!pids.contains(&pid));
    assert!(!exists(pid), "the killed worker was not reaped");
    close_join(&pool);
    let _ = std::fs::remove_file(path);
}

#[test]
fn jobs_queued_on_a_killed_worker_run_on_its_replacement() {
    // One worker: the jobs behind the victim are on the same worker (some
    // already written to its socket, not yet taken).
    let pool = Pool::new(1).unwrap();
    let path = tmp("single");
    let victim = pool.apply_async(report_then_sleep, (path.clone(), 30_000));
    let pid = wait_for_pid(&path);
    let queued: Vec<_> = (0..10).map(|i| pool.apply_async(sqr, i)).collect();
    std::thread::sleep(Duration::from_millis(50));
    kill9(pid);
    assert!(matches!(get(victim), Err(TaskError::WorkerLost { .. })));
    for (i, r) in queued.into_iter().enumerate() {
        assert_eq!(get(r).unwrap(), (i * i) as i64);
    }
    close_join(&pool);
    let _ = std::fs::remove_file(path);
}

#[test]
fn killing_an_idle_worker_loses_nothing() {
    let pool = Pool::new(2).unwrap();
    let pids = worker_pids(&pool, 10, 20);
    assert_eq!(pids.len(), 2);
    let victim = *pids.iter().next().unwrap();
    kill9(victim);
    assert!(wait_gone(victim));
    // Every job succeeds: the dead worker held none.
    let got = get(pool.map_async_chunked(sqr, 0..200, 1)).unwrap();
    assert_eq!(got, (0..200).map(|x| x * x).collect::<Vec<_>>());
    let after = worker_pids(&pool, 10, 20);
    assert_eq!(after.len(), 2);
    assert!(!after.contains(&victim));
    close_join(&pool);
}

#[test]
fn abort_and_exit_in_a_task_are_worker_lost() {
    let pool = Pool::new(2).unwrap();
    let aborted = pool.apply_async(|()| -> u32 { std::process::abort() }, ());
    let exited = pool.apply_async(|code: i32| -> u32 { std::process::exit(code) }, 7);
    let fine: Vec<_> = (0..20).map(|i| pool.apply_async(sqr, i)).collect();
    match get(aborted).unwrap_err() {
        TaskError::WorkerLost { status, .. } => assert_eq!(status.and_then(|s| s.signal()), Some(6)),
        e => panic!("expected WorkerLost, got {e:?}"),
    }
    match get(exited).unwrap_err() {
        TaskError::WorkerLost { status, .. } => assert_eq!(status.and_then(|s| s.code()), Some(7)),
        e => panic!("expected WorkerLost, got {e:?}"),
    }
    for (i, r) in fine.into_iter().enumerate() {
        assert_eq!(get(r).unwrap(), (i * i) as i64);
    }
    close_join(&pool);
}

/// Sends SIGSEGV to its own worker (a segfault, as the kernel reports it).
fn segfault_self(_: ()) -> u32 {
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill").args(["-SEGV", &pid]).status();
    std::thread::sleep(Duration::from_secs(30));
    0
}

#[test]
fn a_segfault_in_a_task_is_worker_lost() {
    let pool = Pool::new(2).unwrap();
    let crashed = pool.apply_async(segfault_self, ());
    let fine: Vec<_> = (0..20).map(|i| pool.apply_async(sqr, i)).collect();
    match get(crashed).unwrap_err() {
        TaskError::WorkerLost { status, .. } => assert_eq!(status.and_then(|s| s.signal()), Some(11)),
        e => panic!("expected WorkerLost, got {e:?}"),
    }
    for (i, r) in fine.into_iter().enumerate() {
        assert_eq!(get(r).unwrap(), (i * i) as i64);
    }
    close_join(&pool);
}

#[test]
fn a_task_past_its_timeout_is_killed_and_replaced() {
    let pool = Pool::builder()
        .processes(2)
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let t = Instant::now();
    let slow = pool.apply_async(sleep_ms, 20_000);
    let quick: Vec<_> = (0..20).map(|_| pool.apply_async(sleep_ms, 10)).collect();
    assert_eq!(get(slow).unwrap_err(), TaskError::TimedOut);
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    for r in quick {
        get(r).unwrap();
    }
    let pids = worker_pids(&pool, 10, 30);
    assert_eq!(pids.len(), 2, "the killed worker was replaced");
    close_join(&pool);
}

#[test]
fn huge_argument_and_result() {
    let pool = Pool::new(2).unwrap();
    let n = 64 << 20;
    let v = get(pool.apply_async(|n: usize| vec![7u8; n], n)).unwrap();
    assert_eq!(v.len(), n);
    assert!(v.iter().all(|&b| b == 7));
    let big: Vec<u8> = (0..n / 4).map(|i| i as u8).collect();
    let sum =
        get(pool.apply_async(|v: Vec<u8>| v.iter().map(|&b| b as u64).sum::<u64>(), big.clone())).unwrap();
    assert_eq!(sum, big.iter().map(|&b| b as u64).sum::<u64>());
    // The pool is fine afterwards.
    assert_eq!(pool.apply(sqr, 3).unwrap(), 9);
    close_join(&pool);
}

/// Serializes only when `ok`; deserializes only values that are not 13.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Picky {
    ok: bool,
    n: u32,
}

impl Serialize for Picky {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !self.ok {
            return Err(serde::ser::Error::custom("picky refuses"));
        }
        self.n.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n == 13 {
            return Err(serde::de::Error::custom("13 refused"));
        }
        Ok(Picky { ok: true, n })
    }
}

#[test]
fn encode_and_decode_errors_fail_one_job_only() {
    let pool = Pool::new(1).unwrap();
    let pid = pool.apply(pid_of, ()).unwrap();
    // An argument that cannot be encoded fails at once, in the caller.
    let r = pool.apply_async(|p: Picky| p.n, Picky { ok: false, n: 1 });
    assert!(r.ready(), "failed before submission");
    assert!(matches!(get(r), Err(TaskError::Encode(_))));
    let r = pool.map_async(
        |p: Picky| p.n,
        [Picky { ok: true, n: 1 }, Picky { ok: false, n: 2 }],
    );
    assert!(matches!(get(r), Err(TaskError::Encode(_))));
    // A result that cannot be encoded (in the worker).
    let r = pool.apply_async(|n: u32| Picky { ok: n != 0, n }, 0);
    assert!(matches!(get(r), Err(TaskError::Encode(_))));
    // A result that cannot be decoded (in the caller).
    let r = pool.apply_async(|n: u32| Picky { ok: true, n }, 13);
    assert!(matches!(get(r), Err(TaskError::Decode(_))));
    // An argument that cannot be decoded (in the worker).
    let r = pool.apply_async(|p: Picky| p.n, Picky { ok: true, n: 13 });
    assert!(matches!(get(r), Err(TaskError::Decode(_))));
    let r = pool.apply_async(|n: u32| Picky { ok: true, n }, 5);
    assert_eq!(get(r).unwrap(), Picky { ok: true, n: 5 });
    assert_eq!(pool.apply(pid_of, ()).unwrap(), pid, "no worker was lost");
    close_join(&pool);
}

static INIT_VALUE: AtomicU32 = AtomicU32::new(0);

#[test]
fn initializer_runs_in_each_worker() {
    let pool = Pool::builder()
        .processes(2)
        .initializer_with(|v: u32| INIT_VALUE.store(v, Ordering::SeqCst), 42)
        .build()
        .unwrap();
    let got = get(pool.map_async_chunked(|_: u32| INIT_VALUE.load(Ordering::SeqCst), 0..20, 1)).unwrap();
    assert!(got.iter().all(|&v| v == 42), "{got:?}");
    assert_eq!(INIT_VALUE.load(Ordering::SeqCst), 0, "not run in the parent");
    close_join(&pool);
}

#[test]
fn a_panicking_initializer_fails_tasks_instead_of_hanging() {
    let pool = Pool::builder()
        .processes(1)
        .initializer(|| panic!("no init for you"))
        .build()
        .unwrap();
    match get(pool.apply_async(sqr, 2)) {
        Err(TaskError::WorkerStart(m)) => assert!(m.contains("before it was ready"), "{m}"),
        other => panic!("expected WorkerStart, got {other:?}"),
    }
    pool.terminate();
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn block_on<F: Future + Unpin>(mut f: F, timeout: Duration) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let t = Instant::now();
    loop {
        if let Poll::Ready(v) = std::pin::Pin::new(&mut f).poll(&mut cx) {
            return v;
        }
        assert!(t.elapsed() < timeout, "future not ready in time");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

#[test]
fn async_result_is_a_future() {
    let pool = Pool::new(2).unwrap();
    // Pending at first (the task sleeps), then ready once the worker is done.
    assert_eq!(
        block_on(
            pool.apply_async(
                |x: i64| {
                    std::thread::sleep(Duration::from_millis(100));
                    x + 1
                },
                41
            ),
            LONG
        )
        .unwrap(),
        42
    );
    let failed = block_on(pool.apply_async(|()| -> i64 { panic!("in a future") }, ()), LONG);
    assert_eq!(
        failed.unwrap_err(),
        TaskError::Panicked {
            message: "in a future".into()
        }
    );
    close_join(&pool);
}

#[test]
fn public_types_are_send_and_sync() {
    fn both<T: Send + Sync>() {}
    both::<Pool>();
    both::<AsyncResult<String>>();
    both::<TaskError>();
    both::<PoolError>();
    both::<multiproc::PoolBuilder>();
}

#[test]
fn a_pool_is_shared_by_threads() {
    let pool = Pool::new(2).unwrap();
    std::thread::scope(|s| {
        for t in 0..4i64 {
            let pool = &pool;
            s.spawn(move || {
                for i in 0..50 {
                    assert_eq!(
                        get(pool.apply_async(sqr, t * 100 + i)).unwrap(),
                        (t * 100 + i).pow(2)
                    );
                }
            });
        }
    });
    close_join(&pool);
}

#[test]
fn spawn_start_method_works() {
    let pool = Pool::builder()
        .processes(2)
        .start_method(multiproc::StartMethod::Spawn)
        .max_tasks_per_child(2)
        .build()
        .unwrap();
    let got = get(pool.map_async_chunked(sqr, 0..10, 1)).unwrap();
    assert_eq!(got, (0..10).map(|x| x * x).collect::<Vec<_>>());
    close_join(&pool);
}

#[test]
fn fork_start_method_is_a_clear_error_not_a_hang() {
    // Workers are started from the pool's own thread, so the process has more
    // than one thread and `Fork` refuses.
    match Pool::builder()
        .processes(1)
        .start_method(multiproc::StartMethod::Fork)
        .build()
    {
        Err(PoolError::Spawn(e)) => assert!(e.to_string().contains("Fork"), "{e}"),
        other => panic!("expected a spawn error, got {other:?}"),
    }
}

/// In a child process: starts a pool, writes its worker pids to `path`, waits.
fn pool_owner(path: PathBuf) {
    let pool = Pool::new(2).unwrap();
    let pids = worker_pids(&pool, 8, 30);
    let text: Vec<String> = pids.iter().map(u32::to_string).collect();
    std::fs::write(&path, text.join(" ")).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn workers_die_with_the_process_that_owns_the_pool() {
    let path = tmp("owner");
    let owner = multiproc::Process::spawn(path.clone(), pool_owner).unwrap();
    let t = Instant::now();
    let pids: Vec<u32> = loop {
        if let Ok(s) = std::fs::read_to_string(&path) {
            let v: Vec<u32> = s.split_whitespace().filter_map(|w| w.parse().ok()).collect();
            if v.len() == 2 {
                break v;
            }
        }
        assert!(t.elapsed() < LONG, "the pool owner never reported");
        std::thread::sleep(Duration::from_millis(10));
    };
    owner.kill().unwrap();
    assert!(owner.join_timeout(LONG).is_err(), "killed, so no result");
    for pid in pids {
        assert!(wait_gone(pid), "worker {pid} outlived its pool's process");
    }
    let _ = std::fs::remove_file(path);
}
