//! 1,000 sequential spawns leave no zombie and no leaked descriptor.
//! (Alone in its test binary so that no other test opens descriptors meanwhile.)

use std::time::Duration;

use multiproc::{Process, StartMethod};

mod common;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Our children that are zombies (ended, not reaped).
fn zombie_children() -> Vec<u32> {
    common::proc_children(std::process::id(), |state| state == "Z")
}

#[test]
fn thousand_spawns_leave_no_zombie_and_no_fd() {
    // Warm up: the fork server and lazily opened descriptors exist from here on.
    for m in [StartMethod::ForkServer, StartMethod::Spawn] {
        let p = Process::builder().start_method(m).spawn(1u32, |x| x + 1).unwrap();
        assert_eq!(p.join_timeout(Duration::from_secs(30)).unwrap(), Some(2));
    }
    multiproc::active_children();
    let before = open_fds();
    for i in 0..1000u32 {
        // Every 10th through Spawn (a direct child), the rest through the fork server.
        let m = if i % 10 == 0 {
            StartMethod::Spawn
        } else {
            StartMethod::ForkServer
        };
        let p = Process::builder().start_method(m).spawn(i, |x| x * 3).unwrap();
        assert_eq!(p.join_timeout(Duration::from_secs(30)).unwrap(), Some(i * 3));
    }
    // Dropped without join: reaped by the library all the same.
    for _ in 0..20 {
        drop(
            Process::builder()
                .start_method(StartMethod::Spawn)
                .spawn((), |()| ())
                .unwrap(),
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !multiproc::active_children().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(multiproc::active_children().is_empty());
    assert_eq!(zombie_children(), Vec::<u32>::new());
    assert_eq!(open_fds(), before, "descriptors leaked");
}
