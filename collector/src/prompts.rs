//! Prompts with versions (`/api/v1/prompts`), and running them through the provider
//! (`POST /api/v1/prompts/{slug}/run`), each run stored as an LLM span.
//!
//! A version holds the content and the model settings, so a pinned version runs as it
//! was. Changing the content or a setting makes a new version; the name, description
//! and slug are the prompt's own and change in place.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tracia::{ErrorCode, Message, Provider, Role, RunLocal};

use crate::AppState;
use crate::model::{self, CreateSpan, SpanRecord};
use crate::store::{PromptEdit, PromptRow, PromptUpdate, Settings, VersionRow};

use crate::rest::{
    ApiError, ApiJson, now_unix_nano, parse_span_id, parse_trace_id, path, query, store_spans,
};
pub use crate::store::PromptMessage;
use crate::time::iso8601;

/// The `/api/v1/prompts` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/prompts", get(list_prompts).post(create_prompt))
        .route(
            "/api/v1/prompts/{slug}",
            get(get_prompt).put(update_prompt).delete(delete_prompt),
        )
        .route("/api/v1/prompts/{slug}/run", post(run_prompt))
}

/// A slug from a prompt name: lowercase ASCII letters and digits, every other run of
/// characters one `-`.
///
/// ```
/// assert_eq!(tracia_collector::prompts::slugify("Welcome Email (v2)!"), "welcome-email-v2");
/// ```
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_owned()
}

impl VersionRow {
    fn new(version: i64, content: Vec<PromptMessage>, settings: Settings, now: i64) -> Self {
        Self {
            version,
            variables: tracia::template_variables(&template_messages(&content)),
            content,
            settings,
            created_ns: now,
        }
    }
}

/// The template as chat messages.
fn template_messages(content: &[PromptMessage]) -> Vec<Message> {
    content
        .iter()
        .map(|m| Message::new(m.role, m.content.as_str()))
        .collect()
}

/// A message of a create or update body; the id is optional.
#[derive(Debug, Deserialize)]
struct MessageInput {
    #[serde(default)]
    id: Option<String>,
    role: Role,
    content: String,
}

/// The body of `POST /api/v1/prompts` and `PUT /api/v1/prompts/{slug}`. Unknown fields
/// (such as older clients' `modelConfigurationId`) are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptBody {
    name: Option<String>,
    slug: Option<String>,
    description: Option<String>,
    content: Option<Vec<MessageInput>>,
    provider: Option<String>,
    model: Option<String>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_output_tokens: Option<u32>,
    stop_sequences: Option<Vec<String>>,
}

impl PromptBody {
    /// The settings of the body over `base`.
    fn settings_over(&self, base: &Settings) -> Result<Settings, ApiError> {
        let provider = match self.provider.as_deref().filter(|p| !p.is_empty()) {
            None => base.provider,
            Some(name) => match Provider::parse(name) {
                Some(Provider::Voyage) | None => {
                    return Err(ApiError::invalid(format!(
                        "Invalid provider {name:?}: expected OPENAI, ANTHROPIC, GOOGLE or AMAZON_BEDROCK"
                    )));
                }
                known => known,
            },
        };
        Ok(Settings {
            provider,
            model: nonempty(self.model.clone()).or_else(|| base.model.clone()),
            temperature: self.temperature.or(base.temperature),
            top_p: self.top_p.or(base.top_p),
            max_output_tokens: self.max_output_tokens.or(base.max_output_tokens),
            stop_sequences: self
                .stop_sequences
                .clone()
                .or_else(|| base.stop_sequences.clone()),
        })
    }

