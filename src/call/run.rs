//! The input and result of `run_local`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::message::{
    Content, ContentPart, FinishReason, Message, ResponseFormat, ToolCall, ToolChoice,
    ToolDefinition,
};
use crate::providers::provider::Provider;
use crate::usage::Usage;

/// The options every kind of call shares (provider, key, timeout, and where and how its
/// span is recorded): one field of each call's input, so a new kind of call gets them all.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallOptions {
    pub(crate) provider: Option<Provider>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_answer_bytes: Option<usize>,
    pub(crate) provider_api_key: Option<SecretString>,
    pub(crate) tags: Vec<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) session_id: Option<String>,
    pub(crate) send_trace: Option<bool>,
    pub(crate) span_id: Option<String>,
    pub(crate) trace_id: Option<String>,
    pub(crate) parent_span_id: Option<String>,
}

/// The builder methods over a [`CallOptions`] at `self.<path>`, written once for every
/// kind of call. `provider;` first adds the `provider` setter too (calls whose provider
/// is fixed, like `run_responses`, leave it out).
macro_rules! call_option_setters {
    (provider; $($path:ident).+) => {
        /// Forces the provider instead of resolving it from the model name.
        pub fn provider(mut self, provider: $crate::Provider) -> Self {
            self.$($path).+.provider = Some(provider);
            self
        }

        $crate::call::run::call_option_setters!($($path).+);
    };
    ($($path:ident).+) => {
        /// How long the whole call may take (default 120 s; for a stream, until its end).
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.$($path).+.timeout = Some(timeout);
            self
        }

        /// The most bytes of this call's answer, instead of the client's
        /// [`crate::TraciaBuilder::with_max_answer_bytes`] (32 MiB unless set there).
        pub fn max_answer_bytes(mut self, max: usize) -> Self {
            self.$($path).+.max_answer_bytes = Some(max);
            self
        }

        /// The same as [`Self::timeout`], in milliseconds as the Tracia SDKs take it.
        pub fn timeout_ms(self, ms: u64) -> Self {
            self.timeout(std::time::Duration::from_millis(ms))
        }

        /// The provider API key, instead of the provider's environment variable.
        pub fn provider_api_key(mut self, key: impl Into<String>) -> Self {
            self.$($path).+.provider_api_key = Some(secrecy::SecretString::from(key.into()));
            self
        }

        /// A tag for the span.
        pub fn tag(mut self, tag: impl Into<String>) -> Self {
            self.$($path).+.tags.push(tag.into());
            self
        }

        /// The end user (`user.id` on the span).
        pub fn user_id(mut self, id: impl Into<String>) -> Self {
            self.$($path).+.user_id = Some(id.into());
            self
        }

        /// The conversation (`session.id` and `gen_ai.conversation.id` on the span).
        pub fn session_id(mut self, id: impl Into<String>) -> Self {
            self.$($path).+.session_id = Some(id.into());
            self
        }

        /// Whether the call's span is exported (default true).
        pub fn send_trace(mut self, send: bool) -> Self {
            self.$($path).+.send_trace = Some(send);
            self
        }

        /// The span id to use (`sp_` + 16 hex).
        pub fn span_id(mut self, id: impl Into<String>) -> Self {
            self.$($path).+.span_id = Some(id.into());
            self
        }

        /// The trace to join (`tr_` + 16 or 32 hex, a W3C trace id, or a span id
        /// `sp_` + 16 hex naming a trace, as Tracia's manual linking does; see [`crate::ids`]).
        pub fn trace_id(mut self, id: impl Into<String>) -> Self {
            self.$($path).+.trace_id = Some(id.into());
            self
        }

        /// The parent span (`sp_` + 16 hex). Without a `trace_id`, the span joins the
        /// current span's trace, else the trace the parent's own id names.
        pub fn parent_span_id(mut self, id: impl Into<String>) -> Self {
            self.$($path).+.parent_span_id = Some(id.into());
            self
        }
    };
}
pub(crate) use call_option_setters;

/// One `run_local` call: the model, the messages and every option of the Tracia SDKs.
///
/// ```
/// use tracia::RunLocal;
/// let input = RunLocal::new("gpt-4o")
///     .system("You are terse.")
///     .user("Hello {{name}}")
///     .variable("name", "Ada")
///     .temperature(0.2)
///     .max_output_tokens(200)
///     .tag("demo")
///     .user_id("user_42");
/// # drop(input);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RunLocal {
    pub(crate) model: String,
    pub(crate) messages: Vec<Message>,
    pub(crate) temperature: Option<f64>,
    pub(crate) max_output_tokens: Option<u32>,
    pub(crate) top_p: Option<f64>,
    pub(crate) stop_sequences: Vec<String>,
    pub(crate) tools: Vec<ToolDefinition>,
    pub(crate) tool_choice: Option<ToolChoice>,
    pub(crate) response_format: Option<ResponseFormat>,
    pub(crate) variables: BTreeMap<String, String>,
    pub(crate) custom_options: HashMap<Provider, Map<String, Value>>,
    /// The options every kind of call shares.
    pub(crate) options: CallOptions,
}

impl RunLocal {
    call_option_setters!(provider; options);

