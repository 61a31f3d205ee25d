//! The embedded SQLite backend: one process, zero set-up, WAL mode.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::Result;
use crate::dialect::Dialect;

/// Leases runnable steps. SQLite has one writer at a time, so no row locks
/// are needed (`$1` worker, `$2` now, `$3` lease end, `$4` limit).
const CLAIM: &str = "UPDATE step_queue SET locked_by = $1, lease_token = lower(hex(randomblob(16))), locked_until = $3 \
    WHERE rowid IN (SELECT rowid FROM step_queue \
        WHERE locked_by IS NULL AND run_after <= $2 ORDER BY run_after LIMIT $4) \
    RETURNING execution_id, step_id, lease_token, lost, run_after";

/// Hands back expired leases (`$1` now).
const REAP: &str = "UPDATE step_queue SET locked_by = NULL, lease_token = NULL, locked_until = NULL, \
    run_after = $1, lost = lost + 1 \
    WHERE rowid IN (SELECT rowid FROM step_queue WHERE locked_by IS NOT NULL AND locked_until < $1 LIMIT 1000) \
    RETURNING execution_id, step_id";

/// Hands back leases by token (`$1` JSON list of tokens, `$2` now).
const RELEASE: &str = "UPDATE step_queue SET locked_by = NULL, lease_token = NULL, locked_until = NULL, run_after = $2 \
    WHERE lease_token IN (SELECT value FROM json_each($1)) RETURNING execution_id, step_id";

/// Held leases whose execution was cancelled (`$1` JSON list of tokens).
const CANCELLED_LEASES: &str = "SELECT q.lease_token FROM step_queue q JOIN executions e ON e.id = q.execution_id \
    WHERE q.lease_token IN (SELECT value FROM json_each($1)) AND e.status IN ('cancelled', 'failed', 'succeeded')";

/// Ends the leases of a batch of finished steps, fenced by their tokens
/// (`VALUES` rows of execution, step and token between prefix and suffix);
/// returns the steps whose leases were still held.
/// (Joined by rowid: `(…) IN (VALUES …)` would scan the whole queue.)
const RELEASE_MANY_PREFIX: &str = "DELETE FROM step_queue WHERE rowid IN (SELECT q.rowid FROM (";
const RELEASE_MANY_SUFFIX: &str = ") v JOIN step_queue q ON q.execution_id = v.column1 AND q.step_id = v.column2 \
    AND q.lease_token = v.column3) RETURNING execution_id, step_id";

/// The execution's last event number, its row locked for the next ones.
const LAST_EVENT_SEQ: &str = "SELECT last_event_seq FROM executions WHERE id = $1";

/// Extends leases (`$1` lease end, `$2` JSON list of tokens).
const HEARTBEAT: &str = "UPDATE step_queue SET locked_until = $1 \
    WHERE lease_token IN (SELECT value FROM json_each($2)) RETURNING lease_token";

/// Results of some steps (`$2`: JSON list of step ids).
const SELECT_RESULTS: &str = "SELECT step_id, status, result FROM steps \
    WHERE execution_id = $1 AND step_id IN (SELECT value FROM json_each($2)) ORDER BY position";

/// An execution's steps as its view shows them (`$1` execution): one JSON
/// array of arrays (`json()` keeps the stored documents JSON inside it).
const SELECT_STEP_SUMMARIES: &str = "SELECT json_group_array(json_array(step_id, status, tool, action, kind, \
    json(depends_on), attempt, max_attempts, json(parameters), json(result), error, error_type, reason, \
    timed_out, started_at, finished_at) ORDER BY position) FROM steps WHERE execution_id = $1";

/// The view's execution: the plan's levels, answers and warnings taken out
/// by SQLite (its JSON functions; `json()` keeps them JSON inside the object).
const SELECT_EXECUTION_VIEW: &str = "SELECT e.id, e.pipeline_id, e.pipeline_name, e.status, json_object('levels', json(x.plan -> '$.levels'), 'auto_answers', json(x.plan -> '$.auto_answers'), 'warnings', json(x.plan -> '$.warnings')) AS plan, e.inputs, e.options, e.outputs, \
    e.error, e.idempotency_key, e.request_hash, e.created_at, e.started_at, e.finished_at, e.last_event_seq, \
    e.parent_execution_id, e.parent_step_id, e.root_execution_id, e.depth \
    FROM executions e JOIN execution_sources x ON x.execution_id = e.id WHERE e.id = $1";