    /// The content, checked: at least one message, roles a template may have.
    fn content(&mut self) -> Result<Option<Vec<PromptMessage>>, ApiError> {
        let Some(messages) = self.content.take() else {
            return Ok(None);
        };
        if messages.is_empty() {
            return Err(ApiError::invalid("content must have at least one message"));
        }
        messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                if m.role == Role::Tool {
                    return Err(ApiError::invalid(format!(
                        "content[{i}]: a prompt message's role is system, developer, user or assistant"
                    )));
                }
                Ok(PromptMessage {
                    id: nonempty(m.id).unwrap_or_else(|| format!("msg_{}", i + 1)),
                    role: m.role,
                    content: m.content,
                })
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }
}

fn nonempty(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.trim().is_empty())
}

/// Whether two templates say the same (message ids aside).
fn same_content(a: &[PromptMessage], b: &[PromptMessage]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.role == y.role && x.content == y.content)
}

/// A prompt and one of its versions (the current one unless `version` is given), or
/// the 404 naming what is missing.
async fn load(
    state: &AppState,
    slug: &str,
    version: Option<i64>,
) -> Result<(PromptRow, VersionRow), ApiError> {
    let found = state.prompts.prompt(slug, version).await?;
    match found {
        None => Err(ApiError::not_found(format!("Prompt not found: {slug}"))),
        Some((_, None)) => Err(ApiError::not_found(format!(
            "Prompt version {} not found: {slug}",
            version.unwrap_or_default()
        ))),
        Some((prompt, Some(version))) => Ok((prompt, version)),
    }
}

// --- JSON shapes ----------------------------------------------------------------------

fn iso(unix_nano: i64) -> String {
    iso8601(unix_nano.max(0) as u64)
}

/// A version's fields, shown on prompts and on version listings.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionFields {
    /// Tracia's uppercase enum: `OPENAI`, `ANTHROPIC`, `GOOGLE`, `AMAZON_BEDROCK`.
    provider: Option<String>,
    model: Option<String>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_output_tokens: Option<u32>,
    stop_sequences: Option<Vec<String>>,
    variables: Vec<String>,
}

impl From<&VersionRow> for VersionFields {
    fn from(v: &VersionRow) -> Self {
        let s = &v.settings;
        Self {
            provider: s.provider.map(|p| p.as_str().to_ascii_uppercase()),
            model: s.model.clone(),
            temperature: s.temperature,
            top_p: s.top_p,
            max_output_tokens: s.max_output_tokens,
            stop_sequences: s.stop_sequences.clone(),
            variables: v.variables.clone(),
        }
    }
}

/// Tracia's `Prompt` (with the content of one version) or `PromptListItem` (without).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PromptOut {
    id: String,
    slug: String,
    name: String,
    description: Option<String>,
    current_version: i64,
    #[serde(flatten)]
    fields: VersionFields,
    /// The version whose content and settings these are.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Vec<PromptMessage>>,
    created_at: String,
    updated_at: String,
}

impl PromptOut {
    fn new(p: PromptRow, v: VersionRow, with_content: bool) -> Self {
        Self {
            fields: VersionFields::from(&v),
            version: with_content.then_some(v.version),
            content: with_content.then_some(v.content),
            created_at: iso(p.created_ns),
            updated_at: iso(p.updated_ns),
            id: p.id,
            slug: p.slug,
            name: p.name,
            description: p.description,
            current_version: p.current_version,
        }
    }
}

#[derive(Debug, Serialize)]
struct PromptList {
    prompts: Vec<PromptOut>,
}

/// One version, for the UI's history.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionOut {
    version: i64,
    content: Vec<PromptMessage>,
    #[serde(flatten)]
    fields: VersionFields,
    created_at: String,
}

#[derive(Debug, Serialize)]
struct VersionList {
    versions: Vec<VersionOut>,
}

// --- Handlers -------------------------------------------------------------------------

/// `GET /api/v1/prompts`: every prompt, most recently changed first.
async fn list_prompts(State(state): State<AppState>) -> Result<Json<PromptList>, ApiError> {
    let rows = state.prompts.prompts().await?;
    Ok(Json(PromptList {
        prompts: rows
            .into_iter()
            .map(|(p, v)| PromptOut::new(p, v, false))
            .collect(),
    }))
}

