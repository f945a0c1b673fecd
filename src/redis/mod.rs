//! Fleet-wide state in Redis (feature `redis`): idempotency records every instance sees.
//!
//! A service scaled out behind a load balancer sends a client's retry to any instance. With
//! the in-memory store, that instance has never seen the key and runs the request again. With
//! [`RedisIdempotencyStore`], every instance claims and completes keys in one Redis, so the
//! retry is replayed wherever it lands, and a request runs once in the whole fleet.
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
//! token plus one when that is greater: a record never gets the same token twice, even after it
//! was released and deleted, unless the server's clock is stepped back by more than a lease.
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
//! | down, slow, connection reset | **503** problem+json, the handler does not run (default, fail closed); or runs unprotected with [`StoreFailure::FailOpen`](crate::idempotency::StoreFailure::FailOpen) | the response is sent; the key stays claimed until its lease ends (duplicates get 409) | the key stays claimed until its lease ends |
//! | out of memory (`maxmemory`, `noeviction`) | **503** store full, with `Retry-After` | the key records that the request ran, without its response (409 for a retry) | works (deleting needs no memory) |
//!
//! Failing closed keeps the guarantee: no request with a key runs twice, at the price of
//! refusing keyed requests while Redis is away. Failing open keeps the service answering, at
//! the price of running retries again during the outage; choose it only for operations where a
//! second run costs less than a refusal. A claim that timed out may have been applied: its key
//! is then held until its lease ends, and a retry gets 409 meanwhile, never a second run.
//!
//! Run Redis with `maxmemory-policy noeviction` (or a `volatile-*` policy on a dedicated
//! database): evicting a live record would let a retry run twice.
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
//! # Metrics
//!
//! [`RedisConnection::metrics`]: per operation, calls, round trips, errors by kind (timeout,
//! connection, server, response) and latency (total and maximum).

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
