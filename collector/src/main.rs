//! `tracia-collector`: parses the arguments and serves [`tracia_collector::app`].

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

use tracia_collector::{
    AppState, DEFAULT_DATA_DIR, DEFAULT_HTTP_ADDR, app, check_listen_addr, listening_line,
    parse_retention, spawn_retention, store::Store,
};

/// A local OTLP/HTTP trace receiver with a span API and page, for the tracia SDK and
/// any OpenTelemetry SDK.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address of the OTLP/HTTP receiver, API and UI (loopback only).
    #[arg(long, env = "TRACIA_COLLECTOR_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    http_addr: SocketAddr,

    /// Where the SQLite store lives (created if missing).
    #[arg(long, env = "TRACIA_COLLECTOR_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,

    /// How long spans are kept: `30m`, `12h`, `7d`, or `forever`.
    #[arg(long, env = "TRACIA_COLLECTOR_RETENTION", default_value = "7d", value_parser = parse_retention)]
    // Spelled out so that clap takes the parser's `Option` as the value rather than
    // as "the flag is optional" (which panics at startup on a type mismatch).
    retention: ::std::option::Option<Duration>,
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

    if let Err(message) = check_listen_addr(args.http_addr) {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
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
    if let Some(keep) = args.retention {
        spawn_retention(store.clone(), keep);
    }
    let state = AppState::new(store).with_span_log(true);
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
