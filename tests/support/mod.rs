//! Helpers shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different subset

/// Sends `tracing` output to the test's captured output, so a failing test shows what the
/// layers did. Safe to call from every test.
pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "palisade=trace".into()),
        )
        .with_test_writer()
        .try_init();
}
