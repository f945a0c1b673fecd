//! The state machine of one in-memory idempotency record, in one atomic word.
//!
//! ```text
//!                 claim: insert into the map
//!   (no record) ──────────────────────────────▶ CLAIMED(lease end)
//!                                                 │      │       │
//!              complete (holder) ◀────────────────┘      │       │ the lease has ended
//!                      │                  release        │       │ (any claimer, the sweep)
//!                      ▼                  (holder)       ▼       ▼
//!             COMPLETED(expiry)                      RELEASED   SUPERSEDED ◀─┐
//!                      │                                 │                    │
//!                      └── expired (any claimer, ───────┴── (any claimer, ───┘
//!                          the sweep)                         the sweep)
//! ```
//!
//! A record never comes back from SUPERSEDED: whoever moved it there owns its place in the
//! map and either puts a new CLAIMED record (a fresh fencing token) in it or removes it.
//!
//! # Encoding
//!
//! | bits | field |
//! | --- | --- |
//! | 63–62 | phase: 0 CLAIMED, 1 COMPLETED, 2 RELEASED, 3 SUPERSEDED |
//! | 61–0 | CLAIMED: when the lease ends; COMPLETED: when the record expires; else 0 (ticks of the store's epoch, saturating) |
//!
//! The fencing token and the fingerprint are fixed for the record's life, so they sit beside
//! the word, not in it: a new holder always gets a new record.
//!
//! # Transitions
//!
//! | from | event | guard | to | atomic op | ordering |
//! | --- | --- | --- | --- | --- | --- |
//! | – | claim | no live record | CLAIMED | map insert or replace | the map's |
//! | CLAIMED | complete | caller holds this record | COMPLETED | CAS | Release: publishes the response |
//! | CLAIMED | release | caller holds this record | RELEASED | CAS | Relaxed: publishes nothing |
//! | CLAIMED | take over | lease ended | SUPERSEDED | CAS | Acquire (see below) |
//! | COMPLETED | take over | expired | SUPERSEDED | CAS | Acquire: reads the response's size |
//! | RELEASED | take over | – | SUPERSEDED | CAS | Acquire |
//! | any | inspect | – | – | load | Acquire: pairs with complete's Release |
//!
//! # Invariants
//!
//! 1. Exactly one of a holder's complete or release and a taker's take-over succeeds on a
//!    CLAIMED record: all three are CASes from the same word.
//! 2. A late completion cannot overwrite a newer result: once a record is SUPERSEDED its
//!    holder's complete fails (the fencing token is the record), and a record whose lease
//!    ended is only superseded, never completed by its taker.
//! 3. Whoever reads COMPLETED sees the stored response: it is set before the Release CAS and
//!    read after an Acquire load of the word.
//! 4. A record is replaced or removed from the map only by the thread that superseded it.

use super::fingerprint::{Fingerprint, Owner};
use super::store::Completed;
use crate::sync::{AtomicU64, Ordering};

const PHASE_SHIFT: u32 = 62;
const UNTIL_MASK: u64 = (1 << PHASE_SHIFT) - 1;

/// The phase of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Claimed,
    Completed,
    Released,
    Superseded,
}

/// A decoded word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) phase: Phase,
    /// Lease end (CLAIMED) or expiry (COMPLETED), in ticks.
    pub(crate) until: u64,
}

impl Word {
    pub(crate) fn encode(self) -> u64 {
        let phase: u64 = match self.phase {
            Phase::Claimed => 0,
            Phase::Completed => 1,
            Phase::Released => 2,
            Phase::Superseded => 3,
        };
        (phase << PHASE_SHIFT) | self.until.min(UNTIL_MASK)
    }

    pub(crate) fn decode(word: u64) -> Self {
        let phase = match word >> PHASE_SHIFT {
            0 => Phase::Claimed,
            1 => Phase::Completed,
            2 => Phase::Released,
            _ => Phase::Superseded,
        };
        Self {
            phase,
            until: word & UNTIL_MASK,
        }
    }
}

/// What a request finds in a record with the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// Completed, same request: replay.
    Replay,
    /// Claimed by a live holder, same request, until this tick.
    InFlight { until: u64 },
    /// Live, but for another request.
    Mismatch,
    /// Released, or its lease or retention has ended: may be taken over.
    Dead,
    /// Another thread is replacing or removing it.
    Superseded,
}

/// The pure decision: what a record in `word` means to a request at `now`. A dead record is
/// dead whatever it was for: only a live one can be reused with another payload.
pub(crate) fn found(word: Word, same_request: bool, now: u64) -> Found {
    match word.phase {
        Phase::Superseded => Found::Superseded,
        Phase::Released => Found::Dead,
        Phase::Claimed | Phase::Completed if word.until <= now => Found::Dead,
        _ if !same_request => Found::Mismatch,
        Phase::Claimed => Found::InFlight { until: word.until },
        Phase::Completed => Found::Replay,
    }
}

/// One idempotency record of the in-memory store.
pub(crate) struct Record {
    token: u64,
    fingerprint: Fingerprint,
    /// Whose quota the record counts against (the same for every record of one key).
    owner: Option<Owner>,
    word: AtomicU64,
    /// Set once, by the holder, just before the CAS to COMPLETED.
    response: ResponseSlot,
}

