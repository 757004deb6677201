//! `run_responses`: OpenAI's Responses API (Tracia's `runResponses`), its input items,
//! result and tool calls. The call rides on the chat machinery (validation, span,
//! transport); `openai_responses` holds the wire format.

use serde::Serialize;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::call::client::{CallState, Tracia, fetch};
use crate::call::responses_stream::ResponsesStream;
use crate::call::run::RunLocal;
use crate::call::run::call_option_setters;
use crate::call::span::{Api, Placement};
use crate::error::{Error, Result};
use crate::message::FinishReason;
use crate::message::{Message, ToolChoice, ToolDefinition};
use crate::providers::chat::ChatResponse;
use crate::providers::openai_responses::{ResponsesToolCall, function_call};
use crate::providers::provider::Provider;
use crate::usage::Usage;

/// One `run_responses` call: the model, the input items and the options of Tracia's
/// `runResponses`. The provider is always OpenAI.
///
/// Input items are added in order: [`developer`](Self::developer) and
/// [`user`](Self::user) messages, [`function_call_output`](Self::function_call_output)
/// answers, and any item the API returned before ([`item`](Self::item),
/// [`items`](Self::items)), sent verbatim.
///
/// ```no_run
/// use tracia::{RunResponses, ToolDefinition};
/// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
/// let weather = ToolDefinition::new("get_weather").with_parameters(serde_json::json!({
///     "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]
/// }));
/// let turn = || RunResponses::new("o4-mini")
///     .developer("Answer in one sentence.")
///     .user("What's the weather in Paris?")
///     .tool(weather.clone())
///     .max_output_tokens(2000);
/// let first = tracia.run_responses(turn()).await?;
/// // Pass the output back, then answer each call by its call id.
/// let mut next = turn().items(first.output_items.clone());
/// for call in &first.tool_calls {
///     next = next.function_call_output(&call.call_id, "rainy, 14°C");
/// }
/// let second = tracia.run_responses(next).await?;
/// println!("{}", second.text);
/// # Ok(()) }
/// ```
///
/// The tracing options are `run_local`'s:
///
/// ```
/// let input = tracia::RunResponses::new("o3-mini")
///     .user("Summarize this ticket.")
///     .timeout(std::time::Duration::from_secs(60))
///     .provider_api_key("sk-...")
///     .tag("support")
///     .user_id("user_42")
///     .session_id("ticket-981")
///     .send_trace(true)
///     .trace_id("tr_0123456789abcdef")
///     .parent_span_id("sp_0123456789abcdef")
///     .span_id("sp_00000000000000aa");
/// # drop(input);
/// ```
#[derive(Debug, Clone)]
pub struct RunResponses {
    /// The options shared with `run_local`; its messages stay empty until the call.
    call: RunLocal,
    /// The input items, in wire form.
    input: Vec<Value>,
}

