//! OpenTelemetry GenAI semantic-convention keys (v1.41, with the "latest" opt-in) and
//! the JSON shapes of the content attributes, both ways: the exporter to Tracia reads
//! the messages back from the span, so the span is the one source of truth.

use serde_json::{Value, json};

use crate::message::{Content, ContentPart, Message, Role, ToolCall, ToolDefinition};

pub(crate) const OPERATION_NAME: &str = "gen_ai.operation.name";
pub(crate) const PROVIDER_NAME: &str = "gen_ai.provider.name";
pub(crate) const REQUEST_MODEL: &str = "gen_ai.request.model";
pub(crate) const REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
pub(crate) const REQUEST_TOP_P: &str = "gen_ai.request.top_p";
pub(crate) const REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
pub(crate) const REQUEST_STOP_SEQUENCES: &str = "gen_ai.request.stop_sequences";
pub(crate) const RESPONSE_MODEL: &str = "gen_ai.response.model";
pub(crate) const RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
pub(crate) const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub(crate) const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub(crate) const INPUT_MESSAGES: &str = "gen_ai.input.messages";
pub(crate) const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
pub(crate) const TOOL_DEFINITIONS: &str = "gen_ai.tool.definitions";
pub(crate) const SESSION_ID: &str = "session.id";
pub(crate) const USER_ID: &str = "user.id";
pub(crate) const TRACIA_PROVIDER: &str = "tracia.provider";
pub(crate) const TRACIA_TAGS: &str = "tracia.tags";
pub(crate) const TRACIA_VARIABLES: &str = "tracia.variables";
pub(crate) const REQUEST_ENCODING_FORMATS: &str = "gen_ai.request.encoding_formats";
pub(crate) const EMBEDDINGS_DIMENSION_COUNT: &str = "gen_ai.embeddings.dimension.count";
pub(crate) const TRACIA_EMBEDDINGS_INPUT: &str = "tracia.embeddings.input";
pub(crate) const TRACIA_EMBEDDINGS_COUNT: &str = "tracia.embeddings.count";
/// Whether the call streamed.
pub(crate) const REQUEST_STREAM: &str = "gen_ai.request.stream";
/// `chat_completions` or `responses`: which OpenAI API served the call.
pub(crate) const OPENAI_API_TYPE: &str = "openai.api.type";
/// The slug of the Tracia prompt a `prompts.run` ran.
pub(crate) const PROMPT_NAME: &str = "gen_ai.prompt.name";
/// The version of that prompt.
pub(crate) const PROMPT_VERSION: &str = "gen_ai.prompt.version";
/// The call's cost in USD, when the model's price is known.
pub(crate) const TRACIA_COST_USD: &str = "tracia.cost_usd";
/// Seconds from the start to the first streamed chunk.
pub(crate) const RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
pub(crate) const RESPONSE_ID: &str = "gen_ai.response.id";
pub(crate) const USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
/// The v1.41 name of the cache-write count.
pub(crate) const USAGE_CACHE_CREATION_INPUT_TOKENS: &str =
    "gen_ai.usage.cache_creation.input_tokens";
