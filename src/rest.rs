//! The Tracia REST API: prompts (`/api/v1/prompts`) and spans (`/api/v1/spans`).
//!
//! Every call is a CLIENT span (`prompts.get {slug}`, `spans.list`, …) whose context
//! goes out as `traceparent`, so the server's work joins the caller's trace;
//! `prompts.run` is a GenAI chat span (see [`Prompts::run`]).

use std::collections::BTreeMap;

use futures::{Stream, StreamExt, TryStreamExt, stream};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};

use crate::call::client::Tracia;
use crate::call::session::Session;
use crate::call::span::{CallSpan, Placement, PromptRunStart};
use crate::error::{Error, ErrorCode, Result};
use crate::ids;
use crate::message::FinishReason;
use crate::message::{Message, ToolCall};
use crate::providers::chat::ChatResponse;
use crate::telemetry::semconv;
use crate::transport;
use crate::usage::Usage;

/// The prompts of the Tracia project, from [`Tracia::prompts`].
///
/// ```no_run
/// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
/// for prompt in tracia.prompts().list().await? {
///     println!("{} v{}", prompt.slug, prompt.current_version);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Prompts<'a> {
    tracia: &'a Tracia,
}

/// The spans stored by Tracia, from [`Tracia::spans`].
///
/// ```no_run
/// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
/// let page = tracia.spans().list(tracia::ListSpans { limit: Some(10), ..Default::default() }).await?;
/// println!("{} spans, more: {}", page.spans.len(), page.next_cursor.is_some());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Spans<'a> {
    tracia: &'a Tracia,
}

impl Tracia {
    /// The Tracia prompts API (needs `TRACIA_API_KEY` or
    /// [`TraciaBuilder::with_tracia_api_key`](crate::TraciaBuilder::with_tracia_api_key)).
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let prompt = tracia.prompts().get("welcome-email").await?;
    /// # Ok(()) }
    /// ```
    pub fn prompts(&self) -> Prompts<'_> {
        Prompts { tracia: self }
    }

    /// The Tracia spans API.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let span = tracia.spans().get("sp_0123456789abcdef").await?;
    /// # Ok(()) }
    /// ```
    pub fn spans(&self) -> Spans<'_> {
        Spans { tracia: self }
    }
}

/// One message of a prompt template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptMessage {
    /// Message id (the server assigns one when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The template text, with `{{variable}}` placeholders.
    pub content: String,
}

