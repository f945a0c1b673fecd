//! The in-memory idempotency store against a plain model (proptest): any sequence of claims,
//! completions, releases, sweeps and clock moves gives the answers the model gives.
//!
//! The model's rules: a claim finds a key free if it has no record, or its record's lease or
//! retention has ended; a holder may complete or release as long as its claim is the record's
//! (even past its lease); the store's own sweep (a minute after the last) drops records whose
//! retention has ended, and a manual sweep also claims whose lease has ended.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use palisade::clock::ManualClock;
use palisade::idempotency::{
    Claim, ClaimOutcome, Completed, Completion, FencingToken, Fingerprint, IdempotencyStore,
    MemoryStore, RecordKey, StoredResponse,
};
use proptest::prelude::*;

const LEASE: Duration = Duration::from_secs(1);
const RETENTION: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
enum Op {
    Claim { key: u8, request: u8 },
    Complete { claim: usize },
    Release { claim: usize },
    Advance { ms: u64 },
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 0u8..2).prop_map(|(key, request)| Op::Claim { key, request }),
        3 => (0usize..8).prop_map(|claim| Op::Complete { claim }),
        2 => (0usize..8).prop_map(|claim| Op::Release { claim }),
        3 => (0u64..1500).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Sweep),
    ]
}

/// The model's record of one key.
#[derive(Clone, Debug)]
enum Model {
    Claimed {
        claim: usize,
        request: u8,
        lease_end: u64,
    },
    Completed {
        request: u8,
        body: String,
        expires: u64,
    },
}

/// What the model expects a claim to find.
#[derive(Debug, PartialEq)]
enum Expected {
    Claimed,
    InFlight(Duration),
    Completed(String),
    Mismatch,
}

fn record_key(key: u8) -> RecordKey {
    RecordKey::new(None, &Method::POST, "", "/", &key.to_string())
}

fn fingerprint(request: u8) -> Fingerprint {
    Fingerprint::new(&Method::POST, "/", None, &[request])
}

fn now_or_ready<T>(future: impl std::future::Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => panic!("the in-memory store answers at once"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_memory_store_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let clock = ManualClock::new();
        let store = MemoryStore::builder().clock(clock.clone())
.build();
        let mut model: HashMap<u8, Model> = HashMap::new();
        // Every claim handed out: its key and the store's token.
        let mut claims: Vec<(u8, FencingToken)> = Vec::new();
        let mut now_ms = 0u64;
        let mut bodies = 0u32;
        // The store sweeps on its own, on a claim, a minute after its last sweep.
        let mut last_sweep_ms = 0u64;
        // The periodic sweep leaves claims alone (their holders may still complete); a manual
        // one drops them too once their lease has ended.
        let sweep = |model: &mut HashMap<u8, Model>, now_ms: u64, claims_too: bool| {
            model.retain(|_, record| match record {
                Model::Claimed { lease_end, .. } => !claims_too || *lease_end > now_ms,
                Model::Completed { expires, .. } => *expires > now_ms,
            });
        };

        for op in ops {
            match op {
                Op::Claim { key, request } => {
                    if now_ms >= last_sweep_ms + 60_000 {
                        last_sweep_ms = now_ms;
                        sweep(&mut model, now_ms, false);
                    }
                    let dead = match model.get(&key) {
                        None => true,
                        Some(Model::Claimed { lease_end, .. }) => *lease_end <= now_ms,
                        Some(Model::Completed { expires, .. }) => *expires <= now_ms,
                    };
                    let expected = if dead {
                        Expected::Claimed
                    } else {
                        match &model[&key] {
                            Model::Claimed { request: r, .. } | Model::Completed { request: r, .. }
                                if *r != request => Expected::Mismatch,
                            Model::Claimed { lease_end, .. } => {
                                Expected::InFlight(Duration::from_millis(lease_end - now_ms))
                            }
                            Model::Completed { body, .. } => Expected::Completed(body.clone()),
                        }
                    };
                    let claim = Claim::new(record_key(key), fingerprint(request), LEASE);
                    let outcome = now_or_ready(store.claim(claim)).unwrap();
                    let got = match outcome {
                        ClaimOutcome::Claimed(token) => {
                            if let Some(&(_, previous)) = claims.iter().rev().find(|(k, _)| *k == key) {
                                prop_assert!(token > previous, "fencing tokens grow");
                            }
                            claims.push((key, token));
                            model.insert(key, Model::Claimed {
                                claim: claims.len() - 1,
                                request,
                                lease_end: now_ms + 1000,
                            });
                            Expected::Claimed
                        }
                        ClaimOutcome::InFlight { lease_left } => Expected::InFlight(lease_left),
                        ClaimOutcome::Completed(Completed::Response(response)) => Expected::Completed(
                            String::from_utf8(response.body().to_vec()).unwrap(),
                        ),
                        ClaimOutcome::Mismatch => Expected::Mismatch,
                        other => panic!("unexpected {other:?}"),
                    };
                    prop_assert_eq!(got, expected);
                }
                Op::Complete { claim } => {
                    let Some(&(key, token)) = claims.get(claim) else { continue };
                    bodies += 1;
                    let body = format!("response {bodies}");
                    let holds = matches!(model.get(&key), Some(Model::Claimed { claim: c, .. }) if *c == claim);
                    let response = Arc::new(StoredResponse::new(
                        StatusCode::CREATED,
                        HeaderMap::new(),
                        Bytes::from(body.clone()),
                        None,
                    ));
                    let completion = now_or_ready(store.complete(
                        record_key(key),
                        token,
                        Completed::Response(response),
                        RETENTION,
                    ))
                    .unwrap();
                    if holds {
                        prop_assert_eq!(completion, Completion::Stored);
                        let Some(Model::Claimed { request, .. }) = model.get(&key).cloned() else { unreachable!() };
                        model.insert(key, Model::Completed { request, body, expires: now_ms + 2000 });
                    } else {
                        prop_assert_eq!(completion, Completion::Superseded, "a stale token never stores");
                    }
                }
                Op::Release { claim } => {
                    let Some(&(key, token)) = claims.get(claim) else { continue };
                    if matches!(model.get(&key), Some(Model::Claimed { claim: c, .. }) if *c == claim) {
                        model.remove(&key);
                    }
                    now_or_ready(store.release(record_key(key), token)).unwrap();
                }
                Op::Advance { ms } => {
                    now_ms += ms;
                    clock.advance(Duration::from_millis(ms));
                }
                Op::Sweep => {
                    store.sweep();
                    sweep(&mut model, now_ms, true);
                }
            }
            let live = model
                .values()
                .filter(|record| match record {
                    Model::Claimed { lease_end, .. } => *lease_end > now_ms,
                    Model::Completed { expires, .. } => *expires > now_ms,
                })
                .count();
            prop_assert!(store.len() >= live, "a live record went missing");
            prop_assert!(store.len() <= 3, "at most one record per key");
        }
        store.sweep();
        prop_assert_eq!(
            store.bytes(),
            model
                .values()
                .filter_map(|record| match record {
                    Model::Completed { body, expires, .. } if *expires > now_ms => Some(128 + body.len()),
                    _ => None,
                })
                .sum::<usize>(),
            "the byte count is exactly the live responses' sizes"
        );
    }
}

