//! [`Retry`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::budget::RetryBudget;
use super::config::Config;
use super::future::ResponseFuture;
use super::hooks::Hooks;
use super::policy::{Policy, RetryFailures};
use crate::RequestExtensions;
use crate::clock::Instant;
use crate::error::BoxError;
use crate::instruments;
use crate::random::Random;

/// Retries failed calls: see the [module docs](crate::retry).
///
/// Built by [`RetryLayer`](super::RetryLayer). Its error type is [`BoxError`]: the last
/// attempt's error (or [`BudgetExhausted`](super::BudgetExhausted), if configured).
///
/// # Clone
///
/// Clones share the layer's [`RetryBudget`] (and seeded random source); each call clones the
/// inner service once, for the attempts after the first.
pub struct Retry<S, P = RetryFailures> {
    inner: S,
    policy: P,
    config: Config,
    budget: RetryBudget,
    random: Option<Arc<Random>>,
    hooks: Option<Arc<Hooks>>,
}

impl<S, P> Retry<S, P> {
    pub(crate) fn new(
        inner: S,
        policy: P,
        config: Config,
        budget: RetryBudget,
        random: Option<Arc<Random>>,
        hooks: Option<Arc<Hooks>>,
    ) -> Self {
        Self {
            inner,
            policy,
            config,
            budget,
            random,
            hooks,
        }
    }

    /// The budget this service draws retries from.
    #[must_use]
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    crate::inner_accessors!();
}

impl<S: Clone, P: Clone> Clone for Retry<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            config: self.config,
            budget: self.budget.clone(),
            random: self.random.clone(),
            hooks: self.hooks.clone(),
        }
    }
}

impl<S, P, Req> Service<Req> for Retry<S, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: Policy<Req, S::Response> + Clone,
    Req: RequestExtensions,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, P>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    // Always inlined: see DEVELOPERS.md, "Performance notes" (the retry future's copies).
    #[inline(always)]
    fn call(&mut self, request: Req) -> Self::Future {
        // The copy for a retry must be taken before the request is consumed.
        let copy = if self.config.max_attempts > 1 || self.config.reopening_wait.is_some() {
            self.policy.clone_request(&request)
        } else {
            None
        };
        let started = self.config.max_elapsed.map(|_| Instant::now());
        self.budget.on_request();
        // The first attempt goes to the instance that was polled ready; later attempts go to
        // a clone, which polls for readiness again before each one.
        let metrics = match self.hooks.as_deref().and_then(Hooks::instruments) {
            Some(instruments) => instruments.calls.start_resolving(|| {
                instruments.retries.touch();
                instruments.refusals.touch();
                instruments.attempts.touch();
            }),
            None => instruments::Call::detached(),
        };
        let future = self.inner.call(request);
        ResponseFuture::new(
            future,
            self.inner.clone(),
            self.policy.clone(),
            copy,
            self.config,
            self.budget.clone(),
            self.random.clone(),
            self.hooks.clone(),
            started,
            metrics,
        )
    }
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for Retry<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .field("config", &self.config)
            .field("budget", &self.budget)
            .finish()
    }
}
