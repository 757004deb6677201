//! An OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf or JSON) that
//! stores the received spans flattened, for assertions.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::Response;
use axum::routing::post;
use http::header::CONTENT_TYPE;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;

use super::server::{
    RecordedRequest, TestServer, close_connection, lock, wait_until, with_retry_after,
};
use super::{ReceiverMode, hold_while_hanging};

/// OTLP exporters send batches of up to 64 MiB; axum's default limit is 2 MB.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// One span event.
#[derive(Clone, Debug)]
pub struct ReceivedEvent {
    pub name: String,
    pub time_unix_nano: u64,
    pub attributes: BTreeMap<String, Value>,
}

/// One received span with its resource and scope flattened in.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub name: String,
    /// `opentelemetry_proto::tonic::trace::v1::span::SpanKind` as i32 (3 = client).
    pub kind: i32,
    /// Lowercase hex; `""` when absent.
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub trace_state: String,
    /// `status::StatusCode` as i32: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    /// Attributes without a value (empty `AnyValue`) are left out.
    pub attributes: BTreeMap<String, Value>,
    pub events: Vec<ReceivedEvent>,
    /// The resource's `service.name`, if it is a string.
    pub service_name: Option<String>,
    pub resource_attributes: BTreeMap<String, Value>,
    pub scope_name: String,
    pub scope_version: String,
    /// The span as decoded, for anything not flattened above (links, flags, ...).
    pub raw: Span,
}

impl ReceivedSpan {
    pub fn is_client(&self) -> bool {
        self.kind == SpanKind::Client as i32
    }

    pub fn is_internal(&self) -> bool {
        self.kind == SpanKind::Internal as i32
    }

