//! The Redis idempotency store against a real `redis-server` (feature `redis`): what each
//! script does, in how many round trips, with which TTLs, and what every fault answers.
//!
//! Real time: Redis keeps its own clock. Leases in these tests are short (hundreds of
//! milliseconds) and assertions are about what happened, with generous bounds on how long.

mod redis_support;
mod support;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use palisade::idempotency::{
    Claim, ClaimOutcome, Completed, Completion, Fingerprint, IdempotencyStore, RecordKey,
    StoredResponse,
};
use palisade::redis::{
    DEFAULT_TIMEOUT, RedisConnection, RedisIdempotencyStore, RedisIdempotencyStoreBuilder,
    RedisStoreError,
};
use redis::AsyncCommands;
use redis_support::{RedisServer, calls, commands, reset_stats};

const LEASE: Duration = Duration::from_millis(400);
const RETENTION: Duration = Duration::from_secs(60);

fn anonymous(key: &str) -> RecordKey {
    RecordKey::new(None, &Method::POST, "api.test", "/orders", key)
}

fn tenant(tenant: &str, key: &str) -> RecordKey {
    RecordKey::new(
        Some(tenant.as_bytes()),
        &Method::POST,
        "api.test",
        "/orders",
        key,
    )
}

fn fingerprint(body: &str) -> Fingerprint {
    Fingerprint::new(&Method::POST, "/orders", None, body.as_bytes())
}

fn response(body: &'static str) -> Completed {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    Completed::Response(Arc::new(StoredResponse::new(
        StatusCode::CREATED,
        headers,
        Bytes::from_static(body.as_bytes()),
        None,
    )))
}

fn store_on(server: &RedisServer) -> RedisIdempotencyStore {
    store_with(server, DEFAULT_TIMEOUT, |store| store)
}

/// A store on its own connection with `timeout`, configured by `configure`.
fn store_with(
    server: &RedisServer,
    timeout: Duration,
    configure: impl FnOnce(RedisIdempotencyStoreBuilder) -> RedisIdempotencyStoreBuilder,
) -> RedisIdempotencyStore {
    let connection = RedisConnection::builder(server.url())
        .timeout(timeout)
        .build()
        .unwrap();
    configure(RedisIdempotencyStore::builder(connection))
        .build()
        .unwrap()
}

async fn claim(store: &RedisIdempotencyStore, key: RecordKey, body: &str) -> ClaimOutcome {
    store
        .claim(Claim::new(key, fingerprint(body), LEASE))
        .await
        .expect("Redis answers")
}

async fn claimed(
    store: &RedisIdempotencyStore,
    key: RecordKey,
) -> palisade::idempotency::FencingToken {
    match claim(store, key, "order").await {
        ClaimOutcome::Claimed(token) => token,
        other => panic!("expected the key to be free, got {other:?}"),
    }
}

fn redis_error(error: &palisade::idempotency::StoreError) -> &RedisStoreError {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<RedisStoreError>())
        .expect("a Redis store error inside")
}

#[tokio::test]
async fn a_claim_a_completion_and_a_replay_are_one_round_trip_each() {
    support::init_tracing();
    let server = RedisServer::start().await;
    let store = store_on(&server);
    let mut admin = server.admin().await;
    // The first use loads the scripts (NOSCRIPT, SCRIPT LOAD, EVALSHA): not what is counted.
    let warm = claimed(&store, anonymous("warm-up")).await;
    store
        .complete(anonymous("warm-up"), warm, response("warm"), RETENTION)
        .await
        .unwrap();
    store.release(anonymous("warm-up"), warm).await.unwrap();
    reset_stats(&mut admin).await;
    let before = store.connection().metrics();

    let token = claimed(&store, anonymous("k1")).await;
    assert_eq!(
        commands(&mut admin).await,
        [("evalsha".to_owned(), 1)],
        "claim: one EVALSHA"
    );
    reset_stats(&mut admin).await;

    let completion = store
        .complete(anonymous("k1"), token, response("order 1"), RETENTION)
        .await
        .unwrap();
    assert_eq!(completion, Completion::Stored);
    assert_eq!(
        commands(&mut admin).await,
        [("evalsha".to_owned(), 1)],
        "complete: one EVALSHA"
    );
    reset_stats(&mut admin).await;

    let ClaimOutcome::Completed(replayed) = claim(&store, anonymous("k1"), "order").await else {
        panic!("the completed record is replayed");
    };
    assert_eq!(replayed, response("order 1"));
    assert_eq!(
        commands(&mut admin).await,
        [("evalsha".to_owned(), 1)],
        "replay: one EVALSHA"
    );

    let after = store.connection().metrics();
    assert_eq!(after.claim.calls - before.claim.calls, 2);
    assert_eq!(after.claim.round_trips - before.claim.round_trips, 2);
    assert_eq!(after.complete.round_trips - before.complete.round_trips, 1);
    assert_eq!(after.claim.errors, before.claim.errors, "no errors");
    assert!(after.claim.max_latency > Duration::ZERO);
}

