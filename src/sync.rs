//! The atomics shim every state machine imports from.
//!
//! Normally these are the `std` types. Under `--cfg palisade_loom` they are loom's, so the same
//! code runs inside `loom::model` and loom explores every interleaving of its atomic operations.
//! The cfg name is ours rather than plain `loom`, because tokio changes its own behaviour under
//! `cfg(loom)`.
//!
//! Run the models with:
//!
//! ```text
//! RUSTFLAGS="--cfg palisade_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --lib loom
//! ```
//!
//! Only what the crate uses is re-exported; a layer that needs another atomic type adds it here.
//! Builds with only some features enabled use a subset, hence the `allow(unused_imports)`.

#[cfg(not(palisade_loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(palisade_loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(palisade_loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(palisade_loom)]
pub(crate) use loom::sync::Arc;
#[cfg(palisade_loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(palisade_loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
