//! OTLP/HTTP trace payloads: decoding requests, encoding responses and errors, and
//! reducing spans to [`SpanRecord`]s.

use std::fmt;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;

use crate::limits::{CutTotals, Limits};
use crate::model::SpanRecord;

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

/// The body of an OTLP/HTTP error answer: a `google.rpc.Status` with only its message
/// (the OTLP specification leaves `code` unused), in the request's encoding.
pub fn encode_status(encoding: Encoding, message: &str) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => RpcStatus {
            code: 0,
            message: message.to_owned(),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&serde_json::json!({ "message": message }))
            .unwrap_or_else(|_| b"{}".to_vec()),
    }
}

/// `google.rpc.Status` without its `details`, which are never sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// A `google.rpc.Code`; unused by OTLP/HTTP.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// What went wrong.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The spans of a request as records, and the response to send: spans whose ids are
/// not valid (trace id not 16 non-zero bytes, span id not 8 non-zero bytes) are
/// rejected and counted as a partial success. Each span is bounded by `limits`
/// ([`Limits::bound_span`], [`Limits::bound_record`]); what they cut is counted.
pub fn records(
    request: &ExportTraceServiceRequest,
    limits: &Limits,
) -> (Vec<SpanRecord>, CutTotals, ExportTraceServiceResponse) {
    let mut records = Vec::new();
    let mut cut = CutTotals::default();
    let mut rejected = 0_i64;
    for resource_spans in &request.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map_or(&[][..], |r| &r.attributes[..]);
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            let (span, mut span_cut) = limits.bound_span(span);
            match SpanRecord::from_otlp(&span, resource) {
                Some(mut record) => {
                    limits.bound_record(&mut record, &mut span_cut);
                    cut.add(&span_cut);
                    records.push(record);
                }
                None => rejected += 1,
            }
        }
    }
    let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: rejected,
        error_message: format!("{rejected} spans had an invalid trace id or span id"),
    });
    (records, cut, ExportTraceServiceResponse { partial_success })
}
