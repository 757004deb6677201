//! Trace context across services: W3C `traceparent` / `tracestate` and W3C baggage
//! (`session.id`, `user.id`) in and out of HTTP headers.
//!
//! A client injects the current span's context into its outgoing request; a server
//! extracts it from the incoming headers and makes its spans children of it, so both
//! services' spans form one trace, and a conversation keeps its session and user on the
//! far side.
//!
//! ```
//! use tracia::propagation;
//! let mut outgoing = http::HeaderMap::new();
//! let cx = propagation::with_conversation(opentelemetry::Context::new(), Some("conv_7"), Some("user_42"));
//! propagation::inject_context(&cx, &mut outgoing);
//! // … on the server:
//! let parent = propagation::extract(&outgoing);
//! assert_eq!(propagation::conversation(&parent).session_id.as_deref(), Some("conv_7"));
//! ```
//!
//! Extraction never fails: malformed, oversized or duplicated headers are ignored, and
//! the request starts a fresh trace.

#[cfg(feature = "axum")]
mod server_span;

use http::HeaderMap;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{Extractor, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderInjector;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[cfg(feature = "axum")]
pub use crate::propagation::server_span::{TraceContextLayer, TraceContextService};

/// Baggage key of the conversation (the span attribute `session.id`).
pub const SESSION_ID: &str = crate::telemetry::semconv::SESSION_ID;
/// Baggage key of the end user (the span attribute `user.id`).
pub const USER_ID: &str = crate::telemetry::semconv::USER_ID;

/// Longest header value read: `traceparent` is 55 bytes, W3C caps `tracestate` at 32
/// members and baggage at 8192 bytes; anything longer is hostile or broken.
const MAX_HEADER_BYTES: usize = 8192;

fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// Writes the current `tracing` span's context (and its baggage) into `headers`.
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// tracia::propagation::inject(&mut headers); // no span: nothing is written
/// assert!(headers.get("traceparent").is_none());
/// ```
pub fn inject(headers: &mut HeaderMap) {
    inject_context(&tracing::Span::current().context(), headers);
}

/// Writes `cx`'s span context and baggage into `headers`.
///
/// ```
/// use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
/// let sc = SpanContext::new(TraceId::from(7), SpanId::from(9), TraceFlags::SAMPLED, true,
///     TraceState::default());
/// let cx = opentelemetry::Context::new().with_remote_span_context(sc);
/// let mut headers = http::HeaderMap::new();
/// tracia::propagation::inject_context(&cx, &mut headers);
/// assert_eq!(headers["traceparent"], "00-00000000000000000000000000000007-0000000000000009-01");
/// ```
pub fn inject_context(cx: &Context, headers: &mut HeaderMap) {
    propagator().inject_context(cx, &mut HeaderInjector(headers));
}

/// The request with the current span's `traceparent`, `tracestate` and baggage.
///
/// ```no_run
/// # async fn demo() -> Result<(), reqwest::Error> {
/// let request = reqwest::Client::new().get("http://127.0.0.1:8080/answer");
/// tracia::propagation::with_trace_headers(request).send().await?;
/// # Ok(()) }
/// ```
pub fn with_trace_headers(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let mut headers = HeaderMap::new();
    inject(&mut headers);
    request.headers(headers)
}

/// The remote parent (and baggage) that incoming `headers` carry. Malformed, oversized
/// or duplicated trace headers are ignored: the context then has no valid span, and
/// spans made under it start a fresh trace. Never panics.
///
/// ```
/// use opentelemetry::trace::TraceContextExt;
/// let mut headers = http::HeaderMap::new();
/// headers.insert("traceparent",
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// let parent = tracia::propagation::extract(&headers);
/// assert!(parent.span().span_context().is_remote());
/// ```
pub fn extract(headers: &HeaderMap) -> Context {
    propagator().extract(&Guarded(headers))
}

/// Makes the current `tracing` span a child of the context that `headers` carry (when
/// they carry a valid one), e.g. at the top of a request handler.
///
/// ```
/// let span = tracing::info_span!("handle_request");
/// tracia::propagation::set_parent_from(&span, &http::HeaderMap::new()); // nothing to join
/// ```
pub fn set_parent_from(span: &tracing::Span, headers: &HeaderMap) {
    set_parent(span, extract(headers));
}

/// Puts `session.id` and `user.id` into the baggage of a span just created (before it
/// is entered), keeping its parent: every span and LLM call under it then carries
/// them, and [`inject`] / [`with_trace_headers`] send them to the services it calls.
///
/// ```
/// let span = tracing::info_span!("conversation");
/// tracia::propagation::set_conversation(&span, Some("conv_7"), Some("user_42"));
/// let _entered = span.enter();
/// ```
pub fn set_conversation(span: &tracing::Span, session_id: Option<&str>, user_id: Option<&str>) {
    set_parent(
        span,
        with_conversation(Context::current(), session_id, user_id),
    );
}

/// Makes `parent` (a valid remote span, or just baggage) the OpenTelemetry parent of
/// `span`; a context without a valid span keeps `span` a root but still passes its
/// baggage down.
pub(crate) fn set_parent(span: &tracing::Span, parent: Context) {
    use opentelemetry::trace::TraceContextExt;
    if parent.span().span_context().is_valid() || !parent.baggage().is_empty() {
        // Fails only when no OpenTelemetry layer sees the span: then there is no trace.
        let _ = span.set_parent(parent);
    }
}

/// The session and user a context's baggage carries.
///
/// ```
/// let cx = tracia::propagation::with_conversation(opentelemetry::Context::new(), Some("s1"), None);
/// let c = tracia::propagation::conversation(&cx);
/// assert_eq!((c.session_id.as_deref(), c.user_id), (Some("s1"), None));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Conversation {
    /// Baggage `session.id`.
    pub session_id: Option<String>,
    /// Baggage `user.id`.
    pub user_id: Option<String>,
}

