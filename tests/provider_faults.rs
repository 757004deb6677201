//! Provider faults below the HTTP status line, for `run_local` and `run_local_stream`:
//! each is a typed error (`Error::code()`, the `is_*` methods) and an ERROR span at the
//! OTLP receiver with `error.type`.
//!
//! Covered elsewhere, so not repeated here: a connection cut mid-stream (truncated SSE)
//! in `openai_chat::truncated_sse_fails_the_stream_and_its_result`, with its error span
//! in `anthropic::provider_failures_are_typed_errors_and_error_spans`,
//! `gemini::a_stream_cut_before_its_finish_reason_fails_with_an_error_span`,
//! `bedrock::broken_event_streams_fail_the_stream_with_an_error_span` and
//! `responses::a_truncated_stream_fails_its_items_and_its_result`; HTTP error statuses
//! in each provider's file.

mod support;

use std::time::Duration;

use futures::StreamExt;
use support::{FakeProvider, OtlpReceiver, ReceivedSpan, Reply, fixture_response_body, install};
use tracia::{Error, ErrorCode, Provider, RunLocal, RunStream, Tracia};

const WAIT: Duration = Duration::from_secs(10);
const SSE: &str = "text/event-stream";
const JSON: &str = "application/json";
/// What the SDK reads of one answer at most (`transport::MAX_RESPONSE_BYTES`).
const LIMIT_TEXT: &str = "larger than the 32 MiB limit";

fn openai_at(base_url: &str) -> Tracia {
    support::keep_callsite_interest_shared();
    Tracia::builder()
        .without_env()
        .with_api_key(Provider::OpenAi, "sk-test-0123456789abcdefghijklmnop")
        .with_base_url(Provider::OpenAi, base_url)
        .build()
        .unwrap()
}

fn input(tag: &str) -> RunLocal {
    RunLocal::new("gpt-4o").user("hi").tag(tag)
}

/// Reads a stream to its end: the text chunks, the error item it must yield, and the
/// error `finish()` then fails with.
async fn drain_failing(mut stream: RunStream) -> (Vec<String>, Error, Error) {
    let mut chunks = Vec::new();
    let mut yielded = None;
    let items = async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => chunks.push(chunk),
                Err(e) => {
                    assert!(yielded.is_none(), "one error item, then the end: {e}");
                    yielded = Some(e);
                }
            }
        }
    };
    tokio::time::timeout(WAIT, items)
        .await
        .expect("the stream ends");
    let yielded = yielded.expect("a failed stream yields an error item");
    let failed = stream.finish().await.unwrap_err();
    assert_eq!(
        failed.to_string(),
        yielded.to_string(),
        "finish() fails the same way"
    );
    (chunks, yielded, failed)
}

fn span_tagged<'a>(spans: &'a [ReceivedSpan], tag: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.attr_str_array("tracia.tags") == Some(vec![tag.to_owned()]))
        .unwrap_or_else(|| panic!("no span tagged {tag}"))
}

/// The call's span failed with exactly this error.
fn assert_error_span(spans: &[ReceivedSpan], tag: &str, error: &Error, error_type: &str) {
    let span = span_tagged(spans, tag);
    assert!(span.is_error(), "{tag}: {span:?}");
    assert_eq!(span.status_message, error.to_string(), "{tag}");
    assert_eq!(span.attr_str("error.type"), Some(error_type), "{tag}");
    assert!(
        span.event("exception").is_some(),
        "{tag}: an exception event"
    );
}

