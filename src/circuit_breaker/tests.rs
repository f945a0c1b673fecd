//! The breaker's transitions, one test per row of the transition table in `state.rs`, driven
//! by hand on a `ManualClock` with no runtime (so no timer is ever armed and Open is left by
//! the clock check).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use super::breaker::{Admission, Breaker, Permit};
use super::config::{CircuitBreakerBuilder, HalfOpenTimeout};
use super::state::Snapshot;
use super::{CircuitBreakerLayer, State, TransitionReason};
use crate::Ratio;
use crate::classify::{DefaultClassifier, Outcome};
use crate::clock::ManualClock;

const MS: Duration = Duration::from_millis(1);

pub(super) struct Harness<C = DefaultClassifier> {
    pub(super) breaker: Arc<Breaker<C>>,
    pub(super) clock: ManualClock,
}

pub(super) fn harness(builder: CircuitBreakerBuilder) -> Harness {
    let clock = ManualClock::new();
    let layer: CircuitBreakerLayer = builder.clock(clock.clone()).build().unwrap();
    Harness {
        breaker: layer.breaker_for_tests(),
        clock,
    }
}

impl<C: crate::classify::Classify<(), ()> + Send + Sync + 'static> Harness<C> {
    pub(super) fn admit(&self) -> Option<Permit> {
        match self.breaker.admit() {
            Admission::Admitted(permit) => Some(permit),
            Admission::Rejected(_) => None,
        }
    }

    pub(super) fn ok(&self, permit: Permit) {
        self.breaker.record(permit, None, &Ok::<(), ()>(()));
    }

    pub(super) fn fail(&self, permit: Permit) {
        self.breaker.record(permit, None, &Err::<(), ()>(()));
    }

    /// Admits one call and records `failed` for it; returns whether it was admitted.
    pub(super) fn call(&self, failed: bool) -> bool {
        let Some(permit) = self.admit() else {
            return false;
        };
        if failed {
            self.fail(permit);
        } else {
            self.ok(permit);
        }
        true
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        self.breaker.snapshot_for_tests()
    }

    pub(super) fn state(&self) -> State {
        self.breaker.current_state()
    }
}

fn consecutive(n: u32) -> CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .consecutive_failures(NonZeroU32::new(n).unwrap())
        .open_for(100 * MS)
}

fn count_window(size: u32, minimum_calls: u32) -> CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .count_window(NonZeroU32::new(size).unwrap())
        .minimum_calls(NonZeroU32::new(minimum_calls).unwrap())
        .open_for(100 * MS)
}

/// Trips a consecutive(1) breaker and returns its harness, Open for 100 ms.
fn opened() -> Harness {
    let h = harness(consecutive(1));
    assert!(h.call(true));
    assert_eq!(h.state(), State::Open);
    h
}

/// Sets the timer's armed bit on an open breaker's word, as a real open timer would (a
/// `ManualClock` never arms one). Returns the open generation.
fn arm(h: &Harness) -> u16 {
    let Snapshot::Open {
        generation,
        reopens,
        until_ms,
        ..
    } = h.snapshot()
    else {
        panic!("not open: {:?}", h.snapshot())
    };
    h.breaker.set_for_tests(Snapshot::Open {
        generation,
        reopens,
        armed: true,
        until_ms,
    });
    generation
}

/// An opened breaker moved to HalfOpen with its probe (generation returned) admitted.
fn half_open_with_probe(builder: CircuitBreakerBuilder) -> (Harness, Permit) {
    let h = harness(builder);
    while h.state() == State::Closed {
        h.call(true);
    }
    h.clock.advance(Duration::from_secs(3600));
    let permit = h
        .admit()
        .expect("first call after the open duration is a probe");
    assert!(matches!(permit, Permit::Probe { .. }));
    (h, permit)
}

#[test]
fn closed_failure_below_threshold_counts_it() {
    let h = harness(consecutive(3));
    assert!(h.call(true));
    assert!(h.call(true));
    assert!(matches!(h.snapshot(), Snapshot::Closed { failures: 2, .. }));
}

#[test]
fn closed_failure_at_threshold_opens() {
    let h = harness(consecutive(3));
    h.call(true);
    h.call(true);
    assert_eq!(h.state(), State::Closed);
    h.call(true);
    assert!(matches!(
        h.snapshot(),
        Snapshot::Open {
            generation: 1,
            reopens: 0,
            armed: false,
            ..
        }
    ));
}

