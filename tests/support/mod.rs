//! Helpers shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different subset

/// Sends `tracing` output to the test's captured output, so a failing test, or any test run by
/// name with `--nocapture`, shows what the layers did: palisade's decisions (debug) and state
/// changes (info) by default, anything `RUST_LOG` asks for instead (`palisade=trace` adds every
/// rejection). Every integration test calls it first; safe to call any number of times.
pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "palisade=debug".into()),
        )
        .with_test_writer()
        .try_init();
}
