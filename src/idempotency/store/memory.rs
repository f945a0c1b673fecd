//! [`MemoryStore`]: idempotency records in this process, bounded, with lock-free replays.

use std::fmt;
use std::future::{Ready, ready};
use std::hash::RandomState;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use scc::HashIndex;

use super::{
    Claim, ClaimOutcome, Completed, Completion, FencingToken, IdempotencyStore, StoreError,
};
use crate::clock::{Clock, Epoch};
use crate::idempotency::fingerprint::{Fingerprint, Owner, RecordKey};
use crate::idempotency::state::{Found, Record};

/// Records the in-memory store holds at most by default: 100 000.
pub const DEFAULT_MAX_ENTRIES: NonZeroUsize = NonZeroUsize::new(100_000).unwrap();
/// Bytes of stored responses the in-memory store holds at most by default: 64 MiB.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Records one identified caller may hold at most by default: 1000, a hundredth of the default
/// store, so a caller flooding it with keys cannot refuse everyone else.
pub const DEFAULT_MAX_PER_OWNER: NonZeroUsize = NonZeroUsize::new(1000).unwrap();

/// How often the store looks for dead records on its own.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How soon a full store may look again.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How many times a claim looks again at a record another request is replacing (a few map
/// operations away) before it answers "in flight".
const SUPERSEDED_RETRIES: u32 = 16;

/// The default store: records in a lock-free hash index in this process.
///
/// - **Bounded.** At most [`max_entries`](MemoryStoreBuilder::max_entries) records and
///   [`max_bytes`](MemoryStoreBuilder::max_bytes) of stored responses, and at most
///   [`max_per_owner`](MemoryStoreBuilder::max_per_owner) records for one identified caller.
///   Dead records go first: every minute a sweep (on tokio's blocking pool, off the request path) drops
///   released and expired records; when the store is full, at most once a second (on its own
///   schedule), a sweep on the request that needs room also drops claims whose lease has
///   ended (their holders' completions are then refused). A store full of live records refuses
///   new keys ([`ClaimOutcome::Full`], 503), and so does one whose bytes could not hold the
///   claim's room (the layer asks for its response limit), rather than evict one: evicting a
///   live record would let a retried request run twice. A caller at its quota gets
///   [`ClaimOutcome::QuotaExceeded`] (429); other callers are unaffected.
/// - **Lock-free where it counts.** A replay or an in-flight check is a lock-free read of the
///   index and of the record's atomic word; claims of new keys and completions take the index's
///   bucket lock for the insert or replacement only. Each record's life (claimed, completed,
///   released, superseded) is a state machine in one atomic word.
/// - **Hashed keys.** Records are keyed by [`RecordKey`] digests, hashed again with a random
///   seed, so clients cannot aim keys at one bucket.
///
/// Clones share the records. Use one store per layer (the layer's default), or share a clone
/// between layers that must see each other's keys.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    map: HashIndex<RecordKey, Arc<Record>, RandomState>,
    /// Records in the map per identified owner (absent: none).
    owners: scc::HashMap<Owner, usize, RandomState>,
    clock: Clock,
    epoch: Epoch,
    max_entries: usize,
    max_bytes: usize,
    max_per_owner: usize,
    /// Records in the map (the index's own count is not O(1)).
    entries: AtomicUsize,
    /// Sizes of the stored responses of COMPLETED records.
    bytes: AtomicUsize,
    next_token: AtomicU64,
    /// Ticks of the last periodic sweep (released and expired records).
    last_sweep: AtomicU64,
    /// Ticks of the last sweep of a full store (lease-expired claims too): a schedule of its
    /// own, so a periodic sweep never delays it.
    last_full_sweep: AtomicU64,
}

