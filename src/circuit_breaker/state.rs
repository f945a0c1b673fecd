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
//!                                                                              └──┘ Rearm (g + 1)
//!
//!   any ── isolate ──▶ Isolated      any ── force_closed ──▶ ForcedClosed      any ── reset ──▶ Closed
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
//! breaker on and none has been admitted yet, or every probe gave its slot back. Open with the
//! armed bit clear means no timer will move it on, so calls compare the clock with `until`
//! themselves.
//!
//! # Transition table
//!
//! All transitions are one `compare_exchange_weak` of the whole word in [`AtomicState::update`],
//! `AcqRel` on success (see the ordering note there). "gen" is the generation; a transition to
//! another phase always writes gen + 1. Each group of rows is decided by one pure function of
//! this file, named in the last column and unit-tested row by row; `breaker/` loads the word,
//! calls it, exchanges and runs the side effects.
//!
//! | from | event | guard | to | decided by |
//! | --- | --- | --- | --- | --- |
//! | Closed(g, f) | failure, consecutive mode | f + 1 < threshold, permit gen = g | Closed(g, f + 1) | [`on_consecutive_failure`] |
//! | Closed(g, f) | failure, consecutive mode | f + 1 ≥ threshold, permit gen = g | Open(g + 1, reopens 0, until now + open) | [`on_consecutive_failure`] |
//! | Closed(g, f > 0) | success, consecutive mode | permit gen = g | Closed(g, 0) | [`on_consecutive_success`] |
//! | Closed(g) | window trips (rates) | permit gen = g | Open(g + 1, reopens 0) | [`on_window_trip`] |
//! | Open(g, armed) | open timer fires | now ≥ until (else it sleeps until `until`) | HalfOpen(g + 1, admitted 0) | [`on_timer`] |
//! | Open(g, armed) | timer task dropped unfired | | Open(g, not armed) | [`on_timer_dropped`] |
//! | Open(g, armed) | call, one in 64 per thread | now ≥ until (the timer's runtime may not be driven) | HalfOpen(g + 1, admitted 1) | [`on_call`] |
//! | Open(g, not armed) | call | now ≥ until | HalfOpen(g + 1, admitted 1) | [`on_call`] |
//! | HalfOpen(g, a) | call | a < probes (a = 0: the caller then stamps the probe deadline) | HalfOpen(g, a + 1) | [`on_call`] |
//! | HalfOpen(g, a = probes) | call | probe deadline of g passed, Rearm | HalfOpen(g + 1, admitted 1) | [`on_call`] |
//! | HalfOpen(g, a = probes) | call | probe deadline of g passed, Reopen | Open(g + 1, reopens + 1) | [`on_call`] |
//! | HalfOpen(g, a, s) | probe success | s + 1 < probes | HalfOpen(g, a, s + 1) | [`on_probe_success`] |
//! | HalfOpen(g, a, s) | probe success | s + 1 = probes | Closed(g + 1, 0) (E1 first) | [`on_probe_success`] |
//! | HalfOpen(g, a) | probe failure or slow | | Open(g + 1, reopens + 1) | [`on_probe_failure`] |
//! | HalfOpen(g, a) | probe ignored or dropped | a > 0 | HalfOpen(g, a − 1) | [`on_probe_released`] |
//! | Closed / HalfOpen (g) | server pushback | opt-in | Open(g + 1, until now + pushback) | [`on_server_pushback`] |
//! | Open(g) | server pushback | opt-in, later than `until` | Open(g, until now + pushback) (no transition; the timer sleeps again) | [`on_server_pushback`] |
//! | any | isolate / force_closed / reset | | Isolated / ForcedClosed / Closed (g + 1) (reset: E1 first) | [`on_command`] |
//!
//! A call that finds no row to take (closed, forced closed, isolated, open before `until`, a
//! full half-open generation before its probe deadline) changes nothing: admitted or rejected
//! by [`on_call_without_clock`] or [`on_call`]. The rows the probe deadline needs (stamped when
//! a generation's first probe is admitted, or by the open timer) live in
//! [`AtomicProbeDeadline`], a word of its own.
//!
//! # Invariants
//!
//! 1. Exactly one thread performs each transition: the one whose compare-and-swap succeeds;
//!    events and timers follow only from a successful exchange. The one effect that runs
//!    before an exchange is named:
//!
//!    **E1, the window reset before closing.** A probe success that closes the breaker, and a
//!    reset command, empty the window before their exchange, so whichever thread closes it,
//!    the closed period starts clean and every call that sees Closed(g + 1) (Acquire) sees the
//!    empty window (Release). It is idempotent (one reset per decision, however many times
//!    the exchange retries) and harmless when the exchange loses: the state that won is
//!    Open, HalfOpen or Isolated, where the window counts nothing, or another close or reset
//!    that emptied it too (at worst the outcomes recorded in the microseconds between the two
//!    resets are forgotten).
//!
//!    Stamping the probe deadline is not part of any exchange: it happens after one, or after
//!    a call declined to make one, and [`AtomicProbeDeadline::stamp`] refuses a generation
//!    that is no longer current and never moves a deadline earlier.
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

