//! The fallback layer through its public API: answering rejections (sync and async), failures
//! when asked to, marking and counting answers, keeping the request's parts, and passing
//! everything else through untouched.

mod support;

use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use palisade::Ratio;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::classify::StatusClassifier;
use palisade::error::{BoxError, Rejection};
use palisade::fallback::{
    FALLBACK_HEADER, Failure, FailureCause, FallbackAnswer, FallbackLayer, FallbackReason,
};
use palisade::http::ResponseBody;
use palisade::throttle::ThrottleLayer;
use palisade::timeout::TimeoutLayer;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// A service that answers with the status in the request's `x-status` header, or fails with a
/// transport error for `x-status: error`, or sleeps for `x-sleep` milliseconds first.
fn backend()
-> impl Service<Request<()>, Response = Response<String>, Error = BoxError, Future: Send + 'static>
+ Clone
+ Send {
    service_fn(|request: Request<()>| async move {
        if let Some(ms) = request.headers().get("x-sleep") {
            let ms: u64 = ms.to_str().unwrap().parse().unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        match request
            .headers()
            .get("x-status")
            .map(|v| v.to_str().unwrap())
        {
            Some("error") => Err::<_, BoxError>("connection reset".into()),
            Some(code) => Ok(Response::builder()
                .status(code.parse::<u16>().unwrap())
                .body(format!("status {code}"))
                .unwrap()),
            None => Ok(Response::new("real answer".to_owned())),
        }
    })
}

fn request(status: Option<&str>) -> Request<()> {
    let mut builder = Request::get("http://backend.test/items?page=2");
    if let Some(status) = status {
        builder = builder.header("x-status", status);
    }
    builder.body(()).unwrap()
}

async fn body(response: Response<ResponseBody<String>>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

fn canned(_: Failure<String>) -> Response<ResponseBody<String>> {
    Response::new(ResponseBody::full(Bytes::from_static(b"canned")))
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_answered_marked_and_counted() {
    support::init_tracing();
    let fallback = FallbackLayer::sync(canned);
    let breaker = CircuitBreakerLayer::builder()
        .classifier(StatusClassifier::new())
        .consecutive_failures(NonZeroU32::MIN)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(fallback.clone())
        .layer(breaker)
        .service(backend());
    // A 503 is the backend's own answer (and trips the breaker): passed through, unmarked.
    let first = svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("503")))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!first.headers().contains_key(FALLBACK_HEADER));
    assert_eq!(fallback.answered(), 0);
    // Refused by the open circuit: answered.
    let second = svc
        .ready()
        .await
        .unwrap()
        .call(request(None))
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()[FALLBACK_HEADER], "circuit-open");
    assert_eq!(
        second
            .extensions()
            .get::<FallbackAnswer>()
            .map(|a| a.reason),
        Some(FallbackReason::CircuitOpen)
    );
    assert_eq!(body(second).await, "canned");
    assert_eq!(fallback.answered(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_async_answer_sees_the_rejection_it_answers() {
    support::init_tracing();
    let fallback = FallbackLayer::new(|failure: Failure<String>| async move {
        let rejection = failure.rejection().expect("a rejection");
        assert!(rejection.protects_dependency());
        let Some(Rejection::Throttled(throttled)) = failure.rejection() else {
            panic!("{:?}", failure.cause)
        };
        assert!(throttled.is_shedding());
        tokio::task::yield_now().await;
        Ok::<_, BoxError>(Response::new(ResponseBody::full(Bytes::from(
            "from the async answer",
        ))))
    });
    let throttle = ThrottleLayer::builder()
        .classifier(StatusClassifier::new())
        .shed_after(NonZeroU32::MIN)
        .probe_jitter(Ratio::ZERO)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(fallback.clone())
        .layer(throttle)
        .service(backend());
    let _ = svc.ready().await.unwrap().call(request(Some("500"))).await;
    let answer = svc
        .ready()
        .await
        .unwrap()
        .call(request(None))
        .await
        .unwrap();
    assert_eq!(answer.headers()[FALLBACK_HEADER], "throttled");
    assert_eq!(body(answer).await, "from the async answer");
}

#[tokio::test(start_paused = true)]
async fn without_on_failures_only_rejections_are_answered() {
    support::init_tracing();
    let fallback = FallbackLayer::sync(canned);
    let mut svc = ServiceBuilder::new()
        .layer(fallback.clone())
        .layer(TimeoutLayer::new(Duration::from_millis(100)))
        .service(backend());
    let ok = svc
        .ready()
        .await
        .unwrap()
        .call(request(None))
        .await
        .unwrap();
    assert_eq!(body(ok).await, "real answer");
    let failed = svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("502")))
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY, "passed through");
    let error = svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("error")))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "connection reset");
    assert_eq!(fallback.answered(), 0);
    // A timeout is palisade's own rejection: answered.
    let mut slow = request(None);
    slow.headers_mut().insert("x-sleep", "500".parse().unwrap());
    let answered = svc.ready().await.unwrap().call(slow).await.unwrap();
    assert_eq!(answered.headers()[FALLBACK_HEADER], "timed-out");
    assert_eq!(fallback.answered(), 1);
}

