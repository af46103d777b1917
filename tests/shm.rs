//! Value, Array and SharedMemory across real processes (CPython's `_TestValue`,
//! `_TestArray`, `_TestSharedMemory` behaviours), plus a SIGKILLed holder.
use std::io::ErrorKind;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use multiproc::{Array, Event, LockError, Process, SharedMemory, Value};

const T: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
    tag: u32,
    _pad: u32,
}

#[test]
fn values_of_several_types_written_by_child_are_seen_by_parent() {
    let a = Value::new(25i32).unwrap();
    let b = Value::new(1.25f64).unwrap();
    let c = Value::new(b'x').unwrap();
    let d = Value::new(Point {
        x: 1.0,
        y: 2.0,
        tag: 3,
        _pad: 0,
    })
    .unwrap();
    let p = Process::spawn(
        (a.clone(), b.clone(), c.clone(), d.clone()),
        |(a, b, c, d): (Value<i32>, Value<f64>, Value<u8>, Value<Point>)| {
            let seen = (
                a.load().unwrap(),
                b.load().unwrap(),
                c.load().unwrap(),
                d.load().unwrap().tag,
            );
            a.store(-a.load().unwrap()).unwrap();
            *b.lock().unwrap() *= 2.0;
            c.store(b'y').unwrap();
            d.lock().unwrap().y = 9.5;
            seen
        },
    )
    .unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some((25, 1.25, b'x', 3)));
    assert_eq!(a.load().unwrap(), -25);
    assert_eq!(b.load().unwrap(), 2.5);
    assert_eq!(c.load().unwrap(), b'y');
    assert_eq!(
        d.load().unwrap(),
        Point {
            x: 1.0,
            y: 9.5,
            tag: 3,
            _pad: 0
        }
    );
    assert_eq!(Value::<u64>::zeroed().unwrap().load().unwrap(), 0);
}

#[test]
fn eight_processes_times_10k_increments_of_a_value_lose_nothing() {
    let v = Value::new(0u64).unwrap();
    let ps: Vec<_> = (0..8)
        .map(|_| {
            Process::spawn(v.clone(), |v: Value<u64>| {
                for _ in 0..10_000 {
                    *v.lock().unwrap() += 1;
                }
            })
            .unwrap()
        })
        .collect();
    for p in ps {
        p.join_timeout(Duration::from_secs(120)).unwrap().unwrap();
    }
    assert_eq!(v.load().unwrap(), 80_000);
}

#[test]
fn value_holder_sigkilled_mid_update_is_reported_with_the_data() {
    let v = Value::new([0u32; 2]).unwrap();
    let held = Event::new().unwrap();
    let p = Process::spawn(
        (v.clone(), held.clone()),
        |(v, held): (Value<[u32; 2]>, Event)| {
            let mut g = v.lock().unwrap();
            g[0] = 1; // half of a two-field update
            std::mem::forget(g);
            held.set();
            std::thread::sleep(Duration::from_secs(60));
        },
    )
    .unwrap();
    assert!(held.wait_timeout(T));
    assert!(matches!(v.try_lock(), Err(LockError::WouldBlock)));
    p.kill().unwrap();
    let _ = p.join_timeout(T);
    match v.lock_timeout(T) {
        Err(LockError::OwnerDied(mut g)) => {
            assert_eq!(*g, [1, 0], "the half-done update is visible for repair");
            g[1] = 1;
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert_eq!(v.load().unwrap(), [1, 1], "reported once, then clean");
}

#[test]
fn array_written_by_child_is_seen_by_parent() {
    let arr = Array::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
    let zeros = Array::<f32>::zeroed(4).unwrap();
    let p = Process::spawn(
        (arr.clone(), zeros.clone()),
        |(arr, z): (Array<i64>, Array<f32>)| {
            let sum: i64 = arr.lock().unwrap().iter().sum();
            for x in arr.lock().unwrap().iter_mut() {
                *x *= *x;
            }
            z.lock().unwrap()[3] = 0.5;
            (sum, arr.len(), z.to_vec().unwrap()[0])
        },
    )
    .unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some((45, 10, 0.0)));
    assert_eq!(
        arr.to_vec().unwrap(),
        (0..10).map(|x| x * x).collect::<Vec<i64>>()
    );
    assert_eq!(zeros.to_vec().unwrap(), [0.0, 0.0, 0.0, 0.5]);
}

#[test]
fn anonymous_shared_memory_shared_with_a_child() {
    let shm = SharedMemory::create(None, 4096).unwrap();
    assert_eq!(shm.name(), None);
    shm.write_at(0, b"from parent").unwrap();
    let p = Process::spawn(shm.clone(), |s: SharedMemory| {
        let mut buf = [0u8; 11];
        s.read_at(0, &mut buf).unwrap();
        s.write_at(4000, b"from child").unwrap();
        (buf.to_vec(), s.size())
    })
    .unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some((b"from parent".to_vec(), 4096)));
    let mut buf = [0u8; 10];
    shm.read_at(4000, &mut buf).unwrap();
    assert_eq!(&buf, b"from child");
    shm.unlink().unwrap(); // nothing to remove for an anonymous block
}

