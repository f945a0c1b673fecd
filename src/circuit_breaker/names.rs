//! Breaker names, interned so that a rejection names its breaker with a 32-bit index instead
//! of a reference-counted string: rejecting stays a copy of two words, and reading the name
//! back (a log line, `Display`) takes no lock and touches no shared count.
//!
//! A name is interned once per layer built with it (keyed breakers intern their layer's name,
//! not each key's) and kept for the life of the process (leaked: at most [`MAX_NAMES`] of
//! them, each written once). Past that many distinct names, a new one is not interned and its
//! rejections are unnamed.

use std::sync::{Mutex, OnceLock, PoisonError};

/// Distinct names kept at most.
const MAX_NAMES: usize = 1024;

/// The names, by index less one; each slot written once, read without a lock.
static NAMES: [OnceLock<&'static str>; MAX_NAMES] = [const { OnceLock::new() }; MAX_NAMES];

/// How many slots are taken, and the lock interning takes (build time only).
static TAKEN: Mutex<usize> = Mutex::new(0);

/// The index of `name` (1-based), interning it if new; 0 for none, or once the table is full.
pub(crate) fn intern(name: Option<&str>) -> u32 {
    let Some(name) = name else {
        return 0;
    };
    let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    let known = NAMES[..*taken]
        .iter()
        .position(|slot| slot.get().is_some_and(|known| *known == name));
    if let Some(at) = known {
        return index(at);
    }
    if *taken >= MAX_NAMES {
        return 0;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let _ = NAMES[*taken].set(leaked);
    *taken += 1;
    index(*taken - 1)
}

fn index(position: usize) -> u32 {
    u32::try_from(position + 1).unwrap_or(0)
}

/// The name interned at `id`, if any: a lock-free read.
pub(crate) fn name_of(id: u32) -> Option<&'static str> {
    let position = usize::try_from(id).ok()?.checked_sub(1)?;
    NAMES.get(position)?.get().copied()
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_name_interned_twice_keeps_its_index_and_none_is_zero() {
        let first = intern(Some("names-test-payments"));
        assert_ne!(first, 0);
        assert_eq!(intern(Some("names-test-payments")), first);
        assert_eq!(name_of(first), Some("names-test-payments"));
        assert_eq!(intern(None), 0);
        assert_eq!(name_of(0), None);
        assert_eq!(name_of(u32::MAX), None);
    }
}
