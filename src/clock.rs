//! The one time source for every layer.
//!
//! palisade never reads `std::time::Instant::now()` (clippy's `disallowed-methods` enforces it).
//! Decisions read a [`Clock`], whose default reads [`tokio::time::Instant`], and every sleep goes
//! through tokio's timer. Under `#[tokio::test(start_paused = true)]` both follow tokio's paused
//! clock together, so a test that calls `tokio::time::advance` moves what a layer *decides* and
//! when its timers *fire* by exactly the same amount.
//!
//! [`ManualClock`] is for the other kind of test: driving a pure state machine by hand, with no
//! runtime at all. It does not drive tokio's timers; async tests use paused tokio time instead.
//!
//! Times that a state machine keeps in an atomic word are never raw [`Instant`]s: they are `u64`
//! nanosecond offsets from a base instant taken when the state machine was built, which fits
//! about 584 years.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade::clock::{Clock, ManualClock};
//!
//! let manual = ManualClock::new();
//! let clock = Clock::from(manual.clone());
//! let start = clock.now();
//! manual.advance(Duration::from_millis(250));
//! assert_eq!(clock.now() - start, Duration::from_millis(250));
//! ```

use std::time::Duration;

use crate::sync::{Arc, AtomicU64, Ordering};

/// The instant type every palisade clock returns: tokio's, so paused-time tests control it.
pub use tokio::time::Instant;

/// Where a layer reads the current time.
///
/// The default reads tokio's clock ([`Clock::tokio`]); [`Clock::from`] a [`ManualClock`] reads a
/// clock that only moves when the test moves it. Cloning is cheap and clones read the same time.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    source: Source,
}

#[derive(Clone, Debug, Default)]
enum Source {
    #[default]
    Tokio,
    Manual(ManualClock),
}

impl Clock {
    /// tokio's clock: [`tokio::time::Instant::now`], which follows a paused test runtime.
    #[must_use]
    pub fn tokio() -> Self {
        Self {
            source: Source::Tokio,
        }
    }

    /// The current time.
    #[must_use]
    pub fn now(&self) -> Instant {
        match &self.source {
            Source::Tokio => Instant::now(),
            Source::Manual(manual) => manual.now(),
        }
    }
}

impl Clock {
    /// Whether this is tokio's clock (whose time tokio's timers follow).
    #[cfg_attr(not(feature = "circuit-breaker"), allow(dead_code))]
    pub(crate) fn is_tokio(&self) -> bool {
        matches!(self.source, Source::Tokio)
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Self {
        Self {
            source: Source::Manual(manual),
        }
    }
}

/// A clock that moves only when told to, for testing state machines without a runtime.
///
/// Clones share one time: advancing any clone advances them all, from any thread. It starts at
/// the instant it was created and never goes backwards.
///
/// It does not drive tokio's timers: a `tokio::time::sleep` does not wake when a `ManualClock`
/// advances. For async tests use `#[tokio::test(start_paused = true)]` and
/// `tokio::time::advance` instead.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use palisade::clock::ManualClock;
///
/// let clock = ManualClock::new();
/// let other = clock.clone();
/// other.advance(Duration::from_secs(3));
/// assert_eq!(clock.elapsed(), Duration::from_secs(3));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    shared: Arc<Shared>,
}

struct Shared {
    epoch: Epoch,
    /// Nanoseconds advanced since `epoch`. Only ever grows (saturating at `u64::MAX`).
    elapsed: AtomicU64,
}

impl ManualClock {
    /// A clock standing at the current tokio time.
    #[must_use]
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A clock standing at `start`.
    #[must_use]
    pub fn starting_at(start: Instant) -> Self {
        Self {
            shared: Arc::new(Shared {
                epoch: Epoch::new(start),
                elapsed: AtomicU64::new(0),
            }),
        }
    }

    /// The current time of this clock.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.shared.epoch.instant(self.elapsed_ticks())
    }

    /// How far this clock has been advanced since it was created.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_ticks())
    }

    /// Moves the clock forward by `by`, for every clone.
    ///
    /// Concurrent advances add up; the total saturates at about 584 years rather than wrapping.
    pub fn advance(&self, by: Duration) {
        let by = Epoch::ticks_of(by);
        // AcqRel: the Release half publishes whatever the advancing thread did before moving
        // time on, to any thread whose `now()` (Acquire) observes the new time; the Acquire half
        // keeps advances from different threads ordered with each other. `fetch_update` retries
        // on contention, so concurrent advances are never lost; the closure never fails.
        let _ = self
            .shared
            .elapsed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_add(by))
            });
    }

    fn elapsed_ticks(&self) -> u64 {
        // Acquire pairs with the Release half of `advance`: a thread that reads the new time
        // also sees what the advancing thread wrote before advancing (tests rely on that when
        // they advance on one thread and assert on another).
        self.shared.elapsed.load(Ordering::Acquire)
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualClock")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

/// How far before the real time of its first use the process-wide [`anchor`] is set.
#[cfg(any(feature = "circuit-breaker", feature = "throttle"))]
const ANCHOR_LEAD: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[cfg(any(feature = "circuit-breaker", feature = "throttle"))]
static ANCHOR: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// The process-wide anchor: an instant before every instant palisade's clocks will read, so that
/// a value small enough to move in one register (a rejection, say) can name an instant as one
/// `u64`, nanoseconds since the anchor, where an [`Instant`] takes twelve bytes and padding.
///
/// Fixed by the first call, ten years before the *real* monotonic time of that call (or as far
/// back as the platform's instants go), never from a clock's reading: a paused tokio clock can
/// have jumped decades ahead, and the anchor must not follow it. Every tokio clock starts at the
/// real time its runtime was built and only moves forward, so its readings fall after the
/// anchor unless the process is ten years old. Only a [`ManualClock`] started by hand in the
/// past can read earlier, and callers treat such an instant as one they cannot name.
#[cfg(any(feature = "circuit-breaker", feature = "throttle"))]
pub(crate) fn anchor() -> Instant {
    *ANCHOR.get_or_init(|| {
        // The real monotonic clock, on purpose: see above.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::from_std(std::time::Instant::now());
        let mut lead = ANCHOR_LEAD;
        loop {
            // Ends: `lead` halves down to zero, and `now - 0` is `now`.
            if let Some(at) = now.checked_sub(lead) {
                return at;
            }
            lead /= 2;
        }
    })
}

/// The anchor, if [`anchor`] has fixed it.
#[cfg(any(feature = "circuit-breaker", feature = "throttle"))]
pub(crate) fn anchor_if_fixed() -> Option<Instant> {
    ANCHOR.get().copied()
}

/// A base instant that `u64` ticks (nanoseconds since the base) are counted from.
///
/// State machines keep time in atomics as ticks from their own `Epoch`, never as raw instants.
/// Instants before the base read as tick 0; 2^64 ns is about 584 years, so ticks saturate rather
/// than wrap for any realistic uptime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Epoch {
    base: Instant,
}

