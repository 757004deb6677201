//! Sending a provider request and turning HTTP failures into typed errors.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::HeaderMap;

use crate::chat::ErrorBody;
use crate::error::{Error, ErrorCode, Result};
use crate::provider::Provider;

/// Maps a transport failure (no HTTP answer) to `TIMEOUT` or `NETWORK_ERROR`.
/// The URL is stripped: it can carry a key for some providers.
pub(crate) fn transport_error(err: reqwest::Error, timeout: Duration) -> Error {
    if err.is_timeout() {
        return timeout_error(timeout);
    }
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let code = if err.is_decode() || err.is_body() {
        ErrorCode::ProviderError
    } else {
        ErrorCode::NetworkError
    };
    Error::new(code, format!("Network error: {text}")).with_source(err)
}

pub(crate) fn timeout_error(timeout: Duration) -> Error {
    Error::new(
        ErrorCode::Timeout,
        format!("Request timed out after {}ms", timeout.as_millis()),
    )
}

/// Sends the request and returns the response if it is a success; an error status
/// becomes `PROVIDER_ERROR` with the provider's own message, status and `Retry-After`.
pub(crate) async fn send(
    http: &reqwest::Client,
    request: reqwest::Request,
    wire: &dyn ErrorBody,
    provider: Provider,
    timeout: Duration,
) -> Result<reqwest::Response> {
    let response = http
        .execute(request)
        .await
        .map_err(|e| transport_error(e, timeout))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let body = response.bytes().await.unwrap_or_default();
    let detail = wire
        .error_message(&body)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    Err(Error::new(
        ErrorCode::ProviderError,
        format!("LLM provider error: {provider} answered {status}: {detail}"),
    )
    .with_status(status.as_u16())
    .with_retry_after(retry_after))
}

/// `Retry-After` in seconds (the HTTP-date form is rare from LLM APIs and is ignored).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// One server-sent event: its name (empty when unnamed) and data.
#[derive(Debug)]
pub(crate) struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Decodes a response body as server-sent events. A body that breaks off mid-way or
/// is not UTF-8 yields an error item instead of ending quietly.
pub(crate) fn sse_events(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    timeout: Duration,
) -> impl Stream<Item = Result<SseEvent>> + Send + 'static {
    use eventsource_stream::{EventStreamError, Eventsource};
    body.eventsource().map(move |item| match item {
        Ok(ev) => Ok(SseEvent {
            event: ev.event,
            data: ev.data,
        }),
        Err(EventStreamError::Transport(e)) => Err(transport_error(e, timeout)),
        Err(EventStreamError::Utf8(e)) => Err(Error::new(
            ErrorCode::ProviderError,
            format!("LLM provider error: stream is not valid UTF-8: {e}"),
        )),
        Err(EventStreamError::Parser(e)) => Err(Error::new(
            ErrorCode::ProviderError,
            format!("LLM provider error: malformed event stream: {e}"),
        )),
    })
}
