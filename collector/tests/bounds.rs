//! Bounded work per request: a hostile span (a 61 KB gzip body that inflates to 63 MiB
//! of control characters, as the amplification attack sent it) is stored truncated,
//! within a stated bound, and read back bounded; a big export does not hold the writer
//! while a small one waits.

use std::path::Path;
use std::time::Duration;

use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::Value;
use tracia_collector::limits::{Limits, TRUNCATED_ATTRIBUTE};
use tracia_collector::{AppState, app};

mod common;
use common::{
    SPAN_ID, TRACE_ID, app_span, body_bytes, chat_span_with_messages, export_request, hex, post,
    string,
};

/// Bytes of control characters in the hostile span's attribute: the body stays just
/// under the 64 MiB limit once decompressed.
const HOSTILE_BYTES: usize = 63 * 1024 * 1024;

/// A deadlock guard, not a speed check.
const GUARD: Duration = Duration::from_secs(300);

/// The stated bound on what one hostile span may add to the store (database, WAL and
/// shared memory files): its stored JSON is capped at 1 MiB, its columns at a few KiB,
/// and SQLite writes a page twice (WAL, then the database at a checkpoint).
const STORED_BOUND: u64 = 4 * 1024 * 1024;

/// The stated bound on a read-back body: a stored span's JSON is at most 1 MiB, and a
/// REST or UI answer re-escapes nothing it did not store.
const READ_BOUND: usize = 2 * 1024 * 1024;

