//! The retry layer's private settings.

use std::time::Duration;

use super::backoff::Backoff;

/// The settings every response future copies (small and `Copy`: no shared state is touched on
/// the path where nothing fails).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_elapsed: Option<Duration>,
    pub(crate) max_pushback: Duration,
    pub(crate) fail_when_exhausted: bool,
    /// The longest reopening worth waiting for once per call; `None`: fail fast.
    pub(crate) reopening_wait: Option<Duration>,
}
