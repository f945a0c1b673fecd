//! [`Identify`]: who is calling, so that one caller's records are out of another's reach.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use http::HeaderName;
use http::request::Parts;

/// Tells the caller's identity from a request: the tenant, principal or API key id that an
/// authentication layer in front has established.
///
/// The identity is part of every [`RecordKey`](super::RecordKey): two callers using the same
/// `Idempotency-Key` get two independent records, and neither can ever be replayed the other's
/// response. Return `None` for a caller with no identity; all such callers share one scope.
///
/// Implemented by [`Anonymous`] (the default), [`IdentityHeader`], [`IdentityExtension`] and
/// any `Fn(&Parts) -> Option<String>`.
///
/// # Security
///
/// An identity must come from something the caller cannot forge. A header is only safe when a
/// layer in front (a gateway, the auth middleware) sets it and removes any the client sent;
/// an extension set by in-process auth middleware is safest. With [`Anonymous`], every caller
/// shares one key space: whoever learns or guesses another caller's key, and sends the same
/// request, is replayed that caller's response. Use it only for a single-tenant service or with
/// keys as unguessable as UUID v4.
pub trait Identify: Send + Sync + 'static {
    /// The identity of the caller of `request`, or `None`.
    fn identify<'r>(&self, request: &'r Parts) -> Option<Cow<'r, [u8]>>;
}

/// No identity: every caller shares one scope. The default; see the security note on
/// [`Identify`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Anonymous;

impl Identify for Anonymous {
    fn identify<'r>(&self, _: &'r Parts) -> Option<Cow<'r, [u8]>> {
        None
    }
}

/// The identity is the value of a request header that a trusted layer in front sets (such as
/// `x-tenant-id` from a gateway). Every value of the header counts, in order.
#[derive(Clone, Debug)]
pub struct IdentityHeader(HeaderName);

impl IdentityHeader {
    /// Reads the caller's identity from `name`.
    #[must_use]
    pub fn new(name: HeaderName) -> Self {
        Self(name)
    }
}

impl Identify for IdentityHeader {
    fn identify<'r>(&self, request: &'r Parts) -> Option<Cow<'r, [u8]>> {
        let mut values = request.headers.get_all(&self.0).iter();
        let first = values.next()?;
        let Some(second) = values.next() else {
            return Some(Cow::Borrowed(first.as_bytes()));
        };
        // Several values: join them with a byte no header value contains.
        let mut joined = first.as_bytes().to_vec();
        for value in std::iter::once(second).chain(values) {
            joined.push(0);
            joined.extend_from_slice(value.as_bytes());
        }
        Some(Cow::Owned(joined))
    }
}

/// The identity is a typed request extension that in-process auth middleware inserted (a
/// principal, a tenant id): the safest source, since a client cannot send one.
///
/// ```
/// use palisade::idempotency::IdentityExtension;
///
/// #[derive(Clone)]
/// struct TenantId(String);
/// impl AsRef<[u8]> for TenantId {
///     fn as_ref(&self) -> &[u8] {
///         self.0.as_bytes()
///     }
/// }
/// let identity = IdentityExtension::<TenantId>::new();
/// # let _ = identity;
/// ```
pub struct IdentityExtension<T>(PhantomData<fn() -> T>);

impl<T> IdentityExtension<T> {
    /// Reads the caller's identity from the request's `T` extension.
    #[must_use]
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for IdentityExtension<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for IdentityExtension<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for IdentityExtension<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdentityExtension")
            .field(&std::any::type_name::<T>())
            .finish()
    }
}

impl<T> Identify for IdentityExtension<T>
where
    T: AsRef<[u8]> + Send + Sync + 'static,
{
    fn identify<'r>(&self, request: &'r Parts) -> Option<Cow<'r, [u8]>> {
        request
            .extensions
            .get::<T>()
            .map(|identity| Cow::Borrowed(identity.as_ref()))
    }
}

impl<F> Identify for F
where
    F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
{
    fn identify<'r>(&self, request: &'r Parts) -> Option<Cow<'r, [u8]>> {
        self(request).map(|identity| Cow::Owned(identity.into_bytes()))
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    fn parts(build: impl FnOnce(http::request::Builder) -> http::request::Builder) -> Parts {
        build(http::Request::builder())
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn a_header_identity_reads_every_value() {
        let identity = IdentityHeader::new(HeaderName::from_static("x-tenant"));
        let one = parts(|b| b.header("x-tenant", "acme"));
        assert_eq!(identity.identify(&one).as_deref(), Some(&b"acme"[..]));
        let two = parts(|b| b.header("x-tenant", "acme").header("x-tenant", "evil"));
        assert_eq!(identity.identify(&two).as_deref(), Some(&b"acme\0evil"[..]));
        assert_eq!(identity.identify(&parts(|b| b)), None);
    }

    #[test]
    fn an_extension_identity_reads_the_typed_value() {
        #[derive(Clone)]
        struct Tenant(&'static str);
        impl AsRef<[u8]> for Tenant {
            fn as_ref(&self) -> &[u8] {
                self.0.as_bytes()
            }
        }
        let identity = IdentityExtension::<Tenant>::new();
        let mut request = parts(|b| b);
        assert_eq!(identity.identify(&request), None);
        request.extensions.insert(Tenant("acme"));
        assert_eq!(identity.identify(&request).as_deref(), Some(&b"acme"[..]));
    }

    #[test]
    fn a_closure_is_an_identity() {
        let identity = |request: &Parts| request.uri.host().map(str::to_owned);
        let request = parts(|b| b.uri("http://acme.example/x"));
        assert_eq!(
            Identify::identify(&identity, &request).as_deref(),
            Some(&b"acme.example"[..])
        );
        assert_eq!(Anonymous.identify(&request), None);
    }
}
