//! [`RecordKey`] (which record a request belongs to) and [`Fingerprint`] (what it asked for).

use std::fmt;

use http::Method;
use sha2::{Digest, Sha256};

/// The key of one idempotency record: a SHA-256 digest of the caller's identity, the method,
/// the authority (host and port), the path and the `Idempotency-Key`.
///
/// Two requests share a record only if all five are equal, so one caller can never reach
/// another's record, a key reused on another route starts a record of its own, and one router
/// serving several hosts keeps their records apart. Fields are length-prefixed before hashing,
/// so no two different tuples hash the same input.
///
/// A key also knows its [`Owner`] (the identified caller it belongs to, if any), so a store can
/// count it against that caller's quota, or keep one caller's records together (the Redis
/// store puts them in one Cluster slot). Equality and hashing look at the digest only: the
/// owner is a function of the same identity.
#[derive(Clone, Copy)]
pub struct RecordKey {
    digest: [u8; 32],
    owner: Option<Owner>,
}

impl PartialEq for RecordKey {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for RecordKey {}

impl std::hash::Hash for RecordKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.digest.hash(state);
    }
}

impl RecordKey {
    /// The key for `identity` (`None` for an anonymous caller), `method`, `authority` (the
    /// URI's, or the `Host` header's; `""` when the request names none), `path` and the
    /// idempotency `key`.
    #[must_use]
    pub fn new(
        identity: Option<&[u8]>,
        method: &Method,
        authority: &str,
        path: &str,
        key: &str,
    ) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"palisade idempotency record v2");
        match identity {
            Some(identity) => {
                digest.update([1]);
                field(&mut digest, identity);
            }
            None => digest.update([0]),
        }
        field(&mut digest, method.as_str().as_bytes());
        field(&mut digest, authority.as_bytes());
        field(&mut digest, path.as_bytes());
        field(&mut digest, key.as_bytes());
        Self {
            digest: digest.finalize().into(),
            owner: identity.map(Owner::of),
        }
    }

    /// The digest.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Whose key it is: the owner of the identity it was made with (`None` for an anonymous
    /// caller).
    #[must_use]
    pub fn owner(&self) -> Option<Owner> {
        self.owner
    }
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordKey({})", Hex(&self.digest[..8]))
    }
}

/// Whose records a claim counts against, for the store's per-caller quota: a digest of the
/// caller's identity (anonymous callers have none, and count only against the store's bound).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner([u8; 16]);

impl Owner {
    /// The owner for `identity`.
    #[must_use]
    pub fn of(identity: &[u8]) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"palisade idempotency owner v1");
        field(&mut digest, identity);
        let full: [u8; 32] = digest.finalize().into();
        let mut owner = [0; 16];
        owner.copy_from_slice(&full[..16]);
        Self(owner)
    }

    /// The digest.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owner({})", Hex(&self.0[..8]))
    }
}

/// What a request asked for: a SHA-256 digest of its method, path, query and body. The same
/// key with another fingerprint is a key reused for a different request (422).
///
/// Headers are not part of it: a retry that changes `Content-Type`, `Accept` or an auth token
/// but sends the same body is the same request. Neither are trailers (rare on requests, and
/// not part of what most APIs treat as the payload).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a request.
    #[must_use]
    pub fn new(method: &Method, path: &str, query: Option<&str>, body: &[u8]) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"palisade idempotency fingerprint v1");
        field(&mut digest, method.as_str().as_bytes());
        field(&mut digest, path.as_bytes());
        match query {
            Some(query) => {
                digest.update([1]);
                field(&mut digest, query.as_bytes());
            }
            None => digest.update([0]),
        }
        field(&mut digest, body);
        Self(digest.finalize().into())
    }

    /// A fingerprint from a digest computed elsewhere (a store reading its records back).
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", Hex(&self.0[..8]))
    }
}

/// Hashes `bytes` with its length in front.
fn field(digest: &mut Sha256, bytes: &[u8]) {
    digest.update((bytes.len() as u64).to_le_bytes());
    digest.update(bytes);
}

/// Lowercase hex, for `Debug`.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_the_record_key_counts() {
        let base = RecordKey::new(Some(b"tenant-1"), &Method::POST, "a.test", "/orders", "k1");
        assert_eq!(
            base,
            RecordKey::new(Some(b"tenant-1"), &Method::POST, "a.test", "/orders", "k1")
        );
        for other in [
            RecordKey::new(Some(b"tenant-2"), &Method::POST, "a.test", "/orders", "k1"),
            RecordKey::new(None, &Method::POST, "a.test", "/orders", "k1"),
            RecordKey::new(Some(b""), &Method::POST, "a.test", "/orders", "k1"),
            RecordKey::new(Some(b"tenant-1"), &Method::PATCH, "a.test", "/orders", "k1"),
            RecordKey::new(Some(b"tenant-1"), &Method::POST, "b.test", "/orders", "k1"),
            RecordKey::new(Some(b"tenant-1"), &Method::POST, "", "/orders", "k1"),
            RecordKey::new(Some(b"tenant-1"), &Method::POST, "a.test", "/orders/", "k1"),
            RecordKey::new(Some(b"tenant-1"), &Method::POST, "a.test", "/orders", "k2"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn fields_cannot_slide_into_each_other() {
        assert_ne!(
            RecordKey::new(Some(b"ab"), &Method::POST, "", "/c", "k"),
            RecordKey::new(Some(b"a"), &Method::POST, "b", "/c", "k")
        );
        assert_ne!(
            RecordKey::new(None, &Method::POST, "a.test/x", "/c", "k"),
            RecordKey::new(None, &Method::POST, "a.test", "/x/c", "k")
        );
        assert_ne!(Owner::of(b"tenant-1"), Owner::of(b"tenant-2"));
        assert_eq!(Owner::of(b"tenant-1"), Owner::of(b"tenant-1"));
        assert_ne!(
            Fingerprint::new(&Method::POST, "/a", Some("x=1"), b""),
            Fingerprint::new(&Method::POST, "/a", None, b"x=1")
        );
    }

    #[test]
    fn the_fingerprint_covers_query_and_body() {
        let base = Fingerprint::new(&Method::POST, "/a", Some("x=1"), b"{}");
        assert_eq!(
            base,
            Fingerprint::new(&Method::POST, "/a", Some("x=1"), b"{}")
        );
        assert_ne!(
            base,
            Fingerprint::new(&Method::POST, "/a", Some("x=2"), b"{}")
        );
        assert_ne!(
            base,
            Fingerprint::new(&Method::POST, "/a", Some("x=1"), b"{ }")
        );
        assert_ne!(base, Fingerprint::new(&Method::POST, "/a", Some(""), b"{}"));
        assert!(format!("{base:?}").starts_with("Fingerprint("));
    }
}
