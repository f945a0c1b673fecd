//! [`RedisCacheStore`]: the SWR cache's remote tier in Redis, shared by every instance of a
//! fleet.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use redis::Value;

use super::connection::{
    Operation, RedisConnection, StoreScript, checked_prefix, millis, unexpected,
};
use super::error::RedisStoreError;
use crate::cache::{LockToken, Lookup, RemoteEntry, RemoteError, RemoteFuture, RemoteStore};
use crate::error::ConfigError;

/// The key prefix by default: `palisade:cache:`.
pub const DEFAULT_CACHE_PREFIX: &str = "palisade:cache:";

static LOOKUP: LazyLock<StoreScript> =
    LazyLock::new(|| StoreScript::new("cache_lookup", include_str!("scripts/cache_lookup.lua")));
static PUT: LazyLock<StoreScript> =
    LazyLock::new(|| StoreScript::new("cache_put", include_str!("scripts/cache_put.lua")));
static LOCK: LazyLock<StoreScript> =
    LazyLock::new(|| StoreScript::new("cache_lock", include_str!("scripts/cache_lock.lua")));
static UNLOCK: LazyLock<StoreScript> =
    LazyLock::new(|| StoreScript::new("cache_unlock", include_str!("scripts/cache_unlock.lua")));
static REMOVE: LazyLock<StoreScript> =
    LazyLock::new(|| StoreScript::new("cache_remove", include_str!("scripts/cache_remove.lua")));

/// The stale-while-revalidate cache's remote tier in Redis: give it to
/// [`CacheLayer::remote`](crate::cache::CacheLayer::remote) or
/// [`HttpCacheBuilder::remote`](crate::cache::HttpCacheBuilder::remote), and the instances
/// of a fleet share their entries, fetch a cold key from the origin once between them, and
/// refresh a stale one once between them.
///
/// Each operation is one Lua script, so one round trip: a lookup (which also takes the key's
/// lock when the key must be fetched), a put (for the entry's whole life: fresh, stale and
/// stale-if-error windows; it also gives the lock up), a lock for a refresh (`SET NX PX`), a
/// removal. Entries keep their windows as instants of the Redis server's clock, so every
/// instance computes the same phase. See the [module manual](super) for the key layout and
/// the failure policy.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use bytes::Bytes;
/// use palisade::cache::{CacheLayer, RemoteCodec};
/// use palisade::redis::{RedisCacheStore, RedisConnection};
///
/// /// Prices by product id, as UTF-8 text.
/// struct Prices;
/// impl RemoteCodec<u64, Arc<str>> for Prices {
///     fn key(&self, id: &u64) -> Vec<u8> {
///         id.to_string().into_bytes()
///     }
///     fn encode(&self, price: &Arc<str>) -> Option<Bytes> {
///         Some(Bytes::copy_from_slice(price.as_bytes()))
///     }
///     fn decode(&self, bytes: &[u8]) -> Option<Arc<str>> {
///         std::str::from_utf8(bytes).ok().map(Arc::from)
///     }
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisConnection::builder("redis://127.0.0.1:6379/").build()?;
/// let store = RedisCacheStore::builder(redis).prefix("prices:").build()?;
/// let cache = CacheLayer::builder(Duration::from_secs(30), |id: &u64| Some(*id))
///     .stale_while_revalidate(Duration::from_secs(60))
///     .build::<u64, Arc<str>>()?
///     .remote(store, Prices)?;
/// # let _ = cache;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisCacheStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: RedisConnection,
    prefix: Vec<u8>,
}

/// Configures a [`RedisCacheStore`] (from [`RedisCacheStore::builder`]).
#[derive(Debug)]
#[must_use]
pub struct RedisCacheStoreBuilder {
    connection: RedisConnection,
    prefix: String,
}

