//! How a request carries palisade's request-scoped values.

use http::Extensions;

/// A request type that can carry typed, request-scoped values such as a
/// [`Deadline`](crate::deadline::Deadline).
///
/// Layers that honour request-scoped values (every [`Timeout`](crate::timeout::Timeout)) serve
/// any request type implementing this trait. [`http::Request`] implements it with its own
/// extensions, which covers hyper, axum, tonic and tower-http stacks.
///
/// For a request type of your own, either keep an [`http::Extensions`] in it and return it, or
/// write an empty impl: both methods default to `None`, meaning "this request carries nothing",
/// and the layers then apply only their own configuration.
///
/// ```
/// use palisade::RequestExtensions;
///
/// // A request that carries nothing: layers use only their own limits.
/// struct Ping;
/// impl RequestExtensions for Ping {}
///
/// // A request that carries values, so deadlines flow through it.
/// struct Query {
///     sql: String,
///     extensions: http::Extensions,
/// }
/// impl RequestExtensions for Query {
///     fn extensions(&self) -> Option<&http::Extensions> {
///         Some(&self.extensions)
///     }
///     fn extensions_mut(&mut self) -> Option<&mut http::Extensions> {
///         Some(&mut self.extensions)
///     }
/// }
/// # assert!(Ping.extensions().is_none());
/// ```
pub trait RequestExtensions {
    /// The request's extensions, or `None` if this request type carries none.
    fn extensions(&self) -> Option<&Extensions> {
        None
    }

    /// The request's extensions for writing, or `None` if this request type carries none.
    fn extensions_mut(&mut self) -> Option<&mut Extensions> {
        None
    }
}

impl<B> RequestExtensions for http::Request<B> {
    fn extensions(&self) -> Option<&Extensions> {
        Some(http::Request::extensions(self))
    }

    fn extensions_mut(&mut self) -> Option<&mut Extensions> {
        Some(http::Request::extensions_mut(self))
    }
}
