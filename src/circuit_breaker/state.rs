//! The breaker's state word: one `AtomicU64` holding the phase, a generation and a payload.
//!
//! Nothing outside this file sees raw bits: the rest of the breaker works with [`Snapshot`], a
//! decoded `Copy` view, and changes the word only through [`AtomicState::update`], one
//! compare-and-swap loop around a pure decision closure.
//!
//! # State diagram
//!
//! ```text
//!                 trip: rate >= threshold after minimum_calls, or N consecutive failures
//!   Closed ──────────────────────────────────────────────────────────────────▶ Open
//!     ▲                                                                         │
//!     │ every permitted probe succeeded                     open timer fires, or│
//!     │ (window reset first)                          a call sees now >= until  │
//!     │                                                                         ▼
//!     └────────────────────────────────────────────────────────────────────  HalfOpen
//!                                                                              │  ▲
//!           a probe fails or is slow; or all probes are stuck past max wait    │  │ stuck past max
//!           and the policy is Reopen ─────────────────────▶ Open (reopens + 1) │  │ wait, policy
//!                                                                              └──┘ Rearm (gen + 1)
//!
//!   any ── isolate ──▶ Isolated        any ── force_closed ──▶ ForcedClosed        any ── reset ──▶ Closed
//!   any but Isolated/ForcedClosed ── server pushback (opt-in) ──▶ Open until the server's time
//! ```
//!
//! # Encoding
//!
//! | bits | field | meaning |
//! | --- | --- | --- |
//! | 63–61 | phase | 0 Closed, 1 Open, 2 HalfOpen, 3 Isolated, 4 ForcedClosed; 5–7 never written |
//! | 60–48 | generation | 13 bits, wraps; bumped on every transition |
//! | 47–0 | payload | per phase, below |
//!
//! | phase | payload bits | fields |
//! | --- | --- | --- |
//! | Closed | 47–0 | consecutive failures (consecutive mode only; saturates at 2^48 − 1) |
//! | Open | 47–42 · 41 · 40–0 | reopens (saturates at 63) · timer armed · open until, ms since the breaker's epoch (41 bits ≈ 69 years) |
//! | HalfOpen | 47–42 · 41–30 · 29–18 | reopens · probes admitted · probes succeeded (12 bits each, probes ≤ 4095) |
//! | Isolated, ForcedClosed | — | 0 |
//!
//! Sentinels: HalfOpen with 0 admitted means no probe is in flight: the open timer moved the
//! breaker on and none has been admitted yet, or every probe gave its slot back. Open with the armed bit clear means no timer will move it on, so calls
//! compare the clock with `until` themselves.
//!
//! # Transition table
//!
//! All transitions are one `compare_exchange_weak` of the whole word in [`AtomicState::update`],
//! `AcqRel` on success (see the ordering note there). "gen" is the generation; a transition to
//! another phase always writes gen + 1.
//!
//! | from | event | guard | to |
//! | --- | --- | --- | --- |
//! | Closed(g, f) | failure, consecutive mode | f + 1 < threshold, permit gen = g | Closed(g, f + 1) |
//! | Closed(g, f) | failure, consecutive mode | f + 1 ≥ threshold, permit gen = g | Open(g + 1, reopens 0, until now + open) |
//! | Closed(g, f > 0) | success, consecutive mode | permit gen = g | Closed(g, 0) |
//! | Closed(g) | window trips (rates) | permit gen = g | Open(g + 1, reopens 0) |
//! | Open(g, armed) | open timer fires | now ≥ until (else it sleeps until `until`) | HalfOpen(g + 1, admitted 0) |
//! | Open(g, armed) | timer task dropped unfired | | Open(g, not armed) |
//! | Open(g, armed) | call, one in 64 per thread | now ≥ until (the timer's runtime may not be driven) | HalfOpen(g + 1, admitted 1) |
//! | Open(g, not armed) | call | now ≥ until | HalfOpen(g + 1, admitted 1) |
//! | HalfOpen(g, a) | call | a < probes; a = 0 also stamps the probe deadline | HalfOpen(g, a + 1) |
//! | HalfOpen(g, a = probes) | call | probe deadline of g passed, Rearm | HalfOpen(g + 1, admitted 1) |
//! | HalfOpen(g, a = probes) | call | probe deadline of g passed, Reopen | Open(g + 1, reopens + 1) |
//! | HalfOpen(g, a, s) | probe success | s + 1 < probes | HalfOpen(g, a, s + 1) |
//! | HalfOpen(g, a, s) | probe success | s + 1 = probes | Closed(g + 1, 0) |
//! | HalfOpen(g, a) | probe failure or slow | | Open(g + 1, reopens + 1) |
//! | HalfOpen(g, a) | probe ignored or dropped | | HalfOpen(g, a − 1) |
//! | Closed / HalfOpen (g) | server pushback | opt-in | Open(g + 1, until now + pushback) |
//! | Open(g) | server pushback | opt-in, later than `until` | Open(g, until now + pushback) (no transition; the timer sleeps again) |
//! | any | isolate / force_closed / reset | | Isolated / ForcedClosed / Closed (g + 1) |
//!
//! # Invariants
//!
//! 1. Exactly one thread performs each transition: the one whose compare-and-swap succeeds;
//!    events, timers and window resets follow only from a successful exchange.
//! 2. In HalfOpen, `succeeded ≤ admitted ≤ probes`: at most `probes` probes of one generation
//!    are in flight at once, whatever the interleaving (a slot given back can be taken again).
//! 3. An outcome only changes the state of the generation its call was admitted in; an outcome
//!    of an older generation is ignored.
//! 4. Every admitted probe gives back exactly one thing: a success, a failure, or its permit
//!    (ignored outcome or dropped future).
//! 5. A HalfOpen whose probes never finish cannot wedge: once the generation's probe deadline
//!    has passed, the next call re-arms or re-opens it.
//! 6. An Open breaker always leaves: either its timer fires, or, when no timer is armed (no
//!    runtime, or the timer's task was dropped), calls compare the clock with `until`. Even
//!    with a timer armed, one rejection in 64 per thread compares the clock, so a timer whose
//!    runtime is alive but no longer driven cannot hold the breaker open.
//!
//! # ABA
//!
//! The generation is the ABA defence: an outcome or a timer carries the generation it belongs
//! to, and a transition always bumps it. It has 13 bits, so it repeats after 8192 transitions;
//! a late outcome is misattributed only if its call stayed in flight across exactly a multiple
//! of 8192 transitions (4096 open/half-open cycles, each lasting at least the open duration,
//! or for a server-directed open at least `MIN_SERVER_PUSHBACK`, 1 s: the word has no bit left
//! to widen the generation, so the minimum pushback is what keeps a server answering
//! `Retry-After: 0` from cycling it in seconds).
//! Even then it lands on a state where it is either ignored or counted as one probe result.

