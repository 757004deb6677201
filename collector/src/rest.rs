//! The Tracia REST API under `/api/v1`, as the official Tracia SDKs call it: its error
//! shape, the JSON body extractor, and the span and evaluation routes. Prompts live in
//! the `prompts` module, which builds on this one; `app` in the crate root merges both.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bytes::Bytes;
use opentelemetry::trace::{SpanId, TraceId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::api::SpanListItem;
use crate::limits::{Cut, CutTotals};
use crate::model::{CreateSpan, SpanRecord, SpanStatus};
use crate::store::{SpanQuery, StoreError};
use crate::time::{iso8601, parse_iso8601};

/// The largest JSON body the API accepts; a larger one is answered 413.
pub const MAX_API_BODY_BYTES: usize = 10 * 1024 * 1024;

/// The `/api/v1` span and evaluation routes, with Tracia's JSON 404 for any other path
/// under `/api/v1`. The prompt routes are merged next to them by `app` (the prompts
/// module builds on this one, not the other way round); the body limit covers both.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/spans", get(list_spans).post(create_span))
        .route("/api/v1/spans/{span_id}", get(get_span))
        .route("/api/v1/spans/{span_id}/evaluations", post(evaluate_span))
        .route("/api/v1", any(not_found))
        .route("/api/v1/{*rest}", any(not_found))
}

/// An API failure, answered as Tracia's `{"error": {"code", "message"}}` with the HTTP
/// status of its code.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// 400 `INVALID_REQUEST`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    /// 404 `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// 409 `CONFLICT`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CONFLICT", message)
    }

    /// 401 `UNAUTHORIZED`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    /// 403 `FORBIDDEN`: a request the collector never serves, whatever its key (see
    /// the `admission` module).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    /// 429 `RATE_LIMITED`, with `Retry-After`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!("Too many requests: retry after {retry_after_secs} s"),
            )
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The Tracia error code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadCursor(cursor) => Self::invalid(format!("Invalid cursor: {cursor}")),
            other => {
                tracing::error!("api: {other}");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVICE_UNAVAILABLE",
                    other.to_string(),
                )
            }
        }
    }
}

impl ApiError {
    /// The same status and headers with the message as plain text, for clients that
    /// are not Tracia's (OTLP exporters, browsers).
    pub fn into_plain_response(self) -> Response {
        let retry = self.retry_after_secs;
        with_retry_after((self.status, self.message).into_response(), retry)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        with_retry_after((self.status, body).into_response(), self.retry_after_secs)
    }
}

fn with_retry_after(mut response: Response, secs: Option<u64>) -> Response {
    if let Some(secs) = secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.into());
    }
    response
}

/// A JSON request body (its `application/json` media type is checked in front of every
/// route, by the `admission` module): an empty body read as `{}`, and failures
/// answered as [`ApiError`]s (413 beyond [`MAX_API_BODY_BYTES`], 400 otherwise).
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "INVALID_REQUEST",
                    format!(
                        "Request body too large: the limit is {} MiB",
                        MAX_API_BODY_BYTES / (1024 * 1024)
                    ),
                )
            } else {
                ApiError::invalid(e.body_text())
            }
        })?;
        let text: &[u8] = if bytes.trim_ascii().is_empty() {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(ApiJson)
            .map_err(|e| ApiError::invalid(format!("Invalid JSON body: {e}")))
    }
}

/// A query string, or a 400 naming what is wrong with it.
pub(crate) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::invalid(e.body_text()))
}

/// A path segment (percent-decoded), or a 400.
pub(crate) fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::invalid(e.body_text()))
}

/// Any other path under `/api/v1`.
async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("No such route: {}", request.uri().path()))
}

/// Now, in nanoseconds since the Unix epoch.
pub(crate) fn now_unix_nano() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A caller's span id: `sp_` (or the legacy `tr_`) + 16 hex, any case.
pub(crate) fn parse_span_id(text: &str) -> Option<SpanId> {
    tracia::ids::parse_span_id(text).ok()
}