    /// A call to `model` with no messages yet.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            ..Self::default()
        }
    }

    /// Appends a message.
    pub fn message(mut self, message: Message) -> Self {
        self.messages.push(message);
        self
    }

    /// Appends messages, e.g. a whole history.
    pub fn messages(mut self, messages: impl IntoIterator<Item = Message>) -> Self {
        self.messages.extend(messages);
        self
    }

    /// Appends a system message.
    pub fn system(self, content: impl Into<Content>) -> Self {
        self.message(Message::system(content))
    }

    /// Appends a developer message.
    pub fn developer(self, content: impl Into<Content>) -> Self {
        self.message(Message::developer(content))
    }

    /// Appends a user message.
    pub fn user(self, content: impl Into<Content>) -> Self {
        self.message(Message::user(content))
    }

    /// Appends an assistant message.
    pub fn assistant(self, content: impl Into<Content>) -> Self {
        self.message(Message::assistant(content))
    }

    /// Sampling temperature.
    pub fn temperature(mut self, t: f64) -> Self {
        self.temperature = Some(t);
        self
    }

    /// The most tokens the answer may have.
    pub fn max_output_tokens(mut self, n: u32) -> Self {
        self.max_output_tokens = Some(n);
        self
    }

    /// Nucleus sampling.
    pub fn top_p(mut self, p: f64) -> Self {
        self.top_p = Some(p);
        self
    }

    /// Adds a stop sequence.
    pub fn stop_sequence(mut self, stop: impl Into<String>) -> Self {
        self.stop_sequences.push(stop.into());
        self
    }

    /// Offers a tool to the model.
    pub fn tool(mut self, tool: ToolDefinition) -> Self {
        self.tools.push(tool);
        self
    }

    /// Whether and which tool the model must call.
    pub fn tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = Some(choice);
        self
    }

    /// The format of the answer (JSON, JSON Schema).
    pub fn response_format(mut self, format: ResponseFormat) -> Self {
        self.response_format = Some(format);
        self
    }

    /// A `{{name}}` template variable.
    pub fn variable(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.insert(name.into(), value.into());
        self
    }

    /// The messages as they will be sent and recorded: every `{{name}}` placeholder of
    /// the non-tool messages replaced by its variable (unknown names stay verbatim).
    ///
    /// ```
    /// let input = tracia::RunLocal::new("gpt-4o").user("Hello {{name}}").variable("name", "Ada");
    /// assert_eq!(input.rendered_messages()[0].content.text(), "Hello Ada");
    /// ```
    pub fn rendered_messages(&self) -> Vec<Message> {
        crate::variables::interpolate(&self.messages, &self.variables)
    }

    /// A provider-specific request field, sent only when `provider` serves the call
    /// (for example `seed` or `service_tier` for OpenAI). It overrides a field the SDK sets.
    ///
    /// ```
    /// let input = tracia::RunLocal::new("gpt-4o").user("hi")
    ///     .custom_option(tracia::Provider::OpenAi, "seed", serde_json::json!(7));
    /// # drop(input);
    /// ```
    pub fn custom_option(
        mut self,
        provider: Provider,
        key: impl Into<String>,
        value: Value,
    ) -> Self {
        self.custom_options
            .entry(provider)
            .or_default()
            .insert(key.into(), value);
        self
    }
}

/// The result of a `run_local` call (also the final result of a stream).
///
/// ```
/// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
/// let result = tracia.run_local(tracia::RunLocal::new("gpt-4o").user("Hi")).await?;
/// println!("{} ({} tokens, span {}, trace {})",
///     result.text, result.usage.total_tokens, result.span_id, result.trace_id);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RunResult {
    /// The assistant's text (tool-call-only answers give an empty string).
    pub text: String,
    /// The span of the call, `sp_` + 16 hex: the exported OpenTelemetry span id.
    pub span_id: String,
    /// The trace of the call, `tr_` + 16 or 32 hex (`sp_` + 16 hex when a span id named
    /// it): the exported OpenTelemetry trace id, in the form of [`crate::ids`].
    pub trace_id: String,
    /// The call's duration, the same as its span's: from the call's start to the last
    /// byte of the answer (for a stream, to its last event or its abort).
    pub latency_ms: u64,
    /// Token usage, normalized (input includes cached tokens, output includes reasoning).
    pub usage: Usage,
    /// The cost in USD, when the model's price is known; never a guess.
    pub cost: Option<f64>,
    /// Who served the call.
    pub provider: Provider,
    /// The model as requested.
    pub model: String,
    /// The model the provider says it used.
    pub response_model: Option<String>,
    /// The provider's response id.
    pub response_id: Option<String>,
    /// The model's reasoning ("thinking") text, when the provider returned it; never
    /// part of `text`.
    pub reasoning: Option<String>,
    /// The tool calls the model asked for.
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped.
    pub finish_reason: FinishReason,
    /// The assistant message to append to the history for the next turn.
    pub message: Message,
    /// True when a stream was stopped by `abort()` before its end.
    pub aborted: bool,
}

impl RunResult {
    /// Parses the text as JSON (for calls with a JSON response format).
    ///
    /// ```
    /// # fn demo(result: tracia::RunResult) {
    /// let joke: serde_json::Value = result.json().unwrap();
    /// # }
    /// ```
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.text)
    }
}

/// The assistant message for the next turn, in Tracia's shape.
pub(crate) fn assistant_message(text: &str, tool_calls: &[ToolCall]) -> Message {
    if tool_calls.is_empty() {
        return Message::assistant(text);
    }
    let text_part = (!text.is_empty()).then(|| ContentPart::text(text));
    let parts = text_part
        .into_iter()
        .chain(tool_calls.iter().cloned().map(ContentPart::ToolCall))
        .collect::<Vec<_>>();
    Message::assistant(parts)
}