#[tokio::test(start_paused = true)]
async fn on_failures_answers_errors_and_failure_statuses_too() {
    support::init_tracing();
    let fallback = FallbackLayer::sync(|failure: Failure<String>| {
        let text = match &failure.cause {
            FailureCause::Response(response) => format!("was {}", response.status().as_u16()),
            FailureCause::Error(error) => format!("was {error}"),
        };
        Response::new(ResponseBody::full(Bytes::from(text)))
    })
    .on_failures(StatusClassifier::new().success(StatusCode::TOO_MANY_REQUESTS));
    let mut svc = fallback.clone().layer_over(backend());
    for (status, header, text) in [
        (Some("503"), "status-503", "was 503"),
        (Some("error"), "error", "was connection reset"),
    ] {
        let answer = svc
            .ready()
            .await
            .unwrap()
            .call(request(status))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(answer.headers()[FALLBACK_HEADER], header);
        assert_eq!(body(answer).await, text);
    }
    // A status the classifier calls a success is left alone.
    let passed = svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("429")))
        .await
        .unwrap();
    assert_eq!(passed.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(fallback.answered(), 2);
}

/// `layer` with the service first, for readability.
trait LayerOver<S>: tower::Layer<S> + Sized {
    fn layer_over(self, inner: S) -> Self::Service {
        self.layer(inner)
    }
}
impl<S, L: tower::Layer<S>> LayerOver<S> for L {}

#[tokio::test(start_paused = true)]
async fn a_kept_request_shows_the_answer_its_parts() {
    support::init_tracing();
    let fallback = FallbackLayer::sync(|failure: Failure<String>| {
        let parts = failure.request.as_ref().expect("kept");
        let text = format!(
            "{} {} {:?}",
            parts.method, parts.uri, parts.headers["x-status"]
        );
        Response::new(ResponseBody::full(Bytes::from(text)))
    })
    .on_failures(StatusClassifier::new())
    .keep_request(true);
    let mut svc = fallback.layer_over(backend());
    let answer = svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("500")))
        .await
        .unwrap();
    assert_eq!(
        body(answer).await,
        "GET http://backend.test/items?page=2 \"500\""
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_not_kept_is_not_shown() {
    support::init_tracing();
    let fallback = FallbackLayer::sync(|failure: Failure<String>| {
        assert!(failure.request.is_none());
        failure.into_result().unwrap()
    })
    .on_failures(StatusClassifier::new());
    let mut svc = fallback.layer_over(backend());
    let answer = svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("500")))
        .await
        .unwrap();
    // Handing the failure response back marks it all the same.
    assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.headers()[FALLBACK_HEADER], "status-500");
}

#[tokio::test(start_paused = true)]
async fn an_answer_that_fails_returns_its_own_error() {
    support::init_tracing();
    let fallback = FallbackLayer::new(|_: Failure<String>| async {
        Err::<Response<ResponseBody<String>>, BoxError>("no cached copy either".into())
    })
    .on_failures(StatusClassifier::new());
    let mut svc = fallback.layer_over(backend());
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("error")))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no cached copy either");
}
