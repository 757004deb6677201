//! Tracia's manual linking and the session forms, the span's ids as exported; the
//! attributes spans carry by default (none of the build machine's); the standard
//! `exception` event; timeouts reported as timeouts; plain log lines off a terminal.

mod support;

use std::process::Command;
use std::time::Duration;

use futures::StreamExt as _;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::SpanData;
use support::{
    FakeProvider, Memory, OtlpReceiver, Reply, client, client_with, install, pipeline_with,
};
use tracia::{Error, ErrorCode, RunLocal, SessionOptions, ids};
use tracing::Instrument as _;

const WAIT: Duration = Duration::from_secs(10);
/// What the provider waits before answering, in the timeout tests: far longer than the
/// calls' timeouts.
const STALL: Duration = Duration::from_secs(30);

fn trace_of(id: &str) -> TraceId {
    ids::parse_trace_id(id).unwrap()
}

fn span_of(id: &str) -> SpanId {
    ids::parse_span_id(id).unwrap()
}

fn chat() -> RunLocal {
    RunLocal::new("gpt-4o").user("hi")
}

#[tokio::test(flavor = "multi_thread")]
async fn tracias_manual_linking_works_as_written() {
    let fake = FakeProvider::start().await;
    support::enqueue_times(&fake, "openai/chat-1", 2);
    let memory = Memory::install();
    let tracia = client(&fake);

    // result1 = run_local(...)
    // result2 = run_local(..., trace_id=result1.span_id, parent_span_id=result1.span_id)
    let result1 = tracia.run_local(chat()).await.unwrap();
    let result2 = tracia
        .run_local(
            chat()
                .trace_id(&result1.span_id)
                .parent_span_id(&result1.span_id),
        )
        .await
        .unwrap();

    assert!(result1.span_id.starts_with("sp_"));
    assert_eq!(result2.trace_id, result1.span_id, "the same sp_ string");
    let span1 = memory.span(&result1.span_id);
    let span2 = memory.span(&result2.span_id);
    assert_eq!(span2.parent_span_id, span1.span_context.span_id());
    assert!(span2.parent_span_is_remote);
    assert_eq!(span2.span_context.trace_id(), trace_of(&result1.span_id));
    assert_ne!(
        span2.span_context.trace_id(),
        span1.span_context.trace_id(),
        "a new trace, named by result1's span id"
    );
    assert_eq!(
        ids::to_w3c_trace_id(&result2.trace_id).unwrap(),
        span2.span_context.trace_id().to_string()
    );
    // The provider was told the same trace.
    let sent = fake.requests().await;
    assert_eq!(
        sent[1].header("traceparent"),
        Some(
            format!(
                "00-{}-{}-01",
                span2.span_context.trace_id(),
                span2.span_context.span_id()
            )
            .as_str()
        )
    );

    let payload = tracia::span_payload(&span2).expect("a GenAI span");
    assert_eq!(payload["traceId"], result1.span_id.as_str());
    assert_eq!(payload["parentSpanId"], result1.span_id.as_str());
    assert_eq!(payload["spanId"], result2.span_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parent_span_id_alone_joins_the_trace_its_id_names_or_the_current_one() {
    let fake = FakeProvider::start().await;
    support::enqueue_times(&fake, "openai/chat-1", 2);
    let memory = Memory::install();
    let tracia = client(&fake);
    let parent = "sp_00f067aa0ba902b7";

    let alone = tracia
        .run_local(chat().parent_span_id(parent))
        .await
        .unwrap();
    assert_eq!(alone.trace_id, parent);
    let span = memory.span(&alone.span_id);
    assert_eq!(span.parent_span_id, span_of(parent));
    assert_eq!(span.span_context.trace_id(), trace_of(parent));

    let app = tracing::info_span!("handle_request");
    let nested = tracia
        .run_local(chat().parent_span_id(parent))
        .instrument(app.clone())
        .await
        .unwrap();
    drop(app);
    let span = memory.span(&nested.span_id);
    let app = memory
        .spans()
        .into_iter()
        .find(|s| s.name == "handle_request")
        .unwrap();
    assert_eq!(span.parent_span_id, span_of(parent));
    assert_eq!(
        span.span_context.trace_id(),
        app.span_context.trace_id(),
        "the current span's trace"
    );
    assert_eq!(
        nested.trace_id,
        ids::format_trace_id(app.span_context.trace_id())
    );
}

/// One call of a session made with `options`: the session's ids before and after, and
/// the call's exported span.
async fn session_call(
    options: SessionOptions,
) -> (Option<String>, tracia::RunResult, SpanData, tracia::Session) {
    let fake = FakeProvider::start().await;
    support::enqueue_times(&fake, "openai/chat-1", 2);
    let memory = Memory::install();
    let session = client(&fake).create_session_with(options).unwrap();
    let before = session.trace_id();
    let result = session.run_local(chat()).await.unwrap();
    let span = memory.span(&result.span_id);
    // The next turn is the child of this one, in the same trace.
    let next = session.run_local(chat()).await.unwrap();
    let next_span = memory.span(&next.span_id);
    assert_eq!(next_span.parent_span_id, span.span_context.span_id());
    assert_eq!(next.trace_id, result.trace_id);
    assert_eq!(session.trace_id(), Some(result.trace_id.clone()));
    (before, result, span, session)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_with_neither_id_starts_a_trace() {
    let (before, result, span, _) = session_call(SessionOptions::new()).await;
    assert_eq!(before, None);
    assert_eq!(span.parent_span_id, SpanId::INVALID, "a root span");
    assert_eq!(
        result.trace_id,
        ids::format_trace_id(span.span_context.trace_id())
    );
    assert!(result.trace_id.starts_with("tr_"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_with_a_trace_id_only_starts_in_that_trace() {
    let trace = "tr_4bf92f3577b34da6a3ce929d0e0e4736";
    let (before, result, span, session) = session_call(SessionOptions::new().trace_id(trace)).await;
    assert_eq!(before.as_deref(), Some(trace));
    assert_eq!(span.parent_span_id, SpanId::INVALID, "a root span");
    assert_eq!(span.span_context.trace_id(), trace_of(trace));
    assert_eq!(result.trace_id, trace);
    assert_eq!(session.trace_id().as_deref(), Some(trace));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_with_a_parent_only_chains_from_it_in_the_trace_its_id_names() {
    let parent = "sp_00000000cafebabe";
    let (before, result, span, _) =
        session_call(SessionOptions::new().parent_span_id(parent)).await;
    assert_eq!(before.as_deref(), Some(parent), "known at once");
    assert_eq!(span.parent_span_id, span_of(parent));
    assert_eq!(span.span_context.trace_id(), trace_of(parent));
    assert_eq!(result.trace_id, parent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_with_both_ids_chains_from_the_parent_in_that_trace() {
    let (trace, parent) = ("tr_00000000feedface", "sp_00000000cafebabe");
    let (before, result, span, _) =
        session_call(SessionOptions::new().trace_id(trace).parent_span_id(parent)).await;
    assert_eq!(before.as_deref(), Some(trace));
    assert_eq!(span.parent_span_id, span_of(parent));
    assert_eq!(span.span_context.trace_id(), trace_of(trace));
    assert_eq!(result.trace_id, trace);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_session_and_call_ids_are_named_in_invalid_request_errors() {
    let fake = FakeProvider::start().await;
    let tracia = client(&fake);
    for (options, bad) in [
        (SessionOptions::new().trace_id("trace-7"), "trace-7"),
        (SessionOptions::new().parent_span_id("sp_123"), "sp_123"),
        (
            SessionOptions::new()
                .trace_id("tr_00000000feedface")
                .parent_span_id("00f067aa0ba902b7"),
            "00f067aa0ba902b7",
        ),
    ] {
        let e = tracia.create_session_with(options).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRequest, "{e}");
        assert!(e.message().contains(bad), "{e}");
    }
    let e = tracia
        .run_local(chat().trace_id("sp_zz"))
        .await
        .unwrap_err();
    assert!(
        e.is_invalid_request() && e.message().contains("sp_zz"),
        "{e}"
    );
    assert_eq!(fake.request_count(), 0, "nothing is sent on bad ids");
}

/// Attributes `tracing-opentelemetry` adds on its own, by family.
const CODE: [&str; 4] = [
    "code.file.path",
    "code.module.name",
    "code.line.number",
    "target",
];
const THREAD: [&str; 2] = ["thread.id", "thread.name"];
const TIMING: [&str; 2] = ["busy_ns", "idle_ns"];

fn has(span: &SpanData, key: &str) -> bool {
    span.attributes.iter().any(|kv| kv.key.as_str() == key)
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_carry_no_build_machine_attributes_unless_asked() {
    let fake = FakeProvider::start().await;
    support::enqueue_times(&fake, "openai/chat-1", 4);
    let tracia = client(&fake);

    // The public layer for a provider of your own.
    let memory = Memory::install();
    let app = tracing::info_span!("handle_request");
    let result = tracia
        .run_local(chat())
        .instrument(app.clone())
        .await
        .unwrap();
    drop(app);
    let spans = memory.spans();
    assert_eq!(spans.len(), 2);
    for span in &spans {
        for key in CODE.iter().chain(&THREAD).chain(&TIMING) {
            assert!(!has(span, key), "{}: {key}", span.name);
        }
    }
    assert!(has(&memory.span(&result.span_id), "gen_ai.request.model"));
    drop(memory);

    // The pipeline `tracia::telemetry` builds: the same by default, each family on demand.
    type Configure = fn(tracia::TelemetryBuilder) -> tracia::TelemetryBuilder;
    let cases: [(&str, Configure, Vec<&str>); 3] = [
        ("default", |b| b, Vec::new()),
        ("code", |b| b.with_code_attributes(true), CODE.to_vec()),
        (
            "thread-timing",
            |b| b.with_thread_attributes(true).with_timing_attributes(true),
            [&THREAD[..], &TIMING[..]].concat(),
        ),
    ];
    let otlp = OtlpReceiver::start().await;
    for (case, configure, wanted) in cases {
        let guard = pipeline_with(Some(&otlp), None, configure);
        let _sub = install(&guard);
        let app = tracing::info_span!("handle_request");
        let result = tracia
            .run_local(chat())
            .instrument(app.clone())
            .await
            .unwrap();
        drop(app);
        guard.flush().await;
        let spans = otlp.wait_for_spans(2, WAIT).await;
        let llm = spans
            .iter()
            .find(|s| format!("sp_{}", s.span_id) == result.span_id)
            .expect("exported");
        let app = spans
            .iter()
            .find(|s| s.name == "handle_request")
            .expect("the app's span exported");
        for (span, is_llm) in [(llm, true), (app, false)] {
            for key in CODE.iter().chain(&THREAD).chain(&TIMING) {
                // An LLM span's end is stamped by the SDK: no `tracing` timings on it.
                let expected = wanted.contains(key) && !(is_llm && TIMING.contains(key));
                assert_eq!(
                    span.has_attr(key),
                    expected,
                    "{case}, {}: {key} in {:?}",
                    span.name,
                    span.attributes.keys()
                );
            }
        }
        otlp.forget();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_calls_and_embeddings_record_the_standard_exception_event() {
    let fake = FakeProvider::start().await;
    fake.enqueue_openai_error(
        429,
        "Rate limit reached",
        "requests",
        Some("rate_limit_exceeded"),
    );
    fake.enqueue_openai_error(500, "The server had an error", "server_error", None);
    let memory = Memory::install();
    let tracia = client(&fake);

    let chat_error = tracia.run_local(chat()).await.unwrap_err();
    let embed_error = tracia
        .run_embedding(tracia::RunEmbedding::new("text-embedding-3-small").input("hi"))
        .await
        .unwrap_err();
    let spans = memory.spans();
    for (error, name, error_type) in [
        (&chat_error, "chat gpt-4o", "429"),
        (&embed_error, "embeddings text-embedding-3-small", "500"),
    ] {
        let span = spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} exported"));
        assert!(
            matches!(span.status, opentelemetry::trace::Status::Error { .. }),
            "{name}"
        );
        let attr = |kvs: &[opentelemetry::KeyValue], key: &str| {
            kvs.iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(
            attr(&span.attributes, "error.type").as_deref(),
            Some(error_type)
        );
        let event = span
            .events
            .iter()
            .find(|e| e.name == "exception")
            .unwrap_or_else(|| panic!("{name}: an `exception` event"));
        assert_eq!(
            attr(&event.attributes, "exception.type").as_deref(),
            Some("PROVIDER_ERROR")
        );
        assert_eq!(
            attr(&event.attributes, "exception.message"),
            Some(error.to_string())
        );
    }
}

/// The error is a timeout, saying so, and the call's span failed with `error.type`
/// `timeout` and an `exception` event.
fn assert_timeout(memory: &Memory, error: &Error, span_id: Option<&str>, tag: &str) {
    assert_eq!(error.code(), ErrorCode::Timeout, "{tag}: {error:?}");
    assert!(error.is_timeout(), "{tag}");
    assert!(error.message().contains("timed out"), "{tag}: {error}");
    let spans = memory.spans();
    let span = spans
        .iter()
        .find(|s| {
            s.attributes
                .iter()
                .any(|kv| kv.key.as_str() == "tracia.tags" && kv.value.to_string().contains(tag))
        })
        .unwrap_or_else(|| panic!("{tag}: span exported"));
    if let Some(id) = span_id {
        assert_eq!(span.span_context.span_id(), span_of(id));
    }
    let error_type = span
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "error.type")
        .map(|kv| kv.value.to_string());
    assert_eq!(error_type.as_deref(), Some("timeout"), "{tag}");
    assert!(span.events.iter().any(|e| e.name == "exception"), "{tag}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_never_answers_is_a_timeout() {
    let fake = FakeProvider::start().await;
    for _ in 0..4 {
        fake.enqueue_reply(Reply::fixture("openai/chat-1").delayed(STALL));
    }
    let memory = Memory::install();
    // The call's own timeout, then the client's default one.
    let tracia = client(&fake);
    let whole = tracia
        .run_local(chat().tag("call-whole").timeout_ms(300))
        .await
        .unwrap_err();
    assert_timeout(&memory, &whole, None, "call-whole");
    assert_eq!(whole.message(), "Request timed out after 300ms");
    let streamed = tracia
        .run_local_stream(chat().tag("call-stream").timeout_ms(300))
        .await
        .unwrap_err();
    assert_timeout(&memory, &streamed, None, "call-stream");

    let short = client_with(&fake, |b| b.with_timeout(Duration::from_millis(300)));
    let whole = short
        .run_local(chat().tag("client-whole"))
        .await
        .unwrap_err();
    assert_timeout(&memory, &whole, None, "client-whole");
    let streamed = short
        .run_local_stream(chat().tag("client-stream"))
        .await
        .unwrap_err();
    assert_timeout(&memory, &streamed, None, "client-stream");
}

/// An HTTP client of your own with its own timeouts: when one of them fires first, the
/// call still fails as a timeout, and does not claim the call's timeout passed.
#[tokio::test(flavor = "multi_thread")]
async fn the_http_clients_own_timeouts_are_timeouts_too() {
    let fake = FakeProvider::start().await;
    fake.enqueue_reply(Reply::fixture("openai/chat-1").delayed(STALL));
    fake.enqueue_chunked("openai/chat-stream", STALL);
    let memory = Memory::install();
    let http = reqwest::Client::builder()
        .read_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let tracia = client_with(&fake, |b| b.with_http_client(http));

    let whole = tracia.run_local(chat().tag("own-whole")).await.unwrap_err();
    assert_timeout(&memory, &whole, None, "own-whole");
    let own = "Request timed out in the HTTP client, before the call's 120000ms timeout";
    assert!(whole.message().starts_with(own), "{whole}");

    let mut stream = tracia
        .run_local_stream(chat().tag("own-stream"))
        .await
        .expect("the stream opens before it stalls");
    let span_id = stream.span_id();
    let mut failure = None;
    while let Some(item) = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the read timeout ends the stall")
    {
        if let Err(e) = item {
            failure = Some(e);
        }
    }
    let yielded = failure.expect("the stall fails the stream");
    let finished = stream.finish().await.unwrap_err();
    for e in [&yielded, &finished] {
        assert_timeout(&memory, e, Some(&span_id), "own-stream");
        assert!(e.message().starts_with(own), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_written_to_a_pipe_have_no_colour_codes() {
    // Spans go to a port nobody listens on: the export fails, and the example logs
    // the failure as a warning on its stderr, here a pipe.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-1");
    let mut cmd = Command::new(support::example_binary("quickstart"));
    cmd.env_clear()
        .args(["--model", "gpt-4o"])
        .env("OPENAI_BASE_URL", fake.base_url())
        .env("OPENAI_API_KEY", "sk-test-0123456789abcdefghijklmnop")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", dead)
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "2000");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("quickstart runs"))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("spans could not be delivered"),
        "the warning is logged: {stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "no ANSI escape: {stderr:?}");
}

#[test]
fn ids_convert_every_printed_form_to_w3c_and_back() {
    for (tracia_form, w3c) in [
        ("tr_00f067aa0ba902b7", "000000000000000000f067aa0ba902b7"),
        (
            "tr_4bf92f3577b34da6a3ce929d0e0e4736",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        ("sp_00f067aa0ba902b7", "73705f747261636500f067aa0ba902b7"),
    ] {
        assert_eq!(ids::to_w3c_trace_id(tracia_form).unwrap(), w3c);
        assert_eq!(ids::from_w3c_trace_id(w3c).unwrap(), tracia_form);
        assert_eq!(ids::to_w3c_trace_id(w3c).unwrap(), w3c);
    }
    for span in [
        "sp_00f067aa0ba902b7",
        "tr_00f067aa0ba902b7",
        "SP_00F067AA0BA902B7",
    ] {
        let w3c = ids::to_w3c_span_id(span);
        if span.starts_with("SP_") {
            assert!(
                w3c.unwrap_err().message().contains(span),
                "prefixes are lower case"
            );
        } else {
            assert_eq!(w3c.unwrap(), "00f067aa0ba902b7");
        }
    }
    assert_eq!(
        ids::from_w3c_span_id("00f067aa0ba902b7").unwrap(),
        "sp_00f067aa0ba902b7"
    );
}
