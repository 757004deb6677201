//! The real `tracia-collector` binary: every span it acknowledged survives `kill -9`
//! (SIGKILL, no chance to flush anything) and a restart on the same data directory;
//! malformed and oversized requests are refused without stopping it.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use tokio::sync::mpsc;

/// A running collector, killed (SIGKILL) when dropped.
struct Collector {
    child: Child,
    base: String,
}

impl Collector {
    /// Starts the binary on a free loopback port over `data_dir`, and waits until it
    /// has opened its store.
    fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tracia-collector"))
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tracia-collector");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut base = None;
        for line in lines.by_ref() {
            let line = line.expect("read the collector's stdout");
            if let Some(rest) = line.strip_prefix("tracia-collector listening: OTLP/HTTP ") {
                let url = rest.split('/').take(3).collect::<Vec<_>>().join("/");
                base = Some(url);
            }
            if line.starts_with("store: ") {
                break;
            }
        }
        // It prints a line per GenAI span: keep reading so that it never blocks on a
        // full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            base: base.expect("the collector printed its listening line"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn text(s: &str) -> any_value::Value {
    any_value::Value::StringValue(s.into())
}

/// Export number `n`: a trace of `spans` spans, every other one a GenAI chat span.
/// Returns the request and the stored ids of its spans.
fn export(n: u64, spans: u64) -> (ExportTraceServiceRequest, Vec<String>) {
    let trace_id = [&[0_u8; 8][..], &(n + 1).to_be_bytes()[..]].concat();
    let mut ids = Vec::new();
    let spans = (0..spans)
        .map(|i| {
            let id = (n << 16) | (i + 1);
            ids.push(format!("sp_{id:016x}"));
            let start = 1_767_225_600_000_000_000 + n * 1_000_000_000 + i * 1000;
            let mut attributes = vec![kv("export.number", any_value::Value::IntValue(n as i64))];
            if i % 2 == 1 {
                attributes.extend([
                    kv("gen_ai.operation.name", text("chat")),
                    kv("gen_ai.provider.name", text("openai")),
                    kv("gen_ai.request.model", text("gpt-4o-mini")),
                    kv("gen_ai.usage.input_tokens", any_value::Value::IntValue(12)),
                    kv("gen_ai.usage.output_tokens", any_value::Value::IntValue(3)),
                    kv("session.id", text(&format!("session-{}", n % 7))),
                ]);
            }
            Span {
                trace_id: trace_id.clone(),
                span_id: id.to_be_bytes().to_vec(),
                parent_span_id: if i == 0 {
                    Vec::new()
                } else {
                    ((n << 16) | 1).to_be_bytes().to_vec()
                },
                name: if i % 2 == 1 {
                    "chat gpt-4o-mini"
                } else {
                    "step"
                }
                .into(),
                kind: 1,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 500,
                attributes,
                ..Span::default()
            }
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", text("durability-test"))],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    };
    (request, ids)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::StatusCode> {
    client
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .map(|r| r.status())
}

/// Every span id in the store, read straight from its SQLite file.
fn stored_span_ids(data_dir: &Path) -> HashSet<String> {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join(tracia_collector::store::DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn.prepare("SELECT span_id FROM spans").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Senders export concurrently (so that the writer batches them) with a malformed
/// request now and then; once enough exports are acknowledged the collector is killed
/// with SIGKILL while others are still in flight. After a restart on the same data
/// directory, every span of every acknowledged export is there, and the API serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spans_survive_kill_9() {
    const SENDERS: u64 = 8;
    const SPANS_PER_EXPORT: u64 = 20;
    const ACKED_BEFORE_KILL: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path());
    let url = collector.url("/v1/traces");
    let client = reqwest::Client::new();

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let (acked_tx, mut acked_rx) = mpsc::unbounded_channel::<()>();
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (client, url, acknowledged, acked_tx) = (
                client.clone(),
                url.clone(),
                acknowledged.clone(),
                acked_tx.clone(),
            );
            tokio::spawn(async move {
                for round in 0.. {
                    if round % 10 == 9 {
                        // Not protobuf: refused, and the collector goes on.
                        match post(&client, &url, "application/x-protobuf", vec![0xff; 64]).await {
                            Ok(status) => assert_eq!(status, 400),
                            Err(_) => return, // killed
                        }
                    }
                    let (request, ids) = export(round * SENDERS + sender, SPANS_PER_EXPORT);
                    let sent = post(
                        &client,
                        &url,
                        "application/x-protobuf",
                        request.encode_to_vec(),
                    )
                    .await;
                    match sent {
                        Ok(status) if status == 200 => {
                            acknowledged.lock().unwrap().extend(ids);
                            let _ = acked_tx.send(());
                        }
                        Ok(status) => panic!("export refused with {status}"),
                        Err(_) => return, // killed mid-request: not acknowledged
                    }
                }
            })
        })
        .collect();
    for _ in 0..ACKED_BEFORE_KILL {
        acked_rx.recv().await.unwrap();
    }
    collector.kill();
    for sender in senders {
        sender.await.unwrap();
    }
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= ACKED_BEFORE_KILL * SPANS_PER_EXPORT as usize);

    let mut restarted = Collector::start(dir.path());
    let stored = stored_span_ids(dir.path());
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged spans were lost, e.g. {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );
    // The restarted collector serves them, and takes more.
    let listed: serde_json::Value = client
        .get(restarted.url("/api/v1/spans?limit=100"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["spans"].as_array().unwrap().len(), 100);
    let (request, ids) = export(1 << 20, 3);
    let status = post(
        &client,
        &restarted.url("/v1/traces"),
        "application/x-protobuf",
        request.encode_to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        ids.iter()
            .all(|id| stored_span_ids(dir.path()).contains(id))
    );
    assert!(restarted.is_running());
}

/// What is sent, its content type and encoding, the body and the expected status.
type BadRequest = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    u16,
);

