//! `tracia-collector`: parses the arguments and serves [`tracia_collector::app`].

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

use tracia_collector::security::{ApiKeys, DEFAULT_RATE_LIMIT};
use tracia_collector::{
    AppState, DEFAULT_DATA_DIR, DEFAULT_HTTP_ADDR, app, check_listen_addr, listening_line,
    parse_retention, spawn_retention, store::Store,
};

/// A self-hosted Tracia backend: an OTLP/HTTP trace receiver, Tracia's REST API (spans,
/// evaluations, prompts with versions and runs) and a page, for the tracia SDK, the
/// official Tracia SDKs and any OpenTelemetry SDK.
///
/// Prompt runs call providers with the keys and base URLs of the environment
/// (OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY, GOOGLE_API_KEY, BEDROCK_API_KEY
/// or AWS credentials, ...).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address of the OTLP/HTTP receiver, API and UI. Beyond loopback only with an API key.
    #[arg(long, env = "TRACIA_COLLECTOR_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    http_addr: SocketAddr,

    /// An API key every request must present (`Authorization: Bearer <KEY>`; in a
    /// browser, open /?key=<KEY> once). Repeat for several; the environment variable
    /// takes them comma-separated. Without any, there is no authentication.
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "TRACIA_COLLECTOR_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,

    /// Most requests a second over the whole collector (answered 429 beyond); 0 for no limit.
    #[arg(long, value_name = "N", env = "TRACIA_COLLECTOR_RATE_LIMIT", default_value_t = DEFAULT_RATE_LIMIT)]
    rate_limit: u32,

    /// Where the SQLite store lives (created if missing).
    #[arg(long, env = "TRACIA_COLLECTOR_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,

    /// How long spans are kept: `30m`, `12h`, `7d`, or `forever`.
    #[arg(long, env = "TRACIA_COLLECTOR_RETENTION", default_value = "7d", value_parser = parse_retention)]
    // Spelled out so that clap takes the parser's `Option` (`forever` is `None`) as the
    // value, instead of reading `Option<_>` as "the flag may be absent".
    retention: std::option::Option<Duration>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let api_keys = match ApiKeys::new(&args.api_keys) {
        Ok(keys) => keys,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    if let Err(message) = check_listen_addr(args.http_addr, !api_keys.is_empty()) {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let llm = match tracia::Tracia::from_env() {
        Ok(llm) => llm,
        Err(e) => {
            eprintln!("error: cannot configure the provider client: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.http_addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.http_addr);
            return ExitCode::FAILURE;
        }
    };
    // The bound address, so that `--http-addr 127.0.0.1:0` prints the real port.
    let addr = listener.local_addr().unwrap_or(args.http_addr);
    println!("{}", listening_line(addr));

    let store = match Store::open(&args.data_dir) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("store: {}", store.path().display());
    match api_keys.len() {
        0 => println!("auth: none (no --api-key)"),
        n => println!("auth: Authorization: Bearer <key>, {n} key(s)"),
    }
    if let Some(keep) = args.retention {
        spawn_retention(store.clone(), keep);
    }
    let state = AppState::new(store)
        .with_span_log(true)
        .with_llm(llm)
        .with_api_keys(api_keys)
        .with_rate_limit(args.rate_limit);
    if let Err(e) = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown())
        .await
    {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Resolves on Ctrl-C, or on SIGTERM (what `docker stop` and systemd send).
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
