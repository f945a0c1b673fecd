//! The axum server preset: [`HttpServerLayer`] and the stack it builds ([`HttpServer`]).

use std::fmt;
use std::time::Duration;

use tower_layer::Layer;

use crate::http::DeadlineHeader;
use crate::idempotency::{Idempotency, IdempotencyLayer, MemoryStore};
use crate::timeout::{ServerTimeout, ServerTimeoutLayer};

/// How long a handler may take: 10 s, less when the caller's deadline says so.
pub const DEFAULT_SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// The stack [`HttpServerLayer`] builds around a router or handler `S`, outermost first:
///
/// ```text
/// ServerTimeout (accepts grpc-timeout, publishes the deadline) ⊃ Idempotency ⊃ S
/// ```
///
/// Both answer their own rejections with `application/problem+json` responses, so an axum
/// router keeps its `Infallible` error type.
pub type HttpServer<S> = ServerTimeout<Idempotency<S, MemoryStore>>;

/// The server stages in one layer, for `Router::layer`: see the [module docs](crate::preset).
///
/// In an axum router the last layer added is the outermost. Add authentication *after* this
/// layer, so it runs first and the idempotency layer finds the caller's identity.
///
/// # Clone
///
/// The idempotency records live in the layer value: clones and every service built share them.
#[derive(Clone)]
#[must_use]
pub struct HttpServerLayer {
    timeout: ServerTimeoutLayer,
    idempotency: IdempotencyLayer,
}

impl HttpServerLayer {
    /// Handlers get at most 10 s, less if the caller's `grpc-timeout` says so, and their
    /// deadline is published for the calls they make; POST and PATCH requests carrying an
    /// `Idempotency-Key` run once, with the in-memory store.
    pub fn new() -> Self {
        Self {
            timeout: ServerTimeoutLayer::new(DEFAULT_SERVER_TIMEOUT).accept(DeadlineHeader::grpc()),
            idempotency: IdempotencyLayer::new(),
        }
    }

    /// The server timeout stage.
    pub fn timeout(mut self, timeout: ServerTimeoutLayer) -> Self {
        self.timeout = timeout;
        self
    }

    /// Removes the server timeout: handlers may take as long as they like (a caller's deadline
    /// header is then not enforced either).
    pub fn without_timeout(mut self) -> Self {
        self.timeout = ServerTimeoutLayer::new(Duration::MAX).publish_deadline(false);
        self
    }

    /// The idempotency stage (its store, identity, limits).
    pub fn idempotency(mut self, idempotency: IdempotencyLayer) -> Self {
        self.idempotency = idempotency;
        self
    }

    /// Names both stages for their metrics (feature `metrics`; see `palisade::metrics`): the
    /// server timeout and the idempotency layer get `name`. Set it after
    /// [`timeout`](Self::timeout) and [`idempotency`](Self::idempotency): it renames what
    /// they were given. Defaults to none (`unnamed`).
    pub fn name(mut self, name: impl Into<std::sync::Arc<str>>) -> Self {
        let name = name.into();
        self.timeout = self.timeout.name(std::sync::Arc::clone(&name));
        self.idempotency = self.idempotency.renamed(name);
        self
    }

    /// Removes the idempotency stage: no request is deduplicated.
    pub fn without_idempotency(mut self) -> Self {
        self.idempotency = IdempotencyLayer::covering_nothing();
        self
    }
}

impl Default for HttpServerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for HttpServerLayer {
    type Service = HttpServer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.timeout.layer(self.idempotency.layer(inner))
    }
}

impl fmt::Debug for HttpServerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServerLayer")
            .field("timeout", &self.timeout)
            .field("idempotency", &self.idempotency)
            .finish()
    }
}
