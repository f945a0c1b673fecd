//! The shared breaker: the state word, the window, the open timer and the transition events.
//!
//! One `Breaker` lives behind an `Arc` in the layer; every service and every response future
//! holds a clone. Admission ([`Breaker::admit`]) is one load of the state word on the paths that
//! decide without time (closed, isolated, forced closed, open with its timer armed); recording
//! ([`Breaker::record`]) writes only when the outcome changes something.

use std::cell::Cell;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::broadcast;

use super::config::{Config, HalfOpenTimeout, MIN_SERVER_PUSHBACK, Trip, WindowKind};
use super::error::CircuitOpen;
use super::handle::{Metrics, State, Transition, TransitionReason};
use super::state::{AtomicState, Snapshot, next_generation, next_reopens};
use super::window::{CountWindow, Counts, TimeWindow};
use crate::classify::{Classify, Outcome};
use crate::clock::{Clock, Epoch, Instant};
use crate::random::Random;
use crate::ratio::scale;
use crate::sync::{AtomicU64, Ordering, fence};

const NANOS_PER_MS: u64 = 1_000_000;
/// Capacity of the transition channel: a subscriber more than this many transitions behind
/// gets `Lagged` and skips ahead.
const EVENT_CAPACITY: usize = 64;

/// What an admitted call carries back to record its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Forced closed: nothing is recorded.
    Untracked,
    /// A call admitted while closed, in generation `generation`.
    Closed { generation: u16 },
    /// A half-open probe of generation `generation`.
    Probe { generation: u16 },
}

/// The decision for one call.
#[derive(Debug)]
pub(crate) enum Admission {
    Admitted(Permit),
    Rejected(CircuitOpen),
}

/// Where a closed breaker keeps score.
enum Window {
    Consecutive { threshold: u64 },
    Count(CountWindow),
    Time(TimeWindow),
}

/// The transition log's rate limit: at most this many info lines per breaker per window ...
const LOG_LINES_PER_WINDOW: u64 = 10;
/// ... of this many ms; the rest go out at debug, and the next info line counts them.
const LOG_WINDOW_MS: u64 = 10_000;
/// The largest window start the log word holds (48 bits of ms, about 8,900 years).
const PAYLOAD_MS_MAX: u64 = (1 << 48) - 1;

/// Keeps the state word on a cache line of its own: away from the `Arc`'s reference counts,
/// which every call writes, and from the window's counters, so a healthy breaker's hottest word
/// is only ever read.
#[repr(align(128))]
struct CacheLine<T>(T);

pub(crate) struct Breaker<C> {
    state: CacheLine<AtomicState>,
    /// `[generation 13 | ms since the epoch 48]`: when the probes of that half-open generation
    /// count as stuck. Self-validating: a stamp of another generation means "not yet set".
    probe_deadline: AtomicU64,
    window: Window,
    config: Config,
    epoch: Epoch,
    /// The epoch in nanoseconds since the clock's process-wide anchor (`u64::MAX`: before it,
    /// which only a `ManualClock` started by hand years in the past can be; its rejections then
    /// leave the reopening time unknown), so a rejection names its reopening time in one word.
    anchored: u64,
    /// Draws for the open-duration jitter; used only on transitions.
    random: Random,
    transitions: AtomicU64,
    /// Rate limit of the transition log line: `[window start, ms since the epoch 48 | lines
    /// logged at info in it 16]`, `u64::MAX` before the first. A std atomic even under loom: it
    /// only decides a log level, and modelling it would multiply the models' interleavings.
    log_window: std::sync::atomic::AtomicU64,
    /// Transitions logged at debug instead of info since the last info line.
    log_quieted: std::sync::atomic::AtomicU64,
    events: broadcast::Sender<Transition>,
    pub(crate) classifier: C,
    /// For keyed breakers: the eviction sweep this breaker was last used in.
    pub(crate) last_used: AtomicU64,
    /// For keyed breakers: since when (ms since the keyed map started) sweeps have found this
    /// breaker unused, `u64::MAX` while it is in use. Written only by the one running sweep.
    pub(crate) idle_since_ms: AtomicU64,
}

