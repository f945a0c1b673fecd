//! The throttle's state word: one `AtomicU64` holding the phase, a generation and a payload,
//! and the pure decisions that move it.
//!
//! Nothing outside this file sees raw bits: the gate works with [`Snapshot`], a decoded `Copy`
//! view, decides with the functions below (one per row of the transition table, each pure and
//! unit-tested), and changes the word only through [`AtomicState::update`], one
//! compare-and-swap loop around such a decision.
//!
//! # State diagram
//!
//! ```text
//!                 shed_after consecutive failures (of calls admitted in this generation)
//!   Throttling ─────────────────────────────────────────────────────────────────────▶ Shedding
//!     │  ▲  each call rejected with probability                                       │    │
//!     │  │  p = max(0, (n − K·a) / (n + 1)) over the last                             │    │ a call at or after the
//!     │  │  n outcomes, a of them accepted                                            │    │ probe slot takes it and
//!     └──┘  (no state change: the window decides)                                     │    │ sets the next slot
//!        ▲                                                                            │ ◀──┘
//!        └──────────────────── a probe succeeds (the window is emptied first) ────────┘
//!
//!   any ── reset ──▶ Throttling (generation + 1, window emptied)
//! ```
//!
//! # Encoding
//!
//! | bits | field | meaning |
//! | --- | --- | --- |
//! | 63 | phase | 0 Throttling, 1 Shedding |
//! | 62–48 | generation | 15 bits, wraps; bumped on every change of phase |
//! | 47–0 | payload | Throttling: consecutive failures (saturates at 2^48 − 1); Shedding: the next probe slot, ms since the throttle's epoch (48 bits ≈ 8900 years) |
//!
//! # Transition table
//!
//! All transitions are one `compare_exchange_weak` of the whole word in [`AtomicState::update`],
//! `AcqRel` on success (see the ordering note there). "g" is the generation.
//!
//! | from | event | guard | to | decision |
//! | --- | --- | --- | --- | --- |
//! | Throttling(g, c) | failure of a call admitted in g | c + 1 < shed_after | Throttling(g, c + 1) | [`Snapshot::after_failure`] |
//! | Throttling(g, c) | failure of a call admitted in g | c + 1 ≥ shed_after | Shedding(g + 1, now + interval) | [`Snapshot::after_failure`] |
//! | Throttling(g, c > 0) | success of a call admitted in g | | Throttling(g, 0) | [`Snapshot::after_success`] |
//! | Shedding(g, t) | call | now ≥ t | Shedding(g, now + interval): the call is a probe of g | [`Snapshot::take_probe_slot`] |
//! | Shedding(g, t) | probe of g succeeds | | Throttling(g + 1, 0) | [`Snapshot::after_probe_success`] |
//! | any(g) | reset (handle) | | Throttling(g + 1, 0) | [`Snapshot::reset`] |
//!
//! Not transitions (the word is only read): admission while Throttling (the window's counts
//! and a random draw decide, [`rejection_probability`]); a call while Shedding before the slot
//! (rejected); a failed probe (the next slot was set when it was admitted); an outcome of
//! another generation; an ignored outcome.
//!
//! # Invariants
//!
//! 1. Exactly one thread performs each transition: the one whose compare-and-swap succeeds;
//!    transition events follow only from a successful exchange.
//! 2. While Shedding, at most one call is admitted per probe slot: the slot's time is part of
//!    the word, and taking it is one exchange that moves it on.
//! 3. An outcome only changes the state of the generation its call was admitted in; an outcome
//!    of an older generation is ignored.
//! 4. Shedding cannot wedge: every slot ends (the clock moves), and the call that takes it is
//!    admitted whatever became of earlier probes (dropped, hung, ignored).
//! 5. **Pre-exchange effect.** A succeeding probe empties the window *before* its exchange, so
//!    the calls of the new generation start from a clean window; the probe first checks that
//!    the word is still Shedding of its generation. The reset is idempotent, and if the
//!    exchange then loses (another probe of the same generation closed first), at most the
//!    outcomes recorded between that other probe's exchange and this reset are lost.
//! 6. The healthy path (Throttling, a window holding no failure) writes nothing: admission
//!    loads the word and the window's failure count; a success into a full window holding no
//!    failure reads nothing more, since a window without failures has no run of failures to
//!    end. (A failure preempted between writing its slot and counting its run, while a whole
//!    window of successes is recorded, can leave a run of one behind a clean window; the next
//!    run then starts shedding one failure early.)
//!
//! # ABA
//!
//! The generation is the ABA defence: a permit carries the generation it was admitted in, and
//! every change of phase bumps it. With 15 bits it repeats after 32 768 changes, each Shedding
//! lasting at least one probe interval; a late outcome is misattributed only if its call stayed
//! in flight across a multiple of 32 768 of them, and then it counts as one outcome.

