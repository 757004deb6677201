//! # tracia-collector
//!
//! A self-hosted backend for the `tracia` SDK, the official Tracia SDKs (Python, Node)
//! and any OpenTelemetry SDK: an OTLP trace receiver (HTTP and gRPC), a span store in
//! SQLite ([`store::Store`]), Tracia's REST API (spans, evaluations, prompts with
//! versions, prompt runs), forwarding to other backends, and a web UI.
//!
//! Every received OTLP request takes one path ([`ingest::ingest`]): records, durable
//! store, then forwarding.
//!
//! | Route | What |
//! |---|---|
//! | `POST /v1/traces` | OTLP/HTTP traces, `application/x-protobuf` or `application/json`, optionally gzip; up to 64 MiB after decompression (else 413); answers (errors too) in the request's encoding; 400 for a body that does not decode, 415 for other media types |
//! | gRPC `TraceService/Export` | OTLP/gRPC traces on its own address ([`grpc`]); gzip accepted; up to 64 MiB per message |
//! | `POST /api/v1/spans` | one span as the Tracia SDKs send it → `{"id","spanId","traceId","cost"}` |
//! | `GET /api/v1/spans` | GenAI spans newest first, as Tracia's `{"spans": [...], "nextCursor"}`; filters `promptSlug`, `status`, `startDate`, `endDate` (ISO-8601), `userId`, `sessionId`, `tags` (comma-separated, all must match), `limit` (default 50, at most 100), `cursor` |
//! | `GET /api/v1/spans/{spanId}` | one span with its input, output and variables |
//! | `POST /api/v1/spans/{spanId}/evaluations` | `{"evaluatorKey","value","note"?}` attaches a score |
//! | `GET /api/v1/prompts` | `{"prompts": [...]}`, without content |
//! | `POST /api/v1/prompts` | creates a prompt at version 1 (`name`, `content`; `slug` made from the name when missing; 409 on a taken slug) |
//! | `GET /api/v1/prompts/{slug}` | a prompt with its current content; `?version=N` for an older one |
//! | `PUT /api/v1/prompts/{slug}` | renames, re-describes (`""` clears), changes the slug; new content or model settings make a new version |
//! | `DELETE /api/v1/prompts/{slug}` | the prompt and every version → `{"success": true}` |
//! | `POST /api/v1/prompts/{slug}/run` | renders a version with `variables` (or runs `messages`), calls its model, stores the call as an LLM span; honours `traceId`, `parentSpanId` and a `traceparent` header |
//! | `GET /` | the web UI: traces with filters, a trace's span waterfall and LLM conversations, sessions, prompts ([`ui`]) |
//! | `GET /ui/app.js`, `GET /ui/style.css` | the UI's script and stylesheet (embedded; no CDN, works offline) |
//! | `GET /api/ui/traces`, `/api/ui/traces/{traceId}` | trace summaries (filtered, paginated) and a trace's spans, for the UI |
//! | `GET /api/ui/sessions`, `/api/ui/sessions/{sessionId}` | sessions and a session's traces, for the UI |
//! | `GET /api/ui/prompts/{slug}/versions` | every version of a prompt, newest first |
//! | `GET /api/ui/status` | `{"version", "forwarding": [{"target", "pending", "forwarded", "failed", "dropped"}], "truncated": {"spans", "values", "bytes", "dropped"}}` ([`forward::TargetStats`], [`limits::CutTotals`]) |
//! | `GET /healthz` | `ok` (never needs a key, never rate limited) |
//!
//! Errors under `/api` are Tracia's `{"error": {"code", "message"}}`: 400
//! `INVALID_REQUEST` / `MISSING_VARIABLES` / `MISSING_PROVIDER_KEY`, 401 `UNAUTHORIZED`,
//! 403 `FORBIDDEN` (the browser defences; this one in JSON on every path),
//! 404 `NOT_FOUND` (also for unknown `/api/v1` routes), 409 `CONFLICT`, 413
//! `INVALID_REQUEST` (JSON bodies over 10 MiB), 429 `RATE_LIMITED`, 500
//! `PROVIDER_ERROR`, 503 when the store fails.
//!
//! Before anything else, every route but `/healthz` refuses (403 `FORBIDDEN`) what a
//! web page could send: a `Host` that is not the collector's (DNS rebinding), and
//! state-changing requests from another site or origin, or with a body that is not
//! `application/json` (see [`admission`]).
//!
//! With API keys configured ([`AppState::with_api_keys`]), every route but `/healthz`
//! needs `Authorization: Bearer <key>` (or the UI's cookie); see [`security`]. Prompt
//! runs call providers with a `tracia` client ([`AppState::with_llm`]) configured by
//! the `tracia` crate's environment variables (`OPENAI_API_KEY`, `OPENAI_BASE_URL`,
//! `ANTHROPIC_API_KEY`, `GOOGLE_API_KEY`, `BEDROCK_API_KEY`, AWS credentials, …).
//!
//! ## Command line
//!
//! | Flag | Environment | Default | Meaning |
//! |---|---|---|---|
//! | `--http-addr ADDR` | `TRACIA_COLLECTOR_HTTP_ADDR` | `127.0.0.1:4318` | OTLP/HTTP, the API and the UI; beyond loopback only with an API key |
//! | `--grpc-addr ADDR` | `TRACIA_COLLECTOR_GRPC_ADDR` | `127.0.0.1:4317` | OTLP/gRPC; beyond loopback only with an API key |
//! | `--data-dir DIR` | `TRACIA_COLLECTOR_DATA_DIR` | `./.tracia` | where the SQLite store lives |
//! | `--retention AGE` | `TRACIA_COLLECTOR_RETENTION` | `7d` | how long spans are kept (`30m`, `12h`, `7d`, `2w`, `forever`) |
//! | `--api-key KEY` (repeatable) | `TRACIA_COLLECTOR_API_KEYS` (comma-separated) | none | keys every request but `/healthz` must present (at least 16 characters beyond loopback); in a browser, open `/?key=KEY` once |
//! | `--rate-limit N` | `TRACIA_COLLECTOR_RATE_LIMIT` | `1000` | requests a second per key (for all together without keys; a tenth for requests without a valid key), 429 beyond; `0` for none |
//! | `--allowed-host HOST` (repeatable) | `TRACIA_COLLECTOR_ALLOWED_HOSTS` (comma-separated) | none | other `Host` names to serve (`name` or `name:port`), besides loopback names or the bound IP; see [`admission`] |
//! | `--forward-otlp URL` (repeatable) | `TRACIA_COLLECTOR_FORWARD_OTLP` (comma-separated) | none | also POST every received request, as OTLP/HTTP protobuf, to `URL/v1/traces` |
//! | `--forward-tracia` | `TRACIA_COLLECTOR_FORWARD_TRACIA` | off | also send every GenAI span to Tracia (`POST /api/v1/spans`); needs `TRACIA_API_KEY`, uses `TRACIA_BASE_URL` (default `https://app.tracia.io`) |
//! | `--max-value-bytes N` | `TRACIA_COLLECTOR_MAX_VALUE_BYTES` | `65536` | bytes kept of one attribute value ([`limits`]) |
//! | `--max-span-bytes N` | `TRACIA_COLLECTOR_MAX_SPAN_BYTES` | `1048576` | bytes of a span's stored JSON |
//! | `--max-attributes N` | `TRACIA_COLLECTOR_MAX_ATTRIBUTES` | `256` | attributes kept per span (and per event) |
//! | `--max-events N` | `TRACIA_COLLECTOR_MAX_EVENTS` | `128` | events kept per span |
//! | `--max-connections N` | `TRACIA_COLLECTOR_MAX_CONNECTIONS` | `1024` | open connections per port ([`conn`]) |
//! | `--header-read-timeout TIME` | `TRACIA_COLLECTOR_HEADER_READ_TIMEOUT` | `10s` | HTTP request headers (and idle keep-alive), gRPC preface |
//! | `--max-connection-age TIME` | `TRACIA_COLLECTOR_MAX_CONNECTION_AGE` | `10m` | gRPC connections are then renewed |
//! | `--request-timeout TIME` | `TRACIA_COLLECTOR_REQUEST_TIMEOUT` | `120s` | one gRPC export |
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
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use tower_http::decompression::RequestDecompressionLayer;

