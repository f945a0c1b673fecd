//! [`RedisIdempotencyStore`]: idempotency records in Redis, shared by every instance of a
//! fleet.

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Value;

use super::connection::{
    Operation, RedisConnection, StoreScript, checked_prefix, millis, unexpected,
};
use super::error::RedisStoreError;
use super::record;
use crate::error::ConfigError;
use crate::idempotency::{
    Claim, ClaimOutcome, Completed, Completion, DEFAULT_MAX_PER_OWNER, FencingToken,
    IdempotencyStore, RecordKey, StoreError,
};

/// The key prefix by default: `palisade:idempotency:`.
pub const DEFAULT_PREFIX: &str = "palisade:idempotency:";
/// The largest record sent to Redis by default: 2 MiB, room for a response at the layer's
/// default [response limit](crate::idempotency::DEFAULT_RESPONSE_LIMIT) (1 MiB) and its
/// headers.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 2 * 1024 * 1024;
/// The smallest record bound allowed: a record of a result not kept takes 4 bytes.
const MIN_RECORD_BYTES: usize = 64;

static CLAIM: LazyLock<StoreScript> =
    LazyLock::new(|| StoreScript::new("claim", include_str!("scripts/claim.lua")));
static COMPLETE: LazyLock<StoreScript> =
    LazyLock::new(|| StoreScript::new("complete", include_str!("scripts/complete.lua")));
static RELEASE: LazyLock<StoreScript> =
    LazyLock::new(|| StoreScript::new("release", include_str!("scripts/release.lua")));

/// Idempotency records in Redis: every instance of a fleet sees every key, so a client's retry
/// that lands on another instance is replayed there, not run again.
///
/// Each operation is one Lua script, so one round trip: see the [module manual](super) for
/// the key layout, the scripts' contracts, the record format and the failure policies.
///
/// ```no_run
/// use palisade::idempotency::IdempotencyLayer;
/// use palisade::redis::{RedisConnection, RedisIdempotencyStore};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisConnection::builder("redis://127.0.0.1:6379/").build()?;
/// let store = RedisIdempotencyStore::builder(redis).prefix("orders:").build()?;
/// let layer = IdempotencyLayer::builder().store(store).build()?;
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: RedisConnection,
    prefix: String,
    max_per_owner: usize,
    max_record_bytes: usize,
}

/// Configures a [`RedisIdempotencyStore`] (from [`RedisIdempotencyStore::builder`]).
#[derive(Debug)]
#[must_use]
pub struct RedisIdempotencyStoreBuilder {
    connection: RedisConnection,
    prefix: String,
    max_per_owner: NonZeroUsize,
    max_record_bytes: usize,
}

