//! # tracia
//!
//! The OpenTelemetry-native Rust SDK for LLM calls, with [Tracia](https://tracia.io)
//! prompt management and tracing.
//!
//! Every call is a `tracing` span carrying the OpenTelemetry GenAI semantic-convention
//! attributes; [`telemetry`] bridges it through `tracing-opentelemetry` to a batching
//! `SdkTracerProvider` that exports to any OTLP backend (Jaeger, `tracia-collector`),
//! to Tracia's REST API, or to both. Calls made inside your own `#[instrument]` spans
//! become their children, so the app and its LLM calls form one trace.
//!
//! The calls, all on [`Tracia`]:
//! - [`Tracia::run_local`] / [`Tracia::run_local_stream`]: chat with OpenAI (and any
//!   OpenAI-compatible server), Anthropic, Google Gemini or Amazon Bedrock, the provider
//!   resolved from the model name; tools, structured output, `{{variables}}`.
//! - [`Tracia::run_embedding`]: embeddings (OpenAI, Gemini, Bedrock Titan and Cohere,
//!   Voyage).
//! - [`Tracia::run_responses`] / [`Tracia::run_responses_stream`]: OpenAI's Responses API.
//! - [`Tracia::create_session`] / [`Tracia::create_session_with`]: calls chained into
//!   one trace, from a fresh start, a known trace or a known parent span.
//!
//! ```no_run
//! use tracia::{RunLocal, Tracia};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let telemetry = tracia::telemetry::init()?; // OTLP to localhost:4318 unless configured
//!     let tracia = Tracia::from_env()?;
//!     let result = tracia
//!         .run_local(RunLocal::new("gpt-4o").system("You are terse.").user("Hello {{name}}")
//!             .variable("name", "Ada").temperature(0.2))
//!         .await?;
//!     println!("{} (span {}, trace {})", result.text, result.span_id, result.trace_id);
//!     telemetry.flush().await;
//!     Ok(())
//! }
//! ```
//!
//! ## Across services
//!
//! [`propagation`] carries W3C `traceparent`/`tracestate` and baggage (`session.id`,
//! `user.id`) through HTTP headers; [`Tracia::session_from_headers`] and
//! [`Session::write_headers`] continue a conversation across requests and services.
//!
//! ## Features
//!
//! | Feature | Default | What |
//! |---|---|---|
//! | `axum` | off | `propagation::TraceContextLayer` (a SERVER span per request, continuing the caller's trace) and the `Conversation` and `Session` axum extractors |
//!
//! ## Environment variables
//!
//! Everything here can also be set in code ([`TraciaBuilder`], [`telemetry::builder`]);
//! code wins.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `OPENAI_API_KEY` | — | OpenAI key (or `RunLocal::provider_api_key`) |
//! | `OPENAI_BASE_URL` | `https://api.openai.com/v1` | OpenAI or any OpenAI-compatible server |
//! | `ANTHROPIC_API_KEY` | — | Anthropic key |
//! | `ANTHROPIC_BASE_URL` | `https://api.anthropic.com` | Anthropic API (or a proxy); `/v1/messages` is appended |
//! | `GOOGLE_API_KEY` (or `GEMINI_API_KEY`) | — | Gemini (AI Studio) key, sent in the `x-goog-api-key` header, never the URL |
//! | `GOOGLE_GEMINI_BASE_URL` | `https://generativelanguage.googleapis.com` | Gemini API; `/v1beta/models/…` is appended |
//! | `BEDROCK_API_KEY` (or `AWS_BEARER_TOKEN_BEDROCK`) | — | Bedrock API key (Bearer); without one, SigV4 with the AWS credentials below |
//! | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` | — | AWS credentials for Bedrock SigV4 signing |
//! | `AWS_REGION` (or `AWS_DEFAULT_REGION`) | `eu-central-1` | Bedrock region: endpoint and the model id's cross-region prefix |
//! | `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` | `https://bedrock-runtime.{region}.amazonaws.com` | Bedrock endpoint override |
//! | `VOYAGE_API_KEY` | — | Voyage AI key (embeddings) |
//! | `VOYAGE_BASE_URL` | `https://api.voyageai.com/v1` | Voyage API |
//! | `TRACIA_API_KEY` | — | when set, GenAI spans are also exported to Tracia |
//! | `TRACIA_BASE_URL` | `https://app.tracia.io` | Tracia API (or `tracia-collector`) |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | `http://localhost:4318` | OTLP/HTTP base URL; `/v1/traces` is appended |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | — | OTLP/HTTP traces URL, used as is |
//! | `OTEL_EXPORTER_OTLP_HEADERS` (or `OTEL_EXPORTER_OTLP_TRACES_HEADERS`) | — | `k=v,k2=v2` headers for the OTLP backend |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` (or `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`) | `http/protobuf` | or `http/json` |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT` (or `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`) | `10000` | per export request, in ms |
//! | `OTEL_SERVICE_NAME` | `unknown_service` | `service.name` of the resource |
//! | `OTEL_SDK_DISABLED` | `false` | `true` turns the pipeline off (calls still work) |
//! | `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` | on | `NO_CONTENT`/`false` keeps prompts and answers off spans |
//! | `OTEL_SEMCONV_STABILITY_OPT_IN` | v1.41 | `gen_ai_latest_experimental` emits the latest GenAI names |
//! | `OTEL_BSP_MAX_QUEUE_SIZE` | 2048 | spans queued per backend while it is slow or down (`with_max_queue_size`); with the batch being sent, the bound on export memory: spans ending while the queue is full are dropped, never waited for, counted in `TelemetryGuard::stats()` (`lost()`) and reported to `on_export_failure` at shutdown |
//! | `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` | 5000, 512 | batch processor: ms between exports, spans per export |
//! | `RUST_LOG` | `info` (spans), `warn` (logs) | which spans are exported; Tracia's always are |
//! | `NO_COLOR` | — | set and not empty: the log lines of `with_fmt` are never coloured |
//!
//! Bounds set in code ([`TraciaBuilder`]) rather than the environment:
//!
//! | Setting | Default | Meaning |
//! |---|---|---|
//! | [`TraciaBuilder::with_max_answer_bytes`] | [`DEFAULT_MAX_ANSWER_BYTES`] (32 MiB) | the most bytes of one answer (streamed text, reasoning, tool-call arguments, or a non-streamed body); past it, `PROVIDER_ERROR` naming the limit and an ERROR span |
//! | content attributes | 64 KiB each | `gen_ai.input.messages`, `gen_ai.output.messages`, `gen_ai.tool.definitions`, `tracia.variables`, `tracia.embeddings.input`: longest strings cut (`…[truncated]`), JSON kept valid |
//!
//! Secrets: [`redact`] scrubs known key shapes and the exact values of every key
//! configured in the process (8 bytes or longer) from errors, spans and logs.
//!
//! With no exporter configured, spans go by OTLP to `http://localhost:4318`, where
//! `tracia-collector` listens; with only `TRACIA_API_KEY`, they go to Tracia only.
//!
//! ## Span ids
//!
//! [`RunResult::span_id`] is the exported OpenTelemetry span id in Tracia form
//! (`sp_` + 16 hex); [`RunResult::trace_id`] is the trace id as `tr_` + 16 hex when its
//! upper half is zero (ids made by [`TraciaIdGenerator`]), `sp_` + 16 hex for a span id
//! used as a trace id (below), and `tr_` + 32 hex otherwise.
//! A caller's `span_id` is honoured when the provider uses [`TraciaIdGenerator`]
//! (as [`telemetry`] sets up). [`ids`] converts between these forms and the W3C hex
//! ids that OpenTelemetry backends show.
//!
//! Tracia's manual linking works as written: a span id given as a call's `trace_id`
//! names a trace (mapped losslessly, see [`ids`]) that shows back in that same `sp_…`
//! form, and a `parent_span_id` without a `trace_id` joins the current span's trace,
//! else that same trace of the parent's id.
//!
//! ```no_run
//! # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
//! use tracia::RunLocal;
//! let first = tracia.run_local(RunLocal::new("gpt-4o").user("Plan it")).await?;
//! let second = tracia
//!     .run_local(RunLocal::new("gpt-4o").user("Do it")
//!         .trace_id(&first.span_id).parent_span_id(&first.span_id))
//!     .await?;
//! assert_eq!(second.trace_id, first.span_id);
//! # Ok(()) }
//! ```
//!
//! Your own spans' ids are read through the re-exported [`opentelemetry`] and
//! [`tracing_opentelemetry`] crates (the versions this SDK uses):
//!
//! ```
//! use tracia::opentelemetry::trace::TraceContextExt as _;
//! use tracia::tracing_opentelemetry::OpenTelemetrySpanExt as _;
//! use tracing_subscriber::layer::SubscriberExt as _;
//! # fn main() -> Result<(), tracia::Error> {
//! let telemetry = tracia::telemetry::builder().without_otlp().without_tracia().build()?;
//! let subscriber = tracing_subscriber::registry().with(telemetry.layer());
//! tracing::subscriber::with_default(subscriber, || {
//!     let span = tracing::info_span!("handle_request");
//!     let trace_id = span.context().span().span_context().trace_id();
//!     assert!(tracia::ids::format_trace_id(trace_id).starts_with("tr_"));
//! });
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