/// Where the holder puts the response: a `OnceLock`. Under loom, a loom flag written `Relaxed`
/// beside it says whether it is set, and readers trust only the flag: then only the word's
/// Release/Acquire pair can make the response visible, so loom checks invariant 3 (the
/// `OnceLock`'s own synchronization, which loom cannot see, would hide a wrong ordering).
#[cfg(not(palisade_loom))]
type ResponseSlot = std::sync::OnceLock<Completed>;

#[cfg(palisade_loom)]
struct ResponseSlot {
    response: std::sync::OnceLock<Completed>,
    set: loom::sync::atomic::AtomicBool,
}

#[cfg(palisade_loom)]
impl ResponseSlot {
    fn new() -> Self {
        Self {
            response: std::sync::OnceLock::new(),
            set: loom::sync::atomic::AtomicBool::new(false),
        }
    }

    fn set(&self, response: Completed) -> Result<(), Completed> {
        self.response.set(response)?;
        self.set.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn get(&self) -> Option<&Completed> {
        if self.set.load(Ordering::Relaxed) {
            self.response.get()
        } else {
            None
        }
    }
}

impl Record {
    /// A record claimed with `token` until `lease_end`, counting against `owner`.
    pub(crate) fn claimed(
        token: u64,
        fingerprint: Fingerprint,
        owner: Option<Owner>,
        lease_end: u64,
    ) -> Self {
        Self {
            token,
            fingerprint,
            owner,
            word: AtomicU64::new(
                Word {
                    phase: Phase::Claimed,
                    until: lease_end,
                }
                .encode(),
            ),
            response: ResponseSlot::new(),
        }
    }

    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    pub(crate) fn owner(&self) -> Option<Owner> {
        self.owner
    }

    /// The current word. Acquire: a COMPLETED word carries its response (invariant 3).
    pub(crate) fn load(&self) -> u64 {
        self.word.load(Ordering::Acquire)
    }

    /// What a request with `fingerprint` finds here at `now`, and the word it decided on.
    pub(crate) fn inspect(&self, fingerprint: &Fingerprint, now: u64) -> (Found, u64) {
        let word = self.load();
        let found = found(Word::decode(word), *fingerprint == self.fingerprint, now);
        (found, word)
    }

    /// What the record answers with, once COMPLETED has been seen.
    pub(crate) fn response(&self) -> Option<&Completed> {
        self.response.get()
    }

    /// The holder stores `response` until `expires_at`. False if the record was superseded
    /// (its lease ended and another request took the key) or already finished.
    pub(crate) fn complete(&self, response: Completed, expires_at: u64) -> bool {
        if self.response.set(response).is_err() {
            return false;
        }
        let completed = Word {
            phase: Phase::Completed,
            until: expires_at,
        }
        .encode();
        self.transition_from_claimed(completed, Ordering::Release)
    }

    /// The holder gives the key up. False if the record was superseded or already finished.
    pub(crate) fn release(&self) -> bool {
        let released = Word {
            phase: Phase::Released,
            until: 0,
        }
        .encode();
        // Relaxed: RELEASED publishes nothing; a taker needs nothing from the holder.
        self.transition_from_claimed(released, Ordering::Relaxed)
    }

