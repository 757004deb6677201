//! `run_local` and `run_local_stream` against a fake Anthropic Messages API replaying
//! every recorded exchange: what the SDK sends, what it returns, the spans it exports,
//! and the typed error of every failure.

mod support;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use support::{
    FakeProvider, OtlpReceiver, ReceivedSpan, client_with, enqueue_times, fixture_request_body,
    fixture_response_body, install, pipeline,
};
use tracia::{
    ContentPart, Error, ErrorCode, FinishReason, Message, Provider, ResponseFormat, RunLocal,
    RunResult, RunStream, ToolCall, ToolChoice, ToolDefinition, Tracia, Usage,
};

const KEY: &str = "sk-ant-api03-test-0123456789abcdefghijklmnop";
const WAIT: Duration = Duration::from_secs(10);

fn anthropic(fake: &FakeProvider) -> Tracia {
    client_with(fake, |b| {
        b.with_api_key(Provider::Anthropic, KEY)
            .with_base_url(Provider::Anthropic, fake.url())
    })
}

/// The tools of a recorded request, as Tracia tool definitions.
fn recorded_tools(fixture: &str) -> Vec<ToolDefinition> {
    fixture_request_body(fixture)["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            ToolDefinition::new(t["name"].as_str().unwrap())
                .with_description(t["description"].as_str().unwrap())
                .with_parameters(t["input_schema"].clone())
        })
        .collect()
}

fn with_tools(input: RunLocal, tools: Vec<ToolDefinition>) -> RunLocal {
    tools.into_iter().fold(input, RunLocal::tool)
}

/// The answer text a recorded stream carries, read straight from its `text_delta` events.
fn recorded_stream_text(fixture: &str) -> String {
    let body = fixture_response_body(fixture);
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter(|e| e["delta"]["type"] == "text_delta")
        .map(|e| e["delta"]["text"].as_str().unwrap().to_owned())
        .collect()
}

/// The recorded non-streamed response, parsed.
fn recorded_response(fixture: &str) -> Value {
    serde_json::from_slice(&fixture_response_body(fixture)).unwrap()
}

/// Every chunk of a stream that must succeed, and its result.
async fn drain(mut stream: RunStream) -> (Vec<String>, RunResult) {
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.unwrap());
    }
    (chunks, stream.finish().await.unwrap())
}

/// The chunks of a stream that must fail, the error it yielded, and `finish()`'s error.
async fn drain_failing(mut stream: RunStream) -> (Vec<String>, Error, Error) {
    let mut chunks = Vec::new();
    let mut yielded = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => chunks.push(chunk),
            Err(e) => yielded = Some(e),
        }
    }
    let yielded = yielded.expect("a failed stream yields an error item");
    (chunks, yielded, stream.finish().await.unwrap_err())
}

fn usage(input: u64, output: u64, cache: Option<(u64, u64)>) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        total_tokens: input + output,
        cache_read_input_tokens: cache.map(|c| c.0),
        cache_creation_input_tokens: cache.map(|c| c.1),
        reasoning_output_tokens: None,
    }
}

fn span_tagged<'a>(spans: &'a [ReceivedSpan], tag: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.attr_str_array("tracia.tags") == Some(vec![tag.to_owned()]))
        .unwrap_or_else(|| panic!("no span tagged {tag}"))
}

#[tokio::test]
async fn messages_returns_text_usage_ids_and_sends_the_recorded_request() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("anthropic/messages");
    let result = anthropic(&fake)
        .run_local(
            RunLocal::new("claude-3-opus-20240229")
                .user("Tell me a joke about {{topic}}")
                .variable("topic", "OpenTelemetry")
                .max_output_tokens(1024),
        )
        .await
        .unwrap();
    let recorded = recorded_response("anthropic/messages");
    assert_eq!(
        result.text,
        recorded["content"][0]["text"].as_str().unwrap()
    );
    assert_eq!(
        result.usage,
        usage(17, 220, None),
        "no cache fields reported"
    );
    assert_eq!(result.finish_reason, FinishReason::Stop);
    assert_eq!(
        result.response_id.as_deref(),
        Some("msg_01TPXhkPo8jy6yQMrMhjpiAE")
    );
    assert_eq!(
        result.response_model.as_deref(),
        Some("claude-3-opus-20240229")
    );
    assert_eq!(result.provider, Provider::Anthropic);
    assert_eq!((result.reasoning, result.tool_calls.len()), (None, 0));
    assert_eq!(result.message, Message::assistant(result.text.as_str()));

    let sent = &fake.requests().await[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.body, fixture_request_body("anthropic/messages"));
    assert_eq!(sent.header("x-api-key"), Some(KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("authorization"), None, "no bearer auth");
    let traceparent = sent.header("traceparent").expect("traceparent sent");
    assert!(
        traceparent.contains(&result.span_id[3..]) && traceparent.contains(&result.trace_id[3..]),
        "{traceparent}"
    );
}