#[test]
fn closed_success_ends_a_run_of_failures() {
    let h = harness(consecutive(3));
    h.call(true);
    h.call(true);
    h.call(false);
    assert!(matches!(
        h.snapshot(),
        Snapshot::Closed {
            failures: 0,
            generation: 0
        }
    ));
    h.call(true);
    h.call(true);
    assert_eq!(h.state(), State::Closed, "the run started over");
}

#[test]
fn window_trips_at_the_failure_rate_once_minimum_calls_is_reached() {
    let h = harness(count_window(10, 4).failure_rate(Ratio::new_const(0.5)));
    h.call(true);
    h.call(true);
    h.call(true);
    assert_eq!(h.state(), State::Closed, "3 calls < minimum of 4");
    h.call(false);
    assert_eq!(h.state(), State::Open, "3 of 4 failed, at minimum_calls");
}

#[test]
fn window_rate_just_below_the_threshold_stays_closed() {
    let h = harness(count_window(10, 10).failure_rate(Ratio::new_const(0.5)));
    for i in 0..10 {
        h.call(i >= 6);
    }
    assert_eq!(h.state(), State::Closed, "4 of 10 is below 50 %");
    // The oldest outcome (a success) leaves as a failure arrives: 5 of 10.
    h.call(true);
    assert_eq!(h.state(), State::Open, "5 of 10 reaches 50 %");
}

#[test]
fn open_timer_path_half_opens_without_admitting() {
    // The timer's own transition: Open(armed) to HalfOpen with no probe admitted yet.
    let h = opened();
    let Snapshot::Open { generation, .. } = h.snapshot() else {
        unreachable!()
    };
    h.clock.advance(99 * MS);
    h.breaker.open_elapsed_for_tests(generation);
    assert_eq!(h.state(), State::Open, "a timer firing early sleeps again");
    h.clock.advance(MS);
    h.breaker.open_elapsed_for_tests(generation);
    assert!(matches!(
        h.snapshot(),
        Snapshot::HalfOpen {
            admitted: 0,
            succeeded: 0,
            ..
        }
    ));
    assert!(matches!(h.admit(), Some(Permit::Probe { .. })));
}

#[test]
fn open_rejects_until_the_open_duration_has_passed() {
    let h = opened();
    h.clock.advance(99 * MS);
    assert_eq!(h.admit(), None, "1 ms before");
    let Admission::Rejected(rejection) = h.breaker.admit() else {
        unreachable!()
    };
    assert_eq!(
        rejection.reopens_at().unwrap() - h.clock.now(),
        2 * MS,
        "the rejection knows the time left (plus the 1 ms margin over the open timer)"
    );
    h.clock.advance(MS);
    assert!(
        matches!(h.admit(), Some(Permit::Probe { generation: 2 })),
        "at the open duration the first call is a probe"
    );
    assert!(matches!(
        h.snapshot(),
        Snapshot::HalfOpen {
            generation: 2,
            admitted: 1,
            ..
        }
    ));
}

#[test]
fn half_open_admits_exactly_the_permitted_probes() {
    let (h, _first) =
        half_open_with_probe(consecutive(1).half_open_probes(NonZeroU32::new(2).unwrap()));
    assert!(matches!(h.admit(), Some(Permit::Probe { .. })));
    assert_eq!(h.admit(), None, "a third call is rejected");
    assert!(matches!(
        h.snapshot(),
        Snapshot::HalfOpen { admitted: 2, .. }
    ));
}

#[test]
fn probe_success_below_the_permitted_count_is_counted() {
    let (h, first) =
        half_open_with_probe(consecutive(1).half_open_probes(NonZeroU32::new(2).unwrap()));
    let second = h.admit().unwrap();
    h.ok(first);
    assert!(matches!(
        h.snapshot(),
        Snapshot::HalfOpen {
            admitted: 2,
            succeeded: 1,
            ..
        }
    ));
    h.ok(second);
    assert_eq!(h.state(), State::Closed);
}

#[test]
fn last_probe_success_closes_with_an_empty_window() {
    let (h, probe) = half_open_with_probe(count_window(4, 2));
    h.ok(probe);
    assert!(matches!(h.snapshot(), Snapshot::Closed { failures: 0, .. }));
    let metrics = h.breaker.metrics();
    assert_eq!(
        (metrics.calls, metrics.failures),
        (0, 0),
        "window starts clean"
    );
}

