//! A `SpanExporter` that sends GenAI spans to the Tracia API (`POST /api/v1/spans`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use opentelemetry::trace::{SpanId, Status};
use opentelemetry::{Array, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, json};

use crate::error::{Error, Result};
use crate::ids;
use crate::telemetry::export::{ExportRuntime, FailureCallback, Reporter};
use crate::telemetry::pending;
use crate::telemetry::semconv;

const DEFAULT_BASE_URL: &str = "https://app.tracia.io";
const CONCURRENT_UPLOADS: usize = 8;

/// Exports GenAI spans (those with `gen_ai.operation.name`) to the Tracia API, one
/// `POST /api/v1/spans` per span, with retries and backoff. Other spans are skipped:
/// Tracia stores LLM calls, not a whole trace. So are the client spans of
/// `prompts().run`: Tracia stored that run already.
///
/// Use it directly on your own `SdkTracerProvider`, or let [`crate::telemetry`] set it up.
///
/// ```
/// # fn demo() -> Result<(), tracia::Error> {
/// # let _rt = tokio::runtime::Runtime::new().unwrap();
/// let exporter = tracia::TraciaExporter::builder()
///     .with_api_key("tr_my_key")
///     .with_base_url("https://app.tracia.io")
///     .build()?;
/// let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
///     .with_batch_exporter(exporter)
///     .with_id_generator(tracia::TraciaIdGenerator)
///     .build();
/// # drop(provider);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TraciaExporter {
    client: reqwest::Client,
    spans_url: String,
    api_key: SecretString,
    max_retries: u32,
    runtime: Arc<ExportRuntime>,
    reporter: Arc<Reporter>,
}

/// Builds a [`TraciaExporter`].
///
/// ```
/// let builder = tracia::TraciaExporter::builder()
///     .with_api_key("tr_my_key")
///     .with_timeout(std::time::Duration::from_secs(5))
///     .with_max_retries(4);
/// # drop(builder);
/// ```
#[derive(Default)]
pub struct TraciaExporterBuilder {
    api_key: Option<SecretString>,
    base_url: Option<String>,
    timeout: Option<Duration>,
    max_retries: Option<u32>,
    pub(crate) reporter: Option<Arc<Reporter>>,
    on_failure: Option<FailureCallback>,
}

impl std::fmt::Debug for TraciaExporterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraciaExporterBuilder")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl TraciaExporterBuilder {
    /// The Tracia API key (`TRACIA_API_KEY` when unset).
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(SecretString::from(key.into()));
        self
    }

    /// The Tracia base URL (`TRACIA_BASE_URL`, else `https://app.tracia.io`).
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The timeout of one upload request (10 s unless set).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Retries after a failed upload (2 unless set: 3 attempts, as the Tracia SDKs).
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.max_retries = Some(n);
        self
    }

    /// Called with every batch of spans that could not be delivered.
    pub fn with_on_failure(
        mut self,
        callback: impl Fn(&crate::ExportFailure) + Send + Sync + 'static,
    ) -> Self {
        self.on_failure = Some(Arc::new(callback));
        self
    }

    /// Builds the exporter; fails without an API key or with a bad base URL.
    pub fn build(self) -> Result<TraciaExporter> {
        let api_key = self
            .api_key
            .or_else(|| crate::config::env("TRACIA_API_KEY").map(SecretString::from))
            .ok_or_else(|| {
                Error::invalid(
                    "The Tracia exporter needs an API key: set TRACIA_API_KEY or call with_api_key",
                )
            })?;
        crate::error::register_secret(api_key.expose_secret());
        let base = self
            .base_url
            .or_else(|| crate::config::env("TRACIA_BASE_URL"))
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let url = reqwest::Url::parse(&base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| Error::invalid(format!("Invalid Tracia base URL '{base}'")))?;
        let client = reqwest::Client::builder()
            .timeout(self.timeout.unwrap_or(Duration::from_secs(10)))
            .user_agent(concat!("tracia-rust/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Error::invalid(format!(
                    "cannot build the Tracia exporter's HTTP client: {e}"
                ))
            })?;
        let runtime = ExportRuntime::start()
            .map_err(|e| Error::invalid(format!("cannot start the export thread: {e}")))?;
        Ok(TraciaExporter {
            client,
            spans_url: format!("{}/api/v1/spans", url.as_str().trim_end_matches('/')),
            api_key,
            max_retries: self.max_retries.unwrap_or(2),
            runtime,
            reporter: self
                .reporter
                .unwrap_or_else(|| Reporter::new("tracia", self.on_failure)),
        })
    }
}

