//! End to end: an LLM call's span arrives at a real OTLP/HTTP receiver and at a fake
//! Tracia API, with the right name, kind, parent, attributes and types, and equal ids.

mod support;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use support::{
    FakeProvider, OtlpReceiver, check_span_payload, client, client_with, install, pipeline,
};
use tracia::RunLocal;
use tracing::Instrument;

const KEY: &str = "tr_test_key_0123456789abcdef";
const WAIT: Duration = Duration::from_secs(10);

fn json_attr(span: &support::ReceivedSpan, key: &str) -> Value {
    serde_json::from_str(
        span.attr_str(key)
            .unwrap_or_else(|| panic!("{key} missing")),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_span_reaches_otlp_and_tracia_with_every_attribute() {
    let (fake, otlp, cloud) = support::servers(KEY).await;
    fake.enqueue_fixture("openai/chat-1");
    let guard = pipeline(Some(&otlp), Some((&cloud, KEY)));
    let _sub = install(&guard);

    let app = tracing::info_span!("handle_request");
    let input = RunLocal::new("gpt-3.5-turbo")
        .system("You are {{style}}.")
        .user("Tell me a joke about opentelemetry")
        .variable("style", "funny")
        .temperature(0.2)
        .top_p(0.9)
        .max_output_tokens(100)
        .stop_sequence("END")
        .tag("jokes")
        .tag("demo")
        .user_id("user_42")
        .session_id("conv_7");
    let result = client(&fake)
        .run_local(input)
        .instrument(app.clone())
        .await
        .unwrap();
    drop(app);
    guard.flush().await;

    let spans = otlp.wait_for_spans(2, WAIT).await;
    let chat = spans
        .iter()
        .find(|s| s.name == "chat gpt-3.5-turbo")
        .expect("chat span exported");
    let app = spans
        .iter()
        .find(|s| s.name == "handle_request")
        .expect("app span exported");
    assert!(chat.is_client());
    assert_eq!(
        chat.parent_span_id, app.span_id,
        "the LLM span is the app span's child"
    );
    assert_eq!(chat.trace_id, app.trace_id);
    assert_eq!(format!("sp_{}", chat.span_id), result.span_id);
    // TraciaIdGenerator's trace ids have a zero upper half, shown as tr_ + 16 hex.
    assert!(
        chat.trace_id.starts_with("0000000000000000"),
        "{}",
        chat.trace_id
    );
    assert_eq!(result.trace_id, format!("tr_{}", &chat.trace_id[16..]));
    assert_eq!(chat.service_name.as_deref(), Some("tracia-tests"));
    assert_eq!(chat.status_code, 0, "success leaves the status unset");

    let s = |k| chat.attr_str(k);
    assert_eq!(s("gen_ai.operation.name"), Some("chat"));
    assert_eq!(s("gen_ai.provider.name"), Some("openai"));
    assert_eq!(s("gen_ai.request.model"), Some("gpt-3.5-turbo"));
    assert_eq!(s("server.address"), Some("127.0.0.1"));
    assert_eq!(
        chat.attr_i64("server.port"),
        Some(i64::from(fake.addr().port()))
    );
    assert_eq!(chat.attr_f64("gen_ai.request.temperature"), Some(0.2));
    assert_eq!(chat.attr_f64("gen_ai.request.top_p"), Some(0.9));
    assert_eq!(chat.attr_i64("gen_ai.request.max_tokens"), Some(100));
    assert_eq!(
        chat.attr_str_array("gen_ai.request.stop_sequences"),
        Some(vec!["END".to_owned()])
    );
    assert_eq!(
        s("gen_ai.response.id"),
        Some("chatcmpl-908MD9ivBBLb6EaIjlqwFokntayQK")
    );
    assert_eq!(s("gen_ai.response.model"), Some("gpt-3.5-turbo-0125"));
    assert_eq!(
        chat.attr_str_array("gen_ai.response.finish_reasons"),
        Some(vec!["stop".to_owned()])
    );
    assert_eq!(chat.attr_i64("gen_ai.usage.input_tokens"), Some(15));
    assert_eq!(chat.attr_i64("gen_ai.usage.output_tokens"), Some(19));
    assert_eq!(s("session.id"), Some("conv_7"));
    assert_eq!(s("gen_ai.conversation.id"), Some("conv_7"));
    assert_eq!(s("user.id"), Some("user_42"));
    assert_eq!(
        chat.attr_str_array("tracia.tags"),
        Some(vec!["jokes".to_owned(), "demo".to_owned()])
    );
    assert_eq!(s("tracia.provider"), Some("openai"));
    assert_eq!(s("openai.api.type"), Some("chat_completions"));
    assert_eq!(
        s("openai.response.system_fingerprint"),
        Some("fp_2b778c6b35")
    );
    assert!(chat.attr_f64("tracia.cost_usd").unwrap() > 0.0);
    assert_eq!(
        json_attr(chat, "tracia.variables"),
        json!({"style": "funny"})
    );
    assert_eq!(
        json_attr(chat, "gen_ai.input.messages"),
        json!([
            {"role": "system", "parts": [{"type": "text", "content": "You are funny."}]},
            {"role": "user", "parts": [{"type": "text", "content": "Tell me a joke about opentelemetry"}]}
        ])
    );
    assert_eq!(
        json_attr(chat, "gen_ai.output.messages"),
        json!([{"role": "assistant", "finish_reason": "stop", "parts": [{"type": "text", "content": result.text}]}])
    );
    for absent in [
        "error.type",
        "gen_ai.request.stream",
        "gen_ai.response.time_to_first_chunk",
        "gen_ai.usage.prompt_tokens",
        "gen_ai.system",
    ] {
        assert!(!chat.has_attr(absent), "{absent} must not be set");
    }

    // The provider request carried the span's own traceparent, sampled.
    let sent = &fake.requests().await[0];
    assert_eq!(
        sent.header("traceparent"),
        Some(format!("00-{}-{}-01", chat.trace_id, chat.span_id).as_str())
    );

    // Tracia got the LLM span only, with the same ids.
    let payloads = cloud.wait_for_spans(1, WAIT).await;
    assert_eq!(payloads.len(), 1, "app spans are not sent to Tracia");
    let p = &payloads[0];
    check_span_payload(p).unwrap();
    assert_eq!(p["spanId"], result.span_id);
    assert_eq!(p["traceId"], result.trace_id);
    assert_eq!(p["parentSpanId"], format!("sp_{}", app.span_id));
    assert_eq!(
        (
            p["model"].clone(),
            p["provider"].clone(),
            p["status"].clone()
        ),
        (json!("gpt-3.5-turbo"), json!("openai"), json!("SUCCESS"))
    );
    assert_eq!(
        p["input"],
        json!({"messages": [{"role": "system", "content": "You are funny."}, {"role": "user", "content": "Tell me a joke about opentelemetry"}]})
    );
    assert_eq!(p["variables"], json!({"style": "funny"}));
    assert_eq!(p["output"], json!(result.text));
    assert_eq!(
        (
            p["inputTokens"].clone(),
            p["outputTokens"].clone(),
            p["totalTokens"].clone()
        ),
        (json!(15), json!(19), json!(34))
    );
    assert_eq!(p["tags"], json!(["jokes", "demo"]));
    assert_eq!(
        (p["userId"].clone(), p["sessionId"].clone()),
        (json!("user_42"), json!("conv_7"))
    );
    assert_eq!(
        (
            p["temperature"].clone(),
            p["topP"].clone(),
            p["maxOutputTokens"].clone()
        ),
        (json!(0.2), json!(0.9), json!(100))
    );
    assert!(p["latencyMs"].as_u64().is_some());
    assert_eq!(
        cloud.requests().await[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );

    let stats = guard.stats();
    let tracia_stats = stats.iter().find(|s| s.exporter == "tracia").unwrap();
    assert_eq!(
        (
            tracia_stats.delivered,
            tracia_stats.skipped,
            tracia_stats.lost()
        ),
        (1, 1, 0)
    );
    let otlp_stats = stats.iter().find(|s| s.exporter == "otlp").unwrap();
    assert_eq!((otlp_stats.delivered, otlp_stats.lost()), (2, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_failure_is_an_error_span_in_both_backends() {
    let (fake, otlp, cloud) = support::servers(KEY).await;
    fake.enqueue_openai_error(
        500,
        "The server had an error while processing your request",
        "server_error",
        None,
    );
    let guard = pipeline(Some(&otlp), Some((&cloud, KEY)));
    let _sub = install(&guard);
    let err = client(&fake)
        .run_local(RunLocal::new("gpt-4o").user("hi"))
        .await
        .unwrap_err();
    guard.flush().await;

    let chat = &otlp.wait_for_spans(1, WAIT).await[0];
    assert!(chat.is_error());
    assert_eq!(chat.status_message, err.to_string());
    assert_eq!(chat.attr_str("error.type"), Some("500"));
    let event = chat.event("exception").expect("exception event");
    assert!(event.attributes.contains_key("exception.message"));
    assert!(!chat.has_attr("gen_ai.output.messages"));

    let p = &cloud.wait_for_spans(1, WAIT).await[0];
    check_span_payload(p).unwrap();
    assert_eq!(
        (
            p["status"].clone(),
            p["output"].clone(),
            p["inputTokens"].clone()
        ),
        (json!("ERROR"), Value::Null, json!(0))
    );
    assert!(
        p["error"]
            .as_str()
            .unwrap()
            .contains("The server had an error")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn caller_span_id_is_honoured_and_send_trace_false_exports_nothing() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("openai/chat-1")
        .enqueue_fixture("openai/chat-1");
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let tracia = client(&fake);
    let chosen = "sp_5ca1ab1e0ddba11d";
    let traced = tracia
        .run_local(RunLocal::new("gpt-4o").user("hi").span_id(chosen))
        .await
        .unwrap();
    assert_eq!(traced.span_id, chosen);
    let silent = tracia
        .run_local(RunLocal::new("gpt-4o").user("hi").send_trace(false))
        .await
        .unwrap();
    assert!(
        silent.span_id.starts_with("sp_") && silent.trace_id.starts_with("tr_"),
        "ids even when not traced"
    );
    guard.flush().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let spans = otlp.spans().await;
    assert_eq!(spans.len(), 1, "send_trace(false) exports nothing");
    assert_eq!(format!("sp_{}", spans[0].span_id), chosen);
}

#[tokio::test(flavor = "multi_thread")]
async fn content_capture_can_be_switched_off() {
    let (fake, otlp, cloud) = support::servers(KEY).await;
    fake.enqueue_fixture("openai/chat-1");
    let guard = pipeline(Some(&otlp), Some((&cloud, KEY)));
    let _sub = install(&guard);
    let tracia = client_with(&fake, |b| b.with_capture_content(false));
    tracia
        .run_local(
            RunLocal::new("gpt-4o")
                .user("secret plans")
                .variable("x", "y")
                .tool(tracia::ToolDefinition::new("lookup").with_description("secret tool")),
        )
        .await
        .unwrap();
    guard.flush().await;
    let chat = &otlp.wait_for_spans(1, WAIT).await[0];
    for key in [
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "tracia.variables",
    ] {
        assert!(
            !chat.has_attr(key),
            "{key} captured although capture is off"
        );
    }
    assert_eq!(
        chat.attr_i64("gen_ai.usage.input_tokens"),
        Some(15),
        "operational data stays"
    );
    assert_eq!(
        json_attr(chat, "gen_ai.tool.definitions"),
        json!([{"type": "function", "name": "lookup"}]),
        "tool names only"
    );
    let p = &cloud.wait_for_spans(1, WAIT).await[0];
    assert!(!p.to_string().contains("secret"));
}

/// Plain `#[tokio::test]` is a current-thread runtime: flush must not deadlock on it.
#[tokio::test]
async fn flush_on_a_current_thread_runtime_delivers_everything() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    support::enqueue_times(&fake, "openai/chat-1", 5);
    let guard = support::pipeline_with(Some(&otlp), None, |b| {
        b.with_scheduled_delay(Duration::from_secs(60))
    });
    let _sub = install(&guard);
    let tracia = client(&fake);
    support::run_calls(&tracia, 5).await;
    // The 60 s delay means only the flush can have sent them.
    tokio::time::timeout(Duration::from_secs(30), guard.flush())
        .await
        .expect("flush finished");
    assert_eq!(otlp.spans().await.len(), 5);
}

/// A quiet filter (`RUST_LOG=warn` style) drops the app's info spans, never the LLM's.
#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_filter_never_drops_llm_spans() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("openai/chat-1");
    let guard = support::pipeline_with(Some(&otlp), None, |b| b.with_filter("warn"));
    let _sub = install(&guard);
    client(&fake)
        .run_local(RunLocal::new("gpt-4o").user("hi"))
        .instrument(tracing::info_span!("noisy_app_span"))
        .await
        .unwrap();
    guard.flush().await;
    let spans = otlp.wait_for_spans(1, WAIT).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "chat gpt-4o");
    assert!(
        spans[0].is_root(),
        "the filtered-out app span is skipped, not a dangling parent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_joins_the_trace_and_conversation_of_incoming_headers() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("openai/chat-1");
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);

    // What an upstream service sent.
    let mut incoming = http::HeaderMap::new();
    incoming.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    incoming.insert(
        "baggage",
        "session.id=conv_7,user.id=user_42".parse().unwrap(),
    );

    let handler = tracing::info_span!("handle_request");
    tracia::propagation::set_parent_from(&handler, &incoming);
    let who = tracia::propagation::conversation(&tracia::propagation::extract(&incoming));
    let input = RunLocal::new("gpt-3.5-turbo")
        .user("hi")
        .session_id(who.session_id.unwrap())
        .user_id(who.user_id.unwrap());
    client(&fake)
        .run_local(input)
        .instrument(handler.clone())
        .await
        .unwrap();
    drop(handler);
    guard.flush().await;

    let spans = otlp.wait_for_spans(2, WAIT).await;
    let handler = spans.iter().find(|s| s.name == "handle_request").unwrap();
    let chat = spans
        .iter()
        .find(|s| s.name == "chat gpt-3.5-turbo")
        .unwrap();
    assert_eq!(handler.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(handler.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(chat.trace_id, handler.trace_id);
    assert_eq!(chat.parent_span_id, handler.span_id);
    assert_eq!(chat.attr_str("session.id"), Some("conv_7"));
    assert_eq!(chat.attr_str("user.id"), Some("user_42"));
    // The provider request continues the same trace.
    let sent = &fake.requests().await[0];
    let traceparent = sent.header("traceparent").unwrap();
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{traceparent}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paced_stream_spans_its_whole_time_at_otlp_and_in_tracia_latency() {
    let (fake, otlp, cloud) = support::servers(KEY).await;
    let pause = Duration::from_millis(20);
    fake.enqueue_chunked("openai/chat-stream", pause);
    let guard = pipeline(Some(&otlp), Some((&cloud, KEY)));
    let _sub = install(&guard);
    let before_call = std::time::Instant::now();
    let mut stream = client(&fake)
        .run_local_stream(RunLocal::new("gpt-3.5-turbo").user("joke"))
        .await
        .unwrap();
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
    }
    let result = stream.finish().await.unwrap();
    guard.flush().await;

    let sent = &fake.wait_for_stream_outcomes(1, WAIT).await[0];
    assert!(sent.completed, "{sent:?}");
    let pacing = pause * u32::try_from(sent.events_total - 1).unwrap();
    let chat = otlp
        .wait_for_spans(1, WAIT)
        .await
        .into_iter()
        .find(|s| format!("sp_{}", s.span_id) == result.span_id)
        .expect("the stream's span at the OTLP receiver");
    let span = Duration::from_nanos(chat.duration_nanos());
    assert!(
        span >= pacing,
        "the span ({span:?}) covers the paced events ({pacing:?})"
    );
    let ttft = chat
        .attr_f64("gen_ai.response.time_to_first_chunk")
        .unwrap();
    assert!(
        ttft >= 0.0 && Duration::from_secs_f64(ttft) <= span,
        "start ≤ start + TTFT ({ttft} s) ≤ end ({span:?})"
    );
    // The span's milliseconds, more only if creating the span stalled (the result's
    // latency counts from just before it), never more than since before the call.
    let latency = u128::from(result.latency_ms);
    let wall = before_call.elapsed().as_millis() + 1;
    assert!(
        span.as_millis() <= latency && latency <= wall,
        "span {span:?} <= latency {latency} ms <= {wall} ms since before the call"
    );

    let p = &cloud.wait_for_spans(1, WAIT).await[0];
    check_span_payload(p).unwrap();
    assert_eq!(p["spanId"], json!(result.span_id));
    assert_eq!(
        p["latencyMs"].as_u64().map(u128::from),
        Some(span.as_millis()),
        "Tracia's latency is the span's duration"
    );
}
