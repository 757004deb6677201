//! The span store: SQLite (bundled) in WAL mode in the data directory.
//!
//! - **One writer.** A dedicated thread owns the only writing connection. Writes queue
//!   to it and are committed in batches (one transaction for whatever has queued up),
//!   so ingestion costs one fsync per batch, not per span.
//! - **Durable acknowledgements.** [`Store::insert`] resolves only after its batch is
//!   committed with `synchronous=FULL`, so an acknowledged export survives `kill -9`
//!   (and power loss) right after the response.
//! - **Isolated writes.** Each write of a batch of several runs in a savepoint of the
//!   batch's transaction: one that fails (or panics) is undone alone and answered with
//!   its error, the rest of the batch commits. A write alone in its batch needs no
//!   savepoint: if it fails, the transaction is rolled back. If SQLite itself abandons
//!   the transaction (it does on some I/O errors or a full disk), every write of the
//!   batch is answered with an error.
//! - **Readers** use their own connections (WAL lets them read while the writer writes),
//!   on Tokio's blocking pool; a few idle ones are kept for reuse.
//! - **Pages** are cut by a cursor on the sort key plus the row id, so paging through
//!   spans is stable while spans arrive: none is returned twice or skipped (spans that
//!   arrive during paging show up on the pages their position belongs to). Traces and
//!   sessions have sort keys that move as spans arrive: see [`Store::traces`] and
//!   [`Store::sessions`].
//! - **Schema** versions live in [`crate::schema`]; every value is a bound parameter,
//!   never SQL text.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::model::{SpanKind, SpanRecord, SpanStatus};
use crate::schema;

/// The database file inside the data directory.
pub const DB_FILE: &str = "tracia.db";

/// Most writes committed in one transaction.
const MAX_BATCH_JOBS: usize = 256;

/// Writes waiting for the writer; senders wait (backpressure) when it is full.
const QUEUE_DEPTH: usize = 1024;

/// Idle read connections kept for reuse (more may be open while reads run).
const MAX_IDLE_READERS: usize = 8;

/// Traces (or traceless spans) deleted per retention write, so that ingestion
/// interleaves with a large deletion instead of waiting for all of it.
const PRUNE_CHUNK: i64 = 1000;

/// The savepoint each write runs in.
const SAVEPOINT: &str = "tracia_write";

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
    /// The write panicked; it was undone, the store goes on.
    #[error("store: the write panicked and was undone")]
    Panicked,
    /// A cursor that this store did not hand out.
    #[error("invalid cursor {0:?}")]
    BadCursor(String),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A write run on the writer thread inside the batch's transaction, or given `None` when
/// the batch was abandoned before its turn. It returns whether it failed and how to
/// answer its writer, which the writer calls only once the batch's commit is known.
type WriteJob = Box<dyn FnOnce(Option<Turn<'_, '_>>) -> (bool, Reply) + Send>;

