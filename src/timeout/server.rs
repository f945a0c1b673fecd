//! [`ServerTimeoutLayer`]: the timeout for HTTP handlers, with deadlines accepted from callers.

use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::config::Config;
use super::future::{Expiry, ServerResponseFuture};
use super::{TimedOut, TimeoutKind};
use crate::clock::Instant;
use crate::deadline::Deadline;
use crate::hook::Hook;
use crate::http::{DeadlineHeader, ResponseBody};
use crate::instruments::{Calls, LayerKind};
use std::sync::Arc;

/// The status a timed-out handler is answered with unless configured otherwise:
/// `503 Service Unavailable`, since the server (not the client) was too slow; `408 Request
/// Timeout` strictly means the client was slow to send its request.
pub const DEFAULT_SERVER_TIMEOUT_STATUS: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

/// What the server-side timeout does with a malformed deadline header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnInvalidHeader {
    /// Answer `400 Bad Request` with a problem+json body naming the header and the reason; the
    /// handler does not run. The default: a caller that sends a broken deadline has a bug worth
    /// surfacing.
    #[default]
    Reject,
    /// Ignore the header (logged at `debug`) and apply the server's own limit.
    Ignore,
}

/// A timeout for HTTP handlers that answers with a response instead of an error, so an axum
/// `Router` keeps its `Infallible` error type.
///
/// For each request it:
///
/// 1. computes the handler's deadline: `limit` from now, tightened by a
///    [`Deadline`] already in the request and by the caller's remaining time read from each
///    [`accept`](Self::accept)ed header. The caller can only shorten the limit, never extend
///    it, so `limit` is also the cap on what a caller may ask for;
/// 2. answers at once, without running the handler, when the caller's time is already up
///    (`grpc-timeout: 0S`) or a deadline header is malformed
///    ([`OnInvalidHeader::Reject`], `400`);
/// 3. publishes the deadline into the request's extensions (unless
///    [`publish_deadline(false)`](Self::publish_deadline)), so the handler's own outgoing calls
///    inherit the caller's remaining time;
/// 4. answers with [`status`](Self::status) (503 by default, or 408) and a problem+json body
///    if the handler has not answered by then. The handler's future is dropped.
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use http::StatusCode;
/// use palisade::http::DeadlineHeader;
/// use palisade::timeout::ServerTimeoutLayer;
///
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(
///         ServerTimeoutLayer::new(Duration::from_secs(5))
///             .accept(DeadlineHeader::grpc())
///             .status(StatusCode::REQUEST_TIMEOUT),
///     );
/// # let _ = app;
/// ```
///
/// Its answers are HTTP answers: gRPC clients read a 503 as `UNAVAILABLE`, not
/// `DEADLINE_EXCEEDED`, so put it in front of HTTP handlers, not tonic services (tonic enforces
/// `grpc-timeout` itself and answers with gRPC statuses).
///
/// # Clone
///
/// The configuration is shared behind an `Arc`: cloning the layer or the service, and every
/// `Layer::layer` call, costs a reference count and no allocation.
///
/// # Panics
///
/// Like any tokio timer, the response future panics when the handler is pending and the runtime
/// was built without its time driver (axum's `serve` runs on one that has it).
#[derive(Clone, Debug)]
#[must_use]
pub struct ServerTimeoutLayer {
    config: Arc<Config>,
}

impl ServerTimeoutLayer {
    /// Gives each handler at most `limit`.
    pub fn new(limit: Duration) -> Self {
        Self {
            config: Arc::new(Config {
                limit,
                status: DEFAULT_SERVER_TIMEOUT_STATUS,
                accept: Vec::new(),
                on_invalid: OnInvalidHeader::default(),
                publish_deadline: true,
                on_timeout: Hook::default(),
                name: None,
            }),
        }
    }

    /// Names this timeout: the `name` label of its metrics (feature `metrics`; see
    /// [`crate::metrics`]). Defaults to none (the label reads `unnamed`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        Arc::make_mut(&mut self.config).name = Some(name.into());
        self
    }

    /// Calls `hook` with every request whose handler runs out of time (or whose caller's
    /// deadline had passed before it ran), on that request's task, as the timer fires. Set, it
    /// costs each request a reference count; see [`crate::timeout#event-hooks`]. Set twice,
    /// both run.
    pub fn on_timeout(mut self, hook: impl Fn(&TimedOut) + Send + Sync + 'static) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.on_timeout = std::mem::take(&mut config.on_timeout).then(hook);
        self
    }

    /// The status of the response to a timed-out handler. Defaults to
    /// [`DEFAULT_SERVER_TIMEOUT_STATUS`] (503); `408 Request Timeout` is the common alternative.
    pub fn status(mut self, status: StatusCode) -> Self {
        Arc::make_mut(&mut self.config).status = status;
        self
    }

    /// Reads the caller's remaining time from `header` (call again to accept several; the
    /// soonest wins). Defaults to accepting none.
    pub fn accept(mut self, header: DeadlineHeader) -> Self {
        Arc::make_mut(&mut self.config).accept.push(header);
        self
    }

    /// What to do with a malformed deadline header. Defaults to [`OnInvalidHeader::Reject`].
    pub fn on_invalid_header(mut self, on_invalid: OnInvalidHeader) -> Self {
        Arc::make_mut(&mut self.config).on_invalid = on_invalid;
        self
    }

    /// Whether the handler's deadline is published into the request's extensions as a
    /// [`Deadline`], for the handler's outgoing calls to inherit. Defaults to `true` (it costs
    /// an extension insert per request: one to three small allocations).
    pub fn publish_deadline(mut self, publish: bool) -> Self {
        Arc::make_mut(&mut self.config).publish_deadline = publish;
        self
    }
}

