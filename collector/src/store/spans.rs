//! A span's row: the lifted columns, the JSON body, the upsert and the read back.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::{SpanKind, SpanRecord, SpanStatus};

/// The columns [`span_from_row`] reads, of the `spans` table aliased `s`.
pub(super) const SPAN_COLUMNS: &str = "s.span_id, s.trace_id, s.parent_span_id, s.name, s.kind, \
    s.service_name, s.start_ns, s.end_ns, s.status, s.error, s.provider, s.model, \
    s.input_tokens, s.output_tokens, s.total_tokens, s.cost_usd, s.session_id, s.user_id, \
    s.tags, s.prompt_slug, s.prompt_version, s.body";

/// The columns besides the lifted ones, kept as one JSON document.
///
/// Serialized from borrows, keys in the sorted order a `json!` object had: building a
/// `Value` copied every message and attribute first, and `Value::to_string` went
/// through `fmt::Display`; together they were a third of the writer's time per span.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Body<'a> {
    attributes: &'a Map<String, Value>,
    input: &'a Option<Value>,
    max_output_tokens: Option<i64>,
    output: &'a Option<String>,
    temperature: Option<f64>,
    tool_calls: &'a Option<Value>,
    tools: &'a Option<Value>,
    top_p: Option<f64>,
    variables: &'a Option<Value>,
}

/// The JSON document of `r` (the `limits` module bounds its size).
pub(crate) fn body(r: &SpanRecord) -> Body<'_> {
    Body {
        attributes: &r.attributes,
        input: &r.input,
        max_output_tokens: r.max_output_tokens,
        output: &r.output,
        temperature: r.temperature,
        tool_calls: &r.tool_calls,
        tools: &r.tools,
        top_p: r.top_p,
        variables: &r.variables,
    }
}

pub(super) fn body_of(r: &SpanRecord) -> String {
    serde_json::to_string(&body(r)).unwrap_or_default()
}