pub mod admission;
pub mod api;
pub mod conn;
pub mod forward;
pub mod grpc;
pub mod ingest;
pub mod limits;
pub mod model;
pub mod otlp;
pub mod prompts;
pub mod rest;
pub mod security;
pub mod store;
mod time;
pub mod ui;

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

/// Deletes what ended more than `keep` ago ([`store::SpanStore::prune`]) now and then
/// every hour, in the background.
pub fn spawn_retention(store: impl store::SpanStore, keep: Duration) {
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

/// The default OTLP/gRPC address: the standard port, on loopback only.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:4317";

/// The largest accepted OTLP request body or gRPC message (after decompression): OTLP
/// exporters send up to 64 MiB, far beyond axum's default of 2 MB and tonic's of 4 MiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Where spans, traces, sessions and evaluations are kept: any engine.
    pub store: Arc<dyn store::SpanStore>,
    /// Where prompts and their versions are kept: any engine.
    pub prompts: Arc<dyn store::PromptStore>,
    /// Whether each received GenAI span is printed as one line to stdout.
    pub log_spans: bool,
    /// Where received spans are forwarded (nowhere by default).
    pub forward: Arc<forward::Forwarder>,
    /// The client prompt runs call providers with.
    pub llm: tracia::Tracia,
    /// The keys every request must present; none means no authentication.
    pub api_keys: security::ApiKeys,
    /// The rate limit (a bucket per key), if any.
    pub rate_limiter: Option<Arc<security::RateLimiter>>,
    /// Which `Host` names are served, checked with the browser defences in front of
    /// everything else.
    pub admission: admission::Admission,
    /// The bounds on what a received span may store.
    pub limits: limits::Limits,
    /// What the bounds cut, since start.
    pub cut: Arc<limits::CutStats>,
}

