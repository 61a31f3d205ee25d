//! The resolving phase: an execution whose `<AUTO>` tags ask a model is
//! stored at once with status `resolving` and no steps, and a row in
//! `resolve_queue`. A process leases the row, asks the models, compiles the
//! answered pipeline and then either stores its steps (the execution is
//! `queued`) or fails the execution, in one transaction fenced by the lease.
//!
//! An expired lease (the process died or hung) lets any process take the row
//! over; cancelling the execution or passing its deadline removes the row.

use crate::dialect::{Dialect, Tx, conn};
use crate::events::emit;
use crate::executions::{insert_steps, lock_execution, stop_execution};
use crate::rows::ExecutionRow;

const ENQUEUE: &str =
    "INSERT INTO resolve_queue (execution_id, run_after, attempts) VALUES ($1, $2, 0)";

/// Cheap look first (no write turn) whether anything is due.
const ANY_DUE: &str = "SELECT execution_id FROM resolve_queue \
    WHERE run_after <= $1 AND (locked_until IS NULL OR locked_until < $1) \
    ORDER BY run_after LIMIT 1";

const DUE: &str = "SELECT execution_id FROM resolve_queue \
    WHERE run_after <= $1 AND (locked_until IS NULL OR locked_until < $1) \
    ORDER BY run_after, execution_id LIMIT $2";

/// Conditional: another process may have taken the row in the meantime
/// (PostgreSQL re-checks the condition after waiting for its lock).
const LEASE: &str = "UPDATE resolve_queue SET locked_by = $2, lease_token = $3, locked_until = $4, \
    attempts = attempts + 1 \
    WHERE execution_id = $1 AND run_after <= $5 AND (locked_until IS NULL OR locked_until < $5) \
    RETURNING attempts";

const RENEW: &str = "UPDATE resolve_queue SET locked_until = $3 \
    WHERE execution_id = $1 AND lease_token = $2 RETURNING execution_id";

const HELD: &str =
    "SELECT execution_id FROM resolve_queue WHERE execution_id = $1 AND lease_token = $2";

const RELEASE: &str = "UPDATE resolve_queue SET locked_by = NULL, lease_token = NULL, \
    locked_until = NULL, run_after = $3 WHERE execution_id = $1 AND lease_token = $2";

pub(crate) const DEQUEUE: &str = "DELETE FROM resolve_queue WHERE execution_id = $1";

const SET_PLAN: &str = "UPDATE execution_sources SET plan = $2 WHERE execution_id = $1";

const SET_QUEUED: &str = "UPDATE executions SET status = 'queued', pipeline_id = $2, \
    pipeline_name = $3, inputs = $4, updated_at = $5 WHERE id = $1";

/// Puts a new execution in the resolve queue (inside its creating transaction).
pub(crate) async fn enqueue<D: Dialect>(
    tx: &mut Tx<'_, D>,
    execution_id: &str,
    now: i64,
) -> crate::Result<()> {
    D::q(ENQUEUE)
        .bind(execution_id)
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

pub(crate) async fn claim_resolving<D: Dialect>(
    s: &D,
    worker: &str,
    limit: u32,
    lease_ms: i64,
) -> crate::Result<Vec<crate::ResolveJob>> {
    let now = crate::now_ms();
    let due: Option<String> = D::q(ANY_DUE)
        .bind(now)
        .scalar_optional(&mut *conn(s).await?)
        .await?;
    if due.is_none() {
        return Ok(Vec::new());
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut tx = Tx::begin(s).await?;
    let ids: Vec<String> = D::q(DUE)
        .bind(now)
        .bind(i64::from(limit.max(1)))
        .scalars(&mut tx)
        .await?;
    let mut leased = Vec::new();
    for id in ids {
        let attempts: Option<i64> = D::q(LEASE)
            .bind(&id)
            .bind(worker)
            .bind(&token)
            .bind(now.saturating_add(lease_ms))
            .bind(now)
            .scalar_optional(&mut tx)
            .await?;
        if let Some(attempts) = attempts {
            leased.push((id, attempts));
        }
    }
    let mut jobs = Vec::with_capacity(leased.len());
    for (id, attempts) in leased {
        let row: Option<ExecutionRow> = D::q(crate::executions::SELECT_EXECUTION)
            .bind(&id)
            .fetch_optional(&mut tx)
            .await?;
        let Some(row) = row else { continue };
        let execution = crate::ExecutionRecord::try_from(row)?;
        if execution.status != orchestrator_core::flow::ExecutionStatus::Resolving {
            // Ended some other way (cancelled, timed out): nothing to do.
            D::q(DEQUEUE).bind(&id).execute(&mut tx).await?;
            continue;
        }
        jobs.push(crate::ResolveJob {
            lease_token: token.clone(),
            attempts,
            execution,
        });
    }
    tx.commit().await?;
    Ok(jobs)
}

pub(crate) async fn renew_resolving<D: Dialect>(
    s: &D,
    execution_id: &str,
    lease_token: &str,
    lease_ms: i64,
) -> crate::Result<bool> {
    let _writer = s.write_guard().await;
    let held: Option<String> = D::q(RENEW)
        .bind(execution_id)
        .bind(lease_token)
        .bind(crate::now_ms().saturating_add(lease_ms))
        .scalar_optional(&mut *conn(s).await?)
        .await?;
    Ok(held.is_some())
}

pub(crate) async fn release_resolving<D: Dialect>(
    s: &D,
    execution_id: &str,
    lease_token: &str,
) -> crate::Result<()> {
    let _writer = s.write_guard().await;
    D::q(RELEASE)
        .bind(execution_id)
        .bind(lease_token)
        .bind(crate::now_ms())
        .execute(&mut *conn(s).await?)
        .await?;
    Ok(())
}

pub(crate) async fn finish_resolving<D: Dialect>(
    s: &D,
    execution_id: &str,
    lease_token: &str,
    outcome: crate::Resolved,
) -> crate::Result<bool> {
    let now = crate::now_ms();
    let mut tx = Tx::begin(s).await?;
    let status = lock_execution(&mut tx, execution_id, now).await?;
    let held: Option<String> = D::q(HELD)
        .bind(execution_id)
        .bind(lease_token)
        .scalar_optional(&mut tx)
        .await?;
    if status != Some(orchestrator_core::flow::ExecutionStatus::Resolving) || held.is_none() {
        // Cancelled, timed out, or taken over by another process.
        tx.rollback().await?;
        return Ok(false);
    }
    D::q(DEQUEUE).bind(execution_id).execute(&mut tx).await?;
    match outcome {
        crate::Resolved::Planned {
            pipeline_id,
            pipeline_name,
            plan,
            inputs,
            steps,
        } => {
            D::q(SET_PLAN)
                .bind(execution_id)
                .json(&plan)
                .execute(&mut tx)
                .await?;
            D::q(SET_QUEUED)
                .bind(execution_id)
                .bind(&pipeline_id)
                .bind(&pipeline_name)
                .json(&inputs)
                .bind(now)
                .execute(&mut tx)
                .await?;
            insert_steps(&mut tx, execution_id, &steps, 0, now, None).await?;
            emit(
                &mut tx,
                execution_id,
                "execution.queued",
                None,
                serde_json::json!({"pipeline": pipeline_name, "steps": steps.len()}),
                now,
            )
            .await?;
            tx.notify_work().await?;
        }
        crate::Resolved::Failed(error) => {
            stop_execution(&mut tx, execution_id, "failed", &error, now).await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}
