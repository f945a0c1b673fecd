//! [`FallbackLayer`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tower_layer::Layer;

use super::failure::SyncAnswer;
use super::service::Fallback;
use crate::classify::StatusClassifier;

/// Applies a [`Fallback`]: see the [module docs](crate::fallback).
///
/// # Clone
///
/// Clones of the layer, every service it builds and every later [`Layer::layer`] call share
/// the answer function and the count of answers.
#[must_use]
pub struct FallbackLayer<F> {
    shared: Arc<Shared<F>>,
}

/// What every service of one layer shares: one reference count per call.
pub(crate) struct Shared<F> {
    pub(crate) answer: F,
    /// Answer what this classifier calls a failure too, not only palisade's rejections.
    pub(crate) failures: Option<StatusClassifier>,
    pub(crate) keep_request: bool,
    /// Calls answered so far.
    pub(crate) answered: AtomicU64,
}

impl<F: Clone> Clone for Shared<F> {
    fn clone(&self) -> Self {
        Self {
            answer: self.answer.clone(),
            failures: self.failures.clone(),
            keep_request: self.keep_request,
            // Relaxed: a statistic, copied into a layer that is being configured.
            answered: AtomicU64::new(self.answered.load(Ordering::Relaxed)),
        }
    }
}

impl<F> FallbackLayer<F> {
    /// Answers palisade's rejections (an open circuit, a throttle, a timeout, an exhausted
    /// budget) with `answer`: an async function of the [`Failure`](super::Failure) that returns
    /// the response to give instead, or an error.
    pub fn new(answer: F) -> Self {
        Self {
            shared: Arc::new(Shared {
                answer,
                failures: None,
                keep_request: false,
                answered: AtomicU64::new(0),
            }),
        }
    }

    /// Calls answered by this layer's fallback so far.
    #[must_use]
    pub fn answered(&self) -> u64 {
        // Relaxed: a statistic.
        self.shared.answered.load(Ordering::Relaxed)
    }
}

impl<F: Clone> FallbackLayer<F> {
    /// Also answers every error, and every response whose status `classifier` calls a
    /// [`Failure`](crate::classify::Outcome::Failure) (with [`StatusClassifier::new`], 5xx and
    /// 429). Defaults to palisade's rejections only.
    ///
    /// Configure a layer before cloning it: a clone made earlier keeps its own settings.
    pub fn on_failures(mut self, classifier: StatusClassifier) -> Self {
        Arc::make_mut(&mut self.shared).failures = Some(classifier);
        self
    }

    /// Keeps each request's method, URI, version and headers for the answer function
    /// ([`Failure::request`](super::Failure::request)). Defaults to off: keeping them clones
    /// them for every call, which allocates (the headers, and once per URI parsed from text).
    pub fn keep_request(mut self, keep: bool) -> Self {
        Arc::make_mut(&mut self.shared).keep_request = keep;
        self
    }
}

impl<F> FallbackLayer<SyncAnswer<F>> {
    /// As [`new`](FallbackLayer::new), with a plain function: `answer` returns the response
    /// itself.
    pub fn sync(answer: F) -> Self {
        Self::new(SyncAnswer(answer))
    }
}

impl<F> Clone for FallbackLayer<F> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, F> Layer<S> for FallbackLayer<F> {
    type Service = Fallback<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback::new(inner, Arc::clone(&self.shared))
    }
}

impl<F> fmt::Debug for FallbackLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("on_failures", &self.shared.failures)
            .field("keep_request", &self.shared.keep_request)
            .field("answered", &self.answered())
            .finish_non_exhaustive()
    }
}