impl TraciaExporter {
    /// A builder; see [`TraciaExporterBuilder`].
    pub fn builder() -> TraciaExporterBuilder {
        TraciaExporterBuilder::default()
    }

    /// What this exporter has delivered and lost so far.
    pub fn stats(&self) -> crate::ExportStats {
        self.reporter.stats()
    }
}

impl SpanExporter for TraciaExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let total = batch.len() as u64;
        let mut payloads = Vec::new();
        for span in &batch {
            let id = span.span_context.span_id();
            match span_payload(span) {
                // Pending from here on also for a provider without `telemetry`'s processor.
                Some(payload) => {
                    pending::mark(id);
                    payloads.push((id, payload));
                }
                // A GenAI span without model or provider was marked but is not sent.
                None => pending::settle(id),
            }
        }
        self.reporter.skipped(total - payloads.len() as u64);
        if payloads.is_empty() {
            return Ok(());
        }
        let count = payloads.len() as u64;
        let ids: Vec<SpanId> = payloads.iter().map(|(id, _)| *id).collect();
        let upload = Upload {
            client: self.client.clone(),
            url: self.spans_url.clone(),
            auth: format!("Bearer {}", self.api_key.expose_secret()),
            max_retries: self.max_retries,
        };
        let work = async move {
            futures::stream::iter(payloads)
                .map(|(id, p)| {
                    let upload = upload.clone();
                    async move {
                        let result = upload.send(p).await;
                        pending::settle(id);
                        result
                    }
                })
                .buffer_unordered(CONCURRENT_UPLOADS)
                .collect::<Vec<_>>()
                .await
        };
        let Some(results) = self.runtime.run(work).await else {
            ids.into_iter().for_each(pending::settle);
            self.reporter
                .failed(count, "the export runtime has stopped");
            return Err(OTelSdkError::InternalFailure(
                "export runtime stopped".into(),
            ));
        };
        let errors: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
        self.reporter.delivered(count - errors.len() as u64);
        match errors.first() {
            None => Ok(()),
            Some(first) => {
                self.reporter.failed(errors.len() as u64, first);
                Err(OTelSdkError::InternalFailure(format!(
                    "{} of {count} spans not delivered to Tracia: {first}",
                    errors.len()
                )))
            }
        }
    }
}

#[derive(Clone)]
struct Upload {
    client: reqwest::Client,
    url: String,
    auth: String,
    max_retries: u32,
}

impl Upload {
    /// Posts one span; retries network failures, 408, 429 and 5xx with backoff
    /// (500 ms × attempt, or the server's `Retry-After` up to 30 s).
    async fn send(self, payload: serde_json::Value) -> std::result::Result<(), String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let response = self
                .client
                .post(&self.url)
                .header(http::header::AUTHORIZATION, &self.auth)
                .json(&payload)
                .send()
                .await;
            let (retryable, wait, reason) = match response {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status();
                    let wait = r
                        .headers()
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(30)));
                    let retryable = status.is_server_error()
                        || status.as_u16() == 429
                        || status.as_u16() == 408;
                    (retryable, wait, format!("Tracia answered {status}"))
                }
                Err(e) => (
                    true,
                    None,
                    format!("cannot reach Tracia: {}", e.without_url()),
                ),
            };
            if !retryable || attempt > self.max_retries {
                return Err(reason);
            }
            tokio::time::sleep(wait.unwrap_or(Duration::from_millis(500 * u64::from(attempt))))
                .await;
        }
    }
}

