//! The request-scoped deadline that every palisade timeout honours.
//!
//! A [`Deadline`] is an instant by which a whole request must be done, carried in the request's
//! extensions (see [`RequestExtensions`]). Layers that wait honour it: a
//! [`Timeout`](crate::timeout::Timeout) limits its call to the smaller of its own limit and the
//! time the deadline leaves, and a request whose deadline has already passed fails at once without
//! reaching the inner service.
//!
//! Deadlines come from three places:
//!
//! - you insert one (`req.extensions_mut().insert(Deadline::after(..))`);
//! - a timeout publishes its own expiry as one
//!   ([`TimeoutLayer::publish_deadline`](crate::timeout::TimeoutLayer::publish_deadline)), so
//!   everything inside it sees the same bound;
//! - with the `http` feature, the server-side timeout reads the caller's remaining time from a
//!   header (`grpc-timeout` or a milliseconds header) and publishes it to the handler, whose
//!   outgoing calls then inherit it.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade::deadline::Deadline;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let mut request = http::Request::new(());
//! request.extensions_mut().insert(Deadline::after(Duration::from_secs(2)));
//!
//! tokio::time::advance(Duration::from_millis(500)).await;
//! let deadline = request.extensions().get::<Deadline>().copied().unwrap();
//! assert_eq!(deadline.remaining(), Duration::from_millis(1500));
//! # }
//! ```
//!
//! [`RequestExtensions`]: crate::RequestExtensions

use std::time::Duration;

use crate::clock::Instant;

/// An instant by which a request must be done, carried in the request's extensions.
///
/// Time is tokio's ([`Instant`]), so paused-time tests control deadlines like every other
/// palisade decision. [`Deadline::after`] with a duration too long to represent (such as
/// `Duration::MAX`) clamps to about 30 years from now instead of panicking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    at: Instant,
}

/// How far ahead [`Deadline::after`] clamps a duration that would overflow an instant.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

impl Deadline {
    /// A deadline at `at`.
    #[must_use]
    pub fn at(at: Instant) -> Self {
        Self { at }
    }

    /// A deadline `duration` from now (tokio's clock).
    #[must_use]
    pub fn after(duration: Duration) -> Self {
        Self::after_from(Instant::now(), duration)
    }

    /// A deadline `duration` after `now`, clamped to about 30 years ahead if `duration` would
    /// overflow an instant.
    pub(crate) fn after_from(now: Instant, duration: Duration) -> Self {
        let mut ahead = duration.min(FAR_FUTURE);
        let at = now.checked_add(duration).unwrap_or_else(|| {
            loop {
                // Only reachable on a platform whose instants cannot reach 30 years ahead: take the
                // farthest instant that can be represented, never one in the past.
                if let Some(at) = now.checked_add(ahead) {
                    break at;
                }
                ahead /= 2;
            }
        });
        Self { at }
    }

    /// The instant of this deadline.
    #[must_use]
    pub fn instant(self) -> Instant {
        self.at
    }

    /// The time left until the deadline, zero once it has passed.
    #[must_use]
    pub fn remaining(self) -> Duration {
        self.remaining_at(Instant::now())
    }

    /// The time left at `now`, zero once the deadline has passed.
    #[must_use]
    pub fn remaining_at(self, now: Instant) -> Duration {
        self.at.saturating_duration_since(now)
    }

    /// Whether the deadline has passed (a deadline is passed at its own instant).
    #[must_use]
    pub fn is_expired(self) -> bool {
        self.is_expired_at(Instant::now())
    }

    /// Whether the deadline has passed at `now`.
    #[must_use]
    pub fn is_expired_at(self, now: Instant) -> bool {
        self.at <= now
    }

    /// The earlier of two deadlines.
    #[must_use]
    pub fn earliest(self, other: Self) -> Self {
        self.min(other)
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadline_is_expired_at_its_own_instant_not_before() {
        let deadline = Deadline::after(Duration::from_millis(10));
        tokio::time::advance(Duration::from_millis(9)).await;
        assert!(!deadline.is_expired());
        assert_eq!(deadline.remaining(), Duration::from_millis(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(deadline.is_expired());
        assert_eq!(deadline.remaining(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn huge_durations_clamp_instead_of_panicking() {
        let deadline = Deadline::after(Duration::MAX);
        assert!(deadline.remaining() >= Duration::from_secs(29 * 365 * 24 * 3600));
    }

    #[test]
    fn earliest_picks_the_sooner_deadline() {
        let now = Instant::now();
        let soon = Deadline::at(now + Duration::from_secs(1));
        let late = Deadline::at(now + Duration::from_secs(2));
        assert_eq!(soon.earliest(late), soon);
        assert_eq!(late.earliest(soon), soon);
    }
}
