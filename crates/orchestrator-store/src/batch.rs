//! Finishing many steps at once (group commit): a batch whose steps all
//! succeeded or were skipped without a jump is written in a few multi-row
//! statements, each execution's row locked once.

use crate::dialect::{Dialect, Tx};
use crate::events::insert_events;
use crate::executions::{RECOUNT_OPEN, has_ended};
use crate::finish::{complete_execution, settled_status};
use crate::queue::ready_step;
use crate::rows::CloseRow;
use crate::sql::Values;

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

const INSERT_CHECKPOINTS_PREFIX: &str = "INSERT INTO checkpoints \
    (execution_id, step_id, attempt, status, parameters, result, error, error_type, started_at, finished_at, created_at, worker) ";

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
        AND us.status IN ('pending', 'ready', 'running', 'retrying', 'waiting')) \
    AND d.execution_id = ";

/// Locks the execution's row and counts `$3` of its steps closed; returns
/// its status, the steps still open, its last event number and the context
/// a step handed to a worker here runs with (a [`crate::rows::CloseRow`]).
pub(crate) const CLOSE_STEPS: &str = "UPDATE executions SET open_steps = open_steps - $3, updated_at = $2 \
    WHERE id = $1 RETURNING status, open_steps, last_event_seq, pipeline_id, inputs, options, created_at, started_at";

