//! Every provider through the same scenarios, against `FakeProvider` replaying the
//! recorded exchanges, with the spans read from the OTel SDK's in-memory exporter.
//!
//! [`PROVIDERS`] is the one table of providers (model, client, the recording for each
//! scenario); [`SCENARIOS`] is the one list of scenarios. A provider added to the table
//! gets every check; a scenario its recordings cannot support says so in the table, with
//! the reason, and [`the_matrix_names_a_reason_for_every_cell_it_skips`] prints the
//! matrix (`cargo test --test conformance -- --nocapture`).
//!
//! Each scenario is one test running every provider concurrently on the test's thread,
//! under that thread's own subscriber, each call inside a parent span of its own.

mod support;

use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use futures::future::join_all;
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceContextExt};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use support::{FakeProvider, Memory, Reply, fixture_response_body, openai_error_body};
use tracia::{
    Error, FinishReason, Provider, ResponsesEvent, ResponsesResult, ResponsesStream, RunLocal,
    RunResponses, RunResult, RunStream, Tracia,
};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The pause between the events of a paced stream.
const PACE: Duration = Duration::from_millis(10);
/// How long a never-polled stream is held before it is dropped.
const HELD: Duration = Duration::from_millis(150);
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------
// The table of providers

/// Which API of the SDK a provider entry is called through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    /// `run_local` / `run_local_stream`.
    Chat,
    /// `run_responses` / `run_responses_stream`.
    Responses,
}

/// What a recorded answer holds, read from the recording itself.
#[derive(Clone, Copy, Debug)]
struct Expect {
    /// The answer text starts with this ("" for a tools-only answer).
    text_starts: &'static str,
    /// Input and output tokens, when the recording reports usage.
    usage: Option<(i64, i64)>,
    finish: FinishReason,
    /// The tool calls' names, in order.
    tools: &'static [&'static str],
    response_id: Option<&'static str>,
    response_model: Option<&'static str>,
}

/// A recording and what it holds.
#[derive(Clone, Copy, Debug)]
struct Recording {
    fixture: &'static str,
    expect: Expect,
}

/// A scenario's recording, or why this provider's recordings cannot support it.
#[derive(Clone, Copy, Debug)]
enum Support {
    Recorded(Recording),
    NoRecording(&'static str),
}

/// An HTTP error in the provider's own shape.
#[derive(Clone, Copy, Debug)]
struct HttpError {
    status: u16,
    reply: fn(u16) -> Reply,
}

/// One provider: its model, its client against the fake, its recordings.
struct ProviderCase {
    name: &'static str,
    api: Api,
    model: &'static str,
    /// `gen_ai.provider.name`.
    otel_name: &'static str,
    client: fn(&FakeProvider) -> Tracia,
    /// A plain answer and a streamed one.
    text: Recording,
    stream: Recording,
    /// A stream of many text chunks, for the cut-off, dropped, aborted and paced
    /// scenarios (most providers: `stream` again).
    long_stream: Recording,
    tools: Support,
    tools_stream: Support,
    error: HttpError,
}

fn openai_client(fake: &FakeProvider) -> Tracia {
    support::client(fake)
}

fn anthropic_client(fake: &FakeProvider) -> Tracia {
    support::client_with(fake, |b| {
        b.with_api_key(Provider::Anthropic, "sk-ant-api03-test-0123456789abcdef")
            .with_base_url(Provider::Anthropic, fake.url())
    })
}

fn gemini_client(fake: &FakeProvider) -> Tracia {
    support::client_with(fake, |b| {
        b.with_api_key(Provider::Google, "AIzaSyTest-0123456789abcdefghijklmnopq")
            .with_base_url(Provider::Google, fake.url())
    })
}

/// Bedrock in the recordings' region, with a Bedrock API key.
fn bedrock_client(fake: &FakeProvider) -> Tracia {
    support::client_with(fake, |b| {
        b.with_aws_region("us-east-1")
            .with_api_key(
                Provider::AmazonBedrock,
                "ABSKQmVkcm9ja0FQSUtleS10ZXN0LWtleS0wMTIzNDU2Nzg5",
            )
            .with_base_url(Provider::AmazonBedrock, fake.url())
    })
}

fn openai_error(status: u16) -> Reply {
    let body = openai_error_body(
        "Rate limit reached",
        "requests",
        Some("rate_limit_exceeded"),
    );
    Reply::new(status, "application/json", body)
}

fn anthropic_error(status: u16) -> Reply {
    let body = serde_json::json!({
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"
    });
    Reply::new(status, "application/json", body.to_string())
}

fn gemini_error(status: u16) -> Reply {
    let body = serde_json::json!({"error": {
        "code": status, "message": "The model is overloaded.", "status": "UNAVAILABLE"
    }});
    Reply::new(status, "application/json; charset=UTF-8", body.to_string())
}

/// Bedrock's `{"message"}` with the error type in `x-amzn-ErrorType`.
fn bedrock_error(status: u16) -> Reply {
    let body =
        serde_json::json!({"message": "Too many requests, please wait before trying again."});
    Reply::new(status, "application/json", body.to_string()).with_header(
        "x-amzn-ErrorType",
        "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
    )
}

const fn expect(
    text_starts: &'static str,
    usage: Option<(i64, i64)>,
    finish: FinishReason,
    tools: &'static [&'static str],
    response_id: Option<&'static str>,
    response_model: Option<&'static str>,
) -> Expect {
    Expect {
        text_starts,
        usage,
        finish,
        tools,
        response_id,
        response_model,
    }
}

