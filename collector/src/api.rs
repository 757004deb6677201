//! HTTP handlers: the OTLP/HTTP receiver and the collector's status (the Tracia REST API
//! is in the `rest` module, the UI in `ui`: both build on this one, which imports neither).

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

use crate::forward::TargetStats;
use crate::limits::CutTotals;
use crate::model::{SpanRecord, SpanStatus};
use crate::otlp::{self, Encoding};
use crate::time::iso8601;
use crate::{AppState, ingest};

/// `POST /v1/traces`: an OTLP/HTTP `ExportTraceServiceRequest`, protobuf or JSON.
///
/// Answers in the request's encoding, errors included (a `google.rpc.Status`). A body
/// that does not decode is refused whole (400), one over [`crate::MAX_BODY_BYTES`]
/// after decompression too (413), another media type as well (415, answered in JSON);
/// spans with invalid ids are rejected one by one (partial success).
pub async fn ingest_traces(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(encoding) = Encoding::from_content_type(content_type) else {
        let message = format!(
            "unsupported content type {content_type:?}: send application/x-protobuf or application/json"
        );
        return otlp_error(Encoding::Json, StatusCode::UNSUPPORTED_MEDIA_TYPE, &message);
    };
    let request = match body
        .map_err(|rejection| (rejection.status(), rejection.body_text()))
        .and_then(|body| {
            otlp::decode(encoding, &body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
        }) {
        Ok(request) => request,
        Err((status, message)) => {
            tracing::warn!("refused a trace export: {message}");
            return otlp_error(encoding, status, &message);
        }
    };
    let response = match ingest::ingest(&state, &request).await {
        Ok(response) => response,
        Err(e) => {
            // Not acknowledged, so the exporter keeps the spans and retries.
            tracing::error!("cannot store a trace export: {e}");
            return otlp_error(encoding, StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
    };
    let body = otlp::encode_response(encoding, &response);
    ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
}

fn otlp_error(encoding: Encoding, status: StatusCode, message: &str) -> Response {
    let body = otlp::encode_status(encoding, message);
    (
        status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

/// One span of `GET /api/v1/spans`: Tracia's `SpanListItem` fields plus a few OTel ones.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanListItem {
    /// Same as `span_id`.
    pub id: String,
    /// `sp_` + 16 hex.
    pub span_id: String,
    /// `tr_` + 16 or 32 hex.
    pub trace_id: Option<String>,
    /// The parent's `sp_` id, `null` for a root span.
    pub parent_span_id: Option<String>,
    /// The prompt of a `prompts.run` span.
    pub prompt_slug: Option<String>,
    /// The span name.
    pub name: String,
    /// `LLM`, `EMBEDDING`, `ROOT` or `APP`.
    pub span_kind: &'static str,
    /// The model as requested.
    pub model: Option<String>,
    /// Tracia's provider name.
    pub provider: Option<String>,
    /// `service.name` of the sender.
    pub service_name: Option<String>,
    /// `SUCCESS` or `ERROR`.
    pub status: SpanStatus,
    /// The error message of an ERROR span.
    pub error: Option<String>,
    /// End minus start, in milliseconds.
    pub latency_ms: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Input plus output tokens.
    pub total_tokens: i64,
    /// Cost in USD, `null` for unknown models.
    pub cost: Option<f64>,
    /// The span's start time, ISO-8601 UTC.
    pub created_at: String,
}

impl From<&SpanRecord> for SpanListItem {
    fn from(r: &SpanRecord) -> Self {
        Self {
            id: r.span_id.clone(),
            span_id: r.span_id.clone(),
            trace_id: r.trace_id.clone(),
            parent_span_id: r.parent_span_id.clone(),
            prompt_slug: r.prompt_slug.clone(),
            name: r.name.clone(),
            span_kind: r.kind.as_str(),
            model: r.model.clone(),
            provider: r.provider.clone(),
            service_name: r.service_name.clone(),
            status: r.status,
            error: r.error.clone(),
            latency_ms: r.latency_ms(),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            total_tokens: r.total_tokens,
            cost: r.cost_usd,
            created_at: iso8601(r.start_unix_nano.max(0) as u64),
        }
    }
}

/// The response of `GET /api/ui/status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectorStatus {
    /// The collector's version.
    pub version: &'static str,
    /// Each forwarding target's counts, in the order of the flags.
    pub forwarding: Vec<TargetStats>,
    /// What the bounds on received spans cut, since start ([`crate::limits`]).
    pub truncated: CutTotals,
}

/// `GET /api/ui/status`: the version, the forwarding counts and what was truncated.
pub async fn status(State(state): State<AppState>) -> axum::Json<CollectorStatus> {
    axum::Json(CollectorStatus {
        version: env!("CARGO_PKG_VERSION"),
        forwarding: state.forward.stats(),
        truncated: state.cut.totals(),
    })
}

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok"
}

/// A Tracia-style error: `{"error": {"code": "NOT_FOUND", "message": "…"}}` with `status`.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message.into()}});
    (status, axum::Json(body)).into_response()
}
