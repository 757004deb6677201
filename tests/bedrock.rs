//! Amazon Bedrock Converse / ConverseStream against a fake server replaying every
//! recorded Bedrock exchange: what the SDK sends (path, body, Bearer or SigV4), what it
//! returns, the spans at a real OTLP receiver, and the typed error of every failure.
//!
//! Every test installs a subscriber: a test without one, run in parallel with tests
//! that have a thread-local one, can race tracing's callsite interest and lose spans.

mod support;

use std::time::Duration;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message as Frame};
use bytes::Bytes;
use futures::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{
    FakeProvider, OtlpReceiver, ReceivedSpan, fixture_request_body, fixture_response_body, install,
    pipeline,
};
use tracia::{
    AwsCredentials, Content, ContentPart, ErrorCode, FinishReason, Provider, RunLocal, RunResult,
    Tracia, TraciaBuilder,
};

const KEY: &str = "ABSKQmVkcm9ja0FQSUtleS10ZXN0LWtleS0wMTIzNDU2Nzg5";
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";
const WAIT: Duration = Duration::from_secs(10);
const GUARDRAIL: &str = "5zwrmdlsra2e";

/// A client for Bedrock in us-east-1 (the fixtures' region) at the fake server.
fn bedrock(fake: &FakeProvider, f: impl FnOnce(TraciaBuilder) -> TraciaBuilder) -> Tracia {
    f(Tracia::builder()
        .without_env()
        .with_aws_region("us-east-1")
        .with_base_url(Provider::AmazonBedrock, fake.url()))
    .build()
    .expect("client builds")
}

fn keyed(fake: &FakeProvider) -> Tracia {
    bedrock(fake, |b| b.with_api_key(Provider::AmazonBedrock, KEY))
}

/// The recorded request's `guardrailConfig`, passed as a custom option.
fn with_recorded_guardrail(input: RunLocal, fixture: &str) -> RunLocal {
    let recorded = fixture_request_body(fixture);
    input.custom_option(
        Provider::AmazonBedrock,
        "guardrailConfig",
        recorded["guardrailConfig"].clone(),
    )
}

fn span<'a>(spans: &'a [ReceivedSpan], span_id: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| format!("sp_{}", s.span_id) == span_id)
        .unwrap_or_else(|| panic!("span {span_id} exported"))
}

#[tokio::test(flavor = "multi_thread")]
async fn converse_sends_the_recorded_body_and_records_a_bedrock_span() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    fake.enqueue_fixture("bedrock/converse-meta");
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let model = "meta.llama3-2-1b-instruct-v1:0";
    let result = keyed(&fake)
        .run_local(
            RunLocal::new(model)
                .system("You are an app that knows about everything.")
                .user("Tell me a joke about opentelemetry")
                .temperature(0.5)
                .custom_option(
                    Provider::AmazonBedrock,
                    "additionalModelRequestFields",
                    json!({}),
                ),
        )
        .await
        .unwrap();
    assert_eq!(
        result.text,
        "Why did the OpenTelemetry trace go to therapy?\n\nBecause it was struggling to debug its issues and was feeling a little \"unreliable\"."
    );
    assert_eq!(
        (
            result.usage.input_tokens,
            result.usage.output_tokens,
            result.usage.total_tokens
        ),
        (52, 30, 82)
    );
    assert_eq!(result.finish_reason, FinishReason::Stop);
    assert_eq!(
        (result.provider, result.model.as_str()),
        (Provider::AmazonBedrock, model)
    );

    let sent = &fake.requests().await[0];
    assert_eq!(sent.body, fixture_request_body("bedrock/converse-meta"));
    assert_eq!(
        sent.path, "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse",
        "region-prefixed id, `:` encoded once on the wire"
    );
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(
        sent.header("x-amz-date").is_none(),
        "a key call is not signed"
    );
    assert!(
        sent.header("traceparent")
            .unwrap()
            .contains(&result.span_id[3..])
    );

    guard.flush().await;
    let spans = otlp.wait_for_spans(1, WAIT).await;
    let chat = span(&spans, &result.span_id);
    assert_eq!(chat.name, format!("chat {model}"));
    assert!(chat.is_client() && !chat.is_error());
    let s = |k| chat.attr_str(k);
    assert_eq!(s("gen_ai.provider.name"), Some("aws.bedrock"));
    assert_eq!(
        s("gen_ai.request.model"),
        Some(model),
        "the model the user passed"
    );
    assert_eq!(s("tracia.provider"), Some("amazon_bedrock"));
    assert_eq!(s("server.address"), Some("127.0.0.1"));
    assert_eq!(chat.attr_f64("gen_ai.request.temperature"), Some(0.5));
    assert_eq!(chat.attr_i64("gen_ai.usage.input_tokens"), Some(52));
    assert_eq!(chat.attr_i64("gen_ai.usage.output_tokens"), Some(30));
    assert_eq!(
        chat.attr_str_array("gen_ai.response.finish_reasons"),
        Some(vec!["stop".to_owned()])
    );
    assert!(!chat.has_attr("openai.api.type") && !chat.has_attr("aws.bedrock.guardrail.id"));
}

