//! Model-based test: random sequences of calls, outcomes, drops, clock advances and manual
//! control, run against the atomic breaker and against a plain single-threaded model written
//! the obvious way (it keeps every outcome in a list and re-evaluates after *every* outcome).
//! After each step the two must agree on the state word, the window's counts and every
//! admission. This also checks the breaker's shortcuts (writing nothing for a success that
//! changes nothing, evaluating only after outcomes that can trip) against the plain rules.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::Duration;

use proptest::prelude::*;

use super::breaker::{Admission, Permit};
use super::config::{DEFAULT_MINIMUM_CALLS, HalfOpenTimeout};
use super::state::Snapshot;
use super::{CircuitBreakerLayer, State};
use crate::Ratio;
use crate::classify::Outcome;
use crate::clock::ManualClock;

const NANOS_PER_MS: u64 = 1_000_000;

#[derive(Clone, Copy, Debug)]
enum Policy {
    Consecutive {
        threshold: u32,
    },
    Count {
        size: u32,
        /// `None`: left at its default.
        minimum_calls: Option<u32>,
        rate: f64,
        slow: Option<(u64, f64)>,
    },
    Time {
        bucket_ms: u64,
        buckets: u32,
        minimum_calls: u32,
        rate: f64,
        slow: Option<(u64, f64)>,
    },
}

#[derive(Clone, Copy, Debug)]
struct Setup {
    policy: Policy,
    open_ms: u64,
    backoff_max_ms: Option<u64>,
    probes: u16,
    wait_ms: u64,
    reopen_on_stuck: bool,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Admit,
    Finish { index: usize, outcome: Outcome },
    Drop { index: usize },
    Advance { ms: u64 },
    Isolate,
    ForceClosed,
    Reset,
}

fn setup() -> impl Strategy<Value = Setup> {
    let rate = prop_oneof![Just(0.3), Just(0.5), Just(1.0)];
    let slow = proptest::option::of((1u64..20, prop_oneof![Just(0.5), Just(1.0)]));
    let policy = prop_oneof![
        (1u32..5).prop_map(|threshold| Policy::Consecutive { threshold }),
        (
            1u32..9,
            proptest::option::of(1u32..12),
            rate.clone(),
            slow.clone()
        )
            .prop_map(|(size, minimum_calls, rate, slow)| Policy::Count {
                size,
                // Above the window it is refused (a unit test checks that); unset, it defaults.
                minimum_calls: minimum_calls.map(|calls| calls.min(size)),
                rate,
                slow
            }),
        (1u64..20, 1u32..5, 1u32..8, rate, slow).prop_map(
            |(bucket_ms, buckets, minimum_calls, rate, slow)| Policy::Time {
                bucket_ms,
                buckets,
                minimum_calls,
                rate,
                slow
            }
        ),
    ];
    (
        policy,
        1u64..60,
        proptest::option::of(60u64..300),
        1u16..4,
        1u64..80,
        any::<bool>(),
    )
        .prop_map(
            |(policy, open_ms, backoff_max_ms, probes, wait_ms, reopen_on_stuck)| Setup {
                policy,
                open_ms,
                backoff_max_ms,
                probes,
                wait_ms,
                reopen_on_stuck,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        3 => Just(Outcome::Success),
        3 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignore),
    ];
    prop_oneof![
        8 => Just(Op::Admit),
        8 => (any::<usize>(), outcome).prop_map(|(index, outcome)| Op::Finish { index, outcome }),
        1 => any::<usize>().prop_map(|index| Op::Drop { index }),
        5 => (0u64..40).prop_map(|ms| Op::Advance { ms }),
        1 => prop_oneof![Just(Op::Isolate), Just(Op::ForceClosed), Just(Op::Reset)],
    ]
}

// ---- the reference model ----

#[derive(Clone, Copy, Debug, PartialEq)]
enum MPermit {
    Untracked,
    Closed(u16),
    Probe(u16),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Closed,
    Open,
    HalfOpen,
    Isolated,
    ForcedClosed,
}

struct Model {
    setup: Setup,
    now_ns: u64,
    phase: Phase,
    generation: u16,
    failures: u64,
    reopens: u8,
    until_ms: u64,
    admitted: u16,
    succeeded: u16,
    probe_deadline: Option<(u16, u64)>,
    /// Every outcome recorded since the window was last cleared: (time in ns, failed, slow).
    outcomes: VecDeque<(u64, bool, bool)>,
}

