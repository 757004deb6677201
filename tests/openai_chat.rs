//! `run_local` against a fake OpenAI server replaying recorded exchanges: what the SDK
//! sends, what it returns, and the typed error of every failure.

mod support;

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use support::{FakeProvider, client, fixture_request_body};
use tracia::{
    ContentPart, ErrorCode, FinishReason, Message, ResponseFormat, RunLocal, ToolCall,
    ToolDefinition,
};

fn weather_tool() -> ToolDefinition {
    ToolDefinition::new("get_current_weather")
        .with_description("Get the current weather")
        .with_parameters(json!({
            "type": "object",
            "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}},
            "required": ["location"]
        }))
}

#[tokio::test]
async fn chat_returns_text_usage_ids_and_sends_the_recorded_request() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-1");
    let result = client(&fake)
        .run_local(
            RunLocal::new("gpt-3.5-turbo")
                .user("Tell me a joke about {{topic}}")
                .variable("topic", "opentelemetry"),
        )
        .await
        .unwrap();
    assert_eq!(
        result.text,
        "Why did Opentelemetry break up with Tracing? Because it couldn't handle the baggage!"
    );
    assert_eq!(
        (
            result.usage.input_tokens,
            result.usage.output_tokens,
            result.usage.total_tokens
        ),
        (15, 19, 34)
    );
    assert_eq!(result.finish_reason, FinishReason::Stop);
    assert_eq!(result.response_model.as_deref(), Some("gpt-3.5-turbo-0125"));
    assert_eq!(
        result.response_id.as_deref(),
        Some("chatcmpl-908MD9ivBBLb6EaIjlqwFokntayQK")
    );
    assert_eq!(result.message, Message::assistant(result.text.as_str()));
    assert!(
        result.span_id.starts_with("sp_") && result.span_id.len() == 19,
        "{}",
        result.span_id
    );
    assert!(
        result.trace_id.starts_with("tr_") && result.trace_id.len() == 19,
        "{}",
        result.trace_id
    );
    // gpt-3.5-turbo at 0.5 / 1.5 USD per million tokens: 15 × 5e-7 + 19 × 1.5e-6.
    assert!(
        (result.cost.unwrap() - 0.000036).abs() < 1e-12,
        "{:?}",
        result.cost
    );

    let sent = &fake.requests().await[0];
    assert_eq!(
        sent.body,
        fixture_request_body("openai/chat-1"),
        "interpolated body equals what the real client sent"
    );
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk-test-0123456789abcdefghijklmnop")
    );
    // Even without a tracing subscriber the provider gets a traceparent with the result's ids.
    let traceparent = sent.header("traceparent").unwrap();
    assert!(
        traceparent.contains(&result.span_id[3..]) && traceparent.contains(&result.trace_id[3..]),
        "{traceparent}"
    );
    assert!(
        traceparent.ends_with("-00"),
        "not sampled when nothing records: {traceparent}"
    );
}

#[tokio::test]
async fn stream_without_usage_assembles_text() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-stream");
    let mut stream = client(&fake)
        .run_local_stream(RunLocal::new("gpt-3.5-turbo").user("Tell me a joke about opentelemetry"))
        .await
        .unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.unwrap());
    }
    let result = stream.finish().await.unwrap();
    assert!(chunks.len() > 1);
    assert_eq!(chunks.concat(), result.text);
    assert!(!result.aborted);
    assert_eq!(result.finish_reason, FinishReason::Stop);
    let sent = &fake.requests().await[0].body;
    assert_eq!(sent["stream"], true);
    assert_eq!(
        sent["stream_options"],
        json!({"include_usage": true}),
        "usage is always requested"
    );
}

#[tokio::test]
async fn stream_with_usage_in_the_last_chunk_keeps_usage() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-stream-usage");
    let stream = client(&fake)
        .run_local_stream(
            RunLocal::new("deepseek-chat")
                .provider(tracia::Provider::OpenAi)
                .user("Tell me a joke about opentelemetry"),
        )
        .await
        .unwrap();
    let result = stream.finish().await.unwrap();
    assert!(
        result.text.starts_with("Sure! Here's a techy joke for"),
        "{}",
        result.text
    );
    assert!(
        result.usage.input_tokens > 0 && result.usage.output_tokens > 0,
        "{:?}",
        result.usage
    );
    assert_eq!(
        result.usage.total_tokens,
        result.usage.input_tokens + result.usage.output_tokens
    );
}