/// The query of `GET /api/v1/prompts/{slug}`.
#[derive(Debug, Deserialize)]
struct GetParams {
    version: Option<String>,
}

/// `GET /api/v1/prompts/{slug}[?version=N]`.
async fn get_prompt(
    State(state): State<AppState>,
    slug: Result<Path<String>, PathRejection>,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Result<Json<PromptOut>, ApiError> {
    let slug = path(slug)?;
    let version = match query(params)?.version.filter(|v| !v.is_empty()) {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(ApiError::invalid(format!(
                    "Invalid version {text:?}: expected a positive number"
                )));
            }
        },
    };
    let (prompt, version) = load(&state, &slug, version).await?;
    Ok(Json(PromptOut::new(prompt, version, true)))
}

/// `POST /api/v1/prompts`: a new prompt at version 1.
async fn create_prompt(
    State(state): State<AppState>,
    ApiJson(mut body): ApiJson<PromptBody>,
) -> Result<Json<PromptOut>, ApiError> {
    let name = nonempty(body.name.take()).ok_or_else(|| ApiError::invalid("name is required"))?;
    let slug = match nonempty(body.slug.take()) {
        Some(slug) => slug,
        None => slugify(&name),
    };
    if slug.is_empty() {
        return Err(ApiError::invalid(
            "cannot make a slug from this name: pass slug",
        ));
    }
    let content = body
        .content()?
        .ok_or_else(|| ApiError::invalid("content is required"))?;
    let now = now_unix_nano();
    let version = VersionRow::new(1, content, body.settings_over(&Settings::default())?, now);
    let prompt = PromptRow {
        id: format!("prm_{:016x}", rand::random::<u64>()),
        slug,
        name,
        description: nonempty(body.description),
        current_version: 1,
        created_ns: now,
        updated_ns: now,
    };
    let taken = prompt.slug.clone();
    let (prompt, version) = state
        .prompts
        .create_prompt(prompt, version)
        .await?
        .ok_or_else(|| slug_taken(&taken))?;
    Ok(Json(PromptOut::new(prompt, version, true)))
}

fn slug_taken(slug: &str) -> ApiError {
    ApiError::conflict(format!("A prompt with slug '{slug}' already exists"))
}

/// `PUT /api/v1/prompts/{slug}`: renames, describes, or (content or settings) makes a
/// new version.
async fn update_prompt(
    State(state): State<AppState>,
    slug: Result<Path<String>, PathRejection>,
    ApiJson(mut body): ApiJson<PromptBody>,
) -> Result<Json<PromptOut>, ApiError> {
    let slug = path(slug)?;
    if body.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(ApiError::invalid("name cannot be empty"));
    }
    let content = body.content()?;
    let now = now_unix_nano();
    let new_slug = nonempty(body.slug.take());
    // Runs in the store's write, on the prompt as stored (its slug already changed):
    // the name, the description, and a new version when content or settings change.
    let edit: PromptEdit = Box::new(move |prompt, current| {
        if let Some(name) = body.name.take() {
            prompt.name = name;
        }
        if let Some(description) = body.description.take() {
            prompt.description = nonempty(Some(description));
        }
        let settings = body
            .settings_over(&current.settings)
            .map_err(|e| e.message().to_owned())?;
        let content = content.unwrap_or_else(|| current.content.clone());
        prompt.updated_ns = now;
        if same_content(&content, &current.content) && settings == current.settings {
            return Ok(None);
        }
        let next = VersionRow::new(current.version + 1, content, settings, now);
        prompt.current_version = next.version;
        Ok(Some(next))
    });
    let (prompt, version) = match state
        .prompts
        .update_prompt(slug.clone(), new_slug, edit)
        .await?
    {
        PromptUpdate::Updated(updated) => *updated,
        PromptUpdate::NotFound => {
            return Err(ApiError::not_found(format!("Prompt not found: {slug}")));
        }
        PromptUpdate::SlugTaken(taken) => return Err(slug_taken(&taken)),
        // `settings_over` refuses with INVALID_REQUEST only.
        PromptUpdate::Invalid(message) => return Err(ApiError::invalid(message)),
    };
    Ok(Json(PromptOut::new(prompt, version, true)))
}