impl PromptMessage {
    /// A message without id.
    ///
    /// ```
    /// let m = tracia::PromptMessage::new("user", "Hi {{name}}");
    /// assert_eq!(m.role, "user");
    /// ```
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            id: None,
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A prompt as listed by `GET /prompts` (a [`Prompt`] without its content).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct PromptListItem {
    /// Server id.
    #[serde(default)]
    pub id: String,
    /// The slug, the prompt's name in URLs.
    pub slug: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// `OPENAI`, `ANTHROPIC`, `GOOGLE` or `AMAZON_BEDROCK`.
    #[serde(default)]
    pub provider: Option<String>,
    /// Model id.
    #[serde(default)]
    pub model: Option<String>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Output token cap.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// Model configuration id (older servers, instead of provider/model).
    #[serde(default)]
    pub model_configuration_id: Option<String>,
    /// The latest version number.
    #[serde(default)]
    pub current_version: u32,
    /// The template's variables.
    #[serde(default)]
    pub variables: Vec<String>,
    /// ISO-8601 creation time.
    #[serde(default)]
    pub created_at: Option<String>,
    /// ISO-8601 update time.
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A prompt with its template messages.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Prompt {
    /// Every field but the content.
    #[serde(flatten)]
    pub info: PromptListItem,
    /// The template messages.
    #[serde(default)]
    pub content: Vec<PromptMessage>,
}

/// The body of `prompts().create`.
///
/// ```
/// let p = tracia::CreatePrompt::new("Welcome", vec![tracia::PromptMessage::new("user", "Hi {{name}}")]);
/// assert!(p.slug.is_none());
/// ```
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatePrompt {
    /// Display name (required).
    pub name: String,
    /// Slug; the server derives it from the name when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Template messages (required).
    pub content: Vec<PromptMessage>,
}

impl CreatePrompt {
    /// A prompt with a name and content.
    pub fn new(name: impl Into<String>, content: Vec<PromptMessage>) -> Self {
        Self {
            name: name.into(),
            content,
            ..Self::default()
        }
    }
}

/// The body of `prompts().update`; absent fields are left unchanged, new content
/// makes a new version.
///
/// ```
/// let u = tracia::UpdatePrompt { description: Some(String::new()), ..Default::default() };
/// # drop(u);
/// ```
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePrompt {
    /// New name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New slug.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// New description (empty clears it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New content (a new version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<PromptMessage>>,
}

/// The options of `prompts().run`; every field is optional, empty ones are not sent.
///
/// ```
/// use tracia::{Message, RunPrompt};
/// let run = RunPrompt {
///     model: Some("gpt-4o".into()),
///     messages: Some(vec![Message::user("Write to Ada.")]),
///     ..RunPrompt::default().variable("name", "Ada")
/// };
/// assert_eq!(run.variables["name"], "Ada");
/// ```
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPrompt {
    /// Template variables.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// The version to run (latest when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Overrides the prompt's model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A full conversation (for example the previous answer's `messages` plus a new
    /// user message); template rendering is skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    /// Tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// End user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The trace to run in. In Tracia form (`tr_` + hex) it also places the client
    /// span; any other id goes to the server as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The parent of the run. In Tracia form (`sp_` + 16 hex, with a trace known) it
    /// also places the client span; any other id goes to the server as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
}

impl RunPrompt {
    /// Adds a template variable.
    pub fn variable(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.insert(name.into(), value.into());
        self
    }
}

/// The result of `prompts().run`.
///
/// ```
/// let answer = r#"{"text": "Hi Ada", "spanId": "sp_1", "traceId": "tr_1",
///     "usage": {"inputTokens": 9, "outputTokens": 3, "totalTokens": 12},
///     "finishReason": "stop", "toolCalls": null,
///     "messages": [{"role": "user", "content": "Greet Ada"}, {"role": "assistant", "content": "Hi Ada"}]}"#;
/// let result: tracia::RunPromptResult = serde_json::from_str(answer).unwrap();
/// assert_eq!(result.usage.total_tokens, 12);
/// assert_eq!(result.finish_reason, tracia::FinishReason::Stop);
/// assert!(result.tool_calls.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RunPromptResult {
    /// The reply (absent when the model only called tools).
    #[serde(default)]
    pub text: Option<String>,
    /// Tracia span id of the run: the server's span, the one to evaluate.
    #[serde(default)]
    pub span_id: String,
    /// Tracia trace id of the run.
    #[serde(default)]
    pub trace_id: String,
    /// The prompt version that ran.
    #[serde(default)]
    pub prompt_version: Option<u32>,
    /// Latency.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Token counts (the server reports no cache or reasoning counts).
    #[serde(default, deserialize_with = "wire_usage")]
    pub usage: Usage,
    /// Cost in USD, computed by the server.
    #[serde(default)]
    pub cost: Option<f64>,
    /// Why the model stopped (`stop` when the server names no reason it knows).
    #[serde(default, deserialize_with = "lenient_finish")]
    pub finish_reason: FinishReason,
    /// The tool calls the model asked for (none when the server sends `null`).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Parsed structured output.
    #[serde(default)]
    pub structured_output: Option<serde_json::Value>,
    /// The rendered input plus the reply, for the next turn.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub messages: Vec<Message>,
}

/// Tracia's `usage` (`inputTokens`, `outputTokens`, `totalTokens`).
fn wire_usage<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Usage, D::Error> {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Wire {
        input_tokens: u64,
        output_tokens: u64,
        total_tokens: Option<u64>,
    }
    let w = Option::<Wire>::deserialize(d)?.unwrap_or_default();
    Ok(Usage {
        input_tokens: w.input_tokens,
        output_tokens: w.output_tokens,
        total_tokens: w
            .total_tokens
            .unwrap_or(w.input_tokens.saturating_add(w.output_tokens)),
        ..Usage::default()
    })
}

/// Tracia's finish reason, read as `run_local` normalizes a provider's: one Tracia
/// docs page says `length` where the API says `max_tokens`, and a reason this SDK does
/// not know is a `stop`.
fn lenient_finish<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<FinishReason, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    Ok(crate::providers::chat::normalize_finish_reason(
        raw.as_deref(),
    ))
}

