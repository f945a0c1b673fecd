//! The idempotency layer under hostile use, through a real axum `Router` on paused time: a
//! flood of keys from one tenant, oversized responses, a full store of dead claims at the
//! sweeps' schedule, a response body that panics while it is stored, concurrent duplicates
//! across tenants, and the warning for a layer left without an identity. In every case the
//! guarantee (a request with a key runs at most once) and other tenants' service must hold.

mod support;

use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::routing::post;
use http::{HeaderName, Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use palisade::idempotency::{
    Anonymous, IdempotencyBuilder, IdempotencyLayer, IdentityHeader, MemoryStore,
};
use tower::ServiceExt;

const TENANT: HeaderName = HeaderName::from_static("x-tenant");

#[derive(Clone, Default)]
struct Runs(Arc<AtomicUsize>);

impl Runs {
    fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// `POST /orders` (201), `POST /slow` (201 after 120 s), `POST /big` (201, 64 KiB),
/// `POST /panicky` (201 with a body that sends one frame, waits 1 s, then, the first time the
/// route runs, panics).
fn app(runs: &Runs, layer: IdempotencyLayer) -> Router {
    Router::new()
        .route(
            "/orders",
            post(|State(runs): State<Runs>| async move {
                (StatusCode::CREATED, format!("order {}", runs.next()))
            }),
        )
        .route(
            "/slow",
            post(|State(runs): State<Runs>| async move {
                runs.next();
                tokio::time::sleep(Duration::from_secs(120)).await;
                (StatusCode::CREATED, "late")
            }),
        )
        .route(
            "/big",
            post(|State(runs): State<Runs>| async move {
                runs.next();
                (StatusCode::CREATED, vec![b'x'; 64 * 1024])
            }),
        )
        .route(
            "/panicky",
            post(|State(runs): State<Runs>| async move {
                let first = runs.next() == 1;
                http::Response::builder()
                    .status(StatusCode::CREATED)
                    .body(Body::new(Panicky {
                        panics: first,
                        ..Panicky::default()
                    }))
                    .unwrap()
            }),
        )
        .layer(layer)
        .with_state(runs.clone())
}

/// A body that sends one frame, waits a second, then panics on the next poll (or ends).
#[derive(Default)]
struct Panicky {
    panics: bool,
    sent: bool,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for Panicky {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if !self.sent {
            self.sent = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first part")))));
        }
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_secs(1))));
        match sleep.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) if self.panics => panic!("the response body panicked"),
            Poll::Ready(()) => Poll::Ready(None),
        }
    }
}

fn request(path: &str, tenant: &str, key: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(TENANT, tenant)
        .header("idempotency-key", format!("\"{key}\""))
        .body(Body::from("the order"))
        .unwrap()
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn problem_type(body: &Bytes) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["type"].as_str().unwrap().to_owned()
}

/// A layer scoping records by the tenant header, to configure further.
fn tenants() -> IdempotencyBuilder {
    IdempotencyLayer::builder().identity(IdentityHeader::new(TENANT))
}