#[tokio::test]
async fn messages_stream_yields_the_recorded_text_and_merges_usage() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("anthropic/messages-stream");
    let stream = anthropic(&fake)
        .run_local_stream(
            RunLocal::new("claude-3-haiku-20240307")
                .user("Tell me a joke about OpenTelemetry")
                .max_output_tokens(1024),
        )
        .await
        .unwrap();
    let (chunks, result) = drain(stream).await;
    assert!(chunks.len() > 1);
    assert_eq!(chunks.concat(), result.text);
    assert_eq!(
        result.text,
        recorded_stream_text("anthropic/messages-stream")
    );
    // Input from message_start, the cumulative output from message_delta.
    assert_eq!(result.usage, usage(17, 171, None));
    assert_eq!(
        (result.finish_reason, result.aborted),
        (FinishReason::Stop, false)
    );
    assert_eq!(
        result.response_id.as_deref(),
        Some("msg_01MXWxhWoPSgrYhjTuMDM6F1")
    );
    assert_eq!(
        result.response_model.as_deref(),
        Some("claude-3-haiku-20240307")
    );
    let sent = &fake.requests().await[0];
    assert_eq!(sent.body, fixture_request_body("anthropic/messages-stream"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
}

#[tokio::test]
async fn tool_use_blocks_become_parsed_tool_calls() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("anthropic/tools");
    let input = with_tools(
        RunLocal::new("claude-3-5-sonnet-20240620")
            .user("What is the weather like right now in New York? Also what time is it there now?")
            .max_output_tokens(1024),
        recorded_tools("anthropic/tools"),
    );
    let result = anthropic(&fake).run_local(input).await.unwrap();
    assert_eq!(
        result.text,
        "Certainly! I'd be happy to help you with both the current weather in New York and the current time there. Let's use the available tools to get this information for you."
    );
    let calls = vec![
        ToolCall::new(
            "toolu_012r6TBCWjRHG71j6zruYyUL",
            "get_weather",
            json!({"location": "New York, NY", "unit": "fahrenheit"}),
        ),
        ToolCall::new(
            "toolu_01SkeBKkLCNYWNuivqFerGDd",
            "get_time",
            json!({"timezone": "America/New_York"}),
        ),
    ];
    assert_eq!(result.tool_calls, calls);
    assert_eq!(result.finish_reason, FinishReason::ToolCalls);
    assert_eq!(result.usage, usage(514, 152, None));
    let mut parts = vec![ContentPart::text(result.text.as_str())];
    parts.extend(calls.into_iter().map(ContentPart::ToolCall));
    assert_eq!(result.message, Message::assistant(parts));
    assert_eq!(
        fake.requests().await[0].body,
        fixture_request_body("anthropic/tools"),
        "tools sent as {{name, description, input_schema}}"
    );
}

#[tokio::test]
async fn tools_stream_assembles_tool_calls_by_block_index() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("anthropic/tools-stream");
    let input = with_tools(
        RunLocal::new("claude-3-5-sonnet-20240620")
            .user("What is the weather and current time in San Francisco?")
            .max_output_tokens(1024),
        recorded_tools("anthropic/tools-stream"),
    );
    let (chunks, result) = drain(anthropic(&fake).run_local_stream(input).await.unwrap()).await;
    assert_eq!(chunks.concat(), result.text);
    assert_eq!(result.text, recorded_stream_text("anthropic/tools-stream"));
    assert_eq!(
        result.tool_calls,
        vec![
            ToolCall::new(
                "toolu_014x5X91kx3fvdhpLvwXZWE2",
                "get_weather",
                json!({"location": "San Francisco, CA", "unit": "celsius"}),
            ),
            ToolCall::new(
                "toolu_0121kXsENLvoDZ72LCuAnCCz",
                "get_time",
                json!({"timezone": "America/Los_Angeles"}),
            ),
        ]
    );
    assert_eq!(result.finish_reason, FinishReason::ToolCalls);
    assert_eq!(result.usage, usage(506, 153, Some((0, 0))));
    assert_eq!(
        fake.requests().await[0].body,
        fixture_request_body("anthropic/tools-stream")
    );
}

