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
//! | no key | runs unprotected, or **400** with [`require_key`](IdempotencyLayer::require_key) | nothing |
//! | malformed key (not a quoted sf-string, empty, over 255 characters, not printable ASCII, malformed parameters, repeated header) | **400** | nothing |
//! | request body fails while read (the client left mid-upload) | **400** | nothing |
//! | body over the limit (1 MiB) | **413**, or runs unprotected with [`OversizedBody::PassThrough`] | nothing |
//! | first with its key | runs; its response is stored if the policy says so | the response |
//! | same key, same request, first still running | **409** with `Retry-After`, or waits and replays with [`InFlight::Wait`] | nothing |
//! | same key, same request, first finished | the stored response, byte for byte, with `Idempotent-Replayed: true` | – |
//! | same key, another request (method, path, query or body differ) | **422** | nothing |
//! | store full of live records | **503** with `Retry-After` | nothing |
//! | store failed | **503**, or runs unprotected with [`StoreFailure::FailOpen`] | nothing |
//!
//! Every answer the layer writes itself is `application/problem+json` (RFC 9457), with a
//! `urn:palisade:idempotency-*` type; the [`IdempotencyRejection`] is also in the response's
//! extensions.
//!
//! # What is stored
//!
//! A policy ([`store_when`](IdempotencyLayer::store_when)); by default
//! [`stores_final_responses`]: 2xx, 3xx and the 4xx that retrying cannot change. Everything
//! else **releases the key**, so the client's retry runs the request again: a 5xx, the 4xx that
//! invite a retry (408, 409, 423, 425, 429), a 1xx, an error from the handler, a panic in it,
//! and a dropped request (the client disconnected before the handler answered, which cancels
//! the handler; its future is dropped before the key is released). A response body over
//! [`response_limit`](IdempotencyLayer::response_limit) is sent to its client but not stored,
//! and its key is released: a retry runs again, which is only safe if the handler is itself
//! idempotent for such responses; raise the limit for endpoints with large answers. Stored:
//! the status, the headers without the hop-by-hop ones, the whole body and its trailers.
//!
//! Once the handler has answered with a response to store, the client leaving no longer
//! matters: the layer reads the rest of the body and stores it on a task of its own, so the
//! retry is a replay, not a second run.
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
//! path and the key. The identity comes from an [`Identify`] given with
//! [`identity`](IdempotencyLayer::identity): an extension or header set by your authentication
//! layer. **By default every caller shares one scope** ([`Anonymous`]): a caller who learns
//! another's key and sends the same request is replayed that caller's response. For any
//! service with more than one client, set an identity; see the security note on [`Identify`].
//!
//! The key itself is an RFC 8941 sf-string, quoted: `Idempotency-Key: "abc"`. Many clients send
//! it bare (`Idempotency-Key: abc`); accept those with
//! [`accept_unquoted_keys`](IdempotencyLayer::accept_unquoted_keys).
//!
//! A request's [`Fingerprint`] is a SHA-256 digest of its method, path, query and body, read
//! in full (up to [`body_limit`](IdempotencyLayer::body_limit)) before the handler runs; the
//! handler gets the same bytes.
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
//! evict live ones. Implement [`IdempotencyStore`] for a store shared by several instances:
//! one round trip to claim, one to complete.
//!
//! # Defaults
//!
//! | setting | default | source |
//! | --- | --- | --- |
//! | [`methods`](IdempotencyLayer::methods) | POST, PATCH | RFC 9110: the methods not idempotent by themselves |
//! | [`require_key`](IdempotencyLayer::require_key) | `false` | |
//! | [`max_key_length`](IdempotencyLayer::max_key_length) | 255 | Stripe |
//! | [`accept_unquoted_keys`](IdempotencyLayer::accept_unquoted_keys) | `false` | IETF draft (sf-string) |
//! | [`body_limit`](IdempotencyLayer::body_limit) | [`DEFAULT_BODY_LIMIT`] (1 MiB) | |
//! | [`response_limit`](IdempotencyLayer::response_limit) | [`DEFAULT_RESPONSE_LIMIT`] (1 MiB) | |
//! | [`lease`](IdempotencyLayer::lease) | [`DEFAULT_LEASE`] (90 s) | brandur's Stripe-style lock timeout |
//! | [`retention`](IdempotencyLayer::retention) | [`DEFAULT_RETENTION`] (24 h) | Stripe |
//! | [`in_flight`](IdempotencyLayer::in_flight) | [`InFlight::Conflict`] (409) | IETF draft |
//! | [`in_flight_retry_after`](IdempotencyLayer::in_flight_retry_after) | 1 s | |
//! | [`store_failure`](IdempotencyLayer::store_failure) | [`StoreFailure::FailClosed`] (503) | |
//! | [`store_when`](IdempotencyLayer::store_when) | [`stores_final_responses`] | |
//! | [`identity`](IdempotencyLayer::identity) | [`Anonymous`] | |
//! | [`MemoryStore`] bounds | [`DEFAULT_MAX_ENTRIES`] (100 000), [`DEFAULT_MAX_BYTES`] (64 MiB) | |
//!
//! # Ordering with other layers
//!
//! - **Behind authentication**: the identity must be known when the layer runs, and an
//!   unauthenticated request must not claim keys.
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
//! # Invariants
//!
//! 1. A handler runs at most once per record key while the record lives (its lease, then its
//!    retention), unless its claim is released (the outcomes above) or its lease ends first.
//! 2. A response is stored only by the claim that holds the key (fencing), and only if the
//!    policy stores its status and its body fits.
//! 3. Nothing is stored for a request the layer answers itself.
//! 4. A dropped or panicking request never leaves its key claimed: a claim under way is
//!    finished and released, a held key is released, and a response being stored is stored
//!    (on a task of its own, for a networked store; with no tokio runtime to run that task on,
//!    the key is held until its lease ends).

mod client;
mod error;
mod fingerprint;
pub mod future;
mod identity;
mod layer;
mod service;
mod state;
mod store;

pub use self::client::{AddIdempotencyKey, AddIdempotencyKeyLayer};
pub use self::error::IdempotencyRejection;
pub use self::fingerprint::{Fingerprint, RecordKey};
pub use self::identity::{Anonymous, Identify, IdentityExtension, IdentityHeader};
pub use self::layer::{
    DEFAULT_BODY_LIMIT, DEFAULT_IN_FLIGHT_RETRY_AFTER, DEFAULT_LEASE, DEFAULT_RESPONSE_LIMIT,
    DEFAULT_RETENTION, IdempotencyLayer, InFlight, MAX_LEASE, MAX_RETENTION, MIN_LEASE,
    OversizedBody, StoreFailure, StorePolicy, stores_final_responses,
};
pub use self::service::Idempotency;
pub use self::store::{
    ClaimOutcome, Completion, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, FencingToken,
    IdempotencyStore, MemoryStore, StoreError, StoredResponse,
};
