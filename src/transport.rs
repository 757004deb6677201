//! Sending a provider request and turning HTTP failures into typed errors.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use http::HeaderMap;

use crate::error::{Error, ErrorCode, Result};

/// Maps a transport failure (no HTTP answer) to `TIMEOUT` or `NETWORK_ERROR`.
/// The URL is stripped: it can carry a key for some providers.
///
/// The call's own `timeout` is enforced around the request ([`timeout_error`]), so a
/// timeout reported here is the HTTP client's (a `reqwest::Client` of the user's with
/// its own timeouts) or the system's, and says so rather than claim `timeout` passed.
pub(crate) fn transport_error(err: reqwest::Error, timeout: Duration) -> Error {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if err.is_timeout() {
        return Error::new(
            ErrorCode::Timeout,
            format!(
                "Request timed out in the HTTP client, before the call's {}ms timeout: {text}",
                timeout.as_millis()
            ),
        )
        .with_source(err);
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

/// How a provider's error bodies read; shared by its chat and embedding wires.
pub(crate) trait ErrorBody: Send + Sync + std::fmt::Debug {
    /// The human-readable message of an error body, when the body has one. The default
    /// reads `error.message` (OpenAI, Anthropic, Gemini, Voyage) or `message` (Bedrock).
    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    }
}

/// Sends the request and returns the response if it is a success; an error status
/// becomes `PROVIDER_ERROR` with the provider's own message, status and `Retry-After`.
pub(crate) async fn send(
    http: &reqwest::Client,
    request: reqwest::Request,
    wire: &dyn ErrorBody,
    provider: impl std::fmt::Display,
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
    let retry_after = retry_after(response.headers(), Duration::MAX);
    let body = read_body(response, MAX_ERROR_BODY_BYTES, timeout)
        .await
        .unwrap_or_default();
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

/// How long a server's `Retry-After` asks to wait, at most `cap`: delay-seconds (`120`,
/// or `1.5` as some LLM APIs send) or an HTTP-date (the time until it, zero if past).
/// `None` without the header or with a value of neither form. The one parser for every
/// retry of the SDK and the collector.
///
/// ```
/// use std::time::Duration;
/// let mut headers = http::HeaderMap::new();
/// headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("120"));
/// let cap = Duration::from_secs(30);
/// assert_eq!(tracia::retry_after(&headers, cap), Some(cap));
/// ```
pub fn retry_after(headers: &HeaderMap, cap: Duration) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match value.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
        }
        Ok(_) => return None,
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    };
    Some(wait.min(cap))
}

/// The most bytes read of one provider answer: a whole non-streamed body, or one
/// server-sent event of a stream (a stream itself may go on, event by event). Real
/// answers are far smaller; a bigger one is refused instead of buffered whole.
pub(crate) const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// The most bytes read of an error answer (only its message is kept).
const MAX_ERROR_BODY_BYTES: usize = 1024 * 1024;

/// `PROVIDER_ERROR` for an answer over [`MAX_RESPONSE_BYTES`], naming the limit.
pub(crate) fn too_large_error(what: &str) -> Error {
    Error::new(
        ErrorCode::ProviderError,
        format!(
            "LLM provider error: {what} is larger than the {} MiB limit",
            MAX_RESPONSE_BYTES / (1024 * 1024)
        ),
    )
}

/// `PROVIDER_ERROR` for an answer over the client's `max_answer_bytes`, naming it.
pub(crate) fn answer_too_large(max_answer_bytes: usize) -> Error {
    Error::new(
        ErrorCode::ProviderError,
        format!(
            "LLM provider error: the answer exceeded {max_answer_bytes} bytes (max_answer_bytes)"
        ),
    )
}

/// Reads a whole non-streamed answer, refusing one over `max_answer_bytes` (or over
/// [`MAX_RESPONSE_BYTES`], whichever is lower) with the error naming that limit.
pub(crate) async fn read_answer(
    response: reqwest::Response,
    max_answer_bytes: usize,
    timeout: Duration,
) -> Result<Bytes> {
    if max_answer_bytes >= MAX_RESPONSE_BYTES {
        return read_body(response, MAX_RESPONSE_BYTES, timeout).await;
    }
    read_limited(response, max_answer_bytes, timeout, || {
        answer_too_large(max_answer_bytes)
    })
    .await
}

