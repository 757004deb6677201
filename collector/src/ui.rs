//! The web UI: one page, its script and stylesheet (embedded in the binary), and the
//! JSON endpoints under `/api/ui` that the script reads.
//!
//! The page is plain HTML, CSS and JavaScript: no framework, no build step, nothing
//! loaded from elsewhere, so it works offline. The script inserts every value it
//! receives as text, never as markup (span content is untrusted), and the
//! Content-Security-Policy allows only the collector's own script and stylesheet.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /` | the page (views as `#/traces`, `#/trace/{traceId}/{spanId}`, `#/sessions`, `#/prompts`) |
//! | `GET /api/ui/traces?model=&status=&session=&user=&tag=&since=&until=&cursor=&limit=` | `{"traces": [trace], "nextCursor"}`, newest first |
//! | `GET /api/ui/traces/{traceId}` | `{"traceId", "spans": [span]}` in start order |
//! | `GET /api/ui/sessions?cursor=&limit=` | `{"sessions": [session], "nextCursor"}`, most recently active first |
//! | `GET /api/ui/sessions/{sessionId}?cursor=&limit=` | `{"sessionId", "traces": [trace], "nextCursor"}` |
//!
//! `since` and `until` are ISO-8601 date-times; `status` is `SUCCESS` (no span failed) or
//! `ERROR`. Unknown ids answer 404 and bad parameters 400, as Tracia's errors.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::error_response;
use crate::model::{SpanRecord, SpanStatus};
use crate::store::{SessionSummary, StoreError, TraceQuery, TraceSummary};
use crate::time::{iso8601, parse_iso8601};

/// The page's Content-Security-Policy: its own script, stylesheet and API only; no
/// inline script or style, no frames, no form posts.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const STYLE_CSS: &str = include_str!("../ui/style.css");

/// The UI's routes: the page, its assets and its JSON endpoints.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/api/ui/traces", get(traces))
        .route("/api/ui/traces/{trace_id}", get(trace))
        .route("/api/ui/sessions", get(sessions))
        .route("/api/ui/sessions/{session_id}", get(session))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // A new collector build serves a new page: never run a stale script.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// One trace of a list: the store's summary plus display fields.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TraceRow {
    #[serde(flatten)]
    summary: TraceSummary,
    /// The earliest start, ISO-8601 UTC.
    started_at: String,
    /// Latest end minus earliest start.
    duration_ms: i64,
    /// Every tag of its spans.
    tags: Vec<String>,
}

