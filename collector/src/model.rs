//! The one span model: spans from OTLP and from the Tracia REST API land here, GenAI
//! attributes lifted into columns, everything else kept as JSON.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind as OtelKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value as OtelValue};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as ProtoKeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a span ended, in Tracia's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SpanStatus {
    /// OK or unset.
    Success,
    /// ERROR.
    Error,
}

impl SpanStatus {
    /// `SUCCESS` or `ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Error => "ERROR",
        }
    }

    /// Parses `SUCCESS` / `ERROR` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "SUCCESS" => Some(Self::Success),
            "ERROR" => Some(Self::Error),
            _ => None,
        }
    }
}

/// What a span is: Tracia's span kinds, plus `APP` for an application's own spans
/// (`#[instrument]` handlers and helpers) that share the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SpanKind {
    /// A chat call.
    Llm,
    /// An embeddings call.
    Embedding,
    /// A root span Tracia created for a session or a prompt run.
    Root,
    /// Any other span (application code, tool execution, HTTP handlers).
    App,
}

impl SpanKind {
    /// `LLM`, `EMBEDDING`, `ROOT` or `APP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "LLM",
            Self::Embedding => "EMBEDDING",
            Self::Root => "ROOT",
            Self::App => "APP",
        }
    }

    /// Parses the names of [`SpanKind::as_str`] (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "LLM" => Some(Self::Llm),
            "EMBEDDING" => Some(Self::Embedding),
            "ROOT" => Some(Self::Root),
            "APP" => Some(Self::App),
            _ => None,
        }
    }
}

/// One stored span. Ids are in Tracia form (`sp_…`, `tr_…`); REST clients may send
/// other server-style ids, which are kept as given. Serialized in camelCase, as the UI
/// reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanRecord {
    /// `sp_` + 16 hex for OpenTelemetry spans.
    pub span_id: String,
    /// `tr_` + 16 or 32 hex; `None` for a REST span sent without one.
    pub trace_id: Option<String>,
    /// The parent, if any.
    pub parent_span_id: Option<String>,
    /// The span name (`chat gpt-4o`, `handle_request`).
    pub name: String,
    /// What the span is.
    pub kind: SpanKind,
    /// `service.name` of the sender.
    pub service_name: Option<String>,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_unix_nano: i64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_unix_nano: i64,
    /// SUCCESS or ERROR.
    pub status: SpanStatus,
    /// The (redacted) error message of an ERROR span.
    pub error: Option<String>,
    /// Tracia's provider name (`openai`, `anthropic`, `google`, `amazon_bedrock`, …).
    pub provider: Option<String>,
    /// The model as requested.
    pub model: Option<String>,
    /// Input tokens (cached ones included).
    pub input_tokens: i64,
    /// Output tokens (reasoning ones included).
    pub output_tokens: i64,
    /// Input plus output tokens.
    pub total_tokens: i64,
    /// Cost in USD from the SDK's price table; `None` for unknown models.
    pub cost_usd: Option<f64>,
    /// `session.id`.
    pub session_id: Option<String>,
    /// `user.id`.
    pub user_id: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// The prompt that ran, for `prompts.run` spans.
    pub prompt_slug: Option<String>,
    /// The prompt version that ran.
    pub prompt_version: Option<i64>,
    /// `{"messages": [...]}` (chat) or `{"text": [...]}` (embeddings), when captured.
    pub input: Option<Value>,
    /// The answer text (embeddings: a JSON string), when captured.
    pub output: Option<String>,
    /// The template variables, when captured.
    pub variables: Option<Value>,
    /// The tools offered.
    pub tools: Option<Value>,
    /// The tool calls the model asked for.
    pub tool_calls: Option<Value>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Output token limit.
    pub max_output_tokens: Option<i64>,
    /// Every other attribute (and OTLP events and resource attributes), as JSON.
    pub attributes: Map<String, Value>,
}

