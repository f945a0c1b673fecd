//! Building a throttle: [`ThrottleBuilder`], its defaults and their validation.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use super::ThrottleLayer;
use super::error::Throttled;
use super::gate::Gate;
use crate::classify::DefaultClassifier;
use crate::clock::Clock;
use crate::error::{ConfigError, duration_within};
use crate::hook::Hook;
use crate::instruments::{Calls, LayerKind, name_label};
use crate::{Factor, Ratio};

/// `K` in the rejection probability `max(0, (requests − K·accepts) / (requests + 1))`: 2, the
/// Google SRE book's value. Nothing is shed while at least half the calls succeed; below that,
/// about `1 − 2s` of the calls are shed at a success rate `s`.
pub const DEFAULT_MULTIPLIER: Factor = Factor::new_const(2.0);
/// Outcomes the rejection probability is computed over: the last 1000 calls sent, a few
/// seconds at a few hundred requests per second (the SRE book counts two minutes). A window of
/// `n` calls misjudges a dependency at the `1/K` boundary by about `1/√n`, and sheds that much
/// of a brownout it need not shed: measured in `examples/chaos.rs`, 100 calls shed 5 % of a
/// 50 % brownout, 1000 calls nothing. Smaller windows react faster to a partial failure; a
/// total one is caught by the run of failures whatever the window.
pub const DEFAULT_WINDOW_SIZE: NonZeroU32 = NonZeroU32::new(1000).unwrap();
/// Outcomes the window must hold before it sheds anything: 10, so a fresh or just-recovered
/// throttle does not shed on its first failures (or a smaller window's whole size, when the
/// setting is left at its default).
pub const DEFAULT_MINIMUM_CALLS: NonZeroU32 = NonZeroU32::new(10).unwrap();
/// Consecutive failures after which the throttle stops sending anything but probes, when at
/// least half the window's calls succeeded: 20. At a 50 % failure rate a run this long starts
/// about once per 2^21 calls, so a brownout does not trip it; a total failure of a healthy
/// dependency does within 20 calls, whatever the traffic. When fewer calls succeeded the run
/// needed is as much longer as the same odds require (about three times at 20 %).
pub const DEFAULT_SHED_AFTER: NonZeroU32 = NonZeroU32::new(20).unwrap();
/// How often a shedding throttle lets a probe through: every 250 ms (the interval the
/// composition measurements of `examples/chaos.rs` recovered with in under 300 ms while a dead
/// dependency saw 2 % of the traffic at 200 requests per second).
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Each probe interval is lengthened by a uniform draw of up to this share of itself, so
/// throttles that started shedding together do not probe together: 0.2.
pub const DEFAULT_PROBE_JITTER: Ratio = Ratio::new_const(0.2);

/// The shortest probe interval or slow-call threshold: 1 ms, the word's time resolution.
const MIN_DURATION: Duration = Duration::from_millis(1);
/// The longest probe interval or slow-call threshold: 1 hour.
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// The widest window (64 words per bit ring).
const MAX_WINDOW_SIZE: u32 = 4096;
/// The largest multiplier: beyond it, nothing short of a total failure sheds anything.
const MAX_MULTIPLIER: f64 = 100.0;

/// The settings every decision reads, fixed when the throttle is built.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) name: Option<Arc<str>>,
    /// Called with every rejection (see [`crate::hook`]).
    pub(crate) on_rejected: Hook<Throttled>,
    /// The throttle's metrics (empty without the `metrics` feature).
    pub(crate) calls: Calls,
    pub(crate) multiplier: f64,
    pub(crate) window: u32,
    pub(crate) minimum_calls: u64,
    pub(crate) shed_after: u64,
    pub(crate) probe_interval: Duration,
    pub(crate) probe_jitter: f64,
    pub(crate) slow_call: Option<Duration>,
    pub(crate) seed: Option<u64>,
    pub(crate) clock: Clock,
}

/// Configures a [`ThrottleLayer`]; finish with [`build`](Self::build).
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use palisade::Factor;
/// use palisade::classify::StatusClassifier;
/// use palisade::throttle::ThrottleLayer;
///
/// let throttle = ThrottleLayer::builder()
///     .classifier(StatusClassifier::new())
///     .multiplier(Factor::new_const(1.5))
///     .shed_after(NonZeroU32::new(10).unwrap())
///     .probe_interval(Duration::from_millis(500))
///     .build()
///     .unwrap();
/// # let _ = throttle;
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ThrottleBuilder<C = DefaultClassifier> {
    classifier: C,
    name: Option<Arc<str>>,
    on_rejected: Hook<Throttled>,
    multiplier: Factor,
    window: NonZeroU32,
    /// `None`: the default, [`DEFAULT_MINIMUM_CALLS`] or a smaller window's size.
    minimum_calls: Option<NonZeroU32>,
    shed_after: NonZeroU32,
    probe_interval: Duration,
    probe_jitter: Ratio,
    slow_call: Option<Duration>,
    seed: Option<u64>,
    clock: Clock,
}

