//! The HTTP mode of the cache (features `cache` + `http`): RFC 9111 caching with RFC 5861's
//! stale windows and RFC 9211's `Cache-Status`, over the same engine as the generic mode. See
//! the [module docs](crate::cache#http-mode).

mod config;
mod directives;
mod freshness;
mod future;
mod key;
mod remote;
mod service;
mod stored;

pub use self::config::{
    CacheMode, DEFAULT_MAX_BODY, DEFAULT_MAX_BYTES, HttpCacheBuilder, HttpCacheHandle,
    HttpCacheLayer,
};
pub use self::future::ResponseFuture as HttpResponseFuture;
pub use self::service::HttpCache;
