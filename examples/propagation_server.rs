//! Service B of the propagation pair: an axum chat service whose spans join the trace of
//! whoever calls it (see `propagation_client.rs`, service A).
//!
//! `TraceContextLayer` runs each request in a SERVER span that is the child of the
//! caller's `traceparent`, with the caller's baggage (`session.id`, `user.id`) in
//! context. The handler takes a `tracia::Session` extractor, which continues the
//! conversation the headers carry, runs one turn, and writes the session's position
//! back into the response headers (`traceparent` naming this turn's LLM span, and the
//! baggage), so a caller without tracing of its own (a browser) can send them back and
//! have the next turn chained to this one.
//!
//! Run it with a local collector (spans go to `http://localhost:4318` by default):
//!
//! ```not_rust
//! cargo run -p tracia-collector
//! OPENAI_API_KEY=sk-... cargo run --example propagation_server -- [--port 3001] [--model M]
//! # then, in another shell, service A:
//! cargo run --example propagation_client -- --server http://127.0.0.1:3001
//! ```

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tracia::propagation::TraceContextLayer;
use tracia::{Message, RunLocal, Session, Tracia};

const USAGE: &str = "usage: propagation_server [--port PORT] [--model MODEL]";

#[derive(Clone)]
struct App {
    tracia: Tracia,
    model: String,
}

// The `Session` extractor finds the `Tracia` client in the app state.
impl axum::extract::FromRef<App> for Tracia {
    fn from_ref(app: &App) -> Tracia {
        app.tracia.clone()
    }
}

#[derive(Deserialize)]
struct Turn {
    /// The conversation so far, as the caller keeps it.
    #[serde(default)]
    history: Vec<Message>,
    message: String,
}

#[derive(Serialize)]
struct Reply {
    answer: String,
    span_id: String,
    trace_id: String,
}

#[tracing::instrument(skip_all)]
async fn handle_turn(
    State(app): State<App>,
    session: Session,
    Json(turn): Json<Turn>,
) -> Result<(HeaderMap, Json<Reply>), (axum::http::StatusCode, String)> {
    let mut messages = vec![Message::system("You are a friendly, very brief assistant.")];
    messages.extend(turn.history);
    messages.push(Message::user(turn.message));
    let result = session
        .run_local(RunLocal::new(&app.model).messages(messages))
        .await
        .map_err(|e| (axum::http::StatusCode::BAD_GATEWAY, e.to_string()))?;
    let mut headers = HeaderMap::new();
    session.write_headers(&mut headers);
    Ok((
        headers,
        Json(Reply {
            answer: result.text,
            span_id: result.span_id,
            trace_id: result.trace_id,
        }),
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut port, mut model) = (3001u16, "gpt-4o-mini".to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--port", Some(p)) => port = p.parse()?,
            ("--model", Some(m)) => model = m,
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }

    let telemetry = tracia::telemetry::init()?;
    let app = App {
        tracia: Tracia::from_env()?,
        model,
    };
    let router = Router::new()
        .route("/chat", post(handle_turn))
        .layer(TraceContextLayer::new())
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // Spans are exported in batches in the background: deliver the last ones.
    telemetry.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM from a process manager.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
