use multiproc::{Process, StartMethod};
use std::time::Duration;

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn each_method_returns() {
    for m in [StartMethod::ForkServer, StartMethod::Spawn] {
        let p = Process::builder().start_method(m).spawn(9u64, square).unwrap();
        let r = p.join_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(r, Some(81), "{m:?}");
    }
}

#[test]
fn panic_comes_back() {
    let p = Process::spawn(3u32, |x: u32| -> u32 { panic!("boom {x}") }).unwrap();
    match p.join_timeout(Duration::from_secs(20)) {
        Err(multiproc::ProcessError::Panicked { message }) => assert_eq!(message, "boom 3"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn fork_inside_a_single_threaded_child() {
    fn outer(_: ()) -> Result<u64, String> {
        let p = Process::builder()
            .start_method(StartMethod::Fork)
            .spawn(5u64, |x| x + 1)
            .map_err(|e| e.to_string())?;
        p.join().map_err(|e| e.to_string())
    }
    let p = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn((), outer)
        .unwrap();
    assert_eq!(p.join_timeout(Duration::from_secs(20)).unwrap(), Some(Ok(6)));
}
