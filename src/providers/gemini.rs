//! The Google Gemini (AI Studio) wire formats: `generateContent` and
//! `batchEmbedContents`.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::message::{Message, ResponseFormat, Role, ToolCall, ToolChoice, ToolDefinition};
use crate::providers::chat::{
    self, ChatRequest, ChatResponse, ChatWire, ErrorBody, StreamAccumulator, StreamEvent,
    merge_options, path_segment,
};
use crate::providers::embed::{EmbedRequest, EmbedResponse, EmbedWire, InputType};
use crate::usage::Usage;

/// Gemini `generateContent` and `streamGenerateContent`, authenticated by API key.
#[derive(Debug, Default)]
pub(crate) struct GeminiChat;

/// Gemini gives tool calls no id, and Gemini 3 rejects the next turn unless each call
/// comes back with its thought signature ("Function call is missing a
/// thought_signature"). A signed call's id therefore carries its signature, so the
/// signature returns with the history whatever the caller stores; unsigned calls get
/// the shared positional ids.
const SIGNED_CALL_PREFIX: &str = "thoughtsig-";

/// JSON Schema keywords that Gemini's OpenAPI-subset `Schema` rejects with "Unknown
/// name ... Cannot find field" at any depth; schema generators (schemars, zod,
/// pydantic) emit them routinely.
const UNSUPPORTED_SCHEMA_KEYS: [&str; 3] = ["$schema", "additionalProperties", "propertyNames"];

/// Google's SDKs also take the resource name (`models/gemini-2.5-flash`).
fn bare_model(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

/// The key goes in a header, never in the `?key=` parameter: URLs end up in logs and
/// errors.
fn with_api_key(request: reqwest::RequestBuilder, api_key: &str) -> reqwest::RequestBuilder {
    match http::HeaderValue::from_str(api_key) {
        Ok(mut value) => {
            value.set_sensitive(true);
            request.header("x-goog-api-key", value)
        }
        // reqwest turns the invalid value into a build error (without the value).
        Err(_) => request.header("x-goog-api-key", api_key),
    }
}

impl ErrorBody for GeminiChat {}

impl ChatWire for GeminiChat {
    fn chat_url(&self, base_url: &str, r: &ChatRequest<'_>) -> String {
        let model = bare_model(r.model);
        let method = if r.stream {
            // Without `alt=sse` the stream is one long JSON array instead of events.
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        format!("{base_url}/v1beta/models/{}:{method}", path_segment(model))
    }

    fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        api_key: &str,
    ) -> reqwest::RequestBuilder {
        with_api_key(request, api_key)
    }

    fn encode(&self, r: &ChatRequest<'_>) -> Value {
        let mut body = Map::new();
        let (system, contents) = encode_messages(r.messages);
        body.insert("contents".into(), Value::Array(contents));
        if !system.is_empty() {
            // With `role: user`, as Google's own SDK sends it (see the tools fixture).
            body.insert(
                "systemInstruction".into(),
                json!({"parts": system, "role": "user"}),
            );
        }
        if !r.tools.is_empty() {
            let declarations: Vec<Value> = r.tools.iter().map(function_declaration).collect();
            body.insert(
                "tools".into(),
                json!([{"functionDeclarations": declarations}]),
            );
        }
        if let Some(choice) = r.tool_choice {
            body.insert(
                "toolConfig".into(),
                json!({"functionCallingConfig": function_calling_config(choice)}),
            );
        }
        let config = generation_config(r);
        if !config.is_empty() {
            body.insert("generationConfig".into(), Value::Object(config));
        }
        if let Some(custom) = r.custom {
            merge_options(&mut body, custom);
        }
        Value::Object(body)
    }

    fn decode(&self, body: &[u8]) -> Result<ChatResponse, String> {
        let wire: WireResponse =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON from Gemini: {e}"))?;
        // A whole response is a stream of one chunk: one decoder for both paths keeps
        // streamed and non-streamed results identical.
        let mut acc = StreamAccumulator::default();
        for event in wire.events()? {
            acc.push(event);
        }
        Ok(acc.finish())
    }

    fn decode_event(&self, _event: &str, data: &str) -> Result<Vec<StreamEvent>, String> {
        let chunk: WireResponse = serde_json::from_str(data)
            .map_err(|e| format!("invalid JSON in Gemini stream chunk: {e}"))?;
        chunk.events()
    }
}

/// The history as Gemini `contents` (roles `user` and `model`), and the system parts.
fn encode_messages(messages: &[Message]) -> (Vec<Value>, Vec<Value>) {
    // Gemini matches a tool result to its call by name, Tracia by id.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    let (system, turns) = chat::hoist_and_alternate(messages, |message| match message.role {
        Role::Assistant => {
            let mut parts = text_parts(message);
            for call in message.content.tool_calls() {
                call_names.insert(&call.id, &call.name);
                parts.push(function_call_part(call));
            }
            ("model", parts)
        }
        Role::Tool => ("user", vec![function_response_part(message, &call_names)]),
        _ => ("user", text_parts(message)),
    });
    let contents = turns
        .into_iter()
        // Gemini rejects a turn without parts.
        .filter(|(_, parts)| !parts.is_empty())
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    let system = system.into_iter().map(|t| json!({"text": t})).collect();
    (system, contents)
}

