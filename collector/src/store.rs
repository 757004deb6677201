//! The span store: SQLite (bundled) in WAL mode in the data directory.
//!
//! - **One writer.** A dedicated thread owns the only writing connection. Writes queue
//!   to it and are committed in batches (one transaction for whatever has queued up),
//!   so ingestion costs one fsync per batch, not per span.
//! - **Durable acknowledgements.** [`Store::insert`] resolves only after its batch is
//!   committed with `synchronous=FULL`, so an acknowledged export survives `kill -9`
//!   (and power loss) right after the response.
//! - **Readers** use their own connections (WAL lets them read while the writer writes),
//!   on Tokio's blocking pool.
//! - **Schema** versions live in [`crate::schema`]; every query binds its parameters.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::model::{SpanKind, SpanRecord, SpanStatus};
use crate::schema;

/// The database file inside the data directory.
pub const DB_FILE: &str = "tracia.db";

/// Most writes committed in one transaction.
const MAX_BATCH_JOBS: usize = 256;

/// Writes waiting for the writer; senders wait (backpressure) when it is full.
const QUEUE_DEPTH: usize = 1024;

/// Spans per page when a query gives no limit, and the most it may ask for.
pub const DEFAULT_LIMIT: usize = 50;
/// The largest page.
pub const MAX_LIMIT: usize = 100;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be prepared.
    #[error("store: cannot use data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The writer thread is gone (the store is shutting down).
    #[error("store: the writer has stopped")]
    Closed,
    /// The batch the write was in could not be committed: nothing of it is stored.
    #[error("store: commit failed: {0}")]
    Commit(String),
    /// A cursor that this store did not hand out.
    #[error("invalid cursor {0:?}")]
    BadCursor(String),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A write run on the writer thread inside the batch's transaction (in a savepoint of
/// its own, so that one failing write does not undo the others). It returns how to
/// answer its writer, which the writer calls only once the batch's commit is known.
type WriteJob = Box<dyn FnOnce(&Transaction<'_>) -> Reply + Send>;

/// Answers a writer with the outcome of the batch's commit.
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The SQLite span store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    writer: mpsc::Sender<WriteJob>,
    readers: Mutex<Vec<Connection>>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The filters of `GET /api/v1/spans` (all optional; tags match with AND).
#[derive(Debug, Clone, Default)]
pub struct SpanQuery {
    /// Spans of this prompt.
    pub prompt_slug: Option<String>,
    /// SUCCESS or ERROR.
    pub status: Option<SpanStatus>,
    /// Spans that started at or after this time (Unix nanoseconds).
    pub start_unix_nano: Option<i64>,
    /// Spans that started at or before this time (Unix nanoseconds).
    pub end_unix_nano: Option<i64>,
    /// `user.id`.
    pub user_id: Option<String>,
    /// `session.id`.
    pub session_id: Option<String>,
    /// Every one of these tags.
    pub tags: Vec<String>,
    /// The model.
    pub model: Option<String>,
    /// Only GenAI spans (LLM, EMBEDDING, ROOT), as Tracia lists them.
    pub genai_only: bool,
    /// Page size (default 50, at most 100).
    pub limit: Option<usize>,
    /// A `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// The filters of the trace list (all optional).
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    /// Traces with a span of this model.
    pub model: Option<String>,
    /// Traces with an error (ERROR) or without (SUCCESS).
    pub status: Option<SpanStatus>,
    /// `session.id`.
    pub session_id: Option<String>,
    /// `user.id`.
    pub user_id: Option<String>,
    /// Traces with a span carrying this tag.
    pub tag: Option<String>,
    /// Traces that started at or after (Unix nanoseconds).
    pub since_unix_nano: Option<i64>,
    /// Traces that started at or before (Unix nanoseconds).
    pub until_unix_nano: Option<i64>,
    /// Page size (default 50, at most 100).
    pub limit: Option<usize>,
    /// A `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// One trace of the trace list.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceSummary {
    /// `tr_…`.
    pub trace_id: String,
    /// The root span's name (the earliest span's while the root has not arrived).
    pub root_name: Option<String>,
    /// The root span's service.
    pub service_name: Option<String>,
    /// Earliest start, Unix nanoseconds.
    pub start_unix_nano: i64,
    /// Latest end, Unix nanoseconds.
    pub end_unix_nano: i64,
    /// Spans stored.
    pub span_count: i64,
    /// LLM and embedding spans.
    pub llm_count: i64,
    /// ERROR spans.
    pub error_count: i64,
    /// Models used, in first-seen order.
    pub models: Vec<String>,
    /// Sum over the spans.
    pub input_tokens: i64,
    /// Sum over the spans.
    pub output_tokens: i64,
    /// Sum over the priced spans; `None` when none is priced.
    pub cost_usd: Option<f64>,
    /// The first `session.id` seen.
    pub session_id: Option<String>,
    /// The first `user.id` seen.
    pub user_id: Option<String>,
}

/// One session of the session list.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary {
    /// `session.id`.
    pub session_id: String,
    /// Traces with a span of the session.
    pub trace_count: i64,
    /// Spans of the session.
    pub span_count: i64,
    /// The first `user.id` seen.
    pub user_id: Option<String>,
    /// Sum over the spans.
    pub input_tokens: i64,
    /// Sum over the spans.
    pub output_tokens: i64,
    /// Sum over the priced spans.
    pub cost_usd: Option<f64>,
    /// Earliest span start, Unix nanoseconds.
    pub first_unix_nano: i64,
    /// Latest span end, Unix nanoseconds.
    pub last_unix_nano: i64,
}

