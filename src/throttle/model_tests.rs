//! Model-based test: random sequences of admissions, outcomes (in any order, so some arrive
//! from older generations), clock advances and resets, run against the atomic throttle and a
//! plain single-threaded model written the obvious way (a list of the last N outcomes, the
//! formula recomputed at every step). After each step the two must agree on the state word,
//! the window's counts and the rejection probability, and every admission of the throttle must
//! be one the model allows: a probe exactly when a slot has come, a random rejection only when
//! the formula's probability is above zero. (The run threshold's own arithmetic is checked by
//! unit tests at fixed counts; here the model uses the same pure function.)

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::Duration;

use proptest::prelude::*;

use super::ThrottleLayer;
use super::gate::{Admission, Gate, Permit};
use super::state::{Snapshot, next_generation, run_to_shed};
use crate::classify::Outcome;
use crate::clock::ManualClock;
use crate::{Factor, Ratio};

#[derive(Clone, Copy, Debug)]
struct Setup {
    window: u32,
    minimum_calls: u32,
    shed_after: u32,
    multiplier: f64,
    interval_ms: u64,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Admit,
    /// Finish the admitted call at `index` (modulo those in flight).
    Finish {
        index: usize,
        outcome: Outcome,
    },
    Advance {
        ms: u64,
    },
    Reset,
}

fn setup() -> impl Strategy<Value = Setup> {
    (1u32..12, 1u32..12, 1u32..6, 1.0f64..4.0, 1u64..50).prop_map(
        |(window, minimum, shed_after, multiplier, interval_ms)| Setup {
            window,
            minimum_calls: minimum.min(window),
            shed_after,
            multiplier,
            interval_ms,
        },
    )
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Failure),
        2 => Just(Outcome::Success),
        1 => Just(Outcome::Ignore),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Admit),
        4 => (0usize..8, outcome()).prop_map(|(index, outcome)| Op::Finish { index, outcome }),
        2 => (0u64..60).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Reset),
    ]
}

/// The obvious implementation.
struct Model {
    setup: Setup,
    phase: Snapshot,
    /// Last outcomes, `true` for a failure.
    window: VecDeque<bool>,
    now_ms: u64,
}

impl Model {
    fn generation(&self) -> u16 {
        self.phase.generation()
    }

    fn probability(&self) -> f64 {
        let calls = self.window.len() as f64;
        if (self.window.len() as u64) < u64::from(self.setup.minimum_calls) {
            return 0.0;
        }
        let accepts = self.window.iter().filter(|failed| !**failed).count() as f64;
        ((calls - self.setup.multiplier * accepts) / (calls + 1.0)).max(0.0)
    }

    fn push(&mut self, failed: bool) {
        if self.window.len() == self.setup.window as usize {
            self.window.pop_front();
        }
        self.window.push_back(failed);
    }

    fn finish(&mut self, permit: Permit, outcome: Outcome) {
        if outcome == Outcome::Ignore {
            return;
        }
        let failed = outcome == Outcome::Failure;
        let generation = permit.generation();
        match (permit.is_probe(), self.phase) {
            (
                false,
                Snapshot::Throttling {
                    generation: g,
                    failures,
                },
            ) if g == generation => {
                self.push(failed);
                let accepts = self.window.iter().filter(|failed| !**failed).count() as u64;
                let run = run_to_shed(
                    u64::from(self.setup.shed_after),
                    u64::from(self.setup.window),
                    u64::from(self.setup.minimum_calls),
                    self.window.len() as u64,
                    accepts,
                    failures + 1,
                );
                self.phase = if !failed {
                    Snapshot::Throttling {
                        generation,
                        failures: 0,
                    }
                } else if failures + 1 >= run {
                    Snapshot::Shedding {
                        generation: next_generation(generation),
                        next_probe_ms: self.now_ms + self.setup.interval_ms,
                    }
                } else {
                    Snapshot::Throttling {
                        generation,
                        failures: failures + 1,
                    }
                };
            }
            (true, Snapshot::Shedding { generation: g, .. }) if g == generation && !failed => {
                self.window.clear();
                self.phase = Snapshot::Throttling {
                    generation: next_generation(generation),
                    failures: 0,
                };
            }
            _ => {}
        }
    }
}

