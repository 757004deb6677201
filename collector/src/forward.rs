//! Forwarding received spans to other backends: OTLP/HTTP receivers (`--forward-otlp`)
//! and Tracia cloud (`--forward-tracia`).
//!
//! Ingestion never waits for a target. Each target has its own queue, bounded in bytes
//! of encoded payloads ([`ForwardOptions::queue_bytes`], 128 MiB unless set), and one
//! worker task that takes everything queued as one batch, sends it and retries with
//! backoff on transport errors, 408, 429 (honouring `Retry-After`) and 5xx. A request
//! that does not fit in the queue is dropped and counted. The counts (see
//! [`TargetStats`]) are logged at `warn` when spans are lost and served by
//! `GET /api/ui/status`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let forwarder = tracia_collector::forward::Forwarder::builder()
//!     .otlp("http://127.0.0.1:14318")
//!     .build()
//!     .unwrap();
//! assert_eq!(forwarder.stats()[0].target, "otlp http://127.0.0.1:14318/v1/traces");
//! # }
//! ```

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use crate::model::{SpanKind, SpanRecord, SpanStatus};

/// Tracia's API when `TRACIA_BASE_URL` is not set.
pub const DEFAULT_TRACIA_BASE_URL: &str = "https://app.tracia.io";

/// The OTLP/HTTP traces path, appended to a `--forward-otlp` URL that lacks it.
const TRACES_PATH: &str = "/v1/traces";
/// The most bytes of OTLP requests merged into one forwarded request.
const OTLP_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// The most Tracia spans taken from the queue at once (Tracia takes one span per request).
const TRACIA_BATCH_SPANS: usize = 64;
/// Tracia uploads in flight at once per target, as the SDK's exporter.
const TRACIA_CONCURRENT_UPLOADS: usize = 8;
/// Upper bounds of the retry delays, whatever the backoff or the server asks.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How every forwarding target queues, batches and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardOptions {
    /// Bytes of encoded payloads one target may hold, queued or being sent, before new
    /// ones are dropped: 128 MiB (two full-size OTLP requests).
    pub queue_bytes: usize,
    /// Attempts per batch before its spans count as failed: 5.
    pub max_attempts: u32,
    /// The delay before the first retry, doubled for each next one (up to 30 s): 500 ms.
    pub initial_backoff: Duration,
    /// The timeout of one request: 10 s.
    pub timeout: Duration,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        Self {
            queue_bytes: 128 * 1024 * 1024,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What one target has done so far, in spans. Every span offered to a target ends in
/// exactly one of `forwarded`, `failed` and `dropped`, and is `pending` until then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetStats {
    /// `otlp URL` or `tracia URL`: the URL posted to, without credentials or query.
    pub target: String,
    /// Queued or being sent.
    pub pending: u64,
    /// Accepted by the target.
    pub forwarded: u64,
    /// Refused by the target, or still failing after every attempt.
    pub failed: u64,
    /// Not queued because the queue was full.
    pub dropped: u64,
}

/// Sends what the collector receives to the configured targets; [`Forwarder::default`]
/// has none. Built by [`Forwarder::builder`], inside a Tokio runtime (each target's
/// worker is a task).
#[derive(Debug, Default)]
pub struct Forwarder {
    targets: Vec<Target>,
}

/// Builds a [`Forwarder`].
#[derive(Default)]
pub struct ForwarderBuilder {
    options: ForwardOptions,
    otlp: Vec<String>,
    tracia: Option<(String, String)>,
}

impl std::fmt::Debug for ForwarderBuilder {
    /// Leaves the Tracia API key out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwarderBuilder")
            .field("options", &self.options)
            .field("otlp", &self.otlp)
            .field("tracia", &self.tracia.as_ref().map(|(base, _)| base))
            .finish()
    }
}

impl ForwarderBuilder {
    /// Forwards every received request to an OTLP/HTTP receiver, as protobuf, at
    /// `url` + `/v1/traces` (unless `url` already ends with it).
    pub fn otlp(mut self, url: impl Into<String>) -> Self {
        self.otlp.push(url.into());
        self
    }

    /// Sends every GenAI span to the Tracia API at `base_url` (`POST /api/v1/spans`,
    /// see [`tracia_payload`]), authenticated with `api_key`.
    pub fn tracia(mut self, base_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        self.tracia = Some((base_url.into(), api_key.into()));
        self
    }

