//! Executions: creating one with its steps (one transaction), reading them
//! back, cancelling, deadlines and idempotency keys.

use orchestrator_core::flow::ExecutionStatus;

use crate::dialect::{Dialect, Tx, conn};
use crate::events::emit;
use crate::rows::{
    CheckpointRow, ClaimRow, ContextRow, ExecutionRow, ResultRow, StepRow, StepSummaryRow,
};
use crate::sql::Values;

const INSERT_EXECUTION: &str = "INSERT INTO executions \
    (id, pipeline_id, pipeline_name, status, inputs, options, idempotency_key, request_hash, created_at, updated_at, deadline, token_id, \
    parent_execution_id, parent_step_id, root_execution_id, depth) \
    VALUES ($1, $2, $3, $11, $4, $5, $6, $7, $8, $8, $9, $10, $12, $13, $14, $15) \
    ON CONFLICT (idempotency_key) DO NOTHING";

/// The pipeline text and plan, in their own table: written once, and kept
/// out of the executions row that every step updates.
const INSERT_SOURCE: &str =
    "INSERT INTO execution_sources (execution_id, source, plan) VALUES ($1, $2, $3)";

/// Multi-row inserts of steps, dependencies and queue rows (the values follow).
const INSERT_STEPS_PREFIX: &str = "INSERT INTO steps \
    (execution_id, step_id, position, status, max_attempts, depends_on, on_failure, scope, ord, definition, \
    tool, action, kind) ";

const INSERT_DEPS_PREFIX: &str = "INSERT INTO step_deps (execution_id, step_id, depends_on) ";

/// Queue rows: ready, or (the lease columns set) leased to the worker
/// that submits them.
const ENQUEUE_PREFIX: &str = "INSERT INTO step_queue (execution_id, step_id, run_after, locked_by, lease_token, locked_until) ";

pub(crate) const SELECT_EXECUTION: &str = "SELECT e.id, e.pipeline_id, e.pipeline_name, e.status, x.source, x.plan, e.inputs, e.options, e.outputs, \
    e.error, e.idempotency_key, e.request_hash, e.created_at, e.started_at, e.finished_at, e.last_event_seq, \
    e.parent_execution_id, e.parent_step_id, e.root_execution_id, e.depth \
    FROM executions e JOIN execution_sources x ON x.execution_id = e.id WHERE e.id = $1";

const SELECT_EXECUTION_BY_KEY: &str = "SELECT e.id, e.pipeline_id, e.pipeline_name, e.status, x.source, x.plan, e.inputs, e.options, e.outputs, \
    e.error, e.idempotency_key, e.request_hash, e.created_at, e.started_at, e.finished_at, e.last_event_seq, \
    e.parent_execution_id, e.parent_step_id, e.root_execution_id, e.depth \
    FROM executions e JOIN execution_sources x ON x.execution_id = e.id WHERE e.idempotency_key = $1";

/// Newest first; every filter optional (`$1` status, `$2` pipeline, `$3`/`$4`
/// cursor, `$5` limit). Without the pipeline text and plan: a page of a
/// listing never needs them, and they can be large.
const LIST_EXECUTIONS: &str = "SELECT id, pipeline_id, pipeline_name, status, inputs, options, outputs, \
    error, idempotency_key, request_hash, created_at, started_at, finished_at, last_event_seq, \
    parent_execution_id, parent_step_id, root_execution_id, depth FROM executions \
    WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR pipeline_name = $2) \
    AND ($8 IS NULL OR LOWER(pipeline_name) LIKE $8 ESCAPE '\\') \
    AND ($6 IS NULL OR parent_execution_id = $6) AND ($7 IS NULL OR parent_step_id = $7) \
    AND ($3 IS NULL OR created_at < $3 OR (created_at = $3 AND id < $4)) \
    ORDER BY created_at DESC, id DESC LIMIT $5";

pub(crate) const SELECT_STEPS: &str = "SELECT execution_id, step_id, position, status, attempt, max_attempts, depends_on, definition, \
    parameters, result, error, error_type, reason, timed_out, started_at, finished_at \
    FROM steps WHERE execution_id = $1 ORDER BY position";

const SELECT_CHECKPOINTS: &str = "SELECT id, execution_id, step_id, attempt, status, parameters, result, error, error_type, \
    started_at, finished_at, created_at, worker FROM checkpoints WHERE execution_id = $1 ORDER BY id";

