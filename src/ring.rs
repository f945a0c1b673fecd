//! [`StampedRing`]: counters over the last `len` periods of time, lock-free.
//!
//! Each slot is one `AtomicU64`: `[stamp | payload]`, where the stamp is the low bits of the
//! slot's *epoch* (time since the ring's base divided by the period) and the payload holds
//! counters packed by the caller. A slot from an older epoch is stale: the first writer to find
//! it so replaces it with one compare-and-swap, and readers skip it. Users: the circuit
//! breaker's time window and the retry layer's percentage budget.
//!
//! Staleness is decided by stamp, helped by two facts kept beside the slots:
//!
//! - `latest`, one past the newest epoch written: if it is a whole ring behind, every slot is
//!   stale, whatever its stamp says (an idle ring).
//! - Slots of epochs that pass with no write are emptied by the writer that moves `latest` past
//!   them, so a slot skipped by sparse or periodic traffic cannot keep old counts until its stamp
//!   comes round again and makes them look current.
//!
//! A slot stamped up to a ring's length *ahead* of a reader's epoch counts as current: it was
//! written by a thread that read the clock a little later. Leaving it out would let two
//! concurrent writers in neighbouring slots each miss the other.

use crate::clock::{Epoch, Instant};
use crate::sync::{AtomicU64, Ordering};

pub(crate) struct StampedRing {
    epoch: Epoch,
    period_nanos: u64,
    stamp_shift: u32,
    stamp_mask: u64,
    slots: Box<[AtomicU64]>,
    /// One past the latest epoch written, 0 for none.
    latest: AtomicU64,
}

impl StampedRing {
    /// `len` slots of `period_nanos` each, counted from `epoch`; stamps take the top
    /// `stamp_bits` bits of each word.
    ///
    /// The stamps only need to tell the epochs of one lap behind and one lap ahead apart
    /// (`2^stamp_bits > 2 × len`): `latest` catches an idle ring, and `clear_skipped` empties
    /// any slot a busy ring skips, so no slot outlives its lap by more than that.
    pub(crate) fn new(epoch: Epoch, period_nanos: u64, len: u32, stamp_bits: u32) -> Self {
        debug_assert!(
            (1u64 << stamp_bits) > 2 * u64::from(len),
            "stamps too narrow for the ring"
        );
        Self {
            epoch,
            period_nanos: period_nanos.max(1),
            stamp_shift: 64 - stamp_bits,
            stamp_mask: (1 << stamp_bits) - 1,
            slots: (0..len.max(1)).map(|_| AtomicU64::new(0)).collect(),
            latest: AtomicU64::new(0),
        }
    }

    fn len(&self) -> u64 {
        self.slots.len() as u64
    }

    fn payload_mask(&self) -> u64 {
        (1 << self.stamp_shift) - 1
    }

    fn slot(&self, epoch: u64) -> Option<&AtomicU64> {
        usize::try_from(epoch % self.len())
            .ok()
            .and_then(|i| self.slots.get(i))
    }

    /// The epoch `now` falls in.
    #[inline]
    pub(crate) fn epoch_of(&self, now: Instant) -> u64 {
        let ticks = self.epoch.ticks(now);
        // Most calls fall in the latest epoch: check it with a multiplication and skip the
        // 64-bit division (tens of cycles). Relaxed: a hint, verified against `ticks`.
        let latest = self.latest.load(Ordering::Relaxed);
        if let Some(current) = latest.checked_sub(1) {
            let start = current.saturating_mul(self.period_nanos);
            if ticks >= start && ticks - start < self.period_nanos {
                return current;
            }
        }
        ticks / self.period_nanos
    }

    /// Adds `delta` to the payload of the slot for `now` (a stale slot is replaced by `delta`
    /// alone), unless `full(payload)` says the slot can take no more. Returns the epoch and
    /// whether `delta` was added.
    #[inline]
    pub(crate) fn add(&self, now: Instant, delta: u64, full: impl Fn(u64) -> bool) -> (u64, bool) {
        let epoch = self.epoch_of(now);
        let Some(slot) = self.slot(epoch) else {
            return (epoch, false);
        };
        let mut added = true;
        let stamp = epoch & self.stamp_mask;
        // Relaxed: each slot is its own counter; the stamp travels in the same word as the
        // payload, so one read-modify-write both checks and updates them.
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            if current >> self.stamp_shift == stamp {
                added = !full(current & self.payload_mask());
                if added {
                    slot.fetch_add(delta, Ordering::Relaxed);
                }
                break;
            }
            match slot.compare_exchange_weak(
                current,
                (stamp << self.stamp_shift) | delta,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        // Relaxed: a monotonic hint; the load skips the write in all but the first add of
        // each epoch.
        if self.latest.load(Ordering::Relaxed) <= epoch {
            let previous = self.latest.fetch_max(epoch + 1, Ordering::Relaxed);
            if previous != 0 && previous < epoch {
                self.clear_skipped(previous, epoch);
            }
        }
        (epoch, added)
    }

    /// Empties the slots of the epochs `first..last` that passed with no write (at most one
    /// lap). A write racing in for one of those epochs may be cleared with them.
    #[cold]
    fn clear_skipped(&self, first: u64, last: u64) {
        let first = first.max(last.saturating_sub(self.len()));
        for skipped in first..last {
            let Some(slot) = self.slot(skipped) else {
                continue;
            };
            let word = slot.load(Ordering::Relaxed);
            // Leave a slot already rewritten for the current epoch.
            if word >> self.stamp_shift != last & self.stamp_mask && word != 0 {
                let _ = slot.compare_exchange(word, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }

    /// Calls `visit` with the payload of every slot current at `now`.
    pub(crate) fn for_each_current(&self, now: Instant, mut visit: impl FnMut(u64)) {
        let epoch = self.epoch_of(now);
        let latest = self.latest.load(Ordering::Relaxed);
        if latest == 0 || epoch >= latest - 1 + self.len() {
            // Nothing written within the ring's span.
            return;
        }
        let modulus = self.stamp_mask + 1;
        for slot in self.slots.iter() {
            let word = slot.load(Ordering::Relaxed);
            let age = epoch.wrapping_sub(word >> self.stamp_shift) & self.stamp_mask;
            let ahead = (modulus - age) & self.stamp_mask;
            if age < self.len() || (ahead > 0 && ahead < self.len()) {
                visit(word & self.payload_mask());
            }
        }
    }

    /// Empties the ring. Relaxed stores: the caller publishes them (the breaker does it before
    /// the Release exchange that closes it).
    #[cfg_attr(not(feature = "circuit-breaker"), allow(dead_code))]
    pub(crate) fn reset(&self) {
        for slot in self.slots.iter() {
            slot.store(0, Ordering::Relaxed);
        }
        self.latest.store(0, Ordering::Relaxed);
    }
}