fn null_as_empty<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Filters and paging of `spans().list`.
///
/// ```
/// let q = tracia::ListSpans { prompt_slug: Some("welcome".into()), limit: Some(20), ..Default::default() };
/// # drop(q);
/// ```
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListSpans {
    /// Only spans of this prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_slug: Option<String>,
    /// `SUCCESS` or `ERROR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// ISO-8601 lower bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    /// ISO-8601 upper bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    /// End user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Tags, all required (sent comma-separated).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "comma_separated"
    )]
    pub tags: Vec<String>,
    /// Page size (server default 50, max 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

fn comma_separated<S: serde::Serializer>(tags: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&tags.join(","))
}

/// A span as listed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SpanListItem {
    /// Server id.
    #[serde(default)]
    pub id: String,
    /// Tracia span id.
    pub span_id: String,
    /// Tracia trace id.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// Parent span id.
    #[serde(default)]
    pub parent_span_id: Option<String>,
    /// Prompt slug (none for `run_local`).
    #[serde(default)]
    pub prompt_slug: Option<String>,
    /// Model.
    #[serde(default)]
    pub model: Option<String>,
    /// `SUCCESS` or `ERROR`.
    #[serde(default)]
    pub status: Option<String>,
    /// Latency.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Input tokens.
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: Option<u64>,
    /// Total tokens.
    #[serde(default)]
    pub total_tokens: Option<u64>,
    /// Cost in USD.
    #[serde(default)]
    pub cost: Option<f64>,
    /// ISO-8601 creation time.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// One page of `spans().list`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SpanPage {
    /// The spans.
    #[serde(default)]
    pub spans: Vec<SpanListItem>,
    /// Pass as `cursor` for the next page; `None` on the last one.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// A span with its details.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Span {
    /// The list fields.
    #[serde(flatten)]
    pub item: SpanListItem,
    /// Prompt version.
    #[serde(default)]
    pub prompt_version: Option<u32>,
    /// Lowercase provider.
    #[serde(default)]
    pub provider: Option<String>,
    /// The input (`{"messages": […]}` or `{"text": […]}`).
    #[serde(default)]
    pub input: serde_json::Value,
    /// Variables.
    #[serde(default)]
    pub variables: Option<serde_json::Value>,
    /// Output text.
    #[serde(default)]
    pub output: Option<String>,
    /// Error message.
    #[serde(default)]
    pub error: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// End user id.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Session id.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// The body of `spans().evaluate`.