const fn rec(fixture: &'static str, expect: Expect) -> Recording {
    Recording { fixture, expect }
}

use FinishReason::{Stop, ToolCalls};

const OPENAI_STREAM: Recording = rec(
    "openai/chat-stream",
    expect(
        "In the observability departmen",
        Some((10, 50)),
        Stop,
        &[],
        Some("chatcmpl-7UR4UcvmeD79Xva3UxkKkL2es6b5W"),
        Some("gpt-3.5-turbo"),
    ),
);

const ANTHROPIC_STREAM: Recording = rec(
    "anthropic/messages-stream",
    expect(
        "Here's an OpenTelemetry-themed",
        Some((17, 171)),
        Stop,
        &[],
        Some("msg_01MXWxhWoPSgrYhjTuMDM6F1"),
        Some("claude-3-haiku-20240307"),
    ),
);

const GEMINI_STREAM: Recording = rec(
    "google/stream",
    expect(
        "Clementine was no ordinary cal",
        Some((9, 527)),
        Stop,
        &[],
        Some("jNcEavSuHfWA7_UP9-uokQs"),
        Some("gemini-2.0-flash"),
    ),
);

const BEDROCK_TOOLS_STREAM: Recording = rec(
    "bedrock/converse-stream-tools",
    expect(
        "Okay, let me check the weather for Barcelona",
        Some((236, 58)),
        ToolCalls,
        &["get_weather"],
        None,
        None,
    ),
);

const RESPONSES_STREAM: Recording = rec(
    "openai/responses-stream-1",
    expect(
        "Once upon a time, in a enchant",
        Some((18, 79)),
        Stop,
        &[],
        Some("resp_0fef0f8a68937870006911e9ecf124819491634b434678464a"),
        Some("gpt-4.1-nano-2025-04-14"),
    ),
);