fn hostile_request() -> ExportTraceServiceRequest {
    let mut span = chat_span_with_messages(&SPAN_ID);
    let control = "\u{1}".repeat(HOSTILE_BYTES);
    span.attributes
        .retain(|kv| kv.key != "gen_ai.input.messages");
    span.attributes
        .push(string("gen_ai.input.messages", &control));
    export_request(vec![span])
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Posts the hostile request gzipped, with a small export posted at the same time;
/// returns the bytes posted, the decompressed size and the store's growth.
async fn post_hostile(dir: &Path, state: &AppState) -> (usize, usize, u64) {
    let app = app(state.clone());
    let body = hostile_request().encode_to_vec();
    let gzipped = gzip(&body);
    let before = dir_size(dir);
    let hostile = tokio::spawn({
        let app = app.clone();
        let gzipped = gzipped.clone();
        async move {
            post(&app, "application/x-protobuf", true, gzipped)
                .await
                .status()
        }
    });
    // Another exporter's small request, sent while the hostile one is being handled.
    let small = export_request(vec![app_span(&[9; 8])]).encode_to_vec();
    let small = tokio::time::timeout(GUARD, post(&app, "application/x-protobuf", false, small))
        .await
        .expect("a small export is answered while a hostile one is handled");
    assert_eq!(small.status(), StatusCode::OK);
    let hostile = tokio::time::timeout(GUARD, hostile).await.unwrap().unwrap();
    assert_eq!(hostile, StatusCode::OK);
    (gzipped.len(), body.len(), dir_size(dir) - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_gzipped_span_is_stored_truncated_and_read_back_bounded() {
    let (dir, state) = common::test_state();
    let (sent, decompressed, grown) = post_hostile(dir.path(), &state).await;
    println!(
        "sent {sent} bytes gzipped, {decompressed} decompressed; the store grew by {grown} bytes"
    );
    assert!(sent < 100 * 1024, "the attack's body is small: {sent}");
    assert!(
        grown <= STORED_BOUND,
        "stored {grown} bytes for {decompressed} received"
    );

    // The stored span notes what was cut, and the marker stands in the value.
    let app = app(state.clone());
    let span_id = format!("sp_{}", hex(&SPAN_ID));
    let response = common::get(&app, &format!("/api/v1/spans/{span_id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = body_bytes(response).await;
    assert!(
        body.len() <= READ_BOUND,
        "REST span of {} bytes",
        body.len()
    );
    let record = state.store.get_span(&span_id).await.unwrap().unwrap();
    let cut = &record.attributes[TRUNCATED_ATTRIBUTE];
    assert!(cut["values"].as_u64().unwrap() >= 1, "{cut}");
    assert!(
        cut["bytes"].as_u64().unwrap()
            >= (HOSTILE_BYTES - Limits::default().max_value_bytes) as u64,
        "{cut}"
    );
    let messages = record.attributes["gen_ai.input.messages"].as_str().unwrap();
    assert!(
        messages.contains("…[truncated "),
        "{}",
        &messages[messages.len() - 40..]
    );

    // The UI's trace, with the span's attributes.
    let trace_id = record.trace_id.clone().unwrap();
    let response = common::get(&app, &format!("/api/ui/traces/{trace_id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = body_bytes(response).await;
    assert!(body.len() <= READ_BOUND, "UI trace of {} bytes", body.len());
    assert!(String::from_utf8_lossy(&body).contains(TRUNCATED_ATTRIBUTE));

    // The collector counts it.
    let response = common::get(&app, "/api/ui/status").await;
    let status: Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(status["truncated"]["spans"], 1, "{status}");
    assert!(
        status["truncated"]["bytes"].as_u64().unwrap() > 0,
        "{status}"
    );
}

/// What the collector stored for the hostile span before the bounds: run with
/// `cargo test -p tracia-collector --test bounds -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: stores hundreds of MB"]
async fn unbounded_amplification() {
    let (dir, state) = common::test_state();
    let unbounded = Limits {
        max_value_bytes: usize::MAX,
        max_name_bytes: usize::MAX,
        max_span_bytes: usize::MAX,
        max_attributes: usize::MAX,
        max_events: usize::MAX,
        ..Limits::default()
    };
    let state = state.with_limits(unbounded);
    let started = std::time::Instant::now();
    let (sent, decompressed, grown) = post_hostile(dir.path(), &state).await;
    println!(
        "unbounded: sent {sent} bytes gzipped, {decompressed} decompressed; the store grew by {grown} bytes in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_attributes_and_events_are_capped_and_counted() {
    let (_dir, state) = common::test_state();
    let limits = Limits {
        max_attributes: 8,
        max_events: 2,
        ..Limits::default()
    };
    let state = state.with_limits(limits);
    let mut span = app_span(&SPAN_ID);
    span.attributes = (0..20).map(|i| string(&format!("a.{i}"), "v")).collect();
    span.events = (0..5)
        .map(|i| opentelemetry_proto::tonic::trace::v1::span::Event {
            name: format!("e{i}"),
            ..Default::default()
        })
        .collect();
    let body = export_request(vec![span]).encode_to_vec();
    let response = post(&app(state.clone()), "application/x-protobuf", false, body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let record = state
        .store
        .get_span(&format!("sp_{}", hex(&SPAN_ID)))
        .await
        .unwrap()
        .unwrap();
    // 8 kept, then the note.
    assert_eq!(
        record
            .attributes
            .keys()
            .filter(|k| k.starts_with("a."))
            .count(),
        8
    );
    assert_eq!(
        record.attributes["otel.events"].as_array().unwrap().len(),
        2
    );
    assert_eq!(record.attributes[TRUNCATED_ATTRIBUTE]["dropped"], 12 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_export_is_committed_while_a_big_one_is_being_written() {
    let (_dir, state) = common::test_state();
    // Small chunks, so that the big export takes many commits.
    let state = state.with_limits(Limits {
        write_spans: 10,
        ..Limits::default()
    });
    let app = app(state.clone());
    let spans: Vec<Span> = (1..=2000_u64)
        .map(|i| {
            let mut span = app_span(&i.to_be_bytes());
            span.trace_id = TRACE_ID.to_vec();
            span
        })
        .collect();
    let big = export_request(spans).encode_to_vec();
    let big = tokio::spawn({
        let app = app.clone();
        async move {
            post(&app, "application/x-protobuf", false, big)
                .await
                .status()
        }
    });
    // Once the big export's first chunk is committed, it is being written.
    let first = format!("sp_{}", hex(&1_u64.to_be_bytes()));
    tokio::time::timeout(GUARD, async {
        while state.store.get_span(&first).await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the big export starts being stored");
    let small = export_request(vec![app_span(&[0xee; 8])]).encode_to_vec();
    let small = tokio::time::timeout(GUARD, post(&app, "application/x-protobuf", false, small))
        .await
        .expect("the small export is answered");
    assert_eq!(small.status(), StatusCode::OK);
    assert!(
        !big.is_finished(),
        "the small export waited for the whole big one"
    );
    assert_eq!(
        tokio::time::timeout(GUARD, big).await.unwrap().unwrap(),
        StatusCode::OK
    );
    let last = format!("sp_{}", hex(&2000_u64.to_be_bytes()));
    assert!(state.store.get_span(&last).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_span_over_grpc_is_stored_truncated() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use tonic::codec::CompressionEncoding;

    let (dir, state) = common::test_state();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tracia_collector::grpc::serve(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    let mut client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .send_compressed(CompressionEncoding::Gzip);
    let before = dir_size(dir.path());
    tokio::time::timeout(GUARD, client.export(hostile_request()))
        .await
        .unwrap()
        .unwrap();
    let grown = dir_size(dir.path()) - before;
    assert!(grown <= STORED_BOUND, "stored {grown} bytes");
    let span_id = format!("sp_{}", hex(&SPAN_ID));
    let record = state.store.get_span(&span_id).await.unwrap().unwrap();
    assert!(
        record.attributes[TRUNCATED_ATTRIBUTE]["bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_rest_span_is_stored_bounded() {
    let (dir, state) = common::test_state();
    let app = app(state.clone());
    // 1.5 MiB of control characters: 9 MiB of JSON, under the 10 MiB body limit.
    let output = "\u{1}".repeat(3 * 512 * 1024);
    let body = serde_json::json!({
        "spanId": "sp_00f067aa0ba902b7", "model": "gpt-4o", "output": output,
        "traceId": format!("tr_{}", "f".repeat(4096)),
    });
    let before = dir_size(dir.path());
    let request = axum::http::Request::post("/api/v1/spans")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let response = tower::ServiceExt::oneshot(app.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let grown = dir_size(dir.path()) - before;
    assert!(grown <= STORED_BOUND, "stored {grown} bytes");
    let record = state
        .store
        .get_span("sp_00f067aa0ba902b7")
        .await
        .unwrap()
        .unwrap();
    assert!(record.output.unwrap().starts_with("…[truncated "));
    assert!(record.trace_id.unwrap().len() < 1100);
    assert_eq!(record.attributes[TRUNCATED_ATTRIBUTE]["values"], 2);
}