impl<C> Breaker<C> {
    pub(crate) fn new(config: Config, classifier: C) -> Self {
        let base = config.clock.now();
        let epoch = Epoch::new(base);
        let anchored = base
            .checked_duration_since(crate::clock::anchor())
            .map_or(u64::MAX, Epoch::ticks_of);
        let window = match config.trip {
            Trip::Consecutive { threshold } => Window::Consecutive { threshold },
            Trip::Rate {
                window: WindowKind::Count { size },
                ..
            } => Window::Count(CountWindow::new(size)),
            Trip::Rate {
                window: WindowKind::Time { span, buckets },
                ..
            } => Window::Time(TimeWindow::new(
                epoch,
                Epoch::ticks_of(span) / u64::from(buckets),
                buckets,
            )),
        };
        let random = Random::new(config.jitter_seed);
        Self {
            state: CacheLine(AtomicState::new(Snapshot::INITIAL)),
            probe_deadline: AtomicU64::new(u64::MAX),
            window,
            config,
            epoch,
            anchored,
            random,
            transitions: AtomicU64::new(0),
            log_window: std::sync::atomic::AtomicU64::new(u64::MAX),
            log_quieted: std::sync::atomic::AtomicU64::new(0),
            events: broadcast::channel(EVENT_CAPACITY).0,
            classifier,
            last_used: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(u64::MAX),
        }
    }

    fn state(&self) -> &AtomicState {
        &self.state.0
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.config.clock
    }

    /// Whether outcomes need the clock: slow-call detection times each call.
    pub(crate) fn times_calls(&self) -> bool {
        self.config.slow_call.is_some()
    }

    fn ticks(&self, at: Instant) -> u64 {
        self.epoch.ticks(at)
    }

    /// `after` past `now`, in whole ms since the epoch, rounded up. Integer arithmetic that
    /// saturates: no duration, however long, can make it panic.
    fn ms_after(&self, now: Instant, after: Duration) -> u64 {
        self.ticks(now)
            .saturating_add(Epoch::ticks_of(after))
            .div_ceil(NANOS_PER_MS)
    }

    fn instant_of_ms(&self, ms: u64) -> Instant {
        self.epoch.instant(ms.saturating_mul(NANOS_PER_MS))
    }

    fn rejection(&self, snapshot: Snapshot) -> CircuitOpen {
        match snapshot {
            Snapshot::Open { until_ms, .. } => self.open_rejection(until_ms),
            Snapshot::HalfOpen { generation, .. } => CircuitOpen::new(
                State::HalfOpen,
                self.probe_deadline(generation)
                    .and_then(|ms| self.since_anchor(ms)),
            ),
            _ => CircuitOpen::new(State::Isolated, None),
        }
    }

    /// The rejection of an open breaker that half-opens at `until_ms`: it names one millisecond
    /// later (see [`CircuitOpen::reopens_at`]).
    #[inline]
    fn open_rejection(&self, until_ms: u64) -> CircuitOpen {
        CircuitOpen::new(State::Open, self.since_anchor(until_ms.saturating_add(1)))
    }

    /// `ms` since the epoch as nanoseconds since the clock's anchor, if it can be named.
    #[inline]
    fn since_anchor(&self, ms: u64) -> Option<u64> {
        (self.anchored != u64::MAX).then(|| {
            self.anchored
                .saturating_add(ms.saturating_mul(NANOS_PER_MS))
        })
    }

    /// Admits or rejects one call.
    ///
    /// Always inlined, so the decision stays in registers: returned through memory, the
    /// caller's wide read of the narrow stores that wrote it stalled on store forwarding and
    /// cost about 12 ns a call (measured 2026-11-28).
    #[inline(always)]
    pub(crate) fn admit(self: &Arc<Self>) -> Admission
    where
        C: Send + Sync + 'static,
    {
        if let Some(generation) = self.state().closed_generation() {
            return Admission::Admitted(Permit::Closed { generation });
        }
        if let Some(until_ms) = self.state().armed_open_until() {
            // No clock: the armed timer will move the breaker on. Except on a sample of
            // rejections: the timer's runtime may have stopped being driven (a current-thread
            // runtime whose `block_on` returned), and calls from elsewhere must not be rejected
            // forever. Those read the clock and half-open the breaker themselves once `until`
            // has passed.
            if !clock_check_due() {
                tracing::trace!("circuit open: call rejected");
                return Admission::Rejected(self.open_rejection(until_ms));
            }
            return self.admit_with_clock();
        }
        self.admit_not_closed()
    }

    /// Admission in every state but Closed and armed Open.
    #[cold]
    fn admit_not_closed(self: &Arc<Self>) -> Admission
    where
        C: Send + Sync + 'static,
    {
        match self.state().load() {
            Snapshot::Closed { generation, .. } => {
                Admission::Admitted(Permit::Closed { generation })
            }
            Snapshot::ForcedClosed { .. } => Admission::Admitted(Permit::Untracked),
            snapshot @ (Snapshot::Isolated { .. } | Snapshot::Open { armed: true, .. }) => {
                // No clock: an armed timer will move an open breaker on.
                tracing::trace!(state = ?State::from(snapshot), "circuit open: call rejected");
                Admission::Rejected(self.rejection(snapshot))
            }
            _ => self.admit_with_clock(),
        }
    }