/// Configures a [`MemoryStore`] (from [`MemoryStore::builder`]); finish with
/// [`build`](Self::build). Every bound is a type that holds only meaningful values, so building
/// cannot fail.
///
/// ```
/// use std::num::NonZeroUsize;
/// use palisade::idempotency::MemoryStore;
///
/// let store = MemoryStore::builder()
///     .max_entries(NonZeroUsize::new(10_000).unwrap())
///     .max_bytes(16 * 1024 * 1024)
///     .max_per_owner(NonZeroUsize::new(100).unwrap())
///     .build();
/// assert!(store.is_empty());
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct MemoryStoreBuilder {
    max_entries: NonZeroUsize,
    max_bytes: usize,
    max_per_owner: NonZeroUsize,
    clock: Clock,
}

impl MemoryStoreBuilder {
    /// Holds at most `max` records. Default: [`DEFAULT_MAX_ENTRIES`] (100 000).
    pub fn max_entries(mut self, max: NonZeroUsize) -> Self {
        self.max_entries = max;
        self
    }

    /// Holds at most `max` bytes of stored responses, as
    /// [`StoredResponse::size`](super::StoredResponse::size) counts them (0 keeps records of
    /// what ran, never a response). Default: [`DEFAULT_MAX_BYTES`] (64 MiB).
    pub fn max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max;
        self
    }

    /// Holds at most `max` records for one identified caller (the layer's
    /// [`identity`](crate::idempotency::IdempotencyBuilder::identity)); anonymous callers share
    /// only the store's own bound. Default: [`DEFAULT_MAX_PER_OWNER`] (1000).
    pub fn max_per_owner(mut self, max: NonZeroUsize) -> Self {
        self.max_per_owner = max;
        self
    }

    /// The clock leases and retention follow. Defaults to tokio's (which paused-time tests
    /// control); a [`ManualClock`](crate::clock::ManualClock) drives it by hand.
    pub fn clock(mut self, clock: impl Into<Clock>) -> Self {
        self.clock = clock.into();
        self
    }

    /// Builds the store, empty.
    #[must_use]
    pub fn build(self) -> MemoryStore {
        let epoch = Epoch::new(self.clock.now());
        MemoryStore {
            shared: Arc::new(Shared {
                map: HashIndex::with_hasher(RandomState::new()),
                owners: scc::HashMap::with_hasher(RandomState::new()),
                clock: self.clock,
                epoch,
                max_entries: self.max_entries.get(),
                max_bytes: self.max_bytes,
                max_per_owner: self.max_per_owner.get(),
                entries: AtomicUsize::new(0),
                bytes: AtomicUsize::new(0),
                next_token: AtomicU64::new(1),
                last_sweep: AtomicU64::new(0),
                last_full_sweep: AtomicU64::new(0),
            }),
        }
    }
}