impl RedisIdempotencyStore {
    /// A builder for a store on `connection`.
    pub fn builder(connection: RedisConnection) -> RedisIdempotencyStoreBuilder {
        RedisIdempotencyStoreBuilder {
            connection,
            prefix: DEFAULT_PREFIX.to_owned(),
            max_per_owner: DEFAULT_MAX_PER_OWNER,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    /// The connection it runs on (for its [metrics](RedisConnection::metrics)).
    #[must_use]
    pub fn connection(&self) -> &RedisConnection {
        &self.inner.connection
    }

    /// The Redis key of `key`'s record, as the scripts see it (for inspection and tests).
    #[must_use]
    pub fn record_key(&self, key: RecordKey) -> String {
        self.keys(key).record
    }

    /// The Redis key of the quota set that counts `key`'s owner's records, if it has an owner.
    #[must_use]
    pub fn quota_key(&self, key: RecordKey) -> Option<String> {
        key.owner().map(|_| self.keys(key).quota)
    }

    fn keys(&self, key: RecordKey) -> Keys {
        let prefix = &self.inner.prefix;
        let record = hex(key.as_bytes());
        match key.owner() {
            // One owner's records and its quota share a hash tag, so one Cluster slot: the
            // scripts touch both in one step.
            Some(owner) => {
                let tag = hex(owner.as_bytes());
                Keys {
                    record: format!("{prefix}{{{tag}}}:{record}"),
                    quota: format!("{prefix}{{{tag}}}:quota"),
                    member: record,
                    owned: true,
                }
            }
            None => {
                let own = format!("{prefix}{{{record}}}");
                Keys {
                    quota: own.clone(),
                    record: own,
                    member: record,
                    owned: false,
                }
            }
        }
    }

    async fn claim_now(self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        let keys = self.keys(claim.key());
        let lease = millis(claim.lease());
        let max_owned = if keys.owned {
            self.inner.max_per_owner.to_string()
        } else {
            "0".to_owned()
        };
        let answer = self
            .inner
            .connection
            .run(
                Operation::Claim,
                &CLAIM,
                &[keys.record.as_bytes(), keys.quota.as_bytes()],
                &[
                    claim.fingerprint().as_bytes(),
                    lease.as_bytes(),
                    max_owned.as_bytes(),
                    keys.member.as_bytes(),
                ],
            )
            .await;
        match answer {
            Ok(answer) => claimed(&answer).map_err(|error| {
                self.inner.connection.unreadable(Operation::Claim);
                StoreError::new(error)
            }),
            Err(error) if error.is_out_of_memory() => {
                tracing::warn!(
                    target: "palisade::redis",
                    "Redis is out of memory: refusing a new idempotency key"
                );
                Ok(ClaimOutcome::Full)
            }
            Err(error) => Err(StoreError::new(error)),
        }
    }

    async fn complete_now(
        self,
        key: RecordKey,
        token: FencingToken,
        completed: Completed,
        retain_for: Duration,
    ) -> Result<Completion, StoreError> {
        // Over the bound, the record never goes to Redis: the layer records a result not kept.
        let Some(record) =
            record::encode(&completed).filter(|record| record.len() <= self.inner.max_record_bytes)
        else {
            return Ok(Completion::Full);
        };
        let not_kept = matches!(completed, Completed::NotKept { .. });
        let keys = self.keys(key);
        let token = token.get().to_string();
        let retain = millis(retain_for);
        let answer = self
            .inner
            .connection
            .run(
                Operation::Complete,
                &COMPLETE,
                &[keys.record.as_bytes(), keys.quota.as_bytes()],
                &[
                    token.as_bytes(),
                    &record,
                    retain.as_bytes(),
                    keys.member.as_bytes(),
                    if keys.owned { b"1" } else { b"0" },
                    if not_kept { b"1" } else { b"0" },
                ],
            )
            .await;
        match answer {
            Ok(Value::Int(1)) => Ok(Completion::Stored),
            Ok(Value::Int(0)) => Ok(Completion::Superseded),
            Ok(other) => {
                self.inner.connection.unreadable(Operation::Complete);
                Err(StoreError::new(unexpected("complete", &other)))
            }
            Err(error) if error.is_out_of_memory() => Ok(Completion::Full),
            Err(error) => Err(StoreError::new(error)),
        }
    }

    async fn release_now(self, key: RecordKey, token: FencingToken) -> Result<(), StoreError> {
        let keys = self.keys(key);
        let token = token.get().to_string();
        let answer = self
            .inner
            .connection
            .run(
                Operation::Release,
                &RELEASE,
                &[keys.record.as_bytes(), keys.quota.as_bytes()],
                &[
                    token.as_bytes(),
                    keys.member.as_bytes(),
                    if keys.owned { b"1" } else { b"0" },
                ],
            )
            .await;
        match answer {
            Ok(Value::Int(_)) => Ok(()),
            Ok(other) => {
                self.inner.connection.unreadable(Operation::Release);
                Err(StoreError::new(unexpected("release", &other)))
            }
            Err(error) => Err(StoreError::new(error)),
        }
    }
}

struct Keys {
    record: String,
    quota: String,
    member: String,
    owned: bool,
}

/// Reads the claim script's answer.
fn claimed(answer: &Value) -> Result<ClaimOutcome, RedisStoreError> {
    let Value::Array(items) = answer else {
        return Err(unexpected("claim", answer));
    };
    let outcome = match items.as_slice() {
        [Value::BulkString(tag), Value::BulkString(token)] if tag == b"claimed" => {
            let token = std::str::from_utf8(token)
                .ok()
                .and_then(|token| token.parse().ok())
                .ok_or_else(|| unexpected("claim", answer))?;
            ClaimOutcome::Claimed(FencingToken::new(token))
        }
        [Value::BulkString(tag), Value::BulkString(response)] if tag == b"done" => {
            ClaimOutcome::Completed(record::decode(response)?)
        }
        [Value::BulkString(tag), Value::BulkString(left)] if tag == b"busy" => {
            let left = std::str::from_utf8(left)
                .ok()
                .and_then(|left| left.parse().ok())
                .ok_or_else(|| unexpected("claim", answer))?;
            ClaimOutcome::InFlight {
                lease_left: Duration::from_millis(left),
            }
        }
        [Value::BulkString(tag)] if tag == b"mismatch" => ClaimOutcome::Mismatch,
        [Value::BulkString(tag)] if tag == b"quota" => ClaimOutcome::QuotaExceeded,
        _ => return Err(unexpected("claim", answer)),
    };
    Ok(outcome)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

impl IdempotencyStore for RedisIdempotencyStore {
    type ClaimFuture = StoreFuture<ClaimOutcome>;
    type CompleteFuture = StoreFuture<Completion>;
    type ReleaseFuture = StoreFuture<()>;

    fn claim(&self, claim: Claim) -> Self::ClaimFuture {
        Box::pin(self.clone().claim_now(claim))
    }

    fn complete(
        &self,
        key: RecordKey,
        token: FencingToken,
        completed: Completed,
        retain_for: Duration,
    ) -> Self::CompleteFuture {
        Box::pin(self.clone().complete_now(key, token, completed, retain_for))
    }

    fn release(&self, key: RecordKey, token: FencingToken) -> Self::ReleaseFuture {
        Box::pin(self.clone().release_now(key, token))
    }
}

impl fmt::Debug for RedisIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisIdempotencyStore")
            .field("prefix", &self.inner.prefix)
            .field("max_per_owner", &self.inner.max_per_owner)
            .field("max_record_bytes", &self.inner.max_record_bytes)
            .finish_non_exhaustive()
    }
}

impl RedisIdempotencyStoreBuilder {
    /// Puts every key under `prefix` (default [`DEFAULT_PREFIX`]): give each service its own
    /// when several share one Redis. It may not contain `{` or `}`, which would change the
    /// keys' Cluster hash tags.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Records one identified caller may hold across the fleet. Default:
    /// [`DEFAULT_MAX_PER_OWNER`] (1000).
    pub fn max_per_owner(mut self, max: NonZeroUsize) -> Self {
        self.max_per_owner = max;
        self
    }

    /// The largest record sent to Redis, in bytes of the [record format](super#record-format):
    /// a larger response is not stored, and its key records that the request ran
    /// ([`Completed::NotKept`]). Default: [`DEFAULT_MAX_RECORD_BYTES`] (2 MiB); at least 64.
    pub fn max_record_bytes(mut self, max: usize) -> Self {
        self.max_record_bytes = max;
        self
    }

    /// The store.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for a prefix with a brace, and
    /// [`ConfigError::CountOutOfRange`] for a record bound under 64 bytes.
    pub fn build(self) -> Result<RedisIdempotencyStore, ConfigError> {
        let prefix = checked_prefix(self.prefix)?;
        if self.max_record_bytes < MIN_RECORD_BYTES {
            return Err(ConfigError::CountOutOfRange {
                setting: "max_record_bytes",
                value: self.max_record_bytes as u64,
                min: MIN_RECORD_BYTES as u64,
                max: u64::MAX,
            });
        }
        Ok(RedisIdempotencyStore {
            inner: Arc::new(Inner {
                connection: self.connection,
                prefix,
                max_per_owner: self.max_per_owner.get(),
                max_record_bytes: self.max_record_bytes,
            }),
        })
    }
}
