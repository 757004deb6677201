//! The OpenAI Responses API wire format (`POST {base}/responses`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::message::{ToolCall, ToolChoice};
use crate::providers::chat::{ChatRequest, ChatResponse, ChatWire, StreamEvent, parse_arguments};
use crate::telemetry::semconv;
use crate::transport::ErrorBody;
use crate::usage::Usage;

/// A function call the model asked for.
///
/// Answer it with [`crate::RunResponses::function_call_output`] and its `call_id`, after
/// passing the call's output item back.
///
/// ```
/// let call = tracia::ResponsesToolCall {
///     id: "fc_1".into(), call_id: "call_1".into(), name: "get_weather".into(),
///     arguments: serde_json::json!({"city": "Paris"}),
/// };
/// let next = tracia::RunResponses::new("o4-mini").function_call_output(&call.call_id, "rainy");
/// # drop(next);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponsesToolCall {
    /// The output item's id (`fc_…`).
    pub id: String,
    /// The id a `function_call_output` answers (`call_…`).
    pub call_id: String,
    /// The function's name.
    pub name: String,
    /// The arguments, parsed into a JSON object (`{}` when the model sent invalid JSON).
    pub arguments: Value,
}

/// OpenAI Responses.
#[derive(Debug, Default)]
pub(crate) struct OpenAiResponses;

impl ErrorBody for OpenAiResponses {}

impl ChatWire for OpenAiResponses {
    fn chat_url(&self, base_url: &str, _: &ChatRequest<'_>) -> String {
        format!("{}/responses", base_url.trim_end_matches('/'))
    }

