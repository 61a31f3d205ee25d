//! Finishing a step: its result and checkpoint, fenced by its lease token,
//! the readiness of its dependents and, when it was the last, the
//! execution's final status — all in one transaction. Batches of plain
//! successes go through [`crate::batch`].

use orchestrator_core::flow::StepStatus;

use crate::batch::{finish_set_in, record_results};
use crate::dialect::{Dialect, Tx};
use crate::events::{emit, emit_steps};
use crate::executions::{RECOUNT_OPEN, SELECT_EXECUTION, SELECT_STEPS, lock_execution};
use crate::queue::ready_step;
use crate::rows::{ExecutionRow, FlowRow, StepRow};

pub(crate) const SELECT_FLOW: &str = "SELECT step_id, status, depends_on, on_failure, scope, ord FROM steps WHERE execution_id = $1 ORDER BY position";

/// Removes the queue row only if the lease is still ours (fencing).
const RELEASE_LEASE: &str =
    "DELETE FROM step_queue WHERE execution_id = $1 AND step_id = $2 AND lease_token = $3";

/// An `on_error` handler's decision for this failure (read by the flow).
const SET_ON_FAILURE: &str =
    "UPDATE steps SET on_failure = $3 WHERE execution_id = $1 AND step_id = $2";

pub(crate) const SET_STEP_STATUS: &str = "UPDATE steps SET status = $3, reason = $4, finished_at = $5 WHERE execution_id = $1 AND step_id = $2";

/// Whether a step runnable now waits unleased in the queue (`$1` now).
pub(crate) const OTHERS_WAITING: &str =
    "SELECT EXISTS (SELECT 1 FROM step_queue WHERE locked_by IS NULL AND run_after <= $1)";

pub(crate) const DEQUEUE: &str = "DELETE FROM step_queue WHERE execution_id = $1 AND step_id = $2";

const FINISH_EXECUTION: &str = "UPDATE executions SET status = $2, outputs = $3, error = $4, finished_at = $5, updated_at = $5 WHERE id = $1";

pub(crate) async fn finish_step<D: Dialect>(
    s: &D,
    step: &crate::ClaimedStep,
    result: crate::StepResult,
    outputs: crate::OutputRenderer<'_>,
    handoff: Option<crate::Handoff>,
) -> crate::Result<crate::FinishOutcome> {
    let now = crate::now_ms();
    let mut tx = Tx::begin(s).await?;
    let outcome = finish_one(&mut tx, step, result, outputs, handoff, now).await?;
    tx.commit().await?;
    Ok(outcome)
}