impl Model {
    fn new(setup: Setup) -> Self {
        Self {
            setup,
            now_ns: 0,
            phase: Phase::Closed,
            generation: 0,
            failures: 0,
            reopens: 0,
            until_ms: 0,
            admitted: 0,
            succeeded: 0,
            probe_deadline: None,
            outcomes: VecDeque::new(),
        }
    }

    fn bump(&mut self) {
        self.generation = (self.generation + 1) % 8192;
    }

    fn ceil_ms(ns: u64) -> u64 {
        ns.div_ceil(NANOS_PER_MS)
    }

    fn open(&mut self, reopens: u8) {
        let base = self.setup.open_ms;
        let max = self.setup.backoff_max_ms.unwrap_or(base);
        let duration_ms = (base << u32::from(reopens).min(30)).min(max);
        self.bump();
        self.phase = Phase::Open;
        self.reopens = reopens;
        self.until_ms = Self::ceil_ms(self.now_ns + duration_ms * NANOS_PER_MS);
    }

    fn close(&mut self) {
        self.bump();
        self.phase = Phase::Closed;
        self.failures = 0;
        self.reopens = 0;
        self.outcomes.clear();
    }

    fn half_open_with_first_probe(&mut self) -> MPermit {
        self.bump();
        self.phase = Phase::HalfOpen;
        self.admitted = 1;
        self.succeeded = 0;
        self.stamp();
        MPermit::Probe(self.generation)
    }

    fn stamp(&mut self) {
        let deadline = Self::ceil_ms(self.now_ns + self.setup.wait_ms * NANOS_PER_MS);
        self.probe_deadline = Some((self.generation, deadline));
    }

    fn admit(&mut self) -> Option<MPermit> {
        match self.phase {
            Phase::Closed => Some(MPermit::Closed(self.generation)),
            Phase::ForcedClosed => Some(MPermit::Untracked),
            Phase::Isolated => None,
            Phase::Open => {
                if self.now_ns < self.until_ms * NANOS_PER_MS {
                    None
                } else {
                    Some(self.half_open_with_first_probe())
                }
            }
            Phase::HalfOpen => {
                if self.admitted < self.setup.probes {
                    self.admitted += 1;
                    if self.admitted == 1 {
                        self.stamp();
                    }
                    return Some(MPermit::Probe(self.generation));
                }
                let stuck = matches!(self.probe_deadline, Some((g, ms)) if g == self.generation && self.now_ns >= ms * NANOS_PER_MS);
                if !stuck {
                    None
                } else if self.setup.reopen_on_stuck {
                    self.open((self.reopens + 1).min(63));
                    None
                } else {
                    Some(self.half_open_with_first_probe())
                }
            }
        }
    }

    fn release(&mut self, permit: MPermit) {
        if let MPermit::Probe(g) = permit {
            if self.phase == Phase::HalfOpen && self.generation == g && self.admitted > 0 {
                self.admitted -= 1;
            }
        }
    }

    fn slow_threshold_ns(&self) -> Option<u64> {
        match self.setup.policy {
            Policy::Count { slow, .. } | Policy::Time { slow, .. } => {
                slow.map(|(ms, _)| ms * NANOS_PER_MS)
            }
            Policy::Consecutive { .. } => None,
        }
    }

    fn finish(&mut self, permit: MPermit, started_ns: u64, outcome: Outcome) {
        if outcome == Outcome::Ignore {
            self.release(permit);
            return;
        }
        let failed = outcome == Outcome::Failure;
        let slow = self
            .slow_threshold_ns()
            .is_some_and(|t| self.now_ns - started_ns > t);
        match permit {
            MPermit::Untracked => {}
            MPermit::Closed(g) => {
                if self.phase != Phase::Closed || self.generation != g {
                    return;
                }
                match self.setup.policy {
                    Policy::Consecutive { threshold } => {
                        if failed {
                            self.failures += 1;
                            if self.failures >= u64::from(threshold) {
                                self.open(0);
                            }
                        } else {
                            self.failures = 0;
                        }
                    }
                    _ => {
                        self.outcomes.push_back((self.now_ns, failed, slow));
                        if self.trips() {
                            self.open(0);
                        }
                    }
                }
            }
            MPermit::Probe(g) => {
                if self.phase != Phase::HalfOpen || self.generation != g {
                    return;
                }
                if failed || slow {
                    self.open((self.reopens + 1).min(63));
                } else {
                    self.succeeded += 1;
                    if self.succeeded >= self.setup.probes {
                        self.close();
                    }
                }
            }
        }
    }

