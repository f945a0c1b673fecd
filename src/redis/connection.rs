//! [`RedisConnection`]: the connection the Redis stores share, its timeouts, and what it
//! counts.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, IntoConnectionInfo, ServerErrorKind, Value};

use super::error::{RedisSetupError, RedisStoreError};
use crate::error::duration_within;

/// How long one store operation may take by default, reconnection included: 250 ms.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// How long one connection attempt may take by default: 1 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest pause between two reconnection attempts by default: 2 s.
pub const DEFAULT_MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

const MIN_TIMEOUT: Duration = Duration::from_millis(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// One multiplexed connection to a Redis server, shared by every store built on it (and every
/// clone), with the timeouts that keep a down or slow Redis from holding a request.
///
/// - **Every operation is bounded** by [`timeout`](RedisConnectionBuilder::timeout) (default
///   [`DEFAULT_TIMEOUT`], 250 ms), from the call to the answer: the wait for a reconnection,
///   a script reload after a restart and the reply are all inside it. redis-rs's own response
///   timeout is set to the same value, and each connection attempt has
///   [`connect_timeout`](RedisConnectionBuilder::connect_timeout) (1 s).
/// - **Reconnects in the background.** A lost connection is replaced by redis-rs's
///   `ConnectionManager`, with jittered exponential pauses up to
///   [`max_reconnect_delay`](RedisConnectionBuilder::max_reconnect_delay) (2 s); operations
///   meanwhile fail with [`RedisStoreError::Timeout`] or [`RedisStoreError::Connection`].
/// - **No hidden retry.** An operation that failed is not sent again: the layer's policy
///   (fail closed or open) answers, and the retry layer, if any, owns retries. The one repeat
///   is a script's after `NOSCRIPT` (a restarted Redis has forgotten it): it is loaded and run
///   once more, which is safe because a script that was not found did not run.
/// - **Counted.** [`metrics`](Self::metrics): calls, round trips, errors by kind and latency
///   per operation.
///
/// Build it inside a tokio runtime (the connection's task runs there); it connects lazily, so
/// a Redis that is down when the service starts only fails the first operations.
#[derive(Clone)]
pub struct RedisConnection {
    inner: Arc<Inner>,
}

struct Inner {
    manager: ConnectionManager,
    timeout: Duration,
    metrics: Counters,
}

/// Configures a [`RedisConnection`] (from [`RedisConnection::builder`]).
#[must_use]
pub struct RedisConnectionBuilder {
    info: redis::RedisResult<redis::ConnectionInfo>,
    timeout: Duration,
    connect_timeout: Duration,
    max_reconnect_delay: Duration,
}

impl fmt::Debug for RedisConnectionBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection info can hold a password: show only where it points.
        f.debug_struct("RedisConnectionBuilder")
            .field(
                "address",
                &self.info.as_ref().map(|info| info.addr().to_string()).ok(),
            )
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_reconnect_delay", &self.max_reconnect_delay)
            .finish()
    }
}