#[tokio::test]
async fn tool_result_history_is_sent_as_tool_use_and_tool_result_blocks() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("anthropic/tool-result-history");
    let call = ToolCall::new(
        "call_1",
        "get_weather",
        json!({"location": "San Francisco, CA"}),
    );
    let input = with_tools(
        RunLocal::new("claude-3-5-haiku-20241022")
            .user("What is the weather and current time in San Francisco?")
            .assistant(vec![
                ContentPart::text(
                    "I'll help you get the weather and current time in San Francisco.",
                ),
                ContentPart::ToolCall(call),
            ])
            .message(
                Message::tool("call_1", "Sunny and 65 degrees Fahrenheit")
                    .with_tool_name("get_weather"),
            )
            .max_output_tokens(1024),
        recorded_tools("anthropic/tool-result-history"),
    );
    let result = anthropic(&fake).run_local(input).await.unwrap();
    assert_eq!(
        fake.requests().await[0].body,
        fixture_request_body("anthropic/tool-result-history"),
        "the whole body equals the real client's"
    );
    assert_eq!(
        result.tool_calls,
        vec![ToolCall::new(
            "toolu_01K5KhMEdg2McN7dAkB4Y4hi",
            "get_time",
            json!({"timezone": "America/Los_Angeles"})
        )]
    );
    assert_eq!(
        (result.text.as_str(), result.finish_reason),
        ("", FinishReason::ToolCalls)
    );
    assert_eq!(result.usage, usage(568, 58, Some((0, 0))));
}

#[tokio::test]
async fn system_is_hoisted_tool_results_merge_and_options_map() {
    let fake = FakeProvider::start().await;
    enqueue_times(&fake, "anthropic/messages", 5);
    let tracia = anthropic(&fake);
    let tools = recorded_tools("anthropic/tools");
    let weather = ToolCall::new("toolu_w", "get_weather", json!({"location": "Paris"}));
    let time = ToolCall::new("toolu_t", "get_time", json!({"timezone": "Europe/Paris"}));
    let input = with_tools(
        RunLocal::new("claude-haiku-4-5")
            .system("You are terse.")
            .user("Weather and time in Paris?")
            .developer("Answer in French.")
            .assistant(vec![
                ContentPart::ToolCall(weather),
                ContentPart::ToolCall(time),
            ])
            .message(Message::tool("toolu_w", "Rain, 12°C"))
            .message(Message::tool("toolu_t", "14:05"))
            .user("Thanks!")
            .temperature(0.3)
            .top_p(0.8)
            .stop_sequence("END")
            .tool_choice(ToolChoice::Required)
            .custom_option(Provider::Anthropic, "top_k", json!(5))
            .custom_option(Provider::OpenAi, "seed", json!(7)),
        tools.clone(),
    );
    tracia.run_local(input).await.unwrap();
    let recorded_tools = fixture_request_body("anthropic/tools")["tools"].clone();
    assert_eq!(
        fake.requests().await[0].body,
        json!({
            "model": "claude-haiku-4-5",
            "max_tokens": 4096,
            "system": [
                {"type": "text", "text": "You are terse."},
                {"type": "text", "text": "Answer in French."}
            ],
            "messages": [
                {"role": "user", "content": "Weather and time in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_w", "name": "get_weather", "input": {"location": "Paris"}},
                    {"type": "tool_use", "id": "toolu_t", "name": "get_time", "input": {"timezone": "Europe/Paris"}}
                ]},
                // Turns alternate: the results, then the user's text, in one user turn.
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_w", "content": "Rain, 12°C"},
                    {"type": "tool_result", "tool_use_id": "toolu_t", "content": "14:05"},
                    {"type": "text", "text": "Thanks!"}
                ]}
            ],
            "temperature": 0.3,
            "top_p": 0.8,
            "stop_sequences": ["END"],
            "tools": recorded_tools,
            "tool_choice": {"type": "any"},
            "top_k": 5
        }),
        "max_tokens defaults to 4096; another provider's options stay out"
    );

    let choices = [
        (ToolChoice::Auto, json!({"type": "auto"})),
        (ToolChoice::None, json!({"type": "none"})),
        (
            ToolChoice::Tool("get_time".into()),
            json!({"type": "tool", "name": "get_time"}),
        ),
    ];
    for (choice, wire) in choices {
        let input = with_tools(RunLocal::new("claude-haiku-4-5").user("hi"), tools.clone())
            .tool_choice(choice);
        tracia.run_local(input).await.unwrap();
        assert_eq!(
            fake.requests().await.last().unwrap().body["tool_choice"],
            wire
        );
    }
    tracia
        .run_local(
            RunLocal::new("claude-haiku-4-5")
                .user("hi")
                .tool_choice(ToolChoice::Auto),
        )
        .await
        .unwrap();
    let sent = &fake.requests().await[4].body;
    assert!(
        sent.get("tool_choice").is_none() && sent.get("tools").is_none(),
        "no tool choice without tools: {sent}"
    );
}