    /// CAS from whatever CLAIMED word is current (the lease end does not matter to the holder:
    /// only a take-over can stop it) to `to`.
    fn transition_from_claimed(&self, to: u64, success: Ordering) -> bool {
        // Relaxed: the holder's own claim is the only thing it needs, and a failed CAS re-reads.
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            if Word::decode(current).phase != Phase::Claimed {
                return false;
            }
            match self
                .word
                .compare_exchange_weak(current, to, success, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Takes over a dead record seen as `observed`. On success the caller owns the record's
    /// place in the map; it gets the size of the response the record held, to free.
    pub(crate) fn supersede(&self, observed: u64) -> Result<usize, u64> {
        if Word::decode(observed).phase == Phase::Superseded {
            // Already another thread's: superseding it again would make two owners.
            return Err(observed);
        }
        let superseded = Word {
            phase: Phase::Superseded,
            until: 0,
        }
        .encode();
        // Acquire (both ways): a COMPLETED word's response size is read after success, and a
        // failure hands back a word the caller decides on again, perhaps replaying it.
        self.word
            .compare_exchange(observed, superseded, Ordering::Acquire, Ordering::Acquire)
            .map(|_| {
                if Word::decode(observed).phase == Phase::Completed {
                    self.response.get().map_or(0, Completed::size)
                } else {
                    0
                }
            })
    }

    /// The word to supersede this record with, if it is dead at `now` (for the sweep). A claim
    /// whose lease has ended counts only with `claims_too`: its holder may still be running
    /// and complete.
    pub(crate) fn dead_at(&self, now: u64, claims_too: bool) -> Option<u64> {
        let word = self.load();
        let decoded = Word::decode(word);
        let dead = found(decoded, true, now) == Found::Dead
            && (claims_too || decoded.phase != Phase::Claimed);
        dead.then_some(word)
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use std::sync::Arc;

    use http::Method;

    use super::*;
    use crate::idempotency::store::StoredResponse;

    fn fp(body: &[u8]) -> Fingerprint {
        Fingerprint::new(&Method::POST, "/", None, body)
    }

    fn response() -> Completed {
        Completed::Response(Arc::new(StoredResponse::new(
            http::StatusCode::CREATED,
            http::HeaderMap::new(),
            bytes::Bytes::from_static(b"done"),
            None,
        )))
    }

    #[test]
    fn the_word_round_trips_and_saturates_time() {
        for phase in [
            Phase::Claimed,
            Phase::Completed,
            Phase::Released,
            Phase::Superseded,
        ] {
            let word = Word {
                phase,
                until: 12_345,
            };
            assert_eq!(Word::decode(word.encode()), word);
        }
        let far = Word {
            phase: Phase::Completed,
            until: u64::MAX,
        };
        assert_eq!(Word::decode(far.encode()).phase, Phase::Completed);
        assert_eq!(Word::decode(far.encode()).until, UNTIL_MASK);
    }

    /// One test per row of the decision: phase × time × same request.
    #[test]
    fn found_follows_the_table() {
        let claimed = |until| Word {
            phase: Phase::Claimed,
            until,
        };
        let completed = |until| Word {
            phase: Phase::Completed,
            until,
        };
        assert_eq!(found(claimed(10), true, 9), Found::InFlight { until: 10 });
        assert_eq!(
            found(claimed(10), true, 10),
            Found::Dead,
            "the lease ends at 10"
        );
        assert_eq!(found(claimed(10), false, 9), Found::Mismatch);
        assert_eq!(found(claimed(10), false, 10), Found::Dead);
        assert_eq!(found(completed(10), true, 9), Found::Replay);
        assert_eq!(found(completed(10), true, 10), Found::Dead, "expired at 10");
        assert_eq!(found(completed(10), false, 9), Found::Mismatch);
        let released = Word {
            phase: Phase::Released,
            until: 0,
        };
        assert_eq!(found(released, false, 0), Found::Dead);
        let superseded = Word {
            phase: Phase::Superseded,
            until: 0,
        };
        assert_eq!(found(superseded, true, 0), Found::Superseded);
    }

    #[test]
    fn the_holder_completes_once_and_the_response_is_visible() {
        let record = Record::claimed(1, fp(b"a"), None, 100);
        assert!(record.complete(response(), 1_000));
        assert_eq!(record.inspect(&fp(b"a"), 50).0, Found::Replay);
        assert!(matches!(record.response(), Some(Completed::Response(r)) if r.body() == "done"));
        assert!(!record.complete(response(), 2_000), "only once");
        assert!(!record.release(), "a completed record is not released");
    }

    #[test]
    fn a_taken_over_record_refuses_its_holder() {
        let record = Record::claimed(1, fp(b"a"), None, 100);
        let (found, word) = record.inspect(&fp(b"a"), 100);
        assert_eq!(found, Found::Dead);
        assert_eq!(record.supersede(word), Ok(0));
        assert!(
            !record.complete(response(), 1_000),
            "the stale token is refused"
        );
        assert!(!record.release());
        assert_eq!(record.inspect(&fp(b"a"), 0).0, Found::Superseded);
    }

    #[test]
    fn superseding_needs_the_word_that_was_seen() {
        let record = Record::claimed(1, fp(b"a"), None, 100);
        let (_, word) = record.inspect(&fp(b"a"), 200);
        assert!(
            record.complete(response(), 1_000),
            "the holder got there first"
        );
        assert!(record.supersede(word).is_err());
        assert_eq!(record.inspect(&fp(b"a"), 200).0, Found::Replay);
        // Expired: superseding it frees its response's size.
        let (found, word) = record.inspect(&fp(b"a"), 1_000);
        assert_eq!(found, Found::Dead);
        assert_eq!(record.supersede(word), Ok(response().size()));
    }

    #[test]
    fn a_superseded_record_has_one_owner() {
        let record = Record::claimed(1, fp(b"a"), None, 100);
        let (_, word) = record.inspect(&fp(b"a"), 100);
        assert!(record.supersede(word).is_ok());
        let (found, again) = record.inspect(&fp(b"a"), 100);
        assert_eq!(found, Found::Superseded);
        assert!(
            record.supersede(again).is_err(),
            "found by loom: a second owner"
        );
    }

    #[test]
    fn a_released_record_is_dead_for_any_request() {
        let record = Record::claimed(7, fp(b"a"), None, 100);
        assert!(record.release());
        assert_eq!(record.inspect(&fp(b"other"), 0).0, Found::Dead);
        assert!(record.dead_at(0, false).is_some());
        let hung = Record::claimed(8, fp(b"a"), None, 100);
        assert_eq!(
            hung.dead_at(100, false),
            None,
            "a hung holder may still complete"
        );
        assert!(hung.dead_at(100, true).is_some());
        assert_eq!(record.token(), 7);
    }
}