fn unique(tag: &str) -> String {
    format!("multiproc-test-{tag}-{}", std::process::id())
}

#[test]
fn named_shared_memory_opened_by_name_in_another_process() {
    let name = unique("open");
    let shm = SharedMemory::create(Some(&name), 100).unwrap();
    assert_eq!(shm.name(), Some(name.as_str()));
    shm.write_at(10, b"abc").unwrap();
    // The child gets only the name, not the handle.
    let p = Process::spawn(name.clone(), |name: String| {
        let s = SharedMemory::open(&name).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 3];
        s.read_at(10, &mut buf).map_err(|e| e.to_string())?;
        s.write_at(50, b"xyz").map_err(|e| e.to_string())?;
        Ok::<_, String>((buf, s.size()))
    })
    .unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(Ok((*b"abc", 100))));
    let mut buf = [0u8; 3];
    shm.read_at(50, &mut buf).unwrap();
    assert_eq!(&buf, b"xyz");
    assert_eq!(
        SharedMemory::create(Some(&name), 100).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    shm.unlink().unwrap();
    assert_eq!(SharedMemory::open(&name).unwrap_err().kind(), ErrorKind::NotFound);
    // Unlinked names do not take the memory away from open handles.
    shm.read_at(50, &mut buf).unwrap();
    assert_eq!(&buf, b"xyz");
}

#[test]
fn dropping_handles_never_unlinks_a_name() {
    let name = unique("drop");
    let shm = SharedMemory::create(Some(&name), 64).unwrap();
    shm.write_at(0, b"kept").unwrap();
    // A child that opens and drops the segment (CPython's resource tracker
    // would unlink it here, gh-82300).
    let p = Process::spawn(name.clone(), |n: String| SharedMemory::open(&n).map(drop).is_ok()).unwrap();
    assert_eq!(p.join_timeout(T).unwrap(), Some(true));
    drop(shm);
    let again = SharedMemory::open(&name).unwrap();
    let mut buf = [0u8; 4];
    again.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"kept");
    SharedMemory::unlink_name(&name).unwrap();
    assert_eq!(
        SharedMemory::unlink_name(&name).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn named_segment_left_by_a_killed_creator_can_be_removed() {
    let name = unique("crash");
    let p = Process::spawn(name.clone(), |n: String| {
        let s = SharedMemory::create(Some(&n), 32).unwrap();
        s.write_at(0, b"orphan").unwrap();
        std::mem::forget(s);
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    let mut left = None;
    for _ in 0..2000 {
        if let Ok(s) = SharedMemory::open(&name) {
            left = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    p.kill().unwrap();
    let _ = p.join_timeout(T);
    let left = left.expect("the child created the segment");
    let mut buf = [0u8; 6];
    left.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"orphan");
    assert!(
        SharedMemory::open(&name).is_ok(),
        "documented: a crashed creator leaves its name behind"
    );
    SharedMemory::unlink_name(&name).unwrap();
    assert_eq!(SharedMemory::open(&name).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn invalid_sizes_and_names_are_clear_errors() {
    assert_eq!(
        SharedMemory::create(None, 0).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        SharedMemory::create(Some("a/b"), 8).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        SharedMemory::open("").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        SharedMemory::open(&unique("never")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}
