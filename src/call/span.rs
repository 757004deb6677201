//! The `tracing` span of one LLM call and what it records: the OpenTelemetry GenAI
//! attributes, Tracia's fields, and the call's real span and trace ids.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::call::embedding::RunEmbedding;
use crate::call::run::RunLocal;
use crate::error::Error;
use crate::ids;
use crate::message::{FinishReason, Message, ResponseFormat};
use crate::providers::chat::ChatResponse;
use crate::providers::provider::Provider;
use crate::telemetry::semconv::{self, SemconvMode};
use crate::usage::Usage;

/// Which API of the provider serves a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// The provider's chat API (`run_local`).
    Chat,
    /// OpenAI's Responses API (`run_responses`).
    Responses,
}

impl Api {
    /// `openai.api.type` of a call to OpenAI through this API.
    pub(crate) fn openai_api_type(self) -> &'static str {
        match self {
            Self::Chat => "chat_completions",
            Self::Responses => "responses",
        }
    }
}

/// What the span records beyond the required attributes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpanSettings {
    pub capture_content: bool,
    pub semconv: SemconvMode,
}

/// Where the span goes in the trace tree, from explicit ids or a session.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Placement {
    pub trace_id: Option<TraceId>,
    pub parent_span_id: Option<SpanId>,
    pub span_id: Option<SpanId>,
}

impl Placement {
    fn is_explicit(&self) -> bool {
        self.trace_id.is_some() || self.parent_span_id.is_some()
    }

    /// Adds a call's own ids (they win over a session's), checking their format.
    ///
    /// A parent without a trace joins the ambient trace when there is one (as Tracia's
    /// "the trace id is inherited from the parent span", whose real trace is unknown
    /// here), else the trace named by the parent's own id ([`ids::trace_of_span`]).
    pub fn with_ids(
        mut self,
        span_id: Option<&str>,
        trace_id: Option<&str>,
        parent_span_id: Option<&str>,
    ) -> crate::error::Result<Self> {
        if let Some(id) = span_id {
            self.span_id = Some(ids::parse_span_id(id)?);
        }
        if let Some(id) = trace_id {
            self.trace_id = Some(ids::parse_trace_id(id)?);
        }
        if let Some(id) = parent_span_id {
            self.parent_span_id = Some(ids::parse_span_id(id)?);
        }
        if self.trace_id.is_none() {
            self.trace_id = self.parent_span_id.map(parent_trace);
        }
        Ok(self)
    }
}

/// The trace a parent span without a trace id is placed in: the ambient span's trace,
/// else the one its own id names.
fn parent_trace(parent: SpanId) -> TraceId {
    let ambient = opentelemetry::Context::current();
    let ambient = ambient.span();
    let ambient = ambient.span_context();
    if ambient.is_valid() {
        ambient.trace_id()
    } else {
        ids::trace_of_span(parent)
    }
}

/// The static facts of a call that its span is created with.
pub(crate) struct SpanStart<'a> {
    pub provider: Provider,
    pub server: &'a reqwest::Url,
    pub input: &'a RunLocal,
    /// Messages after interpolation.
    pub messages: &'a [Message],
    pub stream: bool,
    pub send: bool,
    pub placement: Placement,
    pub api: Api,
}

/// The static facts of an embeddings call.
pub(crate) struct EmbeddingsStart<'a> {
    pub provider: Provider,
    pub server: &'a reqwest::Url,
    pub input: &'a RunEmbedding,
    pub send: bool,
    pub placement: Placement,
}

/// The static facts of a `prompts.run` call: a prompt that the Tracia server renders
/// and runs.
pub(crate) struct PromptRunStart<'a> {
    pub slug: &'a str,
    pub version: Option<u32>,
    /// The caller's model override: the only model known (the answer names none).
    pub model: Option<&'a str>,
    /// The Tracia server.
    pub server: &'a reqwest::Url,
    pub session_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub tags: &'a [String],
    /// The conversation sent instead of the template, if any.
    pub messages: Option<&'a [Message]>,
    pub variables: &'a std::collections::BTreeMap<String, String>,
    pub placement: Placement,
}