    /// Admission in the states that need the time: open with no timer, and half-open.
    #[cold]
    fn admit_with_clock(self: &Arc<Self>) -> Admission
    where
        C: Send + Sync + 'static,
    {
        let now = self.clock().now();
        let now_ticks = self.ticks(now);
        let reopen = LazyOpen::new(self, now);
        let mut settled = None;
        let exchanged = self.state().update(|snapshot| match snapshot {
            Snapshot::Closed { generation, .. } => {
                settled = Some(Admission::Admitted(Permit::Closed { generation }));
                None
            }
            Snapshot::ForcedClosed { .. } => {
                settled = Some(Admission::Admitted(Permit::Untracked));
                None
            }
            Snapshot::Isolated { .. } => {
                settled = Some(Admission::Rejected(self.rejection(snapshot)));
                None
            }
            Snapshot::Open {
                generation,
                reopens,
                until_ms,
                ..
            } => {
                if now_ticks < until_ms.saturating_mul(NANOS_PER_MS) {
                    settled = Some(Admission::Rejected(self.rejection(snapshot)));
                    return None;
                }
                Some(Snapshot::HalfOpen {
                    generation: next_generation(generation),
                    reopens,
                    admitted: 1,
                    succeeded: 0,
                })
            }
            Snapshot::HalfOpen {
                generation,
                reopens,
                admitted,
                succeeded,
            } => {
                if admitted < self.config.probes {
                    return Some(Snapshot::HalfOpen {
                        generation,
                        reopens,
                        admitted: admitted + 1,
                        succeeded,
                    });
                }
                let deadline = self.probe_deadline(generation);
                if deadline.is_none() {
                    // Every slot is taken but the generation has no deadline yet (the thread
                    // that took the first slot has not stamped it): stamp it now, so a hung
                    // probe is still rescued in time.
                    self.stamp_probe_deadline(generation, now);
                }
                let stuck = deadline.is_some_and(|ms| now_ticks >= ms.saturating_mul(NANOS_PER_MS));
                if !stuck {
                    settled = Some(Admission::Rejected(self.rejection(snapshot)));
                    return None;
                }
                Some(match self.config.on_probe_timeout {
                    HalfOpenTimeout::Rearm => Snapshot::HalfOpen {
                        generation: next_generation(generation),
                        reopens,
                        admitted: 1,
                        succeeded: 0,
                    },
                    HalfOpenTimeout::Reopen => reopen.snapshot(generation, next_reopens(reopens)),
                })
            }
        });
        let Some((old, new)) = exchanged else {
            // Every path that declines settles; fail open if that ever stops being true.
            return settled.unwrap_or(Admission::Admitted(Permit::Untracked));
        };
        if let Snapshot::HalfOpen {
            generation,
            admitted: 1,
            ..
        } = new
        {
            // Stamped before anything else runs, so no later failure can leave this
            // generation without a deadline.
            self.stamp_probe_deadline(generation, now);
        }
        let reason = match (old, new) {
            (Snapshot::Open { .. }, _) => Some(TransitionReason::OpenElapsed),
            (Snapshot::HalfOpen { generation: g, .. }, Snapshot::HalfOpen { generation, .. })
                if g != generation =>
            {
                Some(TransitionReason::ProbesTimedOut)
            }
            (_, Snapshot::Open { .. }) => Some(TransitionReason::ProbesTimedOut),
            _ => None,
        };
        if let Some(reason) = reason {
            self.on_transition(old, new, reason);
        }
        match new {
            Snapshot::HalfOpen { generation, .. } => {
                Admission::Admitted(Permit::Probe { generation })
            }
            other => Admission::Rejected(self.rejection(other)),
        }
    }

    /// The probe deadline of `generation`, in ms, if it has been stamped.
    fn probe_deadline(&self, generation: u16) -> Option<u64> {
        // Relaxed: the stamp carries its own generation, so a stale value is recognised and
        // read as "not yet stamped"; the state word's exchange decides any re-arm.
        let word = self.probe_deadline.load(Ordering::Relaxed);
        (word >> 48 == u64::from(generation)).then_some(word & ((1 << 48) - 1))
    }

