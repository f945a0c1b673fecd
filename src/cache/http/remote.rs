//! The HTTP mode's remote tier: stored responses shared by a fleet through a
//! [`RemoteStore`], in a versioned binary form, under keys every instance computes alike.
//!
//! # Keys
//!
//! A response that does not vary lives at its **target's key**: the effective target (method
//! `GET` implied) as the local tier spells it, e.g. `api.example/items?page=2`. A response that
//! `Vary`s lives at a **variant key**: the target, `0x00 0x03` and its index's generation (16
//! hex digits), then for each header it varies on (sorted, lowercase) `0x00`, the name, and
//! `0x01` with the request's value or `0x02` for an absent header (none of these bytes can
//! occur in a URI, a header name or a header value). At the target's key an **index** names
//! those headers and its generation, so another instance reading the target learns which
//! variant to read: two round trips for a response that varies, one for the rest.
//!
//! Removing the target's key (an invalidation) removes the index, and with it every variant:
//! the next index is made with a new generation (a random 64-bit number), so no variant stored
//! under the old one is ever read again; they age out of the store unread.
//!
//! # Record format, version 1
//!
//! All integers big-endian. `PHC` and the version byte `1`, then a kind byte:
//!
//! | kind | what follows |
//! |---|---|
//! | `R` (a response) | status `u16`; lifetime, age when published, stale-while-revalidate and stale-if-error windows (`u64` ns each); flags `u8` (bit 0 `must-revalidate` and kin); the headers; a trailers byte (`0` none, `1` headers follow); a selection byte (`0` none, `1` a `u16` count of name, value pairs, each value led by `1` or, when absent, just `2`); the body (`u32` length, bytes) |
//! | `V` (an index) | its generation (`u64`), then a `u16` count of header names |
//!
//! Headers are a `u16` count of name, value pairs; a name is a `u16` length and its bytes, a
//! value a `u32` length and its bytes. A record that does not decode (another version, a torn
//! write) is counted as a remote error and ignored.
//!
//! # Times
//!
//! A response is published with its windows from the moment it is sent: fresh for its
//! lifetime less its age, stale-while-revalidate and stale-if-error past that (or none, for a
//! response that must revalidate). The store keeps them as instants of its own clock and
//! answers with what is left; the reader takes the time since publication as the published
//! life less the life left, and the response's age as its age when published plus that time,
//! so `Age` and freshness read the same on every instance whatever its own clock says. A
//! response stored only to be revalidated (`no-cache`, or no freshness at all) is not
//! published: another instance could not use it without the origin.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::directives::RequestDirectives;
use super::freshness::{self, Freshness, Reuse};
use super::key::{self, HttpKey};
use super::stored::{HttpValue, Selection, Stored};
use crate::cache::remote::{
    FIRST_LOOK_PAUSE, LockToken, MAX_LOOK_PAUSE, RemoteEntry, RemoteError, RemoteStore, random_u64,
    spawn_remove, spawn_unlock, unlock_now,
};
use crate::cache::shared::Shared;
use crate::clock::Epoch;

type Engine = Shared<HttpKey, HttpValue>;

/// How long an index is kept at its target's key, renewed by each variant's publication: it
/// names headers, which rarely change, and an index that outlives its variants costs a reader
/// one round trip more before it fetches.
const INDEX_LIFE: Duration = Duration::from_secs(24 * 60 * 60);

const MAGIC: &[u8; 4] = b"PHC\x01";
const RESPONSE: u8 = b'R';
const INDEX: u8 = b'V';
const FLAG_REVALIDATE: u8 = 1;

/// The remote store of an HTTP cache, if it was given one.
pub(crate) type Remote = Option<Arc<dyn RemoteStore>>;

/// The remote key of `target`'s own entry: a response that does not vary, or an index.
pub(crate) fn target_key(target: &HttpKey) -> Vec<u8> {
    target.target_bytes().to_vec()
}