/// One call's span, with the ids it was exported under.
///
/// Its end is stamped by [`CallSpan::end`], once, when the call is over, not left to
/// `tracing-opentelemetry`, which would take the span's last exit (for a stream, when
/// the request was sent). Dropping an unended `CallSpan` ends it then.
#[derive(Debug)]
pub(crate) struct CallSpan {
    pub span: tracing::Span,
    pub context: opentelemetry::Context,
    pub span_id: SpanId,
    pub trace_id: TraceId,
    settings: SpanSettings,
    started: Started,
    /// The call's duration, set when the span ends.
    ended: OnceLock<Duration>,
}

/// When the span was created: the OpenTelemetry layer stamps its start between
/// these two readings of the same clock (`SystemTime`, the layer's).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started {
    before: SystemTime,
    after: SystemTime,
}

impl Started {
    /// Creates a span with `create`, noting the clock around it.
    fn around(create: impl FnOnce() -> tracing::Span) -> (tracing::Span, Self) {
        let before = SystemTime::now();
        let span = create();
        let after = SystemTime::now();
        (span, Self { before, after })
    }
}

const MILLISECOND: Duration = Duration::from_millis(1);

/// The end stamp for `now` and the call's duration counted from `started.before`.
///
/// The span's exported start lies somewhere in `[before, after]`. Keeping the end's
/// sub-millisecond part (counted from `before`) at least `after - before` wide, by
/// moving the end that little later, makes the span's duration and the returned
/// duration the same whole number of milliseconds, so the result's `latency_ms` and
/// Tracia's `latencyMs` (read from the span) agree. Only when creating the span took a
/// millisecond or more (a stalled thread) can the result's be more, by at most that
/// stall: where in that window the layer stamped the start is not visible here.
fn end_stamp(started: Started, now: SystemTime) -> (SystemTime, Duration) {
    let since = now.duration_since(started.before).unwrap_or_default();
    let slack = started
        .after
        .duration_since(started.before)
        .unwrap_or_default();
    let fraction = Duration::from_nanos(u64::from(since.subsec_nanos() % 1_000_000));
    let shift = if slack < MILLISECOND {
        slack.saturating_sub(fraction)
    } else {
        Duration::ZERO
    };
    (now + shift, since + shift)
}

/// Whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// Every field is declared here, up front: `record` on an undeclared field is silently lost.
macro_rules! chat_span {
    ($($parent:tt)*) => {
        tracing::info_span!(
            target: "tracia",
            $($parent)*
            "chat",
            otel.name = Empty,
            otel.kind = "client",
            otel.status_code = Empty,
            otel.status_description = Empty,
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = Empty,
            gen_ai.request.model = Empty,
            server.address = Empty,
            server.port = Empty,
            gen_ai.request.temperature = Empty,
            gen_ai.request.top_p = Empty,
            gen_ai.request.max_tokens = Empty,
            gen_ai.request.stream = Empty,
            gen_ai.output.type = Empty,
            gen_ai.response.id = Empty,
            gen_ai.response.model = Empty,
            gen_ai.response.time_to_first_chunk = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            gen_ai.usage.cache_read.input_tokens = Empty,
            gen_ai.usage.cache_creation.input_tokens = Empty,
            gen_ai.usage.cache_write.input_tokens = Empty,
            gen_ai.usage.reasoning.output_tokens = Empty,
            gen_ai.input.messages = Empty,
            gen_ai.output.messages = Empty,
            gen_ai.tool.definitions = Empty,
            gen_ai.conversation.id = Empty,
            session.id = Empty,
            user.id = Empty,
            error.type = Empty,
            openai.api.type = Empty,
            openai.response.system_fingerprint = Empty,
            openai.response.service_tier = Empty,
            aws.bedrock.guardrail.id = Empty,
            tracia.provider = Empty,
            tracia.variables = Empty,
            tracia.cost_usd = Empty,
            tracia.stream.aborted = Empty,
            // `prompts.run`: the prompt the Tracia server ran, and its HTTP answer.
            gen_ai.prompt.name = Empty,
            gen_ai.prompt.version = Empty,
            tracia.prompt.run = Empty,
            http.response.status_code = Empty,
        )
    };
}