impl SpanRecord {
    /// An application span (`APP`, SUCCESS) with nothing but its id and name set: the
    /// base that the other fields are filled in on.
    ///
    /// ```
    /// let r = tracia_collector::model::SpanRecord::app("sp_0000000000000001", "handle_request");
    /// assert_eq!(r.kind.as_str(), "APP");
    /// ```
    pub fn app(span_id: impl Into<String>, name: impl Into<String>) -> Self {
        SpanRecord {
            span_id: span_id.into(),
            trace_id: None,
            parent_span_id: None,
            name: name.into(),
            kind: SpanKind::App,
            service_name: None,
            start_unix_nano: 0,
            end_unix_nano: 0,
            status: SpanStatus::Success,
            error: None,
            provider: None,
            model: None,
            input_tokens: 0,
            output_tokens: 0,
            total_tokens: 0,
            cost_usd: None,
            session_id: None,
            user_id: None,
            tags: Vec::new(),
            prompt_slug: None,
            prompt_version: None,
            input: None,
            output: None,
            variables: None,
            tools: None,
            tool_calls: None,
            temperature: None,
            top_p: None,
            max_output_tokens: None,
            attributes: Map::new(),
        }
    }

    /// Latency in whole milliseconds.
    pub fn latency_ms(&self) -> i64 {
        (self.end_unix_nano - self.start_unix_nano).max(0) / 1_000_000
    }

    /// A one-line summary printed for each received GenAI span:
    /// `span sp_… trace tr_… LLM gpt-4o 812ms 15 tokens SUCCESS`.
    pub fn log_line(&self) -> String {
        format!(
            "span {} trace {} {} {} {}ms {} tokens {}",
            self.span_id,
            self.trace_id.as_deref().unwrap_or("-"),
            self.kind.as_str(),
            self.model.as_deref().unwrap_or(&self.name),
            self.latency_ms(),
            self.total_tokens,
            self.status.as_str(),
        )
    }

    /// A span from the Tracia REST API (`POST /api/v1/spans`), received at
    /// `received_unix_nano`: it ended then and took `latencyMs`. Cost is computed here.
    pub fn from_create(span: CreateSpan, received_unix_nano: i64) -> Result<Self, String> {
        if span.span_id.trim().is_empty() {
            return Err("spanId is required".into());
        }
        let model = span.model.filter(|m| !m.is_empty());
        let kind = match span.span_kind.as_deref().map(SpanKind::parse) {
            Some(Some(kind)) => kind,
            Some(None) => {
                return Err(format!(
                    "spanKind must be ROOT, LLM or EMBEDDING, not {:?}",
                    span.span_kind.unwrap_or_default()
                ));
            }
            None => SpanKind::Llm,
        };
        let status = match span.status.as_deref() {
            None => SpanStatus::Success,
            Some(s) => SpanStatus::parse(s)
                .ok_or_else(|| format!("status must be SUCCESS or ERROR, not {s:?}"))?,
        };
        let input_tokens = span.input_tokens.unwrap_or(0).max(0);
        let output_tokens = span.output_tokens.unwrap_or(0).max(0);
        let total_tokens = span
            .total_tokens
            .unwrap_or(input_tokens.saturating_add(output_tokens))
            .max(0);
        let usage = tracia::Usage {
            input_tokens: input_tokens as u64,
            output_tokens: output_tokens as u64,
            total_tokens: total_tokens as u64,
            ..Default::default()
        };
        let latency_nanos = span
            .latency_ms
            .unwrap_or(0)
            .max(0)
            .saturating_mul(1_000_000);
        let name = match kind {
            SpanKind::Embedding => format!("embeddings {}", model.as_deref().unwrap_or("")),
            _ => format!("chat {}", model.as_deref().unwrap_or("")),
        };
        Ok(SpanRecord {
            cost_usd: model.as_deref().and_then(|m| tracia::cost_usd(m, &usage)),
            span_id: span.span_id,
            trace_id: span.trace_id,
            parent_span_id: span.parent_span_id,
            name: name.trim_end().to_owned(),
            kind,
            service_name: None,
            start_unix_nano: received_unix_nano - latency_nanos,
            end_unix_nano: received_unix_nano,
            status,
            error: span
                .error
                .filter(|e| !e.is_empty())
                .map(|e| tracia::redact(&e)),
            provider: span.provider,
            model,
            input_tokens,
            output_tokens,
            total_tokens,
            session_id: span.session_id,
            user_id: span.user_id,
            tags: span.tags.unwrap_or_default(),
            prompt_slug: span.prompt_slug,
            prompt_version: span.prompt_version,
            input: span.input,
            output: span.output,
            variables: span.variables.filter(|v| !v.is_null()),
            tools: span.tools,
            tool_calls: span.tool_calls,
            temperature: span.temperature,
            top_p: span.top_p,
            max_output_tokens: span.max_output_tokens,
            attributes: Map::new(),
        })
    }