#[test]
fn probe_failure_reopens_with_the_next_duration() {
    let (h, probe) = half_open_with_probe(consecutive(1).open_backoff(Duration::from_secs(1)));
    h.fail(probe);
    let Snapshot::Open { reopens, .. } = h.snapshot() else {
        panic!("expected Open, got {:?}", h.snapshot())
    };
    assert_eq!(reopens, 1);
    h.clock.advance(199 * MS);
    assert_eq!(h.admit(), None, "second open lasts 200 ms: 1 ms before");
    h.clock.advance(MS);
    assert!(h.admit().is_some());
}

#[test]
fn a_slow_probe_counts_as_failed() {
    let (h, probe) = half_open_with_probe(count_window(4, 1).slow_calls(10 * MS, Ratio::ONE));
    let started = h.clock.now();
    h.clock.advance(11 * MS);
    h.breaker.record(probe, Some(started), &Ok::<(), ()>(()));
    assert_eq!(h.state(), State::Open);
}

#[test]
fn ignored_or_dropped_probes_give_their_slot_back() {
    let ignoring = |r: &Result<(), ()>| match r {
        Ok(()) => Outcome::Ignore,
        Err(()) => Outcome::Failure,
    };
    let clock = ManualClock::new();
    let layer = consecutive(1)
        .classifier(ignoring)
        .clock(clock.clone())
        .build()
        .unwrap();
    let h = Harness {
        breaker: layer.breaker_for_tests(),
        clock,
    };
    h.call(true);
    h.clock.advance(Duration::from_secs(1));
    let probe = h.admit().unwrap();
    assert_eq!(h.admit(), None);
    h.ok(probe); // ignored
    assert!(matches!(
        h.snapshot(),
        Snapshot::HalfOpen { admitted: 0, .. }
    ));
    let probe = h.admit().expect("slot given back");
    h.breaker.release(probe); // a dropped future
    assert!(matches!(
        h.snapshot(),
        Snapshot::HalfOpen { admitted: 0, .. }
    ));
    assert!(h.admit().is_some());
}

#[test]
fn stuck_probes_are_rearmed_after_the_maximum_wait() {
    let (h, stuck) =
        half_open_with_probe(consecutive(1).half_open_max_wait(50 * MS, HalfOpenTimeout::Rearm));
    h.clock.advance(49 * MS);
    assert_eq!(h.admit(), None, "1 ms before the maximum wait");
    h.clock.advance(MS);
    let fresh = h.admit().expect("a fresh probe after the maximum wait");
    assert_ne!(fresh, stuck);
    // The stuck probe's late outcome belongs to an older generation: ignored.
    h.fail(stuck);
    assert_eq!(h.state(), State::HalfOpen);
    h.ok(fresh);
    assert_eq!(h.state(), State::Closed);
}

#[test]
fn stuck_probes_can_reopen_instead() {
    let (h, _stuck) =
        half_open_with_probe(consecutive(1).half_open_max_wait(50 * MS, HalfOpenTimeout::Reopen));
    h.clock.advance(50 * MS);
    assert_eq!(h.admit(), None);
    assert!(matches!(h.snapshot(), Snapshot::Open { reopens: 1, .. }));
}

#[test]
fn outcomes_of_an_older_generation_are_ignored() {
    let h = harness(consecutive(2));
    let early = h.admit().unwrap();
    h.call(true);
    h.call(true); // opens: generation 1
    h.clock.advance(Duration::from_secs(1));
    let probe = h.admit().unwrap();
    h.ok(probe); // closes: generation 3
    h.fail(early); // admitted in generation 0
    assert!(matches!(
        h.snapshot(),
        Snapshot::Closed {
            failures: 0,
            generation: 3
        }
    ));
}

#[test]
fn manual_control_moves_from_any_state() {
    let h = opened();
    h.breaker.force(State::Isolated);
    assert_eq!(h.state(), State::Isolated);
    let Admission::Rejected(rejection) = h.breaker.admit() else {
        unreachable!()
    };
    assert_eq!(rejection.retry_after(), None, "isolated has no end");
    h.breaker.force(State::ForcedClosed);
    assert!(matches!(h.admit(), Some(Permit::Untracked)));
    for _ in 0..10 {
        h.call(true);
    }
    assert_eq!(h.state(), State::ForcedClosed, "nothing counted");
    h.breaker.force(State::Closed);
    assert!(matches!(h.snapshot(), Snapshot::Closed { failures: 0, .. }));
}