/// Maps a GenAI span to the Tracia span payload (`POST /api/v1/spans`); `None` for
/// spans that are not GenAI spans, and for the client spans of `prompts.run`
/// (`tracia.prompt.run = true`): the server stored that run, counting it twice would
/// double its tokens and cost. This is what [`TraciaExporter`] sends, and what a
/// Tracia-compatible backend receiving OTLP can store (`tracia-collector` does).
///
/// ```
/// use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
/// use opentelemetry::{InstrumentationScope, KeyValue};
/// use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
/// let span = SpanData {
///     span_context: SpanContext::new(TraceId::from(7), SpanId::from(9), TraceFlags::SAMPLED,
///         false, TraceState::default()),
///     parent_span_id: SpanId::INVALID,
///     parent_span_is_remote: false,
///     span_kind: SpanKind::Client,
///     name: "chat gpt-4o".into(),
///     start_time: std::time::SystemTime::UNIX_EPOCH,
///     end_time: std::time::SystemTime::UNIX_EPOCH,
///     attributes: vec![KeyValue::new("gen_ai.operation.name", "chat"),
///         KeyValue::new("gen_ai.provider.name", "openai"),
///         KeyValue::new("gen_ai.request.model", "gpt-4o")],
///     dropped_attributes_count: 0,
///     events: SpanEvents::default(),
///     links: SpanLinks::default(),
///     status: Status::Unset,
///     instrumentation_scope: InstrumentationScope::builder("demo").build(),
/// };
/// let payload = tracia::span_payload(&span).unwrap();
/// assert_eq!(payload["spanId"], "sp_0000000000000009");
/// assert_eq!(payload["model"], "gpt-4o");
/// ```
pub fn span_payload(span: &SpanData) -> Option<serde_json::Value> {
    let attrs: HashMap<&str, &Value> = span
        .attributes
        .iter()
        .map(|kv| (kv.key.as_str(), &kv.value))
        .collect();
    let s = |key: &str| match attrs.get(key) {
        Some(Value::String(v)) => Some(v.as_str().to_owned()),
        _ => None,
    };
    let i = |key: &str| match attrs.get(key) {
        Some(Value::I64(v)) => Some(*v),
        _ => None,
    };
    let f = |key: &str| match attrs.get(key) {
        Some(Value::F64(v)) => Some(*v),
        Some(Value::I64(v)) => Some(*v as f64),
        _ => None,
    };
    let operation = semconv::genai_operation(span)?;
    let provider = s(semconv::TRACIA_PROVIDER).or_else(|| {
        // `gen_ai.system` is the pre-1.37 name other instrumentations still send.
        s(semconv::PROVIDER_NAME)
            .or_else(|| s("gen_ai.system"))
            .map(|p| match p.as_str() {
                "gcp.gemini" | "gcp.vertex_ai" | "gcp.gen_ai" => "google".to_owned(),
                "aws.bedrock" => "amazon_bedrock".to_owned(),
                _ => p,
            })
    })?;
    let model = s(semconv::REQUEST_MODEL).or_else(|| s(semconv::RESPONSE_MODEL))?;
    let latency = span
        .end_time
        .duration_since(span.start_time)
        .unwrap_or_default();
    // `prompt_tokens` / `completion_tokens` are the older names of the same counts.
    let input_tokens = i(semconv::USAGE_INPUT_TOKENS)
        .or_else(|| i("gen_ai.usage.prompt_tokens"))
        .unwrap_or(0);
    let output_tokens = i(semconv::USAGE_OUTPUT_TOKENS)
        .or_else(|| i("gen_ai.usage.completion_tokens"))
        .unwrap_or(0);
    let (output_text, tool_calls) = s(semconv::OUTPUT_MESSAGES)
        .map(|o| semconv::output_from(&o))
        .unwrap_or_default();
    let (status, error) = match &span.status {
        Status::Error { description } => ("ERROR", Some(description.to_string())),
        _ => ("SUCCESS", None),
    };

    let mut p = Map::new();
    p.insert(
        "spanId".into(),
        ids::format_span_id(span.span_context.span_id()).into(),
    );
    p.insert(
        "traceId".into(),
        ids::format_trace_id(span.span_context.trace_id()).into(),
    );
    if span.parent_span_id != SpanId::INVALID {
        p.insert(
            "parentSpanId".into(),
            ids::format_span_id(span.parent_span_id).into(),
        );
    }
    p.insert("model".into(), model.into());
    p.insert("provider".into(), provider.into());
    let messages = s(semconv::INPUT_MESSAGES)
        .map(|m| semconv::messages_from_input(&m))
        .unwrap_or_default();
    p.insert("input".into(), json!({ "messages": messages }));
    let variables = s(semconv::TRACIA_VARIABLES)
        .and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok());
    p.insert(
        "variables".into(),
        variables.unwrap_or(serde_json::Value::Null),
    );
    let has_output = attrs.contains_key(semconv::OUTPUT_MESSAGES)
        && (status == "SUCCESS" || !output_text.is_empty());
    p.insert(
        "output".into(),
        if has_output {
            output_text.into()
        } else {
            serde_json::Value::Null
        },
    );
    p.insert("status".into(), status.into());
    p.insert(
        "error".into(),
        error.map(|e| crate::error::redact(&e)).into(),
    );
    // An i64, as the collector (and Tracia) read it; absurd spans saturate.
    let latency_ms = i64::try_from(latency.as_millis()).unwrap_or(i64::MAX);
    p.insert("latencyMs".into(), latency_ms.into());
    p.insert("inputTokens".into(), input_tokens.into());
    p.insert("outputTokens".into(), output_tokens.into());
    p.insert(
        "totalTokens".into(),
        input_tokens.saturating_add(output_tokens).into(),
    );
    if let Some(Value::Array(Array::String(tags))) = attrs.get(semconv::TRACIA_TAGS) {
        let tags: Vec<String> = tags.iter().map(|t| t.as_str().to_owned()).collect();
        p.insert("tags".into(), tags.into());
    }
    if let Some(user) = s(semconv::USER_ID) {
        p.insert("userId".into(), user.into());
    }
    if let Some(session) = s(semconv::SESSION_ID) {
        p.insert("sessionId".into(), session.into());
    }
    if let Some(t) = f(semconv::REQUEST_TEMPERATURE) {
        p.insert("temperature".into(), t.into());
    }
    if let Some(t) = f(semconv::REQUEST_TOP_P) {
        p.insert("topP".into(), t.into());
    }
    if let Some(n) = i(semconv::REQUEST_MAX_TOKENS) {
        p.insert("maxOutputTokens".into(), n.into());
    }
    if let Some(tools) = s(semconv::TOOL_DEFINITIONS) {
        p.insert(
            "tools".into(),
            serde_json::to_value(semconv::tools_from(&tools)).unwrap_or_default(),
        );
    }
    if !tool_calls.is_empty() {
        p.insert(
            "toolCalls".into(),
            serde_json::to_value(tool_calls).unwrap_or_default(),
        );
    }
    if operation == "embeddings" {
        // Tracia's embedding span: the texts in, `{"dimensions","count"}` (a JSON string) out.
        p.insert("spanKind".into(), "EMBEDDING".into());
        let texts = s(semconv::TRACIA_EMBEDDINGS_INPUT)
            .and_then(|t| serde_json::from_str::<Vec<String>>(&t).ok())
            .unwrap_or_default();
        p.insert("input".into(), json!({ "text": texts }));
        p.remove("variables");
        if status == "SUCCESS" {
            let output = json!({
                "dimensions": i(semconv::EMBEDDINGS_DIMENSION_COUNT).unwrap_or(0),
                "count": i(semconv::TRACIA_EMBEDDINGS_COUNT).unwrap_or(0),
            });
            p.insert("output".into(), output.to_string().into());
        }
    }
    Some(serde_json::Value::Object(p))
}
