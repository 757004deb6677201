//! Hostile providers and hostile input: an endless answer is cut at the client's
//! `max_answer_bytes` (its span ended and bounded), a provider echoing the caller's key
//! leaks it nowhere, a model name cannot reach another URL path, and control characters
//! in logged values cannot forge log lines.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use opentelemetry::Value as OtelValue;
use opentelemetry::trace::Status;
use opentelemetry_sdk::trace::SpanData;
use serde_json::Value;
use support::{
    FakeProvider, FakeTracia, Memory, OtlpReceiver, Reply, fixture_response_body, install,
};
use tracia::{ErrorCode, Provider, RunLocal, Tracia};
use tracing_subscriber::layer::SubscriberExt as _;

const WAIT: Duration = Duration::from_secs(10);
const SSE: &str = "text/event-stream";
const JSON: &str = "application/json";
const MIB: usize = 1024 * 1024;
/// The documented bound of one content attribute on a span.
const MAX_CONTENT_ATTRIBUTE: usize = 64 * 1024;

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            OtelValue::String(s) => s.as_str().to_owned(),
            other => other.to_string(),
        })
}

/// The recorded OpenAI text-delta event, with `text` as its content: the wire format
/// as recorded, only longer.
fn text_event(text: &str) -> Vec<u8> {
    let body = fixture_response_body("openai/chat-stream");
    let first = std::str::from_utf8(&body)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    let mut event: Value = serde_json::from_str(first.strip_prefix("data: ").unwrap()).unwrap();
    event["choices"][0]["delta"]["content"] = text.into();
    format!("data: {event}\n\n").into_bytes()
}

fn client(fake: &FakeProvider, max_answer: usize) -> Tracia {
    support::client_with(fake, |b| {
        b.with_max_answer_bytes(max_answer)
            .with_capture_content(true)
    })
}

/// An answer that never ends (16 MiB of valid text deltas and no end) under a 1 MiB
/// cap: the stream fails with the typed error naming the limit, the connection is
/// closed (the provider did not get to send it all), and the span ended as an ERROR
/// with its content attributes within their bound.
#[tokio::test(flavor = "multi_thread")]
async fn an_endless_stream_ends_at_max_answer_bytes() {
    let fake = FakeProvider::start().await;
    let event = text_event(&"endless ".repeat(128));
    let body = event.repeat(16 * MIB / 1024);
    let total_events = 16 * MIB / 1024;
    fake.enqueue_reply(Reply::new(200, SSE, body).chunked(Duration::ZERO));
    let memory = Memory::install();
    let tracia = client(&fake, MIB);
    let long_prompt = "p".repeat(MIB);

    let mut stream = tracia
        .run_local_stream(RunLocal::new("gpt-4o").user(long_prompt))
        .await
        .unwrap();
    let span_id = stream.span_id();
    let mut received = 0;
    let mut failure = None;
    let read = async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => received += chunk.len(),
                Err(e) => failure = Some(e),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the stream ends");
    let error = failure.expect("the stream fails");
    assert_eq!(error.code(), ErrorCode::ProviderError, "{error}");
    assert!(
        error.message().contains(&format!(
            "the answer exceeded {MIB} bytes (max_answer_bytes)"
        )),
        "{error}"
    );
    assert!(
        received <= MIB,
        "no more than the cap handed out: {received}"
    );
    let finished = stream.finish().await.unwrap_err();
    assert_eq!(finished.to_string(), error.to_string());

    let outcomes = fake.wait_for_stream_outcomes(1, WAIT).await;
    assert!(!outcomes[0].completed, "{:?}", outcomes[0].label);
    assert!(
        outcomes[0].events_sent < total_events,
        "the provider stopped being read: {} of {total_events} events sent",
        outcomes[0].events_sent
    );

    let span = memory.span(&span_id);
    assert!(
        matches!(&span.status, Status::Error { description } if description.contains("max_answer_bytes")),
        "{:?}",
        span.status
    );
    for key in ["gen_ai.input.messages", "gen_ai.output.messages"] {
        let value = attr(&span, key).unwrap_or_else(|| panic!("{key} recorded"));
        assert!(
            value.len() <= MAX_CONTENT_ATTRIBUTE,
            "{key}: {} bytes",
            value.len()
        );
        assert!(value.contains("[truncated]"), "{key} is marked as cut");
        serde_json::from_str::<Value>(&value).expect("still valid JSON");
    }
}