///
/// ```
/// let e = tracia::Evaluate::new("quality", 1.0).note("good");
/// assert_eq!(e.note.as_deref(), Some("good"));
/// ```
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluate {
    /// Evaluator key (`quality`).
    pub evaluator_key: String,
    /// Score: 1 positive, 0 negative.
    pub value: f64,
    /// Note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Evaluate {
    /// An evaluation without note.
    pub fn new(evaluator_key: impl Into<String>, value: f64) -> Self {
        Self {
            evaluator_key: evaluator_key.into(),
            value,
            note: None,
        }
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// The stored evaluation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Evaluation {
    /// Server id.
    #[serde(default)]
    pub id: String,
    /// Evaluator key.
    #[serde(default)]
    pub evaluator_key: String,
    /// Evaluator display name.
    #[serde(default)]
    pub evaluator_name: Option<String>,
    /// Score.
    #[serde(default)]
    pub value: f64,
    /// `api`, `sdk` or `dashboard`.
    #[serde(default)]
    pub source: Option<String>,
    /// Note.
    #[serde(default)]
    pub note: Option<String>,
    /// ISO-8601 creation time.
    #[serde(default)]
    pub created_at: Option<String>,
}

#[derive(Deserialize)]
struct PromptList {
    #[serde(default)]
    prompts: Vec<PromptListItem>,
}

impl Prompts<'_> {
    /// Every prompt.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let slugs: Vec<String> = tracia.prompts().list().await?.into_iter().map(|p| p.slug).collect();
    /// # Ok(()) }
    /// ```
    pub async fn list(&self) -> Result<Vec<PromptListItem>> {
        let span = client_span("prompts.list", None);
        let list: PromptList = call(self.tracia, Method::GET, &["prompts"], NO_BODY, span).await?;
        Ok(list.prompts)
    }

    /// One prompt with its content.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let prompt = tracia.prompts().get("welcome-email").await?;
    /// println!("v{}: {} messages", prompt.info.current_version, prompt.content.len());
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, slug: &str) -> Result<Prompt> {
        let span = client_span("prompts.get", Some(slug));
        call(self.tracia, Method::GET, &["prompts", slug], NO_BODY, span).await
    }

    /// Creates a prompt (version 1); a taken slug is `CONFLICT`.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let content = vec![tracia::PromptMessage::new("user", "Welcome, {{name}}!")];
    /// let prompt = tracia.prompts().create(tracia::CreatePrompt::new("Welcome", content)).await?;
    /// assert_eq!(prompt.info.current_version, 1);
    /// # Ok(()) }
    /// ```
    pub async fn create(&self, prompt: CreatePrompt) -> Result<Prompt> {
        let span = client_span("prompts.create", prompt.slug.as_deref());
        call(self.tracia, Method::POST, &["prompts"], Some(&prompt), span).await
    }

    /// Updates a prompt; new content makes a new version.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let update = tracia::UpdatePrompt { name: Some("Welcome email".into()), ..Default::default() };
    /// tracia.prompts().update("welcome-email", update).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update(&self, slug: &str, update: UpdatePrompt) -> Result<Prompt> {
        let span = client_span("prompts.update", Some(slug));
        call(
            self.tracia,
            Method::PUT,
            &["prompts", slug],
            Some(&update),
            span,
        )
        .await
    }

    /// Deletes a prompt and every version.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// tracia.prompts().delete("welcome-email").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, slug: &str) -> Result<()> {
        let span = client_span("prompts.delete", Some(slug));
        let _: serde::de::IgnoredAny = call(
            self.tracia,
            Method::DELETE,
            &["prompts", slug],
            NO_BODY,
            span,
        )
        .await?;
        Ok(())
    }

    /// Runs a prompt on the server: the Tracia server renders it, calls the model and
    /// stores the run as a span of its own.
    ///
    /// The call is a GenAI CLIENT span (`chat`, or `chat {model}` with a model
    /// override) that joins the current trace like [`Tracia::run_local`], or the trace
    /// that `trace_id`/`parent_span_id` name. It carries `gen_ai.prompt.name` (the slug)
    /// and `gen_ai.prompt.version`, session, user and tags, and from the answer the
    /// usage, `tracia.cost_usd`, the finish reason and, as `gen_ai.response.id`, the
    /// server's span id of the run; with content capture on, the input and output
    /// messages. Its context goes out as `traceparent` and as the run's
    /// `traceId`/`parentSpanId`, so the server's span of the run is its child. It is
    /// marked `tracia.prompt.run`: the server counted the run's tokens and cost, so
    /// the Tracia exporter does not upload this span and `tracia-collector` does not
    /// count it again.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let run = tracia::RunPrompt::default().variable("name", "Ada");
    /// let result = tracia.prompts().run("welcome-email", run).await?;
    /// println!("{:?} ({} tokens, span {})", result.text, result.usage.total_tokens, result.span_id);
    /// // The next turn: the whole conversation so far, plus a new question.
    /// let mut messages = result.messages.clone();
    /// messages.push(tracia::Message::user("Shorter, please."));
    /// let run = tracia::RunPrompt { messages: Some(messages), ..Default::default() };
    /// let shorter = tracia.prompts().run("welcome-email", run).await?;
    /// # Ok(()) }
    /// ```
    pub async fn run(&self, slug: &str, run: RunPrompt) -> Result<RunPromptResult> {
        let (result, _) = self.run_at(slug, run, Placement::default()).await?;
        Ok(result)
    }

    /// Runs at a session's position (the run's own ids win). Also answers where the run
    /// stands in the trace for the session to move on to: the client span when it is
    /// recorded, else the server's span of the run.
    async fn run_at(
        &self,
        slug: &str,
        mut run: RunPrompt,
        session: Placement,
    ) -> Result<(RunPromptResult, Option<(TraceId, SpanId)>)> {
        crate::propagation::ambient_conversation().fill(&mut run.session_id, &mut run.user_id);
        // Ids in Tracia form place the client span; others (server-issued ids, a
        // parent alone outside any trace) are the server's to resolve, sent as given.
        let placed = session.with_ids(None, run.trace_id.as_deref(), run.parent_span_id.as_deref());
        let placement = placed.as_ref().map_or(session, |p| *p);
        let call = CallSpan::start_prompt_run(
            PromptRunStart {
                slug,
                version: run.version,
                model: run.model.as_deref(),
                server: self.tracia.tracia_base_url(),
                session_id: run.session_id.as_deref(),
                user_id: run.user_id.as_deref(),
                tags: &run.tags,
                messages: run.messages.as_deref(),
                variables: &run.variables,
                placement,
            },
            self.tracia.span_settings(),
        );
        let recorded = call.context.span().span_context().is_sampled();
        if placed.is_ok() {
            if recorded {
                // The server's span of the run becomes this span's child.
                run.trace_id = Some(ids::format_trace_id(call.trace_id));
                run.parent_span_id = Some(ids::format_span_id(call.span_id));
            } else {
                // No span of ours is exported: the run goes where it was placed.
                run.trace_id = run
                    .trace_id
                    .or(placement.trace_id.map(ids::format_trace_id));
                run.parent_span_id = run
                    .parent_span_id
                    .or(placement.parent_span_id.map(ids::format_span_id));
            }
        }
        let sent_messages = run.messages.is_some();
        let outcome: Result<RunPromptResult> = async {
            let segments = ["prompts", slug, "run"];
            let request = request(self.tracia, Method::POST, &segments, Some(&run))?;
            exchange(self.tracia, request, call.span.clone()).await
        }
        .await;
        let result = match outcome {
            Ok(result) => result,
            Err(e) => {
                call.record_error(&e);
                return Err(e);
            }
        };
        // The answer's messages are the rendered input, then the reply.
        let rendered = (!sent_messages)
            .then(|| result.messages.split_last().map(|(_, input)| input))
            .flatten();
        call.record_prompt_run(result.prompt_version, rendered);
        let response = ChatResponse {
            id: (!result.span_id.is_empty()).then(|| result.span_id.clone()),
            text: result.text.clone().unwrap_or_default(),
            tool_calls: result.tool_calls.clone(),
            usage: Some(result.usage),
            ..ChatResponse::default()
        };
        call.record_response(&response, result.finish_reason, false, result.cost);
        let at = if recorded {
            Some((call.trace_id, call.span_id))
        } else {
            ids::parse_trace_id(&result.trace_id)
                .ok()
                .zip(ids::parse_span_id(&result.span_id).ok())
        };
        Ok((result, at))
    }
}

