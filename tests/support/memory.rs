//! Spans kept in memory: the OTel SDK's in-memory exporter behind a simple processor,
//! bridged by the public `tracia::telemetry::layer`, as this thread's subscriber.

use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

/// The in-memory pipeline; spans are read back by id or all at once.
pub struct Memory {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _subscriber: tracing::subscriber::DefaultGuard,
}

impl Memory {
    /// Installs it on this thread until dropped.
    pub fn install() -> Self {
        super::keep_callsite_interest_shared();
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_id_generator(tracia::TraciaIdGenerator)
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(tracia::telemetry::layer(&provider));
        Memory {
            exporter,
            provider,
            _subscriber: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Every span ended so far.
    pub fn spans(&self) -> Vec<SpanData> {
        let _ = self.provider.force_flush();
        self.exporter.get_finished_spans().unwrap()
    }

    /// The exported span of a result's `sp_…` id, which must have been exported once.
    pub fn span(&self, span_id: &str) -> SpanData {
        let id = tracia::ids::parse_span_id(span_id).unwrap();
        let mut spans: Vec<SpanData> = self
            .spans()
            .into_iter()
            .filter(|s| s.span_context.span_id() == id)
            .collect();
        assert_eq!(spans.len(), 1, "span {span_id} exported exactly once");
        spans.remove(0)
    }
}
