//! The PostgreSQL backend: many server and worker processes share one database.

use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::Result;
use crate::dialect::Dialect;

/// Leases runnable steps; `SKIP LOCKED` lets many processes claim at once
/// without waiting on each other (`$1` worker, `$2` now, `$3` lease end, `$4` limit).
const CLAIM: &str = "WITH picked AS ( \
        SELECT execution_id, step_id FROM step_queue \
        WHERE locked_by IS NULL AND run_after <= $2 \
        ORDER BY run_after LIMIT $4 FOR UPDATE SKIP LOCKED) \
    UPDATE step_queue q SET locked_by = $1, lease_token = gen_random_uuid()::text, locked_until = $3 \
    FROM picked WHERE q.execution_id = picked.execution_id AND q.step_id = picked.step_id \
    RETURNING q.execution_id, q.step_id, q.lease_token, q.lost::BIGINT AS lost, q.run_after";

/// Inserts an event with the execution's next number (its row locked, so concurrent writers of one execution take turns)
/// (`$1` execution, `$2` kind, `$3` family, `$4` step, `$5` data, `$6` now).
/// `FOR NO KEY UPDATE`, the lock an `UPDATE executions` takes: it lets rows
/// that reference the execution (checkpoints, events) be inserted meanwhile,
/// where `FOR UPDATE` would make their foreign-key checks wait.
const INSERT_EVENT: &str = "INSERT INTO events (execution_id, seq, kind, family, step_id, data, created_at) \
    SELECT $1, last_event_seq + 1, $2, $3, $4, $5, $6 FROM executions WHERE id = $1 FOR NO KEY UPDATE";

/// Leases due deliveries (`$1` now, `$2` lease end, `$3` limit); processes
/// skip each other's rows.
const CLAIM_DELIVERIES: &str = "WITH picked AS ( \
        SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
        AND (locked_until IS NULL OR locked_until < $1) ORDER BY next_attempt_at, id LIMIT $3 \
        FOR UPDATE SKIP LOCKED) \
    UPDATE webhook_deliveries d SET locked_until = $2 FROM picked WHERE d.id = picked.id \
    RETURNING d.id, d.webhook_id, d.kind, d.execution_id, d.event_seq, d.attempts, d.log";

/// Hands back expired leases (`$1` now); every process may run it at once.
const REAP: &str = "WITH expired AS ( \
        SELECT execution_id, step_id FROM step_queue \
        WHERE locked_by IS NOT NULL AND locked_until < $1 LIMIT 1000 FOR UPDATE SKIP LOCKED) \
    UPDATE step_queue q SET locked_by = NULL, lease_token = NULL, locked_until = NULL, \
        run_after = $1, lost = q.lost + 1 \
    FROM expired WHERE q.execution_id = expired.execution_id AND q.step_id = expired.step_id \
    RETURNING q.execution_id, q.step_id";

/// Hands back leases by token (`$1` tokens, `$2` now). Rows are locked in
/// (execution, step) order, the order batches of step results take them in:
/// in any other order the two can deadlock.
const RELEASE: &str = "WITH held AS ( \
        SELECT execution_id, step_id FROM step_queue WHERE lease_token = ANY($1) \
        ORDER BY execution_id, step_id FOR UPDATE) \
    UPDATE step_queue q SET locked_by = NULL, lease_token = NULL, locked_until = NULL, run_after = $2 \
    FROM held WHERE q.execution_id = held.execution_id AND q.step_id = held.step_id \
    RETURNING q.execution_id, q.step_id";

/// Held leases whose execution was cancelled.
const CANCELLED_LEASES: &str = "SELECT q.lease_token FROM step_queue q JOIN executions e ON e.id = q.execution_id \
    WHERE q.lease_token = ANY($1) AND e.status IN ('cancelled', 'failed', 'succeeded')";

/// Ends the leases of a batch of finished steps, fenced by their tokens
/// (`VALUES` rows of execution, step and token between prefix and suffix);
/// returns the steps whose leases were still held.
const RELEASE_MANY_PREFIX: &str = "WITH held AS (SELECT execution_id, step_id FROM step_queue WHERE (execution_id, step_id, lease_token) IN (";
const RELEASE_MANY_SUFFIX: &str = ") ORDER BY execution_id, step_id FOR UPDATE) DELETE FROM step_queue q USING held \
    WHERE q.execution_id = held.execution_id AND q.step_id = held.step_id RETURNING q.execution_id, q.step_id";