/// `DELETE /api/v1/prompts/{slug}`: the prompt and every version.
async fn delete_prompt(
    State(state): State<AppState>,
    slug: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let slug = path(slug)?;
    let deleted = state.prompts.delete_prompt(&slug).await?;
    if !deleted {
        return Err(ApiError::not_found(format!("Prompt not found: {slug}")));
    }
    Ok(Json(json!({"success": true})))
}

/// `GET /api/ui/prompts/{slug}/versions`: every version, newest first.
pub async fn versions(
    State(state): State<AppState>,
    slug: Result<Path<String>, PathRejection>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let slug = path(slug)?;
    let versions = state
        .prompts
        .prompt_versions(&slug)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Prompt not found: {slug}")))?;
    Ok(Json(VersionList {
        versions: versions
            .into_iter()
            .map(|v| VersionOut {
                fields: VersionFields::from(&v),
                created_at: iso(v.created_ns),
                version: v.version,
                content: v.content,
            })
            .collect(),
    }))
}

// --- Run ------------------------------------------------------------------------------

/// The body of `POST /api/v1/prompts/{slug}/run` (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunBody {
    variables: Option<Map<String, Value>>,
    model: Option<String>,
    version: Option<i64>,
    tags: Option<Vec<String>>,
    user_id: Option<String>,
    session_id: Option<String>,
    trace_id: Option<String>,
    parent_span_id: Option<String>,
    messages: Option<Vec<Message>>,
}

/// Template variables as text: strings as they are, numbers and booleans written out.
fn text_variables(variables: Map<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    variables
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            Value::Number(_) | Value::Bool(_) => Ok((k, v.to_string())),
            _ => Err(ApiError::invalid(format!(
                "Variable '{k}' must be a string"
            ))),
        })
        .collect()
}

/// Reads a W3C `traceparent` from request headers.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The caller's span from a valid `traceparent` header (an invalid one is ignored, as
/// W3C Trace Context asks).
fn incoming_parent(headers: &HeaderMap) -> Option<(TraceId, SpanId)> {
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
}

/// Where a run's span goes.
struct Placement {
    trace_id: String,
    parent_span_id: Option<String>,
}

/// The run's trace and parent: the body's ids first (a parent alone lends its stored
/// trace), then an incoming `traceparent`, else a new trace.
async fn place(
    state: &AppState,
    headers: &HeaderMap,
    trace_id: Option<String>,
    parent_span_id: Option<String>,
) -> Result<Placement, ApiError> {
    let incoming = incoming_parent(headers).map(|(t, s)| (model::trace_id(t), model::span_id(s)));
    let trace = nonempty(trace_id)
        .map(|t| {
            parse_trace_id(&t).map(model::trace_id).ok_or_else(|| {
                ApiError::invalid(format!(
                    "Invalid traceId {t:?}: expected tr_ + 16 or 32 hex characters"
                ))
            })
        })
        .transpose()?;
    let parent = nonempty(parent_span_id)
        .map(|p| {
            parse_span_id(&p).map(model::span_id).ok_or_else(|| {
                ApiError::invalid(format!(
                    "Invalid parentSpanId {p:?}: expected sp_ + 16 hex characters"
                ))
            })
        })
        .transpose()?;
    let trace = match (trace, &parent) {
        (Some(trace), _) => trace,
        (None, Some(parent)) => {
            let stored = state.store.get_span(parent).await?.and_then(|s| s.trace_id);
            match stored.or_else(|| incoming.as_ref().map(|(t, _)| t.clone())) {
                Some(trace) => trace,
                None => {
                    return Err(ApiError::invalid(format!(
                        "parentSpanId {parent} is not a stored span: pass its traceId too"
                    )));
                }
            }
        }
        (None, None) => match &incoming {
            Some((trace, _)) => trace.clone(),
            None => format!("tr_{:016x}", rand::random::<u64>().max(1)),
        },
    };
    let parent = parent.or_else(|| {
        incoming
            .filter(|(t, _)| *t == trace)
            .map(|(_, parent)| parent)
    });
    Ok(Placement {
        trace_id: trace,
        parent_span_id: parent,
    })
}

