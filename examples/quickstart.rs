//! Quickstart: one traced LLM call, from setup to flushed spans.
//!
//! Sets up the OpenTelemetry pipeline with `tracia::telemetry::init()`, makes one
//! `run_local` call (or `run_local_stream` with `--stream`), prints the answer and, as the
//! last line, `span_id=sp_… trace_id=tr_…` so you can find the call in your backend.
//!
//! Run with a local collector (spans go to `http://localhost:4318` by default):
//!
//! ```not_rust
//! cargo run -p tracia-collector
//! OPENAI_API_KEY=sk-... cargo run --example quickstart -- [--model M] [--stream] [PROMPT]
//! ```
//!
//! Other setups, all by environment:
//! - `OTEL_EXPORTER_OTLP_ENDPOINT=http://host:4318`: another OTLP backend (Jaeger, …);
//! - `TRACIA_API_KEY=...`: also export to Tracia (only to Tracia, if no OTLP endpoint is set);
//! - `OPENAI_BASE_URL=http://127.0.0.1:8080/v1`: any OpenAI-compatible server;
//! - `OTEL_SDK_DISABLED=true`: no export at all (the call still works).

use std::io::Write as _;
use std::process::ExitCode;

use futures::StreamExt as _;
use tracia::{RunLocal, RunResult, Tracia};

const USAGE: &str = "usage: quickstart [--model MODEL] [--stream] [PROMPT...]";

struct Args {
    model: String,
    stream: bool,
    prompt: String,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        model: "gpt-4o-mini".to_owned(),
        stream: false,
        prompt: "Say hello in five words.".to_owned(),
    };
    let mut words = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--stream" => parsed.stream = true,
            "--model" => parsed.model = args.next().ok_or("--model needs a value")?,
            // Everything after `--` is prompt, even if it starts with a dash.
            "--" => words.extend(args.by_ref()),
            flag if flag.starts_with('-') => return Err(format!("unknown flag: {flag}")),
            _ => words.push(arg),
        }
    }
    if !words.is_empty() {
        parsed.prompt = words.join(" ");
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    // Installs the `tracing` subscriber and the exporters. Keep the guard alive: dropping
    // it flushes and shuts the pipeline down.
    let telemetry = tracia::telemetry::init()?;
    let outcome = call(args).await;
    if let Ok(result) = &outcome {
        for call in &result.tool_calls {
            println!("tool call {} {}({})", call.id, call.name, call.arguments);
        }
        println!("span_id={} trace_id={}", result.span_id, result.trace_id);
    }

    // Spans are exported in batches in the background; a short-lived program must flush
    // before exiting. A failed call's span is flushed too: errors are worth seeing.
    telemetry.flush().await;
    for stats in telemetry.stats().iter().filter(|s| s.lost() > 0) {
        let (name, lost, queued) = (stats.exporter, stats.lost(), stats.queued);
        eprintln!("{name}: {lost} of {queued} spans not delivered (is the backend running?)");
    }
    outcome.map(drop)
}

async fn call(args: &Args) -> Result<RunResult, Box<dyn std::error::Error>> {
    // Reads OPENAI_API_KEY, OPENAI_BASE_URL and the other provider settings.
    let tracia = Tracia::from_env()?;
    let input = RunLocal::new(&args.model)
        .system("You are a concise assistant. Answer in one or two sentences.")
        .user(args.prompt.as_str());

    if !args.stream {
        let result = tracia.run_local(input).await?;
        println!("{}", result.text);
        return Ok(result);
    }

    let mut stream = tracia.run_local_stream(input).await?;
    let mut stdout = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        print!("{}", chunk?);
        // Without a flush, stdout's line buffering would hide the chunks until the end.
        stdout.flush()?;
    }
    println!();
    // The whole result: usage and tool calls are only known once the stream has ended.
    Ok(stream.finish().await?)
}
