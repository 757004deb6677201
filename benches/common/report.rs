//! `overhead --report [calls|sequential|streams]`: the measurement pass that criterion does not
//! give: p99 latency, process CPU time and allocations per call, and the ratio to the
//! floor, printed as markdown tables, then the targets met or missed.
//!
//! Each figure is the median of `BENCH_ROUNDS` rounds (default 3); the setups take turns
//! within a round, so a burst of load from another user of the machine hits one round of
//! every setup rather than every round of one. A round warms up, flushes, then measures
//! its calls and the export of their spans (the flush after them is inside the
//! measurement, so the export threads' CPU is counted), and counts the spans of its calls
//! that were not delivered.

use std::time::Duration;

use super::calls::{CONCURRENT_CALLERS, Harness, Setup, StreamKind, StreamSample};
use super::measure::{Probe, delta_us, env_count, load_average, median, percentile, range, us};
use super::servers::{PACE, Servers};

struct Counts {
    rounds: u64,
    sequential: u64,
    concurrent: u64,
    streams: u64,
    paced_streams: u64,
}

impl Counts {
    fn from_env() -> Self {
        Counts {
            rounds: env_count("BENCH_ROUNDS", 3),
            sequential: env_count("BENCH_CALLS", 5_000),
            concurrent: env_count("BENCH_CONCURRENT_CALLS", 20_000),
            streams: env_count("BENCH_STREAMS", 1_000),
            paced_streams: env_count("BENCH_PACED_STREAMS", 300),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sequential,
    Concurrent,
}

impl Mode {
    fn title(self) -> String {
        match self {
            Mode::Sequential => "one caller, calls one after another".into(),
            Mode::Concurrent => format!("{CONCURRENT_CALLERS} concurrent callers"),
        }
    }
}

/// One round of one setup.
#[derive(Clone, Copy)]
struct CallRound {
    median: Duration,
    p99: Duration,
    cpu: Duration,
    allocs: f64,
    bytes: f64,
    calls_per_s: f64,
    /// Spans lost in this round.
    lost: u64,
    /// The fake servers' CPU time per call (same machine, other process).
    servers_cpu: Option<Duration>,
}

#[derive(Clone, Copy)]
struct StreamRound {
    ttft_median: Duration,
    ttft_p99: Duration,
    per_chunk: Duration,
    chunks: u32,
    cpu: Duration,
    allocs: f64,
    lost: u64,
    servers_cpu: Option<Duration>,
}

pub fn run(args: &[String]) {
    let what = args
        .iter()
        .skip_while(|a| *a != "--report")
        .nth(1)
        .map(String::as_str);
    let (modes, streams): (&[Mode], bool) = match what {
        Some("calls") => (&[Mode::Sequential, Mode::Concurrent], false),
        Some("sequential") => (&[Mode::Sequential], false),
        Some("streams") => (&[], true),
        _ => (&[Mode::Sequential, Mode::Concurrent], true),
    };
    let counts = Counts::from_env();
    let servers = Servers::from_env_or_spawn();
    println!(
        "Load average (1 min) at start: {}; {} rounds.\n",
        load_average(),
        counts.rounds
    );
    let mut summary = Vec::new();
    for &mode in modes {
        let rounds = call_rounds(&servers, mode, &counts);
        print_calls(mode, &rounds, &counts, &mut summary);
    }
    if streams {
        for kind in [StreamKind::Burst, StreamKind::Paced] {
            let rounds = stream_rounds(&servers, kind, &counts);
            print_streams(kind, &rounds, &counts, &mut summary);
        }
    }
    println!("Load average (1 min) at end: {}.\n", load_average());
    println!("Targets:");
    for line in &summary {
        println!("- {line}");
    }
}

fn call_rounds(servers: &Servers, mode: Mode, counts: &Counts) -> Vec<(Setup, Vec<CallRound>)> {
    let n = match mode {
        Mode::Sequential => counts.sequential,
        Mode::Concurrent => counts.concurrent,
    };
    let mut rounds: Vec<(Setup, Vec<CallRound>)> =
        Setup::ALL.iter().map(|s| (*s, Vec::new())).collect();
    for _ in 0..counts.rounds {
        for (setup, figures) in &mut rounds {
            let harness = Harness::new(*setup, &servers.endpoints);
            let run = |calls| match mode {
                Mode::Sequential => harness.sequential(calls),
                Mode::Concurrent => harness.concurrent(calls, CONCURRENT_CALLERS),
            };
            run((n / 5).max(200));
            harness.flush();
            let before = harness.delivery();
            let servers_before = servers.cpu();
            let probe = Probe::start();
            let latencies = run(n);
            let calls_wall = probe.stop().wall;
            harness.flush();
            let spent = probe.stop();
            let servers_cpu = per_call(servers_before, servers.cpu(), n);
            let lost = lost_spans(before, harness.delivery(), n);
            figures.push(CallRound {
                median: percentile(&latencies, 50.0),
                p99: percentile(&latencies, 99.0),
                cpu: spent.cpu_per(n),
                allocs: spent.allocs_per(n),
                bytes: spent.bytes_per(n),
                calls_per_s: n as f64 / calls_wall.as_secs_f64(),
                lost,
                servers_cpu,
            });
        }
    }
    rounds
}

fn stream_rounds(
    servers: &Servers,
    kind: StreamKind,
    counts: &Counts,
) -> Vec<(Setup, Vec<StreamRound>)> {
    let n = match kind {
        StreamKind::Burst => counts.streams,
        StreamKind::Paced => counts.paced_streams,
    };
    let mut rounds: Vec<(Setup, Vec<StreamRound>)> =
        Setup::ALL.iter().map(|s| (*s, Vec::new())).collect();
    for _ in 0..counts.rounds {
        for (setup, figures) in &mut rounds {
            let harness = Harness::new(*setup, &servers.endpoints);
            harness.streams(kind, (n / 5).max(50));
            harness.flush();
            let before = harness.delivery();
            let servers_before = servers.cpu();
            let probe = Probe::start();
            let samples = harness.streams(kind, n);
            harness.flush();
            let spent = probe.stop();
            let servers_cpu = per_call(servers_before, servers.cpu(), n);
            let lost = lost_spans(before, harness.delivery(), n);
            let ttft: Vec<Duration> = samples.iter().map(|s| s.first_chunk).collect();
            let per_chunk: Vec<Duration> = samples.iter().map(StreamSample::per_chunk).collect();
            figures.push(StreamRound {
                ttft_median: percentile(&ttft, 50.0),
                ttft_p99: percentile(&ttft, 99.0),
                per_chunk: percentile(&per_chunk, 50.0),
                chunks: samples[0].chunks,
                cpu: spent.cpu_per(n),
                allocs: spent.allocs_per(n),
                lost,
                servers_cpu,
            });
        }
    }
    rounds
}

/// The servers' CPU time per call between two readings.
fn per_call(before: Option<Duration>, after: Option<Duration>, n: u64) -> Option<Duration> {
    Some(after?.saturating_sub(before?) / u32::try_from(n).ok()?)
}

/// The median of the rounds' servers' CPU per call, as a table cell.
fn servers_cell(rounds: &[Option<Duration>]) -> String {
    let known: Vec<f64> = rounds.iter().flatten().map(Duration::as_secs_f64).collect();
    if known.is_empty() {
        return "?".into();
    }
    us(Duration::from_secs_f64(median(&known)))
}

/// Spans of the measured calls that never reached the backend (dropped on a full queue,
/// or refused): the figures of a round that lost some are those of a pipeline that
/// did less than its job, so the tables show the count.
fn lost_spans(before: Option<(u64, u64)>, after: Option<(u64, u64)>, n: u64) -> u64 {
    match (before, after) {
        (Some((d0, l0)), Some((d1, l1))) => (l1 - l0).max(n.saturating_sub(d1 - d0)),
        _ => 0,
    }
}

fn print_calls(
    mode: Mode,
    rounds: &[(Setup, Vec<CallRound>)],
    counts: &Counts,
    summary: &mut Vec<String>,
) {
    let n = match mode {
        Mode::Sequential => counts.sequential,
        Mode::Concurrent => counts.concurrent,
    };
    println!(
        "Non-streaming call (`openai/chat-1`), {}: {n} calls per round.\n",
        mode.title()
    );
    println!(
        "| Setup | Median | p99 | Median vs (1) | CPU/call | CPU over (1) (range of rounds) | Allocs/call | KB alloc./call | Calls/s | Spans lost | Servers' CPU/call |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let floor = summarize_calls(&rounds[0].1);
    for (setup, figures) in rounds {
        let f = summarize_calls(figures);
        let cpu_over: Vec<f64> = figures
            .iter()
            .zip(&rounds[0].1)
            .map(|(r, base)| delta_us(r.cpu, base.cpu))
            .collect();
        let (lo, hi) = range(&cpu_over);
        println!(
            "| {} | {} | {} | {:.3}× | {} | {:+.1} µs ({:+.1} to {:+.1}) | {:.0} | {:.1} | {:.0} | {} | {} |",
            setup.label(),
            us(f.median),
            us(f.p99),
            f.median.as_secs_f64() / floor.median.as_secs_f64(),
            us(f.cpu),
            delta_us(f.cpu, floor.cpu),
            lo,
            hi,
            f.allocs,
            f.bytes / 1024.0,
            f.calls_per_s,
            lost_cell(*setup, f.lost),
            servers_cell(&figures.iter().map(|r| r.servers_cpu).collect::<Vec<_>>()),
        );
        if *setup == Setup::Otlp || *setup == Setup::TraciaRest {
            let cpu = delta_us(f.cpu, floor.cpu);
            let latency = (f.median.as_secs_f64() / floor.median.as_secs_f64() - 1.0) * 100.0;
            summary.push(format!(
                "{} ({}): CPU over the floor {cpu:+.1} µs/call (target ≤ 25 µs: {}); median latency {latency:+.1} % (target ≤ 10 %: {})",
                setup.id(),
                mode.title(),
                verdict(cpu <= 25.0),
                verdict(latency <= 10.0),
            ));
            if f.lost > 0 {
                summary.push(format!(
                    "{} ({}): {} spans of the measured calls were not delivered",
                    setup.id(),
                    mode.title(),
                    f.lost
                ));
            }
            println!(
                "OVERHEAD setup={} mode={} cpu_us={:.1} median_us={:.1} floor_cpu_us={:.1} floor_median_us={:.1} calls_per_s={:.0}",
                setup.id(),
                if mode == Mode::Sequential {
                    "sequential"
                } else {
                    "concurrent"
                },
                cpu,
                delta_us(f.median, floor.median),
                floor.cpu.as_secs_f64() * 1e6,
                floor.median.as_secs_f64() * 1e6,
                f.calls_per_s,
            );
        }
    }
    println!();
}

fn summarize_calls(rounds: &[CallRound]) -> CallRound {
    let pick = |f: fn(&CallRound) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let secs = |f: fn(&CallRound) -> Duration| {
        Duration::from_secs_f64(median(
            &rounds
                .iter()
                .map(|r| f(r).as_secs_f64())
                .collect::<Vec<_>>(),
        ))
    };
    CallRound {
        median: secs(|r| r.median),
        p99: secs(|r| r.p99),
        cpu: secs(|r| r.cpu),
        allocs: pick(|r| r.allocs),
        bytes: pick(|r| r.bytes),
        calls_per_s: pick(|r| r.calls_per_s),
        lost: rounds.iter().map(|r| r.lost).sum(),
        servers_cpu: None,
    }
}

fn print_streams(
    kind: StreamKind,
    rounds: &[(Setup, Vec<StreamRound>)],
    counts: &Counts,
    summary: &mut Vec<String>,
) {
    let chunks = rounds[0].1[0].chunks;
    let burst = kind == StreamKind::Burst;
    if burst {
        println!(
            "Streaming call, burst (`openai/chat-stream`: {chunks} text chunks, the whole body sent at once), one caller: {} streams per round. Per chunk: time from the first chunk to the end, over the other chunks.\n",
            counts.streams
        );
    } else {
        println!(
            "Streaming call, paced (the first event of `openai/chat-stream` at once, then one every {} ms: {chunks} text chunks), one caller: {} streams per round.\n",
            PACE.as_millis(),
            counts.paced_streams
        );
    }
    let per_chunk_header = if burst {
        " Per chunk | Per chunk over (1) |"
    } else {
        ""
    };
    println!(
        "| Setup | TTFT median | TTFT p99 | TTFT over (1) |{per_chunk_header} CPU/stream | CPU over (1) | Allocs/stream | Spans lost | Servers' CPU/stream |"
    );
    println!(
        "|---|---:|---:|---:|{}---:|---:|---:|---:|---:|",
        if burst { "---:|---:|" } else { "" }
    );
    let floor = summarize_streams(&rounds[0].1);
    for (setup, figures) in rounds {
        let f = summarize_streams(figures);
        let ttft_over = delta_us(f.ttft_median, floor.ttft_median);
        let chunk_over_ns = delta_us(f.per_chunk, floor.per_chunk) * 1e3;
        let per_chunk = if burst {
            format!(
                " {:.2} µs | {chunk_over_ns:+.0} ns |",
                f.per_chunk.as_secs_f64() * 1e6
            )
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {} | {ttft_over:+.1} µs |{per_chunk} {} | {:+.1} µs | {:.0} | {} | {} |",
            setup.label(),
            us(f.ttft_median),
            us(f.ttft_p99),
            us(f.cpu),
            delta_us(f.cpu, floor.cpu),
            f.allocs,
            lost_cell(*setup, f.lost),
            servers_cell(&figures.iter().map(|r| r.servers_cpu).collect::<Vec<_>>()),
        );
        if *setup == Setup::Otlp {
            let per_chunk = if burst {
                format!("; per chunk {chunk_over_ns:+.0} ns over the plain SSE read")
            } else {
                String::new()
            };
            summary.push(format!(
                "{} streaming ({}): time to first chunk {ttft_over:+.1} µs (target ≤ 50 µs: {}){per_chunk}",
                setup.id(),
                if burst { "burst" } else { "paced" },
                verdict(ttft_over <= 50.0),
            ));
        }
    }
    println!();
}

fn summarize_streams(rounds: &[StreamRound]) -> StreamRound {
    let secs = |f: fn(&StreamRound) -> Duration| {
        Duration::from_secs_f64(median(
            &rounds
                .iter()
                .map(|r| f(r).as_secs_f64())
                .collect::<Vec<_>>(),
        ))
    };
    StreamRound {
        ttft_median: secs(|r| r.ttft_median),
        ttft_p99: secs(|r| r.ttft_p99),
        per_chunk: secs(|r| r.per_chunk),
        chunks: rounds[0].chunks,
        cpu: secs(|r| r.cpu),
        allocs: median(&rounds.iter().map(|r| r.allocs).collect::<Vec<_>>()),
        lost: rounds.iter().map(|r| r.lost).sum(),
        servers_cpu: None,
    }
}

/// Spans lost over all rounds; nothing to lose untraced.
fn lost_cell(setup: Setup, lost: u64) -> String {
    if setup.traced() {
        lost.to_string()
    } else {
        "–".into()
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}