/// `finish_in` for a batch whose steps all succeeded or were
/// skipped without a jump (only their dependents can change): the
/// same writes, in a few multi-row statements, each execution's
/// row locked once. Results in batch order; a step whose lease is
/// gone is refused without touching the others.
pub(crate) async fn finish_set_in<D: Dialect>(
    tx: &mut Tx<'_, D>,
    batch: &[(crate::ClaimedStep, crate::StepResult)],
    outputs: crate::OutputRenderer<'_>,
    handoff: Option<crate::Handoff>,
    now: i64,
) -> crate::Result<Vec<crate::Result<crate::FinishOutcome>>> {
    let held = record_results(tx, batch, now).await?;
    let mut results: Vec<crate::Result<crate::FinishOutcome>> = batch
        .iter()
        .map(|(step, _)| {
            Err(crate::StoreError::LeaseLost {
                step: step.step_id.clone(),
            })
        })
        .collect();
    // Held steps by execution, each in batch order.
    let mut by_execution: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, (step, _)) in batch.iter().enumerate() {
        if held[i] {
            by_execution
                .entry(step.execution_id.as_str())
                .or_default()
                .push(i);
        }
    }
    if by_execution.is_empty() {
        return Ok(results);
    }
    let mut any_ready = false;
    for (execution_id, idxs) in &by_execution {
        // The execution's row: locked once for all its steps here.
        let closed: CloseRow = D::q(CLOSE_STEPS)
            .bind(*execution_id)
            .bind(now)
            .bind(idxs.len() as i64)
            .fetch_one(tx)
            .await?;
        let (status, open, last_seq) = (
            closed.status.clone(),
            closed.open_steps,
            closed.last_event_seq,
        );
        // Read once, for the steps handed off here.
        let mut context: Option<std::sync::Arc<crate::StepContext>> = None;
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
        if has_ended(&status) {
            // Cancelled while these steps ran: keep their
            // results, start nothing new.
            insert_events(
                tx,
                execution_id,
                last_seq + 1,
                std::mem::take(&mut events),
                now,
            )
            .await?;
            D::q(RECOUNT_OPEN).bind(*execution_id).execute(tx).await?;
        } else {
            let mut query = Values::<D::DB>::new(READY_DEPENDENTS_PREFIX);
            query
                .bind(now)
                .push(READY_DEPENDENTS_MIDDLE)
                .bind(*execution_id)
                .push(" AND d.depends_on IN (");
            for (k, &i) in idxs.iter().enumerate() {
                if k > 0 {
                    query.push(", ");
                }
                query.bind(&batch[i].0.step_id);
            }
            query.push(") ORDER BY s.position");
            let pairs: Vec<(String, String, bool)> = query.build().fetch_all(tx).await?;
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
                let k = deps
                    .iter()
                    .copied()
                    .find(|&k| tries[k].is_some())
                    .unwrap_or(deps[0]);
                let take = tries[k]
                    .take()
                    .map(|h| (h, batch[idxs[k]].0.worker.as_str()));
                match ready_step(tx, execution_id, candidate, take, &mut events, now).await? {
                    Some(mut taken) => {
                        if context.is_none() {
                            context = Some(std::sync::Arc::new(closed.context()?));
                        }
                        taken.context = context.clone();
                        next[k] = Some(taken);
                    }
                    None => {
                        ready[k].push(candidate.clone());
                        any_ready = true;
                    }
                }
            }
            insert_events(
                tx,
                execution_id,
                last_seq + 1,
                std::mem::take(&mut events),
                now,
            )
            .await?;
            if open <= 0 {
                finished = settled_status(tx, execution_id).await?;
                if let Some(status) = finished {
                    complete_execution(tx, execution_id, status, outputs, now).await?;
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
    if any_ready && let Some(sql) = D::NOTIFY_WORK {
        D::q(sql).execute(tx).await?;
    }
    Ok(results)
}

/// Ends the leases of finished steps (fencing, one statement) and
/// records the results of those still held: step rows and
/// checkpoints, a statement each. Returns, in batch order, whether
/// each lease was still held (the others were not touched).
pub(crate) async fn record_results<D: Dialect>(
    tx: &mut Tx<'_, D>,
    batch: &[(crate::ClaimedStep, crate::StepResult)],
    now: i64,
) -> crate::Result<Vec<bool>> {
    if let Some((prefix, suffix)) = D::RECORD_RESULTS {
        let mut record = Values::<D::DB>::new(prefix);
        for (n, (step, result)) in batch.iter().enumerate() {
            record
                .row()
                .bind(&step.execution_id)
                .bind(&step.step_id)
                .bind(&step.lease_token)
                .bind(result.status.as_str())
                .json_opt(result.parameters.as_ref())
                .json_opt(result.envelope.as_ref())
                .bind(&result.error)
                .bind(&result.error_type)
                .bind(&result.reason)
                .bind(result.timed_out)
                .bind(result.started_at)
                .bind(result.finished_at)
                .bind(step.attempt)
                .bind(&step.worker)
                .bind(now)
                .bind(n as i64);
        }
        record.push(suffix);
        let recorded: Vec<(String, String)> = record.build().fetch_all(tx).await?;
        return Ok(returned(batch, recorded));
    }
    let mut release = Values::<D::DB>::new(D::RELEASE_MANY_PREFIX);
    for (step, _) in batch {
        release
            .row()
            .bind(&step.execution_id)
            .bind(&step.step_id)
            .bind(&step.lease_token);
    }
    release.push(D::RELEASE_MANY_SUFFIX);
    let released: Vec<(String, String)> = release.build().fetch_all(tx).await?;
    let is_held = returned(batch, released);
    let held: Vec<&(crate::ClaimedStep, crate::StepResult)> = batch
        .iter()
        .zip(&is_held)
        .filter(|(_, held)| **held)
        .map(|(item, _)| item)
        .collect();
    if held.is_empty() {
        return Ok(is_held);
    }
    let mut update = Values::<D::DB>::new(UPDATE_STEP_RESULTS_PREFIX);
    for (step, result) in &held {
        update
            .row()
            .bind(&step.execution_id)
            .bind(&step.step_id)
            .bind(result.status.as_str())
            .json_opt(result.parameters.as_ref())
            .json_opt(result.envelope.as_ref())
            .bind(&result.error)
            .bind(&result.error_type)
            .bind(&result.reason)
            .bind(result.timed_out)
            .bind(result.finished_at);
    }
    update.push(UPDATE_STEP_RESULTS_SUFFIX);
    update.build().execute(tx).await?;
    let attempts: Vec<(&crate::ClaimedStep, &str, &crate::StepResult)> = held
        .iter()
        .map(|(step, result)| (step, result.status.as_str(), result))
        .collect();
    insert_checkpoints(tx, &attempts, now).await?;
    Ok(is_held)
}

/// For each step of the batch, in order, whether a statement returned it
/// (as execution and step id).
fn returned(
    batch: &[(crate::ClaimedStep, crate::StepResult)],
    rows: Vec<(String, String)>,
) -> Vec<bool> {
    let rows: std::collections::HashSet<(String, String)> = rows.into_iter().collect();
    batch
        .iter()
        .map(|(step, _)| rows.contains(&(step.execution_id.clone(), step.step_id.clone())))
        .collect()
}

/// Records attempts of steps (step, status, result), one
/// statement for all.
pub(crate) async fn insert_checkpoints<D: Dialect>(
    tx: &mut Tx<'_, D>,
    attempts: &[(&crate::ClaimedStep, &str, &crate::StepResult)],
    now: i64,
) -> crate::Result<()> {
    let mut insert = Values::<D::DB>::new(INSERT_CHECKPOINTS_PREFIX);
    for (step, status, result) in attempts {
        insert
            .row()
            .bind(&step.execution_id)
            .bind(&step.step_id)
            .bind(step.attempt)
            .bind(*status)
            .json_opt(result.parameters.as_ref())
            .json_opt(result.envelope.as_ref())
            .bind(&result.error)
            .bind(&result.error_type)
            .bind(result.started_at)
            .bind(result.finished_at)
            .bind(now)
            .bind(&step.worker);
    }
    insert.build().execute(tx).await?;
    Ok(())
}

/// Records one attempt of a step.
pub(crate) async fn insert_checkpoint<D: Dialect>(
    tx: &mut Tx<'_, D>,
    step: &crate::ClaimedStep,
    status: &str,
    result: &crate::StepResult,
    now: i64,
) -> crate::Result<()> {
    insert_checkpoints(tx, &[(step, status, result)], now).await
}