/// The remote key of the variant of `target` that `values` of `names` select, under the
/// index of `generation`.
pub(crate) fn variant_key(
    target: &HttpKey,
    generation: u64,
    names: &[HeaderName],
    values: &[Option<HeaderValue>],
) -> Vec<u8> {
    let mut bytes = target_key(target);
    bytes.extend_from_slice(&[0x00, 0x03]);
    bytes.extend_from_slice(format!("{generation:016x}").as_bytes());
    for (name, value) in names.iter().zip(values) {
        bytes.push(0x00);
        bytes.extend_from_slice(name.as_str().as_bytes());
        match value {
            Some(value) => {
                bytes.push(0x01);
                bytes.extend_from_slice(value.as_bytes());
            }
            None => bytes.push(0x02),
        }
    }
    bytes
}

/// The remote key `stored` lives at: its variant's, or its target's.
pub(crate) fn key_of(target: &HttpKey, stored: &Stored) -> Vec<u8> {
    match &stored.selected_by {
        Some((names, values)) => {
            variant_key(target, stored.remote_index.unwrap_or(0), names, values)
        }
        None => target_key(target),
    }
}

/// The remote key of the variant a request with `headers` selects under the index of
/// `generation` naming `names`.
pub(crate) fn selected_key(
    target: &HttpKey,
    generation: u64,
    names: &[HeaderName],
    headers: &HeaderMap,
) -> Vec<u8> {
    variant_key(
        target,
        generation,
        names,
        &key::selecting_values(names, headers),
    )
}

/// A generation for a new remote index: random, so that no two instances (and no index made
/// after an invalidation) share one.
pub(crate) fn new_index_generation() -> u64 {
    random_u64()
}

/// The windows a response of `freshness` at age `age` is published with (fresh, stale,
/// errors: each from now), or `None` when another instance could not serve it.
fn windows(freshness: &Freshness, age: u64) -> Option<[u64; 3]> {
    if freshness.no_cache {
        return None;
    }
    let fresh = freshness.lifetime.saturating_sub(age);
    let past = |window: u64| {
        freshness
            .lifetime
            .saturating_add(window)
            .saturating_sub(age)
    };
    let windows = if freshness.revalidate {
        [fresh; 3]
    } else {
        [
            fresh,
            past(freshness.stale_while_revalidate),
            past(freshness.stale_if_error),
        ]
    };
    (windows.iter().any(|window| *window > 0)).then_some(windows)
}

/// `stored`, `fetch` ticks in the making, as the remote keeps it at local tick `now`; `None`
/// when it is not published.
pub(crate) fn response_entry(stored: &Stored, fetch: u64, now: u64) -> Option<RemoteEntry> {
    let freshness = &stored.freshness;
    let age = freshness.age(now);
    let [fresh, stale, errors] = windows(freshness, age)?;
    Some(RemoteEntry {
        value: encode_response(stored, age),
        fresh_for: Epoch::duration_of(fresh),
        stale_for: Epoch::duration_of(stale),
        errors_for: Epoch::duration_of(errors),
        fetch: Epoch::duration_of(fetch),
    })
}

/// The index of `generation` naming `names`, as the remote keeps it.
pub(crate) fn index_entry(names: &[HeaderName], generation: u64) -> RemoteEntry {
    let mut buf = BytesMut::with_capacity(16 + names.len() * 16);
    buf.put_slice(MAGIC);
    buf.put_u8(INDEX);
    buf.put_u64(generation);
    put_names(&mut buf, names);
    RemoteEntry {
        value: buf.freeze(),
        fresh_for: INDEX_LIFE,
        stale_for: INDEX_LIFE,
        errors_for: INDEX_LIFE,
        fetch: Duration::ZERO,
    }
}