impl RunResponses {
    /// A call to `model` with no input yet.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            call: RunLocal::new(model).provider(Provider::OpenAi),
            input: Vec::new(),
        }
    }

    pub(crate) fn with(mut self, f: impl FnOnce(RunLocal) -> RunLocal) -> Self {
        self.call = f(self.call);
        self
    }

    /// Appends an input item as is, e.g. one the API returned in
    /// [`ResponsesResult::output_items`].
    ///
    /// ```
    /// let input = tracia::RunResponses::new("o4-mini").item(serde_json::json!({
    ///     "role": "user",
    ///     "content": [{"type": "input_text", "text": "Describe this image."},
    ///                 {"type": "input_image", "image_url": "https://example.com/cat.png"}]
    /// }));
    /// # drop(input);
    /// ```
    pub fn item(mut self, item: Value) -> Self {
        self.input.push(item);
        self
    }

    /// Appends input items as they are, e.g. all of a previous result's output.
    ///
    /// ```
    /// # fn demo(previous: tracia::ResponsesResult) {
    /// let next = tracia::RunResponses::new("o4-mini")
    ///     .user("What is the capital of France?")
    ///     .items(previous.output_items.clone())
    ///     .user("And of Italy?");
    /// # drop(next);
    /// # }
    /// ```
    pub fn items(mut self, items: impl IntoIterator<Item = Value>) -> Self {
        self.input.extend(items);
        self
    }

    /// Appends a developer message (instructions).
    pub fn developer(self, content: impl Into<String>) -> Self {
        self.message("developer", content.into())
    }

    /// Appends a user message.
    pub fn user(self, content: impl Into<String>) -> Self {
        self.message("user", content.into())
    }

    fn message(self, role: &str, content: String) -> Self {
        self.item(json!({"type": "message", "role": role, "content": content}))
    }

    /// Appends the output of the function call `call_id`
    /// ([`ResponsesToolCall::call_id`]); pass the call's item back before it.
    ///
    /// ```
    /// let input = tracia::RunResponses::new("o4-mini")
    ///     .function_call_output("call_tYDv1bhtioyX33juEGDY4D6H", r#"{"temp_c": 12}"#);
    /// # drop(input);
    /// ```
    pub fn function_call_output(
        self,
        call_id: impl Into<String>,
        output: impl Into<String>,
    ) -> Self {
        let (call_id, output) = (call_id.into(), output.into());
        self.item(json!({"type": "function_call_output", "call_id": call_id, "output": output}))
    }

    /// Offers a function tool to the model.
    pub fn tool(self, tool: ToolDefinition) -> Self {
        self.with(|c| c.tool(tool))
    }

    /// Whether and which tool the model must call.
    pub fn tool_choice(self, choice: ToolChoice) -> Self {
        self.with(|c| c.tool_choice(choice))
    }

    /// The most tokens the answer may have, reasoning included (`max_output_tokens`).
    pub fn max_output_tokens(self, n: u32) -> Self {
        self.with(|c| c.max_output_tokens(n))
    }

    call_option_setters!(call.options);

    /// A request field merged over the body the SDK builds, e.g. `reasoning`.
    ///
    /// ```
    /// let input = tracia::RunResponses::new("o4-mini").user("Why is the sky blue?")
    ///     .custom_option("reasoning", serde_json::json!({"effort": "low", "summary": "auto"}));
    /// # drop(input);
    /// ```
    pub fn custom_option(self, key: impl Into<String>, value: Value) -> Self {
        self.with(|c| c.custom_option(Provider::OpenAi, key, value))
    }

    /// The call as the chat machinery takes it: the span's view of the input as
    /// messages, and the items themselves as the body's `input` (see
    /// `OpenAiResponses::encode`), under the caller's own custom fields.
    fn into_call(self) -> Result<RunLocal> {
        if self.input.is_empty() {
            return Err(Error::invalid("input is required and cannot be empty"));
        }
        let mut call = self.call.messages(self.input.iter().map(span_message));
        call.custom_options
            .entry(Provider::OpenAi)
            .or_default()
            .entry("input")
            .or_insert(Value::Array(self.input));
        Ok(call)
    }
}

/// An input item as a message on the span, as Tracia maps them: developer → system,
/// user → user, `function_call_output` → a tool message answering its call id, and
/// every other item → an assistant message whose content is the item's JSON.
fn span_message(item: &Value) -> Message {
    let field = |key: &str| item.get(key).and_then(Value::as_str);
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let is_message = matches!(field("type"), None | Some("message"));
    match (field("type"), field("role")) {
        (Some("function_call_output"), _) => Message::tool(
            field("call_id").unwrap_or_default(),
            text(item.get("output")),
        ),
        (_, Some("developer" | "system")) if is_message => {
            Message::system(text(item.get("content")))
        }
        (_, Some("user")) if is_message => Message::user(text(item.get("content"))),
        _ => Message::assistant(item.to_string()),
    }
}

/// The result of a `run_responses` call (also the final result of its stream).
///
/// ```no_run
/// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
/// let result = tracia.run_responses(tracia::RunResponses::new("o4-mini").user("Hi")).await?;
/// println!("{} ({} reasoning tokens, ${:?})", result.text,
///     result.usage.reasoning_output_tokens.unwrap_or(0), result.cost);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ResponsesResult {
    /// The answer text (empty when the model only called functions).
    pub text: String,
    /// The span of the call, `sp_` + 16 hex.
    pub span_id: String,
    /// The trace of the call, `tr_` + 16 or 32 hex (`sp_` + 16 hex when a span id named
    /// it); see [`crate::ids`].
    pub trace_id: String,
    /// The call's duration, the same as its span's: from the call's start to the last
    /// byte of the answer (for a stream, to its last event or its abort).
    pub latency_ms: u64,
    /// Token usage, normalized (input includes cached tokens, output includes reasoning).
    pub usage: Usage,
    /// The cost in USD, when the model's price is known.
    pub cost: Option<f64>,
    /// The model as requested.
    pub model: String,
    /// The model the API says it used.
    pub response_model: Option<String>,
    /// The API's response id (`resp_…`).
    pub response_id: Option<String>,
    /// The output items as the API returned them, to pass back with
    /// [`RunResponses::items`] (a stream keeps the items it finished).
    pub output_items: Vec<Value>,
    /// The function calls the model asked for.
    pub tool_calls: Vec<ResponsesToolCall>,
    /// The reasoning summary, when the API returned one (ask for it with the
    /// `reasoning` custom option).
    pub reasoning: Option<String>,
    /// Why the model stopped (`max_output_tokens` gives [`FinishReason::MaxTokens`]).
    pub finish_reason: FinishReason,
    /// True when a stream was stopped by `abort()` before its end.
    pub aborted: bool,
}