macro_rules! embeddings_span {
    ($($parent:tt)*) => {
        tracing::info_span!(
            target: "tracia",
            $($parent)*
            "embeddings",
            otel.name = Empty,
            otel.kind = "client",
            otel.status_code = Empty,
            otel.status_description = Empty,
            gen_ai.operation.name = "embeddings",
            gen_ai.provider.name = Empty,
            gen_ai.request.model = Empty,
            server.address = Empty,
            server.port = Empty,
            gen_ai.embeddings.dimension.count = Empty,
            gen_ai.response.model = Empty,
            gen_ai.usage.input_tokens = Empty,
            session.id = Empty,
            user.id = Empty,
            error.type = Empty,
            tracia.provider = Empty,
            tracia.cost_usd = Empty,
            tracia.embeddings.input = Empty,
            tracia.embeddings.count = Empty,
        )
    };
}

/// Creates a span with one of the field-declaring macros above: none when the call is
/// not traced, a clean root when explicit ids place it (they win over the ambient
/// span), else a child of the current span.
macro_rules! new_span {
    ($declare:ident, $send:expr, $placement:expr) => {
        match ($send, $placement.is_explicit()) {
            (false, _) => tracing::Span::none(),
            (true, true) => $declare!(parent: None,),
            (true, false) => $declare!(),
        }
    };
}

/// The attributes every GenAI client span carries, whatever the operation.
pub(crate) struct SpanTarget<'a> {
    pub operation: &'static str,
    pub provider: Provider,
    pub model: &'a str,
    pub server: &'a reqwest::Url,
}

impl CallSpan {
    /// Creates the chat span, places it in the trace and starts it, so its ids are
    /// known before the request goes out (they go into `traceparent` and the result).
    pub fn start(start: SpanStart<'_>, settings: SpanSettings) -> Self {
        let SpanStart {
            provider,
            server,
            input,
            messages,
            stream,
            send,
            placement,
            api,
        } = start;
        let (span, started) = Started::around(|| new_span!(chat_span, send, placement));
        let target = SpanTarget {
            operation: "chat",
            provider,
            model: &input.model,
            server,
        };
        record_target(&span, &target);
        if provider == Provider::OpenAi {
            span.record(semconv::OPENAI_API_TYPE, api.openai_api_type());
        }
        record_request(&span, input, settings, messages);
        if stream {
            span.record(semconv::REQUEST_STREAM, true);
        }
        Self::place(span, started, placement, settings, send)
    }

    /// Creates the embeddings span, placed and started like a chat span. The texts go
    /// on `tracia.embeddings.input` only with content capture on (the semconv keeps
    /// content off embedding spans; Tracia shows the inputs).
    pub fn start_embeddings(start: EmbeddingsStart<'_>, settings: SpanSettings) -> Self {
        let input = start.input;
        let (span, started) =
            Started::around(|| new_span!(embeddings_span, start.send, start.placement));
        record_target(
            &span,
            &SpanTarget {
                operation: "embeddings",
                provider: start.provider,
                model: &input.model,
                server: start.server,
            },
        );
        if let Some(n) = input.dimensions {
            span.record(semconv::EMBEDDINGS_DIMENSION_COUNT, i64::from(n));
        }
        if let Some(session) = &input.options.session_id {
            span.record(semconv::SESSION_ID, session.as_str());
        }
        if let Some(user) = &input.options.user_id {
            span.record(semconv::USER_ID, user.as_str());
        }
        if !input.options.tags.is_empty() {
            string_array(
                &span,
                semconv::TRACIA_TAGS,
                input.options.tags.iter().cloned(),
            );
        }
        string_array(&span, semconv::REQUEST_ENCODING_FORMATS, ["float"]);
        if settings.capture_content {
            let texts = semconv::bounded_json_of(&input.texts);
            span.record(semconv::TRACIA_EMBEDDINGS_INPUT, texts);
        }
        Self::place(span, started, start.placement, settings, start.send)
    }