fn encode_response(stored: &Stored, age: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(stored.body.len() + 256);
    buf.put_slice(MAGIC);
    buf.put_u8(RESPONSE);
    buf.put_u16(stored.status.as_u16());
    let freshness = &stored.freshness;
    buf.put_u64(freshness.lifetime);
    buf.put_u64(age);
    buf.put_u64(freshness.stale_while_revalidate);
    buf.put_u64(freshness.stale_if_error);
    buf.put_u8(if freshness.revalidate {
        FLAG_REVALIDATE
    } else {
        0
    });
    put_headers(&mut buf, &stored.headers);
    match &stored.trailers {
        Some(trailers) => {
            buf.put_u8(1);
            put_headers(&mut buf, trailers);
        }
        None => buf.put_u8(0),
    }
    match &stored.selected_by {
        Some((names, values)) => {
            buf.put_u8(1);
            buf.put_u16(u16::try_from(names.len()).unwrap_or(u16::MAX));
            for (name, value) in names.iter().zip(values.iter()).take(usize::from(u16::MAX)) {
                put_name(&mut buf, name);
                match value {
                    Some(value) => {
                        buf.put_u8(1);
                        put_value(&mut buf, value);
                    }
                    None => buf.put_u8(2),
                }
            }
        }
        None => buf.put_u8(0),
    }
    buf.put_u32(u32::try_from(stored.body.len()).unwrap_or(u32::MAX));
    buf.put_slice(&stored.body[..stored.body.len().min(u32::MAX as usize)]);
    buf.freeze()
}

fn put_name(buf: &mut BytesMut, name: &HeaderName) {
    // Header names are short: `http` refuses names of 64 KiB or more.
    let bytes = name.as_str().as_bytes();
    buf.put_u16(u16::try_from(bytes.len()).unwrap_or(u16::MAX));
    buf.put_slice(&bytes[..bytes.len().min(usize::from(u16::MAX))]);
}

fn put_value(buf: &mut BytesMut, value: &HeaderValue) {
    let bytes = value.as_bytes();
    buf.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    buf.put_slice(&bytes[..bytes.len().min(u32::MAX as usize)]);
}

fn put_names(buf: &mut BytesMut, names: &[HeaderName]) {
    buf.put_u16(u16::try_from(names.len()).unwrap_or(u16::MAX));
    for name in names.iter().take(usize::from(u16::MAX)) {
        put_name(buf, name);
    }
}

fn put_headers(buf: &mut BytesMut, headers: &HeaderMap) {
    let count = headers.len().min(usize::from(u16::MAX));
    buf.put_u16(u16::try_from(count).unwrap_or(u16::MAX));
    for (name, value) in headers.iter().take(count) {
        put_name(buf, name);
        put_value(buf, value);
    }
}

/// What a remote record holds, read at local tick `now`.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A response, its freshness moved onto the local clock.
    Response(Box<Stored>),
    /// The headers the target's responses vary on, and the generation of their variants.
    Index(Box<[HeaderName]>, u64),
}

/// Reads the record of `entry` at local tick `now`; `None` when it does not decode.
pub(crate) fn decode(entry: &RemoteEntry, now: u64) -> Option<Decoded> {
    let mut reader = Reader {
        bytes: &entry.value,
    };
    if reader.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let decoded = match reader.u8()? {
        RESPONSE => Decoded::Response(Box::new(reader.response(entry, now)?)),
        INDEX => {
            let generation = reader.u64()?;
            Decoded::Index(reader.names()?, generation)
        }
        _ => return None,
    };
    reader.bytes.is_empty().then_some(decoded)
}

