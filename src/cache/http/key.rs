//! Keys: the effective target of a request (RFC 9111 §4: method, here always `GET`, and the
//! target URI), and for a response that `Vary`s, the values of the request headers it names.
//!
//! A response with `Vary` is stored in two parts: at the target's own key an index naming the
//! headers it varies on, and the response at a key made of the target, the index's generation
//! and the request's values of those headers. A lookup reads the index, then the variant. A new
//! index (the names changed, or the target was invalidated) takes a new generation, so no
//! variant stored under an older one is ever found again: they age out of the store unread.

use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri};

/// Where a stored response lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct HttpKey {
    target: Box<str>,
    variant: Option<Variant>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Variant {
    generation: u64,
    values: Box<[Option<HeaderValue>]>,
}

/// The headers a target's responses vary on, and the generation their variants are stored
/// under.
#[derive(Debug)]
pub(crate) struct VaryIndex {
    pub(crate) names: Box<[HeaderName]>,
    pub(crate) generation: u64,
}

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl VaryIndex {
    /// A new index for `names`, under a generation no other index has.
    pub(crate) fn new(names: Box<[HeaderName]>) -> Self {
        // Relaxed: only uniqueness matters, which any RMW on one location gives.
        let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        Self { names, generation }
    }
}

impl HttpKey {
    /// The key of a target's own entry: a response that does not vary, or a [`VaryIndex`].
    /// `None` when the request's `Host` is not a plain authority (a path, a user part, a
    /// scheme in it): such a request could be stored under another target's key, so it is
    /// not cached.
    pub(crate) fn target<B>(request: &Request<B>) -> Option<Self> {
        Some(Self {
            target: effective_target(request.uri(), request.headers())?,
            variant: None,
        })
    }

    /// The key of a URI given outside a request (a handle's invalidation, a `Location`).
    pub(crate) fn of_uri(uri: &Uri) -> Self {
        Self {
            // A URI's own authority is already a plain one.
            target: effective_target(uri, &HeaderMap::new()).unwrap_or_default(),
            variant: None,
        }
    }

    /// Every key the same target can be stored under: with and without its scheme (a client's
    /// absolute URI, an HTTP/2 request, carry one; an HTTP/1 server request does not), for an
    /// invalidation to reach them all.
    pub(crate) fn every_form(&self) -> Vec<Self> {
        let bare = self.without_scheme().unwrap_or_else(|| self.clone());
        let with = |scheme: &str| Self {
            target: format!("{scheme}://{}", bare.target).into_boxed_str(),
            variant: None,
        };
        vec![with("http"), with("https"), bare]
    }

    /// The generation of the `Vary` index a variant key was made under.
    pub(crate) fn generation(&self) -> Option<u64> {
        self.variant.as_ref().map(|variant| variant.generation)
    }

    /// The key of the variant of this target that `request_headers` select under `index`.
    pub(crate) fn variant(&self, index: &VaryIndex, request_headers: &HeaderMap) -> Self {
        Self {
            target: self.target.clone(),
            variant: Some(Variant {
                generation: index.generation,
                values: selecting_values(&index.names, request_headers),
            }),
        }
    }

    /// The key of the target this key belongs to.
    pub(crate) fn without_variant(&self) -> Self {
        Self {
            target: self.target.clone(),
            variant: None,
        }
    }

    /// The target as the key spells it (a remote tier's key is made from it).
    pub(crate) fn target_bytes(&self) -> &[u8] {
        self.target.as_bytes()
    }

    /// The target as text: `host/path?query`, with a scheme for a request that carried one.
    pub(crate) fn target_str(&self) -> &str {
        &self.target
    }

    pub(crate) fn same_target(&self, other: &Self) -> bool {
        self.target == other.target
    }

    /// The target's `scheme://` prefix (empty for a request in origin form).
    fn scheme_prefix(&self) -> &str {
        match self.target.find("://") {
            Some(at) if !self.target[..at].contains('/') => &self.target[..at + 3],
            _ => "",
        }
    }

    pub(crate) fn authority(&self) -> &str {
        let rest = &self.target[self.scheme_prefix().len()..];
        rest.split('/').next().unwrap_or("")
    }

