//! The model registry and the record of model calls.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dialect::{Dialect, conn};
use crate::rows::{ModelRow, ModelTotalsRow, UsageRow};

/// A registered model: its definition as JSON and where it came from
/// (`api` or `file`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub id: String,
    pub spec: Value,
    pub source: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One call to a model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelCall {
    pub model_id: String,
    pub execution_id: Option<String>,
    pub step_id: Option<String>,
    pub attempt: i64,
    pub started_at: i64,
    pub latency_ms: i64,
    pub success: bool,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// US dollars.
    pub cost: f64,
    /// How good the call was for selection, 0 to 1.
    pub reward: f64,
    pub error_type: Option<String>,
}

/// What a model's calls add up to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelCallStats {
    pub model_id: String,
    pub calls: i64,
    pub successes: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: f64,
    pub reward_sum: f64,
    /// Latencies of its most recent calls, in milliseconds.
    pub recent_latencies_ms: Vec<i64>,
}

/// A step's use of one model in an execution.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepUsage {
    pub step_id: String,
    pub model_id: String,
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: f64,
}

const INSERT_MODEL: &str = "INSERT INTO models (id, spec, source, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO NOTHING";

const UPSERT_MODEL: &str = "INSERT INTO models (id, spec, source, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, source = excluded.source, \
    updated_at = excluded.updated_at";

const INSERT_MODEL_CALL: &str = "INSERT INTO model_calls (model_id, execution_id, step_id, attempt, \
    started_at, latency_ms, success, input_tokens, output_tokens, cost, reward, error_type) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// PostgreSQL sums integers as NUMERIC: cast back.
const MODEL_TOTALS: &str = "SELECT model_id, COUNT(*) AS calls, CAST(SUM(success) AS BIGINT) AS successes, \
    CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
    CAST(SUM(cost) AS DOUBLE PRECISION) AS cost, CAST(SUM(reward) AS DOUBLE PRECISION) AS reward_sum \
    FROM model_calls GROUP BY model_id ORDER BY model_id";

/// Latencies of the last 20,000 calls, for percentiles.
const RECENT_LATENCIES: &str = "SELECT model_id, latency_ms FROM model_calls \
    WHERE id > (SELECT COALESCE(MAX(id), 0) - 20000 FROM model_calls)";

const EXECUTION_USAGE: &str = "SELECT COALESCE(step_id, '') AS step_id, model_id, COUNT(*) AS calls, \
    CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
    CAST(SUM(cost) AS DOUBLE PRECISION) AS cost FROM model_calls \
    WHERE execution_id = $1 GROUP BY COALESCE(step_id, ''), model_id ORDER BY MIN(id)";

pub(crate) async fn insert_model<D: Dialect>(
    s: &D,
    id: &str,
    spec: &serde_json::Value,
    source: &str,
) -> crate::Result<bool> {
    let _writer = s.write_guard().await;
    let now = crate::now_ms();
    let n = D::q(INSERT_MODEL)
        .bind(id)
        .json(spec)
        .bind(source)
        .bind(now)
        .execute(&mut *conn(s).await?)
        .await?;
    Ok(n == 1)
}

pub(crate) async fn upsert_model<D: Dialect>(
    s: &D,
    id: &str,
    spec: &serde_json::Value,
    source: &str,
) -> crate::Result<()> {
    let _writer = s.write_guard().await;
    D::q(UPSERT_MODEL)
        .bind(id)
        .json(spec)
        .bind(source)
        .bind(crate::now_ms())
        .execute(&mut *conn(s).await?)
        .await?;
    Ok(())
}

pub(crate) async fn delete_model<D: Dialect>(s: &D, id: &str) -> crate::Result<bool> {
    let _writer = s.write_guard().await;
    let n = D::q("DELETE FROM models WHERE id = $1")
        .bind(id)
        .execute(&mut *conn(s).await?)
        .await?;
    Ok(n == 1)
}

pub(crate) async fn list_models<D: Dialect>(s: &D) -> crate::Result<Vec<crate::ModelRecord>> {
    let rows: Vec<ModelRow> =
        D::q("SELECT id, spec, source, created_at, updated_at FROM models ORDER BY created_at, id")
            .fetch_all(&mut *conn(s).await?)
            .await?;
    Ok(rows.into_iter().map(crate::ModelRecord::from).collect())
}

pub(crate) async fn record_model_call<D: Dialect>(
    s: &D,
    call: &crate::ModelCall,
) -> crate::Result<()> {
    let _writer = s.write_guard().await;
    D::q(INSERT_MODEL_CALL)
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
        .execute(&mut *conn(s).await?)
        .await?;
    Ok(())
}

pub(crate) async fn model_call_stats<D: Dialect>(
    s: &D,
) -> crate::Result<Vec<crate::ModelCallStats>> {
    let rows: Vec<ModelTotalsRow> = D::q(MODEL_TOTALS).fetch_all(&mut *conn(s).await?).await?;
    let recent: Vec<(String, i64)> = D::q(RECENT_LATENCIES)
        .fetch_all(&mut *conn(s).await?)
        .await?;
    let mut stats: Vec<crate::ModelCallStats> = rows
        .into_iter()
        .map(|r| crate::ModelCallStats {
            model_id: r.model_id,
            calls: r.calls,
            successes: r.successes,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost: r.cost,
            reward_sum: r.reward_sum,
            recent_latencies_ms: Vec::new(),
        })
        .collect();
    for (model, latency) in recent {
        if let Some(s) = stats.iter_mut().find(|s| s.model_id == model) {
            s.recent_latencies_ms.push(latency);
        }
    }
    Ok(stats)
}

pub(crate) async fn execution_usage<D: Dialect>(
    s: &D,
    execution_id: &str,
) -> crate::Result<Vec<crate::StepUsage>> {
    let rows: Vec<UsageRow> = D::q(EXECUTION_USAGE)
        .bind(execution_id)
        .fetch_all(&mut *conn(s).await?)
        .await?;
    Ok(rows.into_iter().map(crate::StepUsage::from).collect())
}
