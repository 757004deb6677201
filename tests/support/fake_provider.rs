//! A fake LLM provider API (OpenAI, Anthropic, Gemini, Bedrock, Voyage) that answers
//! every POST from a FIFO queue of canned replies, usually recorded fixtures, or, once
//! the queue is empty, with one repeated reply (for benchmarks).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};

use super::fixtures::load_fixture;
use super::server::{RecordedRequest, TestServer, lock, wait_until};

const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;

/// Before aborting a truncated body, give hyper time to flush the bytes it
/// already has; otherwise the client might see the abort without the prefix.
const FLUSH_BEFORE_ABORT: Duration = Duration::from_millis(50);

/// How a reply's body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The whole body at once, with `Content-Length`.
    Whole,
    /// The first `n` bytes, then the connection is aborted mid-body.
    Truncated(usize),
    /// Events one at a time, pausing between them, with chunked transfer encoding:
    /// SSE events (split after each `"\n\n"`), or AWS event-stream frames (split by
    /// their length prefix) for `application/vnd.amazon.eventstream` bodies.
    Chunked(Duration),
}

/// One canned response in the queue.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Wait this long before sending anything (status line included).
    pub delay: Duration,
    pub delivery: Delivery,
    /// For fixtures: the operation it was recorded for (see [`operation_of`]). A
    /// request for another operation gets a 500 naming both, so a wrong URL fails loudly.
    pub expected_endpoint: Option<String>,
    /// Used in error messages and [`StreamOutcome`]s.
    pub label: String,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Reply {
            status,
            content_type: content_type.to_string(),
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            delivery: Delivery::Whole,
            expected_endpoint: None,
            label: format!("hand-made {status}"),
        }
    }

    /// The recorded response of fixture `name` (e.g. `openai/chat-1`).
    pub fn fixture(name: &str) -> Self {
        let f = load_fixture(name);
        let mut reply = Reply::new(f.status, &f.content_type, f.response_body.clone());
        reply.expected_endpoint = Some(operation_of(f.request_path()).to_string());
        reply.label = name.to_string();
        reply
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn truncated(mut self, n_bytes: usize) -> Self {
        self.delivery = Delivery::Truncated(n_bytes);
        self
    }

    pub fn chunked(mut self, chunk_pause: Duration) -> Self {
        self.delivery = Delivery::Chunked(chunk_pause);
        self
    }
}

/// What happened to one [`Delivery::Chunked`] body, recorded when hyper drops
/// it: either after the last event, or early because the client went away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamOutcome {
    pub label: String,
    pub events_total: usize,
    /// Events handed to hyper (not necessarily read by the client).
    pub events_sent: usize,
    pub completed: bool,
}

/// OpenAI's real error body: `{"error":{"message","type","param":null,"code"}}`.
pub fn openai_error_body(message: &str, error_type: &str, code: Option<&str>) -> String {
    serde_json::json!({
        "error": { "message": message, "type": error_type, "param": null, "code": code }
    })
    .to_string()
}

#[derive(Default)]
struct ProviderState {
    queue: VecDeque<Reply>,
    /// Answers every POST that finds the queue empty (see `repeat_fixture`).
    repeat: Option<Reply>,
    /// POSTs answered by `repeat` (they are not recorded).
    repeated: usize,
    requests: Vec<RecordedRequest>,
    streams: Vec<StreamOutcome>,
}

type Shared = Arc<Mutex<ProviderState>>;

/// Fake provider server. Point the SDK at [`FakeProvider::base_url`] (OpenAI-style,
/// with `/v1`) or [`FakeProvider::url`] (Anthropic, Gemini, Bedrock: their paths carry
/// the version).
pub struct FakeProvider {
    server: TestServer,
    state: Shared,
}

impl FakeProvider {
    pub async fn start() -> Self {
        let state = Shared::default();
        let router = Router::new().fallback(handle).with_state(state.clone());
        FakeProvider {
            server: TestServer::start("fake-provider", router),
            state,
        }
    }

