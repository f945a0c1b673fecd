//! loom models: every interleaving of the races listed in the state machine's invariants.
//!
//! Run with `RUSTFLAGS="--cfg palisade_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --lib
//! loom`. The throttles run on a `ManualClock` with a seeded generator.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use loom::thread;

use super::ThrottleLayer;
use super::gate::{Admission, Gate, Permit};
use super::state::Snapshot;
use crate::Ratio;
use crate::classify::DefaultClassifier;
use crate::clock::ManualClock;

fn build(shed_after: u32, clock: &ManualClock) -> Arc<Gate<DefaultClassifier>> {
    ThrottleLayer::builder()
        .shed_after(NonZeroU32::new(shed_after).unwrap())
        .probe_interval(Duration::from_millis(10))
        .probe_jitter(Ratio::ZERO)
        .seed(5)
        .clock(clock.clone())
        .build()
        .unwrap()
        .gate_for_tests()
}

fn admit(gate: &Gate<DefaultClassifier>) -> Option<Permit> {
    match gate.admit() {
        Admission::Admitted(permit) => Some(permit),
        Admission::Rejected(_) => None,
    }
}

fn fail(gate: &Gate<DefaultClassifier>, permit: Permit) {
    gate.record(permit, None, &Err::<(), ()>(()));
}

fn succeed(gate: &Gate<DefaultClassifier>, permit: Permit) {
    gate.record(permit, None, &Ok::<(), ()>(()));
}

/// A throttle that has just started Shedding, its first probe slot passed.
fn shedding(clock: &ManualClock) -> Arc<Gate<DefaultClassifier>> {
    let gate = build(1, clock);
    let permit = admit(&gate).unwrap();
    fail(&gate, permit);
    assert!(matches!(
        gate.snapshot_for_tests(),
        Snapshot::Shedding { .. }
    ));
    clock.advance(Duration::from_millis(10));
    gate
}

#[test]
fn loom_two_failures_at_the_threshold_start_shedding_exactly_once() {
    loom::model(|| {
        let clock = ManualClock::new();
        let gate = build(2, &clock);
        let first = admit(&gate).unwrap();
        let second = admit(&gate).unwrap();
        let other = Arc::clone(&gate);
        let racer = thread::spawn(move || fail(&other, first));
        fail(&gate, second);
        racer.join().unwrap();
        // Neither failure is lost from the run, and only one thread made the transition.
        assert!(matches!(
            gate.snapshot_for_tests(),
            Snapshot::Shedding { generation: 1, .. }
        ));
        assert_eq!(gate.metrics().transitions, 1);
        assert_eq!(gate.metrics().failures, 2);
    });
}

#[test]
fn loom_one_probe_slot_admits_one_call() {
    loom::model(|| {
        let clock = ManualClock::new();
        let gate = shedding(&clock);
        let other = Arc::clone(&gate);
        let racer = thread::spawn(move || admit(&other));
        let mine = admit(&gate);
        let theirs = racer.join().unwrap();
        let probes = [mine, theirs]
            .iter()
            .filter(|permit| permit.is_some_and(Permit::is_probe))
            .count();
        assert_eq!(probes, 1, "{mine:?} {theirs:?}");
        assert_eq!(gate.metrics().rejected, 1);
    });
}

#[test]
fn loom_two_successful_probes_resume_throttling_once() {
    loom::model(|| {
        let clock = ManualClock::new();
        let gate = shedding(&clock);
        let first = admit(&gate).unwrap();
        clock.advance(Duration::from_millis(10));
        let second = admit(&gate).unwrap();
        assert!(second.is_probe());
        let other = Arc::clone(&gate);
        let racer = thread::spawn(move || succeed(&other, first));
        succeed(&gate, second);
        racer.join().unwrap();
        assert!(matches!(
            gate.snapshot_for_tests(),
            Snapshot::Throttling {
                generation: 2,
                failures: 0
            }
        ));
        assert_eq!(gate.metrics().transitions, 2, "one to Shedding, one back");
        assert_eq!(gate.metrics().calls, 0, "the window was emptied");
    });
}

#[test]
fn loom_an_outcome_of_the_old_generation_cannot_touch_the_new_one() {
    loom::model(|| {
        let clock = ManualClock::new();
        let gate = build(1, &clock);
        let stale = admit(&gate).unwrap();
        let tripping = admit(&gate).unwrap();
        let other = Arc::clone(&gate);
        // One failure trips Shedding while the other call of the same generation succeeds.
        let racer = thread::spawn(move || succeed(&other, stale));
        fail(&gate, tripping);
        racer.join().unwrap();
        assert!(matches!(
            gate.snapshot_for_tests(),
            Snapshot::Shedding { generation: 1, .. }
        ));
    });
}

#[test]
fn loom_a_losing_probe_never_empties_the_next_generation_s_window() {
    loom::model(|| {
        let clock = ManualClock::new();
        let gate = shedding(&clock);
        let first = admit(&gate).unwrap();
        clock.advance(Duration::from_millis(10));
        let second = admit(&gate).unwrap();
        let other = Arc::clone(&gate);
        let racer = thread::spawn(move || succeed(&other, first));
        // This probe succeeds too, and then a call of whatever generation follows fails.
        succeed(&gate, second);
        let recorded = match admit(&gate) {
            Some(permit) if !permit.is_probe() => {
                fail(&gate, permit);
                true
            }
            _ => false,
        };
        racer.join().unwrap();
        if recorded {
            // Recorded after the close was published: no other probe may have wiped it. (With
            // a threshold of one, that failure started Shedding again.)
            assert_eq!(gate.metrics().calls, 1);
            assert!(matches!(
                gate.snapshot_for_tests(),
                Snapshot::Shedding { generation: 3, .. }
            ));
        } else {
            assert!(matches!(
                gate.snapshot_for_tests(),
                Snapshot::Throttling { generation: 2, .. }
            ));
        }
    });
}