/// The execution's last event number, its row locked for the next ones.
const LAST_EVENT_SEQ: &str =
    "SELECT last_event_seq FROM executions WHERE id = $1 FOR NO KEY UPDATE";

/// Extends leases (`$1` lease end, `$2` tokens), locking rows in the order
/// of `RELEASE`.
const HEARTBEAT: &str = "WITH held AS ( \
        SELECT execution_id, step_id FROM step_queue WHERE lease_token = ANY($2) \
        ORDER BY execution_id, step_id FOR UPDATE) \
    UPDATE step_queue q SET locked_until = $1 \
    FROM held WHERE q.execution_id = held.execution_id AND q.step_id = held.step_id \
    RETURNING q.lease_token";

/// Results of some steps (`$2`: JSON list of step ids).
const SELECT_RESULTS: &str = "SELECT step_id, status, result FROM steps \
    WHERE execution_id = $1 AND step_id IN (SELECT jsonb_array_elements_text($2::jsonb)) ORDER BY position";

/// An execution's steps as its view shows them (`$1` execution): one JSON
/// array of arrays, as text.
const SELECT_STEP_SUMMARIES: &str = "SELECT COALESCE(json_agg(json_build_array(step_id, status, tool, action, \
    kind, depends_on, attempt, max_attempts, parameters, result, error, error_type, reason, timed_out, \
    started_at, finished_at) ORDER BY position), '[]'::json)::text FROM steps WHERE execution_id = $1";

/// The view's execution: the plan's levels, answers and warnings taken out
/// by PostgreSQL.
const SELECT_EXECUTION_VIEW: &str = "SELECT e.id, e.pipeline_id, e.pipeline_name, e.status, jsonb_build_object('levels', x.plan -> 'levels', 'auto_answers', x.plan -> 'auto_answers', 'warnings', x.plan -> 'warnings') AS plan, e.inputs, e.options, e.outputs, \
    e.error, e.idempotency_key, e.request_hash, e.created_at, e.started_at, e.finished_at, e.last_event_seq, \
    e.parent_execution_id, e.parent_step_id, e.root_execution_id, e.depth \
    FROM executions e JOIN execution_sources x ON x.execution_id = e.id WHERE e.id = $1";

/// PostgreSQL's autovacuum does the upkeep (tuned for `step_queue` in the schema).
async fn maintain(_: &PgPool) -> Result<()> {
    Ok(())
}

/// Records the results of finished steps in one statement: `VALUES` rows
/// (execution, step, lease token, status, parameters, result, error,
/// error type, reason, timed out, started, finished, attempt, worker, now,
/// position in the batch) between prefix and suffix. Ends the leases still
/// held (fenced by their tokens, queue rows locked in one order), writes
/// those steps' results and checkpoints, and returns them.
const RECORD_RESULTS_PREFIX: &str = "WITH v (execution_id, step_id, lease_token, status, parameters, result, \
    error, error_type, reason, timed_out, started_at, finished_at, attempt, worker, now, n) AS (";
const RECORD_RESULTS_SUFFIX: &str = "), held AS (SELECT q.execution_id, q.step_id FROM step_queue q \
    JOIN v ON q.execution_id = v.execution_id AND q.step_id = v.step_id AND q.lease_token = v.lease_token \
    ORDER BY q.execution_id, q.step_id FOR UPDATE OF q), \
  released AS (DELETE FROM step_queue q USING held \
    WHERE q.execution_id = held.execution_id AND q.step_id = held.step_id RETURNING q.execution_id, q.step_id), \
  recorded AS (UPDATE steps SET status = v.status, parameters = v.parameters, result = v.result, \
    error = v.error, error_type = v.error_type, reason = v.reason, timed_out = v.timed_out, \
    finished_at = v.finished_at FROM v JOIN released r ON r.execution_id = v.execution_id AND r.step_id = v.step_id \
    WHERE steps.execution_id = v.execution_id AND steps.step_id = v.step_id), \
  checkpointed AS (INSERT INTO checkpoints (execution_id, step_id, attempt, status, parameters, result, error, \
    error_type, started_at, finished_at, created_at, worker) \
    SELECT v.execution_id, v.step_id, v.attempt, v.status, v.parameters, v.result, v.error, v.error_type, \
    v.started_at, v.finished_at, v.now, v.worker FROM v \
    JOIN released r ON r.execution_id = v.execution_id AND r.step_id = v.step_id ORDER BY v.n) \
  SELECT execution_id, step_id FROM released";