impl AppState {
    /// Handlers over `store`: no span lines, no API keys, the default rate limit, and a
    /// provider client without keys (prompt runs answer `MISSING_PROVIDER_KEY` until
    /// [`AppState::with_llm`] gives one).
    pub fn new(store: store::Store) -> Self {
        Self {
            store: Arc::new(store.clone()),
            prompts: Arc::new(store),
            log_spans: false,
            forward: Arc::default(),
            llm: tracia::Tracia::builder()
                .without_env()
                .build()
                // Only a malformed base URL fails, and the defaults are well formed.
                .expect("the default provider client builds"),
            api_keys: security::ApiKeys::default(),
            rate_limiter: security::RateLimiter::new(security::DEFAULT_RATE_LIMIT).map(Arc::new),
            admission: admission::Admission::default(),
            limits: limits::Limits::default(),
            cut: Arc::default(),
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

    /// The client prompt runs use, e.g. `tracia::Tracia::from_env()`.
    pub fn with_llm(mut self, llm: tracia::Tracia) -> Self {
        self.llm = llm;
        self
    }

    /// Requires one of `keys` on every request but `/healthz`.
    pub fn with_api_keys(mut self, keys: security::ApiKeys) -> Self {
        self.api_keys = keys;
        self
    }

    /// At most `per_second` requests a second per key (for everyone together without
    /// keys; a tenth for requests without a valid key); 0 for no limit.
    pub fn with_rate_limit(mut self, per_second: u32) -> Self {
        self.rate_limiter = security::RateLimiter::new(per_second).map(Arc::new);
        self
    }

    /// Serves only the `Host` names `admission` admits (by default: loopback names).
    pub fn with_admission(mut self, admission: admission::Admission) -> Self {
        self.admission = admission;
        self
    }
}

impl AppState {
    /// Bounds received spans by `limits` (instead of [`limits::Limits::default`]).
    pub fn with_limits(mut self, limits: limits::Limits) -> Self {
        self.limits = limits;
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
    // The Tracia REST API: spans and evaluations (`rest`) and prompts, which build on
    // `rest`, merged here so that neither module imports the other's routes.
    let api = rest::routes()
        .merge(prompts::routes())
        .layer(DefaultBodyLimit::max(rest::MAX_API_BODY_BYTES));
    Router::new()
        .route("/healthz", get(api::healthz))
        .merge(ui::routes())
        .route("/api/ui/status", get(api::status))
        .route("/api/ui/prompts/{slug}/versions", get(prompts::versions))
        .merge(api)
        .merge(otlp)
        // Outermost, so that it also covers unknown paths (no probing without a key).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        // In front of the keys: what a web page could send is refused whoever sends it.
        .layer(middleware::from_fn_with_state(
            state.admission.clone(),
            admission::admit,
        ))
        .with_state(state)
}

/// Refuses to listen beyond loopback without API keys, or with a key shorter than
/// [`security::MIN_KEY_LEN`]: anyone who could reach the collector could read every
/// prompt and answer it received, and spend provider credit through prompt runs.
pub fn check_listen_addr(addr: SocketAddr, keys: &security::ApiKeys) -> Result<(), String> {
    match keys.shortest() {
        _ if addr.ip().is_loopback() => Ok(()),
        None => Err(format!(
            "refusing to listen on {addr} without an API key: anyone who can reach it could \
             read every span and run prompts. Set one with --api-key <KEY> (or \
             TRACIA_COLLECTOR_API_KEYS=k1,k2), or listen on loopback (e.g. 127.0.0.1:4318)"
        )),
        Some(len) if len < security::MIN_KEY_LEN => Err(format!(
            "refusing to listen on {addr} with an API key of {len} characters: beyond \
             loopback every --api-key must be at least {} characters long (e.g. \
             `openssl rand -hex 16`)",
            security::MIN_KEY_LEN
        )),
        Some(_) => Ok(()),
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
    fn beyond_loopback_only_with_a_key() {
        let none = security::ApiKeys::default();
        let short = security::ApiKeys::new(["0123456789abcdef", "short-key"]).unwrap();
        let long = security::ApiKeys::new(["0123456789abcdef"]).unwrap();
        assert!(check_listen_addr("127.0.0.1:4318".parse().unwrap(), &none).is_ok());
        assert!(check_listen_addr("[::1]:4318".parse().unwrap(), &short).is_ok());
        assert!(check_listen_addr("0.0.0.0:4318".parse().unwrap(), &long).is_ok());
        let err = check_listen_addr("0.0.0.0:4318".parse().unwrap(), &none).unwrap_err();
        assert!(
            err.contains("0.0.0.0:4318") && err.contains("--api-key"),
            "{err}"
        );
        let err = check_listen_addr("0.0.0.0:4318".parse().unwrap(), &short).unwrap_err();
        assert!(
            err.contains("9 characters") && err.contains("at least 16"),
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
