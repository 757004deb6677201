//! Export throughput: the spans per second the batch pipeline sustains into a null
//! sink (a `SpanExporter` that drops every batch) and into the collector (the real
//! `tracia_collector` app on loopback, its SQLite store in a temporary directory).
//!
//! The spans are copies of a real call's span: one `run_local` against the fake
//! OpenAI server (`openai/chat-1`, content capture on) is recorded once, and the
//! benchmark starts and ends spans with its name, kind, attributes and status through
//! the OpenTelemetry tracer of the pipeline, as fast as the pipeline takes them: the
//! producer waits whenever 1 536 spans are in flight, so the queue (2 048) never
//! overflows. A run ends when every span has been exported (`force_flush`); it fails
//! if any span was lost.
//!
//! - `cargo bench --bench export`: criterion's throughput figures.
//! - `cargo bench --bench export -- --report [null_sink|collector]`: the median of 3
//!   runs per sink, with the process's CPU time and allocations per span, as a markdown
//!   table (the collector runs in this process: its CPU time is counted too).

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::measure::{Probe, Spent, env_count, load_average, median};
use common::servers::{CHAT_FIXTURE, OPENAI_KEY};
use criterion::{Criterion, SamplingMode, Throughput};
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, InMemorySpanExporter, SdkTracerProvider, SpanData, SpanExporter,
};
use tracia::{Provider, RunLocal, TelemetryGuard, Tracia, TraciaIdGenerator};
use tracing_subscriber::layer::SubscriberExt;

/// Spans in flight (produced, not yet exported) before the producer waits.
const WINDOW: u64 = 1_536;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let template = chat_span();
    if let Some(at) = args.iter().position(|a| a == "--report") {
        let only = args.get(at + 1).map(String::as_str);
        let sinks = [Sink::Null, Sink::Collector]
            .into_iter()
            .filter(|s| only.is_none_or(|id| id == s.id() || id.starts_with("--")))
            .collect::<Vec<_>>();
        report(&template, &sinks);
        return;
    }
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .sample_size(10)
        .configure_from_args();
    let mut group = criterion.benchmark_group("export");
    group.sampling_mode(SamplingMode::Flat);
    for sink in [Sink::Null, Sink::Collector] {
        let spans = sink.spans_per_run() / 5;
        group.throughput(Throughput::Elements(spans));
        let pipeline = Pipeline::start(sink);
        group.bench_function(sink.id(), |b| {
            b.iter_custom(|runs| {
                (0..runs)
                    .map(|_| pipeline.pump(&template, spans).wall)
                    .sum()
            })
        });
    }
    group.finish();
    criterion.final_summary();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sink {
    Null,
    Collector,
}

impl Sink {
    fn id(self) -> &'static str {
        match self {
            Sink::Null => "null_sink",
            Sink::Collector => "collector",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Sink::Null => "Batch processor → null exporter",
            Sink::Collector => {
                "`telemetry::builder()` OTLP/HTTP (protobuf) → `tracia-collector` (SQLite, `synchronous=FULL`)"
            }
        }
    }

    fn spans_per_run(self) -> u64 {
        match self {
            Sink::Null => env_count("BENCH_NULL_SPANS", 200_000),
            Sink::Collector => env_count("BENCH_COLLECTOR_SPANS", 50_000),
        }
    }
}

/// A span exporter that drops what it is given, counting it.
#[derive(Debug, Default)]
struct NullExporter {
    exported: Arc<AtomicU64>,
}

impl SpanExporter for NullExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.exported
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// A tracer provider whose batch pipeline ends in a sink, and a way to count the spans
/// that have left it (exported, or given up on).
struct Pipeline {
    provider: SdkTracerProvider,
    /// The null sink's count.
    exported: Arc<AtomicU64>,
    /// The collector's pipeline, whose delivery counts are read instead.
    telemetry: Option<TelemetryGuard>,
    _collector: Option<Collector>,
}

impl Pipeline {
    fn start(sink: Sink) -> Self {
        match sink {
            Sink::Null => {
                let exporter = NullExporter::default();
                let exported = exporter.exported.clone();
                let provider = SdkTracerProvider::builder()
                    .with_id_generator(TraciaIdGenerator)
                    .with_span_processor(BatchSpanProcessor::builder(exporter).build())
                    .build();
                Pipeline {
                    provider,
                    exported,
                    telemetry: None,
                    _collector: None,
                }
            }
            Sink::Collector => {
                let collector = Collector::start();
                let telemetry = tracia::telemetry::builder()
                    .with_service_name("tracia-bench")
                    .with_otlp_traces_endpoint(format!("{}/v1/traces", collector.url))
                    .without_tracia()
                    .build()
                    .expect("the pipeline builds");
                Pipeline {
                    provider: telemetry.provider().expect("enabled").clone(),
                    exported: Arc::default(),
                    telemetry: Some(telemetry),
                    _collector: Some(collector),
                }
            }
        }
    }

