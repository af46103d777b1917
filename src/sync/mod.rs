//! Process-shared synchronization: `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`,
//! `Event`, `Condition`, `Barrier`.

pub(crate) mod raw_mutex;
