//! Deadlines on the monotonic clock, as crossbeam-channel does it: a timeout
//! becomes an absolute `Instant` with `checked_add`, and an overflow means "forever".

use std::time::{Duration, Instant};

/// An absolute point on the monotonic clock, or "never".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline: wait forever.
    pub(crate) const NEVER: Deadline = Deadline(None);

    /// A deadline `timeout` from now; an overflowing timeout is "never".
    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(timeout))
    }

    /// `after(t)` for `Some(t)`, `NEVER` for `None`.
    pub(crate) fn from_timeout(timeout: Option<Duration>) -> Deadline {
        timeout.map_or(Deadline::NEVER, Deadline::after)
    }

    /// Time left, `None` for "never"; zero once passed.
    pub(crate) fn remaining(self) -> Option<Duration> {
        self.0.map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// True once the deadline has passed (never for `NEVER`).
    pub(crate) fn passed(self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }
}
