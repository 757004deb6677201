//! The `Tracia` client: configuration, validation, and the non-streaming call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_http::HeaderInjector;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use secrecy::{ExposeSecret, SecretString};
use tracing::Instrument;

use crate::call::run::{RunLocal, RunResult, assistant_message};
use crate::call::session::{Session, SessionOptions};
use crate::call::span::{Api, CallSpan, Placement, SpanSettings, SpanStart};
use crate::call::stream::RunStream;
use crate::config::{self, capture_content_from, env};
use crate::error::{Error, ErrorCode, Result};
use crate::ids;
use crate::message::Role;
use crate::pricing;
use crate::providers::bedrock::aws::{self, AwsCredentials};
use crate::providers::chat::{ChatRequest, ChatResponse, ChatWire};
use crate::providers::chat_wire;
use crate::providers::openai_responses::OpenAiResponses;
use crate::providers::provider::Provider;
use crate::telemetry::semconv::SemconvMode;
use crate::transport;
use crate::variables;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The default of [`TraciaBuilder::with_max_answer_bytes`]: 32 MiB.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;
const DEFAULT_AWS_REGION: &str = "eu-central-1";
const DEFAULT_TRACIA_BASE_URL: &str = "https://app.tracia.io";

/// The Tracia client: runs LLM calls, each one an OpenTelemetry GenAI span.
///
/// Cheap to clone (an `Arc` inside); build one and share it.
///
/// ```no_run
/// use tracia::{RunLocal, Tracia};
/// # async fn demo() -> Result<(), tracia::Error> {
/// let tracia = Tracia::from_env()?;
/// let result = tracia
///     .run_local(RunLocal::new("gpt-4o").system("You are terse.").user("Hello {{name}}")
///         .variable("name", "Ada").temperature(0.2))
///     .await?;
/// println!("{} (span {}, trace {})", result.text, result.span_id, result.trace_id);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Tracia {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    api_keys: HashMap<Provider, SecretString>,
    base_urls: HashMap<Provider, reqwest::Url>,
    aws_region: String,
    aws_credentials: Option<AwsCredentials>,
    timeout: Duration,
    max_answer_bytes: usize,
    span_settings: SpanSettings,
    tracia_api_key: Option<SecretString>,
    tracia_base_url: reqwest::Url,
}

/// Builds a [`Tracia`] client. Anything not set in code falls back to the environment
/// variables of the crate docs, unless [`TraciaBuilder::without_env`] is called.
///
/// ```
/// use tracia::{Provider, Tracia};
/// let tracia = Tracia::builder()
///     .without_env()
///     .with_api_key(Provider::OpenAi, "sk-test")
///     .with_base_url(Provider::OpenAi, "http://127.0.0.1:8080/v1")
///     .with_capture_content(false)
///     .build()
///     .unwrap();
/// # drop(tracia);
/// ```
#[derive(Debug, Default)]
pub struct TraciaBuilder {
    api_keys: HashMap<Provider, SecretString>,
    base_urls: HashMap<Provider, String>,
    aws_region: Option<String>,
    aws_credentials: Option<AwsCredentials>,
    timeout: Option<Duration>,
    max_answer_bytes: Option<usize>,
    capture_content: Option<bool>,
    semconv: Option<SemconvMode>,
    http: Option<reqwest::Client>,
    no_env: bool,
    tracia_api_key: Option<SecretString>,
    tracia_base_url: Option<String>,
}

impl TraciaBuilder {
    /// The API key of a provider (instead of its environment variable).
    pub fn with_api_key(mut self, provider: Provider, key: impl Into<String>) -> Self {
        self.api_keys
            .insert(provider, SecretString::from(key.into()));
        self
    }

    /// The base URL of a provider, e.g. an OpenAI-compatible server's `http://host/v1`.
    /// Defaults: `https://api.openai.com/v1`, `https://api.anthropic.com`,
    /// `https://generativelanguage.googleapis.com`,
    /// `https://bedrock-runtime.{region}.amazonaws.com`, `https://api.voyageai.com/v1`.
    pub fn with_base_url(mut self, provider: Provider, url: impl Into<String>) -> Self {
        self.base_urls.insert(provider, url.into());
        self
    }

