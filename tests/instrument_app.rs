//! The `instrument_app` and `tracia_and_jaeger` examples as a user runs them: separate
//! processes configured only by environment variables, with OpenAI replayed by a fake
//! server, spans exported by OTLP to a real receiver and by REST to a fake Tracia.
//!
//! `cargo test` builds the examples before it runs the tests; this file runs the built
//! binaries (`target/<profile>/examples/NAME`). The app server is stopped with SIGTERM,
//! on which it shuts down gracefully and flushes its spans.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{
    FakeProvider, FakeTracia, OtlpReceiver, PROCESS_WAIT, Process, ReceivedSpan, check_span_payload,
};

const WAIT: Duration = Duration::from_secs(10);
const KEY: &str = "tr_test_key_0123456789abcdef";
const OPENAI_KEY: &str = "sk-test-0123456789abcdefghijklmnop";
/// The answer recorded in `openai/chat-1`.
const ANSWER: &str = "Why did Opentelemetry break up with Tracing?";
/// SpanKind::Server.
const SERVER: i32 = 2;

/// The backends every run talks to.
struct Backends {
    fake: FakeProvider,
    otlp: OtlpReceiver,
    cloud: FakeTracia,
}

impl Backends {
    async fn start() -> Self {
        let backends = Backends {
            fake: FakeProvider::start().await,
            otlp: OtlpReceiver::start().await,
            cloud: FakeTracia::start(KEY).await,
        };
        backends.fake.enqueue_fixture("openai/chat-1");
        backends
    }

    /// The whole environment of the example (it starts from an empty one).
    fn env(&self, service: &str) -> Vec<(&'static str, String)> {
        vec![
            ("OPENAI_BASE_URL", self.fake.base_url()),
            ("OPENAI_API_KEY", OPENAI_KEY.into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.otlp.base_url()),
            ("OTEL_SERVICE_NAME", service.into()),
            ("TRACIA_API_KEY", KEY.into()),
            ("TRACIA_BASE_URL", self.cloud.base_url()),
        ]
    }
}

/// A trace id as the SDK shows it: `tr_` + 16 hex when its upper half is zero (the ids
/// `TraciaIdGenerator` makes), else `tr_` + 32 hex.
fn tracia_trace_id(otel_hex: &str) -> String {
    match otel_hex.strip_prefix("0000000000000000") {
        Some(low) => format!("tr_{low}"),
        None => format!("tr_{otel_hex}"),
    }
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let named: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    match named.as_slice() {
        [span] => span,
        _ => panic!(
            "expected one span {name:?}, got {}: {:?}",
            named.len(),
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        ),
    }
}

/// What one request to `instrument_app` left behind.
struct AppRun {
    answer: Value,
    spans: Vec<ReceivedSpan>,
    payloads: Vec<Value>,
    backends: Backends,
}