use super::config::HalfOpenTimeout;
use super::handle::TransitionReason;
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

// ---------------------------------------------------------------------------------------------
// Decisions: one pure function per group of rows of the transition table. Each takes the
// snapshot a caller loaded and says what the word should become (`None`: leave it). They read
// no clock, draw no randomness and touch no atomic; the breaker passes them the time, its
// settings and, for a move to Open, the open period it computed (`OpenPeriod`). `breaker.rs`
// keeps the loads, the exchange and the side effects.
// ---------------------------------------------------------------------------------------------

/// The open period of a move to Open, computed by the caller once per reopen count (its jitter
/// draw must not repeat when the exchange retries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OpenPeriod {
    /// Whether an open timer will move the breaker on (else calls compare the clock).
    pub(crate) armed: bool,
    /// When the open period ends, in ms since the breaker's epoch.
    pub(crate) until_ms: u64,
}

/// Open(`from` + 1) after `reopens` re-opens, for `period`.
fn opened(from: u16, reopens: u8, period: OpenPeriod) -> Snapshot {
    Snapshot::Open {
        generation: next_generation(from),
        reopens,
        armed: period.armed,
        until_ms: period.until_ms,
    }
}

/// HalfOpen(`from` + 1) with `admitted` probe slots taken.
fn half_opened(from: u16, reopens: u8, admitted: u16) -> Snapshot {
    Snapshot::HalfOpen {
        generation: next_generation(from),
        reopens,
        admitted,
        succeeded: 0,
    }
}

/// `now_ns` (ns since the epoch) has reached `ms` (ms since the epoch).
fn reached(now_ns: u64, ms: u64) -> bool {
    now_ns >= ms.saturating_mul(NANOS_PER_MS)
}

pub(crate) const NANOS_PER_MS: u64 = 1_000_000;

/// What a call gets from the state it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallDecision {
    /// Admitted as a closed call of `generation`; the word is left as it is.
    Closed { generation: u16 },
    /// Admitted, and nothing will be recorded (forced closed).
    Untracked,
    /// Rejected; the word is left as it is. `stamp_probe_deadline`: the half-open generation is
    /// full but has no probe deadline yet (the thread that took its first slot has not stamped
    /// it), so this caller stamps it, and a hung probe is still rescued in time (invariant 5).
    Rejected { stamp_probe_deadline: bool },
    /// Exchange the word for this state: a probe slot taken (HalfOpen, the call is a probe of
    /// its generation), or the stuck probes given up for a re-open (Open, rejected).
    Exchange(Snapshot),
}

/// What a call decides when it can do so without the clock: closed, forced closed, isolated,
/// and open with its timer armed (the timer moves it on). `None`: ask [`on_call`] with the time.
#[inline]
pub(crate) fn on_call_without_clock(snapshot: Snapshot) -> Option<CallDecision> {
    match snapshot {
        Snapshot::Closed { generation, .. } => Some(CallDecision::Closed { generation }),
        Snapshot::ForcedClosed { .. } => Some(CallDecision::Untracked),
        Snapshot::Isolated { .. } | Snapshot::Open { armed: true, .. } => {
            Some(CallDecision::Rejected {
                stamp_probe_deadline: false,
            })
        }
        Snapshot::Open { armed: false, .. } | Snapshot::HalfOpen { .. } => None,
    }
}

