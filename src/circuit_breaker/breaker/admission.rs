//! Admission: whether a call may go through, in one load of the state word on the paths that
//! decide without time.

use std::sync::Arc;

use super::super::error::CircuitOpen;
use super::super::handle::State;
use super::super::state::{
    CallDecision, Snapshot, call_transition, on_call, on_call_without_clock,
};
use super::{Admission, Breaker, NANOS_PER_MS, Permit};
use crate::clock::Instant;

impl<C> Breaker<C> {
    /// Admits or rejects one call.
    ///
    /// Always inlined, so the decision stays in registers: see DEVELOPERS.md, "Performance
    /// notes" (store forwarding).
    #[inline(always)]
    pub(crate) fn admit(self: &Arc<Self>) -> Admission
    where
        C: Send + Sync + 'static,
    {
        if let Some(generation) = self.state().closed_generation() {
            return Admission::Admitted(Permit::Closed { generation });
        }
        if let Some(until_ms) = self.state().armed_open_until() {
            // No clock: the armed timer will move the breaker on. Except on a sample of
            // rejections: the timer's runtime may have stopped being driven (a current-thread
            // runtime whose `block_on` returned), and calls from elsewhere must not be rejected
            // forever. Those read the clock and half-open the breaker themselves once `until`
            // has passed.
            if !clock_check_due() {
                tracing::trace!("circuit open: call rejected");
                return Admission::Rejected(self.open_rejection(until_ms));
            }
            return self.admit_with_clock();
        }
        self.admit_not_closed()
    }

    /// Admission in every state but Closed and armed Open.
    #[cold]
    fn admit_not_closed(self: &Arc<Self>) -> Admission
    where
        C: Send + Sync + 'static,
    {
        let snapshot = self.state().load();
        match on_call_without_clock(snapshot) {
            Some(decision) => self.admission(snapshot, decision),
            None => self.admit_with_clock(),
        }
    }

    /// Admission in the states that need the time: open with no timer, and half-open.
    #[cold]
    fn admit_with_clock(self: &Arc<Self>) -> Admission
    where
        C: Send + Sync + 'static,
    {
        let now = self.clock().now();
        let now_ns = self.ticks(now);
        let reopen = self.open_period_at(now);
        let mut declined = None;
        let exchanged = self.state().update(|snapshot| {
            let deadline = match snapshot {
                Snapshot::HalfOpen { generation, .. } => self.probe_deadline.of(generation),
                _ => None,
            };
            match on_call(
                snapshot,
                now_ns,
                self.config.probes,
                deadline,
                self.config.on_probe_timeout,
                |reopens| reopen.period(reopens),
            ) {
                CallDecision::Exchange(new) => Some(new),
                decision => {
                    declined = Some((snapshot, decision));
                    None
                }
            }
        });
        let Some((old, new)) = exchanged else {
            // `update` declines only when the decision did, and that recorded it; fail open
            // if that ever stops being true.
            let Some((found, decision)) = declined else {
                return Admission::Admitted(Permit::Untracked);
            };
            if let (
                CallDecision::Rejected {
                    stamp_probe_deadline: true,
                },
                Snapshot::HalfOpen { generation, .. },
            ) = (decision, found)
            {
                self.stamp_probe_deadline(generation, now);
            }
            return self.admission(found, decision);
        };
        if let Snapshot::HalfOpen {
            generation,
            admitted: 1,
            ..
        } = new
        {
            // Stamped before anything else runs, so no later failure can leave this
            // generation without a deadline.
            self.stamp_probe_deadline(generation, now);
        }
        if let Some(reason) = call_transition(old, new) {
            self.on_transition(old, new, reason);
        }
        self.admission(old, CallDecision::Exchange(new))
    }

    /// The admission a decision made on `found` stands for (for an exchange: once it won).
    fn admission(&self, found: Snapshot, decision: CallDecision) -> Admission {
        match decision {
            CallDecision::Closed { generation } => {
                Admission::Admitted(Permit::Closed { generation })
            }
            CallDecision::Untracked => Admission::Admitted(Permit::Untracked),
            CallDecision::Rejected { .. } => {
                tracing::trace!(state = ?State::from(found), "circuit open: call rejected");
                Admission::Rejected(self.rejection(found))
            }
            CallDecision::Exchange(Snapshot::HalfOpen { generation, .. }) => {
                Admission::Admitted(Permit::Probe { generation })
            }
            CallDecision::Exchange(other) => Admission::Rejected(self.rejection(other)),
        }
    }

    /// Stamps the probe deadline of half-open `generation`, `probe_max_wait` after `now`.
    pub(super) fn stamp_probe_deadline(&self, generation: u16, now: Instant) {
        let deadline_ms = self.ms_after(now, self.config.probe_max_wait);
        self.probe_deadline.stamp(generation, deadline_ms, || {
            matches!(
                self.state().load(),
                Snapshot::HalfOpen { generation: g, .. } if g == generation
            )
        });
    }

    /// Tells the rejection hook, if one is set, about `rejection`.
    #[inline]
    pub(crate) fn rejected(&self, rejection: &CircuitOpen) {
        self.instruments().calls.rejected(rejection.state().label());
        if self.config.hooks.on_rejected.is_set() {
            self.tell_rejected(rejection);
        }
    }

    #[cold]
    #[inline(never)]
    fn tell_rejected(&self, rejection: &CircuitOpen) {
        self.config.hooks.on_rejected.emit(rejection);
    }

    fn rejection(&self, snapshot: Snapshot) -> CircuitOpen {
        match snapshot {
            Snapshot::Open { until_ms, .. } => self.open_rejection(until_ms),
            Snapshot::HalfOpen { generation, .. } => CircuitOpen::new(
                State::HalfOpen,
                self.probe_deadline
                    .of(generation)
                    .and_then(|ms| self.since_anchor(ms)),
            )
            .named(self.config.name_id),
            _ => CircuitOpen::new(State::Isolated, None).named(self.config.name_id),
        }
    }

    /// The rejection of an open breaker that half-opens at `until_ms`: it names one millisecond
    /// later (see [`CircuitOpen::reopens_at`]).
    #[inline]
    fn open_rejection(&self, until_ms: u64) -> CircuitOpen {
        CircuitOpen::new(State::Open, self.since_anchor(until_ms.saturating_add(1)))
            .named(self.config.name_id)
    }

    /// `ms` since the epoch as nanoseconds since the clock's anchor, if it can be named.
    #[inline]
    fn since_anchor(&self, ms: u64) -> Option<u64> {
        (self.anchored != u64::MAX).then(|| {
            self.anchored
                .saturating_add(ms.saturating_mul(NANOS_PER_MS))
        })
    }
}

/// One rejection in this many, per thread, by an armed open breaker reads the clock (see
/// [`Breaker::admit`]): a breaker whose timer can no longer fire still leaves Open within this
/// many calls per thread once its time has passed. Its cost: DEVELOPERS.md, "Performance notes".
#[cfg(not(palisade_loom))]
const CLOCK_CHECK_EVERY: u32 = 64;

/// Whether this armed-open rejection is the sampled one that reads the clock.
#[cfg(not(palisade_loom))]
#[inline(always)]
fn clock_check_due() -> bool {
    std::thread_local! {
        static REJECTIONS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    REJECTIONS.with(|count| {
        let n = count.get().wrapping_add(1);
        count.set(n);
        n % CLOCK_CHECK_EVERY == 0
    })
}

/// Under loom the sample would carry state from one explored interleaving to the next, which
/// loom forbids; the models drive the timer themselves.
#[cfg(palisade_loom)]
#[inline(always)]
fn clock_check_due() -> bool {
    false
}
