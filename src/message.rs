//! Chat messages, tools and output formats, in Tracia's shapes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who speaks a [`Message`].
///
/// ```
/// assert_eq!(tracia::Role::Developer.as_str(), "developer");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// Instructions to the model (OpenAI's newer name; other providers treat it as system).
    Developer,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's answer to a tool call.
    Tool,
}

impl Role {
    /// The role as spelled on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Developer => "developer",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

/// A tool call the model asked for, or one replayed in history.
///
/// ```
/// let call = tracia::ToolCall::new("call_1", "get_weather", serde_json::json!({"city": "Paris"}));
/// assert_eq!(call.arguments["city"], "Paris");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call; a tool message answers it by this id.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, parsed into a JSON object (`{}` when the model sent invalid JSON).
    pub arguments: Value,
}

impl ToolCall {
    /// A tool call.
    pub fn new(id: impl Into<String>, name: impl Into<String>, arguments: Value) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments,
        }
    }
}

/// One part of a message's content.
///
/// ```
/// let part = tracia::ContentPart::text("hello");
/// assert_eq!(serde_json::to_value(&part).unwrap()["type"], "text");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// A tool call made by the assistant.
    ToolCall(ToolCall),
}

impl ContentPart {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text { text: text.into() }
    }
}

/// A message's content: plain text, or a list of parts.
///
/// ```
/// let content: tracia::Content = "hi".into();
/// assert_eq!(content.text(), "hi");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Text and tool-call parts.
    Parts(Vec<ContentPart>),
}

impl Default for Content {
    fn default() -> Self {
        Self::Text(String::new())
    }
}

impl Content {
    /// The text of the content, with the text parts joined.
    pub fn text(&self) -> String {
        self.text_parts().concat()
    }

    /// The text parts, in order (plain text is one part).
    pub fn text_parts(&self) -> Vec<&str> {
        match self {
            Self::Text(t) => vec![t.as_str()],
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    ContentPart::ToolCall(_) => None,
                })
                .collect(),
        }
    }

    /// The tool calls among the parts.
    pub fn tool_calls(&self) -> impl Iterator<Item = &ToolCall> {
        let parts: &[ContentPart] = match self {
            Self::Text(_) => &[],
            Self::Parts(parts) => parts,
        };
        parts.iter().filter_map(|p| match p {
            ContentPart::ToolCall(call) => Some(call),
            ContentPart::Text { .. } => None,
        })
    }
}

impl From<&str> for Content {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<String> for Content {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<Vec<ContentPart>> for Content {
    fn from(parts: Vec<ContentPart>) -> Self {
        Self::Parts(parts)
    }
}

/// A chat message (Tracia's `LocalPromptMessage`).
///
/// ```
/// use tracia::Message;
/// let history = vec![Message::system("You are terse."), Message::user("Hello {{name}}")];
/// assert_eq!(history[1].content.text(), "Hello {{name}}");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: Content,
    /// For a tool message: the id of the tool call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a tool message: the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
}

impl Message {
    /// A message with the given role and content.
    pub fn new(role: Role, content: impl Into<Content>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_call_id: None,
            tool_name: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<Content>) -> Self {
        Self::new(Role::System, content)
    }

    /// A developer message.
    pub fn developer(content: impl Into<Content>) -> Self {
        Self::new(Role::Developer, content)
    }

    /// A user message.
    pub fn user(content: impl Into<Content>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<Content>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// A tool message answering the tool call `tool_call_id`.
    ///
    /// ```
    /// let answer = tracia::Message::tool("call_1", "rainy, 57°F");
    /// assert_eq!(answer.tool_call_id.as_deref(), Some("call_1"));
    /// ```
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<Content>) -> Self {
        Self {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::new(Role::Tool, content)
        }
    }

    /// Sets the tool name of a tool message.
    pub fn with_tool_name(mut self, name: impl Into<String>) -> Self {
        self.tool_name = Some(name.into());
        self
    }
}

/// A tool the model may call.
///
/// ```
/// let tool = tracia::ToolDefinition::new("get_weather")
///     .with_description("Current weather for a city")
///     .with_parameters(serde_json::json!({
///         "type": "object",
///         "properties": {"city": {"type": "string"}},
///         "required": ["city"]
///     }));
/// assert_eq!(tool.name, "get_weather");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// The tool's name.
    pub name: String,
    /// What the tool does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema of the arguments (an object schema).
    pub parameters: Value,
}

