//! The listings: spans, traces and sessions, filtered and cut into pages by cursor.

use rusqlite::{Connection, params};

use super::spans::{SPAN_COLUMNS, span_from_row};
use super::{
    DEFAULT_LIMIT, MAX_LIMIT, Page, Result, SessionSummary, SpanQuery, StoreError, TraceQuery,
    TraceSummary,
};
use crate::model::{SpanKind, SpanRecord, SpanStatus};

/// A cursor is the last item's sort key and row id, `KEY_ROWID`: stable while rows
/// arrive.
fn parse_cursor(cursor: &str) -> Result<(i64, i64)> {
    cursor
        .split_once('_')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| StoreError::BadCursor(cursor.to_owned()))
}

fn page_size(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

/// WHERE clauses and their bound values, built together so that no value is ever
/// spliced into the SQL text.
#[derive(Default)]
pub(super) struct Filter {
    clauses: Vec<String>,
    values: Vec<Box<dyn rusqlite::ToSql>>,
}

impl Filter {
    /// Binds a value; returns its placeholder.
    fn bind(&mut self, value: impl rusqlite::ToSql + 'static) -> String {
        self.values.push(Box::new(value));
        format!("?{}", self.values.len())
    }

    /// Adds `clause` with its one `?` bound to `value`.
    fn add(&mut self, clause: &str, value: impl rusqlite::ToSql + 'static) {
        let placeholder = self.bind(value);
        self.clauses.push(clause.replacen('?', &placeholder, 1));
    }

    /// Rows after a cursor in `key DESC, id DESC` order.
    fn after_cursor(&mut self, cursor: &str, key: &str, id: &str) -> Result<()> {
        let (last_key, last_id) = parse_cursor(cursor)?;
        let (a, b) = (self.bind(last_key), self.bind(last_id));
        self.clauses.push(format!("({key}, {id}) < ({a}, {b})"));
        Ok(())
    }

    /// `WHERE …` (or nothing) and `LIMIT ?` for one row more than a page, which tells
    /// whether there is a next page.
    fn where_and_limit(&mut self, page: usize) -> (String, String) {
        let limit = format!("LIMIT {}", self.bind((page + 1) as i64));
        let filter = if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        };
        (filter, limit)
    }

    pub(super) fn params(&self) -> Vec<&dyn rusqlite::ToSql> {
        self.values.iter().map(|v| v.as_ref()).collect()
    }
}

/// Reads a page from rows fetched with [`Filter::where_and_limit`]; `read` gives each
/// item with its sort key and row id, the next page's cursor.
fn collect_page<T>(
    mut rows: rusqlite::Rows<'_>,
    page: usize,
    read: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<(T, i64, i64)>,
) -> Result<Page<T>> {
    let mut items = Vec::with_capacity(page);
    let mut last = (0, 0);
    while let Some(row) = rows.next()? {
        if items.len() == page {
            return Ok(Page {
                items,
                next_cursor: Some(format!("{}_{}", last.0, last.1)),
            });
        }
        let (item, key, id) = read(row)?;
        items.push(item);
        last = (key, id);
    }
    Ok(Page {
        items,
        next_cursor: None,
    })
}

/// A query's SQL and its bound values.
pub(super) struct Select {
    pub(super) sql: String,
    pub(super) filter: Filter,
    page: usize,
}

impl Select {
    /// Runs the query; `read` gives each item with its sort key and row id.
    fn page<T>(
        &self,
        conn: &Connection,
        read: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<(T, i64, i64)>,
    ) -> Result<Page<T>> {
        let mut stmt = conn.prepare_cached(&self.sql)?;
        let rows = stmt.query(self.filter.params().as_slice())?;
        collect_page(rows, self.page, read)
    }
}

pub(super) fn list_spans(conn: &Connection, q: &SpanQuery) -> Result<Page<SpanRecord>> {
    spans_select(q)?.page(conn, |row| {
        let span = span_from_row(row)?;
        let key = span.start_unix_nano;
        Ok((span, key, row.get(22)?))
    })
}

