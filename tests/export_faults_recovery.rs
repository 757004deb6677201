//! Each export backend (OTLP receiver, Tracia API) in each kind of outage: down (port
//! refusing connections), hanging, answering 500, 503 or 429 with `Retry-After`, or
//! closing connections mid-request. In every case the LLM calls go on without waiting
//! for export, the queue bounds what is kept, delivery resumes by itself when the
//! backend is back, nothing arrives twice, and every span that never arrived is
//! reported to `on_export_failure` exactly once.
//!
//! Nothing here measures time: the waits are bounds on progress the exporter makes by
//! itself, and "calls do not wait on export" is shown by order (all calls returned while
//! an export with a 60 s timeout was still held).

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{FakeProvider, FakeTracia, OtlpReceiver, ReceiverMode, client, install};
use tracia::{ExportFailure, ExportStats, TelemetryGuard};

const KEY: &str = "tr_test_key_0123456789abcdef";
/// Calls made while the backend is out: more than a queue and a batch hold.
const DURING: usize = 12;
/// Calls made once it is back.
const AFTER: usize = 4;
const QUEUE: usize = 4;
const BATCH: usize = 2;
/// A bound on what the exporter does by itself (retries, backoff), never a measure.
const PROGRESS: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Otlp,
    Tracia,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Nothing listens on the port (connections refused).
    Down,
    /// Requests are held, never answered, while the outage lasts.
    Hang,
    /// Every request answered with this status.
    Status(u16),
    /// 429 with `Retry-After: 1`.
    Throttled,
    /// Every request read, then its connection closed without an answer.
    Close,
}

/// The backend under test, as one of the two fake servers.
enum Target {
    Otlp(OtlpReceiver),
    Tracia(FakeTracia),
}

impl Target {
    async fn start(backend: Backend, fault: Fault) -> Self {
        let target = match (backend, fault) {
            (Backend::Otlp, Fault::Down) => Target::Otlp(OtlpReceiver::start_down().await),
            (Backend::Otlp, _) => Target::Otlp(OtlpReceiver::start().await),
            (Backend::Tracia, Fault::Down) => Target::Tracia(FakeTracia::start_down(KEY).await),
            (Backend::Tracia, _) => Target::Tracia(FakeTracia::start(KEY).await),
        };
        let mode = match fault {
            Fault::Down => None,
            Fault::Hang => Some(ReceiverMode::Hang),
            Fault::Status(status) => Some(ReceiverMode::Status(status)),
            Fault::Throttled => {
                target.set_retry_after(Some("1"));
                Some(ReceiverMode::Status(429))
            }
            Fault::Close => Some(ReceiverMode::Close),
        };
        if let Some(mode) = mode {
            target.set_mode(mode);
        }
        target
    }

    async fn healthy(backend: Backend) -> Self {
        match backend {
            Backend::Otlp => Target::Otlp(OtlpReceiver::start().await),
            Backend::Tracia => Target::Tracia(FakeTracia::start(KEY).await),
        }
    }

    fn set_mode(&self, mode: ReceiverMode) {
        match self {
            Target::Otlp(r) => r.set_mode(mode),
            Target::Tracia(t) => t.set_mode(mode),
        }
    }

    fn set_retry_after(&self, value: Option<&str>) {
        match self {
            Target::Otlp(r) => r.set_retry_after(value),
            Target::Tracia(t) => t.set_retry_after(value),
        }
    }

    /// The outage ends: the port starts listening, or the server answers normally.
    async fn recover(&self, fault: Fault) {
        match (self, fault) {
            (Target::Otlp(r), Fault::Down) => r.come_up().await,
            (Target::Tracia(t), Fault::Down) => t.come_up().await,
            _ => {
                self.set_retry_after(None);
                self.set_mode(ReceiverMode::Ok);
            }
        }
    }

    fn fail_next(&self, n: usize, status: u16) {
        match self {
            Target::Otlp(r) => r.fail_next(n, status),
            Target::Tracia(t) => t.fail_next(n, status),
        }
    }

    fn requests(&self) -> usize {
        match self {
            Target::Otlp(r) => r.requests_count(),
            Target::Tracia(t) => t.requests_count(),
        }
    }

    /// The ids (`sp_…`) of the spans the backend accepted, in arrival order.
    async fn delivered(&self) -> Vec<String> {
        match self {
            Target::Otlp(r) => r
                .span_ids()
                .into_iter()
                .map(|id| format!("sp_{id}"))
                .collect(),
            Target::Tracia(t) => t
                .spans()
                .await
                .iter()
                .map(|p| p["spanId"].as_str().expect("spanId").to_owned())
                .collect(),
        }
    }
}

type Reports = Arc<Mutex<Vec<ExportFailure>>>;

fn recorder() -> (Reports, impl Fn(&ExportFailure) + Send + Sync + 'static) {
    let seen = Reports::default();
    let sink = seen.clone();
    (seen, move |f: &ExportFailure| {
        sink.lock().unwrap().push(f.clone())
    })
}

