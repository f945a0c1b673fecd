//! Idempotency keys, to the IETF httpapi draft (feature `idempotency`, which enables `http`).
//!
//! A client that sends a POST and gets no answer (a timeout, a reset connection, a lost
//! response) cannot tell whether the server acted. Retrying may charge a card twice; not
//! retrying may lose the order. With an `Idempotency-Key` header, the client can retry safely:
//! the server runs the first request with a key, stores its response, and answers every
//! repetition with that stored response instead of running it again.
//!
//! - Server side: [`IdempotencyLayer`] in front of the handlers (an axum `Router`).
//! - Client side: [`AddIdempotencyKeyLayer`] outside the retry layer, so every attempt of one
//!   request carries one key.
//!
//! # When not to use it
//!
//! - **Operations that are idempotent already** (a `PUT` of a whole resource, a `DELETE`):
//!   repeating them is harmless, and the store would only cost memory.
//! - **Streaming requests or responses**: a keyed request's body is read in full to fingerprint
//!   it, and a response is stored whole before it is sent; keep streaming endpoints unkeyed.
//! - **Exactly-once across a fleet without a shared store**: the in-memory store protects one
//!   instance; a retry routed to another instance runs again. Use a shared store (the `redis`
//!   feature's `RedisIdempotencyStore`).
//! - **Work that outlives the lease**: a handler still running when its lease ends can be run
//!   a second time by a retry; set the lease above the handler's timeout.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::post};
//! use palisade::idempotency::IdempotencyLayer;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let app = Router::new()
//!     .route("/orders", post(|| async { (http::StatusCode::CREATED, "order 1") }))
//!     .layer(IdempotencyLayer::new());
//!
//! let order = || {
//!     http::Request::post("/orders")
//!         .header("idempotency-key", "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"")
//!         .body(axum::body::Body::from("{\"item\":42}"))
//!         .unwrap()
//! };
//! let first = app.clone().oneshot(order()).await.unwrap();
//! assert_eq!(first.status(), http::StatusCode::CREATED);
//! let again = app.oneshot(order()).await.unwrap();
//! assert_eq!(again.status(), http::StatusCode::CREATED);
//! assert_eq!(again.headers()["idempotent-replayed"], "true");
//! # }
//! ```
//!
//! # Flows
//!
//! Only requests of the covered methods (POST and PATCH by default) are looked at; others pass
//! through untouched.
//!
//! | request | answer | stored |
//! | --- | --- | --- |
//! | no key | runs unprotected, or **400** with [`require_key`](IdempotencyBuilder::require_key) | nothing |
//! | malformed key (not a quoted sf-string, empty, over 255 characters, not printable ASCII, malformed parameters, repeated header) | **400** | nothing |
//! | request body fails while read (the client left mid-upload) | **400** | nothing |
//! | body over the limit (1 MiB) | **413**, or runs unprotected with [`OversizedBody::PassThrough`] | nothing |
//! | first with its key | runs; its response is stored if the policy says so | the response |
//! | same key, same request, first still running | **409** with `Retry-After`, or waits and replays with [`InFlight::Wait`] | nothing |
//! | same key, same request, first finished | the stored response, byte for byte, with `Idempotent-Replayed: true` | – |
//! | same key, another request (method, path, query or body differ) | **422** | nothing |
//! | same key, first finished but its response was not kept (over the response limit, or no room) | **409**, type `urn:palisade:idempotency-result-not-kept`: it will not run again | – |
//! | a new key from a caller holding its quota of records | **429** | nothing |
//! | store full of live records, or without room for one more response | **503** with `Retry-After` | nothing |
//! | store failed | **503**, or runs unprotected with [`StoreFailure::FailOpen`] | nothing |
//!
//! Every answer the layer writes itself is `application/problem+json` (RFC 9457), with a
//! `urn:palisade:idempotency-*` type; the [`IdempotencyRejection`] is also in the response's
//! extensions.
//!
//! # What is stored
//!
//! A policy ([`store_when`](IdempotencyBuilder::store_when)); by default
//! [`stores_final_responses`]: 2xx, 3xx and the 4xx that retrying cannot change. Everything
//! else **releases the key**, so the client's retry runs the request again: a 5xx, the 4xx that
//! invite a retry (408, 409, 423, 425, 429), the 4xx a caller fixes by authenticating (401,
//! 403, 407: a client that refreshes its token must be heard), the 4xx of a route that does
//! not exist (404, 405: they did nothing, and keeping them would let junk paths fill the
//! store), a 1xx, an error from the handler, a panic in it, and a dropped request (the client
//! disconnected before the handler answered, which cancels the handler; its future is dropped
//! before the key is released).
//!
//! Stored: the status, the headers without the hop-by-hop ones and without **`Set-Cookie`**
//! (a session belongs to the caller who got it; more headers with
//! [`strip_headers`](IdempotencyBuilder::strip_headers)), the whole body and its trailers. A 4xx
//! is kept for [`client_error_retention`](IdempotencyBuilder::client_error_retention) (5 minutes),
//! the rest for the retention (24 h).
//!
//! **Once the handler has answered with a status to store, its key is never released**, so a
//! request with a key never runs twice:
//!
//! - A response body over [`response_limit`](IdempotencyBuilder::response_limit) is sent to its
//!   client but not stored; the key records that the request ran, and a retry gets **409**
//!   ([`ResultNotKept`](IdempotencyRejection::ResultNotKept)) rather than a second run. Raise
//!   the limit for endpoints with large answers.
//! - A store with no room for the response records the same. To make that rare, a store
//!   refuses a new key (503) unless it has room for one more response of the limit's size.
//! - The client leaving no longer matters: the layer reads the rest of the body and stores it
//!   on a task of its own, so the retry is a replay. A body that fails or panics while read
//!   there releases the key (the client never got the answer).
//! - A store that fails to record the completion (a Redis that went away just after the
//!   handler answered) is asked again on a task of its own, 100 ms later, then doubling to
//!   every 5 s, until the lease ends; duplicates get 409 meanwhile. Asking again is safe: a
//!   completion that did land (its answer lost) is refused the second time by its token. Only
//!   a store down for the whole lease leaves the key unrecorded, and a retry after the lease
//!   runs again.
//!
//! The response body is read in full before it is sent (up to the limit), so a response that
//! streams for a long time (server-sent events, a long poll) reaches its client only at its
//! end: leave such endpoints out of the layer (their methods, or a router of their own).
//!
//! A handler that is cancelled half-way (the client went away) may have done part of its work;
//! since its key is released, the retry runs the whole handler again. Make the work a handler
//! does before its response transactional, as the IETF draft and Stripe's practice assume.
//!
//! # Keys and identity
//!
//! A record is found by a [`RecordKey`]: a digest of the caller's identity, the method, the
//! authority (the URI's, or the `Host` header: one router serving several hosts keeps their
//! records apart), the path and the key. The identity comes from an [`Identify`] given with
//! [`identity`](IdempotencyBuilder::identity): an extension or header set by your authentication
//! layer. It also counts each caller's records against the store's
//! [`max_per_owner`](MemoryStoreBuilder::max_per_owner) (1000), so one caller flooding the store with keys cannot refuse everyone else. **By default every
//! caller shares one scope** ([`Anonymous`]): a caller who learns another's key and sends the
//! same request is replayed that caller's response, and no caller has a quota of its own. A
//! layer left at that default logs a warning, once, at its first covered request; choose it
//! explicitly with `.identity(Anonymous)`. For any service with more than one client, set an
//! identity; see the security note on [`Identify`].
//!
//! In an axum `Router`, the last layer added is the outermost and runs first, so add the
//! authentication layer *after* the idempotency layer:
//!
//! ```
//! use axum::extract::Request;
//! use axum::middleware::{self, Next};
//! use axum::response::Response;
//! use axum::{Router, routing::post};
//! use palisade::idempotency::{IdempotencyLayer, IdentityExtension};
//!
//! #[derive(Clone)]
//! struct Tenant(String);
//! impl AsRef<[u8]> for Tenant {
//!     fn as_ref(&self) -> &[u8] {
//!         self.0.as_bytes()
//!     }
//! }
//!
//! async fn authenticate(mut request: Request, next: Next) -> Response {
//!     // Your authentication: here, every caller is tenant "acme".
//!     request.extensions_mut().insert(Tenant("acme".into()));
//!     next.run(request).await
//! }
//!
//! let app: Router = Router::new()
//!     .route("/orders", post(|| async { "placed" }))
//!     .layer(
//!         IdempotencyLayer::builder()
//!             .identity(IdentityExtension::<Tenant>::new())
//!             .build()
//!             .unwrap(),
//!     )
//!     // Added last: runs first, so the tenant is known when the idempotency layer runs.
//!     .layer(middleware::from_fn(authenticate));
//! # let _ = app;
//! ```
//!
//! The key itself is an RFC 8941 sf-string, quoted: `Idempotency-Key: "abc"`. Many clients send
//! it bare (`Idempotency-Key: abc`); accept those with
//! [`accept_unquoted_keys`](IdempotencyBuilder::accept_unquoted_keys).
//!
//! A request's [`Fingerprint`] is a SHA-256 digest of its method, path, query and body, read
//! in full (up to [`body_limit`](IdempotencyBuilder::body_limit)) before the handler runs; the
//! handler gets the same bytes. Headers (`Content-Type` included) and trailers are not part of
//! it: a retry that sends the same body with another `Content-Type` is the same request.
//!
//! Because the body is read to its end first, a keyed request cannot be a stream whose client
//! waits for the response before sending the rest (gRPC client streaming, a bidirectional
//! stream): it would wait until the client gives up. Such calls are not idempotent operations
//! anyway; send them without an `Idempotency-Key` (requests without one pass through unread).
//! Empty body frames hold no memory, and a body of more than 65,536 frames counts as over the
//! limit.
//!
//! # Leases and fencing
//!
//! A claim holds its key for a **lease** (90 s by default). If the holder is still running when
//! the lease ends (a hung handler; with a shared store, a crashed instance), a duplicate may
//! take the key over and run, and a full store may drop the claim to make room. The old
//! holder's completion then carries a stale [`FencingToken`] and is refused: it cannot
//! overwrite the newer result. Until then, a holder past its lease may still complete. Set the
//! lease above your handler's timeout.
//!
//! Completed records are replayed for the **retention** period (24 h by default); after it the
//! key is free again. Publish the period to your clients, as the draft asks.
//!
//! # Stores
//!
//! [`MemoryStore`] (the default) keeps records in this process, bounded by entries and bytes;
//! see its docs for the bounds, the sweep and why a full store refuses new keys rather than
//! evict live ones. For a fleet, the `redis` feature's `palisade::redis::RedisIdempotencyStore`
//! keeps records in Redis, one round trip to claim and one to complete. Implement
//! [`IdempotencyStore`] for another shared store.
//!
//! Records are keyed by the authority the request names, so every instance of a fleet must see
//! the same `Host` (the load balancer's name), as it does behind a proxy that passes it on.
//!
//! # Defaults
//!
//! | setting | default | source |
//! | --- | --- | --- |
//! | [`methods`](IdempotencyBuilder::methods) | POST, PATCH | RFC 9110: the methods not idempotent by themselves |
//! | [`require_key`](IdempotencyBuilder::require_key) | `false` | |
//! | [`max_key_length`](IdempotencyBuilder::max_key_length) | 255 | Stripe |
//! | [`accept_unquoted_keys`](IdempotencyBuilder::accept_unquoted_keys) | `false` | IETF draft (sf-string) |
//! | [`body_limit`](IdempotencyBuilder::body_limit) | [`DEFAULT_BODY_LIMIT`] (1 MiB) | |
//! | [`response_limit`](IdempotencyBuilder::response_limit) | [`DEFAULT_RESPONSE_LIMIT`] (1 MiB) | |
//! | [`lease`](IdempotencyBuilder::lease) | [`DEFAULT_LEASE`] (90 s) | brandur's Stripe-style lock timeout |
//! | [`retention`](IdempotencyBuilder::retention) | [`DEFAULT_RETENTION`] (24 h) | Stripe |
//! | [`client_error_retention`](IdempotencyBuilder::client_error_retention) | [`DEFAULT_CLIENT_ERROR_RETENTION`] (5 min) | long enough for retries; junk does not stay a day |
//! | [`strip_headers`](IdempotencyBuilder::strip_headers) | `Set-Cookie` | a session is its caller's |
//! | [`in_flight`](IdempotencyBuilder::in_flight) | [`InFlight::Conflict`] (409) | IETF draft |
//! | [`in_flight_retry_after`](IdempotencyBuilder::in_flight_retry_after) | 1 s | |
//! | [`store_failure`](IdempotencyBuilder::store_failure) | [`StoreFailure::FailClosed`] (503) | |
//! | [`store_when`](IdempotencyBuilder::store_when) | [`stores_final_responses`] | |
//! | [`identity`](IdempotencyBuilder::identity) | [`Anonymous`], with a warning once | |
//! | [`MemoryStore`] bounds | [`DEFAULT_MAX_ENTRIES`] (100 000), [`DEFAULT_MAX_BYTES`] (64 MiB), [`DEFAULT_MAX_PER_OWNER`] (1000 per identified caller) | |
//!
//! # Errors
//!
//! The layer never adds an error: its `Service::Error` is the inner service's (an axum
//! router's `Infallible` stays `Infallible`). When it answers a request itself it returns an
//! `application/problem+json` response and puts the [`IdempotencyRejection`] in that
//! response's extensions, so middleware outside can match on it: 400 (no key where one is
//! required, a malformed key, an unreadable body), 409 (a duplicate still in flight, with
//! `Retry-After`; or a result that was run but not kept), 413 (a body over the limit, when
//! oversized bodies are refused), 422 (a key reused for a different request), 429 (a caller's
//! quota of records is used up), 503 (the store is full or unavailable). None of them runs the
//! handler or stores anything. An error of the inner service passes through unchanged and
//! releases the key.
//!
//! # Interaction with other layers
//!
//! - **Behind authentication** (in an axum `Router`, add authentication after this layer;
//!   see above): the identity must be known when the layer runs, and an unauthenticated
//!   request must not claim keys.
//! - **In front of the server-side timeout**: a timed-out handler answers 503 or 408, which
//!   releases the key, so the retry runs. (Behind the timeout, the layer's own future would be
//!   cancelled, which also releases.) Keep the lease above the timeout.
//! - **In front of concurrency limits**: a request holds the inner service's readiness while
//!   its body is read and, with [`InFlight::Wait`], while it waits for a duplicate; a
//!   concurrency limit inside this layer would count those waits.
//! - **Client side**: [`AddIdempotencyKeyLayer`] ⊃ `BufferBodyLayer` ⊃ `RetryLayer` ⊃ the
//!   client: one key for all attempts. The retry layer's HTTP policy retries a POST that carries
//!   a key.
//!
//! # Guarantees
//!
//! 1. A handler runs at most once per record key while the record lives (its lease, then its
//!    retention), unless its claim is released (the outcomes above, all before the handler
//!    answered with a status to store) or its lease ends first.
//! 2. A response is stored only by the claim that holds the key (fencing), and only if the
//!    policy stores its status and its body fits; otherwise, once a stored status was
//!    answered, a record of the run without its response.
//! 3. Nothing is stored for a request the layer answers itself.
//! 4. A dropped or panicking request never leaves its key claimed: a claim under way is
//!    finished and released, a held key is released, and a response being stored is stored
//!    (on a task of its own, for a networked store; with no tokio runtime to run that task on,
//!    the key is held until its lease ends).