/// Takes the execution's row lock first, so finishing steps of one execution
/// never race (PostgreSQL row lock; SQLite write lock).
pub(crate) const LOCK_EXECUTION: &str =
    "UPDATE executions SET updated_at = $2 WHERE id = $1 RETURNING status";

/// Takes the execution's row lock ([`LOCK_EXECUTION`]); its status, `None`
/// when there is no such execution.
pub(crate) async fn lock_execution<D: Dialect>(
    tx: &mut Tx<'_, D>,
    id: &str,
    now: i64,
) -> crate::Result<Option<ExecutionStatus>> {
    let status: Option<String> = D::q(LOCK_EXECUTION)
        .bind(id)
        .bind(now)
        .scalar_optional(tx)
        .await?;
    status.as_deref().map(parse_status).transpose()
}

/// Whether a stored execution status is a final one.
pub(crate) fn has_ended(status: &str) -> bool {
    ExecutionStatus::parse(status).is_some_and(ExecutionStatus::is_terminal)
}

fn parse_status(s: &str) -> crate::Result<ExecutionStatus> {
    ExecutionStatus::parse(s)
        .ok_or_else(|| crate::StoreError::Corrupt(format!("execution status '{s}'")))
}

/// Steps of a tree of executions (`$1` its root).
const STEPS_IN_TREE: &str = "SELECT COUNT(*) FROM steps s JOIN executions e ON e.id = s.execution_id \
    WHERE e.id = $1 OR e.root_execution_id = $1";

pub(crate) const SELECT_CONTEXT: &str = "SELECT status, pipeline_id, inputs, options, created_at, started_at FROM executions WHERE id = $1";

const ADD_OPEN_STEPS: &str = "UPDATE executions SET open_steps = open_steps + $2 WHERE id = $1";

pub(crate) const RECOUNT_OPEN: &str = "UPDATE executions SET open_steps = (SELECT COUNT(*) FROM steps \
    WHERE execution_id = $1 AND status IN ('pending', 'ready', 'running', 'retrying', 'waiting')) WHERE id = $1";

const CANCEL_UNSTARTED: &str = "UPDATE steps SET status = 'cancelled', reason = 'execution_cancelled', \
    finished_at = $2 WHERE execution_id = $1 AND status IN ('pending', 'ready', 'retrying', 'waiting') RETURNING step_id";

const DEQUEUE_UNLEASED: &str =
    "DELETE FROM step_queue WHERE execution_id = $1 AND lease_token IS NULL";

const STOP_EXECUTION: &str = "UPDATE executions SET status = $2, error = $3, \
    finished_at = $4, updated_at = $4 WHERE id = $1";

const OVERDUE_EXECUTIONS: &str = "SELECT id, created_at, deadline FROM executions \
    WHERE deadline IS NOT NULL AND deadline < $1 AND status IN ('resolving', 'queued', 'running') ORDER BY id LIMIT 100";

const EXPIRE_KEYS: &str = "UPDATE executions SET idempotency_key = NULL WHERE idempotency_key IS NOT NULL AND created_at < $1";

pub(crate) async fn ping<D: Dialect>(s: &D) -> crate::Result<()> {
    D::q("SELECT 1 FROM executions LIMIT 1")
        .execute(&mut *conn(s).await?)
        .await?;
    Ok(())
}

