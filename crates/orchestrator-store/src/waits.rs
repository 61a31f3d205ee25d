//! Steps that wait for a person: a running step asks (`wait_step`), gives up
//! its lease and becomes `waiting`; an answer (`answer_step`) or its deadline
//! passing (`expire_waits`) queues it again, and its tool reads the answer
//! (`get_wait`). Nothing runs and nothing is held meanwhile: a waiting step
//! is two rows.

use orchestrator_core::flow::ExecutionStatus;
use serde_json::Value;

use crate::dialect::{Dialect, Tx, conn};
use crate::events::emit;
use crate::executions::{RECOUNT_OPEN, lock_execution};
use crate::rows::WaitRow;

/// A step's question, and its answer once given.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WaitRecord {
    pub execution_id: String,
    pub step_id: String,
    /// The tool asking (`user-prompt`, `approval-gate`, `feedback-collection`).
    pub kind: String,
    /// What is asked and the answer's schema, as the tool wrote them.
    pub request: Value,
    /// Unix ms after which the step goes on without an answer.
    pub deadline: Option<i64>,
    pub created_at: i64,
    pub answer: Option<Value>,
    /// The name of the token that answered (`None` without auth).
    pub answered_by: Option<String>,
    pub answered_at: Option<i64>,
    /// The deadline passed before anyone answered.
    pub expired: bool,
}

/// Open questions (`$1` one execution, or all), oldest first, at most `$2`.
const LIST_OPEN: &str = "SELECT w.execution_id, w.step_id, w.kind, w.request, w.deadline, \
    w.created_at, w.answer, w.answered_by, w.answered_at, w.expired FROM step_waits w \
    JOIN steps s ON s.execution_id = w.execution_id AND s.step_id = w.step_id \
    WHERE w.answered_at IS NULL AND s.status = 'waiting' \
    AND ($1 IS NULL OR w.execution_id = $1) \
    ORDER BY w.created_at, w.execution_id, w.step_id LIMIT $2";

/// Ends the lease of the asking step (fenced by its token).
const END_LEASE: &str =
    "DELETE FROM step_queue WHERE execution_id = $1 AND step_id = $2 AND lease_token = $3";

const SET_WAITING: &str = "UPDATE steps SET status = 'waiting', parameters = $3 \
    WHERE execution_id = $1 AND step_id = $2";

const CANCEL_STEP: &str = "UPDATE steps SET status = 'cancelled', reason = 'execution_cancelled', \
    finished_at = $3 WHERE execution_id = $1 AND step_id = $2";

const FORGET: &str = "DELETE FROM step_waits WHERE execution_id = $1 AND step_id = $2";

const INSERT_WAIT: &str = "INSERT INTO step_waits (execution_id, step_id, kind, request, deadline, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6)";

const SELECT_ONE: &str = "SELECT w.execution_id, w.step_id, w.kind, w.request, w.deadline, \
    w.created_at, w.answer, w.answered_by, w.answered_at, w.expired \
    FROM step_waits w WHERE w.execution_id = $1 AND w.step_id = $2";

const STEP_STATUS: &str = "SELECT status FROM steps WHERE execution_id = $1 AND step_id = $2";

const RECORD_ANSWER: &str = "UPDATE step_waits SET answer = $3, answered_by = $4, answered_at = $5 \
    WHERE execution_id = $1 AND step_id = $2";

const RECORD_EXPIRED: &str = "UPDATE step_waits SET expired = TRUE, answered_at = $3 \
    WHERE execution_id = $1 AND step_id = $2";

/// Back to the queue, the attempt it used to ask not counted.
const REQUEUE_STEP: &str = "UPDATE steps SET status = 'ready', attempt = attempt - 1 \
    WHERE execution_id = $1 AND step_id = $2 AND status = 'waiting'";

const ENQUEUE: &str =
    "INSERT INTO step_queue (execution_id, step_id, run_after) VALUES ($1, $2, $3)";