/// Starts `instrument_app`, sends one `POST /ask` with `headers`, stops the app with
/// SIGTERM (it flushes on the way out) and collects what the backends received.
async fn ask_once(headers: &[(&str, &str)]) -> AppRun {
    let backends = Backends::start().await;
    let (app, url) = tokio::task::block_in_place(|| {
        Process::serve(
            "instrument_app",
            &["--port", "0"],
            backends.env("instrument-app-test"),
        )
    });

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(PROCESS_WAIT)
        .build()
        .unwrap();
    let mut request = client
        .post(format!("{url}/ask"))
        .json(&json!({ "question": "Tell me a joke about opentelemetry" }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the app answers");
    let status = response.status();
    let body = response.text().await.unwrap();
    drop(client);

    let finished = tokio::task::block_in_place(|| app.terminate());
    assert_eq!(status, 200, "{body}\nstderr:\n{}", finished.stderr);
    assert!(
        finished.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        finished.status,
        finished.stdout,
        finished.stderr
    );
    let answer: Value = serde_json::from_str(&body).expect("a JSON answer");
    assert!(
        answer["answer"]
            .as_str()
            .is_some_and(|a| a.contains(ANSWER)),
        "{answer}"
    );
    assert_eq!(backends.fake.pending(), 0, "the fixture was consumed");

    let spans = backends.otlp.wait_for_spans(4, WAIT).await;
    let payloads = backends.cloud.wait_for_spans(1, WAIT).await;
    assert_eq!(backends.otlp.errors().await, Vec::<String>::new());
    AppRun {
        answer,
        spans,
        payloads,
        backends,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn instrument_app_request_is_one_trace_from_server_span_to_llm_call() {
    let run = ask_once(&[]).await;
    let spans = &run.spans;
    let server = one(spans, "POST /ask");
    let handler = one(spans, "ask");
    let helper = one(spans, "answer");
    let chat = one(spans, "chat gpt-4o-mini");

    // One trace, rooted at the server span (no traceparent came in).
    for span in [handler, helper, chat] {
        assert_eq!(span.trace_id, server.trace_id, "{}", span.name);
    }
    assert!(server.is_root(), "{server:?}");
    assert_eq!(server.kind, SERVER);
    assert_eq!(server.attr_str("http.route"), Some("/ask"));
    assert_eq!(
        server.attr_i64("http.response.status_code"),
        Some(200),
        "{:?}",
        server.attributes
    );
    assert_eq!(server.service_name.as_deref(), Some("instrument-app-test"));
    // chat → answer → ask → POST /ask.
    assert_eq!(handler.parent_span_id, server.span_id);
    assert_eq!(helper.parent_span_id, handler.span_id);
    assert_eq!(chat.parent_span_id, helper.span_id);
    assert!(chat.is_client() && !chat.is_error(), "{chat:?}");
    assert_eq!(chat.attr_str("gen_ai.provider.name"), Some("openai"));

    // The provider request carried the chat span's traceparent.
    let sent = &run.backends.fake.requests().await[0];
    assert_eq!(
        sent.header("traceparent"),
        Some(format!("00-{}-{}-01", chat.trace_id, chat.span_id).as_str())
    );

    // The answer names the chat span, as the backends know it.
    let span_id = format!("sp_{}", chat.span_id);
    let trace_id = tracia_trace_id(&chat.trace_id);
    assert_eq!(run.answer["span_id"], span_id.as_str());
    assert_eq!(run.answer["trace_id"], trace_id.as_str());

    // Tracia got the LLM span only, with the same ids and its parent.
    assert_eq!(run.payloads.len(), 1, "app spans are not sent to Tracia");
    let p = &run.payloads[0];
    check_span_payload(p).unwrap();
    assert_eq!(p["spanId"], span_id.as_str());
    assert_eq!(p["traceId"], trace_id.as_str());
    assert_eq!(p["parentSpanId"], format!("sp_{}", helper.span_id).as_str());
    assert_eq!(p["model"], "gpt-4o-mini");
}

#[tokio::test(flavor = "multi_thread")]
async fn instrument_app_continues_the_callers_trace_and_session() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let run = ask_once(&[
        ("traceparent", traceparent.as_str()),
        ("baggage", "session.id=conv_9"),
    ])
    .await;
    let spans = &run.spans;
    let server = one(spans, "POST /ask");
    let chat = one(spans, "chat gpt-4o-mini");

    // The server span is the caller's span's child, in the caller's trace.
    assert_eq!(server.trace_id, TRACE);
    assert_eq!(server.parent_span_id, PARENT);
    assert_eq!(server.kind, SERVER);
    for name in ["ask", "answer", "chat gpt-4o-mini"] {
        assert_eq!(one(spans, name).trace_id, TRACE, "{name}");
    }
    assert_eq!(one(spans, "ask").parent_span_id, server.span_id);

    // The baggage's conversation is on the LLM call, which set none of its own.
    assert_eq!(chat.attr_str("session.id"), Some("conv_9"));
    assert!(!chat.has_attr("user.id"), "{chat:?}");

    // A W3C trace id with a non-zero upper half shows as tr_ + 32 hex.
    let trace_id = format!("tr_{TRACE}");
    assert_eq!(run.answer["trace_id"], trace_id.as_str());
    assert_eq!(
        run.answer["span_id"],
        format!("sp_{}", chat.span_id).as_str()
    );
    assert_eq!(run.payloads.len(), 1);
    let p = &run.payloads[0];
    check_span_payload(p).unwrap();
    assert_eq!(p["traceId"], trace_id.as_str());
    assert_eq!(p["spanId"], format!("sp_{}", chat.span_id).as_str());
    assert_eq!(p["sessionId"], "conv_9");
}

/// `name: delivered=N failed=N skipped=N queued=N` as the example prints it.
fn stats_line(stdout: &str, exporter: &str) -> std::collections::BTreeMap<String, u64> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{exporter}: ")))
        .unwrap_or_else(|| panic!("no stats line for {exporter}:\n{stdout}"));
    line.split_whitespace()
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("key=value");
            (k.to_owned(), v.parse().expect("a count"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn tracia_and_jaeger_exports_the_same_span_to_both_backends() {
    let backends = Backends::start().await;
    let process = Process::spawn(
        "tracia_and_jaeger",
        &[
            "--model",
            "gpt-3.5-turbo",
            "Tell me a joke about opentelemetry",
        ],
        backends.env("tracia-and-jaeger-test"),
    );
    let out = tokio::task::block_in_place(|| process.wait());
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains(ANSWER), "{}", out.stdout);
    let ids = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("span_id="))
        .unwrap_or_else(|| panic!("no ids line:\n{}", out.stdout));
    let (span_id, trace_id) = ids.split_once(" trace_id=").expect("both ids");

    // The OTLP side (Jaeger's place) has the app span and the chat span, one trace.
    let spans = backends.otlp.wait_for_spans(2, WAIT).await;
    let chat = one(&spans, "chat gpt-3.5-turbo");
    let app = one(&spans, "handle_question");
    assert_eq!(format!("sp_{}", chat.span_id), span_id);
    assert_eq!(tracia_trace_id(&chat.trace_id), trace_id);
    assert_eq!(chat.parent_span_id, app.span_id);
    assert_eq!(chat.trace_id, app.trace_id);
    assert_eq!(chat.service_name.as_deref(), Some("tracia-and-jaeger"));

    // Tracia has the chat span under the same ids.
    let payloads = backends.cloud.wait_for_spans(1, WAIT).await;
    assert_eq!(payloads.len(), 1, "only the GenAI span goes to Tracia");
    check_span_payload(&payloads[0]).unwrap();
    assert_eq!(payloads[0]["spanId"], span_id);
    assert_eq!(payloads[0]["traceId"], trace_id);

    // Both exporters report what they delivered, nothing failed.
    let otlp = stats_line(&out.stdout, "otlp");
    let tracia = stats_line(&out.stdout, "tracia");
    for (name, stats) in [("otlp", &otlp), ("tracia", &tracia)] {
        assert!(stats["delivered"] >= 1, "{name}: {stats:?}");
        assert_eq!(stats["failed"], 0, "{name}: {stats:?}");
    }
    assert_eq!(otlp["delivered"], 2, "{otlp:?}");
    assert_eq!(
        (tracia["delivered"], tracia["skipped"]),
        (1, 1),
        "{tracia:?}"
    );
}
