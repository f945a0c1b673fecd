//! loom models: every interleaving of the races listed in the state machine's invariants
//! (`state.rs`); each model names the invariants it checks.
//!
//! Run with `RUSTFLAGS="--cfg palisade_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --lib
//! loom`. The breakers run on a `ManualClock`, so no timer task is involved; the timer's own
//! transition is modelled by calling it directly.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use loom::thread;

use super::breaker::{Admission, Breaker, Permit};
use super::state::Snapshot;
use super::{CircuitBreakerBuilder, CircuitBreakerLayer, State};
use crate::Ratio;
use crate::classify::DefaultClassifier;
use crate::clock::ManualClock;

fn build(builder: CircuitBreakerBuilder, clock: &ManualClock) -> Arc<Breaker<DefaultClassifier>> {
    builder
        .clock(clock.clone())
        .open_for(Duration::from_millis(10))
        .build()
        .unwrap()
        .breaker_for_tests()
}

fn admit(breaker: &Arc<Breaker<DefaultClassifier>>) -> Option<Permit> {
    match breaker.admit() {
        Admission::Admitted(permit) => Some(permit),
        Admission::Rejected(_) => None,
    }
}

fn fail(breaker: &Arc<Breaker<DefaultClassifier>>, permit: Permit) {
    breaker.record(permit, None, &Err::<(), ()>(()));
}

fn succeed(breaker: &Arc<Breaker<DefaultClassifier>>, permit: Permit) {
    breaker.record(permit, None, &Ok::<(), ()>(()));
}

/// A breaker opened by one failure, its open duration passed, and moved to HalfOpen with no
/// probe admitted yet (as its timer would).
fn half_open(clock: &ManualClock, probes: u32) -> Arc<Breaker<DefaultClassifier>> {
    let breaker = build(
        CircuitBreakerLayer::builder()
            .consecutive_failures(NonZeroU32::MIN)
            .half_open_probes(NonZeroU32::new(probes).unwrap()),
        clock,
    );
    let permit = admit(&breaker).unwrap();
    fail(&breaker, permit);
    let Snapshot::Open { generation, .. } = breaker.snapshot_for_tests() else {
        panic!("not open")
    };
    clock.advance(Duration::from_millis(10));
    breaker.open_elapsed_for_tests(generation);
    breaker
}

/// Admits two calls, then records both as failures at once, the second one `later` after
/// the first's clock (so they can land in different time buckets). Returns the breaker.
fn race_two_failures(
    builder: CircuitBreakerBuilder,
    later: Duration,
) -> Arc<Breaker<DefaultClassifier>> {
    let clock = ManualClock::new();
    let breaker = build(builder, &clock);
    let first = admit(&breaker).unwrap();
    let second = admit(&breaker).unwrap();
    let other = Arc::clone(&breaker);
    let racer = thread::spawn(move || {
        clock.advance(later);
        fail(&other, first);
    });
    fail(&breaker, second);
    racer.join().unwrap();
    breaker
}

/// Invariant 1: of two failures that both reach the threshold, exactly one opens the breaker.
#[test]
fn loom_two_failures_race_the_closed_to_open_transition() {
    loom::model(|| {
        let breaker = race_two_failures(
            CircuitBreakerLayer::builder().consecutive_failures(NonZeroU32::new(2).unwrap()),
            Duration::ZERO,
        );
        assert!(matches!(
            breaker.snapshot_for_tests(),
            Snapshot::Open { generation: 1, .. }
        ));
        assert_eq!(
            breaker.metrics().transitions,
            1,
            "exactly one thread opened it"
        );
    });
}

/// Invariant 1: two failures recorded at once into a count window trip it exactly once (the
/// SeqCst fence before evaluating).
#[test]
fn loom_two_failures_race_a_window_trip() {
    loom::model(|| {
        let breaker = race_two_failures(
            CircuitBreakerLayer::builder()
                .count_window(NonZeroU32::new(2).unwrap())
                .minimum_calls(NonZeroU32::new(2).unwrap())
                .failure_rate(Ratio::ONE),
            Duration::ZERO,
        );
        assert_eq!(breaker.current_state(), State::Open, "two of two failed");
        assert_eq!(breaker.metrics().transitions, 1);
    });
}

/// Invariant 1: as above, for a time window, also across two buckets.
#[test]
fn loom_two_failures_race_a_time_window_trip() {
    loom::model(|| {
        // One bucket apart, the two failures land in different bucket words: only the fence
        // (and counting a bucket a little ahead) lets one of the two threads see both.
        let breaker = race_two_failures(
            CircuitBreakerLayer::builder()
                .time_window(Duration::from_secs(10), NonZeroU32::new(2).unwrap())
                .minimum_calls(NonZeroU32::new(2).unwrap())
                .failure_rate(Ratio::ONE),
            Duration::from_secs(5),
        );
        assert_eq!(breaker.current_state(), State::Open, "two of two failed");
        assert_eq!(breaker.metrics().transitions, 1);
    });
}

