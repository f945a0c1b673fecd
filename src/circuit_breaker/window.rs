//! The sliding windows a closed breaker keeps score in: the last N outcomes (a ring), or the
//! outcomes of the last T seconds (stamped buckets).
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
//! Races, and what they cost (all bounded, none lasting):
//!
//! - In the time window, a success that brings the window to `minimum_calls` decides whether to
//!   evaluate before any fence (fencing every success would cost every call); racing a failure
//!   recorded at the same moment, both may miss the other, and the breaker then trips on the next
//!   outcome instead. The count window's trigger (the record index) is exact.
//! - Two recorders a whole ring apart (one preempted for N records) can write one slot in the
//!   wrong order, leaving an outcome N records old in place of a newer one until the slot is
//!   next written.
//! - A recorder that read the state word just before a transition can write one outcome into
//!   the window of the next closed period, which is otherwise reset before it starts.
//! - A bucket holds 16-bit counts: past 64 511 calls in one bucket, further calls in that bucket
//!   are not counted (the rates are by then well sampled).

use crate::clock::{Epoch, Instant};
use crate::ring::StampedRing;
use crate::sync::{AtomicU64, Ordering};

/// What a window holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// The last `size` outcomes, as two bit rings (failure, slow) and a count of records.
pub(crate) struct CountWindow {
    size: u64,
    /// Outcomes recorded since the last reset; slot = head % size.
    head: AtomicU64,
    /// The failure ring's words, then the slow ring's: one slice, so checking that the window
    /// is clean is one short loop.
    bits: Box<[AtomicU64]>,
    /// Words per ring.
    words: usize,
    /// How many bits of both rings are set: zero means every slot holds a plain success.
    /// Changed only with the bit flip it counts (from the flip's RMW result), so at rest it is
    /// exact; a record in flight can leave it one behind for a moment.
    bad_bits: AtomicU64,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        let words = size.div_ceil(64) as usize;
        Self {
            size: u64::from(size),
            head: AtomicU64::new(0),
            bits: (0..2 * words).map(|_| AtomicU64::new(0)).collect(),
            words,
            bad_bits: AtomicU64::new(0),
        }
    }

    fn failures(&self) -> &[AtomicU64] {
        &self.bits[..self.words]
    }

    fn slow(&self) -> &[AtomicU64] {
        &self.bits[self.words..]
    }

    /// Whether the ring holds no failure and no slow call.
    pub(crate) fn holds_nothing_bad(&self) -> bool {
        // Relaxed: a hint for eviction.
        self.bad_bits.load(Ordering::Relaxed) == 0
    }

    /// Whether a plain success would change nothing: the ring is full and every slot holds a
    /// plain success.
    #[inline]
    pub(crate) fn success_changes_nothing(&self) -> bool {
        // Relaxed: a hint; see `record`. A count one behind makes one success skip evicting
        // an old outcome, the same bounded lag as any record in flight.
        self.head.load(Ordering::Relaxed) >= self.size && self.bad_bits.load(Ordering::Relaxed) == 0
    }

    /// Records one outcome. Returns whether the window should be evaluated now.
    #[inline]
    pub(crate) fn record(&self, failed: bool, slow: bool, minimum_calls: u64) -> bool {
        let bad = failed || slow;
        // Relaxed throughout: each slot and the head are independent counters; evaluation
        // is fenced by the caller, and the state word orders resets (see `reset`).
        if !bad && self.success_changes_nothing() {
            // Every slot already holds a plain success: this one changes nothing.
            return false;
        }
        let index = self.head.fetch_add(1, Ordering::Relaxed);
        let slot = index % self.size;
        let flips = write_bit(self.failures(), slot, failed) + write_bit(self.slow(), slot, slow);
        // Relaxed: a count; see the field.
        if flips > 0 {
            self.bad_bits
                .fetch_add(flips.unsigned_abs(), Ordering::Relaxed);
        } else if flips < 0 {
            // Saturating: a reset racing this record can zero the count between the bit flip
            // and this decrement; wrapping would switch the clean-ring shortcut off for good.
            let _ = self
                .bad_bits
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(flips.unsigned_abs()))
                });
        }
        bad || index + 1 == minimum_calls
    }

    pub(crate) fn counts(&self) -> Counts {
        let ones = |words: &[AtomicU64]| {
            words
                .iter()
                .map(|word| u64::from(word.load(Ordering::Relaxed).count_ones()))
                .sum()
        };
        Counts {
            calls: self.head.load(Ordering::Relaxed).min(self.size),
            failures: ones(self.failures()),
            slow: ones(self.slow()),
        }
    }

    /// Empties the window. Called before the state word is released into Closed, whose
    /// Release exchange publishes these stores to every recorder that sees the new state.
    pub(crate) fn reset(&self) {
        for word in self.bits.iter() {
            word.store(0, Ordering::Relaxed);
        }
        self.bad_bits.store(0, Ordering::Relaxed);
        self.head.store(0, Ordering::Relaxed);
    }
}

