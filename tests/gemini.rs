//! `run_local` and `run_local_stream` against a fake Gemini (AI Studio) server replaying
//! recorded exchanges: what the SDK sends, what it returns, the span that reaches an
//! OTLP receiver, and the typed error of every failure.

mod support;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use support::{
    FakeProvider, OtlpReceiver, ReceivedSpan, fixture_request_body, fixture_response_body, install,
    pipeline,
};
use tracia::{
    Content, ContentPart, ErrorCode, FinishReason, Message, Provider, ResponseFormat, RunLocal,
    RunResult, ToolCall, ToolChoice, ToolDefinition, Tracia, Usage,
};

const KEY: &str = "AIzaSyTest-0123456789abcdefghijklmnopq";
const WAIT: Duration = Duration::from_secs(10);

fn gemini(fake: &FakeProvider) -> Tracia {
    Tracia::builder()
        .without_env()
        .with_api_key(Provider::Google, KEY)
        .with_base_url(Provider::Google, fake.url())
        .build()
        .expect("client builds")
}

/// Gemini's error body: `{"error":{"code","message","status"}}`.
fn gemini_error(code: u16, message: &str, status: &str) -> String {
    json!({"error": {"code": code, "message": message, "status": status}}).to_string()
}

/// The recorded request body without the empty `generationConfig` Google's SDK adds;
/// tracia sends one only when something is set.
fn recorded_without_empty_config(name: &str) -> Value {
    let mut body = fixture_request_body(name);
    let removed = body.as_object_mut().unwrap().remove("generationConfig");
    assert_eq!(
        removed,
        Some(json!({})),
        "{name} had an empty generationConfig"
    );
    body
}

/// The tool the tools fixtures declare, built from the recorded declaration.
fn recorded_tool(name: &str) -> ToolDefinition {
    let body = fixture_request_body(name);
    let declaration = &body["tools"][0]["functionDeclarations"][0];
    ToolDefinition::new(declaration["name"].as_str().unwrap())
        .with_description(declaration["description"].as_str().unwrap())
        .with_parameters(declaration["parameters"].clone())
}

/// The text of each event of a recorded SSE body, parsed independently of the SDK.
fn recorded_stream_texts(name: &str) -> Vec<String> {
    let body = fixture_response_body(name);
    std::str::from_utf8(&body)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| {
            let chunk: Value = serde_json::from_str(data).unwrap();
            chunk["candidates"][0]["content"]["parts"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect()
        })
        .collect()
}

/// For tests that check no span: they still run under a (bare) subscriber. A span
/// callsite first reached while no subscriber exists anywhere can be cached as disabled
/// for every thread (callsite registration races with the per-thread dispatchers of the
/// tests beside it), which would silently drop those tests' spans.
fn without_spans() -> tracing::subscriber::DefaultGuard {
    tracing::subscriber::set_default(tracing_subscriber::registry())
}

async fn collect(stream: &mut tracia::RunStream) -> Vec<Result<String, tracia::Error>> {
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    items
}