    /// The AWS region of Bedrock calls (else `AWS_REGION`, `AWS_DEFAULT_REGION`, then
    /// `eu-central-1`). It picks the endpoint and the model id's cross-region prefix.
    pub fn with_aws_region(mut self, region: impl Into<String>) -> Self {
        self.aws_region = Some(region.into());
        self
    }

    /// AWS credentials for Bedrock calls signed with SigV4 (else `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`). A Bedrock API key, when one is
    /// set, is used instead; credentials set here outrank a key from the environment.
    ///
    /// ```
    /// let tracia = tracia::Tracia::builder()
    ///     .with_aws_credentials(tracia::AwsCredentials::new("AKIDEXAMPLE", "secret"))
    ///     .with_aws_region("us-east-1")
    ///     .build()
    ///     .unwrap();
    /// # drop(tracia);
    /// ```
    pub fn with_aws_credentials(mut self, credentials: AwsCredentials) -> Self {
        self.aws_credentials = Some(credentials);
        self
    }

    /// The default timeout of a call (120 s unless set).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The most bytes of one answer a call takes in: its text, reasoning and tool-call
    /// arguments as they stream in, or its whole body when not streamed (default
    /// [`DEFAULT_MAX_ANSWER_BYTES`], 32 MiB). A provider going past it (an endless
    /// stream) ends the call with `PROVIDER_ERROR` "the answer exceeded N bytes
    /// (max_answer_bytes)", its connection closed and its span ended as an error. A call
    /// may set its own (`RunLocal::max_answer_bytes`).
    ///
    /// ```
    /// let tracia = tracia::Tracia::builder().with_max_answer_bytes(1024 * 1024).build().unwrap();
    /// # drop(tracia);
    /// ```
    pub fn with_max_answer_bytes(mut self, max: usize) -> Self {
        self.max_answer_bytes = Some(max);
        self
    }

    /// Whether message content (prompts, answers, tool schemas, variables) goes on spans.
    pub fn with_capture_content(mut self, capture: bool) -> Self {
        self.capture_content = Some(capture);
        self
    }

    /// Which GenAI semantic-convention version the spans follow.
    pub fn with_semconv(mut self, mode: SemconvMode) -> Self {
        self.semconv = Some(mode);
        self
    }

