//! The whole OpenTelemetry pipeline in one call.
//!
//! `tracing` spans → `tracing-opentelemetry` layer → `SdkTracerProvider` (with
//! [`TraciaIdGenerator`]) → one `BatchSpanProcessor` per backend → the OTLP/HTTP
//! exporter and/or the [`TraciaExporter`]. Each backend has its own queue and thread,
//! so a slow or dead backend never holds up the other, nor the LLM calls.

pub(crate) mod export;
pub(crate) mod pending;
pub(crate) mod semconv;
pub(crate) mod tracia_exporter;

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{BatchConfig, BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{self, env, env_bool};
use crate::error::{Error, Result};
use crate::ids::TraciaIdGenerator;
use crate::telemetry::export::{
    BackgroundHttpClient, CountingExporter, CountingProcessor, ExportRuntime, ExportStats,
    FailureCallback, Reporter,
};
use crate::telemetry::tracia_exporter::{TraciaExporter, TraciaExporterBuilder};

const DEFAULT_OTLP_ENDPOINT: &str = "http://localhost:4318";

/// Configures the pipeline; see [`init`] for the one-call form.
///
/// Anything not set in code comes from the environment (the crate docs list the
/// variables). With no exporter configured anywhere, spans go by OTLP to
/// `http://localhost:4318`, where `tracia-collector` listens by default.
///
/// ```no_run
/// # async fn demo() -> Result<(), tracia::Error> {
/// let guard = tracia::telemetry::builder()
///     .with_service_name("checkout")
///     .with_otlp_endpoint("http://localhost:4318")
///     .with_tracia_api_key("tr_my_key")
///     .on_export_failure(|f| eprintln!("lost {} spans to {}: {}", f.spans, f.exporter, f.reason))
///     .init()?;
/// // ... run LLM calls ...
/// guard.flush().await;
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct TelemetryBuilder {
    service_name: Option<String>,
    otlp_endpoint: Option<String>,
    otlp_traces_endpoint: Option<String>,
    otlp_headers: HashMap<String, String>,
    otlp_json: bool,
    otlp_timeout: Option<Duration>,
    no_otlp: bool,
    tracia: TraciaExporterBuilder,
    tracia_key_set: bool,
    no_tracia: bool,
    max_queue_size: Option<usize>,
    max_export_batch_size: Option<usize>,
    scheduled_delay: Option<Duration>,
    filter: Option<String>,
    fmt: Option<bool>,
    extras: SpanExtras,
    on_failure: Option<FailureCallback>,
    disabled: Option<bool>,
}

impl std::fmt::Debug for TelemetryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryBuilder")
            .field("service_name", &self.service_name)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .finish_non_exhaustive()
    }
}

/// A [`TelemetryBuilder`] reading the environment for what code does not set.
///
/// ```
/// let builder = tracia::telemetry::builder().with_service_name("demo");
/// # drop(builder);
/// ```
pub fn builder() -> TelemetryBuilder {
    TelemetryBuilder::default()
}

/// Sets up the pipeline from the environment and installs it globally: the `tracing`
/// subscriber, the tracer provider and the W3C propagators. Keep the guard alive;
/// dropping it flushes and shuts down.
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let _telemetry = tracia::telemetry::init()?;
///     let tracia = tracia::Tracia::from_env()?;
///     let result = tracia.run_local(tracia::RunLocal::new("gpt-4o").user("Hi")).await?;
///     println!("{}", result.text);
///     Ok(())
/// }
/// ```
pub fn init() -> Result<TelemetryGuard> {
    builder().init()
}