impl ThrottleBuilder {
    pub(crate) fn new() -> Self {
        Self {
            classifier: DefaultClassifier,
            name: None,
            on_rejected: Hook::default(),
            multiplier: DEFAULT_MULTIPLIER,
            window: DEFAULT_WINDOW_SIZE,
            minimum_calls: None,
            shed_after: DEFAULT_SHED_AFTER,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            probe_jitter: DEFAULT_PROBE_JITTER,
            slow_call: None,
            seed: None,
            clock: Clock::default(),
        }
    }
}

impl<C> ThrottleBuilder<C> {
    /// Decides which outcomes count as accepted with `classifier` (a
    /// [`Classify`](crate::classify::Classify) implementation or a closure): a
    /// [`Success`](crate::classify::Outcome::Success) is accepted, a
    /// [`Failure`](crate::classify::Outcome::Failure) is not, and an
    /// [`Ignore`](crate::classify::Outcome::Ignore)d outcome counts nowhere. Defaults to
    /// [`DefaultClassifier`]: `Err` is a failure.
    pub fn classifier<C2>(self, classifier: C2) -> ThrottleBuilder<C2> {
        ThrottleBuilder {
            classifier,
            name: self.name,
            on_rejected: self.on_rejected,
            multiplier: self.multiplier,
            window: self.window,
            minimum_calls: self.minimum_calls,
            shed_after: self.shed_after,
            probe_interval: self.probe_interval,
            probe_jitter: self.probe_jitter,
            slow_call: self.slow_call,
            seed: self.seed,
            clock: self.clock,
        }
    }

    /// A name for this throttle's events, `Debug` output and metrics (the `name` label; see
    /// `palisade::metrics`, feature `metrics`). Defaults to none.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Calls `hook` with every call the throttle sheds, before the call returns the rejection
    /// (on the caller's task; see [`crate::throttle#event-hooks`]). Costs nothing on admitted
    /// calls. Set twice, both run.
    pub fn on_rejected(mut self, hook: impl Fn(&Throttled) + Send + Sync + 'static) -> Self {
        self.on_rejected = self.on_rejected.then(hook);
        self
    }

    /// `K`: how many calls the throttle sends per accepted one before it sheds. Defaults to
    /// [`DEFAULT_MULTIPLIER`] (2); between 1 and 100. Smaller sheds sooner: 1.1 sheds as soon
    /// as about one call in eleven fails.
    pub fn multiplier(mut self, multiplier: Factor) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The last `size` outcomes the rejection probability is computed over. Defaults to
    /// [`DEFAULT_WINDOW_SIZE`] (1000); at most 4096.
    pub fn window(mut self, size: NonZeroU32) -> Self {
        self.window = size;
        self
    }

    /// Outcomes the window must hold before anything is shed. Defaults to
    /// [`DEFAULT_MINIMUM_CALLS`] (10), or the window's whole size when that is smaller; at most
    /// the window's size.
    pub fn minimum_calls(mut self, calls: NonZeroU32) -> Self {
        self.minimum_calls = Some(calls);
        self
    }

    /// Consecutive failures after which only probes are sent, when at least half the window's
    /// calls succeeded; when fewer did, the run with the same odds of happening by chance
    /// (longer, at most the window). Defaults to [`DEFAULT_SHED_AFTER`] (20).
    pub fn shed_after(mut self, failures: NonZeroU32) -> Self {
        self.shed_after = failures;
        self
    }

    /// How often a shedding throttle sends a probe. Defaults to [`DEFAULT_PROBE_INTERVAL`]
    /// (250 ms); between 1 ms and 1 hour. It bounds both the load on a dead dependency (one
    /// call per interval per throttle) and how late recovery is noticed.
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// Lengthens each probe interval by a uniform draw of up to `jitter` of itself. Defaults to
    /// [`DEFAULT_PROBE_JITTER`] (20 %).
    pub fn probe_jitter(mut self, jitter: Ratio) -> Self {
        self.probe_jitter = jitter;
        self
    }

    /// Counts a call that took longer than `threshold` (strictly) as a failure, even if it
    /// succeeded: a dependency that slows down is shed before its calls start failing (and one
    /// whose every call is slow is shed like a dead one). Defaults to off; on, it reads the
    /// clock when each call starts and ends. Between 1 ms and 1 hour.
    pub fn slow_calls(mut self, threshold: Duration) -> Self {
        self.slow_call = Some(threshold);
        self
    }