async fn guarded(fake: &FakeProvider, fixture: &str, stream: bool) -> (RunResult, Vec<String>) {
    fake.enqueue_fixture(fixture);
    let input = with_recorded_guardrail(
        RunLocal::new("amazon.titan-text-express-v1").user("What is the capital of Japan?"),
        fixture,
    );
    let tracia = keyed(fake);
    if !stream {
        return (tracia.run_local(input).await.unwrap(), Vec::new());
    }
    let mut s = tracia.run_local_stream(input).await.unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = s.next().await {
        chunks.push(chunk.unwrap());
    }
    (s.finish().await.unwrap(), chunks)
}

#[tokio::test(flavor = "multi_thread")]
async fn guardrail_calls_streamed_and_not_agree_and_name_the_guardrail() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let (whole, _) = guarded(&fake, "bedrock/converse", false).await;
    let (streamed, chunks) = guarded(&fake, "bedrock/converse-stream", true).await;

    assert_eq!(
        whole.text,
        "{ADDRESS} is the capital of {ADDRESS}.\u{a0}Is there anything else you would like to know about {ADDRESS} or {ADDRESS}?"
    );
    assert_eq!(
        streamed.text,
        "Hello, {ADDRESS} is the capital of {ADDRESS}. Would you like to know more about {ADDRESS}?"
    );
    assert_eq!(chunks.concat(), streamed.text);
    // The two recordings answered differently; what the same call shares must agree.
    assert_eq!(whole.finish_reason, streamed.finish_reason);
    assert_eq!(
        whole.finish_reason,
        FinishReason::Stop,
        "guardrail_intervened"
    );
    assert_eq!(whole.usage.input_tokens, streamed.usage.input_tokens);
    assert_eq!(
        (whole.usage.output_tokens, whole.usage.total_tokens),
        (26, 54)
    );
    assert_eq!(
        (
            streamed.usage.input_tokens,
            streamed.usage.output_tokens,
            streamed.usage.total_tokens
        ),
        (28, 22, 50)
    );

    let requests = fake.requests().await;
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/model/us.amazon.titan-text-express-v1/converse",
            "/model/us.amazon.titan-text-express-v1/converse-stream"
        ]
    );
    for (sent, fixture) in requests
        .iter()
        .zip(["bedrock/converse", "bedrock/converse-stream"])
    {
        assert_eq!(
            sent.body["guardrailConfig"],
            fixture_request_body(fixture)["guardrailConfig"]
        );
        assert_eq!(
            sent.body["messages"],
            json!([{"role": "user", "content": [{"text": "What is the capital of Japan?"}]}])
        );
        assert!(sent.body.get("inferenceConfig").is_none());
    }

    guard.flush().await;
    let spans = otlp.wait_for_spans(2, WAIT).await;
    for (result, stream) in [(&whole, None), (&streamed, Some(true))] {
        let chat = span(&spans, &result.span_id);
        assert_eq!(chat.attr_str("aws.bedrock.guardrail.id"), Some(GUARDRAIL));
        assert_eq!(chat.attr_bool("gen_ai.request.stream"), stream);
        assert_eq!(
            chat.attr_i64("gen_ai.usage.output_tokens"),
            Some(result.usage.output_tokens as i64)
        );
    }
}