/// The one table of providers. The expectations are read off the recordings.
static PROVIDERS: &[ProviderCase] = &[
    ProviderCase {
        name: "openai-chat",
        api: Api::Chat,
        model: "gpt-3.5-turbo",
        otel_name: "openai",
        client: openai_client,
        text: rec(
            "openai/chat-1",
            expect(
                "Why did Opentelemetry break up",
                Some((15, 19)),
                Stop,
                &[],
                Some("chatcmpl-908MD9ivBBLb6EaIjlqwFokntayQK"),
                Some("gpt-3.5-turbo-0125"),
            ),
        ),
        stream: OPENAI_STREAM,
        long_stream: OPENAI_STREAM,
        tools: Support::Recorded(rec(
            "openai/tools-1",
            expect(
                "",
                Some((82, 16)),
                ToolCalls,
                &["get_current_weather"],
                Some("chatcmpl-934OqhoorTmk1VnovIRXQCPk8PUTd"),
                Some("gpt-4-0613"),
            ),
        )),
        tools_stream: Support::Recorded(rec(
            "openai/tools-stream-1",
            expect(
                "",
                None,
                ToolCalls,
                &["get_current_weather"],
                Some("chatcmpl-9g4TmLd49mPoD6c0EnGlhNAp8b0on"),
                Some("gpt-3.5-turbo-0125"),
            ),
        )),
        error: HttpError {
            status: 429,
            reply: openai_error,
        },
    },
    ProviderCase {
        name: "anthropic",
        api: Api::Chat,
        model: "claude-3-5-sonnet-20240620",
        otel_name: "anthropic",
        client: anthropic_client,
        text: rec(
            "anthropic/messages",
            expect(
                "Sure, here's a joke about Open",
                Some((17, 220)),
                Stop,
                &[],
                Some("msg_01TPXhkPo8jy6yQMrMhjpiAE"),
                Some("claude-3-opus-20240229"),
            ),
        ),
        stream: ANTHROPIC_STREAM,
        long_stream: ANTHROPIC_STREAM,
        tools: Support::Recorded(rec(
            "anthropic/tools",
            expect(
                "Certainly! I'd be happy to hel",
                Some((514, 152)),
                ToolCalls,
                &["get_weather", "get_time"],
                Some("msg_01RBkXFe9TmDNNWThMz2HmGt"),
                Some("claude-3-5-sonnet-20240620"),
            ),
        )),
        tools_stream: Support::Recorded(rec(
            "anthropic/tools-stream",
            expect(
                "Certainly! I can help you with",
                Some((506, 153)),
                ToolCalls,
                &["get_weather", "get_time"],
                Some("msg_0138UNF3YbNp49KkqZtUBWqz"),
                Some("claude-3-5-sonnet-20240620"),
            ),
        )),
        error: HttpError {
            status: 529,
            reply: anthropic_error,
        },
    },
    ProviderCase {
        name: "gemini",
        api: Api::Chat,
        model: "gemini-2.0-flash",
        otel_name: "gcp.gemini",
        client: gemini_client,
        text: rec(
            "google/generate-content",
            expect(
                "AI stands for **Artificial Int",
                // 877 candidate tokens + 1058 thinking tokens: output includes reasoning.
                Some((5, 1935)),
                Stop,
                &[],
                Some("-hk4afOSMZKkjuMPnJWGkAk"),
                Some("gemini-2.5-flash"),
            ),
        ),
        stream: GEMINI_STREAM,
        long_stream: GEMINI_STREAM,
        tools: Support::Recorded(rec(
            "google/tools",
            expect(
                "",
                Some((63, 6)),
                ToolCalls,
                &["get_weather"],
                Some("k9cEavP3CLWnqtsPg8Tg0As"),
                Some("gemini-2.0-flash"),
            ),
        )),
        tools_stream: Support::Recorded(rec(
            "google/tools-stream",
            expect(
                "",
                Some((63, 6)),
                ToolCalls,
                &["get_weather"],
                Some("ldcEapKDBbCH7_UP6LC-6AE"),
                Some("gemini-2.0-flash"),
            ),
        )),
        error: HttpError {
            status: 503,
            reply: gemini_error,
        },
    },
    ProviderCase {
        name: "bedrock",
        api: Api::Chat,
        model: "amazon.titan-text-express-v1",
        otel_name: "aws.bedrock",
        client: bedrock_client,
        // Converse answers carry no response id nor model.
        text: rec(
            "bedrock/converse",
            expect(
                "{ADDRESS} is the capital of {A",
                Some((28, 26)),
                Stop,
                &[],
                None,
                None,
            ),
        ),
        stream: rec(
            "bedrock/converse-stream",
            expect(
                "Hello, {ADDRESS} is the capital",
                Some((28, 22)),
                Stop,
                &[],
                None,
                None,
            ),
        ),
        tools: Support::NoRecording(
            "no recorded non-streamed Converse answer with a toolUse block (only converse-stream-tools)",
        ),
        // converse-stream's answer is a single text delta: too short to drop mid-way.
        long_stream: BEDROCK_TOOLS_STREAM,
        tools_stream: Support::Recorded(BEDROCK_TOOLS_STREAM),
        error: HttpError {
            status: 429,
            reply: bedrock_error,
        },
    },
    ProviderCase {
        name: "openai-responses",
        api: Api::Responses,
        model: "gpt-4.1-nano",
        otel_name: "openai",
        client: openai_client,
        text: rec(
            "openai/responses-1",
            expect(
                "The capital of France is Paris.",
                Some((14, 8)),
                Stop,
                &[],
                Some("resp_685ff88d1f7c8199980b00a1f8b7467b05baa2d6acc60d4f"),
                Some("gpt-4.1-nano-2025-04-14"),
            ),
        ),
        stream: RESPONSES_STREAM,
        long_stream: RESPONSES_STREAM,
        tools: Support::Recorded(rec(
            "openai/responses-tools-1",
            expect(
                "",
                Some((58, 44)),
                ToolCalls,
                &["get_weather", "get_weather"],
                Some("resp_685ff8928dc4819aac45e085ba66838101c537ddeff5c2a2"),
                Some("gpt-4.1-nano-2025-04-14"),
            ),
        )),
        tools_stream: Support::NoRecording(
            "no recorded Responses stream with a function call (responses-stream-1/-2 are text)",
        ),
        error: HttpError {
            status: 429,
            reply: openai_error,
        },
    },
];

// ---------------------------------------------------------------------------------
// The list of scenarios

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// A plain (non-streamed) answer.
    Text,
    /// A streamed answer assembles to what the recording holds, and its span carries
    /// what the plain call's span carries.
    StreamAssembled,
    /// A plain answer with tool calls.
    ToolCalls,
    /// A streamed answer with tool calls, assembled from their fragments.
    ToolCallsStream,
    /// The provider's error status: an error span with `error.type` and `exception`.
    HttpError,
    /// The body cut mid-stream: an error span with the partial text, finish `error`.
    StreamCutOff,
    /// Dropped after two chunks: one aborted error span, ended at the drop.
    StreamDropped,
    /// Aborted after two chunks: the result says `Aborted`, the span `error`.
    StreamAborted,
    /// Events paced apart: the span covers them, TTFT inside, latency = duration.
    PacedStream,
    /// Opened, never polled, dropped after a known hold: the span ends at the drop.
    NeverPolledDrop,
}

