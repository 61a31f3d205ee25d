//! The ways a step runs again or grows: retries, loop expansion, and
//! recovering a finished execution from its checkpoints.

use orchestrator_core::flow::StepStatus;
use orchestrator_core::plan::PlannedStep;
use serde_json::Value;

use crate::batch::insert_checkpoint;
use crate::dialect::{Dialect, Tx};
use crate::events::{emit, emit_steps};
use crate::executions::{
    RECOUNT_OPEN, SELECT_EXECUTION, SELECT_STEPS, insert_steps, lock_execution,
};
use crate::finish::{DEQUEUE, SELECT_FLOW, SET_STEP_STATUS, end_lease};
use crate::queue::ready_step;
use crate::rows::{ExecutionRow, FlowRow, StepRow};
use crate::{StepRecord, StoreError};

const REQUEUE_FOR_RETRY: &str = "UPDATE step_queue SET locked_by = NULL, lease_token = NULL, locked_until = NULL, \
    run_after = $4 WHERE execution_id = $1 AND step_id = $2 AND lease_token = $3";

const UPDATE_STEP_RETRYING: &str = "UPDATE steps SET status = 'retrying', parameters = $3, error = $4, \
    error_type = $5, timed_out = $6 WHERE execution_id = $1 AND step_id = $2";

const MAX_POSITION: &str = "SELECT MAX(position) FROM steps WHERE execution_id = $1";

/// A loop step waits for its iterations (`$3` dependencies, `$4` definition).
const WAIT_FOR_ITERATIONS: &str = "UPDATE steps SET status = 'pending', depends_on = $3, definition = $4, \
    kind = $5 WHERE execution_id = $1 AND step_id = $2";

const INSERT_DEP: &str =
    "INSERT INTO step_deps (execution_id, step_id, depends_on) VALUES ($1, $2, $3)";

/// A loop step's dependencies are replaced by its iterations' last steps.
const REPLACE_DEPS_DELETE: &str = "DELETE FROM step_deps WHERE execution_id = $1 AND step_id = $2";

const RESET_STEP: &str = "UPDATE steps SET status = 'pending', attempt = 0, parameters = NULL, result = NULL, \
    error = NULL, error_type = NULL, reason = NULL, timed_out = FALSE, started_at = NULL, finished_at = NULL, \
    depends_on = $3, definition = $4, kind = $5 WHERE execution_id = $1 AND step_id = $2";

const DELETE_STEP: &str = "DELETE FROM steps WHERE execution_id = $1 AND step_id = $2";

const DELETE_STEP_DEPS: &str =
    "DELETE FROM step_deps WHERE execution_id = $1 AND (step_id = $2 OR depends_on = $2)";

const REOPEN_EXECUTION: &str = "UPDATE executions SET status = 'running', outputs = NULL, error = NULL, \
    finished_at = NULL, updated_at = $2 WHERE id = $1";

