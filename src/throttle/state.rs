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
//!             a run of consecutive failures too long to be chance at the window's
//!             success rate (run_to_shed: shed_after at 50 %, longer below)
//!   Throttling ────────────────────────────────────────────────────────▶ Shedding(slot)
//!     │  ▲  each call rejected with probability                          │   │
//!     │  │  p = max(0, (n − K·a) / (n + 1)) over the last                │   │ a call at or after
//!     │  │  n outcomes, a of them accepted                               │   │ the slot takes it
//!     └──┘  (no state change: the window decides)                        │ ◀─┘ and sets the next
//!        ▲                                                               │ a probe succeeds:
//!        │                                                               ▼ it claims the close
//!        └──────────── the claiming probe has emptied the window ─────── Shedding(CLOSING)
//!
//!   any ── reset ──▶ Throttling (generation + 1, window emptied)
//! ```
//!
//! # Encoding
//!
//! | bits | field | meaning |
//! | --- | --- | --- |
//! | 63 | phase | 0 Throttling, 1 Shedding |
//! | 62–48 | generation | 15 bits, wraps; bumped on every change of phase and every reset |
//! | 47–0 | payload | Throttling: consecutive failures (saturates at 2^48 − 1); Shedding: the next probe slot, ms since the throttle's epoch, at most [`LAST_REACHABLE_MS`]; or [`CLOSING_MS`] (all ones), claimed by the probe that closes it |
//!
//! # Transition table
//!
//! All transitions are one `compare_exchange_weak` of the whole word in [`AtomicState::update`],
//! `AcqRel` on success (see the ordering note there). "g" is the generation.
//!
//! | from | event | guard | to | decision |
//! | --- | --- | --- | --- | --- |
//! | Throttling(g, c) | failure of a call admitted in g | c + 1 < [`run_to_shed`] | Throttling(g, c + 1) | [`Snapshot::after_failure`] |
//! | Throttling(g, c) | failure of a call admitted in g | c + 1 ≥ [`run_to_shed`] | Shedding(g + 1, now + interval) | [`Snapshot::after_failure`] |
//! | Throttling(g, c > 0) | success of a call admitted in g | | Throttling(g, 0) | [`Snapshot::after_success`] |
//! | Shedding(g, t) | call | now ≥ t | Shedding(g, now + interval): the call is a probe of g | [`Snapshot::take_probe_slot`] |
//! | Shedding(g, t ≠ CLOSING) | probe of g succeeds | | Shedding(g, CLOSING) | [`Snapshot::claim_close`] |
//! | Shedding(g, CLOSING) | the claiming probe emptied the window | | Throttling(g + 1, 0) | [`Snapshot::after_probe_success`] |
//! | any(g) | reset (handle) | | Throttling(g + 1, 0) | [`Snapshot::reset`] |
//!
//! Not transitions (the word is only read): admission while Throttling (the window's counts
//! and a random draw decide, [`rejection_probability`]); a call while Shedding before the slot,
//! or while the close is claimed (rejected); a failed probe (the next slot was set when it was
//! admitted); a probe success that finds the close claimed; an outcome of another generation;
//! an ignored outcome.
//!
//! # Invariants
//!
//! 1. Exactly one thread performs each transition: the one whose compare-and-swap succeeds;
//!    transition events follow only from a successful exchange.
//! 2. While Shedding, at most one call is admitted per probe slot: the slot's time is part of
//!    the word, and taking it is one exchange that moves it on. (A call admitted while
//!    Throttling, just before the run trips, may still be in flight: it is no probe.)
//! 3. The run of failures only counts outcomes of calls admitted in the current generation.
//!    The window may take one outcome from each recorder that checked the generation just
//!    before it changed (the check and the write are two steps); nothing else crosses.
//! 4. Shedding cannot wedge: every slot ends (the clock moves; slots never pass the last
//!    instant a clock can reach), and the call that takes it is admitted whatever became of
//!    earlier probes (dropped, hung, ignored).
//! 5. **Only the closing probe empties the window.** A succeeding probe first claims the close
//!    (Shedding(g, CLOSING), in which calls are still rejected), then empties the window, then
//!    releases the word into Throttling(g + 1): every call of the new generation sees the empty
//!    window, and no other probe of g touches it. The handle's reset empties it before its own
//!    exchange.
//! 6. The healthy path (Throttling, a full window holding no failure) writes nothing shared
//!    but the `Arc` reference count every call takes: admission loads the word and the
//!    window's failure count; a success into a full window holding no failure reads nothing
//!    more, since a window without failures has no run of failures to end. (A failure preempted
//!    between writing its slot and counting its run, while a whole window of successes is
//!    recorded, can leave a run of one behind a clean window; the next run then starts
//!    shedding one failure early.)
//!
//! # ABA
//!
//! The generation is the ABA defence: a permit carries the generation it was admitted in, and
//! every change of phase and every reset bumps it. With 15 bits it repeats after 32 768 of
//! them; a late outcome is misattributed only if its call stayed in flight across a multiple of
//! 32 768 changes (each Shedding lasts at least one probe interval, resets are an operator's),
//! and then it counts as one outcome.