#[tokio::test]
async fn json_response_formats_are_answered_through_a_forced_tool() {
    let fake = FakeProvider::start().await;
    enqueue_times(&fake, "anthropic/response-format", 3);
    fake.enqueue_fixture("anthropic/response-format-stream");
    let tracia = anthropic(&fake);
    let recorded = fixture_request_body("anthropic/response-format");
    let format = ResponseFormat::json_schema(recorded["tools"][0]["input_schema"].clone())
        .with_name("Joke")
        .with_description("A joke and its rating.");
    let input = || {
        RunLocal::new("claude-haiku-4-5")
            .user("Tell me a joke about OpenTelemetry")
            .response_format(format.clone())
    };
    let answer = recorded_response("anthropic/response-format")["content"][0]["input"].clone();

    let result = tracia.run_local(input()).await.unwrap();
    assert_eq!(fake.requests().await[0].body, recorded);
    assert_eq!(result.json::<Value>().unwrap(), answer);
    assert!(
        result.tool_calls.is_empty(),
        "the answer tool is no tool call"
    );
    assert_eq!(result.finish_reason, FinishReason::Stop);
    assert_eq!(result.message, Message::assistant(result.text.as_str()));

    // Any JSON object; with the caller's own tools, the model must call one tool or another.
    let weather = recorded_tools("anthropic/tools").remove(0);
    tracia
        .run_local(
            RunLocal::new("claude-haiku-4-5")
                .user("hi")
                .tool(weather)
                .response_format(ResponseFormat::Json),
        )
        .await
        .unwrap();
    let sent = &fake.requests().await[1].body;
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert_eq!(
        sent["tools"][1],
        json!({
            "name": "tracia_json_response",
            "description": "Give your answer by calling this tool: its input is the answer.",
            "input_schema": {"type": "object"}
        })
    );
    assert_eq!(sent["tool_choice"], json!({"type": "any"}));

    // A custom format is sent as is (e.g. Anthropic's own output format on models that have it).
    let native = json!({"output_format": {"type": "json_schema", "schema": answer}});
    tracia
        .run_local(
            RunLocal::new("claude-haiku-4-5")
                .user("hi")
                .response_format(ResponseFormat::Custom(native.clone())),
        )
        .await
        .unwrap();
    let sent = &fake.requests().await[2].body;
    assert_eq!(sent["output_format"], native["output_format"]);
    assert!(sent.get("tools").is_none(), "{sent}");

    let stream = tracia.run_local_stream(input()).await.unwrap();
    let (chunks, streamed) = drain(stream).await;
    assert_eq!(
        fake.requests().await[3].body,
        fixture_request_body("anthropic/response-format-stream")
    );
    assert_eq!(chunks.concat(), streamed.text);
    assert_eq!(streamed.json::<Value>().unwrap(), answer);
    assert!(streamed.tool_calls.is_empty());
    assert_eq!(streamed.finish_reason, FinishReason::Stop);
}