    /// The HTTP client for provider calls (proxies, TLS settings).
    pub fn with_http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The Tracia API key for [`Tracia::prompts`] and [`Tracia::spans`] (instead of
    /// `TRACIA_API_KEY`).
    ///
    /// ```
    /// let tracia = tracia::Tracia::builder().without_env().with_tracia_api_key("tr_test").build().unwrap();
    /// # drop(tracia);
    /// ```
    pub fn with_tracia_api_key(mut self, key: impl Into<String>) -> Self {
        self.tracia_api_key = Some(SecretString::from(key.into()));
        self
    }

    /// The Tracia API base URL (instead of `TRACIA_BASE_URL`, default
    /// `https://app.tracia.io`).
    ///
    /// ```
    /// let tracia = tracia::Tracia::builder().with_tracia_base_url("http://127.0.0.1:4318").build().unwrap();
    /// # drop(tracia);
    /// ```
    pub fn with_tracia_base_url(mut self, url: impl Into<String>) -> Self {
        self.tracia_base_url = Some(url.into());
        self
    }

    /// Ignores the environment: only what is set in code counts.
    pub fn without_env(mut self) -> Self {
        self.no_env = true;
        self
    }

    /// Builds the client; fails with `INVALID_REQUEST` naming a bad base URL.
    pub fn build(self) -> Result<Tracia> {
        let from_env = |name: &str| if self.no_env { None } else { env(name) };
        let mut api_keys = self.api_keys;
        let aws_region = self
            .aws_region
            .clone()
            .or_else(|| from_env(config::AWS_REGION))
            .or_else(|| from_env(config::AWS_DEFAULT_REGION))
            .unwrap_or_else(|| DEFAULT_AWS_REGION.to_owned());
        let mut base_urls = HashMap::new();
        let code_aws = self.aws_credentials.is_some();
        let aws_credentials = self
            .aws_credentials
            .or_else(|| AwsCredentials::from_env(from_env));
        for provider in Provider::ALL {
            // Bedrock credentials set in code outrank a Bedrock key from the environment.
            let set_in_code = api_keys.contains_key(&provider)
                || (provider == Provider::AmazonBedrock && code_aws);
            if !set_in_code
                && let Some(key) = provider.api_key_envs().iter().find_map(|v| from_env(v))
            {
                api_keys.insert(provider, SecretString::from(key));
            }
            let url = self
                .base_urls
                .get(&provider)
                .cloned()
                .or_else(|| from_env(provider.base_url_env()))
                .unwrap_or_else(|| provider.default_base_url(&aws_region));
            base_urls.insert(provider, parse_base_url(provider, &url)?);
        }
        for key in api_keys.values() {
            crate::error::register_secret(key.expose_secret());
        }
        if let Some(credentials) = &aws_credentials {
            credentials.register_secrets();
        }
        let capture_content = self.capture_content.unwrap_or_else(|| {
            capture_content_from(
                from_env(config::OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT).as_deref(),
            )
        });
        let semconv = self.semconv.unwrap_or_else(|| {
            SemconvMode::from_opt_in(from_env(config::OTEL_SEMCONV_STABILITY_OPT_IN).as_deref())
        });
        let http = match self.http {
            Some(client) => client,
            None => reqwest::Client::builder()
                .user_agent(concat!("tracia-rust/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| {
                    Error::new(
                        ErrorCode::Unknown,
                        format!("cannot build the HTTP client: {e}"),
                    )
                })?,
        };
        let tracia_api_key = self
            .tracia_api_key
            .or_else(|| from_env(config::TRACIA_API_KEY).map(SecretString::from));
        if let Some(key) = &tracia_api_key {
            crate::error::register_secret(key.expose_secret());
        }
        let tracia_base_url = self
            .tracia_base_url
            .or_else(|| from_env(config::TRACIA_BASE_URL))
            .unwrap_or_else(|| DEFAULT_TRACIA_BASE_URL.to_owned());
        let tracia_base_url = reqwest::Url::parse(&tracia_base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "Invalid Tracia base URL '{tracia_base_url}': expected an http(s) URL"
                ))
            })?;
        Ok(Tracia {
            inner: Arc::new(Inner {
                tracia_api_key,
                tracia_base_url,
                http,
                api_keys,
                base_urls,
                aws_region,
                aws_credentials,
                timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
                max_answer_bytes: self.max_answer_bytes.unwrap_or(DEFAULT_MAX_ANSWER_BYTES),
                span_settings: SpanSettings {
                    capture_content,
                    semconv,
                },
            }),
        })
    }
}

fn parse_base_url(provider: Provider, url: &str) -> Result<reqwest::Url> {
    reqwest::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| {
            Error::invalid(format!(
                "Invalid base URL '{url}' for provider '{provider}': expected an http(s) URL"
            ))
        })
}

/// A validated call, its span started, ready to send.
pub(crate) struct PreparedCall {
    pub http: reqwest::Client,
    pub request: reqwest::Request,
    pub state: CallState,
}

/// What a call needs after its request went out.
pub(crate) struct CallState {
    pub call: CallSpan,
    pub wire: &'static dyn ChatWire,
    pub provider: Provider,
    pub model: String,
    pub timeout: Duration,
    /// The most bytes of answer taken in ([`TraciaBuilder::with_max_answer_bytes`]).
    pub max_answer_bytes: usize,
}