use crate::sync::{AtomicU64, Ordering};

const PHASE_SHIFT: u32 = 61;
const GENERATION_SHIFT: u32 = 48;
const GENERATION_MASK: u64 = (1 << 13) - 1;
const PAYLOAD_MASK: u64 = (1 << 48) - 1;

const REOPENS_SHIFT: u32 = 42;
const REOPENS_MAX: u64 = (1 << 6) - 1;
const ARMED_BIT: u64 = 1 << 41;
const UNTIL_MASK: u64 = (1 << 41) - 1;
const ADMITTED_SHIFT: u32 = 30;
const SUCCEEDED_SHIFT: u32 = 18;
const PROBES_MASK: u64 = (1 << 12) - 1;

/// The most probes a half-open breaker can admit (12 bits).
pub(crate) const MAX_PROBES: u16 = 4095;
/// The largest `until` the word can hold, in ms since the epoch (41 bits).
pub(crate) const MAX_UNTIL_MS: u64 = UNTIL_MASK;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const ISOLATED: u64 = 3;
const FORCED_CLOSED: u64 = 4;

/// One decoded load of the state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Snapshot {
    Closed {
        generation: u16,
        failures: u64,
    },
    Open {
        generation: u16,
        reopens: u8,
        armed: bool,
        until_ms: u64,
    },
    HalfOpen {
        generation: u16,
        reopens: u8,
        admitted: u16,
        succeeded: u16,
    },
    Isolated {
        generation: u16,
    },
    ForcedClosed {
        generation: u16,
    },
}

impl Snapshot {
    /// The state a new breaker starts in.
    pub(crate) const INITIAL: Self = Self::Closed {
        generation: 0,
        failures: 0,
    };

    #[inline]
    pub(crate) fn generation(self) -> u16 {
        match self {
            Self::Closed { generation, .. }
            | Self::Open { generation, .. }
            | Self::HalfOpen { generation, .. }
            | Self::Isolated { generation }
            | Self::ForcedClosed { generation } => generation,
        }
    }

    /// Reopens carried through Open and HalfOpen (zero elsewhere).
    pub(crate) fn reopens(self) -> u8 {
        match self {
            Self::Open { reopens, .. } | Self::HalfOpen { reopens, .. } => reopens,
            _ => 0,
        }
    }