/// A failure of the `tracia` client as the API answers it; `true` when it came from
/// the provider (a request was sent), whose span is then stored as an ERROR span.
fn run_error(e: &tracia::Error, provider: Provider) -> (ApiError, bool) {
    match e.code() {
        ErrorCode::MissingProviderApiKey => (
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "MISSING_PROVIDER_KEY",
                format!(
                    "The collector has no API key for provider '{provider}': start it with {} set",
                    provider.api_key_env()
                ),
            ),
            false,
        ),
        ErrorCode::InvalidRequest | ErrorCode::UnsupportedModel => {
            (ApiError::invalid(e.message()), false)
        }
        _ => (
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "PROVIDER_ERROR",
                tracia::redact(e.message()),
            ),
            true,
        ),
    }
}

/// `POST /api/v1/prompts/{slug}/run`: renders a version, calls its model, stores the
/// call as an LLM span and answers Tracia's `RunResult`.
async fn run_prompt(
    State(state): State<AppState>,
    slug: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RunBody>,
) -> Result<Json<Value>, ApiError> {
    let slug = path(slug)?;
    let (prompt, version) = load(&state, &slug, body.version).await?;
    let variables = text_variables(body.variables.unwrap_or_default())?;
    let settings = &version.settings;
    let overridden = nonempty(body.model);
    // The prompt's provider goes with the prompt's model, not with one the caller names.
    let explicit = if overridden.is_some() {
        None
    } else {
        settings.provider
    };
    let model = overridden
        .or_else(|| settings.model.clone())
        .ok_or_else(|| ApiError::invalid(format!("Prompt '{slug}' has no model: pass model")))?;
    let provider =
        Provider::resolve(&model, explicit).map_err(|e| ApiError::invalid(e.message()))?;

    let mut input = RunLocal::new(&model).provider(provider);
    match body.messages.filter(|m| !m.is_empty()) {
        // A whole conversation: the template is not rendered.
        Some(messages) => input = input.messages(messages),
        None => {
            let missing: Vec<&str> = version
                .variables
                .iter()
                .filter(|name| !variables.contains_key(*name))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "MISSING_VARIABLES",
                    format!("Missing required variables: {}", missing.join(", ")),
                ));
            }
            input = input.messages(template_messages(&version.content));
            for (name, value) in &variables {
                input = input.variable(name, value);
            }
        }
    }
    let placement = place(&state, &headers, body.trace_id, body.parent_span_id).await?;
    let span_id = format!("sp_{:016x}", rand::random::<u64>().max(1));
    input = input.span_id(&span_id).trace_id(&placement.trace_id);
    if let Some(parent) = &placement.parent_span_id {
        input = input.parent_span_id(parent);
    }
    if let Some(t) = settings.temperature {
        input = input.temperature(t);
    }
    if let Some(p) = settings.top_p {
        input = input.top_p(p);
    }
    if let Some(n) = settings.max_output_tokens {
        input = input.max_output_tokens(n);
    }
    for stop in settings.stop_sequences.iter().flatten() {
        input = input.stop_sequence(stop);
    }
    let rendered = input.rendered_messages();

    let mut span = CreateSpan {
        span_id,
        trace_id: Some(placement.trace_id),
        parent_span_id: placement.parent_span_id,
        model: Some(model),
        provider: Some(provider.as_str().to_owned()),
        input: Some(json!({ "messages": rendered })),
        variables: (!variables.is_empty()).then(|| json!(variables)),
        tags: body.tags,
        user_id: body.user_id,
        session_id: body.session_id,
        temperature: settings.temperature,
        top_p: settings.top_p,
        max_output_tokens: settings.max_output_tokens.map(i64::from),
        prompt_slug: Some(prompt.slug),
        prompt_version: Some(version.version),
        ..CreateSpan::default()
    };
    let started = Instant::now();
    let outcome = state.llm.run_local(input).await;
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let result = match outcome {
        Ok(result) => result,
        Err(e) => {
            let (error, sent) = run_error(&e, provider);
            if sent {
                span.status = Some("ERROR".into());
                span.error = Some(error.message().to_owned());
                span.latency_ms = Some(latency_ms);
                store_run(&state, span, None).await?;
            }
            return Err(error);
        }
    };
    let usage = &result.usage;
    let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    span.status = Some("SUCCESS".into());
    span.output = Some(result.text.clone());
    span.latency_ms = Some(tokens(result.latency_ms));
    span.input_tokens = Some(tokens(usage.input_tokens));
    span.output_tokens = Some(tokens(usage.output_tokens));
    span.total_tokens = Some(tokens(usage.total_tokens));
    let tool_calls = (!result.tool_calls.is_empty()).then(|| json!(result.tool_calls));
    span.tool_calls = tool_calls.clone();
    store_run(&state, span, result.cost).await?;

    let mut messages = rendered;
    messages.push(result.message);
    let text_only_tools = result.text.is_empty() && tool_calls.is_some();
    Ok(Json(json!({
        "text": (!text_only_tools).then_some(result.text),
        "spanId": result.span_id,
        "traceId": result.trace_id,
        "promptVersion": version.version,
        "latencyMs": result.latency_ms,
        "usage": {
            "inputTokens": usage.input_tokens,
            "outputTokens": usage.output_tokens,
            "totalTokens": usage.total_tokens,
        },
        // Tracia always answers a number here (the Python SDK requires one): 0 when
        // the model's price is unknown. The stored span keeps `null`.
        "cost": result.cost.unwrap_or(0.0),
        "finishReason": result.finish_reason.as_str(),
        "toolCalls": tool_calls,
        "structuredOutput": null,
        "messages": messages,
    })))
}