    /// `messages` is only the span's view of the input: the wire `input` is the caller's
    /// items, OpenAI-native JSON that is passed back verbatim (which normalized messages
    /// cannot carry), so `RunResponses` hands them over with the custom fields.
    fn encode(&self, r: &ChatRequest<'_>) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), r.model.into());
        if let Some(n) = r.max_output_tokens {
            body.insert("max_output_tokens".into(), n.into());
        }
        if !r.tools.is_empty() {
            let tools = r
                .tools
                .iter()
                .map(|t| {
                    let mut f =
                        json!({"type": "function", "name": t.name, "parameters": t.parameters});
                    if let Some(d) = &t.description {
                        f["description"] = d.as_str().into();
                    }
                    f
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        if let Some(choice) = r.tool_choice {
            let v = match choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Tool(name) => json!({"type": "function", "name": name}),
            };
            body.insert("tool_choice".into(), v);
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
        let wire: WireResponse =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON from OpenAI: {e}"))?;
        Ok(wire.into_response())
    }

    fn decode_event(&self, event: &str, data: &str) -> Result<Vec<StreamEvent>, String> {
        let ev: WireEvent = serde_json::from_str(data)
            .map_err(|e| format!("invalid JSON in OpenAI Responses event: {e}"))?;
        // The data names its type too; trust it over the SSE line, which proxies may drop.
        let kind = ev.kind.as_deref().unwrap_or(event);
        let events = match kind {
            "response.created" | "response.in_progress" => ev
                .response
                .map(|r| StreamEvent::Meta {
                    id: r.id,
                    model: r.model,
                })
                .into_iter()
                .collect(),
            "response.output_text.delta" => vec![StreamEvent::Text(ev.delta.unwrap_or_default())],
            "response.reasoning_summary_text.delta" => {
                vec![StreamEvent::Reasoning(ev.delta.unwrap_or_default())]
            }
            // Summary parts are paragraphs: keep them apart as the non-streamed answer does.
            "response.reasoning_summary_part.added" if ev.summary_index.unwrap_or(0) > 0 => {
                vec![StreamEvent::Reasoning(SUMMARY_SEPARATOR.into())]
            }
            // A function call is taken whole from its finished item (its argument deltas
            // would only be reassembled into the same string).
            "response.output_item.done" => {
                let Some(item) = ev.item else {
                    return Ok(Vec::new());
                };
                let mut out = Vec::new();
                if let Some(call) = function_call(&item) {
                    out.push(StreamEvent::ToolCall {
                        index: ev.output_index.unwrap_or(0),
                        id: Some(call.call_id),
                        name: Some(call.name),
                        arguments: call.arguments.to_string(),
                    });
                }
                out.push(StreamEvent::OutputItem(item));
                out
            }
            "response.completed" | "response.incomplete" => {
                let Some(r) = ev.response else {
                    return Err(format!("{kind} event without a response"));
                };
                let mut out = vec![
                    StreamEvent::Meta {
                        id: r.id.clone(),
                        model: r.model.clone(),
                    },
                    StreamEvent::Finish(r.finish_reason()),
                ];
                out.extend(r.usage.map(|u| StreamEvent::Usage(u.normalize())));
                out.extend(
                    r.service_tier
                        .map(|t| StreamEvent::Attribute(semconv::OPENAI_RESPONSE_SERVICE_TIER, t)),
                );
                out.push(StreamEvent::Done);
                out
            }
            "response.failed" => {
                let message = ev
                    .response
                    .and_then(|r| r.error)
                    .and_then(|e| e.message)
                    .unwrap_or_else(|| "the response failed".into());
                return Err(message);
            }
            "error" => return Err(ev.message.unwrap_or_else(|| "stream error".into())),
            // The rest (content parts, `output_text.done`, function-call argument deltas)
            // repeats what the deltas and the finished items already carry.
            _ => Vec::new(),
        };
        Ok(events)
    }
}

const SUMMARY_SEPARATOR: &str = "\n\n";

/// The function call an output item is, if it is one.
pub(crate) fn function_call(item: &Value) -> Option<ResponsesToolCall> {
    if item.get("type")?.as_str()? != "function_call" {
        return None;
    }
    let text = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default();
    Some(ResponsesToolCall {
        id: text("id").to_owned(),
        call_id: text("call_id").to_owned(),
        name: text("name").to_owned(),
        arguments: parse_arguments(text("arguments")),
    })
}

/// The answer text of a `message` output item (its `output_text` parts), if it is one.
pub(crate) fn message_text(item: &Value) -> Option<String> {
    if item.get("type")?.as_str()? != "message" {
        return None;
    }
    Some(
        parts_of(item, "content", "output_text")
            .collect::<Vec<_>>()
            .concat(),
    )
}

/// The summary of a `reasoning` output item, if it is one.
fn reasoning_summary(item: &Value) -> Option<String> {
    if item.get("type")?.as_str()? != "reasoning" {
        return None;
    }
    Some(
        parts_of(item, "summary", "summary_text")
            .collect::<Vec<_>>()
            .join(SUMMARY_SEPARATOR),
    )
}

/// The `text` of the parts of type `kind` in the array `key` of an item.
fn parts_of<'a>(item: &'a Value, key: &str, kind: &'a str) -> impl Iterator<Item = &'a str> {
    item.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |p| p.get("type").and_then(Value::as_str) == Some(kind))
        .filter_map(|p| p.get("text").and_then(Value::as_str))
}

#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    response: Option<WireResponse>,
    delta: Option<String>,
    item: Option<Value>,
    output_index: Option<usize>,
    summary_index: Option<usize>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct WireResponse {
    id: Option<String>,
    model: Option<String>,
    status: Option<String>,
    incomplete_details: Option<IncompleteDetails>,
    #[serde(default)]
    output: Vec<Value>,
    usage: Option<WireUsage>,
    service_tier: Option<String>,
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct IncompleteDetails {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct WireError {
    message: Option<String>,
}

impl WireResponse {
    /// Why an incomplete response stopped (e.g. `max_output_tokens`), else its status.
    fn finish_reason(&self) -> String {
        self.incomplete_details
            .as_ref()
            .and_then(|d| d.reason.clone())
            .or_else(|| self.status.clone())
            .unwrap_or_else(|| "completed".into())
    }

    fn into_response(self) -> ChatResponse {
        let finish_reason = Some(self.finish_reason());
        let text = self.output.iter().filter_map(message_text).collect();
        let reasoning = self
            .output
            .iter()
            .filter_map(reasoning_summary)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(SUMMARY_SEPARATOR);
        let tool_calls = self
            .output
            .iter()
            .filter_map(function_call)
            .map(|c| ToolCall::new(c.call_id, c.name, c.arguments))
            .collect();
        ChatResponse {
            id: self.id,
            model: self.model,
            text,
            reasoning,
            tool_calls,
            finish_reason,
            usage: self.usage.map(WireUsage::normalize),
            attributes: self
                .service_tier
                .map(|t| (semconv::OPENAI_RESPONSE_SERVICE_TIER, t))
                .into_iter()
                .collect(),
            output_items: self.output,
        }
    }
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    total_tokens: Option<u64>,
    input_tokens_details: Option<InputDetails>,
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize)]
struct InputDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OutputDetails {
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    /// The counts already include cached and reasoning tokens: take them as they are.
    fn normalize(self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            total_tokens: self
                .total_tokens
                .unwrap_or(self.input_tokens.saturating_add(self.output_tokens)),
            cache_read_input_tokens: self.input_tokens_details.and_then(|d| d.cached_tokens),
            cache_creation_input_tokens: None,
            reasoning_output_tokens: self.output_tokens_details.and_then(|d| d.reasoning_tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(kind: &str, data: Value) -> Vec<StreamEvent> {
        OpenAiResponses
            .decode_event(kind, &data.to_string())
            .unwrap()
    }

    #[test]
    fn reasoning_summary_parts_stream_as_separate_paragraphs() {
        let part =
            |i: usize| json!({"type": "response.reasoning_summary_part.added", "summary_index": i});
        let delta = |t: &str| json!({"type": "response.reasoning_summary_text.delta", "delta": t});
        let got: Vec<_> = [part(0), delta("First."), part(1), delta("Second.")]
            .into_iter()
            .flat_map(|d| events("", d))
            .collect();
        assert_eq!(
            got,
            ["First.", "\n\n", "Second."].map(|t| StreamEvent::Reasoning(t.into()))
        );
        let item = json!({"type": "reasoning", "id": "rs_1", "summary": [
            {"type": "summary_text", "text": "First."}, {"type": "summary_text", "text": "Second."}]});
        assert_eq!(
            reasoning_summary(&item).as_deref(),
            Some("First.\n\nSecond.")
        );
    }

    #[test]
    fn failures_and_errors_are_errors_with_the_provider_message() {
        let failed = json!({"type": "response.failed", "response": {"status": "failed",
            "error": {"code": "server_error", "message": "The model crashed"}}});
        assert_eq!(
            OpenAiResponses.decode_event("response.failed", &failed.to_string()),
            Err("The model crashed".into())
        );
        let error = json!({"type": "error", "code": "rate_limit_exceeded", "message": "Slow down", "param": null});
        assert_eq!(
            OpenAiResponses.decode_event("error", &error.to_string()),
            Err("Slow down".into())
        );
    }
}