impl CallState {
    /// Records a response on the span and returns its cost; `cut_off` marks a stream
    /// that did not reach its end.
    pub fn record(&self, response: &ChatResponse, cut_off: bool) -> Option<f64> {
        let cost = response
            .usage
            .as_ref()
            .and_then(|u| pricing::cost_usd(&self.model, u));
        self.call
            .record_response(response, response.finish(), cut_off, cost);
        cost
    }

    /// Records a response on the span and builds the call's result from it.
    pub fn finish(&self, response: ChatResponse, cut_off: bool, aborted: bool) -> RunResult {
        let cost = self.record(&response, cut_off);
        self.result(response, cost, aborted)
    }

    /// The call's result from a response already recorded on the span; the span ends
    /// here if it has not yet (a stream's ended with its last event).
    pub fn result(&self, response: ChatResponse, cost: Option<f64>, aborted: bool) -> RunResult {
        let finish = response.finish().or_aborted(aborted);
        let usage = response.usage.unwrap_or_default();
        RunResult {
            message: assistant_message(&response.text, &response.tool_calls),
            span_id: self.span_id(),
            trace_id: self.trace_id(),
            latency_ms: self.latency_ms(),
            usage,
            cost,
            provider: self.provider,
            model: self.model.clone(),
            response_model: response.model,
            response_id: response.id,
            finish_reason: finish,
            tool_calls: response.tool_calls,
            reasoning: Some(response.reasoning).filter(|r| !r.is_empty()),
            text: response.text,
            aborted,
        }
    }

    /// The span id in Tracia form (`sp_…`).
    pub fn span_id(&self) -> String {
        ids::format_span_id(self.call.span_id)
    }

    /// The trace id in Tracia form (`tr_…`).
    pub fn trace_id(&self) -> String {
        ids::format_trace_id(self.call.trace_id)
    }

    /// The call's duration: ends the span now if it has not ended yet.
    pub fn latency_ms(&self) -> u64 {
        self.call.end()
    }
}

impl Tracia {
    /// A client configured from the environment (see the crate docs for the variables).
    pub fn from_env() -> Result<Self> {
        Self::builder().build()
    }

    /// A builder; see [`TraciaBuilder`].
    pub fn builder() -> TraciaBuilder {
        TraciaBuilder::default()
    }

