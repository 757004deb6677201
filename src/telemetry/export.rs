//! What both exporters share: a runtime of their own, delivery accounting, and the
//! report of spans that could not be delivered.
//!
//! The SDK's batch processor calls `export` on its own thread under a plain
//! `block_on`; awaiting Tokio I/O there panics. Exporters here spawn their HTTP work
//! onto a small runtime they own and await the `JoinHandle`, which works from any
//! executor, outlives the application's runtime at exit, and can never deadlock a
//! current-thread runtime that is waiting in `flush()`.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

/// A single-threaded Tokio runtime on its own thread, for export I/O only.
#[derive(Debug)]
pub(crate) struct ExportRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ExportRuntime {
    pub fn start() -> std::io::Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("tracia-export".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Arc::new(Self {
            handle,
            stop: Some(stop),
        }))
    }

    /// Runs `work` on the export runtime; awaitable from any executor.
    pub async fn run<F, T>(&self, work: F) -> Option<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.handle.spawn(work).await.ok()
    }
}

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The OTLP exporter's HTTP client: async reqwest, driven on the export runtime.
#[derive(Debug)]
pub(crate) struct BackgroundHttpClient {
    pub client: reqwest::Client,
    pub runtime: Arc<ExportRuntime>,
}

#[async_trait::async_trait]
impl HttpClient for BackgroundHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let request = reqwest::Request::try_from(request)?;
        let work = async move {
            let response = client.execute(request).await?;
            let mut out = http::Response::builder().status(response.status());
            if let Some(headers) = out.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await?;
            Ok::<_, HttpError>(out.body(body)?)
        };
        self.runtime
            .run(work)
            .await
            .unwrap_or_else(|| Err("the export runtime has stopped".into()))
    }
}

/// Spans that could not be delivered, as reported to [`crate::TelemetryBuilder::on_export_failure`].
///
/// ```
/// let report = |f: &tracia::ExportFailure| eprintln!("{} lost {} spans: {}", f.exporter, f.spans, f.reason);
/// # drop(report);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExportFailure {
    /// `"otlp"` or `"tracia"`.
    pub exporter: &'static str,
    /// How many spans were lost.
    pub spans: u64,
    /// Why (no secrets).
    pub reason: String,
}

/// Delivery counts of one exporter pipeline.
///
/// `queued` spans entered the pipeline; each ends `delivered`, `failed` (the backend
/// refused or was unreachable after retries), `skipped` (not for this backend: the
/// Tracia exporter takes only GenAI spans), or is still pending; after a flush,
/// [`ExportStats::lost`] is exactly the spans that never arrived, queue overflow included.
///
/// ```
/// # fn demo(guard: &tracia::TelemetryGuard) {
/// for stats in guard.stats() {
///     println!("{}: {} delivered, {} lost", stats.exporter, stats.delivered, stats.lost());
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportStats {
    /// `"otlp"` or `"tracia"`.
    pub exporter: &'static str,
    /// Spans handed to the pipeline.
    pub queued: u64,
    /// Spans the backend accepted.
    pub delivered: u64,
    /// Spans the exporter gave up on.
    pub failed: u64,
    /// Spans not meant for this backend.
    pub skipped: u64,
}

impl ExportStats {
    /// Spans not delivered and not skipped: failed, dropped on a full queue, or (before a
    /// flush) still pending.
    pub fn lost(&self) -> u64 {
        self.queued.saturating_sub(self.delivered + self.skipped)
    }
}

pub(crate) type FailureCallback = Arc<dyn Fn(&ExportFailure) + Send + Sync>;

/// The counters of one pipeline, shared by its processor and exporter.
pub(crate) struct Reporter {
    exporter: &'static str,
    queued: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    /// Set by the shutdown report: what fails after it was counted in it already.
    closed: Mutex<bool>,
    on_failure: Option<FailureCallback>,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.stats().fmt(f)
    }
}