pub(super) fn spans_select(q: &SpanQuery) -> Result<Select> {
    let page = page_size(q.limit);
    let mut f = Filter::default();
    // With tags, the first tag's entries drive the query (`o`rder table): its primary
    // key is already in page order, so a rare tag does not mean scanning every span.
    let (from, o) = match q.tags.split_first() {
        Some((first, others)) => {
            f.add("t.tag = ?", first.clone());
            for tag in others {
                f.add(
                    "EXISTS (SELECT 1 FROM span_tags x
                      WHERE x.tag = ? AND x.start_ns = s.start_ns AND x.row_id = s.row_id)",
                    tag.clone(),
                );
            }
            ("span_tags t CROSS JOIN spans s ON s.row_id = t.row_id", "t")
        }
        None => ("spans s", "s"),
    };
    if let Some(v) = &q.prompt_slug {
        f.add("s.prompt_slug = ?", v.clone());
    }
    if let Some(v) = q.status {
        f.add("s.status = ?", v.as_str());
    }
    if let Some(v) = q.start_unix_nano {
        f.add(&format!("{o}.start_ns >= ?"), v);
    }
    if let Some(v) = q.end_unix_nano {
        f.add(&format!("{o}.start_ns <= ?"), v);
    }
    if let Some(v) = &q.user_id {
        f.add("s.user_id = ?", v.clone());
    }
    if let Some(v) = &q.session_id {
        f.add("s.session_id = ?", v.clone());
    }
    if let Some(v) = &q.model {
        f.add("s.model = ?", v.clone());
    }
    if q.genai_only {
        f.add("s.kind <> ?", SpanKind::App.as_str());
    }
    if let Some(cursor) = &q.cursor {
        f.after_cursor(cursor, &format!("{o}.start_ns"), &format!("{o}.row_id"))?;
    }
    let (filter, limit) = f.where_and_limit(page);
    let sql = format!(
        "SELECT {SPAN_COLUMNS}, {o}.row_id FROM {from} {filter}
         ORDER BY {o}.start_ns DESC, {o}.row_id DESC {limit}"
    );
    Ok(Select {
        sql,
        filter: f,
        page,
    })
}

/// The columns [`trace_from_row`] reads.
pub(super) const TRACE_COLUMNS: &str = "traces.trace_id, traces.root_name, traces.service_name, \
    traces.start_ns, traces.end_ns, traces.span_count, traces.llm_count, traces.error_count, \
    traces.models, traces.input_tokens, traces.output_tokens, traces.cost_usd, \
    traces.session_id, traces.user_id";

pub(super) fn trace_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TraceSummary> {
    let models: Option<String> = row.get(8)?;
    Ok(TraceSummary {
        trace_id: row.get(0)?,
        root_name: row.get(1)?,
        service_name: row.get(2)?,
        start_unix_nano: row.get(3)?,
        end_unix_nano: row.get(4)?,
        span_count: row.get(5)?,
        llm_count: row.get(6)?,
        error_count: row.get(7)?,
        models: models
            .map(|m| m.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        input_tokens: row.get(9)?,
        output_tokens: row.get(10)?,
        cost_usd: row.get(11)?,
        session_id: row.get(12)?,
        user_id: row.get(13)?,
    })
}

pub(super) fn list_traces(conn: &Connection, q: &TraceQuery) -> Result<Page<TraceSummary>> {
    traces_select(conn, q)?.page(conn, |row| {
        let trace = trace_from_row(row)?;
        let key = trace.start_unix_nano;
        Ok((trace, key, row.get(14)?))
    })
}

/// A trace filter on the trace's spans (or sessions): its matching rows read from an
/// index alone (`matches`, to count them), the matching trace ids (`candidates`), and
/// the same test for one trace (`probe`). Each has one `?`, the filter's value.
struct SpanCondition {
    matches: &'static str,
    candidates: &'static str,
    probe: &'static str,
}

const BY_MODEL: SpanCondition = SpanCondition {
    matches: "SELECT 1 FROM spans s WHERE s.model = ?",
    candidates: "SELECT s.trace_id FROM spans s WHERE s.model = ?",
    probe: "EXISTS (SELECT 1 FROM spans s INDEXED BY spans_trace
             WHERE s.trace_id = traces.trace_id AND s.model = ?)",
};

const BY_USER: SpanCondition = SpanCondition {
    matches: "SELECT 1 FROM spans s WHERE s.user_id = ?",
    candidates: "SELECT s.trace_id FROM spans s WHERE s.user_id = ?",
    probe: "EXISTS (SELECT 1 FROM spans s INDEXED BY spans_trace
             WHERE s.trace_id = traces.trace_id AND s.user_id = ?)",
};

const BY_TAG: SpanCondition = SpanCondition {
    matches: "SELECT 1 FROM span_tags t WHERE t.tag = ?",
    candidates: "SELECT s.trace_id FROM span_tags t CROSS JOIN spans s ON s.row_id = t.row_id
                 WHERE t.tag = ?",
    probe: "EXISTS (SELECT 1 FROM spans s INDEXED BY spans_trace
             WHERE s.trace_id = traces.trace_id AND EXISTS (SELECT 1 FROM span_tags t
               WHERE t.tag = ? AND t.start_ns = s.start_ns AND t.row_id = s.row_id))",
};