#[tokio::test]
async fn ttls_are_twice_the_lease_while_claimed_then_the_retention() {
    support::init_tracing();
    let server = RedisServer::start().await;
    let store = store_on(&server);
    let mut admin = server.admin().await;
    let key = tenant("acme", "k1");
    let token = claimed(&store, key).await;
    let record = store.record_key(key);
    let quota = store
        .quota_key(key)
        .expect("an identified caller has a quota");
    let pttl: i64 = admin.pttl(&record).await.unwrap();
    assert!(
        (700..=800).contains(&pttl),
        "claimed: 2 × 400 ms, got {pttl}"
    );
    let pttl: i64 = admin.pttl(&quota).await.unwrap();
    assert!(
        (700..=800).contains(&pttl),
        "the quota lives as long as its last record: {pttl}"
    );

    store
        .complete(key, token, response("done"), RETENTION)
        .await
        .unwrap();
    let pttl: i64 = admin.pttl(&record).await.unwrap();
    assert!(
        (59_000..=60_000).contains(&pttl),
        "completed: the retention, got {pttl}"
    );
    let pttl: i64 = admin.pttl(&quota).await.unwrap();
    assert!(
        (59_000..=60_000).contains(&pttl),
        "and the quota follows: {pttl}"
    );
    let lease_end: Option<String> = admin.hget(&record, "l").await.unwrap();
    assert_eq!(lease_end, None, "a completed record has no lease");
}

#[tokio::test]
async fn keys_share_a_cluster_slot_with_their_quota_and_show_nothing_in_clear() {
    let server = RedisServer::start().await;
    let store = store_on(&server);
    let owned = tenant("acme", "secret-key");
    let record = store.record_key(owned);
    let quota = store.quota_key(owned).unwrap();
    let tag = |key: &str| key[key.find('{').unwrap()..=key.find('}').unwrap()].to_owned();
    assert!(record.starts_with("palisade:idempotency:{"), "{record}");
    assert_eq!(tag(&record), tag(&quota), "one hash tag: one slot");
    assert!(
        !record.contains("secret-key") && !record.contains("acme") && !record.contains("orders")
    );
    let anonymous_record = store.record_key(anonymous("k"));
    assert_eq!(store.quota_key(anonymous("k")), None);
    assert_eq!(
        anonymous_record.matches('{').count(),
        1,
        "{anonymous_record}"
    );
}

#[tokio::test]
async fn a_duplicate_is_in_flight_and_another_request_is_a_mismatch() {
    let server = RedisServer::start().await;
    let store = store_on(&server);
    claimed(&store, anonymous("k")).await;
    match claim(&store, anonymous("k"), "order").await {
        ClaimOutcome::InFlight { lease_left } => {
            assert!(
                lease_left <= LEASE && lease_left > LEASE / 2,
                "{lease_left:?}"
            );
        }
        other => panic!("in flight, got {other:?}"),
    }
    assert!(matches!(
        claim(&store, anonymous("k"), "another order").await,
        ClaimOutcome::Mismatch
    ));
}