/// An evaluation attached to a span (`POST /api/v1/spans/{id}/evaluations`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// `eval_` + 16 hex.
    pub id: String,
    /// The span evaluated.
    pub span_id: String,
    /// e.g. `quality`.
    pub evaluator_key: String,
    /// The score (1 good, 0 bad, or any number).
    pub value: f64,
    /// A free-text note.
    pub note: Option<String>,
    /// Where it came from (`api`).
    pub source: String,
    /// When it was stored, Unix nanoseconds.
    pub created_unix_nano: i64,
}

impl Store {
    /// Opens (creating it if needed) the store in `dir`, migrating its schema.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed batch is on disk before its writers are answered.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        schema::migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("tracia-store-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|source| StoreError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                writer: tx,
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the writer thread in a transaction committed with the batch it joins;
    /// resolves once committed (durable).
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let job: WriteJob = Box::new(move |tx| {
            let outcome = run_in_savepoint(tx, f);
            Box::new(move |commit| {
                let answer = match (outcome, commit) {
                    (Err(e), _) => Err(StoreError::Sqlite(e)),
                    (Ok(_), Err(e)) => Err(StoreError::Commit(e)),
                    (Ok(value), Ok(())) => Ok(value),
                };
                let _ = done.send(answer);
            })
        });
        self.inner
            .writer
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` with a read connection on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_reader(&inner.path)?,
            };
            let result = f(&conn);
            inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Stores spans (a span id seen before is kept as first stored, so re-sent exports
    /// are idempotent). Resolves once the spans are committed.
    pub async fn insert(&self, records: Vec<SpanRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.write(move |tx| {
            for record in &records {
                insert_span(tx, record)?;
            }
            Ok(())
        })
        .await
    }

    /// One span.
    pub async fn get_span(&self, span_id: &str) -> Result<Option<SpanRecord>> {
        let span_id = span_id.to_owned();
        self.read(move |conn| {
            let sql = format!("SELECT {SPAN_COLUMNS} FROM spans WHERE span_id = ?1");
            Ok(conn
                .query_row(&sql, params![span_id], span_from_row)
                .optional()?)
        })
        .await
    }

    /// Spans newest first, filtered.
    pub async fn list_spans(&self, query: SpanQuery) -> Result<Page<SpanRecord>> {
        self.read(move |conn| list_spans(conn, &query)).await
    }

    /// Every span of a trace, in start order.
    pub async fn trace(&self, trace_id: &str) -> Result<Vec<SpanRecord>> {
        let trace_id = trace_id.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {SPAN_COLUMNS} FROM spans WHERE trace_id = ?1 ORDER BY start_ns, row_id"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![trace_id], span_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Traces newest first, filtered.
    pub async fn traces(&self, query: TraceQuery) -> Result<Page<TraceSummary>> {
        self.read(move |conn| list_traces(conn, &query)).await
    }

    /// One trace's summary.
    pub async fn trace_summary(&self, trace_id: &str) -> Result<Option<TraceSummary>> {
        let trace_id = trace_id.to_owned();
        self.read(move |conn| {
            let sql = format!("SELECT {TRACE_COLUMNS} FROM traces WHERE trace_id = ?1");
            Ok(conn
                .query_row(&sql, params![trace_id], trace_from_row)
                .optional()?)
        })
        .await
    }

    /// The tags of each of these traces (distinct, in the order they first appear).
    pub async fn trace_tags(&self, trace_ids: Vec<String>) -> Result<Vec<Vec<String>>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT t.tag FROM span_tags t JOIN spans s ON s.row_id = t.row_id
                 WHERE s.trace_id = ?1 GROUP BY t.tag ORDER BY min(s.start_ns), t.tag",
            )?;
            let mut tags = Vec::with_capacity(trace_ids.len());
            for trace_id in &trace_ids {
                let rows = stmt.query_map(params![trace_id], |r| r.get(0))?;
                tags.push(rows.collect::<rusqlite::Result<_>>()?);
            }
            Ok(tags)
        })
        .await
    }

    /// Sessions, most recently active first.
    pub async fn sessions(
        &self,
        limit: Option<usize>,
        cursor: Option<String>,
    ) -> Result<Page<SessionSummary>> {
        self.read(move |conn| list_sessions(conn, limit, cursor.as_deref()))
            .await
    }

    /// Attaches an evaluation to a stored span; `None` when the span is unknown.
    pub async fn add_evaluation(
        &self,
        span_id: &str,
        evaluator_key: &str,
        value: f64,
        note: Option<String>,
        now_unix_nano: i64,
    ) -> Result<Option<Evaluation>> {
        let evaluation = Evaluation {
            id: format!("eval_{:016x}", rand_u64()),
            span_id: span_id.to_owned(),
            evaluator_key: evaluator_key.to_owned(),
            value,
            note,
            source: "api".into(),
            created_unix_nano: now_unix_nano,
        };
        self.write(move |tx| {
            let known: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM spans WHERE span_id = ?1",
                    params![evaluation.span_id],
                    |r| r.get(0),
                )
                .optional()?;
            if known.is_none() {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO evaluations (id, span_id, evaluator_key, value, note, source, created_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    evaluation.id,
                    evaluation.span_id,
                    evaluation.evaluator_key,
                    evaluation.value,
                    evaluation.note,
                    evaluation.source,
                    evaluation.created_unix_nano,
                ],
            )?;
            Ok(Some(evaluation))
        })
        .await
    }

    /// The evaluations of a span, oldest first.
    pub async fn evaluations(&self, span_id: &str) -> Result<Vec<Evaluation>> {
        let span_id = span_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, span_id, evaluator_key, value, note, source, created_ns
                 FROM evaluations WHERE span_id = ?1 ORDER BY created_ns",
            )?;
            let rows = stmt.query_map(params![span_id], |r| {
                Ok(Evaluation {
                    id: r.get(0)?,
                    span_id: r.get(1)?,
                    evaluator_key: r.get(2)?,
                    value: r.get(3)?,
                    note: r.get(4)?,
                    source: r.get(5)?,
                    created_unix_nano: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Deletes spans that started before `cutoff_unix_nano`, with the traces and
    /// sessions that have nothing newer; returns how many spans went.
    pub async fn prune(&self, cutoff_unix_nano: i64) -> Result<usize> {
        self.write(move |tx| {
            let spans = tx.execute(
                "DELETE FROM spans WHERE start_ns < ?1",
                params![cutoff_unix_nano],
            )?;
            tx.execute(
                "DELETE FROM traces WHERE end_ns < ?1",
                params![cutoff_unix_nano],
            )?;
            tx.execute(
                "DELETE FROM session_traces WHERE session_id IN
                 (SELECT session_id FROM sessions WHERE last_ns < ?1)",
                params![cutoff_unix_nano],
            )?;
            tx.execute(
                "DELETE FROM sessions WHERE last_ns < ?1",
                params![cutoff_unix_nano],
            )?;
            Ok(spans)
        })
        .await
    }
}

fn run_in_savepoint<T>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    tx.execute_batch("SAVEPOINT job")?;
    match f(tx) {
        Ok(value) => {
            tx.execute_batch("RELEASE job")?;
            Ok(value)
        }
        Err(e) => {
            tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

/// The writer: takes whatever has queued up, runs it in one transaction, commits, and
/// only then lets the waiting writers have their answers.
fn writer_loop(mut conn: Connection, mut jobs: mpsc::Receiver<WriteJob>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_JOBS {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                // The batch's jobs are dropped: their writers see `Closed`.
                tracing::error!("store: cannot begin a transaction: {e}");
                continue;
            }
        };
        let replies: Vec<Reply> = batch.into_iter().map(|job| job(&tx)).collect();
        let commit = tx.commit().map_err(|e| e.to_string());
        if let Err(e) = &commit {
            tracing::error!("store: commit failed, the batch is not stored: {e}");
        }
        for reply in replies {
            reply(commit.clone());
        }
    }
}

fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

const SPAN_COLUMNS: &str = "span_id, trace_id, parent_span_id, name, kind, service_name, \
    start_ns, end_ns, status, error, provider, model, input_tokens, output_tokens, \
    total_tokens, cost_usd, session_id, user_id, tags, prompt_slug, prompt_version, body";

/// The columns besides the lifted ones, kept as one JSON document.
fn body_of(r: &SpanRecord) -> String {
    json!({
        "input": r.input, "output": r.output, "variables": r.variables, "tools": r.tools,
        "toolCalls": r.tool_calls, "temperature": r.temperature, "topP": r.top_p,
        "maxOutputTokens": r.max_output_tokens, "attributes": r.attributes,
    })
    .to_string()
}

fn insert_span(tx: &Transaction<'_>, r: &SpanRecord) -> rusqlite::Result<()> {
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
    let mut tag_stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO span_tags (tag, row_id) VALUES (?1, ?2)")?;
    for tag in &r.tags {
        tag_stmt.execute(params![tag, row_id])?;
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

fn span_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SpanRecord> {
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

/// A cursor is the last item's `(start_ns, row_id)`: stable while spans arrive.
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
struct Filter {
    clauses: Vec<String>,
    values: Vec<Box<dyn rusqlite::ToSql>>,
}

impl Filter {
    fn add(&mut self, clause: &str, value: impl rusqlite::ToSql + 'static) {
        self.values.push(Box::new(value));
        let n = self.values.len();
        self.clauses.push(clause.replace('?', &format!("?{n}")));
    }

    /// Rows after a cursor in `start_ns DESC, <id> DESC` order.
    fn after_cursor(&mut self, cursor: &str, id: &str) -> Result<()> {
        let (start, row) = parse_cursor(cursor)?;
        let n = self.values.len() + 1;
        self.values.push(Box::new(start));
        self.values.push(Box::new(row));
        self.clauses.push(format!(
            "(start_ns < ?{n} OR (start_ns = ?{n} AND {id} < ?{}))",
            n + 1
        ));
        Ok(())
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }

    fn params(&self) -> Vec<&dyn rusqlite::ToSql> {
        self.values.iter().map(|v| v.as_ref()).collect()
    }
}

fn list_spans(conn: &Connection, q: &SpanQuery) -> Result<Page<SpanRecord>> {
    let limit = page_size(q.limit);
    let mut f = Filter::default();
    if let Some(v) = &q.prompt_slug {
        f.add("prompt_slug = ?", v.clone());
    }
    if let Some(v) = q.status {
        f.add("status = ?", v.as_str());
    }
    if let Some(v) = q.start_unix_nano {
        f.add("start_ns >= ?", v);
    }
    if let Some(v) = q.end_unix_nano {
        f.add("start_ns <= ?", v);
    }
    if let Some(v) = &q.user_id {
        f.add("user_id = ?", v.clone());
    }
    if let Some(v) = &q.session_id {
        f.add("session_id = ?", v.clone());
    }
    if let Some(v) = &q.model {
        f.add("model = ?", v.clone());
    }
    if q.genai_only {
        f.clauses.push("kind <> 'APP'".into());
    }
    for tag in &q.tags {
        f.add(
            "row_id IN (SELECT row_id FROM span_tags WHERE tag = ?)",
            tag.clone(),
        );
    }
    if let Some(cursor) = &q.cursor {
        f.after_cursor(cursor, "row_id")?;
    }
    let sql = format!(
        "SELECT {SPAN_COLUMNS}, row_id FROM spans {} ORDER BY start_ns DESC, row_id DESC LIMIT {}",
        f.sql(),
        limit + 1
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(f.params().as_slice())?;
    let mut items = Vec::new();
    let mut last = None;
    while let Some(row) = rows.next()? {
        if items.len() == limit {
            let (start, id) = last.expect("a full page has a last item");
            return Ok(Page {
                items,
                next_cursor: Some(format!("{start}_{id}")),
            });
        }
        let record = span_from_row(row)?;
        last = Some((record.start_unix_nano, row.get::<_, i64>(22)?));
        items.push(record);
    }
    Ok(Page {
        items,
        next_cursor: None,
    })
}

const TRACE_COLUMNS: &str = "trace_id, root_name, service_name, start_ns, end_ns, span_count, \
    llm_count, error_count, models, input_tokens, output_tokens, cost_usd, session_id, user_id";

fn trace_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TraceSummary> {
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

fn list_traces(conn: &Connection, q: &TraceQuery) -> Result<Page<TraceSummary>> {
    let limit = page_size(q.limit);
    let mut f = Filter::default();
    if let Some(v) = &q.model {
        f.add(
            "EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = traces.trace_id AND s.model = ?)",
            v.clone(),
        );
    }
    match q.status {
        Some(SpanStatus::Error) => f.clauses.push("error_count > 0".into()),
        Some(SpanStatus::Success) => f.clauses.push("error_count = 0".into()),
        None => {}
    }
    if let Some(v) = &q.session_id {
        f.add(
            "trace_id IN (SELECT trace_id FROM session_traces WHERE session_id = ?)",
            v.clone(),
        );
    }
    if let Some(v) = &q.user_id {
        f.add(
            "EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = traces.trace_id AND s.user_id = ?)",
            v.clone(),
        );
    }
    if let Some(v) = &q.tag {
        f.add(
            "EXISTS (SELECT 1 FROM span_tags t JOIN spans s ON s.row_id = t.row_id
              WHERE t.tag = ? AND s.trace_id = traces.trace_id)",
            v.clone(),
        );
    }
    if let Some(v) = q.since_unix_nano {
        f.add("start_ns >= ?", v);
    }
    if let Some(v) = q.until_unix_nano {
        f.add("start_ns <= ?", v);
    }
    if let Some(cursor) = &q.cursor {
        f.after_cursor(cursor, "rowid")?;
    }
    let sql = format!(
        "SELECT {TRACE_COLUMNS}, rowid FROM traces {} ORDER BY start_ns DESC, rowid DESC LIMIT {}",
        f.sql(),
        limit + 1
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(f.params().as_slice())?;
    let mut items: Vec<TraceSummary> = Vec::new();
    let mut last = None;
    while let Some(row) = rows.next()? {
        if items.len() == limit {
            let (start, id) = last.expect("a full page has a last item");
            return Ok(Page {
                items,
                next_cursor: Some(format!("{start}_{id}")),
            });
        }
        let summary = trace_from_row(row)?;
        last = Some((summary.start_unix_nano, row.get::<_, i64>(14)?));
        items.push(summary);
    }
    Ok(Page {
        items,
        next_cursor: None,
    })
}

fn list_sessions(
    conn: &Connection,
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<Page<SessionSummary>> {
    let limit = page_size(limit);
    let (last_ns, row) = match cursor {
        Some(c) => parse_cursor(c)?,
        None => (i64::MAX, i64::MAX),
    };
    let mut stmt = conn.prepare_cached(
        "SELECT session_id, trace_count, span_count, user_id, input_tokens, output_tokens,
            cost_usd, first_ns, last_ns, rowid FROM sessions
         WHERE last_ns < ?1 OR (last_ns = ?1 AND rowid < ?2)
         ORDER BY last_ns DESC, rowid DESC LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![last_ns, row, (limit + 1) as i64])?;
    let mut items = Vec::new();
    let mut last = None;
    while let Some(row) = rows.next()? {
        if items.len() == limit {
            let (ns, id) = last.expect("a full page has a last item");
            return Ok(Page {
                items,
                next_cursor: Some(format!("{ns}_{id}")),
            });
        }
        let summary = SessionSummary {
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
        last = Some((summary.last_unix_nano, row.get::<_, i64>(9)?));
        items.push(summary);
    }
    Ok(Page {
        items,
        next_cursor: None,
    })
}