pub(crate) async fn create_execution<D: Dialect>(
    s: &D,
    new: crate::NewExecution,
    take: Option<crate::Take>,
) -> crate::Result<(crate::ExecutionRecord, bool, Vec<crate::ClaimedStep>)> {
    let now = crate::now_ms();
    let mut tx = Tx::begin(s).await?;
    let inserted = D::q(INSERT_EXECUTION)
        .bind(&new.id)
        .bind(&new.pipeline_id)
        .bind(&new.pipeline_name)
        .json(&new.inputs)
        .json(&new.options)
        .bind(&new.idempotency_key)
        .bind(&new.request_hash)
        .bind(now)
        .bind(new.timeout_ms.map(|t| now.saturating_add(t)))
        .bind(&new.token_id)
        .bind(if new.resolving { "resolving" } else { "queued" })
        .bind(new.parent.as_ref().map(|p| p.execution_id.as_str()))
        .bind(new.parent.as_ref().map(|p| p.step_id.as_str()))
        .bind(new.parent.as_ref().map(|p| p.root_execution_id.as_str()))
        .bind(new.parent.as_ref().map_or(0, |p| p.depth))
        .execute(&mut tx)
        .await?;
    if inserted == 0 {
        // The idempotency key is taken.
        tx.rollback().await?;
        let key = new.idempotency_key.clone().unwrap_or_default();
        let row: ExecutionRow = D::q(SELECT_EXECUTION_BY_KEY)
            .bind(&key)
            .fetch_one(&mut *conn(s).await?)
            .await?;
        let existing = crate::ExecutionRecord::try_from(row)?;
        return if existing.request_hash == new.request_hash {
            Ok((existing, false, vec![]))
        } else {
            Err(crate::StoreError::IdempotencyConflict(key))
        };
    }
    D::q(INSERT_SOURCE)
        .bind(&new.id)
        .bind(&new.source)
        .json(&new.plan)
        .execute(&mut tx)
        .await?;
    if let Some(parent) = &new.parent {
        // A tree of executions shares one step budget.
        let in_tree: i64 = D::q(STEPS_IN_TREE)
            .bind(&parent.root_execution_id)
            .scalar(&mut tx)
            .await?;
        let max = crate::limits_max_steps();
        if in_tree.saturating_add(new.steps.len() as i64) > max {
            tx.rollback().await?;
            return Err(crate::StoreError::LimitExceeded(format!(
                "the executions started from '{}' would have more than {max} steps together (limits.max_steps)",
                parent.root_execution_id
            )));
        }
        if let Some(wait) = &parent.wait {
            // The parent's step waits for this child, from the same commit.
            crate::waits::wait_in_tx(
                &mut tx,
                &parent.execution_id,
                &parent.step_id,
                &wait.lease_token,
                "pipeline-executor",
                &wait.request,
                wait.parameters.as_ref(),
                None,
                now,
            )
            .await?;
        }
    }
    let mut taken = vec![];
    if new.resolving {
        // Its steps are stored once its <AUTO> tags are answered.
        crate::resolve::enqueue(&mut tx, &new.id, now).await?;
        emit(
            &mut tx,
            &new.id,
            "execution.resolving",
            None,
            serde_json::json!({"pipeline": new.pipeline_name}),
            now,
        )
        .await?;
    } else {
        let run_after = new
            .parent
            .as_ref()
            .and_then(|p| p.start_after)
            .map_or(now, |at| at.max(now));
        // First steps due now may go straight to the submitting worker.
        let take = take.filter(|t| t.limit > 0 && run_after <= now);
        let (_, leased) =
            insert_steps(&mut tx, &new.id, &new.steps, 0, run_after, take.as_ref()).await?;
        emit(
            &mut tx,
            &new.id,
            "execution.queued",
            None,
            serde_json::json!({"pipeline": new.pipeline_name, "steps": new.steps.len()}),
            now,
        )
        .await?;
        if let Some(take) = &take
            && !leased.is_empty()
        {
            taken = crate::queue::start_claimed(&mut tx, leased, &take.worker, now).await?;
        }
    }
    tx.notify_work().await?;
    let row: ExecutionRow = D::q(SELECT_EXECUTION)
        .bind(&new.id)
        .fetch_one(&mut tx)
        .await?;
    tx.commit().await?;
    Ok((crate::ExecutionRecord::try_from(row)?, true, taken))
}

