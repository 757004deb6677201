//! Service A of the propagation pair: calls service B (`propagation_server.rs`) over HTTP
//! for a two-turn chat, so that both processes' spans form one trace.
//!
//! The `conversation` span carries the chat's `session.id` and `user.id` as W3C baggage
//! (`propagation::set_conversation`); each `ask` span is a CLIENT span whose
//! `traceparent`, `tracestate` and baggage go out with the request
//! (`propagation::with_trace_headers`). On B, the request's SERVER span is the child of
//! `ask`, and B's LLM calls carry A's session and user. The last line printed is
//! `trace_id=… session_id=…`, to find the trace in your backend.
//!
//! Run it against service B, both exporting to a local collector:
//!
//! ```not_rust
//! cargo run -p tracia-collector
//! OPENAI_API_KEY=sk-... cargo run --example propagation_server -- --port 3001
//! cargo run --example propagation_client -- --server http://127.0.0.1:3001 [--session ID]
//! ```

use opentelemetry::trace::TraceContextExt as _;
use serde::Deserialize;
use serde_json::json;
use tracia::Message;
use tracia::propagation;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

const USAGE: &str = "usage: propagation_client [--server URL] [--session ID] [--user ID]";

#[derive(Deserialize)]
struct Reply {
    answer: String,
    span_id: String,
}

/// One turn: a CLIENT span around the request to B, with the trace headers on it.
#[tracing::instrument(skip(http, history), fields(otel.kind = "client"))]
async fn ask(
    http: &reqwest::Client,
    server: &str,
    history: &[Message],
    message: &str,
) -> Result<Reply, Box<dyn std::error::Error>> {
    let request = http
        .post(format!("{server}/chat"))
        .json(&json!({ "history": history, "message": message }));
    let response = propagation::with_trace_headers(request)
        .send()
        .await?
        .error_for_status()?;
    // B names the LLM span of this turn in the `traceparent` it sends back.
    if let Some(position) = response.headers().get("traceparent") {
        println!("  B's position: {}", position.to_str().unwrap_or("?"));
    }
    Ok(response.json().await?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut server = "http://127.0.0.1:3001".to_owned();
    let (mut session_id, mut user_id) = ("conv_demo".to_owned(), "user_demo".to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--server", Some(url)) => server = url.trim_end_matches('/').to_owned(),
            ("--session", Some(id)) => session_id = id,
            ("--user", Some(id)) => user_id = id,
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }

    let telemetry = tracia::telemetry::init()?;
    let http = reqwest::Client::new();
    let conversation = tracing::info_span!("conversation");
    propagation::set_conversation(&conversation, Some(&session_id), Some(&user_id));
    let trace_id = conversation.context().span().span_context().trace_id();

    let turns = [
        "My name is Ada. Say hi in one sentence.",
        "What is my name?",
    ];
    let mut history = Vec::new();
    for (i, message) in turns.into_iter().enumerate() {
        // Called inside `conversation`, so that `ask` is its child.
        let reply = async { ask(&http, &server, &history, message).await }
            .instrument(conversation.clone())
            .await?;
        println!(
            "turn {}: {} (B's span {})",
            i + 1,
            reply.answer,
            reply.span_id
        );
        history.push(Message::user(message));
        history.push(Message::assistant(reply.answer));
    }
    drop(conversation);
    println!("trace_id={trace_id} session_id={session_id}");
    // Spans are exported in batches in the background: deliver them before exiting.
    telemetry.shutdown().await;
    Ok(())
}
