//! Layer settings from TOML and JSON (feature `serde`): what parses builds the same layer the
//! builder would, a value out of range is refused by the builder's own check naming the
//! setting, and a typo or a malformed duration is refused naming the field.

use std::time::Duration;

use palisade::circuit_breaker::State;
use palisade::config::{
    CircuitBreakerConfig, HttpClientConfig, HttpServerConfig, IdempotencyConfig, RetryConfig,
    Switch, ThrottleConfig, TimeoutConfig,
};
use palisade::error::{BoxError, ConfigError};
use tower::{Layer, Service, ServiceExt, service_fn};

#[test]
fn a_breaker_from_toml_trips_as_configured() {
    let config: CircuitBreakerConfig = toml::from_str(
        r#"
        name = "payments"
        consecutive_failures = 2
        open_for = "1s"
        "#,
    )
    .unwrap();
    let layer = config.build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|()| async {
        Err::<(), BoxError>("down".into())
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..2 {
            let _ = svc.ready().await.unwrap().call(()).await;
        }
    });
    assert_eq!(
        handle.state(),
        State::Open,
        "two failures open it, as configured"
    );
}

#[test]
fn the_builders_checks_apply_and_name_the_setting_and_its_range() {
    // A count window larger than the builder allows.
    let config: CircuitBreakerConfig = toml::from_str("count_window = 5000").unwrap();
    let error = config.build().unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::CountOutOfRange {
                setting: "count_window",
                max: 4096,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("between 1 and 4096"), "{error}");

    // Two trip policies at once.
    let config: CircuitBreakerConfig =
        toml::from_str("consecutive_failures = 3\ncount_window = 50").unwrap();
    let error = config.build().unwrap_err();
    assert!(
        error.to_string().contains("`count_window`") && error.to_string().contains("one of"),
        "{error}"
    );

    // A backoff whose cap is under its base, refused by `Backoff::new`.
    let config: RetryConfig = toml::from_str("[backoff]\nbase = \"2s\"\ncap = \"1s\"\n").unwrap();
    let error = config.layer().unwrap_err();
    assert!(error.to_string().contains("backoff"), "{error}");
}