impl Session {
    /// Runs a prompt on the server ([`Prompts::run`]) as the session's next turn: its
    /// span is the child of the session's last call, and the session moves on to it.
    /// The session's session and user go on the run unless it names its own.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// use tracia::{Message, RunPrompt};
    /// let session = tracia.create_session().with_session_id("conv_7");
    /// let first = session.prompts_run("support-agent", RunPrompt::default().variable("topic", "billing")).await?;
    /// let mut messages = first.messages.clone();
    /// messages.push(Message::user("And my last invoice?"));
    /// let second = session
    ///     .prompts_run("support-agent", RunPrompt { messages: Some(messages), ..Default::default() })
    ///     .await?;
    /// assert_eq!(first.trace_id, second.trace_id);
    /// # Ok(()) }
    /// ```
    pub async fn prompts_run(&self, slug: &str, mut run: RunPrompt) -> Result<RunPromptResult> {
        self.conversation()
            .fill(&mut run.session_id, &mut run.user_id);
        let (result, at) = self
            .client()
            .prompts()
            .run_at(slug, run, self.placement())
            .await?;
        if let Some((trace_id, span_id)) = at {
            self.advance(trace_id, span_id);
        }
        Ok(result)
    }
}

impl Spans<'_> {
    /// One page of spans.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let failed = tracia::ListSpans { status: Some("ERROR".into()), ..Default::default() };
    /// let page = tracia.spans().list(failed).await?;
    /// println!("{} failed spans, more: {}", page.spans.len(), page.next_cursor.is_some());
    /// # Ok(()) }
    /// ```
    pub async fn list(&self, query: ListSpans) -> Result<SpanPage> {
        let span = client_span("spans.list", None);
        let url = url(self.tracia, &["spans"])?;
        let request = self.tracia.http().request(Method::GET, url).query(&query);
        send(self.tracia, request, span).await
    }

    /// Every span matching `filters`, page after page (`limit` sets the page size,
    /// `cursor` where to start).
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let all: Vec<_> = tracia.spans().list_all(Default::default()).try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub fn list_all(
        &self,
        filters: ListSpans,
    ) -> impl Stream<Item = Result<SpanListItem>> + Send + 'static {
        let tracia = self.tracia.clone();
        stream::try_unfold(Some(filters), move |query| {
            let tracia = tracia.clone();
            async move {
                let Some(query) = query else { return Ok(None) };
                let page = tracia.spans().list(query.clone()).await?;
                // An empty or repeated cursor would page forever: it ends the list.
                let next = page
                    .next_cursor
                    .filter(|c| !c.is_empty() && Some(c) != query.cursor.as_ref())
                    .map(|cursor| ListSpans {
                        cursor: Some(cursor),
                        ..query
                    });
                Ok(Some((page.spans, next)))
            }
        })
        .map_ok(|spans| stream::iter(spans.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    /// One span with its details.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let span = tracia.spans().get("sp_0123456789abcdef").await?;
    /// println!("{:?}: {:?}", span.item.model, span.output);
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, span_id: &str) -> Result<Span> {
        let span = client_span("spans.get", None);
        call(self.tracia, Method::GET, &["spans", span_id], NO_BODY, span).await
    }

    /// Attaches an evaluation to a span.
    ///
    /// A span of this process whose upload to Tracia is still pending is flushed and
    /// waited for first (up to the client's timeout), so evaluating right after
    /// `run_local` does not race the upload into a 404.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let result = tracia.run_local(tracia::RunLocal::new("gpt-4o").user("Hi")).await?;
    /// tracia.spans().evaluate(&result.span_id, tracia::Evaluate::new("quality", 1.0)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn evaluate(&self, span_id: &str, evaluation: Evaluate) -> Result<Evaluation> {
        let span = client_span("spans.evaluate", None);
        // A malformed id is not ours to wait for; the server answers it.
        if let Ok(id) = crate::ids::parse_span_id(span_id)
            && crate::telemetry::pending::is_pending(id)
        {
            let timeout = self.tracia.default_timeout();
            async {
                crate::telemetry::flush_installed().await;
                let _ = tokio::time::timeout(timeout, crate::telemetry::pending::settled(id)).await;
            }
            .instrument(span.clone())
            .await;
        }
        call(
            self.tracia,
            Method::POST,
            &["spans", span_id, "evaluations"],
            Some(&evaluation),
            span,
        )
        .await
    }
}