    #[inline]
    fn encode(self) -> u64 {
        let (phase, generation, payload) = match self {
            Self::Closed {
                generation,
                failures,
            } => (CLOSED, generation, failures.min(PAYLOAD_MASK)),
            Self::Open {
                generation,
                reopens,
                armed,
                until_ms,
            } => (
                OPEN,
                generation,
                (u64::from(reopens).min(REOPENS_MAX) << REOPENS_SHIFT)
                    | if armed { ARMED_BIT } else { 0 }
                    | until_ms.min(UNTIL_MASK),
            ),
            Self::HalfOpen {
                generation,
                reopens,
                admitted,
                succeeded,
            } => (
                HALF_OPEN,
                generation,
                (u64::from(reopens).min(REOPENS_MAX) << REOPENS_SHIFT)
                    | (u64::from(admitted).min(PROBES_MASK) << ADMITTED_SHIFT)
                    | (u64::from(succeeded).min(PROBES_MASK) << SUCCEEDED_SHIFT),
            ),
            Self::Isolated { generation } => (ISOLATED, generation, 0),
            Self::ForcedClosed { generation } => (FORCED_CLOSED, generation, 0),
        };
        (phase << PHASE_SHIFT)
            | ((u64::from(generation) & GENERATION_MASK) << GENERATION_SHIFT)
            | payload
    }

    #[allow(clippy::cast_possible_truncation)] // every field is masked to its width first
    #[inline]
    fn decode(word: u64) -> Self {
        let generation = ((word >> GENERATION_SHIFT) & GENERATION_MASK) as u16;
        let payload = word & PAYLOAD_MASK;
        let reopens = ((payload >> REOPENS_SHIFT) & REOPENS_MAX) as u8;
        match word >> PHASE_SHIFT {
            CLOSED => Self::Closed {
                generation,
                failures: payload,
            },
            OPEN => Self::Open {
                generation,
                reopens,
                armed: payload & ARMED_BIT != 0,
                until_ms: payload & UNTIL_MASK,
            },
            HALF_OPEN => Self::HalfOpen {
                generation,
                reopens,
                admitted: ((payload >> ADMITTED_SHIFT) & PROBES_MASK) as u16,
                succeeded: ((payload >> SUCCEEDED_SHIFT) & PROBES_MASK) as u16,
            },
            ISOLATED => Self::Isolated { generation },
            phase => {
                // Phases 5–7 are never written; decoding one is a bug. Fail open rather than
                // panic on a request path.
                debug_assert_eq!(phase, FORCED_CLOSED, "corrupt breaker word {word:#x}");
                Self::ForcedClosed { generation }
            }
        }
    }
}

/// The generation after `generation` (wrapping in 13 bits).
#[inline]
pub(crate) fn next_generation(generation: u16) -> u16 {
    #[allow(clippy::cast_possible_truncation)] // masked to 13 bits
    let next = ((u64::from(generation) + 1) & GENERATION_MASK) as u16;
    next
}

