//! Counts for metrics and health.

use serde::Serialize;

use crate::dialect::{Dialect, conn};

/// What the database holds right now, in numbers.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Overview {
    pub executions_by_status: Vec<(String, i64)>,
    /// Steps of queued and running executions, by status.
    pub active_steps_by_status: Vec<(String, i64)>,
    /// Runnable steps nobody holds.
    pub ready_steps: i64,
    /// Steps a worker holds a lease on.
    pub leased_steps: i64,
    /// How long the oldest runnable step has waited, in milliseconds.
    pub oldest_ready_age_ms: Option<i64>,
    /// Mean run time of finished executions, in milliseconds.
    pub mean_execution_ms: Option<f64>,
    pub pool_connections: u32,
    pub pool_idle: u32,
}

pub(crate) async fn overview<D: Dialect>(s: &D) -> crate::Result<crate::Overview> {
    let now = crate::now_ms();
    let executions_by_status: Vec<(String, i64)> =
        D::q("SELECT status, COUNT(*) FROM executions GROUP BY status ORDER BY status")
            .fetch_all(&mut *conn(s).await?)
            .await?;
    let active_steps_by_status: Vec<(String, i64)> = D::q(
        "SELECT s.status, COUNT(*) FROM steps s JOIN executions e ON e.id = s.execution_id \
         WHERE e.status IN ('queued', 'running') GROUP BY s.status ORDER BY s.status",
    )
    .fetch_all(&mut *conn(s).await?)
    .await?;
    let (ready_steps, oldest): (i64, Option<i64>) = D::q(
        "SELECT COUNT(*), MIN(run_after) FROM step_queue WHERE locked_by IS NULL AND run_after <= $1",
    )
    .bind(now)
    .fetch_one(&mut *conn(s).await?)
    .await?;
    let leased_steps: i64 = D::q("SELECT COUNT(*) FROM step_queue WHERE locked_by IS NOT NULL")
        .scalar(&mut *conn(s).await?)
        .await?;
    let mean_execution_ms: Option<f64> = D::q(
        "SELECT CAST(AVG(finished_at - started_at) AS DOUBLE PRECISION) FROM executions \
         WHERE finished_at IS NOT NULL AND started_at IS NOT NULL",
    )
    .scalar(&mut *conn(s).await?)
    .await?;
    Ok(crate::Overview {
        executions_by_status,
        active_steps_by_status,
        ready_steps,
        leased_steps,
        oldest_ready_age_ms: oldest.map(|t| (now - t).max(0)),
        mean_execution_ms,
        pool_connections: s.pool().size(),
        pool_idle: u32::try_from(s.pool().num_idle()).unwrap_or(u32::MAX),
    })
}