/// One session of the list: the store's summary plus display times.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionRow {
    #[serde(flatten)]
    summary: SessionSummary,
    first_seen: String,
    last_seen: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TraceList {
    traces: Vec<TraceRow>,
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TraceDetail {
    trace_id: String,
    spans: Vec<SpanRecord>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionList {
    sessions: Vec<SessionRow>,
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionDetail {
    session_id: String,
    traces: Vec<TraceRow>,
    next_cursor: Option<String>,
}

/// The query string of the trace list, as sent (an empty field means no filter).
#[derive(Debug, Default, Deserialize)]
struct TraceParams {
    model: Option<String>,
    status: Option<String>,
    session: Option<String>,
    user: Option<String>,
    tag: Option<String>,
    since: Option<String>,
    until: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

/// `cursor` and `limit`.
#[derive(Debug, Default, Deserialize)]
struct PageParams {
    cursor: Option<String>,
    limit: Option<String>,
}

/// A request refused before any query: 400 with this message.
struct Invalid(String);

impl PageParams {
    fn cursor(&self) -> Option<String> {
        given(&self.cursor)
    }

    fn limit(&self) -> Result<Option<usize>, Invalid> {
        given(&self.limit)
            .map(|l| match l.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(Invalid(format!(
                    "limit must be a positive number, not {l:?}"
                ))),
            })
            .transpose()
    }
}

impl TraceParams {
    fn query(&self) -> Result<TraceQuery, Invalid> {
        let time = |name: &str, value: &Option<String>| {
            given(value)
                .map(|v| {
                    parse_iso8601(&v).ok_or_else(|| {
                        Invalid(format!(
                            "{name} must be an ISO-8601 date-time such as 2026-01-01T10:00:00Z, not {v:?}"
                        ))
                    })
                })
                .transpose()
        };
        let status = given(&self.status)
            .map(|s| {
                SpanStatus::parse(&s)
                    .ok_or_else(|| Invalid(format!("status must be SUCCESS or ERROR, not {s:?}")))
            })
            .transpose()?;
        Ok(TraceQuery {
            model: given(&self.model),
            status,
            session_id: given(&self.session),
            user_id: given(&self.user),
            tag: given(&self.tag),
            since_unix_nano: time("since", &self.since)?,
            until_unix_nano: time("until", &self.until)?,
            limit: self.page.limit()?,
            cursor: self.page.cursor(),
        })
    }
}

/// A parameter that was sent and is not blank.
fn given(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// What a handler answers when it cannot answer with data.
enum Failure {
    Invalid(String),
    NotFound(String),
    Store(StoreError),
}

impl From<Invalid> for Failure {
    fn from(Invalid(message): Invalid) -> Self {
        Self::Invalid(message)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadCursor(_) => Self::Invalid(e.to_string()),
            e => Self::Store(e),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Self::Invalid(message) => {
                error_response(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
            }
            Self::NotFound(message) => error_response(StatusCode::NOT_FOUND, "NOT_FOUND", message),
            Self::Store(e) => {
                tracing::error!("ui: {e}");
                error_response(StatusCode::SERVICE_UNAVAILABLE, "UNKNOWN", e.to_string())
            }
        }
    }
}

type Answer<T> = Result<axum::Json<T>, Failure>;

/// `GET /api/ui/traces`: one page of trace summaries, newest first.
async fn traces(
    State(state): State<AppState>,
    Query(params): Query<TraceParams>,
) -> Answer<TraceList> {
    let page = state.store.traces(params.query()?).await?;
    Ok(axum::Json(TraceList {
        traces: trace_rows(&state, page.items).await?,
        next_cursor: page.next_cursor,
    }))
}

/// `GET /api/ui/traces/{traceId}`: every span of the trace, in start order.
async fn trace(State(state): State<AppState>, Path(trace_id): Path<String>) -> Answer<TraceDetail> {
    let spans = state.store.trace(&trace_id).await?;
    if spans.is_empty() {
        return Err(Failure::NotFound(format!("Trace not found: {trace_id}")));
    }
    Ok(axum::Json(TraceDetail { trace_id, spans }))
}

/// `GET /api/ui/sessions`: one page of sessions, most recently active first.
async fn sessions(
    State(state): State<AppState>,
    Query(params): Query<PageParams>,
) -> Answer<SessionList> {
    let page = state
        .store
        .sessions(params.limit()?, params.cursor())
        .await?;
    let sessions = page
        .items
        .into_iter()
        .map(|summary| SessionRow {
            first_seen: iso(summary.first_unix_nano),
            last_seen: iso(summary.last_unix_nano),
            summary,
        })
        .collect();
    Ok(axum::Json(SessionList {
        sessions,
        next_cursor: page.next_cursor,
    }))
}

/// `GET /api/ui/sessions/{sessionId}`: one page of the session's traces, newest first.
async fn session(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
    Query(params): Query<PageParams>,
) -> Answer<SessionDetail> {
    let query = TraceQuery {
        session_id: Some(session_id.clone()),
        limit: params.limit()?,
        cursor: params.cursor(),
        ..TraceQuery::default()
    };
    let page = state.store.traces(query).await?;
    if page.items.is_empty() && params.cursor().is_none() {
        return Err(Failure::NotFound(format!(
            "Session not found: {session_id}"
        )));
    }
    Ok(axum::Json(SessionDetail {
        session_id,
        traces: trace_rows(&state, page.items).await?,
        next_cursor: page.next_cursor,
    }))
}

/// The summaries with their display fields and tags.
async fn trace_rows(
    state: &AppState,
    summaries: Vec<TraceSummary>,
) -> Result<Vec<TraceRow>, StoreError> {
    let ids = summaries.iter().map(|s| s.trace_id.clone()).collect();
    let tags = state.store.trace_tags(ids).await?;
    Ok(summaries
        .into_iter()
        .zip(tags)
        .map(|(summary, tags)| TraceRow {
            started_at: iso(summary.start_unix_nano),
            duration_ms: (summary.end_unix_nano - summary.start_unix_nano).max(0) / 1_000_000,
            tags,
            summary,
        })
        .collect())
}

fn iso(unix_nano: i64) -> String {
    iso8601(unix_nano.max(0) as u64)
}
