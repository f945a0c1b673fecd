//! loom models of the refresh word (every interleaving of the claims and releases its
//! invariants name) and of the single-flight table's leader hand-off. Run with `RUSTFLAGS="--cfg palisade_loom" cargo test --release --lib loom`.

use std::sync::Arc;

use loom::thread;

use super::flight::{Flights, Landing, Role};
use super::state::RefreshWord;

/// Invariant 1: of two callers seeing the same stale entry, exactly one claims its refresh.
#[test]
fn loom_two_stale_hits_claim_one_refresh() {
    loom::model(|| {
        let word = Arc::new(RefreshWord::new());
        let other = Arc::clone(&word);
        let t = thread::spawn(move || other.try_claim(10, 100).is_some());
        let here = word.try_claim(10, 100).is_some();
        let there = t.join().unwrap();
        assert!(here ^ there, "exactly one claim: {here} {there}");
    });
}

/// Invariants 1 and 4: a lapsed claim taken over while its holder gives it back: the late
/// release never undoes the new claim.
#[test]
fn loom_a_late_release_never_undoes_a_takeover() {
    loom::model(|| {
        let word = Arc::new(RefreshWord::new());
        let first = word.try_claim(0, 100).unwrap();
        let other = Arc::clone(&word);
        let t = thread::spawn(move || other.try_claim(100, 200).is_some());
        word.release(first, 150);
        let took_over = t.join().unwrap();
        // Either the takeover came first (and the release left it alone), or the release came
        // first and its backoff (until 150) refused the takeover at 100.
        if took_over {
            assert!(word.try_claim(199, 300).is_none(), "the new claim stands");
        } else {
            assert!(word.try_claim(149, 300).is_none(), "the backoff stands");
            assert!(word.try_claim(150, 300).is_some());
        }
    });
}

/// Invariant 3: a claim racing a retirement either wins before it or never happens after it.
#[test]
fn loom_a_retired_entry_is_never_claimed_after_the_retirement() {
    loom::model(|| {
        let word = Arc::new(RefreshWord::new());
        let other = Arc::clone(&word);
        let t = thread::spawn(move || other.retire());
        let _ = word.try_claim(0, 100);
        t.join().unwrap();
        assert!(word.try_claim(u64::MAX >> 2, 0).is_none());
    });
}

/// Single flight: of two callers joining one key while a third leads it and goes away (its
/// future dropped), at most one leads at any instant, a waiter always sees the leader's
/// landing (`Abandoned`), and after the hand-off exactly one of them leads the next fetch.
#[test]
fn loom_a_dropped_leader_hands_over_to_exactly_one_caller() {
    use loom::sync::atomic::{AtomicUsize, Ordering};

    loom::model(|| {
        let flights = Arc::new(Flights::<u8, u8>::new(8));
        let leading = Arc::new(AtomicUsize::new(0));
        let led = Arc::new(AtomicUsize::new(0));
        // Each caller: join; a leader counts itself, checks it is alone, and lands (the first
        // caller by going away, the others with a value); a waiter that sees the leader gone
        // joins again.
        let caller = |flights: Arc<Flights<u8, u8>>,
                      leading: Arc<AtomicUsize>,
                      led: Arc<AtomicUsize>,
                      abandon: bool| {
            move || {
                loop {
                    match flights.join(&7) {
                        Role::Leader(leader) => {
                            let before = leading.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(before, 0, "two leaders at once");
                            led.fetch_add(1, Ordering::SeqCst);
                            leading.fetch_sub(1, Ordering::SeqCst);
                            if abandon {
                                drop(leader);
                            } else {
                                leader.land(Landing::Value(1), || {});
                            }
                            return;
                        }
                        Role::Waiter(landing) => {
                            // The flight's sender lands before it is dropped: the receiver
                            // sees a landing, never an empty channel with Pending.
                            let landed = landing.borrow().clone();
                            match landed {
                                Landing::Value(_) => return,
                                // Still pending, or the leader went away: join again.
                                Landing::Pending | Landing::Abandoned | Landing::Failed(_) => {
                                    loom::thread::yield_now();
                                }
                            }
                        }
                        Role::Alone => panic!("the table holds one key of eight"),
                    }
                }
            }
        };
        let first = thread::spawn(caller(
            Arc::clone(&flights),
            Arc::clone(&leading),
            Arc::clone(&led),
            true,
        ));
        let second = thread::spawn(caller(
            Arc::clone(&flights),
            Arc::clone(&leading),
            Arc::clone(&led),
            false,
        ));
        first.join().unwrap();
        second.join().unwrap();
        // The abandoning caller led once; the other either led after it, or found a landing.
        let led = led.load(Ordering::SeqCst);
        assert!((1..=2).contains(&led), "led {led} times");
        assert_eq!(flights.len(), 0, "no flight left behind");
    });
}
