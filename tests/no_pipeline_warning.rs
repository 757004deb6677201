//! A traced call that no OpenTelemetry pipeline sees still works, and warns once per
//! process that its spans go nowhere: through `tracing` when a subscriber is installed,
//! on stderr too when none is. Its own test binary: "once per process" is the point.

mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};

use support::FakeProvider;
use tracia::{Provider, RunLocal, Tracia};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

const WARNING: &str = "no OpenTelemetry pipeline sees the spans of LLM calls";
/// Set in the child process of `without_any_subscriber_the_warning_goes_to_stderr`.
const CHILD: &str = "TRACIA_TEST_NO_SUBSCRIBER_CHILD";

/// Keeps the events a subscriber with no OpenTelemetry layer receives.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<(String, tracing::Level, String)>>>);

impl<S: tracing::Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let meta = event.metadata();
        self.0
            .lock()
            .unwrap()
            .push((meta.target().to_owned(), *meta.level(), message.0));
    }
}

fn tracia(fake: &FakeProvider) -> Tracia {
    // Not `support::client`: it installs a global subscriber, and the child process
    // must have none.
    Tracia::builder()
        .without_env()
        .with_api_key(Provider::OpenAi, "sk-test-0123456789abcdefghijklmnop")
        .with_base_url(Provider::OpenAi, fake.base_url())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_traced_call_without_a_pipeline_warns_once_through_tracing() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let fake = FakeProvider::start().await;
    support::enqueue_times(&fake, "openai/chat-1", 3);
    let events = Events::default();
    let _sub =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));
    let tracia = tracia(&fake);
    let warnings = || {
        events
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, m)| m.contains(WARNING))
            .cloned()
            .collect::<Vec<_>>()
    };

    let untraced = tracia
        .run_local(RunLocal::new("gpt-4o").user("hi").send_trace(false))
        .await
        .unwrap();
    assert!(untraced.span_id.starts_with("sp_"));
    assert!(
        warnings().is_empty(),
        "send_trace(false) asks for no pipeline"
    );

    for _ in 0..2 {
        let result = tracia
            .run_local(RunLocal::new("gpt-4o").user("hi"))
            .await
            .unwrap();
        assert!(result.span_id.starts_with("sp_") && result.trace_id.starts_with("tr_"));
    }
    let warned = warnings();
    assert_eq!(warned.len(), 1, "once: {warned:?}");
    let (target, level, message) = &warned[0];
    assert_eq!((target.as_str(), *level), ("tracia", tracing::Level::WARN));
    assert!(message.contains("tracia::telemetry::init()"), "{message}");
}

#[test]
fn without_any_subscriber_the_warning_goes_to_stderr() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "calls_in_a_process_without_a_subscriber",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches(WARNING).count(),
        1,
        "once, for two calls: {stderr}"
    );
    assert!(stderr.contains("tracia::telemetry::init()"), "{stderr}");
}

/// Run only as the child process of `without_any_subscriber_the_warning_goes_to_stderr`.
#[tokio::test]
async fn calls_in_a_process_without_a_subscriber() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let fake = FakeProvider::start().await;
    support::enqueue_times(&fake, "openai/chat-1", 2);
    let tracia = tracia(&fake);
    for _ in 0..2 {
        tracia
            .run_local(RunLocal::new("gpt-4o").user("hi"))
            .await
            .unwrap();
    }
}