    /// The same target without its scheme: how a server sees it (origin form and `Host`).
    pub(crate) fn without_scheme(&self) -> Option<Self> {
        let prefix = self.scheme_prefix().len();
        (prefix > 0).then(|| Self {
            target: self.target[prefix..].into(),
            variant: None,
        })
    }

    /// The bytes the key holds, for the entry's weight.
    pub(crate) fn weight(&self) -> u64 {
        let values = self.variant.as_ref().map_or(0, |variant| {
            variant
                .values
                .iter()
                .map(|value| value.as_ref().map_or(0, HeaderValue::len) + 32)
                .sum()
        });
        (self.target.len() + values + 64) as u64
    }

    /// The target a `Location` or `Content-Location` value names, if it is on this target's
    /// authority (RFC 9111 §4.4: only same-origin targets are invalidated): an absolute path,
    /// or an absolute URI of the same authority. A relative path is not resolved.
    pub(crate) fn resolve(&self, location: &HeaderValue) -> Option<Self> {
        let uri: Uri = location.to_str().ok()?.trim().parse().ok()?;
        let path = uri.path_and_query()?.as_str();
        if !path.starts_with('/') {
            return None;
        }
        if let Some(authority) = uri.authority() {
            if !authority.as_str().eq_ignore_ascii_case(self.authority()) {
                return None;
            }
        } else if uri.scheme().is_some() {
            return None;
        }
        let prefix = self.scheme_prefix().len() + self.authority().len();
        let mut target = String::with_capacity(prefix + path.len());
        target.push_str(&self.target[..prefix]);
        target.push_str(path);
        Some(Self {
            target: target.into_boxed_str(),
            variant: None,
        })
    }
}

/// `scheme://authority/path?query`: the request's scheme (when its URI has one: a client's
/// absolute URI; a server's origin-form request has none), its authority (from its URI, else
/// its `Host`), both lowercased, then its path and query as sent. A request with no authority
/// at all has an empty one (a server that answers one host). The scheme keeps `http` and
/// `https` apart.
fn effective_target(uri: &Uri, headers: &HeaderMap) -> Option<Box<str>> {
    let authority = match uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => match headers.get(header::HOST) {
            None => None,
            Some(host) => Some(plain_authority(host)?),
        },
    };
    let path = uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let scheme = uri.scheme_str();
    let mut target = String::with_capacity(
        scheme.map_or(0, |scheme| scheme.len() + 3) + authority.map_or(0, str::len) + path.len(),
    );
    if let Some(scheme) = scheme {
        target.extend(scheme.chars().map(|c| c.to_ascii_lowercase()));
        target.push_str("://");
    }
    if let Some(authority) = authority {
        target.extend(authority.chars().map(|c| c.to_ascii_lowercase()));
    }
    target.push_str(path);
    Some(target.into_boxed_str())
}

/// A `Host` value that is a host and an optional port and nothing else (RFC 9110 §7.2).
fn plain_authority(host: &HeaderValue) -> Option<&str> {
    let host = host.to_str().ok()?.trim();
    let plain = !host.is_empty()
        && !host.contains(['/', '?', '#', '@', ' ', '\t'])
        && host.parse::<http::uri::Authority>().is_ok();
    plain.then_some(host)
}

/// The values of `names` in `headers`, normalised (§4.1 allows it): the field lines of one
/// name joined with `, `, each trimmed. An absent header is `None`, distinct from an empty one.
pub(crate) fn selecting_values(
    names: &[HeaderName],
    headers: &HeaderMap,
) -> Box<[Option<HeaderValue>]> {
    names
        .iter()
        .map(|name| {
            let mut lines = headers.get_all(name).iter();
            let first = lines.next()?;
            let mut joined: Vec<u8> = first.as_bytes().trim_ascii().to_vec();
            for line in lines {
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(line.as_bytes().trim_ascii());
            }
            // Bytes taken from valid header values stay valid.
            HeaderValue::from_bytes(&joined).ok()
        })
        .collect()
}