static SCENARIOS: &[Scenario] = &[
    Scenario::Text,
    Scenario::StreamAssembled,
    Scenario::ToolCalls,
    Scenario::ToolCallsStream,
    Scenario::HttpError,
    Scenario::StreamCutOff,
    Scenario::StreamDropped,
    Scenario::StreamAborted,
    Scenario::PacedStream,
    Scenario::NeverPolledDrop,
];

impl ProviderCase {
    /// What a scenario replays for this provider, or why it cannot.
    fn support(&self, scenario: Scenario) -> Support {
        match scenario {
            Scenario::ToolCalls => self.tools,
            Scenario::ToolCallsStream => self.tools_stream,
            Scenario::Text | Scenario::HttpError => Support::Recorded(self.text),
            Scenario::StreamAssembled => Support::Recorded(self.stream),
            Scenario::StreamCutOff
            | Scenario::StreamDropped
            | Scenario::StreamAborted
            | Scenario::PacedStream
            | Scenario::NeverPolledDrop => Support::Recorded(self.long_stream),
        }
    }
}

// ---------------------------------------------------------------------------------
// Spans, in memory

/// What a call's span records whether or not it streamed (the recordings themselves
/// differ in usage details, fingerprints and the like, checked per recording).
const SHARED_KEYS: &[&str] = &[
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.response.finish_reasons",
    "gen_ai.response.id",
    "gen_ai.response.model",
    "server.address",
    "server.port",
    "tracia.provider",
    "openai.api.type",
];

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn attr_str(span: &SpanData, key: &str) -> Option<String> {
    attr(span, key).map(|v| v.as_str().into_owned())
}

fn attr_i64(span: &SpanData, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(Value::I64(v)) => Some(*v),
        _ => None,
    }
}

fn attr_strings(span: &SpanData, key: &str) -> Option<Vec<String>> {
    match attr(span, key) {
        Some(Value::Array(opentelemetry::Array::String(v))) => {
            Some(v.iter().map(|s| s.as_str().to_owned()).collect())
        }
        _ => None,
    }
}

fn duration(span: &SpanData) -> Duration {
    span.end_time.duration_since(span.start_time).unwrap()
}

// ---------------------------------------------------------------------------------
// Calls, whichever API

/// What every API's result says, in one shape.
#[derive(Debug)]
struct Outcome {
    text: String,
    usage: (u64, u64),
    finish: FinishReason,
    tools: Vec<String>,
    response_id: Option<String>,
    response_model: Option<String>,
    span_id: String,
    trace_id: String,
    latency_ms: u64,
    aborted: bool,
}

impl From<RunResult> for Outcome {
    fn from(r: RunResult) -> Self {
        Self {
            usage: (r.usage.input_tokens, r.usage.output_tokens),
            finish: r.finish_reason,
            tools: r.tool_calls.into_iter().map(|c| c.name).collect(),
            text: r.text,
            response_id: r.response_id,
            response_model: r.response_model,
            span_id: r.span_id,
            trace_id: r.trace_id,
            latency_ms: r.latency_ms,
            aborted: r.aborted,
        }
    }
}

impl From<ResponsesResult> for Outcome {
    fn from(r: ResponsesResult) -> Self {
        Self {
            usage: (r.usage.input_tokens, r.usage.output_tokens),
            finish: r.finish_reason,
            tools: r.tool_calls.into_iter().map(|c| c.name).collect(),
            text: r.text,
            response_id: r.response_id,
            response_model: r.response_model,
            span_id: r.span_id,
            trace_id: r.trace_id,
            latency_ms: r.latency_ms,
            aborted: r.aborted,
        }
    }
}

/// A stream of either API; its items are the answer's text chunks.
enum AnyStream {
    Chat(RunStream),
    Responses(ResponsesStream),
}

impl AnyStream {
    fn span_id(&self) -> String {
        match self {
            Self::Chat(s) => s.span_id(),
            Self::Responses(s) => s.span_id(),
        }
    }

    fn abort(&self) {
        match self {
            Self::Chat(s) => s.abort(),
            Self::Responses(s) => s.abort(),
        }
    }

    /// The next text chunk (a Responses stream's other events are passed over).
    async fn next_text(&mut self) -> Option<Result<String, Error>> {
        match self {
            Self::Chat(s) => s.next().await,
            Self::Responses(s) => loop {
                match s.next().await? {
                    Ok(ResponsesEvent::TextDelta(text)) => return Some(Ok(text)),
                    Ok(_) => {}
                    Err(e) => return Some(Err(e)),
                }
            },
        }
    }

