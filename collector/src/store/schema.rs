//! The store's schema, as numbered migrations recorded in SQLite's `user_version`: a
//! database is brought from whatever version it has to the latest, each step in its
//! own transaction. Append new steps; never edit a released one. (Migration 1 was last
//! changed before any release: partial filter indexes and `span_tags.start_ns`.)

use rusqlite::Connection;

/// The migrations, in order: `MIGRATIONS[n]` takes version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: spans, their tags, traces and sessions kept up to date on insert, evaluations.
    "CREATE TABLE spans (
        row_id INTEGER PRIMARY KEY,
        span_id TEXT NOT NULL UNIQUE,
        trace_id TEXT,
        parent_span_id TEXT,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        service_name TEXT,
        start_ns INTEGER NOT NULL,
        end_ns INTEGER NOT NULL,
        status TEXT NOT NULL,
        error TEXT,
        provider TEXT,
        model TEXT,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        cost_usd REAL,
        session_id TEXT,
        user_id TEXT,
        tags TEXT NOT NULL,
        prompt_slug TEXT,
        prompt_version INTEGER,
        body TEXT NOT NULL
    );
    -- Every list is newest first by (start_ns, row_id): each filter index ends with
    -- start_ns (and SQLite appends the rowid), so a filtered page is an index range read
    -- in order. Most spans are application spans without a model, session, user or
    -- prompt: those indexes are partial (`col = ?` implies `col IS NOT NULL`).
    CREATE INDEX spans_start ON spans (start_ns);
    -- A trace's spans; with the model, the trace list's model filter is one probe.
    CREATE INDEX spans_trace ON spans (trace_id, model);
    CREATE INDEX spans_session ON spans (session_id, start_ns) WHERE session_id IS NOT NULL;
    CREATE INDEX spans_user ON spans (user_id, start_ns) WHERE user_id IS NOT NULL;
    CREATE INDEX spans_model ON spans (model, start_ns) WHERE model IS NOT NULL;
    CREATE INDEX spans_prompt ON spans (prompt_slug, start_ns) WHERE prompt_slug IS NOT NULL;
    CREATE INDEX spans_status ON spans (status, start_ns);
    -- A tag's spans newest first straight from the primary key (start_ns is the span's).
    CREATE TABLE span_tags (
        tag TEXT NOT NULL,
        start_ns INTEGER NOT NULL,
        row_id INTEGER NOT NULL REFERENCES spans (row_id) ON DELETE CASCADE,
        PRIMARY KEY (tag, start_ns, row_id)
    ) WITHOUT ROWID;
    CREATE INDEX span_tags_row ON span_tags (row_id);
    CREATE TABLE traces (
        trace_id TEXT PRIMARY KEY,
        root_name TEXT,
        service_name TEXT,
        root_is_known INTEGER NOT NULL,
        start_ns INTEGER NOT NULL,
        end_ns INTEGER NOT NULL,
        span_count INTEGER NOT NULL,
        llm_count INTEGER NOT NULL,
        error_count INTEGER NOT NULL,
        models TEXT,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_usd REAL,
        session_id TEXT,
        user_id TEXT
    );
    CREATE INDEX traces_start ON traces (start_ns);
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        trace_count INTEGER NOT NULL DEFAULT 0,
        span_count INTEGER NOT NULL,
        user_id TEXT,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost_usd REAL,
        first_ns INTEGER NOT NULL,
        last_ns INTEGER NOT NULL
    );
    CREATE INDEX sessions_last ON sessions (last_ns);
    CREATE TABLE session_traces (
        session_id TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        PRIMARY KEY (session_id, trace_id)
    ) WITHOUT ROWID;
    CREATE TABLE evaluations (
        id TEXT PRIMARY KEY,
        span_id TEXT NOT NULL,
        evaluator_key TEXT NOT NULL,
        value REAL NOT NULL,
        note TEXT,
        source TEXT NOT NULL,
        created_ns INTEGER NOT NULL
    );
    CREATE INDEX evaluations_span ON evaluations (span_id);",
    // 2: prompts and their versions; a version holds the content and the model settings.
    "CREATE TABLE prompts (
        id TEXT PRIMARY KEY,
        slug TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        description TEXT,
        current_version INTEGER NOT NULL,
        created_ns INTEGER NOT NULL,
        updated_ns INTEGER NOT NULL
    );
    CREATE TABLE prompt_versions (
        prompt_id TEXT NOT NULL REFERENCES prompts (id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        content TEXT NOT NULL,
        variables TEXT NOT NULL,
        provider TEXT,
        model TEXT,
        temperature REAL,
        top_p REAL,
        max_output_tokens INTEGER,
        stop_sequences TEXT,
        created_ns INTEGER NOT NULL,
        PRIMARY KEY (prompt_id, version)
    ) WITHOUT ROWID;",
];

/// The schema version this build writes.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`LATEST`]; refuses one written by a newer build.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > LATEST {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database has schema version {current}, newer than this collector's {LATEST}: \
             upgrade tracia-collector"
        )));
    }
    for (n, sql) in (1..).zip(MIGRATIONS).skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", n)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_a_newer_database() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, LATEST);
        conn.pragma_update(None, "user_version", LATEST + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("upgrade tracia-collector"), "{err}");
    }
}
