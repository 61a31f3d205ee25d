//! Durable storage for executions, steps, the step queue and checkpoints.
//!
//! One [`Store`] trait, two sqlx backends: [`SqliteStore`] (embedded default)
//! and [`PostgresStore`] (many processes on one database). Both keep the same
//! schema (`migrations/sqlite`, `migrations/postgres`) and the same semantics,
//! checked by one contract test suite.
//!
//! Invariants every backend keeps:
//! - An execution and all its step rows are created in one transaction.
//! - A step is in `step_queue` exactly while it is ready, leased or waiting
//!   for a retry; claims only ever look at that small table.
//! - Finishing a step is conditional on its lease token (fencing): a worker
//!   that lost its lease cannot write a result. The result, its checkpoint,
//!   the readiness of dependents and the execution's final status are
//!   written in one transaction.
//!
//! The implementation is written once, generic over a backend's
//! `Dialect` (`dialect.rs`; the records it takes and gives are in
//! `records.rs`; `store_impl.rs` maps each method to its domain
//! module: `executions`, `queue`, `finish`/`batch`, `recovery`, `events`,
//! `models`, `webhooks`, `tokens`, `overview`). See `docs/ARCHITECTURE.md`.

use async_trait::async_trait;
use orchestrator_core::flow::{ExecutionStatus, StepStatus};
use orchestrator_core::plan::PlannedStep;
use serde_json::Value;

mod batch;
mod dialect;
mod events;
mod executions;
mod finish;
mod logs;
mod memory;
mod models;
mod overview;
mod pipelines;
mod postgres;
mod queue;
mod records;
mod recovery;
mod resolve;
mod retention;
mod rows;
mod sql;
mod sqlite;
mod store_impl;
pub mod testing;
mod tokens;
mod waits;
mod webhooks;

pub use events::EventRecord;
pub use logs::{LogLine, LogWrite};
pub use memory::{Change as MemoryChange, MemoryEntry};
pub use models::{ModelCall, ModelCallStats, ModelRecord, StepUsage};
pub use overview::Overview;
pub use pipelines::{PipelineRecord, PipelineSummary};
pub use postgres::PostgresStore;
pub use records::*;
pub use retention::{Deleted, PurgeRule};
pub use sqlite::{
    DEFAULT_WAL_MAX_BYTES, SqliteStore, set_wal_max_bytes as set_sqlite_wal_max_bytes,
};
pub use tokens::TokenRecord;
pub use waits::WaitRecord;
pub use webhooks::{DeliveryJob, DeliveryRecord, DeliveryUpdate, WebhookRecord};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the lease on step '{step}' is no longer held")]
    LeaseLost { step: String },
    #[error("an execution with idempotency key '{0}' exists with a different request")]
    IdempotencyConflict(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// A loop would take its execution past `limits.max_steps`.
    #[error("{0}")]
    LimitExceeded(String),
    #[error("unsupported database url (use sqlite://… or postgres://…)")]
    UnsupportedUrl,
}

