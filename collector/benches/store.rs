//! The span store at one million spans: list pages (with each kind of filter and a deep
//! cursor), traces, sessions, one trace, and insert throughput.
//!
//! `cargo bench -p tracia-collector --bench store`
//!
//! The million-span store is built once, through `Store::insert` in batches of 10 000,
//! and kept in `target/bench-data/`: reruns reuse it. Bump [`DATA_VERSION`] when the
//! schema or the generated data change.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use tokio::runtime::Runtime;
use tracia_collector::model::{SpanKind, SpanRecord, SpanStatus};
use tracia_collector::store::{SpanQuery, Store, TraceQuery};

/// Spans in the big store.
const SPANS: u64 = 1_000_000;
/// Spans per trace: a root, an LLM call and three application spans.
const TRACE_SPANS: u64 = 5;
/// Spans per `Store::insert` while building.
const BUILD_BATCH: u64 = 10_000;
/// Spans per `Store::insert` in the throughput benchmark.
const INSERT_BATCH: u64 = 512;
/// The generated data spread over a week, ending at this time (Unix nanoseconds).
const END_NS: i64 = 1_767_225_600_000_000_000;
const WEEK_NS: i64 = 7 * 86_400 * 1_000_000_000;
/// Bumped when the schema or the generator change, so a stale cache is rebuilt.
const DATA_VERSION: u32 = 3;

const MODELS: [(&str, &str); 6] = [
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("o3-mini", "openai"),
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-haiku-4-5", "anthropic"),
    ("gemini-2.5-flash", "google"),
];
/// One trace in 10 000 uses it: a filter that matches almost nothing.
const RARE_MODEL: &str = "gpt-4.1";
const TAGS: [&str; 8] = [
    "prod", "staging", "beta", "eval", "vip", "mobile", "web", "batch",
];
const SESSIONS: u64 = 20_000;
const USERS: u64 = 2_000;
const APP_SPANS: [&str; 3] = ["db.query", "tool search_docs", "render_answer"];

/// A small deterministic generator (SplitMix64), so every build makes the same data.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn base_span(span_id: String, trace: u64, parent: Option<String>, start: i64) -> SpanRecord {
    SpanRecord {
        trace_id: Some(format!("tr_{trace:032x}")),
        parent_span_id: parent,
        service_name: Some(
            if trace.is_multiple_of(3) {
                "worker"
            } else {
                "api"
            }
            .into(),
        ),
        start_unix_nano: start,
        end_unix_nano: start,
        ..SpanRecord::app(span_id, String::new())
    }
}