#[tokio::test]
async fn tools_give_parsed_tool_calls_and_the_next_turn_message() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/tools-1");
    let recorded = fixture_request_body("openai/tools-1");
    let f = &recorded["tools"][0]["function"];
    let tool = ToolDefinition::new("get_current_weather")
        .with_description(f["description"].as_str().unwrap())
        .with_parameters(f["parameters"].clone());
    let input = RunLocal::new("gpt-4")
        .user("What's the weather like in Boston?")
        .tool(tool)
        .tool_choice(tracia::ToolChoice::Auto);
    let result = client(&fake).run_local(input).await.unwrap();
    assert_eq!(result.finish_reason, FinishReason::ToolCalls);
    assert_eq!(result.tool_calls.len(), 1);
    let call = &result.tool_calls[0];
    assert_eq!(
        (call.name.as_str(), &call.arguments),
        ("get_current_weather", &json!({"location": "Boston"}))
    );
    assert_eq!(
        result.message.content,
        tracia::Content::Parts(vec![ContentPart::ToolCall(call.clone())])
    );
    assert_eq!(
        fake.requests().await[0].body,
        recorded,
        "the whole body equals the real client's"
    );
}

#[tokio::test]
async fn tools_stream_assembles_fragments_equal_to_the_non_streamed_call() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/tools-stream-1");
    let input = RunLocal::new("gpt-3.5-turbo")
        .user("What's the weather like in San Francisco?")
        .tool(weather_tool());
    let result = client(&fake)
        .run_local_stream(input)
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    assert_eq!(result.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        result.tool_calls,
        vec![ToolCall::new(
            "call_90R0NgAY0rQUYihSqVx7OuIs",
            "get_current_weather",
            json!({"location": "San Francisco, CA"})
        )]
    );
}

#[tokio::test]
async fn tool_result_history_is_sent_in_openai_form() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/tool-result-history-2");
    let call = ToolCall::new(
        "1",
        "get_current_weather",
        json!({"location": "San Francisco"}),
    );
    let input = RunLocal::new("gpt-3.5-turbo")
        .assistant(vec![ContentPart::ToolCall(call)])
        .message(Message::tool(
            "1",
            "The weather in San Francisco is 70 degrees and sunny.",
        ));
    let result = client(&fake).run_local(input).await.unwrap();
    assert!(!result.text.is_empty());
    let sent = &fake.requests().await[0].body;
    let recorded = fixture_request_body("openai/tool-result-history-2");
    assert_eq!(sent["messages"][1], recorded["messages"][1]);
    assert_eq!(sent["messages"][0]["tool_calls"][0]["id"], "1");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(
            sent["messages"][0]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        )
        .unwrap(),
        json!({"location": "San Francisco"})
    );
}

#[tokio::test]
async fn response_format_json_schema_is_sent_and_parsed() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/response-format-1");
    let recorded = fixture_request_body("openai/response-format-1");
    let js = &recorded["response_format"]["json_schema"];
    let format = ResponseFormat::json_schema(js["schema"].clone())
        .with_name("Joke")
        .with_description(js["description"].as_str().unwrap());
    let result = client(&fake)
        .run_local(
            RunLocal::new("gpt-4.1-nano")
                .user("Tell me a joke about opentelemetry")
                .response_format(format),
        )
        .await
        .unwrap();
    assert_eq!(
        fake.requests().await[0].body["response_format"],
        recorded["response_format"]
    );
    let joke: serde_json::Value = result.json().unwrap();
    assert!(
        joke["joke"].is_string() && joke["rating"].is_i64(),
        "{joke}"
    );
}

#[tokio::test]
async fn cached_tokens_are_a_subset_of_input_and_priced_as_cache_reads() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/prompt-caching-2");
    let body = fixture_request_body("openai/prompt-caching-2");
    let messages: Vec<Message> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            Message::new(
                serde_json::from_value(m["role"].clone()).unwrap(),
                m["content"].as_str().unwrap(),
            )
        })
        .collect();
    let result = client(&fake)
        .run_local(RunLocal::new("gpt-4o-mini").messages(messages))
        .await
        .unwrap();
    assert_eq!(result.usage.input_tokens, 1149);
    assert_eq!(result.usage.cache_read_input_tokens, Some(1024));
    assert_eq!(result.usage.reasoning_output_tokens, Some(0));
    // gpt-4o-mini: 125 × 1.5e-7 + 1024 × 7.5e-8 + 353 × 6e-7 = 0.00030735
    assert!(
        (result.cost.unwrap() - 0.00030735).abs() < 1e-12,
        "{:?}",
        result.cost
    );
}

#[tokio::test]
async fn provider_4xx_and_5xx_are_provider_errors_with_status_and_message() {
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
    let tracia = client(&fake);
    let input = || RunLocal::new("gpt-4o").user("hi");

    let e = tracia.run_local(input()).await.unwrap_err();
    assert_eq!(
        (e.code(), e.status()),
        (ErrorCode::ProviderError, Some(401))
    );
    assert!(e.message().contains("Incorrect API key provided"), "{e}");
    let e = tracia.run_local(input()).await.unwrap_err();
    assert_eq!(
        (e.status(), e.retry_after()),
        (Some(429), Some(Duration::from_secs(7)))
    );
    assert!(e.message().contains("Rate limit reached"), "{e}");
    let e = tracia.run_local(input()).await.unwrap_err();
    assert!(e.is_provider() && e.status() == Some(500), "{e}");
}