    /// Creates the chat span of a prompt run by the Tracia server, placed and started
    /// like a chat span. It carries `tracia.prompt.run`, so that exporters know the
    /// server recorded the run (tokens and cost) itself; model and provider only when
    /// the caller overrides the model, since neither request nor answer name them else.
    pub fn start_prompt_run(start: PromptRunStart<'_>, settings: SpanSettings) -> Self {
        let (span, started) = Started::around(|| new_span!(chat_span, true, start.placement));
        let provider = start.model.and_then(|m| Provider::resolve(m, None).ok());
        match (start.model, provider) {
            (Some(model), Some(provider)) => record_target(
                &span,
                &SpanTarget {
                    operation: "chat",
                    provider,
                    model,
                    server: start.server,
                },
            ),
            (model, _) => {
                record_operation(&span, "chat", model);
                record_server(&span, start.server);
            }
        }
        span.record(semconv::PROMPT_NAME, start.slug);
        if let Some(version) = start.version {
            span.record(semconv::PROMPT_VERSION, version.to_string());
        }
        span.record(semconv::TRACIA_PROMPT_RUN, true);
        record_conversation(&span, start.session_id, start.user_id, start.tags);
        if settings.capture_content && !span.is_disabled() {
            if let Some(messages) = start.messages {
                span.record(semconv::INPUT_MESSAGES, semconv::input_messages(messages));
            }
            if !start.variables.is_empty() {
                let vars = semconv::bounded_json_of(start.variables);
                span.record(semconv::TRACIA_VARIABLES, vars);
            }
        }
        Self::place(span, started, start.placement, settings, true)
    }

    /// Records what a prompt run's answer adds before its response: the version that
    /// ran and, when the caller sent no conversation, the input the server rendered.
    pub fn record_prompt_run(&self, version: Option<u32>, rendered: Option<&[Message]>) {
        if let Some(version) = version {
            self.span
                .record(semconv::PROMPT_VERSION, version.to_string());
        }
        if let Some(messages) = rendered
            && self.settings.capture_content
            && !self.span.is_disabled()
        {
            self.span
                .record(semconv::INPUT_MESSAGES, semconv::input_messages(messages));
        }
    }