impl<S> Layer<S> for ServerTimeoutLayer {
    type Service = ServerTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTimeout {
            inner,
            config: Arc::clone(&self.config),
            calls: super::service::timeout_calls(
                LayerKind::ServerTimeout,
                self.config.name.as_deref(),
            ),
        }
    }
}

/// The server-side timeout: see [`ServerTimeoutLayer`].
#[derive(Clone, Debug)]
pub struct ServerTimeout<S> {
    inner: S,
    config: Arc<Config>,
    calls: Calls,
}

impl<S> ServerTimeout<S> {
    crate::inner_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerTimeout<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ServerResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let config = &*self.config;
        let now = Instant::now();
        let mut expiry = now.checked_add(config.limit);
        let mut kind = TimeoutKind::Limit;
        let mut tighten = |at: Instant| {
            if expiry.is_none_or(|current| at < current) {
                expiry = Some(at);
                kind = TimeoutKind::Deadline;
            }
        };

        if let Some(deadline) = request.extensions().get::<Deadline>() {
            tighten(deadline.instant());
        }
        for header in &config.accept {
            match header.read(request.headers()) {
                Ok(None) => {}
                Ok(Some(remaining)) => tighten(Deadline::after_from(now, remaining).instant()),
                Err(invalid) => match config.on_invalid {
                    OnInvalidHeader::Reject => {
                        tracing::trace!(%invalid, "rejected a malformed deadline header");
                        self.calls.rejected("invalid_deadline");
                        return ServerResponseFuture::answer(invalid.problem());
                    }
                    OnInvalidHeader::Ignore => {
                        tracing::debug!(%invalid, "ignored a malformed deadline header");
                    }
                },
            }
        }

        if kind == TimeoutKind::Deadline && expiry.is_some_and(|at| at <= now) {
            let timed_out = TimedOut::new(Duration::ZERO, TimeoutKind::Deadline);
            tracing::trace!("caller's deadline had already passed; handler not called");
            self.calls.expired(TimeoutKind::Deadline.label());
            config.on_timeout.emit(&timed_out);
            return ServerResponseFuture::answer(timed_out.problem().with_status(config.status));
        }
        if let Some(at) = expiry {
            // An existing deadline is always tightened in place (it is only ever made sooner);
            // publishing decides whether a request without one gets one.
            let extensions = request.extensions_mut();
            match extensions.get_mut::<Deadline>() {
                Some(existing) => *existing = Deadline::at(at),
                None if config.publish_deadline => {
                    extensions.insert(Deadline::at(at));
                }
                None => {}
            }
        }
        let expiry = match expiry {
            Some(at) => Expiry::At { at, since: now },
            None => Expiry::Never,
        };
        let on_timeout = config.on_timeout.clone();
        let call = self.calls.start();
        ServerResponseFuture::running(
            self.inner.call(request),
            expiry,
            kind,
            config.status,
            on_timeout,
            call,
        )
    }
}
