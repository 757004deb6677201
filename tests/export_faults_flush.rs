//! Nothing is lost on the way out: `flush()` after 10 000 calls, and the guard's drop at
//! process exit, each deliver every span to a healthy OTLP receiver, on a current-thread
//! runtime (where a flush that blocked the runtime's only thread would deadlock).
//!
//! The exit case runs in a child process: this test binary itself, re-executed with
//! `--exact` on [`child_process_exits_after_its_calls`] and [`CHILD_ENV`] set, so the
//! child's `main` really ends with the guard dropped, as an application's does.

mod support;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use support::{FakeProvider, OtlpReceiver};
use tracia::{Provider, RunLocal, Tracia};

const CALLS: usize = 10_000;
/// Calls in flight at once (the fake provider answers on its own thread).
const CONCURRENCY: usize = 16;
/// Room for every span, so that this tests delivery and not the queue bound: a burst of
/// 10 000 local calls can outrun the exporter, and the default queue (2048) would then
/// drop spans by design (`export_faults_recovery` tests that bound).
const QUEUE: usize = CALLS;
/// A deadlock guard, not a speed check.
const BOUND: Duration = Duration::from_secs(300);
/// Set in the child to `OPENAI_BASE_URL|OTLP_TRACES_URL|IDS_FILE`.
const CHILD_ENV: &str = "TRACIA_TEST_EXIT_CHILD";
const CHILD_TEST: &str = "child_process_exits_after_its_calls";

fn openai_client(base_url: &str) -> Tracia {
    Tracia::builder()
        .without_env()
        .with_api_key(Provider::OpenAi, "sk-test-0123456789abcdefghijklmnop")
        .with_base_url(Provider::OpenAi, base_url)
        .build()
        .expect("client builds")
}

/// `n` calls, [`CONCURRENCY`] at a time; their span ids.
async fn calls(tracia: &Tracia, n: usize) -> Vec<String> {
    let all = futures::stream::iter(0..n)
        .map(|i| async move {
            tracia
                .run_local(RunLocal::new("gpt-4o").user(format!("call {i}")))
                .await
                .expect("the fake provider answers every call")
                .span_id
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>();
    tokio::time::timeout(BOUND, all)
        .await
        .expect("the calls complete")
}

/// Checks the receiver got exactly the spans `ids`, each once.
fn assert_all_delivered_once(otlp: &OtlpReceiver, ids: &[String]) {
    let made: HashSet<&String> = ids.iter().collect();
    assert_eq!(made.len(), CALLS, "every call has its own span id");
    let received: Vec<String> = otlp
        .span_ids()
        .into_iter()
        .map(|id| format!("sp_{id}"))
        .collect();
    let unique: HashSet<&String> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "no span arrived twice");
    let missing = made.difference(&unique).count();
    assert_eq!(missing, 0, "{missing} of {CALLS} spans never arrived");
    assert_eq!(received.len(), CALLS, "only these spans arrived");
}

#[tokio::test(flavor = "current_thread")]
async fn flush_after_ten_thousand_calls_delivers_every_span() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.repeat_fixture("openai/chat-1");
    let guard = support::pipeline_with(Some(&otlp), None, |b| b.with_max_queue_size(QUEUE));
    let sub = support::install(&guard);
    let ids = calls(&support::client(&fake), CALLS).await;
    drop(sub);
    tokio::time::timeout(BOUND, guard.flush())
        .await
        .expect("flush does not deadlock on a current-thread runtime");
    assert_all_delivered_once(&otlp, &ids);
    let s = guard.stats()[0];
    assert_eq!(
        (s.queued, s.delivered, s.lost()),
        (CALLS as u64, CALLS as u64, 0),
        "{s:?}"
    );
    assert_eq!(otlp.errors().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_guard_at_process_exit_delivers_every_span() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.repeat_fixture("openai/chat-1");
    let dir = tempfile::tempdir().unwrap();
    let ids_file = dir.path().join("span-ids");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!(
                "{}|{}|{}",
                fake.base_url(),
                otlp.traces_url(),
                ids_file.display()
            ),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test binary re-executes itself");
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill().unwrap();
            panic!("the child did not exit within {BOUND:?} (a deadlock at exit?)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "the child failed: {status}\n{stderr}");
    let ids: Vec<String> = std::fs::read_to_string(&ids_file)
        .expect("the child wrote its span ids")
        .lines()
        .map(str::to_owned)
        .collect();
    // The child exited only after its guard's drop returned: no waiting here.
    assert_all_delivered_once(&otlp, &ids);
}

/// The child of [`dropping_the_guard_at_process_exit_delivers_every_span`]; without
/// [`CHILD_ENV`] it does nothing. Its `main`: a current-thread runtime, the pipeline
/// installed globally with `init()` (as an application does), 10 000 calls, the span ids
/// written out, and the guard dropped as `main` returns, inside the runtime.
#[test]
fn child_process_exits_after_its_calls() {
    let Ok(setup) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = setup.split('|');
    let (openai, traces, ids_file) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let _telemetry = tracia::telemetry::builder()
            .with_service_name("tracia-exit-child")
            .with_otlp_traces_endpoint(traces)
            .without_tracia()
            .with_max_queue_size(QUEUE)
            .with_fmt(false)
            .init()
            .expect("the pipeline installs");
        let ids = calls(&openai_client(&openai), CALLS).await;
        std::fs::write(&ids_file, ids.join("\n")).unwrap();
        // `_telemetry` drops here: flush and shut down, nothing awaited by the caller.
    });
}