#[test]
fn server_pushback_opens_until_then_and_never_shortens_an_open() {
    let h = harness(consecutive(10));
    h.breaker.open_by_server_for_tests(Duration::from_secs(2));
    assert_eq!(h.state(), State::Open);
    h.breaker.open_by_server_for_tests(Duration::from_secs(1));
    h.clock.advance(Duration::from_millis(1999));
    assert_eq!(h.admit(), None, "the longer pushback stands");
    h.clock.advance(MS);
    assert!(h.admit().is_some());
    h.breaker.force(State::Isolated);
    h.breaker.open_by_server_for_tests(Duration::from_secs(2));
    assert_eq!(h.state(), State::Isolated, "forced states ignore pushback");
}

#[test]
fn jitter_spreads_open_durations_within_bounds() {
    let jitter = Ratio::new_const(0.5);
    let mut seen = Vec::new();
    for seed in 0..40 {
        let h = harness(consecutive(1).open_jitter(jitter).jitter_seed(seed));
        h.call(true);
        let Snapshot::Open { until_ms, .. } = h.snapshot() else {
            unreachable!()
        };
        seen.push(until_ms);
    }
    assert!(seen.iter().all(|ms| (50..=150).contains(ms)), "{seen:?}");
    let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
    assert!(distinct.len() > 20, "jitter spreads: {distinct:?}");
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let h = harness(consecutive(1).open_backoff(350 * MS));
    h.call(true);
    let mut durations = Vec::new();
    for _ in 0..4 {
        let Snapshot::Open { until_ms, .. } = h.snapshot() else {
            unreachable!()
        };
        let now_ms = h.breaker.now_ms_for_tests();
        durations.push(until_ms - now_ms);
        h.clock.advance(Duration::from_secs(10));
        let probe = h.admit().unwrap();
        h.fail(probe);
    }
    assert_eq!(durations, [100, 200, 350, 350]);
    // A successful close starts over.
    h.clock.advance(Duration::from_secs(10));
    let probe = h.admit().unwrap();
    h.ok(probe);
    h.call(true);
    let Snapshot::Open {
        until_ms, reopens, ..
    } = h.snapshot()
    else {
        unreachable!()
    };
    assert_eq!(reopens, 0);
    assert_eq!(until_ms - h.breaker.now_ms_for_tests(), 100);
}

#[test]
fn transitions_are_counted_and_reasoned() {
    let h = harness(consecutive(1));
    let mut events = h.breaker.subscribe();
    h.call(true);
    h.clock.advance(Duration::from_secs(1));
    h.call(false);
    let reasons: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|t| (t.from, t.to, t.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                State::Closed,
                State::Open,
                TransitionReason::ConsecutiveFailures
            ),
            (State::Open, State::HalfOpen, TransitionReason::OpenElapsed),
            (
                State::HalfOpen,
                State::Closed,
                TransitionReason::ProbesSucceeded
            ),
        ]
    );
    assert_eq!(h.breaker.metrics().transitions, 3);
}

#[test]
fn the_default_configuration_is_valid() {
    let layer = CircuitBreakerLayer::new();
    assert_eq!(layer.handle().state(), State::Closed);
}

