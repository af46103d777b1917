//! The producer/consumer model with a `JoinableQueue` (the seed's first example).
//!
//! Two daemon consumers eat from the queue forever and mark each item done;
//! two producers make 10 items each and then `join` the queue, which returns
//! once every item they (and the other producer) put has been eaten. The main
//! process joins the producers and exits; the daemon consumers die with it.
//!
//! Run it with `cargo run --example producer_consumer`.

use std::time::Duration;

use multiproc::{JoinableQueue, Process, Queue};

/// A random pause of up to `max_ms` (the seed sleeps `random.random()` seconds;
/// shorter here so the example runs in about a second).
fn pause(max_ms: u32) {
    let r = getrandom::u32().unwrap_or(0) % max_ms.max(1);
    std::thread::sleep(Duration::from_millis(u64::from(r)));
}

/// Eats forever: a daemon process, killed when the main process exits.
fn consumer((q, eaten, name): (JoinableQueue<String>, Queue<String>, String)) {
    while let Ok(food) = q.get() {
        println!("{name} ate {food}");
        pause(100);
        // Record it (so main can check that every item was eaten exactly once),
        // then tell the queue this task is done.
        eaten.put(food).expect("record what was eaten");
        q.task_done().expect("one task_done per item taken");
    }
}

/// Makes `n` items, then waits until all of them have been eaten.
fn producer((q, name, food, n): (JoinableQueue<String>, String, String, u32)) {
    for i in 0..n {
        pause(100);
        let item = format!("{food}{i}");
        println!("{name} made {item}");
        q.put(item).expect("put");
    }
    q.join().expect("join the queue");
}

/// Runs the example (also called by the tour).
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let q: JoinableQueue<String> = JoinableQueue::new()?;
    let eaten: Queue<String> = Queue::new()?;

    for name in ["alex", "wusir"] {
        Process::builder()
            .name(name)
            .daemon(true)
            .spawn((q.clone(), eaten.clone(), name.to_string()), consumer)?;
    }
    let p1 = Process::spawn(
        (q.clone(), "taibai".to_string(), "slop".to_string(), 10),
        producer,
    )?;
    let p2 = Process::spawn(
        (q.clone(), "egon".to_string(), "fishbone".to_string(), 10),
        producer,
    )?;
    p1.join_timeout(Duration::from_secs(60))?
        .ok_or("producer 1 timed out")?;
    p2.join_timeout(Duration::from_secs(60))?
        .ok_or("producer 2 timed out")?;

    // The producers returned from `join`, so every item has been eaten.
    let mut all = Vec::new();
    while let Ok(food) = eaten.try_get() {
        all.push(food);
    }
    all.sort();
    let mut expected: Vec<String> = (0..10)
        .flat_map(|i| [format!("slop{i}"), format!("fishbone{i}")])
        .collect();
    expected.sort();
    assert_eq!(all, expected, "every item eaten exactly once");
    println!(
        "all {} items eaten exactly once; the daemon consumers die with main",
        all.len()
    );
    Ok(())
}

// `main` is unused when the tour includes this file as a module.
#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run()
}