#[tokio::test]
async fn a_holder_past_its_lease_is_taken_over_and_its_late_completion_refused() {
    support::init_tracing();
    let server = RedisServer::start().await;
    // Two instances of the service: two connections, one Redis.
    let first = store_on(&server);
    let second = store_on(&server);
    let key = anonymous("k");
    let stalled = claimed(&first, key).await;
    tokio::time::sleep(LEASE + Duration::from_millis(100)).await;
    let ClaimOutcome::Claimed(successor) = claim(&second, key, "order").await else {
        panic!("a key whose lease ended is free");
    };
    assert!(successor > stalled, "a take-over gets a greater token");
    assert_eq!(
        first
            .complete(key, stalled, response("stalled"), RETENTION)
            .await
            .unwrap(),
        Completion::Superseded
    );
    first.release(key, stalled).await.unwrap();
    assert!(
        matches!(
            claim(&first, key, "order").await,
            ClaimOutcome::InFlight { .. }
        ),
        "the stale release deleted nothing"
    );
    assert_eq!(
        second
            .complete(key, successor, response("successor"), RETENTION)
            .await
            .unwrap(),
        Completion::Stored
    );
    let ClaimOutcome::Completed(stored) = claim(&first, key, "order").await else {
        panic!("completed");
    };
    assert_eq!(
        stored,
        response("successor"),
        "the stored response is the successor's"
    );
}

#[tokio::test]
async fn a_holder_past_its_lease_may_still_complete_until_someone_takes_over() {
    let server = RedisServer::start().await;
    let store = store_on(&server);
    let key = anonymous("k");
    let token = claimed(&store, key).await;
    tokio::time::sleep(LEASE + Duration::from_millis(100)).await;
    assert_eq!(
        store
            .complete(key, token, response("late"), RETENTION)
            .await
            .unwrap(),
        Completion::Stored
    );
}

#[tokio::test]
async fn a_released_key_runs_again_with_a_new_token_and_the_old_one_stays_dead() {
    let server = RedisServer::start().await;
    let store = store_on(&server);
    let key = anonymous("k");
    let first = claimed(&store, key).await;
    store.release(key, first).await.unwrap();
    let mut admin = server.admin().await;
    let exists: bool = admin.exists(store.record_key(key)).await.unwrap();
    assert!(!exists, "release deletes the record");
    let second = claimed(&store, key).await;
    assert_ne!(second, first);
    assert_eq!(
        store
            .complete(key, first, response("old"), RETENTION)
            .await
            .unwrap(),
        Completion::Superseded,
        "the released claim's token does not hold the new claim"
    );
}

#[tokio::test]
async fn the_owner_quota_holds_across_instances_and_frees_on_release() {
    let server = RedisServer::start().await;
    let quota = |server: &RedisServer| {
        store_with(server, DEFAULT_TIMEOUT, |store| {
            store.max_per_owner(NonZeroUsize::new(2).unwrap())
        })
    };
    let (first, second) = (quota(&server), quota(&server));
    let one = claimed(&first, tenant("acme", "1")).await;
    claimed(&second, tenant("acme", "2")).await;
    assert!(matches!(
        claim(&first, tenant("acme", "3"), "order").await,
        ClaimOutcome::QuotaExceeded
    ));
    assert!(matches!(
        claim(&second, tenant("acme", "3"), "order").await,
        ClaimOutcome::QuotaExceeded
    ));
    assert!(
        matches!(
            claim(&second, tenant("globex", "1"), "order").await,
            ClaimOutcome::Claimed(_)
        ),
        "other callers are unaffected"
    );
    assert!(
        matches!(
            claim(&first, anonymous("1"), "order").await,
            ClaimOutcome::Claimed(_)
        ),
        "anonymous callers have no quota"
    );
    assert!(
        matches!(
            claim(&second, tenant("acme", "2"), "order").await,
            ClaimOutcome::InFlight { .. }
        ),
        "a key already held is not a new record"
    );
    first.release(tenant("acme", "1"), one).await.unwrap();
    assert!(matches!(
        claim(&second, tenant("acme", "3"), "order").await,
        ClaimOutcome::Claimed(_)
    ));
}

