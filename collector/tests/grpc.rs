//! OTLP/gRPC ingestion with a real tonic client, in process and through the binary.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use serde_json::Value;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tracia_collector::forward::Forwarder;
use tracia_collector::{app, grpc};

mod common;
use common::{PARENT_ID, SPAN_ID, TRACE_ID, chat_span, export_request, hex, kv, list_spans};
#[path = "../../tests/support/mod.rs"]
mod support;
use support::OtlpReceiver;

async fn client(url: String) -> TraceServiceClient<Channel> {
    TraceServiceClient::connect(url)
        .await
        .unwrap()
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip)
}

async fn export(
    client: &mut TraceServiceClient<Channel>,
    request: ExportTraceServiceRequest,
) -> ExportTraceServiceResponse {
    client.export(request).await.unwrap().into_inner()
}

#[tokio::test]
async fn grpc_export_is_stored_listed_and_forwarded() {
    let receiver = OtlpReceiver::start().await;
    let forwarder = Forwarder::builder()
        .otlp(receiver.base_url())
        .build()
        .unwrap();
    let (_dir, state) = common::test_state();
    let state = state.with_forwarder(forwarder);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(grpc::serve(listener, state.clone(), std::future::pending()));
    let mut client = client(format!("http://{addr}")).await;

    // A valid span and one with an all-zero trace id: a partial success.
    let response = export(
        &mut client,
        export_request(vec![
            chat_span(&TRACE_ID, &SPAN_ID, &PARENT_ID, false),
            chat_span(&[0; 16], &[5; 8], &[], false),
        ]),
    )
    .await;
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("invalid"), "{partial:?}");

    // 5 MB: beyond tonic's default 4 MiB message limit, as real exporters send.
    let mut big = chat_span(&TRACE_ID, &[6; 8], &PARENT_ID, false);
    big.attributes.push(kv(
        "gen_ai.input.messages",
        any_value::Value::StringValue("x".repeat(5_000_000)),
    ));
    let response = export(&mut client, export_request(vec![big])).await;
    assert_eq!(response, ExportTraceServiceResponse::default());

    let app = app(state);
    let spans = list_spans(&app, "").await;
    let ids: Vec<_> = spans.iter().map(|s| s["spanId"].clone()).collect();
    assert_eq!(ids, ["sp_0606060606060606", "sp_00f067aa0ba902b7"]);
    let span = &spans[1];
    assert_eq!(span["traceId"], "tr_4bf92f3577b34da6");
    assert_eq!(span["parentSpanId"], "sp_53995c3f42cd8ad8");
    assert_eq!(span["model"], "gpt-4o");
    assert_eq!(span["serviceName"], "checkout");
    assert_eq!(span["totalTokens"], 15);

    // The same path as OTLP/HTTP: forwarded as received.
    let forwarded = receiver.wait_for_spans(3, Duration::from_secs(20)).await;
    let mut ids: Vec<_> = forwarded.iter().map(|s| s.span_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, [hex(&SPAN_ID), hex(&[5; 8]), hex(&[6; 8])]);
}

/// Runs the binary with `args` and a clean environment; its exit status and stderr.
fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = collector(args, env).output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn collector(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tracia-collector"));
    command.args(args).env("RUST_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("TRACIA_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command
}

/// The URL after `label ` in the listening line, up to the next `,`.
fn url_after<'a>(line: &'a str, label: &str) -> &'a str {
    let rest = &line[line.find(label).unwrap() + label.len() + 1..];
    rest.split(',').next().unwrap()
}