    /// Records an embeddings response: dimensions, count, usage and cost.
    pub fn record_embeddings(
        &self,
        dimensions: usize,
        count: usize,
        response_model: Option<&str>,
        usage: Option<&Usage>,
        cost: Option<f64>,
    ) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        let span = &self.span;
        span.record(semconv::EMBEDDINGS_DIMENSION_COUNT, n(dimensions));
        span.record(semconv::TRACIA_EMBEDDINGS_COUNT, n(count));
        if let Some(model) = response_model {
            span.record(semconv::RESPONSE_MODEL, model);
        }
        if let Some(usage) = usage {
            let tokens = i64::try_from(usage.input_tokens).unwrap_or(i64::MAX);
            span.record(semconv::USAGE_INPUT_TOKENS, tokens);
        }
        if let Some(cost) = cost {
            span.record(semconv::TRACIA_COST_USD, cost);
        }
    }

    /// Places a created span in the trace (explicit ids, else the ambient span) and
    /// starts it; with no OpenTelemetry layer the ids are made up here instead (and a
    /// traced call, `send`, warns once that its spans go nowhere).
    fn place(
        span: tracing::Span,
        started: Started,
        placement: Placement,
        settings: SpanSettings,
        send: bool,
    ) -> Self {
        let ambient = opentelemetry::Context::current();
        let ambient_sc = ambient.span().span_context().clone();
        let trace_id = placement
            .trace_id
            .or_else(|| ambient_sc.is_valid().then(|| ambient_sc.trace_id()));
        let remote_parent = placement
            .parent_span_id
            .zip(trace_id)
            .map(|(parent, trace)| {
                let sc = SpanContext::new(
                    trace,
                    parent,
                    TraceFlags::SAMPLED,
                    true,
                    TraceState::default(),
                );
                opentelemetry::Context::new().with_remote_span_context(sc)
            });
        if let Some(cx) = &remote_parent {
            // Fails only when no OTel layer sees the span; the fallback ids below cover that.
            let _ = span.set_parent(cx.clone());
        }

        // Starting the span here lets TraciaIdGenerator hand it the requested ids.
        let root_trace = remote_parent
            .is_none()
            .then_some(placement.trace_id)
            .flatten();
        let context = ids::with_next_ids(root_trace, placement.span_id, || span.context());
        let sc = context.span().span_context().clone();
        let (span_id, trace_id, context) = if sc.is_valid() {
            (sc.span_id(), sc.trace_id(), context)
        } else {
            // No OpenTelemetry layer sees this span (none installed, or send_trace=false):
            // the result still gets well-formed ids, and the provider a traceparent that
            // says "not sampled".
            if send {
                warn_no_pipeline();
            }
            let span_id = placement.span_id.unwrap_or_else(ids::random_span_id);
            let trace_id = trace_id.unwrap_or_else(ids::random_trace_id);
            let sc = SpanContext::new(
                trace_id,
                span_id,
                TraceFlags::default(),
                false,
                TraceState::default(),
            );
            (
                span_id,
                trace_id,
                opentelemetry::Context::new().with_remote_span_context(sc),
            )
        };
        Self {
            span,
            context,
            span_id,
            trace_id,
            settings,
            started,
            ended: OnceLock::new(),
        }
    }

    /// Records the time to the first streamed chunk: now. It is counted from the
    /// latest moment the span can have started, so start + it is never past now.
    pub fn record_first_chunk(&self) {
        let seconds = SystemTime::now()
            .duration_since(self.started.after)
            .unwrap_or_default()
            .as_secs_f64();
        self.span
            .record(semconv::RESPONSE_TIME_TO_FIRST_CHUNK, seconds);
    }

    /// Ends the span now (the first call only) and returns the call's duration in
    /// milliseconds, the same as the exported span's; later calls return it again.
    /// Whatever is recorded on the span after this is lost, so the outcome goes first.
    pub fn end(&self) -> u64 {
        millis(*self.ended.get_or_init(|| {
            let (end, duration) = end_stamp(self.started, SystemTime::now());
            // Ends the OpenTelemetry span itself; the layer's own ending when the
            // `tracing` span closes finds it ended and does nothing.
            self.context.span().end_with_timestamp(end);
            duration
        }))
    }

    /// Marks the span failed (see [`Self::record_error`]) and ends it.
    pub fn fail(&self, error: &Error) {
        self.record_error(error);
        self.end();
    }

    /// Records a response: complete, or what a cut-off stream had received (`cut_off`),
    /// whose finish reason is then `error` as the latest semconv asks.
    pub fn record_response(
        &self,
        response: &ChatResponse,
        finish: FinishReason,
        cut_off: bool,
        cost: Option<f64>,
    ) {
        let usage = response.usage.as_ref();
        let finish_str = if cut_off { "error" } else { finish.otel_str() };
        let span = &self.span;
        if let Some(id) = &response.id {
            span.record(semconv::RESPONSE_ID, id.as_str());
        }
        if let Some(model) = &response.model {
            span.record(semconv::RESPONSE_MODEL, model.as_str());
        }
        string_array(span, semconv::RESPONSE_FINISH_REASONS, [finish_str]);
        if let Some(usage) = usage {
            self.record_usage(usage);
        }
        if let Some(cost) = cost {
            span.record(semconv::TRACIA_COST_USD, cost);
        }
        for (key, value) in &response.attributes {
            span.record(*key, value.as_str());
        }
        if self.settings.capture_content && !span.is_disabled() {
            span.record(
                semconv::OUTPUT_MESSAGES,
                semconv::output_messages(
                    &response.reasoning,
                    &response.text,
                    &response.tool_calls,
                    finish_str,
                ),
            );
        }
    }

    fn record_usage(&self, usage: &Usage) {
        let span = &self.span;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        span.record(semconv::USAGE_INPUT_TOKENS, n(usage.input_tokens));
        span.record(semconv::USAGE_OUTPUT_TOKENS, n(usage.output_tokens));
        if let Some(v) = usage.cache_read_input_tokens {
            span.record(semconv::USAGE_CACHE_READ_INPUT_TOKENS, n(v));
        }
        if let Some(v) = usage.cache_creation_input_tokens {
            let key = match self.settings.semconv {
                SemconvMode::V1_41 => semconv::USAGE_CACHE_CREATION_INPUT_TOKENS,
                SemconvMode::LatestExperimental => semconv::USAGE_CACHE_WRITE_INPUT_TOKENS,
            };
            span.record(key, n(v));
        }
        if let Some(v) = usage.reasoning_output_tokens {
            span.record(semconv::USAGE_REASONING_OUTPUT_TOKENS, n(v));
        }
    }

    /// Marks the span failed: status, `error.type`, and the exception event.
    pub fn record_error(&self, error: &Error) {
        let span = &self.span;
        span.record(semconv::OTEL_STATUS_CODE, "error");
        span.record(semconv::OTEL_STATUS_DESCRIPTION, error.to_string());
        span.record(semconv::ERROR_TYPE, error.otel_error_type());
        span.add_event(
            "exception",
            vec![
                KeyValue::new(semconv::EXCEPTION_TYPE, error.code().as_str()),
                KeyValue::new(semconv::EXCEPTION_MESSAGE, error.to_string()),
            ],
        );
    }

    /// Marks a stream that the caller stopped (abort or drop).
    pub fn record_aborted(&self) {
        self.span.record(semconv::TRACIA_STREAM_ABORTED, true);
    }
}