    async fn finish(self) -> Result<Outcome, Error> {
        match self {
            Self::Chat(s) => s.finish().await.map(Outcome::from),
            Self::Responses(s) => s.finish().await.map(Outcome::from),
        }
    }
}

/// One provider's run of a scenario: its fake server, its client and its parent span.
struct Run<'a> {
    case: &'a ProviderCase,
    fake: FakeProvider,
    tracia: Tracia,
    parent: tracing::Span,
    /// Before any call of the run: what a result's latency cannot exceed.
    created: Instant,
}

impl<'a> Run<'a> {
    async fn new(case: &'a ProviderCase, scenario: Scenario) -> Self {
        let fake = FakeProvider::start().await;
        let tracia = (case.client)(&fake);
        let parent = tracing::info_span!("conformance", provider = case.name, ?scenario);
        Self {
            created: Instant::now(),
            case,
            fake,
            tracia,
            parent,
        }
    }

    fn parent_context(&self) -> SpanContext {
        self.parent.context().span().span_context().clone()
    }

    /// A plain call, inside the parent span.
    async fn call(&self) -> Result<Outcome, Error> {
        let (model, tracia) = (self.case.model, &self.tracia);
        let call = async move {
            match self.case.api {
                Api::Chat => tracia
                    .run_local(RunLocal::new(model).user("hi"))
                    .await
                    .map(Outcome::from),
                Api::Responses => tracia
                    .run_responses(RunResponses::new(model).user("hi"))
                    .await
                    .map(Outcome::from),
            }
        };
        call.instrument(self.parent.clone()).await
    }

    /// A streaming call opened inside the parent span.
    async fn open(&self) -> Result<AnyStream, Error> {
        let (model, tracia) = (self.case.model, &self.tracia);
        let open = async move {
            match self.case.api {
                Api::Chat => tracia
                    .run_local_stream(RunLocal::new(model).user("hi"))
                    .await
                    .map(AnyStream::Chat),
                Api::Responses => tracia
                    .run_responses_stream(RunResponses::new(model).user("hi"))
                    .await
                    .map(AnyStream::Responses),
            }
        };
        open.instrument(self.parent.clone()).await
    }

    /// What every span of this provider carries: name, kind, place in the trace,
    /// provider and requested model.
    fn check_common(&self, span: &SpanData) {
        let who = self.case.name;
        assert_eq!(span.name, format!("chat {}", self.case.model), "{who}");
        assert_eq!(span.span_kind, SpanKind::Client, "{who}");
        let parent = self.parent_context();
        assert_eq!(span.parent_span_id, parent.span_id(), "{who}: parent");
        assert_eq!(
            span.span_context.trace_id(),
            parent.trace_id(),
            "{who}: trace"
        );
        assert_eq!(
            attr_str(span, "gen_ai.provider.name").as_deref(),
            Some(self.case.otel_name),
            "{who}"
        );
        assert_eq!(
            attr_str(span, "gen_ai.request.model").as_deref(),
            Some(self.case.model),
            "{who}"
        );
        assert!(span.start_time <= span.end_time, "{who}");
        if let Some(Value::F64(ttft)) = attr(span, "gen_ai.response.time_to_first_chunk") {
            let first = span.start_time + Duration::from_secs_f64(*ttft);
            assert!(
                *ttft >= 0.0 && first <= span.end_time,
                "{who}: start ≤ start + TTFT ≤ end ({ttft} s in {:?})",
                duration(span)
            );
        }
    }

    /// A call that succeeded: the result holds the recording, the span says the same,
    /// and the result's latency is the span's duration.
    fn check_success(&self, span: &SpanData, outcome: &Outcome, expect: &Expect) {
        let who = self.case.name;
        self.check_common(span);
        assert!(
            outcome.text.starts_with(expect.text_starts),
            "{who}: {:?}",
            outcome.text
        );
        assert_eq!(outcome.finish, expect.finish, "{who}");
        assert_eq!(outcome.tools, expect.tools, "{who}");
        assert!(!outcome.aborted, "{who}");
        assert_eq!(outcome.response_id.as_deref(), expect.response_id, "{who}");
        assert_eq!(
            outcome.response_model.as_deref(),
            expect.response_model,
            "{who}"
        );
        assert_eq!(outcome.trace_id, tracia_trace_id(span), "{who}");

        assert!(
            matches!(span.status, Status::Unset | Status::Ok),
            "{who}: {:?}",
            span.status
        );
        assert!(span.events.events.is_empty(), "{who}: no exception event");
        assert_eq!(
            attr_str(span, "gen_ai.response.id").as_deref(),
            expect.response_id,
            "{who}"
        );
        assert_eq!(
            attr_str(span, "gen_ai.response.model").as_deref(),
            expect.response_model,
            "{who}"
        );
        let tokens = (
            attr_i64(span, "gen_ai.usage.input_tokens"),
            attr_i64(span, "gen_ai.usage.output_tokens"),
        );
        match expect.usage {
            Some((input, output)) => {
                assert_eq!(tokens, (Some(input), Some(output)), "{who}");
                assert_eq!(outcome.usage, (input as u64, output as u64), "{who}");
            }
            None => assert_eq!(tokens, (None, None), "{who}: no usage recorded"),
        }
        let otel_finish = match expect.finish {
            ToolCalls => "tool_call",
            _ => "stop",
        };
        assert_eq!(
            attr_strings(span, "gen_ai.response.finish_reasons"),
            Some(vec![otel_finish.to_owned()]),
            "{who}"
        );
        assert_latency(span, outcome.latency_ms, who, self.created);
    }

