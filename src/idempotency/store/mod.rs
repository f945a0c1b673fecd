//! Where idempotency records live: the [`IdempotencyStore`] trait and the in-memory store.

mod memory;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

pub use self::memory::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_PER_OWNER, MemoryStore, MemoryStoreBuilder,
};
use super::fingerprint::{Fingerprint, Owner, RecordKey};
use crate::error::BoxError;

/// A response kept for replay: status, headers (without the hop-by-hop ones), the whole body
/// and its trailers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl StoredResponse {
    /// A response to keep.
    #[must_use]
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        trailers: Option<HeaderMap>,
    ) -> Self {
        Self {
            status,
            headers,
            body,
            trailers,
        }
    }

    /// The status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    #[must_use]
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    #[must_use]
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The trailers, if the body had any.
    #[must_use]
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_ref()
    }

    /// About how many bytes it takes in memory: the body, every header name and value (plus
    /// 32 bytes of bookkeeping each) and 128 bytes for the rest. What the in-memory store's
    /// byte bound counts.
    #[must_use]
    pub fn size(&self) -> usize {
        fn headers_size(headers: &HeaderMap) -> usize {
            headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 32)
                .sum()
        }
        128 + self.body.len()
            + headers_size(&self.headers)
            + self.trailers.as_ref().map_or(0, headers_size)
    }
}

/// What a completed record answers a duplicate with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Completed {
    /// The response, replayed byte for byte.
    Response(Arc<StoredResponse>),
    /// The request ran, but its response was not kept: it was over the layer's response limit,
    /// or the store had no room for it. A duplicate is told so (`409`, type
    /// `urn:palisade:idempotency-result-not-kept`) and the request never runs again.
    NotKept {
        /// The status the request was answered with.
        status: StatusCode,
    },
}

impl Completed {
    /// The status the request was answered with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Response(response) => response.status(),
            Self::NotKept { status } => *status,
        }
    }

    /// Bytes it takes against a store's byte bound: the response's [size](StoredResponse::size),
    /// or nothing for a record of a result not kept (only the entry counts).
    #[must_use]
    pub fn size(&self) -> usize {
        match self {
            Self::Response(response) => response.size(),
            Self::NotKept { .. } => 0,
        }
    }
}

/// One request to claim a key: the record, the request's fingerprint, the lease, and what a
/// store checks before it lets a new key in: the caller it counts against (the key's
/// [owner](RecordKey::owner)) and the room its response may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    key: RecordKey,
    fingerprint: Fingerprint,
    lease: Duration,
    room: usize,
}

impl Claim {
    /// A claim of `key` for a request with `fingerprint`, for `lease`, counted against the
    /// key's owner's quota (if it has an owner) and needing no room.
    #[must_use]
    pub fn new(key: RecordKey, fingerprint: Fingerprint, lease: Duration) -> Self {
        Self {
            key,
            fingerprint,
            lease,
            room: 0,
        }
    }

    /// Refuses a new key unless `bytes` more could be stored: the most its response may take
    /// (the layer's response limit), so a response that ran is never left without room.
    #[must_use]
    pub fn with_room_for(mut self, bytes: usize) -> Self {
        self.room = bytes;
        self
    }

    /// The record.
    #[must_use]
    pub fn key(&self) -> RecordKey {
        self.key
    }

    /// The request's fingerprint.
    #[must_use]
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// How long the claim holds the key.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Whose quota a new record counts against, if anyone's.
    #[must_use]
    pub fn owner(&self) -> Option<Owner> {
        self.key.owner()
    }

    /// The room a new key needs for its response, in bytes.
    #[must_use]
    pub fn room(&self) -> usize {
        self.room
    }
}

/// Identifies one claim on a record. A store gives each claim a token greater than any it gave
/// before for the same record, and accepts a completion or release only with the token of the
/// claim that currently holds the record: a holder whose lease ended and whose key was taken
/// over cannot overwrite the newer result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// A token from its number (for stores).
    #[must_use]
    pub fn new(token: u64) -> Self {
        Self(token)
    }

    /// The token's number.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

