//! A failing backend never slows or breaks the LLM call, and every span it could not
//! take is counted and reported, not silently lost.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{
    FakeProvider, FakeTracia, OtlpReceiver, ReceiverMode, client, install, pipeline_with,
};
use tracia::ExportFailure;

const KEY: &str = "tr_test_key_0123456789abcdef";
const CALLS: usize = 20;

fn recorder() -> (
    Arc<Mutex<Vec<ExportFailure>>>,
    impl Fn(&ExportFailure) + Send + Sync + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (seen, move |f: &ExportFailure| {
        sink.lock().unwrap().push(f.clone())
    })
}

/// Both backends answer 503 throughout: every call succeeds, and after shutdown every
/// span is accounted for as lost, once, with a report.
#[tokio::test(flavor = "multi_thread")]
async fn backends_answering_503_lose_nothing_silently() {
    let (fake, otlp, cloud) = support::servers(KEY).await;
    otlp.set_mode(ReceiverMode::Status(503));
    cloud.set_mode(ReceiverMode::Status(503));
    support::enqueue_times(&fake, "openai/chat-1", CALLS);
    let (seen, callback) = recorder();
    let guard = pipeline_with(Some(&otlp), Some((&cloud, KEY)), |b| {
        b.on_export_failure(callback)
    });
    let sub = install(&guard);
    let tracia = client(&fake);
    support::run_calls(&tracia, CALLS).await;
    drop(sub);
    guard.flush().await;
    let stats = guard.stats();
    guard.shutdown().await;

    for s in &stats {
        assert_eq!(s.queued, CALLS as u64, "{s:?}");
        assert_eq!(s.delivered, 0, "{s:?}");
        assert_eq!(s.lost(), CALLS as u64, "{s:?}");
    }
    let reports = seen.lock().unwrap().clone();
    for exporter in ["otlp", "tracia"] {
        let lost: u64 = reports
            .iter()
            .filter(|f| f.exporter == exporter)
            .map(|f| f.spans)
            .sum();
        assert_eq!(
            lost, CALLS as u64,
            "each lost {exporter} span is reported exactly once: {reports:?}"
        );
    }
    assert!(
        reports.iter().all(|f| !f.reason.contains(KEY)),
        "no secret in reports"
    );
    assert!(
        otlp.requests_count() > 0 && cloud.requests_count() >= CALLS,
        "the exporters did try (and retry)"
    );
}

/// The backend is down, then comes back: spans made after it returns are delivered
/// without any action, and the earlier ones are reported lost.
#[tokio::test(flavor = "multi_thread")]
async fn delivery_resumes_by_itself_when_the_backend_returns() {
    let (fake, cloud) = (FakeProvider::start().await, FakeTracia::start(KEY).await);
    support::enqueue_times(&fake, "openai/chat-1", 4);
    cloud.set_mode(ReceiverMode::Status(503));
    let (seen, callback) = recorder();
    let guard = pipeline_with(None, Some((&cloud, KEY)), |b| b.on_export_failure(callback));
    let _sub = install(&guard);
    let tracia = client(&fake);
    support::run_calls(&tracia, 2).await;
    guard.flush().await;
    cloud.set_mode(ReceiverMode::Ok);
    let ok = support::run_calls(&tracia, 2).await;
    guard.flush().await;
    let delivered: Vec<String> = cloud
        .spans()
        .await
        .iter()
        .map(|p| p["spanId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        delivered, ok,
        "exactly the spans made after recovery, each once"
    );
    let s = guard.stats()[0];
    assert_eq!((s.delivered, s.failed), (2, 2));
    assert_eq!(seen.lock().unwrap().iter().map(|f| f.spans).sum::<u64>(), 2);
}

/// A backend that accepts connections and never answers: calls are unaffected and the
/// exporter's own timeout ends each attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_otlp_backend_does_not_hold_up_calls() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    otlp.set_mode(ReceiverMode::Hang);
    support::enqueue_times(&fake, "openai/chat-1", CALLS);
    let guard = pipeline_with(Some(&otlp), None, |b| {
        b.with_otlp_timeout(Duration::from_millis(300))
            .with_max_export_batch_size(4)
    });
    let _sub = install(&guard);
    let tracia = client(&fake);
    support::run_calls(&tracia, CALLS).await;
    guard.flush().await;
    let s = guard.stats()[0];
    assert_eq!(s.queued, CALLS as u64);
    assert_eq!(s.delivered, 0);
    assert!(s.failed > 0, "{s:?}");
}

/// A queue smaller than the burst: the overflow is counted and reported at shutdown.
#[tokio::test(flavor = "multi_thread")]
async fn queue_overflow_is_counted_and_reported() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    otlp.set_mode(ReceiverMode::Hang);
    support::enqueue_times(&fake, "openai/chat-1", CALLS);
    let (seen, callback) = recorder();
    let guard = pipeline_with(Some(&otlp), None, |b| {
        b.with_otlp_timeout(Duration::from_millis(200))
            .with_max_queue_size(4)
            .with_max_export_batch_size(2)
            .on_export_failure(callback)
    });
    let sub = install(&guard);
    let tracia = client(&fake);
    support::run_calls(&tracia, CALLS).await;
    drop(sub);
    guard.shutdown().await;
    let reported: u64 = seen.lock().unwrap().iter().map(|f| f.spans).sum();
    assert_eq!(
        reported, CALLS as u64,
        "failed + dropped = every span, each reported once"
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|f| f.reason.contains("dropped")),
        "the queue overflow is named as such"
    );
}

/// Nothing listens at the endpoint at all: calls work, every span is reported lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_is_down_loses_nothing_silently() {
    let fake = FakeProvider::start().await;
    support::enqueue_times(&fake, "openai/chat-1", 3);
    // A port that was just free: connections to it are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (seen, callback) = recorder();
    let guard = tracia::telemetry::builder()
        .with_otlp_traces_endpoint(format!("http://{closed}/v1/traces"))
        .without_tracia()
        .on_export_failure(callback)
        .build()
        .unwrap();
    let sub = install(&guard);
    let tracia = client(&fake);
    support::run_calls(&tracia, 3).await;
    drop(sub);
    guard.shutdown().await;
    assert_eq!(seen.lock().unwrap().iter().map(|f| f.spans).sum::<u64>(), 3);
}