    /// Spans out of the pipeline so far.
    fn settled(&self) -> u64 {
        match &self.telemetry {
            Some(telemetry) => telemetry
                .stats()
                .iter()
                .map(|s| s.delivered + s.failed)
                .sum(),
            None => self.exported.load(Ordering::Relaxed),
        }
    }

    /// Produces `n` copies of `template` as fast as the pipeline takes them, and waits
    /// until all are exported.
    fn pump(&self, template: &SpanData, n: u64) -> Spent {
        let tracer = self.provider.tracer("tracia");
        let base = self.settled();
        let probe = Probe::start();
        let mut settled = 0;
        for produced in 0..n {
            // Read the count only when the last one read says the window is full.
            while produced - settled >= WINDOW {
                settled = self.settled() - base;
                if produced - settled >= WINDOW {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            let mut span = tracer
                .span_builder(template.name.clone())
                .with_kind(template.span_kind.clone())
                .with_attributes(template.attributes.clone())
                .start(&tracer);
            span.set_status(template.status.clone());
            span.end();
        }
        // A flush gives up after 5 s (a slow collector, or a profiler's slowdown); the
        // spans are still on their way then, so flush again.
        for _ in 0..60 {
            if self.provider.force_flush().is_ok() && self.settled() - base >= n {
                break;
            }
        }
        let spent = probe.stop();
        let settled = self.settled() - base;
        assert_eq!(settled, n, "every span left the pipeline");
        if let Some(telemetry) = &self.telemetry {
            let failed: u64 = telemetry.stats().iter().map(|s| s.failed).sum();
            assert_eq!(failed, 0, "the collector took every span");
        }
        spent
    }
}

/// The real collector app on `127.0.0.1:0`, on a thread and runtime of its own.
struct Collector {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Collector {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = tracia_collector::store::Store::open(dir.path()).expect("the store opens");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("the collector's runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = tracia_collector::app(tracia_collector::AppState::new(store));
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("the collector serves");
            });
        });
        Collector {
            url,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The span of one real `run_local` call (content capture on), as exported.
fn chat_span() -> SpanData {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_id_generator(TraciaIdGenerator)
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(tracia::telemetry::layer(&provider));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let fake = support::FakeProvider::start().await;
            fake.repeat_fixture(CHAT_FIXTURE);
            let tracia = Tracia::builder()
                .without_env()
                .with_api_key(Provider::OpenAi, OPENAI_KEY)
                .with_base_url(Provider::OpenAi, fake.base_url())
                .with_capture_content(true)
                .build()
                .expect("the client builds");
            let input = RunLocal::new(common::calls::MODEL).user(common::calls::PROMPT);
            tracia.run_local(input).await.expect("run_local");
        })
    });
    provider.force_flush().expect("flush");
    exporter
        .get_finished_spans()
        .expect("finished spans")
        .into_iter()
        .find(|s| s.name.starts_with("chat "))
        .expect("the call's span")
}

fn report(template: &SpanData, sinks: &[Sink]) {
    let runs = env_count("BENCH_ROUNDS", 3);
    println!(
        "Load average (1 min) at start: {}; the median of {runs} runs per sink; spans of {} attributes.\n",
        load_average(),
        template.attributes.len()
    );
    println!("| Pipeline | Spans per run | Spans/s | CPU/span | Allocs/span |");
    println!("|---|---:|---:|---:|---:|");
    for &sink in sinks {
        let n = sink.spans_per_run();
        let pipeline = Pipeline::start(sink);
        pipeline.pump(template, n / 10);
        let spent: Vec<Spent> = (0..runs).map(|_| pipeline.pump(template, n)).collect();
        let rate = median(
            &spent
                .iter()
                .map(|s| n as f64 / s.wall.as_secs_f64())
                .collect::<Vec<_>>(),
        );
        let cpu = median(
            &spent
                .iter()
                .map(|s| s.cpu.as_secs_f64() * 1e6 / n as f64)
                .collect::<Vec<_>>(),
        );
        let allocs = median(&spent.iter().map(|s| s.allocs_per(n)).collect::<Vec<_>>());
        println!(
            "| {} | {n} | {rate:.0} | {cpu:.1} µs | {allocs:.0} |",
            sink.label()
        );
    }
    println!("\nLoad average (1 min) at end: {}.", load_average());
}