const NO_BODY: Option<&()> = None;

/// A CLIENT span named `{operation} {slug}` (fields declared up front so they can
/// be recorded later).
fn client_span(operation: &'static str, slug: Option<&str>) -> tracing::Span {
    let name = match slug {
        Some(slug) => format!("{operation} {slug}"),
        None => operation.to_owned(),
    };
    tracing::info_span!(
        "tracia.rest",
        otel.name = %name,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        gen_ai.prompt.name = slug,
    )
}

/// The API URL of `segments` under `/api/v1`, each one percent-encoded whole
/// (a `/` in a slug is `%2F`).
fn url(tracia: &Tracia, segments: &[&str]) -> Result<reqwest::Url> {
    let mut url = tracia.tracia_base_url().clone();
    url.path_segments_mut()
        .map_err(|()| Error::invalid("Invalid Tracia base URL"))?
        .pop_if_empty()
        .extend(["api", "v1"])
        .extend(segments);
    Ok(url)
}

async fn call<T: DeserializeOwned, B: Serialize>(
    tracia: &Tracia,
    method: Method,
    segments: &[&str],
    body: Option<&B>,
    span: tracing::Span,
) -> Result<T> {
    send(tracia, request(tracia, method, segments, body)?, span).await
}

fn request<B: Serialize>(
    tracia: &Tracia,
    method: Method,
    segments: &[&str],
    body: Option<&B>,
) -> Result<reqwest::RequestBuilder> {
    let mut request = tracia.http().request(method, url(tracia, segments)?);
    if let Some(body) = body {
        request = request.json(body);
    }
    Ok(request)
}

