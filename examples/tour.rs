//! A tour of multiproc through the scenarios of the tutorial it was born from
//! (processes; producer and consumers over a JoinableQueue; a Pipe until EOF;
//! a shared counter under a lock; a pool). Run it with
//! `cargo run --release --example tour`.

use std::time::{Duration, Instant};

use multiproc::{Process, ProcessError, StartMethod};

// The tour runs the seed's examples, each kept in its own example file.
#[path = "lock_counter.rs"]
mod lock_counter;
#[path = "manager_counter.rs"]
mod manager_counter;
#[path = "pipe_eof.rs"]
mod pipe_eof;
#[path = "pool.rs"]
mod pool;
#[path = "producer_consumer.rs"]
mod producer_consumer;

fn section(title: &str) {
    println!("\n=== {title} ===");
}

fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

/// Processes: start, return values, failures reported as values.
fn processes() -> Result<(), ProcessError> {
    section("processes");
    for method in [StartMethod::ForkServer, StartMethod::Spawn] {
        let t = Instant::now();
        let p = Process::builder().start_method(method).spawn(30u64, fib)?;
        let pid = p.pid();
        let r = p.join()?;
        println!(
            "{method:?}: child {pid} computed fib(30) = {r} in {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let p = Process::spawn((), |()| -> u32 { panic!("a bug in the child") })?;
    println!("a panicking child: {}", p.join().unwrap_err());
    let p = Process::spawn(60_000u64, |ms| std::thread::sleep(Duration::from_millis(ms)))?;
    p.kill()?;
    println!(
        "a killed child: {} (exitcode {})",
        p.join().unwrap_err(),
        p.exit_status().map_or(0, |s| s.exitcode())
    );
    Ok(())
}

/// What CPython's Pool cannot do: lose a worker and go on.
fn failures_in_a_pool() -> Result<(), Box<dyn std::error::Error>> {
    section("a pool that never hangs");
    let pool = multiproc::Pool::new(2)?;
    println!(
        "a task that aborts: {}",
        pool.apply(|()| -> u32 { std::process::abort() }, ()).unwrap_err()
    );
    println!(
        "a task that panics: {}",
        pool.apply(|()| -> u32 { panic!("bad input") }, ()).unwrap_err()
    );
    println!("the pool goes on: {:?}", pool.map(|x: u64| x * x, 1..=5)?);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "multiproc tour: {} CPUs, parent pid {}",
        multiproc::cpu_count(),
        std::process::id()
    );
    processes()?;
    section("producer and consumers over a JoinableQueue (examples/producer_consumer.rs)");
    producer_consumer::run()?;
    section("a Pipe until EOF (examples/pipe_eof.rs)");
    pipe_eof::run()?;
    section("100 processes decrement a shared Value under a Lock (examples/lock_counter.rs)");
    lock_counter::run()?;
    section("a manager dict shared by 100 processes, with a lock and with update_with (examples/manager_counter.rs)");
    manager_counter::run()?;
    section("Pool(5), 20 apply_async, close, join (examples/pool.rs)");
    pool::run()?;
    failures_in_a_pool()?;
    println!("\ntour finished");
    Ok(())
}
