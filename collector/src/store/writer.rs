//! The writer thread: batches of writes, one transaction each, a savepoint per write
//! when the batch has several; writers are answered only once the commit is known.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::mpsc;

use super::{Result, StoreError};

/// Most writes committed in one transaction.
const MAX_BATCH_JOBS: usize = 256;

/// Writes waiting for the writer; senders wait (backpressure) when it is full.
pub(super) const QUEUE_DEPTH: usize = 1024;

/// The savepoint each write runs in.
const SAVEPOINT: &str = "tracia_write";

/// A write run on the writer thread inside the batch's transaction, or given `None` when
/// the batch was abandoned before its turn. It returns whether it failed and how to
/// answer its writer, which the writer calls only once the batch's commit is known.
pub(super) type WriteJob = Box<dyn FnOnce(Option<Turn<'_, '_>>) -> (bool, Reply) + Send>;

/// A write's turn in its batch.
pub(super) struct Turn<'t, 'c> {
    tx: &'t Transaction<'c>,
    /// The write is the whole batch: if it fails, the writer rolls the transaction back
    /// instead of committing, so it needs no savepoint of its own.
    alone: bool,
}

/// Answers a writer with the outcome of the batch's commit.
pub(super) type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Runs one write of a batch. Alone in its batch it runs in the transaction itself (the
/// writer rolls back if it fails); otherwise in a savepoint, so that a write that fails
/// or panics is undone without undoing the others.
///
/// A savepoint is not free: every upsert in it opens a statement journal, and SQLite
/// truncates the savepoint's in-memory journal at each statement's end by walking it
/// from the start, so a write of n spans costs O(n²). Most batches are one export.
pub(super) fn run_write<T>(
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
pub(super) fn writer_loop(mut conn: Connection, mut jobs: mpsc::Receiver<WriteJob>) {
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
