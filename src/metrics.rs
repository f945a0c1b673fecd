//! Metrics for dashboards and autoscaling, through the [`metrics`](https://docs.rs/metrics)
//! facade (feature `metrics`).
//!
//! With the feature on, every layer records into whatever recorder the application installs
//! (`metrics-exporter-prometheus`, a StatsD or OpenTelemetry bridge, a test recorder); without
//! it, the instrumentation compiles to nothing. Nothing is recorded until a recorder is
//! installed, and a layer resolves its handles at its first call: install the recorder before
//! traffic flows (first thing in `main`), and the layers built before it still record.
//!
//! ```
//! use std::time::Duration;
//! use palisade::circuit_breaker::CircuitBreakerLayer;
//! use palisade::timeout::TimeoutLayer;
//!
//! // Each layer instance is told apart by its `name` label.
//! let breaker = CircuitBreakerLayer::builder().name("payments").build().unwrap();
//! let timeout = TimeoutLayer::new(Duration::from_secs(2)).name("payments");
//! # let _ = (breaker, timeout);
//! ```
//!
//! `examples/prometheus.rs` serves them at `/metrics` next to an axum app, with the queries
//! and the `prometheus-adapter` rule that feed a Kubernetes HPA.
//!
//! # Names and labels
//!
//! Every metric carries `layer` (`timeout`, `server_timeout`, `circuit_breaker`, `retry`,
//! `throttle`, `idempotency`, `cache`) and `name` (the layer's
//! [`name`](crate::timeout::TimeoutLayer::name); `unnamed` if it has none). The other labels
//! take only the values listed, so a series set stays small and fixed.
//!
//! | metric | type | layers | extra labels |
//! | --- | --- | --- | --- |
//! | `palisade_calls_total` | counter | timeout, server_timeout, circuit_breaker, retry, throttle | `outcome`: `success`, `failure`, `ignored`, `timeout`, `rejected`, `cancelled` |
//! | `palisade_rejections_total` | counter | circuit_breaker, throttle, server_timeout | `reason`: `open`, `half_open`, `isolated` (breaker); `throttled`; `invalid_deadline` (a malformed deadline header, answered 400) |
//! | `palisade_in_flight` | gauge | timeout, server_timeout, circuit_breaker, retry, throttle | |
//! | `palisade_request_duration_seconds` | histogram | timeout, server_timeout, circuit_breaker, retry, throttle | |
//! | `palisade_attempt_duration_seconds` | histogram | retry | |
//! | `palisade_timeouts_total` | counter | timeout, server_timeout | `kind`: `limit`, `deadline` |
//! | `palisade_circuit_breaker_state` | gauge | circuit_breaker | `state`: `closed`, `open`, `half_open`, `isolated`, `forced_closed` (1 for the current state) |
//! | `palisade_circuit_breaker_transitions_total` | counter | circuit_breaker | `from`, `to`: the states |
//! | `palisade_retries_total` | counter | retry | `reason`: `backoff`, `pushback`, `reopening` |
//! | `palisade_retry_budget_refusals_total` | counter | retry | |
//! | `palisade_idempotency_requests_total` | counter | idempotency | `outcome`: `claimed`, `replayed`, `unprotected`, `invalid`, `in_flight`, `mismatch`, `result_not_kept`, `quota_exceeded`, `store_full`, `store_unavailable` |
//! | `palisade_cache_results_total` | counter | cache | `result`: `hit`, `stale`, `miss`, `collapsed`, `refresh`, `refresh_failed`, `stale_if_error`, `uncached`, `revalidated`, `remote_hit`, `remote_error` |
//!
//! What the values mean:
//!
//! - **`outcome`** of a call is the layer's own judgement: the breaker's and the throttle's
//!   classifier (so `ignored` is a result the classifier ignored), the retry policy's for the
//!   last attempt, `Ok`/`Err` for a timeout, and a 5xx answer for the server timeout.
//!   `rejected` calls never reached the inner service (the reason is in
//!   `palisade_rejections_total`); `cancelled` calls were dropped by their caller before an
//!   answer. A call counts once, when it ends, and its duration is recorded then (not for
//!   rejected or cancelled calls).
//! - **`palisade_in_flight`** counts the calls inside a layer now: for a server timeout, the
//!   requests the handlers are working on (the queue depth an autoscaler wants); for a retry,
//!   the requests in any attempt or backoff.
//! - **`palisade_timeouts_total{kind="deadline"}`** counts requests cut by a request-scoped
//!   deadline (the caller's, or an outer timeout's), `limit` by the layer's own limit; a
//!   request whose deadline had passed before the call counts too, with no duration.
//! - **`palisade_circuit_breaker_state`** is resolved at the breaker's first call, so an idle
//!   breaker has no series yet. The breakers of a keyed layer share one set of call metrics
//!   under the layer's name and count their transitions there; they have no state gauge (a
//!   set of breakers has no one state). Name every breaker: two unnamed ones share the
//!   `name="unnamed"` series, and their state gauges overwrite each other.
//! - **`palisade_cache_results_total`** counts what the cache handle's
//!   [`metrics`](crate::cache::CacheHandle::metrics) snapshot counts, one result per lookup
//!   (`hit`, `stale`, `miss`, `collapsed`) and per background event.
//!
//! A layer registers its series at zero at its first call (the rejections, timeouts, retries
//! and budget refusals along with its calls), so that a `rate()` over them exists before the
//! first event; only the transitions counter appears at the first transition (most `from`,
//! `to` pairs never happen). A layer that is never called registers nothing.
//!
//! Names follow the Prometheus conventions (`_total` counters, base units in seconds), and
//! each metric is described (unit and help text) to the recorder when it is first resolved.
//!
//! # Cost
//!
//! Off, nothing: the instruments are empty types. On, a call through a layer adds an atomic
//! check that the handles are resolved, an in-flight increment and decrement, two clock reads,
//! one counter add and one histogram sample, and a reference count on the layer's instruments;
//! the figures per layer are in `BENCHMARKS.md`. The recorder's own cost comes on top
//! (`metrics-exporter-prometheus` adds atomics per handle; its histograms are summaries unless
//! buckets are set).