impl StoreError {
    /// A conflict between concurrent transactions (PostgreSQL deadlock or
    /// serialization failure, SQLite busy) or a lost connection: trying
    /// again may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => {
                // PostgreSQL: deadlock, serialization failure, the server
                // shutting down or restarting (its connections end), any
                // connection exception (08…); SQLite: busy, locked.
                let code = e.code();
                let code = code.as_deref().unwrap_or_default();
                matches!(
                    code,
                    "40P01" | "40001" | "57P01" | "57P02" | "57P03" | "5" | "6" | "517"
                ) || (code.len() == 5 && code.starts_with("08"))
            }
            // A connection lost under a statement (the server restarted):
            // the pool opens a new one for the next try.
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The storage of executions.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Whether the database answers and is migrated.
    async fn ping(&self) -> Result<()>;

    /// Inserts an execution and its steps in one transaction; steps without
    /// dependencies are queued. With an idempotency key already used, returns
    /// the existing execution (`false`) when the request hash matches, else
    /// [`StoreError::IdempotencyConflict`].
    async fn create_execution(&self, new: NewExecution) -> Result<(ExecutionRecord, bool)> {
        let (record, created, _) = self.create_and_take(new, None).await?;
        Ok((record, created))
    }

    /// [`Store::create_execution`], and with `take` up to `take.limit` of
    /// its runnable first steps leased to `take.worker` and started in the
    /// same transaction (returned, as [`Store::claim_steps`] returns them).
    /// Nothing is taken for an execution not created here, one still
    /// resolving its tags, or one whose first steps wait for a later time.
    async fn create_and_take(
        &self,
        new: NewExecution,
        take: Option<Take>,
    ) -> Result<(ExecutionRecord, bool, Vec<ClaimedStep>)>;

    async fn get_execution(&self, id: &str) -> Result<Option<ExecutionRecord>>;

    /// An execution's status and the number of its last event: one indexed
    /// read, to tell whether a view built earlier still stands.
    async fn execution_version(&self, id: &str) -> Result<Option<(ExecutionStatus, i64)>>;

    /// An execution as its view needs it: no `source` (empty), and of the
    /// `plan` only `levels`, `auto_answers` and `warnings` (the database
    /// takes them out; the step definitions are not read).
    async fn get_execution_view(&self, id: &str) -> Result<Option<ExecutionRecord>>;

    /// Newest first. Listed records carry no `source` (empty) and no `plan`
    /// (null): read one execution with `get_execution` for those.
    async fn list_executions(&self, filter: &ExecutionFilter) -> Result<Vec<ExecutionRecord>>;

    /// Every step of an execution, in plan order.
    async fn list_steps(&self, execution_id: &str) -> Result<Vec<StepRecord>>;

    /// Every step of an execution, in plan order, as its view shows it
    /// (no definition to decode: cheap for executions of many steps).
    async fn list_step_summaries(&self, execution_id: &str) -> Result<Vec<StepSummary>>;

    async fn list_checkpoints(&self, execution_id: &str) -> Result<Vec<CheckpointRecord>>;

    /// Leases up to `limit` runnable steps for `lease_ms`, marks them running
    /// and their executions running.
    async fn claim_steps(
        &self,
        worker: &str,
        limit: u32,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedStep>>;

    /// Extends the leases held by these tokens, and says which are lost and
    /// which belong to cancelled executions.
    async fn heartbeat(&self, tokens: &[String], lease_ms: i64) -> Result<Heartbeat>;

    /// Hands back steps whose lease expired (their worker died or hung):
    /// they become claimable again, with their lost count raised. Safe to run
    /// in every process at once. Returns how many were handed back.
    async fn reap_expired_leases(&self) -> Result<u64>;

    /// Hands back leases this process still holds (at shutdown), so another
    /// process can run those steps at once.
    async fn release_leases(&self, tokens: &[String]) -> Result<u64>;

    /// Forgets idempotency keys of executions created before `before_ms`
    /// (the executions stay). Returns how many keys were forgotten.
    async fn expire_idempotency_keys(&self, before_ms: i64) -> Result<u64>;

    /// Fails unfinished executions whose deadline has passed; returns their ids.
    async fn expire_deadlines(&self) -> Result<Vec<String>>;

    /// Periodic upkeep off the commit path (SQLite: checkpoint the WAL).
    async fn maintain(&self) -> Result<()>;

    /// Number of runnable or running steps in the queue (for back-pressure).
    async fn queue_depth(&self) -> Result<i64>;

    /// Records a final result (fenced by the lease token) and advances the
    /// flow; with `handoff`, one step it makes ready may come back leased in
    /// [`FinishOutcome::next`].
    async fn finish_step(
        &self,
        step: &ClaimedStep,
        result: StepResult,
        outputs: OutputRenderer<'_>,
        handoff: Option<Handoff>,
    ) -> Result<FinishOutcome>;

    /// `finish_step` for many steps in one transaction (group commit): one
    /// write turn and one commit for the lot. Each step gets its own result;
    /// one refused for a lost lease does not undo the others. Any other
    /// error is `Err` for the whole batch, and then nothing was written.
    async fn finish_steps(
        &self,
        batch: Vec<(ClaimedStep, StepResult)>,
        outputs: OutputRenderer<'_>,
        handoff: Option<Handoff>,
    ) -> Result<Vec<Result<FinishOutcome>>>;

    /// Turns a running loop step into a waiting one: inserts the steps of its
    /// new iterations (those without dependencies queued at once) and makes the
    /// loop step wait for `wait_for`, with its new definition. Fenced by the lease.
    async fn expand_step(
        &self,
        step: &ClaimedStep,
        container: &PlannedStep,
        new_steps: Vec<NewStep>,
        wait_for: &[String],
    ) -> Result<Vec<String>>;

    /// Cancels an execution: steps that have not started are cancelled at
    /// once and the execution is `cancelled`; steps already running finish
    /// (their results are kept) but start nothing new. Idempotent. `None` when
    /// the execution does not exist.
    async fn cancel_execution(&self, id: &str) -> Result<Option<ExecutionRecord>>;

    /// Leases up to `limit` executions in the resolving phase that are due
    /// (new, or whose lease expired) for `lease_ms`.
    async fn claim_resolving(
        &self,
        worker: &str,
        limit: u32,
        lease_ms: i64,
    ) -> Result<Vec<ResolveJob>>;

    /// Extends a resolving lease; `false` when it is no longer held (the
    /// execution was cancelled or timed out, or another process took it).
    async fn renew_resolving(
        &self,
        execution_id: &str,
        lease_token: &str,
        lease_ms: i64,
    ) -> Result<bool>;

    /// Hands a resolving lease back (shutdown): another process takes it at once.
    async fn release_resolving(&self, execution_id: &str, lease_token: &str) -> Result<()>;

    /// Ends the resolving phase (fenced by the lease): stores and queues the
    /// steps, or fails the execution. `false` when the lease was no longer
    /// held, and then nothing was written.
    async fn finish_resolving(
        &self,
        execution_id: &str,
        lease_token: &str,
        outcome: Resolved,
    ) -> Result<bool>;

    /// A running step asks a person (fenced by its lease): it gives up the
    /// lease and is `waiting` until [`Store::answer_step`] or `deadline`.
    /// Any earlier question of the step is replaced. Emits `step.waiting`.
    async fn wait_step(
        &self,
        step: &ClaimedStep,
        kind: &str,
        request: &Value,
        parameters: Option<&Value>,
        deadline: Option<i64>,
    ) -> Result<()>;

    /// A step's question and answer, if it asked one.
    async fn get_wait(&self, execution_id: &str, step_id: &str) -> Result<Option<WaitRecord>>;

    /// Open questions (of one execution, or all), oldest first.
    async fn list_waits(&self, execution_id: Option<&str>, limit: u32) -> Result<Vec<WaitRecord>>;

    /// Records the answer to a waiting step and queues it again. `None`
    /// when there is no such execution or step; [`StoreError::Conflict`]
    /// when the step is not waiting (answered already, timed out, ended).
    async fn answer_step(
        &self,
        execution_id: &str,
        step_id: &str,
        answer: &Value,
        answered_by: Option<&str>,
    ) -> Result<Option<WaitRecord>>;

    /// Queues again waiting steps whose deadline passed; returns how many.
    async fn expire_waits(&self) -> Result<u64>;

    /// Stores a new version of a pipeline (1 for a new name).
    async fn put_pipeline(
        &self,
        name: &str,
        source: &str,
        format: &str,
        created_by: Option<&str>,
    ) -> Result<PipelineRecord>;

    /// A stored pipeline: the given version, or the newest.
    async fn get_pipeline(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<PipelineRecord>>;

    /// Every stored pipeline, by name.
    async fn list_pipelines(&self) -> Result<Vec<PipelineSummary>>;

    /// Deletes a finished execution with the executions it started (at any
    /// depth) and everything they own; nothing while one of them runs.
    async fn delete_execution(&self, id: &str) -> Result<Deleted>;

    /// Deletes up to `limit` finished root executions the rule selects, each
    /// with its tree; how many executions went.
    async fn purge_executions(&self, rule: &PurgeRule, limit: i64) -> Result<u64>;

    /// Takes (or renews) a named lease for `holder` until `until` (Unix ms)
    /// if it is free or expired: one process at a time does the named work.
    async fn take_lease(&self, name: &str, holder: &str, until: i64) -> Result<bool>;

    /// Writes a batch of a step's log lines (see [`LogWrite`]).
    async fn append_step_log(
        &self,
        execution_id: &str,
        step_id: &str,
        write: &LogWrite,
    ) -> Result<()>;

    /// A step's log lines numbered after `after`, in order, at most `limit`.
    async fn step_log(
        &self,
        execution_id: &str,
        step_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LogLine>>;

    /// One step's status (`None` when there is no such step).
    async fn step_status(&self, execution_id: &str, step_id: &str) -> Result<Option<StepStatus>>;

    /// The number of a step's last log line (0 without one).
    async fn last_log_seq(&self, execution_id: &str, step_id: &str) -> Result<i64>;

    /// A live (unexpired) memory entry.
    async fn memory_get(
        &self,
        scope: &str,
        namespace: &str,
        key: &str,
    ) -> Result<Option<MemoryEntry>>;

    /// A namespace's live entries, by key.
    async fn memory_list(&self, scope: &str, namespace: &str) -> Result<Vec<MemoryEntry>>;

    /// Writes an entry (`expires_at` in Unix ms; `None` keeps it).
    async fn memory_put(
        &self,
        scope: &str,
        namespace: &str,
        key: &str,
        value: &Value,
        expires_at: Option<i64>,
    ) -> Result<()>;

    /// Changes an entry atomically across processes: `change` sees its live
    /// value (`None` if absent) and returns the new one, or a refusal (the
    /// inner `Err`) that leaves it as it was.
    async fn memory_update(
        &self,
        scope: &str,
        namespace: &str,
        key: &str,
        change: memory::Change<'_>,
    ) -> Result<std::result::Result<Value, String>>;

    /// Removes one key, or the whole namespace; how many entries went.
    async fn memory_clear(&self, scope: &str, namespace: &str, key: Option<&str>) -> Result<u64>;

    /// Drops expired memory entries; how many.
    async fn purge_expired_memory(&self) -> Result<u64>;

    /// How many child executions of each pipeline the tree under `root`
    /// has started.
    async fn tree_counts(&self, root: &str) -> Result<Vec<(String, i64)>>;

    /// Runs a finished execution again from its checkpoints. Without `from`:
    /// failed, cancelled and never-run steps (and steps skipped because a
    /// dependency failed) run again; succeeded steps keep their results. With
    /// `from` (a step id): that step and everything downstream of it run again.
    /// Returns the ids of the steps that will run again; `None` when the
    /// execution does not exist; [`StoreError::Conflict`] while it is running.
    async fn recover_execution(&self, id: &str, from: Option<&str>) -> Result<Option<Vec<String>>>;

    /// Records a failed attempt and queues the next one after `delay_ms`.
    async fn retry_step(&self, step: &ClaimedStep, result: StepResult, delay_ms: i64)
    -> Result<()>;

    /// What a worker needs to render a step: the execution's inputs and the
    /// results of the named steps. `None` when the execution does not exist.
    async fn step_context(
        &self,
        execution_id: &str,
        step_ids: &[String],
    ) -> Result<Option<StepContext>>;

    /// (step id, status, envelope) of the named steps that exist: what
    /// [`Store::step_context`] adds to the context a claim brings.
    async fn step_results(
        &self,
        execution_id: &str,
        step_ids: &[String],
    ) -> Result<Vec<(String, StepStatus, Option<Value>)>>;

    /// Calls `on_work` whenever another process may have queued runnable
    /// steps, until `shutdown`. Returns `false` when the backend has no such
    /// channel (SQLite: one process; its workers are woken in process).
    async fn listen_for_work(
        &self,
        on_work: std::sync::Arc<dyn Fn() + Send + Sync>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<bool>;

    /// Milliseconds until the next queued step becomes runnable, if any.
    async fn next_run_in_ms(&self) -> Result<Option<i64>>;

    /// Registers a model; `false` when the id is taken.
    async fn insert_model(&self, id: &str, spec: &Value, source: &str) -> Result<bool>;

    /// Registers or replaces a model (definitions from `models.yaml`).
    async fn upsert_model(&self, id: &str, spec: &Value, source: &str) -> Result<()>;

    /// Removes a model; `false` when there was none. Its call history stays.
    async fn delete_model(&self, id: &str) -> Result<bool>;

    /// Every registered model, oldest first.
    async fn list_models(&self) -> Result<Vec<ModelRecord>>;

    /// Records one model call.
    async fn record_model_call(&self, call: &ModelCall) -> Result<()>;

    /// Totals per model over every call, with the latencies of recent calls.
    async fn model_call_stats(&self) -> Result<Vec<ModelCallStats>>;

    /// Model use of one execution, per step and model, in order of first use.
    async fn execution_usage(&self, execution_id: &str) -> Result<Vec<StepUsage>>;

    /// An execution's events after `after_seq`, oldest first, at most `limit`.
    async fn list_events(
        &self,
        execution_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>>;

    /// Registers a webhook for `kinds` (event kinds, `step.*`, `*`).
    async fn create_webhook(&self, webhook: &WebhookRecord, kinds: &[String]) -> Result<()>;

    /// Every webhook, oldest first.
    async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>>;

    /// Removes a webhook; its pending deliveries are cancelled, its log kept.
    async fn delete_webhook(&self, id: &str) -> Result<bool>;

    /// Leases up to `limit` deliveries that are due, for `lock_ms`.
    async fn claim_deliveries(&self, limit: u32, lock_ms: i64) -> Result<Vec<DeliveryJob>>;

    /// Records what an attempt of a leased delivery did.
    async fn finish_delivery(&self, id: i64, update: &DeliveryUpdate) -> Result<()>;

    /// A webhook's deliveries, newest first.
    async fn list_deliveries(&self, webhook_id: &str, limit: u32) -> Result<Vec<DeliveryRecord>>;

    /// Stores a new API token (its hash only).
    async fn create_token(&self, token: &TokenRecord) -> Result<()>;

    /// A token by id, revoked ones included.
    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>>;

    /// Every token, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;

    /// Revokes a token; `false` when there is no such live token.
    async fn revoke_token(&self, id: &str, now: i64) -> Result<bool>;

    /// Notes that a token was used (at most once a minute is written).
    async fn touch_token(&self, id: &str, now: i64) -> Result<()>;

    /// Executions a token submitted that are queued or running.
    async fn active_executions_of_token(&self, token_id: &str) -> Result<i64>;

    /// Counts for metrics and health: executions by status, the steps of
    /// unfinished executions by status, the queue, the connection pool.
    async fn overview(&self) -> Result<Overview>;
}

/// Opens the store named by a URL (`sqlite://path`, `sqlite::memory:`, `postgres://…`)
/// and runs its migrations.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PostgresStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}

/// `limits.max_steps` of this process.
pub(crate) fn limits_max_steps() -> i64 {
    i64::try_from(orchestrator_core::limits::get().max_steps).unwrap_or(i64::MAX)
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Hides the password of a database URL for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
