//! What can go wrong with Redis: [`RedisStoreError`] for an operation, [`RedisSetupError`] for
//! building a connection.

use std::time::Duration;

use super::record::RecordError;
use crate::error::ConfigError;

/// Why a Redis store operation failed. The idempotency layer sees it as the source of a
/// [`StoreError`](crate::idempotency::StoreError) and answers with its failure policy (503 by
/// default).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// No answer within the connection's [timeout](super::RedisConnectionBuilder::timeout):
    /// Redis is slow, or down and not reconnected yet. Whether the operation ran is unknown.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed, was refused, or was lost before the answer. Whether the
    /// operation ran is unknown if the connection was lost after sending.
    #[error("the Redis connection failed")]
    Connection(#[source] redis::RedisError),
    /// Redis answered with an error (out of memory, a read-only replica, a script error).
    #[error("Redis answered with an error")]
    Server(#[source] redis::RedisError),
    /// Redis answered with something the store's scripts never return.
    #[error("unexpected answer from Redis: {0}")]
    Response(String),
    /// A stored record that does not parse.
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl RedisStoreError {
    pub(crate) fn from_redis(error: redis::RedisError, timeout: Duration) -> Self {
        if error.is_timeout() {
            // redis-rs's own response timeout, set to ours.
            Self::Timeout(timeout)
        } else if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
        {
            Self::Connection(error)
        } else {
            Self::Server(error)
        }
    }

    /// Whether Redis refused a write for lack of memory (`OOM`, at `maxmemory` with the
    /// `noeviction` policy).
    #[must_use]
    pub fn is_out_of_memory(&self) -> bool {
        match self {
            Self::Server(error) => {
                error.code() == Some("OOM") || error.to_string().contains("OOM ")
            }
            _ => false,
        }
    }
}

/// Why a [`RedisConnection`](super::RedisConnection) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisSetupError {
    /// A setting out of its allowed range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An address redis-rs cannot use (a malformed URL, an unsupported scheme).
    #[error("invalid Redis address")]
    Address(#[source] redis::RedisError),
    /// Built outside a tokio runtime: the connection needs one for its task.
    #[error("a Redis connection must be built inside a tokio runtime")]
    NoRuntime,
}