impl MemoryStore {
    /// A store of at most [`DEFAULT_MAX_ENTRIES`] records, [`DEFAULT_MAX_BYTES`] of responses
    /// and [`DEFAULT_MAX_PER_OWNER`] records per identified caller, on tokio's clock.
    #[must_use]
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configures a store: its bounds and its clock; see [`MemoryStoreBuilder`].
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_per_owner: DEFAULT_MAX_PER_OWNER,
            clock: Clock::default(),
        }
    }

    /// Records held now, dead ones not yet swept included.
    #[must_use]
    pub fn len(&self) -> usize {
        // Relaxed: a gauge.
        self.shared.entries.load(Ordering::Relaxed)
    }

    /// Whether the store holds no record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of stored responses held now.
    #[must_use]
    pub fn bytes(&self) -> usize {
        // Relaxed: a gauge.
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Drops every dead record now, claims whose lease has ended included (the store also
    /// sweeps on its own).
    pub fn sweep(&self) {
        let shared = &*self.shared;
        shared.sweep(shared.now(), true);
    }

    /// The periodic sweep of released and expired records, on tokio's blocking pool when there
    /// is a runtime: it walks the whole index.
    fn sweep_in_background(&self, now: u64) {
        let shared = Arc::clone(&self.shared);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || shared.sweep(now, false));
            }
            Err(_) => shared.sweep(now, false),
        }
    }

    /// The claim, done at once.
    fn claim_now(&self, claim: Claim) -> ClaimOutcome {
        let shared = &*self.shared;
        let (key, fingerprint) = (claim.key(), claim.fingerprint());
        let now = shared.now();
        if shared.sweep_due(&shared.last_sweep, now, SWEEP_EVERY) {
            self.sweep_in_background(now);
        }
        let lease_end = now.saturating_add(Epoch::ticks_of(claim.lease()));
        let mut superseded_seen = 0;
        loop {
            // Lock-free: the index's read path and the record's word.
            let Some(record) = shared.map.peek_with(&key, |_, record| Arc::clone(record)) else {
                if let Some(refused) = shared.refuse_new_key(&claim, now) {
                    return refused;
                }
                if !shared.count_owner(claim.owner()) {
                    return ClaimOutcome::QuotaExceeded;
                }
                let (token, record) = shared.new_record(fingerprint, claim.owner(), lease_end);
                match shared.map.insert_sync(key, record) {
                    Ok(()) => {
                        // Relaxed: a gauge against the bound; two claims racing past the
                        // check can overshoot it by one each.
                        shared.entries.fetch_add(1, Ordering::Relaxed);
                        return ClaimOutcome::Claimed(token);
                    }
                    // Another request inserted first: look at its record.
                    Err(_) => {
                        shared.uncount_owner(claim.owner());
                        continue;
                    }
                }
            };
            let (found, word) = record.inspect(&fingerprint, now);
            match found {
                Found::Replay => {
                    return match record.response() {
                        Some(completed) => ClaimOutcome::Completed(completed.clone()),
                        // Unreachable (invariant 3): a COMPLETED word carries its response.
                        None => ClaimOutcome::InFlight {
                            lease_left: Duration::ZERO,
                        },
                    };
                }
                Found::InFlight { until } => {
                    return ClaimOutcome::InFlight {
                        lease_left: Epoch::duration_of(until.saturating_sub(now)),
                    };
                }
                Found::Mismatch => return ClaimOutcome::Mismatch,
                Found::Dead => {
                    // A dead record's place is a new key's: it needs the same room.
                    if let Some(refused) = shared.refuse_room(&claim, now) {
                        return refused;
                    }
                    let Ok(freed) = record.supersede(word) else {
                        // It changed under us (completed, released, taken): look again.
                        continue;
                    };
                    shared.free(freed);
                    let (token, replacement) =
                        shared.new_record(fingerprint, claim.owner(), lease_end);
                    if shared.replace(key, &record, replacement) {
                        return ClaimOutcome::Claimed(token);
                    }
                    // Another record holds the place (see `replace`): look at it.
                }
                Found::Superseded => {
                    // Another request (or the sweep) owns this record's place and is about to
                    // replace or remove it: a matter of a bucket lock. Look a few more times,
                    // then answer as for a key in flight (a 409 the client retries).
                    superseded_seen += 1;
                    if superseded_seen > SUPERSEDED_RETRIES {
                        return ClaimOutcome::InFlight {
                            lease_left: Duration::ZERO,
                        };
                    }
                    std::hint::spin_loop();
                }
            }
        }
    }

    fn complete_now(
        &self,
        key: RecordKey,
        token: FencingToken,
        completed: Completed,
        retain_for: Duration,
    ) -> Completion {
        let shared = &*self.shared;
        let Some(record) = shared.held(&key, token) else {
            return Completion::Superseded;
        };
        let now = shared.now();
        let size = completed.size();
        // A result not kept takes no bytes: it always fits.
        if size > 0 && !shared.reserve(size, now) {
            return Completion::Full;
        }
        let expires_at = now.saturating_add(Epoch::ticks_of(retain_for));
        if record.complete(completed, expires_at) {
            Completion::Stored
        } else {
            shared.free(size);
            Completion::Superseded
        }
    }

    fn release_now(&self, key: RecordKey, token: FencingToken) {
        let shared = &*self.shared;
        let Some(record) = shared.held(&key, token) else {
            return;
        };
        if record.release() {
            // Free the place at once if no claim has taken the record over yet.
            if let Some(word) = record.dead_at(0, false) {
                if record.supersede(word).is_ok() {
                    shared.remove(&key, &record);
                }
            }
        }
    }
}