    /// Calls the model and waits for the whole answer.
    ///
    /// The call is a CLIENT span `chat {model}` carrying the GenAI attributes; the result
    /// carries that span's ids. Invalid input fails with `INVALID_REQUEST` before any
    /// request is sent.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let result = tracia.run_local(tracia::RunLocal::new("gpt-4o-mini").user("Say hi")).await?;
    /// assert!(!result.span_id.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn run_local(&self, input: RunLocal) -> Result<RunResult> {
        self.run_local_at(input, Placement::default()).await
    }

    /// Calls the model and streams the answer; see [`RunStream`].
    ///
    /// Resolves once the provider has accepted the request (so a 401 or 429 fails here),
    /// and the stream then yields text chunks.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let mut stream = tracia.run_local_stream(tracia::RunLocal::new("gpt-4o").user("Count to 5")).await?;
    /// while let Some(chunk) = stream.next().await {
    ///     print!("{}", chunk?);
    /// }
    /// let result = stream.finish().await?;
    /// println!("\n{} tokens", result.usage.total_tokens);
    /// # Ok(()) }
    /// ```
    pub async fn run_local_stream(&self, input: RunLocal) -> Result<RunStream> {
        self.run_local_stream_at(input, Placement::default()).await
    }

    pub(crate) async fn run_local_at(
        &self,
        input: RunLocal,
        placement: Placement,
    ) -> Result<RunResult> {
        let prepared = self.prepare(input, Api::Chat, false, placement)?;
        let span = prepared.state.call.span.clone();
        let (state, response) = fetch(prepared).instrument(span).await?;
        Ok(state.finish(response, false, false))
    }

    pub(crate) async fn run_local_stream_at(
        &self,
        input: RunLocal,
        placement: Placement,
    ) -> Result<RunStream> {
        let prepared = self.prepare(input, Api::Chat, true, placement)?;
        RunStream::open(prepared).await
    }

    /// A session: calls chained into one trace, each the child of the previous one.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let session = tracia.create_session();
    /// let first = session.run_local(tracia::RunLocal::new("gpt-4o").user("Hi")).await?;
    /// let second = session.run_local(tracia::RunLocal::new("gpt-4o").user("Again")).await?;
    /// assert_eq!(first.trace_id, second.trace_id);
    /// # Ok(()) }
    /// ```
    pub fn create_session(&self) -> Session {
        Session::new(self.clone(), None, None)
    }

    /// The session that incoming `headers` carry, for a request handler: W3C
    /// `traceparent` (the next call is the child of the span it names) and baggage
    /// `session.id` / `user.id` (put on every call that names none of its own), as
    /// written by [`Session::write_headers`] or [`crate::propagation::inject`]. When the
    /// current span already continues that trace (the handler span of
    /// `propagation::TraceContextLayer` or `set_parent_from`), calls nest under
    /// it instead. Never fails: missing or hostile headers give a fresh session.
    ///
    /// ```
    /// # fn demo(tracia: tracia::Tracia) {
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
    /// headers.insert("baggage", "session.id=conv_7".parse().unwrap());
    /// let session = tracia.session_from_headers(&headers);
    /// assert_eq!(session.trace_id().as_deref(), Some("tr_4bf92f3577b34da6a3ce929d0e0e4736"));
    /// assert_eq!(session.conversation().session_id.as_deref(), Some("conv_7"));
    /// # }
    /// ```
    pub fn session_from_headers(&self, headers: &http::HeaderMap) -> Session {
        Session::from_headers(self.clone(), headers)
    }

    /// A session continuing an existing trace, e.g. from a previous HTTP request, with
    /// the next call the child of `parent_span_id` when given. The same as
    /// [`Tracia::create_session_with`] with both ids.
    ///
    /// ```
    /// # fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let session = tracia.create_session_from("tr_0123456789abcdef", Some("sp_0123456789abcdef"))?;
    /// assert_eq!(session.trace_id().as_deref(), Some("tr_0123456789abcdef"));
    /// # Ok(()) }
    /// ```
    pub fn create_session_from(
        &self,
        trace_id: &str,
        parent_span_id: Option<&str>,
    ) -> Result<Session> {
        let mut options = SessionOptions::new().trace_id(trace_id);
        options.parent_span_id = parent_span_id.map(str::to_owned);
        self.create_session_with(options)
    }

    /// A session starting where `options` say (a trace, a parent span, both or
    /// neither; see [`SessionOptions`]). A malformed id fails with `INVALID_REQUEST`
    /// naming it.
    ///
    /// ```
    /// # fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// use tracia::SessionOptions;
    /// let session = tracia.create_session_with(SessionOptions::new().trace_id("tr_0123456789abcdef"))?;
    /// assert_eq!(session.trace_id().as_deref(), Some("tr_0123456789abcdef"));
    /// assert_eq!(session.last_span_id(), None);
    /// let err = tracia.create_session_with(SessionOptions::new().parent_span_id("span-1")).unwrap_err();
    /// assert!(err.is_invalid_request() && err.message().contains("span-1"));
    /// # Ok(()) }
    /// ```
    pub fn create_session_with(&self, options: SessionOptions) -> Result<Session> {
        let placement = Placement::default().with_ids(
            None,
            options.trace_id.as_deref(),
            options.parent_span_id.as_deref(),
        )?;
        Ok(Session::new(
            self.clone(),
            placement.trace_id,
            placement.parent_span_id,
        ))
    }

    /// Waits until every span ended so far has been exported by the pipeline that
    /// [`crate::telemetry`] installed. Safe on any runtime flavour: the blocking flush
    /// runs on a blocking thread.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) {
    /// tracia.flush().await;
    /// # }
    /// ```
    pub async fn flush(&self) {
        crate::telemetry::flush_installed().await;
    }

    /// Validates a call, starts its span and builds its request for `api`.
    pub(crate) fn prepare(
        &self,
        mut input: RunLocal,
        api: Api,
        stream: bool,
        session: Placement,
    ) -> Result<PreparedCall> {
        let placement = self.validate(&input, session)?;
        crate::propagation::ambient_conversation()
            .fill(&mut input.options.session_id, &mut input.options.user_id);
        let provider = Provider::resolve(&input.model, input.options.provider)?;
        let wire: &'static dyn ChatWire = match api {
            Api::Chat => chat_wire(provider, &input.model)?,
            Api::Responses => &OpenAiResponses,
        };
        let auth = self.auth(provider, input.options.provider_api_key.take())?;
        let base = self.base_url(provider);
        let messages = variables::interpolate(&input.messages, &input.variables);
        let send = input.options.send_trace.unwrap_or(true);
        let call = CallSpan::start(
            SpanStart {
                provider,
                server: base,
                input: &input,
                messages: &messages,
                stream,
                send,
                placement,
                api,
            },
            self.inner.span_settings,
        );
        let wire_model = self.wire_model(provider, &input.model);
        let chat = ChatRequest {
            model: &wire_model,
            messages: &messages,
            temperature: input.temperature,
            top_p: input.top_p,
            max_output_tokens: input.max_output_tokens,
            stop_sequences: &input.stop_sequences,
            tools: &input.tools,
            tool_choice: input.tool_choice.as_ref(),
            response_format: input.response_format.as_ref(),
            stream,
            custom: input.custom_options.get(&provider),
        };
        let url = wire.chat_url(base.as_str().trim_end_matches('/'), &chat);
        let request =
            self.provider_request(url, &wire.encode(&chat), &call.context, &auth, |r, key| {
                wire.authorize(r, key)
            })?;
        Ok(PreparedCall {
            http: self.inner.http.clone(),
            request,
            state: CallState {
                call,
                wire,
                provider,
                model: input.model,
                timeout: input.options.timeout.unwrap_or(self.inner.timeout),
                max_answer_bytes: input
                    .options
                    .max_answer_bytes
                    .unwrap_or(self.inner.max_answer_bytes),
            },
        })
    }

    /// How a call to `provider` authenticates: the call's key, the client's key, then
    /// (Bedrock only) AWS credentials for SigV4.
    pub(crate) fn auth(
        &self,
        provider: Provider,
        call_key: Option<SecretString>,
    ) -> Result<Auth<'_>> {
        if let Some(key) = call_key {
            // A per-call key is configured here, as late as it can be.
            crate::error::register_secret(key.expose_secret());
            return Ok(Auth::Key(key));
        }
        if let Some(key) = self.inner.api_keys.get(&provider).cloned() {
            return Ok(Auth::Key(key));
        }
        let aws = (provider == Provider::AmazonBedrock)
            .then_some(self.inner.aws_credentials.as_ref())
            .flatten();
        if let Some(credentials) = aws {
            return Ok(Auth::Aws(credentials));
        }
        let aws_hint = if provider == Provider::AmazonBedrock {
            " Or set AWS credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or TraciaBuilder::with_aws_credentials) to sign with SigV4."
        } else {
            ""
        };
        Err(Error::new(
            ErrorCode::MissingProviderApiKey,
            format!(
                "No API key found for provider '{provider}'. Set the {} environment variable or pass provider_api_key parameter.{aws_hint}",
                provider.api_key_env()
            ),
        ))
    }

    /// The checks that fail before any I/O, and where the span goes.
    fn validate(&self, input: &RunLocal, session: Placement) -> Result<Placement> {
        crate::providers::provider::check_model(&input.model)?;
        if input.messages.is_empty() {
            return Err(Error::invalid("messages is required and cannot be empty"));
        }
        if let Some(i) = input.messages.iter().position(|m| {
            m.role == Role::Tool && m.tool_call_id.as_deref().is_none_or(str::is_empty)
        }) {
            return Err(Error::invalid(format!(
                "Tool messages must have tool_call_id (message {i})"
            )));
        }
        variables::validate(&input.messages, &input.variables)?;
        session.with_ids(
            input.options.span_id.as_deref(),
            input.options.trace_id.as_deref(),
            input.options.parent_span_id.as_deref(),
        )
    }

    /// The base URL of `provider`, without a trailing slash.
    pub(crate) fn base_url(&self, provider: Provider) -> &reqwest::Url {
        &self.inner.base_urls[&provider]
    }

    /// The model id on the wire: Bedrock's carries the region's cross-region prefix.
    pub(crate) fn wire_model(&self, provider: Provider, model: &str) -> String {
        match provider {
            Provider::AmazonBedrock => {
                crate::providers::provider::bedrock_model_id(model, &self.inner.aws_region)
            }
            _ => model.to_owned(),
        }
    }

    /// A provider request: JSON body, authorization (a key through the wire format's
    /// `authorize`, or a SigV4 signature), then the span's `traceparent`.
    pub(crate) fn provider_request(
        &self,
        url: String,
        body: &serde_json::Value,
        context: &opentelemetry::Context,
        auth: &Auth<'_>,
        authorize: impl FnOnce(reqwest::RequestBuilder, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Request> {
        let request = self.inner.http.post(url).json(body);
        let request = match auth {
            Auth::Key(key) => authorize(request, key.expose_secret()),
            Auth::Aws(_) => request,
        };
        let mut request = request
            .build()
            .map_err(|e| Error::invalid(format!("cannot build the provider request: {e}")))?;
        if let Auth::Aws(credentials) = auth {
            aws::sign_request(
                &mut request,
                credentials,
                &self.inner.aws_region,
                SystemTime::now(),
            )?;
        }
        // After authorization: a signature must not cover headers a proxy may rewrite.
        TraceContextPropagator::new()
            .inject_context(context, &mut HeaderInjector(request.headers_mut()));
        Ok(request)
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn tracia_api_key(&self) -> Option<&SecretString> {
        self.inner.tracia_api_key.as_ref()
    }

    pub(crate) fn tracia_base_url(&self) -> &reqwest::Url {
        &self.inner.tracia_base_url
    }

    pub(crate) fn max_answer_bytes(&self) -> usize {
        self.inner.max_answer_bytes
    }

    pub(crate) fn default_timeout(&self) -> Duration {
        self.inner.timeout
    }

    pub(crate) fn span_settings(&self) -> SpanSettings {
        self.inner.span_settings
    }
}

/// How one call authenticates.
pub(crate) enum Auth<'a> {
    /// An API key, added by the wire format (Bedrock: a Bedrock API key as Bearer).
    Key(SecretString),
    /// AWS credentials: the built request is signed with SigV4.
    Aws(&'a AwsCredentials),
}

/// Sends a non-streaming call and decodes the answer; a failure is recorded on the
/// span, which ends, a success is left for the caller to record with its own result.
pub(crate) async fn fetch(
    PreparedCall {
        http,
        request,
        state,
    }: PreparedCall,
) -> Result<(CallState, ChatResponse)> {
    let timeout = state.timeout;
    let outcome = tokio::time::timeout(timeout, async {
        let response = transport::send(&http, request, state.wire, state.provider, timeout).await?;
        let body = transport::read_answer(response, state.max_answer_bytes, timeout).await?;
        state.wire.decode(&body).map_err(|msg| {
            Error::new(
                ErrorCode::ProviderError,
                format!("LLM provider error: {msg}"),
            )
        })
    })
    .await
    .unwrap_or_else(|_| Err(transport::timeout_error(timeout)));
    match outcome {
        Ok(response) => Ok((state, response)),
        Err(error) => {
            state.call.fail(&error);
            Err(error)
        }
    }
}