/// Sends in a REST span, a failure marked on it with the Tracia code as `error.type`.
async fn send<T: DeserializeOwned>(
    tracia: &Tracia,
    request: reqwest::RequestBuilder,
    span: tracing::Span,
) -> Result<T> {
    let outcome = exchange(tracia, request, span.clone()).await;
    if let Err(error) = &outcome {
        span.record(semconv::OTEL_STATUS_CODE, "error");
        span.record(semconv::ERROR_TYPE, error.code().as_str());
    }
    outcome
}

/// Sends with the key, in `span` (whose context goes out as `traceparent`), and reads
/// the answer.
async fn exchange<T: DeserializeOwned>(
    tracia: &Tracia,
    request: reqwest::RequestBuilder,
    span: tracing::Span,
) -> Result<T> {
    async {
        let key = tracia.tracia_api_key().ok_or_else(|| {
            Error::new(
                ErrorCode::Unauthorized,
                "Tracia API key missing: set TRACIA_API_KEY or TraciaBuilder::with_tracia_api_key",
            )
        })?;
        let request =
            crate::propagation::with_trace_headers(request.bearer_auth(key.expose_secret()));
        let timeout = tracia.default_timeout();
        tokio::time::timeout(
            timeout,
            receive(request, timeout, &tracing::Span::current()),
        )
        .await
        .unwrap_or_else(|_| Err(transport::timeout_error(timeout)))
    }
    .instrument(span)
    .await
}

async fn receive<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    timeout: std::time::Duration,
    span: &tracing::Span,
) -> Result<T> {
    let response = request
        .send()
        .await
        .map_err(|e| transport::transport_error(e, timeout))?;
    let status = response.status();
    span.record(
        semconv::HTTP_RESPONSE_STATUS_CODE,
        i64::from(status.as_u16()),
    );
    let retry_after = transport::retry_after(response.headers(), std::time::Duration::MAX);
    let body = response
        .bytes()
        .await
        .map_err(|e| transport::transport_error(e, timeout))?;
    if !status.is_success() {
        return Err(api_error(status, &body).with_retry_after(retry_after));
    }
    // 204 and empty bodies read as `null`.
    let body: &[u8] = if body.is_empty() { b"null" } else { &body };
    serde_json::from_slice(body).map_err(|e| {
        Error::new(
            ErrorCode::Unknown,
            format!("Invalid response from the Tracia API: {e}"),
        )
        .with_status(status.as_u16())
    })
}

