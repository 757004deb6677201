//! Forwarding: received spans go on to OTLP receivers and Tracia, without ever holding
//! up ingestion, and what cannot be delivered is counted.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use prost::Message as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use tracia_collector::forward::{ForwardOptions, Forwarder, tracia_payload};
use tracia_collector::{app, otlp};

mod common;
use common::{
    PARENT_ID, SPAN_ID, TRACE_ID, app_span, body_bytes, chat_span, chat_span_with_messages,
    embeddings_span, export_request, hex, post,
};
#[path = "../../tests/support/mod.rs"]
mod support;
use support::{FakeTracia, OtlpReceiver, ReceiverMode, check_span_payload};

const WAIT: Duration = Duration::from_secs(20);
const TRACIA_KEY: &str = "tr_collector_forward_test";

/// Quick retries, so that tests settle fast.
fn quick() -> ForwardOptions {
    ForwardOptions {
        initial_backoff: Duration::from_millis(10),
        ..ForwardOptions::default()
    }
}

/// `GET /api/ui/status`'s forwarding counts.
async fn forwarding(app: &axum::Router) -> Vec<Value> {
    let request = Request::get("/api/ui/status").body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let status: Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    status["forwarding"].as_array().unwrap().clone()
}

/// The forwarding counts once nothing is pending (or after [`WAIT`]; the caller asserts).
async fn settled(app: &axum::Router) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let targets = forwarding(app).await;
        if targets.iter().all(|t| t["pending"] == 0) || Instant::now() >= deadline {
            return targets;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counts(target: &Value) -> [u64; 4] {
    ["pending", "forwarded", "failed", "dropped"].map(|k| target[k].as_u64().unwrap())
}

#[tokio::test]
async fn otlp_targets_receive_the_same_spans() {
    let receiver = OtlpReceiver::start().await;
    // Both URL forms: a base URL gets /v1/traces appended, a traces URL is used as is.
    let forwarder = Forwarder::builder()
        .otlp(receiver.base_url())
        .otlp(receiver.traces_url())
        .options(quick())
        .build()
        .unwrap();
    let (_dir, state) = common::test_state();
    let app = app(state.with_forwarder(forwarder));

    let first = export_request(vec![
        chat_span(&TRACE_ID, &SPAN_ID, &PARENT_ID, false),
        app_span(&PARENT_ID),
    ]);
    let response = post(&app, "application/x-protobuf", false, first.encode_to_vec()).await;
    assert_eq!(response.status(), StatusCode::OK);
    // A JSON request is forwarded too, as protobuf.
    let second = export_request(vec![chat_span(&TRACE_ID, &[9; 8], &PARENT_ID, true)]);
    let response = post(
        &app,
        "application/json",
        false,
        serde_json::to_vec(&second).unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let targets = settled(&app).await;
    let url = receiver.traces_url();
    assert_eq!(
        targets,
        [
            json!({"target": format!("otlp {url}"), "pending": 0, "forwarded": 3, "failed": 0, "dropped": 0}),
            json!({"target": format!("otlp {url}"), "pending": 0, "forwarded": 3, "failed": 0, "dropped": 0}),
        ]
    );

    let spans = receiver.wait_for_spans(6, WAIT).await;
    assert_eq!(receiver.errors().await, Vec::<String>::new());
    let mut ids: Vec<_> = spans.iter().map(|s| s.span_id.clone()).collect();
    ids.sort();
    let sent = [hex(&SPAN_ID), hex(&PARENT_ID), hex(&[9; 8])];
    let mut expected: Vec<String> = sent.iter().chain(&sent).cloned().collect();
    expected.sort();
    assert_eq!(ids, expected);
    for span in &spans {
        assert_eq!(span.trace_id, hex(&TRACE_ID));
        assert_eq!(span.service_name.as_deref(), Some("checkout"));
    }
    let chat = spans.iter().find(|s| s.span_id == hex(&SPAN_ID)).unwrap();
    assert_eq!(chat.parent_span_id, hex(&PARENT_ID));
    assert_eq!(chat.attr_str("gen_ai.request.model"), Some("gpt-4o"));
    assert_eq!(chat.attr_i64("gen_ai.usage.input_tokens"), Some(10));
    let failed = spans.iter().find(|s| s.span_id == hex(&[9; 8])).unwrap();
    assert!(failed.is_error());
    assert_eq!(failed.status_message, "rate limited");
    for request in receiver.requests().await {
        assert_eq!(request.path, "/v1/traces");
        assert_eq!(
            request.header("content-type"),
            Some("application/x-protobuf")
        );
    }
}

#[tokio::test]
async fn tracia_receives_genai_spans_as_tracia_payloads() {
    let tracia = FakeTracia::start(TRACIA_KEY).await;
    // One outage answer first: the upload is retried.
    tracia.fail_next(1, 503);
    let forwarder = Forwarder::builder()
        .tracia(tracia.base_url(), TRACIA_KEY)
        .options(quick())
        .build()
        .unwrap();
    let (_dir, state) = common::test_state();
    let app = app(state.with_forwarder(forwarder));

    let request = export_request(vec![
        chat_span_with_messages(&SPAN_ID),
        embeddings_span(&[7; 8]),
        app_span(&PARENT_ID),
    ]);
    let response = post(
        &app,
        "application/x-protobuf",
        false,
        request.encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let targets = settled(&app).await;
    assert_eq!(targets.len(), 1);
    assert_eq!(
        targets[0]["target"],
        format!("tracia {}", tracia.spans_url())
    );
    // The APP span is not for Tracia.
    assert_eq!(counts(&targets[0]), [0, 2, 0, 0]);

    let payloads = tracia.wait_for_spans(2, WAIT).await;
    assert_eq!(payloads.len(), 2);
    for payload in &payloads {
        assert_eq!(check_span_payload(payload), Ok(()), "{payload}");
    }
    let chat = payloads
        .iter()
        .find(|p| p["spanId"] == "sp_00f067aa0ba902b7")
        .unwrap();
    assert_eq!(chat["traceId"], "tr_4bf92f3577b34da6");
    assert_eq!(chat["parentSpanId"], "sp_53995c3f42cd8ad8");
    assert_eq!(chat["model"], "gpt-4o");
    assert_eq!(chat["provider"], "openai");
    assert_eq!(chat["status"], "SUCCESS");
    assert_eq!(chat["latencyMs"], 812);
    assert_eq!(chat["inputTokens"], 10);
    assert_eq!(chat["outputTokens"], 5);
    assert_eq!(chat["totalTokens"], 15);
    assert_eq!(
        chat["input"],
        json!({"messages": [{"role": "user", "content": "Hi"}]})
    );
    assert_eq!(chat["output"], "Hello!");
    assert_eq!(chat.get("spanKind"), None, "chat spans leave the kind out");

    let embeddings = payloads
        .iter()
        .find(|p| p["spanId"] == "sp_0707070707070707")
        .unwrap();
    assert_eq!(embeddings["spanKind"], "EMBEDDING");
    assert_eq!(embeddings["model"], "text-embedding-3-small");
    assert_eq!(embeddings["input"], json!({"text": ["hello"]}));
    assert_eq!(embeddings["inputTokens"], 4);
    assert_eq!(embeddings["latencyMs"], 120);

    let requests = tracia.requests().await;
    assert_eq!(
        requests.len(),
        3,
        "one refused upload, retried, and one more"
    );
    for request in &requests {
        assert_eq!(request.path, "/api/v1/spans");
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {TRACIA_KEY}").as_str())
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
    }
}

#[tokio::test]
async fn a_target_that_is_down_costs_ingestion_nothing_and_its_losses_are_counted() {
    // A port nothing listens on any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let forwarder = Forwarder::builder()
        .otlp(format!("http://{closed}"))
        .options(ForwardOptions {
            max_attempts: 2,
            ..quick()
        })
        .build()
        .unwrap();
    let (_dir, state) = common::test_state();
    let state = state.with_forwarder(forwarder);
    let app = app(state.clone());

    for n in 1..=5u8 {
        let request = export_request(vec![chat_span(&TRACE_ID, &[n; 8], &[], false)]);
        let response = post(
            &app,
            "application/x-protobuf",
            false,
            request.encode_to_vec(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(common::stored(&state).await.len(), 5);

    let targets = settled(&app).await;
    let [pending, forwarded, failed, dropped] = counts(&targets[0]);
    assert_eq!((pending, forwarded), (0, 0), "{targets:?}");
    assert!(failed >= 1, "{targets:?}");
    assert_eq!(failed + dropped, 5, "{targets:?}");
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let tracia = FakeTracia::start(TRACIA_KEY).await;
    // The first upload never gets an answer, so the queue never empties.
    tracia.set_mode(ReceiverMode::Hang);
    let request = |n: u8| export_request(vec![chat_span(&TRACE_ID, &[n; 8], &[], false)]);
    // Room for exactly one payload (they all have the same size).
    let (records, _, _) = otlp::records(&request(1), &Default::default());
    let one = serde_json::to_vec(&tracia_payload(&records[0]).unwrap())
        .unwrap()
        .len();
    let forwarder = Forwarder::builder()
        .tracia(tracia.base_url(), TRACIA_KEY)
        .options(ForwardOptions {
            queue_bytes: one,
            timeout: Duration::from_secs(600),
            ..quick()
        })
        .build()
        .unwrap();
    let (_dir, state) = common::test_state();
    let state = state.with_forwarder(forwarder);
    let app = app(state.clone());

    for n in 1..=10u8 {
        // Generous: only a hang (ingestion waiting on the target) could exceed it.
        let response = tokio::time::timeout(
            WAIT,
            post(
                &app,
                "application/x-protobuf",
                false,
                request(n).encode_to_vec(),
            ),
        )
        .await
        .expect("ingestion does not wait for a forwarding target");
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(common::stored(&state).await.len(), 10);
    let targets = forwarding(&app).await;
    assert_eq!(counts(&targets[0]), [1, 0, 0, 9], "{targets:?}");
}
