//! The server side of propagation for axum / tower / hyper (feature `axum`): a layer
//! that gives every request a SERVER span continuing the caller's trace, and an
//! extractor for the caller's conversation. The extractor of a `Session` continuing it
//! is `Session`'s own (in `call/session.rs`): propagation does not import the calls.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, MatchedPath};
use http::request::Parts;
use tracing::Instrument;
use tracing::field::Empty;

use crate::propagation::{self, Conversation};
use crate::telemetry::semconv;

/// A tower layer that runs each request in a SERVER span (`{METHOD} {route}`, with
/// `http.request.method`, `http.route`, `url.path` and `http.response.status_code`),
/// the child of the `traceparent` the request carries, with its baggage (`session.id`,
/// `user.id`) in context: spans and LLM calls made while handling the request join the
/// caller's trace and conversation. Hostile trace headers are ignored (a fresh trace).
///
/// Add it with `Router::layer` so that axum's matched route names the span.
///
/// ```
/// let app: axum::Router = axum::Router::new()
///     .route("/answer", axum::routing::post(|| async { "42" }))
///     .layer(tracia::propagation::TraceContextLayer::new());
/// # drop(app);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextLayer {
    _private: (),
}

impl TraceContextLayer {
    /// The layer.
    ///
    /// ```
    /// let layer = tracia::propagation::TraceContextLayer::new();
    /// # drop(layer);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> tower_layer::Layer<S> for TraceContextLayer {
    type Service = TraceContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContextService { inner }
    }
}

/// The service [`TraceContextLayer`] wraps around yours.
///
/// ```
/// use tower_layer::Layer;
/// // Around any tower service of `http::Request`s, here a whole router.
/// let service = tracia::propagation::TraceContextLayer::new().layer(axum::Router::<()>::new());
/// # drop(service);
/// ```
#[derive(Debug, Clone)]
pub struct TraceContextService<S> {
    inner: S,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for TraceContextService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let span = server_span(&request);
        let parent = propagation::extract(request.headers());
        propagation::set_parent(&span, parent.clone());
        request
            .extensions_mut()
            .insert(propagation::conversation(&parent));
        // The inner service may start work in `call`: do it inside the span.
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let result = response.await;
                if let Ok(response) = &result {
                    let status = response.status();
                    let span = tracing::Span::current();
                    span.record(
                        semconv::HTTP_RESPONSE_STATUS_CODE,
                        i64::from(status.as_u16()),
                    );
                    // Server spans are errors for 5xx only (semconv).
                    if status.is_server_error() {
                        span.record(semconv::OTEL_STATUS_CODE, "error");
                        span.record(semconv::ERROR_TYPE, status.as_str());
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

fn server_span<B>(request: &http::Request<B>) -> tracing::Span {
    let method = request.method().as_str();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    tracing::info_span!(
        target: "tracia::http",
        "http.server",
        otel.name = %name,
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = Empty,
        otel.status_code = Empty,
        error.type = Empty,
    )
}

/// The caller's conversation (baggage `session.id` and `user.id`), as an axum
/// extractor; never rejects (no baggage is an empty conversation).
///
/// ```
/// async fn handler(who: tracia::propagation::Conversation) -> String {
///     who.session_id.unwrap_or_default()
/// }
/// let app: axum::Router = axum::Router::new().route("/", axum::routing::get(handler));
/// # drop(app);
/// ```
impl<S: Send + Sync> FromRequestParts<S> for Conversation {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Conversation>()
            .cloned()
            .unwrap_or_else(|| propagation::conversation(&propagation::extract(&parts.headers))))
    }
}