/// A cursor over a record's bytes: every read is checked, none panics.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < count {
            return None;
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn name(&mut self) -> Option<HeaderName> {
        let length = usize::from(self.u16()?);
        HeaderName::from_bytes(self.take(length)?).ok()
    }

    fn value(&mut self) -> Option<HeaderValue> {
        let length = usize::try_from(self.u32()?).ok()?;
        HeaderValue::from_bytes(self.take(length)?).ok()
    }

    fn names(&mut self) -> Option<Box<[HeaderName]>> {
        let count = self.u16()?;
        (0..count).map(|_| self.name()).collect()
    }

    fn headers(&mut self) -> Option<HeaderMap> {
        let count = usize::from(self.u16()?);
        // Each pair takes six bytes at least: a count larger than the rest can hold is a lie.
        if count > self.bytes.len() / 6 {
            return None;
        }
        // Capacity grows as fields arrive: a map sized by an untrusted count, or grown past
        // `http`'s bound, would panic; `try_append` refuses instead.
        let mut headers = HeaderMap::with_capacity(count.min(64));
        for _ in 0..count {
            let name = self.name()?;
            headers.try_append(name, self.value()?).ok()?;
        }
        Some(headers)
    }

    fn selection(&mut self) -> Option<Option<Selection>> {
        match self.u8()? {
            0 => Some(None),
            1 => {
                let count = usize::from(self.u16()?);
                if count > self.bytes.len() / 3 {
                    return None;
                }
                let mut names = Vec::with_capacity(count);
                let mut values = Vec::with_capacity(count);
                for _ in 0..count {
                    names.push(self.name()?);
                    values.push(match self.u8()? {
                        1 => Some(self.value()?),
                        2 => None,
                        _ => return None,
                    });
                }
                Some(Some((names.into(), values.into())))
            }
            _ => None,
        }
    }

    fn response(&mut self, entry: &RemoteEntry, now: u64) -> Option<Stored> {
        let status = StatusCode::from_u16(self.u16()?).ok()?;
        let lifetime = self.u64()?;
        let published_age = self.u64()?;
        let stale_while_revalidate = self.u64()?;
        let stale_if_error = self.u64()?;
        let flags = self.u8()?;
        if flags & !FLAG_REVALIDATE != 0 {
            return None;
        }
        let headers = self.headers()?;
        let trailers = match self.u8()? {
            0 => None,
            1 => Some(self.headers()?),
            _ => return None,
        };
        let selected_by = self.selection()?;
        let length = usize::try_from(self.u32()?).ok()?;
        let body = Bytes::copy_from_slice(self.take(length)?);
        let mut freshness = Freshness {
            lifetime,
            initial_age: published_age,
            response_time: now,
            stale_while_revalidate,
            stale_if_error,
            revalidate: flags & FLAG_REVALIDATE != 0,
            no_cache: false,
        };
        // The time since publication: the life it was published with less the life left.
        let published = windows(&freshness, published_age)?;
        let life = published.into_iter().max().unwrap_or(0);
        let left = Epoch::ticks_of(entry.life());
        freshness.initial_age = published_age.saturating_add(life.saturating_sub(left));
        Some(Stored {
            status,
            headers,
            body,
            trailers,
            freshness,
            selected_by,
            // Known to the lookup that found it under its index.
            remote_index: None,
        })
    }
}

/// A remote lock this instance holds: the key, and the token only its holder gives it up with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeldLock {
    pub(crate) key: Vec<u8>,
    pub(crate) token: LockToken,
}

/// What the remote tier said about a request the local tier could not answer.
pub(crate) enum FromRemote {
    /// A response another instance stored, on the local clock now, that this request may
    /// use; how long its fetch took; and the lock the lookup took anyway (a response past its
    /// stale window that this request's `max-stale` accepts), to give up at once.
    Found(Box<Stored>, u64, Option<HeldLock>),
    /// Go to the origin. `lock`: the remote key whose lock this caller holds (to publish to,
    /// or to give up); `failed`: the remote did not answer, or answered what does not decode;
    /// `index`: the target's index found on the way (its names and generation), for the
    /// response to be published under.
    Fetch {
        lock: Option<HeldLock>,
        failed: bool,
        index: Option<(Box<[HeaderName]>, u64)>,
    },
}