pub(super) fn insert_span(tx: &Transaction<'_>, r: &SpanRecord) -> rusqlite::Result<()> {
    let tags = serde_json::to_string(&r.tags).unwrap_or_else(|_| "[]".into());
    let row_id: Option<i64> = tx
        .prepare_cached(
            "INSERT INTO spans (span_id, trace_id, parent_span_id, name, kind, service_name,
                start_ns, end_ns, status, error, provider, model, input_tokens, output_tokens,
                total_tokens, cost_usd, session_id, user_id, tags, prompt_slug, prompt_version,
                body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                ?17, ?18, ?19, ?20, ?21, ?22)
             ON CONFLICT (span_id) DO NOTHING
             RETURNING row_id",
        )?
        .query_row(
            params![
                r.span_id,
                r.trace_id,
                r.parent_span_id,
                r.name,
                r.kind.as_str(),
                r.service_name,
                r.start_unix_nano,
                r.end_unix_nano,
                r.status.as_str(),
                r.error,
                r.provider,
                r.model,
                r.input_tokens,
                r.output_tokens,
                r.total_tokens,
                r.cost_usd,
                r.session_id,
                r.user_id,
                tags,
                r.prompt_slug,
                r.prompt_version,
                body_of(r),
            ],
            |row| row.get(0),
        )
        .optional()?;
    let Some(row_id) = row_id else {
        return Ok(()); // Seen before.
    };
    let mut tag_stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO span_tags (tag, start_ns, row_id) VALUES (?1, ?2, ?3)",
    )?;
    for tag in &r.tags {
        tag_stmt.execute(params![tag, r.start_unix_nano, row_id])?;
    }
    let genai = matches!(r.kind, SpanKind::Llm | SpanKind::Embedding);
    let is_error = r.status == SpanStatus::Error;
    if let Some(trace_id) = &r.trace_id {
        let is_root = r.parent_span_id.is_none();
        tx.prepare_cached(
            "INSERT INTO traces (trace_id, root_name, service_name, root_is_known, start_ns,
                end_ns, span_count, llm_count, error_count, models, input_tokens,
                output_tokens, cost_usd, session_id, user_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (trace_id) DO UPDATE SET
                root_name = CASE WHEN excluded.root_is_known AND NOT traces.root_is_known
                    THEN excluded.root_name
                    WHEN NOT traces.root_is_known AND excluded.start_ns < traces.start_ns
                    THEN excluded.root_name ELSE traces.root_name END,
                service_name = CASE WHEN excluded.root_is_known AND NOT traces.root_is_known
                    THEN excluded.service_name
                    WHEN NOT traces.root_is_known AND excluded.start_ns < traces.start_ns
                    THEN coalesce(excluded.service_name, traces.service_name)
                    ELSE coalesce(traces.service_name, excluded.service_name) END,
                root_is_known = traces.root_is_known OR excluded.root_is_known,
                start_ns = min(traces.start_ns, excluded.start_ns),
                end_ns = max(traces.end_ns, excluded.end_ns),
                span_count = traces.span_count + 1,
                llm_count = traces.llm_count + excluded.llm_count,
                error_count = traces.error_count + excluded.error_count,
                models = CASE WHEN excluded.models IS NULL
                    OR instr(',' || coalesce(traces.models, '') || ',', ',' || excluded.models || ',') > 0
                    THEN traces.models
                    ELSE coalesce(traces.models || ',', '') || excluded.models END,
                input_tokens = traces.input_tokens + excluded.input_tokens,
                output_tokens = traces.output_tokens + excluded.output_tokens,
                cost_usd = CASE WHEN excluded.cost_usd IS NULL THEN traces.cost_usd
                    ELSE coalesce(traces.cost_usd, 0) + excluded.cost_usd END,
                session_id = coalesce(traces.session_id, excluded.session_id),
                user_id = coalesce(traces.user_id, excluded.user_id)",
        )?
        .execute(params![
            trace_id,
            r.name,
            r.service_name,
            is_root,
            r.start_unix_nano,
            r.end_unix_nano,
            i64::from(genai),
            i64::from(is_error),
            r.model.as_deref().map(|m| m.replace(',', " ")),
            r.input_tokens,
            r.output_tokens,
            r.cost_usd,
            r.session_id,
            r.user_id,
        ])?;
    }
    if let Some(session_id) = &r.session_id {
        tx.prepare_cached(
            "INSERT INTO sessions (session_id, span_count, user_id, input_tokens,
                output_tokens, cost_usd, first_ns, last_ns)
             VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (session_id) DO UPDATE SET
                span_count = sessions.span_count + 1,
                user_id = coalesce(sessions.user_id, excluded.user_id),
                input_tokens = sessions.input_tokens + excluded.input_tokens,
                output_tokens = sessions.output_tokens + excluded.output_tokens,
                cost_usd = CASE WHEN excluded.cost_usd IS NULL THEN sessions.cost_usd
                    ELSE coalesce(sessions.cost_usd, 0) + excluded.cost_usd END,
                first_ns = min(sessions.first_ns, excluded.first_ns),
                last_ns = max(sessions.last_ns, excluded.last_ns)",
        )?
        .execute(params![
            session_id,
            r.user_id,
            r.input_tokens,
            r.output_tokens,
            r.cost_usd,
            r.start_unix_nano,
            r.end_unix_nano,
        ])?;
        if let Some(trace_id) = &r.trace_id {
            let added = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO session_traces (session_id, trace_id) VALUES (?1, ?2)",
                )?
                .execute(params![session_id, trace_id])?;
            if added > 0 {
                tx.prepare_cached(
                    "UPDATE sessions SET trace_count = trace_count + 1 WHERE session_id = ?1",
                )?
                .execute(params![session_id])?;
            }
        }
    }
    Ok(())
}

pub(super) fn span_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SpanRecord> {
    let text = |i: usize| row.get::<_, String>(i);
    let kind = SpanKind::parse(&text(4)?).unwrap_or(SpanKind::App);
    let status = SpanStatus::parse(&text(8)?).unwrap_or(SpanStatus::Success);
    let tags: Vec<String> = serde_json::from_str(&text(18)?).unwrap_or_default();
    let body: Map<String, Value> = serde_json::from_str(&text(21)?).unwrap_or_default();
    let field = |k: &str| body.get(k).cloned().filter(|v| !v.is_null());
    Ok(SpanRecord {
        span_id: text(0)?,
        trace_id: row.get(1)?,
        parent_span_id: row.get(2)?,
        name: text(3)?,
        kind,
        service_name: row.get(5)?,
        start_unix_nano: row.get(6)?,
        end_unix_nano: row.get(7)?,
        status,
        error: row.get(9)?,
        provider: row.get(10)?,
        model: row.get(11)?,
        input_tokens: row.get(12)?,
        output_tokens: row.get(13)?,
        total_tokens: row.get(14)?,
        cost_usd: row.get(15)?,
        session_id: row.get(16)?,
        user_id: row.get(17)?,
        tags,
        prompt_slug: row.get(19)?,
        prompt_version: row.get(20)?,
        input: field("input"),
        output: field("output").and_then(|v| v.as_str().map(str::to_owned)),
        variables: field("variables"),
        tools: field("tools"),
        tool_calls: field("toolCalls"),
        temperature: field("temperature").and_then(|v| v.as_f64()),
        top_p: field("topP").and_then(|v| v.as_f64()),
        max_output_tokens: field("maxOutputTokens").and_then(|v| v.as_i64()),
        attributes: match body.get("attributes") {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        },
    })
}