#[test]
fn invalid_configurations_name_the_setting() {
    use crate::error::ConfigError;
    let err = |b: CircuitBreakerBuilder| b.build().unwrap_err();
    assert!(matches!(
        err(CircuitBreakerLayer::builder().count_window(NonZeroU32::new(4097).unwrap())),
        ConfigError::CountOutOfRange {
            setting: "count_window",
            ..
        }
    ));
    assert!(matches!(
        err(count_window(4, 5)),
        ConfigError::Conflict {
            setting: "minimum_calls",
            other: "count_window",
            ..
        }
    ));
    assert!(matches!(
        err(CircuitBreakerLayer::builder().slow_calls(MS, Ratio::ZERO)),
        ConfigError::MustBePositive {
            setting: "slow_calls rate"
        }
    ));
    assert!(matches!(
        err(CircuitBreakerLayer::builder().server_directed(Duration::from_millis(999))),
        ConfigError::DurationOutOfRange {
            setting: "server_directed",
            ..
        }
    ));
    assert!(matches!(
        err(CircuitBreakerLayer::builder().failure_rate(Ratio::ZERO)),
        ConfigError::MustBePositive {
            setting: "failure_rate"
        }
    ));
    assert!(matches!(
        err(CircuitBreakerLayer::builder().open_for(Duration::ZERO)),
        ConfigError::DurationOutOfRange {
            setting: "open_for",
            ..
        }
    ));
    assert!(matches!(
        err(CircuitBreakerLayer::builder()
            .open_for(Duration::from_secs(10))
            .open_backoff(Duration::from_secs(1))),
        ConfigError::Conflict {
            setting: "open_backoff",
            ..
        }
    ));
    assert!(matches!(
        err(CircuitBreakerLayer::builder()
            .time_window(Duration::from_millis(10), NonZeroU32::new(20).unwrap())),
        ConfigError::DurationOutOfRange {
            setting: "time_window span",
            ..
        }
    ));
    assert!(matches!(
        err(CircuitBreakerLayer::builder()
            .time_window(Duration::from_secs(10), NonZeroU32::new(65).unwrap())),
        ConfigError::CountOutOfRange {
            setting: "time_window buckets",
            ..
        }
    ));
    assert!(matches!(
        err(consecutive(2).slow_calls(MS, Ratio::ONE)),
        ConfigError::Conflict {
            setting: "slow_calls",
            ..
        }
    ));
    assert!(matches!(
        err(CircuitBreakerLayer::builder().half_open_probes(NonZeroU32::new(5000).unwrap())),
        ConfigError::CountOutOfRange {
            setting: "half_open_probes",
            ..
        }
    ));
}

#[test]
fn minimum_calls_left_at_its_default_follows_a_smaller_count_window() {
    // Set explicitly above the window, it is refused (above); left alone, the default of 100
    // becomes the 4-call window's size, and a full window of failures opens.
    let builder = CircuitBreakerLayer::builder()
        .count_window(NonZeroU32::new(4).unwrap())
        .open_for(100 * MS);
    let h = harness(builder);
    for _ in 0..3 {
        h.call(true);
    }
    assert_eq!(h.state(), State::Closed, "3 calls: under the window's 4");
    h.call(true);
    assert_eq!(
        h.state(),
        State::Open,
        "the default minimum is the window's size"
    );
    // The most a count window allows is its size.
    assert!(count_window(4096, 4096).build().is_ok());
}

#[test]
fn an_open_timer_dropped_with_its_runtime_disarms_the_breaker() {
    let layer = consecutive(1).build().unwrap();
    let breaker = layer.breaker_for_tests();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let Admission::Admitted(permit) = breaker.admit() else {
            unreachable!()
        };
        breaker.record(permit, None, &Err::<(), ()>(()));
    });
    assert!(
        matches!(
            breaker.snapshot_for_tests(),
            Snapshot::Open { armed: true, .. }
        ),
        "a timer was armed inside the runtime"
    );
    drop(runtime);
    assert!(
        matches!(
            breaker.snapshot_for_tests(),
            Snapshot::Open { armed: false, .. }
        ),
        "the dropped timer task disarmed it, so calls check the clock again"
    );
}

#[test]
fn an_armed_open_breaker_reads_the_clock_on_one_rejection_in_sixty_four() {
    // A ManualClock never arms; an armed word built by hand shows the admission path: rejections
    // read no time, except one in 64 per thread, which half-opens the breaker once `until` has
    // passed, so a timer that can no longer fire (its runtime is not driven) cannot hold the
    // breaker open. On a fresh thread, so the per-thread sample starts at zero.
    std::thread::spawn(|| {
        let h = opened();
        arm(&h);
        for call in 1..=64 {
            assert_eq!(h.admit(), None, "call {call}: still within the open period");
        }
        h.clock.advance(Duration::from_secs(3600));
        for call in 65..128 {
            assert_eq!(
                h.admit(),
                None,
                "call {call}: not sampled, the clock is not read"
            );
        }
        assert!(
            matches!(h.admit(), Some(Permit::Probe { .. })),
            "the 128th call is sampled, sees the time has passed and probes"
        );
        assert_eq!(h.state(), State::HalfOpen);
    })
    .join()
    .unwrap();
}

#[test]
fn an_armed_open_breaker_leaves_through_its_timer() {
    let h = opened();
    let generation = arm(&h);
    h.clock.advance(Duration::from_secs(3600));
    h.breaker.open_elapsed_for_tests(generation);
    assert_eq!(h.state(), State::HalfOpen, "the timer moved it on");
    assert!(h.admit().is_some());
}