/// What a claim found.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ClaimOutcome {
    /// The key was free (never used, released, or expired): the caller holds it now and runs
    /// the request.
    Claimed(FencingToken),
    /// Another request with this key and the same fingerprint is running; its lease has this
    /// long left.
    InFlight {
        /// Time left on the holder's lease.
        lease_left: Duration,
    },
    /// The request already completed: answer with this.
    Completed(Completed),
    /// The key is held or completed for a request with another fingerprint.
    Mismatch,
    /// The store is at its bound (records, or bytes for the claim's room) and holds no record
    /// it may drop: no new key can be claimed.
    Full,
    /// The claim's owner holds as many records as the store allows one caller: no new key of
    /// theirs can be claimed until some expire (other callers are unaffected).
    QuotaExceeded,
}

/// What a completion did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Completion {
    /// The response is stored: duplicates will replay it.
    Stored,
    /// The claim was no longer the holder's (its lease ended and the key was taken over, or
    /// the record is gone): nothing was written.
    Superseded,
    /// The store has no room for the response: nothing was written and the claim is still
    /// held. The request has run, so the caller must not release it: it completes it with
    /// [`Completed::NotKept`], which needs no room.
    Full,
}

/// A store that failed to answer (a Redis that is down or slow). The layer answers 503 (or, if
/// configured to fail open, runs the request unprotected).
#[derive(Debug, thiserror::Error)]
#[error("the idempotency store failed")]
pub struct StoreError {
    #[source]
    source: BoxError,
}

impl StoreError {
    /// Wraps the store's own error.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

/// Keeps idempotency records: claims keys atomically, stores completed responses, releases
/// claims.
///
/// Each operation is one call, so a networked store (Redis) makes one round trip per claim and
/// one per completion: a claim must check and take the key in one atomic step (a Lua script,
/// a conditional put). The in-memory [`MemoryStore`] answers at once.
///
/// Stores read their own clock: a claim is live until `lease` after the store's now, a stored
/// response until `retain_for` after it.
///
/// The futures are `Unpin` and `'static` (a boxed future is both): when a request is dropped
/// with a claim or completion under way, the layer hands the operation to a task to finish,
/// so a key is neither left claimed nor released under a completion.
pub trait IdempotencyStore: Clone + Send + Sync + 'static {
    /// The future of [`claim`](Self::claim).
    type ClaimFuture: Future<Output = Result<ClaimOutcome, StoreError>> + Send + Unpin + 'static;
    /// The future of [`complete`](Self::complete).
    type CompleteFuture: Future<Output = Result<Completion, StoreError>> + Send + Unpin + 'static;
    /// The future of [`release`](Self::release).
    type ReleaseFuture: Future<Output = Result<(), StoreError>> + Send + Unpin + 'static;

    /// Claims the key of `claim` for its request and lease, unless it is held or completed:
    /// then says what holds it. A record whose lease or retention has ended, or that was
    /// released, counts as free. A *new* key is refused when the store cannot hold one more
    /// record, or the claim's room in bytes ([`ClaimOutcome::Full`]), or when the claim's owner
    /// holds its quota ([`ClaimOutcome::QuotaExceeded`]).
    fn claim(&self, claim: Claim) -> Self::ClaimFuture;

    /// Stores `completed` for `key`, kept for `retain_for`, if `token` still holds it.
    fn complete(
        &self,
        key: RecordKey,
        token: FencingToken,
        completed: Completed,
        retain_for: Duration,
    ) -> Self::CompleteFuture;

    /// Gives `key` up, if `token` still holds it, so the next request with the key runs.
    fn release(&self, key: RecordKey, token: FencingToken) -> Self::ReleaseFuture;
}
