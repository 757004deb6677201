//! The Anthropic Messages API wire format (`POST /v1/messages`).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::message::{Message, ResponseFormat, Role, ToolCall, ToolChoice};
use crate::providers::chat::{
    self, ANSWER_TOOL, ChatRequest, ChatResponse, ChatWire, ErrorBody, StreamEvent,
};
use crate::usage::Usage;

/// Anthropic Messages.
#[derive(Debug, Default)]
pub(crate) struct AnthropicMessages;

/// The API version every request pins.
const API_VERSION: &str = "2023-06-01";

/// Anthropic requires `max_tokens`; 4096 is the largest value every Claude model accepts
/// (the Claude 3 models cap their output there).
const DEFAULT_MAX_TOKENS: u32 = 4096;

impl ErrorBody for AnthropicMessages {}

impl ChatWire for AnthropicMessages {
    fn chat_url(&self, base_url: &str, _: &ChatRequest<'_>) -> String {
        format!("{}/v1/messages", base_url.trim_end_matches('/'))
    }

    fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        api_key: &str,
    ) -> reqwest::RequestBuilder {
        let request = request.header("anthropic-version", API_VERSION);
        match reqwest::header::HeaderValue::from_str(api_key) {
            Ok(mut key) => {
                // Kept out of `Debug` output, like reqwest's own bearer auth.
                key.set_sensitive(true);
                request.header("x-api-key", key)
            }
            // The builder then fails with an error that does not echo the value.
            Err(_) => request.header("x-api-key", api_key),
        }
    }

    fn encode(&self, r: &ChatRequest<'_>) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), r.model.into());
        body.insert(
            "max_tokens".into(),
            r.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS).into(),
        );
        let (system, messages) = encode_messages(r.messages);
        if !system.is_empty() {
            body.insert("system".into(), Value::Array(system));
        }
        body.insert("messages".into(), Value::Array(messages));
        if let Some(t) = r.temperature {
            body.insert("temperature".into(), t.into());
        }
        if let Some(p) = r.top_p {
            body.insert("top_p".into(), p.into());
        }
        if !r.stop_sequences.is_empty() {
            body.insert("stop_sequences".into(), r.stop_sequences.into());
        }
        let answer = answer_tool(r.response_format);
        let mut tools: Vec<Value> = r
            .tools
            .iter()
            .map(|t| tool(&t.name, t.description.as_deref(), &t.parameters))
            .collect();
        let has_user_tools = !tools.is_empty();
        tools.extend(answer.clone());
        if !tools.is_empty() {
            body.insert("tools".into(), Value::Array(tools));
            // Anthropic rejects a tool choice without tools, so one is sent only here.
            if let Some(choice) = tool_choice(r.tool_choice, answer.is_some(), has_user_tools) {
                body.insert("tool_choice".into(), choice);
            }
        }
        if let Some(ResponseFormat::Custom(Value::Object(fields))) = r.response_format {
            // Anthropic has no `response_format` field: a custom format's fields go into
            // the body as they are (e.g. its own `output_format` on models that have it).
            body.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if r.stream {
            body.insert("stream".into(), true.into());
        }
        if let Some(custom) = r.custom {
            body.extend(custom.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Value::Object(body)
    }

    fn decode(&self, body: &[u8]) -> Result<ChatResponse, String> {
        let wire: WireMessage = serde_json::from_slice(body)
            .map_err(|e| format!("invalid JSON from Anthropic: {e}"))?;
        let mut response = ChatResponse {
            id: wire.id,
            model: wire.model,
            finish_reason: wire.stop_reason,
            usage: wire.usage.map(WireUsage::normalize),
            ..ChatResponse::default()
        };
        for block in wire.content {
            match block {
                WireBlock::Text { text } => response.text.push_str(&text),
                WireBlock::Thinking { thinking } => response.reasoning.push_str(&thinking),
                // The answer itself: any text the model wrote before it is preamble.
                WireBlock::ToolUse { name, input, .. } if name == ANSWER_TOOL => {
                    response.text = input.to_string();
                }
                WireBlock::ToolUse { id, name, input } => {
                    let arguments = chat::object_arguments(input);
                    response.tool_calls.push(ToolCall::new(id, name, arguments));
                }
                WireBlock::Other => {}
            }
        }
        Ok(response)
    }

    fn decode_event(&self, _event: &str, data: &str) -> Result<Vec<StreamEvent>, String> {
        // Every event's data names its own type, so the SSE event name is not needed.
        let event: WireEvent = serde_json::from_str(data)
            .map_err(|e| format!("invalid JSON in Anthropic stream event: {e}"))?;
        Ok(match event {
            WireEvent::MessageStart { message } => {
                let mut events = vec![StreamEvent::Meta {
                    id: message.id,
                    model: message.model,
                }];
                events.extend(message.usage.map(|u| StreamEvent::Usage(u.normalize())));
                events
            }
            WireEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                WireBlock::Text { text } => vec![StreamEvent::Text(text)],
                WireBlock::Thinking { thinking } => vec![StreamEvent::Reasoning(thinking)],
                WireBlock::ToolUse { name, .. } if name == ANSWER_TOOL => {
                    vec![StreamEvent::AnswerCall(index)]
                }
                // The input arrives in `input_json_delta` fragments; the start has `{}`.
                WireBlock::ToolUse { id, name, .. } => vec![StreamEvent::ToolCall {
                    index,
                    id: Some(id),
                    name: Some(name),
                    arguments: String::new(),
                }],
                WireBlock::Other => Vec::new(),
            },
            WireEvent::ContentBlockDelta { index, delta } => match delta {
                WireDelta::TextDelta { text } => vec![StreamEvent::Text(text)],
                WireDelta::ThinkingDelta { thinking } => vec![StreamEvent::Reasoning(thinking)],
                WireDelta::InputJsonDelta { partial_json } => vec![StreamEvent::ToolCall {
                    index,
                    id: None,
                    name: None,
                    arguments: partial_json,
                }],
                WireDelta::Other => Vec::new(),
            },
            WireEvent::MessageDelta { delta, usage } => delta
                .stop_reason
                .map(StreamEvent::Finish)
                .into_iter()
                .chain(usage.map(|u| StreamEvent::Usage(u.normalize())))
                .collect(),
            WireEvent::MessageStop => vec![StreamEvent::Done],
            WireEvent::Error { error } => {
                return Err(format!(
                    "Anthropic stream error ({}): {}",
                    error.kind, error.message
                ));
            }
            WireEvent::Other => Vec::new(),
        })
    }
}

