//! # tracia-collector
//!
//! A self-hosted backend for the `tracia` SDK (and any OpenTelemetry SDK): an OTLP/HTTP
//! trace receiver, a span store and a small API and page to look at what arrived.
//!
//! Spans are kept in SQLite in the data directory ([`store::Store`]). Routes:
//!
//! | Route | What |
//! |---|---|
//! | `POST /v1/traces` | OTLP/HTTP traces, `application/x-protobuf` or `application/json`, optionally gzip; up to 64 MiB |
//! | `GET /api/v1/spans?limit=N` | the newest spans, as Tracia's `{"spans": [...], "nextCursor": null}` |
//! | `GET /` | a plain HTML table of the newest spans |
//! | `GET /healthz` | `ok` |
//!
//! The router is built by [`app`], so it can be tested without a socket:
//!
//! ```
//! use tower::ServiceExt as _;
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let dir = tempfile::tempdir().unwrap();
//! let store = tracia_collector::store::Store::open(dir.path()).unwrap();
//! let app = tracia_collector::app(tracia_collector::AppState::new(store));
//! let request = axum::http::Request::get("/healthz").body(axum::body::Body::empty()).unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! # }
//! ```
#![deny(missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower_http::decompression::RequestDecompressionLayer;

pub mod api;
pub mod model;
pub mod otlp;
mod schema;
pub mod store;

/// The default data directory (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "./.tracia";

/// How often old spans are deleted.
const RETENTION_SWEEP: Duration = Duration::from_secs(3600);

/// Parses a retention period: `30m`, `12h`, `7d` (also `s` and `w`), or `forever`
/// (`None`: nothing is ever deleted).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(tracia_collector::parse_retention("7d"), Ok(Some(Duration::from_secs(7 * 86400))));
/// assert_eq!(tracia_collector::parse_retention("forever"), Ok(None));
/// assert!(tracia_collector::parse_retention("7 days").is_err());
/// ```
pub fn parse_retention(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    let (number, unit) = match text.char_indices().last() {
        Some((at, unit)) => (&text[..at], unit),
        None => ("", ' '),
    };
    let seconds: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => 0,
    };
    match number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds))
    {
        Some(total) if total > 0 => Ok(Some(Duration::from_secs(total))),
        _ => Err(format!(
            "invalid retention {text:?}: expected a number and a unit (30m, 12h, 7d, 2w) or `forever`"
        )),
    }
}

/// Deletes what ended more than `keep` ago ([`store::Store::prune`]) now and then
/// every hour, in the background.
pub fn spawn_retention(store: store::Store, keep: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(RETENTION_SWEEP);
        loop {
            ticks.tick().await;
            let cutoff = SystemTime::now()
                .checked_sub(keep)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i64);
            match store.prune(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("retention: deleted {n} spans older than {keep:?}"),
                Err(e) => tracing::warn!("retention: {e}"),
            }
        }
    });
}

/// The default OTLP/HTTP address: the standard port, on loopback only.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:4318";

/// The largest accepted OTLP request body (after decompression): OTLP exporters send
/// up to 64 MiB, far beyond axum's default of 2 MB.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Where spans are kept.
    pub store: store::Store,
    /// Whether each received GenAI span is printed as one line to stdout.
    pub log_spans: bool,
}

impl AppState {
    /// Handlers over `store`, without span lines.
    pub fn new(store: store::Store) -> Self {
        Self {
            store,
            log_spans: false,
        }
    }

    /// Prints a line to stdout for each received GenAI span (or not).
    pub fn with_span_log(mut self, log_spans: bool) -> Self {
        self.log_spans = log_spans;
        self
    }
}

/// The collector's routes (see the crate docs).
pub fn app(state: AppState) -> Router {
    // Only the receiver takes big, possibly gzipped bodies. The body limit is checked
    // on the decompressed bytes, so a small gzip bomb cannot exhaust memory either.
    let otlp = Router::new()
        .route("/v1/traces", post(api::ingest_traces))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestDecompressionLayer::new());
    Router::new()
        .route("/", get(api::index))
        .route("/healthz", get(api::healthz))
        .route("/api/v1/spans", get(api::list_spans))
        .merge(otlp)
        .with_state(state)
}

/// Refuses an address other than loopback: the collector has no authentication yet,
/// so anyone who could reach it could read every prompt and answer it received.
pub fn check_listen_addr(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "refusing to listen on {addr}: tracia-collector has no authentication yet, so it only \
             listens on a loopback address (e.g. 127.0.0.1:4318 or [::1]:4318)"
        ))
    }
}

/// The line printed once listening on `addr`.
pub fn listening_line(addr: SocketAddr) -> String {
    format!(
        "tracia-collector listening: OTLP/HTTP http://{addr}/v1/traces, API http://{addr}/api/v1, UI http://{addr}/"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_accepted() {
        assert!(check_listen_addr("127.0.0.1:4318".parse().unwrap()).is_ok());
        assert!(check_listen_addr("[::1]:4318".parse().unwrap()).is_ok());
        let err = check_listen_addr("0.0.0.0:4318".parse().unwrap()).unwrap_err();
        assert!(
            err.contains("0.0.0.0:4318") && err.contains("loopback"),
            "{err}"
        );
    }

    #[test]
    fn listening_line_names_every_url() {
        assert_eq!(
            listening_line("127.0.0.1:4318".parse().unwrap()),
            "tracia-collector listening: OTLP/HTTP http://127.0.0.1:4318/v1/traces, \
             API http://127.0.0.1:4318/api/v1, UI http://127.0.0.1:4318/"
        );
    }
}