/// Looks the target of a request with `headers` up in the remote tier: its entry, and for a
/// target whose responses vary, through its index, its variant's. While another instance
/// holds the lock, looks again (5 ms apart, doubling to 50 ms) for up to half the lock
/// timeout, as the generic mode does.
pub(crate) async fn look_up(
    shared: &Engine,
    store: &dyn RemoteStore,
    target: &HttpKey,
    headers: &HeaderMap,
    directives: &RequestDirectives,
    token: LockToken,
) -> FromRemote {
    let lease = shared.config.lock_timeout;
    let deadline = tokio::time::Instant::now() + lease / 2;
    let mut pause = FIRST_LOOK_PAUSE;
    // Always through the index: a variant key is only ever known from a live index, so a
    // removed (invalidated) index leaves its variants unreachable.
    let mut index: Option<(Box<[HeaderName]>, u64)> = None;
    let mut key = target_key(target);
    loop {
        let lookup = match store.lookup(&key, lease, token).await {
            Ok(lookup) => lookup,
            Err(error) => {
                shared.counters.remote_errors.add();
                tracing::debug!(target: "palisade::cache", %error, "remote tier failed: forwarding to the origin");
                return FromRemote::Fetch {
                    lock: None,
                    failed: true,
                    index,
                };
            }
        };
        let lock = || {
            lookup.locked.then(|| HeldLock {
                key: key.clone(),
                token,
            })
        };
        if let Some(found) = &lookup.entry {
            match decode(found, shared.now()) {
                None => {
                    shared.counters.remote_errors.add();
                    tracing::debug!(target: "palisade::cache", "remote entry does not decode: forwarding to the origin");
                    return FromRemote::Fetch {
                        lock: lock(),
                        failed: true,
                        index,
                    };
                }
                Some(Decoded::Index(names, generation)) if index.is_none() => {
                    key = selected_key(target, generation, &names, headers);
                    index = Some((names, generation));
                    continue;
                }
                // An index where a response belongs: nothing to wait for.
                Some(Decoded::Index(..)) => {
                    return FromRemote::Fetch {
                        lock: lock(),
                        failed: false,
                        index,
                    };
                }
                Some(Decoded::Response(mut stored)) => {
                    if !stored.selected_by(headers) {
                        return FromRemote::Fetch {
                            lock: lock(),
                            failed: false,
                            index,
                        };
                    }
                    stored.remote_index = index.as_ref().map(|(_, generation)| *generation);
                    let age = stored.freshness.age(shared.now());
                    match freshness::reuse(&stored.freshness, age, directives) {
                        Reuse::Fresh | Reuse::Stale { .. } => {
                            let fetch = Epoch::ticks_of(found.fetch);
                            return FromRemote::Found(stored, fetch, lock());
                        }
                        // Usable by others, not by this request: nothing to wait for.
                        Reuse::Forward(_) if !lookup.locked && !found.stale_for.is_zero() => {
                            return FromRemote::Fetch {
                                lock: None,
                                failed: false,
                                index,
                            };
                        }
                        Reuse::Forward(_) => {}
                    }
                }
            }
        }
        if lookup.locked || tokio::time::Instant::now() + pause > deadline {
            return FromRemote::Fetch {
                lock: lock(),
                failed: false,
                index,
            };
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_LOOK_PAUSE);
    }
}

/// Who revalidates a stale response, as the remote tier says.
pub(crate) enum RemoteRefresh {
    /// Another instance published a fresher response (here, with its fetch's duration): take
    /// it instead.
    Newer(Box<Stored>, u64),
    /// Another instance holds the lock and is revalidating: serve stale meanwhile.
    Elsewhere,
    /// This instance, holding this lock.
    Locked(HeldLock),
    /// This instance, without the lock: the remote failed.
    Unlocked,
}

/// Asks the remote tier who revalidates `stored`, `target`'s stale response.
pub(crate) async fn refresh_claim(
    shared: &Engine,
    store: &dyn RemoteStore,
    target: &HttpKey,
    stored: &Stored,
    token: LockToken,
) -> RemoteRefresh {
    let key = key_of(target, stored);
    let lease = shared.config.lock_timeout;
    let failed = |error: RemoteError| {
        shared.counters.remote_errors.add();
        tracing::debug!(target: "palisade::cache", %error, "remote tier failed: revalidating with the origin");
        RemoteRefresh::Unlocked
    };
    let lookup = match store.lookup(&key, lease, token).await {
        Ok(lookup) => lookup,
        Err(error) => return failed(error),
    };
    let now = shared.now();
    if let Some(found) = &lookup.entry {
        if let Some(Decoded::Response(mut newer)) = decode(found, now) {
            newer.remote_index = stored.remote_index;
            let fresher = newer.freshness.fresh_until() > stored.freshness.fresh_until()
                && newer.freshness.age(now) < newer.freshness.lifetime
                && newer.selected_by == stored.selected_by;
            if fresher {
                return RemoteRefresh::Newer(newer, Epoch::ticks_of(found.fetch));
            }
        }
    }
    if lookup.locked {
        return RemoteRefresh::Locked(HeldLock { key, token });
    }
    match store.lock(&key, lease, token).await {
        Ok(true) => RemoteRefresh::Locked(HeldLock { key, token }),
        Ok(false) => {
            tracing::debug!(target: "palisade::cache", "another instance is revalidating: serving stale meanwhile");
            RemoteRefresh::Elsewhere
        }
        Err(error) => failed(error),
    }
}

