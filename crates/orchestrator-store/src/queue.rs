//! The step queue and its leases: claiming runnable steps, heartbeats,
//! handing back expired or released leases, and making a step ready.
//!
//! A step is in `step_queue` exactly while it is ready, leased or waiting
//! for a retry; claims only ever look at that small table.

use crate::dialect::{Dialect, Tx, conn};
use crate::events::{emit, emit_steps};
use crate::executions::{SELECT_CONTEXT, context_of};
use crate::rows::{ClaimRow, ContextRow, StepRow};
use crate::sql::{TextList, Values};

const ENQUEUE: &str =
    "INSERT INTO step_queue (execution_id, step_id, run_after) VALUES ($1, $2, $3)";

const MARK_READY: &str =
    "UPDATE steps SET status = 'ready' WHERE execution_id = $1 AND step_id = $2";

/// Queues a step already leased to a worker (a hand-off).
const ENQUEUE_LEASED: &str = "INSERT INTO step_queue \
    (execution_id, step_id, run_after, locked_by, lease_token, locked_until) VALUES ($1, $2, $3, $4, $5, $6)";

const NEXT_RUN_AFTER: &str = "SELECT MIN(run_after) FROM step_queue WHERE locked_by IS NULL";

/// Marks a claimed step running (attempt + 1) and returns it (`$1` execution, `$2` step, `$3` now).
pub(crate) const START_STEP: &str = "UPDATE steps SET status = 'running', attempt = attempt + 1, \
    started_at = COALESCE(started_at, $3) WHERE execution_id = $1 AND step_id = $2 \
    RETURNING execution_id, step_id, position, status, attempt, max_attempts, depends_on, definition, \
    parameters, result, error, error_type, reason, timed_out, started_at, finished_at";

/// Starts claimed steps: `VALUES` of execution and step ids, then the start
/// time, go between the pieces. (Joined, not `(…) IN (VALUES …)`, which
/// SQLite answers with a scan of every step.)
pub(crate) const START_STEPS_PREFIX: &str = "WITH v (eid, sid) AS (";

pub(crate) const START_STEPS_MIDDLE: &str = ") UPDATE steps SET status = 'running', attempt = attempt + 1, \
    started_at = COALESCE(started_at, ";

pub(crate) const START_STEPS_SUFFIX: &str = ") FROM v WHERE steps.execution_id = v.eid AND steps.step_id = v.sid \
    RETURNING execution_id, step_id, position, status, attempt, max_attempts, \
    depends_on, definition, parameters, result, error, error_type, reason, timed_out, started_at, finished_at";

/// A reaped step is runnable again.
const BACK_TO_READY: &str = "UPDATE steps SET status = 'ready' WHERE execution_id = $1 AND step_id = $2 AND status = 'running'";

/// A step handed back at shutdown did not really get its attempt.
const BACK_TO_READY_UNCOUNTED: &str = "UPDATE steps SET status = 'ready', attempt = attempt - 1 \
    WHERE execution_id = $1 AND step_id = $2 AND status = 'running' AND attempt > 0";

const QUEUE_DEPTH: &str = "SELECT COUNT(*) FROM step_queue";

const START_EXECUTION: &str =
    "UPDATE executions SET status = 'running', started_at = $2 WHERE id = $1 AND status = 'queued'";

pub(crate) async fn claim_steps<D: Dialect>(
    s: &D,
    worker: &str,
    limit: u32,
    lease_ms: i64,
) -> crate::Result<Vec<crate::ClaimedStep>> {
    if limit == 0 {
        return Ok(vec![]);
    }
    let now = crate::now_ms();
    let mut tx = Tx::begin(s).await?;
    let claimed: Vec<ClaimRow> = D::q(D::CLAIM)
        .bind(worker)
        .bind(now)
        .bind(now + lease_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut tx)
        .await?;
    let out = start_claimed(&mut tx, claimed, worker, now).await?;
    tx.commit().await?;
    Ok(out)
}