/// The text parts; empty ones are left out, as Gemini rejects an empty text part.
fn text_parts(message: &Message) -> Vec<Value> {
    message
        .content
        .text_parts()
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(|t| json!({"text": t}))
        .collect()
}

fn function_call_part(call: &ToolCall) -> Value {
    let mut part = json!({"functionCall": {"name": call.name, "args": call.arguments}});
    if let Some(signature) = signature_of(&call.id) {
        part["thoughtSignature"] = signature.into();
    }
    part
}

fn function_response_part(message: &Message, call_names: &HashMap<&str, &str>) -> Value {
    let id = message.tool_call_id.as_deref().unwrap_or_default();
    // The tool's name as given, else the name of the call it answers; a result with
    // neither (its call is not in the history) is sent under its id rather than no name.
    let name = message
        .tool_name
        .as_deref()
        .or_else(|| call_names.get(id).copied())
        .unwrap_or(id);
    let text = message.content.text();
    // `response` must be an object: a JSON object goes as it is, anything else under
    // `result`, the key Google's SDK wraps function results in.
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(object @ Value::Object(_)) => object,
        _ => json!({"result": text}),
    };
    json!({"functionResponse": {"name": name, "response": response}})
}

fn function_declaration(tool: &ToolDefinition) -> Value {
    let mut declaration = json!({"name": tool.name});
    if let Some(description) = &tool.description {
        declaration["description"] = description.as_str().into();
    }
    // Gemini rejects an object schema without properties ("should be non-empty for
    // OBJECT type"); a tool without parameters is declared without `parameters`.
    let has_properties = tool
        .parameters
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty());
    if has_properties {
        declaration["parameters"] = gemini_schema(&tool.parameters);
    }
    declaration
}

/// A JSON Schema without the keywords Gemini rejects, at every level of nesting.
/// Property names are kept whatever they are: only schemas are filtered.
fn gemini_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let filtered = map
        .iter()
        .filter(|(key, _)| !UNSUPPORTED_SCHEMA_KEYS.contains(&key.as_str()))
        .map(|(key, value)| {
            let value = match (key.as_str(), value) {
                ("properties", Value::Object(properties)) => Value::Object(
                    properties
                        .iter()
                        .map(|(name, s)| (name.clone(), gemini_schema(s)))
                        .collect(),
                ),
                ("items", _) => gemini_schema(value),
                ("anyOf", Value::Array(options)) => {
                    Value::Array(options.iter().map(gemini_schema).collect())
                }
                _ => value.clone(),
            };
            (key.clone(), value)
        })
        .collect();
    Value::Object(filtered)
}

fn function_calling_config(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!({"mode": "AUTO"}),
        ToolChoice::None => json!({"mode": "NONE"}),
        ToolChoice::Required => json!({"mode": "ANY"}),
        ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
    }
}