impl RedisConnection {
    /// A builder for a connection to `address`: a `redis://host:port/db` URL (`rediss://` is
    /// not enabled in this build), or anything else redis-rs turns into connection info.
    pub fn builder(address: impl IntoConnectionInfo) -> RedisConnectionBuilder {
        RedisConnectionBuilder {
            info: address.into_connection_info(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_reconnect_delay: DEFAULT_MAX_RECONNECT_DELAY,
        }
    }

    /// What the connection's operations did so far.
    #[must_use]
    pub fn metrics(&self) -> RedisMetrics {
        RedisMetrics {
            claim: self.inner.metrics.claim.snapshot(),
            complete: self.inner.metrics.complete.snapshot(),
            release: self.inner.metrics.release.snapshot(),
            cache_lookup: self.inner.metrics.cache_lookup.snapshot(),
            cache_put: self.inner.metrics.cache_put.snapshot(),
            cache_lock: self.inner.metrics.cache_lock.snapshot(),
            cache_remove: self.inner.metrics.cache_remove.snapshot(),
        }
    }

    /// The bound on one operation.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Counts an answer of `operation` that [`run`](Self::run) returned but the store could not
    /// read (an unexpected shape, a record that does not parse).
    pub(crate) fn unreadable(&self, operation: Operation) {
        self.inner
            .metrics
            .of(operation)
            .response
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `script` with `keys` and `args`: one round trip (`EVALSHA`), three after a restart
    /// (`NOSCRIPT`, `SCRIPT LOAD`, `EVALSHA`), all within the timeout.
    pub(crate) async fn run(
        &self,
        operation: Operation,
        script: &StoreScript,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<Value, RedisStoreError> {
        let counters = self.inner.metrics.of(operation);
        counters.calls.fetch_add(1, Ordering::Relaxed);
        // tokio's clock: the latency a request felt, and paused time in tests.
        let started = tokio::time::Instant::now();
        let result = match tokio::time::timeout(
            self.inner.timeout,
            self.evalsha(counters, script, keys, args),
        )
        .await
        {
            Ok(result) => {
                result.map_err(|error| RedisStoreError::from_redis(error, self.inner.timeout))
            }
            Err(_) => Err(RedisStoreError::Timeout(self.inner.timeout)),
        };
        counters.record(started.elapsed(), result.as_ref().err());
        result
    }

    async fn evalsha(
        &self,
        counters: &OperationCounters,
        script: &StoreScript,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> redis::RedisResult<Value> {
        let mut connection = self.inner.manager.clone();
        let mut call = redis::cmd("EVALSHA");
        call.arg(script.hash.as_str()).arg(keys.len());
        for key in keys {
            call.arg(*key);
        }
        for arg in args {
            call.arg(*arg);
        }
        counters.round_trips.fetch_add(1, Ordering::Relaxed);
        match call.query_async::<Value>(&mut connection).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                tracing::info!(
                    target: "palisade::redis",
                    script = script.name,
                    "Redis does not know the script (restarted or flushed): loading it"
                );
                counters.round_trips.fetch_add(2, Ordering::Relaxed);
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(script.source)
                    .query_async::<String>(&mut connection)
                    .await?;
                call.query_async::<Value>(&mut connection).await
            }
            result => result,
        }
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisConnectionBuilder {
    /// Bounds each store operation, from the call to the answer, reconnection wait included.
    /// Default: [`DEFAULT_TIMEOUT`] (250 ms); allowed 1 ms to 60 s.
    ///
    /// Size it above Redis's slowest normal answer for one script (well under a millisecond on
    /// a local network, a few with TLS or across zones) and well below your request timeout:
    /// it is what a request waits, at worst, before the layer's failure policy answers.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bounds each connection attempt. Default: [`DEFAULT_CONNECT_TIMEOUT`] (1 s); allowed 1 ms
    /// to 60 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest pause between reconnection attempts (they back off exponentially, with
    /// jitter, from 100 ms). Default: [`DEFAULT_MAX_RECONNECT_DELAY`] (2 s); allowed 1 ms to
    /// 60 s.
    pub fn max_reconnect_delay(mut self, delay: Duration) -> Self {
        self.max_reconnect_delay = delay;
        self
    }

    /// The connection. It connects lazily: building never waits for Redis.
    ///
    /// # Errors
    ///
    /// [`RedisSetupError::Config`] for a duration out of its range,
    /// [`RedisSetupError::Address`] for an address redis-rs cannot use, and
    /// [`RedisSetupError::NoRuntime`] outside a tokio runtime.
    pub fn build(self) -> Result<RedisConnection, RedisSetupError> {
        duration_within("timeout", self.timeout, MIN_TIMEOUT, MAX_TIMEOUT)?;
        duration_within(
            "connect_timeout",
            self.connect_timeout,
            MIN_TIMEOUT,
            MAX_TIMEOUT,
        )?;
        duration_within(
            "max_reconnect_delay",
            self.max_reconnect_delay,
            MIN_TIMEOUT,
            MAX_TIMEOUT,
        )?;
        let info = self.info.map_err(RedisSetupError::Address)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisSetupError::NoRuntime);
        }
        let client = redis::Client::open(info).map_err(RedisSetupError::Address)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.timeout))
            .set_connection_timeout(Some(self.connect_timeout))
            .set_min_delay(Duration::from_millis(100).min(self.max_reconnect_delay))
            .set_max_delay(self.max_reconnect_delay);
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(RedisSetupError::Address)?;
        Ok(RedisConnection {
            inner: Arc::new(Inner {
                manager,
                timeout: self.timeout,
                metrics: Counters::default(),
            }),
        })
    }
}

/// The error for a script's answer of a shape the script never gives.
pub(crate) fn unexpected(script: &str, answer: &Value) -> RedisStoreError {
    let mut shown = format!("{answer:?}");
    shown.truncate(120);
    RedisStoreError::Response(format!("the {script} script answered {shown}"))
}

/// A lease or TTL in whole milliseconds, at least 1 (`PEXPIRE 0` would delete the key).
pub(crate) fn millis(duration: Duration) -> String {
    duration.as_millis().max(1).to_string()
}

/// `prefix`, if it can start a store's keys: no brace, which would change their Cluster hash
/// tags.
pub(crate) fn checked_prefix(prefix: String) -> Result<String, crate::error::ConfigError> {
    if prefix.contains(['{', '}']) {
        return Err(crate::error::ConfigError::Invalid {
            setting: "prefix",
            why: "it may not contain `{` or `}`: they would change the keys' Cluster hash tags",
        });
    }
    Ok(prefix)
}

/// A Lua script a store runs, with its SHA-1 computed once.
pub(crate) struct StoreScript {
    pub(crate) name: &'static str,
    source: &'static str,
    hash: String,
}

