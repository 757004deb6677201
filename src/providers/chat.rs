//! What every provider shares: the normalized request and response, finish-reason
//! mapping, and the assembly of streamed deltas (text, tool-call fragments, usage).
//! Provider modules only translate their wire format to and from these.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::message::{
    FinishReason, Message, ResponseFormat, Role, ToolCall, ToolChoice, ToolDefinition,
};
use crate::usage::Usage;
// The supertrait of `ChatWire` and `EmbedWire`; `transport::send` reads error bodies with it.
pub(crate) use crate::transport::ErrorBody;

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
    /// The provider's own output items, verbatim, for APIs whose callers pass them back
    /// on the next turn (OpenAI Responses).
    pub output_items: Vec<Value>,
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
        Some("length" | "max_tokens" | "max_output_tokens") => FinishReason::MaxTokens,
        _ => FinishReason::Stop,
    }
}

/// A turn of the conversation on the wire: its role and content blocks.
pub(crate) type Turn = (&'static str, Vec<Value>);

/// The conversation as the APIs want it that take the system prompt apart and want user
/// and assistant turns to alternate (Anthropic, Gemini, Bedrock): system and developer
/// texts are hoisted (blank ones dropped, as these APIs reject them), every other
/// message becomes a role and blocks through `turn`, and consecutive turns of one role
/// are merged, which also puts the results of parallel tool calls in the one user turn
/// that must follow the calls.
pub(crate) fn hoist_and_alternate<'m>(
    messages: &'m [Message],
    mut turn: impl FnMut(&'m Message) -> Turn,
) -> (Vec<&'m str>, Vec<Turn>) {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for message in messages {
        if matches!(message.role, Role::System | Role::Developer) {
            let texts = message.content.text_parts().into_iter();
            system.extend(texts.filter(|t| !t.is_empty()));
            continue;
        }
        let (role, blocks) = turn(message);
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    (system, turns)
}

/// A tool call's arguments given as JSON: an object as it is, anything else `{}`, as
/// for arguments streamed as text ([`parse_arguments`]).
pub(crate) fn object_arguments(value: Value) -> Value {
    match value {
        v @ Value::Object(_) => v,
        _ => Value::Object(Map::new()),
    }
}

/// Parses tool-call arguments; invalid or empty JSON gives `{}` as in the Tracia SDKs.
pub(crate) fn parse_arguments(raw: &str) -> Value {
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

/// Structured output for providers without a JSON mode that every model supports
/// (Anthropic, Bedrock): the format's schema becomes this tool, the model is made to
/// call it, and the call's input is the answer text (streamed through
/// [`StreamEvent::AnswerCall`]).
pub(crate) const ANSWER_TOOL: &str = "tracia_json_response";

/// The answer tool's description and input schema for a JSON response format; `None`
/// without one, or for a custom format (which providers send as is).
pub(crate) fn answer_tool(format: Option<&ResponseFormat>) -> Option<(String, Value)> {
    let (schema, name, description) = match format? {
        // Any JSON object, like OpenAI's `json_object`.
        ResponseFormat::Json => (json!({"type": "object"}), None, None),
        ResponseFormat::JsonSchema {
            schema,
            name,
            description,
        } => (schema.clone(), name.as_deref(), description.as_deref()),
        ResponseFormat::Custom(_) => return None,
    };
    let mut about = String::from("Give your answer by calling this tool: its input is the answer");
    if let Some(name) = name {
        about.push_str(&format!(" ({name})"));
    }
    about.push('.');
    if let Some(d) = description {
        about.push(' ');
        about.push_str(d);
    }
    Some((about, schema))
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
    /// A complete tool call from a provider that sends calls whole and unnumbered
    /// (Gemini): it takes the next index.
    WholeToolCall {
        id: Option<String>,
        name: String,
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
    /// A complete output item, verbatim (see [`ChatResponse::output_items`]).
    OutputItem(Value),
    /// The provider said the stream is complete.
    Done,
}

impl StreamEvent {
    /// The bytes of answer this event adds: text, reasoning, tool-call arguments (what
    /// the accumulator keeps growing; the rest is small and replaced, not appended).
    pub fn answer_len(&self) -> usize {
        match self {
            Self::Text(t) | Self::Reasoning(t) => t.len(),
            Self::ToolCall { arguments, .. } | Self::WholeToolCall { arguments, .. } => {
                arguments.len()
            }
            _ => 0,
        }
    }
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
    /// The input of the answer calls: the whole answer, whatever text came before it.
    answer: Option<String>,
    /// The bytes of answer folded in so far ([`StreamEvent::answer_len`]).
    answer_bytes: usize,
    pub done: bool,
}

impl StreamAccumulator {
    /// What an event means given the calls seen so far: the fragments of an answer
    /// call (see [`StreamEvent::AnswerCall`]) are answer text.
    pub fn resolve(&self, event: StreamEvent) -> StreamEvent {
        match event {
            StreamEvent::ToolCall {
                index, arguments, ..
            } if self.answer_calls.contains(&index) => StreamEvent::Text(arguments),
            other => other,
        }
    }

    /// The bytes of answer folded in so far: what `max_answer_bytes` bounds.
    pub fn answer_bytes(&self) -> usize {
        self.answer_bytes
    }

    /// Folds one event in.
    pub fn push(&mut self, event: StreamEvent) {
        self.answer_bytes += event.answer_len();
        let r = &mut self.response;
        match event {
            StreamEvent::ToolCall {
                index, arguments, ..
            } if self.answer_calls.contains(&index) => {
                self.answer.get_or_insert_default().push_str(&arguments);
            }
            StreamEvent::Meta { id, model } => {
                r.id = r.id.take().or(id);
                r.model = r.model.take().or(model);
            }
            StreamEvent::Text(text) => r.text.push_str(&text),
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
            StreamEvent::WholeToolCall {
                id,
                name,
                arguments,
            } => {
                let index = self.calls.last_key_value().map_or(0, |(i, _)| i + 1);
                let id = id.unwrap_or_default();
                self.calls.insert(
                    index,
                    PartialCall {
                        id,
                        name,
                        arguments,
                    },
                );
            }
            StreamEvent::Finish(reason) => r.finish_reason = Some(reason),
            StreamEvent::Usage(usage) => r.usage = Some(merge_usage(r.usage, usage)),
            StreamEvent::Attribute(key, value) => r.attributes.push((key, value)),
            StreamEvent::OutputItem(item) => r.output_items.push(item),
            StreamEvent::Done => self.done = true,
        }
    }

    /// True once the provider sent its finish reason.
    pub fn finish_seen(&self) -> bool {
        self.response.finish_reason.is_some()
    }

    /// The assembled response, tool-call arguments parsed. A call that came without an
    /// id gets one, since a tool message can only answer a call by its id.
    pub fn finish(mut self) -> ChatResponse {
        if let Some(answer) = self.answer {
            self.response.text = answer;
        }
        let response_id = self.response.id.as_deref();
        self.response.tool_calls = self
            .calls
            .into_iter()
            .map(|(index, c)| {
                let id = if c.id.is_empty() {
                    fallback_call_id(response_id, index)
                } else {
                    c.id
                };
                ToolCall::new(id, c.name, parse_arguments(&c.arguments))
            })
            .collect();
        self.response
    }
}

/// The id of a tool call sent without one: its position in the response, qualified by
/// the response id so that calls of different turns differ. It is deterministic, so a
/// streamed response and the same one in a single body give the same ids.
fn fallback_call_id(response_id: Option<&str>, index: usize) -> String {
    match response_id {
        Some(id) => format!("call_{id}_{index}"),
        None => format!("call_{index}"),
    }
}

/// A model id as one URL path segment: everything but RFC 3986 unreserved characters
/// is percent-encoded (`:` of `…-v1:0` becomes `%3A`, `/` of an ARN `%2F`, `?` `%3F`),
/// so no model name reaches another path or the query. The dot segments `.` and `..`,
/// which URL parsing would resolve even encoded, are refused before any I/O
/// ([`crate::providers::provider::check_model`]).
pub(crate) fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Merges provider-specific options over an encoded body: objects merge key by key
/// (so an option inside a nested config keeps the encoded fields beside it), any
/// other value replaces what was there.
pub(crate) fn merge_options(body: &mut Map<String, Value>, options: &Map<String, Value>) {
    for (key, value) in options {
        match (body.get_mut(key), value) {
            (Some(Value::Object(inner)), Value::Object(overlay)) => merge_options(inner, overlay),
            _ => {
                body.insert(key.clone(), value.clone());
            }
        }
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
        total_tokens: pick(new.total_tokens, input.saturating_add(output))
            .max(input.saturating_add(output)),
        cache_read_input_tokens: new.cache_read_input_tokens.or(old.cache_read_input_tokens),
        cache_creation_input_tokens: new
            .cache_creation_input_tokens
            .or(old.cache_creation_input_tokens),
        reasoning_output_tokens: new.reasoning_output_tokens.or(old.reasoning_output_tokens),
    }
}

/// How a streaming response body is cut into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Server-sent events (`text/event-stream`).
    Sse,
    /// AWS event-stream binary frames (`application/vnd.amazon.eventstream`).
    AwsEventStream,
}

/// A provider's chat wire format. Implementations hold only translation: sending,
/// timeouts, errors, spans and stream assembly are shared.
pub(crate) trait ChatWire: ErrorBody {
    /// The URL of a chat call under `base_url` (no trailing slash).
    fn chat_url(&self, base_url: &str, request: &ChatRequest<'_>) -> String;
    /// Adds the provider's key-based authentication (and fixed headers) to a request:
    /// a bearer token unless the provider says otherwise.
    fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        api_key: &str,
    ) -> reqwest::RequestBuilder {
        request.bearer_auth(api_key)
    }
    /// The request body.
    fn encode(&self, request: &ChatRequest<'_>) -> Value;
    /// A complete (non-streaming) response body.
    fn decode(&self, body: &[u8]) -> Result<ChatResponse, String>;
    /// One event of a streaming response: its name and its (UTF-8) data.
    fn decode_event(&self, event: &str, data: &str) -> Result<Vec<StreamEvent>, String>;
    /// How streaming responses are framed.
    fn framing(&self) -> Framing {
        Framing::Sse
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
        acc.push(StreamEvent::Text("Here it is: ".into()));
        acc.push(StreamEvent::AnswerCall(1));
        assert_eq!(acc.resolve(frag(1, "1}")), StreamEvent::Text("1}".into()));
        acc.push(frag(1, "{\"a\": "));
        acc.push(frag(1, "1}"));
        acc.push(StreamEvent::Finish("tool_use".into()));
        let response = acc.finish();
        assert_eq!(
            response.text, "{\"a\": 1}",
            "the preamble is not the answer"
        );
        assert!(response.tool_calls.is_empty());
        assert_eq!(response.finish(), FinishReason::Stop);
    }
}
