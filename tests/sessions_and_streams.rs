//! Trace shape: sessions chain calls in one trace, calls nest under `#[instrument]`
//! spans, and streams end their span exactly once however they end.

mod support;

use std::time::Duration;

use futures::StreamExt;
use support::{FakeProvider, OtlpReceiver, ReceivedSpan, client, install, pipeline};
use tracia::{RunLocal, Tracia};
use tracing::Instrument;

const WAIT: Duration = Duration::from_secs(10);

fn chat_spans(spans: &[ReceivedSpan]) -> Vec<&ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.name.starts_with("chat "))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_of_three_calls_is_one_trace_with_a_parent_chain() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    support::enqueue_times(&fake, "openai/chat-1", 3);
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let session = client(&fake).create_session();
    let mut results = Vec::new();
    for turn in 0..3 {
        results.push(
            session
                .run_local(RunLocal::new("gpt-4o").user(format!("turn {turn}")))
                .await
                .unwrap(),
        );
    }
    guard.flush().await;
    let spans = otlp.wait_for_spans(3, WAIT).await;
    let by_id = |id: &str| {
        spans
            .iter()
            .find(|s| format!("sp_{}", s.span_id) == id)
            .expect("exported")
    };
    let (a, b, c) = (
        by_id(&results[0].span_id),
        by_id(&results[1].span_id),
        by_id(&results[2].span_id),
    );
    assert!(a.is_root());
    assert_eq!(b.parent_span_id, a.span_id);
    assert_eq!(c.parent_span_id, b.span_id);
    assert!(a.trace_id == b.trace_id && b.trace_id == c.trace_id);
    assert_eq!(session.trace_id(), Some(results[0].trace_id.clone()));
    assert_eq!(session.last_span_id(), Some(results[2].span_id.clone()));
    // The provider saw each call's own span as the parent in traceparent.
    let sent = fake.requests().await;
    assert_eq!(
        sent[1].header("traceparent"),
        Some(format!("00-{}-{}-01", b.trace_id, b.span_id).as_str())
    );

    session.reset();
    assert_eq!((session.trace_id(), session.last_span_id()), (None, None));
}

#[tracing::instrument(skip(tracia))]
async fn answer_question(tracia: &Tracia, question: &str) -> tracia::RunResult {
    lookup_context().await;
    tracia
        .run_local(RunLocal::new("gpt-4o").user(question))
        .await
        .unwrap()
}