impl ResponsesResult {
    /// The result of a response already recorded on the call's span.
    pub(crate) fn new(
        state: &CallState,
        response: ChatResponse,
        cost: Option<f64>,
        aborted: bool,
    ) -> Self {
        Self {
            finish_reason: response.finish().or_aborted(aborted),
            tool_calls: response
                .output_items
                .iter()
                .filter_map(function_call)
                .collect(),
            span_id: state.span_id(),
            trace_id: state.trace_id(),
            latency_ms: state.latency_ms(),
            usage: response.usage.unwrap_or_default(),
            cost,
            model: state.model.clone(),
            response_model: response.model,
            response_id: response.id,
            output_items: response.output_items,
            reasoning: Some(response.reasoning).filter(|r| !r.is_empty()),
            text: response.text,
            aborted,
        }
    }
}

impl Tracia {
    /// Calls OpenAI's Responses API and waits for the whole answer.
    ///
    /// The call is a CLIENT span `chat {model}` like [`Tracia::run_local`]'s, with
    /// `openai.api.type = responses`. Invalid input fails with `INVALID_REQUEST` before
    /// any request is sent.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let result = tracia
    ///     .run_responses(tracia::RunResponses::new("o3-mini").developer("Be brief.").user("2+2?"))
    ///     .await?;
    /// assert!(!result.span_id.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn run_responses(&self, input: RunResponses) -> Result<ResponsesResult> {
        self.run_responses_at(input, Placement::default()).await
    }

    /// Calls OpenAI's Responses API and streams the answer; see [`ResponsesStream`].
    ///
    /// Resolves once OpenAI has accepted the request (so a 401 or 429 fails here).
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use tracia::ResponsesEvent;
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let input = tracia::RunResponses::new("o4-mini").user("Count to 5");
    /// let mut stream = tracia.run_responses_stream(input).await?;
    /// while let Some(event) = stream.next().await {
    ///     if let ResponsesEvent::TextDelta(text) = event? {
    ///         print!("{text}");
    ///     }
    /// }
    /// let result = stream.finish().await?;
    /// println!("\n{} tokens", result.usage.total_tokens);
    /// # Ok(()) }
    /// ```
    pub async fn run_responses_stream(&self, input: RunResponses) -> Result<ResponsesStream> {
        self.run_responses_stream_at(input, Placement::default())
            .await
    }

    pub(crate) async fn run_responses_at(
        &self,
        input: RunResponses,
        placement: Placement,
    ) -> Result<ResponsesResult> {
        let prepared = self.prepare(input.into_call()?, Api::Responses, false, placement)?;
        let span = prepared.state.call.span.clone();
        let (state, response) = fetch(prepared).instrument(span).await?;
        let cost = state.record(&response, false);
        Ok(ResponsesResult::new(&state, response, cost, false))
    }

    pub(crate) async fn run_responses_stream_at(
        &self,
        input: RunResponses,
        placement: Placement,
    ) -> Result<ResponsesStream> {
        let prepared = self.prepare(input.into_call()?, Api::Responses, true, placement)?;
        ResponsesStream::open(prepared).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Role;

    #[test]
    fn input_items_map_to_span_messages_as_tracia_does() {
        let call = json!({"type": "function_call", "id": "fc_1", "call_id": "call_1",
            "name": "get_weather", "arguments": "{}"});
        let input = RunResponses::new("o4-mini")
            .developer("Be brief.")
            .user("Weather?")
            .item(call.clone())
            .function_call_output("call_1", "rainy")
            .into_call()
            .unwrap();
        assert_eq!(
            input.messages,
            vec![
                Message::system("Be brief."),
                Message::user("Weather?"),
                Message::assistant(call.to_string()),
                Message::tool("call_1", "rainy"),
            ]
        );
        assert_eq!(input.messages[3].role, Role::Tool);
    }

    #[test]
    fn custom_fields_ride_with_the_input_and_empty_input_fails() {
        let input = RunResponses::new("o4-mini")
            .user("hi")
            .custom_option("store", json!(false))
            .into_call()
            .unwrap();
        let custom = &input.custom_options[&Provider::OpenAi];
        assert_eq!(custom["store"], json!(false));
        assert_eq!(
            custom["input"],
            json!([{"type": "message", "role": "user", "content": "hi"}])
        );
        let e = RunResponses::new("o4-mini").into_call().unwrap_err();
        assert_eq!(e.message(), "input is required and cannot be empty");
    }
}