/// What goes to the remote tier once a response is stored locally: the response (and the
/// target's index, for one that varies), encoded before any lock is taken; and the lock this
/// caller took, given up if nothing published releases it.
pub(crate) struct Publication {
    store: Arc<dyn RemoteStore>,
    shared: Arc<Engine>,
    puts: Vec<(Vec<u8>, RemoteEntry)>,
    lock: Option<HeldLock>,
}

impl Publication {
    /// `stored` (at `target`, fetched in `fetch` ticks) for the remote at local tick `now`,
    /// with the `lock` this caller holds; `None` without a remote tier.
    pub(crate) fn of(
        shared: &Arc<Engine>,
        remote: &Remote,
        target: &HttpKey,
        stored: &Stored,
        fetch: u64,
        now: u64,
        lock: Option<HeldLock>,
    ) -> Option<Self> {
        let store = Arc::clone(remote.as_ref()?);
        let mut puts = Vec::with_capacity(2);
        if let Some(entry) = response_entry(stored, fetch, now) {
            // The variant first: a reader that finds the index finds the variant too.
            puts.push((key_of(target, stored), entry));
            if let Some((names, _)) = &stored.selected_by {
                let generation = stored.remote_index.unwrap_or(0);
                puts.push((target_key(target), index_entry(names, generation)));
            }
        }
        Some(Self {
            store,
            shared: Arc::clone(shared),
            puts,
            lock,
        })
    }

    /// Publishes, on a task of its own (the callers have their response already): a round
    /// trip per put; the put to the locked key gives the lock up, and where there is none (or
    /// it failed), an unlock does.
    pub(crate) fn send(self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut freed = false;
            for (key, entry) in &self.puts {
                let holds = self.lock.as_ref().filter(|lock| lock.key == *key);
                let token = holds.map(|lock| lock.token);
                match self.store.put(key, entry.clone(), token).await {
                    Ok(()) => freed |= holds.is_some(),
                    Err(error) => {
                        self.shared.counters.remote_errors.add();
                        tracing::debug!(target: "palisade::cache", %error, "could not publish a response to the remote tier");
                    }
                }
            }
            if let Some(lock) = self.lock.as_ref().filter(|_| !freed) {
                unlock_now(&*self.shared, &*self.store, &lock.key, lock.token).await;
            }
        });
    }

    /// Publishes nothing (the response was not stored after all) but gives the lock up.
    pub(crate) fn abandon(self) {
        release(&self.shared, Some(&self.store), self.lock);
    }
}

/// Gives up `lock`, on a task of its own: a fetch that stores nothing lets the instances
/// waiting on it go to the origin at once rather than wait out its lease.
pub(crate) fn release(
    shared: &Arc<Engine>,
    store: Option<&Arc<dyn RemoteStore>>,
    lock: Option<HeldLock>,
) {
    if let (Some(store), Some(lock)) = (store, lock) {
        spawn_unlock(shared, store, lock.key, lock.token);
    }
}