fn generation_config(r: &ChatRequest<'_>) -> Map<String, Value> {
    let mut config = Map::new();
    if let Some(t) = r.temperature {
        config.insert("temperature".into(), t.into());
    }
    if let Some(p) = r.top_p {
        config.insert("topP".into(), p.into());
    }
    if let Some(n) = r.max_output_tokens {
        config.insert("maxOutputTokens".into(), n.into());
    }
    if !r.stop_sequences.is_empty() {
        config.insert("stopSequences".into(), r.stop_sequences.into());
    }
    match r.response_format {
        Some(ResponseFormat::Json) => {
            config.insert("responseMimeType".into(), "application/json".into());
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            config.insert("responseMimeType".into(), "application/json".into());
            config.insert("responseSchema".into(), gemini_schema(schema));
        }
        // Gemini's output settings live in generationConfig (e.g. `text/x.enum`); a
        // value that is not an object has no meaning there.
        Some(ResponseFormat::Custom(Value::Object(custom))) => merge_options(&mut config, custom),
        Some(ResponseFormat::Custom(_)) | None => {}
    }
    config
}

/// The id of a call that came with a thought signature. Signatures are standard
/// base64; the id holds them URL-safe and unpadded, so it stays within the characters
/// every provider accepts in a tool-call id (`[A-Za-z0-9_-]`).
fn signed_call_id(signature: &str) -> String {
    let safe: String = signature
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    format!("{SIGNED_CALL_PREFIX}{safe}")
}

/// The thought signature a call id carries, back in standard base64.
fn signature_of(call_id: &str) -> Option<String> {
    let safe = call_id.strip_prefix(SIGNED_CALL_PREFIX)?;
    let mut signature: String = safe
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !signature.len().is_multiple_of(4) {
        signature.push('=');
    }
    Some(signature)
}

