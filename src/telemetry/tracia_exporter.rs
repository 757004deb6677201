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
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config;
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
            .or_else(|| config::env(config::TRACIA_API_KEY).map(SecretString::from))
            .ok_or_else(|| {
                Error::invalid(
                    "The Tracia exporter needs an API key: set TRACIA_API_KEY or call with_api_key",
                )
            })?;
        crate::error::register_secret(api_key.expose_secret());
        let base = self
            .base_url
            .or_else(|| config::env(config::TRACIA_BASE_URL))
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
            match SpanPayload::from_span(span) {
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

/// The longest a server's `Retry-After` makes an upload wait.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

impl Upload {
    /// Posts one span; retries network failures, 408, 429 and 5xx with backoff
    /// (500 ms × attempt, or the server's `Retry-After` up to 30 s).
    async fn send(self, payload: SpanPayload) -> std::result::Result<(), String> {
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
                    let wait = crate::transport::retry_after(r.headers(), MAX_RETRY_AFTER);
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

/// A span as Tracia's REST API takes it (`POST /api/v1/spans`, JSON in camelCase): what
/// [`TraciaExporter`] sends and [`span_payload`] returns, and what a Tracia-compatible
/// backend reads (`tracia-collector` does). Every field but `span_id` may be absent on
/// the way in (the Python SDK drops null fields, Node sends them as `null`); unknown
/// fields are ignored. `output` and `error` are always sent, `null` when absent, as the
/// Tracia SDKs send them; `variables` is sent as given (`Some(Value::Null)` is an
/// explicit `null`), every other `None` is left out.
///
/// ```
/// let span = tracia::SpanPayload {
///     span_id: "sp_0000000000000009".into(),
///     trace_id: Some("tr_0000000000000007".into()),
///     model: Some("gpt-4o".into()),
///     provider: Some("openai".into()),
///     status: Some("SUCCESS".into()),
///     input_tokens: Some(9),
///     ..tracia::SpanPayload::default()
/// };
/// let json = serde_json::to_value(&span).unwrap();
/// assert_eq!(json["spanId"], "sp_0000000000000009");
/// assert_eq!(json["inputTokens"], 9);
/// assert!(json["output"].is_null() && json.get("userId").is_none());
/// let back: tracia::SpanPayload = serde_json::from_value(json).unwrap();
/// assert_eq!(back, span);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanPayload {
    /// The span, `sp_` + 16 hex (required).
    pub span_id: String,
    /// The trace, `tr_` + 16 or 32 hex (see [`crate::ids`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The parent span, `sp_` + 16 hex; none for a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// The model as requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Tracia's provider name (`openai`, `anthropic`, `google`, `amazon_bedrock`, `voyage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `{"messages": [...]}` for a chat, `{"text": [...]}` for embeddings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// The template variables (an object), or an explicit `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<serde_json::Value>,
    /// The answer's text (for embeddings, `{"dimensions","count"}` as a JSON string).
    #[serde(default)]
    pub output: Option<String>,
    /// `SUCCESS` or `ERROR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The error message of a failed call, scrubbed of secrets.
    #[serde(default)]
    pub error: Option<String>,
    /// The call's duration in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    /// Input tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<i64>,
    /// Output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<i64>,
    /// Input plus output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<i64>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// The end user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// The most tokens the answer could have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<i64>,
    /// The tools offered, in Tracia's shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<serde_json::Value>,
    /// The tool calls the model asked for, in Tracia's shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// `ROOT`, `LLM` or `EMBEDDING`; chat spans leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_kind: Option<String>,
    /// The slug of the prompt that ran (set by a server's own `prompts.run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_slug: Option<String>,
    /// The version of that prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_version: Option<i64>,
}

impl SpanPayload {
    /// The payload of a GenAI span, as [`span_payload`] maps it (`None` for the spans
    /// it skips).
    ///
    /// ```
    /// # fn demo(span: &opentelemetry_sdk::trace::SpanData) {
    /// if let Some(payload) = tracia::SpanPayload::from_span(span) {
    ///     println!("{} {:?}", payload.span_id, payload.model);
    /// }
    /// # }
    /// ```
    pub fn from_span(span: &SpanData) -> Option<Self> {
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
                .or_else(|| s(semconv::LEGACY_SYSTEM))
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
            .or_else(|| i(semconv::LEGACY_USAGE_PROMPT_TOKENS))
            .unwrap_or(0);
        let output_tokens = i(semconv::USAGE_OUTPUT_TOKENS)
            .or_else(|| i(semconv::LEGACY_USAGE_COMPLETION_TOKENS))
            .unwrap_or(0);
        let (output_text, tool_calls) = s(semconv::OUTPUT_MESSAGES)
            .map(|o| semconv::output_from(&o))
            .unwrap_or_default();
        let (status, error) = match &span.status {
            Status::Error { description } => ("ERROR", Some(description.to_string())),
            _ => ("SUCCESS", None),
        };

        let embeddings = operation == "embeddings";
        let has_output = attrs.contains_key(semconv::OUTPUT_MESSAGES)
            && (status == "SUCCESS" || !output_text.is_empty());
        let output = if embeddings {
            // Tracia's embedding span: `{"dimensions","count"}` (a JSON string) out.
            (status == "SUCCESS").then(|| {
                json!({
                    "dimensions": i(semconv::EMBEDDINGS_DIMENSION_COUNT).unwrap_or(0),
                    "count": i(semconv::TRACIA_EMBEDDINGS_COUNT).unwrap_or(0),
                })
                .to_string()
            })
        } else {
            has_output.then_some(output_text)
        };
        let input = if embeddings {
            let texts = s(semconv::TRACIA_EMBEDDINGS_INPUT)
                .and_then(|t| serde_json::from_str::<Vec<String>>(&t).ok())
                .unwrap_or_default();
            json!({ "text": texts })
        } else {
            let messages = s(semconv::INPUT_MESSAGES)
                .map(|m| semconv::messages_from_input(&m))
                .unwrap_or_default();
            json!({ "messages": messages })
        };
        // Chat spans send `variables` even when there are none (`null`), as the SDKs do.
        let variables = (!embeddings).then(|| {
            s(semconv::TRACIA_VARIABLES)
                .and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
                .unwrap_or(serde_json::Value::Null)
        });
        let tags = match attrs.get(semconv::TRACIA_TAGS) {
            Some(Value::Array(Array::String(tags))) => {
                Some(tags.iter().map(|t| t.as_str().to_owned()).collect())
            }
            _ => None,
        };
        Some(Self {
            span_id: ids::format_span_id(span.span_context.span_id()),
            trace_id: Some(ids::format_trace_id(span.span_context.trace_id())),
            parent_span_id: (span.parent_span_id != SpanId::INVALID)
                .then(|| ids::format_span_id(span.parent_span_id)),
            model: Some(model),
            provider: Some(provider),
            input: Some(input),
            variables,
            output,
            status: Some(status.to_owned()),
            error: error.map(|e| crate::error::redact(&e)),
            // An i64, as the collector (and Tracia) read it; absurd spans saturate.
            latency_ms: Some(i64::try_from(latency.as_millis()).unwrap_or(i64::MAX)),
            input_tokens: Some(input_tokens),
            output_tokens: Some(output_tokens),
            total_tokens: Some(input_tokens.saturating_add(output_tokens)),
            tags,
            user_id: s(semconv::USER_ID),
            session_id: s(semconv::SESSION_ID),
            temperature: f(semconv::REQUEST_TEMPERATURE),
            top_p: f(semconv::REQUEST_TOP_P),
            max_output_tokens: i(semconv::REQUEST_MAX_TOKENS),
            tools: s(semconv::TOOL_DEFINITIONS)
                .map(|t| serde_json::to_value(semconv::tools_from(&t)).unwrap_or_default()),
            tool_calls: (!tool_calls.is_empty())
                .then(|| serde_json::to_value(tool_calls).unwrap_or_default()),
            span_kind: embeddings.then(|| "EMBEDDING".to_owned()),
            prompt_slug: None,
            prompt_version: None,
        })
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
    SpanPayload::from_span(span).and_then(|p| serde_json::to_value(p).ok())
}
