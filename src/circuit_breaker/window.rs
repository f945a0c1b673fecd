//! The sliding windows a closed breaker keeps score in: the last N outcomes (the shared
//! [`CountWindow`] ring, in `crate::count_window`), or the outcomes of the last T seconds
//! (stamped buckets, here).
//!
//! Both are plain atomics with no lock: recording is one or two read-modify-writes, and a
//! success that changes nothing (into a full window holding no failure and no slow call, or a
//! window with nothing to forget) writes nothing at all, so a healthy breaker shared by many
//! cores is read-only on its hot path.
//!
//! Evaluation reads the whole window: `⌈N/64⌉` words twice for the ring, `B` words for the
//! buckets. It runs only after an outcome that can raise a rate (a failure or a slow call), or
//! after a success that can bring the window to `minimum_calls` while it holds failures.
//!
//! Outcomes recorded at the same time that together reach a threshold do trip the breaker: the
//! breaker puts a `SeqCst` fence between recording and evaluating, so of two concurrent
//! recorders the later sees both writes (a loom model checks it).
//!
//! Races, and what they cost (all bounded, none lasting), beside the ring's own (see
//! `crate::count_window`):
//!
//! - In the time window, a success that brings the window to `minimum_calls` decides whether to
//!   evaluate before any fence (fencing every success would cost every call); racing a failure
//!   recorded at the same moment, both may miss the other, and the breaker then trips on the next
//!   outcome instead. The count window's trigger (the record index) is exact.
//! - A recorder that read the state word just before a transition can write one outcome into
//!   the window of the next closed period, which is otherwise reset before it starts.
//! - A bucket holds 16-bit counts: past 64 511 calls in one bucket, further calls in that bucket
//!   are not counted (the rates are by then well sampled).

use crate::clock::{Epoch, Instant};
pub(crate) use crate::count_window::{CountWindow, Counts};
use crate::ring::StampedRing;
use crate::sync::{AtomicU64, Ordering};

const CALLS_SHIFT: u32 = 32;
const FAILURES_SHIFT: u32 = 16;
const FIELD_MASK: u64 = 0xFFFF;
/// Beyond this many calls a bucket stops counting, leaving room for concurrent adds that
/// passed the check before it filled.
const BUCKET_SATURATED: u64 = 0xFFFF - 1024;

/// The outcomes of the last `buckets × bucket length`: a [`StampedRing`] whose payloads are
/// `[calls 16 | failures 16 | slow 16]` (16-bit stamps).
pub(crate) struct TimeWindow {
    ring: StampedRing,
    buckets: u64,
    /// The window may hold a failure or slow call while the epoch is below this.
    dirty_until: AtomicU64,
}

impl TimeWindow {
    pub(crate) fn new(epoch: Epoch, bucket_nanos: u64, buckets: u32) -> Self {
        Self {
            ring: StampedRing::new(epoch, bucket_nanos, buckets, 16),
            buckets: u64::from(buckets.max(1)),
            dirty_until: AtomicU64::new(0),
        }
    }

    /// Records one outcome at `now`. Returns whether the window should be evaluated now.
    #[inline]
    pub(crate) fn record(&self, now: Instant, failed: bool, slow: bool) -> bool {
        let delta = (1 << CALLS_SHIFT) | (u64::from(failed) << FAILURES_SHIFT) | u64::from(slow);
        // A saturated bucket drops the outcome: the window already holds enough calls to judge.
        let (epoch, _) = self.ring.add(now, delta, |payload| {
            (payload >> CALLS_SHIFT) & FIELD_MASK >= BUCKET_SATURATED
        });
        // Relaxed: a monotonic hint read only to decide whether to evaluate.
        if failed || slow {
            self.dirty_until
                .fetch_max(epoch + self.buckets, Ordering::Relaxed);
            return true;
        }
        epoch < self.dirty_until.load(Ordering::Relaxed)
    }

    pub(crate) fn counts(&self, now: Instant) -> Counts {
        let mut counts = Counts::default();
        self.ring.for_each_current(now, |payload| {
            counts.calls += (payload >> CALLS_SHIFT) & FIELD_MASK;
            counts.failures += (payload >> FAILURES_SHIFT) & FIELD_MASK;
            counts.slow += payload & FIELD_MASK;
        });
        counts
    }