// The rooms (see ARCHITECTURE.md): imports point from the call surface down to the
// providers, telemetry and propagation, and from all of them to the shared modules;
// `.ci/modcycles.py src` checks that no two modules here import each other in a cycle.

// The call surface: `Tracia`, its calls and their spans, streams and sessions.
mod call;

// Tracia's REST client (prompts, spans), over the call surface.
mod rest;

// One module per provider's wire format, the wire traits and `Provider`; no spans.
mod providers;

pub mod propagation;

pub mod telemetry;

// Shared by all rooms.
mod config;
mod error;
pub mod ids;
mod message;
mod pricing;
mod transport;
mod usage;
mod variables;

// Private entry points for the fuzz targets (`fuzz/`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;

/// The OpenTelemetry API crate, at the version this SDK is built on: read your own
/// spans' ids and context without pinning its version by hand.
pub use opentelemetry;
/// The `tracing` ⇄ OpenTelemetry bridge this SDK uses (`OpenTelemetrySpanExt` gives a
/// `tracing::Span`'s OpenTelemetry context).
pub use tracing_opentelemetry;

pub use call::client::{DEFAULT_MAX_ANSWER_BYTES, Tracia, TraciaBuilder};
pub use call::embedding::{Embedding, EmbeddingResult, RunEmbedding};
pub use call::responses::{ResponsesResult, RunResponses};
pub use call::responses_stream::{ResponsesEvent, ResponsesStream};
pub use call::run::{RunLocal, RunResult};
pub use call::session::{Session, SessionOptions};
pub use call::stream::{AbortHandle, RunStream};
pub use error::{Error, ErrorCode, redact};
pub use ids::TraciaIdGenerator;
pub use message::{
    Content, ContentPart, FinishReason, Message, ResponseFormat, Role, ToolCall, ToolChoice,
    ToolDefinition,
};
pub use pricing::{cost_usd, pricing_source};
pub use providers::bedrock::aws::AwsCredentials;
pub use providers::embed::InputType;
pub use providers::openai_responses::ResponsesToolCall;
pub use providers::provider::Provider;
pub use rest::{
    CreatePrompt, Evaluate, Evaluation, ListSpans, Prompt, PromptListItem, PromptMessage, Prompts,
    RunPrompt, RunPromptResult, Span, SpanListItem, SpanPage, Spans, UpdatePrompt,
};
pub use telemetry::export::{ExportFailure, ExportStats};
pub use telemetry::semconv::SemconvMode;
pub use telemetry::tracia_exporter::{
    SpanPayload, TraciaExporter, TraciaExporterBuilder, span_payload,
};
pub use telemetry::{TelemetryBuilder, TelemetryGuard};
pub use transport::retry_after;
pub use usage::Usage;
pub use variables::template_variables;