const OVERDUE: &str = "SELECT w.execution_id, w.step_id FROM step_waits w \
    WHERE w.answered_at IS NULL AND w.deadline IS NOT NULL AND w.deadline < $1 \
    ORDER BY w.deadline LIMIT 100";

pub(crate) async fn wait_step<D: Dialect>(
    s: &D,
    step: &crate::ClaimedStep,
    kind: &str,
    request: &Value,
    parameters: Option<&Value>,
    deadline: Option<i64>,
) -> crate::Result<()> {
    let now = crate::now_ms();
    let mut tx = Tx::begin(s).await?;
    wait_in_tx(
        &mut tx,
        &step.execution_id,
        &step.step_id,
        &step.lease_token,
        kind,
        request,
        parameters,
        deadline,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// [`wait_step`] inside a transaction (creating a child execution makes its
/// parent's step wait in the same commit).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn wait_in_tx<D: Dialect>(
    tx: &mut Tx<'_, D>,
    execution_id: &str,
    step_id: &str,
    lease_token: &str,
    kind: &str,
    request: &Value,
    parameters: Option<&Value>,
    deadline: Option<i64>,
    now: i64,
) -> crate::Result<()> {
    let released = D::q(END_LEASE)
        .bind(execution_id)
        .bind(step_id)
        .bind(lease_token)
        .execute(tx)
        .await?;
    if released == 0 {
        return Err(crate::StoreError::LeaseLost {
            step: step_id.to_string(),
        });
    }
    let status = lock_execution(tx, execution_id, now).await?;
    if status.is_none_or(ExecutionStatus::is_terminal) {
        // Ended while the step ran: it asks nobody.
        D::q(CANCEL_STEP)
            .bind(execution_id)
            .bind(step_id)
            .bind(now)
            .execute(tx)
            .await?;
        D::q(RECOUNT_OPEN).bind(execution_id).execute(tx).await?;
        return Ok(());
    }
    D::q(SET_WAITING)
        .bind(execution_id)
        .bind(step_id)
        .json_opt(parameters)
        .execute(tx)
        .await?;
    D::q(FORGET)
        .bind(execution_id)
        .bind(step_id)
        .execute(tx)
        .await?;
    D::q(INSERT_WAIT)
        .bind(execution_id)
        .bind(step_id)
        .bind(kind)
        .json(request)
        .bind(deadline)
        .bind(now)
        .execute(tx)
        .await?;
    emit(
        tx,
        execution_id,
        "step.waiting",
        Some(step_id),
        serde_json::json!({"kind": kind, "request": request, "deadline": deadline}),
        now,
    )
    .await?;
    Ok(())
}

const PARENT_OF: &str = "SELECT parent_execution_id, parent_step_id FROM executions WHERE id = $1";

const CHILD_END: &str = "SELECT status, outputs, error FROM executions WHERE id = $1";

/// Waits for children that have ended (a missed notice: the parent's step
/// waited after its child ended, or a process died between the two).
const ENDED_CHILDREN: &str = "SELECT e.id FROM step_waits w \
    JOIN executions e ON e.parent_execution_id = w.execution_id AND e.parent_step_id = w.step_id \
    WHERE w.answered_at IS NULL AND w.kind = 'pipeline-executor' \
    AND e.status IN ('succeeded', 'failed', 'cancelled') ORDER BY e.id LIMIT 100";

/// When `child_id` (just ended, in this transaction) has a parent step
/// waiting for it, records how it ended as the step's answer and queues the
/// step again.
pub(crate) async fn notify_parent<D: Dialect>(
    tx: &mut Tx<'_, D>,
    child_id: &str,
    now: i64,
) -> crate::Result<bool> {
    let parent: Option<(Option<String>, Option<String>)> =
        D::q(PARENT_OF).bind(child_id).fetch_optional(tx).await?;
    let Some((Some(parent_id), Some(step_id))) = parent else {
        return Ok(false);
    };
    let wait: Option<WaitRow> = D::q(SELECT_ONE)
        .bind(&parent_id)
        .bind(&step_id)
        .fetch_optional(tx)
        .await?;
    let Some(wait) = wait.map(WaitRecord::from) else {
        return Ok(false);
    };
    if wait.kind != "pipeline-executor"
        || wait.answered_at.is_some()
        || wait.request["execution_id"].as_str() != Some(child_id)
    {
        return Ok(false);
    }
    let (status, outputs, error): (String, Option<sqlx::types::Json<Value>>, Option<String>) =
        D::q(CHILD_END).bind(child_id).fetch_one(tx).await?;
    // Read under the child's lock: a child recovered since the reconciler
    // looked is running again, and its parent goes on waiting.
    if !crate::executions::has_ended(&status) {
        return Ok(false);
    }
    let answer = serde_json::json!({
        "execution_id": child_id,
        "status": status,
        "outputs": outputs.map(|o| o.0),
        "error": error,
    });
    D::q(RECORD_ANSWER)
        .bind(&parent_id)
        .bind(&step_id)
        .json(&answer)
        .bind(None::<&str>)
        .bind(now)
        .execute(tx)
        .await?;
    requeue(tx, &parent_id, &step_id, now).await?;
    emit(
        tx,
        &parent_id,
        "step.answered",
        Some(&step_id),
        serde_json::json!({"kind": "pipeline-executor", "execution_id": child_id, "status": status}),
        now,
    )
    .await?;
    tx.notify_work().await?;
    Ok(true)
}

pub(crate) async fn get_wait<D: Dialect>(
    s: &D,
    execution_id: &str,
    step_id: &str,
) -> crate::Result<Option<WaitRecord>> {
    let row: Option<WaitRow> = D::q(SELECT_ONE)
        .bind(execution_id)
        .bind(step_id)
        .fetch_optional(&mut *conn(s).await?)
        .await?;
    Ok(row.map(WaitRecord::from))
}

/// Open questions (of one execution, or all), oldest first.
pub(crate) async fn list_waits<D: Dialect>(
    s: &D,
    execution_id: Option<&str>,
    limit: u32,
) -> crate::Result<Vec<WaitRecord>> {
    let rows: Vec<WaitRow> = D::q(LIST_OPEN)
        .bind(execution_id)
        .bind(i64::from(limit.max(1)))
        .fetch_all(&mut *conn(s).await?)
        .await?;
    Ok(rows.into_iter().map(WaitRecord::from).collect())
}

/// Records an answer and queues the step again. `None` when there is no
/// such execution or step; [`crate::StoreError::Conflict`] when the step is
/// not waiting (answered already, timed out, cancelled).
pub(crate) async fn answer_step<D: Dialect>(
    s: &D,
    execution_id: &str,
    step_id: &str,
    answer: &Value,
    answered_by: Option<&str>,
) -> crate::Result<Option<WaitRecord>> {
    let now = crate::now_ms();
    let mut tx = Tx::begin(s).await?;
    if lock_execution(&mut tx, execution_id, now).await?.is_none() {
        tx.rollback().await?;
        return Ok(None);
    }
    let status: Option<String> = D::q(STEP_STATUS)
        .bind(execution_id)
        .bind(step_id)
        .scalar_optional(&mut tx)
        .await?;
    let Some(status) = status else {
        tx.rollback().await?;
        return Ok(None);
    };
    let wait: Option<WaitRow> = D::q(SELECT_ONE)
        .bind(execution_id)
        .bind(step_id)
        .fetch_optional(&mut tx)
        .await?;
    let conflict = |message: String| Err(crate::StoreError::Conflict(message));
    let wait = match wait.map(WaitRecord::from) {
        Some(w) if w.expired => {
            tx.rollback().await?;
            return conflict(format!(
                "step '{step_id}' stopped waiting: its deadline passed"
            ));
        }
        Some(w) if w.answered_at.is_some() => {
            tx.rollback().await?;
            return conflict(format!(
                "step '{step_id}' was answered already{}",
                w.answered_by
                    .map(|by| format!(" (by '{by}')"))
                    .unwrap_or_default()
            ));
        }
        Some(w) if status == "waiting" => w,
        _ => {
            tx.rollback().await?;
            return conflict(format!(
                "step '{step_id}' is {status}, not waiting for an answer"
            ));
        }
    };
    D::q(RECORD_ANSWER)
        .bind(execution_id)
        .bind(step_id)
        .json(answer)
        .bind(answered_by)
        .bind(now)
        .execute(&mut tx)
        .await?;
    requeue(&mut tx, execution_id, step_id, now).await?;
    emit(
        &mut tx,
        execution_id,
        "step.answered",
        Some(step_id),
        serde_json::json!({"kind": wait.kind, "answered_by": answered_by}),
        now,
    )
    .await?;
    tx.notify_work().await?;
    tx.commit().await?;
    Ok(Some(WaitRecord {
        answer: Some(answer.clone()),
        answered_by: answered_by.map(str::to_string),
        answered_at: Some(now),
        ..wait
    }))
}

async fn requeue<D: Dialect>(
    tx: &mut Tx<'_, D>,
    execution_id: &str,
    step_id: &str,
    now: i64,
) -> crate::Result<()> {
    let moved = D::q(REQUEUE_STEP)
        .bind(execution_id)
        .bind(step_id)
        .execute(tx)
        .await?;
    if moved > 0 {
        D::q(ENQUEUE)
            .bind(execution_id)
            .bind(step_id)
            .bind(now)
            .execute(tx)
            .await?;
    }
    Ok(())
}

/// Queues again the waiting steps whose deadline passed (their tools then
/// take the default or fail); returns how many.
pub(crate) async fn expire_waits<D: Dialect>(s: &D) -> crate::Result<u64> {
    let now = crate::now_ms();
    let ended: Vec<String> = D::q(ENDED_CHILDREN).scalars(&mut *conn(s).await?).await?;
    let mut woken = 0;
    if !ended.is_empty() {
        let mut tx = Tx::begin(s).await?;
        for child in &ended {
            lock_execution(&mut tx, child, now).await?;
            if notify_parent(&mut tx, child, now).await? {
                woken += 1;
            }
        }
        tx.commit().await?;
    }
    // Looked at often: a read first, the write turn only when due.
    let due: Vec<(String, String)> = D::q(OVERDUE)
        .bind(now)
        .fetch_all(&mut *conn(s).await?)
        .await?;
    if due.is_empty() {
        return Ok(woken);
    }
    let mut tx = Tx::begin(s).await?;
    let mut expired = 0;
    for (execution_id, step_id) in &due {
        let status = lock_execution(&mut tx, execution_id, now).await?;
        D::q(RECORD_EXPIRED)
            .bind(execution_id)
            .bind(step_id)
            .bind(now)
            .execute(&mut tx)
            .await?;
        if status.is_none_or(ExecutionStatus::is_terminal) {
            // The wait ends with its execution.
            continue;
        }
        requeue(&mut tx, execution_id, step_id, now).await?;
        emit(
            &mut tx,
            execution_id,
            "step.wait_expired",
            Some(step_id),
            serde_json::json!({}),
            now,
        )
        .await?;
        expired += 1;
    }
    if expired > 0 {
        tx.notify_work().await?;
    }
    tx.commit().await?;
    Ok(expired + woken)
}

/// Forgets a step's question and answer (it runs again from the start).
pub(crate) async fn forget<D: Dialect>(
    tx: &mut Tx<'_, D>,
    execution_id: &str,
    step_id: &str,
) -> crate::Result<()> {
    D::q(FORGET)
        .bind(execution_id)
        .bind(step_id)
        .execute(tx)
        .await?;
    Ok(())
}