impl RedisCacheStore {
    /// A builder for a store on `connection`.
    pub fn builder(connection: RedisConnection) -> RedisCacheStoreBuilder {
        RedisCacheStoreBuilder {
            connection,
            prefix: DEFAULT_CACHE_PREFIX.to_owned(),
        }
    }

    /// The connection it runs on (for its [metrics](RedisConnection::metrics)).
    #[must_use]
    pub fn connection(&self) -> &RedisConnection {
        &self.inner.connection
    }

    /// The Redis key of the entry under the codec's `key` bytes (for inspection and tests).
    #[must_use]
    pub fn entry_key(&self, key: &[u8]) -> Vec<u8> {
        let mut entry = Vec::with_capacity(self.inner.prefix.len() + key.len() + 2);
        entry.extend_from_slice(&self.inner.prefix);
        entry.push(b'{');
        entry.extend_from_slice(key);
        entry.push(b'}');
        entry
    }

    /// The Redis key of the entry's lock: the entry's key and `:lock`, in the same Cluster
    /// slot.
    #[must_use]
    pub fn lock_key(&self, key: &[u8]) -> Vec<u8> {
        let mut lock = self.entry_key(key);
        lock.extend_from_slice(b":lock");
        lock
    }

    async fn lookup_now(
        self,
        key: Vec<u8>,
        lease: Duration,
        token: LockToken,
    ) -> Result<Lookup, RemoteError> {
        let (entry, lock) = (self.entry_key(&key), self.lock_key(&key));
        let (lease, token) = (millis(lease), token.get().to_string());
        let answer = self
            .inner
            .connection
            .run(
                Operation::CacheLookup,
                &LOOKUP,
                &[&entry, &lock],
                &[lease.as_bytes(), token.as_bytes()],
            )
            .await
            .map_err(RemoteError::new)?;
        looked_up(&answer).map_err(|error| {
            self.inner.connection.unreadable(Operation::CacheLookup);
            RemoteError::new(error)
        })
    }

    async fn put_now(
        self,
        key: Vec<u8>,
        remote: RemoteEntry,
        token: Option<LockToken>,
    ) -> Result<(), RemoteError> {
        let (entry, lock) = (self.entry_key(&key), self.lock_key(&key));
        let (fresh, stale, errors) = (
            millis_or_zero(remote.fresh_for),
            millis_or_zero(remote.stale_for),
            millis_or_zero(remote.errors_for),
        );
        let fetch = remote.fetch.as_micros().to_string();
        let token = token.map_or_else(String::new, |token| token.get().to_string());
        self.inner
            .connection
            .run(
                Operation::CachePut,
                &PUT,
                &[&entry, &lock],
                &[
                    &remote.value,
                    fresh.as_bytes(),
                    stale.as_bytes(),
                    errors.as_bytes(),
                    fetch.as_bytes(),
                    token.as_bytes(),
                ],
            )
            .await
            .map(drop)
            .map_err(RemoteError::new)
    }

    async fn lock_now(
        self,
        key: Vec<u8>,
        lease: Duration,
        token: LockToken,
    ) -> Result<bool, RemoteError> {
        let lock = self.lock_key(&key);
        let (lease, token) = (millis(lease), token.get().to_string());
        match self
            .inner
            .connection
            .run(
                Operation::CacheLock,
                &LOCK,
                &[&lock],
                &[lease.as_bytes(), token.as_bytes()],
            )
            .await
            .map_err(RemoteError::new)?
        {
            Value::Int(locked) => Ok(locked == 1),
            other => {
                self.inner.connection.unreadable(Operation::CacheLock);
                Err(RemoteError::new(unexpected("cache_lock", &other)))
            }
        }
    }

    async fn unlock_now(self, key: Vec<u8>, token: LockToken) -> Result<(), RemoteError> {
        let lock = self.lock_key(&key);
        let token = token.get().to_string();
        self.inner
            .connection
            .run(Operation::CacheLock, &UNLOCK, &[&lock], &[token.as_bytes()])
            .await
            .map(drop)
            .map_err(RemoteError::new)
    }