type TestGate = Gate<fn(&Result<Outcome, ()>) -> Outcome>;

fn classify(result: &Result<Outcome, ()>) -> Outcome {
    match result {
        Ok(outcome) => *outcome,
        Err(()) => Outcome::Failure,
    }
}

fn build(setup: Setup, clock: &ManualClock) -> std::sync::Arc<TestGate> {
    let classifier: fn(&Result<Outcome, ()>) -> Outcome = classify;
    ThrottleLayer::builder()
        .classifier(classifier)
        .window(NonZeroU32::new(setup.window).unwrap())
        .minimum_calls(NonZeroU32::new(setup.minimum_calls).unwrap())
        .shed_after(NonZeroU32::new(setup.shed_after).unwrap())
        .multiplier(Factor::new(setup.multiplier).unwrap())
        .probe_interval(Duration::from_millis(setup.interval_ms))
        .probe_jitter(Ratio::ZERO)
        .seed(11)
        .clock(clock.clone())
        .build()
        .unwrap()
        .gate_for_tests()
}

fn check(gate: &TestGate, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(gate.snapshot_for_tests(), model.phase);
    let metrics = gate.metrics();
    prop_assert_eq!(metrics.calls, model.window.len() as u64);
    prop_assert_eq!(
        metrics.failures,
        model.window.iter().filter(|failed| **failed).count() as u64
    );
    if let Snapshot::Throttling { .. } = model.phase {
        prop_assert!((metrics.rejection_probability - model.probability()).abs() < 1e-9);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_throttle_agrees_with_a_plain_model(setup in setup(), ops in proptest::collection::vec(op(), 1..120)) {
        let clock = ManualClock::new();
        let gate = build(setup, &clock);
        let mut model = Model { setup, phase: Snapshot::INITIAL, window: VecDeque::new(), now_ms: 0 };
        let mut in_flight: Vec<Permit> = Vec::new();
        for op in ops {
            match op {
                Op::Admit => match (gate.admit(), model.phase) {
                    (Admission::Admitted(permit), Snapshot::Throttling { generation: g, .. }) if !permit.is_probe() => {
                        prop_assert_eq!(permit.generation(), g);
                        in_flight.push(permit);
                    }
                    (Admission::Rejected(throttled), Snapshot::Throttling { .. }) => {
                        prop_assert!(!throttled.is_shedding());
                        prop_assert!(model.probability() > 0.0, "shed at probability zero");
                    }
                    (Admission::Admitted(permit), Snapshot::Shedding { generation: g, next_probe_ms }) if permit.is_probe() => {
                        prop_assert_eq!(permit.generation(), g);
                        prop_assert!(model.now_ms >= next_probe_ms, "probe before its slot");
                        model.phase = Snapshot::Shedding { generation: g, next_probe_ms: model.now_ms + setup.interval_ms };
                        in_flight.push(permit);
                    }
                    (Admission::Rejected(throttled), Snapshot::Shedding { next_probe_ms, .. }) => {
                        prop_assert!(throttled.is_shedding());
                        prop_assert!(model.now_ms < next_probe_ms, "slot due but the call was rejected");
                    }
                    (admission, phase) => prop_assert!(false, "{admission:?} in {phase:?}"),
                },
                Op::Finish { index, outcome } => {
                    if in_flight.is_empty() {
                        continue;
                    }
                    let permit = in_flight.remove(index % in_flight.len());
                    let result = if outcome == Outcome::Failure { Err(()) } else { Ok(outcome) };
                    gate.record(permit, None, &result);
                    model.finish(permit, outcome);
                }
                Op::Advance { ms } => {
                    clock.advance(Duration::from_millis(ms));
                    model.now_ms += ms;
                }
                Op::Reset => {
                    gate.reset();
                    model.window.clear();
                    model.phase = Snapshot::Throttling { generation: next_generation(model.generation()), failures: 0 };
                }
            }
            check(&gate, &model)?;
        }
    }
}
