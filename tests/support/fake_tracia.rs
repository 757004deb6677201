//! A fake Tracia cloud API: `POST /api/v1/spans` only (tracia-api.md §4.1).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::Response;
use axum::routing::post;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};

use super::server::{
    RecordedRequest, TestServer, close_connection, lock, wait_until, with_retry_after,
};
use super::{ReceiverMode, hold_while_hanging};

const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Default)]
struct TraciaState {
    mode: ReceiverMode,
    fail_next: VecDeque<u16>,
    requests: Vec<RecordedRequest>,
    spans: Vec<Value>,
    /// `Retry-After` of forced-status answers (see `set_retry_after`).
    retry_after: Option<String>,
    /// Notified on every mode change (releases `Hang` requests).
    mode_changed: Arc<tokio::sync::Notify>,
}

struct Inner {
    api_key: String,
    state: Mutex<TraciaState>,
}

/// Fake Tracia API. Point the SDK's base URL at [`FakeTracia::base_url`].
pub struct FakeTracia {
    server: TestServer,
    inner: Arc<Inner>,
}

impl FakeTracia {
    /// Only `Authorization: Bearer <api_key>` is accepted.
    pub async fn start(api_key: &str) -> Self {
        let inner = Inner::new(api_key);
        FakeTracia {
            server: TestServer::start("fake-tracia", router(&inner)),
            inner,
        }
    }

    /// A fake Tracia that is down: connections to its port are refused until
    /// [`FakeTracia::come_up`] (same port, so exporters need no new URL).
    pub async fn start_down(api_key: &str) -> Self {
        let inner = Inner::new(api_key);
        FakeTracia {
            server: TestServer::start_down("fake-tracia", router(&inner)),
            inner,
        }
    }

    /// Brings up a server started with [`FakeTracia::start_down`]; it accepts
    /// connections once this returns.
    pub async fn come_up(&self) {
        self.server.come_up().await;
    }

    /// `http://127.0.0.1:PORT`, the equivalent of `https://app.tracia.io`
    /// (the SDK appends `/api/v1/...`).
    pub fn base_url(&self) -> String {
        self.server.url()
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `http://127.0.0.1:PORT/api/v1/spans`.
    pub fn spans_url(&self) -> String {
        format!("{}/api/v1/spans", self.server.url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn set_mode(&self, mode: ReceiverMode) {
        let mut s = lock(&self.inner.state);
        s.mode = mode;
        s.mode_changed.notify_waiters();
    }

    /// The `Retry-After` header of forced-status answers (`Status` mode, `fail_next`),
    /// e.g. `Some("1")`; none by default.
    pub fn set_retry_after(&self, value: Option<&str>) {
        lock(&self.inner.state).retry_after = value.map(str::to_owned);
    }

    /// Answer the next `n` span uploads with `status` (storing nothing), then
    /// go back to the current mode. For retry tests without timing races.
    pub fn fail_next(&self, n: usize, status: u16) {
        lock(&self.inner.state)
            .fail_next
            .extend(std::iter::repeat_n(status, n));
    }

    /// Forgets every request and span received so far, so that a long benchmark keeps
    /// memory flat; the counts (and the ids it hands out) start again from zero.
    pub fn forget(&self) {
        let mut s = lock(&self.inner.state);
        s.requests.clear();
        s.spans.clear();
    }

    /// Every `POST /api/v1/spans` so far, rejected ones included (each has
    /// `received_at`, for checking retry delays).
    pub async fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.state).requests.clone()
    }

    pub fn requests_count(&self) -> usize {
        lock(&self.inner.state).requests.len()
    }

    /// The JSON bodies of the accepted uploads, in arrival order.
    pub async fn spans(&self) -> Vec<Value> {
        lock(&self.inner.state).spans.clone()
    }

    /// Waits until at least `n` spans were accepted or `timeout` passed, then
    /// returns what is there; it never panics, the test asserts.
    pub async fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<Value> {
        wait_until(
            &self.inner.state,
            timeout,
            |s| s.spans.len() >= n,
            |s| s.spans.clone(),
        )
        .await
    }
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let raw = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(raw) => raw,
        Err(e) => return tracia_error(413, "INVALID_REQUEST", &format!("cannot read body: {e}")),
    };
    let recorded = RecordedRequest::new(&parts, raw);
    let body = recorded.body.clone();

