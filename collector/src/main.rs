//! `tracia-collector`: parses the arguments, serves [`tracia_collector::app`] (OTLP/HTTP,
//! API, UI) and [`tracia_collector::grpc`] (OTLP/gRPC), and forwards what arrives.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracia_collector::admission::Admission;
use tracia_collector::conn::{ConnLimits, raise_fd_limit, serve_http};
use tracia_collector::forward::{DEFAULT_TRACIA_BASE_URL, Forwarder};
use tracia_collector::limits::Limits;
use tracia_collector::security::{ApiKeys, DEFAULT_RATE_LIMIT};
use tracia_collector::store::Store;
use tracia_collector::{
    AppState, DEFAULT_DATA_DIR, DEFAULT_GRPC_ADDR, DEFAULT_HTTP_ADDR, app, check_listen_addr, grpc,
    listening_line, parse_retention, spawn_retention,
};

/// How long spans still queued for forwarding may take to leave at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A self-hosted Tracia backend: an OTLP trace receiver (HTTP and gRPC), Tracia's REST
/// API (spans, evaluations, prompts with versions and runs) and a web UI, for the tracia
/// SDK, the official Tracia SDKs and any OpenTelemetry SDK; it can forward what it
/// receives to other backends.
///
/// Prompt runs call providers with the keys and base URLs of the environment
/// (OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY, GOOGLE_API_KEY, BEDROCK_API_KEY
/// or AWS credentials, ...).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address of the OTLP/HTTP receiver, API and UI (loopback only).
    #[arg(long, env = "TRACIA_COLLECTOR_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    http_addr: SocketAddr,

    /// Address of the OTLP/gRPC receiver (loopback only).
    #[arg(long, env = "TRACIA_COLLECTOR_GRPC_ADDR", default_value = DEFAULT_GRPC_ADDR)]
    grpc_addr: SocketAddr,

    /// Where the SQLite store lives (created if missing).
    #[arg(long, env = "TRACIA_COLLECTOR_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,

    /// How long spans are kept: `30m`, `12h`, `7d`, `2w`, or `forever`.
    // The parser yields the Option (`forever` is None): spelled in full, clap does not
    // treat the field as an optional argument of `Duration` (which panics when read).
    #[arg(long, env = "TRACIA_COLLECTOR_RETENTION", default_value = "7d", value_parser = parse_retention)]
    retention: std::option::Option<Duration>,

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

    /// Another `Host` name to serve (`name` or `name:port`), e.g. the name of a proxy
    /// in front: besides loopback names (or the bound IP), requests naming any other
    /// host are refused. Repeat for several; the environment variable takes them
    /// comma-separated.
    #[arg(
        long = "allowed-host",
        value_name = "HOST",
        env = "TRACIA_COLLECTOR_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,

    /// Most requests a second per key (for all together without keys) (answered 429 beyond); 0 for no limit.
    #[arg(long, value_name = "N", env = "TRACIA_COLLECTOR_RATE_LIMIT", default_value_t = DEFAULT_RATE_LIMIT)]
    rate_limit: u32,

    /// Also send every received trace request to this OTLP/HTTP receiver (a Jaeger,
    /// another collector), as protobuf to URL/v1/traces (URL is used as is when it
    /// already ends with /v1/traces). Repeat the flag for more receivers.
    #[arg(
        long,
        value_name = "URL",
        env = "TRACIA_COLLECTOR_FORWARD_OTLP",
        value_delimiter = ','
    )]
    forward_otlp: Vec<String>,

    /// Also send every GenAI span to Tracia (POST /api/v1/spans), with the API key in
    /// TRACIA_API_KEY (required) to TRACIA_BASE_URL (default https://app.tracia.io).
    #[arg(long, env = "TRACIA_COLLECTOR_FORWARD_TRACIA")]
    forward_tracia: bool,

    #[command(flatten)]
    limits: Limits,

    #[command(flatten)]
    connections: ConnLimits,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        // Control characters in logged values (model names, paths, errors) escaped.
        .fmt_fields(tracia::telemetry::EscapedFields)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let forwarder = match forwarder(&args) {
        Ok(forwarder) => forwarder,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let api_keys = match ApiKeys::new(&args.api_keys) {
        Ok(keys) => keys,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let admission = match Admission::new(&args.allowed_hosts) {
        Ok(admission) => admission,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    for addr in [args.http_addr, args.grpc_addr] {
        if let Err(message) = check_listen_addr(addr, &api_keys) {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    }
    let llm = match tracia::Tracia::from_env() {
        Ok(llm) => llm,
        Err(e) => {
            eprintln!("error: cannot configure the provider client: {e}");
            return ExitCode::from(2);
        }
    };
    let (http_listener, grpc_listener) = match (
        TcpListener::bind(args.http_addr).await,
        TcpListener::bind(args.grpc_addr).await,
    ) {
        (Ok(http), Ok(grpc)) => (http, grpc),
        (Err(e), _) => return cannot_listen(args.http_addr, e),
        (_, Err(e)) => return cannot_listen(args.grpc_addr, e),
    };
    // The bound addresses, so that port 0 prints the real ports.
    let http_addr = http_listener.local_addr().unwrap_or(args.http_addr);
    let grpc_addr = grpc_listener.local_addr().unwrap_or(args.grpc_addr);
    println!("{}", listening_line(http_addr, grpc_addr));

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
    match api_keys.len() {
        0 => tracing::info!("auth: none (no --api-key)"),
        n => tracing::info!("auth: Authorization: Bearer <key>, {n} key(s)"),
    }
    let state = AppState::new(store)
        .with_span_log(true)
        .with_forwarder(forwarder)
        .with_llm(llm)
        .with_api_keys(api_keys)
        .with_rate_limit(args.rate_limit)
        .with_admission(admission.served_at(http_addr))
        .with_limits(args.limits);
    let fds = raise_fd_limit();
    let connections = fds.map_or(args.connections, |fds| args.connections.fit_to(fds));
    tracing::info!(
        "connections: at most {} per port, headers within {:?}; open-file limit {}",
        connections.max_connections,
        connections.header_read_timeout,
        fds.map_or("unknown".to_owned(), |fds| fds.to_string()),
    );
    // Either server stopping (a signal, or a failure) stops the other one too.
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let http = async {
        serve_http(
            http_listener,
            app(state.clone()),
            connections,
            until_stopped(stopped.clone()),
        )
        .await;
        stop.send_replace(true);
        Ok::<(), String>(())
    };
    let grpc = async {
        let result = grpc::serve_with(
            grpc_listener,
            state.clone(),
            connections,
            until_stopped(stopped.clone()),
        )
        .await
        .map_err(|e| format!("OTLP/gRPC server: {e}"));
        stop.send_replace(true);
        result
    };
    let signal = async {
        tokio::select! {
            _ = shutdown() => {}
            _ = until_stopped(stopped.clone()) => {}
        }
        stop.send_replace(true);
    };
    let (http, grpc, ()) = tokio::join!(http, grpc, signal);

    if !state.forward.drain(DRAIN_TIMEOUT).await {
        for target in state.forward.stats().iter().filter(|t| t.pending > 0) {
            tracing::warn!(
                "forwarding to {}: {} spans still queued at shutdown are lost",
                target.target,
                target.pending
            );
        }
    }
    let mut code = ExitCode::SUCCESS;
    for error in [http.err(), grpc.err()].into_iter().flatten() {
        eprintln!("error: {error}");
        code = ExitCode::FAILURE;
    }
    code
}

/// The forwarding targets of the flags; an error names what is missing or wrong.
fn forwarder(args: &Args) -> Result<Forwarder, String> {
    let mut builder = Forwarder::builder();
    for url in &args.forward_otlp {
        builder = builder.otlp(url);
    }
    if args.forward_tracia {
        let key = std::env::var("TRACIA_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .ok_or("--forward-tracia needs a Tracia API key in TRACIA_API_KEY")?;
        let base = std::env::var("TRACIA_BASE_URL")
            .ok()
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_TRACIA_BASE_URL.to_owned());
        builder = builder.tracia(base, key);
    }
    builder.build()
}

fn cannot_listen(addr: SocketAddr, e: std::io::Error) -> ExitCode {
    eprintln!("error: cannot listen on {addr}: {e}");
    ExitCode::FAILURE
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_a_period_or_forever() {
        let args = Args::try_parse_from(["tracia-collector"]).unwrap();
        assert_eq!(args.retention, Some(Duration::from_secs(7 * 86_400)));
        let args = Args::try_parse_from(["tracia-collector", "--retention", "forever"]).unwrap();
        assert_eq!(args.retention, None);
        assert!(Args::try_parse_from(["tracia-collector", "--retention", "7 days"]).is_err());
    }

    #[test]
    fn allowed_hosts_repeat() {
        let args = Args::try_parse_from(["tracia-collector"]).unwrap();
        assert!(args.allowed_hosts.is_empty());
        let args = Args::try_parse_from([
            "tracia-collector",
            "--allowed-host",
            "traces.internal",
            "--allowed-host",
            "ci.internal:8080,10.0.0.5",
        ])
        .unwrap();
        assert_eq!(
            args.allowed_hosts,
            ["traces.internal", "ci.internal:8080", "10.0.0.5"]
        );
        assert!(Admission::new(&args.allowed_hosts).is_ok());
    }
}
