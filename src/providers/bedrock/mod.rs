//! The Amazon Bedrock wire formats: Converse / ConverseStream, and embeddings through
//! InvokeModel (Titan, Cohere).
//!
//! - **System** and developer messages go in `system`; tool results are user-role
//!   `toolResult` blocks; consecutive same-role messages are merged, because Converse
//!   wants user and assistant turns to alternate.
//! - **Structured output**: Converse has no JSON mode every model supports, so a
//!   response format becomes a tool, `json_response`, whose input schema is the
//!   format's schema, and `toolChoice` forces it (`any` when the caller has tools of
//!   its own). Its input is then returned as the answer text (in a stream: once the
//!   stream is complete). `ResponseFormat::Custom` is merged into the body as is, e.g.
//!   a model's native structured-output fields.
//! - **Custom options** are merged at the top level of the body, where every Converse
//!   field can be reached (`guardrailConfig`, `performanceConfig`, `requestMetadata`, …);
//!   model-specific parameters go under their own key, e.g.
//!   `custom_option(Provider::AmazonBedrock, "additionalModelRequestFields", json!({"top_k": 5}))`.
//! - **Usage**: like Anthropic's, Bedrock's `inputTokens` leaves out the tokens read
//!   from or written to the prompt cache (its `totalTokens` counts them), so input is
//!   `inputTokens + cacheReadInputTokens + cacheWriteInputTokens`.

pub(crate) mod aws;
pub(crate) mod eventstream;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::message::{Message, ResponseFormat, Role, ToolCall, ToolChoice};
use crate::providers::chat::{
    self, ANSWER_TOOL, ChatRequest, ChatResponse, ChatWire, ErrorBody, Framing, StreamEvent,
    path_segment,
};
use crate::providers::embed::{EmbedRequest, EmbedResponse, EmbedWire, InputType, vector_from};
use crate::usage::Usage;

/// Bedrock Converse.
#[derive(Debug, Default)]
pub(crate) struct BedrockConverse;

/// The id of the guardrail that assessed the call (semconv `aws-bedrock.md`).
const GUARDRAIL_ID: &str = "aws.bedrock.guardrail.id";

fn text_block(text: &str) -> Value {
    json!({ "text": text })
}

fn tool_spec(name: &str, description: Option<&str>, schema: &Value) -> Value {
    let mut spec = json!({"name": name, "inputSchema": {"json": schema}});
    if let Some(d) = description {
        spec["description"] = d.into();
    }
    json!({ "toolSpec": spec })
}