    /// Empties the window (see [`CountWindow::reset`] for the ordering).
    pub(crate) fn reset(&self) {
        self.ring.reset();
        self.dirty_until.store(0, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use std::time::Duration;

    use super::*;

    fn time_window(buckets: u32, bucket: Duration) -> (TimeWindow, Instant) {
        let base = Instant::now();
        let nanos = u64::try_from(bucket.as_nanos()).unwrap();
        (TimeWindow::new(Epoch::new(base), nanos, buckets), base)
    }

    #[test]
    fn a_busy_bucket_counts_every_call_up_to_its_saturation() {
        let (window, base) = time_window(2, Duration::from_secs(1));
        for i in 0..10_000u64 {
            window.record(base, i % 4 == 0, false);
        }
        assert_eq!(
            window.counts(base),
            Counts {
                calls: 10_000,
                failures: 2_500,
                slow: 0
            }
        );
        for _ in 0..100_000 {
            window.record(base, false, false);
        }
        assert_eq!(
            window.counts(base).calls,
            BUCKET_SATURATED,
            "then it stops counting"
        );
    }

    #[test]
    fn buckets_expire_as_time_passes() {
        let second = Duration::from_secs(1);
        let (window, base) = time_window(3, second);
        window.record(base, true, false);
        window.record(base + second, false, false);
        window.record(base + second * 2, false, true);
        assert_eq!(
            window.counts(base + second * 2),
            Counts {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        // At 3 s the first bucket (epoch 0) has left the 3 s window.
        assert_eq!(
            window.counts(base + second * 3),
            Counts {
                calls: 2,
                failures: 0,
                slow: 1
            }
        );
        // A bucket reused by a later epoch is replaced, not added to.
        window.record(base + second * 3, false, false);
        assert_eq!(window.counts(base + second * 3).calls, 3);
        // Idle for longer than the window: nothing is valid.
        assert_eq!(window.counts(base + second * 10), Counts::default());
    }

    #[test]
    fn a_stale_stamp_that_wrapped_is_not_revived_after_idleness() {
        let bucket = Duration::from_millis(1);
        let (window, base) = time_window(4, bucket);
        window.record(base, true, false);
        // Exactly 65 536 epochs later the 16-bit stamp matches again.
        let wrapped = base + bucket * 65_536;
        assert_eq!(window.counts(wrapped), Counts::default());
    }

    #[test]
    fn buckets_skipped_by_sparse_traffic_do_not_come_back_when_their_stamp_wraps() {
        let bucket = Duration::from_millis(1);
        let (window, base) = time_window(4, bucket);
        window.record(base, true, false); // epoch 0, bucket 0
        // Traffic resumes with a gap, then keeps hitting only bucket 1 (epochs ≡ 1 mod 4).
        let mut epoch = 5;
        while epoch < 65_536 {
            window.record(base + bucket * u32::try_from(epoch).unwrap(), false, false);
            epoch += 4;
        }
        // At epoch 65 536 bucket 0's old stamp (0) matches again; it must hold nothing.
        let wrapped = base + bucket * 65_536;
        assert_eq!(window.counts(wrapped).failures, 0);
    }

    #[test]
    fn the_time_window_asks_for_evaluation_while_it_may_hold_failures() {
        let second = Duration::from_secs(1);
        let (window, base) = time_window(2, second);
        assert!(!window.record(base, false, false));
        assert!(window.record(base, true, false));
        assert!(window.record(base + second, false, false));
        assert!(
            !window.record(base + second * 2, false, false),
            "failure left the window"
        );
    }

    #[test]
    fn a_full_bucket_stops_counting_instead_of_overflowing() {
        let (window, base) = time_window(1, Duration::from_secs(1));
        for _ in 0..70_000 {
            window.record(base, false, false);
        }
        let counts = window.counts(base);
        assert_eq!(counts.calls, BUCKET_SATURATED);
        assert_eq!(counts.failures, 0);
        window.record(base, true, false);
        assert_eq!(
            window.counts(base).failures,
            0,
            "saturated bucket drops the outcome"
        );
    }
}