fn assert_gemini_error_span(span: &ReceivedSpan, error: &tracia::Error, error_type: &str) {
    assert!(span.is_error(), "{}", span.name);
    assert_eq!(span.status_message, error.to_string());
    assert_eq!(span.attr_str("error.type"), Some(error_type));
    assert_eq!(span.attr_str("gen_ai.provider.name"), Some("gcp.gemini"));
    assert!(span.event("exception").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn generate_content_returns_text_usage_ids_and_a_gemini_span() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("google/generate-content");
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let result = gemini(&fake)
        .run_local(RunLocal::new("gemini-2.5-flash").user("What is ai?"))
        .await
        .unwrap();

    let recorded: Value =
        serde_json::from_slice(&fixture_response_body("google/generate-content")).unwrap();
    assert_eq!(
        result.text,
        recorded["candidates"][0]["content"]["parts"][0]["text"]
    );
    // Thinking tokens are reported outside candidatesTokenCount: output includes them.
    assert_eq!(
        result.usage,
        Usage {
            input_tokens: 5,
            output_tokens: 877 + 1058,
            total_tokens: 1940,
            reasoning_output_tokens: Some(1058),
            ..Usage::default()
        }
    );
    assert_eq!(result.finish_reason, FinishReason::Stop);
    assert_eq!(result.provider, Provider::Google);
    assert_eq!(result.response_model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(
        result.response_id.as_deref(),
        Some("-hk4afOSMZKkjuMPnJWGkAk")
    );
    assert_eq!(result.reasoning, None, "no thought parts were returned");
    assert!(result.cost.is_some_and(|c| c > 0.0), "{:?}", result.cost);

    let sent = &fake.requests().await[0];
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(sent.query, None, "the key never goes in the URL");
    assert_eq!(sent.body, fixture_request_body("google/generate-content"));
    assert_eq!(sent.header("x-goog-api-key"), Some(KEY));
    assert_eq!(sent.header("authorization"), None);

    guard.flush().await;
    let span = &otlp.wait_for_spans(1, WAIT).await[0];
    assert_eq!(
        sent.header("traceparent"),
        Some(format!("00-{}-{}-01", span.trace_id, span.span_id).as_str())
    );
    assert_eq!(format!("sp_{}", span.span_id), result.span_id);
    assert_eq!(span.name, "chat gemini-2.5-flash");
    assert!(span.is_client() && !span.is_error());
    let s = |k| span.attr_str(k);
    assert_eq!(s("gen_ai.provider.name"), Some("gcp.gemini"));
    assert_eq!(s("tracia.provider"), Some("google"));
    assert_eq!(s("gen_ai.operation.name"), Some("chat"));
    assert_eq!(s("gen_ai.request.model"), Some("gemini-2.5-flash"));
    assert_eq!(s("gen_ai.response.model"), Some("gemini-2.5-flash"));
    assert_eq!(s("gen_ai.response.id"), Some("-hk4afOSMZKkjuMPnJWGkAk"));
    assert_eq!(s("server.address"), Some("127.0.0.1"));
    assert_eq!(span.attr_i64("gen_ai.usage.input_tokens"), Some(5));
    assert_eq!(span.attr_i64("gen_ai.usage.output_tokens"), Some(1935));
    assert_eq!(
        span.attr_i64("gen_ai.usage.reasoning.output_tokens"),
        Some(1058)
    );
    assert_eq!(
        span.attr_str_array("gen_ai.response.finish_reasons"),
        Some(vec!["stop".to_owned()])
    );
    assert!(!span.has_attr("openai.api.type"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_yields_each_recorded_chunk_and_assembles_the_whole_answer() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("google/stream");
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let mut stream = gemini(&fake)
        .run_local_stream(
            RunLocal::new("gemini-2.0-flash").user("Tell me a short story about a cat."),
        )
        .await
        .unwrap();
    let chunks: Vec<String> = collect(&mut stream)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let result = stream.finish().await.unwrap();

    let expected = recorded_stream_texts("google/stream");
    assert_eq!(chunks, expected, "one chunk per event, as recorded");
    assert_eq!(result.text, expected.concat());
    assert!(!result.aborted);
    assert_eq!(result.finish_reason, FinishReason::Stop);
    assert_eq!(
        result.response_id.as_deref(),
        Some("jNcEavSuHfWA7_UP9-uokQs")
    );
    assert_eq!(result.response_model.as_deref(), Some("gemini-2.0-flash"));
    // The last chunk's usage wins over the provisional counts of the earlier ones.
    assert_eq!(
        (
            result.usage.input_tokens,
            result.usage.output_tokens,
            result.usage.total_tokens
        ),
        (9, 527, 536)
    );

    let sent = &fake.requests().await[0];
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    );
    assert_eq!(sent.query.as_deref(), Some("alt=sse"));
    assert_eq!(sent.body, fixture_request_body("google/stream"));
    assert_eq!(sent.header("x-goog-api-key"), Some(KEY));

    guard.flush().await;
    let span = &otlp.wait_for_spans(1, WAIT).await[0];
    assert!(!span.is_error());
    assert_eq!(span.attr_bool("gen_ai.request.stream"), Some(true));
    assert!(span.has_attr("gen_ai.response.time_to_first_chunk"));
    assert_eq!(span.attr_i64("gen_ai.usage.output_tokens"), Some(527));
    assert_eq!(
        span.attr_str_array("gen_ai.response.finish_reasons"),
        Some(vec!["stop".to_owned()])
    );
}

#[tokio::test]
async fn a_streamed_response_equals_the_same_response_in_one_body() {
    let _sub = without_spans();
    let fake = FakeProvider::start().await;
    let body: Value =
        serde_json::from_slice(&fixture_response_body("google/generate-content")).unwrap();
    fake.enqueue_fixture("google/generate-content");
    fake.enqueue(200, "text/event-stream", format!("data: {body}\n\n"));
    let tracia = gemini(&fake);
    let input = || RunLocal::new("gemini-2.5-flash").user("What is ai?");
    let whole = tracia.run_local(input()).await.unwrap();
    let streamed = tracia
        .run_local_stream(input())
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let view = |r: &RunResult| {
        (
            r.text.clone(),
            r.usage,
            r.finish_reason,
            r.response_id.clone(),
            r.response_model.clone(),
            r.message.clone(),
        )
    };
    assert_eq!(view(&streamed), view(&whole));
}

#[tokio::test]
async fn tools_send_the_recorded_declarations_and_return_parsed_calls() {
    let _sub = without_spans();
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("google/tools");
    fake.enqueue_fixture("google/tools-stream");
    let recorded = fixture_request_body("google/tools");
    let input = || {
        RunLocal::new("gemini-2.0-flash")
            .system(
                recorded["systemInstruction"]["parts"][0]["text"]
                    .as_str()
                    .unwrap(),
            )
            .user("What's the weather like in San Francisco?")
            .tool(recorded_tool("google/tools"))
    };
    let tracia = gemini(&fake);
    let whole = tracia.run_local(input()).await.unwrap();
    let mut stream = tracia.run_local_stream(input()).await.unwrap();
    assert!(collect(&mut stream).await.is_empty(), "no text to stream");
    let streamed = stream.finish().await.unwrap();

    // Gemini gives calls no id: they get the response id and their position.
    let call = |id: &str| ToolCall::new(id, "get_weather", json!({"location": "San Francisco"}));
    assert_eq!(
        whole.tool_calls,
        vec![call("call_k9cEavP3CLWnqtsPg8Tg0As_0")]
    );
    assert_eq!(
        streamed.tool_calls,
        vec![call("call_ldcEapKDBbCH7_UP6LC-6AE_0")]
    );
    for result in [&whole, &streamed] {
        assert_eq!(result.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            result.message.content,
            Content::Parts(vec![ContentPart::ToolCall(result.tool_calls[0].clone())])
        );
        assert_eq!(
            (result.usage.input_tokens, result.usage.output_tokens),
            (63, 6)
        );
    }

    let sent = fake.requests().await;
    assert_eq!(sent[0].body, recorded_without_empty_config("google/tools"));
    assert_eq!(
        sent[1].body,
        recorded_without_empty_config("google/tools-stream")
    );
}

#[tokio::test]
async fn a_second_turn_sends_the_recorded_history() {
    let _sub = without_spans();
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("google/multi-turn-1");
    fake.enqueue_fixture("google/multi-turn-2");
    let tracia = gemini(&fake);
    let question = "What is the capital of France?";
    let first = tracia
        .run_local(RunLocal::new("gemini-2.0-flash").user(question))
        .await
        .unwrap();
    assert_eq!(first.text, "The capital of France is **Paris**.\n");
    let second = tracia
        .run_local(
            RunLocal::new("gemini-2.0-flash")
                .user(question)
                .message(first.message.clone())
                .user("Why is the sky blue?"),
        )
        .await
        .unwrap();
    assert!(
        second.text.starts_with("The sky is blue because"),
        "{}",
        second.text
    );
    assert_eq!(
        (second.usage.input_tokens, second.usage.output_tokens),
        (22, 290)
    );
    let sent = fake.requests().await;
    assert_eq!(sent[0].body, fixture_request_body("google/multi-turn-1"));
    assert_eq!(sent[1].body, fixture_request_body("google/multi-turn-2"));
}

#[tokio::test]
async fn tool_results_go_back_as_function_responses_named_after_their_calls() {
    let _sub = without_spans();
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("google/multi-turn-1");
    let input = RunLocal::new("gemini-2.0-flash")
        .system("Be brief.")
        .developer("Use metric units.")
        .user("Weather in Paris and London?")
        .assistant(vec![
            ContentPart::text("Checking both."),
            ContentPart::ToolCall(ToolCall::new(
                "c1",
                "get_weather",
                json!({"location": "Paris"}),
            )),
            ContentPart::ToolCall(ToolCall::new(
                "c2",
                "get_weather",
                json!({"location": "London"}),
            )),
        ])
        .message(Message::tool("c1", r#"{"temp_c": 21}"#))
        .message(Message::tool("c2", "rainy"))
        .message(Message::tool("c3", "12:00").with_tool_name("clock"))
        .user("Thanks. And tomorrow?");
    gemini(&fake).run_local(input).await.unwrap();
    assert_eq!(
        fake.requests().await[0].body,
        json!({
            "systemInstruction": {"role": "user", "parts": [{"text": "Be brief."}, {"text": "Use metric units."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in Paris and London?"}]},
                {"role": "model", "parts": [
                    {"text": "Checking both."},
                    {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}},
                    {"functionCall": {"name": "get_weather", "args": {"location": "London"}}}
                ]},
                // One user turn: Gemini wants turns to alternate.
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}},
                    {"functionResponse": {"name": "get_weather", "response": {"result": "rainy"}}},
                    {"functionResponse": {"name": "clock", "response": {"result": "12:00"}}},
                    {"text": "Thanks. And tomorrow?"}
                ]}
            ]
        })
    );
}

#[tokio::test]
async fn options_tool_choice_and_output_formats_reach_their_gemini_fields() {
    let _sub = without_spans();
    let fake = FakeProvider::start().await;
    support::enqueue_times(&fake, "google/multi-turn-1", 4);
    let tracia = gemini(&fake);
    let schema = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": false,
        "properties": {"city": {"type": "string"}},
        "required": ["city"]
    });
    tracia
        .run_local(
            // The resource-name form of a model id works too.
            RunLocal::new("models/gemini-2.0-flash")
                .provider(Provider::Google)
                .user("hi")
                .temperature(0.3)
                .top_p(0.9)
                .max_output_tokens(64)
                .stop_sequence("END")
                .tool(ToolDefinition::new("now").with_description("Current time"))
                .tool_choice(ToolChoice::Tool("now".into()))
                .response_format(ResponseFormat::json_schema(schema))
                .custom_option(Provider::Google, "generationConfig", json!({"topK": 5}))
                .custom_option(
                    Provider::Google,
                    "safetySettings",
                    json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]),
                )
                .custom_option(Provider::OpenAi, "seed", json!(7)),
        )
        .await
        .unwrap();
    let sent = &fake.requests().await[0];
    assert_eq!(sent.path, "/v1beta/models/gemini-2.0-flash:generateContent");
    let body = &sent.body;
    // A tool without parameters is declared without them; JSON Schema keywords Gemini
    // rejects are left out; custom options merge into the encoded config.
    assert_eq!(
        body["tools"],
        json!([{"functionDeclarations": [{"name": "now", "description": "Current time"}]}])
    );
    assert_eq!(
        body["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["now"]}})
    );
    assert_eq!(
        body["generationConfig"],
        json!({
            "temperature": 0.3, "topP": 0.9, "maxOutputTokens": 64, "stopSequences": ["END"],
            "responseMimeType": "application/json",
            "responseSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "topK": 5
        })
    );
    assert_eq!(body["safetySettings"][0]["threshold"], "BLOCK_NONE");
    assert!(
        body.get("seed").is_none(),
        "another provider's options stay out"
    );

    for (choice, mode) in [
        (ToolChoice::Auto, "AUTO"),
        (ToolChoice::None, "NONE"),
        (ToolChoice::Required, "ANY"),
    ] {
        tracia
            .run_local(
                RunLocal::new("gemini-2.0-flash")
                    .user("hi")
                    .tool(ToolDefinition::new("now"))
                    .tool_choice(choice)
                    .response_format(ResponseFormat::Json),
            )
            .await
            .unwrap();
        let sent = fake.requests().await.pop().unwrap().body;
        assert_eq!(
            sent["toolConfig"],
            json!({"functionCallingConfig": {"mode": mode}})
        );
        assert_eq!(
            sent["generationConfig"],
            json!({"responseMimeType": "application/json"})
        );
    }
}