/// The rows "call" of the table, at `now_ns` (ns since the epoch). `probe_deadline_ms` is the
/// stamped probe deadline of the snapshot's generation, if any.
pub(crate) fn on_call(
    snapshot: Snapshot,
    now_ns: u64,
    probes: u16,
    probe_deadline_ms: Option<u64>,
    on_probe_timeout: HalfOpenTimeout,
    reopen: impl FnOnce(u8) -> OpenPeriod,
) -> CallDecision {
    match snapshot {
        Snapshot::Closed { generation, .. } => CallDecision::Closed { generation },
        Snapshot::ForcedClosed { .. } => CallDecision::Untracked,
        Snapshot::Isolated { .. } => CallDecision::Rejected {
            stamp_probe_deadline: false,
        },
        Snapshot::Open {
            generation,
            reopens,
            until_ms,
            ..
        } => {
            if reached(now_ns, until_ms) {
                CallDecision::Exchange(half_opened(generation, reopens, 1))
            } else {
                CallDecision::Rejected {
                    stamp_probe_deadline: false,
                }
            }
        }
        Snapshot::HalfOpen {
            generation,
            reopens,
            admitted,
            succeeded,
        } => {
            if admitted < probes {
                return CallDecision::Exchange(Snapshot::HalfOpen {
                    generation,
                    reopens,
                    admitted: admitted + 1,
                    succeeded,
                });
            }
            match probe_deadline_ms {
                Some(deadline_ms) if reached(now_ns, deadline_ms) => {
                    CallDecision::Exchange(match on_probe_timeout {
                        HalfOpenTimeout::Rearm => half_opened(generation, reopens, 1),
                        HalfOpenTimeout::Reopen => {
                            let reopens = next_reopens(reopens);
                            opened(generation, reopens, reopen(reopens))
                        }
                    })
                }
                deadline => CallDecision::Rejected {
                    stamp_probe_deadline: deadline.is_none(),
                },
            }
        }
    }
}

/// Why an exchange a call made ([`on_call`]) is a transition, if it is one (taking a probe slot
/// is not).
pub(crate) fn call_transition(old: Snapshot, new: Snapshot) -> Option<TransitionReason> {
    match (old, new) {
        (Snapshot::Open { .. }, _) => Some(TransitionReason::OpenElapsed),
        (Snapshot::HalfOpen { generation: g, .. }, Snapshot::HalfOpen { generation, .. })
            if g != generation =>
        {
            Some(TransitionReason::ProbesTimedOut)
        }
        (_, Snapshot::Open { .. }) => Some(TransitionReason::ProbesTimedOut),
        _ => None,
    }
}

/// Whether `snapshot` is Closed in `generation`: the only state a closed call's outcome may
/// change (invariant 3).
#[inline]
pub(crate) fn is_closed_in(snapshot: Snapshot, generation: u16) -> bool {
    matches!(snapshot, Snapshot::Closed { generation: g, .. } if g == generation)
}

/// Consecutive mode, a failure of a call admitted closed in `generation`: one more in the run,
/// or Open once the run reaches `threshold`.
pub(crate) fn on_consecutive_failure(
    snapshot: Snapshot,
    generation: u16,
    threshold: u64,
    open: impl FnOnce(u8) -> OpenPeriod,
) -> Option<Snapshot> {
    match snapshot {
        Snapshot::Closed {
            generation: g,
            failures,
        } if g == generation => Some(if failures.saturating_add(1) >= threshold {
            opened(generation, 0, open(0))
        } else {
            Snapshot::Closed {
                generation,
                failures: failures + 1,
            }
        }),
        _ => None,
    }
}

/// Consecutive mode, a success of a call admitted closed in `generation`: ends a run of
/// failures (and writes nothing when there is none).
pub(crate) fn on_consecutive_success(snapshot: Snapshot, generation: u16) -> Option<Snapshot> {
    match snapshot {
        Snapshot::Closed {
            generation: g,
            failures,
        } if g == generation && failures > 0 => Some(Snapshot::Closed {
            generation,
            failures: 0,
        }),
        _ => None,
    }
}

/// Rate mode, the window of closed generation `generation` reached a threshold: Open.
pub(crate) fn on_window_trip(
    snapshot: Snapshot,
    generation: u16,
    open: impl FnOnce(u8) -> OpenPeriod,
) -> Option<Snapshot> {
    is_closed_in(snapshot, generation).then(|| opened(generation, 0, open(0)))
}

/// A probe of half-open generation `generation` failed or was slow: Open, one more reopen.
pub(crate) fn on_probe_failure(
    snapshot: Snapshot,
    generation: u16,
    open: impl FnOnce(u8) -> OpenPeriod,
) -> Option<Snapshot> {
    match snapshot {
        Snapshot::HalfOpen {
            generation: g,
            reopens,
            ..
        } if g == generation => {
            let reopens = next_reopens(reopens);
            Some(opened(generation, reopens, open(reopens)))
        }
        _ => None,
    }
}