#[tokio::test]
async fn expired_records_stop_counting_against_their_owner() {
    let server = RedisServer::start().await;
    let store = store_with(&server, DEFAULT_TIMEOUT, |store| {
        store.max_per_owner(NonZeroUsize::new(1).unwrap())
    });
    claimed(&store, tenant("acme", "1")).await;
    assert!(matches!(
        claim(&store, tenant("acme", "2"), "order").await,
        ClaimOutcome::QuotaExceeded
    ));
    // A claimed record lives two leases.
    tokio::time::sleep(2 * LEASE + Duration::from_millis(100)).await;
    assert!(matches!(
        claim(&store, tenant("acme", "2"), "order").await,
        ClaimOutcome::Claimed(_)
    ));
}

#[tokio::test]
async fn a_record_over_the_bound_is_never_sent_and_a_result_not_kept_is() {
    let server = RedisServer::start().await;
    let store = store_with(&server, DEFAULT_TIMEOUT, |store| {
        store.max_record_bytes(100)
    });
    let connection = store.connection().clone();
    let key = anonymous("big");
    let token = claimed(&store, key).await;
    let big = Completed::Response(Arc::new(StoredResponse::new(
        StatusCode::OK,
        HeaderMap::new(),
        Bytes::from(vec![b'x'; 200]),
        None,
    )));
    let sent = connection.metrics().complete.round_trips;
    assert_eq!(
        store.complete(key, token, big, RETENTION).await.unwrap(),
        Completion::Full
    );
    assert_eq!(
        connection.metrics().complete.round_trips,
        sent,
        "never sent"
    );
    let not_kept = Completed::NotKept {
        status: StatusCode::OK,
    };
    assert_eq!(
        store
            .complete(key, token, not_kept.clone(), RETENTION)
            .await
            .unwrap(),
        Completion::Stored
    );
    let ClaimOutcome::Completed(found) = claim(&store, key, "order").await else {
        panic!("completed");
    };
    assert_eq!(found, not_kept);
}

#[tokio::test]
async fn a_record_that_does_not_parse_is_an_error_never_a_replay() {
    let server = RedisServer::start().await;
    let store = store_on(&server);
    let mut admin = server.admin().await;
    let key = anonymous("k");
    let token = claimed(&store, key).await;
    store
        .complete(key, token, response("fine"), RETENTION)
        .await
        .unwrap();
    for bad in [&b"\x02future format"[..], b"\x01\x01", b""] {
        let _: () = admin.hset(store.record_key(key), "v", bad).await.unwrap();
        let error = store
            .claim(Claim::new(key, fingerprint("order"), LEASE))
            .await
            .expect_err("an unreadable record fails the claim");
        assert!(
            matches!(redis_error(&error), RedisStoreError::Record(_)),
            "{:?}",
            redis_error(&error)
        );
    }
    assert_eq!(store.connection().metrics().claim.errors.response, 3);
}

#[tokio::test]
async fn out_of_memory_refuses_new_keys_and_still_releases() {
    support::init_tracing();
    let server = RedisServer::start().await;
    let store = store_on(&server);
    let mut admin = server.admin().await;
    let key = anonymous("held");
    let token = claimed(&store, key).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(matches!(
        claim(&store, anonymous("new"), "order").await,
        ClaimOutcome::Full
    ));
    assert!(
        matches!(
            claim(&store, tenant("acme", "new"), "order").await,
            ClaimOutcome::Full
        ),
        "an identified caller's claim too (its quota is counted without a write)"
    );
    assert_eq!(
        store
            .complete(key, token, response("order"), RETENTION)
            .await
            .unwrap(),
        Completion::Full,
        "no memory for the response: the layer records a result not kept instead"
    );
    let not_kept = Completed::NotKept {
        status: StatusCode::CREATED,
    };
    let ran = anonymous("ran");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query_async(&mut admin)
        .await
        .unwrap();
    let ran_token = claimed(&store, ran).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        store
            .complete(ran, ran_token, not_kept.clone(), RETENTION)
            .await
            .unwrap(),
        Completion::Stored,
        "a result not kept is recorded even in a full Redis: the request must not run again"
    );
    assert!(matches!(
        claim(&store, ran, "order").await,
        ClaimOutcome::Completed(found) if found == not_kept
    ));
    store.release(key, token).await.unwrap();
    let exists: bool = admin.exists(store.record_key(key)).await.unwrap();
    assert!(
        !exists,
        "a release frees memory, so it works when Redis is full"
    );
}