#[tokio::test]
async fn thought_signatures_ride_in_call_ids_and_come_back_with_the_history() {
    let _sub = without_spans();
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("google/tools-thought-signature");
    fake.enqueue_fixture("google/multi-turn-1");
    let tracia = gemini(&fake);
    let question = "What's the weather in Paris and in London?";
    let tool = recorded_tool("google/tools-thought-signature");
    let first = tracia
        .run_local(
            RunLocal::new("gemini-3-flash-preview")
                .user(question)
                .tool(tool.clone())
                .temperature(0.5)
                .custom_option(
                    Provider::Google,
                    "generationConfig",
                    json!({"thinkingConfig": {"includeThoughts": true}}),
                ),
        )
        .await
        .unwrap();
    assert_eq!(
        fake.requests().await[0].body,
        fixture_request_body("google/tools-thought-signature")
    );
    let response: Value =
        serde_json::from_slice(&fixture_response_body("google/tools-thought-signature")).unwrap();
    let parts = &response["candidates"][0]["content"]["parts"];
    assert_eq!(first.reasoning.as_deref(), parts[0]["text"].as_str());
    assert_eq!(first.text, "", "thoughts are not the answer");
    assert_eq!(
        first.usage,
        Usage {
            input_tokens: 1200,
            output_tokens: 30 + 120,
            total_tokens: 1350,
            cache_read_input_tokens: Some(1024),
            reasoning_output_tokens: Some(120),
            ..Usage::default()
        }
    );
    let [signed, unsigned] = first.tool_calls.as_slice() else {
        panic!("two calls: {:?}", first.tool_calls)
    };
    assert_eq!(signed.arguments, json!({"location": "Paris"}));
    assert!(
        signed
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "ids stay portable: {}",
        signed.id
    );
    assert_eq!(unsigned.id, "call_x2FkacTgBpO4nvgP1MXV2Qw_1");
    assert_eq!(unsigned.arguments, json!({"location": "London"}));

    tracia
        .run_local(
            RunLocal::new("gemini-3-flash-preview")
                .user(question)
                .message(first.message.clone())
                .message(Message::tool(&signed.id, "sunny"))
                .message(Message::tool(&unsigned.id, "rainy"))
                .tool(tool),
        )
        .await
        .unwrap();
    let contents = &fake.requests().await[1].body["contents"];
    assert_eq!(
        contents[1],
        json!({"role": "model", "parts": [
            {"functionCall": parts[1]["functionCall"], "thoughtSignature": parts[1]["thoughtSignature"]},
            {"functionCall": parts[2]["functionCall"]}
        ]}),
        "the exact signature goes back on its call"
    );
    assert_eq!(
        contents[2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
            {"functionResponse": {"name": "get_weather", "response": {"result": "rainy"}}}
        ]})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_errors_are_typed_provider_errors_with_error_spans() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    let cases = [
        (
            401,
            "Request had invalid authentication credentials.",
            "UNAUTHENTICATED",
        ),
        (
            403,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            "PERMISSION_DENIED",
        ),
        (
            429,
            "Resource has been exhausted (e.g. check quota).",
            "RESOURCE_EXHAUSTED",
        ),
        (
            500,
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
            "INTERNAL",
        ),
    ];
    for (code, message, status) in cases {
        let retry: &[(&str, &str)] = if code == 429 {
            &[("retry-after", "7")]
        } else {
            &[]
        };
        fake.enqueue_with_headers(
            code,
            "application/json; charset=UTF-8",
            retry,
            gemini_error(code, message, status),
        );
    }
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let tracia = gemini(&fake);
    let input = || RunLocal::new("gemini-2.0-flash").user("hi");
    let mut errors = Vec::new();
    for (code, message, _) in cases {
        // The streaming call fails when it opens, like the plain one.
        let error = if code == 500 {
            tracia.run_local_stream(input()).await.unwrap_err()
        } else {
            tracia.run_local(input()).await.unwrap_err()
        };
        assert_eq!(
            (error.code(), error.status()),
            (ErrorCode::ProviderError, Some(code))
        );
        assert!(error.message().contains(message), "{error}");
        assert!(!error.to_string().contains(KEY) && !format!("{error:?}").contains(KEY));
        errors.push(error);
    }
    assert_eq!(errors[2].retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(errors[0].retry_after(), None);

    guard.flush().await;
    let spans = otlp.wait_for_spans(4, WAIT).await;
    assert_eq!(spans.len(), 4);
    for error in &errors {
        let span = spans
            .iter()
            .find(|s| s.status_message == error.to_string())
            .expect("a span per failed call");
        assert_gemini_error_span(span, error, &error.status().unwrap().to_string());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_prompt_is_a_provider_error_not_empty_text() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("google/blocked-prompt");
    fake.enqueue_fixture("google/blocked-prompt-stream");
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let tracia = gemini(&fake);
    let input = || RunLocal::new("gemini-2.5-flash").user("A prompt the safety filters block");

    let whole = tracia.run_local(input()).await.unwrap_err();
    assert_eq!(whole.code(), ErrorCode::ProviderError);
    assert!(
        whole.message().contains("PROHIBITED_CONTENT")
            && whole
                .message()
                .contains("The prompt is blocked due to prohibited contents"),
        "{whole}"
    );
    let mut stream = tracia.run_local_stream(input()).await.unwrap();
    let items = collect(&mut stream).await;
    assert_eq!(items.len(), 1, "one error item, no text");
    let yielded = items.into_iter().next().unwrap().unwrap_err();
    assert_eq!(yielded.code(), ErrorCode::ProviderError);
    assert!(
        yielded.message().contains("PROHIBITED_CONTENT"),
        "{yielded}"
    );
    let streamed = stream.finish().await.unwrap_err();
    assert_eq!(streamed.to_string(), yielded.to_string());
    assert_eq!(
        fake.requests().await[1].body,
        fixture_request_body("google/blocked-prompt-stream")
    );

    guard.flush().await;
    let spans = otlp.wait_for_spans(2, WAIT).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    for error in [&whole, &streamed] {
        let span = spans
            .iter()
            .find(|s| s.status_message == error.to_string())
            .expect("an error span per call");
        assert_gemini_error_span(span, error, "provider_error");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_before_its_finish_reason_fails_with_an_error_span() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    // The connection breaks mid-body...
    let cut = 1500;
    fake.enqueue_truncated("google/stream", cut);
    // ...or the body ends cleanly after three events, none with a finishReason: Gemini
    // sends no end marker, so only the finish reason says the answer is complete.
    // (Gemini separates events with CRLF pairs.)
    let recorded = fixture_response_body("google/stream");
    let text = std::str::from_utf8(&recorded).unwrap();
    let first_three: String = text.split_inclusive("\r\n\r\n").take(3).collect();
    let before_cut = text[..cut].matches("\r\n\r\n").count();
    fake.enqueue(200, "text/event-stream", first_three);
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let tracia = gemini(&fake);

    let mut errors = Vec::new();
    for (case, received) in [("aborted connection", before_cut), ("clean end", 3)] {
        let mut stream = tracia
            .run_local_stream(RunLocal::new("gemini-2.0-flash").user("Tell me a story"))
            .await
            .unwrap();
        let items = collect(&mut stream).await;
        let (chunks, failures): (Vec<_>, Vec<_>) = items.into_iter().partition(Result::is_ok);
        assert_eq!(failures.len(), 1, "{case}: exactly one error item");
        let text: String = chunks.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            text,
            recorded_stream_texts("google/stream")[..received].concat(),
            "{case}: what arrived was handed out"
        );
        let error = stream.finish().await.unwrap_err();
        assert!(
            matches!(
                error.code(),
                ErrorCode::ProviderError | ErrorCode::NetworkError
            ),
            "{case}: {error:?}"
        );
        errors.push((error, text));
    }
    assert!(
        errors[1]
            .0
            .message()
            .contains("the stream ended before the response was complete"),
        "{}",
        errors[1].0
    );

    guard.flush().await;
    let spans = otlp.wait_for_spans(2, WAIT).await;
    assert_eq!(spans.len(), 2);
    for (error, text) in &errors {
        let span = spans
            .iter()
            .find(|s| s.status_message == error.to_string())
            .expect("an error span per cut stream");
        assert_gemini_error_span(span, error, &error.code().as_str().to_ascii_lowercase());
        assert_eq!(
            span.attr_str_array("gen_ai.response.finish_reasons"),
            Some(vec!["error".to_owned()])
        );
        let output: Value =
            serde_json::from_str(span.attr_str("gen_ai.output.messages").unwrap()).unwrap();
        assert_eq!(
            output[0]["parts"][0]["content"], *text,
            "the partial answer is kept"
        );
    }
}

/// Set by [`gemini_api_key_is_read_when_google_api_key_is_absent`] for its child process.
const EXPECTED_KEY_ENV: &str = "TRACIA_TEST_EXPECTED_GEMINI_KEY";

/// The key lookup reads the real process environment, which tests must not change (other
/// tests run in parallel in this process): this part runs in a child process that gets
/// its own environment from the test below.
#[tokio::test]
#[ignore = "run in a child process by gemini_api_key_is_read_when_google_api_key_is_absent"]
async fn key_from_environment_child() {
    let Ok(expected) = std::env::var(EXPECTED_KEY_ENV) else {
        eprintln!("only meaningful when started by the parent test; nothing to check");
        return;
    };
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("google/multi-turn-1");
    let tracia = Tracia::builder()
        .with_base_url(Provider::Google, fake.url())
        .build()
        .unwrap();
    tracia
        .run_local(RunLocal::new("gemini-2.0-flash").user("What is the capital of France?"))
        .await
        .unwrap();
    assert_eq!(
        fake.requests().await[0].header("x-goog-api-key"),
        Some(expected.as_str())
    );
}

#[test]
fn gemini_api_key_is_read_when_google_api_key_is_absent() {
    let cases = [
        (None, Some("gemini-env-key"), "gemini-env-key"),
        (
            Some("google-env-key"),
            Some("gemini-env-key"),
            "google-env-key",
        ),
    ];
    for (google, gemini, expected) in cases {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args(["key_from_environment_child", "--exact", "--ignored"])
            .env_remove("GOOGLE_API_KEY")
            .env_remove("GEMINI_API_KEY")
            .env(EXPECTED_KEY_ENV, expected);
        for (name, value) in [("GOOGLE_API_KEY", google), ("GEMINI_API_KEY", gemini)] {
            if let Some(value) = value {
                child.env(name, value);
            }
        }
        let output = child.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "expected {expected}:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