use crate::sync::{AtomicU64, Ordering};

const PHASE_SHIFT: u32 = 63;
const GENERATION_SHIFT: u32 = 48;
const GENERATION_MASK: u64 = (1 << 15) - 1;
const PAYLOAD_MASK: u64 = (1 << 48) - 1;

/// The latest probe slot a clock can reach, in ms since the epoch: an epoch's ticks saturate
/// at `u64::MAX` ns, so no later slot would ever come.
pub(crate) const LAST_REACHABLE_MS: u64 = u64::MAX / 1_000_000;
/// The slot value that marks a Shedding word claimed by the probe that is closing it: beyond
/// every reachable slot, so no call takes it.
pub(crate) const CLOSING_MS: u64 = PAYLOAD_MASK;

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
    /// (asked for only then: it reads the clock), once the run reaches `run_to_shed(run)`.
    /// `None` for any other state.
    pub(crate) fn after_failure(
        self,
        generation: u16,
        run_to_shed: impl FnOnce(u64) -> u64,
        next_probe_ms: impl FnOnce() -> u64,
    ) -> Option<Self> {
        match self {
            Self::Throttling {
                generation: g,
                failures,
            } if g == generation => Some(
                if run_to_shed(failures.saturating_add(1)) <= failures.saturating_add(1) {
                    Self::Shedding {
                        generation: next_generation(generation),
                        next_probe_ms: next_probe_ms().min(LAST_REACHABLE_MS),
                    }
                } else {
                    Self::Throttling {
                        generation,
                        failures: (failures + 1).min(PAYLOAD_MASK),
                    }
                },
            ),
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
                    .min(LAST_REACHABLE_MS),
            }),
            _ => None,
        }
    }

    /// A probe of `generation` succeeded: claim the close, so that this probe alone empties
    /// the window and moves on. `None` if another probe claimed it first or the state moved
    /// on.
    pub(crate) fn claim_close(self, generation: u16) -> Option<Self> {
        match self {
            Self::Shedding {
                generation: g,
                next_probe_ms,
            } if g == generation && next_probe_ms != CLOSING_MS => Some(Self::Shedding {
                generation,
                next_probe_ms: CLOSING_MS,
            }),
            _ => None,
        }
    }

    /// The claimed close of `generation` (the window now emptied): back to Throttling. `None`
    /// if a reset moved the state on meanwhile.
    pub(crate) fn after_probe_success(self, generation: u16) -> Option<Self> {
        match self {
            Self::Shedding {
                generation: g,
                next_probe_ms: CLOSING_MS,
            } if g == generation => Some(Self::Throttling {
                generation: next_generation(generation),
                failures: 0,
            }),
            _ => None,
        }
    }

    /// Whether this is a Shedding word claimed by a closing probe.
    pub(crate) fn is_closing(self) -> bool {
        matches!(
            self,
            Self::Shedding {
                next_probe_ms: CLOSING_MS,
                ..
            }
        )
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

/// The run of consecutive failures that starts Shedding: a run too long to be chance at the
/// success rate of the window's calls *before* the run (`calls − run` of them, `accepts`
/// succeeded; the run's own failures would make any run look likely).
///
/// `shed_after` is the run at a 50 % success rate, whose odds are `2^-shed_after`; at a lower
/// rate `s` the run with the same odds, `shed_after · ln 2 / −ln(1 − s)`, is longer (at 20 %
/// about three times as long). Never shorter than `shed_after`, and never longer than the
/// window (a window of failures only always sheds); when fewer than `minimum_calls` calls came
/// before the run, they say nothing, and `shed_after` applies.
#[must_use]
pub(crate) fn run_to_shed(
    shed_after: u64,
    window: u64,
    minimum_calls: u64,
    calls: u64,
    accepts: u64,
    run: u64,
) -> u64 {
    let before = calls.saturating_sub(run);
    if before == 0 || before < minimum_calls || accepts == 0 {
        return shed_after;
    }
    #[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
    let success = accepts.min(before) as f64 / before as f64;
    if success >= 0.5 {
        return shed_after;
    }
    #[allow(clippy::cast_precision_loss)]
    let needed = shed_after as f64 * std::f64::consts::LN_2 / -(1.0 - success).ln();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // finite, ≥ shed_after
    let needed = needed.ceil() as u64;
    needed.clamp(shed_after, window.max(shed_after))
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
        // Acquire, as `load`: when `decide` declines on this value the caller may act on it
        // (found Throttling, it reads the window, which must be the one this state published).
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let old = Snapshot::decode(current);
            let Some(new) = decide(old) else {
                return Err(old);
            };
            // AcqRel on success: Release publishes what the winner did before deciding (the
            // window emptied before closing) to every `load` that sees the new word; Acquire
            // makes the winner see what earlier winners published (the closing probe's claim,
            // before it empties the window). Acquire on failure: the fresh value may be
            // declined on, and is then acted on as above.
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
            throttling(4, 1).after_failure(4, |_| 3, || 500),
            Some(throttling(4, 2))
        );
        assert_eq!(
            throttling(4, 2).after_failure(4, |_| 3, || 500),
            Some(shedding(5, 500))
        );
        assert_eq!(
            throttling(4, 0).after_failure(4, |_| 1, || 500),
            Some(shedding(5, 500))
        );
    }

    #[test]
    fn outcomes_of_another_generation_or_phase_change_nothing() {
        assert_eq!(throttling(4, 1).after_failure(3, |_| 3, || 500), None);
        assert_eq!(shedding(4, 9).after_failure(4, |_| 3, || 500), None);
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
    fn a_successful_probe_claims_the_close_then_goes_back_to_throttling() {
        let claimed = shedding(6, 100).claim_close(6);
        assert_eq!(claimed, Some(shedding(6, CLOSING_MS)));
        assert!(claimed.unwrap().is_closing());
        assert_eq!(
            shedding(6, CLOSING_MS).after_probe_success(6),
            Some(throttling(7, 0))
        );
    }

    #[test]
    fn only_one_probe_claims_a_close_and_nobody_takes_its_slot() {
        assert_eq!(shedding(6, CLOSING_MS).claim_close(6), None, "claimed");
        assert_eq!(shedding(6, 100).after_probe_success(6), None, "unclaimed");
        assert_eq!(shedding(6, 100).claim_close(5), None, "another generation");
        assert_eq!(
            shedding(6, CLOSING_MS).take_probe_slot(LAST_REACHABLE_MS, || 1),
            None
        );
    }

    #[test]
    fn the_run_to_shed_grows_as_the_calls_before_it_succeeded_less() {
        // Half or more of the calls before the run succeeded, or too few came before it to
        // judge: `shed_after`.
        assert_eq!(run_to_shed(20, 100, 10, 100, 40, 20), 20, "40 of 80 before");
        assert_eq!(run_to_shed(20, 100, 10, 100, 79, 20), 20);
        assert_eq!(
            run_to_shed(20, 100, 10, 25, 1, 20),
            20,
            "5 before: below minimum_calls"
        );
        // A short history of successes, then failures: the run's own failures do not count
        // as the history.
        assert_eq!(run_to_shed(20, 100, 10, 30, 10, 20), 20, "10 of 10 before");
        // 20 % of the calls before succeeded: the run with odds 2^-20 is 20 · ln 2 / −ln 0.8
        // = 62.1.
        assert_eq!(run_to_shed(20, 100, 10, 100, 16, 20), 63, "16 of 80 before");
        // 40 %: 27.1.
        assert_eq!(run_to_shed(20, 100, 10, 100, 32, 20), 28, "32 of 80 before");
        // Never longer than the window; a window of failures sheds at `shed_after`.
        assert_eq!(run_to_shed(20, 100, 10, 100, 1, 20), 100, "1 of 80 before");
        assert_eq!(run_to_shed(20, 100, 10, 100, 0, 20), 20);
        assert_eq!(
            run_to_shed(20, 100, 10, 100, 10, 100),
            20,
            "nothing before the run"
        );
        assert_eq!(
            run_to_shed(20, 10, 0, 10, 1, 5),
            20,
            "window below shed_after"
        );
    }

    #[test]
    fn a_failure_sheds_once_the_run_reaches_the_threshold_it_is_given() {
        // The threshold is asked with the run including this failure.
        let mut asked = 0;
        let next = throttling(4, 6).after_failure(
            4,
            |run| {
                asked = run;
                7
            },
            || 500,
        );
        assert_eq!(asked, 7);
        assert_eq!(next, Some(shedding(5, 500)));
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
            throttling(1, PAYLOAD_MASK).after_failure(1, |_| u64::MAX, || 5),
            Some(throttling(1, PAYLOAD_MASK))
        );
        // A clock that has saturated still reaches every slot: no wedge.
        assert_eq!(
            shedding(1, 0).take_probe_slot(LAST_REACHABLE_MS, || u64::MAX),
            Some(shedding(1, LAST_REACHABLE_MS))
        );
        assert_eq!(
            shedding(1, LAST_REACHABLE_MS).take_probe_slot(LAST_REACHABLE_MS, || u64::MAX),
            Some(shedding(1, LAST_REACHABLE_MS))
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