    async fn remove_now(self, key: Vec<u8>) -> Result<(), RemoteError> {
        let (entry, lock) = (self.entry_key(&key), self.lock_key(&key));
        self.inner
            .connection
            .run(Operation::CacheRemove, &REMOVE, &[&entry, &lock], &[])
            .await
            .map(drop)
            .map_err(RemoteError::new)
    }
}

/// Reads the lookup script's answer: `{entry or nil, locked}`.
fn looked_up(answer: &Value) -> Result<Lookup, RedisStoreError> {
    let Value::Array(items) = answer else {
        return Err(unexpected("cache_lookup", answer));
    };
    let [entry, Value::Int(locked)] = items.as_slice() else {
        return Err(unexpected("cache_lookup", answer));
    };
    let entry = match entry {
        Value::Nil => None,
        Value::Array(fields) => match fields.as_slice() {
            [
                Value::BulkString(value),
                Value::BulkString(fresh),
                Value::BulkString(stale),
                Value::BulkString(errors),
                Value::BulkString(fetch),
            ] => {
                let number = |bytes: &[u8]| -> Result<u64, RedisStoreError> {
                    std::str::from_utf8(bytes)
                        .ok()
                        .and_then(|text| text.parse().ok())
                        .ok_or_else(|| unexpected("cache_lookup", answer))
                };
                Some(RemoteEntry {
                    value: Bytes::copy_from_slice(value),
                    fresh_for: Duration::from_millis(number(fresh)?),
                    stale_for: Duration::from_millis(number(stale)?),
                    errors_for: Duration::from_millis(number(errors)?),
                    fetch: Duration::from_micros(number(fetch)?),
                })
            }
            _ => return Err(unexpected("cache_lookup", answer)),
        },
        _ => return Err(unexpected("cache_lookup", answer)),
    };
    Ok(Lookup {
        entry,
        locked: *locked == 1,
    })
}

/// A window in whole milliseconds (zero stays zero: a window that is over).
fn millis_or_zero(duration: Duration) -> String {
    duration.as_millis().to_string()
}

impl RemoteStore for RedisCacheStore {
    fn lookup(&self, key: &[u8], lease: Duration, token: LockToken) -> RemoteFuture<Lookup> {
        Box::pin(self.clone().lookup_now(key.to_vec(), lease, token))
    }

    fn put(&self, key: &[u8], entry: RemoteEntry, token: Option<LockToken>) -> RemoteFuture<()> {
        Box::pin(self.clone().put_now(key.to_vec(), entry, token))
    }

    fn lock(&self, key: &[u8], lease: Duration, token: LockToken) -> RemoteFuture<bool> {
        Box::pin(self.clone().lock_now(key.to_vec(), lease, token))
    }

    fn unlock(&self, key: &[u8], token: LockToken) -> RemoteFuture<()> {
        Box::pin(self.clone().unlock_now(key.to_vec(), token))
    }

    fn remove(&self, key: &[u8]) -> RemoteFuture<()> {
        Box::pin(self.clone().remove_now(key.to_vec()))
    }
}

impl fmt::Debug for RedisCacheStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCacheStore")
            .field("prefix", &String::from_utf8_lossy(&self.inner.prefix))
            .finish_non_exhaustive()
    }
}

impl RedisCacheStoreBuilder {
    /// Puts every key under `prefix` (default [`DEFAULT_CACHE_PREFIX`]): give each cache its
    /// own. It may not contain `{` or `}`, which would change the keys' Cluster hash tags.
    /// Moving to a new prefix is how to drop every remote entry at once.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The store.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for a prefix with a brace.
    pub fn build(self) -> Result<RedisCacheStore, ConfigError> {
        let prefix = checked_prefix(self.prefix)?;
        Ok(RedisCacheStore {
            inner: Arc::new(Inner {
                connection: self.connection,
                prefix: prefix.into_bytes(),
            }),
        })
    }
}