    /// Queue size, retries and timeouts (see [`ForwardOptions`]).
    pub fn options(mut self, options: ForwardOptions) -> Self {
        self.options = options;
        self
    }

    /// Checks the URLs and starts a worker per target; must run inside a Tokio runtime.
    pub fn build(self) -> Result<Forwarder, String> {
        let client = reqwest::Client::builder()
            .timeout(self.options.timeout)
            .user_agent(concat!("tracia-collector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the forwarding HTTP client: {e}"))?;
        let mut targets = Vec::new();
        for url in &self.otlp {
            let trimmed = url.trim_end_matches('/');
            let full = if trimmed.ends_with(TRACES_PATH) {
                trimmed.to_owned()
            } else {
                format!("{trimmed}{TRACES_PATH}")
            };
            let url = parse_url(&full, "--forward-otlp")?;
            targets.push(Target::start(
                Wire::Otlp,
                url,
                client.clone(),
                self.options.clone(),
            ));
        }
        if let Some((base, key)) = self.tracia {
            if key.trim().is_empty() {
                return Err("the Tracia API key is empty".into());
            }
            let base = parse_url(&base, "TRACIA_BASE_URL")?;
            let url = parse_url(
                &format!("{}/api/v1/spans", base.as_str().trim_end_matches('/')),
                "TRACIA_BASE_URL",
            )?;
            let mut auth = HeaderValue::try_from(format!("Bearer {}", key.trim()))
                .map_err(|_| "the Tracia API key is not a valid header value".to_owned())?;
            auth.set_sensitive(true);
            targets.push(Target::start(
                Wire::Tracia { auth },
                url,
                client,
                self.options,
            ));
        }
        Ok(Forwarder { targets })
    }
}

fn parse_url(url: &str, what: &str) -> Result<reqwest::Url, String> {
    reqwest::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| format!("{what}: {url:?} is not an http(s) URL"))
}

impl Forwarder {
    /// A builder; see [`ForwarderBuilder`].
    pub fn builder() -> ForwarderBuilder {
        ForwarderBuilder::default()
    }

    /// Queues `request` for the OTLP targets and the GenAI `records` (the request's
    /// valid spans) for Tracia. Never waits: what does not fit is dropped and counted.
    pub fn send(&self, request: &ExportTraceServiceRequest, records: &[SpanRecord]) {
        let mut otlp_body = None;
        let mut tracia_bodies = None;
        for target in &self.targets {
            match target.wire {
                Wire::Otlp => {
                    let (body, spans) = otlp_body.get_or_insert_with(|| {
                        let spans = request
                            .resource_spans
                            .iter()
                            .flat_map(|r| &r.scope_spans)
                            .map(|s| s.spans.len() as u64)
                            .sum::<u64>();
                        (Bytes::from(request.encode_to_vec()), spans)
                    });
                    if *spans > 0 {
                        target.offer(body.clone(), *spans);
                    }
                }
                Wire::Tracia { .. } => {
                    let bodies = tracia_bodies.get_or_insert_with(|| {
                        records
                            .iter()
                            .filter_map(tracia_payload)
                            .filter_map(|p| serde_json::to_vec(&p).ok())
                            .map(Bytes::from)
                            .collect::<Vec<_>>()
                    });
                    for body in bodies.iter() {
                        target.offer(body.clone(), 1);
                    }
                }
            }
        }
    }

    /// Each target's counts, in the order they were configured.
    pub fn stats(&self) -> Vec<TargetStats> {
        self.targets.iter().map(Target::stats).collect()
    }

    /// Waits until nothing is pending or `timeout` passed; `true` if everything was
    /// settled (forwarded or failed). For a clean shutdown.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let all = async {
            for target in &self.targets {
                target.shared.idle().await;
            }
        };
        tokio::time::timeout(timeout, all).await.is_ok()
    }
}

