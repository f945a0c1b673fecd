//! An entry's life: its phase, read from its times, and its refresh word, the one atomic an
//! entry has.
//!
//! # Life
//!
//! ```text
//!   stored          fresh_until         stale_until
//!     |──── Fresh ──────|──── Stale ─────────|──── Expired ───|──── Dead ──▶ time
//!                       |                    |   (error_until, if it lies past stale_until)
//!   served; XFetch may  served at once; the  a caller fetches (single flight); if the fetch
//!   refresh it early    first caller claims  fails before error_until, the old value is
//!                       one background       served instead (stale-if-error)
//!                       refresh
//! ```
//!
//! The phase is never stored: it is a pure function of the entry's times and the clock
//! ([`Times::phase`]), so time moves an entry along without any write.
//!
//! # The refresh word
//!
//! `[state 2 | at 62]`, `at` in ticks (nanoseconds) of the cache's epoch:
//!
//! | state | `at` means | who may claim a refresh |
//! | --- | --- | --- |
//! | `IDLE` | earliest time of the next claim (0, or the end of a failed refresh's backoff) | the first caller at or after `at` |
//! | `REFRESHING` | when the claim lapses (the lock timeout) | the first caller at or after `at`, taking over a refresh that hung |
//! | `RETIRED` | nothing | nobody: the entry was replaced or invalidated |
//!
//! # Transitions
//!
//! | from | event | guard | to | operation |
//! | --- | --- | --- | --- | --- |
//! | `IDLE(nb)` | a stale (or XFetch-chosen) hit | `now >= nb` | `REFRESHING(now + lock)` | CAS |
//! | `REFRESHING(u)` | a stale hit | `now >= u` | `REFRESHING(now + lock)` | CAS |
//! | `REFRESHING` | the refresh failed or was skipped | the word is still this claim's | `IDLE(now + backoff)` | CAS |
//! | any | the entry was replaced or removed | – | `RETIRED` | swap |
//!
//! # Invariants
//!
//! 1. At most one refresh per entry runs at a time, except after a claim lapsed (its holder
//!    hung past the lock timeout): claims are CASes on one word, and only a lapsed claim is taken
//!    over.
//! 2. A refresh's result replaces its entry only if the store still holds that very entry (the
//!    same `Arc`), checked and replaced under the store's shard lock: an explicit insert or an
//!    invalidation during a refresh wins.
//! 3. A retired entry is never claimed again, so a replaced entry starts no refresh.
//! 4. A failed refresh lets the next claim wait out the backoff, so a failing origin gets one
//!    refresh per key per backoff, not one per request.
//!
//! # Ordering
//!
//! Every operation on the word is `Relaxed`: the word is the whole message (who refreshes), it
//! publishes no other memory, and read-modify-writes on one location are totally ordered, so two
//! claims cannot both succeed. The entry's value and times are immutable and reach other threads
//! through the store's lock.

use crate::sync::{AtomicU64, Ordering};

/// When an entry stops being fresh, stops being served stale, and stops covering errors, in
/// ticks of the cache's epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Times {
    pub(crate) fresh_until: u64,
    pub(crate) stale_until: u64,
    pub(crate) error_until: u64,
}

/// Where an entry is in its life at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Served as it is.
    Fresh,
    /// Served at once while one background refresh runs.
    Stale,
    /// Not served, but served instead of an error until `error_until`.
    Expired,
    /// As good as absent.
    Dead,
}

impl Times {
    /// The phase at `now`.
    pub(crate) fn phase(&self, now: u64) -> Phase {
        if now < self.fresh_until {
            Phase::Fresh
        } else if now < self.stale_until {
            Phase::Stale
        } else if now < self.error_until {
            Phase::Expired
        } else {
            Phase::Dead
        }
    }

    /// Whether the entry may stand in for a failed fetch at `now` (stale-if-error), whatever
    /// its phase: RFC 5861 counts the window from the end of freshness.
    pub(crate) fn covers_errors(&self, now: u64) -> bool {
        now < self.error_until
    }
}

const STATE_SHIFT: u32 = 62;
const AT_MASK: u64 = (1 << STATE_SHIFT) - 1;
const IDLE: u64 = 0;
const REFRESHING: u64 = 1 << STATE_SHIFT;
const RETIRED: u64 = 2 << STATE_SHIFT;
const STATE_MASK: u64 = 3 << STATE_SHIFT;

/// The decision of a claim at `now` on `word`, a lapse-at of `until`: the new word, or `None`
/// when someone else holds a live claim, the backoff has not passed, or the entry is retired.
pub(crate) fn claim(word: u64, now: u64, until: u64) -> Option<u64> {
    match word & STATE_MASK {
        IDLE | REFRESHING if now >= word & AT_MASK => Some(REFRESHING | (until & AT_MASK)),
        _ => None,
    }
}

