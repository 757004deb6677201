//! Building the SDK under test against the fake servers.

use std::time::Duration;

use tracia::{Provider, TelemetryGuard, Tracia};

use super::{FakeProvider, FakeTracia, OtlpReceiver};

/// A client pointed at the fake OpenAI server, ignoring the environment.
pub fn client(openai: &FakeProvider) -> Tracia {
    client_with(openai, |b| b)
}

/// The same, with extra builder settings.
pub fn client_with(
    openai: &FakeProvider,
    f: impl FnOnce(tracia::TraciaBuilder) -> tracia::TraciaBuilder,
) -> Tracia {
    keep_callsite_interest_shared();
    f(Tracia::builder()
        .without_env()
        .with_api_key(Provider::OpenAi, "sk-test-0123456789abcdefghijklmnop")
        .with_base_url(Provider::OpenAi, openai.base_url()))
    .build()
    .expect("client builds")
}

/// A telemetry pipeline exporting to the given receivers, not installed globally.
pub fn pipeline(
    otlp: Option<&OtlpReceiver>,
    tracia: Option<(&FakeTracia, &str)>,
) -> TelemetryGuard {
    pipeline_with(otlp, tracia, |b| b)
}

/// The same, with extra builder settings.
pub fn pipeline_with(
    otlp: Option<&OtlpReceiver>,
    tracia: Option<(&FakeTracia, &str)>,
    f: impl FnOnce(tracia::TelemetryBuilder) -> tracia::TelemetryBuilder,
) -> TelemetryGuard {
    let tracia = tracia.map(|(t, key)| (t.base_url(), key));
    pipeline_at(
        otlp,
        tracia.as_ref().map(|(url, key)| (url.as_str(), *key)),
        f,
    )
}

/// The same, exporting to Tracia at any base URL (a collector's, say) with a key.
pub fn pipeline_at(
    otlp: Option<&OtlpReceiver>,
    tracia: Option<(&str, &str)>,
    f: impl FnOnce(tracia::TelemetryBuilder) -> tracia::TelemetryBuilder,
) -> TelemetryGuard {
    keep_callsite_interest_shared();
    let mut b = tracia::telemetry::builder()
        .with_service_name("tracia-tests")
        .with_scheduled_delay(Duration::from_millis(50))
        .with_filter("info");
    b = match otlp {
        Some(r) => b.with_otlp_traces_endpoint(r.traces_url()),
        None => b.without_otlp(),
    };
    b = match tracia {
        Some((url, key)) => b.with_tracia_base_url(url).with_tracia_api_key(key),
        None => b.without_tracia(),
    };
    f(b).build().expect("pipeline builds")
}

/// Installs the guard's layer as this thread's subscriber until the returned guard drops.
pub fn install(guard: &TelemetryGuard) -> tracing::subscriber::DefaultGuard {
    use tracing_subscriber::layer::SubscriberExt;
    keep_callsite_interest_shared();
    tracing::subscriber::set_default(tracing_subscriber::registry().with(guard.layer()))
}

/// Installs [`Undecided`] as the global subscriber, once per test process. Every client
/// and pipeline helper calls it, so it is in place before any test's first span.
pub fn keep_callsite_interest_shared() {
    static UNDECIDED: std::sync::Once = std::sync::Once::new();
    UNDECIDED.call_once(|| {
        tracing::subscriber::set_global_default(Undecided).expect("no global subscriber yet");
    });
}

/// The process-wide fallback while tests install per-thread subscribers concurrently.
///
/// tracing caches one interest per callsite for the whole process. A callsite first hit
/// on a thread without a subscriber, while at most one per-thread subscriber is
/// registered, is cached as "never", and then even the thread whose subscriber wants
/// the span gets none (an LLM call's span went missing under load). Answering
/// "sometimes" keeps that cache undecided, so each span asks its own thread's
/// subscriber; this one enables nothing.
struct Undecided;

impl tracing::Subscriber for Undecided {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// A fake provider, an OTLP receiver and a fake Tracia API accepting `key`.
pub async fn servers(key: &str) -> (FakeProvider, OtlpReceiver, FakeTracia) {
    (
        FakeProvider::start().await,
        OtlpReceiver::start().await,
        FakeTracia::start(key).await,
    )
}

/// Queues the same recorded exchange `n` times.
pub fn enqueue_times(fake: &FakeProvider, fixture: &str, n: usize) {
    for _ in 0..n {
        fake.enqueue_fixture(fixture);
    }
}

/// Makes `n` plain calls and returns their span ids. The 60 s bound is a deadlock guard
/// (calls must never wait on export), not a speed check.
pub async fn run_calls(tracia: &Tracia, n: usize) -> Vec<String> {
    let calls = async {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(
                tracia
                    .run_local(tracia::RunLocal::new("gpt-4o").user("hi"))
                    .await
                    .unwrap()
                    .span_id,
            );
        }
        ids
    };
    tokio::time::timeout(Duration::from_secs(60), calls)
        .await
        .expect("LLM calls complete whatever the export backends do")
}
