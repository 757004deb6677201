//! The real `tracia-collector` binary: every span it acknowledged, after a minute of
//! concurrent exports, survives `kill -9` (SIGKILL, no chance to flush anything) and a
//! restart on the same data directory; malformed and oversized requests, during the
//! load or alone, are refused without stopping it.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;

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

/// How one exporter encodes its requests.
#[derive(Clone, Copy, Debug)]
enum Encoding {
    Protobuf,
    Json,
    GzipProtobuf,
}

/// The body and headers of `request` in `encoding`.
fn encode(
    request: &ExportTraceServiceRequest,
    encoding: Encoding,
) -> (&'static str, bool, Vec<u8>) {
    match encoding {
        Encoding::Protobuf => ("application/x-protobuf", false, request.encode_to_vec()),
        Encoding::Json => (
            "application/json",
            false,
            serde_json::to_vec(request).unwrap(),
        ),
        Encoding::GzipProtobuf => (
            "application/x-protobuf",
            true,
            gzip(&request.encode_to_vec()),
        ),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(bytes).unwrap();
    gzip.finish().unwrap()
}

/// A hostile request sent during the load: what it is, its content type, whether it
/// claims to be gzip, its body, and the statuses it may get.
type Hostile = (&'static str, &'static str, bool, Vec<u8>, &'static [u16]);

/// Hostile requests of every kind: garbage, truncations, lengths that promise far more
/// than is sent, bodies over the limit. Each is refused with a 4xx.
fn hostile_requests() -> Vec<Hostile> {
    let protobuf = "application/x-protobuf";
    // Deterministic garbage (an LCG): not a valid protobuf message.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let garbage: Vec<u8> = (0..4096)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 56) as u8
        })
        .collect();
    let (valid, _) = export(1 << 30, 8);
    let valid = valid.encode_to_vec();
    let mut truncated_gzip = gzip(&valid);
    truncated_gzip.truncate(truncated_gzip.len() / 2);
    // `resource_spans` (field 1, length-delimited) declaring 4 GiB, then 3 bytes.
    let huge_field = [&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f][..], b"abc"].concat();
    // A valid request whose last span's name declares 2 GiB.
    let mut huge_name = valid.clone();
    huge_name.extend_from_slice(&[
        0x0a, 0x0a, 0x12, 0x08, 0x12, 0x06, 0x2a, 0x80, 0x80, 0x80, 0x80, 0x08,
    ]);
    // A length varint that never ends.
    let endless_varint = [&[0x0a][..], &[0xff; 64]].concat();
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![0_u8; tracia_collector::MAX_BODY_BYTES + 1024])
        .unwrap();
    vec![
        ("protobuf garbage", protobuf, false, garbage, &[400]),
        ("truncated gzip", protobuf, true, truncated_gzip, &[400]),
        (
            "a field declaring 4 GiB",
            protobuf,
            false,
            huge_field,
            &[400],
        ),
        (
            "a span name declaring 2 GiB",
            protobuf,
            false,
            huge_name,
            &[400],
        ),
        ("an endless varint", protobuf, false, endless_varint, &[400]),
        (
            "truncated JSON",
            "application/json",
            false,
            b"{\"resourceSpans\": [{\"scopeSpans\": [{\"spans\": [{\"traceId\": \"".to_vec(),
            &[400],
        ),
        ("gzip bomb", protobuf, true, bomb.finish().unwrap(), &[413]),
        (
            "oversized body",
            protobuf,
            false,
            vec![0_u8; tracia_collector::MAX_BODY_BYTES + 1],
            &[413],
        ),
    ]
}