    /// The window as the rules define it: the last `size` outcomes, or the outcomes of the
    /// last `buckets` whole buckets.
    fn window(&self) -> (u64, u64, u64) {
        let kept: Vec<_> = match self.setup.policy {
            Policy::Consecutive { .. } => Vec::new(),
            Policy::Count { size, .. } => self
                .outcomes
                .iter()
                .rev()
                .take(size as usize)
                .copied()
                .collect(),
            Policy::Time {
                bucket_ms, buckets, ..
            } => {
                let bucket = bucket_ms * NANOS_PER_MS;
                let now = self.now_ns / bucket;
                self.outcomes
                    .iter()
                    .filter(|(at, _, _)| now - at / bucket < u64::from(buckets))
                    .copied()
                    .collect()
            }
        };
        let calls = kept.len() as u64;
        let failures = kept.iter().filter(|(_, f, _)| *f).count() as u64;
        let slow = kept.iter().filter(|(_, _, s)| *s).count() as u64;
        (calls, failures, slow)
    }

    fn trips(&self) -> bool {
        let (minimum_calls, rate, slow) = match self.setup.policy {
            Policy::Consecutive { .. } => return false,
            Policy::Count {
                size,
                minimum_calls,
                rate,
                slow,
            } => {
                // Unset: the default of 100, or the (smaller) window's whole size.
                let default = DEFAULT_MINIMUM_CALLS.get().min(size);
                (u64::from(minimum_calls.unwrap_or(default)), rate, slow)
            }
            Policy::Time {
                minimum_calls,
                rate,
                slow,
                ..
            } => (u64::from(minimum_calls), rate, slow),
        };
        let (calls, failures, slow_calls) = self.window();
        if calls == 0 || calls < minimum_calls {
            return false;
        }
        failures as f64 / calls as f64 >= rate
            || slow.is_some_and(|(_, r)| slow_calls as f64 / calls as f64 >= r)
    }

    fn snapshot(&self) -> Snapshot {
        let generation = self.generation;
        match self.phase {
            Phase::Closed => Snapshot::Closed {
                generation,
                failures: self.failures,
            },
            Phase::Open => Snapshot::Open {
                generation,
                reopens: self.reopens,
                armed: false,
                until_ms: self.until_ms,
            },
            Phase::HalfOpen => Snapshot::HalfOpen {
                generation,
                reopens: self.reopens,
                admitted: self.admitted,
                succeeded: self.succeeded,
            },
            Phase::Isolated => Snapshot::Isolated { generation },
            Phase::ForcedClosed => Snapshot::ForcedClosed { generation },
        }
    }
}

// ---- driving the real breaker ----

#[derive(Clone, Copy, Debug)]
enum Fault {
    Fail,
    Ignore,
}

fn classify(result: &Result<(), Fault>) -> Outcome {
    match result {
        Ok(()) => Outcome::Success,
        Err(Fault::Fail) => Outcome::Failure,
        Err(Fault::Ignore) => Outcome::Ignore,
    }
}

type Classifier = fn(&Result<(), Fault>) -> Outcome;