impl Conversation {
    /// A conversation of this session and user.
    ///
    /// ```
    /// let c = tracia::propagation::Conversation::new(Some("conv_7"), None);
    /// assert_eq!(c.session_id.as_deref(), Some("conv_7"));
    /// ```
    pub fn new(session_id: Option<&str>, user_id: Option<&str>) -> Self {
        Self {
            session_id: session_id.map(str::to_owned),
            user_id: user_id.map(str::to_owned),
        }
    }

    /// Fills a call's session and user where the call did not set its own.
    pub(crate) fn fill(&self, session_id: &mut Option<String>, user_id: &mut Option<String>) {
        if session_id.is_none() {
            session_id.clone_from(&self.session_id);
        }
        if user_id.is_none() {
            user_id.clone_from(&self.user_id);
        }
    }
}

/// The conversation of the current context: calls made while handling a request whose
/// baggage names a session or user get them unless they set their own.
pub(crate) fn ambient_conversation() -> Conversation {
    conversation(&Context::current())
}

/// Reads `session.id` and `user.id` from `cx`'s baggage.
///
/// ```
/// let c = tracia::propagation::conversation(&opentelemetry::Context::new());
/// assert!(c.session_id.is_none());
/// ```
pub fn conversation(cx: &Context) -> Conversation {
    let get = |key: &str| {
        cx.baggage()
            .get(key)
            .map(|v| v.as_str().to_owned())
            .filter(|v| !v.is_empty())
    };
    Conversation {
        session_id: get(SESSION_ID),
        user_id: get(USER_ID),
    }
}

/// `cx` with `session.id` and `user.id` added to its baggage (existing entries kept).
///
/// ```
/// let cx = tracia::propagation::with_conversation(opentelemetry::Context::new(), Some("s1"), Some("u1"));
/// assert_eq!(tracia::propagation::conversation(&cx).user_id.as_deref(), Some("u1"));
/// ```
pub fn with_conversation(cx: Context, session_id: Option<&str>, user_id: Option<&str>) -> Context {
    let mut entries: Vec<KeyValue> = cx
        .baggage()
        .iter()
        .map(|(k, (v, _))| KeyValue::new(k.clone(), v.clone()))
        .collect();
    for (key, value) in [(SESSION_ID, session_id), (USER_ID, user_id)] {
        if let Some(value) = value {
            entries.retain(|kv| kv.key.as_str() != key);
            entries.push(KeyValue::new(key, value.to_owned()));
        }
    }
    cx.with_baggage(entries)
}

/// Reads headers for the propagators, hiding any that are repeated, oversized or not
/// visible ASCII, so that the propagators see either one sane value or none.
struct Guarded<'a>(&'a HeaderMap);

impl Extractor for Guarded<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let mut values = self.0.get_all(key).iter();
        let value = values.next()?;
        if values.next().is_some() || value.len() > MAX_HEADER_BYTES {
            return None;
        }
        value.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_valid_parent_and_its_baggage_round_trip() {
        let parent = extract(&headers(&[
            ("traceparent", PARENT),
            ("baggage", "session.id=conv_7,user.id=user_42"),
        ]));
        let sc = parent.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let c = conversation(&parent);
        assert_eq!(c.session_id.as_deref(), Some("conv_7"));
        assert_eq!(c.user_id.as_deref(), Some("user_42"));

        let mut out = HeaderMap::new();
        inject_context(&parent, &mut out);
        assert_eq!(out["traceparent"], PARENT);
        let again = conversation(&extract(&out));
        assert_eq!(again, c);
    }

    #[test]
    fn hostile_headers_are_ignored_not_fatal() {
        let long = format!("{PARENT}{}", "0".repeat(MAX_HEADER_BYTES));
        let cases: Vec<HeaderMap> = vec![
            headers(&[("traceparent", "garbage")]),
            headers(&[(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )]),
            headers(&[("traceparent", &long)]),
            headers(&[("traceparent", PARENT), ("traceparent", PARENT)]),
            headers(&[(
                "traceparent",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )]),
        ];
        for h in cases {
            let cx = extract(&h);
            assert!(!cx.span().span_context().is_valid(), "{h:?}");
        }
        let mut bad_utf8 = HeaderMap::new();
        bad_utf8.insert(
            "traceparent",
            http::HeaderValue::from_bytes(b"00-\xff\xfe").unwrap(),
        );
        assert!(!extract(&bad_utf8).span().span_context().is_valid());
        let baggage = extract(&headers(&[("baggage", "=,,=;;%%%,session.id")]));
        assert_eq!(conversation(&baggage), Conversation::default());
    }

    #[test]
    fn with_conversation_replaces_only_its_keys() {
        let cx = Context::new().with_baggage(vec![
            KeyValue::new("tenant", "acme"),
            KeyValue::new(SESSION_ID, "old"),
        ]);
        let cx = with_conversation(cx, Some("new"), None);
        assert_eq!(conversation(&cx).session_id.as_deref(), Some("new"));
        assert_eq!(
            cx.baggage().get("tenant").map(|v| v.as_str().to_owned()),
            Some("acme".into())
        );
    }
}