#[tokio::test]
async fn a_redis_that_is_down_fails_every_operation_within_the_timeout() {
    support::init_tracing();
    let mut server = RedisServer::start().await;
    let store = store_with(&server, Duration::from_millis(200), |store| store);
    let connection = store.connection().clone();
    let token = claimed(&store, anonymous("held")).await;
    server.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let error = store
            .claim(Claim::new(anonymous("k"), fingerprint("order"), LEASE))
            .await
            .expect_err("Redis is down");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(
                redis_error(&error),
                RedisStoreError::Timeout(_) | RedisStoreError::Connection(_)
            ),
            "{:?}",
            redis_error(&error)
        );
    }
    let started = Instant::now();
    assert!(
        store
            .complete(anonymous("held"), token, response("x"), RETENTION)
            .await
            .is_err()
    );
    assert!(store.release(anonymous("held"), token).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(1));
    let errors = connection.metrics().claim.errors;
    assert_eq!(errors.timeout + errors.connection, 3, "{errors:?}");
}

#[tokio::test]
async fn after_a_restart_the_scripts_are_loaded_again_and_claims_work() {
    support::init_tracing();
    let mut server = RedisServer::start().await;
    let store = store_on(&server);
    claimed(&store, anonymous("before")).await;
    server.restart().await;
    // The old connection is dead; the manager reconnects in the background. Give it a few
    // operations' time, each bounded by the timeout.
    let started = Instant::now();
    let outcome = loop {
        match store
            .claim(Claim::new(anonymous("after"), fingerprint("order"), LEASE))
            .await
        {
            Ok(outcome) => break outcome,
            Err(error) => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "never reconnected: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(matches!(outcome, ClaimOutcome::Claimed(_)));
    let mut admin = server.admin().await;
    assert_eq!(
        calls(&mut admin, "script|load").await,
        1,
        "the restarted Redis was given the claim script once"
    );
    assert!(
        matches!(
            claim(&store, anonymous("before"), "order").await,
            ClaimOutcome::Claimed(_)
        ),
        "a Redis that lost its data lost its records: the documented cost of persistence off"
    );
}

#[tokio::test]
async fn a_slow_redis_times_out_and_the_claim_it_applied_later_holds_the_key() {
    support::init_tracing();
    let server = RedisServer::start().await;
    let store = store_with(&server, Duration::from_millis(200), |store| store);
    claimed(&store, anonymous("warm-up")).await;
    let mut admin = server.admin().await;
    // Redis stops answering for a second.
    let sleeper = tokio::spawn(async move {
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("1")
            .query_async::<()>(&mut admin)
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let error = store
        .claim(Claim::new(anonymous("k"), fingerprint("order"), LEASE * 10))
        .await
        .expect_err("no answer within 200 ms");
    assert!(matches!(redis_error(&error), RedisStoreError::Timeout(_)));
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    sleeper.await.unwrap().unwrap();
    // The claim was sent before the timeout, so Redis ran it once awake: the key is held
    // (a duplicate gets 409 until the lease ends), and the request never ran twice.
    assert!(matches!(
        claim(&store, anonymous("k"), "order").await,
        ClaimOutcome::InFlight { .. }
    ));
}

#[tokio::test]
async fn connections_killed_by_redis_are_replaced_and_no_operation_hangs() {
    support::init_tracing();
    let server = RedisServer::start().await;
    let store = store_on(&server);
    claimed(&store, anonymous("warm-up")).await;
    let mut admin = server.admin().await;
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for n in 0..5 {
        let started = Instant::now();
        let result = store
            .claim(Claim::new(
                anonymous(&format!("k{n}")),
                fingerprint("order"),
                LEASE,
            ))
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        outcomes.push(result.is_ok());
    }
    assert!(
        outcomes.iter().rev().take(3).all(|ok| *ok),
        "reconnected: {outcomes:?}"
    );
}