    /// Stamps the probe deadline of `generation` (a fresh first probe pushes it later), unless
    /// the breaker has already moved past that generation: a late stamp must never replace a
    /// newer generation's.
    fn stamp_probe_deadline(&self, generation: u16, now: Instant) {
        let deadline = self
            .ms_after(now, self.config.probe_max_wait)
            .min((1 << 48) - 1);
        let stamp = (u64::from(generation) << 48) | deadline;
        // Relaxed: see `probe_deadline`; the exchange only has to be atomic with respect to
        // other stamps, and the generation check below keeps a stale stamper out.
        let mut current = self.probe_deadline.load(Ordering::Relaxed);
        loop {
            let still_current = matches!(
                self.state().load(),
                Snapshot::HalfOpen { generation: g, .. } if g == generation
            );
            let already_later =
                current >> 48 == u64::from(generation) && current & ((1 << 48) - 1) >= deadline;
            if !still_current || already_later {
                return;
            }
            match self.probe_deadline.compare_exchange_weak(
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

    /// Records the outcome of a call admitted with `permit`.
    #[inline]
    pub(crate) fn record<Res, E>(
        self: &Arc<Self>,
        permit: Permit,
        started: Option<Instant>,
        result: &Result<Res, E>,
    ) where
        C: Classify<Res, E> + Send + Sync + 'static,
    {
        let outcome = self.classifier.classify(result);
        // The hot path: an untimed success of a closed call that changes nothing (a clean, full
        // ring; or no run of failures to end). No write, no clock.
        if let (Outcome::Success, Permit::Closed { generation }, None, false) =
            (outcome, permit, started, self.config.server_directed)
        {
            let unchanged = match &self.window {
                Window::Count(window) => window.success_changes_nothing(),
                Window::Consecutive { .. } => self.state().is_closed_without_failures(generation),
                Window::Time(window) => {
                    // Every success is counted in its bucket, but needs nothing else unless the
                    // window may hold failures (then it can bring it to minimum_calls).
                    if self.state().closed_generation() != Some(generation) {
                        return;
                    }
                    let now = self.clock().now();
                    if window.record(now, false, false) {
                        // SeqCst fence: see `record_closed`.
                        fence(Ordering::SeqCst);
                        self.evaluate(generation, window.counts(now), Some(now));
                    }
                    return;
                }
            };
            if unchanged {
                return;
            }
        }
        if self.config.server_directed {
            if let Some(pushback) = self.classifier.pushback(result) {
                if pushback >= MIN_SERVER_PUSHBACK {
                    self.open_by_server(pushback.min(self.config.max_pushback));
                }
            }
        }
        self.record_outcome(permit, started, outcome);
    }

    fn record_outcome(self: &Arc<Self>, permit: Permit, started: Option<Instant>, outcome: Outcome)
    where
        C: Send + Sync + 'static,
    {
        if outcome == Outcome::Ignore {
            self.release(permit);
            return;
        }
        let needs_clock = started.is_some()
            || (matches!(self.window, Window::Time(_)) && permit != Permit::Untracked);
        let now = needs_clock.then(|| self.clock().now());
        let slow = match (started, now, self.config.slow_call) {
            (Some(started), Some(now), Some(threshold)) => {
                now.saturating_duration_since(started) > threshold
            }
            _ => false,
        };
        let failed = outcome == Outcome::Failure;
        match permit {
            Permit::Untracked => {}
            Permit::Closed { generation } => self.record_closed(generation, failed, slow, now),
            Permit::Probe { generation } => self.record_probe(generation, failed || slow),
        }
    }

    fn record_closed(
        self: &Arc<Self>,
        generation: u16,
        failed: bool,
        slow: bool,
        now: Option<Instant>,
    ) where
        C: Send + Sync + 'static,
    {
        let current = |snapshot| matches!(snapshot, Snapshot::Closed { generation: g, .. } if g == generation);
        match &self.window {
            Window::Consecutive { threshold } => {
                let threshold = *threshold;
                if !failed {
                    // A success writes only when it ends a run of failures.
                    if !matches!(self.state().load(), Snapshot::Closed { generation: g, failures } if g == generation && failures > 0)
                    {
                        return;
                    }
                    self.state().update(|snapshot| match snapshot {
                        Snapshot::Closed {
                            generation: g,
                            failures,
                        } if g == generation && failures > 0 => Some(Snapshot::Closed {
                            generation,
                            failures: 0,
                        }),
                        _ => None,
                    });
                    return;
                }
                let open = LazyOpen::new(self, now.unwrap_or_else(|| self.clock().now()));
                let exchanged = self.state().update(|snapshot| match snapshot {
                    Snapshot::Closed {
                        generation: g,
                        failures,
                    } if g == generation => Some(if failures + 1 >= threshold {
                        open.snapshot(generation, 0)
                    } else {
                        Snapshot::Closed {
                            generation,
                            failures: failures + 1,
                        }
                    }),
                    _ => None,
                });
                if let Some((old, new @ Snapshot::Open { .. })) = exchanged {
                    self.on_transition(old, new, TransitionReason::ConsecutiveFailures);
                }
            }
            Window::Count(window) => {
                if !current(self.state().load()) {
                    return;
                }
                if window.record(failed, slow, self.minimum_calls()) {
                    // SeqCst fence: two outcomes recorded at once each write their slot, then
                    // read the whole window. Without a total order between those writes and
                    // reads each thread may miss the other's write (the store-buffer pattern)
                    // and neither would trip; with it, the thread whose fence comes second sees
                    // both. Only evaluated records pay for it, never a plain success.
                    fence(Ordering::SeqCst);
                    self.evaluate(generation, window.counts(), now);
                }
            }
            Window::Time(window) => {
                if !current(self.state().load()) {
                    return;
                }
                let now = now.unwrap_or_else(|| self.clock().now());
                if window.record(now, failed, slow) {
                    // SeqCst fence: as for the count window above.
                    fence(Ordering::SeqCst);
                    self.evaluate(generation, window.counts(now), Some(now));
                }
            }
        }
    }

    fn minimum_calls(&self) -> u64 {
        match self.config.trip {
            Trip::Rate { minimum_calls, .. } => minimum_calls,
            Trip::Consecutive { .. } => u64::MAX,
        }
    }

    /// Opens the breaker of `generation` if the window's rates reach their thresholds.
    fn evaluate(self: &Arc<Self>, generation: u16, counts: Counts, now: Option<Instant>)
    where
        C: Send + Sync + 'static,
    {
        let Trip::Rate {
            failure_rate,
            slow_rate,
            minimum_calls,
            ..
        } = self.config.trip
        else {
            return;
        };
        if counts.calls == 0 || counts.calls < minimum_calls {
            return;
        }
        #[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
        let rate = |n: u64| n as f64 / counts.calls as f64;
        let reason = if rate(counts.failures) >= failure_rate.get() {
            TransitionReason::FailureRate
        } else if slow_rate.is_some_and(|threshold| rate(counts.slow) >= threshold.get()) {
            TransitionReason::SlowCallRate
        } else {
            return;
        };
        let open = LazyOpen::new(self, now.unwrap_or_else(|| self.clock().now()));
        let exchanged = self.state().update(|snapshot| match snapshot {
            Snapshot::Closed { generation: g, .. } if g == generation => {
                Some(open.snapshot(generation, 0))
            }
            _ => None,
        });
        if let Some((old, new)) = exchanged {
            self.on_transition(old, new, reason);
        }
    }

    fn record_probe(self: &Arc<Self>, generation: u16, failed: bool)
    where
        C: Send + Sync + 'static,
    {
        if failed {
            let open = LazyOpen::new(self, self.clock().now());
            let exchanged = self.state().update(|snapshot| match snapshot {
                Snapshot::HalfOpen {
                    generation: g,
                    reopens,
                    ..
                } if g == generation => Some(open.snapshot(generation, next_reopens(reopens))),
                _ => None,
            });
            if let Some((old, new)) = exchanged {
                self.on_transition(old, new, TransitionReason::ProbeFailed);
            }
            return;
        }
        let probes = self.config.probes;
        let window_reset = Cell::new(false);
        let exchanged = self.state().update(|snapshot| match snapshot {
            Snapshot::HalfOpen {
                generation: g,
                reopens,
                admitted,
                succeeded,
            } if g == generation => Some(if succeeded + 1 >= probes {
                // This attempt would close the breaker: empty the window first (once), so the
                // closed period starts clean whichever concurrent success closes it. Resetting
                // while half-open is harmless: the window counts nothing until the next close.
                if !window_reset.replace(true) {
                    self.reset_window();
                }
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
        });
        if let Some((old, new @ Snapshot::Closed { .. })) = exchanged {
            self.on_transition(old, new, TransitionReason::ProbesSucceeded);
        }
    }

    /// Gives back the permit of a call that will record nothing: its outcome was ignored, or
    /// its future was dropped before it finished.
    pub(crate) fn release(&self, permit: Permit) {
        let Permit::Probe { generation } = permit else {
            return;
        };
        self.state().update(|snapshot| match snapshot {
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
        });
    }

    /// Opens the breaker for `pushback`, as the server asked.
    fn open_by_server(self: &Arc<Self>, pushback: Duration)
    where
        C: Send + Sync + 'static,
    {
        let now = self.clock().now();
        let until_ms = self.ms_after(now, pushback.max(Duration::from_millis(1)));
        let armed = self.can_arm();
        let exchanged = self.state().update(|snapshot| match snapshot {
            Snapshot::Isolated { .. } | Snapshot::ForcedClosed { .. } => None,
            Snapshot::Open { until_ms: u, .. } if u >= until_ms => None,
            // Already open: push `until` out in the same generation. No transition, no new
            // timer (the armed one sees the later `until` and sleeps again).
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
            other => Some(Snapshot::Open {
                generation: next_generation(other.generation()),
                reopens: other.reopens(),
                armed,
                until_ms,
            }),
        });
        if let Some((old, new)) = exchanged {
            if !matches!(old, Snapshot::Open { .. }) {
                self.on_transition(old, new, TransitionReason::ServerDirected);
            }
        }
    }

    /// Whether an open timer can be armed here: tokio's clock, inside a tokio runtime.
    fn can_arm(&self) -> bool {
        self.config.clock.is_tokio() && tokio::runtime::Handle::try_current().is_ok()
    }

    /// The open duration after `reopens` consecutive re-opens, before jitter.
    fn open_duration(&self, reopens: u8) -> Duration {
        let factor = 1u32 << u32::from(reopens).min(30);
        self.config
            .open_base
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.config.open_max)
    }

    /// Runs the side effects of one successful exchange: count it, log it, tell subscribers,
    /// and arm the open timer.
    fn on_transition(self: &Arc<Self>, old: Snapshot, new: Snapshot, reason: TransitionReason)
    where
        C: Send + Sync + 'static,
    {
        // Relaxed: a statistic.
        self.transitions.fetch_add(1, Ordering::Relaxed);
        let transition = Transition {
            from: State::from(old),
            to: State::from(new),
            generation: new.generation(),
            reason,
        };
        let breaker = self.config.name.as_deref().unwrap_or("");
        if let Some(quieted) = self.info_line(self.ms_after(self.clock().now(), Duration::ZERO)) {
            tracing::info!(
                breaker,
                from = ?transition.from,
                to = ?transition.to,
                generation = transition.generation,
                reason = ?transition.reason,
                quieted,
                "circuit breaker transition"
            );
        } else {
            tracing::debug!(
                breaker,
                from = ?transition.from,
                to = ?transition.to,
                generation = transition.generation,
                reason = ?transition.reason,
                "circuit breaker transition (info lines rate-limited)"
            );
        }
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(transition);
        }
        if let Snapshot::Open {
            generation,
            armed: true,
            until_ms,
            ..
        } = new
        {
            self.arm_timer(generation, until_ms);
        }
    }

    /// Whether a transition at `now_ms` may log at info: at most [`LOG_LINES_PER_WINDOW`] per
    /// [`LOG_WINDOW_MS`] (a flapping breaker would otherwise log as fast as it flaps). Returns
    /// how many were logged at debug instead since the last info line.
    fn info_line(&self, now_ms: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        // Relaxed: only a log level depends on it.
        let mut word = self.log_window.load(Relaxed);
        loop {
            let fresh = word == u64::MAX || now_ms >= (word >> 16).saturating_add(LOG_WINDOW_MS);
            let next = if fresh {
                (now_ms.min(PAYLOAD_MS_MAX) << 16) | 1
            } else if word & 0xFFFF < LOG_LINES_PER_WINDOW {
                word + 1
            } else {
                self.log_quieted.fetch_add(1, Relaxed);
                return None;
            };
            match self
                .log_window
                .compare_exchange_weak(word, next, Relaxed, Relaxed)
            {
                Ok(_) => {
                    return Some(if fresh {
                        self.log_quieted.swap(0, Relaxed)
                    } else {
                        0
                    });
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Starts the task that moves Open(`generation`) to HalfOpen at `until_ms`.
    fn arm_timer(self: &Arc<Self>, generation: u16, until_ms: u64)
    where
        C: Send + Sync + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.disarm(generation);
            return;
        };
        let at = self.instant_of_ms(until_ms);
        let timer = OpenTimer {
            breaker: Arc::downgrade(self),
            generation,
            fired: false,
        };
        runtime.spawn(async move {
            let mut timer = timer;
            let mut at = at;
            loop {
                tokio::time::sleep_until(at).await;
                match timer.fire() {
                    // Server pushback moved `until` out meanwhile: sleep until then.
                    Some(later) => at = later,
                    None => break,
                }
            }
        });
    }

    /// Open(`generation`) to HalfOpen(`generation + 1`, no probe admitted yet), once its
    /// `until` has passed. Returns the later `until` if it was pushed out meanwhile (the timer
    /// then sleeps again).
    fn open_elapsed(self: &Arc<Self>, generation: u16) -> Option<Instant>
    where
        C: Send + Sync + 'static,
    {
        let now_ticks = self.ticks(self.clock().now());
        let mut later = None;
        let exchanged = self.state().update(|snapshot| match snapshot {
            Snapshot::Open {
                generation: g,
                until_ms,
                ..
            } if g == generation && now_ticks < until_ms.saturating_mul(NANOS_PER_MS) => {
                later = Some(self.instant_of_ms(until_ms));
                None
            }
            Snapshot::Open {
                generation: g,
                reopens,
                ..
            } if g == generation => Some(Snapshot::HalfOpen {
                generation: next_generation(generation),
                reopens,
                admitted: 0,
                succeeded: 0,
            }),
            _ => None,
        });
        if let Some((old, new)) = exchanged {
            // The first probe pushes this later; until one comes, it is how long the half-open
            // breaker waits for a probe before a keyed sweep may forget it.
            self.stamp_probe_deadline(new.generation(), self.clock().now());
            self.on_transition(old, new, TransitionReason::OpenElapsed);
        }
        later
    }

    /// Clears the armed bit of Open(`generation`): calls then check the clock themselves.
    fn disarm(&self, generation: u16) {
        self.state().update(|snapshot| match snapshot {
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
        });
    }

    fn reset_window(&self) {
        match &self.window {
            Window::Consecutive { .. } => {}
            Window::Count(window) => window.reset(),
            Window::Time(window) => window.reset(),
        }
    }

    /// Moves to `target` (Isolated, ForcedClosed or Closed) from any state.
    pub(crate) fn force(self: &Arc<Self>, target: State)
    where
        C: Send + Sync + 'static,
    {
        let (reason, make): (_, fn(u16) -> Snapshot) = match target {
            State::Isolated => (TransitionReason::Isolated, |generation| {
                Snapshot::Isolated { generation }
            }),
            State::ForcedClosed => (TransitionReason::ForcedClosed, |generation| {
                Snapshot::ForcedClosed { generation }
            }),
            _ => (TransitionReason::Reset, |generation| Snapshot::Closed {
                generation,
                failures: 0,
            }),
        };
        if reason == TransitionReason::Reset {
            self.reset_window();
        }
        let exchanged = self
            .state()
            .update(|snapshot| Some(make(next_generation(snapshot.generation()))));
        if let Some((old, new)) = exchanged {
            self.on_transition(old, new, reason);
        }
    }

    /// Whether a keyed breaker left idle for at least `idle` may be forgotten (a key that comes
    /// back starts over with a fresh, closed breaker). The rule, by state:
    ///
    /// - Closed with nothing bad in its window: always, nothing is lost.
    /// - Closed with failures on record: once idle for the open duration plus the probe wait
    ///   (the time a trip would have taken to play out); the record is stale by then.
    /// - Open: once its open period *and* the probe wait after it have passed. Within that,
    ///   forgetting it would send the failing upstream full traffic again.
    /// - HalfOpen: once the probe deadline has passed (no probe is in flight, or the one in
    ///   flight is stuck). The open timer stamps that deadline when it half-opens.
    /// - Isolated, ForcedClosed: never, they are an operator's decision.
    ///
    /// Without the Open and HalfOpen rules a breaker that tripped and then lost its traffic
    /// would hold its slot forever, and a long uptime would fill `max_keys` with them.
    pub(crate) fn evictable(&self, idle: Duration) -> bool {
        match self.state().load() {
            Snapshot::Closed { failures, .. } => {
                let quiet = failures == 0
                    && match &self.window {
                        Window::Consecutive { .. } => true,
                        Window::Count(window) => window.holds_nothing_bad(),
                        Window::Time(window) => {
                            let counts = window.counts(self.clock().now());
                            counts.failures == 0 && counts.slow == 0
                        }
                    };
                quiet
                    || idle
                        >= self
                            .config
                            .open_base
                            .saturating_add(self.config.probe_max_wait)
            }
            Snapshot::Open { until_ms, .. } => {
                let now_ms = self.ms_after(self.clock().now(), Duration::ZERO);
                let wait_ms =
                    u64::try_from(self.config.probe_max_wait.as_millis()).unwrap_or(u64::MAX);
                now_ms >= until_ms.saturating_add(wait_ms)
            }
            Snapshot::HalfOpen { generation, .. } => {
                let now_ticks = self.ticks(self.clock().now());
                self.probe_deadline(generation)
                    .is_some_and(|ms| now_ticks >= ms.saturating_mul(NANOS_PER_MS))
            }
            Snapshot::Isolated { .. } | Snapshot::ForcedClosed { .. } => false,
        }
    }

    pub(crate) fn current_state(&self) -> State {
        State::from(self.state().load())
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let snapshot = self.state().load();
        let counts = match &self.window {
            Window::Consecutive { .. } => Counts::default(),
            Window::Count(window) => window.counts(),
            Window::Time(window) => window.counts(self.clock().now()),
        };
        let (consecutive_failures, probes_admitted, probes_succeeded) = match snapshot {
            Snapshot::Closed { failures, .. } => (failures, 0, 0),
            Snapshot::HalfOpen {
                admitted,
                succeeded,
                ..
            } => (0, admitted, succeeded),
            _ => (0, 0, 0),
        };
        Metrics::new(
            State::from(snapshot),
            counts,
            consecutive_failures,
            probes_admitted,
            probes_succeeded,
            // Relaxed: a statistic.
            self.transitions.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.events.subscribe()
    }
}

/// Computes an Open snapshot's `until` at most once per transition attempt: the jitter draw
/// advances shared state, so it must not repeat when the exchange loop retries.
struct LazyOpen<'a, C> {
    breaker: &'a Breaker<C>,
    now: Instant,
    armed: Cell<Option<bool>>,
    until: Cell<Option<(u8, u64)>>,
}

impl<'a, C> LazyOpen<'a, C> {
    fn new(breaker: &'a Breaker<C>, now: Instant) -> Self {
        Self {
            breaker,
            now,
            armed: Cell::new(None),
            until: Cell::new(None),
        }
    }

    /// Open(`generation + 1`) after `reopens` re-opens.
    fn snapshot(&self, generation: u16, reopens: u8) -> Snapshot {
        let until_ms = match self.until.get() {
            Some((r, until_ms)) if r == reopens => until_ms,
            _ => {
                let base = self.breaker.open_duration(reopens);
                let jitter = self.breaker.config.open_jitter.get();
                let duration = if jitter > 0.0 {
                    let spread = jitter * (2.0 * self.breaker.random.unit() - 1.0);
                    scale(base, 1.0 + spread).max(Duration::from_millis(1))
                } else {
                    base
                };
                let until_ms = self.breaker.ms_after(self.now, duration);
                self.until.set(Some((reopens, until_ms)));
                until_ms
            }
        };
        let armed = match self.armed.get() {
            Some(armed) => armed,
            None => {
                let armed = self.breaker.can_arm();
                self.armed.set(Some(armed));
                armed
            }
        };
        Snapshot::Open {
            generation: next_generation(generation),
            reopens,
            armed,
            until_ms,
        }
    }
}

/// One rejection in this many, per thread, by an armed open breaker reads the clock (see
/// [`Breaker::admit`]): about 1.5 ns a rejection on average (the counter and the amortised clock
/// read; measured 2026-12-01: every 16th cost 5 ns, every 1024th under 1 ns), and a breaker
/// whose timer can no longer fire still leaves Open within this many calls per thread once its
/// time has passed.
const CLOCK_CHECK_EVERY: u32 = 64;

/// Whether this armed-open rejection is the sampled one that reads the clock.
#[cfg(not(palisade_loom))]
#[inline(always)]
fn clock_check_due() -> bool {
    std::thread_local! {
        static REJECTIONS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    REJECTIONS.with(|count| {
        let n = count.get().wrapping_add(1);
        count.set(n);
        n % CLOCK_CHECK_EVERY == 0
    })
}

/// Under loom the sample would carry state from one explored interleaving to the next, which
/// loom forbids; the models drive the timer themselves.
#[cfg(palisade_loom)]
#[inline(always)]
fn clock_check_due() -> bool {
    false
}

/// The open timer's task state: fires once, or disarms the breaker if dropped unfired (the
/// runtime shut down first), so the breaker falls back to checking the clock.
struct OpenTimer<C> {
    breaker: Weak<Breaker<C>>,
    generation: u16,
    fired: bool,
}

impl<C: Send + Sync + 'static> OpenTimer<C> {
    /// Moves the breaker on, or returns the later time to wake at if its `until` was pushed
    /// out.
    fn fire(&mut self) -> Option<Instant> {
        let later = self
            .breaker
            .upgrade()
            .and_then(|breaker| breaker.open_elapsed(self.generation));
        self.fired = later.is_none();
        later
    }
}

impl<C> Drop for OpenTimer<C> {
    fn drop(&mut self) {
        if !self.fired {
            if let Some(breaker) = self.breaker.upgrade() {
                breaker.disarm(self.generation);
            }
        }
    }
}

#[cfg(test)]
impl<C: Send + Sync + 'static> Breaker<C> {
    pub(crate) fn snapshot_for_tests(&self) -> Snapshot {
        self.state().load()
    }

    #[cfg_attr(palisade_loom, allow(dead_code))]
    pub(crate) fn set_for_tests(&self, snapshot: Snapshot) {
        self.state().update(|_| Some(snapshot));
    }

    pub(crate) fn open_elapsed_for_tests(self: &Arc<Self>, generation: u16) {
        let _ = self.open_elapsed(generation);
    }

    #[cfg_attr(palisade_loom, allow(dead_code))]
    pub(crate) fn info_line_for_tests(&self, now_ms: u64) -> Option<u64> {
        self.info_line(now_ms)
    }

    #[cfg_attr(palisade_loom, allow(dead_code))]
    pub(crate) fn open_by_server_for_tests(self: &Arc<Self>, pushback: Duration) {
        self.open_by_server(pushback);
    }

    #[cfg_attr(palisade_loom, allow(dead_code))]
    pub(crate) fn stamp_probe_deadline_for_tests(&self, generation: u16) {
        self.stamp_probe_deadline(generation, self.clock().now());
    }

    #[cfg_attr(palisade_loom, allow(dead_code))]
    pub(crate) fn now_ms_for_tests(&self) -> u64 {
        self.ms_after(self.clock().now(), Duration::ZERO)
    }
}
