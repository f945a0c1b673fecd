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
/// and the layers then apply only their own configuration. For a request type from another
/// crate, wrap it in [`NoExtensions`].
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
/// assert!(Ping.extensions().is_none());
/// let query = Query { sql: "select 1".into(), extensions: http::Extensions::new() };
/// assert!(query.extensions().is_some() && !query.sql.is_empty());
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

/// Wraps a request of a type that cannot carry extensions and that you cannot implement
/// [`RequestExtensions`] for (a type from another crate: Rust's orphan rule forbids it).
///
/// Layers see a request without extensions and apply only their own configuration. Wrap before
/// the palisade layers and unwrap after them:
///
/// ```
/// use std::time::Duration;
/// use palisade::NoExtensions;
/// use palisade::timeout::TimeoutLayer;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A service over a request type from another crate (here `String`).
/// let inner = tower::service_fn(|query: String| async move {
///     Ok::<_, palisade::error::BoxError>(query.len())
/// });
/// let mut svc = ServiceBuilder::new()
///     .map_request(NoExtensions)
///     .layer(TimeoutLayer::new(Duration::from_secs(1)))
///     .map_request(NoExtensions::into_inner)
///     .service(inner);
/// let len = svc.ready().await.unwrap().call("select 1".to_owned()).await.unwrap();
/// assert_eq!(len, 8);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NoExtensions<T>(pub T);

impl<T> NoExtensions<T> {
    /// The wrapped request.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> RequestExtensions for NoExtensions<T> {}
