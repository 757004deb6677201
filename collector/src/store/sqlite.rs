//! The SQLite store: its connections (the writer thread's and the pooled readers) and
//! the operations the handlers call.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};

use super::queries::{TRACE_COLUMNS, list_sessions, list_spans, list_traces, trace_from_row};
use super::retention::prune_some;
use super::spans::{SPAN_COLUMNS, insert_span, span_from_row};
use super::writer::{QUEUE_DEPTH, Reply, WriteJob, run_write, writer_loop};
use super::{
    DB_FILE, Evaluation, Page, Result, SessionSummary, SpanQuery, SpanStore, StoreError,
    TraceQuery, TraceSummary, schema,
};
use crate::model::SpanRecord;

/// Idle read connections kept for reuse (more may be open while reads run).
const MAX_IDLE_READERS: usize = 8;

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

/// The engine-neutral face of the methods above, for the handlers.
impl SpanStore for Store {
    fn insert(&self, records: Vec<SpanRecord>) -> BoxFuture<'_, Result<()>> {
        Store::insert(self, records).boxed()
    }

    fn get_span<'a>(&'a self, span_id: &'a str) -> BoxFuture<'a, Result<Option<SpanRecord>>> {
        Store::get_span(self, span_id).boxed()
    }

    fn list_spans(&self, query: SpanQuery) -> BoxFuture<'_, Result<Page<SpanRecord>>> {
        Store::list_spans(self, query).boxed()
    }

    fn trace<'a>(&'a self, trace_id: &'a str) -> BoxFuture<'a, Result<Vec<SpanRecord>>> {
        Store::trace(self, trace_id).boxed()
    }

    fn traces(&self, query: TraceQuery) -> BoxFuture<'_, Result<Page<TraceSummary>>> {
        Store::traces(self, query).boxed()
    }

    fn trace_summary<'a>(
        &'a self,
        trace_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<TraceSummary>>> {
        Store::trace_summary(self, trace_id).boxed()
    }

    fn trace_tags(&self, trace_ids: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<String>>>> {
        Store::trace_tags(self, trace_ids).boxed()
    }

    fn sessions(
        &self,
        limit: Option<usize>,
        cursor: Option<String>,
    ) -> BoxFuture<'_, Result<Page<SessionSummary>>> {
        Store::sessions(self, limit, cursor).boxed()
    }

    fn add_evaluation<'a>(
        &'a self,
        span_id: &'a str,
        evaluator_key: &'a str,
        value: f64,
        note: Option<String>,
        now_unix_nano: i64,
    ) -> BoxFuture<'a, Result<Option<Evaluation>>> {
        Store::add_evaluation(self, span_id, evaluator_key, value, note, now_unix_nano).boxed()
    }

    fn evaluations<'a>(&'a self, span_id: &'a str) -> BoxFuture<'a, Result<Vec<Evaluation>>> {
        Store::evaluations(self, span_id).boxed()
    }

    fn prune(&self, cutoff_unix_nano: i64) -> BoxFuture<'_, Result<usize>> {
        Store::prune(self, cutoff_unix_nano).boxed()
    }
}

pub(super) fn open_reader(path: &Path) -> Result<Connection> {
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
