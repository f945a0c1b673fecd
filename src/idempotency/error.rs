//! [`IdempotencyRejection`]: why the idempotency layer answered a request itself.

use std::time::Duration;

use http::StatusCode;

use crate::http::{KeyError, Problem};

/// Why the idempotency layer answered a request itself instead of running it.
///
/// Each becomes an `application/problem+json` response ([`problem`](Self::problem)), and the
/// rejection itself is put in that response's extensions, so middleware outside can tell them
/// apart without parsing the body. None of them stores anything (a result not kept was
/// recorded when its request ran).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdempotencyRejection {
    /// 400: the layer requires a key and the request has none.
    #[error("this operation requires an Idempotency-Key header")]
    MissingKey,
    /// 400: the `Idempotency-Key` header is malformed.
    #[error("invalid Idempotency-Key: {0}")]
    InvalidKey(KeyError),
    /// 409: a request with this key is still being processed; retry after the hint.
    #[error("a request with this Idempotency-Key is still being processed")]
    KeyInFlight {
        /// When to try again.
        retry_after: Duration,
    },
    /// 422: the key was used before for a different request (method, path, query or body).
    #[error("this Idempotency-Key was already used for a different request")]
    KeyReused,
    /// 413: the request body is over the layer's limit, and oversized bodies are refused.
    #[error("the request body is over the {limit} bytes an idempotent request may carry")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// 400: the request body failed while it was read (the client went away mid-upload).
    #[error("the request body could not be read")]
    BodyUnreadable,
    /// 409: the request with this key ran, but its response was not kept (it was over the
    /// response limit, or the store had no room for it); it will not run again.
    #[error(
        "the request with this Idempotency-Key was processed (status {status}), but its response \
         was not kept; it will not be run again"
    )]
    ResultNotKept {
        /// The status the request was answered with.
        status: StatusCode,
    },
    /// 429: the caller holds as many idempotency records as the store allows one caller.
    #[error("too many idempotency keys in use by this caller")]
    QuotaExceeded,
    /// 503: the store is full of live records and refuses new keys.
    #[error("the idempotency store is full")]
    StoreFull,
    /// 503: the store failed to answer, and the layer fails closed.
    #[error("the idempotency store is unavailable")]
    StoreUnavailable,
}

/// The `outcome` label values of `palisade_idempotency_requests_total`: the handler ran
/// (`claimed`), a stored answer was replayed, the request ran without the guarantee (the store
/// failed open, or the body was over the limit and passed through), or one of the rejections.
pub(crate) const OUTCOME_LABELS: &[&str] = &[
    "claimed",
    "replayed",
    "unprotected",
    "invalid",
    "in_flight",
    "mismatch",
    "result_not_kept",
    "quota_exceeded",
    "store_full",
    "store_unavailable",
];

impl IdempotencyRejection {
    /// The `outcome` label of this rejection in `palisade_idempotency_requests_total`.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const fn label(&self) -> &'static str {
        match self {
            Self::MissingKey
            | Self::InvalidKey(_)
            | Self::BodyTooLarge { .. }
            | Self::BodyUnreadable => "invalid",
            Self::KeyInFlight { .. } => "in_flight",
            Self::KeyReused => "mismatch",
            Self::ResultNotKept { .. } => "result_not_kept",
            Self::QuotaExceeded => "quota_exceeded",
            Self::StoreFull => "store_full",
            Self::StoreUnavailable => "store_unavailable",
        }
    }

    /// The response status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingKey | Self::InvalidKey(_) | Self::BodyUnreadable => {
                StatusCode::BAD_REQUEST
            }
            Self::KeyInFlight { .. } | Self::ResultNotKept { .. } => StatusCode::CONFLICT,
            Self::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::StoreFull | Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The problem description: its `type` is `urn:palisade:idempotency-<what>`, and a 409 or a
    /// full store carries a `Retry-After`.
    #[must_use]
    pub fn problem(&self) -> Problem {
        let (type_uri, title) = match self {
            Self::MissingKey => (
                "urn:palisade:idempotency-key-missing",
                "Idempotency-Key required",
            ),
            Self::InvalidKey(_) => (
                "urn:palisade:idempotency-key-invalid",
                "Invalid Idempotency-Key",
            ),
            // The title the IETF draft gives as its example.
            Self::KeyInFlight { .. } => (
                "urn:palisade:idempotency-key-in-flight",
                "A request is outstanding for this Idempotency-Key",
            ),
            Self::KeyReused => (
                "urn:palisade:idempotency-key-reused",
                "Idempotency-Key reused for a different request",
            ),
            Self::BodyTooLarge { .. } => (
                "urn:palisade:idempotency-body-too-large",
                "Request body too large for an idempotent request",
            ),
            Self::BodyUnreadable => (
                "urn:palisade:idempotency-body-unreadable",
                "Request body could not be read",
            ),
            Self::ResultNotKept { .. } => (
                "urn:palisade:idempotency-result-not-kept",
                "The request was processed; its response was not kept",
            ),
            Self::QuotaExceeded => (
                "urn:palisade:idempotency-quota-exceeded",
                "Too many Idempotency-Keys in use",
            ),
            Self::StoreFull => (
                "urn:palisade:idempotency-store-full",
                "Idempotency store full",
            ),
            Self::StoreUnavailable => (
                "urn:palisade:idempotency-store-unavailable",
                "Idempotency store unavailable",
            ),
        };
        let problem = Problem::new(self.status(), type_uri, title, self.to_string());
        match self {
            Self::KeyInFlight { retry_after } => problem.with_retry_after(*retry_after),
            Self::StoreFull => problem.with_retry_after(Duration::from_secs(1)),
            _ => problem,
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn each_rejection_has_its_status_and_type() {
        let cases = [
            (IdempotencyRejection::MissingKey, 400, "key-missing"),
            (
                IdempotencyRejection::InvalidKey(KeyError::NotQuoted),
                400,
                "key-invalid",
            ),
            (
                IdempotencyRejection::KeyInFlight {
                    retry_after: Duration::from_secs(2),
                },
                409,
                "key-in-flight",
            ),
            (IdempotencyRejection::KeyReused, 422, "key-reused"),
            (
                IdempotencyRejection::BodyTooLarge { limit: 10 },
                413,
                "body-too-large",
            ),
            (IdempotencyRejection::BodyUnreadable, 400, "body-unreadable"),
            (
                IdempotencyRejection::ResultNotKept {
                    status: StatusCode::CREATED,
                },
                409,
                "result-not-kept",
            ),
            (IdempotencyRejection::QuotaExceeded, 429, "quota-exceeded"),
            (IdempotencyRejection::StoreFull, 503, "store-full"),
            (
                IdempotencyRejection::StoreUnavailable,
                503,
                "store-unavailable",
            ),
        ];
        for (rejection, status, kind) in cases {
            let problem = rejection.problem();
            assert_eq!(problem.status().as_u16(), status, "{rejection}");
            assert_eq!(
                problem.type_uri(),
                format!("urn:palisade:idempotency-{kind}")
            );
        }
        let in_flight = IdempotencyRejection::KeyInFlight {
            retry_after: Duration::from_secs(2),
        };
        assert_eq!(
            in_flight.problem().retry_after(),
            Some(Duration::from_secs(2))
        );
        assert!(
            IdempotencyRejection::InvalidKey(KeyError::NotQuoted)
                .to_string()
                .contains("quoted string")
        );
    }
}