/// Trace number `n` of the week: an `handle_request` root, an LLM call in a session
/// with a user and tags, and three application spans; the root comes last, as an
/// exporter sends it (it ends last).
fn trace(n: u64, start: i64) -> Vec<SpanRecord> {
    let r = mix(n);
    let span_id = |i: u64| format!("sp_{:016x}", mix(n * TRACE_SPANS + i) | 1);
    let root_id = span_id(0);
    let mut spans = Vec::with_capacity(TRACE_SPANS as usize);
    let (model, provider) = if n % 10_000 == 5_000 {
        (RARE_MODEL, "openai")
    } else {
        MODELS[(r % MODELS.len() as u64) as usize]
    };
    let input_tokens = 200 + (r >> 8) as i64 % 2000;
    let output_tokens = 20 + (r >> 20) as i64 % 600;
    let llm_start = start + 2_000_000;
    let llm_end = llm_start + 300_000_000 + (r >> 32) as i64 % 2_000_000_000;
    let tag_count = (r >> 40) % 3;
    let tags = (0..tag_count)
        .map(|i| TAGS[((r >> (44 + 4 * i)) % TAGS.len() as u64) as usize].to_owned())
        .collect();
    let error = (r >> 50).is_multiple_of(50);
    let mut llm = base_span(span_id(1), n, Some(root_id.clone()), llm_start);
    llm.name = format!("chat {model}");
    llm.kind = SpanKind::Llm;
    llm.end_unix_nano = llm_end;
    llm.provider = Some(provider.into());
    llm.model = Some(model.into());
    llm.input_tokens = input_tokens;
    llm.output_tokens = output_tokens;
    llm.total_tokens = input_tokens + output_tokens;
    llm.cost_usd = Some((input_tokens as f64 * 2.5 + output_tokens as f64 * 10.0) / 1e6);
    llm.session_id = Some(format!("sess_{}", mix(r) % SESSIONS));
    llm.user_id = Some(format!("user_{}", mix(r ^ 1) % USERS));
    llm.tags = tags;
    llm.temperature = Some(0.7);
    llm.max_output_tokens = Some(1024);
    llm.input = Some(json!({"messages": [
        {"role": "system", "content": "You are a helpful assistant for the docs site."},
        {"role": "user", "content": format!("Question {n}: how do I configure the exporter?")},
    ]}));
    llm.output = Some(format!(
        "Answer {n}: set OTEL_EXPORTER_OTLP_ENDPOINT to the collector and restart the service."
    ));
    if error {
        llm.status = SpanStatus::Error;
        llm.error = Some("rate limited (429)".into());
    }
    spans.push(llm);
    for (i, name) in APP_SPANS.iter().enumerate() {
        let i = i as u64 + 2;
        let child_start = llm_end + i as i64 * 1_000_000;
        let mut child = base_span(span_id(i), n, Some(root_id.clone()), child_start);
        child.name = (*name).into();
        child.end_unix_nano = child_start + 800_000;
        child
            .attributes
            .insert("code.function".into(), json!(format!("app::{name}")));
        spans.push(child);
    }
    let mut root = base_span(root_id, n, None, start);
    root.name = "handle_request".into();
    root.end_unix_nano = llm_end + 10_000_000;
    root.attributes
        .insert("http.route".into(), json!("/api/answer"));
    root.attributes
        .insert("http.response.status_code".into(), json!(200));
    spans.push(root);
    spans
}

/// Traces `from..to` of `traces` spread over the week.
fn traces(from: u64, to: u64, traces_total: u64) -> Vec<SpanRecord> {
    let step = WEEK_NS / traces_total as i64;
    (from..to)
        .flat_map(|n| trace(n, END_NS - WEEK_NS + n as i64 * step))
        .collect()
}

fn data_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target
        .join("bench-data")
        .join(format!("store-{SPANS}-v{DATA_VERSION}"))
}

/// The million-span store, built on the first run.
fn big_store(rt: &Runtime) -> Store {
    let dir = data_dir();
    let complete = dir.join("complete");
    if !complete.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).expect("open the bench store");
        let total = SPANS / TRACE_SPANS;
        let per_batch = BUILD_BATCH / TRACE_SPANS;
        let started = Instant::now();
        rt.block_on(async {
            for from in (0..total).step_by(per_batch as usize) {
                let batch = traces(from, (from + per_batch).min(total), total);
                store.insert(batch).await.expect("insert");
            }
        });
        let took = started.elapsed();
        eprintln!(
            "built {SPANS} spans in {took:.1?} ({:.0} spans/s in batches of {BUILD_BATCH})",
            SPANS as f64 / took.as_secs_f64()
        );
        drop(store);
        std::fs::write(&complete, b"").expect("mark the bench store complete");
    }
    Store::open(&dir).expect("open the bench store")
}