/// The body of Tracia's `POST /api/v1/spans` (tracia-api.md §4.1) for a stored span;
/// `None` for spans Tracia does not take: `APP` spans, and spans without a model or
/// provider. Unset fields are left out, as the Python SDK does.
///
/// ```
/// # use tracia_collector::model::{CreateSpan, SpanRecord};
/// let create = CreateSpan {
///     span_id: "sp_00f067aa0ba902b7".into(),
///     model: Some("gpt-4o".into()),
///     provider: Some("openai".into()),
///     input_tokens: Some(10),
///     latency_ms: Some(812),
///     ..Default::default()
/// };
/// let record = SpanRecord::from_create(create, 1_767_225_600_812_000_000).unwrap();
/// let payload = tracia_collector::forward::tracia_payload(&record).unwrap();
/// assert_eq!(payload["spanId"], "sp_00f067aa0ba902b7");
/// assert_eq!(payload["latencyMs"], 812);
/// assert_eq!(payload["totalTokens"], 10);
/// assert_eq!(payload["input"], serde_json::json!({"messages": []}));
/// ```
pub fn tracia_payload(record: &SpanRecord) -> Option<Value> {
    if record.kind == SpanKind::App {
        return None;
    }
    let empty_input = match record.kind {
        SpanKind::Embedding => serde_json::json!({ "text": [] }),
        _ => serde_json::json!({ "messages": [] }),
    };
    let payload = TraciaSpan {
        span_id: &record.span_id,
        trace_id: record.trace_id.as_deref(),
        parent_span_id: record.parent_span_id.as_deref(),
        model: record.model.as_deref().filter(|m| !m.is_empty())?,
        provider: record.provider.as_deref().filter(|p| !p.is_empty())?,
        input: record
            .input
            .as_ref()
            .map_or(Cow::Owned(empty_input), Cow::Borrowed),
        variables: record.variables.as_ref(),
        output: record.output.as_deref(),
        status: record.status,
        error: record.error.as_deref(),
        latency_ms: record.latency_ms(),
        input_tokens: record.input_tokens,
        output_tokens: record.output_tokens,
        total_tokens: record.total_tokens,
        tags: &record.tags,
        user_id: record.user_id.as_deref(),
        session_id: record.session_id.as_deref(),
        temperature: record.temperature,
        top_p: record.top_p,
        max_output_tokens: record.max_output_tokens,
        tools: record.tools.as_ref(),
        tool_calls: record.tool_calls.as_ref(),
        // As the SDKs: chat spans leave the kind out.
        span_kind: (record.kind != SpanKind::Llm).then(|| record.kind.as_str()),
    };
    serde_json::to_value(payload).ok()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TraciaSpan<'a> {
    span_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<&'a str>,
    model: &'a str,
    provider: &'a str,
    input: Cow<'a, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    variables: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a str>,
    status: SpanStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    latency_ms: i64,
    input_tokens: i64,
    output_tokens: i64,
    total_tokens: i64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span_kind: Option<&'static str>,
}

/// What a target speaks.
#[derive(Debug, Clone)]
enum Wire {
    /// OTLP/HTTP protobuf; a batch is one request.
    Otlp,
    /// Tracia's span API; one span per request.
    Tracia { auth: HeaderValue },
}

/// One encoded payload and the spans in it.
struct Item {
    body: Bytes,
    spans: u64,
}

#[derive(Debug)]
struct Target {
    wire: Wire,
    name: String,
    queue: mpsc::UnboundedSender<Item>,
    shared: Arc<Shared>,
}

/// The counts and the queue budget, shared by the senders and the worker.
#[derive(Debug, Default)]
struct Shared {
    queue_bytes: usize,
    queued_bytes: AtomicUsize,
    pending: AtomicU64,
    forwarded: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// Set while requests are being dropped, so a full queue is logged once per episode.
    dropping: AtomicBool,
    /// Woken when `pending` drops to zero.
    settled: Notify,
}

impl Shared {
    /// Resolves once nothing is pending.
    async fn idle(&self) {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            // Registered before the check, so a wake-up in between is not missed.
            settled.as_mut().enable();
            if self.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            settled.await;
        }
    }

    /// `spans` are no longer pending.
    fn settle(&self, spans: u64) {
        if self.pending.fetch_sub(spans, Ordering::AcqRel) == spans {
            self.settled.notify_waiters();
        }
    }
}