/// Reads a whole response body, refusing one over `limit` bytes: at once by its
/// `Content-Length`, else as soon as more than that has arrived.
pub(crate) async fn read_body(
    response: reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes> {
    read_limited(response, limit, timeout, || too_large_error("the response")).await
}

async fn read_limited(
    response: reqwest::Response,
    limit: usize,
    timeout: Duration,
    too_large: impl Fn() -> Error,
) -> Result<Bytes> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| transport_error(e, timeout))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Hands an SSE body on in whole lines, and ends it as soon as one event (the bytes up
/// to a blank line) grows past `limit`, setting `over`. Both bound the decoder's work:
/// it would buffer an endless event whole, and it re-reads an unfinished line from its
/// start on every chunk (quadratic in the line's length).
pub(crate) fn bounded_events(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    limit: usize,
    over: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static {
    let state = LineBuffer {
        body: Box::pin(body),
        pending: bytes::BytesMut::new(),
        bounds: EventBounds {
            in_event: 0,
            at_line_start: true,
            after_cr: false,
        },
        limit,
        over,
        cut: false,
    };
    stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    })
}

struct LineBuffer<S> {
    body: std::pin::Pin<Box<S>>,
    /// Bytes of a line not yet ended.
    pending: bytes::BytesMut,
    bounds: EventBounds,
    limit: usize,
    over: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// An event went over the limit: the events before it are handed on, then the body
    /// ends.
    cut: bool,
}

impl<S: Stream<Item = reqwest::Result<Bytes>>> LineBuffer<S> {
    /// The next run of whole lines (or the rest, at the end of the body).
    async fn next(&mut self) -> Option<reqwest::Result<Bytes>> {
        loop {
            if self.cut {
                // Set only now, so that what came before is decoded (and fails) as it
                // would have in smaller chunks.
                self.over.store(true, std::sync::atomic::Ordering::Release);
                return None;
            }
            let mut chunk = match self.body.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => return Some(Err(e)),
                None if self.pending.is_empty() => return None,
                None => return Some(Ok(self.pending.split().freeze())),
            };
            if let Err(over_at) = self.bounds.feed(&chunk, self.limit) {
                chunk.truncate(over_at);
                self.cut = true;
            }
            // Up to the last line end: a CR last of all may be half a CRLF, kept back.
            if self.pending.is_empty() {
                // The usual case, the chunk starts a line: its whole lines are handed
                // on as they are, without a copy.
                let half_crlf = !self.cut && chunk.ends_with(b"\r");
                let usable = chunk.len() - usize::from(half_crlf);
                let lines = memchr::memrchr2(b'\n', b'\r', &chunk[..usable]).map(|i| i + 1);
                let whole = chunk.split_to(lines.unwrap_or(0));
                self.pending.extend_from_slice(&chunk);
                if lines.is_some() {
                    return Some(Ok(whole));
                }
                continue;
            }
            let searched = self.pending.len().saturating_sub(1);
            self.pending.extend_from_slice(&chunk);
            // (Not when cut: nothing follows, so a CR last of all ends its line.)
            let half_crlf = !self.cut && self.pending.ends_with(b"\r");
            let usable = self.pending.len() - usize::from(half_crlf);
            if let Some(i) =
                memchr::memrchr2(b'\n', b'\r', &self.pending[searched.min(usable)..usable])
            {
                return Some(Ok(self
                    .pending
                    .split_to(searched.min(usable) + i + 1)
                    .freeze()));
            }
        }
    }
}

/// Where an SSE body stands: bytes of the current event, and the line-ending state
/// (`\n`, `\r\n` and `\r` all end a line; an empty line ends an event).
struct EventBounds {
    in_event: usize,
    at_line_start: bool,
    after_cr: bool,
}

