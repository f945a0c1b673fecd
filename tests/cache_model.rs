//! The cache against a plain reference model (proptest): one key, sequential callers, an origin
//! that answers at once or is down, and a manual clock. After every operation the answer, the
//! origin's call count and whether an entry is served must match the model, which is the entry
//! life of the module docs written as straight-line code.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::Ratio;
use palisade::cache::{Cache, CacheHandle, CacheLayer};
use palisade::clock::ManualClock;
use palisade::error::BoxError;
use proptest::prelude::*;
use tower::{Layer, Service, ServiceExt};

const TTL_MS: u64 = 100;
const SWR_MS: u64 = 50;
const SIE_MS: u64 = 300;
const BACKOFF_MS: u64 = 1000;

#[derive(Clone, Default)]
struct Origin {
    calls: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl Service<u64> for Origin {
    type Response = u64;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u64, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u64) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let down = self.down.load(Ordering::SeqCst);
        Box::pin(async move {
            if down {
                Err("down".into())
            } else {
                Ok(n as u64)
            }
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Get,
    Advance(u64),
    Invalidate,
    Down(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => Just(Op::Get),
        4 => (1u64..200).prop_map(Op::Advance),
        1 => Just(Op::Invalidate),
        2 => any::<bool>().prop_map(Op::Down),
    ]
}

/// The reference: the entry's value and when it was stored, the origin's state and calls,
/// and when the next refresh may start after a failed one.
#[derive(Debug, Default)]
struct Model {
    now: u64,
    entry: Option<(u64, u64)>,
    down: bool,
    calls: u64,
    refresh_not_before: u64,
}

impl Model {
    /// The answer to a get, applying its effects (fetches, refreshes).
    fn get(&mut self) -> Option<u64> {
        if let Some((value, stored)) = self.entry {
            let age = self.now - stored;
            if age < TTL_MS {
                return Some(value);
            }
            if age < TTL_MS + SWR_MS {
                // Stale: served; one refresh unless backing off after a failure.
                if self.now >= self.refresh_not_before {
                    self.calls += 1;
                    if self.down {
                        self.refresh_not_before = self.now + BACKOFF_MS;
                    } else {
                        self.entry = Some((self.calls, self.now));
                        self.refresh_not_before = 0;
                    }
                }
                return Some(value);
            }
        }
        // Missing or expired: a fetch.
        self.calls += 1;
        if !self.down {
            self.entry = Some((self.calls, self.now));
            self.refresh_not_before = 0;
            return Some(self.calls);
        }
        match self.entry {
            Some((value, stored)) if self.now - stored < TTL_MS + SIE_MS => Some(value),
            _ => None,
        }
    }
}

type Svc = Cache<Origin, fn(&u64) -> Option<u64>, palisade::classify::DefaultClassifier, u64, u64>;

fn build(clock: &ManualClock, origin: &Origin) -> (Svc, CacheHandle<u64, u64>) {
    let key_of: fn(&u64) -> Option<u64> = |key| Some(*key);
    let layer = CacheLayer::builder(Duration::from_millis(TTL_MS), key_of)
        .stale_while_revalidate(Duration::from_millis(SWR_MS))
        .stale_if_error(Duration::from_millis(SIE_MS))
        .refresh_backoff(Duration::from_millis(BACKOFF_MS))
        .ttl_jitter(Ratio::ZERO)
        .early_refresh(palisade::Factor::new_const(0.0))
        .clock(clock.clone())
        .build()
        .unwrap();
    let handle = layer.handle();
    (layer.layer(origin.clone()), handle)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_cache_follows_the_entry_life_model(ops in proptest::collection::vec(op(), 1..60)) {
        support::init_tracing();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let clock = ManualClock::new();
        let origin = Origin::default();
        let (mut svc, handle) = build(&clock, &origin);
        let mut model = Model::default();
        runtime.block_on(async {
            for op in ops {
                match op {
                    Op::Get => {
                        let answer = svc.ready().await.unwrap().call(1).await.ok();
                        // Let a background refresh run to completion.
                        for _ in 0..4 {
                            tokio::task::yield_now().await;
                        }
                        let expected = model.get();
                        prop_assert_eq!(answer, expected, "{:?}", model);
                    }
                    Op::Advance(ms) => {
                        clock.advance(Duration::from_millis(ms));
                        model.now += ms;
                    }
                    Op::Invalidate => {
                        handle.invalidate(&1);
                        model.entry = None;
                        model.refresh_not_before = 0;
                    }
                    Op::Down(down) => {
                        origin.down.store(down, Ordering::SeqCst);
                        model.down = down;
                    }
                }
                prop_assert_eq!(origin.calls.load(Ordering::SeqCst) as u64, model.calls);
            }
            Ok(())
        })?;
    }
}
