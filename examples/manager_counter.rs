//! The seed program's "数据共享" (data sharing) example, in Rust.
//!
//! Python:
//! ```python
//! def worker(d, key, value, lock):
//!     with lock:
//!         d[key] -= value
//!
//! if __name__ == '__main__':
//!     lock = Lock()
//!     manager = Manager()
//!     d = manager.dict({'count': 100})
//!     procs = [Process(target=worker, args=(d, 'count', 1, lock)) for _ in range(100)]
//!     for p in procs: p.start()
//!     for p in procs: p.join()
//!     print(d)
//! ```
//!
//! Here, twice: once with a manager lock around a get and a set (as the seed
//! does), once with `update_with`, an atomic update run by the server, which
//! needs no lock. Both end at 0.

use std::time::Duration;

use multiproc::{Dict, LockProxy, Manager, ManagerError, Process};

const WORKERS: usize = 100;

// A child's result travels back to the parent, so it is a serde type: the
// error as text.
fn with_lock((d, key, value, lock): (Dict<String, i64>, String, i64, LockProxy)) -> Result<(), String> {
    let run = || -> Result<(), ManagerError> {
        let _guard = lock.acquire()?;
        let n = d.get(&key)?.ok_or(ManagerError::KeyNotFound)?;
        d.insert(key.clone(), n - value)?;
        Ok(())
    };
    run().map_err(|e| e.to_string())
}

fn with_update((d, key): (Dict<String, i64>, String)) -> Result<(), String> {
    d.update_with(&key, |n: &mut i64| *n -= 1)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Runs the example (also called by the tour).
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let manager = Manager::start()?;
    let d: Dict<String, i64> = manager.dict()?;
    let lock = manager.lock()?;

    d.insert("count".into(), WORKERS as i64)?;
    let procs = (0..WORKERS)
        .map(|_| Process::spawn((d.clone(), "count".to_string(), 1, lock.clone()), with_lock))
        .collect::<Result<Vec<_>, _>>()?;
    for p in procs {
        p.join_timeout(Duration::from_secs(60))?
            .ok_or("a worker hung")??;
    }
    println!("with a lock:       {:?}", d.to_hashmap()?);

    d.insert("count".into(), WORKERS as i64)?;
    let procs = (0..WORKERS)
        .map(|_| Process::spawn((d.clone(), "count".to_string()), with_update))
        .collect::<Result<Vec<_>, _>>()?;
    for p in procs {
        p.join_timeout(Duration::from_secs(60))?
            .ok_or("a worker hung")??;
    }
    println!("with update_with:  {:?}", d.to_hashmap()?);
    assert_eq!(d.get("count")?, Some(0));
    manager.shutdown()?;
    Ok(())
}

// `main` is unused when the tour includes this file as a module.
#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run()
}
