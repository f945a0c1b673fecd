//! The last N outcomes of calls to a dependency: a lock-free ring that the circuit breaker's
//! count window and the throttle keep score in.
//!
//! Recording is one or two read-modify-writes, and a success that changes nothing (into a full
//! ring holding no failure and no slow call) writes nothing at all, so a healthy dependency's
//! score shared by many cores is read-only on its hot path. Reading the counts is `⌈N/64⌉` words
//! twice.
//!
//! Races, and what they cost (all bounded, none lasting):
//!
//! - Two recorders a whole ring apart (one preempted for N records) can write one slot in the
//!   wrong order, leaving an outcome N records old in place of a newer one until the slot is
//!   next written.
//! - A recorder that read its owner's state just before a reset can write one outcome into the
//!   ring after the reset.

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
    /// Every change comes from the result of the RMW that flipped the bits it counts (a
    /// recorder's `fetch_or`/`fetch_and`, a reset's `swap`), so at rest it is exact, whatever
    /// the interleaving; a record or reset in flight can leave it off for a moment (wrapping
    /// past zero, which reads as "not clean", never as a count). Updated with wrapping
    /// arithmetic for that reason.
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
    #[inline]
    pub(crate) fn holds_nothing_bad(&self) -> bool {
        // Relaxed: the owner's Acquire load of its state word, just before, orders this after
        // the reset that state's transition published; beyond that, a stale value decides one
        // call as a concurrent record would have.
        self.bad_bits.load(Ordering::Relaxed) == 0
    }

    /// Outcomes the ring holds: at most its size.
    #[cfg_attr(not(feature = "throttle"), allow(dead_code))]
    #[inline]
    pub(crate) fn calls(&self) -> u64 {
        // Relaxed: as in `holds_nothing_bad`.
        self.head.load(Ordering::Relaxed).min(self.size)
    }

    /// Failures and slow calls in the ring, cheaply: one load, exact at rest; `None` while a
    /// racing record or reset has it out of range (then count the bits).
    #[cfg_attr(not(feature = "throttle"), allow(dead_code))]
    #[inline]
    pub(crate) fn bad_count(&self) -> Option<u64> {
        // Relaxed: as in `holds_nothing_bad`.
        let bad = self.bad_bits.load(Ordering::Relaxed);
        (bad <= 2 * self.size).then_some(bad)
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
        // Relaxed throughout: each slot and the head are independent counters; an owner that
        // evaluates several of them at once fences (the breaker), and the owner's state word
        // orders resets (see `reset`).
        if !bad && self.success_changes_nothing() {
            // Every slot already holds a plain success: this one changes nothing.
            return false;
        }
        let index = self.head.fetch_add(1, Ordering::Relaxed);
        let slot = index % self.size;
        let flips = write_bit(self.failures(), slot, failed) + write_bit(self.slow(), slot, slow);
        // Relaxed: a count; see the field. Wrapping, never saturating: a reset racing this
        // record accounts for exactly the bits its swaps clear, so the two adjustments always
        // add up to the bits set, even when they land in the other order.
        if flips > 0 {
            self.bad_bits
                .fetch_add(flips.unsigned_abs(), Ordering::Relaxed);
        } else if flips < 0 {
            self.bad_bits
                .fetch_sub(flips.unsigned_abs(), Ordering::Relaxed);
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

    /// Empties the window. Called before the owner's state word is released into its next
    /// phase, whose Release exchange publishes these writes to every recorder that sees it.
    ///
    /// Each word is cleared with a `swap` and the count lowered by exactly the bits that swap
    /// cleared: a recorder racing the reset adjusts the count by exactly the bits its own RMW
    /// flipped, so however the two interleave the count ends equal to the bits left set (a
    /// store of zero instead could leave the count at one above a clean ring, switching the
    /// clean-ring shortcut off until the next reset).
    pub(crate) fn reset(&self) {
        let mut cleared = 0;
        for word in self.bits.iter() {
            // Relaxed: the RMW result is what keeps the count exact; see above.
            cleared += u64::from(word.swap(0, Ordering::Relaxed).count_ones());
        }
        if cleared > 0 {
            self.bad_bits.fetch_sub(cleared, Ordering::Relaxed);
        }
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

#[cfg(all(test, not(palisade_loom)))]
mod tests {
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
    fn the_cheap_reads_match_the_bits() {
        let window = CountWindow::new(3);
        assert!(window.holds_nothing_bad());
        assert_eq!(window.bad_count(), Some(0));
        window.record(true, true, 3);
        assert!(!window.holds_nothing_bad());
        assert_eq!(window.bad_count(), Some(2), "one failure, one slow");
        window.record(true, false, 3);
        assert_eq!(window.bad_count(), Some(3));
        // Two successes and the oldest bad outcome is evicted by the third.
        for expected in [3, 1, 0] {
            window.record(false, false, 3);
            assert_eq!(window.bad_count(), Some(expected));
        }
        assert!(window.holds_nothing_bad());
        // A count out of range (a reset racing a record) is no count at all.
        window.bad_bits.store(7, Ordering::Relaxed);
        assert_eq!(window.bad_count(), None, "above 2 x size");
        window.bad_bits.store(6, Ordering::Relaxed);
        assert_eq!(window.bad_count(), Some(6), "2 x size is still a count");
    }

    #[test]
    fn a_success_asks_for_evaluation_only_at_minimum_calls() {
        let window = CountWindow::new(8);
        for call in 1..=8u64 {
            assert_eq!(window.record(false, false, 5), call == 5, "call {call}");
        }
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
}

/// loom models for the ring's counters.
#[cfg(all(test, palisade_loom))]
mod loom_models {
    use super::*;

    #[test]
    fn loom_a_reset_racing_a_failure_leaves_the_count_equal_to_the_bits() {
        loom::model(|| {
            let window = loom::sync::Arc::new(CountWindow::new(4));
            window.record(true, false, u64::MAX);
            let other = loom::sync::Arc::clone(&window);
            let recorder = loom::thread::spawn(move || {
                other.record(true, false, u64::MAX);
                other.record(false, false, u64::MAX);
            });
            window.reset();
            recorder.join().unwrap();
            let bits = window.counts();
            assert_eq!(
                window.bad_bits.load(Ordering::Relaxed),
                bits.failures + bits.slow,
                "the count must match the ring at rest"
            );
            assert_eq!(window.holds_nothing_bad(), bits.failures + bits.slow == 0);
        });
    }
}