#[test]
fn a_late_probe_deadline_stamp_never_replaces_a_newer_generations() {
    let (h, first) =
        half_open_with_probe(consecutive(1).half_open_max_wait(50 * MS, HalfOpenTimeout::Rearm));
    let Permit::Probe { generation: old } = first else {
        unreachable!()
    };
    // The probe fails, the breaker re-opens and half-opens again with a new probe (and stamp).
    h.fail(first);
    h.clock.advance(Duration::from_secs(3600));
    let second = h.admit().unwrap();
    let Permit::Probe { generation: new } = second else {
        unreachable!()
    };
    assert_ne!(old, new);
    // A stalled thread now finishes stamping the old generation: it must not land.
    h.breaker.stamp_probe_deadline_for_tests(old);
    h.clock.advance(50 * MS);
    assert!(
        h.admit().is_some(),
        "the newer generation's deadline still rescues its probe"
    );
}

#[test]
fn a_server_pushback_while_open_extends_it_without_a_transition() {
    let h = opened();
    let transitions = h.breaker.metrics().transitions;
    h.breaker.open_by_server_for_tests(Duration::from_secs(2));
    assert_eq!(
        h.breaker.metrics().transitions,
        transitions,
        "same generation, no event"
    );
    h.clock.advance(Duration::from_secs(2) - MS);
    assert_eq!(h.admit(), None);
    h.clock.advance(MS);
    assert!(h.admit().is_some());
}

#[test]
fn the_transition_log_is_rate_limited_and_counts_what_it_quieted() {
    let h = harness(consecutive(1));
    let b = &h.breaker;
    for line in 0..10 {
        assert_eq!(
            b.info_line_for_tests(1_000),
            Some(0),
            "line {line} of the window"
        );
    }
    assert_eq!(b.info_line_for_tests(1_000), None);
    assert_eq!(
        b.info_line_for_tests(10_999),
        None,
        "still the same 10 s window"
    );
    assert_eq!(
        b.info_line_for_tests(11_000),
        Some(2),
        "a new window: the first line counts the two at debug"
    );
    assert_eq!(b.info_line_for_tests(11_001), Some(0));
}

#[test]
fn server_pushback_on_a_half_open_breaker_keeps_its_reopen_count() {
    // consecutive(1) opens for 100 ms, doubling per re-open up to 10 s.
    let h = harness(consecutive(1).open_backoff(Duration::from_secs(10)));
    h.call(true);
    for _ in 0..2 {
        h.clock.advance(Duration::from_secs(10));
        let probe = h.admit().unwrap();
        h.fail(probe);
    }
    h.clock.advance(Duration::from_secs(10));
    let _probe = h.admit().unwrap();
    let Snapshot::HalfOpen { reopens: 2, .. } = h.snapshot() else {
        panic!("two failed probes: {:?}", h.snapshot())
    };
    // The server pushes back while the probe is out: open for its time, backoff remembered.
    h.breaker.open_by_server_for_tests(Duration::from_secs(2));
    let Snapshot::Open { reopens, .. } = h.snapshot() else {
        unreachable!()
    };
    assert_eq!(reopens, 2, "a pushback is not a fresh start");
    // The next failed probe backs off from there: 100 ms · 2³.
    h.clock.advance(Duration::from_secs(2));
    let probe = h.admit().unwrap();
    h.fail(probe);
    let Snapshot::Open {
        until_ms, reopens, ..
    } = h.snapshot()
    else {
        unreachable!()
    };
    assert_eq!(reopens, 3);
    assert_eq!(until_ms - h.breaker.now_ms_for_tests(), 800);
}

#[test]
fn an_armed_open_rejection_names_the_same_reopening_as_an_unarmed_one() {
    // On a fresh thread, so the first rejection is not the sampled one that reads the clock.
    std::thread::spawn(|| {
        let h = opened();
        let unarmed = match h.breaker.admit() {
            Admission::Rejected(open) => open,
            Admission::Admitted(_) => panic!("open"),
        };
        arm(&h);
        let Admission::Rejected(armed) = h.breaker.admit() else {
            panic!("armed and open")
        };
        assert!(unarmed.reopens_at().is_some());
        assert_eq!(armed.reopens_at(), unarmed.reopens_at());
    })
    .join()
    .unwrap();
}
