//! HTTP handlers: the OTLP/HTTP receiver and the HTML page.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

use crate::AppState;
use crate::model::{SpanRecord, SpanStatus};
use crate::otlp::{self, Encoding};
use crate::store::{MAX_LIMIT, SpanQuery};

/// `POST /v1/traces`: an OTLP/HTTP `ExportTraceServiceRequest`, protobuf or JSON.
///
/// Answers in the request's encoding. A body that does not decode is refused whole
/// (400); spans with invalid ids are rejected one by one (partial success).
pub async fn ingest_traces(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(encoding) = Encoding::from_content_type(content_type) else {
        let message = format!(
            "unsupported content type {content_type:?}: send application/x-protobuf or application/json"
        );
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response();
    };
    let request = match otlp::decode(encoding, &body) {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!("refused a trace export: {e}");
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
    };
    let (records, response) = otlp::records(&request);
    if state.log_spans {
        for record in records.iter().filter(|r| r.model.is_some()) {
            println!("{}", record.log_line());
        }
    }
    if let Err(e) = state.store.insert(records).await {
        // Not acknowledged, so the exporter keeps the spans and retries.
        tracing::error!("cannot store a trace export: {e}");
        return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
    }
    let body = otlp::encode_response(encoding, &response);
    ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
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

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /`: a plain HTML table of the newest spans, refreshed every 5 seconds.
pub async fn index(State(state): State<AppState>) -> Html<String> {
    let query = SpanQuery {
        limit: Some(MAX_LIMIT),
        ..SpanQuery::default()
    };
    let spans = state
        .store
        .list_spans(query)
        .await
        .map(|p| p.items)
        .unwrap_or_default();
    let mut rows = String::new();
    for r in &spans {
        let item = SpanListItem::from(r);
        let cells = [
            item.created_at,
            item.span_id,
            item.trace_id.unwrap_or_default(),
            item.parent_span_id.unwrap_or_default(),
            item.name,
            item.model.unwrap_or_default(),
            item.status.as_str().to_owned(),
            format!("{} ms", item.latency_ms),
            item.total_tokens.to_string(),
        ];
        let class = if r.status == SpanStatus::Error {
            " class=\"error\""
        } else {
            ""
        };
        rows.push_str(&format!("<tr{class}>"));
        for cell in cells {
            rows.push_str(&format!("<td>{}</td>", escape(&cell)));
        }
        rows.push_str("</tr>\n");
    }
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>tracia-collector</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{padding:.25em .75em;border-bottom:1px solid #ddd;text-align:left;font-size:.9em}}
td{{font-family:ui-monospace,monospace}}tr.error td{{color:#b00}}</style></head>
<body><h1>tracia-collector</h1>
<p>The newest {shown} spans. OTLP/HTTP: <code>POST /v1/traces</code>.
API: <a href="/api/v1/spans">/api/v1/spans</a>.</p>
<table><thead><tr><th>start (UTC)</th><th>span</th><th>trace</th><th>parent</th><th>name</th>
<th>model / tool</th><th>status</th><th>latency</th><th>tokens</th></tr></thead>
<tbody>
{rows}</tbody></table></body></html>
"#,
        shown = spans.len(),
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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
    fn escapes_html() {
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