fn reported(reports: &Reports) -> u64 {
    reports.lock().unwrap().iter().map(|f| f.spans).sum()
}

fn pipeline(
    target: &Target,
    on_failure: impl Fn(&ExportFailure) + Send + Sync + 'static,
) -> TelemetryGuard {
    let (otlp, tracia) = match target {
        Target::Otlp(r) => (Some(r), None),
        Target::Tracia(t) => (None, Some((t, KEY))),
    };
    support::pipeline_with(otlp, tracia, |b| {
        // Long enough that no export attempt times out while a test runs.
        b.with_otlp_timeout(Duration::from_secs(60))
            .with_max_queue_size(QUEUE)
            .with_max_export_batch_size(BATCH)
            .on_export_failure(on_failure)
    })
}

fn stats(guard: &TelemetryGuard) -> ExportStats {
    let all = guard.stats();
    assert_eq!(all.len(), 1, "one backend: {all:?}");
    all[0]
}

/// Polls `done` until it holds, at most [`PROGRESS`]; false if it never did.
async fn eventually(mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + PROGRESS;
    loop {
        if done().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn outage_then_recovery(backend: Backend, fault: Fault) {
    let fake = FakeProvider::start().await;
    fake.repeat_fixture("openai/chat-1");
    let target = Target::start(backend, fault).await;
    let (reports, on_failure) = recorder();
    let guard = pipeline(&target, on_failure);
    let sub = install(&guard);
    let tracia = client(&fake);

    // The outage: every call returns, whatever export is doing.
    let during = support::run_calls(&tracia, DURING).await;
    let s = stats(&guard);
    assert_eq!(s.queued, DURING as u64, "{s:?}");
    if fault == Fault::Hang {
        assert!(
            eventually(async || target.requests() > 0).await,
            "the first export reached the hanging backend"
        );
        // That export is held, and its timeout is 60 s: the calls above cannot have
        // waited for it.
        let s = stats(&guard);
        assert_eq!(
            (s.delivered, s.failed),
            (0, 0),
            "every call returned while the first export was still held: {s:?}"
        );
    } else {
        assert!(
            eventually(async || stats(&guard).failed > 0).await,
            "the exporter met the outage: {:?}",
            stats(&guard)
        );
    }

    // The backend comes back; nothing is restarted or reconfigured. The backlog of the
    // outage (a full queue) drains first: spans ended before it has are dropped.
    target.recover(fault).await;
    guard.flush().await;
    let after = support::run_calls(&tracia, AFTER).await;
    assert!(
        eventually(async || {
            let delivered: HashSet<String> = target.delivered().await.into_iter().collect();
            after.iter().all(|id| delivered.contains(id))
        })
        .await,
        "delivery resumed by itself: {:?} of {after:?} arrived",
        target.delivered().await
    );
    drop(sub);
    guard.flush().await;

    let delivered = target.delivered().await;
    let unique: HashSet<&String> = delivered.iter().collect();
    assert_eq!(
        unique.len(),
        delivered.len(),
        "nothing delivered twice: {delivered:?}"
    );
    let made: HashSet<&String> = during.iter().chain(&after).collect();
    assert!(unique.is_subset(&made), "only spans of these calls arrived");
    let kept = during.iter().filter(|id| unique.contains(id)).count();
    assert!(
        kept <= QUEUE + BATCH,
        "memory is bounded: at most a queue ({QUEUE}) and a batch ({BATCH}) of the \
         {DURING} outage spans were kept, {kept} arrived"
    );

    let s = stats(&guard);
    assert_eq!(s.queued, (DURING + AFTER) as u64, "{s:?}");
    assert_eq!(s.skipped, 0, "{s:?}");
    assert_eq!(s.delivered, unique.len() as u64, "{s:?}");
    let lost = s.lost();
    if fault == Fault::Hang {
        // Held exports were cut when the backend came back, and their retry went
        // through; what was lost overflowed the queue.
        assert_eq!(s.failed, 0, "{s:?}");
        assert!(
            lost >= (DURING - QUEUE - BATCH) as u64,
            "the overflow was dropped: {s:?}"
        );
    }
    guard.shutdown().await;

    let total = reported(&reports);
    assert_eq!(
        total,
        lost,
        "each undelivered span is reported exactly once: {:?}",
        reports.lock().unwrap()
    );
    assert_eq!(
        lost as usize + unique.len(),
        DURING + AFTER,
        "delivered + reported = every span"
    );
    let reports = reports.lock().unwrap();
    assert!(
        reports.iter().all(|f| !f.reason.contains(KEY)),
        "{reports:?}"
    );
    let exporter = match backend {
        Backend::Otlp => "otlp",
        Backend::Tracia => "tracia",
    };
    assert!(
        reports.iter().all(|f| f.exporter == exporter),
        "{reports:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_down_then_back() {
    outage_then_recovery(Backend::Otlp, Fault::Down).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_hanging_then_back() {
    outage_then_recovery(Backend::Otlp, Fault::Hang).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_answering_500_then_back() {
    outage_then_recovery(Backend::Otlp, Fault::Status(500)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_answering_503_then_back() {
    outage_then_recovery(Backend::Otlp, Fault::Status(503)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_throttling_with_retry_after_then_back() {
    outage_then_recovery(Backend::Otlp, Fault::Throttled).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_closing_connections_mid_request_then_back() {
    outage_then_recovery(Backend::Otlp, Fault::Close).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tracia_down_then_back() {
    outage_then_recovery(Backend::Tracia, Fault::Down).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tracia_hanging_then_back() {
    outage_then_recovery(Backend::Tracia, Fault::Hang).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tracia_answering_500_then_back() {
    outage_then_recovery(Backend::Tracia, Fault::Status(500)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tracia_answering_503_then_back() {
    outage_then_recovery(Backend::Tracia, Fault::Status(503)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tracia_throttling_with_retry_after_then_back() {
    outage_then_recovery(Backend::Tracia, Fault::Throttled).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tracia_closing_connections_mid_request_then_back() {
    outage_then_recovery(Backend::Tracia, Fault::Close).await;
}

/// The ids (`sp_…`) of the spans in each OTLP request the receiver got, answered or not.
async fn requested_ids(otlp: &OtlpReceiver) -> Vec<HashSet<String>> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    otlp.requests()
        .await
        .iter()
        .map(|r| {
            let request = ExportTraceServiceRequest::decode(r.raw_body.clone()).expect("protobuf");
            request
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
                .map(|span| {
                    let hex: String = span.span_id.iter().map(|b| format!("{b:02x}")).collect();
                    format!("sp_{hex}")
                })
                .collect()
        })
        .collect()
}

/// Shutdown gives up after its 5 s bound while an export is held, and reports every
/// span not delivered by then. What the stuck worker does afterwards (the held export
/// fails, the rest of the queue is tried) must not report the same spans again.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_while_the_backend_hangs_reports_each_span_once() {
    let fake = FakeProvider::start().await;
    fake.repeat_fixture("openai/chat-1");
    let target = Target::start(Backend::Otlp, Fault::Hang).await;
    let Target::Otlp(otlp) = &target else {
        unreachable!()
    };
    let (reports, on_failure) = recorder();
    let guard = pipeline(&target, on_failure);
    let sub = install(&guard);
    let made = support::run_calls(&client(&fake), DURING).await;
    assert!(
        eventually(async || otlp.requests_count() > 0).await,
        "the first export reached the hanging backend"
    );
    drop(sub);
    tokio::time::timeout(PROGRESS, guard.shutdown())
        .await
        .expect("shutdown is bounded even while an export hangs");
    assert_eq!(
        reported(&reports),
        DURING as u64,
        "at shutdown every span is reported lost: {:?}",
        reports.lock().unwrap()
    );

    // The held export now fails, and the worker goes on to the spans still queued: the
    // first request carrying other spans than the held one proves the held export's
    // outcome has been counted.
    let held = requested_ids(otlp).await[0].clone();
    assert!(!held.is_empty() && held.iter().all(|id| made.contains(id)));
    otlp.set_mode(ReceiverMode::Status(500));
    assert!(
        eventually(async || requested_ids(otlp)
            .await
            .iter()
            .any(|ids| ids.is_disjoint(&held)))
        .await,
        "the worker went on to the queued spans"
    );
    assert!(otlp.span_ids().is_empty(), "nothing was accepted");
    assert_eq!(
        reported(&reports),
        DURING as u64,
        "no span is reported lost twice: {:?}",
        reports.lock().unwrap()
    );
}

/// `flush()` promises every span ended so far is exported or given up on when it
/// returns. An export waiting out a `Retry-After` longer than the batch processor's
/// 5 s flush wait is neither yet.
async fn flush_outlasts_a_slow_export(backend: Backend) {
    let fake = FakeProvider::start().await;
    fake.repeat_fixture("openai/chat-1");
    let target = Target::healthy(backend).await;
    target.fail_next(1, 429);
    target.set_retry_after(Some("6"));
    let (reports, on_failure) = recorder();
    let guard = pipeline(&target, on_failure);
    let sub = install(&guard);
    let id = support::run_calls(&client(&fake), 1).await.remove(0);
    drop(sub);
    tokio::time::timeout(PROGRESS, guard.flush())
        .await
        .expect("flush does not deadlock");
    assert_eq!(
        target.delivered().await,
        vec![id],
        "flush returned before the span was delivered (its export was waiting out \
         Retry-After: 6)"
    );
    assert_eq!(target.requests(), 2, "429, then the retry");
    let s = stats(&guard);
    assert_eq!((s.delivered, s.lost()), (1, 0), "{s:?}");
    guard.shutdown().await;
    assert_eq!(reported(&reports), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn flush_outlasts_a_slow_otlp_export() {
    flush_outlasts_a_slow_export(Backend::Otlp).await;
}

#[tokio::test(flavor = "current_thread")]
async fn flush_outlasts_a_slow_tracia_export() {
    flush_outlasts_a_slow_export(Backend::Tracia).await;
}