use crate::sync::{AtomicU64, Ordering};

const PHASE_SHIFT: u32 = 63;
const GENERATION_SHIFT: u32 = 48;
const GENERATION_MASK: u64 = (1 << 15) - 1;
const PAYLOAD_MASK: u64 = (1 << 48) - 1;

/// The latest probe slot the word can hold, in ms since the epoch.
pub(crate) const MAX_SLOT_MS: u64 = PAYLOAD_MASK;

const THROTTLING: u64 = 0;
const SHEDDING: u64 = 1;

/// One decoded load of the state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Snapshot {
    Throttling { generation: u16, failures: u64 },
    Shedding { generation: u16, next_probe_ms: u64 },
}

impl Snapshot {
    /// The state a new throttle starts in.
    pub(crate) const INITIAL: Self = Self::Throttling {
        generation: 0,
        failures: 0,
    };

    #[inline]
    pub(crate) fn generation(self) -> u16 {
        match self {
            Self::Throttling { generation, .. } | Self::Shedding { generation, .. } => generation,
        }
    }

    /// A failure of a call admitted while Throttling in `generation`: count it in the run of
    /// consecutive failures, and start Shedding, with the first probe slot at `next_probe_ms()`
    /// (asked for only then: it reads the clock), once the run reaches `shed_after`. `None` for
    /// any other state.
    pub(crate) fn after_failure(
        self,
        generation: u16,
        shed_after: u64,
        next_probe_ms: impl FnOnce() -> u64,
    ) -> Option<Self> {
        match self {
            Self::Throttling {
                generation: g,
                failures,
            } if g == generation => Some(if failures.saturating_add(1) >= shed_after {
                Self::Shedding {
                    generation: next_generation(generation),
                    next_probe_ms: next_probe_ms().min(MAX_SLOT_MS),
                }
            } else {
                Self::Throttling {
                    generation,
                    failures: (failures + 1).min(PAYLOAD_MASK),
                }
            }),
            _ => None,
        }
    }

    /// A success of a call admitted while Throttling in `generation`: end a run of failures.
    /// `None` when there is no run to end, or the state has moved on.
    pub(crate) fn after_success(self, generation: u16) -> Option<Self> {
        match self {
            Self::Throttling {
                generation: g,
                failures,
            } if g == generation && failures > 0 => Some(Self::Throttling {
                generation,
                failures: 0,
            }),
            _ => None,
        }
    }

    /// A call at `now_ms` while Shedding: it takes the probe slot if the slot has come,
    /// setting the next one at `next_probe_ms()` (asked for only then: it draws the jitter),
    /// and always after `now_ms`. `None` when the slot has not come (the call is rejected) or
    /// the throttle is not Shedding.
    pub(crate) fn take_probe_slot(
        self,
        now_ms: u64,
        next_probe_ms: impl FnOnce() -> u64,
    ) -> Option<Self> {
        match self {
            Self::Shedding {
                generation,
                next_probe_ms: slot,
            } if now_ms >= slot => Some(Self::Shedding {
                generation,
                next_probe_ms: next_probe_ms()
                    .max(now_ms.saturating_add(1))
                    .min(MAX_SLOT_MS),
            }),
            _ => None,
        }
    }

    /// A probe of `generation` succeeded: the dependency answers again, so go back to
    /// Throttling (the caller has emptied the window). `None` if another probe or a reset
    /// already moved the state on.
    pub(crate) fn after_probe_success(self, generation: u16) -> Option<Self> {
        match self {
            Self::Shedding { generation: g, .. } if g == generation => Some(Self::Throttling {
                generation: next_generation(generation),
                failures: 0,
            }),
            _ => None,
        }
    }

    /// A reset through the handle: Throttling in a fresh generation, from any state.
    pub(crate) fn reset(self) -> Self {
        Self::Throttling {
            generation: next_generation(self.generation()),
            failures: 0,
        }
    }

    #[inline]
    fn encode(self) -> u64 {
        let (phase, generation, payload) = match self {
            Self::Throttling {
                generation,
                failures,
            } => (THROTTLING, generation, failures.min(PAYLOAD_MASK)),
            Self::Shedding {
                generation,
                next_probe_ms,
            } => (SHEDDING, generation, next_probe_ms.min(PAYLOAD_MASK)),
        };
        (phase << PHASE_SHIFT)
            | ((u64::from(generation) & GENERATION_MASK) << GENERATION_SHIFT)
            | payload
    }

    #[allow(clippy::cast_possible_truncation)] // masked to 15 bits first
    #[inline]
    fn decode(word: u64) -> Self {
        let generation = ((word >> GENERATION_SHIFT) & GENERATION_MASK) as u16;
        let payload = word & PAYLOAD_MASK;
        if word >> PHASE_SHIFT == SHEDDING {
            Self::Shedding {
                generation,
                next_probe_ms: payload,
            }
        } else {
            Self::Throttling {
                generation,
                failures: payload,
            }
        }
    }
}

