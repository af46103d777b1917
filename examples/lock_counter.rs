//! The lock half of the tutorial's third example: 100 processes each take a
//! shared `Lock` and decrement a shared counter; the result is 0.
//!
//! Python:
//! ```python
//! def work(d, lock):
//!     with lock:
//!         d['count'] -= 1
//! ```
//! Here the counter is a `Value<i64>` in shared memory (the seed used a manager
//! dict; see the manager example for that half). Run with
//! `cargo run --release --example lock_counter`.

use std::time::{Duration, Instant};

use multiproc::{Lock, LockError, Process, Value};

/// One worker: decrement the counter under the lock.
fn work((count, lock): (Value<i64>, Lock)) {
    let _guard = match lock.acquire() {
        Ok(g) => g,
        // A previous holder was killed mid-update: the count may be off by its
        // decrement, but the lock is ours and usable.
        Err(LockError::OwnerDied(g)) => g,
        Err(e) => panic!("cannot take the lock: {e}"),
    };
    // Two separate steps on purpose (read, then write): only the Lock makes them atomic.
    let n = count
        .load()
        .unwrap_or_else(|e| e.into_inner().unwrap_or_default());
    let _ = count.store(n - 1);
}

/// Runs the example (also called by the tour).
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let lock = Lock::new()?;
    let count = Value::new(100i64)?;
    let workers = (0..100)
        .map(|_| Process::spawn((count.clone(), lock.clone()), work))
        .collect::<Result<Vec<_>, _>>()?;
    for w in workers {
        w.join_timeout(Duration::from_secs(60))?
            .ok_or("a worker did not finish in 60 s")?;
    }
    let left = count.load().map_err(|e| e.to_string())?;
    println!(
        "count = {left} after 100 processes ({:.1} ms)",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(left, 0);
    Ok(())
}

// `main` is unused when the tour includes this file as a module.
#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run()
}
