//! The shared breaker: the state word, the window, the open timer and the transition events.
//!
//! One `Breaker` lives behind an `Arc` in the layer; every service and every response future
//! holds a clone. The decisions are the pure functions of `state.rs`; this module and its
//! children load the word, exchange it and run the side effects, one concern per file:
//!
//! - `admission.rs`: [`Breaker::admit`], one load of the state word on the paths that decide
//!   without time (closed, isolated, forced closed, open with its timer armed);
//! - `recording.rs`: [`Breaker::record`], which writes only when the outcome changes something;
//! - `open_timer.rs`: the task that half-opens an open breaker;
//! - `control.rs`: an operator's commands and keyed eviction;
//! - `metrics.rs`: the handle's view and the transition channel;
//! - here: the struct, time arithmetic, and what every transition does (log, event, timer).

mod admission;
mod control;
mod metrics;
mod open_timer;
mod recording;

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::config::{Config, Trip, WindowKind};
use super::error::CircuitOpen;
use super::handle::{State, Transition, TransitionReason};
use super::state::{AtomicProbeDeadline, AtomicState, NANOS_PER_MS, OpenPeriod, Snapshot};
use super::window::{CountWindow, TimeWindow};
use crate::clock::{Clock, Epoch, Instant};
use crate::random::Random;
use crate::ratio::scale;
use crate::sync::{AtomicU64, Ordering};

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
    /// When the probes of the current half-open generation count as stuck.
    probe_deadline: AtomicProbeDeadline,
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
            probe_deadline: AtomicProbeDeadline::new(),
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

    /// The layer's metrics, with the state gauges resolved (see `BreakerStates::ensure`).
    #[inline(always)]
    pub(crate) fn instruments(&self) -> &super::config::Instruments {
        let instruments = &self.config.instruments;
        instruments
            .states
            .ensure(|| State::from(self.state().load()).label());
        instruments
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

    /// The open periods of a move to Open decided at `now`.
    fn open_period_at(&self, now: Instant) -> OpenPeriods<'_, C> {
        OpenPeriods {
            breaker: self,
            now,
            armed: Cell::new(None),
            until: Cell::new(None),
        }
    }

    /// Runs the side effects of one successful exchange: count it, log it, tell subscribers,
    /// and arm the open timer.
    fn on_transition(self: &Arc<Self>, old: Snapshot, new: Snapshot, reason: TransitionReason)
    where
        C: Send + Sync + 'static,
    {
        // Relaxed: a statistic.
        self.transitions.fetch_add(1, Ordering::Relaxed);
        let at = self.clock().now();
        let transition = Transition {
            from: State::from(old),
            to: State::from(new),
            generation: new.generation(),
            reason,
            at,
            breaker: super::names::name_of(self.config.name_id),
        };
        self.config.instruments.states.transition(
            transition.from.label(),
            transition.to.label(),
            || State::from(self.state().load()).label(),
        );
        let breaker = self.config.name.as_deref().unwrap_or("");
        if let Some(quieted) = self.info_line(self.ms_after(at, Duration::ZERO)) {
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
        // Last: a hook that panics leaves the timer armed and the subscribers told.
        self.config.hooks.on_transition.emit(&transition);
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
}

/// The open periods of one attempted move to Open, drawn at most once per reopen count: the
/// jitter draw advances shared state, so it must not repeat when the exchange loop retries.
pub(super) struct OpenPeriods<'a, C> {
    breaker: &'a Breaker<C>,
    now: Instant,
    armed: Cell<Option<bool>>,
    until: Cell<Option<(u8, u64)>>,
}

impl<C> OpenPeriods<'_, C> {
    /// The open period after `reopens` re-opens: the open duration for that count, jittered,
    /// from `now`.
    pub(super) fn period(&self, reopens: u8) -> OpenPeriod {
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
        OpenPeriod { armed, until_ms }
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