/// The first event of the recorded OpenAI stream (text "In"), with its blank line.
fn first_event() -> Vec<u8> {
    let body = fixture_response_body("openai/chat-stream");
    let end = body.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    body[..end].to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_is_a_network_error() {
    let otlp = OtlpReceiver::start().await;
    // Bound and never listening: connections to it are refused, and no other test can
    // take the port meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let tracia = openai_at(&format!("http://{}/v1", socket.local_addr().unwrap()));
    let guard = support::pipeline(Some(&otlp), None);
    let _sub = install(&guard);

    let whole = tracia.run_local(input("whole")).await.unwrap_err();
    let streamed = tracia.run_local_stream(input("stream")).await.unwrap_err();
    for e in [&whole, &streamed] {
        assert!(e.is_network(), "{e:?}");
        assert_eq!((e.code(), e.status()), (ErrorCode::NetworkError, None));
        assert!(e.message().starts_with("Network error"), "{e}");
        assert!(!e.message().contains("sk-test"), "{e}");
    }

    guard.flush().await;
    let spans = otlp.wait_for_spans(2, WAIT).await;
    assert_error_span(&spans, "whole", &whole, "network_error");
    assert_error_span(&spans, "stream", &streamed, "network_error");
    drop(socket);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_stalling_past_the_call_timeout_is_a_timeout() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    // A JSON body whose bytes stop after its first line (whitespace is JSON's, and the
    // fake pauses after each blank line) for longer than the call may take.
    let recorded = fixture_response_body("openai/chat-1");
    let stalled = [&b"{\n\n"[..], &recorded[1..]].concat();
    fake.enqueue_reply(Reply::new(200, JSON, stalled).chunked(Duration::from_secs(30)));
    // The stream's first event arrives, then nothing.
    fake.enqueue_chunked("openai/chat-stream", Duration::from_secs(30));
    let guard = support::pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let tracia = support::client(&fake);

    let whole = tracia
        .run_local(input("whole").timeout_ms(500))
        .await
        .unwrap_err();
    let stream = tracia
        .run_local_stream(input("stream").timeout_ms(500))
        .await
        .expect("the stream opens before it stalls");
    let (chunks, yielded, streamed) = drain_failing(stream).await;
    assert_eq!(
        chunks,
        ["In"],
        "what arrived before the stall is handed out"
    );
    for e in [&whole, &yielded, &streamed] {
        assert!(e.is_timeout(), "{e:?}");
        assert_eq!(e.code(), ErrorCode::Timeout);
        assert_eq!(e.message(), "Request timed out after 500ms");
    }

    guard.flush().await;
    let spans = otlp.wait_for_spans(2, WAIT).await;
    assert_error_span(&spans, "whole", &whole, "timeout");
    assert_error_span(&spans, "stream", &streamed, "timeout");
    let stream_span = span_tagged(&spans, "stream");
    assert_eq!(
        stream_span.attr_str_array("gen_ai.response.finish_reasons"),
        Some(vec!["error".to_owned()])
    );
    assert!(
        stream_span
            .attr_str("gen_ai.output.messages")
            .is_some_and(|m| m.contains("\"In\"")),
        "the partial answer is kept on the span"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_is_a_provider_error() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    let bad = |prefix: &[u8]| {
        [
            prefix,
            b"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xff\xfe\"}}]}",
        ]
        .concat()
    };
    fake.enqueue(200, JSON, bad(b""));
    let sse = [first_event(), bad(b"data: "), b"\n\n".to_vec()].concat();
    fake.enqueue(200, SSE, sse);
    let guard = support::pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let tracia = support::client(&fake);

    let whole = tracia.run_local(input("whole")).await.unwrap_err();
    assert!(whole.message().contains("invalid JSON"), "{whole}");
    let stream = tracia.run_local_stream(input("stream")).await.unwrap();
    let (chunks, _, streamed) = drain_failing(stream).await;
    assert!(chunks.len() <= 1, "{chunks:?}");
    assert!(streamed.message().contains("not valid UTF-8"), "{streamed}");
    for e in [&whole, &streamed] {
        assert!(e.is_provider(), "{e:?}");
        assert_eq!((e.code(), e.status()), (ErrorCode::ProviderError, None));
    }

    guard.flush().await;
    let spans = otlp.wait_for_spans(2, WAIT).await;
    assert_error_span(&spans, "whole", &whole, "provider_error");
    assert_error_span(&spans, "stream", &streamed, "provider_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_json_is_a_provider_error() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue(200, JSON, "{\"id\": \"chatcmpl-1\", \"choices\": [");
    let sse = [
        first_event(),
        b"data: {\"choices\": [{\"delta\": \n\n".to_vec(),
    ]
    .concat();
    fake.enqueue_reply(Reply::new(200, SSE, sse).chunked(Duration::from_millis(20)));
    let guard = support::pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let tracia = support::client(&fake);

    let whole = tracia.run_local(input("whole")).await.unwrap_err();
    let stream = tracia.run_local_stream(input("stream")).await.unwrap();
    let (chunks, _, streamed) = drain_failing(stream).await;
    assert_eq!(chunks, ["In"], "the event before the bad one is handed out");
    for e in [&whole, &streamed] {
        assert!(e.is_provider(), "{e:?}");
        assert_eq!((e.code(), e.status()), (ErrorCode::ProviderError, None));
        assert!(e.message().starts_with("LLM provider error: "), "{e}");
    }

    guard.flush().await;
    let spans = otlp.wait_for_spans(2, WAIT).await;
    assert_error_span(&spans, "whole", &whole, "provider_error");
    assert_error_span(&spans, "stream", &streamed, "provider_error");
}

/// 64 MiB of answer: the SDK refuses it at its 32 MiB limit instead of buffering it
/// (and putting it on a span), whether the body announces its length or not, and for a
/// stream, when one event alone is that big.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_answer_is_refused_at_the_size_limit() {
    const HUGE: usize = 64 * 1024 * 1024;
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    let content = "a".repeat(HUGE);
    let json = format!(
        "{{\"id\":\"chatcmpl-huge\",\"object\":\"chat.completion\",\"model\":\"gpt-4o\",\
         \"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{content}\"}},\
         \"finish_reason\":\"stop\"}}]}}"
    );
    let event = format!(
        "data: {{\"id\":\"chatcmpl-huge\",\"object\":\"chat.completion.chunk\",\
         \"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":null}}]}}\n\n"
    );
    drop(content);
    // With `Content-Length`; then chunked, without it (JSON has no blank line: one piece).
    fake.enqueue(200, JSON, json.clone());
    fake.enqueue_reply(Reply::new(200, JSON, json).chunked(Duration::ZERO));
    let sse = [first_event(), event.into_bytes()].concat();
    fake.enqueue_reply(Reply::new(200, SSE, sse).chunked(Duration::from_millis(20)));
    let guard = support::pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let tracia = support::client(&fake);

    let announced = tracia.run_local(input("announced")).await.unwrap_err();
    let unannounced = tracia.run_local(input("unannounced")).await.unwrap_err();
    let stream = tracia.run_local_stream(input("stream")).await.unwrap();
    let (chunks, _, streamed) = drain_failing(stream).await;
    assert_eq!(
        chunks,
        ["In"],
        "the events before the huge one are handed out"
    );
    for e in [&announced, &unannounced, &streamed] {
        assert!(e.is_provider(), "{e:?}");
        assert_eq!((e.code(), e.status()), (ErrorCode::ProviderError, None));
        assert!(e.message().contains(LIMIT_TEXT), "{e}");
    }
    assert!(
        streamed.message().contains("an event of the stream"),
        "{streamed}"
    );

    guard.flush().await;
    let spans = otlp.wait_for_spans(3, WAIT).await;
    assert_error_span(&spans, "announced", &announced, "provider_error");
    assert_error_span(&spans, "unannounced", &unannounced, "provider_error");
    assert_error_span(&spans, "stream", &streamed, "provider_error");
    assert_eq!(
        otlp.errors().await,
        Vec::<String>::new(),
        "no oversized span either"
    );
}