/// A caller's trace id: `tr_` + 16 or 32 hex, a bare 32-hex W3C trace id, or a span id
/// used as a trace id (see [`tracia::ids`]).
pub(crate) fn parse_trace_id(text: &str) -> Option<TraceId> {
    tracia::ids::parse_trace_id(text).ok()
}

/// Stores spans, printing the line of each GenAI one when asked to.
pub(crate) async fn store_spans(
    state: &AppState,
    records: Vec<SpanRecord>,
) -> Result<(), ApiError> {
    if state.log_spans {
        for record in records.iter().filter(|r| r.model.is_some()) {
            println!("{}", record.log_line());
        }
    }
    Ok(state.store.insert(records).await?)
}

/// `POST /api/v1/spans`: one span as the Tracia SDKs send it.
async fn create_span(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateSpan>,
) -> Result<Json<Value>, ApiError> {
    if parse_span_id(&body.span_id).is_none() {
        return Err(ApiError::invalid(
            "Invalid span ID format. Must match: sp_ + 16 hex characters (e.g., sp_1234567890abcdef)",
        ));
    }
    let mut record = SpanRecord::from_create(body, now_unix_nano()).map_err(ApiError::invalid)?;
    // The same bounds as OTLP spans: a 10 MiB body of control characters is 60 MiB of
    // escaped JSON.
    let mut cut = Cut::default();
    state.limits.bound_record(&mut record, &mut cut);
    let mut totals = CutTotals::default();
    totals.add(&cut);
    state.cut.add(&totals);
    let answer = json!({
        "id": record.span_id, "spanId": record.span_id, "traceId": record.trace_id,
        "cost": record.cost_usd,
    });
    store_spans(&state, vec![record]).await?;
    Ok(Json(answer))
}

/// The query of `GET /api/v1/spans` (Tracia's names; empty values count as absent).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpanListParams {
    prompt_slug: Option<String>,
    status: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    user_id: Option<String>,
    session_id: Option<String>,
    tags: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl SpanListParams {
    fn into_query(self) -> Result<SpanQuery, ApiError> {
        let set = |v: Option<String>| v.filter(|s| !s.is_empty());
        let date = |name: &str, v: Option<String>| {
            set(v)
                .map(|text| {
                    parse_iso8601(&text).ok_or_else(|| {
                        ApiError::invalid(format!(
                            "Invalid {name} {text:?}: expected an ISO-8601 date-time such as 2024-01-15T10:35:00.000Z"
                        ))
                    })
                })
                .transpose()
        };
        let status = set(self.status)
            .map(|s| {
                SpanStatus::parse(&s).ok_or_else(|| {
                    ApiError::invalid(format!("Invalid status {s:?}: expected SUCCESS or ERROR"))
                })
            })
            .transpose()?;
        let limit = set(self.limit)
            .map(|l| match l.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(ApiError::invalid(format!(
                    "Invalid limit {l:?}: expected a positive number (at most 100)"
                ))),
            })
            .transpose()?;
        Ok(SpanQuery {
            prompt_slug: set(self.prompt_slug),
            status,
            start_unix_nano: date("startDate", self.start_date)?,
            end_unix_nano: date("endDate", self.end_date)?,
            user_id: set(self.user_id),
            session_id: set(self.session_id),
            tags: self
                .tags
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            genai_only: true,
            limit,
            cursor: set(self.cursor),
            ..SpanQuery::default()
        })
    }
}

/// The response of `GET /api/v1/spans`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SpanList {
    spans: Vec<SpanListItem>,
    next_cursor: Option<String>,
}