fn build(setup: Setup, clock: &ManualClock) -> CircuitBreakerLayer<Classifier> {
    let builder = CircuitBreakerLayer::builder();
    let builder = match setup.policy {
        Policy::Consecutive { threshold } => {
            builder.consecutive_failures(NonZeroU32::new(threshold).unwrap())
        }
        Policy::Count {
            size,
            minimum_calls,
            rate,
            slow,
        } => {
            let b = builder
                .count_window(NonZeroU32::new(size).unwrap())
                .failure_rate(Ratio::new(rate).unwrap());
            let b = match minimum_calls {
                Some(calls) => b.minimum_calls(NonZeroU32::new(calls).unwrap()),
                None => b,
            };
            match slow {
                Some((ms, r)) => b.slow_calls(Duration::from_millis(ms), Ratio::new(r).unwrap()),
                None => b,
            }
        }
        Policy::Time {
            bucket_ms,
            buckets,
            minimum_calls,
            rate,
            slow,
        } => {
            let b = builder
                .time_window(
                    Duration::from_millis(bucket_ms * u64::from(buckets)),
                    NonZeroU32::new(buckets).unwrap(),
                )
                .minimum_calls(NonZeroU32::new(minimum_calls).unwrap())
                .failure_rate(Ratio::new(rate).unwrap());
            match slow {
                Some((ms, r)) => b.slow_calls(Duration::from_millis(ms), Ratio::new(r).unwrap()),
                None => b,
            }
        }
    };
    let builder = match setup.backoff_max_ms {
        Some(max) => builder.open_backoff(Duration::from_millis(max)),
        None => builder,
    };
    let on_stuck = if setup.reopen_on_stuck {
        HalfOpenTimeout::Reopen
    } else {
        HalfOpenTimeout::Rearm
    };
    builder
        .open_for(Duration::from_millis(setup.open_ms))
        .half_open_probes(NonZeroU32::new(u32::from(setup.probes)).unwrap())
        .half_open_max_wait(Duration::from_millis(setup.wait_ms), on_stuck)
        .classifier(classify as Classifier)
        .clock(clock.clone())
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_atomic_breaker_agrees_with_the_plain_model(setup in setup(), ops in proptest::collection::vec(op(), 1..80)) {
        let clock = ManualClock::new();
        let breaker = build(setup, &clock).breaker_for_tests();
        let start = clock.now();
        let mut model = Model::new(setup);
        // Calls in flight: the breaker's permit, the model's, and when the call started.
        let mut in_flight: Vec<(Permit, MPermit, Option<crate::clock::Instant>, u64)> = Vec::new();

        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Admit => {
                    let real = breaker.admit();
                    let modelled = model.admit();
                    match (real, modelled) {
                        (Admission::Admitted(permit), Some(m)) => {
                            let started = (breaker.times_calls() && permit != Permit::Untracked)
                                .then(|| clock.now());
                            in_flight.push((permit, m, started, model.now_ns));
                        }
                        (Admission::Rejected(_), None) => {}
                        (real, modelled) => prop_assert!(false, "step {step}: admission differs: {real:?} vs {modelled:?}"),
                    }
                }
                Op::Finish { index, outcome } if !in_flight.is_empty() => {
                    let (permit, m, started, started_ns) = in_flight.remove(index % in_flight.len());
                    let result = match outcome {
                        Outcome::Success => Ok(()),
                        Outcome::Failure => Err(Fault::Fail),
                        Outcome::Ignore => Err(Fault::Ignore),
                    };
                    breaker.record(permit, started, &result);
                    model.finish(m, started_ns, outcome);
                }
                Op::Drop { index } if !in_flight.is_empty() => {
                    let (permit, m, _, _) = in_flight.remove(index % in_flight.len());
                    breaker.release(permit);
                    model.release(m);
                }
                Op::Finish { .. } | Op::Drop { .. } => {}
                Op::Advance { ms } => {
                    clock.advance(Duration::from_millis(ms));
                    model.now_ns += ms * NANOS_PER_MS;
                    prop_assert_eq!(clock.now() - start, Duration::from_nanos(model.now_ns));
                }
                Op::Isolate => {
                    breaker.force(State::Isolated);
                    model.bump();
                    model.phase = Phase::Isolated;
                }
                Op::ForceClosed => {
                    breaker.force(State::ForcedClosed);
                    model.bump();
                    model.phase = Phase::ForcedClosed;
                }
                Op::Reset => {
                    breaker.force(State::Closed);
                    model.close();
                }
            }
            prop_assert_eq!(breaker.snapshot_for_tests(), model.snapshot(), "step {} ({:?})", step, op);
            let metrics = breaker.metrics();
            let (calls, failures, slow) = model.window();
            prop_assert_eq!((metrics.calls, metrics.failures, metrics.slow_calls), (calls, failures, slow), "window after step {} ({:?})", step, op);
        }
    }
}
