//! Bounded, adaptive busy-polling for a reply (client) or the next request
//! (server).
//!
//! A blocking round trip between two processes costs two wake-ups, and on a
//! virtual machine a sleeping CPU takes tens of microseconds to wake: far more
//! than the work of a dict operation. So the side that waits tries a
//! non-blocking receive in a loop for a short, bounded time first (yielding the
//! CPU between attempts, so that a runnable peer on the same CPU goes first),
//! and blocks only if nothing came. The attempt that succeeds is the receive
//! itself: polling adds no system call to the message's path.
//!
//! Polling pays only when the answer comes quickly. Each [`Spin`] keeps a
//! credit: an attempt loop that gets the message restores it, one that times
//! out spends one; at zero it stops polling, and tries again once every
//! [`PROBE_EVERY`] waits, so that a pattern that changes (a quiet client
//! becoming a busy one) is noticed.
//!
//! Polling pays only on a CPU that has nothing else to run, too. When other
//! tasks are runnable (a hundred child processes starting), a yield can give
//! the CPU away for milliseconds (measured: 3 to 5 ms for a lock holder's call
//! in the seed's counter), where a sleeping thread woken by its reply would
//! run at once. A yield that takes longer than [`CONTENDED`] ends the polling
//! and spends all the credit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Timed-out loops in a row after which polling stops.
const CREDIT: u32 = 4;
/// While polling has stopped, one wait in this many polls anyway.
const PROBE_EVERY: u32 = 32;
/// A yield longer than this means the CPU is contended.
const CONTENDED: Duration = Duration::from_micros(200);

/// The adaptive state of one waiting side (shared by threads: atomics).
#[derive(Debug)]
pub(crate) struct Spin {
    credit: AtomicU32,
    skipped: AtomicU32,
    contended: Duration,
}

impl Default for Spin {
    fn default() -> Self {
        Spin {
            credit: AtomicU32::new(CREDIT),
            skipped: AtomicU32::new(0),
            contended: CONTENDED,
        }
    }
}

impl Spin {
    /// Calls `attempt` until it gives a value, for at most `max`; `None` if it
    /// never did (or polling has not paid lately: then `attempt` may not run).
    pub(crate) fn run<T>(&self, max: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
        if self.credit.load(Ordering::Relaxed) == 0
            && self.skipped.fetch_add(1, Ordering::Relaxed) % PROBE_EVERY != 0
        {
            return None;
        }
        let start = Instant::now();
        loop {
            if let Some(t) = attempt() {
                self.credit.store(CREDIT, Ordering::Relaxed);
                return Some(t);
            }
            if start.elapsed() >= max {
                let _ = self
                    .credit
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
                return None;
            }
            let before = Instant::now();
            std::thread::yield_now();
            if before.elapsed() >= self.contended {
                self.credit.store(0, Ordering::Relaxed);
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_micros(50);

    /// A `Spin` that takes no yield for contention (a busy test machine).
    fn spin() -> Spin {
        Spin {
            contended: Duration::MAX,
            ..Spin::default()
        }
    }

    /// Runs one wait whose attempts never succeed; true if it polled at all.
    fn fruitless(s: &Spin) -> bool {
        let mut ran = false;
        assert!(s
            .run(SHORT, || {
                ran = true;
                None::<()>
            })
            .is_none());
        ran
    }

    #[test]
    fn polling_stops_when_it_does_not_pay_and_resumes_when_it_does() {
        let s = spin();
        for _ in 0..CREDIT {
            assert!(fruitless(&s));
        }
        // Out of credit: one wait in PROBE_EVERY polls.
        let polled = (0..PROBE_EVERY * 3).filter(|_| fruitless(&s)).count();
        assert_eq!(polled, 3);
        // A probe that succeeds restores the credit: every wait polls again.
        let mut hit = false;
        for _ in 0..PROBE_EVERY {
            if s.run(SHORT, || Some(())).is_some() {
                hit = true;
                break;
            }
        }
        assert!(hit);
        for _ in 0..CREDIT {
            assert!(fruitless(&s));
        }
        assert!(!fruitless(&s));
    }

    #[test]
    fn a_wait_polls_until_the_attempt_succeeds_or_time_is_up() {
        let s = spin();
        let mut n = 0;
        assert_eq!(
            s.run(Duration::from_secs(10), || {
                n += 1;
                (n == 5).then_some(n)
            }),
            Some(5)
        );
        let t = Instant::now();
        assert!(s.run(Duration::from_millis(2), || None::<()>).is_none());
        assert!(t.elapsed() >= Duration::from_millis(2));
    }

    #[test]
    fn a_long_yield_ends_polling_and_spends_the_credit() {
        let s = Spin {
            contended: Duration::ZERO,
            ..Spin::default()
        };
        let mut n = 0;
        assert!(s
            .run(Duration::from_secs(10), || {
                n += 1;
                None::<()>
            })
            .is_none());
        assert_eq!(n, 1, "polling went on after a contended yield");
        assert_eq!(s.credit.load(Ordering::Relaxed), 0);
    }
}
