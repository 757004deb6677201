//! The `quickstart` example as a user runs it: a separate process configured only by
//! environment variables, each provider's base URL pointing at a fake server replaying
//! its recordings, and spans exported by OTLP to a real receiver.
//!
//! `cargo test` builds the examples before it runs the tests; this file runs the built
//! binary (`target/<profile>/examples/quickstart`).

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::{FakeProvider, OtlpReceiver, ReceivedSpan, Reply};

const WAIT: Duration = Duration::from_secs(10);

/// Runs `quickstart --model MODEL [extra…]` with a clean environment plus `env`.
async fn run_quickstart(model: &str, extra: &[&str], env: Vec<(&str, String)>) -> Output {
    let mut cmd = Command::new(support::example_binary("quickstart"));
    cmd.env_clear().arg("--model").arg(model).args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("quickstart runs"))
        .await
        .unwrap()
}

/// What every run shares: the fake's URL for every provider, test keys, the receiver.
fn base_env(fake: &FakeProvider, otlp: &OtlpReceiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.base_url()),
        ("OTEL_SERVICE_NAME", "quickstart-test".into()),
        ("OPENAI_BASE_URL", fake.base_url()),
        (
            "OPENAI_API_KEY",
            "sk-test-0123456789abcdefghijklmnop".into(),
        ),
        ("ANTHROPIC_BASE_URL", fake.url()),
        ("ANTHROPIC_API_KEY", "sk-ant-test-0123456789".into()),
        ("GOOGLE_GEMINI_BASE_URL", fake.url()),
        ("GEMINI_API_KEY", "AIzaSyTest0123456789".into()),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake.url()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE".into()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        ),
    ]
}

/// Runs one model against one fixture and checks the printed answer, the printed ids
/// and the span at the receiver; returns what the provider received.
async fn check(
    model: &str,
    fixture: &str,
    stream: bool,
    provider_name: &str,
    answer: &str,
) -> Vec<support::RecordedRequest> {
    check_reply(
        model,
        Reply::fixture(fixture),
        stream,
        provider_name,
        answer,
    )
    .await
    .0
}

/// The same with any reply; returns the requests and the call's span.
async fn check_reply(
    model: &str,
    reply: Reply,
    stream: bool,
    provider_name: &str,
    answer: &str,
) -> (Vec<support::RecordedRequest>, ReceivedSpan) {
    let fake = FakeProvider::start().await;
    let otlp = OtlpReceiver::start().await;
    fake.enqueue_reply(reply);
    let extra: &[&str] = if stream { &["--stream"] } else { &[] };
    let out = run_quickstart(model, extra, base_env(&fake, &otlp)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{model}: exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(answer),
        "{model}: answer missing:\n{stdout}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    let span_id = last
        .strip_prefix("span_id=sp_")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{model}: no ids line: {last}"));

    let spans = otlp.wait_for_spans(1, WAIT).await;
    let span = spans
        .iter()
        .find(|s| s.span_id == span_id)
        .unwrap_or_else(|| panic!("{model}: span {span_id} not exported: {spans:?}"));
    assert_eq!(span.name, format!("chat {model}"));
    assert_eq!(span.attr_str("gen_ai.provider.name"), Some(provider_name));
    assert!(!span.is_error(), "{model}: {span:?}");
    assert_eq!(fake.pending(), 0, "{model}: the fixture was consumed");
    (fake.requests().await, span.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_runs_against_openai_through_the_base_url() {
    check(
        "gpt-3.5-turbo",
        "openai/chat-1",
        false,
        "openai",
        "Why did Opentelemetry break up with Tracing?",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_runs_against_gemini_through_the_base_url() {
    let body: serde_json::Value =
        serde_json::from_slice(&support::fixture_response_body("google/generate-content")).unwrap();
    let answer = body["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    check(
        "gemini-2.5-flash",
        "google/generate-content",
        false,
        "gcp.gemini",
        &answer,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_runs_against_bedrock_signed_with_sigv4() {
    let body: serde_json::Value =
        serde_json::from_slice(&support::fixture_response_body("bedrock/converse")).unwrap();
    let answer = body["output"]["message"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .trim()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let sent = check(
        "amazon.titan-text-express-v1",
        "bedrock/converse",
        false,
        "aws.bedrock",
        &answer,
    )
    .await;
    let auth = sent[0].header("authorization").unwrap_or_default();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        "{auth}"
    );
    assert!(auth.contains("/us-east-1/bedrock/aws4_request"), "{auth}");
    assert_eq!(
        sent[0].path,
        "/model/us.amazon.titan-text-express-v1/converse"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_streams_with_the_stream_flag() {
    check(
        "gpt-3.5-turbo",
        "openai/chat-stream",
        true,
        "openai",
        "In the observability department, Prometheus, Grafana, Jaeger, and Loki were stressed.",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_streams_a_paced_answer_in_a_span_as_long_as_the_stream() {
    let pause = Duration::from_millis(5);
    let (_, span) = check_reply(
        "gpt-3.5-turbo",
        Reply::fixture("openai/chat-stream").chunked(pause),
        true,
        "openai",
        "In the observability department",
    )
    .await;
    // 196 events, 195 pauses between them: the span lasts at least that long.
    let pacing = pause * 195;
    assert!(
        Duration::from_nanos(span.duration_nanos()) >= pacing,
        "the span ({} ns) covers the stream ({pacing:?})",
        span.duration_nanos()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_runs_against_anthropic_through_the_base_url() {
    let body: serde_json::Value =
        serde_json::from_slice(&support::fixture_response_body("anthropic/messages")).unwrap();
    let answer = body["content"][0]["text"]
        .as_str()
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let sent = check(
        "claude-3-haiku-20240307",
        "anthropic/messages",
        false,
        "anthropic",
        &answer,
    )
    .await;
    assert_eq!(sent[0].path, "/v1/messages");
    assert_eq!(sent[0].header("x-api-key"), Some("sk-ant-test-0123456789"));
}