/// The latest-experimental name of the cache-write count.
pub(crate) const USAGE_CACHE_WRITE_INPUT_TOKENS: &str = "gen_ai.usage.cache_write.input_tokens";
pub(crate) const USAGE_REASONING_OUTPUT_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";
/// `tracing-opentelemetry`'s field for the span name.
pub(crate) const OTEL_NAME: &str = "otel.name";
/// `tracing-opentelemetry`'s field for the span status.
pub(crate) const OTEL_STATUS_CODE: &str = "otel.status_code";
/// `tracing-opentelemetry`'s field for the status description.
pub(crate) const OTEL_STATUS_DESCRIPTION: &str = "otel.status_description";
pub(crate) const ERROR_TYPE: &str = "error.type";
/// On the `exception` event.
pub(crate) const EXCEPTION_TYPE: &str = "exception.type";
/// On the `exception` event.
pub(crate) const EXCEPTION_MESSAGE: &str = "exception.message";
/// `true` on a stream its caller stopped.
pub(crate) const TRACIA_STREAM_ABORTED: &str = "tracia.stream.aborted";
pub(crate) const SERVER_ADDRESS: &str = "server.address";
pub(crate) const SERVER_PORT: &str = "server.port";
pub(crate) const CONVERSATION_ID: &str = "gen_ai.conversation.id";
pub(crate) const OUTPUT_TYPE: &str = "gen_ai.output.type";
pub(crate) const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
/// The pre-1.37 name of `gen_ai.provider.name`, which other instrumentations still send.
pub(crate) const LEGACY_SYSTEM: &str = "gen_ai.system";
/// The older name of `gen_ai.usage.input_tokens`.
pub(crate) const LEGACY_USAGE_PROMPT_TOKENS: &str = "gen_ai.usage.prompt_tokens";
/// The older name of `gen_ai.usage.output_tokens`.
pub(crate) const LEGACY_USAGE_COMPLETION_TOKENS: &str = "gen_ai.usage.completion_tokens";
pub(crate) const OPENAI_RESPONSE_SERVICE_TIER: &str = "openai.response.service_tier";
pub(crate) const OPENAI_RESPONSE_SYSTEM_FINGERPRINT: &str = "openai.response.system_fingerprint";
/// `true` on the client span of `prompts.run`: the Tracia server that ran the prompt
/// stored the run (tokens, cost) itself, so backends must not count this span again.
pub(crate) const TRACIA_PROMPT_RUN: &str = "tracia.prompt.run";

/// Which version of the GenAI conventions to emit, from `OTEL_SEMCONV_STABILITY_OPT_IN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SemconvMode {
    /// semantic-conventions v1.41, what most backends read today.
    #[default]
    V1_41,
    /// `gen_ai_latest_experimental`: the latest draft (e.g. `cache_write` token names).
    LatestExperimental,
}

impl SemconvMode {
    /// Reads `OTEL_SEMCONV_STABILITY_OPT_IN` (comma-separated).
    pub(crate) fn from_opt_in(value: Option<&str>) -> Self {
        let latest = value
            .unwrap_or_default()
            .split(',')
            .any(|v| v.trim() == "gen_ai_latest_experimental");
        if latest {
            Self::LatestExperimental
        } else {
            Self::V1_41
        }
    }
}

fn role_str(role: Role) -> &'static str {
    role.as_str()
}

/// `gen_ai.input.messages`: Tracia messages as semconv `ChatMessage`s.
pub(crate) fn input_messages(messages: &[Message]) -> String {
    let out: Vec<Value> = messages
        .iter()
        .map(|m| {
            let parts: Vec<Value> = if m.role == Role::Tool {
                vec![json!({
                    "type": "tool_call_response",
                    "id": m.tool_call_id,
                    "response": m.content.text(),
                })]
            } else {
                content_parts(&m.content)
            };
            let mut msg = json!({"role": role_str(m.role), "parts": parts});
            if let Some(name) = &m.tool_name {
                msg["name"] = name.as_str().into();
            }
            msg
        })
        .collect();
    bounded_json(Value::Array(out))
}

fn content_parts(content: &Content) -> Vec<Value> {
    match content {
        Content::Text(t) => vec![json!({"type": "text", "content": t})],
        Content::Parts(parts) => parts
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => json!({"type": "text", "content": text}),
                ContentPart::ToolCall(c) => tool_call_part(c),
            })
            .collect(),
    }
}