impl TelemetryBuilder {
    /// `service.name` of the resource (`OTEL_SERVICE_NAME` otherwise).
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// OTLP/HTTP base URL; `/v1/traces` is appended (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn with_otlp_endpoint(mut self, url: impl Into<String>) -> Self {
        self.otlp_endpoint = Some(url.into());
        self
    }

    /// OTLP/HTTP traces URL, used as is (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub fn with_otlp_traces_endpoint(mut self, url: impl Into<String>) -> Self {
        self.otlp_traces_endpoint = Some(url.into());
        self
    }

    /// An OTLP request header, e.g. an API key of the backend (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub fn with_otlp_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.otlp_headers.insert(name.into(), value.into());
        self
    }

    /// OTLP/JSON instead of protobuf (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`).
    pub fn with_otlp_json(mut self, json: bool) -> Self {
        self.otlp_json = json;
        self
    }

    /// The timeout of one OTLP export request (`OTEL_EXPORTER_OTLP_TIMEOUT`, default 10 s).
    pub fn with_otlp_timeout(mut self, timeout: Duration) -> Self {
        self.otlp_timeout = Some(timeout);
        self
    }

    /// No OTLP export, even when configured in the environment.
    pub fn without_otlp(mut self) -> Self {
        self.no_otlp = true;
        self
    }

    /// Exports GenAI spans to Tracia with this key (`TRACIA_API_KEY`).
    pub fn with_tracia_api_key(mut self, key: impl Into<String>) -> Self {
        self.tracia = self.tracia.with_api_key(key);
        self.tracia_key_set = true;
        self
    }

    /// The Tracia base URL (`TRACIA_BASE_URL`, else `https://app.tracia.io`).
    pub fn with_tracia_base_url(mut self, url: impl Into<String>) -> Self {
        self.tracia = self.tracia.with_base_url(url);
        self
    }

    /// No Tracia export, even when `TRACIA_API_KEY` is set.
    pub fn without_tracia(mut self) -> Self {
        self.no_tracia = true;
        self
    }

    /// The most spans each backend's queue holds (`OTEL_BSP_MAX_QUEUE_SIZE`, default
    /// 2048): this bounds memory while a backend is down; spans past it are counted lost.
    pub fn with_max_queue_size(mut self, n: usize) -> Self {
        self.max_queue_size = Some(n);
        self
    }

    /// The most spans per export (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, default 512).
    pub fn with_max_export_batch_size(mut self, n: usize) -> Self {
        self.max_export_batch_size = Some(n);
        self
    }

    /// How long spans wait for a batch to fill (`OTEL_BSP_SCHEDULE_DELAY`, default 5 s).
    pub fn with_scheduled_delay(mut self, delay: Duration) -> Self {
        self.scheduled_delay = Some(delay);
        self
    }

    fn batch_config(&self) -> BatchConfig {
        let mut b = opentelemetry_sdk::trace::BatchConfigBuilder::default();
        if let Some(n) = self.max_queue_size {
            b = b.with_max_queue_size(n);
        }
        if let Some(n) = self.max_export_batch_size {
            b = b.with_max_export_batch_size(n);
        }
        if let Some(d) = self.scheduled_delay {
            b = b.with_scheduled_delay(d);
        }
        b.build()
    }

    /// Which spans are exported, as an `EnvFilter` directive (default: `RUST_LOG`, else
    /// `info`). Tracia's own spans are always included, whatever the directive says.
    pub fn with_filter(mut self, directive: impl Into<String>) -> Self {
        self.filter = Some(directive.into());
        self
    }

    /// Whether [`TelemetryBuilder::init`] also installs a `fmt` layer for logs to stderr
    /// (filtered by `RUST_LOG`, default `warn`). On by default. Its lines are coloured
    /// only when stderr is a terminal and `NO_COLOR` is unset or empty, so a log file or
    /// pipe gets plain text.
    pub fn with_fmt(mut self, fmt: bool) -> Self {
        self.fmt = Some(fmt);
        self
    }

    /// Whether spans carry where in the source they were created: `code.file.path`,
    /// `code.module.name`, `code.line.number` and the `tracing` `target`. Off by
    /// default: for Tracia's spans that is this SDK's source path on the machine it was
    /// built on, which says nothing about your app.
    ///
    /// ```
    /// let builder = tracia::telemetry::builder().with_code_attributes(true);
    /// # drop(builder);
    /// ```
    pub fn with_code_attributes(mut self, on: bool) -> Self {
        self.extras.code = on;
        self
    }

    /// Whether spans carry the thread they were created on (`thread.id`,
    /// `thread.name`). Off by default.
    ///
    /// ```
    /// let builder = tracia::telemetry::builder().with_thread_attributes(true);
    /// # drop(builder);
    /// ```
    pub fn with_thread_attributes(mut self, on: bool) -> Self {
        self.extras.threads = on;
        self
    }

    /// Whether spans carry how long they were entered and idle (`busy_ns`, `idle_ns`),
    /// as `tracing` sees it, on your own spans. Off by default: for an async call,
    /// entered time is not its duration, which the span's own start and end already
    /// give. LLM call spans never carry them: their end is stamped by the SDK when the
    /// call is over (see `ARCHITECTURE.md`), before `tracing-opentelemetry` would add them.
    ///
    /// ```
    /// let builder = tracia::telemetry::builder().with_timing_attributes(true);
    /// # drop(builder);
    /// ```
    pub fn with_timing_attributes(mut self, on: bool) -> Self {
        self.extras.timings = on;
        self
    }

    /// Called whenever spans could not be delivered (they are also counted in
    /// [`TelemetryGuard::stats`] and logged as a warning).
    pub fn on_export_failure(
        mut self,
        callback: impl Fn(&crate::ExportFailure) + Send + Sync + 'static,
    ) -> Self {
        self.on_failure = Some(Arc::new(callback));
        self
    }

    /// Turns the whole pipeline off (`OTEL_SDK_DISABLED=true`).
    pub fn with_disabled(mut self, disabled: bool) -> Self {
        self.disabled = Some(disabled);
        self
    }

    /// Builds the pipeline without installing anything globally; add
    /// [`TelemetryGuard::layer`] to your own subscriber.
    ///
    /// ```
    /// use tracing_subscriber::layer::SubscriberExt;
    /// # #[tokio::main] async fn main() -> Result<(), tracia::Error> {
    /// let guard = tracia::telemetry::builder().without_tracia().with_otlp_endpoint("http://127.0.0.1:4318").build()?;
    /// let subscriber = tracing_subscriber::registry().with(guard.layer());
    /// tracing::subscriber::with_default(subscriber, || { /* spans here are exported */ });
    /// # Ok(()) }
    /// ```
    pub fn build(mut self) -> Result<TelemetryGuard> {
        let disabled = self
            .disabled
            .or_else(|| env_bool(config::OTEL_SDK_DISABLED))
            .unwrap_or(false);
        if disabled {
            return Ok(TelemetryGuard {
                provider: None,
                reporters: Vec::new(),
                filter: self.filter,
                extras: self.extras,
                installed_as: None,
            });
        }
        let tracia_wanted =
            !self.no_tracia && (self.tracia_key_set || env(config::TRACIA_API_KEY).is_some());
        let otlp_env = env(config::OTEL_EXPORTER_OTLP_ENDPOINT).is_some()
            || env(config::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).is_some();
        let otlp_code = self.otlp_endpoint.is_some() || self.otlp_traces_endpoint.is_some();
        // With nothing configured, spans go to the local collector rather than nowhere.
        let otlp_wanted = !self.no_otlp && (otlp_code || otlp_env || !tracia_wanted);

        let mut provider = SdkTracerProvider::builder()
            .with_id_generator(TraciaIdGenerator)
            .with_resource(resource(self.service_name.as_deref()));
        let mut reporters = Vec::new();
        if otlp_wanted {
            let reporter = Reporter::new("otlp", self.on_failure.clone());
            let exporter = CountingExporter {
                inner: self.otlp_exporter()?,
                reporter: reporter.clone(),
            };
            provider = with_backend(
                provider,
                exporter,
                self.batch_config(),
                reporter,
                &mut reporters,
                false,
            );
        }
        if tracia_wanted {
            let reporter = Reporter::new("tracia", self.on_failure.clone());
            let mut builder = std::mem::take(&mut self.tracia);
            builder.reporter = Some(reporter.clone());
            let exporter: TraciaExporter = builder.build()?;
            provider = with_backend(
                provider,
                exporter,
                self.batch_config(),
                reporter,
                &mut reporters,
                true,
            );
        }
        Ok(TelemetryGuard {
            provider: Some(provider.build()),
            reporters,
            filter: self.filter,
            extras: self.extras,
            installed_as: None,
        })
    }

    /// Builds the pipeline and installs it globally: the subscriber (this layer plus,
    /// unless turned off, a `fmt` layer), the tracer provider, and the W3C trace-context
    /// and baggage propagators. Fails if a global subscriber is already set.
    pub fn init(self) -> Result<TelemetryGuard> {
        let fmt = self.fmt.unwrap_or(true);
        let mut guard = self.build()?;
        let fmt_layer = fmt.then(|| {
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
            tracing_subscriber::fmt::layer()
                .fmt_fields(EscapedFields)
                .with_writer(std::io::stderr)
                .with_ansi(colour(std::io::stderr().is_terminal()))
                .with_filter(filter)
        });
        tracing_subscriber::registry()
            .with(guard.layer())
            .with(fmt_layer)
            .try_init()
            .map_err(|e| Error::invalid(format!("cannot install the tracing subscriber: {e}")))?;
        opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
        if let Some(provider) = &guard.provider {
            opentelemetry::global::set_tracer_provider(provider.clone());
            static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            installed().push((id, provider.clone()));
            guard.installed_as = Some(id);
        }
        Ok(guard)
    }

    fn otlp_exporter(&self) -> Result<opentelemetry_otlp::SpanExporter> {
        let endpoint = match (&self.otlp_traces_endpoint, &self.otlp_endpoint) {
            (Some(url), _) => url.clone(),
            (None, Some(base)) => traces_url(base),
            (None, None) => env(config::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).unwrap_or_else(|| {
                traces_url(
                    &env(config::OTEL_EXPORTER_OTLP_ENDPOINT)
                        .unwrap_or_else(|| DEFAULT_OTLP_ENDPOINT.into()),
                )
            }),
        };
        let protocol = match env(config::OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
            .or_else(|| env(config::OTEL_EXPORTER_OTLP_PROTOCOL))
            .as_deref()
        {
            _ if self.otlp_json => Protocol::HttpJson,
            None | Some("http/protobuf") => Protocol::HttpBinary,
            Some("http/json") => Protocol::HttpJson,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported by tracia::telemetry: use http/protobuf or http/json"
                )));
            }
        };
        let mut headers = match env(config::OTEL_EXPORTER_OTLP_TRACES_HEADERS)
            .or_else(|| env(config::OTEL_EXPORTER_OTLP_HEADERS))
        {
            Some(text) => parse_headers(&text)?,
            None => HashMap::new(),
        };
        headers.extend(self.otlp_headers.clone());
        for value in headers.values() {
            crate::error::register_secret(value);
            // The credential of `Bearer …`-like values, which a server may echo alone.
            if let Some(token) = value.split_whitespace().nth(1) {
                crate::error::register_secret(token);
            }
        }
        let timeout = self.otlp_timeout.unwrap_or_else(|| {
            env(config::OTEL_EXPORTER_OTLP_TRACES_TIMEOUT)
                .or_else(|| env(config::OTEL_EXPORTER_OTLP_TIMEOUT))
                .and_then(|ms| ms.parse::<u64>().ok())
                .map_or(Duration::from_secs(10), Duration::from_millis)
        });
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::invalid(format!("cannot build the OTLP HTTP client: {e}")))?;
        let runtime = ExportRuntime::start()
            .map_err(|e| Error::invalid(format!("cannot start the export thread: {e}")))?;
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(BackgroundHttpClient { client, runtime })
            .with_endpoint(endpoint)
            .with_protocol(protocol)
            .with_timeout(timeout)
            .with_headers(headers)
            .build()
            .map_err(|e| Error::invalid(format!("cannot build the OTLP exporter: {e}")))
    }
}

