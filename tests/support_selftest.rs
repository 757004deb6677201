//! Proves the fake servers in `tests/support` behave as documented.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use futures::StreamExt;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{Value as Json, json};
use support::{
    FakeProvider, FakeTracia, OtlpReceiver, ReceiverMode, check_span_payload, fixture_request_body,
    fixture_response_body,
};

/// Ignores proxy variables: the fakes are on 127.0.0.1.
fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

// ---------------------------------------------------------------- FakeProvider

#[tokio::test]
async fn openai_replays_fixture_byte_for_byte_and_records_request() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-1");
    let sent = fixture_request_body("openai/chat-1");

    let resp = client()
        .post(format!("{}/chat/completions", fake.base_url()))
        .bearer_auth("sk-test")
        .json(&sent)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = resp.bytes().await.unwrap();
    assert_eq!(body, fixture_response_body("openai/chat-1"));
    assert_eq!(fake.pending(), 0);

    let requests = fake.requests().await;
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.method, http::Method::POST);
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(req.body, sent);
    assert_eq!(req.body["model"], "gpt-3.5-turbo");

    // Queue now empty: a clear 500, not a hang.
    let resp = client()
        .post(format!("{}/chat/completions", fake.base_url()))
        .json(&sent)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let text = resp.text().await.unwrap();
    assert!(text.contains("queue is empty"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_operation_and_checks_fixture_endpoint() {
    let fake = FakeProvider::start().await;
    let http = client();

    // Only POSTs are API calls: anything else answers 404 and leaves the queue alone.
    fake.enqueue_fixture("openai/embeddings-1");
    let resp = http
        .get(format!("{}/v1/models", fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(fake.pending(), 1);

    // Any prefix works for a known endpoint.
    let resp = http
        .post(format!("{}/custom/prefix/embeddings", fake.url()))
        .json(&fixture_request_body("openai/embeddings-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.bytes().await.unwrap(),
        fixture_response_body("openai/embeddings-1")
    );

    // A fixture recorded for /embeddings refuses a chat request, and a Gemini
    // fixture recorded for one model answers another model's URL.
    fake.enqueue_fixture("openai/embeddings-2");
    let resp = http
        .post(format!("{}/chat/completions", fake.base_url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let text = resp.text().await.unwrap();
    assert!(text.contains("recorded for embeddings"), "{text}");

    fake.enqueue_fixture("google/generate-content");
    let resp = http
        .post(format!(
            "{}/v1beta/models/gemini-2.0-flash:generateContent",
            fake.url()
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Non-JSON bodies are kept raw.
    assert_eq!(fake.request_count(), 4);
    let requests = fake.requests().await;
    assert_eq!(requests[0].body, Json::Null);
    assert_eq!(requests[1].path, "/custom/prefix/embeddings");
}

#[tokio::test]
async fn openai_hand_made_errors_and_headers() {
    let fake = FakeProvider::start().await;
    let body = support::openai_error_body(
        "Rate limit reached for gpt-4o",
        "requests",
        Some("rate_limit_exceeded"),
    );
    fake.enqueue_with_headers(429, "application/json", &[("retry-after", "2")], body)
        .enqueue_openai_error(
            401,
            "Incorrect API key provided",
            "invalid_request_error",
            Some("invalid_api_key"),
        );

    let url = format!("{}/chat/completions", fake.base_url());
    let resp = client().post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    let err: Json = resp.json().await.unwrap();
    assert_eq!(
        err,
        json!({"error": {
            "message": "Rate limit reached for gpt-4o",
            "type": "requests",
            "param": null,
            "code": "rate_limit_exceeded"
        }})
    );

    let resp = client().post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let err: Json = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn openai_repeats_a_fixture_after_the_queue_without_recording() {
    let fake = FakeProvider::start().await;
    fake.repeat_fixture("openai/chat-1");
    fake.enqueue_openai_error(429, "slow down", "requests", None);
    let url = format!("{}/chat/completions", fake.base_url());
    let post = || client().post(&url).json(&json!({})).send();

    // Queued replies come first and are recorded as usual.
    assert_eq!(post().await.unwrap().status(), 429);
    let expected = fixture_response_body("openai/chat-1");
    for _ in 0..3 {
        let resp = post().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap(), expected);
    }
    assert_eq!(fake.request_count(), 1);
    assert_eq!(fake.repeated_count(), 3);
    assert_eq!(fake.pending(), 0);
    // The repeated fixture still checks the operation it was recorded for.
    let wrong = format!("{}/embeddings", fake.base_url());
    let resp = client().post(&wrong).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 500);
}

#[tokio::test]
async fn openai_delayed_reply_and_client_timeout() {
    let fake = FakeProvider::start().await;
    let delay = Duration::from_millis(300);
    fake.enqueue_delayed("openai/chat-1", delay)
        .enqueue_delayed("openai/chat-2", delay);
    let url = format!("{}/chat/completions", fake.base_url());

    let started = Instant::now();
    let resp = client().post(&url).json(&json!({})).send().await.unwrap();
    assert!(started.elapsed() >= delay);
    assert_eq!(resp.status(), 200);

    let err = client()
        .post(&url)
        .timeout(Duration::from_millis(100))
        .json(&json!({}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(fake.pending(), 0);
}

/// Reads a body until it ends or fails; returns the bytes and whether it failed.
async fn read_until_error(resp: reqwest::Response) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => return (received, true),
        }
    }
    (received, false)
}

#[tokio::test]
async fn openai_truncated_body_sends_prefix_then_aborts() {
    let fake = FakeProvider::start().await;
    // JSON (sent with the full Content-Length) and SSE (sent chunked).
    for name in ["openai/chat-1", "openai/chat-stream"] {
        fake.enqueue_truncated(name, 40);
        let resp = client()
            .post(format!("{}/chat/completions", fake.base_url()))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let (received, failed) = read_until_error(resp).await;
        assert_eq!(received, &fixture_response_body(name)[..40], "{name}");
        assert!(failed, "{name}: a truncated body must end in an error");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_chunked_stream_is_paced_event_by_event() {
    let fake = FakeProvider::start().await;
    let full = fixture_response_body("openai/tools-stream-1");
    let events = full.windows(2).filter(|w| w == b"\n\n").count();
    assert_eq!(events, 11);
    let pause = Duration::from_millis(50);
    fake.enqueue_chunked("openai/tools-stream-1", pause);

    let started = Instant::now();
    let resp = client()
        .post(format!("{}/chat/completions", fake.base_url()))
        .json(&fixture_request_body("openai/tools-stream-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-length").is_none());
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    let mut received = first.to_vec();
    while let Some(chunk) = body.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    let total = started.elapsed();

    // The first chunk is exactly the first event, and it comes at once.
    assert!(first.ends_with(b"\n\n") && first.windows(2).filter(|w| w == b"\n\n").count() == 1);
    assert!(first_at < pause * 3, "first chunk after {first_at:?}");
    assert!(total >= pause * 10, "whole stream in {total:?}");
    assert_eq!(received, full);

    let outcomes = fake
        .wait_for_stream_outcomes(1, Duration::from_secs(2))
        .await;
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].completed);
    assert_eq!(outcomes[0].events_sent, 11);
}

#[tokio::test]
async fn openai_chunked_stream_notices_early_drop() {
    let fake = FakeProvider::start().await;
    fake.enqueue_chunked("openai/chat-stream", Duration::from_millis(100));

    let resp = client()
        .post(format!("{}/chat/completions", fake.base_url()))
        .json(&json!({"stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(body);

    let outcomes = fake
        .wait_for_stream_outcomes(1, Duration::from_secs(3))
        .await;
    assert_eq!(outcomes.len(), 1, "the server never noticed the drop");
    assert!(!outcomes[0].completed);
    assert_eq!(outcomes[0].label, "openai/chat-stream");
    assert!(outcomes[0].events_sent < outcomes[0].events_total);
}

// -------------------------------------------------------------- OtlpReceiver

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn one_span_request() -> ExportTraceServiceRequest {
    let span = Span {
        trace_id: (1..=16).collect(),
        span_id: vec![0xab; 8],
        parent_span_id: vec![0x0c; 8],
        name: "chat gpt-4o".to_string(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 5_000,
        attributes: vec![
            kv("gen_ai.operation.name", Value::StringValue("chat".into())),
            kv("gen_ai.usage.input_tokens", Value::IntValue(15)),
            kv("gen_ai.request.temperature", Value::DoubleValue(0.5)),
            kv("gen_ai.request.stream", Value::BoolValue(true)),
            kv(
                "gen_ai.response.finish_reasons",
                Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Value::StringValue("stop".into())),
                    }],
                }),
            ),
        ],
        status: Some(Status {
            message: "boom".into(),
            code: StatusCode::Error as i32,
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue("selftest".into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "tracia".into(),
                    version: "0.1.0".into(),
                    ..Default::default()
                }),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn otlp_decodes_protobuf() {
    let receiver = OtlpReceiver::start().await;
    let resp = client()
        .post(receiver.traces_url())
        .header("content-type", "application/x-protobuf")
        .body(one_span_request().encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let answer = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(answer, ExportTraceServiceResponse::default());

    let spans = receiver.wait_for_spans(1, Duration::from_secs(2)).await;
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(span.name, "chat gpt-4o");
    assert!(span.is_client());
    assert_eq!(span.trace_id, "0102030405060708090a0b0c0d0e0f10");
    assert_eq!(span.span_id, "abababababababab");
    assert_eq!(span.parent_span_id, "0c0c0c0c0c0c0c0c");
    assert!(span.is_error());
    assert_eq!(span.status_message, "boom");
    assert_eq!(span.duration_nanos(), 4_000);
    assert_eq!(span.service_name.as_deref(), Some("selftest"));
    assert_eq!(span.scope_name, "tracia");
    assert_eq!(span.attr_str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(span.attr_i64("gen_ai.usage.input_tokens"), Some(15));
    assert_eq!(span.attr_f64("gen_ai.request.temperature"), Some(0.5));
    assert_eq!(span.attr_bool("gen_ai.request.stream"), Some(true));
    assert_eq!(
        span.attr_str_array("gen_ai.response.finish_reasons"),
        Some(vec!["stop".to_string()])
    );
    // Typed getters are strict.
    assert_eq!(span.attr_f64("gen_ai.usage.input_tokens"), None);
    assert_eq!(span.attr_str("missing"), None);
    assert_eq!(receiver.requests_count(), 1);
    assert!(receiver.errors().await.is_empty());

    receiver.forget();
    assert_eq!(receiver.requests_count(), 0);
    assert!(receiver.spans().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_decodes_json() {
    let receiver = OtlpReceiver::start().await;
    // Hand-written OTLP/JSON as exporters send it: hex ids, 64-bit ints as strings.
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
        "scopeSpans": [{
            "scope": {"name": "tracia"},
            "spans": [{
                "traceId": "5B8EFFF798038103D269B633813FC60C",
                "spanId": "eee19b7ec3c1b174",
                "name": "embeddings text-embedding-3-small",
                "kind": 3,
                "startTimeUnixNano": "1544712660000000000",
                "endTimeUnixNano": "1544712661000000000",
                "attributes": [
                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "7"}},
                    {"key": "gen_ai.request.model", "value": {"stringValue": "text-embedding-3-small"}}
                ],
                "status": {}
            }]
        }]
    }]});
    let resp = client()
        .post(receiver.traces_url())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{}");

    let spans = receiver.wait_for_spans(1, Duration::from_secs(2)).await;
    assert_eq!(spans.len(), 1, "errors: {:?}", receiver.errors().await);
    let span = &spans[0];
    assert_eq!(span.trace_id, "5b8efff798038103d269b633813fc60c");
    assert_eq!(span.span_id, "eee19b7ec3c1b174");
    assert_eq!(span.parent_span_id, "");
    assert!(span.is_root());
    assert_eq!(span.status_code, 0);
    assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(span.attr_i64("gen_ai.usage.input_tokens"), Some(7));
    assert_eq!(span.service_name.as_deref(), Some("json-svc"));

    // Garbage is rejected and explained.
    let resp = client()
        .post(receiver.traces_url())
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff, 0xff, 0xff])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(receiver.errors().await.len(), 1);
    assert_eq!(receiver.spans().await.len(), 1);
}

#[tokio::test]
async fn otlp_modes_and_wait_timeout() {
    let receiver = OtlpReceiver::start().await;
    let post = || {
        client()
            .post(receiver.traces_url())
            .header("content-type", "application/x-protobuf")
            .body(one_span_request().encode_to_vec())
    };

    receiver.set_mode(ReceiverMode::Status(503));
    assert_eq!(post().send().await.unwrap().status(), 503);

    receiver.set_mode(ReceiverMode::Hang);
    let err = post()
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    receiver.set_mode(ReceiverMode::Ok);
    receiver.fail_next(1, 429);
    assert_eq!(post().send().await.unwrap().status(), 429);
    assert_eq!(post().send().await.unwrap().status(), 200);

    assert_eq!(receiver.requests_count(), 4);
    // Asking for more than arrived returns what is there after the timeout.
    let started = Instant::now();
    let spans = receiver.wait_for_spans(2, Duration::from_millis(200)).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(spans.len(), 1);
}

/// The servers run on their own thread, so a test thread blocked in
/// synchronous code (like a `force_flush`) cannot starve them.
#[tokio::test]
async fn servers_answer_while_the_test_thread_is_blocked() {
    let receiver = OtlpReceiver::start().await;
    let addr = receiver.addr();
    let body = r#"{"resourceSpans":[]}"#;
    let answer = std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "POST /v1/traces HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    })
    .join() // blocks this current-thread runtime on purpose
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

// ---------------------------------------------------------------- FakeTracia

fn valid_span() -> Json {
    json!({
        "spanId": "sp_0123456789abcdef",
        "traceId": "tr_0123456789abcdef",
        "model": "gpt-4o",
        "provider": "openai",
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "variables": null,
        "output": "hello",
        "status": "SUCCESS",
        "error": null,
        "latencyMs": 12,
        "inputTokens": 3,
        "outputTokens": 2,
        "totalTokens": 5
    })
}

#[tokio::test]
async fn tracia_checks_auth_and_stores_spans() {
    let tracia = FakeTracia::start("tr_test_key").await;
    let http = client();

    let resp = http
        .post(tracia.spans_url())
        .bearer_auth("tr_wrong")
        .json(&valid_span())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let err: Json = resp.json().await.unwrap();
    assert_eq!(
        err,
        json!({"error": {"code": "UNAUTHORIZED", "message": "Invalid API key"}})
    );
    let resp = http
        .post(tracia.spans_url())
        .json(&valid_span())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let resp = http
        .post(format!("{}/api/v1/spans", tracia.base_url()))
        .bearer_auth("tr_test_key")
        .header("user-agent", "tracia-rs-selftest")
        .json(&valid_span())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ok: Json = resp.json().await.unwrap();
    assert_eq!(ok["spanId"], "sp_0123456789abcdef");
    assert_eq!(ok["traceId"], "tr_0123456789abcdef");
    assert_eq!(ok["cost"], Json::Null);
    assert!(ok["id"].is_string());

    let spans = tracia.wait_for_spans(1, Duration::from_secs(2)).await;
    assert_eq!(spans, vec![valid_span()]);
    assert_eq!(check_span_payload(&spans[0]), Ok(()));
    let problems = check_span_payload(&json!({"spanId": "sp_xyz", "status": "DONE"})).unwrap_err();
    assert!(
        problems.iter().any(|p| p.starts_with("spanId")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with("status")),
        "{problems:?}"
    );

    let requests = tracia.requests().await;
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[2].header("user-agent"), Some("tracia-rs-selftest"));
    assert_eq!(
        requests[2].header("authorization"),
        Some("Bearer tr_test_key")
    );

    tracia.forget();
    assert_eq!(tracia.requests_count(), 0);
    assert!(tracia.spans().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracia_outage_modes() {
    let tracia = FakeTracia::start("tr_key").await;
    let post = || {
        client()
            .post(tracia.spans_url())
            .bearer_auth("tr_key")
            .json(&valid_span())
    };

    tracia.set_mode(ReceiverMode::Status(503));
    let resp = post().send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let err: Json = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "SERVICE_UNAVAILABLE");

    tracia.set_mode(ReceiverMode::Hang);
    let err = post()
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    tracia.set_mode(ReceiverMode::Ok);
    tracia.fail_next(2, 500);
    assert_eq!(post().send().await.unwrap().status(), 500);
    assert_eq!(post().send().await.unwrap().status(), 500);
    assert_eq!(post().send().await.unwrap().status(), 200);

    assert_eq!(tracia.requests_count(), 5);
    assert_eq!(tracia.spans().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_server_shuts_it_down() {
    let tracia = FakeTracia::start("k").await;
    let url = tracia.spans_url();
    drop(tracia);
    // Shutdown is asynchronous; it completes well within this window.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = client()
        .post(&url)
        .json(&json!({}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
}

/// Down until it comes up on the same port; `Close` cuts each request unanswered;
/// forced statuses carry `Retry-After` when set; a held (`Hang`) request is cut, not
/// answered, when the mode changes. Both receivers, through one request builder each.
async fn check_outage_modes(
    post: impl Fn() -> reqwest::RequestBuilder,
    come_up: impl AsyncFnOnce(),
    set_mode: impl Fn(ReceiverMode),
    set_retry_after: impl Fn(Option<&str>),
    requests: impl Fn() -> usize,
) {
    let err = post().send().await.unwrap_err();
    assert!(err.is_connect(), "down: connection refused: {err:?}");
    assert_eq!(requests(), 0);
    come_up().await;
    assert_eq!(post().send().await.unwrap().status(), 200);

    set_mode(ReceiverMode::Close);
    let err = post().send().await.unwrap_err();
    assert!(
        err.is_request() && !err.is_timeout(),
        "closed, unanswered: {err:?}"
    );
    // A fresh connection works again.
    set_mode(ReceiverMode::Ok);
    assert_eq!(post().send().await.unwrap().status(), 200);

    set_mode(ReceiverMode::Status(429));
    set_retry_after(Some("3"));
    let resp = post().send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    set_retry_after(None);

    set_mode(ReceiverMode::Hang);
    let held = tokio::spawn(post().send());
    let deadline = Instant::now() + Duration::from_secs(10);
    while requests() < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(requests(), 5, "the held request arrived");
    assert!(!held.is_finished(), "and is held");
    set_mode(ReceiverMode::Ok);
    let err = held.await.unwrap().unwrap_err();
    assert!(
        err.is_request() && !err.is_timeout(),
        "cut when the mode changed: {err:?}"
    );
}

#[tokio::test]
async fn otlp_down_close_retry_after_and_released_hang() {
    let receiver = OtlpReceiver::start_down().await;
    let post = || {
        client()
            .post(receiver.traces_url())
            .header("content-type", "application/x-protobuf")
            .body(one_span_request().encode_to_vec())
    };
    check_outage_modes(
        post,
        async || receiver.come_up().await,
        |m| receiver.set_mode(m),
        |v| receiver.set_retry_after(v),
        || receiver.requests_count(),
    )
    .await;
    assert_eq!(
        receiver.span_ids().len(),
        2,
        "only the two 200s stored a span"
    );
}

#[tokio::test]
async fn tracia_down_close_retry_after_and_released_hang() {
    let tracia = FakeTracia::start_down("tr_key").await;
    let post = || {
        client()
            .post(tracia.spans_url())
            .bearer_auth("tr_key")
            .json(&valid_span())
    };
    check_outage_modes(
        post,
        async || tracia.come_up().await,
        |m| tracia.set_mode(m),
        |v| tracia.set_retry_after(v),
        || tracia.requests_count(),
    )
    .await;
    assert_eq!(
        tracia.spans().await.len(),
        2,
        "only the two 200s stored a span"
    );
}