impl Epoch {
    pub(crate) fn new(base: Instant) -> Self {
        Self { base }
    }

    /// Ticks from the base to `at` (0 if `at` is before the base, saturating at `u64::MAX`).
    #[cfg_attr(
        not(any(
            feature = "circuit-breaker",
            feature = "idempotency",
            feature = "throttle"
        )),
        allow(dead_code)
    )]
    pub(crate) fn ticks(&self, at: Instant) -> u64 {
        Self::ticks_of(at.saturating_duration_since(self.base))
    }

    /// The instant `ticks` after the base (the latest representable instant if that overflows,
    /// which only a clock advanced by centuries can reach).
    pub(crate) fn instant(&self, ticks: u64) -> Instant {
        let mut ahead = Duration::from_nanos(ticks);
        loop {
            if let Some(at) = self.base.checked_add(ahead) {
                return at;
            }
            ahead /= 2;
        }
    }

    /// A duration as ticks, saturating at `u64::MAX`.
    pub(crate) fn ticks_of(duration: Duration) -> u64 {
        u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Ticks as a duration.
    #[cfg_attr(not(feature = "idempotency"), allow(dead_code))]
    pub(crate) fn duration_of(ticks: u64) -> Duration {
        Duration::from_nanos(ticks)
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_one_time() {
        let clock = ManualClock::new();
        let start = clock.now();
        let clone = clock.clone();
        clone.advance(Duration::from_millis(7));
        assert_eq!(clock.now() - start, Duration::from_millis(7));
        assert_eq!(clone.now(), clock.now());
    }

    #[test]
    fn manual_clock_saturates_instead_of_wrapping() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_nanos(u64::MAX - 1));
        clock.advance(Duration::from_secs(10));
        assert_eq!(clock.elapsed(), Duration::from_nanos(u64::MAX));
        clock.advance(Duration::MAX);
        assert_eq!(clock.elapsed(), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn clock_from_manual_reads_the_manual_time() {
        let manual = ManualClock::new();
        let clock = Clock::from(manual.clone());
        let before = clock.now();
        manual.advance(Duration::from_secs(1));
        assert_eq!(clock.now() - before, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = Clock::tokio();
        let before = clock.now();
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now() - before, Duration::from_millis(1500));
    }

    #[test]
    fn epoch_turns_ticks_into_instants() {
        let base = Instant::now();
        let epoch = Epoch::new(base);
        assert_eq!(epoch.instant(1_234_000), base + Duration::from_micros(1234));
        assert_eq!(epoch.ticks(base + Duration::from_micros(1234)), 1_234_000);
        let before = base.checked_sub(Duration::from_secs(1)).unwrap_or(base);
        assert_eq!(epoch.ticks(before), 0);
        assert_eq!(Epoch::ticks_of(Duration::from_micros(1234)), 1_234_000);
        assert_eq!(Epoch::ticks_of(Duration::MAX), u64::MAX);
    }
}

/// loom models for the clock's one shared word.
///
/// Invariants checked: concurrent advances are never lost (the total is the sum), and a reader
/// never sees time go backwards.
#[cfg(all(test, palisade_loom))]
mod loom_models {
    use super::*;

    #[test]
    fn loom_concurrent_advances_add_up_and_reads_are_monotonic() {
        loom::model(|| {
            let clock = ManualClock::starting_at(Instant::now());
            let a = clock.clone();
            let b = clock.clone();
            let t1 = loom::thread::spawn(move || a.advance(Duration::from_nanos(3)));
            let t2 = loom::thread::spawn(move || b.advance(Duration::from_nanos(5)));
            let first = clock.elapsed();
            let second = clock.elapsed();
            assert!(
                second >= first,
                "time went backwards: {first:?} then {second:?}"
            );
            t1.join().unwrap();
            t2.join().unwrap();
            assert_eq!(clock.elapsed(), Duration::from_nanos(8));
        });
    }
}