/// Queues a step leased to a worker and starts it, in one statement
/// (`$1` execution, `$2` step, `$3` now, `$4` worker, `$5` token, `$6`
/// lease end); returns the started step.
const START_HANDED_OFF: &str = "WITH queued AS (INSERT INTO step_queue \
    (execution_id, step_id, run_after, locked_by, lease_token, locked_until) VALUES ($1, $2, $3, $4, $5, $6)) \
    UPDATE steps SET status = 'running', attempt = attempt + 1, started_at = COALESCE(started_at, $3) \
    WHERE execution_id = $1 AND step_id = $2 \
    RETURNING execution_id, step_id, position, status, attempt, max_attempts, depends_on, definition, \
    parameters, result, error, error_type, reason, timed_out, started_at, finished_at";

/// Wakes idle workers of every process (sent when the transaction commits).
const NOTIFY_WORK: Option<&'static str> = Some("SELECT pg_notify('orchestrator_work', '')");

/// Listens on `orchestrator_work` and calls `on_work` for each notification;
/// reconnects after errors (and wakes workers then, in case one was missed).
async fn listen_for_work(
    pool: &PgPool,
    on_work: std::sync::Arc<dyn Fn() + Send + Sync>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<bool> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen("orchestrator_work").await?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = listener.recv() => match received {
                    Ok(_) => on_work(),
                    Err(e) => {
                        tracing::warn!(error = ?e, "work notifications interrupted; reconnecting");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        on_work();
                    }
                },
            }
        }
    });
    Ok(true)
}

/// PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects and runs migrations (safe to do from many processes at once:
    /// sqlx takes an advisory lock).
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // A ping only for a connection idle a while (it may have been
            // dropped meanwhile), not one more round trip on every acquire.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > std::time::Duration::from_secs(10) {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await?;
        sqlx::migrate!("../../migrations/postgres")
            .run(&pool)
            .await?;
        Ok(PostgresStore { pool })
    }
}

impl Dialect for PostgresStore {
    type DB = sqlx::Postgres;

    const BACKEND: &'static str = "postgres";
    const CLAIM: &'static str = CLAIM;
    const REAP: &'static str = REAP;
    const RELEASE: &'static str = RELEASE;
    const CANCELLED_LEASES: &'static str = CANCELLED_LEASES;
    const RELEASE_MANY_PREFIX: &'static str = RELEASE_MANY_PREFIX;
    const RELEASE_MANY_SUFFIX: &'static str = RELEASE_MANY_SUFFIX;
    const LAST_EVENT_SEQ: &'static str = LAST_EVENT_SEQ;
    const HEARTBEAT: &'static str = HEARTBEAT;
    const SELECT_RESULTS: &'static str = SELECT_RESULTS;
    const SELECT_EXECUTION_VIEW: &'static str = SELECT_EXECUTION_VIEW;
    const SELECT_STEP_SUMMARIES: &'static str = SELECT_STEP_SUMMARIES;
    const INSERT_EVENT: &'static str = INSERT_EVENT;
    const CLAIM_DELIVERIES: &'static str = CLAIM_DELIVERIES;

    const NOTIFY_WORK: Option<&'static str> = NOTIFY_WORK;
    const RECORD_RESULTS: Option<(&'static str, &'static str)> =
        Some((RECORD_RESULTS_PREFIX, RECORD_RESULTS_SUFFIX));
    const START_HANDED_OFF: Option<&'static str> = Some(START_HANDED_OFF);

    fn pool(&self) -> &sqlx::Pool<Self::DB> {
        &self.pool
    }

    /// PostgreSQL handles concurrent writers itself.
    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        None
    }

    async fn maintain(&self) -> Result<()> {
        maintain(&self.pool).await
    }

    async fn listen_for_work(
        &self,
        on_work: std::sync::Arc<dyn Fn() + Send + Sync>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<bool> {
        listen_for_work(&self.pool, on_work, shutdown).await
    }
}