/// Reopens after `reopens`, saturating at the field's maximum.
pub(crate) fn next_reopens(reopens: u8) -> u8 {
    #[allow(clippy::cast_possible_truncation)] // bounded by REOPENS_MAX
    let next = (u64::from(reopens) + 1).min(REOPENS_MAX) as u8;
    next
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
        // Closed(g + 1) also sees the window reset the closing thread did before closing, so
        // its outcomes land in the fresh window. The word is otherwise the only data the
        // state machine shares, and a slightly stale view costs at most a call admitted or
        // rejected just as the state changes; the exchange in `update` is what decides.
        Snapshot::decode(self.word.load(Ordering::Acquire))
    }

    /// The generation if the breaker is Closed, without decoding the rest: the hot path of
    /// admission and of recording a success.
    #[inline]
    pub(crate) fn closed_generation(&self) -> Option<u16> {
        // Acquire: as in `load`.
        let word = self.word.load(Ordering::Acquire);
        #[allow(clippy::cast_possible_truncation)] // masked to 13 bits
        let generation = ((word >> GENERATION_SHIFT) & GENERATION_MASK) as u16;
        (word >> PHASE_SHIFT == CLOSED).then_some(generation)
    }

    /// `until_ms` if the breaker is Open with its timer armed (the state that rejects without
    /// reading the clock), without decoding the rest.
    #[inline]
    pub(crate) fn armed_open_until(&self) -> Option<u64> {
        // Relaxed would do for a rejection, but Acquire keeps every load of the word alike.
        let word = self.word.load(Ordering::Acquire);
        (word >> PHASE_SHIFT == OPEN && word & ARMED_BIT != 0).then_some(word & UNTIL_MASK)
    }

    /// Whether the breaker is Closed in `generation` with no run of failures: the state in
    /// which a success in consecutive mode changes nothing.
    #[inline]
    pub(crate) fn is_closed_without_failures(&self, generation: u16) -> bool {
        // Acquire: as in `load`.
        let word = self.word.load(Ordering::Acquire);
        word == Snapshot::Closed {
            generation,
            failures: 0,
        }
        .encode()
    }

    /// Applies `decide` until the word changes from the state it decided on, or `decide`
    /// declines (`None`). Returns the exchanged pair on success.
    ///
    /// `decide` must be pure and cheap: under contention it runs once per attempt, and only
    /// the attempt that wins the exchange takes effect. Callers perform side effects (events,
    /// timers) only with the returned pair.
    pub(crate) fn update(
        &self,
        mut decide: impl FnMut(Snapshot) -> Option<Snapshot>,
    ) -> Option<(Snapshot, Snapshot)> {
        // Relaxed: the value only seeds the first attempt, and the exchange below re-checks it.
        // When `decide` declines on this value, the caller acts on a possibly stale view; the
        // callers that decline (recorders, releases) only ever decline into doing nothing.
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let old = Snapshot::decode(current);
            let new = decide(old)?;
            // AcqRel on success: Release publishes what the winner wrote before deciding (the
            // window reset before closing) to every `load` that sees the new word; Acquire
            // makes the winner see what earlier winners published. Relaxed on failure: the
            // loop retries with the fresh value, which the next exchange checks again.
            match self.word.compare_exchange_weak(
                current,
                new.encode(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((old, new)),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn any_snapshot() -> impl Strategy<Value = Snapshot> {
        let generation = 0u16..8192;
        prop_oneof![
            (generation.clone(), 0u64..=PAYLOAD_MASK).prop_map(|(generation, failures)| {
                Snapshot::Closed {
                    generation,
                    failures,
                }
            }),
            (
                generation.clone(),
                0u8..64,
                any::<bool>(),
                0u64..=MAX_UNTIL_MS
            )
                .prop_map(|(generation, reopens, armed, until_ms)| Snapshot::Open {
                    generation,
                    reopens,
                    armed,
                    until_ms
                }),
            (
                generation.clone(),
                0u8..64,
                0u16..=MAX_PROBES,
                0u16..=MAX_PROBES
            )
                .prop_map(|(generation, reopens, admitted, succeeded)| {
                    Snapshot::HalfOpen {
                        generation,
                        reopens,
                        admitted,
                        succeeded,
                    }
                }),
            generation
                .clone()
                .prop_map(|generation| Snapshot::Isolated { generation }),
            generation.prop_map(|generation| Snapshot::ForcedClosed { generation }),
        ]
    }

    proptest! {
        #[test]
        fn every_snapshot_round_trips_through_the_word(snapshot in any_snapshot()) {
            prop_assert_eq!(Snapshot::decode(snapshot.encode()), snapshot);
        }
    }

    #[test]
    fn out_of_range_fields_saturate_instead_of_spilling_into_neighbours() {
        let open = Snapshot::Open {
            generation: 5,
            reopens: 200,
            armed: false,
            until_ms: u64::MAX,
        };
        assert_eq!(
            Snapshot::decode(open.encode()),
            Snapshot::Open {
                generation: 5,
                reopens: 63,
                armed: false,
                until_ms: MAX_UNTIL_MS
            }
        );
        let closed = Snapshot::Closed {
            generation: 1,
            failures: u64::MAX,
        };
        assert_eq!(
            Snapshot::decode(closed.encode()),
            Snapshot::Closed {
                generation: 1,
                failures: PAYLOAD_MASK
            }
        );
    }

    #[test]
    fn generations_wrap_in_13_bits() {
        assert_eq!(next_generation(8191), 0);
        assert_eq!(next_generation(7), 8);
        assert_eq!(next_reopens(63), 63);
    }

    #[test]
    fn update_declines_without_writing() {
        let state = AtomicState::new(Snapshot::INITIAL);
        assert_eq!(state.update(|_| None), None);
        assert_eq!(state.load(), Snapshot::INITIAL);
        let next = Snapshot::Isolated { generation: 1 };
        assert_eq!(
            state.update(|_| Some(next)),
            Some((Snapshot::INITIAL, next))
        );
        assert_eq!(state.load(), next);
    }
}
