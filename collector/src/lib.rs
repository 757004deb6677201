//! # tracia-collector
//!
//! A self-hosted backend for the `tracia` SDK (and any OpenTelemetry SDK): an OTLP
//! trace receiver (HTTP and gRPC), a span store, forwarding to other backends, and a
//! small API and page to look at what arrived.
//!
//! This first version keeps the last spans in memory ([`store::SpanStore`]). Every
//! received request takes one path ([`ingest::ingest`]): records, store, forwarding.
//!
//! | Route | What |
//! |---|---|
//! | `POST /v1/traces` | OTLP/HTTP traces, `application/x-protobuf` or `application/json`, optionally gzip; up to 64 MiB after decompression (else 413); answers (errors too) in the request's encoding; 400 for a body that does not decode, 415 for other media types |
//! | gRPC `TraceService/Export` | OTLP/gRPC traces on its own address ([`grpc`]); gzip accepted; up to 64 MiB per message |
//! | `GET /api/v1/spans?limit=N` | the newest spans, as Tracia's `{"spans": [...], "nextCursor": null}` |
//! | `GET /api/ui/status` | `{"version", "forwarding": [{"target", "pending", "forwarded", "failed", "dropped"}]}` ([`forward::TargetStats`]) |
//! | `GET /` | a plain HTML table of the newest spans |
//! | `GET /healthz` | `ok` |
//!
//! | Flag | Environment | Default | What |
//! |---|---|---|---|
//! | `--http-addr` | `TRACIA_COLLECTOR_HTTP_ADDR` | `127.0.0.1:4318` | OTLP/HTTP, API and UI (loopback only) |
//! | `--grpc-addr` | `TRACIA_COLLECTOR_GRPC_ADDR` | `127.0.0.1:4317` | OTLP/gRPC (loopback only) |
//! | `--max-spans` | `TRACIA_COLLECTOR_MAX_SPANS` | 10000 | spans kept in memory |
//! | `--forward-otlp URL` (repeatable) | `TRACIA_COLLECTOR_FORWARD_OTLP` (comma-separated) | none | also POST every received request, as OTLP/HTTP protobuf, to `URL/v1/traces` |
//! | `--forward-tracia` | `TRACIA_COLLECTOR_FORWARD_TRACIA` | off | also send every GenAI span to Tracia (`POST /api/v1/spans`); needs `TRACIA_API_KEY`, uses `TRACIA_BASE_URL` (default `https://app.tracia.io`) |
//!
//! Forwarding never slows ingestion: each target has a bounded queue (128 MiB of
//! encoded spans), batches, retries with backoff, and counts what it drops or fails
//! to deliver (see [`forward`]).
//!
//! The router is built by [`app`], so it can be tested without a socket:
//!
//! ```
//! use tower::ServiceExt as _;
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let app = tracia_collector::app(tracia_collector::AppState::default());
//! let request = axum::http::Request::get("/healthz").body(axum::body::Body::empty()).unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! # }
//! ```
#![deny(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower_http::decompression::RequestDecompressionLayer;

pub mod api;
pub mod forward;
pub mod grpc;
pub mod ingest;
pub mod model;
pub mod otlp;
pub mod store;

/// The default OTLP/HTTP address: the standard port, on loopback only.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:4318";

/// The default OTLP/gRPC address: the standard port, on loopback only.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:4317";

/// The largest accepted OTLP request body or gRPC message (after decompression): OTLP
/// exporters send up to 64 MiB, far beyond axum's default of 2 MB and tonic's of 4 MiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The received spans.
    pub store: Arc<store::SpanStore>,
    /// Whether each received GenAI span is printed as one line to stdout.
    pub log_spans: bool,
    /// Where received spans are forwarded (nowhere by default).
    pub forward: Arc<forward::Forwarder>,
}

impl Default for AppState {
    /// An empty store of [`store::DEFAULT_CAPACITY`] spans, without span lines.
    fn default() -> Self {
        Self::new(store::DEFAULT_CAPACITY)
    }
}

impl AppState {
    /// An empty store keeping the last `capacity` spans, without span lines.
    pub fn new(capacity: usize) -> Self {
        Self {
            store: Arc::new(store::SpanStore::new(capacity)),
            log_spans: false,
            forward: Arc::default(),
        }
    }

    /// Prints a line to stdout for each received GenAI span (or not).
    pub fn with_span_log(mut self, log_spans: bool) -> Self {
        self.log_spans = log_spans;
        self
    }

    /// Forwards what is received through `forwarder`.
    pub fn with_forwarder(mut self, forwarder: forward::Forwarder) -> Self {
        self.forward = Arc::new(forwarder);
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
        .route("/api/ui/status", get(api::status))
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
             listens on a loopback address (e.g. 127.0.0.1:{port} or [::1]:{port})",
            port = addr.port()
        ))
    }
}

/// The line printed once listening on `http` and `grpc`.
pub fn listening_line(http: SocketAddr, grpc: SocketAddr) -> String {
    format!(
        "tracia-collector listening: OTLP/HTTP http://{http}/v1/traces, OTLP/gRPC http://{grpc}, \
         API http://{http}/api/v1, UI http://{http}/"
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
            listening_line(
                "127.0.0.1:4318".parse().unwrap(),
                "127.0.0.1:4317".parse().unwrap()
            ),
            "tracia-collector listening: OTLP/HTTP http://127.0.0.1:4318/v1/traces, \
             OTLP/gRPC http://127.0.0.1:4317, API http://127.0.0.1:4318/api/v1, UI http://127.0.0.1:4318/"
        );
    }
}
