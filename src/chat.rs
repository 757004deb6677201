//! What every provider shares: the normalized request and response, finish-reason
//! mapping, and the assembly of streamed deltas (text, tool-call fragments, usage).
//! Provider modules only translate their wire format to and from these.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::message::{Message, ResponseFormat, ToolCall, ToolChoice, ToolDefinition};
use crate::run::FinishReason;
use crate::usage::Usage;

/// A chat request after validation and interpolation, ready for a provider's encoder.
#[derive(Debug)]
pub(crate) struct ChatRequest<'a> {
    /// The model id sent on the wire.
    pub model: &'a str,
    pub messages: &'a [Message],
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_output_tokens: Option<u32>,
    pub stop_sequences: &'a [String],
    pub tools: &'a [ToolDefinition],
    pub tool_choice: Option<&'a ToolChoice>,
    pub response_format: Option<&'a ResponseFormat>,
    pub stream: bool,
    /// Provider-specific fields merged over the encoded body.
    pub custom: Option<&'a Map<String, Value>>,
}

/// A provider's answer, decoded.
#[derive(Debug, Default, Clone)]
pub(crate) struct ChatResponse {
    pub id: Option<String>,
    pub model: Option<String>,
    pub text: String,
    /// Reasoning ("thinking") text, kept out of `text`.
    pub reasoning: String,
    pub tool_calls: Vec<ToolCall>,
    /// The provider's own finish reason, before normalization.
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// Provider-specific span attributes (e.g. `openai.response.system_fingerprint`).
    pub attributes: Vec<(&'static str, String)>,
}

impl ChatResponse {
    /// Tracia's finish reason: tool calls win, then the provider's reason. A tool reason
    /// with no call left is a stop: the call was the answer itself (structured output
    /// through a forced tool).
    pub fn finish(&self) -> FinishReason {
        if !self.tool_calls.is_empty() {
            return FinishReason::ToolCalls;
        }
        match normalize_finish_reason(self.finish_reason.as_deref()) {
            FinishReason::ToolCalls => FinishReason::Stop,
            other => other,
        }
    }
}

/// Maps every provider's finish reason onto Tracia's three values.
pub(crate) fn normalize_finish_reason(raw: Option<&str>) -> FinishReason {
    match raw.map(str::to_ascii_lowercase).as_deref() {
        Some("tool_calls" | "tool_use" | "function_call" | "tool-calls") => FinishReason::ToolCalls,
        Some("length" | "max_tokens") => FinishReason::MaxTokens,
        _ => FinishReason::Stop,
    }
}

/// Parses tool-call arguments; invalid or empty JSON gives `{}` as in the Tracia SDKs.
pub(crate) fn parse_arguments(raw: &str) -> Value {
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

/// One decoded piece of a provider stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StreamEvent {
    /// Response id and model, usually from the first chunk.
    Meta {
        id: Option<String>,
        model: Option<String>,
    },
    /// Answer text.
    Text(String),
    /// Reasoning ("thinking") text: recorded, never handed to the caller as answer.
    Reasoning(String),
    /// A fragment of tool call `index`; id and name come with the first fragment.
    ToolCall {
        index: usize,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    /// Tool call `index` is the answer itself (structured output through a forced tool):
    /// its argument fragments are answer text, not a call.
    AnswerCall(usize),
    /// The provider's finish reason.
    Finish(String),
    /// Usage so far (later events replace earlier ones, field by field).
    Usage(Usage),
    /// A provider-specific span attribute.
    Attribute(&'static str, String),
    /// The provider said the stream is complete.
    Done,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Assembles stream events into the response a non-streaming call would have given.
#[derive(Debug, Default)]
pub(crate) struct StreamAccumulator {
    response: ChatResponse,
    calls: BTreeMap<usize, PartialCall>,
    answer_calls: BTreeSet<usize>,
    pub done: bool,
}

impl StreamAccumulator {
    /// Folds one event in; returns the text to hand to the caller, if any.
    pub fn push(&mut self, event: StreamEvent) -> Option<String> {
        let event = match event {
            StreamEvent::ToolCall {
                index, arguments, ..
            } if self.answer_calls.contains(&index) => StreamEvent::Text(arguments),
            other => other,
        };
        let r = &mut self.response;
        match event {
            StreamEvent::Meta { id, model } => {
                r.id = r.id.take().or(id);
                r.model = r.model.take().or(model);
            }
            StreamEvent::Text(text) if !text.is_empty() => {
                r.text.push_str(&text);
                return Some(text);
            }
            StreamEvent::Text(_) => {}
            StreamEvent::AnswerCall(index) => {
                self.answer_calls.insert(index);
            }
            StreamEvent::Reasoning(text) => r.reasoning.push_str(&text),
            StreamEvent::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                let call = self.calls.entry(index).or_default();
                if let Some(id) = id.filter(|s| !s.is_empty()) {
                    call.id = id;
                }
                if let Some(name) = name.filter(|s| !s.is_empty()) {
                    call.name = name;
                }
                call.arguments.push_str(&arguments);
            }
            StreamEvent::Finish(reason) => r.finish_reason = Some(reason),
            StreamEvent::Usage(usage) => r.usage = Some(merge_usage(r.usage, usage)),
            StreamEvent::Attribute(key, value) => r.attributes.push((key, value)),
            StreamEvent::Done => self.done = true,
        }
        None
    }

    /// True once the provider sent its finish reason.
    pub fn finish_seen(&self) -> bool {
        self.response.finish_reason.is_some()
    }

    /// The assembled response, tool-call arguments parsed.
    pub fn finish(mut self) -> ChatResponse {
        self.response.tool_calls = self
            .calls
            .into_values()
            .map(|c| ToolCall::new(c.id, c.name, parse_arguments(&c.arguments)))
            .collect();
        self.response
    }
}

/// Later usage reports win, but a report without a field keeps the earlier value
/// (Anthropic sends input in `message_start` and output in `message_delta`).
fn merge_usage(old: Option<Usage>, new: Usage) -> Usage {
    let Some(old) = old else { return new };
    let pick = |n: u64, o: u64| if n > 0 { n } else { o };
    let input = pick(new.input_tokens, old.input_tokens);
    let output = pick(new.output_tokens, old.output_tokens);
    Usage {
        input_tokens: input,
        output_tokens: output,
        total_tokens: pick(new.total_tokens, input + output).max(input + output),
        cache_read_input_tokens: new.cache_read_input_tokens.or(old.cache_read_input_tokens),
        cache_creation_input_tokens: new
            .cache_creation_input_tokens
            .or(old.cache_creation_input_tokens),
        reasoning_output_tokens: new.reasoning_output_tokens.or(old.reasoning_output_tokens),
    }
}

/// A provider's chat wire format. Implementations hold only translation: sending,
/// timeouts, errors, spans and stream assembly are shared.
pub(crate) trait ChatWire: Send + Sync + std::fmt::Debug {
    /// The URL of a chat call under `base_url` (no trailing slash).
    fn chat_url(&self, base_url: &str, request: &ChatRequest<'_>) -> String;
    /// Adds the provider's key-based authentication (and fixed headers) to a request.
    fn authorize(&self, request: reqwest::RequestBuilder, api_key: &str)
    -> reqwest::RequestBuilder;
    /// The request body.
    fn encode(&self, request: &ChatRequest<'_>) -> Value;
    /// A complete (non-streaming) response body.
    fn decode(&self, body: &[u8]) -> Result<ChatResponse, String>;
    /// One server-sent event of a streaming response.
    fn decode_event(&self, event: &str, data: &str) -> Result<Vec<StreamEvent>, String>;
    /// The human-readable message of an error body, when the body has one. The default
    /// reads `error.message` (OpenAI, Anthropic, Gemini) or `message` (Bedrock).
    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_normalize_like_tracia() {
        assert_eq!(
            normalize_finish_reason(Some("length")),
            FinishReason::MaxTokens
        );
        assert_eq!(
            normalize_finish_reason(Some("tool_use")),
            FinishReason::ToolCalls
        );
        assert_eq!(
            normalize_finish_reason(Some("content_filter")),
            FinishReason::Stop
        );
        assert_eq!(normalize_finish_reason(None), FinishReason::Stop);
    }

    #[test]
    fn tool_call_fragments_assemble_by_index() {
        let mut acc = StreamAccumulator::default();
        let frag =
            |index, id: Option<&str>, name: Option<&str>, args: &str| StreamEvent::ToolCall {
                index,
                id: id.map(String::from),
                name: name.map(String::from),
                arguments: args.into(),
            };
        acc.push(frag(0, Some("c0"), Some("w"), ""));
        acc.push(frag(1, Some("c1"), Some("t"), "{\"a\""));
        acc.push(frag(0, None, None, "{\"city\":\"Paris\"}"));
        acc.push(frag(1, None, None, ":1}"));
        acc.push(frag(2, Some("c2"), Some("broken"), "{nope"));
        let calls = acc.finish().tool_calls;
        assert_eq!(
            calls[0],
            ToolCall::new("c0", "w", serde_json::json!({"city": "Paris"}))
        );
        assert_eq!(calls[1].arguments, serde_json::json!({"a": 1}));
        assert_eq!(calls[2].arguments, serde_json::json!({}));
    }

    #[test]
    fn an_answer_call_streams_as_text_and_finishes_as_stop() {
        let mut acc = StreamAccumulator::default();
        let frag = |index, args: &str| StreamEvent::ToolCall {
            index,
            id: None,
            name: None,
            arguments: args.into(),
        };
        acc.push(StreamEvent::AnswerCall(1));
        assert_eq!(acc.push(frag(1, "{\"a\": ")), Some("{\"a\": ".into()));
        assert_eq!(acc.push(frag(1, "1}")), Some("1}".into()));
        acc.push(StreamEvent::Finish("tool_use".into()));
        let response = acc.finish();
        assert_eq!(response.text, "{\"a\": 1}");
        assert!(response.tool_calls.is_empty());
        assert_eq!(response.finish(), FinishReason::Stop);
    }
}
