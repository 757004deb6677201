//! The OTLP/HTTP receiver and the span API, driven through the router without a socket.

use std::io::Write as _;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;
use serde_json::Value;
use tower::ServiceExt as _;
use tracia_collector::app;
use tracia_collector::otlp::RpcStatus;

mod common;
use common::{
    PARENT_ID, SPAN_ID, TRACE_ID, body_bytes, chat_span, export_request, kv, list_spans, post,
};

#[tokio::test]
async fn protobuf_ingest_is_listed_with_tracia_ids() {
    let (_dir, state) = common::test_state();
    let app = app(state.clone());
    let body =
        export_request(vec![chat_span(&TRACE_ID, &SPAN_ID, &PARENT_ID, false)]).encode_to_vec();

    let response = post(&app, "application/x-protobuf", false, body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/x-protobuf"
    );
    let decoded = ExportTraceServiceResponse::decode(body_bytes(response).await).unwrap();
    assert_eq!(decoded, ExportTraceServiceResponse::default());

    let spans = list_spans(&app, "?limit=10").await;
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(span["spanId"], "sp_00f067aa0ba902b7");
    assert_eq!(span["traceId"], "tr_4bf92f3577b34da6");
    assert_eq!(span["parentSpanId"], "sp_53995c3f42cd8ad8");
    assert_eq!(span["name"], "chat gpt-4o");
    assert_eq!(span["model"], "gpt-4o");
    assert_eq!(span["provider"], "openai");
    assert_eq!(span["serviceName"], "checkout");
    assert_eq!(span["status"], "SUCCESS");
    assert_eq!(span["latencyMs"], 812);
    assert_eq!(span["inputTokens"], 10);
    assert_eq!(span["outputTokens"], 5);
    assert_eq!(span["totalTokens"], 15);
    assert_eq!(span["createdAt"], "2026-01-01T00:00:00.000Z");
    assert_eq!(
        common::stored(&state).await[0].log_line(),
        "span sp_00f067aa0ba902b7 trace tr_4bf92f3577b34da6 LLM gpt-4o 812ms 15 tokens SUCCESS"
    );
}

#[tokio::test]
async fn json_ingest_with_full_trace_id_and_error_status() {
    let (_dir, state) = common::test_state();
    let app = app(state);
    let full_trace = "5b8efff798038103d269b633813fc60c";
    let body = serde_json::json!({
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
            "scopeSpans": [{
                "scope": {"name": "tracia"},
                "spans": [{
                    "traceId": full_trace,
                    "spanId": "eee19b7ec3c1b174",
                    "name": "chat gpt-4o-mini",
                    "kind": 3,
                    "startTimeUnixNano": "1767225600000000000",
                    "endTimeUnixNano": "1767225600250000000",
                    "attributes": [
                        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                        {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
                        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
                        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "7"}},
                        {"key": "error.type", "value": {"stringValue": "429"}}
                    ],
                    "status": {"code": 2}
                }]
            }]
        }]
    });
    let response = post(
        &app,
        "application/json; charset=utf-8",
        false,
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let answer: Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(answer, serde_json::json!({}));

    let spans = list_spans(&app, "").await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["traceId"], format!("tr_{full_trace}"));
    assert_eq!(spans[0]["spanId"], "sp_eee19b7ec3c1b174");
    assert_eq!(spans[0]["parentSpanId"], Value::Null);
    assert_eq!(spans[0]["status"], "ERROR");
    assert_eq!(spans[0]["error"], "429");
    assert_eq!(spans[0]["latencyMs"], 250);
    assert_eq!(spans[0]["inputTokens"], 7);
    assert_eq!(spans[0]["outputTokens"], 0);
}

#[tokio::test]
async fn gzip_protobuf_ingest() {
    let (_dir, state) = common::test_state();
    let app = app(state);
    let raw = export_request(vec![chat_span(&TRACE_ID, &SPAN_ID, &[], true)]).encode_to_vec();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&raw).unwrap();
    let gzipped = encoder.finish().unwrap();

    let response = post(&app, "application/x-protobuf", true, gzipped).await;
    assert_eq!(response.status(), StatusCode::OK);
    let spans = list_spans(&app, "").await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["spanId"], "sp_00f067aa0ba902b7");
    assert_eq!(spans[0]["status"], "ERROR");
    assert_eq!(spans[0]["error"], "rate limited");
}

/// The message of an OTLP/HTTP error answer, decoded from the encoding it announces.
async fn error_message(response: Response) -> String {
    let content_type = response.headers()[header::CONTENT_TYPE].clone();
    let body = body_bytes(response).await;
    match content_type.to_str().unwrap() {
        "application/x-protobuf" => RpcStatus::decode(body).unwrap().message,
        "application/json" => {
            let status: Value = serde_json::from_slice(&body).unwrap();
            status["message"].as_str().unwrap().to_owned()
        }
        other => panic!("unexpected content type {other}"),
    }
}

