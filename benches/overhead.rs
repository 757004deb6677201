//! What tracing costs a call: the same chat call (a fake OpenAI server on loopback
//! replaying `openai/chat-1`, or `openai/chat-stream`) made by plain `reqwest`, by
//! `run_local` with no subscriber, and by `run_local` traced and exported by OTLP/HTTP
//! or to Tracia's REST API; one caller at a time and 64 concurrent callers.
//!
//! - `cargo bench --bench overhead`: criterion's medians.
//! - `cargo bench --bench overhead -- --report [calls|sequential|streams]`: p99, CPU time
//!   and allocations per call, as markdown tables (see `common/report.rs`).
//! - `cargo bench --bench overhead -- --serve-fake`: only the fake servers, printing
//!   their URLs (`compare_python.sh` points both SDKs at them; setting the printed
//!   `BENCH_*_URL` variables makes the modes above use them too).
//! - `cargo bench --bench overhead -- --profile SETUP_ID`: only sequential calls of one
//!   setup, for `valgrind --tool=callgrind` (see BENCHMARKS.md).

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::{Duration, Instant};

use common::calls::{CONCURRENT_CALLERS, Harness, Setup, StreamKind};
use common::servers::{Endpoints, Servers};
use criterion::{Criterion, Throughput};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--serve-fake") {
        common::servers::serve_fake();
        return;
    }
    if args.iter().any(|a| a == "--report") {
        common::report::run(&args);
        return;
    }
    if let Some(setup) = flag_value(&args, "--profile") {
        profile(setup);
        return;
    }
    let servers = Servers::from_env_or_spawn();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    calls(&mut criterion, &servers.endpoints);
    streams(&mut criterion, &servers.endpoints);
    criterion.final_summary();
}

/// `--profile SETUP_ID`: only `BENCH_CALLS` (default 20 000) sequential calls of one
/// setup, for a profiler (`valgrind --tool=callgrind`, `perf record`) to look at; streamed
/// calls with `BENCH_PROFILE_STREAMS=burst` (or `paced`).
fn profile(id: &str) {
    let setup = Setup::ALL
        .into_iter()
        .find(|s| s.id() == id)
        .unwrap_or_else(|| panic!("--profile takes one of {:?}", Setup::ALL.map(Setup::id)));
    let servers = Servers::from_env_or_spawn();
    let harness = Harness::new(setup, &servers.endpoints);
    let calls = common::measure::env_count("BENCH_CALLS", 20_000);
    let streams = std::env::var("BENCH_PROFILE_STREAMS").ok();
    if let Some(kind) = streams {
        let kind = if kind == "paced" {
            StreamKind::Paced
        } else {
            StreamKind::Burst
        };
        harness.streams(kind, calls);
    } else {
        harness.sequential(calls);
    }
    harness.flush();
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1).map(String::as_str)
}

/// Per call: its latency one at a time, and wall time per call (1 / throughput) with
/// 64 callers in flight.
fn calls(c: &mut Criterion, endpoints: &Endpoints) {
    let mut group = c.benchmark_group("call_sequential");
    for setup in Setup::ALL {
        let harness = Harness::new(setup, endpoints);
        group.bench_function(setup.id(), |b| {
            b.iter(|| harness.runtime.block_on(harness.caller.call()))
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("call_{CONCURRENT_CALLERS}_concurrent"));
    group.throughput(Throughput::Elements(1));
    for setup in Setup::ALL {
        let harness = Harness::new(setup, endpoints);
        group.bench_function(setup.id(), |b| {
            b.iter_custom(|calls| {
                let start = Instant::now();
                harness.concurrent(calls, CONCURRENT_CALLERS);
                start.elapsed()
            })
        });
    }
    group.finish();
}

/// Streamed calls: time to the first text chunk and to the end of the stream (burst),
/// and to the first text chunk of a paced stream.
fn streams(c: &mut Criterion, endpoints: &Endpoints) {
    let kinds = [
        ("stream_first_chunk", StreamKind::Burst, true),
        ("stream_whole", StreamKind::Burst, false),
        ("stream_paced_first_chunk", StreamKind::Paced, true),
    ];
    for (name, kind, first_only) in kinds {
        let mut group = c.benchmark_group(name);
        for setup in Setup::ALL {
            let harness = Harness::new(setup, endpoints);
            group.bench_function(setup.id(), |b| {
                b.iter_custom(|streams| {
                    harness
                        .streams(kind, streams)
                        .iter()
                        .map(|s| if first_only { s.first_chunk } else { s.total })
                        .sum()
                })
            });
        }
        group.finish();
    }
}
