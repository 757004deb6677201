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
//! - **Schema** versions live in [`schema`]; every value is a bound parameter,
//!   never SQL text.
//!
//! The handlers see only the traits [`SpanStore`] and [`PromptStore`] and the types of
//! this module. The SQLite engine is [`Store`] (`sqlite`), over the writer thread
//! (`writer`), the span row (`spans`), the listings (`queries`), retention (`retention`)
//! and prompts (`prompts`).

mod prompts;
mod queries;
mod retention;
mod schema;
mod spans;
mod sqlite;
mod writer;

use std::path::PathBuf;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::model::{SpanRecord, SpanStatus};

pub use prompts::{PromptMessage, PromptRow, Settings, VersionRow};
pub(crate) use spans::body;
pub use sqlite::Store;

/// The database file inside the data directory.
pub const DB_FILE: &str = "tracia.db";

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

/// What the handlers (REST API, UI, ingestion) and retention need from a storage
/// engine. [`Store`] is the SQLite one; another engine (PostgreSQL, say) implements this
/// (and [`PromptStore`]) and is set as `AppState`'s `store` (and `prompts`), without a
/// change to the handlers.
///
/// Object-safe (methods return boxed futures) so that the handlers hold an
/// `Arc<dyn SpanStore>` picked at start from a flag, rather than being generic over
/// the engine, which would spread a type parameter through `AppState`, every handler
/// and the router. A boxed future per call costs nothing next to a database round trip.
/// Async because every engine waits on I/O; an engine must not block the runtime
/// thread (the SQLite one reads on the blocking pool and writes on its own thread).
///
/// Every write resolves only once it is durable: an acknowledged export is committed.
///
/// ```
/// use std::sync::Arc;
/// use tracia_collector::store::{SpanQuery, SpanStore, Store};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let store: Arc<dyn SpanStore> = Arc::new(Store::open(dir.path()).unwrap());
/// let page = store.list_spans(SpanQuery::default()).await.unwrap();
/// assert!(page.items.is_empty());
/// # });
/// ```
pub trait SpanStore: std::fmt::Debug + Send + Sync + 'static {
    /// Stores spans (a span id seen before is kept as first stored, so re-sent exports
    /// are idempotent). Resolves once the spans are committed.
    fn insert(&self, records: Vec<SpanRecord>) -> BoxFuture<'_, Result<()>>;

    /// One span.
    fn get_span<'a>(&'a self, span_id: &'a str) -> BoxFuture<'a, Result<Option<SpanRecord>>>;

    /// Spans newest first, filtered.
    fn list_spans(&self, query: SpanQuery) -> BoxFuture<'_, Result<Page<SpanRecord>>>;

    /// Every span of a trace, in start order.
    fn trace<'a>(&'a self, trace_id: &'a str) -> BoxFuture<'a, Result<Vec<SpanRecord>>>;

    /// Traces newest first (by their earliest span), filtered; a trace whose start moves
    /// earlier while a client pages may show up again, but is never skipped.
    fn traces(&self, query: TraceQuery) -> BoxFuture<'_, Result<Page<TraceSummary>>>;

    /// One trace's summary.
    fn trace_summary<'a>(
        &'a self,
        trace_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<TraceSummary>>>;

    /// The tags of each of these traces (distinct, in the order they first appear).
    fn trace_tags(&self, trace_ids: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<String>>>>;

    /// Sessions, most recently active first.
    fn sessions(
        &self,
        limit: Option<usize>,
        cursor: Option<String>,
    ) -> BoxFuture<'_, Result<Page<SessionSummary>>>;

    /// Attaches an evaluation to a stored span; `None` when the span is unknown.
    fn add_evaluation<'a>(
        &'a self,
        span_id: &'a str,
        evaluator_key: &'a str,
        value: f64,
        note: Option<String>,
        now_unix_nano: i64,
    ) -> BoxFuture<'a, Result<Option<Evaluation>>>;

    /// The evaluations of a span, oldest first.
    fn evaluations<'a>(&'a self, span_id: &'a str) -> BoxFuture<'a, Result<Vec<Evaluation>>>;

    /// Deletes what ended before `cutoff_unix_nano` (whole traces, never half of one);
    /// returns how many spans went.
    fn prune(&self, cutoff_unix_nano: i64) -> BoxFuture<'_, Result<usize>>;
}

/// What the prompt handlers need from a storage engine: prompts and their versions,
/// each call one read or one write transaction. Object-safe, like [`SpanStore`].
///
/// ```
/// use std::sync::Arc;
/// use tracia_collector::store::{PromptStore, Store};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let store: Arc<dyn PromptStore> = Arc::new(Store::open(dir.path()).unwrap());
/// assert!(store.prompts().await.unwrap().is_empty());
/// assert!(store.prompt("welcome", None).await.unwrap().is_none());
/// # });
/// ```
pub trait PromptStore: std::fmt::Debug + Send + Sync + 'static {
    /// Every prompt with its current version, most recently changed first.
    fn prompts(&self) -> BoxFuture<'_, Result<Vec<(PromptRow, VersionRow)>>>;

    /// A prompt and one of its versions (the current one unless `version` is given);
    /// `None` for an unknown slug, a `None` version for an unknown version.
    fn prompt<'a>(
        &'a self,
        slug: &'a str,
        version: Option<i64>,
    ) -> BoxFuture<'a, Result<Option<FoundPrompt>>>;

    /// Stores a new prompt with its first version; `None` when its slug is taken.
    fn create_prompt(
        &self,
        prompt: PromptRow,
        version: VersionRow,
    ) -> BoxFuture<'_, Result<Option<(PromptRow, VersionRow)>>>;

    /// Changes a prompt in one write: its slug to `new_slug` (unless taken), then
    /// `edit` on the prompt and its current version, storing the version `edit`
    /// returns, if any, as a new one.
    fn update_prompt(
        &self,
        slug: String,
        new_slug: Option<String>,
        edit: PromptEdit,
    ) -> BoxFuture<'_, Result<PromptUpdate>>;

    /// Deletes a prompt and every version; `false` for an unknown slug.
    fn delete_prompt<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Every version of a prompt, newest first; `None` for an unknown slug.
    fn prompt_versions<'a>(
        &'a self,
        slug: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<VersionRow>>>>;
}

/// The change [`PromptStore::update_prompt`] makes to a prompt, given its current
/// version: `Ok(Some(version))` stores a new version, `Ok(None)` keeps the current one,
/// `Err(message)` refuses the update (nothing is stored).
pub type PromptEdit = Box<
    dyn FnOnce(&mut PromptRow, &VersionRow) -> std::result::Result<Option<VersionRow>, String>
        + Send,
>;

/// A prompt found by [`PromptStore::prompt`], with the version asked for (`None`
/// when the prompt has no such version).
pub type FoundPrompt = (PromptRow, Option<VersionRow>);

/// What [`PromptStore::update_prompt`] did.
#[derive(Debug)]
pub enum PromptUpdate {
    /// Stored: the prompt and the version it now shows (boxed: the other answers are
    /// small).
    Updated(Box<(PromptRow, VersionRow)>),
    /// No prompt has that slug.
    NotFound,
    /// Another prompt has the new slug.
    SlugTaken(String),
    /// The edit refused, with this message.
    Invalid(String),
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

#[cfg(test)]
mod tests;