#[tokio::test]
async fn malformed_bodies_are_refused_in_their_encoding_and_nothing_is_kept() {
    let (_dir, state) = common::test_state();
    let app = app(state.clone());

    let response = post(
        &app,
        "application/x-protobuf",
        false,
        b"\xff\xff\xff not protobuf".to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/x-protobuf"
    );
    let message = error_message(response).await;
    assert!(message.contains("invalid OTLP protobuf"), "{message}");

    let response = post(
        &app,
        "application/json",
        false,
        br#"{"resourceSpans": [{"#.to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let message = error_message(response).await;
    assert!(message.contains("invalid OTLP JSON"), "{message}");

    // A body claiming gzip that is not.
    let response = post(&app, "application/x-protobuf", true, b"plain".to_vec()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(!error_message(response).await.is_empty());

    let response = post(&app, "text/plain", false, b"hello".to_vec()).await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let message = error_message(response).await;
    assert!(
        message.contains("text/plain") && message.contains("application/x-protobuf"),
        "{message}"
    );

    assert!(common::stored(&state).await.is_empty());
    assert!(list_spans(&app, "").await.is_empty());
}

#[tokio::test]
async fn spans_with_invalid_ids_are_a_partial_success() {
    let (_dir, state) = common::test_state();
    let app = app(state.clone());
    let spans = vec![
        chat_span(&TRACE_ID, &SPAN_ID, &[], false),
        chat_span(&[0; 16], &SPAN_ID, &[], false),
        chat_span(&TRACE_ID, &[1, 2, 3], &[], false),
    ];
    let request = export_request(spans);
    let response = post(
        &app,
        "application/x-protobuf",
        false,
        request.encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let decoded = ExportTraceServiceResponse::decode(body_bytes(response).await).unwrap();
    let partial = decoded.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert!(partial.error_message.contains("invalid"), "{partial:?}");
    assert_eq!(common::stored(&state).await.len(), 1);

    // The same in OTLP/JSON.
    let response = post(
        &app,
        "application/json",
        false,
        serde_json::to_vec(&request).unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let answer: Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
    let decoded: ExportTraceServiceResponse = serde_json::from_value(answer.clone()).unwrap();
    assert_eq!(
        decoded.partial_success.unwrap().rejected_spans,
        2,
        "{answer}"
    );
    assert_eq!(
        answer["partialSuccess"]["errorMessage"],
        partial.error_message
    );
    // The valid span came twice: a re-sent span id is stored once.
    assert_eq!(common::stored(&state).await.len(), 1);
}

#[tokio::test]
async fn list_is_newest_first_and_limited() {
    let (_dir, state) = common::test_state();
    let app = app(state);
    let spans = (1..=5u8)
        .map(|n| chat_span(&TRACE_ID, &[0, 0, 0, 0, 0, 0, 0, n], &[], false))
        .collect();
    let response = post(
        &app,
        "application/x-protobuf",
        false,
        export_request(spans).encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let ids: Vec<_> = list_spans(&app, "?limit=2")
        .await
        .iter()
        .map(|s| s["spanId"].clone())
        .collect();
    assert_eq!(ids, ["sp_0000000000000005", "sp_0000000000000004"]);

    let health = app
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(body_bytes(health).await, "ok");
}

#[tokio::test]
async fn bodies_beyond_axum_default_limit_are_accepted_but_not_beyond_64_mib() {
    let (_dir, state) = common::test_state();
    let app = app(state.clone());
    // 3 MB: more than axum's default 2 MB limit, well within what OTLP exporters send.
    let mut span = chat_span(&TRACE_ID, &SPAN_ID, &[], false);
    span.attributes.push(kv(
        "gen_ai.input.messages",
        any_value::Value::StringValue("x".repeat(3_000_000)),
    ));
    let response = post(
        &app,
        "application/x-protobuf",
        false,
        export_request(vec![span]).encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(common::stored(&state).await.len(), 1);

    // One byte over the limit, uncompressed: 413, answered in the request's encoding.
    let response = post(
        &app,
        "application/json",
        false,
        vec![b' '; tracia_collector::MAX_BODY_BYTES + 1],
    )
    .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let message = error_message(response).await;
    assert!(message.contains("length limit"), "{message}");

    // The limit applies after decompression: 65 MiB of zeros gzip to ~65 KB.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&vec![0; 65 * 1024 * 1024]).unwrap();
    let bomb = encoder.finish().unwrap();
    let response = post(&app, "application/x-protobuf", true, bomb).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/x-protobuf"
    );
    let message = error_message(response).await;
    assert!(message.contains("length limit"), "{message}");
    assert_eq!(common::stored(&state).await.len(), 1);
}