    /// A call that failed: an error span saying why, with the `exception` event.
    fn check_failure(&self, span: &SpanData, error: &Error, error_type: &str) {
        let who = self.case.name;
        self.check_common(span);
        assert_eq!(
            span.status,
            Status::error(error.to_string()),
            "{who}: status"
        );
        assert_eq!(
            attr_str(span, "error.type").as_deref(),
            Some(error_type),
            "{who}"
        );
        let exceptions: Vec<_> = span
            .events
            .events
            .iter()
            .filter(|e| e.name == "exception")
            .collect();
        assert_eq!(exceptions.len(), 1, "{who}: one exception event");
        let has = |key: &str, value: String| {
            exceptions[0]
                .attributes
                .contains(&KeyValue::new(key.to_owned(), value))
        };
        assert!(
            has("exception.type", error.code().as_str().to_owned()),
            "{who}: {:?}",
            exceptions[0].attributes
        );
        assert!(has("exception.message", error.to_string()), "{who}");
    }
}

fn recording(case: &ProviderCase, scenario: Scenario) -> Recording {
    match case.support(scenario) {
        Support::Recorded(r) => r,
        Support::NoRecording(why) => panic!("{}: {scenario:?} has no recording: {why}", case.name),
    }
}

// ---------------------------------------------------------------------------------
// The scenarios

