//! Building a breaker: [`CircuitBreakerBuilder`], its defaults and their validation.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use super::CircuitBreakerLayer;
use super::breaker::Breaker;
use super::error::CircuitOpen;
use super::handle::{REJECTION_LABELS, STATE_LABELS, Transition};
use super::keyed::{DEFAULT_MAX_KEYS, KeyedCircuitBreakerLayer};
use super::state::{MAX_PROBES, MAX_UNTIL_MS};
use crate::Ratio;
use crate::classify::DefaultClassifier;
use crate::clock::Clock;
use crate::error::{ConfigError, duration_within};
use crate::hook::Hook;
use crate::instruments::{BreakerStates, Calls, LayerKind, name_label};

/// Size of the default count-based window: the last 100 calls (resilience4j's
/// `slidingWindowSize`).
pub const DEFAULT_WINDOW_SIZE: NonZeroU32 = NonZeroU32::new(100).unwrap();
/// Failure rate at which the breaker opens: 50 % (resilience4j, Hystrix and opossum all use 50).
pub const DEFAULT_FAILURE_RATE: Ratio = Ratio::new_const(0.5);
/// Calls the window must hold before any decision: 100 (resilience4j's
/// `minimumNumberOfCalls`, Polly's `MinimumThroughput`), or a smaller count window's whole size
/// when the setting is left at its default.
pub const DEFAULT_MINIMUM_CALLS: NonZeroU32 = NonZeroU32::new(100).unwrap();
/// How long the breaker stays open: 5 s (Polly v8's `BreakDuration`, Hystrix's sleep window).
pub const DEFAULT_OPEN_DURATION: Duration = Duration::from_secs(5);
/// Probes admitted while half-open: 1 (Polly, Hystrix, opossum).
pub const DEFAULT_PROBES: NonZeroU32 = NonZeroU32::MIN;
/// Longest time a server-directed open (a `Retry-After`) may keep the breaker open: 5 min.
pub const DEFAULT_MAX_PUSHBACK: Duration = Duration::from_secs(300);
/// Shortest server pushback a server-directed breaker acts on: 1 s. A shorter one (`Retry-After:
/// 0`, a sub-second `retry-after-ms`) is no pushback at all: the result only counts as the
/// classifier says. Opening for a millisecond at a time would cycle the breaker (and its timer,
/// its log line and its generation) as fast as the server can answer.
pub const MIN_SERVER_PUSHBACK: Duration = Duration::from_secs(1);

/// The shortest open duration, bucket or probe wait: 1 ms, the word's time resolution.
const MIN_DURATION: Duration = Duration::from_millis(1);
/// The longest open duration or probe wait: 30 days, far below what the word can hold.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// The widest count window (64 words per bit ring).
const MAX_WINDOW_SIZE: u32 = 4096;
/// The most buckets in a time window.
const MAX_BUCKETS: u32 = 64;

/// What to do when every half-open probe is still in flight after the maximum wait (its caller
/// hung, or holds the future without polling it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HalfOpenTimeout {
    /// Admit a fresh set of probes; the stuck probes' outcomes are then ignored (they belong to
    /// an older generation). The default, as Polly re-arms its single probe.
    #[default]
    Rearm,
    /// Treat the stuck probes as failed and open again, with the next open duration.
    Reopen,
}

/// How the closed breaker decides to open.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Trip {
    /// After `threshold` consecutive failures.
    Consecutive { threshold: u64 },
    /// When a rate over the window reaches its threshold, once the window holds
    /// `minimum_calls`.
    Rate {
        window: WindowKind,
        failure_rate: Ratio,
        slow_rate: Option<Ratio>,
        minimum_calls: u64,
    },
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum WindowKind {
    Count { size: u32 },
    Time { span: Duration, buckets: u32 },
}

/// The breaker's event hooks (see [`crate::hook`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Hooks {
    pub(crate) on_transition: Hook<Transition>,
    pub(crate) on_rejected: Hook<CircuitOpen>,
}

/// The breaker's metrics (empty without the `metrics` feature): one set per layer, which the
/// breakers of a keyed layer share (their state is not one gauge, so only its transitions are
/// counted).
#[derive(Clone, Debug)]
pub(crate) struct Instruments {
    pub(crate) calls: Calls,
    pub(crate) states: BreakerStates,
}