/// The generation after `generation` (wrapping in 15 bits).
#[inline]
pub(crate) fn next_generation(generation: u16) -> u16 {
    #[allow(clippy::cast_possible_truncation)] // masked to 15 bits
    let next = ((u64::from(generation) + 1) & GENERATION_MASK) as u16;
    next
}

/// Client-side throttling's rejection probability (Google SRE, "Handling Overload"):
/// `max(0, (requests − K·accepts) / (requests + 1))`, here over the last `calls` outcomes of
/// which `accepts` succeeded, with `K = multiplier`.
///
/// With `K = 2` nothing is shed while at least half the calls succeed; past that, the share
/// shed grows with the share failing, and approaches 1 as nothing succeeds.
#[must_use]
pub(crate) fn rejection_probability(calls: u64, accepts: u64, multiplier: f64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
    let (calls, accepts) = (calls as f64, accepts.min(calls) as f64);
    ((calls - multiplier * accepts) / (calls + 1.0)).max(0.0)
}

/// Owns the state word.
pub(crate) struct AtomicState {
    word: AtomicU64,
}

impl AtomicState {
    pub(crate) fn new(initial: Snapshot) -> Self {
        Self {
            word: AtomicU64::new(initial.encode()),
        }
    }

    /// The current state.
    #[inline]
    pub(crate) fn load(&self) -> Snapshot {
        // Acquire pairs with the Release half of the exchange in `update`: a caller that sees
        // Throttling(g + 1) after a probe's success also sees the window that probe emptied
        // before its exchange, so its outcome lands in the fresh window. A slightly stale view
        // otherwise costs at most one call admitted or rejected as the phase changes.
        Snapshot::decode(self.word.load(Ordering::Acquire))
    }

    /// The generation if the throttle is Throttling, without decoding the rest: the hot path
    /// of admission.
    #[inline]
    pub(crate) fn throttling_generation(&self) -> Option<u16> {
        // Acquire: as in `load`.
        let word = self.word.load(Ordering::Acquire);
        #[allow(clippy::cast_possible_truncation)] // masked to 15 bits
        let generation = ((word >> GENERATION_SHIFT) & GENERATION_MASK) as u16;
        (word >> PHASE_SHIFT == THROTTLING).then_some(generation)
    }