/// A non-streamed answer over the cap is refused the same way, with or without its
/// `Content-Length`, and the cap of a call outranks the client's.
#[tokio::test(flavor = "multi_thread")]
async fn a_non_streamed_answer_over_max_answer_bytes_is_refused() {
    let fake = FakeProvider::start().await;
    let mut answer: Value =
        serde_json::from_slice(&fixture_response_body("openai/chat-1")).unwrap();
    answer["choices"][0]["message"]["content"] = "big ".repeat(MIB).into();
    let answer = answer.to_string();
    fake.enqueue(200, JSON, answer.clone());
    fake.enqueue_reply(Reply::new(200, JSON, answer).chunked(Duration::ZERO));
    let memory = Memory::install();
    let capped = client(&fake, MIB);
    let default = support::client(&fake);
    let calls = [
        (&capped, RunLocal::new("gpt-4o").user("hi")),
        (
            &default,
            RunLocal::new("gpt-4o").user("hi").max_answer_bytes(MIB),
        ),
    ];
    for (tracia, input) in calls {
        let error = tracia.run_local(input).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::ProviderError);
        assert!(error.message().contains("max_answer_bytes"), "{error}");
    }
    let errors = memory
        .spans()
        .into_iter()
        .filter(|s| matches!(s.status, Status::Error { .. }))
        .count();
    assert_eq!(errors, 2, "both calls are ERROR spans");
}

/// A provider error echoing the key it was given, for keys of known and unknown
/// shapes: the error, the span (status and `exception` event) and the Tracia payload
/// hold none of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_echoing_the_key_leaks_it_nowhere() {
    const CLIENT_KEY: &str = "sk-SECRET123";
    const CALL_KEYS: [&str; 2] = ["gsk_Q3v9LmZpA0rT7wXe", "Zq8mN3pW7xR2vT5yKd4H"];
    const TRACIA_KEY: &str = "tr_hardening_test_key";
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    let tracia_api = FakeTracia::start(TRACIA_KEY).await;
    let guard = support::pipeline(Some(&otlp), Some((&tracia_api, TRACIA_KEY)));
    let _sub = install(&guard);
    let tracia = support::client_with(&fake, |b| b.with_api_key(Provider::OpenAi, CLIENT_KEY));
    let keys = [CLIENT_KEY, CALL_KEYS[0], CALL_KEYS[1]];
    for key in keys {
        fake.enqueue_openai_error(
            401,
            &format!("Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys."),
            "invalid_request_error",
            Some("invalid_api_key"),
        );
    }
    let mut errors = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut input = RunLocal::new("gpt-4o").user("hi").tag(format!("echo{i}"));
        if i > 0 {
            input = input.provider_api_key(*key);
        }
        let error = tracia.run_local(input).await.unwrap_err();
        assert_eq!(error.status(), Some(401));
        assert!(
            error.message().contains("Incorrect API key provided"),
            "{error}"
        );
        errors.push(format!("{error} {error:?}"));
    }
    let requests = fake.requests().await;
    for (request, key) in requests.iter().zip(keys) {
        assert_eq!(
            request.headers["authorization"],
            format!("Bearer {key}").as_str(),
            "the key itself was sent"
        );
    }

    guard.flush().await;
    let spans = otlp.wait_for_spans(3, WAIT).await;
    let payloads = tracia_api.wait_for_spans(3, WAIT).await;
    assert_eq!((spans.len(), payloads.len()), (3, 3));
    let mut texts = errors;
    for span in &spans {
        assert!(span.is_error());
        texts.push(span.status_message.clone());
        let exception = span.event("exception").expect("an exception event");
        texts.push(format!("{exception:?}"));
        texts.push(format!("{span:?}"));
    }
    texts.extend(payloads.iter().map(Value::to_string));
    for text in &texts {
        for key in keys {
            assert!(!text.contains(key), "{key} leaked in {text}");
        }
    }
    assert!(
        payloads
            .iter()
            .all(|p| p.to_string().contains("[REDACTED]")),
        "the payloads keep the message, the key scrubbed"
    );
}