#[tracing::instrument]
async fn lookup_context() {
    tokio::task::yield_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_inside_an_instrumented_function_is_its_child() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("openai/chat-1");
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let result = answer_question(&client(&fake), "Why?").await;
    guard.flush().await;
    let spans = otlp.wait_for_spans(3, WAIT).await;
    let handler = spans.iter().find(|s| s.name == "answer_question").unwrap();
    let helper = spans.iter().find(|s| s.name == "lookup_context").unwrap();
    let chat = chat_spans(&spans)[0];
    assert_eq!(helper.parent_span_id, handler.span_id);
    assert_eq!(chat.parent_span_id, handler.span_id);
    assert_eq!(format!("sp_{}", chat.span_id), result.span_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_ids_and_continued_sessions_win_over_the_ambient_span() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("openai/chat-1")
        .enqueue_fixture("openai/chat-1");
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let tracia = client(&fake);
    let ambient = tracing::info_span!("ambient");
    let session = tracia
        .create_session_from("tr_00000000feedface", Some("sp_00000000cafebabe"))
        .unwrap();
    let continued = session
        .run_local(RunLocal::new("gpt-4o").user("continue"))
        .instrument(ambient.clone())
        .await
        .unwrap();
    let explicit = tracia
        .run_local(
            RunLocal::new("gpt-4o")
                .user("x")
                .trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
                .parent_span_id("sp_00f067aa0ba902b7"),
        )
        .instrument(ambient.clone())
        .await
        .unwrap();
    drop(ambient);
    guard.flush().await;
    let spans = otlp.wait_for_spans(3, WAIT).await;
    let chats = chat_spans(&spans);
    let first = chats
        .iter()
        .find(|s| format!("sp_{}", s.span_id) == continued.span_id)
        .unwrap();
    assert_eq!(first.trace_id, "000000000000000000000000feedface");
    assert_eq!(first.parent_span_id, "00000000cafebabe");
    assert_eq!(continued.trace_id, "tr_00000000feedface");
    let second = chats
        .iter()
        .find(|s| format!("sp_{}", s.span_id) == explicit.span_id)
        .unwrap();
    assert_eq!(
        (second.trace_id.as_str(), second.parent_span_id.as_str()),
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    );
    assert_eq!(
        explicit.trace_id, "tr_4bf92f3577b34da6a3ce929d0e0e4736",
        "32-hex trace ids keep all their digits"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_dropped_after_two_chunks_exports_exactly_one_span() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_chunked("openai/chat-stream", Duration::from_millis(30));
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let mut stream = client(&fake)
        .run_local_stream(RunLocal::new("gpt-3.5-turbo").user("joke"))
        .await
        .unwrap();
    let span_id = stream.span_id();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(stream.next().await.unwrap().unwrap());
    }
    drop(stream);
    guard.flush().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    guard.flush().await;
    let spans = otlp.spans().await;
    let chats = chat_spans(&spans);
    assert_eq!(chats.len(), 1, "exactly one span for a dropped stream");
    let chat = chats[0];
    assert_eq!(format!("sp_{}", chat.span_id), span_id);
    assert!(chat.is_error());
    assert_eq!(
        chat.status_message,
        "[ABORTED] Stream dropped before completion"
    );
    assert_eq!(chat.attr_bool("tracia.stream.aborted"), Some(true));
    assert_eq!(chat.attr_bool("gen_ai.request.stream"), Some(true));
    assert_eq!(
        chat.attr_str_array("gen_ai.response.finish_reasons"),
        Some(vec!["error".to_owned()])
    );
    assert!(
        chat.attr_f64("gen_ai.response.time_to_first_chunk")
            .unwrap()
            > 0.0
    );
    let output = chat.attr_str("gen_ai.output.messages").unwrap();
    assert!(
        output.contains(&got.concat()),
        "the partial answer is kept: {output}"
    );
    let outcome = &fake.wait_for_stream_outcomes(1, WAIT).await[0];
    assert!(!outcome.completed, "the connection was closed early");
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_stops_at_once_and_resolves_with_aborted() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_chunked("openai/chat-stream", Duration::from_secs(2));
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let mut stream = client(&fake)
        .run_local_stream(RunLocal::new("gpt-3.5-turbo").user("joke"))
        .await
        .unwrap();
    let handle = stream.abort_handle();
    // Abort while `next()` is waiting on a 2 s pause: it must return at once.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        handle.abort();
    });
    let mut items = 0;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("abort wakes the stream")
    {
        item.unwrap();
        items += 1;
    }
    assert!(items <= 1);
    let result = stream.finish().await.unwrap();
    assert!(result.aborted);
    guard.flush().await;
    let chat = &otlp.wait_for_spans(1, WAIT).await[0];
    assert_eq!(chat.status_message, "[ABORTED] Stream aborted");
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_span_has_usage_and_time_to_first_chunk() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("openai/chat-stream-usage");
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let result = client(&fake)
        .run_local_stream(
            RunLocal::new("deepseek-chat")
                .provider(tracia::Provider::OpenAi)
                .user("joke"),
        )
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    guard.flush().await;
    let chat = &otlp.wait_for_spans(1, WAIT).await[0];
    assert_eq!(chat.status_code, 0);
    assert_eq!(
        chat.attr_i64("gen_ai.usage.output_tokens"),
        Some(result.usage.output_tokens as i64)
    );
    assert_eq!(
        chat.attr_str("gen_ai.response.model"),
        Some("deepseek-chat")
    );
    assert_eq!(
        chat.attr_str_array("gen_ai.response.finish_reasons"),
        Some(vec!["stop".to_owned()])
    );
    assert!(
        chat.attr_f64("gen_ai.response.time_to_first_chunk")
            .is_some()
    );
}