/// Removes the remote entry at `key` (and its lock), on a task of its own.
pub(crate) fn remove(shared: &Arc<Engine>, store: &Arc<dyn RemoteStore>, key: Vec<u8>) {
    spawn_remove(shared, store, key);
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    use proptest::prelude::*;

    const SECOND: u64 = 1_000_000_000;

    fn stored(selected_by: Option<Selection>) -> Stored {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("x-many", HeaderValue::from_static("one"));
        headers.append("x-many", HeaderValue::from_static("two"));
        headers.insert("etag", HeaderValue::from_static("\"v1\""));
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc"));
        Stored {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"hello"),
            trailers: Some(trailers),
            freshness: Freshness {
                lifetime: 60 * SECOND,
                initial_age: 5 * SECOND,
                response_time: 1_000,
                stale_while_revalidate: 30 * SECOND,
                stale_if_error: 300 * SECOND,
                revalidate: false,
                no_cache: false,
            },
            selected_by,
            remote_index: None,
        }
    }

    /// `entry` as the store answers it `elapsed` later.
    fn later(entry: &RemoteEntry, elapsed: Duration) -> RemoteEntry {
        RemoteEntry {
            fresh_for: entry.fresh_for.saturating_sub(elapsed),
            stale_for: entry.stale_for.saturating_sub(elapsed),
            errors_for: entry.errors_for.saturating_sub(elapsed),
            ..entry.clone()
        }
    }

    #[test]
    fn a_response_comes_back_whole_and_aged_by_its_time_in_the_store() {
        let selection: Selection = (
            vec![HeaderName::from_static("accept-encoding")].into(),
            vec![Some(HeaderValue::from_static("gzip"))].into(),
        );
        let original = stored(Some(selection));
        // Published 10 s after it was received: age 15 s, fresh for 45 s more.
        let published = response_entry(&original, 7, 1_000 + 10 * SECOND).unwrap();
        assert_eq!(published.fresh_for, Duration::from_secs(45));
        assert_eq!(published.stale_for, Duration::from_secs(75));
        assert_eq!(published.errors_for, Duration::from_secs(345));
        // Read 20 s later on an instance whose clock reads 42.
        let read = later(&published, Duration::from_secs(20));
        let Some(Decoded::Response(back)) = decode(&read, 42) else {
            panic!("does not decode");
        };
        assert_eq!(back.status, original.status);
        assert_eq!(back.headers, original.headers);
        assert_eq!(back.trailers, original.trailers);
        assert_eq!(back.body, original.body);
        assert_eq!(back.selected_by, original.selected_by);
        assert_eq!(back.freshness.age(42), 35 * SECOND);
        assert_eq!(back.freshness.fresh_until(), 42 + 25 * SECOND);
        assert_eq!(back.freshness.lifetime, original.freshness.lifetime);
    }

    #[test]
    fn a_stale_response_keeps_its_age_from_the_window_still_open() {
        let original = stored(None);
        let published = response_entry(&original, 0, 1_000).unwrap();
        // 70 s later: 10 s past freshness (age 75 s), in its stale window.
        let read = later(&published, Duration::from_secs(70));
        assert!(read.fresh_for.is_zero());
        let Some(Decoded::Response(back)) = decode(&read, 0) else {
            panic!("does not decode");
        };
        assert_eq!(back.freshness.age(0), 75 * SECOND);
    }

    #[test]
    fn responses_that_must_be_revalidated_are_not_published_and_must_revalidate_has_no_stale_window()
     {
        let mut no_cache = stored(None);
        no_cache.freshness.no_cache = true;
        assert!(response_entry(&no_cache, 0, 1_000).is_none());
        let mut unfresh = stored(None);
        unfresh.freshness.lifetime = 0;
        unfresh.freshness.stale_while_revalidate = 0;
        unfresh.freshness.stale_if_error = 0;
        assert!(response_entry(&unfresh, 0, 1_000).is_none());
        let mut strict = stored(None);
        strict.freshness.revalidate = true;
        let published = response_entry(&strict, 0, 1_000).unwrap();
        assert_eq!(published.life(), Duration::from_secs(55));
        assert_eq!(published.stale_for, published.fresh_for);
        let Some(Decoded::Response(back)) = decode(&published, 0) else {
            panic!("does not decode");
        };
        assert!(back.freshness.revalidate);
    }

    #[test]
    fn an_index_comes_back_with_its_names() {
        let names: Box<[HeaderName]> = vec![
            HeaderName::from_static("accept"),
            HeaderName::from_static("accept-language"),
        ]
        .into();
        let Some(Decoded::Index(back, generation)) = decode(&index_entry(&names, 7), 0) else {
            panic!("does not decode");
        };
        assert_eq!((back, generation), (names, 7));
    }

    #[test]
    fn variant_keys_differ_by_value_and_by_absence() {
        let target = HttpKey::of_uri(&"http://api.example/items".parse().unwrap());
        let names = [HeaderName::from_static("accept")];
        let gzip = variant_key(&target, 1, &names, &[Some(HeaderValue::from_static("x"))]);
        let empty = variant_key(&target, 1, &names, &[Some(HeaderValue::from_static(""))]);
        let absent = variant_key(&target, 1, &names, &[None]);
        let later = variant_key(&target, 2, &names, &[None]);
        assert_ne!(gzip, empty);
        assert_ne!(empty, absent);
        assert_ne!(absent, later, "another index's generation: another key");
        assert_ne!(absent, target_key(&target));
        assert!(gzip.starts_with(&target_key(&target)));
        assert_ne!(new_index_generation(), new_index_generation());
    }

    #[test]
    fn another_version_or_trailing_bytes_do_not_decode() {
        let published = response_entry(&stored(None), 0, 1_000).unwrap();
        let mut other = published.value.to_vec();
        other[3] = 2;
        let mut longer = published.value.to_vec();
        longer.push(0);
        for bytes in [other, longer, published.value[..20].to_vec()] {
            let entry = RemoteEntry {
                value: bytes.into(),
                ..published.clone()
            };
            assert!(decode(&entry, 0).is_none());
        }
    }

    /// A record of `count` fields named by `name(i)`, each with an empty value.
    fn record_with_fields(count: u16, name: impl Fn(u16) -> String) -> RemoteEntry {
        let published = response_entry(&stored(None), 0, 1_000).unwrap();
        let mut bytes = published.value[..4 + 1 + 2 + 8 * 4 + 1].to_vec();
        bytes.extend_from_slice(&count.to_be_bytes());
        for i in 0..count {
            let name = name(i);
            let length = u16::try_from(name.len()).unwrap();
            bytes.extend_from_slice(&length.to_be_bytes());
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(&[0, 0, 0, 0]);
        }
        // No trailers, no selection, an empty body: the record is whole.
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        RemoteEntry {
            value: bytes.into(),
            ..published
        }
    }

    #[test]
    fn a_record_with_more_fields_than_a_map_holds_decodes_or_is_refused_never_a_panic() {
        // 65 535 values of one name: a map holds them (sizing it by the count would panic).
        let one_name = record_with_fields(u16::MAX, |_| "a".to_owned());
        let Some(Decoded::Response(back)) = decode(&one_name, 0) else {
            panic!("does not decode");
        };
        assert_eq!(back.headers.len(), usize::from(u16::MAX));
        // 65 535 distinct names: past the 32 768 a map holds, refused.
        let distinct = record_with_fields(u16::MAX, |i| format!("x{i}"));
        assert!(decode(&distinct, 0).is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let entry = RemoteEntry {
                value: bytes.into(),
                fresh_for: Duration::from_secs(1),
                stale_for: Duration::from_secs(1),
                errors_for: Duration::from_secs(1),
                fetch: Duration::ZERO,
            };
            let _ = decode(&entry, 0);
        }

        #[test]
        fn a_valid_record_with_a_flipped_byte_never_panics(at in 0usize..80, to in any::<u8>()) {
            let published = response_entry(&stored(None), 0, 1_000).unwrap();
            let mut bytes = published.value.to_vec();
            let at = at % bytes.len();
            bytes[at] = to;
            let _ = decode(&RemoteEntry { value: bytes.into(), ..published }, 0);
        }
    }
}
