//! Breaker names, interned so that a rejection names its breaker with a 32-bit index instead
//! of a reference-counted string: rejecting stays a copy of two words, with no reference count
//! touched (a shared count would bounce between the cores rejecting at once).
//!
//! A name is interned once per layer built with it (keyed breakers intern their layer's name,
//! not each key's), and the table is bounded: past [`MAX_NAMES`] distinct names, a new one is
//! not interned and its rejections are unnamed.

use std::sync::{Arc, PoisonError, RwLock};

/// Distinct names kept at most.
const MAX_NAMES: usize = 4096;

static NAMES: RwLock<Vec<Arc<str>>> = RwLock::new(Vec::new());

/// The index of `name` (1-based), interning it if new; 0 for none, or once the table is full.
pub(crate) fn intern(name: Option<&Arc<str>>) -> u32 {
    let Some(name) = name else {
        return 0;
    };
    let position = |names: &[Arc<str>]| names.iter().position(|known| **known == **name);
    if let Some(at) = position(&NAMES.read().unwrap_or_else(PoisonError::into_inner)) {
        return index(at);
    }
    let mut names = NAMES.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(at) = position(&names) {
        return index(at);
    }
    if names.len() >= MAX_NAMES {
        return 0;
    }
    names.push(Arc::clone(name));
    index(names.len() - 1)
}

fn index(position: usize) -> u32 {
    u32::try_from(position + 1).unwrap_or(0)
}

/// The name interned at `id`, if any.
pub(crate) fn name_of(id: u32) -> Option<Arc<str>> {
    let position = usize::try_from(id).ok()?.checked_sub(1)?;
    NAMES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(position)
        .cloned()
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_name_interned_twice_keeps_its_index_and_none_is_zero() {
        let payments: Arc<str> = Arc::from("names-test-payments");
        let first = intern(Some(&payments));
        assert_ne!(first, 0);
        assert_eq!(intern(Some(&Arc::from("names-test-payments"))), first);
        assert_eq!(name_of(first).as_deref(), Some("names-test-payments"));
        assert_eq!(intern(None), 0);
        assert_eq!(name_of(0), None);
    }
}