    /// Applies `decide` until the word changes from the state it decided on, or `decide`
    /// declines (`None`). Returns the exchanged pair, or the state `decide` declined on.
    ///
    /// `decide` must be pure and cheap: under contention it runs once per attempt, and only
    /// the attempt that wins the exchange takes effect. Callers perform side effects (events)
    /// only with the returned pair.
    pub(crate) fn update(
        &self,
        mut decide: impl FnMut(Snapshot) -> Option<Snapshot>,
    ) -> Result<(Snapshot, Snapshot), Snapshot> {
        // Acquire: when `decide` declines on this value the caller acts on it (a rejection
        // names its probe slot), so it should be no older than a `load`.
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let old = Snapshot::decode(current);
            let Some(new) = decide(old) else {
                return Err(old);
            };
            // AcqRel on success: Release publishes what the winner did before deciding (the
            // window emptied before closing) to every `load` that sees the new word; Acquire
            // makes the winner see what earlier winners published. Acquire on failure: the
            // fresh value may be declined on, and is then acted on as above.
            match self.word.compare_exchange_weak(
                current,
                new.encode(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok((old, new)),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn throttling(generation: u16, failures: u64) -> Snapshot {
        Snapshot::Throttling {
            generation,
            failures,
        }
    }

    fn shedding(generation: u16, next_probe_ms: u64) -> Snapshot {
        Snapshot::Shedding {
            generation,
            next_probe_ms,
        }
    }

    proptest! {
        #[test]
        fn every_snapshot_round_trips_through_the_word(
            generation in 0u16..(1 << 15),
            payload in 0u64..=PAYLOAD_MASK,
            is_shedding in any::<bool>(),
        ) {
            let snapshot = if is_shedding {
                shedding(generation, payload)
            } else {
                throttling(generation, payload)
            };
            prop_assert_eq!(Snapshot::decode(snapshot.encode()), snapshot);
        }

        #[test]
        fn the_probability_follows_the_formula_and_stays_a_probability(
            calls in 0u64..100_000,
            accepted in 0.0f64..=1.0,
            multiplier in 1.0f64..10.0,
        ) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
            let accepts = (calls as f64 * accepted) as u64;
            let p = rejection_probability(calls, accepts, multiplier);
            prop_assert!((0.0..1.0).contains(&p), "{p}");
            #[allow(clippy::cast_precision_loss)]
            let formula = (calls as f64 - multiplier * accepts as f64) / (calls as f64 + 1.0);
            prop_assert!((p - formula.max(0.0)).abs() < 1e-12);
        }
    }

    #[test]
    fn the_probability_at_fixed_counts() {
        // Half accepted with K = 2: nothing shed, the boundary.
        assert_eq!(rejection_probability(100, 50, 2.0), 0.0);
        // 30 of 100 accepted: (100 − 60) / 101.
        assert!((rejection_probability(100, 30, 2.0) - 40.0 / 101.0).abs() < 1e-12);
        // None accepted: n / (n + 1).
        assert!((rejection_probability(100, 0, 2.0) - 100.0 / 101.0).abs() < 1e-12);
        // K = 1 sheds the failing share, a little less for the + 1.
        assert!((rejection_probability(10, 7, 1.0) - 3.0 / 11.0).abs() < 1e-12);
        // No calls, or more accepts than calls (a count read mid-update): nothing shed.
        assert_eq!(rejection_probability(0, 0, 2.0), 0.0);
        assert_eq!(rejection_probability(5, 9, 2.0), 0.0);
    }

    #[test]
    fn a_failure_extends_the_run_then_starts_shedding_at_the_threshold() {
        assert_eq!(
            throttling(4, 1).after_failure(4, 3, || 500),
            Some(throttling(4, 2))
        );
        assert_eq!(
            throttling(4, 2).after_failure(4, 3, || 500),
            Some(shedding(5, 500))
        );
        assert_eq!(
            throttling(4, 0).after_failure(4, 1, || 500),
            Some(shedding(5, 500))
        );
    }

    #[test]
    fn outcomes_of_another_generation_or_phase_change_nothing() {
        assert_eq!(throttling(4, 1).after_failure(3, 3, || 500), None);
        assert_eq!(shedding(4, 9).after_failure(4, 3, || 500), None);
        assert_eq!(throttling(4, 1).after_success(3), None);
        assert_eq!(shedding(4, 9).after_success(4), None);
        assert_eq!(shedding(4, 9).after_probe_success(3), None);
        assert_eq!(throttling(5, 0).after_probe_success(4), None);
    }

    #[test]
    fn a_success_ends_a_run_and_otherwise_writes_nothing() {
        assert_eq!(throttling(4, 2).after_success(4), Some(throttling(4, 0)));
        assert_eq!(throttling(4, 0).after_success(4), None);
    }

    #[test]
    fn a_probe_slot_is_taken_once_it_has_come_and_moves_on() {
        assert_eq!(
            shedding(2, 100).take_probe_slot(99, || 400),
            None,
            "1 ms early"
        );
        assert_eq!(
            shedding(2, 100).take_probe_slot(100, || 400),
            Some(shedding(2, 400))
        );
        assert_eq!(
            shedding(2, 100).take_probe_slot(150, || 400),
            Some(shedding(2, 400))
        );
        // The next slot is always after now, so the same instant cannot take two.
        assert_eq!(
            shedding(2, 100).take_probe_slot(150, || 120),
            Some(shedding(2, 151))
        );
        assert_eq!(throttling(2, 0).take_probe_slot(150, || 400), None);
    }

    #[test]
    fn a_successful_probe_goes_back_to_throttling_in_a_new_generation() {
        assert_eq!(
            shedding(6, 100).after_probe_success(6),
            Some(throttling(7, 0))
        );
    }

    #[test]
    fn a_reset_always_throttles_in_a_new_generation() {
        assert_eq!(shedding(6, 100).reset(), throttling(7, 0));
        assert_eq!(throttling(6, 9).reset(), throttling(7, 0));
    }

    #[test]
    fn fields_saturate_and_generations_wrap() {
        assert_eq!(next_generation((1 << 15) - 1), 0);
        assert_eq!(
            Snapshot::decode(throttling(1, u64::MAX).encode()),
            throttling(1, PAYLOAD_MASK)
        );
        assert_eq!(
            throttling(1, PAYLOAD_MASK).after_failure(1, u64::MAX, || 5),
            Some(throttling(1, PAYLOAD_MASK))
        );
        assert_eq!(
            shedding(1, 0).take_probe_slot(MAX_SLOT_MS, || u64::MAX),
            Some(shedding(1, MAX_SLOT_MS))
        );
    }

    #[test]
    fn update_declines_on_the_state_it_saw() {
        let state = AtomicState::new(Snapshot::INITIAL);
        assert_eq!(state.update(|_| None), Err(Snapshot::INITIAL));
        let next = shedding(1, 10);
        assert_eq!(state.update(|_| Some(next)), Ok((Snapshot::INITIAL, next)));
        assert_eq!(state.load(), next);
        assert_eq!(state.throttling_generation(), None);
    }
}