#[tokio::test(start_paused = true)]
async fn a_tenant_flooding_keys_meets_its_quota_and_others_are_served() {
    support::init_tracing();
    let runs = Runs::default();
    let store = MemoryStore::builder()
        .max_entries(NonZeroUsize::new(100).unwrap())
        .max_per_owner(NonZeroUsize::new(10).unwrap())
        .build();
    let app = app(&runs, tenants().store(store.clone()).build().unwrap());
    let mut refused = 0;
    for n in 0..50 {
        let (status, _, body) = send(&app, request("/orders", "mallory", &format!("k{n}"))).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(
                problem_type(&body),
                "urn:palisade:idempotency-quota-exceeded"
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 40, "ten records per tenant");
    assert_eq!(runs.count(), 10);
    // Everyone else is served, and the flood's own ten are still replayed.
    for tenant in ["alice", "bob"] {
        let (status, _, _) = send(&app, request("/orders", tenant, "k0")).await;
        assert_eq!(status, StatusCode::CREATED, "{tenant}");
    }
    let (_, headers, _) = send(&app, request("/orders", "mallory", "k3")).await;
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(runs.count(), 12);
    assert_eq!(store.len(), 12);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_oversized_responses_never_runs_a_request_twice() {
    support::init_tracing();
    let runs = Runs::default();
    let store = MemoryStore::builder().max_bytes(256 * 1024).build();
    let app = app(
        &runs,
        tenants()
            .store(store.clone())
            .response_limit(16 * 1024)
            .build()
            .unwrap(),
    );
    for n in 0..20 {
        let (status, _, body) = send(&app, request("/big", "mallory", &format!("big{n}"))).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body.len(), 64 * 1024, "each client gets its whole answer");
    }
    assert_eq!(runs.count(), 20);
    // Every retry is told its request ran; none runs it again, and nothing big was kept.
    for n in 0..20 {
        let (status, _, body) = send(&app, request("/big", "mallory", &format!("big{n}"))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            problem_type(&body),
            "urn:palisade:idempotency-result-not-kept"
        );
    }
    assert_eq!(runs.count(), 20);
    assert_eq!(store.bytes(), 0);
    // Others are still served.
    let (status, _, _) = send(&app, request("/orders", "alice", "a1")).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test(start_paused = true)]
async fn duplicates_across_tenants_run_once_per_tenant() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(&runs, tenants().build().unwrap());
    let calls: Vec<_> = (0..40)
        .map(|n| {
            let app = app.clone();
            let tenant = if n % 2 == 0 { "alice" } else { "bob" };
            tokio::spawn(async move { send(&app, request("/orders", tenant, "same")).await })
        })
        .collect();
    let mut bodies: Vec<String> = Vec::new();
    for call in calls {
        let (status, _, body) = call.await.unwrap();
        if status == StatusCode::CREATED {
            bodies.push(String::from_utf8(body.to_vec()).unwrap());
        } else {
            assert_eq!(status, StatusCode::CONFLICT, "a duplicate in flight");
        }
    }
    assert_eq!(runs.count(), 2, "once for alice, once for bob");
    bodies.sort();
    bodies.dedup();
    assert_eq!(
        bodies.len(),
        2,
        "each tenant sees its own order: {bodies:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_full_of_dead_claims_admits_new_keys_at_every_sweep_mark() {
    support::init_tracing();
    // Claims whose handlers outlive their 1 s lease fill a store of two. At each minute mark
    // the periodic sweep is due as well; the full store's own sweep must still run, so the new
    // key gets in.
    let runs = Runs::default();
    let store = MemoryStore::builder()
        .max_entries(NonZeroUsize::new(2).unwrap())
        .build();
    let app = app(
        &runs,
        tenants()
            .store(store.clone())
            .lease(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let hang = |key: String| {
        let app = app.clone();
        tokio::spawn(async move { send(&app, request("/slow", "alice", &key)).await })
    };
    let start = tokio::time::Instant::now();
    hang("filler-0".into());
    hang("filler-1".into());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!((store.len(), runs.count()), (2, 2));
    for mark in [60u64, 120, 180] {
        tokio::time::sleep_until(start + Duration::from_secs(mark)).await;
        let before = runs.count();
        hang(format!("mark-{mark}"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(runs.count(), before + 1, "the new key ran at {mark} s");
        // Fill the store again for the next mark.
        hang(format!("filler-{mark}"));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(store.len(), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_panics_while_stored_releases_its_key() {
    support::init_tracing();
    let runs = Runs::default();
    let app = app(&runs, tenants().build().unwrap());
    // The client gives up while the layer is still reading the response to store it: the
    // rest is read without the client, and the body panics.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        send(&app, request("/panicky", "alice", "p")),
    )
    .await;
    assert!(gave_up.is_err());
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The key was released (not left claimed for the 90 s lease): the retry runs, and its
    // answer is stored and replayed.
    let (status, _, body) = send(&app, request("/panicky", "alice", "p")).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(runs.count(), 2);
    let (_, headers, _) = send(&app, request("/panicky", "alice", "p")).await;
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(runs.count(), 2);
}

/// Counts `tracing` warnings.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::WARN {
            struct Message(String);
            impl tracing::field::Visit for Message {
                fn record_debug(
                    &mut self,
                    field: &tracing::field::Field,
                    value: &dyn std::fmt::Debug,
                ) {
                    if field.name() == "message" {
                        self.0 = format!("{value:?}");
                    }
                }
            }
            let mut message = Message(String::new());
            event.record(&mut message);
            self.0.lock().unwrap().push(message.0);
        }
    }
}

#[test]
fn a_layer_left_without_an_identity_says_so_once() {
    support::init_tracing();
    use tracing_subscriber::layer::SubscriberExt;
    let count = |layer: IdempotencyLayer| {
        let warnings = Warnings::default();
        let subscriber = tracing_subscriber::registry().with(warnings.clone());
        tracing::subscriber::with_default(subscriber, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            runtime.block_on(async {
                let runs = Runs::default();
                let app = app(&runs, layer);
                for n in 0..3 {
                    send(&app, request("/orders", "alice", &format!("w{n}"))).await;
                }
            });
        });
        let warnings = warnings.0.lock().unwrap().clone();
        warnings
            .iter()
            .filter(|w| w.contains("without an identity"))
            .count()
    };
    assert_eq!(count(IdempotencyLayer::new()), 1, "once per layer");
    assert_eq!(
        count(
            IdempotencyLayer::builder()
                .identity(Anonymous)
                .build()
                .unwrap()
        ),
        0,
        "chosen"
    );
    assert_eq!(count(tenants().build().unwrap()), 0);
}