impl Drop for CallSpan {
    /// A call dropped before its end (its future cancelled mid-request) ends here.
    fn drop(&mut self) {
        self.end();
    }
}

/// Says, once per process, that traced calls' spans reach no OpenTelemetry pipeline.
///
/// Through `tracing` when a subscriber is installed (it decides where logs go), else
/// also on stderr: with no subscriber at all a `tracing` event goes nowhere either, and
/// silence is exactly the trouble being reported. Once, since every call would repeat it.
fn warn_no_pipeline() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        const MESSAGE: &str = "no OpenTelemetry pipeline sees the spans of LLM calls, so they are not exported; install one with tracia::telemetry::init() (or add tracia::telemetry::layer to your subscriber), or pass send_trace(false) to calls not meant to be traced";
        let no_subscriber = tracing::dispatcher::get_default(|d| {
            d.is::<tracing::subscriber::NoSubscriber>()
        });
        if no_subscriber {
            eprintln!("WARN tracia: {MESSAGE}");
        }
        tracing::warn!(target: "tracia", "{MESSAGE}");
    });
}

/// Name, operation, provider, model and server: the attributes every operation shares.
pub(crate) fn record_target(span: &tracing::Span, target: &SpanTarget<'_>) {
    record_operation(span, target.operation, Some(target.model));
    span.record(semconv::PROVIDER_NAME, target.provider.otel_name());
    span.record(semconv::TRACIA_PROVIDER, target.provider.as_str());
    record_server(span, target.server);
}

/// The span name, `{operation} {model}` (the operation alone when the model is not
/// known, as the semconv asks), and the requested model.
fn record_operation(span: &tracing::Span, operation: &str, model: Option<&str>) {
    match model {
        Some(model) => {
            span.record(semconv::OTEL_NAME, format!("{operation} {model}"));
            span.record(semconv::REQUEST_MODEL, model);
        }
        None => {
            span.record(semconv::OTEL_NAME, operation);
        }
    }
}

fn record_server(span: &tracing::Span, server: &reqwest::Url) {
    if let Some(host) = server.host_str() {
        span.record(semconv::SERVER_ADDRESS, host);
    }
    if let Some(port) = server.port_or_known_default() {
        span.record(semconv::SERVER_PORT, i64::from(port));
    }
}

/// The conversation and end user (`session.id` is also `gen_ai.conversation.id`), and
/// the tags.
fn record_conversation(
    span: &tracing::Span,
    session: Option<&str>,
    user: Option<&str>,
    tags: &[String],
) {
    if let Some(session) = session {
        span.record(semconv::SESSION_ID, session);
        span.record(semconv::CONVERSATION_ID, session);
    }
    if let Some(user) = user {
        span.record(semconv::USER_ID, user);
    }
    if !tags.is_empty() {
        string_array(span, semconv::TRACIA_TAGS, tags.iter().cloned());
    }
}

