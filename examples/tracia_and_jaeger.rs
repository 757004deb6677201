//! Two backends at once: the same spans exported to Tracia (its REST API) and to an
//! OTLP backend such as Jaeger, from one tracer provider.
//!
//! `tracia::telemetry::builder()` with both an OTLP endpoint and a Tracia key builds one
//! `SdkTracerProvider` with a batch processor (its own queue and thread) per backend, so
//! a slow or unreachable backend never holds up the other. Jaeger gets every span (the
//! app's `handle_question` and the LLM call); Tracia gets the LLM call (GenAI spans
//! only), with the same span and trace ids. After the flush the program prints the ids
//! and, per backend, how many spans were delivered, failed or skipped.
//!
//! Run Jaeger all-in-one (UI on http://localhost:16686, OTLP/HTTP on 4318), then the
//! example with your Tracia key:
//!
//! ```not_rust
//! docker run --rm -d --name jaeger -e COLLECTOR_OTLP_ENABLED=true \
//!   -p 16686:16686 -p 4318:4318 jaegertracing/all-in-one:latest
//! TRACIA_API_KEY=tr_... OPENAI_API_KEY=sk-... \
//!   cargo run --example tracia_and_jaeger -- [--model M] [PROMPT]
//! ```
//!
//! No Tracia account? `tracia-collector` speaks Tracia's REST API: run it beside Jaeger
//! on other ports (without `--api-key` any key is accepted) and point the Tracia side at
//! it; its UI is on http://127.0.0.1:4320:
//!
//! ```not_rust
//! cargo run -p tracia-collector -- --http-addr 127.0.0.1:4320 --grpc-addr 127.0.0.1:4321
//! TRACIA_BASE_URL=http://127.0.0.1:4320 TRACIA_API_KEY=local OPENAI_API_KEY=sk-... \
//!   cargo run --example tracia_and_jaeger
//! ```
//!
//! `OTEL_EXPORTER_OTLP_ENDPOINT` picks another OTLP backend (default
//! `http://localhost:4318`, Jaeger's); `TRACIA_BASE_URL` another Tracia API (default
//! `https://app.tracia.io`); `OPENAI_BASE_URL` any OpenAI-compatible server.

use std::process::ExitCode;

use tracia::{RunLocal, RunResult, Tracia};
use tracing::instrument;

const USAGE: &str = "usage: tracia_and_jaeger [--model MODEL] [PROMPT...]";
const JAEGER_OTLP: &str = "http://localhost:4318";

#[tokio::main]
async fn main() -> ExitCode {
    let mut model = "gpt-4o-mini".to_owned();
    let mut words = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--model" => match args.next() {
                Some(m) => model = m,
                None => return usage("--model needs a value"),
            },
            "--" => words.extend(args.by_ref()),
            flag if flag.starts_with('-') => return usage(&format!("unknown flag: {flag}")),
            _ => words.push(arg),
        }
    }
    let prompt = if words.is_empty() {
        "Name one benefit of distributed tracing, in one sentence.".to_owned()
    } else {
        words.join(" ")
    };
    match run(&model, &prompt).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("{msg}\n{USAGE}");
    ExitCode::from(2)
}

async fn run(model: &str, prompt: &str) -> Result<(), Box<dyn std::error::Error>> {
    let otlp_endpoint =
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_else(|_| JAEGER_OTLP.into());
    let tracia_key = std::env::var("TRACIA_API_KEY")
        .map_err(|_| "set TRACIA_API_KEY (any value for a local tracia-collector)")?;

    // Both backends, configured in code: one provider, one batch processor each.
    // (`TRACIA_BASE_URL` is read from the environment, as everything not set here.)
    let telemetry = tracia::telemetry::builder()
        .with_service_name("tracia-and-jaeger")
        .with_otlp_endpoint(&otlp_endpoint)
        .with_tracia_api_key(tracia_key)
        .on_export_failure(|f| eprintln!("{}: lost {} spans: {}", f.exporter, f.spans, f.reason))
        .init()?;

    let tracia = Tracia::from_env()?;
    let outcome = handle_question(&tracia, model, prompt).await;
    if let Ok(result) = &outcome {
        println!("{}", result.text);
        println!("span_id={} trace_id={}", result.span_id, result.trace_id);
    }

    // Waits until both backends have had every span (a failed call's span too).
    telemetry.flush().await;
    for s in telemetry.stats() {
        // One line per backend, e.g. `otlp: delivered=2 failed=0 skipped=0 queued=2`
        // (Tracia skips the app's span: it takes GenAI spans only).
        println!(
            "{}: delivered={} failed={} skipped={} queued={}",
            s.exporter, s.delivered, s.failed, s.skipped, s.queued
        );
    }
    if otlp_endpoint == JAEGER_OTLP {
        println!("Jaeger UI: http://localhost:16686, service tracia-and-jaeger");
    }
    telemetry.shutdown().await;
    outcome.map(drop).map_err(Into::into)
}

/// The app's span; the LLM call inside is its child, in both backends.
#[instrument(skip_all, fields(model = model))]
async fn handle_question(
    tracia: &Tracia,
    model: &str,
    prompt: &str,
) -> Result<RunResult, tracia::Error> {
    let input = RunLocal::new(model)
        .system("You are a concise assistant.")
        .user(prompt);
    tracia.run_local(input).await
}