/// A probe of half-open generation `generation` succeeded: one more success, or Closed once
/// `probes` have. The caller resets the window before an exchange to Closed (pre-exchange
/// effect E1 under the invariants).
pub(crate) fn on_probe_success(
    snapshot: Snapshot,
    generation: u16,
    probes: u16,
) -> Option<Snapshot> {
    match snapshot {
        Snapshot::HalfOpen {
            generation: g,
            reopens,
            admitted,
            succeeded,
        } if g == generation => Some(if succeeded + 1 >= probes {
            Snapshot::Closed {
                generation: next_generation(generation),
                failures: 0,
            }
        } else {
            Snapshot::HalfOpen {
                generation,
                reopens,
                admitted,
                succeeded: succeeded + 1,
            }
        }),
        _ => None,
    }
}

/// A probe of half-open generation `generation` gave its slot back (its outcome was ignored or
/// its future dropped): the slot is free for a new probe.
pub(crate) fn on_probe_released(snapshot: Snapshot, generation: u16) -> Option<Snapshot> {
    match snapshot {
        Snapshot::HalfOpen {
            generation: g,
            reopens,
            admitted,
            succeeded,
        } if g == generation && admitted > 0 => Some(Snapshot::HalfOpen {
            generation,
            reopens,
            admitted: admitted - 1,
            succeeded,
        }),
        _ => None,
    }
}

/// The server asked callers to stay away until `until_ms` (server-directed mode): Open until
/// then, from Closed or HalfOpen; an Open breaker's `until` is pushed out in the same
/// generation (no transition: its timer sees the later time and sleeps again). An operator's
/// state (Isolated, ForcedClosed) and a later `until` are left alone.
pub(crate) fn on_server_pushback(
    snapshot: Snapshot,
    until_ms: u64,
    armed: bool,
) -> Option<Snapshot> {
    match snapshot {
        Snapshot::Isolated { .. } | Snapshot::ForcedClosed { .. } => None,
        Snapshot::Open { until_ms: u, .. } if u >= until_ms => None,
        Snapshot::Open {
            generation,
            reopens,
            armed,
            ..
        } => Some(Snapshot::Open {
            generation,
            reopens,
            armed,
            until_ms,
        }),
        other => Some(opened(
            other.generation(),
            other.reopens(),
            OpenPeriod { armed, until_ms },
        )),
    }
}

/// What the open timer of generation `generation` does when it wakes at `now_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimerDecision {
    /// The open period is over: HalfOpen(g + 1) with no probe admitted yet.
    Exchange(Snapshot),
    /// Server pushback moved `until` out: sleep again until this ms.
    SleepUntil(u64),
    /// The breaker has left that generation: the timer is done.
    Done,
}

/// The row "open timer fires".
pub(crate) fn on_timer(snapshot: Snapshot, generation: u16, now_ns: u64) -> TimerDecision {
    match snapshot {
        Snapshot::Open {
            generation: g,
            reopens,
            until_ms,
            ..
        } if g == generation => {
            if reached(now_ns, until_ms) {
                TimerDecision::Exchange(half_opened(generation, reopens, 0))
            } else {
                TimerDecision::SleepUntil(until_ms)
            }
        }
        _ => TimerDecision::Done,
    }
}

/// The row "timer task dropped unfired": Open(g) loses its armed bit, so calls compare the
/// clock themselves (invariant 6).
pub(crate) fn on_timer_dropped(snapshot: Snapshot, generation: u16) -> Option<Snapshot> {
    match snapshot {
        Snapshot::Open {
            generation: g,
            reopens,
            armed: true,
            until_ms,
        } if g == generation => Some(Snapshot::Open {
            generation,
            reopens,
            armed: false,
            until_ms,
        }),
        _ => None,
    }
}

/// An operator's command ([`CircuitBreakerHandle`](super::CircuitBreakerHandle)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Isolate,
    ForceClosed,
    /// Closed with a fresh window; the caller resets the window first (pre-exchange effect E1).
    Reset,
}