/// A request over a raw connection that declares a 1 TiB body, sends 1 KiB of it and
/// stops sending: the collector must refuse it or give up on it, and go on. Returns
/// the status it answered, if it answered.
async fn huge_content_length(addr: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-protobuf\r\n\
         content-length: {}\r\n\r\n",
        1_u64 << 40
    );
    conn.write_all(head.as_bytes()).await.ok()?;
    conn.write_all(&[0x0a; 1024]).await.ok()?;
    conn.shutdown().await.ok()?;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer));
    let _ = read.await;
    let line = String::from_utf8_lossy(&answer);
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Eight OTLP/HTTP exporters (protobuf, JSON and gzipped protobuf) export concurrently
/// for a minute, so that the writer batches them, while hostile requests (garbage,
/// truncated gzip, huge declared lengths, bodies over the limit) are sent beside them.
/// The collector refuses each of those and keeps running; at the deadline it is killed
/// with SIGKILL while exports are in flight. After a restart on the same data
/// directory, every span of every acknowledged export is there, and the API serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spans_survive_load_and_kill_9() {
    const EXPORTERS: u64 = 8;
    const SPANS_PER_EXPORT: u64 = 20;
    const LOAD: Duration = Duration::from_secs(60);
    /// The exporters stop by this much after the kill at the latest.
    const GRACE: Duration = Duration::from_secs(30);
    let dir = tempfile::tempdir().unwrap();
    let mut collector = Collector::start(dir.path());
    let url = collector.url("/v1/traces");
    let started = Instant::now();
    let deadline = started + LOAD;
    let killed = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));

    let exporters: Vec<_> = (0..EXPORTERS)
        .map(|exporter| {
            let (url, acknowledged, killed) = (url.clone(), acknowledged.clone(), killed.clone());
            let encoding =
                [Encoding::Protobuf, Encoding::Json, Encoding::GzipProtobuf][exporter as usize % 3];
            tokio::spawn(async move {
                // One client (and connection pool) per exporter, as in separate processes.
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .unwrap();
                let mut acked_exports = 0_u64;
                for round in 0.. {
                    if killed.load(Ordering::Acquire) || Instant::now() > deadline + GRACE {
                        break;
                    }
                    let (request, ids) = export(round * EXPORTERS + exporter, SPANS_PER_EXPORT);
                    let (content_type, gzipped, body) = encode(&request, encoding);
                    let mut post = client.post(&url).header("content-type", content_type);
                    if gzipped {
                        post = post.header("content-encoding", "gzip");
                    }
                    match post.body(body).send().await.map(|r| r.status().as_u16()) {
                        Ok(200) => {
                            acknowledged.lock().unwrap().extend(ids);
                            acked_exports += 1;
                        }
                        // Rate limited: not acknowledged; an exporter retries later.
                        Ok(429) => tokio::time::sleep(Duration::from_millis(20)).await,
                        Ok(status) => panic!("{encoding:?} export refused with {status}"),
                        // Killed mid-request: not acknowledged.
                        Err(_) if killed.load(Ordering::Acquire) => break,
                        Err(e) => panic!("{encoding:?} export failed while the collector ran: {e}"),
                    }
                }
                acked_exports
            })
        })
        .collect();

    let hostile = {
        let (url, killed) = (url.clone(), killed.clone());
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches("/v1/traces")
            .to_owned();
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap();
            let requests = hostile_requests();
            let mut sent = 0_u64;
            for round in 0_u64.. {
                if Instant::now() > deadline - Duration::from_secs(2) {
                    break;
                }
                for (what, content_type, gzipped, body, expected) in &requests {
                    // The big ones (64 MiB over the wire or inflated) now and then.
                    if expected.contains(&413) && round % 10 != 0 {
                        continue;
                    }
                    let mut post = client.post(&url).header("content-type", *content_type);
                    if *gzipped {
                        post = post.header("content-encoding", "gzip");
                    }
                    match post
                        .body(body.clone())
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                    {
                        Ok(status) => assert!(expected.contains(&status), "{what}: {status}"),
                        // A server may answer 413 before it has read the whole body and
                        // close the connection, which a client still sending sees as an
                        // error.
                        Err(e) => assert!(expected.contains(&413), "{what}: {e}"),
                    }
                    sent += 1;
                }
                match huge_content_length(&addr).await {
                    None | Some(400 | 413) => sent += 1,
                    Some(status) => panic!("a 1 TiB content-length: {status}"),
                }
                if killed.load(Ordering::Acquire) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            sent
        })
    };

    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(collector.is_running(), "the collector stopped under load");
    }
    let hostile_sent = hostile.await.unwrap();
    assert!(collector.is_running(), "the collector stopped under load");
    killed.store(true, Ordering::Release);
    collector.kill();
    let mut acked_exports = Vec::new();
    for exporter in exporters {
        acked_exports.push(exporter.await.unwrap());
    }
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();
    let total: u64 = acked_exports.iter().sum();
    let stored_bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum();
    eprintln!(
        "{} spans acknowledged in {total} exports ({acked_exports:?} per exporter) over {:?}, \
         {} MiB stored; {hostile_sent} hostile requests refused",
        acknowledged.len(),
        started.elapsed(),
        stored_bytes >> 20,
    );
    assert_eq!(acknowledged.len() as u64, total * SPANS_PER_EXPORT);
    assert!(total >= 300, "only {total} exports acknowledged");
    assert!(acked_exports.iter().all(|&n| n > 0), "{acked_exports:?}");
    assert!(hostile_sent > 0);

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
    let client = reqwest::Client::new();
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