impl ToolDefinition {
    /// A tool with no parameters yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: None,
            parameters: serde_json::json!({"type": "object", "properties": {}}),
        }
    }

    /// Sets the description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Sets the JSON Schema of the arguments.
    pub fn with_parameters(mut self, parameters: Value) -> Self {
        self.parameters = parameters;
        self
    }
}

/// Whether and which tool the model must call.
///
/// ```
/// let choice = tracia::ToolChoice::Tool("get_weather".into());
/// # drop(choice);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// This tool must be called.
    Tool(String),
}

/// The format the answer must take.
///
/// ```
/// let format = tracia::ResponseFormat::json_schema(serde_json::json!({
///     "type": "object", "properties": {"joke": {"type": "string"}}, "required": ["joke"]
/// })).with_name("Joke");
/// # drop(format);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// Any JSON object.
    Json,
    /// JSON matching a schema.
    JsonSchema {
        /// The JSON Schema.
        schema: Value,
        /// The schema's name (`"response"` when unset).
        name: Option<String>,
        /// What the schema describes.
        description: Option<String>,
    },
    /// A provider-specific value, sent as is.
    Custom(Value),
}

impl ResponseFormat {
    /// JSON matching `schema`.
    pub fn json_schema(schema: Value) -> Self {
        Self::JsonSchema {
            schema,
            name: None,
            description: None,
        }
    }

    /// Names the schema (JSON Schema formats only).
    pub fn with_name(mut self, new_name: impl Into<String>) -> Self {
        if let Self::JsonSchema { name, .. } = &mut self {
            *name = Some(new_name.into());
        }
        self
    }

    /// Describes the schema (JSON Schema formats only).
    pub fn with_description(mut self, text: impl Into<String>) -> Self {
        if let Self::JsonSchema { description, .. } = &mut self {
            *description = Some(text.into());
        }
        self
    }
}

/// Why the model stopped, normalized as Tracia does, or that the caller stopped it.
///
/// ```
/// assert_eq!(tracia::FinishReason::MaxTokens.as_str(), "max_tokens");
/// assert_eq!(tracia::FinishReason::Aborted.as_str(), "aborted");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end (and every provider value that is not one of the others).
    #[default]
    Stop,
    /// The output token limit was reached.
    MaxTokens,
    /// The model asked for tool calls.
    ToolCalls,
    /// The caller stopped the stream (`abort()`) before the model finished; the
    /// result holds what had arrived. Its span reports `error`, as the GenAI
    /// conventions ask for a cancelled stream.
    Aborted,
}

impl FinishReason {
    /// Tracia's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::MaxTokens => "max_tokens",
            Self::ToolCalls => "tool_calls",
            Self::Aborted => "aborted",
        }
    }

    /// The OpenTelemetry GenAI spelling (`stop`, `length`, `tool_call`, `error`).
    pub(crate) fn otel_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::MaxTokens => "length",
            Self::ToolCalls => "tool_call",
            Self::Aborted => "error",
        }
    }

    /// `Aborted` for a stream stopped by its caller, else this reason.
    pub(crate) fn or_aborted(self, aborted: bool) -> Self {
        if aborted { Self::Aborted } else { self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tracia_wire_shape() {
        let msg = Message {
            role: Role::Assistant,
            content: Content::Parts(vec![
                ContentPart::text("Let me check."),
                ContentPart::ToolCall(ToolCall::new("c1", "w", json!({"city": "Paris"}))),
            ]),
            tool_call_id: None,
            tool_name: None,
        };
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            json!({"role": "assistant", "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_call", "id": "c1", "name": "w", "arguments": {"city": "Paris"}}
            ]})
        );
        let tool = serde_json::to_value(Message::tool("c1", "rain").with_tool_name("w")).unwrap();
        assert_eq!(
            tool,
            json!({"role": "tool", "content": "rain", "toolCallId": "c1", "toolName": "w"})
        );
    }
}
