//! Fleet-wide state in Redis (feature `redis`): idempotency records every instance sees, and a
//! remote tier for the stale-while-revalidate cache.
//!
//! A service scaled out behind a load balancer sends a client's retry to any instance. With
//! the in-memory store, that instance has never seen the key and runs the request again. With
//! [`RedisIdempotencyStore`], every instance claims and completes keys in one Redis, so the
//! retry is replayed wherever it lands, and a request runs once in the whole fleet. With
//! [`RedisCacheStore`] behind each instance's cache, a cold key is fetched from the origin once
//! for the fleet and a stale one refreshed once (see [below](#the-cache-store)).
//!
//! Supported deployments: a single Redis (or Valkey) node, or a primary behind a failover
//! proxy. The keys are laid out for Redis Cluster (hash tags), but the connection does not
//! follow Cluster redirects, so Cluster itself is not supported yet. Replication is
//! asynchronous: a failover can lose the last writes, and a retry of a request whose record
//! was lost runs again.
//!
//! ```no_run
//! use axum::{Router, routing::post};
//! use palisade::idempotency::{IdempotencyLayer, IdentityHeader};
//! use palisade::redis::{RedisConnection, RedisIdempotencyStore};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisConnection::builder("redis://10.0.0.5:6379/").build()?;
//! let store = RedisIdempotencyStore::builder(redis.clone()).prefix("orders:").build()?;
//! let app: Router = Router::new()
//!     .route("/orders", post(|| async { "placed" }))
//!     .layer(
//!         IdempotencyLayer::builder()
//!             .store(store)
//!             .identity(IdentityHeader::new(http::HeaderName::from_static("x-tenant")))
//!             .build()?,
//!     );
//! # let _ = app;
//! println!("claims so far: {}", redis.metrics().claim.calls);
//! # Ok(())
//! # }
//! ```
//!
//! The feature needs Rust 1.88 (redis-rs 1.8's floor; the rest of the crate needs 1.85) and
//! Redis 6.2 or later (or Valkey).
//!
//! # One round trip per operation
//!
//! Each store operation is one Lua script, run with `EVALSHA` (a Redis that was restarted or
//! flushed answers `NOSCRIPT`; the script is then loaded and run once more, three round trips
//! that one time):
//!
//! | operation | script | answers |
//! | --- | --- | --- |
//! | claim | creates the record with its lease and a new fencing token if the key is free (absent, or its holder's lease is over: a take-over); checks the owner's quota for a new key | claimed (token), the stored response, in flight (lease left), fingerprint mismatch, quota exceeded |
//! | complete | stores the response and sets the retention as the record's TTL, only if the caller's token still holds the record | stored, superseded |
//! | release | deletes the record, only if the caller's token still holds it (compare and delete) | – |
//!
//! A holder whose lease ended and whose key another instance took over carries a stale token:
//! its completion is refused (superseded) and the stored response is the newer holder's. A
//! plain `SET` of the response, as some libraries do, would let the stalled holder overwrite
//! it.
//!
//! Fencing tokens come from the Redis server's clock, in microseconds, or the record's last
//! token plus one when that is greater. While a record exists its tokens only grow. After it
//! was released (deleted) or expired, the next claim's token is the clock again: it repeats an
//! old token only if the server's clock was stepped back by more than the time since that token
//! was issued and lands on the same microsecond (or a failover moved to a server whose clock
//! lags by as much), since tokens are compared for equality.
//!
//! # Key layout
//!
//! Every key starts with the [prefix](RedisIdempotencyStoreBuilder::prefix) (default
//! `palisade:idempotency:`), then a Redis Cluster hash tag in braces, so that all the keys one
//! script touches are in one slot:
//!
//! | caller | record | quota |
//! | --- | --- | --- |
//! | identified (an [`Owner`](crate::idempotency::Owner)) | `<prefix>{<owner>}:<record>` | `<prefix>{<owner>}:quota` |
//! | anonymous | `<prefix>{<record>}` | none |
//!
//! `<owner>` and `<record>` are the hex digests of [`Owner`](crate::idempotency::Owner) and
//! [`RecordKey`](crate::idempotency::RecordKey): no key, path or identity appears in Redis in
//! clear. An identified caller's records share one slot with its quota, so one very busy
//! caller's records are on one Cluster shard.
//!
//! A record is a hash: `f` the request's fingerprint, `t` the holder's token, `s` its state
//! (`c` claimed, `d` done), `l` the lease's end (ms, server clock) while claimed, `v` the
//! response once done. Its TTL is twice the lease while claimed (a holder past its lease may
//! still complete until someone takes the key over), then the retention. The quota is a sorted
//! set of the owner's records by expiry; a claim drops the expired ones before it counts.
//!
//! # Record format
//!
//! The response is kept in a versioned binary format: a version byte (1), the kind (a
//! response, or a result not kept), the status, then length-prefixed headers, trailers and
//! body. A record in another version, or one that does not parse, fails the claim with
//! [`RedisStoreError::Record`], never a replay of something else. Records over
//! [`max_record_bytes`](RedisIdempotencyStoreBuilder::max_record_bytes) (2 MiB) are never sent:
//! the key records that the request ran, and a retry gets 409 rather than a second run.
//!
//! # Failures
//!
//! Every operation is bounded by the connection's
//! [`timeout`](RedisConnectionBuilder::timeout) (250 ms by default), reconnection wait
//! included, and nothing is retried inside the store. What a failure does is the layer's
//! [`store_failure`](crate::idempotency::IdempotencyBuilder::store_failure) policy:
//!
//! | Redis | claim | completion | release |
//! | --- | --- | --- | --- |
//! | down, slow, connection reset | **503** problem+json, the handler does not run (default, fail closed); or runs unprotected with [`StoreFailure::FailOpen`](crate::idempotency::StoreFailure::FailOpen) | the response is sent; the layer asks again until the lease ends (duplicates get 409 meanwhile) | the key stays claimed until its lease ends |
//! | out of memory (`maxmemory`, `noeviction`) | **503** store full, with `Retry-After` | the key records that the request ran, without its response (409 for a retry; this small write is let through) | works (deleting needs no memory) |
//!
//! Failing closed never runs a keyed request unprotected, at the price of refusing keyed
//! requests while Redis is away. Failing open keeps the service answering, at the price of
//! running retries again during the outage; choose it only for operations where a second run
//! costs less than a refusal. Two windows remain even when failing closed:
//!
//! - A claim that timed out may have been applied: its key is then held until its lease ends,
//!   and a retry gets 409 meanwhile, never a second run.
//! - A completion that failed (Redis went away after the handler answered) leaves the key
//!   claimed (duplicates get 409) while the layer asks again, on a task of its own, until the
//!   lease ends. Only a Redis away for the whole lease leaves the key unrecorded: a retry
//!   after the lease runs the request again. (The store itself never retries; the layer does,
//!   and the fencing token makes a repeat of a completion that did land a no-op.)
//!
//! Run Redis with `maxmemory-policy noeviction`. Every record has a TTL, so a `volatile-*`
//! policy would pick exactly these keys, and any eviction of a live record lets a retry run
//! twice. Out of memory, a new key gets 503 and a response is not stored, but a record that
//! its request ran (a result not kept, a few bytes) is still written, so a retry gets 409
//! rather than a second run.
//!
//! ## Sizing the timeouts
//!
//! - [`timeout`](RedisConnectionBuilder::timeout): above the slowest normal answer of one
//!   script (well under 1 ms on a local network; a few with TLS or across zones), and well
//!   below the request's own timeout, since a request waits up to this long before the
//!   failure policy answers. A claim and a completion are two operations: a request can wait
//!   twice this long.
//! - [`connect_timeout`](RedisConnectionBuilder::connect_timeout) (1 s): one connection
//!   attempt, in the background; operations meanwhile wait at most their own timeout.
//! - The lease (the layer's, 90 s) above the handler's timeout, as with any store.
//!
//! # Bounds
//!
//! Redis's `maxmemory` is the store's byte bound (the store asks no room of its own:
//! [`Claim::room`](crate::idempotency::Claim::room) is not used), and
//! [`max_per_owner`](RedisIdempotencyStoreBuilder::max_per_owner) (1000) holds across the
//! fleet: the quota lives in Redis.
//!
//! # The cache store
//!
//! [`RedisCacheStore`] is a [`RemoteStore`](crate::cache::RemoteStore) for
//! [`CacheLayer::remote`](crate::cache::CacheLayer::remote) (generic mode) and
//! [`HttpCacheBuilder::remote`](crate::cache::HttpCacheBuilder::remote) (HTTP mode). Each
//! instance keeps its in-memory entries in front; Redis is asked only where the local tier
//! would call the origin (the cache manual says when, for the
//! [generic mode](crate::cache#a-remote-tier-for-a-fleet) and the
//! [HTTP mode](crate::cache#a-remote-tier-in-http-mode)):
//!
//! | operation | script | round trips |
//! | --- | --- | --- |
//! | lookup | the entry with its windows as time left by the server's clock; when there is none to serve, also `SET <lock> <token> NX PX <lock timeout>` | 1 |
//! | put | `HSET` the value and its windows as server-clock instants, `PEXPIRE` the entry's whole life (fresh, stale-while-revalidate and stale-if-error windows), `DEL` the lock if it holds the caller's token | 1 |
//! | lock (a refresh) | `SET <lock> <token> NX PX <lock timeout>` | 1 |
//! | unlock (the holder's fetch failed) | `DEL` the lock if it holds the caller's token | 1 |
//! | remove (invalidation) | `DEL` the entry and its lock | 1 |
//!
//! Keys: `<prefix>{<key>}` for the entry (a hash: `v` value, `f` / `s` / `e` the ends of the
//! fresh, stale and stale-if-error windows in server milliseconds, `d` the fetch's duration)
//! and `<prefix>{<key>}:lock`, where `<key>` is the [`RemoteCodec`](crate::cache::RemoteCodec)'s
//! bytes (in HTTP mode, the target as `host/path?query`, followed for a variant by the values
//! of the headers it varies on) and the prefix defaults to `palisade:cache:`. A Redis that fails or answers late is
//! bypassed: the cache serves from its local tier or the origin, as without a remote, and
//! counts the failure (`remote_errors` in the cache's metrics). Unlike idempotency records,
//! cache entries may be evicted: any `maxmemory-policy` works.
//!
//! # Metrics
//!
//! [`RedisConnection::metrics`]: per operation (claim, complete, release, cache lookup, put,
//! lock and remove), calls, round trips, errors by kind (timeout, connection, server,
//! response) and latency (total and maximum).

mod cache;
mod connection;
mod error;
mod idempotency;
mod record;

pub use self::cache::{DEFAULT_CACHE_PREFIX, RedisCacheStore, RedisCacheStoreBuilder};
pub use self::connection::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RECONNECT_DELAY, DEFAULT_TIMEOUT, ErrorCounts,
    OperationMetrics, RedisConnection, RedisConnectionBuilder, RedisMetrics,
};
pub use self::error::{RedisSetupError, RedisStoreError};
pub use self::idempotency::{
    DEFAULT_MAX_RECORD_BYTES, DEFAULT_PREFIX, RedisIdempotencyStore, RedisIdempotencyStoreBuilder,
};
pub use self::record::RecordError;