mod cleanup;
mod client;
mod config;
mod error;
mod fingerprint;
pub mod future;
pub(crate) mod idempotency_key;
mod identity;
mod layer;
#[cfg(all(test, palisade_loom))]
mod loom_models;
mod pending;
mod response;
mod service;
mod state;
mod store;

pub use self::client::{AddIdempotencyKey, AddIdempotencyKeyLayer};
pub use self::config::{
    DEFAULT_BODY_LIMIT, DEFAULT_CLIENT_ERROR_RETENTION, DEFAULT_IN_FLIGHT_RETRY_AFTER,
    DEFAULT_LEASE, DEFAULT_RESPONSE_LIMIT, DEFAULT_RETENTION, IdempotencyBuilder, InFlight,
    MAX_LEASE, MAX_RETENTION, MIN_LEASE, OversizedBody, StoreFailure, StorePolicy,
    stores_final_responses,
};
pub use self::error::IdempotencyRejection;
pub use self::fingerprint::{Fingerprint, Owner, RecordKey};
pub use self::identity::{Anonymous, Identify, IdentityExtension, IdentityHeader};
pub use self::layer::IdempotencyLayer;
pub use self::service::Idempotency;
pub use self::store::{
    Claim, ClaimOutcome, Completed, Completion, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_PER_OWNER, FencingToken, IdempotencyStore, MemoryStore, MemoryStoreBuilder,
    StoreError, StoredResponse,
};