/// The word after a claim is given back with no result, the next claim allowed at `not_before`.
pub(crate) fn released(not_before: u64) -> u64 {
    IDLE | (not_before & AT_MASK)
}

/// A successful claim: the exact word it wrote, so giving it back touches only this claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Claim(u64);

/// An entry's refresh word.
#[derive(Debug)]
pub(crate) struct RefreshWord(AtomicU64);

impl RefreshWord {
    pub(crate) fn new() -> Self {
        Self(AtomicU64::new(IDLE))
    }

    /// Claims the entry's refresh at `now`, the claim lapsing at `until` (invariant 1).
    pub(crate) fn try_claim(&self, now: u64, until: u64) -> Option<Claim> {
        // Relaxed: see the module's ordering note.
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            let next = claim(word, now, until)?;
            // Relaxed: the CAS alone decides who refreshes.
            match self
                .0
                .compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(Claim(next)),
                Err(actual) => word = actual,
            }
        }
    }

    /// Gives a claim back with no result; the next claim waits until `not_before` (invariant
    /// 4). A claim taken over meanwhile, or a retired entry, is left alone.
    pub(crate) fn release(&self, claim: Claim, not_before: u64) {
        // Relaxed: only this claim's own word is replaced.
        let _ = self.0.compare_exchange(
            claim.0,
            released(not_before),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Marks the entry replaced or removed: no refresh is claimed on it again (invariant 3).
    pub(crate) fn retire(&self) {
        // Relaxed: a claim racing this swap may still win; its result is then refused by the
        // store's check (invariant 2), so it changes nothing.
        self.0.swap(RETIRED, Ordering::Relaxed);
    }

    /// Whether a refresh holds a live claim at `now`.
    #[cfg(test)]
    pub(crate) fn is_refreshing(&self, now: u64) -> bool {
        let word = self.0.load(Ordering::Relaxed);
        word & STATE_MASK == REFRESHING && now < word & AT_MASK
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    const TIMES: Times = Times {
        fresh_until: 100,
        stale_until: 150,
        error_until: 300,
    };

    #[test]
    fn the_phase_follows_the_times_on_both_sides_of_each_boundary() {
        assert_eq!(TIMES.phase(0), Phase::Fresh);
        assert_eq!(TIMES.phase(99), Phase::Fresh);
        assert_eq!(TIMES.phase(100), Phase::Stale);
        assert_eq!(TIMES.phase(149), Phase::Stale);
        assert_eq!(TIMES.phase(150), Phase::Expired);
        assert_eq!(TIMES.phase(299), Phase::Expired);
        assert_eq!(TIMES.phase(300), Phase::Dead);
        assert!(TIMES.covers_errors(299));
        assert!(!TIMES.covers_errors(300));
    }

    #[test]
    fn a_stale_if_error_window_shorter_than_the_stale_window_never_makes_an_expired_phase() {
        let times = Times {
            fresh_until: 100,
            stale_until: 150,
            error_until: 120,
        };
        assert_eq!(times.phase(149), Phase::Stale);
        assert_eq!(times.phase(150), Phase::Dead);
        assert!(times.covers_errors(119) && !times.covers_errors(120));
    }

    #[test]
    fn claims_follow_the_transition_table() {
        // IDLE(0): claimable at once.
        assert_eq!(claim(IDLE, 5, 50), Some(REFRESHING | 50));
        // IDLE(nb): only from nb on.
        assert_eq!(claim(released(10), 9, 50), None);
        assert_eq!(claim(released(10), 10, 50), Some(REFRESHING | 50));
        // REFRESHING(u): live before u, taken over from u on.
        assert_eq!(claim(REFRESHING | 50, 49, 90), None);
        assert_eq!(claim(REFRESHING | 50, 50, 90), Some(REFRESHING | 90));
        // RETIRED: never.
        assert_eq!(claim(RETIRED, u64::MAX >> 2, 0), None);
    }

    #[test]
    fn one_claim_wins_and_a_release_only_undoes_its_own() {
        let word = RefreshWord::new();
        let first = word.try_claim(0, 100).unwrap();
        assert!(word.try_claim(1, 200).is_none(), "invariant 1");
        assert!(word.is_refreshing(99) && !word.is_refreshing(100));
        // The claim lapses; a second caller takes it over.
        let second = word.try_claim(100, 300).unwrap();
        // The first one's late release leaves the second claim in place.
        word.release(first, 0);
        assert!(word.is_refreshing(200));
        // The second one's failure sets the backoff (invariant 4).
        word.release(second, 250);
        assert!(word.try_claim(249, 400).is_none());
        assert!(word.try_claim(250, 400).is_some());
        word.retire();
        assert!(word.try_claim(u64::MAX >> 2, 0).is_none(), "invariant 3");
    }
}