/// Copies the WAL back into the database file. PASSIVE never blocks writers;
/// when the WAL has grown large, TRUNCATE also gives its space back.
/// The size the write-ahead log is held to (`database.sqlite_wal_max_bytes`).
static WAL_MAX_BYTES: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

/// Default bound of the write-ahead log: 64 MiB.
pub const DEFAULT_WAL_MAX_BYTES: i64 = 64 * 1024 * 1024;

/// Sets the bound of SQLite's write-ahead log for this process (before
/// connecting; only the first call counts).
pub fn set_wal_max_bytes(bytes: i64) -> bool {
    WAL_MAX_BYTES.set(bytes.max(1024 * 1024)).is_ok()
}

fn wal_max_bytes() -> i64 {
    *WAL_MAX_BYTES.get_or_init(|| DEFAULT_WAL_MAX_BYTES)
}

/// Checkpoints the write-ahead log in the background (the reaper calls this
/// a few times a second), never on the commit path: a passive checkpoint
/// copies what it can without waiting; past the bound, a truncating one
/// waits for readers and writers to let it empty the log and cut the file.
async fn maintain(pool: &SqlitePool, page_size: i64) -> Result<()> {
    let (_, log_frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?;
    if log_frames.saturating_mul(page_size) > wal_max_bytes() {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Inserts an event with the execution's next number
/// (`$1` execution, `$2` kind, `$3` family, `$4` step, `$5` data, `$6` now).
const INSERT_EVENT: &str = "INSERT INTO events (execution_id, seq, kind, family, step_id, data, created_at) \
    SELECT $1, last_event_seq + 1, $2, $3, $4, $5, $6 FROM executions WHERE id = $1";

/// Leases due deliveries (`$1` now, `$2` lease end, `$3` limit).
const CLAIM_DELIVERIES: &str = "UPDATE webhook_deliveries SET locked_until = $2 WHERE id IN ( \
        SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
        AND (locked_until IS NULL OR locked_until < $1) ORDER BY next_attempt_at, id LIMIT $3) \
    RETURNING id, webhook_id, kind, execution_id, event_seq, attempts, log";

/// SQLite serves one process: nothing to announce across processes.
const NOTIFY_WORK: Option<&'static str> = None;

async fn listen_for_work(
    _: &SqlitePool,
    _: std::sync::Arc<dyn Fn() + Send + Sync>,
    _: tokio_util::sync::CancellationToken,
) -> Result<bool> {
    Ok(false)
}

/// SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// SQLite has one writer at a time. Taking turns here, instead of in
    /// SQLite's busy handler (which sleeps in steps of milliseconds), keeps
    /// write latency low under contention.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Bytes per page, for the size of the write-ahead log.
    page_size: i64,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and runs migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Checkpoints run from `maintain`, not on some unlucky commit.
            .pragma("wal_autocheckpoint", "0")
            // A log emptied by a checkpoint is cut back to this size.
            .pragma("journal_size_limit", wal_max_bytes().to_string());
        // An in-memory database exists once per connection: keep exactly one.
        let max = if url.contains(":memory:") || url.contains("mode=memory") {
            1
        } else {
            4
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .min_connections(1)
            // An embedded database's connection does not drop: no ping
            // (one more trip to the connection's thread) on every acquire.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../../migrations/sqlite").run(&pool).await?;
        let (page_size,): (i64,) = sqlx::query_as("PRAGMA page_size").fetch_one(&pool).await?;
        Ok(SqliteStore {
            pool,
            writer: Default::default(),
            page_size,
        })
    }
}

impl Dialect for SqliteStore {
    type DB = sqlx::Sqlite;

    const BACKEND: &'static str = "sqlite";
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
    // SQLite has no data-modifying CTEs: a statement each.
    const RECORD_RESULTS: Option<(&'static str, &'static str)> = None;
    const START_HANDED_OFF: Option<&'static str> = None;

    fn pool(&self) -> &sqlx::Pool<Self::DB> {
        &self.pool
    }

    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        Some(self.writer.lock().await)
    }

    async fn maintain(&self) -> Result<()> {
        maintain(&self.pool, self.page_size).await
    }

    async fn listen_for_work(
        &self,
        on_work: std::sync::Arc<dyn Fn() + Send + Sync>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<bool> {
        listen_for_work(&self.pool, on_work, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{
        CLOSE_STEPS, READY_DEPENDENTS_MIDDLE, READY_DEPENDENTS_PREFIX, UPDATE_STEP_RESULTS_PREFIX,
        UPDATE_STEP_RESULTS_SUFFIX,
    };
    use crate::executions::SELECT_CONTEXT;
    use crate::finish::OTHERS_WAITING;
    use crate::queue::{START_STEP, START_STEPS_MIDDLE, START_STEPS_PREFIX, START_STEPS_SUFFIX};

    /// The statements every step goes through find their rows through
    /// indexes: no scan of the steps, queue, dependency or event tables,
    /// whose size grows with everything ever stored. (`(…) IN (VALUES …)`
    /// once made SQLite scan every step on each claim.)
    #[tokio::test]
    async fn the_statements_of_each_step_use_indexes() {
        let dir = crate::testing::TempDir::new("orch-plans");
        let store = SqliteStore::connect(&crate::testing::sqlite_url(&dir))
            .await
            .expect("store");
        let statements = [
            CLAIM
                .replace("$1", "'w'")
                .replace("$2", "1")
                .replace("$3", "2")
                .replace("$4", "10"),
            format!(
                "{RELEASE_MANY_PREFIX}VALUES ('e', 'a', 't'), ('e', 'b', 'u'){RELEASE_MANY_SUFFIX}"
            ),
            format!(
                "{START_STEPS_PREFIX}VALUES ('e', 'a'), ('e', 'b'){START_STEPS_MIDDLE}1{START_STEPS_SUFFIX}"
            ),
            format!(
                "{UPDATE_STEP_RESULTS_PREFIX}VALUES ('e', 'a', 'succeeded', NULL, NULL, NULL, NULL, NULL, 0, 1), \
                 ('e', 'b', 'succeeded', NULL, NULL, NULL, NULL, NULL, 0, 1){UPDATE_STEP_RESULTS_SUFFIX}"
            ),
            format!(
                "{READY_DEPENDENTS_PREFIX}1{READY_DEPENDENTS_MIDDLE}'e' AND d.depends_on IN ('a', 'b') ORDER BY s.position"
            ),
            CLOSE_STEPS
                .replace("$1", "'e'")
                .replace("$2", "1")
                .replace("$3", "2"),
            INSERT_EVENT
                .replace("$1", "'e'")
                .replace("$2", "'k'")
                .replace("$3", "'f'")
                .replace("$4", "'a'")
                .replace("$5", "'{}'")
                .replace("$6", "1"),
            HEARTBEAT.replace("$1", "1").replace("$2", "'[\"t\"]'"),
            RELEASE.replace("$1", "'[\"t\"]'").replace("$2", "1"),
            CANCELLED_LEASES.replace("$1", "'[\"t\"]'"),
            REAP.replace("$1", "1"),
            OTHERS_WAITING.replace("$1", "1"),
            START_STEP
                .replace("$1", "'e'")
                .replace("$2", "'a'")
                .replace("$3", "1"),
            SELECT_CONTEXT.replace("$1", "'e'"),
            SELECT_RESULTS
                .replace("$1", "'e'")
                .replace("$2", "'[\"a\"]'"),
        ];
        for sql in statements {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(&store.pool)
                    .await
                    .unwrap_or_else(|e| panic!("{e}: {sql}"));
            for (_, _, _, detail) in &plan {
                // Scans of the statement's own rows (VALUES, a JSON list
                // argument) are fine.
                let scans_a_table = detail.starts_with("SCAN ")
                    && !detail.starts_with("SCAN v")
                    && !detail.starts_with("SCAN json_each")
                    && !detail.contains("CONSTANT ROW")
                    && !detail.contains("VALUES CLAUSE");
                assert!(!scans_a_table, "{detail}\nin: {sql}\nplan: {plan:?}");
            }
        }
    }
}