impl Shared {
    fn now(&self) -> u64 {
        self.epoch.ticks(self.clock.now())
    }

    fn new_record(
        &self,
        fingerprint: Fingerprint,
        owner: Option<Owner>,
        lease_end: u64,
    ) -> (FencingToken, Arc<Record>) {
        // Relaxed: uniqueness is all a token needs, and every RMW sees the latest value.
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        (
            FencingToken::new(token),
            Arc::new(Record::claimed(token, fingerprint, owner, lease_end)),
        )
    }

    /// Why a new key cannot be let in, if it cannot: no room for another record, or for the
    /// claim's response.
    fn refuse_new_key(&self, claim: &Claim, now: u64) -> Option<ClaimOutcome> {
        if !self.has_room_for_a_record(now) {
            return Some(ClaimOutcome::Full);
        }
        self.refuse_room(claim, now)
    }

    /// `Full` if the stored bytes could not take the claim's room, even after a sweep.
    fn refuse_room(&self, claim: &Claim, now: u64) -> Option<ClaimOutcome> {
        let fits = |store: &Self| {
            // Relaxed: a gauge against the bound.
            store
                .bytes
                .load(Ordering::Relaxed)
                .saturating_add(claim.room())
                <= store.max_bytes
        };
        if claim.room() == 0 || fits(self) {
            return None;
        }
        if self.sweep_due(&self.last_full_sweep, now, FULL_SWEEP_EVERY) {
            self.sweep(now, true);
        }
        (!fits(self)).then_some(ClaimOutcome::Full)
    }

    /// Counts one more record for `owner`, unless it holds its quota. Anonymous claims
    /// always count.
    fn count_owner(&self, owner: Option<Owner>) -> bool {
        let Some(owner) = owner else {
            return true;
        };
        match self.owners.entry_sync(owner) {
            scc::hash_map::Entry::Occupied(mut occupied) => {
                if *occupied.get() >= self.max_per_owner {
                    return false;
                }
                *occupied.get_mut() += 1;
                true
            }
            scc::hash_map::Entry::Vacant(vacant) => {
                vacant.insert_entry(1);
                true
            }
        }
    }

    /// Counts one record fewer for `owner`.
    fn uncount_owner(&self, owner: Option<Owner>) {
        let Some(owner) = owner else {
            return;
        };
        if let scc::hash_map::Entry::Occupied(mut occupied) = self.owners.entry_sync(owner) {
            if *occupied.get() <= 1 {
                let _ = occupied.remove();
            } else {
                *occupied.get_mut() -= 1;
            }
        }
    }

    /// The record of `key` if `token` holds it.
    fn held(&self, key: &RecordKey, token: FencingToken) -> Option<Arc<Record>> {
        self.map
            .peek_with(key, |_, record| Arc::clone(record))
            .filter(|record| record.token() == token.get())
    }

    fn has_room_for_a_record(&self, now: u64) -> bool {
        // Relaxed: a gauge against the bound.
        if self.entries.load(Ordering::Relaxed) < self.max_entries {
            return true;
        }
        if self.sweep_due(&self.last_full_sweep, now, FULL_SWEEP_EVERY) {
            self.sweep(now, true);
        }
        self.entries.load(Ordering::Relaxed) < self.max_entries
    }

    /// Counts `size` more stored bytes, if they fit (sweeping once if they do not).
    fn reserve(&self, size: usize, now: u64) -> bool {
        if self.try_reserve(size) {
            return true;
        }
        if !self.sweep_due(&self.last_full_sweep, now, FULL_SWEEP_EVERY) {
            return false;
        }
        self.sweep(now, true);
        self.try_reserve(size)
    }