    /// `http://127.0.0.1:PORT/v1`, the equivalent of `https://api.openai.com/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.url())
    }

    /// `http://127.0.0.1:PORT`, without the `/v1` prefix.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Queues any reply; the other `enqueue_*` methods are shorthands.
    pub fn enqueue_reply(&self, reply: Reply) -> &Self {
        lock(&self.state).queue.push_back(reply);
        self
    }

    /// Queues the recorded response of fixture `name`, e.g. `openai/chat-1`.
    pub fn enqueue_fixture(&self, name: &str) -> &Self {
        self.enqueue_reply(Reply::fixture(name))
    }

    pub fn enqueue(&self, status: u16, content_type: &str, body: impl Into<Bytes>) -> &Self {
        self.enqueue_reply(Reply::new(status, content_type, body))
    }

    /// Like [`enqueue`](Self::enqueue) with extra headers, e.g. `Retry-After`.
    pub fn enqueue_with_headers(
        &self,
        status: u16,
        content_type: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> &Self {
        let reply = headers.iter().fold(
            Reply::new(status, content_type, body),
            |r, (name, value)| r.with_header(name, value),
        );
        self.enqueue_reply(reply)
    }

    /// Queues an error in OpenAI's shape, e.g.
    /// `(429, "Rate limit reached", "requests", Some("rate_limit_exceeded"))`.
    pub fn enqueue_openai_error(
        &self,
        status: u16,
        message: &str,
        error_type: &str,
        code: Option<&str>,
    ) -> &Self {
        let body = openai_error_body(message, error_type, code);
        self.enqueue(status, "application/json", body)
    }

    /// The fixture's response, held back for `delay` before anything is sent.
    pub fn enqueue_delayed(&self, name: &str, delay: Duration) -> &Self {
        self.enqueue_reply(Reply::fixture(name).delayed(delay))
    }

    /// The fixture's first `n_bytes` bytes, then an aborted connection.
    pub fn enqueue_truncated(&self, name: &str, n_bytes: usize) -> &Self {
        self.enqueue_reply(Reply::fixture(name).truncated(n_bytes))
    }

    /// The fixture's events (SSE events or event-stream frames) one by one with
    /// `chunk_pause` between them.
    pub fn enqueue_chunked(&self, name: &str, chunk_pause: Duration) -> &Self {
        self.enqueue_reply(Reply::fixture(name).chunked(chunk_pause))
    }

    /// Answers every POST that finds the queue empty with fixture `name`, for good: a
    /// benchmark's endless supply. These requests are counted ([`Self::repeated_count`])
    /// but not recorded, so memory stays flat however many arrive; queued replies still
    /// come first and are recorded as usual.
    pub fn repeat_fixture(&self, name: &str) -> &Self {
        self.repeat_reply(Reply::fixture(name))
    }

    /// The same with any reply.
    pub fn repeat_reply(&self, reply: Reply) -> &Self {
        lock(&self.state).repeat = Some(reply);
        self
    }

    /// Requests answered by the repeated reply so far.
    pub fn repeated_count(&self) -> usize {
        lock(&self.state).repeated
    }

    /// Replies still queued (assert 0 to prove every reply was consumed).
    pub fn pending(&self) -> usize {
        lock(&self.state).queue.len()
    }

    /// Every request received so far, in arrival order (unknown paths included).
    pub async fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.state).requests.len()
    }

    /// Waits until at least `n` requests arrived or `timeout` passed.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        wait_until(
            &self.state,
            timeout,
            |s| s.requests.len() >= n,
            |s| s.requests.clone(),
        )
        .await
    }

    /// Outcomes of the chunked (paced SSE) bodies that have finished so far.
    pub async fn stream_outcomes(&self) -> Vec<StreamOutcome> {
        lock(&self.state).streams.clone()
    }

    /// Waits until `n` chunked bodies finished (completed or abandoned by the
    /// client) or `timeout` passed. Abandonment is noticed when hyper sees the
    /// closed connection, which can take up to one `chunk_pause`.
    pub async fn wait_for_stream_outcomes(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Vec<StreamOutcome> {
        wait_until(
            &self.state,
            timeout,
            |s| s.streams.len() >= n,
            |s| s.streams.clone(),
        )
        .await
    }
}

/// What a request path asks for, whatever the base URL and model: the last path
/// segment, after its `:` if any (`completions`, `embeddings`, `responses`, `messages`,
/// `generateContent`, `streamGenerateContent`, `batchEmbedContents`, `converse`,
/// `converse-stream`, `invoke`).
pub fn operation_of(path: &str) -> &str {
    let last = path.rsplit('/').next().unwrap_or(path);
    last.rsplit(':').next().unwrap_or(last)
}