/// Bad input of every kind gets its 4xx, the collector keeps running, and a valid
/// export right after is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_are_refused_and_the_collector_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut collector = Collector::start(dir.path());
    let url = collector.url("/v1/traces");
    let client = reqwest::Client::new();
    let protobuf = "application/x-protobuf";

    // Just over the 64 MiB limit.
    let oversized = vec![0_u8; tracia_collector::MAX_BODY_BYTES + 1];
    // A gzip body of 100 KiB that inflates past the limit.
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gzip.write_all(&vec![0_u8; tracia_collector::MAX_BODY_BYTES + 1024])
        .unwrap();
    let bomb = gzip.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let (valid, ids) = export(7, 4);
    let mut truncated = valid.encode_to_vec();
    truncated.truncate(truncated.len() / 2);

    let cases: Vec<BadRequest> = vec![
        ("garbage protobuf", protobuf, None, vec![0xff; 100], 400),
        ("truncated protobuf", protobuf, None, truncated, 400),
        (
            "malformed JSON",
            "application/json",
            None,
            b"{\"resourceSpans\": [".to_vec(),
            400,
        ),
        (
            "wrong JSON shape",
            "application/json",
            None,
            b"{\"resourceSpans\": 3}".to_vec(),
            400,
        ),
        (
            "unsupported media type",
            "text/plain",
            None,
            b"hello".to_vec(),
            415,
        ),
        ("oversized body", protobuf, None, oversized, 413),
        ("gzip bomb", protobuf, Some("gzip"), bomb, 413),
        (
            "broken gzip",
            protobuf,
            Some("gzip"),
            b"not gzip at all".to_vec(),
            400,
        ),
    ];
    for (what, content_type, encoding, body, expected) in cases {
        let mut request = client.post(&url).header("content-type", content_type);
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        let status = request.body(body).send().await.map(|r| r.status().as_u16());
        // A server may answer 413 before it has read the whole body and close the
        // connection, which a client still sending can see as a send error.
        match status {
            Ok(status) => assert_eq!(status, expected, "{what}"),
            Err(e) => assert_eq!(expected, 413, "{what}: {e}"),
        }
        assert!(
            collector.is_running(),
            "the collector stopped after: {what}"
        );
    }

    let status = post(&client, &url, protobuf, valid.encode_to_vec())
        .await
        .unwrap();
    assert_eq!(status, 200);
    let health = client.get(collector.url("/healthz")).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    let stored = stored_span_ids(dir.path());
    assert_eq!(stored, ids.into_iter().collect::<HashSet<_>>());
}