#[tokio::test]
async fn timeout_is_a_typed_timeout() {
    let fake = FakeProvider::start().await;
    fake.enqueue_delayed("openai/chat-1", Duration::from_secs(5));
    let e = client(&fake)
        .run_local(RunLocal::new("gpt-4o").user("hi").timeout_ms(200))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert_eq!(e.message(), "Request timed out after 200ms");
}

#[tokio::test]
async fn malformed_json_is_a_provider_error() {
    let fake = FakeProvider::start().await;
    fake.enqueue(
        200,
        "application/json",
        "{\"id\": \"chatcmpl-1\", \"choices\": [",
    );
    let e = client(&fake)
        .run_local(RunLocal::new("gpt-4o").user("hi"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::ProviderError);
    assert!(e.message().contains("invalid JSON"), "{e}");
}

#[tokio::test]
async fn truncated_sse_fails_the_stream_and_its_result() {
    let fake = FakeProvider::start().await;
    fake.enqueue_truncated("openai/chat-stream", 700);
    let mut stream = client(&fake)
        .run_local_stream(RunLocal::new("gpt-4o").user("hi"))
        .await
        .unwrap();
    let mut saw_error = false;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            assert!(
                matches!(e.code(), ErrorCode::ProviderError | ErrorCode::NetworkError),
                "{e:?}"
            );
            saw_error = true;
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
async fn invalid_input_fails_before_any_request() {
    let fake = FakeProvider::start().await;
    let tracia = client(&fake);
    let cases = [
        (RunLocal::new(" ").user("hi"), "model is required"),
        (RunLocal::new("gpt-4o"), "messages is required"),
        (
            RunLocal::new("gpt-4o").user("hi").span_id("sp_123"),
            "Invalid span_id format: sp_123",
        ),
        (
            RunLocal::new("gpt-4o").message(Message::new(tracia::Role::Tool, "x")),
            "tool_call_id",
        ),
        (
            RunLocal::new("gpt-4o")
                .user("Hi {{ name }}")
                .variable("name", "Ada"),
            "{{ name }}",
        ),
        (
            RunLocal::new("gpt-4o")
                .user("hi")
                .variable("first name", "Ada"),
            "'first name'",
        ),
        (
            RunLocal::new("gpt-4o").user("hi").trace_id("trace-1"),
            "Invalid trace_id format",
        ),
        (
            RunLocal::new("llama-3").user("hi"),
            "Cannot determine provider for model 'llama-3'",
        ),
    ];
    for (input, expected) in cases {
        let e = tracia.run_local(input).await.unwrap_err();
        assert!(
            e.message().contains(expected),
            "{e} should mention {expected}"
        );
        assert!(
            matches!(
                e.code(),
                ErrorCode::InvalidRequest | ErrorCode::UnsupportedModel
            ),
            "{e:?}"
        );
    }
    assert_eq!(fake.request_count(), 0, "nothing was sent");
}

#[tokio::test]
async fn missing_key_names_the_variable_and_keys_never_leak() {
    let fake = FakeProvider::start().await;
    let keyless = tracia::Tracia::builder()
        .without_env()
        .with_base_url(tracia::Provider::OpenAi, fake.base_url())
        .build()
        .unwrap();
    let e = keyless
        .run_local(RunLocal::new("gpt-4o").user("hi"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::MissingProviderApiKey);
    assert!(e.message().contains("OPENAI_API_KEY"), "{e}");

    // A provider that echoes the key back in its error message.
    let key = "sk-live-abcdefghijklmnopqrstuvwxyz0123";
    fake.enqueue_openai_error(
        401,
        &format!("Incorrect API key provided: {key}"),
        "invalid_request_error",
        None,
    );
    let e = keyless
        .run_local(RunLocal::new("gpt-4o").user("hi").provider_api_key(key))
        .await
        .unwrap_err();
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(key), "key leaked: {text}");
    }
}

#[tokio::test]
async fn custom_options_reach_the_wire_and_unknown_providers_are_typed() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("openai/chat-1");
    client(&fake)
        .run_local(
            RunLocal::new("gpt-4o")
                .user("hi")
                .max_output_tokens(50)
                .stop_sequence("END")
                .top_p(0.9)
                .custom_option(tracia::Provider::OpenAi, "seed", json!(7))
                .custom_option(tracia::Provider::Anthropic, "top_k", json!(3)),
        )
        .await
        .unwrap();
    let sent = &fake.requests().await[0].body;
    assert_eq!(
        (
            sent["seed"].clone(),
            sent["max_tokens"].clone(),
            sent["stop"].clone(),
            sent["top_p"].clone()
        ),
        (json!(7), json!(50), json!(["END"]), json!(0.9))
    );
    assert!(
        sent.get("top_k").is_none(),
        "another provider's options stay out"
    );
}
