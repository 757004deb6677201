//! Retention: deleting whole old traces in chunks, and recounting their sessions.

use std::collections::BTreeSet;

use rusqlite::{Transaction, params};

/// Traces (or traceless spans) deleted per retention write, so that ingestion
/// interleaves with a large deletion instead of waiting for all of it.
pub(super) const PRUNE_CHUNK: i64 = 1000;

/// One step of [`Store::prune`](super::Store::prune): up to [`PRUNE_CHUNK`] traces and as many traceless
/// spans. Returns the spans deleted and whether anything may be left to delete.
pub(super) fn prune_some(tx: &Transaction<'_>, cutoff: i64) -> rusqlite::Result<(usize, bool)> {
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
