//! Instrumenting a web service: an axum app whose own spans and its LLM calls form one
//! trace, continuing the caller's trace and conversation when the request carries them.
//!
//! `POST /ask` takes `{"question": "..."}` and answers `{"answer", "span_id",
//! "trace_id"}` (the LLM call's ids, in Tracia form). Each request gives this trace:
//!
//! ```text
//! POST /ask               SERVER span of `TraceContextLayer`, child of the request's
//! └─ ask                  `traceparent` if any; the handler, `#[instrument]`
//!    └─ answer            the helper, `#[instrument]`
//!       └─ chat MODEL     CLIENT span of `run_local`
//! ```
//!
//! W3C baggage `session.id` / `user.id` on the request lands on the LLM call as its
//! `session.id` / `user.id`, with no code in the handler.
//!
//! Run with a local collector (spans go to `http://localhost:4318` by default; open it
//! in a browser to see the traces), the app on port 3000 (`--port` or `PORT`; `0` picks
//! a free one), then ask:
//!
//! ```not_rust
//! cargo run -p tracia-collector
//! OPENAI_API_KEY=sk-... cargo run --example instrument_app -- [--port 3000] [--model M]
//! curl -s http://127.0.0.1:3000/ask -H 'content-type: application/json' \
//!   -d '{"question": "What is a span?"}'
//! # Continuing a caller's trace and conversation:
//! curl -s http://127.0.0.1:3000/ask -H 'content-type: application/json' \
//!   -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
//!   -H 'baggage: session.id=conv_9,user.id=user_42' \
//!   -d '{"question": "And a trace?"}'
//! ```
//!
//! Ctrl-C (or SIGTERM) stops the server gracefully: in-flight requests finish, then the
//! telemetry guard flushes the last spans. The other settings (`TRACIA_API_KEY` to also
//! export to Tracia, `OTEL_EXPORTER_OTLP_ENDPOINT`, `OPENAI_BASE_URL`, …) come from the
//! environment, as in the `quickstart` example.

use std::future::Future;
use std::io::Write as _;
use std::process::ExitCode;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracia::propagation::TraceContextLayer;
use tracia::{ErrorCode, RunLocal, RunResult, Tracia};
use tracing::instrument;

const USAGE: &str = "usage: instrument_app [--port PORT] [--model MODEL]";

struct Args {
    port: u16,
    model: String,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let port = |text: &str| {
        text.parse::<u16>()
            .map_err(|_| format!("not a port number: {text}"))
    };
    let mut parsed = Args {
        port: match std::env::var("PORT") {
            Ok(text) if !text.is_empty() => port(&text)?,
            _ => 3000,
        },
        model: "gpt-4o-mini".to_owned(),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => parsed.port = port(&args.next().ok_or("--port needs a value")?)?,
            "--model" => parsed.model = args.next().ok_or("--model needs a value")?,
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(parsed)
}

/// What the handlers share. `Tracia` is a cheap handle: clone it freely.
#[derive(Clone)]
struct App {
    tracia: Tracia,
    model: String,
}

#[derive(Deserialize)]
struct Ask {
    question: String,
}

#[derive(Serialize)]
struct Answer {
    answer: String,
    span_id: String,
    trace_id: String,
}

type ApiError = (StatusCode, Json<serde_json::Value>);

/// `POST /ask`. Its span is the child of the SERVER span of `TraceContextLayer`.
#[instrument(skip_all)]
async fn ask(State(app): State<App>, Json(ask): Json<Ask>) -> Result<Json<Answer>, ApiError> {
    let result = answer(&app, &ask.question).await.map_err(|e| {
        // Error messages are scrubbed of keys: safe to log and to return.
        tracing::warn!(error = %e, "the LLM call failed");
        let status = match e.code() {
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        let body = json!({ "error": { "code": e.code().as_str(), "message": e.message() } });
        (status, Json(body))
    })?;
    Ok(Json(Answer {
        answer: result.text,
        span_id: result.span_id,
        trace_id: result.trace_id,
    }))
}

/// The app's own logic around the call; the LLM call's span is this span's child.
/// The question is content: only its length goes on this span (the LLM span keeps the
/// messages, unless content capture is switched off).
#[instrument(skip_all, fields(model = %app.model, question.chars = question.chars().count()))]
async fn answer(app: &App, question: &str) -> Result<RunResult, tracia::Error> {
    let input = RunLocal::new(&app.model)
        .system("You are a concise assistant. Answer in one or two sentences.")
        .user(question);
    app.tracia.run_local(input).await
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
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Code wins over the environment: name the service only when OTEL_SERVICE_NAME
    // does not.
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "instrument-app".into());
    let telemetry = tracia::telemetry::builder()
        .with_service_name(service)
        .init()?;
    let app = App {
        tracia: Tracia::from_env()?,
        model: args.model,
    };
    let router = Router::new()
        .route("/ask", post(ask))
        // `Router::layer`: the matched route (`/ask`) names the SERVER span.
        .layer(TraceContextLayer::new())
        .with_state(app);

    // Listen for the signals before saying we are up, so that a signal sent right after
    // the line below is never missed (the default action would skip the flush).
    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;

    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;

    // Exports what is still queued, then stops the pipeline (dropping the guard would
    // do both too).
    telemetry.flush().await;
    for s in telemetry.stats().iter().filter(|s| s.lost() > 0) {
        let (name, lost, queued) = (s.exporter, s.lost(), s.queued);
        eprintln!("{name}: {lost} of {queued} spans not delivered (is the backend running?)");
    }
    telemetry.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send).
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