fn record_request(
    span: &tracing::Span,
    input: &RunLocal,
    settings: SpanSettings,
    messages: &[Message],
) {
    if let Some(t) = input.temperature {
        span.record(semconv::REQUEST_TEMPERATURE, t);
    }
    if let Some(p) = input.top_p {
        span.record(semconv::REQUEST_TOP_P, p);
    }
    if let Some(n) = input.max_output_tokens {
        span.record(semconv::REQUEST_MAX_TOKENS, i64::from(n));
    }
    if !input.stop_sequences.is_empty() {
        string_array(
            span,
            semconv::REQUEST_STOP_SEQUENCES,
            input.stop_sequences.iter().cloned(),
        );
    }
    if let Some(format) = &input.response_format {
        let kind = match format {
            ResponseFormat::Json | ResponseFormat::JsonSchema { .. } => "json",
            ResponseFormat::Custom(_) => "text",
        };
        span.record(semconv::OUTPUT_TYPE, kind);
    }
    record_conversation(
        span,
        input.options.session_id.as_deref(),
        input.options.user_id.as_deref(),
        &input.options.tags,
    );
    // A span no subscriber records (none installed, or `send_trace(false)`) is not
    // worth the JSON: it is most of what an untraced call would spend here.
    if settings.capture_content && !span.is_disabled() {
        span.record(semconv::INPUT_MESSAGES, semconv::input_messages(messages));
        if !input.variables.is_empty() {
            let vars = semconv::bounded_json_of(&input.variables);
            span.record(semconv::TRACIA_VARIABLES, vars);
        }
    }
    if !input.tools.is_empty() {
        let definitions = semconv::tool_definitions(&input.tools, settings.capture_content);
        span.record(semconv::TOOL_DEFINITIONS, definitions);
    }
}

/// `tracing` fields cannot hold arrays; string[] attributes go straight to OpenTelemetry.
fn string_array<I, S>(span: &tracing::Span, key: &'static str, values: I)
where
    I: IntoIterator<Item = S>,
    S: Into<StringValue>,
{
    let values = values.into_iter().map(Into::into).collect();
    span.set_attribute(key, Value::Array(Array::String(values)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every start the layer may have stamped, in steps of 1 µs.
    fn possible_starts(started: Started) -> impl Iterator<Item = SystemTime> {
        let slack = started.after.duration_since(started.before).unwrap();
        (0..=slack.as_micros()).map(move |us| started.before + Duration::from_micros(us as u64))
    }

    #[test]
    fn the_span_and_the_latency_agree_to_the_millisecond_wherever_the_start_fell() {
        let before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for slack_us in [0, 1, 37, 400, 999] {
            let started = Started {
                before,
                after: before + Duration::from_micros(slack_us),
            };
            // Ends just past a millisecond boundary (the case a shift fixes) and elsewhere.
            for end_us in [0, 1, 36, 500, 998, 3_000, 3_001, 3_100, 3_999, 250_020] {
                let now = before + Duration::from_micros(end_us);
                let (end, duration) = end_stamp(started, now);
                assert!(
                    end >= now,
                    "the end is never before the moment it was asked for"
                );
                assert!(
                    end.duration_since(now).unwrap()
                        <= started.after.duration_since(before).unwrap()
                );
                for start in possible_starts(started) {
                    let span = end.duration_since(start).unwrap();
                    assert_eq!(
                        millis(span),
                        millis(duration),
                        "slack {slack_us} µs, end at {end_us} µs, start {start:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_start_slower_than_a_millisecond_leaves_the_end_where_it_is() {
        let before = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        let started = Started {
            before,
            after: before + Duration::from_millis(3),
        };
        let now = before + Duration::from_micros(10_200);
        assert_eq!(
            end_stamp(started, now),
            (now, Duration::from_micros(10_200))
        );
    }

    #[test]
    fn a_clock_stepped_back_gives_a_zero_duration_not_a_panic() {
        let before = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let started = Started {
            before,
            after: before,
        };
        let now = before - Duration::from_secs(1);
        assert_eq!(end_stamp(started, now), (now, Duration::ZERO));
    }
}