impl Instruments {
    fn new(name: Option<&str>, keyed: bool) -> Self {
        let label = name_label(name);
        let states = if keyed { &[][..] } else { STATE_LABELS };
        Self {
            calls: Calls::new(LayerKind::CircuitBreaker, &label, REJECTION_LABELS, &[]),
            states: BreakerStates::new(&label, states),
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) instruments: Instruments,
    /// The layer's name, interned for its rejections (0: none; see `names`).
    pub(crate) name_id: u32,
    pub(crate) hooks: Hooks,
    pub(crate) trip: Trip,
    pub(crate) slow_call: Option<Duration>,
    pub(crate) open_base: Duration,
    pub(crate) open_max: Duration,
    pub(crate) open_jitter: Ratio,
    pub(crate) probes: u16,
    pub(crate) probe_max_wait: Duration,
    pub(crate) on_probe_timeout: HalfOpenTimeout,
    pub(crate) server_directed: bool,
    pub(crate) max_pushback: Duration,
    pub(crate) jitter_seed: Option<u64>,
    pub(crate) clock: Clock,
}

/// Builds a [`CircuitBreakerLayer`]: choose a trip policy, thresholds and the open and
/// half-open behaviour, then [`build`](Self::build). Every setter states its default; the
/// [module docs](crate::circuit_breaker) list them with their sources.
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use palisade::Ratio;
/// use palisade::circuit_breaker::CircuitBreakerLayer;
///
/// let layer = CircuitBreakerLayer::builder()
///     .time_window(Duration::from_secs(30), NonZeroU32::new(10).unwrap())
///     .failure_rate(Ratio::percent(25.0).unwrap())
///     .minimum_calls(NonZeroU32::new(20).unwrap())
///     .open_for(Duration::from_secs(2))
///     .open_backoff(Duration::from_secs(60))
///     .open_jitter(Ratio::new_const(0.2))
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct CircuitBreakerBuilder<C = DefaultClassifier> {
    classifier: C,
    name: Option<Arc<str>>,
    hooks: Hooks,
    window: Option<WindowKind>,
    consecutive: Option<NonZeroU32>,
    failure_rate: Ratio,
    /// `None`: the default, [`DEFAULT_MINIMUM_CALLS`] or a smaller count window's size.
    minimum_calls: Option<NonZeroU32>,
    slow_call: Option<(Duration, Ratio)>,
    open_base: Duration,
    open_max: Option<Duration>,
    open_jitter: Ratio,
    probes: NonZeroU32,
    probe_max_wait: Option<Duration>,
    on_probe_timeout: HalfOpenTimeout,
    server_directed: bool,
    max_pushback: Duration,
    jitter_seed: Option<u64>,
    clock: Clock,
    max_keys: NonZeroUsize,
}

impl CircuitBreakerBuilder {
    pub(crate) fn new() -> Self {
        Self {
            classifier: DefaultClassifier,
            name: None,
            hooks: Hooks::default(),
            window: None,
            consecutive: None,
            failure_rate: DEFAULT_FAILURE_RATE,
            minimum_calls: None,
            slow_call: None,
            open_base: DEFAULT_OPEN_DURATION,
            open_max: None,
            open_jitter: Ratio::ZERO,
            probes: DEFAULT_PROBES,
            probe_max_wait: None,
            on_probe_timeout: HalfOpenTimeout::Rearm,
            server_directed: false,
            max_pushback: DEFAULT_MAX_PUSHBACK,
            jitter_seed: None,
            clock: Clock::default(),
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

impl<C> CircuitBreakerBuilder<C> {
    /// Decides what counts as a failure with `classifier` (a
    /// [`Classify`](crate::classify::Classify) implementation or a closure). Defaults to
    /// [`DefaultClassifier`]: `Err` is a failure.
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerBuilder<C2> {
        CircuitBreakerBuilder {
            classifier,
            name: self.name,
            hooks: self.hooks,
            window: self.window,
            consecutive: self.consecutive,
            failure_rate: self.failure_rate,
            minimum_calls: self.minimum_calls,
            slow_call: self.slow_call,
            open_base: self.open_base,
            open_max: self.open_max,
            open_jitter: self.open_jitter,
            probes: self.probes,
            probe_max_wait: self.probe_max_wait,
            on_probe_timeout: self.on_probe_timeout,
            server_directed: self.server_directed,
            max_pushback: self.max_pushback,
            jitter_seed: self.jitter_seed,
            clock: self.clock,
            max_keys: self.max_keys,
        }
    }

    /// A name for this breaker's transition events and `Debug` output. Defaults to none.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Calls `hook` with every state change, on the task that made it, once the new state is in
    /// place (and its open timer armed): nothing spawned, nothing buffered, so unlike
    /// [`subscribe`](crate::circuit_breaker::CircuitBreakerHandle::subscribe) it never lags.
    /// Calls on different tasks may run at once, so two quick transitions can be told out of
    /// order: order them by [`Transition::generation`](crate::circuit_breaker::Transition).
    /// Keep it short; see [`crate::circuit_breaker#event-hooks`]. Set twice, both run. For
    /// keyed breakers, every key's breaker calls it.
    pub fn on_transition(mut self, hook: impl Fn(&Transition) + Send + Sync + 'static) -> Self {
        self.hooks.on_transition = self.hooks.on_transition.then(hook);
        self
    }

    /// Calls `hook` with every rejection, before the rejected call returns it (on the caller's
    /// task). Costs nothing on admitted calls. Set twice, both run.
    pub fn on_rejected(mut self, hook: impl Fn(&CircuitOpen) + Send + Sync + 'static) -> Self {
        self.hooks.on_rejected = self.hooks.on_rejected.then(hook);
        self
    }

    /// Trips on the failure rate over the last `size` calls (a real ring: after any number of
    /// successes, the last `size` outcomes alone decide). The default policy, with a size of
    /// [`DEFAULT_WINDOW_SIZE`] (100); at most 4096.
    pub fn count_window(mut self, size: NonZeroU32) -> Self {
        self.window = Some(WindowKind::Count { size: size.get() });
        self.consecutive = None;
        self
    }

    /// Trips on the failure rate over the calls of the last `span`, kept in `buckets` buckets
    /// of `span / buckets` each (at most 64, each at least 1 ms). Old buckets drop out whole, so
    /// the window slides in steps of one bucket. Reads the clock once per call.
    pub fn time_window(mut self, span: Duration, buckets: NonZeroU32) -> Self {
        self.window = Some(WindowKind::Time {
            span,
            buckets: buckets.get(),
        });
        self.consecutive = None;
        self
    }

    /// Trips after `threshold` consecutive failures, with no window (the cheapest policy: a
    /// success writes only when it ends a run of failures).
    pub fn consecutive_failures(mut self, threshold: NonZeroU32) -> Self {
        self.consecutive = Some(threshold);
        self.window = None;
        self
    }

    /// The failure rate at which a windowed breaker opens (`>=`). Defaults to
    /// [`DEFAULT_FAILURE_RATE`] (50 %); above zero.
    pub fn failure_rate(mut self, rate: Ratio) -> Self {
        self.failure_rate = rate;
        self
    }

    /// Calls the window must hold before a rate can open the breaker. Defaults to
    /// [`DEFAULT_MINIMUM_CALLS`] (100), or a count window's whole size when that is smaller; at
    /// most a count window's size (a time window takes any number).
    pub fn minimum_calls(mut self, calls: NonZeroU32) -> Self {
        self.minimum_calls = Some(calls);
        self
    }

    /// Counts calls longer than `threshold` (strictly) as slow, and opens when the slow-call
    /// rate reaches `rate` (`>=`), successes included. Defaults to off. Needs a window, and
    /// reads the clock when each call starts and ends.
    pub fn slow_calls(mut self, threshold: Duration, rate: Ratio) -> Self {
        self.slow_call = Some((threshold, rate));
        self
    }

    /// How long the breaker stays open. Defaults to [`DEFAULT_OPEN_DURATION`] (5 s); between
    /// 1 ms and 30 days.
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.open_base = duration;
        self
    }

    /// Doubles the open duration with each re-open that follows a failed probe, up to `max`
    /// (before jitter, which may spread it past `max` by the jitter fraction); a successful
    /// close starts over. Defaults to off (every open lasts the same).
    pub fn open_backoff(mut self, max: Duration) -> Self {
        self.open_max = Some(max);
        self
    }

    /// Spreads each open duration uniformly over `±jitter` of itself, so a fleet of breakers
    /// that opened together does not probe together. Defaults to zero.
    pub fn open_jitter(mut self, jitter: Ratio) -> Self {
        self.open_jitter = jitter;
        self
    }

    /// Seeds the jitter's random numbers, for reproducible tests. Defaults to a random seed.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// Probes admitted while half-open; all must succeed to close. Defaults to
    /// [`DEFAULT_PROBES`] (1); at most 4095.
    pub fn half_open_probes(mut self, probes: NonZeroU32) -> Self {
        self.probes = probes;
        self
    }

    /// How long probes may stay in flight before they count as stuck, and what then happens.
    /// Defaults to the open duration and [`HalfOpenTimeout::Rearm`].
    pub fn half_open_max_wait(mut self, wait: Duration, then: HalfOpenTimeout) -> Self {
        self.probe_max_wait = Some(wait);
        self.on_probe_timeout = then;
        self
    }

    /// Opens the breaker when the classifier reports server pushback (with
    /// [`StatusClassifier`](crate::classify::StatusClassifier): a `503` or `429` with
    /// `Retry-After`), for that long, at most `max` ([`MIN_SERVER_PUSHBACK`] to 30 days). An
    /// open breaker's time is only ever pushed later. A pushback shorter than
    /// [`MIN_SERVER_PUSHBACK`] (1 s) is ignored. Defaults to off.
    pub fn server_directed(mut self, max: Duration) -> Self {
        self.server_directed = true;
        self.max_pushback = max;
        self
    }

    /// The clock decisions read. Defaults to tokio's; a
    /// [`ManualClock`](crate::clock::ManualClock) drives a breaker by hand (then no timer
    /// moves it out of Open: calls compare the clock themselves).
    pub fn clock(mut self, clock: impl Into<Clock>) -> Self {
        self.clock = clock.into();
        self
    }

    /// For [`keyed`](Self::keyed) breakers: how many keys to track at most. Defaults to
    /// [`DEFAULT_MAX_KEYS`](super::DEFAULT_MAX_KEYS) (1024).
    pub fn max_keys(mut self, max: NonZeroUsize) -> Self {
        self.max_keys = max;
        self
    }

    /// Checks the settings and builds a layer with one breaker per key, `key_of` mapping each
    /// request to its key (a host, a route, a tenant id). Every key's breaker has this
    /// configuration; see [`KeyedCircuitBreaker`](super::KeyedCircuitBreaker).
    ///
    /// A key is hashed, not stored, so returning a borrowed or `Copy` key keeps the call
    /// allocation-free.
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use palisade::circuit_breaker::CircuitBreakerLayer;
    ///
    /// let per_host = CircuitBreakerLayer::builder()
    ///     .max_keys(NonZeroUsize::new(256).unwrap())
    ///     .keyed(|req: &http::Request<()>| req.uri().host().map(str::to_owned))
    ///     .unwrap();
    /// # let _ = per_host;
    /// ```
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn keyed<F>(self, key_of: F) -> Result<KeyedCircuitBreakerLayer<F, C>, ConfigError>
    where
        C: Clone + Send + Sync + 'static,
    {
        let config = self.validate(true)?;
        Ok(KeyedCircuitBreakerLayer::new(
            key_of,
            config,
            self.classifier,
            self.max_keys.get(),
        ))
    }

    /// Checks the settings together and builds the layer, whose breaker every service it
    /// builds shares.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting out of range or in conflict: a zero failure or
    /// slow-call rate, a window of more than 4096 calls, minimum calls above a count window's
    /// size, more than 64 buckets or buckets under 1 ms, an open duration, probe wait or
    /// pushback cap outside 1 ms to 30 days (a pushback cap under 1 s), a backoff cap below the
    /// open duration, more than 4095 probes, or slow-call detection without a window.
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        let config = self.validate(false)?;
        Ok(CircuitBreakerLayer::from_breaker(Arc::new(Breaker::new(
            config,
            self.classifier,
        ))))
    }

    fn validate(&self, keyed: bool) -> Result<Config, ConfigError> {
        let duration = |setting, value| duration_within(setting, value, MIN_DURATION, MAX_DURATION);
        let open_base = duration("open_for", self.open_base)?;
        let open_max = match self.open_max {
            Some(max) => {
                let max = duration("open_backoff", max)?;
                if max < open_base {
                    return Err(ConfigError::Conflict {
                        setting: "open_backoff",
                        value: format!("{max:?}"),
                        other: "open_for",
                        why: "the backoff cap must be at least the open duration",
                    });
                }
                max
            }
            None => open_base,
        };
        // The longest open, jitter included, must fit the word's 41-bit `until`.
        debug_assert!(u128::from(MAX_UNTIL_MS) > MAX_DURATION.as_millis() * 2);
        let probe_max_wait = duration(
            "half_open_max_wait",
            self.probe_max_wait.unwrap_or(open_base),
        )?;
        let max_pushback = duration("server_directed", self.max_pushback)?;
        if max_pushback < MIN_SERVER_PUSHBACK {
            return Err(ConfigError::DurationOutOfRange {
                setting: "server_directed",
                value: max_pushback,
                min: MIN_SERVER_PUSHBACK,
                max: MAX_DURATION,
            });
        }
        let probes = u16::try_from(self.probes.get())
            .ok()
            .filter(|p| *p <= MAX_PROBES)
            .ok_or(ConfigError::CountOutOfRange {
                setting: "half_open_probes",
                value: u64::from(self.probes.get()),
                min: 1,
                max: u64::from(MAX_PROBES),
            })?;

        let trip = match (self.consecutive, self.window) {
            (Some(threshold), _) => {
                if self.slow_call.is_some() {
                    return Err(ConfigError::Conflict {
                        setting: "slow_calls",
                        value: "on".to_owned(),
                        other: "consecutive_failures",
                        why: "slow-call rates need a count or time window",
                    });
                }
                Trip::Consecutive {
                    threshold: u64::from(threshold.get()),
                }
            }
            (None, window) => {
                let window = window.unwrap_or(WindowKind::Count {
                    size: DEFAULT_WINDOW_SIZE.get(),
                });
                let minimum_calls = match window {
                    WindowKind::Count { size } => {
                        if size > MAX_WINDOW_SIZE {
                            return Err(ConfigError::CountOutOfRange {
                                setting: "count_window",
                                value: u64::from(size),
                                min: 1,
                                max: u64::from(MAX_WINDOW_SIZE),
                            });
                        }
                        match self.minimum_calls {
                            None => DEFAULT_MINIMUM_CALLS.get().min(size),
                            Some(calls) if calls.get() > size => {
                                return Err(ConfigError::Conflict {
                                    setting: "minimum_calls",
                                    value: calls.to_string(),
                                    other: "count_window",
                                    why: "the window can never hold more calls than its size",
                                });
                            }
                            Some(calls) => calls.get(),
                        }
                    }
                    WindowKind::Time { span, buckets } => {
                        if buckets > MAX_BUCKETS {
                            return Err(ConfigError::CountOutOfRange {
                                setting: "time_window buckets",
                                value: u64::from(buckets),
                                min: 1,
                                max: u64::from(MAX_BUCKETS),
                            });
                        }
                        if span / buckets < MIN_DURATION || span > MAX_DURATION {
                            return Err(ConfigError::DurationOutOfRange {
                                setting: "time_window span",
                                value: span,
                                min: MIN_DURATION * buckets,
                                max: MAX_DURATION,
                            });
                        }
                        self.minimum_calls.unwrap_or(DEFAULT_MINIMUM_CALLS).get()
                    }
                };
                if self.failure_rate == Ratio::ZERO {
                    return Err(ConfigError::MustBePositive {
                        setting: "failure_rate",
                    });
                }
                if let Some((_, rate)) = self.slow_call {
                    if rate == Ratio::ZERO {
                        return Err(ConfigError::MustBePositive {
                            setting: "slow_calls rate",
                        });
                    }
                }
                Trip::Rate {
                    window,
                    failure_rate: self.failure_rate,
                    slow_rate: self.slow_call.map(|(_, rate)| rate),
                    minimum_calls: u64::from(minimum_calls),
                }
            }
        };
        Ok(Config {
            name: self.name.clone(),
            instruments: Instruments::new(self.name.as_deref(), keyed),
            name_id: super::names::intern(self.name.as_deref()),
            hooks: self.hooks.clone(),
            trip,
            slow_call: self.slow_call.map(|(threshold, _)| threshold),
            open_base,
            open_max,
            open_jitter: self.open_jitter,
            probes,
            probe_max_wait,
            on_probe_timeout: self.on_probe_timeout,
            server_directed: self.server_directed,
            max_pushback,
            jitter_seed: self.jitter_seed,
            clock: self.clock.clone(),
        })
    }
}