async fn handle(State(state): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let raw = match axum::body::to_bytes(body, MAX_REQUEST_BODY).await {
        Ok(raw) => raw,
        Err(e) => return json_error(400, &format!("fake-provider: cannot read body: {e}")),
    };
    let what = format!("{} {}", parts.method, parts.uri.path());
    let operation = operation_of(parts.uri.path()).to_string();

    let reply = {
        let mut s = lock(&state);
        if parts.method == http::Method::POST
            && s.queue.is_empty()
            && let Some(reply) = s.repeat.clone()
        {
            s.repeated += 1;
            Some(reply)
        } else {
            s.requests.push(RecordedRequest::new(&parts, raw));
            // Only real API calls consume the queue, so a stray request cannot
            // shift every later reply by one.
            if parts.method != http::Method::POST {
                return json_error(404, &format!("fake-provider: no such endpoint: {what}"));
            }
            s.queue.pop_front()
        }
    };
    let Some(reply) = reply else {
        return json_error(
            500,
            &format!("fake-provider: response queue is empty (unexpected request {what})"),
        );
    };
    if let Some(expected) = &reply.expected_endpoint
        && *expected != operation
    {
        return json_error(
            500,
            &format!(
                "fake-provider: fixture {} was recorded for {expected}, but got {what}",
                reply.label
            ),
        );
    }

    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    build_response(reply, state)
}

fn build_response(reply: Reply, state: Shared) -> Response {
    let mut builder = http::Response::builder()
        .status(reply.status)
        .header(CONTENT_TYPE, &reply.content_type);
    for (name, value) in &reply.headers {
        builder = builder.header(name, value);
    }
    let body = match reply.delivery {
        Delivery::Whole => Body::from(reply.body),
        Delivery::Truncated(n) => {
            // Announce the full length (as a real server would) so that even a
            // lenient client cannot take the prefix for a complete JSON body.
            // SSE is sent chunked, like the real API.
            if !reply.content_type.starts_with("text/event-stream") {
                builder = builder.header(CONTENT_LENGTH, reply.body.len());
            }
            Body::from_stream(truncated(reply.body.slice(..n.min(reply.body.len()))))
        }
        Delivery::Chunked(pause) => {
            let events = if reply.content_type == AWS_EVENT_STREAM {
                split_frames(&reply.body)
            } else {
                split_events(&reply.body)
            };
            let guard = StreamGuard {
                state,
                label: reply.label,
                total: events.len(),
                sent: 0,
            };
            Body::from_stream(paced(events, pause, guard))
        }
    };
    builder
        .body(body)
        .unwrap_or_else(|e| json_error(500, &format!("fake-provider: invalid queued reply: {e}")))
}

/// Yields `prefix`, then an error, which makes hyper abort the connection.
fn truncated(prefix: Bytes) -> BoxStream<'static, std::io::Result<Bytes>> {
    let abort = async {
        tokio::time::sleep(FLUSH_BEFORE_ABORT).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "fake-provider: body truncated on purpose",
        ))
    };
    stream::once(async { Ok(prefix) })
        .chain(stream::once(abort))
        .boxed()
}

/// Splits an SSE body after each blank line, keeping the separators so that
/// the concatenated pieces are the original bytes.
fn split_events(body: &Bytes) -> Vec<Bytes> {
    let mut events = Vec::new();
    let mut start = 0;
    while let Some(i) = body[start..].windows(2).position(|w| w == b"\n\n") {
        let end = start + i + 2;
        events.push(body.slice(start..end));
        start = end;
    }
    if start < body.len() {
        events.push(body.slice(start..));
    }
    events
}

const AWS_EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// Splits AWS event-stream frames: each starts with its total length (4 bytes, big
/// endian). A malformed length leaves the rest as one piece.
fn split_frames(body: &Bytes) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let mut start = 0;
    while let Some(len) = body
        .get(start..start + 4)
        .map(|p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize)
        .filter(|len| *len > 0 && start + len <= body.len())
    {
        frames.push(body.slice(start..start + len));
        start += len;
    }
    if start < body.len() {
        frames.push(body.slice(start..));
    }
    frames
}

/// Records a [`StreamOutcome`] when hyper drops the body stream.
struct StreamGuard {
    state: Shared,
    label: String,
    total: usize,
    sent: usize,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let outcome = StreamOutcome {
            label: std::mem::take(&mut self.label),
            events_total: self.total,
            events_sent: self.sent,
            completed: self.sent == self.total,
        };
        lock(&self.state).streams.push(outcome);
    }
}

/// The first event at once, then one event per `pause`.
fn paced(
    events: Vec<Bytes>,
    pause: Duration,
    guard: StreamGuard,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    stream::unfold(
        (VecDeque::from(events), guard),
        move |(mut events, mut guard)| async move {
            let event = events.pop_front()?;
            if guard.sent > 0 {
                tokio::time::sleep(pause).await;
            }
            guard.sent += 1;
            Some((Ok(event), (events, guard)))
        },
    )
    .boxed()
}

/// A JSON error in OpenAI's shape, for the fake's own failures.
fn json_error(status: u16, message: &str) -> Response {
    http::Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(openai_error_body(
            message,
            "fake_provider_error",
            None,
        )))
        .expect("static response parts are valid")
}