    /// A span received by OTLP; `None` when its trace or span id is invalid (all zero
    /// or the wrong length). GenAI spans are mapped as the SDK's Tracia exporter maps
    /// them ([`tracia::span_payload`]), so both ways in give the same columns. The
    /// client span of a `prompts.run` (`tracia.prompt.run = true`) is not: the server
    /// that ran the prompt stored the run with its tokens and cost (this collector, as
    /// an LLM span that is the client span's child), so the client span is kept as an
    /// `APP` span, its attributes as JSON, and trace and session totals count the run
    /// once.
    pub fn from_otlp(span: &Span, resource: &[ProtoKeyValue]) -> Option<Self> {
        let data = span_data(span)?;
        let service_name = resource
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| any_to_json(kv.value.as_ref()).as_str().map(str::to_owned));
        let mut attributes: Map<String, Value> = span
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), any_to_json(kv.value.as_ref())))
            .collect();
        if !span.events.is_empty() {
            let events = span
                .events
                .iter()
                .map(|e| {
                    let attrs: Map<String, Value> = e
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), any_to_json(kv.value.as_ref())))
                        .collect();
                    serde_json::json!({
                        "name": e.name, "timeUnixNano": e.time_unix_nano, "attributes": attrs,
                    })
                })
                .collect();
            attributes.insert("otel.events".into(), Value::Array(events));
        }
        let start = span.start_time_unix_nano.min(i64::MAX as u64) as i64;
        let end = span.end_time_unix_nano.min(i64::MAX as u64) as i64;
        let mut record = match tracia::SpanPayload::from_span(&data)
            .and_then(|p| Self::from_create(p, end).ok())
        {
            Some(mut record) => {
                // The OTLP attributes count cache reads and writes: a better price.
                if let Some(model) = record.model.as_deref() {
                    record.cost_usd =
                        tracia::cost_usd(model, &usage_of(&attributes)).or(record.cost_usd);
                }
                record
            }
            None => app_span(&data),
        };
        if record.status == SpanStatus::Error && record.error.is_none() {
            // No status message: `error.type` (e.g. an HTTP status) still says what failed.
            record.error = attributes
                .get("error.type")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        record.name = span.name.clone();
        record.service_name = service_name;
        record.start_unix_nano = start;
        record.end_unix_nano = end;
        record.attributes = attributes;
        Some(record)
    }
}

/// A non-GenAI span: ids, times, status; its attributes are kept as JSON.
fn app_span(data: &SpanData) -> SpanRecord {
    let (status, error) = match &data.status {
        Status::Error { description } => (
            SpanStatus::Error,
            Some(tracia::redact(description)).filter(|d| !d.is_empty()),
        ),
        _ => (SpanStatus::Success, None),
    };
    let parent = (data.parent_span_id != SpanId::INVALID).then(|| span_id(data.parent_span_id));
    SpanRecord {
        trace_id: Some(trace_id(data.span_context.trace_id())),
        parent_span_id: parent,
        status,
        error,
        ..SpanRecord::app(span_id(data.span_context.span_id()), data.name.to_string())
    }
}

/// `sp_` + 16 hex.
pub fn span_id(id: SpanId) -> String {
    tracia::ids::format_span_id(id)
}

/// The trace id in the SDK's Tracia form ([`tracia::ids::format_trace_id`]), the same
/// as GenAI spans carry: `tr_` + 16 hex when the upper half is zero (ids the tracia SDK
/// makes), `sp_` + 16 hex for a span id used as a trace id, else `tr_` + 32 hex.
pub fn trace_id(id: TraceId) -> String {
    tracia::ids::format_trace_id(id)
}

/// The usage attributes of an OTLP GenAI span, cache and reasoning counts included.
fn usage_of(attributes: &Map<String, Value>) -> tracia::Usage {
    let n = |key: &str| attributes.get(key).and_then(Value::as_u64);
    let input = n("gen_ai.usage.input_tokens").unwrap_or(0);
    let output = n("gen_ai.usage.output_tokens").unwrap_or(0);
    tracia::Usage {
        input_tokens: input,
        output_tokens: output,
        total_tokens: input + output,
        cache_read_input_tokens: n("gen_ai.usage.cache_read.input_tokens"),
        cache_creation_input_tokens: n("gen_ai.usage.cache_creation.input_tokens")
            .or_else(|| n("gen_ai.usage.cache_write.input_tokens")),
        reasoning_output_tokens: n("gen_ai.usage.reasoning.output_tokens"),
    }
}