async fn run(case: &ProviderCase, scenario: Scenario, cap: &Memory) {
    if let Support::NoRecording(_) = case.support(scenario) {
        return; // Listed in the table with its reason; printed by the matrix test.
    }
    let run = Run::new(case, scenario).await;
    let who = case.name;
    match scenario {
        Scenario::Text | Scenario::ToolCalls => {
            let recorded = recording(case, scenario);
            run.fake.enqueue_fixture(recorded.fixture);
            let outcome = run.call().await.unwrap();
            run.check_success(&cap.span(&outcome.span_id), &outcome, &recorded.expect);
        }
        Scenario::StreamAssembled | Scenario::ToolCallsStream => {
            let recorded = recording(case, scenario);
            run.fake.enqueue_fixture(recorded.fixture);
            let mut stream = run.open().await.unwrap();
            let mut chunks = String::new();
            while let Some(chunk) = stream.next_text().await {
                chunks.push_str(&chunk.unwrap());
            }
            let outcome = stream.finish().await.unwrap();
            assert_eq!(outcome.text, chunks, "{who}: the text is its chunks");
            let streamed = cap.span(&outcome.span_id);
            run.check_success(&streamed, &outcome, &recorded.expect);
            assert!(
                attr(&streamed, "gen_ai.response.time_to_first_chunk").is_some(),
                "{who}"
            );

            // The plain call of the same kind: its span carries the same attributes.
            let plain = match scenario {
                Scenario::StreamAssembled => Support::Recorded(case.text),
                _ => case.tools,
            };
            if let Support::Recorded(plain) = plain {
                run.fake.enqueue_fixture(plain.fixture);
                let whole = run.call().await.unwrap();
                let whole = cap.span(&whole.span_id);
                for key in SHARED_KEYS {
                    assert_eq!(
                        attr(&streamed, key).is_some(),
                        attr(&whole, key).is_some(),
                        "{who}: {key} on both spans or neither"
                    );
                }
                assert_eq!(
                    attr(&streamed, "gen_ai.request.stream"),
                    Some(&Value::Bool(true))
                );
                assert!(attr(&whole, "gen_ai.request.stream").is_none(), "{who}");
            }
        }
        Scenario::HttpError => {
            let status = case.error.status;
            run.fake.enqueue_reply((case.error.reply)(status));
            let error = run.call().await.unwrap_err();
            assert_eq!(error.status(), Some(status), "{who}: {error}");
            let spans = cap.spans();
            let parent = run.parent_context().span_id();
            let span = spans
                .iter()
                .find(|s| s.parent_span_id == parent)
                .unwrap_or_else(|| panic!("{who}: the failed call's span"));
            run.check_failure(span, &error, &status.to_string());
            assert!(
                attr(span, "gen_ai.response.finish_reasons").is_none(),
                "{who}"
            );
        }
        Scenario::StreamCutOff => {
            let recorded = recording(case, scenario);
            let body = fixture_response_body(recorded.fixture);
            run.fake
                .enqueue_reply(Reply::fixture(recorded.fixture).truncated(body.len() / 2));
            let mut stream = run.open().await.unwrap();
            let span_id = stream.span_id();
            let mut chunks = String::new();
            let mut yielded = None;
            while let Some(item) = stream.next_text().await {
                match item {
                    Ok(chunk) => chunks.push_str(&chunk),
                    Err(e) => yielded = Some(e),
                }
            }
            let yielded = yielded.unwrap_or_else(|| panic!("{who}: a cut stream yields an error"));
            let error = stream.finish().await.unwrap_err();
            assert_eq!(error.to_string(), yielded.to_string(), "{who}");
            assert!(!chunks.is_empty(), "{who}: half the body carries some text");
            let span = cap.span(&span_id);
            run.check_failure(&span, &error, &error.code().as_str().to_ascii_lowercase());
            assert_eq!(
                attr_strings(&span, "gen_ai.response.finish_reasons"),
                Some(vec!["error".to_owned()]),
                "{who}"
            );
            let output = attr_str(&span, "gen_ai.output.messages").unwrap();
            assert!(
                output.contains(&json_escaped(&chunks)),
                "{who}: partial text kept: {output}"
            );
        }
        Scenario::StreamDropped | Scenario::StreamAborted => {
            let recorded = recording(case, scenario);
            run.fake
                .enqueue_reply(Reply::fixture(recorded.fixture).chunked(PACE));
            let mut stream = run.open().await.unwrap();
            let span_id = stream.span_id();
            let mut chunks = String::new();
            for _ in 0..2 {
                let chunk = stream.next_text().await;
                chunks.push_str(
                    &chunk
                        .unwrap_or_else(|| panic!("{who}: two chunks"))
                        .unwrap(),
                );
            }
            let before = SystemTime::now();
            let outcome = if scenario == Scenario::StreamDropped {
                drop(stream);
                None
            } else {
                stream.abort();
                Some(stream.finish().await.unwrap())
            };
            let after = SystemTime::now();
            // Ended once: `span` finds it exported exactly once.
            let span = &cap.span(&span_id);
            let why = match &outcome {
                None => "[ABORTED] Stream dropped before completion",
                Some(_) => "[ABORTED] Stream aborted",
            };
            assert_eq!(span.status, Status::error(why), "{who}");
            assert_eq!(
                attr(span, "tracia.stream.aborted"),
                Some(&Value::Bool(true)),
                "{who}"
            );
            assert_eq!(
                attr_str(span, "error.type").as_deref(),
                Some("aborted"),
                "{who}"
            );
            run.check_common(span);
            // Ended at the drop (or abort): the end stamp may sit up to 1 ms later so
            // that the span and the latency round alike.
            assert!(
                span.end_time >= before && span.end_time <= after + Duration::from_millis(1),
                "{who}: ended at the drop"
            );
            assert_eq!(
                attr_strings(span, "gen_ai.response.finish_reasons"),
                Some(vec!["error".to_owned()]),
                "{who}"
            );
            let output = attr_str(span, "gen_ai.output.messages").unwrap();
            assert!(output.contains(&json_escaped(&chunks)), "{who}: {output}");
            if let Some(outcome) = outcome {
                assert!(outcome.aborted, "{who}");
                assert_eq!(outcome.finish, FinishReason::Aborted, "{who}");
                assert!(outcome.text.starts_with(&chunks), "{who}");
                assert_latency(span, outcome.latency_ms, who, run.created);
            }
        }
        Scenario::PacedStream => {
            let recorded = recording(case, scenario);
            run.fake
                .enqueue_reply(Reply::fixture(recorded.fixture).chunked(PACE));
            let mut stream = run.open().await.unwrap();
            let mut chunks = String::new();
            while let Some(chunk) = stream.next_text().await {
                chunks.push_str(&chunk.unwrap());
            }
            let ended = SystemTime::now();
            // Asked for well after the end: the latency is still the stream's.
            tokio::time::sleep(HELD).await;
            let outcome = stream.finish().await.unwrap();
            let span = cap.span(&outcome.span_id);
            run.check_success(&span, &outcome, &recorded.expect);
            let sent = &run.fake.wait_for_stream_outcomes(1, WAIT).await[0];
            assert!(sent.completed, "{who}: {sent:?}");
            let pacing = PACE * u32::try_from(sent.events_total - 1).unwrap();
            assert!(
                duration(&span) >= pacing,
                "{who}: the span ({:?}) covers the pacing ({pacing:?})",
                duration(&span)
            );
            // (The end stamp may sit up to 1 ms late, so that span and latency agree.)
            assert!(
                span.end_time <= ended + Duration::from_millis(1),
                "{who}: the span ended with the stream, not at finish()"
            );
            assert_eq!(outcome.text, chunks, "{who}");
        }
        Scenario::NeverPolledDrop => {
            let recorded = recording(case, scenario);
            run.fake
                .enqueue_reply(Reply::fixture(recorded.fixture).chunked(PACE));
            let stream = run.open().await.unwrap();
            let span_id = stream.span_id();
            tokio::time::sleep(HELD).await;
            drop(stream);
            let span = cap.span(&span_id);
            run.check_common(&span);
            assert!(
                duration(&span) >= HELD,
                "{who}: the span ({:?}) ends at the drop, not when the request went out",
                duration(&span)
            );
            assert_eq!(
                attr(&span, "tracia.stream.aborted"),
                Some(&Value::Bool(true)),
                "{who}"
            );
            assert!(matches!(span.status, Status::Error { .. }), "{who}");
        }
    }
}