impl StoreScript {
    pub(crate) fn new(name: &'static str, source: &'static str) -> Self {
        Self {
            name,
            source,
            hash: redis::Script::new(source).get_hash().to_owned(),
        }
    }
}

/// The store operations a [`RedisConnection`] counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Operation {
    Claim,
    Complete,
    Release,
    CacheLookup,
    CachePut,
    CacheLock,
    CacheRemove,
}

#[derive(Default)]
struct Counters {
    claim: OperationCounters,
    complete: OperationCounters,
    release: OperationCounters,
    cache_lookup: OperationCounters,
    cache_put: OperationCounters,
    cache_lock: OperationCounters,
    cache_remove: OperationCounters,
}

impl Counters {
    fn of(&self, operation: Operation) -> &OperationCounters {
        match operation {
            Operation::Claim => &self.claim,
            Operation::Complete => &self.complete,
            Operation::Release => &self.release,
            Operation::CacheLookup => &self.cache_lookup,
            Operation::CachePut => &self.cache_put,
            Operation::CacheLock => &self.cache_lock,
            Operation::CacheRemove => &self.cache_remove,
        }
    }
}

// Relaxed throughout: independent counters, read as a snapshot that need not be consistent
// across fields.
#[derive(Default)]
struct OperationCounters {
    calls: AtomicU64,
    finished: AtomicU64,
    round_trips: AtomicU64,
    timeouts: AtomicU64,
    connection: AtomicU64,
    server: AtomicU64,
    response: AtomicU64,
    latency_micros: AtomicU64,
    max_latency_micros: AtomicU64,
}

impl OperationCounters {
    fn record(&self, elapsed: Duration, error: Option<&RedisStoreError>) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.finished.fetch_add(1, Ordering::Relaxed);
        self.latency_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_latency_micros.fetch_max(micros, Ordering::Relaxed);
        let counter = match error {
            None => return,
            Some(RedisStoreError::Timeout(_)) => &self.timeouts,
            Some(RedisStoreError::Connection(_)) => &self.connection,
            Some(RedisStoreError::Server(_)) => &self.server,
            Some(RedisStoreError::Response(_) | RedisStoreError::Record(_)) => &self.response,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> OperationMetrics {
        OperationMetrics {
            calls: self.calls.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
            errors: ErrorCounts {
                timeout: self.timeouts.load(Ordering::Relaxed),
                connection: self.connection.load(Ordering::Relaxed),
                server: self.server.load(Ordering::Relaxed),
                response: self.response.load(Ordering::Relaxed),
            },
            total_latency: Duration::from_micros(self.latency_micros.load(Ordering::Relaxed)),
            max_latency: Duration::from_micros(self.max_latency_micros.load(Ordering::Relaxed)),
        }
    }
}

/// What a [`RedisConnection`]'s operations did, per operation (from
/// [`RedisConnection::metrics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisMetrics {
    /// Idempotency claims.
    pub claim: OperationMetrics,
    /// Idempotency completions.
    pub complete: OperationMetrics,
    /// Idempotency releases.
    pub release: OperationMetrics,
    /// Cache lookups (each may take the entry's lock).
    pub cache_lookup: OperationMetrics,
    /// Cache entries published.
    pub cache_put: OperationMetrics,
    /// Cache locks asked for (a refresh) or given up (after a failed fetch).
    pub cache_lock: OperationMetrics,
    /// Cache entries removed.
    pub cache_remove: OperationMetrics,
}

/// One operation's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationMetrics {
    /// Operations started.
    pub calls: u64,
    /// Operations finished (answered, failed or timed out); `calls − finished` are under way
    /// or were dropped by their caller.
    pub finished: u64,
    /// Commands sent: one per operation, three more for a script Redis had forgotten.
    pub round_trips: u64,
    /// Operations that failed, by kind.
    pub errors: ErrorCounts,
    /// Time spent in finished operations, from the call to the answer (or the timeout).
    pub total_latency: Duration,
    /// The longest operation.
    pub max_latency: Duration,
}

impl OperationMetrics {
    /// The mean time of a finished operation (zero before the first).
    #[must_use]
    pub fn mean_latency(&self) -> Duration {
        let finished = u32::try_from(self.finished).unwrap_or(u32::MAX);
        self.total_latency.checked_div(finished).unwrap_or_default()
    }
}

/// Failed operations by kind, as [`RedisStoreError`] tells them apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorCounts {
    /// No answer within the timeout ([`RedisStoreError::Timeout`]).
    pub timeout: u64,
    /// The connection failed or was lost ([`RedisStoreError::Connection`]).
    pub connection: u64,
    /// Redis answered with an error, out of memory among them ([`RedisStoreError::Server`]).
    pub server: u64,
    /// An answer that is not what the script returns, or a record that does not parse
    /// ([`RedisStoreError::Response`], [`RedisStoreError::Record`]).
    pub response: u64,
}
