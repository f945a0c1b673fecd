//! Header names and header rules shared by the layers.
//!
//! Used by the retry and idempotency layers; a build with neither uses only the public part.
#![cfg_attr(not(any(feature = "retry", feature = "idempotency")), allow(dead_code))]

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// The `Idempotency-Key` request header (IETF httpapi draft): a retry layer repeats an unsafe
/// request that carries it, and the idempotency layer deduplicates by it.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Set to `true` on a response the idempotency layer replayed from its store (the de facto
/// header Stripe introduced).
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1): those a connection consumes, and those its
/// `Connection` header names. `TE: trailers` is kept (gRPC needs it on every request); `Trailer`
/// is end-to-end (it announces the body's trailers) and is kept too.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    const HOP_BY_HOP: [HeaderName; 5] = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ];
    // Only a message that names extra hop-by-hop headers pays for collecting them.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    // `TE` may only say `trailers` on HTTP/2 and later; anything else it says is hop-by-hop.
    let wants_trailers = headers.get_all(header::TE).iter().any(te_lists_trailers);
    if headers.remove(header::TE).is_some() && wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Whether a `TE` value lists `trailers`.
fn te_lists_trailers(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|value| {
        value
            .split(',')
            .any(|coding| coding.trim().eq_ignore_ascii_case("trailers"))
    })
}