/// Invariants 1 and 6: the timer and a call both see the time is up; one half-opens it.
#[test]
fn loom_the_open_timer_races_a_call_that_sees_the_time_is_up() {
    loom::model(|| {
        let clock = ManualClock::new();
        let breaker = build(
            CircuitBreakerLayer::builder().consecutive_failures(NonZeroU32::MIN),
            &clock,
        );
        let permit = admit(&breaker).unwrap();
        fail(&breaker, permit);
        let Snapshot::Open { generation, .. } = breaker.snapshot_for_tests() else {
            panic!("not open")
        };
        clock.advance(Duration::from_millis(10));
        let timer = Arc::clone(&breaker);
        let fired = thread::spawn(move || timer.open_elapsed_for_tests(generation));
        let call = admit(&breaker);
        fired.join().unwrap();
        // Whichever won, there is one HalfOpen generation, and the call is its only probe.
        let Snapshot::HalfOpen {
            admitted,
            generation: g,
            ..
        } = breaker.snapshot_for_tests()
        else {
            panic!("not half-open: {:?}", breaker.snapshot_for_tests())
        };
        assert_eq!(g, 2);
        assert!(matches!(call, Some(Permit::Probe { generation: 2 })));
        assert_eq!(admitted, 1);
        assert_eq!(
            breaker.metrics().transitions,
            2,
            "closed→open, open→half-open"
        );
    });
}

/// Invariants 2 and 4: a probe's outcome and a new call race; the slots stay within bounds.
#[test]
fn loom_a_probe_completes_while_another_call_arrives() {
    loom::model(|| {
        let clock = ManualClock::new();
        let breaker = half_open(&clock, 1);
        let probe = admit(&breaker).unwrap();
        let other = Arc::clone(&breaker);
        let finisher = thread::spawn(move || succeed(&other, probe));
        let call = admit(&breaker);
        finisher.join().unwrap();
        assert_eq!(breaker.current_state(), State::Closed);
        // The late caller is either rejected (the slot was taken) or admitted into the new
        // closed period; never a second probe.
        assert!(
            matches!(call, None | Some(Permit::Closed { .. })),
            "{call:?}"
        );
    });
}

/// Invariant 2: two calls race for one probe slot; exactly one gets it.
#[test]
fn loom_two_requests_race_for_one_probe_slot() {
    loom::model(|| {
        let clock = ManualClock::new();
        let breaker = half_open(&clock, 1);
        let other = Arc::clone(&breaker);
        let racer = thread::spawn(move || admit(&other));
        let mine = admit(&breaker);
        let theirs = racer.join().unwrap();
        let probes = [mine, theirs].iter().filter(|p| p.is_some()).count();
        assert_eq!(probes, 1, "exactly one probe: {mine:?} / {theirs:?}");
        assert!(matches!(
            breaker.snapshot_for_tests(),
            Snapshot::HalfOpen { admitted: 1, .. }
        ));
    });
}

/// Invariant 3: an outcome of an older generation changes nothing.
#[test]
fn loom_a_late_outcome_from_an_older_generation_changes_nothing() {
    loom::model(|| {
        let clock = ManualClock::new();
        let breaker = half_open(&clock, 1);
        let probe = admit(&breaker).unwrap();
        let other = Arc::clone(&breaker);
        let late = thread::spawn(move || succeed(&other, probe));
        breaker.force(State::Isolated);
        late.join().unwrap();
        // Isolating first makes the probe's success stale; succeeding first closes, and the
        // isolation follows. Either way the breaker ends isolated.
        assert_eq!(breaker.current_state(), State::Isolated);
    });
}

/// Invariant 4: a dropped probe gives its slot back, racing a new call for it.
#[test]
fn loom_a_dropped_probe_gives_its_slot_back() {
    loom::model(|| {
        let clock = ManualClock::new();
        let breaker = half_open(&clock, 1);
        let probe = admit(&breaker).unwrap();
        let other = Arc::clone(&breaker);
        let dropper = thread::spawn(move || other.release(probe));
        let call = admit(&breaker);
        dropper.join().unwrap();
        let Snapshot::HalfOpen { admitted, .. } = breaker.snapshot_for_tests() else {
            panic!("not half-open")
        };
        match call {
            Some(Permit::Probe { .. }) => assert_eq!(admitted, 1, "the slot went to the new call"),
            None => assert_eq!(admitted, 0, "rejected before the slot came back"),
            other => panic!("unexpected {other:?}"),
        }
    });
}

/// Invariant 1 (E1): two probe successes race the close; the closed window starts empty.
#[test]
fn loom_two_probe_successes_race_the_close_and_the_window_starts_empty() {
    loom::model(|| {
        let clock = ManualClock::new();
        let breaker = build(
            CircuitBreakerLayer::builder()
                .count_window(NonZeroU32::new(4).unwrap())
                .minimum_calls(NonZeroU32::new(2).unwrap())
                .half_open_probes(NonZeroU32::new(2).unwrap()),
            &clock,
        );
        for _ in 0..2 {
            let permit = admit(&breaker).unwrap();
            fail(&breaker, permit);
        }
        let Snapshot::Open { generation, .. } = breaker.snapshot_for_tests() else {
            panic!("not open")
        };
        clock.advance(Duration::from_millis(10));
        breaker.open_elapsed_for_tests(generation);
        let first = admit(&breaker).unwrap();
        let second = admit(&breaker).unwrap();
        let other = Arc::clone(&breaker);
        let racer = thread::spawn(move || succeed(&other, first));
        succeed(&breaker, second);
        racer.join().unwrap();
        assert_eq!(breaker.current_state(), State::Closed);
        let metrics = breaker.metrics();
        assert_eq!(
            (metrics.calls, metrics.failures),
            (0, 0),
            "the failures that tripped it are gone"
        );
    });
}