/// A `GenerateContentResponse`: a whole response, or one chunk of a stream.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    #[serde(default)]
    candidates: Vec<WireCandidate>,
    prompt_feedback: Option<WirePromptFeedback>,
    usage_metadata: Option<WireUsage>,
    model_version: Option<String>,
    response_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate {
    content: Option<WireContent>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireContent {
    #[serde(default)]
    parts: Vec<WirePart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePart {
    text: Option<String>,
    /// Set on reasoning ("thought summary") parts.
    #[serde(default)]
    thought: bool,
    function_call: Option<WireFunctionCall>,
    thought_signature: Option<String>,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    id: Option<String>,
    #[serde(default)]
    name: String,
    args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePromptFeedback {
    block_reason: Option<String>,
    block_reason_message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    thoughts_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
    total_token_count: Option<u64>,
}

impl WireResponse {
    fn events(self) -> Result<Vec<StreamEvent>, String> {
        if self.candidates.is_empty()
            && let Some(feedback) = self.prompt_feedback
            && let Some(reason) = feedback.block_reason
        {
            let detail = feedback
                .block_reason_message
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Err(format!("Gemini blocked the prompt ({reason}){detail}"));
        }
        let mut events = vec![StreamEvent::Meta {
            id: self.response_id,
            model: self.model_version,
        }];
        if let Some(candidate) = self.candidates.into_iter().next() {
            let parts = candidate.content.map(|c| c.parts).unwrap_or_default();
            for part in parts {
                if let Some(call) = part.function_call {
                    // The signature must come back; Gemini's own call id need not.
                    let id = part.thought_signature.as_deref().map(signed_call_id);
                    events.push(StreamEvent::WholeToolCall {
                        id: id.or(call.id),
                        name: call.name,
                        arguments: call.args.map(|a| a.to_string()).unwrap_or_default(),
                    });
                } else if let Some(text) = part.text {
                    events.push(if part.thought {
                        StreamEvent::Reasoning(text)
                    } else {
                        StreamEvent::Text(text)
                    });
                }
            }
            if let Some(reason) = candidate.finish_reason {
                events.push(StreamEvent::Finish(reason));
            }
        }
        if let Some(usage) = self.usage_metadata {
            events.push(StreamEvent::Usage(usage.normalize()));
        }
        Ok(events)
    }
}

impl WireUsage {
    /// Gemini's prompt count already includes cached tokens, but its candidates count
    /// leaves out the thinking tokens: output is candidates + thoughts.
    fn normalize(self) -> Usage {
        let input = self.prompt_token_count;
        let output = self
            .candidates_token_count
            .saturating_add(self.thoughts_token_count.unwrap_or(0));
        Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: self
                .total_token_count
                .unwrap_or(input.saturating_add(output)),
            cache_read_input_tokens: self.cached_content_token_count,
            cache_creation_input_tokens: None,
            reasoning_output_tokens: self.thoughts_token_count,
        }
    }
}

/// Gemini embeddings (`batchEmbedContents`, one entry per text).
#[derive(Debug, Default)]
pub(crate) struct GeminiEmbed;

impl ErrorBody for GeminiEmbed {}

impl EmbedWire for GeminiEmbed {
    fn url(&self, base_url: &str, model: &str) -> String {
        format!(
            "{base_url}/v1beta/models/{}:batchEmbedContents",
            path_segment(bare_model(model))
        )
    }

    fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        api_key: &str,
    ) -> reqwest::RequestBuilder {
        with_api_key(request, api_key)
    }

    fn takes_dimensions(&self, _model: &str) -> bool {
        true
    }

    /// The API's limit on entries per batch.
    fn max_batch(&self, _model: &str) -> usize {
        100
    }

    fn encode(&self, r: &EmbedRequest<'_>) -> Value {
        let model = format!("models/{}", bare_model(r.model));
        let requests: Vec<Value> = r
            .texts
            .iter()
            .map(|text| {
                let mut entry = json!({"model": model, "content": {"parts": [{"text": text}]}});
                if let Some(n) = r.dimensions {
                    entry["outputDimensionality"] = n.into();
                }
                if let Some(kind) = r.input_type {
                    entry["taskType"] = match kind {
                        InputType::Query => "RETRIEVAL_QUERY",
                        InputType::Document => "RETRIEVAL_DOCUMENT",
                    }
                    .into();
                }
                entry
            })
            .collect();
        json!({ "requests": requests })
    }

    /// Gemini reports no token count for embeddings.
    fn decode(&self, body: &[u8]) -> Result<EmbedResponse, String> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            embeddings: Vec<Item>,
        }
        #[derive(Deserialize)]
        struct Item {
            values: Vec<f64>,
        }
        let wire: Wire = serde_json::from_slice(body)
            .map_err(|e| format!("invalid Gemini embeddings JSON: {e}"))?;
        Ok(EmbedResponse {
            vectors: wire.embeddings.into_iter().map(|e| e.values).collect(),
            ..EmbedResponse::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_lose_rejected_keywords_at_every_depth_but_keep_property_names() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "additionalProperties": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "object", "additionalProperties": false,
                    "properties": {"k": {"type": "string"}}}},
                "either": {"anyOf": [{"type": "object", "propertyNames": {"pattern": "^a"}}, {"type": "null"}]}
            }
        });
        assert_eq!(
            gemini_schema(&schema),
            json!({
                "type": "object",
                "properties": {
                    "additionalProperties": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
                    "either": {"anyOf": [{"type": "object"}, {"type": "null"}]}
                }
            })
        );
    }

    #[test]
    fn tools_without_properties_are_declared_without_parameters() {
        let declaration = function_declaration(&ToolDefinition::new("now"));
        assert_eq!(declaration, json!({"name": "now"}));
    }

    #[test]
    fn signed_ids_give_back_the_exact_signature() {
        for signature in ["CiQB+/9z", "CiQB+/9=", "CiQB+/=="] {
            let id = signed_call_id(signature);
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{id}"
            );
            assert_eq!(signature_of(&id).as_deref(), Some(signature));
        }
        assert_eq!(signature_of("call_abc_0"), None);
    }
}