/// Adds a backend: its own batch processor (queue and thread), counted on the way in,
/// its GenAI spans' uploads tracked as pending when `track_pending` (Tracia's).
fn with_backend(
    provider: opentelemetry_sdk::trace::TracerProviderBuilder,
    exporter: impl opentelemetry_sdk::trace::SpanExporter + 'static,
    config: BatchConfig,
    reporter: Arc<Reporter>,
    reporters: &mut Vec<Arc<Reporter>>,
    track_pending: bool,
) -> opentelemetry_sdk::trace::TracerProviderBuilder {
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(config)
        .build();
    reporters.push(reporter.clone());
    provider.with_span_processor(CountingProcessor {
        inner: processor,
        reporter,
        track_pending,
    })
}

/// The `tracing-opentelemetry` layer for a tracer provider you own, with Tracia's
/// filter: `RUST_LOG` (else `info`) plus Tracia's own spans always, so a quiet log level
/// never drops LLM spans or breaks their parent chain. Give your provider
/// [`TraciaIdGenerator`] so a caller's `span_id` is honoured. Spans carry what they
/// record and nothing of the build machine: no source paths, thread or busy/idle
/// attributes (build a layer with [`TelemetryBuilder::with_code_attributes`] and its
/// siblings, or your own `tracia::tracing_opentelemetry::layer()`, to have them).
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
///     .with_id_generator(tracia::TraciaIdGenerator)
///     .build();
/// let subscriber = tracing_subscriber::registry().with(tracia::telemetry::layer(&provider));
/// # drop(subscriber);
/// ```
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + 'static
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    layer_with_filter(provider, None, SpanExtras::default())
}

