//! `run_responses` (OpenAI's Responses API) against a fake OpenAI server replaying
//! recorded exchanges: what the SDK sends, what it returns, the span, and every way a
//! call or stream can end.

mod support;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use support::{FakeProvider, OtlpReceiver, ReceivedSpan, client, install, load_fixture, pipeline};
use tracia::{
    ErrorCode, FinishReason, ResponsesEvent, ResponsesToolCall, RunResponses, ToolChoice,
    ToolDefinition,
};

const WAIT: Duration = Duration::from_secs(10);

/// The `response.completed` response of a recorded stream: what the API itself says
/// the whole streamed answer was.
fn completed_response(fixture: &str) -> Value {
    let body = load_fixture(fixture).response_body;
    String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|e| e["type"] == "response.completed")
        .expect("the recorded stream completes")["response"]
        .clone()
}

/// The recorded client sent the string shorthand of a single user message; the SDK
/// always sends the item form, which the API takes as the same input.
fn as_user_item(recorded_input: &Value) -> Value {
    json!([{"type": "message", "role": "user", "content": recorded_input}])
}

/// The tool as the recorded `responses-tools-1` request declares it.
fn recorded_weather_tool() -> ToolDefinition {
    let recorded = load_fixture("openai/responses-tools-1").request_body;
    let t = &recorded["tools"][0];
    ToolDefinition::new(t["name"].as_str().unwrap())
        .with_description(t["description"].as_str().unwrap())
        .with_parameters(t["parameters"].clone())
}

fn weather_question() -> RunResponses {
    RunResponses::new("gpt-4.1-nano")
        .user("What's the weather in London?")
        .tool(recorded_weather_tool())
        .tool_choice(ToolChoice::Auto)
}

fn chat_spans(spans: &[ReceivedSpan]) -> Vec<&ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.name.starts_with("chat "))
        .collect()
}

fn json_attr(span: &ReceivedSpan, key: &str) -> Value {
    serde_json::from_str(
        span.attr_str(key)
            .unwrap_or_else(|| panic!("{key} missing")),
    )
    .unwrap()
}

#[tokio::test]
async fn text_usage_ids_and_output_items_come_back_and_the_request_is_the_recorded_one() {
    for name in ["openai/responses-1", "openai/responses-2"] {
        let fixture = load_fixture(name);
        let recorded: Value = serde_json::from_slice(&fixture.response_body).unwrap();
        let fake = FakeProvider::start().await;
        fake.enqueue_fixture(name);
        let question = fixture.request_body["input"].as_str().unwrap();
        let result = client(&fake)
            .run_responses(RunResponses::new("gpt-4.1-nano").user(question))
            .await
            .unwrap();

        assert_eq!(result.text, "The capital of France is Paris.", "{name}");
        let usage = result.usage;
        assert_eq!(
            (usage.input_tokens, usage.output_tokens, usage.total_tokens),
            (14, 8, 22)
        );
        assert_eq!(
            (usage.cache_read_input_tokens, usage.reasoning_output_tokens),
            (Some(0), Some(0))
        );
        assert_eq!(result.response_id.as_deref(), recorded["id"].as_str());
        assert_eq!(
            result.response_model.as_deref(),
            Some("gpt-4.1-nano-2025-04-14")
        );
        assert_eq!(result.model, "gpt-4.1-nano");
        assert_eq!(
            result.output_items,
            recorded["output"].as_array().unwrap().clone()
        );
        assert!(result.tool_calls.is_empty() && result.reasoning.is_none());
        assert_eq!(result.finish_reason, FinishReason::Stop);
        assert!(!result.aborted);
        assert!(result.span_id.starts_with("sp_") && result.trace_id.starts_with("tr_"));
        // gpt-4.1-nano at 0.1 / 0.4 USD per million tokens: 14 × 1e-7 + 8 × 4e-7.
        assert!(
            (result.cost.unwrap() - 0.0000046).abs() < 1e-12,
            "{:?}",
            result.cost
        );

        let sent = &fake.requests().await[0];
        assert_eq!(sent.path, fixture.request_path());
        assert_eq!(
            sent.header("authorization"),
            Some("Bearer sk-test-0123456789abcdefghijklmnop")
        );
        let mut expected = fixture.request_body.clone();
        expected["input"] = as_user_item(&fixture.request_body["input"]);
        assert_eq!(sent.body, expected, "{name}");
    }
}

