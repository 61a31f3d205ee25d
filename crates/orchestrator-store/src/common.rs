//! What both backends share: row types, SQL that is the same on both, and the
//! `Store` implementation itself (a macro, because sqlx's executor bounds do
//! not generalise over databases in a readable way). Each backend provides
//! only the statements that differ (claims, heartbeats) and its connection set-up.

use orchestrator_core::flow::{ExecutionStatus, FlowStep, StepStatus};
use orchestrator_core::model::OnFailure;
use orchestrator_core::plan::PlannedStep;
use serde_json::Value;
use sqlx::types::Json;

use crate::{CheckpointRecord, ExecutionRecord, Result, StepRecord, StoreError};

pub(crate) const INSERT_EXECUTION: &str = "INSERT INTO executions \
    (id, pipeline_id, pipeline_name, status, inputs, options, idempotency_key, request_hash, created_at, updated_at, deadline, token_id) \
    VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $8, $9, $10) \
    ON CONFLICT (idempotency_key) DO NOTHING";

/// The pipeline text and plan, in their own table: written once, and kept
/// out of the executions row that every step updates.
pub(crate) const INSERT_SOURCE: &str =
    "INSERT INTO execution_sources (execution_id, source, plan) VALUES ($1, $2, $3)";

/// Multi-row inserts of steps, dependencies and queue rows (the values follow).
pub(crate) const INSERT_STEPS_PREFIX: &str = "INSERT INTO steps \
    (execution_id, step_id, position, status, max_attempts, depends_on, on_failure, scope, ord, definition) ";
pub(crate) const INSERT_DEPS_PREFIX: &str =
    "INSERT INTO step_deps (execution_id, step_id, depends_on) ";
pub(crate) const ENQUEUE_PREFIX: &str =
    "INSERT INTO step_queue (execution_id, step_id, run_after) ";

pub(crate) const ENQUEUE: &str =
    "INSERT INTO step_queue (execution_id, step_id, run_after) VALUES ($1, $2, $3)";

pub(crate) const SELECT_EXECUTION: &str = "SELECT e.id, e.pipeline_id, e.pipeline_name, e.status, x.source, x.plan, e.inputs, e.options, e.outputs, \
    e.error, e.idempotency_key, e.request_hash, e.created_at, e.started_at, e.finished_at, e.last_event_seq \
    FROM executions e JOIN execution_sources x ON x.execution_id = e.id WHERE e.id = $1";

pub(crate) const SELECT_EXECUTION_BY_KEY: &str = "SELECT e.id, e.pipeline_id, e.pipeline_name, e.status, x.source, x.plan, e.inputs, e.options, e.outputs, \
    e.error, e.idempotency_key, e.request_hash, e.created_at, e.started_at, e.finished_at, e.last_event_seq \
    FROM executions e JOIN execution_sources x ON x.execution_id = e.id WHERE e.idempotency_key = $1";

/// Newest first; every filter optional (`$1` status, `$2` pipeline, `$3`/`$4`
/// cursor, `$5` limit). Without the pipeline text and plan: a page of a
/// listing never needs them, and they can be large.
pub(crate) const LIST_EXECUTIONS: &str = "SELECT id, pipeline_id, pipeline_name, status, inputs, options, outputs, \
    error, idempotency_key, request_hash, created_at, started_at, finished_at, last_event_seq FROM executions \
    WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR pipeline_name = $2) \
    AND ($3 IS NULL OR created_at < $3 OR (created_at = $3 AND id < $4)) \
    ORDER BY created_at DESC, id DESC LIMIT $5";

pub(crate) const SELECT_STEPS: &str = "SELECT execution_id, step_id, position, status, attempt, max_attempts, depends_on, definition, \
    parameters, result, error, error_type, reason, timed_out, started_at, finished_at \
    FROM steps WHERE execution_id = $1 ORDER BY position";

pub(crate) const SELECT_FLOW: &str = "SELECT step_id, status, depends_on, on_failure, scope, ord FROM steps WHERE execution_id = $1 ORDER BY position";

pub(crate) const SELECT_CHECKPOINTS: &str = "SELECT id, execution_id, step_id, attempt, status, parameters, result, error, error_type, \
    started_at, finished_at, created_at, worker FROM checkpoints WHERE execution_id = $1 ORDER BY id";

/// Takes the execution's row lock first, so finishing steps of one execution
/// never race (PostgreSQL row lock; SQLite write lock).
pub(crate) const LOCK_EXECUTION: &str =
    "UPDATE executions SET updated_at = $2 WHERE id = $1 RETURNING status";

/// Removes the queue row only if the lease is still ours (fencing).
pub(crate) const RELEASE_LEASE: &str =
    "DELETE FROM step_queue WHERE execution_id = $1 AND step_id = $2 AND lease_token = $3";

pub(crate) const REQUEUE_FOR_RETRY: &str = "UPDATE step_queue SET locked_by = NULL, lease_token = NULL, locked_until = NULL, \
    run_after = $4 WHERE execution_id = $1 AND step_id = $2 AND lease_token = $3";

pub(crate) const UPDATE_STEP_RETRYING: &str = "UPDATE steps SET status = 'retrying', parameters = $3, error = $4, \
    error_type = $5, timed_out = $6 WHERE execution_id = $1 AND step_id = $2";

pub(crate) const SET_STEP_STATUS: &str = "UPDATE steps SET status = $3, reason = $4, finished_at = $5 WHERE execution_id = $1 AND step_id = $2";

pub(crate) const MARK_READY: &str =
    "UPDATE steps SET status = 'ready' WHERE execution_id = $1 AND step_id = $2";

/// Whether a step runnable now waits unleased in the queue (`$1` now).
pub(crate) const OTHERS_WAITING: &str =
    "SELECT EXISTS (SELECT 1 FROM step_queue WHERE locked_by IS NULL AND run_after <= $1)";

/// Queues a step already leased to a worker (a hand-off).
pub(crate) const ENQUEUE_LEASED: &str = "INSERT INTO step_queue \
    (execution_id, step_id, run_after, locked_by, lease_token, locked_until) VALUES ($1, $2, $3, $4, $5, $6)";

pub(crate) const DEQUEUE: &str = "DELETE FROM step_queue WHERE execution_id = $1 AND step_id = $2";

pub(crate) const FINISH_EXECUTION: &str = "UPDATE executions SET status = $2, outputs = $3, error = $4, finished_at = $5, updated_at = $5 WHERE id = $1";

pub(crate) const NEXT_RUN_AFTER: &str =
    "SELECT MIN(run_after) FROM step_queue WHERE locked_by IS NULL";

#[derive(sqlx::FromRow)]
pub(crate) struct ExecutionRow {
    id: String,
    pipeline_id: String,
    pipeline_name: String,
    status: String,
    /// Absent from listings (empty there).
    #[sqlx(default)]
    source: String,
    /// Absent from listings (null there).
    #[sqlx(default)]
    plan: Json<Value>,
    inputs: Json<Value>,
    options: Json<Value>,
    outputs: Option<Json<Value>>,
    error: Option<String>,
    idempotency_key: Option<String>,
    request_hash: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    last_event_seq: i64,
}

