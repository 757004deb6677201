//! HTTP handlers: the OTLP/HTTP receiver and the collector's status (the Tracia REST API
//! is in [`crate::rest`], the UI in [`crate::ui`]).

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

use crate::forward::TargetStats;
use crate::model::{SpanRecord, SpanStatus};
use crate::otlp::{self, Encoding};
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
}

/// `GET /api/ui/status`: the version and the forwarding counts.
pub async fn status(State(state): State<AppState>) -> axum::Json<CollectorStatus> {
    axum::Json(CollectorStatus {
        version: env!("CARGO_PKG_VERSION"),
        forwarding: state.forward.stats(),
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

/// Nanoseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn iso8601(unix_nano: u64) -> String {
    let millis = unix_nano / 1_000_000;
    let (secs, ms) = (millis / 1000, millis % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses an ISO-8601 date-time (`2026-01-01T10:00:00.5Z`, `…+02:00`, or a bare date)
/// into nanoseconds since the Unix epoch; a time without zone is taken as UTC.
pub(crate) fn parse_iso8601(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, rest) = text.split_at(text.find(['T', 't', ' ']).unwrap_or(text.len()));
    let mut ymd = date.splitn(3, '-');
    let year: i64 = number(ymd.next()?, 4)?;
    let month: i64 = number(ymd.next()?, 2)?;
    let day: i64 = number(ymd.next()?, 2)?;
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    let (mut seconds, mut nanos) = (0, 0);
    if let Some(time) = rest.get(1..) {
        // The zone: `Z`, `+HH:MM`, `-HH:MM`, or nothing (UTC).
        let (clock, offset) = match time.find(['Z', 'z', '+', '-']) {
            Some(i) => {
                let zone = &time[i..];
                let offset = match zone.as_bytes()[0] {
                    b'Z' | b'z' if zone.len() == 1 => 0,
                    sign @ (b'+' | b'-') => {
                        let (h, m) = zone[1..].split_once(':').unwrap_or((&zone[1..], "00"));
                        let minutes = number(h, 2)? * 60 + number(m, 2)?;
                        if sign == b'+' {
                            minutes * 60
                        } else {
                            -minutes * 60
                        }
                    }
                    _ => return None,
                };
                (&time[..i], offset)
            }
            None => (time, 0),
        };
        let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
        let mut parts = hms.split(':');
        let hour = number(parts.next()?, 2)?;
        let minute = number(parts.next()?, 2)?;
        let second = parts.next().map_or(Some(0), |s| number(s, 2))?;
        if parts.next().is_some() || hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        if !fraction.is_empty() {
            if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            nanos = format!("{fraction:0<9}").parse().ok()?;
        }
        seconds = hour * 3600 + minute * 60 + second - offset;
    }
    let days = days_from_civil(year, month, day);
    (days * 86_400 + seconds)
        .checked_mul(1_000_000_000)?
        .checked_add(nanos)
}

/// Exactly `len` ASCII digits.
fn number(text: &str, len: usize) -> Option<i64> {
    (text.len() == len && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123_000_000), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            iso8601(1_767_225_599_999_000_000),
            "2025-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn parses_iso8601() {
        let at = |s| parse_iso8601(s).map(|n| iso8601(n as u64));
        assert_eq!(
            at("2026-01-01T00:00:00.000Z").unwrap(),
            "2026-01-01T00:00:00.000Z"
        );
        assert_eq!(
            at("2000-02-29T23:59:59.123456789Z").unwrap(),
            "2000-02-29T23:59:59.123Z"
        );
        assert_eq!(
            at("2026-01-01T10:30+02:00").unwrap(),
            "2026-01-01T08:30:00.000Z"
        );
        assert_eq!(
            at("2026-01-01T01:00:00-01:30").unwrap(),
            "2026-01-01T02:30:00.000Z"
        );
        assert_eq!(at("2026-03-05").unwrap(), "2026-03-05T00:00:00.000Z");
        assert_eq!(
            at("1970-01-01T00:00:00").unwrap(),
            "1970-01-01T00:00:00.000Z"
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2025-02-29",
            "2026-01-01T24:00",
            "2026-1-1",
            "2026-01-01T10:00Zjunk",
            "2026-01-01T10",
            "1767225600000",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