/// The header names `Vary` lists, lowercased and without repeats (a list with `*`, or a
/// name that is not a header, is refused before this is called).
pub(crate) fn vary_names(headers: &HeaderMap) -> Box<[HeaderName]> {
    let mut names: Vec<HeaderName> = super::directives::vary_names(headers)
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names.into_boxed_slice()
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    impl HttpKey {
        fn target_of(request: &Request<()>) -> Self {
            Self::target(request).unwrap()
        }
    }

    fn get(uri: &str, headers: &[(&'static str, &'static str)]) -> Request<()> {
        let mut builder = Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn the_target_is_the_lowercased_authority_then_the_path_and_query() {
        let absolute = HttpKey::target_of(&get("HTTP://Example.COM/a?b=1", &[]));
        let origin_form = HttpKey::target_of(&get("/a?b=1", &[("host", "example.com")]));
        assert_eq!(absolute.without_scheme().unwrap(), origin_form);
        assert_ne!(
            absolute,
            HttpKey::target_of(&get("https://example.com/a?b=1", &[])),
            "schemes apart"
        );
        assert_eq!(origin_form.without_scheme(), None);
        assert_eq!(absolute.authority(), "example.com");
        assert_eq!(origin_form.authority(), "example.com");
        let absolute = origin_form.clone();
        assert_ne!(
            absolute,
            HttpKey::target_of(&get("/a?b=2", &[("host", "example.com")]))
        );
        assert_ne!(
            absolute,
            HttpKey::target_of(&get("/A?b=1", &[("host", "example.com")]))
        );
        assert_eq!(HttpKey::target_of(&get("/a", &[])).authority(), "");
        // A Host that is more than an authority could land on another target's key.
        for host in [
            "example.com/admin",
            "user@example.com",
            "https://example.com",
            "a b",
        ] {
            assert_eq!(
                HttpKey::target(&get("/x", &[("host", host)])),
                None,
                "{host}"
            );
        }
        assert!(HttpKey::target(&get("/x", &[("host", "example.com:8080")])).is_some());
        assert_eq!(
            HttpKey::of_uri(&"http://example.com/a?b=1".parse().unwrap()).without_scheme(),
            Some(absolute)
        );
    }

    #[test]
    fn variants_differ_by_the_values_of_the_named_headers_only() {
        let index = VaryIndex::new(vary_names(&{
            let mut h = HeaderMap::new();
            h.append(
                "vary",
                HeaderValue::from_static("Accept-Encoding, accept-encoding"),
            );
            h
        }));
        assert_eq!(index.names.len(), 1, "names are deduplicated");
        let target = HttpKey::target_of(&get("/a", &[]));
        let gzip = get("/a", &[("accept-encoding", "gzip")]);
        let gzip_spaced = get("/a", &[("accept-encoding", " gzip "), ("accept", "x")]);
        let br = get("/a", &[("accept-encoding", "br")]);
        let none = get("/a", &[]);
        let empty = get("/a", &[("accept-encoding", "")]);
        let key = |r: &Request<()>| target.variant(&index, r.headers());
        assert_eq!(key(&gzip), key(&gzip_spaced));
        assert_ne!(key(&gzip), key(&br));
        assert_ne!(key(&none), key(&empty));
        assert_eq!(key(&gzip).without_variant(), target);
        let origin = HttpKey::target_of(&get("/items", &[("host", "api.test")]));
        let same = |value: &'static str| origin.resolve(&HeaderValue::from_static(value));
        assert_eq!(
            same("/items/7"),
            Some(HttpKey::target_of(&get(
                "/items/7",
                &[("host", "api.test")]
            )))
        );
        assert_eq!(same("http://API.test/items/7"), same("/items/7"));
        let client = HttpKey::target_of(&get("https://api.test/items", &[]));
        assert_eq!(
            client.resolve(&HeaderValue::from_static("/items/7")),
            Some(HttpKey::target_of(&get("https://api.test/items/7", &[]))),
            "a client's target keeps its scheme"
        );
        assert_eq!(
            same("http://elsewhere.test/items/7"),
            None,
            "another origin"
        );
        assert_eq!(same("items/7"), None, "relative paths are not resolved");
        let forms = HttpKey::target_of(&get("/a", &[("host", "api.test")])).every_form();
        assert_eq!(forms.len(), 3);
        assert!(forms.contains(&HttpKey::target_of(&get("https://api.test/a", &[]))));
        assert!(forms.contains(&HttpKey::target_of(&get("http://api.test/a", &[]))));
        let newer = VaryIndex::new(index.names.clone());
        assert_ne!(
            key(&gzip),
            target.variant(&newer, gzip.headers()),
            "a new generation"
        );
    }
}