fn tool_call_part(call: &ToolCall) -> Value {
    json!({"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments})
}

/// `gen_ai.output.messages`: the one choice as a semconv `OutputMessage`, reasoning first
/// (the semconv `reasoning` part), then the answer and its tool calls.
pub(crate) fn output_messages(
    reasoning: &str,
    text: &str,
    tool_calls: &[ToolCall],
    finish_reason: &str,
) -> String {
    let mut parts = Vec::new();
    if !reasoning.is_empty() {
        parts.push(json!({"type": "reasoning", "content": reasoning}));
    }
    if !text.is_empty() {
        parts.push(json!({"type": "text", "content": text}));
    }
    parts.extend(tool_calls.iter().map(tool_call_part));
    bounded_json(json!([{"role": "assistant", "parts": parts, "finish_reason": finish_reason}]))
}

/// `gen_ai.tool.definitions`; without `full`, names only (the semconv advises against
/// descriptions and schemas by default, and they can be content).
pub(crate) fn tool_definitions(tools: &[ToolDefinition], full: bool) -> String {
    let out: Vec<Value> = tools
        .iter()
        .map(|t| {
            let mut v = json!({"type": "function", "name": t.name});
            if full {
                v["parameters"] = t.parameters.clone();
                if let Some(d) = &t.description {
                    v["description"] = d.as_str().into();
                }
            }
            v
        })
        .collect();
    bounded_json(Value::Array(out))
}

/// The compact JSON text of `value`, as `Value::to_string` writes it, without going
/// through `fmt::Display` (several times slower for the messages of every call).
fn json_text(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The most bytes of one content attribute on a span (`gen_ai.input.messages`,
/// `gen_ai.output.messages`, `gen_ai.tool.definitions`, `tracia.variables`,
/// `tracia.embeddings.input`): 64 KiB, so that no span carries megabytes.
pub(crate) const MAX_CONTENT_ATTRIBUTE_BYTES: usize = 64 * 1024;

/// What ends a string (or, as a last resort, an attribute) cut to fit.
pub(crate) const TRUNCATED_MARKER: &str = "…[truncated]";

/// The JSON text of a content attribute, within [`MAX_CONTENT_ATTRIBUTE_BYTES`]. Over
/// it, the longest strings are cut (each ending with [`TRUNCATED_MARKER`]), their
/// allowed length halved until the text fits, so the JSON stays valid and readers (the
/// Tracia exporter) still find every message; only a value made of countless short
/// pieces is cut as text.
pub(crate) fn bounded_json(mut value: Value) -> String {
    let text = json_text(&value);
    if text.len() <= MAX_CONTENT_ATTRIBUTE_BYTES {
        return text;
    }
    let mut keep = MAX_CONTENT_ATTRIBUTE_BYTES / 2;
    let mut text = text;
    while keep >= 64 {
        shorten_strings(&mut value, keep);
        text = json_text(&value);
        if text.len() <= MAX_CONTENT_ATTRIBUTE_BYTES {
            return text;
        }
        keep /= 2;
    }
    let mut cut = MAX_CONTENT_ATTRIBUTE_BYTES - TRUNCATED_MARKER.len();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(TRUNCATED_MARKER);
    text
}

/// [`bounded_json`] of anything serializable (variables, texts to embed).
pub(crate) fn bounded_json_of(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .map(bounded_json)
        .unwrap_or_default()
}

/// Cuts every string in `value` longer than `keep` bytes to `keep`, plus the marker.
fn shorten_strings(value: &mut Value, keep: usize) {
    match value {
        Value::String(s) if s.len() > keep + TRUNCATED_MARKER.len() => {
            let mut cut = keep;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str(TRUNCATED_MARKER);
        }
        Value::Array(items) => items.iter_mut().for_each(|v| shorten_strings(v, keep)),
        Value::Object(map) => map.values_mut().for_each(|v| shorten_strings(v, keep)),
        _ => {}
    }
}

/// Reads `gen_ai.input.messages` back into Tracia messages (for the Tracia exporter).
pub(crate) fn messages_from_input(json_text: &str) -> Vec<Message> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(json_text) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|m| {
            let role = serde_json::from_value::<Role>(m.get("role")?.clone()).ok()?;
            let parts = m.get("parts")?.as_array()?;
            let tool_name = m.get("name").and_then(Value::as_str).map(str::to_owned);
            if role == Role::Tool {
                let part = parts.first()?;
                let response = match part.get("response")? {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let id = part.get("id").and_then(Value::as_str).unwrap_or_default();
                let msg = Message::tool(id, response);
                return Some(Message { tool_name, ..msg });
            }
            let converted: Vec<ContentPart> = parts.iter().filter_map(part_from_semconv).collect();
            let content = match converted.as_slice() {
                [ContentPart::Text { text }] => Content::Text(text.clone()),
                _ => Content::Parts(converted),
            };
            Some(Message {
                tool_name,
                ..Message::new(role, content)
            })
        })
        .collect()
}

fn part_from_semconv(part: &Value) -> Option<ContentPart> {
    match part.get("type")?.as_str()? {
        "text" => Some(ContentPart::text(part.get("content")?.as_str()?)),
        "tool_call" => Some(ContentPart::ToolCall(tool_call_from(part)?)),
        _ => None,
    }
}

fn tool_call_from(part: &Value) -> Option<ToolCall> {
    Some(ToolCall::new(
        part.get("id").and_then(Value::as_str).unwrap_or_default(),
        part.get("name")?.as_str()?,
        part.get("arguments").cloned().unwrap_or_else(|| json!({})),
    ))
}

/// Reads the answer text and tool calls back from `gen_ai.output.messages`.
pub(crate) fn output_from(json_text: &str) -> (String, Vec<ToolCall>) {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(json_text) else {
        return (String::new(), Vec::new());
    };
    let parts = items
        .first()
        .and_then(|m| m.get("parts"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let text = parts
        .iter()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|p| p.get("content").and_then(Value::as_str))
        .collect();
    let calls = parts
        .iter()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("tool_call"))
        .filter_map(tool_call_from)
        .collect();
    (text, calls)
}

/// Reads `gen_ai.tool.definitions` back into Tracia tool definitions.
pub(crate) fn tools_from(json_text: &str) -> Vec<ToolDefinition> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(json_text) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|t| {
            let mut def = ToolDefinition::new(t.get("name")?.as_str()?);
            def.description = t
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let Some(p) = t.get("parameters") {
                def.parameters = p.clone();
            }
            Some(def)
        })
        .collect()
}

/// The `gen_ai.operation.name` of a span Tracia stores: a GenAI span, but not the
/// client span of `prompts.run` (`tracia.prompt.run`), whose run the server that ran
/// it already stored with its tokens and cost.
pub(crate) fn genai_operation(span: &opentelemetry_sdk::trace::SpanData) -> Option<&str> {
    let mut operation = None;
    for kv in &span.attributes {
        match (kv.key.as_str(), &kv.value) {
            (OPERATION_NAME, opentelemetry::Value::String(v)) => operation = Some(v.as_str()),
            (TRACIA_PROMPT_RUN, opentelemetry::Value::Bool(true)) => return None,
            _ => {}
        }
    }
    operation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_attributes_are_bounded_and_stay_valid_json() {
        let long = "é".repeat(MAX_CONTENT_ATTRIBUTE_BYTES);
        let messages = [Message::system("Be terse."), Message::user(long.as_str())];
        let text = input_messages(&messages);
        assert!(text.len() <= MAX_CONTENT_ATTRIBUTE_BYTES, "{}", text.len());
        let back = messages_from_input(&text);
        assert_eq!(back.len(), 2, "every message is still there");
        assert_eq!(
            back[0].content.text(),
            "Be terse.",
            "short strings are kept whole"
        );
        assert!(back[1].content.text().ends_with(TRUNCATED_MARKER));
        // Countless short pieces: cut as text, with the marker.
        let many: Vec<String> = (0..40_000).map(|i| i.to_string()).collect();
        let text = bounded_json_of(&many);
        assert!(text.len() <= MAX_CONTENT_ATTRIBUTE_BYTES);
        assert!(text.ends_with(TRUNCATED_MARKER));
        // Small values are untouched.
        assert_eq!(bounded_json_of(&["a", "b"]), r#"["a","b"]"#);
    }

    #[test]
    fn messages_round_trip_through_the_span_json() {
        let history = vec![
            Message::system("You are terse."),
            Message::user("Weather in Paris?"),
            Message::assistant(vec![ContentPart::ToolCall(ToolCall::new(
                "call_1",
                "get_weather",
                json!({"city": "Paris"}),
            ))]),
            Message::tool("call_1", "rainy, 57°F"),
        ];
        let encoded = input_messages(&history);
        let v: Value = serde_json::from_str(&encoded).unwrap();
        assert_eq!(
            v[3],
            json!({"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy, 57°F"}]})
        );
        assert_eq!(
            v[0]["parts"][0],
            json!({"type": "text", "content": "You are terse."})
        );
        assert_eq!(messages_from_input(&encoded), history);
    }

    #[test]
    fn output_round_trip() {
        let calls = vec![ToolCall::new("c", "w", json!({"a": 1}))];
        let out = output_messages("", "Let me check.", &calls, "tool_call");
        assert_eq!(output_from(&out), ("Let me check.".into(), calls));
    }
}