fn response(body: &'static str) -> Completed {
    Completed::Response(Arc::new(StoredResponse::new(
        StatusCode::CREATED,
        HeaderMap::new(),
        Bytes::from_static(body.as_bytes()),
        None,
    )))
}

#[test]
fn a_callers_quota_comes_back_when_its_records_are_gone() {
    let clock = ManualClock::new();
    let store = MemoryStore::builder()
        .max_per_owner(NonZeroUsize::new(2).unwrap())
        .clock(clock.clone())
        .build();
    assert!(store.is_empty());
    let tenant_key =
        |key: u8| RecordKey::new(Some(b"tenant"), &Method::POST, "", "/", &key.to_string());
    let claim = |key: u8| {
        let claim = Claim::new(tenant_key(key), fingerprint(0), LEASE);
        now_or_ready(store.claim(claim)).unwrap()
    };
    let ClaimOutcome::Claimed(first) = claim(1) else {
        panic!("the first claim is the caller's");
    };
    assert!(!store.is_empty());
    assert_eq!(store.len(), 1);
    assert!(matches!(claim(2), ClaimOutcome::Claimed(_)));
    assert!(matches!(claim(3), ClaimOutcome::QuotaExceeded));
    now_or_ready(store.release(tenant_key(1), first)).unwrap();
    store.sweep();
    assert!(
        matches!(claim(3), ClaimOutcome::Claimed(_)),
        "the released record no longer counts against its owner"
    );
    assert!(
        matches!(claim(4), ClaimOutcome::QuotaExceeded),
        "and only that one: the other two still count"
    );
}

#[tokio::test]
async fn the_store_sweeps_expired_records_on_its_own_a_minute_after_its_last_sweep() {
    let clock = ManualClock::new();
    let store = MemoryStore::builder().clock(clock.clone()).build();
    let claim = |key: u8| {
        now_or_ready(store.claim(Claim::new(record_key(key), fingerprint(0), LEASE))).unwrap()
    };
    let ClaimOutcome::Claimed(token) = claim(1) else {
        panic!("a free key");
    };
    let stored =
        now_or_ready(store.complete(record_key(1), token, response("kept"), RETENTION)).unwrap();
    assert_eq!(stored, Completion::Stored);
    // Past its retention, the record stays until a sweep drops it.
    clock.advance(RETENTION + Duration::from_secs(1));
    assert_eq!(store.len(), 1);
    // A minute after the last sweep, a claim of another key starts one (on the blocking pool).
    clock.advance(Duration::from_secs(60));
    assert!(matches!(claim(2), ClaimOutcome::Claimed(_)));
    for _ in 0..2_000 {
        if store.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        store.len(),
        1,
        "the expired record is gone, the new claim stays"
    );
}

#[test]
fn a_full_byte_budget_makes_room_by_dropping_expired_responses() {
    let clock = ManualClock::new();
    let one = response("a response");
    let size = one.size();
    // Room for one response, not two.
    let store = MemoryStore::builder()
        .max_bytes(size + size / 2)
        .clock(clock.clone())
        .build();
    let complete = |key: u8| {
        let ClaimOutcome::Claimed(token) =
            now_or_ready(store.claim(Claim::new(record_key(key), fingerprint(0), LEASE))).unwrap()
        else {
            panic!("a free key");
        };
        now_or_ready(store.complete(record_key(key), token, response("a response"), RETENTION))
            .unwrap()
    };
    assert_eq!(complete(1), Completion::Stored);
    assert_eq!(store.bytes(), size);
    assert_eq!(
        complete(2),
        Completion::Full,
        "the first response is still live"
    );
    // Once the first has expired, the next completion sweeps it away and fits.
    clock.advance(RETENTION + Duration::from_secs(1));
    assert_eq!(complete(3), Completion::Stored);
    assert_eq!(store.bytes(), size);
    assert_eq!(
        format!("{store:?}"),
        format!(
            "MemoryStore {{ entries: {}, max_entries: 100000, bytes: {size}, max_bytes: {}, \
             max_per_owner: 1000 }}",
            store.len(),
            size + size / 2
        )
    );
}