#[derive(Deserialize)]
struct WireError {
    code: Option<String>,
    message: Option<String>,
    error: Option<Box<WireError>>,
}

/// Reads `{"error":{"code","message"}}` first, then `{"code","message"}`; a body
/// without a code falls back on the HTTP status.
pub(crate) fn api_error(status: reqwest::StatusCode, body: &[u8]) -> Error {
    let wire = serde_json::from_slice::<WireError>(body).ok();
    let (code, message) = match wire {
        Some(WireError {
            error: Some(inner), ..
        }) => (inner.code, inner.message),
        Some(w) => (w.code, w.message),
        None => (None, None),
    };
    let message = message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
        if text.trim().is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            text.into_owned()
        }
    });
    let error = match code {
        Some(raw) => {
            let code = match ErrorCode::parse(&raw) {
                // Tracia documents no code for its 429: whichever one it names, it is
                // the rate limit.
                ErrorCode::Unknown if status == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                    ErrorCode::RateLimited
                }
                code => code,
            };
            Error::new(code, message).with_raw_code(raw)
        }
        None => Error::new(status_code(status), message),
    };
    error.with_status(status.as_u16())
}

fn status_code(status: reqwest::StatusCode) -> ErrorCode {
    match status.as_u16() {
        400 => ErrorCode::InvalidRequest,
        401 | 403 => ErrorCode::Unauthorized,
        404 => ErrorCode::NotFound,
        409 => ErrorCode::Conflict,
        429 => ErrorCode::RateLimited,
        _ => ErrorCode::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_results_read_the_variants_servers_send() {
        let read = |json: &str| serde_json::from_str::<RunPromptResult>(json).unwrap();
        let r = read(r#"{"finishReason":"length","toolCalls":null,"messages":null,"usage":null}"#);
        assert_eq!(r.finish_reason, FinishReason::MaxTokens);
        assert!(r.tool_calls.is_empty() && r.messages.is_empty());
        assert_eq!(r.usage, Usage::default());
        let r =
            read(r#"{"finishReason":"content_filter","usage":{"inputTokens":2,"outputTokens":3}}"#);
        assert_eq!(r.finish_reason, FinishReason::Stop);
        assert_eq!(r.usage.total_tokens, 5);
        let r = read(
            r#"{"finishReason":"tool_calls","text":null,
            "toolCalls":[{"id":"c1","name":"weather","arguments":{"city":"Paris"}}],
            "messages":[{"role":"assistant","content":[
                {"type":"tool_call","id":"c1","name":"weather","arguments":{"city":"Paris"}}]}]}"#,
        );
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        let call = ToolCall::new("c1", "weather", serde_json::json!({"city": "Paris"}));
        assert_eq!(r.tool_calls, std::slice::from_ref(&call));
        assert_eq!(
            r.messages[0].content.tool_calls().collect::<Vec<_>>(),
            [&call]
        );
        assert_eq!(read("{}").finish_reason, FinishReason::Stop);
    }

    #[test]
    fn list_query_uses_tracia_names_and_comma_separated_tags() {
        let query = ListSpans {
            prompt_slug: Some("a/b".into()),
            tags: vec!["x".into(), "y".into()],
            limit: Some(2),
            cursor: Some("c1".into()),
            ..Default::default()
        };
        let request = reqwest::Client::new()
            .get("http://127.0.0.1/api/v1/spans")
            .query(&query)
            .build()
            .unwrap();
        assert_eq!(
            request.url().query(),
            Some("promptSlug=a%2Fb&tags=x%2Cy&limit=2&cursor=c1")
        );
    }
}