/// The content blocks of a user or assistant message: its text (blank text is
/// rejected by Converse, so it is left out) and tool calls.
fn content_blocks(message: &Message) -> Vec<Value> {
    let mut blocks: Vec<Value> = message
        .content
        .text_parts()
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(text_block)
        .collect();
    blocks.extend(
        message
            .content
            .tool_calls()
            .map(|c| json!({"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.arguments}})),
    );
    if blocks.is_empty() {
        // An empty message stays visible to the provider, which names the problem.
        blocks.push(text_block(""));
    }
    blocks
}

/// A tool message as a `toolResult` block; a JSON object result is sent as `json`.
fn tool_result(message: &Message) -> Value {
    let text = message.content.text();
    let content = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => json!({ "json": v }),
        _ => text_block(&text),
    };
    json!({"toolResult": {
        "toolUseId": message.tool_call_id.as_deref().unwrap_or_default(),
        "content": [content],
    }})
}

/// `(system, messages)` in Converse form.
fn encode_messages(messages: &[Message]) -> (Vec<Value>, Vec<Value>) {
    let (system, turns) = chat::hoist_and_alternate(messages, |message| match message.role {
        Role::Assistant => ("assistant", content_blocks(message)),
        Role::Tool => ("user", vec![tool_result(message)]),
        _ => ("user", content_blocks(message)),
    });
    let messages = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    (system.into_iter().map(text_block).collect(), messages)
}

/// `toolConfig`, with the response-format tool when one is asked for.
fn tool_config(r: &ChatRequest<'_>) -> Option<Value> {
    if r.tool_choice == Some(&ToolChoice::None) && r.response_format.is_none() {
        // Converse has no "none" choice: a call without tools cannot call one.
        return None;
    }
    let mut tools: Vec<Value> = r
        .tools
        .iter()
        .map(|t| tool_spec(&t.name, t.description.as_deref(), &t.parameters))
        .collect();
    let mut choice = match r.tool_choice {
        Some(ToolChoice::Auto) => Some(json!({"auto": {}})),
        Some(ToolChoice::Required) => Some(json!({"any": {}})),
        Some(ToolChoice::Tool(name)) => Some(json!({"tool": {"name": name}})),
        Some(ToolChoice::None) | None => None,
    };
    if let Some((description, schema)) = chat::answer_tool(r.response_format) {
        choice = Some(if tools.is_empty() {
            json!({"tool": {"name": ANSWER_TOOL}})
        } else {
            json!({"any": {}})
        });
        tools.push(tool_spec(ANSWER_TOOL, Some(&description), &schema));
    }
    if tools.is_empty() {
        return None;
    }
    let mut config = json!({ "tools": tools });
    if let Some(choice) = choice {
        config["toolChoice"] = choice;
    }
    Some(config)
}

impl ErrorBody for BedrockConverse {}

impl ChatWire for BedrockConverse {
    fn chat_url(&self, base_url: &str, r: &ChatRequest<'_>) -> String {
        let operation = if r.stream {
            "converse-stream"
        } else {
            "converse"
        };
        format!(
            "{}/model/{}/{operation}",
            base_url.trim_end_matches('/'),
            path_segment(r.model)
        )
    }

    // `authorize`: the default bearer token, a Bedrock API key; without one the
    // request is signed with SigV4 instead.

    fn encode(&self, r: &ChatRequest<'_>) -> Value {
        let (system, messages) = encode_messages(r.messages);
        let mut body = Map::new();
        body.insert("messages".into(), messages.into());
        if !system.is_empty() {
            body.insert("system".into(), system.into());
        }
        let mut inference = Map::new();
        if let Some(n) = r.max_output_tokens {
            inference.insert("maxTokens".into(), n.into());
        }
        if let Some(t) = r.temperature {
            inference.insert("temperature".into(), t.into());
        }
        if let Some(p) = r.top_p {
            inference.insert("topP".into(), p.into());
        }
        if !r.stop_sequences.is_empty() {
            inference.insert("stopSequences".into(), r.stop_sequences.into());
        }
        if !inference.is_empty() {
            body.insert("inferenceConfig".into(), inference.into());
        }
        if let Some(config) = tool_config(r) {
            body.insert("toolConfig".into(), config);
        }
        if let Some(ResponseFormat::Custom(Value::Object(fields))) = r.response_format {
            body.extend(fields.clone());
        }
        if let Some(custom) = r.custom {
            body.extend(custom.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Value::Object(body)
    }

    fn decode(&self, body: &[u8]) -> Result<ChatResponse, String> {
        let wire: WireResponse =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON from Bedrock: {e}"))?;
        let mut response = ChatResponse {
            finish_reason: wire.stop_reason,
            usage: wire.usage.map(WireUsage::normalize),
            attributes: guardrail_attribute(wire.trace.as_ref())
                .into_iter()
                .collect(),
            ..ChatResponse::default()
        };
        let content = wire
            .output
            .and_then(|o| o.message)
            .map(|m| m.content)
            .unwrap_or_default();
        for block in content {
            if let Some(text) = block.text {
                response.text.push_str(&text);
            }
            match block.tool_use {
                // The answer itself: any text the model wrote before it is preamble.
                Some(call) if call.name == ANSWER_TOOL => {
                    response.text = call.input.to_string();
                }
                Some(call) => {
                    let arguments = chat::object_arguments(call.input);
                    response
                        .tool_calls
                        .push(ToolCall::new(call.tool_use_id, call.name, arguments));
                }
                None => {}
            }
            if let Some(text) = block
                .reasoning_content
                .and_then(|r| r.reasoning_text)
                .map(|r| r.text)
            {
                response.reasoning.push_str(&text);
            }
        }
        Ok(response)
    }

    fn decode_event(&self, event: &str, data: &str) -> Result<Vec<StreamEvent>, String> {
        let wire: WireEvent = serde_json::from_str(data)
            .map_err(|e| format!("invalid JSON in Bedrock {event} event: {e}"))?;
        let index = wire.content_block_index.unwrap_or_default();
        let mut events = Vec::new();
        match event {
            "contentBlockStart" => {
                let start = wire.start.and_then(|s| s.tool_use);
                if start.as_ref().is_some_and(|s| s.name == ANSWER_TOOL) {
                    events.push(StreamEvent::AnswerCall(index));
                } else if let Some(start) = start {
                    events.push(StreamEvent::ToolCall {
                        index,
                        id: Some(start.tool_use_id),
                        name: Some(start.name),
                        arguments: String::new(),
                    });
                }
            }
            "contentBlockDelta" => {
                let delta = wire.delta.unwrap_or_default();
                if let Some(text) = delta.text {
                    events.push(StreamEvent::Text(text));
                }
                if let Some(tool) = delta.tool_use {
                    events.push(StreamEvent::ToolCall {
                        index,
                        id: None,
                        name: None,
                        arguments: tool.input,
                    });
                }
                if let Some(text) = delta.reasoning_content.and_then(|r| r.text) {
                    events.push(StreamEvent::Reasoning(text));
                }
            }
            "messageStop" => events.extend(wire.stop_reason.map(StreamEvent::Finish)),
            "metadata" => {
                events.extend(wire.usage.map(|u| StreamEvent::Usage(u.normalize())));
                events.extend(
                    guardrail_attribute(wire.trace.as_ref())
                        .map(|(k, v)| StreamEvent::Attribute(k, v)),
                );
                // Usage is the last thing Bedrock sends.
                events.push(StreamEvent::Done);
            }
            // messageStart (the role) and contentBlockStop carry nothing to keep.
            _ => {}
        }
        Ok(events)
    }

    fn framing(&self) -> Framing {
        Framing::AwsEventStream
    }
}

/// The guardrail id, from the keys of the guardrail trace's assessments.
fn guardrail_attribute(trace: Option<&Value>) -> Option<(&'static str, String)> {
    let guardrail = trace?.get("guardrail")?;
    ["inputAssessment", "outputAssessments"]
        .iter()
        .filter_map(|k| guardrail.get(*k)?.as_object()?.keys().next())
        .next()
        .map(|id| (GUARDRAIL_ID, id.clone()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    output: Option<WireOutput>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
    trace: Option<Value>,
}

#[derive(Deserialize)]
struct WireOutput {
    message: Option<WireMessage>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Vec<WireBlock>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireBlock {
    text: Option<String>,
    tool_use: Option<WireToolUse>,
    reasoning_content: Option<WireReasoning>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireToolUse {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireReasoning {
    reasoning_text: Option<WireReasoningText>,
}

#[derive(Deserialize)]
struct WireReasoningText {
    text: String,
}

/// Any ConverseStream event's payload (each uses some of the fields; `p` is padding).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent {
    content_block_index: Option<usize>,
    start: Option<WireStart>,
    delta: Option<WireDelta>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
    trace: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStart {
    tool_use: Option<WireToolStart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireToolStart {
    tool_use_id: String,
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireDelta {
    text: Option<String>,
    tool_use: Option<WireToolDelta>,
    reasoning_content: Option<WireReasoningDelta>,
}

#[derive(Deserialize)]
struct WireToolDelta {
    #[serde(default)]
    input: String,
}

#[derive(Deserialize)]
struct WireReasoningDelta {
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    total_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_write_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Cache reads and writes are outside `inputTokens`: add them (see the module docs).
    fn normalize(self) -> Usage {
        let mut usage = Usage::with_cache_apart(
            self.input_tokens,
            self.cache_read_input_tokens,
            self.cache_write_input_tokens,
            self.output_tokens,
        );
        usage.total_tokens = usage.total_tokens.max(self.total_tokens.unwrap_or(0));
        usage
    }
}

/// Bedrock embeddings through `InvokeModel`: Amazon Titan and Cohere Embed bodies.
#[derive(Debug, Default)]
pub(crate) struct BedrockEmbed;

impl ErrorBody for BedrockEmbed {}

fn is_cohere(model: &str) -> bool {
    model.contains("cohere.")
}

impl EmbedWire for BedrockEmbed {
    fn url(&self, base_url: &str, model: &str) -> String {
        format!("{base_url}/model/{}/invoke", path_segment(model))
    }

    /// Titan embeds one text per request; Cohere takes up to 96.
    fn max_batch(&self, model: &str) -> usize {
        if is_cohere(model) { 96 } else { 1 }
    }

    /// Titan v2 shortens to 256 or 512; Titan v1 and Cohere v3 have a fixed size.
    fn takes_dimensions(&self, model: &str) -> bool {
        model.contains("titan-embed-text-v2") || model.contains("cohere.embed-v4")
    }

    fn encode(&self, r: &EmbedRequest<'_>) -> Value {
        if is_cohere(r.model) {
            // Cohere requires input_type; documents are the common case.
            let input_type = match r.input_type {
                Some(InputType::Query) => "search_query",
                _ => "search_document",
            };
            let mut body = json!({"texts": r.texts, "input_type": input_type});
            if let Some(n) = r.dimensions {
                body["output_dimension"] = n.into();
            }
            return body;
        }
        let mut body = json!({"inputText": r.texts.first().map(String::as_str).unwrap_or("")});
        if let Some(n) = r.dimensions {
            body["dimensions"] = n.into();
        }
        body
    }

    fn decode(&self, body: &[u8]) -> Result<EmbedResponse, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            /// Titan: one vector.
            embedding: Option<Value>,
            input_text_token_count: Option<u64>,
            /// Cohere: `[[..]]`, or `{"float": [[..]]}` when embedding types were asked.
            embeddings: Option<Value>,
        }
        let wire: Wire = serde_json::from_slice(body)
            .map_err(|e| format!("invalid Bedrock embeddings JSON: {e}"))?;
        let vectors = match (wire.embedding, wire.embeddings) {
            (Some(one), _) => vec![vector_from(&one)?],
            (None, Some(many)) => {
                let list = many.get("float").unwrap_or(&many);
                list.as_array()
                    .ok_or("embeddings is not a list")?
                    .iter()
                    .map(vector_from)
                    .collect::<Result<_, _>>()?
            }
            (None, None) => return Err("no embedding in the response".into()),
        };
        Ok(EmbedResponse {
            vectors,
            input_tokens: wire.input_text_token_count,
            model: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ContentPart, ToolDefinition};

    fn request<'a>(messages: &'a [Message]) -> ChatRequest<'a> {
        ChatRequest {
            model: "eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
            messages,
            temperature: None,
            top_p: None,
            max_output_tokens: None,
            stop_sequences: &[],
            tools: &[],
            tool_choice: None,
            response_format: None,
            stream: false,
            custom: None,
        }
    }

    #[test]
    fn model_ids_are_one_encoded_path_segment() {
        let messages = [Message::user("hi")];
        let mut r = request(&messages);
        assert_eq!(
            BedrockConverse.chat_url("https://h/", &r),
            "https://h/model/eu.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
        );
        r.stream = true;
        r.model = "arn:aws:bedrock:us-east-1:12:inference-profile/x";
        assert_eq!(
            BedrockConverse.chat_url("https://h", &r),
            "https://h/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A12%3Ainference-profile%2Fx/converse-stream"
        );
    }

    #[test]
    fn history_with_tools_alternates_roles_and_answers_tool_use() {
        let call = ToolCall::new("t1", "get_weather", json!({"location": "Paris"}));
        let messages = [
            Message::system("Be brief."),
            Message::user("Weather in Paris and Rome?"),
            Message::assistant(vec![
                ContentPart::text("Checking."),
                ContentPart::ToolCall(call),
            ]),
            Message::tool("t1", "{\"temp\": 21}"),
            Message::tool("t2", "sunny"),
            Message::user("Thanks"),
            Message::developer(""),
        ];
        let body = BedrockConverse.encode(&request(&messages));
        assert_eq!(body["system"], json!([{"text": "Be brief."}]));
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"text": "Weather in Paris and Rome?"}]},
                {"role": "assistant", "content": [
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"location": "Paris"}}}
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "t1", "content": [{"json": {"temp": 21}}]}},
                    {"toolResult": {"toolUseId": "t2", "content": [{"text": "sunny"}]}},
                    {"text": "Thanks"}
                ]}
            ])
        );
        assert!(body.get("inferenceConfig").is_none() && body.get("toolConfig").is_none());
    }

    #[test]
    fn tool_choice_and_structured_output() {
        let messages = [Message::user("hi")];
        let tools = [ToolDefinition::new("w").with_parameters(json!({"type": "object"}))];
        let format = ResponseFormat::json_schema(json!({"type": "object", "required": ["joke"]}))
            .with_description("A joke");
        let choice = ToolChoice::Tool("w".into());
        let none = ToolChoice::None;
        let mut r = request(&messages);
        r.tools = &tools;
        r.tool_choice = Some(&choice);
        assert_eq!(
            BedrockConverse.encode(&r)["toolConfig"]["toolChoice"],
            json!({"tool": {"name": "w"}})
        );
        r.tool_choice = Some(&none);
        assert!(BedrockConverse.encode(&r).get("toolConfig").is_none());

        let mut r = request(&messages);
        r.response_format = Some(&format);
        assert_eq!(
            BedrockConverse.encode(&r)["toolConfig"],
            json!({
                "tools": [{"toolSpec": {"name": ANSWER_TOOL, "description": "Give your answer by calling this tool: its input is the answer. A joke",
                    "inputSchema": {"json": {"type": "object", "required": ["joke"]}}}}],
                "toolChoice": {"tool": {"name": ANSWER_TOOL}}
            })
        );
        r.tools = &tools;
        assert_eq!(
            BedrockConverse.encode(&r)["toolConfig"]["toolChoice"],
            json!({"any": {}}),
            "the caller's tools stay callable"
        );

        let answer = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"text": "Here it is."},
                {"toolUse": {"toolUseId": "x", "name": ANSWER_TOOL, "input": {"joke": "Knock knock"}}}
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}
        });
        let decoded = BedrockConverse
            .decode(answer.to_string().as_bytes())
            .unwrap();
        assert_eq!(decoded.text, r#"{"joke":"Knock knock"}"#);
        assert!(decoded.tool_calls.is_empty());
        assert_eq!(decoded.finish(), crate::message::FinishReason::Stop);
    }

    #[test]
    fn reasoning_and_cache_usage_decode_to_semconv() {
        // Shape of the Converse API reference (ReasoningContentBlock, TokenUsage).
        let body = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "Think.", "signature": "sig"}}},
                {"text": "Answer."}
            ]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 4, "outputTokens": 227, "totalTokens": 1282,
                "cacheReadInputTokens": 1051, "cacheWriteInputTokens": 0},
            "metrics": {"latencyMs": 10}
        });
        let r = BedrockConverse.decode(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            (r.reasoning.as_str(), r.text.as_str()),
            ("Think.", "Answer.")
        );
        let u = r.usage.unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.total_tokens),
            (1055, 227, 1282)
        );
        assert_eq!(
            (u.cache_read_input_tokens, u.cache_creation_input_tokens),
            (Some(1051), Some(0))
        );
        let events = BedrockConverse
            .decode_event(
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"Hm"}},"p":"ab"}"#,
            )
            .unwrap();
        assert_eq!(events, [StreamEvent::Reasoning("Hm".into())]);
    }
}
