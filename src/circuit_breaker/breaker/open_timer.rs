//! The open timer: a task that moves an open breaker to half-open when its time is up, or, if
//! it can never fire, hands that job back to the calls.

use std::sync::{Arc, Weak};

use super::super::handle::TransitionReason;
use super::super::state::{TimerDecision, on_timer, on_timer_dropped};
use super::Breaker;
use crate::clock::Instant;

impl<C> Breaker<C> {
    /// Starts the task that moves Open(`generation`) to HalfOpen at `until_ms`.
    pub(super) fn arm_timer(self: &Arc<Self>, generation: u16, until_ms: u64)
    where
        C: Send + Sync + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.disarm(generation);
            return;
        };
        let at = self.instant_of_ms(until_ms);
        let timer = OpenTimer {
            breaker: Arc::downgrade(self),
            generation,
            fired: false,
        };
        runtime.spawn(async move {
            let mut timer = timer;
            let mut at = at;
            loop {
                tokio::time::sleep_until(at).await;
                match timer.fire() {
                    // Server pushback moved `until` out meanwhile: sleep until then.
                    Some(later) => at = later,
                    None => break,
                }
            }
        });
    }

    /// Open(`generation`) to HalfOpen(`generation + 1`, no probe admitted yet), once its
    /// `until` has passed. Returns the later `until` if it was pushed out meanwhile (the timer
    /// then sleeps again).
    pub(super) fn open_elapsed(self: &Arc<Self>, generation: u16) -> Option<Instant>
    where
        C: Send + Sync + 'static,
    {
        let now_ns = self.ticks(self.clock().now());
        let mut later = None;
        let exchanged =
            self.state()
                .update(|snapshot| match on_timer(snapshot, generation, now_ns) {
                    TimerDecision::Exchange(new) => Some(new),
                    TimerDecision::SleepUntil(until_ms) => {
                        later = Some(self.instant_of_ms(until_ms));
                        None
                    }
                    TimerDecision::Done => {
                        later = None;
                        None
                    }
                });
        if let Some((old, new)) = exchanged {
            // The first probe pushes this later; until one comes, it is how long the half-open
            // breaker waits for a probe before a keyed sweep may forget it.
            self.stamp_probe_deadline(new.generation(), self.clock().now());
            self.on_transition(old, new, TransitionReason::OpenElapsed);
        }
        later
    }

    /// Clears the armed bit of Open(`generation`): calls then check the clock themselves.
    fn disarm(&self, generation: u16) {
        self.state()
            .update(|snapshot| on_timer_dropped(snapshot, generation));
    }
}

/// The open timer's task state: fires once, or disarms the breaker if dropped unfired (the
/// runtime shut down first), so the breaker falls back to checking the clock.
struct OpenTimer<C> {
    breaker: Weak<Breaker<C>>,
    generation: u16,
    fired: bool,
}

impl<C: Send + Sync + 'static> OpenTimer<C> {
    /// Moves the breaker on, or returns the later time to wake at if its `until` was pushed
    /// out.
    fn fire(&mut self) -> Option<Instant> {
        let later = self
            .breaker
            .upgrade()
            .and_then(|breaker| breaker.open_elapsed(self.generation));
        self.fired = later.is_none();
        later
    }
}

impl<C> Drop for OpenTimer<C> {
    fn drop(&mut self) {
        if !self.fired {
            if let Some(breaker) = self.breaker.upgrade() {
                breaker.disarm(self.generation);
            }
        }
    }
}