impl EventBounds {
    /// Takes the next bytes; once the current event is over `limit` bytes, fails with
    /// where in `chunk` that event started (0 when before it).
    fn feed(&mut self, chunk: &[u8], limit: usize) -> Result<(), usize> {
        let mut rest = chunk;
        let mut event_start = 0;
        while !rest.is_empty() {
            let text = memchr::memchr2(b'\n', b'\r', rest).unwrap_or(rest.len());
            if text > 0 {
                self.in_event += text;
                self.at_line_start = false;
                self.after_cr = false;
            }
            if let Some(&b) = rest.get(text) {
                if b == b'\n' && self.after_cr {
                    // The LF of a CRLF: the CR already ended the line.
                    self.after_cr = false;
                } else {
                    self.after_cr = b == b'\r';
                    if self.at_line_start {
                        self.in_event = 0;
                        event_start = chunk.len() - rest.len() + text + 1;
                    }
                    self.at_line_start = true;
                }
                self.in_event += 1;
            }
            rest = &rest[(text + 1).min(rest.len())..];
            if self.in_event > limit {
                return Err(event_start);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod bounded_events_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    async fn pass(chunks: &[&'static [u8]], limit: usize) -> (Vec<Bytes>, bool) {
        let over = Arc::new(AtomicBool::new(false));
        let chunks: Vec<reqwest::Result<Bytes>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        let body = stream::iter(chunks);
        let out = bounded_events(body, limit, over.clone())
            .map(|c| c.unwrap())
            .collect()
            .await;
        (out, over.load(Ordering::Acquire))
    }

    #[tokio::test]
    async fn lines_are_handed_on_whole_however_they_are_split() {
        let chunks: [&[u8]; 5] = [b"data: a", b"b\r", b"\n\r", b"\ndata: c\n\nda", b"ta: d"];
        let (out, over) = pass(&chunks, 1024).await;
        assert!(!over);
        assert_eq!(out.concat(), chunks.concat(), "every byte, in order");
        assert_eq!(
            out,
            [&b"data: ab\r\n"[..], b"\r\ndata: c\n\n", b"data: d"],
            "each piece ends a line (no half CRLF), the rest at the end"
        );
    }

    #[tokio::test]
    async fn an_event_over_the_limit_ends_the_body() {
        // Events of 9, 12 and 9 bytes under a 12-byte limit, however their lines end;
        // the body as a whole is far over it.
        let events: [&[u8]; 3] = [b"data: 1\n\n", b"data: 22\r\n\r\n", b"data: 3\r\r"];
        let (out, over) = pass(&events, 12).await;
        assert!(!over);
        assert_eq!(out.concat(), events.concat());
        // A 14-byte event is cut before any of its bytes are handed on.
        let (out, over) = pass(&[b"data: 1\n\n", b"data: 2222", b"22\n\n"], 12).await;
        assert!(over);
        assert_eq!(out, [&b"data: 1\n\n"[..]]);
    }
}

#[cfg(test)]
mod retry_after_tests {
    use super::*;
    use http::HeaderValue;

    fn wait(value: &'static str, cap: Duration) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static(value));
        retry_after(&headers, cap)
    }

    #[test]
    fn delay_seconds_are_read_and_capped() {
        let cap = Duration::from_secs(60);
        assert_eq!(retry_after(&HeaderMap::new(), cap), None);
        assert_eq!(wait(" 7 ", cap), Some(Duration::from_secs(7)));
        assert_eq!(wait("1.5", cap), Some(Duration::from_millis(1500)));
        assert_eq!(wait("0", cap), Some(Duration::ZERO));
        assert_eq!(wait("3600", cap), Some(cap));
        assert_eq!(wait("1e300", cap), Some(cap));
        assert_eq!(wait("-1", cap), None);
        assert_eq!(wait("NaN", cap), None);
        assert_eq!(wait("soon", cap), None);
    }

    #[test]
    fn http_dates_wait_until_then_and_are_capped() {
        let cap = Duration::from_secs(60);
        // Long past: retry now.
        assert_eq!(
            wait("Wed, 21 Oct 2015 07:28:00 GMT", cap),
            Some(Duration::ZERO)
        );
        // Far future: the cap.
        assert_eq!(wait("Fri, 01 Jan 2100 00:00:00 GMT", cap), Some(cap));
        // Ten minutes from now (whole seconds: the date form has no fraction).
        let later = std::time::SystemTime::now() + Duration::from_secs(600);
        let mut headers = HeaderMap::new();
        let date = HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap();
        headers.insert(http::header::RETRY_AFTER, date);
        let got = retry_after(&headers, Duration::MAX).unwrap();
        assert!(
            got > Duration::from_secs(590) && got <= Duration::from_secs(600),
            "{got:?}"
        );
        assert_eq!(retry_after(&headers, cap), Some(cap));
    }
}
