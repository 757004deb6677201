//! OTLP/HTTP trace payloads: decoding requests, encoding responses, and reducing spans
//! to [`SpanRecord`]s.

use std::fmt;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use prost::Message as _;

use crate::store::{SpanRecord, SpanStatus};

/// The two OTLP/HTTP encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP/JSON: hex ids, camelCase names).
    Json,
}

impl Encoding {
    /// The encoding named by a `Content-Type` header value (parameters such as
    /// `charset` are ignored); `None` for any other media type.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Self::Protobuf)
        } else if media_type.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else {
            None
        }
    }

    /// The `Content-Type` of this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Protobuf => "protobuf",
            Self::Json => "JSON",
        })
    }
}

/// A request body that is not a valid `ExportTraceServiceRequest`.
#[derive(Debug)]
pub struct DecodeError {
    encoding: Encoding,
    reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid OTLP {} trace request: {}",
            self.encoding, self.reason
        )
    }
}

impl std::error::Error for DecodeError {}

/// Decodes an `ExportTraceServiceRequest` in the given encoding.
pub fn decode(encoding: Encoding, body: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    let reason = match encoding {
        Encoding::Protobuf => match ExportTraceServiceRequest::decode(body) {
            Ok(request) => return Ok(request),
            Err(e) => e.to_string(),
        },
        Encoding::Json => match serde_json::from_slice(body) {
            Ok(request) => return Ok(request),
            Err(e) => e.to_string(),
        },
    };
    Err(DecodeError { encoding, reason })
}

/// Encodes an `ExportTraceServiceResponse` in the given encoding.
pub fn encode_response(encoding: Encoding, response: &ExportTraceServiceResponse) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        // OTLP/JSON leaves unset fields out; serde would write `"partialSuccess": null`.
        Encoding::Json => match &response.partial_success {
            None => b"{}".to_vec(),
            Some(partial) => serde_json::to_vec(&serde_json::json!({ "partialSuccess": partial }))
                .unwrap_or_else(|_| b"{}".to_vec()),
        },
    }
}

/// The spans of a request as records, and the response to send: spans whose ids are
/// not valid (trace id not 16 non-zero bytes, span id not 8 non-zero bytes) are
/// rejected and counted as a partial success.
pub fn records(
    request: &ExportTraceServiceRequest,
) -> (Vec<SpanRecord>, ExportTraceServiceResponse) {
    let mut records = Vec::new();
    let mut rejected = 0_i64;
    for resource_spans in &request.resource_spans {
        let service_name = resource_spans
            .resource
            .as_ref()
            .and_then(|r| string_attr(&r.attributes, "service.name"));
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            match record(span, service_name.clone()) {
                Some(record) => records.push(record),
                None => rejected += 1,
            }
        }
    }
    let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: rejected,
        error_message: format!("{rejected} spans had an invalid trace id or span id"),
    });
    (records, ExportTraceServiceResponse { partial_success })
}

fn record(span: &Span, service_name: Option<String>) -> Option<SpanRecord> {
    let trace_id: [u8; 16] = span
        .trace_id
        .as_slice()
        .try_into()
        .ok()
        .filter(|id| *id != [0; 16])?;
    let span_id: [u8; 8] = span
        .span_id
        .as_slice()
        .try_into()
        .ok()
        .filter(|id| *id != [0; 8])?;
    // An empty (or malformed) parent means a root span.
    let parent_span_id = <[u8; 8]>::try_from(span.parent_span_id.as_slice())
        .ok()
        .filter(|id| *id != [0; 8]);
    let attrs = &span.attributes;
    let status = span.status.as_ref();
    let is_error = status.is_some_and(|s| s.code == StatusCode::Error as i32);
    let error = is_error
        .then(|| {
            status
                .map(|s| s.message.clone())
                .filter(|m| !m.is_empty())
                .or_else(|| string_attr(attrs, "error.type"))
        })
        .flatten();
    Some(SpanRecord {
        trace_id,
        span_id,
        parent_span_id,
        name: span.name.clone(),
        operation: string_attr(attrs, "gen_ai.operation.name"),
        model: string_attr(attrs, "gen_ai.request.model")
            .or_else(|| string_attr(attrs, "gen_ai.response.model")),
        tool_name: string_attr(attrs, "gen_ai.tool.name"),
        provider: string_attr(attrs, "gen_ai.provider.name")
            .or_else(|| string_attr(attrs, "gen_ai.system")),
        service_name,
        status: if is_error {
            SpanStatus::Error
        } else {
            SpanStatus::Success
        },
        error,
        start_unix_nano: span.start_time_unix_nano,
        end_unix_nano: span.end_time_unix_nano,
        input_tokens: int_attr(attrs, "gen_ai.usage.input_tokens")
            .or_else(|| int_attr(attrs, "gen_ai.usage.prompt_tokens")),
        output_tokens: int_attr(attrs, "gen_ai.usage.output_tokens")
            .or_else(|| int_attr(attrs, "gen_ai.usage.completion_tokens")),
    })
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|AnyValue { value }| value.as_ref())
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        any_value::Value::StringValue(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A non-negative count, also accepted as a whole double or a decimal string, since
/// some SDKs send them so.
fn int_attr(attrs: &[KeyValue], key: &str) -> Option<u64> {
    match attr(attrs, key)? {
        any_value::Value::IntValue(n) => u64::try_from(*n).ok(),
        any_value::Value::DoubleValue(d) if d.fract() == 0.0 && *d >= 0.0 => Some(*d as u64),
        any_value::Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}