/// `(system, messages)` in Messages API form. Tool answers become `tool_result` blocks
/// of the user turn that follows the calls; a turn of one text is a plain string.
fn encode_messages(messages: &[Message]) -> (Vec<Value>, Vec<Value>) {
    let (system, turns) = chat::hoist_and_alternate(messages, |message| match message.role {
        Role::Tool => (
            "user",
            vec![json!({
                "type": "tool_result",
                "tool_use_id": message.tool_call_id.as_deref().unwrap_or_default(),
                "content": message.content.text(),
            })],
        ),
        Role::Assistant => ("assistant", blocks(message, true)),
        _ => ("user", blocks(message, false)),
    });
    let messages = turns
        .into_iter()
        .map(|(role, blocks)| {
            let content = match blocks.as_slice() {
                [one] if one["type"] == "text" => one["text"].clone(),
                _ => Value::Array(blocks),
            };
            json!({"role": role, "content": content})
        })
        .collect();
    (system.into_iter().map(text_block).collect(), messages)
}

/// A message's text blocks (empty ones dropped, as Anthropic rejects them, but an empty
/// message stays visible, as `""`, for Anthropic to name), then the assistant's tool
/// calls as `tool_use`.
fn blocks(message: &Message, with_calls: bool) -> Vec<Value> {
    let mut blocks: Vec<Value> = message
        .content
        .text_parts()
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(text_block)
        .collect();
    if with_calls {
        blocks.extend(message.content.tool_calls().map(tool_use));
    }
    if blocks.is_empty() {
        blocks.push(text_block(""));
    }
    blocks
}

fn tool_use(call: &ToolCall) -> Value {
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

fn tool(name: &str, description: Option<&str>, schema: &Value) -> Value {
    let mut tool = json!({"name": name, "input_schema": schema});
    if let Some(d) = description {
        tool["description"] = d.into();
    }
    tool
}

/// The answer tool of a JSON response format, in Anthropic's tool shape.
fn answer_tool(format: Option<&ResponseFormat>) -> Option<Value> {
    let (about, schema) = chat::answer_tool(format)?;
    Some(tool(ANSWER_TOOL, Some(&about), &schema))
}

/// Anthropic's `tool_choice`. With an answer tool the model must call a tool: the one the
/// caller named, else the answer tool itself, or any tool when the caller's tools may be
/// called first.
fn tool_choice(choice: Option<&ToolChoice>, answering: bool, user_tools: bool) -> Option<Value> {
    let named = |name: &str| json!({"type": "tool", "name": name});
    if answering {
        return Some(match choice {
            Some(ToolChoice::Tool(name)) => named(name),
            Some(ToolChoice::Auto | ToolChoice::Required) | None if user_tools => {
                json!({"type": "any"})
            }
            _ => named(ANSWER_TOOL),
        });
    }
    choice.map(|c| match c {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Tool(name) => named(name),
    })
}

#[derive(Deserialize)]
struct WireMessage {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    content: Vec<WireBlock>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    /// Extended thinking; its `signature` only matters when replaying the turn.
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    ToolUse {
        #[serde(default)]
        id: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// `redacted_thinking`, server tool blocks and anything newer.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: WireMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: WireBlock,
    },
    ContentBlockDelta {
        index: usize,
        delta: WireDelta,
    },
    MessageDelta {
        delta: WireStop,
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: WireError,
    },
    /// `ping`, `content_block_stop`, and event types Anthropic may add.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    /// `signature_delta`, `citations_delta`, and anything newer.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireStop {
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Anthropic's `input_tokens` leaves out cached tokens; the OTel input counts them.
    fn normalize(self) -> Usage {
        Usage::with_cache_apart(
            self.input_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
            self.output_tokens,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_blocks_and_events_are_skipped_and_error_events_fail() {
        let body = json!({
            "id": "msg_1", "model": "claude-sonnet-4-5", "stop_reason": "end_turn",
            "content": [
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                {"type": "text", "text": "Hi"}
            ],
            "usage": {"input_tokens": 3, "output_tokens": 1}
        });
        let response = AnthropicMessages
            .decode(body.to_string().as_bytes())
            .unwrap();
        assert_eq!(
            (response.text.as_str(), response.reasoning.as_str()),
            ("Hi", "")
        );

        let wire = AnthropicMessages;
        for data in [
            r#"{"type": "ping"}"#,
            r#"{"type": "content_block_stop", "index": 0}"#,
            r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "x"}}"#,
            r#"{"type": "some_future_event"}"#,
        ] {
            assert_eq!(wire.decode_event("", data).unwrap(), vec![], "{data}");
        }
        let error =
            r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
        assert_eq!(
            wire.decode_event("error", error).unwrap_err(),
            "Anthropic stream error (overloaded_error): Overloaded"
        );
    }
}