/// Inserts steps with their dependency rows (those without
/// dependencies queued) and counts them as open; returns the queued ids,
/// and the queue rows leased to `take`'s worker (up to its limit; to be
/// started with [`crate::queue::start_claimed`]).
pub(crate) async fn insert_steps<D: Dialect>(
    tx: &mut Tx<'_, D>,
    execution_id: &str,
    steps: &[crate::NewStep],
    base_position: i64,
    now: i64,
    take: Option<&crate::Take>,
) -> crate::Result<(Vec<String>, Vec<ClaimRow>)> {
    // Many rows per statement: a pipeline of thousands of steps
    // is stored in a few dozen statements, not thousands.
    const ROWS: usize = 200;
    let ready: Vec<String> = steps
        .iter()
        .filter(|s| s.planned.depends_on.is_empty())
        .map(|s| s.planned.id.clone())
        .collect();
    for (chunk_no, chunk) in steps.chunks(ROWS).enumerate() {
        let mut insert = Values::<D::DB>::new(INSERT_STEPS_PREFIX);
        for (i, step) in chunk.iter().enumerate() {
            let position = base_position + (chunk_no * ROWS + i) as i64;
            let status = if step.planned.depends_on.is_empty() {
                "ready"
            } else {
                "pending"
            };
            insert
                .row()
                .bind(execution_id)
                .bind(&step.planned.id)
                .bind(position)
                .bind(status)
                .bind(i64::from(step.max_attempts))
                .json(&step.planned.depends_on)
                .json(&step.planned.step.on_failure)
                .bind(&step.planned.scope)
                .bind(i64::from(step.planned.order))
                .json(&step.planned)
                .bind(&step.planned.step.tool)
                .bind(&step.planned.step.action)
                .bind(step.planned.kind.as_str());
        }
        insert.build().execute(tx).await?;
    }
    let deps: Vec<(&str, &str)> = steps
        .iter()
        .flat_map(|s| {
            s.planned
                .depends_on
                .iter()
                .map(move |d| (s.planned.id.as_str(), d.as_str()))
        })
        .collect();
    for chunk in deps.chunks(ROWS * 3) {
        let mut insert = Values::<D::DB>::new(INSERT_DEPS_PREFIX);
        for (step, dep) in chunk {
            insert.row().bind(execution_id).bind(*step).bind(*dep);
        }
        insert.build().execute(tx).await?;
    }
    let (worker, limit, until) = take.map_or((None, 0, None), |t| {
        (
            Some(t.worker.as_str()),
            t.limit as usize,
            Some(now + t.lease_ms),
        )
    });
    let mut leased = Vec::with_capacity(limit.min(ready.len()));
    for (chunk_no, chunk) in ready.chunks(ROWS * 3).enumerate() {
        let mut insert = Values::<D::DB>::new(ENQUEUE_PREFIX);
        for (i, step) in chunk.iter().enumerate() {
            let token = (chunk_no * ROWS * 3 + i < limit)
                .then(|| uuid::Uuid::new_v4().simple().to_string());
            insert
                .row()
                .bind(execution_id)
                .bind(step.as_str())
                .bind(now)
                .bind(token.as_ref().and(worker))
                .bind(token.as_deref())
                .bind(token.as_ref().and(until));
            if let Some(lease_token) = token {
                leased.push(ClaimRow {
                    execution_id: execution_id.to_string(),
                    step_id: step.clone(),
                    lease_token,
                    lost: 0,
                    run_after: now,
                });
            }
        }
        insert.build().execute(tx).await?;
    }
    D::q(ADD_OPEN_STEPS)
        .bind(execution_id)
        .bind(steps.len() as i64)
        .execute(tx)
        .await?;
    Ok((ready, leased))
}

const EXECUTION_VERSION: &str = "SELECT status, last_event_seq FROM executions WHERE id = $1";

pub(crate) async fn execution_version<D: Dialect>(
    s: &D,
    id: &str,
) -> crate::Result<Option<(ExecutionStatus, i64)>> {
    let row: Option<(String, i64)> = D::q(EXECUTION_VERSION)
        .bind(id)
        .fetch_optional(&mut *conn(s).await?)
        .await?;
    row.map(|(status, seq)| {
        ExecutionStatus::parse(&status)
            .map(|status| (status, seq))
            .ok_or_else(|| crate::StoreError::Corrupt(format!("execution status '{status}'")))
    })
    .transpose()
}

pub(crate) async fn get_execution<D: Dialect>(
    s: &D,
    id: &str,
) -> crate::Result<Option<crate::ExecutionRecord>> {
    let row: Option<ExecutionRow> = D::q(SELECT_EXECUTION)
        .bind(id)
        .fetch_optional(&mut *conn(s).await?)
        .await?;
    row.map(crate::ExecutionRecord::try_from).transpose()
}

pub(crate) async fn get_execution_view<D: Dialect>(
    s: &D,
    id: &str,
) -> crate::Result<Option<crate::ExecutionRecord>> {
    let row: Option<ExecutionRow> = D::q(D::SELECT_EXECUTION_VIEW)
        .bind(id)
        .fetch_optional(&mut *conn(s).await?)
        .await?;
    row.map(crate::ExecutionRecord::try_from).transpose()
}

