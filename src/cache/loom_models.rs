//! loom models of the refresh word: every interleaving of the claims and releases its
//! invariants name. Run with `RUSTFLAGS="--cfg palisade_loom" cargo test --release --lib loom`.

use std::sync::Arc;

use loom::thread;

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