pub(crate) async fn retry_step<D: Dialect>(
    s: &D,
    step: &crate::ClaimedStep,
    result: crate::StepResult,
    delay_ms: i64,
) -> crate::Result<()> {
    let now = crate::now_ms();
    let mut tx = Tx::begin(s).await?;
    let requeued = D::q(REQUEUE_FOR_RETRY)
        .bind(&step.execution_id)
        .bind(&step.step_id)
        .bind(&step.lease_token)
        .bind(now + delay_ms)
        .execute(&mut tx)
        .await?;
    if requeued == 0 {
        tx.rollback().await?;
        return Err(crate::StoreError::LeaseLost {
            step: step.step_id.clone(),
        });
    }
    D::q(UPDATE_STEP_RETRYING)
        .bind(&step.execution_id)
        .bind(&step.step_id)
        .json_opt(result.parameters.as_ref())
        .bind(&result.error)
        .bind(&result.error_type)
        .bind(result.timed_out)
        .execute(&mut tx)
        .await?;
    insert_checkpoint(&mut tx, step, "failed", &result, now).await?;
    emit(
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
    tx.notify_work().await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn expand_step<D: Dialect>(
    s: &D,
    step: &crate::ClaimedStep,
    container: &orchestrator_core::plan::PlannedStep,
    new_steps: Vec<crate::NewStep>,
    wait_for: &[String],
) -> crate::Result<Vec<String>> {
    let now = crate::now_ms();
    let mut tx = Tx::begin(s).await?;
    // Cancelled or timed out while this step ran?
    let cancelled = end_lease(&mut tx, step, now).await?;
    if cancelled {
        D::q(SET_STEP_STATUS)
            .bind(&step.execution_id)
            .bind(&step.step_id)
            .bind("cancelled")
            .bind("execution_cancelled")
            .bind(now)
            .execute(&mut tx)
            .await?;
        D::q(RECOUNT_OPEN)
            .bind(&step.execution_id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        return Ok(vec![]);
    }
    let base: Option<i64> = D::q(MAX_POSITION)
        .bind(&step.execution_id)
        .scalar(&mut tx)
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
    let (ready, _) = insert_steps(&mut tx, &step.execution_id, &new_steps, base, now, None).await?;
    let added: Vec<&str> = new_steps.iter().map(|s| s.planned.id.as_str()).collect();
    emit(
        &mut tx,
        &step.execution_id,
        "step.expanded",
        Some(&step.step_id),
        serde_json::json!({"added": added, "ready": ready}),
        now,
    )
    .await?;
    D::q(REPLACE_DEPS_DELETE)
        .bind(&step.execution_id)
        .bind(&step.step_id)
        .execute(&mut tx)
        .await?;
    for dep in wait_for {
        D::q(INSERT_DEP)
            .bind(&step.execution_id)
            .bind(&step.step_id)
            .bind(dep)
            .execute(&mut tx)
            .await?;
    }
    D::q(WAIT_FOR_ITERATIONS)
        .bind(&step.execution_id)
        .bind(&step.step_id)
        .json(wait_for)
        .json(container)
        .bind(container.kind.as_str())
        .execute(&mut tx)
        .await?;
    tx.notify_work().await?;
    tx.commit().await?;
    Ok(ready)
}

const RESOLVE_AGAIN: &str = "UPDATE executions SET status = 'resolving', error = NULL, outputs = NULL, \
    finished_at = NULL, updated_at = $2 WHERE id = $1";

pub(crate) async fn recover_execution<D: Dialect>(
    s: &D,
    id: &str,
    from: Option<&str>,
) -> crate::Result<Option<Vec<String>>> {
    use orchestrator_core::flow::{self, FlowStep};
    let now = crate::now_ms();
    let mut tx = Tx::begin(s).await?;
    let Some(status) = lock_execution(&mut tx, id, now).await? else {
        tx.rollback().await?;
        return Ok(None);
    };
    if !status.is_terminal() {
        tx.rollback().await?;
        return Err(crate::StoreError::Conflict(format!(
            "execution '{id}' is {}; only a finished execution can be recovered",
            status.as_str()
        )));
    }
    let exec_row: ExecutionRow = D::q(SELECT_EXECUTION).bind(id).fetch_one(&mut tx).await?;
    let execution = crate::ExecutionRecord::try_from(exec_row)?;
    let rows: Vec<StepRow> = D::q(SELECT_STEPS).bind(id).fetch_all(&mut tx).await?;
    let steps = rows
        .into_iter()
        .map(crate::StepRecord::try_from)
        .collect::<crate::Result<Vec<_>>>()?;
    if steps.is_empty() && from.is_none() {
        // It ended while resolving its <AUTO> tags (no step was stored):
        // the tags are asked again.
        D::q(RESOLVE_AGAIN)
            .bind(id)
            .bind(now)
            .execute(&mut tx)
            .await?;
        crate::resolve::enqueue(&mut tx, id, now).await?;
        emit(
            &mut tx,
            id,
            "execution.resolving",
            None,
            serde_json::json!({"pipeline": execution.pipeline_name, "recovered": true}),
            now,
        )
        .await?;
        tx.notify_work().await?;
        tx.commit().await?;
        return Ok(Some(Vec::new()));
    }
    let plan = plan_steps(&execution.plan)?;
    let reset = steps_to_rerun(&steps, from)?;
    if reset.is_empty() {
        tx.rollback().await?;
        return Err(crate::StoreError::Conflict(format!(
            "execution '{id}' has nothing to recover: every step succeeded (name a step to run again from)"
        )));
    }
    for step in steps.iter().filter(|s| reset.contains(&s.step_id)) {
        // A step that asked a person asks again.
        crate::waits::forget(&mut tx, id, &step.step_id).await?;
        // Loop steps go back to their planned form; iterations they
        // added at run time are removed and will be expanded again.
        let definition = plan
            .get(&step.step_id)
            .cloned()
            .unwrap_or_else(|| step.definition.clone());
        let runtime_loop = plan.contains_key(&step.step_id)
            && matches!(
                definition.kind,
                orchestrator_core::StepKind::ForEach | orchestrator_core::StepKind::While
            );
        if runtime_loop {
            let prefix = format!("{}_", step.step_id);
            for child in steps
                .iter()
                .filter(|c| c.step_id.starts_with(&prefix) && !plan.contains_key(&c.step_id))
            {
                D::q(DELETE_STEP_DEPS)
                    .bind(id)
                    .bind(&child.step_id)
                    .execute(&mut tx)
                    .await?;
                D::q(DEQUEUE)
                    .bind(id)
                    .bind(&child.step_id)
                    .execute(&mut tx)
                    .await?;
                D::q(DELETE_STEP)
                    .bind(id)
                    .bind(&child.step_id)
                    .execute(&mut tx)
                    .await?;
            }
        }
        D::q(RESET_STEP)
            .bind(id)
            .bind(&step.step_id)
            .json(&definition.depends_on)
            .json(&definition)
            .bind(definition.kind.as_str())
            .execute(&mut tx)
            .await?;
        D::q(DEQUEUE)
            .bind(id)
            .bind(&step.step_id)
            .execute(&mut tx)
            .await?;
        D::q(REPLACE_DEPS_DELETE)
            .bind(id)
            .bind(&step.step_id)
            .execute(&mut tx)
            .await?;
        for dep in &definition.depends_on {
            D::q(INSERT_DEP)
                .bind(id)
                .bind(&step.step_id)
                .bind(dep)
                .execute(&mut tx)
                .await?;
        }
    }
    let rows: Vec<FlowRow> = D::q(SELECT_FLOW).bind(id).fetch_all(&mut tx).await?;
    let flow_steps = rows
        .into_iter()
        .map(FlowStep::try_from)
        .collect::<crate::Result<Vec<_>>>()?;
    let mut events = Vec::new();
    for ready in flow::runnable(&flow_steps) {
        ready_step(&mut tx, id, &ready, None, &mut events, now).await?;
    }
    emit_steps(&mut tx, id, events, now).await?;
    D::q(RECOUNT_OPEN).bind(id).execute(&mut tx).await?;
    D::q(REOPEN_EXECUTION)
        .bind(id)
        .bind(now)
        .execute(&mut tx)
        .await?;
    let mut rerun: Vec<&String> = reset.iter().collect();
    rerun.sort_by_key(|r| steps.iter().position(|s| &s.step_id == *r));
    emit(
        &mut tx,
        id,
        "execution.recovered",
        None,
        serde_json::json!({"from_checkpoint": from, "rerun": rerun}),
        now,
    )
    .await?;
    tx.notify_work().await?;
    tx.commit().await?;
    let mut reset: Vec<String> = reset.into_iter().collect();
    reset.sort_by_key(|r| steps.iter().position(|s| &s.step_id == r));
    Ok(Some(reset))
}

/// The planned steps of a stored plan, by id.
pub(crate) fn plan_steps(
    plan: &Value,
) -> crate::Result<std::collections::HashMap<String, PlannedStep>> {
    let plan: orchestrator_core::ExecutionPlan = serde_json::from_value(plan.clone())
        .map_err(|e| StoreError::Corrupt(format!("stored plan: {e}")))?;
    Ok(plan.steps.into_iter().map(|s| (s.id.clone(), s)).collect())
}

/// Which steps a recovery runs again (see [`crate::Store::recover_execution`]).
pub(crate) fn steps_to_rerun(
    steps: &[StepRecord],
    from: Option<&str>,
) -> crate::Result<std::collections::HashSet<String>> {
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
