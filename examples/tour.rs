//! A tour of multiproc through the scenarios of the tutorial it was born from
//! (processes; producer and consumers over a JoinableQueue; a Pipe until EOF;
//! a shared counter under a lock; a pool). Run it with
//! `cargo run --release --example tour`.

use std::time::{Duration, Instant};

use multiproc::{Process, ProcessError, StartMethod};

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "multiproc tour: {} CPUs, parent pid {}",
        multiproc::cpu_count(),
        std::process::id()
    );
    processes()?;
    println!("\ntour finished");
    Ok(())
}
