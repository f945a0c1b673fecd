//! [`Idempotency`]: the service.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HOST;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::config::Config;
use super::error::IdempotencyRejection;
use super::fingerprint::RecordKey;
use super::future::ResponseFuture;
use super::store::IdempotencyStore;
use crate::error::BoxError;
use crate::http::{IDEMPOTENCY_KEY, KeyError, ReplayBody, parse_idempotency_key};

/// Runs each unsafe request carrying an `Idempotency-Key` at most once: see the
/// [module docs](crate::idempotency).
///
/// Built by [`IdempotencyLayer`](super::IdempotencyLayer). The inner service takes
/// `Request<ReplayBody<B>>` (an axum `Router` or route takes it as it is); the response body is
/// [`ResponseBody`](crate::http::ResponseBody), and the error type is the inner service's, so an
/// axum router keeps `Infallible`.
///
/// The request body is read before the inner service is called: `call` takes the instance that
/// was polled ready into the response future and leaves a clone behind.
pub struct Idempotency<S, St> {
    inner: S,
    settings: Arc<Config>,
    store: St,
}

impl<S, St> Idempotency<S, St> {
    pub(crate) fn new(inner: S, settings: Arc<Config>, store: St) -> Self {
        Self {
            inner,
            settings,
            store,
        }
    }

    /// The store this service keeps records in.
    pub fn store(&self) -> &St {
        &self.store
    }

    crate::inner_accessors!();
}

impl<S: Clone, St: Clone> Clone for Idempotency<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            settings: Arc::clone(&self.settings),
            store: self.store.clone(),
        }
    }
}

impl<S, St, B, ResB> Service<Request<B>> for Idempotency<S, St>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>> + Clone,
    St: IdempotencyStore,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<crate::http::ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, St, B, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let settings = &*self.settings;
        if !settings.covers(request.method()) {
            return self.pass_through(request);
        }
        let (parts, body) = request.into_parts();
        let mut keys = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        let key = match (keys.next(), keys.next()) {
            (None, _) if settings.require_key => {
                let rejection = IdempotencyRejection::MissingKey;
                settings.outcomes.count(rejection.label());
                return ResponseFuture::rejected(rejection);
            }
            (None, _) => return self.pass_through(Request::from_parts(parts, body)),
            (Some(_), Some(_)) => Err(KeyError::Repeated),
            (Some(value), None) => {
                parse_idempotency_key(value, settings.accept_unquoted, settings.max_key_length)
            }
        };
        let record = match key {
            Ok(key) => {
                if !settings.identity_chosen && !settings.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "idempotency layer without an identity: every caller shares one scope \
                         of records and no caller has a quota; set `identity(..)` to the \
                         authenticated caller, or `identity(Anonymous)` to choose this"
                    );
                }
                let identity = settings.identity.identify(&parts);
                let authority = parts
                    .uri
                    .authority()
                    .map(http::uri::Authority::as_str)
                    .or_else(|| parts.headers.get(HOST).and_then(|host| host.to_str().ok()))
                    .unwrap_or("");
                RecordKey::new(
                    identity.as_deref(),
                    &parts.method,
                    authority,
                    parts.uri.path(),
                    &key,
                )
            }
            Err(error) => {
                tracing::debug!(%error, "invalid Idempotency-Key");
                let rejection = IdempotencyRejection::InvalidKey(error);
                settings.outcomes.count(rejection.label());
                return ResponseFuture::rejected(rejection);
            }
        };
        // The body is read before the inner service is called: the instance polled ready goes
        // with the request, and a fresh clone stays behind for the next call.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        ResponseFuture::reading(
            ready,
            Arc::clone(&self.settings),
            self.store.clone(),
            record,
            parts,
            body,
        )
    }
}

impl<S, St> Idempotency<S, St> {
    /// Runs a request the layer does not cover, untouched.
    fn pass_through<B, ResB>(&mut self, request: Request<B>) -> ResponseFuture<S, St, B, ResB>
    where
        S: Service<Request<ReplayBody<B>>, Response = Response<ResB>>,
        St: IdempotencyStore,
        ResB: Body<Data = Bytes> + Unpin + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        let request = request.map(ReplayBody::passed);
        ResponseFuture::passed(self.inner.call(request))
    }
}

impl<S: fmt::Debug, St: fmt::Debug> fmt::Debug for Idempotency<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .field("settings", &*self.settings)
            .field("store", &self.store)
            .finish()
    }
}