/// Stores a run's span, with the client's cost when it priced the call (it counts
/// cached tokens, which the span body does not carry).
async fn store_run(state: &AppState, span: CreateSpan, cost: Option<f64>) -> Result<(), ApiError> {
    let mut record: SpanRecord =
        SpanRecord::from_create(span, now_unix_nano()).map_err(ApiError::invalid)?;
    record.service_name = Some("tracia-collector".into());
    if cost.is_some() {
        record.cost_usd = cost;
    }
    store_spans(state, vec![record]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_from_names() {
        assert_eq!(slugify("Welcome Email"), "welcome-email");
        assert_eq!(slugify("  --Hello,   World!-- "), "hello-world");
        assert_eq!(slugify("Café menu"), "caf-menu");
        assert_eq!(slugify("!!!"), "");
    }

    #[test]
    fn variables_as_text() {
        let vars = json!({"a": "x", "n": 3, "b": true, "gone": null});
        let Value::Object(map) = vars else {
            unreachable!()
        };
        let out = text_variables(map).unwrap();
        assert_eq!(
            out.into_iter().collect::<Vec<_>>(),
            [
                ("a".to_owned(), "x".to_owned()),
                ("b".to_owned(), "true".to_owned()),
                ("n".to_owned(), "3".to_owned())
            ]
        );
        let Value::Object(bad) = json!({"a": {"nested": 1}}) else {
            unreachable!()
        };
        assert_eq!(
            text_variables(bad).unwrap_err().message(),
            "Variable 'a' must be a string"
        );
    }
}