    let (forced, retry_after, mode_changed) = {
        let mut s = lock(&inner.state);
        s.requests.push(recorded);
        let forced = match s.fail_next.pop_front() {
            Some(status) => ReceiverMode::Status(status),
            None => s.mode,
        };
        (forced, s.retry_after.clone(), s.mode_changed.clone())
    };
    // The mode is checked before auth: it stands for an outage in front of
    // the API (load balancer 503, hung connection).
    match forced {
        ReceiverMode::Ok => {}
        ReceiverMode::Status(status) => {
            let reason = http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("ERROR");
            let code = reason.to_uppercase().replace([' ', '-'], "_");
            let answer = tracia_error(
                status,
                &code,
                &format!("fake tracia: forced status {status}"),
            );
            return with_retry_after(answer, retry_after.as_deref());
        }
        // Held until the mode changes, then cut like a restarting backend cuts its
        // connections (nothing stored: the client's retry meets the new mode); dropped
        // with the server's runtime when the server is dropped.
        ReceiverMode::Hang => {
            hold_while_hanging(&mode_changed, || lock(&inner.state).mode).await;
            close_connection(&parts.extensions);
            return tracia_error(503, "NEVER_SENT", "fake tracia: never sent");
        }
        ReceiverMode::Close => {
            close_connection(&parts.extensions);
            return tracia_error(503, "NEVER_SENT", "fake tracia: never sent");
        }
    }

    let expected = format!("Bearer {}", inner.api_key);
    let authorized = parts
        .headers
        .get(AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized {
        return tracia_error(401, "UNAUTHORIZED", "Invalid API key");
    }
    if !body.is_object() {
        return tracia_error(400, "INVALID_REQUEST", "Body must be a JSON object");
    }

    let id = {
        let mut s = lock(&inner.state);
        s.spans.push(body.clone());
        format!("fake_span_{}", s.spans.len())
    };
    // One of the documented response shapes (§4.1); cost is server-side only.
    json_response(
        200,
        &json!({
            "id": id,
            "spanId": body.get("spanId").cloned().unwrap_or(Value::Null),
            "traceId": body.get("traceId").cloned().unwrap_or(Value::Null),
            "cost": null,
        }),
    )
}

impl Inner {
    fn new(api_key: &str) -> Arc<Self> {
        Arc::new(Inner {
            api_key: api_key.to_string(),
            state: Mutex::default(),
        })
    }
}

fn router(inner: &Arc<Inner>) -> Router {
    Router::new()
        .route("/api/v1/spans", post(handle))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(inner.clone())
}

async fn not_found(req: Request) -> Response {
    let what = format!("{} {}", req.method(), req.uri().path());
    tracia_error(
        404,
        "NOT_FOUND",
        &format!("fake tracia: no such endpoint: {what}"),
    )
}

/// The error shape both official SDKs parse: `{"error":{"code","message"}}`.
fn tracia_error(status: u16, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({ "error": { "code": code, "message": message } }),
    )
}

fn json_response(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("static response parts are valid")
}

/// Checks an uploaded span body against the `CreateSpanPayload` contract
/// (tracia-api.md §4.1): required fields, their types, and the id formats.
/// Returns every problem found, so a test can `assert_eq!(.., Ok(()))`.
pub fn check_span_payload(span: &Value) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut need = |key: &str, ok: bool, what: &str| {
        if !ok {
            problems.push(format!("{key}: expected {what}, got {}", span[key]));
        }
    };
    let is_id = |v: &Value, prefixes: &[&str]| {
        v.as_str().is_some_and(|s| {
            prefixes.iter().any(|p| {
                s.strip_prefix(p).is_some_and(|hex| {
                    hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())
                })
            })
        })
    };
    let is_uint = |v: &Value| v.as_u64().is_some();

    need(
        "spanId",
        is_id(&span["spanId"], &["sp_", "tr_"]),
        "sp_ + 16 hex",
    );
    need("model", span["model"].is_string(), "a string");
    need(
        "provider",
        matches!(
            span["provider"].as_str(),
            Some("openai" | "anthropic" | "google" | "amazon_bedrock" | "voyage")
        ),
        "a lowercase provider name",
    );
    need("input", span["input"].is_object(), "an object");
    need(
        "status",
        matches!(span["status"].as_str(), Some("SUCCESS" | "ERROR")),
        "SUCCESS or ERROR",
    );
    for key in ["latencyMs", "inputTokens", "outputTokens", "totalTokens"] {
        need(key, is_uint(&span[key]), "a non-negative integer");
    }
    // Caller-supplied trace ids are not validated by the real SDKs, so only
    // the type is checked.
    let trace_id = &span["traceId"];
    need(
        "traceId",
        trace_id.is_null() || trace_id.is_string(),
        "a string",
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