/// The OTLP span as the OpenTelemetry SDK's `SpanData`, the input of the SDK's own
/// Tracia mapping; `None` for invalid ids.
fn span_data(span: &Span) -> Option<SpanData> {
    let trace: [u8; 16] = span.trace_id.as_slice().try_into().ok()?;
    let id: [u8; 8] = span.span_id.as_slice().try_into().ok()?;
    let (trace, id) = (TraceId::from_bytes(trace), SpanId::from_bytes(id));
    if trace == TraceId::INVALID || id == SpanId::INVALID {
        return None;
    }
    // An empty (or malformed) parent means a root span.
    let parent = <[u8; 8]>::try_from(span.parent_span_id.as_slice())
        .map(SpanId::from_bytes)
        .unwrap_or(SpanId::INVALID);
    let status = match span.status.as_ref() {
        Some(s) if s.code == StatusCode::Error as i32 => Status::error(s.message.clone()),
        Some(s) if s.code == StatusCode::Ok as i32 => Status::Ok,
        _ => Status::Unset,
    };
    let time = |nanos: u64| SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
    Some(SpanData {
        span_context: SpanContext::new(trace, id, TraceFlags::SAMPLED, true, TraceState::NONE),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: OtelKind::Internal,
        name: Cow::Owned(span.name.clone()),
        start_time: time(span.start_time_unix_nano),
        end_time: time(span.end_time_unix_nano),
        attributes: span
            .attributes
            .iter()
            .filter_map(|kv| {
                Some(KeyValue::new(
                    kv.key.clone(),
                    otel_value(kv.value.as_ref()?)?,
                ))
            })
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: InstrumentationScope::builder("otlp").build(),
    })
}

/// An OTLP value as an OpenTelemetry one; maps, bytes and mixed arrays become JSON text.
fn otel_value(value: &AnyValue) -> Option<OtelValue> {
    use any_value::Value as V;
    Some(match value.value.as_ref()? {
        V::StringValue(s) => OtelValue::String(s.clone().into()),
        V::BoolValue(b) => OtelValue::Bool(*b),
        V::IntValue(i) => OtelValue::I64(*i),
        V::DoubleValue(d) => OtelValue::F64(*d),
        V::ArrayValue(a) => {
            let strings: Option<Vec<StringValue>> = a
                .values
                .iter()
                .map(|v| match &v.value {
                    Some(V::StringValue(s)) => Some(s.clone().into()),
                    _ => None,
                })
                .collect();
            match strings {
                Some(strings) => OtelValue::Array(Array::String(strings)),
                None => OtelValue::String(any_to_json(Some(value)).to_string().into()),
            }
        }
        V::KvlistValue(_) | V::BytesValue(_) => {
            OtelValue::String(any_to_json(Some(value)).to_string().into())
        }
        // An index into a profiles string table, meaningless in a trace.
        V::StringValueStrindex(_) => return None,
    })
}

/// An OTLP value as JSON (bytes as hex).
pub fn any_to_json(value: Option<&AnyValue>) -> Value {
    use any_value::Value as V;
    match value.and_then(|v| v.value.as_ref()) {
        None | Some(V::StringValueStrindex(_)) => Value::Null,
        Some(V::StringValue(s)) => Value::String(s.clone()),
        Some(V::BoolValue(b)) => Value::Bool(*b),
        Some(V::IntValue(i)) => Value::from(*i),
        Some(V::DoubleValue(d)) => Value::from(*d),
        Some(V::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| any_to_json(Some(v))).collect())
        }
        Some(V::KvlistValue(kv)) => Value::Object(
            kv.values
                .iter()
                .map(|kv| (kv.key.clone(), any_to_json(kv.value.as_ref())))
                .collect(),
        ),
        Some(V::BytesValue(b)) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

/// The body of `POST /api/v1/spans`: the SDK's own [`tracia::SpanPayload`], the one
/// shape the SDK's exporter sends and this collector reads (both Tracia SDKs' bodies
/// parse into it: null fields may be absent or `null`, unknown fields are ignored).
pub type CreateSpan = tracia::SpanPayload;