/// The attributes `tracing-opentelemetry` can add to every span, beyond what the span
/// records itself; each family is off unless turned on in [`TelemetryBuilder`].
#[derive(Debug, Default, Clone, Copy)]
struct SpanExtras {
    /// `code.file.path`, `code.module.name`, `code.line.number` and `target`.
    code: bool,
    /// `thread.id`, `thread.name`.
    threads: bool,
    /// `busy_ns`, `idle_ns`.
    timings: bool,
}

/// Whether log lines get ANSI colours: on a terminal, unless `NO_COLOR` is set (to
/// anything but the empty string, as no-color.org says).
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os(config::NO_COLOR).is_none_or(|v| v.is_empty())
}

fn layer_with_filter<S>(
    provider: &SdkTracerProvider,
    directive: Option<&str>,
    extras: SpanExtras,
) -> impl Layer<S> + 'static
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let directive = directive
        .map(str::to_owned)
        .or_else(|| env(config::RUST_LOG))
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::builder().parse_lossy(format!("{directive},tracia=info"));
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("tracia"))
        .with_location(extras.code)
        .with_target(extras.code)
        .with_threads(extras.threads)
        .with_tracked_inactivity(extras.timings)
        .with_filter(filter)
}

fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

fn resource(service_name: Option<&str>) -> Resource {
    let builder = Resource::builder();
    match service_name {
        Some(name) => builder.with_service_name(name.to_owned()).build(),
        None => builder.build(),
    }
}

