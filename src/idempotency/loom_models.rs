//! loom models of the idempotency record's state word: every interleaving of the races its
//! invariants (`state.rs`) name. Run with `RUSTFLAGS="--cfg palisade_loom" cargo test --release
//! --lib -- loom`.

use std::sync::Arc;

use http::Method;

use super::fingerprint::Fingerprint;
use super::state::*;
use super::store::{Completed, StoredResponse};
use crate::sync::Arc as Shared;

fn fp() -> Fingerprint {
    Fingerprint::new(&Method::POST, "/", None, b"")
}

fn response() -> Completed {
    Completed::Response(Arc::new(StoredResponse::new(
        http::StatusCode::OK,
        http::HeaderMap::new(),
        bytes::Bytes::new(),
        None,
    )))
}

/// Invariants 1 and 2: a holder completing as its lease ends races a taker; exactly one
/// wins, and a superseded record never turns COMPLETED.
#[test]
fn loom_a_late_completion_and_a_take_over_never_both_win() {
    loom::model(|| {
        let record = Shared::new(Record::claimed(1, fp(), None, 10));
        let taker = Shared::clone(&record);
        let t = loom::thread::spawn(move || {
            let (found, word) = taker.inspect(&fp(), 10);
            found == Found::Dead && taker.supersede(word).is_ok()
        });
        let completed = record.complete(response(), 100);
        let took_over = t.join().unwrap();
        assert!(
            completed ^ took_over,
            "completed {completed}, took over {took_over}"
        );
        let phase = Word::decode(record.load()).phase;
        assert_eq!(phase == Phase::Completed, completed);
    });
}

/// Invariant 1: release and take-over of an expired claim never both succeed from the
/// same CLAIMED word.
#[test]
fn loom_a_release_and_a_take_over_never_both_win() {
    loom::model(|| {
        let record = Shared::new(Record::claimed(1, fp(), None, 10));
        let taker = Shared::clone(&record);
        let t = loom::thread::spawn(move || {
            let (found, word) = taker.inspect(&fp(), 10);
            let took = found == Found::Dead && taker.supersede(word).is_ok();
            (took, Word::decode(word).phase)
        });
        let released = record.release();
        let (took_over, from) = t.join().unwrap();
        assert!(
            !(released && took_over && from == Phase::Claimed),
            "both the holder and a taker won the claimed record"
        );
        assert!(released || took_over);
        let phase = Word::decode(record.load()).phase;
        assert_eq!(phase == Phase::Superseded, took_over);
    });
}

/// Invariant 4's foundation: two requests finding the same dead record; only one owns it
/// (and so only one replaces or removes it in the map).
#[test]
fn loom_two_takers_of_one_dead_record_never_both_win() {
    loom::model(|| {
        let record = Shared::new(Record::claimed(1, fp(), None, 10));
        assert!(record.release());
        let other = Shared::clone(&record);
        let t = loom::thread::spawn(move || {
            let (found, word) = other.inspect(&fp(), 10);
            found == Found::Dead && other.supersede(word).is_ok()
        });
        let (found, word) = record.inspect(&fp(), 10);
        let mine = found == Found::Dead && record.supersede(word).is_ok();
        let theirs = t.join().unwrap();
        assert!(mine ^ theirs);
    });
}

/// Invariant 3: a reader that sees COMPLETED sees the response (loom reports a data race
/// on the response cell if the word's orderings do not order the write before the read).
#[test]
fn loom_a_replay_always_finds_the_response() {
    loom::model(|| {
        let record = Shared::new(Record::claimed(1, fp(), None, 10));
        let reader = Shared::clone(&record);
        let t = loom::thread::spawn(move || {
            let (found, _) = reader.inspect(&fp(), 5);
            if found == Found::Replay {
                assert!(reader.response().is_some());
            }
        });
        assert!(record.complete(response(), 100));
        t.join().unwrap();
    });
}

/// Invariant 3 for a taker: superseding an expired COMPLETED record reads its response's
/// size to free it.
#[test]
fn loom_a_taker_of_an_expired_response_reads_its_size() {
    loom::model(|| {
        let record = Shared::new(Record::claimed(1, fp(), None, 10));
        let taker = Shared::clone(&record);
        let t = loom::thread::spawn(move || {
            let (found, word) = taker.inspect(&fp(), 200);
            if found == Found::Dead && Word::decode(word).phase == Phase::Completed {
                assert_eq!(taker.supersede(word), Ok(response().size()));
            }
        });
        assert!(record.complete(response(), 100));
        t.join().unwrap();
    });
}