    fn try_reserve(&self, size: usize) -> bool {
        // Relaxed: a gauge against the bound; the RMW keeps concurrent reservations exact.
        let before = self.bytes.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) <= self.max_bytes {
            return true;
        }
        self.free(size);
        false
    }

    fn free(&self, size: usize) {
        if size > 0 {
            // Relaxed: a gauge.
            self.bytes.fetch_sub(size, Ordering::Relaxed);
        }
    }

    /// Puts `replacement` where `old` (superseded by this thread) was.
    ///
    /// Only the thread that superseded a record replaces or removes it (invariant 4 of the
    /// record), so `old` is always still in place. The other two cases are handled rather than
    /// assumed away: a place found empty is taken, and a place holding another record is left
    /// to it (false: the caller looks again).
    fn replace(&self, key: RecordKey, old: &Arc<Record>, replacement: Arc<Record>) -> bool {
        match self.map.entry_sync(key) {
            scc::hash_index::Entry::Occupied(mut occupied) => {
                if !Arc::ptr_eq(occupied.get(), old) {
                    return false;
                }
                occupied.update(replacement);
                true
            }
            scc::hash_index::Entry::Vacant(vacant) => {
                // The place is a new record's after all: it counts as one (against its owner
                // too, past the quota if need be: the claim has already been decided).
                let owner = replacement.owner();
                vacant.insert_entry(replacement);
                // Relaxed: a gauge.
                self.entries.fetch_add(1, Ordering::Relaxed);
                if !self.count_owner(owner) {
                    if let Some(owner) = owner {
                        self.owners.upsert_sync(owner, self.max_per_owner + 1);
                    }
                }
                true
            }
        }
    }

    /// Removes `record` (superseded by this thread) from the map, if it is still there.
    fn remove(&self, key: &RecordKey, record: &Arc<Record>) {
        if self
            .map
            .remove_if_sync(key, |current| Arc::ptr_eq(current, record))
        {
            // Relaxed: a gauge.
            self.entries.fetch_sub(1, Ordering::Relaxed);
            self.uncount_owner(record.owner());
        }
    }

    /// Whether the last sweep on the schedule `stamp` was at least `every` ago; if so, this
    /// caller is elected to sweep (the stamp moves to `now`, so no other caller is).
    fn sweep_due(&self, stamp: &AtomicU64, now: u64, every: Duration) -> bool {
        // Relaxed: the stamp only spaces sweeps out; the CAS elects one sweeper.
        let last = stamp.load(Ordering::Relaxed);
        now >= last.saturating_add(Epoch::ticks_of(every))
            && stamp
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Supersedes and removes every record dead at `now`; claims whose lease has ended only
    /// with `claims_too`.
    fn sweep(&self, now: u64, claims_too: bool) {
        let mut dead = Vec::new();
        self.map.iter_sync(|key, record| {
            if let Some(word) = record.dead_at(now, claims_too) {
                dead.push((*key, Arc::clone(record), word));
            }
            true
        });
        let found = dead.len();
        for (key, record, word) in dead {
            if let Ok(freed) = record.supersede(word) {
                self.free(freed);
                self.remove(&key, &record);
            }
        }
        tracing::trace!(found, claims_too, "idempotency store swept");
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.len())
            .field("max_entries", &self.shared.max_entries)
            .field("bytes", &self.bytes())
            .field("max_bytes", &self.shared.max_bytes)
            .field("max_per_owner", &self.shared.max_per_owner)
            .finish()
    }
}

impl IdempotencyStore for MemoryStore {
    type ClaimFuture = Ready<Result<ClaimOutcome, StoreError>>;
    type CompleteFuture = Ready<Result<Completion, StoreError>>;
    type ReleaseFuture = Ready<Result<(), StoreError>>;

    fn claim(&self, claim: Claim) -> Self::ClaimFuture {
        ready(Ok(self.claim_now(claim)))
    }

    fn complete(
        &self,
        key: RecordKey,
        token: FencingToken,
        completed: Completed,
        retain_for: Duration,
    ) -> Self::CompleteFuture {
        ready(Ok(self.complete_now(key, token, completed, retain_for)))
    }

    fn release(&self, key: RecordKey, token: FencingToken) -> Self::ReleaseFuture {
        self.release_now(key, token);
        ready(Ok(()))
    }
}