/// Sets or clears bit `slot`, writing only if it changes. Returns +1 if this call set it, −1
/// if it cleared it, 0 if it was already so (decided by the RMW's result, so two racing
/// writers never both count one flip).
#[inline]
fn write_bit(words: &[AtomicU64], slot: u64, value: bool) -> i64 {
    let Some(word) = usize::try_from(slot / 64).ok().and_then(|i| words.get(i)) else {
        return 0;
    };
    let mask = 1u64 << (slot % 64);
    // Relaxed: the bit is the whole message; the load only avoids a needless write.
    let set = word.load(Ordering::Relaxed) & mask != 0;
    if value && !set {
        i64::from(word.fetch_or(mask, Ordering::Relaxed) & mask == 0)
    } else if !value && set {
        -i64::from(word.fetch_and(!mask, Ordering::Relaxed) & mask != 0)
    } else {
        0
    }
}

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

    #[test]
    fn the_ring_forgets_outcomes_older_than_its_size() {
        let window = CountWindow::new(4);
        for _ in 0..4 {
            window.record(true, false, 4);
        }
        assert_eq!(
            window.counts(),
            Counts {
                calls: 4,
                failures: 4,
                slow: 0
            }
        );
        for expected_failures in [3, 2, 1, 0] {
            window.record(false, false, 4);
            assert_eq!(window.counts().failures, expected_failures);
        }
        // After many successes, only the last four outcomes decide.
        for _ in 0..1000 {
            window.record(false, false, 4);
        }
        window.record(true, true, 4);
        assert_eq!(
            window.counts(),
            Counts {
                calls: 4,
                failures: 1,
                slow: 1
            }
        );
    }

    #[test]
    fn a_success_into_a_clean_full_ring_writes_nothing() {
        let window = CountWindow::new(3);
        for _ in 0..3 {
            window.record(false, false, 3);
        }
        let head = window.head.load(Ordering::Relaxed);
        assert!(!window.record(false, false, 3));
        assert_eq!(window.head.load(Ordering::Relaxed), head);
    }

    #[test]
    fn the_ring_asks_for_evaluation_on_bad_outcomes_and_at_minimum_calls() {
        let window = CountWindow::new(10);
        assert!(!window.record(false, false, 3));
        assert!(window.record(true, false, 3));
        assert!(
            window.record(false, false, 3),
            "third call reaches minimum_calls"
        );
        assert!(!window.record(false, false, 3));
        assert!(window.record(false, true, 3), "slow");
    }

    #[test]
    fn a_ring_wider_than_one_word_counts_every_slot() {
        let window = CountWindow::new(130);
        for i in 0..130 {
            window.record(i % 2 == 0, i % 5 == 0, 130);
        }
        assert_eq!(
            window.counts(),
            Counts {
                calls: 130,
                failures: 65,
                slow: 26
            }
        );
        window.reset();
        assert_eq!(window.counts(), Counts::default());
    }

    fn time_window(buckets: u32, bucket: Duration) -> (TimeWindow, Instant) {
        let base = Instant::now();
        let nanos = u64::try_from(bucket.as_nanos()).unwrap();
        (TimeWindow::new(Epoch::new(base), nanos, buckets), base)
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
