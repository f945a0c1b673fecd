//! The responses the idempotency layer builds: its own problem answers, replays, and what is
//! kept of a response for replay.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response};

use super::config::Config;
use super::error::IdempotencyRejection;
use super::store::StoredResponse;
use crate::http::headers::remove_hop_by_hop;
use crate::http::{IDEMPOTENT_REPLAYED, ResponseBody};

/// The problem response for `rejection`, carrying the rejection in its extensions.
pub(super) fn reject<B>(rejection: IdempotencyRejection) -> Response<ResponseBody<B>> {
    let mut response = rejection.problem().into_http_response();
    response.extensions_mut().insert(rejection);
    response
}

/// The rejection for a state the response future cannot be in: a field its state machine always
/// sets before the state that reads it was empty (`what` names it). Every such arm fails
/// closed through this one helper, as for a store that failed: a 503 problem
/// ([`IdempotencyRejection::StoreUnavailable`]), the handler not run (or, if it ran, its key
/// not released), and no panic on a request path. Logged at error: it is a bug.
pub(super) fn cannot_happen(what: &'static str) -> IdempotencyRejection {
    tracing::error!(
        what,
        "idempotency response future in an impossible state: answering 503"
    );
    IdempotencyRejection::StoreUnavailable
}

/// A stored response, as sent again: the same status, headers, body and trailers, marked
/// `Idempotent-Replayed: true`.
pub(super) fn replay<B>(stored: &StoredResponse) -> Response<ResponseBody<B>> {
    let body = ResponseBody::full_with_trailers(stored.body().clone(), stored.trailers().cloned());
    let mut response = Response::new(body);
    *response.status_mut() = stored.status();
    *response.headers_mut() = stored.headers().clone();
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// What is kept of a response: its status, its headers but the hop-by-hop ones and those the
/// layer strips (`Set-Cookie` by default), its body and trailers.
pub(super) fn stored_response(
    settings: &Config,
    parts: &http::response::Parts,
    data: Bytes,
    trailers: Option<http::HeaderMap>,
) -> Arc<StoredResponse> {
    let mut headers = parts.headers.clone();
    remove_hop_by_hop(&mut headers);
    for name in &settings.strip {
        headers.remove(name);
    }
    Arc::new(StoredResponse::new(parts.status, headers, data, trailers))
}