/// Starts steps whose queue rows were just leased to `worker`: marks
/// them running, each execution running (once), reads each execution's
/// context once for its steps, and writes their events.
pub(crate) async fn start_claimed<D: Dialect>(
    tx: &mut Tx<'_, D>,
    mut claimed: Vec<ClaimRow>,
    worker: &str,
    now: i64,
) -> crate::Result<Vec<crate::ClaimedStep>> {
    // Executions' rows are locked in one order by every claimer.
    claimed.sort_by(|a, b| (&a.execution_id, &a.step_id).cmp(&(&b.execution_id, &b.step_id)));
    // Every step row first (one statement); then each
    // execution's row (locked by its events), as briefly as can be.
    let mut rows: std::collections::HashMap<(String, String), crate::StepRecord> =
        std::collections::HashMap::with_capacity(claimed.len());
    // 500 rows per statement (a claim may be as large as the
    // worker's slots).
    for chunk in claimed.chunks(500) {
        let mut start = Values::<D::DB>::new(START_STEPS_PREFIX);
        for c in chunk {
            start.row().bind(&c.execution_id).bind(&c.step_id);
        }
        start
            .push(START_STEPS_MIDDLE)
            .bind(now)
            .push(START_STEPS_SUFFIX);
        let started: Vec<StepRow> = start.build().fetch_all(&mut *tx).await?;
        for row in started {
            let record = crate::StepRecord::try_from(row)?;
            rows.insert(
                (record.execution_id.clone(), record.step_id.clone()),
                record,
            );
        }
    }
    let mut out: Vec<crate::ClaimedStep> = Vec::with_capacity(claimed.len());
    for c in claimed {
        let step = rows
            .remove(&(c.execution_id.clone(), c.step_id.clone()))
            .ok_or_else(|| {
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
            context: None,
        });
    }
    // Each execution (claims come sorted by it): started once,
    // then its steps' events together.
    for group in out.chunk_by_mut(|p, q| p.execution_id == q.execution_id) {
        let execution_id = group[0].execution_id.clone();
        let execution_id = &execution_id;
        let started = D::q(START_EXECUTION)
            .bind(execution_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        // Its context, read once for the steps claimed together (they
        // need not read it again, each on its own).
        let context: Option<ContextRow> = D::q(SELECT_CONTEXT)
            .bind(execution_id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = context {
            let context = std::sync::Arc::new(context_of(row)?);
            for step in group.iter_mut() {
                step.context = Some(std::sync::Arc::clone(&context));
            }
        }
        if started == 1 {
            emit(
                tx,
                execution_id,
                "execution.started",
                None,
                serde_json::json!({"status": "running"}),
                now,
            )
            .await?;
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
        emit_steps(tx, execution_id, events, now).await?;
    }
    Ok(out)
}

/// Makes `step_id` ready: queued for any worker, or with `take`
/// (a hand-off and the worker whose step settled it) leased to
/// that worker and started, as a claim would (returned). Its
/// events are added to `events`, for the caller (who holds the
/// execution's row) to write.
pub(crate) async fn ready_step<D: Dialect>(
    tx: &mut Tx<'_, D>,
    execution_id: &str,
    step_id: &str,
    take: Option<(crate::Handoff, &str)>,
    events: &mut Vec<(String, String, serde_json::Value)>,
    now: i64,
) -> crate::Result<Option<crate::ClaimedStep>> {
    events.push((
        "step.ready".to_string(),
        step_id.to_string(),
        serde_json::json!({}),
    ));
    let Some((handoff, worker)) = take else {
        D::q(MARK_READY)
            .bind(execution_id)
            .bind(step_id)
            .execute(tx)
            .await?;
        D::q(ENQUEUE)
            .bind(execution_id)
            .bind(step_id)
            .bind(now)
            .execute(tx)
            .await?;
        return Ok(None);
    };
    let lease_token = uuid::Uuid::new_v4().simple().to_string();
    // Both statements take the same arguments.
    let leased = |sql| {
        D::q(sql)
            .bind(execution_id)
            .bind(step_id)
            .bind(now)
            .bind(worker)
            .bind(lease_token.clone())
            .bind(now + handoff.lease_ms)
    };
    let row: StepRow = if let Some(sql) = D::START_HANDED_OFF {
        leased(sql).fetch_one(tx).await?
    } else {
        leased(ENQUEUE_LEASED).execute(tx).await?;
        D::q(START_STEP)
            .bind(execution_id)
            .bind(step_id)
            .bind(now)
            .fetch_one(tx)
            .await?
    };
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
        context: None,
    }))
}

