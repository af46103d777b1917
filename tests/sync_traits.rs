//! Every handle is `Clone + Send + Sync + Serialize + Deserialize`; guards are `!Send`.
use multiproc::{
    Array, Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, SharedMemory, Value,
};

fn handle<
    T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug + 'static,
>() {
}

#[test]
fn handles_are_clone_send_sync_serde() {
    handle::<Lock>();
    handle::<RLock>();
    handle::<Semaphore>();
    handle::<BoundedSemaphore>();
    handle::<Event>();
    handle::<Condition>();
    handle::<Barrier>();
    handle::<Value<u64>>();
    handle::<Array<f32>>();
    handle::<SharedMemory>();
}

#[test]
fn errors_are_errors_without_debug_payloads() {
    struct NoDebug;
    fn error<E: std::error::Error + Send + Sync + 'static>() {}
    error::<multiproc::LockError<NoDebug>>();
    error::<multiproc::ReleaseError>();
    error::<multiproc::BrokenBarrierError>();
}