#[test]
fn a_typo_a_bad_duration_and_an_out_of_range_share_name_the_field() {
    let typo = toml::from_str::<CircuitBreakerConfig>("open_fr = \"1s\"").unwrap_err();
    let message = typo.to_string();
    assert!(message.contains("unknown field `open_fr`"), "{message}");
    assert!(
        message.contains("open_for"),
        "the known fields are listed: {message}"
    );

    let unitless = toml::from_str::<CircuitBreakerConfig>("open_for = \"10\"").unwrap_err();
    let message = unitless.to_string();
    assert!(message.contains("open_for"), "{message}");
    assert!(message.contains("without a unit"), "{message}");

    let share = toml::from_str::<CircuitBreakerConfig>("failure_rate = 1.5").unwrap_err();
    let message = share.to_string();
    assert!(message.contains("failure_rate"), "{message}");
    assert!(message.contains("between 0 and 1"), "{message}");

    let zero = serde_json::from_str::<ThrottleConfig>(r#"{"window": 0}"#).unwrap_err();
    assert!(zero.to_string().contains("nonzero"), "{zero}");

    let missing = toml::from_str::<TimeoutConfig>("name = \"x\"").unwrap_err();
    assert!(
        missing.to_string().contains("missing field `limit`"),
        "{missing}"
    );
}

#[test]
fn budgets_jitters_and_switches_parse_by_name() {
    let retry: RetryConfig = toml::from_str(
        r#"
        max_attempts = 4
        max_elapsed = "1m30s"
        backoff = { base = "50ms", cap = "2s", jitter = "decorrelated" }
        budget = { kind = "token_bucket", max_tokens = 20, token_ratio = 0.2 }
        "#,
    )
    .unwrap();
    assert_eq!(retry.max_elapsed, Some(Duration::from_secs(90)));
    let layer = retry.layer().unwrap();
    assert!(layer.budget_handle().allows_retry());

    let unknown = toml::from_str::<RetryConfig>("budget = { kind = \"leaky\" }").unwrap_err();
    assert!(
        unknown.to_string().contains("unknown variant `leaky`"),
        "{unknown}"
    );
    let jitter = toml::from_str::<RetryConfig>(
        "backoff = { base = \"1s\", cap = \"2s\", jitter = \"wild\" }",
    )
    .unwrap_err();
    assert!(
        jitter.to_string().contains("unknown variant `wild`"),
        "{jitter}"
    );

    let client: HttpClientConfig =
        toml::from_str("total_timeout = \"off\"\nattempt_timeout = \"300ms\"").unwrap();
    assert_eq!(client.total_timeout, Some(Switch::Off));
    assert_eq!(
        client.attempt_timeout,
        Some(Switch::After(Duration::from_millis(300)))
    );
    let wrong = toml::from_str::<HttpClientConfig>("total_timeout = \"never\"").unwrap_err();
    assert!(wrong.to_string().contains("or \"off\""), "{wrong}");
}

#[test]
fn a_client_with_both_guards_is_refused_and_a_server_without_idempotency_builds() {
    let both: HttpClientConfig =
        toml::from_str("[throttle]\nwindow = 50\n[breaker]\nconsecutive_failures = 3\n").unwrap();
    let error = both.layer().unwrap_err();
    assert!(error.to_string().contains("`breaker`"), "{error}");

    let server: HttpServerConfig =
        toml::from_str("name = \"api\"\ntimeout = \"5s\"\nidempotency = false").unwrap();
    let _server = server.layer().unwrap();
    let typo = toml::from_str::<HttpServerConfig>("[idempotency]\nleese = \"30s\"").unwrap_err();
    assert!(typo.to_string().contains("unknown field `leese`"), "{typo}");
}

#[tokio::test]
async fn idempotency_from_toml_enforces_its_settings_and_refuses_a_retention_past_the_record() {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::post;

    let server: HttpServerConfig = toml::from_str(
        r#"
        [idempotency]
        require_key = true
        methods = ["POST"]
        lease = "30s"
        in_flight = "conflict"
        store_failure = "fail_closed"
        "#,
    )
    .unwrap();
    let app: Router = Router::new()
        .route("/orders", post(|| async { "placed" }))
        .layer(server.layer().unwrap());
    let keyless = http::Request::post("/orders").body(Body::empty()).unwrap();
    let answer = app.oneshot(keyless).await.unwrap();
    assert_eq!(answer.status(), 400, "require_key came from the file");

    let config: IdempotencyConfig =
        toml::from_str("retention = \"1h\"\nclient_error_retention = \"2h\"").unwrap();
    let error = config.build().unwrap_err();
    assert!(
        error.to_string().contains("`client_error_retention`"),
        "{error}"
    );
    let method = toml::from_str::<IdempotencyConfig>("methods = [\"PO ST\"]").unwrap();
    assert!(
        method
            .build()
            .unwrap_err()
            .to_string()
            .contains("`methods`")
    );
}

#[test]
fn an_http_cache_from_toml_builds_and_a_mode_is_required_by_name() {
    use palisade::config::HttpCacheConfig;
    let config: HttpCacheConfig = toml::from_str(
        r#"
        mode = "shared"
        max_body = 1048576
        stale_while_revalidate = "30s"
        stale_if_error = "10m"
        "#,
    )
    .unwrap();
    let _cache = config.builder().build().unwrap();
    let missing = toml::from_str::<HttpCacheConfig>("max_entries = 10").unwrap_err();
    assert!(
        missing.to_string().contains("missing field `mode`"),
        "{missing}"
    );
    let wrong = toml::from_str::<HttpCacheConfig>("mode = \"public\"").unwrap_err();
    assert!(
        wrong.to_string().contains("unknown variant `public`"),
        "{wrong}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_from_json_cuts_a_slow_call_at_its_limit() {
    let config: TimeoutConfig = serde_json::from_str(r#"{"limit": "250ms"}"#).unwrap();
    let slow = service_fn(|_: http::Request<()>| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<(), BoxError>(())
    });
    let started = tokio::time::Instant::now();
    let error = config
        .layer()
        .layer(slow)
        .oneshot(http::Request::new(()))
        .await
        .unwrap_err();
    assert!(error.is::<palisade::timeout::TimedOut>(), "{error}");
    assert_eq!(started.elapsed(), Duration::from_millis(250));
}