/// Stops the collector it started even when an assertion fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_http_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let mut child = Running(
        collector(
            &[
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
                "--data-dir",
                data_dir,
            ],
            &[],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    // Read on, so that the span lines it prints can be checked too.
    let stdout = child.0.stdout.take().unwrap();
    let (line_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The span lines, after the listening line and the store's path.
    let next_line = || lines.recv_timeout(Duration::from_secs(20)).unwrap();
    let line = next_line();
    assert!(next_line().starts_with("store: "));
    assert!(line.starts_with("tracia-collector listening: "), "{line}");
    let traces_url = url_after(&line, "OTLP/HTTP");
    let grpc_url = url_after(&line, "OTLP/gRPC");
    let http_base = traces_url.strip_suffix("/v1/traces").unwrap();
    assert_ne!(traces_url, grpc_url);

    let mut client = client(grpc_url.to_owned()).await;
    let response = export(
        &mut client,
        export_request(vec![chat_span(&TRACE_ID, &SPAN_ID, &[], false)]),
    )
    .await;
    assert_eq!(response, ExportTraceServiceResponse::default());
    assert_eq!(
        next_line(),
        "span sp_00f067aa0ba902b7 trace tr_4bf92f3577b34da6 LLM gpt-4o 812ms 15 tokens SUCCESS"
    );

    let http = reqwest::Client::new();
    let list: Value = http
        .get(format!("{http_base}/api/v1/spans"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["spans"][0]["spanId"], "sp_00f067aa0ba902b7");
    let status = http
        .get(format!("{http_base}/api/ui/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), StatusCode::OK);
    let status: Value = status.json().await.unwrap();
    assert_eq!(status["forwarding"], serde_json::json!([]));

    // SIGTERM stops both servers and the process exits cleanly.
    let pid = child.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let exit = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn the_binary_refuses_bad_configuration() {
    let (code, stderr) = run_to_end(&["--grpc-addr", "0.0.0.0:4317"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("0.0.0.0:4317") && stderr.contains("loopback"),
        "{stderr}"
    );

    let (code, stderr) = run_to_end(&["--forward-tracia"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("TRACIA_API_KEY"), "{stderr}");

    let (code, stderr) = run_to_end(&["--forward-otlp", "collector:4318"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--forward-otlp"), "{stderr}");

    let (code, stderr) = run_to_end(
        &["--forward-tracia"],
        &[
            ("TRACIA_API_KEY", "tr_secret_key"),
            ("TRACIA_BASE_URL", "app.tracia.io"),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("TRACIA_BASE_URL"), "{stderr}");
    assert!(!stderr.contains("tr_secret_key"), "{stderr}");
}

#[tokio::test]
async fn grpc_needs_the_api_key_once_keys_are_set() {
    let (_dir, state) = common::test_state();
    let keys = tracia_collector::security::ApiKeys::new(["k-grpc-0123"]).unwrap();
    let state = state.with_api_keys(keys);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(grpc::serve(listener, state.clone(), std::future::pending()));
    let mut client = client(format!("http://{addr}")).await;
    let request = || export_request(vec![chat_span(&TRACE_ID, &SPAN_ID, &[], false)]);

    let refused = client.export(request()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(request());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        client.export(wrong).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    assert!(common::stored(&state).await.is_empty(), "nothing stored");

    let mut keyed = tonic::Request::new(request());
    keyed
        .metadata_mut()
        .insert("authorization", "Bearer k-grpc-0123".parse().unwrap());
    client.export(keyed).await.unwrap();
    assert_eq!(common::stored(&state).await.len(), 1);
}

/// Sends a message's bytes as they are (valid or not), as a gRPC `Export`.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(
            bytes::Buf::copy_to_bytes(src, bytes::Buf::remaining(src)).to_vec(),
        ))
    }
}

/// Exports `body` as raw message bytes, with `key` as bearer token if any.
async fn export_raw(addr: std::net::SocketAddr, body: Vec<u8>, key: Option<&str>) -> tonic::Status {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(body);
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    let path = axum::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    grpc.unary(request, path, RawCodec)
        .await
        .expect_err("never accepted")
}

#[tokio::test]
async fn grpc_refuses_keyless_messages_before_decoding_them() {
    let (_dir, state) = common::test_state();
    let key = "k-grpc-0123456789";
    let state = state.with_api_keys(tracia_collector::security::ApiKeys::new([key]).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(grpc::serve(listener, state.clone(), std::future::pending()));

    // Bytes that are no protobuf message: with the key, decoding fails; without it,
    // they are never decoded.
    let garbage = vec![0xff; 64];
    let keyed = export_raw(addr, garbage.clone(), Some(key)).await;
    assert_eq!(keyed.code(), tonic::Code::Internal, "{keyed:?}");
    assert!(keyed.message().contains("decode"), "{keyed:?}");
    let keyless = export_raw(addr, garbage, None).await;
    assert_eq!(keyless.code(), tonic::Code::Unauthenticated, "{keyless:?}");

    // Over the decoding limit: refused for its size with the key, for the key without.
    let huge = vec![0xff; tracia_collector::MAX_BODY_BYTES + 1];
    let keyed = export_raw(addr, huge.clone(), Some(key)).await;
    assert_eq!(keyed.code(), tonic::Code::OutOfRange, "{keyed:?}");
    let keyless = export_raw(addr, huge, Some("not-the-key-0123456")).await;
    assert_eq!(keyless.code(), tonic::Code::Unauthenticated, "{keyless:?}");
    assert!(common::stored(&state).await.is_empty());
}