pub(crate) async fn heartbeat<D: Dialect>(
    s: &D,
    tokens: &[String],
    lease_ms: i64,
) -> crate::Result<crate::Heartbeat> {
    if tokens.is_empty() {
        return Ok(crate::Heartbeat::default());
    }
    let held: Vec<String> = D::q(D::HEARTBEAT)
        .bind(crate::now_ms() + lease_ms)
        .bind(TextList(tokens))
        .scalars(&mut *conn(s).await?)
        .await?;
    let cancelled: Vec<String> = D::q(D::CANCELLED_LEASES)
        .bind(TextList(tokens))
        .scalars(&mut *conn(s).await?)
        .await?;
    Ok(crate::Heartbeat { held, cancelled })
}

pub(crate) async fn reap_expired_leases<D: Dialect>(s: &D) -> crate::Result<u64> {
    let now = crate::now_ms();
    let mut tx = Tx::begin(s).await?;
    let reaped: Vec<(String, String)> = D::q(D::REAP).bind(now).fetch_all(&mut tx).await?;
    // A lost worker's attempt counts.
    let n = back_to_ready(&mut tx, reaped, BACK_TO_READY, "worker_lost", now).await?;
    tx.commit().await?;
    Ok(n)
}

pub(crate) async fn release_leases<D: Dialect>(s: &D, tokens: &[String]) -> crate::Result<u64> {
    if tokens.is_empty() {
        return Ok(0);
    }
    let now = crate::now_ms();
    let mut tx = Tx::begin(s).await?;
    let released: Vec<(String, String)> = D::q(D::RELEASE)
        .bind(TextList(tokens))
        .bind(now)
        .fetch_all(&mut tx)
        .await?;
    // Handed back at shutdown: the attempt did not really happen.
    let n = back_to_ready(
        &mut tx,
        released,
        BACK_TO_READY_UNCOUNTED,
        "worker_stopped",
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// Makes steps whose leases were handed back ready again (`mark`: the
/// statement that does it), with their events, and wakes workers at commit.
async fn back_to_ready<D: Dialect>(
    tx: &mut Tx<'_, D>,
    mut steps: Vec<(String, String)>,
    mark: &'static str,
    reason: &str,
    now: i64,
) -> crate::Result<u64> {
    steps.sort();
    for (execution_id, step_id) in &steps {
        D::q(mark)
            .bind(execution_id)
            .bind(step_id)
            .execute(&mut *tx)
            .await?;
        emit(
            tx,
            execution_id,
            "step.ready",
            Some(step_id),
            serde_json::json!({"reason": reason}),
            now,
        )
        .await?;
    }
    if !steps.is_empty() {
        tx.notify_work().await?;
    }
    Ok(steps.len() as u64)
}

pub(crate) async fn queue_depth<D: Dialect>(s: &D) -> crate::Result<i64> {
    D::q(QUEUE_DEPTH).scalar(&mut *conn(s).await?).await
}

pub(crate) async fn next_run_in_ms<D: Dialect>(s: &D) -> crate::Result<Option<i64>> {
    let next: Option<i64> = D::q(NEXT_RUN_AFTER).scalar(&mut *conn(s).await?).await?;
    Ok(next.map(|t| (t - crate::now_ms()).max(0)))
}