/// The rows "isolate / force_closed / reset": from any state, always a transition.
pub(crate) fn on_command(snapshot: Snapshot, command: Command) -> Snapshot {
    let generation = next_generation(snapshot.generation());
    match command {
        Command::Isolate => Snapshot::Isolated { generation },
        Command::ForceClosed => Snapshot::ForcedClosed { generation },
        Command::Reset => Snapshot::Closed {
            generation,
            failures: 0,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// The probe deadline: when the probes of a half-open generation count as stuck.
// ---------------------------------------------------------------------------------------------

/// Bits 63–48 of the deadline word: the generation it belongs to (13 bits used).
const DEADLINE_GENERATION_SHIFT: u32 = 48;
/// Bits 47–0: the deadline, ms since the breaker's epoch.
const DEADLINE_MS_MASK: u64 = (1 << 48) - 1;
/// No deadline stamped yet: its generation field (0xFFFF) matches no 13-bit generation.
const DEADLINE_UNSET: u64 = u64::MAX;

/// The probe deadline of the current half-open generation: one `AtomicU64` holding
/// `[generation | ms since the epoch 48]`. Self-validating: a stamp of another generation reads
/// as "not stamped yet", so it never needs clearing when the breaker moves on.
pub(crate) struct AtomicProbeDeadline {
    word: AtomicU64,
}

impl AtomicProbeDeadline {
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU64::new(DEADLINE_UNSET),
        }
    }

    /// The deadline of `generation`, in ms since the epoch, if it has been stamped.
    pub(crate) fn of(&self, generation: u16) -> Option<u64> {
        // Relaxed: the stamp carries its own generation, so a stale value is recognised and
        // read as "not yet stamped"; the state word's exchange decides any re-arm.
        let word = self.word.load(Ordering::Relaxed);
        (word >> DEADLINE_GENERATION_SHIFT == u64::from(generation))
            .then_some(word & DEADLINE_MS_MASK)
    }

    /// Stamps `deadline_ms` for `generation`, unless a later one is already stamped for it (a
    /// fresh first probe pushes the deadline later, never earlier) or `still_current` says the
    /// breaker has moved past that generation: a late stamp must never replace a newer
    /// generation's. Idempotent, so safe to call from any thread at any time.
    pub(crate) fn stamp(
        &self,
        generation: u16,
        deadline_ms: u64,
        still_current: impl Fn() -> bool,
    ) {
        let deadline_ms = deadline_ms.min(DEADLINE_MS_MASK);
        let stamp = (u64::from(generation) << DEADLINE_GENERATION_SHIFT) | deadline_ms;
        // Relaxed: see `of`; the exchange only has to be atomic with respect to other stamps,
        // and the generation check keeps a stale stamper out.
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let already_later = current >> DEADLINE_GENERATION_SHIFT == u64::from(generation)
                && current & DEADLINE_MS_MASK >= deadline_ms;
            if already_later || !still_current() {
                return;
            }
            match self.word.compare_exchange_weak(
                current,
                stamp,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }
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
    /// `decide` must be pure and cheap (one of the decision functions above): under contention
    /// it runs once per attempt, and only the attempt that wins the exchange takes effect.
    /// Callers perform side effects (events, timers) only with the returned pair.
    #[inline]
    pub(crate) fn update(
        &self,
        decide: impl FnMut(Snapshot) -> Option<Snapshot>,
    ) -> Option<(Snapshot, Snapshot)> {
        self.update_preparing(decide, |_| {})
    }

    /// [`update`](Self::update), running `prepare` on each decided state just before trying
    /// to exchange it: the place for a named pre-exchange effect (E1 under the invariants),
    /// which must be idempotent and harmless when the exchange loses.
    pub(crate) fn update_preparing(
        &self,
        mut decide: impl FnMut(Snapshot) -> Option<Snapshot>,
        mut prepare: impl FnMut(Snapshot),
    ) -> Option<(Snapshot, Snapshot)> {
        // Relaxed: the value only seeds the first attempt, and the exchange below re-checks it.
        // When `decide` declines on this value, the caller acts on a possibly stale view; the
        // callers that decline (recorders, releases) only ever decline into doing nothing.
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let old = Snapshot::decode(current);
            let new = decide(old)?;
            prepare(new);
            // AcqRel on success: Release publishes what the winner wrote before exchanging (E1's
            // window reset) to every `load` that sees the new word; Acquire
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
    use std::cell::Cell;

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

    // The decision functions, one test per row of the transition table (and the "no row"
    // cases beside it).

    const PERIOD: OpenPeriod = OpenPeriod {
        armed: true,
        until_ms: 9_000,
    };

    /// An open period that records the reopen count it was asked for.
    fn period_for(asked: &Cell<Option<u8>>) -> impl Fn(u8) -> OpenPeriod + '_ {
        move |reopens| {
            asked.set(Some(reopens));
            PERIOD
        }
    }

    fn closed(generation: u16, failures: u64) -> Snapshot {
        Snapshot::Closed {
            generation,
            failures,
        }
    }

    fn open(generation: u16, reopens: u8, armed: bool, until_ms: u64) -> Snapshot {
        Snapshot::Open {
            generation,
            reopens,
            armed,
            until_ms,
        }
    }

    fn half_open(generation: u16, reopens: u8, admitted: u16, succeeded: u16) -> Snapshot {
        Snapshot::HalfOpen {
            generation,
            reopens,
            admitted,
            succeeded,
        }
    }

    fn no_period(_: u8) -> OpenPeriod {
        panic!("this row never opens")
    }

    const MS: u64 = NANOS_PER_MS;
    const REJECT: CallDecision = CallDecision::Rejected {
        stamp_probe_deadline: false,
    };

    #[test]
    fn a_consecutive_failure_adds_to_the_run_below_the_threshold() {
        assert_eq!(
            on_consecutive_failure(closed(4, 1), 4, 3, no_period),
            Some(closed(4, 2))
        );
    }

    #[test]
    fn a_consecutive_failure_that_reaches_the_threshold_opens_with_no_reopens() {
        let asked = Cell::new(None);
        assert_eq!(
            on_consecutive_failure(closed(4, 2), 4, 3, period_for(&asked)),
            Some(open(5, 0, true, 9_000))
        );
        assert_eq!(asked.get(), Some(0));
        // A threshold of one opens on the first failure.
        assert_eq!(
            on_consecutive_failure(closed(8191, 0), 8191, 1, |_| PERIOD),
            Some(open(0, 0, true, 9_000)),
            "and the generation wraps"
        );
    }

    #[test]
    fn a_consecutive_failure_of_another_generation_or_state_changes_nothing() {
        assert_eq!(on_consecutive_failure(closed(5, 2), 4, 3, no_period), None);
        assert_eq!(
            on_consecutive_failure(open(5, 0, true, 1), 4, 3, no_period),
            None
        );
        assert_eq!(
            on_consecutive_failure(half_open(4, 0, 1, 0), 4, 3, no_period),
            None
        );
    }

    #[test]
    fn a_consecutive_success_ends_a_run_and_writes_nothing_without_one() {
        assert_eq!(on_consecutive_success(closed(4, 2), 4), Some(closed(4, 0)));
        assert_eq!(on_consecutive_success(closed(4, 0), 4), None);
        assert_eq!(on_consecutive_success(closed(5, 2), 4), None);
        assert_eq!(
            on_consecutive_success(Snapshot::Isolated { generation: 4 }, 4),
            None
        );
    }

    #[test]
    fn a_window_trip_opens_only_its_own_closed_generation() {
        let asked = Cell::new(None);
        assert_eq!(
            on_window_trip(closed(4, 0), 4, period_for(&asked)),
            Some(open(5, 0, true, 9_000))
        );
        assert_eq!(asked.get(), Some(0));
        assert_eq!(on_window_trip(closed(5, 0), 4, no_period), None);
        assert_eq!(on_window_trip(open(4, 0, false, 1), 4, no_period), None);
        assert_eq!(
            on_window_trip(Snapshot::ForcedClosed { generation: 4 }, 4, no_period),
            None
        );
    }

    #[test]
    fn the_open_timer_half_opens_with_no_probe_once_until_has_passed() {
        assert_eq!(
            on_timer(open(4, 2, true, 100), 4, 100 * MS),
            TimerDecision::Exchange(half_open(5, 2, 0, 0))
        );
        assert_eq!(
            on_timer(open(4, 2, true, 100), 4, 100 * MS - 1),
            TimerDecision::SleepUntil(100),
            "a nanosecond early it sleeps until `until`"
        );
        assert_eq!(
            on_timer(half_open(5, 2, 0, 0), 4, 200 * MS),
            TimerDecision::Done
        );
        assert_eq!(
            on_timer(open(6, 2, true, 100), 4, 200 * MS),
            TimerDecision::Done,
            "a timer of an older open generation is done"
        );
    }

    #[test]
    fn a_dropped_timer_disarms_its_own_open_generation_only() {
        assert_eq!(
            on_timer_dropped(open(4, 1, true, 100), 4),
            Some(open(4, 1, false, 100))
        );
        assert_eq!(on_timer_dropped(open(4, 1, false, 100), 4), None);
        assert_eq!(on_timer_dropped(open(5, 1, true, 100), 4), None);
        assert_eq!(on_timer_dropped(closed(4, 0), 4), None);
    }

    #[test]
    fn a_call_decides_without_the_clock_in_every_state_that_does_not_need_it() {
        assert_eq!(
            on_call_without_clock(closed(3, 7)),
            Some(CallDecision::Closed { generation: 3 })
        );
        assert_eq!(
            on_call_without_clock(Snapshot::ForcedClosed { generation: 3 }),
            Some(CallDecision::Untracked)
        );
        assert_eq!(
            on_call_without_clock(Snapshot::Isolated { generation: 3 }),
            Some(REJECT)
        );
        assert_eq!(on_call_without_clock(open(3, 0, true, 10)), Some(REJECT));
        assert_eq!(on_call_without_clock(open(3, 0, false, 10)), None);
        assert_eq!(on_call_without_clock(half_open(3, 0, 1, 0)), None);
    }

    fn call(snapshot: Snapshot, now_ms: u64, deadline: Option<u64>) -> CallDecision {
        on_call(
            snapshot,
            now_ms * MS,
            2,
            deadline,
            HalfOpenTimeout::Rearm,
            no_period,
        )
    }

    #[test]
    fn a_call_on_a_closed_forced_or_isolated_breaker_changes_nothing() {
        assert_eq!(
            call(closed(3, 1), 0, None),
            CallDecision::Closed { generation: 3 }
        );
        assert_eq!(
            call(Snapshot::ForcedClosed { generation: 3 }, 0, None),
            CallDecision::Untracked
        );
        assert_eq!(call(Snapshot::Isolated { generation: 3 }, 0, None), REJECT);
    }

    #[test]
    fn a_call_half_opens_an_open_breaker_once_until_has_passed_armed_or_not() {
        for armed in [false, true] {
            assert_eq!(call(open(3, 1, armed, 50), 49, None), REJECT);
            assert_eq!(
                on_call(
                    open(3, 1, armed, 50),
                    50 * MS - 1,
                    2,
                    None,
                    HalfOpenTimeout::Rearm,
                    no_period
                ),
                REJECT,
                "a nanosecond early"
            );
            assert_eq!(
                call(open(3, 1, armed, 50), 50, None),
                CallDecision::Exchange(half_open(4, 1, 1, 0)),
                "the caller is the first probe"
            );
        }
    }

    #[test]
    fn a_call_takes_a_free_probe_slot() {
        assert_eq!(
            call(half_open(4, 1, 0, 0), 0, None),
            CallDecision::Exchange(half_open(4, 1, 1, 0))
        );
        assert_eq!(
            call(half_open(4, 1, 1, 1), 0, Some(5)),
            CallDecision::Exchange(half_open(4, 1, 2, 1)),
            "even with a deadline passed, a free slot is taken in the same generation"
        );
    }

    #[test]
    fn a_full_half_open_generation_rejects_until_its_probe_deadline() {
        assert_eq!(call(half_open(4, 1, 2, 0), 99, Some(100)), REJECT);
        assert_eq!(
            call(half_open(4, 1, 2, 0), 99, None),
            CallDecision::Rejected {
                stamp_probe_deadline: true
            },
            "with no deadline stamped, the rejected caller stamps it"
        );
    }

    #[test]
    fn stuck_probes_past_the_deadline_rearm_a_new_generation() {
        assert_eq!(
            call(half_open(4, 1, 2, 1), 100, Some(100)),
            CallDecision::Exchange(half_open(5, 1, 1, 0))
        );
    }

    #[test]
    fn stuck_probes_past_the_deadline_reopen_with_one_more_reopen_under_reopen() {
        let asked = Cell::new(None);
        assert_eq!(
            on_call(
                half_open(4, 1, 2, 1),
                100 * MS,
                2,
                Some(100),
                HalfOpenTimeout::Reopen,
                period_for(&asked)
            ),
            CallDecision::Exchange(open(5, 2, true, 9_000))
        );
        assert_eq!(asked.get(), Some(2));
    }

    #[test]
    fn a_calls_exchange_names_its_transition() {
        let cases = [
            (
                open(3, 0, false, 1),
                half_open(4, 0, 1, 0),
                Some(TransitionReason::OpenElapsed),
            ),
            (
                half_open(4, 0, 2, 0),
                half_open(5, 0, 1, 0),
                Some(TransitionReason::ProbesTimedOut),
            ),
            (
                half_open(4, 0, 2, 0),
                open(5, 1, true, 9),
                Some(TransitionReason::ProbesTimedOut),
            ),
            (half_open(4, 0, 0, 0), half_open(4, 0, 1, 0), None),
        ];
        for (old, new, reason) in cases {
            assert_eq!(call_transition(old, new), reason, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn a_probe_success_counts_and_the_last_one_closes() {
        assert_eq!(
            on_probe_success(half_open(4, 3, 2, 0), 4, 2),
            Some(half_open(4, 3, 2, 1))
        );
        assert_eq!(
            on_probe_success(half_open(4, 3, 2, 1), 4, 2),
            Some(closed(5, 0)),
            "closing forgets the reopens"
        );
        assert_eq!(on_probe_success(half_open(5, 3, 2, 1), 4, 2), None);
        assert_eq!(on_probe_success(closed(5, 0), 4, 2), None);
    }

    #[test]
    fn a_probe_failure_reopens_with_one_more_reopen() {
        let asked = Cell::new(None);
        assert_eq!(
            on_probe_failure(half_open(4, 3, 1, 0), 4, period_for(&asked)),
            Some(open(5, 4, true, 9_000))
        );
        assert_eq!(asked.get(), Some(4));
        assert_eq!(
            on_probe_failure(half_open(4, 63, 1, 0), 4, |_| PERIOD),
            Some(open(5, 63, true, 9_000)),
            "reopens saturate"
        );
        assert_eq!(on_probe_failure(half_open(5, 3, 1, 0), 4, no_period), None);
        assert_eq!(on_probe_failure(open(4, 3, true, 1), 4, no_period), None);
    }

    #[test]
    fn a_released_probe_gives_its_slot_back_in_its_own_generation() {
        assert_eq!(
            on_probe_released(half_open(4, 1, 2, 1), 4),
            Some(half_open(4, 1, 1, 1))
        );
        assert_eq!(on_probe_released(half_open(4, 1, 0, 0), 4), None);
        assert_eq!(on_probe_released(half_open(5, 1, 2, 1), 4), None);
        assert_eq!(on_probe_released(closed(4, 0), 4), None);
    }

    #[test]
    fn server_pushback_opens_closed_and_half_open_breakers() {
        assert_eq!(
            on_server_pushback(closed(4, 2), 700, false),
            Some(open(5, 0, false, 700))
        );
        assert_eq!(
            on_server_pushback(half_open(4, 3, 1, 0), 700, true),
            Some(open(5, 3, true, 700)),
            "keeping the reopen count"
        );
    }

    #[test]
    fn server_pushback_only_pushes_an_open_breakers_until_later() {
        assert_eq!(
            on_server_pushback(open(4, 2, true, 500), 700, false),
            Some(open(4, 2, true, 700)),
            "same generation, and the armed bit stays"
        );
        assert_eq!(on_server_pushback(open(4, 2, true, 700), 700, true), None);
        assert_eq!(on_server_pushback(open(4, 2, true, 900), 700, true), None);
    }

    #[test]
    fn server_pushback_leaves_an_operators_state_alone() {
        assert_eq!(
            on_server_pushback(Snapshot::Isolated { generation: 4 }, 700, true),
            None
        );
        assert_eq!(
            on_server_pushback(Snapshot::ForcedClosed { generation: 4 }, 700, true),
            None
        );
    }

    #[test]
    fn commands_move_any_state_to_the_next_generation() {
        for from in [
            closed(4, 9),
            open(4, 1, true, 5),
            half_open(4, 1, 1, 0),
            Snapshot::Isolated { generation: 4 },
            Snapshot::ForcedClosed { generation: 4 },
        ] {
            assert_eq!(
                on_command(from, Command::Isolate),
                Snapshot::Isolated { generation: 5 }
            );
            assert_eq!(
                on_command(from, Command::ForceClosed),
                Snapshot::ForcedClosed { generation: 5 }
            );
            assert_eq!(on_command(from, Command::Reset), closed(5, 0));
        }
    }

    #[test]
    fn a_probe_deadline_belongs_to_one_generation_and_only_moves_later() {
        let deadline = AtomicProbeDeadline::new();
        assert_eq!(deadline.of(0), None, "nothing stamped yet");
        assert_eq!(deadline.of(8191), None);
        deadline.stamp(7, 100, || true);
        assert_eq!(deadline.of(7), Some(100));
        assert_eq!(
            deadline.of(6),
            None,
            "another generation reads as unstamped"
        );
        deadline.stamp(7, 90, || true);
        assert_eq!(deadline.of(7), Some(100), "never earlier");
        deadline.stamp(7, 150, || true);
        assert_eq!(deadline.of(7), Some(150), "later is allowed");
        deadline.stamp(8, 50, || false);
        assert_eq!(
            deadline.of(8),
            None,
            "a generation no longer current is refused"
        );
        assert_eq!(deadline.of(7), Some(150));
        deadline.stamp(8, u64::MAX, || true);
        assert_eq!(deadline.of(8), Some((1 << 48) - 1), "clamped to 48 bits");
    }
}