    pub fn is_error(&self) -> bool {
        self.status_code == StatusCode::Error as i32
    }

    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }

    pub fn duration_nanos(&self) -> u64 {
        self.end_time_unix_nano
            .saturating_sub(self.start_time_unix_nano)
    }

    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    pub fn has_attr(&self, key: &str) -> bool {
        self.attributes.contains_key(key)
    }

    // The typed getters are strict on purpose: an int sent where semconv
    // wants a double (or a JSON string instead of an array) is a bug to catch.

    pub fn attr_str(&self, key: &str) -> Option<&str> {
        match self.attr(key)? {
            Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            Value::IntValue(i) => Some(*i),
            _ => None,
        }
    }

    pub fn attr_f64(&self, key: &str) -> Option<f64> {
        match self.attr(key)? {
            Value::DoubleValue(d) => Some(*d),
            _ => None,
        }
    }

    pub fn attr_bool(&self, key: &str) -> Option<bool> {
        match self.attr(key)? {
            Value::BoolValue(b) => Some(*b),
            _ => None,
        }
    }

    /// A string array; `None` if missing, not an array, or any element is not a string.
    pub fn attr_str_array(&self, key: &str) -> Option<Vec<String>> {
        match self.attr(key)? {
            Value::ArrayValue(arr) => arr
                .values
                .iter()
                .map(|v| match &v.value {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    pub fn event(&self, name: &str) -> Option<&ReceivedEvent> {
        self.events.iter().find(|e| e.name == name)
    }
}

#[derive(Default)]
struct OtlpState {
    mode: ReceiverMode,
    /// Statuses to answer before `mode` applies again (see `fail_next`).
    fail_next: VecDeque<u16>,
    requests: Vec<RecordedRequest>,
    spans: Vec<ReceivedSpan>,
    /// Why a request was rejected (bad content type, undecodable body).
    errors: Vec<String>,
    /// `Retry-After` of forced-status answers (see `set_retry_after`).
    retry_after: Option<String>,
    /// Notified on every mode change (releases `Hang` requests).
    mode_changed: Arc<tokio::sync::Notify>,
}

type Shared = Arc<Mutex<OtlpState>>;

/// OTLP/HTTP trace receiver. Give the exporter [`OtlpReceiver::traces_url`]
/// (or [`OtlpReceiver::base_url`] where the exporter appends `/v1/traces`).
pub struct OtlpReceiver {
    server: TestServer,
    state: Shared,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let state = Shared::default();
        OtlpReceiver {
            server: TestServer::start("otlp-receiver", router(&state)),
            state,
        }
    }

    /// A receiver that is down: connections to its port are refused until
    /// [`OtlpReceiver::come_up`] (same port, so exporters need no new endpoint).
    pub async fn start_down() -> Self {
        let state = Shared::default();
        OtlpReceiver {
            server: TestServer::start_down("otlp-receiver", router(&state)),
            state,
        }
    }

    /// Brings up a receiver started with [`OtlpReceiver::start_down`]; it accepts
    /// connections once this returns.
    pub async fn come_up(&self) {
        self.server.come_up().await;
    }

    /// `http://127.0.0.1:PORT`, like `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn base_url(&self) -> String {
        self.server.url()
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `http://127.0.0.1:PORT/v1/traces`, like `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.server.url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn set_mode(&self, mode: ReceiverMode) {
        let mut s = lock(&self.state);
        s.mode = mode;
        s.mode_changed.notify_waiters();
    }

    /// The `Retry-After` header of forced-status answers (`Status` mode, `fail_next`),
    /// e.g. `Some("1")`; none by default.
    pub fn set_retry_after(&self, value: Option<&str>) {
        lock(&self.state).retry_after = value.map(str::to_owned);
    }

    /// Answer the next `n` requests with `status` (storing nothing), then go
    /// back to the current mode. For retry tests without timing races.
    pub fn fail_next(&self, n: usize, status: u16) {
        lock(&self.state)
            .fail_next
            .extend(std::iter::repeat_n(status, n));
    }

    /// Forgets every request, span and error received so far, so that a long benchmark
    /// keeps memory flat; the counts start again from zero.
    pub fn forget(&self) {
        let mut s = lock(&self.state);
        s.requests.clear();
        s.spans.clear();
        s.errors.clear();
    }

    /// Requests to `/v1/traces` so far, whatever the answer was.
    pub fn requests_count(&self) -> usize {
        lock(&self.state).requests.len()
    }

    pub async fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// Spans from every accepted request, in arrival order.
    pub async fn spans(&self) -> Vec<ReceivedSpan> {
        lock(&self.state).spans.clone()
    }

    /// The ids (lowercase hex) of every accepted span, in arrival order: cheaper than
    /// [`OtlpReceiver::spans`] for counting thousands.
    pub fn span_ids(&self) -> Vec<String> {
        lock(&self.state)
            .spans
            .iter()
            .map(|s| s.span_id.clone())
            .collect()
    }

    /// Accepted spans called `name`.
    pub async fn spans_named(&self, name: &str) -> Vec<ReceivedSpan> {
        lock(&self.state)
            .spans
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }

    /// Waits until at least `n` spans arrived or `timeout` passed, then returns
    /// what is there; it never panics, the test asserts.
    pub async fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        wait_until(
            &self.state,
            timeout,
            |s| s.spans.len() >= n,
            |s| s.spans.clone(),
        )
        .await
    }

    /// Why requests were rejected; empty when every payload decoded.
    pub async fn errors(&self) -> Vec<String> {
        lock(&self.state).errors.clone()
    }
}

fn router(state: &Shared) -> Router {
    Router::new()
        .route("/v1/traces", post(handle))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state.clone())
}

enum Encoding {
    Protobuf,
    Json,
}

async fn handle(State(state): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let raw = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(raw) => raw,
        Err(e) => return text(413, &format!("otlp-receiver: cannot read body: {e}")),
    };
    let recorded = RecordedRequest::new(&parts, raw.clone());

    let (forced, retry_after, mode_changed) = {
        let mut s = lock(&state);
        s.requests.push(recorded);
        let forced = match s.fail_next.pop_front() {
            Some(status) => ReceiverMode::Status(status),
            None => s.mode,
        };
        (forced, s.retry_after.clone(), s.mode_changed.clone())
    };
    match forced {
        ReceiverMode::Ok => {}
        ReceiverMode::Status(status) => {
            let answer = text(status, &format!("otlp-receiver: forced status {status}"));
            return with_retry_after(answer, retry_after.as_deref());
        }
        // Held until the mode changes, then cut like a restarting backend cuts its
        // connections (nothing stored: the client's retry meets the new mode); dropped
        // with the server's runtime when the receiver is dropped.
        ReceiverMode::Hang => {
            hold_while_hanging(&mode_changed, || lock(&state).mode).await;
            close_connection(&parts.extensions);
            return text(503, "otlp-receiver: never sent");
        }
        ReceiverMode::Close => {
            close_connection(&parts.extensions);
            return text(503, "otlp-receiver: never sent");
        }
    }

    let reject = |status: u16, why: String| {
        lock(&state).errors.push(why.clone());
        text(status, &why)
    };
    if let Some(enc) = parts.headers.get("content-encoding") {
        // No decompressor in the dev-dependencies; exporters default to none.
        return reject(
            415,
            format!("otlp-receiver: unsupported content-encoding {enc:?}"),
        );
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (encoding, decoded) = if content_type.starts_with("application/x-protobuf") {
        let decoded = ExportTraceServiceRequest::decode(raw).map_err(|e| e.to_string());
        (Encoding::Protobuf, decoded)
    } else if content_type.starts_with("application/json") {
        let decoded = serde_json::from_slice::<ExportTraceServiceRequest>(&raw);
        (Encoding::Json, decoded.map_err(|e| e.to_string()))
    } else {
        return reject(
            415,
            format!("otlp-receiver: unsupported content-type {content_type:?}"),
        );
    };
    let request = match decoded {
        Ok(request) => request,
        Err(e) => return reject(400, format!("otlp-receiver: cannot decode body: {e}")),
    };

    let spans = flatten(request);
    lock(&state).spans.extend(spans);

    match encoding {
        Encoding::Protobuf => Response::builder()
            .status(200)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(Body::from(
                ExportTraceServiceResponse::default().encode_to_vec(),
            )),
        // `{}` is the canonical OTLP/JSON form of the empty response.
        Encoding::Json => Response::builder()
            .status(200)
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from("{}")),
    }
    .expect("static response parts are valid")
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let resource_attributes =
            attribute_map(rs.resource.map(|r| r.attributes).unwrap_or_default());
        let service_name = match resource_attributes.get("service.name") {
            Some(Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        };
        for ss in rs.scope_spans {
            let InstrumentationScope {
                name: scope_name,
                version: scope_version,
                ..
            } = ss.scope.unwrap_or_default();
            for span in ss.spans {
                let status = span.status.clone().unwrap_or_default();
                out.push(ReceivedSpan {
                    name: span.name.clone(),
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    trace_state: span.trace_state.clone(),
                    status_code: status.code,
                    status_message: status.message,
                    start_time_unix_nano: span.start_time_unix_nano,
                    end_time_unix_nano: span.end_time_unix_nano,
                    attributes: attribute_map(span.attributes.clone()),
                    events: span
                        .events
                        .iter()
                        .map(|e| ReceivedEvent {
                            name: e.name.clone(),
                            time_unix_nano: e.time_unix_nano,
                            attributes: attribute_map(e.attributes.clone()),
                        })
                        .collect(),
                    service_name: service_name.clone(),
                    resource_attributes: resource_attributes.clone(),
                    scope_name: scope_name.clone(),
                    scope_version: scope_version.clone(),
                    raw: span,
                });
            }
        }
    }
    out
}

fn attribute_map(attributes: Vec<KeyValue>) -> BTreeMap<String, Value> {
    attributes
        .into_iter()
        .filter_map(|kv| Some((kv.key, kv.value?.value?)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(status: u16, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(message.to_string()))
        .expect("static response parts are valid")
}