/// A write's turn in its batch.
struct Turn<'t, 'c> {
    tx: &'t Transaction<'c>,
    /// The write is the whole batch: if it fails, the writer rolls the transaction back
    /// instead of committing, so it needs no savepoint of its own.
    alone: bool,
}

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
        // Statement journals (every upsert in a savepoint has one) in memory: in a temp
        // file they were four fifths of the bytes an insert wrote, rewritten per statement.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Deleting a span deletes its tags.
        conn.pragma_update(None, "foreign_keys", true)?;
        // 64 MiB of page cache (default 2 MiB): the index pages touched by inserts stay
        // in memory as the store grows.
        conn.pragma_update(None, "cache_size", -65_536)?;
        // Checkpoint every 32 MiB of WAL (default 4 MiB): index pages that many
        // batches touch are copied into the database once, not once per batch.
        conn.pragma_update(None, "wal_autocheckpoint", 8192)?;
        // ... and the WAL file is cut back to 64 MiB after a checkpoint.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
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
        let job: WriteJob = Box::new(move |turn| {
            let outcome = turn.map(|turn| run_write(turn, f));
            let failed = matches!(outcome, Some(Err(_)));
            let reply: Reply = Box::new(move |commit| {
                let answer = match (outcome, commit) {
                    (Some(Err(e)), _) => Err(e),
                    (_, Err(e)) => Err(StoreError::Commit(e)),
                    (Some(Ok(value)), Ok(())) => Ok(value),
                    // Not run means the batch failed: the writer never commits then.
                    (None, Ok(())) => Err(StoreError::Commit("the write did not run".into())),
                };
                let _ = done.send(answer);
            });
            (failed, reply)
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
            let mut idle = inner.readers.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
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
            let sql = format!("SELECT {SPAN_COLUMNS} FROM spans s WHERE span_id = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row(params![span_id], span_from_row)
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
                "SELECT {SPAN_COLUMNS} FROM spans s WHERE trace_id = ?1 ORDER BY start_ns, row_id"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![trace_id], span_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Traces newest first (by their earliest span), filtered.
    ///
    /// A trace's start moves earlier when an earlier span arrives (typically its root,
    /// which ends, and so is exported, last): a trace that moves while a client pages
    /// can show up again on a later page, but is never skipped.
    pub async fn traces(&self, query: TraceQuery) -> Result<Page<TraceSummary>> {
        self.read(move |conn| list_traces(conn, &query)).await
    }

    /// One trace's summary.
    pub async fn trace_summary(&self, trace_id: &str) -> Result<Option<TraceSummary>> {
        let trace_id = trace_id.to_owned();
        self.read(move |conn| {
            let sql = format!("SELECT {TRACE_COLUMNS} FROM traces WHERE trace_id = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row(params![trace_id], trace_from_row)
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
    ///
    /// A session that gets new spans while a client pages moves to the front: it is on
    /// the first page when the list is reloaded.
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

    /// Deletes what ended before `cutoff_unix_nano`: whole traces (with all their
    /// spans, so a trace is never left half there) and spans without a trace, with the
    /// evaluations of those spans; sessions that lost spans are recounted, and deleted
    /// when none is left. Returns how many spans went.
    ///
    /// Runs as a series of small writes, so ingestion is not held up by a large
    /// deletion.
    pub async fn prune(&self, cutoff_unix_nano: i64) -> Result<usize> {
        let mut deleted = 0;
        loop {
            let (spans, more) = self
                .write(move |tx| prune_some(tx, cutoff_unix_nano))
                .await?;
            deleted += spans;
            if !more {
                return Ok(deleted);
            }
        }
    }
}

/// One step of [`Store::prune`]: up to [`PRUNE_CHUNK`] traces and as many traceless
/// spans. Returns the spans deleted and whether anything may be left to delete.
fn prune_some(tx: &Transaction<'_>, cutoff: i64) -> rusqlite::Result<(usize, bool)> {
    // Spans that went, as (span id, session id).
    let mut gone: Vec<(String, Option<String>)> = Vec::new();
    let traces: Vec<String> = tx
        .prepare_cached("SELECT trace_id FROM traces WHERE start_ns < ?1 AND end_ns < ?1 LIMIT ?2")?
        .query_map(params![cutoff, PRUNE_CHUNK], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for trace_id in &traces {
        let before = gone.len();
        let mut delete = tx.prepare_cached(
            "DELETE FROM spans WHERE trace_id = ?1 RETURNING span_id, session_id",
        )?;
        for row in delete.query_map(params![trace_id], |r| Ok((r.get(0)?, r.get(1)?)))? {
            gone.push(row?);
        }
        let sessions: BTreeSet<&str> = gone[before..]
            .iter()
            .filter_map(|(_, session)| session.as_deref())
            .collect();
        for session_id in sessions {
            tx.prepare_cached(
                "DELETE FROM session_traces WHERE session_id = ?1 AND trace_id = ?2",
            )?
            .execute(params![session_id, trace_id])?;
        }
        tx.prepare_cached("DELETE FROM traces WHERE trace_id = ?1")?
            .execute(params![trace_id])?;
    }
    let traceless = {
        let mut delete = tx.prepare_cached(
            "DELETE FROM spans WHERE row_id IN (SELECT row_id FROM spans
                WHERE trace_id IS NULL AND start_ns < ?1 AND end_ns < ?1 LIMIT ?2)
             RETURNING span_id, session_id",
        )?;
        let before = gone.len();
        for row in delete.query_map(params![cutoff, PRUNE_CHUNK], |r| Ok((r.get(0)?, r.get(1)?)))? {
            gone.push(row?);
        }
        gone.len() - before
    };
    let mut sessions = BTreeSet::new();
    for (span_id, session_id) in &gone {
        tx.prepare_cached("DELETE FROM evaluations WHERE span_id = ?1")?
            .execute(params![span_id])?;
        if let Some(session_id) = session_id {
            sessions.insert(session_id.as_str());
        }
    }
    for session_id in sessions {
        recount_session(tx, session_id)?;
    }
    let more = traces.len() as i64 == PRUNE_CHUNK || traceless as i64 == PRUNE_CHUNK;
    Ok((gone.len(), more))
}

/// Recomputes a session's totals from its remaining spans, or deletes it when none is
/// left (its first `user.id` is kept).
fn recount_session(tx: &Transaction<'_>, session_id: &str) -> rusqlite::Result<()> {
    let (spans, first, last): (i64, Option<i64>, Option<i64>) = tx
        .prepare_cached(
            "SELECT count(*), min(start_ns), max(end_ns) FROM spans WHERE session_id = ?1",
        )?
        .query_row(params![session_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    if spans == 0 || first.is_none() || last.is_none() {
        tx.prepare_cached("DELETE FROM session_traces WHERE session_id = ?1")?
            .execute(params![session_id])?;
        tx.prepare_cached("DELETE FROM sessions WHERE session_id = ?1")?
            .execute(params![session_id])?;
        return Ok(());
    }
    tx.prepare_cached(
        "UPDATE sessions SET
            span_count = totals.spans, input_tokens = totals.input,
            output_tokens = totals.output, cost_usd = totals.cost,
            first_ns = totals.first, last_ns = totals.last,
            trace_count = (SELECT count(*) FROM session_traces WHERE session_id = ?1)
         FROM (SELECT count(*) AS spans, sum(input_tokens) AS input,
                 sum(output_tokens) AS output, sum(cost_usd) AS cost,
                 min(start_ns) AS first, max(end_ns) AS last
               FROM spans WHERE session_id = ?1) AS totals
         WHERE session_id = ?1",
    )?
    .execute(params![session_id])?;
    Ok(())
}

/// Runs one write of a batch. Alone in its batch it runs in the transaction itself (the
/// writer rolls back if it fails); otherwise in a savepoint, so that a write that fails
/// or panics is undone without undoing the others.
///
/// A savepoint is not free: every upsert in it opens a statement journal, and SQLite
/// truncates the savepoint's in-memory journal at each statement's end by walking it
/// from the start, so a write of n spans costs O(n²). Most batches are one export.
fn run_write<T>(
    Turn { tx, alone }: Turn<'_, '_>,
    f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> Result<T> {
    let run = move || match catch_unwind(AssertUnwindSafe(|| f(tx))) {
        Ok(result) => result.map_err(StoreError::Sqlite),
        Err(_) => Err(StoreError::Panicked),
    };
    if alone {
        return run();
    }
    tx.execute_batch(&format!("SAVEPOINT {SAVEPOINT}"))?;
    let result = run().and_then(|value| {
        tx.execute_batch(&format!("RELEASE {SAVEPOINT}"))?;
        Ok(value)
    });
    // Undo this write. If SQLite already ended the transaction, the writer sees it and
    // fails the whole batch; if the savepoint cannot be rolled back, neither can this
    // write be kept apart from the others, so the whole batch is abandoned.
    if result.is_err()
        && !tx.is_autocommit()
        && tx
            .execute_batch(&format!("ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}"))
            .is_err()
    {
        let _ = tx.execute_batch("ROLLBACK");
    }
    result
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
        run_batch(&mut conn, batch);
    }
}

/// Runs a batch of writes in one transaction and answers each once the commit (or its
/// failure) is known.
fn run_batch(conn: &mut Connection, batch: Vec<WriteJob>) {
    // IMMEDIATE: take the write lock up front rather than upgrading mid-batch.
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!("store: cannot begin a transaction: {e}");
            let e = e.to_string();
            for job in batch {
                job(None).1(Err(e.clone()));
            }
            return;
        }
    };
    let alone = batch.len() == 1;
    let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    let mut abandoned = false;
    for job in jobs.by_ref() {
        let (failed, reply) = job(Some(Turn { tx: &tx, alone }));
        replies.push(reply);
        if alone && failed {
            // Its own error is its answer; nothing of it is kept.
            let _ = tx.rollback();
            for reply in replies {
                reply(Ok(()));
            }
            return;
        }
        if tx.is_autocommit() {
            // The transaction is gone (SQLite rolls it back by itself on some I/O
            // errors and on a full disk): nothing of this batch is stored.
            abandoned = true;
            break;
        }
    }
    let commit = if abandoned {
        replies.extend(jobs.map(|job| job(None).1));
        Err("the transaction was rolled back".to_owned())
    } else {
        tx.commit().map_err(|e| e.to_string())
    };
    if let Err(e) = &commit {
        tracing::error!("store: commit failed, the batch is not stored: {e}");
    }
    for reply in replies {
        reply(commit.clone());
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

/// The columns [`span_from_row`] reads, of the `spans` table aliased `s`.
const SPAN_COLUMNS: &str = "s.span_id, s.trace_id, s.parent_span_id, s.name, s.kind, \
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

fn body_of(r: &SpanRecord) -> String {
    serde_json::to_string(&body(r)).unwrap_or_default()
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
struct Filter {
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

    fn params(&self) -> Vec<&dyn rusqlite::ToSql> {
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
struct Select {
    sql: String,
    filter: Filter,
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

fn list_spans(conn: &Connection, q: &SpanQuery) -> Result<Page<SpanRecord>> {
    spans_select(q)?.page(conn, |row| {
        let span = span_from_row(row)?;
        let key = span.start_unix_nano;
        Ok((span, key, row.get(22)?))
    })
}

fn spans_select(q: &SpanQuery) -> Result<Select> {
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
const TRACE_COLUMNS: &str = "traces.trace_id, traces.root_name, traces.service_name, \
    traces.start_ns, traces.end_ns, traces.span_count, traces.llm_count, traces.error_count, \
    traces.models, traces.input_tokens, traces.output_tokens, traces.cost_usd, \
    traces.session_id, traces.user_id";

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
const FEW_CANDIDATES: i64 = 5000;

/// How many rows `condition` matches, counted up to [`FEW_CANDIDATES`].
fn count_candidates(conn: &Connection, condition: &SpanCondition, value: &str) -> Result<i64> {
    let sql = format!(
        "SELECT count(*) FROM ({} LIMIT ?2)",
        condition.matches.replacen('?', "?1", 1)
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    Ok(stmt.query_row(params![value, FEW_CANDIDATES], |r| r.get(0))?)
}

fn traces_select(conn: &Connection, q: &TraceQuery) -> Result<Select> {
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

fn list_sessions(
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

fn sessions_select(limit: Option<usize>, cursor: Option<&str>) -> Result<Select> {
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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use std::future::{Future, poll_fn};
    use std::pin::Pin;
    use std::task::Poll;

    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn body_is_the_json_object_it_always_was() {
        let mut attributes = Map::new();
        attributes.insert("z.last".into(), json!(1));
        attributes.insert("a.first".into(), json!({"nested": [1.5, null, "x"]}));
        let full = SpanRecord {
            input: Some(json!([{"role": "user", "content": "hi \"you\""}])),
            output: Some("answer\n".into()),
            variables: Some(json!({"name": "Ada"})),
            tools: Some(json!([{"name": "search"}])),
            tool_calls: Some(json!([{"id": "c1"}])),
            temperature: Some(0.2),
            top_p: Some(f64::NAN),
            max_output_tokens: Some(64),
            attributes,
            ..SpanRecord::app("sp_1", "x")
        };
        for r in [full, SpanRecord::app("sp_2", "y")] {
            let before = json!({
                "input": r.input, "output": r.output, "variables": r.variables, "tools": r.tools,
                "toolCalls": r.tool_calls, "temperature": r.temperature, "topP": r.top_p,
                "maxOutputTokens": r.max_output_tokens, "attributes": r.attributes,
            })
            .to_string();
            assert_eq!(body_of(&r), before);
        }
    }

    /// An application span starting at `start` and lasting 10 ns.
    fn span(id: &str, trace: Option<&str>, parent: Option<&str>, start: i64) -> SpanRecord {
        SpanRecord {
            trace_id: trace.map(Into::into),
            parent_span_id: parent.map(Into::into),
            start_unix_nano: start,
            end_unix_nano: start + 10,
            ..SpanRecord::app(id, format!("op {id}"))
        }
    }

    /// An LLM span of `model` with token counts and a cost.
    fn llm(span: SpanRecord, model: &str, tokens: (i64, i64), cost: Option<f64>) -> SpanRecord {
        SpanRecord {
            kind: SpanKind::Llm,
            name: format!("chat {model}"),
            provider: Some("openai".into()),
            model: Some(model.into()),
            input_tokens: tokens.0,
            output_tokens: tokens.1,
            total_tokens: tokens.0 + tokens.1,
            cost_usd: cost,
            ..span
        }
    }

    fn in_session(span: SpanRecord, session: &str, user: Option<&str>) -> SpanRecord {
        SpanRecord {
            session_id: Some(session.into()),
            user_id: user.map(Into::into),
            ..span
        }
    }

    fn ids(spans: &[SpanRecord]) -> Vec<&str> {
        spans.iter().map(|s| s.span_id.as_str()).collect()
    }

    async fn list(store: &Store, query: SpanQuery) -> Vec<String> {
        let page = store.list_spans(query).await.unwrap();
        assert!(page.next_cursor.is_none(), "one page expected");
        page.items.into_iter().map(|s| s.span_id).collect()
    }

    async fn summary(store: &Store, trace: &str) -> TraceSummary {
        store.trace_summary(trace).await.unwrap().unwrap()
    }

    async fn session(store: &Store, id: &str) -> Option<SessionSummary> {
        let page = store.sessions(Some(MAX_LIMIT), None).await.unwrap();
        page.items.into_iter().find(|s| s.session_id == id)
    }

    #[tokio::test]
    async fn every_field_round_trips() {
        let (_dir, store) = open();
        let mut attributes = Map::new();
        attributes.insert("http.route".into(), json!("/chat"));
        attributes.insert("otel.events".into(), json!([{"name": "retry"}]));
        let record = SpanRecord {
            service_name: Some("api".into()),
            status: SpanStatus::Error,
            error: Some("rate limited".into()),
            tags: vec!["prod".into(), "beta".into()],
            prompt_slug: Some("welcome".into()),
            prompt_version: Some(3),
            input: Some(json!({"messages": [{"role": "user", "content": "hi"}]})),
            output: Some("hello".into()),
            variables: Some(json!({"name": "Ada"})),
            tools: Some(json!([{"name": "search"}])),
            tool_calls: Some(json!([{"id": "call_1", "name": "search"}])),
            temperature: Some(0.2),
            top_p: Some(0.9),
            max_output_tokens: Some(256),
            attributes,
            ..in_session(
                llm(
                    span("sp_1", Some("tr_1"), Some("sp_0"), 5),
                    "gpt-4o",
                    (10, 5),
                    Some(0.5),
                ),
                "s1",
                Some("u1"),
            )
        };
        store.insert(vec![record.clone()]).await.unwrap();
        assert_eq!(store.get_span("sp_1").await.unwrap(), Some(record.clone()));
        assert_eq!(store.trace("tr_1").await.unwrap(), vec![record]);
        assert_eq!(store.get_span("sp_nope").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_resent_span_is_stored_once() {
        let (_dir, store) = open();
        let first = SpanRecord {
            tags: vec!["a".into(), "a".into()],
            ..in_session(
                llm(
                    span("sp_1", Some("tr_1"), None, 1),
                    "gpt-4o",
                    (10, 5),
                    Some(1.0),
                ),
                "s1",
                None,
            )
        };
        // Twice in one export, then again (changed) as an exporter retry would.
        store
            .insert(vec![first.clone(), first.clone()])
            .await
            .unwrap();
        let resent = SpanRecord {
            name: "renamed".into(),
            input_tokens: 99,
            ..first.clone()
        };
        store.insert(vec![resent]).await.unwrap();

        let tagged = SpanQuery {
            tags: vec!["a".into()],
            ..SpanQuery::default()
        };
        assert_eq!(list(&store, tagged).await, ["sp_1"]);
        assert_eq!(store.get_span("sp_1").await.unwrap(), Some(first));
        let trace = summary(&store, "tr_1").await;
        assert_eq!((trace.span_count, trace.llm_count), (1, 1));
        assert_eq!((trace.input_tokens, trace.cost_usd), (10, Some(1.0)));
        let s1 = session(&store, "s1").await.unwrap();
        assert_eq!((s1.span_count, s1.trace_count, s1.input_tokens), (1, 1, 10));
    }

    #[tokio::test]
    async fn trace_aggregates_when_the_root_arrives_last() {
        let (_dir, store) = open();
        let worker = |s: SpanRecord| SpanRecord {
            service_name: Some("worker".into()),
            ..s
        };
        let child1 = SpanRecord {
            end_unix_nano: 260,
            ..in_session(
                worker(llm(
                    span("sp_c1", Some("tr_1"), Some("sp_root"), 200),
                    "gpt-4o",
                    (10, 5),
                    Some(0.25),
                )),
                "s1",
                Some("u1"),
            )
        };
        let child2 = SpanRecord {
            status: SpanStatus::Error,
            end_unix_nano: 300,
            ..in_session(
                worker(llm(
                    span("sp_c2", Some("tr_1"), Some("sp_root"), 150),
                    "claude-x",
                    (3, 2),
                    None,
                )),
                "s1",
                Some("u2"),
            )
        };
        store.insert(vec![child1]).await.unwrap();
        store.insert(vec![child2]).await.unwrap();
        // Without its root, a trace is named after its earliest span.
        let trace = summary(&store, "tr_1").await;
        assert_eq!(trace.root_name.as_deref(), Some("chat claude-x"));
        assert_eq!(trace.service_name.as_deref(), Some("worker"));

        let root = SpanRecord {
            name: "handle".into(),
            service_name: Some("api".into()),
            end_unix_nano: 400,
            ..span("sp_root", Some("tr_1"), None, 100)
        };
        store.insert(vec![root]).await.unwrap();
        // A late span starting even earlier (clock skew) does not rename the trace.
        let early = llm(
            span("sp_c3", Some("tr_1"), Some("sp_root"), 50),
            "gpt-4o",
            (1, 1),
            Some(0.5),
        );
        store.insert(vec![early]).await.unwrap();

        assert_eq!(
            summary(&store, "tr_1").await,
            TraceSummary {
                trace_id: "tr_1".into(),
                root_name: Some("handle".into()),
                service_name: Some("api".into()),
                start_unix_nano: 50,
                end_unix_nano: 400,
                span_count: 4,
                llm_count: 3,
                error_count: 1,
                models: vec!["gpt-4o".into(), "claude-x".into()],
                input_tokens: 14,
                output_tokens: 8,
                cost_usd: Some(0.75),
                session_id: Some("s1".into()),
                user_id: Some("u1".into()),
            }
        );
        assert_eq!(
            ids(&store.trace("tr_1").await.unwrap()),
            ["sp_c3", "sp_root", "sp_c2", "sp_c1"]
        );

        // A trace where nothing is priced has no cost (rather than 0).
        store
            .insert(vec![llm(
                span("sp_u", Some("tr_2"), None, 1),
                "m",
                (1, 1),
                None,
            )])
            .await
            .unwrap();
        assert_eq!(summary(&store, "tr_2").await.cost_usd, None);
        assert_eq!(store.trace_summary("tr_nope").await.unwrap(), None);
    }

    #[tokio::test]
    async fn sessions_count_traces_spans_tokens_and_cost() {
        let (_dir, store) = open();
        let s1 = |s: SpanRecord| in_session(s, "s1", Some("u1"));
        store
            .insert(vec![
                s1(llm(
                    span("sp_a1", Some("tr_a"), None, 100),
                    "m",
                    (10, 1),
                    Some(0.5),
                )),
                s1(llm(
                    span("sp_a2", Some("tr_a"), Some("sp_a1"), 110),
                    "m",
                    (5, 1),
                    None,
                )),
                s1(llm(
                    span("sp_b1", Some("tr_b"), None, 300),
                    "m",
                    (1, 1),
                    Some(0.25),
                )),
                // A REST span sent without a trace.
                s1(span("sp_x", None, None, 50)),
            ])
            .await
            .unwrap();
        store
            .insert(vec![in_session(
                span("sp_c", Some("tr_c"), None, 500),
                "s2",
                None,
            )])
            .await
            .unwrap();

        let first = store.sessions(Some(1), None).await.unwrap();
        assert_eq!(first.items.len(), 1);
        assert_eq!(
            first.items[0].session_id, "s2",
            "most recently active first"
        );
        assert_eq!(first.items[0].cost_usd, None);
        let second = store.sessions(Some(1), first.next_cursor).await.unwrap();
        assert_eq!(second.next_cursor, None);
        assert_eq!(
            second.items,
            [SessionSummary {
                session_id: "s1".into(),
                trace_count: 2,
                span_count: 4,
                user_id: Some("u1".into()),
                input_tokens: 16,
                output_tokens: 3,
                cost_usd: Some(0.75),
                first_unix_nano: 50,
                last_unix_nano: 310,
            }]
        );
        let traces = store
            .traces(TraceQuery {
                session_id: Some("s1".into()),
                ..TraceQuery::default()
            })
            .await
            .unwrap();
        let traces: Vec<_> = traces.items.iter().map(|t| t.trace_id.as_str()).collect();
        assert_eq!(traces, ["tr_b", "tr_a"]);
    }

    #[tokio::test]
    async fn every_span_filter() {
        let (_dir, store) = open();
        let tagged = |s: SpanRecord, tags: &[&str]| SpanRecord {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..s
        };
        let a = SpanRecord {
            prompt_slug: Some("p1".into()),
            ..tagged(
                in_session(
                    llm(span("a", None, None, 100), "m1", (1, 1), None),
                    "s1",
                    Some("u1"),
                ),
                &["x", "y"],
            )
        };
        let b = SpanRecord {
            status: SpanStatus::Error,
            ..tagged(
                in_session(
                    llm(span("b", None, None, 200), "m2", (1, 1), None),
                    "s2",
                    Some("u2"),
                ),
                &["x"],
            )
        };
        let c = tagged(span("c", None, None, 300), &["y"]);
        let d = SpanRecord {
            kind: SpanKind::Embedding,
            user_id: Some("u1".into()),
            ..llm(span("d", None, None, 400), "m1", (1, 0), None)
        };
        let e = SpanRecord {
            kind: SpanKind::Root,
            prompt_slug: Some("p1".into()),
            ..tagged(span("e", None, None, 500), &["x", "y", "z"])
        };
        store.insert(vec![a, b, c, d, e]).await.unwrap();

        let q = SpanQuery::default;
        let tags = |t: &[&str]| t.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let some = |s: &str| Some(s.to_owned());
        let cases: Vec<(SpanQuery, Vec<&str>)> = vec![
            (q(), vec!["e", "d", "c", "b", "a"]),
            (
                SpanQuery {
                    prompt_slug: some("p1"),
                    ..q()
                },
                vec!["e", "a"],
            ),
            (
                SpanQuery {
                    status: Some(SpanStatus::Error),
                    ..q()
                },
                vec!["b"],
            ),
            (
                SpanQuery {
                    status: Some(SpanStatus::Success),
                    ..q()
                },
                vec!["e", "d", "c", "a"],
            ),
            (
                SpanQuery {
                    start_unix_nano: Some(200),
                    end_unix_nano: Some(400),
                    ..q()
                },
                vec!["d", "c", "b"],
            ),
            (
                SpanQuery {
                    user_id: some("u1"),
                    ..q()
                },
                vec!["d", "a"],
            ),
            (
                SpanQuery {
                    session_id: some("s1"),
                    ..q()
                },
                vec!["a"],
            ),
            (
                SpanQuery {
                    model: some("m1"),
                    ..q()
                },
                vec!["d", "a"],
            ),
            (
                SpanQuery {
                    model: some("nope"),
                    ..q()
                },
                vec![],
            ),
            (
                SpanQuery {
                    genai_only: true,
                    ..q()
                },
                vec!["e", "d", "b", "a"],
            ),
            (
                SpanQuery {
                    tags: tags(&["x"]),
                    ..q()
                },
                vec!["e", "b", "a"],
            ),
            (
                SpanQuery {
                    tags: tags(&["x", "y"]),
                    ..q()
                },
                vec!["e", "a"],
            ),
            (
                SpanQuery {
                    tags: tags(&["y", "x"]),
                    ..q()
                },
                vec!["e", "a"],
            ),
            (
                SpanQuery {
                    tags: tags(&["x", "y", "z"]),
                    ..q()
                },
                vec!["e"],
            ),
            (
                SpanQuery {
                    tags: tags(&["x", "nope"]),
                    ..q()
                },
                vec![],
            ),
            (
                SpanQuery {
                    tags: tags(&["x"]),
                    model: some("m1"),
                    ..q()
                },
                vec!["a"],
            ),
            (
                SpanQuery {
                    tags: tags(&["y"]),
                    start_unix_nano: Some(150),
                    end_unix_nano: Some(400),
                    ..q()
                },
                vec!["c"],
            ),
            (
                SpanQuery {
                    tags: tags(&["x"]),
                    genai_only: true,
                    status: Some(SpanStatus::Success),
                    ..q()
                },
                vec!["e", "a"],
            ),
            (
                SpanQuery {
                    user_id: some("u1"),
                    model: some("m1"),
                    prompt_slug: some("p1"),
                    ..q()
                },
                vec!["a"],
            ),
        ];
        for (query, expected) in cases {
            let described = format!("{query:?}");
            assert_eq!(list(&store, query).await, expected, "{described}");
        }
        let bad = SpanQuery {
            cursor: some("not-a-cursor"),
            ..q()
        };
        assert!(matches!(
            store.list_spans(bad).await,
            Err(StoreError::BadCursor(c)) if c == "not-a-cursor"
        ));
    }

    #[tokio::test]
    async fn trace_filters() {
        let (_dir, store) = open();
        store
            .insert(vec![
                span("r1", Some("t1"), None, 100),
                SpanRecord {
                    tags: vec!["x".into()],
                    ..in_session(
                        llm(span("c1", Some("t1"), Some("r1"), 110), "m1", (1, 1), None),
                        "s1",
                        Some("u1"),
                    )
                },
                span("r2", Some("t2"), None, 200),
                SpanRecord {
                    status: SpanStatus::Error,
                    ..llm(span("c2", Some("t2"), Some("r2"), 210), "m2", (1, 1), None)
                },
                in_session(span("r3", Some("t3"), None, 300), "s1", Some("u2")),
            ])
            .await
            .unwrap();
        let q = TraceQuery::default;
        let some = |s: &str| Some(s.to_owned());
        let cases: Vec<(TraceQuery, Vec<&str>)> = vec![
            (q(), vec!["t3", "t2", "t1"]),
            (
                TraceQuery {
                    model: some("m1"),
                    ..q()
                },
                vec!["t1"],
            ),
            (
                TraceQuery {
                    status: Some(SpanStatus::Error),
                    ..q()
                },
                vec!["t2"],
            ),
            (
                TraceQuery {
                    status: Some(SpanStatus::Success),
                    ..q()
                },
                vec!["t3", "t1"],
            ),
            (
                TraceQuery {
                    session_id: some("s1"),
                    ..q()
                },
                vec!["t3", "t1"],
            ),
            (
                TraceQuery {
                    user_id: some("u1"),
                    ..q()
                },
                vec!["t1"],
            ),
            (
                TraceQuery {
                    tag: some("x"),
                    ..q()
                },
                vec!["t1"],
            ),
            (
                TraceQuery {
                    since_unix_nano: Some(150),
                    until_unix_nano: Some(250),
                    ..q()
                },
                vec!["t2"],
            ),
        ];
        for (query, expected) in cases {
            let described = format!("{query:?}");
            let page = store.traces(query).await.unwrap();
            let got: Vec<_> = page.items.iter().map(|t| t.trace_id.as_str()).collect();
            assert_eq!(got, expected, "{described}");
        }
    }

    /// Pages of 10 through 25 spans (pairs sharing a start time, so the row id breaks
    /// ties), with spans arriving between the pages: every span that was there is seen
    /// exactly once, newer arrivals are not (they sort before the pages already read),
    /// older arrivals are, in place.
    #[tokio::test]
    async fn pages_stay_stable_while_spans_arrive() {
        let tagged = |s: SpanRecord| SpanRecord {
            tags: vec!["t".into()],
            ..s
        };
        for by_tag in [false, true] {
            let (_dir, store) = open();
            let originals: Vec<SpanRecord> = (0..25)
                .map(|i| {
                    tagged(span(
                        &format!("o{i:02}"),
                        Some(&format!("tr{i}")),
                        None,
                        i / 2 * 10,
                    ))
                })
                .collect();
            store.insert(originals.clone()).await.unwrap();
            let query = |cursor: Option<String>| SpanQuery {
                tags: if by_tag { vec!["t".into()] } else { Vec::new() },
                limit: Some(10),
                cursor,
                ..SpanQuery::default()
            };
            let mut seen = Vec::new();
            let page1 = store.list_spans(query(None)).await.unwrap();
            seen.extend(page1.items.clone());
            let cursor_key = page1.items.last().unwrap().start_unix_nano;
            store
                .insert(vec![
                    tagged(span("new1", None, None, 10_000)),
                    // Same start as the last span read: sorts before it (newer row).
                    tagged(span("tie", None, None, cursor_key)),
                    tagged(span("old1", None, None, -5)),
                ])
                .await
                .unwrap();
            let page2 = store.list_spans(query(page1.next_cursor)).await.unwrap();
            seen.extend(page2.items.clone());
            store
                .insert(vec![
                    tagged(span("new2", None, None, 20_000)),
                    tagged(span("old2", None, None, -10)),
                ])
                .await
                .unwrap();
            let page3 = store.list_spans(query(page2.next_cursor)).await.unwrap();
            assert_eq!(page3.next_cursor, None);
            seen.extend(page3.items.clone());

            assert_eq!(
                (page1.items.len(), page2.items.len(), page3.items.len()),
                (10, 10, 7)
            );
            let starts: Vec<i64> = seen.iter().map(|s| s.start_unix_nano).collect();
            assert!(
                starts.windows(2).all(|w| w[0] >= w[1]),
                "newest first: {starts:?}"
            );
            let mut got: Vec<&str> = ids(&seen);
            got.sort_unstable();
            let mut expected: Vec<&str> = ids(&originals);
            expected.extend(["old1", "old2"]);
            expected.sort_unstable();
            assert_eq!(got, expected, "by tag: {by_tag}");
        }
    }

    #[tokio::test]
    async fn trace_pages_are_stable_while_traces_arrive() {
        let (_dir, store) = open();
        let originals: Vec<SpanRecord> = (0..25)
            .map(|i| {
                span(
                    &format!("s{i}"),
                    Some(&format!("t{i:02}")),
                    None,
                    i / 2 * 10,
                )
            })
            .collect();
        store.insert(originals).await.unwrap();
        let query = |cursor| TraceQuery {
            limit: Some(10),
            cursor,
            ..TraceQuery::default()
        };
        let mut seen = Vec::new();
        let mut cursor = None;
        for (newer, older) in [(1000, -1), (2000, -2), (3000, -3)] {
            let page = store.traces(query(cursor)).await.unwrap();
            seen.extend(page.items.into_iter().map(|t| t.trace_id));
            cursor = page.next_cursor;
            store
                .insert(vec![
                    span(
                        &format!("n{newer}"),
                        Some(&format!("new{newer}")),
                        None,
                        newer,
                    ),
                    span(
                        &format!("o{older}"),
                        Some(&format!("old{older}")),
                        None,
                        older,
                    ),
                ])
                .await
                .unwrap();
        }
        assert_eq!(cursor, None);
        let mut expected: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
        expected.extend(["old-1".into(), "old-2".into()]);
        seen.sort();
        expected.sort();
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn prune_deletes_whole_old_traces_and_recounts_sessions() {
        let (_dir, store) = open();
        let s1 = |s: SpanRecord| in_session(s, "s1", Some("u1"));
        store
            .insert(vec![
                // Ended before the cutoff (500): goes, with its tags and evaluations.
                SpanRecord {
                    tags: vec!["old".into()],
                    ..s1(llm(
                        span("old_root", Some("tr_old"), None, 100),
                        "m",
                        (5, 5),
                        Some(1.0),
                    ))
                },
                s1(span("old_child", Some("tr_old"), Some("old_root"), 150)),
                // Started before the cutoff but a span of it ends after: kept whole.
                span("mid_root", Some("tr_mid"), None, 100),
                SpanRecord {
                    end_unix_nano: 1000,
                    ..span("mid_child", Some("tr_mid"), Some("mid_root"), 900)
                },
                // Spans without a trace go by their own end.
                s1(span("lone_old", None, None, 100)),
                in_session(span("lone_new", None, None, 800), "s2", None),
                // Newer: kept.
                s1(llm(
                    span("new_root", Some("tr_new"), None, 700),
                    "m",
                    (2, 1),
                    Some(0.5),
                )),
                // A session with only old spans: goes.
                in_session(span("s3_old", Some("tr_s3"), None, 10), "s3", None),
            ])
            .await
            .unwrap();
        store
            .add_evaluation("old_root", "quality", 1.0, None, 1)
            .await
            .unwrap()
            .unwrap();
        let kept_eval = store
            .add_evaluation("new_root", "quality", 0.0, None, 2)
            .await
            .unwrap()
            .unwrap();

        assert_eq!(store.prune(500).await.unwrap(), 4);

        assert_eq!(
            list(&store, SpanQuery::default()).await,
            ["mid_child", "lone_new", "new_root", "mid_root"]
        );
        let traces = store.traces(TraceQuery::default()).await.unwrap();
        let traces: Vec<_> = traces.items.iter().map(|t| t.trace_id.as_str()).collect();
        assert_eq!(traces, ["tr_new", "tr_mid"]);
        assert_eq!(store.trace_summary("tr_old").await.unwrap(), None);
        assert!(store.trace("tr_old").await.unwrap().is_empty());
        let old_tag = SpanQuery {
            tags: vec!["old".into()],
            ..SpanQuery::default()
        };
        assert!(list(&store, old_tag).await.is_empty());
        assert!(store.evaluations("old_root").await.unwrap().is_empty());
        assert_eq!(store.evaluations("new_root").await.unwrap(), [kept_eval]);
        assert_eq!(
            session(&store, "s1").await,
            Some(SessionSummary {
                session_id: "s1".into(),
                trace_count: 1,
                span_count: 1,
                user_id: Some("u1".into()),
                input_tokens: 2,
                output_tokens: 1,
                cost_usd: Some(0.5),
                first_unix_nano: 700,
                last_unix_nano: 710,
            })
        );
        assert_eq!(session(&store, "s2").await.map(|s| s.span_count), Some(1));
        assert_eq!(session(&store, "s3").await, None);
        assert_eq!(store.prune(500).await.unwrap(), 0, "nothing left to prune");
    }

    #[tokio::test]
    async fn prune_works_through_more_than_one_chunk() {
        let (_dir, store) = open();
        let n = PRUNE_CHUNK * 2 + 7;
        let old: Vec<SpanRecord> = (0..n)
            .flat_map(|i| {
                [
                    span(&format!("t{i}"), Some(&format!("tr{i}")), None, i),
                    span(&format!("u{i}"), None, None, i),
                ]
            })
            .collect();
        store.insert(old).await.unwrap();
        store
            .insert(vec![span("keep", Some("tr_keep"), None, n + 100)])
            .await
            .unwrap();
        assert_eq!(store.prune(n + 50).await.unwrap(), 2 * n as usize);
        assert_eq!(list(&store, SpanQuery::default()).await, ["keep"]);
    }

    /// Polls a future once (so a write is queued) and hands it back, still pending.
    async fn queued<F: Future>(future: F) -> Pin<Box<F>> {
        let mut future = Box::pin(future);
        let polled = poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_pending())).await;
        assert!(polled, "the write answered before its batch could commit");
        future
    }

    /// A write that holds the writer until `release` is sent; `started` says it runs.
    fn holding_write(
        store: &Store,
        id: &str,
    ) -> (
        impl Future<Output = Result<()>> + use<>,
        oneshot::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (started_tx, started) = oneshot::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let record = span(id, None, None, 1);
        let store = store.clone();
        let write = async move {
            store
                .write(move |tx| {
                    insert_span(tx, &record)?;
                    started_tx.send(()).unwrap();
                    let _ = release_rx.recv();
                    Ok(())
                })
                .await
        };
        (write, started, release)
    }

    #[tokio::test]
    async fn a_batch_answers_after_its_commit_and_a_failed_write_is_undone_alone() {
        let (_dir, store) = open();
        // Hold the writer so that the next writes queue up and run as one batch.
        let (gate, gate_started, open_gate) = holding_write(&store, "gate");
        let gate = queued(gate).await;
        gate_started.await.unwrap();
        let a = queued(store.insert(vec![span("a", None, None, 2)])).await;
        let failing = queued(store.write(|tx| {
            insert_span(tx, &span("failed", None, None, 3))?;
            Err::<(), _>(rusqlite::Error::QueryReturnedNoRows)
        }))
        .await;
        let panicking = queued(store.write(|tx| -> rusqlite::Result<()> {
            insert_span(tx, &span("panicked", None, None, 4)).unwrap();
            panic!("a bug in a write");
        }))
        .await;
        let (last, last_started, release_last) = holding_write(&store, "last");
        let last = queued(last).await;
        open_gate.send(()).unwrap();
        gate.await.unwrap();

        // The batch has run `a` and now waits inside `last`, before its commit: `a`
        // must not have its answer yet.
        last_started.await.unwrap();
        let a = queued(a).await;
        release_last.send(()).unwrap();

        a.await.unwrap();
        last.await.unwrap();
        assert!(matches!(
            failing.await,
            Err(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
        ));
        assert!(matches!(panicking.await, Err(StoreError::Panicked)));
        assert_eq!(
            list(&store, SpanQuery::default()).await,
            ["a", "last", "gate"]
        );
    }

    #[tokio::test]
    async fn a_failed_write_alone_in_its_batch_is_undone() {
        let (_dir, store) = open();
        let failing = store.write(|tx| {
            insert_span(tx, &span("failed", None, None, 1))?;
            Err::<(), _>(rusqlite::Error::QueryReturnedNoRows)
        });
        assert!(matches!(
            failing.await,
            Err(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
        ));
        let panicking = store.write(|tx| -> rusqlite::Result<()> {
            insert_span(tx, &span("panicked", None, None, 2)).unwrap();
            panic!("a bug in a write");
        });
        assert!(matches!(panicking.await, Err(StoreError::Panicked)));
        store
            .insert(vec![span("kept", None, None, 3)])
            .await
            .unwrap();
        assert_eq!(list(&store, SpanQuery::default()).await, ["kept"]);
    }

    #[tokio::test]
    async fn a_batch_whose_transaction_is_lost_answers_every_write_with_an_error() {
        let (_dir, store) = open();
        let (gate, gate_started, open_gate) = holding_write(&store, "gate");
        let gate = queued(gate).await;
        gate_started.await.unwrap();
        let before = queued(store.insert(vec![span("before", None, None, 2)])).await;
        // What SQLite does by itself on some I/O errors or a full disk.
        let lost = queued(store.write(|tx| tx.execute_batch("ROLLBACK"))).await;
        let after = queued(store.insert(vec![span("after", None, None, 3)])).await;
        open_gate.send(()).unwrap();
        gate.await.unwrap();

        assert!(matches!(before.await, Err(StoreError::Commit(_))));
        assert!(lost.await.is_err());
        assert!(matches!(after.await, Err(StoreError::Commit(_))));
        assert_eq!(list(&store, SpanQuery::default()).await, ["gate"]);
        // The writer goes on.
        store
            .insert(vec![span("later", None, None, 4)])
            .await
            .unwrap();
        assert_eq!(list(&store, SpanQuery::default()).await, ["later", "gate"]);
    }

    #[tokio::test]
    async fn an_answered_insert_is_on_disk_for_a_new_connection() {
        let (dir, store) = open();
        store.insert(vec![span("a", None, None, 1)]).await.unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM spans", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    /// The query plan of every list query: an index read in page order (no sorting of
    /// the matches, which would read all of them), through the expected index.
    #[tokio::test]
    async fn list_queries_read_an_index_in_page_order() {
        let (_dir, store) = open();
        store.insert(many_matching_traces()).await.unwrap();
        let conn = open_reader(store.path()).unwrap();
        let some = |s: &str| Some(s.to_owned());
        let cursor = some("100_7");
        let q = SpanQuery::default;
        let spans: Vec<(SpanQuery, &str)> = vec![
            (q(), "spans_start"),
            (
                SpanQuery {
                    cursor: cursor.clone(),
                    ..q()
                },
                "spans_start",
            ),
            (
                SpanQuery {
                    start_unix_nano: Some(1),
                    end_unix_nano: Some(2),
                    ..q()
                },
                "spans_start",
            ),
            (
                SpanQuery {
                    session_id: some("s"),
                    ..q()
                },
                "spans_session",
            ),
            (
                SpanQuery {
                    session_id: some("s"),
                    cursor: cursor.clone(),
                    ..q()
                },
                "spans_session",
            ),
            (
                SpanQuery {
                    user_id: some("u"),
                    ..q()
                },
                "spans_user",
            ),
            (
                SpanQuery {
                    model: some("m"),
                    ..q()
                },
                "spans_model",
            ),
            (
                SpanQuery {
                    model: some("m"),
                    cursor: cursor.clone(),
                    ..q()
                },
                "spans_model",
            ),
            (
                SpanQuery {
                    prompt_slug: some("p"),
                    ..q()
                },
                "spans_prompt",
            ),
            (
                SpanQuery {
                    status: Some(SpanStatus::Error),
                    ..q()
                },
                "spans_status",
            ),
            (
                SpanQuery {
                    tags: vec!["t".into()],
                    ..q()
                },
                "SEARCH t USING PRIMARY KEY",
            ),
            (
                SpanQuery {
                    tags: vec!["t".into(), "u".into()],
                    cursor: cursor.clone(),
                    ..q()
                },
                "SEARCH t USING PRIMARY KEY",
            ),
        ];
        let t = TraceQuery::default;
        // Filters with many matches: the traces are read in order and probed.
        let traces: Vec<(TraceQuery, &str)> = vec![
            (t(), "traces_start"),
            (
                TraceQuery {
                    cursor: cursor.clone(),
                    ..t()
                },
                "traces_start",
            ),
            (
                TraceQuery {
                    model: some("m"),
                    ..t()
                },
                "spans_trace (trace_id=? AND model=?)",
            ),
            (
                TraceQuery {
                    user_id: some("u"),
                    ..t()
                },
                "spans_trace (trace_id=?)",
            ),
            (
                TraceQuery {
                    tag: some("x"),
                    ..t()
                },
                "spans_trace (trace_id=?)",
            ),
            (
                TraceQuery {
                    session_id: some("s"),
                    ..t()
                },
                "st EXISTS USING PRIMARY KEY (session_id=? AND trace_id=?)",
            ),
        ];
        let mut selects: Vec<(Select, &str)> = Vec::new();
        for (query, index) in spans {
            selects.push((spans_select(&query).unwrap(), index));
        }
        for (query, index) in traces {
            selects.push((traces_select(&conn, &query).unwrap(), index));
        }
        selects.push((sessions_select(None, None).unwrap(), "sessions_last"));
        selects.push((
            sessions_select(None, cursor.as_deref()).unwrap(),
            "sessions_last",
        ));
        for (select, index) in &selects {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {}", select.sql))
                .unwrap();
            let plan: Vec<String> = stmt
                .query_map(select.filter.params().as_slice(), |r| r.get(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let plan = plan.join("\n");
            assert!(!plan.contains("TEMP B-TREE"), "{}\n{plan}", select.sql);
            assert!(plan.contains(index), "{index}: {}\n{plan}", select.sql);
        }
    }

    /// [`FEW_CANDIDATES`] traces and a few more of one span each, all with model `m`,
    /// user `u`, tag `x`, session `s`, starting at 0, 1, 2, …
    fn many_matching_traces() -> Vec<SpanRecord> {
        (0..FEW_CANDIDATES + 5)
            .map(|i| SpanRecord {
                tags: vec!["x".into()],
                ..in_session(
                    llm(
                        span(&format!("sp{i}"), Some(&format!("tr{i}")), None, i),
                        "m",
                        (1, 1),
                        None,
                    ),
                    "s",
                    Some("u"),
                )
            })
            .collect()
    }

    /// Trace filters matching many spans (read in order, each trace probed) and few
    /// (driven from the matches), alone and combined.
    #[tokio::test]
    async fn trace_filters_with_many_and_few_matches() {
        let (_dir, store) = open();
        let mut spans = many_matching_traces();
        let newest = FEW_CANDIDATES + 5;
        // One more recent trace with a rare model, user, tag and session, whose root
        // has none of them; and a recent trace matching nothing.
        spans.push(span("rare_root", Some("tr_rare"), None, newest + 10));
        spans.push(SpanRecord {
            tags: vec!["rare".into(), "x".into()],
            ..in_session(
                llm(
                    span("rare", Some("tr_rare"), Some("rare_root"), newest + 11),
                    "m-rare",
                    (1, 1),
                    None,
                ),
                "s-rare",
                Some("u-rare"),
            )
        });
        spans.push(span("other", Some("tr_other"), None, newest + 20));
        store.insert(spans).await.unwrap();

        let some = |s: &str| Some(s.to_owned());
        let many: Vec<String> = (FEW_CANDIDATES + 2..FEW_CANDIDATES + 5)
            .rev()
            .map(|i| format!("tr{i}"))
            .collect();
        let t = TraceQuery::default;
        let cases: Vec<(TraceQuery, Vec<String>)> = vec![
            (
                TraceQuery {
                    model: some("m"),
                    ..t()
                },
                many.clone(),
            ),
            (
                TraceQuery {
                    user_id: some("u"),
                    ..t()
                },
                many.clone(),
            ),
            (
                TraceQuery {
                    session_id: some("s"),
                    ..t()
                },
                many.clone(),
            ),
            (
                TraceQuery {
                    tag: some("x"),
                    ..t()
                },
                [vec!["tr_rare".to_owned()], many[..2].to_vec()].concat(),
            ),
            (
                TraceQuery {
                    model: some("m"),
                    user_id: some("u"),
                    tag: some("x"),
                    session_id: some("s"),
                    ..t()
                },
                many.clone(),
            ),
            (
                TraceQuery {
                    model: some("m-rare"),
                    ..t()
                },
                vec!["tr_rare".into()],
            ),
            (
                TraceQuery {
                    user_id: some("u-rare"),
                    ..t()
                },
                vec!["tr_rare".into()],
            ),
            (
                TraceQuery {
                    session_id: some("s-rare"),
                    ..t()
                },
                vec!["tr_rare".into()],
            ),
            (
                TraceQuery {
                    tag: some("rare"),
                    ..t()
                },
                vec!["tr_rare".into()],
            ),
            (
                TraceQuery {
                    tag: some("x"),
                    model: some("m-rare"),
                    ..t()
                },
                vec!["tr_rare".into()],
            ),
            (
                TraceQuery {
                    model: some("m"),
                    user_id: some("u-rare"),
                    ..t()
                },
                vec![],
            ),
            (
                TraceQuery {
                    model: some("m-rare"),
                    status: Some(SpanStatus::Error),
                    ..t()
                },
                vec![],
            ),
            (
                TraceQuery {
                    model: some("m"),
                    until_unix_nano: Some(2),
                    ..t()
                },
                vec!["tr2".into(), "tr1".into(), "tr0".into()],
            ),
        ];
        for (query, expected) in cases {
            let described = format!("{query:?}");
            let page = store
                .traces(TraceQuery {
                    limit: Some(3),
                    ..query
                })
                .await
                .unwrap();
            let got: Vec<_> = page.items.iter().map(|t| t.trace_id.clone()).collect();
            assert_eq!(got, expected, "{described}");
        }
        // Paging a few-matches filter goes on from its cursor like any other.
        let first = store
            .traces(TraceQuery {
                tag: some("x"),
                limit: Some(1),
                ..t()
            })
            .await
            .unwrap();
        let second = store
            .traces(TraceQuery {
                tag: some("x"),
                limit: Some(1),
                cursor: first.next_cursor,
                ..t()
            })
            .await
            .unwrap();
        assert_eq!(second.items[0].trace_id, many[0]);
    }
}