impl TryFrom<ExecutionRow> for ExecutionRecord {
    type Error = StoreError;
    fn try_from(r: ExecutionRow) -> Result<Self> {
        Ok(ExecutionRecord {
            status: ExecutionStatus::parse(&r.status)
                .ok_or_else(|| StoreError::Corrupt(format!("execution status '{}'", r.status)))?,
            id: r.id,
            pipeline_id: r.pipeline_id,
            pipeline_name: r.pipeline_name,
            source: r.source,
            plan: r.plan.0,
            inputs: r.inputs.0,
            options: r.options.0,
            outputs: r.outputs.map(|j| j.0),
            error: r.error,
            idempotency_key: r.idempotency_key,
            request_hash: r.request_hash,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            last_event_seq: r.last_event_seq,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct StepRow {
    execution_id: String,
    step_id: String,
    position: i64,
    status: String,
    attempt: i64,
    max_attempts: i64,
    depends_on: Json<Vec<String>>,
    definition: Json<PlannedStep>,
    parameters: Option<Json<Value>>,
    result: Option<Json<Value>>,
    error: Option<String>,
    error_type: Option<String>,
    reason: Option<String>,
    timed_out: bool,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

impl TryFrom<StepRow> for StepRecord {
    type Error = StoreError;
    fn try_from(r: StepRow) -> Result<Self> {
        Ok(StepRecord {
            status: parse_step_status(&r.status)?,
            execution_id: r.execution_id,
            step_id: r.step_id,
            position: r.position,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            depends_on: r.depends_on.0,
            definition: r.definition.0,
            parameters: r.parameters.map(|j| j.0),
            result: r.result.map(|j| j.0),
            error: r.error,
            error_type: r.error_type,
            reason: r.reason,
            timed_out: r.timed_out,
            started_at: r.started_at,
            finished_at: r.finished_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct FlowRow {
    step_id: String,
    status: String,
    depends_on: Json<Vec<String>>,
    on_failure: Json<OnFailure>,
    scope: String,
    ord: i64,
}

impl TryFrom<FlowRow> for FlowStep {
    type Error = StoreError;
    fn try_from(r: FlowRow) -> Result<Self> {
        Ok(FlowStep {
            status: parse_step_status(&r.status)?,
            id: r.step_id,
            depends_on: r.depends_on.0,
            on_failure: r.on_failure.0,
            scope: r.scope,
            order: u32::try_from(r.ord).unwrap_or(u32::MAX),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CheckpointRow {
    id: i64,
    execution_id: String,
    step_id: String,
    attempt: i64,
    status: String,
    parameters: Option<Json<Value>>,
    result: Option<Json<Value>>,
    error: Option<String>,
    error_type: Option<String>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    created_at: i64,
    worker: Option<String>,
}

impl TryFrom<CheckpointRow> for CheckpointRecord {
    type Error = StoreError;
    fn try_from(r: CheckpointRow) -> Result<Self> {
        Ok(CheckpointRecord {
            status: parse_step_status(&r.status)?,
            id: r.id,
            execution_id: r.execution_id,
            step_id: r.step_id,
            attempt: r.attempt,
            parameters: r.parameters.map(|j| j.0),
            result: r.result.map(|j| j.0),
            error: r.error,
            error_type: r.error_type,
            started_at: r.started_at,
            finished_at: r.finished_at,
            created_at: r.created_at,
            worker: r.worker,
        })
    }
}

pub(crate) const SELECT_CONTEXT: &str = "SELECT status, pipeline_id, inputs, options, created_at, started_at FROM executions WHERE id = $1";

#[derive(sqlx::FromRow)]
pub(crate) struct ContextRow {
    pub status: String,
    pub pipeline_id: String,
    pub inputs: Json<Value>,
    pub options: Json<Value>,
    pub created_at: i64,
    pub started_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct ResultRow {
    pub step_id: String,
    pub status: String,
    pub result: Option<Json<Value>>,
}

/// A claimed queue row joined with its step.
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimRow {
    pub execution_id: String,
    pub step_id: String,
    pub lease_token: String,
    pub lost: i64,
    pub run_after: i64,
}

fn parse_step_status(s: &str) -> Result<StepStatus> {
    StepStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("step status '{s}'")))
}

/// The `Store` methods, written once for both backends.
/// `$db` is the sqlx database type; `$sql` the module with the statements
/// that differ (`CLAIM`, `HEARTBEAT`, `NOW_MS`).
macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:literal) => {
        impl $store {
            /// Inserts steps with their dependency rows (those without
            /// dependencies queued) and counts them as open; returns the queued ids.
            async fn insert_steps(
                tx: &mut sqlx::Transaction<'_, $db>,
                execution_id: &str,
                steps: &[crate::NewStep],
                base_position: i64,
                now: i64,
            ) -> crate::Result<Vec<String>> {
                use crate::common::*;
                use sqlx::types::Json;
                // Many rows per statement: a pipeline of thousands of steps
                // is stored in a few dozen statements, not thousands.
                const ROWS: usize = 200;
                let ready: Vec<String> = steps
                    .iter()
                    .filter(|s| s.planned.depends_on.is_empty())
                    .map(|s| s.planned.id.clone())
                    .collect();
                for (chunk_no, chunk) in steps.chunks(ROWS).enumerate() {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(INSERT_STEPS_PREFIX);
                    insert.push_values(chunk.iter().enumerate(), |mut row, (i, step)| {
                        let position = base_position + (chunk_no * ROWS + i) as i64;
                        let status = if step.planned.depends_on.is_empty() { "ready" } else { "pending" };
                        row.push_bind(execution_id)
                            .push_bind(&step.planned.id)
                            .push_bind(position)
                            .push_bind(status)
                            .push_bind(i64::from(step.max_attempts))
                            .push_bind(Json(&step.planned.depends_on))
                            .push_bind(Json(&step.planned.step.on_failure))
                            .push_bind(&step.planned.scope)
                            .push_bind(i64::from(step.planned.order))
                            .push_bind(Json(&step.planned));
                    });
                    insert.build().execute(&mut **tx).await?;
                }
                let deps: Vec<(&str, &str)> = steps
                    .iter()
                    .flat_map(|s| s.planned.depends_on.iter().map(move |d| (s.planned.id.as_str(), d.as_str())))
                    .collect();
                for chunk in deps.chunks(ROWS * 3) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(INSERT_DEPS_PREFIX);
                    insert.push_values(chunk, |mut row, (step, dep)| {
                        row.push_bind(execution_id).push_bind(*step).push_bind(*dep);
                    });
                    insert.build().execute(&mut **tx).await?;
                }
                for chunk in ready.chunks(ROWS * 3) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(ENQUEUE_PREFIX);
                    insert.push_values(chunk, |mut row, step| {
                        row.push_bind(execution_id).push_bind(step.as_str()).push_bind(now);
                    });
                    insert.build().execute(&mut **tx).await?;
                }
                sqlx::query(ADD_OPEN_STEPS)
                    .bind(execution_id)
                    .bind(steps.len() as i64)
                    .execute(&mut **tx)
                    .await?;
                Ok(ready)
            }

            /// Records an event of the execution in the transaction of the
            /// change it describes.
            async fn emit(
                tx: &mut sqlx::Transaction<'_, $db>,
                execution_id: &str,
                kind: &str,
                step_id: Option<&str>,
                data: serde_json::Value,
                now: i64,
            ) -> crate::Result<()> {
                // One statement: the number comes from the execution's row
                // (locked on PostgreSQL); triggers move the counter and write
                // the webhook outbox.
                let family = format!("{}.*", kind.split('.').next().unwrap_or(kind));
                sqlx::query(INSERT_EVENT)
                    .bind(execution_id)
                    .bind(kind)
                    .bind(family)
                    .bind(step_id)
                    .bind(sqlx::types::Json(&data))
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            /// Makes `step_id` ready: queued for any worker, or with `take`
            /// (a hand-off and the worker whose step settled it) leased to
            /// that worker and started, as a claim would (returned). Its
            /// events are added to `events`, for the caller (who holds the
            /// execution's row) to write.
            async fn ready_step(
                tx: &mut sqlx::Transaction<'_, $db>,
                execution_id: &str,
                step_id: &str,
                take: Option<(crate::Handoff, &str)>,
                events: &mut Vec<(String, String, serde_json::Value)>,
                now: i64,
            ) -> crate::Result<Option<crate::ClaimedStep>> {
                use crate::common::*;
                events.push(("step.ready".to_string(), step_id.to_string(), serde_json::json!({})));
                let Some((handoff, worker)) = take else {
                    sqlx::query(MARK_READY).bind(execution_id).bind(step_id).execute(&mut **tx).await?;
                    sqlx::query(ENQUEUE).bind(execution_id).bind(step_id).bind(now).execute(&mut **tx).await?;
                    return Ok(None);
                };
                let lease_token = uuid::Uuid::new_v4().simple().to_string();
                sqlx::query(ENQUEUE_LEASED)
                    .bind(execution_id)
                    .bind(step_id)
                    .bind(now)
                    .bind(worker)
                    .bind(&lease_token)
                    .bind(now + handoff.lease_ms)
                    .execute(&mut **tx)
                    .await?;
                let row: StepRow = sqlx::query_as(START_STEP)
                    .bind(execution_id)
                    .bind(step_id)
                    .bind(now)
                    .fetch_one(&mut **tx)
                    .await?;
                let record = crate::StepRecord::try_from(row)?;
                events.push((
                    "step.started".to_string(),
                    step_id.to_string(),
                    serde_json::json!({"attempt": record.attempt, "worker": worker}),
                ));
                Ok(Some(crate::ClaimedStep {
                    execution_id: execution_id.to_string(),
                    step_id: step_id.to_string(),
                    lease_token,
                    attempt: record.attempt,
                    max_attempts: record.max_attempts,
                    definition: record.definition,
                    lost: 0,
                    worker: worker.to_string(),
                    ready_at: now,
                    claimed_at: now,
                }))
            }

            /// Records a step's final result: set by set when it only
            /// advances its dependents, else through the whole flow.
            async fn finish_one(
                tx: &mut sqlx::Transaction<'_, $db>,
                step: &crate::ClaimedStep,
                result: crate::StepResult,
                outputs: crate::OutputRenderer<'_>,
                handoff: Option<crate::Handoff>,
                now: i64,
            ) -> crate::Result<crate::FinishOutcome> {
                if crate::common::only_advances_dependents(&result) {
                    let one = [(step.clone(), result)];
                    let mut done = Self::finish_set_in(tx, &one, outputs, handoff, now).await?;
                    return done.pop().unwrap_or_else(|| Err(crate::StoreError::LeaseLost { step: step.step_id.clone() }));
                }
                Self::finish_in(tx, step, result, outputs, handoff, now).await
            }

            /// Ends an unfinished execution: steps not started are cancelled,
            /// running ones are told through their heartbeats.
            async fn stop_execution(
                tx: &mut sqlx::Transaction<'_, $db>,
                id: &str,
                status: &str,
                error: &str,
                now: i64,
            ) -> crate::Result<()> {
                use crate::common::*;
                let cancelled: Vec<String> =
                    sqlx::query_scalar(CANCEL_UNSTARTED).bind(id).bind(now).fetch_all(&mut **tx).await?;
                for step_id in &cancelled {
                    Self::emit(tx, id, "step.cancelled", Some(step_id), serde_json::json!({"reason": "execution_cancelled"}), now).await?;
                }
                sqlx::query(DEQUEUE_UNLEASED).bind(id).execute(&mut **tx).await?;
                sqlx::query(RECOUNT_OPEN).bind(id).execute(&mut **tx).await?;
                sqlx::query(STOP_EXECUTION).bind(id).bind(status).bind(error).bind(now).execute(&mut **tx).await?;
                Self::emit(tx, id, &format!("execution.{status}"), None, serde_json::json!({"status": status, "error": error}), now).await?;
                Ok(())
            }

            /// Takes the execution's lock and ends the step's lease, fenced by
            /// its token ([`crate::StoreError::LeaseLost`] when another worker
            /// holds it now; the dropped transaction rolls back). Returns whether
            /// the execution has ended meanwhile (cancelled or timed out).
            async fn end_lease(
                tx: &mut sqlx::Transaction<'_, $db>,
                step: &crate::ClaimedStep,
                now: i64,
            ) -> crate::Result<bool> {
                use crate::common::*;
                // The queue row first: a claimer that took the step over (after
                // the lease expired) holds that row and then waits for the
                // execution's row; taking them in the other order deadlocks.
                let released = sqlx::query(RELEASE_LEASE)
                    .bind(&step.execution_id)
                    .bind(&step.step_id)
                    .bind(&step.lease_token)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                if released == 0 {
                    // Fenced: another worker holds the step now.
                    return Err(crate::StoreError::LeaseLost { step: step.step_id.clone() });
                }
                let status: Option<String> = sqlx::query_scalar(LOCK_EXECUTION)
                    .bind(&step.execution_id)
                    .bind(now)
                    .fetch_optional(&mut **tx)
                    .await?;
                Ok(matches!(status.as_deref(), Some("cancelled" | "failed" | "succeeded")))
            }

            /// Records a step's final result and advances its execution's
            /// flow, inside `tx` (one step of `finish_step` or `finish_steps`).
            async fn finish_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                step: &crate::ClaimedStep,
                result: crate::StepResult,
                outputs: crate::OutputRenderer<'_>,
                handoff: Option<crate::Handoff>,
                now: i64,
            ) -> crate::Result<crate::FinishOutcome> {
                use crate::common::*;
                use orchestrator_core::flow::{self, Change, FlowStep, Outcome, StepStatus};
                // The lease first (fencing), then this step's own rows, then
                // the execution's row: concurrent finishers of one execution
                // take turns from there on, so the less done after it, the
                // better.
                let one = [(step.clone(), result)];
                if !Self::record_results(tx, &one, now).await?[0] {
                    return Err(crate::StoreError::LeaseLost { step: step.step_id.clone() });
                }
                let [(_, result)] = one;
                // The execution's row: locked (its open steps are counted
                // again below), and whether it was cancelled or timed out
                // while this step ran. Whoever takes it next sees this step's
                // rows committed: statuses read from here on are current.
                let status: String = sqlx::query_scalar(LOCK_EXECUTION)
                    .bind(&step.execution_id)
                    .bind(now)
                    .fetch_optional(&mut **tx)
                    .await?
                    .unwrap_or_default();
                let cancelled = matches!(status.as_str(), "cancelled" | "failed" | "succeeded");
                Self::emit(
                    tx,
                    &step.execution_id,
                    &format!("step.{}", result.status.as_str()),
                    Some(&step.step_id),
                    serde_json::json!({
                        "attempt": step.attempt,
                        "error": result.error,
                        "error_type": result.error_type,
                        "reason": result.reason,
                        "duration_ms": result.finished_at - result.started_at,
                    }),
                    now,
                )
                .await?;
                if cancelled {
                    // The execution was cancelled while this step ran: keep
                    // its result, start nothing new.
                    sqlx::query(RECOUNT_OPEN).bind(&step.execution_id).execute(&mut **tx).await?;
                    return Ok(crate::FinishOutcome { ready: vec![], next: None, execution_finished: None });
                }
                let mut handoff = handoff;
                let mut next = None;
                let rows: Vec<FlowRow> = sqlx::query_as(SELECT_FLOW)
                    .bind(&step.execution_id)
                    .fetch_all(&mut **tx)
                    .await?;
                let mut steps = rows
                    .into_iter()
                    .map(FlowStep::try_from)
                    .collect::<crate::Result<Vec<_>>>()?;
                let outcome = match result.status {
                    StepStatus::Succeeded => Outcome::Succeeded {
                        jump_to: result.jump_to.clone(),
                    },
                    StepStatus::Skipped => Outcome::Skipped {
                        jump_to: result.jump_to.clone(),
                    },
                    _ => Outcome::Failed,
                };
                let advance = flow::advance(&mut steps, &step.step_id, &outcome);
                let mut ready = Vec::new();
                for change in &advance.changes {
                    match change {
                        Change::Ready(id) => {
                            // One hand-off try per finished step.
                            let take = match handoff.take() {
                                Some(h) => {
                                    let waiting: bool = sqlx::query_scalar(OTHERS_WAITING)
                                        .bind(now)
                                        .fetch_one(&mut **tx)
                                        .await?;
                                    (!waiting).then_some((h, step.worker.as_str()))
                                }
                                None => None,
                            };
                            let mut events = Vec::new();
                            match Self::ready_step(tx, &step.execution_id, id, take, &mut events, now).await? {
                                Some(taken) => next = Some(taken),
                                None => ready.push(id.clone()),
                            }
                            Self::emit_steps(tx, &step.execution_id, events, now).await?;
                        }
                        Change::Skipped { step: id, reason }
                        | Change::Cancelled { step: id, reason } => {
                            let status = if matches!(change, Change::Skipped { .. }) {
                                "skipped"
                            } else {
                                "cancelled"
                            };
                            sqlx::query(SET_STEP_STATUS)
                                .bind(&step.execution_id)
                                .bind(id)
                                .bind(status)
                                .bind(reason)
                                .bind(now)
                                .execute(&mut **tx)
                                .await?;
                            sqlx::query(DEQUEUE)
                                .bind(&step.execution_id)
                                .bind(id)
                                .execute(&mut **tx)
                                .await?;
                            Self::emit(
                                tx,
                                &step.execution_id,
                                &format!("step.{status}"),
                                Some(id),
                                serde_json::json!({"reason": reason}),
                                now,
                            )
                            .await?;
                        }
                    }
                }
                sqlx::query(RECOUNT_OPEN)
                    .bind(&step.execution_id)
                    .execute(&mut **tx)
                    .await?;
                let finished = advance.finished;
                if let Some(status) = finished {
                    Self::complete_execution(tx, &step.execution_id, status, outputs, now).await?;
                }
                if !ready.is_empty()
                    && let Some(sql) = NOTIFY_WORK
                {
                    sqlx::query(sql).execute(&mut **tx).await?;
                }
                Ok(crate::FinishOutcome {
                    ready,
                    next,
                    execution_finished: finished,
                })
            }


            /// Inserts events of one execution numbered from `first_seq` on, in
            /// one statement; the caller holds the execution's row.
            async fn insert_events(
                tx: &mut sqlx::Transaction<'_, $db>,
                execution_id: &str,
                first_seq: i64,
                events: Vec<(String, String, serde_json::Value)>,
                now: i64,
            ) -> crate::Result<()> {
                // Rows per statement: far below either backend's limit on
                // bound values.
                const ROWS: usize = 500;
                let mut events = events.into_iter().enumerate().peekable();
                while events.peek().is_some() {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(crate::common::INSERT_EVENTS_PREFIX);
                    insert.push_values(events.by_ref().take(ROWS), |mut row, (n, (kind, step_id, data))| {
                        let family = format!("{}.*", kind.split('.').next().unwrap_or(&kind));
                        row.push_bind(execution_id.to_string())
                            .push_bind(first_seq + n as i64)
                            .push_bind(kind)
                            .push_bind(family)
                            .push_bind(step_id)
                            .push_bind(sqlx::types::Json(data))
                            .push_bind(now);
                    });
                    insert.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Step events of one execution: one statement for one event,
            /// two for many (the execution's row locked, then all of them).
            async fn emit_steps(
                tx: &mut sqlx::Transaction<'_, $db>,
                execution_id: &str,
                mut events: Vec<(String, String, serde_json::Value)>,
                now: i64,
            ) -> crate::Result<()> {
                if events.len() <= 1 {
                    if let Some((kind, step_id, data)) = events.pop() {
                        Self::emit(tx, execution_id, &kind, Some(&step_id), data, now).await?;
                    }
                    return Ok(());
                }
                let last: i64 = sqlx::query_scalar(LAST_EVENT_SEQ).bind(execution_id).fetch_one(&mut **tx).await?;
                Self::insert_events(tx, execution_id, last + 1, events, now).await
            }

            /// The final status of an execution whose steps are all closed
            /// (`None` while a step may still run).
            async fn settled_status(
                tx: &mut sqlx::Transaction<'_, $db>,
                execution_id: &str,
            ) -> crate::Result<Option<orchestrator_core::flow::ExecutionStatus>> {
                use crate::common::*;
                let rows: Vec<FlowRow> = sqlx::query_as(SELECT_FLOW).bind(execution_id).fetch_all(&mut **tx).await?;
                let steps = rows
                    .into_iter()
                    .map(orchestrator_core::flow::FlowStep::try_from)
                    .collect::<crate::Result<Vec<_>>>()?;
                Ok(orchestrator_core::flow::finished_status(&steps))
            }

            /// Ends the leases of finished steps (fencing, one statement) and
            /// records the results of those still held: step rows and
            /// checkpoints, a statement each. Returns, in batch order, whether
            /// each lease was still held (the others were not touched).
            async fn record_results(
                tx: &mut sqlx::Transaction<'_, $db>,
                batch: &[(crate::ClaimedStep, crate::StepResult)],
                now: i64,
            ) -> crate::Result<Vec<bool>> {
                use crate::common::*;
                use sqlx::types::Json;
                let mut release = sqlx::QueryBuilder::<$db>::new(RELEASE_MANY_PREFIX);
                release.push_values(batch, |mut row, (step, _)| {
                    row.push_bind(&step.execution_id).push_bind(&step.step_id).push_bind(&step.lease_token);
                });
                release.push(RELEASE_MANY_SUFFIX);
                let released: std::collections::HashSet<(String, String)> =
                    release.build_query_as::<(String, String)>().fetch_all(&mut **tx).await?.into_iter().collect();
                let is_held: Vec<bool> = batch
                    .iter()
                    .map(|(step, _)| released.contains(&(step.execution_id.clone(), step.step_id.clone())))
                    .collect();
                let held: Vec<&(crate::ClaimedStep, crate::StepResult)> =
                    batch.iter().zip(&is_held).filter(|(_, held)| **held).map(|(item, _)| item).collect();
                if held.is_empty() {
                    return Ok(is_held);
                }
                let mut update = sqlx::QueryBuilder::<$db>::new(UPDATE_STEP_RESULTS_PREFIX);
                update.push_values(&held, |mut row, (step, result)| {
                    row.push_bind(&step.execution_id)
                        .push_bind(&step.step_id)
                        .push_bind(result.status.as_str())
                        .push_bind(result.parameters.as_ref().map(Json))
                        .push_bind(result.envelope.as_ref().map(Json))
                        .push_bind(&result.error)
                        .push_bind(&result.error_type)
                        .push_bind(&result.reason)
                        .push_bind(result.timed_out)
                        .push_bind(result.finished_at);
                });
                update.push(UPDATE_STEP_RESULTS_SUFFIX);
                update.build().execute(&mut **tx).await?;
                let attempts: Vec<(&crate::ClaimedStep, &str, &crate::StepResult)> =
                    held.iter().map(|(step, result)| (step, result.status.as_str(), result)).collect();
                Self::insert_checkpoints(tx, &attempts, now).await?;
                Ok(is_held)
            }

            /// Records attempts of steps (step, status, result), one
            /// statement for all.
            async fn insert_checkpoints(
                tx: &mut sqlx::Transaction<'_, $db>,
                attempts: &[(&crate::ClaimedStep, &str, &crate::StepResult)],
                now: i64,
            ) -> crate::Result<()> {
                use sqlx::types::Json;
                let mut insert = sqlx::QueryBuilder::<$db>::new(crate::common::INSERT_CHECKPOINTS_PREFIX);
                insert.push_values(attempts, |mut row, (step, status, result)| {
                    row.push_bind(&step.execution_id)
                        .push_bind(&step.step_id)
                        .push_bind(step.attempt)
                        .push_bind(*status)
                        .push_bind(result.parameters.as_ref().map(Json))
                        .push_bind(result.envelope.as_ref().map(Json))
                        .push_bind(&result.error)
                        .push_bind(&result.error_type)
                        .push_bind(result.started_at)
                        .push_bind(result.finished_at)
                        .push_bind(now)
                        .push_bind(&step.worker);
                });
                insert.build().execute(&mut **tx).await?;
                Ok(())
            }

            /// `finish_in` for a batch whose steps all succeeded or were
            /// skipped without a jump (only their dependents can change): the
            /// same writes, in a few multi-row statements, each execution's
            /// row locked once. Results in batch order; a step whose lease is
            /// gone is refused without touching the others.
            async fn finish_set_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                batch: &[(crate::ClaimedStep, crate::StepResult)],
                outputs: crate::OutputRenderer<'_>,
                handoff: Option<crate::Handoff>,
                now: i64,
            ) -> crate::Result<Vec<crate::Result<crate::FinishOutcome>>> {
                use crate::common::*;
                let held = Self::record_results(tx, batch, now).await?;
                let mut results: Vec<crate::Result<crate::FinishOutcome>> = batch
                    .iter()
                    .map(|(step, _)| Err(crate::StoreError::LeaseLost { step: step.step_id.clone() }))
                    .collect();
                // Held steps by execution, each in batch order.
                let mut by_execution: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
                for (i, (step, _)) in batch.iter().enumerate() {
                    if held[i] {
                        by_execution.entry(step.execution_id.as_str()).or_default().push(i);
                    }
                }
                if by_execution.is_empty() {
                    return Ok(results);
                }
                let mut any_ready = false;
                for (execution_id, idxs) in &by_execution {
                    // The execution's row: locked once for all its steps here.
                    let (status, open, last_seq): (String, i64, i64) = sqlx::query_as(CLOSE_STEPS)
                        .bind(*execution_id)
                        .bind(now)
                        .bind(idxs.len() as i64)
                        .fetch_one(&mut **tx)
                        .await?;
                    let mut events: Vec<(String, String, serde_json::Value)> = idxs
                        .iter()
                        .map(|&i| {
                            let (step, result) = &batch[i];
                            (
                                format!("step.{}", result.status.as_str()),
                                step.step_id.clone(),
                                serde_json::json!({
                                    "attempt": step.attempt,
                                    "error": result.error,
                                    "error_type": result.error_type,
                                    "reason": result.reason,
                                    "duration_ms": result.finished_at - result.started_at,
                                }),
                            )
                        })
                        .collect();
                    let mut ready: Vec<Vec<String>> = vec![Vec::new(); idxs.len()];
                    let mut next: Vec<Option<crate::ClaimedStep>> = vec![None; idxs.len()];
                    let mut finished = None;
                    if matches!(status.as_str(), "cancelled" | "failed" | "succeeded") {
                        // Cancelled while these steps ran: keep their
                        // results, start nothing new.
                        Self::insert_events(tx, execution_id, last_seq + 1, std::mem::take(&mut events), now).await?;
                        sqlx::query(RECOUNT_OPEN).bind(*execution_id).execute(&mut **tx).await?;
                    } else {
                        let mut query = sqlx::QueryBuilder::<$db>::new(READY_DEPENDENTS_PREFIX);
                        query.push_bind(now).push(READY_DEPENDENTS_MIDDLE).push_bind(*execution_id).push(" AND d.depends_on IN (");
                        let mut list = query.separated(", ");
                        for &i in idxs {
                            list.push_bind(&batch[i].0.step_id);
                        }
                        list.push_unseparated(") ORDER BY s.position");
                        let pairs: Vec<(String, String, bool)> = query.build_query_as().fetch_all(&mut **tx).await?;
                        let others_waiting = pairs.first().is_some_and(|p| p.2);
                        let mut tries: Vec<Option<crate::Handoff>> =
                            vec![if others_waiting { None } else { handoff }; idxs.len()];
                        let mut seen = std::collections::HashSet::new();
                        for (candidate, _, _) in &pairs {
                            if !seen.insert(candidate.as_str()) {
                                continue;
                            }
                            // Its dependencies finished here, in batch order:
                            // the first with its hand-off unused takes it.
                            let deps: Vec<usize> = pairs
                                .iter()
                                .filter(|(d, _, _)| d == candidate)
                                .filter_map(|(_, dep, _)| idxs.iter().position(|&i| &batch[i].0.step_id == dep))
                                .collect();
                            let k = deps.iter().copied().find(|&k| tries[k].is_some()).unwrap_or(deps[0]);
                            let take = tries[k].take().map(|h| (h, batch[idxs[k]].0.worker.as_str()));
                            match Self::ready_step(tx, execution_id, candidate, take, &mut events, now).await? {
                                Some(taken) => next[k] = Some(taken),
                                None => {
                                    ready[k].push(candidate.clone());
                                    any_ready = true;
                                }
                            }
                        }
                        Self::insert_events(tx, execution_id, last_seq + 1, std::mem::take(&mut events), now).await?;
                        if open <= 0 {
                            finished = Self::settled_status(tx, execution_id).await?;
                            if let Some(status) = finished {
                                Self::complete_execution(tx, execution_id, status, outputs, now).await?;
                            }
                        }
                    }
                    let last = idxs.len() - 1;
                    for (k, (&i, (ready, next))) in idxs.iter().zip(ready.into_iter().zip(next)).enumerate() {
                        results[i] = Ok(crate::FinishOutcome {
                            ready,
                            next,
                            execution_finished: if k == last { finished } else { None },
                        });
                    }
                }
                if any_ready && let Some(sql) = NOTIFY_WORK {
                    sqlx::query(sql).execute(&mut **tx).await?;
                }
                Ok(results)
            }

            /// Ends an execution whose steps are all settled: renders its
            /// outputs, stores its final status and emits the event.
            async fn complete_execution(
                tx: &mut sqlx::Transaction<'_, $db>,
                execution_id: &str,
                status: orchestrator_core::flow::ExecutionStatus,
                outputs: crate::OutputRenderer<'_>,
                now: i64,
            ) -> crate::Result<()> {
                use crate::common::*;
                use orchestrator_core::flow::StepStatus;
                use sqlx::types::Json;
                let rows: Vec<StepRow> = sqlx::query_as(SELECT_STEPS)
                    .bind(execution_id)
                    .fetch_all(&mut **tx)
                    .await?;
                let records = rows
                    .into_iter()
                    .map(crate::StepRecord::try_from)
                    .collect::<crate::Result<Vec<_>>>()?;
                let exec_row: ExecutionRow = sqlx::query_as(SELECT_EXECUTION)
                    .bind(execution_id)
                    .fetch_one(&mut **tx)
                    .await?;
                let execution = crate::ExecutionRecord::try_from(exec_row)?;
                let (rendered, error) = outputs(&execution, &records);
                let error = error.or_else(|| {
                    records
                        .iter()
                        .find(|r| r.status == StepStatus::Failed)
                        .map(|r| {
                            format!(
                                "step '{}' failed: {}",
                                r.step_id,
                                r.error.clone().unwrap_or_default()
                            )
                        })
                });
                sqlx::query(FINISH_EXECUTION)
                    .bind(execution_id)
                    .bind(status.as_str())
                    .bind(rendered.as_ref().map(Json))
                    .bind(&error)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                Self::emit(
                    tx,
                    execution_id,
                    &format!("execution.{}", status.as_str()),
                    None,
                    serde_json::json!({"status": status.as_str(), "error": error}),
                    now,
                )
                .await?;
                Ok(())
            }

            /// Records one attempt of a step.
            async fn insert_checkpoint(
                tx: &mut sqlx::Transaction<'_, $db>,
                step: &crate::ClaimedStep,
                status: &str,
                result: &crate::StepResult,
                now: i64,
            ) -> crate::Result<()> {
                Self::insert_checkpoints(tx, &[(step, status, result)], now).await
            }
        }

        #[async_trait::async_trait]
        impl crate::Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> crate::Result<()> {
                sqlx::query("SELECT 1 FROM executions LIMIT 1")
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn create_execution(
                &self,
                new: crate::NewExecution,
            ) -> crate::Result<(crate::ExecutionRecord, bool)> {
                use crate::common::*;
                use sqlx::types::Json;
                let now = crate::now_ms();
                let _writer = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let inserted = sqlx::query(INSERT_EXECUTION)
                    .bind(&new.id)
                    .bind(&new.pipeline_id)
                    .bind(&new.pipeline_name)
                    .bind(Json(&new.inputs))
                    .bind(Json(&new.options))
                    .bind(&new.idempotency_key)
                    .bind(&new.request_hash)
                    .bind(now)
                    .bind(new.timeout_ms.map(|t| now.saturating_add(t)))
                    .bind(&new.token_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if inserted == 0 {
                    // The idempotency key is taken.
                    tx.rollback().await?;
                    let key = new.idempotency_key.clone().unwrap_or_default();
                    let row: ExecutionRow = sqlx::query_as(SELECT_EXECUTION_BY_KEY)
                        .bind(&key)
                        .fetch_one(&self.pool)
                        .await?;
                    let existing = crate::ExecutionRecord::try_from(row)?;
                    return if existing.request_hash == new.request_hash {
                        Ok((existing, false))
                    } else {
                        Err(crate::StoreError::IdempotencyConflict(key))
                    };
                }
                sqlx::query(INSERT_SOURCE)
                    .bind(&new.id)
                    .bind(&new.source)
                    .bind(Json(&new.plan))
                    .execute(&mut *tx)
                    .await?;
                Self::insert_steps(&mut tx, &new.id, &new.steps, 0, now).await?;
                Self::emit(
                    &mut tx,
                    &new.id,
                    "execution.queued",
                    None,
                    serde_json::json!({"pipeline": new.pipeline_name, "steps": new.steps.len()}),
                    now,
                )
                .await?;
                if let Some(sql) = NOTIFY_WORK {
                    sqlx::query(sql).execute(&mut *tx).await?;
                }
                let row: ExecutionRow = sqlx::query_as(SELECT_EXECUTION)
                    .bind(&new.id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok((crate::ExecutionRecord::try_from(row)?, true))
            }

            async fn get_execution(
                &self,
                id: &str,
            ) -> crate::Result<Option<crate::ExecutionRecord>> {
                let row: Option<crate::common::ExecutionRow> =
                    sqlx::query_as(crate::common::SELECT_EXECUTION)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(crate::ExecutionRecord::try_from).transpose()
            }

            async fn list_executions(
                &self,
                filter: &crate::ExecutionFilter,
            ) -> crate::Result<Vec<crate::ExecutionRecord>> {
                let rows: Vec<crate::common::ExecutionRow> =
                    sqlx::query_as(crate::common::LIST_EXECUTIONS)
                        .bind(filter.status.map(|s| s.as_str()))
                        .bind(filter.pipeline.as_deref())
                        .bind(filter.before.as_ref().map(|b| b.0))
                        .bind(filter.before.as_ref().map(|b| b.1.as_str()))
                        .bind(i64::from(filter.limit.max(1)))
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter()
                    .map(crate::ExecutionRecord::try_from)
                    .collect()
            }

            async fn list_steps(
                &self,
                execution_id: &str,
            ) -> crate::Result<Vec<crate::StepRecord>> {
                let rows: Vec<crate::common::StepRow> = sqlx::query_as(crate::common::SELECT_STEPS)
                    .bind(execution_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(crate::StepRecord::try_from).collect()
            }

            async fn list_checkpoints(
                &self,
                execution_id: &str,
            ) -> crate::Result<Vec<crate::CheckpointRecord>> {
                let rows: Vec<crate::common::CheckpointRow> =
                    sqlx::query_as(crate::common::SELECT_CHECKPOINTS)
                        .bind(execution_id)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter()
                    .map(crate::CheckpointRecord::try_from)
                    .collect()
            }

            async fn claim_steps(
                &self,
                worker: &str,
                limit: u32,
                lease_ms: i64,
            ) -> crate::Result<Vec<crate::ClaimedStep>> {
                if limit == 0 {
                    return Ok(vec![]);
                }
                let now = crate::now_ms();
                let _writer = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let mut claimed: Vec<crate::common::ClaimRow> = sqlx::query_as(CLAIM)
                    .bind(worker)
                    .bind(now)
                    .bind(now + lease_ms)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?;
                // Executions' rows are locked in one order by every claimer.
                claimed.sort_by(|a, b| (&a.execution_id, &a.step_id).cmp(&(&b.execution_id, &b.step_id)));
                // Every step row first (one statement); then each
                // execution's row (locked by its events), as briefly as can be.
                let mut rows: std::collections::HashMap<(String, String), crate::StepRecord> =
                    std::collections::HashMap::with_capacity(claimed.len());
                // 500 rows per statement (a claim may be as large as the
                // worker's slots).
                for chunk in claimed.chunks(500) {
                    let mut start = sqlx::QueryBuilder::<$db>::new(crate::common::START_STEPS_PREFIX);
                    start.push_values(chunk, |mut row, c| {
                        row.push_bind(&c.execution_id).push_bind(&c.step_id);
                    });
                    start
                        .push(crate::common::START_STEPS_MIDDLE)
                        .push_bind(now)
                        .push(crate::common::START_STEPS_SUFFIX);
                    let started: Vec<crate::common::StepRow> = start.build_query_as().fetch_all(&mut *tx).await?;
                    for row in started {
                        let record = crate::StepRecord::try_from(row)?;
                        rows.insert((record.execution_id.clone(), record.step_id.clone()), record);
                    }
                }
                let mut out: Vec<crate::ClaimedStep> = Vec::with_capacity(claimed.len());
                for c in claimed {
                    let step = rows.remove(&(c.execution_id.clone(), c.step_id.clone())).ok_or_else(|| {
                        crate::StoreError::Corrupt(format!("claimed step '{}' has no row", c.step_id))
                    })?;
                    out.push(crate::ClaimedStep {
                        execution_id: c.execution_id,
                        step_id: c.step_id,
                        lease_token: c.lease_token,
                        attempt: step.attempt,
                        max_attempts: step.max_attempts,
                        definition: step.definition,
                        lost: c.lost,
                        worker: worker.to_string(),
                        ready_at: c.run_after,
                        claimed_at: now,
                    });
                }
                // Each execution (claims come sorted by it): started once,
                // then its steps' events together.
                for group in out.chunk_by(|p, q| p.execution_id == q.execution_id) {
                    let execution_id = &group[0].execution_id;
                    let started = sqlx::query(crate::common::START_EXECUTION)
                        .bind(execution_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if started == 1 {
                        Self::emit(&mut tx, execution_id, "execution.started", None, serde_json::json!({"status": "running"}), now).await?;
                    }
                    let events = group
                        .iter()
                        .map(|c| {
                            (
                                "step.started".to_string(),
                                c.step_id.clone(),
                                serde_json::json!({"attempt": c.attempt, "worker": worker}),
                            )
                        })
                        .collect();
                    Self::emit_steps(&mut tx, execution_id, events, now).await?;
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn heartbeat(&self, tokens: &[String], lease_ms: i64) -> crate::Result<crate::Heartbeat> {
                if tokens.is_empty() {
                    return Ok(crate::Heartbeat::default());
                }
                let held: Vec<String> = sqlx::query_scalar(HEARTBEAT)
                    .bind(crate::now_ms() + lease_ms)
                    .bind(heartbeat_tokens(tokens))
                    .fetch_all(&self.pool)
                    .await?;
                let cancelled: Vec<String> = sqlx::query_scalar(CANCELLED_LEASES)
                    .bind(heartbeat_tokens(tokens))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(crate::Heartbeat { held, cancelled })
            }

            async fn reap_expired_leases(&self) -> crate::Result<u64> {
                let now = crate::now_ms();
                let _writer = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let mut reaped: Vec<(String, String)> = sqlx::query_as(REAP).bind(now).fetch_all(&mut *tx).await?;
                reaped.sort();
                for (execution_id, step_id) in &reaped {
                    sqlx::query(crate::common::BACK_TO_READY).bind(execution_id).bind(step_id).execute(&mut *tx).await?;
                    Self::emit(&mut tx, execution_id, "step.ready", Some(step_id), serde_json::json!({"reason": "worker_lost"}), now).await?;
                }
                if !reaped.is_empty()
                    && let Some(sql) = NOTIFY_WORK
                {
                    sqlx::query(sql).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(reaped.len() as u64)
            }

            async fn release_leases(&self, tokens: &[String]) -> crate::Result<u64> {
                if tokens.is_empty() {
                    return Ok(0);
                }
                let now = crate::now_ms();
                let _writer = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let mut released: Vec<(String, String)> =
                    sqlx::query_as(RELEASE).bind(heartbeat_tokens(tokens)).bind(now).fetch_all(&mut *tx).await?;
                released.sort();
                for (execution_id, step_id) in &released {
                    sqlx::query(crate::common::BACK_TO_READY_UNCOUNTED)
                        .bind(execution_id)
                        .bind(step_id)
                        .execute(&mut *tx)
                        .await?;
                    Self::emit(&mut tx, execution_id, "step.ready", Some(step_id), serde_json::json!({"reason": "worker_stopped"}), now).await?;
                }
                if !released.is_empty()
                    && let Some(sql) = NOTIFY_WORK
                {
                    sqlx::query(sql).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(released.len() as u64)
            }

            async fn expire_idempotency_keys(&self, before_ms: i64) -> crate::Result<u64> {
                let _writer = self.write_guard().await;
                let done = sqlx::query(crate::common::EXPIRE_KEYS).bind(before_ms).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn expire_deadlines(&self) -> crate::Result<Vec<String>> {
                use crate::common::*;
                let now = crate::now_ms();
                // Looked at often: a read first, the write turn only when due.
                let due: Option<(String, i64, i64)> =
                    sqlx::query_as(OVERDUE_EXECUTIONS).bind(now).fetch_optional(&self.pool).await?;
                if due.is_none() {
                    return Ok(Vec::new());
                }
                let _writer = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let overdue: Vec<(String, i64, i64)> =
                    sqlx::query_as(OVERDUE_EXECUTIONS).bind(now).fetch_all(&mut *tx).await?;
                for (id, created_at, deadline) in &overdue {
                    sqlx::query(LOCK_EXECUTION).bind(id).bind(now).execute(&mut *tx).await?;
                    let error = format!("execution timed out after {} s", (deadline - created_at) / 1000);
                    Self::stop_execution(&mut tx, id, "failed", &error, now).await?;
                }
                tx.commit().await?;
                Ok(overdue.into_iter().map(|(id, _, _)| id).collect())
            }

            async fn maintain(&self) -> crate::Result<()> {
                maintain(&self.pool).await
            }

            async fn queue_depth(&self) -> crate::Result<i64> {
                Ok(sqlx::query_scalar(crate::common::QUEUE_DEPTH).fetch_one(&self.pool).await?)
            }

            async fn finish_step(
                &self,
                step: &crate::ClaimedStep,
                result: crate::StepResult,
                outputs: crate::OutputRenderer<'_>,
                handoff: Option<crate::Handoff>,
            ) -> crate::Result<crate::FinishOutcome> {
                let now = crate::now_ms();
                let _writer = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let outcome = Self::finish_one(&mut tx, step, result, outputs, handoff, now).await?;
                tx.commit().await?;
                Ok(outcome)
            }

            async fn finish_steps(
                &self,
                batch: Vec<(crate::ClaimedStep, crate::StepResult)>,
                outputs: crate::OutputRenderer<'_>,
                handoff: Option<crate::Handoff>,
            ) -> crate::Result<Vec<crate::Result<crate::FinishOutcome>>> {
                let now = crate::now_ms();
                let _writer = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                // Steps that only advance their dependents (the common case)
                // are written set by set; anything else one by one.
                if batch.len() > 1 && batch.iter().all(|(_, r)| crate::common::only_advances_dependents(r)) {
                    let done = Self::finish_set_in(&mut tx, &batch, outputs, handoff, now).await?;
                    tx.commit().await?;
                    return Ok(done);
                }
                let mut done = Vec::with_capacity(batch.len());
                for (step, result) in batch {
                    match Self::finish_one(&mut tx, &step, result, outputs, handoff, now).await {
                        Ok(outcome) => done.push(Ok(outcome)),
                        // Refused before writing anything (the lease is the
                        // first thing checked): the others go on.
                        Err(e @ crate::StoreError::LeaseLost { .. }) => done.push(Err(e)),
                        // Anything else undoes the whole batch (dropping the
                        // transaction rolls it back); the caller writes the
                        // steps one by one to learn which one failed.
                        Err(e) => return Err(e),
                    }
                }
                tx.commit().await?;
                Ok(done)
            }

            async fn expand_step(
                &self,
                step: &crate::ClaimedStep,
                container: &orchestrator_core::plan::PlannedStep,
                new_steps: Vec<crate::NewStep>,
                wait_for: &[String],
            ) -> crate::Result<Vec<String>> {
                use crate::common::*;
                use sqlx::types::Json;
                let now = crate::now_ms();
                let _writer = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                // Cancelled or timed out while this step ran?
                let cancelled = Self::end_lease(&mut tx, step, now).await?;
                if cancelled {
                    sqlx::query(SET_STEP_STATUS)
                        .bind(&step.execution_id)
                        .bind(&step.step_id)
                        .bind("cancelled")
                        .bind("execution_cancelled")
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(RECOUNT_OPEN).bind(&step.execution_id).execute(&mut *tx).await?;
                    tx.commit().await?;
                    return Ok(vec![]);
                }
                let base: Option<i64> = sqlx::query_scalar(MAX_POSITION)
                    .bind(&step.execution_id)
                    .fetch_one(&mut *tx)
                    .await?;
                let base = base.unwrap_or(0) + 1;
                // Every loop level counts: nested loops expanding at run
                // time cannot take an execution past the step limit.
                let max_steps = orchestrator_core::limits::get().max_steps;
                let existing = usize::try_from(base).unwrap_or(usize::MAX);
                if existing.saturating_add(new_steps.len()) > max_steps {
                    return Err(crate::StoreError::LimitExceeded(format!(
                        "the loop would add {} steps to the {existing} its execution has; an execution may have at most {max_steps} (limits.max_steps)",
                        new_steps.len()
                    )));
                }
                let ready =
                    Self::insert_steps(&mut tx, &step.execution_id, &new_steps, base, now).await?;
                let added: Vec<&str> = new_steps.iter().map(|s| s.planned.id.as_str()).collect();
                Self::emit(
                    &mut tx,
                    &step.execution_id,
                    "step.expanded",
                    Some(&step.step_id),
                    serde_json::json!({"added": added, "ready": ready}),
                    now,
                )
                .await?;
                sqlx::query(REPLACE_DEPS_DELETE)
                    .bind(&step.execution_id)
                    .bind(&step.step_id)
                    .execute(&mut *tx)
                    .await?;
                for dep in wait_for {
                    sqlx::query(INSERT_DEP)
                        .bind(&step.execution_id)
                        .bind(&step.step_id)
                        .bind(dep)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(WAIT_FOR_ITERATIONS)
                    .bind(&step.execution_id)
                    .bind(&step.step_id)
                    .bind(Json(wait_for))
                    .bind(Json(container))
                    .execute(&mut *tx)
                    .await?;
                if let Some(sql) = NOTIFY_WORK {
                    sqlx::query(sql).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(ready)
            }

            async fn cancel_execution(&self, id: &str) -> crate::Result<Option<crate::ExecutionRecord>> {
                use crate::common::*;
                let now = crate::now_ms();
                let _writer = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let status: Option<String> =
                    sqlx::query_scalar(LOCK_EXECUTION).bind(id).bind(now).fetch_optional(&mut *tx).await?;
                let Some(status) = status else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                if !matches!(status.as_str(), "succeeded" | "failed" | "cancelled") {
                    Self::stop_execution(&mut tx, id, "cancelled", "cancelled by request", now).await?;
                }
                let row: ExecutionRow = sqlx::query_as(SELECT_EXECUTION).bind(id).fetch_one(&mut *tx).await?;
                tx.commit().await?;
                Ok(Some(crate::ExecutionRecord::try_from(row)?))
            }

            async fn recover_execution(&self, id: &str, from: Option<&str>) -> crate::Result<Option<Vec<String>>> {
                use crate::common::*;
                use orchestrator_core::flow::{self, FlowStep};
                use sqlx::types::Json;
                let now = crate::now_ms();
                let _writer = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let status: Option<String> =
                    sqlx::query_scalar(LOCK_EXECUTION).bind(id).bind(now).fetch_optional(&mut *tx).await?;
                let Some(status) = status else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                if !matches!(status.as_str(), "succeeded" | "failed" | "cancelled") {
                    tx.rollback().await?;
                    return Err(crate::StoreError::Conflict(format!(
                        "execution '{id}' is {status}; only a finished execution can be recovered"
                    )));
                }
                let exec_row: ExecutionRow = sqlx::query_as(SELECT_EXECUTION).bind(id).fetch_one(&mut *tx).await?;
                let execution = crate::ExecutionRecord::try_from(exec_row)?;
                let rows: Vec<StepRow> = sqlx::query_as(SELECT_STEPS).bind(id).fetch_all(&mut *tx).await?;
                let steps = rows.into_iter().map(crate::StepRecord::try_from).collect::<crate::Result<Vec<_>>>()?;
                let plan = crate::common::plan_steps(&execution.plan)?;
                let reset = crate::common::steps_to_rerun(&steps, from)?;
                if reset.is_empty() {
                    tx.rollback().await?;
                    return Err(crate::StoreError::Conflict(format!(
                        "execution '{id}' has nothing to recover: every step succeeded (name a step to run again from)"
                    )));
                }
                for step in steps.iter().filter(|s| reset.contains(&s.step_id)) {
                    // Loop steps go back to their planned form; iterations they
                    // added at run time are removed and will be expanded again.
                    let definition = plan.get(&step.step_id).cloned().unwrap_or_else(|| step.definition.clone());
                    let runtime_loop = plan.contains_key(&step.step_id)
                        && matches!(definition.kind, orchestrator_core::StepKind::ForEach | orchestrator_core::StepKind::While);
                    if runtime_loop {
                        let prefix = format!("{}_", step.step_id);
                        for child in steps.iter().filter(|c| c.step_id.starts_with(&prefix) && !plan.contains_key(&c.step_id)) {
                            sqlx::query(DELETE_STEP_DEPS).bind(id).bind(&child.step_id).execute(&mut *tx).await?;
                            sqlx::query(DEQUEUE).bind(id).bind(&child.step_id).execute(&mut *tx).await?;
                            sqlx::query(DELETE_STEP).bind(id).bind(&child.step_id).execute(&mut *tx).await?;
                        }
                    }
                    sqlx::query(RESET_STEP)
                        .bind(id)
                        .bind(&step.step_id)
                        .bind(Json(&definition.depends_on))
                        .bind(Json(&definition))
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(DEQUEUE).bind(id).bind(&step.step_id).execute(&mut *tx).await?;
                    sqlx::query(REPLACE_DEPS_DELETE).bind(id).bind(&step.step_id).execute(&mut *tx).await?;
                    for dep in &definition.depends_on {
                        sqlx::query(INSERT_DEP).bind(id).bind(&step.step_id).bind(dep).execute(&mut *tx).await?;
                    }
                }
                let rows: Vec<FlowRow> = sqlx::query_as(SELECT_FLOW).bind(id).fetch_all(&mut *tx).await?;
                let flow_steps = rows.into_iter().map(FlowStep::try_from).collect::<crate::Result<Vec<_>>>()?;
                let mut events = Vec::new();
                for ready in flow::runnable(&flow_steps) {
                    Self::ready_step(&mut tx, id, &ready, None, &mut events, now).await?;
                }
                Self::emit_steps(&mut tx, id, events, now).await?;
                sqlx::query(RECOUNT_OPEN).bind(id).execute(&mut *tx).await?;
                sqlx::query(REOPEN_EXECUTION).bind(id).bind(now).execute(&mut *tx).await?;
                let mut rerun: Vec<&String> = reset.iter().collect();
                rerun.sort_by_key(|r| steps.iter().position(|s| &s.step_id == *r));
                Self::emit(&mut tx, id, "execution.recovered", None, serde_json::json!({"from_checkpoint": from, "rerun": rerun}), now).await?;
                if let Some(sql) = NOTIFY_WORK {
                    sqlx::query(sql).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                let mut reset: Vec<String> = reset.into_iter().collect();
                reset.sort_by_key(|r| steps.iter().position(|s| &s.step_id == r));
                Ok(Some(reset))
            }

            async fn retry_step(
                &self,
                step: &crate::ClaimedStep,
                result: crate::StepResult,
                delay_ms: i64,
            ) -> crate::Result<()> {
                use crate::common::*;
                use sqlx::types::Json;
                let now = crate::now_ms();
                let _writer = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let requeued = sqlx::query(REQUEUE_FOR_RETRY)
                    .bind(&step.execution_id)
                    .bind(&step.step_id)
                    .bind(&step.lease_token)
                    .bind(now + delay_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if requeued == 0 {
                    tx.rollback().await?;
                    return Err(crate::StoreError::LeaseLost {
                        step: step.step_id.clone(),
                    });
                }
                sqlx::query(UPDATE_STEP_RETRYING)
                    .bind(&step.execution_id)
                    .bind(&step.step_id)
                    .bind(result.parameters.as_ref().map(Json))
                    .bind(&result.error)
                    .bind(&result.error_type)
                    .bind(result.timed_out)
                    .execute(&mut *tx)
                    .await?;
                Self::insert_checkpoint(&mut tx, step, "failed", &result, now).await?;
                Self::emit(
                    &mut tx,
                    &step.execution_id,
                    "step.retrying",
                    Some(&step.step_id),
                    serde_json::json!({
                        "attempt": step.attempt,
                        "error": result.error,
                        "error_type": result.error_type,
                        "retry_in_ms": delay_ms,
                    }),
                    now,
                )
                .await?;
                if let Some(sql) = NOTIFY_WORK {
                    sqlx::query(sql).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn step_context(
                &self,
                execution_id: &str,
                step_ids: &[String],
            ) -> crate::Result<Option<crate::StepContext>> {
                use crate::common::*;
                let row: Option<ContextRow> = sqlx::query_as(SELECT_CONTEXT)
                    .bind(execution_id)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let results: Vec<ResultRow> = if step_ids.is_empty() {
                    vec![]
                } else {
                    sqlx::query_as(SELECT_RESULTS)
                        .bind(execution_id)
                        .bind(sqlx::types::Json(step_ids))
                        .fetch_all(&self.pool)
                        .await?
                };
                Ok(Some(crate::StepContext {
                    status: orchestrator_core::flow::ExecutionStatus::parse(&row.status)
                        .ok_or_else(|| {
                            crate::StoreError::Corrupt(format!("execution status '{}'", row.status))
                        })?,
                    pipeline_id: row.pipeline_id,
                    inputs: row.inputs.0,
                    options: row.options.0,
                    created_at: row.created_at,
                    started_at: row.started_at,
                    results: results
                        .into_iter()
                        .map(|r| {
                            let status = orchestrator_core::flow::StepStatus::parse(&r.status)
                                .ok_or_else(|| {
                                    crate::StoreError::Corrupt(format!(
                                        "step status '{}'",
                                        r.status
                                    ))
                                })?;
                            Ok((r.step_id, status, r.result.map(|j| j.0)))
                        })
                        .collect::<crate::Result<Vec<_>>>()?,
                }))
            }

            async fn listen_for_work(
                &self,
                on_work: std::sync::Arc<dyn Fn() + Send + Sync>,
                shutdown: tokio_util::sync::CancellationToken,
            ) -> crate::Result<bool> {
                listen_for_work(&self.pool, on_work, shutdown).await
            }

            async fn next_run_in_ms(&self) -> crate::Result<Option<i64>> {
                let next: Option<i64> = sqlx::query_scalar(crate::common::NEXT_RUN_AFTER)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(next.map(|t| (t - crate::now_ms()).max(0)))
            }

            async fn insert_model(&self, id: &str, spec: &serde_json::Value, source: &str) -> crate::Result<bool> {
                let _writer = self.write_guard().await;
                let now = crate::now_ms();
                let n = sqlx::query(crate::common::INSERT_MODEL)
                    .bind(id)
                    .bind(sqlx::types::Json(spec))
                    .bind(source)
                    .bind(now)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn upsert_model(&self, id: &str, spec: &serde_json::Value, source: &str) -> crate::Result<()> {
                let _writer = self.write_guard().await;
                sqlx::query(crate::common::UPSERT_MODEL)
                    .bind(id)
                    .bind(sqlx::types::Json(spec))
                    .bind(source)
                    .bind(crate::now_ms())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_model(&self, id: &str) -> crate::Result<bool> {
                let _writer = self.write_guard().await;
                let n = sqlx::query("DELETE FROM models WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn list_models(&self) -> crate::Result<Vec<crate::ModelRecord>> {
                let rows: Vec<(String, sqlx::types::Json<serde_json::Value>, String, i64, i64)> =
                    sqlx::query_as("SELECT id, spec, source, created_at, updated_at FROM models ORDER BY created_at, id")
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, spec, source, created_at, updated_at)| crate::ModelRecord {
                        id,
                        spec: spec.0,
                        source,
                        created_at,
                        updated_at,
                    })
                    .collect())
            }

            async fn record_model_call(&self, call: &crate::ModelCall) -> crate::Result<()> {
                let _writer = self.write_guard().await;
                sqlx::query(crate::common::INSERT_MODEL_CALL)
                    .bind(&call.model_id)
                    .bind(&call.execution_id)
                    .bind(&call.step_id)
                    .bind(call.attempt)
                    .bind(call.started_at)
                    .bind(call.latency_ms)
                    .bind(i64::from(call.success))
                    .bind(call.input_tokens)
                    .bind(call.output_tokens)
                    .bind(call.cost)
                    .bind(call.reward)
                    .bind(&call.error_type)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn model_call_stats(&self) -> crate::Result<Vec<crate::ModelCallStats>> {
                let rows: Vec<(String, i64, i64, i64, i64, f64, f64)> =
                    sqlx::query_as(crate::common::MODEL_TOTALS)
                        .fetch_all(&self.pool)
                        .await?;
                let recent: Vec<(String, i64)> = sqlx::query_as(crate::common::RECENT_LATENCIES)
                    .fetch_all(&self.pool)
                    .await?;
                let mut stats: Vec<crate::ModelCallStats> = rows
                    .into_iter()
                    .map(|(model_id, calls, successes, input_tokens, output_tokens, cost, reward_sum)| {
                        crate::ModelCallStats {
                            model_id,
                            calls,
                            successes,
                            input_tokens,
                            output_tokens,
                            cost,
                            reward_sum,
                            recent_latencies_ms: Vec::new(),
                        }
                    })
                    .collect();
                for (model, latency) in recent {
                    if let Some(s) = stats.iter_mut().find(|s| s.model_id == model) {
                        s.recent_latencies_ms.push(latency);
                    }
                }
                Ok(stats)
            }

            async fn list_events(
                &self,
                execution_id: &str,
                after_seq: i64,
                limit: u32,
            ) -> crate::Result<Vec<crate::EventRecord>> {
                let rows: Vec<(i64, String, Option<String>, sqlx::types::Json<serde_json::Value>, i64)> =
                    sqlx::query_as(crate::common::SELECT_EVENTS)
                        .bind(execution_id)
                        .bind(after_seq)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(seq, kind, step_id, data, created_at)| crate::EventRecord {
                        seq,
                        kind,
                        step_id,
                        data: data.0,
                        created_at,
                    })
                    .collect())
            }

            async fn create_webhook(&self, webhook: &crate::WebhookRecord, kinds: &[String]) -> crate::Result<()> {
                let _writer = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                sqlx::query("INSERT INTO webhooks (id, url, events, secret, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&webhook.id)
                    .bind(&webhook.url)
                    .bind(sqlx::types::Json(&webhook.events))
                    .bind(&webhook.secret)
                    .bind(webhook.created_at)
                    .execute(&mut *tx)
                    .await?;
                for kind in kinds {
                    sqlx::query("INSERT INTO webhook_subscriptions (webhook_id, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(&webhook.id)
                        .bind(kind)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn list_webhooks(&self) -> crate::Result<Vec<crate::WebhookRecord>> {
                let rows: Vec<(String, String, sqlx::types::Json<Vec<String>>, String, i64)> =
                    sqlx::query_as("SELECT id, url, events, secret, created_at FROM webhooks ORDER BY created_at, id")
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, url, events, secret, created_at)| crate::WebhookRecord {
                        id,
                        url,
                        events: events.0,
                        secret,
                        created_at,
                    })
                    .collect())
            }

            async fn delete_webhook(&self, id: &str) -> crate::Result<bool> {
                let _writer = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                sqlx::query("DELETE FROM webhook_subscriptions WHERE webhook_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let n = sqlx::query("DELETE FROM webhooks WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("UPDATE webhook_deliveries SET status = 'cancelled', locked_until = NULL \
                             WHERE webhook_id = $1 AND status = 'pending'")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(n == 1)
            }

            async fn claim_deliveries(&self, limit: u32, lock_ms: i64) -> crate::Result<Vec<crate::DeliveryJob>> {
                let now = crate::now_ms();
                // The delivery loop wakes on every event: a read (on the
                // partial index) spares the write transaction when nothing is due.
                let due: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
                     AND (locked_until IS NULL OR locked_until < $1) LIMIT 1",
                )
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                if due.is_none() {
                    return Ok(Vec::new());
                }
                let _writer = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                #[allow(clippy::type_complexity)]
                let rows: Vec<(i64, String, String, String, i64, i64, sqlx::types::Json<serde_json::Value>)> =
                    sqlx::query_as(CLAIM_DELIVERIES)
                        .bind(now)
                        .bind(now + lock_ms)
                        .bind(i64::from(limit))
                        .fetch_all(&mut *tx)
                        .await?;
                let mut jobs = Vec::with_capacity(rows.len());
                for (id, webhook_id, kind, execution_id, seq, attempts, log) in rows {
                    let event: Option<(Option<String>, sqlx::types::Json<serde_json::Value>, i64)> = sqlx::query_as(
                        "SELECT step_id, data, created_at FROM events WHERE execution_id = $1 AND seq = $2",
                    )
                    .bind(&execution_id)
                    .bind(seq)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let (step_id, data, created_at) = event
                        .map(|(s, d, c)| (s, d.0, c))
                        .unwrap_or((None, serde_json::Value::Null, 0));
                    let payload = serde_json::json!({
                        "execution_id": execution_id,
                        "seq": seq,
                        "kind": kind,
                        "step_id": step_id,
                        "data": data,
                        "created_at": created_at,
                    });
                    let hook: Option<(String, String)> =
                        sqlx::query_as("SELECT url, secret FROM webhooks WHERE id = $1")
                            .bind(&webhook_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    jobs.push(crate::DeliveryJob {
                        id,
                        url: hook.as_ref().map(|h| h.0.clone()),
                        secret: hook.map(|h| h.1).unwrap_or_default(),
                        webhook_id,
                        kind,
                        payload,
                        attempts,
                        log: log.0,
                    });
                }
                tx.commit().await?;
                Ok(jobs)
            }

            async fn finish_delivery(&self, id: i64, u: &crate::DeliveryUpdate) -> crate::Result<()> {
                let _writer = self.write_guard().await;
                sqlx::query(crate::common::FINISH_DELIVERY)
                    .bind(id)
                    .bind(&u.status)
                    .bind(u.attempts)
                    .bind(u.next_attempt_at)
                    .bind(u.last_status_code)
                    .bind(&u.last_error)
                    .bind(sqlx::types::Json(&u.log))
                    .bind(u.delivered_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_deliveries(&self, webhook_id: &str, limit: u32) -> crate::Result<Vec<crate::DeliveryRecord>> {
                #[allow(clippy::type_complexity)]
                let rows: Vec<(i64, String, String, i64, String, String, i64, i64, Option<i64>, Option<String>, sqlx::types::Json<serde_json::Value>, i64, Option<i64>)> =
                    sqlx::query_as(crate::common::SELECT_DELIVERIES)
                        .bind(webhook_id)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| crate::DeliveryRecord {
                        id: r.0,
                        webhook_id: r.1,
                        execution_id: r.2,
                        event_seq: r.3,
                        kind: r.4,
                        status: r.5,
                        attempts: r.6,
                        next_attempt_at: r.7,
                        last_status_code: r.8,
                        last_error: r.9,
                        log: r.10.0,
                        created_at: r.11,
                        delivered_at: r.12,
                    })
                    .collect())
            }

            async fn create_token(&self, t: &crate::TokenRecord) -> crate::Result<()> {
                let _writer = self.write_guard().await;
                sqlx::query("INSERT INTO api_tokens (id, name, scope, hash, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&t.id)
                    .bind(&t.name)
                    .bind(&t.scope)
                    .bind(&t.hash)
                    .bind(t.created_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get_token(&self, id: &str) -> crate::Result<Option<crate::TokenRecord>> {
                let row: Option<(String, String, String, String, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
                    "SELECT id, name, scope, hash, created_at, last_used_at, revoked_at FROM api_tokens WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(crate::common::token_record))
            }

            async fn list_tokens(&self) -> crate::Result<Vec<crate::TokenRecord>> {
                let rows: Vec<(String, String, String, String, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
                    "SELECT id, name, scope, hash, created_at, last_used_at, revoked_at FROM api_tokens ORDER BY created_at, id",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(crate::common::token_record).collect())
            }

            async fn revoke_token(&self, id: &str, now: i64) -> crate::Result<bool> {
                let _writer = self.write_guard().await;
                let n = sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn touch_token(&self, id: &str, now: i64) -> crate::Result<()> {
                let _writer = self.write_guard().await;
                sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1 \
                             AND (last_used_at IS NULL OR last_used_at < $2 - 60000)")
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn active_executions_of_token(&self, token_id: &str) -> crate::Result<i64> {
                Ok(sqlx::query_scalar(
                    "SELECT COUNT(*) FROM executions WHERE token_id = $1 AND status IN ('queued', 'running')",
                )
                .bind(token_id)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn overview(&self) -> crate::Result<crate::Overview> {
                let now = crate::now_ms();
                let executions_by_status: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT status, COUNT(*) FROM executions GROUP BY status ORDER BY status",
                )
                .fetch_all(&self.pool)
                .await?;
                let active_steps_by_status: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT s.status, COUNT(*) FROM steps s JOIN executions e ON e.id = s.execution_id \
                     WHERE e.status IN ('queued', 'running') GROUP BY s.status ORDER BY s.status",
                )
                .fetch_all(&self.pool)
                .await?;
                let (ready_steps, oldest): (i64, Option<i64>) = sqlx::query_as(
                    "SELECT COUNT(*), MIN(run_after) FROM step_queue WHERE locked_by IS NULL AND run_after <= $1",
                )
                .bind(now)
                .fetch_one(&self.pool)
                .await?;
                let leased_steps: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM step_queue WHERE locked_by IS NOT NULL")
                        .fetch_one(&self.pool)
                        .await?;
                let mean_execution_ms: Option<f64> = sqlx::query_scalar(
                    "SELECT CAST(AVG(finished_at - started_at) AS DOUBLE PRECISION) FROM executions \
                     WHERE finished_at IS NOT NULL AND started_at IS NOT NULL",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(crate::Overview {
                    executions_by_status,
                    active_steps_by_status,
                    ready_steps,
                    leased_steps,
                    oldest_ready_age_ms: oldest.map(|t| (now - t).max(0)),
                    mean_execution_ms,
                    pool_connections: self.pool.size(),
                    pool_idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
                })
            }

            async fn execution_usage(&self, execution_id: &str) -> crate::Result<Vec<crate::StepUsage>> {
                let rows: Vec<(String, String, i64, i64, i64, f64)> =
                    sqlx::query_as(crate::common::EXECUTION_USAGE)
                        .bind(execution_id)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(step_id, model_id, calls, input_tokens, output_tokens, cost)| crate::StepUsage {
                        step_id,
                        model_id,
                        calls,
                        input_tokens,
                        output_tokens,
                        cost,
                    })
                    .collect())
            }
        }
    };
}

pub(crate) const INSERT_MODEL: &str = "INSERT INTO models (id, spec, source, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO NOTHING";

pub(crate) const UPSERT_MODEL: &str = "INSERT INTO models (id, spec, source, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, source = excluded.source, \
    updated_at = excluded.updated_at";

pub(crate) const INSERT_MODEL_CALL: &str = "INSERT INTO model_calls (model_id, execution_id, step_id, attempt, \
    started_at, latency_ms, success, input_tokens, output_tokens, cost, reward, error_type) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// PostgreSQL sums integers as NUMERIC: cast back.
pub(crate) const MODEL_TOTALS: &str = "SELECT model_id, COUNT(*), CAST(SUM(success) AS BIGINT), \
    CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), \
    CAST(SUM(cost) AS DOUBLE PRECISION), CAST(SUM(reward) AS DOUBLE PRECISION) \
    FROM model_calls GROUP BY model_id ORDER BY model_id";

/// Latencies of the last 20,000 calls, for percentiles.
pub(crate) const RECENT_LATENCIES: &str = "SELECT model_id, latency_ms FROM model_calls \
    WHERE id > (SELECT COALESCE(MAX(id), 0) - 20000 FROM model_calls)";

pub(crate) const EXECUTION_USAGE: &str = "SELECT COALESCE(step_id, ''), model_id, COUNT(*), CAST(SUM(input_tokens) AS BIGINT), \
    CAST(SUM(output_tokens) AS BIGINT), CAST(SUM(cost) AS DOUBLE PRECISION) FROM model_calls \
    WHERE execution_id = $1 GROUP BY COALESCE(step_id, ''), model_id ORDER BY MIN(id)";

pub(crate) use impl_store;

/// Marks a claimed step running (attempt + 1) and returns it (`$1` execution, `$2` step, `$3` now).
pub(crate) const START_STEP: &str = "UPDATE steps SET status = 'running', attempt = attempt + 1, \
    started_at = COALESCE(started_at, $3) WHERE execution_id = $1 AND step_id = $2 \
    RETURNING execution_id, step_id, position, status, attempt, max_attempts, depends_on, definition, \
    parameters, result, error, error_type, reason, timed_out, started_at, finished_at";

pub(crate) const MAX_POSITION: &str = "SELECT MAX(position) FROM steps WHERE execution_id = $1";

/// A loop step waits for its iterations (`$3` dependencies, `$4` definition).
pub(crate) const WAIT_FOR_ITERATIONS: &str = "UPDATE steps SET status = 'pending', depends_on = $3, definition = $4 \
    WHERE execution_id = $1 AND step_id = $2";

pub(crate) const INSERT_DEP: &str =
    "INSERT INTO step_deps (execution_id, step_id, depends_on) VALUES ($1, $2, $3)";

/// A loop step's dependencies are replaced by its iterations' last steps.
pub(crate) const REPLACE_DEPS_DELETE: &str =
    "DELETE FROM step_deps WHERE execution_id = $1 AND step_id = $2";

pub(crate) const ADD_OPEN_STEPS: &str =
    "UPDATE executions SET open_steps = open_steps + $2 WHERE id = $1";

/// Locks an execution's row as a step of it finishes, counting that step
/// closed (`$2` now): its status and the steps still open.
/// Multi-row statements for a batch of finished steps: the `VALUES` rows go
/// between prefix and suffix.
pub(crate) const UPDATE_STEP_RESULTS_PREFIX: &str = "WITH v (execution_id, step_id, status, parameters, result, \
    error, error_type, reason, timed_out, finished_at) AS (";
pub(crate) const UPDATE_STEP_RESULTS_SUFFIX: &str = ") UPDATE steps SET status = v.status, \
    parameters = v.parameters, result = v.result, error = v.error, error_type = v.error_type, reason = v.reason, \
    timed_out = v.timed_out, finished_at = v.finished_at \
    FROM v WHERE steps.execution_id = v.execution_id AND steps.step_id = v.step_id";
pub(crate) const INSERT_CHECKPOINTS_PREFIX: &str = "INSERT INTO checkpoints \
    (execution_id, step_id, attempt, status, parameters, result, error, error_type, started_at, finished_at, created_at, worker) ";
/// Events numbered by the caller, who holds the execution's row.
pub(crate) const INSERT_EVENTS_PREFIX: &str =
    "INSERT INTO events (execution_id, seq, kind, family, step_id, data, created_at) ";
/// Pending steps that depend on some of a list of steps and have no
/// unsettled dependency left, as `(step, dependency, others waiting)`: the
/// last column says whether some runnable step waits unleased in the queue.
/// Run with the execution's row locked, so the statuses are current. (A
/// failed dependency is settled: with `on_failure: fail` nothing is pending
/// any more, with `skip` its dependents were skipped, with `continue` they run.)
pub(crate) const READY_DEPENDENTS_PREFIX: &str = "SELECT d.step_id, d.depends_on, EXISTS (SELECT 1 FROM step_queue \
    WHERE locked_by IS NULL AND run_after <= ";
pub(crate) const READY_DEPENDENTS_MIDDLE: &str = ") FROM step_deps d \
    JOIN steps s ON s.execution_id = d.execution_id AND s.step_id = d.step_id \
    WHERE s.status = 'pending' AND NOT EXISTS (SELECT 1 FROM step_deps u \
        JOIN steps us ON us.execution_id = u.execution_id AND us.step_id = u.depends_on \
        WHERE u.execution_id = d.execution_id AND u.step_id = d.step_id \
        AND us.status IN ('pending', 'ready', 'running', 'retrying')) \
    AND d.execution_id = ";
/// Starts claimed steps: `VALUES` of execution and step ids, then the start
/// time, go between the pieces. (Joined, not `(…) IN (VALUES …)`, which
/// SQLite answers with a scan of every step.)
pub(crate) const START_STEPS_PREFIX: &str = "WITH v (eid, sid) AS (";
pub(crate) const START_STEPS_MIDDLE: &str = ") UPDATE steps SET status = 'running', attempt = attempt + 1, \
    started_at = COALESCE(started_at, ";
pub(crate) const START_STEPS_SUFFIX: &str = ") FROM v WHERE steps.execution_id = v.eid AND steps.step_id = v.sid \
    RETURNING execution_id, step_id, position, status, attempt, max_attempts, \
    depends_on, definition, parameters, result, error, error_type, reason, timed_out, started_at, finished_at";

/// Locks the execution's row and counts `$3` of its steps closed; returns
/// its status, the steps still open and its last event number.
pub(crate) const CLOSE_STEPS: &str = "UPDATE executions SET open_steps = open_steps - $3, updated_at = $2 \
    WHERE id = $1 RETURNING status, open_steps, last_event_seq";

pub(crate) const RECOUNT_OPEN: &str = "UPDATE executions SET open_steps = (SELECT COUNT(*) FROM steps \
    WHERE execution_id = $1 AND status IN ('pending', 'ready', 'running', 'retrying')) WHERE id = $1";

pub(crate) const CANCEL_UNSTARTED: &str = "UPDATE steps SET status = 'cancelled', reason = 'execution_cancelled', \
    finished_at = $2 WHERE execution_id = $1 AND status IN ('pending', 'ready', 'retrying') RETURNING step_id";

pub(crate) fn token_record(
    (id, name, scope, hash, created_at, last_used_at, revoked_at): (
        String,
        String,
        String,
        String,
        i64,
        Option<i64>,
        Option<i64>,
    ),
) -> crate::TokenRecord {
    crate::TokenRecord {
        id,
        name,
        scope,
        hash,
        created_at,
        last_used_at,
        revoked_at,
    }
}

pub(crate) const SELECT_DELIVERIES: &str = "SELECT id, webhook_id, execution_id, event_seq, kind, status, attempts, \
    next_attempt_at, last_status_code, last_error, log, created_at, delivered_at FROM webhook_deliveries \
    WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2";

pub(crate) const FINISH_DELIVERY: &str = "UPDATE webhook_deliveries SET status = $2, attempts = $3, next_attempt_at = $4, \
    last_status_code = $5, last_error = $6, log = $7, delivered_at = $8, locked_until = NULL WHERE id = $1";

pub(crate) const SELECT_EVENTS: &str = "SELECT seq, kind, step_id, data, created_at FROM events \
    WHERE execution_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

pub(crate) const DEQUEUE_UNLEASED: &str =
    "DELETE FROM step_queue WHERE execution_id = $1 AND lease_token IS NULL";

pub(crate) const STOP_EXECUTION: &str = "UPDATE executions SET status = $2, error = $3, \
    finished_at = $4, updated_at = $4 WHERE id = $1";

pub(crate) const OVERDUE_EXECUTIONS: &str = "SELECT id, created_at, deadline FROM executions \
    WHERE deadline IS NOT NULL AND deadline < $1 AND status IN ('queued', 'running') ORDER BY id LIMIT 100";

pub(crate) const RESET_STEP: &str = "UPDATE steps SET status = 'pending', attempt = 0, parameters = NULL, result = NULL, \
    error = NULL, error_type = NULL, reason = NULL, timed_out = FALSE, started_at = NULL, finished_at = NULL, \
    depends_on = $3, definition = $4 WHERE execution_id = $1 AND step_id = $2";

pub(crate) const DELETE_STEP: &str = "DELETE FROM steps WHERE execution_id = $1 AND step_id = $2";

pub(crate) const DELETE_STEP_DEPS: &str =
    "DELETE FROM step_deps WHERE execution_id = $1 AND (step_id = $2 OR depends_on = $2)";

pub(crate) const REOPEN_EXECUTION: &str = "UPDATE executions SET status = 'running', outputs = NULL, error = NULL, \
    finished_at = NULL, updated_at = $2 WHERE id = $1";

/// A reaped step is runnable again.
pub(crate) const BACK_TO_READY: &str = "UPDATE steps SET status = 'ready' WHERE execution_id = $1 AND step_id = $2 AND status = 'running'";

/// A step handed back at shutdown did not really get its attempt.
pub(crate) const BACK_TO_READY_UNCOUNTED: &str = "UPDATE steps SET status = 'ready', attempt = attempt - 1 \
    WHERE execution_id = $1 AND step_id = $2 AND status = 'running' AND attempt > 0";

pub(crate) const EXPIRE_KEYS: &str = "UPDATE executions SET idempotency_key = NULL WHERE idempotency_key IS NOT NULL AND created_at < $1";

pub(crate) const QUEUE_DEPTH: &str = "SELECT COUNT(*) FROM step_queue";

pub(crate) const START_EXECUTION: &str =
    "UPDATE executions SET status = 'running', started_at = $2 WHERE id = $1 AND status = 'queued'";

/// A result that can change nothing but its step's dependents (succeeded or
/// skipped, no jump): written set by set.
pub(crate) fn only_advances_dependents(result: &crate::StepResult) -> bool {
    matches!(result.status, StepStatus::Succeeded | StepStatus::Skipped) && result.jump_to.is_none()
}

/// The planned steps of a stored plan, by id.
pub(crate) fn plan_steps(plan: &Value) -> Result<std::collections::HashMap<String, PlannedStep>> {
    let plan: orchestrator_core::ExecutionPlan = serde_json::from_value(plan.clone())
        .map_err(|e| StoreError::Corrupt(format!("stored plan: {e}")))?;
    Ok(plan.steps.into_iter().map(|s| (s.id.clone(), s)).collect())
}

/// Which steps a recovery runs again (see [`crate::Store::recover_execution`]).
pub(crate) fn steps_to_rerun(
    steps: &[StepRecord],
    from: Option<&str>,
) -> Result<std::collections::HashSet<String>> {
    use std::collections::{HashMap, HashSet};
    match from {
        None => Ok(steps
            .iter()
            .filter(|s| match s.status {
                StepStatus::Failed | StepStatus::Cancelled | StepStatus::Pending => true,
                StepStatus::Skipped => s
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("dependency_failed")),
                _ => false,
            })
            .map(|s| s.step_id.clone())
            .collect()),
        Some(from) => {
            if !steps.iter().any(|s| s.step_id == from) {
                return Err(StoreError::Invalid(format!(
                    "the execution has no step '{from}'"
                )));
            }
            let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
            for s in steps {
                for d in &s.depends_on {
                    dependents.entry(d.as_str()).or_default().push(&s.step_id);
                }
            }
            let mut out: HashSet<String> = HashSet::new();
            let mut stack = vec![from];
            while let Some(id) = stack.pop() {
                if out.insert(id.to_string()) {
                    stack.extend(dependents.get(id).into_iter().flatten().copied());
                }
            }
            Ok(out)
        }
    }
}
