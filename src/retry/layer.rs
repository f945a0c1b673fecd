//! [`RetryLayer`].

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::backoff::Backoff;
use super::budget::RetryBudget;
use super::config::Config;
use super::hooks::{BudgetRefused, Hooks, Instruments, RetryEvent};
use super::policy::RetryFailures;
use super::service::Retry;
use crate::random::Random;

/// Attempts per call, the first included: 3 (the AWS SDKs' standard mode; Google SRE's "at
/// most 3 attempts" per request).
pub const DEFAULT_MAX_ATTEMPTS: NonZeroU32 = NonZeroU32::new(3).unwrap();
/// The longest server pushback (`Retry-After`, an open circuit's time left) worth waiting for:
/// 20 s, the backoff's own cap. Longer, and the result is returned instead.
pub const DEFAULT_MAX_PUSHBACK: Duration = Duration::from_secs(20);

/// Applies a [`Retry`]: see the [module docs](crate::retry).
///
/// # Clone
///
/// The budget is created once, in the layer value: clones of the layer, every service it
/// builds, and every `Layer::layer` call share it.
#[derive(Clone, Debug)]
#[must_use]
pub struct RetryLayer<P = RetryFailures> {
    policy: P,
    config: Config,
    budget: RetryBudget,
    random: Option<Arc<Random>>,
    hooks: Option<Arc<Hooks>>,
    name: Option<Arc<str>>,
}

impl RetryLayer {
    /// Retries failures ([`RetryFailures`] with the default classifier: `Err` is a failure)
    /// with every default: 3 attempts, full-jitter backoff from 50 ms capped at 20 s, a token
    /// bucket budget, pushback honoured up to 20 s.
    pub fn new() -> Self {
        Self {
            policy: RetryFailures::default(),
            config: Config {
                max_attempts: DEFAULT_MAX_ATTEMPTS.get(),
                backoff: Backoff::default(),
                max_elapsed: None,
                max_pushback: DEFAULT_MAX_PUSHBACK,
                fail_when_exhausted: false,
                reopening_wait: None,
            },
            budget: RetryBudget::default(),
            random: None,
            hooks: None,
            name: None,
        }
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<P> RetryLayer<P> {
    /// Decides what is retried with `policy`. Defaults to [`RetryFailures`].
    pub fn policy<P2>(self, policy: P2) -> RetryLayer<P2> {
        RetryLayer {
            policy,
            config: self.config,
            budget: self.budget,
            random: self.random,
            hooks: self.hooks,
            name: self.name,
        }
    }

    /// Attempts per call, counting the first. Defaults to [`DEFAULT_MAX_ATTEMPTS`] (3); 1
    /// turns retrying off.
    pub fn max_attempts(mut self, attempts: NonZeroU32) -> Self {
        self.config.max_attempts = attempts.get();
        self
    }

    /// The waits between attempts. Defaults to [`Backoff::default`]: full jitter from 50 ms,
    /// capped at 20 s.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// A limit on a call's total time: no wait or attempt starts past it. Defaults to none
    /// (reading the clock at each call is then avoided); a request's
    /// [`Deadline`](crate::deadline::Deadline) is honoured either way.
    /// Zero allows the first attempt only.
    pub fn max_elapsed(mut self, limit: Duration) -> Self {
        self.config.max_elapsed = Some(limit);
        self
    }

    /// The longest pushback worth waiting for. Defaults to [`DEFAULT_MAX_PUSHBACK`] (20 s); a
    /// longer `Retry-After` returns the result rather than waiting. Zero never waits for one.
    pub fn max_pushback(mut self, limit: Duration) -> Self {
        self.config.max_pushback = limit;
        self
    }

    /// The retry budget, shared by everything this layer builds. Defaults to
    /// [`RetryBudget::default`] (a token bucket); [`RetryBudget::unlimited`] turns it off.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// When the budget refuses a retry of a failed call, answer
    /// [`BudgetExhausted`](super::BudgetExhausted) (with the error as its source) instead of
    /// the error itself. A failure *response* is still returned as it is. Defaults to `false`.
    pub fn fail_when_budget_exhausted(mut self, fail: bool) -> Self {
        self.config.fail_when_exhausted = fail;
        self
    }

    /// Waits out a rejection by a layer that protects the dependency (an open circuit, a
    /// throttle) once per call, when the rejection says it reopens at most `max` from now and
    /// the request's deadline leaves time for the wait and an attempt. The wait is the time
    /// left plus a jitter draw of up to the backoff's base, so callers turned away together do
    /// not come back in the same instant. It takes nothing from the budget and is not an
    /// attempt; a second rejection in the same call is returned.
    ///
    /// Zero waits only when the rejection says it has already reopened.
    ///
    /// Defaults to off: a rejection is returned at once. Measured end to end (see
    /// `examples/chaos.rs`), waiting made every caller rejected in one open period wake together
    /// at reopening, where one of them became the probe and the rest were rejected again; only
    /// a client whose callers would rather wait a little than fail (a batch job, a CLI) gains.
    pub fn wait_for_reopening(mut self, max: Duration) -> Self {
        self.config.reopening_wait = Some(max);
        self
    }

    /// Seeds the jitter's random numbers, for reproducible waits in tests. Defaults to a
    /// per-thread random source.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.random = Some(Arc::new(Random::new(Some(seed))));
        self
    }

    /// Calls `hook` before every wait for another attempt (with the attempt's number, the
    /// wait and why), on the task of the call that retries; the attempt may still not be made
    /// (the service fails to get ready, or time runs out during the wait). Unset, it costs a
    /// call an empty pointer; set, a reference count; see [`crate::retry#event-hooks`]. Set
    /// twice, both run.
    pub fn on_retry(self, hook: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        self.with_hooks(|hooks| hooks.on_retry = hooks.on_retry.clone().then(hook))
    }

    /// Calls `hook` whenever the budget refuses a retry (the failed result is returned
    /// instead), on the task of that call. Set twice, both run.
    pub fn on_budget_exhausted(
        self,
        hook: impl Fn(&BudgetRefused) + Send + Sync + 'static,
    ) -> Self {
        self.with_hooks(|hooks| {
            hooks.on_budget_exhausted = hooks.on_budget_exhausted.clone().then(hook);
        })
    }

    /// Names this layer: the `name` label of its metrics (feature `metrics`; see
    /// [`crate::metrics`]). Defaults to none (the label reads `unnamed`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The hooks and metrics the services built now get: with the `metrics` feature, always
    /// some (the instruments are resolved here, once per built service).
    fn service_hooks(&self) -> Option<Arc<Hooks>> {
        if cfg!(feature = "metrics") {
            let mut hooks = self.hooks.as_deref().cloned().unwrap_or_default();
            hooks.instruments = Some(Instruments::new(self.name.as_deref()));
            Some(Arc::new(hooks))
        } else {
            self.hooks.clone()
        }
    }

    fn with_hooks(mut self, change: impl FnOnce(&mut Hooks)) -> Self {
        let mut hooks = self.hooks.as_deref().cloned().unwrap_or_default();
        change(&mut hooks);
        self.hooks = Some(Arc::new(hooks));
        self
    }

    /// The budget this layer's services share.
    #[must_use]
    pub fn budget_handle(&self) -> &RetryBudget {
        &self.budget
    }
}

impl<S, P: Clone> Layer<S> for RetryLayer<P> {
    type Service = Retry<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(
            inner,
            self.policy.clone(),
            self.config,
            self.budget.clone(),
            self.random.clone(),
            self.service_hooks(),
        )
    }
}
