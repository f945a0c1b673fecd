//! The cache's remote tier in a real `redis-server` (feature `redis`): two instances of a
//! service, each with its own local tier, share one Redis. A cold key stampeded on both makes
//! one origin call; a stale key is refreshed by one instance; a Redis that is down is bypassed.
//!
//! Real time (Redis keeps its own clock); windows are short and assertions are about what
//! happened.

mod redis_support;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use palisade::cache::{CacheHandle, CacheLayer, RemoteCodec};
use palisade::error::BoxError;
use palisade::redis::{RedisCacheStore, RedisConnection};
use redis::AsyncCommands;
use redis_support::{RedisServer, commands, reset_stats};
use tower::{Layer, Service, ServiceExt};

/// Prices by product id, as UTF-8 text.
struct Prices;

impl RemoteCodec<u64, Arc<str>> for Prices {
    fn key(&self, id: &u64) -> Vec<u8> {
        format!("price:{id}").into_bytes()
    }
    fn encode(&self, price: &Arc<str>) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(price.as_bytes()))
    }
    fn decode(&self, bytes: &[u8]) -> Option<Arc<str>> {
        std::str::from_utf8(bytes).ok().map(Arc::from)
    }
}

/// The origin every instance calls: counts its calls, takes 100 ms, answers `price <n>`, or
/// fails while `down`.
#[derive(Clone, Default)]
struct Origin {
    calls: Arc<AtomicUsize>,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl Origin {
    fn service(
        &self,
    ) -> impl Service<u64, Response = Arc<str>, Error = std::io::Error, Future: Send>
    + Clone
    + Send
    + 'static {
        let calls = Arc::clone(&self.calls);
        let down = Arc::clone(&self.down);
        tower::service_fn(move |_id: u64| {
            let calls = Arc::clone(&calls);
            let down = down.load(Ordering::SeqCst);
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                if down {
                    return Err(std::io::Error::other("the origin is down"));
                }
                Ok(Arc::from(format!("price {n}")))
            }
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

type Instance = tower::util::BoxCloneSyncService<u64, Arc<str>, BoxError>;

/// One instance: its own local tier over the shared Redis.
fn instance(
    redis: &RedisServer,
    origin: &Origin,
    ttl: Duration,
) -> (Instance, CacheHandle<u64, Arc<str>>, RedisConnection) {
    instance_with(redis, origin, ttl, true)
}

/// One instance over the shared Redis, with a local tier or without.
fn instance_with(
    redis: &RedisServer,
    origin: &Origin,
    ttl: Duration,
    local: bool,
) -> (Instance, CacheHandle<u64, Arc<str>>, RedisConnection) {
    let connection = RedisConnection::builder(redis.url())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let store = RedisCacheStore::builder(connection.clone())
        .build()
        .unwrap();
    let layer = CacheLayer::builder(ttl, |id: &u64| Some(*id))
        .stale_while_revalidate(Duration::from_secs(10))
        .ttl_jitter(palisade::Ratio::ZERO)
        .build::<u64, Arc<str>>()
        .unwrap();
    let layer = if local {
        layer.remote(store, Prices)
    } else {
        layer.remote_only(store, Prices)
    }
    .unwrap();
    let handle = layer.handle();
    let service = tower::util::BoxCloneSyncService::new(layer.layer(origin.service()));
    (service, handle, connection)
}

async fn get(service: &Instance, id: u64) -> Arc<str> {
    service.clone().oneshot(id).await.expect("a price")
}

/// Asks both instances for `id` until both answer `price 2` (within 5 s), then checks that the
/// origin was called twice in all (one fetch, one refresh) and one refresh stored.
async fn refreshed_once(
    a: &Instance,
    b: &Instance,
    id: u64,
    origin: &Origin,
    handles: [&CacheHandle<u64, Arc<str>>; 2],
) {
    let started = Instant::now();
    loop {
        let (x, y) = tokio::join!(get(a, id), get(b, id));
        if &*x == "price 2" && &*y == "price 2" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never refreshed: {x} {y}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        origin.calls(),
        2,
        "refreshed once between the two instances"
    );
    let [a, b] = handles.map(CacheHandle::metrics);
    assert_eq!(a.refreshes + b.refreshes, 1, "{a:?} {b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_key_stampeded_on_two_instances_calls_the_origin_once() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::default();
    let (a, a_handle, _) = instance(&redis, &origin, Duration::from_secs(30));
    let (b, b_handle, _) = instance(&redis, &origin, Duration::from_secs(30));
    let start = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|n| {
            let service = if n % 2 == 0 { a.clone() } else { b.clone() };
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                get(&service, 7).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(&*task.await.unwrap(), "price 1");
    }
    assert_eq!(origin.calls(), 1, "one origin call for the fleet");
    let (a, b) = (a_handle.metrics(), b_handle.metrics());
    assert_eq!(a.misses + b.misses, 1, "{a:?} {b:?}");
    assert_eq!(
        a.remote_hits + b.remote_hits,
        1,
        "the other instance's leader took it from Redis"
    );
    assert_eq!(a.remote_errors + b.remote_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_key_is_refreshed_by_one_instance_and_both_take_the_result() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::default();
    let ttl = Duration::from_millis(500);
    let (a, a_handle, _) = instance(&redis, &origin, ttl);
    let (b, b_handle, _) = instance(&redis, &origin, ttl);
    assert_eq!(&*get(&a, 7).await, "price 1");
    // Published after the callers have the value: wait for it to land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(&*get(&b, 7).await, "price 1", "from Redis");
    assert_eq!(origin.calls(), 1);
    // Both local entries go stale together (their windows come from Redis's clock).
    tokio::time::sleep(ttl).await;
    let (x, y) = tokio::join!(get(&a, 7), get(&b, 7));
    assert_eq!((&*x, &*y), ("price 1", "price 1"), "stale, served at once");
    // One refresh for the fleet; the other instance takes its result on a later stale hit.
    refreshed_once(&a, &b, 7, &origin, [&a_handle, &b_handle]).await;
}

#[tokio::test]
async fn a_miss_is_one_lookup_and_one_put_and_a_local_hit_asks_redis_nothing() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::default();
    let (a, _, _) = instance(&redis, &origin, Duration::from_secs(30));
    get(&a, 1).await; // loads the scripts
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut admin = redis.admin().await;
    reset_stats(&mut admin).await;
    get(&a, 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        commands(&mut admin).await,
        [("evalsha".to_owned(), 2)],
        "a lookup (which took the lock) and a put"
    );
    reset_stats(&mut admin).await;
    get(&a, 2).await;
    assert_eq!(commands(&mut admin).await, [], "a local hit");
}

#[tokio::test]
async fn the_remote_entry_lives_for_its_whole_life() {
    let redis = RedisServer::start().await;
    let origin = Origin::default();
    let (a, _, connection) = instance(&redis, &origin, Duration::from_secs(30));
    get(&a, 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let store = RedisCacheStore::builder(connection).build().unwrap();
    let mut admin = redis.admin().await;
    let pttl: i64 = admin.pttl(store.entry_key(b"price:3")).await.unwrap();
    // Fresh for 30 s, stale until 30 + 10 s.
    assert!((39_000..=40_000).contains(&pttl), "{pttl}");
    let locked: bool = admin.exists(store.lock_key(b"price:3")).await.unwrap();
    assert!(!locked, "the put gave the lock up");
}

#[tokio::test]
async fn with_redis_down_the_cache_serves_from_the_origin_and_counts_the_failure() {
    support::init_tracing();
    let mut redis = RedisServer::start().await;
    let origin = Origin::default();
    let (a, handle, _) = instance(&redis, &origin, Duration::from_secs(30));
    assert_eq!(&*get(&a, 1).await, "price 1");
    redis.kill();
    let started = Instant::now();
    assert_eq!(&*get(&a, 2).await, "price 2", "from the origin");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(&*get(&a, 1).await, "price 1", "the local tier still serves");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        handle.metrics().remote_errors >= 1,
        "{:?}",
        handle.metrics()
    );
}

#[tokio::test]
async fn invalidating_a_key_removes_it_from_redis_too() {
    let redis = RedisServer::start().await;
    let origin = Origin::default();
    let (a, a_handle, connection) = instance(&redis, &origin, Duration::from_secs(30));
    get(&a, 4).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let store = RedisCacheStore::builder(connection).build().unwrap();
    let mut admin = redis.admin().await;
    let key = store.entry_key(b"price:4");
    assert!(admin.exists::<_, bool>(&key).await.unwrap());
    assert!(a_handle.invalidate(&4));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!admin.exists::<_, bool>(&key).await.unwrap());
    assert_eq!(&*get(&a, 4).await, "price 2", "fetched again");
}

#[tokio::test]
async fn a_failed_fetch_gives_the_lock_up_so_the_next_instance_need_not_wait_its_lease() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::default();
    let (a, _, connection) = instance(&redis, &origin, Duration::from_secs(30));
    let (b, _, _) = instance(&redis, &origin, Duration::from_secs(30));
    origin.down.store(true, Ordering::SeqCst);
    assert!(a.clone().oneshot(5).await.is_err(), "the origin failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let store = RedisCacheStore::builder(connection).build().unwrap();
    let mut admin = redis.admin().await;
    let locked: bool = admin.exists(store.lock_key(b"price:5")).await.unwrap();
    assert!(!locked, "given up after the failure");
    origin.down.store(false, Ordering::SeqCst);
    let started = Instant::now();
    assert_eq!(&*get(&b, 5).await, "price 2");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fetched at once, not after half the 5 s lock timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn without_a_local_tier_an_invalidation_is_seen_by_the_whole_fleet_at_once() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::default();
    let (a, a_handle, _) = instance_with(&redis, &origin, Duration::from_secs(30), false);
    let (b, b_handle, _) = instance_with(&redis, &origin, Duration::from_secs(30), false);
    assert_eq!(&*get(&a, 6).await, "price 1");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(&*get(&b, 6).await, "price 1", "from Redis");
    assert!(!a_handle.invalidate(&6), "nothing held locally");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        &*get(&b, 6).await,
        "price 2",
        "the other instance fetches anew at once"
    );
    assert_eq!(origin.calls(), 2);
    let (a, b) = (a_handle.metrics(), b_handle.metrics());
    assert_eq!((a.entries, b.entries), (0, 0), "nothing kept in memory");
}

#[tokio::test]
async fn without_a_local_tier_every_call_is_one_lookup() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::default();
    let (a, handle, _) = instance_with(&redis, &origin, Duration::from_secs(30), false);
    get(&a, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut admin = redis.admin().await;
    reset_stats(&mut admin).await;
    for _ in 0..3 {
        assert_eq!(&*get(&a, 1).await, "price 1");
    }
    assert_eq!(commands(&mut admin).await, [("evalsha".to_owned(), 3)]);
    assert_eq!(origin.calls(), 1);
    assert_eq!(handle.metrics().remote_hits, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_local_tier_a_stale_entry_is_served_and_refreshed_once_for_the_fleet() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::default();
    let ttl = Duration::from_millis(500);
    let (a, a_handle, _) = instance_with(&redis, &origin, ttl, false);
    let (b, b_handle, _) = instance_with(&redis, &origin, ttl, false);
    assert_eq!(&*get(&a, 8).await, "price 1");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let (x, y) = tokio::join!(get(&a, 8), get(&b, 8));
    assert_eq!((&*x, &*y), ("price 1", "price 1"), "stale, served at once");
    refreshed_once(&a, &b, 8, &origin, [&a_handle, &b_handle]).await;
}

#[tokio::test]
async fn a_caller_that_goes_away_mid_fetch_gives_the_lock_up() {
    support::init_tracing();
    let redis = RedisServer::start().await;
    let origin = Origin::default();
    let (a, _, connection) = instance(&redis, &origin, Duration::from_secs(30));
    get(&a, 1).await; // loads the scripts
    // The origin takes 100 ms; the caller gives up after 30, holding the key's lock.
    let gone = tokio::time::timeout(Duration::from_millis(30), get(&a, 9)).await;
    assert!(gone.is_err(), "the caller went away");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let store = RedisCacheStore::builder(connection).build().unwrap();
    let mut admin = redis.admin().await;
    let locked: bool = admin.exists(store.lock_key(b"price:9")).await.unwrap();
    assert!(
        !locked,
        "given up when the fetch was dropped, not after its 5 s lease"
    );
}

#[tokio::test]
async fn only_the_locks_holder_gives_it_up_not_a_holder_whose_lease_lapsed() {
    use palisade::cache::{LockToken, RemoteEntry, RemoteStore};
    support::init_tracing();
    let redis = RedisServer::start().await;
    let connection = RedisConnection::builder(redis.url()).build().unwrap();
    let store = RedisCacheStore::builder(connection).build().unwrap();
    let mut admin = redis.admin().await;
    let held = |admin: &mut redis::aio::MultiplexedConnection| {
        let lock = store.lock_key(b"price:1");
        let mut admin = admin.clone();
        async move { admin.exists::<_, bool>(lock).await.unwrap() }
    };
    let (first, second) = (LockToken::new(), LockToken::new());
    // The first holder's lease (50 ms) lapses mid-fetch; a second instance takes the lock.
    let lookup = store
        .lookup(b"price:1", Duration::from_millis(50), first)
        .await
        .unwrap();
    assert!(lookup.locked);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(
        store
            .lock(b"price:1", Duration::from_secs(5), second)
            .await
            .unwrap()
    );
    // The first one's late unlock and late put leave the second one's lock alone.
    store.unlock(b"price:1", first).await.unwrap();
    assert!(held(&mut admin).await, "not the first holder's to give up");
    let entry = RemoteEntry {
        value: Bytes::from_static(b"price 1"),
        fresh_for: Duration::from_secs(30),
        stale_for: Duration::from_secs(40),
        errors_for: Duration::from_secs(40),
        fetch: Duration::from_millis(100),
    };
    store
        .put(b"price:1", entry.clone(), Some(first))
        .await
        .unwrap();
    assert!(
        held(&mut admin).await,
        "a put with another token stores, and frees nothing"
    );
    store.put(b"price:1", entry, Some(second)).await.unwrap();
    assert!(!held(&mut admin).await, "the holder's own put frees it");
}