#[tokio::test(flavor = "multi_thread")]
async fn thinking_is_reasoning_never_text_streamed_or_not() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("anthropic/thinking")
        .enqueue_fixture("anthropic/thinking-stream");
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let tracia = anthropic(&fake);
    let input = |tag: &str| {
        RunLocal::new("claude-sonnet-4-5")
            .user("What is the greatest common divisor of 1071 and 462?")
            .max_output_tokens(16000)
            .custom_option(
                Provider::Anthropic,
                "thinking",
                json!({"type": "enabled", "budget_tokens": 10000}),
            )
            .tag(tag)
    };
    let recorded = recorded_response("anthropic/thinking");
    let thinking = recorded["content"][0]["thinking"].as_str().unwrap();
    let answer = recorded["content"][1]["text"].as_str().unwrap();

    let result = tracia.run_local(input("whole")).await.unwrap();
    assert_eq!(result.text, answer);
    assert_eq!(result.reasoning.as_deref(), Some(thinking));
    assert!(!result.text.contains("So GCD(1071, 462) = 21"));
    assert_eq!(result.usage, usage(48, 186, Some((0, 0))));

    let (chunks, streamed) = drain(tracia.run_local_stream(input("streamed")).await.unwrap()).await;
    assert_eq!(
        chunks.concat(),
        answer,
        "thinking never reaches the caller's chunks"
    );
    assert_eq!(
        (
            &streamed.text,
            &streamed.reasoning,
            streamed.usage,
            streamed.finish_reason,
            &streamed.response_id,
            streamed.cost
        ),
        (
            &result.text,
            &result.reasoning,
            result.usage,
            result.finish_reason,
            &result.response_id,
            result.cost
        ),
        "the stream assembles to the non-streamed result"
    );
    let sent = fake.requests().await;
    assert_eq!(sent[0].body, fixture_request_body("anthropic/thinking"));
    assert_eq!(
        sent[1].body,
        fixture_request_body("anthropic/thinking-stream")
    );

    guard.flush().await;
    let spans = otlp.wait_for_spans(2, WAIT).await;
    for tag in ["whole", "streamed"] {
        let span = span_tagged(&spans, tag);
        let output: Value =
            serde_json::from_str(span.attr_str("gen_ai.output.messages").unwrap()).unwrap();
        assert_eq!(
            output,
            json!([{"role": "assistant", "finish_reason": "stop", "parts": [
                {"type": "reasoning", "content": thinking},
                {"type": "text", "content": answer}
            ]}]),
            "{tag}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_carry_anthropic_genai_attributes_and_cache_usage() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("anthropic/prompt-caching-1")
        .enqueue_fixture("anthropic/messages-stream");
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let tracia = anthropic(&fake);
    let recorded = fixture_request_body("anthropic/prompt-caching-1");
    let system = recorded["system"][0]["text"].as_str().unwrap();
    let articles = recorded["messages"][0]["content"][0]["text"]
        .as_str()
        .unwrap();

    let result = tracia
        .run_local(
            RunLocal::new("claude-3-5-sonnet-20240620")
                .system(system)
                .user(articles)
                .max_output_tokens(1024)
                .tag("cached"),
        )
        .await
        .unwrap();
    // 4 uncached + 1163 written to the cache: input counts both (OTel rule).
    assert_eq!(result.usage, usage(1167, 187, Some((0, 1163))));
    let sent = &fake.requests().await[0];
    assert_eq!(sent.body["system"], recorded["system"]);
    // Tracia messages carry no cache_control marker: that is the one difference.
    assert_eq!(
        sent.body["messages"],
        json!([{"role": "user", "content": articles}])
    );

    let stream = tracia
        .run_local_stream(
            RunLocal::new("claude-3-haiku-20240307")
                .user("Tell me a joke about OpenTelemetry")
                .tag("streamed"),
        )
        .await
        .unwrap();
    let (_, streamed) = drain(stream).await;
    guard.flush().await;
    let spans = otlp.wait_for_spans(2, WAIT).await;

    let chat = span_tagged(&spans, "cached");
    assert_eq!(chat.name, "chat claude-3-5-sonnet-20240620");
    assert!(chat.is_client());
    assert_eq!(chat.status_code, 0);
    let s = |k| chat.attr_str(k);
    assert_eq!(s("gen_ai.operation.name"), Some("chat"));
    assert_eq!(s("gen_ai.provider.name"), Some("anthropic"));
    assert_eq!(s("tracia.provider"), Some("anthropic"));
    assert_eq!(
        s("gen_ai.request.model"),
        Some("claude-3-5-sonnet-20240620")
    );
    assert_eq!(
        s("gen_ai.response.model"),
        Some("claude-3-5-sonnet-20240620")
    );
    assert_eq!(
        s("gen_ai.response.id"),
        Some("msg_01EF3r8zYyZntM4Sg9a5kc6k")
    );
    assert_eq!(s("server.address"), Some("127.0.0.1"));
    assert_eq!(
        chat.attr_i64("server.port"),
        Some(i64::from(fake.addr().port()))
    );
    assert_eq!(chat.attr_i64("gen_ai.request.max_tokens"), Some(1024));
    assert_eq!(
        chat.attr_str_array("gen_ai.response.finish_reasons"),
        Some(vec!["stop".to_owned()])
    );
    assert_eq!(chat.attr_i64("gen_ai.usage.input_tokens"), Some(1167));
    assert_eq!(chat.attr_i64("gen_ai.usage.output_tokens"), Some(187));
    assert_eq!(
        chat.attr_i64("gen_ai.usage.cache_read.input_tokens"),
        Some(0)
    );
    assert_eq!(
        chat.attr_i64("gen_ai.usage.cache_creation.input_tokens"),
        Some(1163)
    );
    assert!(!chat.has_attr("openai.api.type"));
    assert!(
        !chat.has_attr("tracia.cost_usd"),
        "claude-3-5-sonnet-20240620 has no price: no cost is guessed"
    );
    assert_eq!(
        sent.header("traceparent"),
        Some(format!("00-{}-{}-01", chat.trace_id, chat.span_id).as_str())
    );

    let stream_span = span_tagged(&spans, "streamed");
    assert_eq!(stream_span.attr_bool("gen_ai.request.stream"), Some(true));
    assert!(stream_span.has_attr("gen_ai.response.time_to_first_chunk"));
    assert_eq!(
        stream_span.attr_str("gen_ai.provider.name"),
        Some("anthropic")
    );
    assert_eq!(stream_span.attr_i64("gen_ai.usage.input_tokens"), Some(17));
    assert_eq!(
        stream_span.attr_i64("gen_ai.usage.output_tokens"),
        Some(171)
    );
    assert!(
        !stream_span.has_attr("gen_ai.usage.cache_read.input_tokens"),
        "not reported by this response"
    );
    assert_eq!(format!("sp_{}", stream_span.span_id), streamed.span_id);
}

#[tokio::test]
async fn cached_call_costs_what_the_price_table_says() {
    let fake = FakeProvider::start().await;
    enqueue_times(&fake, "anthropic/prompt-caching-2", 2);
    fake.enqueue_fixture("anthropic/prompt-caching-1");
    let tracia = anthropic(&fake);
    let recorded = fixture_request_body("anthropic/prompt-caching-2");
    let input = |model: &str| {
        RunLocal::new(model)
            .system(recorded["system"][0]["text"].as_str().unwrap())
            .user(
                recorded["messages"][0]["content"][0]["text"]
                    .as_str()
                    .unwrap(),
            )
            .max_output_tokens(1024)
    };

    // The recorded model is not in Tracia's registry, so data/pricing.json has no price.
    let unpriced = tracia
        .run_local(input("claude-3-5-sonnet-20240620"))
        .await
        .unwrap();
    assert_eq!(unpriced.cost, None);

    // Cost follows the requested model. data/pricing.json, claude-3-7-sonnet-20250219,
    // USD per token: input 0.000003, cache_read 0.0000003, cache_write 0.00000375,
    // output 0.000015.
    let read = tracia
        .run_local(input("claude-3-7-sonnet-20250219"))
        .await
        .unwrap();
    // Usage: 4 uncached input + 1163 read from the cache, 0 written, 202 output.
    assert_eq!(read.usage, usage(1167, 202, Some((1163, 0))));
    // 4 × 0.000003 + 1163 × 0.0000003 + 0 × 0.00000375 + 202 × 0.000015
    // = 0.000012 + 0.0003489 + 0 + 0.00303 = 0.0033909
    let expected: f64 = 4.0 * 0.000003 + 1163.0 * 0.0000003 + 0.0 * 0.00000375 + 202.0 * 0.000015;
    assert!((expected - 0.0033909).abs() < 1e-12);
    assert!(
        (read.cost.unwrap() - 0.0033909).abs() < 1e-12,
        "{:?}",
        read.cost
    );

    // The first call wrote those 1163 tokens to the cache, at the write price:
    // 4 × 0.000003 + 0 × 0.0000003 + 1163 × 0.00000375 + 187 × 0.000015
    // = 0.000012 + 0 + 0.00436125 + 0.002805 = 0.00717825
    let written = tracia
        .run_local(input("claude-3-7-sonnet-20250219"))
        .await
        .unwrap();
    assert_eq!(written.usage, usage(1167, 187, Some((0, 1163))));
    assert!(
        (written.cost.unwrap() - 0.00717825).abs() < 1e-12,
        "{:?}",
        written.cost
    );
}

/// Anthropic's error body: `{"type":"error","error":{"type","message"},"request_id"}`.
fn anthropic_error(kind: &str, message: &str) -> String {
    json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_failures_are_typed_errors_and_error_spans() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    let json = "application/json";
    fake.enqueue(
        401,
        json,
        anthropic_error("authentication_error", "invalid x-api-key"),
    );
    fake.enqueue_with_headers(
        429,
        json,
        &[("retry-after", "12")],
        anthropic_error(
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        ),
    );
    fake.enqueue(
        500,
        json,
        anthropic_error("api_error", "Internal server error"),
    );
    let body = fixture_response_body("anthropic/messages-stream");
    fake.enqueue_truncated("anthropic/messages-stream", body.len() / 2);
    // The documented mid-stream error event, after the first events of a real stream.
    let first_events: String = String::from_utf8_lossy(&body)
        .split_inclusive("\n\n")
        .take(6)
        .collect();
    let overloaded = format!(
        "{first_events}event: error\ndata: {}\n\n",
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    fake.enqueue(200, "text/event-stream; charset=utf-8", overloaded);
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let tracia = anthropic(&fake);
    let input = |tag: &str| RunLocal::new("claude-haiku-4-5").user("hi").tag(tag);

    let e = tracia.run_local(input("401")).await.unwrap_err();
    assert_eq!(
        (e.code(), e.status()),
        (ErrorCode::ProviderError, Some(401))
    );
    assert!(e.message().contains("invalid x-api-key"), "{e}");
    assert!(!e.to_string().contains(KEY));
    let e = tracia.run_local(input("429")).await.unwrap_err();
    assert_eq!(
        (e.code(), e.status(), e.retry_after()),
        (
            ErrorCode::ProviderError,
            Some(429),
            Some(Duration::from_secs(12))
        )
    );
    assert!(e.message().contains("per-minute rate limit"), "{e}");
    let e = tracia.run_local_stream(input("500")).await.unwrap_err();
    assert_eq!(
        (e.code(), e.status()),
        (ErrorCode::ProviderError, Some(500))
    );
    assert!(e.message().contains("Internal server error"), "{e}");

    let stream = tracia.run_local_stream(input("truncated")).await.unwrap();
    let (chunks, yielded, failed) = drain_failing(stream).await;
    assert!(!chunks.is_empty(), "text before the cut is handed out");
    assert!(recorded_stream_text("anthropic/messages-stream").starts_with(&chunks.concat()));
    for e in [&yielded, &failed] {
        assert_eq!(
            (e.code(), e.status()),
            (ErrorCode::ProviderError, None),
            "{e:?}"
        );
    }

    let stream = tracia.run_local_stream(input("overloaded")).await.unwrap();
    let (chunks, yielded, failed) = drain_failing(stream).await;
    assert_eq!(chunks.concat(), "Here's an OpenTelemetry-");
    for e in [&yielded, &failed] {
        assert_eq!(e.code(), ErrorCode::ProviderError);
        assert!(
            e.message().contains("overloaded_error") && e.message().contains("Overloaded"),
            "{e}"
        );
    }

    guard.flush().await;
    let spans = otlp.wait_for_spans(5, WAIT).await;
    for (tag, error_type) in [
        ("401", "401"),
        ("429", "429"),
        ("500", "500"),
        ("truncated", "provider_error"),
        ("overloaded", "provider_error"),
    ] {
        let span = span_tagged(&spans, tag);
        assert!(span.is_error(), "{tag}");
        assert_eq!(span.attr_str("error.type"), Some(error_type), "{tag}");
        assert_eq!(span.attr_str("gen_ai.provider.name"), Some("anthropic"));
        assert!(span.event("exception").is_some(), "{tag}");
    }
    // A cut stream keeps what had arrived: input usage from message_start, finish `error`.
    let cut = span_tagged(&spans, "truncated");
    assert_eq!(cut.attr_i64("gen_ai.usage.input_tokens"), Some(17));
    assert_eq!(
        cut.attr_str_array("gen_ai.response.finish_reasons"),
        Some(vec!["error".to_owned()])
    );
    assert!(
        span_tagged(&spans, "overloaded")
            .status_message
            .contains("Overloaded")
    );
}