/// The span's trace id as Tracia writes it: 16 hex digits when the upper half is zero.
fn tracia_trace_id(span: &SpanData) -> String {
    let hex = span.span_context.trace_id().to_string();
    format!(
        "tr_{}",
        hex.strip_prefix("0000000000000000").unwrap_or(&hex)
    )
}

/// Tracia's `latencyMs` is the span's duration; the result's latency is that too, or
/// more only when creating the span stalled (it is counted from just before), and never
/// more than the time since `created`, before the call.
fn assert_latency(span: &SpanData, latency_ms: u64, who: &str, created: Instant) {
    let duration = duration(span).as_millis();
    let latency = u128::from(latency_ms);
    // The end stamp may sit up to 1 ms after the moment it was taken.
    let wall = created.elapsed().as_millis() + 1;
    assert!(
        duration <= latency && latency <= wall,
        "{who}: span {duration} ms <= latency {latency_ms} ms <= {wall} ms since before the call"
    );
    let payload = tracia::span_payload(span).expect("an LLM span has a Tracia payload");
    assert_eq!(
        payload["latencyMs"].as_u64().map(u128::from),
        Some(duration),
        "{who}: Tracia's latencyMs is the span's duration"
    );
}

/// `text` as it appears inside a JSON string.
fn json_escaped(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap();
    quoted[1..quoted.len() - 1].to_owned()
}

/// Runs a scenario for every provider at once, on this thread, under one capture.
async fn every_provider(scenario: Scenario) {
    let cap = Memory::install();
    join_all(PROVIDERS.iter().map(|case| run(case, scenario, &cap))).await;
}

macro_rules! scenario_tests {
    ($($test:ident => $scenario:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $test() {
                every_provider(Scenario::$scenario).await;
            }
        )*

        /// Each scenario of the list has its test above.
        const TESTED: &[Scenario] = &[$(Scenario::$scenario),*];
    };
}

scenario_tests! {
    plain_text => Text,
    stream_assembles_what_was_recorded => StreamAssembled,
    tool_calls => ToolCalls,
    tool_calls_streamed => ToolCallsStream,
    http_error => HttpError,
    stream_cut_off => StreamCutOff,
    stream_dropped_after_two_chunks => StreamDropped,
    stream_aborted_after_two_chunks => StreamAborted,
    paced_stream => PacedStream,
    never_polled_stream_dropped => NeverPolledDrop,
}

#[test]
fn the_matrix_names_a_reason_for_every_cell_it_skips() {
    assert_eq!(TESTED, SCENARIOS, "every scenario has its test");
    let mut matrix = String::from("provider           ");
    for s in SCENARIOS {
        matrix.push_str(&format!("| {s:?} "));
    }
    for case in PROVIDERS {
        matrix.push_str(&format!("\n{:<19}", case.name));
        for &s in SCENARIOS {
            let cell = match case.support(s) {
                Support::Recorded(r) => r.fixture.rsplit('/').next().unwrap().to_owned(),
                Support::NoRecording(why) => {
                    assert!(
                        !why.trim().is_empty(),
                        "{}: {s:?} skipped without a reason",
                        case.name
                    );
                    "n/a (see below)".to_owned()
                }
            };
            matrix.push_str(&format!(
                "| {cell:<width$} ",
                width = format!("{s:?}").len()
            ));
        }
    }
    for case in PROVIDERS {
        for &s in SCENARIOS {
            if let Support::NoRecording(why) = case.support(s) {
                matrix.push_str(&format!("\n{} × {s:?}: {why}", case.name));
            }
        }
    }
    println!("{matrix}");
}