#[tokio::test]
async fn a_stream_yields_deltas_then_the_text_then_done_and_equals_the_completed_response() {
    for name in ["openai/responses-stream-1", "openai/responses-stream-2"] {
        let fixture = load_fixture(name);
        let completed = completed_response(name);
        let fake = FakeProvider::start().await;
        fake.enqueue_fixture(name);
        let question = fixture.request_body["input"].as_str().unwrap();
        let mut stream = client(&fake)
            .run_responses_stream(RunResponses::new("gpt-4.1-nano").user(question))
            .await
            .unwrap();
        let mut events = Vec::new();
        while let Some(event) = stream.next().await {
            events.push(event.unwrap());
        }
        let result = stream.finish().await.unwrap();

        let full_text = completed["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap();
        let deltas: String = events
            .iter()
            .filter_map(|e| match e {
                ResponsesEvent::TextDelta(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deltas, full_text, "{name}");
        assert_eq!(result.text, full_text);
        let tail = &events[events.len() - 2..];
        assert_eq!(
            tail,
            [
                ResponsesEvent::Text(full_text.to_owned()),
                ResponsesEvent::Done(result.usage)
            ]
        );
        assert_eq!(
            result.output_items,
            completed["output"].as_array().unwrap().clone(),
            "the streamed items are the completed response's output"
        );
        let u = &completed["usage"];
        assert_eq!(
            (
                result.usage.input_tokens,
                result.usage.output_tokens,
                result.usage.total_tokens
            ),
            (
                u["input_tokens"].as_u64().unwrap(),
                u["output_tokens"].as_u64().unwrap(),
                u["total_tokens"].as_u64().unwrap()
            )
        );
        assert_eq!(result.usage.reasoning_output_tokens, Some(0));
        assert_eq!(result.response_id.as_deref(), completed["id"].as_str());
        assert_eq!(result.finish_reason, FinishReason::Stop);

        let mut expected = fixture.request_body.clone();
        expected["input"] = as_user_item(&fixture.request_body["input"]);
        assert_eq!(fake.requests().await[0].body, expected, "{name}");
    }
}

#[tokio::test]
async fn tool_calls_and_the_continuation_carry_the_items_and_their_outputs() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/responses-tools-1")
        .enqueue_fixture("openai/responses-tools-2");
    let tracia = client(&fake);
    let first = tracia.run_responses(weather_question()).await.unwrap();

    let recorded: Value =
        serde_json::from_slice(&load_fixture("openai/responses-tools-1").response_body).unwrap();
    let items = recorded["output"].as_array().unwrap();
    assert_eq!(first.finish_reason, FinishReason::ToolCalls);
    assert_eq!(first.text, "");
    assert_eq!(
        first.tool_calls,
        items
            .iter()
            .map(|i| ResponsesToolCall {
                id: i["id"].as_str().unwrap().into(),
                call_id: i["call_id"].as_str().unwrap().into(),
                name: "get_weather".into(),
                arguments: json!({"location": "London"}),
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(&first.output_items, items);
    assert_eq!(
        fake.requests().await[0].body,
        load_fixture("openai/responses-tools-1").request_body,
        "the whole body equals the real client's"
    );

    let mut next = weather_question().items(first.output_items.clone());
    for call in &first.tool_calls {
        next = next.function_call_output(&call.call_id, "Rainy, 12°C");
    }
    // responses-tools-2 was recorded for the same question, so it answers with calls
    // again; what matters here is what the SDK sent.
    let second = tracia.run_responses(next).await.unwrap();
    assert_eq!(second.tool_calls.len(), 2);
    let sent = &fake.requests().await[1].body;
    let mut expected_input = vec![json!({
        "type": "message", "role": "user", "content": "What's the weather in London?"
    })];
    expected_input.extend(items.iter().cloned());
    expected_input.extend(items.iter().map(|i| {
        json!({"type": "function_call_output", "call_id": i["call_id"], "output": "Rainy, 12°C"})
    }));
    assert_eq!(sent["input"], Value::Array(expected_input));
    assert_eq!(
        sent["tools"],
        load_fixture("openai/responses-tools-1").request_body["tools"]
    );
}

#[tokio::test]
async fn a_reasoning_call_reports_cached_and_reasoning_tokens_and_costs_the_table_price() {
    // Hand-built fixture (see tests/fixtures/providers/openai/README.md).
    let fixture = load_fixture("openai/responses-reasoning");
    let recorded = &fixture.request_body;
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/responses-reasoning");
    let input = RunResponses::new("o4-mini")
        .developer(recorded["input"][0]["content"].as_str().unwrap())
        .user(recorded["input"][1]["content"].as_str().unwrap())
        .max_output_tokens(2000)
        .custom_option("reasoning", json!({"effort": "medium", "summary": "auto"}));
    let result = client(&fake).run_responses(input).await.unwrap();
    assert_eq!(&fake.requests().await[0].body, recorded);

    let u = result.usage;
    assert_eq!(
        (u.input_tokens, u.cache_read_input_tokens),
        (1310, Some(1152))
    );
    assert_eq!(
        (u.output_tokens, u.reasoning_output_tokens),
        (723, Some(512))
    );
    assert_eq!(u.total_tokens, 2033);
    assert_eq!(
        result.text,
        "14:35 + 2 h 50 min = 17:25, so the train arrives at 17:25."
    );
    let reasoning = result.reasoning.as_deref().unwrap();
    assert!(
        reasoning.starts_with("**Adding the travel time**"),
        "{reasoning}"
    );
    assert_eq!(
        result.output_items.len(),
        2,
        "the reasoning item is kept to pass back"
    );

    // o4-mini in data/pricing.json: input 1.1e-6, cache_read 2.75e-7, output 4.4e-6 USD
    // per token, and no separate reasoning price, so reasoning tokens are output tokens.
    let table: Value = serde_json::from_str(include_str!("../data/pricing.json")).unwrap();
    assert_eq!(
        table["models"]["o4-mini"],
        json!({"input": 1.1e-6, "output": 4.4e-6, "cache_read": 2.75e-7}),
        "the prices this test was worked out with"
    );
    let uncached = (1310 - 1152) as f64 * 1.1e-6; // 0.0001738
    let cached = 1152.0 * 2.75e-7; // 0.0003168
    let output = 723.0 * 4.4e-6; // 0.0031812 (its 512 reasoning tokens included)
    let expected = uncached + cached + output; // 0.0036718
    assert!((expected - 0.0036718).abs() < 1e-12);
    assert!(
        (result.cost.unwrap() - expected).abs() < 1e-12,
        "{:?}",
        result.cost
    );
}

#[tokio::test]
async fn an_incomplete_response_stopped_by_max_output_tokens_is_max_tokens() {
    let mut body: Value =
        serde_json::from_slice(&load_fixture("openai/responses-1").response_body).unwrap();
    body["status"] = json!("incomplete");
    body["incomplete_details"] = json!({"reason": "max_output_tokens"});
    let fake = FakeProvider::start().await;
    fake.enqueue(200, "application/json", body.to_string());
    let result = client(&fake)
        .run_responses(
            RunResponses::new("gpt-4.1-nano")
                .user("hi")
                .max_output_tokens(8),
        )
        .await
        .unwrap();
    assert_eq!(result.finish_reason, FinishReason::MaxTokens);
    assert_eq!(fake.requests().await[0].body["max_output_tokens"], 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_span_is_a_responses_chat_span_with_the_mapped_input_and_the_output() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("openai/responses-tools-2");
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let previous: Value =
        serde_json::from_slice(&load_fixture("openai/responses-tools-1").response_body).unwrap();
    let call = previous["output"][0].clone();
    let input = weather_question()
        .developer("Use Celsius.")
        .item(call.clone())
        .function_call_output(call["call_id"].as_str().unwrap(), "Rainy, 12°C")
        .tag("responses-test")
        .user_id("user_7");
    let result = client(&fake).run_responses(input).await.unwrap();
    guard.flush().await;
    let spans = otlp.wait_for_spans(1, WAIT).await;
    let span = chat_spans(&spans)[0];

    assert_eq!(span.name, "chat gpt-4.1-nano");
    assert!(span.is_client() && !span.is_error());
    assert_eq!(format!("sp_{}", span.span_id), result.span_id);
    for (key, value) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("openai.api.type", "responses"),
        ("gen_ai.request.model", "gpt-4.1-nano"),
        ("gen_ai.response.model", "gpt-4.1-nano-2025-04-14"),
        ("user.id", "user_7"),
    ] {
        assert_eq!(span.attr_str(key), Some(value), "{key}");
    }
    assert_eq!(
        span.attr_str("gen_ai.response.id"),
        result.response_id.as_deref()
    );
    assert_eq!(span.attr_i64("gen_ai.usage.input_tokens"), Some(59));
    assert_eq!(span.attr_i64("gen_ai.usage.output_tokens"), Some(45));
    assert_eq!(
        span.attr_str_array("gen_ai.response.finish_reasons"),
        Some(vec!["tool_call".to_owned()])
    );
    assert_eq!(span.attr_f64("tracia.cost_usd"), result.cost);
    assert!(!span.has_attr("gen_ai.request.stream"));

    let input = json_attr(span, "gen_ai.input.messages");
    assert_eq!(
        input,
        json!([
            {"role": "user", "parts": [{"type": "text", "content": "What's the weather in London?"}]},
            {"role": "system", "parts": [{"type": "text", "content": "Use Celsius."}]},
            {"role": "assistant", "parts": [{"type": "text", "content": call.to_string()}]},
            {"role": "tool", "parts": [{"type": "tool_call_response",
                "id": call["call_id"], "response": "Rainy, 12°C"}]},
        ])
    );
    let output = json_attr(span, "gen_ai.output.messages");
    let parts = output[0]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    for (part, call) in parts.iter().zip(&result.tool_calls) {
        assert_eq!(
            part,
            &json!({"type": "tool_call", "id": call.call_id, "name": "get_weather",
                "arguments": {"location": "London"}})
        );
    }
    let tools = json_attr(span, "gen_ai.tool.definitions");
    assert_eq!(tools[0]["name"], "get_weather");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_span_has_time_to_first_chunk_and_the_text() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("openai/responses-stream-1");
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let result = client(&fake)
        .run_responses_stream(RunResponses::new("gpt-4.1-nano").user("A story"))
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    guard.flush().await;
    let span = &otlp.wait_for_spans(1, WAIT).await[0];
    assert!(!span.is_error());
    assert_eq!(span.attr_str("openai.api.type"), Some("responses"));
    assert_eq!(span.attr_bool("gen_ai.request.stream"), Some(true));
    assert!(
        span.attr_f64("gen_ai.response.time_to_first_chunk")
            .is_some()
    );
    assert_eq!(
        span.attr_i64("gen_ai.usage.output_tokens"),
        Some(result.usage.output_tokens as i64)
    );
    let output = json_attr(span, "gen_ai.output.messages");
    assert_eq!(
        output,
        json!([{"role": "assistant", "parts": [{"type": "text", "content": result.text}],
            "finish_reason": "stop"}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_stops_at_once_keeps_the_partial_text_and_ends_the_span_once() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_chunked("openai/responses-stream-1", Duration::from_millis(50));
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let mut stream = client(&fake)
        .run_responses_stream(RunResponses::new("gpt-4.1-nano").user("A story"))
        .await
        .unwrap();
    let first = loop {
        if let ResponsesEvent::TextDelta(t) = stream.next().await.unwrap().unwrap() {
            break t;
        }
    };
    stream.abort();
    assert!(stream.next().await.is_none(), "no Done after an abort");
    let result = stream.finish().await.unwrap();
    assert!(result.aborted);
    assert_eq!(result.text, first);
    guard.flush().await;
    otlp.wait_for_spans(1, WAIT).await;
    // Everything ended is exported by now: a second ending would show here.
    guard.flush().await;
    let spans = otlp.spans().await;
    let chats = chat_spans(&spans);
    assert_eq!(chats.len(), 1, "exactly one span for an aborted stream");
    let span = chats[0];
    assert!(span.is_error());
    assert_eq!(span.status_message, "[ABORTED] Stream aborted");
    assert_eq!(span.attr_bool("tracia.stream.aborted"), Some(true));
    assert_eq!(
        span.attr_str_array("gen_ai.response.finish_reasons"),
        Some(vec!["error".to_owned()])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_dropped_early_ends_its_span_once_as_an_error() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_chunked("openai/responses-stream-1", Duration::from_millis(30));
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let mut stream = client(&fake)
        .run_responses_stream(RunResponses::new("gpt-4.1-nano").user("A story"))
        .await
        .unwrap();
    let span_id = stream.span_id();
    let mut got = String::new();
    let mut deltas = 0;
    while deltas < 2 {
        if let ResponsesEvent::TextDelta(t) = stream.next().await.unwrap().unwrap() {
            got.push_str(&t);
            deltas += 1;
        }
    }
    drop(stream);
    guard.flush().await;
    otlp.wait_for_spans(1, WAIT).await;
    // Everything ended is exported by now: a second ending would show here.
    guard.flush().await;
    let spans = otlp.spans().await;
    let chats = chat_spans(&spans);
    assert_eq!(chats.len(), 1, "exactly one span for a dropped stream");
    let span = chats[0];
    assert_eq!(format!("sp_{}", span.span_id), span_id);
    assert!(span.is_error());
    assert_eq!(
        span.status_message,
        "[ABORTED] Stream dropped before completion"
    );
    assert_eq!(span.attr_bool("tracia.stream.aborted"), Some(true));
    let output = span.attr_str("gen_ai.output.messages").unwrap();
    assert!(
        output.contains(&got),
        "the partial answer is kept: {output}"
    );
    let outcome = &fake.wait_for_stream_outcomes(1, WAIT).await[0];
    assert!(!outcome.completed, "the connection was closed early");
}

#[tokio::test]
async fn provider_errors_keep_status_message_and_retry_after() {
    let fake = FakeProvider::start().await;
    fake.enqueue_openai_error(
        401,
        "Incorrect API key provided: sk-proj-****abcd.",
        "invalid_request_error",
        Some("invalid_api_key"),
    );
    fake.enqueue_with_headers(
        429,
        "application/json",
        &[("retry-after", "7")],
        support::openai_error_body("Rate limit reached", "requests", None),
    );
    fake.enqueue_openai_error(500, "The server had an error", "server_error", None);
    fake.enqueue_openai_error(401, "Incorrect API key", "invalid_request_error", None);
    let tracia = client(&fake);
    let input = || RunResponses::new("gpt-4.1-nano").user("hi");

    let e = tracia.run_responses(input()).await.unwrap_err();
    assert_eq!(
        (e.code(), e.status()),
        (ErrorCode::ProviderError, Some(401))
    );
    assert!(e.message().contains("Incorrect API key provided"), "{e}");
    let e = tracia.run_responses(input()).await.unwrap_err();
    assert_eq!(
        (e.status(), e.retry_after()),
        (Some(429), Some(Duration::from_secs(7)))
    );
    assert!(e.message().contains("Rate limit reached"), "{e}");
    let e = tracia.run_responses(input()).await.unwrap_err();
    assert!(e.is_provider() && e.status() == Some(500), "{e}");
    let e = tracia.run_responses_stream(input()).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "a stream fails when it opens: {e}");
}

#[tokio::test]
async fn a_truncated_stream_fails_its_items_and_its_result() {
    let fake = FakeProvider::start().await;
    fake.enqueue_truncated("openai/responses-stream-1", 4000);
    let mut stream = client(&fake)
        .run_responses_stream(RunResponses::new("gpt-4.1-nano").user("A story"))
        .await
        .unwrap();
    let mut saw_error = false;
    while let Some(item) = stream.next().await {
        match item {
            Err(e) => {
                assert!(
                    matches!(e.code(), ErrorCode::ProviderError | ErrorCode::NetworkError),
                    "{e:?}"
                );
                saw_error = true;
            }
            Ok(event) => assert!(!matches!(event, ResponsesEvent::Done(_)), "{event:?}"),
        }
    }
    assert!(saw_error, "a cut stream must yield an error item");
    let e = stream.finish().await.unwrap_err();
    assert!(
        matches!(e.code(), ErrorCode::ProviderError | ErrorCode::NetworkError),
        "{e:?}"
    );
}

#[tokio::test]
async fn failed_and_error_events_fail_the_stream_with_the_provider_message() {
    // The recorded stream's first three events, then the API's failure events.
    let recorded = load_fixture("openai/responses-stream-1").response_body;
    let text = String::from_utf8(recorded.to_vec()).unwrap();
    let head: String = text.split_inclusive("\n\n").take(3).collect();
    let failed = json!({"type": "response.failed", "sequence_number": 3, "response": {
        "id": "resp_1", "object": "response", "status": "failed", "output": [], "usage": null,
        "error": {"code": "server_error", "message": "The model had an error"}}});
    let error = json!({"type": "error", "sequence_number": 3, "code": "rate_limit_exceeded",
        "message": "Too many tokens", "param": null});
    for (kind, data, message) in [
        ("response.failed", failed, "The model had an error"),
        ("error", error, "Too many tokens"),
    ] {
        let fake = FakeProvider::start().await;
        let body = format!("{head}event: {kind}\ndata: {data}\n\n");
        fake.enqueue(200, "text/event-stream; charset=utf-8", body);
        let mut stream = client(&fake)
            .run_responses_stream(RunResponses::new("gpt-4.1-nano").user("A story"))
            .await
            .unwrap();
        let mut errors = Vec::new();
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                errors.push(e);
            }
        }
        assert_eq!(errors.len(), 1, "{kind}");
        assert_eq!(errors[0].code(), ErrorCode::ProviderError);
        assert!(errors[0].message().contains(message), "{}", errors[0]);
        let e = stream.finish().await.unwrap_err();
        assert!(e.message().contains(message), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn session_turns_chain_into_one_trace() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("openai/responses-1")
        .enqueue_fixture("openai/responses-stream-1");
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let session = client(&fake).create_session();
    let first = session
        .run_responses(RunResponses::new("gpt-4.1-nano").user("Capital of France?"))
        .await
        .unwrap();
    let second = session
        .run_responses_stream(
            RunResponses::new("gpt-4.1-nano")
                .user("Capital of France?")
                .items(first.output_items.clone())
                .user("A story about it"),
        )
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    guard.flush().await;
    let spans = otlp.wait_for_spans(2, WAIT).await;
    let find = |id: &str| {
        spans
            .iter()
            .find(|s| format!("sp_{}", s.span_id) == id)
            .expect("exported")
    };
    let (a, b) = (find(&first.span_id), find(&second.span_id));
    assert_eq!(b.parent_span_id, a.span_id);
    assert_eq!(a.trace_id, b.trace_id);
    assert_eq!(first.trace_id, second.trace_id);
    assert_eq!(session.last_span_id(), Some(second.span_id));
}

#[tokio::test]
async fn invalid_input_and_a_missing_key_fail_before_any_request() {
    let fake = FakeProvider::start().await;
    let tracia = client(&fake);
    let cases = [
        (RunResponses::new("o4-mini"), "input is required"),
        (RunResponses::new(" ").user("hi"), "model is required"),
        (
            RunResponses::new("o4-mini").function_call_output("", "x"),
            "tool_call_id",
        ),
        (
            RunResponses::new("o4-mini").user("hi").span_id("sp_123"),
            "Invalid span_id format",
        ),
    ];
    for (input, expected) in cases {
        let e = tracia.run_responses(input).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRequest, "{e}");
        assert!(
            e.message().contains(expected),
            "{e} should mention {expected}"
        );
    }
    let keyless = tracia::Tracia::builder()
        .without_env()
        .with_base_url(tracia::Provider::OpenAi, fake.base_url())
        .build()
        .unwrap();
    let e = keyless
        .run_responses(RunResponses::new("o4-mini").user("hi"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::MissingProviderApiKey);
    assert!(e.message().contains("OPENAI_API_KEY"), "{e}");
    assert_eq!(fake.request_count(), 0, "nothing was sent");
}