impl Target {
    fn start(
        wire: Wire,
        url: reqwest::Url,
        client: reqwest::Client,
        options: ForwardOptions,
    ) -> Self {
        let kind = match wire {
            Wire::Otlp => "otlp",
            Wire::Tracia { .. } => "tracia",
        };
        let name = format!("{kind} {}", display_url(&url));
        let shared = Arc::new(Shared {
            queue_bytes: options.queue_bytes,
            ..Shared::default()
        });
        let (queue, items) = mpsc::unbounded_channel();
        let worker = Worker {
            wire: wire.clone(),
            name: name.clone(),
            url,
            client,
            options,
            shared: shared.clone(),
        };
        tokio::spawn(worker.run(items));
        Self {
            wire,
            name,
            queue,
            shared,
        }
    }

    /// Queues `body` if the byte budget allows, else drops and counts it.
    fn offer(&self, body: Bytes, spans: u64) {
        let s = &self.shared;
        let len = body.len();
        let fits = s
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + len <= s.queue_bytes).then_some(queued + len)
            })
            .is_ok();
        if fits {
            s.pending.fetch_add(spans, Ordering::AcqRel);
            if self.queue.send(Item { body, spans }).is_ok() {
                s.dropping.store(false, Ordering::Relaxed);
                return;
            }
            // The worker is gone (the runtime is shutting down).
            s.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            s.settle(spans);
        }
        let dropped = s.dropped.fetch_add(spans, Ordering::AcqRel) + spans;
        if !s.dropping.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "forwarding to {}: queue full ({} bytes), dropping spans ({dropped} dropped so far)",
                self.name,
                s.queue_bytes
            );
        }
    }

    fn stats(&self) -> TargetStats {
        let s = &self.shared;
        TargetStats {
            target: self.name.clone(),
            pending: s.pending.load(Ordering::Acquire),
            forwarded: s.forwarded.load(Ordering::Acquire),
            failed: s.failed.load(Ordering::Acquire),
            dropped: s.dropped.load(Ordering::Acquire),
        }
    }
}

/// The URL without credentials or query, for logs and the status page.
fn display_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.as_str().trim_end_matches('/').to_owned()
}

struct Worker {
    wire: Wire,
    name: String,
    url: reqwest::Url,
    client: reqwest::Client,
    options: ForwardOptions,
    shared: Arc<Shared>,
}

impl Worker {
    async fn run(self, mut items: mpsc::UnboundedReceiver<Item>) {
        // Whether `item` may join a batch holding `count` items of `bytes` bytes.
        let fits = |count: usize, bytes: usize, item: &Item| match self.wire {
            Wire::Otlp => bytes + item.body.len() <= OTLP_BATCH_BYTES,
            Wire::Tracia { .. } => count < TRACIA_BATCH_SPANS,
        };
        // An item that did not fit the last batch starts the next one.
        let mut carried = None;
        loop {
            let first = match carried.take() {
                Some(item) => item,
                None => match items.recv().await {
                    Some(item) => item,
                    None => return,
                },
            };
            let mut bytes = first.body.len();
            let mut batch = vec![first];
            while let Ok(item) = items.try_recv() {
                if !fits(batch.len(), bytes, &item) {
                    carried = Some(item);
                    break;
                }
                bytes += item.body.len();
                batch.push(item);
            }
            let spans = batch.iter().map(|i| i.spans).sum::<u64>();
            let (failed, first_error) = match &self.wire {
                Wire::Otlp => self.send_otlp(&batch, bytes).await,
                Wire::Tracia { auth } => self.send_tracia(&batch, auth).await,
            };
            let s = &self.shared;
            s.forwarded.fetch_add(spans - failed, Ordering::AcqRel);
            if failed > 0 {
                let total = s.failed.fetch_add(failed, Ordering::AcqRel) + failed;
                tracing::warn!(
                    "forwarding to {}: {failed} spans lost: {} ({total} failed so far)",
                    self.name,
                    first_error.unwrap_or_default()
                );
            }
            s.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            s.settle(spans);
        }
    }

