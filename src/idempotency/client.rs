//! The client side: [`AddIdempotencyKeyLayer`] gives each unsafe request one key for all its
//! attempts.

use std::task::{Context, Poll};

use http::{HeaderValue, Method, Request};
use tower_layer::Layer;
use tower_service::Service;

use crate::http::IDEMPOTENCY_KEY;

/// Adds a fresh `Idempotency-Key` (a random UUID v4) to each unsafe request that has none, so a
/// server that deduplicates runs it once however often it is sent.
///
/// Place it **outside** the retry layer: the key is added once, before the first attempt, and
/// every retry repeats the request with its headers, so all attempts carry the same key. (Inside
/// the retry layer, each attempt would get a key of its own, and the server would run each.)
/// With the key in place, the retry layer's [`HttpPolicy`](crate::retry::HttpPolicy) retries the
/// POST too.
///
/// ```
/// use palisade::idempotency::AddIdempotencyKeyLayer;
/// use palisade::retry::{BufferBodyLayer, HttpPolicy, RetryLayer};
/// use tower::ServiceBuilder;
///
/// let client_layers = ServiceBuilder::new()
///     .layer(AddIdempotencyKeyLayer::new())
///     .layer(BufferBodyLayer::default())
///     .layer(RetryLayer::new().policy(HttpPolicy::new()));
/// # let _ = client_layers;
/// ```
///
/// Keys are quoted sf-strings (`"8e03978e-40d5-43e8-bc93-6894a57f9324"`), as the IETF draft
/// specifies; [`quoted(false)`](Self::quoted) sends them bare, for servers that expect that.
#[derive(Clone, Debug)]
#[must_use]
pub struct AddIdempotencyKeyLayer {
    methods: Vec<Method>,
    quoted: bool,
}

impl AddIdempotencyKeyLayer {
    /// Keys POST and PATCH requests, quoted.
    pub fn new() -> Self {
        Self {
            methods: vec![Method::POST, Method::PATCH],
            quoted: true,
        }
    }

    /// Which methods get a key. Default: POST and PATCH.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// Whether keys are sent as quoted sf-strings. Default: `true`.
    pub fn quoted(mut self, quoted: bool) -> Self {
        self.quoted = quoted;
        self
    }
}

impl Default for AddIdempotencyKeyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for AddIdempotencyKeyLayer {
    type Service = AddIdempotencyKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AddIdempotencyKey {
            inner,
            layer: self.clone(),
        }
    }
}

/// Adds an `Idempotency-Key` to unsafe requests: see [`AddIdempotencyKeyLayer`].
#[derive(Clone, Debug)]
pub struct AddIdempotencyKey<S> {
    inner: S,
    layer: AddIdempotencyKeyLayer,
}

impl<S> AddIdempotencyKey<S> {
    crate::inner_accessors!();
}

impl<S, B> Service<Request<B>> for AddIdempotencyKey<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if self.layer.methods.contains(request.method())
            && !request.headers().contains_key(IDEMPOTENCY_KEY)
        {
            request
                .headers_mut()
                .insert(IDEMPOTENCY_KEY, new_key(self.layer.quoted));
        }
        self.inner.call(request)
    }
}

/// A random UUID v4 (RFC 9562) as a header value, quoted or bare.
fn new_key(quoted: bool) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // The thread's cryptographically secure generator: keys must not be guessable.
    let mut bits: u128 = rand::random();
    // Version 4, variant 10.
    bits = (bits & !(0xF << 76)) | (0x4 << 76);
    bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let mut text = [0u8; 38];
    let mut at = 0;
    if quoted {
        text[0] = b'"';
        at = 1;
    }
    for (index, shift) in (0..32).rev().map(|nibble| nibble * 4).enumerate() {
        if matches!(index, 8 | 12 | 16 | 20) {
            text[at] = b'-';
            at += 1;
        }
        text[at] = HEX[((bits >> shift) & 0xF) as usize];
        at += 1;
    }
    if quoted {
        text[at] = b'"';
        at += 1;
    }
    HeaderValue::from_bytes(&text[..at]).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use crate::http::parse_idempotency_key;

    #[test]
    fn keys_are_version_4_uuids() {
        let key = new_key(true);
        let text = parse_idempotency_key(&key, false, 255)
            .unwrap()
            .into_owned();
        assert_eq!(text.len(), 36);
        let groups: Vec<_> = text.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_eq!(&text[14..15], "4", "version 4: {text}");
        assert!("89ab".contains(&text[19..20]), "variant 10: {text}");
        assert!(text.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
        let bare = new_key(false);
        assert_eq!(bare.len(), 36);
        assert_ne!(new_key(true), new_key(true), "fresh each time");
    }
}
