//! The seed's process-pool example, ported: a pool of 5 workers, 20
//! `apply_async` tasks that each sleep 0.1 s and report the pid that ran them,
//! then `close` and `join`.
//!
//! ```python
//! def func(i):
//!     time.sleep(0.1)
//!     print(os.getpid(), i)
//!
//! if __name__ == '__main__':
//!     p = Pool(5)
//!     for i in range(20):
//!         p.apply_async(func, args=(i,))
//!     p.close()
//!     p.join()
//! ```
//!
//! Run with `cargo run --example pool`. With 5 workers the 20 tasks take about
//! 4 x 0.1 s, and 5 distinct pids print.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use multiproc::Pool;

fn func(i: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(100));
    let pid = std::process::id();
    println!("{pid} {i}");
    pid
}

/// Runs the example (also called by the tour).
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let p = Pool::new(5)?;
    let results: Vec<_> = (0..20).map(|i| p.apply_async(func, i)).collect();
    p.close();
    p.join()?;
    // Unlike Python, the results are still there after join (and failures
    // would show here instead of vanishing).
    let mut pids = BTreeSet::new();
    for r in results {
        pids.insert(r.get()?);
    }
    println!(
        "20 tasks on {} worker processes in {:.2} s",
        pids.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

// `main` is unused when the tour includes this file as a module.
#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run()
}