fn weather_input() -> RunLocal {
    let recorded = fixture_request_body("bedrock/converse-stream-tools");
    let spec = &recorded["toolConfig"]["tools"][0]["toolSpec"];
    let tool = tracia::ToolDefinition::new("get_weather")
        .with_description(spec["description"].as_str().unwrap())
        .with_parameters(spec["inputSchema"]["json"].clone());
    RunLocal::new("anthropic.claude-3-sonnet-20240229-v1:0")
        .user("What is the weather in Barcelona?")
        .tool(tool)
        .max_output_tokens(300)
        .temperature(0.5)
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_tool_call_assembles_like_the_non_streamed_answer() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    // Frame by frame, so the decoder meets frames in separate reads.
    fake.enqueue_chunked("bedrock/converse-stream-tools", Duration::from_millis(1));
    let tracia = keyed(&fake);
    let mut stream = tracia.run_local_stream(weather_input()).await.unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.unwrap());
    }
    let streamed = stream.finish().await.unwrap();
    let text = "Okay, let me check the weather for Barcelona using the available tool:";
    assert_eq!(
        (chunks.concat().as_str(), streamed.text.as_str()),
        (text, text)
    );
    assert!(chunks.len() > 10, "one chunk per text delta: {chunks:?}");
    let call = tracia::ToolCall::new(
        "tooluse_yypYDr71TwCwByoyao4-Vg",
        "get_weather",
        json!({"location": "Barcelona"}),
    );
    assert_eq!(streamed.tool_calls, std::slice::from_ref(&call));
    assert_eq!(streamed.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        (
            streamed.usage.input_tokens,
            streamed.usage.output_tokens,
            streamed.usage.total_tokens
        ),
        (236, 58, 294)
    );
    assert_eq!(
        streamed.message.content,
        Content::Parts(vec![ContentPart::text(text), ContentPart::ToolCall(call)])
    );
    let outcome = &fake.wait_for_stream_outcomes(1, WAIT).await[0];
    assert!(
        outcome.completed && outcome.events_total == 25,
        "{outcome:?}"
    );

    // The same answer as one Converse response (content blocks of the Converse API
    // reference, filled with what the stream carried) decodes to the same result.
    let whole_body = json!({
        "metrics": {"latencyMs": 1176},
        "output": {"message": {"role": "assistant", "content": [
            {"text": text},
            {"toolUse": {"toolUseId": "tooluse_yypYDr71TwCwByoyao4-Vg", "name": "get_weather",
                "input": {"location": "Barcelona"}}}
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 236, "outputTokens": 58, "totalTokens": 294}
    });
    fake.enqueue(200, "application/json", whole_body.to_string());
    let whole = tracia.run_local(weather_input()).await.unwrap();
    assert_eq!(
        (
            &whole.text,
            &whole.tool_calls,
            whole.finish_reason,
            whole.usage,
            &whole.message
        ),
        (
            &streamed.text,
            &streamed.tool_calls,
            streamed.finish_reason,
            streamed.usage,
            &streamed.message
        )
    );

    let requests = fake.requests().await;
    let recorded = fixture_request_body("bedrock/converse-stream-tools");
    assert_eq!(
        requests[0].body, recorded,
        "the whole body equals the real client's"
    );
    assert_eq!(
        requests[0].path,
        "/model/us.anthropic.claude-3-sonnet-20240229-v1%3A0/converse-stream"
    );
    assert_eq!(requests[1].body, recorded);
    assert!(requests[1].path.ends_with("-v1%3A0/converse"));

    guard.flush().await;
    let spans = otlp.wait_for_spans(2, WAIT).await;
    let chat = span(&spans, &streamed.span_id);
    assert_eq!(chat.attr_str("gen_ai.provider.name"), Some("aws.bedrock"));
    assert_eq!(
        chat.attr_str("gen_ai.request.model"),
        Some("anthropic.claude-3-sonnet-20240229-v1:0")
    );
    assert!(
        chat.attr_f64("gen_ai.response.time_to_first_chunk")
            .unwrap()
            > 0.0
    );
    assert_eq!(
        chat.attr_str_array("gen_ai.response.finish_reasons"),
        Some(vec!["tool_call".to_owned()])
    );
    let output: Value =
        serde_json::from_str(chat.attr_str("gen_ai.output.messages").unwrap()).unwrap();
    assert_eq!(output[0]["parts"][1]["name"], "get_weather", "{output}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The SigV4 `Authorization` header for `request`, derived step by step from the
/// specification (canonical request, string to sign, signing key), independently of
/// the SDK. Only the headers tracia promises to sign are signed.
fn expected_authorization(
    request: &support::RecordedRequest,
    access_key: &str,
    secret: &str,
    region: &str,
) -> String {
    let date_time = request.header("x-amz-date").expect("x-amz-date");
    let date = &date_time[..8];
    let signed = ["content-type", "host", "x-amz-date", "x-amz-security-token"];
    let canonical_headers: String = signed
        .iter()
        .map(|h| format!("{h}:{}\n", request.header(h).unwrap().trim()))
        .collect();
    // Every path segment is URI-encoded once more: `%3A` on the wire is `%253A` here.
    let canonical_path = request.path.replace('%', "%25");
    let canonical_request = [
        "POST",
        &canonical_path,
        "",
        &canonical_headers,
        &signed.join(";"),
        &hex(&Sha256::digest(&request.raw_body)),
    ]
    .join("\n");
    let scope = format!("{date}/{region}/bedrock/aws4_request");
    let string_to_sign = [
        "AWS4-HMAC-SHA256",
        date_time,
        &scope,
        &hex(&Sha256::digest(canonical_request.as_bytes())),
    ]
    .join("\n");
    let key = [region, "bedrock", "aws4_request"]
        .iter()
        .fold(hmac(format!("AWS4{secret}").as_bytes(), date), |k, part| {
            hmac(&k, part)
        });
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={}, Signature={}",
        signed.join(";"),
        hex(&hmac(&key, &string_to_sign))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_key_requests_are_sigv4_signed_over_the_double_encoded_path() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    fake.enqueue_fixture("bedrock/converse-meta");
    let (access_key, secret) = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    let creds = AwsCredentials::new(access_key, secret).with_session_token("session-token-1");
    let tracia = bedrock(&fake, |b| b.with_aws_credentials(creds));
    let result = tracia
        .run_local(RunLocal::new("meta.llama3-2-1b-instruct-v1:0").user("Tell me a joke"))
        .await
        .unwrap();
    assert!(result.text.starts_with("Why did the OpenTelemetry trace"));

    let sent = &fake.requests().await[0];
    assert_eq!(
        sent.path,
        "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse"
    );
    let authorization = sent.header("authorization").unwrap();
    assert_eq!(
        authorization,
        expected_authorization(sent, access_key, secret, "us-east-1")
    );
    assert!(
        authorization.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"),
        "{authorization}"
    );
    assert_eq!(sent.header("x-amz-security-token"), Some("session-token-1"));
    assert!(sent.header("x-amz-content-sha256").is_none());
    let traceparent = sent
        .header("traceparent")
        .expect("traceparent injected after signing");
    assert!(traceparent.contains(&result.span_id[3..]), "{traceparent}");
    assert!(!authorization.contains("traceparent"));

    guard.flush().await;
    let spans = otlp.wait_for_spans(1, WAIT).await;
    let chat = span(&spans, &result.span_id);
    assert!(traceparent.contains(&chat.trace_id), "{traceparent}");
    assert_eq!(chat.attr_str("gen_ai.provider.name"), Some("aws.bedrock"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_wins_over_aws_credentials_and_neither_is_a_typed_error() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let creds = || AwsCredentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    fake.enqueue_fixture("bedrock/converse-meta");
    let input = || RunLocal::new("amazon.nova-lite-v1:0").user("hi");
    bedrock(&fake, |b| b.with_aws_credentials(creds()))
        .run_local(input().provider_api_key("per-call-key"))
        .await
        .unwrap();
    let sent = &fake.requests().await[0];
    assert_eq!(sent.header("authorization"), Some("Bearer per-call-key"));
    assert!(sent.header("x-amz-date").is_none());

    let e = bedrock(&fake, |b| b).run_local(input()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::MissingProviderApiKey);
    for option in [
        "BEDROCK_API_KEY",
        "provider_api_key",
        "AWS_ACCESS_KEY_ID",
        "with_aws_credentials",
    ] {
        assert!(e.message().contains(option), "{e} should name {option}");
    }
    assert_eq!(fake.request_count(), 1, "nothing sent without credentials");

    // A provider echoing the key in its error never gets it into the error.
    fake.enqueue(
        403,
        "application/json",
        json!({"message": format!("Invalid API key: {KEY}")}).to_string(),
    );
    let e = keyed(&fake).run_local(input()).await.unwrap_err();
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(KEY), "key leaked: {text}");
    }
}

/// Bedrock's error answer: `{"message"}` with the error type in `x-amzn-ErrorType`.
fn enqueue_bedrock_error(
    fake: &FakeProvider,
    status: u16,
    kind: &str,
    message: &str,
    extra: &[(&str, &str)],
) {
    let error_type = format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/");
    let mut headers = vec![("x-amzn-ErrorType", error_type.as_str())];
    headers.extend_from_slice(extra);
    fake.enqueue_with_headers(
        status,
        "application/json",
        &headers,
        json!({ "message": message }).to_string(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_errors_are_provider_errors_with_status_and_error_spans() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let cases = [
        (
            401,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
            None,
        ),
        (
            403,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
            None,
        ),
        (
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
            Some("3"),
        ),
        (
            500,
            "InternalServerException",
            "The system encountered an unexpected error during processing. Try your request again.",
            None,
        ),
    ];
    let tracia = keyed(&fake);
    let mut errors = Vec::new();
    for (status, kind, message, retry_after) in cases {
        let extra: Vec<(&str, &str)> = retry_after.iter().map(|r| ("retry-after", *r)).collect();
        enqueue_bedrock_error(&fake, status, kind, message, &extra);
        let stream = status == 429;
        let input = RunLocal::new("amazon.nova-pro-v1:0").user("hi");
        let e = if stream {
            tracia.run_local_stream(input).await.unwrap_err()
        } else {
            tracia.run_local(input).await.unwrap_err()
        };
        assert_eq!(
            (e.code(), e.status()),
            (ErrorCode::ProviderError, Some(status)),
            "{e}"
        );
        assert!(e.message().contains(message), "{e}");
        assert_eq!(
            e.retry_after(),
            retry_after.map(|s| Duration::from_secs(s.parse().unwrap()))
        );
        errors.push(e);
    }
    guard.flush().await;
    let spans = otlp.wait_for_spans(errors.len(), WAIT).await;
    for e in &errors {
        let chat = spans
            .iter()
            .find(|s| s.status_message == e.to_string())
            .unwrap_or_else(|| panic!("an error span for {e}"));
        assert!(chat.is_error());
        assert_eq!(
            chat.attr_str("error.type"),
            Some(e.status().unwrap().to_string().as_str())
        );
        assert_eq!(chat.attr_str("gen_ai.provider.name"), Some("aws.bedrock"));
    }
}

fn frame(headers: &[(&'static str, &'static str)], payload: &'static str) -> Bytes {
    let message = headers.iter().fold(Frame::new(payload), |m, (k, v)| {
        m.add_header(Header::new(*k, HeaderValue::String((*v).into())))
    });
    let mut out = Vec::new();
    write_message_to(&message, &mut out).unwrap();
    out.into()
}

/// The byte ranges of the frames of an event-stream body.
fn frame_ranges(body: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < body.len() {
        let len = u32::from_be_bytes(body[start..start + 4].try_into().unwrap()) as usize;
        ranges.push(start..start + len);
        start += len;
    }
    ranges
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_event_streams_fail_the_stream_with_an_error_span() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let recorded = fixture_response_body("bedrock/converse-stream");
    let frames = frame_ranges(&recorded);
    assert_eq!(frames.len(), 5);
    // The text delta (second frame) arrives whole in every case but the first.
    let after_text = frames[1].end;

    // 1. The connection drops inside the third frame.
    fake.enqueue_truncated("bedrock/converse-stream", after_text + 20);
    // 2. The body ends cleanly, but inside the third frame.
    fake.enqueue(200, EVENT_STREAM, recorded.slice(..after_text + 20));
    // 3. A flipped payload byte in the third frame fails its checksum.
    let mut corrupt = recorded.to_vec();
    corrupt[frames[2].end - 10] ^= 0x01;
    fake.enqueue(200, EVENT_STREAM, corrupt);
    // 4. Bedrock reports a failure mid-stream as an `exception` frame (AWS event-stream
    //    headers `:message-type`/`:exception-type`; payload `{"message"}`).
    let exception = frame(
        &[
            (":message-type", "exception"),
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
        ],
        r#"{"message":"Too many tokens, please wait before trying again."}"#,
    );
    fake.enqueue(
        200,
        EVENT_STREAM,
        [recorded.slice(..after_text), exception].concat(),
    );

    let expected: [(&[ErrorCode], &str); 4] = [
        (&[ErrorCode::ProviderError, ErrorCode::NetworkError], ""),
        (
            &[ErrorCode::ProviderError],
            "the event stream ended in the middle of a message",
        ),
        (&[ErrorCode::ProviderError], "malformed event stream"),
        (
            &[ErrorCode::ProviderError],
            "throttlingException: Too many tokens, please wait before trying again.",
        ),
    ];
    let tracia = keyed(&fake);
    let mut ended = Vec::new();
    for (codes, text) in expected {
        let mut stream = tracia
            .run_local_stream(RunLocal::new("amazon.titan-text-express-v1").user("hi"))
            .await
            .unwrap();
        let span_id = stream.span_id();
        let mut items = Vec::new();
        while let Some(item) = stream.next().await {
            items.push(item);
        }
        let (last, chunks) = items.split_last().expect("an error item");
        let yielded = last.as_ref().unwrap_err();
        assert!(codes.contains(&yielded.code()), "{yielded:?}");
        assert!(
            yielded.message().contains(text),
            "{yielded} should say {text}"
        );
        assert_eq!(chunks.len(), 1, "the text before the break was handed out");
        let e = stream.finish().await.unwrap_err();
        assert_eq!(
            e.to_string(),
            yielded.to_string(),
            "finish() fails the same way"
        );
        ended.push((span_id, e));
    }

    guard.flush().await;
    let spans = otlp.wait_for_spans(ended.len(), WAIT).await;
    for (span_id, e) in &ended {
        let chat = span(&spans, span_id);
        assert!(chat.is_error(), "{e}");
        assert_eq!(chat.status_message, e.to_string());
        assert_eq!(
            chat.attr_str_array("gen_ai.response.finish_reasons"),
            Some(vec!["error".to_owned()])
        );
    }
}

/// An `event` frame as ConverseStream sends it.
fn event(name: &'static str, payload: &'static str) -> Bytes {
    frame(
        &[
            (":event-type", name),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn structured_output_is_a_forced_tool_whose_input_is_the_streamed_answer() {
    let (fake, otlp) = (FakeProvider::start().await, OtlpReceiver::start().await);
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    // The event shapes of the converse-stream-tools recording, answering the forced tool.
    let body = [
        event("messageStart", r#"{"role":"assistant"}"#),
        event(
            "contentBlockStart",
            r#"{"contentBlockIndex":0,"start":{"toolUse":{"name":"tracia_json_response","toolUseId":"tooluse_1"}}}"#,
        ),
        event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"toolUse":{"input":"{\"joke\": \"Knock"}}}"#,
        ),
        event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"toolUse":{"input":" knock\", \"rating\": 7}"}}}"#,
        ),
        event("contentBlockStop", r#"{"contentBlockIndex":0}"#),
        event("messageStop", r#"{"stopReason":"tool_use"}"#),
        event(
            "metadata",
            r#"{"metrics":{"latencyMs":5},"usage":{"inputTokens":40,"outputTokens":12,"totalTokens":52}}"#,
        ),
    ]
    .concat();
    fake.enqueue(200, EVENT_STREAM, body);
    let schema = json!({
        "type": "object",
        "properties": {"joke": {"type": "string"}, "rating": {"type": "integer"}},
        "required": ["joke", "rating"]
    });
    let result = keyed(&fake)
        .run_local_stream(
            RunLocal::new("anthropic.claude-haiku-4-5-20251001-v1:0")
                .user("Tell me a joke")
                .response_format(tracia::ResponseFormat::json_schema(schema.clone())),
        )
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let joke: Value = result.json().unwrap();
    assert_eq!(joke, json!({"joke": "Knock knock", "rating": 7}));
    assert!(result.tool_calls.is_empty(), "{:?}", result.tool_calls);
    assert_eq!(result.finish_reason, FinishReason::Stop);
    assert_eq!(result.usage.total_tokens, 52);

    let sent = &fake.requests().await[0].body;
    assert_eq!(
        sent["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "tracia_json_response"}})
    );
    assert_eq!(
        sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"],
        schema
    );
}
