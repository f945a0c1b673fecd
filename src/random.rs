//! A lock-free, seedable source of uniform draws for jitter (backoff, open durations) and the
//! throttle's rejections, and a per-thread one for layers with no seed set.
//!
//! splitmix64 over an atomic counter: each draw is one relaxed `fetch_add` plus a few
//! multiplications, so it needs no lock and no per-thread state, and a seed makes the whole
//! sequence reproducible (tests seed it; production seeds it from the process's random
//! `RandomState` keys). Layers draw only on their slow paths (a transition, a retry).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::sync::{AtomicU64, Ordering};

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Uniform draws in `[0, 1)`.
#[derive(Debug)]
pub(crate) struct Random {
    state: AtomicU64,
}

impl Random {
    /// A generator seeded with `seed`, or randomly when `None`.
    pub(crate) fn new(seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| RandomState::new().hash_one(0x5eed_u64));
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// The next draw in `[0, 1)`, with 53 bits of precision.
    pub(crate) fn unit(&self) -> f64 {
        // Relaxed: any distinct counter value will do; the draw carries no other data.
        let z = self
            .state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        mix(z)
    }
}

/// splitmix64's output function, as a draw in `[0, 1)`.
fn mix(mut z: u64) -> f64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    #[allow(clippy::cast_precision_loss)] // 53 bits are exact in an f64
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    unit
}

thread_local! {
    /// Each thread's own sequence, for layers with no seed set: no shared word to contend on.
    static THREAD_STATE: std::cell::Cell<u64> =
        std::cell::Cell::new(RandomState::new().hash_one(0x5eed_u64));
}

/// A draw in `[0, 1)` from this thread's generator.
#[cfg_attr(not(any(feature = "retry", feature = "throttle")), allow(dead_code))]
pub(crate) fn thread_unit() -> f64 {
    THREAD_STATE.with(|state| {
        let z = state.get().wrapping_add(GOLDEN_GAMMA);
        state.set(z);
        mix(z)
    })
}

/// A draw from `seeded` if a seed was set, else from this thread's generator.
#[cfg_attr(not(any(feature = "retry", feature = "throttle")), allow(dead_code))]
pub(crate) fn draw(seeded: Option<&Random>) -> f64 {
    match seeded {
        Some(random) => random.unit(),
        None => thread_unit(),
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_seed_reproduces_the_sequence_and_draws_stay_in_range() {
        let a = Random::new(Some(7));
        let b = Random::new(Some(7));
        for _ in 0..1000 {
            let x = a.unit();
            assert_eq!(x, b.unit());
            assert!((0.0..1.0).contains(&x));
        }
    }
}
