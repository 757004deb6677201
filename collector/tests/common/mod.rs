//! Builders of OTLP requests, and calls of the collector's router, shared by its tests.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, status::StatusCode as OtelStatus,
};
use serde_json::Value;
use tower::ServiceExt as _;
use tracia_collector::AppState;
use tracia_collector::model::SpanRecord;
use tracia_collector::store::{SpanQuery, Store};

/// Handlers over a fresh store in a temporary directory (kept while the guard lives).
pub fn test_state() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, AppState::new(store))
}

/// Every stored span, newest first.
pub async fn stored(state: &AppState) -> Vec<SpanRecord> {
    let mut spans = Vec::new();
    let mut cursor = None;
    loop {
        let query = SpanQuery {
            cursor,
            limit: Some(100),
            ..SpanQuery::default()
        };
        let page = state.store.list_spans(query).await.unwrap();
        spans.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return spans,
        }
    }
}

pub const TRACE_ID: [u8; 16] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
];
pub const SPAN_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
pub const PARENT_ID: [u8; 8] = [0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8];

pub fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

pub fn chat_span(trace_id: &[u8], span_id: &[u8], parent: &[u8], error: bool) -> Span {
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: parent.to_vec(),
        name: "chat gpt-4o".into(),
        kind: 3, // CLIENT
        start_time_unix_nano: 1_767_225_600_000_000_000,
        end_time_unix_nano: 1_767_225_600_812_000_000,
        attributes: vec![
            kv(
                "gen_ai.operation.name",
                any_value::Value::StringValue("chat".into()),
            ),
            kv(
                "gen_ai.request.model",
                any_value::Value::StringValue("gpt-4o".into()),
            ),
            kv(
                "gen_ai.provider.name",
                any_value::Value::StringValue("openai".into()),
            ),
            kv("gen_ai.usage.input_tokens", any_value::Value::IntValue(10)),
            kv("gen_ai.usage.output_tokens", any_value::Value::IntValue(5)),
        ],
        status: Some(Status {
            message: if error {
                "rate limited".into()
            } else {
                String::new()
            },
            code: (if error {
                OtelStatus::Error
            } else {
                OtelStatus::Ok
            }) as i32,
        }),
        ..Span::default()
    }
}

pub fn export_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("checkout".into()),
                )],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

pub fn string(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

/// A chat span with captured messages, as the tracia SDK records it.
pub fn chat_span_with_messages(span_id: &[u8]) -> Span {
    let mut span = chat_span(&TRACE_ID, span_id, &PARENT_ID, false);
    span.attributes.extend([
        string(
            "gen_ai.input.messages",
            r#"[{"role":"user","parts":[{"type":"text","content":"Hi"}]}]"#,
        ),
        string(
            "gen_ai.output.messages",
            r#"[{"role":"assistant","parts":[{"type":"text","content":"Hello!"}],"finish_reason":"stop"}]"#,
        ),
    ]);
    span
}

/// An embeddings span, as the tracia SDK records it.
pub fn embeddings_span(span_id: &[u8]) -> Span {
    Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: PARENT_ID.to_vec(),
        name: "embeddings text-embedding-3-small".into(),
        kind: 3, // CLIENT
        start_time_unix_nano: 1_767_225_600_000_000_000,
        end_time_unix_nano: 1_767_225_600_120_000_000,
        attributes: vec![
            string("gen_ai.operation.name", "embeddings"),
            string("gen_ai.provider.name", "openai"),
            string("gen_ai.request.model", "text-embedding-3-small"),
            kv("gen_ai.usage.input_tokens", any_value::Value::IntValue(4)),
            string("tracia.embeddings.input", r#"["hello"]"#),
        ],
        ..Span::default()
    }
}

/// An application's own span (no GenAI attributes).
pub fn app_span(span_id: &[u8]) -> Span {
    Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: span_id.to_vec(),
        name: "handle_request".into(),
        kind: 2, // SERVER
        start_time_unix_nano: 1_767_225_600_000_000_000,
        end_time_unix_nano: 1_767_225_601_000_000_000,
        attributes: vec![string("http.route", "/chat")],
        ..Span::default()
    }
}

/// Lowercase hex, as OTLP/JSON and the OTLP receiver show ids.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn post(app: &axum::Router, content_type: &str, gzip: bool, body: Vec<u8>) -> Response {
    let mut request = Request::post("/v1/traces").header(header::CONTENT_TYPE, content_type);
    if gzip {
        request = request.header(header::CONTENT_ENCODING, "gzip");
    }
    app.clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap()
}

pub async fn body_bytes(response: Response) -> bytes::Bytes {
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
}

pub async fn list_spans(app: &axum::Router, query: &str) -> Vec<Value> {
    let request = Request::get(format!("/api/v1/spans{query}"))
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let list: Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
    list["spans"].as_array().unwrap().clone()
}

pub async fn get(app: &axum::Router, uri: &str) -> Response {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    app.clone().oneshot(request).await.unwrap()
}