fn queries(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let store = big_store(&rt);
    let run = |query: SpanQuery| {
        let page = rt.block_on(store.list_spans(query)).unwrap();
        assert!(!page.items.is_empty());
        page
    };
    let some = |s: &str| Some(s.to_owned());
    // A real cursor from the middle of the week (half a million spans deep).
    let deep_cursor = run(SpanQuery {
        end_unix_nano: Some(END_NS - WEEK_NS / 2),
        ..SpanQuery::default()
    })
    .next_cursor;
    let a_session = run(SpanQuery::default())
        .items
        .iter()
        .find_map(|s| s.session_id.clone());
    let a_trace = run(SpanQuery::default()).items[0].trace_id.clone().unwrap();

    let mut group = c.benchmark_group("list_spans (1M spans, page of 50)");
    let span_queries = [
        ("first page", SpanQuery::default()),
        (
            "session filter",
            SpanQuery {
                session_id: a_session,
                ..SpanQuery::default()
            },
        ),
        (
            "model filter",
            SpanQuery {
                model: some("claude-haiku-4-5"),
                ..SpanQuery::default()
            },
        ),
        (
            "rare model filter",
            SpanQuery {
                model: some(RARE_MODEL),
                ..SpanQuery::default()
            },
        ),
        (
            "tag filter",
            SpanQuery {
                tags: vec!["vip".into()],
                ..SpanQuery::default()
            },
        ),
        (
            "two tags (AND)",
            SpanQuery {
                tags: vec!["vip".into(), "beta".into()],
                ..SpanQuery::default()
            },
        ),
        (
            "deep page (cursor)",
            SpanQuery {
                cursor: deep_cursor,
                ..SpanQuery::default()
            },
        ),
    ];
    for (name, query) in span_queries {
        group.bench_function(name, |b| b.iter(|| run(query.clone())));
    }
    group.finish();

    let mut group = c.benchmark_group("traces (200k traces, page of 50)");
    let trace_queries = [
        ("first page", TraceQuery::default(), 50),
        (
            "model filter",
            TraceQuery {
                model: some("claude-haiku-4-5"),
                ..TraceQuery::default()
            },
            50,
        ),
        (
            "rare model filter",
            TraceQuery {
                model: some(RARE_MODEL),
                ..TraceQuery::default()
            },
            20,
        ),
        (
            "user filter",
            TraceQuery {
                user_id: some("user_7"),
                ..TraceQuery::default()
            },
            50,
        ),
        (
            "tag filter",
            TraceQuery {
                tag: some("vip"),
                ..TraceQuery::default()
            },
            50,
        ),
    ];
    for (name, query, expected) in trace_queries {
        group.bench_function(name, |b| {
            b.iter(|| {
                let page = rt.block_on(store.traces(query.clone())).unwrap();
                assert_eq!(page.items.len(), expected);
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("other reads (1M spans)");
    group.bench_function("sessions first page", |b| {
        b.iter(|| {
            let page = rt.block_on(store.sessions(None, None)).unwrap();
            assert_eq!(page.items.len(), 50);
        })
    });
    group.bench_function("trace(id) (5 spans)", |b| {
        b.iter(|| {
            let spans = rt.block_on(store.trace(&a_trace)).unwrap();
            assert_eq!(spans.len(), TRACE_SPANS as usize);
        })
    });
    group.finish();
}

fn inserts(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let mut group = c.benchmark_group("insert (empty store, batches of 512)");
    // Traces per batch, the last one cut short to make exactly 512 spans.
    let per_batch = INSERT_BATCH.div_ceil(TRACE_SPANS);
    // One exporter: each batch is its own commit. Several at once: the writer
    // commits what has queued up together.
    for writers in [1_u64, 8] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let next = AtomicU64::new(0);
        group.throughput(Throughput::Elements(INSERT_BATCH * writers));
        group.bench_with_input(
            BenchmarkId::new("concurrent writers", writers),
            &writers,
            |b, &writers| {
                b.iter_custom(|iters| {
                    let mut took = Duration::ZERO;
                    for _ in 0..iters {
                        let batches: Vec<Vec<SpanRecord>> = (0..writers)
                            .map(|_| {
                                let from = next.fetch_add(per_batch, Ordering::Relaxed);
                                let mut batch = traces(from, from + per_batch, 1 << 20);
                                batch.truncate(INSERT_BATCH as usize);
                                batch
                            })
                            .collect();
                        let started = Instant::now();
                        rt.block_on(async {
                            let inserts = batches.into_iter().map(|batch| {
                                let store = store.clone();
                                tokio::spawn(async move { store.insert(batch).await })
                            });
                            for insert in inserts.collect::<Vec<_>>() {
                                insert.await.unwrap().unwrap();
                            }
                        });
                        took += started.elapsed();
                    }
                    took
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = queries, inserts
}
criterion_main!(benches);