/// Parses `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k2=v2`, values percent-encoded).
fn parse_headers(text: &str) -> Result<HashMap<String, String>> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                // Never echo the value: headers usually carry credentials.
                Error::invalid(
                    "OTEL_EXPORTER_OTLP_HEADERS must be a comma-separated list of key=value pairs",
                )
            })?;
            Ok((k.trim().to_owned(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn installed() -> std::sync::MutexGuard<'static, Vec<(u64, SdkTracerProvider)>> {
    static INSTALLED: Mutex<Vec<(u64, SdkTracerProvider)>> = Mutex::new(Vec::new());
    INSTALLED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Flushes the pipelines [`init`] installed (for [`crate::Tracia::flush`]).
pub(crate) async fn flush_installed() {
    let providers: Vec<SdkTracerProvider> = installed().iter().map(|(_, p)| p.clone()).collect();
    for provider in providers {
        flush_provider(provider).await;
    }
}

/// `force_flush` blocks until the exporters are done: run it off the async threads,
/// which also keeps a current-thread runtime free to make progress meanwhile.
async fn flush_provider(provider: SdkTracerProvider) {
    let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
}

/// Owns the pipeline: flushes and shuts it down when dropped, then reports any span
/// that was never delivered.
///
/// ```no_run
/// # async fn demo() -> Result<(), tracia::Error> {
/// let guard = tracia::telemetry::init()?;
/// // ...
/// guard.flush().await;
/// for s in guard.stats() {
///     assert_eq!(s.lost(), 0, "{} lost spans", s.exporter);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    reporters: Vec<Arc<Reporter>>,
    filter: Option<String>,
    extras: SpanExtras,
    installed_as: Option<u64>,
}

impl TelemetryGuard {
    /// The `tracing-opentelemetry` layer feeding this pipeline, with Tracia's filter:
    /// the user's directive (or `RUST_LOG`, else `info`) plus Tracia's own spans always;
    /// code, thread and timing attributes only as the builder turned them on.
    pub fn layer<S>(&self) -> impl Layer<S> + 'static
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        self.provider
            .as_ref()
            .map(|provider| layer_with_filter(provider, self.filter.as_deref(), self.extras))
    }

    /// The tracer provider, to add your own processors' spans or to install it yourself.
    pub fn provider(&self) -> Option<&SdkTracerProvider> {
        self.provider.as_ref()
    }

    /// Waits until every span ended so far has been exported (or given up on), at
    /// most 60 s per backend.
    pub async fn flush(&self) {
        if let Some(provider) = &self.provider {
            flush_provider(provider.clone()).await;
        }
    }

    /// Delivery counts per backend.
    pub fn stats(&self) -> Vec<ExportStats> {
        self.reporters.iter().map(|r| r.stats()).collect()
    }

    /// Flushes and shuts the pipeline down now (dropping the guard does the same).
    pub async fn shutdown(mut self) {
        self.forget_installed();
        if let Some(provider) = self.provider.take() {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

impl TelemetryGuard {
    fn forget_installed(&mut self) {
        if let Some(id) = self.installed_as.take() {
            installed().retain(|(i, _)| *i != id);
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.forget_installed();
        if let Some(provider) = self.provider.take() {
            // Blocks until the queues are drained; the exporters run on their own
            // threads, so this finishes even on a current-thread runtime.
            let _ = provider.shutdown();
        }
    }
}

/// A `tracing_subscriber::fmt` field formatter that escapes control characters in
/// every field (the message included) as Rust escapes (`\n`, `\u{1b}`): values from
/// outside (model names, provider messages, paths, headers) cannot forge log lines nor
/// drive the operator's terminal, whatever call site logs them. Fields are formatted
/// as `fmt`'s default would, then escaped; the formatter's own colours are untouched.
/// [`TelemetryBuilder::init`] uses it for its `fmt` layer.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// let subscriber = tracing_subscriber::registry()
///     .with(tracing_subscriber::fmt::layer().fmt_fields(tracia::telemetry::EscapedFields));
/// tracing::subscriber::with_default(subscriber, || {
///     tracing::warn!(model = "gpt-4o\nINFO forged", "call failed");
/// });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut plain = String::new();
        tracing_subscriber::fmt::format::DefaultFields::new().format_fields(
            tracing_subscriber::fmt::format::Writer::new(&mut plain),
            fields,
        )?;
        if !plain.chars().any(char::is_control) {
            return writer.write_str(&plain);
        }
        let mut escaped = String::with_capacity(plain.len() + 16);
        for c in plain.chars() {
            if c.is_control() {
                escaped.extend(c.escape_default());
            } else {
                escaped.push(c);
            }
        }
        writer.write_str(&escaped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_decode() {
        let h = parse_headers("api-key=a%20b, x-team=ml").unwrap();
        assert_eq!(h["api-key"], "a b");
        assert_eq!(h["x-team"], "ml");
        let err = parse_headers("secret-without-equals").unwrap_err();
        assert!(!err.message().contains("secret"));
    }
}