/// `GET /api/v1/spans`: GenAI spans newest first, filtered, one page at a time.
async fn list_spans(
    State(state): State<AppState>,
    params: Result<Query<SpanListParams>, QueryRejection>,
) -> Result<Json<SpanList>, ApiError> {
    let page = state.store.list_spans(query(params)?.into_query()?).await?;
    Ok(Json(SpanList {
        spans: page.items.iter().map(SpanListItem::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Tracia's full `Span`: the list fields and the call's content.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SpanDetail {
    #[serde(flatten)]
    item: SpanListItem,
    prompt_version: Option<i64>,
    input: Option<Value>,
    variables: Option<Value>,
    output: Option<String>,
    tags: Vec<String>,
    user_id: Option<String>,
    session_id: Option<String>,
}

/// `GET /api/v1/spans/{spanId}`.
async fn get_span(
    State(state): State<AppState>,
    span_id: Result<Path<String>, PathRejection>,
) -> Result<Json<SpanDetail>, ApiError> {
    let span_id = path(span_id)?;
    let record = state
        .store
        .get_span(&span_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Span not found: {span_id}")))?;
    Ok(Json(SpanDetail {
        item: SpanListItem::from(&record),
        prompt_version: record.prompt_version,
        input: record.input,
        variables: record.variables,
        output: record.output,
        tags: record.tags,
        user_id: record.user_id,
        session_id: record.session_id,
    }))
}

/// The body of `POST /api/v1/spans/{spanId}/evaluations`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EvaluateBody {
    evaluator_key: Option<String>,
    #[serde(default)]
    value: Value,
    note: Option<String>,
}

/// `POST /api/v1/spans/{spanId}/evaluations`.
async fn evaluate_span(
    State(state): State<AppState>,
    span_id: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<EvaluateBody>,
) -> Result<Json<Value>, ApiError> {
    let span_id = path(span_id)?;
    let key = body
        .evaluator_key
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("evaluatorKey is required"))?;
    let value = body
        .value
        .as_f64()
        .ok_or_else(|| ApiError::invalid("Invalid evaluation value. Must be a number."))?;
    let evaluation = state
        .store
        .add_evaluation(&span_id, &key, value, body.note, now_unix_nano())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Span not found: {span_id}")))?;
    Ok(Json(json!({
        "id": evaluation.id,
        "spanId": evaluation.span_id,
        "evaluatorKey": evaluation.evaluator_key,
        "evaluatorName": evaluator_name(&evaluation.evaluator_key),
        "value": evaluation.value,
        "source": evaluation.source,
        "note": evaluation.note,
        "createdAt": iso8601(evaluation.created_unix_nano.max(0) as u64),
    })))
}

/// A display name for an evaluator key: `answer_quality` → `Answer Quality`.
fn evaluator_name(key: &str) -> String {
    key.split(['_', '-', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_tracia_forms() {
        assert!(parse_span_id("sp_00f067aa0ba902b7").is_some());
        assert!(parse_span_id("tr_00f067aa0ba902b7").is_some());
        assert!(parse_span_id("sp_00F067AA0BA902B7").is_some());
        for bad in [
            "sp_123",
            "sp_0000000000000000",
            "xx_00f067aa0ba902b7",
            "sp_00f067aa0ba902bz",
            "sp_+0f067aa0ba902b7",
        ] {
            assert!(parse_span_id(bad).is_none(), "{bad}");
        }
        assert!(parse_trace_id("tr_4bf92f3577b34da6").is_some());
        assert!(parse_trace_id("4bf92f3577b34da6a3ce929d0e0e4736").is_some());
        assert!(parse_trace_id("tr_4bf92f3577b34da6a3ce929d0e0e4736").is_some());
        assert!(parse_trace_id("4bf92f3577b34da6").is_none());
        assert!(parse_trace_id("tr_+bf92f3577b34da6").is_none());
        // A span id used as a trace id (Tracia's manual linking) shows in its own form.
        let seeded = parse_trace_id("sp_00f067aa0ba902b7").unwrap();
        assert_eq!(crate::model::trace_id(seeded), "sp_00f067aa0ba902b7");
    }

    #[test]
    fn evaluator_names() {
        assert_eq!(evaluator_name("quality"), "Quality");
        assert_eq!(evaluator_name("answer_quality"), "Answer Quality");
    }
}