const BY_SESSION: SpanCondition = SpanCondition {
    matches: "SELECT 1 FROM session_traces st WHERE st.session_id = ?",
    candidates: "SELECT st.trace_id FROM session_traces st WHERE st.session_id = ?",
    probe: "EXISTS (SELECT 1 FROM session_traces st
             WHERE st.session_id = ? AND st.trace_id = traces.trace_id)",
};

/// Below this many matching rows, a trace filter drives the query from its matches
/// (then sorted); above, the trace list is read in order and each trace probed, which
/// finds a page quickly because matches are common.
pub(super) const FEW_CANDIDATES: i64 = 5000;

/// How many rows `condition` matches, counted up to [`FEW_CANDIDATES`].
fn count_candidates(conn: &Connection, condition: &SpanCondition, value: &str) -> Result<i64> {
    let sql = format!(
        "SELECT count(*) FROM ({} LIMIT ?2)",
        condition.matches.replacen('?', "?1", 1)
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    Ok(stmt.query_row(params![value, FEW_CANDIDATES], |r| r.get(0))?)
}

pub(super) fn traces_select(conn: &Connection, q: &TraceQuery) -> Result<Select> {
    let page = page_size(q.limit);
    let mut f = Filter::default();
    let conditions: Vec<(&SpanCondition, &String)> = [
        (&BY_MODEL, &q.model),
        (&BY_USER, &q.user_id),
        (&BY_TAG, &q.tag),
        (&BY_SESSION, &q.session_id),
    ]
    .into_iter()
    .filter_map(|(condition, value)| Some((condition, value.as_ref()?)))
    .collect();
    // The rarest condition, when rare enough, drives the query.
    let mut driver: Option<(usize, i64)> = None;
    for (i, (condition, value)) in conditions.iter().enumerate() {
        let n = count_candidates(conn, condition, value)?;
        if n < FEW_CANDIDATES && driver.is_none_or(|(_, fewest)| n < fewest) {
            driver = Some((i, n));
        }
    }
    let mut from = "traces".to_owned();
    for (i, (condition, value)) in conditions.iter().enumerate() {
        if driver.is_some_and(|(d, _)| d == i) {
            let candidates = condition
                .candidates
                .replacen('?', &f.bind((*value).clone()), 1);
            from = format!(
                "(SELECT DISTINCT trace_id FROM ({candidates})) c
                 CROSS JOIN traces ON traces.trace_id = c.trace_id"
            );
        } else {
            f.add(condition.probe, (*value).clone());
        }
    }
    match q.status {
        Some(SpanStatus::Error) => f.clauses.push("traces.error_count > 0".into()),
        Some(SpanStatus::Success) => f.clauses.push("traces.error_count = 0".into()),
        None => {}
    }
    if let Some(v) = q.since_unix_nano {
        f.add("traces.start_ns >= ?", v);
    }
    if let Some(v) = q.until_unix_nano {
        f.add("traces.start_ns <= ?", v);
    }
    if let Some(cursor) = &q.cursor {
        f.after_cursor(cursor, "traces.start_ns", "traces.rowid")?;
    }
    let (filter, limit) = f.where_and_limit(page);
    let sql = format!(
        "SELECT {TRACE_COLUMNS}, traces.rowid FROM {from} {filter}
         ORDER BY traces.start_ns DESC, traces.rowid DESC {limit}"
    );
    Ok(Select {
        sql,
        filter: f,
        page,
    })
}

pub(super) fn list_sessions(
    conn: &Connection,
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<Page<SessionSummary>> {
    sessions_select(limit, cursor)?.page(conn, |row| {
        let session = SessionSummary {
            session_id: row.get(0)?,
            trace_count: row.get(1)?,
            span_count: row.get(2)?,
            user_id: row.get(3)?,
            input_tokens: row.get(4)?,
            output_tokens: row.get(5)?,
            cost_usd: row.get(6)?,
            first_unix_nano: row.get(7)?,
            last_unix_nano: row.get(8)?,
        };
        let key = session.last_unix_nano;
        Ok((session, key, row.get(9)?))
    })
}

pub(super) fn sessions_select(limit: Option<usize>, cursor: Option<&str>) -> Result<Select> {
    let page = page_size(limit);
    let mut f = Filter::default();
    if let Some(cursor) = cursor {
        f.after_cursor(cursor, "last_ns", "rowid")?;
    }
    let (filter, limit) = f.where_and_limit(page);
    let sql = format!(
        "SELECT session_id, trace_count, span_count, user_id, input_tokens, output_tokens,
            cost_usd, first_ns, last_ns, rowid FROM sessions {filter}
         ORDER BY last_ns DESC, rowid DESC {limit}"
    );
    Ok(Select {
        sql,
        filter: f,
        page,
    })
}