    /// One OTLP request for the whole batch: concatenated protobuf messages parse as
    /// one message with their repeated fields appended, so the requests merge as they are.
    async fn send_otlp(&self, batch: &[Item], bytes: usize) -> (u64, Option<String>) {
        let mut body = BytesMut::with_capacity(bytes);
        for item in batch {
            body.extend_from_slice(&item.body);
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        match self.post(headers, body.freeze()).await {
            Ok(()) => (0, None),
            Err(e) => (batch.iter().map(|i| i.spans).sum(), Some(e)),
        }
    }

    /// One request per span, a few at a time.
    async fn send_tracia(&self, batch: &[Item], auth: &HeaderValue) -> (u64, Option<String>) {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(AUTHORIZATION, auth.clone());
        let bodies: Vec<Bytes> = batch.iter().map(|item| item.body.clone()).collect();
        let results: Vec<Result<(), String>> = futures::stream::iter(bodies)
            .map(|body| self.post(headers.clone(), body))
            .buffer_unordered(TRACIA_CONCURRENT_UPLOADS)
            .collect()
            .await;
        let mut errors = results.into_iter().filter_map(Result::err);
        let first = errors.next();
        (u64::from(first.is_some()) + errors.count() as u64, first)
    }

    /// POSTs `body`, retrying what may succeed later; the error says why it gave up.
    async fn post(&self, headers: HeaderMap, body: Bytes) -> Result<(), String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let response = self
                .client
                .post(self.url.clone())
                .headers(headers.clone())
                .body(body.clone())
                .send()
                .await;
            let (reason, retry_after) = match response {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status();
                    let reason = format!("answered {status}");
                    if !retryable(status) {
                        return Err(reason);
                    }
                    (reason, tracia::retry_after(r.headers(), MAX_RETRY_AFTER))
                }
                Err(e) => (error_chain(&e.without_url()), None),
            };
            if attempt >= self.options.max_attempts {
                return Err(format!("{reason} (after {attempt} attempts)"));
            }
            let delay =
                retry_after.unwrap_or_else(|| backoff(self.options.initial_backoff, attempt));
            tokio::time::sleep(delay).await;
        }
    }
}

/// An error with its causes (reqwest's own text alone is "error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Statuses worth retrying: the target is overloaded or briefly unavailable.
fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

/// The delay after failed attempt `attempt` (1-based): doubling from `initial`, capped.
fn backoff(initial: Duration, attempt: u32) -> Duration {
    initial
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_otlp_requests_decode_as_one() {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let request = |name: &str| ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        name: name.into(),
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        let mut body = request("a").encode_to_vec();
        body.extend(request("b").encode_to_vec());
        let merged = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let expected = [request("a").resource_spans, request("b").resource_spans].concat();
        assert_eq!(merged.resource_spans, expected);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let initial = Duration::from_millis(500);
        assert_eq!(backoff(initial, 1), Duration::from_millis(500));
        assert_eq!(backoff(initial, 2), Duration::from_secs(1));
        assert_eq!(backoff(initial, 4), Duration::from_secs(4));
        assert_eq!(backoff(initial, 40), MAX_BACKOFF);
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(
                retryable(reqwest::StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 413] {
            assert!(
                !retryable(reqwest::StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }

    #[test]
    fn shown_urls_carry_no_credentials() {
        let url =
            reqwest::Url::parse("https://user:secret@otel.example:4318/v1/traces?token=x").unwrap();
        assert_eq!(display_url(&url), "https://otel.example:4318/v1/traces");
    }

    #[tokio::test]
    async fn urls_are_checked_and_completed() {
        let forwarder = Forwarder::builder()
            .otlp("http://127.0.0.1:4318/")
            .otlp("http://127.0.0.1:4318/v1/traces")
            .tracia("https://app.tracia.io/", "tr_key")
            .build()
            .unwrap();
        let names: Vec<_> = forwarder.stats().into_iter().map(|s| s.target).collect();
        assert_eq!(
            names,
            [
                "otlp http://127.0.0.1:4318/v1/traces",
                "otlp http://127.0.0.1:4318/v1/traces",
                "tracia https://app.tracia.io/api/v1/spans",
            ]
        );
        let err = Forwarder::builder()
            .otlp("localhost:4318")
            .build()
            .unwrap_err();
        assert!(
            err.contains("--forward-otlp") && err.contains("localhost:4318"),
            "{err}"
        );
        let err = Forwarder::builder()
            .tracia("https://app.tracia.io", " ")
            .build()
            .unwrap_err();
        assert!(err.contains("API key"), "{err}");
    }
}