/// Model names with `../` and a query go out as one encoded path segment of the model
/// endpoint, for Gemini and Bedrock; the dot segment `..` itself is refused before
/// any request.
#[tokio::test(flavor = "multi_thread")]
async fn a_model_name_stays_one_path_segment() {
    const MODEL: &str = "../../v1beta/files?x=1#f";
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("google/generate-content");
    fake.enqueue_fixture("bedrock/converse");
    support::keep_callsite_interest_shared();
    let tracia = Tracia::builder()
        .without_env()
        .with_api_key(Provider::Google, "google-test-key-0123")
        .with_api_key(Provider::AmazonBedrock, "bedrock-test-key-0123")
        .with_base_url(Provider::Google, fake.url())
        .with_base_url(Provider::AmazonBedrock, fake.url())
        .build()
        .unwrap();
    for provider in [Provider::Google, Provider::AmazonBedrock] {
        let result = tracia
            .run_local(RunLocal::new(MODEL).provider(provider).user("hi"))
            .await;
        assert!(result.is_ok(), "{provider}: {result:?}");
    }
    let requests = fake.requests().await;
    let paths: Vec<_> = requests
        .iter()
        .map(|r| (r.path.as_str(), r.query.as_deref()))
        .collect();
    let encoded = "..%2F..%2Fv1beta%2Ffiles%3Fx%3D1%23f";
    assert_eq!(
        paths,
        [
            (
                format!("/v1beta/models/{encoded}:generateContent").as_str(),
                None
            ),
            // With the region's cross-region prefix, as every Bedrock model id.
            (format!("/model/eu.{encoded}/converse").as_str(), None),
        ]
    );

    for model in ["..", "."] {
        let error = tracia
            .run_local(
                RunLocal::new(model)
                    .provider(Provider::AmazonBedrock)
                    .user("hi"),
            )
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidRequest, "{error}");
        assert!(error.message().contains(&format!("{model:?}")), "{error}");
    }
    assert_eq!(fake.request_count(), 2, "nothing sent for a dot segment");
}

/// A log line of a failed call naming its model, as an app writes it: the model's
/// newline and terminal escape come out escaped, in one line.
#[tokio::test(flavor = "multi_thread")]
async fn logged_model_names_cannot_forge_lines() {
    const MODEL: &str = "gpt-4o\n2026-01-01T00:00:00Z  INFO forged: \x1b[31mall good";
    let fake = FakeProvider::start().await;
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let out = out.clone();
        move || Capture(out.clone())
    };
    support::keep_callsite_interest_shared();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .fmt_fields(tracia::telemetry::EscapedFields)
            .with_ansi(false)
            .with_writer(writer),
    );
    let _sub = tracing::subscriber::set_default(subscriber);
    let tracia = support::client(&fake);

    let error = tracia
        .run_local(RunLocal::new(MODEL).user("hi"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidRequest, "{error}");
    assert_eq!(fake.request_count(), 0, "refused before any I/O");
    tracing::warn!(model = MODEL, error = %error, "call failed: {}", error.message());

    let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    assert!(text.contains("call failed"), "{text}");
    assert_eq!(
        text.matches('\n').count(),
        1,
        "one record, one line: {text}"
    );
    assert!(text.ends_with('\n'));
    assert!(!text.contains('\x1b'), "no terminal escape: {text}");
    assert!(
        text.contains(r"gpt-4o\n2026"),
        "the newline shown escaped: {text}"
    );
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