pub(crate) async fn finish_steps<D: Dialect>(
    s: &D,
    batch: Vec<(crate::ClaimedStep, crate::StepResult)>,
    outputs: crate::OutputRenderer<'_>,
    handoff: Option<crate::Handoff>,
) -> crate::Result<Vec<crate::Result<crate::FinishOutcome>>> {
    let now = crate::now_ms();
    let mut tx = Tx::begin(s).await?;
    // Steps that only advance their dependents (the common case)
    // are written set by set; anything else one by one.
    if batch.len() > 1 && batch.iter().all(|(_, r)| only_advances_dependents(r)) {
        let done = finish_set_in(&mut tx, &batch, outputs, handoff, now).await?;
        tx.commit().await?;
        return Ok(done);
    }
    let mut done = Vec::with_capacity(batch.len());
    for (step, result) in batch {
        match finish_one(&mut tx, &step, result, outputs, handoff, now).await {
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

/// A result that can change nothing but its step's dependents (succeeded or
/// skipped, no jump): written set by set.
pub(crate) fn only_advances_dependents(result: &crate::StepResult) -> bool {
    matches!(result.status, StepStatus::Succeeded | StepStatus::Skipped) && result.jump_to.is_none()
}

/// Records a step's final result: set by set when it only
/// advances its dependents, else through the whole flow.
pub(crate) async fn finish_one<D: Dialect>(
    tx: &mut Tx<'_, D>,
    step: &crate::ClaimedStep,
    result: crate::StepResult,
    outputs: crate::OutputRenderer<'_>,
    handoff: Option<crate::Handoff>,
    now: i64,
) -> crate::Result<crate::FinishOutcome> {
    if only_advances_dependents(&result) {
        let one = [(step.clone(), result)];
        let mut done = finish_set_in(tx, &one, outputs, handoff, now).await?;
        return done.pop().unwrap_or_else(|| {
            Err(crate::StoreError::LeaseLost {
                step: step.step_id.clone(),
            })
        });
    }
    finish_in(tx, step, result, outputs, handoff, now).await
}

/// Takes the execution's lock and ends the step's lease, fenced by
/// its token ([`crate::StoreError::LeaseLost`] when another worker
/// holds it now; the dropped transaction rolls back). Returns whether
/// the execution has ended meanwhile (cancelled or timed out).
pub(crate) async fn end_lease<D: Dialect>(
    tx: &mut Tx<'_, D>,
    step: &crate::ClaimedStep,
    now: i64,
) -> crate::Result<bool> {
    // The queue row first: a claimer that took the step over (after
    // the lease expired) holds that row and then waits for the
    // execution's row; taking them in the other order deadlocks.
    let released = D::q(RELEASE_LEASE)
        .bind(&step.execution_id)
        .bind(&step.step_id)
        .bind(&step.lease_token)
        .execute(tx)
        .await?;
    if released == 0 {
        // Fenced: another worker holds the step now.
        return Err(crate::StoreError::LeaseLost {
            step: step.step_id.clone(),
        });
    }
    let status = lock_execution(tx, &step.execution_id, now).await?;
    Ok(status.is_some_and(|s| s.is_terminal()))
}

/// Records a step's final result and advances its execution's
/// flow, inside `tx` (one step of `finish_step` or `finish_steps`).
pub(crate) async fn finish_in<D: Dialect>(
    tx: &mut Tx<'_, D>,
    step: &crate::ClaimedStep,
    result: crate::StepResult,
    outputs: crate::OutputRenderer<'_>,
    handoff: Option<crate::Handoff>,
    now: i64,
) -> crate::Result<crate::FinishOutcome> {
    use orchestrator_core::flow::{self, Change, FlowStep, Outcome, StepStatus};
    // The lease first (fencing), then this step's own rows, then
    // the execution's row: concurrent finishers of one execution
    // take turns from there on, so the less done after it, the
    // better.
    let one = [(step.clone(), result)];
    if !record_results(tx, &one, now).await?[0] {
        return Err(crate::StoreError::LeaseLost {
            step: step.step_id.clone(),
        });
    }
    let [(_, result)] = one;
    // The execution's row: locked (its open steps are counted
    // again below), and whether it was cancelled or timed out
    // while this step ran. Whoever takes it next sees this step's
    // rows committed: statuses read from here on are current.
    let status = lock_execution(tx, &step.execution_id, now).await?;
    let cancelled = status.is_some_and(|s| s.is_terminal());
    emit(
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
        D::q(RECOUNT_OPEN)
            .bind(&step.execution_id)
            .execute(tx)
            .await?;
        return Ok(crate::FinishOutcome {
            ready: vec![],
            next: None,
            execution_finished: None,
        });
    }
    if let Some(on_failure) = &result.on_failure {
        D::q(SET_ON_FAILURE)
            .bind(&step.execution_id)
            .bind(&step.step_id)
            .json(on_failure)
            .execute(tx)
            .await?;
    }
    let mut handoff = handoff;
    let mut next = None;
    let rows: Vec<FlowRow> = D::q(SELECT_FLOW)
        .bind(&step.execution_id)
        .fetch_all(tx)
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
                        let waiting: bool = D::q(OTHERS_WAITING).bind(now).scalar(tx).await?;
                        (!waiting).then_some((h, step.worker.as_str()))
                    }
                    None => None,
                };
                let mut events = Vec::new();
                match ready_step(tx, &step.execution_id, id, take, &mut events, now).await? {
                    Some(taken) => next = Some(taken),
                    None => ready.push(id.clone()),
                }
                emit_steps(tx, &step.execution_id, events, now).await?;
            }
            Change::Skipped { step: id, reason } | Change::Cancelled { step: id, reason } => {
                let status = if matches!(change, Change::Skipped { .. }) {
                    "skipped"
                } else {
                    "cancelled"
                };
                D::q(SET_STEP_STATUS)
                    .bind(&step.execution_id)
                    .bind(id)
                    .bind(status)
                    .bind(reason)
                    .bind(now)
                    .execute(tx)
                    .await?;
                D::q(DEQUEUE)
                    .bind(&step.execution_id)
                    .bind(id)
                    .execute(tx)
                    .await?;
                emit(
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
    D::q(RECOUNT_OPEN)
        .bind(&step.execution_id)
        .execute(tx)
        .await?;
    let finished = advance.finished;
    if let Some(status) = finished {
        complete_execution(tx, &step.execution_id, status, outputs, now).await?;
    }
    if !ready.is_empty()
        && let Some(sql) = D::NOTIFY_WORK
    {
        D::q(sql).execute(tx).await?;
    }
    Ok(crate::FinishOutcome {
        ready,
        next,
        execution_finished: finished,
    })
}

/// The final status of an execution whose steps are all closed
/// (`None` while a step may still run).
pub(crate) async fn settled_status<D: Dialect>(
    tx: &mut Tx<'_, D>,
    execution_id: &str,
) -> crate::Result<Option<orchestrator_core::flow::ExecutionStatus>> {
    let rows: Vec<FlowRow> = D::q(SELECT_FLOW).bind(execution_id).fetch_all(tx).await?;
    let steps = rows
        .into_iter()
        .map(orchestrator_core::flow::FlowStep::try_from)
        .collect::<crate::Result<Vec<_>>>()?;
    Ok(orchestrator_core::flow::finished_status(&steps))
}

/// Ends an execution whose steps are all settled: renders its
/// outputs, stores its final status and emits the event.
pub(crate) async fn complete_execution<D: Dialect>(
    tx: &mut Tx<'_, D>,
    execution_id: &str,
    status: orchestrator_core::flow::ExecutionStatus,
    outputs: crate::OutputRenderer<'_>,
    now: i64,
) -> crate::Result<()> {
    use orchestrator_core::flow::StepStatus;
    let rows: Vec<StepRow> = D::q(SELECT_STEPS).bind(execution_id).fetch_all(tx).await?;
    let records = rows
        .into_iter()
        .map(crate::StepRecord::try_from)
        .collect::<crate::Result<Vec<_>>>()?;
    let exec_row: ExecutionRow = D::q(SELECT_EXECUTION)
        .bind(execution_id)
        .fetch_one(tx)
        .await?;
    let execution = crate::ExecutionRecord::try_from(exec_row)?;
    let (rendered, output_error) = outputs(&execution, &records);
    // The cause first: the step that failed first (outputs that could not
    // be rendered usually follow from it, so they come second).
    let first_failed = records
        .iter()
        .filter(|r| r.status == StepStatus::Failed)
        .min_by_key(|r| r.finished_at.unwrap_or(i64::MAX))
        .map(|r| {
            let kind = r
                .error_type
                .as_deref()
                .map(|k| format!(" ({k})"))
                .unwrap_or_default();
            format!(
                "step '{}' failed{kind}: {}",
                r.step_id,
                r.error.as_deref().unwrap_or("no error recorded")
            )
        });
    let error = match (first_failed, output_error) {
        (Some(step), Some(outputs)) => Some(format!("{step}; then {outputs}")),
        (step, outputs) => step.or(outputs),
    };
    D::q(FINISH_EXECUTION)
        .bind(execution_id)
        .bind(status.as_str())
        .json_opt(rendered.as_ref())
        .bind(&error)
        .bind(now)
        .execute(tx)
        .await?;
    emit(
        tx,
        execution_id,
        &format!("execution.{}", status.as_str()),
        None,
        serde_json::json!({"status": status.as_str(), "error": error}),
        now,
    )
    .await?;
    // A step that waits for this execution goes on.
    crate::waits::notify_parent(tx, execution_id, now).await?;
    Ok(())
}
