//! The OpenAI Chat Completions wire format (also every OpenAI-compatible server).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::message::{Message, ResponseFormat, Role, ToolCall, ToolChoice};
use crate::providers::chat::{
    ChatRequest, ChatResponse, ChatWire, ErrorBody, StreamEvent, parse_arguments,
};
use crate::providers::embed::{EmbedRequest, EmbedResponse, EmbedWire, vector_from};
use crate::telemetry::semconv;
use crate::usage::Usage;

/// OpenAI Chat Completions.
#[derive(Debug, Default)]
pub(crate) struct OpenAiChat;

/// Reasoning models reject `max_tokens` and take `max_completion_tokens`.
fn takes_max_completion_tokens(model: &str) -> bool {
    ["o1", "o3", "o4", "gpt-5"]
        .iter()
        .any(|p| model.starts_with(p))
}

fn encode_message(message: &Message) -> Value {
    let role = match message.role {
        // Tracia sends developer as system, which every compatible server understands.
        Role::Developer | Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut out = Map::new();
    out.insert("role".into(), role.into());
    let text_parts = message.content.text_parts();
    let calls: Vec<Value> = message.content.tool_calls().map(encode_tool_call).collect();
    match text_parts.as_slice() {
        [] if !calls.is_empty() => {}
        [] => {
            out.insert("content".into(), "".into());
        }
        [one] => {
            out.insert("content".into(), (*one).into());
        }
        many => {
            let parts = many
                .iter()
                .map(|t| json!({"type": "text", "text": t}))
                .collect();
            out.insert("content".into(), Value::Array(parts));
        }
    }
    if !calls.is_empty() {
        out.insert("tool_calls".into(), Value::Array(calls));
    }
    if let Some(id) = &message.tool_call_id {
        out.insert("tool_call_id".into(), id.as_str().into());
    }
    Value::Object(out)
}

fn encode_tool_call(call: &ToolCall) -> Value {
    json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments.to_string()},
    })
}

impl ErrorBody for OpenAiChat {}

impl ChatWire for OpenAiChat {
    fn chat_url(&self, base_url: &str, _: &ChatRequest<'_>) -> String {
        format!("{}/chat/completions", base_url.trim_end_matches('/'))
    }