impl Reporter {
    pub fn new(exporter: &'static str, on_failure: Option<FailureCallback>) -> Arc<Self> {
        Arc::new(Self {
            exporter,
            queued: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            closed: Mutex::new(false),
            on_failure,
        })
    }

    pub fn delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
    }

    pub fn skipped(&self, n: u64) {
        self.skipped.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts and reports lost spans: a warning event and the user's callback.
    pub fn failed(&self, n: u64, reason: &str) {
        if n == 0 {
            return;
        }
        {
            let closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
            if *closed {
                // An export that outlived a timed-out shutdown: its spans were
                // reported lost by `report_dropped` already.
                return;
            }
            self.failed.fetch_add(n, Ordering::Relaxed);
        }
        self.report(n, reason);
    }

    fn report(&self, n: u64, reason: &str) {
        let reason = crate::error::redact(reason);
        tracing::warn!(target: "tracia::export", exporter = self.exporter, spans = n, %reason, "spans could not be delivered");
        if let Some(callback) = &self.on_failure {
            // A panicking callback must not take the export thread down with it.
            let failure = ExportFailure {
                exporter: self.exporter,
                spans: n,
                reason,
            };
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(&failure)));
        }
    }

    pub fn stats(&self) -> ExportStats {
        ExportStats {
            exporter: self.exporter,
            queued: self.queued.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }

    /// After shutdown: spans neither delivered, skipped nor already reported as failed
    /// were dropped in the queue; report them too, so nothing vanishes silently.
    /// Runs once; failures counted after it are not reported again (a shutdown that
    /// timed out leaves exports running, whose spans are among those reported here).
    pub fn report_dropped(&self) {
        let dropped = {
            let mut closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
            if std::mem::replace(&mut *closed, true) {
                return;
            }
            let s = self.stats();
            let dropped = s.queued.saturating_sub(s.delivered + s.skipped + s.failed);
            self.failed.fetch_add(dropped, Ordering::Relaxed);
            dropped
        };
        if dropped > 0 {
            self.report(
                dropped,
                "dropped before export (queue full or shut down before delivery)",
            );
        }
    }
}

/// The longest [`CountingProcessor::force_flush`] waits for a backend's exports.
pub(crate) const FLUSH_LIMIT: Duration = Duration::from_secs(60);

/// Counts spans entering a processor (the batch processor's queue drops are otherwise
/// invisible), and for the Tracia backend marks GenAI spans' uploads pending from here
/// on, so `spans().evaluate` waits for them also while they sit in the queue.
#[derive(Debug)]
pub(crate) struct CountingProcessor<P> {
    pub inner: P,
    pub reporter: Arc<Reporter>,
    pub track_pending: bool,
}

impl<P: SpanProcessor> SpanProcessor for CountingProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.reporter.queued.fetch_add(1, Ordering::Relaxed);
        if self.track_pending && crate::telemetry::semconv::genai_operation(&span).is_some() {
            crate::telemetry::pending::mark(span.span_context.span_id());
        }
        self.inner.on_end(span);
    }

    /// The batch processor stops waiting after 5 s while its export goes on; this waits
    /// on (up to [`FLUSH_LIMIT`]), so that a flush means delivered or given up on.
    fn force_flush(&self) -> OTelSdkResult {
        let deadline = Instant::now() + FLUSH_LIMIT;
        loop {
            match self.inner.force_flush() {
                Err(OTelSdkError::Timeout(_)) if Instant::now() < deadline => continue,
                result => return result,
            }
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let result = self.inner.shutdown_with_timeout(timeout);
        self.reporter.report_dropped();
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts what a wrapped exporter (OTLP) delivers and loses.
#[derive(Debug)]
pub(crate) struct CountingExporter<E> {
    pub inner: E,
    pub reporter: Arc<Reporter>,
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for CountingExporter<E>
{
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => self.reporter.delivered(n),
            Err(e) => self.reporter.failed(n, &e.to_string()),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