pub(crate) async fn list_executions<D: Dialect>(
    s: &D,
    filter: &crate::ExecutionFilter,
) -> crate::Result<Vec<crate::ExecutionRecord>> {
    // `name*`, `*part*`: a case-insensitive pattern; else the exact name.
    let (exact, pattern) = match filter.pipeline.as_deref() {
        Some(p) if p.contains('*') => (None, Some(like_pattern(p))),
        other => (other, None),
    };
    let rows: Vec<ExecutionRow> = D::q(LIST_EXECUTIONS)
        .bind(filter.status.map(|s| s.as_str()))
        .bind(exact)
        .bind(filter.before.as_ref().map(|b| b.0))
        .bind(filter.before.as_ref().map(|b| b.1.as_str()))
        .bind(i64::from(filter.limit.max(1)))
        .bind(filter.parent.as_deref())
        .bind(filter.parent_step.as_deref())
        .bind(pattern)
        .fetch_all(&mut *conn(s).await?)
        .await?;
    rows.into_iter()
        .map(crate::ExecutionRecord::try_from)
        .collect()
}

/// A `*` wildcard filter as a lower-case `LIKE` pattern (`%`, `_` and `\`
/// taken literally).
fn like_pattern(filter: &str) -> String {
    let mut out = String::with_capacity(filter.len() + 4);
    for c in filter.to_lowercase().chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

pub(crate) async fn list_steps<D: Dialect>(
    s: &D,
    execution_id: &str,
) -> crate::Result<Vec<crate::StepRecord>> {
    let rows: Vec<StepRow> = D::q(SELECT_STEPS)
        .bind(execution_id)
        .fetch_all(&mut *conn(s).await?)
        .await?;
    rows.into_iter().map(crate::StepRecord::try_from).collect()
}

pub(crate) async fn list_step_summaries<D: Dialect>(
    s: &D,
    execution_id: &str,
) -> crate::Result<Vec<crate::StepSummary>> {
    // One row of JSON built by the database, not a row per step: for
    // executions of many steps, the rows' own cost was most of a view's.
    // An aggregate: one row, `[]` when there are no steps.
    let text: String = D::q(D::SELECT_STEP_SUMMARIES)
        .bind(execution_id)
        .scalar(&mut *conn(s).await?)
        .await?;
    let rows: Vec<StepSummaryRow> = serde_json::from_str(&text)
        .map_err(|e| crate::StoreError::Corrupt(format!("step summaries: {e}")))?;
    rows.into_iter().map(crate::StepSummary::try_from).collect()
}

pub(crate) async fn list_checkpoints<D: Dialect>(
    s: &D,
    execution_id: &str,
) -> crate::Result<Vec<crate::CheckpointRecord>> {
    let rows: Vec<CheckpointRow> = D::q(SELECT_CHECKPOINTS)
        .bind(execution_id)
        .fetch_all(&mut *conn(s).await?)
        .await?;
    rows.into_iter()
        .map(crate::CheckpointRecord::try_from)
        .collect()
}

pub(crate) async fn step_context<D: Dialect>(
    s: &D,
    execution_id: &str,
    step_ids: &[String],
) -> crate::Result<Option<crate::StepContext>> {
    let row: Option<ContextRow> = D::q(SELECT_CONTEXT)
        .bind(execution_id)
        .fetch_optional(&mut *conn(s).await?)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut context = context_of(row)?;
    context.results = step_results(s, execution_id, step_ids).await?;
    Ok(Some(context))
}

/// An execution's context (no results) from its row.
pub(crate) fn context_of(row: ContextRow) -> crate::Result<crate::StepContext> {
    Ok(crate::StepContext {
        status: orchestrator_core::flow::ExecutionStatus::parse(&row.status).ok_or_else(|| {
            crate::StoreError::Corrupt(format!("execution status '{}'", row.status))
        })?,
        pipeline_id: row.pipeline_id,
        inputs: row.inputs.0,
        options: row.options.0,
        created_at: row.created_at,
        started_at: row.started_at,
        results: Vec::new(),
    })
}

pub(crate) async fn step_results<D: Dialect>(
    s: &D,
    execution_id: &str,
    step_ids: &[String],
) -> crate::Result<
    Vec<(
        String,
        orchestrator_core::flow::StepStatus,
        Option<serde_json::Value>,
    )>,
> {
    if step_ids.is_empty() {
        return Ok(Vec::new());
    }
    let results: Vec<ResultRow> = D::q(D::SELECT_RESULTS)
        .bind(execution_id)
        .json(step_ids)
        .fetch_all(&mut *conn(s).await?)
        .await?;
    results
        .into_iter()
        .map(|r| {
            let status = orchestrator_core::flow::StepStatus::parse(&r.status)
                .ok_or_else(|| crate::StoreError::Corrupt(format!("step status '{}'", r.status)))?;
            Ok((r.step_id, status, r.result.map(|j| j.0)))
        })
        .collect()
}

pub(crate) async fn cancel_execution<D: Dialect>(
    s: &D,
    id: &str,
) -> crate::Result<Option<crate::ExecutionRecord>> {
    let now = crate::now_ms();
    let mut tx = Tx::begin(s).await?;
    let Some(status) = lock_execution(&mut tx, id, now).await? else {
        tx.rollback().await?;
        return Ok(None);
    };
    if !status.is_terminal() {
        stop_execution(&mut tx, id, "cancelled", "cancelled by request", now).await?;
    }
    let row: ExecutionRow = D::q(SELECT_EXECUTION).bind(id).fetch_one(&mut tx).await?;
    tx.commit().await?;
    Ok(Some(crate::ExecutionRecord::try_from(row)?))
}

/// Ends an unfinished execution: steps not started are cancelled,
/// running ones are told through their heartbeats.
pub(crate) async fn stop_execution<D: Dialect>(
    tx: &mut Tx<'_, D>,
    id: &str,
    status: &str,
    error: &str,
    now: i64,
) -> crate::Result<()> {
    let cancelled: Vec<String> = D::q(CANCEL_UNSTARTED)
        .bind(id)
        .bind(now)
        .scalars(tx)
        .await?;
    for step_id in &cancelled {
        emit(
            tx,
            id,
            "step.cancelled",
            Some(step_id),
            serde_json::json!({"reason": "execution_cancelled"}),
            now,
        )
        .await?;
    }
    D::q(DEQUEUE_UNLEASED).bind(id).execute(tx).await?;
    D::q(crate::resolve::DEQUEUE).bind(id).execute(tx).await?;
    D::q(RECOUNT_OPEN).bind(id).execute(tx).await?;
    D::q(STOP_EXECUTION)
        .bind(id)
        .bind(status)
        .bind(error)
        .bind(now)
        .execute(tx)
        .await?;
    emit(
        tx,
        id,
        &format!("execution.{status}"),
        None,
        serde_json::json!({"status": status, "error": error}),
        now,
    )
    .await?;
    // A step that waits for this execution goes on.
    crate::waits::notify_parent(tx, id, now).await?;
    Ok(())
}

pub(crate) async fn expire_deadlines<D: Dialect>(s: &D) -> crate::Result<Vec<String>> {
    let now = crate::now_ms();
    // Looked at often: a read first, the write turn only when due.
    let due: Option<(String, i64, i64)> = D::q(OVERDUE_EXECUTIONS)
        .bind(now)
        .fetch_optional(&mut *conn(s).await?)
        .await?;
    if due.is_none() {
        return Ok(Vec::new());
    }
    let mut tx = Tx::begin(s).await?;
    let overdue: Vec<(String, i64, i64)> = D::q(OVERDUE_EXECUTIONS)
        .bind(now)
        .fetch_all(&mut tx)
        .await?;
    for (id, created_at, deadline) in &overdue {
        lock_execution(&mut tx, id, now).await?;
        let error = format!(
            "execution timed out after {} s",
            (deadline - created_at) / 1000
        );
        stop_execution(&mut tx, id, "failed", &error, now).await?;
    }
    tx.commit().await?;
    Ok(overdue.into_iter().map(|(id, _, _)| id).collect())
}

pub(crate) async fn expire_idempotency_keys<D: Dialect>(
    s: &D,
    before_ms: i64,
) -> crate::Result<u64> {
    let _writer = s.write_guard().await;
    let done = D::q(EXPIRE_KEYS)
        .bind(before_ms)
        .execute(&mut *conn(s).await?)
        .await?;
    Ok(done)
}