    fn encode(&self, r: &ChatRequest<'_>) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), r.model.into());
        body.insert(
            "messages".into(),
            r.messages.iter().map(encode_message).collect(),
        );
        if let Some(t) = r.temperature {
            body.insert("temperature".into(), t.into());
        }
        if let Some(p) = r.top_p {
            body.insert("top_p".into(), p.into());
        }
        if let Some(n) = r.max_output_tokens {
            let key = if takes_max_completion_tokens(r.model) {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            body.insert(key.into(), n.into());
        }
        if !r.stop_sequences.is_empty() {
            body.insert("stop".into(), r.stop_sequences.into());
        }
        if !r.tools.is_empty() {
            let tools = r
                .tools
                .iter()
                .map(|t| {
                    let mut f = json!({"name": t.name, "parameters": t.parameters});
                    if let Some(d) = &t.description {
                        f["description"] = d.as_str().into();
                    }
                    json!({"type": "function", "function": f})
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        if let Some(choice) = r.tool_choice {
            let v = match choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
            };
            body.insert("tool_choice".into(), v);
        }
        if let Some(format) = r.response_format {
            let v = match format {
                ResponseFormat::Json => json!({"type": "json_object"}),
                ResponseFormat::JsonSchema {
                    schema,
                    name,
                    description,
                } => {
                    let mut js =
                        json!({"name": name.as_deref().unwrap_or("response"), "schema": schema});
                    if let Some(d) = description {
                        js["description"] = d.as_str().into();
                    }
                    json!({"type": "json_schema", "json_schema": js})
                }
                ResponseFormat::Custom(v) => v.clone(),
            };
            body.insert("response_format".into(), v);
        }
        if r.stream {
            body.insert("stream".into(), true.into());
            // Without this OpenAI sends no usage at all in a stream.
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        if let Some(custom) = r.custom {
            body.extend(custom.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Value::Object(body)
    }

    fn decode(&self, body: &[u8]) -> Result<ChatResponse, String> {
        let wire: WireResponse =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON from OpenAI: {e}"))?;
        let choice = wire.choices.into_iter().next();
        let (message, finish_reason) = choice
            .map(|c| (c.message.unwrap_or_default(), c.finish_reason))
            .unwrap_or_default();
        let mut response = ChatResponse {
            text: message.content.or(message.refusal).unwrap_or_default(),
            tool_calls: message
                .tool_calls
                .into_iter()
                .map(|c| {
                    let f = c.function.unwrap_or_default();
                    ToolCall::new(
                        c.id.unwrap_or_default(),
                        f.name.unwrap_or_default(),
                        parse_arguments(f.arguments.as_deref().unwrap_or("")),
                    )
                })
                .collect(),
            finish_reason,
            usage: wire.usage.map(WireUsage::normalize),
            ..ChatResponse::default()
        };
        response.id = wire.id;
        response.model = wire.model;
        response.attributes = meta_attributes(wire.system_fingerprint, wire.service_tier);
        Ok(response)
    }

    fn decode_event(&self, _event: &str, data: &str) -> Result<Vec<StreamEvent>, String> {
        if data.trim() == "[DONE]" {
            return Ok(vec![StreamEvent::Done]);
        }
        let chunk: WireResponse = serde_json::from_str(data)
            .map_err(|e| format!("invalid JSON in OpenAI stream chunk: {e}"))?;
        let mut events = vec![StreamEvent::Meta {
            id: chunk.id,
            model: chunk.model,
        }];
        events.extend(
            meta_attributes(chunk.system_fingerprint, chunk.service_tier)
                .into_iter()
                .map(|(k, v)| StreamEvent::Attribute(k, v)),
        );
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content {
                    events.push(StreamEvent::Text(text));
                }
                for (pos, call) in delta.tool_calls.into_iter().enumerate() {
                    let f = call.function.unwrap_or_default();
                    events.push(StreamEvent::ToolCall {
                        index: call.index.unwrap_or(pos),
                        id: call.id,
                        name: f.name,
                        arguments: f.arguments.unwrap_or_default(),
                    });
                }
            }
            if let Some(reason) = choice.finish_reason {
                events.push(StreamEvent::Finish(reason));
            }
        }
        // Usage may ride on a chunk with no choices at all (OpenAI's include_usage) or on
        // the finish chunk (several compatible servers): read it wherever it is.
        if let Some(usage) = chunk.usage {
            events.push(StreamEvent::Usage(usage.normalize()));
        }
        Ok(events)
    }
}

/// OpenAI embeddings (also every OpenAI-compatible server).
#[derive(Debug, Default)]
pub(crate) struct OpenAiEmbed;

impl ErrorBody for OpenAiEmbed {}

impl EmbedWire for OpenAiEmbed {
    fn url(&self, base_url: &str, _model: &str) -> String {
        format!("{base_url}/embeddings")
    }

    /// Only ada-002 has a fixed size; compatible servers decide for their own models.
    fn takes_dimensions(&self, model: &str) -> bool {
        model != "text-embedding-ada-002"
    }

    fn encode(&self, r: &EmbedRequest<'_>) -> Value {
        // base64 is a quarter of the JSON size on the wire; decoding accepts both.
        let mut body = json!({"model": r.model, "input": r.texts, "encoding_format": "base64"});
        if let Some(n) = r.dimensions {
            body["dimensions"] = n.into();
        }
        body
    }

    fn decode(&self, body: &[u8]) -> Result<EmbedResponse, String> {
        decode_embeddings(body)
    }
}

/// The OpenAI embeddings response, which Voyage shares: `data[]` sorted by `index`.
pub(crate) fn decode_embeddings(body: &[u8]) -> Result<EmbedResponse, String> {
    #[derive(Deserialize)]
    struct Wire {
        data: Vec<Item>,
        model: Option<String>,
        usage: Option<WireEmbedUsage>,
    }
    #[derive(Deserialize)]
    struct Item {
        index: usize,
        embedding: Value,
    }
    #[derive(Deserialize)]
    struct WireEmbedUsage {
        prompt_tokens: Option<u64>,
        total_tokens: Option<u64>,
    }
    let mut wire: Wire =
        serde_json::from_slice(body).map_err(|e| format!("invalid embeddings JSON: {e}"))?;
    wire.data.sort_by_key(|d| d.index);
    Ok(EmbedResponse {
        vectors: wire
            .data
            .iter()
            .map(|d| vector_from(&d.embedding))
            .collect::<Result<_, _>>()?,
        input_tokens: wire.usage.and_then(|u| u.prompt_tokens.or(u.total_tokens)),
        model: wire.model,
    })
}

fn meta_attributes(
    fingerprint: Option<String>,
    tier: Option<String>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(f) = fingerprint {
        out.push((semconv::OPENAI_RESPONSE_SYSTEM_FINGERPRINT, f));
    }
    if let Some(t) = tier {
        out.push((semconv::OPENAI_RESPONSE_SERVICE_TIER, t));
    }
    out
}

#[derive(Deserialize)]
struct WireResponse {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    usage: Option<WireUsage>,
    system_fingerprint: Option<String>,
    service_tier: Option<String>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    index: usize,
    message: Option<WireMessage>,
    delta: Option<WireMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireMessage {
    content: Option<String>,
    refusal: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    index: Option<usize>,
    id: Option<String>,
    function: Option<WireFunction>,
}

#[derive(Deserialize, Default)]
struct WireFunction {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    total_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    /// OpenAI's counts already include cached and reasoning tokens: take them as they are.
    fn normalize(self) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens,
            output_tokens: self.completion_tokens,
            total_tokens: self
                .total_tokens
                .unwrap_or(self.prompt_tokens.saturating_add(self.completion_tokens)),
            cache_read_input_tokens: self.prompt_tokens_details.and_then(|d| d.cached_tokens),
            cache_creation_input_tokens: None,
            reasoning_output_tokens: self
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens),
        }
    }
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}