    /// Seeds the random draws (rejections and probe jitter), for reproducible tests. Defaults
    /// to a per-thread random source.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The clock decisions read. Defaults to tokio's (which paused-time tests control).
    pub fn clock(mut self, clock: impl Into<Clock>) -> Self {
        self.clock = clock.into();
        self
    }

    /// Checks the settings together and builds the layer, whose state every service it builds
    /// shares.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first setting out of range or in conflict: a multiplier
    /// outside 1 to 100, a window over 4096 calls, minimum calls above the window, a probe
    /// interval or slow-call threshold outside 1 ms to 1 hour.
    pub fn build(self) -> Result<ThrottleLayer<C>, ConfigError> {
        let config = self.validate()?;
        Ok(ThrottleLayer::from_gate(Arc::new(Gate::new(
            config,
            self.classifier,
        ))))
    }

    fn validate(&self) -> Result<Config, ConfigError> {
        let multiplier = self.multiplier.within("multiplier", 1.0, MAX_MULTIPLIER)?;
        if self.window.get() > MAX_WINDOW_SIZE {
            return Err(ConfigError::CountOutOfRange {
                setting: "window",
                value: u64::from(self.window.get()),
                min: 1,
                max: u64::from(MAX_WINDOW_SIZE),
            });
        }
        let minimum_calls = match self.minimum_calls {
            None => DEFAULT_MINIMUM_CALLS.min(self.window),
            Some(calls) if calls > self.window => {
                return Err(ConfigError::Conflict {
                    setting: "minimum_calls",
                    value: calls.to_string(),
                    other: "window",
                    why: "the window can never hold more calls than its size",
                });
            }
            Some(calls) => calls,
        };
        let duration = |setting, value| duration_within(setting, value, MIN_DURATION, MAX_DURATION);
        let probe_interval = duration("probe_interval", self.probe_interval)?;
        let slow_call = self
            .slow_call
            .map(|threshold| duration("slow_calls", threshold))
            .transpose()?;
        Ok(Config {
            name: self.name.clone(),
            on_rejected: self.on_rejected.clone(),
            calls: Calls::new(
                LayerKind::Throttle,
                &name_label(self.name.as_deref()),
                &["throttled"],
                &[],
            ),
            multiplier,
            window: self.window.get(),
            minimum_calls: u64::from(minimum_calls.get()),
            shed_after: u64::from(self.shed_after.get()),
            probe_interval,
            probe_jitter: self.probe_jitter.get(),
            slow_call,
            seed: self.seed,
            clock: self.clock.clone(),
        })
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert!(ThrottleBuilder::new().build().is_ok());
    }

    #[test]
    fn minimum_calls_left_at_its_default_follows_a_smaller_window() {
        let five = NonZeroU32::new(5).unwrap();
        let config = ThrottleBuilder::new().window(five).validate().unwrap();
        assert_eq!(config.minimum_calls, 5);
        let config = ThrottleBuilder::new().validate().unwrap();
        assert_eq!(config.minimum_calls, u64::from(DEFAULT_MINIMUM_CALLS.get()));
    }

    #[test]
    fn out_of_range_settings_name_themselves() {
        let setting = |builder: ThrottleBuilder| match builder.build() {
            Err(
                ConfigError::ShareOutOfRange { setting, .. }
                | ConfigError::CountOutOfRange { setting, .. }
                | ConfigError::DurationOutOfRange { setting, .. }
                | ConfigError::Conflict { setting, .. },
            ) => setting,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(
            setting(ThrottleBuilder::new().multiplier(Factor::new_const(0.9))),
            "multiplier"
        );
        assert_eq!(
            setting(ThrottleBuilder::new().multiplier(Factor::new_const(100.1))),
            "multiplier"
        );
        assert_eq!(
            setting(ThrottleBuilder::new().window(NonZeroU32::new(4097).unwrap())),
            "window"
        );
        assert_eq!(
            setting(
                ThrottleBuilder::new()
                    .window(NonZeroU32::new(5).unwrap())
                    .minimum_calls(NonZeroU32::new(6).unwrap())
            ),
            "minimum_calls"
        );
        assert_eq!(
            setting(ThrottleBuilder::new().probe_interval(Duration::ZERO)),
            "probe_interval"
        );
        assert_eq!(
            setting(ThrottleBuilder::new().slow_calls(Duration::from_secs(3601))),
            "slow_calls"
        );
        assert!(
            ThrottleBuilder::new()
                .window(NonZeroU32::new(4096).unwrap())
                .minimum_calls(NonZeroU32::new(4096).unwrap())
                .multiplier(Factor::new_const(1.0))
                .probe_interval(Duration::from_millis(1))
                .build()
                .is_ok()
        );
    }
}
